//! Pipelining is invisible on the wire: a server session that lets up to P requests wait
//! on the ledger at once answers any conversation byte for byte as a session that takes one
//! request at a time, and leaves the same ledger, however the input is cut into reads and
//! however the ledger's answers are bunched. That is the contract of PROTOCOL.md §5
//! (exactly once per (sender, id), refusals final, answers in request order) carried over
//! from the one-at-a-time session, whose own properties the other tests check.

use proptest::prelude::*;
use std::collections::VecDeque;
use txsock_core::ledger::Ledger;
use txsock_core::lockout::PeerAddr;
use txsock_core::selftest::{Pair, TestLedger, TestRng, TEST_ITERATIONS};
use txsock_core::session::{
    NoPipeline, PipelineQueue, PipelinedRequest, ServerConfig, ServerSession, ServerShared,
};
use txsock_core::{Amount, Instant, LedgerRequest};

/// What the recorded client sends after logging in.
#[derive(Debug, Clone)]
enum Op {
    /// A genuine transfer: id from a small set (so some repeat), recipient by index (bob,
    /// alice herself, nobody), amount in minor units (some more than the balance).
    Transfer(u8, u8, u64),
    Balance,
    History(u32),
    Nonces(u8),
    Ping,
    /// A frame the server refuses: garbage, a forged transfer, an over-long line, a stray
    /// login.
    Junk(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, 0u8..3, 1u64..6_000).prop_map(|(i, t, a)| Op::Transfer(i, t, a)),
        1 => Just(Op::Balance),
        1 => (0u32..3).prop_map(Op::History),
        1 => (1u8..4).prop_map(Op::Nonces),
        1 => Just(Op::Ping),
        1 => (0u8..4).prop_map(Op::Junk),
    ]
}

fn junk(kind: u8) -> Vec<u8> {
    match kind {
        0 => b"not json\n".to_vec(),
        1 => format!(
            "{{\"op\":\"transfer\",\"id\":\"f\",\"to\":\"bob\",\"amount\":\"1.00\",\"nonce\":\"{}\",\"mac\":\"{}\"}}\n",
            "0".repeat(32),
            "0".repeat(64)
        )
        .into_bytes(),
        2 => {
            let mut long = vec![b' '; 700];
            long.push(b'\n');
            long
        }
        _ => b"{\"op\":\"login\",\"user\":\"alice\",\"nonce\":\"abcdefgh\"}\n".to_vec(),
    }
}

/// Records what a client sends over two connections (bob registers; alice registers, logs
/// in and runs `ops`), driving a one-at-a-time server so that the client sees real answers.
fn record(seed: u64, ops: &[Op]) -> [Vec<u8>; 2] {
    let mut p = Pair::new(seed);
    let mut conns = [Vec::new(), Vec::new()];
    fn step(p: &mut Pair, rec: &mut Vec<u8>) {
        rec.extend_from_slice(p.client.poll_transmit());
        let _ = p.step();
    }
    for (conn, user) in ["bob", "alice"].into_iter().enumerate() {
        let rec = &mut conns[conn];
        p.client
            .register(&mut p.rng, user, "a password", TEST_ITERATIONS)
            .unwrap();
        step(&mut p, rec);
        p.client.login(&mut p.rng, user).unwrap();
        step(&mut p, rec);
        p.client.answer_with_password("a password").unwrap();
        step(&mut p, rec);
        if conn == 0 {
            p.reconnect();
        }
    }
    let rec = &mut conns[1];
    p.client.request_nonces(16).unwrap();
    step(&mut p, rec);
    let mut out = vec![0u8; 1 << 16];
    for (n, op) in ops.iter().enumerate() {
        let sent = match op {
            Op::Transfer(id, to, amount) => {
                let to = ["bob", "alice", "nobody"][usize::from(*to)];
                p.client
                    .transfer(&format!("t{id}"), to, Amount(*amount))
                    .is_ok()
            }
            Op::Balance => p.client.balance().is_ok(),
            Op::History(offset) => p.client.history(*offset).is_ok(),
            Op::Nonces(count) => p.client.request_nonces(*count).is_ok(),
            Op::Ping => p.client.ping().is_ok(),
            Op::Junk(kind) => {
                // Straight to the server, past the client, which never sees the answer.
                let bytes = junk(*kind);
                rec.extend_from_slice(&bytes);
                p.server_receive(&bytes, &mut out);
                false
            }
        };
        // Let requests pile up in the client now and then, as a pipelining client does.
        if sent && n % 3 != 2 {
            step(&mut p, rec);
        }
    }
    step(&mut p, rec);
    conns
}

