//! The canonical byte strings that transfer, receipt, balance and history MACs cover.
//!
//! Every input starts with a label naming the message type and ends the label with a NUL,
//! and fields are NUL-separated. No field can contain a NUL (names and ids are restricted,
//! amounts are decimal minor units, nonces are hex), so every input has exactly one
//! reading, and a tag made for one kind of message never verifies as another kind.
//!
//! ```text
//! transfer: "txsock/1 transfer" 0 user 0 id 0 to 0 amount_minor 0 nonce_hex
//! receipt:  "txsock/1 receipt" 0 seq 0 id 0 to 0 amount_minor 0 result 0 balance_minor 0 nonce_hex
//! balance:  "txsock/1 balance" 0 seq 0 balance_minor
//! history:  "txsock/1 history" 0 seq 0 more(0|1) { 0 id 0 from 0 to 0 amount_minor 0 at }*
//! statement: "txsock/1 statement" 0 seq 0 more(0|1)
//!            { 0 kind 0 id 0 from 0 to 0 amount_minor 0 at }*
//! ```
//!
//! In a statement, `kind` is `transfer` or `deposit`, and a deposit's `id` and `from` are
//! empty (a real id or name never is), so every entry has six fields and one reading.
//!
//! Transfers are signed with the client-to-server key, everything else with the
//! server-to-client key. `seq` numbers the server's authenticated responses in a session
//! from 1, so a client detects a dropped, replayed or reordered response.

use crate::amount::Amount;
use crate::crypto::{HmacSha256, Keyed, Tag};
use crate::encoding::hex_encode;
use crate::replay::{Nonce, NONCE_LEN};
use hmac::Mac;

/// Writes `n` in decimal; returns the digits.
fn decimal64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Builds a MAC input field by field.
pub struct MacInput {
    mac: HmacSha256,
}

impl MacInput {
    /// Starts an input with `label` under `key`.
    pub fn new(key: &impl Keyed, label: &str) -> MacInput {
        let mut mac = key.mac();
        mac.update(b"txsock/1 ");
        mac.update(label.as_bytes());
        MacInput { mac }
    }

    /// Appends a NUL and a text field.
    pub fn text(mut self, field: &str) -> MacInput {
        self.mac.update(&[0]);
        self.mac.update(field.as_bytes());
        self
    }

    /// Appends a NUL and a number in decimal.
    pub fn number(self, n: u64) -> MacInput {
        let mut buf = [0u8; 20];
        // decimal64 only writes ASCII digits.
        let digits = core::str::from_utf8(decimal64(n, &mut buf)).unwrap_or("");
        self.text(digits)
    }

    /// Appends a NUL and a nonce in lowercase hex.
    pub fn nonce(self, nonce: &Nonce) -> MacInput {
        self.text(&hex_encode::<{ 2 * NONCE_LEN }>(nonce))
    }

    /// The tag.
    pub fn finish(self) -> Tag {
        Tag::from_mac(self.mac)
    }
}

/// Bytes staged for one [`Staged`] update: a transfer's or a receipt's whole input with
/// names and ids of the longest allowed (32 bytes each) fits.
const STAGE: usize = 192;

/// [`MacInput`] for the MACs of every transfer (transfer, receipt): the same bytes, gathered
/// on the stack and handed to the HMAC in one update. Each HMAC `update` costs a round of
/// block-buffer bookkeeping, more than the few bytes of a field, and `MacInput`'s builder
/// moves the HMAC state (over 200 bytes) at every field.
struct Staged {
    mac: HmacSha256,
    buf: [u8; STAGE],
    len: usize,
}

// Inlined so that the state (about 400 bytes) is built and finished in place, not moved.
impl Staged {
    #[inline(always)]
    fn new(key: &impl Keyed, label: &str) -> Staged {
        let mut staged = Staged {
            mac: key.mac(),
            buf: [0; STAGE],
            len: 0,
        };
        staged.push(b"txsock/1 ");
        staged.push(label.as_bytes());
        staged
    }

