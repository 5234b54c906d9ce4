//! What one transfer frame costs a logged-in server session, end to end, next to the
//! HMAC-SHA256 floor.
//!
//! - `session/transfer_frame`: a logged-in [`ServerSession`] takes one valid transfer frame:
//!   framing, JSON parse, MAC verify, nonce check, the ledger request answered by a
//!   [`MemLedger`], the receipt's MAC and encoding, and draining the output. Each iteration
//!   is one such frame.
//! - `session/hmac_sha256/<N>`: one `hmac_sha256` over `N` bytes, `N` being the length of
//!   one of those transfer frames.
//!
//! Both report elements per second (frames/s, HMACs/s). `cargo xtask bench` takes its row
//! from `benches/frame_ratio.rs` instead, which alternates the same two measurements in short
//! rounds: two criterion estimates taken seconds apart on a shared machine move further apart
//! than the margin the row is judged by. A transfer needs two HMACs (the transfer's and the receipt's), but they start
//! from the session's precomputed key states, while the raw HMAC sets its key up (two
//! SHA-256 blocks): for these 172-byte frames both sides hash six blocks (transfer 2 + 1,
//! receipt 2 + 1; raw 2 + 3 + 1), so the ratio would be about 1 if everything but SHA-256
//! were free, and what keeps it below is the session's own work.
//!
//! Wall time only: under valgrind `sha2` cannot use the CPU's SHA extensions, so instruction
//! counts (`examples/frame_cost.rs`) overweight SHA-256 and do not give this ratio.
//!
//! Frames are made by the client session, as in real use, in batches of 8 (`rig`): an
//! iteration count that is not a multiple of 8 finishes its last batch untimed, so every
//! batch is complete and every receipt verified.

mod rig;

use std::hint::black_box;
use std::time::{Duration, Instant as WallClock};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rig::{Rig, BATCH};
use txsock_core::crypto::hmac_sha256;

fn session(c: &mut Criterion) {
    let mut rig = Rig::new();
    rig.prepare();
    let data = rig.frame(0).to_vec();
    let frame_len = data.len();
    let key = [0x0b; 32];
    for i in 0..BATCH {
        rig.handle(i);
    }
    rig.finish();

    let mut group = c.benchmark_group("session");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);

    group.bench_function("transfer_frame", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                rig.prepare();
                let now = left.min(BATCH as u64) as usize;
                let started = WallClock::now();
                for i in 0..now {
                    rig.handle(i);
                }
                timed += started.elapsed();
                for i in now..BATCH {
                    rig.handle(i);
                }
                rig.finish();
                left -= now as u64;
            }
            timed
        })
    });

    group.bench_with_input(
        BenchmarkId::new("hmac_sha256", frame_len),
        &data,
        |b, data| b.iter(|| hmac_sha256(black_box(&key), black_box(data))),
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = session
}
criterion_main!(benches);
