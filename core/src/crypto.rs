//! HMAC-SHA256 primitives: keys and tags that zeroize themselves ([`zeroize`]), and
//! constant-time checks ([`subtle`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HMAC-SHA256 ([RFC 2104](https://www.rfc-editor.org/rfc/rfc2104)).
///
/// The precomputing `Hmac` (not `SimpleHmac`): PBKDF2 clones the keyed state for each
/// iteration, halving its cost. Only PBKDF2 (the client's and the admin's side) and
/// [`hmac_sha256`] use it; every other MAC (SCRAM's, the session keys', module `mac`'s) runs
/// on [`MacKey`] and [`MacState`].
pub type HmacSha256 = Hmac<Sha256>;

/// Something that yields a keyed HMAC-SHA256 computation (the MACs of `mac`).
pub trait Keyed {
    /// A fresh HMAC computation under this key.
    fn mac(&self) -> MacState;
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

    /// HMAC of the concatenation of `parts`.
    ///
    /// Through [`MacState`], as every MAC of the core is (a fresh computation under a key:
    /// [`Keyed::mac`]): SCRAM and the session keys share the transfer MACs' code instead of
    /// linking the `hmac` crate's as well, which a device server would carry for the login
    /// alone (about 1 KB of flash with its `digest` buffers).
    pub fn sign(&self, parts: &[&[u8]]) -> Tag {
        let mut m = self.mac();
        for p in parts {
            m.update(p);
        }
        m.finish()
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
    fn mac(&self) -> MacState {
        MacKey::new(self).mac()
    }
}

/// SHA-256's initial hash value ([FIPS 180-4 §5.3.3]); `sha2` does not export it.
///
/// [FIPS 180-4 §5.3.3]: https://nvlpubs.nist.gov/nistpubs/FIPS/NIST.FIPS.180-4.pdf
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The SHA-256 block size.
const BLOCK: usize = 64;

/// One SHA-256 compression of `block` into `state` (`sha2`'s, which uses the CPU's SHA
/// instructions where there are some).
#[inline(always)]
fn compress(state: &mut [u32; 8], block: &[u8; BLOCK]) {
    sha2::compress256(
        state,
        core::slice::from_ref(sha2::digest::generic_array::GenericArray::from_slice(block)),
    );
}

/// A key whose HMAC inner and outer SHA-256 states (after the key blocks `K ^ ipad` and
/// `K ^ opad`, [RFC 2104](https://www.rfc-editor.org/rfc/rfc2104)) are computed once, so each
/// MAC under it costs two compression calls less. Sessions keep their MAC keys in this form
/// (64 bytes each). Zeroized when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl MacKey {
    /// Precomputes `key`.
    pub fn new(key: &Key) -> MacKey {
        // A 32-byte key is shorter than a block: HMAC pads it with zeros.
        let mut block = [0x36u8; BLOCK];
        for (b, k) in block.iter_mut().zip(key.as_bytes()) {
            *b ^= k;
        }
        let mut inner = SHA256_IV;
        compress(&mut inner, &block);
        for b in block.iter_mut() {
            *b ^= 0x36 ^ 0x5c;
        }
        let mut outer = SHA256_IV;
        compress(&mut outer, &block);
        block.zeroize();
        MacKey { inner, outer }
    }
}

impl Keyed for MacKey {
    #[inline(always)]
    fn mac(&self) -> MacState {
        MacState {
            key: self.clone(),
            block: [0; BLOCK],
            fill: 0,
            blocks: 1,
        }
    }
}

/// An HMAC-SHA256 computation under a [`MacKey`]: the `sha2` compression function driven
/// directly, with a single block of buffer. The MACs of every transfer and receipt run
/// through it; the `hmac` crate's wrapper spent as much time on buffer bookkeeping and state
/// copies as on hashing these short inputs. Proven equal to [`HmacSha256`] for any key, data
/// and split of the data (property test below).
///
/// Its key states are zeroized when dropped (they are a [`MacKey`]); its message buffer is
/// not, as the `hmac` crate's was not: it holds only the message, which is on the wire.
pub struct MacState {
    /// The key's states; `key.inner` absorbs the message.
    key: MacKey,
    /// The message bytes not yet compressed.
    block: [u8; BLOCK],
    /// How many bytes of `block` are filled (always less than a block).
    fill: usize,
    /// Blocks compressed into `key.inner`, the key block included.
    blocks: u64,
}

