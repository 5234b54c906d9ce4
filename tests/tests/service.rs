//! `txsock serve` under a service manager (issue 19, "A service a supervisor can run"):
//! SIGHUP reopens the audit logs for log rotation; `READY=1` reaches `$NOTIFY_SOCKET` once
//! the server listens and `STOPPING=1` when it shuts down (systemd `Type=notify`).

#![cfg(unix)]

use std::process::Command;
use std::time::{Duration, Instant};
use txsock_e2e::*;

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits up to 5 s for `path` to exist.
fn wait_for_file(path: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn sighup_reopens_the_audit_logs_after_rotation() {
    let mut server = Server::start(&[]);
    let pid = server.pid().expect("pid");
    let mut alice = server.login("alice", true);
    assert!(server.wait_for_log("sessions.log", "login user=alice"));

    let dir = server.data_dir.clone();
    let rotated = dir.join("sessions.log.1");
    std::fs::rename(dir.join("sessions.log"), &rotated).expect("mv sessions.log");
    signal(pid, "HUP");
    assert!(
        wait_for_file(&dir.join("sessions.log")),
        "no new sessions.log after SIGHUP"
    );

    // The server still serves, and alice's connection survived the signal.
    let _bob = server.login("bob", true);
    assert!(server.wait_for_log("sessions.log", "login user=bob"));
    alice.balance().expect("alice's session survives SIGHUP");

    let new = server.log("sessions.log");
    let old = std::fs::read_to_string(&rotated).expect("read sessions.log.1");
    assert!(
        !new.contains("user=alice"),
        "old lines in the new file:\n{new}"
    );
    assert!(
        old.contains("login user=alice"),
        "old file lost its lines:\n{old}"
    );
    assert!(
        !old.contains("user=bob"),
        "new lines in the old file:\n{old}"
    );
    // The other logs were reopened too (still there, still written).
    assert!(dir.join("transactions.log").exists());
    assert!(dir.join("error.log").exists());
    assert!(server.stop(), "server did not stop cleanly after SIGHUP");
}

#[test]
fn lines_written_during_a_reopen_land_whole_in_one_file() {
    let server = Server::start(&[]);
    let pid = server.pid().expect("pid");
    let dir = server.data_dir.clone();
    const USERS: usize = 24;
    let addr_server = &server;
    std::thread::scope(|s| {
        let logins = s.spawn(move || {
            for i in 0..USERS {
                let mut c = addr_server.login(&format!("u{i}"), true);
                c.balance().expect("balance");
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        for round in 1..=3 {
            let _ = std::fs::rename(
                dir.join("sessions.log"),
                dir.join(format!("sessions.log.{round}")),
            );
            signal(pid, "HUP");
            std::thread::sleep(Duration::from_millis(50));
        }
        logins.join().expect("logins");
    });
    let mut all = String::new();
    for name in [
        "sessions.log",
        "sessions.log.1",
        "sessions.log.2",
        "sessions.log.3",
    ] {
        all.push_str(&std::fs::read_to_string(dir.join(name)).unwrap_or_default());
    }
    for i in 0..USERS {
        let needle = format!("login user=u{i} ");
        let count = all.lines().filter(|l| l.contains(&needle)).count();
        assert_eq!(count, 1, "login of u{i} logged {count} times:\n{all}");
    }
    for line in all.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()) && line.matches(" user=").count() <= 1,
            "torn line: {line:?}"
        );
    }
}

/// A NOTIFY_SOCKET in `dir` for a server to talk to, as systemd's: the bound socket (reads
/// wait 10 s at most) and its path.
fn notify_socket(dir: &std::path::Path) -> (std::os::unix::net::UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (socket, path)
}

/// Receives one datagram from the test's NOTIFY_SOCKET within 10 s.
fn notification(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("no message on NOTIFY_SOCKET within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn systemd_gets_ready_once_listening_and_stopping_on_shutdown() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (socket, path) = notify_socket(temp.path());
    let notify = path.to_str().expect("utf-8 path");
    let mut server =
        Server::start_in_env(&temp.path().join("data"), &[], &[("NOTIFY_SOCKET", notify)]);

    let ready = notification(&socket);
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first message is not READY=1: {ready:?}"
    );
    // READY=1 means listening: a client can log in at once.
    let _alice = server.login("alice", true);

    assert!(server.stop(), "server did not stop cleanly");
    let stopping = notification(&socket);
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "no STOPPING=1 on shutdown: {stopping:?}"
    );
}

