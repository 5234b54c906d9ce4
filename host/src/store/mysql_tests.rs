//! The MySQL store's rules that need no server: how a failed statement is handled, the
//! pause between attempts, the sums MySQL returns as text. The store against a server is
//! the conformance suite's (`store/conformance.rs`). Written against cargo-mutants'
//! survivors (docs/TESTING.md).

use super::*;
use crate::store::conformance;

fn server_error(code: u16) -> anyhow::Error {
    anyhow::Error::new(mysql::Error::MySqlError(mysql::error::MySqlError {
        state: "HY000".into(),
        message: format!("error {code}"),
        code,
    }))
}

/// A lock conflict (deadlock, lock wait timeout, snapshot conflict) and a duplicate key
/// run the batch again; a Galera node that is not ready and a broken connection reconnect;
/// any other server error fails the request, as does an error that is no MySQL error. The
/// cause is found however deep in the context chain it sits.
#[test]
fn each_failure_is_handled_as_its_kind_says() {
    for code in [1205, 1213, 1020, 1062] {
        assert_eq!(classify(&server_error(code)), Failure::Conflict, "{code}");
        assert_eq!(
            classify(&server_error(code).context("running the batch")),
            Failure::Conflict,
            "{code} under a context"
        );
    }
    assert_eq!(classify(&server_error(1047)), Failure::Connection);
    // Syntax, no such table, a CHECK constraint, data too long, unknown column, and the
    // codes next to the retried ones.
    for code in [
        1064, 1146, 4025, 1406, 1054, 1061, 1063, 1046, 1048, 1204, 1206, 1212, 1214,
    ] {
        assert_eq!(classify(&server_error(code)), Failure::Other, "{code}");
    }
    let connection_errors = [
        mysql::Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        mysql::Error::DriverError(mysql::DriverError::ConnectTimeout),
        // (A `CodecError` cannot be made here: its type is not exported without the
        // driver's `derive` feature.)
    ];
    for error in connection_errors {
        let shown = error.to_string();
        let error = anyhow::Error::new(error).context("committing");
        assert_eq!(classify(&error), Failure::Connection, "{shown}");
    }
    assert_eq!(
        classify(&anyhow::Error::new(AbortedByCluster).context("checking")),
        Failure::Conflict
    );
    assert_eq!(
        classify(&anyhow!("the balance of alice changed")),
        Failure::Other
    );
    assert_eq!(
        classify(
            &anyhow::Error::new(mysql::Error::DriverError(
                mysql::DriverError::ConnectTimeout
            ))
            .context(AbortedByCluster.to_string())
        ),
        Failure::Connection,
        "a message is no cause"
    );
}

/// Only contention splits a batch: a deadlock (also a cluster abort) or a lock wait
/// timeout, told apart; not a snapshot conflict, a duplicate key, a lost connection or a node
/// that is not ready, which a plain retry resolves, nor any other error. A failed check
/// after a `COMMIT` that succeeded is no conflict at all, whatever its cause: its outcome is
/// unknown, so it is never run again (review item 10).
#[test]
fn only_deadlocks_and_lock_waits_split_and_an_unknown_outcome_is_never_retried() {
    for (code, kind) in [
        (1213, Some(Contention::Deadlock)),
        (1205, Some(Contention::LockWait)),
        (1020, None),
        (1062, None),
        (1047, None),
        (1064, None),
    ] {
        assert_eq!(contention(&server_error(code)), kind, "{code}");
        assert_eq!(
            contention(&server_error(code).context("running the batch")),
            kind,
            "{code} under a context"
        );
    }
    assert_eq!(
        contention(&anyhow::Error::new(AbortedByCluster).context("checking")),
        Some(Contention::Deadlock)
    );
    let lost = mysql::Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert_eq!(contention(&anyhow::Error::new(lost)), None);
    assert_eq!(
        contention(&anyhow!("deadlock 1213")),
        None,
        "a message is no cause"
    );
    for cause in [server_error(1213), server_error(1205), server_error(1047)] {
        let unknown = cause.context(OutcomeUnknown);
        assert_eq!(contention(&unknown), None, "{unknown:#}");
        assert_eq!(classify(&unknown), Failure::Other, "{unknown:#}");
        assert_eq!(
            classify(&unknown.context("committing a batch")),
            Failure::Other,
            "under a context"
        );
    }
    let unknown = server_error(1213).context(OutcomeUnknown);
    let shown = format!("{unknown:#}");
    assert!(
        shown.starts_with("checking the outcomes a commit recorded: ") && shown.contains("1213"),
        "{shown}"
    );
}

/// `SET STATEMENT` ([`NO_CAUSAL_WAIT`]) is used only where the server's version names
/// MariaDB: not on MySQL or Percona XtraDB Cluster, whose Galera lacks it (review item 13).
#[test]
fn only_a_mariadb_version_skips_the_causal_wait() {
    for version in [
        "10.11.6-MariaDB-0+deb12u1",
        "11.4.2-MariaDB",
        "5.5.5-10.6.16-MariaDB-log",
        "10.6.16-mariadb",
    ] {
        assert!(names_mariadb(version), "{version}");
    }
    for version in [
        "8.0.36-28.1",
        "8.0.35",
        "5.7.44-log",
        "8.0.36-28 Percona XtraDB Cluster",
    ] {
        assert!(!names_mariadb(version), "{version}");
    }
}

/// A statement skips the causal wait only on a Galera node that is MariaDB: a plain MariaDB
/// or MySQL has none to skip (and is not asked its version), and another Galera flavour would
/// fail every batch on `SET STATEMENT`.
#[test]
fn only_a_mariadb_galera_node_gets_the_no_causal_wait_prefix() {
    let asked = std::cell::Cell::new(0);
    let ask = |answer: bool| {
        asked.set(asked.get() + 1);
        Ok(answer)
    };
    assert_eq!(
        no_causal_wait_prefix(true, || ask(true)).unwrap(),
        NO_CAUSAL_WAIT
    );
    assert_eq!(no_causal_wait_prefix(true, || ask(false)).unwrap(), "");
    assert_eq!(asked.get(), 2);
    for mariadb in [true, false] {
        assert_eq!(no_causal_wait_prefix(false, || ask(mariadb)).unwrap(), "");
    }
    assert_eq!(
        asked.get(),
        2,
        "a node off a cluster is not asked its version"
    );
    assert!(no_causal_wait_prefix(true, || Err(anyhow::anyhow!("lost"))).is_err());
}

/// The pause before attempt `n + 1` is 1 ms up to 2^n ms, at most 0.5 s: random within
/// that, and reaching near its ceiling.
#[test]
fn the_pause_between_attempts_grows_to_half_a_second_and_stays_random() {
    for attempt in 0..=20 {
        let ceiling = (1u64 << attempt.min(9)).min(500);
        let pauses: Vec<u64> = (0..300)
            .map(|_| backoff(attempt).as_millis() as u64)
            .collect();
        let (low, high) = (pauses.iter().min().unwrap(), pauses.iter().max().unwrap());
        assert!(*low >= 1, "attempt {attempt}: {low} ms");
        assert!(
            *high <= ceiling,
            "attempt {attempt}: {high} ms over {ceiling}"
        );
        if ceiling >= 8 {
            assert!(*high > ceiling / 2, "attempt {attempt}: at most {high} ms");
            assert!(low < high, "attempt {attempt}: always {low} ms");
        }
    }
    assert_eq!(backoff(0), Duration::from_millis(1));
}

/// MySQL returns sums as decimal text: a sum beyond `i64` is read exactly, no sum (an
/// empty group) is zero, and anything that is not a number is an error that shows it.
#[test]
fn sums_are_read_exactly_and_garbage_is_an_error() {
    assert_eq!(big(None).unwrap(), 0);
    assert_eq!(big(Some("0".into())).unwrap(), 0);
    assert_eq!(
        big(Some("170141183460469231731687303715884105727".into())).unwrap(),
        i128::MAX
    );
    assert_eq!(big(Some("-42".into())).unwrap(), -42);
    let e = big(Some("12.5".into())).unwrap_err().to_string();
    assert!(e.contains("\"12.5\""), "{e}");
}

/// The brute-force abort says what happened, for the log.
#[test]
fn a_cluster_abort_says_so() {
    assert_eq!(
        AbortedByCluster.to_string(),
        "the transaction was rolled back by the cluster (brute-force abort)"
    );
}

/// A connection of the test's own to its database, to age or empty it behind the store.
fn raw(url: &str) -> Conn {
    Conn::new(Opts::from_url(url).unwrap()).expect("connecting to the test database")
}

fn refusal(result: Result<MysqlStore>) -> String {
    match result {
        Ok(_) => panic!("the open should have been refused"),
        Err(e) => format!("{e:#}"),
    }
}

fn tables(url: &str) -> Vec<String> {
    raw(url).query("SHOW TABLES").unwrap()
}

/// Only [`Access::Create`] makes a ledger of an empty database; the other two refuse a
/// database with no txsock schema (no version table, or an empty one) and create nothing.
/// Needs the test server (`TXSOCK_TEST_MYSQL_URL`, as the conformance suite).
#[test]
fn only_create_makes_a_ledger_of_a_database_without_one() {
    let Some(db) = conformance::MysqlBackend::new("mysql_no_schema") else {
        return;
    };
    for access in [Access::Existing, Access::ReadOnly] {
        let e = refusal(MysqlStore::open_with(&db.url, Amount(0), access));
        assert!(
            e.ends_with("is not a txsock database (it has no schema_version table)"),
            "{access:?}: {e}"
        );
    }
    assert_eq!(tables(&db.url), Vec::<String>::new(), "nothing created");
    raw(&db.url).query_drop(VERSION_TABLE).unwrap();
    for access in [Access::Existing, Access::ReadOnly] {
        let e = refusal(MysqlStore::open_with(&db.url, Amount(0), access));
        assert!(
            e.ends_with("is not a txsock database (its schema_version table is empty)"),
            "{access:?}: {e}"
        );
    }
    assert_eq!(tables(&db.url), ["schema_version"], "nothing created");
    MysqlStore::open_with(&db.url, Amount(0), Access::Create).expect("create");
    let mut made = tables(&db.url);
    made.sort();
    assert_eq!(
        made,
        ["journal", "meta", "refusals", "schema_version", "users"]
    );
}

