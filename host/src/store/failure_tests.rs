//! What a person is told when storage fails, and with which exit status: every advice the
//! error codes underneath lead to, the refusals that are not failures, and the conversions
//! between rows and the core's types that both SQL stores share.
//!
//! Written against cargo-mutants' survivors (docs/TESTING.md): each test states a property a
//! user or an operator relies on, not how the code computes it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::failure::{
    advice, failure_of, io_failure_of, is_refused, is_storage_failure, report, storage_failure,
    Invalid, Refused, StorageFailure, EXIT_REFUSED, EXIT_STORAGE,
};
use super::row::{
    amount_of, credentials_of, fmt_i128, login_failure_decoy_value, name_of, recorded, sql_amount,
    CredentialsRow, FOREVER,
};
use super::{Committed, Location};
use txsock_core::ledger::LedgerReply;
use txsock_core::{Amount, ErrorCode, Instant, TransferId, Username};

/// A storage failure of a database in `dir` (a directory on a filesystem with room).
fn failed_in(dir: &Path, e: anyhow::Error) -> anyhow::Error {
    failure_of("database test.db".into(), Some(dir.to_path_buf()), e)
}

fn sqlite_error(code: std::ffi::c_int) -> anyhow::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None).into()
}

fn mysql_error(code: u16) -> anyhow::Error {
    mysql::Error::MySqlError(mysql::MySqlError {
        state: "HY000".into(),
        message: "refused".into(),
        code,
    })
    .into()
}

fn io_error(kind: std::io::ErrorKind) -> anyhow::Error {
    std::io::Error::from(kind).into()
}

/// The advice for `e`, as words to search.
fn said(e: &anyhow::Error) -> &'static str {
    advice(e).unwrap_or("")
}

#[test]
fn every_sqlite_failure_kind_gets_its_own_advice() {
    use rusqlite::ffi;
    let room = tempfile::tempdir().unwrap();
    for (code, words) in [
        (ffi::SQLITE_FULL, "the disk is full"),
        (ffi::SQLITE_READONLY, "not writable"),
        (ffi::SQLITE_PERM, "may not open it"),
        (ffi::SQLITE_CANTOPEN, "may not open it"),
        (ffi::SQLITE_AUTH, "may not open it"),
        (ffi::SQLITE_CORRUPT, "damaged"),
        (ffi::SQLITE_NOTADB, "damaged"),
        (ffi::SQLITE_BUSY, "held a lock"),
        (ffi::SQLITE_LOCKED, "held a lock"),
        (ffi::SQLITE_IOERR, "I/O error"),
    ] {
        let e = failed_in(room.path(), sqlite_error(code));
        assert!(said(&e).contains(words), "code {code}: {:?}", advice(&e));
    }
    // A constraint violation is not the storage's fault: nothing more to say.
    let e = failed_in(room.path(), sqlite_error(ffi::SQLITE_CONSTRAINT));
    assert_eq!(advice(&e), None);
    // Neither is a query that found nothing.
    let e = failed_in(room.path(), rusqlite::Error::QueryReturnedNoRows.into());
    assert_eq!(advice(&e), None);
}

#[test]
fn every_mysql_failure_kind_gets_its_own_advice() {
    for (code, words) in [
        (1045, "refused USER and PASSWORD"),
        (1049, "does not exist on that server"),
        (1044, "lacks a privilege"),
        (1142, "lacks a privilege"),
        (1227, "lacks a privilege"),
        (1114, "the disk is full"),
        (1021, "the disk is full"),
        (1290, "not writable"),
        (1792, "not writable"),
    ] {
        let e = failure_of("database mysql://u@h/d".into(), None, mysql_error(code));
        assert!(said(&e).contains(words), "error {code}: {:?}", advice(&e));
    }
    // A duplicate key is an answer, not a broken server.
    assert_eq!(advice(&mysql_error(1062)), None);
    let unreachable =
        mysql::Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert!(said(&unreachable.into()).contains("did not answer"));
    let driver = mysql::Error::DriverError(mysql::DriverError::ConnectTimeout);
    assert!(said(&driver.into()).contains("did not answer"));
    // An error in a URL is the user's to fix, with no server to blame.
    let url = mysql::Error::UrlError(mysql::UrlError::InvalidValue("port".into(), "x".into()));
    assert_eq!(advice(&url.into()), None);
}

