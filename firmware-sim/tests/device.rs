//! The device's connection handling with raw TCP clients on the simulated link (no client
//! session): deadlines, hang-ups, garbage, and reuse of its fixed sessions.

use std::mem::MaybeUninit;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use smoltcp::iface::SocketStorage;
use smoltcp::socket::tcp;
use txsock_core::lockout::PeerAddr;
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::client::{ClientNet, ClientNetConfig, SimClock, TcpBuffers};
use txsock_firmware_sim::device::{
    DeviceConfig, DeviceEvent, DeviceParts, CLOSE_TIMEOUT, RESET_WAIT,
};
use txsock_firmware_sim::link::{LinkConfig, Side};
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

const SEED: u64 = 99;

/// Raw client connections of a bench: more than the device has sessions.
const CONNS: usize = SESSIONS + 2;

/// A device and raw client connections on a clean link.
struct Bench<'a> {
    device: &'a mut BoardDevice<'a>,
    net: ClientNet<'a, CONNS>,
    link: &'a mut BoardLink,
    clock: SimClock,
}

impl Bench<'_> {
    /// Runs the simulation until `done` holds, for at most `limit` of simulated time.
    fn run_until(
        &mut self,
        limit: Duration,
        done: impl FnMut(&mut BoardDevice<'_>, &mut ClientNet<'_, CONNS>) -> bool,
    ) {
        self.run_with(limit, |_| {}, done);
    }

    /// [`run_until`](Self::run_until), handing the device's events to `on_event`.
    fn run_with(
        &mut self,
        limit: Duration,
        mut on_event: impl FnMut(&DeviceEvent<'_>),
        mut done: impl FnMut(&mut BoardDevice<'_>, &mut ClientNet<'_, CONNS>) -> bool,
    ) {
        let start = self.clock.now();
        loop {
            let now = self.clock.now();
            self.device
                .poll_with(now, &mut self.link.end(Side::A), |e| on_event(&e));
            self.net.poll(now, &mut self.link.end(Side::B));
            if done(self.device, &mut self.net) {
                return;
            }
            assert!(
                now.saturating_since(start) <= limit,
                "not done after {} ms",
                limit.millis()
            );
            self.advance(start + limit);
        }
    }

    /// Runs the simulation for `span` of simulated time, calling `each` after every step.
    fn run_for(
        &mut self,
        span: Duration,
        mut each: impl FnMut(&mut BoardDevice<'_>, &mut ClientNet<'_, CONNS>),
    ) {
        let end = self.clock.now() + span;
        while self.clock.now() < end {
            let now = self.clock.now();
            self.device.poll(now, &mut self.link.end(Side::A));
            self.net.poll(now, &mut self.link.end(Side::B));
            each(self.device, &mut self.net);
            self.advance(end);
        }
    }

    /// Moves the clock to the next thing anyone waits for, at the latest `limit`.
    fn advance(&mut self, limit: Instant) {
        let now = self.clock.now();
        let next = [
            self.device.poll_at(now),
            self.net.poll_at(now),
            self.link
                .next_delivery()
                .map(|t| Instant::from_millis(t.total_millis() as u64)),
            Some(limit),
        ];
        self.clock.advance(next);
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }
}

/// How long (real time) one test may take: a device poll that never returns (a drive loop
/// that does not end) fails the test instead of hanging the suite. A test takes well under
/// a second on an idle machine.
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs `test` on a fresh bench, in a thread of its own, failing if it does not finish
/// within [`WATCHDOG`].
fn with_bench(test: impl FnOnce(&mut Bench<'_>) + Send + 'static) {
    with_bench_of(device_config(SEED), test);
}

/// [`with_bench`] with a device configured by `config`.
fn with_bench_of(config: DeviceConfig, test: impl FnOnce(&mut Bench<'_>) + Send + 'static) {
    let (finished, wait) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        on_bench(&config, test);
        let _ = finished.send(());
    });
    match wait.recv_timeout(WATCHDOG) {
        // Finished, or panicked (the sender dropped): join reports which.
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
            "not finished after {} s: a device poll does not return",
            WATCHDOG.as_secs()
        ),
    }
}

