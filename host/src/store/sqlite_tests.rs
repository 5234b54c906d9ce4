//! How the SQLite store opens a file (what each access creates, refuses or migrates), checks
//! a damaged one, and tells its state: the paths the conformance suite, which always opens
//! a fresh database, does not take. Written against cargo-mutants' survivors
//! (docs/TESTING.md).

use super::*;

use crate::store::conformance::verifier;

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

/// A ledger at `path` with alice (10.00) and bob (0), closed again.
fn ledger_at(path: &Path) {
    let mut store = SqliteStore::open_with(path, Amount(0), Access::Create).expect("create");
    store
        .add_user(&user("alice"), &verifier(1), Amount(1000), 1)
        .unwrap();
    store
        .add_user(&user("bob"), &verifier(1), Amount(0), 1)
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
        .add_user(&user("alice"), &verifier(1), Amount(100), 1)
        .unwrap();
    store
        .add_user(&user("bob"), &verifier(1), Amount(0), 1)
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
        .add_user(&user("carol"), &verifier(1), Amount(0), 1)
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

/// A ledger at schema version 3, whose journal has `AUTOINCREMENT`: alice's two deposits
/// (ids 1 and 2, 10.00 in all) and her transfer of 3.00 to bob (id 3).
fn version_3_ledger(path: &Path) {
    let conn = raw(path);
    conn.execute_batch(VERSION_TABLE).unwrap();
    for migration in &MIGRATIONS[..3] {
        conn.execute_batch(migration).unwrap();
    }
    conn.execute_batch(
        "INSERT INTO schema_version (version) VALUES (3);
         INSERT INTO users (name, salt, iterations, stored_key, server_key, balance, created_ms)
             VALUES ('alice', x'03', 4096, x'01', x'02', 700, 1),
                    ('bob', x'03', 4096, x'01', x'02', 300, 1);
         INSERT INTO journal (kind, to_user, amount, balance_after, at_ms)
             VALUES ('deposit', 'alice', 400, 400, 1), ('deposit', 'alice', 600, 1000, 2);
         INSERT INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
             VALUES ('transfer', 'alice', 't1', 'bob', 300, 700, 3);",
    )
    .unwrap();
}

/// Every journal row with its id, in id order.
fn journal_rows(path: &Path) -> Vec<String> {
    let conn = raw(path);
    let mut stmt = conn
        .prepare(
            "SELECT seq || ' ' || kind || ' ' || COALESCE(from_user, '-') || ' ' || \
             COALESCE(transfer_id, '-') || ' ' || to_user || ' ' || amount || ' ' || at_ms \
             FROM journal ORDER BY seq",
        )
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

/// alice's transfer `id` of `amount` to bob, committed alone: its result.
fn alice_pays_bob(store: &mut SqliteStore, id: &str, amount: u64) -> Result<(), ErrorCode> {
    let request = LedgerRequest::Transfer {
        from: user("alice"),
        id: TransferId::parse(id).unwrap(),
        to: user("bob"),
        amount: Amount(amount),
    };
    match &store
        .execute_batch(&[(request, Instant::ZERO)], &mut Vec::new())
        .unwrap()[0]
    {
        LedgerReply::Transfer(outcome) => outcome.result,
        other => panic!("{other:?}"),
    }
}

/// Version 4 rebuilds the journal without `AUTOINCREMENT`: every row keeps its id, a new
/// row takes the next one, retries are still answered from the journal, and no row can be
/// deleted nor an id changed, so no id is ever handed out twice.
#[test]
fn the_journal_loses_autoincrement_but_keeps_its_ids_and_never_reuses_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    version_3_ledger(&path);
    let before = journal_rows(&path);
    assert_eq!(before.len(), 3);
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::Existing).expect("migrate");
    assert_eq!(version_rows(&path), [SCHEMA_VERSION]);
    assert_eq!(journal_rows(&path), before, "same rows, same ids");
    let conn = raw(&path);
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'journal'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!sql.contains("AUTOINCREMENT"), "{sql}");
    let sequences: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_sequence", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sequences, 0, "nothing keeps a sequence any more");
    // The unique (sender, id) index survived the rebuild: a retry gets its original answer.
    assert_eq!(alice_pays_bob(&mut store, "t1", 300), Ok(()));
    assert_eq!(journal_rows(&path).len(), 3, "a retry journals nothing");
    assert_eq!(alice_pays_bob(&mut store, "t2", 100), Ok(()));
    let after = journal_rows(&path);
    assert_eq!(after[..3], before[..]);
    assert!(
        after[3].starts_with("4 transfer alice t2 bob 100 "),
        "{after:?}"
    );
    let check = store.check().unwrap();
    assert_eq!(check.problems, Vec::<String>::new());
    assert_eq!(check.entries, 4);
    // Neither a deleted row nor a changed id can free an id for reuse.
    for sql in [
        "DELETE FROM journal WHERE seq = 4",
        "UPDATE journal SET seq = 9 WHERE seq = 4",
    ] {
        let e = conn.execute(sql, []).expect_err(sql).to_string();
        assert!(e.contains("never handed out twice"), "{sql}: {e}");
    }
    assert_eq!(journal_rows(&path), after);
}

