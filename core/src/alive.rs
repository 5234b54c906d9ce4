//! Liveness of the sessions' loops: every call of `ServerSession::handle_input`,
//! `DriveLoop::next` and `ClientSession::handle_input` returns, and every drive loop over
//! one input ends, in a bounded number of steps, in the cases that take each loop's every
//! branch (input used up, a frame held behind the ledger, output nobody takes, a pipelined
//! session, the ledger's requests, an answer in pieces); and so do the request reader's
//! scanning loops (`message.rs`'s `Reader`: whitespace, strings with escapes, the unknown-op
//! tie-breaker's strings), each case also checking what was read; and so do the nonce
//! ring's (`replay.rs`: `issue`'s eviction loop, `remove`'s shift), which every session that
//! logs in runs.
//!
//! Those loops are the product's own (the `while` of each `handle_input`,
//! `DriveLoop::next`'s `loop`, the reader's loops over a frame's bytes), so a fault that
//! keeps one going never returns to test code: no step count in a test can end it, and
//! every test driving a session or reading a request hangs with it. So the cases here run
//! on a thread of their own under a watchdog, which ends the whole test process (abort) if
//! they have not finished in [`LIMIT`], naming the case that hung; a failed assertion here
//! ends it too, since libtest would otherwise wait for the other tests hanging with it. A
//! correct run takes milliseconds; the limit is a hang detector, not a speed check.
//!
//! The module is named to sort first: libtest starts the tests in name order, as many at a
//! time as there are cores, and under such a fault the first tests that drive a session
//! (`asynch`, `blocking`, …) would hold every test thread before this one started.

use crate::amount::Amount;
use crate::ledger::Ledger;
use crate::lockout::PeerAddr;
use crate::message::{MessageError, Request, TransferRequest};
use crate::names::{TransferId, Username};
use crate::selftest::{Pair, TestLedger, TestRng};
use crate::session::drive::{DriveLoop, DriveStep};
use crate::session::server::{PipelineQueue, PipelinedRequest, ServerShared};
use crate::session::{ClientEvent, ClientSession, ServerSession};
use crate::time::Instant;
use std::io::Write;
use std::string::String;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

/// How long the cases may take before the watchdog ends the process: far beyond a correct
/// run (milliseconds, seconds on a loaded machine at `opt-level = 0`), well within
/// cargo-mutants' own limit, so a hang is reported as this failure.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Steps one drive loop may take: each frame of the inputs below costs a few (input,
/// ledger, transmit), far fewer than this.
const MAX_STEPS: usize = 400;

/// Runs `case` on its own thread; ends the process if it fails or has not returned within
/// [`LIMIT`]. `at` is told the step being run, for the report, which goes to the process's
/// standard error itself (libtest's captured output would be lost with the process).
fn watched(name: &str, case: fn(&Mutex<&'static str>)) {
    let at = Arc::new(Mutex::new("start"));
    let (done, finished) = mpsc::channel();
    let worker_at = Arc::clone(&at);
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(move || case(&worker_at)).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| String::from(*s)))
                .unwrap_or_default()
        });
        let _ = done.send(outcome);
    });
    let failure = match finished.recv_timeout(LIMIT) {
        Ok(Ok(())) => return,
        Ok(Err(panic)) => std::format!("failed: {panic}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => String::from("failed"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            std::format!("has not returned in {LIMIT:?}: a session or reader loop does not end")
        }
    };
    let at = at.lock().map(|at| *at).unwrap_or("?");
    let _ = writeln!(std::io::stderr(), "liveness: {name}, at {at:?}, {failure}");
    std::process::abort();
}

/// What one drive loop did.
#[derive(Debug, Default)]
struct Run {
    consumed: usize,
    output: Vec<u8>,
    requests: usize,
    steps: usize,
}

