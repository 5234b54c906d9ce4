//! The device: txsock's server on a smoltcp [`Interface`], in memory fixed at compile time.
//!
//! A [`Device`] owns one smoltcp interface, `SESSIONS` TCP sockets each paired with one core
//! [`ServerSession`], one more small socket that turns away connections beyond `SESSIONS`
//! with the core's own refusal ([`ServerSession::close_with`]`(`[`ErrorCode::ServerBusy`]`)`),
//! the shared server state ([`ServerShared`]: policy, RNG, login throttle) and a borrowed
//! [`Ledger`] that it answers synchronously. One call, [`Device::poll`], does everything: it
//! moves frames through smoltcp, bytes between sockets and sessions, answers the sessions'
//! ledger requests, fires their timeouts, and recycles sockets whose sessions have ended.
//!
//! It does not allocate, read a clock, or know where its frames go: the board hands it a
//! smoltcp [`phy::Device`] and "now" on every call, and sleeps until [`Device::poll_at`].
//!
//! # Clients beyond the sessions
//!
//! The one refusal socket turns away one client at a time: it writes the `server_busy` line
//! and its FIN, and listens again as soon as the client has acknowledged both (a round trip
//! or two), whether or not the client closes its own side; a client that resets the
//! connection before it is refused frees it at once. A further client that arrives while a
//! refusal is under way finds no listening socket and gets a TCP reset ("connection
//! refused") instead of the `server_busy` line; a client that never acknowledges the refusal
//! holds the socket for [`CLOSE_TIMEOUT`] at most.
//!
//! # Resets
//!
//! A connection that does not finish closing within [`CLOSE_TIMEOUT`] is reset, so that the
//! client learns at once that its session is gone. smoltcp sends the reset at the
//! interface's next poll (the one at the end of the same [`Device::poll`]), and only while
//! the socket still knows its peer, so the slot listens again once the reset has left. It
//! may not be able to leave: the peer's link-layer address is not known (its neighbour
//! entry expires after a minute, and a peer that is gone or behind a dead link never answers
//! the request for it). So the wait is bounded, [`RESET_WAIT`] at most: then the slot
//! serves new clients, and the old one learns of the reset from its next segment. An
//! unbounded wait kept such a slot out of service for as long as the link was down, and its
//! past close deadline made [`Device::poll_at`] ask for a poll at once, for ever (a busy
//! loop, which the simulator's sweep found as scenarios that never finished).
//!
//! # Memory
//!
//! Everything is sized by const generics and by the caller's buffers:
//!
//! - [`SocketBuffers`]`<SESSIONS, RX, TX>`: each session socket's receive and transmit
//!   buffers (`RX` is also the TCP window offered to the client; `TX` should hold at least
//!   one response, [`MAX_RESPONSE`] bytes, or the session waits for ACKs mid-response), plus
//!   the refusal socket's small buffers ([`REFUSAL_RX`], [`REFUSAL_TX`]).
//! - `[SocketStorage; SOCKETS]`, `SOCKETS == SESSIONS + 1` (checked at compile time).
//! - The [`Device`] itself: the interface, `SESSIONS` default [`ServerSession`]s (about 1.9 KiB
//!   each), the shared state with a [`THROTTLE_ADDRS`]-entry address throttle, and the RNG.
//! - The ledger, owned by the caller: a [`MemLedger`](txsock_core::MemLedger) in RAM, or a
//!   board's own [`Ledger`] over flash.
//!
//! [`Device::init`] builds the device *in place* in a [`MaybeUninit`] slot, so a board can put
//! it in a zero-initialised static (`.bss`, no flash for an initialiser) without a large
//! temporary on the stack; [`MemoryBudget`] reports the sizes.

use core::convert::Infallible;
use core::mem::{size_of, MaybeUninit};
use core::ptr::addr_of_mut;