/// A ledger of a newer schema is refused by every access (read-only too: this code could
/// misread it); the current one opens for reading, and a read-only store writes nothing.
#[test]
fn a_newer_schema_is_refused_by_every_access_and_read_only_writes_nothing() {
    let Some(db) = conformance::MysqlBackend::new("mysql_newer_schema") else {
        return;
    };
    let alice = Username::parse("alice").unwrap();
    let verifier = || conformance::verifier(1);
    MysqlStore::open_with(&db.url, Amount(0), Access::Create)
        .unwrap()
        .add_user(&alice, &verifier(), Amount(700), 1)
        .unwrap();
    let mut reader = MysqlStore::open_with(&db.url, Amount(0), Access::ReadOnly).expect("read");
    let users = reader.list_users().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].balance, Amount(700));
    let bob = Username::parse("bob").unwrap();
    reader
        .add_user(&bob, &verifier(), Amount(0), 1)
        .expect_err("a read-only store writes nothing");
    drop(reader);
    let version: Option<i64> = raw(&db.url)
        .query_first("SELECT MAX(version) FROM schema_version")
        .unwrap();
    assert_eq!(version, Some(SCHEMA_VERSION));
    raw(&db.url)
        .query_drop(format!(
            "UPDATE schema_version SET version = {}",
            SCHEMA_VERSION + 1
        ))
        .unwrap();
    for access in [Access::Create, Access::Existing, Access::ReadOnly] {
        let e = refusal(MysqlStore::open_with(&db.url, Amount(0), access));
        assert!(
            e.contains(&format!(
                "schema version {} is newer than this txsock's ({SCHEMA_VERSION})",
                SCHEMA_VERSION + 1
            )),
            "{access:?}: {e}"
        );
    }
}

/// `ledger check --integrity` on MySQL: a sound ledger has no findings; a table that is
/// gone is reported, every line of the server's answer for it (its error and the failed
/// status) naming the database and the table, and the sound tables are not.
#[test]
fn integrity_reports_each_finding_and_a_sound_ledger_as_nothing() {
    let Some(db) = conformance::MysqlBackend::new("mysql_integrity") else {
        return;
    };
    let mut store = MysqlStore::open_with(&db.url, Amount(0), Access::Create).unwrap();
    assert_eq!(store.integrity().unwrap(), Vec::<String>::new());
    raw(&db.url).query_drop("DROP TABLE refusals").unwrap();
    let findings = store.integrity().unwrap();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(
        findings[0].contains(".refusals: Error: Table '") && findings[0].ends_with("doesn't exist"),
        "{findings:?}"
    );
    assert!(
        findings[1].ends_with(".refusals: status: Operation failed"),
        "{findings:?}"
    );
    for finding in &findings {
        assert!(finding.starts_with(&store.shown), "{finding}");
        assert!(!finding.contains(":pw@"), "no password: {finding}");
    }
}

