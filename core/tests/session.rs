//! Client and server sessions driven against each other in memory with a virtual clock
//! (no sockets): login, lockout, timeouts, pre-login refusals, MITM attempts on the login,
//! and properties over arbitrary input.

use proptest::prelude::*;
use txsock_core::auth::{self, Verifier};
use txsock_core::ledger::Ledger;
use txsock_core::selftest::{Pair, TEST_ITERATIONS};
use txsock_core::session::{ClientError, ClientEvent, IntegrityError};
use txsock_core::{Amount, Duration, ErrorCode, LedgerReply, LedgerRequest, Username};

/// A pair whose client is logged in as `alice`, with `bob` registered to receive transfers.
fn alice_beside_bob(seed: u64) -> Pair {
    let mut p = Pair::new(seed);
    p.register_and_login("bob", "bob's password").unwrap();
    p.reconnect();
    p.register_and_login("alice", "alice's password").unwrap();
    p
}

fn answer(pair: &mut Pair, bytes: &[u8]) -> String {
    let mut out = vec![0u8; 1 << 16];
    let n = pair.server_receive(bytes, &mut out);
    String::from_utf8(out[..n].to_vec()).unwrap()
}

#[test]
fn transfers_before_login_are_refused() {
    let mut p = Pair::new(10);
    let frame = format!(
        "{{\"op\":\"transfer\",\"id\":\"x\",\"to\":\"bob\",\"amount\":\"1\",\"nonce\":\"{}\",\"mac\":\"{}\"}}\n",
        "0".repeat(32),
        "0".repeat(64)
    );
    assert!(answer(&mut p, frame.as_bytes()).contains("not_logged_in"));
    assert!(answer(&mut p, b"{\"op\":\"nonces\",\"count\":2}\n").contains("not_logged_in"));
    assert!(p.ledger.journal().is_empty());
}

#[test]
fn lockout_grows_refuses_the_right_password_and_a_success_resets_it() {
    let mut p = Pair::new(11);
    p.register_and_login("alice", "alice's password").unwrap();
    let policy = p.shared.config.account_backoff;
    for i in 0..policy.lock_after {
        p.reconnect();
        assert_eq!(
            p.login("alice", "wrong password"),
            Err("logged in"),
            "failure {i}"
        );
    }
    // Locked now: the right password gets the same generic failure.
    p.reconnect();
    p.client.login(&mut p.rng, "alice").unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Challenge { .. })));
    p.client.answer_with_password("alice's password").unwrap();
    assert!(matches!(
        p.step(),
        Some(ClientEvent::Refused {
            code: ErrorCode::AuthFailed,
            ..
        })
    ));
    // After the lock expires, the right password works and resets the count.
    p.advance(policy.max);
    p.reconnect();
    p.login("alice", "alice's password").unwrap();
    let user = Username::parse("alice").unwrap();
    match p
        .ledger
        .execute(&LedgerRequest::Credentials { user }, p.now)
    {
        LedgerReply::Credentials { lockout, .. } => assert_eq!(lockout.failures, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_address_is_throttled_across_accounts() {
    let mut p = Pair::new(12);
    let free = p.shared.config.address_backoff.lock_after;
    for i in 0..free {
        p.reconnect();
        let _ = p.login(&format!("victim{i}"), "guess guess");
    }
    assert!(p
        .shared
        .throttle
        .is_throttled(txsock_core::lockout::PeerAddr::ipv4([127, 0, 0, 1]), p.now));
}

#[test]
fn login_deadline_and_idle_timeout_close_the_session() {
    let mut p = Pair::new(13);
    let deadline = p.server.poll_timeout(&p.shared).unwrap();
    assert_eq!(deadline.millis(), p.shared.config.login_deadline.millis());
    p.now = deadline;
    p.server.handle_timeout(&p.shared, p.now);
    assert!(String::from_utf8_lossy(p.server.poll_transmit()).contains("\"timeout\""));
    let n = p.server.poll_transmit().len();
    p.server.advance_transmit(n);
    assert!(p.server.is_closed());

    let mut p = Pair::new(14);
    p.register_and_login("idle", "idle's password").unwrap();
    p.advance(Duration::from_millis(
        p.shared.config.idle_timeout.millis() - 1,
    ));
    p.server.handle_timeout(&p.shared, p.now);
    assert!(!p.server.is_closing());
    p.advance(Duration::from_millis(1));
    p.server.handle_timeout(&p.shared, p.now);
    assert!(p.server.is_closing());
}

#[test]
fn client_refuses_lowered_iterations_and_forged_server_signature() {
    // A MITM rewrites the challenge's iteration count.
    let mut p = Pair::new(15);
    p.register_and_login("zed", "zed's password").unwrap();
    p.reconnect();
    p.client.login(&mut p.rng, "zed").unwrap();
    let request = p.client.poll_transmit().to_vec();
    p.client.advance_transmit(request.len());
    let challenge = answer(&mut p, &request);
    let lowered = challenge.replace(
        &format!("\"iterations\":{TEST_ITERATIONS}"),
        "\"iterations\":1",
    );
    p.client.handle_input(lowered.as_bytes());
    assert_eq!(
        p.client.poll_event(),
        Some(ClientEvent::Integrity(IntegrityError::IterationsTooLow {
            offered: 1
        }))
    );

    // A server that does not hold the verifier cannot produce the signature.
    let mut p = Pair::new(16);
    p.register_and_login("zed", "zed's password").unwrap();
    p.reconnect();
    p.client.login(&mut p.rng, "zed").unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Challenge { .. })));
    p.client.answer_with_password("zed's password").unwrap();
    let proof = p.client.poll_transmit().to_vec();
    p.client.advance_transmit(proof.len());
    let welcome = answer(&mut p, &proof);
    let sig_at = welcome.find("\"signature\":\"").unwrap() + 13;
    let mut forged = welcome.into_bytes();
    forged[sig_at] = if forged[sig_at] == b'A' { b'B' } else { b'A' };
    p.client.handle_input(&forged);
    assert_eq!(
        p.client.poll_event(),
        Some(ClientEvent::Integrity(IntegrityError::BadServerSignature))
    );
}