use rand_core::{CryptoRng, RngCore};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy;
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use txsock_core::framing::MAX_RESPONSE;
use txsock_core::ledger::{Ledger, LedgerReply, LedgerRequest};
use txsock_core::lockout::PeerAddr;
use txsock_core::session::{ServerConfig, ServerEvent, ServerShared};
use txsock_core::{Duration, ErrorCode, Instant, ServerSession};

/// The port a device listens on by default (the same as `txsock serve`).
pub const DEFAULT_PORT: u16 = 11002;

/// Peer addresses whose failed logins the device remembers (about 48 bytes each).
pub const THROTTLE_ADDRS: usize = 8;

/// Receive buffer of the refusal socket. It only discards what the refused client sends.
pub const REFUSAL_RX: usize = 64;

/// Transmit buffer of the refusal socket: holds the one `server_busy` error line.
pub const REFUSAL_TX: usize = 128;

/// How long a closing connection may take to finish (flush, FIN handshake) before the device
/// resets it and reuses the socket.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a reset connection's socket waits for its reset to leave before it listens
/// again without it.
///
/// smoltcp sends an aborted socket's reset at the interface's next poll, and only while the
/// socket still knows its peer: listening forgets the peer, and the reset with it (the client
/// would learn of the reset only from its next segment, which may be many seconds away). So
/// the slot waits, but not for ever: the reset cannot leave while the peer's link-layer
/// address is unknown (smoltcp asks for it once a second, and a peer that is gone or behind a
/// dead link never answers). Two seconds cover two such requests; after that the slot serves
/// new clients again and the old one learns of the reset from its next segment. The wait is
/// in time, not in polls, because polls come in bursts (one per frame from other clients) that
/// could use up a poll count before the peer could answer.
pub const RESET_WAIT: Duration = Duration::from_secs(2);

/// The session that writes a refusal: nothing but [`ServerSession::close_with`] is ever
/// called on it, so its input buffer and nonce ring are minimal. It lives on the stack for
/// the duration of one refusal.
type RefusalSession = ServerSession<1, 1, MAX_RESPONSE>;

/// The device's network identity and server policy.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Ethernet address of the device's interface (must be unicast).
    pub mac: [u8; 6],
    /// IPv4 address of the device.
    pub address: [u8; 4],
    /// Prefix length of the device's subnet.
    pub prefix_len: u8,
    /// TCP port to listen on (not 0).
    pub port: u16,
    /// The core's server policy.
    pub server: ServerConfig,
    /// The secret that keeps unknown users' fake salts stable: provision it once per device
    /// and keep it across restarts ([`ServerShared::new`]).
    pub secret: [u8; 32],
    /// Seed for smoltcp's TCP initial sequence numbers and ports (need not be secret, should
    /// differ per boot: [`Config::random_seed`]).
    pub net_seed: u64,
}

/// Receive and transmit buffers of every socket of a device with `SESSIONS` sessions.
///
/// All zero, so a `static` of it costs no flash. Size: `SESSIONS * (RX + TX) + REFUSAL_RX +
/// REFUSAL_TX` bytes.
pub struct SocketBuffers<const SESSIONS: usize, const RX: usize, const TX: usize> {
    rx: [[u8; RX]; SESSIONS],
    tx: [[u8; TX]; SESSIONS],
    refusal_rx: [u8; REFUSAL_RX],
    refusal_tx: [u8; REFUSAL_TX],
}

impl<const SESSIONS: usize, const RX: usize, const TX: usize> SocketBuffers<SESSIONS, RX, TX> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        SocketBuffers {
            rx: [[0; RX]; SESSIONS],
            tx: [[0; TX]; SESSIONS],
            refusal_rx: [0; REFUSAL_RX],
            refusal_tx: [0; REFUSAL_TX],
        }
    }
}

impl<const SESSIONS: usize, const RX: usize, const TX: usize> Default
    for SocketBuffers<SESSIONS, RX, TX>
{
    fn default() -> Self {
        Self::new()
    }
}

