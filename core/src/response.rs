//! The server's response encoder: the same bytes as serde-json-core, written in pieces.
//!
//! serde-json-core's serializer escapes every string one `char` at a time. Every string a
//! server response carries (names, ids, hex, base64, amounts, codes, messages) was validated
//! when it entered the core and needs no escaping, so [`JsonWriter::string`] copies each run
//! of bytes that needs none in one piece, and escapes what does exactly as serde-json-core
//! does (so a string that did need escaping would still come out the same). Field names are
//! constants written whole. Requests are still parsed, and the client's requests other than
//! transfers still written, by serde-json-core; with `fast-request` the client writes its
//! transfers with `CheckedTransfer`, the same bytes (proptest below).
//!
//! The claim "byte for byte what serde-json-core writes, for every response" is checked by
//! the proptest at the bottom of this file over arbitrary strings and numbers, and by the
//! fuzz target `fuzz/fuzz_targets/response_encoder.rs` (through [`crate::fuzzing`]).

use crate::amount::Amount;
use crate::crypto::Tag;
use crate::framing::InsufficientSizeError;
use crate::mac::ReceiptFields;
use crate::message::{
    BalanceFrame, BareFrame, ChallengeFrame, ErrorFrame, HistoryEntryFrame, HistoryFrame,
    NoncesFrame, ReceiptFrame, RegisteredFrame, WelcomeFrame,
};
use crate::names::{TransferId, Username};
use crate::replay::Nonce;

/// A JSON writer into a fixed slice. Once the slice is full it writes nothing more and
/// [`finish`](Self::finish) reports the size the whole text needs.
pub struct JsonWriter<'a> {
    buf: &'a mut [u8],
    /// Bytes of the text so far, written or not.
    len: usize,
}