#[test]
fn provisioned_key_logs_in_without_a_password() {
    let mut p = Pair::new(17);
    let salt = [9u8; 16];
    let salted = auth::salted_password(b"device secret!", &salt, TEST_ITERATIONS);
    let verifier = Verifier::from_salted_password(&salted, &salt, TEST_ITERATIONS);
    let user = Username::parse("sensor-1").unwrap();
    assert_eq!(
        p.ledger
            .execute(&LedgerRequest::Register { user, verifier }, p.now),
        LedgerReply::Registered(Ok(()))
    );
    p.client.login(&mut p.rng, "sensor-1").unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Challenge { .. })));
    p.client.answer_with_key(&salted).unwrap();
    assert_eq!(p.step(), Some(ClientEvent::LoggedIn));
}

#[test]
fn a_retried_transfer_id_moves_money_once() {
    let mut p = alice_beside_bob(18);
    p.client.request_nonces(2).unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Nonces { .. })));
    p.client.transfer("same", "bob", Amount(700)).unwrap();
    let first = p.step();
    p.client.transfer("same", "bob", Amount(700)).unwrap();
    let second = p.step();
    let (Some(ClientEvent::Receipt(a)), Some(ClientEvent::Receipt(b))) = (first, second) else {
        panic!()
    };
    assert_eq!((a.result, a.balance), (b.result, b.balance));
    assert_eq!(p.ledger.journal().len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A logged-in session fed any bytes never panics and never moves money without a
    /// valid MAC; the ledger stays balanced.
    #[test]
    fn arbitrary_bytes_never_move_money(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let mut p = alice_beside_bob(20);
        p.client.request_nonces(8).unwrap();
        let got_nonces = matches!(p.step(), Some(ClientEvent::Nonces { .. }));
        prop_assert!(got_nonces);
        let mut out = vec![0u8; 1 << 16];
        for chunk in &chunks {
            let _ = p.server_receive(chunk, &mut out);
        }
        prop_assert!(p.ledger.journal().is_empty());
        prop_assert_eq!(p.ledger.total(), p.ledger.minted());
    }

    /// Valid transfer frames with one byte flipped are refused and change nothing.
    #[test]
    fn tampered_transfers_are_refused(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut p = alice_beside_bob(21);
        p.client.request_nonces(1).unwrap();
        let got_nonces = matches!(p.step(), Some(ClientEvent::Nonces { .. }));
        prop_assert!(got_nonces);
        p.client.transfer("t", "bob", Amount(123)).unwrap();
        let mut frame = p.client.poll_transmit().to_vec();
        let i = position.index(frame.len() - 1); // keep the newline
        frame[i] ^= 1 << bit;
        let mut out = vec![0u8; 4096];
        let n = p.server_receive(&frame, &mut out);
        let reply = String::from_utf8_lossy(&out[..n]).into_owned();
        if reply.contains("\"receipt\"") {
            // Only a flip that leaves the same meaning (e.g. JSON whitespace) may pass.
            prop_assert_eq!(p.ledger.journal()[0].amount, Amount(123));
        } else {
            prop_assert!(p.ledger.journal().is_empty(), "{}", reply);
        }
    }
}

