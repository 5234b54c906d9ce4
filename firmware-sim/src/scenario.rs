//! The scripted session the Cortex-M4 image runs under QEMU (and `cargo test` runs on the
//! desktop): a device and one client joined by an in-memory [`Link`] with some loss, and a
//! conversation with transfers, a replay and a tamper attempt.
//!
//! The client is a core [`ClientSession`] on its own smoltcp interface. Only the two attacks
//! step outside it: the replay writes the bytes of an earlier, committed transfer into the
//! TCP stream again and reads the device's answer raw; the tamper attempt alters the amount
//! of a fresh transfer after the session has MAC'd it, as a man in the middle would.
//!
//! Steps, each checked against the device's ledger as well as the client's view:
//!
//! 1. register `bob` and `alice`, log in as `alice` (SCRAM), take 8 nonces;
//! 2. five pipelined transfers to `bob`, each receipt verified, balances as expected;
//! 3. replay of the first transfer's bytes: refused with `unknown_nonce`, nothing moves;
//! 4. a transfer whose amount is changed in flight: refused with `bad_mac`, nothing moves;
//! 5. the genuine transfer: committed; the balance (MAC-verified) matches the ledger;
//! 6. logout, both sides close; money is conserved.

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use heapless::Vec;
use rand_core::SeedableRng;
use smoltcp::socket::tcp;
use txsock_core::ledger::MemLedger;
use txsock_core::session::{ClientConfig, ClientEvent, RequestKind};
use txsock_core::{Amount, Duration, ErrorCode, Instant, Username};

use crate::client::{pump, ClientNet, ClientNetConfig, ClientRng, SimClock, TcpBuffers};
use crate::device::{Device, DeviceConfig, SocketBuffers, DEFAULT_PORT};
use crate::link::{Link, LinkConfig, Probability, Side, ETHERNET_HEADER};

/// The device as the Cortex-M4 image builds it: the sizes a small board would choose.
pub mod board {
    use super::*;

    /// Concurrent sessions.
    pub const SESSIONS: usize = 4;
    /// smoltcp sockets: one per session and one to refuse clients beyond them.
    pub const SOCKETS: usize = SESSIONS + 1;
    /// Receive buffer (TCP window) per session socket: two maximal request lines.
    pub const RX: usize = 1024;
    /// Transmit buffer per session socket: a maximal response and then some.
    pub const TX: usize = 1024;
    /// Accounts in the ledger.
    pub const USERS: usize = 8;
    /// Journal entries in the ledger (committed transfers and final refusals).
    pub const TRANSFERS: usize = 32;
    /// The link's IP MTU: a constrained link.
    pub const MTU: usize = 576;
    /// Frames in flight per direction on the in-memory link.
    pub const LINK_SLOTS: usize = 8;

    /// The ledger.
    pub type BoardLedger = MemLedger<USERS, TRANSFERS>;
    /// The device's socket buffers.
    pub type BoardBuffers = SocketBuffers<SESSIONS, RX, TX>;
    /// The device, with a ChaCha20 nonce RNG.
    pub type BoardDevice<'a> = Device<'a, BoardLedger, rand_chacha::ChaCha20Rng, SESSIONS, SOCKETS>;
    /// The in-memory link between the device and the scenario's client.
    pub type BoardLink = Link<LINK_SLOTS, { MTU + ETHERNET_HEADER }>;
    /// The client's socket buffers.
    pub type ClientBuffers = TcpBuffers<1, 1024, 1024>;

    /// The device's address.
    pub const DEVICE_ADDRESS: [u8; 4] = [192, 0, 2, 2];
    /// The client's address.
    pub const CLIENT_ADDRESS: [u8; 4] = [192, 0, 2, 1];

