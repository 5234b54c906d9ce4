//! The client side of a connection, as a sans-IO state machine.

use crate::amount::Amount;
use crate::auth::{
    self, AuthMessage, ClientProof, SessionKeys, SessionMacs, Verifier, MAX_SALT, MAX_SCRAM_NONCE,
    SALT_LEN,
};
use crate::crypto::{ct_eq, Key, Tag};
use crate::encoding::{base64_decode, base64_encode, hex_decode, hex_encode};
use crate::error::ErrorCode;
use crate::framing::{Decoded, FrameDecoder, OutputBuffer, MAX_RESPONSE};
use crate::ledger::{HistoryEntry, HistoryPage};
use crate::mac;
use crate::message::{
    parse_amount, parse_balance, BareOut, HistoryRequestOut, LoginOut, NoncesRequestOut, ProofOut,
    RegisterOut, Response, TransferOut, MAX_NONCE_BATCH,
};
use crate::names::{check_password, NameError, TransferId, Username};
use crate::replay::{Nonce, DEFAULT_NONCES, NONCE_LEN};
use core::fmt;
use heapless::{Deque, String, Vec};
use rand_core::{CryptoRng, RngCore};

/// Longest request a client sends (a registration, about 260 bytes), with headroom.
const MAX_REQUEST: usize = 384;
/// Requests that may be outstanding at once (pipelining depth).
pub const MAX_PIPELINE: usize = 16;

/// Client policy.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// The lowest PBKDF2 iteration count the client accepts in a challenge. A MITM that
    /// lowers it to make a captured proof cheap to crack is refused.
    pub min_iterations: u32,
    /// The highest iteration count the client will run, so a hostile server cannot make it
    /// spend minutes in PBKDF2.
    pub max_iterations: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            min_iterations: auth::DEFAULT_ITERATIONS,
            max_iterations: 10_000_000,
        }
    }
}

/// Error returned when the client cannot send a request.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// A username, transfer id or password is not acceptable.
    InvalidInput(NameError),
    /// A transfer amount of zero, or above [`Amount::MAX`].
    InvalidAmount,
    /// The request needs a logged-in session.
    NotLoggedIn,
    /// The request is not possible in the current step (e.g. answering with no challenge).
    WrongState,
    /// No server nonce is available: call [`ClientSession::request_nonces`] first.
    NoNonce,
    /// [`MAX_PIPELINE`] requests are outstanding, or output is not drained.
    Busy,
    /// The session detected an integrity failure or the server closed it; reconnect.
    Failed,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidInput(e) => write!(f, "invalid input: {e}"),
            ClientError::InvalidAmount => f.write_str("invalid amount: zero or too large"),
            ClientError::NotLoggedIn => f.write_str("not logged in"),
            ClientError::WrongState => f.write_str("not possible at this step"),
            ClientError::NoNonce => f.write_str("no nonce available; request nonces first"),
            ClientError::Busy => f.write_str("too many requests outstanding"),
            ClientError::Failed => f.write_str("the session has failed; reconnect"),
        }
    }
}

impl core::error::Error for ClientError {}

impl From<NameError> for ClientError {
    fn from(e: NameError) -> Self {
        ClientError::InvalidInput(e)
    }
}

/// A server response that must not be trusted. After one, the session is failed.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The challenge's iteration count is below [`ClientConfig::min_iterations`].
    IterationsTooLow {
        /// What the server offered.
        offered: u32,
    },
    /// The challenge's iteration count is above [`ClientConfig::max_iterations`].
    IterationsTooHigh {
        /// What the server offered.
        offered: u32,
    },
    /// The challenge's nonce does not extend ours.
    NonceMismatch,
    /// The server's SCRAM signature does not verify: it is not the server we registered with.
    BadServerSignature,
    /// A receipt's MAC does not verify: the confirmation was forged or altered.
    ForgedReceipt,
    /// A balance or history MAC does not verify.
    ForgedResponse,
    /// An authenticated response arrived out of sequence (dropped, replayed or reordered).
    BadSequence,
    /// A genuine receipt (its MAC verifies) for another of the transfers still waiting for
    /// an answer arrived first: the requests or the answers were reordered on the way.
    Reordered,
    /// A response that does not answer any outstanding request, or is malformed.
    UnexpectedResponse,
}