impl MacState {
    /// Appends `data` to the message.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        if cfg!(feature = "fast-request") {
            self.update_fast(data)
        } else {
            self.update_bytewise(data)
        }
    }

    /// [`update`](Self::update) a block at a time, copying only a partial block.
    #[cfg_attr(not(feature = "fast-request"), allow(dead_code))]
    #[inline]
    fn update_fast(&mut self, mut data: &[u8]) {
        if self.fill > 0 {
            let take = data.len().min(BLOCK - self.fill);
            let (head, rest) = data.split_at(take);
            crate::encoding::copy_short(&mut self.block[self.fill..self.fill + take], head);
            self.fill += take;
            data = rest;
            if self.fill < BLOCK {
                return;
            }
            compress(&mut self.key.inner, &self.block);
            self.blocks += 1;
            self.fill = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for block in &mut blocks {
            if let Ok(block) = <&[u8; BLOCK]>::try_from(block) {
                compress(&mut self.key.inner, block);
            }
            self.blocks += 1;
        }
        let rest = blocks.remainder();
        crate::encoding::copy_short(&mut self.block[..rest.len()], rest);
        self.fill = rest.len();
    }

    /// [`update`](Self::update) one byte at a time: the smallest code, for the device
    /// images (without `fast-request`), whose flash is tighter than their time.
    #[cfg_attr(feature = "fast-request", allow(dead_code))]
    fn update_bytewise(&mut self, data: &[u8]) {
        for &byte in data {
            if let Some(slot) = self.block.get_mut(self.fill) {
                *slot = byte;
            }
            self.fill += 1;
            if self.fill == BLOCK {
                compress(&mut self.key.inner, &self.block);
                self.blocks += 1;
                self.fill = 0;
            }
        }
    }

    /// The tag.
    #[inline(always)]
    pub fn finish(mut self) -> Tag {
        self.finish_in_place()
    }

    /// A plain SHA-256 computation (no key): the inner state starts at SHA-256's initial
    /// value with no block counted, and [`finish_inner`](Self::finish_inner) gives the hash.
    fn plain_sha256() -> MacState {
        MacState {
            key: MacKey {
                inner: SHA256_IV,
                outer: [0; 8],
            },
            block: [0; BLOCK],
            fill: 0,
            blocks: 0,
        }
    }

    /// The message's length in bits, as SHA-256's padding ends with it (the key block
    /// counted).
    fn bits(&self) -> u64 {
        (self.blocks * BLOCK as u64 + self.fill as u64) * 8
    }

    /// The inner hash: the message so far with SHA-256's padding (`0x80`, zeros up to 8
    /// bytes before a block's end, the length in bits). Writes the padding after the
    /// message in `block` and leaves the message, `fill`, `blocks` and the inner state as
    /// they were, so finishing again gives the same hash.
    #[cfg_attr(not(feature = "fast-request"), allow(dead_code))]
    #[inline]
    fn inner_fast(&mut self) -> [u32; 8] {
        let (fill, bits) = (self.fill, self.bits());
        let mut inner = self.key.inner;
        self.block[fill] = 0x80;
        self.block[fill + 1..].fill(0);
        if fill + 1 > BLOCK - 8 {
            // No room for the length: it goes in a block of its own.
            compress(&mut inner, &self.block);
            let mut last = [0u8; BLOCK];
            last[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
            compress(&mut inner, &last);
        } else {
            self.block[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
            compress(&mut inner, &self.block);
        }
        inner
    }

    /// [`inner_fast`](Self::inner_fast) through [`update_bytewise`](Self::update_bytewise)
    /// (the device images' smaller code), on a copy of the state, which is left as it was.
    #[cfg_attr(feature = "fast-request", allow(dead_code))]
    fn inner_bytewise(&self) -> [u32; 8] {
        let bits = self.bits();
        let mut padded = MacState {
            key: self.key.clone(),
            block: self.block,
            fill: self.fill,
            blocks: self.blocks,
        };
        padded.update_bytewise(&[0x80]);
        // Zeros up to 8 bytes before a block's end: fewer than a block of them. Bounded, so
        // that a fault in `update_bytewise` gives a wrong tag, never an endless loop.
        for _ in 0..BLOCK {
            if padded.fill == BLOCK - 8 {
                break;
            }
            padded.update_bytewise(&[0]);
        }
        padded.update_bytewise(&bits.to_be_bytes());
        padded.key.inner
    }

    /// The tag from the inner hash: the outer state hashes it.
    #[inline]
    fn outer(&self, inner: [u32; 8]) -> Tag {
        // The outer message: the key block, then the 32-byte inner hash.
        let mut block = [0u8; BLOCK];
        for (out, word) in block.chunks_exact_mut(4).zip(inner) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        block[TAG_LEN] = 0x80;
        block[BLOCK - 8..].copy_from_slice(&(((BLOCK + TAG_LEN) * 8) as u64).to_be_bytes());
        let mut outer = self.key.outer;
        compress(&mut outer, &block);
        let mut tag = [0u8; TAG_LEN];
        for (out, word) in tag.chunks_exact_mut(4).zip(outer) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        Tag(tag)
    }

    /// The tag, through `&mut` (which spares the callers a copy of the state). Finishing
    /// changes nothing the tag depends on: finishing twice gives the same tag (tested), so a
    /// state finished in place cannot give a wrong one.
    pub(crate) fn finish_in_place(&mut self) -> Tag {
        let inner = self.finish_inner();
        self.outer(inner)
    }

    /// The inner hash with SHA-256's padding (for an HMAC, the inner hash; for
    /// [`plain_sha256`](Self::plain_sha256), the hash itself), the state left as it was.
    #[inline(always)]
    fn finish_inner(&mut self) -> [u32; 8] {
        if cfg!(feature = "fast-request") {
            self.inner_fast()
        } else {
            self.inner_bytewise()
        }
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
    /// A tag from its bytes, for tests and the test kit (the product only ever gets a tag
    /// from a MAC computation, never from bytes it was sent).
    #[cfg(any(test, feature = "_testkit"))]
    pub const fn from_bytes(bytes: [u8; TAG_LEN]) -> Tag {
        Tag(bytes)
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
/// The bytes' differences are OR-ed into one word (one byte in the device images), which
/// [`subtle::ConstantTimeEq`] then compares with zero: a loop without a branch on the data,
/// and one optimisation barrier instead of subtle's per-byte one (which made comparing a tag
/// cost as much as a third of a SHA-256 block).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    #[cfg(feature = "fast-request")]
    let equal = difference_words(a, b).ct_eq(&0);
    #[cfg(not(feature = "fast-request"))]
    let equal = difference_bytes(a, b).ct_eq(&0);
    equal.into()
}

/// The OR of the bytewise differences of `a` and `b` (of the same length), byte by byte: the
/// device images' [`ct_eq`] (no `fast-request`), where it is the smallest code. Compiled in
/// every build so that the host's tests check it against [`difference_words`].
#[cfg_attr(feature = "fast-request", allow(dead_code))]
fn difference_bytes(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))
}

/// The OR of the differences of `a` and `b` (of the same length), eight bytes a word, then
/// the rest byte by byte: zero exactly when they are equal. Every transfer frame compares its
/// nonce with each outstanding one and its MAC once (16 and 32 bytes: whole words), where the
/// byte loop cost about 70 instructions a nonce.
#[cfg(any(feature = "fast-request", test))]
fn difference_words(a: &[u8], b: &[u8]) -> u64 {
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = difference_bytes(a_words.remainder(), b_words.remainder());
    a_words.zip(b_words).fold(u64::from(tail), |acc, (x, y)| {
        let (mut wx, mut wy) = ([0u8; 8], [0u8; 8]);
        wx.copy_from_slice(x);
        wy.copy_from_slice(y);
        acc | (u64::from_ne_bytes(wx) ^ u64::from_ne_bytes(wy))
    })
}

/// SHA-256 of `data`.
///
/// On [`MacState`]'s buffer and padding (the same `sha2` compression function), not on
/// `sha2::Sha256`, whose `digest` wrappers a device server would link for the login's one
/// hash (`StoredKey = SHA-256(ClientKey)`) alone.
pub fn sha256(data: &[u8]) -> [u8; TAG_LEN] {
    let mut state = MacState::plain_sha256();
    state.update(data);
    let mut hash = [0u8; TAG_LEN];
    for (out, word) in hash.chunks_exact_mut(4).zip(state.finish_inner()) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    hash
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

    proptest::proptest! {
        /// The word-wise difference (the host's) is zero exactly when the byte-wise one (the
        /// devices') is, for strings of every length and pairs that differ in one byte, in
        /// several, or not at all.
        #[test]
        fn word_difference_is_zero_exactly_when_the_bytes_are_equal(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1u8..), 0..3),
        ) {
            let mut b = a.clone();
            for (at, bits) in flips {
                if !b.is_empty() {
                    let i = at % b.len();
                    b[i] ^= bits;
                }
            }
            let equal = a == b;
            proptest::prop_assert_eq!(difference_words(&a, &b) == 0, equal);
            proptest::prop_assert_eq!(difference_bytes(&a, &b) == 0, equal);
            proptest::prop_assert_eq!(ct_eq(&a, &b), equal);
        }
    }

    #[test]
    fn word_differences_never_cancel_out() {
        // The same difference in two words, and in a word and the tail.
        let mut b = [0u8; 17];
        b[0] = 1;
        b[8] = 1;
        assert_ne!(difference_words(&[0; 17], &b), 0);
        let mut b = [0u8; 17];
        b[0] = 1;
        b[16] = 1;
        assert_ne!(difference_words(&[0; 17], &b), 0);
        assert!(!ct_eq(&[0; 17], &b));
    }

    #[test]
    fn word_difference_sees_every_byte() {
        // Each byte of every length up to three words and a tail, in the words and the tail.
        for len in 0..=27 {
            let a: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(difference_words(&a, &a), 0, "len {len}");
            for i in 0..len {
                for bit in 0..8 {
                    let mut b = a.clone();
                    b[i] ^= 1 << bit;
                    assert_ne!(difference_words(&a, &b), 0, "len {len} byte {i} bit {bit}");
                    assert_ne!(difference_bytes(&a, &b), 0, "len {len} byte {i} bit {bit}");
                }
            }
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
        let tag = a.finish();
        assert!(tag.ct_eq(b.finish().as_bytes()));
        assert!(tag.ct_eq(&hmac_sha256(&[7; TAG_LEN], b"abc")));
        drop(m);
    }

    /// The `hmac` crate's HMAC-SHA256 of `data` under `key`, called directly: the oracle the
    /// hand-written [`MacState`] is held to (independent of this module's own wrappers).
    fn oracle(key: &[u8; TAG_LEN], data: &[u8]) -> [u8; TAG_LEN] {
        let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).unwrap();
        hmac::Mac::update(&mut m, data);
        hmac::Mac::finalize(m).into_bytes().into()
    }

    /// The two builds of [`MacState`]: the host's (`fast-request`) and the device images'
    /// (byte at a time, the smaller code). Both are compiled into the tests, whichever
    /// features are on, so each is checked against the oracle here.
    #[derive(Debug, Clone, Copy)]
    enum Path {
        Fast,
        Bytewise,
    }

    impl Path {
        fn update(self, state: &mut MacState, data: &[u8]) {
            match self {
                Path::Fast => state.update_fast(data),
                Path::Bytewise => state.update_bytewise(data),
            }
        }

        fn finish(self, state: &mut MacState) -> Tag {
            let inner = match self {
                Path::Fast => state.inner_fast(),
                Path::Bytewise => state.inner_bytewise(),
            };
            state.outer(inner)
        }

        /// The tag of `data` fed in the pieces `cuts` makes (offsets, any order, any size).
        fn tag(self, key: &[u8; TAG_LEN], data: &[u8], cuts: &[usize]) -> Tag {
            let mut state = MacKey::new(&Key::from_bytes(*key)).mac();
            let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
            cuts.push(data.len());
            cuts.sort();
            let mut at = 0;
            for cut in cuts {
                self.update(&mut state, &data[at..cut]);
                at = cut;
            }
            self.finish(&mut state)
        }
    }

    const PATHS: [Path; 2] = [Path::Fast, Path::Bytewise];

    /// Message lengths at every SHA-256 padding edge: the length field fits in the last
    /// block (up to 55 bytes past a block boundary) or needs one more (56 to 63), with the
    /// key block counted before the message.
    const EDGES: [usize; 16] = [
        0, 1, 54, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 183, 200,
    ];

    proptest::proptest! {
        /// `sha256` (on `MacState`'s padding) is `sha2::Sha256` for any data, lengths around
        /// every padding edge included.
        #[test]
        fn sha256_is_sha2(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            use sha2::Digest;
            let want: [u8; TAG_LEN] = Sha256::digest(&data).into();
            proptest::prop_assert_eq!(sha256(&data), want);
        }
    }

    #[test]
    fn sha256_at_padding_edges() {
        use sha2::Digest;
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128] {
            let data = vec![0x61u8; len];
            let want: [u8; TAG_LEN] = Sha256::digest(&data).into();
            assert_eq!(sha256(&data), want, "{len} bytes");
        }
        // FIPS 180-4's "abc".
        assert_eq!(
            crate::encoding::hex_encode::<64>(&sha256(b"abc")).as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    proptest::proptest! {
        /// `MacState` is HMAC-SHA256 for any key, any data (lengths around every padding
        /// edge) and any split of the data into updates, in both builds.
        #[test]
        fn mac_state_is_hmac_sha256(
            key in proptest::prelude::any::<[u8; TAG_LEN]>(),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..6),
        ) {
            for path in PATHS {
                proptest::prop_assert!(
                    path.tag(&key, &data, &cuts).ct_eq(&oracle(&key, &data)),
                    "{:?}", path
                );
            }
        }
    }

    /// Both builds at every padding edge, fed whole, in thirds and a byte at a time, with a
    /// key and data of distinct bytes (so that a byte lost, repeated or misplaced shows).
    #[test]
    fn both_builds_at_padding_edges() {
        let key: [u8; TAG_LEN] = core::array::from_fn(|i| 0x40 + i as u8);
        for len in EDGES {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let want = oracle(&key, &data);
            let bytes: Vec<usize> = (1..len).collect();
            for path in PATHS {
                for cuts in [&[][..], &[len / 3, 2 * len / 3], &bytes] {
                    assert!(
                        path.tag(&key, &data, cuts).ct_eq(&want),
                        "{path:?}, {len} bytes in {} pieces",
                        cuts.len() + 1
                    );
                }
            }
        }
    }

    /// Plain SHA-256 ([`MacState::plain_sha256`], the hash of `sha256`) through either
    /// padding, as `[u8; 32]`.
    fn plain_hash(path: Path, data: &[u8]) -> [u8; TAG_LEN] {
        let mut state = MacState::plain_sha256();
        path.update(&mut state, data);
        let inner = match path {
            Path::Fast => state.inner_fast(),
            Path::Bytewise => state.inner_bytewise(),
        };
        let mut hash = [0u8; TAG_LEN];
        for (out, word) in hash.chunks_exact_mut(4).zip(inner) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        hash
    }

    /// Both paddings (the host's and the device images'), for every message length from 0
    /// to three blocks and a half, so every place the `0x80` and the length can fall (the
    /// length in the same block, up to 55 bytes past a boundary, or in one more block, from
    /// 56 to 63) is taken at each of the first three blocks: plain SHA-256 equals the `sha2`
    /// crate's, and HMAC-SHA256 (whose key block comes first, so its length counts one block
    /// more) equals the `hmac` crate's, whole and cut at a block boundary.
    #[test]
    fn both_paddings_equal_the_crates_at_every_length() {
        use sha2::Digest;
        let key: [u8; TAG_LEN] = core::array::from_fn(|i| 0x91 ^ (i as u8).wrapping_mul(29));
        let data: Vec<u8> = (0..230usize).map(|i| (i * 151 + 17) as u8).collect();
        for len in 0..=data.len() {
            let data = &data[..len];
            let want_hash: [u8; TAG_LEN] = Sha256::digest(data).into();
            let want_tag = oracle(&key, data);
            for path in PATHS {
                assert_eq!(
                    plain_hash(path, data),
                    want_hash,
                    "{path:?}: SHA-256 of {len}"
                );
                for cuts in [&[][..], &[BLOCK]] {
                    assert!(
                        path.tag(&key, data, cuts).ct_eq(&want_tag),
                        "{path:?}: HMAC of {len} bytes cut at {cuts:?}"
                    );
                }
            }
            assert_eq!(sha256(data), want_hash, "sha256 of {len}");
        }
    }

    /// The public API (the build this crate was compiled with) at the padding edges.
    #[test]
    fn mac_state_at_padding_edges() {
        let key = [0x0b; TAG_LEN];
        for len in EDGES {
            let data = vec![0xa5u8; len];
            let mut state = MacKey::new(&Key::from_bytes(key)).mac();
            state.update(&data);
            assert!(state.finish().ct_eq(&oracle(&key, &data)), "{len} bytes");
        }
    }

    /// Finishing in place leaves nothing the tag depends on changed: finishing again, in
    /// either build, gives the same (right) tag, and so does going on with the message.
    #[test]
    fn finishing_in_place_twice_gives_the_same_tag() {
        let key = [0x0b; TAG_LEN];
        for len in EDGES {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            for path in PATHS {
                let mut state = MacKey::new(&Key::from_bytes(key)).mac();
                path.update(&mut state, &data);
                for round in 0..3 {
                    assert!(
                        path.finish(&mut state).ct_eq(&oracle(&key, &data)),
                        "{path:?}, {len} bytes, finish {round}"
                    );
                }
                assert!(state.finish_in_place().ct_eq(&oracle(&key, &data)));
                path.update(&mut state, b"more");
                let mut longer = data.clone();
                longer.extend_from_slice(b"more");
                assert!(
                    path.finish(&mut state).ct_eq(&oracle(&key, &longer)),
                    "{path:?}, {len} bytes, then more"
                );
            }
        }
    }
}
