//! The operator's side (issue 19): admin commands that never say OK about a database they
//! could not really check, and that create nothing when they only read.
//!
//! `ledger check` and `user list` open read-only: a missing data directory or database is
//! refused by name and nothing is created; a zero-length file is not a txsock database; a
//! damaged page fails the integrity check (exit 1); an unknown `--db` scheme is refused by
//! every command; an auditor without write permission can run them. `user add` refuses
//! fewer PBKDF2 iterations than the server's minimum.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use txsock_e2e::*;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Everything under `dir`, sorted (to show that a command created nothing).
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A stopped server's data directory holding users with money moved between them.
fn ledger_with_history() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let mut server = Server::start_in(&data, &["--opening-balance", "50.00"]);
    for name in ["u0", "u1", "u2"] {
        drop(server.login(name, true));
    }
    let mut c = server.login("u0", false);
    for k in 0..20u64 {
        let to = if k % 2 == 0 { "u1" } else { "u2" };
        let r = c
            .transfer(&format!("k{k}"), to, txsock_core::Amount(100 + k))
            .expect("transfer");
        assert!(r.result.is_ok());
    }
    drop(c);
    assert!(server.stop());
    (temp, data)
}

#[test]
fn missing_data_directory_is_refused_and_not_created() {
    let temp = tempfile::tempdir().expect("temp dir");
    let typo = temp.path().join("txsock-dta");
    let typo_arg = typo.to_str().expect("utf-8 path");
    for args in [
        &["ledger", "check", "--data-dir", typo_arg][..],
        &["user", "list", "--data-dir", typo_arg],
        &["user", "lock", "alice", "--data-dir", typo_arg],
        &[
            "account",
            "deposit",
            "alice",
            "1.00",
            "--data-dir",
            typo_arg,
        ],
    ] {
        let out = txsock_in(temp.path(), args);
        let all = text(&out);
        assert!(!out.status.success(), "{args:?}: {all}");
        assert!(
            all.contains("does not exist") && all.contains(typo_arg),
            "{args:?}: {all}"
        );
        assert!(!all.contains("ledger OK"), "{args:?}: {all}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    assert_eq!(
        txsock_in(temp.path(), &["ledger", "check", "--data-dir", typo_arg])
            .status
            .code(),
        Some(2)
    );
    // A data directory without a database: refused by name, still nothing created.
    std::fs::create_dir(&typo).expect("mkdir");
    let out = txsock_in(temp.path(), &["ledger", "check", "--data-dir", typo_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("txsock.db"), "{}", text(&out));
    assert!(listing(&typo).is_empty(), "{:?}", listing(&typo));
}

#[test]
fn unknown_database_scheme_is_refused_by_every_command() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    for url in [
        "postgres://txsock:pw@127.0.0.1:5432/ledger",
        "mysq://txsock:pw@127.0.0.1:3306/ledger",
    ] {
        for command in [
            &["ledger", "check"][..],
            &["user", "list"],
            &["user", "lock", "alice"],
            &["user", "add", "alice", "--password-stdin"],
            &["account", "deposit", "alice", "1.00"],
            &["serve", "--listen", "127.0.0.1:0"],
        ] {
            let mut args = command.to_vec();
            args.extend(["--db", url, "--data-dir", data_arg]);
            let out = txsock_in(temp.path(), &args);
            let all = text(&out);
            assert!(!out.status.success(), "{args:?}: {all}");
            assert!(
                all.contains("unsupported database URL scheme"),
                "{args:?}: {all}"
            );
            assert!(
                listing(temp.path()).is_empty(),
                "{args:?} created {:?}",
                listing(temp.path())
            );
        }
    }
}

#[test]
fn empty_file_is_not_a_txsock_database() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let db = data.join("txsock.db");
    std::fs::write(&db, b"").expect("empty file");
    let data_arg = data.to_str().expect("utf-8 path");
    for args in [
        &["ledger", "check", "--data-dir", data_arg][..],
        &["user", "list", "--data-dir", data_arg],
    ] {
        let out = txsock_in(temp.path(), args);
        let all = text(&out);
        assert!(!out.status.success(), "{args:?}: {all}");
        assert!(all.contains("not a txsock database"), "{args:?}: {all}");
        assert!(!all.contains("ledger OK"), "{args:?}: {all}");
    }
    let out = txsock_in(temp.path(), &["ledger", "check", "--data-dir", data_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(std::fs::metadata(&db).expect("db").len(), 0, "written to");
    assert_eq!(listing(&data), [db]);
}

#[test]
fn corrupt_page_fails_the_check() {
    let (temp, data) = ledger_with_history();
    let db = data.join("txsock.db");
    let (page_size, journal_root): (u64, u64) = {
        let c = rusqlite::Connection::open(&db).expect("open");
        (
            c.query_row("PRAGMA page_size", [], |r| r.get(0))
                .expect("page size"),
            c.query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'journal'",
                [],
                |r| r.get(0),
            )
            .expect("root page"),
        )
    };
    let data_arg = data.to_str().expect("utf-8 path");
    let out = txsock_in(temp.path(), &["ledger", "check", "--data-dir", data_arg]);
    assert!(out.status.success(), "{}", text(&out));
    // Overwrite the cell pointers of the journal's root page, as a bad sector would.
    let mut bytes = std::fs::read(&db).expect("read db");
    let at = ((journal_root - 1) * page_size + 8) as usize;
    bytes[at..at + 64].fill(0xff);
    std::fs::write(&db, &bytes).expect("write db");
    let out = txsock_in(temp.path(), &["ledger", "check", "--data-dir", data_arg]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("CORRUPT") && all.contains("PROBLEM"), "{all}");
    assert!(!all.contains("ledger OK"), "{all}");
    assert_eq!(std::fs::read(&db).expect("read db"), bytes, "written to");
}

#[test]
fn summary_never_equates_two_different_totals() {
    let (temp, data) = ledger_with_history();
    let c = rusqlite::Connection::open(data.join("txsock.db")).expect("open");
    c.execute(
        "UPDATE users SET balance = balance + 1 WHERE name = 'u1'",
        [],
    )
    .expect("update");
    drop(c);
    let out = txsock_in(
        temp.path(),
        &[
            "ledger",
            "check",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("balances 150.01 != deposits 150.00"), "{all}");
}

#[test]
fn read_only_auditor_can_check_and_list() {
    let (temp, data) = ledger_with_history();
    if let Err(why) = nobody_can_run_txsock(temp.path()) {
        eprintln!("skipped the read-only auditor check: {why}");
        return;
    }
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    mode(temp.path(), 0o755);
    mode(&data, 0o555);
    for entry in listing(&data) {
        mode(&entry, 0o444);
    }
    let before = listing(&data);
    let data_arg = data.to_str().expect("utf-8");
    let out = as_nobody(temp.path(), &["ledger", "check", "--data-dir", data_arg]).expect("ran");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ledger OK"), "{}", text(&out));
    let out = as_nobody(temp.path(), &["user", "list", "--data-dir", data_arg]).expect("ran");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 users"), "{}", text(&out));
    assert_eq!(listing(&data), before);

    // While a server (another user, here root) has the database open in WAL mode.
    mode(&data, 0o755);
    for entry in listing(&data) {
        mode(&entry, 0o644);
    }
    let server = Server::start_in(&data, &[]);
    let mut c = server.login("u1", false);
    c.transfer("while-audited", "u2", txsock_core::Amount(1))
        .expect("transfer");
    let out = as_nobody(temp.path(), &["ledger", "check", "--data-dir", data_arg]).expect("ran");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("24 journal entries"), "{}", text(&out));
    drop(server);
    // The writer still owns everything (the auditor created nothing).
    for entry in listing(&data) {
        let meta = std::fs::metadata(&entry).expect("metadata");
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            0,
            "{}",
            entry.display()
        );
    }
}

