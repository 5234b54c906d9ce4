//! The three audit logs in the data directory, one human-readable event per line:
//! `sessions.log` (logins, logouts, failed logins, lockouts), `transactions.log` (every
//! committed transfer) and `error.log` (rejections and alerts).

use crate::clock::{stamp_millis, unix_millis};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
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
/// so lines from concurrent connections never interleave.
pub struct Audit {
    sessions: Mutex<File>,
    transactions: Mutex<File>,
    errors: Mutex<File>,
}

fn open(dir: &Path, name: &str) -> Result<Mutex<File>> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Mutex::new(file))
}

impl Audit {
    /// Opens (creating) the logs in `dir`.
    pub fn open(dir: &Path) -> Result<Audit> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Audit {
            sessions: open(dir, "sessions.log")?,
            transactions: open(dir, "transactions.log")?,
            errors: open(dir, "error.log")?,
        })
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
