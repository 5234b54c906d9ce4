//! The client session's bookkeeping that a driver relies on: how many nonces it has and
//! how many requests are outstanding, who it is logged in as, how a nonce request is
//! bounded, how a full nonce store stays in step with the server, and what a logout
//! forgets.
//!
//! These pin what cargo-mutants found unpinned by the core's fast tests (issue 22); each
//! asserts what the session promises, not how it keeps it.

use txsock_core::selftest::{Pair, TEST_ITERATIONS};
use txsock_core::session::client::{ClientConfig, ClientError, RequestKind};
use txsock_core::session::{ClientEvent, ClientSession};
use txsock_core::{Amount, ErrorCode};

fn logged_in(seed: u64, user: &str) -> Pair {
    let mut p = Pair::new(seed);
    p.register_and_login(user, "a long password").unwrap();
    p
}

/// Nonces in hand go up with every batch and down with every transfer; requests sent and
/// not yet answered are counted until their answer arrives.
#[test]
fn nonces_in_hand_and_outstanding_requests_are_counted() {
    let mut p = logged_in(31, "ivan");
    assert_eq!(p.client.available_nonces(), 0);
    assert_eq!(p.client.outstanding(), 0);
    p.client.request_nonces(3).unwrap();
    assert_eq!(p.client.outstanding(), 1);
    assert_eq!(p.step(), Some(ClientEvent::Nonces { available: 3 }));
    assert_eq!(p.client.available_nonces(), 3);
    assert_eq!(p.client.outstanding(), 0);
    p.client.request_nonces(2).unwrap();
    assert_eq!(p.step(), Some(ClientEvent::Nonces { available: 5 }));
    assert_eq!(p.client.available_nonces(), 5);

    p.client.balance().unwrap();
    p.client.ping().unwrap();
    assert_eq!(p.client.outstanding(), 2);
    assert!(matches!(p.step(), Some(ClientEvent::Balance(_))));
    assert_eq!(p.client.outstanding(), 1);
    assert_eq!(p.step(), Some(ClientEvent::Pong));
    assert_eq!(p.client.outstanding(), 0);
}

/// A nonce request asks for at least one and at most a batch (8), whatever the caller
/// passes.
#[test]
fn a_nonce_request_asks_for_one_to_eight() {
    for (asked, sent) in [(0u8, 1usize), (1, 1), (8, 8), (9, 8), (255, 8)] {
        let mut p = logged_in(32, "judy");
        p.client.request_nonces(asked).unwrap();
        let request = String::from_utf8(p.client.poll_transmit().to_vec()).unwrap();
        assert_eq!(
            request,
            format!("{{\"op\":\"nonces\",\"count\":{sent}}}\n"),
            "asked for {asked}"
        );
    }
}

/// A client that keeps fewer nonces than the server sends keeps the newest, as the server's
/// ring does: the oldest are the ones the server forgets first.
#[test]
fn a_full_nonce_store_keeps_the_newest() {
    let mut p = logged_in(33, "kim");
    let mut small: ClientSession<576, 2> = ClientSession::new(ClientConfig {
        min_iterations: TEST_ITERATIONS,
        ..ClientConfig::default()
    });
    // Log the small client in over a new connection to the same server.
    p.reconnect();
    small.login(&mut p.rng, "kim").unwrap();
    let answer = through_server(&mut p, &mut small);
    assert_eq!(small.handle_input(&answer), answer.len());
    assert!(matches!(
        small.poll_event(),
        Some(ClientEvent::Challenge { .. })
    ));
    small.answer_with_password("a long password").unwrap();
    let answer = through_server(&mut p, &mut small);
    assert_eq!(small.handle_input(&answer), answer.len());
    assert_eq!(small.poll_event(), Some(ClientEvent::LoggedIn));

    small.request_nonces(3).unwrap();
    let answer = through_server(&mut p, &mut small);
    assert_eq!(small.handle_input(&answer), answer.len());
    assert_eq!(
        small.poll_event(),
        Some(ClientEvent::Nonces { available: 2 })
    );
    assert_eq!(small.available_nonces(), 2);
    // The kept two are the newest, used oldest first.
    let nonces: Vec<String> = answer_nonces(&answer);
    assert_eq!(nonces.len(), 3);
    for (id, expect) in [("t-1", 1), ("t-2", 2)] {
        small.transfer(id, "kim", Amount(1)).unwrap();
        let request = String::from_utf8(small.poll_transmit().to_vec()).unwrap();
        let used = nonces.iter().position(|n| request.contains(n.as_str()));
        assert_eq!(used, Some(expect), "{id}: {nonces:?}");
        let n = small.poll_transmit().len();
        small.advance_transmit(n);
    }
    assert_eq!(small.available_nonces(), 0);
    assert_eq!(
        small.transfer("t-3", "kim", Amount(1)),
        Err(ClientError::NoNonce)
    );
}

