//! Checks `docs/vectors.json` against the implementation, and `docs/PROTOCOL.md`'s examples
//! against the parsers.
//!
//! - Every value in the vectors equals what `txsock_core` computes, and the login and
//!   message vectors equal the constants in `txsock_core::selftest::vectors`.
//! - Every documented MAC input string, fed to plain HMAC-SHA256, gives the same tag as the
//!   `mac` module: the byte layout in the spec is the one the code MACs.
//! - Every documented SCRAM string (client-first-bare, server-first, client-final without
//!   proof, AuthMessage), fed to HMAC, gives what `auth::AuthMessage` feeds.
//! - Every ```json block of `docs/PROTOCOL.md` is a message the parsers accept, and every
//!   frame of the vector conversation appears there.
//! - `docs/check_vectors.py` (an independent Python implementation of the documented rules)
//!   passes, when `python3` is installed.

use serde_json::Value;
use std::path::PathBuf;
use txsock_core::amount::AmountError;
use txsock_core::auth::{self, AuthMessage, ClientProof, Verifier};
use txsock_core::crypto::{hmac_sha256, sha256, Key, Keyed};
use txsock_core::encoding::{base64_decode, base64_encode, hex_decode, hex_encode};
use txsock_core::framing::{Decoded, FrameDecoder, DEFAULT_MAX_FRAME, MAX_RESPONSE};
use txsock_core::lockout::Backoff;
use txsock_core::message::{Request, Response, HISTORY_PAGE, MAX_NONCE_BATCH};
use txsock_core::names::{NameError, MAX_TRANSFER_ID, MAX_USERNAME};
use txsock_core::replay::{DEFAULT_NONCES, NONCE_LEN};
use txsock_core::selftest::{vectors as consts, RFC7677};
use txsock_core::session::client::ClientConfig;
use txsock_core::session::server::ServerConfig;
use txsock_core::{mac, Amount, ErrorCode, TransferId, Username};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("core/ has a parent")
        .to_path_buf()
}