impl fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntegrityError::IterationsTooLow { offered } => {
                write!(f, "server offered only {offered} PBKDF2 iterations")
            }
            IntegrityError::IterationsTooHigh { offered } => {
                write!(
                    f,
                    "server asked for {offered} PBKDF2 iterations, more than allowed"
                )
            }
            IntegrityError::NonceMismatch => f.write_str("challenge nonce does not extend ours"),
            IntegrityError::BadServerSignature => f.write_str("server signature does not verify"),
            IntegrityError::ForgedReceipt => f.write_str(
                "receipt MAC does not verify: the server's confirmation was forged or altered",
            ),
            IntegrityError::ForgedResponse => f.write_str("response MAC does not verify"),
            IntegrityError::BadSequence => f.write_str("authenticated response out of sequence"),
            IntegrityError::Reordered => {
                f.write_str("a receipt for a later transfer arrived first: reordered on the way")
            }
            IntegrityError::UnexpectedResponse => f.write_str("unexpected or malformed response"),
        }
    }
}

impl core::error::Error for IntegrityError {}

/// A verified transfer outcome.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptInfo {
    /// Transfer id.
    pub id: TransferId,
    /// Recipient.
    pub to: Username,
    /// Amount.
    pub amount: Amount,
    /// `Ok` if committed, else the server's refusal.
    pub result: Result<(), ErrorCode>,
    /// The sender's balance after the transfer (or now, if refused).
    pub balance: Amount,
}

/// What kind of request an `error` response answered.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `register`.
    Register,
    /// `login` or `proof`.
    Login,
    /// `nonces`.
    Nonces,
    /// `transfer`.
    Transfer,
    /// `balance`.
    Balance,
    /// `history`.
    History,
    /// `logout`.
    Logout,
    /// `ping`.
    Ping,
}

/// Something that happened on the connection; drained with [`ClientSession::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Registration succeeded.
    Registered,
    /// The server sent an acceptable challenge: answer it with
    /// [`ClientSession::answer_with_password`] or [`ClientSession::answer_with_key`].
    Challenge {
        /// PBKDF2 iterations the password needs.
        iterations: u32,
    },
    /// Logged in; the server proved it knows our verifier.
    LoggedIn,
    /// Nonces arrived; `available` can be used now.
    Nonces {
        /// Usable nonces.
        available: usize,
    },
    /// A verified receipt.
    Receipt(ReceiptInfo),
    /// A verified balance.
    Balance(Amount),
    /// A verified page of history.
    History(HistoryPage),
    /// The server refused a request (this answer is not authenticated).
    Refused {
        /// What was refused.
        request: RequestKind,
        /// The server's code.
        code: ErrorCode,
        /// The transfer id, for a refused transfer.
        id: Option<TransferId>,
    },
    /// The server closed the session with a fatal error.
    Closed {
        /// The server's code.
        code: ErrorCode,
    },
    /// The server answered something that cannot be trusted; the session is failed.
    Integrity(IntegrityError),
    /// Logged out.
    LoggedOut,
    /// Answer to a ping.
    Pong,
}

enum Expect {
    Registered,
    Challenge,
    Welcome,
    Nonces,
    Transfer {
        id: TransferId,
        to: Username,
        amount: Amount,
        nonce: Nonce,
    },
    Balance,
    History,
    Bye,
    Pong,
}

impl Expect {
    fn kind(&self) -> RequestKind {
        match self {
            Expect::Registered => RequestKind::Register,
            Expect::Challenge | Expect::Welcome => RequestKind::Login,
            Expect::Nonces => RequestKind::Nonces,
            Expect::Transfer { .. } => RequestKind::Transfer,
            Expect::Balance => RequestKind::Balance,
            Expect::History => RequestKind::History,
            Expect::Bye => RequestKind::Logout,
            Expect::Pong => RequestKind::Ping,
        }
    }
}

enum State {
    Idle,
    LoggingIn {
        user: Username,
        client_nonce: String<MAX_SCRAM_NONCE>,
    },
    Challenged {
        user: Username,
        client_nonce: String<MAX_SCRAM_NONCE>,
        full_nonce: String<{ 2 * MAX_SCRAM_NONCE }>,
        salt: Vec<u8, MAX_SALT>,
        iterations: u32,
    },
    Proving {
        user: Username,
        expected: Tag,
        keys: SessionKeys,
    },
    LoggedIn {
        user: Username,
        keys: SessionMacs,
    },
    Failed,
}