/// A version 3 journal whose last rows were deleted by hand (its `sqlite_sequence` is
/// ahead of its last id) is not migrated: without `AUTOINCREMENT` those ids would be handed
/// out again. The file stays as it was.
#[test]
fn a_journal_missing_its_last_ids_is_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    version_3_ledger(&path);
    raw(&path)
        .execute("DELETE FROM journal WHERE seq = 3", [])
        .unwrap();
    let e = error_of(SqliteStore::open_with(&path, Amount(0), Access::Existing));
    assert!(e.contains("ids went up to 3 but its last row is 2"), "{e}");
    assert_eq!(version_rows(&path), [3]);
    let sql: String = raw(&path)
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'journal'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.contains("AUTOINCREMENT"), "untouched: {sql}");
}

/// A version 3 file made by hand, its journal created without `AUTOINCREMENT`, has no
/// `sqlite_sequence` (SQLite makes that table only for an `AUTOINCREMENT` table): nothing
/// records ids beyond its rows, so it is migrated like any other, its ids kept (it was a
/// bare "no such table: sqlite_sequence").
#[test]
fn a_version_3_journal_made_without_autoincrement_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    {
        let conn = raw(&path);
        conn.execute_batch(VERSION_TABLE).unwrap();
        conn.execute_batch(&MIGRATIONS[0].replace("AUTOINCREMENT", ""))
            .unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.execute_batch(MIGRATIONS[2]).unwrap();
        conn.execute_batch(
            "INSERT INTO schema_version (version) VALUES (3);
             INSERT INTO users (name, salt, iterations, stored_key, server_key, balance, created_ms)
                 VALUES ('alice', x'03', 4096, x'01', x'02', 700, 1),
                        ('bob', x'03', 4096, x'01', x'02', 300, 1);
             INSERT INTO journal (kind, to_user, amount, balance_after, at_ms)
                 VALUES ('deposit', 'alice', 1000, 1000, 1);
             INSERT INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
                 VALUES ('transfer', 'alice', 't1', 'bob', 300, 700, 3);",
        )
        .unwrap();
        let sequence: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!sequence, "the hand-made file has no sqlite_sequence");
    }
    let before = journal_rows(&path);
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::Existing).expect("migrate");
    assert_eq!(version_rows(&path), [SCHEMA_VERSION]);
    assert_eq!(journal_rows(&path), before);
    assert_eq!(alice_pays_bob(&mut store, "t1", 300), Ok(()), "a retry");
    assert_eq!(alice_pays_bob(&mut store, "t2", 100), Ok(()));
    let after = journal_rows(&path);
    assert_eq!(after.len(), 3);
    assert!(
        after[2].starts_with("3 transfer alice t2 bob 100 "),
        "{after:?}"
    );
    assert_eq!(store.check().unwrap().problems, Vec::<String>::new());
}

