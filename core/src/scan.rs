//! Byte searches eight bytes at a time (SWAR: a `u64` as eight lanes), for the few scans on
//! the path of every frame: the newline that ends a frame, and the first byte of a JSON
//! string that ends it or needs escaping. A byte-by-byte loop with an early exit is not
//! vectorized by the compiler, and these scans were a tenth of a transfer frame's time.
//!
//! Without the `fast-request` feature (the device images, whose flash is tighter than their
//! CPU time) both searches are the plain loops the property test compares them with.
//!
//! Each 8-byte word is tested with the classic "has a zero byte" and "has a byte less than
//! n" bit tricks. They may flag a lane above a lane that truly matches (a borrow carries
//! upwards), never one below, so the lowest flagged lane is always the first match.

/// Eight lanes of 0x01 and of 0x80.
#[cfg(any(feature = "fast-request", test))]
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
#[cfg(any(feature = "fast-request", test))]
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Flags (high bit of the lane) lanes of `x` that are zero; see the module doc.
#[cfg(any(feature = "fast-request", test))]
fn zero_lanes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Flags lanes of `x` below `n` (`n` at most 128).
#[cfg(any(feature = "fast-request", test))]
fn lanes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// The lowest flagged lane of a non-zero `flags` word read little-endian.
#[cfg(any(feature = "fast-request", test))]
fn first_lane(flags: u64) -> usize {
    (flags.trailing_zeros() / 8) as usize
}

/// The index of the first `needle` in `haystack`: eight bytes at a time with
/// `fast-request`, else the plain loop.
#[cfg(not(feature = "fast-request"))]
pub(crate) use find_byte_plain as find_byte;
/// The index of the first `needle` in `haystack`: eight bytes at a time with
/// `fast-request`, else the plain loop.
#[cfg(feature = "fast-request")]
pub(crate) use find_byte_swar as find_byte;

/// The index of the first `needle` in `haystack`, a byte at a time (compiled into the tests
/// whatever the features, so both searches are tested).
#[cfg(any(not(feature = "fast-request"), test))]
pub(crate) fn find_byte_plain(haystack: &[u8], needle: u8) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// The index of the first `needle` in `haystack`, eight bytes at a time.
#[cfg(any(feature = "fast-request", test))]
pub(crate) fn find_byte_swar(haystack: &[u8], needle: u8) -> Option<usize> {
    let pattern = ONES * u64::from(needle);
    let mut chunks = haystack.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let flags = zero_lanes(u64::from_le_bytes(word) ^ pattern);
        if flags != 0 {
            return Some(at + first_lane(flags));
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter().position(|&b| b == needle).map(|i| at + i)
}

/// True for the bytes that end a JSON string or must be escaped in one: `"`, `\` and the
/// control characters U+0000 to U+001F.
pub(crate) fn is_json_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The index of the first byte of `bytes` for which [`is_json_special`] holds: eight bytes
/// at a time with `fast-request`, else the plain loop.
#[cfg(not(feature = "fast-request"))]
pub(crate) use find_json_special_plain as find_json_special;
/// The index of the first byte of `bytes` for which [`is_json_special`] holds: eight bytes
/// at a time with `fast-request`, else the plain loop.
#[cfg(feature = "fast-request")]
pub(crate) use find_json_special_swar as find_json_special;

/// The index of the first byte of `bytes` for which [`is_json_special`] holds, a byte at a
/// time.
#[cfg(any(not(feature = "fast-request"), test))]
pub(crate) fn find_json_special_plain(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| is_json_special(b))
}

