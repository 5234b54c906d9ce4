//! The simulator behind the `txsock-firmware-sim` binary: the device and simulated clients
//! on a faulty [`Link`], in simulated time.
//!
//! Each client is a core [`ClientSession`] on the client side's smoltcp interface. It
//! registers the shared recipient `bob` and its own user, logs in, and sends its share of the
//! transfers to `bob`, pipelined (up to [`PIPELINE`] outstanding, nonces fetched in batches).
//! If its connection is lost or refused it reconnects, logs in again and re-sends every
//! transfer it has no receipt for, with the same transfer id: the ledger's idempotency makes
//! that safe, and the run checks that every transfer was committed exactly once.
//!
//! Beyond the link's faults, a run may restart the device (its ledger kept), jump the
//! clients' clock, or have clients reset their own connections ([`Faults`]); `sweep` draws
//! runs of all of these at random.
//!
//! Time is simulated: the clock jumps to the earliest of the device's and the clients'
//! deadlines and the link's next delivery, so minutes of TCP retransmission timeouts take
//! milliseconds. Everything random is seeded from [`SimConfig::seed`]: the same configuration
//! gives the same transcript hash.

use std::collections::VecDeque;
use std::fmt;
use std::mem::MaybeUninit;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use smoltcp::iface::SocketStorage;
use smoltcp::phy;
use txsock_core::ledger::{JournalEntry, Ledger, MemLedger};
use txsock_core::session::{
    ClientConfig, ClientError, ClientEvent, ClientSession, RequestKind, ServerConfig,
};
use txsock_core::{Amount, Duration, ErrorCode, Instant, Username};

use crate::client::{pump, ClientNet, ClientNetConfig, ClientRng, SimClock, TcpBuffers};
use crate::device::{
    Device, DeviceConfig, DeviceParts, DeviceStats, MemoryBudget, SocketBuffers, DEFAULT_PORT,
};
use crate::flash_ledger::{FlashLedger, NorFlashPages};
use crate::link::{Link, LinkConfig, LinkStats, Side, ETHERNET_HEADER};
use crate::ram_flash::{RamFlash, ERASE_SIZE};

/// Sessions of the simulated device (the Cortex-M image has the same number).
pub const SESSIONS: usize = 4;
/// Receive buffer of each session socket (the TCP window the device offers).
pub const SOCKET_RX: usize = 1024;
/// Transmit buffer of each session socket.
pub const SOCKET_TX: usize = 1024;
/// Accounts the simulated device's ledger holds.
pub const LEDGER_USERS: usize = 16;
/// Journal entries the simulated device's ledger holds, hence the most transfers a run may
/// make (a board's ledger is smaller: the QEMU image keeps 32).
pub const LEDGER_TRANSFERS: usize = 4096;
/// The most simulated clients.
pub const MAX_CLIENTS: usize = 12;
/// Transfers a client keeps outstanding at once.
pub const PIPELINE: usize = 8;
/// Steps of the simulation loop after which a run fails: a run that keeps the clock from
/// moving on (time only creeps forward by a millisecond per stuck step) ends with an error
/// instead of hanging a sweep. Clean runs take well under 1 % of this.
pub const MAX_STEPS: u64 = 20_000_000;
/// The largest IP MTU the simulated link carries.
pub const MAX_MTU: usize = 1500;
/// PBKDF2 iterations of the simulated users (the device's minimum too): low, for speed.
pub const ITERATIONS: u32 = 4096;

/// The simulated device's ledger.
pub type SimLedger = MemLedger<LEDGER_USERS, LEDGER_TRANSFERS>;
/// The simulated device's ledger with `--flash`: on a simulated NOR flash of
/// [`FLASH_SECTORS`] sectors.
pub type SimFlashLedger = FlashLedger<NorFlashPages<RamFlash<Vec<u8>>>>;
/// Sectors of the simulated flash with `--flash` (1 MiB, the most the ledger uses).
pub const FLASH_SECTORS: usize = 256;
/// The most transfers a run with `--flash` may make (the flash's room, with compaction's
/// headroom).
pub const FLASH_TRANSFERS: usize = 1000;
/// The simulated device.
pub type SimDevice<'a, L = SimLedger> = Device<'a, L, ChaCha20Rng, SESSIONS, { SESSIONS + 1 }>;
type SimBuffers = SocketBuffers<SESSIONS, SOCKET_RX, SOCKET_TX>;
type SimLink = Link<64, { MAX_MTU + ETHERNET_HEADER }>;

/// The device's address on the simulated link.
pub const DEVICE_ADDRESS: [u8; 4] = [192, 0, 2, 2];
/// The clients' address on the simulated link.
pub const CLIENT_ADDRESS: [u8; 4] = [192, 0, 2, 1];
/// The device's Ethernet address.
pub const DEVICE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// The recipient of every transfer.
const RECIPIENT: &str = "bob";
const PASSWORD: &str = "simulated password";

