//! The adversarial suite: a real `txsock serve` on loopback attacked frame by frame.
//!
//! Every case asserts the exact answer (error code, or the `result` of an authenticated
//! receipt), that the ledger changed not at all or exactly once, the audit-log line the
//! server wrote, and that an honest client connected at the same time keeps working.
//! Transfers are built with the session keys in hand ([`RawSession`]), so a test can send a
//! genuine frame, a tampered copy of it, and the genuine frame again on one session.

use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use txsock_core::blocking::BlockingError;
use txsock_core::encoding::{hex_decode, hex_encode};
use txsock_core::mac::{self, MacInput};
use txsock_core::session::{ClientError, ClientEvent, IntegrityError};
use txsock_core::{Amount, ErrorCode};
use txsock_e2e::*;

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A server whose new accounts start with 100.00.
fn start(extra: &[&str]) -> Server {
    Server::start(&[&["--opening-balance", "100.00"], extra].concat())
}

fn money(s: &str) -> Amount {
    Amount::parse_balance(s).unwrap()
}

/// A user's balance from `txsock user list` (touches no session and no lockout state).
fn balance_of(server: &Server, user: &str) -> Amount {
    let out = server.admin(&["user", "list"], "");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(user))
        .unwrap_or_else(|| panic!("{user} not listed:\n{text}"));
    money(line.split_whitespace().nth(1).unwrap())
}