/// No update changes a journal row's id, whatever name it uses for it (`seq` and the row
/// id's three aliases), nor gives a row the (sender, transfer id) of another, which
/// `UPDATE OR REPLACE` would resolve by deleting the other row without the delete guard.
/// An update that changes neither still runs (the guard is about ids, not the rest).
#[test]
fn no_update_changes_a_journal_id_or_takes_another_rows_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
    assert_eq!(alice_pays_bob(&mut store, "t1", 100), Ok(()));
    assert_eq!(alice_pays_bob(&mut store, "t2", 200), Ok(()));
    let before = journal_rows(&path);
    assert_eq!(before.len(), 3, "{before:?}");
    let conn = raw(&path);
    for (sql, refusal) in [
        (
            "UPDATE journal SET seq = 9 WHERE seq = 3",
            "ids never change",
        ),
        (
            "UPDATE journal SET rowid = 9 WHERE seq = 3",
            "ids never change",
        ),
        (
            "UPDATE journal SET oid = 9 WHERE seq = 3",
            "ids never change",
        ),
        (
            "UPDATE journal SET _rowid_ = 9 WHERE seq = 3",
            "ids never change",
        ),
        (
            "UPDATE OR REPLACE journal SET seq = 2 WHERE seq = 3",
            "ids never change",
        ),
        (
            "UPDATE OR REPLACE journal SET transfer_id = 't1' WHERE seq = 3",
            "keeps every row",
        ),
        ("DELETE FROM journal WHERE seq = 3", "keeps every row"),
    ] {
        let e = conn.execute(sql, []).expect_err(sql).to_string();
        assert!(e.contains(refusal), "{sql}: {e}");
    }
    assert_eq!(journal_rows(&path), before);
    conn.execute("UPDATE journal SET at_ms = 5 WHERE seq = 3", [])
        .expect("an update that keeps the id and the place");
    assert!(journal_rows(&path)[2].ends_with(" 5"));
}

/// A ledger guarded by the update trigger of before (`journal_keeps_ids`, `UPDATE OF seq`
/// only) gets today's on its next writable open, and `ledger check` says until then that
/// today's is missing.
#[test]
fn the_former_id_guard_is_replaced_on_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    raw(&path)
        .execute_batch(
            "DROP TRIGGER journal_ids_never_change;
             CREATE TRIGGER journal_keeps_ids BEFORE UPDATE OF seq ON journal
             BEGIN SELECT RAISE(ABORT, 'journal ids never change'); END;",
        )
        .unwrap();
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    let problems = store.check().unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("journal_ids_never_change is missing"),
        "{problems:?}"
    );
    drop(store);
    SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
    let triggers: Vec<String> = {
        let conn = raw(&path);
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    };
    assert_eq!(triggers, ["journal_ids_never_change", "journal_keeps_rows"]);
    let e = raw(&path)
        .execute("UPDATE journal SET rowid = 9 WHERE seq = 1", [])
        .expect_err("guarded");
    assert!(e.to_string().contains("ids never change"), "{e}");
}

/// `REPLACE INTO` the journal is not stopped by a trigger (a guard on inserts would cost
/// the ledger's hot path; see `JOURNAL_GUARDS_SQL`), but what it does to the money is found
/// by `ledger check`: a committed transfer rewritten in place (its id taken), or deleted for
/// a new row with its (sender, transfer id).
#[test]
fn check_finds_a_journal_row_replaced_by_hand() {
    for replace in [
        "REPLACE INTO journal (seq, kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
             VALUES (2, 'transfer', 'alice', 't1', 'bob', 900, 100, 2)",
        "INSERT OR REPLACE INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
             VALUES ('transfer', 'alice', 't1', 'alice', 100, 900, 2)",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("txsock.db");
        ledger_at(&path);
        let mut store = SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
        assert_eq!(alice_pays_bob(&mut store, "t1", 100), Ok(()));
        assert_eq!(store.check().unwrap().problems, Vec::<String>::new());
        raw(&path).execute(replace, []).expect(replace);
        let problems = store.check().unwrap().problems;
        assert!(
            problems.iter().any(|p| p.starts_with("bob: balance 1.00 but the journal gives")),
            "{replace}: {problems:?}"
        );
    }
}

