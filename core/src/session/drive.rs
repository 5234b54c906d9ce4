//! The server's drive loop as steps, so that a synchronous and an asynchronous driver run the
//! same loop.
//!
//! The loop is what [`ServerSession::drive`] has always done: feed input until the session
//! takes no more, answer its ledger request, hand out its events, offer its output, and go
//! round again until a whole pass makes no progress. [`DriveLoop`] holds the loop's position
//! and decides every step; a driver only performs the step it is given, with or without an
//! `.await`:
//!
//! ```ignore
//! let mut steps = DriveLoop::new();
//! loop {
//!     match steps.next(&mut session, &mut shared, now, input) {
//!         DriveStep::Ledger(request) => {
//!             let reply = ledger.execute(&request, now); // or `.await` an async ledger
//!             steps.answer(&mut session, &mut shared, now, reply);
//!         }
//!         DriveStep::Event(event) => log(event),
//!         DriveStep::Transmit => {
//!             let n = write(session.poll_transmit())?; // or `.await` a stream
//!             steps.transmitted(&mut session, n);
//!         }
//!         DriveStep::Done { consumed } => break consumed,
//!     }
//! }
//! ```
//!
//! [`ServerSession::drive`] is that loop over a synchronous [`Ledger`](crate::Ledger);
//! `asynch::drive` (feature `async`) is the same loop with awaits. Neither
//! decides anything on its own.

use crate::ledger::{LedgerReply, LedgerRequest};
use crate::session::server::{PipelineQueue, ServerEvent, ServerSession, ServerShared};
use crate::time::Instant;
use rand_core::{CryptoRng, RngCore};

/// What a driver does next; returned by [`DriveLoop::next`].
#[derive(Debug)]
#[non_exhaustive]
pub enum DriveStep {
    /// Answer this ledger request and hand the reply to [`DriveLoop::answer`] before the
    /// next call to [`DriveLoop::next`].
    Ledger(LedgerRequest),
    /// Log this event (or drop it).
    Event(ServerEvent),
    /// Write what the stream takes of [`ServerSession::poll_transmit`] and report how many
    /// bytes with [`DriveLoop::transmitted`] (0: nothing now, keep the bytes for later).
    Transmit,
    /// The session makes no more progress with this input: `consumed` bytes of it were used;
    /// offer the rest again once output has drained. The loop is finished.
    Done {
        /// Input bytes consumed since [`DriveLoop::new`].
        consumed: usize,
    },
}

/// Where the loop is within one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Input,
    Ledger,
    Events,
    Transmit,
    Check,
    Done,
}

/// The position of one run of the drive loop over one input slice: see the
/// [module documentation](self).
///
/// Make a new one for every input slice. Pass the same `input` to every
/// [`next`](Self::next) call of one loop; its first `consumed` bytes are used up.
#[derive(Debug, Clone)]
pub struct DriveLoop {
    used: usize,
    progressed: bool,
    phase: Phase,
}

impl Default for DriveLoop {
    fn default() -> Self {
        Self::new()
    }
}

impl DriveLoop {
    /// A loop at its start, with no input consumed.
    pub const fn new() -> Self {
        DriveLoop {
            used: 0,
            progressed: false,
            phase: Phase::Input,
        }
    }

    /// The next step. `now` is the time the session sees for input; after
    /// [`DriveStep::Done`] every further call returns `Done` again.
    pub fn next<
        R,
        Q,
        const FRAME: usize,
        const NONCES: usize,
        const OUT: usize,
        const ADDRS: usize,
    >(
        &mut self,
        session: &mut ServerSession<FRAME, NONCES, OUT, Q>,
        shared: &mut ServerShared<R, ADDRS>,
        now: Instant,
        input: &[u8],
    ) -> DriveStep
    where
        R: RngCore + CryptoRng,
        Q: PipelineQueue + Default,
    {
        loop {
            match self.phase {
                Phase::Input => {
                    let rest = input.get(self.used..).unwrap_or(&[]);
                    let consumed = session.handle_input(shared, now, rest);
                    self.used += consumed;
                    self.progressed = consumed > 0;
                    self.phase = Phase::Ledger;
                }
                Phase::Ledger => {
                    self.phase = Phase::Events;
                    // One request at a time, each answered at once, and only with room for
                    // its answer: the rest of a pipeline waits for the output to drain.
                    if !session.has_room_for_reply() {
                        continue;
                    }
                    if let Some(request) = session.poll_ledger() {
                        self.progressed = true;
                        return DriveStep::Ledger(request);
                    }
                }
                Phase::Events => match session.poll_event() {
                    Some(event) => return DriveStep::Event(event),
                    None => self.phase = Phase::Transmit,
                },
                Phase::Transmit => {
                    self.phase = Phase::Check;
                    if !session.poll_transmit().is_empty() {
                        return DriveStep::Transmit;
                    }
                }
                Phase::Check => {
                    self.phase = if self.progressed {
                        Phase::Input
                    } else {
                        Phase::Done
                    };
                }
                Phase::Done => {
                    return DriveStep::Done {
                        consumed: self.used,
                    }
                }
            }
        }
    }