impl<'a> JsonWriter<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        JsonWriter { buf, len: 0 }
    }

    /// The next `n` bytes of the text: the slice to fill if they fit, else `None` (the text
    /// grows by `n` either way, so that [`finish`](Self::finish) reports the size needed).
    #[inline(always)]
    fn reserve(&mut self, n: usize) -> Option<&mut [u8]> {
        let start = self.len;
        self.len += n;
        self.buf.get_mut(start..start + n)
    }

    /// Appends `bytes` as they are (punctuation, field names, already valid JSON).
    // Inlined: most callers pass constants, whose copy then needs no call (not in the device
    // images, without `fast-request`: each inlined copy costs flash).
    #[cfg_attr(feature = "fast-request", inline(always))]
    pub fn raw(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.reserve(bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    /// Appends `bytes`, which need no escaping, between quotes.
    #[inline]
    fn quoted(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        if let Some(dst) = self.reserve(n + 2) {
            dst[0] = b'"';
            crate::encoding::copy_short(&mut dst[1..=n], bytes);
            dst[n + 1] = b'"';
        }
    }

    /// Appends `text` as a JSON string: runs that need no escaping are copied whole; `"`,
    /// `\` and U+0000 to U+001F are escaped as serde-json-core escapes them (`\b`, `\t`, `\n`,
    /// `\f`, `\r` where they exist, else `\u00XX` in upper-case hex).
    pub fn string(&mut self, text: &str) {
        let bytes = text.as_bytes();
        // Every string the server writes needs no escaping: one copy between quotes.
        match crate::scan::find_json_special(bytes) {
            None => self.quoted(bytes),
            Some(first) => self.escaped(bytes, first),
        }
    }

    /// [`string`](Self::string) for text with a byte to escape at `first`.
    #[cold]
    fn escaped(&mut self, bytes: &[u8], first: usize) {
        self.raw(b"\"");
        let mut run = 0;
        let mut found = Some(first);
        while let Some(at) = found {
            let i = run + at;
            let b = bytes[i];
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                b'\t' => b't',
                b'\n' => b'n',
                0x0c => b'f',
                b'\r' => b'r',
                _ => 0,
            };
            self.raw(&bytes[run..i]);
            run = i + 1;
            if short != 0 {
                self.raw(&[b'\\', short]);
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                self.raw(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
            found = crate::scan::find_json_special(&bytes[run..]);
        }
        self.raw(&bytes[run..]);
        self.raw(b"\"");
    }

    /// Appends `bytes` as a JSON string of lowercase hex (what
    /// [`string`](Self::string) of [`hex_encode`](crate::encoding::hex_encode) writes).
    pub fn hex(&mut self, bytes: &[u8]) {
        let n = 2 * bytes.len();
        if let Some(dst) = self.reserve(n + 2) {
            dst[0] = b'"';
            crate::encoding::hex_encode_into(bytes, &mut dst[1..=n]);
            dst[n + 1] = b'"';
        }
    }

    /// Appends an amount as a JSON string (what [`string`](Self::string) of
    /// [`Amount::to_text`] writes).
    pub fn amount(&mut self, amount: Amount) {
        let mut buf = [0u8; 24];
        self.quoted(amount.write_text(&mut buf));
    }

    /// Appends an unsigned integer in decimal.
    pub fn uint(&mut self, value: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = value;
        loop {
            i -= 1;
            let (quotient, digit) = crate::amount::div_rem_10(v);
            digits[i] = b'0' + digit;
            v = quotient;
            if v == 0 {
                break;
            }
        }
        if let Some(dst) = self.reserve(digits.len() - i) {
            crate::encoding::copy_short(dst, &digits[i..]);
        }
    }

    /// Appends `true` or `false`.
    pub fn boolean(&mut self, value: bool) {
        self.raw(if value { b"true" } else { b"false" });
    }

    /// Appends `,"name":` (or `{"name":` for the first field, `first`).
    fn key(&mut self, open: bool, name: &[u8]) {
        self.raw(if open { b"{\"" } else { b",\"" });
        self.raw(name);
        self.raw(b"\":");
    }

    /// The number of bytes written, or the size the text needs if the slice was too small.
    pub fn finish(self) -> Result<usize, InsufficientSizeError> {
        if self.len <= self.buf.len() {
            Ok(self.len)
        } else {
            Err(InsufficientSizeError { required: self.len })
        }
    }
}

/// A response frame that [`JsonWriter`] writes as serde-json-core would serialize it (the
/// fields in declaration order, as `#[derive(Serialize)]` does).
pub trait WriteJson {
    /// Appends the frame's JSON object (no newline).
    fn write_json(&self, w: &mut JsonWriter<'_>);
}

/// Writes `message` and a newline into `out`, returning the bytes written: the same bytes
/// as [`encode_frame`](crate::framing::encode_frame). If `out` is too small the error says
/// how many bytes the frame needs.
pub fn encode_response<T: WriteJson + ?Sized>(
    message: &T,
    out: &mut [u8],
) -> Result<usize, InsufficientSizeError> {
    let mut w = JsonWriter::new(out);
    message.write_json(&mut w);
    w.raw(b"\n");
    w.finish()
}

impl WriteJson for BareFrame {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.raw(b"}");
    }
}

impl WriteJson for ErrorFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.key(false, b"code");
        w.string(self.code);
        w.key(false, b"message");
        w.string(self.message);
        w.raw(b"}");
    }
}

impl WriteJson for ReceiptFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.key(false, b"seq");
        w.uint(self.seq.into());
        w.key(false, b"id");
        w.string(self.id);
        w.key(false, b"to");
        w.string(self.to);
        w.key(false, b"amount");
        w.string(self.amount);
        w.key(false, b"result");
        w.string(self.result);
        w.key(false, b"balance");
        w.string(self.balance);
        w.key(false, b"mac");
        w.string(self.mac);
        w.raw(b"}");
    }
}

/// A receipt as the server answers a transfer: the fields its MAC covers and the MAC, still
/// binary, written as the [`ReceiptFrame`] of their texts (`op` `"receipt"`, the amounts as
/// [`Amount::to_text`], the MAC as [`hex_encode`](crate::encoding::hex_encode)) would be,
/// byte for byte (proptest below), but with the amounts and the MAC encoded straight into
/// the output and the constant parts written whole.
pub struct ReceiptResponse<'a> {
    /// What the receipt says (its `nonce` is not written).
    pub fields: &'a ReceiptFields<'a>,
    /// The receipt's MAC.
    pub mac: &'a Tag,
}