/// The liveness check of a Galera transaction, on a plain server (the session's table is
/// made as `causal_reads_if_galera` makes it on a cluster node): the token a transaction
/// wrote is found before its `COMMIT`; a token that is not there (the transaction that
/// wrote it was rolled back under the session) is a conflict, and so is a token replaced
/// by a newer transaction's. A plain server is no Galera node.
#[test]
fn a_transaction_whose_token_is_gone_is_a_conflict() {
    let Some(db) = conformance::MysqlBackend::new("mysql_liveness") else {
        return;
    };
    let mut c = raw(&db.url);
    assert!(
        !causal_reads_if_galera(&mut c, false).unwrap(),
        "no cluster"
    );
    assert!(is_mariadb(&mut c).unwrap(), "the test server is MariaDB");
    c.query_drop(
        "CREATE TEMPORARY TABLE txsock_alive (token BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    )
    .unwrap();
    c.query_drop("SET SESSION autocommit = 0").unwrap();
    let first = liveness_token(&mut c).unwrap();
    check_alive(&mut c, first, NO_CAUSAL_WAIT).expect("the token is there");
    c.query_drop("ROLLBACK").unwrap();
    let e = check_alive(&mut c, first, NO_CAUSAL_WAIT).expect_err("rolled back");
    assert_eq!(classify(&e), Failure::Conflict);
    let second = liveness_token(&mut c).unwrap();
    let third = liveness_token(&mut c).unwrap();
    assert_ne!(second, third, "each transaction has its own token");
    check_alive(&mut c, third, NO_CAUSAL_WAIT).expect("the latest token is there");
    let e = check_alive(&mut c, second, NO_CAUSAL_WAIT).expect_err("replaced");
    assert_eq!(classify(&e), Failure::Conflict);
    let tokens: Vec<u64> = c.query("SELECT token FROM txsock_alive").unwrap();
    assert_eq!(tokens, [third], "one token at a time");
}

/// `ledger check` on MySQL names journal entries whose sender or recipient is no account
/// (counted once each), besides the money they put out of balance; a sound ledger has no
/// problem.
#[test]
fn check_counts_journal_entries_of_accounts_that_do_not_exist() {
    let Some(db) = conformance::MysqlBackend::new("mysql_orphans") else {
        return;
    };
    let mut store = MysqlStore::open_with(&db.url, Amount(0), Access::Create).unwrap();
    let alice = Username::parse("alice").unwrap();
    let mut v = Verifier {
        salt: Default::default(),
        iterations: 4096,
        stored_key: [1; 32],
        server_key: [2; 32],
    };
    v.salt.extend_from_slice(&[3; 16]).unwrap();
    store.add_user(&alice, &v, Amount(500), 1).unwrap();
    assert_eq!(store.check().unwrap().problems, Vec::<String>::new());
    raw(&db.url)
        .query_drop(
            "INSERT INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
             VALUES ('transfer', 'ghost', 't1', 'alice', 1, 0, 2),
                    ('transfer', 'alice', 't2', 'nobody', 1, 499, 3),
                    ('deposit', NULL, NULL, 'nobody', 1, 1, 4)",
        )
        .unwrap();
    let problems = store.check().unwrap().problems;
    assert!(
        problems.contains(&"3 journal entries name users that do not exist".to_string()),
        "{problems:?}"
    );
}

/// The connection's id, to tell a rollback on the same connection from a reconnection.
fn connection_id(c: &mut Conn) -> Result<u64> {
    Ok(first::<(u64,)>(c, "SELECT CONNECTION_ID()", ())?.map_or(0, |r| r.0))
}

/// The `meta` keys the retry test wrote, in order.
fn tries(url: &str) -> Vec<String> {
    raw(url)
        .query("SELECT meta_key FROM meta WHERE meta_key LIKE 'try.%' ORDER BY meta_key")
        .unwrap()
}

/// [`MysqlStore::transaction`] (migrations and the admin commands): a conflict rolls the
/// attempt back on the same connection and runs the body again; a connection lost before
/// `COMMIT` was sent is dropped, and the body runs again on a new one; any other failure is
/// returned at once; a conflict that never ends is given up after [`MAX_ATTEMPTS`]
/// attempts. Only the attempt that commits leaves its writes.
#[test]
fn a_transaction_retries_conflicts_and_lost_connections_and_nothing_else() {
    let Some(db) = conformance::MysqlBackend::new("mysql_retries") else {
        return;
    };
    let mut store = MysqlStore::open_with(&db.url, Amount(0), Access::Create).unwrap();
    let attempt = |c: &mut Conn, runs: &mut Vec<u64>, tag: &str| -> Result<()> {
        runs.push(connection_id(c)?);
        assert!(
            runs.len() <= MAX_ATTEMPTS as usize,
            "more attempts than allowed"
        );
        c.exec_drop(
            "INSERT INTO meta (meta_key, meta_value) VALUES (?, x'00')",
            (format!("try.{tag}.{}", runs.len()),),
        )?;
        Ok(())
    };

    let mut runs = Vec::new();
    let value = store
        .transaction(|c| {
            attempt(c, &mut runs, "a")?;
            if runs.len() < 3 {
                return Err(server_error(1213).context("deadlock"));
            }
            Ok(runs.len())
        })
        .unwrap();
    assert_eq!(value, 3);
    assert!(
        runs.iter().all(|id| *id == runs[0]),
        "one connection: {runs:?}"
    );
    assert_eq!(tries(&db.url), ["try.a.3"]);

    let mut runs = Vec::new();
    store
        .transaction(|c| {
            attempt(c, &mut runs, "b")?;
            if runs.len() < 2 {
                let lost = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
                return Err(anyhow::Error::new(mysql::Error::IoError(lost)));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert_ne!(runs[0], runs[1], "a lost connection is replaced");
    assert_eq!(tries(&db.url), ["try.a.3", "try.b.2"]);

    let mut runs = Vec::new();
    let e = store
        .transaction(|c| -> Result<()> {
            attempt(c, &mut runs, "c")?;
            Err(server_error(1064))
        })
        .unwrap_err();
    assert_eq!(runs.len(), 1, "not run again");
    assert_eq!(classify(&e), Failure::Other);

    let mut runs = Vec::new();
    let e = store
        .transaction(|c| -> Result<()> {
            attempt(c, &mut runs, "d")?;
            Err(server_error(1205))
        })
        .unwrap_err();
    assert_eq!(runs.len(), MAX_ATTEMPTS as usize);
    assert_eq!(classify(&e), Failure::Conflict);
    assert_eq!(
        tries(&db.url),
        ["try.a.3", "try.b.2"],
        "nothing of the failures"
    );
}

/// A batch's runs as [`MysqlStore::commit_splitting`] allows them for several requests
/// (review items 9 and 11): [`SPLIT_AFTER`] deadlocks, or one lock wait, end it (to be split);
/// lost connections before `COMMIT` (a node leaving the cluster, 1047) and duplicate keys keep
/// their [`MAX_ATTEMPTS`] runs, and so do deadlocks mixed with them.
#[test]
fn a_batch_gives_up_to_split_only_on_deadlocks_or_a_lock_wait() {
    let Some(db) = conformance::MysqlBackend::new("mysql_split_tries") else {
        return;
    };
    let mut store = MysqlStore::open_with(&db.url, Amount(0), Access::Create).unwrap();
    let split = Tries {
        deadlocks: SPLIT_AFTER,
        lock_waits: 1,
    };
    let lost = || {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        anyhow::Error::new(mysql::Error::IoError(reset))
    };
    // Each case: the error every run ends with, and how many runs happen.
    let cases = [
        ("deadlocks", 1213, SPLIT_AFTER),
        ("a lock wait", 1205, 1),
        ("not ready", ER_WSREP_NOT_READY, MAX_ATTEMPTS),
        ("duplicate keys", ER_DUP_ENTRY, MAX_ATTEMPTS),
    ];
    for (what, code, runs_expected) in cases {
        let mut runs = 0;
        let e = store
            .transaction_tries(split, |_| -> Result<()> {
                runs += 1;
                // A failure, not a hang, when the runs are not counted (mysql-seam).
                assert!(runs <= MAX_ATTEMPTS, "{what}: more runs than allowed");
                Err(server_error(code))
            })
            .unwrap_err();
        assert_eq!(runs, runs_expected, "{what}: {e:#}");
    }
    // Five lost connections, then a commit: more runs than SPLIT_AFTER, one outcome.
    let mut runs = 0;
    store
        .transaction_tries(split, |c| {
            runs += 1;
            if runs <= 5 {
                return Err(lost());
            }
            c.query_drop("INSERT INTO meta (meta_key, meta_value) VALUES ('try.lost', x'00')")?;
            Ok(())
        })
        .unwrap();
    assert_eq!(runs, 6);
    assert_eq!(tries(&db.url), ["try.lost"]);
    // Deadlocks between lost connections: the third deadlock ends it, not the runs.
    let mut runs = 0;
    let e = store
        .transaction_tries(split, |_| -> Result<()> {
            runs += 1;
            Err(if runs % 2 == 1 {
                lost()
            } else {
                server_error(1213)
            })
        })
        .unwrap_err();
    assert_eq!(runs, 6, "{e:#}");
    assert_eq!(contention(&e), Some(Contention::Deadlock));
}

/// The read-back after a Galera commit ([`MysqlStore::recorded_count`]): it counts every
/// `(sender, id)` with an outcome, committed or refused, and nothing else, also across the
/// chunks a long list is read in.
#[test]
fn the_read_back_counts_every_recorded_outcome_and_nothing_else() {
    let Some(db) = conformance::MysqlBackend::new("mysql_read_back") else {
        return;
    };
    let mut store = MysqlStore::open_with(&db.url, Amount(0), Access::Create).unwrap();
    let mut conn = raw(&db.url);
    conn.query_drop(
        "INSERT INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
             VALUES ('transfer', 'alice', 't1', 'bob', 1, 0, 1)",
    )
    .unwrap();
    conn.query_drop(
        "INSERT INTO refusals (from_user, transfer_id, to_user, amount, code, balance_at, at_ms)
                 VALUES ('alice', 't2', 'bob', 9, 'insufficient_funds', 0, 2),
                        ('bob', 't900', 'alice', 9, 'insufficient_funds', 0, 3)",
    )
    .unwrap();
    let key = |from: &str, id: &str| (from.to_string(), id.to_string());
    assert_eq!(store.recorded_count(&[]).unwrap(), 0);
    assert_eq!(
        store
            .recorded_count(&[key("alice", "t1"), key("alice", "t2"), key("alice", "t3")])
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .recorded_count(&[key("bob", "t1"), key("alice", "t900")])
            .unwrap(),
        0,
        "another sender's id is not this one's"
    );
    // More keys than one statement takes: an outcome in the first chunk and two in the last.
    let mut keys: Vec<IdKey> = (0..LOCK_CHUNK + 10)
        .map(|i| key("carol", &format!("x{i}")))
        .collect();
    keys[0] = key("alice", "t1");
    keys[LOCK_CHUNK + 3] = key("alice", "t2");
    keys[LOCK_CHUNK + 9] = key("bob", "t900");
    assert_eq!(store.recorded_count(&keys).unwrap(), 3);
}

// The batch path against what a concurrent client observes (issue 22, mutants-mysql). The
// test's own connection plays a second server: it holds an account's row lock, or records
// an outcome, at the moment the test needs, which makes each interleaving deterministic.

fn name(text: &str) -> Username {
    Username::parse(text).unwrap()
}

fn transfer(from: &str, id: &str, to: &str, minor: u64) -> LedgerRequest {
    LedgerRequest::Transfer {
        from: name(from),
        id: TransferId::parse(id).unwrap(),
        to: name(to),
        amount: Amount(minor),
    }
}

fn login_failed(user: &str) -> LedgerRequest {
    LedgerRequest::LoginFailed {
        user: name(user),
        now: Instant::from_millis(1_000),
        policy: txsock_core::lockout::Backoff::ACCOUNT,
    }
}

/// A store of the test's database with `users` registered, each with `minor` units.
fn store_with(url: &str, users: &[&str], minor: u64) -> MysqlStore {
    let mut store = MysqlStore::open(url, Amount(0)).unwrap();
    for user in users {
        store
            .add_user(&name(user), &conformance::verifier(1), Amount(minor), 1)
            .unwrap();
    }
    store
}

/// Runs `requests` as one batch on `store` in a thread of its own (it may wait for a lock
/// the test holds); the thread gives the store back with the replies.
fn batch_in_thread(
    mut store: MysqlStore,
    requests: Vec<LedgerRequest>,
) -> std::thread::JoinHandle<(MysqlStore, Result<Vec<LedgerReply>>)> {
    std::thread::spawn(move || {
        let batch: Vec<(LedgerRequest, Instant)> = requests
            .into_iter()
            .map(|r| (r, Instant::from_millis(1_000)))
            .collect();
        let mut committed = Vec::new();
        let replies = store.execute_batch(&batch, &mut committed);
        (store, replies)
    })
}

/// Held by each test that calls [`wait_until_blocked`], for the whole test: InnoDB refreshes
/// what `INNODB_TRX` shows only after 100 ms in which nobody read it, so two tests polling it
/// at once (libtest runs tests in parallel) could keep it from ever refreshing.
fn lock_watchers() -> std::sync::MutexGuard<'static, ()> {
    static WATCHERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    WATCHERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until a transaction of another connection to this test's database waits for a row
/// lock (InnoDB's `LOCK WAIT`: a lock the test holds), however long it has run. Panics after
/// 8 s, before the store's 10 s lock wait runs out. Reading `INNODB_TRX` needs the `PROCESS`
/// privilege (`cargo xtask test`'s server grants it).
fn wait_until_blocked(watch: &mut Conn) {
    let started = std::time::Instant::now();
    loop {
        let waiting: Option<u64> = watch
            .query_first(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX t
                 JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
                 WHERE t.trx_state = 'LOCK WAIT' AND p.ID <> CONNECTION_ID()
                   AND p.DB = DATABASE()",
            )
            .expect("reading information_schema.INNODB_TRX (needs the PROCESS privilege)");
        if waiting.unwrap_or(0) > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the batch never waited for the test's lock"
        );
        // InnoDB refreshes what INNODB_TRX shows only after 100 ms without a read of it:
        // polled faster, it would show the first answer for ever.
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn transfer_outcome(reply: &LedgerReply) -> txsock_core::ledger::TransferOutcome {
    match reply {
        LedgerReply::Transfer(outcome) => *outcome,
        other => panic!("expected a transfer reply, got {other:?}"),
    }
}

/// Two servers' batches that share accounts queue behind each other instead of deadlocking:
/// a batch locks every account it writes (transfers' senders and recipients, login updates'
/// users) in one order, by name, before it writes anything, so while it waits for one
/// account it holds none that comes after it in that order. Here the other server holds
/// `u1`, the first; a batch that writes `u2` (and `u3`) before it gets to `u1` waits for
/// `u1`, and `u2` and `u3` stay free for the other server, which would otherwise wait for
/// the batch while the batch waits for it.
#[test]
fn a_waiting_batch_holds_no_account_that_comes_later_in_the_lock_order() {
    let _one_at_a_time = lock_watchers();
    let Some(db) = conformance::MysqlBackend::new("mysql_lock_order") else {
        return;
    };
    let mut store = store_with(&db.url, &["u1", "u2", "u3"], 10_000);
    let cases = [
        // Login updates in the reverse of the lock order.
        vec![login_failed("u2"), login_failed("u1")],
        // A login update first, then a transfer from the first account in the order.
        vec![
            LedgerRequest::LoginSucceeded { user: name("u2") },
            transfer("u1", "t1", "u3", 500),
        ],
    ];
    let mut watch = raw(&db.url);
    for (case, requests) in cases.into_iter().enumerate() {
        let mut other = raw(&db.url);
        other.query_drop("START TRANSACTION").unwrap();
        other
            .query_drop("SELECT name FROM users WHERE name = 'u1' FOR UPDATE")
            .unwrap();
        let worker = batch_in_thread(store, requests);
        wait_until_blocked(&mut watch);
        let free: Result<Vec<String>, _> = other.query(
            "SELECT name FROM users WHERE name IN ('u2', 'u3') ORDER BY name
             FOR UPDATE SKIP LOCKED",
        );
        other.query_drop("ROLLBACK").unwrap();
        let (back, replies) = worker.join().unwrap();
        store = back;
        assert_eq!(
            free.unwrap(),
            ["u2", "u3"],
            "case {case}: the batch holds an account while it waits for u1"
        );
        assert_eq!(replies.unwrap().len(), 2, "case {case}");
    }
    assert_eq!(store.check().unwrap().problems, Vec::<String>::new());
}

/// A refusal is final, also when another server records it while a batch that retries the
/// same id waits for the sender's account, and the sender can pay by the time the batch
/// runs: the batch answers the recorded refusal and moves nothing. (The batch decides on
/// the earlier outcomes of its ids only once it holds the sender's lock; a read of anything
/// before that, in the same transaction, would fix a snapshot without the refusal.)
#[test]
fn a_refusal_recorded_while_a_batch_waits_is_its_answer() {
    let _one_at_a_time = lock_watchers();
    let Some(db) = conformance::MysqlBackend::new("mysql_refusal_final") else {
        return;
    };
    let mut store = store_with(&db.url, &["alice", "bob", "carol"], 0);
    let mut other = raw(&db.url);
    other.query_drop("START TRANSACTION").unwrap();
    other
        .query_drop("SELECT name FROM users WHERE name = 'alice' FOR UPDATE")
        .unwrap();
    // A read first (another session's request in the same group commit), then the retry.
    let worker = batch_in_thread(
        store,
        vec![
            LedgerRequest::Balance {
                user: name("carol"),
            },
            transfer("alice", "late", "bob", 5_000),
        ],
    );
    wait_until_blocked(&mut raw(&db.url));
    // The other server: alice could not pay, so `late` is refused for good; then a deposit.
    other
        .query_drop(
            "INSERT INTO refusals (from_user, transfer_id, to_user, amount, code, balance_at, at_ms)
             VALUES ('alice', 'late', 'bob', 5000, 'insufficient_funds', 0, 2)",
        )
        .unwrap();
    other
        .query_drop("UPDATE users SET balance = 10000 WHERE name = 'alice'")
        .unwrap();
    other
        .query_drop(
            "INSERT INTO journal (kind, to_user, amount, balance_after, at_ms)
             VALUES ('deposit', 'alice', 10000, 10000, 3)",
        )
        .unwrap();
    other.query_drop("COMMIT").unwrap();
    let (back, replies) = worker.join().unwrap();
    store = back;
    let replies = replies.unwrap();
    assert_eq!(replies[0], LedgerReply::Balance(Ok(Amount(0))));
    assert_eq!(
        transfer_outcome(&replies[1]),
        txsock_core::ledger::TransferOutcome {
            result: Err(ErrorCode::InsufficientFunds),
            balance: Amount(0),
        },
        "the recorded refusal, not a second outcome"
    );
    let moved: Option<u64> = raw(&db.url)
        .query_first("SELECT COUNT(*) FROM journal WHERE transfer_id = 'late'")
        .unwrap();
    assert_eq!(moved, Some(0));
    let report = store.check().unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.total, 10_000);
}

/// A lock conflict inside a request that is not a transfer (here a registration chosen as
/// a deadlock's victim) runs the whole batch again, as a conflict in a transfer does: the
/// deadlock rolled back the transfer before it too, so answering the registration alone
/// would either lose the transfer or fail the batch. Every request gets its answer, and the
/// transfer is recorded once.
#[test]
fn a_deadlock_in_a_registration_runs_the_batch_again() {
    let _one_at_a_time = lock_watchers();
    let Some(db) = conformance::MysqlBackend::new("mysql_register_deadlock") else {
        return;
    };
    let mut store = store_with(&db.url, &["u1", "u2"], 10_000);
    let mut other = raw(&db.url);
    other.query_drop("START TRANSACTION").unwrap();
    // Rows enough to make the other server's transaction the larger one, which InnoDB keeps
    // when it breaks the deadlock.
    for i in 0..300 {
        other
            .exec_drop(
                "INSERT INTO meta (meta_key, meta_value) VALUES (?, x'00')",
                (format!("weight.{i}"),),
            )
            .unwrap();
    }
    // The other server registers dave, not committed yet.
    other
        .exec_drop(
            "INSERT INTO users (name, salt, iterations, stored_key, server_key, balance, created_ms)
             VALUES ('dave', x'00', 1, ?, ?, 0, 1)",
            (&[0u8; 32][..], &[0u8; 32][..]),
        )
        .unwrap();
    let worker = batch_in_thread(
        store,
        vec![
            transfer("u1", "t1", "u2", 500),
            LedgerRequest::Register {
                user: name("dave"),
                verifier: conformance::verifier(1),
            },
        ],
    );
    // The batch holds u1 and u2 and waits for dave; the other server now wants u1.
    wait_until_blocked(&mut raw(&db.url));
    let took = other.query_drop("SELECT name FROM users WHERE name = 'u1' FOR UPDATE");
    other.query_drop("ROLLBACK").unwrap();
    took.expect("the batch, the smaller transaction, is the deadlock's victim");
    let (back, replies) = worker.join().unwrap();
    store = back;
    let replies = replies.expect("the batch ran again");
    assert_eq!(
        transfer_outcome(&replies[0]),
        txsock_core::ledger::TransferOutcome {
            result: Ok(()),
            balance: Amount(9_500),
        }
    );
    assert_eq!(replies[1], LedgerReply::Registered(Ok(())));
    let users = store.list_users().unwrap();
    let balances: Vec<(&str, Amount)> =
        users.iter().map(|u| (u.name.as_str(), u.balance)).collect();
    assert_eq!(
        balances,
        [
            ("dave", Amount(0)),
            ("u1", Amount(9_500)),
            ("u2", Amount(10_500))
        ]
    );
    let report = store.check().unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(
        report.entries, 3,
        "two opening deposits and the transfer, once"
    );
}

/// A request that fails on its own (here a history page over a damaged journal row) is
/// answered `Unavailable`, and the rest of its batch, before and after it, commits.
#[test]
fn a_request_that_fails_alone_leaves_its_batch_standing() {
    let Some(db) = conformance::MysqlBackend::new("mysql_fail_alone") else {
        return;
    };
    let mut store = store_with(&db.url, &["u1", "u2"], 10_000);
    // A journal row with a transfer id but no sender: no kind of entry.
    raw(&db.url)
        .query_drop(
            "INSERT INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
             VALUES ('deposit', NULL, 'x', 'u2', 1, 1, 1)",
        )
        .unwrap();
    let (back, replies) = batch_in_thread(
        store,
        vec![
            transfer("u1", "t1", "u2", 500),
            LedgerRequest::History {
                user: name("u2"),
                offset: 0,
                deposits: true,
            },
            LedgerRequest::Register {
                user: name("erin"),
                verifier: conformance::verifier(1),
            },
        ],
    )
    .join()
    .unwrap();
    store = back;
    let replies = replies.expect("one request's failure is not the batch's");
    assert_eq!(transfer_outcome(&replies[0]).result, Ok(()));
    assert_eq!(replies[1], LedgerReply::Unavailable);
    assert_eq!(replies[2], LedgerReply::Registered(Ok(())));
    let names: Vec<String> = store
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["erin", "u1", "u2"]);
    let moved: Option<u64> = raw(&db.url)
        .query_first("SELECT COUNT(*) FROM journal WHERE transfer_id = 't1'")
        .unwrap();
    assert_eq!(moved, Some(1));
}

/// The liveness table keeps a token's 64 bits: a token above `i64::MAX` (what a random
/// `u64` shifted left, rather than right, would often be) is found as written. So whether
/// the token is drawn from the low or the high 63 bits changes nothing (the reason the
/// `>>` → `<<` mutant of `liveness_token` is excluded as equivalent).
#[test]
fn a_liveness_token_keeps_all_its_bits() {
    let Some(db) = conformance::MysqlBackend::new("mysql_token_bits") else {
        return;
    };
    let mut c = raw(&db.url);
    c.query_drop(
        "CREATE TEMPORARY TABLE txsock_alive (token BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    )
    .unwrap();
    for token in [u64::MAX - 1, 1 << 63, (u64::MAX >> 1) << 1] {
        c.query_drop("DELETE FROM txsock_alive").unwrap();
        c.exec_drop("INSERT INTO txsock_alive (token) VALUES (?)", (token,))
            .unwrap();
        check_alive(&mut c, token, NO_CAUSAL_WAIT).expect("found as written");
        check_alive(&mut c, token >> 1, "").expect_err("another token");
    }
}

/// The server secret (the key the servers derive their session keys from) is random per
/// ledger: two databases never share one, and every server of one database reads the one
/// stored in it.
#[test]
fn each_ledger_has_its_own_random_secret() {
    let (Some(one), Some(two)) = (
        conformance::MysqlBackend::new("mysql_secret_one"),
        conformance::MysqlBackend::new("mysql_secret_two"),
    ) else {
        return;
    };
    let first = store_with(&one.url, &[], 0).server_secret().unwrap();
    let second = store_with(&two.url, &[], 0).server_secret().unwrap();
    assert_ne!(first, second, "two ledgers, one secret");
    let stored: Option<Vec<u8>> = raw(&one.url)
        .query_first("SELECT meta_value FROM meta WHERE meta_key = 'server_secret'")
        .unwrap();
    assert_eq!(stored.as_deref(), Some(&first[..]));
}

/// A store's reads outside a batch (the admin commands' `list_users`) see what other
/// servers committed since its last read: no transaction stays open on its connection
/// between commands (on a plain server the session runs with autocommit on).
#[test]
fn reads_between_commands_see_other_servers_commits() {
    let Some(db) = conformance::MysqlBackend::new("mysql_fresh_reads") else {
        return;
    };
    let mut reader = store_with(&db.url, &["alice"], 0);
    let names = |store: &mut MysqlStore| -> Vec<String> {
        store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect()
    };
    assert_eq!(names(&mut reader), ["alice"]);
    store_with(&db.url, &["bob"], 0);
    assert_eq!(names(&mut reader), ["alice", "bob"]);
}

/// A request that fails part-way leaves nothing of itself behind: a registration whose
/// opening deposit cannot be journalled (refused here by a trigger the test adds) is
/// `Unavailable`, creates no user and no money, and the rest of the batch commits.
#[test]
fn a_registration_that_fails_part_way_leaves_nothing_behind() {
    let Some(db) = conformance::MysqlBackend::new("mysql_fail_part_way") else {
        return;
    };
    let mut store = MysqlStore::open(&db.url, Amount(500)).unwrap();
    store
        .add_user(&name("u1"), &conformance::verifier(1), Amount(10_000), 1)
        .unwrap();
    store
        .add_user(&name("u2"), &conformance::verifier(1), Amount(10_000), 1)
        .unwrap();
    raw(&db.url)
        .query_drop(
            "CREATE TRIGGER no_deposit_for_erin BEFORE INSERT ON journal FOR EACH ROW
             BEGIN
                 IF NEW.to_user = 'erin' THEN
                     SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test';
                 END IF;
             END",
        )
        .unwrap();
    let (back, replies) = batch_in_thread(
        store,
        vec![
            LedgerRequest::Register {
                user: name("erin"),
                verifier: conformance::verifier(1),
            },
            transfer("u1", "t1", "u2", 500),
            LedgerRequest::Register {
                user: name("fred"),
                verifier: conformance::verifier(1),
            },
        ],
    )
    .join()
    .unwrap();
    store = back;
    let replies = replies.expect("one request's failure is not the batch's");
    assert_eq!(replies[0], LedgerReply::Unavailable);
    assert_eq!(transfer_outcome(&replies[1]).result, Ok(()));
    assert_eq!(replies[2], LedgerReply::Registered(Ok(())));
    let names: Vec<String> = store
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["fred", "u1", "u2"], "no erin");
    let report = store.check().unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.total, 20_500);
}

/// A batch that keeps conflicting is committed in parts ([`MysqlStore::commit_splitting`]):
/// with one account's row held locked by another transaction, only the transfer that needs
/// it is answered `Unavailable` (`internal`, after one lock wait: a part gives up at once);
/// the others commit, in request order, and that one commits exactly once when sent again
/// after the lock is gone. A single request that keeps conflicting fails as before (the
/// whole batch's error, after [`MAX_ATTEMPTS`] waits). Relies on MariaDB, the conformance
/// backend: `innodb_lock_wait_timeout = 0` makes a lock wait fail at once there (NOWAIT),
/// while MySQL 8 raises it to its minimum of 1 s (the test then takes ~11 s).
#[test]
fn a_batch_that_keeps_conflicting_is_split_and_only_the_contended_part_fails() {
    let Some(db) = conformance::MysqlBackend::new("mysql_split") else {
        return;
    };
    let mut store = MysqlStore::open_with(&db.url, Amount(0), Access::Create).unwrap();
    let mut conn = raw(&db.url);
    for name in ["alice", "bob", "carol", "dave"] {
        conn.exec_drop(
            "INSERT INTO users (name, salt, iterations, stored_key, server_key, balance, created_ms)
             VALUES (?, x'00', 4096, REPEAT(x'00', 32), REPEAT(x'01', 32), 1000, 0)",
            (name,),
        )
        .unwrap();
    }
    // A lock wait fails at once (1205, a conflict) instead of after 10 s.
    store
        .connect()
        .unwrap()
        .query_drop("SET SESSION innodb_lock_wait_timeout = 0")
        .unwrap();
    let transfer = |from: &str, id: &str, to: &str| {
        (
            LedgerRequest::Transfer {
                from: Username::parse(from).unwrap(),
                id: TransferId::parse(id).unwrap(),
                to: Username::parse(to).unwrap(),
                amount: Amount(1),
            },
            crate::clock::now(),
        )
    };
    let balances = |conn: &mut Conn| -> Vec<(String, i64)> {
        conn.query("SELECT name, balance FROM users ORDER BY name")
            .unwrap()
    };
    let journal = |conn: &mut Conn| -> Vec<String> {
        conn.query("SELECT transfer_id FROM journal ORDER BY seq")
            .unwrap()
    };
    conn.query_drop("START TRANSACTION").unwrap();
    conn.query_drop("SELECT balance FROM users WHERE name = 'carol' FOR UPDATE")
        .unwrap();

    let batch = [
        transfer("alice", "t1", "bob"),
        transfer("carol", "t2", "dave"),
        transfer("alice", "t3", "bob"),
        transfer("bob", "t4", "alice"),
    ];
    let mut committed = Vec::new();
    let replies = store.execute_batch(&batch, &mut committed).unwrap();
    let ok = |reply: &LedgerReply| matches!(reply, LedgerReply::Transfer(o) if o.result.is_ok());
    assert_eq!(replies.len(), 4);
    assert!(
        ok(&replies[0]) && ok(&replies[2]) && ok(&replies[3]),
        "{replies:?}"
    );
    assert!(
        matches!(replies[1], LedgerReply::Unavailable),
        "{replies:?}"
    );
    let ids: Vec<&str> = committed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["t1", "t3", "t4"]);
    // [t1] and [t3, t4] committed, one transaction each; [t2] failed (review item 14:
    // the commit count is the transactions).
    assert_eq!(store.last_batch_transactions(), 2);

    // One request alone that keeps conflicting: the batch's error, nothing written.
    let e = store
        .execute_batch(&[transfer("carol", "t5", "dave")], &mut committed)
        .unwrap_err();
    assert_eq!(classify(&e), Failure::Conflict);
    assert_eq!(committed.len(), 3);
    conn.query_drop("ROLLBACK").unwrap();
    assert_eq!(journal(&mut conn), ["t1", "t3", "t4"]);

    // Sent again without the lock, t2 commits once; t1 again is answered from the journal.
    let mut again = Vec::new();
    let replies = store
        .execute_batch(
            &[
                transfer("carol", "t2", "dave"),
                transfer("alice", "t1", "bob"),
            ],
            &mut again,
        )
        .unwrap();
    assert!(replies.iter().all(ok), "{replies:?}");
    assert_eq!(again.len(), 1);
    assert_eq!(store.last_batch_transactions(), 1);
    assert_eq!(journal(&mut conn), ["t1", "t3", "t4", "t2"]);
    assert_eq!(
        balances(&mut conn),
        [
            ("alice".to_string(), 999),
            ("bob".to_string(), 1001),
            ("carol".to_string(), 999),
            ("dave".to_string(), 1001)
        ]
    );
}

// The read-back after a commit on Galera (issue 22, mysql-seam), on the single test server:
// the store runs its Galera path (`galera` set, with a node session's liveness table), and
// its `after_commit` seam does, between `COMMIT` and the read-back, what a cluster can do
// there: commit nothing after all, lose the connection, fail the read. Each test asserts
// what the batch answers and what the database holds after it.

/// Makes `store` run as on a Galera node: each transaction writes and checks the liveness
/// token, and a batch is read back after its `COMMIT` before anything is answered. The
/// session is set up as [`causal_reads_if_galera`] sets up a node's (without the causal
/// reads, which a plain server lacks). A reconnection ends it: the new session is a plain
/// server's.
fn as_galera_node(store: &mut MysqlStore) {
    let c = store.connect().unwrap();
    c.query_drop("SET SESSION autocommit = 0").unwrap();
    c.query_drop(
        "CREATE TEMPORARY TABLE IF NOT EXISTS txsock_alive (token BIGINT UNSIGNED NOT NULL)
         ENGINE=InnoDB",
    )
    .unwrap();
    store.galera = true;
}

/// Runs `then(n)` at the `n`th time `store` reaches the read-back after a commit; the
/// counter tells how many times it did.
fn on_read_back(
    store: &mut MysqlStore,
    mut then: impl FnMut(u32) + Send + 'static,
) -> std::sync::Arc<std::sync::atomic::AtomicU32> {
    use std::sync::atomic::Ordering::SeqCst;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = calls.clone();
    store.after_commit = Some(Box::new(move || {
        then(counted.fetch_add(1, SeqCst) + 1);
    }));
    calls
}

fn read_backs(calls: &std::sync::atomic::AtomicU32) -> u32 {
    calls.load(std::sync::atomic::Ordering::SeqCst)
}

/// A journal entry of a transfer: sender, id, amount.
type Entry = (String, String, i64);

/// What another server sees: every balance, by name, and every transfer in the journal,
/// in order.
fn ledger_of(url: &str) -> (Vec<(String, i64)>, Vec<Entry>) {
    let mut c = raw(url);
    let balances = c
        .query("SELECT name, balance FROM users ORDER BY name")
        .unwrap();
    let journal = c
        .query(
            "SELECT from_user, transfer_id, amount FROM journal WHERE kind = 'transfer'
             ORDER BY seq",
        )
        .unwrap();
    (balances, journal)
}

fn now_batch(requests: &[LedgerRequest]) -> Vec<(LedgerRequest, Instant)> {
    requests
        .iter()
        .map(|r| (r.clone(), Instant::from_millis(1_000)))
        .collect()
}

fn entry(from: &str, id: &str, amount: i64) -> Entry {
    (from.to_string(), id.to_string(), amount)
}

fn balances(alice: i64, bob: i64) -> Vec<(String, i64)> {
    vec![("alice".to_string(), alice), ("bob".to_string(), bob)]
}

/// The transfer the Galera tests send: t1, 300 from alice to bob (1,000 each to start).
fn t1() -> LedgerRequest {
    transfer("alice", "t1", "bob", 300)
}

/// Runs [`t1`] alone as a batch on `store`: its replies, and the transfers it committed.
fn send_t1(store: &mut MysqlStore) -> (Vec<LedgerReply>, Vec<Committed>) {
    let mut committed = Vec::new();
    let replies = store
        .execute_batch(&now_batch(&[t1()]), &mut committed)
        .unwrap();
    (replies, committed)
}

/// The receipt of [`t1`] committed: alice has 700 left.
fn t1_receipt() -> txsock_core::ledger::TransferOutcome {
    txsock_core::ledger::TransferOutcome {
        result: Ok(()),
        balance: Amount(700),
    }
}

/// Asserts that the database holds [`t1`] once, with its money moved once.
fn assert_t1_committed_once(url: &str) {
    assert_eq!(
        ledger_of(url),
        (balances(700, 1_300), vec![entry("alice", "t1", 300)])
    );
}

/// A Galera batch whose `COMMIT` succeeded, and whose outcomes the database holds, is
/// answered from what it committed: the read-back runs once, finds the commit and the
/// refusal, and nothing is run again.
#[test]
fn a_galera_batch_that_committed_is_answered_from_what_it_committed() {
    let Some(db) = conformance::MysqlBackend::new("mysql_galera_committed") else {
        return;
    };
    let mut store = store_with(&db.url, &["alice", "bob"], 1_000);
    as_galera_node(&mut store);
    let calls = on_read_back(&mut store, |_| {});
    let batch = now_batch(&[t1(), transfer("alice", "t2", "bob", 5_000)]);
    let mut committed = Vec::new();
    let replies = store.execute_batch(&batch, &mut committed).unwrap();
    assert_eq!(transfer_outcome(&replies[0]), t1_receipt());
    assert_eq!(
        transfer_outcome(&replies[1]).result,
        Err(ErrorCode::InsufficientFunds)
    );
    assert_eq!(read_backs(&calls), 1, "read back once, not run again");
    let ids: Vec<&str> = committed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["t1"]);
    assert_t1_committed_once(&db.url);
}

