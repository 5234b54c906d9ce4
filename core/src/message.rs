//! Every message of the protocol, as borrowed and fixed-capacity types.
//!
//! Each frame is one flat JSON object whose `"op"` names the message. Parsing runs in two
//! passes over the frame: a scan that rejects invalid UTF-8 and nesting deeper than the
//! message shapes allow (so no input can drive the parser's recursion), then serde-json-core
//! into a struct per message with `deny_unknown_fields` (serde's derive also refuses
//! duplicate keys). Requests whose values are all plain strings (every transfer, balance,
//! ping and logout a client writes) first go through a single-pass reader,
//! `fast_request_wire`, which takes only frames whose reading is beyond doubt and leaves
//! every other frame, and so every error, to serde-json-core; a property test and the
//! `request_parser` fuzz target check that both paths agree on every frame. Field values are validated into [`Username`], [`TransferId`],
//! [`Amount`] and fixed-size byte arrays before a message reaches a session.
//!
//! Names follow one scheme (as smoltcp's `Packet`/`Repr`):
//!
//! - `…Frame` (`TransferFrame`, `ReceiptFrame`, `ErrorFrame`, …): a message's wire shape,
//!   field for field, borrowed from the frame or from the caller; what is serialized, and for
//!   responses also what is parsed. No validation beyond JSON types.
//! - [`Request`] and [`Response`]: a parsed frame of either direction; a [`Request`]'s
//!   payloads (`RegisterRequest`, `TransferRequest`) hold validated values.
//!
//! See `docs/PROTOCOL.md` for examples of every message.

use crate::amount::Amount;
use crate::auth::{MAX_SALT, MAX_SCRAM_NONCE};
use crate::crypto::TAG_LEN;
use crate::encoding::{base64_decode, hex_decode};
use crate::error::ErrorCode;
use crate::names::{TransferId, Username};
use crate::replay::{Nonce, NONCE_LEN};
use core::fmt;
use serde::{Deserialize, Serialize};

/// The most nonces one `nonces` request can ask for (and one response carries).
pub const MAX_NONCE_BATCH: usize = 8;
/// Entries in one page of history.
pub const HISTORY_PAGE: usize = 2;

/// Error returned when a frame is not a valid message.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// The frame is not UTF-8.
    NotUtf8,
    /// Objects or arrays nested deeper than any message has.
    TooDeep,
    /// Not JSON, wrong types, unknown or duplicate fields, trailing data.
    Syntax,
    /// The `op` names no message of this direction.
    UnknownOp,
    /// A username or transfer id is malformed.
    BadName,
    /// An amount is malformed, zero, too precise or too large.
    BadAmount,
    /// A nonce, MAC, salt, proof or key has the wrong encoding or length.
    BadEncoding,
}

impl MessageError {
    /// The error code sent to the peer.
    pub const fn code(self) -> ErrorCode {
        match self {
            MessageError::BadName => ErrorCode::InvalidName,
            MessageError::BadAmount => ErrorCode::InvalidAmount,
            _ => ErrorCode::Malformed,
        }
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageError::NotUtf8 => "frame is not UTF-8",
            MessageError::TooDeep => "JSON nested too deeply",
            MessageError::Syntax => "not a valid message",
            MessageError::UnknownOp => "unknown op",
            MessageError::BadName => "invalid username or transfer id",
            MessageError::BadAmount => "invalid amount",
            MessageError::BadEncoding => "invalid hex or base64 field",
        })
    }
}

impl core::error::Error for MessageError {}

