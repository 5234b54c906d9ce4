//! Writes the curated seed corpus into `fuzz/corpus/<target>/`.
//!
//! Run from `fuzz/`: `cargo run --example make_corpus`. The set-ups in
//! `txsock_core::fuzzing` are deterministic, so the genuine frames recorded here (valid
//! transfer MACs, real receipts) stay valid for the targets as long as the protocol and the
//! set-ups do not change; rerun this after changing either. It only writes the files named
//! below and leaves anything else in the folders alone.

use std::fs;
use std::path::{Path, PathBuf};

use txsock_core::fuzzing::{ClientHarness, ServerHarness, RECIPIENT};
use txsock_core::Amount;

const PING: &[u8] = b"{\"op\":\"ping\"}\n";
const BALANCE: &[u8] = b"{\"op\":\"balance\"}\n";
const HISTORY: &[u8] = b"{\"op\":\"history\",\"offset\":0}\n";

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    frame_decoder(&root.join("frame_decoder"));
    messages(&root.join("messages"));
    server_session(&root.join("server_session"));
    client_session(&root.join("client_session"));
    response_encoder(&root.join("response_encoder"));
    request_parser(&root.join("request_parser"));
}

/// Seeds for `request_parser`: request frames (no newline) the reader takes, near misses,
/// and frames whose unknown op serde-json-core found past nested skipped values.
fn request_parser(dir: &Path) {
    let seeds: &[(&str, &[u8])] = &[
        (
            "transfer",
            b"{\"op\":\"transfer\",\"id\":\"t-1\",\"to\":\"bob\",\"amount\":\"1.25\",\
              \"nonce\":\"00112233445566778899aabbccddeeff\",\"mac\":\"\
              00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"}",
        ),
        ("spaces-and-tabs", b" {\t\"op\" : \"balance\" }\t"),
        (
            "login",
            b"{\"user\":\"alice\",\"op\":\"login\",\"nonce\":\"abcdefgh12345678\"}",
        ),
        ("duplicate-op", b"{\"op\":\"ping\",\"op\":\"ping\"}"),
        ("escape-in-op", b"{\"op\":\"p\\u0069ng\"}"),
        ("number-count", b"{\"op\":\"nonces\",\"count\":8}"),
        ("number-offset", b"{\"op\":\"history\",\"offset\":2}"),
        ("unknown-key", b"{\"op\":\"ping\",\"x\":\"y\"}"),
        ("newline-between-tokens", b"{\"op\":\n\"ping\"}"),
        (
            "number-overflow",
            b"{\"op\":\"history\",\"offset\":4294967296}",
        ),
        (
            "register",
            b"{\"op\":\"register\",\"user\":\"alice\",\"salt\":\"c2FsdHNhbHQ=\",\
              \"iterations\":4096,\"stored_key\":\"\",\"server_key\":\"\"}",
        ),
        (
            "unknown-op-past-nesting",
            b"{\"x\":a\",\"y\":[,\"a\" 2,{\"k\":[1]}],\"op\":\"launch\"}",
        ),
    ];
    for (name, frame) in seeds {
        write(dir, name, frame);
    }
}

