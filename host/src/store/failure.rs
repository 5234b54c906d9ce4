//! Storage errors in words: which database failed, what failed, what to do about it, and
//! one exit status for them in every command (`serve` and the admin commands alike).
//!
//! A store's error is wrapped once, where a command meets it, in a [`StorageFailure`] that
//! names the database (a path, or a MySQL URL without its password). [`advice`] reads the
//! database's or the operating system's own error code underneath (SQLite's extended
//! result codes, MySQL's server error numbers, `std::io::ErrorKind`) and says what to do:
//! free disk space, fix permissions, restore from a backup, start the server. A
//! [`Refused`] error is not a failure of the storage but its answer (a user who exists, a
//! user who does not), and keeps its own status.

use std::fmt;
use std::path::{Path, PathBuf};

/// Exit status of every command whose database is missing, unreachable, unreadable, not
/// writable, full or damaged: nothing was done. The same as a usage error or invalid input,
/// and as `ledger check` when it could not check.
pub const EXIT_STORAGE: u8 = 2;
/// Exit status of an admin command the ledger refused (the user exists, no such user, the
/// balance would pass the ceiling), like the client's refusals.
pub const EXIT_REFUSED: u8 = 3;

/// The ledger's answer to a valid admin request: it cannot be done (`user add` of an
/// existing name, `account deposit` to an unknown user, a balance past the ceiling).
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Input an admin command refuses before touching the database (too few PBKDF2 iterations,
/// a short password): exit status 2, like a usage error.
#[derive(Debug)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Prints `e` for a person (with what to do when it is a storage failure) and returns the
/// exit status its kind has in every command: [`EXIT_STORAGE`] for a storage failure or
/// [`Invalid`] input, [`EXIT_REFUSED`] for a [`Refused`] request, 1 otherwise.
pub fn report(e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("txsock: {e:#}");
    let status = if is_storage_failure(e) {
        if let Some(advice) = advice(e) {
            eprintln!("txsock: what to do: {advice}");
        }
        EXIT_STORAGE
    } else if e.chain().any(|c| c.downcast_ref::<Invalid>().is_some()) {
        EXIT_STORAGE
    } else if is_refused(e) {
        EXIT_REFUSED
    } else {
        1
    };
    std::process::ExitCode::from(status)
}

/// The context that marks an error as a storage failure and names what failed.
#[derive(Debug)]
pub struct StorageFailure {
    /// What failed, as shown to people: `database PATH`, `database URL` without the
    /// password, `audit logs in DIR`.
    pub what: String,
    /// The local directory it lives in, if any: a full filesystem there explains an I/O
    /// error that does not say so (SQLite reports a full disk while growing its `-shm`
    /// index as `SQLITE_IOERR_SHMSIZE`).
    pub dir: Option<PathBuf>,
}

impl fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

/// Marks `e` as a failure of the database at `location`, unless it is a [`Refused`]
/// answer or already marked.
pub fn storage_failure(location: &super::Location, e: anyhow::Error) -> anyhow::Error {
    let dir = match location {
        super::Location::Sqlite(path) => Some(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        ),
        super::Location::Mysql(_) => None,
    };
    failure_of(format!("database {}", location.shown()), dir, e)
}

/// Marks `e` as a storage failure of `what` (e.g. `audit logs in DIR`) in the directory
/// `dir`, unless it is a [`Refused`] answer or already marked.
pub fn failure_of(what: String, dir: Option<PathBuf>, e: anyhow::Error) -> anyhow::Error {
    if is_refused(&e) || e.downcast_ref::<StorageFailure>().is_some() {
        return e;
    }
    e.context(StorageFailure { what, dir })
}

/// Marks `e` as a storage failure of `what` in `dir` if the operating system reported it
/// (an `io::Error` underneath: a full disk, a read-only directory), and leaves any other
/// error (e.g. another server holding a lock) as it is.
pub fn io_failure_of(what: String, dir: &Path, e: anyhow::Error) -> anyhow::Error {
    if e.chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some())
    {
        failure_of(what, Some(dir.to_path_buf()), e)
    } else {
        e
    }
}

/// Whether the filesystem holding `dir` has (almost) no space left for this user.
fn filesystem_full(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: statvfs is plain old data, for which all zeroes is a valid value.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `stat` is a valid place to write to.
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return false;
        }
        (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64) < 64 * 1024
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        false
    }
}

/// Whether `e` is the ledger's refusal rather than a failure.
pub fn is_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Refused>().is_some())
}

/// Whether `e` was marked as a storage failure.
pub fn is_storage_failure(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StorageFailure>().is_some()
}

const FULL: &str = "the disk is full: free space on that filesystem (or move the data \
    directory), then run the command again; a commit that failed was not acknowledged, so \
    nothing acknowledged is lost";
const READ_ONLY: &str = "the database, its directory or its filesystem is not writable by this \
    user: run as the user that owns the data directory, or fix its permissions (SQLite also \
    writes -wal and -shm files beside the database); `ledger check` and `user list` need read \
    access only";
const PERMISSION: &str = "this user may not open it: check the permissions of the file and \
    of every directory above it, or run as the user that owns the data directory";
const CORRUPT: &str = "the file is damaged or is not a txsock database: run `txsock ledger \
    check` to see what is wrong, and restore the file from a backup; do not start a server \
    on it";