/// The `state` column of `txsock user list`, by user.
fn states(server: &Server) -> std::collections::HashMap<String, String> {
    let out = server.admin(&["user", "list"], "");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let user = words.next()?.to_string();
            let _balance = words.next()?;
            Some((user, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The `state` column of `txsock user list` for `user`.
fn state_of(server: &Server, user: &str) -> String {
    states(server)
        .remove(user)
        .unwrap_or_else(|| panic!("{user} not listed"))
}

fn assert_ledger_ok(server: &Server) {
    let out = server.admin(&["ledger", "check"], "");
    assert!(
        out.status.success(),
        "ledger check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many times `transactions.log` journals transfer `id` from `from`.
fn journaled(server: &Server, from: &str, id: &str) -> usize {
    server
        .log_lines(
            "transactions.log",
            &[&format!(" transfer id={id} from={from} ")],
        )
        .len()
}

/// Transfers journaled from `from`.
fn journaled_from(server: &Server, from: &str) -> usize {
    server
        .log_lines("transactions.log", &[&format!(" from={from} ")])
        .len()
}

/// `error.log` lines `rejected code=<code> user=<user> peer=<peer>`.
fn rejections(server: &Server, code: ErrorCode, user: &str, peer: SocketAddr) -> usize {
    let tail = format!(" rejected code={} user={user} peer={peer}", code.name());
    server
        .log("error.log")
        .lines()
        .filter(|l| l.ends_with(&tail))
        .count()
}

/// An honest user connected beside the attack, sending 0.01 to `sink` whenever asked.
struct Honest {
    client: Client,
    sent: u64,
    balance: Amount,
}

impl Honest {
    fn new(server: &Server) -> Honest {
        drop(server.login("sink", true));
        let mut client = server.login("honest", true);
        let balance = client.balance().expect("honest balance");
        Honest {
            client,
            sent: 0,
            balance,
        }
    }

    /// Logs in again (after a restart).
    fn reconnect(&mut self, server: &Server) {
        self.client = server.login("honest", false);
    }

    /// A transfer that must commit, with the expected balance in its verified receipt.
    fn still_works(&mut self) {
        self.sent += 1;
        let receipt = self
            .client
            .transfer(&format!("honest-{}", self.sent), "sink", Amount(1))
            .expect("the honest client's transfer");
        self.balance = Amount(self.balance.minor() - 1);
        assert_eq!(
            (receipt.result, receipt.balance),
            (Ok(()), self.balance),
            "honest client"
        );
    }
}

/// A hex string with one character changed (still lowercase hex).
fn flip_hex(hex: &str, at: usize) -> String {
    let mut b = hex.as_bytes().to_vec();
    b[at] = if b[at] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

// ---------------------------------------------------------------------------------------
// Nonces: replay, eviction, never issued, other sessions, before a restart
// ---------------------------------------------------------------------------------------

#[test]
fn replayed_transfer_is_unknown_nonce_and_moves_nothing() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);
    let nonce = alice.nonce();
    let frame = alice.transfer_frame("t1", "bob", "10.00", &nonce);
    let line = alice.exchange(&frame);
    let receipt = alice.verify_receipt(&line, "t1", "bob", "10.00", &nonce);
    assert_eq!(
        (receipt.result.as_str(), receipt.balance),
        ("committed", money("90.00"))
    );

    // The identical bytes again, on the same session.
    assert_eq!(alice.exchange(&frame), error_line(ErrorCode::UnknownNonce));
    assert_eq!(alice.exchange(&frame), error_line(ErrorCode::UnknownNonce));
    // The identical bytes on another session of the same user: its key differs, so the
    // MAC fails before the nonce is even looked at.
    let mut other = server.raw_login("alice", false);
    assert_eq!(other.exchange(&frame), error_line(ErrorCode::BadMac));

    honest.still_works();
    assert_eq!(alice.balance(), money("90.00"));
    assert_eq!(balance_of(&server, "bob"), money("110.00"));
    assert_eq!(journaled(&server, "alice", "t1"), 1);
    assert_eq!(journaled_from(&server, "alice"), 1);
    assert_eq!(
        rejections(&server, ErrorCode::UnknownNonce, "alice", alice.peer()),
        2
    );
    assert_eq!(
        rejections(&server, ErrorCode::BadMac, "alice", other.peer()),
        1
    );
    assert_ledger_ok(&server);
}

#[test]
fn nonces_evicted_from_the_ring_are_unknown() {
    let server = start(&["--nonces", "4"]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);

    // A used nonce, then more than a ring's worth of newer nonces.
    let used = alice.nonce();
    let spent = alice.transfer_frame("t1", "bob", "10.00", &used);
    let line = alice.exchange(&spent);
    assert_eq!(
        alice
            .verify_receipt(&line, "t1", "bob", "10.00", &used)
            .result,
        "committed"
    );
    // An unused nonce, pushed out by four newer ones (ring of 4).
    let evicted = alice.nonce();
    let newer = alice.nonces(4);
    assert_eq!(newer.len(), 4);
    // A batch larger than the ring is cut to the ring's size: nothing it issues is dead
    // on arrival. (This evicts `newer` too; ask again for a known ring.)
    assert_eq!(alice.nonces(8).len(), 4);
    let ring = alice.nonces(4);

    assert_eq!(alice.exchange(&spent), error_line(ErrorCode::UnknownNonce));
    let with_evicted = alice.transfer_frame("t2", "bob", "5.00", &evicted);
    assert_eq!(
        alice.exchange(&with_evicted),
        error_line(ErrorCode::UnknownNonce)
    );
    for old in &newer {
        let frame = alice.transfer_frame("t2", "bob", "5.00", old);
        assert_eq!(alice.exchange(&frame), error_line(ErrorCode::UnknownNonce));
    }
    // 6 bad frames so far; the default limit is 8. The oldest nonce still in the ring works.
    let frame = alice.transfer_frame("t2", "bob", "5.00", &ring[0]);
    let line = alice.exchange(&frame);
    let receipt = alice.verify_receipt(&line, "t2", "bob", "5.00", &ring[0]);
    assert_eq!(
        (receipt.result.as_str(), receipt.balance),
        ("committed", money("85.00"))
    );

    honest.still_works();
    assert_eq!(balance_of(&server, "alice"), money("85.00"));
    assert_eq!(balance_of(&server, "bob"), money("115.00"));
    assert_eq!(journaled(&server, "alice", "t1"), 1);
    assert_eq!(journaled(&server, "alice", "t2"), 1);
    assert_eq!(
        rejections(&server, ErrorCode::UnknownNonce, "alice", alice.peer()),
        6
    );
    assert_ledger_ok(&server);
}

#[test]
fn never_issued_nonce_with_a_valid_mac_is_unknown() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);
    let issued = alice.nonce();
    let mut random = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
    let forged = [
        hex_encode::<32>(&random).to_string(),
        "0".repeat(32),
        // One digit away from a real one.
        flip_hex(&issued, 31),
    ];
    for nonce in &forged {
        let frame = alice.transfer_frame("n1", "bob", "10.00", nonce);
        assert_eq!(alice.exchange(&frame), error_line(ErrorCode::UnknownNonce));
    }
    // Nothing was burned or recorded: the real nonce and even the same id still commit.
    let receipt = {
        let line = alice.exchange(&alice.transfer_frame("n1", "bob", "10.00", &issued));
        alice.verify_receipt(&line, "n1", "bob", "10.00", &issued)
    };
    assert_eq!(
        (receipt.result.as_str(), receipt.balance),
        ("committed", money("90.00"))
    );

    honest.still_works();
    assert_eq!(balance_of(&server, "bob"), money("110.00"));
    assert_eq!(journaled(&server, "alice", "n1"), 1);
    assert_eq!(
        rejections(&server, ErrorCode::UnknownNonce, "alice", alice.peer()),
        3
    );
    assert_ledger_ok(&server);
}

#[test]
fn nonce_from_another_session_or_from_before_a_restart_is_unknown() {
    let mut server = start(&[]);
    let mut honest = Honest::new(&server);
    let mut bob = server.raw_login("bob", true);
    let mut first = server.raw_login("alice", true);
    let mut second = server.raw_login("alice", false);

    // alice's first session's nonce, MAC'd correctly under her second session's key.
    let theirs = first.nonce();
    let frame = second.transfer_frame("x1", "bob", "1.00", &theirs);
    assert_eq!(second.exchange(&frame), error_line(ErrorCode::UnknownNonce));
    // Another user's nonce.
    let bobs = bob.nonce();
    let frame = second.transfer_frame("x1", "bob", "1.00", &bobs);
    assert_eq!(second.exchange(&frame), error_line(ErrorCode::UnknownNonce));
    // Neither nonce was burned by those refusals.
    let line = first.exchange(&first.transfer_frame("x1", "bob", "1.00", &theirs));
    assert_eq!(
        first
            .verify_receipt(&line, "x1", "bob", "1.00", &theirs)
            .result,
        "committed"
    );
    let line = bob.exchange(&bob.transfer_frame("y1", "alice", "2.00", &bobs));
    assert_eq!(
        bob.verify_receipt(&line, "y1", "alice", "2.00", &bobs)
            .result,
        "committed"
    );
    honest.still_works();
    assert_eq!(
        rejections(&server, ErrorCode::UnknownNonce, "alice", second.peer()),
        2
    );

    // A nonce issued before a restart, never used.
    let before = first.nonce();
    let stale = first.transfer_frame("x2", "bob", "1.00", &before);
    drop((first, second, bob));
    server.restart();
    honest.reconnect(&server);
    let mut after = server.raw_login("alice", false);
    let frame = after.transfer_frame("x2", "bob", "1.00", &before);
    assert_eq!(after.exchange(&frame), error_line(ErrorCode::UnknownNonce));
    // The old session's frame verbatim: wrong key for this session.
    assert_eq!(after.exchange(&stale), error_line(ErrorCode::BadMac));
    assert_eq!(
        rejections(&server, ErrorCode::UnknownNonce, "alice", after.peer()),
        1
    );
    assert_eq!(
        rejections(&server, ErrorCode::BadMac, "alice", after.peer()),
        1
    );

    honest.still_works();
    assert_eq!(after.balance(), money("101.00"));
    assert_eq!(balance_of(&server, "bob"), money("99.00"));
    assert_eq!(journaled(&server, "alice", "x1"), 1);
    assert_eq!(journaled(&server, "alice", "x2"), 0);
    assert_ledger_ok(&server);
}

// ---------------------------------------------------------------------------------------
// Tampering with the frame
// ---------------------------------------------------------------------------------------

#[test]
fn flipped_amount_or_recipient_is_bad_mac_and_the_original_commits_once() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    drop(server.login("rob", true));
    let mut alice = server.raw_login("alice", true);
    let nonce = alice.nonce();
    let original = alice.transfer_frame("t1", "bob", "10.00", &nonce);

    let tampered = [
        // One byte of the amount: 10.00 -> 90.00.
        original.replace("\"amount\":\"10.00\"", "\"amount\":\"90.00\""),
        // One byte of the recipient: bob -> rob, an existing account.
        original.replace("\"to\":\"bob\"", "\"to\":\"rob\""),
        // One byte of the id.
        original.replace("\"id\":\"t1\"", "\"id\":\"t2\""),
        // One digit of the nonce.
        original.replace(&nonce, &flip_hex(&nonce, 0)),
    ];
    for frame in &tampered {
        assert_ne!(frame, &original);
        assert_eq!(frame.len(), original.len());
        assert_eq!(
            alice.exchange(frame),
            error_line(ErrorCode::BadMac),
            "{frame}"
        );
    }
    // A bad MAC burns no nonce: the untampered frame commits, exactly once.
    let line = alice.exchange(&original);
    let receipt = alice.verify_receipt(&line, "t1", "bob", "10.00", &nonce);
    assert_eq!(
        (receipt.result.as_str(), receipt.balance),
        ("committed", money("90.00"))
    );
    assert_eq!(
        alice.exchange(&original),
        error_line(ErrorCode::UnknownNonce)
    );

    honest.still_works();
    assert_eq!(balance_of(&server, "alice"), money("90.00"));
    assert_eq!(balance_of(&server, "bob"), money("110.00"));
    assert_eq!(balance_of(&server, "rob"), money("100.00"));
    assert_eq!(journaled_from(&server, "alice"), 1);
    assert_eq!(
        server
            .log_lines(
                "transactions.log",
                &[" transfer id=t1 from=alice to=bob amount=10.00 "]
            )
            .len(),
        1
    );
    assert_eq!(
        rejections(&server, ErrorCode::BadMac, "alice", alice.peer()),
        4
    );
    assert_eq!(
        rejections(&server, ErrorCode::UnknownNonce, "alice", alice.peer()),
        1
    );
    assert_ledger_ok(&server);
}

#[test]
fn broken_tags_are_malformed_and_burn_nothing() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);
    let nonce = alice.nonce();
    let original = alice.transfer_frame("t1", "bob", "10.00", &nonce);
    let tag = alice.tag("t1", "bob", "10.00", &nonce);
    let with_tag = |value: &str| original.replace(&format!("\"{tag}\""), value);
    let broken = [
        ("truncated", with_tag(&format!("\"{}\"", &tag[..62]))),
        ("extended", with_tag(&format!("\"{tag}00\""))),
        ("non-hex", with_tag(&format!("\"g{}\"", &tag[1..]))),
        (
            "uppercase",
            with_tag(&format!("\"{}\"", tag.to_uppercase())),
        ),
        ("empty", with_tag("\"\"")),
        ("null", with_tag("null")),
        (
            "missing",
            original.replace(&format!(",\"mac\":\"{tag}\""), ""),
        ),
    ];
    assert!(tag.bytes().any(|b| b.is_ascii_lowercase()), "{tag}");
    for (what, frame) in &broken {
        assert_ne!(frame, &original, "{what}");
        assert_eq!(
            alice.exchange(frame),
            error_line(ErrorCode::Malformed),
            "{what}: {frame}"
        );
    }
    let line = alice.exchange(&original);
    let receipt = alice.verify_receipt(&line, "t1", "bob", "10.00", &nonce);
    assert_eq!(
        (receipt.result.as_str(), receipt.balance),
        ("committed", money("90.00"))
    );

    honest.still_works();
    assert_eq!(balance_of(&server, "bob"), money("110.00"));
    assert_eq!(journaled(&server, "alice", "t1"), 1);
    assert_eq!(
        rejections(&server, ErrorCode::Malformed, "alice", alice.peer()),
        broken.len()
    );
    assert_ledger_ok(&server);
}

