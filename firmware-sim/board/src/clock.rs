//! The board's monotonic millisecond clock, from SysTick.
//!
//! # Why SysTick
//!
//! Every Cortex-M core has it (M0+ to M7: the same code runs on any of them), QEMU models it,
//! and its interrupt also wakes the core from `WFI`, so the idle board sleeps instead of
//! spinning. The alternatives were worse here: the DWT cycle counter is absent on Cortex-M0+
//! and QEMU does not model it; the CMSDK timers and the LAN9118's `FREE_RUN` counter are
//! particular to this board.
//!
//! SysTick is a 24-bit down-counter: at the 25 MHz core clock of mps2-an386 it wraps every
//! 0.67 s, too soon to be read by polling. So it is set to wrap exactly once per millisecond
//! and its exception counts milliseconds in a 32-bit counter ([`TICKS`], written only by the
//! handler: a load and a store, no read-modify-write atomics, so this also builds for
//! thumbv6m). [`Clock::now`] extends that counter to 64 bits: it adds the wrapping difference
//! since its last call, which is right as long as it is called at least once every 2^32 ms
//! (49.7 days); the board's loop calls it every millisecond or so.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use txsock_core::Instant;

/// The core clock of mps2-an386 (and of the FPGA images QEMU models): 25 MHz.
pub const CORE_HZ: u32 = 25_000_000;

/// Milliseconds since [`start`], wrapping; written only by the SysTick exception.
static TICKS: AtomicU32 = AtomicU32::new(0);

/// Starts SysTick: one exception per millisecond from the core clock.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// The SysTick counter's current value (counts down from the reload value): the fine part of
/// the time, used as one input of the boot's RNG seed.
pub fn fine() -> u32 {
    SYST::get_current()
}

#[exception]
fn SysTick() {
    // The only writer: no update is lost between the load and the store.
    TICKS.store(
        TICKS.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// A 64-bit millisecond clock extended from [`TICKS`]: see the [module documentation](self).
pub struct Clock {
    last: u32,
    millis: u64,
}

impl Clock {
    /// A clock reading 0 now.
    pub fn new() -> Clock {
        Clock {
            last: TICKS.load(Ordering::Relaxed),
            millis: 0,
        }
    }

    /// Now. Never goes backwards.
    pub fn now(&mut self) -> Instant {
        let ticks = TICKS.load(Ordering::Relaxed);
        self.millis += u64::from(ticks.wrapping_sub(self.last));
        self.last = ticks;
        Instant::from_millis(self.millis)
    }
}
