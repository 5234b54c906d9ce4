//! HMAC-SHA256 primitives: keys that wipe themselves, tags, and constant-time checks.

use hmac::{Hmac, HmacCore, Mac};
use sha2::{Digest, Sha256};

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

/// Overwrites `bytes` with zeros in a way the optimiser may not remove.
pub fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a byte.
        unsafe { core::ptr::write_volatile(b, 0) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// A 32-byte secret key, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; TAG_LEN]);

impl Key {
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
        Tag(m.finalize().into_bytes().into())
    }
}

impl Keyed for Key {
    fn mac(&self) -> HmacSha256 {
        Key::mac(self)
    }
}

/// A key whose HMAC inner and outer SHA-256 states are computed once, so each MAC under it
/// costs two compression calls less. Sessions keep their MAC keys in this form (80 bytes
/// each). Wiped when dropped.
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
        let bytes = (&mut self.core as *mut HmacCore<Sha256>).cast::<u8>();
        for i in 0..core::mem::size_of::<HmacCore<Sha256>>() {
            // SAFETY: `bytes` points to `self.core`, which is valid for its whole size and
            // exclusively borrowed; the hash states are plain integers, for which all-zero
            // is a valid value, and the value is never used again after drop.
            unsafe { core::ptr::write_volatile(bytes.add(i), 0) };
        }
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }
}

impl core::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// An HMAC-SHA256 tag, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Tag(pub [u8; TAG_LEN]);

impl Tag {
    /// Compares with `other` in time independent of where they differ.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        ct_eq(&self.0, other)
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl core::fmt::Debug for Tag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Tag(..)")
    }
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the compiler from turning the fold into an early-exit comparison.
    core::hint::black_box(diff) == 0
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
    }
}
