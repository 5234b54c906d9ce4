//! The server session's life outside the login and money rules: its deadlines, how it
//! closes, the events it keeps, when it takes input, how it hands requests to the ledger and
//! takes the answers, and its pipeline stores.
//!
//! These pin what cargo-mutants found unpinned by the core's fast tests (issue 22); each
//! asserts what a driver relies on, not how the session does it. The requests are written
//! by hand (no PBKDF2 login where none is needed) so the file runs in well under a second.

use heapless::Deque;
use txsock_core::ledger::MemLedger;
use txsock_core::lockout::PeerAddr;
use txsock_core::selftest::{Pair, TestRng, TEST_ITERATIONS};
use txsock_core::session::server::{
    NoPipeline, PipelineQueue, PipelinedRequest, ServerConfig, ServerEvent, ServerShared,
};
use txsock_core::session::{ClientEvent, ServerSession};
use txsock_core::{Amount, Duration, ErrorCode, Instant, LedgerReply, LedgerRequest};

const PEER: PeerAddr = PeerAddr::ipv4([198, 51, 100, 4]);

fn shared(config: ServerConfig) -> ServerShared<TestRng, 4> {
    ServerShared::new(config, TestRng::new(3), [5; 32])
}

fn config() -> ServerConfig {
    ServerConfig {
        min_iterations: TEST_ITERATIONS,
        unknown_user_iterations: TEST_ITERATIONS,
        ..ServerConfig::DEFAULT
    }
}

/// Everything the session has to write, marked as written.
fn drain(server: &mut ServerSession) -> String {
    let out = String::from_utf8(server.poll_transmit().to_vec()).unwrap();
    server.advance_transmit(out.len());
    out
}

fn events(server: &mut ServerSession) -> Vec<ServerEvent> {
    core::iter::from_fn(|| server.poll_event()).collect()
}

/// Before login the session closes at whichever comes first, the login deadline (from the
/// connection) or the idle timeout (from the last frame); at the deadline exactly, not a
/// millisecond before, with a `timeout` error and a `Closing` event.
#[test]
fn before_login_the_earlier_of_login_deadline_and_idle_timeout_closes() {
    // Login deadline first.
    let opened = Instant::from_millis(1_000);
    let cfg = ServerConfig {
        login_deadline: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(300),
        ..config()
    };
    let shared = shared(cfg);
    let mut server: ServerSession = ServerSession::new(PEER, opened);
    assert_eq!(
        server.poll_timeout(&shared),
        Some(Instant::from_millis(31_000))
    );
    server.handle_timeout(&shared, Instant::from_millis(30_999));
    assert!(!server.is_closing());
    assert!(server.poll_transmit().is_empty());
    server.handle_timeout(&shared, Instant::from_millis(31_000));
    assert!(server.is_closing());
    assert!(drain(&mut server).contains("\"code\":\"timeout\""));
    assert_eq!(
        events(&mut server),
        [ServerEvent::Closing {
            code: ErrorCode::Timeout
        }]
    );
    assert!(server.is_closed());
    // A closing session has no deadline left.
    assert_eq!(server.poll_timeout(&shared), None);

    // Idle timeout first, counted from the last frame.
    let cfg = ServerConfig {
        login_deadline: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(10),
        ..config()
    };
    let mut shared = self::shared(cfg);
    let mut server: ServerSession = ServerSession::new(PEER, opened);
    assert_eq!(
        server.poll_timeout(&shared),
        Some(Instant::from_millis(11_000))
    );
    let ping_at = Instant::from_millis(5_000);
    assert_eq!(
        server.handle_input(&mut shared, ping_at, b"{\"op\":\"ping\"}\n"),
        14
    );
    assert_eq!(drain(&mut server), "{\"op\":\"pong\"}\n");
    assert_eq!(
        server.poll_timeout(&shared),
        Some(Instant::from_millis(15_000))
    );
    server.handle_timeout(&shared, Instant::from_millis(14_999));
    assert!(!server.is_closing());
    server.handle_timeout(&shared, Instant::from_millis(15_000));
    assert!(server.is_closing());
}

