//! The hand-written request reader reads every frame exactly as serde-json-core, its
//! oracle, does: the same request, or the same error.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| txsock_core::fuzzing::request_parser(data));