/// A simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The link's faults and MTU. Its seed is derived from [`seed`](Self::seed).
    pub link: LinkConfig,
    /// Transfers in total, spread over the clients.
    pub transfers: u32,
    /// Simulated clients (at most [`MAX_CLIENTS`]); more than [`SESSIONS`] exercises the
    /// device's `server_busy` refusal.
    pub clients: usize,
    /// Simulated time between two clients' first connection attempts.
    pub stagger: Duration,
    /// How long a refused client waits before trying again.
    pub retry: Duration,
    /// Seed of everything random: link faults, device RNG, client RNG, TCP.
    pub seed: u64,
    /// Simulated time after which the run fails.
    pub time_limit: Duration,
    /// Faults beyond the link's: device restarts, a clock jump, peers that reset.
    pub faults: Faults,
    /// The device's ledger is a [`FlashLedger`] on a simulated 1 MiB NOR flash (opened again
    /// from the flash image at every device restart) instead of a [`MemLedger`].
    pub flash: bool,
}

/// Faults of the device and the clients, beyond what the [`Link`] does to frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Simulated times at which the device restarts (a watchdog reset): it loses every
    /// session and all TCP state and boots again with the same ledger, as a board whose ledger
    /// is in flash would. Clients see resets and reconnect.
    pub restarts: Vec<Duration>,
    /// The clients' clock jumps by `.1` milliseconds (either way) at simulated time `.0`:
    /// their TCP timers see the jump, the device does not.
    pub clock_jump: Option<(Duration, i64)>,
    /// How many times each client resets its own connection (a TCP RST) mid-pipeline, a few
    /// receipts into a connection, then reconnects and re-sends what is unanswered.
    pub resets: u32,
}

impl Faults {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        *self == Faults::default()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            link: LinkConfig::default(),
            transfers: 100,
            clients: 1,
            stagger: Duration::from_millis(200),
            retry: Duration::from_secs(2),
            seed: 1,
            time_limit: Duration::from_secs(24 * 3600),
            faults: Faults::default(),
            flash: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The configuration.
    pub config: SimConfig,
    /// Transfers whose receipt the client verified, each counted once.
    pub confirmed: u32,
    /// Transfers committed exactly once in the ledger, as requested.
    pub committed_once: u32,
    /// Transfer ids committed more than once (must be 0).
    pub duplicates: u32,
    /// Journal entries that no client asked for, or refusals (must be 0).
    pub strays: u32,
    /// Whether the ledger's balances add up to the money created, and each account holds
    /// what the transfers say.
    pub conserved: bool,
    /// Transfers re-sent (same id) after a reconnection.
    pub resent: u32,
    /// Reconnections after a lost session.
    pub reconnects: u32,
    /// Connections the device refused with `server_busy`.
    pub busy_refusals: u32,
    /// Connection attempts that failed without a `server_busy` line (TCP reset).
    pub resets: u32,
    /// Device restarts ([`Faults::restarts`]).
    pub restarts: u32,
    /// Connections the clients reset themselves ([`Faults::resets`]).
    pub peer_resets: u32,
    /// The most sessions the device had open at once.
    pub peak_sessions: usize,
    /// Link counters (retransmissions among them).
    pub link: LinkStats,
    /// Device counters.
    pub device: DeviceStats,
    /// The device's memory.
    pub budget: MemoryBudget,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Wall-clock time the run took.
    pub wall: std::time::Duration,
    /// SHA-256 of every frame on the link, with its timing and fate.
    pub transcript: [u8; 32],
}

impl SimReport {
    /// Whether every transfer completed exactly once and money was conserved.
    pub fn clean(&self) -> bool {
        let n = self.config.transfers;
        self.confirmed == n
            && self.committed_once == n
            && self.duplicates == 0
            && self.strays == 0
            && self.conserved
    }

