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
//! The namespaces, processes and clients come from `txsock-tap-kit` (`firmware-sim/tap-kit`),
//! shared with the device's TAP test (`firmware-sim/tests/tap.rs`).
//!
//! Needs root, `/dev/net/tun`, iproute2 and the `txsock` binary (`TXSOCK_BIN`, else beside
//! this test executable), so it is ignored by plain `cargo test`; `cargo xtask test` runs it
//! (step `embassy`) with `--ignored --nocapture`. Where the machine cannot run it, it prints
//! `SKIPPED: <reason>` and passes.

use std::time::Duration;
use txsock_tap_kit::{
    client, register_log_in_and_transfer, skip_reason, stdout, txsock, Namespaces, Process, ALICE,
    BOB, SERVER,
};

/// The server's session tasks (`txsock-embassy-tap`'s `SESSIONS`).
const SESSIONS: usize = 4;

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
    let ns = Namespaces::up(&format!("e{}", std::process::id() % 10_000_000));
    let mut server = Process::start_server("server", &ns, env!("CARGO_BIN_EXE_txsock-embassy-tap"));
    // Registration, login, a transfer and its id again: as on the device.
    register_log_in_and_transfer(&ns);
    let (alice, bob) = (ALICE, BOB);

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
    ns.delete();
}
