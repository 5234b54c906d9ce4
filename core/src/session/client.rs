//! The client side of a connection, as a sans-IO state machine.

use crate::amount::Amount;
use crate::auth::{
    self, AuthMessage, ClientProof, SessionKeys, SessionMacs, Verifier, MAX_SALT, MAX_SCRAM_NONCE,
    SALT_LEN,
};
use crate::crypto::{Key, Tag};
use crate::encoding::{base64_decode, base64_encode, hex_decode};
use crate::error::ErrorCode;
use crate::framing::{Decoded, FrameDecoder, InsufficientSizeError, OutputBuffer, MAX_RESPONSE};
use crate::ledger::{EntryKind, HistoryEntry, HistoryPage};
use crate::mac;
use crate::message::{
    parse_amount, parse_balance, BalanceFrame, BareFrame, ChallengeFrame, HistoryFrame,
    HistoryRequestFrame, LoginFrame, NoncesFrame, NoncesRequestFrame, ProofFrame, ReceiptFrame,
    RegisterFrame, Response, WelcomeFrame, MAX_NONCE_BATCH,
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
            max_iterations: auth::MAX_ITERATIONS,
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
    /// `history` or `statement`.
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
    /// A verified page of history (transfers only) or of a statement (deposits too).
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
    Transfer(SentTransfer),
    Balance,
    History,
    Statement,
    Bye,
    Pong,
}

/// A transfer sent and not yet answered: what its receipt must echo and its MAC covers.
struct SentTransfer {
    id: TransferId,
    to: Username,
    amount: Amount,
    nonce: Nonce,
}