/// JSON whitespace that a frame may hold between tokens (RFC 8259 §2, without CR and LF:
/// LF ends the frame, and a CR is allowed only as the one right before it).
pub(crate) fn is_frame_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Rejects non-UTF-8 frames, CR anywhere (the framing already removed the one before the
/// LF), raw control characters inside strings (RFC 8259 §7: U+0000 to U+001F must be
/// escaped, and escapes are refused anyway) and nesting beyond `max_depth`, before any
/// recursive parsing.
fn precheck(frame: &[u8], max_depth: usize) -> Result<&str, MessageError> {
    let text = core::str::from_utf8(frame).map_err(|_| MessageError::NotUtf8)?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in frame {
        if b == b'\r' || (in_string && b < 0x20) {
            return Err(MessageError::Syntax);
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(MessageError::TooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(text)
}

/// Parses one complete JSON value and refuses anything but whitespace after it.
fn parse_whole<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, MessageError> {
    let (value, used) =
        serde_json_core::from_slice::<T>(frame).map_err(|_| MessageError::Syntax)?;
    if frame[used..].iter().all(|&b| is_frame_space(b)) {
        Ok(value)
    } else {
        Err(MessageError::Syntax)
    }
}

/// A message with no fields but `op`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BareWire<'a> {
    #[serde(rename = "op")]
    _op: &'a str,
}

/// Only the `op`: the first pass over a response, and the tie-breaker that tells an unknown
/// request op from a malformed request.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    op: &'a str,
}

fn op_of(frame: &[u8], max_depth: usize) -> Result<&str, MessageError> {
    precheck(frame, max_depth)?;
    parse_whole::<Head<'_>>(frame).map(|h| h.op)
}

fn username(s: &str) -> Result<Username, MessageError> {
    Username::parse(s).map_err(|_| MessageError::BadName)
}

fn transfer_id(s: &str) -> Result<TransferId, MessageError> {
    TransferId::parse(s).map_err(|_| MessageError::BadName)
}

fn amount(s: &str) -> Result<Amount, MessageError> {
    Amount::parse(s).map_err(|_| MessageError::BadAmount)
}

fn balance(s: &str) -> Result<Amount, MessageError> {
    Amount::parse_balance(s).map_err(|_| MessageError::BadAmount)
}

fn tag_b64(s: &str) -> Result<[u8; TAG_LEN], MessageError> {
    let mut buf = [0u8; TAG_LEN];
    match base64_decode(s, &mut buf) {
        Ok(b) if b.len() == TAG_LEN => Ok(buf),
        _ => Err(MessageError::BadEncoding),
    }
}

/// True for a character a SCRAM nonce may hold: printable ASCII other than `,`
/// ([RFC 5802 §7](https://www.rfc-editor.org/rfc/rfc5802#section-7)), and other than `"` and
/// `\`, since JSON escapes are never decoded.
pub fn is_nonce_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !matches!(b, b',' | b'"' | b'\\')
}

/// A client SCRAM nonce: 8 to [`MAX_SCRAM_NONCE`] characters, see [`is_nonce_char`].
fn scram_nonce(s: &str) -> Result<heapless::String<MAX_SCRAM_NONCE>, MessageError> {
    let ok = (8..=MAX_SCRAM_NONCE).contains(&s.len()) && s.bytes().all(is_nonce_char);
    if !ok {
        return Err(MessageError::BadEncoding);
    }
    let mut out = heapless::String::new();
    // Length checked above.
    let _ = out.push_str(s);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Requests (client to server)
// ---------------------------------------------------------------------------------------

/// A SCRAM verifier sent at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The new user.
    pub user: Username,
    /// The verifier the server stores.
    pub verifier: crate::auth::Verifier,
}

/// A transfer from the logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// Client-chosen idempotency key.
    pub id: TransferId,
    /// Recipient.
    pub to: Username,
    /// Amount.
    pub amount: Amount,
    /// A nonce the server issued to this session.
    pub nonce: Nonce,
    /// `HMAC(c2s, transfer MAC input)`; see [`crate::mac::transfer`].
    pub mac: [u8; TAG_LEN],
}

/// A parsed client request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// `register`: create a user from a client-computed SCRAM verifier.
    Register(RegisterRequest),
    /// `login`: SCRAM client-first message.
    Login {
        /// The user logging in.
        user: Username,
        /// The client's SCRAM nonce.
        nonce: heapless::String<MAX_SCRAM_NONCE>,
    },
    /// `proof`: SCRAM client-final message.
    Proof {
        /// `ClientProof`.
        proof: [u8; TAG_LEN],
    },
    /// `nonces`: issue `count` nonces (1 to [`MAX_NONCE_BATCH`]).
    Nonces {
        /// How many.
        count: u8,
    },
    /// `transfer`.
    Transfer(TransferRequest),
    /// `balance`.
    Balance,
    /// `history` (transfers only) or `statement` (transfers and deposits): a page of the
    /// user's journal, newest first, skipping `offset` entries.
    History {
        /// Entries to skip.
        offset: u32,
        /// True for `statement`: deposits are listed too.
        deposits: bool,
    },
    /// `logout`.
    Logout,
    /// `ping`.
    Ping,
}

/// Every field any request may carry. One serde pass fills it; [`Request::parse`] then
/// checks that exactly the fields of the named `op` are present. (Parsing once instead of
/// once for `op` and again for the message halves the cost of the hot path.)
#[derive(Deserialize, Default, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestWire<'a> {
    op: &'a str,
    #[serde(default, deserialize_with = "not_null")]
    user: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    salt: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    iterations: Option<u32>,
    #[serde(default, deserialize_with = "not_null")]
    stored_key: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    server_key: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    nonce: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    proof: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    count: Option<u8>,
    #[serde(default, deserialize_with = "not_null")]
    id: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    to: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    amount: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    mac: Option<&'a str>,
    #[serde(default, deserialize_with = "not_null")]
    offset: Option<u32>,
}

/// Deserializes a present field, refusing `null` (which plain `Option` would take as absent).
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

// One bit per optional field of `RequestWire`, to compare against each op's shape.
const USER: u16 = 1;
const SALT: u16 = 1 << 1;
const ITERATIONS: u16 = 1 << 2;
const STORED_KEY: u16 = 1 << 3;
const SERVER_KEY: u16 = 1 << 4;
const NONCE: u16 = 1 << 5;
const PROOF: u16 = 1 << 6;
const COUNT: u16 = 1 << 7;
const ID: u16 = 1 << 8;
const TO: u16 = 1 << 9;
const AMOUNT: u16 = 1 << 10;
const MAC: u16 = 1 << 11;
const OFFSET: u16 = 1 << 12;

