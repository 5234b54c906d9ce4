//! Self-checks that run identically in `cargo test` and in the Cortex-M image under QEMU:
//! the RFC test vectors, txsock's protocol vectors (`docs/vectors.json`), and a whole
//! client/server conversation in memory, attacks included.
//!
//! Everything here is deterministic: the random numbers come from [`TestRng`], a SHA-256
//! counter generator with a fixed seed. That is fine for tests and wrong for anything else.

use crate::amount::Amount;
use crate::auth::{self, AuthMessage, ClientProof, Verifier};
use crate::crypto::{hmac_sha256, sha256, Key};
use crate::encoding::{base64_decode, base64_encode, hex_decode, hex_encode};
use crate::error::ErrorCode;
use crate::ledger::MemLedger;
use crate::lockout::PeerAddr;
use crate::mac;
use crate::session::client::{ClientConfig, ClientEvent, ClientSession, IntegrityError};
use crate::session::server::{ServerConfig, ServerSession, ServerShared};
use crate::time::{Duration, Instant};
use rand_core::{CryptoRng, RngCore};

/// What a successful self-test measured.
#[derive(Debug, Clone, Copy)]
pub struct SelftestReport {
    /// `size_of` one default server session, in bytes.
    pub server_session_bytes: usize,
    /// Number of checks that ran.
    pub checks: u32,
}

/// One HMAC-SHA256 case of [RFC 4231 §4](https://www.rfc-editor.org/rfc/rfc4231#section-4),
/// in hex. Case 5's tag is truncated to 128 bits, as in the RFC.
pub struct Rfc4231Case {
    /// Case number.
    pub number: u8,
    /// Key.
    pub key: &'static str,
    /// Data.
    pub data: &'static str,
    /// Expected tag (prefix).
    pub tag: &'static str,
}

