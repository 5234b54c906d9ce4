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

#[cfg(not(feature = "fast-request"))]
pub(crate) use copy_plain as copy_short;

/// `copy_short` of the device images. Compiled in every build (the host's only for its tests),
/// so that the core's tests, which build with the default features, also check the copy the
/// device images use.
#[cfg_attr(feature = "fast-request", allow(dead_code))]
#[inline(always)]
pub(crate) fn copy_plain(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// Copies `src` into `dst` (of the same length; a shorter `dst` takes a prefix). The fields
/// of MAC inputs and responses are a few bytes to a few dozen: up to 32 bytes are copied as
/// two overlapping fixed-size moves, which the compiler inlines, instead of a call to
/// `memcpy` whose set-up costs more than the copy.
///
/// Without the `fast-request` feature (the device images, whose flash is tighter than their
/// time) it is [`copy_plain`], a plain `copy_from_slice`: the inlined moves cost flash at every
/// call site.
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
    // Eight digits at a time where they fit (a nonce is four words, a MAC eight); not in the
    // device images (no `fast-request`), whose flash is tighter than their time (the 64-bit
    // arithmetic costs Thumb code at every `N`).
    #[cfg(feature = "fast-request")]
    let (t_tail, out_tail, mut seen) = {
        let whole = N / 4;
        let (t_head, t_tail) = t.split_at(8 * whole);
        let (out_head, out_tail) = out.split_at_mut(4 * whole);
        let mut valid = true;
        for (o, digits) in out_head.chunks_exact_mut(4).zip(t_head.chunks_exact(8)) {
            let (Ok(o), Ok(digits)) = (<&mut [u8; 4]>::try_from(o), <[u8; 8]>::try_from(digits))
            else {
                return Err(DecodeError);
            };
            match unhex8(digits) {
                Some(bytes) => *o = bytes,
                None => valid = false,
            }
        }
        (
            t_tail,
            out_tail.iter_mut(),
            if valid { 0u8 } else { NOT_HEX },
        )
    };
    #[cfg(not(feature = "fast-request"))]
    let (t_tail, out_tail, mut seen) = (t, out.iter_mut(), 0u8);
    // One table look-up per digit and a single check at the end: this runs on every
    // transfer frame (its nonce and MAC).
    for (o, pair) in out_tail.zip(t_tail.chunks_exact(2)) {
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

/// Eight lowercase hex digits as four bytes, or `None` if any is not one, computed in one
/// 64-bit word instead of a table look-up per digit. Every test is exact per byte (no borrow
/// or carry crosses a byte): with the high bits clear, `v + (0x80 - lo)` has its high bit
/// set exactly when `v >= lo`, and stays below 0x100.
#[cfg(any(feature = "fast-request", test))]
#[inline]
fn unhex8(digits: [u8; 8]) -> Option<[u8; 4]> {
    const ONES: u64 = u64::MAX / 0xff;
    const HIGHS: u64 = 0x80 * ONES;
    let x = u64::from_le_bytes(digits);
    if x & HIGHS != 0 {
        return None;
    }
    let at_least = |lo: u64| (x + (0x80 - lo) * ONES) & HIGHS;
    let decimal = at_least(0x30) & !at_least(0x3a);
    let letter = at_least(0x61) & !at_least(0x67);
    if decimal | letter != HIGHS {
        return None;
    }
    // `'0'..='9'` are 0x30..=0x39 and `'a'..='f'` 0x61..=0x66: the low nibble, plus 9 for a
    // letter. Then byte `i` of the result is nibble `2i` above nibble `2i + 1`.
    let nibbles = (x & (0x0f * ONES)) + 9 * (letter >> 7);
    let mut t = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    t = (t | (t >> 8)) & 0x0000_ffff_0000_ffff;
    t |= t >> 16;
    Some((t as u32).to_le_bytes())
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
        /// Any bytes, into room for all, part or more than all of their digits: what `{:02x}`
        /// writes, as much as fits, and nothing past the digits.
        #[test]
        fn hex_encode_into_is_lowercase_hex(bytes in proptest::collection::vec(any::<u8>(), 0..70), room in 0usize..150) {
            let mut out = vec![b'?'; room];
            hex_encode_into(&bytes, &mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), hex_into_room(&bytes, room));
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

    /// What writing `bytes` as `{:02x}` digits into `room` bytes of `?` leaves there.
    fn hex_into_room(bytes: &[u8], room: usize) -> String {
        let mut want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        want.truncate(room);
        let rest = room - want.len();
        want + &"?".repeat(rest)
    }

    /// Every length up to five eight-byte blocks and a tail, into every room from none to
    /// more than the digits need: the same digits as `{:02x}`, cut where the room ends.
    #[test]
    fn hex_encode_into_every_length_and_room() {
        let bytes: Vec<u8> = (0..45u8).map(|i| i.wrapping_mul(97) ^ 0x5c).collect();
        for len in 0..=bytes.len() {
            for room in 0..=2 * len + 20 {
                let mut out = vec![b'?'; room];
                hex_encode_into(&bytes[..len], &mut out);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    hex_into_room(&bytes[..len], room),
                    "{len} bytes into {room}"
                );
            }
        }
    }

    /// Every byte value at every place of a block of eight and of the tail after it.
    #[test]
    fn hex_encode_into_every_byte_everywhere() {
        for place in 0..11 {
            for b in 0..=255u8 {
                let mut bytes = [0xa5u8; 11];
                bytes[place] = b;
                let mut out = [b'?'; 22];
                hex_encode_into(&bytes, &mut out);
                assert_eq!(
                    core::str::from_utf8(&out).unwrap(),
                    hex_into_room(&bytes, 22),
                    "{b:#04x} at {place}"
                );
            }
        }
    }

    /// `hex_encode` gives every digit while its capacity lasts.
    #[test]
    fn hex_encode_fills_its_capacity() {
        let bytes = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe];
        assert_eq!(hex_encode::<18>(&bytes).as_str(), "0123456789abcdeffe");
        assert_eq!(hex_encode::<40>(&bytes).as_str(), "0123456789abcdeffe");
        assert_eq!(hex_encode::<17>(&bytes).as_str(), "0123456789abcdeff");
        assert_eq!(hex_encode::<16>(&bytes).as_str(), "0123456789abcdef");
        assert_eq!(hex_encode::<1>(&bytes).as_str(), "0");
        assert_eq!(hex_encode::<0>(&bytes).as_str(), "");
    }

    /// Both copies (the host's and the device images'), every length up to past the longest
    /// short move, into the same length, a shorter and a longer slice: the bytes that fit,
    /// and nothing else touched.
    #[test]
    fn short_copies_copy_every_length() {
        type Copy = fn(&mut [u8], &[u8]);
        let copies: [(&str, Copy); 2] = [("copy_short", copy_short), ("copy_plain", copy_plain)];
        for (name, copy) in copies {
            for len in 0..=70 {
                let src: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(31) | 1).collect();
                for room in 0..=len + 3 {
                    let mut dst = vec![0u8; room];
                    copy(&mut dst, &src);
                    let n = room.min(len);
                    assert_eq!(&dst[..n], &src[..n], "{name}: {len} into {room}");
                    assert!(
                        dst[n..].iter().all(|&b| b == 0),
                        "{name}: {len} into {room}"
                    );
                }
            }
        }
    }

    /// Base64 by its definition: the bits of the input six at a time, each one digit, and
    /// `=` for each missing byte of the last group of three.
    fn base64_by_bits(bytes: &[u8]) -> String {
        let bits: Vec<u8> = bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .collect();
        let mut text: String = bits
            .chunks(6)
            .map(|six| {
                let v = (0..6).fold(0, |v, i| (v << 1) | six.get(i).copied().unwrap_or(0));
                char::from(B64[usize::from(v)])
            })
            .collect();
        while text.len() % 4 != 0 {
            text.push('=');
        }
        text
    }

    /// Every input of one and two bytes, and a run of longer ones: the definition's text.
    #[test]
    fn base64_encode_is_the_definition() {
        for a in 0..=255u8 {
            assert_eq!(base64_encode::<4>(&[a]).as_str(), base64_by_bits(&[a]));
            for b in 0..=255u8 {
                let pair = [a, b];
                assert_eq!(base64_encode::<4>(&pair).as_str(), base64_by_bits(&pair));
            }
        }
        let long: Vec<u8> = (0..=255u8).rev().collect();
        for len in 0..long.len() {
            let bytes = &long[..len];
            assert_eq!(base64_encode::<344>(bytes).as_str(), base64_by_bits(bytes));
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

    /// The table decoder, digit by digit: what `hex_decode` computes eight digits at a time.
    fn unhex_by_table<const N: usize>(text: &[u8]) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        if text.len() != 2 * N {
            return Err(DecodeError);
        }
        for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            let (high, low) = (
                HEX_VALUES[usize::from(pair[0])],
                HEX_VALUES[usize::from(pair[1])],
            );
            if high > 15 || low > 15 {
                return Err(DecodeError);
            }
            *o = (high << 4) | low;
        }
        Ok(out)
    }

    /// Every byte value in every digit position of a word (and of the digits after the
    /// words) decodes as the table says: the word's range tests have no edge off by one.
    #[test]
    fn hex_decode_words_take_exactly_lowercase_digits() {
        let base = *b"0123456789abcdef0a1b2c3d4e5f6789f";
        for at in 0..base.len() - 1 {
            for b in 0..=0x7fu8 {
                let mut text = base;
                text[at] = b;
                let text = &text[..32];
                let Ok(s) = core::str::from_utf8(text) else {
                    continue;
                };
                assert_eq!(
                    hex_decode::<16>(s),
                    unhex_by_table::<16>(text),
                    "{b:#x} at {at}"
                );
            }
        }
        assert_eq!(unhex8(*b"09afAF00"), None);
        assert_eq!(unhex8(*b"0123abcd"), Some([0x01, 0x23, 0xab, 0xcd]));
    }

    proptest! {
        #[test]
        fn hex_decode_matches_the_table(
            text in proptest::collection::vec(
                prop_oneof![
                    8 => proptest::sample::select(b"0123456789abcdef".to_vec()),
                    1 => any::<u8>(),
                    1 => proptest::sample::select(b"/0:9@`afgAFG".to_vec()),
                ],
                0..70,
            ),
        ) {
            if let Ok(s) = core::str::from_utf8(&text) {
                prop_assert_eq!(hex_decode::<16>(s), unhex_by_table::<16>(&text));
                prop_assert_eq!(hex_decode::<32>(s), unhex_by_table::<32>(&text));
                prop_assert_eq!(hex_decode::<3>(s), unhex_by_table::<3>(&text));
                prop_assert_eq!(hex_decode::<5>(s), unhex_by_table::<5>(&text));
            }
        }

        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let enc = base64_encode::<64>(&bytes);
            let mut out = [0u8; 48];
            prop_assert_eq!(base64_decode(&enc, &mut out).unwrap(), &bytes[..]);
        }
    }
}