    /// The device's configuration; `seed` stands in for the board's TRNG.
    pub fn device_config(seed: u64) -> DeviceConfig {
        DeviceConfig {
            mac: [0x02, 0, 0, 0, 0, 0x02],
            address: DEVICE_ADDRESS,
            prefix_len: 24,
            port: DEFAULT_PORT,
            server: txsock_core::session::ServerConfig {
                min_iterations: ITERATIONS,
                unknown_user_iterations: ITERATIONS,
                ..txsock_core::session::ServerConfig::default()
            },
            secret: [0x5e; 32],
            net_seed: seed ^ 0x6e65_7473,
        }
    }

    /// The client's network configuration.
    pub fn client_config(seed: u64) -> ClientNetConfig {
        ClientNetConfig {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            address: CLIENT_ADDRESS,
            prefix_len: 24,
            server: DEVICE_ADDRESS,
            port: DEFAULT_PORT,
            net_seed: seed ^ 0x636c_6965,
        }
    }

    /// The in-memory link: 5% loss, 10% reordering, 5 ms delay.
    pub fn link_config(seed: u64) -> LinkConfig {
        LinkConfig {
            loss: Probability::per_million(50_000),
            reorder: Probability::per_million(100_000),
            corrupt: Probability::NEVER,
            delay_ms: 5,
            mtu: MTU,
            seed,
            outage_ms: (0, 0),
        }
    }
}

/// PBKDF2 iterations of the scenario's users (and the device's minimum in the scenario): low,
/// so that the image runs quickly under emulation.
pub const ITERATIONS: u32 = 4096;

/// Opening balance the scenario's device gives new accounts: 100.00.
pub const OPENING: Amount = Amount(10_000);

/// The sender.
pub const USER: &str = "alice";
/// The recipient.
pub const RECIPIENT: &str = "bob";
const USER_PASSWORD: &str = "alice's password";
const RECIPIENT_PASSWORD: &str = "bob's password";

/// The pipelined transfers: id and amount in minor units.
const TRANSFERS: [(&str, u64); 5] = [
    ("t-1", 100),
    ("t-2", 200),
    ("t-3", 300),
    ("t-4", 400),
    ("t-5", 500),
];
/// The transfer that is tampered with, then sent genuinely.
const TAMPERED: (&str, u64) = ("t-6", 50);
/// Its amount as the wire shows it, and what the attacker makes of it.
const TAMPER_FROM: &[u8] = b"\"amount\":\"0.50\"";
const TAMPER_TO: &[u8] = b"\"amount\":\"9.50\"";

/// What a passed scenario did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScenarioReport {
    /// Transfers committed.
    pub transfers: usize,
    /// Checks that passed.
    pub checks: u32,
    /// Simulated time at the end.
    pub simulated: Duration,
}

/// Where the script is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Connecting,
    RegisterRecipient,
    RegisterUser,
    Login,
    Proof,
    Nonces,
    Transfers,
    Replay,
    ReplayAnswer,
    Tamper,
    TamperAnswer,
    Genuine,
    Balance,
    Logout,
    Closing,
    Done,
}

/// The scripted client: see the [module documentation](self).
pub struct Scenario {
    session: txsock_core::ClientSession,
    rng: ClientRng,
    phase: Phase,
    sent: usize,
    receipts: usize,
    /// Bytes the script writes around the session (the replay, the tampered frame).
    raw: Vec<u8, 320>,
    raw_written: usize,
    /// The device's raw answer to the replay.
    answer: Vec<u8, 160>,
    /// The transfer frame captured for the replay.
    captured: Vec<u8, 320>,
    journal_mark: usize,
    checks: u32,
}

/// The outcome of one [`Scenario::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished.
    Running,
    /// Every step passed.
    Passed,
}

type Checked<T = ()> = Result<T, &'static str>;

fn check(ok: bool, what: &'static str) -> Checked {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn user(name: &str) -> Username {
    // The scenario's names are valid usernames.
    Username::parse(name).unwrap_or_else(|_| unreachable!())
}

fn balance_of<const U: usize, const T: usize>(ledger: &MemLedger<U, T>, name: &str) -> Amount {
    let name = user(name);
    ledger
        .accounts()
        .iter()
        .find(|a| a.user == name)
        .map_or(Amount(0), |a| a.balance)
}