/// Plays `conns` into a fresh server whose sessions keep pipelined requests in `Q`, cutting
/// the input at `cuts` and handing the ledger's answers back `bunches` at a time, and
/// returns what the second connection's session wrote and the ledger it left.
fn replay<Q: PipelineQueue + Default>(
    seed: u64,
    conns: &[Vec<u8>; 2],
    max_pipeline: usize,
    cuts: &[usize],
    bunches: &[usize],
) -> (Vec<u8>, TestLedger) {
    let config = ServerConfig {
        min_iterations: TEST_ITERATIONS,
        unknown_user_iterations: TEST_ITERATIONS,
        max_pipeline,
        ..ServerConfig::default()
    };
    let mut shared: ServerShared<TestRng, 8> =
        ServerShared::new(config, TestRng::new(seed), [7; 32]);
    let mut ledger = TestLedger::new(Amount(10_000));
    let now = Instant::ZERO;
    let mut written = Vec::new();
    let mut bunches = bunches.iter().copied().cycle();
    for (conn, bytes) in conns.iter().enumerate() {
        let mut session: ServerSession<512, 16, 576, Q> =
            ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), now);
        let mut chunks: VecDeque<&[u8]> = VecDeque::new();
        let mut at = 0;
        for &cut in cuts {
            let cut = at + cut % (bytes.len() - at + 1);
            chunks.push_back(&bytes[at..cut]);
            at = cut;
        }
        chunks.push_back(&bytes[at..]);
        let mut input: Vec<u8> = Vec::new();
        let mut in_flight: VecDeque<LedgerRequest> = VecDeque::new();
        let mut out = Vec::new();
        loop {
            let mut progressed = false;
            if input.is_empty() {
                if let Some(chunk) = chunks.pop_front() {
                    input.extend_from_slice(chunk);
                    progressed = true;
                }
            }
            let used = session.handle_input(&mut shared, now, &input);
            input.drain(..used);
            progressed |= used > 0;
            while let Some(request) = session.poll_ledger() {
                in_flight.push_back(request);
                progressed = true;
            }
            // The ledger answers a bunch at once, in order, or nothing this turn (unless
            // nothing else could move).
            let mut bunch = bunches.next().unwrap_or(1).min(in_flight.len());
            if bunch == 0 && !progressed {
                bunch = in_flight.len().min(1);
            }
            for _ in 0..bunch {
                if !session.has_room_for_reply() {
                    out.extend_from_slice(session.poll_transmit());
                    let n = session.poll_transmit().len();
                    session.advance_transmit(n);
                }
                let request = in_flight.pop_front().unwrap();
                let reply = ledger.execute(&request, now);
                session.handle_ledger(&mut shared, now, reply);
                progressed = true;
            }
            while session.poll_event().is_some() {}
            let n = session.poll_transmit().len();
            out.extend_from_slice(session.poll_transmit());
            session.advance_transmit(n);
            progressed |= n > 0;
            if !progressed {
                break;
            }
        }
        assert!(in_flight.is_empty(), "every request was answered");
        if conn == 1 {
            written = out;
        }
    }
    (written, ledger)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The same conversation through a pipelined session and a one-at-a-time session: the
    /// same bytes out, in the same order, and the same journal, however the input is cut
    /// and the ledger's answers bunched; money is conserved.
    #[test]
    fn pipelining_changes_nothing_on_the_wire(
        seed in 0u64..4,
        ops in proptest::collection::vec(op(), 1..24),
        max_pipeline in 1usize..=8,
        cuts in proptest::collection::vec(0usize..400, 0..12),
        bunches in proptest::collection::vec(0usize..4, 1..8),
    ) {
        let conns = record(seed, &ops);
        let (one, one_ledger) = replay::<NoPipeline>(seed, &conns, 8, &[], &[1]);
        let (many, many_ledger) = replay::<heapless::Deque<PipelinedRequest, 7>>(
            seed, &conns, max_pipeline, &cuts, &bunches,
        );
        prop_assert_eq!(String::from_utf8_lossy(&many), String::from_utf8_lossy(&one));
        prop_assert_eq!(many_ledger.journal(), one_ledger.journal());
        prop_assert_eq!(many_ledger.total(), many_ledger.minted());
    }
}