/// The memory a device is built from, placed by the caller (in statics on a board): see
/// [`Device::init`].
pub struct DeviceParts<
    'a,
    L,
    const SESSIONS: usize,
    const SOCKETS: usize,
    const RX: usize,
    const TX: usize,
> {
    /// smoltcp's socket storage, `SESSIONS + 1` entries of [`SocketStorage::EMPTY`].
    pub sockets: &'a mut [SocketStorage<'a>; SOCKETS],
    /// The sockets' buffers.
    pub buffers: &'a mut SocketBuffers<SESSIONS, RX, TX>,
    /// The ledger the sessions use.
    pub ledger: &'a mut L,
}

/// Something a driver may want to log; passed to the callback of [`Device::poll_with`].
#[derive(Debug)]
#[non_exhaustive]
pub enum DeviceEvent<'e> {
    /// A client connected to session slot `slot`.
    Accepted {
        /// The slot.
        slot: usize,
        /// The client's address.
        peer: PeerAddr,
    },
    /// A client was turned away with `server_busy`: every session was in use.
    Refused {
        /// The client's address.
        peer: PeerAddr,
    },
    /// The session in `slot` reported `event`.
    Session {
        /// The slot.
        slot: usize,
        /// What happened.
        event: &'e ServerEvent,
    },
    /// The connection in `slot` ended (the session closed, the peer hung up, or TCP reset).
    Closed {
        /// The slot.
        slot: usize,
    },
}

/// Counters kept by a device since [`Device::init`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Connections given a session.
    pub accepted: u32,
    /// Connections refused with `server_busy`.
    pub refused: u32,
    /// The most sessions open at once.
    pub peak_sessions: u32,
    /// Ledger requests answered.
    pub ledger_requests: u32,
    /// Successful registrations.
    pub registered: u32,
    /// Successful logins.
    pub logins: u32,
    /// Failed logins.
    pub failed_logins: u32,
    /// Frames refused by a session (bad MAC, unknown nonce, malformed, ...).
    pub rejected: u32,
    /// Sessions closed by the core because of an error (timeout, too many bad frames, ...).
    pub closed_by_error: u32,
    /// Connections reset because they did not finish closing within [`CLOSE_TIMEOUT`].
    pub aborted: u32,
}

/// What a device's memory is made of, in bytes: see [`Device::memory_budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Number of sessions.
    pub sessions: usize,
    /// One [`ServerSession`].
    pub session_bytes: usize,
    /// Socket receive and transmit buffers, the refusal socket's included.
    pub socket_buffers: usize,
    /// smoltcp's socket storage (`SESSIONS + 1` sockets).
    pub socket_storage: usize,
    /// The [`Device`] struct: interface, sessions, shared state and RNG, bookkeeping.
    pub device: usize,
    /// The ledger.
    pub ledger: usize,
}

impl MemoryBudget {
    /// Everything the device keeps in RAM.
    pub fn total(&self) -> usize {
        self.socket_buffers + self.socket_storage + self.device + self.ledger
    }
}

/// Where a socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Listening for a client.
    Listening,
    /// Connected; for a session slot, its session is live.
    Open,
    /// Finishing the close; listens again once TCP is done.
    Draining,
    /// Reset, its reset not yet sent: listens again once it has left, or at its deadline
    /// ([`RESET_WAIT`]).
    Resetting,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    handle: SocketHandle,
    state: SlotState,
    /// While closing (a closing session, or [`SlotState::Draining`]): when the connection is
    /// reset ([`CLOSE_TIMEOUT`] after the close began). While [`SlotState::Resetting`]: when
    /// it listens again without its reset. `None` otherwise. One field for both keeps the
    /// slot, and the code of [`Device::poll_at`], small.
    deadline: Option<Instant>,
}

impl Slot {
    fn new(handle: SocketHandle) -> Slot {
        Slot {
            handle,
            state: SlotState::Listening,
            deadline: None,
        }
    }
}