/// RFC 4231 test cases 1 to 7.
pub const RFC4231: [Rfc4231Case; 7] = [
    Rfc4231Case {
        number: 1,
        key: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
        data: "4869205468657265",
        tag: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    },
    Rfc4231Case {
        number: 2,
        key: "4a656665",
        data: "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
        tag: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    },
    Rfc4231Case {
        number: 3,
        key: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        data: "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        tag: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    },
    Rfc4231Case {
        number: 4,
        key: "0102030405060708090a0b0c0d0e0f10111213141516171819",
        data: "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
        tag: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    },
    Rfc4231Case {
        number: 5,
        key: "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
        data: "546573742057697468205472756e636174696f6e",
        tag: "a3b6167473100ee06e0c796c2955552b",
    },
    Rfc4231Case {
        number: 6,
        key: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        data: "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374",
        tag: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    },
    Rfc4231Case {
        number: 7,
        key: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        data: "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676f726974686d2e",
        tag: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    },
];

/// The SCRAM-SHA-256 example exchange of
/// [RFC 7677 §3](https://www.rfc-editor.org/rfc/rfc7677#section-3).
pub struct Rfc7677 {
    /// Username.
    pub user: &'static str,
    /// Password.
    pub password: &'static str,
    /// Client nonce.
    pub client_nonce: &'static str,
    /// Client nonce plus server extension.
    pub full_nonce: &'static str,
    /// Base64 salt.
    pub salt_b64: &'static str,
    /// Iterations.
    pub iterations: u32,
    /// Expected base64 ClientProof.
    pub proof_b64: &'static str,
    /// Expected base64 ServerSignature.
    pub server_signature_b64: &'static str,
}

/// The RFC 7677 exchange.
pub const RFC7677: Rfc7677 = Rfc7677 {
    user: "user",
    password: "pencil",
    client_nonce: "rOprNGfwEbeRWgbNEkqO",
    full_nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    salt_b64: "W22ZaJ0SNY7soEsUEjb6gQ==",
    iterations: 4096,
    proof_b64: "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    server_signature_b64: "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

/// PBKDF2-HMAC-SHA256("passwd", "salt", c = 1, dkLen = 64) from
/// [RFC 7914 §11](https://www.rfc-editor.org/rfc/rfc7914#section-11), in hex.
pub const RFC7914_C1: &str = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783";

/// txsock's protocol vectors; `docs/vectors.json` holds the same values and a test keeps
/// the two equal.
pub mod vectors {
    /// Username.
    pub const USER: &str = "alice";
    /// Password.
    pub const PASSWORD: &str = "correct horse battery";
    /// Salt, hex.
    pub const SALT_HEX: &str = "000102030405060708090a0b0c0d0e0f";
    /// PBKDF2 iterations.
    pub const ITERATIONS: u32 = 4096;
    /// Client nonce.
    pub const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
    /// Client nonce plus the server's extension.
    pub const FULL_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
    /// Expected SaltedPassword, hex.
    pub const SALTED_PASSWORD: &str =
        "25ec2e843d040853eb91d6ee9a96d626c48de1b5cb7eb4c549e71a3c990cb674";
    /// Expected StoredKey, base64.
    pub const STORED_KEY: &str = "DSORcG4dNUxAHTEo5BL20ymSoLgt8C8jLZ09S+VUVlM=";
    /// Expected ServerKey, base64.
    pub const SERVER_KEY: &str = "9hLrfnf7zvCtDB9drkVXkMgUsd4vpHfg5YQJDrbaZ30=";
    /// Expected ClientProof, base64.
    pub const CLIENT_PROOF: &str = "n9F1eyj3f6eQLRfRp+hJGrg5wACkmlDSoiCS+PSGw24=";
    /// Expected ServerSignature, base64.
    pub const SERVER_SIGNATURE: &str = "ptz8BE5Bi9GCS2qk2JxQgri0pIQteh6u7PFTLTzSb7Q=";
    /// Expected client-to-server session key, hex.
    pub const KEY_C2S: &str = "91affeb4c1299b05f49e0756ab294286cd1ca949c87e656d560610a4a7e3378d";
    /// Expected server-to-client session key, hex.
    pub const KEY_S2C: &str = "47193e2d8bf479909232f1a8ca811f6061a73d72271d65d2b46d0fc60d5c2e7a";
    /// Transfer id.
    pub const TRANSFER_ID: &str = "t-0001";
    /// Recipient.
    pub const TRANSFER_TO: &str = "bob";
    /// Amount in minor units (12.50).
    pub const TRANSFER_AMOUNT: u64 = 1250;
    /// Nonce, hex.
    pub const TRANSFER_NONCE: &str = "00112233445566778899aabbccddeeff";
    /// Expected transfer MAC, hex.
    pub const TRANSFER_MAC: &str =
        "d22e0c7af4dbff03fdf11229afbf553922b175a93deba434c0a717b6cfdee29b";
    /// Receipt sequence number.
    pub const RECEIPT_SEQ: u32 = 1;
    /// Sender's balance after the transfer, minor units (87.50).
    pub const RECEIPT_BALANCE: u64 = 8750;
    /// Expected receipt MAC, hex.
    pub const RECEIPT_MAC: &str =
        "6e0151393fef298fc1fab344b0928f0f797396855221427f6228dfdebb7f40ff";
    /// Balance response sequence number.
    pub const BALANCE_SEQ: u32 = 2;
    /// Expected balance MAC (balance 87.50), hex.
    pub const BALANCE_MAC: &str =
        "f3a0b02314844d290a28f78b1ebbe3b143b31a1d5b0feb5d195f101e61c86d4a";
}

/// A deterministic generator for tests: SHA-256 of a seed and a counter. Predictable by
/// design; never use it for real nonces.
pub struct TestRng {
    seed: [u8; 32],
    counter: u64,
}

impl TestRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> TestRng {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        TestRng {
            seed: s,
            counter: 0,
        }
    }
}

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let mut block = [0u8; 40];
            block[..32].copy_from_slice(&self.seed);
            block[32..].copy_from_slice(&self.counter.to_le_bytes());
            self.counter += 1;
            let out = sha256(&block);
            chunk.copy_from_slice(&out[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

// Deterministic, but only ever used where the test says so.
impl CryptoRng for TestRng {}

/// Server state used by the self-test conversation: a small ledger and a fixed clock.
pub type TestLedger = MemLedger<8, 32>;

/// A client and a server session joined in memory, with a virtual clock.
pub struct Pair {
    /// The server's shared state.
    pub shared: ServerShared<TestRng, 8>,
    /// The server session.
    pub server: ServerSession,
    /// The ledger the server uses.
    pub ledger: TestLedger,
    /// The client session.
    pub client: ClientSession,
    /// The client's randomness.
    pub rng: TestRng,
    /// Virtual time.
    pub now: Instant,
    /// Server bytes the client has not taken yet (it takes one response per event).
    unread: heapless::Vec<u8, 4096>,
}

/// Iterations used by the self-test users (low, for speed under emulation).
pub const TEST_ITERATIONS: u32 = 4096;

impl Pair {
    /// A fresh pair; the ledger gives new accounts 100.00.
    pub fn new(seed: u64) -> Pair {
        let config = ServerConfig {
            min_iterations: TEST_ITERATIONS,
            unknown_user_iterations: TEST_ITERATIONS,
            ..ServerConfig::default()
        };
        Pair {
            shared: ServerShared::new(config, TestRng::new(seed), [7; 32]),
            server: ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), Instant::ZERO),
            ledger: MemLedger::new(Amount(10_000)),
            client: ClientSession::new(ClientConfig {
                min_iterations: TEST_ITERATIONS,
                ..ClientConfig::default()
            }),
            rng: TestRng::new(seed ^ 0x5eed),
            now: Instant::ZERO,
            unread: heapless::Vec::new(),
        }
    }

    /// A new connection (client and server session) on the same server and ledger.
    pub fn reconnect(&mut self) {
        self.server = ServerSession::new(PeerAddr::ipv4([127, 0, 0, 1]), self.now);
        self.client = ClientSession::new(ClientConfig {
            min_iterations: TEST_ITERATIONS,
            ..ClientConfig::default()
        });
        self.unread.clear();
    }

    /// Delivers `bytes` to the server as if the client had sent them, and runs the server
    /// (ledger included) until it is quiet. Returns the server's output.
    pub fn server_receive(&mut self, bytes: &[u8], out: &mut [u8]) -> usize {
        let mut written = 0;
        let transmit = |pending: &[u8]| {
            let n = pending.len().min(out.len() - written);
            out[written..written + n].copy_from_slice(&pending[..n]);
            written += n;
            Ok::<_, core::convert::Infallible>(n)
        };
        let Ok(_) = self.server.drive(
            &mut self.shared,
            &mut self.ledger,
            self.now,
            bytes,
            transmit,
            |_| {},
        );
        written
    }

    /// Moves the client's pending output to the server and the answers back, then returns
    /// the client's next event. Answers to pipelined requests wait in `unread` for the next
    /// calls.
    pub fn step(&mut self) -> Option<ClientEvent> {
        if let Some(e) = self.client.poll_event() {
            return Some(e);
        }
        let mut request = [0u8; 2048];
        let pending = self.client.poll_transmit();
        let n = pending.len().min(request.len());
        request[..n].copy_from_slice(&pending[..n]);
        self.client.advance_transmit(n);
        let mut unread = core::mem::take(&mut self.unread);
        let have = unread.len();
        // Capacity is 4096 and `resize` only grows to it.
        let _ = unread.resize(unread.capacity(), 0);
        let m = self.server_receive(&request[..n], &mut unread[have..]);
        unread.truncate(have + m);
        let used = self.client.handle_input(&unread);
        unread.rotate_left(used);
        unread.truncate(unread.len() - used);
        self.unread = unread;
        self.client.poll_event()
    }

    /// Registers and logs in `user`.
    pub fn register_and_login(&mut self, user: &str, password: &str) -> Result<(), &'static str> {
        self.client
            .register(&mut self.rng, user, password, TEST_ITERATIONS)
            .map_err(|_| "register request")?;
        check(self.step() == Some(ClientEvent::Registered), "registered")?;
        self.login(user, password)
    }

    /// Logs in `user`; `Err` if the server refused.
    pub fn login(&mut self, user: &str, password: &str) -> Result<(), &'static str> {
        self.client
            .login(&mut self.rng, user)
            .map_err(|_| "login request")?;
        check(
            matches!(self.step(), Some(ClientEvent::Challenge { .. })),
            "challenge",
        )?;
        self.client
            .answer_with_password(password)
            .map_err(|_| "answer")?;
        check(self.step() == Some(ClientEvent::LoggedIn), "logged in")
    }

    /// Advances virtual time.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
    }
}

