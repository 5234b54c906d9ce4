//! How the SQLite store opens a file (what each access creates, refuses or migrates), checks
//! a damaged one, and tells its state: the paths the conformance suite, which always opens
//! a fresh database, does not take. Written against cargo-mutants' survivors
//! (docs/TESTING.md).

use super::*;

fn verifier() -> Verifier {
    let mut v = Verifier {
        salt: Default::default(),
        iterations: 4096,
        stored_key: [1; 32],
        server_key: [2; 32],
    };
    v.salt.extend_from_slice(&[3; 16]).unwrap();
    v
}

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

/// A ledger at `path` with alice (10.00) and bob (0), closed again.
fn ledger_at(path: &Path) {
    let mut store = SqliteStore::open_with(path, Amount(0), Access::Create).expect("create");
    store
        .add_user(&user("alice"), &verifier(), Amount(1000), 1)
        .unwrap();
    store
        .add_user(&user("bob"), &verifier(), Amount(0), 1)
        .unwrap();
}

fn error_of(result: Result<SqliteStore>) -> String {
    match result {
        Ok(_) => panic!("the open should have been refused"),
        Err(e) => format!("{e:#}"),
    }
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

fn version_rows(path: &Path) -> Vec<i64> {
    let conn = raw(path);
    let mut stmt = conn.prepare("SELECT version FROM schema_version").unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

#[test]
fn only_create_creates_the_file_and_its_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/txsock.db");
    for access in [Access::Existing, Access::ReadOnly] {
        let e = error_of(SqliteStore::open_with(&path, Amount(0), access));
        assert!(e.contains("no txsock database at"), "{access:?}: {e}");
        assert!(
            !dir.path().join("a").exists(),
            "{access:?} created something"
        );
    }
    SqliteStore::open_with(&path, Amount(0), Access::Create).expect("create");
    assert!(path.is_file());
    // A file in the current directory (no directory part) is created too.
    let here = dir.path().join("c.db");
    SqliteStore::open_with(&here, Amount(0), Access::Create).expect("create");
    assert!(here.is_file());
}

#[test]
fn an_existing_ledger_opens_for_writing_and_reading_and_keeps_its_money() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::Existing).expect("existing");
    assert_eq!(
        store.deposit(&user("bob"), Amount(5), 2).unwrap(),
        Amount(5)
    );
    drop(store);
    let mut reader = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).expect("read");
    let names: Vec<(String, Amount)> = reader
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| (u.name, u.balance))
        .collect();
    assert_eq!(
        names,
        [
            ("alice".to_string(), Amount(1000)),
            ("bob".to_string(), Amount(5))
        ]
    );
    assert!(reader.check().unwrap().problems.is_empty());
    assert_eq!(reader.integrity().unwrap(), Vec::<String>::new());
    // A reader writes nothing.
    assert!(reader.deposit(&user("bob"), Amount(5), 3).is_err());
}

#[test]
fn a_directory_or_a_foreign_file_is_not_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    for access in [Access::Create, Access::Existing, Access::ReadOnly] {
        let result = SqliteStore::open_with(dir.path(), Amount(0), access);
        assert!(result.is_err(), "{access:?} opened a directory");
    }
    for access in [Access::Existing, Access::ReadOnly] {
        let e = error_of(SqliteStore::open_with(dir.path(), Amount(0), access));
        assert!(e.contains("is not a file"), "{access:?}: {e}");
    }
    // Another program's SQLite database: refused for writing, nothing added to it.
    let foreign = dir.path().join("other.db");
    raw(&foreign)
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    let e = error_of(SqliteStore::open_with(
        &foreign,
        Amount(0),
        Access::Existing,
    ));
    assert!(e.contains("not a txsock database"), "{e}");
    let tables: i64 = raw(&foreign)
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "the foreign database was changed");
    // Read-only, its users and its check are refused in the same words.
    let mut reader = SqliteStore::open_with(&foreign, Amount(0), Access::ReadOnly).unwrap();
    for e in [
        reader.list_users().map(|_| ()).unwrap_err(),
        reader.check().map(|_| ()).unwrap_err(),
    ] {
        assert!(format!("{e:#}").contains("not a txsock database"), "{e:#}");
    }
}

