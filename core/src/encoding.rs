//! Hex and base64 for the few binary fields the protocol carries as text.
//!
//! SCRAM ([RFC 5802 §5.1](https://www.rfc-editor.org/rfc/rfc5802#section-5.1)) carries salts,
//! proofs and signatures in standard base64 with padding; txsock's own nonces and MACs are
//! lowercase hex. Decoders accept only the canonical form, so decoding and re-encoding
//! always gives back the same text (MAC inputs depend on it).

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Error returned by [`hex_decode`] and [`base64_decode`].
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("invalid encoding or length")
    }
}

impl core::error::Error for DecodeError {}

/// Encodes `bytes` as lowercase hex into a string of capacity `N` (at least `2 * len`).
pub fn hex_encode<const N: usize>(bytes: &[u8]) -> heapless::String<N> {
    let mut digits = heapless::Vec::<u8, N>::new();
    // Callers size N for their fixed-length inputs; overflow would truncate, never panic.
    let _ = digits.resize((2 * bytes.len()).min(N), 0);
    hex_encode_into(bytes, &mut digits);
    // Only ASCII digits were written.
    heapless::String::from_utf8(digits).unwrap_or_default()
}

/// Writes `bytes` as lowercase hex digits into `out`, as many as fit (two per byte).
pub(crate) fn hex_encode_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Eight bytes at a time while they fit (every nonce and MAC is a multiple of eight); not
    // in the device images (no `fast-request`), where 128-bit arithmetic costs flash.
    let whole = if cfg!(feature = "fast-request") {
        (bytes.len() / 8).min(out.len() / 16)
    } else {
        0
    };
    let (head, tail) = bytes.split_at(8 * whole);
    let (out_head, out_tail) = out.split_at_mut(16 * whole);
    for (digits, chunk) in out_head.chunks_exact_mut(16).zip(head.chunks_exact(8)) {
        if let (Ok(digits), Ok(chunk)) = (
            <&mut [u8; 16]>::try_from(digits),
            <[u8; 8]>::try_from(chunk),
        ) {
            *digits = hex8(chunk);
        }
    }
    for (pair, &b) in out_tail.chunks_mut(2).zip(tail) {
        pair[0] = HEX[usize::from(b >> 4)];
        if let Some(low) = pair.get_mut(1) {
            *low = HEX[usize::from(b & 15)];
        }
    }
}

