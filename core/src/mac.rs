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
use crate::crypto::{Keyed, MacState, Tag};
use crate::replay::{Nonce, NONCE_LEN};

/// The number of decimal digits of `n`.
fn decimal_len(n: u64) -> usize {
    if cfg!(feature = "fast-request") {
        decimal_len_by_log(n)
    } else {
        decimal_len_by_division(n)
    }
}

/// [`decimal_len`] with the integer logarithm (the host, `fast-request`).
#[cfg_attr(not(feature = "fast-request"), allow(dead_code))]
fn decimal_len_by_log(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// [`decimal_len`] by repeated division: smaller than `ilog10` on a 32-bit target (the device
/// images, without `fast-request`). Compiled in every build, so that the host's tests check
/// the two forms against each other.
#[cfg_attr(feature = "fast-request", allow(dead_code))]
fn decimal_len_by_division(n: u64) -> usize {
    let (mut len, mut rest) = (1, n);
    while rest >= 10 {
        rest = crate::amount::div_rem_10(rest).0;
        len += 1;
    }
    len
}

/// Writes `n` in decimal into `out`, which holds exactly [`decimal_len`]`(n)` bytes.
fn write_decimal(mut n: u64, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        let (quotient, last) = crate::amount::div_rem_10(n);
        *digit = b'0' + last;
        n = quotient;
    }
}

/// The longest field written through [`Fields::field`]: a nonce in hex (a `u64` in decimal
/// is 20 digits).
const FIELD_MAX: usize = 2 * NONCE_LEN;

/// The field encoding every MAC input shares, written once for both ways of feeding the HMAC
/// ([`MacInput`] and [`Staged`]): a NUL before each field, numbers in decimal, nonces in
/// lowercase hex.
trait Fields {
    /// Appends a NUL and `len` (at most [`FIELD_MAX`]) bytes that `write` fills; `write` gets
    /// exactly `len` bytes. Only [`number`](Self::number) (at most 20 digits) and
    /// [`nonce`](Self::nonce) (exactly `FIELD_MAX`) call it; a longer field would be
    /// truncated or dropped, so both implementations assert the bound in debug builds
    /// (tested).
    fn field(&mut self, len: usize, write: impl FnOnce(&mut [u8]));

    /// Appends a NUL and a text field.
    fn text(&mut self, field: &str);

    /// Appends a NUL and a number in decimal.
    fn number(&mut self, n: u64) {
        self.field(decimal_len(n), |out| write_decimal(n, out));
    }

    /// Appends a NUL and a nonce in lowercase hex.
    fn nonce(&mut self, nonce: &Nonce) {
        self.field(2 * NONCE_LEN, |out| {
            crate::encoding::hex_encode_into(nonce, out)
        });
    }
}

/// Builds a MAC input field by field.
pub struct MacInput {
    mac: MacState,
}

impl Fields for MacInput {
    fn field(&mut self, len: usize, write: impl FnOnce(&mut [u8])) {
        debug_assert!(len <= FIELD_MAX, "a MAC field of {len} bytes");
        let mut buf = [0u8; 1 + FIELD_MAX];
        let field = &mut buf[..1 + len.min(FIELD_MAX)];
        write(&mut field[1..]);
        self.mac.update(field);
    }

    fn text(&mut self, field: &str) {
        self.mac.update(&[0]);
        self.mac.update(field.as_bytes());
    }
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
        Fields::text(&mut self, field);
        self
    }

    /// Appends a NUL and a number in decimal.
    pub fn number(mut self, n: u64) -> MacInput {
        Fields::number(&mut self, n);
        self
    }

    /// Appends a NUL and a nonce in lowercase hex.
    pub fn nonce(mut self, nonce: &Nonce) -> MacInput {
        Fields::nonce(&mut self, nonce);
        self
    }

    /// The tag.
    pub fn finish(self) -> Tag {
        self.mac.finish()
    }
}

/// Bytes staged for one [`Staged`] update: a transfer's or a receipt's whole input with
/// names and ids of the longest allowed (32 bytes each) fits.
const STAGE: usize = 192;

/// [`MacInput`] for the MACs of every transfer (transfer, receipt): the same bytes, gathered
/// on the stack and handed to the HMAC in one update. Each HMAC `update` costs a round of
/// block-buffer bookkeeping, more than the few bytes of a field, and `MacInput`'s builder
/// moves the HMAC state (about 150 bytes) at every field. Fields are written straight into
/// the stage (digits and hex included), short ones without a call to `memcpy`.
struct Staged {
    mac: MacState,
    buf: [u8; STAGE],
    len: usize,
}

