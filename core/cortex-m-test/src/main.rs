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
//! with failure. A panic or a hard fault also prints a message and exits with failure, so QEMU
//! never hangs on a broken image.
//!
//! The footprint is measured by the image itself:
//! - `flash`: the load image, i.e. vector table, `.text` and `.rodata`, plus the initial values
//!   of `.data` that are stored after them;
//! - `ram`: the statics, i.e. `.data`, `.bss` and `.uninit`;
//! - `stack_peak`: the deepest stack use since reset. cortex-m-rt's `paint-stack` feature fills
//!   the stack region with [`STACK_PAINT_VALUE`] before `main`; the lowest word that no longer
//!   holds it marks the peak.
//!
//! It does not measure heap use: there is no heap.

#![no_std]
#![no_main]

use core::fmt::Write as _;
use core::panic::PanicInfo;
use core::ptr::{self, addr_of};

use cortex_m_rt::{entry, exception, ExceptionFrame, STACK_PAINT_VALUE};
use cortex_m_semihosting::debug::{self, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::hio;

// Symbols defined by cortex-m-rt 0.7's `link.x`. Only their addresses are meaningful; they are
// never read as values (except the painted stack words, through volatile reads of addresses in
// between).
extern "C" {
    /// Start of the vector table, the first byte of the load image (`ORIGIN(FLASH)`).
    static __vector_table: u32;
    /// Load address (in flash) of `.data`'s initial values: the end of `.text` and `.rodata`.
    static __sidata: u32;
    /// Start of `.data` in RAM: the first byte of the statics.
    static __sdata: u32;
    /// End of `.data` in RAM.
    static __edata: u32;
    /// End of `.bss` and `.uninit`: the first byte after the statics.
    static __sheap: u32;
    /// Lowest address the stack may grow to; painting starts here.
    static _stack_end: u32;
    /// Initial stack pointer: the top of the stack.
    static _stack_start: u32;
}

/// What the image measured about itself, in bytes.
struct Footprint {
    flash: usize,
    ram: usize,
    stack_peak: usize,
}

impl Footprint {
    fn measure() -> Self {
        // Only the addresses of the linker symbols are taken, which is safe.
        let vector_table = addr_of!(__vector_table) as usize;
        let sidata = addr_of!(__sidata) as usize;
        let sdata = addr_of!(__sdata) as usize;
        let edata = addr_of!(__edata) as usize;
        let sheap = addr_of!(__sheap) as usize;
        Footprint {
            flash: (sidata - vector_table) + (edata - sdata),
            ram: sheap - sdata,
            stack_peak: stack_peak(),
        }
    }
}

/// Bytes between the top of the stack and the lowest word that lost its paint.
///
/// Runs after the self-test returned, so its own (shallow) frame is above the peak and does not
/// disturb the measurement.
#[inline(never)]
fn stack_peak() -> usize {
    let bottom = addr_of!(_stack_end) as usize;
    let top = addr_of!(_stack_start) as usize;
    let mut addr = bottom;
    while addr < top {
        // SAFETY: `[_stack_end, _stack_start)` is word-aligned RAM reserved for the stack (the
        // linker script asserts the alignment). Words below the stack pointer belong to nobody;
        // a volatile read of them is a plain load on this target.
        let word = unsafe { ptr::read_volatile(addr as *const u32) };
        if word != STACK_PAINT_VALUE {
            break;
        }
        addr += 4;
    }
    top - addr
}

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

/// Writes to the host's stdout through semihosting. Output is best effort: if the host does not
/// take it there is nobody left to tell.
fn print(args: core::fmt::Arguments<'_>) {
    if let Ok(mut out) = hio::hstdout() {
        let _ = out.write_fmt(args);
    }
}

/// Ends the QEMU run with the given status. Semihosting `exit` does not return under QEMU; on
/// a debugger that ignores it the core spins here.
fn exit(success: bool) -> ! {
    debug::exit(if success { EXIT_SUCCESS } else { EXIT_FAILURE });
    loop {
        cortex_m::asm::nop();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    print(format_args!("selftest FAILED: panic: {info}\n"));
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    print(format_args!("selftest FAILED: hard fault: {frame:?}\n"));
    exit(false)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    print(format_args!(
        "selftest FAILED: unexpected exception or interrupt {irqn}\n"
    ));
    exit(false)
}
