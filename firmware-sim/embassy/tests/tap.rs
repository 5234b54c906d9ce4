//! The embassy-net server on a real TAP interface, reached by the real `txsock client` (and
//! `txsock mitm`) from another network namespace: `firmware-sim/tap-netns.sh` creates both
//! namespaces (documentation addresses 192.0.2.0/24, no route out), `txsock-embassy-tap` runs
//! the server in one, the clients run in the other, and everything is deleted afterwards.
//!
//! The checks are the device's TAP checks and more: registration, login, transfers (and a
//! retried id), a wrong password, a replayed transfer refused (`unknown_nonce`, money moves
//! once), a tampered transfer refused (`bad_mac`, nothing moves), `server_busy` once every
//! session task is busy, service again once they are free, and the per-address login
//! throttle across sessions.
//!
//! Needs root, `/dev/net/tun`, iproute2 and the `txsock` binary (`TXSOCK_BIN`, else beside
//! this test executable), so it is ignored by plain `cargo test`; `cargo xtask test` runs it
//! (step `embassy`) with `--ignored --nocapture`. Where the machine cannot run it, it prints
//! `SKIPPED: <reason>` and passes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVER: &str = "192.0.2.2:11002";
/// The server's minimum PBKDF2 iterations, which the client uses.
const ITERATIONS: &str = "4096";
/// The server's session tasks (`txsock-embassy-tap`'s `SESSIONS`).
const SESSIONS: usize = 4;

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Some("not running as root (network namespaces and TAP need it)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    let probe = format!("txsock-probe-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(out) => Some(format!(
            "cannot create network namespaces: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `ip netns add` (iproute2): {e}")),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tap-netns.sh")
}

/// The namespaces of one test run, deleted on drop.
struct Namespaces {
    id: String,
}

impl Namespaces {
    fn up(id: &str) -> Namespaces {
        let out = Command::new("bash")
            .arg(script())
            .args(["up", id])
            .output()
            .expect("run tap-netns.sh");
        let ns = Namespaces { id: id.to_owned() };
        assert!(
            out.status.success(),
            "tap-netns.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ns
    }

    fn server_ns(&self) -> String {
        format!("txsock-dev-{}", self.id)
    }

    fn client_ns(&self) -> String {
        format!("txsock-cli-{}", self.id)
    }

    fn tap(&self) -> String {
        format!("txs{}tap", self.id)
    }

    /// `program` run inside the client namespace.
    fn in_client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.client_ns()])
            .arg(program);
        command
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.id])
            .status();
    }
}

