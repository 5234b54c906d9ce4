//! The server's response encoder writes exactly what serde-json-core writes, for every
//! response frame and any strings, numbers and buffer sizes; so does the client's transfer
//! writer, for every transfer it can write.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| txsock_core::fuzzing::response_encoder(data));