/// Collects NOTIFY_SOCKET messages until one has a line equal to `want` (10 s at most per
/// message); returns every line received on the way.
fn notifications_until(socket: &std::os::unix::net::UnixDatagram, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let message = notification(socket);
        let done = message.lines().any(|l| l == want);
        seen.extend(message.lines().map(str::to_string));
        if done {
            return seen;
        }
    }
}

/// SIGHUP reads txsock.toml again (issue 19): reloadable settings (`registration`,
/// `log-filter`) take effect without a restart and without dropping a connection, one that needs a restart
/// (`max-connections`) is logged as such and keeps its running value, `RELOADING=1` then
/// `READY=1` reach systemd around it, and with `WATCHDOG_USEC` the server pets the watchdog
/// (after each answered ledger probe) until it stops.
#[test]
fn sighup_reloads_settings_and_the_watchdog_is_petted() {
    use std::io::Read;
    let temp = tempfile::tempdir().expect("temp dir");
    let (socket, path) = notify_socket(temp.path());
    let settings = temp.path().join("txsock.toml");
    std::fs::write(&settings, "[serve]\nregistration = \"closed\"\n").expect("write settings");
    let data = temp.path().join("data");
    let mut child = Command::new(txsock_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--min-iterations", &ITERATIONS.to_string()])
        .env("TXSOCK_CONFIG", &settings)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn txsock serve");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut banner).expect("banner");
    let addr: std::net::SocketAddr = banner
        .strip_prefix("txsock listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
    let pid = child.id();
    assert!(notifications_until(&socket, "READY=1").contains(&"READY=1".to_string()));
    // The watchdog is petted, more than once (every 200 ms here).
    notifications_until(&socket, "WATCHDOG=1");
    notifications_until(&socket, "WATCHDOG=1");

    let connect = || client_over(std::net::TcpStream::connect(addr).expect("connect"));
    let mut early = connect();
    let refused = early.register("alice", &password("alice"), ITERATIONS);
    assert!(refused.is_err(), "registration is closed: {refused:?}");

    std::fs::write(
        &settings,
        "[serve]\nregistration = \"open\"\nmax-connections = 7\nlog-filter = \"debug\"\n",
    )
    .expect("rewrite settings");
    signal(pid, "HUP");
    let around = notifications_until(&socket, "READY=1");
    let reloading = around.iter().position(|l| l == "RELOADING=1");
    assert!(
        reloading.is_some(),
        "no RELOADING=1 before READY=1: {around:?}"
    );
    assert!(
        around.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{around:?}"
    );

    // Registration is open now, on a new connection and on the one opened before.
    connect()
        .register("alice", &password("alice"), ITERATIONS)
        .expect("registration opened by SIGHUP");
    early
        .register("bob", &password("bob"), ITERATIONS)
        .expect("the connection from before the reload registers too");
    notifications_until(&socket, "WATCHDOG=1");

    // A settings file that no longer parses changes nothing: registration stays open.
    std::fs::write(&settings, "[serve]\nregistration = \"maybe\"\n").expect("rewrite");
    signal(pid, "HUP");
    notifications_until(&socket, "READY=1");
    connect()
        .register("carol", &password("carol"), ITERATIONS)
        .expect("registration still open after a bad settings file");

    signal(pid, "TERM");
    notifications_until(&socket, "STOPPING=1");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("read stderr");
    assert!(log.contains("applied registration = Open"), "{log}");
    // The log filter changed too: debug lines (one per connection) only after the reload.
    let (before, after) = log
        .split_once("applied log-filter")
        .unwrap_or_else(|| panic!("log-filter not applied: {log}"));
    assert!(!before.contains("connection accepted"), "{log}");
    assert!(after.contains("connection accepted"), "{log}");
    assert!(
        log.contains("`max-connections` changed but needs a restart"),
        "{log}"
    );
    assert!(log.contains("systemd watchdog enabled"), "{log}");
    assert!(
        log.contains("settings not read again") && log.contains("registration"),
        "{log}"
    );
}