impl Expect {
    fn kind(&self) -> RequestKind {
        match self {
            Expect::Registered => RequestKind::Register,
            Expect::Challenge | Expect::Welcome => RequestKind::Login,
            Expect::Nonces => RequestKind::Nonces,
            Expect::Transfer(_) => RequestKind::Transfer,
            Expect::Balance => RequestKind::Balance,
            Expect::History | Expect::Statement => RequestKind::History,
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
///
/// A driver loops: poll an event and act on it (the request it calls for is accepted: the
/// session has taken no response since), write out `poll_transmit`, and feed input, offering
/// again what `handle_input` did not consume, which it leaves while an event waits. A
/// [`ClientEvent::Closed`] or [`ClientEvent::Integrity`] event ends the session: every request
/// is then refused with [`ClientError::Failed`]; reconnect with a new session and re-send
/// unanswered transfers with the same ids.
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
            &RegisterFrame {
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

    /// The logged-in session's MAC keys, for the test kit only (feature `_testkit`): attack
    /// tests and fuzz harnesses log in through the session, then forge frames with its keys.
    /// A product build has no way to take a key out of a session.
    #[cfg(feature = "_testkit")]
    pub fn danger_session_macs(&self) -> Option<&SessionMacs> {
        match &self.state {
            State::LoggedIn { keys, .. } => Some(keys),
            _ => None,
        }
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
            &LoginFrame {
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
        self.ready(false)?;
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
        self.ready(false)?;
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
            &ProofFrame {
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
            &NoncesRequestFrame {
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
        let expect = Expect::Transfer(SentTransfer {
            id: id.clone(),
            to: to.clone(),
            amount,
            nonce,
        });
        // The host (`fast-request`) writes the frame in one piece, the same bytes as the
        // `TransferFrame` below (`response::CheckedTransfer`'s proptest); the device images
        // through serde-json-core, as before.
        #[cfg(feature = "fast-request")]
        let sent = self.send_response(
            &crate::response::CheckedTransfer {
                id: &id,
                to: &to,
                amount,
                nonce: &nonce,
                mac: &tag,
            },
            expect,
        );
        #[cfg(not(feature = "fast-request"))]
        let sent = {
            use crate::encoding::hex_encode;
            let mac_text = hex_encode::<64>(tag.as_bytes());
            let nonce_text = hex_encode::<{ 2 * NONCE_LEN }>(&nonce);
            let msg = crate::message::TransferFrame {
                op: "transfer",
                id: id.as_str(),
                to: to.as_str(),
                amount,
                nonce: &nonce_text,
                mac: &mac_text,
            };
            self.send(&msg, expect)
        };
        sent
    }

    /// Asks for the balance.
    pub fn balance(&mut self) -> Result<(), ClientError> {
        self.ready(true)?;
        self.send(&BareFrame { op: "balance" }, Expect::Balance)
    }

    /// Asks for a page of history, newest first, skipping `offset` entries.
    pub fn history(&mut self, offset: u32) -> Result<(), ClientError> {
        self.ready(true)?;
        self.send(
            &HistoryRequestFrame {
                op: "history",
                offset,
            },
            Expect::History,
        )
    }

    /// Asks for a page of the statement: the history with the deposits made to the account
    /// (opening balance, an administrator's deposits) among the transfers, newest first,
    /// skipping `offset` entries. A server older than statements refuses it (`malformed`).
    pub fn statement(&mut self, offset: u32) -> Result<(), ClientError> {
        self.ready(true)?;
        self.send(
            &HistoryRequestFrame {
                op: "statement",
                offset,
            },
            Expect::Statement,
        )
    }

    /// Logs out; the server closes the connection after answering.
    pub fn logout(&mut self) -> Result<(), ClientError> {
        self.ready(true)?;
        self.send(&BareFrame { op: "logout" }, Expect::Bye)
    }

    /// Sends a ping.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.ready(false)?;
        self.send(&BareFrame { op: "ping" }, Expect::Pong)
    }

    /// Feeds bytes from the server; returns how many were consumed. Takes no more input once
    /// a response has produced an event, until that event is polled: offer the rest again
    /// after [`poll_event`](Self::poll_event).
    ///
    /// So the event a driver polls always describes the session as it is when the driver acts
    /// on it: after [`ClientEvent::Challenge`] the answer is accepted and after
    /// [`ClientEvent::Registered`] the login, even when the server's next frame, already
    /// read, closes the session (that close is then the next event).
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while used < input.len() && self.events.is_empty() {
            let (n, decoded) = self.decoder.decode(&input[used..]);
            used += n;
            // Split borrows: a frame lives in the decoder, what it may change in the rest.
            let mut handler = ResponseHandler {
                config: &self.config,
                state: &mut self.state,
                nonces: &mut self.nonces,
                expect: &mut self.expect,
                events: &mut self.events,
                seq: &mut self.seq,
            };
            match decoded {
                Decoded::Incomplete => {}
                Decoded::Frame(frame) => match Response::parse(frame) {
                    Ok(response) => handler.handle_response(response),
                    Err(_) => handler.fail(IntegrityError::UnexpectedResponse),
                },
                Decoded::Error(_) => handler.fail(IntegrityError::UnexpectedResponse),
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
    /// At most one event waits at a time: only [`handle_input`](Self::handle_input) adds
    /// events, one per frame, and it takes no frame while one is waiting (it returns early;
    /// offer the rest again after polling this). So no event is ever dropped, and the session
    /// has taken nothing since the event it hands out.
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

    fn send<T: serde::Serialize>(
        &mut self,
        message: &T,
        expect: Expect,
    ) -> Result<(), ClientError> {
        self.send_with(expect, |out| out.push(message, MAX_REQUEST))
    }

    /// [`send`](Self::send) with the server's writer
    /// ([`encode_response`](crate::response::encode_response)) for a frame it writes: the
    /// host's transfers.
    #[cfg(feature = "fast-request")]
    fn send_response<T: crate::response::WriteJson>(
        &mut self,
        message: &T,
        expect: Expect,
    ) -> Result<(), ClientError> {
        self.send_with(expect, |out| out.push_response(message, MAX_REQUEST))
    }

    /// Queues a request (`push` writes it into the output) and the answer it expects, or
    /// neither: `Busy` when the expected answers or the output are full.
    fn send_with(
        &mut self,
        expect: Expect,
        push: impl FnOnce(&mut OutputBuffer<OUT>) -> Result<(), InsufficientSizeError>,
    ) -> Result<(), ClientError> {
        if self.expect.is_full() {
            return Err(ClientError::Busy);
        }
        push(&mut self.out).map_err(|_| ClientError::Busy)?;
        // Not full: checked above.
        let _ = self.expect.push_back(expect);
        Ok(())
    }
}

/// A client session without its decoder: everything a response may change. The frame being
/// handled is borrowed from the decoder, so [`ClientSession::handle_input`] lends the rest of
/// the session to the handlers through this.
///
/// [`handle_response`](Self::handle_response) dispatches to one small method per response
/// kind; every authenticated response (receipt, balance, history) passes through
/// [`authenticate`](Self::authenticate).
struct ResponseHandler<'s, const NONCES: usize> {
    config: &'s ClientConfig,
    state: &'s mut State,
    nonces: &'s mut Deque<Nonce, NONCES>,
    expect: &'s mut Deque<Expect, MAX_PIPELINE>,
    events: &'s mut Deque<ClientEvent, 4>,
    seq: &'s mut u32,
}

impl<const NONCES: usize> ResponseHandler<'_, NONCES> {
    fn handle_response(&mut self, response: Response<'_>) {
        if matches!(self.state, State::Failed) {
            return;
        }
        if let Response::Error(e) = &response {
            let code = ErrorCode::from_name(e.code).unwrap_or(ErrorCode::Internal);
            if code.is_fatal() || self.expect.is_empty() {
                return self.closed(code);
            }
        }
        let Some(expect) = self.expect.pop_front() else {
            return self.fail(IntegrityError::UnexpectedResponse);
        };
        match (expect, response) {
            (expect, Response::Error(e)) => self.refused(expect, e.code),
            (Expect::Registered, Response::Registered(_)) => self.event(ClientEvent::Registered),
            (Expect::Challenge, Response::Challenge(c)) => self.challenge(&c),
            (Expect::Welcome, Response::Welcome(w)) => self.welcome(&w),
            (Expect::Nonces, Response::Nonces(n)) => self.nonces(&n),
            (Expect::Transfer(sent), Response::Receipt(r)) => self.receipt(sent, &r),
            (Expect::Balance, Response::Balance(b)) => self.balance(&b),
            (Expect::History, Response::History(h)) => self.history(&h, false),
            (Expect::Statement, Response::Statement(h)) => self.history(&h, true),
            (Expect::Bye, Response::Bye) => self.bye(),
            (Expect::Pong, Response::Pong) => self.event(ClientEvent::Pong),
            _ => self.fail(IntegrityError::UnexpectedResponse),
        }
    }

    /// A fatal error, or one that answers nothing: the server is closing the session.
    fn closed(&mut self, code: ErrorCode) {
        *self.state = State::Failed;
        self.expect.clear();
        self.event(ClientEvent::Closed { code });
    }

    /// A non-fatal error answering `expect`. A refused login returns to the logged-out state.
    fn refused(&mut self, expect: Expect, code: &str) {
        let code = ErrorCode::from_name(code).unwrap_or(ErrorCode::Internal);
        let id = match &expect {
            Expect::Transfer(sent) => Some(sent.id.clone()),
            _ => None,
        };
        if matches!(expect, Expect::Challenge | Expect::Welcome) {
            *self.state = State::Idle;
        }
        self.event(ClientEvent::Refused {
            request: expect.kind(),
            code,
            id,
        });
    }

    fn challenge(&mut self, c: &ChallengeFrame<'_>) {
        let State::LoggingIn { user, client_nonce } = core::mem::replace(self.state, State::Idle)
        else {
            return self.fail(IntegrityError::UnexpectedResponse);
        };
        let offered = c.iterations;
        if offered < self.config.min_iterations {
            return self.fail(IntegrityError::IterationsTooLow { offered });
        }
        if offered > self.config.max_iterations {
            return self.fail(IntegrityError::IterationsTooHigh { offered });
        }
        if !c.nonce.starts_with(client_nonce.as_str())
            || c.nonce.len() == client_nonce.len()
            || !c.nonce.bytes().all(crate::message::is_nonce_char)
        {
            return self.fail(IntegrityError::NonceMismatch);
        }
        let mut salt_buf = [0u8; MAX_SALT];
        let (Ok(salt), Ok(full_nonce)) = (
            base64_decode(c.salt, &mut salt_buf),
            String::try_from(c.nonce),
        ) else {
            return self.fail(IntegrityError::UnexpectedResponse);
        };
        let mut salt_vec = Vec::new();
        // base64_decode wrote at most MAX_SALT bytes.
        let _ = salt_vec.extend_from_slice(salt);
        *self.state = State::Challenged {
            user,
            client_nonce,
            full_nonce,
            salt: salt_vec,
            iterations: offered,
        };
        self.event(ClientEvent::Challenge {
            iterations: offered,
        });
    }

    fn welcome(&mut self, w: &WelcomeFrame<'_>) {
        let State::Proving {
            user,
            expected,
            keys,
        } = core::mem::replace(self.state, State::Idle)
        else {
            return self.fail(IntegrityError::UnexpectedResponse);
        };
        let mut signature = [0u8; 32];
        let genuine = matches!(base64_decode(w.signature, &mut signature), Ok(s) if s.len() == 32)
            && expected.ct_eq(&signature);
        if !genuine {
            return self.fail(IntegrityError::BadServerSignature);
        }
        *self.seq = 0;
        self.nonces.clear();
        *self.state = State::LoggedIn {
            user,
            keys: keys.precompute(),
        };
        self.event(ClientEvent::LoggedIn);
    }

    fn nonces(&mut self, n: &NoncesFrame<'_>) {
        for text in &n.nonces {
            let Ok(nonce) = hex_decode::<NONCE_LEN>(text) else {
                return self.fail(IntegrityError::UnexpectedResponse);
            };
            if self.nonces.is_full() {
                // The server's ring evicts its oldest too; stay in step with it.
                self.nonces.pop_front();
            }
            // Room was made above.
            let _ = self.nonces.push_back(nonce);
        }
        self.event(ClientEvent::Nonces {
            available: self.nonces.len(),
        });
    }

    fn receipt(&mut self, sent: SentTransfer, r: &ReceiptFrame<'_>) {
        let Some(keys) = self.keys() else {
            return self.fail(IntegrityError::UnexpectedResponse);
        };
        let Ok(balance) = parse_balance(r.balance) else {
            return self.fail(IntegrityError::ForgedReceipt);
        };
        // The MAC covers what we asked for; the receipt's echo must match it.
        let echo_ok = r.id == sent.id.as_str()
            && r.to == sent.to.as_str()
            && parse_amount(r.amount) == Ok(sent.amount);
        let tag = mac::receipt(
            &keys.server_to_client,
            &mac::ReceiptFields {
                seq: r.seq,
                id: sent.id.as_str(),
                to: sent.to.as_str(),
                amount: sent.amount,
                result: r.result,
                balance,
                nonce: &sent.nonce,
            },
        );
        if !echo_ok {
            // A receipt that verifies for another transfer still waiting for its answer is
            // genuine but out of order: say so rather than "forged".
            let reordered = self.expect.iter().any(|e| match e {
                Expect::Transfer(other) => {
                    r.id == other.id.as_str()
                        && r.to == other.to.as_str()
                        && parse_amount(r.amount) == Ok(other.amount)
                        && hex_decode::<32>(r.mac)
                            .map(|m| {
                                let fields = mac::ReceiptFields {
                                    seq: r.seq,
                                    id: other.id.as_str(),
                                    to: other.to.as_str(),
                                    amount: other.amount,
                                    result: r.result,
                                    balance,
                                    nonce: &other.nonce,
                                };
                                mac::receipt(&keys.server_to_client, &fields).ct_eq(&m)
                            })
                            .unwrap_or(false)
                }
                _ => false,
            });
            return self.fail(if reordered {
                IntegrityError::Reordered
            } else {
                IntegrityError::ForgedReceipt
            });
        }
        if !self.authenticate(&tag, r.mac, r.seq, IntegrityError::ForgedReceipt) {
            return;
        }
        let result = if r.result == "committed" {
            Ok(())
        } else {
            Err(ErrorCode::from_name(r.result).unwrap_or(ErrorCode::Internal))
        };
        self.event(ClientEvent::Receipt(ReceiptInfo {
            id: sent.id,
            to: sent.to,
            amount: sent.amount,
            result,
            balance,
        }));
    }

    fn balance(&mut self, b: &BalanceFrame<'_>) {
        let Some(keys) = self.keys() else {
            return self.fail(IntegrityError::UnexpectedResponse);
        };
        let Ok(balance) = parse_balance(b.balance) else {
            return self.fail(IntegrityError::ForgedResponse);
        };
        let tag = mac::balance(&keys.server_to_client, b.seq, balance);
        if self.authenticate(&tag, b.mac, b.seq, IntegrityError::ForgedResponse) {
            self.event(ClientEvent::Balance(balance));
        }
    }

    /// Verifies a `history` page or (`statement`) a statement page. Every entry must have
    /// exactly the fields of its kind: no `kind` in a history page; in a statement `kind`
    /// `transfer` with `id` and `from`, or `deposit` without them.
    fn history(&mut self, h: &HistoryFrame<'_>, statement: bool) {
        let Some(keys) = self.keys() else {
            return self.fail(IntegrityError::UnexpectedResponse);
        };
        let key = &keys.server_to_client;
        let mut input = if statement {
            mac::statement_start(key, h.seq, h.more)
        } else {
            mac::history_start(key, h.seq, h.more)
        };
        let mut page = HistoryPage {
            entries: Vec::new(),
            more: h.more,
        };
        for e in &h.entries {
            let (Ok(to), Ok(amount)) = (Username::parse(e.to), parse_amount(e.amount)) else {
                return self.fail(IntegrityError::ForgedResponse);
            };
            let kind = match (statement, e.kind, e.id, e.from) {
                (false, None, Some(id), Some(from))
                | (true, Some("transfer"), Some(id), Some(from)) => {
                    let (Ok(id), Ok(from)) = (TransferId::parse(id), Username::parse(from)) else {
                        return self.fail(IntegrityError::ForgedResponse);
                    };
                    EntryKind::Transfer { id, from }
                }
                (true, Some("deposit"), None, None) => EntryKind::Deposit,
                _ => return self.fail(IntegrityError::ForgedResponse),
            };
            let (id, from) = (e.id.unwrap_or(""), e.from.unwrap_or(""));
            input = if statement {
                let name = e.kind.unwrap_or("");
                mac::statement_entry(input, name, id, from, e.to, amount, e.at)
            } else {
                mac::history_entry(input, id, from, e.to, amount, e.at)
            };
            // The wire page holds at most HISTORY_PAGE entries, as does this one.
            let _ = page.entries.push(HistoryEntry {
                kind,
                to,
                amount,
                at: e.at,
            });
        }
        let tag = input.finish();
        if self.authenticate(&tag, h.mac, h.seq, IntegrityError::ForgedResponse) {
            self.event(ClientEvent::History(page));
        }
    }

    fn bye(&mut self) {
        *self.state = State::Idle;
        self.nonces.clear();
        self.event(ClientEvent::LoggedOut);
    }

    /// The one rule for authenticated responses: `mac` (hex) must be `tag`, compared in
    /// constant time, and `seq` must be one more than the last accepted, so a dropped,
    /// replayed or reordered response is caught. On success the sequence moves on; otherwise
    /// the session fails with `forged` (or [`IntegrityError::BadSequence`]) and returns
    /// `false`.
    fn authenticate(&mut self, tag: &Tag, mac: &str, seq: u32, forged: IntegrityError) -> bool {
        let genuine = hex_decode::<32>(mac)
            .map(|m| tag.ct_eq(&m))
            .unwrap_or(false);
        if !genuine {
            self.fail(forged);
            return false;
        }
        if seq != self.seq.wrapping_add(1) {
            self.fail(IntegrityError::BadSequence);
            return false;
        }
        *self.seq = seq;
        true
    }

    /// The logged-in session's keys.
    fn keys(&self) -> Option<&SessionMacs> {
        match &*self.state {
            State::LoggedIn { keys, .. } => Some(keys),
            _ => None,
        }
    }

    fn fail(&mut self, e: IntegrityError) {
        *self.state = State::Failed;
        self.event(ClientEvent::Integrity(e));
    }

    fn event(&mut self, e: ClientEvent) {
        if self.events.is_full() {
            self.events.pop_front();
        }
        // Room was made above.
        let _ = self.events.push_back(e);
    }
}

#[cfg(test)]
mod tests {
    //! The client driven against a real [`ServerSession`] and [`MemLedger`] in memory (no
    //! sockets, a fixed clock), with the server's bytes in hand so a test can drop, repeat or
    //! alter them as a man in the middle would; and against hand-made error frames.

    use super::*;
    use crate::ledger::{Ledger, MemLedger};
    use crate::lockout::PeerAddr;
    use crate::session::server::{ServerConfig, ServerSession, ServerShared};
    use crate::time::Instant;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;
    use std::vec::Vec as StdVec;

    /// PBKDF2 iterations of the test users: low, for speed.
    const ITERATIONS: u32 = 64;

    /// A client and a server session joined by the test, with the server's ledger.
    struct Peers {
        client: ClientSession,
        server: ServerSession,
        shared: ServerShared<ChaCha8Rng, 4>,
        ledger: MemLedger<4, 8>,
        rng: ChaCha8Rng,
        now: Instant,
    }

    impl Peers {
        fn new(seed: u64) -> Peers {
            let config = ServerConfig {
                min_iterations: ITERATIONS,
                unknown_user_iterations: ITERATIONS,
                ..ServerConfig::default()
            };
            Peers {
                client: ClientSession::new(ClientConfig {
                    min_iterations: ITERATIONS,
                    ..ClientConfig::default()
                }),
                server: ServerSession::new(PeerAddr::ipv4([192, 0, 2, 1]), Instant::ZERO),
                shared: ServerShared::new(config, ChaCha8Rng::seed_from_u64(seed), [7; 32]),
                ledger: MemLedger::new(Amount(10_000)),
                rng: ChaCha8Rng::seed_from_u64(seed ^ 1),
                now: Instant::ZERO,
            }
        }

        /// A session logged in as `alice`, with `bob` registered and 4 nonces in hand.
        fn alice_with_nonces(seed: u64) -> Peers {
            let mut p = Peers::new(seed);
            for user in ["bob", "alice"] {
                p.client
                    .register(&mut p.rng, user, "a long password", ITERATIONS)
                    .unwrap();
                assert_eq!(p.round(), [ClientEvent::Registered]);
            }
            p.client.login(&mut p.rng, "alice").unwrap();
            assert!(matches!(p.round()[..], [ClientEvent::Challenge { .. }]));
            p.client.answer_with_password("a long password").unwrap();
            assert_eq!(p.round(), [ClientEvent::LoggedIn]);
            p.client.request_nonces(4).unwrap();
            assert_eq!(p.round(), [ClientEvent::Nonces { available: 4 }]);
            p
        }

        /// Hands the client's output to the server, answers its ledger requests, and returns
        /// the server's answer without delivering it.
        fn exchange(&mut self) -> StdVec<u8> {
            let request = self.client.poll_transmit().to_vec();
            self.client.advance_transmit(request.len());
            self.server_answer(&request)
        }

        /// The server's answer to `request`.
        fn server_answer(&mut self, request: &[u8]) -> StdVec<u8> {
            let mut used = 0;
            let mut answer = StdVec::new();
            loop {
                let n = self
                    .server
                    .handle_input(&mut self.shared, self.now, &request[used..]);
                used += n;
                while let Some(question) = self.server.poll_ledger() {
                    let reply = self.ledger.execute(&question, self.now);
                    self.server.handle_ledger(&mut self.shared, self.now, reply);
                }
                let out = self.server.poll_transmit();
                let written = out.len();
                answer.extend_from_slice(out);
                // Bounded: a server offering the same bytes again and again (output never
                // marked written) must fail the test, not hang it.
                assert!(answer.len() < 1 << 20, "the server's output never drains");
                self.server.advance_transmit(written);
                while self.server.poll_event().is_some() {}
                if used == request.len() || (n == 0 && written == 0) {
                    return answer;
                }
            }
        }

        /// Feeds `bytes` to the client as one read, polling events as a driver does.
        fn deliver(&mut self, bytes: &[u8]) -> StdVec<ClientEvent> {
            let mut events = StdVec::new();
            let mut used = 0;
            loop {
                used += self.client.handle_input(&bytes[used..]);
                let before = events.len();
                events.extend(core::iter::from_fn(|| self.client.poll_event()));
                if used == bytes.len() || events.len() == before {
                    return events;
                }
            }
        }

        /// One request-response round trip.
        fn round(&mut self) -> StdVec<ClientEvent> {
            let answer = self.exchange();
            self.deliver(&answer)
        }
    }

    /// `bytes` with the first `from` replaced by `to`, as a man in the middle would.
    fn altered(bytes: &[u8], from: &str, to: &str) -> StdVec<u8> {
        let text = core::str::from_utf8(bytes).unwrap();
        assert!(text.contains(from), "no `{from}` in {text}");
        text.replacen(from, to, 1).into_bytes()
    }

    fn error_frame(code: ErrorCode) -> StdVec<u8> {
        std::format!(
            "{{\"op\":\"error\",\"code\":\"{}\",\"message\":\"{}\"}}\n",
            code.name(),
            code.message()
        )
        .into_bytes()
    }

    fn id(text: &str) -> TransferId {
        TransferId::parse(text).unwrap()
    }

    /// A statement from a real server verifies. A man in the middle who turns the request
    /// into `history` (to hide deposits) gets an honest history page past the client only
    /// as a failure, and so does one who changes an entry's kind.
    #[test]
    fn statements_verify_and_a_rewritten_request_or_entry_is_caught() {
        let mut p = Peers::alice_with_nonces(1);
        p.client.transfer("t-1", "bob", Amount(250)).unwrap();
        p.round();
        p.client.statement(0).unwrap();
        match &p.round()[..] {
            [ClientEvent::History(page)] => {
                let e = &page.entries[0];
                assert_eq!(e.id().map(|i| i.as_str()), Some("t-1"));
                assert_eq!(e.from().map(|u| u.as_str()), Some("alice"));
            }
            other => panic!("{other:?}"),
        }
        for (from, to) in [
            ("statement", "history"),
            ("\"kind\":\"transfer\"", "\"kind\":\"deposit\""),
        ] {
            let mut p = Peers::alice_with_nonces(1);
            p.client.transfer("t-1", "bob", Amount(250)).unwrap();
            p.round();
            p.client.statement(0).unwrap();
            let request = p.client.poll_transmit().to_vec();
            p.client.advance_transmit(request.len());
            let answer = if from == "statement" {
                p.server_answer(&altered(&request, from, to))
            } else {
                altered(&p.server_answer(&request), from, to)
            };
            let events = p.deliver(&answer);
            assert!(
                matches!(events[..], [ClientEvent::Integrity(_)]),
                "{from} -> {to}: {events:?}"
            );
            assert!(p.client.is_failed());
        }
    }

    #[test]
    fn receipts_balances_and_history_from_a_real_server_verify() {
        let mut p = Peers::alice_with_nonces(1);
        p.client.transfer("t-1", "bob", Amount(250)).unwrap();
        p.client.transfer("t-2", "bob", Amount(50)).unwrap();
        assert_eq!(p.client.outstanding(), 2);
        let events = p.round();
        let receipts: StdVec<_> = events
            .iter()
            .map(|e| match e {
                ClientEvent::Receipt(r) => (r.id.as_str(), r.amount, r.result, r.balance),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            receipts,
            [
                ("t-1", Amount(250), Ok(()), Amount(9_750)),
                ("t-2", Amount(50), Ok(()), Amount(9_700))
            ]
        );
        p.client.balance().unwrap();
        assert_eq!(p.round(), [ClientEvent::Balance(Amount(9_700))]);
        p.client.history(0).unwrap();
        match &p.round()[..] {
            [ClientEvent::History(page)] => {
                let ids: StdVec<_> = page
                    .entries
                    .iter()
                    .map(|e| e.id().map(|i| i.as_str()))
                    .collect();
                assert_eq!(ids, [Some("t-2"), Some("t-1")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.client.outstanding(), 0);
        assert!(!p.client.is_failed());
    }

    #[test]
    fn a_receipt_with_an_altered_balance_is_forged_and_fails_the_session() {
        let mut p = Peers::alice_with_nonces(2);
        p.client.transfer("t-1", "bob", Amount(100)).unwrap();
        let receipt = p.exchange();
        let forged = altered(&receipt, "\"balance\":\"99.00\"", "\"balance\":\"999.00\"");
        assert_eq!(
            p.deliver(&forged),
            [ClientEvent::Integrity(IntegrityError::ForgedReceipt)]
        );
        assert!(p.client.is_failed());
        assert_eq!(
            p.client.transfer("t-2", "bob", Amount(1)),
            Err(ClientError::Failed)
        );
        // The genuine receipt, arriving late, changes nothing any more.
        assert!(p.deliver(&receipt).is_empty());
    }

    #[test]
    fn a_receipt_echoing_another_transfer_or_a_bad_mac_is_forged() {
        for (from, to) in [
            ("\"amount\":\"1.00\"", "\"amount\":\"2.00\""),
            ("\"id\":\"t-1\"", "\"id\":\"t-9\""),
            (
                "\"result\":\"committed\"",
                "\"result\":\"insufficient_funds\"",
            ),
            ("\"mac\":\"", "\"mac\":\"00"),
        ] {
            let mut p = Peers::alice_with_nonces(3);
            p.client.transfer("t-1", "bob", Amount(100)).unwrap();
            let forged = altered(&p.exchange(), from, to);
            assert_eq!(
                p.deliver(&forged),
                [ClientEvent::Integrity(IntegrityError::ForgedReceipt)],
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn a_forged_balance_is_rejected() {
        let mut p = Peers::alice_with_nonces(4);
        p.client.balance().unwrap();
        let forged = altered(&p.exchange(), "\"100.00\"", "\"1000.00\"");
        assert_eq!(
            p.deliver(&forged),
            [ClientEvent::Integrity(IntegrityError::ForgedResponse)]
        );
    }

    #[test]
    fn a_dropped_response_is_a_sequence_gap() {
        let mut p = Peers::alice_with_nonces(5);
        p.client.balance().unwrap();
        let _dropped = p.exchange();
        p.client.balance().unwrap();
        // Genuine, but numbered 2 where 1 is due.
        assert_eq!(
            p.round(),
            [ClientEvent::Integrity(IntegrityError::BadSequence)]
        );
        assert!(p.client.is_failed());
    }

    #[test]
    fn a_replayed_response_is_out_of_sequence() {
        let mut p = Peers::alice_with_nonces(6);
        p.client.transfer("t-1", "bob", Amount(100)).unwrap();
        let receipt = p.exchange();
        assert!(matches!(p.deliver(&receipt)[..], [ClientEvent::Receipt(_)]));
        p.client.transfer("t-1", "bob", Amount(100)).unwrap();
        assert_eq!(
            p.deliver(&receipt),
            [ClientEvent::Integrity(IntegrityError::ForgedReceipt)],
            "the old receipt covers another nonce"
        );
        let mut p = Peers::alice_with_nonces(7);
        p.client.balance().unwrap();
        let balance = p.exchange();
        assert!(matches!(p.deliver(&balance)[..], [ClientEvent::Balance(_)]));
        p.client.balance().unwrap();
        assert_eq!(
            p.deliver(&balance),
            [ClientEvent::Integrity(IntegrityError::BadSequence)]
        );
    }

    #[test]
    fn a_busy_refusal_closes_the_session_and_asks_for_a_reconnect() {
        let mut p = Peers::new(8);
        p.client.ping().unwrap();
        assert_eq!(
            p.deliver(&error_frame(ErrorCode::ServerBusy)),
            [ClientEvent::Closed {
                code: ErrorCode::ServerBusy
            }]
        );
        assert!(p.client.is_failed());
        assert_eq!(p.client.outstanding(), 0);
        assert_eq!(
            p.client.login(&mut p.rng, "alice"),
            Err(ClientError::Failed)
        );
    }

    #[test]
    fn a_refused_transfer_names_its_id_and_the_session_goes_on() {
        let mut p = Peers::alice_with_nonces(9);
        p.client.transfer("t-1", "bob", Amount(100)).unwrap();
        let request = p.client.poll_transmit().to_vec();
        p.client.advance_transmit(request.len());
        // Altered on the way: the server refuses it, unauthenticated.
        let altered = altered(&request, "\"amount\":\"1.00\"", "\"amount\":\"9.00\"");
        let refusal = p.server_answer(&altered);
        assert_eq!(refusal, error_frame(ErrorCode::BadMac));
        assert_eq!(
            p.deliver(&refusal),
            [ClientEvent::Refused {
                request: RequestKind::Transfer,
                code: ErrorCode::BadMac,
                id: Some(id("t-1")),
            }]
        );
        assert!(!p.client.is_failed());
        p.client.balance().unwrap();
        assert_eq!(p.round(), [ClientEvent::Balance(Amount(10_000))]);
    }

    #[test]
    fn a_refused_login_returns_to_logged_out() {
        let mut p = Peers::new(10);
        p.client.login(&mut p.rng, "nobody").unwrap();
        assert!(matches!(p.round()[..], [ClientEvent::Challenge { .. }]));
        p.client.answer_with_password("a long password").unwrap();
        assert_eq!(
            p.round(),
            [ClientEvent::Refused {
                request: RequestKind::Login,
                code: ErrorCode::AuthFailed,
                id: None,
            }]
        );
        assert!(!p.client.is_failed());
        assert!(p.client.login(&mut p.rng, "nobody").is_ok());
    }

    #[test]
    fn an_unsolicited_or_mismatched_response_fails_the_session() {
        let mut p = Peers::new(11);
        assert_eq!(
            p.deliver(b"{\"op\":\"pong\"}\n"),
            [ClientEvent::Integrity(IntegrityError::UnexpectedResponse)]
        );
        let mut p = Peers::new(12);
        p.client.ping().unwrap();
        assert_eq!(
            p.deliver(b"{\"op\":\"bye\"}\n"),
            [ClientEvent::Integrity(IntegrityError::UnexpectedResponse)]
        );
        let mut p = Peers::new(13);
        p.client.ping().unwrap();
        assert_eq!(
            p.deliver(b"{\"op\":\"pong\",\"extra\":1}\n"),
            [ClientEvent::Integrity(IntegrityError::UnexpectedResponse)]
        );
    }

    /// Issue 20: a response and the server's closing error in one read. The client used to
    /// handle both before its driver saw the first event, so the answer the event asked for
    /// was refused (`WrongState` after a challenge, `Failed` after a registration) and the
    /// firmware simulation aborted under loss instead of reconnecting.
    #[test]
    fn a_close_read_with_a_response_waits_until_the_response_is_acted_on() {
        let mut p = Peers::new(15);
        p.client.login(&mut p.rng, "alice").unwrap();
        let mut read = p.exchange();
        let challenge = read.len();
        read.extend_from_slice(&error_frame(ErrorCode::Timeout));
        assert_eq!(p.client.handle_input(&read), challenge);
        assert!(matches!(
            p.client.poll_event(),
            Some(ClientEvent::Challenge { .. })
        ));
        assert_eq!(p.client.answer_with_password("a long password"), Ok(()));
        assert_eq!(
            p.deliver(&read[challenge..]),
            [ClientEvent::Closed {
                code: ErrorCode::Timeout
            }]
        );
        assert_eq!(
            p.client.answer_with_password("a long password"),
            Err(ClientError::Failed)
        );

        let mut p = Peers::new(16);
        p.client
            .register(&mut p.rng, "alice", "a long password", ITERATIONS)
            .unwrap();
        let mut read = p.exchange();
        let registered = read.len();
        read.extend_from_slice(&error_frame(ErrorCode::Timeout));
        assert_eq!(p.client.handle_input(&read), registered);
        assert_eq!(p.client.poll_event(), Some(ClientEvent::Registered));
        assert_eq!(p.client.login(&mut p.rng, "alice"), Ok(()));
        assert_eq!(
            p.deliver(&read[registered..]),
            [ClientEvent::Closed {
                code: ErrorCode::Timeout
            }]
        );
    }

    /// Pipelined responses in one read come out one event at a time, in order.
    #[test]
    fn pipelined_responses_in_one_read_are_taken_one_per_event() {
        let mut p = Peers::alice_with_nonces(17);
        for (i, amount) in [100, 200, 300].into_iter().enumerate() {
            p.client
                .transfer(&std::format!("t-{i}"), "bob", Amount(amount))
                .unwrap();
        }
        p.client.balance().unwrap();
        let read = p.exchange();
        let mut used = 0;
        let mut events = StdVec::new();
        while used < read.len() {
            let n = p.client.handle_input(&read[used..]);
            assert!(n > 0);
            used += n;
            assert_eq!(
                p.client.handle_input(&read[used..]),
                0,
                "an event is waiting"
            );
            events.push(p.client.poll_event().unwrap());
        }
        assert_eq!(events.len(), 4);
        assert_eq!(events[3], ClientEvent::Balance(Amount(9_400)));
    }

    #[test]
    fn logout_forgets_the_nonces() {
        let mut p = Peers::alice_with_nonces(14);
        p.client.logout().unwrap();
        assert_eq!(p.round(), [ClientEvent::LoggedOut]);
        assert_eq!(p.client.available_nonces(), 0);
        assert_eq!(p.client.user(), None);
        assert_eq!(p.client.balance(), Err(ClientError::NotLoggedIn));
    }

    /// The SCRAM nonce binding: the challenge's nonce must be the client's own nonce followed
    /// by a non-empty extension of nonce characters. A challenge breaking any one of these is
    /// a mismatch, and the session answers nothing to it.
    #[test]
    fn a_challenge_nonce_must_extend_the_clients_own() {
        let nonce_of = |frame: &str| {
            let start = frame.find("\"nonce\":\"").unwrap() + "\"nonce\":\"".len();
            let end = start + frame[start..].find('"').unwrap();
            frame[start..end].to_string()
        };
        let client_nonce_len = {
            let mut p = Peers::new(20);
            p.client.login(&mut p.rng, "alice").unwrap();
            nonce_of(core::str::from_utf8(p.client.poll_transmit()).unwrap()).len()
        };
        /// How a man in the middle rewrites the full nonce, given the client's length.
        type Rewrite = fn(&str, usize) -> std::string::String;
        let rewrites: [(&str, Rewrite); 4] = [
            ("the client's nonce alone", |full, own| full[..own].into()),
            ("another prefix", |full, _| {
                let first = if full.starts_with('A') { "B" } else { "A" };
                std::format!("{first}{}", &full[1..])
            }),
            ("a comma in the extension", |full, own| {
                std::format!("{},{}", &full[..own], &full[own + 1..])
            }),
            ("a space in the extension", |full, own| {
                std::format!("{} {}", &full[..own], &full[own + 1..])
            }),
        ];
        for (what, rewrite) in rewrites {
            let mut p = Peers::new(20);
            p.client.login(&mut p.rng, "alice").unwrap();
            let challenge = std::string::String::from_utf8(p.exchange()).unwrap();
            let full = nonce_of(&challenge);
            let forged = challenge.replace(&full, &rewrite(&full, client_nonce_len));
            assert_eq!(
                p.deliver(forged.as_bytes()),
                [ClientEvent::Integrity(IntegrityError::NonceMismatch)],
                "{what}: {forged}"
            );
            assert_eq!(
                p.client.answer_with_password("a long password"),
                Err(ClientError::Failed),
                "{what}"
            );
        }
        let mut p = Peers::new(20);
        p.client.login(&mut p.rng, "alice").unwrap();
        assert!(matches!(p.round()[..], [ClientEvent::Challenge { .. }]));
    }

    /// A receipt's echo of the transfer must match what was sent in every field: a genuine
    /// MAC (which covers what was sent) does not make a receipt naming another recipient,
    /// id or amount acceptable.
    #[test]
    fn a_receipt_echo_differing_in_any_one_field_is_forged() {
        for (from, to) in [
            ("\"to\":\"bob\"", "\"to\":\"eve\""),
            ("\"id\":\"t-1\"", "\"id\":\"t-2\""),
            ("\"amount\":\"1.00\"", "\"amount\":\"1.01\""),
        ] {
            let mut p = Peers::alice_with_nonces(21);
            p.client.transfer("t-1", "bob", Amount(100)).unwrap();
            let forged = altered(&p.exchange(), from, to);
            assert_eq!(
                p.deliver(&forged),
                [ClientEvent::Integrity(IntegrityError::ForgedReceipt)],
                "{from} -> {to}"
            );
        }
    }

    /// A session that failed its integrity check refuses every further request, sends
    /// nothing more, and ignores what the server sends after.
    #[test]
    fn a_failed_session_refuses_all_further_use() {
        let mut p = Peers::alice_with_nonces(22);
        p.client.balance().unwrap();
        let forged = altered(&p.exchange(), "\"mac\":\"", "\"mac\":\"00");
        assert_eq!(
            p.deliver(&forged),
            [ClientEvent::Integrity(IntegrityError::ForgedResponse)]
        );
        assert!(p.client.is_failed());
        assert_eq!(p.client.user(), None);
        let c = &mut p.client;
        let refusals = [
            c.transfer("t-1", "bob", Amount(1)),
            c.balance(),
            c.history(0),
            c.request_nonces(1),
            c.logout(),
            c.ping(),
            c.answer_with_password("a long password"),
            c.answer_with_key(&Key::from_bytes([0; 32])),
            c.register_with_verifier(
                &Username::parse("carol").unwrap(),
                &Verifier::from_password(b"a long password", &[1; SALT_LEN], ITERATIONS),
            ),
        ];
        for (i, refusal) in refusals.into_iter().enumerate() {
            assert_eq!(refusal, Err(ClientError::Failed), "request {i}");
        }
        assert_eq!(
            p.client.login(&mut p.rng, "alice"),
            Err(ClientError::Failed)
        );
        assert!(p.client.poll_transmit().is_empty(), "nothing sent");
        assert!(p.deliver(b"{\"op\":\"pong\"}\n").is_empty());
    }

    /// Before login, requests that need a session are refused without sending anything.
    #[test]
    fn requests_needing_a_login_are_refused_before_it() {
        let mut p = Peers::new(23);
        let c = &mut p.client;
        let refusals = [
            c.balance(),
            c.history(0),
            c.request_nonces(1),
            c.logout(),
            c.transfer("t-1", "bob", Amount(1)),
        ];
        for (i, refusal) in refusals.into_iter().enumerate() {
            assert_eq!(refusal, Err(ClientError::NotLoggedIn), "request {i}");
        }
        assert!(p.client.poll_transmit().is_empty(), "nothing sent");
        assert_eq!(p.client.ping(), Ok(()));
    }

    /// The client runs PBKDF2 for any iteration count from its minimum to its maximum, both
    /// included, and refuses one below (a MITM lowering it) or above (a hostile server making
    /// it spin) without answering.
    #[test]
    fn the_iteration_bounds_include_their_ends() {
        let cases = [
            (ITERATIONS, ITERATIONS, None),
            (
                ITERATIONS + 1,
                u32::MAX,
                Some(IntegrityError::IterationsTooLow {
                    offered: ITERATIONS,
                }),
            ),
            (
                1,
                ITERATIONS - 1,
                Some(IntegrityError::IterationsTooHigh {
                    offered: ITERATIONS,
                }),
            ),
        ];
        for (min_iterations, max_iterations, refusal) in cases {
            let mut p = Peers::new(24);
            p.client = ClientSession::new(ClientConfig {
                min_iterations,
                max_iterations,
            });
            p.client.login(&mut p.rng, "alice").unwrap();
            let events = p.round();
            match refusal {
                None => assert_eq!(
                    events,
                    [ClientEvent::Challenge {
                        iterations: ITERATIONS
                    }]
                ),
                Some(e) => {
                    assert_eq!(events, [ClientEvent::Integrity(e)]);
                    assert!(p.client.poll_transmit().is_empty());
                }
            }
        }
    }

    /// A genuine receipt for a later pipelined transfer, arriving first, is reported as
    /// reordered; the same receipt with its id or its MAC altered is forged. Either way the
    /// session fails, but the report tells a lossy path from an attacker.
    #[test]
    fn only_a_genuine_receipt_of_another_pending_transfer_is_reordered() {
        let cases = [
            (None, IntegrityError::Reordered),
            (
                Some(("\"id\":\"t-2\"", "\"id\":\"t-9\"")),
                IntegrityError::ForgedReceipt,
            ),
            (
                Some(("\"mac\":\"", "\"mac\":\"00")),
                IntegrityError::ForgedReceipt,
            ),
        ];
        for (edit, expected) in cases {
            let mut p = Peers::alice_with_nonces(25);
            p.client.transfer("t-1", "bob", Amount(100)).unwrap();
            p.client.transfer("t-2", "bob", Amount(200)).unwrap();
            let answers = p.exchange();
            let text = core::str::from_utf8(&answers).unwrap();
            let second = text.lines().nth(1).unwrap();
            let mut receipt = std::format!("{second}\n").into_bytes();
            if let Some((from, to)) = edit {
                receipt = altered(&receipt, from, to);
            }
            assert_eq!(
                p.deliver(&receipt),
                [ClientEvent::Integrity(expected)],
                "{edit:?}"
            );
        }
    }
}
