//! Entry points for the fuzz targets in `fuzz/`. Not part of the public API.

use crate::framing::{Decoded, FrameDecoder};
use crate::message::{Request, Response};
use crate::selftest::Pair;

/// Frame decoder: the first byte picks the capacity (1 to 256), the rest is split into reads
/// at the positions given by the next bytes. Checks that chunking does not change frames.
pub fn frame_decoder(data: &[u8]) {
    let Some((&cap, rest)) = data.split_first() else {
        return;
    };
    let cap = usize::from(cap);
    run_decoder(cap, rest);
}

fn run_decoder(cap: usize, input: &[u8]) {
    // One decoder per capacity class keeps this monomorphic.
    match cap % 4 {
        0 => compare::<1>(input),
        1 => compare::<7>(input),
        2 => compare::<64>(input),
        _ => compare::<512>(input),
    }
}

fn compare<const N: usize>(input: &[u8]) {
    let mut whole = FrameDecoder::<N>::new();
    let mut chunked = FrameDecoder::<N>::new();
    let mut a = input;
    let step = 1 + (input.len() % 13);
    let mut b_pos = 0;
    let mut frames_a = 0u32;
    let mut frames_b = 0u32;
    while !a.is_empty() {
        let (n, d) = whole.decode(a);
        if !matches!(d, Decoded::Incomplete) {
            frames_a += 1;
        }
        a = &a[n..];
    }
    while b_pos < input.len() {
        let end = (b_pos + step).min(input.len());
        let mut chunk = &input[b_pos..end];
        while !chunk.is_empty() {
            let (n, d) = chunked.decode(chunk);
            if !matches!(d, Decoded::Incomplete) {
                frames_b += 1;
            }
            chunk = &chunk[n..];
        }
        b_pos = end;
    }
    assert_eq!(frames_a, frames_b, "chunking changed the number of frames");
}

/// Message parsers, both directions.
pub fn messages(data: &[u8]) {
    let _ = Request::parse(data);
    let _ = Response::parse(data);
}

/// A logged-in server session fed arbitrary bytes: must not panic, must not move money.
pub fn server_session(data: &[u8]) {
    let mut pair = Pair::new(3);
    if pair
        .register_and_login("fuzzer", "fuzzer's password")
        .is_err()
    {
        return;
    }
    let before = pair.ledger.journal().len();
    let mut out = [0u8; 8192];
    let _ = pair.server_receive(data, &mut out);
    assert_eq!(
        pair.ledger.journal().len(),
        before,
        "money moved without a valid MAC"
    );
    assert_eq!(pair.ledger.total(), pair.ledger.minted());
}