    /// Appends `bytes`, updating the HMAC first if they do not fit (longer fields than the
    /// protocol allows still give the right tag).
    fn push(&mut self, bytes: &[u8]) {
        if bytes.len() > STAGE - self.len {
            self.mac.update(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > STAGE {
                self.mac.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn text(&mut self, field: &str) {
        self.push(&[0]);
        self.push(field.as_bytes());
    }

    fn number(&mut self, n: u64) {
        let mut buf = [0u8; 20];
        self.push(&[0]);
        self.push(decimal64(n, &mut buf));
    }

    fn nonce(&mut self, nonce: &Nonce) {
        self.push(&[0]);
        let mut digits = [0u8; 2 * NONCE_LEN];
        crate::encoding::hex_encode_into(nonce, &mut digits);
        self.push(&digits);
    }

    #[inline(always)]
    fn finish(mut self) -> Tag {
        self.mac.update(&self.buf[..self.len]);
        Tag::from_mac(self.mac)
    }
}

/// MAC of a transfer request (client-to-server key).
pub fn transfer(
    key: &impl Keyed,
    user: &str,
    id: &str,
    to: &str,
    amount: Amount,
    nonce: &Nonce,
) -> Tag {
    let mut input = Staged::new(key, "transfer");
    input.text(user);
    input.text(id);
    input.text(to);
    input.number(amount.minor());
    input.nonce(nonce);
    input.finish()
}

/// The fields a receipt MAC covers.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptFields<'a> {
    /// Response sequence number.
    pub seq: u32,
    /// Transfer id.
    pub id: &'a str,
    /// Recipient.
    pub to: &'a str,
    /// Amount.
    pub amount: Amount,
    /// `"committed"` or an error code name.
    pub result: &'a str,
    /// The sender's balance.
    pub balance: Amount,
    /// The nonce of the transfer request being answered.
    pub nonce: &'a Nonce,
}

/// MAC of a receipt (server-to-client key).
pub fn receipt(key: &impl Keyed, r: &ReceiptFields<'_>) -> Tag {
    let mut input = Staged::new(key, "receipt");
    input.number(u64::from(r.seq));
    input.text(r.id);
    input.text(r.to);
    input.number(r.amount.minor());
    input.text(r.result);
    input.number(r.balance.minor());
    input.nonce(r.nonce);
    input.finish()
}

/// MAC of a balance response (server-to-client key).
pub fn balance(key: &impl Keyed, seq: u32, balance: Amount) -> Tag {
    MacInput::new(key, "balance")
        .number(u64::from(seq))
        .number(balance.minor())
        .finish()
}

/// Starts the MAC of a history page; append entries with [`history_entry`].
pub fn history_start(key: &impl Keyed, seq: u32, more: bool) -> MacInput {
    MacInput::new(key, "history")
        .number(u64::from(seq))
        .number(u64::from(more))
}

/// Appends one history entry to a history MAC.
pub fn history_entry(
    input: MacInput,
    id: &str,
    from: &str,
    to: &str,
    amount: Amount,
    at: u64,
) -> MacInput {
    input
        .text(id)
        .text(from)
        .text(to)
        .number(amount.minor())
        .number(at)
}

/// Starts the MAC of a statement page (history with deposits); append entries with
/// [`statement_entry`].
pub fn statement_start(key: &impl Keyed, seq: u32, more: bool) -> MacInput {
    MacInput::new(key, "statement")
        .number(u64::from(seq))
        .number(u64::from(more))
}

/// Appends one statement entry: `kind` is `transfer` or `deposit`; a deposit's `id` and
/// `from` are empty.
pub fn statement_entry(
    input: MacInput,
    kind: &str,
    id: &str,
    from: &str,
    to: &str,
    amount: Amount,
    at: u64,
) -> MacInput {
    history_entry(input.text(kind), id, from, to, amount, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    #[test]
    fn labels_separate_message_types() {
        let k = Key::from_bytes([7; 32]);
        let b = balance(&k, 1, Amount(5));
        let h = history_start(&k, 1, false).finish();
        assert!(!b.ct_eq(h.as_bytes()));
        // An empty statement page is not an empty history page: a history answer never
        // passes for a statement that would have listed deposits.
        let s = statement_start(&k, 1, false).finish();
        assert!(!s.ct_eq(h.as_bytes()));
        // A transfer tag is never a receipt tag for the same-looking fields.
        let n = [1u8; 16];
        let t = transfer(&k, "a", "id", "b", Amount(1), &n);
        let r = receipt(
            &k,
            &ReceiptFields {
                seq: 0,
                id: "id",
                to: "b",
                amount: Amount(1),
                result: "committed",
                balance: Amount(0),
                nonce: &n,
            },
        );
        assert!(!t.ct_eq(r.as_bytes()));
    }

    #[test]
    fn staged_inputs_are_the_builders() {
        let k = Key::from_bytes([7; 32]);
        let n = [0xa5u8; 16];
        // Long fields overflow the stage (the 100-byte id alone, and the 150-byte name after
        // it), fill it exactly (192 bytes), or are longer than the whole stage (300): the
        // tag must not change.
        let long = "x".repeat(STAGE + 108);
        for (user, id, to) in [
            ("alice", "t-1", "bob"),
            (&long[..20], &long[..100], &long[..150]),
            (&long[..STAGE - 18], "i", "b"),
            (&long[..STAGE], &long[..], &long[..STAGE - 1]),
        ] {
            let built = MacInput::new(&k, "transfer")
                .text(user)
                .text(id)
                .text(to)
                .number(12_345)
                .nonce(&n)
                .finish();
            assert!(built.ct_eq(transfer(&k, user, id, to, Amount(12_345), &n).as_bytes()));
            let fields = ReceiptFields {
                seq: 7,
                id,
                to,
                amount: Amount(12_345),
                result: "committed",
                balance: Amount(u64::MAX),
                nonce: &n,
            };
            let built = MacInput::new(&k, "receipt")
                .number(7)
                .text(id)
                .text(to)
                .number(12_345)
                .text("committed")
                .number(u64::MAX)
                .nonce(&n)
                .finish();
            assert!(built.ct_eq(receipt(&k, &fields).as_bytes()));
        }
    }

    #[test]
    fn fields_are_unambiguous() {
        let k = Key::from_bytes([7; 32]);
        let n = [1u8; 16];
        assert!(!transfer(&k, "ab", "c", "d", Amount(1), &n)
            .ct_eq(transfer(&k, "a", "bc", "d", Amount(1), &n).as_bytes()));
    }
}
