//! txsock's server on [embassy-net](https://docs.rs/embassy-net): one task per session, each
//! running the core's async driver ([`txsock_core::asynch::serve`]) on its own `TcpSocket`,
//! one more task that turns away clients beyond them with the core's `server_busy` refusal,
//! and one [`Server`] they all share: the ledger behind an async mutex, the core's shared
//! state (policy, nonce RNG, the per-address login throttle) behind a blocking one.
//!
//! It has no protocol code of its own: sessions, refusals, deadlines and the throttle are the
//! core's ([`ServerSession`], [`ServerSession::close_with`], [`ServerSession::poll_timeout`],
//! [`ServerShared`]), exactly as in the smoltcp device (`txsock-firmware-sim`'s `device.rs`).
//! What it adds is embassy plumbing: accepting, closing and recycling sockets, and the
//! executor's clock ([`EmbassyTimer`]).
//!
//! `#![no_std]`, no allocation: the sessions live in the tasks' futures (in the executor's
//! static task storage), the socket buffers in [`SocketBuffers`].
//!
//! # Serving
//!
//! ```ignore
//! // Once, at boot, after embassy_net::new(..) and spawning its runner:
//! let server = SERVER.init(Server::new(config, rng, secret, ledger, DEFAULT_PORT));
//! let (sessions, refusal) = BUFFERS.init(SocketBuffers::new()).sockets(stack);
//! for (slot, socket) in sessions.into_iter().enumerate() {
//!     spawner.spawn(session_task(server, slot, socket).unwrap());
//! }
//! spawner.spawn(refusal_task(server, refusal).unwrap());
//!
//! #[embassy_executor::task(pool_size = SESSIONS)]
//! async fn session_task(server: &'static BoardServer, slot: usize, mut socket: TcpSocket<'static>) -> ! {
//!     server.serve(slot, &mut socket, |_| {}).await
//! }
//! #[embassy_executor::task]
//! async fn refusal_task(server: &'static BoardServer, mut socket: TcpSocket<'static>) -> ! {
//!     server.refuse(&mut socket, |_| {}).await
//! }
//! ```
//!
//! The refusal socket must be created after the session sockets ([`SocketBuffers::sockets`]
//! does that): smoltcp hands a connection to the first listening socket, so the refusal task
//! only gets a client when every session socket is busy.

#![no_std]
#![deny(missing_docs)]

use core::cell::{Cell, RefCell};

use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, Stack};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::blocking_mutex::Mutex as BlockingMutex;
use embassy_sync::mutex::Mutex;
use embassy_time::{with_timeout, Duration as EmbassyDuration};
use embedded_io_async::Write as _;
use rand_core::{CryptoRng, RngCore};
use txsock_core::asynch::{self, AsyncLedger, SharedState, Timer};
use txsock_core::framing::MAX_RESPONSE;
use txsock_core::ledger::{LedgerReply, LedgerRequest};
use txsock_core::lockout::PeerAddr;
use txsock_core::session::{ServerConfig, ServerEvent, ServerShared};
use txsock_core::{ErrorCode, Instant, ServerSession};

/// The port the server listens on by default (the same as `txsock serve` and the device).
pub const DEFAULT_PORT: u16 = 11002;

/// Peer addresses whose failed logins the server remembers (about 48 bytes each); the
/// device's figure.
pub const THROTTLE_ADDRS: usize = 8;

/// Receive buffer of the refusal socket: it only discards what a refused client sends.
pub const REFUSAL_RX: usize = 64;

/// Transmit buffer of the refusal socket: holds the one `server_busy` error line.
pub const REFUSAL_TX: usize = 128;

/// How long a closing connection may take to finish (flush, FIN handshake) before it is
/// reset and its socket listens again; the device's figure.
pub const CLOSE_TIMEOUT: EmbassyDuration = EmbassyDuration::from_secs(10);

