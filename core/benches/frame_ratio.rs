//! The core row of `cargo xtask bench`: transfer frames parsed, verified, answered and
//! encoded per second, as a fraction of raw HMAC-SHA256 per second over the same bytes,
//! measured so that a shared, loaded machine moves it little.
//!
//! - **A frame** is the criterion bench's (`session/transfer_frame`, the frames of `rig`): a
//!   logged-in server session's `drive` takes one transfer frame and does everything up to
//!   the receipt's bytes leaving (framing, parse, MAC check, nonce, a `MemLedger`, the
//!   receipt's MAC and JSON). Timed in batches of 8, one frame per `drive`, with the batch's
//!   preparation (the client's frames, a fresh ledger) and the receipts' check untimed.
//! - **The anchor** is `hmac_sha256` with a 32-byte key over one of those frames' bytes,
//!   timed in batches of 8 back to back.
//! - **Alternating rounds.** [`ROUNDS`] rounds (after one not counted, to warm up), each
//!   timing [`BATCHES`] batches of frames and as many batches of HMACs, the order swapped
//!   every round. Each side of a round is the median batch, less the clock's own cost (the
//!   median of empty timings, measured first), divided by 8. A batch takes a few µs, so
//!   most run unpreempted; the median is the unpreempted cost, where a mean (criterion's
//!   slope) adds whatever share of the batches another process interrupted. The round's
//!   ratio is its HMAC time over its frame time: both sides within a few milliseconds of
//!   each other, on a machine in the same state.
//! - **The figure** is the median of the rounds' ratios; the spread (smallest, quartiles,
//!   largest) says how far one round could be trusted. The frame and HMAC rates printed
//!   beside it are the medians of the rounds' sides.
//!
//! It prints a human summary and one line for `cargo xtask bench` to read:
//! `frame_ratio: bytes=… rounds=… frame_ns=… hmac_ns=… ratio=… ratio_min=… ratio_q1=…
//! ratio_q3=… ratio_max=… mean_ratio=… timer_ns=…` (`mean_ratio`: the same rounds with each
//! side's mean batch instead of its median, for comparison with criterion).
//!
//! ```sh
//! cargo bench -p txsock-core --bench frame_ratio
//! ```

mod rig;

use std::hint::black_box;
use std::time::Instant;

use rig::{Rig, BATCH};
use txsock_core::crypto::hmac_sha256;

/// Rounds counted (odd, so the median is one round's ratio).
const ROUNDS: usize = 51;
/// Batches of 8 per side per round: about 10 ms of frames (with their untimed preparation)
/// and 3 ms of HMACs, so a round's two sides are close in time and the whole run takes about
/// half a second on an idle machine.
const BATCHES: usize = 400;

/// One side of a round: the median and the mean nanoseconds per frame (or per HMAC).
#[derive(Clone, Copy)]
struct Side {
    median: f64,
    mean: f64,
}

/// Median and mean of `batches` (nanoseconds per batch of 8), less `timer`, per element.
fn side(batches: &mut [f64], timer: f64) -> Side {
    batches.sort_by(f64::total_cmp);
    let mean = batches.iter().sum::<f64>() / batches.len() as f64;
    let per = |batch: f64| (batch - timer) / BATCH as f64;
    Side {
        median: per(quantile(batches, 0.5)),
        mean: per(mean),
    }
}

/// The value at fraction `q` of `sorted` (nearest rank below).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// Nanoseconds of an empty timing (`Instant::now` and `elapsed`): the median of many.
fn timer_cost() -> f64 {
    let mut times: Vec<f64> = (0..10_001)
        .map(|_| {
            let started = Instant::now();
            black_box(());
            started.elapsed().as_nanos() as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    quantile(&times, 0.5)
}

/// [`BATCHES`] batches of 8 transfer frames, each timed.
fn frames(rig: &mut Rig, timer: f64) -> Side {
    let mut times = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        rig.prepare();
        let started = Instant::now();
        for i in 0..BATCH {
            rig.handle(i);
        }
        times.push(started.elapsed().as_nanos() as f64);
        rig.finish();
    }
    side(&mut times, timer)
}

/// [`BATCHES`] batches of 8 raw HMAC-SHA256 over `data`, each timed.
fn hmacs(data: &[u8], timer: f64) -> Side {
    let key = [0x0b; 32];
    let mut times = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let started = Instant::now();
        for _ in 0..BATCH {
            black_box(hmac_sha256(black_box(&key), black_box(data)));
        }
        times.push(started.elapsed().as_nanos() as f64);
    }
    side(&mut times, timer)
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this bench has nothing to choose.
    let mut rig = Rig::new();
    rig.prepare();
    let data = rig.frame(0).to_vec();
    for i in 0..BATCH {
        rig.handle(i);
    }
    rig.finish();
    let timer = timer_cost();

    let mut rounds: Vec<(Side, Side)> = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let (frame, hmac) = if round % 2 == 0 {
            let frame = frames(&mut rig, timer);
            (frame, hmacs(&data, timer))
        } else {
            let hmac = hmacs(&data, timer);
            (frames(&mut rig, timer), hmac)
        };
        // Round 0 warms caches, branch predictors and the CPU's clock up: not counted.
        if round > 0 {
            rounds.push((frame, hmac));
        }
    }

    let sorted = |f: &dyn Fn(&(Side, Side)) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let ratios = sorted(&|(f, h)| h.median / f.median);
    let mean_ratios = sorted(&|(f, h)| h.mean / f.mean);
    let frame_ns = quantile(&sorted(&|(f, _)| f.median), 0.5);
    let hmac_ns = quantile(&sorted(&|(_, h)| h.median), 0.5);
    let ratio = quantile(&ratios, 0.5);
    let (q1, q3) = (quantile(&ratios, 0.25), quantile(&ratios, 0.75));
    let (min, max) = (ratios[0], ratios[ratios.len() - 1]);
    let mean_ratio = quantile(&mean_ratios, 0.5);

    println!(
        "{ROUNDS} alternating rounds of {BATCHES} batches of {BATCH} ({} bytes a frame; \
         the clock's own cost {timer:.0} ns a timing, subtracted)",
        data.len()
    );
    println!(
        "transfer frame {frame_ns:.0} ns ({:.0}/s), raw HMAC-SHA256 {hmac_ns:.0} ns ({:.0}/s)",
        1e9 / frame_ns,
        1e9 / hmac_ns
    );
    println!(
        "ratio (median of the rounds' ratios) {ratio:.3}; spread: smallest {min:.3}, \
         quartiles {q1:.3} to {q3:.3}, largest {max:.3}; from the rounds' means instead of \
         medians {mean_ratio:.3}"
    );
    println!(
        "frame_ratio: bytes={} rounds={ROUNDS} frame_ns={frame_ns:.1} hmac_ns={hmac_ns:.1} \
         ratio={ratio:.4} ratio_min={min:.4} ratio_q1={q1:.4} ratio_q3={q3:.4} \
         ratio_max={max:.4} mean_ratio={mean_ratio:.4} timer_ns={timer:.0}",
        data.len()
    );
}