fn check(ok: bool, what: &'static str) -> Result<(), &'static str> {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}

fn hex_into<'a>(text: &str, out: &'a mut [u8]) -> Result<&'a [u8], &'static str> {
    let t = text.as_bytes();
    if t.len() % 2 != 0 || t.len() / 2 > out.len() {
        return Err("hex length");
    }
    for i in 0..t.len() / 2 {
        let pair = core::str::from_utf8(&t[2 * i..2 * i + 2]).map_err(|_| "hex")?;
        out[i] = u8::from_str_radix(pair, 16).map_err(|_| "hex digit")?;
    }
    Ok(&out[..t.len() / 2])
}

fn rfc_vectors(checks: &mut u32) -> Result<(), &'static str> {
    let (mut key, mut data, mut tag) = ([0u8; 160], [0u8; 160], [0u8; 32]);
    for case in &RFC4231 {
        let k = hex_into(case.key, &mut key)?;
        let d = hex_into(case.data, &mut data)?;
        let t = hex_into(case.tag, &mut tag)?;
        let got = hmac_sha256(k, d);
        check(got[..t.len()] == *t, "RFC 4231 HMAC-SHA256")?;
        *checks += 1;
    }
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2::<crate::crypto::HmacSha256>(b"passwd", b"salt", 1, &mut out)
        .map_err(|_| "pbkdf2")?;
    check(
        hex_encode::<128>(&out).as_str() == RFC7914_C1,
        "RFC 7914 PBKDF2",
    )?;
    *checks += 1;

    let v = &RFC7677;
    let mut salt = [0u8; 32];
    let salt = base64_decode(v.salt_b64, &mut salt).map_err(|_| "rfc7677 salt")?;
    let auth = AuthMessage {
        user: v.user,
        client_nonce: v.client_nonce,
        full_nonce: v.full_nonce,
        salt,
        iterations: v.iterations,
    };
    let salted = auth::salted_password(v.password.as_bytes(), salt, v.iterations);
    let proof = ClientProof::compute(&salted, &auth);
    check(
        base64_encode::<44>(&proof.proof).as_str() == v.proof_b64,
        "RFC 7677 client proof",
    )?;
    check(
        base64_encode::<44>(proof.expected_server_signature.as_bytes()).as_str()
            == v.server_signature_b64,
        "RFC 7677 server signature",
    )?;
    let verifier = Verifier::from_salted_password(&salted, salt, v.iterations);
    let verified = auth::verify_client_proof(
        &verifier.stored_key,
        &verifier.server_key,
        &auth,
        &proof.proof,
    );
    check(verified.is_ok(), "RFC 7677 server verifies proof")?;
    *checks += 3;
    Ok(())
}

