//! Newline-delimited framing with a fixed buffer.
//!
//! A frame is one line of UTF-8 JSON terminated by `\n` (an optional `\r` before it is
//! stripped). [`FrameDecoder`] accumulates bytes however they are split across reads and
//! yields the same frames in every case. A line longer than the buffer is reported once as
//! [`FrameError::TooLong`] and then skipped up to its newline without storing it, so the
//! decoder's memory is exactly `N` bytes whatever the peer sends.

use core::fmt;

/// The default maximum frame length in bytes, newline excluded.
///
/// 512 bytes holds the largest request of the protocol (a transfer with a 32-byte id, a
/// 32-byte recipient, a 64-hex-digit MAC and a 32-hex-digit nonce: about 250 bytes) with
/// room to spare for whitespace.
pub const DEFAULT_MAX_FRAME: usize = 512;

/// Error returned by [`FrameDecoder::decode`] for a line that cannot be a frame.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The line was longer than the decoder's capacity; `max` is that capacity. The rest of
    /// the line is discarded, and the decoder resumes with the next line.
    TooLong {
        /// The decoder's capacity in bytes.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { max } => write!(f, "frame longer than {max} bytes"),
        }
    }
}

impl core::error::Error for FrameError {}

/// The outcome of feeding bytes to a [`FrameDecoder`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// More input is needed; every input byte was consumed.
    Incomplete,
    /// A complete frame (without its line terminator).
    Frame(&'a [u8]),
    /// A line that could not be kept; the decoder has already recovered.
    Error(FrameError),
}

/// A fixed-capacity decoder of newline-delimited frames holding at most `N` bytes.
///
/// Call [`decode`](Self::decode) with the bytes you have; it returns how many it consumed
/// and what it found. Feed the unconsumed rest in the next call. A frame borrowed from the
/// decoder is valid until the next call.
pub struct FrameDecoder<const N: usize = DEFAULT_MAX_FRAME> {
    buf: [u8; N],
    len: usize,
    /// The longest frame accepted now, at most `N` (see [`set_limit`](Self::set_limit)).
    limit: usize,
    /// True while the rest of an over-long line is being skipped.
    discarding: bool,
    /// True when the previous call returned a frame that must be dropped now.
    frame_pending: bool,
    /// True when the previous call reported a [`FrameError::TooLong`].
    error_reported: bool,
    /// What [`hold`](Self::hold) kept for the next call to return again.
    held: Held,
}