fn on_bench(config: &DeviceConfig, test: impl FnOnce(&mut Bench<'_>)) {
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
        config,
        &mut link.end(Side::A),
        Instant::ZERO,
    );
    let mut client_sockets = [SocketStorage::EMPTY; CONNS];
    let mut client_buffers = Box::new(TcpBuffers::<CONNS, 1024, 1024>::new());
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

/// The client's address as the device's events report it.
fn client_peer() -> PeerAddr {
    PeerAddr::ipv4(CLIENT_ADDRESS)
}

#[test]
fn clients_beyond_the_sessions_are_refused_by_address_and_counted() {
    with_bench(|b| {
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for conn in 0..SESSIONS {
            b.net.connect(conn).unwrap();
        }
        b.run_with(
            Duration::from_secs(5),
            |e| {
                if let DeviceEvent::Accepted { slot, peer } = e {
                    accepted.push((*slot, *peer));
                }
            },
            |d, _| d.open_sessions() == SESSIONS,
        );
        accepted.sort_by_key(|(slot, _)| *slot);
        let slots: Vec<usize> = accepted.iter().map(|(slot, _)| *slot).collect();
        assert_eq!(slots, (0..SESSIONS).collect::<Vec<_>>());
        assert!(accepted.iter().all(|(_, peer)| *peer == client_peer()));
        // One more: refused with `server_busy`, the sessions untouched.
        b.net.connect(SESSIONS).unwrap();
        let mut got = String::new();
        b.run_with(
            Duration::from_secs(5),
            |e| {
                if let DeviceEvent::Refused { peer } = e {
                    refused.push(*peer);
                }
            },
            |_, net| {
                read_all(net.socket(SESSIONS), &mut got);
                got.ends_with('\n')
            },
        );
        assert!(got.contains("\"code\":\"server_busy\""), "{got}");
        assert_eq!(refused, [client_peer()]);
        let stats = *b.device.stats();
        assert_eq!(
            (stats.accepted, stats.refused, stats.peak_sessions),
            (SESSIONS as u32, 1, SESSIONS as u32)
        );
        assert_eq!(b.device.open_sessions(), SESSIONS);
        // Once the refused client hangs up, the refusal socket listens again: a second extra
        // client is refused too.
        b.net.socket(SESSIONS).close();
        b.run_until(Duration::from_secs(5), |_, net| {
            !net.socket(SESSIONS).is_open()
        });
        b.net.connect(SESSIONS + 1).unwrap();
        let mut again = String::new();
        b.run_until(Duration::from_secs(5), |_, net| {
            read_all(net.socket(SESSIONS + 1), &mut again);
            again.ends_with('\n')
        });
        assert!(again.contains("server_busy"), "{again}");
        assert_eq!(b.device.stats().refused, 2);
        assert_eq!(b.device.stats().peak_sessions, SESSIONS as u32);
    });
}

#[test]
fn a_failed_login_is_counted_and_reported_by_the_device() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.run_until(Duration::from_secs(5), |d, net| {
            d.open_sessions() == 1 && net.socket(0).may_send()
        });
        b.net
            .socket(0)
            .send_slice(
                b"{\"op\":\"login\",\"user\":\"nobody\",\"nonce\":\"fyko+d2lbbFgONRv9qkxdawL\"}\n",
            )
            .unwrap();
        let mut got = String::new();
        b.run_until(Duration::from_secs(5), |_, net| {
            read_all(net.socket(0), &mut got);
            got.contains("challenge") && got.ends_with('\n')
        });
        b.net
            .socket(0)
            .send_slice(
                b"{\"op\":\"proof\",\"proof\":\"n9F1eyj3f6eQLRfRp+hJGrg5wACkmlDSoiCS+PSGw24=\"}\n",
            )
            .unwrap();
        let mut failures = 0;
        b.run_with(
            Duration::from_secs(10),
            |e| {
                if matches!(
                    e,
                    DeviceEvent::Session {
                        slot: 0,
                        event: txsock_core::session::ServerEvent::LoginFailed { .. }
                    }
                ) {
                    failures += 1;
                }
            },
            |_, net| {
                read_all(net.socket(0), &mut got);
                got.matches('\n').count() >= 2
            },
        );
        assert_eq!(failures, 1, "{got}");
        assert!(got.contains("\"op\":\"error\""), "{got}");
        let stats = *b.device.stats();
        assert_eq!(
            (stats.failed_logins, stats.logins, stats.registered),
            (1, 0, 0)
        );
        // The login asked the ledger for credentials and recorded nothing for nobody.
        assert!(stats.ledger_requests >= 1, "{stats:?}");
    });
}

