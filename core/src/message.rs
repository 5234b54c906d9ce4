//! Every message of the protocol, as borrowed and fixed-capacity types.
//!
//! Each frame is one flat JSON object whose `"op"` names the message. Parsing runs in two
//! passes over the frame: a scan that rejects invalid UTF-8 and nesting deeper than the
//! message shapes allow (so no input can drive the parser's recursion), then serde-json-core
//! into a struct per message with `deny_unknown_fields` (serde's derive also refuses
//! duplicate keys). Field values are validated into [`Username`], [`TransferId`],
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
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestWire<'a> {
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

impl Request {
    /// Parses a request frame (without its newline).
    pub fn parse(frame: &[u8]) -> Result<Request, MessageError> {
        precheck(frame, 1)?;
        let w: RequestWire<'_> = match parse_whole(frame) {
            Ok(w) => w,
            Err(e) => {
                // Report an unknown op as such even when its fields are unknown too.
                return match parse_whole::<Head<'_>>(frame) {
                    Ok(h) if shape(h.op).is_none() => Err(MessageError::UnknownOp),
                    _ => Err(e),
                };
            }
        };
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
}
