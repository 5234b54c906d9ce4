//! The three audit logs in the data directory, one human-readable event per line:
//! `sessions.log` (logins, logouts, failed logins, lockouts), `transactions.log` (every
//! committed transfer) and `error.log` (rejections and alerts).
//!
//! [`Audit::reopen`] (SIGHUP on Unix) opens the three files again by name, for log rotation:
//! after `mv sessions.log sessions.log.1`, new lines go to a new `sessions.log`.

use crate::clock::{stamp_millis, unix_millis};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Which log a line goes to.
#[derive(Debug, Clone, Copy)]
pub enum Log {
    /// `sessions.log`.
    Sessions,
    /// `transactions.log`.
    Transactions,
    /// `error.log`.
    Errors,
}

/// The open audit logs. Each line is written with one `write` call on an append-mode file,
/// so lines from concurrent connections never interleave; a reopen swaps a file under the
/// same lock, so a line goes whole to either the old file or the new one.
pub struct Audit {
    // Only SIGHUP (Unix) reopens the logs.
    #[cfg_attr(not(unix), allow(dead_code))]
    dir: PathBuf,
    sessions: Mutex<File>,
    transactions: Mutex<File>,
    errors: Mutex<File>,
}

const SESSIONS: &str = "sessions.log";
const TRANSACTIONS: &str = "transactions.log";
const ERRORS: &str = "error.log";

fn open(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

impl Audit {
    /// Opens (creating) the logs in `dir`.
    pub fn open(dir: &Path) -> Result<Audit> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Audit {
            dir: dir.to_path_buf(),
            sessions: Mutex::new(open(dir, SESSIONS)?),
            transactions: Mutex::new(open(dir, TRANSACTIONS)?),
            errors: Mutex::new(open(dir, ERRORS)?),
        })
    }

    /// Opens the three logs again by name (creating those that were moved away) and writes
    /// to the new files from now on. All three are opened before any is swapped: if one
    /// cannot be opened, every log keeps its old file and nothing is lost.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn reopen(&self) -> Result<()> {
        let sessions = open(&self.dir, SESSIONS)?;
        let transactions = open(&self.dir, TRANSACTIONS)?;
        let errors = open(&self.dir, ERRORS)?;
        for (slot, new) in [
            (&self.sessions, sessions),
            (&self.transactions, transactions),
            (&self.errors, errors),
        ] {
            let mut f = slot.lock().unwrap_or_else(|p| p.into_inner());
            // The old file's lines reach the disk before it is closed.
            let _ = f.sync_all();
            *f = new;
        }
        Ok(())
    }

    /// Appends `event` with a timestamp to `log`.
    pub fn write(&self, log: Log, event: std::fmt::Arguments<'_>) {
        self.write_each(log, [()], |line, ()| {
            let _ = line.write_fmt(event);
        });
    }

    /// Appends one line per item of `items`, each with a timestamp and the text `event`
    /// writes into it, in a single `write` call (one commit's transfers at once).
    pub fn write_each<T>(
        &self,
        log: Log,
        items: impl IntoIterator<Item = T>,
        mut event: impl FnMut(&mut String, T),
    ) {
        let stamp = stamp_millis(unix_millis());
        let mut lines = String::new();
        for item in items {
            let _ = write!(lines, "{stamp} ");
            event(&mut lines, item);
            lines.push('\n');
        }
        if lines.is_empty() {
            return;
        }
        let file = match log {
            Log::Sessions => &self.sessions,
            Log::Transactions => &self.transactions,
            Log::Errors => &self.errors,
        };
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(lines.as_bytes()) {
            tracing::error!("cannot write audit log: {e}");
        }
    }

    /// Flushes all logs to disk.
    pub fn sync(&self) {
        for f in [&self.sessions, &self.transactions, &self.errors] {
            let f = f.lock().unwrap_or_else(|p| p.into_inner());
            let _ = f.sync_all();
        }
    }
}