fn vectors() -> Value {
    let path = repo().join("docs/vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("docs/vectors.json is JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an integer in {v}"))
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len() % 2 == 0, "odd hex {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    hex_encode::<128>(bytes).as_str().to_owned()
}

fn b64(bytes: &[u8]) -> String {
    base64_encode::<64>(bytes).as_str().to_owned()
}

fn unb64(text: &str) -> Vec<u8> {
    let mut buf = [0u8; 64];
    base64_decode(text, &mut buf)
        .unwrap_or_else(|_| panic!("non-canonical base64 {text}"))
        .to_vec()
}

fn key32(hex_text: &str) -> Key {
    Key::from_bytes(hex_decode::<32>(hex_text).expect("32-byte hex key"))
}

/// The session keys of the `login` vector, which the MAC vectors use.
struct Keys {
    c2s: Key,
    s2c: Key,
}

fn keys_of(v: &Value) -> Keys {
    Keys {
        c2s: key32(s(&v["login"], "session_key_c2s_hex")),
        s2c: key32(s(&v["login"], "session_key_s2c_hex")),
    }
}

/// Checks one SCRAM exchange (`login` or `rfc7677`) against `auth` and against HMAC over
/// the documented strings.
fn check_login(l: &Value) {
    let user = s(l, "user");
    let salt = unhex(s(l, "salt_hex"));
    let iterations = u32::try_from(n(l, "iterations")).expect("u32 iterations");
    let (client_nonce, full_nonce) = (s(l, "client_nonce"), s(l, "full_nonce"));
    assert_eq!(b64(&salt), s(l, "salt_b64"), "salt_b64");
    assert_eq!(unb64(s(l, "salt_b64")), salt, "salt_b64 decodes");
    for k in [
        "stored_key_b64",
        "server_key_b64",
        "client_proof_b64",
        "server_signature_b64",
    ] {
        assert_eq!(
            unb64(s(l, k)).len(),
            32,
            "{k} is 32 bytes of canonical base64"
        );
    }
    assert!(full_nonce.starts_with(client_nonce) && full_nonce.len() > client_nonce.len());

    // The documented SCRAM strings, rebuilt from the fields.
    let client_first_bare = format!("n={user},r={client_nonce}");
    let server_first = format!("r={full_nonce},s={},i={iterations}", s(l, "salt_b64"));
    let client_final = format!("c=biws,r={full_nonce}");
    assert_eq!(client_first_bare, s(l, "client_first_bare"));
    assert_eq!(server_first, s(l, "server_first"));
    assert_eq!(client_final, s(l, "client_final_without_proof"));
    let auth_message = s(l, "auth_message");
    assert_eq!(
        format!("{client_first_bare},{server_first},{client_final}"),
        auth_message
    );

    // What auth::AuthMessage feeds to HMAC is exactly the documented AuthMessage.
    let auth = AuthMessage {
        user,
        client_nonce,
        full_nonce,
        salt: &salt,
        iterations,
    };
    let probe_key = [0x5a_u8; 32];
    let mut fed = Key::from_bytes(probe_key).mac();
    auth.feed(&mut fed);
    assert_eq!(
        *fed.finish().as_bytes(),
        hmac_sha256(&probe_key, auth_message.as_bytes()),
        "AuthMessage bytes differ from the documented string"
    );

    // SCRAM values, from the implementation.
    let salted = auth::salted_password(s(l, "password").as_bytes(), &salt, iterations);
    assert_eq!(
        hex(salted.as_bytes()),
        s(l, "salted_password_hex"),
        "SaltedPassword"
    );
    let client_key = auth::client_key(&salted);
    assert_eq!(
        hex(client_key.as_bytes()),
        s(l, "client_key_hex"),
        "ClientKey"
    );
    let verifier = Verifier::from_salted_password(&salted, &salt, iterations);
    assert_eq!(
        b64(&verifier.stored_key),
        s(l, "stored_key_b64"),
        "StoredKey"
    );
    assert_eq!(
        b64(&verifier.server_key),
        s(l, "server_key_b64"),
        "ServerKey"
    );
    let proof = ClientProof::compute(&salted, &auth);
    assert_eq!(b64(&proof.proof), s(l, "client_proof_b64"), "ClientProof");
    assert_eq!(
        b64(proof.expected_server_signature.as_bytes()),
        s(l, "server_signature_b64"),
        "ServerSignature"
    );
    let c2s = s(l, "session_key_c2s_hex");
    let s2c = s(l, "session_key_s2c_hex");
    assert_eq!(hex(proof.keys.client_to_server.as_bytes()), c2s, "c2s key");
    assert_eq!(hex(proof.keys.server_to_client.as_bytes()), s2c, "s2c key");

    // The same values from the RFC 5802 definitions over the documented strings.
    assert_eq!(
        hmac_sha256(salted.as_bytes(), b"Client Key"),
        *client_key.as_bytes(),
        "ClientKey = HMAC(SaltedPassword, \"Client Key\")"
    );
    assert_eq!(sha256(client_key.as_bytes()), verifier.stored_key);
    assert_eq!(
        hmac_sha256(salted.as_bytes(), b"Server Key"),
        verifier.server_key
    );
    let client_signature = hmac_sha256(&verifier.stored_key, auth_message.as_bytes());
    let xored: Vec<u8> = client_key
        .as_bytes()
        .iter()
        .zip(client_signature)
        .map(|(a, b)| a ^ b)
        .collect();
    assert_eq!(
        xored, proof.proof,
        "ClientProof = ClientKey XOR ClientSignature"
    );
    assert_eq!(
        hmac_sha256(&verifier.server_key, auth_message.as_bytes()),
        *proof.expected_server_signature.as_bytes()
    );
    for (label_key, want) in [
        ("session_key_c2s_label", c2s),
        ("session_key_s2c_label", s2c),
    ] {
        let mut input = s(l, label_key).as_bytes().to_vec();
        assert_eq!(input.last(), Some(&0), "{label_key} ends with NUL");
        input.extend_from_slice(auth_message.as_bytes());
        assert_eq!(
            hex(&hmac_sha256(client_key.as_bytes(), &input)),
            want,
            "{label_key}"
        );
    }

    // And the server side agrees.
    let (signature, keys) = auth::verify_client_proof(
        &verifier.stored_key,
        &verifier.server_key,
        &auth,
        &proof.proof,
    )
    .expect("the server accepts the vector proof");
    assert_eq!(
        signature.as_bytes(),
        proof.expected_server_signature.as_bytes()
    );
    assert_eq!(hex(keys.client_to_server.as_bytes()), c2s);
    assert_eq!(hex(keys.server_to_client.as_bytes()), s2c);
}

#[test]
fn login_vectors_match_the_implementation() {
    let v = vectors();
    assert_eq!(s(&v, "protocol"), "txsock/1");
    check_login(&v["login"]);
    check_login(&v["rfc7677"]);
}

#[test]
fn vectors_equal_the_selftest_constants() {
    let v = vectors();
    let l = &v["login"];
    assert_eq!(s(l, "user"), consts::USER);
    assert_eq!(s(l, "password"), consts::PASSWORD);
    assert_eq!(s(l, "salt_hex"), consts::SALT_HEX);
    assert_eq!(n(l, "iterations"), u64::from(consts::ITERATIONS));
    assert_eq!(s(l, "client_nonce"), consts::CLIENT_NONCE);
    assert_eq!(s(l, "full_nonce"), consts::FULL_NONCE);
    assert_eq!(s(l, "salted_password_hex"), consts::SALTED_PASSWORD);
    assert_eq!(s(l, "stored_key_b64"), consts::STORED_KEY);
    assert_eq!(s(l, "server_key_b64"), consts::SERVER_KEY);
    assert_eq!(s(l, "client_proof_b64"), consts::CLIENT_PROOF);
    assert_eq!(s(l, "server_signature_b64"), consts::SERVER_SIGNATURE);
    assert_eq!(s(l, "session_key_c2s_hex"), consts::KEY_C2S);
    assert_eq!(s(l, "session_key_s2c_hex"), consts::KEY_S2C);

    let macs = v["macs"].as_array().unwrap();
    let (t, r, b) = (&macs[0], &macs[1], &macs[2]);
    assert_eq!(
        (s(t, "name"), s(r, "name"), s(b, "name")),
        ("transfer", "receipt", "balance")
    );
    let tf = &t["fields"];
    assert_eq!(s(tf, "user"), consts::USER);
    assert_eq!(s(tf, "id"), consts::TRANSFER_ID);
    assert_eq!(s(tf, "to"), consts::TRANSFER_TO);
    assert_eq!(n(tf, "amount_minor"), consts::TRANSFER_AMOUNT);
    assert_eq!(s(tf, "nonce_hex"), consts::TRANSFER_NONCE);
    assert_eq!(s(t, "mac_hex"), consts::TRANSFER_MAC);
    let rf = &r["fields"];
    assert_eq!(n(rf, "seq"), u64::from(consts::RECEIPT_SEQ));
    assert_eq!(s(rf, "id"), consts::TRANSFER_ID);
    assert_eq!(s(rf, "to"), consts::TRANSFER_TO);
    assert_eq!(n(rf, "amount_minor"), consts::TRANSFER_AMOUNT);
    assert_eq!(s(rf, "result"), "committed");
    assert_eq!(n(rf, "balance_minor"), consts::RECEIPT_BALANCE);
    assert_eq!(s(rf, "nonce_hex"), consts::TRANSFER_NONCE);
    assert_eq!(s(r, "mac_hex"), consts::RECEIPT_MAC);
    let bf = &b["fields"];
    assert_eq!(n(bf, "seq"), u64::from(consts::BALANCE_SEQ));
    assert_eq!(n(bf, "balance_minor"), consts::RECEIPT_BALANCE);
    assert_eq!(s(b, "mac_hex"), consts::BALANCE_MAC);

    let rfc = &v["rfc7677"];
    assert_eq!(s(rfc, "user"), RFC7677.user);
    assert_eq!(s(rfc, "password"), RFC7677.password);
    assert_eq!(s(rfc, "client_nonce"), RFC7677.client_nonce);
    assert_eq!(s(rfc, "full_nonce"), RFC7677.full_nonce);
    assert_eq!(s(rfc, "salt_b64"), RFC7677.salt_b64);
    assert_eq!(n(rfc, "iterations"), u64::from(RFC7677.iterations));
    assert_eq!(s(rfc, "client_proof_b64"), RFC7677.proof_b64);
    assert_eq!(s(rfc, "server_signature_b64"), RFC7677.server_signature_b64);
}

/// The tag `mac::*` computes for one MAC vector's fields.
fn mac_of(name: &str, f: &Value, keys: &Keys) -> [u8; 32] {
    let amount = |k: &str| Amount(n(f, k));
    let seq = |f: &Value| u32::try_from(n(f, "seq")).expect("u32 seq");
    match name {
        "transfer" => {
            let nonce = hex_decode::<NONCE_LEN>(s(f, "nonce_hex")).unwrap();
            *mac::transfer(
                &keys.c2s,
                s(f, "user"),
                s(f, "id"),
                s(f, "to"),
                amount("amount_minor"),
                &nonce,
            )
            .as_bytes()
        }
        "receipt" => {
            let nonce = hex_decode::<NONCE_LEN>(s(f, "nonce_hex")).unwrap();
            let fields = mac::ReceiptFields {
                seq: seq(f),
                id: s(f, "id"),
                to: s(f, "to"),
                amount: amount("amount_minor"),
                result: s(f, "result"),
                balance: amount("balance_minor"),
                nonce: &nonce,
            };
            *mac::receipt(&keys.s2c, &fields).as_bytes()
        }
        "balance" => *mac::balance(&keys.s2c, seq(f), amount("balance_minor")).as_bytes(),
        "history" => {
            let more = f["more"].as_bool().expect("more is a bool");
            let mut input = mac::history_start(&keys.s2c, seq(f), more);
            for e in f["entries"].as_array().unwrap() {
                input = mac::history_entry(
                    input,
                    s(e, "id"),
                    s(e, "from"),
                    s(e, "to"),
                    Amount(n(e, "amount_minor")),
                    n(e, "at"),
                );
            }
            *input.finish().as_bytes()
        }
        "statement" => {
            let more = f["more"].as_bool().expect("more is a bool");
            let mut input = mac::statement_start(&keys.s2c, seq(f), more);
            for e in f["entries"].as_array().unwrap() {
                // A deposit has no id and no sender: empty fields in the input.
                let text = |k: &str| e[k].as_str().unwrap_or("");
                input = mac::statement_entry(
                    input,
                    s(e, "kind"),
                    text("id"),
                    text("from"),
                    s(e, "to"),
                    Amount(n(e, "amount_minor")),
                    n(e, "at"),
                );
            }
            *input.finish().as_bytes()
        }
        other => panic!("unknown MAC vector {other}"),
    }
}

#[test]
fn mac_vectors_match_the_documented_byte_strings() {
    let v = vectors();
    let keys = keys_of(&v);
    let macs = v["macs"].as_array().unwrap();
    assert!(macs.len() >= 4);
    for m in macs {
        let name = s(m, "name");
        let key = match s(m, "key") {
            "c2s" => &keys.c2s,
            "s2c" => &keys.s2c,
            other => panic!("unknown key {other}"),
        };
        let input = s(m, "input");
        assert!(
            input.starts_with(&format!("txsock/1 {name}\0")),
            "{name}: label"
        );
        let want = s(m, "mac_hex");
        assert_eq!(
            hex(&mac_of(name, &m["fields"], &keys)),
            want,
            "{name}: mac::"
        );
        assert_eq!(
            hex(&hmac_sha256(key.as_bytes(), input.as_bytes())),
            want,
            "{name}: HMAC over the documented input"
        );
    }
}

fn amount_error_name(e: AmountError) -> &'static str {
    match e {
        AmountError::Malformed => "malformed",
        AmountError::TooPrecise => "too_precise",
        AmountError::Zero => "zero",
        AmountError::TooLarge => "too_large",
        _ => "other",
    }
}