impl RequestWire<'_> {
    fn present(&self) -> u16 {
        let bit = |present: bool, bit: u16| if present { bit } else { 0 };
        bit(self.user.is_some(), USER)
            | bit(self.salt.is_some(), SALT)
            | bit(self.iterations.is_some(), ITERATIONS)
            | bit(self.stored_key.is_some(), STORED_KEY)
            | bit(self.server_key.is_some(), SERVER_KEY)
            | bit(self.nonce.is_some(), NONCE)
            | bit(self.proof.is_some(), PROOF)
            | bit(self.count.is_some(), COUNT)
            | bit(self.id.is_some(), ID)
            | bit(self.to.is_some(), TO)
            | bit(self.amount.is_some(), AMOUNT)
            | bit(self.mac.is_some(), MAC)
            | bit(self.offset.is_some(), OFFSET)
    }
}

/// Required and optional fields of each request op.
fn shape(op: &str) -> Option<(u16, u16)> {
    Some(match op {
        "register" => (USER | SALT | ITERATIONS | STORED_KEY | SERVER_KEY, 0),
        "login" => (USER | NONCE, 0),
        "proof" => (PROOF, 0),
        "nonces" => (COUNT, 0),
        "transfer" => (ID | TO | AMOUNT | NONCE | MAC, 0),
        "history" | "statement" => (0, OFFSET),
        "balance" | "logout" | "ping" => (0, 0),
        _ => return None,
    })
}

/// The common request frames without serde: a flat object whose values are all strings
/// free of escapes and control characters, whose keys are string fields of [`RequestWire`],
/// each at most once, with `op` among them, and spaces or tabs between tokens. That is every
/// transfer, balance, logout and ping a client writes, and most logins and registrations'
/// strings. For such a frame this returns what serde-json-core makes of it (and `precheck`
/// passes it: valid UTF-8, no CR, no control character in a string, depth 1); for any other
/// frame it returns `None` and [`Request::parse`] takes serde-json-core's path, which also
/// decides every error. The property test `fast_path_matches_serde` and the fuzz target
/// `request_parser` check exactly that.
#[cfg_attr(not(feature = "fast-request"), allow(dead_code))]
pub(crate) fn fast_request_wire(frame: &[u8]) -> Option<RequestWire<'_>> {
    let text = core::str::from_utf8(frame).ok()?;
    let mut at = skip_frame_space(frame, 0);
    if frame.get(at) != Some(&b'{') {
        return None;
    }
    let mut wire = RequestWire::default();
    let (mut seen, mut has_op) = (0u16, false);
    loop {
        at = skip_frame_space(frame, at + 1);
        let (key, after) = plain_string(text, at)?;
        at = skip_frame_space(frame, after);
        if frame.get(at) != Some(&b':') {
            return None;
        }
        at = skip_frame_space(frame, at + 1);
        let (value, after) = plain_string(text, at)?;
        if key == "op" {
            if has_op {
                return None;
            }
            has_op = true;
            wire.op = value;
        } else {
            let (slot, bit) = match key {
                "user" => (&mut wire.user, USER),
                "salt" => (&mut wire.salt, SALT),
                "stored_key" => (&mut wire.stored_key, STORED_KEY),
                "server_key" => (&mut wire.server_key, SERVER_KEY),
                "nonce" => (&mut wire.nonce, NONCE),
                "proof" => (&mut wire.proof, PROOF),
                "id" => (&mut wire.id, ID),
                "to" => (&mut wire.to, TO),
                "amount" => (&mut wire.amount, AMOUNT),
                "mac" => (&mut wire.mac, MAC),
                // Numbers, unknown keys: serde-json-core's path.
                _ => return None,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            *slot = Some(value);
        }
        at = skip_frame_space(frame, after);
        match frame.get(at) {
            Some(b',') => continue,
            Some(b'}') => break,
            _ => return None,
        }
    }
    let end = skip_frame_space(frame, at + 1);
    (has_op && end == frame.len()).then_some(wire)
}

/// The first index at or after `at` that is not a space or tab.
fn skip_frame_space(frame: &[u8], mut at: usize) -> usize {
    while frame.get(at).is_some_and(|&b| is_frame_space(b)) {
        at += 1;
    }
    at
}

/// The string starting with the quote at `at`, if it holds no `\` and no control character;
/// and the index after its closing quote.
fn plain_string(text: &str, at: usize) -> Option<(&str, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let end = start + crate::scan::find_json_special(bytes.get(start..)?)?;
    if bytes[end] != b'"' {
        return None;
    }
    // Both ends are ASCII quotes, so this is a whole number of characters.
    Some((text.get(start..end)?, end + 1))
}