#[test]
fn an_idle_device_reports_no_change_and_a_connection_does() {
    with_bench(|b| {
        let now = b.now();
        // A new interface may announce itself once; then nothing happens.
        b.device.poll(now, &mut b.link.end(Side::A));
        assert!(
            !b.device.poll(now, &mut b.link.end(Side::A)),
            "nothing to do, nothing changed"
        );
        assert_eq!(b.device.poll_at(now), None, "no deadline while idle");
        b.net.connect(0).unwrap();
        let mut changed = false;
        b.run_until(Duration::from_secs(5), |d, _| {
            changed |= d.open_sessions() == 1;
            changed
        });
        assert!(changed);
        // An open session has a deadline (the login timeout) within its policy.
        let at = b.device.poll_at(b.now()).expect("a session deadline");
        assert!(
            at > b.now() && at <= b.now() + Duration::from_secs(31),
            "{at:?}"
        );
    });
}

#[test]
fn a_client_that_reads_nothing_is_cut_off_after_the_close_timeout() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.run_until(Duration::from_secs(5), |d, net| {
            d.open_sessions() == 1 && net.socket(0).may_send()
        });
        // Pings whose pongs the client never reads, until both windows are shut; the login
        // deadline then ends the session, whose last words can never be delivered.
        let ping = b"{\"op\":\"ping\"}\n";
        for _ in 0..200 {
            if b.net.socket(0).send_slice(ping).unwrap_or(0) < ping.len() {
                break;
            }
        }
        b.run_until(Duration::from_secs(40), |d, _| {
            d.stats().closed_by_error > 0
        });
        assert_eq!(b.device.stats().aborted, 0);
        let started = b.now();
        b.run_until(
            Duration::from_millis(CLOSE_TIMEOUT.millis() + 120_000),
            |d, _| d.stats().aborted > 0 && d.open_sessions() == 0,
        );
        let took = b.now().saturating_since(started);
        assert!(
            took >= CLOSE_TIMEOUT && took.millis() <= CLOSE_TIMEOUT.millis() + 2_000,
            "{} ms",
            took.millis()
        );
        assert_eq!(b.device.stats().aborted, 1);
        // The slot is free again.
        b.net.socket(0).abort();
        b.net.connect(1).unwrap();
        b.run_until(Duration::from_secs(5), |d, _| d.open_sessions() == 1);
    });
}