impl Scenario {
    /// A scenario whose client draws its SCRAM nonces and salts from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut scenario = MaybeUninit::uninit();
        Self::init(&mut scenario, seed);
        // SAFETY: `init` initialised every field.
        unsafe { scenario.assume_init() }
    }

    /// Builds the scenario in `slot`, in place (a board's static), and returns it.
    pub fn init(slot: &mut MaybeUninit<Self>, seed: u64) -> &mut Self {
        let this = slot.as_mut_ptr();
        // SAFETY: `this` is valid for writes and aligned; every field is written exactly once
        // through raw pointers before `assume_init_mut`, the client session on its own so
        // that no whole-`Scenario` temporary is built on the stack.
        unsafe {
            addr_of_mut!((*this).session).write(txsock_core::ClientSession::new(ClientConfig {
                min_iterations: ITERATIONS,
                ..ClientConfig::default()
            }));
            addr_of_mut!((*this).rng).write(ClientRng::seed_from_u64(seed));
            addr_of_mut!((*this).phase).write(Phase::Start);
            addr_of_mut!((*this).sent).write(0);
            addr_of_mut!((*this).receipts).write(0);
            addr_of_mut!((*this).raw).write(Vec::new());
            addr_of_mut!((*this).raw_written).write(0);
            addr_of_mut!((*this).answer).write(Vec::new());
            addr_of_mut!((*this).captured).write(Vec::new());
            addr_of_mut!((*this).journal_mark).write(0);
            addr_of_mut!((*this).checks).write(0);
            slot.assume_init_mut()
        }
    }

    /// The step the script is at, for failure messages.
    pub fn step_name(&self) -> &'static str {
        match self.phase {
            Phase::Start | Phase::Connecting => "connect",
            Phase::RegisterRecipient | Phase::RegisterUser => "register",
            Phase::Login | Phase::Proof => "login",
            Phase::Nonces => "nonces",
            Phase::Transfers => "transfers",
            Phase::Replay | Phase::ReplayAnswer => "replay",
            Phase::Tamper | Phase::TamperAnswer => "tamper",
            Phase::Genuine => "genuine transfer",
            Phase::Balance => "balance",
            Phase::Logout | Phase::Closing => "logout",
            Phase::Done => "done",
        }
    }

    /// Checks that passed so far.
    pub fn checks(&self) -> u32 {
        self.checks
    }

    fn pass(&mut self, ok: bool, what: &'static str) -> Checked {
        check(ok, what)?;
        self.checks += 1;
        Ok(())
    }

    /// Runs the script as far as it can go at `now`. `ledger` is the device's, for checks.
    pub fn poll<const U: usize, const T: usize>(
        &mut self,
        net: &mut ClientNet<'_, 1>,
        ledger: &MemLedger<U, T>,
    ) -> Checked<Outcome> {
        loop {
            let mut progress = self.act(net, ledger)?;
            let socket = net.socket(0);
            if self.phase == Phase::ReplayAnswer {
                progress |= self.read_answer(socket, ledger)?;
            } else if self.phase != Phase::Start && self.phase != Phase::Done {
                progress |= pump(&mut self.session, socket);
            }
            while let Some(event) = self.session.poll_event() {
                self.on_event(event, ledger)?;
                progress = true;
            }
            if self.phase == Phase::Done {
                return Ok(Outcome::Passed);
            }
            if !progress {
                return Ok(Outcome::Running);
            }
        }
    }

    /// What the script does on its own initiative in the current phase.
    fn act<const U: usize, const T: usize>(
        &mut self,
        net: &mut ClientNet<'_, 1>,
        ledger: &MemLedger<U, T>,
    ) -> Checked<bool> {
        match self.phase {
            Phase::Start => {
                net.connect(0).map_err(|_| "connect")?;
                self.phase = Phase::Connecting;
                Ok(true)
            }
            Phase::Connecting => {
                let socket = net.socket(0);
                if socket.may_send() {
                    self.session
                        .register(&mut self.rng, RECIPIENT, RECIPIENT_PASSWORD, ITERATIONS)
                        .map_err(|_| "register request")?;
                    self.phase = Phase::RegisterRecipient;
                    Ok(true)
                } else {
                    check(socket.is_open(), "the device refused the connection")?;
                    Ok(false)
                }
            }
            Phase::Transfers => {
                let mut sent_any = false;
                while self.sent < TRANSFERS.len() {
                    let (id, amount) = TRANSFERS[self.sent];
                    let before = self.session.poll_transmit().len();
                    match self.session.transfer(id, RECIPIENT, Amount(amount)) {
                        Ok(()) => {}
                        // Output not drained yet: pump, then come back.
                        Err(txsock_core::session::ClientError::Busy) => break,
                        Err(_) => return Err("transfer request"),
                    }
                    if self.sent == 0 {
                        let frame = &self.session.poll_transmit()[before..];
                        self.captured.clear();
                        self.captured
                            .extend_from_slice(frame)
                            .map_err(|_| "captured frame too long")?;
                    }
                    self.sent += 1;
                    sent_any = true;
                }
                Ok(sent_any)
            }
            Phase::Replay => {
                if self.raw_written == 0 {
                    self.raw.clear();
                    let captured = self.captured.clone();
                    self.raw
                        .extend_from_slice(&captured)
                        .map_err(|_| "replay frame too long")?;
                    self.journal_mark = ledger.journal().len();
                    self.answer.clear();
                }
                let done = self.write_raw(net.socket(0))?;
                if done {
                    self.phase = Phase::ReplayAnswer;
                }
                Ok(true)
            }
            Phase::Tamper => {
                if self.raw_written == 0 {
                    check(
                        self.session.poll_transmit().is_empty(),
                        "output pending before the tamper attempt",
                    )?;
                    let (id, amount) = TAMPERED;
                    self.session
                        .transfer(id, RECIPIENT, Amount(amount))
                        .map_err(|_| "transfer request")?;
                    let frame = self.session.poll_transmit();
                    let at = find(frame, TAMPER_FROM).ok_or("amount not found in the frame")?;
                    self.raw.clear();
                    self.raw
                        .extend_from_slice(frame)
                        .map_err(|_| "transfer frame too long")?;
                    self.raw[at..at + TAMPER_TO.len()].copy_from_slice(TAMPER_TO);
                    // The session believes it sent its frame; the altered one goes instead.
                    let n = frame.len();
                    self.session.advance_transmit(n);
                    self.journal_mark = ledger.journal().len();
                }
                if self.write_raw(net.socket(0))? {
                    self.phase = Phase::TamperAnswer;
                }
                Ok(true)
            }
            Phase::Closing => {
                let socket = net.socket(0);
                // The device closes after `bye`; close our side too (idempotent).
                socket.close();
                if !socket.is_open() {
                    self.finish(ledger)?;
                    self.phase = Phase::Done;
                    return Ok(true);
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Writes the rest of `raw` into the socket; true once all of it is written.
    fn write_raw(&mut self, socket: &mut tcp::Socket<'_>) -> Checked<bool> {
        if socket.may_send() {
            let n = socket
                .send_slice(&self.raw[self.raw_written..])
                .map_err(|_| "raw write")?;
            self.raw_written += n;
        }
        if self.raw_written == self.raw.len() {
            self.raw_written = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads the device's raw answer to the replay, up to its newline.
    fn read_answer<const U: usize, const T: usize>(
        &mut self,
        socket: &mut tcp::Socket<'_>,
        ledger: &MemLedger<U, T>,
    ) -> Checked<bool> {
        let mut byte = [0u8; 1];
        let mut progress = false;
        while socket.can_recv() {
            let n = socket.recv_slice(&mut byte).map_err(|_| "raw read")?;
            if n == 0 {
                break;
            }
            progress = true;
            if byte[0] == b'\n' {
                self.pass(
                    find(&self.answer, b"\"code\":\"unknown_nonce\"").is_some(),
                    "the replay was not refused with unknown_nonce",
                )?;
                self.pass(
                    ledger.journal().len() == self.journal_mark,
                    "the replay moved money",
                )?;
                self.phase = Phase::Tamper;
                return Ok(true);
            }
            self.answer
                .push(byte[0])
                .map_err(|_| "the answer to the replay is too long")?;
        }
        Ok(progress)
    }

    fn on_event<const U: usize, const T: usize>(
        &mut self,
        event: ClientEvent,
        ledger: &MemLedger<U, T>,
    ) -> Checked {
        match (self.phase, event) {
            (Phase::RegisterRecipient, ClientEvent::Registered) => {
                self.session
                    .register(&mut self.rng, USER, USER_PASSWORD, ITERATIONS)
                    .map_err(|_| "register request")?;
                self.phase = Phase::RegisterUser;
            }
            (Phase::RegisterUser, ClientEvent::Registered) => {
                self.pass(ledger.accounts().len() == 2, "both accounts exist")?;
                self.session
                    .login(&mut self.rng, USER)
                    .map_err(|_| "login request")?;
                self.phase = Phase::Login;
            }
            (Phase::Login, ClientEvent::Challenge { iterations }) => {
                check(iterations == ITERATIONS, "challenge iterations")?;
                self.session
                    .answer_with_password(USER_PASSWORD)
                    .map_err(|_| "answer")?;
                self.phase = Phase::Proof;
            }
            (Phase::Proof, ClientEvent::LoggedIn) => {
                self.pass(true, "logged in, server signature verified")?;
                self.session.request_nonces(8).map_err(|_| "nonces")?;
                self.phase = Phase::Nonces;
            }
            (Phase::Nonces, ClientEvent::Nonces { available }) => {
                self.pass(available >= TRANSFERS.len() + 2, "nonces issued")?;
                self.phase = Phase::Transfers;
            }
            (Phase::Transfers, ClientEvent::Receipt(r)) => {
                let (id, amount) = TRANSFERS[self.receipts];
                let spent: u64 = TRANSFERS[..=self.receipts].iter().map(|t| t.1).sum();
                self.pass(
                    r.id.as_str() == id && r.amount == Amount(amount) && r.result.is_ok(),
                    "receipt for the transfer, committed",
                )?;
                self.pass(
                    r.balance == Amount(OPENING.minor() - spent),
                    "receipt balance",
                )?;
                self.receipts += 1;
                if self.receipts == TRANSFERS.len() {
                    self.pass(
                        ledger.journal().len() == TRANSFERS.len(),
                        "each transfer journaled once",
                    )?;
                    self.phase = Phase::Replay;
                }
            }
            (
                Phase::TamperAnswer,
                ClientEvent::Refused {
                    request: RequestKind::Transfer,
                    code,
                    id,
                },
            ) => {
                self.pass(code == ErrorCode::BadMac, "the tampered transfer refused")?;
                self.pass(
                    id.as_ref().map(|i| i.as_str()) == Some(TAMPERED.0),
                    "refusal names the transfer",
                )?;
                self.pass(
                    ledger.journal().len() == self.journal_mark,
                    "the tampered transfer moved money",
                )?;
                let (id, amount) = TAMPERED;
                self.session
                    .transfer(id, RECIPIENT, Amount(amount))
                    .map_err(|_| "transfer request")?;
                self.phase = Phase::Genuine;
            }
            (Phase::Genuine, ClientEvent::Receipt(r)) => {
                self.pass(
                    r.id.as_str() == TAMPERED.0 && r.amount == Amount(TAMPERED.1),
                    "receipt for the genuine transfer",
                )?;
                self.pass(r.result.is_ok(), "the genuine transfer committed")?;
                self.session.balance().map_err(|_| "balance request")?;
                self.phase = Phase::Balance;
            }
            (Phase::Balance, ClientEvent::Balance(balance)) => {
                self.pass(balance == expected_balance(), "verified balance")?;
                self.pass(
                    balance_of(ledger, USER) == balance,
                    "balance matches the ledger",
                )?;
                self.session.logout().map_err(|_| "logout request")?;
                self.phase = Phase::Logout;
            }
            (Phase::Logout, ClientEvent::LoggedOut) => {
                self.phase = Phase::Closing;
            }
            (_, ClientEvent::Integrity(_)) => {
                return Err("the client detected an integrity failure")
            }
            (_, ClientEvent::Closed { .. }) => return Err("the device closed the session"),
            (_, ClientEvent::Refused { .. }) => return Err("a request was refused"),
            _ => return Err("unexpected event"),
        }
        Ok(())
    }

    /// The closing checks: money moved once per transfer, and none created or destroyed.
    fn finish<const U: usize, const T: usize>(&mut self, ledger: &MemLedger<U, T>) -> Checked {
        let journal = ledger.journal();
        self.pass(
            journal.len() == TRANSFERS.len() + 1,
            "one journal entry per transfer",
        )?;
        for (i, entry) in journal.iter().enumerate() {
            let once = journal.iter().filter(|e| e.id == entry.id).count() == 1;
            self.pass(once && i < TRANSFERS.len() + 1, "no transfer twice")?;
        }
        self.pass(ledger.total() == ledger.minted(), "money conserved")?;
        let spent = OPENING.minor() - expected_balance().minor();
        self.pass(
            balance_of(ledger, RECIPIENT) == Amount(OPENING.minor() + spent),
            "the recipient got every transfer once",
        )?;
        Ok(())
    }
}

fn expected_balance() -> Amount {
    let spent: u64 = TRANSFERS.iter().map(|t| t.1).sum::<u64>() + TAMPERED.1;
    Amount(OPENING.minor() - spent)
}

/// Which side of the scenario a step of [`run`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A device poll.
    Device,
    /// The client: its interface and the script.
    Client,
}

/// Runs `scenario` to the end: the device on side A of `link`, `net` on side B, simulated
/// time from `clock` up to `limit`. Every step is handed to `around`, which must call it (the
/// Cortex-M image measures each part's stack there; elsewhere, just call it).
#[allow(clippy::too_many_arguments)]
pub fn run<
    R,
    const U: usize,
    const T: usize,
    const S: usize,
    const K: usize,
    const SL: usize,
    const FR: usize,
>(
    device: &mut Device<'_, MemLedger<U, T>, R, S, K>,
    net: &mut ClientNet<'_, 1>,
    link: &mut Link<SL, FR>,
    scenario: &mut Scenario,
    clock: &mut SimClock,
    limit: Duration,
    mut around: impl FnMut(Part, &mut dyn FnMut()),
) -> Result<ScenarioReport, &'static str>
where
    R: rand_core::RngCore + rand_core::CryptoRng,
{
    let start = clock.now();
    loop {
        let now = clock.now();
        if now.saturating_since(start) > limit {
            return Err("simulated time limit reached");
        }
        around(Part::Device, &mut || {
            device.poll(now, &mut link.end(Side::A));
        });
        let mut outcome = Ok(Outcome::Running);
        around(Part::Client, &mut || {
            net.poll(now, &mut link.end(Side::B));
            outcome = scenario.poll(net, device.ledger());
            net.poll(now, &mut link.end(Side::B));
        });
        let outcome = outcome?;
        if outcome == Outcome::Passed {
            return Ok(ScenarioReport {
                transfers: device.ledger().journal().len(),
                checks: scenario.checks(),
                simulated: now.saturating_since(start),
            });
        }
        let deadlines = [
            device.poll_at(now),
            net.poll_at(now),
            link.next_delivery()
                .map(|t| Instant::from_millis(u64::try_from(t.total_millis()).unwrap_or(0))),
        ];
        if !clock.advance(deadlines) {
            return Err("nothing left to happen, and the scenario is not finished");
        }
    }
}