/// One drive loop over `input` on `session`, the ledger answering at once, writing at most
/// `take` bytes per transmit; fails past [`MAX_STEPS`] steps.
fn drive<Q: PipelineQueue + Default, const FRAME: usize, const NONCES: usize, const OUT: usize>(
    session: &mut ServerSession<FRAME, NONCES, OUT, Q>,
    shared: &mut ServerShared<TestRng, 8>,
    ledger: &mut TestLedger,
    input: &[u8],
    take: usize,
) -> Run {
    let now = Instant::ZERO;
    let mut steps = DriveLoop::new();
    let mut run = Run::default();
    while run.steps < MAX_STEPS {
        run.steps += 1;
        match steps.next(session, shared, now, input) {
            DriveStep::Ledger(request) => {
                run.requests += 1;
                let reply = ledger.execute(&request, now);
                steps.answer(session, shared, now, reply);
            }
            DriveStep::Event(_) => {}
            DriveStep::Transmit => {
                let pending = session.poll_transmit();
                let n = pending.len().min(take);
                run.output.extend_from_slice(&pending[..n]);
                steps.transmitted(session, n);
            }
            DriveStep::Done { consumed } => {
                assert!(
                    consumed <= input.len(),
                    "consumed {consumed} of {}",
                    input.len()
                );
                run.consumed = consumed;
                return run;
            }
        }
    }
    panic!("the drive loop did not end within {MAX_STEPS} steps: {run:?}");
}

/// The `op` of each answer line.
fn ops(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| line.split('"').nth(3).unwrap_or("").into())
        .collect()
}

/// A server with user `sam` registered (through the self-test pair), and its ledger.
fn server() -> (ServerShared<TestRng, 8>, TestLedger) {
    let mut p = Pair::new(61);
    p.register_and_login("sam", "a long password").unwrap();
    (p.shared, p.ledger)
}

/// Logs `sam` in on `session` through a client, every exchange a bounded drive loop.
fn log_in<Q: PipelineQueue + Default, const FRAME: usize, const NONCES: usize, const OUT: usize>(
    session: &mut ServerSession<FRAME, NONCES, OUT, Q>,
    shared: &mut ServerShared<TestRng, 8>,
    ledger: &mut TestLedger,
) -> ClientSession {
    let mut client = ClientSession::new(crate::session::ClientConfig {
        min_iterations: crate::selftest::TEST_ITERATIONS,
        ..crate::session::ClientConfig::default()
    });
    let mut rng = TestRng::new(62);
    client.login(&mut rng, "sam").unwrap();
    let mut exchange = |client: &mut ClientSession| {
        let request = client.poll_transmit().to_vec();
        client.advance_transmit(request.len());
        let run = drive(session, shared, ledger, &request, usize::MAX);
        assert_eq!(run.consumed, request.len());
        assert_eq!(client.handle_input(&run.output), run.output.len());
        client.poll_event()
    };
    assert!(matches!(
        exchange(&mut client),
        Some(ClientEvent::Challenge { .. })
    ));
    client.answer_with_password("a long password").unwrap();
    assert_eq!(exchange(&mut client), Some(ClientEvent::LoggedIn));
    client
}

const PINGS: &[u8] = b"{\"op\":\"ping\"}\n\n{\"op\":\"ping\"}\n{\"op\":\"pi";

