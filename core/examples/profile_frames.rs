//! Runs many transfer frames through a logged-in server session, for profilers
//! (`valgrind --tool=callgrind target/release/examples/profile_frames`). Prints the frames
//! handled; the timing lives in `cargo xtask bench`.

use txsock_core::selftest::Pair;
use txsock_core::session::ClientEvent;
use txsock_core::{Amount, Ledger, MemLedger};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let mut p = Pair::new(1);
    p.register_and_login("bob", "bob's password").unwrap();
    p.reconnect();
    p.register_and_login("alice", "alice's password").unwrap();
    let mut frames = 0;
    for round in 0..rounds / 8 {
        p.client.request_nonces(8).unwrap();
        assert!(matches!(p.step(), Some(ClientEvent::Nonces { .. })));
        let mut batch = Vec::new();
        for i in 0..8 {
            p.client
                .transfer(&format!("r{round}-{i}"), "bob", Amount(1))
                .unwrap();
            let n = p.client.poll_transmit().len();
            batch.push(p.client.poll_transmit().to_vec());
            p.client.advance_transmit(n);
        }
        let mut ledger: MemLedger<2, 8> = MemLedger::new(Amount(10_000));
        for account in p.ledger.accounts() {
            let request = txsock_core::LedgerRequest::Register {
                user: account.user.clone(),
                verifier: account.verifier.clone(),
            };
            ledger.execute(&request, p.now);
        }
        for frame in &batch {
            p.server.handle_input(&mut p.shared, p.now, frame);
            let request = p.server.poll_ledger().expect("ledger request");
            let reply = ledger.execute(&request, p.now);
            p.server.handle_ledger(&mut p.shared, p.now, reply);
            while p.server.poll_event().is_some() {}
            let out = p.server.poll_transmit().to_vec();
            p.server.advance_transmit(out.len());
            let mut used = 0;
            while used < out.len() {
                used += p.client.handle_input(&out[used..]);
                while let Some(event) = p.client.poll_event() {
                    assert!(matches!(event, ClientEvent::Receipt(_)), "{event:?}");
                }
            }
            frames += 1;
        }
    }
    println!("{frames} frames");
}