fn protocol_vectors(checks: &mut u32) -> Result<(), &'static str> {
    use vectors::*;
    let salt: [u8; 16] = hex_decode(SALT_HEX).map_err(|_| "salt")?;
    let salted = auth::salted_password(PASSWORD.as_bytes(), &salt, ITERATIONS);
    check(
        hex_encode::<64>(salted.as_bytes()).as_str() == SALTED_PASSWORD,
        "vector SaltedPassword",
    )?;
    let verifier = Verifier::from_salted_password(&salted, &salt, ITERATIONS);
    check(
        base64_encode::<44>(&verifier.stored_key).as_str() == STORED_KEY,
        "vector StoredKey",
    )?;
    check(
        base64_encode::<44>(&verifier.server_key).as_str() == SERVER_KEY,
        "vector ServerKey",
    )?;
    let auth = AuthMessage {
        user: USER,
        client_nonce: CLIENT_NONCE,
        full_nonce: FULL_NONCE,
        salt: &salt,
        iterations: ITERATIONS,
    };
    let proof = ClientProof::compute(&salted, &auth);
    check(
        base64_encode::<44>(&proof.proof).as_str() == CLIENT_PROOF,
        "vector ClientProof",
    )?;
    check(
        base64_encode::<44>(proof.expected_server_signature.as_bytes()).as_str()
            == SERVER_SIGNATURE,
        "vector ServerSignature",
    )?;
    check(
        hex_encode::<64>(proof.keys.client_to_server.as_bytes()).as_str() == KEY_C2S,
        "vector c2s key",
    )?;
    check(
        hex_encode::<64>(proof.keys.server_to_client.as_bytes()).as_str() == KEY_S2C,
        "vector s2c key",
    )?;
    let nonce: [u8; 16] = hex_decode(TRANSFER_NONCE).map_err(|_| "nonce")?;
    let amount = Amount(TRANSFER_AMOUNT);
    let t = mac::transfer(
        &proof.keys.client_to_server,
        USER,
        TRANSFER_ID,
        TRANSFER_TO,
        amount,
        &nonce,
    );
    check(
        hex_encode::<64>(t.as_bytes()).as_str() == TRANSFER_MAC,
        "vector transfer MAC",
    )?;
    let r = mac::receipt(
        &proof.keys.server_to_client,
        &mac::ReceiptFields {
            seq: RECEIPT_SEQ,
            id: TRANSFER_ID,
            to: TRANSFER_TO,
            amount,
            result: "committed",
            balance: Amount(RECEIPT_BALANCE),
            nonce: &nonce,
        },
    );
    check(
        hex_encode::<64>(r.as_bytes()).as_str() == RECEIPT_MAC,
        "vector receipt MAC",
    )?;
    let b = mac::balance(
        &proof.keys.server_to_client,
        BALANCE_SEQ,
        Amount(RECEIPT_BALANCE),
    );
    check(
        hex_encode::<64>(b.as_bytes()).as_str() == BALANCE_MAC,
        "vector balance MAC",
    )?;
    *checks += 11;
    Ok(())
}