/// A poll in which the device does something (here: a session's login deadline passes and
/// its `timeout` error goes out, with no frame arriving) says so, so that a driver knows
/// to poll again rather than sleep.
#[test]
fn a_poll_that_sends_something_reports_a_change() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.run_until(Duration::from_secs(5), |d, net| {
            d.open_sessions() == 1 && net.socket(0).may_send()
        });
        // Deliver the handshake's last frames, then stop the client: nothing more arrives.
        let mut now = b.now();
        for _ in 0..100 {
            b.device.poll(now, &mut b.link.end(Side::A));
            b.net.poll(now, &mut b.link.end(Side::B));
            match b.link.next_delivery() {
                None => break,
                Some(t) => now = now.max(Instant::from_millis(t.total_millis() as u64)),
            }
        }
        assert!(b.link.next_delivery().is_none(), "the link did not settle");
        // The device's own timers up to the session's deadline (30 s after the connection).
        let deadline = loop {
            let at = b.device.poll_at(now).expect("a session deadline");
            if at.saturating_since(now) >= Duration::from_secs(20) {
                break at;
            }
            now = at.max(now);
            b.device.poll(now, &mut b.link.end(Side::A));
            if b.link.next_delivery().is_some() {
                b.net.poll(now, &mut b.link.end(Side::B));
            }
        };
        assert!(
            b.device.poll(deadline, &mut b.link.end(Side::A)),
            "the timeout was sent, so the poll changed something"
        );
        assert!(
            b.link.next_delivery().is_some(),
            "the error line is on its way"
        );
    });
}

/// A client that sends its last request and closes its side (FIN, not a reset) gets the
/// answer, and its session ends as soon as the answer is out: it is not held until a
/// deadline.
#[test]
fn a_client_that_closes_its_side_gets_its_answer_and_frees_the_session() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.run_until(Duration::from_secs(5), |d, net| {
            d.open_sessions() == 1 && net.socket(0).may_send()
        });
        b.net.socket(0).send_slice(b"{\"op\":\"ping\"}\n").unwrap();
        b.net.socket(0).close();
        let start = b.now();
        let mut got = String::new();
        b.run_until(Duration::from_secs(5), |d, net| {
            read_all(net.socket(0), &mut got);
            d.open_sessions() == 0 && got.ends_with('\n')
        });
        assert_eq!(got, "{\"op\":\"pong\"}\n");
        assert!(b.now().saturating_since(start) < Duration::from_secs(1));
        assert_eq!(b.device.stats().aborted, 0);
    });
}

/// A session that ends (here at the login deadline) while its last words are still in the
/// session, because the client reads nothing and every buffer on the way is full, is given
/// CLOSE_TIMEOUT to deliver them, no less, no more: then the connection is reset and the
/// slot serves the next client.
#[test]
fn a_session_that_cannot_deliver_its_last_words_is_reset_after_the_close_timeout() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.run_until(Duration::from_secs(5), |d, net| {
            d.open_sessions() == 1 && net.socket(0).may_send()
        });
        // Pings, topped up for a while, whose pongs are never read: the client's receive
        // buffer, the device's transmit buffer and the session's output fill up, then the
        // device's receive buffer and the client's transmit buffer.
        let ping = b"{\"op\":\"ping\"}\n";
        b.run_for(Duration::from_secs(5), |_, net| {
            let socket = net.socket(0);
            while socket.send_capacity() - socket.send_queue() >= ping.len() {
                socket.send_slice(ping).unwrap();
            }
        });
        let client = b.net.socket(0);
        assert_eq!(client.recv_queue(), client.recv_capacity(), "unread pongs");
        assert!(client.send_queue() > 0, "pings the device cannot take");
        b.run_until(Duration::from_secs(40), |d, _| {
            d.stats().closed_by_error > 0
        });
        let ended = b.now();
        b.run_until(
            Duration::from_millis(CLOSE_TIMEOUT.millis() + 5_000),
            |d, _| d.open_sessions() == 0,
        );
        let took = b.now().saturating_since(ended);
        assert!(
            took >= CLOSE_TIMEOUT && took.millis() <= CLOSE_TIMEOUT.millis() + 1_000,
            "reset {} ms after the session ended",
            took.millis()
        );
        assert_eq!(b.device.stats().aborted, 1);
        // The reset reaches the client (it does not wait for its own next segment to
        // find out).
        b.run_until(Duration::from_secs(1), |_, net| {
            net.socket(0).state() == tcp::State::Closed
        });
        // The slot serves the next client.
        b.net.connect(1).unwrap();
        b.run_until(Duration::from_secs(5), |d, net| {
            d.open_sessions() == 1 && net.socket(1).may_send()
        });
        b.net.socket(1).send_slice(ping).unwrap();
        let mut pong = String::new();
        b.run_until(Duration::from_secs(5), |_, net| {
            read_all(net.socket(1), &mut pong);
            pong.ends_with('\n')
        });
        assert_eq!(pong, "{\"op\":\"pong\"}\n");
    });
}