/// What counts as activity for the idle timeout (PROTOCOL.md §2, §15): a complete frame,
/// refused ones included, and an oversize line once its `frame_too_long` is sent; never a
/// blank line or the bytes of an unfinished one.
#[test]
fn blank_lines_and_partial_lines_are_not_activity_but_refused_frames_are() {
    let cfg = ServerConfig {
        login_deadline: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(10),
        ..config()
    };
    let mut shared = self::shared(cfg);
    let mut server: ServerSession = ServerSession::new(PEER, Instant::ZERO);
    let idle_from = |ms: u64| Some(Instant::from_millis(ms + 10_000));
    assert_eq!(server.poll_timeout(&shared), idle_from(0));
    let blank = b"\n \t\n\r\n";
    let at = Instant::from_millis(2_000);
    assert_eq!(server.handle_input(&mut shared, at, blank), blank.len());
    assert!(
        server.poll_transmit().is_empty(),
        "blank lines get no answer"
    );
    assert_eq!(server.poll_timeout(&shared), idle_from(0));
    let partial = b"{\"op\":\"pi";
    let at = Instant::from_millis(4_000);
    assert_eq!(server.handle_input(&mut shared, at, partial), partial.len());
    assert_eq!(server.poll_timeout(&shared), idle_from(0));
    // The rest of that line, refused: a complete frame, so activity.
    let at = Instant::from_millis(6_000);
    assert_eq!(server.handle_input(&mut shared, at, b"X\"}\n"), 4);
    assert!(drain(&mut server).contains("\"code\":\"malformed\""));
    assert_eq!(server.poll_timeout(&shared), idle_from(6_000));
    // An oversize line counts from its `frame_too_long`; the discarded rest does not.
    let long = [b'x'; 600];
    let feed = |server: &mut ServerSession, shared: &mut ServerShared<TestRng, 4>, at: u64| {
        let (mut used, mut out) = (0, String::new());
        while used < long.len() {
            used += server.handle_input(shared, Instant::from_millis(at), &long[used..]);
            out += &drain(server);
        }
        out
    };
    assert!(feed(&mut server, &mut shared, 8_000).contains("\"code\":\"frame_too_long\""));
    assert_eq!(server.poll_timeout(&shared), idle_from(8_000));
    assert_eq!(feed(&mut server, &mut shared, 9_000), "");
    assert_eq!(server.poll_timeout(&shared), idle_from(8_000));
}

/// Logged in, only the idle timeout counts (the login deadline is long past), and no
/// deadline runs while a request waits on the ledger.
#[test]
fn logged_in_only_the_idle_timeout_counts_and_never_while_the_ledger_owes_an_answer() {
    let mut p = Pair::new(21);
    p.shared.config.login_deadline = Duration::from_secs(1);
    p.shared.config.idle_timeout = Duration::from_secs(60);
    p.register_and_login("carol", "carol's password").unwrap();
    p.advance(Duration::from_secs(10));
    // A frame now: idle runs from here, the login deadline (1 s) no longer applies.
    assert_eq!(
        p.server
            .handle_input(&mut p.shared, p.now, b"{\"op\":\"balance\"}\n"),
        17
    );
    assert_eq!(p.server.waiting_on_ledger(), 1);
    assert_eq!(p.server.poll_timeout(&p.shared), None);
    p.server
        .handle_timeout(&p.shared, Instant::from_millis(u64::MAX));
    assert!(!p.server.is_closing());
    let request = p.server.poll_ledger().expect("a balance request");
    let reply = txsock_core::Ledger::execute(&mut p.ledger, &request, p.now);
    p.server.handle_ledger(&mut p.shared, p.now, reply);
    assert_eq!(p.server.waiting_on_ledger(), 0);
    assert_eq!(
        p.server.poll_timeout(&p.shared),
        Some(Instant::from_millis(p.now.millis() + 60_000))
    );
}

