//! Simulation runs with fixed seeds: the device and simulated clients over a faulty link, in
//! simulated time (each run takes well under a second of wall time).
//!
//! One run is compared with a snapshot (`tests/snapshots/`): its summary, transcript hash
//! included, must not change unless the protocol's bytes or the simulation change. After an
//! intended change, regenerate it with `UPDATE_SNAPSHOTS=1 cargo test -p txsock-firmware-sim
//! --test sim` and review the diff.

use std::path::PathBuf;

use txsock_core::Duration;
use txsock_firmware_sim::link::{LinkConfig, Probability};
use txsock_firmware_sim::sim::{run, SimConfig, SimReport, SESSIONS};

fn config(transfers: u32, loss: f64, reorder: f64, seed: u64) -> SimConfig {
    SimConfig {
        link: LinkConfig {
            loss: Probability::new(loss),
            reorder: Probability::new(reorder),
            ..LinkConfig::default()
        },
        transfers,
        seed,
        ..SimConfig::default()
    }
}

fn run_clean(config: &SimConfig) -> SimReport {
    let report = run(config).unwrap_or_else(|e| panic!("simulation failed: {e}"));
    assert!(report.clean(), "not clean:\n{report}");
    report
}

/// The summary without the wall-clock time (which varies) and the memory line (which follows
/// the core's type sizes, not the simulation).
fn deterministic(report: &SimReport) -> String {
    let mut text: String = report
        .to_string()
        .lines()
        .filter(|line| !line.starts_with("time:") && !line.starts_with("device memory"))
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str(&format!("simulated: {} ms\n", report.simulated.millis()));
    text
}

fn check_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with UPDATE_SNAPSHOTS=1 cargo test -p txsock-firmware-sim \
             --test sim",
            path.display()
        )
    });
    assert_eq!(
        expected,
        actual,
        "the run differs from its snapshot {}; if the change is intended, regenerate it with \
         UPDATE_SNAPSHOTS=1 cargo test -p txsock-firmware-sim --test sim",
        path.display()
    );
}

/// The run: 1,000 transfers at 10% loss with reordering, each committed exactly once,
/// money conserved; compared with its snapshot.
#[test]
fn thousand_transfers_at_ten_percent_loss_with_reordering_complete_exactly_once() {
    let report = run_clean(&config(1000, 0.10, 0.10, 42));
    assert_eq!(report.committed_once, 1000);
    assert_eq!(report.confirmed, 1000);
    assert!(report.link.lost > 50, "{report}");
    assert!(report.link.reordered > 50, "{report}");
    assert!(report.link.retransmissions > 50, "{report}");
    check_snapshot("loss10-reorder10-seed42.txt", &deterministic(&report));
}

/// Determinism: the same seed gives the same transcript hash and the same figures, with
/// several clients and every kind of fault; another seed gives another transcript.
#[test]
fn the_same_seed_gives_the_same_transcript_hash() {
    let mut c = config(300, 0.08, 0.15, 7);
    c.clients = 3;
    c.link.corrupt = Probability::new(0.02);
    let first = run_clean(&c);
    let second = run_clean(&c);
    assert_eq!(first.transcript, second.transcript);
    assert_eq!(deterministic(&first), deterministic(&second));
    c.seed = 8;
    let other = run_clean(&c);
    assert_ne!(first.transcript, other.transcript);
}

/// More clients than the device has sessions: the extra ones get the core's `server_busy`
/// refusal (a clean line, not a TCP reset), retry later, and every transfer still completes
/// exactly once; the device never has more than its sessions open, and its memory is what it
/// was configured with.
#[test]
fn more_clients_than_sessions_get_a_clean_refusal_and_the_others_keep_working() {
    let single = run_clean(&config(10, 0.0, 0.0, 3));
    let mut c = config(700, 0.0, 0.0, 3);
    c.clients = SESSIONS + 3;
    c.stagger = Duration::from_millis(100);
    let report = run_clean(&c);
    assert!(report.busy_refusals >= 3, "{report}");
    assert_eq!(report.device.refused, report.busy_refusals, "{report}");
    assert_eq!(
        report.resets, 0,
        "a client got a reset instead of a refusal:\n{report}"
    );
    assert_eq!(report.peak_sessions, SESSIONS, "{report}");
    assert_eq!(report.device.peak_sessions as usize, SESSIONS, "{report}");
    assert_eq!(report.budget, single.budget, "memory changed with the load");
}

/// A link outage longer than the device's idle timeout: sessions are lost mid-pipeline, the
/// clients reconnect, log in again and re-send the transfers they have no receipt for with the
/// same ids; the ledger's idempotency keeps every transfer exactly once.
#[test]
fn reconnects_after_an_outage_resend_and_stay_exactly_once() {
    let mut c = config(200, 0.05, 0.0, 11);
    c.clients = 2;
    c.link.outage_ms = (3_000, 400_000);
    let report = run_clean(&c);
    assert!(report.reconnects >= 1, "{report}");
    assert!(report.resent >= 1, "{report}");
}

/// A small MTU: requests and responses span several segments.
#[test]
fn a_small_mtu_splits_frames_across_segments() {
    let mut c = config(100, 0.05, 0.05, 5);
    c.link.mtu = 128;
    c.link.delay_ms = 40;
    let report = run_clean(&c);
    assert!(report.link.sent > 400, "{report}");
}

/// Runs stop at the simulated time limit instead of hanging.
#[test]
fn a_run_that_cannot_finish_stops_at_the_time_limit() {
    let mut c = config(10, 0.0, 0.0, 1);
    c.link.outage_ms = (0, u64::MAX / 2);
    c.time_limit = Duration::from_secs(3600);
    let error = run(&c).expect_err("nothing can get through");
    assert!(error.0.contains("time limit"), "{error}");
}