/// txsock's server on smoltcp: see the [module documentation](self).
///
/// `L` is the ledger, `R` the nonce RNG (a cryptographic RNG seeded from the board's TRNG,
/// e.g. `rand_chacha::ChaCha20Rng`), `SESSIONS` the number of concurrent sessions and
/// `SOCKETS` must be `SESSIONS + 1` (the extra socket refuses clients beyond `SESSIONS`).
///
/// # Driving a device
///
/// 1. [`Device::init`] once, with the memory ([`DeviceParts`]), the RNG, the configuration
///    and the network device.
/// 2. Loop: [`Device::poll`] (or [`Device::poll_with`] to log events) with the current time,
///    then sleep until [`Device::poll_at`] or until the network device has a frame.
pub struct Device<'a, L, R, const SESSIONS: usize, const SOCKETS: usize> {
    iface: Interface,
    sockets: SocketSet<'a>,
    slots: [Slot; SESSIONS],
    refusal: Slot,
    sessions: [ServerSession; SESSIONS],
    shared: ServerShared<R, THROTTLE_ADDRS>,
    ledger: &'a mut L,
    port: u16,
    stats: DeviceStats,
}

fn smol(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(i64::try_from(now.millis()).unwrap_or(i64::MAX))
}

fn core_instant(at: smoltcp::time::Instant) -> Instant {
    Instant::from_millis(u64::try_from(at.total_millis()).unwrap_or(0))
}

fn peer_of(socket: &tcp::Socket<'_>) -> PeerAddr {
    match socket.remote_endpoint().map(|e| e.addr) {
        Some(IpAddress::Ipv4(a)) => PeerAddr::ipv4(a.octets()),
        #[allow(unreachable_patterns)] // only with smoltcp's proto-ipv6
        _ => PeerAddr([0; 16]),
    }
}

