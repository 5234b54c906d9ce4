//! The device as `device-size` links it, but with firmware-sim's flash ledger (`FlashLedger`
//! over a NOR flash) instead of `MemLedger`: what a board with persistent money costs on this
//! target. Linked and measured, never run, like `device-size`.

#![no_std]
#![no_main]

use core::hint::black_box;
use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::addr_of_mut;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::alone::{AloneMemory, OpaqueFlash};
use txsock_firmware_sim::flash_ledger::{FlashLedger, NorFlashPages};
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

type Ledger = FlashLedger<NorFlashPages<OpaqueFlash>>;

static mut LEDGER: MaybeUninit<Ledger> = MaybeUninit::uninit();
static mut MEMORY: AloneMemory<Ledger> = AloneMemory::new();

/// The entry point the linker script keeps; everything the device needs is reached from here.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    // SAFETY: `_start` runs once and takes each static exactly once here.
    let (slot, memory) = unsafe { (&mut *addr_of_mut!(LEDGER), &mut *addr_of_mut!(MEMORY)) };
    let seed = black_box(0u64);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let Ok(ledger) = Ledger::open_in(slot, OpaqueFlash, OPENING, &mut rng, Instant::ZERO) else {
        halt()
    };
    let mut config = device_config(seed);
    config.secret = ledger.secret();
    let (device, mut phy) = memory.start(ledger, rng, &config);
    let mut now = Instant::ZERO;
    loop {
        device.poll(now, &mut phy);
        black_box(device.poll_at(now));
        now = now + Duration::from_millis(black_box(100));
    }
}

/// Where a failure ends: this image is never run.
fn halt() -> ! {
    loop {
        black_box(());
    }
}

#[panic_handler]
fn on_panic(_: &PanicInfo<'_>) -> ! {
    halt()
}