/// Frames before logging in, on a plain and on a pipelined session: every whole frame is
/// answered once, the unfinished one is kept, and the rest of it is answered in the next
/// loop; a loop given nothing ends at once.
fn before_login(at: &Mutex<&'static str>) {
    *at.lock().unwrap() = "registering sam through the self-test pair";
    let (mut shared, mut ledger) = server();
    let now = Instant::ZERO;
    *at.lock().unwrap() = "plain session, pings";
    let mut plain: ServerSession = ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), now);
    let run = drive(&mut plain, &mut shared, &mut ledger, PINGS, usize::MAX);
    assert_eq!(
        (run.consumed, ops(&run.output)),
        (PINGS.len(), ["pong", "pong"].map(String::from).to_vec())
    );
    let run = drive(&mut plain, &mut shared, &mut ledger, b"ng\"}\n", usize::MAX);
    assert_eq!(
        (run.consumed, ops(&run.output)),
        (5, ["pong".into()].to_vec())
    );
    let run = drive(&mut plain, &mut shared, &mut ledger, b"", usize::MAX);
    assert_eq!((run.consumed, run.output.len()), (0, 0));

    *at.lock().unwrap() = "pipelined session, pings";
    let mut pipelined: ServerSession<512, 16, 576, heapless::Deque<PipelinedRequest, 7>> =
        ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), now);
    let run = drive(&mut pipelined, &mut shared, &mut ledger, PINGS, usize::MAX);
    assert_eq!(
        (run.consumed, ops(&run.output)),
        (PINGS.len(), ["pong", "pong"].map(String::from).to_vec())
    );
    let run = drive(&mut pipelined, &mut shared, &mut ledger, b"", usize::MAX);
    assert_eq!((run.consumed, run.output.len()), (0, 0));
}

/// Output nobody takes: the session stops taking input once its output is full, and the
/// loop ends; once the output is taken, the rest is answered.
fn output_not_taken(at: &Mutex<&'static str>) {
    *at.lock().unwrap() = "registering sam through the self-test pair";
    let (mut shared, mut ledger) = server();
    *at.lock().unwrap() = "plain session, 40 pings, nothing written";
    let input = b"{\"op\":\"ping\"}\n".repeat(40);
    let mut session: ServerSession<512, 16, 576> =
        ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), Instant::ZERO);
    let run = drive(&mut session, &mut shared, &mut ledger, &input, 0);
    assert!(run.consumed > 0 && run.consumed < input.len(), "{run:?}");
    let mut consumed = run.consumed;
    let mut output = Vec::new();
    for _ in 0..input.len() {
        *at.lock().unwrap() = "plain session, the rest of 40 pings";
        let run = drive(
            &mut session,
            &mut shared,
            &mut ledger,
            &input[consumed..],
            usize::MAX,
        );
        consumed += run.consumed;
        output.extend_from_slice(&run.output);
        if consumed == input.len() && session.poll_transmit().is_empty() {
            break;
        }
    }
    assert_eq!(consumed, input.len());
    assert_eq!(ops(&output), std::vec![String::from("pong"); 40]);
}

/// Logged in, with requests for the ledger among frames that need none, fed at once: on
/// a plain session (one request at a time) and on a pipelined one (a `pong` is held behind
/// the ledger's answers): each is answered once, in order, each ledger request handed out
/// once.
fn logged_in(at: &Mutex<&'static str>) {
    let input = b"{\"op\":\"balance\"}\n{\"op\":\"ping\"}\n{\"op\":\"history\",\"offset\":0}\n{\"op\":\"balance\"}\n{\"op\":\"ping\"}\n";
    let want = ["balance", "pong", "history", "balance", "pong"]
        .map(String::from)
        .to_vec();
    *at.lock().unwrap() = "registering sam through the self-test pair";
    let (mut shared, mut ledger) = server();
    *at.lock().unwrap() = "plain session, logging in";
    let mut plain: ServerSession =
        ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), Instant::ZERO);
    let _ = log_in(&mut plain, &mut shared, &mut ledger);
    *at.lock().unwrap() = "plain session, ledger requests and pings";
    let run = drive(&mut plain, &mut shared, &mut ledger, input, usize::MAX);
    assert_eq!(
        (run.consumed, run.requests, ops(&run.output)),
        (input.len(), 3, want.clone())
    );

    *at.lock().unwrap() = "pipelined session, logging in";
    let mut pipelined: ServerSession<512, 16, 576, heapless::Deque<PipelinedRequest, 7>> =
        ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), Instant::ZERO);
    let _ = log_in(&mut pipelined, &mut shared, &mut ledger);
    *at.lock().unwrap() = "pipelined session, ledger requests and pings";
    let run = drive(&mut pipelined, &mut shared, &mut ledger, input, usize::MAX);
    assert_eq!(
        (run.consumed, run.requests, ops(&run.output)),
        (input.len(), 3, want)
    );
}