#[test]
fn mac_covers_fields_not_bytes_but_duplicates_and_extras_are_malformed() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);

    // Fields in reverse order.
    let n = alice.nonce();
    let mac = alice.tag("r1", "bob", "1.00", &n);
    let frame = format!(
        "{{\"mac\":\"{mac}\",\"nonce\":\"{n}\",\"amount\":\"1.00\",\"to\":\"bob\",\"id\":\"r1\",\"op\":\"transfer\"}}"
    );
    let line = alice.exchange(&frame);
    assert_eq!(
        alice.verify_receipt(&line, "r1", "bob", "1.00", &n).result,
        "committed"
    );

    // Whitespace (spaces and tabs) between every token, and a CR before the LF. A CR
    // anywhere else is `malformed` (PROTOCOL.md §2; core/tests/session.rs).
    let n = alice.nonce();
    let mac = alice.tag("r2", "bob", "1.00", &n);
    let frame = format!(
        " {{ \"op\" :\t\"transfer\" , \"id\" : \"r2\" ,\"to\":  \"bob\",\t\"amount\" : \"1.00\" , \"nonce\" : \"{n}\" , \"mac\" : \"{mac}\" }} \r"
    );
    let line = alice.exchange(&frame);
    assert_eq!(
        alice.verify_receipt(&line, "r2", "bob", "1.00", &n).result,
        "committed"
    );

    // A recipient in capitals and an amount with one decimal: the MAC covers the
    // normalised name and the minor units, so these are the same transfer as "bob", 1.00.
    let n = alice.nonce();
    let mac = alice.tag("r3", "bob", "1.00", &n);
    let frame = format!(
        "{{\"op\":\"transfer\",\"id\":\"r3\",\"to\":\"BOB\",\"amount\":\"1.0\",\"nonce\":\"{n}\",\"mac\":\"{mac}\"}}"
    );
    let line = alice.exchange(&frame);
    assert_eq!(
        alice.verify_receipt(&line, "r3", "bob", "1.00", &n).result,
        "committed"
    );

    // Duplicates, unknown fields and a `from` are refused, each with a genuine tag.
    let n = alice.nonce();
    let original = alice.transfer_frame("r4", "bob", "1.00", &n);
    let body = original.trim_end_matches('}');
    let mac = alice.tag("r4", "bob", "1.00", &n);
    let refused = [
        format!("{body},\"amount\":\"1.00\"}}"),
        format!("{body},\"mac\":\"{mac}\"}}"),
        format!("{body},\"op\":\"transfer\"}}"),
        format!("{body},\"memo\":\"rent\"}}"),
        format!("{body},\"from\":\"bob\"}}"),
        original.replacen("{", "{\"from\":\"alice\",", 1),
    ];
    for frame in &refused {
        assert_eq!(
            alice.exchange(frame),
            error_line(ErrorCode::Malformed),
            "{frame}"
        );
    }
    let line = alice.exchange(&original);
    assert_eq!(
        alice.verify_receipt(&line, "r4", "bob", "1.00", &n).result,
        "committed"
    );

    honest.still_works();
    assert_eq!(alice.balance(), money("96.00"));
    assert_eq!(balance_of(&server, "bob"), money("104.00"));
    assert_eq!(journaled_from(&server, "alice"), 4);
    assert_eq!(
        rejections(&server, ErrorCode::Malformed, "alice", alice.peer()),
        refused.len()
    );
    assert_ledger_ok(&server);
}

#[test]
fn other_macs_presented_as_a_transfer_tag_are_bad_mac() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);

    // Collect genuine tags of other kinds from this very session.
    let n0 = alice.nonce();
    let first = alice.transfer_frame("m0", "bob", "1.00", &n0);
    let receipt_line = alice.exchange(&first);
    alice.verify_receipt(&receipt_line, "m0", "bob", "1.00", &n0);
    let receipt_mac = field(&receipt_line, "mac");
    let (_, balance_line) = alice.balance_line();
    let balance_mac = field(&balance_line, "mac");
    let old_transfer_mac = alice.tag("m0", "bob", "1.00", &n0);

    let n = alice.nonce();
    let nonce = hex_decode::<16>(&n).unwrap();
    let keys = &alice.keys;
    let as_hex = |t: txsock_core::crypto::Tag| hex_encode::<64>(t.as_bytes()).to_string();
    let candidates = [
        ("receipt mac", receipt_mac),
        ("balance mac", balance_mac),
        ("previous transfer's mac", old_transfer_mac),
        (
            "transfer mac under the s2c key",
            as_hex(mac::transfer(
                &keys.server_to_client,
                "alice",
                "m1",
                "bob",
                Amount(100),
                &nonce,
            )),
        ),
        (
            "receipt-labelled mac of these fields under c2s",
            as_hex(
                MacInput::new(&keys.client_to_server, "receipt")
                    .text("alice")
                    .text("m1")
                    .text("bob")
                    .number(100)
                    .nonce(&nonce)
                    .finish(),
            ),
        ),
        (
            "balance-labelled mac under c2s",
            as_hex(mac::balance(&keys.client_to_server, 1, Amount(100))),
        ),
    ];
    let genuine = alice.transfer_frame("m1", "bob", "1.00", &n);
    let tag = alice.tag("m1", "bob", "1.00", &n);
    for (what, mac) in &candidates {
        assert_ne!(mac, &tag);
        let frame = genuine.replace(&tag, mac);
        assert_eq!(
            alice.exchange(&frame),
            error_line(ErrorCode::BadMac),
            "{what}"
        );
    }
    let line = alice.exchange(&genuine);
    let receipt = alice.verify_receipt(&line, "m1", "bob", "1.00", &n);
    assert_eq!(
        (receipt.result.as_str(), receipt.balance),
        ("committed", money("98.00"))
    );

    honest.still_works();
    assert_eq!(balance_of(&server, "bob"), money("102.00"));
    assert_eq!(journaled_from(&server, "alice"), 2);
    assert_eq!(
        rejections(&server, ErrorCode::BadMac, "alice", alice.peer()),
        candidates.len()
    );
    assert_ledger_ok(&server);
}