const BUSY: &str = "another process held a lock on the database for more than 10 s: find it \
    (`fuser FILE`, or the `txsock.pid` file of the data directory) and run the command again";
const IO: &str = "the operating system reported an I/O error: check the disk (dmesg, SMART) \
    before anything else, and keep a copy of the file";
const MISSING: &str = "check --data-dir and --db (TXSOCK_DATA_DIR, TXSOCK_DB, txsock.toml); \
    `txsock serve` and `txsock user add` create a new ledger, the other commands never do";
const UNREACHABLE: &str = "the database server did not answer: check that MySQL/MariaDB runs \
    and that HOST:PORT in --db is right";
const CREDENTIALS: &str = "the database server refused USER and PASSWORD of --db: check them \
    (keep the password in TXSOCK_DB or txsock.toml, not on the command line)";
const NO_DATABASE: &str = "the database named in --db does not exist on that server: create \
    it first (README, \"Several servers, one ledger\")";
const PRIVILEGES: &str = "this database user lacks a privilege the command needs: grant it \
    (README, \"Several servers, one ledger\"); `ledger check` and `user list` need SELECT \
    only";
const SCHEMA: &str = "this txsock is older than the database's schema: upgrade txsock";

/// What to do about a storage failure, read from the error codes under `e`; `None` when
/// nothing underneath says more than the message itself.
pub fn advice(e: &anyhow::Error) -> Option<&'static str> {
    let said = advice_from_codes(e);
    if matches!(said, None | Some(IO)) {
        let full = e
            .downcast_ref::<StorageFailure>()
            .and_then(|f| f.dir.as_deref())
            .is_some_and(filesystem_full);
        if full {
            return Some(FULL);
        }
    }
    said
}

fn advice_from_codes(e: &anyhow::Error) -> Option<&'static str> {
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<rusqlite::Error>() {
            return sqlite_advice(e);
        }
        if let Some(e) = cause.downcast_ref::<mysql::Error>() {
            return mysql_advice(e);
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return io_advice(e.kind());
        }
    }
    // The stores' own words for a missing or foreign database.
    let text = format!("{e:#}");
    if text.contains("not a txsock database") {
        Some(CORRUPT)
    } else if text.contains("does not exist") || text.contains("no txsock database at") {
        Some(MISSING)
    } else if text.contains("is newer than this txsock") {
        Some(SCHEMA)
    } else {
        None
    }
}

fn sqlite_advice(e: &rusqlite::Error) -> Option<&'static str> {
    use rusqlite::ErrorCode as C;
    let rusqlite::Error::SqliteFailure(e, _) = e else {
        return None;
    };
    Some(match e.code {
        C::DiskFull => FULL,
        C::ReadOnly => READ_ONLY,
        C::PermissionDenied | C::CannotOpen | C::AuthorizationForStatementDenied => PERMISSION,
        C::DatabaseCorrupt | C::NotADatabase => CORRUPT,
        C::DatabaseBusy | C::DatabaseLocked => BUSY,
        C::SystemIoFailure => IO,
        _ => return None,
    })
}

fn mysql_advice(e: &mysql::Error) -> Option<&'static str> {
    match e {
        mysql::Error::IoError(_) | mysql::Error::DriverError(_) => Some(UNREACHABLE),
        mysql::Error::MySqlError(e) => match e.code {
            // ER_ACCESS_DENIED_ERROR
            1045 => Some(CREDENTIALS),
            // ER_BAD_DB_ERROR
            1049 => Some(NO_DATABASE),
            // ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR,
            // ER_SPECIFIC_ACCESS_DENIED_ERROR
            1044 | 1142 | 1227 => Some(PRIVILEGES),
            // ER_RECORD_FILE_FULL, ER_DISK_FULL
            1114 | 1021 => Some(FULL),
            // ER_OPTION_PREVENTS_STATEMENT (--read-only), ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
            1290 | 1792 => Some(READ_ONLY),
            _ => None,
        },
        _ => None,
    }
}

fn io_advice(kind: std::io::ErrorKind) -> Option<&'static str> {
    use std::io::ErrorKind as K;
    Some(match kind {
        K::StorageFull => FULL,
        K::ReadOnlyFilesystem => READ_ONLY,
        K::PermissionDenied => PERMISSION,
        K::NotFound => MISSING,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real SQLITE_FULL: a database capped at a few pages, filled past them.
    #[test]
    fn a_full_database_is_explained_as_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB); PRAGMA max_page_count = 4;")
            .unwrap();
        let full = (0..100)
            .map(|_| conn.execute("INSERT INTO t VALUES (zeroblob(4000))", []))
            .find_map(Result::err)
            .expect("the capped database fills up");
        let location = super::super::Location::Sqlite("t.db".into());
        let e = storage_failure(&location, anyhow::Error::from(full));
        assert!(is_storage_failure(&e));
        assert_eq!(advice(&e), Some(FULL));
        assert!(format!("{e:#}").starts_with("database t.db: "), "{e:#}");
    }

    #[test]
    fn a_refusal_is_not_a_storage_failure() {
        let location = super::super::Location::Sqlite("t.db".into());
        let e = storage_failure(
            &location,
            Refused("user alice already exists".into()).into(),
        );
        assert!(!is_storage_failure(&e) && is_refused(&e));
    }

    #[test]
    fn io_kinds_have_advice() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem));
        assert_eq!(advice(&e), Some(READ_ONLY));
    }
}