#[test]
fn operating_system_errors_get_advice_by_kind() {
    use std::io::ErrorKind as K;
    let room = tempfile::tempdir().unwrap();
    for (kind, words) in [
        (K::StorageFull, "the disk is full"),
        (K::ReadOnlyFilesystem, "not writable"),
        (K::PermissionDenied, "may not open it"),
        (K::NotFound, "--data-dir and --db"),
    ] {
        let e = failed_in(room.path(), io_error(kind));
        assert!(said(&e).contains(words), "{kind:?}: {:?}", advice(&e));
    }
    assert_eq!(
        advice(&failed_in(room.path(), io_error(K::Interrupted))),
        None
    );
}

#[test]
fn the_stores_own_words_get_advice() {
    let room = tempfile::tempdir().unwrap();
    let advice_for = |message: &str| advice(&failed_in(room.path(), anyhow::anyhow!("{message}")));
    assert!(
        advice_for("x.db is not a txsock database (it has no schema_version table)")
            .is_some_and(|a| a.contains("damaged"))
    );
    // Either wording of a missing database, alone, says where to look.
    assert!(advice_for("database `ledger` does not exist")
        .is_some_and(|a| a.contains("--data-dir and --db")));
    assert!(
        advice_for("no txsock database at x.db (nothing was created)")
            .is_some_and(|a| a.contains("--data-dir and --db"))
    );
    assert!(
        advice_for("x.db: schema version 9 is newer than this txsock's (3)")
            .is_some_and(|a| a.contains("upgrade txsock"))
    );
    assert_eq!(advice_for("something else went wrong"), None);
}

/// `/proc` is a filesystem with no free blocks at all: as full as a disk can be.
#[cfg(target_os = "linux")]
#[test]
fn a_full_filesystem_explains_an_error_that_does_not_say_so() {
    let full = Path::new("/proc");
    let room = tempfile::tempdir().unwrap();
    // No code underneath: the full filesystem is the explanation.
    let plain = || anyhow::anyhow!("disk I/O error");
    assert!(said(&failed_in(full, plain())).contains("the disk is full"));
    assert_eq!(advice(&failed_in(room.path(), plain())), None);
    // SQLite's generic I/O error while growing its index, on a full disk, is a full disk.
    let io = || sqlite_error(rusqlite::ffi::SQLITE_IOERR);
    assert!(said(&failed_in(full, io())).contains("the disk is full"));
    assert!(said(&failed_in(room.path(), io())).contains("I/O error"));
    // A specific cause is never overridden by the free space.
    let locked = sqlite_error(rusqlite::ffi::SQLITE_BUSY);
    assert!(said(&failed_in(full, locked)).contains("held a lock"));
    // A directory that does not exist says nothing about any filesystem.
    let gone = room.path().join("gone");
    assert_eq!(advice(&failed_in(&gone, plain())), None);
    // Nor does a failure with no directory (a database server).
    assert_eq!(
        advice(&failure_of("database mysql://h/d".into(), None, plain())),
        None
    );
}

#[test]
fn a_storage_failure_names_the_database_and_its_directory() {
    let dir_of = |db: &str| -> Option<PathBuf> {
        let location = Location::parse(db).unwrap();
        let e = storage_failure(&location, anyhow::anyhow!("boom"));
        assert!(is_storage_failure(&e), "{db}");
        e.downcast_ref::<StorageFailure>().unwrap().dir.clone()
    };
    assert_eq!(dir_of("data/ledger.db"), Some(PathBuf::from("data")));
    assert_eq!(dir_of("ledger.db"), Some(PathBuf::from(".")));
    assert_eq!(dir_of("mysql://u:pw@h:1/d"), None);
    let e = storage_failure(
        &Location::parse("mysql://u:pw@h:1/d").unwrap(),
        anyhow::anyhow!("boom"),
    );
    let text = format!("{e:#}");
    assert_eq!(text, "database mysql://u@h:1/d: boom");
    assert!(!text.contains("pw"));
}

#[test]
fn a_failure_is_marked_once_and_a_refusal_never() {
    let inner = failure_of("database a.db".into(), None, anyhow::anyhow!("boom"));
    let outer = failure_of("database b.db".into(), None, inner);
    assert_eq!(format!("{outer:#}"), "database a.db: boom");
    let refused = failure_of(
        "database a.db".into(),
        None,
        Refused("no user named bob".into()).into(),
    );
    assert!(is_refused(&refused) && !is_storage_failure(&refused));
    assert_eq!(format!("{refused:#}"), "no user named bob");
    let plain = anyhow::anyhow!("boom");
    assert!(!is_refused(&plain) && !is_storage_failure(&plain));
}

