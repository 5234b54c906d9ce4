//! The server session's login and abuse policies, each at its boundary, with the server's
//! events in hand: a throttled address is refused even with the right password, the failure
//! that starts an account lock (and only that one) is reported, an unavailable ledger is an
//! `internal` error that moves nothing, the bad-frame limit closes on the first frame past
//! it, and registration refuses verifiers just outside its bounds and takes those on them.
//!
//! These pin what cargo-mutants found unpinned (issue 22); each asserts the policy, not how
//! the session implements it.

use txsock_core::auth::{self, Verifier};
use txsock_core::ledger::MemLedger;
use txsock_core::lockout::{Backoff, PeerAddr};
use txsock_core::selftest::{TestRng, TEST_ITERATIONS};
use txsock_core::session::client::ClientConfig;
use txsock_core::session::server::{LoginFailure, ServerConfig, ServerEvent, ServerShared};
use txsock_core::session::{ClientEvent, ClientSession, ServerSession};
use txsock_core::{Amount, Duration, ErrorCode, Instant, LedgerReply, Username};

const PEER: PeerAddr = PeerAddr::ipv4([192, 0, 2, 7]);
const PASSWORD: &str = "the right password";

/// One server (shared state and ledger) and the current connection to it, with every server
/// event kept.
struct Rig {
    shared: ServerShared<TestRng, 4>,
    ledger: MemLedger<4, 8>,
    server: ServerSession,
    client: ClientSession,
    rng: TestRng,
    now: Instant,
    events: Vec<ServerEvent>,
}

impl Rig {
    fn new(config: ServerConfig) -> Rig {
        Rig {
            shared: ServerShared::new(config, TestRng::new(1), [9; 32]),
            ledger: MemLedger::new(Amount(10_000)),
            server: ServerSession::new(PEER, Instant::ZERO),
            client: client(),
            rng: TestRng::new(2),
            now: Instant::from_millis(1_000),
            events: Vec::new(),
        }
    }

    /// A new connection from the same address.
    fn reconnect(&mut self) {
        self.server = ServerSession::new(PEER, self.now);
        self.client = client();
    }

    /// `bytes` through the server (ledger answered at once); returns its output.
    fn serve(&mut self, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        let events = &mut self.events;
        let transmit = |b: &[u8]| {
            out.extend_from_slice(b);
            // Far more than any answer here: a server offering the same bytes again and
            // again fails the test instead of hanging it.
            assert!(out.len() < 1 << 20, "the server keeps offering output");
            Ok::<_, core::convert::Infallible>(b.len())
        };
        let Ok(used) = self.server.drive(
            &mut self.shared,
            &mut self.ledger,
            self.now,
            bytes,
            transmit,
            |e| events.push(e),
        );
        assert_eq!(used, bytes.len(), "the server took the whole request");
        String::from_utf8(out).unwrap()
    }

    /// The client's pending request through the server and the answer back; the client's
    /// event.
    fn round(&mut self) -> ClientEvent {
        let request = self.client.poll_transmit().to_vec();
        self.client.advance_transmit(request.len());
        let answer = self.serve(&request);
        assert_eq!(self.client.handle_input(answer.as_bytes()), answer.len());
        self.client.poll_event().expect("an answer")
    }

    fn register(&mut self, user: &str) {
        self.client
            .register(&mut self.rng, user, PASSWORD, TEST_ITERATIONS)
            .unwrap();
        assert_eq!(self.round(), ClientEvent::Registered);
    }

    /// A whole login on a new connection; the client's last event.
    fn login(&mut self, user: &str, password: &str) -> ClientEvent {
        self.reconnect();
        self.client.login(&mut self.rng, user).unwrap();
        assert!(matches!(self.round(), ClientEvent::Challenge { .. }));
        self.client.answer_with_password(password).unwrap();
        self.round()
    }

    fn take_events(&mut self) -> Vec<ServerEvent> {
        core::mem::take(&mut self.events)
    }
}

fn client() -> ClientSession {
    ClientSession::new(ClientConfig {
        min_iterations: TEST_ITERATIONS,
        ..ClientConfig::default()
    })
}