/// The index of the first byte of `bytes` for which [`is_json_special`] holds, eight bytes
/// at a time.
#[cfg(any(feature = "fast-request", test))]
pub(crate) fn find_json_special_swar(bytes: &[u8]) -> Option<usize> {
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let flags = zero_lanes(x ^ QUOTES) | zero_lanes(x ^ BACKSLASHES) | lanes_below(x, 0x20);
        if flags != 0 {
            return Some(at + first_lane(flags));
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&b| is_json_special(b))
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Both builds of each search (the host's eight-byte one and the device images' plain
    /// loop), whichever features the tests were compiled with.
    type ByteSearch = fn(&[u8], u8) -> Option<usize>;
    type SpecialSearch = fn(&[u8]) -> Option<usize>;
    const BYTE_SEARCHES: [(&str, ByteSearch); 2] =
        [("swar", find_byte_swar), ("plain", find_byte_plain)];
    const SPECIAL_SEARCHES: [(&str, SpecialSearch); 2] = [
        ("swar", find_json_special_swar),
        ("plain", find_json_special_plain),
    ];

    #[test]
    fn finds_the_first_match_in_every_lane() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = std::vec![b'a'; len];
                bytes[at] = b'\n';
                // A later match never hides the first one.
                if at + 1 < len {
                    bytes[len - 1] = b'\n';
                }
                for (name, find_byte) in BYTE_SEARCHES {
                    assert_eq!(find_byte(&bytes, b'\n'), Some(at), "{name}: {at}/{len}");
                }
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    bytes[at] = special;
                    for (name, find_json_special) in SPECIAL_SEARCHES {
                        assert_eq!(
                            find_json_special(&bytes),
                            Some(at),
                            "{name}: {special} at {at}/{len}"
                        );
                    }
                }
            }
            for (name, find_byte) in BYTE_SEARCHES {
                assert_eq!(find_byte(&std::vec![b'a'; len], b'\n'), None, "{name}");
            }
            for (name, find_json_special) in SPECIAL_SEARCHES {
                // Space (0x20) and DEL are the first bytes past the control characters.
                assert_eq!(find_json_special(&std::vec![0x20; len]), None, "{name}");
                assert_eq!(find_json_special(&std::vec![0x7f; len]), None, "{name}");
            }
        }
    }

    #[test]
    fn the_build_in_use_is_one_of_them() {
        let bytes = b"0123456789\"abc\ndef";
        assert_eq!(find_byte(bytes, b'\n'), Some(14));
        assert_eq!(find_json_special(bytes), Some(10));
        assert_eq!(find_byte(b"", b'\n'), None);
    }

    /// The bytes a search must tell apart from `needle`: one bit off in every place, one
    /// above and one below (a borrow in the eight-lane trick starts at a lane equal to the
    /// pattern and can flag a lane of 0x01 above it).
    fn near(needle: u8) -> impl Iterator<Item = u8> {
        (0..8)
            .map(move |bit| needle ^ (1 << bit))
            .chain([needle.wrapping_add(1), needle.wrapping_sub(1)])
    }

    /// Every byte value as the needle, at every place of slices of 0 to 24 bytes (no whole
    /// word, one, two, and a tail of each length) starting at every alignment, among bytes
    /// near it: the search finds exactly that place, and never a needle just past the
    /// slice's end or just before its start.
    #[test]
    fn finds_exactly_the_byte_on_every_alignment() {
        let mut buffer = [0u8; 40];
        for needle in 0..=255u8 {
            for other in near(needle) {
                for start in 1..9 {
                    for len in 0..=24 {
                        buffer.fill(other);
                        buffer[start - 1] = needle;
                        buffer[start + len] = needle;
                        for (name, find_byte) in BYTE_SEARCHES {
                            let slice = &buffer[start..start + len];
                            assert_eq!(find_byte(slice, needle), None, "{name}: {needle} {len}");
                        }
                        for at in 0..len {
                            buffer[start..start + len].fill(other);
                            buffer[start + at] = needle;
                            // Matches after the first, and bytes that could be flagged by a
                            // borrow, above it.
                            if at + 9 < len {
                                buffer[start + at + 9] = needle;
                            }
                            for (name, find_byte) in BYTE_SEARCHES {
                                let slice = &buffer[start..start + len];
                                assert_eq!(
                                    find_byte(slice, needle),
                                    Some(at),
                                    "{name}: {needle} at {at}/{len} among {other}, start {start}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// JSON's special bytes by their definition (RFC 8259 §7): the quote, the backslash and
    /// the control characters U+0000 to U+001F, and nothing else.
    fn special_by_definition(b: u8) -> bool {
        matches!(b, b'"' | b'\\' | 0x00..=0x1f)
    }

    #[test]
    fn json_specials_are_exactly_the_quote_backslash_and_controls() {
        for b in 0..=255u8 {
            assert_eq!(is_json_special(b), special_by_definition(b), "{b:#04x}");
        }
    }

    /// Every byte value at every place of slices of 0 to 24 bytes at every alignment, among
    /// plain bytes that differ from a special one in one bit (the high bit, or the low bit
    /// of the quote and the backslash, or the first byte past the controls): found exactly
    /// where it is if special, else nothing is; a special byte just past the slice's end or
    /// just before its start is never found.
    #[test]
    fn finds_exactly_the_first_special_on_every_alignment() {
        let plain = [
            0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0x9f, 0xa2, 0xdc, 0xff,
        ];
        let mut buffer = [0u8; 40];
        for other in plain {
            assert!(!special_by_definition(other));
            for start in 1..9 {
                for len in 0..=24 {
                    for edge in [b'"', b'\\', 0x00, 0x1f] {
                        buffer.fill(other);
                        buffer[start - 1] = edge;
                        buffer[start + len] = edge;
                        for (name, find_json_special) in SPECIAL_SEARCHES {
                            let slice = &buffer[start..start + len];
                            assert_eq!(find_json_special(slice), None, "{name}: {edge} {len}");
                        }
                    }
                    for at in 0..len {
                        for b in 0..=255u8 {
                            buffer[start..start + len].fill(other);
                            buffer[start + at] = b;
                            if at + 9 < len {
                                buffer[start + at + 9] = b'"';
                            }
                            let want = if special_by_definition(b) {
                                Some(at)
                            } else if at + 9 < len {
                                Some(at + 9)
                            } else {
                                None
                            };
                            for (name, find_json_special) in SPECIAL_SEARCHES {
                                let slice = &buffer[start..start + len];
                                assert_eq!(
                                    find_json_special(slice),
                                    want,
                                    "{name}: {b:#04x} at {at}/{len} among {other:#04x}, start {start}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn match_the_plain_loops(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'"'), Just(b'\\'), Just(b'\n'), 0x1eu8..0x24],
                0..80,
            ),
            needle in any::<u8>(),
        ) {
            for (name, find_byte) in BYTE_SEARCHES {
                prop_assert_eq!(
                    find_byte(&bytes, needle),
                    bytes.iter().position(|&b| b == needle),
                    "{}", name
                );
                prop_assert_eq!(
                    find_byte(&bytes, b'\n'),
                    bytes.iter().position(|&b| b == b'\n'),
                    "{}", name
                );
            }
            for (name, find_json_special) in SPECIAL_SEARCHES {
                prop_assert_eq!(
                    find_json_special(&bytes),
                    bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20),
                    "{}", name
                );
            }
        }
    }
}