/// Eight bytes as sixteen lowercase hex digits, computed in two 128-bit words instead of a
/// table look-up per digit: the nibbles are spread one per byte, then each nibble `v`
/// becomes `'0' + v`, plus 39 (from `'0' + 10` to `'a'`) where `v >= 10`. No byte carries
/// into the next: the largest intermediate value is 15 + 0x76 = 0x85.
#[inline]
fn hex8(bytes: [u8; 8]) -> [u8; 16] {
    const ONES: u128 = u128::MAX / 0xff;
    /// Moves byte `i` of `v` to byte `2 * i` of the result.
    fn spread(v: u64) -> u128 {
        let mut t = u128::from(v);
        t = (t | (t << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
        t = (t | (t << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
        (t | (t << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff
    }
    let x = u64::from_be_bytes(bytes);
    let nibbles =
        (spread((x >> 4) & 0x0f0f_0f0f_0f0f_0f0f) << 8) | spread(x & 0x0f0f_0f0f_0f0f_0f0f);
    let letters = ((nibbles + 0x76 * ONES) >> 7) & ONES;
    (nibbles + 0x30 * ONES + 39 * letters).to_be_bytes()
}

/// Copies `src` into `dst` (of the same length; a shorter `dst` takes a prefix). The fields
/// of MAC inputs and responses are a few bytes to a few dozen: up to 32 bytes are copied as
/// two overlapping fixed-size moves, which the compiler inlines, instead of a call to
/// `memcpy` whose set-up costs more than the copy.
///
/// Without the `fast-request` feature (the device images, whose flash is tighter than their
/// time) it is a plain `copy_from_slice`: the inlined moves cost flash at every call site.
#[cfg(not(feature = "fast-request"))]
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// See the other `copy_short`.
#[cfg(feature = "fast-request")]
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    let Some(dst) = dst.get_mut(..n) else {
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
        return;
    };
    /// Copies with two moves of `K` bytes, the first and the last `K` (overlapping); for
    /// `K <= n <= 2 * K`.
    #[inline(always)]
    fn two<const K: usize>(dst: &mut [u8], src: &[u8]) {
        let n = src.len();
        let head = src.get(..K).and_then(|s| <[u8; K]>::try_from(s).ok());
        let tail = src
            .get(n.saturating_sub(K)..)
            .and_then(|s| <[u8; K]>::try_from(s).ok());
        if let (Some(head), Some(tail)) = (head, tail) {
            if let Some(d) = dst
                .get_mut(..K)
                .and_then(|d| <&mut [u8; K]>::try_from(d).ok())
            {
                *d = head;
            }
            if let Some(d) = dst
                .get_mut(n.saturating_sub(K)..)
                .and_then(|d| <&mut [u8; K]>::try_from(d).ok())
            {
                *d = tail;
            }
        }
    }
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => two::<4>(dst, src),
        8..=15 => two::<8>(dst, src),
        16..=32 => two::<16>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// The value of each byte as a lowercase hex digit, or [`NOT_HEX`].
static HEX_VALUES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Marks a byte that is not a lowercase hex digit in [`HEX_VALUES`] (any value above 15).
const NOT_HEX: u8 = 0xff;

/// Decodes exactly `N` bytes from lowercase hex.
pub fn hex_decode<const N: usize>(text: &str) -> Result<[u8; N], DecodeError> {
    let t = text.as_bytes();
    if t.len() != 2 * N {
        return Err(DecodeError);
    }
    let mut out = [0u8; N];
    // One table look-up per digit and a single check at the end: this runs on every
    // transfer frame (its nonce and MAC).
    let mut seen = 0u8;
    for (o, pair) in out.iter_mut().zip(t.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUES[usize::from(pair[0])],
            HEX_VALUES[usize::from(pair[1])],
        );
        seen |= high | low;
        *o = (high << 4) | low;
    }
    if seen > 15 {
        return Err(DecodeError);
    }
    Ok(out)
}

/// Encodes `bytes` as padded standard base64 into a string of capacity `N`.
pub fn base64_encode<const N: usize>(bytes: &[u8]) -> heapless::String<N> {
    let mut s = heapless::String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            let c = if i <= chunk.len() {
                B64[((n >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            };
            // Callers size N as 4 * ceil(len / 3); overflow would truncate, never panic.
            let _ = s.push(char::from(c));
        }
    }
    s
}

/// Decodes canonical padded base64 into `out`, returning the decoded length.
pub fn base64_decode<'o>(text: &str, out: &'o mut [u8]) -> Result<&'o [u8], DecodeError> {
    fn value(c: u8) -> Result<u32, DecodeError> {
        match c {
            b'A'..=b'Z' => Ok(u32::from(c - b'A')),
            b'a'..=b'z' => Ok(u32::from(c - b'a' + 26)),
            b'0'..=b'9' => Ok(u32::from(c - b'0' + 52)),
            b'+' => Ok(62),
            b'/' => Ok(63),
            _ => Err(DecodeError),
        }
    }
    let t = text.as_bytes();
    if t.len() % 4 != 0 {
        return Err(DecodeError);
    }
    let mut len = 0;
    let quads = t.len() / 4;
    for (qi, q) in t.chunks_exact(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && qi + 1 != quads) {
            return Err(DecodeError);
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // Non-zero bits under the padding make a second spelling of the same bytes.
        if bytes[keep..].iter().any(|&b| b != 0) {
            return Err(DecodeError);
        }
        let dst = out.get_mut(len..len + keep).ok_or(DecodeError)?;
        dst.copy_from_slice(&bytes[..keep]);
        len += keep;
    }
    out.get(..len).ok_or(DecodeError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes, into room for all or part of their digits: what `{:02x}` writes.
        #[test]
        fn hex_encode_into_is_lowercase_hex(bytes in proptest::collection::vec(any::<u8>(), 0..70), room in 0usize..150) {
            let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let room = room.min(want.len());
            let mut out = vec![b'?'; room];
            hex_encode_into(&bytes, &mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), &want[..room]);
        }

        /// Every length, into a slice of the same length or a shorter one (a prefix).
        #[test]
        fn copy_short_copies(src in proptest::collection::vec(any::<u8>(), 0..80), cut in 0usize..80) {
            let mut dst = vec![0xeeu8; src.len()];
            copy_short(&mut dst, &src);
            prop_assert_eq!(&dst, &src);
            let cut = cut.min(src.len());
            let mut dst = vec![0xeeu8; cut];
            copy_short(&mut dst, &src);
            prop_assert_eq!(&dst[..], &src[..cut]);
        }
    }

    #[test]
    fn rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode::<16>(raw.as_bytes()).as_str(), enc);
            let mut out = [0u8; 8];
            assert_eq!(base64_decode(enc, &mut out).unwrap(), raw.as_bytes());
        }
    }

    #[test]
    fn rejects_non_canonical_base64() {
        let mut out = [0u8; 8];
        assert!(base64_decode("Zh==", &mut out).is_err());
        assert!(base64_decode("Zg=", &mut out).is_err());
        assert!(base64_decode("Zg==Zg==", &mut out).is_err());
        assert!(base64_decode("Z!==", &mut out).is_err());
        assert!(base64_decode("Zm9vYmFy", &mut out[..5]).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let s = hex_encode::<8>(&[0xde, 0xad, 0x01, 0x0f]);
        assert_eq!(s.as_str(), "dead010f");
        assert_eq!(hex_decode::<4>("dead010f"), Ok([0xde, 0xad, 0x01, 0x0f]));
        assert_eq!(
            hex_encode::<8>(&[0xde, 0xad, 0x01, 0x0f]).as_str(),
            "dead010f"
        );
        // Too small a string truncates, digit by digit.
        assert_eq!(hex_encode::<3>(&[0xde, 0xad]).as_str(), "dea");
        assert_eq!(hex_encode::<8>(&[]).as_str(), "");
        assert!(hex_decode::<4>("DEAD010F").is_err());
        assert!(hex_decode::<4>("dead01").is_err());
    }

    /// Every two-byte input, against the definition: both bytes lowercase hex digits.
    #[test]
    fn hex_decode_accepts_exactly_lowercase_digit_pairs() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        for high in 0..=255u8 {
            for low in 0..=255u8 {
                let pair = [high, low];
                let want = match (digit(high), digit(low)) {
                    (Some(h), Some(l)) => Ok([h << 4 | l]),
                    _ => Err(DecodeError),
                };
                // Non-UTF-8 pairs cannot reach hex_decode (it takes &str); skip them.
                if let Ok(text) = core::str::from_utf8(&pair) {
                    assert_eq!(hex_decode::<1>(text), want, "{pair:?}");
                }
            }
        }
        // A bad digit anywhere in a longer input is caught, not only in the first pair.
        assert!(hex_decode::<4>("dead010g").is_err());
        assert!(hex_decode::<4>("g ead010").is_err());
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let enc = base64_encode::<64>(&bytes);
            let mut out = [0u8; 48];
            prop_assert_eq!(base64_decode(&enc, &mut out).unwrap(), &bytes[..]);
        }
    }
}