/// One connection's client-side protocol engine.
///
/// `FRAME` bounds response lines (at least [`MAX_RESPONSE`]), `NONCES` the nonces held
/// (match the server's ring), `OUT` the output buffer.
///
/// # Driving a session
///
/// - Requests: [`register`](Self::register), [`login`](Self::login) then, on
///   [`ClientEvent::Challenge`], [`answer_with_password`](Self::answer_with_password);
///   [`request_nonces`](Self::request_nonces), [`transfer`](Self::transfer),
///   [`balance`](Self::balance), [`history`](Self::history), [`logout`](Self::logout).
/// - Input: [`handle_input`](Self::handle_input) with bytes from the server.
/// - Outputs: [`poll_transmit`](Self::poll_transmit) / [`advance_transmit`](Self::advance_transmit)
///   and [`poll_event`](Self::poll_event).
pub struct ClientSession<
    const FRAME: usize = MAX_RESPONSE,
    const NONCES: usize = DEFAULT_NONCES,
    const OUT: usize = 1024,
> {
    config: ClientConfig,
    decoder: FrameDecoder<FRAME>,
    out: OutputBuffer<OUT>,
    state: State,
    nonces: Deque<Nonce, NONCES>,
    expect: Deque<Expect, MAX_PIPELINE>,
    events: Deque<ClientEvent, 4>,
    seq: u32,
}

impl<const FRAME: usize, const NONCES: usize, const OUT: usize> ClientSession<FRAME, NONCES, OUT> {
    /// A fresh, logged-out session.
    pub fn new(config: ClientConfig) -> Self {
        const { assert!(OUT >= MAX_REQUEST && NONCES > 0, "buffers too small") };
        ClientSession {
            config,
            decoder: FrameDecoder::new(),
            out: OutputBuffer::new(),
            state: State::Idle,
            nonces: Deque::new(),
            expect: Deque::new(),
            events: Deque::new(),
            seq: 0,
        }
    }

    /// The logged-in user.
    pub fn user(&self) -> Option<&Username> {
        match &self.state {
            State::LoggedIn { user, .. } => Some(user),
            _ => None,
        }
    }

    /// True after an integrity failure or a fatal server error.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Nonces available for transfers.
    pub fn available_nonces(&self) -> usize {
        self.nonces.len()
    }

