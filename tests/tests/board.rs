//! The txsock device on a board, end to end: firmware-sim/board booted under QEMU
//! (`mps2-an386`, Cortex-M4, its LAN9118 Ethernet controller on QEMU's user-mode network,
//! forwarded from a free loopback port), reached by the real `txsock client`, `txsock mitm`
//! and `txsock stress`.
//!
//! Needs QEMU, the board image and a provisioned flash file, so it is ignored by plain `cargo
//! test`; `cargo xtask test` (step `board`) builds them and runs it with `--ignored`, passing
//! `TXSOCK_BOARD_ELF` (the image) and `TXSOCK_BOARD_FLASH` (a freshly provisioned flash file,
//! copied for the board booted here). The board's ledger is the flash ledger, so the test ends
//! with a power cut (SIGKILL of QEMU) in the middle of transfers and a reboot.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use txsock_e2e::*;

/// The device budget of the design brief: flash, RAM, peak stack (bytes), as `cargo xtask
/// qemu` enforces it for the device's images (xtask/src/qemu.rs): the test fails when the
/// board is over it.
const FLASH_BUDGET: u64 = 96 * 1024;
const RAM_BUDGET: u64 = 48 * 1024;
const STACK_BUDGET: u64 = 8 * 1024;

/// One boot of the board, killed on drop. QEMU's output (the image's semihosting stdout)
/// goes to a file, never a pipe: see docs/PORTING.md.
struct Board {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{name} is not set: run this test through `cargo xtask test` (step board)")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Board {
    /// Boots the image in `dir` (where its `flash.bin` is) and waits until it listens.
    fn boot(dir: &Path, port: u16, boot: u32) -> Board {
        let log = dir.join(format!("board-{boot}.log"));
        let out = std::fs::File::create(&log).expect("board log");
        let child = Command::new("qemu-system-arm")
            .current_dir(dir)
            .args(["-cpu", "cortex-m4", "-machine", "mps2-an386"])
            .args(["-display", "none", "-monitor", "none", "-serial", "none"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-nic")
            .arg(format!(
                "user,model=lan9118,restrict=on,hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:11002"
            ))
            .arg("-kernel")
            .arg(env_path("TXSOCK_BOARD_ELF"))
            .stdin(Stdio::null())
            .stderr(out.try_clone().expect("board log"))
            .stdout(out)
            .spawn()
            .expect("start qemu-system-arm");
        let board = Board {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // The footprint line comes after the whole `listening` line (semihosting writes a
        // line in pieces).
        assert!(
            board.wait_for("board footprint", Duration::from_secs(60)),
            "the board did not start:\n{}",
            board.output()
        );
        board
    }

    /// What the board printed so far.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for the board to print `text`.
    fn wait_for(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.output().contains(text) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Kills QEMU at once (SIGKILL): the board loses power.
    fn power_cut(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(board: &Board, user: &str, args: &[&str]) -> ClientRun {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    let run = run_client(board.addr, &all, Some(&password(user)), "");
    println!(
        "$ txsock client --user {user} {}: exit {}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

fn balance(board: &Board, user: &str) -> String {
    let run = client(board, user, &["--json", "balance"]);
    assert_eq!(run.code, 0, "balance of {user}: {run:?}");
    run.json()[0]["balance"]
        .as_str()
        .expect("a balance")
        .to_owned()
}

/// The salt the board answers for a user it does not have: derived from the device secret, so
/// the same across reboots exactly when the provisioned secret is.
fn unknown_user_salt(board: &Board) -> String {
    let stream = TcpStream::connect(board.addr).expect("connect to the board");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let attempt = LineConn::new(stream).login("nobody-here", "whatever");
    let challenge: Value = serde_json::from_str(&attempt.challenge).expect("a JSON challenge");
    challenge["salt"].as_str().expect("a salt").to_owned()
}

/// The board's last footprint line's `key=<bytes>`, and the largest `stack_peak` it printed.
fn footprint(board: &Board, key: &str) -> u64 {
    let output = board.output();
    let values = output
        .lines()
        .filter(|line| line.starts_with("board footprint "))
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        });
    values
        .max()
        .unwrap_or_else(|| panic!("no `{key}=` in a footprint line:\n{output}"))
}

#[test]
#[ignore = "needs QEMU and the board image: `cargo xtask test` runs it (step board)"]
fn the_real_tools_work_against_the_device_on_the_emulated_board() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(env_path("TXSOCK_BOARD_FLASH"), dir.path().join("flash.bin"))
        .expect("copy the provisioned flash");
    let port = free_port();
    let board = Board::boot(dir.path(), port, 0);
    let output = board.output();
    assert!(output.contains("ID_REV 0x01180001"), "{output}");
    assert!(output.contains("boot 0,"), "{output}");
    assert!(output.contains("link up"), "{output}");

    // Register, log in, transfer; a retried id returns the original result.
    assert_eq!(client(&board, "alice", &["register"]).code, 0);
    assert_eq!(client(&board, "bob", &["register"]).code, 0);
    assert_eq!(
        client(&board, "alice", &["register"]).code,
        3,
        "a taken name is refused"
    );
    let transfer = ["--json", "transfer", "bob", "12.50", "--id", "board-1"];
    for attempt in ["first", "retried"] {
        let run = client(&board, "alice", &transfer);
        assert_eq!(run.code, 0, "{attempt} transfer: {run:?}");
        let receipt = &run.json()[0];
        assert_eq!(receipt["status"], "committed", "{attempt}: {receipt}");
        assert_eq!(receipt["balance"], "87.50", "{attempt}: {receipt}");
    }
    assert_eq!(
        client(
            &board,
            "alice",
            &["--json", "transfer", "bob", "500.00", "--id", "board-2"]
        )
        .code,
        3,
        "an overdraft is refused"
    );
    let wrong = run_client(
        board.addr,
        &["--user", "alice", "balance"],
        Some("not alice's password"),
        "",
    );
    assert_eq!(wrong.code, 3, "a wrong password is refused: {wrong:?}");
    assert_eq!(balance(&board, "alice"), "87.50");
    assert_eq!(balance(&board, "bob"), "112.50");
    assert!(board.wait_for("registered bob", Duration::from_secs(5)));
    assert!(board.wait_for("alice logged in", Duration::from_secs(5)));

    // A man in the middle alters a transfer: the board refuses its MAC, nothing moves, and the
    // same id sent honestly afterwards commits.
    let mitm = Mitm::start_upstream(board.addr, "tamper", &[]);
    let run = run_client(
        mitm.addr,
        &[
            "--json", "--user", "alice", "transfer", "bob", "5.00", "--id", "board-t",
        ],
        Some(&password("alice")),
        "",
    );
    assert_eq!(run.code, 4, "the tampering is caught: {run:?}");
    assert!(!mitm.actions("TAMPER").is_empty(), "{:?}", mitm.log());
    drop(mitm);
    assert!(
        board.wait_for("rejected a frame: bad_mac", Duration::from_secs(5)),
        "{}",
        board.output()
    );
    assert_eq!(
        balance(&board, "alice"),
        "87.50",
        "the altered transfer moved nothing"
    );
    let run = client(
        &board,
        "alice",
        &["--json", "transfer", "bob", "5.00", "--id", "board-t"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()[0]["balance"], "82.50");

    // A short, bounded load: transfers verified by their receipts, no integrity failure.
    let stress = Command::new(txsock_bin())
        .args(["stress", "load", "--server", &board.addr.to_string()])
        .args([
            "--clients",
            "2",
            "--pipeline",
            "2",
            "--duration",
            "3s",
            "--json",
        ])
        .current_dir(dir.path())
        .env_remove("TXSOCK_CONFIG")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start txsock stress");
    let out = output_within(stress, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "txsock stress load failed: {text}");
    let report: Value = serde_json::from_str(&text).expect("stress JSON");
    let committed = report["transfers"]["committed"].as_u64().unwrap_or(0);
    let errors = report["errors"].as_object().expect("errors");
    println!(
        "stress load against the board: {committed} transfers committed, p50 {} us, errors {errors:?}",
        report["latency_us"]["p50"]
    );
    assert!(committed > 0, "no transfer committed: {text}");
    assert!(
        !errors.keys().any(|key| key.contains("integrity")),
        "integrity failures: {errors:?}"
    );

    // The image's footprint against the device budget (printed as it runs; stack painting).
    assert!(board.wait_for("board footprint", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(2_500)); // one more footprint check after the load
    let (flash, ram, stack) = (
        footprint(&board, "flash"),
        footprint(&board, "ram"),
        footprint(&board, "stack_peak"),
    );
    let verdict = |bytes: u64, budget: u64| if bytes <= budget { "within" } else { "OVER" };
    println!(
        "board footprint: flash={flash} (budget {FLASH_BUDGET}: {}) ram={ram} (budget \
         {RAM_BUDGET}: {}) stack_peak={stack} (budget {STACK_BUDGET}: {})",
        verdict(flash, FLASH_BUDGET),
        verdict(ram, RAM_BUDGET),
        verdict(stack, STACK_BUDGET)
    );
    assert!(
        flash > 0 && ram > 0 && stack > 0,
        "a footprint line with every figure"
    );
    let over: Vec<String> = [
        ("flash", flash, FLASH_BUDGET),
        ("ram", ram, RAM_BUDGET),
        ("stack_peak", stack, STACK_BUDGET),
    ]
    .into_iter()
    .filter(|&(_, bytes, budget)| bytes > budget)
    .map(|(figure, bytes, budget)| format!("{figure}={bytes} > budget {budget}"))
    .collect();
    assert!(
        over.is_empty(),
        "the board image is over the device budget: {} (the peak stack is the largest the \
         board printed, after the load above; see docs/PORTING.md, \"Measured footprint\")",
        over.join("; ")
    );

    // A power cut under load: alice sends 1.00 transfers one after another while QEMU is
    // killed with SIGKILL. After the reboot every acknowledged transfer is there exactly once
    // (sent again, it is answered as already committed), the one in flight is retried with its
    // id and moves money at most once, and the balances add up.
    let salt = unknown_user_salt(&board);
    let (alice_before, bob_before) = (
        cents(&balance(&board, "alice")),
        cents(&balance(&board, "bob")),
    );
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(Mutex::new(None));
    let sender = {
        let (acknowledged, in_flight, addr) = (acknowledged.clone(), in_flight.clone(), board.addr);
        std::thread::spawn(move || {
            for n in 0..100 {
                let id = format!("board-cut-{n}");
                *in_flight.lock().unwrap() = Some(id.clone());
                let run = run_client(
                    addr,
                    &[
                        "--json", "--user", "alice", "transfer", "bob", "1.00", "--id", &id,
                    ],
                    Some(&password("alice")),
                    "",
                );
                if run.code != 0 {
                    return; // the board went away: this one's outcome is unknown
                }
                assert_eq!(run.json()[0]["status"], "committed", "{run:?}");
                acknowledged.lock().unwrap().push(id);
            }
            *in_flight.lock().unwrap() = None;
        })
    };
    while acknowledged.lock().unwrap().len() < 3 && !sender.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Then at a random moment within about one transfer's time, so that runs cut at different
    // points of a transfer (connecting, logging in, committing, answering).
    let delay = rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 200;
    std::thread::sleep(Duration::from_millis(u64::from(delay)));
    board.power_cut();
    sender.join().expect("the sending thread");
    let acknowledged = acknowledged.lock().unwrap().clone();
    let in_flight = in_flight.lock().unwrap().clone();
    println!(
        "power cut {delay} ms after the third acknowledgement: {} acknowledged transfers, in \
         flight: {in_flight:?}",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 3);

    let board = Board::boot(dir.path(), port, 1);
    assert!(board.output().contains("boot 1,"), "{}", board.output());
    assert_eq!(
        unknown_user_salt(&board),
        salt,
        "the device secret survived the reboot"
    );
    for id in &acknowledged {
        let run = client(
            &board,
            "alice",
            &["--json", "transfer", "bob", "1.00", "--id", id],
        );
        assert_eq!(run.code, 0, "{run:?}");
        let receipt = &run.json()[0];
        assert_eq!(receipt["status"], "committed", "{id} lost: {receipt}");
        assert_eq!(receipt["already_committed"], true, "{id} lost: {receipt}");
    }
    let mut moved = acknowledged.len() as i64;
    if let Some(id) = &in_flight {
        let run = client(
            &board,
            "alice",
            &["--json", "transfer", "bob", "1.00", "--id", id],
        );
        assert_eq!(run.code, 0, "the transfer in flight, retried: {run:?}");
        moved += 1;
    }
    assert_eq!(cents(&balance(&board, "alice")), alice_before - 100 * moved);
    assert_eq!(cents(&balance(&board, "bob")), bob_before + 100 * moved);
    println!("{}", board.output());
}

/// An amount such as "87.50" in cents.
fn cents(amount: &str) -> i64 {
    let (units, hundredths) = amount.split_once('.').expect("two decimals");
    units.parse::<i64>().expect("units") * 100 + hundredths.parse::<i64>().expect("cents")
}