/// The string value of `"name":"..."` in a JSON line.
fn field(line: &str, name: &str) -> String {
    let key = format!("\"{name}\":\"");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + key.len();
    let len = line[start..].find('"').unwrap();
    line[start..start + len].to_string()
}

// ---------------------------------------------------------------------------------------
// Amounts and accounts
// ---------------------------------------------------------------------------------------

#[test]
fn invalid_amounts_are_refused_with_the_documented_code() {
    // 17 bad frames on one session: raise the bad-frame limit (tested elsewhere).
    let server = start(&["--max-bad-frames", "64"]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);
    let n = alice.nonce();
    let nonce = hex_decode::<16>(&n).unwrap();

    // (wire value, the minor units a sloppy client would MAC, expected code). Per
    // PROTOCOL.md §4 every refusal of a string amount is `invalid_amount`; a JSON number
    // where a string is required is a wrong type, `malformed` (§3).
    let cases: &[(&str, &str, ErrorCode)] = &[
        ("\"0\"", "0", ErrorCode::InvalidAmount),
        ("\"0.00\"", "0", ErrorCode::InvalidAmount),
        ("\"-1\"", "-100", ErrorCode::InvalidAmount),
        ("\"-0\"", "0", ErrorCode::InvalidAmount),
        ("\"+1\"", "100", ErrorCode::InvalidAmount),
        ("\"1.500\"", "150", ErrorCode::InvalidAmount),
        ("\"0.001\"", "0", ErrorCode::InvalidAmount),
        ("\"1e3\"", "100000", ErrorCode::InvalidAmount),
        ("\"007\"", "700", ErrorCode::InvalidAmount),
        ("\".5\"", "50", ErrorCode::InvalidAmount),
        (
            "\"9223372036854775808\"",
            "922337203685477580800",
            ErrorCode::InvalidAmount,
        ),
        (
            "\"18446744073709551616\"",
            "1844674407370955161600",
            ErrorCode::InvalidAmount,
        ),
        (
            "\"10000000000000.01\"",
            "1000000000000001",
            ErrorCode::InvalidAmount,
        ),
        ("1", "100", ErrorCode::Malformed),
        ("-1", "-100", ErrorCode::Malformed),
        (
            "9223372036854775808",
            "922337203685477580800",
            ErrorCode::Malformed,
        ),
        (
            "18446744073709551616",
            "1844674407370955161600",
            ErrorCode::Malformed,
        ),
    ];
    for (wire, minor, code) in cases {
        let tag = MacInput::new(&alice.keys.client_to_server, "transfer")
            .text("alice")
            .text("a1")
            .text("bob")
            .text(minor)
            .nonce(&nonce)
            .finish();
        let frame = format!(
            "{{\"op\":\"transfer\",\"id\":\"a1\",\"to\":\"bob\",\"amount\":{wire},\"nonce\":\"{n}\",\"mac\":\"{}\"}}",
            hex_encode::<64>(tag.as_bytes())
        );
        assert_eq!(alice.exchange(&frame), error_line(*code), "amount {wire}");
    }
    // Nothing moved, the nonce is still good, and the id is still free.
    assert_eq!(alice.balance(), money("100.00"));
    let line = alice.exchange(&alice.transfer_frame("a1", "bob", "1.00", &n));
    assert_eq!(
        alice.verify_receipt(&line, "a1", "bob", "1.00", &n).result,
        "committed"
    );
    // The largest amount is well-formed; it is refused by the ledger, in a receipt.
    let big = alice.transfer("a2", "bob", "10000000000000");
    assert_eq!(
        (big.result.as_str(), big.balance),
        ("insufficient_funds", money("99.00"))
    );

    honest.still_works();
    assert_eq!(balance_of(&server, "bob"), money("101.00"));
    assert_eq!(journaled_from(&server, "alice"), 1);
    let count = |code| cases.iter().filter(|(_, _, c)| *c == code).count();
    assert_eq!(
        rejections(&server, ErrorCode::InvalidAmount, "alice", alice.peer()),
        count(ErrorCode::InvalidAmount)
    );
    assert_eq!(
        rejections(&server, ErrorCode::Malformed, "alice", alice.peer()),
        count(ErrorCode::Malformed)
    );
    assert_ledger_ok(&server);
}

#[test]
fn self_transfer_unknown_recipient_and_no_way_to_debit_another_account() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);

    let own = alice.transfer("s1", "alice", "1.00");
    assert_eq!(
        (own.result.as_str(), own.balance),
        ("self_transfer", money("100.00"))
    );
    let own_caps = alice.transfer("s2", "ALICE", "1.00");
    assert_eq!(own_caps.result, "self_transfer");
    let nobody = alice.transfer("u1", "nobody", "1.00");
    assert_eq!(
        (nobody.result.as_str(), nobody.balance),
        ("unknown_recipient", money("100.00"))
    );
    // Refusals are final outcomes of their ids.
    assert_eq!(
        alice.transfer("s1", "alice", "1.00").result,
        "self_transfer"
    );

    // There is no field naming the debited account...
    let n = alice.nonce();
    let genuine = alice.transfer_frame("d1", "alice", "50.00", &n);
    let from_bob = genuine.replacen("{", "{\"from\":\"bob\",", 1);
    assert_eq!(alice.exchange(&from_bob), error_line(ErrorCode::Malformed));
    // ...and a tag made as if bob were the sender does not verify for alice's session.
    let nonce = hex_decode::<16>(&n).unwrap();
    let as_bob = mac::transfer(
        &alice.keys.client_to_server,
        "bob",
        "d1",
        "alice",
        Amount(5000),
        &nonce,
    );
    let frame = genuine.replace(
        &alice.tag("d1", "alice", "50.00", &n),
        &hex_encode::<64>(as_bob.as_bytes()),
    );
    assert_eq!(alice.exchange(&frame), error_line(ErrorCode::BadMac));
    // A recipient that is not a username at all.
    let bad_name = alice
        .transfer_frame("d2", "bob", "1.00", &n)
        .replace("\"to\":\"bob\"", "\"to\":\"b ob\"");
    assert_eq!(
        alice.exchange(&bad_name),
        error_line(ErrorCode::InvalidName)
    );

    honest.still_works();
    assert_eq!(alice.balance(), money("100.00"));
    assert_eq!(balance_of(&server, "bob"), money("100.00"));
    assert_eq!(journaled_from(&server, "alice"), 0);
    assert_eq!(journaled_from(&server, "bob"), 0);
    let peer = alice.peer();
    assert_eq!(rejections(&server, ErrorCode::Malformed, "alice", peer), 1);
    assert_eq!(rejections(&server, ErrorCode::BadMac, "alice", peer), 1);
    assert_eq!(
        rejections(&server, ErrorCode::InvalidName, "alice", peer),
        1
    );
    // Ledger refusals are answers, not rejected frames.
    assert!(server.log_lines("error.log", &["self_transfer"]).is_empty());
    assert!(server
        .log_lines("error.log", &["unknown_recipient"])
        .is_empty());
    assert_ledger_ok(&server);
}

