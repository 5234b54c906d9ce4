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
//! Both report elements per second (frames/s, HMACs/s); `cargo xtask bench` prints them and
//! their ratio. A transfer needs two HMACs (the transfer's and the receipt's), but they start
//! from the session's precomputed key states, while the raw HMAC sets its key up (two
//! SHA-256 blocks): for these 172-byte frames both sides hash six blocks (transfer 2 + 1,
//! receipt 2 + 1; raw 2 + 3 + 1), so the ratio would be about 1 if everything but SHA-256
//! were free, and what keeps it below is the session's own work.
//!
//! Wall time only: under valgrind `sha2` cannot use the CPU's SHA extensions, so instruction
//! counts (`examples/frame_cost.rs`) overweight SHA-256 and do not give this ratio.
//!
//! Frames are made by the client session, as in real use. The client asks for nonces in
//! batches of 8 (the protocol's largest batch; the server's ring holds 16), so the loop
//! works in batches: untimed, the client takes 8 nonces, writes 8 transfers, and a fresh
//! ledger is set up; timed, the server handles the frames one by one; untimed again, the
//! client checks the 8 receipts. An iteration count that is not a multiple of 8 finishes
//! its last batch untimed, so every batch is complete and every receipt verified.

use std::hint::black_box;
use std::time::{Duration, Instant as WallClock};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use txsock_core::crypto::hmac_sha256;
use txsock_core::selftest::Pair;
use txsock_core::session::client::ClientEvent;
use txsock_core::{Amount, Ledger, LedgerReply, LedgerRequest, MemLedger};

/// Nonces per request, and frames per batch.
const BATCH: usize = 8;
/// Same length for every id, so every frame has the same length.
const IDS: [&str; BATCH] = ["t-0", "t-1", "t-2", "t-3", "t-4", "t-5", "t-6", "t-7"];

/// The ledger the timed part uses: the two accounts and one batch of journal.
type BenchLedger = MemLedger<2, BATCH>;

struct Rig {
    /// Client and server sessions, logged in as `alice`; `pair.ledger` served the login.
    pair: Pair,
    /// Register requests for `alice` and `bob`, replayed into each fresh ledger.
    accounts: [LedgerRequest; 2],
    ledger: BenchLedger,
    /// The batch's frames, back to back, and where each ends.
    frames: Vec<u8>,
    ends: [usize; BATCH],
    /// The server's output for the batch.
    receipts: Vec<u8>,
}

impl Rig {
    fn new() -> Rig {
        let mut pair = Pair::new(1);
        pair.register_and_login("bob", "bob's password").unwrap();
        pair.reconnect();
        pair.register_and_login("alice", "alice's password")
            .unwrap();
        let accounts = ["alice", "bob"].map(|name| {
            let account = pair
                .ledger
                .accounts()
                .iter()
                .find(|a| a.user.as_str() == name)
                .unwrap();
            LedgerRequest::Register {
                user: account.user.clone(),
                verifier: account.verifier.clone(),
            }
        });
        Rig {
            pair,
            accounts,
            ledger: MemLedger::new(Amount(0)),
            frames: Vec::with_capacity(BATCH * 512),
            ends: [0; BATCH],
            receipts: Vec::with_capacity(BATCH * 576),
        }
    }

    /// Untimed: 8 nonces to the client, 8 transfer frames from it, a fresh ledger.
    fn prepare(&mut self) {
        let p = &mut self.pair;
        p.client.request_nonces(BATCH as u8).unwrap();
        assert_eq!(p.step(), Some(ClientEvent::Nonces { available: BATCH }));
        self.frames.clear();
        for (id, end) in IDS.iter().zip(self.ends.iter_mut()) {
            p.client.transfer(id, "bob", Amount(1)).unwrap();
            let n = p.client.poll_transmit().len();
            self.frames.extend_from_slice(p.client.poll_transmit());
            p.client.advance_transmit(n);
            *end = self.frames.len();
        }
        self.ledger = MemLedger::new(Amount(10_000));
        for request in &self.accounts {
            let reply = self.ledger.execute(request, p.now);
            assert_eq!(reply, LedgerReply::Registered(Ok(())));
        }
        self.receipts.clear();
    }

    /// Timed: the server handles frame `i` of the batch, end to end.
    #[inline(always)]
    fn handle(&mut self, i: usize) {
        let p = &mut self.pair;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let frame = &self.frames[start..self.ends[i]];
        let receipts = &mut self.receipts;
        let transmit = |out: &[u8]| {
            receipts.extend_from_slice(out);
            Ok::<_, std::convert::Infallible>(out.len())
        };
        let Ok(used) = p.server.drive(
            &mut p.shared,
            &mut self.ledger,
            p.now,
            frame,
            transmit,
            |_| {},
        );
        debug_assert_eq!(used, frame.len());
    }

    /// Untimed: the client verifies the batch's receipts; every transfer must have committed.
    fn finish(&mut self) {
        let client = &mut self.pair.client;
        let mut used = 0;
        let mut committed = 0;
        while used < self.receipts.len() {
            used += client.handle_input(&self.receipts[used..]);
            while let Some(event) = client.poll_event() {
                match event {
                    ClientEvent::Receipt(r) if r.result.is_ok() => committed += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(committed, BATCH, "every transfer commits");
    }
}

fn session(c: &mut Criterion) {
    let mut rig = Rig::new();
    rig.prepare();
    let frame_len = rig.ends[0];
    let key = [0x0b; 32];
    let data = rig.frames[..frame_len].to_vec();
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
