//! The runtime alone: what every image of this crate carries besides its own work (vector
//! table, cortex-m-rt start-up, semihosting output and exit, `core::fmt` for the footprint
//! line, the panic and fault handlers).
//!
//! `cargo xtask qemu` subtracts its flash from the `server-engine` image's to get the server
//! engine's own flash. It prints:
//!
//! ```text
//! baseline flash=<bytes> ram=<bytes> stack_peak=<bytes>
//! ```

#![no_std]
#![no_main]

#[path = "../runtime.rs"]
mod runtime;

use cortex_m_rt::entry;
use runtime::{exit, print, Footprint};

/// The name in failure messages.
const IMAGE: &str = "baseline";

#[entry]
fn main() -> ! {
    // Any real image has panic paths, and with them the panic handler and its formatting of
    // `PanicInfo`. Keep them linked here too, behind a condition the optimizer cannot see
    // through, so that they are not counted as part of the engine.
    if core::hint::black_box(false) {
        panic!("unreachable");
    }
    let footprint = Footprint::measure();
    print(format_args!(
        "baseline flash={} ram={} stack_peak={}\n",
        footprint.flash, footprint.ram, footprint.stack_peak
    ));
    exit(true)
}