/// Fills every session with a connected client.
fn fill_sessions(b: &mut Bench<'_>) {
    for conn in 0..SESSIONS {
        b.net.connect(conn).unwrap();
    }
    b.run_until(Duration::from_secs(5), |d, net| {
        d.open_sessions() == SESSIONS && (0..SESSIONS).all(|c| net.socket(c).may_send())
    });
}

/// Connects `conn` while every session is busy and returns what it is told.
fn refused_line(b: &mut Bench<'_>, conn: usize) -> String {
    b.net.connect(conn).unwrap();
    let mut got = String::new();
    b.run_until(Duration::from_secs(5), |_, net| {
        read_all(net.socket(conn), &mut got);
        got.ends_with('\n')
    });
    got
}

/// A refused client that keeps its side of the connection open does not keep the next
/// client beyond the sessions from being refused.
#[test]
fn a_refused_client_that_stays_connected_does_not_block_the_next_refusal() {
    with_bench(|b| {
        fill_sessions(b);
        let first = refused_line(b, SESSIONS);
        assert!(first.contains("\"code\":\"server_busy\""), "{first}");
        // The first refused client neither closes nor reads on. Once its refusal has been
        // delivered (a round trip), the next client is refused well within CLOSE_TIMEOUT.
        b.run_for(Duration::from_secs(1), |_, _| {});
        assert!(
            b.net.socket(SESSIONS).is_open(),
            "the first client is still connected"
        );
        let asked = b.now();
        let second = refused_line(b, SESSIONS + 1);
        assert!(second.contains("\"code\":\"server_busy\""), "{second}");
        assert!(b.now().saturating_since(asked) < Duration::from_secs(1));
        let stats = *b.device.stats();
        assert_eq!((stats.refused, stats.aborted), (2, 0));
        assert_eq!(b.device.open_sessions(), SESSIONS);
    });
}

/// A client beyond the sessions that resets its connection during the handshake (a
/// half-open port scan: SYN, then RST to the device's SYN-ACK) leaves the refusal socket
/// able to refuse the next one.
#[test]
fn a_half_open_connection_beyond_the_sessions_does_not_stop_refusals() {
    with_bench(|b| {
        fill_sessions(b);
        settle(b);
        // The SYN reaches the device, which answers it; then the client resets.
        b.net.connect(SESSIONS).unwrap();
        let now = b.now();
        b.net.poll(now, &mut b.link.end(Side::B));
        let now = b.link.next_delivery().map(sim_instant).expect("the SYN");
        b.device.poll(now, &mut b.link.end(Side::A));
        b.net.socket(SESSIONS).abort();
        b.run_for(Duration::from_secs(2), |_, _| {});
        assert_eq!(b.device.stats().refused, 0, "nobody was refused yet");
        let line = refused_line(b, SESSIONS + 1);
        assert!(line.contains("\"code\":\"server_busy\""), "{line}");
        assert_eq!(b.device.stats().refused, 1);
        // And again, once that client has gone.
        b.net.socket(SESSIONS + 1).abort();
        b.run_for(Duration::from_secs(1), |_, _| {});
        let again = refused_line(b, SESSIONS);
        assert!(again.contains("server_busy"), "{again}");
        assert_eq!(b.device.stats().refused, 2);
    });
}