fn name_error_name(e: NameError) -> &'static str {
    match e {
        NameError::Empty => "empty",
        NameError::TooLong => "too_long",
        NameError::TooShort => "too_short",
        NameError::BadCharacter => "bad_character",
        _ => "other",
    }
}

#[test]
fn value_vectors_match_the_parsers() {
    let v = vectors();
    for (section, parse) in [
        (
            "amounts",
            Amount::parse as fn(&str) -> Result<Amount, AmountError>,
        ),
        ("balances", Amount::parse_non_negative),
    ] {
        for ok in v[section]["valid"].as_array().unwrap() {
            let text = s(ok, "text");
            assert_eq!(
                parse(text),
                Ok(Amount(n(ok, "minor"))),
                "{section} {text:?}"
            );
            // Responses spell amounts with exactly two decimals.
            let spelled = Amount(n(ok, "minor")).to_text();
            assert_eq!(parse(&spelled), Ok(Amount(n(ok, "minor"))));
        }
        for bad in v[section]["invalid"].as_array().unwrap() {
            let text = s(bad, "text");
            let got = parse(text).map_err(amount_error_name);
            assert_eq!(got, Err(s(bad, "error")), "{section} {text:?}");
        }
    }
    for ok in v["usernames"]["valid"].as_array().unwrap() {
        let got = Username::parse(s(ok, "text")).expect("valid username");
        assert_eq!(got.as_str(), s(ok, "normalised"));
    }
    for bad in v["usernames"]["invalid"].as_array().unwrap() {
        let got = Username::parse(s(bad, "text")).map_err(name_error_name);
        assert_eq!(got.map(|_| ()), Err(s(bad, "error")), "{bad}");
    }
    for ok in v["transfer_ids"]["valid"].as_array().unwrap() {
        let text = ok.as_str().unwrap();
        assert_eq!(TransferId::parse(text).expect("valid id").as_str(), text);
    }
    for bad in v["transfer_ids"]["invalid"].as_array().unwrap() {
        let got = TransferId::parse(s(bad, "text")).map_err(name_error_name);
        assert_eq!(got.map(|_| ()), Err(s(bad, "error")), "{bad}");
    }
}