/// `close_with` sends one final error and one `Closing` event, however often it is called;
/// the session is closing at once and closed once its output has been written.
#[test]
fn close_with_closes_once_and_is_closed_after_the_output_is_written() {
    let mut shared = shared(config());
    let mut server: ServerSession = ServerSession::new(PEER, Instant::ZERO);
    assert!(!server.is_closing());
    assert!(!server.is_closed());
    server.close_with(ErrorCode::ServerBusy);
    server.close_with(ErrorCode::OutputOverflow);
    assert!(server.is_closing());
    assert!(
        !server.is_closed(),
        "the final frame is still to be written"
    );
    let out = String::from_utf8(server.poll_transmit().to_vec()).unwrap();
    assert_eq!(out.matches('\n').count(), 1, "{out}");
    assert!(out.contains("\"code\":\"server_busy\""), "{out}");
    assert_eq!(
        events(&mut server),
        [ServerEvent::Closing {
            code: ErrorCode::ServerBusy
        }]
    );
    // A closing session takes no more input.
    assert!(!server.wants_input());
    assert_eq!(
        server.handle_input(&mut shared, Instant::ZERO, b"{\"op\":\"ping\"}\n"),
        0
    );
    server.advance_transmit(3);
    assert!(!server.is_closed());
    server.advance_transmit(out.len() - 3);
    assert!(server.is_closed());
}

/// Events wait in a queue of three; a fourth drops the oldest (the documented contract).
#[test]
fn events_beyond_three_drop_the_oldest() {
    let mut shared = shared(ServerConfig {
        max_bad_frames: 100,
        ..config()
    });
    // A larger output buffer takes several frames per call (see `poll_event`).
    let mut server: ServerSession<512, 16, 4096> = ServerSession::new(PEER, Instant::ZERO);
    let input = b"{\"op\":\"x1\"}\n{\"op\":\"ping\"}\n{}\n{\"op\":\"transfer\"}\n[]\n";
    assert_eq!(
        server.handle_input(&mut shared, Instant::ZERO, input),
        input.len()
    );
    let kept = core::iter::from_fn(|| server.poll_event()).count();
    assert_eq!(kept, 3, "four rejections, the last three kept");
}

/// A session takes input only while it has room for a whole answer, and says so.
#[test]
fn input_waits_while_the_output_has_no_room_for_an_answer() {
    let mut shared = shared(config());
    let mut server: ServerSession = ServerSession::new(PEER, Instant::ZERO);
    assert!(server.wants_input());
    assert!(server.has_room_for_reply());
    let ping = b"{\"op\":\"ping\"}\n{\"op\":\"ping\"}\n";
    // The default output holds one maximal answer: after one pong there is no room.
    assert_eq!(server.handle_input(&mut shared, Instant::ZERO, ping), 14);
    assert!(!server.wants_input());
    assert!(!server.has_room_for_reply());
    assert_eq!(
        server.handle_input(&mut shared, Instant::ZERO, &ping[14..]),
        0
    );
    drain(&mut server);
    assert!(server.wants_input());
    assert!(server.has_room_for_reply());
    assert_eq!(
        server.handle_input(&mut shared, Instant::ZERO, &ping[14..]),
        14
    );
}

/// `drive` returns exactly the input it consumed: all of it when the output drains, only
/// the first frame when the transmitter takes nothing.
#[test]
fn drive_reports_the_input_it_consumed() {
    let mut shared = shared(config());
    let mut ledger: MemLedger<2, 2> = MemLedger::new(Amount(0));
    let input = b"{\"op\":\"ping\"}\n{\"op\":\"ping\"}\n{\"op\":\"pi";
    let mut server: ServerSession = ServerSession::new(PEER, Instant::ZERO);
    let mut written = Vec::new();
    let used = server.drive(
        &mut shared,
        &mut ledger,
        Instant::ZERO,
        input,
        |b: &[u8]| {
            written.extend_from_slice(b);
            assert!(written.len() < 1 << 20, "the server keeps offering output");
            Ok::<_, ()>(b.len())
        },
        |_| {},
    );
    assert_eq!(used, Ok(input.len()));
    assert_eq!(written, b"{\"op\":\"pong\"}\n{\"op\":\"pong\"}\n");

    let mut server: ServerSession = ServerSession::new(PEER, Instant::ZERO);
    let used = server.drive(
        &mut shared,
        &mut ledger,
        Instant::ZERO,
        input,
        |_: &[u8]| Ok::<_, ()>(0),
        |_| {},
    );
    assert_eq!(used, Ok(14));
    assert_eq!(server.poll_transmit(), b"{\"op\":\"pong\"}\n");
    // A transmitter's error ends the loop and is returned.
    let mut server: ServerSession = ServerSession::new(PEER, Instant::ZERO);
    let used = server.drive(
        &mut shared,
        &mut ledger,
        Instant::ZERO,
        input,
        |_: &[u8]| Err::<usize, _>("broken pipe"),
        |_| {},
    );
    assert_eq!(used, Err("broken pipe"));
}

