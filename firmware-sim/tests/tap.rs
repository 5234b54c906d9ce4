//! The device on a real TAP interface, reached by the real `txsock client` from another network
//! namespace: `tap-netns.sh` creates both namespaces (documentation addresses 192.0.2.0/24, no
//! route out), `txsock-firmware-sim --tap` runs the device in one, `txsock client` runs in the
//! other, and everything is deleted afterwards. The namespaces, processes and client come from
//! `txsock-tap-kit` (`firmware-sim/tap-kit`), shared with the embassy server's TAP test.
//!
//! Needs root, `/dev/net/tun`, iproute2 and the `txsock` binary, so it is ignored by plain
//! `cargo test`; `cargo xtask test` runs it (step `tap`) with `--ignored --nocapture`. Where the
//! machine cannot run it, it prints `SKIPPED: <reason>` and passes.

use std::time::Duration;
use txsock_tap_kit::{register_log_in_and_transfer, skip_reason, Namespaces, Process};

#[test]
#[ignore = "needs root, /dev/net/tun, network namespaces and the txsock binary: `cargo xtask test` runs it (step tap)"]
fn txsock_client_registers_logs_in_and_transfers_against_the_device_on_a_tap() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let ns = Namespaces::up(&format!("{}", std::process::id() % 100_000_000));
    let mut device =
        Process::start_server("device", &ns, env!("CARGO_BIN_EXE_txsock-firmware-sim"));
    register_log_in_and_transfer(&ns);
    device.wait_for("registered bob", Duration::from_secs(5));
    device.wait_for("alice logged in", Duration::from_secs(5));
    drop(device);
    ns.delete();
}