fn decode_all<const N: usize>(chunks: &[&str]) -> Vec<Result<String, &'static str>> {
    let mut decoder = FrameDecoder::<N>::new();
    let mut out = Vec::new();
    for chunk in chunks {
        let mut rest = chunk.as_bytes();
        while !rest.is_empty() {
            let (used, decoded) = decoder.decode(rest);
            // Without a hold, every call takes something: this loop must not spin.
            assert!(used > 0, "decode took nothing from {rest:?}");
            match decoded {
                Decoded::Incomplete => {}
                Decoded::Frame(f) => out.push(Ok(String::from_utf8(f.to_vec()).unwrap())),
                Decoded::Error(_) => out.push(Err("frame_too_long")),
            }
            rest = &rest[used..];
        }
    }
    out
}

#[test]
fn framing_vectors_match_the_decoder() {
    let v = vectors();
    for case in v["framing"].as_array().unwrap() {
        let chunks: Vec<&str> = case["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let got = match n(case, "max_frame") {
            16 => decode_all::<16>(&chunks),
            512 => decode_all::<DEFAULT_MAX_FRAME>(&chunks),
            other => panic!("no decoder size {other} in this test"),
        };
        let want: Vec<Result<String, &str>> = case["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| match e.get("frame") {
                Some(f) => Ok(f.as_str().unwrap().to_owned()),
                None => Err(s(e, "error")),
            })
            .collect();
        assert_eq!(got, want, "{case}");
    }
}

