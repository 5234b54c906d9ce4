//! The drive loop's steps (`DriveLoop`), run by a bounded driver: every frame of the input is
//! consumed once and answered once, in order; ledger requests are handed out and their
//! answers reach the peer; output the stream does not take waits for the next loop; the loop
//! ends once a whole pass makes no progress.
//!
//! These pin what cargo-mutants found unpinned by the core's fast tests (issue 22). The
//! driver counts its steps and fails past a bound, so a loop that never ends fails here
//! instead of hanging the test run.

use txsock_core::selftest::Pair;
use txsock_core::session::drive::{DriveLoop, DriveStep};
use txsock_core::session::server::ServerEvent;
use txsock_core::session::ClientEvent;
use txsock_core::{Ledger, LedgerRequest};

/// What one loop did.
#[derive(Debug, Default)]
struct Run {
    consumed: usize,
    output: Vec<u8>,
    requests: Vec<LedgerRequest>,
    events: Vec<ServerEvent>,
    transmits: usize,
}

/// One loop over `input` on the pair's server, writing at most `take` bytes per transmit.
fn run(p: &mut Pair, input: &[u8], take: usize) -> Run {
    let mut steps = DriveLoop::new();
    let mut run = Run::default();
    for _ in 0..200 {
        match steps.next(&mut p.server, &mut p.shared, p.now, input) {
            DriveStep::Ledger(request) => {
                let reply = p.ledger.execute(&request, p.now);
                run.requests.push(request);
                steps.answer(&mut p.server, &mut p.shared, p.now, reply);
            }
            DriveStep::Event(event) => run.events.push(event),
            DriveStep::Transmit => {
                run.transmits += 1;
                let pending = p.server.poll_transmit();
                let n = pending.len().min(take);
                run.output.extend_from_slice(&pending[..n]);
                steps.transmitted(&mut p.server, n);
            }
            DriveStep::Done { consumed } => {
                run.consumed = consumed;
                // Done stays done.
                assert!(matches!(
                    steps.next(&mut p.server, &mut p.shared, p.now, input),
                    DriveStep::Done { consumed: c } if c == consumed
                ));
                return run;
            }
            other => panic!("unexpected step {other:?}"),
        }
    }
    panic!("the drive loop did not end within 200 steps: {run:?}");
}

fn logged_in(seed: u64) -> Pair {
    let mut p = Pair::new(seed);
    p.register_and_login("sam", "a long password").unwrap();
    while p.server.poll_event().is_some() {}
    p
}

/// Several frames in one read: each is consumed and answered once, in order, the ledger's
/// answers included; an unfinished frame at the end is kept and answered once it ends.
#[test]
fn every_whole_frame_is_consumed_and_answered_once_in_order() {
    let mut p = logged_in(41);
    let frames = b"{\"op\":\"ping\"}\n{\"op\":\"balance\"}\n{\"op\":\"ping\"}\n{\"op\":\"history\",\"offset\":0}\n";
    let mut input = frames.to_vec();
    input.extend_from_slice(b"{\"op\":\"pi");
    let run = run(&mut p, &input, usize::MAX);
    // The unfinished frame is consumed too: the session keeps it until its newline.
    assert_eq!(run.consumed, input.len());
    let text = String::from_utf8(run.output).unwrap();
    let ops: Vec<&str> = text
        .lines()
        .map(|l| l.split('"').nth(3).unwrap_or(""))
        .collect();
    assert_eq!(ops, ["pong", "balance", "pong", "history"], "{text}");
    assert_eq!(run.requests.len(), 2);
    assert!(matches!(run.requests[0], LedgerRequest::Balance { .. }));
    assert!(matches!(run.requests[1], LedgerRequest::History { .. }));
    assert!(p.server.poll_transmit().is_empty());

    // The rest of the unfinished frame, in the next loop.
    let run = self::run(&mut p, b"ng\"}\n", usize::MAX);
    assert_eq!(run.consumed, 5);
    assert_eq!(run.output, b"{\"op\":\"pong\"}\n");
}

/// The answers the ledger gives reach the peer as the client verifies them (the right
/// answer to the right request: a MAC over the balance the ledger holds).
#[test]
fn the_ledgers_answer_reaches_the_peer() {
    let mut p = logged_in(42);
    p.client.balance().unwrap();
    let request = p.client.poll_transmit().to_vec();
    p.client.advance_transmit(request.len());
    let run = run(&mut p, &request, usize::MAX);
    assert_eq!(run.consumed, request.len());
    assert_eq!(p.client.handle_input(&run.output), run.output.len());
    let balance = p.ledger.accounts()[0].balance;
    assert_eq!(p.client.poll_event(), Some(ClientEvent::Balance(balance)));
}

/// A stream that takes a few bytes at a time gets the whole answer, each byte once, and the
/// loop goes on while it takes something; one that takes nothing ends the loop with the
/// answer kept for later.
#[test]
fn output_is_offered_until_taken_and_kept_when_not() {
    let mut p = logged_in(43);
    let input = b"{\"op\":\"ping\"}\n{\"op\":\"ping\"}\n";
    let run = run(&mut p, input, 3);
    assert_eq!(run.consumed, input.len());
    assert_eq!(run.output, b"{\"op\":\"pong\"}\n{\"op\":\"pong\"}\n");
    assert!(run.transmits >= 28 / 3);

    let run = self::run(&mut p, input, 0);
    assert_eq!(run.consumed, 14, "one ping, its answer kept");
    assert!(run.output.is_empty());
    assert_eq!(p.server.poll_transmit(), b"{\"op\":\"pong\"}\n");
}

/// Events are handed out by the loop as they happen.
#[test]
fn events_are_handed_out() {
    let mut p = logged_in(44);
    let run = run(&mut p, b"{\"op\":\"logout\"}\n", usize::MAX);
    assert_eq!(run.consumed, 16);
    assert!(
        matches!(&run.events[..], [ServerEvent::LoggedOut { user }] if user.as_str() == "sam"),
        "{:?}",
        run.events
    );
    assert_eq!(run.output, b"{\"op\":\"bye\"}\n");
}