impl WriteJson for ReceiptResponse<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        write_receipt(self.fields, self.mac, w, |w, text| w.string(text));
    }
}

/// The receipt's body, its three texts (id, recipient, result) written by `text`: escaped
/// if need be ([`ReceiptResponse`]) or copied as they are ([`CheckedReceipt`]).
#[inline(always)]
fn write_receipt<'b>(
    f: &ReceiptFields<'_>,
    mac: &Tag,
    w: &mut JsonWriter<'b>,
    text: impl Fn(&mut JsonWriter<'b>, &str),
) {
    w.raw(b"{\"op\":\"receipt\",\"seq\":");
    w.uint(f.seq.into());
    w.raw(b",\"id\":");
    text(w, f.id);
    w.raw(b",\"to\":");
    text(w, f.to);
    w.raw(b",\"amount\":");
    w.amount(f.amount);
    w.raw(b",\"result\":");
    text(w, f.result);
    w.raw(b",\"balance\":");
    w.amount(f.balance);
    w.raw(b",\"mac\":");
    w.hex(mac.as_bytes());
    w.raw(b"}");
}

/// A [`ReceiptResponse`] whose id is a [`TransferId`](crate::names::TransferId)'s text, whose
/// recipient is a [`Username`](crate::names::Username)'s and whose result is `"committed"`
/// or an [`ErrorCode`](crate::error::ErrorCode)'s name, as every receipt the server writes:
/// those types hold no byte that JSON escapes, so with `fast-request` the three are copied
/// between quotes without the scan [`JsonWriter::string`] runs first. The same bytes as
/// [`ReceiptResponse`] for any such texts (proptest below). The server writes it only with
/// `fast-request`; the device images write [`ReceiptResponse`], as before.
// Without `fast-request` only the test kit writes it (the server writes `ReceiptResponse`).
#[cfg_attr(not(feature = "fast-request"), allow(dead_code))]
pub(crate) struct CheckedReceipt<'a> {
    /// What the receipt says; `id`, `to` and `result` as above.
    pub(crate) fields: &'a ReceiptFields<'a>,
    /// The receipt's MAC.
    pub(crate) mac: &'a Tag,
}

impl WriteJson for CheckedReceipt<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        write_receipt(self.fields, self.mac, w, |w, text| {
            w.quoted(text.as_bytes())
        });
    }
}

/// The client's transfer request from its typed parts, written as serde-json-core writes the
/// [`TransferFrame`](crate::message::TransferFrame) of their texts (`op` `"transfer"`, the
/// amount as [`Amount::to_text`], nonce and MAC as
/// [`hex_encode`](crate::encoding::hex_encode)), byte for byte (proptest below), in one
/// piece: a [`TransferId`]'s and a [`Username`]'s text hold no byte that JSON escapes, so
/// they are copied between quotes, and the amount, nonce and MAC are encoded straight into
/// the output. The client writes it only with `fast-request` (the host); without it (the
/// device images) the client writes the `TransferFrame` through serde-json-core, as before.
// Without `fast-request` only the tests and the test kit write it.
#[cfg_attr(not(feature = "fast-request"), allow(dead_code))]
pub(crate) struct CheckedTransfer<'a> {
    /// The transfer's idempotency key.
    pub(crate) id: &'a TransferId,
    /// The recipient.
    pub(crate) to: &'a Username,
    /// The amount.
    pub(crate) amount: Amount,
    /// The nonce the transfer spends.
    pub(crate) nonce: &'a Nonce,
    /// The transfer's MAC.
    pub(crate) mac: &'a Tag,
}

impl WriteJson for CheckedTransfer<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.raw(b"{\"op\":\"transfer\",\"id\":");
        w.quoted(self.id.as_str().as_bytes());
        w.raw(b",\"to\":");
        w.quoted(self.to.as_str().as_bytes());
        w.raw(b",\"amount\":");
        w.amount(self.amount);
        w.raw(b",\"nonce\":");
        w.hex(self.nonce);
        w.raw(b",\"mac\":");
        w.hex(self.mac.as_bytes());
        w.raw(b"}");
    }
}