#[test]
fn only_an_operating_system_error_is_a_storage_failure_of_a_directory() {
    let dir = Path::new("audit");
    let io = io_failure_of(
        "audit logs in audit".into(),
        dir,
        anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            .context("writing the audit log"),
    );
    assert!(is_storage_failure(&io));
    assert_eq!(
        io.downcast_ref::<StorageFailure>().unwrap().dir.as_deref(),
        Some(dir)
    );
    assert!(format!("{io:#}").starts_with("audit logs in audit: writing the audit log"));
    let other = io_failure_of(
        "audit logs in audit".into(),
        dir,
        anyhow::anyhow!("another server holds the lock"),
    );
    assert!(!is_storage_failure(&other));
    assert_eq!(format!("{other:#}"), "another server holds the lock");
}

#[test]
fn every_kind_of_error_exits_with_its_own_status() {
    let status = |e: anyhow::Error| report(&e);
    let storage = failure_of("database a.db".into(), None, anyhow::anyhow!("boom"));
    assert_eq!(status(storage), ExitCode::from(EXIT_STORAGE));
    let invalid = anyhow::Error::from(Invalid("too few iterations".into())).context("user add");
    assert_eq!(status(invalid), ExitCode::from(EXIT_STORAGE));
    let refused = anyhow::Error::from(Refused("user alice already exists".into()));
    assert_eq!(status(refused), ExitCode::from(EXIT_REFUSED));
    assert_eq!(status(anyhow::anyhow!("anything else")), ExitCode::from(1));
    assert_ne!(EXIT_STORAGE, EXIT_REFUSED);
    assert!(![0, 1].contains(&EXIT_STORAGE) && ![0, 1].contains(&EXIT_REFUSED));
}

#[test]
fn refusals_and_invalid_input_read_as_their_message() {
    assert_eq!(
        Refused("user alice already exists".into()).to_string(),
        "user alice already exists"
    );
    assert_eq!(
        Invalid("at least 8 characters".into()).to_string(),
        "at least 8 characters"
    );
}

#[test]
fn database_urls_are_shown_without_their_password() {
    for (db, shown) in [
        ("mysql://u:secret@h:1/d", "mysql://u@h:1/d"),
        ("mariadb://u:p:w@h/d", "mariadb://u@h/d"),
        // A password may itself contain `@`: only the last one ends the credentials.
        ("mysql://u:p@ss@h/d", "mysql://u@h/d"),
        ("mysql://h:1/d", "mysql://h:1/d"),
        ("data/ledger.db", "data/ledger.db"),
        ("sqlite://data/ledger.db", "data/ledger.db"),
    ] {
        assert_eq!(Location::parse(db).unwrap().shown(), shown, "{db}");
    }
    assert_eq!(
        Location::Mysql("no-scheme".into()).shown(),
        "no-scheme",
        "an unparsable URL is shown as it is"
    );
}

#[test]
fn only_a_real_url_scheme_is_refused_as_unsupported() {
    assert_eq!(
        Location::parse("mysql://u@h/d").unwrap(),
        Location::Mysql("mysql://u@h/d".into())
    );
    assert_eq!(
        Location::parse("mariadb://u@h/d").unwrap(),
        Location::Mysql("mariadb://u@h/d".into())
    );
    // A scheme starts with a letter (RFC 3986): anything else before `://` is a path.
    for path in ["1db://x", "./a://b", "+x://y"] {
        assert_eq!(
            Location::parse(path).unwrap(),
            Location::Sqlite(path.into()),
            "{path}"
        );
    }
    for scheme in ["pg+ssl://h/d", "my-sql://h/d", "x.y://z", "postgres://h/d"] {
        assert!(Location::parse(scheme).is_err(), "{scheme}");
    }
}

#[test]
fn a_committed_transfer_records_what_was_committed() {
    let (from, to) = (
        Username::parse("alice").unwrap(),
        Username::parse("bob").unwrap(),
    );
    let id = TransferId::parse("t-1").unwrap();
    let c = Committed::transfer(&from, &id, &to, Amount(250), Amount(750), 42);
    assert_eq!(
        (c.from, c.id, c.to, c.amount, c.balance_after, c.at_ms),
        (from, id, to, Amount(250), Amount(750), 42)
    );
}

