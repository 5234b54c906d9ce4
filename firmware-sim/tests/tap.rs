//! The device on a real TAP interface, reached by the real `txsock client` from another network
//! namespace: `tap-netns.sh` creates both namespaces (documentation addresses 192.0.2.0/24, no
//! route out), `txsock-firmware-sim --tap` runs the device in one, `txsock client` runs in the
//! other, and everything is deleted afterwards.
//!
//! Needs root, `/dev/net/tun`, iproute2 and the `txsock` binary, so it is ignored by plain
//! `cargo test`; `cargo xtask test` runs it (step `tap`) with `--ignored --nocapture`. Where the
//! machine cannot run it, it prints `SKIPPED: <reason>` and passes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEVICE: &str = "192.0.2.2";
const PORT: u16 = 11002;
/// The device's minimum PBKDF2 iterations (the simulator's), which the client uses.
const ITERATIONS: &str = "4096";

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

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tap-netns.sh")
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

    fn device_ns(&self) -> String {
        format!("txsock-dev-{}", self.id)
    }

    fn client_ns(&self) -> String {
        format!("txsock-cli-{}", self.id)
    }

    fn tap(&self) -> String {
        format!("txs{}tap", self.id)
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

/// The device process, killed on drop.
struct Device {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Device {
    fn start(ns: &Namespaces) -> Device {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.device_ns()])
            .arg(env!("CARGO_BIN_EXE_txsock-firmware-sim"))
            .args(["--tap", &ns.tap(), "--address", "192.0.2.2/24"])
            .args(["--serve-for", "300"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start txsock-firmware-sim --tap");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("device: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut device = Device {
            child,
            lines,
            seen: Vec::new(),
        };
        device.wait_for("listening on", Duration::from_secs(20));
        device
    }

    /// Waits until the device has printed a line containing `text`.
    fn wait_for(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.seen.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "the device did not print `{text}`; it printed {:?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `txsock`, built beside this test executable (`cargo xtask test` builds it first).
fn txsock() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("txsock");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p txsock-host`; `cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// Runs `txsock client --user USER ARGS` in the client namespace with `password`.
fn client(ns: &Namespaces, user: &str, password: &str, args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.client_ns()])
        .arg(txsock())
        .args(["client", "--server", &format!("{DEVICE}:{PORT}")])
        .args([
            "--user",
            user,
            "--min-iterations",
            ITERATIONS,
            "--timeout",
            "10",
        ])
        .args(args)
        .env("TXSOCK_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("run txsock client");
    println!(
        "$ txsock client --user {user} {}: {}\n{}{}",
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

#[test]
#[ignore = "needs root, /dev/net/tun, network namespaces and the txsock binary: `cargo xtask test` runs it (step tap)"]
fn txsock_client_registers_logs_in_and_transfers_against_the_device_on_a_tap() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let id = format!("{}", std::process::id() % 100_000_000);
    let ns = Namespaces::up(&id);
    let mut device = Device::start(&ns);
    let (alice, bob) = ("alice's password", "bob's password");

    let out = client(&ns, "alice", alice, &["register"]);
    assert!(out.status.success(), "register alice");
    let out = client(&ns, "bob", bob, &["register"]);
    assert!(out.status.success(), "register bob");
    let out = client(&ns, "alice", alice, &["register"]);
    assert_eq!(out.status.code(), Some(3), "a taken name is refused");

    let transfer = ["--json", "transfer", "bob", "1.25", "--id", "tap-1"];
    let out = client(&ns, "alice", alice, &transfer);
    assert!(out.status.success(), "transfer");
    let text = stdout(&out);
    assert!(text.contains("\"status\":\"committed\""), "{text}");
    assert!(text.contains("\"balance\":\"98.75\""), "{text}");
    // The same id again: the original result, no second debit.
    let out = client(&ns, "alice", alice, &transfer);
    assert!(out.status.success(), "transfer retried");
    assert!(stdout(&out).contains("\"balance\":\"98.75\""));

    let out = client(&ns, "alice", "not alice's password", &["balance"]);
    assert_eq!(out.status.code(), Some(3), "a wrong password is refused");
    let out = client(&ns, "alice", alice, &["balance"]);
    assert!(out.status.success() && stdout(&out).contains("98.75"));
    let out = client(&ns, "bob", bob, &["balance"]);
    assert!(out.status.success() && stdout(&out).contains("101.25"));

    device.wait_for("registered bob", Duration::from_secs(5));
    device.wait_for("alice logged in", Duration::from_secs(5));
    drop(device);
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