#[test]
fn a_newer_schema_is_refused_by_every_access_and_the_current_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    assert_eq!(version_rows(&path), [SCHEMA_VERSION]);
    SqliteStore::open_with(&path, Amount(0), Access::Existing).expect("the current schema");
    let mut reader = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    assert_eq!(reader.list_users().unwrap().len(), 2);
    drop(reader);
    raw(&path)
        .execute(
            "UPDATE schema_version SET version = ?1",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    for access in [Access::Create, Access::Existing] {
        let e = error_of(SqliteStore::open_with(&path, Amount(0), access));
        assert!(e.contains("newer than this txsock"), "{access:?}: {e}");
    }
    let mut reader = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    for e in [
        reader.list_users().map(|_| ()).unwrap_err(),
        reader.check().map(|_| ()).unwrap_err(),
    ] {
        assert!(format!("{e:#}").contains("newer than this txsock"), "{e:#}");
    }
    assert_eq!(
        version_rows(&path),
        [SCHEMA_VERSION + 1],
        "a refused open changed the version"
    );
}

/// A database written by the first txsock (schema 1: no refusals table) is migrated on
/// open, records its version once, and then remembers final refusals like a new one.
#[test]
fn an_older_schema_is_migrated_once_and_then_keeps_refusals_final() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    {
        let conn = raw(&path);
        conn.execute_batch(VERSION_TABLE).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.execute("INSERT INTO schema_version (version) VALUES (1)", [])
            .unwrap();
    }
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::Existing).expect("migrate");
    assert_eq!(version_rows(&path), [SCHEMA_VERSION]);
    store
        .add_user(&user("alice"), &verifier(), Amount(100), 1)
        .unwrap();
    store
        .add_user(&user("bob"), &verifier(), Amount(0), 1)
        .unwrap();
    let send = |store: &mut SqliteStore, amount: u64| {
        let request = LedgerRequest::Transfer {
            from: user("alice"),
            id: TransferId::parse("t1").unwrap(),
            to: user("bob"),
            amount: Amount(amount),
        };
        let replies = store
            .execute_batch(&[(request, Instant::ZERO)], &mut Vec::new())
            .unwrap();
        match &replies[0] {
            LedgerReply::Transfer(outcome) => outcome.result,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(send(&mut store, 500), Err(ErrorCode::InsufficientFunds));
    store.deposit(&user("alice"), Amount(1000), 2).unwrap();
    // The retry is answered from the refusal, not decided again with the new balance.
    assert_eq!(send(&mut store, 500), Err(ErrorCode::InsufficientFunds));
    drop(store);
    SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
    assert_eq!(
        version_rows(&path),
        [SCHEMA_VERSION],
        "one row, the current version"
    );
}

#[test]
fn file_uris_escape_what_sqlite_would_read_as_a_query() {
    assert_eq!(uri_path(Path::new("/data/txsock.db")), "/data/txsock.db");
    assert_eq!(
        uri_path(Path::new("/d/100%?x#y.db")),
        "/d/100%25%3fx%23y.db"
    );
    // The escaped path opens the same file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a %?#b.db");
    ledger_at(&path);
    let uri = format!("file:{}?immutable=1", uri_path(&path));
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let users: i64 = conn
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(users, 2);
}

/// Makes the journal's index disagree with its table (the schema says it indexes other
/// columns than it holds): every row stays readable, and SQLite's integrity check reports
/// the broken index as findings (rows), not as an error.
fn damage_index(path: &Path) {
    let conn = raw(path);
    conn.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_master SET sql = 'CREATE INDEX journal_to ON journal (amount, seq)'
             WHERE name = 'journal_to';
         PRAGMA writable_schema = OFF;",
    )
    .unwrap();
}

#[test]
fn integrity_reports_damage_line_by_line_and_a_sound_file_as_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    assert_eq!(store.integrity().unwrap(), Vec::<String>::new());
    drop(store);
    damage_index(&path);
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    let problems = store
        .integrity()
        .expect("damage is a finding, not an error");
    assert!(!problems.is_empty());
    assert!(
        problems.iter().any(|p| p.contains("journal_to")),
        "the findings name the broken index: {problems:?}"
    );
    let shown = path.display().to_string();
    for line in &problems {
        assert!(line.starts_with(&format!("{shown}: ")), "{line}");
        assert!(!line.contains("*** in database"), "{line}");
        assert_ne!(line, &format!("{shown}: ok"));
    }
}

