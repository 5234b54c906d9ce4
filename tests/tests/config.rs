//! Configuration, one story (issue 19): one `txsock.toml` with `[serve]` and `[client]`
//! sections configures both sides; the client reads `TXSOCK_*` like the server
//! (`TXSOCK_USER` included) with flag over environment over file; a bad value names the
//! file and the key; durations accept units (`5m`).

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use txsock_e2e::*;

/// `txsock ARGS` in `dir` (so `dir/txsock.toml` is the settings file) with `env`.
fn txsock(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(txsock_bin());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("TXSOCK_CONFIG")
        .env_remove("TXSOCK_SERVER")
        .env_remove("TXSOCK_USER")
        .env_remove("TXSOCK_PASSWORD")
        .env_remove("TXSOCK_JSON")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = txsock(dir, args, env).spawn().expect("spawn txsock");
    output_within(child, Duration::from_secs(60))
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn one_file_configures_the_client_and_the_environment_and_flags_win() {
    let server = Server::start(&[]);
    drop(server.login("alice", true));
    let temp = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        temp.path().join("txsock.toml"),
        format!(
            "[serve]\nmax-connections = 5\n\n[client]\nserver = \"{}\"\nuser = \"alice\"\n\
             json = true\ntimeout = \"30s\"\nmin-iterations = {ITERATIONS}\n",
            server.addr
        ),
    )
    .expect("write txsock.toml");
    let alice = password("alice");
    let pw = [("TXSOCK_PASSWORD", alice.as_str())];

    // Everything from the file: server, user, JSON output, timeout, iterations.
    let out = run(temp.path(), &["client", "balance"], &pw);
    assert!(out.status.success(), "{}", both(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(line.trim()).expect("JSON from the file's json = true");
    assert!(json["balance"].is_string(), "{json}");

    // TXSOCK_USER beats the file: bob has no account, so the login is refused (exit 3).
    let env = [pw[0], ("TXSOCK_USER", "bob")];
    let out = run(temp.path(), &["client", "balance"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", both(&out));

    // The flag beats the environment.
    let out = run(temp.path(), &["client", "--user", "alice", "balance"], &env);
    assert!(out.status.success(), "{}", both(&out));
}

/// Waits up to `limit` for the server to close `stream`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn first_line(child: &mut Child) -> String {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn the_serve_section_takes_durations_with_units() {
    let temp = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        temp.path().join("txsock.toml"),
        "listen = \"127.0.0.1:0\"\n[serve]\nlogin-deadline = \"1s\"\nidle-timeout = \"5m\"\n\
         [client]\nuser = \"nobody-here\"\n",
    )
    .expect("write txsock.toml");
    let mut child = txsock(temp.path(), &["serve"], &[])
        .spawn()
        .expect("spawn serve");
    let line = first_line(&mut child);
    let addr = line
        .strip_prefix("txsock listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    // A connection that never logs in is cut off after the file's 1 s login deadline.
    let mut idle = TcpStream::connect(&addr).expect("connect");
    let closed = closed_within(&mut idle, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    assert!(closed, "the 1s login deadline from [serve] did not apply");
}

#[test]
fn a_bad_value_names_the_file_and_the_key() {
    let temp = tempfile::tempdir().expect("temp dir");
    let file = temp.path().join("txsock.toml");
    std::fs::write(&file, "[client]\ntimeout = \"soon\"\n").expect("write");
    let out = run(temp.path(), &["client", "--user", "alice", "balance"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        both(&out).contains("txsock.toml: [client] `timeout` = \"soon\""),
        "{}",
        both(&out)
    );
    std::fs::write(&file, "[serve]\nforget-after = \"a while\"\n").expect("write");
    let out = run(temp.path(), &["serve"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        both(&out).contains("txsock.toml: [serve] `forget-after`"),
        "{}",
        both(&out)
    );
    assert!(!temp.path().join("txsock-data").exists());
}
