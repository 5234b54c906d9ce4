//! Entry points for the fuzz targets in `fuzz/`, and the deterministic set-ups they share
//! with the corpus generator (`fuzz/examples/make_corpus.rs`). Not part of the public API.
//!
//! The session targets log in without PBKDF2: the user is the protocol vectors' `alice`
//! ([`vectors`]), whose `SaltedPassword` is a known constant, so the verifier goes straight
//! into the ledger and the client answers the challenge with
//! [`answer_with_key`](crate::ClientSession::answer_with_key). A whole set-up costs a few
//! dozen SHA-256 blocks instead of two 4096-iteration PBKDF2 runs.
//!
//! Everything is deterministic ([`TestRng`](crate::selftest::TestRng) with fixed seeds), so the same set-up always
//! yields the same session keys and nonces: a frame recorded once stays valid, which is how
//! the checked-in corpus holds genuine transfers and receipts.

use crate::amount::Amount;
use crate::auth::{SessionMacs, Verifier};
use crate::crypto::{ct_eq, Key};
use crate::encoding::{hex_decode, hex_encode};
use crate::framing::{encode_frame, Decoded, FrameDecoder, DEFAULT_MAX_FRAME, MAX_RESPONSE};
use crate::ledger::{Ledger, LedgerReply, LedgerRequest};
use crate::mac;
use crate::message::{
    NoncesRequestFrame, Request, Response, TransferFrame, TransferRequest, MAX_NONCE_BATCH,
};
use crate::names::Username;
use crate::replay::{Nonce, NONCE_LEN};
use crate::selftest::{vectors, Pair};
use crate::session::client::ClientEvent;
use heapless::Vec;

// ---------------------------------------------------------------------------------------
// Framing and messages
// ---------------------------------------------------------------------------------------

/// Frame decoder: the first byte picks the frame limit (1 to 256, via
/// [`FrameDecoder::set_limit`]), the second seeds the read sizes (1 to 64 bytes), the rest
/// is the stream. Checks that chunking changes neither the frames nor the errors, that no
/// frame exceeds the limit or holds a newline, and that every call makes progress.
pub fn frame_decoder(data: &[u8]) {
    let [limit, seed, input @ ..] = data else {
        return;
    };
    let limit = usize::from(*limit) + 1;
    let mut whole = FrameDecoder::<256>::new();
    let mut chunked = FrameDecoder::<256>::new();
    whole.set_limit(limit);
    chunked.set_limit(limit);

    // `whole` sees all the remaining input at once and is pulled one outcome at a time,
    // in step with `chunked`, which sees it in pseudo-random reads.
    let mut rest = input;
    let mut state = u32::from(*seed) | 0x100;
    let mut pos = 0;
    while pos < input.len() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let end = (pos + 1 + (state % 64) as usize).min(input.len());
        let mut chunk = &input[pos..end];
        while !chunk.is_empty() {
            let (n, got) = chunked.decode(chunk);
            assert!(n > 0, "decode consumed nothing");
            chunk = &chunk[n..];
            if matches!(got, Decoded::Incomplete) {
                assert!(chunk.is_empty(), "Incomplete before the end of the input");
                continue;
            }
            if let Decoded::Frame(f) = &got {
                assert!(f.len() <= limit, "frame longer than the limit");
                assert!(!f.contains(&b'\n'), "frame holds a newline");
            }
            // The same outcome must come out of the unchunked decoder next.
            loop {
                assert!(!rest.is_empty(), "chunking produced an extra outcome");
                let (m, want) = whole.decode(rest);
                rest = &rest[m..];
                if !matches!(want, Decoded::Incomplete) {
                    assert_eq!(got, want, "chunking changed the outcome");
                    break;
                }
            }
        }
        pos = end;
    }
    // Nothing may be left in the unchunked stream but an unfinished line.
    while !rest.is_empty() {
        let (m, d) = whole.decode(rest);
        rest = &rest[m..];
        assert!(matches!(d, Decoded::Incomplete), "chunking lost an outcome");
    }
    // An empty read drops a frame returned last time; then both hold the same tail.
    let _ = whole.decode(&[]);
    let _ = chunked.decode(&[]);
    assert_eq!(whole.buffered(), chunked.buffered());
}

