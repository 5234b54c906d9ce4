//! A logged-in client session with requests outstanding, fed arbitrary server bytes: no
//! panic, progress, and never more verified answers than requests.
//!
//! The logged-in set-up is made once per process and copied for each input.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use txsock_core::fuzzing::{self, ClientHarness};

static TEMPLATE: OnceLock<ClientHarness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let template = TEMPLATE.get_or_init(ClientHarness::new);
    // SAFETY: a bitwise copy of the template is an independent, equal harness. The core is
    // no_std without alloc, so nothing in a harness (sessions, ledger, RNG, keys: fixed
    // arrays and heapless containers) owns memory elsewhere or points into itself; `Drop`
    // only wipes the copy's own key bytes. The template itself is never used but to copy.
    let harness = unsafe { std::ptr::read(template) };
    fuzzing::client_session_on(harness, data);
});