#[test]
fn fifty_parallel_full_balance_transfers_commit_exactly_once() {
    const N: usize = 50;
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    drop(server.login("alice", true));
    let barrier = Arc::new(Barrier::new(N + 1));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let mut c = server.login("alice", false);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                c.session().request_nonces(1).unwrap();
                assert!(matches!(c.next_event(), Ok(ClientEvent::Nonces { .. })));
                barrier.wait();
                c.transfer(&format!("all-{i}"), "bob", money("100.00"))
                    .expect("receipt")
            })
        })
        .collect();
    barrier.wait();
    honest.still_works();
    let receipts: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    honest.still_works();

    let committed = receipts.iter().filter(|r| r.result.is_ok()).count();
    let refused = receipts
        .iter()
        .filter(|r| r.result == Err(ErrorCode::InsufficientFunds))
        .count();
    assert_eq!((committed, refused), (1, N - 1), "{receipts:?}");
    assert!(
        receipts.iter().all(|r| r.balance == money("0.00")),
        "{receipts:?}"
    );
    assert_eq!(balance_of(&server, "alice"), money("0.00"));
    assert_eq!(balance_of(&server, "bob"), money("200.00"));
    assert_eq!(journaled_from(&server, "alice"), 1);
    // Ledger refusals are answers, not rejected frames.
    assert!(server.log_lines("error.log", &["rejected"]).is_empty());
    assert_ledger_ok(&server);
}

#[test]
fn dropped_reply_then_retry_on_a_new_connection_gets_the_original_result() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);
    let n = alice.nonce();
    let frame = alice.transfer_frame("d1", "bob", "10.00", &n);
    let peer = alice.peer();
    // Send and hang up without reading: the reply is lost.
    alice.conn.send_raw(format!("{frame}\n").as_bytes());
    alice.conn.stream.shutdown(Shutdown::Both).unwrap();
    drop(alice);
    assert!(server.wait_for_log("transactions.log", " transfer id=d1 from=alice "));

    // Money moves again for a different id, so the balance now is not d1's.
    let mut other = server.login("alice", false);
    let r = other.transfer("d2", "bob", money("5.00")).unwrap();
    assert_eq!((r.result, r.balance), (Ok(()), money("85.00")));

    // The retry on a new connection: the original outcome and balance, nothing moves.
    let mut retry = server.login("alice", false);
    for _ in 0..2 {
        let r = retry.transfer("d1", "bob", money("10.00")).unwrap();
        assert_eq!((r.result, r.balance), (Ok(()), money("90.00")));
    }
    // The same id for a different transfer.
    let r = retry.transfer("d1", "bob", money("11.00")).unwrap();
    assert_eq!(
        (r.result, r.balance),
        (Err(ErrorCode::DuplicateId), money("85.00"))
    );

    honest.still_works();
    assert_eq!(retry.balance().unwrap(), money("85.00"));
    assert_eq!(balance_of(&server, "bob"), money("115.00"));
    assert_eq!(journaled(&server, "alice", "d1"), 1);
    assert_eq!(journaled_from(&server, "alice"), 2);
    assert!(server.wait_for_log(
        "sessions.log",
        &format!("disconnect user=alice peer={peer}")
    ));
    assert!(server.log_lines("error.log", &["rejected"]).is_empty());
    assert_ledger_ok(&server);
}

// ---------------------------------------------------------------------------------------
// Logins: lockout, address throttle, spraying, probing, MITM, replayed proofs
// ---------------------------------------------------------------------------------------

#[test]
fn lockout_refuses_the_right_password_then_expires_and_success_resets() {
    let server = start(&[
        "--lockout-after",
        "3",
        "--lockout-base-ms",
        "800",
        "--lockout-max",
        "1",
        "--address-lockout-after",
        "1000",
    ]);
    let mut honest = Honest::new(&server);
    let mut open = server.raw_login("vic", true);
    let mut conn = LineConn::new(server.connect_raw());
    let peer = conn.local_addr();
    let auth_failed = error_line(ErrorCode::AuthFailed);

    for _ in 0..3 {
        assert_eq!(conn.login("vic", "wrong password!").reply, auth_failed);
    }
    let locked_at = Instant::now();
    assert!(server.wait_for_log("sessions.log", "lockout user=vic "));
    assert!(
        state_of(&server, "vic").starts_with("locked until"),
        "{}",
        state_of(&server, "vic")
    );
    // During the lock even the right password fails, with the very same frame, and the
    // failures do not extend the lock.
    for password in [password("vic"), "wrong again!".to_string(), password("vic")] {
        let attempt = conn.login("vic", &password);
        assert_eq!(attempt.reply, auth_failed);
        assert!(attempt.keys.is_none());
    }
    let failed = |reason: &str| {
        server
            .log_lines(
                "sessions.log",
                &[&format!(
                    "login_failed user=vic reason={reason} peer={peer}"
                )],
            )
            .len()
    };
    assert_eq!((failed("wrong_password"), failed("account_locked")), (3, 3));
    assert_eq!(
        server
            .log_lines("sessions.log", &["lockout user=vic "])
            .len(),
        1
    );
    assert_eq!(
        server.log_lines("error.log", &["lockout user=vic "]).len(),
        1
    );
    assert!(
        locked_at.elapsed() < Duration::from_millis(700),
        "too slow: the attempts above were not all inside the lock"
    );
    // The session opened before the attack is untouched.
    assert_eq!(open.balance(), money("100.00"));
    honest.still_works();

    // After the lock: the right password works, and the failure count is reset.
    std::thread::sleep(Duration::from_millis(950).saturating_sub(locked_at.elapsed()));
    let attempt = conn.login("vic", &password("vic"));
    assert!(attempt.keys.is_some(), "{}", attempt.reply);
    assert_eq!(state_of(&server, "vic"), "active");

    // Two more failures would make five in a row without the reset; with it, two do not lock.
    let mut conn = LineConn::new(server.connect_raw());
    for _ in 0..2 {
        assert_eq!(conn.login("vic", "wrong password!").reply, auth_failed);
    }
    assert_eq!(state_of(&server, "vic"), "active (2 failed logins)");
    assert!(conn.login("vic", &password("vic")).keys.is_some());
    assert_eq!(
        server
            .log_lines("sessions.log", &["lockout user=vic "])
            .len(),
        1
    );
    honest.still_works();
    assert_ledger_ok(&server);
}

