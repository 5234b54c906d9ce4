//! The frame decoder's public figures, which drivers size and log by: its capacity, the limit
//! in force (clamped to `1..=capacity`), and the bytes of an unfinished frame it holds.
//!
//! These pin what cargo-mutants found unpinned by the core's fast tests (issue 22).

use txsock_core::framing::{Decoded, FrameDecoder, FrameError};

#[test]
fn capacity_and_limit_are_what_the_decoder_enforces() {
    let mut decoder = FrameDecoder::<16>::new();
    assert_eq!(decoder.capacity(), 16);
    assert_eq!(decoder.limit(), 16);
    decoder.set_limit(5);
    assert_eq!(decoder.limit(), 5);
    // The limit in force is the one reported: a 6-byte line is too long, a 5-byte one fits.
    assert_eq!(
        decoder.decode(b"abcdef\n"),
        (6, Decoded::Error(FrameError::TooLong { max: 5 }))
    );
    assert_eq!(decoder.decode(b"\nabcde\n"), (7, Decoded::Frame(b"abcde")));
    decoder.set_limit(0);
    assert_eq!(decoder.limit(), 1);
    decoder.set_limit(1000);
    assert_eq!(decoder.limit(), 16);
    assert_eq!(decoder.capacity(), 16);
}

#[test]
fn buffered_counts_the_bytes_of_an_unfinished_frame() {
    let mut decoder = FrameDecoder::<32>::new();
    assert_eq!(decoder.buffered(), 0);
    assert_eq!(decoder.decode(b"{\"op\""), (5, Decoded::Incomplete));
    assert_eq!(decoder.buffered(), 5);
    assert_eq!(decoder.decode(b":\"pi"), (4, Decoded::Incomplete));
    assert_eq!(decoder.buffered(), 9);
    assert_eq!(
        decoder.decode(b"ng\"}\nxy"),
        (5, Decoded::Frame(b"{\"op\":\"ping\"}"))
    );
    assert_eq!(decoder.decode(b"xy"), (2, Decoded::Incomplete));
    assert_eq!(
        decoder.buffered(),
        2,
        "the frame returned last time is dropped"
    );
}