/// A process whose stdout lines are collected, killed on drop.
struct Process {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    fn start(name: &'static str, mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{name}: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            name,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until the process has printed `count` lines containing `text` in all.
    fn wait_for_count(&mut self, text: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count(text) < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "{} did not print `{text}` {count} times; it printed {:?}",
                    self.name, self.seen
                ),
            }
        }
    }

    fn wait_for(&mut self, text: &str, limit: Duration) {
        self.wait_for_count(text, 1, limit);
    }

    /// How many lines seen so far contain `text`.
    fn count(&mut self, text: &str) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().filter(|l| l.contains(text)).count()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `txsock`: `TXSOCK_BIN`, else beside this test executable (`cargo xtask test` builds it into
/// the same target directory).
fn txsock() -> PathBuf {
    if let Some(bin) = std::env::var_os("TXSOCK_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("txsock");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p txsock-host` in the repository root, \
         same target directory) or set TXSOCK_BIN",
        bin.display()
    );
    bin
}

/// Runs `txsock client --server SERVER --user USER ARGS` in the client namespace.
fn client(ns: &Namespaces, server: &str, user: &str, password: &str, args: &[&str]) -> Output {
    let out = ns
        .in_client(txsock())
        .args(["client", "--server", server, "--user", user])
        .args(["--min-iterations", ITERATIONS, "--timeout", "10"])
        .args(args)
        .env("TXSOCK_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("run txsock client");
    println!(
        "$ txsock client --server {server} --user {user} {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `txsock mitm --mode MODE` in the client namespace, on its loopback, forwarding to the server.
fn mitm(ns: &Namespaces, mode: &str, port: u16) -> Process {
    let mut command = ns.in_client(txsock());
    command.args(["mitm", "--listen", &format!("127.0.0.1:{port}")]);
    command.args(["--upstream", SERVER, "--mode", mode]);
    let mut mitm = Process::start("mitm", command);
    mitm.wait_for("listening on", Duration::from_secs(20));
    mitm
}

#[test]
#[ignore = "needs root, /dev/net/tun, network namespaces and the txsock binary: `cargo xtask test` runs it (step embassy)"]
fn txsock_client_against_the_embassy_server_on_a_tap() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let id = format!("e{}", std::process::id() % 10_000_000);
    let ns = Namespaces::up(&id);
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.server_ns()])
        .arg(env!("CARGO_BIN_EXE_txsock-embassy-tap"))
        .args(["--tap", &ns.tap(), "--address", "192.0.2.2/24"])
        .args(["--serve-for", "300"]);
    let mut server = Process::start("server", command);
    server.wait_for("listening on", Duration::from_secs(20));
    let (alice, bob) = ("alice's password", "bob's password");

    // Registration and login.
    assert!(client(&ns, SERVER, "alice", alice, &["register"])
        .status
        .success());
    assert!(client(&ns, SERVER, "bob", bob, &["register"])
        .status
        .success());
    let out = client(&ns, SERVER, "alice", alice, &["register"]);
    assert_eq!(out.status.code(), Some(3), "a taken name is refused");
    let out = client(&ns, SERVER, "alice", "not alice's password", &["balance"]);
    assert_eq!(out.status.code(), Some(3), "a wrong password is refused");

    // A transfer, and the same id again: the original result, no second debit.
    let transfer = ["--json", "transfer", "bob", "1.25", "--id", "tap-1"];
    let out = client(&ns, SERVER, "alice", alice, &transfer);
    assert!(out.status.success(), "transfer");
    let text = stdout(&out);
    assert!(text.contains("\"status\":\"committed\""), "{text}");
    assert!(text.contains("\"balance\":\"98.75\""), "{text}");
    let out = client(&ns, SERVER, "alice", alice, &transfer);
    assert!(out.status.success() && stdout(&out).contains("\"balance\":\"98.75\""));

    // A replayed transfer frame: refused for its used nonce, the money moves once.
    let replay = mitm(&ns, "replay", 11003);
    let via_replay = "127.0.0.1:11003";
    let out = client(
        &ns,
        via_replay,
        "alice",
        alice,
        &["--json", "transfer", "bob", "1.00", "--id", "tap-r"],
    );
    assert!(out.status.success(), "the client's own transfer succeeds");
    assert!(stdout(&out).contains("\"balance\":\"97.75\""));
    server.wait_for("Rejected { code: UnknownNonce }", Duration::from_secs(10));
    drop(replay);

    // A tampered transfer frame: refused for its MAC, nothing moves.
    let tamper = mitm(&ns, "tamper", 11004);
    let out = client(
        &ns,
        "127.0.0.1:11004",
        "alice",
        alice,
        &[
            "--attempts",
            "1",
            "transfer",
            "bob",
            "5.00",
            "--id",
            "tap-t",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "integrity failure expected");
    server.wait_for("Rejected { code: BadMac }", Duration::from_secs(10));
    drop(tamper);
    let out = client(&ns, SERVER, "alice", alice, &["balance"]);
    assert!(
        out.status.success() && stdout(&out).contains("97.75"),
        "only two transfers moved money"
    );
    let out = client(&ns, SERVER, "bob", bob, &["balance"]);
    assert!(out.status.success() && stdout(&out).contains("102.25"));

    // Every session task busy (idle connections that say nothing): the next client gets
    // server_busy from the refusal task.
    let connected_before = server.count("connected");
    let holders: Vec<Process> = (0..SESSIONS)
        .map(|_| {
            let mut command = ns.in_client("bash");
            command.args([
                "-c",
                "exec 3<>/dev/tcp/192.0.2.2/11002; echo open; sleep 60",
            ]);
            Process::start("idle", command)
        })
        .collect();
    server.wait_for_count(
        "connected",
        connected_before + SESSIONS,
        Duration::from_secs(20),
    );
    // server_busy is a connection-level limit: the client reports it as a failed connection
    // (exit 5) in the words of `human::refusal`.
    let out = client(&ns, SERVER, "bob", bob, &["--attempts", "1", "balance"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "refused while every session is busy"
    );
    let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("connection limit"), "{said}");
    server.wait_for("refused 192.0.2.1: server_busy", Duration::from_secs(10));

    // The idle clients hang up: their sessions end and their sockets listen again.
    let closed_before = server.count(": closed");
    drop(holders);
    server.wait_for_count(
        ": closed",
        closed_before + SESSIONS,
        Duration::from_secs(20),
    );
    let out = client(&ns, SERVER, "bob", bob, &["balance"]);
    assert!(
        out.status.success() && stdout(&out).contains("102.25"),
        "served again"
    );

    // The per-address login throttle is the core's, in the state every session shares: 20
    // failed logins from one address, each on its own connection, throttle it (1 s, doubling
    // with each further failure: 8 s after 23), and then even bob's right password is refused.
    for _ in 0..23 {
        let out = client(&ns, SERVER, "mallory", "a guessed password", &["balance"]);
        assert_eq!(out.status.code(), Some(3), "a failed login is refused");
    }
    server.wait_for("AddressThrottled", Duration::from_secs(5));
    let out = client(&ns, SERVER, "bob", bob, &["balance"]);
    assert_eq!(out.status.code(), Some(3), "a throttled address is refused");
    server.wait_for(
        "LoginFailed { user: Username(\"bob\"), reason: AddressThrottled }",
        Duration::from_secs(5),
    );

    server.wait_for("registered bob", Duration::from_secs(5));
    server.wait_for("alice logged in", Duration::from_secs(5));
    drop(server);
    drop(ns);
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.contains(&format!("txsock-dev-{id}")) && !left.contains(&format!("txsock-cli-{id}")),
        "namespaces left behind: {left}"
    );
}