/// Requests that arrive together (pipelined, in one segment) are all answered by the poll
/// that receives them: a driver that sleeps until `poll_at` between polls adds no wait.
#[test]
fn pipelined_requests_are_all_answered_by_the_poll_that_receives_them() {
    with_bench(|b| {
        b.net.connect(0).unwrap();
        b.run_until(Duration::from_secs(5), |d, net| {
            d.open_sessions() == 1 && net.socket(0).may_send()
        });
        // Single pings first, so that the burst below wraps around the end of the device's
        // receive ring (RX bytes): the socket hands it over in two pieces.
        let ping = b"{\"op\":\"ping\"}\n";
        for _ in 0..(RX - 50) / ping.len() {
            b.net.socket(0).send_slice(ping).unwrap();
            let mut pong = String::new();
            b.run_until(Duration::from_secs(5), |_, net| {
                read_all(net.socket(0), &mut pong);
                pong.ends_with('\n')
            });
        }
        settle(b);
        const PINGS: usize = 30;
        for _ in 0..PINGS {
            b.net.socket(0).send_slice(b"{\"op\":\"ping\"}\n").unwrap();
        }
        let mut now = b.now();
        b.net.poll(now, &mut b.link.end(Side::B));
        // One device poll, when the requests arrive.
        now = b
            .link
            .next_delivery()
            .map(sim_instant)
            .expect("the requests");
        b.device.poll(now, &mut b.link.end(Side::A));
        // Only the client runs from here on.
        while let Some(t) = b.link.next_delivery() {
            now = now.max(sim_instant(t));
            b.net.poll(now, &mut b.link.end(Side::B));
            if b.link.in_flight() == 0 {
                break;
            }
        }
        let mut got = String::new();
        read_all(b.net.socket(0), &mut got);
        assert_eq!(got, "{\"op\":\"pong\"}\n".repeat(PINGS));
    });
}

fn sim_instant(t: smoltcp::time::Instant) -> Instant {
    Instant::from_millis(t.total_millis() as u64)
}

/// Polls both sides until no frame is in flight.
fn settle(b: &mut Bench<'_>) {
    let mut now = b.now();
    for _ in 0..100 {
        b.device.poll(now, &mut b.link.end(Side::A));
        b.net.poll(now, &mut b.link.end(Side::B));
        match b.link.next_delivery() {
            None => return,
            Some(t) => now = now.max(sim_instant(t)),
        }
    }
    panic!("the link did not settle");
}

/// A refused client that goes silent before acknowledging its refusal (its host gone)
/// holds the refusal socket for CLOSE_TIMEOUT at most: then the device drops that
/// connection and refuses the next client.
#[test]
fn a_refused_client_that_goes_silent_holds_the_refusal_socket_for_the_close_timeout_at_most() {
    with_bench(|b| {
        fill_sessions(b);
        settle(b);
        b.net.connect(SESSIONS).unwrap();
        b.run_until(Duration::from_secs(5), |d, _| d.stats().refused == 1);
        // From here on only the device runs, on its own deadlines: its refusal and FIN reach
        // nobody.
        let free_by = b.now() + Duration::from_millis(CLOSE_TIMEOUT.millis() + 500);
        while b.clock.now() < free_by {
            let now = b.clock.now();
            b.device.poll(now, &mut b.link.end(Side::A));
            let next = b.device.poll_at(now);
            b.clock.advance([next, Some(free_by)]);
        }
        b.net.socket(SESSIONS).abort();
        let line = refused_line(b, SESSIONS + 1);
        assert!(line.contains("\"code\":\"server_busy\""), "{line}");
        assert_eq!(b.device.stats().refused, 2);
    });
}

