//! `examples/python/txsock_client.py`, a client written from `docs/PROTOCOL.md` in Python's
//! standard library alone, against a real `txsock serve`: it registers, logs in with SCRAM,
//! transfers with MACs and nonces, checks receipts, and interoperates with the Rust client.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use txsock_core::Amount;
use txsock_e2e::*;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python/txsock_client.py")
}

/// `python3 txsock_client.py --server ADDR --user USER --min-iterations 4096 ARGS`.
fn py(addr: std::net::SocketAddr, user: &str, args: &[&str], min_iterations: u32) -> ClientRun {
    py_on(&addr.to_string(), user, args, min_iterations)
}

/// [`py`] with a `--server` list (`HOST:PORT,HOST:PORT…`).
fn py_on(servers: &str, user: &str, args: &[&str], min_iterations: u32) -> ClientRun {
    let child = Command::new("python3")
        .arg(script())
        .args(["--server", servers, "--user", user])
        .args([
            "--min-iterations",
            &min_iterations.to_string(),
            "--timeout",
            "10",
        ])
        .args(args)
        .env("TXSOCK_PASSWORD", password(&user.to_lowercase()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    let out = output_within(child, Duration::from_secs(60));
    ClientRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn money(s: &str) -> Amount {
    Amount::parse_balance(s).unwrap()
}

#[test]
fn python_client_registers_logs_in_and_transfers_against_a_real_server() {
    let server = Server::start(&["--opening-balance", "100.00"]);
    let run = py(server.addr, "Dave", &["register"], ITERATIONS);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), "registered dave");
    drop(server.login("erin", true));

    let run = py(
        server.addr,
        "dave",
        &["transfer", "Erin", "12.5", "--id", "py-1"],
        ITERATIONS,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("committed: dave -> erin 12.50 (id py-1); your balance is now 87.50"),
        "{}",
        run.stdout
    );
    // Same id again: the original, verified result; money moved once.
    let run = py(
        server.addr,
        "dave",
        &["transfer", "erin", "12.50", "--id", "py-1"],
        ITERATIONS,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "already committed earlier, nothing moved: dave -> erin 12.50 (id py-1); the \
             balance recorded right after it then was 87.50; your balance now is 87.50"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(server.committed("py-1"), 1);
    let run = py(
        server.addr,
        "dave",
        &["transfer", "erin", "1000"],
        ITERATIONS,
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains("insufficient_funds"), "{}", run.stdout);

    let run = py(server.addr, "dave", &["balance"], ITERATIONS);
    assert_eq!(run.stdout.trim(), "balance of dave: 87.50", "{run:?}");
    let run = py(server.addr, "dave", &["history"], ITERATIONS);
    assert!(
        run.stdout.contains("py-1 dave -> erin 12.50 at "),
        "{run:?}"
    );
    // The statement: dave's opening balance is a deposit, verified like the transfers.
    assert!(run.stdout.contains("deposit to dave 100.00 at "), "{run:?}");
    assert_eq!(server.user_balance("erin"), money("112.50"));

    // Registered by Python, logged in by the Rust core: the verifier is the same.
    let mut c = server.login("dave", false);
    assert_eq!(c.balance().unwrap(), money("87.50"));
    // And the Rust command-line client agrees.
    let run = run_client(
        server.addr,
        &["--user", "dave", "balance"],
        Some(&password("dave")),
        "",
    );
    assert_eq!(run.stdout.trim(), "balance of dave: 87.50");
    assert!(server.ledger_ok());
}

#[test]
fn python_client_detects_forgery_tampering_and_a_lowered_work_factor() {
    let server = Server::start(&["--opening-balance", "100.00"]);
    drop(server.login("frank", true));
    drop(server.login("grace", true));

    let forge = Mitm::start(&server, "forge-reply", &[]);
    let run = py(
        forge.addr,
        "frank",
        &["transfer", "grace", "500"],
        ITERATIONS,
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("forged or altered"), "{}", run.stderr);

    let tamper = Mitm::start(&server, "tamper", &[]);
    let run = py(
        tamper.addr,
        "frank",
        &["transfer", "grace", "5", "--id", "pt"],
        ITERATIONS,
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("bad_mac"), "{}", run.stderr);
    assert!(
        run.stderr.contains("NOT DONE, altered on the way")
            && run.stderr.contains("an altered transfer moves no money"),
        "{}",
        run.stderr
    );
    assert!(server.wait_for_log("error.log", "rejected code=bad_mac user=frank"));
    assert_eq!(server.committed("pt"), 0);
    assert_eq!(server.user_balance("frank"), money("100.00"));

    // The server offers 4096 iterations; a client asking for 600,000 refuses to use the password.
    let run = py(server.addr, "frank", &["balance"], 600_000);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("4096"), "{}", run.stderr);
}

#[test]
fn python_client_refuses_a_challenge_above_the_iteration_maximum() {
    // PROTOCOL.md §8: a client MUST refuse a challenge above its maximum (10,000,000), or a
    // hostile peer keeps it busy for minutes. The proxy raises the server's count past it.
    let server = Server::start(&[]);
    drop(server.login("heidi", true));
    let proxy = Proxy::start(server.addr, |line| {
        line.replace(
            &format!("\"iterations\":{ITERATIONS}"),
            "\"iterations\":10000001",
        )
    });
    let run = py(proxy.addr, "heidi", &["balance"], ITERATIONS);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("10000001") && run.stderr.contains("maximum 10000000"),
        "{}",
        run.stderr
    );
}