    /// Hands the session the ledger's `reply` to the request of the last
    /// [`DriveStep::Ledger`], at `now`.
    pub fn answer<
        R,
        Q,
        const FRAME: usize,
        const NONCES: usize,
        const OUT: usize,
        const ADDRS: usize,
    >(
        &mut self,
        session: &mut ServerSession<FRAME, NONCES, OUT, Q>,
        shared: &mut ServerShared<R, ADDRS>,
        now: Instant,
        reply: LedgerReply,
    ) where
        R: RngCore + CryptoRng,
        Q: PipelineQueue + Default,
    {
        session.handle_ledger(shared, now, reply);
    }

    /// Marks `n` bytes of the session's output, offered by the last [`DriveStep::Transmit`],
    /// as written.
    pub fn transmitted<Q, const FRAME: usize, const NONCES: usize, const OUT: usize>(
        &mut self,
        session: &mut ServerSession<FRAME, NONCES, OUT, Q>,
        n: usize,
    ) where
        Q: PipelineQueue + Default,
    {
        session.advance_transmit(n);
        self.progressed |= n > 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockout::PeerAddr;
    use crate::selftest::TestRng;
    use crate::session::server::ServerConfig;

    /// A driver that can write nothing now (the device, whose socket is borrowed while it
    /// reads) reports 0: the loop ends, the answer stays in the session, `Done` stays `Done`,
    /// and the next loop offers the answer again.
    #[test]
    fn output_not_taken_waits_for_the_next_loop() {
        let mut shared: ServerShared<_, 4> =
            ServerShared::new(ServerConfig::DEFAULT, TestRng::new(1), [0; 32]);
        let mut session: ServerSession = ServerSession::new(PeerAddr([0; 16]), Instant::ZERO);
        let input = b"{\"op\":\"ping\"}\n";
        let mut steps = DriveLoop::new();
        let mut offered = 0;
        let consumed = loop {
            // Bounded: a loop that keeps offering the same output must fail, not hang.
            assert!(offered < 10, "the loop keeps offering output nobody takes");
            match steps.next(&mut session, &mut shared, Instant::ZERO, input) {
                DriveStep::Transmit => {
                    offered += 1;
                    steps.transmitted(&mut session, 0);
                }
                DriveStep::Done { consumed } => break consumed,
                other => panic!("unexpected step {other:?}"),
            }
        };
        // Offered once per pass: the pass that took the ping, then the one that made no
        // progress and ended the loop.
        assert_eq!((consumed, offered), (input.len(), 2));
        assert_eq!(session.poll_transmit(), b"{\"op\":\"pong\"}\n");
        assert!(matches!(
            steps.next(&mut session, &mut shared, Instant::ZERO, input),
            DriveStep::Done { consumed } if consumed == input.len()
        ));

        let mut steps = DriveLoop::new();
        assert!(matches!(
            steps.next(&mut session, &mut shared, Instant::ZERO, &[]),
            DriveStep::Transmit
        ));
        let n = session.poll_transmit().len();
        steps.transmitted(&mut session, n);
        assert!(matches!(
            steps.next(&mut session, &mut shared, Instant::ZERO, &[]),
            DriveStep::Done { consumed: 0 }
        ));
        assert!(session.poll_transmit().is_empty());
    }
}
