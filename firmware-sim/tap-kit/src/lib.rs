//! The test kit of the TAP tests: a txsock server (firmware-sim's device, or the embassy-net
//! server) on a real TAP interface in one network namespace, the real `txsock client` (and
//! `txsock mitm`) in another, both made by `firmware-sim/tap-netns.sh` (documentation addresses
//! 192.0.2.0/24, no route out) and deleted afterwards.
//!
//! Used by `firmware-sim/tests/tap.rs` and `firmware-sim/embassy/tests/tap.rs` (a workspace of
//! its own, hence a crate rather than a module): standard library only, so that it adds no
//! dependency to either. Besides the set-up, it holds the checks every server on a TAP passes
//! ([`register_log_in_and_transfer`]); the tests add their own.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The server's address and prefix on the TAP interface (`--address`), as `tap-netns.sh`
/// expects it; the client's side is 192.0.2.1.
pub const SERVER_ADDRESS: &str = "192.0.2.2/24";

/// Where the client reaches the server (txsock's port).
pub const SERVER: &str = "192.0.2.2:11002";

/// The servers' minimum PBKDF2 iterations (the simulator's), which the client uses.
pub const ITERATIONS: &str = "4096";

/// Why this machine cannot run a TAP test, if it cannot: not root, no `/dev/net/tun`, no
/// iproute2, or no network namespaces (the test then prints `SKIPPED: <reason>` and passes).
pub fn skip_reason() -> Option<String> {
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
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (`ip`) is not installed".into());
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
        Err(e) => Some(format!("cannot run `ip netns add`: {e}")),
    }
}

/// `firmware-sim/tap-netns.sh`, beside this crate.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tap-netns.sh")
}

/// The namespaces of one test run (`tap-netns.sh up ID`), deleted on drop.
pub struct Namespaces {
    id: String,
}

impl Namespaces {
    /// Creates the namespaces tagged `id` (1 to 8 characters of 0-9 a-z); panics if they
    /// cannot be made.
    pub fn up(id: &str) -> Namespaces {
        let out = Command::new("bash")
            .arg(script())
            .args(["up", id])
            .output()
            .expect("run tap-netns.sh");
        // Made before the check, so that whatever `up` created half-way is deleted on drop.
        let ns = Namespaces { id: id.to_owned() };
        assert!(
            out.status.success(),
            "tap-netns.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ns
    }

    /// The TAP interface, in the server's namespace, that the server's `--tap` opens.
    pub fn tap(&self) -> String {
        format!("txs{}tap", self.id)
    }

    /// `program` run inside the server's namespace.
    pub fn in_server(&self, program: impl AsRef<OsStr>) -> Command {
        self.exec_in(&format!("txsock-dev-{}", self.id), program)
    }

    /// `program` run inside the client's namespace.
    pub fn in_client(&self, program: impl AsRef<OsStr>) -> Command {
        self.exec_in(&format!("txsock-cli-{}", self.id), program)
    }

    fn exec_in(&self, namespace: &str, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", namespace]).arg(program);
        command
    }

    /// Deletes the namespaces and checks that none is left behind.
    pub fn delete(self) {
        let id = self.id.clone();
        drop(self);
        let left = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let left = String::from_utf8_lossy(&left.stdout);
        assert!(
            !left.contains(&format!("txsock-dev-{id}"))
                && !left.contains(&format!("txsock-cli-{id}")),
            "namespaces left behind: {left}"
        );
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

/// A process whose stdout lines are echoed (prefixed with its name) and collected, killed on
/// drop.
pub struct Process {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    /// Starts `command` (stdin closed, stderr inherited) as `name`.
    pub fn start(name: &'static str, mut command: Command) -> Process {
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

    /// Starts a server (`server`, a txsock server binary taking `--tap`, `--address` and
    /// `--serve-for`) in the server's namespace on its TAP interface, and waits until it
    /// listens.
    pub fn start_server(name: &'static str, ns: &Namespaces, server: impl AsRef<OsStr>) -> Process {
        let mut command = ns.in_server(server);
        command
            .args(["--tap", &ns.tap(), "--address", SERVER_ADDRESS])
            .args(["--serve-for", "300"]);
        let mut process = Process::start(name, command);
        process.wait_for("listening on", Duration::from_secs(20));
        process
    }

    /// Waits until the process has printed `count` lines containing `text` in all; panics,
    /// with what it printed, after `limit`.
    pub fn wait_for_count(&mut self, text: &str, count: usize, limit: Duration) {
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

    /// Waits until the process has printed a line containing `text`.
    pub fn wait_for(&mut self, text: &str, limit: Duration) {
        self.wait_for_count(text, 1, limit);
    }

    /// How many lines seen so far contain `text`.
    pub fn count(&mut self, text: &str) -> usize {
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

/// `txsock`: `TXSOCK_BIN`, else beside the running test executable (`cargo xtask test` builds
/// it into the same target directory).
pub fn txsock() -> PathBuf {
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
         same target directory; `cargo xtask test` does) or set TXSOCK_BIN",
        bin.display()
    );
    bin
}

/// Runs `txsock client --server SERVER --user USER ARGS` in the client namespace with
/// `password`, and echoes what it printed.
pub fn client(ns: &Namespaces, server: &str, user: &str, password: &str, args: &[&str]) -> Output {
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

/// What a finished command printed on stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The password of alice, registered by [`register_log_in_and_transfer`].
pub const ALICE: &str = "alice's password";

/// The password of bob, registered by [`register_log_in_and_transfer`].
pub const BOB: &str = "bob's password";

/// The checks every txsock server on a TAP passes, through the real client at [`SERVER`]:
/// alice and bob register (100.00 each); a taken name and a wrong password are refused (exit
/// 3); alice sends bob 1.25 (id `tap-1`), committed, and the same id sent again gets the
/// original result and no second debit: balances 98.75 and 101.25 afterwards.
pub fn register_log_in_and_transfer(ns: &Namespaces) {
    let out = client(ns, SERVER, "alice", ALICE, &["register"]);
    assert!(out.status.success(), "register alice");
    let out = client(ns, SERVER, "bob", BOB, &["register"]);
    assert!(out.status.success(), "register bob");
    let out = client(ns, SERVER, "alice", ALICE, &["register"]);
    assert_eq!(out.status.code(), Some(3), "a taken name is refused");
    let out = client(ns, SERVER, "alice", "not alice's password", &["balance"]);
    assert_eq!(out.status.code(), Some(3), "a wrong password is refused");

    let transfer = ["--json", "transfer", "bob", "1.25", "--id", "tap-1"];
    let out = client(ns, SERVER, "alice", ALICE, &transfer);
    assert!(out.status.success(), "transfer");
    let text = stdout(&out);
    assert!(text.contains("\"status\":\"committed\""), "{text}");
    assert!(text.contains("\"balance\":\"98.75\""), "{text}");
    // The same id again: the original result, no second debit.
    let out = client(ns, SERVER, "alice", ALICE, &transfer);
    assert!(out.status.success(), "transfer retried");
    assert!(stdout(&out).contains("\"balance\":\"98.75\""));

    let out = client(ns, SERVER, "alice", ALICE, &["balance"]);
    assert!(out.status.success() && stdout(&out).contains("98.75"));
    let out = client(ns, SERVER, "bob", BOB, &["balance"]);
    assert!(out.status.success() && stdout(&out).contains("101.25"));
}
