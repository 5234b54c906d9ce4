//! The transfer frames both core benches time (`session.rs`, criterion; `frame_ratio.rs`,
//! the `cargo xtask bench` row): a logged-in server session, frames made by the client
//! session as in real use, answered by a `MemLedger`.
//!
//! The client asks for nonces in batches of 8 (the protocol's largest batch; the server's
//! ring holds 16), so the benches work in batches: untimed, the client takes 8 nonces, writes
//! 8 transfers, and a fresh ledger is set up ([`Rig::prepare`]); timed, the server handles the
//! frames one by one ([`Rig::handle`]); untimed again, the client checks the 8 receipts
//! ([`Rig::finish`]).

use txsock_core::selftest::Pair;
use txsock_core::session::client::ClientEvent;
use txsock_core::{Amount, Ledger, LedgerReply, LedgerRequest, MemLedger};

/// Nonces per request, and frames per batch.
pub const BATCH: usize = 8;
/// Same length for every id, so every frame has the same length.
const IDS: [&str; BATCH] = ["t-0", "t-1", "t-2", "t-3", "t-4", "t-5", "t-6", "t-7"];

/// The ledger the timed part uses: the two accounts and one batch of journal.
type BenchLedger = MemLedger<2, BATCH>;

/// A logged-in client and server and one batch of transfer frames.
pub struct Rig {
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
    /// `bob` and `alice` registered, `alice` logged in; no batch prepared yet.
    pub fn new() -> Rig {
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

    /// Frame `i` of the prepared batch.
    pub fn frame(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.frames[start..self.ends[i]]
    }

    /// Untimed: 8 nonces to the client, 8 transfer frames from it, a fresh ledger.
    pub fn prepare(&mut self) {
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

    /// Timed: the server handles frame `i` of the batch, end to end (framing, parse, MAC
    /// check, nonce, the ledger, the receipt's MAC and encoding, draining the output).
    #[inline(always)]
    pub fn handle(&mut self, i: usize) {
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
    pub fn finish(&mut self) {
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