impl Request {
    /// Parses a request frame (without its newline).
    pub fn parse(frame: &[u8]) -> Result<Request, MessageError> {
        #[cfg(feature = "fast-request")]
        if let Some(w) = fast_request_wire(frame) {
            return Request::from_wire(w);
        }
        Request::parse_with_serde(frame)
    }

    /// [`Request::parse`] by serde-json-core alone: the path for every frame the fast path
    /// does not take, and the oracle it is tested against.
    pub(crate) fn parse_with_serde(frame: &[u8]) -> Result<Request, MessageError> {
        Request::from_wire(Request::wire_with_serde(frame)?)
    }

    /// `precheck` and serde-json-core: the fields of any well-formed request frame.
    pub(crate) fn wire_with_serde(frame: &[u8]) -> Result<RequestWire<'_>, MessageError> {
        precheck(frame, 1)?;
        match parse_whole(frame) {
            Ok(w) => Ok(w),
            Err(e) => {
                // Report an unknown op as such even when its fields are unknown too.
                match parse_whole::<Head<'_>>(frame) {
                    Ok(h) if shape(h.op).is_none() => Err(MessageError::UnknownOp),
                    _ => Err(e),
                }
            }
        }
    }

    /// Checks the fields against the op's shape and validates their values.
    fn from_wire(w: RequestWire<'_>) -> Result<Request, MessageError> {
        let (required, optional) = shape(w.op).ok_or(MessageError::UnknownOp)?;
        let present = w.present();
        if present & required != required || present & !(required | optional) != 0 {
            return Err(MessageError::Syntax);
        }
        // The shape check above guarantees every field read below is present.
        fn field(v: Option<&str>) -> Result<&str, MessageError> {
            v.ok_or(MessageError::Syntax)
        }
        Ok(match w.op {
            "register" => {
                let mut salt = [0u8; MAX_SALT];
                let salt = base64_decode(field(w.salt)?, &mut salt)
                    .map_err(|_| MessageError::BadEncoding)?;
                let mut s = heapless::Vec::new();
                // base64_decode wrote at most MAX_SALT bytes.
                let _ = s.extend_from_slice(salt);
                Request::Register(RegisterRequest {
                    user: username(field(w.user)?)?,
                    verifier: crate::auth::Verifier {
                        salt: s,
                        iterations: w.iterations.unwrap_or(0),
                        stored_key: tag_b64(field(w.stored_key)?)?,
                        server_key: tag_b64(field(w.server_key)?)?,
                    },
                })
            }
            "login" => Request::Login {
                user: username(field(w.user)?)?,
                nonce: scram_nonce(field(w.nonce)?)?,
            },
            "proof" => Request::Proof {
                proof: tag_b64(field(w.proof)?)?,
            },
            "nonces" => {
                let count = w.count.unwrap_or(0);
                if count == 0 || usize::from(count) > MAX_NONCE_BATCH {
                    return Err(MessageError::Syntax);
                }
                Request::Nonces { count }
            }
            "transfer" => Request::Transfer(TransferRequest {
                id: transfer_id(field(w.id)?)?,
                to: username(field(w.to)?)?,
                amount: amount(field(w.amount)?)?,
                nonce: hex_decode::<NONCE_LEN>(field(w.nonce)?)
                    .map_err(|_| MessageError::BadEncoding)?,
                mac: hex_decode::<TAG_LEN>(field(w.mac)?).map_err(|_| MessageError::BadEncoding)?,
            }),
            "history" | "statement" => Request::History {
                offset: w.offset.unwrap_or(0),
                deposits: w.op == "statement",
            },
            "balance" => Request::Balance,
            "logout" => Request::Logout,
            _ => Request::Ping,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Wire structs shared by both directions: the server serializes them, the client parses.
// ---------------------------------------------------------------------------------------

/// Wire form of `register`.
#[derive(Serialize)]
pub struct RegisterFrame<'a> {
    /// Always `"register"`.
    pub op: &'static str,
    /// Username.
    pub user: &'a str,
    /// Base64 salt.
    pub salt: &'a str,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Base64 StoredKey.
    pub stored_key: &'a str,
    /// Base64 ServerKey.
    pub server_key: &'a str,
}

/// Wire form of `login`.
#[derive(Serialize)]
pub struct LoginFrame<'a> {
    /// Always `"login"`.
    pub op: &'static str,
    /// Username.
    pub user: &'a str,
    /// Client nonce.
    pub nonce: &'a str,
}

/// Wire form of `proof`.
#[derive(Serialize)]
pub struct ProofFrame<'a> {
    /// Always `"proof"`.
    pub op: &'static str,
    /// Base64 ClientProof.
    pub proof: &'a str,
}

/// Wire form of `nonces` (request).
#[derive(Serialize)]
pub struct NoncesRequestFrame {
    /// Always `"nonces"`.
    pub op: &'static str,
    /// How many.
    pub count: u8,
}