/// Seeds for `response_encoder`: size byte, kind byte, 8 number bytes, strings split at 0xff.
fn response_encoder(dir: &Path) {
    let strings: &[u8] = b"receipt\xfft-1\xffbob\xff1.25\xffcommitted\xff98.75\xff\
        0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\xffhistory";
    let escapes: &[u8] = b"a\"b\xffc\\d\xff\x01\x1f\n\t\xff\xc3\xa9\xf0\x9f\x98\x80\xff\xfe";
    for (kind, name) in [
        (2u8, "receipt"),
        (3, "balance"),
        (4, "history-two-entries"),
        (5, "nonces-eight"),
        (1, "error"),
    ] {
        let mut seed = vec![255, kind, 7, 0, 0, 0, 0, 0, 0, 2 + 6 * u8::from(kind == 5)];
        seed.extend_from_slice(strings);
        write(dir, name, &seed);
    }
    write(
        dir,
        "escapes-everywhere",
        &cat(&[&[255, 2, 1, 2, 3, 4, 0, 0, 0, 2], escapes]),
    );
    write(
        dir,
        "too-small",
        &cat(&[&[20, 2, 9, 9, 9, 9, 9, 9, 9, 9], strings]),
    );
    write(
        dir,
        "client-transfer",
        &cat(&[&[255, 9, 0x9a, 0x1f, 0, 0, 0, 0, 0, 3], b"x\xfft-1\xffbob"]),
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create corpus folder");
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).expect("write corpus file");
    println!("{:5} {}", bytes.len(), path.display());
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn deep_nesting() -> Vec<u8> {
    let mut v = b"{\"op\":\"ping\",\"x\":".to_vec();
    v.extend(std::iter::repeat_n(b'[', 64));
    v.extend(std::iter::repeat_n(b']', 64));
    v.extend_from_slice(b"}\n");
    v
}

fn over_long_line() -> Vec<u8> {
    let mut v = b"{\"op\":\"ping\",\"pad\":\"".to_vec();
    v.extend(std::iter::repeat_n(b'x', 700));
    v.extend_from_slice(b"\"}\n");
    v.extend_from_slice(PING);
    v
}

/// A valid transfer from the server harness's session with its first nonce.
fn transfer(h: &ServerHarness, id: &str, minor: u64, nonce: usize) -> Vec<u8> {
    h.transfer_frame(id, RECIPIENT, Amount(minor), &h.nonces[nonce])
        .to_vec()
}

fn frame_decoder(dir: &Path) {
    // Byte 0: frame limit - 1; byte 1: read-size seed; then the stream.
    let h = ServerHarness::new();
    write(
        dir,
        "crlf-lines",
        &cat(&[&[255, 7], b"{\"op\":\"ping\"}\r\n", BALANCE, b"\r\n\n"]),
    );
    let mut long = vec![15, 3];
    long.extend(std::iter::repeat_n(b'x', 40));
    long.extend_from_slice(b"\nok\n");
    write(dir, "over-long-line", &long);
    write(
        dir,
        "limit-1",
        &[0, 1, b'a', b'\n', b'\n', b'b', b'c', b'\n', b'\r', b'\n'],
    );
    write(
        dir,
        "invalid-utf8",
        &cat(&[&[200, 9], b"\xff\xfe\xc0\x80\n", PING]),
    );
    write(dir, "unterminated", &cat(&[&[255, 0], b"abc\ndef"]));
    write(
        dir,
        "valid-transfer",
        &cat(&[&[255, 42], &transfer(&h, "t-1", 125, 0)]),
    );
}

fn messages(dir: &Path) {
    // One frame each, without the newline.
    let h = ServerHarness::new();
    let t = transfer(&h, "t-1", 125, 0);
    write(dir, "transfer", &t[..t.len() - 1]);
    write(
        dir,
        "register",
        b"{\"op\":\"register\",\"user\":\"carol\",\"salt\":\"AAECAwQFBgcICQoLDA0ODw==\",\"iterations\":4096,\"stored_key\":\"DSORcG4dNUxAHTEo5BL20ymSoLgt8C8jLZ09S+VUVlM=\",\"server_key\":\"9hLrfnf7zvCtDB9drkVXkMgUsd4vpHfg5YQJDrbaZ30=\"}",
    );
    write(
        dir,
        "login",
        b"{\"op\":\"login\",\"user\":\"Alice\",\"nonce\":\"fyko+d2lbbFgONRv9qkxdawL\"}",
    );
    write(dir, "nonces", b"{\"op\":\"nonces\",\"count\":8}");
    write(
        dir,
        "receipt",
        b"{\"op\":\"receipt\",\"seq\":1,\"id\":\"t-0001\",\"to\":\"bob\",\"amount\":\"12.50\",\"result\":\"committed\",\"balance\":\"87.50\",\"mac\":\"6e0151393fef298fc1fab344b0928f0f797396855221427f6228dfdebb7f40ff\"}",
    );
    write(
        dir,
        "history",
        b"{\"op\":\"history\",\"seq\":2,\"entries\":[{\"id\":\"a\",\"from\":\"x\",\"to\":\"y\",\"amount\":\"1.00\",\"at\":5}],\"more\":false,\"mac\":\"ab\"}",
    );
    write(
        dir,
        "error",
        b"{\"op\":\"error\",\"code\":\"bad_mac\",\"message\":\"MAC does not verify\"}",
    );
    write(
        dir,
        "deep-nesting",
        &deep_nesting()[..deep_nesting().len() - 1],
    );
    write(dir, "invalid-utf8", b"{\"op\":\"ping\",\"x\":\"\xff\xfe\"}");
    write(dir, "escapes", b"{\"op\":\"pi\\u006eg\"}");
}

fn server_session(dir: &Path) {
    let h = ServerHarness::new();
    let t1 = transfer(&h, "t-1", 125, 0);
    write(dir, "valid-transfer", &t1);
    write(dir, "replayed-transfer", &cat(&[&t1, &t1]));
    let tampered = String::from_utf8(t1.clone())
        .unwrap()
        .replace("\"1.25\"", "\"9.25\"");
    assert_ne!(tampered.as_bytes(), &t1[..], "amount not found");
    write(dir, "tampered-transfer", &cat(&[tampered.as_bytes(), &t1]));
    let pipelined = cat(&[
        &transfer(&h, "t-2", 1_000, 1),
        &transfer(&h, "t-3", 1, 2),
        &transfer(&h, "t-4", 1_000_000, 3),
        BALANCE,
        HISTORY,
        b"{\"op\":\"history\",\"offset\":1}\n",
    ]);
    write(dir, "pipelined", &pipelined);
    write(
        dir,
        "nonces-and-logout",
        &cat(&[
            b"{\"op\":\"nonces\",\"count\":3}\n",
            PING,
            b"{\"op\":\"logout\"}\n",
            PING,
        ]),
    );
    write(
        dir,
        "login-while-logged-in",
        b"{\"op\":\"login\",\"user\":\"bob\",\"nonce\":\"fyko+d2lbbFgONRv9qkxdawL\"}\n{\"op\":\"proof\",\"proof\":\"n9F1eyj3f6eQLRfRp+hJGrg5wACkmlDSoiCS+PSGw24=\"}\n",
    );
    write(dir, "over-long-line", &over_long_line());
    write(dir, "invalid-utf8", &cat(&[b"\xff\xfe\xc0\x80\n", PING]));
    write(dir, "deep-nesting", &deep_nesting());
    write(dir, "bad-frames", &b"{}\n".repeat(12));
}

fn client_session(dir: &Path) {
    // The genuine answers to the pending requests (transfer, balance, history, ping,
    // nonces), from the harness's own server.
    let mut h = ClientHarness::new();
    let p = &mut h.pair;
    let request = p.client.poll_transmit().to_vec();
    let mut answer = vec![0u8; 8192];
    let m = p.server_receive(&request, &mut answer);
    let genuine = &answer[..m];
    assert_eq!(genuine.iter().filter(|&&b| b == b'\n').count(), 5);
    write(dir, "genuine-answers", genuine);
    let text = String::from_utf8(genuine.to_vec()).unwrap();
    let forged = text.replacen("\"balance\":\"98.75\"", "\"balance\":\"998.75\"", 1);
    assert_ne!(forged, text, "receipt balance not found");
    write(dir, "forged-receipt", forged.as_bytes());
    let first = &genuine[..=genuine.iter().position(|&b| b == b'\n').unwrap()];
    write(dir, "replayed-receipt", &cat(&[first, first]));
    write(
        dir,
        "refusals",
        b"{\"op\":\"error\",\"code\":\"insufficient_funds\",\"message\":\"x\"}\n{\"op\":\"error\",\"code\":\"internal\",\"message\":\"x\"}\n{\"op\":\"error\",\"code\":\"too_many_bad_frames\",\"message\":\"x\"}\n",
    );
    write(
        dir,
        "unexpected-welcome",
        b"{\"op\":\"welcome\",\"user\":\"alice\",\"signature\":\"ptz8BE5Bi9GCS2qk2JxQgri0pIQteh6u7PFTLTzSb7Q=\"}\n",
    );
    write(dir, "over-long-line", &over_long_line());
    write(
        dir,
        "invalid-utf8",
        &cat(&[b"\xff\xfe\xc0\x80\n", b"{\"op\":\"pong\"}\n"]),
    );
    write(dir, "deep-nesting", &deep_nesting());
}