fn request_op(r: &Request) -> &'static str {
    match r {
        Request::Register(_) => "register",
        Request::Login { .. } => "login",
        Request::Proof { .. } => "proof",
        Request::Nonces { .. } => "nonces",
        Request::Transfer(_) => "transfer",
        Request::Balance => "balance",
        Request::History {
            deposits: false, ..
        } => "history",
        Request::History { deposits: true, .. } => "statement",
        Request::Logout => "logout",
        Request::Ping => "ping",
        _ => "other",
    }
}

#[test]
fn request_vectors_match_the_parser() {
    let v = vectors();
    for case in v["requests"].as_array().unwrap() {
        let bytes = match case.get("frame") {
            Some(f) => f.as_str().unwrap().as_bytes().to_vec(),
            None => unhex(s(case, "frame_hex")),
        };
        let got = Request::parse(&bytes)
            .map(|r| request_op(&r))
            .map_err(|e| e.code().name());
        let want = match case.get("op") {
            Some(op) => Ok(op.as_str().unwrap()),
            None => Err(s(case, "error")),
        };
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn error_and_limit_tables_match_the_implementation() {
    let v = vectors();
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), ErrorCode::ALL.len(), "every code is listed");
    for (e, code) in errors.iter().zip(ErrorCode::ALL) {
        assert_eq!(s(e, "code"), code.name());
        assert_eq!(s(e, "message"), code.message(), "{}", code.name());
        assert_eq!(
            e["closes_connection"].as_bool(),
            Some(code.is_fatal()),
            "{}",
            code.name()
        );
    }

    let l = &v["limits"];
    let server = ServerConfig::default();
    let backoff = |b: &Value, want: &Backoff| {
        assert_eq!(n(b, "lock_after"), u64::from(want.lock_after));
        assert_eq!(n(b, "base_ms"), want.base.millis());
        assert_eq!(n(b, "max_ms"), want.max.millis());
        assert_eq!(n(b, "forget_after_ms"), want.forget_after.millis());
    };
    let size = |k: &str| usize::try_from(n(l, k)).unwrap();
    assert_eq!(size("max_frame_bytes"), DEFAULT_MAX_FRAME);
    assert_eq!(size("max_frame_bytes"), server.max_frame);
    assert_eq!(size("max_response_bytes"), MAX_RESPONSE);
    assert_eq!(size("nonce_bytes"), NONCE_LEN);
    assert_eq!(size("nonce_ring"), DEFAULT_NONCES);
    assert_eq!(size("nonce_ring"), server.max_nonces);
    assert_eq!(size("max_nonces_per_request"), MAX_NONCE_BATCH);
    assert_eq!(n(l, "max_bad_frames"), u64::from(server.max_bad_frames));
    assert_eq!(n(l, "login_deadline_ms"), server.login_deadline.millis());
    assert_eq!(n(l, "idle_timeout_ms"), server.idle_timeout.millis());
    assert_eq!(
        n(l, "default_iterations"),
        u64::from(auth::DEFAULT_ITERATIONS)
    );
    assert_eq!(
        n(l, "server_min_iterations"),
        u64::from(server.min_iterations)
    );
    assert_eq!(
        n(l, "client_min_iterations"),
        u64::from(ClientConfig::default().min_iterations)
    );
    assert_eq!(n(l, "max_iterations"), u64::from(auth::MAX_ITERATIONS));
    assert_eq!(
        n(l, "max_iterations"),
        u64::from(ClientConfig::default().max_iterations)
    );
    assert_eq!(
        n(l, "unknown_user_iterations"),
        u64::from(server.unknown_user_iterations)
    );
    assert_eq!(size("generated_salt_bytes"), auth::SALT_LEN);
    assert_eq!(size("max_salt_bytes"), auth::MAX_SALT);
    assert_eq!(size("max_client_nonce_chars"), auth::MAX_SCRAM_NONCE);
    assert_eq!(size("max_username_bytes"), MAX_USERNAME);
    assert_eq!(size("max_transfer_id_bytes"), MAX_TRANSFER_ID);
    assert_eq!(n(l, "max_amount_minor"), Amount::MAX.minor());
    assert_eq!(size("proof_bytes"), txsock_core::crypto::TAG_LEN);
    assert_eq!(size("min_salt_bytes"), auth::MIN_SALT);
    assert_eq!(size("history_page_entries"), HISTORY_PAGE);
    assert_eq!(n(l, "max_history_offset"), u64::from(u32::MAX));
    backoff(&l["account_backoff"], &Backoff::ACCOUNT);
    backoff(&l["address_backoff"], &Backoff::ADDRESS);
    assert_eq!(server.account_backoff, Backoff::ACCOUNT);
    assert_eq!(server.address_backoff, Backoff::ADDRESS);
}