/// Transfers sent back to back all reach the ledger before the first is answered (the
/// pipeline is used), and a ping behind them is answered after their receipts.
#[test]
fn pipelined_transfers_wait_together_and_a_ping_waits_behind_them() {
    let mut ops: Vec<Op> = (0..5).map(|i| Op::Transfer(i, 0, 100)).collect();
    ops.push(Op::Ping);
    let conns = record(7, &ops);
    let config = ServerConfig {
        min_iterations: TEST_ITERATIONS,
        unknown_user_iterations: TEST_ITERATIONS,
        ..ServerConfig::default()
    };
    let mut shared: ServerShared<TestRng, 8> = ServerShared::new(config, TestRng::new(7), [7; 32]);
    let mut ledger = TestLedger::new(Amount(10_000));
    let now = Instant::ZERO;
    let mut first: ServerSession<512, 16, 576> =
        ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), now);
    let mut sink = |out: &[u8]| Ok::<_, ()>(out.len());
    first
        .drive(&mut shared, &mut ledger, now, &conns[0], &mut sink, |_| {})
        .unwrap();
    let mut session: ServerSession<512, 16, 576, heapless::Deque<PipelinedRequest, 7>> =
        ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), now);
    // Log in and take the nonces, answering the ledger at once.
    let transfers_at = conns[1]
        .windows(14)
        .position(|w| w == b"\"op\":\"transfer")
        .map(|i| conns[1][..i].iter().rposition(|&b| b == b'\n').unwrap() + 1)
        .unwrap();
    let mut rest = &conns[1][..transfers_at];
    let mut out = Vec::new();
    while !rest.is_empty() || session.wants_ledger() {
        let used = session.handle_input(&mut shared, now, rest);
        rest = &rest[used..];
        if let Some(request) = session.poll_ledger() {
            let reply = ledger.execute(&request, now);
            session.handle_ledger(&mut shared, now, reply);
        }
        out.extend_from_slice(session.poll_transmit());
        let n = session.poll_transmit().len();
        session.advance_transmit(n);
    }
    assert!(String::from_utf8_lossy(&out).contains("\"op\":\"nonces\""));
    // Now the five transfers and the ping in one read.
    let tail = &conns[1][transfers_at..];
    let used = session.handle_input(&mut shared, now, tail);
    assert_eq!(session.waiting_on_ledger(), 5);
    assert!(session.poll_transmit().is_empty(), "the pong waits");
    let mut requests = Vec::new();
    while let Some(r) = session.poll_ledger() {
        requests.push(r);
    }
    assert_eq!(requests.len(), 5, "all five reach the ledger together");
    let mut answers = String::new();
    for request in &requests {
        let reply = ledger.execute(request, now);
        session.handle_ledger(&mut shared, now, reply);
        answers.push_str(&String::from_utf8_lossy(session.poll_transmit()));
        let n = session.poll_transmit().len();
        session.advance_transmit(n);
    }
    let used_rest = session.handle_input(&mut shared, now, &tail[used..]);
    assert_eq!(used + used_rest, tail.len());
    answers.push_str(&String::from_utf8_lossy(session.poll_transmit()));
    let lines: Vec<&str> = answers.lines().collect();
    assert_eq!(lines.len(), 6, "{answers}");
    for (i, line) in lines[..5].iter().enumerate() {
        assert!(line.contains(&format!("\"seq\":{}", i + 1)), "{line}");
        assert!(line.contains(&format!("\"id\":\"t{i}\"")), "{line}");
    }
    assert_eq!(lines[5], "{\"op\":\"pong\"}");
    assert_eq!(ledger.journal().len(), 5);
}