/// The same cases through the product's own driver, `ServerSession::drive` (the loop the
/// host and the devices run), with a ledger that fails past a bound of requests.
fn sync_drive(at: &Mutex<&'static str>) {
    *at.lock().unwrap() = "registering sam through the self-test pair";
    let (mut shared, mut ledger) = server();
    let now = Instant::ZERO;
    *at.lock().unwrap() = "ServerSession::drive, pings";
    let mut session: ServerSession = ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), now);
    let mut output = Vec::new();
    let mut transmit = |pending: &[u8]| {
        assert!(output.len() < 4096, "endless output");
        output.extend_from_slice(pending);
        Ok::<_, ()>(pending.len())
    };
    let mut counted = Counted {
        ledger: &mut ledger,
        requests: 0,
    };
    let consumed = session.drive(&mut shared, &mut counted, now, PINGS, &mut transmit, |_| {});
    assert_eq!(consumed, Ok(PINGS.len()));
    assert_eq!(ops(&output), ["pong", "pong"].map(String::from).to_vec());
}

/// The client's input loop (`ClientSession::handle_input`): nothing taken from an empty
/// input; an answer in two pieces, the first taken whole without an event, the second
/// taken whole with it; two answers at once, taken one at a time (an event stops the
/// loop), then the rest.
fn client_input(at: &Mutex<&'static str>) {
    *at.lock().unwrap() = "registering sam through the self-test pair";
    let (mut shared, mut ledger) = server();
    *at.lock().unwrap() = "client, logging in";
    let mut server: ServerSession =
        ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), Instant::ZERO);
    let mut client = log_in(&mut server, &mut shared, &mut ledger);
    *at.lock().unwrap() = "client, empty input";
    assert_eq!(client.handle_input(b""), 0);
    assert_eq!(client.poll_event(), None);

    *at.lock().unwrap() = "client, an answer in two pieces";
    client.balance().unwrap();
    let request = client.poll_transmit().to_vec();
    client.advance_transmit(request.len());
    let answer = drive(&mut server, &mut shared, &mut ledger, &request, usize::MAX).output;
    let half = answer.len() / 2;
    assert_eq!(client.handle_input(&answer[..half]), half);
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.handle_input(&answer[half..]), answer.len() - half);
    assert!(matches!(client.poll_event(), Some(ClientEvent::Balance(_))));
    assert_eq!(client.handle_input(b""), 0);

    *at.lock().unwrap() = "client, two answers at once";
    client.ping().unwrap();
    client.ping().unwrap();
    let request = client.poll_transmit().to_vec();
    client.advance_transmit(request.len());
    let answers = drive(&mut server, &mut shared, &mut ledger, &request, usize::MAX).output;
    let first = client.handle_input(&answers);
    assert!(
        first > 0 && first < answers.len(),
        "{first} of {}",
        answers.len()
    );
    assert!(client.poll_event().is_some());
    assert_eq!(
        client.handle_input(&answers[first..]),
        answers.len() - first
    );
    assert!(client.poll_event().is_some());
}

