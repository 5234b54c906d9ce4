//! `txsock client` in scriptable mode against a real `txsock serve`: every subcommand, the
//! JSON output, the exit statuses, and input that is refused before anything is sent.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use txsock_core::Amount;
use txsock_e2e::*;

fn money(s: &str) -> Amount {
    Amount::parse_balance(s).unwrap()
}

fn as_user(server: &Server, user: &str, args: &[&str]) -> ClientRun {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    run_client(server.addr, &all, Some(&password(user)), "")
}

#[test]
fn register_transfer_balance_history_and_idempotent_retry() {
    let server = Server::start(&["--opening-balance", "100.00"]);
    let run = as_user(&server, "alice", &["register"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Usernames are case-insensitive: Bob is bob.
    let run = run_client(
        server.addr,
        &["--user", "Bob", "register"],
        Some(&password("bob")),
        "",
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), "registered bob");
    assert_eq!(
        as_user(&server, "bob", &["register"]).code,
        3,
        "a taken name is a refusal"
    );
    // Registered with the client, logged in with the core client: the verifier matches.
    drop(server.login("bob", false));

    let run = as_user(
        &server,
        "alice",
        &["transfer", "bob", "12.50", "--id", "rent-1"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("committed: alice -> bob 12.50 (id rent-1); your balance is now 87.50"),
        "{}",
        run.stdout
    );
    // The same id again: the original result, no second move.
    let again = as_user(
        &server,
        "alice",
        &["--json", "transfer", "bob", "12.50", "--id", "rent-1"],
    );
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()[0]["balance"], "87.50");
    assert_eq!(server.committed("rent-1"), 1);

    let run = as_user(&server, "alice", &["--json", "balance"]);
    assert_eq!(run.code, 0);
    assert_eq!(run.json()[0]["balance"], "87.50");
    let run = as_user(&server, "bob", &["balance"]);
    assert_eq!(run.stdout.trim(), "balance of bob: 112.50");

    // Three pipelined transfers with mixed outcomes: one line each, worst status wins.
    let run = as_user(
        &server,
        "alice",
        &[
            "--json", "transfer", "bob", "1.00", "nobody", "2.00", "bob", "500",
        ],
    );
    assert_eq!(run.code, 3, "{run:?}");
    let lines = run.json();
    let statuses: Vec<(&str, &str)> = lines
        .iter()
        .map(|v| {
            (
                v["status"].as_str().unwrap(),
                v["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("committed", ""),
            ("refused", "unknown_recipient"),
            ("refused", "insufficient_funds")
        ]
    );
    assert_eq!(server.user_balance("alice"), money("86.50"));

    let run = as_user(&server, "alice", &["--json", "history", "--limit", "5"]);
    assert_eq!(run.code, 0, "{run:?}");
    let h = &run.json()[0];
    // Two transfers, then the opening balance: a deposit, with neither id nor sender.
    let entries: Vec<(&str, Option<&str>)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["id"].as_str()))
        .collect();
    assert_eq!(entries.len(), 3, "{h}");
    assert_eq!(entries[1], ("transfer", Some("rent-1")));
    assert_eq!(entries[2], ("deposit", None));
    assert_eq!(h["entries"][2]["from"], serde_json::Value::Null, "{h}");
    assert_eq!(h["entries"][2]["amount"], "100.00", "{h}");
    assert_eq!(h["more"], false);
    assert_eq!(h["deposits_listed"], true);
    let run = as_user(&server, "bob", &["history"]);
    assert!(
        run.stdout.contains("received") && run.stdout.contains("from alice"),
        "{}",
        run.stdout
    );
    assert!(server.ledger_ok());
}

#[test]
fn exit_statuses_for_refusals_integrity_and_connection_failures() {
    let server = Server::start(&[]);
    drop(server.login("carol", true));
    // Wrong password: refused (3), with the human explanation.
    let run = run_client(
        server.addr,
        &["--user", "carol", "balance"],
        Some("not carol's password"),
        "",
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stdout.contains("wrong username or password"),
        "{}",
        run.stdout
    );
    // The password from stdin (first line) works like the variable.
    let run = run_client(
        server.addr,
        &["--user", "carol", "--password-stdin", "balance"],
        None,
        &format!("{}\nignored\n", password("carol")),
    );
    assert_eq!(run.code, 0, "{run:?}");
    // A client that wants more PBKDF2 iterations than the server offers refuses the challenge
    // before using the password: an integrity failure (4), no proof sent.
    let failures = server.log("sessions.log").matches("login_failed").count();
    let run = run_client(
        server.addr,
        &["--user", "carol", "--min-iterations", "600000", "balance"],
        Some(&password("carol")),
        "",
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stdout.contains("4096 PBKDF2 iterations"),
        "{}",
        run.stdout
    );
    assert_eq!(
        server.log("sessions.log").matches("login_failed").count(),
        failures,
        "no proof was sent"
    );
    // Nobody listening: connection failure (5).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let run = run_client(
        addr,
        &["--user", "carol", "--attempts", "1", "balance"],
        Some("whatever-pass"),
        "",
    );
    assert_eq!(run.code, 5, "{run:?}");
}

/// Runs the client against a listener that only counts connections.
fn costs_nothing(args: &[&str], password: Option<&str>, stdin: &str) -> ClientRun {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let run = run_client(addr, args, password, stdin);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        listener.accept().is_err(),
        "the client connected for bad input {args:?}"
    );
    run
}

#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    let pw = Some("long enough password");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--user", "alice", "transfer", "bob", "1.001"],
            "at most two decimals",
        ),
        (&["--user", "alice", "transfer", "bob", "0"], "amount"),
        (&["--user", "alice", "transfer", "bob", "-5"], "amount"),
        (
            &["--user", "alice", "transfer", "b ob", "1"],
            "valid username",
        ),
        (&["--user", "alice", "transfer", "alice", "1"], "yourself"),
        (
            &[
                "--user",
                "alice",
                "transfer",
                "bob",
                "1",
                "--id",
                "no spaces",
            ],
            "transfer id",
        ),
        (
            &["--user", "alice", "transfer", "bob", "1", "carol"],
            "pairs",
        ),
        (
            &[
                "--user", "alice", "transfer", "bob", "1", "carol", "2", "--id", "x",
            ],
            "one --id per transfer",
        ),
        (&["--user", "ali ce", "balance"], "valid username"),
        (&["balance"], "--user"),
    ];
    for (args, message) in cases {
        let run = costs_nothing(args, pw, "");
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    // Passwords: too short, missing, never an argument.
    let run = costs_nothing(&["--user", "alice", "balance"], Some("short"), "");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("at least 8 characters, at most 128 bytes"),
        "{}",
        run.stderr
    );
    let run = costs_nothing(&["--user", "alice", "balance"], None, "");
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("TXSOCK_PASSWORD"), "{}", run.stderr);
    let run = costs_nothing(&["--user", "alice", "--password", "x", "balance"], None, "");
    assert_eq!(run.code, 2, "there is no --password flag: {run:?}");
    // --json reports bad input as JSON too.
    let run = costs_nothing(
        &["--json", "--user", "alice", "transfer", "bob", "x"],
        pw,
        "",
    );
    assert_eq!(run.json()[0]["status"], "invalid_input");
}