// Inlined, and started and finished through `&mut`, so that the state (about 350 bytes) is
// built and finished in place: by value it was copied three times per MAC.
impl Staged {
    /// An empty input under `key`; [`start`](Self::start) writes the label.
    #[inline(always)]
    fn new(key: &impl Keyed) -> Staged {
        Staged {
            mac: key.mac(),
            buf: [0; STAGE],
            len: 0,
        }
    }

    /// Writes the label.
    #[inline(always)]
    fn start(&mut self, label: &str) {
        let prefix = b"txsock/1 ";
        self.buf[..prefix.len()].copy_from_slice(prefix);
        self.len = prefix.len();
        self.append(label.as_bytes());
    }

    /// The next `n` bytes of the stage, the stage first handed to the HMAC if they do not
    /// fit; `None` if `n` is more than the whole stage.
    #[cfg_attr(feature = "fast-request", inline(always))]
    fn reserve(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > STAGE - self.len {
            self.mac.update(&self.buf[..self.len]);
            self.len = 0;
        }
        let start = self.len;
        let out = self.buf.get_mut(start..start + n)?;
        self.len = start + n;
        Some(out)
    }

    /// Appends `bytes` (longer fields than the protocol allows still give the right tag).
    #[cfg_attr(feature = "fast-request", inline(always))]
    fn append(&mut self, bytes: &[u8]) {
        match self.reserve(bytes.len()) {
            Some(out) => crate::encoding::copy_short(out, bytes),
            None => self.mac.update(bytes),
        }
    }

    #[inline(always)]
    fn finish(&mut self) -> Tag {
        self.mac.update(&self.buf[..self.len]);
        self.mac.finish_in_place()
    }
}

impl Fields for Staged {
    #[cfg_attr(feature = "fast-request", inline(always))]
    fn field(&mut self, len: usize, write: impl FnOnce(&mut [u8])) {
        // `len` is at most FIELD_MAX, far less than the stage.
        debug_assert!(len <= FIELD_MAX, "a MAC field of {len} bytes");
        if let Some(out) = self.reserve(1 + len) {
            out[0] = 0;
            write(&mut out[1..]);
        }
    }