    /// The transcript hash in hex.
    pub fn transcript_hex(&self) -> String {
        self.transcript.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let l = &self.link;
        let b = &self.budget;
        writeln!(
            f,
            "link: loss {:.1}%, corrupt {:.1}%, reorder {:.1}%, delay {} ms, MTU {}, seed {}{}",
            c.link.loss.get() * 100.0,
            c.link.corrupt.get() * 100.0,
            c.link.reorder.get() * 100.0,
            c.link.delay_ms,
            c.link.mtu,
            c.seed,
            match c.link.outage_ms {
                (_, 0) => String::new(),
                (at, length) => format!(", outage {} s at {} s", length / 1000, at / 1000),
            }
        )?;
        writeln!(
            f,
            "transfers: {}/{} completed exactly once (receipts verified {}, committed once {}, \
             duplicates {}, stray entries {}), money conserved: {}",
            self.committed_once.min(self.confirmed),
            c.transfers,
            self.confirmed,
            self.committed_once,
            self.duplicates,
            self.strays,
            if self.conserved { "yes" } else { "NO" }
        )?;
        writeln!(
            f,
            "clients: {} (device sessions {}, peak open {}), server_busy refusals {}, resets {}, \
             reconnects {}, transfers re-sent {}",
            c.clients,
            b.sessions,
            self.peak_sessions,
            self.busy_refusals,
            self.resets,
            self.reconnects,
            self.resent
        )?;
        if !c.faults.is_empty() {
            let jump = match c.faults.clock_jump {
                Some((at, by)) => format!("{} ms at {} ms", by, at.millis()),
                None => "none".into(),
            };
            writeln!(
                f,
                "faults: device restarts {}, client clock jump {}, connections reset by clients {}",
                self.restarts, jump, self.peer_resets
            )?;
        }
        writeln!(
            f,
            "frames: {} sent, {} delivered, {} lost, {} reordered, {} corrupted, {} dropped \
             (link full); TCP retransmissions {}",
            l.sent, l.delivered, l.lost, l.reordered, l.corrupted, l.overflowed, l.retransmissions
        )?;
        writeln!(
            f,
            "device: {} accepted, {} logins, {} frames rejected, {} ledger requests",
            self.device.accepted,
            self.device.logins,
            self.device.rejected,
            self.device.ledger_requests
        )?;
        writeln!(
            f,
            "time: {:.1} s simulated, {:.3} s wall",
            self.simulated.millis() as f64 / 1000.0,
            self.wall.as_secs_f64()
        )?;
        let ledger = if c.flash {
            format!(
                "flash ledger on {} KiB of simulated NOR flash",
                FLASH_SECTORS * ERASE_SIZE / 1024
            )
        } else {
            format!("{LEDGER_USERS} accounts, {LEDGER_TRANSFERS} journal entries")
        };
        writeln!(
            f,
            "device memory (static): {} total = socket buffers {} + socket storage {} + \
             device {} ({} sessions x {}) + ledger {} ({ledger})",
            kib(b.total()),
            kib(b.socket_buffers),
            kib(b.socket_storage),
            kib(b.device),
            b.sessions,
            kib(b.session_bytes),
            kib(b.ledger),
        )?;
        write!(f, "transcript: {}", self.transcript_hex())
    }
}

/// Error returned when a run cannot complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError(pub String);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

fn fail<T>(message: impl Into<String>) -> Result<T, SimError> {
    Err(SimError(message.into()))
}

/// A 64-bit mix (SplitMix64's finaliser), for deriving seeds and amounts.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The amount of transfer `i`: 0.01 to 1.00.
fn amount(seed: u64, i: u32) -> Amount {
    Amount(1 + mix(seed ^ (u64::from(i) << 20)) % 100)
}

fn transfer_id(i: u32) -> String {
    format!("t{i:06}")
}

/// The device configuration the simulator and the TAP bridge use.
pub fn device_config(address: [u8; 4], seed: u64) -> DeviceConfig {
    DeviceConfig {
        mac: DEVICE_MAC,
        address,
        prefix_len: 24,
        port: DEFAULT_PORT,
        server: ServerConfig {
            min_iterations: ITERATIONS,
            unknown_user_iterations: ITERATIONS,
            ..ServerConfig::default()
        },
        secret: {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&mix(seed ^ 0x5ec2e7).to_le_bytes());
            s
        },
        net_seed: mix(seed ^ 0xde71ce),
    }
}

/// Where a simulated client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Connecting,
    RegisterRecipient,
    RegisterSelf,
    Login,
    Proof,
    Working,
    LoggingOut,
    Closing,
    Done,
}

struct SimClient {
    name: String,
    session: Box<ClientSession>,
    phase: Phase,
    wake_at: Instant,
    registered: bool,
    /// Transfers to send, oldest first (re-sends go to the front).
    todo: VecDeque<u32>,
    /// Transfers sent on this connection and not yet answered, in order.
    outstanding: VecDeque<u32>,
    nonces_pending: bool,
    /// Resets of its own connection still to do ([`Faults::resets`]).
    resets_left: u32,
    /// Receipts on the current connection before the next reset.
    reset_after: u32,
    /// Receipts on the current connection.
    receipts_here: u32,
}

/// Counters and shared truth across clients.
struct Tally {
    confirmed: Vec<bool>,
    amounts: Vec<Amount>,
    resent: u32,
    reconnects: u32,
    busy: u32,
    resets: u32,
    restarts: u32,
    peer_resets: u32,
}

impl SimClient {
    fn new(k: usize, start: Instant, todo: VecDeque<u32>, config: &SimConfig) -> Self {
        SimClient {
            resets_left: config.faults.resets,
            reset_after: reset_point(config.seed, k, config.faults.resets),
            receipts_here: 0,
            name: format!("user{k}"),
            session: Box::new(ClientSession::new(client_config())),
            phase: Phase::Waiting,
            wake_at: start,
            registered: false,
            todo,
            outstanding: VecDeque::new(),
            nonces_pending: false,
        }
    }