/// Request frames that take each of the request reader's scanning loops (`message.rs`'s
/// `Reader`: `space`, `string`, and `raw_string`, which reads the strings of the unknown-op
/// tie-breaker, `read_op`, run when the one-pass reader refuses a frame, e.g. for a field no
/// request has), and what [`Request::parse`] makes of each: whitespace between any two
/// tokens changes nothing; a string's escapes are kept raw, so a backslash early, late, or
/// escaped itself right before the closing quote is part of the value and never ends it;
/// an unknown op is told from a malformed request through ignored fields holding escapes,
/// empty strings and whitespace.
fn reader_cases() -> Vec<(&'static str, Result<Request, MessageError>)> {
    let transfer = Request::Transfer(TransferRequest {
        id: TransferId::parse("t-1").unwrap(),
        to: Username::parse("bob").unwrap(),
        amount: Amount::parse("1.50").unwrap(),
        nonce: [0x11; 16],
        mac: [0xab; 32],
    });
    std::vec![
        // Whitespace.
        ("{ \"op\" : \"ping\" }", Ok(Request::Ping)),
        (
            "{\t\"op\":\t\"history\" ,\t\"offset\" :  7\t}",
            Ok(Request::History {
                offset: 7,
                deposits: false,
            }),
        ),
        (
            concat!(
                "{\"op\": \"transfer\", \"id\": \"t-1\", \"to\":\t\"bob\", ",
                "\"amount\" : \"1.50\", \"nonce\": \"11111111111111111111111111111111\", ",
                "\"mac\": \"abababababababababababababababababababababababababababababababab\" }"
            ),
            Ok(transfer),
        ),
        // Escapes, read by `string`: never decoded, never the end of the string.
        (
            "{\"op\":\"login\",\"user\":\"sam\\\"s\",\"nonce\":\"abcdefgh\"}",
            Err(MessageError::BadName),
        ),
        (
            "{\"op\":\"login\",\"user\":\"sam\",\"nonce\":\"abcd\\\\efgh\"}",
            Err(MessageError::BadEncoding),
        ),
        ("{\"op\":\"pi\\\"ng\"}", Err(MessageError::UnknownOp)),
        ("{\"op\":\"ping\\\\\"}", Err(MessageError::UnknownOp)),
        ("{\"op\":\"\\\"ping\\\"\"}", Err(MessageError::UnknownOp)),
        (
            "{\"op\":\"ping\",\"user\":\"sam\\\"s\\\\\"}",
            Err(MessageError::Syntax),
        ),
        // Fields no request has: the tie-breaker's `raw_string` reads every string.
        (
            "{\"op\":\"launch\",\"note\":\"say \\\"hi\\\" twice\"}",
            Err(MessageError::UnknownOp),
        ),
        (
            "{\"note\":\"a\\\\b\\\"c\", \"op\" : \"lau\\\"nch\" }",
            Err(MessageError::UnknownOp),
        ),
        (
            "{\"x\":\"\",\"op\":\"launch\",\"y\":\"\"}",
            Err(MessageError::UnknownOp),
        ),
        (
            "{ \"launch\\\"es\" : 1 , \"op\":\"\\\\\"}",
            Err(MessageError::UnknownOp),
        ),
        (
            "{\"op\":\"ping\",\"note\":\"a\\\"b\"}",
            Err(MessageError::Syntax),
        ),
        // An ignored array of several elements, skipped by the tie-breaker's `skip_ignored`,
        // whose loop steps over each comma. A request nests nothing (`precheck` refuses a
        // second level), so the array hides from it behind the unquoted `a"`, which
        // precheck takes for the start of a string and the readers for a bare value.
        (
            "{\"x\":a\",\"y\":[1, 2 ,[3,4]],\"op\":\"launch\"}",
            Err(MessageError::UnknownOp),
        ),
    ]
}

/// The request reader's loops: every frame of [`reader_cases`] read by [`Request::parse`]
/// (and by its oracle) as it says, then some of them through a session, which answers each in order (an
/// unknown op and a malformed request are both `malformed` on the wire) and goes on
/// reading.
fn reader(at: &Mutex<&'static str>) {
    for (frame, want) in reader_cases() {
        *at.lock().unwrap() = frame;
        assert_eq!(Request::parse(frame.as_bytes()), want, "{frame}");
        // What serde-json-core, the reader's oracle, reads too.
        assert_eq!(Request::parse_with_serde(frame.as_bytes()), want, "{frame}");
    }

    *at.lock().unwrap() = "registering sam through the self-test pair";
    let (mut shared, mut ledger) = server();
    *at.lock().unwrap() = "plain session, spaced and escaped frames";
    let input = concat!(
        "{ \"op\" : \"ping\" }\n",
        "{\"op\":\"pi\\\"ng\"}\n",
        "{\"op\":\"launch\", \"note\":\"say \\\"hi\\\"\"}\n",
        "{\t\"op\":\"ping\"\t}\n",
    )
    .as_bytes();
    let mut session: ServerSession =
        ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), Instant::ZERO);
    let run = drive(&mut session, &mut shared, &mut ledger, input, usize::MAX);
    assert_eq!(
        (run.consumed, answers(&run.output)),
        (
            input.len(),
            ["pong", "error malformed", "error malformed", "pong"]
                .map(String::from)
                .to_vec()
        )
    );
}