#[test]
fn stray_proof_in_a_logged_in_session_changes_nothing() {
    let mut p = Pair::new(30);
    p.register_and_login("amy", "amy's password").unwrap();
    let proof = format!(
        "{{\"op\":\"proof\",\"proof\":\"{}\"}}\n",
        "A".repeat(43) + "="
    );
    assert!(answer(&mut p, proof.as_bytes()).contains("unexpected_message"));
    assert!(
        p.server.user().is_some(),
        "a stray proof must not end the login"
    );
}

#[test]
fn blank_lines_are_skipped_and_small_rings_issue_only_what_they_keep() {
    let mut p = Pair::new(31);
    p.shared.config.max_nonces = 3;
    p.register_and_login("kim", "kim's password").unwrap();
    assert_eq!(
        answer(&mut p, b"\n\r\n   \n{\"op\":\"ping\"}\n"),
        "{\"op\":\"pong\"}\n"
    );
    let reply = answer(&mut p, b"{\"op\":\"nonces\",\"count\":8}\n");
    let parsed: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(
        parsed["nonces"].as_array().map(Vec::len),
        Some(3),
        "{reply}"
    );
    assert_eq!(p.server.outstanding_nonces(), 3);
}

#[test]
fn client_refuses_an_iteration_count_above_its_ceiling() {
    let mut p = Pair::new(32);
    p.register_and_login("max", "max's password").unwrap();
    p.reconnect();
    p.client.login(&mut p.rng, "max").unwrap();
    let request = p.client.poll_transmit().to_vec();
    p.client.advance_transmit(request.len());
    let challenge = answer(&mut p, &request);
    let raised = challenge.replace(
        &format!("\"iterations\":{TEST_ITERATIONS}"),
        "\"iterations\":4000000000",
    );
    p.client.handle_input(raised.as_bytes());
    assert_eq!(
        p.client.poll_event(),
        Some(ClientEvent::Integrity(IntegrityError::IterationsTooHigh {
            offered: 4_000_000_000
        }))
    );
}

#[test]
fn a_busy_client_keeps_its_nonce() {
    let mut p = alice_beside_bob(33);
    p.client.request_nonces(8).unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Nonces { .. })));
    // Fill the output without draining it until the client says it is busy.
    let mut sent = 0;
    while p
        .client
        .transfer(&format!("b{sent}"), "bob", Amount(1))
        .is_ok()
    {
        sent += 1;
    }
    assert_eq!(
        p.client.available_nonces(),
        8 - sent,
        "a refused send took a nonce"
    );
}

#[test]
fn a_zero_or_too_large_amount_is_refused_before_anything_is_sent() {
    let mut p = alice_beside_bob(34);
    p.client.request_nonces(2).unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Nonces { .. })));
    for amount in [Amount(0), Amount(Amount::MAX.minor() + 1)] {
        assert_eq!(
            p.client.transfer("t1", "bob", amount),
            Err(ClientError::InvalidAmount)
        );
    }
    assert_eq!(
        p.client.available_nonces(),
        2,
        "a refused amount took a nonce"
    );
    assert!(
        p.client.poll_transmit().is_empty(),
        "a refused amount was sent"
    );
}

#[test]
fn swapped_pipelined_transfers_are_reordered_not_forged() {
    let mut p = alice_beside_bob(30);
    p.client.request_nonces(2).unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Nonces { .. })));
    p.client.transfer("first", "bob", Amount(100)).unwrap();
    p.client.transfer("second", "bob", Amount(200)).unwrap();
    let sent = p.client.poll_transmit().to_vec();
    p.client.advance_transmit(sent.len());
    let split = sent.iter().position(|&b| b == b'\n').unwrap() + 1;
    // A man in the middle delivers the second request first.
    let mut swapped = sent[split..].to_vec();
    swapped.extend_from_slice(&sent[..split]);
    let answers = answer(&mut p, &swapped);
    assert_eq!(p.ledger.journal().len(), 2, "both genuine transfers commit");
    // The first answer is the genuine receipt of "second": the session fails on it.
    let first_answer = answers.split_inclusive('\n').next().unwrap();
    let used = p.client.handle_input(first_answer.as_bytes());
    assert_eq!(used, first_answer.len());
    assert_eq!(
        p.client.poll_event(),
        Some(ClientEvent::Integrity(IntegrityError::Reordered))
    );
}