#[test]
fn attacker_address_is_throttled_while_the_victim_logs_in_from_elsewhere() {
    let server = start(&[
        "--lockout-after",
        "2",
        "--address-lockout-after",
        "3",
        "--lockout-base-ms",
        "600",
        "--lockout-max",
        "3",
    ]);
    let mut honest = Honest::new(&server);
    drop(server.login("victim", true));
    let auth_failed = error_line(ErrorCode::AuthFailed);

    // From 127.0.0.2: the 2nd failure locks the account (600 ms), the 3rd (refused as
    // locked) throttles the attacker's address.
    let mut attacker = LineConn::new(connect_from(&server, ATTACKER));
    let attacker_peer = attacker.local_addr();
    assert_eq!(attacker_peer.ip(), ATTACKER);
    assert_eq!(attacker.login("victim", "guess-1234").reply, auth_failed);
    assert_eq!(attacker.login("victim", "guess-2345").reply, auth_failed);
    let locked_at = Instant::now();
    assert_eq!(attacker.login("victim", "guess-3456").reply, auth_failed);

    // The attacker keeps guessing, as fast as it can, while the victim logs in.
    let stop = Arc::new(AtomicBool::new(false));
    let guesses = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (stop, guesses) = (stop.clone(), guesses.clone());
        let mut attacker = attacker;
        let expected = auth_failed.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(attacker.login("victim", "guess-5678").reply, expected);
                guesses.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    assert!(server.wait_for_log("sessions.log", "lockout user=victim "));
    assert!(server.wait_for_log(
        "error.log",
        &format!("address_throttled peer={attacker_peer}")
    ));
    // The throttled attempts never reach the account, so its lock is not extended: once
    // it runs out, the victim gets in from its own address while the attack goes on.
    std::thread::sleep(Duration::from_millis(750).saturating_sub(locked_at.elapsed()));
    let before = guesses.load(Ordering::Relaxed);
    let mut victim = LineConn::new(connect_from(&server, Ipv4Addr::LOCALHOST));
    let victim_peer = victim.local_addr();
    let attempt = victim.login("victim", &password("victim"));
    assert!(
        attempt.keys.is_some(),
        "victim locked out: {}",
        attempt.reply
    );
    while guesses.load(Ordering::Relaxed) < before + 5 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    let guesses = guesses.load(Ordering::Relaxed);

    // Still throttled: the right password from the attacker's address fails too.
    let mut again = LineConn::new(connect_from(&server, ATTACKER));
    let again_peer = again.local_addr();
    let attempt = again.login("victim", &password("victim"));
    assert_eq!(attempt.reply, auth_failed);
    assert!(attempt.keys.is_none());

    // The audit trail, attempt by attempt.
    let failed = |reason: &str, peer: SocketAddr| {
        server
            .log_lines(
                "sessions.log",
                &[&format!(
                    "login_failed user=victim reason={reason} peer={peer}"
                )],
            )
            .len()
    };
    assert_eq!(failed("wrong_password", attacker_peer), 2);
    assert_eq!(failed("account_locked", attacker_peer), 1);
    assert_eq!(failed("address_throttled", attacker_peer), guesses);
    assert_eq!(failed("address_throttled", again_peer), 1);
    // Every failure from the 3rd on is logged as throttling the address.
    let throttled = |peer: SocketAddr| {
        server
            .log_lines("error.log", &[&format!("address_throttled peer={peer}")])
            .len()
    };
    assert_eq!(throttled(attacker_peer), 1 + guesses);
    assert_eq!(throttled(again_peer), 1);
    assert_eq!(
        server
            .log_lines(
                "sessions.log",
                &[&format!("login user=victim peer={victim_peer}")]
            )
            .len(),
        1
    );
    assert!(server
        .log_lines("error.log", &["peer=127.0.0.1:"])
        .is_empty());
    assert!(server
        .log_lines("sessions.log", &["login_failed", "peer=127.0.0.1:"])
        .is_empty());
    // Only the first two attempts ever counted against the account.
    assert_eq!(
        server
            .log_lines("sessions.log", &["lockout user=victim "])
            .len(),
        1
    );
    assert_eq!(state_of(&server, "victim"), "active");
    honest.still_works();
    assert_ledger_ok(&server);
}

/// One failure that both locks the account and throttles the address must log both.
///
/// Reproducer: `txsock serve --lockout-after 1 --address-lockout-after 1`, one wrong
/// password: `sessions.log`/`error.log` get `lockout user=..`, but `error.log` never gets
/// `address_throttled peer=..`. The proof handler queues `AddressThrottled` and
/// `LoginFailed`, the ledger reply then queues `AccountLocked`, and `ServerSession` keeps
/// only 2 events (`Deque<ServerEvent, 2>`, oldest dropped) while the host drains them once
/// after the ledger reply.
#[test]
fn a_failure_that_locks_the_account_and_throttles_the_address_logs_both() {
    let server = start(&["--lockout-after", "1", "--address-lockout-after", "1"]);
    let mut honest = Honest::new(&server);
    drop(server.login("victim", true));
    let mut attacker = LineConn::new(connect_from(&server, ATTACKER));
    let peer = attacker.local_addr();
    assert_eq!(
        attacker.login("victim", "guess-1234").reply,
        error_line(ErrorCode::AuthFailed)
    );
    assert!(server.wait_for_log(
        "sessions.log",
        &format!("login_failed user=victim reason=wrong_password peer={peer}")
    ));
    assert!(server.wait_for_log("error.log", "lockout user=victim "));
    assert!(
        server.wait_for_log("error.log", &format!("address_throttled peer={peer}")),
        "error.log:\n{}",
        server.log("error.log")
    );
    honest.still_works();
}

#[test]
fn one_address_spraying_a_password_over_many_accounts_is_throttled() {
    const ACCOUNTS: usize = 100;
    let server = start(&[
        "--address-lockout-after",
        "10",
        "--lockout-base-ms",
        "60000",
        "--lockout-max",
        "120",
    ]);
    let mut honest = Honest::new(&server);
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("spray{i:03}")).collect();
    let mut registrar = server.client();
    for name in &names {
        registrar
            .register(name, &password(name), ITERATIONS)
            .expect("register");
    }
    drop(registrar);

    let mut sprayer = LineConn::new(connect_from(&server, ATTACKER));
    let peer = sprayer.local_addr();
    let auth_failed = error_line(ErrorCode::AuthFailed);
    for name in &names {
        assert_eq!(
            sprayer.login(name, "Summer2025!").reply,
            auth_failed,
            "{name}"
        );
    }
    // Throttled now: even an existing account with its right password fails from here...
    let attempt = sprayer.login(&names[50], &password(&names[50]));
    assert_eq!(attempt.reply, auth_failed);
    assert!(attempt.keys.is_none());
    // ...but not from another address.
    let mut elsewhere = LineConn::new(server.connect_raw());
    assert!(elsewhere
        .login(&names[50], &password(&names[50]))
        .keys
        .is_some());

    let with_reason = |reason: &str| {
        server
            .log_lines("sessions.log", &[&format!("reason={reason} peer={peer}")])
            .len()
    };
    assert_eq!(with_reason("wrong_password"), 10);
    assert_eq!(with_reason("address_throttled"), ACCOUNTS - 10 + 1);
    assert!(!server
        .log_lines("error.log", &[&format!("address_throttled peer={peer}")])
        .is_empty());
    assert!(server
        .log_lines("error.log", &["address_throttled peer=127.0.0.1:"])
        .is_empty());
    // Only the first ten accounts were ever touched, and none is locked.
    let states = states(&server);
    for (i, name) in names.iter().enumerate() {
        let expected = if i < 10 {
            "active (1 failed logins)"
        } else {
            "active"
        };
        assert_eq!(states[name.as_str()], expected, "{name}");
    }
    honest.still_works();
}

