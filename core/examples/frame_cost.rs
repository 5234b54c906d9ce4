//! What one transfer frame costs a logged-in server session, next to one raw HMAC-SHA256
//! over the same bytes, in two ways that a loaded machine disturbs little:
//!
//! - `frame_cost time` (wall clock, native code): handles 20,000 batches of eight frames,
//!   timing each batch and each batch's eight raw HMACs, and prints the 1st, 10th and 50th
//!   percentile per frame and per HMAC and their ratio. A batch takes about 10 µs, so most
//!   batches run without being preempted; the low percentiles are the machine's speed.
//!   `frame_cost time1` hands the session one frame per `drive` call, as the criterion bench
//!   does.
//! - instruction counts under `valgrind --tool=callgrind`:
//!
//! ```sh
//! cargo build --release -p txsock-core --example frame_cost
//! valgrind --tool=callgrind --toggle-collect='frame_cost::frames' target/release/examples/frame_cost
//! valgrind --tool=callgrind --toggle-collect='frame_cost::hmacs' target/release/examples/frame_cost
//! ```
//!
//!   Each run's total `Ir` divided by [`ROUNDS`] × 8 is the cost of one frame (or one HMAC).
//!   **Instruction counts do not give the ratio**: valgrind does not emulate the SHA
//!   extensions (SHA-NI), so under it `sha2` runs its portable SHA-256 (about 3,400
//!   instructions a block) where the CPU runs a few dozen SHA instructions. Both MACs of a
//!   frame and the whole anchor are SHA-256, so the counts weigh SHA far more than the CPU
//!   does and made the ratio look four times better than the wall clock (0.52 against
//!   0.13). They still rank the rest of the frame's work (parse, encode, copies) exactly.
//!
//! The frames are the core benches' (`benches/rig`): made by the client session,
//! eight per batch, each handled by `ServerSession::drive` with a `MemLedger` (parse, MAC
//! check, nonce, ledger, receipt MAC and encoding).

use std::hint::black_box;
use std::time::{Duration, Instant};
use txsock_core::crypto::hmac_sha256;
use txsock_core::selftest::Pair;
use txsock_core::session::client::ClientEvent;
use txsock_core::{Amount, Ledger, LedgerRequest, MemLedger};

/// Batches of eight frames handled under the counter (callgrind mode).
const ROUNDS: usize = 200;
/// Batches timed in `time` mode.
const TIMED_ROUNDS: usize = 20_000;
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
    let mode = std::env::args().nth(1);
    let one_by_one = mode.as_deref() == Some("time1");
    let timing = one_by_one || mode.as_deref() == Some("time");
    let rounds = if timing { TIMED_ROUNDS } else { ROUNDS };
    let mut frame_times = Vec::with_capacity(rounds);
    let mut hmac_times = Vec::with_capacity(rounds);
    let mut first_frame = Vec::new();
    let mut x = 0u8;
    for _ in 0..rounds {
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
        // Where each frame ends, found before the clock starts (as the criterion bench does).
        let ends: Vec<usize> = (0..batch.len()).filter(|&i| batch[i] == b'\n').collect();
        let started = Instant::now();
        if one_by_one {
            let mut at = 0;
            for &end in &ends {
                frames(&mut pair, &mut ledger, &batch[at..=end], &mut out);
                at = end + 1;
            }
        } else {
            frames(&mut pair, &mut ledger, &batch, &mut out);
        }
        frame_times.push(started.elapsed());
        let started = Instant::now();
        x ^= hmacs(&first_frame);
        hmac_times.push(started.elapsed());
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
        rounds,
        first_frame.len()
    );
    if timing {
        let per = |times: &mut Vec<Duration>, q: usize| {
            times.sort();
            times[times.len() * q / 100].as_secs_f64() * 1e9 / 8.0
        };
        for q in [1, 10, 50] {
            let (f, h) = (per(&mut frame_times, q), per(&mut hmac_times, q));
            println!(
                "percentile {q:>2} of batches: {f:.0} ns per frame, {h:.0} ns per raw HMAC, \
                 ratio {:.3}",
                h / f
            );
        }
    }
}