/// What a [`FrameDecoder`] keeps for its next call after [`FrameDecoder::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Nothing,
    /// The frame in the buffer.
    Frame,
    /// A [`FrameError::TooLong`] report.
    TooLong,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// A decoder with an empty buffer.
    pub const fn new() -> Self {
        const { assert!(N > 0, "a frame decoder needs a non-zero capacity") };
        FrameDecoder {
            buf: [0; N],
            len: 0,
            limit: N,
            discarding: false,
            frame_pending: false,
            error_reported: false,
            held: Held::Nothing,
        }
    }

    /// Capacity in bytes: the longest frame this decoder accepts.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Lowers the longest accepted frame to `limit` bytes (clamped to `1..=N`), for drivers
    /// that configure the frame size at run time within a compiled capacity.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(1, N);
    }

    /// The longest frame accepted now.
    pub const fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of an unfinished frame currently buffered.
    pub const fn buffered(&self) -> usize {
        self.len
    }

    /// Keeps what the last [`decode`](Self::decode) returned (a frame or an error) so that the
    /// next call returns it again, consuming nothing. A server session holds a frame whose
    /// answer must wait behind answers still owed to earlier frames; the frame costs no
    /// memory beyond the buffer it already sits in. Does nothing after `Incomplete`.
    pub fn hold(&mut self) {
        if self.frame_pending {
            self.frame_pending = false;
            self.held = Held::Frame;
        } else if self.error_reported {
            self.error_reported = false;
            self.held = Held::TooLong;
        }
    }

    /// True while a [`hold`](Self::hold) is in force: the next `decode` returns the held
    /// frame or error whatever its input.
    pub const fn is_holding(&self) -> bool {
        !matches!(self.held, Held::Nothing)
    }

    /// Consumes bytes from `input` until a frame or an error is found or the input ends.
    ///
    /// Returns the number of bytes consumed and what was found. Bytes after the newline
    /// that ended a frame are not consumed. After [`hold`](Self::hold) it returns the held
    /// frame or error again and consumes nothing.
    pub fn decode(&mut self, input: &[u8]) -> (usize, Decoded<'_>) {
        match core::mem::replace(&mut self.held, Held::Nothing) {
            Held::Nothing => {}
            Held::Frame => {
                self.frame_pending = true;
                return (0, Decoded::Frame(self.frame()));
            }
            Held::TooLong => {
                self.error_reported = true;
                return (0, Decoded::Error(FrameError::TooLong { max: self.limit }));
            }
        }
        self.error_reported = false;
        if self.frame_pending {
            self.frame_pending = false;
            self.len = 0;
        }
        let mut skipped = 0;
        if self.discarding {
            match input.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.discarding = false;
                    self.len = 0;
                    skipped = i + 1;
                }
                None => return (input.len(), Decoded::Incomplete),
            }
        }
        let input = &input[skipped..];
        let newline = crate::scan::find_byte(input, b'\n');
        let line = &input[..newline.unwrap_or(input.len())];
        let room = self.limit.saturating_sub(self.len);
        if line.len() > room {
            // The line cannot fit: report it now, after consuming exactly what fit plus the
            // byte that overflowed, and skip the rest up to its newline.
            self.discarding = true;
            self.error_reported = true;
            self.len = 0;
            return (
                skipped + room + 1,
                Decoded::Error(FrameError::TooLong { max: self.limit }),
            );
        }
        self.buf[self.len..self.len + line.len()].copy_from_slice(line);
        self.len += line.len();
        match newline {
            Some(i) => {
                self.frame_pending = true;
                (skipped + i + 1, Decoded::Frame(self.frame()))
            }
            None => (skipped + input.len(), Decoded::Incomplete),
        }
    }

    /// The complete frame in the buffer, without a trailing CR.
    fn frame(&self) -> &[u8] {
        let line = &self.buf[..self.len];
        line.strip_suffix(b"\r").unwrap_or(line)
    }
}

/// Error returned by [`encode_frame`] when the output buffer is too small.
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsufficientSizeError {
    /// Bytes the frame needs, newline included.
    pub required: usize,
}

impl fmt::Display for InsufficientSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "output buffer too small: {} bytes required",
            self.required
        )
    }
}

impl core::error::Error for InsufficientSizeError {}

/// Serializes `message` as one JSON line into `out`, returning the bytes written.
///
/// If `out` is too small the error says how many bytes the frame needs.
pub fn encode_frame<T: serde::Serialize>(
    message: &T,
    out: &mut [u8],
) -> Result<usize, InsufficientSizeError> {
    match serde_json_core::to_slice(message, out) {
        Ok(n) if n < out.len() => {
            out[n] = b'\n';
            Ok(n + 1)
        }
        _ => Err(InsufficientSizeError {
            required: encoded_len(message) + 1,
        }),
    }
}

/// The longest response frame the protocol defines, newline included.
///
/// A history page of two entries with maximal ids, names, amounts and times is the largest,
/// at about 500 bytes; a test builds it and checks that it fits.
pub const MAX_RESPONSE: usize = 576;

/// The length of `message` serialized as JSON, newline excluded.
///
/// serde-json-core only writes into slices, so the length is measured in a stack scratch
/// buffer of [`MAX_RESPONSE`] bytes; anything longer is reported as needing more than that.
fn encoded_len<T: serde::Serialize>(message: &T) -> usize {
    let mut scratch = [0u8; MAX_RESPONSE];
    match serde_json_core::to_slice(message, &mut scratch) {
        Ok(n) => n,
        Err(_) => MAX_RESPONSE,
    }
}

/// A fixed output buffer of encoded frames waiting to be written, shared by both sessions.
///
/// Frames are appended at the end and drained from the front; the pending bytes are moved
/// to the start only when the free tail is too short for the next frame.
pub struct OutputBuffer<const N: usize> {
    buf: [u8; N],
    start: usize,
    end: usize,
}