/// A Galera batch whose `COMMIT` reported success while the database holds none of its
/// outcomes (what a node did under the crash test's load: module documentation) is not
/// answered from that commit: it runs again, and is answered from what the second run
/// committed. The money moves once.
#[test]
fn a_galera_commit_the_database_does_not_hold_runs_again_before_any_answer() {
    let Some(db) = conformance::MysqlBackend::new("mysql_galera_lost_commit") else {
        return;
    };
    let mut store = store_with(&db.url, &["alice", "bob"], 1_000);
    as_galera_node(&mut store);
    let url = db.url.clone();
    let calls = on_read_back(&mut store, move |n| {
        if n == 1 {
            // The first commit is undone as if it had never been made.
            let mut c = raw(&url);
            c.query_drop("DELETE FROM journal WHERE from_user = 'alice' AND transfer_id = 't1'")
                .unwrap();
            c.query_drop(
                "UPDATE users SET balance = IF(name = 'alice', balance + 300, balance - 300)
                 WHERE name IN ('alice', 'bob')",
            )
            .unwrap();
        }
    });
    let (replies, committed) = send_t1(&mut store);
    assert_eq!(transfer_outcome(&replies[0]), t1_receipt());
    assert_eq!(read_backs(&calls), 2, "run again and read back again");
    assert_eq!(committed.len(), 1, "one commit reported: {committed:?}");
    assert_t1_committed_once(&db.url);
}

