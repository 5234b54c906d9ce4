//! The server side of a connection, as a sans-IO state machine.

use crate::amount::Amount;
use crate::auth::{
    self, AuthMessage, SessionKeys, SessionMacs, Verifier, MAX_SALT, MAX_SCRAM_NONCE,
};
use crate::crypto::{Key, Tag};
use crate::encoding::{base64_encode, hex_encode};
use crate::error::ErrorCode;
use crate::framing::{Decoded, FrameDecoder, OutputBuffer, DEFAULT_MAX_FRAME, MAX_RESPONSE};
use crate::ledger::{EntryKind, Ledger, LedgerReply, LedgerRequest};
use crate::lockout::{AddressThrottle, Backoff, PeerAddr};
use crate::mac;
use crate::message::{
    is_frame_space, BalanceFrame, ChallengeFrame, ErrorFrame, HistoryEntryFrame, HistoryFrame,
    NoncesFrame, RegisteredFrame, Request, TransferRequest, WelcomeFrame, HISTORY_PAGE,
    MAX_NONCE_BATCH,
};
use crate::names::{TransferId, Username};
use crate::replay::{Nonce, NonceRing, DEFAULT_NONCES, NONCE_LEN};
use crate::session::drive::{DriveLoop, DriveStep};
use crate::time::{Duration, Instant};
use heapless::{Deque, String, Vec};
use rand_core::{CryptoRng, RngCore};

/// The default output buffer: one maximal response. The session takes a new frame only
/// when a whole response fits, so a driver that flushes after every call never stalls.
pub const DEFAULT_OUTPUT: usize = MAX_RESPONSE;

/// Server policy shared by every session. All limits are enforced by the session itself.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Whether clients may register themselves (`false`: only administrators add users).
    pub registration_open: bool,
    /// The lowest PBKDF2 iteration count accepted in a registration's verifier.
    pub min_iterations: u32,
    /// The iteration count shown in challenges for unknown users; set it to what real users
    /// have so the two cannot be told apart.
    pub unknown_user_iterations: u32,
    /// Invalid frames tolerated before the connection is closed.
    pub max_bad_frames: u16,
    /// Time from connection to a completed login.
    pub login_deadline: Duration,
    /// Time without a frame before the connection is closed.
    pub idle_timeout: Duration,
    /// Failed-login backoff for accounts.
    pub account_backoff: Backoff,
    /// Failed-login backoff for peer addresses.
    pub address_backoff: Backoff,
    /// The longest request line accepted, in bytes; capped by the session's `FRAME`.
    pub max_frame: usize,
    /// Outstanding nonces per session; capped by the session's `NONCES`.
    pub max_nonces: usize,
    /// Requests a session may have waiting on the ledger at once (pipelined transfers, balances
    /// and history pages); capped by the session's pipeline capacity (one plus its
    /// [`PipelineQueue`]'s, so one for [`NoPipeline`]) and by `max_nonces`.
    pub max_pipeline: usize,
}

impl ServerConfig {
    /// The defaults, in one place for every driver (the host's `txsock serve` flags take
    /// their default values from here): open registration, [`auth::DEFAULT_ITERATIONS`], 8
    /// bad frames, 30 s to log in, 300 s idle, [`Backoff::ACCOUNT`] and [`Backoff::ADDRESS`],
    /// [`DEFAULT_MAX_FRAME`], [`DEFAULT_NONCES`] and [`DEFAULT_PIPELINE`].
    pub const DEFAULT: ServerConfig = ServerConfig {
        registration_open: true,
        min_iterations: auth::DEFAULT_ITERATIONS,
        unknown_user_iterations: auth::DEFAULT_ITERATIONS,
        max_bad_frames: 8,
        login_deadline: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(300),
        account_backoff: Backoff::ACCOUNT,
        address_backoff: Backoff::ADDRESS,
        max_frame: DEFAULT_MAX_FRAME,
        max_nonces: DEFAULT_NONCES,
        max_pipeline: DEFAULT_PIPELINE,
    };
}

/// The default of [`ServerConfig::max_pipeline`]: requests one session may have waiting on
/// the ledger at once. 8 is where the host's 32-client load stopped gaining (docs/BENCHMARKS.md);
/// a session without pipeline room ([`NoPipeline`]) uses 1 whatever this says.
pub const DEFAULT_PIPELINE: usize = 8;

impl Default for ServerConfig {
    /// [`ServerConfig::DEFAULT`].
    fn default() -> Self {
        ServerConfig::DEFAULT
    }
}

/// State shared by all sessions of one server: policy, the secret that makes unknown users'
/// salts stable, the random number generator and the per-address login throttle.
///
/// `ADDRS` is the number of peer addresses whose failed logins are remembered (about 48
/// bytes each). A multi-threaded driver puts this behind a mutex and holds it only for the
/// duration of one `handle_*` call, which is a few HMACs at most.
pub struct ServerShared<R, const ADDRS: usize> {
    /// Policy.
    pub config: ServerConfig,
    /// Nonce randomness. Must be a cryptographic RNG seeded from real entropy.
    pub rng: R,
    /// Failed logins per peer address.
    pub throttle: AddressThrottle<ADDRS>,
    secret: Key,
}

impl<R: RngCore + CryptoRng, const ADDRS: usize> ServerShared<R, ADDRS> {
    /// Shared state with `config`, `rng`, and a `secret` that must stay the same across
    /// restarts (it keeps unknown users' fake salts stable).
    pub fn new(config: ServerConfig, rng: R, secret: [u8; 32]) -> Self {
        ServerShared {
            config,
            rng,
            throttle: AddressThrottle::new(),
            secret: Key::from_bytes(secret),
        }
    }
}