/// Wire form of `transfer`.
#[derive(Serialize)]
pub struct TransferFrame<'a> {
    /// Always `"transfer"`.
    pub op: &'static str,
    /// Transfer id.
    pub id: &'a str,
    /// Recipient.
    pub to: &'a str,
    /// Amount.
    pub amount: Amount,
    /// Hex nonce.
    pub nonce: &'a str,
    /// Hex MAC.
    pub mac: &'a str,
}

/// Wire form of `history` (request).
#[derive(Serialize)]
pub struct HistoryRequestFrame {
    /// Always `"history"`.
    pub op: &'static str,
    /// Entries to skip.
    pub offset: u32,
}

/// Wire form of a request with no fields (`balance`, `logout`, `ping`).
#[derive(Serialize)]
pub struct BareFrame {
    /// The op.
    pub op: &'static str,
}

/// `challenge`: SCRAM server-first message.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ChallengeFrame<'a> {
    /// Always `"challenge"`.
    pub op: &'a str,
    /// Client nonce followed by the server's extension.
    pub nonce: &'a str,
    /// Base64 salt.
    pub salt: &'a str,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

/// `welcome`: login succeeded; carries the SCRAM server signature.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WelcomeFrame<'a> {
    /// Always `"welcome"`.
    pub op: &'a str,
    /// The user now logged in.
    pub user: &'a str,
    /// Base64 `ServerSignature`.
    pub signature: &'a str,
}

/// `registered`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RegisteredFrame<'a> {
    /// Always `"registered"`.
    pub op: &'a str,
    /// The new user.
    pub user: &'a str,
}

/// `nonces` (response).
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NoncesFrame<'a> {
    /// Always `"nonces"`.
    pub op: &'a str,
    /// Hex nonces, oldest first.
    #[serde(borrow)]
    pub nonces: heapless::Vec<&'a str, MAX_NONCE_BATCH>,
}

/// `receipt`: the authenticated outcome of a transfer.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReceiptFrame<'a> {
    /// Always `"receipt"`.
    pub op: &'a str,
    /// Response sequence number in this session.
    pub seq: u32,
    /// Transfer id.
    pub id: &'a str,
    /// Recipient.
    pub to: &'a str,
    /// Amount.
    pub amount: &'a str,
    /// `"committed"` or an error code name.
    pub result: &'a str,
    /// The sender's balance after the transfer (or now, if refused).
    pub balance: &'a str,
    /// Hex MAC under the server-to-client key.
    pub mac: &'a str,
}

/// `balance` (response).
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct BalanceFrame<'a> {
    /// Always `"balance"`.
    pub op: &'a str,
    /// Response sequence number.
    pub seq: u32,
    /// Balance.
    pub balance: &'a str,
    /// Hex MAC.
    pub mac: &'a str,
}

/// One journal entry in a history or statement page.
///
/// In a `history` page every entry is a transfer without `kind`. In a `statement` page every
/// entry has `kind`: `"transfer"` (with `id` and `from`) or `"deposit"` (without them).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntryFrame<'a> {
    /// `"transfer"` or `"deposit"` in a statement; absent in a history page.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<&'a str>,
    /// Transfer id; absent for a deposit.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<&'a str>,
    /// Sender; absent for a deposit.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<&'a str>,
    /// Recipient.
    pub to: &'a str,
    /// Amount.
    pub amount: &'a str,
    /// Commit time, milliseconds since the Unix epoch (0 where the ledger has no clock).
    pub at: u64,
}

/// `history` or `statement` (response).
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct HistoryFrame<'a> {
    /// `"history"` or `"statement"`.
    pub op: &'a str,
    /// Response sequence number.
    pub seq: u32,
    /// Newest first.
    #[serde(borrow)]
    pub entries: heapless::Vec<HistoryEntryFrame<'a>, HISTORY_PAGE>,
    /// True if older entries exist.
    pub more: bool,
    /// Hex MAC.
    pub mac: &'a str,
}

/// `error`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ErrorFrame<'a> {
    /// Always `"error"`.
    pub op: &'a str,
    /// Stable code name.
    pub code: &'a str,
    /// Human message.
    pub message: &'a str,
}