#[test]
fn money_and_names_read_from_rows_exactly() {
    assert_eq!(amount_of(12_345), Amount(12_345));
    assert_eq!(amount_of(0), Amount(0));
    assert_eq!(amount_of(-5), Amount(0), "a negative value reads as zero");
    for minor in [0, 1, 250, Amount::MAX.minor()] {
        assert_eq!(sql_amount(Amount(minor)), minor as i64);
        assert_eq!(amount_of(sql_amount(Amount(minor))), Amount(minor));
    }
    assert_eq!(
        name_of("alice".into()).unwrap(),
        Username::parse("alice").unwrap()
    );
    let bad = name_of("not a name!".into()).unwrap_err().to_string();
    assert!(bad.contains("bad username"), "{bad}");
    for (minor, text) in [
        (0, "0.00"),
        (5, "0.05"),
        (12_345, "123.45"),
        (-1, "-0.01"),
        (-12_345, "-123.45"),
    ] {
        assert_eq!(fmt_i128(minor), text);
    }
}

#[test]
fn a_recorded_outcome_reads_back_its_code() {
    let ok = recorded("bob", 250, 750, None);
    assert_eq!(
        (ok.to, ok.amount, ok.balance, ok.result),
        ("bob", Amount(250), Amount(750), Ok(()))
    );
    let refused = recorded("bob", 250, 100, Some("insufficient_funds"));
    assert_eq!(refused.result, Err(ErrorCode::InsufficientFunds));
    assert_eq!(refused.balance, Amount(100));
    // A code only a newer txsock writes is a refusal still, never a success.
    let unknown = recorded("bob", 250, 100, Some("from_the_future"));
    assert_eq!(unknown.result, Err(ErrorCode::Internal));
}

#[test]
fn credentials_read_from_a_row_and_an_admin_lock_never_ends() {
    let alice = Username::parse("alice").unwrap();
    let row = |admin_locked| -> Option<CredentialsRow> {
        Some((
            vec![7; 16],
            4096,
            vec![1; 32],
            vec![2; 32],
            3,
            1_000,
            2_000,
            admin_locked,
        ))
    };
    let LedgerReply::Credentials { verifier, lockout } =
        credentials_of(&alice, row(false)).unwrap()
    else {
        panic!("not a credentials reply");
    };
    let verifier = verifier.expect("a known user has a verifier");
    assert_eq!(&verifier.salt[..], &[7; 16]);
    assert_eq!(verifier.iterations, 4096);
    assert_eq!(
        (verifier.stored_key, verifier.server_key),
        ([1; 32], [2; 32])
    );
    assert_eq!(lockout.failures, 3);
    assert_eq!(lockout.last_failure, Instant::from_millis(1_000));
    assert_eq!(lockout.locked_until, Instant::from_millis(2_000));
    let LedgerReply::Credentials { lockout, .. } = credentials_of(&alice, row(true)).unwrap()
    else {
        panic!("not a credentials reply");
    };
    assert_eq!(lockout.locked_until, Instant::from_millis(FOREVER));
    let LedgerReply::Credentials { verifier, lockout } = credentials_of(&alice, None).unwrap()
    else {
        panic!("not a credentials reply");
    };
    assert!(verifier.is_none());
    assert_eq!(lockout, Default::default());
    // A damaged row is an error, never a verifier made of what could be read.
    for bad in [
        (vec![7; 200], 4096, vec![1; 32], vec![2; 32], 0, 0, 0, false),
        (vec![7; 16], 4096, vec![1; 31], vec![2; 32], 0, 0, 0, false),
        (vec![7; 16], 4096, vec![1; 32], vec![2; 33], 0, 0, 0, false),
    ] {
        assert!(credentials_of(&alice, Some(bad)).is_err());
    }
}

#[test]
fn every_decoy_write_changes_the_row() {
    let values: Vec<Vec<u8>> = (0..4).map(|_| login_failure_decoy_value()).collect();
    for (i, a) in values.iter().enumerate() {
        assert!(!a.is_empty());
        for b in &values[i + 1..] {
            assert_ne!(a, b, "two decoy writes in a row must differ");
        }
    }
}