#[test]
fn unknown_user_and_wrong_password_get_the_same_answers() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("alice", true));
    let mut conn = LineConn::new(server.connect_raw());
    let known = conn.login("alice", "wrong password!");
    let unknown = conn.login("nobody", "wrong password!");
    let unknown_again = conn.login("nobody", "wrong password!");

    // Same final frame, byte for byte.
    assert_eq!(known.reply, error_line(ErrorCode::AuthFailed));
    assert_eq!(unknown.reply, known.reply);
    // Same challenge shape: fields, order, nonce and salt lengths, iteration count.
    let shape = |line: &str| {
        line.replace(
            &field(line, "nonce"),
            &"N".repeat(field(line, "nonce").len()),
        )
        .replace(&field(line, "salt"), &"S".repeat(field(line, "salt").len()))
    };
    assert_eq!(shape(&unknown.challenge), shape(&known.challenge));
    assert!(known
        .challenge
        .contains(&format!("\"iterations\":{ITERATIONS}}}")));
    // An unknown user's salt is stable, like a real one's.
    assert_eq!(
        field(&unknown.challenge, "salt"),
        field(&unknown_again.challenge, "salt")
    );
    assert_ne!(
        field(&unknown.challenge, "salt"),
        field(&known.challenge, "salt")
    );

    // Only the server's own log tells them apart.
    let peer = conn.local_addr();
    assert_eq!(
        server
            .log_lines(
                "sessions.log",
                &[&format!(
                    "login_failed user=alice reason=wrong_password peer={peer}"
                )]
            )
            .len(),
        1
    );
    assert_eq!(
        server
            .log_lines(
                "sessions.log",
                &[&format!(
                    "login_failed user=nobody reason=unknown_user peer={peer}"
                )]
            )
            .len(),
        2
    );
    honest.still_works();
}

fn downgrade(line: &str) -> String {
    line.replace(
        &format!("\"iterations\":{ITERATIONS}"),
        "\"iterations\":1024",
    )
}

fn inflate(line: &str) -> String {
    line.replace(
        &format!("\"iterations\":{ITERATIONS}"),
        "\"iterations\":20000000",
    )
}

fn forge_signature(line: &str) -> String {
    if !line.contains("\"op\":\"welcome\"") {
        return line.to_string();
    }
    let sig = field(line, "signature");
    let mut forged = sig.clone().into_bytes();
    forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
    line.replace(&sig, std::str::from_utf8(&forged).unwrap())
}

#[test]
fn client_aborts_on_a_downgraded_challenge_or_a_forged_server_signature() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("alice", true));

    for (rewrite, expected) in [
        (
            downgrade as fn(&str) -> String,
            IntegrityError::IterationsTooLow { offered: 1024 },
        ),
        (
            inflate,
            IntegrityError::IterationsTooHigh {
                offered: 20_000_000,
            },
        ),
    ] {
        let proxy = Proxy::start(server.addr, rewrite);
        let mut c = client_over(TcpStream::connect(proxy.addr).unwrap());
        let r = c.login("alice", &password("alice"));
        assert!(
            matches!(r, Err(BlockingError::Integrity(e)) if e == expected),
            "{r:?}"
        );
        // The client stopped: nothing more to send, no proof sent, the session is dead.
        assert!(c.session().is_failed());
        assert!(c.session().poll_transmit().is_empty());
        assert!(matches!(
            c.login("alice", &password("alice")),
            Err(BlockingError::Client(ClientError::Failed))
        ));
        std::thread::sleep(Duration::from_millis(100));
        let sent = proxy.client_lines.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].starts_with("{\"op\":\"login\""), "{sent:?}");
    }
    assert!(
        server
            .log_lines("sessions.log", &["login user=alice "])
            .len()
            == 1
    );

    // A forged welcome: the server did log the client in, but the client refuses to use
    // the session.
    let proxy = Proxy::start(server.addr, forge_signature);
    let mut c = client_over(TcpStream::connect(proxy.addr).unwrap());
    let r = c.login("alice", &password("alice"));
    assert!(
        matches!(
            r,
            Err(BlockingError::Integrity(IntegrityError::BadServerSignature))
        ),
        "{r:?}"
    );
    assert!(c.session().is_failed());
    assert!(matches!(
        c.balance(),
        Err(BlockingError::Client(ClientError::Failed))
    ));
    assert!(matches!(
        c.transfer("f1", "alice", money("1.00")),
        Err(BlockingError::Client(ClientError::Failed))
    ));
    assert_eq!(
        server
            .log_lines("sessions.log", &["login user=alice "])
            .len(),
        2
    );
    let sent = proxy.client_lines.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");

    honest.still_works();
    assert_eq!(journaled_from(&server, "alice"), 0);
}

#[test]
fn replayed_login_proof_fails() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    drop(server.login("alice", true));
    let mut first = LineConn::new(server.connect_raw());
    let recorded = first.login("alice", &password("alice"));
    assert!(recorded.keys.is_some());
    // On the logged-in connection the proof is unexpected.
    assert_eq!(
        first.exchange(&recorded.proof),
        error_line(ErrorCode::UnexpectedMessage)
    );

    // On a new connection: the same login frame gets a new server nonce, so the old proof
    // does not verify.
    let mut replay = LineConn::new(server.connect_raw());
    let peer = replay.local_addr();
    assert_eq!(
        replay.exchange(&recorded.proof),
        error_line(ErrorCode::UnexpectedMessage)
    );
    let challenge = replay.exchange(&recorded.login);
    assert!(
        challenge.starts_with("{\"op\":\"challenge\""),
        "{challenge}"
    );
    assert_ne!(
        field(&challenge, "nonce"),
        field(&recorded.challenge, "nonce")
    );
    assert_eq!(
        replay.exchange(&recorded.proof),
        error_line(ErrorCode::AuthFailed)
    );
    assert_eq!(
        replay.exchange("{\"op\":\"balance\"}"),
        error_line(ErrorCode::NotLoggedIn)
    );
    assert_eq!(
        server
            .log_lines(
                "sessions.log",
                &[&format!(
                    "login_failed user=alice reason=wrong_password peer={peer}"
                )]
            )
            .len(),
        1
    );
    assert_eq!(
        rejections(&server, ErrorCode::UnexpectedMessage, "-", peer),
        1
    );
    assert_eq!(
        rejections(
            &server,
            ErrorCode::UnexpectedMessage,
            "alice",
            first.local_addr()
        ),
        1
    );
    honest.still_works();
}