#[test]
fn python_client_refuses_a_history_time_that_is_not_a_json_integer() {
    // PROTOCOL.md §6: `at` is a JSON integer. The MAC input carries it in decimal, so a
    // string "1767…" would verify as the number: the client must refuse the type itself.
    let server = Server::start(&["--opening-balance", "100.00"]);
    drop(server.login("ivan", true));
    drop(server.login("judy", true));
    let run = py(
        server.addr,
        "ivan",
        &["transfer", "judy", "1.00", "--id", "at-1"],
        ITERATIONS,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let run = py(server.addr, "ivan", &["history"], ITERATIONS);
    assert_eq!(run.code, 0, "{run:?}");
    let quoted = Proxy::start(server.addr, |line| {
        // Every `"at":123` becomes `"at":"123"`.
        let mut out = String::new();
        let mut rest = line;
        while let Some(i) = rest.find("\"at\":") {
            let (head, tail) = rest.split_at(i + 5);
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            out.push_str(head);
            out.push_str(&format!("\"{}\"", &tail[..digits]));
            rest = &tail[digits..];
        }
        out + rest
    });
    let run = py(quoted.addr, "ivan", &["history"], ITERATIONS);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("malformed statement entry"),
        "{}",
        run.stderr
    );
}

#[test]
fn python_client_treats_an_unknown_error_code_as_internal() {
    // PROTOCOL.md §14: a client treats a code it does not know as `internal`, which for the
    // Python client means: this server cannot serve now, try the next one in --server.
    let server = Server::start(&["--opening-balance", "100.00"]);
    drop(server.login("kate", true));
    drop(server.login("liam", true));
    let future = Proxy::start(server.addr, |line| {
        if line.starts_with("{\"op\":\"challenge\"") {
            r#"{"op":"error","code":"from_a_later_version","message":"not known here"}"#.to_string()
        } else {
            line.to_string()
        }
    });
    let both = format!("{},{}", future.addr, server.addr);
    let run = py_on(
        &both,
        "kate",
        &["transfer", "liam", "2.00", "--id", "fut-1"],
        ITERATIONS,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("from_a_later_version"),
        "{}",
        run.stderr
    );
    assert_eq!(server.committed("fut-1"), 1);
}

#[test]
fn python_client_counts_password_characters_and_bytes_as_the_reference_client() {
    // PROTOCOL.md §7: at least 8 characters, at most 128 bytes, no control character (Cc).
    // Refused before anything is sent: exit 2, and no connection to the (closed) port. The
    // port was free a moment ago (bound, then dropped); UTF-8 mode makes Python read the
    // environment as UTF-8 whatever the locale.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let register = |password: &str| {
        let child = Command::new("python3")
            .arg(script())
            .args(["--server", &closed, "--user", "mia", "register"])
            .env("TXSOCK_PASSWORD", password)
            .env("PYTHONUTF8", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is needed for this test");
        output_within(child, Duration::from_secs(60)).status.code()
    };
    // Seven characters in fourteen bytes: too short.
    assert_eq!(register("ééééééé"), Some(2));
    // Sixty-five characters in 130 bytes: too long.
    assert_eq!(register(&"é".repeat(65)), Some(2));
    // A C1 control character.
    assert_eq!(register("good pass\u{85}word"), Some(2));
    // Eight characters are enough: the client goes on and finds no server (exit 5).
    assert_eq!(register("éééééééé"), Some(5));
}