/// A Galera batch that fails before its `COMMIT` is its own error, with its cause: it is not
/// read back (nothing it wrote was committed) and not run again, and nothing moves.
#[test]
fn a_failed_galera_batch_is_its_error_and_is_not_read_back() {
    let Some(db) = conformance::MysqlBackend::new("mysql_galera_failed") else {
        return;
    };
    let mut store = store_with(&db.url, &["alice", "bob"], 1_000);
    raw(&db.url)
        .query_drop(
            "CREATE TRIGGER journal_closed BEFORE INSERT ON journal FOR EACH ROW
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'journal closed by the test'",
        )
        .unwrap();
    as_galera_node(&mut store);
    let calls = on_read_back(&mut store, |_| {});
    // In a thread of its own: a batch run again and again is a failure here, not a hang.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut committed = Vec::new();
        let result = store.execute_batch(&now_batch(&[t1()]), &mut committed);
        let _ = done.send((result, committed));
    });
    let (result, committed) = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the failed batch is still being run after 60 s");
    let e = result.unwrap_err();
    assert!(
        format!("{e:#}").contains("journal closed by the test"),
        "the cause is named: {e:#}"
    );
    assert_eq!(read_backs(&calls), 0, "not read back");
    assert!(committed.is_empty());
    assert_eq!(ledger_of(&db.url), (balances(1_000, 1_000), vec![]));
}

