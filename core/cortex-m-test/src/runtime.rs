//! What every image of this crate shares: output and exit through semihosting, the footprint
//! an image measures about itself, and the panic and fault handlers.
//!
//! Each binary includes this file as a module (`src/main.rs` directly, `src/bin/*.rs` through
//! `#[path]`), so every image carries exactly the same runtime; `baseline` is nothing but this
//! runtime, which is what lets `cargo xtask qemu` subtract it from the `server-engine` image.
//!
//! The including crate root defines `IMAGE`, the name used in failure messages.
//!
//! A panic or a hard fault prints `<IMAGE> FAILED: ...` and exits with failure, so QEMU never
//! hangs on a broken image.

use core::fmt::Write as _;
use core::panic::PanicInfo;
use core::ptr::{self, addr_of};

use cortex_m_rt::{exception, ExceptionFrame, STACK_PAINT_VALUE};
use cortex_m_semihosting::debug::{self, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::hio;

use crate::IMAGE;

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

/// What an image measured about itself, in bytes.
///
/// - `flash`: the load image, i.e. vector table, `.text` and `.rodata`, plus the initial values
///   of `.data` that are stored after them;
/// - `ram`: the statics, i.e. `.data`, `.bss` and `.uninit`;
/// - `stack_peak`: the deepest stack use since reset. cortex-m-rt's `paint-stack` feature fills
///   the stack region with [`STACK_PAINT_VALUE`] before `main`; the lowest word that no longer
///   holds it marks the peak.
///
/// There is no heap, so there is no heap use to measure.
pub struct Footprint {
    pub flash: usize,
    pub ram: usize,
    pub stack_peak: usize,
}

impl Footprint {
    /// Measures the image. Call it after the work, from a frame shallower than the work's.
    pub fn measure() -> Self {
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

/// Writes to the host's stdout through semihosting. Output is best effort: if the host does not
/// take it there is nobody left to tell.
pub fn print(args: core::fmt::Arguments<'_>) {
    if let Ok(mut out) = hio::hstdout() {
        let _ = out.write_fmt(args);
    }
}

/// Ends the QEMU run with the given status. Semihosting `exit` does not return under QEMU; on
/// a debugger that ignores it the core spins here.
pub fn exit(success: bool) -> ! {
    debug::exit(if success { EXIT_SUCCESS } else { EXIT_FAILURE });
    loop {
        cortex_m::asm::nop();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    print(format_args!("{IMAGE} FAILED: panic: {info}\n"));
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    // The registers by hand, not `{frame:?}`: `ExceptionFrame`'s `Debug` pulls in
    // `core::fmt`'s struct builders (~0.9 KB of every image's flash) for this line alone.
    print(format_args!(
        "{IMAGE} FAILED: hard fault: pc={:#010x} lr={:#010x} xpsr={:#010x} r0={:#010x} \
         r1={:#010x} r2={:#010x} r3={:#010x} r12={:#010x}\n",
        frame.pc(),
        frame.lr(),
        frame.xpsr(),
        frame.r0(),
        frame.r1(),
        frame.r2(),
        frame.r3(),
        frame.r12()
    ));
    exit(false)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    print(format_args!(
        "{IMAGE} FAILED: unexpected exception or interrupt {irqn}\n"
    ));
    exit(false)
}