/// Replays the vector conversation through the parsers and checks every proof, signature
/// and MAC in it.
#[test]
fn conversation_vector_verifies() {
    let v = vectors();
    let keys = keys_of(&v);
    let l = &v["login"];
    let mut last_nonce = None;
    let mut last_seq = 0u32;
    for step in v["conversation"].as_array().unwrap() {
        let frame = s(step, "frame");
        match s(step, "from") {
            "client" => match Request::parse(frame.as_bytes()).expect(frame) {
                Request::Register(r) => {
                    assert_eq!(r.user.as_str(), s(l, "user"));
                    assert_eq!(&r.verifier.salt[..], &unhex(s(l, "salt_hex"))[..]);
                    assert_eq!(u64::from(r.verifier.iterations), n(l, "iterations"));
                    assert_eq!(b64(&r.verifier.stored_key), s(l, "stored_key_b64"));
                    assert_eq!(b64(&r.verifier.server_key), s(l, "server_key_b64"));
                }
                Request::Login { user, nonce } => {
                    assert_eq!(user.as_str(), s(l, "user"));
                    assert_eq!(nonce.as_str(), s(l, "client_nonce"));
                }
                Request::Proof { proof } => assert_eq!(b64(&proof), s(l, "client_proof_b64")),
                Request::Transfer(t) => {
                    let tag = mac::transfer(
                        &keys.c2s,
                        s(l, "user"),
                        t.id.as_str(),
                        t.to.as_str(),
                        t.amount,
                        &t.nonce,
                    );
                    assert_eq!(tag.as_bytes(), &t.mac, "transfer MAC in {frame}");
                    last_nonce = Some(t.nonce);
                }
                _ => {}
            },
            "server" => match Response::parse(frame.as_bytes()).expect(frame) {
                Response::Challenge(c) => {
                    assert_eq!(c.nonce, s(l, "full_nonce"));
                    assert_eq!(c.salt, s(l, "salt_b64"));
                    assert_eq!(u64::from(c.iterations), n(l, "iterations"));
                }
                Response::Welcome(w) => {
                    assert_eq!(w.user, s(l, "user"));
                    assert_eq!(w.signature, s(l, "server_signature_b64"));
                }
                Response::Nonces(ns) => {
                    assert!(!ns.nonces.is_empty() && ns.nonces.len() <= MAX_NONCE_BATCH);
                    for text in &ns.nonces {
                        hex_decode::<NONCE_LEN>(text).expect("nonce hex");
                    }
                }
                Response::Receipt(r) => {
                    assert_eq!(r.seq, last_seq + 1, "{frame}");
                    last_seq = r.seq;
                    let nonce = last_nonce.expect("a receipt answers a transfer");
                    let fields = mac::ReceiptFields {
                        seq: r.seq,
                        id: r.id,
                        to: r.to,
                        amount: Amount::parse(r.amount).unwrap(),
                        result: r.result,
                        balance: Amount::parse_non_negative(r.balance).unwrap(),
                        nonce: &nonce,
                    };
                    assert_eq!(
                        hex(mac::receipt(&keys.s2c, &fields).as_bytes()),
                        r.mac,
                        "{frame}"
                    );
                }
                Response::Balance(b) => {
                    assert_eq!(b.seq, last_seq + 1, "{frame}");
                    last_seq = b.seq;
                    let balance = Amount::parse_non_negative(b.balance).unwrap();
                    assert_eq!(
                        hex(mac::balance(&keys.s2c, b.seq, balance).as_bytes()),
                        b.mac
                    );
                }
                Response::History(h) => {
                    assert_eq!(h.seq, last_seq + 1, "{frame}");
                    last_seq = h.seq;
                    let mut input = mac::history_start(&keys.s2c, h.seq, h.more);
                    for e in &h.entries {
                        let amount = Amount::parse(e.amount).unwrap();
                        let (id, from) = (e.id.unwrap(), e.from.unwrap());
                        input = mac::history_entry(input, id, from, e.to, amount, e.at);
                    }
                    assert_eq!(hex(input.finish().as_bytes()), h.mac, "{frame}");
                }
                Response::Statement(h) => {
                    assert_eq!(h.seq, last_seq + 1, "{frame}");
                    last_seq = h.seq;
                    let mut input = mac::statement_start(&keys.s2c, h.seq, h.more);
                    for e in &h.entries {
                        let amount = Amount::parse(e.amount).unwrap();
                        let (id, from) = (e.id.unwrap_or(""), e.from.unwrap_or(""));
                        let kind = e.kind.unwrap();
                        input = mac::statement_entry(input, kind, id, from, e.to, amount, e.at);
                    }
                    assert_eq!(hex(input.finish().as_bytes()), h.mac, "{frame}");
                }
                Response::Error(e) => {
                    let code = ErrorCode::from_name(e.code).expect("known code");
                    assert_eq!(e.message, code.message());
                }
                _ => {}
            },
            other => panic!("unknown direction {other}"),
        }
    }
    assert!(
        last_seq >= 3,
        "the conversation exercises authenticated responses"
    );
}