    #[cfg_attr(feature = "fast-request", inline(always))]
    fn text(&mut self, field: &str) {
        let bytes = field.as_bytes();
        match self.reserve(1 + bytes.len()) {
            Some(out) => {
                out[0] = 0;
                crate::encoding::copy_short(&mut out[1..], bytes);
            }
            // `reserve` handed the stage to the HMAC before refusing: the order holds.
            None => {
                self.mac.update(&[0]);
                self.mac.update(bytes);
            }
        }
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
    let mut input = Staged::new(key);
    input.start("transfer");
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
    let mut input = Staged::new(key);
    input.start("receipt");
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

/// Starts the MAC of a page (`history` or `statement`): the label, `seq` and `more`.
fn page_start(key: &impl Keyed, label: &str, seq: u32, more: bool) -> MacInput {
    MacInput::new(key, label)
        .number(u64::from(seq))
        .number(u64::from(more))
}

/// Starts the MAC of a history page; append entries with [`history_entry`].
pub fn history_start(key: &impl Keyed, seq: u32, more: bool) -> MacInput {
    page_start(key, "history", seq, more)
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
    page_start(key, "statement", seq, more)
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

    /// Both forms of [`decimal_len`] give the number of digits `n` prints with, around every
    /// power of ten and at the ends of `u64`.
    #[test]
    fn decimal_len_forms_count_the_digits() {
        let mut cases = vec![0, 1, u64::MAX, u64::MAX - 1];
        let mut power = 1u64;
        while let Some(next) = power.checked_mul(10) {
            cases.extend([power - 1, power, power + 1, next - 1]);
            power = next;
        }
        cases.push(power);
        for n in cases {
            let digits = format!("{n}").len();
            assert_eq!(decimal_len_by_log(n), digits, "{n}");
            assert_eq!(decimal_len_by_division(n), digits, "{n}");
            assert_eq!(decimal_len(n), digits, "{n}");
        }
    }
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

    proptest::proptest! {
        /// Any field lengths (short ones, and long ones that overflow the stage at any point)
        /// and numbers: the staged tags are the builder's.
        #[test]
        fn staged_tags_are_the_builders_for_any_fields(
            user in "[a-z]{0,40}|x{150,200}",
            id in "[a-z0-9-]{0,40}|y{150,200}",
            to in "[a-z]{0,40}",
            amount in proptest::prelude::any::<u64>(),
            balance in proptest::prelude::any::<u64>(),
            seq in proptest::prelude::any::<u32>(),
            n in proptest::prelude::any::<[u8; 16]>(),
        ) {
            let k = Key::from_bytes([9; 32]);
            let built = MacInput::new(&k, "transfer")
                .text(&user).text(&id).text(&to).number(amount).nonce(&n).finish();
            proptest::prop_assert!(
                built.ct_eq(transfer(&k, &user, &id, &to, Amount(amount), &n).as_bytes())
            );
            // And both are the HMAC of the text the module documentation gives.
            let hex: String = n.iter().map(|b| format!("{b:02x}")).collect();
            let text = format!("txsock/1 transfer\0{user}\0{id}\0{to}\0{amount}\0{hex}");
            proptest::prop_assert!(built.ct_eq(&crate::crypto::hmac_sha256(&[9; 32], text.as_bytes())));
            let fields = ReceiptFields {
                seq, id: &id, to: &to, amount: Amount(amount), result: &user,
                balance: Amount(balance), nonce: &n,
            };
            let built = MacInput::new(&k, "receipt")
                .number(seq.into()).text(&id).text(&to).number(amount).text(&user)
                .number(balance).nonce(&n).finish();
            proptest::prop_assert!(built.ct_eq(receipt(&k, &fields).as_bytes()));
            let text = format!(
                "txsock/1 receipt\0{seq}\0{id}\0{to}\0{amount}\0{user}\0{balance}\0{hex}"
            );
            proptest::prop_assert!(built.ct_eq(&crate::crypto::hmac_sha256(&[9; 32], text.as_bytes())));
        }
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            let mut buf = [0u8; 20];
            let len = decimal_len(n);
            write_decimal(n, &mut buf[..len]);
            assert_eq!(core::str::from_utf8(&buf[..len]).unwrap(), n.to_string());
        }
    }

    /// The longest fields the encoding takes: a `u64` in decimal and a nonce in hex (the
    /// bound itself), each the same bytes through both builders and the documented text.
    #[test]
    fn longest_fields_are_whole() {
        let k = Key::from_bytes([7; 32]);
        let n: Nonce = core::array::from_fn(|i| 0xf0 | i as u8);
        assert_eq!(2 * NONCE_LEN, FIELD_MAX);
        assert_eq!(decimal_len(u64::MAX), 20);
        let hex: String = n.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!("txsock/1 transfer\0a\0i\0b\0{}\0{hex}", u64::MAX);
        let want = crate::crypto::hmac_sha256(&[7; 32], text.as_bytes());
        assert!(transfer(&k, "a", "i", "b", Amount(u64::MAX), &n).ct_eq(&want));
        let built = MacInput::new(&k, "transfer")
            .text("a")
            .text("i")
            .text("b")
            .number(u64::MAX)
            .nonce(&n)
            .finish();
        assert!(built.ct_eq(&want));
    }

    /// A field longer than `FIELD_MAX` would be truncated (`MacInput`) or dropped (`Staged`):
    /// debug builds refuse to write one.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a MAC field of 33 bytes")]
    fn macinput_refuses_a_field_past_the_bound() {
        let k = Key::from_bytes([7; 32]);
        let mut input = MacInput::new(&k, "x");
        Fields::field(&mut input, FIELD_MAX + 1, |out| out.fill(b'a'));
    }

    /// As above, for the staged builder.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a MAC field of 33 bytes")]
    fn staged_refuses_a_field_past_the_bound() {
        let k = Key::from_bytes([7; 32]);
        let mut input = Staged::new(&k);
        input.start("x");
        Fields::field(&mut input, FIELD_MAX + 1, |out| out.fill(b'a'));
    }

    #[test]
    fn fields_are_unambiguous() {
        let k = Key::from_bytes([7; 32]);
        let n = [1u8; 16];
        assert!(!transfer(&k, "ab", "c", "d", Amount(1), &n)
            .ct_eq(transfer(&k, "a", "bc", "d", Amount(1), &n).as_bytes()));
    }
}