/// A Galera batch whose read-back loses its connection (a node leaving the cluster, say)
/// reconnects and reads again: the commit is found and answered, once.
#[test]
fn a_read_back_that_loses_its_connection_reads_again_and_answers_the_commit() {
    let Some(db) = conformance::MysqlBackend::new("mysql_galera_read_back_lost") else {
        return;
    };
    let mut store = store_with(&db.url, &["alice", "bob"], 1_000);
    as_galera_node(&mut store);
    let id = connection_id(store.connect().unwrap()).unwrap();
    let url = db.url.clone();
    let calls = on_read_back(&mut store, move |n| {
        if n == 1 {
            raw(&url)
                .query_drop(format!("KILL CONNECTION {id}"))
                .unwrap();
        }
    });
    let (replies, committed) = send_t1(&mut store);
    assert_eq!(transfer_outcome(&replies[0]), t1_receipt());
    assert_eq!(read_backs(&calls), 1, "read again, not run again");
    assert_eq!(committed.len(), 1);
    assert_ne!(
        connection_id(store.connect().unwrap()).unwrap(),
        id,
        "a new connection"
    );
    assert_t1_committed_once(&db.url);
}

/// A Galera batch whose read-back fails for any other reason (here an operator kills the
/// statement) has an unknown outcome: it is an error of its own kind at once (no retry, no
/// second run, never a conflict to split), nothing is answered, and a client resending the
/// same id gets the outcome committed the first time, with no money moved again.
#[test]
fn a_read_back_that_fails_leaves_the_outcome_unknown_and_the_resent_id_gets_the_commit() {
    let Some(db) = conformance::MysqlBackend::new("mysql_galera_read_back_killed") else {
        return;
    };
    let mut store = store_with(&db.url, &["alice", "bob"], 1_000);
    as_galera_node(&mut store);
    let id = connection_id(store.connect().unwrap()).unwrap();
    let (locked, lockers) = std::sync::mpsc::channel();
    let url = db.url.clone();
    let calls = on_read_back(&mut store, move |_| {
        // The read-back waits for these tables until the test kills it.
        let mut locker = raw(&url);
        locker
            .query_drop("LOCK TABLES journal WRITE, refusals WRITE")
            .unwrap();
        locked.send(locker).unwrap();
    });
    let worker = batch_in_thread(store, vec![t1()]);
    let mut locker = lockers.recv_timeout(Duration::from_secs(20)).unwrap();
    let mut watch = raw(&db.url);
    let started = std::time::Instant::now();
    loop {
        let state: Option<String> = watch
            .exec_first(
                "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                (id,),
            )
            .unwrap();
        if state.is_some_and(|s| s.contains("metadata lock")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the read-back never waited for the test's lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    watch.query_drop(format!("KILL QUERY {id}")).unwrap();
    locker.query_drop("UNLOCK TABLES").unwrap();
    let (mut store, result) = worker.join().unwrap();
    let e = result.unwrap_err();
    assert!(e.downcast_ref::<OutcomeUnknown>().is_some(), "{e:#}");
    assert_eq!(classify(&e), Failure::Other);
    assert_eq!(read_backs(&calls), 1, "not run again");
    assert_t1_committed_once(&db.url);

    store.after_commit = None;
    let (replies, committed) = send_t1(&mut store);
    assert_eq!(transfer_outcome(&replies[0]).result, Ok(()));
    assert!(committed.is_empty(), "nothing new committed: {committed:?}");
    assert_t1_committed_once(&db.url);
}

/// The rollbacks of `store`'s session so far: one per run of a transaction that failed.
fn rollbacks(store: &mut MysqlStore) -> u64 {
    let row: Option<(String, u64)> = store
        .connect()
        .unwrap()
        .query_first("SHOW SESSION STATUS LIKE 'Com_rollback'")
        .unwrap();
    row.unwrap().1
}

/// A batch of several requests that waits out a lock wait is split at once, and its
/// contended part, a single request, gives up after its one wait too: the batch waits once
/// per level of the split (here two: the whole batch, then the request), not
/// [`MAX_ATTEMPTS`] times, which is the bound the module documentation gives (a row held
/// for a whole lock wait is held by a stuck transaction). Counted as the failed runs, each
/// rolled back on the store's session; the request that shared the batch commits. A batch
/// of one request, which cannot split, keeps its [`MAX_ATTEMPTS`] runs.
#[test]
fn a_lock_wait_splits_a_batch_at_once_and_its_part_waits_once() {
    let Some(db) = conformance::MysqlBackend::new("mysql_split_waits") else {
        return;
    };
    let (mut store, mut holder) = store_behind_carols_row(&db.url);
    let before = rollbacks(&mut store);
    let mut committed = Vec::new();
    let replies = store
        .execute_batch(
            &now_batch(&[
                transfer("alice", "t1", "bob", 300),
                transfer("carol", "t2", "dave", 300),
            ]),
            &mut committed,
        )
        .unwrap();
    assert_eq!(transfer_outcome(&replies[0]).result, Ok(()));
    assert!(
        matches!(replies[1], LedgerReply::Unavailable),
        "{replies:?}"
    );
    assert_eq!(
        rollbacks(&mut store) - before,
        2,
        "one wait for the whole batch, one for its contended part"
    );
    // A batch of one request cannot split: it keeps its MAX_ATTEMPTS runs, then is the
    // batch's error.
    let before = rollbacks(&mut store);
    let e = store
        .execute_batch(
            &now_batch(&[transfer("carol", "t3", "dave", 300)]),
            &mut committed,
        )
        .unwrap_err();
    assert_eq!(contention(&e), Some(Contention::LockWait), "{e:#}");
    assert_eq!(rollbacks(&mut store) - before, u64::from(MAX_ATTEMPTS));
    holder.query_drop("ROLLBACK").unwrap();
    let (_, journal) = ledger_of(&db.url);
    assert_eq!(journal, [entry("alice", "t1", 300)]);
}

/// A group commit over `store` as a server runs it, writing its audit logs to a new
/// temporary directory (returned with it).
fn served(
    store: MysqlStore,
) -> (
    tempfile::TempDir,
    crate::group_commit::CommitQueue,
    crate::group_commit::CommitWorker,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = std::sync::Arc::new(crate::audit::Audit::open(dir.path()).expect("audit logs"));
    let (queue, worker) = crate::group_commit::spawn(Box::new(store), audit, 512);
    (dir, queue, worker)
}

/// The reply to a request queued on a group commit, waiting at most 60 s for it.
fn answer(reply: crate::group_commit::PendingReply) -> LedgerReply {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), reply).await })
        .expect("answered within 60 s")
}