impl<'a, L, R, const SESSIONS: usize, const SOCKETS: usize> Device<'a, L, R, SESSIONS, SOCKETS>
where
    L: Ledger,
    R: RngCore + CryptoRng,
{
    /// Builds the device in `slot`, in place, and returns it: `parts` become its sockets and
    /// its ledger, `rng` the source of its nonces and SCRAM nonce extensions. `phy` is only
    /// asked for its capabilities (medium, MTU).
    ///
    /// Panics on a configuration error: `config.port` is 0, `config.mac` is not unicast, or
    /// `phy` is not an Ethernet device.
    #[inline(never)]
    pub fn init<'s, const RX: usize, const TX: usize>(
        slot: &'s mut MaybeUninit<Self>,
        parts: DeviceParts<'a, L, SESSIONS, SOCKETS, RX, TX>,
        rng: R,
        config: &DeviceConfig,
        phy: &mut (impl phy::Device + ?Sized),
        now: Instant,
    ) -> &'s mut Self {
        let DeviceParts {
            sockets,
            buffers,
            ledger,
        } = parts;
        const {
            assert!(SESSIONS > 0, "a device needs at least one session");
            assert!(
                SOCKETS == SESSIONS + 1,
                "SOCKETS must be SESSIONS + 1: one socket per session and one to refuse clients"
            );
        };
        assert!(config.port != 0, "the device's port must not be 0");

        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        iface_config.random_seed = config.net_seed;
        let mut iface = Interface::new(iface_config, phy, smol(now));
        let [a, b, c, d] = config.address;
        iface.update_ip_addrs(|addrs| {
            // A fresh interface has no addresses and room for at least one.
            let _ = addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), config.prefix_len));
        });

        let mut set = SocketSet::new(&mut sockets[..]);
        let listen = |socket: &mut tcp::Socket<'_>| {
            // Cannot fail: the socket is new and the port is not 0.
            let _ = socket.listen(config.port);
        };
        let mut handles = [SocketHandle::default(); SESSIONS];
        let SocketBuffers {
            rx,
            tx,
            refusal_rx,
            refusal_tx,
        } = buffers;
        for ((handle, rx), tx) in handles.iter_mut().zip(rx.iter_mut()).zip(tx.iter_mut()) {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(&mut rx[..]),
                tcp::SocketBuffer::new(&mut tx[..]),
            );
            listen(&mut socket);
            // Cannot panic: the storage has SESSIONS + 1 slots (checked above).
            *handle = set.add(socket);
        }
        // Added last: smoltcp hands a SYN to the first listening socket, so this one only
        // gets a client when every session socket is busy.
        let mut refusal = tcp::Socket::new(
            tcp::SocketBuffer::new(&mut refusal_rx[..]),
            tcp::SocketBuffer::new(&mut refusal_tx[..]),
        );
        listen(&mut refusal);
        refusal.set_timeout(Some(smoltcp::time::Duration::from_millis(
            CLOSE_TIMEOUT.millis(),
        )));
        let refusal = set.add(refusal);

        let this = slot.as_mut_ptr();
        // SAFETY: `this` points to `slot`'s memory, valid for writes and suitably aligned.
        // Every field of `Device` is written exactly once below, through raw pointers (no
        // reference to uninitialised memory is made), before `assume_init_mut`. The sessions
        // are written one at a time so that no `[ServerSession; SESSIONS]` temporary is built
        // on the stack.
        unsafe {
            addr_of_mut!((*this).iface).write(iface);
            addr_of_mut!((*this).sockets).write(set);
            addr_of_mut!((*this).slots).write(handles.map(Slot::new));
            addr_of_mut!((*this).refusal).write(Slot::new(refusal));
            let sessions = addr_of_mut!((*this).sessions).cast::<ServerSession>();
            for i in 0..SESSIONS {
                sessions
                    .add(i)
                    .write(ServerSession::new(PeerAddr([0; 16]), now));
            }
            addr_of_mut!((*this).shared).write(ServerShared::new(
                config.server,
                rng,
                config.secret,
            ));
            addr_of_mut!((*this).ledger).write(ledger);
            addr_of_mut!((*this).port).write(config.port);
            addr_of_mut!((*this).stats).write(DeviceStats::default());
            slot.assume_init_mut()
        }
    }

    /// Runs the device at `now`: see [`poll_with`](Self::poll_with).
    pub fn poll(&mut self, now: Instant, phy: &mut (impl phy::Device + ?Sized)) -> bool {
        self.poll_with(now, phy, |_| {})
    }

    /// Runs the device at `now` and reports what happened to `on_event`: receives frames,
    /// feeds the sessions, answers their ledger requests at once, fires their timeouts,
    /// writes their output, transmits, and recycles finished connections. Returns whether
    /// any socket's state may have changed.
    pub fn poll_with(
        &mut self,
        now: Instant,
        phy: &mut (impl phy::Device + ?Sized),
        mut on_event: impl FnMut(DeviceEvent<'_>),
    ) -> bool {
        let mut changed = self.iface.poll(smol(now), phy, &mut self.sockets) != PollResult::None;
        for i in 0..SESSIONS {
            self.service(i, now, &mut on_event);
        }
        self.service_refusal(now, &mut on_event);
        changed |= self.iface.poll(smol(now), phy, &mut self.sockets) != PollResult::None;
        // The poll above sent the resets of the sockets reset in this one: those slots serve
        // the next client from now, not from the next poll.
        for slot in self
            .slots
            .iter_mut()
            .chain(core::iter::once(&mut self.refusal))
        {
            if slot.state == SlotState::Resetting {
                let socket = self.sockets.get_mut::<tcp::Socket<'_>>(slot.handle);
                recycle(socket, slot, self.port, now, &mut self.stats);
                changed |= slot.state == SlotState::Listening;
            }
        }
        changed
    }

    /// When [`poll`](Self::poll) must run next at the latest (a TCP timer or a session
    /// deadline); `None` if only an incoming frame can make work.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let mut at = self
            .iface
            .poll_at(smol(now), &self.sockets)
            .map(core_instant);
        let mut earliest = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        for (slot, session) in self.slots.iter().zip(self.sessions.iter()) {
            if slot.state == SlotState::Open {
                if let Some(deadline) = session.poll_timeout(&self.shared) {
                    earliest(deadline);
                }
            }
            if let Some(deadline) = slot.deadline {
                earliest(deadline);
            }
        }
        if let Some(deadline) = self.refusal.deadline {
            earliest(deadline);
        }
        at
    }

    /// The ledger.
    pub fn ledger(&self) -> &L {
        self.ledger
    }

    /// The ledger, to provision users or deposit money between polls.
    pub fn ledger_mut(&mut self) -> &mut L {
        self.ledger
    }

    /// Counters since [`init`](Self::init).
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// Sessions serving a client now.
    pub fn open_sessions(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == SlotState::Open)
            .count()
    }

    /// The sizes this device is made of, given its socket buffers' `RX` and `TX`.
    pub fn memory_budget<const RX: usize, const TX: usize>(&self) -> MemoryBudget {
        MemoryBudget {
            sessions: SESSIONS,
            session_bytes: size_of::<ServerSession>(),
            socket_buffers: size_of::<SocketBuffers<SESSIONS, RX, TX>>(),
            socket_storage: size_of::<[SocketStorage<'_>; SOCKETS]>(),
            device: size_of::<Self>(),
            ledger: size_of::<L>(),
        }
    }

    /// Services session slot `i`: accept, move bytes, answer the ledger, close, recycle.
    #[inline(never)]
    fn service(&mut self, i: usize, now: Instant, on_event: &mut impl FnMut(DeviceEvent<'_>)) {
        let Device {
            sockets,
            slots,
            sessions,
            shared,
            ledger,
            port,
            stats,
            ..
        } = self;
        let slot = &mut slots[i];
        let socket = sockets.get_mut::<tcp::Socket<'_>>(slot.handle);
        let session = &mut sessions[i];

        if slot.state == SlotState::Listening {
            if !socket.is_active() {
                if !socket.is_open() {
                    // Not listening any more (it never should be): listen again.
                    recycle(socket, slot, *port, now, stats);
                }
                return;
            }
            let peer = peer_of(socket);
            reset_session(session, peer, now);
            slot.state = SlotState::Open;
            stats.accepted += 1;
            on_event(DeviceEvent::Accepted { slot: i, peer });
            let open = slots.iter().filter(|s| s.state == SlotState::Open).count();
            stats.peak_sessions = stats.peak_sessions.max(open as u32);
        }
        let slot = &mut slots[i];

        if slot.state == SlotState::Open {
            if let Some(deadline) = session.poll_timeout(shared) {
                if now >= deadline {
                    session.handle_timeout(shared, now);
                }
            }
            drive(
                socket,
                session,
                shared,
                &mut **ledger,
                now,
                stats,
                |event| on_event(DeviceEvent::Session { slot: i, event }),
            );
            // The client closed its side and everything it sent has been read.
            let peer_done = socket.state() == tcp::State::CloseWait && socket.recv_queue() == 0;
            let flushed = session.poll_transmit().is_empty();
            if session.is_closed() || !socket.is_active() || (peer_done && flushed) {
                socket.close();
                slot.state = SlotState::Draining;
                slot.deadline = Some(now + CLOSE_TIMEOUT);
                // Wipes the ended session (its keys) now rather than at the next connection.
                reset_session(session, PeerAddr([0; 16]), now);
                on_event(DeviceEvent::Closed { slot: i });
            } else if session.is_closing() && slot.deadline.is_none() {
                // The last response may be stuck behind a client that reads nothing.
                slot.deadline = Some(now + CLOSE_TIMEOUT);
            }
        }
        if slot.state == SlotState::Open {
            if let Some(deadline) = slot.deadline {
                if now >= deadline {
                    socket.abort();
                    stats.aborted += 1;
                    slot.state = SlotState::Draining;
                    reset_session(session, PeerAddr([0; 16]), now);
                    on_event(DeviceEvent::Closed { slot: i });
                }
            }
        }
        if matches!(slot.state, SlotState::Draining | SlotState::Resetting) {
            recycle(socket, slot, *port, now, stats);
        }
    }

    /// Services the refusal socket: a client that reaches it gets `server_busy` and a close.
    #[inline(never)]
    fn service_refusal(&mut self, now: Instant, on_event: &mut impl FnMut(DeviceEvent<'_>)) {
        let slot = &mut self.refusal;
        let socket = self.sockets.get_mut::<tcp::Socket<'_>>(slot.handle);
        if slot.state == SlotState::Listening && socket.is_active() {
            slot.state = SlotState::Open;
        }
        if slot.state == SlotState::Open {
            if socket.may_send() {
                let peer = refuse(socket, now);
                slot.state = SlotState::Draining;
                slot.deadline = Some(now + CLOSE_TIMEOUT);
                self.stats.refused += 1;
                on_event(DeviceEvent::Refused { peer });
            } else if !socket.is_active() {
                // Gone before it could be refused: reset by the client during the handshake
                // (a half-open scan), which puts smoltcp's socket back to listening on its
                // own. Closing it makes `recycle` listen again; left listening, this slot
                // would drain forever and refuse nobody again.
                socket.abort();
                slot.state = SlotState::Draining;
            }
        }
        if matches!(slot.state, SlotState::Draining | SlotState::Resetting) {
            if socket.state() == tcp::State::FinWait2 {
                // The client has acknowledged the refusal and the FIN: it has all it will
                // get. Waiting for its own close would hold the one refusal socket (and
                // leave the next client beyond the sessions unanswered) for as long as it
                // keeps its side open, up to CLOSE_TIMEOUT. It listens again at once, so
                // the peer is forgotten without a reset: a reset could make the client's
                // stack discard the refusal it has not read yet. Its next segment meets
                // the listening socket and is reset then.
                socket.abort();
                let _ = socket.listen(self.port);
                slot.state = SlotState::Listening;
                slot.deadline = None;
                return;
            }
            recycle(socket, slot, self.port, now, &mut self.stats);
        }
    }
}

/// Moves bytes between `socket` and `session` and answers the session's ledger requests
/// until neither side can make progress. Input, ledger and events go through the core's one
/// drive loop ([`ServerSession::drive`]); its output waits in the session (the socket is
/// borrowed while it reads) and goes to the socket here.
fn drive<R: RngCore + CryptoRng, L: Ledger>(
    socket: &mut tcp::Socket<'_>,
    session: &mut ServerSession,
    shared: &mut ServerShared<R, THROTTLE_ADDRS>,
    ledger: &mut L,
    now: Instant,
    stats: &mut DeviceStats,
    mut on_event: impl FnMut(&ServerEvent),
) {
    loop {
        let mut requests = 0;
        let mut counted = CountedLedger {
            ledger: &mut *ledger,
            requests: &mut requests,
        };
        let mut events = |event: ServerEvent| {
            count(stats, &event);
            on_event(&event);
        };
        let later = |_: &[u8]| Ok::<usize, Infallible>(0);
        let consumed = if session.wants_input() && socket.can_recv() {
            socket
                .recv(|input| {
                    let Ok(n) = session.drive(shared, &mut counted, now, input, later, &mut events);
                    (n, n)
                })
                .unwrap_or(0)
        } else {
            let Ok(n) = session.drive(shared, &mut counted, now, &[], later, &mut events);
            n
        };
        stats.ledger_requests += requests;
        let mut progress = consumed > 0 || requests > 0;
        let pending = session.poll_transmit();
        if !pending.is_empty() && socket.may_send() {
            if let Ok(n) = socket.send_slice(pending) {
                session.advance_transmit(n);
                progress |= n > 0;
            }
        }
        if !progress {
            return;
        }
    }
}

/// A ledger that counts the requests it answers, for [`DeviceStats::ledger_requests`].
struct CountedLedger<'a, L: ?Sized> {
    ledger: &'a mut L,
    requests: &'a mut u32,
}

impl<L: Ledger + ?Sized> Ledger for CountedLedger<'_, L> {
    fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
        *self.requests += 1;
        self.ledger.execute(request, now)
    }
}