    /// Gives up the connection: unanswered transfers go back to the front of the queue, and
    /// the client tries again at `retry_at`.
    fn disconnect(
        &mut self,
        net: &mut ClientNet<'_, MAX_CLIENTS>,
        k: usize,
        retry_at: Instant,
        tally: &mut Tally,
    ) {
        net.socket(k).abort();
        tally.resent += self.outstanding.len() as u32;
        while let Some(i) = self.outstanding.pop_back() {
            self.todo.push_front(i);
        }
        self.phase = Phase::Waiting;
        self.wake_at = retry_at;
        self.nonces_pending = false;
        self.receipts_here = 0;
    }

    /// Runs client `k` as far as it can go at `now`.
    fn step(
        &mut self,
        k: usize,
        now: Instant,
        config: &SimConfig,
        net: &mut ClientNet<'_, MAX_CLIENTS>,
        rng: &mut ClientRng,
        tally: &mut Tally,
    ) -> Result<bool, SimError> {
        let mut progress = false;
        loop {
            let mut moved = false;
            match self.phase {
                Phase::Done => return Ok(progress),
                Phase::Waiting => {
                    if now < self.wake_at {
                        return Ok(progress);
                    }
                    if net.connect(k).is_err() {
                        return fail("cannot open a client socket");
                    }
                    self.phase = Phase::Connecting;
                    moved = true;
                }
                Phase::Connecting => {
                    let socket = net.socket(k);
                    if socket.may_send() {
                        *self.session = ClientSession::new(client_config());
                        if self.registered {
                            self.login(rng)?;
                        } else {
                            request(self.session.register(rng, RECIPIENT, PASSWORD, ITERATIONS))?;
                            self.phase = Phase::RegisterRecipient;
                        }
                        moved = true;
                    } else if !socket.is_open() {
                        // Reset without a word: no session and no refusal socket was free.
                        tally.resets += 1;
                        self.disconnect(net, k, now + config.retry, tally);
                        moved = true;
                    }
                }
                Phase::Closing => {
                    if !net.socket(k).is_open() {
                        self.phase = Phase::Done;
                        moved = true;
                    }
                }
                _ => {
                    moved |= pump(&mut self.session, net.socket(k));
                    while let Some(event) = self.session.poll_event() {
                        moved = true;
                        if !self.on_event(k, event, now, config, net, rng, tally)? {
                            break;
                        }
                    }
                    if self.phase == Phase::Working
                        && self.resets_left > 0
                        && self.receipts_here >= self.reset_after
                    {
                        // A peer that resets its connection mid-pipeline (Faults::resets).
                        self.resets_left -= 1;
                        self.reset_after = reset_point(config.seed, k, self.resets_left);
                        tally.peer_resets += 1;
                        self.disconnect(net, k, now + config.retry, tally);
                        moved = true;
                    }
                    if self.phase == Phase::Working {
                        moved |= self.send_work(tally)?;
                    }
                    let socket = net.socket(k);
                    let live = !matches!(self.phase, Phase::Waiting | Phase::Closing);
                    if live && !socket.is_active() {
                        // The device went away without a word (reset or abort).
                        tally.reconnects += 1;
                        self.disconnect(net, k, now + config.retry, tally);
                        moved = true;
                    }
                    moved |= pump(&mut self.session, net.socket(k));
                }
            }
            if !moved {
                return Ok(progress);
            }
            progress = true;
        }
    }

    fn login(&mut self, rng: &mut ClientRng) -> Result<(), SimError> {
        request(self.session.login(rng, &self.name))?;
        self.phase = Phase::Login;
        Ok(())
    }

