//! HMAC-SHA256 primitives: keys and tags that zeroize themselves ([`zeroize`]), and
//! constant-time checks ([`subtle`]).

use hmac::digest::KeyInit;
use hmac::{Hmac, HmacCore, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HMAC-SHA256 ([RFC 2104](https://www.rfc-editor.org/rfc/rfc2104)).
///
/// The precomputing `Hmac` (not `SimpleHmac`): PBKDF2 clones the keyed state for each
/// iteration, halving its cost, and [`MacKey`] keeps keyed states across messages.
pub type HmacSha256 = Hmac<Sha256>;

/// Something that yields a keyed HMAC-SHA256 instance.
pub trait Keyed {
    /// A fresh HMAC instance under this key.
    fn mac(&self) -> HmacSha256;
}

/// Length of a SHA-256 digest, an HMAC-SHA256 tag and every txsock key, in bytes.
pub const TAG_LEN: usize = 32;

/// A 32-byte secret key, zeroized when dropped.
///
/// The bytes are private: build a key with [`Key::from_bytes`] (or from a [`Tag`] with
/// `From`), read them with [`Key::as_bytes`], and compare keys with [`Key::ct_eq`]. There is
/// no `==`, which would not run in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; TAG_LEN]);

impl Key {
    /// A key holding `bytes`. The caller should zeroize its own copy if it keeps one.
    pub const fn from_bytes(bytes: [u8; TAG_LEN]) -> Key {
        Key(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; TAG_LEN] {
        &self.0
    }

    /// Compares with `other` in time independent of where they differ.
    pub fn ct_eq(&self, other: &Key) -> bool {
        ct_eq(&self.0, &other.0)
    }

    /// An HMAC instance keyed with this key.
    pub fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// HMAC of the concatenation of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> Tag {
        let mut m = self.mac();
        for p in parts {
            m.update(p);
        }
        Tag::from_mac(m)
    }
}

impl From<Tag> for Key {
    /// A key whose bytes are `tag`'s (SCRAM derives `ClientKey`, `ServerKey` and the session
    /// keys as HMAC outputs).
    fn from(tag: Tag) -> Key {
        Key(tag.0)
    }
}

impl Keyed for Key {
    fn mac(&self) -> HmacSha256 {
        Key::mac(self)
    }
}

/// A key whose HMAC inner and outer SHA-256 states are computed once, so each MAC under it
/// costs two compression calls less. Sessions keep their MAC keys in this form (80 bytes
/// each). Overwritten when dropped.
///
/// `hmac` 0.12 does not implement `Zeroize` for its keyed state, whose fields are private, so
/// [`Drop`] overwrites the whole state with the state of the empty key (no secret) and hands
/// it to [`core::hint::black_box`] so that the store is not optimised away. Moving to an
/// `hmac` release whose state is `ZeroizeOnDrop` would make this a derive.
#[derive(Clone)]
pub struct MacKey {
    core: HmacCore<Sha256>,
}

impl MacKey {
    /// Precomputes `key`.
    pub fn new(key: &Key) -> MacKey {
        MacKey {
            core: key.mac().decompose().0,
        }
    }
}

impl Keyed for MacKey {
    fn mac(&self) -> HmacSha256 {
        HmacSha256::from_core(self.core.clone())
    }
}

impl Drop for MacKey {
    fn drop(&mut self) {
        // HMAC accepts keys of any length, so this cannot fail.
        self.core =
            <HmacCore<Sha256> as KeyInit>::new_from_slice(&[]).expect("HMAC takes any key length");
        core::hint::black_box(&mut self.core);
    }
}

impl core::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// An HMAC-SHA256 tag, zeroized when dropped.
///
/// Compare tags with [`Tag::ct_eq`]; there is no `==`, which would not run in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Tag([u8; TAG_LEN]);

impl Tag {
    /// The tag of a finished HMAC computation.
    pub fn from_mac(mac: HmacSha256) -> Tag {
        Tag(mac.finalize().into_bytes().into())
    }

    /// The tag's bytes.
    pub fn as_bytes(&self) -> &[u8; TAG_LEN] {
        &self.0
    }

    /// Compares with `other` in time independent of where they differ.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        ct_eq(&self.0, other)
    }
}

impl core::fmt::Debug for Tag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Tag(..)")
    }
}

/// Constant-time equality of two byte strings (the length is not secret: strings of
/// different lengths are unequal at once).
///
/// The bytes' differences are OR-ed into one byte, which [`subtle::ConstantTimeEq`] then
/// compares with zero: a loop without a branch on the data, and one optimisation barrier
/// instead of subtle's per-byte one (which made comparing a tag cost as much as a third of a
/// SHA-256 block).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    difference.ct_eq(&0).into()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; TAG_LEN] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 of `data` under `key` (any length).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// HMAC-SHA256 test cases 1-7 of
    /// [RFC 4231 §4](https://www.rfc-editor.org/rfc/rfc4231#section-4); case 5 checks the
    /// first 128 bits only, as the RFC does.
    #[test]
    fn rfc4231_cases() {
        for case in crate::selftest::RFC4231 {
            let tag = hmac_sha256(&unhex(case.key), &unhex(case.data));
            let want = unhex(case.tag);
            assert_eq!(&tag[..want.len()], &want[..], "case {}", case.number);
        }
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
        // Differences in several bytes never cancel out, whatever their bits.
        assert!(!ct_eq(&[1, 1], &[0, 0]));
        assert!(!ct_eq(&[0xff, 0x0f, 0xf0], &[0x00, 0xff, 0xff]));
        for i in 0..TAG_LEN {
            let mut other = [0x5a; TAG_LEN];
            other[i] ^= 0x80;
            assert!(!ct_eq(&[0x5a; TAG_LEN], &other), "byte {i}");
        }
    }

    #[test]
    fn keys_and_tags_compare_by_bytes() {
        let k = Key::from_bytes([7; TAG_LEN]);
        assert_eq!(k.as_bytes(), &[7; TAG_LEN]);
        assert!(k.ct_eq(&k.clone()));
        assert!(!k.ct_eq(&Key::from_bytes([8; TAG_LEN])));
        let t = k.sign(&[b"x"]);
        assert!(t.ct_eq(&hmac_sha256(&[7; TAG_LEN], b"x")));
        assert!(!t.ct_eq(&[0; TAG_LEN]));
        assert!(Key::from(t.clone()).as_bytes() == t.as_bytes());
    }

    #[test]
    fn zeroize_clears_keys_and_tags() {
        let mut k = Key::from_bytes([7; TAG_LEN]);
        k.zeroize();
        assert_eq!(k.as_bytes(), &[0; TAG_LEN]);
        let mut t = Key::from_bytes([7; TAG_LEN]).sign(&[b"x"]);
        assert_ne!(t.as_bytes(), &[0; TAG_LEN]);
        t.zeroize();
        assert_eq!(t.as_bytes(), &[0; TAG_LEN]);
    }

    #[test]
    fn mac_key_matches_key() {
        let k = Key::from_bytes([7; TAG_LEN]);
        let m = MacKey::new(&k);
        let mut a = k.mac();
        let mut b = m.mac();
        a.update(b"abc");
        b.update(b"abc");
        assert!(Tag::from_mac(a).ct_eq(Tag::from_mac(b).as_bytes()));
        drop(m);
    }
}