/// How long a reset socket waits for its reset to leave before it listens again without it:
/// the reset cannot leave while the peer's link-layer address is unknown (a peer that is
/// gone never answers), and the socket should not stay out of service for that. The same
/// bound as the device's (`txsock_firmware_sim::device::RESET_WAIT`, whose docs explain it).
pub const RESET_WAIT: EmbassyDuration = EmbassyDuration::from_secs(2);

/// The session that writes a refusal, as in the device: nothing but
/// [`ServerSession::close_with`] is called on it, so its input buffer and nonce ring are
/// minimal.
type RefusalSession = ServerSession<1, 1, MAX_RESPONSE>;

/// The executor's clock for the core: embassy-time's `Instant` in milliseconds since boot.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyTimer;

impl Timer for EmbassyTimer {
    fn now(&self) -> Instant {
        Instant::from_millis(embassy_time::Instant::now().as_millis())
    }

    async fn sleep_until(&self, deadline: Instant) {
        embassy_time::Timer::at(embassy_time::Instant::from_millis(deadline.millis())).await
    }
}

/// The core's shared server state behind a blocking mutex, as the async driver reaches it
/// ([`SharedState`]): locked for one synchronous session call at a time, never across an
/// await.
pub struct SharedServer<M: RawMutex, R>(BlockingMutex<M, RefCell<ServerShared<R, THROTTLE_ADDRS>>>);

impl<M: RawMutex, R> SharedState<R, THROTTLE_ADDRS> for SharedServer<M, R> {
    fn with<T>(&self, f: impl FnOnce(&mut ServerShared<R, THROTTLE_ADDRS>) -> T) -> T {
        // Cannot panic: the driver never calls `with` from inside `f`, and `f` does not await,
        // so no other borrow is live.
        self.0.lock(|shared| f(&mut shared.borrow_mut()))
    }
}

/// One session's handle on the shared ledger: each request locks the ledger's async mutex
/// for as long as the ledger takes to answer (an async ledger's flash writes included), so
/// requests from all sessions are answered one at a time, in the order they lock.
pub struct SharedLedger<'a, M: RawMutex, L>(&'a Mutex<M, L>);

impl<M: RawMutex, L: AsyncLedger> AsyncLedger for SharedLedger<'_, M, L> {
    async fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
        let mut ledger = self.0.lock().await;
        AsyncLedger::execute(&mut *ledger, request, now).await
    }
}

/// Something the board may want to log; passed to the callbacks of [`Server::serve`] and
/// [`Server::refuse`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'e> {
    /// A client connected to session `slot`.
    Accepted {
        /// The session task's slot.
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
    /// The connection in `slot` ended (the session closed, the peer hung up, or TCP failed).
    Closed {
        /// The slot.
        slot: usize,
    },
}

/// Counters kept by a [`Server`] since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections given a session.
    pub accepted: u32,
    /// Connections refused with `server_busy`.
    pub refused: u32,
    /// Sessions open now.
    pub open: u32,
    /// The most sessions open at once.
    pub peak_sessions: u32,
    /// Connections reset because they did not finish closing within [`CLOSE_TIMEOUT`].
    pub aborted: u32,
}

/// What every session task shares: see the [crate documentation](crate).
///
/// `M` is the mutexes' raw mutex: `NoopRawMutex` when every task runs on one executor (the
/// usual embassy set-up, and the cheapest), `CriticalSectionRawMutex` when tasks run on
/// several executors or interrupt priorities. `L` is the ledger (any [`AsyncLedger`], so any
/// synchronous `Ledger` too), `R` the nonce RNG (a cryptographic RNG seeded from the board's
/// TRNG).
pub struct Server<M: RawMutex, L, R> {
    shared: SharedServer<M, R>,
    ledger: Mutex<M, L>,
    port: u16,
    stats: BlockingMutex<M, Cell<ServerStats>>,
}

impl<M: RawMutex, L: AsyncLedger, R: RngCore + CryptoRng> Server<M, L, R> {
    /// A server with the core's `config`, `rng` for nonces, a `secret` that must stay the
    /// same across restarts ([`ServerShared::new`]), `ledger`, listening on `port` (not 0).
    pub fn new(config: ServerConfig, rng: R, secret: [u8; 32], ledger: L, port: u16) -> Self {
        Server {
            shared: SharedServer(BlockingMutex::new(RefCell::new(ServerShared::new(
                config, rng, secret,
            )))),
            ledger: Mutex::new(ledger),
            port,
            stats: BlockingMutex::new(Cell::new(ServerStats::default())),
        }
    }