// ---------------------------------------------------------------------------------------
// Garbage, floods, slow and greedy clients
// ---------------------------------------------------------------------------------------

#[test]
fn oversize_line_nul_bytes_invalid_utf8_and_nesting() {
    let server = start(&[]);
    let mut honest = Honest::new(&server);
    let mut alice = server.raw_login("alice", true);
    let peer = alice.peer();

    // 1 MiB without a newline: one frame_too_long as soon as the limit is passed, nothing
    // more while the rest streams in; the next line is read normally.
    alice.conn.send_raw(&vec![b'x'; 1 << 20]);
    assert_eq!(
        alice.conn.recv().unwrap(),
        error_line(ErrorCode::FrameTooLong)
    );
    assert!(alice.conn.silent_for(Duration::from_millis(300)));
    alice.conn.send_raw(b"\n{\"op\":\"ping\"}\n");
    assert_eq!(alice.conn.recv().unwrap(), "{\"op\":\"pong\"}");

    let nested_array = format!(
        "{{\"op\":\"ping\",\"x\":{}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let nested_object = format!(
        "{{\"op\":\"balance\",\"x\":{}1{}}}",
        "{\"y\":".repeat(60),
        "}".repeat(60)
    );
    let junk: [&[u8]; 6] = [
        b"{\"op\":\"ping\"\0}\n",
        b"\0\0\0\0\n",
        b"{\"op\":\"p\xffng\"}\n",
        b"{\"op\":\"\xc0\xafping\"}\n",
        nested_array.as_bytes(),
        nested_object.as_bytes(),
    ];
    for frame in junk {
        let mut line = frame.to_vec();
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        alice.conn.send_raw(&line);
        assert_eq!(
            alice.conn.recv().unwrap(),
            error_line(ErrorCode::Malformed),
            "{}",
            String::from_utf8_lossy(frame)
        );
    }
    // Seven bad frames: the session still works and nothing changed.
    assert_eq!(alice.balance(), money("100.00"));
    honest.still_works();
    // The eighth is answered; the ninth closes the connection.
    assert_eq!(
        alice.exchange("{\"op\":\"PING\"}"),
        error_line(ErrorCode::Malformed)
    );
    assert_eq!(
        alice.exchange("{\"op\":\"ping\",\"op\":\"ping\"}"),
        error_line(ErrorCode::TooManyBadFrames)
    );
    assert!(alice.conn.closed_by_peer());

    assert_eq!(
        rejections(&server, ErrorCode::FrameTooLong, "alice", peer),
        1
    );
    assert_eq!(rejections(&server, ErrorCode::Malformed, "alice", peer), 8);
    assert!(server.wait_for_log(
        "error.log",
        &format!("closed code=too_many_bad_frames user=alice peer={peer}")
    ));
    honest.still_works();
    assert_eq!(balance_of(&server, "alice"), money("100.00"));
    assert_ledger_ok(&server);
}

#[test]
fn slowloris_and_connection_flood_beside_an_honest_client() {
    const MAX: usize = 12;
    let server = start(&[
        "--login-deadline",
        "2",
        "--max-connections",
        &MAX.to_string(),
    ]);
    let mut honest = Honest::new(&server);
    // Let the server notice the registration connection is gone.
    std::thread::sleep(Duration::from_millis(200));

    // Slowloris: fill every other slot with connections that dribble an endless line.
    let opened_at = Instant::now();
    let mut slow: Vec<TcpStream> = (0..MAX - 1).map(|_| server.connect_raw()).collect();
    let slow_peers: Vec<SocketAddr> = slow.iter().map(|s| s.local_addr().unwrap()).collect();
    let dribblers: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let dribble = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut dribblers = dribblers;
            for d in &mut dribblers {
                let _ = d.write_all(b"{\"op\":\"lo");
            }
            while !stop.load(Ordering::Relaxed) {
                for d in &mut dribblers {
                    let _ = d.write_all(b"o");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(150));

    // The flood: every further connection is refused at once.
    for _ in 0..20 {
        let mut extra = server.connect_raw();
        assert_eq!(
            read_lines(&mut extra, 1),
            [error_line(ErrorCode::ServerBusy)]
        );
        assert!(closed_by_peer(&mut extra));
    }
    assert!(
        opened_at.elapsed() < Duration::from_millis(1800),
        "flood too slow for the test"
    );
    // The honest client is served meanwhile.
    honest.still_works();
    assert!(server.wait_for_log("error.log", "limit max_connections"));
    assert_eq!(
        server
            .log_lines("error.log", &["limit max_connections"])
            .len(),
        20
    );

    // At the login deadline every slowloris connection is closed with `timeout`, despite
    // the bytes still trickling in.
    for s in &mut slow {
        assert_eq!(read_lines(s, 1), [error_line(ErrorCode::Timeout)]);
        assert!(closed_by_peer(s));
    }
    let elapsed = opened_at.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    stop.store(true, Ordering::Relaxed);
    dribble.join().unwrap();
    for peer in &slow_peers {
        assert!(
            server.wait_for_log(
                "error.log",
                &format!("closed code=timeout user=- peer={peer}")
            ),
            "{peer}"
        );
    }
    // The slots are free again, and the logged-in honest client was never cut off.
    std::thread::sleep(Duration::from_millis(100));
    let mut fresh = server.connect_raw();
    assert_eq!(
        raw_exchange(&mut fresh, b"{\"op\":\"ping\"}\n", 1),
        ["{\"op\":\"pong\"}"]
    );
    honest.still_works();
}

#[test]
fn client_that_never_reads_is_cut_off_beside_an_honest_client() {
    let server = start(&["--max-output", "4096", "--write-timeout", "1"]);
    let mut honest = Honest::new(&server);
    server
        .client()
        .register("greedy", &password("greedy"), ITERATIONS)
        .unwrap();
    let greedy = RawSession::login_over(server.connect_small_window(), "greedy");
    let peer = greedy.peer();
    let mut stream = greedy.conn.stream;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Pipeline authenticated requests and never read an answer.
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let requests = b"{\"op\":\"balance\"}\n".repeat(1000);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(15) {
                if stream.write_all(&requests).is_err() {
                    break;
                }
            }
        })
    };
    // Both socket buffers fill within milliseconds; while the server waits (up to the 1 s
    // write timeout) on the greedy connection, the honest client is served.
    std::thread::sleep(Duration::from_millis(300));
    honest.still_works();
    assert!(server.wait_for_log(
        "error.log",
        &format!("limit output_overflow user=greedy peer={peer}")
    ));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(closed_by_peer(&mut stream));
    writer.join().unwrap();
    honest.still_works();
    assert_eq!(balance_of(&server, "greedy"), money("100.00"));
}