/// Something a driver may want to log; drained with [`ServerSession::poll_event`].
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A user registered.
    Registered {
        /// Who.
        user: Username,
    },
    /// A user logged in.
    LoggedIn {
        /// Who.
        user: Username,
    },
    /// A login failed. `reason` is for the server's logs only; the client always sees
    /// [`ErrorCode::AuthFailed`].
    LoginFailed {
        /// The username tried.
        user: Username,
        /// Why.
        reason: LoginFailure,
    },
    /// This failure locked the account until `until`.
    AccountLocked {
        /// Who.
        user: Username,
        /// Until when.
        until: Instant,
    },
    /// This failure throttled the peer's address.
    AddressThrottled,
    /// A frame was refused; nothing changed.
    Rejected {
        /// The code sent to the client.
        code: ErrorCode,
    },
    /// The user logged out.
    LoggedOut {
        /// Who.
        user: Username,
    },
    /// The session is closing because of `code`.
    Closing {
        /// Why.
        code: ErrorCode,
    },
}

/// Why a login failed, for the server's logs.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// The proof did not verify.
    WrongPassword,
    /// No such user.
    UnknownUser,
    /// The account is locked.
    AccountLocked,
    /// The peer address is throttled.
    AddressThrottled,
}

impl LoginFailure {
    /// A stable snake_case name for logs: `wrong_password`, `unknown_user`, `account_locked`
    /// or `address_throttled`. Never sent to the client, which gets `auth_failed` for all.
    pub const fn name(self) -> &'static str {
        match self {
            LoginFailure::WrongPassword => "wrong_password",
            LoginFailure::UnknownUser => "unknown_user",
            LoginFailure::AccountLocked => "account_locked",
            LoginFailure::AddressThrottled => "address_throttled",
        }
    }
}

