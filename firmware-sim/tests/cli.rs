//! The `txsock-firmware-sim` binary: the acceptance command and usage errors.

use std::process::Command;

use txsock_firmware_sim::sweep;

fn sim(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_txsock-firmware-sim"))
        .args(args)
        .output()
        .expect("run txsock-firmware-sim");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `txsock-firmware-sim --loss 0.1 --transfers 1000` prints a clean summary and exits 0.
#[test]
fn the_acceptance_run_prints_a_clean_summary() {
    let (code, out, err) = sim(&["--loss", "0.1", "--transfers", "1000"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for expected in [
        "transfers: 1000/1000 completed exactly once",
        "money conserved: yes",
        "TCP retransmissions",
        "s simulated",
        "s wall",
        "device memory (static)",
        "transcript: ",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
    assert!(err.is_empty(), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--loss", "1.5"][..],
        &["--mtu", "20"],
        &["--clients", "0"],
        &["--transfers"],
        &["--bogus"],
        &["--outage", "5"],
        &["--clock-jump", "5"],
        &["--restart-at", "5,x"],
        &["--sweep", "10", "--jobs", "0"],
        &["--sweep", "10", "--tap", "tap0"],
    ] {
        let (code, _, err) = sim(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    let (code, out, _) = sim(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--tap NAME"));
    assert!(out.contains("--sweep N"));
    // The sweep's ranges as drawn.
    let clients = format!("1-{} clients", sweep::MAX_SWEEP_CLIENTS);
    let transfers = format!("1-{} transfers", sweep::MAX_TRANSFERS);
    assert!(out.contains(&clients) && out.contains(&transfers), "{out}");
}
