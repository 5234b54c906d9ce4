//! Cortex-M4 test image for `txsock-core`, run under QEMU (`-machine mps2-an386`) by
//! `cargo xtask qemu`.
//!
//! It runs [`txsock_core::selftest::run`] on the target and reports over semihosting:
//!
//! ```text
//! selftest ok: checks=<n>
//! flash=<bytes> ram=<bytes> stack_peak=<bytes> server_session=<bytes>
//! ```
//!
//! then exits through semihosting with success, or prints `selftest FAILED: <check>` and exits
//! with failure. The footprint is measured by the image itself (see [`runtime::Footprint`]); it
//! covers the whole image: both sessions, the self-test and its vectors, and the runtime. The
//! `server-engine` image (`src/bin/server-engine.rs`) measures the server engine alone.

#![no_std]
#![no_main]

mod runtime;

use cortex_m_rt::entry;
use runtime::{exit, print, Footprint};

/// The name in failure messages.
const IMAGE: &str = "selftest";

#[entry]
fn main() -> ! {
    match txsock_core::selftest::run() {
        Ok(report) => {
            let footprint = Footprint::measure();
            print(format_args!("selftest ok: checks={}\n", report.checks));
            print(format_args!(
                "flash={} ram={} stack_peak={} server_session={}\n",
                footprint.flash, footprint.ram, footprint.stack_peak, report.server_session_bytes
            ));
            exit(true)
        }
        Err(check) => {
            print(format_args!("selftest FAILED: {check}\n"));
            exit(false)
        }
    }
}