impl core::fmt::Display for LoginFailure {
    /// Writes [`LoginFailure::name`].
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the session is waiting for from the ledger.
///
/// It also holds everything the ledger request needs, so the request itself is built on
/// demand by `poll_ledger` instead of being stored twice.
enum Waiting {
    Register {
        user: Username,
        verifier: Verifier,
    },
    Credentials {
        user: Username,
        client_nonce: String<MAX_SCRAM_NONCE>,
    },
    LoginFailed {
        user: Username,
        now: Instant,
        policy: Backoff,
    },
    LoginSucceeded {
        user: Username,
        keys: SessionKeys,
        signature: Tag,
    },
    Transfer {
        id: TransferId,
        to: Username,
        amount: Amount,
        nonce: Nonce,
    },
    Balance,
    History {
        offset: u32,
        deposits: bool,
    },
}

/// A request waiting on the ledger behind the first one a session has outstanding: a
/// transfer (with what its receipt needs: id, recipient, amount and nonce), a balance or a
/// history page. Opaque: only the session reads it; a [`PipelineQueue`] only stores it.
pub struct PipelinedRequest(Waiting);

/// Where a [`ServerSession`] keeps the requests that wait on the ledger behind the first
/// one (the first always has its place in the session). Its capacity plus one is the
/// session's pipeline capacity: how many requests may wait on the ledger at once, before
/// [`ServerConfig::max_pipeline`] lowers it at run time.
///
/// Two stores come with the core: [`NoPipeline`] (no room: one request at a time, as a
/// device or the blocking driver runs) and a `heapless::Deque<PipelinedRequest, N>` (room
/// for `N` more, inside the session). A host that must keep idle sessions small supplies
/// one that lives on the heap only while it holds something.
pub trait PipelineQueue {
    /// The most requests this can hold.
    fn capacity(&self) -> usize;
    /// Requests held now.
    fn len(&self) -> usize;
    /// True when it holds nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends `request`, or gives it back when full (as `heapless::Deque` does; the session
    /// never pushes past [`capacity`](Self::capacity)).
    #[allow(clippy::result_large_err)] // Given back by value, as heapless does: no heap in core.
    fn push_back(&mut self, request: PipelinedRequest) -> Result<(), PipelinedRequest>;
    /// Removes and returns the oldest request.
    fn pop_front(&mut self) -> Option<PipelinedRequest>;
    /// The request at `index`, oldest first.
    fn get(&self, index: usize) -> Option<&PipelinedRequest>;
}

/// A [`PipelineQueue`] without room: the session has at most one request waiting on the
/// ledger, and takes no further request until it is answered. Takes no memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPipeline;

impl PipelineQueue for NoPipeline {
    fn capacity(&self) -> usize {
        0
    }
    fn len(&self) -> usize {
        0
    }
    #[allow(clippy::result_large_err)] // The trait's signature.
    fn push_back(&mut self, request: PipelinedRequest) -> Result<(), PipelinedRequest> {
        Err(request)
    }
    fn pop_front(&mut self) -> Option<PipelinedRequest> {
        None
    }
    fn get(&self, _index: usize) -> Option<&PipelinedRequest> {
        None
    }
}

impl<const N: usize> PipelineQueue for Deque<PipelinedRequest, N> {
    fn capacity(&self) -> usize {
        N
    }
    fn len(&self) -> usize {
        Deque::len(self)
    }
    #[allow(clippy::result_large_err)] // The trait's signature.
    fn push_back(&mut self, request: PipelinedRequest) -> Result<(), PipelinedRequest> {
        Deque::push_back(self, request)
    }
    fn pop_front(&mut self) -> Option<PipelinedRequest> {
        Deque::pop_front(self)
    }
    fn get(&self, index: usize) -> Option<&PipelinedRequest> {
        self.iter().nth(index)
    }
}

/// Length of the server's extension of the SCRAM nonce, in base64 characters.
const NONCE_EXTENSION: usize = 24;

enum State {
    Anonymous,
    Challenged {
        user: Username,
        client_nonce: String<MAX_SCRAM_NONCE>,
        extension: String<NONCE_EXTENSION>,
        salt: Vec<u8, MAX_SALT>,
        iterations: u32,
        /// `(StoredKey, ServerKey)`, or `None` for an unknown user.
        keys: Option<([u8; 32], [u8; 32])>,
        locked: bool,
    },
    LoggedIn {
        user: Username,
        keys: SessionMacs,
    },
}

/// One connection's server-side protocol engine.
///
/// `FRAME` is the longest request line accepted ([`DEFAULT_MAX_FRAME`]); `NONCES` is the
/// number of outstanding nonces ([`DEFAULT_NONCES`]); `OUT` is the output buffer, at least
/// [`MAX_RESPONSE`] bytes; `Q` keeps the requests pipelined behind the first one that waits
/// on the ledger ([`PipelineQueue`]; [`NoPipeline`] by default: one at a time). Memory is
/// fixed: about `FRAME + OUT + 16 * NONCES + 500` bytes, plus `Q`.
///
/// # Driving a session
///
/// - Inputs: [`handle_input`](Self::handle_input) with bytes read from the peer,
///   [`handle_ledger`](Self::handle_ledger) with the answer to the oldest ledger request not
///   yet answered, [`handle_timeout`](Self::handle_timeout) when
///   [`poll_timeout`](Self::poll_timeout) passes.
/// - Outputs: [`poll_ledger`](Self::poll_ledger) (a request to answer),
///   [`poll_transmit`](Self::poll_transmit) / [`advance_transmit`](Self::advance_transmit)
///   (bytes to write), [`poll_event`](Self::poll_event) (things to log),
///   [`is_closed`](Self::is_closed) (close the connection once output is flushed).
///
/// A driver loops: feed input until `handle_input` consumes nothing more (it stops while
/// the ledger owes it as many answers as it may wait for, or output is backed up), answer
/// `poll_ledger`, write out `poll_transmit`, log `poll_event`, and sleep until more input or
/// `poll_timeout`. A driver whose ledger answers at once runs exactly that loop with
/// [`drive`](Self::drive).
///
/// # Pipelining
///
/// While logged in, a session with pipeline room takes further transfers, balances and
/// history pages while earlier ones wait on the ledger, up to
/// [`ServerConfig::max_pipeline`] at once; `poll_ledger` hands each out once, in request
/// order, and `handle_ledger` takes the answers in the same order. Answers leave in request
/// order: a frame whose answer needs no ledger (an error, a `pong`, nonces, `bye`) is held in
/// the frame decoder, unanswered and unprocessed, until every earlier answer has been
/// written; `handle_input` processes it then, even with empty input. `handle_ledger` writes
/// one answer: call it only while [`has_room_for_reply`](Self::has_room_for_reply).
pub struct ServerSession<
    const FRAME: usize = DEFAULT_MAX_FRAME,
    const NONCES: usize = DEFAULT_NONCES,
    const OUT: usize = DEFAULT_OUTPUT,
    Q = NoPipeline,
> {
    decoder: FrameDecoder<FRAME>,
    out: OutputBuffer<OUT>,
    ring: NonceRing<NONCES>,
    state: State,
    /// The oldest request waiting on the ledger.
    waiting: Option<Waiting>,
    /// The requests waiting behind it, oldest first.
    queue: Q,
    /// How many of the waiting requests `poll_ledger` has handed out (the oldest first).
    handed_out: u8,
    /// Requests that may wait on the ledger at once, from the configuration and capacities.
    pipeline_limit: u8,
    /// The refusal decided for the frame the decoder holds, if it was refused: processed
    /// again, it is refused with this code without being parsed and MAC-checked again (what
    /// refused it cannot change before it is processed: keys, nonces and login state change
    /// only through frames behind it).
    held_refusal: Option<ErrorCode>,
    events: Deque<ServerEvent, 3>,
    peer: PeerAddr,
    opened: Instant,
    last_activity: Instant,
    bad_frames: u16,
    seq: u32,
    closing: bool,
}

impl<const FRAME: usize, const NONCES: usize, const OUT: usize, Q: PipelineQueue + Default>
    ServerSession<FRAME, NONCES, OUT, Q>
{
    /// A session for a connection from `peer` accepted at `now`.
    pub fn new(peer: PeerAddr, now: Instant) -> Self {
        const {
            assert!(
                OUT >= MAX_RESPONSE,
                "the output buffer must hold the largest response"
            )
        };
        ServerSession {
            decoder: FrameDecoder::new(),
            out: OutputBuffer::new(),
            ring: NonceRing::new(),
            state: State::Anonymous,
            waiting: None,
            queue: Q::default(),
            handed_out: 0,
            pipeline_limit: 1,
            held_refusal: None,
            events: Deque::new(),
            peer,
            opened: now,
            last_activity: now,
            bad_frames: 0,
            seq: 0,
            closing: false,
        }
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&Username> {
        match &self.state {
            State::LoggedIn { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Number of outstanding nonces.
    pub fn outstanding_nonces(&self) -> usize {
        self.ring.len()
    }

    /// Requests waiting on the ledger: handed out by [`poll_ledger`](Self::poll_ledger) and
    /// not yet answered, or ready to be handed out.
    pub fn waiting_on_ledger(&self) -> usize {
        usize::from(self.waiting.is_some()) + self.queue.len()
    }

    /// True when the session will take more input now (a held frame included).
    pub fn wants_input(&self) -> bool {
        if self.closing || self.out.free() < MAX_RESPONSE {
            return false;
        }
        let waiting = self.waiting_on_ledger();
        // A held frame's answer waits for every earlier one; further frames only while
        // logged in, where every request taken while others wait goes to the ledger.
        waiting == 0
            || (!self.decoder.is_holding()
                && matches!(self.state, State::LoggedIn { .. })
                && waiting < usize::from(self.pipeline_limit))
    }

    /// True while a frame is held behind answers still owed (see the type's doc on
    /// pipelining): once [`wants_input`](Self::wants_input), `handle_input` processes it even
    /// with empty input.
    pub fn holds_frame(&self) -> bool {
        self.decoder.is_holding()
    }

    /// True when [`handle_ledger`](Self::handle_ledger) has room for the answer it writes:
    /// the output has [`MAX_RESPONSE`] bytes free. A driver that has several answers from
    /// the ledger at once writes out [`poll_transmit`](Self::poll_transmit) when this is
    /// false before it hands over the next.
    pub fn has_room_for_reply(&self) -> bool {
        self.out.free() >= MAX_RESPONSE
    }

    /// Feeds bytes read from the peer; returns how many were consumed. Bytes not consumed
    /// must be offered again after the outputs have been drained.
    pub fn handle_input<R: RngCore + CryptoRng, const ADDRS: usize>(
        &mut self,
        shared: &mut ServerShared<R, ADDRS>,
        now: Instant,
        input: &[u8],
    ) -> usize {
        self.decoder.set_limit(shared.config.max_frame);
        let capacity = 1 + self.queue.capacity();
        let limit = shared
            .config
            .max_pipeline
            .min(capacity)
            .min(shared.config.max_nonces)
            .clamp(1, usize::from(u8::MAX));
        // Clamped to 1..=255 above.
        self.pipeline_limit = limit as u8;
        let mut used = 0;
        while (used < input.len() || self.decoder.is_holding()) && self.wants_input() {
            // Without a queue (`NoPipeline`, the devices' default) the pipeline limit is 1, so
            // `wants_input` never lets a frame in while a request waits: saying so in a
            // constant lets the compiler drop the pipelining path from such images.
            let pipelining = self.queue.capacity() > 0 && self.waiting_on_ledger() > 0;
            let holding = self.decoder.is_holding();
            let refused = self.held_refusal.take().filter(|_| holding);
            let (n, decoded) = self.decoder.decode(&input[used..]);
            used += n;
            let parsed = match (decoded, refused) {
                (_, Some(code)) => Err(code),
                (decoded, None) => match decoded {
                    Decoded::Incomplete => continue,
                    // Blank lines (empty or only spaces and tabs; a stray "\r\n" is empty once
                    // the framing dropped its CR) carry nothing: skip them.
                    Decoded::Frame(frame) if frame.iter().all(|&b| is_frame_space(b)) => continue,
                    Decoded::Frame(frame) => Request::parse(frame).map_err(|e| e.code()),
                    Decoded::Error(_) => Err(ErrorCode::FrameTooLong),
                },
            };
            self.last_activity = now;
            if pipelining {
                // Only requests for the ledger join the pipeline; anything else is answered
                // once the answers owed before it have been written.
                if !self.pipeline(parsed) {
                    self.decoder.hold();
                }
                continue;
            }
            match parsed {
                Ok(request) => self.handle_request(shared, now, request),
                Err(code) => self.reject(shared, code),
            }
        }
        used
    }

    /// Takes a request that arrived while others wait on the ledger, if it goes to the
    /// ledger too: a transfer whose MAC and nonce are good, a balance or a history page
    /// (the session is logged in: [`wants_input`](Self::wants_input)). False for anything
    /// else, which changed nothing and is processed again once the pipeline has drained (a
    /// refusal keeps its code in `held_refusal`, so it is not parsed and checked twice).
    fn pipeline(&mut self, parsed: Result<Request, ErrorCode>) -> bool {
        match parsed {
            Ok(Request::Transfer(t)) => match self.verify_transfer(&t) {
                Ok(()) => self.wait(Waiting::Transfer {
                    id: t.id,
                    to: t.to,
                    amount: t.amount,
                    nonce: t.nonce,
                }),
                Err(code) => {
                    self.held_refusal = Some(code);
                    return false;
                }
            },
            Ok(Request::Balance) => self.wait(Waiting::Balance),
            Ok(Request::History { offset, deposits }) => {
                self.wait(Waiting::History { offset, deposits })
            }
            Err(code) => {
                self.held_refusal = Some(code);
                return false;
            }
            _ => return false,
        }
        true
    }

    /// True while a ledger request is ready for [`poll_ledger`](Self::poll_ledger).
    pub fn wants_ledger(&self) -> bool {
        usize::from(self.handed_out) < self.waiting_on_ledger()
    }

    /// Takes the next ledger request not yet handed out, if any, oldest first. Each is
    /// handed out once; their answers go to [`handle_ledger`](Self::handle_ledger) in the
    /// same order.
    pub fn poll_ledger(&mut self) -> Option<LedgerRequest> {
        let next = usize::from(self.handed_out);
        let waiting = match next {
            0 => self.waiting.as_ref()?,
            _ => &self.queue.get(next - 1)?.0,
        };
        let user = match &self.state {
            State::LoggedIn { user, .. } => Some(user.clone()),
            _ => None,
        };
        // At most the pipeline limit (a u8) wait, so this cannot overflow.
        self.handed_out += 1;
        Some(match waiting {
            Waiting::Register { user, verifier } => LedgerRequest::Register {
                user: user.clone(),
                verifier: verifier.clone(),
            },
            Waiting::Credentials { user, .. } => LedgerRequest::Credentials { user: user.clone() },
            Waiting::LoginFailed { user, now, policy } => LedgerRequest::LoginFailed {
                user: user.clone(),
                now: *now,
                policy: *policy,
            },
            Waiting::LoginSucceeded { user, .. } => {
                LedgerRequest::LoginSucceeded { user: user.clone() }
            }
            Waiting::Transfer { id, to, amount, .. } => LedgerRequest::Transfer {
                from: user?,
                id: id.clone(),
                to: to.clone(),
                amount: *amount,
            },
            Waiting::Balance => LedgerRequest::Balance { user: user? },
            Waiting::History { offset, deposits } => LedgerRequest::History {
                user: user?,
                offset: *offset,
                deposits: *deposits,
            },
        })
    }

    /// Hands the session the ledger's answer to the oldest request it handed out and has
    /// not had answered, and writes the answer to the peer (call it only while
    /// [`has_room_for_reply`](Self::has_room_for_reply)). An answer when none is owed is
    /// ignored.
    pub fn handle_ledger<R: RngCore + CryptoRng, const ADDRS: usize>(
        &mut self,
        shared: &mut ServerShared<R, ADDRS>,
        now: Instant,
        reply: LedgerReply,
    ) {
        self.last_activity = now;
        if self.handed_out == 0 {
            return;
        }
        let Some(waiting) = self.waiting.take() else {
            return;
        };
        self.handed_out -= 1;
        self.waiting = self.queue.pop_front().map(|p| p.0);
        // The reply by reference: moving it (300 bytes, most of them a history page's) into
        // the tuple cost every transfer a copy.
        match (waiting, &reply) {
            (_, LedgerReply::Unavailable) => self.send_error(ErrorCode::Internal),
            (Waiting::Register { user, .. }, LedgerReply::Registered(result)) => match *result {
                Ok(()) => {
                    self.send(&RegisteredFrame {
                        op: "registered",
                        user: user.as_str(),
                    });
                    self.event(ServerEvent::Registered { user });
                }
                Err(code) => self.send_error(code),
            },
            (
                Waiting::Credentials { user, client_nonce },
                LedgerReply::Credentials { verifier, lockout },
            ) => {
                self.challenge(
                    shared,
                    now,
                    user,
                    client_nonce,
                    verifier.clone(),
                    lockout.is_locked(now),
                );
            }
            (
                Waiting::LoginFailed {
                    user,
                    now: failed_at,
                    ..
                },
                LedgerReply::Recorded(state),
            ) => {
                // This failure started (or extended) a lock if the ledger recorded it as the
                // last failure and the lock runs past it.
                if state.last_failure == failed_at && state.is_locked(failed_at) {
                    self.event(ServerEvent::AccountLocked {
                        user,
                        until: state.locked_until,
                    });
                }
                self.send_error(ErrorCode::AuthFailed);
            }
            (
                Waiting::LoginSucceeded {
                    user,
                    keys,
                    signature,
                },
                LedgerReply::Recorded(_),
            ) => {
                let signature = base64_encode::<44>(signature.as_bytes());
                self.send(&WelcomeFrame {
                    op: "welcome",
                    user: user.as_str(),
                    signature: &signature,
                });
                self.ring.clear();
                self.seq = 0;
                self.event(ServerEvent::LoggedIn { user: user.clone() });
                self.state = State::LoggedIn {
                    user,
                    keys: keys.precompute(),
                };
            }
            (
                Waiting::Transfer {
                    id,
                    to,
                    amount,
                    nonce,
                },
                LedgerReply::Transfer(outcome),
            ) => {
                self.receipt(id, to, amount, &nonce, outcome.result, outcome.balance);
            }
            (Waiting::Balance, LedgerReply::Balance(result)) => match *result {
                Ok(balance) => self.balance(balance),
                Err(code) => self.send_error(code),
            },
            (Waiting::History { deposits, .. }, LedgerReply::History(result)) => match result {
                Ok(page) => self.history(page, deposits),
                Err(code) => self.send_error(*code),
            },
            // A reply that does not answer the request is a driver bug; fail safe.
            _ => self.send_error(ErrorCode::Internal),
        }
    }

    /// The drive loop of a driver whose ledger answers at once (a device's in-memory or
    /// flash ledger, a test): feeds `input`, answers every ledger request from `ledger`,
    /// hands each event to `event` and offers the output to `transmit`, until the session
    /// makes no more progress. Returns the input bytes consumed; the rest must be offered
    /// again once output has drained (the session takes a frame only when its whole answer
    /// fits).
    ///
    /// `transmit` writes what it can of the bytes it is given and returns how many it took;
    /// `Ok(0)` leaves them in [`poll_transmit`](Self::poll_transmit) for later (a driver that
    /// writes after the call, such as one whose socket is borrowed while it reads). Its
    /// error ends the loop and is returned. Timeouts stay the driver's: it calls
    /// [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)
    /// passes.
    ///
    /// Every synchronous driver (the blocking driver, the firmware, the test kit) runs this
    /// loop and no other; the loop's steps are [`DriveLoop`]'s, which the asynchronous driver
    /// (`asynch`, feature `async`) runs with awaits.
    pub fn drive<R, L, E, const ADDRS: usize>(
        &mut self,
        shared: &mut ServerShared<R, ADDRS>,
        ledger: &mut L,
        now: Instant,
        input: &[u8],
        mut transmit: impl FnMut(&[u8]) -> Result<usize, E>,
        mut event: impl FnMut(ServerEvent),
    ) -> Result<usize, E>
    where
        R: RngCore + CryptoRng,
        L: Ledger + ?Sized,
    {
        // The loop itself is `DriveLoop`'s, shared with the async driver.
        let mut steps = DriveLoop::new();
        loop {
            match steps.next(self, shared, now, input) {
                DriveStep::Ledger(request) => {
                    let reply = ledger.execute(&request, now);
                    steps.answer(self, shared, now, reply);
                }
                DriveStep::Event(e) => event(e),
                DriveStep::Transmit => {
                    let n = transmit(self.poll_transmit())?;
                    steps.transmitted(self, n);
                }
                DriveStep::Done { consumed } => return Ok(consumed),
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever. Never
    /// while requests wait on the ledger: the server's own slowness does not time a peer out
    /// (the deadlines run again from the last answer).
    pub fn poll_timeout<R, const ADDRS: usize>(
        &self,
        shared: &ServerShared<R, ADDRS>,
    ) -> Option<Instant> {
        if self.closing || self.waiting_on_ledger() > 0 {
            return None;
        }
        let idle = self.last_activity + shared.config.idle_timeout;
        Some(match self.state {
            State::LoggedIn { .. } => idle,
            _ => idle.min(self.opened + shared.config.login_deadline),
        })
    }

    /// Closes the session with [`ErrorCode::Timeout`] if a deadline has passed.
    pub fn handle_timeout<R, const ADDRS: usize>(
        &mut self,
        shared: &ServerShared<R, ADDRS>,
        now: Instant,
    ) {
        if let Some(deadline) = self.poll_timeout(shared) {
            if now >= deadline {
                self.close_with(ErrorCode::Timeout);
            }
        }
    }

    /// Closes the session with a final error frame (a driver-side limit such as
    /// [`ErrorCode::OutputOverflow`] or [`ErrorCode::ServerBusy`]).
    pub fn close_with(&mut self, code: ErrorCode) {
        if self.closing {
            return;
        }
        // The final frame is best effort: if the output is backed up it is dropped.
        self.send_error(code);
        self.event(ServerEvent::Closing { code });
        self.closing = true;
    }

    /// Bytes to write to the peer.
    pub fn poll_transmit(&self) -> &[u8] {
        self.out.pending()
    }

    /// Marks `n` bytes of [`poll_transmit`](Self::poll_transmit) as written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// The next event to log, oldest first.
    ///
    /// Events wait in a queue of three. When an event arrives while three are waiting, the
    /// oldest waiting one is dropped, silently. A driver that drains this after every
    /// `handle_*` call loses nothing with the default `OUT` ([`MAX_RESPONSE`]): one call then
    /// adds at most two events. `handle_input` answers at most one frame per call (after it
    /// the session waits for the ledger, is closing, or holds an answer that leaves less than
    /// `MAX_RESPONSE` of output free; frames pipelined behind a request that waits on the
    /// ledger add no event), and a frame adds at most two events: `Rejected` and
    /// `Closing`, or `AddressThrottled` and `LoginFailed`; `handle_ledger`, `handle_timeout`
    /// and `close_with` add at most one. [`drive`](Self::drive) drains after each
    /// `handle_input` and `handle_ledger` pair (at most three events) and so loses none
    /// either. With a larger `OUT`, one `handle_input` call may answer several frames without
    /// the ledger (rejections, pings), and only the last three of their events are kept.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// True once the session has ended and its output is flushed: close the connection.
    pub fn is_closed(&self) -> bool {
        self.closing && self.out.is_empty()
    }

    /// True once the session has decided to end (its last output may still be pending).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    // ---------------------------------------------------------------------------------

    fn handle_request<R: RngCore + CryptoRng, const ADDRS: usize>(
        &mut self,
        shared: &mut ServerShared<R, ADDRS>,
        now: Instant,
        request: Request,
    ) {
        let logged_in = matches!(self.state, State::LoggedIn { .. });
        match request {
            Request::Ping => self.send(&crate::message::BareFrame { op: "pong" }),
            Request::Register(_) | Request::Login { .. } if logged_in => {
                self.reject(shared, ErrorCode::AlreadyLoggedIn)
            }
            Request::Register(r) => {
                let weak = r.verifier.iterations < shared.config.min_iterations
                    || r.verifier.iterations > auth::MAX_ITERATIONS
                    || r.verifier.salt.len() < auth::MIN_SALT;
                if !shared.config.registration_open {
                    self.send_error(ErrorCode::RegistrationClosed);
                } else if weak {
                    self.send_error(ErrorCode::WeakVerifier);
                } else {
                    self.wait(Waiting::Register {
                        user: r.user,
                        verifier: r.verifier,
                    });
                }
            }
            Request::Login { user, nonce } => {
                self.state = State::Anonymous;
                self.wait(Waiting::Credentials {
                    user,
                    client_nonce: nonce,
                });
            }
            Request::Proof { .. } if !matches!(self.state, State::Challenged { .. }) => {
                self.reject(shared, ErrorCode::UnexpectedMessage)
            }
            Request::Proof { proof } => self.proof(shared, now, &proof),
            Request::Nonces { .. }
            | Request::Transfer(_)
            | Request::Balance
            | Request::History { .. }
            | Request::Logout
                if !logged_in =>
            {
                self.reject(shared, ErrorCode::NotLoggedIn)
            }
            Request::Nonces { count } => self.issue_nonces(shared, count),
            Request::Transfer(t) => self.transfer(shared, t),
            Request::Balance => self.wait(Waiting::Balance),
            Request::History { offset, deposits } => {
                self.wait(Waiting::History { offset, deposits })
            }
            Request::Logout => {
                if let State::LoggedIn { user, .. } =
                    core::mem::replace(&mut self.state, State::Anonymous)
                {
                    self.event(ServerEvent::LoggedOut { user });
                }
                self.ring.clear();
                self.send(&crate::message::BareFrame { op: "bye" });
                self.closing = true;
            }
        }
    }

    fn wait(&mut self, waiting: Waiting) {
        if self.waiting.is_none() {
            self.waiting = Some(waiting);
        } else if self.queue.push_back(PipelinedRequest(waiting)).is_err() {
            // wants_input keeps the pipeline within the queue's capacity; should that ever
            // fail, end the connection rather than answer out of order.
            self.closing = true;
        }
    }

    fn challenge<R: RngCore + CryptoRng, const ADDRS: usize>(
        &mut self,
        shared: &mut ServerShared<R, ADDRS>,
        _now: Instant,
        user: Username,
        client_nonce: String<MAX_SCRAM_NONCE>,
        verifier: Option<Verifier>,
        locked: bool,
    ) {
        let mut random = [0u8; 18];
        shared.rng.fill_bytes(&mut random);
        let extension = base64_encode::<NONCE_EXTENSION>(&random);
        let (salt, iterations, keys) = match verifier {
            Some(v) => (v.salt, v.iterations, Some((v.stored_key, v.server_key))),
            None => {
                let fake = auth::fake_salt(&shared.secret, &user);
                let mut salt = Vec::new();
                // SALT_LEN <= MAX_SALT.
                let _ = salt.extend_from_slice(&fake);
                (salt, shared.config.unknown_user_iterations, None)
            }
        };
        let mut full_nonce: String<{ MAX_SCRAM_NONCE + NONCE_EXTENSION }> = String::new();
        let _ = full_nonce.push_str(&client_nonce);
        let _ = full_nonce.push_str(&extension);
        let salt_b64 = base64_encode::<{ 4 * MAX_SALT.div_ceil(3) }>(&salt);
        self.send(&ChallengeFrame {
            op: "challenge",
            nonce: &full_nonce,
            salt: &salt_b64,
            iterations,
        });
        self.state = State::Challenged {
            user,
            client_nonce,
            extension,
            salt,
            iterations,
            keys,
            locked,
        };
    }

    fn proof<R: RngCore + CryptoRng, const ADDRS: usize>(
        &mut self,
        shared: &mut ServerShared<R, ADDRS>,
        now: Instant,
        proof: &[u8; 32],
    ) {
        let State::Challenged {
            user,
            client_nonce,
            extension,
            salt,
            iterations,
            keys,
            locked,
        } = core::mem::replace(&mut self.state, State::Anonymous)
        else {
            return self.reject(shared, ErrorCode::UnexpectedMessage);
        };
        let throttled = shared.throttle.is_throttled(self.peer, now);
        // Every proof costs the same HMACs: an unknown user's is checked against a StoredKey
        // of zeros, which no proof matches (it would take SHA-256(ClientKey) = 0).
        let unknown = keys.is_none();
        let (stored_key, server_key) = keys.unwrap_or(([0; 32], [0; 32]));
        let mut full_nonce: String<{ MAX_SCRAM_NONCE + NONCE_EXTENSION }> = String::new();
        let _ = full_nonce.push_str(&client_nonce);
        let _ = full_nonce.push_str(&extension);
        let auth = AuthMessage {
            user: user.as_str(),
            client_nonce: &client_nonce,
            full_nonce: &full_nonce,
            salt: &salt,
            iterations,
        };
        let verified = auth::verify_client_proof(&stored_key, &server_key, &auth, proof);
        let reason = if throttled {
            LoginFailure::AddressThrottled
        } else if unknown {
            LoginFailure::UnknownUser
        } else if locked {
            LoginFailure::AccountLocked
        } else {
            match verified {
                Ok((signature, keys)) => {
                    return self.wait(Waiting::LoginSucceeded {
                        user,
                        keys,
                        signature,
                    })
                }
                Err(_) => LoginFailure::WrongPassword,
            }
        };
        let policy = shared.config.address_backoff;
        if shared.throttle.record_failure(self.peer, now, &policy) {
            self.event(ServerEvent::AddressThrottled);
        }
        self.event(ServerEvent::LoginFailed {
            user: user.clone(),
            reason,
        });
        match reason {
            // A wrong password and an unknown user make the same ledger round trip (the
            // ledger does equivalent storage work for both), so neither the answer nor its
            // timing tells them apart.
            LoginFailure::WrongPassword | LoginFailure::UnknownUser => {
                let policy = shared.config.account_backoff;
                self.wait(Waiting::LoginFailed { user, now, policy })
            }
            _ => self.send_error(ErrorCode::AuthFailed),
        }
    }

    fn issue_nonces<R: RngCore + CryptoRng, const ADDRS: usize>(
        &mut self,
        shared: &mut ServerShared<R, ADDRS>,
        count: u8,
    ) {
        self.ring.set_limit(shared.config.max_nonces);
        // Never hand out more than the ring keeps, or the first would already be evicted.
        let count = usize::from(count).min(self.ring.limit());
        let mut texts: Vec<String<{ 2 * NONCE_LEN }>, MAX_NONCE_BATCH> = Vec::new();
        for _ in 0..count {
            let nonce = self.ring.issue(&mut shared.rng);
            // count <= MAX_NONCE_BATCH was checked by the parser.
            let _ = texts.push(hex_encode(&nonce));
        }
        let mut nonces: Vec<&str, MAX_NONCE_BATCH> = Vec::new();
        for t in &texts {
            let _ = nonces.push(t.as_str());
        }
        self.send(&NoncesFrame {
            op: "nonces",
            nonces,
        });
    }

    fn transfer<R: RngCore + CryptoRng, const ADDRS: usize>(
        &mut self,
        shared: &mut ServerShared<R, ADDRS>,
        t: TransferRequest,
    ) {
        if let Err(code) = self.verify_transfer(&t) {
            return self.reject(shared, code);
        }
        self.wait(Waiting::Transfer {
            id: t.id,
            to: t.to,
            amount: t.amount,
            nonce: t.nonce,
        });
    }

    /// Checks a transfer's MAC, then consumes its nonce; on error nothing changed.
    fn verify_transfer(&mut self, t: &TransferRequest) -> Result<(), ErrorCode> {
        let State::LoggedIn { user, keys } = &self.state else {
            return Err(ErrorCode::NotLoggedIn);
        };
        let expected = mac::transfer(
            &keys.client_to_server,
            user.as_str(),
            t.id.as_str(),
            t.to.as_str(),
            t.amount,
            &t.nonce,
        );
        if !expected.ct_eq(&t.mac) {
            return Err(ErrorCode::BadMac);
        }
        self.ring
            .consume(&t.nonce)
            .map_err(|_| ErrorCode::UnknownNonce)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn receipt(
        &mut self,
        id: TransferId,
        to: Username,
        amount: Amount,
        nonce: &Nonce,
        result: Result<(), ErrorCode>,
        balance: Amount,
    ) {
        let seq = self.next_seq();
        let State::LoggedIn { keys, .. } = &self.state else {
            return;
        };
        let result_name = match result {
            Ok(()) => "committed",
            Err(code) => code.name(),
        };
        let fields = mac::ReceiptFields {
            seq,
            id: id.as_str(),
            to: to.as_str(),
            amount,
            result: result_name,
            balance,
            nonce,
        };
        let mac = mac::receipt(&keys.server_to_client, &fields);
        // The amounts and the MAC go into the output as they are encoded.
        // Id, recipient and result come from their types, which rule escapes out: with
        // `fast-request` they are copied without the escape scan.
        #[cfg(feature = "fast-request")]
        self.send(&crate::response::CheckedReceipt {
            fields: &fields,
            mac: &mac,
        });
        #[cfg(not(feature = "fast-request"))]
        self.send(&crate::response::ReceiptResponse {
            fields: &fields,
            mac: &mac,
        });
    }

    fn balance(&mut self, balance: Amount) {
        let seq = self.next_seq();
        let State::LoggedIn { keys, .. } = &self.state else {
            return;
        };
        let tag = hex_encode::<64>(mac::balance(&keys.server_to_client, seq, balance).as_bytes());
        let text = balance.to_text();
        self.send(&BalanceFrame {
            op: "balance",
            seq,
            balance: &text,
            mac: &tag,
        });
    }

    /// Answers a `history` page, or with `deposits` a `statement` page (which names each
    /// entry's kind and is MAC'd under its own label, so neither passes for the other).
    fn history(&mut self, page: &crate::ledger::HistoryPage, deposits: bool) {
        let seq = self.next_seq();
        let State::LoggedIn { keys, .. } = &self.state else {
            return;
        };
        let key = &keys.server_to_client;
        let mut input = if deposits {
            mac::statement_start(key, seq, page.more)
        } else {
            mac::history_start(key, seq, page.more)
        };
        let mut amounts: Vec<String<24>, HISTORY_PAGE> = Vec::new();
        let mut entries: Vec<HistoryEntryFrame<'_>, HISTORY_PAGE> = Vec::new();
        for e in &page.entries {
            let (kind, id, from) = match &e.kind {
                EntryKind::Transfer { id, from } => ("transfer", id.as_str(), from.as_str()),
                // A ledger lists deposits only when asked; should one answer a `history`
                // request with one anyway, it is left out rather than shown as a transfer.
                EntryKind::Deposit if !deposits => continue,
                EntryKind::Deposit => ("deposit", "", ""),
            };
            let to = e.to.as_str();
            input = if deposits {
                mac::statement_entry(input, kind, id, from, to, e.amount, e.at)
            } else {
                mac::history_entry(input, id, from, to, e.amount, e.at)
            };
            let _ = amounts.push(e.amount.to_text());
            let _ = entries.push(HistoryEntryFrame {
                kind: deposits.then_some(kind),
                id: (!id.is_empty()).then_some(id),
                from: (!from.is_empty()).then_some(from),
                to,
                amount: "",
                at: e.at,
            });
        }
        for (entry, amount) in entries.iter_mut().zip(amounts.iter()) {
            entry.amount = amount;
        }
        let tag = hex_encode::<64>(input.finish().as_bytes());
        let out = HistoryFrame {
            op: if deposits { "statement" } else { "history" },
            seq,
            entries,
            more: page.more,
            mac: &tag,
        };
        self.send(&out);
    }

    /// Refuses a frame that changed nothing, and closes after too many.
    fn reject<R, const ADDRS: usize>(&mut self, shared: &ServerShared<R, ADDRS>, code: ErrorCode) {
        self.event(ServerEvent::Rejected { code });
        self.bad_frames = self.bad_frames.saturating_add(1);
        if self.bad_frames > shared.config.max_bad_frames {
            self.close_with(ErrorCode::TooManyBadFrames);
        } else {
            self.send_error(code);
        }
    }

    fn send_error(&mut self, code: ErrorCode) {
        self.send(&ErrorFrame {
            op: "error",
            code: code.name(),
            message: code.message(),
        });
    }

    fn event(&mut self, event: ServerEvent) {
        if self.events.is_full() {
            self.events.pop_front();
        }
        // Room was made above.
        let _ = self.events.push_back(event);
    }

    fn send<T: crate::response::WriteJson>(&mut self, message: &T) {
        match self.out.push_response(message, MAX_RESPONSE) {
            Ok(()) => {}
            // Only reachable if output was not drained before a close; the frame is dropped
            // and the connection ends.
            Err(_) => self.closing = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::encode_frame;
    use crate::message::{HistoryEntryFrame, ReceiptFrame};

    /// The largest response the server can produce fits in [`MAX_RESPONSE`].
    #[test]
    fn largest_responses_fit() {
        let long = "x".repeat(32);
        let amount = Amount::MAX.to_text();
        let mac = "f".repeat(64);
        let entry = HistoryEntryFrame {
            kind: Some("transfer"),
            id: Some(&long),
            from: Some(&long),
            to: &long,
            amount: &amount,
            at: u64::MAX,
        };
        let mut entries: Vec<HistoryEntryFrame<'_>, HISTORY_PAGE> = Vec::new();
        for _ in 0..HISTORY_PAGE {
            entries.push(entry.clone()).unwrap();
        }
        let history = HistoryFrame {
            op: "statement",
            seq: u32::MAX,
            entries,
            more: true,
            mac: &mac,
        };
        let mut buf = [0u8; MAX_RESPONSE];
        encode_frame(&history, &mut buf).unwrap();
        let receipt = ReceiptFrame {
            op: "receipt",
            seq: u32::MAX,
            id: &long,
            to: &long,
            amount: &amount,
            result: "insufficient_funds",
            balance: "184467440737095516.15",
            mac: &mac,
        };
        encode_frame(&receipt, &mut buf).unwrap();
        for code in ErrorCode::ALL {
            encode_frame(
                &ErrorFrame {
                    op: "error",
                    code: code.name(),
                    message: code.message(),
                },
                &mut buf,
            )
            .unwrap();
        }
        let nonce = "n".repeat(MAX_SCRAM_NONCE + NONCE_EXTENSION);
        let salt = "s".repeat(4 * MAX_SALT.div_ceil(3));
        encode_frame(
            &ChallengeFrame {
                op: "challenge",
                nonce: &nonce,
                salt: &salt,
                iterations: u32::MAX,
            },
            &mut buf,
        )
        .unwrap();
        let hex = "0".repeat(32);
        let nonces: Vec<&str, MAX_NONCE_BATCH> =
            (0..MAX_NONCE_BATCH).map(|_| hex.as_str()).collect();
        encode_frame(
            &NoncesFrame {
                op: "nonces",
                nonces,
            },
            &mut buf,
        )
        .unwrap();
    }

    /// Login failure names are what the host's `sessions.log` shows: stable and snake_case.
    #[test]
    fn login_failure_names() {
        let all = [
            LoginFailure::WrongPassword,
            LoginFailure::UnknownUser,
            LoginFailure::AccountLocked,
            LoginFailure::AddressThrottled,
        ];
        let names: std::vec::Vec<std::string::String> = all.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            names,
            [
                "wrong_password",
                "unknown_user",
                "account_locked",
                "address_throttled"
            ]
        );
        for f in all {
            assert_eq!(f.name(), f.to_string());
        }
    }

    /// What [`ServerSession::poll_event`] promises: with the default output buffer one
    /// `handle_input` call takes one frame, so a driver that drains events after each call
    /// loses none, however many bad frames arrive at once.
    #[test]
    fn one_frame_per_input_call_with_the_default_output() {
        use rand_chacha::rand_core::SeedableRng;
        let rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut shared: ServerShared<_, 4> = ServerShared::new(ServerConfig::DEFAULT, rng, [0; 32]);
        let mut session: ServerSession =
            ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), Instant::ZERO);
        let mut input: &[u8] = b"{}\n{}\n{}\n{}\n{}\n";
        let mut rejected = 0;
        while !input.is_empty() {
            let used = session.handle_input(&mut shared, Instant::ZERO, input);
            assert_eq!(used, 3, "one frame per call");
            input = &input[used..];
            let n = session.poll_transmit().len();
            session.advance_transmit(n);
            while let Some(event) = session.poll_event() {
                assert!(matches!(event, ServerEvent::Rejected { .. }), "{event:?}");
                rejected += 1;
            }
        }
        assert_eq!(rejected, 5);
    }
}