fn answer_nonces(answer: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(answer)
        .split('"')
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(String::from)
        .collect()
}

/// `client`'s pending requests through the pair's server; the server's answer.
fn through_server<const F: usize, const N: usize, const O: usize>(
    p: &mut Pair,
    client: &mut ClientSession<F, N, O>,
) -> Vec<u8> {
    let request = client.poll_transmit().to_vec();
    client.advance_transmit(request.len());
    let mut out = vec![0u8; 4096];
    let n = p.server_receive(&request, &mut out);
    out.truncate(n);
    out
}

/// The session knows who it is logged in as, and forgets it (and its nonces) on logout.
#[test]
fn the_user_is_known_while_logged_in_and_forgotten_with_the_nonces_on_logout() {
    let mut p = Pair::new(34);
    assert_eq!(p.client.user(), None);
    p.register_and_login("lena", "a long password").unwrap();
    assert_eq!(p.client.user().map(|u| u.as_str()), Some("lena"));
    p.client.request_nonces(4).unwrap();
    assert_eq!(p.step(), Some(ClientEvent::Nonces { available: 4 }));
    p.client.logout().unwrap();
    assert_eq!(p.step(), Some(ClientEvent::LoggedOut));
    assert_eq!(p.client.user(), None);
    assert_eq!(p.client.available_nonces(), 0);
    assert!(!p.client.is_failed());
    assert_eq!(p.client.balance(), Err(ClientError::NotLoggedIn));
}

/// A refused login (wrong password) leaves the client logged out and able to try again.
#[test]
fn a_refused_proof_returns_to_logged_out_and_a_new_login_works() {
    let mut p = Pair::new(35);
    p.register_and_login("mona", "a long password").unwrap();
    p.reconnect();
    p.client.login(&mut p.rng, "mona").unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Challenge { .. })));
    p.client.answer_with_password("the wrong one").unwrap();
    assert_eq!(
        p.step(),
        Some(ClientEvent::Refused {
            request: RequestKind::Login,
            code: ErrorCode::AuthFailed,
            id: None,
        })
    );
    assert_eq!(p.client.user(), None);
    assert!(!p.client.is_failed());
    p.reconnect();
    p.login("mona", "a long password").unwrap();
    assert_eq!(p.client.user().map(|u| u.as_str()), Some("mona"));
}