/// A ledger answer nobody asked for changes nothing and writes nothing.
#[test]
fn an_answer_when_none_is_owed_is_ignored() {
    let mut shared = shared(config());
    let mut server: ServerSession = ServerSession::new(PEER, Instant::ZERO);
    server.handle_ledger(
        &mut shared,
        Instant::ZERO,
        LedgerReply::Balance(Ok(Amount(5))),
    );
    assert!(server.poll_transmit().is_empty());
    assert!(server.poll_event().is_none());
    // Asked but not yet handed out: still not owed.
    let login = b"{\"op\":\"login\",\"user\":\"dave\",\"nonce\":\"abcdefghijklmnop\"}\n";
    assert_eq!(
        server.handle_input(&mut shared, Instant::ZERO, login),
        login.len()
    );
    assert!(server.wants_ledger());
    server.handle_ledger(&mut shared, Instant::ZERO, LedgerReply::Unavailable);
    assert!(server.poll_transmit().is_empty());
    assert_eq!(server.waiting_on_ledger(), 1);
    // Handed out once, then owed.
    assert!(matches!(
        server.poll_ledger(),
        Some(LedgerRequest::Credentials { .. })
    ));
    assert!(!server.wants_ledger());
    assert_eq!(server.poll_ledger(), None);
    server.handle_ledger(&mut shared, Instant::ZERO, LedgerReply::Unavailable);
    assert!(drain(&mut server).contains("\"internal\""));
    assert_eq!(server.waiting_on_ledger(), 0);
}

/// Logged in with pipeline room, requests for the ledger are taken while earlier ones wait,
/// up to `max_pipeline`, handed out once each in order; `max_nonces` caps the pipeline too.
#[test]
fn the_pipeline_takes_up_to_its_limit_and_hands_out_in_order() {
    for (max_pipeline, max_nonces, expect) in [(3, 16, 3), (8, 2, 2), (1, 16, 1), (0, 16, 1)] {
        let mut p = Pair::new(23);
        p.register_and_login("erin", "erin's password").unwrap();
        p.shared.config.max_pipeline = max_pipeline;
        p.shared.config.max_nonces = max_nonces;
        let mut server: ServerSession<512, 16, 576, Deque<PipelinedRequest, 7>> =
            ServerSession::new(PEER, p.now);
        // Log this session in with the same exchange the pair's client makes.
        let login = login_with_pair(&mut p, &mut server);
        assert!(login, "logged in");
        let mut input = Vec::new();
        for offset in 0..5 {
            input.extend_from_slice(
                format!("{{\"op\":\"history\",\"offset\":{offset}}}\n").as_bytes(),
            );
        }
        let used = server.handle_input(&mut p.shared, p.now, &input);
        assert_eq!(
            server.waiting_on_ledger(),
            expect,
            "{max_pipeline} {max_nonces}"
        );
        assert_eq!(used, input.len() / 5 * expect);
        for offset in 0..expect as u32 {
            assert!(server.wants_ledger());
            match server.poll_ledger() {
                Some(LedgerRequest::History { offset: o, .. }) => assert_eq!(o, offset),
                other => panic!("{other:?}"),
            }
        }
        assert!(!server.wants_ledger());
        assert_eq!(server.poll_ledger(), None);
    }

    // The store's room caps the pipeline too: one in the session and two in the deque.
    let mut p = Pair::new(25);
    p.register_and_login("erin", "erin's password").unwrap();
    let mut server: ServerSession<512, 16, 576, Deque<PipelinedRequest, 2>> =
        ServerSession::new(PEER, p.now);
    assert!(login_with_pair(&mut p, &mut server));
    let input = b"{\"op\":\"balance\"}\n".repeat(5);
    assert_eq!(server.handle_input(&mut p.shared, p.now, &input), 3 * 17);
    assert_eq!(server.waiting_on_ledger(), 3);
}

