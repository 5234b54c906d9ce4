//! The simulated clients' side of the network: core [`ClientSession`]s on their own smoltcp
//! interface, and a simulated clock.
//!
//! A [`ClientNet`] is an interface with `CONNS` TCP sockets, each of which a script connects
//! to the device and drives with [`pump`]. Nothing here speaks the protocol: the sessions do.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy;
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use txsock_core::session::ClientSession;
use txsock_core::Instant;

/// TCP keep-alive interval of client connections, in seconds.
pub const KEEP_ALIVE_SECS: u64 = 30;

/// First local port a [`ClientNet`] connects from; each connection takes the next one.
pub const FIRST_LOCAL_PORT: u16 = 49152;

/// Receive and transmit buffers of `N` client sockets. All zero, so a `static` costs no
/// flash.
pub struct TcpBuffers<const N: usize, const RX: usize, const TX: usize> {
    rx: [[u8; RX]; N],
    tx: [[u8; TX]; N],
}

impl<const N: usize, const RX: usize, const TX: usize> TcpBuffers<N, RX, TX> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        TcpBuffers {
            rx: [[0; RX]; N],
            tx: [[0; TX]; N],
        }
    }
}

impl<const N: usize, const RX: usize, const TX: usize> Default for TcpBuffers<N, RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// The client side's network identity and the device it talks to.
#[derive(Debug, Clone)]
pub struct ClientNetConfig {
    /// Ethernet address (unicast).
    pub mac: [u8; 6],
    /// IPv4 address.
    pub address: [u8; 4],
    /// Prefix length.
    pub prefix_len: u8,
    /// The device's address.
    pub server: [u8; 4],
    /// The device's port.
    pub port: u16,
    /// smoltcp's random seed.
    pub net_seed: u64,
}

/// A smoltcp interface with `CONNS` client sockets.
pub struct ClientNet<'a, const CONNS: usize> {
    iface: Interface,
    sockets: SocketSet<'a>,
    handles: [SocketHandle; CONNS],
    server: (IpAddress, u16),
    next_port: u16,
}

fn smol(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(i64::try_from(now.millis()).unwrap_or(i64::MAX))
}

impl<'a, const CONNS: usize> ClientNet<'a, CONNS> {
    /// An interface on `phy` with its sockets in `sockets` and `buffers`, all closed.
    /// Panics if `config.mac` is not unicast or `phy` is not an Ethernet device.
    pub fn new<const RX: usize, const TX: usize>(
        sockets: &'a mut [SocketStorage<'a>; CONNS],
        buffers: &'a mut TcpBuffers<CONNS, RX, TX>,
        config: &ClientNetConfig,
        phy: &mut (impl phy::Device + ?Sized),
        now: Instant,
    ) -> Self {
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        iface_config.random_seed = config.net_seed;
        let mut iface = Interface::new(iface_config, phy, smol(now));
        let [a, b, c, d] = config.address;
        iface.update_ip_addrs(|addrs| {
            // A fresh interface has room for one address.
            let _ = addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), config.prefix_len));
        });
        let mut set = SocketSet::new(&mut sockets[..]);
        let mut handles = [SocketHandle::default(); CONNS];
        let TcpBuffers { rx, tx } = buffers;
        for ((handle, rx), tx) in handles.iter_mut().zip(rx.iter_mut()).zip(tx.iter_mut()) {
            *handle = set.add(tcp::Socket::new(
                tcp::SocketBuffer::new(&mut rx[..]),
                tcp::SocketBuffer::new(&mut tx[..]),
            ));
        }
        let [a, b, c, d] = config.server;
        ClientNet {
            iface,
            sockets: set,
            handles,
            server: (IpAddress::v4(a, b, c, d), config.port),
            next_port: FIRST_LOCAL_PORT,
        }
    }

    /// Moves frames through the interface at `now`.
    pub fn poll(&mut self, now: Instant, phy: &mut (impl phy::Device + ?Sized)) {
        self.iface.poll(smol(now), phy, &mut self.sockets);
    }

    /// When [`poll`](Self::poll) must run next at the latest, if ever.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.iface
            .poll_at(smol(now), &self.sockets)
            .map(|t| Instant::from_millis(u64::try_from(t.total_millis()).unwrap_or(0)))
    }

    /// Connection `conn`'s socket.
    pub fn socket(&mut self, conn: usize) -> &mut tcp::Socket<'a> {
        self.sockets.get_mut::<tcp::Socket<'a>>(self.handles[conn])
    }

    /// Opens connection `conn` to the device from a fresh local port (a port in TIME-WAIT
    /// on the device would be refused). Resets whatever the socket was doing.
    pub fn connect(&mut self, conn: usize) -> Result<(), tcp::ConnectError> {
        let port = self.next_port;
        self.next_port = if port == u16::MAX {
            FIRST_LOCAL_PORT
        } else {
            port + 1
        };
        let socket = self.sockets.get_mut::<tcp::Socket<'a>>(self.handles[conn]);
        socket.abort();
        // A client waiting for answers has nothing to send; without keep-alives it would never
        // notice that the device dropped the connection while the link was down.
        socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(KEEP_ALIVE_SECS)));
        socket.connect(self.iface.context(), self.server, port)
    }
}

/// Moves bytes between `session` and `socket` until neither can take more: the session's
/// output into the socket, the socket's input into the session (which stops taking input
/// while its event queue is full, so poll events between calls). Returns whether anything
/// moved.
pub fn pump<const F: usize, const N: usize, const O: usize>(
    session: &mut ClientSession<F, N, O>,
    socket: &mut tcp::Socket<'_>,
) -> bool {
    let mut any = false;
    loop {
        let mut moved = false;
        let out = session.poll_transmit();
        if !out.is_empty() && socket.may_send() {
            if let Ok(n) = socket.send_slice(out) {
                session.advance_transmit(n);
                moved |= n > 0;
            }
        }
        if socket.can_recv() {
            let used = socket.recv(|input| {
                let n = session.handle_input(input);
                (n, n)
            });
            moved |= matches!(used, Ok(n) if n > 0);
        }
        if !moved {
            return any;
        }
        any = true;
    }
}

/// A simulated clock: jumps to the earliest deadline of whoever is waiting.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    now: Instant,
    /// Consecutive steps without time moving.
    stuck: u32,
}

/// Steps at the same instant before [`SimClock`] moves time on by a millisecond anyway (a
/// deadline that keeps saying "now" without anything changing).
const MAX_STEPS_AT_ONE_INSTANT: u32 = 64;

impl SimClock {
    /// A clock at `start`.
    pub const fn new(start: Instant) -> Self {
        SimClock {
            now: start,
            stuck: 0,
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves to the earliest of `deadlines` (never backwards). Returns `false` if there is
    /// none: nothing will ever happen again.
    pub fn advance(&mut self, deadlines: impl IntoIterator<Item = Option<Instant>>) -> bool {
        let Some(next) = deadlines.into_iter().flatten().min() else {
            return false;
        };
        if next > self.now {
            self.now = next;
            self.stuck = 0;
        } else {
            self.stuck += 1;
            if self.stuck > MAX_STEPS_AT_ONE_INSTANT {
                self.now = self.now + txsock_core::Duration::from_millis(1);
                self.stuck = 0;
            }
        }
        true
    }
}

/// A deterministic, seedable RNG for the *simulated client's* SCRAM nonces and salts. The
/// client is test equipment; the device's nonces come from its own RNG.
pub type ClientRng = rand_chacha::ChaCha8Rng;