/// Stops the group commit (`queue` is its last handle) and asserts that the error log it
/// wrote in `dir` has the test seam's panic as one `storage_failure` of `requests`.
fn stop_with_the_panic_logged(
    queue: crate::group_commit::CommitQueue,
    worker: crate::group_commit::CommitWorker,
    dir: &std::path::Path,
    requests: usize,
) {
    drop(queue);
    worker.join();
    let errors = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    assert!(
        errors.contains(&format!(
            "storage_failure requests={requests} error=panic: the test panics before COMMIT"
        )),
        "{errors}"
    );
}

/// A store whose lock waits fail at once (1205, a conflict) instead of after 10 s, with
/// alice, bob, carol and dave at 1,000, and a session of another server that holds carol's
/// row until it rolls back. (On MySQL 8 the wait's minimum is 1 s.)
fn store_behind_carols_row(url: &str) -> (MysqlStore, Conn) {
    let mut store = store_with(url, &["alice", "bob", "carol", "dave"], 1_000);
    store
        .connect()
        .unwrap()
        .query_drop("SET SESSION innodb_lock_wait_timeout = 0")
        .unwrap();
    let mut holder = raw(url);
    holder.query_drop("START TRANSACTION").unwrap();
    holder
        .query_drop("SELECT balance FROM users WHERE name = 'carol' FOR UPDATE")
        .unwrap();
    (store, holder)
}

/// Review 2, A1 (gc-leftovers): a panic inside a batch's transaction, after its writes and
/// before its `COMMIT`, through the group commit as a server runs it. The batch is answered
/// `Unavailable`, and the next batch, on the same store, does not commit the half-done
/// work: `Store::recover_from_panic` drops the connection, so the server rolls the open
/// transaction back instead of the next `START TRANSACTION` committing it. Sent again, the
/// transfer commits as new, once.
#[test]
fn a_batch_that_panics_leaves_nothing_for_the_next_batch_to_commit() {
    let Some(db) = conformance::MysqlBackend::new("mysql_panic") else {
        return;
    };
    let store = store_with(&db.url, &["alice", "bob"], 1000);
    let panic_next = store.panic_before_commit.clone();
    let (dir, queue, worker) = served(store);
    let send = |request: LedgerRequest| {
        let reply = queue.queue(request, Instant::from_millis(1_000));
        queue.commit_now(1);
        answer(reply)
    };
    let journal = |conn: &mut Conn| -> Vec<String> {
        conn.query("SELECT transfer_id FROM journal WHERE kind = 'transfer' ORDER BY seq")
            .unwrap()
    };
    let balances = |conn: &mut Conn| -> Vec<(String, i64)> {
        conn.query("SELECT name, balance FROM users ORDER BY name")
            .unwrap()
    };
    let mut conn = raw(&db.url);

    panic_next.store(1, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        send(transfer("alice", "t1", "bob", 100)),
        LedgerReply::Unavailable
    ));
    assert_eq!(
        panic_next.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the batch reached its COMMIT"
    );
    let reply = send(transfer("alice", "t2", "bob", 10));
    assert_eq!(transfer_outcome(&reply).result, Ok(()));
    assert_eq!(
        journal(&mut conn),
        ["t2"],
        "t1 was committed by the next batch"
    );
    assert_eq!(
        balances(&mut conn),
        [("alice".to_string(), 990), ("bob".to_string(), 1010)]
    );
    let reply = send(transfer("alice", "t1", "bob", 100));
    assert_eq!(transfer_outcome(&reply).result, Ok(()));
    assert_eq!(journal(&mut conn), ["t2", "t1"]);
    assert_eq!(
        balances(&mut conn),
        [("alice".to_string(), 890), ("bob".to_string(), 1110)]
    );
    stop_with_the_panic_logged(queue, worker, dir.path(), 1);
}

/// Review 1 item 2 (split-prefix): a split batch whose later part panics before its
/// `COMMIT`, through the group commit as a server runs it. The part committed before the
/// panic keeps its real reply, its `transactions.log` line and its commit count; a part that
/// failed alone before the panic stays `Unavailable`, as without a panic; the panicked part
/// is answered `Unavailable` and its writes are rolled back. Sent again, the next batch
/// commits only the requests not committed yet and answers the committed one as a repeat.
#[test]
fn a_panic_in_a_later_part_of_a_split_batch_keeps_the_parts_committed_before_it() {
    let Some(db) = conformance::MysqlBackend::new("mysql_split_panic") else {
        return;
    };
    let (store, mut holder) = store_behind_carols_row(&db.url);
    // The whole batch and its front half wait on carol's row; [t1] commits (the first
    // COMMIT), [t2] fails alone, [t3, t4] panics before the second COMMIT.
    let panic_at = store.panic_before_commit.clone();
    panic_at.store(2, std::sync::atomic::Ordering::SeqCst);
    let (dir, queue, worker) = served(store);
    let batch = [
        transfer("alice", "t1", "bob", 100),
        transfer("carol", "t2", "dave", 100),
        transfer("alice", "t3", "bob", 10),
        transfer("bob", "t4", "alice", 1),
    ];
    // One batch: queued while the worker sleeps, then handed over at once.
    let send_all = || -> Vec<LedgerReply> {
        crate::group_commit::probe::until_the_worker_sleeps(&queue);
        let pending: Vec<_> = batch
            .iter()
            .map(|r| queue.queue(r.clone(), Instant::from_millis(1_000)))
            .collect();
        queue.commit_now(batch.len());
        pending.into_iter().map(answer).collect()
    };
    let stats = queue.stats.clone();
    let counted = || {
        (
            stats.commits.load(std::sync::atomic::Ordering::Relaxed),
            stats.transfers.load(std::sync::atomic::Ordering::Relaxed),
        )
    };

    let replies = send_all();
    assert_eq!(
        transfer_outcome(&replies[0]),
        txsock_core::ledger::TransferOutcome {
            result: Ok(()),
            balance: Amount(900)
        },
        "{replies:?}"
    );
    assert!(
        replies[1..]
            .iter()
            .all(|r| matches!(r, LedgerReply::Unavailable)),
        "{replies:?}"
    );
    assert_eq!(
        panic_at.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the second part reached its COMMIT"
    );
    assert_eq!(counted(), (1, 1), "[t1]'s transaction and transfer");
    holder.query_drop("ROLLBACK").unwrap();
    let (users, journal) = ledger_of(&db.url);
    assert_eq!(journal, [entry("alice", "t1", 100)]);
    assert_eq!(users[..2], balances(900, 1100));

    let replies = send_all();
    for reply in &replies {
        assert_eq!(transfer_outcome(reply).result, Ok(()), "{replies:?}");
    }
    assert_eq!(counted(), (2, 4), "one transaction, three new transfers");
    let (users, journal) = ledger_of(&db.url);
    assert_eq!(
        journal,
        [
            entry("alice", "t1", 100),
            entry("carol", "t2", 100),
            entry("alice", "t3", 10),
            entry("bob", "t4", 1)
        ]
    );
    assert_eq!(
        users,
        [
            ("alice".to_string(), 891),
            ("bob".to_string(), 1109),
            ("carol".to_string(), 900),
            ("dave".to_string(), 1100)
        ]
    );
    stop_with_the_panic_logged(queue, worker, dir.path(), 3);
    assert_eq!(
        crate::group_commit::probe::logged_transfer_ids(dir.path()),
        ["t1", "t2", "t3", "t4"]
    );
}

/// What the store hands back after a panic in a split: the parts finished before it, in
/// request order, also one that failed alone (answered `Unavailable` either way), and the
/// transfers of `committed` that were there before the batch (a caller may pass a vector
/// that is not empty). The panicked part's transfer is undone, and with no part committed
/// no transaction is counted.
#[test]
fn after_a_panic_the_store_hands_back_the_parts_finished_before_it() {
    let Some(db) = conformance::MysqlBackend::new("mysql_split_panic_prefix") else {
        return;
    };
    let (mut store, mut holder) = store_behind_carols_row(&db.url);
    let mut committed = Vec::new();
    store
        .execute_batch(
            &now_batch(&[transfer("bob", "t0", "alice", 5)]),
            &mut committed,
        )
        .unwrap();
    assert_eq!(committed.len(), 1);
    // [t1] waits on carol's row and fails alone; [t2] panics before its COMMIT.
    store
        .panic_before_commit
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let batch = now_batch(&[
        transfer("carol", "t1", "dave", 100),
        transfer("alice", "t2", "bob", 100),
    ]);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.execute_batch(&batch, &mut committed)
    }));
    assert!(panicked.is_err(), "the batch did not panic: {panicked:?}");
    assert_eq!(
        store.recover_from_panic(),
        DurablePrefix {
            replies: vec![LedgerReply::Unavailable],
            committed: 1,
            transactions: 0,
        }
    );
    assert_eq!(
        committed.len(),
        2,
        "the panicked part's transfer is left for the caller to cut off"
    );
    holder.query_drop("ROLLBACK").unwrap();
    assert_eq!(
        ledger_of(&db.url).1,
        [entry("bob", "t0", 5)],
        "only the batch before"
    );
}

// The rest of the store outside the batch path (issue 22, mutants-mysql-rest, sixth stop).

/// A batch that panicked may leave its transaction open on the store's connection, with
/// some of its writes done (here: money taken from alice and journalled nowhere). After
/// [`Store::recover_from_panic`] the next batch commits only its own work: the half-done
/// transaction is rolled back, never committed with it (a `START TRANSACTION` on the same
/// connection would commit it implicitly).
#[test]
fn a_panicked_batchs_half_done_writes_are_never_committed() {
    let Some(db) = conformance::MysqlBackend::new("mysql_panic_recovery") else {
        return;
    };
    let mut store = store_with(&db.url, &["alice", "bob"], 100);
    let c = store.connect().unwrap();
    c.query_drop("START TRANSACTION").unwrap();
    c.query_drop("UPDATE users SET balance = balance - 40 WHERE name = 'alice'")
        .unwrap();
    store.recover_from_panic();
    let batch = [(
        transfer("bob", "t1", "alice", 5),
        Instant::from_millis(1_000),
    )];
    let replies = store.execute_batch(&batch, &mut Vec::new()).unwrap();
    assert_eq!(transfer_outcome(&replies[0]).result, Ok(()));
    let balances: Vec<(String, i64)> = raw(&db.url)
        .query("SELECT CAST(name AS CHAR), balance FROM users ORDER BY name")
        .unwrap();
    assert_eq!(
        balances,
        [("alice".to_string(), 105), ("bob".to_string(), 95)],
        "the panicked batch's write was committed by the next one"
    );
    assert_eq!(store.check().unwrap().problems, Vec::<String>::new());
}