/// A session without pipeline room ([`NoPipeline`], the default) takes one request at a
/// time, whatever `max_pipeline` says, and answers each in turn without closing.
#[test]
fn without_pipeline_room_requests_are_taken_one_at_a_time() {
    let mut p = Pair::new(26);
    p.register_and_login("gina", "gina's password").unwrap();
    assert_eq!(p.shared.config.max_pipeline, 8);
    let input = b"{\"op\":\"balance\"}\n{\"op\":\"balance\"}\n";
    assert_eq!(p.server.handle_input(&mut p.shared, p.now, input), 17);
    assert_eq!(p.server.waiting_on_ledger(), 1);
    assert!(!p.server.wants_input());
    assert_eq!(p.server.handle_input(&mut p.shared, p.now, &input[17..]), 0);
    for _ in 0..2 {
        let request = p.server.poll_ledger().expect("a balance request");
        assert_eq!(p.server.poll_ledger(), None);
        let reply = txsock_core::Ledger::execute(&mut p.ledger, &request, p.now);
        p.server.handle_ledger(&mut p.shared, p.now, reply);
        assert!(drain(&mut p.server).starts_with("{\"op\":\"balance\""));
        assert!(!p.server.is_closing());
        assert_eq!(
            p.server.handle_input(&mut p.shared, p.now, &input[17..]),
            17
        );
    }
}

/// A nonce request gets what it asks for, but never more than the session keeps
/// (`max_nonces`), so no nonce handed out is already forgotten.
#[test]
fn nonces_are_issued_up_to_what_the_session_keeps() {
    for (max_nonces, count, expect) in [(16, 3, 3), (2, 5, 2), (5, 5, 5)] {
        let mut p = Pair::new(27);
        p.shared.config.max_nonces = max_nonces;
        p.register_and_login("hal", "hal's password").unwrap();
        let request = format!("{{\"op\":\"nonces\",\"count\":{count}}}\n");
        let before = p.server.outstanding_nonces();
        assert_eq!(
            p.server
                .handle_input(&mut p.shared, p.now, request.as_bytes()),
            request.len()
        );
        let out = drain(&mut p.server);
        let issued = out
            .split('"')
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .count();
        assert_eq!(issued, expect, "{out}");
        assert_eq!(
            p.server.outstanding_nonces(),
            (before + expect).min(max_nonces)
        );
    }
}

/// Logs `server` in as the pair's user by relaying the pair's client through it.
fn login_with_pair<Q: PipelineQueue + Default>(
    p: &mut Pair,
    server: &mut ServerSession<512, 16, 576, Q>,
) -> bool {
    let user = p.client.user().unwrap().as_str().to_string();
    p.reconnect();
    p.client.login(&mut p.rng, &user).unwrap();
    if !relay(p, server) {
        return false;
    }
    let Some(ClientEvent::Challenge { .. }) = p.client.poll_event() else {
        return false;
    };
    let password = format!("{user}'s password");
    p.client.answer_with_password(&password).unwrap();
    relay(p, server) && p.client.poll_event() == Some(ClientEvent::LoggedIn)
}

/// The client's pending request through `server` (ledger answered at once) and back.
fn relay<Q: PipelineQueue + Default>(
    p: &mut Pair,
    server: &mut ServerSession<512, 16, 576, Q>,
) -> bool {
    let request = p.client.poll_transmit().to_vec();
    p.client.advance_transmit(request.len());
    let mut out = Vec::new();
    let Ok(used) = server.drive(
        &mut p.shared,
        &mut p.ledger,
        p.now,
        &request,
        |b: &[u8]| {
            out.extend_from_slice(b);
            assert!(out.len() < 1 << 20, "the server keeps offering output");
            Ok::<_, core::convert::Infallible>(b.len())
        },
        |_| {},
    );
    used == request.len() && p.client.handle_input(&out) == out.len()
}

/// A pipeline store that checks, whenever the session uses it, that `is_empty` (the trait's
/// provided method) agrees with `len`, for itself and for the deque it wraps, and that
/// [`NoPipeline`] refuses (gives back) every request offered to it.
#[derive(Default)]
struct Checked(Deque<PipelinedRequest, 4>);