/// A connection reset while its client's link-layer address is unknown cannot send its
/// reset (here the client's host went silent more than a minute before, so the device's
/// neighbour entry for it has expired and nobody answers its requests for it): the slot
/// waits [`RESET_WAIT`] for the reset to leave, no longer, and then serves the next client,
/// from another host; while it waits with nothing to do, its polls report no change. (The
/// login deadline is raised to 100 s so that the silent host's sessions end after the entry
/// has expired.)
#[test]
fn a_reset_that_cannot_leave_holds_its_slot_for_the_reset_wait_at_most() {
    let mut config = device_config(SEED);
    config.server.login_deadline = Duration::from_secs(100);
    with_bench_of(config, |b| {
        // The first host fills every session, then goes silent for good.
        fill_sessions(b);
        settle(b);
        // A second host, on the same link, the only one listening from now on.
        let mut sockets = [SocketStorage::EMPTY; 2];
        let mut buffers = Box::new(TcpBuffers::<2, 1024, 1024>::new());
        let now = b.now();
        let mut other = ClientNet::new(
            &mut sockets,
            &mut buffers,
            &ClientNetConfig {
                mac: [0x02, 0, 0, 0, 0, 0x03],
                address: [192, 0, 2, 3],
                ..client_config(SEED)
            },
            &mut b.link.end(Side::B),
            now,
        );
        // One poll of each side, then the clock to the next thing anyone waits for; returns
        // whether the device's poll reported a change, and whether it refused a client.
        let step = |b: &mut Bench<'_>, other: &mut ClientNet<'_, 2>, limit: Instant| {
            let now = b.clock.now();
            let mut refused = false;
            let changed = b.device.poll_with(now, &mut b.link.end(Side::A), |e| {
                refused |= matches!(e, DeviceEvent::Refused { .. });
            });
            other.poll(now, &mut b.link.end(Side::B));
            // A device that has just been polled never asks to be polled again at the same
            // instant (it would be polled in a busy loop, as when a reset's deadline in the
            // past kept a slot out of service).
            let device_at = b.device.poll_at(now);
            assert!(
                device_at.is_none_or(|at| at > now),
                "polled at {} ms, asks again for {device_at:?}",
                now.millis()
            );
            let next = [
                device_at,
                other.poll_at(now),
                b.link.next_delivery().map(sim_instant),
                Some(limit),
            ];
            b.clock.advance(next);
            (changed, refused)
        };
        // The sessions end at their login deadline and are reset CLOSE_TIMEOUT later.
        let limit = b.now() + Duration::from_secs(120);
        while b.device.stats().aborted < SESSIONS as u32 {
            assert!(b.now() < limit, "the silent host's sessions were not reset");
            step(b, &mut other, limit);
        }
        let reset = b.now();
        assert_eq!(b.device.open_sessions(), 0);
        // While the slots wait, with nothing arriving, the device reports no change (a
        // driver sleeps until `poll_at` rather than polling again at once, for the whole
        // wait). Half-way through, every slot still waits for its reset: the other host is
        // refused, and the poll that refuses it reports a change.
        let half = reset + Duration::from_millis(RESET_WAIT.millis() / 2);
        while b.now() < half {
            let at = b.now();
            let (changed, _) = step(b, &mut other, half);
            assert!(!changed, "nothing happened at {} ms", at.millis());
        }
        other.connect(0).unwrap();
        let mut got = String::new();
        let mut refusals = 0;
        let limit = b.now() + Duration::from_millis(RESET_WAIT.millis() / 4);
        while !got.ends_with('\n') {
            assert!(b.now() < limit, "not answered: {got:?}");
            let (changed, refused) = step(b, &mut other, limit);
            if refused {
                refusals += 1;
                assert!(
                    changed,
                    "the poll that refused a client says it changed nothing"
                );
            }
            read_all(other.socket(0), &mut got);
        }
        assert!(got.contains("\"code\":\"server_busy\""), "{got}");
        assert_eq!(refusals, 1);
        // Just after the wait, the slots listen again without their resets: the other host
        // gets a session.
        let after = reset + Duration::from_millis(RESET_WAIT.millis() + 100);
        while b.now() < after {
            step(b, &mut other, after);
        }
        other.connect(1).unwrap();
        let limit = b.now() + Duration::from_secs(1);
        while b.device.open_sessions() == 0 || !other.socket(1).may_send() {
            assert!(b.now() < limit, "the freed slots serve no new client");
            step(b, &mut other, limit);
        }
        assert_eq!(b.device.stats().refused, 1);
        assert_eq!(b.device.open_sessions(), 1);
    });
}