/// For the tests and the fuzz target: the client's transfer from its typed parts, written by
/// [`CheckedTransfer`] (the host's client) and by serde-json-core from the
/// [`TransferFrame`](crate::message::TransferFrame) of their texts (the device images'
/// client), each into a buffer of `size` bytes (at most 4,096): `Ok` when both wrote the same
/// bytes, or both found the buffer too small and asked for the same size.
#[cfg(any(test, feature = "_testkit"))]
pub(crate) fn transfer_writers_agree(
    id: &TransferId,
    to: &Username,
    amount: Amount,
    nonce: &Nonce,
    mac: &Tag,
    size: usize,
) -> Result<(), &'static str> {
    let (nonce_text, mac_text) = (
        crate::encoding::hex_encode::<{ 2 * crate::replay::NONCE_LEN }>(nonce),
        crate::encoding::hex_encode::<64>(mac.as_bytes()),
    );
    let text = crate::message::TransferFrame {
        op: "transfer",
        id: id.as_str(),
        to: to.as_str(),
        amount,
        nonce: &nonce_text,
        mac: &mac_text,
    };
    let checked = CheckedTransfer {
        id,
        to,
        amount,
        nonce,
        mac,
    };
    let (mut ours, mut theirs) = ([0u8; 4096], [0u8; 4096]);
    let size = size.min(ours.len());
    let (ours, theirs) = (&mut ours[..size], &mut theirs[..size]);
    match (
        encode_response(&checked, ours),
        crate::framing::encode_frame(&text, theirs),
    ) {
        (Ok(n), Ok(m)) if ours[..n] == theirs[..m] => Ok(()),
        (Ok(_), Ok(_)) => Err("different bytes"),
        (Err(a), Err(b)) if a.required == b.required => Ok(()),
        (Err(_), Err(_)) => Err("different sizes asked for"),
        _ => Err("one fits and the other does not"),
    }
}

impl WriteJson for BalanceFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.key(false, b"seq");
        w.uint(self.seq.into());
        w.key(false, b"balance");
        w.string(self.balance);
        w.key(false, b"mac");
        w.string(self.mac);
        w.raw(b"}");
    }
}

impl WriteJson for HistoryEntryFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        // The first key opens the object, whichever of the optional ones is first.
        let mut first = true;
        for (key, value) in [
            (&b"kind"[..], self.kind),
            (&b"id"[..], self.id),
            (&b"from"[..], self.from),
        ] {
            if let Some(value) = value {
                w.key(first, key);
                w.string(value);
                first = false;
            }
        }
        w.key(first, b"to");
        w.string(self.to);
        w.key(false, b"amount");
        w.string(self.amount);
        w.key(false, b"at");
        w.uint(self.at);
        w.raw(b"}");
    }
}

impl WriteJson for HistoryFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.key(false, b"seq");
        w.uint(self.seq.into());
        w.key(false, b"entries");
        w.raw(b"[");
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                w.raw(b",");
            }
            entry.write_json(w);
        }
        w.raw(b"]");
        w.key(false, b"more");
        w.boolean(self.more);
        w.key(false, b"mac");
        w.string(self.mac);
        w.raw(b"}");
    }
}

impl WriteJson for NoncesFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.key(false, b"nonces");
        w.raw(b"[");
        for (i, nonce) in self.nonces.iter().enumerate() {
            if i > 0 {
                w.raw(b",");
            }
            w.string(nonce);
        }
        w.raw(b"]}");
    }
}

impl WriteJson for ChallengeFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.key(false, b"nonce");
        w.string(self.nonce);
        w.key(false, b"salt");
        w.string(self.salt);
        w.key(false, b"iterations");
        w.uint(self.iterations.into());
        w.raw(b"}");
    }
}

impl WriteJson for WelcomeFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.key(false, b"user");
        w.string(self.user);
        w.key(false, b"signature");
        w.string(self.signature);
        w.raw(b"}");
    }
}