#[test]
fn a_file_that_is_no_database_at_all_is_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    let problems = store.integrity().expect("a finding, not an error");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with(&format!("{}: ", path.display())));
    assert!(problems[0].contains("not a database"), "{problems:?}");
}

#[test]
fn check_counts_accounts_entries_and_money_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
    store
        .add_user(&user("carol"), &verifier(), Amount(0), 1)
        .unwrap();
    let transfer = LedgerRequest::Transfer {
        from: user("alice"),
        id: TransferId::parse("t1").unwrap(),
        to: user("bob"),
        amount: Amount(300),
    };
    store
        .execute_batch(&[(transfer, Instant::ZERO)], &mut Vec::new())
        .unwrap();
    store.deposit(&user("bob"), Amount(50), 2).unwrap();
    let report = store.check().unwrap();
    // alice 7.00, bob 3.50, carol 0 (a zero balance is no problem): 10.50 in all, all of
    // it deposited (alice's opening 10.00 and bob's 0.50); one transfer, two deposits.
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(
        (report.accounts, report.entries, report.total, report.minted),
        (3, 3, 1050, 1050)
    );
    // A balance that its journal does not give is named with the journal's figure.
    raw(&path)
        .execute("UPDATE users SET balance = 600 WHERE name = 'alice'", [])
        .unwrap();
    let report = store.check().unwrap();
    assert!(
        report
            .problems
            .contains(&"alice: balance 6.00 but the journal gives 7.00".to_string()),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.contains("not conserved")),
        "{:?}",
        report.problems
    );
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    // A journal entry naming nobody is found.
    raw(&path)
        .execute_batch(
            "UPDATE users SET balance = 700 WHERE name = 'alice';
             INSERT INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
             VALUES ('transfer', 'ghost', 'g1', 'carol', 1, 0, 1);
             UPDATE users SET balance = 1 WHERE name = 'carol';",
        )
        .unwrap();
    let report = store.check().unwrap();
    assert_eq!(
        report.problems,
        [
            "1 journal entries name users that do not exist".to_string(),
            "money not conserved: balances sum to 10.51 but 10.50 was deposited".to_string()
        ]
    );
}

#[test]
fn every_database_gets_its_own_secret_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut secrets = Vec::new();
    for name in ["a.db", "b.db"] {
        let path = dir.path().join(name);
        let mut store = SqliteStore::open_with(&path, Amount(0), Access::Create).unwrap();
        let secret = store.server_secret().unwrap();
        drop(store);
        let mut again = SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
        assert_eq!(again.server_secret().unwrap(), secret);
        secrets.push(secret);
    }
    assert_ne!(secrets[0], secrets[1]);
    for secret in &secrets {
        assert_ne!(secret, &[0; 32]);
        assert_ne!(secret, &[1; 32]);
    }
}

/// An auditor opened read-only on a ledger no server has open (no `-wal` file) still sees
/// what a server started afterwards commits: it reads through the WAL like any reader, not
/// a frozen copy of the file.
#[test]
fn a_reader_opened_before_a_server_sees_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "the creator left a -wal file");
    let mut reader = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    let bob = |reader: &mut SqliteStore| {
        reader
            .list_users()
            .unwrap()
            .into_iter()
            .find(|u| u.name == "bob")
            .map(|u| u.balance)
    };
    assert_eq!(bob(&mut reader), Some(Amount(0)));
    let mut server = SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
    server.deposit(&user("bob"), Amount(42), 2).unwrap();
    assert!(
        Path::new(&wal).exists(),
        "the server writes through the WAL"
    );
    assert_eq!(bob(&mut reader), Some(Amount(42)));
    assert!(reader.check().unwrap().problems.is_empty());
}

/// A database that cannot be looked at (here: a path through a regular file) is reported as
/// such, not as missing: "nothing was created" would send the operator to the wrong place.
#[test]
fn an_unreadable_path_is_not_reported_as_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let path = file.join("txsock.db");
    for access in [Access::Existing, Access::ReadOnly] {
        let e = error_of(SqliteStore::open_with(&path, Amount(0), access));
        assert!(e.starts_with("cannot open "), "{access:?}: {e}");
        assert!(!e.contains("no txsock database"), "{access:?}: {e}");
    }
}