/// The answer to a challenge waits while the output is not drained or the pipeline is full
/// (`Busy`), and the challenge survives that: once there is room the same answer logs in.
#[test]
fn a_busy_answer_to_a_challenge_keeps_the_challenge() {
    // Output not drained: a client whose output holds one request at a time.
    let mut p = Pair::new(36);
    p.register_and_login("nina", "a long password").unwrap();
    p.reconnect();
    let mut client: ClientSession<576, 16, 384> = ClientSession::new(ClientConfig {
        min_iterations: TEST_ITERATIONS,
        ..ClientConfig::default()
    });
    client.login(&mut p.rng, "nina").unwrap();
    let answer = through_server(&mut p, &mut client);
    assert_eq!(client.handle_input(&answer), answer.len());
    assert!(matches!(
        client.poll_event(),
        Some(ClientEvent::Challenge { .. })
    ));
    client.ping().unwrap();
    assert_eq!(
        client.answer_with_password("a long password"),
        Err(ClientError::Busy)
    );
    let answer = through_server(&mut p, &mut client);
    assert_eq!(client.handle_input(&answer), answer.len());
    assert_eq!(client.poll_event(), Some(ClientEvent::Pong));
    client.answer_with_password("a long password").unwrap();
    let answer = through_server(&mut p, &mut client);
    assert_eq!(client.handle_input(&answer), answer.len());
    assert_eq!(client.poll_event(), Some(ClientEvent::LoggedIn));

    // Pipeline full: sixteen requests outstanding, the output drained.
    let mut p = Pair::new(37);
    p.register_and_login("omar", "a long password").unwrap();
    p.reconnect();
    p.client.login(&mut p.rng, "omar").unwrap();
    assert!(matches!(p.step(), Some(ClientEvent::Challenge { .. })));
    for _ in 0..16 {
        p.client.ping().unwrap();
    }
    assert_eq!(p.client.ping(), Err(ClientError::Busy));
    let pending = p.client.poll_transmit().to_vec();
    let mut out = vec![0u8; 4096];
    let n = p.server_receive(&pending, &mut out);
    p.client.advance_transmit(pending.len());
    assert!(p.client.poll_transmit().is_empty());
    assert_eq!(
        p.client.answer_with_password("a long password"),
        Err(ClientError::Busy)
    );
    let mut used = 0;
    for _ in 0..16 {
        used += p.client.handle_input(&out[used..n]);
        assert_eq!(p.client.poll_event(), Some(ClientEvent::Pong));
    }
    assert_eq!(used, n);
    p.client.answer_with_password("a long password").unwrap();
    assert_eq!(p.step(), Some(ClientEvent::LoggedIn));
}

/// A transfer's amount is refused before anything is sent (and no nonce is taken) when it is
/// zero or above `Amount::MAX`; one unit and `Amount::MAX` itself are sent.
#[test]
fn transfer_amounts_are_checked_at_both_ends() {
    let mut p = logged_in(38, "pia");
    p.client.request_nonces(2).unwrap();
    assert_eq!(p.step(), Some(ClientEvent::Nonces { available: 2 }));
    for amount in [Amount(0), Amount(Amount::MAX.minor() + 1), Amount(u64::MAX)] {
        assert_eq!(
            p.client.transfer("t-1", "pia", amount),
            Err(ClientError::InvalidAmount),
            "{amount:?}"
        );
        assert_eq!(p.client.available_nonces(), 2);
        assert!(p.client.poll_transmit().is_empty());
    }
    for (id, amount) in [("t-2", Amount(1)), ("t-3", Amount::MAX)] {
        p.client.transfer(id, "pia", amount).unwrap();
        let sent = String::from_utf8(p.client.poll_transmit().to_vec()).unwrap();
        assert!(sent.contains(&format!("\"id\":\"{id}\"")), "{sent}");
        let n = sent.len();
        p.client.advance_transmit(n);
    }
    assert_eq!(p.client.available_nonces(), 0);
}