// The helpers below are kept out of line on purpose: each holds large temporaries (a whole
// session, a ledger request and reply, a parsed request), and inlined into one frame their
// stack slots would add up instead of taking turns.

/// Re-creates the slot's `session` for a connection from `peer` (the old one, keys and all, is
/// dropped).
#[inline(never)]
fn reset_session(session: &mut ServerSession, peer: PeerAddr, now: Instant) {
    *session = ServerSession::new(peer, now);
}

/// Writes the core's `server_busy` refusal to `socket` and closes it; returns the peer.
#[inline(never)]
fn refuse(socket: &mut tcp::Socket<'_>, now: Instant) -> PeerAddr {
    let peer = peer_of(socket);
    let mut refusal = RefusalSession::new(peer, now);
    refusal.close_with(ErrorCode::ServerBusy);
    // The line (under 100 bytes) fits in the empty REFUSAL_TX buffer.
    let _ = socket.send_slice(refusal.poll_transmit());
    socket.close();
    peer
}

/// A closing socket: discards what the peer still sends, and listens again once TCP has
/// finished (or resets it after [`CLOSE_TIMEOUT`]); a reset socket, once its reset has left
/// or after [`RESET_WAIT`].
fn recycle(
    socket: &mut tcp::Socket<'_>,
    slot: &mut Slot,
    port: u16,
    now: Instant,
    stats: &mut DeviceStats,
) {
    if socket.can_recv() {
        let _ = socket.recv(|input| (input.len(), ()));
    }
    if socket.is_open() && slot.deadline.is_some_and(|deadline| now >= deadline) {
        socket.abort();
        stats.aborted += 1;
    }
    if socket.is_open() {
        return;
    }
    // A reset socket (by the device, or by smoltcp's own timeout) keeps its peer until the
    // interface has sent the reset; listening forgets both. See RESET_WAIT.
    let reset_pending = socket.state() == tcp::State::Closed && socket.remote_endpoint().is_some();
    if reset_pending {
        if slot.state != SlotState::Resetting {
            // The close deadline is over (the socket is closed): the reset's replaces it,
            // so `poll_at` never asks for a poll in the past while the reset waits.
            slot.state = SlotState::Resetting;
            slot.deadline = Some(now + RESET_WAIT);
        }
        if slot.deadline.is_some_and(|deadline| now < deadline) {
            return;
        }
    }
    // Cannot fail: the socket is closed (or in TIME-WAIT) and the port is not 0.
    let _ = socket.listen(port);
    slot.state = SlotState::Listening;
    slot.deadline = None;
}