/// Login, pipelined transfers, replay, tamper, forged receipt and a wrong password, over
/// one in-memory pair.
fn conversation(checks: &mut u32) -> Result<(), &'static str> {
    let mut p = Pair::new(1);
    p.register_and_login("bob", "bob's password")?;
    p.reconnect();
    p.register_and_login("alice", "alice's password")?;
    *checks += 2;

    p.client.request_nonces(4).map_err(|_| "nonces request")?;
    check(
        p.step() == Some(ClientEvent::Nonces { available: 4 }),
        "nonces",
    )?;
    p.client
        .transfer("t1", "bob", Amount(1_000))
        .map_err(|_| "transfer 1")?;
    p.client
        .transfer("t2", "bob", Amount(250))
        .map_err(|_| "transfer 2")?;
    let first = p.step();
    let second = p.step();
    let ok = |e: &Option<ClientEvent>, id: &str, bal: u64| matches!(e, Some(ClientEvent::Receipt(r)) if r.id.as_str() == id && r.result.is_ok() && r.balance == Amount(bal));
    check(
        ok(&first, "t1", 9_000) && ok(&second, "t2", 8_750),
        "pipelined receipts",
    )?;
    *checks += 1;

    // Replay: the exact bytes of a valid transfer, sent again, move nothing.
    p.client
        .transfer("t3", "bob", Amount(1))
        .map_err(|_| "transfer 3")?;
    let mut frame = [0u8; 512];
    let n = p.client.poll_transmit().len();
    frame[..n].copy_from_slice(p.client.poll_transmit());
    check(
        matches!(p.step(), Some(ClientEvent::Receipt(r)) if r.result.is_ok()),
        "transfer 3",
    )?;
    let total_before = p.ledger.total();
    let journal_before = p.ledger.journal().len();
    let mut answer = [0u8; 1024];
    let m = p.server_receive(&frame[..n], &mut answer);
    check(contains(&answer[..m], b"unknown_nonce"), "replay refused")?;
    check(
        p.ledger.journal().len() == journal_before,
        "replay moved nothing",
    )?;
    *checks += 2;

    // Tamper: change the amount of a fresh, valid transfer; the MAC no longer verifies
    // and the nonce stays usable.
    p.client
        .transfer("t4", "bob", Amount(5))
        .map_err(|_| "transfer 4")?;
    let n = p.client.poll_transmit().len();
    frame[..n].copy_from_slice(p.client.poll_transmit());
    let pos = find(&frame[..n], b"\"amount\":\"0.05\"").ok_or("amount field")?;
    frame[pos + 10..pos + 14].copy_from_slice(b"9.05");
    let m = p.server_receive(&frame[..n], &mut answer);
    check(contains(&answer[..m], b"bad_mac"), "tamper refused")?;
    check(
        p.ledger.journal().len() == journal_before,
        "tamper moved nothing",
    )?;
    check(
        p.server.outstanding_nonces() == 1,
        "a bad MAC burns no nonce",
    )?;
    *checks += 3;

    // The genuine frame still goes through once.
    let genuine_n = n;
    let mut genuine = [0u8; 512];
    genuine[..genuine_n].copy_from_slice(p.client.poll_transmit());
    check(
        matches!(p.step(), Some(ClientEvent::Receipt(r)) if r.result.is_ok()),
        "genuine after tamper",
    )?;
    check(p.ledger.total() == total_before, "money conserved")?;
    check(p.ledger.total() == p.ledger.minted(), "ledger balanced")?;
    *checks += 3;

    // A forged receipt (a refusal turned into "committed") is detected by the client.
    p.client.request_nonces(1).map_err(|_| "nonces 2")?;
    check(
        matches!(p.step(), Some(ClientEvent::Nonces { .. })),
        "nonces 2",
    )?;
    p.client
        .transfer("t5", "bob", Amount(1_000_000))
        .map_err(|_| "transfer 5")?;
    let n = p.client.poll_transmit().len();
    frame[..n].copy_from_slice(p.client.poll_transmit());
    p.client.advance_transmit(n);
    let m = p.server_receive(&frame[..n], &mut answer);
    let pos = find(&answer[..m], b"\"result\":\"insufficient_funds\"").ok_or("refusal")?;
    let mut forged = [0u8; 1024];
    let head = b"\"result\":\"committed\"";
    let tail_start = pos + b"\"result\":\"insufficient_funds\"".len();
    forged[..pos].copy_from_slice(&answer[..pos]);
    forged[pos..pos + head.len()].copy_from_slice(head);
    let rest = m - tail_start;
    forged[pos + head.len()..pos + head.len() + rest].copy_from_slice(&answer[tail_start..m]);
    let fl = pos + head.len() + rest;
    let mut used = 0;
    while used < fl {
        let n = p.client.handle_input(&forged[used..fl]);
        // A client that takes nothing would loop here for ever: fail the check instead.
        check(n > 0, "client takes the forged receipt")?;
        used += n;
    }
    check(
        p.client.poll_event() == Some(ClientEvent::Integrity(IntegrityError::ForgedReceipt)),
        "forged receipt detected",
    )?;
    *checks += 1;

    // A wrong password gets the generic failure and no session keys.
    p.reconnect();
    check(
        p.login("alice", "not the password") == Err("logged in"),
        "wrong password refused",
    )?;
    check(p.server.user().is_none(), "no session after wrong password")?;
    // An unknown user gets the same shape of answer.
    p.reconnect();
    p.client
        .login(&mut p.rng, "mallory")
        .map_err(|_| "login mallory")?;
    check(
        matches!(
            p.step(),
            Some(ClientEvent::Challenge {
                iterations: TEST_ITERATIONS
            })
        ),
        "unknown user challenged alike",
    )?;
    p.client
        .answer_with_password("whatever you like")
        .map_err(|_| "answer")?;
    check(
        matches!(
            p.step(),
            Some(ClientEvent::Refused {
                code: ErrorCode::AuthFailed,
                ..
            })
        ),
        "unknown user refused alike",
    )?;
    *checks += 4;
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs every built-in check; returns the name of the first failing check.
pub fn run() -> Result<SelftestReport, &'static str> {
    let mut checks = 0;
    rfc_vectors(&mut checks)?;
    protocol_vectors(&mut checks)?;
    conversation(&mut checks)?;
    let _ = Key::from_bytes([0; 32]);
    Ok(SelftestReport {
        server_session_bytes: core::mem::size_of::<ServerSession>(),
        checks,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn selftest_passes() {
        let report = super::run().unwrap();
        assert!(report.checks > 20);
        assert!(
            report.server_session_bytes <= 2048,
            "{}",
            report.server_session_bytes
        );
    }
}
