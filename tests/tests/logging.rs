//! The server's operational log on stderr (issue 19, "A service a supervisor can run"):
//! `RUST_LOG=debug` adds connection, login and commit lines; off a terminal there is no
//! ANSI colour; `--log-format json` (or `TXSOCK_LOG_FORMAT=json`) writes one JSON object per
//! line.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use txsock_e2e::*;

/// A server whose stderr goes to `dir/stderr.log`, with `env` and `extra` flags.
fn start(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> (Child, SocketAddr) {
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr file");
    let mut child = Command::new(txsock_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--min-iterations"])
        .arg(ITERATIONS.to_string())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .env_remove("TXSOCK_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("TXSOCK_LOG_FORMAT")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn txsock serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .strip_prefix("txsock listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Registers and logs in alice, asks her balance, fails a login as her, then stops the
/// server gracefully and returns its stderr.
fn session_then_stop(dir: &Path, mut child: Child, addr: SocketAddr) -> String {
    let connect = || {
        let s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s
    };
    let mut alice = client_over(connect());
    alice
        .register("alice", &password("alice"), ITERATIONS)
        .expect("register");
    alice.login("alice", &password("alice")).expect("login");
    alice.balance().expect("balance");
    drop(alice);
    let mut mallory = LineConn::new(connect());
    assert!(mallory.login("alice", "wrong").keys.is_none());
    drop(mallory);
    std::thread::sleep(Duration::from_millis(200));

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "serve exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(dir.join("stderr.log")).expect("read stderr")
}

#[cfg(unix)]
#[test]
fn json_format_writes_one_object_per_line_with_the_debug_events() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (child, addr) = start(
        temp.path(),
        &[("RUST_LOG", "debug")],
        &["--log-format", "json"],
    );
    let log = session_then_stop(temp.path(), child, addr);
    assert!(!log.contains('\x1b'), "ANSI escape in JSON lines:\n{log}");
    let events: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    for event in &events {
        assert!(event["timestamp"].is_string(), "{event}");
        assert!(event["level"].is_string(), "{event}");
        assert!(event["fields"]["message"].is_string(), "{event}");
    }
    let find = |message: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["fields"]["message"] == message)
            .collect()
    };
    assert!(!find("serving").is_empty(), "no start line:\n{log}");
    assert!(find("connection accepted").len() >= 2, "{log}");
    assert!(find("connection closed").len() >= 2, "{log}");
    let logged_in = find("logged in");
    assert!(
        logged_in
            .iter()
            .any(|e| e["fields"]["user"] == "alice" && e["level"] == "DEBUG"),
        "{log}"
    );
    assert!(
        find("login failed")
            .iter()
            .any(|e| e["fields"]["reason"] == "wrong_password"),
        "{log}"
    );
    let batches = find("batch committed");
    assert!(!batches.is_empty(), "{log}");
    assert!(batches.iter().all(|e| e["fields"]["requests"].is_u64()));
    assert!(!find("stopped").is_empty(), "no stop line:\n{log}");
}

#[cfg(unix)]
#[test]
fn text_format_has_no_colour_off_a_terminal_and_debug_adds_lines() {
    let temp = tempfile::tempdir().expect("temp dir");
    let run = |name: &str, env: &[(&str, &str)]| {
        let dir = temp.path().join(name);
        std::fs::create_dir(&dir).expect("run dir");
        let (child, addr) = start(&dir, env, &[]);
        session_then_stop(&dir, child, addr)
    };
    // Default level: start and stop, no per-connection lines.
    let quiet = run("quiet", &[]);
    assert!(
        !quiet.contains('\x1b'),
        "ANSI escape off a terminal:\n{quiet}"
    );
    assert!(
        quiet.contains("serving") && quiet.contains("stopped"),
        "{quiet}"
    );
    assert!(!quiet.contains("connection accepted"), "{quiet}");
    assert!(!quiet.contains("DEBUG"), "{quiet}");

    // RUST_LOG=debug adds them, still without colour; the JSON format is off.
    let debug = run("debug", &[("RUST_LOG", "debug")]);
    assert!(
        !debug.contains('\x1b'),
        "ANSI escape off a terminal:\n{debug}"
    );
    for needle in [
        "connection accepted",
        "logged in",
        "login failed",
        "batch committed",
        "connection closed",
    ] {
        assert!(debug.contains(needle), "no {needle:?} line:\n{debug}");
    }
    assert!(debug.lines().all(|l| !l.starts_with('{')), "{debug}");

    // TXSOCK_LOG_FORMAT=json as the environment's way to the same switch.
    let json = run("json", &[("TXSOCK_LOG_FORMAT", "json")]);
    assert!(
        json.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{json}"
    );
}