fn count(stats: &mut DeviceStats, event: &ServerEvent) {
    match event {
        ServerEvent::Registered { .. } => stats.registered += 1,
        ServerEvent::LoggedIn { .. } => stats.logins += 1,
        ServerEvent::LoginFailed { .. } => stats.failed_logins += 1,
        ServerEvent::Rejected { .. } => stats.rejected += 1,
        ServerEvent::Closing { .. } => stats.closed_by_error += 1,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal is one error line that fits the refusal socket's transmit buffer whole.
    #[test]
    fn the_refusal_line_fits_the_refusal_socket() {
        let mut refusal = RefusalSession::new(PeerAddr([0; 16]), Instant::ZERO);
        refusal.close_with(ErrorCode::ServerBusy);
        let line = refusal.poll_transmit();
        assert!(line.len() <= REFUSAL_TX, "{} bytes", line.len());
        assert!(line.starts_with(b"{\"op\":\"error\",\"code\":\"server_busy\""));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
        assert!(refusal.is_closing());
    }

    #[test]
    fn socket_buffers_are_what_their_doc_says() {
        assert_eq!(
            size_of::<SocketBuffers<4, 1024, 512>>(),
            4 * (1024 + 512) + REFUSAL_RX + REFUSAL_TX
        );
    }
}