    /// Handles one event; `false` if the connection was given up.
    #[allow(clippy::too_many_arguments)]
    fn on_event(
        &mut self,
        k: usize,
        event: ClientEvent,
        now: Instant,
        config: &SimConfig,
        net: &mut ClientNet<'_, MAX_CLIENTS>,
        rng: &mut ClientRng,
        tally: &mut Tally,
    ) -> Result<bool, SimError> {
        let exists = |code| code == ErrorCode::UserExists;
        match (self.phase, event) {
            (Phase::RegisterRecipient, ClientEvent::Registered)
            | (
                Phase::RegisterRecipient,
                ClientEvent::Refused {
                    request: RequestKind::Register,
                    code: ErrorCode::UserExists,
                    ..
                },
            ) => {
                request(self.session.register(rng, &self.name, PASSWORD, ITERATIONS))?;
                self.phase = Phase::RegisterSelf;
            }
            (Phase::RegisterSelf, ClientEvent::Registered) => {
                self.registered = true;
                self.login(rng)?;
            }
            (
                Phase::RegisterSelf,
                ClientEvent::Refused {
                    request: RequestKind::Register,
                    code,
                    ..
                },
            ) if exists(code) => {
                self.registered = true;
                self.login(rng)?;
            }
            (Phase::Login, ClientEvent::Challenge { .. }) => {
                request(self.session.answer_with_password(PASSWORD))?;
                self.phase = Phase::Proof;
            }
            (Phase::Proof, ClientEvent::LoggedIn) => self.phase = Phase::Working,
            (Phase::Working, ClientEvent::Nonces { .. }) => self.nonces_pending = false,
            (Phase::Working, ClientEvent::Receipt(r)) => {
                let Some(i) =
                    r.id.as_str()
                        .strip_prefix('t')
                        .and_then(|n| n.parse::<u32>().ok())
                else {
                    return fail(format!("receipt for an unknown id {}", r.id.as_str()));
                };
                self.outstanding.retain(|&o| o != i);
                self.receipts_here += 1;
                if let Err(code) = r.result {
                    return fail(format!("transfer {} refused: {code}", r.id.as_str()));
                }
                if r.amount != tally.amounts[i as usize] {
                    return fail(format!(
                        "receipt for {} has the wrong amount",
                        r.id.as_str()
                    ));
                }
                tally.confirmed[i as usize] = true;
            }
            (
                Phase::Working,
                ClientEvent::Refused {
                    request: RequestKind::Transfer,
                    code,
                    id,
                },
            ) => {
                return fail(format!(
                    "transfer {:?} refused before the ledger: {code}",
                    id.as_ref().map(|i| i.as_str().to_owned())
                ));
            }
            (Phase::LoggingOut, ClientEvent::LoggedOut) => {
                net.socket(k).close();
                self.phase = Phase::Closing;
            }
            (_, ClientEvent::Closed { code }) => {
                if code == ErrorCode::ServerBusy {
                    tally.busy += 1;
                } else {
                    tally.reconnects += 1;
                }
                self.disconnect(net, k, now + config.retry, tally);
                return Ok(false);
            }
            (_, ClientEvent::Integrity(e)) => {
                return fail(format!("{}: integrity failure: {e}", self.name))
            }
            (phase, event) => {
                return fail(format!(
                    "{}: unexpected {event:?} while {phase:?}",
                    self.name
                ))
            }
        }
        Ok(true)
    }

    /// Keeps the pipeline full: nonces in batches, then transfers.
    fn send_work(&mut self, tally: &Tally) -> Result<bool, SimError> {
        if self.todo.is_empty() && self.outstanding.is_empty() {
            request(self.session.logout())?;
            self.phase = Phase::LoggingOut;
            return Ok(true);
        }
        let mut moved = false;
        let available = self.session.available_nonces();
        if !self.nonces_pending && available < PIPELINE && self.todo.len() > available {
            match self.session.request_nonces(PIPELINE as u8) {
                Ok(()) => {
                    self.nonces_pending = true;
                    moved = true;
                }
                Err(ClientError::Busy) => return Ok(moved),
                Err(e) => return fail(format!("nonces request: {e}")),
            }
        }
        while self.outstanding.len() < PIPELINE && self.session.available_nonces() > 0 {
            let Some(&i) = self.todo.front() else { break };
            let id = transfer_id(i);
            match self
                .session
                .transfer(&id, RECIPIENT, tally.amounts[i as usize])
            {
                Ok(()) => {
                    self.todo.pop_front();
                    self.outstanding.push_back(i);
                    moved = true;
                }
                Err(ClientError::Busy) => break,
                Err(e) => return fail(format!("transfer request: {e}")),
            }
        }
        Ok(moved)
    }
}

/// Receipts into a connection before a client resets it: 1 to `2 * PIPELINE`, drawn from the
/// seed, the client and how many resets it has left.
fn reset_point(seed: u64, k: usize, left: u32) -> u32 {
    1 + (mix(seed ^ 0x7e5e7 ^ ((k as u64) << 40) ^ (u64::from(left) << 20)) % (2 * PIPELINE as u64))
        as u32
}

/// `t` moved by `by` milliseconds, never before zero.
fn shifted(t: Instant, by: i64) -> Instant {
    Instant::from_millis(u64::try_from(i128::from(t.millis()) + i128::from(by)).unwrap_or(0))
}

/// A network device seen through a clock that is `by_ms` ahead of the simulation's: the
/// clients' interface runs on their own (jumped) clock, while the link delivers frames on the
/// simulation's.
struct Skewed<'d, D: ?Sized> {
    inner: &'d mut D,
    by_ms: i64,
}

impl<D: phy::Device + ?Sized> Skewed<'_, D> {
    fn true_time(&self, t: smoltcp::time::Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_millis(t.total_millis().saturating_sub(self.by_ms).max(0))
    }
}

impl<D: phy::Device + ?Sized> phy::Device for Skewed<'_, D> {
    type RxToken<'t>
        = D::RxToken<'t>
    where
        Self: 't;
    type TxToken<'t>
        = D::TxToken<'t>
    where
        Self: 't;

    fn receive(
        &mut self,
        t: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let t = self.true_time(t);
        self.inner.receive(t)
    }

    fn transmit(&mut self, t: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let t = self.true_time(t);
        self.inner.transmit(t)
    }

    fn capabilities(&self) -> phy::DeviceCapabilities {
        self.inner.capabilities()
    }
}