    /// Requests sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.expect.len()
    }

    /// Registers `user` with `password`: runs PBKDF2 here (the client pays for it) and
    /// sends only the SCRAM verifier, never the password.
    pub fn register<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        user: &str,
        password: &str,
        iterations: u32,
    ) -> Result<(), ClientError> {
        check_password(password)?;
        let user = Username::parse(user)?;
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        self.register_with_verifier(
            &user,
            &Verifier::from_password(password.as_bytes(), &salt, iterations),
        )
    }

    /// Registers `user` with a verifier computed elsewhere (e.g. provisioning a device).
    pub fn register_with_verifier(
        &mut self,
        user: &Username,
        v: &Verifier,
    ) -> Result<(), ClientError> {
        self.ready(false)?;
        let salt = base64_encode::<{ 4 * MAX_SALT.div_ceil(3) }>(&v.salt);
        let stored = base64_encode::<44>(&v.stored_key);
        let server = base64_encode::<44>(&v.server_key);
        self.send(
            &RegisterOut {
                op: "register",
                user: user.as_str(),
                salt: &salt,
                iterations: v.iterations,
                stored_key: &stored,
                server_key: &server,
            },
            Expect::Registered,
        )
    }

    /// Starts a SCRAM login as `user`.
    pub fn login<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        user: &str,
    ) -> Result<(), ClientError> {
        let user = Username::parse(user)?;
        self.ready(false)?;
        if matches!(self.state, State::LoggedIn { .. }) {
            return Err(ClientError::WrongState);
        }
        let mut random = [0u8; 18];
        rng.fill_bytes(&mut random);
        let client_nonce: String<MAX_SCRAM_NONCE> = {
            let b = base64_encode::<24>(&random);
            let mut s = String::new();
            let _ = s.push_str(&b);
            s
        };
        self.send(
            &LoginOut {
                op: "login",
                user: user.as_str(),
                nonce: &client_nonce,
            },
            Expect::Challenge,
        )?;
        self.state = State::LoggingIn { user, client_nonce };
        Ok(())
    }

    /// Answers the challenge with the password (runs PBKDF2 with the server's salt).
    pub fn answer_with_password(&mut self, password: &str) -> Result<(), ClientError> {
        let State::Challenged {
            salt, iterations, ..
        } = &self.state
        else {
            return Err(ClientError::WrongState);
        };
        let salted = auth::salted_password(password.as_bytes(), salt, *iterations);
        self.answer_with_key(&salted)
    }

    /// Answers the challenge with a provisioned `SaltedPassword` key instead of a password.
    pub fn answer_with_key(&mut self, salted_password: &Key) -> Result<(), ClientError> {
        if self.out.free() < MAX_REQUEST || self.expect.is_full() {
            return Err(ClientError::Busy);
        }
        let State::Challenged {
            user,
            client_nonce,
            full_nonce,
            salt,
            iterations,
        } = core::mem::replace(&mut self.state, State::Idle)
        else {
            return Err(ClientError::WrongState);
        };
        let auth = AuthMessage {
            user: user.as_str(),
            client_nonce: &client_nonce,
            full_nonce: &full_nonce,
            salt: &salt,
            iterations,
        };
        let proof = ClientProof::compute(salted_password, &auth);
        let text = base64_encode::<44>(&proof.proof);
        self.send(
            &ProofOut {
                op: "proof",
                proof: &text,
            },
            Expect::Welcome,
        )?;
        self.state = State::Proving {
            user,
            expected: proof.expected_server_signature,
            keys: proof.keys,
        };
        Ok(())
    }

    /// Asks the server for `count` (1 to 8) more nonces.
    pub fn request_nonces(&mut self, count: u8) -> Result<(), ClientError> {
        self.ready(true)?;
        let count = count.clamp(1, MAX_NONCE_BATCH as u8);
        self.send(
            &NoncesRequestOut {
                op: "nonces",
                count,
            },
            Expect::Nonces,
        )
    }

    /// Sends a transfer of `amount` to `to` with idempotency key `id`, using the oldest
    /// available nonce.
    pub fn transfer(&mut self, id: &str, to: &str, amount: Amount) -> Result<(), ClientError> {
        let id = TransferId::parse(id)?;
        let to = Username::parse(to)?;
        if amount.minor() == 0 || amount > Amount::MAX {
            return Err(ClientError::InvalidAmount);
        }
        self.ready(true)?;
        // Refuse before taking a nonce, so a busy client never burns one.
        if self.expect.is_full() || self.out.free() < MAX_REQUEST {
            return Err(ClientError::Busy);
        }
        let State::LoggedIn { user, keys } = &self.state else {
            return Err(ClientError::NotLoggedIn);
        };
        let Some(nonce) = self.nonces.pop_front() else {
            return Err(ClientError::NoNonce);
        };
        let tag = mac::transfer(
            &keys.client_to_server,
            user.as_str(),
            id.as_str(),
            to.as_str(),
            amount,
            &nonce,
        );
        let mac_text = hex_encode::<64>(tag.as_bytes());
        let nonce_text = hex_encode::<{ 2 * NONCE_LEN }>(&nonce);
        let msg = TransferOut {
            op: "transfer",
            id: id.as_str(),
            to: to.as_str(),
            amount,
            nonce: &nonce_text,
            mac: &mac_text,
        };
        let expect = Expect::Transfer {
            id: id.clone(),
            to: to.clone(),
            amount,
            nonce,
        };
        self.send(&msg, expect)
    }

    /// Asks for the balance.
    pub fn balance(&mut self) -> Result<(), ClientError> {
        self.ready(true)?;
        self.send(&BareOut { op: "balance" }, Expect::Balance)
    }

    /// Asks for a page of history, newest first, skipping `offset` entries.
    pub fn history(&mut self, offset: u32) -> Result<(), ClientError> {
        self.ready(true)?;
        self.send(
            &HistoryRequestOut {
                op: "history",
                offset,
            },
            Expect::History,
        )
    }

    /// Logs out; the server closes the connection after answering.
    pub fn logout(&mut self) -> Result<(), ClientError> {
        self.ready(true)?;
        self.send(&BareOut { op: "logout" }, Expect::Bye)
    }

    /// Sends a ping.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.ready(false)?;
        self.send(&BareOut { op: "ping" }, Expect::Pong)
    }

    /// Feeds bytes from the server; returns how many were consumed. Stops early while
    /// events are waiting to be polled.
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while used < input.len() && !self.events.is_full() {
            let (n, decoded) = self.decoder.decode(&input[used..]);
            used += n;
            match decoded {
                Decoded::Incomplete => {}
                Decoded::Error(_) => self.fail(IntegrityError::UnexpectedResponse),
                Decoded::Frame(frame) => {
                    // Split borrows: the frame lives in the decoder, the rest in `self`.
                    let response = Response::parse(frame);
                    let (state, ctx) = (
                        &mut self.state,
                        Ctx {
                            config: &self.config,
                            nonces: &mut self.nonces,
                            expect: &mut self.expect,
                            events: &mut self.events,
                            seq: &mut self.seq,
                        },
                    );
                    match response {
                        Ok(r) => handle_response(state, ctx, r),
                        Err(_) => {
                            *state = State::Failed;
                            push(
                                ctx.events,
                                ClientEvent::Integrity(IntegrityError::UnexpectedResponse),
                            );
                        }
                    }
                }
            }
        }
        used
    }

    /// Bytes to write to the server.
    pub fn poll_transmit(&self) -> &[u8] {
        self.out.pending()
    }

    /// Marks `n` bytes of [`poll_transmit`](Self::poll_transmit) as written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.out.advance(n);
    }

    /// The next event, oldest first.
    ///
    /// Events wait in a queue of four; an event arriving while four are waiting would drop
    /// the oldest. That never happens: only [`handle_input`](Self::handle_input) adds
    /// events, at most one per frame, and it takes no frame while the queue is full (it
    /// returns early; offer the rest again after draining this).
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------------------------

    fn ready(&self, need_login: bool) -> Result<(), ClientError> {
        match self.state {
            State::Failed => Err(ClientError::Failed),
            State::LoggedIn { .. } => Ok(()),
            _ if need_login => Err(ClientError::NotLoggedIn),
            _ => Ok(()),
        }
    }

    fn fail(&mut self, e: IntegrityError) {
        self.state = State::Failed;
        push(&mut self.events, ClientEvent::Integrity(e));
    }

    fn send<T: serde::Serialize>(
        &mut self,
        message: &T,
        expect: Expect,
    ) -> Result<(), ClientError> {
        if self.expect.is_full() {
            return Err(ClientError::Busy);
        }
        self.out
            .push(message, MAX_REQUEST)
            .map_err(|_| ClientError::Busy)?;
        // Not full: checked above.
        let _ = self.expect.push_back(expect);
        Ok(())
    }
}

