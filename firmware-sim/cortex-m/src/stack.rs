//! The deepest stack one call reaches, measured by painting.
//!
//! cortex-m-rt's `paint-stack` paints the stack once, at reset, which gives the whole run's peak
//! ([`crate::runtime::Footprint`]). To tell the device's stack from the scripted client's, each
//! call is measured on its own: [`measure`] paints a [`WINDOW`] below the current stack pointer
//! with [`STACK_PAINT_VALUE`], runs the call, and finds the lowest word it overwrote. The result
//! is the stack in use at that moment, from the top of the stack (`main`'s frames included).

use core::ptr::{self, addr_of};

use cortex_m_rt::STACK_PAINT_VALUE;

extern "C" {
    /// Initial stack pointer: the top of the stack (cortex-m-rt's `link.x`).
    static _stack_start: u32;
}

/// Bytes painted below the stack pointer before each measured call; a call that reaches the
/// bottom of the window is reported as using all of it (the image then fails).
pub const WINDOW: usize = 16 * 1024;

/// Room left unpainted just below the stack pointer, for [`paint`]'s own frame.
const SLACK: usize = 64;

/// Paints `[sp - SLACK - WINDOW, sp - SLACK)` and returns the window's bottom.
#[inline(never)]
fn paint() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let top = (sp - SLACK) & !3;
    let bottom = top - WINDOW;
    let mut addr = bottom;
    while addr < top {
        // SAFETY: the window lies below the stack pointer, in the stack region reserved by the
        // linker script (4 MiB of RAM on this board, far more than WINDOW + SLACK below any
        // stack pointer this image reaches): memory that belongs to no live frame. Nothing runs
        // concurrently (no interrupts are enabled).
        unsafe { ptr::write_volatile(addr as *mut u32, STACK_PAINT_VALUE) };
        addr += 4;
    }
    bottom
}

/// Runs `f` and returns the deepest stack it reached, in bytes from the top of the stack.
pub fn measure(f: impl FnOnce()) -> usize {
    let bottom = paint();
    f();
    let top = addr_of!(_stack_start) as usize;
    let mut addr = bottom;
    // SAFETY: as in `paint`: words of the stack region below every live frame.
    while addr < top && unsafe { ptr::read_volatile(addr as *const u32) } == STACK_PAINT_VALUE {
        addr += 4;
    }
    if addr == bottom {
        // The call reached the bottom of the window (or beyond).
        return WINDOW.max(top - bottom);
    }
    top - addr
}