/// A client whose output holds one request at a time, logged in over `p`'s server as the
/// pair's user `user` (password "a long password"), with two nonces.
fn small_logged_in(p: &mut Pair, user: &str) -> ClientSession<576, 16, 384> {
    p.reconnect();
    let mut client: ClientSession<576, 16, 384> = ClientSession::new(ClientConfig {
        min_iterations: TEST_ITERATIONS,
        ..ClientConfig::default()
    });
    client.login(&mut p.rng, user).unwrap();
    let answer = through_server(p, &mut client);
    assert_eq!(client.handle_input(&answer), answer.len());
    assert!(matches!(
        client.poll_event(),
        Some(ClientEvent::Challenge { .. })
    ));
    client.answer_with_password("a long password").unwrap();
    let answer = through_server(p, &mut client);
    assert_eq!(client.handle_input(&answer), answer.len());
    assert_eq!(client.poll_event(), Some(ClientEvent::LoggedIn));
    client.request_nonces(2).unwrap();
    let answer = through_server(p, &mut client);
    assert_eq!(client.handle_input(&answer), answer.len());
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::Nonces { available: 2 })
    );
    client
}

/// A transfer is refused as `Busy`, keeping its nonce, while the output is not drained or
/// the pipeline is full; with room it is sent.
#[test]
fn a_busy_transfer_keeps_its_nonce() {
    let mut p = logged_in(39, "quinn");
    let mut client = small_logged_in(&mut p, "quinn");
    client.ping().unwrap();
    assert_eq!(
        client.transfer("t-1", "quinn", Amount(1)),
        Err(ClientError::Busy)
    );
    assert_eq!(client.available_nonces(), 2);
    let answer = through_server(&mut p, &mut client);
    assert_eq!(client.handle_input(&answer), answer.len());
    assert_eq!(client.poll_event(), Some(ClientEvent::Pong));
    client.transfer("t-1", "quinn", Amount(1)).unwrap();
    assert_eq!(client.available_nonces(), 1);
    let answer = through_server(&mut p, &mut client);
    assert_eq!(client.handle_input(&answer), answer.len());
    assert!(matches!(client.poll_event(), Some(ClientEvent::Receipt(_))));

    // Sixteen requests outstanding, the output drained.
    let mut p = logged_in(40, "rita");
    p.client.request_nonces(2).unwrap();
    assert_eq!(p.step(), Some(ClientEvent::Nonces { available: 2 }));
    for _ in 0..16 {
        p.client.ping().unwrap();
    }
    let n = p.client.poll_transmit().len();
    p.client.advance_transmit(n);
    assert_eq!(
        p.client.transfer("t-1", "rita", Amount(1)),
        Err(ClientError::Busy)
    );
    assert_eq!(p.client.available_nonces(), 2);
}

/// A welcome is accepted only with the server signature that proves the server holds the
/// verifier: a well-formed signature of 32 other bytes, or a short one, fails the session
/// with `BadServerSignature` and logs nobody in.
#[test]
fn only_the_genuine_server_signature_logs_in() {
    for forge in [
        |sig: &str| {
            let mut s = sig.as_bytes().to_vec();
            s[0] = if s[0] == b'A' { b'B' } else { b'A' };
            String::from_utf8(s).unwrap()
        },
        |sig: &str| sig[..40].to_string() + "==",
    ] {
        let mut p = logged_in(45, "tess");
        p.reconnect();
        p.client.login(&mut p.rng, "tess").unwrap();
        assert!(matches!(p.step(), Some(ClientEvent::Challenge { .. })));
        p.client.answer_with_password("a long password").unwrap();
        let proof = p.client.poll_transmit().to_vec();
        p.client.advance_transmit(proof.len());
        let mut out = vec![0u8; 1024];
        let n = p.server_receive(&proof, &mut out);
        let welcome = String::from_utf8(out[..n].to_vec()).unwrap();
        let at = welcome.find("\"signature\":\"").unwrap() + 13;
        let sig = &welcome[at..at + 44];
        let forged = welcome.replace(sig, &forge(sig));
        assert_ne!(forged, welcome);
        assert_eq!(p.client.handle_input(forged.as_bytes()), forged.len());
        assert_eq!(
            p.client.poll_event(),
            Some(ClientEvent::Integrity(
                txsock_core::session::client::IntegrityError::BadServerSignature
            ))
        );
        assert_eq!(p.client.user(), None);
        assert!(p.client.is_failed());
    }
}