/// Adds one boot's device counters to the run's.
fn add_stats(total: &mut DeviceStats, boot: &DeviceStats) {
    total.accepted += boot.accepted;
    total.refused += boot.refused;
    total.peak_sessions = total.peak_sessions.max(boot.peak_sessions);
    total.ledger_requests += boot.ledger_requests;
    total.registered += boot.registered;
    total.logins += boot.logins;
    total.failed_logins += boot.failed_logins;
    total.rejected += boot.rejected;
    total.closed_by_error += boot.closed_by_error;
    total.aborted += boot.aborted;
}

fn client_config() -> ClientConfig {
    ClientConfig {
        min_iterations: ITERATIONS,
        ..ClientConfig::default()
    }
}

fn request(result: Result<(), ClientError>) -> Result<(), SimError> {
    result.map_err(|e| SimError(format!("client request: {e}")))
}

/// The device's ledger as a run keeps it across device restarts, and reads it at the end.
trait SimStore {
    /// The ledger the device answers from.
    type Ledger: Ledger;
    /// The ledger for a (re)booting device at `now`, and the device secret it keeps (if it
    /// keeps one).
    fn boot(
        &mut self,
        now: Instant,
        boot: u64,
    ) -> Result<(&mut Self::Ledger, Option<[u8; 32]>), SimError>;
    /// Every journal entry (committed or, where kept there, refused), oldest first.
    fn journal(&mut self) -> Result<Vec<JournalEntry>, SimError>;
    /// Every account's balance.
    fn balances(&mut self) -> Result<Vec<(Username, Amount)>, SimError>;
    /// Money created, minor units.
    fn minted(&self) -> u128;
}

/// A [`MemLedger`], kept in RAM across restarts (as a board whose RAM survives a reset).
struct MemStore(Box<SimLedger>);

impl SimStore for MemStore {
    type Ledger = SimLedger;
    fn boot(&mut self, _: Instant, _: u64) -> Result<(&mut SimLedger, Option<[u8; 32]>), SimError> {
        Ok((&mut self.0, None))
    }
    fn journal(&mut self) -> Result<Vec<JournalEntry>, SimError> {
        Ok(self.0.journal().to_vec())
    }
    fn balances(&mut self) -> Result<Vec<(Username, Amount)>, SimError> {
        Ok(self
            .0
            .accounts()
            .iter()
            .map(|a| (a.user.clone(), a.balance))
            .collect())
    }
    fn minted(&self) -> u128 {
        self.0.minted()
    }
}

/// A [`FlashLedger`] on a simulated NOR flash, opened again from the flash image at every
/// boot: nothing but the flash survives a restart.
struct FlashStore {
    image: Vec<u8>,
    ledger: Option<SimFlashLedger>,
    opening: Amount,
    seed: u64,
}

impl SimStore for FlashStore {
    type Ledger = SimFlashLedger;
    fn boot(
        &mut self,
        now: Instant,
        boot: u64,
    ) -> Result<(&mut SimFlashLedger, Option<[u8; 32]>), SimError> {
        if let Some(mut old) = self.ledger.take() {
            // Power off: only the flash image is kept.
            self.image = old.with_flash(|pages| {
                core::mem::replace(pages.flash_mut(), RamFlash::new(Vec::new())).into_inner()
            });
        }
        let mut rng = ChaCha20Rng::seed_from_u64(mix(self.seed ^ 0xf1a5 ^ (boot << 32)));
        let flash = RamFlash::new(core::mem::take(&mut self.image));
        let ledger = FlashLedger::open(flash, self.opening, &mut rng, now).map_err(|e| {
            SimError(format!(
                "the flash ledger does not open at boot {boot}: {e}"
            ))
        })?;
        let secret = ledger.secret();
        Ok((self.ledger.insert(ledger), Some(secret)))
    }
    fn journal(&mut self) -> Result<Vec<JournalEntry>, SimError> {
        let mut entries = Vec::new();
        if let Some(ledger) = &mut self.ledger {
            ledger
                .for_each_committed(|e| entries.push(e.clone()))
                .map_err(|e| SimError(format!("reading the journal: {e}")))?;
        }
        Ok(entries)
    }
    fn balances(&mut self) -> Result<Vec<(Username, Amount)>, SimError> {
        let mut balances = Vec::new();
        if let Some(ledger) = &mut self.ledger {
            ledger
                .for_each_account(|a| balances.push((a.user.clone(), a.balance)))
                .map_err(|e| SimError(format!("reading the accounts: {e}")))?;
        }
        Ok(balances)
    }
    fn minted(&self) -> u128 {
        self.ledger.as_ref().map_or(0, FlashLedger::minted)
    }
}

/// The opening balance of every simulated account: enough for all of a run's transfers.
fn opening(config: &SimConfig) -> Amount {
    Amount(10_000u64.max(100 * u64::from(config.transfers) + 100))
}

/// Runs a simulation to the end and checks the ledger.
pub fn run(config: &SimConfig) -> Result<SimReport, SimError> {
    if config.flash {
        if config.transfers as usize > FLASH_TRANSFERS {
            return fail(format!(
                "at most {FLASH_TRANSFERS} transfers with the flash ledger (its simulated flash)"
            ));
        }
        run_on(
            config,
            FlashStore {
                image: vec![0xFF; FLASH_SECTORS * ERASE_SIZE],
                ledger: None,
                opening: opening(config),
                seed: config.seed,
            },
        )
    } else {
        run_on(config, MemStore(Box::new(SimLedger::new(opening(config)))))
    }
}