/// `ledger check` names a dropped guard of the journal's ids; the next writable open (the
/// server's) creates it again.
#[test]
fn check_reports_a_missing_journal_guard_and_an_open_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    raw(&path)
        .execute_batch("DROP TRIGGER journal_keeps_rows")
        .unwrap();
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    let problems = store.check().unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("journal_keeps_rows is missing"),
        "{problems:?}"
    );
    drop(store);
    SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::ReadOnly).unwrap();
    assert_eq!(store.check().unwrap().problems, Vec::<String>::new());
}

/// A commit of one transfer writes four pages to the WAL: the users leaf holding both
/// balances, the journal's leaf and one leaf of each of its two indexes. (With
/// `AUTOINCREMENT` it was five: `sqlite_sequence` too.)
#[test]
fn a_single_transfer_commit_writes_four_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    ledger_at(&path);
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::Existing).unwrap();
    let wal = dir.path().join("txsock.db-wal");
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    // The first transfer may also create the index leaves' first entries; measure the next.
    assert_eq!(alice_pays_bob(&mut store, "t1", 100), Ok(()));
    let before = size();
    assert_eq!(alice_pays_bob(&mut store, "t2", 100), Ok(()));
    // A WAL frame is a 24-byte header and one 4,096-byte page.
    assert_eq!((size() - before) / (24 + 4096), 4);
}

/// The WAL is copied into the database file once it holds [`WAL_AUTOCHECKPOINT_PAGES`]
/// pages, not before, and is then written from its start again: under a stream of commits
/// its file stops growing about a commit past the mark.
#[test]
fn the_wal_is_checkpointed_at_its_mark_and_then_written_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txsock.db");
    let mut store = SqliteStore::open_with(&path, Amount(0), Access::Create).unwrap();
    let names: Vec<Username> = (0..64).map(|i| user(&format!("u{i:02}"))).collect();
    for name in &names {
        store
            .add_user(name, &verifier(1), Amount(1_000_000), 1)
            .unwrap();
    }
    let wal_size = || {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(&wal).expect("the WAL").len()
    };
    let page: u64 = store
        .conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    let mark = WAL_AUTOCHECKPOINT_PAGES as u64 * (page + 24);
    // One commit: every user pays another, a different one each round.
    let commit = |store: &mut SqliteStore, round: usize| {
        let batch: Vec<_> = (0..names.len())
            .map(|i| {
                let request = LedgerRequest::Transfer {
                    from: names[i].clone(),
                    id: TransferId::parse(&format!("r{round}x{i}")).unwrap(),
                    to: names[(i + 1 + round % 63) % names.len()].clone(),
                    amount: Amount(1),
                };
                (request, Instant::ZERO)
            })
            .collect();
        let replies = store.execute_batch(&batch, &mut Vec::new()).unwrap();
        assert!(replies
            .iter()
            .all(|r| matches!(r, LedgerReply::Transfer(t) if t.result.is_ok())));
    };
    // Up to the mark the WAL only grows; the largest step is a commit's frames.
    let mut largest_commit = 0;
    let mut size = wal_size();
    let mut round = 0;
    while size < mark {
        round += 1;
        commit(&mut store, round);
        let after = wal_size();
        assert!(
            after > size,
            "a checkpoint before the mark: {after} after {size}"
        );
        largest_commit = largest_commit.max(after - size);
        size = after;
        assert!(round < 10_000, "the WAL never reached its mark");
    }
    // Then as many commits again: the WAL was reset and is overwritten, not grown.
    let peak = size;
    for again in round + 1..=2 * round {
        commit(&mut store, again);
    }
    assert!(
        wal_size() <= peak + largest_commit,
        "the WAL grew past its mark: {} bytes against a mark of {mark} and commits of up to \
         {largest_commit}",
        wal_size()
    );
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