/// A parsed server response, borrowed from the frame.
#[derive(Debug)]
#[non_exhaustive]
pub enum Response<'a> {
    /// `registered`.
    Registered(RegisteredFrame<'a>),
    /// `challenge`.
    Challenge(ChallengeFrame<'a>),
    /// `welcome`.
    Welcome(WelcomeFrame<'a>),
    /// `nonces`.
    Nonces(NoncesFrame<'a>),
    /// `receipt`.
    Receipt(ReceiptFrame<'a>),
    /// `balance`.
    Balance(BalanceFrame<'a>),
    /// `history`.
    History(HistoryFrame<'a>),
    /// `statement` (a history page that lists deposits too).
    Statement(HistoryFrame<'a>),
    /// `bye`.
    Bye,
    /// `pong`.
    Pong,
    /// `error`.
    Error(ErrorFrame<'a>),
}

impl<'a> Response<'a> {
    /// Parses a response frame (without its newline).
    pub fn parse(frame: &'a [u8]) -> Result<Response<'a>, MessageError> {
        let op = op_of(frame, 3)?;
        Ok(match op {
            "registered" => Response::Registered(parse_whole(frame)?),
            "challenge" => Response::Challenge(parse_whole(frame)?),
            "welcome" => Response::Welcome(parse_whole(frame)?),
            "nonces" => Response::Nonces(parse_whole(frame)?),
            "receipt" => Response::Receipt(parse_whole(frame)?),
            "balance" => Response::Balance(parse_whole(frame)?),
            "history" => Response::History(parse_whole(frame)?),
            "statement" => Response::Statement(parse_whole(frame)?),
            "error" => Response::Error(parse_whole(frame)?),
            "bye" | "pong" => {
                let _: BareWire<'_> = parse_whole(frame)?;
                if op == "bye" {
                    Response::Bye
                } else {
                    Response::Pong
                }
            }
            _ => return Err(MessageError::UnknownOp),
        })
    }

    /// The response's `op` on the wire, e.g. `"receipt"` or `"error"`.
    pub const fn op(&self) -> &'static str {
        match self {
            Response::Registered(_) => "registered",
            Response::Challenge(_) => "challenge",
            Response::Welcome(_) => "welcome",
            Response::Nonces(_) => "nonces",
            Response::Receipt(_) => "receipt",
            Response::Balance(_) => "balance",
            Response::History(_) => "history",
            Response::Statement(_) => "statement",
            Response::Bye => "bye",
            Response::Pong => "pong",
            Response::Error(_) => "error",
        }
    }
}

/// Parses a balance or amount string from a response.
pub fn parse_balance(s: &str) -> Result<Amount, MessageError> {
    balance(s)
}

/// Parses a positive amount string from a response.
pub fn parse_amount(s: &str) -> Result<Amount, MessageError> {
    amount(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_op_is_the_wire_op() {
        let frames: &[&[u8]] = &[
            br#"{"op":"pong"}"#,
            br#"{"op":"bye"}"#,
            br#"{"op":"error","code":"bad_mac","message":"message authentication failed"}"#,
        ];
        for f in frames {
            let r = Response::parse(f).unwrap();
            let text = core::str::from_utf8(f).unwrap();
            assert!(
                text.starts_with(&format!(r#"{{"op":"{}""#, r.op())),
                "{text}"
            );
        }
    }

    #[test]
    fn parses_a_transfer() {
        let f = br#"{"op":"transfer","id":"t1","to":"Bob","amount":"10.5","nonce":"000102030405060708090a0b0c0d0e0f","mac":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        match Request::parse(f).unwrap() {
            Request::Transfer(t) => {
                assert_eq!(t.to.as_str(), "bob");
                assert_eq!(t.amount, Amount(1050));
                assert_eq!(t.nonce[15], 15);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_bad_frames_with_typed_errors() {
        let cases: &[(&[u8], MessageError)] = &[
            (b"\xff\xfe", MessageError::NotUtf8),
            (b"{\"op\":\"ping\",\"x\":1}", MessageError::Syntax),
            (b"{\"op\":\"ping\",\"op\":\"ping\"}", MessageError::Syntax),
            (b"{\"op\":\"nonces\",\"count\":\"3\"}", MessageError::Syntax),
            (b"{\"op\":\"nonces\",\"count\":0}", MessageError::Syntax),
            (b"{\"op\":\"nonces\",\"count\":9}", MessageError::Syntax),
            (b"{\"op\":\"launch\"}", MessageError::UnknownOp),
            (b"{\"op\":\"ping\"} x", MessageError::Syntax),
            (b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", MessageError::TooDeep),
            (b"{\"op\":\"ping\",\"x\":{\"y\":1}}", MessageError::TooDeep),
            (
                b"{\"op\":\"login\",\"user\":\"a b\",\"nonce\":\"abcdefgh\"}",
                MessageError::BadName,
            ),
            (
                b"{\"op\":\"login\",\"user\":\"ab\",\"nonce\":\"abc,defgh\"}",
                MessageError::BadEncoding,
            ),
            (b"", MessageError::Syntax),
            (b"null", MessageError::Syntax),
        ];
        for (frame, want) in cases {
            assert_eq!(
                Request::parse(frame),
                Err(*want),
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
        let amounts = ["0", "-0", "1.001", "1e3", "-5", "01"];
        for a in amounts {
            let f = format!(
                r#"{{"op":"transfer","id":"t1","to":"bob","amount":"{a}","nonce":"000102030405060708090a0b0c0d0e0f","mac":"{}"}}"#,
                "0".repeat(64)
            );
            assert_eq!(
                Request::parse(f.as_bytes()),
                Err(MessageError::BadAmount),
                "{a}"
            );
        }
    }

    #[test]
    fn parses_bare_and_defaulted_requests() {
        assert_eq!(Request::parse(b" {\"op\" : \"ping\"} "), Ok(Request::Ping));
        assert_eq!(
            Request::parse(b"{\"op\":\"history\"}"),
            Ok(Request::History {
                offset: 0,
                deposits: false
            })
        );
        assert_eq!(
            Request::parse(b"{\"op\":\"statement\",\"offset\":3}"),
            Ok(Request::History {
                offset: 3,
                deposits: true
            })
        );
    }

    #[test]
    fn parses_responses() {
        let f = br#"{"op":"history","seq":2,"entries":[{"id":"a","from":"x","to":"y","amount":"1.00","at":5}],"more":false,"mac":"ab"}"#;
        match Response::parse(f).unwrap() {
            Response::History(h) => assert_eq!(h.entries[0].at, 5),
            other => panic!("{other:?}"),
        }
        let f = br#"{"op":"statement","seq":3,"entries":[{"kind":"deposit","to":"y","amount":"1.00","at":6}],"more":false,"mac":"ab"}"#;
        match Response::parse(f).unwrap() {
            Response::Statement(h) => {
                let e = &h.entries[0];
                assert_eq!(
                    (e.kind, e.id, e.from, e.at),
                    (Some("deposit"), None, None, 6)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Response::parse(b"{\"op\":\"bye\"}"),
            Ok(Response::Bye)
        ));
        assert_eq!(
            Response::parse(b"{\"op\":\"bye\",\"z\":1}").unwrap_err(),
            MessageError::Syntax
        );
    }

    mod fast_path {
        use super::super::*;
        use proptest::prelude::*;
        use std::string::String;
        use std::vec::Vec;

        /// Keys: every field of a request, an unknown one, one spelled with an escape.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => proptest::sample::select(&[
                    "op", "user", "salt", "iterations", "stored_key", "server_key", "nonce",
                    "proof", "count", "id", "to", "amount", "mac", "offset",
                ][..]).prop_map(String::from),
                1 => Just(String::from("x")),
                1 => Just(String::from("o\\u0070")),
                1 => Just(String::from("")),
            ]
        }

        /// Text inside a string: plain, with the bytes that end or escape a string, braces,
        /// control characters, non-ASCII.
        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => proptest::sample::select(&[
                    "transfer", "ping", "balance", "logout", "history", "nonces", "login",
                    "proof", "register", "alice", "bob", "t-1", "1.00", "0", "",
                    "00112233445566778899aabbccddeeff",
                ][..]).prop_map(String::from),
                2 => "[a-z0-9.:_-]{0,12}",
                2 => proptest::collection::vec(
                    prop_oneof![
                        Just('"'), Just('\\'), Just('{'), Just('}'), Just('\u{0}'),
                        Just('\t'), Just('\n'), Just('\r'), Just('\u{1f}'), Just('\u{7f}'),
                        Just('é'), Just('😀'), Just(' '), Just(','), Just(':'), proptest::char::range('a', 'f'),
                    ],
                    0..6,
                ).prop_map(|cs| cs.into_iter().collect()),
            ]
        }

        /// A value: mostly strings, also numbers, literals, nested values, nothing.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => text().prop_map(|t| std::format!("\"{t}\"")),
                1 => proptest::sample::select(&[
                    "0", "8", "08", "-1", "1.5", "4294967296", "256", "null", "true", "{}",
                    "[]", "[\"a\"]", "{\"a\":\"b\"}", "", "\"a\"\"b\"", "nul",
                ][..]).prop_map(String::from),
            ]
        }

        /// Whitespace between tokens: usually none or a space, sometimes what only one side
        /// might accept.
        fn space() -> impl Strategy<Value = &'static str> {
            prop_oneof![
                6 => Just(""),
                2 => Just(" "),
                1 => proptest::sample::select(&["\t", "  \t", "\n", "\r", "\r\n", "\u{b}", "\u{a0}"][..]),
            ]
        }

        /// A separator: usually the right one, sometimes a wrong or missing one.
        fn separator(right: &'static str) -> impl Strategy<Value = &'static str> {
            prop_oneof![
                12 => Just(right),
                1 => proptest::sample::select(&["", ",", ":", ";", ",,", "}", "{"][..]),
            ]
        }

        prop_compose! {
            fn member()(
                k in key(), v in value(), s1 in space(), s2 in space(), s3 in space(),
                colon in separator(":"),
            ) -> String {
                std::format!("{s1}\"{k}\"{s2}{colon}{s3}{v}")
            }
        }

        prop_compose! {
            /// A frame close to a request, as bytes; sometimes one byte changed.
            fn frame()(
                lead in space(), open in separator("{"),
                members in proptest::collection::vec((member(), separator(",")), 0..8),
                close in separator("}"), tail in prop_oneof![
                    8 => space(),
                    1 => proptest::sample::select(&["x", "{}", ",", "\u{0}"][..]),
                ],
                flip in proptest::option::weighted(0.2, (any::<prop::sample::Index>(), any::<u8>())),
            ) -> Vec<u8> {
                let mut text = std::format!("{lead}{open}");
                for (i, (m, comma)) in members.iter().enumerate() {
                    if i > 0 {
                        text.push_str(comma);
                    }
                    text.push_str(m);
                }
                text.push_str(close);
                text.push_str(tail);
                let mut bytes = text.into_bytes();
                if let (Some((at, b)), false) = (flip, bytes.is_empty()) {
                    let at = at.index(bytes.len());
                    bytes[at] = b;
                }
                bytes
            }
        }

        /// The fields of each request op, as a client writes them.
        const SHAPES: &[&[&str]] = &[
            &["op", "id", "to", "amount", "nonce", "mac"],
            &["op"],
            &["op", "user", "nonce"],
            &["op", "proof"],
            &[
                "op",
                "user",
                "salt",
                "iterations",
                "stored_key",
                "server_key",
            ],
            &["op", "count"],
            &["op", "offset"],
        ];

        prop_compose! {
            /// A request of some op's shape, its fields shuffled, with a value of any kind
            /// now and then, space or not between tokens; sometimes one byte changed.
            fn shaped()(
                shape in proptest::sample::select(SHAPES),
                values in proptest::collection::vec(
                    prop_oneof![
                        12 => text().prop_map(|t| std::format!("\"{t}\"")),
                        1 => value(),
                    ],
                    6,
                ),
                spaces in proptest::collection::vec(
                    prop_oneof![8 => proptest::sample::select(&["", " ", "\t"][..]), 1 => space()],
                    24,
                ),
                order in any::<prop::sample::Index>(),
                flip in proptest::option::weighted(0.1, (any::<prop::sample::Index>(), any::<u8>())),
            ) -> Vec<u8> {
                let mut keys: Vec<&str> = shape.to_vec();
                let first = order.index(keys.len());
                keys.swap(0, first);
                let mut text = std::format!("{}{{", spaces[0]);
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    text.push_str(&std::format!(
                        "{}\"{key}\"{}:{}{}{}",
                        spaces[1 + 3 * i],
                        spaces[2 + 3 * i],
                        spaces[3 + 3 * i],
                        values[i],
                        spaces[4 + 3 * i].replace(['\n', '\r'], " "),
                    ));
                }
                text.push('}');
                text.push_str(spaces[23]);
                let mut bytes = text.into_bytes();
                if let Some((at, b)) = flip {
                    let at = at.index(bytes.len());
                    bytes[at] = b;
                }
                bytes
            }
        }

        /// Both kinds of frame.
        fn any_frame() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![frame(), shaped()]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// The fast path reads exactly the fields serde-json-core reads, and parsing
            /// gives the same request or the same error either way.
            #[test]
            fn fast_path_matches_serde(frame in any_frame()) {
                if let Some(wire) = fast_request_wire(&frame) {
                    prop_assert_eq!(Request::wire_with_serde(&frame), Ok(wire));
                }
                prop_assert_eq!(Request::parse(&frame), Request::parse_with_serde(&frame));
            }

            /// The same over arbitrary bytes.
            #[test]
            fn fast_path_matches_serde_on_any_bytes(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
                if let Some(wire) = fast_request_wire(&frame) {
                    prop_assert_eq!(Request::wire_with_serde(&frame), Ok(wire));
                }
                prop_assert_eq!(Request::parse(&frame), Request::parse_with_serde(&frame));
            }
        }

        /// The generator reaches both paths and every outcome often enough to mean
        /// something: the fast path, serde's path accepting, and several errors.
        #[test]
        fn generator_reaches_both_paths() {
            use proptest::strategy::ValueTree;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let (mut fast, mut accepted, mut errors) = (0, 0, std::collections::BTreeSet::new());
            for _ in 0..4000 {
                let frame = any_frame().new_tree(&mut runner).unwrap().current();
                fast += usize::from(fast_request_wire(&frame).is_some());
                match Request::parse(&frame) {
                    Ok(_) => accepted += 1,
                    Err(e) => {
                        errors.insert(std::format!("{e:?}"));
                    }
                }
            }
            std::println!("fast path {fast}, accepted {accepted}, errors {errors:?}");
            assert!(fast > 400, "fast path took {fast}");
            assert!(accepted > 20, "accepted {accepted}");
            assert!(errors.len() >= 5, "errors seen: {errors:?}");
        }

        /// The frames a client writes take the fast path.
        #[test]
        fn client_frames_take_the_fast_path() {
            for frame in [
                &br#"{"op":"transfer","id":"t-1","to":"bob","amount":"1.00","nonce":"00112233445566778899aabbccddeeff","mac":"00"}"#[..],
                br#"{"op":"balance"}"#,
                br#"{"op":"ping"}"#,
                br#"{"op":"login","user":"alice","nonce":"abcdefgh"}"#,
            ] {
                assert!(fast_request_wire(frame).is_some(), "{}", String::from_utf8_lossy(frame));
            }
        }
    }
}
