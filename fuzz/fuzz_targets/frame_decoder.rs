//! Frame decoder: byte 0 sets the frame limit, byte 1 the read sizes; chunking must not change
//! the frames or errors.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| txsock_core::fuzzing::frame_decoder(data));
