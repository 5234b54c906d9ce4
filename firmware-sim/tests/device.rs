//! The device's connection handling with raw TCP clients on the simulated link (no client
//! session): deadlines, hang-ups, garbage, and reuse of its fixed sessions.

use std::mem::MaybeUninit;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use smoltcp::iface::SocketStorage;
use smoltcp::socket::tcp;
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::client::{ClientNet, SimClock, TcpBuffers};
use txsock_firmware_sim::device::DeviceParts;
use txsock_firmware_sim::link::{LinkConfig, Side};
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

const SEED: u64 = 99;

/// A device and two raw client connections on a clean link.
struct Bench<'a> {
    device: &'a mut BoardDevice<'a>,
    net: ClientNet<'a, 2>,
    link: &'a mut BoardLink,
    clock: SimClock,
}

impl Bench<'_> {
    /// Runs the simulation until `done` holds, for at most `limit` of simulated time.
    fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut BoardDevice<'_>, &mut ClientNet<'_, 2>) -> bool,
    ) {
        let start = self.clock.now();
        loop {
            let now = self.clock.now();
            self.device.poll(now, &mut self.link.end(Side::A));
            self.net.poll(now, &mut self.link.end(Side::B));
            if done(self.device, &mut self.net) {
                return;
            }
            assert!(
                now.saturating_since(start) <= limit,
                "not done after {} ms",
                limit.millis()
            );
            let next = [
                self.device.poll_at(now),
                self.net.poll_at(now),
                self.link
                    .next_delivery()
                    .map(|t| Instant::from_millis(t.total_millis() as u64)),
                Some(start + limit),
            ];
            self.clock.advance(next);
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }
}

fn with_bench(test: impl FnOnce(&mut Bench<'_>)) {
    let mut link = Box::new(BoardLink::new(LinkConfig {
        mtu: MTU,
        ..LinkConfig::default()
    }));
    let mut ledger = Box::new(BoardLedger::new(OPENING));
    let mut buffers = Box::new(BoardBuffers::new());
    let mut sockets = [SocketStorage::EMPTY; SOCKETS];
    let mut slot = Box::new(MaybeUninit::<BoardDevice<'_>>::uninit());
    let device = BoardDevice::init(
        &mut *slot,
        DeviceParts {
            sockets: &mut sockets,
            buffers: &mut buffers,
            ledger: &mut ledger,
        },
        ChaCha20Rng::seed_from_u64(SEED),
        &device_config(SEED),
        &mut link.end(Side::A),
        Instant::ZERO,
    );
    let mut client_sockets = [SocketStorage::EMPTY; 2];
    let mut client_buffers = Box::new(TcpBuffers::<2, 1024, 1024>::new());
    let net = ClientNet::new(
        &mut client_sockets,
        &mut client_buffers,
        &client_config(SEED),
        &mut link.end(Side::B),
        Instant::ZERO,
    );
    let mut bench = Bench {
        device,
        net,
        link: &mut link,
        clock: SimClock::new(Instant::ZERO),
    };
    test(&mut bench);
}

/// Everything the socket has received so far, as text.
fn read_all(socket: &mut tcp::Socket<'_>, into: &mut String) {
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv_slice(&mut buf) {
        if n == 0 {
            break;
        }
        into.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn a_silent_client_is_closed_at_the_login_deadline_and_its_session_reused() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.run_until(Duration::from_secs(5), |d, _| d.open_sessions() == 1);
        let opened = b.now();
        let mut got = String::new();
        b.run_until(Duration::from_secs(60), |d, net| {
            read_all(net.socket(0), &mut got);
            d.open_sessions() == 0 && got.ends_with('\n')
        });
        let waited = b.now().saturating_since(opened);
        assert!(got.contains("\"code\":\"timeout\""), "{got}");
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(32),
            "closed after {} ms",
            waited.millis()
        );
        // The session is free again.
        b.net.socket(0).abort();
        b.net.connect(1).unwrap();
        b.run_until(Duration::from_secs(5), |d, _| d.open_sessions() == 1);
        assert_eq!(b.device.stats().accepted, 2);
    });
}

#[test]
fn a_client_that_hangs_up_frees_its_session_at_once() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.run_until(Duration::from_secs(5), |d, _| d.open_sessions() == 1);
        b.net.socket(0).abort();
        let start = b.now();
        b.run_until(Duration::from_secs(5), |d, _| d.open_sessions() == 0);
        assert!(b.now().saturating_since(start) < Duration::from_secs(1));
    });
}

#[test]
fn garbage_closes_that_session_only() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.net.connect(1).unwrap();
        b.run_until(Duration::from_secs(5), |d, net| {
            d.open_sessions() == 2 && net.socket(0).may_send() && net.socket(1).may_send()
        });
        for _ in 0..12 {
            b.net
                .socket(0)
                .send_slice(b"{\"op\":\"nonsense\"}\n")
                .unwrap();
        }
        let mut got = String::new();
        b.run_until(Duration::from_secs(10), |d, net| {
            read_all(net.socket(0), &mut got);
            d.open_sessions() == 1 && got.contains("too_many_bad_frames")
        });
        assert!(got.contains("too_many_bad_frames"), "{got}");
        assert_eq!(b.device.stats().closed_by_error, 1);
        // The other connection is untouched and answers.
        b.net.socket(1).send_slice(b"{\"op\":\"ping\"}\n").unwrap();
        let mut pong = String::new();
        b.run_until(Duration::from_secs(5), |_, net| {
            read_all(net.socket(1), &mut pong);
            pong.contains('\n')
        });
        assert_eq!(pong, "{\"op\":\"pong\"}\n");
    });
}