fn config() -> ServerConfig {
    ServerConfig {
        min_iterations: TEST_ITERATIONS,
        unknown_user_iterations: TEST_ITERATIONS,
        ..ServerConfig::DEFAULT
    }
}

fn refused() -> ClientEvent {
    ClientEvent::Refused {
        request: txsock_core::session::client::RequestKind::Login,
        code: ErrorCode::AuthFailed,
        id: None,
    }
}

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

fn failed(name: &str, reason: LoginFailure) -> ServerEvent {
    ServerEvent::LoginFailed {
        user: user(name),
        reason,
    }
}

/// While its address is throttled, even the right password gets the generic failure, and the
/// server logs why; once the throttle runs out the same password logs in.
#[test]
fn a_throttled_address_is_refused_even_with_the_right_password() {
    let throttle = Duration::from_secs(60);
    let mut rig = Rig::new(ServerConfig {
        address_backoff: Backoff {
            lock_after: 1,
            base: throttle,
            max: throttle,
            forget_after: Duration::from_secs(3600),
        },
        ..config()
    });
    rig.register("alice");
    assert_eq!(rig.login("alice", "a wrong password"), refused());
    assert!(rig.take_events().contains(&ServerEvent::AddressThrottled));

    assert_eq!(rig.login("alice", PASSWORD), refused());
    let events = rig.take_events();
    assert!(
        events.contains(&failed("alice", LoginFailure::AddressThrottled)),
        "{events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, ServerEvent::LoggedIn { .. })));

    rig.now = rig.now + throttle;
    assert_eq!(rig.login("alice", PASSWORD), ClientEvent::LoggedIn);
}

/// A successful login resets the account's count but not the address's (PROTOCOL.md §15):
/// otherwise an attacker holding one account of its own could log in to it between guesses
/// and spray passwords over other accounts without ever being throttled.
#[test]
fn a_successful_login_does_not_reset_the_address_count() {
    let throttle = Duration::from_secs(60);
    let mut rig = Rig::new(ServerConfig {
        address_backoff: Backoff {
            lock_after: 3,
            base: throttle,
            max: throttle,
            forget_after: Duration::from_secs(3600),
        },
        ..config()
    });
    rig.register("alice");
    rig.register("mallory");
    for _ in 0..2 {
        assert_eq!(rig.login("alice", "a wrong password"), refused());
    }
    assert_eq!(rig.login("mallory", PASSWORD), ClientEvent::LoggedIn);
    rig.reconnect();
    let _ = rig.take_events();
    // The third failure from the address throttles it, the success in between notwithstanding.
    assert_eq!(rig.login("alice", "a wrong password"), refused());
    assert!(rig.take_events().contains(&ServerEvent::AddressThrottled));
    assert_eq!(rig.login("mallory", PASSWORD), refused());
}

/// The failure that locks an account is reported once, with the lock's end; the failures
/// before it and an unknown user's failures report no lock.
#[test]
fn only_the_failure_that_locks_an_account_reports_the_lock() {
    let lock = Duration::from_secs(30);
    let policy = Backoff {
        lock_after: 3,
        base: lock,
        max: lock,
        forget_after: Duration::from_secs(3600),
    };
    let mut rig = Rig::new(ServerConfig {
        account_backoff: policy,
        ..config()
    });
    rig.register("alice");
    rig.take_events();
    let locked = |events: &[ServerEvent]| {
        events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::AccountLocked { user, until } => Some((user.clone(), *until)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    for _ in 1..policy.lock_after {
        rig.now = rig.now + Duration::from_millis(10);
        assert_eq!(rig.login("alice", "a wrong password"), refused());
        let events = rig.take_events();
        assert!(locked(&events).is_empty(), "{events:?}");
        assert!(events.contains(&failed("alice", LoginFailure::WrongPassword)));
    }
    rig.now = rig.now + Duration::from_millis(10);
    let at = rig.now;
    assert_eq!(rig.login("alice", "a wrong password"), refused());
    assert_eq!(locked(&rig.take_events()), [(user("alice"), at + lock)]);

    // Locked: the right password is refused without touching the ledger's count.
    assert_eq!(rig.login("alice", PASSWORD), refused());
    let events = rig.take_events();
    assert!(locked(&events).is_empty(), "{events:?}");
    assert!(events.contains(&failed("alice", LoginFailure::AccountLocked)));

    for _ in 0..=policy.lock_after {
        assert_eq!(rig.login("nobody", PASSWORD), refused());
        let events = rig.take_events();
        assert!(locked(&events).is_empty(), "{events:?}");
        assert!(events.contains(&failed("nobody", LoginFailure::UnknownUser)));
    }
}

/// A ledger that cannot answer gets `internal` for the request, moves nothing, and leaves
/// the session usable.
#[test]
fn an_unavailable_ledger_is_an_internal_error_that_changes_nothing() {
    let mut rig = Rig::new(config());
    rig.client
        .register(&mut rig.rng, "alice", PASSWORD, TEST_ITERATIONS)
        .unwrap();
    let request = rig.client.poll_transmit().to_vec();
    rig.client.advance_transmit(request.len());
    assert_eq!(
        rig.server.handle_input(&mut rig.shared, rig.now, &request),
        request.len()
    );
    assert!(rig.server.poll_ledger().is_some());
    rig.server
        .handle_ledger(&mut rig.shared, rig.now, LedgerReply::Unavailable);
    let answer = String::from_utf8(rig.server.poll_transmit().to_vec()).unwrap();
    assert!(answer.contains("\"code\":\"internal\""), "{answer}");
    assert!(rig.ledger.accounts().is_empty());
    assert!(!rig.server.is_closing());
    rig.server.advance_transmit(answer.len());
    assert!(rig.server.wants_input());
    assert_eq!(rig.server.poll_ledger(), None, "nothing left to ask");
}

/// `max_bad_frames` invalid frames are each answered and tolerated; the next one closes the
/// connection with `too_many_bad_frames`.
#[test]
fn the_bad_frame_limit_closes_on_the_first_frame_past_it() {
    for limit in [0u16, 1, 3] {
        let mut rig = Rig::new(ServerConfig {
            max_bad_frames: limit,
            ..config()
        });
        for i in 0..limit {
            let answer = rig.serve(b"{\"op\":\"nonsense\"}\n");
            assert!(answer.contains("\"op\":\"error\""), "{answer}");
            assert!(
                !rig.server.is_closing(),
                "closed after {} of {limit}",
                i + 1
            );
        }
        let answer = rig.serve(b"{\"op\":\"nonsense\"}\n");
        assert!(answer.contains("too_many_bad_frames"), "{answer}");
        assert!(rig.server.is_closed());
    }
}

/// A registration's verifier is taken exactly within the server's bounds: iterations from
/// `min_iterations` to [`auth::MAX_ITERATIONS`], a salt of at least [`auth::MIN_SALT`] bytes.
#[test]
fn registration_takes_verifiers_on_its_bounds_and_refuses_them_just_outside() {
    let min = 1_000;
    let verifier = |iterations, salt_len| Verifier {
        salt: heapless::Vec::from_slice(&[5u8; auth::MAX_SALT][..salt_len]).unwrap(),
        iterations,
        stored_key: [1; 32],
        server_key: [2; 32],
    };
    let cases = [
        (verifier(min, auth::MIN_SALT), true),
        (verifier(auth::MAX_ITERATIONS, auth::MAX_SALT), true),
        (verifier(min - 1, auth::MAX_SALT), false),
        (verifier(auth::MAX_ITERATIONS + 1, auth::MAX_SALT), false),
        (verifier(min, auth::MIN_SALT - 1), false),
    ];
    for (i, (verifier, taken)) in cases.into_iter().enumerate() {
        let mut rig = Rig::new(ServerConfig {
            min_iterations: min,
            ..config()
        });
        let name = user(&format!("user{i}"));
        rig.client.register_with_verifier(&name, &verifier).unwrap();
        let request = rig.client.poll_transmit().to_vec();
        let answer = rig.serve(&request);
        let registered = rig.ledger.accounts().iter().any(|a| a.user == name);
        assert_eq!(registered, taken, "case {i}: {answer}");
        if !taken {
            assert!(answer.contains("weak_verifier"), "case {i}: {answer}");
        }
    }
}

/// A wrong password is counted against the account in the ledger (what the lock grows
/// from), at the time it happened.
#[test]
fn a_wrong_password_is_counted_in_the_ledger() {
    let mut rig = Rig::new(config());
    rig.register("alice");
    assert_eq!(rig.login("alice", "a wrong password"), refused());
    let lockout = rig
        .ledger
        .accounts()
        .iter()
        .find(|a| a.user == user("alice"))
        .unwrap()
        .lockout;
    assert_eq!(lockout.failures, 1);
    assert_eq!(lockout.last_failure, rig.now);
}

/// Before login, every request that needs a session is refused with `not_logged_in` and
/// changes nothing (no nonce issued, no money moved); a proof without a challenge is
/// `unexpected_message`.
#[test]
fn requests_needing_a_session_are_refused_before_login() {
    let mut rig = Rig::new(config());
    rig.register("alice");
    rig.register("bob");
    let transfer = format!(
        "{{\"op\":\"transfer\",\"id\":\"t-1\",\"to\":\"bob\",\"amount\":\"1.00\",\"nonce\":\"{}\",\"mac\":\"{}\"}}\n",
        "0".repeat(32),
        "0".repeat(64)
    );
    let requests = [
        "{\"op\":\"nonces\",\"count\":2}\n",
        transfer.as_str(),
        "{\"op\":\"balance\"}\n",
        "{\"op\":\"history\",\"offset\":0}\n",
        "{\"op\":\"logout\"}\n",
    ];
    for request in requests {
        let answer = rig.serve(request.as_bytes());
        assert!(
            answer.contains("\"code\":\"not_logged_in\""),
            "{request}: {answer}"
        );
        assert_eq!(rig.server.outstanding_nonces(), 0, "{request}");
        assert!(!rig.server.is_closing(), "{request}");
    }
    let proof = format!("{{\"op\":\"proof\",\"proof\":\"{}=\"}}\n", "A".repeat(43));
    let answer = rig.serve(proof.as_bytes());
    assert!(
        answer.contains("\"code\":\"unexpected_message\""),
        "{answer}"
    );
    assert!(rig.ledger.journal().is_empty());
    assert!(rig.server.user().is_none());
}

/// A logged-in session refuses another login or registration with `already_logged_in` and
/// stays logged in as the same user; a stray proof changes nothing either.
#[test]
fn a_logged_in_session_stays_who_it_is() {
    let mut rig = Rig::new(config());
    rig.register("bob");
    rig.register("alice");
    assert_eq!(rig.login("alice", PASSWORD), ClientEvent::LoggedIn);
    let alice = Some(user("alice"));
    for request in [
        "{\"op\":\"login\",\"user\":\"bob\",\"nonce\":\"abcdefghijklmnop\"}\n".to_string(),
        format!(
            "{{\"op\":\"register\",\"user\":\"carol\",\"salt\":\"{salt}\",\"iterations\":{TEST_ITERATIONS},\"stored_key\":\"{key}\",\"server_key\":\"{key}\"}}\n",
            salt = "AAAAAAAAAAAAAAAAAAAAAA==",
            key = format!("{}=", "A".repeat(43)),
        ),
    ] {
        let answer = rig.serve(request.as_bytes());
        assert!(answer.contains("\"code\":\"already_logged_in\""), "{request}: {answer}");
        assert_eq!(rig.server.user(), alice.as_ref(), "{request}");
    }
    let proof = format!("{{\"op\":\"proof\",\"proof\":\"{}=\"}}\n", "A".repeat(43));
    let answer = rig.serve(proof.as_bytes());
    assert!(
        answer.contains("\"code\":\"unexpected_message\""),
        "{answer}"
    );
    assert_eq!(rig.server.user(), alice.as_ref());
    assert_eq!(rig.ledger.accounts().len(), 2, "nobody registered");
}