/// A session never waits for a MySQL commit: the store's commits can wait seconds (here,
/// for a row another server holds), so the group commit runs them on its own thread and
/// `commit_now`, called on a session's thread, returns while the batch still waits. Only a
/// store whose commit is a local file's may run one on the caller's thread
/// ([`Store::commits_locally`]).
#[test]
fn a_session_never_waits_for_a_mysql_commit() {
    let _one_at_a_time = lock_watchers();
    let Some(db) = conformance::MysqlBackend::new("mysql_not_inline") else {
        return;
    };
    let store = store_with(&db.url, &["alice", "bob"], 100);
    let mut other_server = raw(&db.url);
    other_server.query_drop("START TRANSACTION").unwrap();
    other_server
        .query_drop("SELECT balance FROM users WHERE name = 'alice' FOR UPDATE")
        .unwrap();
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = std::sync::Arc::new(crate::audit::Audit::open(dir.path()).expect("audit logs"));
    let (queue, worker) = crate::group_commit::spawn(Box::new(store), audit, 16);
    // Let the worker thread go to sleep on its empty queue first, so that the caller
    // could take the store (it would if the store said it commits locally).
    std::thread::sleep(Duration::from_millis(200));
    let reply = queue.queue(
        transfer("alice", "t1", "bob", 5),
        Instant::from_millis(1_000),
    );
    // A session's call, on a thread with no tokio runtime: a store that commits locally
    // would be committed here, and the call would wait for alice's row.
    let session = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.commit_now(1))
    };
    wait_until_blocked(&mut raw(&db.url));
    // The batch waits for alice's row (10 s at most per run); the session's call is done
    // meanwhile (it takes microseconds when it only wakes the worker).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !session.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let session_was_free = session.is_finished();
    other_server.query_drop("COMMIT").unwrap();
    session.join().unwrap();
    assert!(
        session_was_free,
        "the session's thread waited for a MySQL commit"
    );
    let reply = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(reply);
    assert_eq!(transfer_outcome(&reply).result, Ok(()));
    drop(queue);
    worker.join();
}

/// The indexes of the test database's journal, by name (sorted here: the server's
/// collation would sort them ignoring case).
fn journal_indexes(url: &str) -> Vec<String> {
    let mut names: Vec<String> = raw(url)
        .query(
            "SELECT DISTINCT index_name FROM information_schema.STATISTICS
             WHERE table_schema = DATABASE() AND table_name = 'journal'",
        )
        .unwrap();
    names.sort();
    names
}

/// Schema version 2 drops `journal_from`: a version-1 ledger with money moved (the index
/// put back, the version set back) is migrated on open with every balance, journal entry
/// and refusal kept, `ledger check` still finds it sound, a resent id is answered from the
/// journal and the history still reads by sender. A migration whose `DROP` ran but whose
/// version was not recorded (a crash between the two, or another server on Galera) runs
/// again without an error.
#[test]
fn version_1_is_migrated_without_journal_from_and_keeps_every_row() {
    let Some(db) = conformance::MysqlBackend::new("mysql_schema_v1") else {
        return;
    };
    let mut store = store_with(&db.url, &["alice", "bob"], 1_000);
    let batch = now_batch(&[
        transfer("alice", "t1", "bob", 300),
        transfer("alice", "t2", "bob", 5_000),
        transfer("bob", "t1", "alice", 100),
    ]);
    store.execute_batch(&batch, &mut Vec::new()).unwrap();
    drop(store);
    let before = ledger_of(&db.url);
    assert_eq!(
        before,
        (
            balances(800, 1_200),
            vec![entry("alice", "t1", 300), entry("bob", "t1", 100)]
        )
    );
    let mut c = raw(&db.url);
    c.query_drop("ALTER TABLE journal ADD KEY journal_from (from_user, seq)")
        .unwrap();
    c.query_drop("UPDATE schema_version SET version = 1")
        .unwrap();
    drop(c);
    assert_eq!(
        journal_indexes(&db.url),
        ["PRIMARY", "journal_from", "journal_id", "journal_to"]
    );

    for run in ["migrated", "dropped already, version 1 again"] {
        let mut store = MysqlStore::open_with(&db.url, Amount(0), Access::Existing).expect(run);
        let version: Option<i64> = raw(&db.url)
            .query_first("SELECT MAX(version) FROM schema_version")
            .unwrap();
        assert_eq!(version, Some(2), "{run}");
        assert_eq!(
            journal_indexes(&db.url),
            ["PRIMARY", "journal_id", "journal_to"],
            "{run}"
        );
        assert_eq!(ledger_of(&db.url), before, "{run}");
        let report = store.check().unwrap();
        assert!(report.problems.is_empty(), "{run}: {:?}", report.problems);
        assert_eq!((report.accounts, report.entries), (2, 4), "{run}");
        let replies = store
            .execute_batch(
                &now_batch(&[
                    transfer("alice", "t1", "bob", 300),
                    transfer("alice", "t2", "bob", 5_000),
                ]),
                &mut Vec::new(),
            )
            .unwrap();
        assert_eq!(
            transfer_outcome(&replies[0]),
            txsock_core::ledger::TransferOutcome {
                result: Ok(()),
                balance: Amount(700)
            },
            "{run}: the resent id is answered from the journal"
        );
        assert_eq!(
            transfer_outcome(&replies[1]).result,
            Err(ErrorCode::InsufficientFunds),
            "{run}: the refusal is final"
        );
        let mut tos = Vec::new();
        for offset in [0, HISTORY_PAGE as u32] {
            let page = history(store.connect().unwrap(), &name("alice"), offset, true).unwrap();
            tos.extend(page.entries.iter().map(|e| e.to.to_string()));
            assert_eq!(page.more, offset == 0, "{run}: page at {offset}");
        }
        assert_eq!(tos, ["alice", "bob", "alice"], "{run}: newest first");
        assert_eq!(ledger_of(&db.url), before, "{run}: nothing moved twice");
        drop(store);
        raw(&db.url)
            .query_drop("UPDATE schema_version SET version = 1")
            .unwrap();
    }
}

/// Lists are padded to a power of two up to 32 items, then to a multiple of 32: never
/// shorter than the list, never past a chunk, 13 lengths (prepared statements) in all.
#[test]
fn lists_are_padded_to_a_few_lengths_close_above_their_own() {
    let wanted: Vec<usize> = [1, 2, 3, 5, 17, 32, 33, 64, 65, 130, 255, 256]
        .iter()
        .map(|&n| padded_len(n))
        .collect();
    assert_eq!(wanted, [1, 2, 4, 8, 32, 32, 64, 64, 96, 160, 256, 256]);
    let mut lengths: Vec<usize> = (1..=LOCK_CHUNK).map(padded_len).collect();
    for (n, len) in (1..=LOCK_CHUNK).zip(&lengths) {
        assert!((n..=LOCK_CHUNK).contains(len), "{n} padded to {len}");
    }
    lengths.dedup();
    assert_eq!(lengths.len(), 13);
    let (values, marks) = padded(&["a", "b", "c"]);
    assert_eq!(
        (values, marks.as_str()),
        (vec!["a", "b", "c", "c"], "?, ?, ?, ?")
    );
}

/// A migration statement that fails for any other reason than a `DROP` finding nothing
/// fails the open and leaves the version where it was: a version-1 database without its
/// journal is refused, not recorded as version 2.
#[test]
fn a_migration_that_fails_is_an_error_and_records_no_version() {
    let Some(db) = conformance::MysqlBackend::new("mysql_schema_v1_broken") else {
        return;
    };
    drop(store_with(&db.url, &["alice"], 1_000));
    let mut c = raw(&db.url);
    c.query_drop("DROP TABLE journal").unwrap();
    c.query_drop("UPDATE schema_version SET version = 1")
        .unwrap();
    let e = refusal(MysqlStore::open_with(&db.url, Amount(0), Access::Existing));
    assert!(e.contains("migrating from schema version 1"), "{e}");
    let version: Option<i64> = c
        .query_first("SELECT MAX(version) FROM schema_version")
        .unwrap();
    assert_eq!(version, Some(1));
}

/// A `DROP` that finds nothing counts as done only for a statement that does nothing else,
/// and every migration statement with a `DROP` is such a statement (review 2 of stop 7).
#[test]
fn only_a_lone_drop_counts_as_done_when_it_finds_nothing() {
    assert!(drops_only("ALTER TABLE journal DROP INDEX journal_from"));
    assert!(!drops_only(
        "ALTER TABLE journal DROP INDEX journal_from, ADD INDEX journal_at (at)"
    ));
    assert!(!drops_only("CREATE INDEX journal_at ON journal (at)"));
    let gone = mysql::Error::MySqlError(mysql::MySqlError {
        state: "42000".into(),
        message: "Can't DROP INDEX `journal_from`; check that it exists".into(),
        code: ER_CANT_DROP_FIELD_OR_KEY,
    });
    assert!(already_done(
        "ALTER TABLE journal DROP INDEX journal_from",
        &gone
    ));
    assert!(!already_done(
        "ALTER TABLE journal DROP INDEX journal_from, ADD INDEX journal_at (at)",
        &gone
    ));
    for statement in MIGRATIONS.iter().flat_map(|statements| statements.iter()) {
        if statement.contains("DROP") {
            assert!(drops_only(statement), "{statement}");
        }
    }
}
