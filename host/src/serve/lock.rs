//! One server per data directory, as PostgreSQL's `postmaster.pid` does it: `serve` holds an
//! exclusive advisory lock (`flock`) on `DATA_DIR/txsock.pid` for as long as it runs, and
//! writes its process id and listening address there. A second `serve` on the same
//! directory fails to take the lock and says who holds it. The kernel drops the lock when
//! the process dies, even by `kill -9`, so a stale file never blocks a restart; a clean stop
//! removes the file. An SQLite `--db` outside the data directory has its directory locked
//! the same way, so two data directories cannot share one database file either.
//!
//! On platforms without `flock` the file is written but not locked.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "txsock.pid";

/// The held lock; released (and the file removed) on drop.
#[derive(Debug)]
pub struct DataDirLock {
    /// Held open: the lock lasts as long as this descriptor.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its lock, recording this process and `listen`.
    pub fn acquire(dir: &Path, listen: SocketAddr) -> Result<DataDirLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot open lock file {}", path.display()))?;
            if !try_lock(&file).with_context(|| format!("locking {}", path.display()))? {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.split_whitespace().collect::<Vec<_>>();
                let who = match (holder.first(), holder.get(1)) {
                    (Some(pid), Some(addr)) => format!(" (pid {pid}, listening on {addr})"),
                    (Some(pid), None) => format!(" (pid {pid})"),
                    _ => String::new(),
                };
                bail!(
                    "another txsock server{who} is using data directory {}: it holds {}. \
                     Stop it first, or give this one another --data-dir",
                    dir.display(),
                    path.display()
                );
            }
            // A server that stopped between our open and our lock removed the file we
            // locked: lock the one now at the path instead.
            if !same_file(&file, &path) {
                continue;
            }
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}\n{listen}", std::process::id())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(DataDirLock { _file: file, path });
        }
    }
}

/// Locks the directory of the SQLite database `db` as well, when it is not `data_dir`: two
/// servers with different data directories and one `--db` file are refused like two on one
/// directory.
pub fn lock_database_dir(
    db: &Path,
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<Option<DataDirLock>> {
    let db_dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(db_dir)
        .with_context(|| format!("cannot create {}", db_dir.display()))?;
    let same = match (db_dir.canonicalize(), data_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(None);
    }
    DataDirLock::acquire(db_dir, listen).map(Some)
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Removed while still locked, so that no other server can take the old file.
        // (`_file`, and with it the lock, is closed after this.)
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor this `File` owns and keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, _path: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:11002".parse().unwrap();
        let first = DataDirLock::acquire(dir.path(), addr).unwrap();
        let e = DataDirLock::acquire(dir.path(), addr)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another txsock server"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("127.0.0.1:11002"), "{e}");
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists());
        drop(DataDirLock::acquire(dir.path(), addr).unwrap());
    }
}
