//! Request and response parsers on arbitrary frames: no panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| txsock_core::fuzzing::messages(data));
