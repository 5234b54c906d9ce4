//! `txsock demo`, as a newcomer runs it: it must narrate every act and exit 0.

use std::process::{Command, Stdio};
use std::time::Duration;
use txsock_e2e::*;

#[test]
fn demo_catches_every_attack_and_exits_zero() {
    let child = Command::new(txsock_bin())
        .args(["demo", "--iterations", "4096"])
        .env_remove("TXSOCK_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn txsock demo");
    let out = output_within(child, Duration::from_secs(180));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for act in [
        "An honest transfer",
        "A tampered transfer",
        "A replayed transfer",
        "A forged reply",
        "A lost reply",
        "Reordered requests",
        "TLS: a proxy that impersonates the server",
        "The ledger and the audit logs",
    ] {
        assert!(text.contains(act), "missing act {act:?}:\n{text}");
    }
    assert_eq!(text.matches("  ✓ ").count(), 9, "{text}");
    assert!(!text.contains('✗'), "{text}");
    assert!(text.contains("rejected code=bad_mac"), "{text}");
    assert!(text.contains("rejected code=unknown_nonce"), "{text}");
    assert!(text.contains("every attack was caught"), "{text}");
}