#[test]
fn user_add_refuses_fewer_iterations_than_the_server_minimum() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let add = |extra: &[&str]| {
        let mut args = vec!["user", "add", "carol", "--password-stdin"];
        args.extend_from_slice(extra);
        admin(&data, &args, "carol-password\n")
    };
    // Refused before the password is read (so no stdin here).
    let refused = |extra: &[&str]| {
        let mut args = vec!["user", "add", "carol", "--password-stdin"];
        args.extend_from_slice(extra);
        args.extend(["--data-dir", data.to_str().expect("utf-8")]);
        txsock_in(temp.path(), &args)
    };
    // The server's default minimum is 600,000.
    let out = refused(&["--iterations", "10"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("600000"), "{}", text(&out));
    // A server configured with a lower minimum: the same flag as `serve --min-iterations`.
    let out = refused(&["--iterations", "10", "--min-iterations", "4096"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4096"), "{}", text(&out));
    // Nor more than a conforming client runs at login (issue 12, item 5).
    let out = refused(&["--iterations", "10000001"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("10000000"), "{}", text(&out));
    let out = add(&["--iterations", "4096", "--min-iterations", "4096"]);
    assert!(out.status.success(), "{}", text(&out));
    // ... and the user can log in to such a server.
    let server = Server::start_in(&data, &[]);
    drop(server.login("carol", false));
}

#[test]
fn mysql_read_only_commands_require_a_txsock_schema_and_check_tables() {
    let Some(db) = MysqlDatabase::create("operator_ro") else {
        return;
    };
    let temp = tempfile::tempdir().expect("temp dir");
    let data_arg = temp.path().join("none");
    let data_arg = data_arg.to_str().expect("utf-8");
    // An empty database: refused, and no table is created in it.
    let out = txsock_in(
        temp.path(),
        &["ledger", "check", "--db", &db.url, "--data-dir", data_arg],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not a txsock database"),
        "{}",
        text(&out)
    );
    {
        use mysql::prelude::Queryable;
        let tables: Vec<String> = db.connect().query("SHOW TABLES").expect("tables");
        assert!(tables.is_empty(), "{tables:?}");
    }
    let server = Server::start_on_db(&db.url, &["--opening-balance", "5.00"]);
    drop(server.login("m1", true));
    let out = txsock_in(
        temp.path(),
        &["ledger", "check", "--db", &db.url, "--data-dir", data_arg],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ledger OK"), "{}", text(&out));
    assert!(
        listing(temp.path()).is_empty(),
        "{:?}",
        listing(temp.path())
    );
}

/// `txsock client … transfer` as `user`.
fn client_as(server: &Server, user: &str, args: &[&str]) -> ClientRun {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    run_client(server.addr, &all, Some(&password(user)), "")
}

#[test]
fn re_sent_transfer_id_says_nothing_moved_and_labels_the_old_balance() {
    let server = Server::start(&["--opening-balance", "100.00"]);
    drop(server.login("alice", true));
    drop(server.login("bob", true));
    let first = client_as(
        &server,
        "alice",
        &["transfer", "bob", "12.50", "--id", "rent-1"],
    );
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first
            .stdout
            .contains("committed: alice -> bob 12.50 (id rent-1); your balance is now 87.50"),
        "{}",
        first.stdout
    );
    let other = client_as(
        &server,
        "alice",
        &["transfer", "bob", "5.99", "--id", "food-1"],
    );
    assert_eq!(other.code, 0, "{other:?}");

    // The same id again (the user is not sure the first run went through).
    let again = client_as(
        &server,
        "alice",
        &["transfer", "bob", "12.50", "--id", "rent-1"],
    );
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .stdout
            .contains("already committed earlier, nothing moved: alice -> bob 12.50 (id rent-1)"),
        "{}",
        again.stdout
    );
    assert!(!again.stdout.contains("is now 87.50"), "{}", again.stdout);
    assert!(
        again.stdout.contains("87.50") && again.stdout.contains("your balance now is 81.51"),
        "{}",
        again.stdout
    );
    let json = client_as(
        &server,
        "alice",
        &["--json", "transfer", "bob", "12.50", "--id", "rent-1"],
    );
    let v = &json.json()[0];
    assert_eq!(v["status"], "committed", "{v}");
    assert_eq!(v["already_committed"], true, "{v}");
    assert_eq!(v["balance"], "87.50", "{v}");
    assert_eq!(v["balance_now"], "81.51", "{v}");

    // Long ago: more transfers than one history page since; still told apart.
    for k in 0..3 {
        let id = format!("later-{k}");
        let run = client_as(&server, "alice", &["transfer", "bob", "0.01", "--id", &id]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let old = client_as(
        &server,
        "alice",
        &["transfer", "bob", "12.50", "--id", "rent-1"],
    );
    assert!(
        old.stdout
            .contains("already committed earlier, nothing moved")
            && old.stdout.contains("your balance now is 81.48"),
        "{}",
        old.stdout
    );
    // A new id is a new transfer, told as such, in a batch with a re-sent one.
    let json = client_as(
        &server,
        "alice",
        &[
            "--json", "transfer", "bob", "1.00", "bob", "12.50", "--id", "new-1", "--id", "rent-1",
        ],
    );
    let lines = json.json();
    assert_eq!(lines[0]["already_committed"], false, "{lines:?}");
    assert_eq!(lines[1]["already_committed"], true, "{lines:?}");
    assert_eq!(server.committed("rent-1"), 1);
    assert_eq!(
        server.user_balance("alice"),
        txsock_core::Amount::parse_balance("80.48").unwrap()
    );
}

/// A server where alice and bob have 100.00 each.
fn bank() -> Server {
    let server = Server::start(&["--opening-balance", "100.00"]);
    for user in ["alice", "bob"] {
        drop(server.login(user, true));
    }
    server
}

#[test]
fn altered_transfer_is_reported_as_not_done_not_unknown() {
    let server = bank();
    let mitm = Mitm::start(&server, "tamper", &[]);
    let args = ["--user", "alice", "transfer", "bob", "5.00", "--id", "t1"];
    let run = run_client(mitm.addr, &args, Some(&password("alice")), "");
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stdout
            .contains("NOT DONE, altered on the way: alice -> bob 5.00 (id t1)")
            && run.stdout.contains("an altered transfer moves no money"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("UNKNOWN"), "{}", run.stdout);
    let mut json = vec!["--json"];
    json.extend_from_slice(&args);
    let run = run_client(mitm.addr, &json, Some(&password("alice")), "");
    let v = &run.json()[0];
    assert_eq!(v["status"], "altered", "{v}");
    assert_eq!(v["code"], "bad_mac", "{v}");
    assert_eq!(server.committed("t1"), 0);
    assert_eq!(
        server.user_balance("alice"),
        txsock_core::Amount::parse_balance("100.00").unwrap()
    );
}

#[test]
fn reordered_transfers_are_called_reordered_not_forged() {
    let server = bank();
    let mitm = Mitm::start(&server, "reorder", &["--limit", "1"]);
    let args = [
        "--json", "--user", "alice", "transfer", "bob", "0.50", "bob", "0.25", "--id", "o1",
        "--id", "o2",
    ];
    let run = run_client(mitm.addr, &args, Some(&password("alice")), "");
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(mitm.actions("REORDER").len(), 1);
    let alerts: Vec<String> = run
        .json()
        .iter()
        .flat_map(|v| v["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| a["alert"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(alerts.iter().any(|a| a == "reordered"), "{alerts:?}");
    assert!(!alerts.iter().any(|a| a == "forged_receipt"), "{alerts:?}");
    assert!(run.stderr.contains("reordered them"), "{}", run.stderr);
    assert!(!run.stderr.contains("forged"), "{}", run.stderr);
    assert_eq!((server.committed("o1"), server.committed("o2")), (1, 1));
}

#[test]
fn admin_lock_is_not_explained_as_a_wait() {
    let server = bank();
    let out = server.admin(&["user", "lock", "alice"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("until `txsock user unlock alice`"),
        "{}",
        text(&out)
    );
    let run = client_as(&server, "alice", &["balance"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout.contains("by an administrator until unlocked")
            && run.stdout.contains("ask the administrator"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("wait a little"), "{}", run.stdout);
}

/// `txsock serve` on `data` and `listen` in `cwd`, expected to fail: its output.
fn serve_fails(cwd: &Path, data: &Path, listen: &str) -> Output {
    let out = txsock_in(
        cwd,
        &[
            "serve",
            "--listen",
            listen,
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--min-iterations",
            &ITERATIONS.to_string(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    out
}

#[test]
fn second_server_on_a_data_directory_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let mut first = Server::start_in(&data, &[]);
    drop(first.login("alice", true));
    let pid = first.pid().expect("pid").to_string();
    let out = serve_fails(temp.path(), &data, "127.0.0.1:0");
    let all = text(&out);
    assert!(
        all.contains("another txsock server") && all.contains(&format!("pid {pid}")),
        "{all}"
    );
    assert!(all.contains(data.to_str().expect("utf-8")), "{all}");
    // The first one is untouched and still serves.
    drop(first.login("alice", false));
    // A clean stop releases the directory; so does a crash (the kernel drops the lock).
    first.restart();
    drop(first.login("alice", false));
    first.crash_and_restart();
    drop(first.login("alice", false));

    // Another data directory with the first one's database as --db: refused too.
    let db = data.join("txsock.db");
    let other = temp.path().join("other");
    let out = txsock_in(
        temp.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            other.to_str().expect("utf-8"),
            "--db",
            db.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("another txsock server"),
        "{}",
        text(&out)
    );
}

#[test]
fn port_in_use_is_refused_before_anything_is_created() {
    let temp = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let data = temp.path().join("new-data");
    let out = serve_fails(temp.path(), &data, &addr);
    let all = text(&out);
    assert!(all.contains(&addr) && all.contains("in use"), "{all}");
    assert!(!data.exists(), "{} was created", data.display());
    assert!(
        listing(temp.path()).is_empty(),
        "{:?}",
        listing(temp.path())
    );
}

/// `--server` without a port is invalid input (exit 2, said at once), not a connection
/// failure after three attempts (issue 19, "configuration, one story").
#[test]
fn a_server_address_without_a_port_is_a_usage_error() {
    let temp = tempfile::tempdir().expect("temp dir");
    let out = Command::new(txsock_bin())
        .args([
            "client",
            "--server",
            "127.0.0.1",
            "--user",
            "bob",
            "balance",
        ])
        .current_dir(temp.path())
        .env("TXSOCK_PASSWORD", "bob-password")
        .env_remove("TXSOCK_SERVER")
        .stdin(Stdio::null())
        .output()
        .expect("run txsock client");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("HOST:PORT"), "{}", text(&out));
    assert!(!text(&out).contains("reconnecting"), "{}", text(&out));
}

/// `serve --listen localhost:PORT` resolves the name once and listens on its IPv4 address.
#[test]
fn serve_listens_on_a_host_name() {
    use std::io::{BufRead, BufReader};
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let mut child = Command::new(txsock_bin())
        .args(["serve", "--listen", "localhost:0", "--data-dir"])
        .arg(&data)
        .current_dir(temp.path())
        .env_remove("TXSOCK_CONFIG")
        .env_remove("TXSOCK_LISTEN")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn txsock serve");
    let stdout = child.stdout.take().expect("stdout");
    let first = BufReader::new(stdout)
        .lines()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("txsock listening on 127.0.0.1:"),
        "{first:?}"
    );
}
