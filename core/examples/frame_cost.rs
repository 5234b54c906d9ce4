//! Instruction counts of one transfer frame in a logged-in server session, and of one raw
//! HMAC-SHA256 over the same bytes, for `valgrind --tool=callgrind`, which counts
//! instructions exactly however loaded the machine is (wall-clock benches are not):
//!
//! ```sh
//! cargo build --release -p txsock-core --example frame_cost
//! valgrind --tool=callgrind --toggle-collect='frame_cost::frames' target/release/examples/frame_cost
//! valgrind --tool=callgrind --toggle-collect='frame_cost::hmacs' target/release/examples/frame_cost
//! ```
//!
//! Each run's total `Ir` divided by [`ROUNDS`] × 8 is the cost of one frame (or one HMAC).
//! The frames are the criterion bench's (`benches/session.rs`): made by the client session,
//! eight per batch, each handled by `ServerSession::drive` with a `MemLedger` (parse, MAC
//! check, nonce, ledger, receipt MAC and encoding).

use std::hint::black_box;
use txsock_core::crypto::hmac_sha256;
use txsock_core::selftest::Pair;
use txsock_core::session::client::ClientEvent;
use txsock_core::{Amount, Ledger, LedgerRequest, MemLedger};

/// Batches of eight frames handled under the counter.
const ROUNDS: usize = 200;
const IDS: [&str; 8] = ["t-0", "t-1", "t-2", "t-3", "t-4", "t-5", "t-6", "t-7"];

/// Handles one batch of frames: the counted part.
#[inline(never)]
fn frames(pair: &mut Pair, ledger: &mut MemLedger<2, 8>, batch: &[u8], out: &mut Vec<u8>) {
    let transmit = |bytes: &[u8]| {
        out.extend_from_slice(bytes);
        Ok::<_, std::convert::Infallible>(bytes.len())
    };
    let Ok(used) = pair.server.drive(
        &mut pair.shared,
        ledger,
        pair.now,
        black_box(batch),
        transmit,
        |_| {},
    );
    assert_eq!(used, batch.len());
}

/// Eight raw HMACs over one frame's bytes: the anchor.
#[inline(never)]
fn hmacs(data: &[u8]) -> u8 {
    let key = [0x0b; 32];
    let mut x = 0;
    for _ in 0..8 {
        x ^= hmac_sha256(black_box(&key), black_box(data))[0];
    }
    x
}

fn main() {
    let mut pair = Pair::new(1);
    pair.register_and_login("bob", "bob's password").unwrap();
    pair.reconnect();
    pair.register_and_login("alice", "alice's password")
        .unwrap();
    let accounts: Vec<LedgerRequest> = ["alice", "bob"]
        .iter()
        .map(|name| {
            let account = pair
                .ledger
                .accounts()
                .iter()
                .find(|a| a.user.as_str() == *name)
                .unwrap();
            LedgerRequest::Register {
                user: account.user.clone(),
                verifier: account.verifier.clone(),
            }
        })
        .collect();
    let mut first_frame = Vec::new();
    let mut x = 0u8;
    for _ in 0..ROUNDS {
        pair.client.request_nonces(8).unwrap();
        assert_eq!(pair.step(), Some(ClientEvent::Nonces { available: 8 }));
        let mut batch = Vec::new();
        for id in IDS {
            pair.client.transfer(id, "bob", Amount(1)).unwrap();
            let n = pair.client.poll_transmit().len();
            if first_frame.is_empty() {
                first_frame = pair.client.poll_transmit().to_vec();
            }
            batch.extend_from_slice(pair.client.poll_transmit());
            pair.client.advance_transmit(n);
        }
        let mut ledger = MemLedger::<2, 8>::new(Amount(10_000));
        for request in &accounts {
            ledger.execute(request, pair.now);
        }
        let mut out = Vec::with_capacity(8 * 576);
        frames(&mut pair, &mut ledger, &batch, &mut out);
        x ^= hmacs(&first_frame);
        let mut used = 0;
        let mut committed = 0;
        while used < out.len() {
            used += pair.client.handle_input(&out[used..]);
            while let Some(event) = pair.client.poll_event() {
                match event {
                    ClientEvent::Receipt(r) if r.result.is_ok() => committed += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(committed, 8);
    }
    println!(
        "{} rounds of 8 frames of {} bytes ({x})",
        ROUNDS,
        first_frame.len()
    );
}