impl Checked {
    fn check(&self) {
        assert_eq!(PipelineQueue::is_empty(self), PipelineQueue::len(self) == 0);
        assert_eq!(PipelineQueue::is_empty(&self.0), self.0.is_empty());
    }
}

impl PipelineQueue for Checked {
    fn capacity(&self) -> usize {
        PipelineQueue::capacity(&self.0)
    }
    fn len(&self) -> usize {
        PipelineQueue::len(&self.0)
    }
    fn push_back(&mut self, request: PipelinedRequest) -> Result<(), PipelinedRequest> {
        self.check();
        // The store without room gives back every request it is offered.
        let Err(request) = NoPipeline.push_back(request) else {
            panic!("NoPipeline has no room, yet took a request");
        };
        let pushed = PipelineQueue::push_back(&mut self.0, request);
        self.check();
        pushed
    }
    fn pop_front(&mut self) -> Option<PipelinedRequest> {
        self.check();
        let popped = PipelineQueue::pop_front(&mut self.0);
        self.check();
        popped
    }
    fn get(&self, index: usize) -> Option<&PipelinedRequest> {
        PipelineQueue::get(&self.0, index)
    }
}

/// The pipeline stores the core ships report their room and contents truthfully: empty
/// exactly when they hold nothing, as requests come and go.
#[test]
fn pipeline_stores_report_capacity_length_and_emptiness() {
    let mut none = NoPipeline;
    assert_eq!(none.capacity(), 0);
    assert_eq!(none.len(), 0);
    assert!(none.is_empty());
    assert!(none.pop_front().is_none());
    assert!(none.get(0).is_none());

    let mut p = Pair::new(24);
    p.register_and_login("frank", "frank's password").unwrap();
    let mut server: ServerSession<512, 16, 576, Checked> = ServerSession::new(PEER, p.now);
    assert!(login_with_pair(&mut p, &mut server));
    let input = b"{\"op\":\"balance\"}\n{\"op\":\"balance\"}\n{\"op\":\"balance\"}\n";
    assert_eq!(
        server.handle_input(&mut p.shared, p.now, input),
        input.len()
    );
    assert_eq!(
        server.waiting_on_ledger(),
        3,
        "one in the session, two queued"
    );
    let mut answered = 0;
    while let Some(request) = server.poll_ledger() {
        let reply = txsock_core::Ledger::execute(&mut p.ledger, &request, p.now);
        server.handle_ledger(&mut p.shared, p.now, reply);
        drain_any(&mut server);
        answered += 1;
    }
    assert_eq!(answered, 3);
    assert_eq!(server.waiting_on_ledger(), 0);
}

fn drain_any<const F: usize, const N: usize, const O: usize, Q: PipelineQueue + Default>(
    server: &mut ServerSession<F, N, O, Q>,
) {
    let n = server.poll_transmit().len();
    server.advance_transmit(n);
}

/// A frame that needs no ledger, arriving while a request waits on the ledger, is held
/// (unanswered) until the answers owed before it are written, and `holds_frame` says so; then
/// `handle_input` answers it even with no new input.
#[test]
fn a_frame_behind_a_waiting_request_is_held_and_answered_in_order() {
    let mut p = Pair::new(28);
    p.register_and_login("ivy", "ivy's password").unwrap();
    let mut server: ServerSession<512, 16, 576, Deque<PipelinedRequest, 4>> =
        ServerSession::new(PEER, p.now);
    assert!(login_with_pair(&mut p, &mut server));
    assert!(!server.holds_frame());
    let input = b"{\"op\":\"balance\"}\n{\"op\":\"ping\"}\n";
    assert_eq!(
        server.handle_input(&mut p.shared, p.now, input),
        input.len()
    );
    assert!(server.holds_frame());
    assert!(
        server.poll_transmit().is_empty(),
        "nothing answered out of order"
    );
    let request = server.poll_ledger().unwrap();
    let reply = txsock_core::Ledger::execute(&mut p.ledger, &request, p.now);
    server.handle_ledger(&mut p.shared, p.now, reply);
    assert!(server.holds_frame(), "held until the balance is written");
    let balance = String::from_utf8(server.poll_transmit().to_vec()).unwrap();
    assert!(balance.starts_with("{\"op\":\"balance\""), "{balance}");
    drain_any(&mut server);
    assert_eq!(server.handle_input(&mut p.shared, p.now, &[]), 0);
    assert!(!server.holds_frame());
    assert_eq!(server.poll_transmit(), b"{\"op\":\"pong\"}\n");
}