/// The JSON values of every ```json block in `docs/PROTOCOL.md`.
fn protocol_examples() -> (String, Vec<Value>) {
    let path = repo().join("docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut values = Vec::new();
    let mut block: Option<String> = None;
    for line in doc.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```json") => block = Some(String::new()),
            (Some(text), "```") => {
                let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
                for value in stream {
                    values.push(value.unwrap_or_else(|e| panic!("bad JSON in PROTOCOL.md: {e}")));
                }
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(block.is_none(), "unterminated ```json block in PROTOCOL.md");
    (doc, values)
}

#[test]
fn protocol_md_examples_are_valid_messages() {
    let (doc, examples) = protocol_examples();
    assert!(examples.len() >= 20, "PROTOCOL.md shows every message");
    for value in &examples {
        let line = serde_json::to_string(value).unwrap();
        assert!(
            line.len() < DEFAULT_MAX_FRAME,
            "example longer than a frame: {line}"
        );
        let request = Request::parse(line.as_bytes());
        let response = Response::parse(line.as_bytes());
        assert!(
            request.is_ok() || response.is_ok(),
            "PROTOCOL.md example is neither a valid request nor response: {line} ({:?})",
            request.err()
        );
        if let Ok(Response::Error(e)) = response {
            let code = ErrorCode::from_name(e.code).expect("documented code exists");
            assert_eq!(e.message, code.message(), "{line}");
        }
    }
    // Every frame of the vector conversation is shown in the spec.
    let v = vectors();
    for step in v["conversation"].as_array().unwrap() {
        let frame: Value = serde_json::from_str(s(step, "frame")).unwrap();
        assert!(
            examples.contains(&frame),
            "conversation frame missing from PROTOCOL.md: {frame}"
        );
    }
    // Every error code has a row in the error table.
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", code.name())),
            "error code {} missing from PROTOCOL.md's table",
            code.name()
        );
    }
    // The spec's prose stays within 100 columns (table rows cannot be wrapped).
    for (i, line) in doc.lines().enumerate() {
        assert!(
            line.starts_with('|') || line.chars().count() <= 100,
            "PROTOCOL.md:{} is longer than 100 columns",
            i + 1
        );
    }
}

#[test]
fn python_checker_agrees() {
    let script = repo().join("docs/check_vectors.py");
    let output = match std::process::Command::new("python3")
        .arg(&script)
        .current_dir(repo())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("skipped: python3 not found");
            return;
        }
        Err(e) => panic!("running python3: {e}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "docs/check_vectors.py failed ({}):\n{stdout}{stderr}",
        output.status
    );
}