/// Each answer line's `op`, and an error's `code` after it.
fn answers(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('"').collect();
            match (fields.get(3), fields.get(5), fields.get(7)) {
                (Some(&"error"), Some(&"code"), Some(code)) => std::format!("error {code}"),
                (op, _, _) => String::from(*op.unwrap_or(&"")),
            }
        })
        .collect()
}

/// A ledger that fails past 50 requests (the cases above make a few).
struct Counted<'a> {
    ledger: &'a mut TestLedger,
    requests: usize,
}

impl Ledger for Counted<'_> {
    fn execute(
        &mut self,
        request: &crate::ledger::LedgerRequest,
        now: Instant,
    ) -> crate::ledger::LedgerReply {
        self.requests += 1;
        assert!(
            self.requests <= 50,
            "the same requests are executed again and again"
        );
        self.ledger.execute(request, now)
    }
}

/// The nonce ring's loops: issuing into an empty, a partly filled and a full ring (the
/// eviction loop runs until the ring is below its limit), after lowering the limit (several
/// evictions in one issue), and consuming the oldest, a middle and the youngest nonce (the
/// shift of the younger ones down a slot); each step also checks which nonces are still
/// outstanding.
fn nonce_ring(at: &Mutex<&'static str>) {
    use crate::replay::{Nonce, NonceRing};
    let mut rng = TestRng::new(63);
    let mut ring = NonceRing::<4>::new();
    *at.lock().unwrap() = "issuing into an empty ring";
    let first = ring.issue(&mut rng);
    assert_eq!(ring.len(), 1);
    *at.lock().unwrap() = "filling the ring and issuing past it (eviction)";
    let mut issued: Vec<Nonce> = (0..6).map(|_| ring.issue(&mut rng)).collect();
    assert_eq!(ring.len(), 4);
    assert!(ring.consume(&first).is_err(), "the oldest was evicted");
    *at.lock().unwrap() = "consuming a middle, the oldest and the youngest nonce (shift)";
    let live = issued.split_off(2);
    assert_eq!(ring.consume(&live[1]), Ok(()));
    assert_eq!(ring.consume(&live[0]), Ok(()));
    assert_eq!(ring.consume(&live[3]), Ok(()));
    assert_eq!(ring.len(), 1);
    *at.lock().unwrap() = "lowering the limit below a full ring (several evictions)";
    let more: Vec<Nonce> = (0..3).map(|_| ring.issue(&mut rng)).collect();
    ring.set_limit(1);
    let last = ring.issue(&mut rng);
    assert_eq!(ring.len(), 1);
    for evicted in [&live[2], &more[0], &more[1], &more[2]] {
        assert!(ring.consume(evicted).is_err(), "evicted by the lower limit");
    }
    assert_eq!(ring.consume(&last), Ok(()));
    assert!(ring.is_empty());
}

#[test]
fn frames_before_login_end_their_loops() {
    watched("before_login", before_login);
}

#[test]
fn output_nobody_takes_ends_the_loop() {
    watched("output_not_taken", output_not_taken);
}

#[test]
fn ledger_requests_and_held_frames_end_their_loops() {
    watched("logged_in", logged_in);
}

#[test]
fn the_sync_driver_ends() {
    watched("sync_drive", sync_drive);
}

#[test]
fn the_request_readers_loops_end() {
    watched("reader", reader);
}

#[test]
fn the_clients_input_loop_ends() {
    watched("client_input", client_input);
}

#[test]
fn the_nonce_rings_loops_end() {
    watched("nonce_ring", nonce_ring);
}