/// A CR is allowed only as the one right before the LF (PROTOCOL.md §2): anywhere else,
/// between tokens included, the frame is `malformed`, and a line of CRs is not blank.
#[test]
fn a_carriage_return_other_than_the_line_end_is_malformed() {
    let mut p = Pair::new(33);
    assert_eq!(
        answer(&mut p, b"{\"op\":\"ping\"}\r\n \t\n"),
        "{\"op\":\"pong\"}\n"
    );
    for line in [
        &b"\r\r\n"[..],
        b"{\"op\":\"ping\"}\r\r\n",
        b"{\"op\":\r\"ping\"}\n",
        b"{\"op\":\"ping\"}\x0c\n",
    ] {
        let reply = answer(&mut p, line);
        assert!(
            reply.contains("\"code\":\"malformed\""),
            "{line:?}: {reply}"
        );
    }
}

/// RFC 8259 §7: U+0000 to U+001F never appear raw inside a string; such a frame is not JSON
/// and is `malformed`, whichever field holds it.
#[test]
fn raw_control_characters_inside_strings_are_malformed() {
    let mut p = alice_beside_bob(34);
    let transfer = |id: &str, amount: &str| {
        format!(
            "{{\"op\":\"transfer\",\"id\":\"{id}\",\"to\":\"bob\",\"amount\":\"{amount}\",\"nonce\":\"{}\",\"mac\":\"{}\"}}\n",
            "0".repeat(32),
            "0".repeat(64)
        )
    };
    for frame in [
        transfer("t\t1", "1.00"),
        transfer("t1", "1\u{0}"),
        transfer("t1\u{1f}", "1.00"),
    ] {
        let reply = answer(&mut p, frame.as_bytes());
        assert!(
            reply.contains("\"code\":\"malformed\""),
            "{frame:?}: {reply}"
        );
    }
    p.reconnect();
    let reply = answer(
        &mut p,
        b"{\"op\":\"login\",\"user\":\"al\x01ice\",\"nonce\":\"abcdefgh\"}\n",
    );
    assert!(reply.contains("\"code\":\"malformed\""), "{reply}");
}

/// A verifier with more iterations than a client runs ([`auth::MAX_ITERATIONS`]) makes an
/// account nobody can log in to: registration refuses it as `weak_verifier`.
#[test]
fn registration_refuses_an_iteration_count_above_the_client_ceiling() {
    let mut p = Pair::new(35);
    let register = |user: &str, iterations: u32| {
        format!(
            "{{\"op\":\"register\",\"user\":\"{user}\",\"salt\":\"AAECAwQFBgcICQoLDA0ODw==\",\
             \"iterations\":{iterations},\
             \"stored_key\":\"DSORcG4dNUxAHTEo5BL20ymSoLgt8C8jLZ09S+VUVlM=\",\
             \"server_key\":\"9hLrfnf7zvCtDB9drkVXkMgUsd4vpHfg5YQJDrbaZ30=\"}}\n"
        )
    };
    let over = answer(
        &mut p,
        register("over", auth::MAX_ITERATIONS + 1).as_bytes(),
    );
    assert!(over.contains("\"code\":\"weak_verifier\""), "{over}");
    let at = answer(&mut p, register("at", auth::MAX_ITERATIONS).as_bytes());
    assert_eq!(at, "{\"op\":\"registered\",\"user\":\"at\"}\n");
}

/// `offset` runs from 0 to 2^32 - 1: the largest gives an empty page, one more is
/// `malformed` (PROTOCOL.md §6).
#[test]
fn history_offset_bounds() {
    let mut p = alice_beside_bob(36);
    let last = answer(&mut p, b"{\"op\":\"history\",\"offset\":4294967295}\n");
    assert!(
        last.starts_with("{\"op\":\"history\",") && last.contains("\"entries\":[],\"more\":false"),
        "{last}"
    );
    let past = answer(&mut p, b"{\"op\":\"history\",\"offset\":4294967296}\n");
    assert!(past.contains("\"code\":\"malformed\""), "{past}");
}