fn run_on<S: SimStore>(config: &SimConfig, mut store: S) -> Result<SimReport, SimError> {
    if config.clients == 0 || config.clients > MAX_CLIENTS {
        return fail(format!("clients must be 1 to {MAX_CLIENTS}"));
    }
    if config.transfers as usize > LEDGER_TRANSFERS {
        return fail(format!(
            "at most {LEDGER_TRANSFERS} transfers (the simulated ledger's journal)"
        ));
    }
    if config.link.mtu > MAX_MTU {
        return fail(format!("the MTU must be at most {MAX_MTU}"));
    }
    let wall = std::time::Instant::now();
    let seed = config.seed;
    let start = Instant::ZERO;
    let mut link_config = config.link;
    link_config.seed = mix(seed ^ 0x11);
    let mut link = Box::new(SimLink::new(link_config));

    // The device's parts that outlive a restart: the ledger (in flash on a board) and the
    // socket buffers (statics). Everything else is built again at each boot.
    let opening = opening(config);
    let mut buffers = Box::new(SimBuffers::new());

    // The clients' side.
    let mut client_sockets = [SocketStorage::EMPTY; MAX_CLIENTS];
    let mut client_buffers = Box::new(TcpBuffers::<MAX_CLIENTS, 2048, 2048>::new());
    let mut net = ClientNet::new(
        &mut client_sockets,
        &mut client_buffers,
        &ClientNetConfig {
            mac: CLIENT_MAC,
            address: CLIENT_ADDRESS,
            prefix_len: 24,
            server: DEVICE_ADDRESS,
            port: DEFAULT_PORT,
            net_seed: mix(seed ^ 0xc1),
        },
        &mut link.end(Side::B),
        start,
    );
    let mut rng = ClientRng::seed_from_u64(mix(seed ^ 0xc2));
    let mut tally = Tally {
        confirmed: vec![false; config.transfers as usize],
        amounts: (0..config.transfers).map(|i| amount(seed, i)).collect(),
        resent: 0,
        reconnects: 0,
        busy: 0,
        resets: 0,
        restarts: 0,
        peer_resets: 0,
    };
    let mut clients: Vec<SimClient> = (0..config.clients)
        .map(|k| {
            let todo = (0..config.transfers)
                .filter(|i| *i as usize % config.clients == k)
                .collect();
            let stagger = Duration::from_millis(config.stagger.millis() * k as u64);
            SimClient::new(k, start + stagger, todo, config)
        })
        .collect();

    // Faults: restart times, and the clients' clock (sim time shifted after the jump).
    let mut restarts: Vec<Instant> = config.faults.restarts.iter().map(|d| start + *d).collect();
    restarts.sort();
    let mut restarts = restarts.into_iter().peekable();
    let jump = config.faults.clock_jump.map(|(at, by)| (start + at, by));
    let skew = |now: Instant| match jump {
        Some((at, by)) if now >= at => by,
        _ => 0,
    };
    let client_time = |now: Instant| shifted(now, skew(now));
    let sim_time = |now: Instant, t: Instant| match jump {
        Some((at, by)) if now >= at => shifted(t, -by),
        _ => t,
    };

    let mut clock = SimClock::new(start);
    let mut peak_sessions = 0;
    let mut device_stats = DeviceStats::default();
    let mut budget = None;
    let mut boot = 0u64;
    let mut steps = 0u64;
    'boot: loop {
        // The device: everything it owns is sized at compile time.
        let mut sockets = [SocketStorage::EMPTY; SESSIONS + 1];
        let mut slot = Box::new(MaybeUninit::<SimDevice<'_, S::Ledger>>::uninit());
        let mut boot_config = device_config(DEVICE_ADDRESS, seed);
        if boot > 0 {
            // A board seeds its RNG and TCP from its TRNG at every boot.
            boot_config.net_seed = mix(boot_config.net_seed ^ boot);
        }
        let (ledger, secret) = store.boot(clock.now(), boot)?;
        if let Some(secret) = secret {
            boot_config.secret = secret;
        }
        let device = SimDevice::init(
            &mut *slot,
            DeviceParts {
                sockets: &mut sockets,
                buffers: &mut buffers,
                ledger,
            },
            ChaCha20Rng::seed_from_u64(mix(seed ^ 0xd0 ^ (boot << 32))),
            &boot_config,
            &mut link.end(Side::A),
            clock.now(),
        );
        budget.get_or_insert_with(|| device.memory_budget::<SOCKET_RX, SOCKET_TX>());
        loop {
            let now = clock.now();
            if now.saturating_since(start) > config.time_limit {
                return fail(format!(
                    "simulated time limit ({} s) reached",
                    config.time_limit.millis() / 1000
                ));
            }
            steps += 1;
            if steps > MAX_STEPS {
                return fail(format!(
                    "{MAX_STEPS} steps without finishing, at {} ms simulated",
                    now.millis()
                ));
            }
            if restarts.next_if(|&at| now >= at).is_some() {
                tally.restarts += 1;
                add_stats(&mut device_stats, device.stats());
                boot += 1;
                continue 'boot;
            }
            let client_now = client_time(now);
            device.poll(now, &mut link.end(Side::A));
            peak_sessions = peak_sessions.max(device.open_sessions());
            net.poll(
                client_now,
                &mut Skewed {
                    inner: &mut link.end(Side::B),
                    by_ms: client_now.millis() as i64 - now.millis() as i64,
                },
            );
            for (k, client) in clients.iter_mut().enumerate() {
                client.step(k, now, config, &mut net, &mut rng, &mut tally)?;
            }
            net.poll(
                client_now,
                &mut Skewed {
                    inner: &mut link.end(Side::B),
                    by_ms: client_now.millis() as i64 - now.millis() as i64,
                },
            );
            if clients.iter().all(|c| c.phase == Phase::Done) {
                add_stats(&mut device_stats, device.stats());
                break 'boot;
            }
            let waiting = clients
                .iter()
                .filter(|c| c.phase == Phase::Waiting)
                .map(|c| c.wake_at)
                .min();
            let deadlines = [
                device.poll_at(now),
                net.poll_at(client_now).map(|t| sim_time(now, t)),
                link.next_delivery()
                    .map(|t| Instant::from_millis(u64::try_from(t.total_millis()).unwrap_or(0))),
                waiting,
                restarts.peek().copied(),
                jump.map(|(at, _)| at).filter(|&at| at > now),
            ];
            if !clock.advance(deadlines) {
                let states: Vec<String> = clients
                    .iter()
                    .enumerate()
                    .map(|(k, c)| {
                        format!(
                            "{} {:?} (TCP {}, {} to send, {} unanswered, {} nonces, {} requests \
                             outstanding)",
                            c.name,
                            c.phase,
                            net.socket(k).state(),
                            c.todo.len(),
                            c.outstanding.len(),
                            c.session.available_nonces(),
                            c.session.outstanding()
                        )
                    })
                    .collect();
                return fail(format!(
                    "nothing left to happen at {} ms, and the clients are not done: {}; device: \
                     {} sessions open, {:?}",
                    now.millis(),
                    states.join(", "),
                    device.open_sessions(),
                    device.stats()
                ));
            }
        }
    }
    let simulated = clock.now().saturating_since(start);
    // Set at the first boot.
    let budget = budget.unwrap_or_else(|| unreachable!("the device booted at least once"));
    // The ledger's view: every transfer exactly once, nothing else, money conserved.
    let journal = store.journal()?;
    let balances = store.balances()?;
    let mut seen = vec![0u32; config.transfers as usize];
    let mut strays = 0;
    for entry in &journal {
        let index = entry
            .id
            .as_str()
            .strip_prefix('t')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < seen.len());
        let expected_from = index.map(|i| format!("user{}", i % config.clients));
        match index {
            Some(i)
                if entry.refused.is_none()
                    && entry.to.as_str() == RECIPIENT
                    && entry.amount == tally.amounts[i]
                    && Some(entry.from.as_str()) == expected_from.as_deref() =>
            {
                seen[i] += 1
            }
            _ => strays += 1,
        }
    }
    let committed_once = seen.iter().filter(|&&n| n == 1).count() as u32;
    let duplicates = seen.iter().filter(|&&n| n > 1).count() as u32;
    let confirmed = tally.confirmed.iter().filter(|&&c| c).count() as u32;
    let balance = |name: &str| {
        let name = Username::parse(name).ok()?;
        balances.iter().find(|(u, _)| *u == name).map(|(_, b)| *b)
    };
    let total: u128 = balances.iter().map(|(_, b)| u128::from(b.minor())).sum();
    let mut conserved = total == store.minted();
    let mut received = 0u64;
    for k in 0..config.clients {
        let sent: u64 = (0..config.transfers)
            .filter(|i| *i as usize % config.clients == k)
            .map(|i| tally.amounts[i as usize].minor())
            .sum();
        received += sent;
        conserved &= balance(&format!("user{k}")) == Some(Amount(opening.minor() - sent));
    }
    conserved &= balance(RECIPIENT) == Some(Amount(opening.minor() + received));

    Ok(SimReport {
        config: config.clone(),
        confirmed,
        committed_once,
        duplicates,
        strays,
        conserved,
        resent: tally.resent,
        reconnects: tally.reconnects,
        busy_refusals: tally.busy,
        resets: tally.resets,
        peak_sessions,
        link: *link.stats(),
        device: device_stats,
        budget,
        restarts: tally.restarts,
        peer_resets: tally.peer_resets,
        simulated,
        wall: wall.elapsed(),
        transcript: link.transcript(),
    })
}