/// Blank lines (empty, spaces and tabs, a lone CR) carry nothing: no answer, no rejection,
/// and they do not count towards the bad-frame limit.
#[test]
fn blank_lines_are_skipped_without_an_answer_or_a_strike() {
    let mut shared = shared(ServerConfig {
        max_bad_frames: 0,
        ..config()
    });
    let mut server: ServerSession = ServerSession::new(PEER, Instant::ZERO);
    let input = b"\n  \t\n\r\n\n{\"op\":\"ping\"}\n";
    assert_eq!(
        server.handle_input(&mut shared, Instant::ZERO, input),
        input.len()
    );
    assert_eq!(drain(&mut server), "{\"op\":\"pong\"}\n");
    assert!(events(&mut server).is_empty());
    assert!(!server.is_closing());
}

/// Logged in with pipeline room, transfers with a good MAC and nonce join the pipeline
/// (both wait on the ledger at once); one with a bad MAC does not (it is held, then refused
/// in its turn, and moves nothing).
#[test]
fn good_transfers_join_the_pipeline_and_a_forged_one_waits_its_turn() {
    let mut p = Pair::new(29);
    p.register_and_login("uma", "uma's password").unwrap();
    let mut server: ServerSession<512, 16, 576, Deque<PipelinedRequest, 4>> =
        ServerSession::new(PEER, p.now);
    assert!(login_with_pair(&mut p, &mut server));
    p.client.request_nonces(3).unwrap();
    assert!(relay(&mut p, &mut server));
    assert!(matches!(
        p.client.poll_event(),
        Some(ClientEvent::Nonces { available: 3 })
    ));
    p.client.transfer("t-1", "uma", Amount(1)).unwrap();
    p.client.transfer("t-2", "uma", Amount(2)).unwrap();
    let good = p.client.poll_transmit().to_vec();
    p.client.advance_transmit(good.len());
    assert_eq!(server.handle_input(&mut p.shared, p.now, &good), good.len());
    assert_eq!(
        server.waiting_on_ledger(),
        2,
        "both transfers in the pipeline"
    );
    assert!(!server.holds_frame());

    p.client.transfer("t-3", "uma", Amount(3)).unwrap();
    let text = String::from_utf8(p.client.poll_transmit().to_vec()).unwrap();
    let at = text.find("\"mac\":\"").unwrap() + 7;
    let flipped = if &text[at..at + 1] == "0" { "1" } else { "0" };
    let forged = format!("{}{}{}", &text[..at], flipped, &text[at + 1..]);
    assert_eq!(
        server.handle_input(&mut p.shared, p.now, forged.as_bytes()),
        forged.len()
    );
    assert_eq!(
        server.waiting_on_ledger(),
        2,
        "a forged transfer does not join"
    );
    assert!(server.holds_frame());
    let journal = p.ledger.journal().len();
    let mut answers = String::new();
    while let Some(request) = server.poll_ledger() {
        let reply = txsock_core::Ledger::execute(&mut p.ledger, &request, p.now);
        server.handle_ledger(&mut p.shared, p.now, reply);
        answers += &drain_text(&mut server);
    }
    assert_eq!(server.handle_input(&mut p.shared, p.now, &[]), 0);
    answers += &drain_text(&mut server);
    assert_eq!(p.ledger.journal().len(), journal + 2);
    let ops: Vec<&str> = answers
        .lines()
        .map(|l| l.split('"').nth(3).unwrap_or(""))
        .collect();
    assert_eq!(ops, ["receipt", "receipt", "error"], "{answers}");
    assert!(answers.contains("\"bad_mac\""), "{answers}");
}

fn drain_text<const F: usize, const N: usize, const O: usize, Q: PipelineQueue + Default>(
    server: &mut ServerSession<F, N, O, Q>,
) -> String {
    let text = String::from_utf8(server.poll_transmit().to_vec()).unwrap();
    server.advance_transmit(text.len());
    text
}