    /// The ledger, to provision users or read balances between sessions' requests.
    pub fn ledger(&self) -> &Mutex<M, L> {
        &self.ledger
    }

    /// Counters since [`new`](Self::new).
    pub fn stats(&self) -> ServerStats {
        self.stats.lock(Cell::get)
    }

    fn count(&self, f: impl FnOnce(&mut ServerStats)) {
        self.stats.lock(|cell| {
            let mut stats = cell.get();
            f(&mut stats);
            cell.set(stats);
        })
    }

    /// Serves clients on `socket`, one connection at a time, forever: the body of session
    /// task `slot`. Each connection gets a fresh [`ServerSession`] run by the core's async
    /// driver until it closes; then the socket is closed (or reset after [`CLOSE_TIMEOUT`])
    /// and listens again.
    pub async fn serve(
        &self,
        slot: usize,
        socket: &mut TcpSocket<'_>,
        mut on_event: impl FnMut(Event<'_>),
    ) -> ! {
        loop {
            if socket.accept(self.port).await.is_err() {
                // Still finishing the last connection: reset it and listen again.
                self.recycle(socket).await;
                continue;
            }
            let peer = peer_of(socket);
            self.count(|s| {
                s.accepted += 1;
                s.open += 1;
                s.peak_sessions = s.peak_sessions.max(s.open);
            });
            on_event(Event::Accepted { slot, peer });
            serve_one(
                socket,
                peer,
                &self.shared,
                &mut SharedLedger(&self.ledger),
                |event| {
                    on_event(Event::Session {
                        slot,
                        event: &event,
                    })
                },
            )
            .await;
            self.finish(socket).await;
            self.count(|s| s.open -= 1);
            on_event(Event::Closed { slot });
        }
    }

    /// Turns away clients on `socket` forever: each gets the core's `server_busy` error line
    /// and a close. The body of the refusal task; its socket must be created after the
    /// session sockets.
    pub async fn refuse(
        &self,
        socket: &mut TcpSocket<'_>,
        mut on_event: impl FnMut(Event<'_>),
    ) -> ! {
        loop {
            if socket.accept(self.port).await.is_err() {
                self.recycle(socket).await;
                continue;
            }
            let peer = peer_of(socket);
            refuse_one(socket, peer).await;
            self.count(|s| s.refused += 1);
            on_event(Event::Refused { peer });
            self.finish_refusal(socket).await;
        }
    }

    /// Closes a refusal: once the client has acknowledged the error line and our FIN it has
    /// all it will get, so the socket is freed for the next client without waiting for the
    /// client's own close (which would hold the one refusal socket up to [`CLOSE_TIMEOUT`]).
    /// The peer is dropped without a reset, which could make its stack discard the line it
    /// has not read yet; its next segment meets the listening socket and is reset then.
    async fn finish_refusal(&self, socket: &mut TcpSocket<'_>) {
        socket.close();
        // Waits until the line and the FIN are acknowledged; reset after CLOSE_TIMEOUT.
        if with_timeout(CLOSE_TIMEOUT, socket.flush()).await.is_err() {
            self.recycle(socket).await;
            return;
        }
        // `accept` listens again at once, before the stack could send the reset.
        socket.abort();
    }

    /// Closes `socket` gracefully: our FIN after the last output, what the peer still sends
    /// discarded until it closes too; reset after [`CLOSE_TIMEOUT`].
    async fn finish(&self, socket: &mut TcpSocket<'_>) {
        socket.close();
        let graceful = with_timeout(CLOSE_TIMEOUT, async {
            let mut sink = [0u8; 64];
            while let Ok(n) = socket.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            let _ = socket.flush().await;
        })
        .await;
        if graceful.is_err() {
            self.recycle(socket).await;
        }
    }

    /// Resets `socket` so that it can listen again.
    async fn recycle(&self, socket: &mut TcpSocket<'_>) {
        socket.abort();
        // Waits for the reset to leave (listening forgets the peer and the reset with it);
        // bounded by RESET_WAIT, as the reset may never leave.
        let _ = with_timeout(RESET_WAIT, socket.flush()).await;
        self.count(|s| s.aborted += 1);
    }
}

/// Runs one connection's session (about 1.9 KiB, in the task's future) with the core's async
/// driver.
async fn serve_one<M: RawMutex, L: AsyncLedger, R: RngCore + CryptoRng>(
    socket: &mut TcpSocket<'_>,
    peer: PeerAddr,
    shared: &SharedServer<M, R>,
    ledger: &mut SharedLedger<'_, M, L>,
    on_event: impl FnMut(ServerEvent),
) {
    let timer = EmbassyTimer;
    let mut session: ServerSession = ServerSession::new(peer, timer.now());
    // A stream error (a reset) ends the session like a hang-up: the socket is recycled.
    let _ = asynch::serve(socket, &mut session, shared, ledger, &timer, on_event).await;
}

/// Writes the core's `server_busy` refusal to `socket`.
async fn refuse_one(socket: &mut TcpSocket<'_>, peer: PeerAddr) {
    let mut refusal = RefusalSession::new(peer, EmbassyTimer.now());
    refusal.close_with(ErrorCode::ServerBusy);
    // The line (under 100 bytes) fits the empty REFUSAL_TX buffer: this does not wait for
    // the client.
    let _ = with_timeout(CLOSE_TIMEOUT, socket.write_all(refusal.poll_transmit())).await;
}

fn peer_of(socket: &TcpSocket<'_>) -> PeerAddr {
    match socket.remote_endpoint().map(|e| e.addr) {
        Some(IpAddress::Ipv4(a)) => PeerAddr::ipv4(a.octets()),
        #[allow(unreachable_patterns)] // only with embassy-net's proto-ipv6
        _ => PeerAddr([0; 16]),
    }
}

/// Receive and transmit buffers of `SESSIONS` session sockets and the refusal socket.
///
/// All zero, so a `static` of it costs no flash. Size: `SESSIONS * (RX + TX) + REFUSAL_RX +
/// REFUSAL_TX` bytes. `RX` is also the TCP window offered (at least one request line, 512
/// bytes); `TX` should hold at least one response (`MAX_RESPONSE`, 576 bytes).
pub struct SocketBuffers<const SESSIONS: usize, const RX: usize, const TX: usize> {
    rx: [[u8; RX]; SESSIONS],
    tx: [[u8; TX]; SESSIONS],
    refusal_rx: [u8; REFUSAL_RX],
    refusal_tx: [u8; REFUSAL_TX],
}

impl<const SESSIONS: usize, const RX: usize, const TX: usize> Default
    for SocketBuffers<SESSIONS, RX, TX>
{
    fn default() -> Self {
        Self::new()
    }
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

    /// The `SESSIONS` session sockets, then the refusal socket, created in that order on
    /// `stack` (the order makes the refusal socket the last to get a client). The stack's
    /// `StackResources` must have room for `SESSIONS + 1` sockets besides its own.
    pub fn sockets<'a>(
        &'a mut self,
        stack: Stack<'a>,
    ) -> ([TcpSocket<'a>; SESSIONS], TcpSocket<'a>) {
        const { assert!(SESSIONS > 0, "a server needs at least one session") };
        let mut rx = self.rx.iter_mut();
        let mut tx = self.tx.iter_mut();
        let sessions = core::array::from_fn(|_| {
            // Cannot panic: both iterators have exactly SESSIONS items.
            let (rx, tx) = (rx.next().unwrap(), tx.next().unwrap());
            TcpSocket::new(stack, rx, tx)
        });
        let refusal = TcpSocket::new(stack, &mut self.refusal_rx, &mut self.refusal_tx);
        (sessions, refusal)
    }
}