impl<const N: usize> OutputBuffer<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        OutputBuffer {
            buf: [0; N],
            start: 0,
            end: 0,
        }
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> &[u8] {
        // `start <= end <= N` always; `get` spares a device image the panic path.
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Room for new frames, once pending bytes are moved to the front.
    pub fn free(&self) -> usize {
        N - (self.end - self.start)
    }

    /// Marks `n` pending bytes as written.
    pub fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Encodes `message` as one frame after the pending bytes, first compacting if the tail
    /// has less than `reserve` bytes. On error nothing is added.
    pub fn push<T: serde::Serialize>(
        &mut self,
        message: &T,
        reserve: usize,
    ) -> Result<(), InsufficientSizeError> {
        self.push_with(reserve, |out| encode_frame(message, out))
    }

    /// [`push`](Self::push) with the server's response encoder
    /// ([`encode_response`](crate::response::encode_response)): the same bytes, faster.
    pub fn push_response<T: crate::response::WriteJson + ?Sized>(
        &mut self,
        message: &T,
        reserve: usize,
    ) -> Result<(), InsufficientSizeError> {
        self.push_with(reserve, |out| {
            crate::response::encode_response(message, out)
        })
    }

    fn push_with(
        &mut self,
        reserve: usize,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, InsufficientSizeError>,
    ) -> Result<(), InsufficientSizeError> {
        if N - self.end < reserve {
            if cfg!(feature = "fast-request") {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.compact_bytewise();
            }
        }
        let n = encode(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(())
    }
}

impl<const N: usize> OutputBuffer<N> {
    /// Moves the pending bytes to the start, byte by byte: the device images' way (without
    /// `fast-request`), since `copy_within`'s `memmove` is about 0.65 KB of a device's flash
    /// and nothing else in a device server needs it.
    #[cfg_attr(feature = "fast-request", allow(dead_code))]
    fn compact_bytewise(&mut self) {
        let start = self.start;
        for from in start..self.end.min(N) {
            self.buf[from - start] = self.buf[from];
        }
        self.end -= start;
        self.start = 0;
    }
}

impl<const N: usize> Default for OutputBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of<const N: usize>(chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut dec = FrameDecoder::<N>::new();
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest: &[u8] = chunk;
            while !rest.is_empty() {
                let (n, d) = dec.decode(rest);
                // Without a hold, every call takes something from what it is given: the
                // server's input loop relies on it to end (and this loop, not to spin).
                assert!(n > 0, "decode took nothing from {rest:?}");
                match d {
                    Decoded::Incomplete => {}
                    Decoded::Frame(f) => out.push(Ok(f.to_vec())),
                    Decoded::Error(e) => out.push(Err(e)),
                }
                rest = &rest[n..];
            }
        }
        out
    }

    /// The device images' compaction (without `fast-request`) keeps the pending bytes, in
    /// order, whatever part of the buffer they fill, overlapping their new place or not.
    #[test]
    fn bytewise_compaction_keeps_pending_bytes() {
        for (written, drained) in [(10, 0), (10, 3), (16, 5), (16, 12), (16, 16), (7, 6)] {
            let mut out = OutputBuffer::<16>::new();
            let bytes: Vec<u8> = (1..=written as u8).collect();
            out.push_with(0, |buf| {
                buf[..written].copy_from_slice(&bytes);
                Ok(written)
            })
            .unwrap();
            out.advance(drained);
            let before = out.pending().to_vec();
            out.compact_bytewise();
            assert_eq!(
                out.pending(),
                &before[..],
                "{written} written, {drained} drained"
            );
            assert_eq!(out.free(), 16 - before.len());
            assert_eq!(out.start, 0);
        }
    }

    #[test]
    fn splits_lines_and_strips_cr() {
        let got = frames_of::<16>(&[b"ab\r\ncd\n", b"e", b"f\n"]);
        assert_eq!(
            got,
            vec![Ok(b"ab".to_vec()), Ok(b"cd".to_vec()), Ok(b"ef".to_vec())]
        );
    }

    #[test]
    fn overlong_line_is_one_error_and_decoder_recovers() {
        let mut long = vec![b'x'; 40];
        long.push(b'\n');
        let got = frames_of::<8>(&[&long, b"ok\n"]);
        assert_eq!(
            got,
            vec![Err(FrameError::TooLong { max: 8 }), Ok(b"ok".to_vec())]
        );
    }

    #[test]
    fn runtime_limit_is_enforced() {
        let mut dec = FrameDecoder::<16>::new();
        dec.set_limit(4);
        let (_, d) = dec.decode(b"abcde\n");
        assert_eq!(d, Decoded::Error(FrameError::TooLong { max: 4 }));
    }

    #[test]
    fn exactly_full_line_is_accepted() {
        let got = frames_of::<4>(&[b"abcd\n"]);
        assert_eq!(got, vec![Ok(b"abcd".to_vec())]);
    }

    #[test]
    fn encode_reports_required_size() {
        #[derive(serde::Serialize)]
        struct M<'a> {
            op: &'a str,
        }
        let mut small = [0u8; 4];
        let err = encode_frame(&M { op: "ping" }, &mut small).unwrap_err();
        assert_eq!(err.required, br#"{"op":"ping"}"#.len() + 1);
        let mut big = [0u8; 64];
        let n = encode_frame(&M { op: "ping" }, &mut big).unwrap();
        assert_eq!(&big[..n], b"{\"op\":\"ping\"}\n");
    }

    /// A held frame or error comes back once more, consuming nothing, and the stream goes on
    /// after it as if it had not been held.
    #[test]
    fn held_frames_and_errors_come_back_once() {
        let mut dec = FrameDecoder::<4>::new();
        let (n, d) = dec.decode(b"ab\r\ntoolong\ncd\n");
        assert_eq!((n, d), (4, Decoded::Frame(b"ab")));
        dec.hold();
        assert!(dec.is_holding());
        assert_eq!(dec.decode(b"ignored"), (0, Decoded::Frame(&b"ab"[..])));
        assert!(!dec.is_holding());
        let (n, d) = dec.decode(b"toolong\ncd\n");
        assert_eq!((n, d), (5, Decoded::Error(FrameError::TooLong { max: 4 })));
        dec.hold();
        assert_eq!(
            dec.decode(b"x"),
            (0, Decoded::Error(FrameError::TooLong { max: 4 }))
        );
        let (n, d) = dec.decode(b"ng\ncd\n");
        assert_eq!((n, d), (6, Decoded::Frame(&b"cd"[..])));
        // Nothing to hold after an incomplete line.
        let (_, d) = dec.decode(b"e");
        assert_eq!(d, Decoded::Incomplete);
        dec.hold();
        assert!(!dec.is_holding());
        assert_eq!(dec.decode(b"f\n"), (2, Decoded::Frame(&b"ef"[..])));
    }

    proptest! {
        /// Holding any frame or error and decoding it again changes nothing in the stream's
        /// frames.
        #[test]
        fn holding_does_not_change_frames(
            lines in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..24), 0..12),
            holds in proptest::collection::vec(any::<bool>(), 0..40),
        ) {
            let mut stream = Vec::new();
            for mut l in lines {
                l.retain(|&b| b != b'\n');
                stream.extend_from_slice(&l);
                stream.push(b'\n');
            }
            let whole = frames_of::<16>(&[&stream]);
            let mut dec = FrameDecoder::<16>::new();
            let mut got = Vec::new();
            let mut rest: &[u8] = &stream;
            // Each pass takes a byte, or gives back a held frame or error, which is held
            // again (taking one of `holds`) or not (ending the hold): the stream is done
            // within this many.
            let mut passes = stream.len() + 2 * holds.len() + 2;
            let mut holds = holds.into_iter();
            while !rest.is_empty() || dec.is_holding() {
                prop_assert!(passes > 0, "the decoder makes no progress");
                passes -= 1;
                let (n, d) = dec.decode(rest);
                let hold = holds.next().unwrap_or(false);
                match d {
                    Decoded::Incomplete => {}
                    Decoded::Frame(f) if !hold => got.push(Ok(f.to_vec())),
                    Decoded::Error(e) if !hold => got.push(Err(e)),
                    _ => dec.hold(),
                }
                rest = &rest[n..];
            }
            prop_assert_eq!(got, whole);
        }

        /// However the stream is cut into reads, the decoder yields the same frames.
        #[test]
        fn chunking_does_not_change_frames(
            lines in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..24), 0..12),
            cuts in proptest::collection::vec(0usize..300, 0..20),
        ) {
            let mut stream = Vec::new();
            for mut l in lines {
                l.retain(|&b| b != b'\n');
                stream.extend_from_slice(&l);
                stream.push(b'\n');
            }
            let whole = frames_of::<16>(&[&stream]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts { chunks.push(&stream[prev..c]); prev = c; }
            chunks.push(&stream[prev..]);
            prop_assert_eq!(frames_of::<16>(&chunks), whole);
        }
    }

    #[derive(serde::Serialize)]
    struct Op<'a> {
        op: &'a str,
    }

    /// `{"op":"ping"}`: 13 bytes of JSON, 14 with the newline.
    const PING: Op<'static> = Op { op: "ping" };

    /// A frame needs room for its newline: a buffer exactly as long as the JSON is too small
    /// (and says it needs one byte more), one byte more is enough.
    #[test]
    fn encode_needs_room_for_the_newline() {
        let json = br#"{"op":"ping"}"#;
        let mut exact = [0u8; 13];
        assert_eq!(
            encode_frame(&PING, &mut exact),
            Err(InsufficientSizeError {
                required: json.len() + 1
            })
        );
        let mut enough = [0u8; 14];
        assert_eq!(encode_frame(&PING, &mut enough), Ok(14));
        assert_eq!(&enough[..13], json);
        assert_eq!(enough[13], b'\n');
    }

    /// The output buffer hands out exactly the frames pushed, in order, however they are
    /// drained; `free` is the capacity minus what is pending; and a push that must compact
    /// (less than `reserve` left at the tail) keeps the pending bytes.
    #[test]
    fn output_buffer_keeps_frames_in_order_through_partial_writes() {
        let mut out = OutputBuffer::<40>::new();
        assert!(out.is_empty());
        assert_eq!(out.free(), 40);
        out.push(&PING, 14).unwrap();
        out.push(&Op { op: "pong" }, 14).unwrap();
        assert_eq!(out.pending(), b"{\"op\":\"ping\"}\n{\"op\":\"pong\"}\n");
        assert_eq!(out.free(), 40 - 28);
        out.advance(5);
        assert_eq!(out.pending(), b":\"ping\"}\n{\"op\":\"pong\"}\n");
        assert_eq!(out.free(), 40 - 23, "written bytes are free again");
        assert!(!out.is_empty());
        // 12 bytes left at the tail, 14 needed: the push compacts first.
        out.push(&Op { op: "gone" }, 14).unwrap();
        assert_eq!(
            out.pending(),
            b":\"ping\"}\n{\"op\":\"pong\"}\n{\"op\":\"gone\"}\n"
        );
        assert_eq!(out.free(), 3);
        // No room even after compacting: an error, and nothing added.
        assert_eq!(
            out.push(&PING, 14),
            Err(InsufficientSizeError { required: 14 })
        );
        assert_eq!(out.free(), 3);
        // Writing more than is pending drains exactly what is pending.
        out.advance(100);
        assert!(out.is_empty());
        assert_eq!(out.pending(), b"");
        assert_eq!(out.free(), 40);
        out.push(&PING, 40).unwrap();
        assert_eq!(out.pending(), b"{\"op\":\"ping\"}\n");
    }

    /// A push that has room at the tail leaves pending bytes where they are (no compaction
    /// needed), and the frames still come out in order.
    #[test]
    fn output_buffer_appends_without_compacting_when_the_tail_has_room() {
        let mut out = OutputBuffer::<64>::new();
        out.push(&PING, 14).unwrap();
        out.advance(13);
        out.push(&Op { op: "pong" }, 14).unwrap();
        assert_eq!(out.pending(), b"\n{\"op\":\"pong\"}\n");
        assert_eq!(out.free(), 64 - 15);
        out.advance(1);
        assert_eq!(out.pending(), b"{\"op\":\"pong\"}\n");
        out.advance(14);
        assert!(out.is_empty());
    }
}