/// The parts of a client session a response may change (all but the decoder).
struct Ctx<'s, const NONCES: usize> {
    config: &'s ClientConfig,
    nonces: &'s mut Deque<Nonce, NONCES>,
    expect: &'s mut Deque<Expect, MAX_PIPELINE>,
    events: &'s mut Deque<ClientEvent, 4>,
    seq: &'s mut u32,
}

fn push(events: &mut Deque<ClientEvent, 4>, e: ClientEvent) {
    if events.is_full() {
        events.pop_front();
    }
    let _ = events.push_back(e);
}

fn handle_response<const NONCES: usize>(
    state: &mut State,
    ctx: Ctx<'_, NONCES>,
    response: Response<'_>,
) {
    let events = ctx.events;
    let mut fail = |state: &mut State, e: IntegrityError| {
        *state = State::Failed;
        push(events, ClientEvent::Integrity(e));
    };
    if matches!(state, State::Failed) {
        return;
    }
    if let Response::Error(e) = &response {
        let code = ErrorCode::from_name(e.code).unwrap_or(ErrorCode::Internal);
        if code.is_fatal() || ctx.expect.is_empty() {
            *state = State::Failed;
            ctx.expect.clear();
            return push(events, ClientEvent::Closed { code });
        }
    }
    let Some(expect) = ctx.expect.pop_front() else {
        return fail(state, IntegrityError::UnexpectedResponse);
    };
    match (expect, response) {
        (expect, Response::Error(e)) => {
            let code = ErrorCode::from_name(e.code).unwrap_or(ErrorCode::Internal);
            let id = match &expect {
                Expect::Transfer { id, .. } => Some(id.clone()),
                _ => None,
            };
            if matches!(expect, Expect::Challenge | Expect::Welcome) {
                *state = State::Idle;
            }
            push(
                events,
                ClientEvent::Refused {
                    request: expect.kind(),
                    code,
                    id,
                },
            );
        }
        (Expect::Registered, Response::Registered(_)) => push(events, ClientEvent::Registered),
        (Expect::Challenge, Response::Challenge(c)) => {
            let State::LoggingIn { user, client_nonce } = core::mem::replace(state, State::Idle)
            else {
                return fail(state, IntegrityError::UnexpectedResponse);
            };
            if c.iterations < ctx.config.min_iterations {
                return fail(
                    state,
                    IntegrityError::IterationsTooLow {
                        offered: c.iterations,
                    },
                );
            }
            if c.iterations > ctx.config.max_iterations {
                let offered = c.iterations;
                return fail(state, IntegrityError::IterationsTooHigh { offered });
            }
            if !c.nonce.starts_with(client_nonce.as_str())
                || c.nonce.len() == client_nonce.len()
                || !c.nonce.bytes().all(crate::message::is_nonce_char)
            {
                return fail(state, IntegrityError::NonceMismatch);
            }
            let mut salt_buf = [0u8; MAX_SALT];
            let (Ok(salt), Ok(full_nonce)) = (
                base64_decode(c.salt, &mut salt_buf),
                String::try_from(c.nonce),
            ) else {
                return fail(state, IntegrityError::UnexpectedResponse);
            };
            let mut salt_vec = Vec::new();
            let _ = salt_vec.extend_from_slice(salt);
            *state = State::Challenged {
                user,
                client_nonce,
                full_nonce,
                salt: salt_vec,
                iterations: c.iterations,
            };
            push(
                events,
                ClientEvent::Challenge {
                    iterations: c.iterations,
                },
            );
        }
        (Expect::Welcome, Response::Welcome(w)) => {
            let State::Proving {
                user,
                expected,
                keys,
            } = core::mem::replace(state, State::Idle)
            else {
                return fail(state, IntegrityError::UnexpectedResponse);
            };
            let mut sig = [0u8; 32];
            let ok = matches!(base64_decode(w.signature, &mut sig), Ok(s) if s.len() == 32)
                && expected.ct_eq(&sig);
            if !ok {
                return fail(state, IntegrityError::BadServerSignature);
            }
            *ctx.seq = 0;
            ctx.nonces.clear();
            *state = State::LoggedIn {
                user,
                keys: keys.precompute(),
            };
            push(events, ClientEvent::LoggedIn);
        }
        (Expect::Nonces, Response::Nonces(n)) => {
            for text in &n.nonces {
                let Ok(nonce) = hex_decode::<NONCE_LEN>(text) else {
                    return fail(state, IntegrityError::UnexpectedResponse);
                };
                if ctx.nonces.is_full() {
                    // The server's ring evicts its oldest too; stay in step with it.
                    ctx.nonces.pop_front();
                }
                let _ = ctx.nonces.push_back(nonce);
            }
            push(
                events,
                ClientEvent::Nonces {
                    available: ctx.nonces.len(),
                },
            );
        }
        (
            Expect::Transfer {
                id,
                to,
                amount,
                nonce,
            },
            Response::Receipt(r),
        ) => {
            let State::LoggedIn { keys, .. } = &*state else {
                return fail(state, IntegrityError::UnexpectedResponse);
            };
            let result = if r.result == "committed" {
                Ok(())
            } else {
                Err(ErrorCode::from_name(r.result).unwrap_or(ErrorCode::Internal))
            };
            let Ok(balance) = parse_balance(r.balance) else {
                return fail(state, IntegrityError::ForgedReceipt);
            };
            // The MAC covers what we asked for; the receipt's echo must match it.
            let echo_ok =
                r.id == id.as_str() && r.to == to.as_str() && parse_amount(r.amount) == Ok(amount);
            let fields = mac::ReceiptFields {
                seq: r.seq,
                id: id.as_str(),
                to: to.as_str(),
                amount,
                result: r.result,
                balance,
                nonce: &nonce,
            };
            let tag = mac::receipt(&keys.server_to_client, &fields);
            let mac_ok = hex_decode::<32>(r.mac)
                .map(|m| tag.ct_eq(&m))
                .unwrap_or(false);
            if !(echo_ok && mac_ok) {
                // A receipt that verifies for another transfer still waiting for its answer is
                // genuine but out of order: say so rather than "forged".
                let reordered = ctx.expect.iter().any(|e| match e {
                    Expect::Transfer {
                        id,
                        to,
                        amount,
                        nonce,
                    } => {
                        let fields = mac::ReceiptFields {
                            seq: r.seq,
                            id: id.as_str(),
                            to: to.as_str(),
                            amount: *amount,
                            result: r.result,
                            balance,
                            nonce,
                        };
                        r.id == id.as_str()
                            && r.to == to.as_str()
                            && parse_amount(r.amount) == Ok(*amount)
                            && hex_decode::<32>(r.mac)
                                .map(|m| mac::receipt(&keys.server_to_client, &fields).ct_eq(&m))
                                .unwrap_or(false)
                    }
                    _ => false,
                });
                let e = if reordered {
                    IntegrityError::Reordered
                } else {
                    IntegrityError::ForgedReceipt
                };
                return fail(state, e);
            }
            if r.seq != ctx.seq.wrapping_add(1) {
                return fail(state, IntegrityError::BadSequence);
            }
            *ctx.seq = r.seq;
            push(
                events,
                ClientEvent::Receipt(ReceiptInfo {
                    id,
                    to,
                    amount,
                    result,
                    balance,
                }),
            );
        }
        (Expect::Balance, Response::Balance(b)) => {
            let State::LoggedIn { keys, .. } = &*state else {
                return fail(state, IntegrityError::UnexpectedResponse);
            };
            let Ok(balance) = parse_balance(b.balance) else {
                return fail(state, IntegrityError::ForgedResponse);
            };
            let tag = mac::balance(&keys.server_to_client, b.seq, balance);
            if !hex_decode::<32>(b.mac)
                .map(|m| tag.ct_eq(&m))
                .unwrap_or(false)
            {
                return fail(state, IntegrityError::ForgedResponse);
            }
            if b.seq != ctx.seq.wrapping_add(1) {
                return fail(state, IntegrityError::BadSequence);
            }
            *ctx.seq = b.seq;
            push(events, ClientEvent::Balance(balance));
        }
        (Expect::History, Response::History(h)) => {
            let State::LoggedIn { keys, .. } = &*state else {
                return fail(state, IntegrityError::UnexpectedResponse);
            };
            let mut input = mac::history_start(&keys.server_to_client, h.seq, h.more);
            let mut page = HistoryPage {
                entries: Vec::new(),
                more: h.more,
            };
            for e in &h.entries {
                let parsed = (
                    TransferId::parse(e.id),
                    Username::parse(e.from),
                    Username::parse(e.to),
                    parse_amount(e.amount),
                );
                let (Ok(id), Ok(from), Ok(to), Ok(amount)) = parsed else {
                    return fail(state, IntegrityError::ForgedResponse);
                };
                input = mac::history_entry(input, e.id, e.from, e.to, amount, e.at);
                let _ = page.entries.push(HistoryEntry {
                    id,
                    from,
                    to,
                    amount,
                    at: e.at,
                });
            }
            if !hex_decode::<32>(h.mac)
                .map(|m| input.finish().ct_eq(&m))
                .unwrap_or(false)
            {
                return fail(state, IntegrityError::ForgedResponse);
            }
            if h.seq != ctx.seq.wrapping_add(1) {
                return fail(state, IntegrityError::BadSequence);
            }
            *ctx.seq = h.seq;
            push(events, ClientEvent::History(page));
        }
        (Expect::Bye, Response::Bye) => {
            *state = State::Idle;
            ctx.nonces.clear();
            push(events, ClientEvent::LoggedOut);
        }
        (Expect::Pong, Response::Pong) => push(events, ClientEvent::Pong),
        _ => fail(state, IntegrityError::UnexpectedResponse),
    }
}

#[allow(dead_code)]
fn _assert_ct(a: &[u8]) -> bool {
    ct_eq(a, a)
}