/// Message parsers, both directions. A parsed request or response must not panic when
/// formatted either, and the client's receipt shortcut reads what serde-json-core reads
/// wherever it answers.
pub fn messages(data: &[u8]) {
    use core::fmt::Write;
    struct Sink;
    impl Write for Sink {
        fn write_str(&mut self, _: &str) -> core::fmt::Result {
            Ok(())
        }
    }
    if let Ok(r) = Request::parse(data) {
        let _ = write!(Sink, "{r:?}");
    }
    if let Ok(r) = Response::parse(data) {
        let _ = write!(Sink, "{r:?}");
    }
    assert!(
        Response::receipt_shortcut_agrees(data),
        "the receipt shortcut and serde-json-core read a response frame differently"
    );
}

/// The request reader against serde-json-core, its oracle: for any frame,
/// [`Request::parse`] (the hand-written reader) gives exactly what serde-json-core's path
/// gives, the request or the same error, and reads the same fields (allowing only the
/// documented difference past the tie-breaker's nesting limit, see
/// `Request::reader_agrees_with_serde`).
pub fn request_parser(data: &[u8]) {
    assert!(
        Request::reader_agrees_with_serde(data),
        "the reader and serde-json-core read a request frame differently"
    );
}

/// The server's response encoder (and the client's transfer writer, kind 9) against
/// serde-json-core: byte 0 picks the output size (0 to 1020, in steps of 4), byte 1 the frame
/// kind, bytes 2 to 9 the numbers; the rest,
/// split at `0xff` bytes, gives the strings, each its longest valid UTF-8 prefix (any
/// characters, those that need escaping included). Allocation-free, like the rest of the
/// test kit, so that the kit also builds for bare-metal self-test images. Checks that [`encode_response`](crate::response::encode_response)
/// writes exactly the bytes [`encode_frame`] writes, or fails when it fails.
pub fn response_encoder(data: &[u8]) {
    use crate::message::{
        BalanceFrame, BareFrame, ChallengeFrame, ErrorFrame, HistoryEntryFrame, HistoryFrame,
        NoncesFrame, ReceiptFrame, RegisteredFrame, WelcomeFrame, HISTORY_PAGE,
    };
    use crate::response::{encode_response, WriteJson};

    let [size, kind, n0, n1, n2, n3, n4, n5, n6, n7, rest @ ..] = data else {
        return;
    };
    let size = 4 * usize::from(*size);
    let number = u64::from_le_bytes([*n0, *n1, *n2, *n3, *n4, *n5, *n6, *n7]);
    let seq = number as u32;
    let mut parts = rest.split(|&b| b == 0xff).map(|part| {
        core::str::from_utf8(part).unwrap_or_else(|e| {
            // The prefix up to `valid_up_to` is valid UTF-8 by definition.
            core::str::from_utf8(&part[..e.valid_up_to()]).unwrap_or_default()
        })
    });
    let mut strings: [&str; 8] = [""; 8];
    for s in strings.iter_mut() {
        *s = parts.next().unwrap_or_default();
    }
    let s = &strings;

    fn check<T: WriteJson + serde::Serialize>(message: &T, size: usize) {
        let (mut ours, mut theirs) = ([0u8; 1024], [0u8; 1024]);
        let (ours, theirs) = (&mut ours[..size], &mut theirs[..size]);
        match (
            encode_response(message, ours),
            encode_frame(message, theirs),
        ) {
            (Ok(n), Ok(m)) => assert_eq!(ours[..n], theirs[..m], "different bytes"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("response encoder {a:?}, serde-json-core {b:?}"),
        }
    }

    match kind % 10 {
        0 => check(&BareFrame { op: "pong" }, size),
        1 => check(
            &ErrorFrame {
                op: s[0],
                code: s[1],
                message: s[2],
            },
            size,
        ),
        2 => {
            check(
                &ReceiptFrame {
                    op: s[0],
                    seq,
                    id: s[1],
                    to: s[2],
                    amount: s[3],
                    result: s[4],
                    balance: s[5],
                    mac: s[6],
                },
                size,
            );
            // The server's receipt from binary fields: the bytes of the frame of their texts.
            let (amount, balance) = (Amount(number), Amount(number.rotate_left(29)));
            let mut mac = [0u8; 32];
            for (i, b) in mac.iter_mut().enumerate() {
                *b = (number >> (i % 8 * 8)) as u8 ^ (i as u8).wrapping_mul(37);
            }
            let tag = crate::crypto::Tag::from_bytes(mac);
            let fields = crate::mac::ReceiptFields {
                seq,
                id: s[1],
                to: s[2],
                amount,
                result: s[4],
                balance,
                nonce: &[0; 16],
            };
            let (amount, balance) = (amount.to_text(), balance.to_text());
            let hex = crate::encoding::hex_encode::<64>(&mac);
            let text = ReceiptFrame {
                op: "receipt",
                seq,
                id: s[1],
                to: s[2],
                amount: &amount,
                result: s[4],
                balance: &balance,
                mac: &hex,
            };
            let (mut ours, mut theirs) = ([0u8; 1024], [0u8; 1024]);
            let (ours, theirs) = (&mut ours[..size], &mut theirs[..size]);
            let response = crate::response::ReceiptResponse {
                fields: &fields,
                mac: &tag,
            };
            let plain = encode_response(&response, ours);
            match (plain, encode_frame(&text, theirs)) {
                (Ok(n), Ok(m)) => assert_eq!(ours[..n], theirs[..m], "different receipt bytes"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("receipt encoder {a:?}, serde-json-core {b:?}"),
            }
            // The server's receipt, which skips the escape scan, for texts its types accept.
            let typed = crate::names::TransferId::parse(s[1]).is_ok()
                && crate::names::Username::parse(s[2]).is_ok()
                && (s[4] == "committed" || crate::error::ErrorCode::from_name(s[4]).is_some());
            if typed {
                let mut again = [0u8; 1024];
                let again = &mut again[..size];
                let checked = crate::response::CheckedReceipt {
                    fields: &fields,
                    mac: &tag,
                };
                match (encode_response(&checked, again), plain) {
                    (Ok(n), Ok(m)) => {
                        assert_eq!(again[..n], ours[..m], "different checked receipt")
                    }
                    (Err(_), Err(_)) => {}
                    (a, b) => panic!("checked receipt {a:?}, receipt {b:?}"),
                }
            }
        }
        3 => check(
            &BalanceFrame {
                op: s[0],
                seq,
                balance: s[1],
                mac: s[2],
            },
            size,
        ),
        4 => {
            let mut entries: Vec<HistoryEntryFrame<'_>, HISTORY_PAGE> = Vec::new();
            for i in 0..usize::from(*n7) % (HISTORY_PAGE + 1) {
                // The bits of `number` pick which optional fields an entry has.
                let bit = |b: usize| number >> (b + 3 * i) & 1 == 1;
                let _ = entries.push(HistoryEntryFrame {
                    kind: bit(1).then_some(s[(5 + i) % 8]),
                    id: bit(2).then_some(s[(1 + i) % 8]),
                    from: bit(3).then_some(s[(2 + i) % 8]),
                    to: s[(3 + i) % 8],
                    amount: s[(4 + i) % 8],
                    at: number,
                });
            }
            check(
                &HistoryFrame {
                    op: s[0],
                    seq,
                    entries,
                    more: number & 1 == 1,
                    mac: s[7],
                },
                size,
            )
        }
        5 => {
            let count = usize::from(*n7) % (MAX_NONCE_BATCH + 1);
            let nonces = (0..count).map(|i| s[i % 8]).collect();
            check(&NoncesFrame { op: s[0], nonces }, size)
        }
        6 => check(
            &ChallengeFrame {
                op: s[0],
                nonce: s[1],
                salt: s[2],
                iterations: seq,
            },
            size,
        ),
        7 => check(
            &WelcomeFrame {
                op: s[0],
                user: s[1],
                signature: s[2],
            },
            size,
        ),
        8 => check(
            &RegisteredFrame {
                op: s[0],
                user: s[1],
            },
            size,
        ),
        _ => {
            // The client's transfer from typed parts, for names the types accept: the bytes
            // serde-json-core writes for the `TransferFrame` of their texts.
            let (Ok(id), Ok(to)) = (crate::names::TransferId::parse(s[1]), Username::parse(s[2]))
            else {
                return;
            };
            let amount = Amount(number);
            let nonce: Nonce = core::array::from_fn(|i| (number >> (i % 8 * 8)) as u8 ^ i as u8);
            let mac: [u8; 32] = core::array::from_fn(|i| {
                (number >> (i % 8 * 8)) as u8 ^ (i as u8).wrapping_mul(37)
            });
            let tag = crate::crypto::Tag::from_bytes(mac);
            let agree =
                crate::response::transfer_writers_agree(&id, &to, amount, &nonce, &tag, size);
            assert_eq!(agree, Ok(()), "the transfer writers disagree");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared set-up
// ---------------------------------------------------------------------------------------

/// The logged-in user of the session targets: the protocol vectors' user.
pub const USER: &str = vectors::USER;
/// A second account, so that transfers can succeed.
pub const RECIPIENT: &str = "bob";
/// Nonces issued to the session during set-up.
pub const NONCES: usize = MAX_NONCE_BATCH;

/// The user's `SaltedPassword` (the vector; a core test checks it against PBKDF2).
pub fn salted_password() -> Key {
    Key::from_bytes(hex_decode(vectors::SALTED_PASSWORD).expect("vector SaltedPassword"))
}

fn salt() -> [u8; 16] {
    hex_decode(vectors::SALT_HEX).expect("vector salt")
}

/// The user's verifier, derived without PBKDF2.
pub fn verifier() -> Verifier {
    Verifier::from_salted_password(&salted_password(), &salt(), vectors::ITERATIONS)
}

/// A [`Pair`] whose ledger already holds [`USER`] and [`RECIPIENT`], both logged out.
pub fn pair() -> Pair {
    let mut pair = Pair::new(3);
    for user in [USER, RECIPIENT] {
        let request = LedgerRequest::Register {
            user: Username::parse(user).expect("fixed username"),
            verifier: verifier(),
        };
        let reply = pair.ledger.execute(&request, pair.now);
        assert_eq!(reply, LedgerReply::Registered(Ok(())), "register {user}");
    }
    pair
}

// ---------------------------------------------------------------------------------------
// Server session
// ---------------------------------------------------------------------------------------

/// A server session logged in as [`USER`] through a [`ClientSession`] (whose keys the
/// harness then holds, to forge frames with), with [`NONCES`] nonces outstanding.
pub struct ServerHarness {
    /// Server, ledger and clock; `pair.client` is the client that logged in.
    pub pair: Pair,
    /// The session's MAC keys, as the client derived them.
    pub keys: SessionMacs,
    /// The nonces issued during set-up, oldest first.
    pub nonces: Vec<Nonce, NONCES>,
}

impl Default for ServerHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerHarness {
    /// Logs in and takes [`NONCES`] nonces. Panics if the core refuses the set-up.
    pub fn new() -> ServerHarness {
        let mut pair = pair();
        let mut frame = [0u8; DEFAULT_MAX_FRAME];
        let mut answer = [0u8; 2 * MAX_RESPONSE];

        // The client session logs in (and checks the server's signature) with the vector's
        // SaltedPassword, so no PBKDF2 runs per fuzz input.
        pair.client
            .login(&mut pair.rng, USER)
            .expect("login request");
        assert!(
            matches!(pair.step(), Some(ClientEvent::Challenge { .. })),
            "no challenge"
        );
        pair.client
            .answer_with_key(&salted_password())
            .expect("proof");
        assert_eq!(pair.step(), Some(ClientEvent::LoggedIn), "not logged in");
        let keys = pair
            .client
            .danger_session_macs()
            .expect("logged-in client")
            .clone();

        let n = encode_frame(
            &NoncesRequestFrame {
                op: "nonces",
                count: NONCES as u8,
            },
            &mut frame,
        )
        .expect("nonces frame");
        let m = pair.server_receive(&frame[..n], &mut answer);
        let Ok(Response::Nonces(issued)) = Response::parse(trim(&answer[..m])) else {
            panic!("no nonces");
        };
        let mut nonces = Vec::new();
        for text in &issued.nonces {
            let nonce = hex_decode::<NONCE_LEN>(text).expect("nonce hex");
            nonces.push(nonce).expect("at most NONCES");
        }
        assert_eq!(nonces.len(), NONCES);
        while pair.server.poll_event().is_some() {}
        ServerHarness { pair, keys, nonces }
    }

    /// A valid transfer frame (newline included) from [`USER`] with `nonce`.
    pub fn transfer_frame(
        &self,
        id: &str,
        to: &str,
        amount: Amount,
        nonce: &Nonce,
    ) -> Vec<u8, DEFAULT_MAX_FRAME> {
        let tag = mac::transfer(&self.keys.client_to_server, USER, id, to, amount, nonce);
        let mac_text = hex_encode::<64>(tag.as_bytes());
        let nonce_text = hex_encode::<{ 2 * NONCE_LEN }>(nonce);
        let mut buf = [0u8; DEFAULT_MAX_FRAME];
        let n = encode_frame(
            &TransferFrame {
                op: "transfer",
                id,
                to,
                amount,
                nonce: &nonce_text,
                mac: &mac_text,
            },
            &mut buf,
        )
        .expect("transfer frame");
        Vec::from_slice(&buf[..n]).expect("fits")
    }

    /// Feeds `input` to the server, answering its ledger requests, until it takes no more.
    /// Each chunk of output (whole frames) goes to `output`. Returns the bytes consumed.
    pub fn drive(&mut self, input: &[u8], mut output: impl FnMut(&[u8])) -> usize {
        let p = &mut self.pair;
        let transmit = |pending: &[u8]| {
            output(pending);
            Ok::<_, core::convert::Infallible>(pending.len())
        };
        let Ok(used) = p
            .server
            .drive(&mut p.shared, &mut p.ledger, p.now, input, transmit, |_| {});
        used
    }
}

/// The frame before the first newline.
fn trim(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    &bytes[..end]
}

/// A logged-in server session (with [`NONCES`] nonces outstanding) fed arbitrary bytes.
///
/// Checks: no panic; every output frame parses as a [`Response`]; the ledger conserves
/// money (`total == minted`); every journal entry made is a transfer from [`USER`] that
/// some frame of the input carries with a valid MAC and an issued nonce, and there are no
/// more entries than distinct such nonces; with no valid transfer, `nonces` or `logout`
/// frame in the input, no nonce is burnt.
pub fn server_session(data: &[u8]) {
    server_session_on(ServerHarness::new(), data);
}

/// [`server_session`] on a harness made earlier, e.g. a copy of a template (the fuzz
/// target does that, so the set-up runs once per process instead of once per input).
pub fn server_session_on(mut h: ServerHarness, data: &[u8]) {
    let journal_before = h.pair.ledger.journal().len();

    let mut responses = FrameDecoder::<MAX_RESPONSE>::new();
    h.drive(data, |mut chunk| {
        while !chunk.is_empty() {
            let (n, d) = responses.decode(chunk);
            chunk = &chunk[n..];
            match d {
                Decoded::Incomplete => assert!(chunk.is_empty()),
                Decoded::Frame(f) => assert!(
                    Response::parse(f).is_ok(),
                    "the server sent a frame its client cannot parse: {:?}",
                    core::str::from_utf8(f)
                ),
                Decoded::Error(e) => panic!("the server sent an over-long frame: {e:?}"),
            }
        }
    });
    let _ = responses.decode(&[]);
    assert_eq!(
        responses.buffered(),
        0,
        "the server sent an unfinished frame"
    );

    // The oracle: which transfers may the input legitimately have made?
    let mut valid: Vec<TransferRequest, NONCES> = Vec::new();
    let mut ring_may_change = false;
    let mut lines = FrameDecoder::<DEFAULT_MAX_FRAME>::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (n, d) = lines.decode(rest);
        rest = &rest[n..];
        let Decoded::Frame(frame) = d else { continue };
        match Request::parse(frame) {
            Ok(Request::Transfer(t)) => {
                let tag = mac::transfer(
                    &h.keys.client_to_server,
                    USER,
                    t.id.as_str(),
                    t.to.as_str(),
                    t.amount,
                    &t.nonce,
                );
                let issued = h.nonces.contains(&t.nonce);
                let fresh = !valid.iter().any(|v| v.nonce == t.nonce);
                if ct_eq(tag.as_bytes(), &t.mac) && issued && fresh {
                    // At most NONCES distinct issued nonces.
                    let _ = valid.push(t);
                }
            }
            Ok(Request::Nonces { .. } | Request::Logout) => ring_may_change = true,
            _ => {}
        }
    }

    let ledger = &h.pair.ledger;
    assert_eq!(
        ledger.total(),
        ledger.minted(),
        "money created or destroyed"
    );
    let made = &ledger.journal()[journal_before..];
    assert!(
        made.len() <= valid.len(),
        "{} transfers journaled from {} valid frames",
        made.len(),
        valid.len()
    );
    for e in made {
        let matched = e.from.as_str() == USER
            && valid
                .iter()
                .any(|t| t.id == e.id && t.to == e.to && t.amount == e.amount);
        assert!(matched, "money moved without a valid MAC: {e:?}");
    }
    if valid.is_empty() && !ring_may_change {
        assert_eq!(
            h.pair.server.outstanding_nonces(),
            NONCES,
            "a nonce was burnt without a valid transfer"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Client session
// ---------------------------------------------------------------------------------------

/// The requests a [`ClientHarness`] leaves outstanding, in order.
pub const CLIENT_PENDING: &str = "transfer t-1 to bob 1.25, balance, history 0, ping, nonces 2";

/// A client session logged in as [`USER`], holding [`NONCES`] nonces, with the requests of
/// [`CLIENT_PENDING`] sent (in `pair.client`'s output) and not yet answered.
pub struct ClientHarness {
    /// Client, server and ledger. The server has not seen the pending requests.
    pub pair: Pair,
}

impl Default for ClientHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientHarness {
    /// Logs in, takes nonces, and queues the pending requests. Panics if the core refuses
    /// the set-up.
    pub fn new() -> ClientHarness {
        let mut p = pair();
        p.client.login(&mut p.rng, USER).expect("login request");
        assert!(
            matches!(p.step(), Some(ClientEvent::Challenge { .. })),
            "challenge"
        );
        p.client
            .answer_with_key(&salted_password())
            .expect("answer");
        assert_eq!(p.step(), Some(ClientEvent::LoggedIn), "logged in");
        p.client.request_nonces(NONCES as u8).expect("nonces");
        assert_eq!(
            p.step(),
            Some(ClientEvent::Nonces { available: NONCES }),
            "nonces"
        );
        p.client
            .transfer("t-1", RECIPIENT, Amount(125))
            .expect("transfer");
        p.client.balance().expect("balance");
        p.client.history(0).expect("history");
        p.client.ping().expect("ping");
        p.client.request_nonces(2).expect("nonces");
        ClientHarness { pair: p }
    }
}

/// A logged-in client session with requests outstanding ([`ClientHarness`]) fed arbitrary
/// bytes as if from the server.
///
/// Checks: no panic; every call makes progress; after an integrity event the session stays
/// failed; it never reports more verified answers of a kind than it has requests of that
/// kind outstanding.
pub fn client_session(data: &[u8]) {
    client_session_on(ClientHarness::new(), data);
}

/// [`client_session`] on a harness made earlier (see [`server_session_on`]).
pub fn client_session_on(mut h: ClientHarness, data: &[u8]) {
    let client = &mut h.pair.client;
    let n = client.poll_transmit().len();
    client.advance_transmit(n);

    // Outstanding: one transfer, one balance, one history, one ping, one nonces.
    let (mut receipts, mut balances, mut histories, mut pongs, mut nonces) = (0, 0, 0, 0, 0);
    let mut used = 0;
    while used < data.len() {
        let n = client.handle_input(&data[used..]);
        used += n;
        let mut events = 0;
        while let Some(event) = client.poll_event() {
            events += 1;
            match event {
                ClientEvent::Receipt(r) => {
                    receipts += 1;
                    assert_eq!(r.id.as_str(), "t-1", "receipt for a transfer never sent");
                    assert_eq!(r.amount, Amount(125), "receipt for another amount");
                }
                ClientEvent::Balance(_) => balances += 1,
                ClientEvent::History(_) => histories += 1,
                ClientEvent::Pong => pongs += 1,
                ClientEvent::Nonces { .. } => nonces += 1,
                ClientEvent::Integrity(_) => {
                    assert!(client.is_failed(), "integrity error without failing");
                }
                ClientEvent::Registered | ClientEvent::LoggedIn | ClientEvent::Challenge { .. } => {
                    panic!("unsolicited {event:?}")
                }
                _ => {}
            }
        }
        assert!(n > 0 || events > 0, "the client made no progress");
    }
    assert!(
        receipts <= 1 && balances <= 1 && histories <= 1 && pongs <= 1 && nonces <= 1,
        "more answers than requests"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salted_password_matches_pbkdf2() {
        let slow = crate::auth::salted_password(
            vectors::PASSWORD.as_bytes(),
            &salt(),
            vectors::ITERATIONS,
        );
        assert!(slow.ct_eq(&salted_password()));
    }

    #[test]
    fn harness_transfer_moves_money_once() {
        let mut h = ServerHarness::new();
        let nonce = h.nonces[0];
        let frame = h.transfer_frame("t-1", RECIPIENT, Amount(125), &nonce);
        let mut twice = std::vec::Vec::from(&frame[..]);
        twice.extend_from_slice(&frame);
        let mut out = std::vec::Vec::new();
        h.drive(&twice, |c| out.extend_from_slice(c));
        let text = std::string::String::from_utf8(out).unwrap();
        assert!(text.contains("\"result\":\"committed\""), "{text}");
        assert!(text.contains("unknown_nonce"), "{text}");
        assert_eq!(h.pair.ledger.journal().len(), 1);
        server_session(&twice);
    }

    /// Every frame kind, with strings that need escaping and ones that do not, at a size
    /// that fits and at sizes that do not.
    #[test]
    fn response_encoder_covers_every_kind() {
        for kind in 0..10u8 {
            for size in [0u8, 10, 40, 255] {
                let mut input = std::vec![size, kind, 7, 1, 0, 0, 0, 0, 0, 3];
                input
                    .extend_from_slice(b"alice\xffbo\"b\\\n\x01\xffx\xff\xc3\xa9\xff1.00\xff\xffz");
                response_encoder(&input);
            }
        }
        // A receipt whose id, recipient and result the server's types accept: the checked
        // receipt (no escape scan) is compared too, into every buffer size.
        for result in [&b"committed"[..], b"insufficient_funds"] {
            for size in 0..=255u8 {
                let mut input = std::vec![size, 2, 7, 1, 0, 0, 0, 0, 0, 3];
                input.extend_from_slice(b"x\xfft-1:a.B_\xffbob.c-d\xffx\xff");
                input.extend_from_slice(result);
                response_encoder(&input);
            }
        }
        // The client's transfer, with names its types accept, into every buffer size.
        for size in 0..=255u8 {
            let mut input = std::vec![size, 9, 0x9a, 0x1f, 0, 0, 0, 0, 0, 3];
            input.extend_from_slice(b"x\xfft-1:a.B_\xffbob.c-d");
            response_encoder(&input);
        }
    }

    #[test]
    fn request_parser_takes_frames_both_ways() {
        for frame in [
            &b"{\"op\":\"ping\"}"[..],
            b" {\t\"op\" : \"balance\" } ",
            b"{\"op\":\"ping\",\"op\":\"ping\"}",
            b"{\"op\":\"nonces\",\"count\":8}",
            b"{\"op\":\"p\\u0069ng\"}",
            b"{\"op\":\"transfer\",\"id\":\"t\",\"to\":\"bob\",\"amount\":\"1\",\"nonce\":\"00\",\"mac\":\"00\"}",
        ] {
            request_parser(frame);
        }
    }

    #[test]
    fn targets_accept_junk() {
        let junk: &[&[u8]] = &[
            b"",
            b"\n",
            b"{\"op\":\"ping\"}\n",
            b"\xff\xfe\n",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
            b"{\"op\":\"logout\"}\n{\"op\":\"ping\"}\n",
        ];
        for j in junk {
            frame_decoder(j);
            messages(j);
            response_encoder(j);
            server_session(j);
            client_session(j);
        }
    }

    #[test]
    fn client_harness_accepts_genuine_answers() {
        let mut h = ClientHarness::new();
        let p = &mut h.pair;
        let mut req = [0u8; 1024];
        let n = p.client.poll_transmit().len();
        req[..n].copy_from_slice(p.client.poll_transmit());
        let mut answer = [0u8; 4096];
        let m = p.server_receive(&req[..n], &mut answer);
        client_session(&answer[..m]);

        // The same answers, checked event by event.
        p.client.advance_transmit(n);
        let mut events = std::vec::Vec::new();
        let mut used = 0;
        while used < m {
            let n = p.client.handle_input(&answer[used..m]);
            used += n;
            let before = events.len();
            while let Some(e) = p.client.poll_event() {
                events.push(e);
            }
            assert!(
                n > 0 || events.len() > before,
                "the client made no progress"
            );
        }
        assert!(
            matches!(&events[..], [
                ClientEvent::Receipt(r),
                ClientEvent::Balance(Amount(9_875)),
                ClientEvent::History(_),
                ClientEvent::Pong,
                ClientEvent::Nonces { .. },
            ] if r.result.is_ok()),
            "{events:?}"
        );
    }
}