impl WriteJson for RegisteredFrame<'_> {
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.key(true, b"op");
        w.string(self.op);
        w.key(false, b"user");
        w.string(self.user);
        w.raw(b"}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::encode_frame;
    use crate::message::{HISTORY_PAGE, MAX_NONCE_BATCH};
    use proptest::prelude::*;

    /// Both encoders into buffers of `size`: the same bytes, or both too small (with the same
    /// required size when serde-json-core can measure it, that is up to `MAX_RESPONSE`).
    fn same<T: WriteJson + serde::Serialize>(
        message: &T,
        size: usize,
    ) -> Result<(), TestCaseError> {
        let mut a = vec![0u8; size];
        let mut b = vec![0u8; size];
        let ours = encode_response(message, &mut a);
        let theirs = encode_frame(message, &mut b);
        match (ours, theirs) {
            (Ok(n), Ok(m)) => prop_assert_eq!(
                String::from_utf8_lossy(&a[..n]),
                String::from_utf8_lossy(&b[..m])
            ),
            (Err(e), Err(f)) => {
                if f.required <= crate::framing::MAX_RESPONSE {
                    prop_assert_eq!(e.required, f.required);
                }
            }
            (ours, theirs) => prop_assert!(false, "ours {:?}, serde-json-core {:?}", ours, theirs),
        }
        Ok(())
    }

    /// Any string, weighted towards what needs escaping.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_.-]{0,32}",
            "[\\x00-\\x1f\"\\\\a\u{e9}\u{1f600}]{0,12}",
            any::<String>(),
        ]
    }

    proptest! {
        /// Every response frame, with any strings and numbers, into a buffer of any size:
        /// byte for byte what serde-json-core writes.
        #[test]
        fn responses_match_serde_json_core(
            s in proptest::collection::vec(text(), 8),
            n in any::<u64>(),
            flag in any::<bool>(),
            count in 0usize..=MAX_NONCE_BATCH,
            entries in 0usize..=HISTORY_PAGE,
            size in prop_oneof![Just(4096usize), 0usize..700],
        ) {
            let seq = n as u32;
            same(&BareFrame { op: "pong" }, size)?;
            same(&ErrorFrame { op: &s[0], code: &s[1], message: &s[2] }, size)?;
            same(&ReceiptFrame {
                op: &s[0], seq, id: &s[1], to: &s[2], amount: &s[3], result: &s[4],
                balance: &s[5], mac: &s[6],
            }, size)?;
            same(&BalanceFrame { op: &s[7], seq, balance: &s[1], mac: &s[2] }, size)?;
            let entry = HistoryEntryFrame {
                kind: flag.then_some(s[2].as_str()), id: Some(&s[3]), from: (!flag).then_some(s[4].as_str()),
                to: &s[5], amount: &s[6], at: n,
            };
            let mut list = heapless::Vec::new();
            for _ in 0..entries {
                let _ = list.push(entry.clone());
            }
            same(&HistoryFrame { op: &s[0], seq, entries: list, more: flag, mac: &s[7] }, size)?;
            let nonces = (0..count).map(|i| s[i % 8].as_str()).collect();
            same(&NoncesFrame { op: &s[1], nonces }, size)?;
            same(&ChallengeFrame { op: &s[2], nonce: &s[3], salt: &s[4], iterations: seq }, size)?;
            same(&WelcomeFrame { op: &s[5], user: &s[6], signature: &s[7] }, size)?;
            same(&RegisteredFrame { op: &s[0], user: &s[1] }, size)?;
        }
    }

    proptest! {
        /// The server's receipt, from its binary fields, into a buffer of any size: byte for
        /// byte what serde-json-core writes for the `ReceiptFrame` of their texts.
        #[test]
        fn receipt_responses_match_serde_json_core(
            s in proptest::collection::vec(text(), 3),
            seq in any::<u32>(),
            amount in prop_oneof![any::<u64>(), 0u64..1000],
            balance in prop_oneof![any::<u64>(), 0u64..1000],
            mac in any::<[u8; 32]>(),
            nonce in any::<[u8; 16]>(),
            size in prop_oneof![Just(4096usize), 0usize..400],
        ) {
            let fields = ReceiptFields {
                seq, id: &s[0], to: &s[1], amount: Amount(amount), result: &s[2],
                balance: Amount(balance), nonce: &nonce,
            };
            let tag = Tag::from_bytes(mac);
            let (amount, balance) = (Amount(amount).to_text(), Amount(balance).to_text());
            let hex = crate::encoding::hex_encode::<64>(&mac);
            let frame = ReceiptFrame {
                op: "receipt", seq, id: &s[0], to: &s[1], amount: &amount, result: &s[2],
                balance: &balance, mac: &hex,
            };
            let mut a = vec![0u8; size];
            let mut b = vec![0u8; size];
            let ours = encode_response(&ReceiptResponse { fields: &fields, mac: &tag }, &mut a);
            match (ours, encode_frame(&frame, &mut b)) {
                (Ok(n), Ok(m)) => prop_assert_eq!(&a[..n], &b[..m]),
                (Err(e), Err(f)) => prop_assert_eq!(e.required, f.required),
                (ours, theirs) => prop_assert!(false, "ours {:?}, serde-json-core {:?}", ours, theirs),
            }
        }
    }

    /// A buffer of exactly the frame's size holds it; one byte less (or none) gets the size
    /// it needs and no partial frame is claimed.
    #[test]
    fn a_frame_fits_exactly_its_size() {
        let fields = ReceiptFields {
            seq: 42,
            id: "t-1",
            to: "bob",
            amount: Amount(1_050),
            result: "committed",
            balance: Amount(u64::MAX),
            nonce: &[7; 16],
        };
        let tag = Tag::from_bytes([0xa5; 32]);
        let receipt = ReceiptResponse {
            fields: &fields,
            mac: &tag,
        };
        let error = ErrorFrame {
            op: "error",
            code: "bad_mac",
            message: "message authentication failed \"quoted\"\n",
        };
        let frames: [&dyn WriteJson; 2] = [&receipt, &error];
        for frame in frames {
            let mut big = [0u8; 512];
            let n = encode_response(frame, &mut big).unwrap();
            assert_eq!(big[n - 1], b'\n');
            let mut exact = std::vec![0u8; n];
            assert_eq!(encode_response(frame, &mut exact), Ok(n));
            assert_eq!(exact[..], big[..n]);
            for short in [n - 1, n / 2, 0] {
                let mut small = std::vec![0u8; short];
                assert_eq!(
                    encode_response(frame, &mut small),
                    Err(InsufficientSizeError { required: n }),
                    "{short} bytes"
                );
            }
        }
    }

    proptest! {
        /// The server's receipt without the escape scan: for every id a `TransferId` takes,
        /// recipient a `Username` takes and result the server writes, the same bytes as
        /// [`ReceiptResponse`] (and so as serde-json-core), into a buffer of any size.
        #[test]
        fn checked_receipts_match_receipts(
            id in "[a-zA-Z0-9_.:\\-\"\\\\\u{1}\u{e9}]{1,12}",
            to in "[a-z0-9_.\\-\"\\\\\u{1f}\u{e9}]{1,12}",
            result in proptest::sample::select(
                crate::error::ErrorCode::ALL.iter().map(|c| c.name()).chain(["committed"]).collect::<Vec<_>>()
            ),
            seq in any::<u32>(),
            amount in any::<u64>(),
            mac in any::<[u8; 32]>(),
            size in prop_oneof![Just(4096usize), 0usize..400],
        ) {
            let (Ok(id), Ok(to)) = (
                crate::names::TransferId::parse(&id),
                crate::names::Username::parse(&to),
            ) else {
                return Ok(());
            };
            let nonce = [7; 16];
            let fields = ReceiptFields {
                seq, id: id.as_str(), to: to.as_str(), amount: Amount(amount), result,
                balance: Amount(amount / 3), nonce: &nonce,
            };
            let tag = Tag::from_bytes(mac);
            let mut a = vec![0u8; size];
            let mut b = vec![0u8; size];
            let checked = encode_response(&CheckedReceipt { fields: &fields, mac: &tag }, &mut a);
            let plain = encode_response(&ReceiptResponse { fields: &fields, mac: &tag }, &mut b);
            match (checked, plain) {
                (Ok(n), Ok(m)) => prop_assert_eq!(&a[..n], &b[..m]),
                (Err(e), Err(f)) => prop_assert_eq!(e.required, f.required),
                (c, p) => prop_assert!(false, "checked {:?}, plain {:?}", c, p),
            }
        }
    }

    /// The server's receipt without the escape scan, for texts it really writes (the
    /// proptest above draws mostly texts the name types refuse): for every result the server
    /// writes, with the shortest and longest ids and recipients and every character they
    /// allow, the same bytes as [`ReceiptResponse`], into a buffer of its exact size (one
    /// byte less gets the size), and it reads back through the client's parser as its
    /// fields.
    #[test]
    fn checked_receipts_of_real_names_match_receipts_and_read_back() {
        let long_id = "Az09_.:-".repeat(crate::names::MAX_TRANSFER_ID / 8);
        let long_to = "a09_.-zz".repeat(crate::names::MAX_USERNAME / 8);
        let results = crate::error::ErrorCode::ALL.map(|c| c.name());
        let tag = Tag::from_bytes(core::array::from_fn(|i| 0xf0 ^ i as u8));
        for (id, to) in [
            ("0", "a"),
            ("t-1", "carol"),
            (long_id.as_str(), long_to.as_str()),
        ] {
            let id = crate::names::TransferId::parse(id).unwrap();
            let to = crate::names::Username::parse(to).unwrap();
            for result in results.iter().copied().chain(["committed"]) {
                let fields = ReceiptFields {
                    seq: u32::MAX,
                    id: id.as_str(),
                    to: to.as_str(),
                    amount: Amount(u64::MAX),
                    result,
                    balance: Amount(5),
                    nonce: &[1; 16],
                };
                let mut want = [0u8; 512];
                let n = encode_response(
                    &ReceiptResponse {
                        fields: &fields,
                        mac: &tag,
                    },
                    &mut want,
                )
                .unwrap();
                let checked = CheckedReceipt {
                    fields: &fields,
                    mac: &tag,
                };
                let mut got = vec![0u8; n];
                assert_eq!(encode_response(&checked, &mut got), Ok(n), "{result}");
                assert_eq!(got, &want[..n], "{result}");
                assert_eq!(
                    encode_response(&checked, &mut got[..n - 1]),
                    Err(InsufficientSizeError { required: n })
                );
                let frame = got.strip_suffix(b"\n").unwrap();
                let crate::message::Response::Receipt(r) =
                    crate::message::Response::parse(frame).unwrap()
                else {
                    panic!("not a receipt: {}", String::from_utf8_lossy(frame));
                };
                assert_eq!(
                    (r.seq, r.id, r.to, r.result, r.balance),
                    (u32::MAX, id.as_str(), to.as_str(), result, "0.05")
                );
                assert_eq!(r.amount, Amount(u64::MAX).to_text().as_str());
            }
        }
    }

    proptest! {
        /// The client's transfer, for every id a `TransferId` takes and recipient a
        /// `Username` takes (drawn with characters they refuse too, which are skipped), any
        /// amount, nonce and MAC, into a buffer of any size: byte for byte what
        /// serde-json-core writes for the `TransferFrame` the client wrote before.
        #[test]
        fn checked_transfers_match_serde_json_core(
            id in prop_oneof![
                "[a-zA-Z0-9_.:\\-]{1,32}",
                "[a-zA-Z0-9_.:\\-\"\\\\\u{1}\u{e9}]{1,12}",
            ],
            to in prop_oneof![
                "[a-z0-9_.\\-]{1,32}",
                "[a-z0-9_.\\-\"\\\\\u{1f}\u{e9}A]{1,12}",
            ],
            amount in prop_oneof![any::<u64>(), 0u64..1000, Just(Amount::MAX.minor())],
            nonce in any::<[u8; 16]>(),
            mac in any::<[u8; 32]>(),
            size in prop_oneof![Just(4096usize), Just(MAX_REQUEST_TEST), 0usize..260],
        ) {
            let (Ok(id), Ok(to)) = (TransferId::parse(&id), Username::parse(&to)) else {
                return Ok(());
            };
            let agree = transfer_writers_agree(&id, &to, Amount(amount), &nonce, &Tag::from_bytes(mac), size);
            prop_assert_eq!(agree, Ok(()));
        }
    }

    /// The client's buffer reserve for a request.
    const MAX_REQUEST_TEST: usize = 384;

    /// The client's transfer with the shortest and longest names, every character they
    /// allow and the extreme amounts: the bytes serde-json-core writes, into a buffer of
    /// exactly its size (one byte less gets the size), and the server's reader reads it
    /// back as its parts, through its client-layout shortcut and its general reader alike.
    #[test]
    fn checked_transfers_of_real_names_match_and_read_back() {
        let long_id = "Az09_.:-".repeat(crate::names::MAX_TRANSFER_ID / 8);
        let long_to = "a09_.-zz".repeat(crate::names::MAX_USERNAME / 8);
        let nonce: Nonce = core::array::from_fn(|i| 0x0f ^ i as u8);
        let mac: [u8; 32] = core::array::from_fn(|i| 0xf0 ^ i as u8);
        let tag = Tag::from_bytes(mac);
        for (id, to) in [
            ("0", "a"),
            ("t-1", "carol"),
            (long_id.as_str(), long_to.as_str()),
        ] {
            let id = TransferId::parse(id).unwrap();
            let to = Username::parse(to).unwrap();
            for amount in [Amount(1), Amount(1_050), Amount::MAX, Amount(u64::MAX)] {
                assert_eq!(
                    transfer_writers_agree(&id, &to, amount, &nonce, &tag, 4096),
                    Ok(())
                );
                let checked = CheckedTransfer {
                    id: &id,
                    to: &to,
                    amount,
                    nonce: &nonce,
                    mac: &tag,
                };
                let mut big = [0u8; 512];
                let n = encode_response(&checked, &mut big).unwrap();
                let mut exact = vec![0u8; n];
                assert_eq!(encode_response(&checked, &mut exact), Ok(n));
                assert_eq!(exact, &big[..n]);
                assert_eq!(
                    encode_response(&checked, &mut exact[..n - 1]),
                    Err(InsufficientSizeError { required: n })
                );
                let frame = exact.strip_suffix(b"\n").unwrap();
                assert!(crate::message::Request::reader_agrees_with_serde(frame));
                if amount > Amount::MAX {
                    continue;
                }
                let Ok(crate::message::Request::Transfer(t)) =
                    crate::message::Request::parse(frame)
                else {
                    panic!("not a transfer: {}", String::from_utf8_lossy(frame));
                };
                assert_eq!((t.id, t.to, t.amount), (id.clone(), to.clone(), amount));
                assert_eq!((t.nonce, t.mac), (nonce, mac));
            }
        }
    }

    /// The receipt reads back as what it says: the client's parser finds every field, the
    /// amounts as their texts and the MAC as its hex.
    #[test]
    fn a_receipt_reads_back() {
        let fields = ReceiptFields {
            seq: 7,
            id: "t-9",
            to: "carol",
            amount: Amount(1),
            result: "insufficient_funds",
            balance: Amount(123_456_789),
            nonce: &[0; 16],
        };
        let tag = Tag::from_bytes(core::array::from_fn(|i| i as u8 * 8));
        let mut buf = [0u8; 512];
        let n = encode_response(
            &ReceiptResponse {
                fields: &fields,
                mac: &tag,
            },
            &mut buf,
        )
        .unwrap();
        let frame = buf[..n].strip_suffix(b"\n").unwrap();
        let crate::message::Response::Receipt(r) = crate::message::Response::parse(frame).unwrap()
        else {
            panic!("not a receipt: {}", String::from_utf8_lossy(frame));
        };
        assert_eq!(
            (r.op, r.seq, r.id, r.to, r.result),
            ("receipt", 7, "t-9", "carol", "insufficient_funds")
        );
        assert_eq!(r.amount, "0.01");
        assert_eq!(r.balance, "1234567.89");
        let hex: String = tag.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.mac, hex);
    }

    #[test]
    fn escapes_like_serde_json_core() {
        let mut buf = [0u8; 128];
        let n = encode_response(
            &ErrorFrame {
                op: "e",
                code: "a\"b\\c\u{1}\u{8}\t\n\u{c}\r\u{1f}",
                message: "\u{e9}",
            },
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            core::str::from_utf8(&buf[..n]).unwrap(),
            "{\"op\":\"e\",\"code\":\"a\\\"b\\\\c\\u0001\\b\\t\\n\\f\\r\\u001F\",\"message\":\"\u{e9}\"}\n"
        );
    }
}
