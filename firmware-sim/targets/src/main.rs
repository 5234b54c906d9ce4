//! firmware-sim's device, linked for another architecture to measure what it costs there.
//!
//! The same device as firmware-sim/cortex-m's `device-alone` (the sizes of
//! [`board`](txsock_firmware_sim::scenario::board): smoltcp, the core's server engine, 4
//! sessions, `MemLedger<8, 32>`, ChaCha20), with a network device whose frames the optimiser
//! cannot see, so everything a real driver would reach stays linked. There is no runtime: no
//! vector table, no start-up code, no output. The image is linked and measured (`cargo xtask
//! test`, step `targets`, reads its sections), never run: building it proves that the core and
//! the device compile for the target unchanged, and its sections give their linked size.

#![no_std]
#![no_main]

use core::hint::black_box;
use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::addr_of_mut;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::alone::{AloneDevice, AloneMemory, Opaque};
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

static mut LEDGER: MaybeUninit<BoardLedger> = MaybeUninit::uninit();
static mut MEMORY: AloneMemory<BoardLedger> = AloneMemory::new();

/// The entry point the linker script keeps; everything the device needs is reached from here.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    // SAFETY: `_start` runs once and takes each static exactly once here.
    let (ledger, memory) = unsafe { (&mut *addr_of_mut!(LEDGER), &mut *addr_of_mut!(MEMORY)) };
    let seed = black_box(0u64);
    let ledger = ledger.write(BoardLedger::new(OPENING));
    let (device, mut phy) = memory.start(
        ledger,
        ChaCha20Rng::seed_from_u64(seed),
        &device_config(seed),
    );
    serve(device, &mut phy)
}

/// Polls the device for ever at opaque times: everything a serving device runs stays linked.
fn serve(device: &mut AloneDevice<BoardLedger>, phy: &mut Opaque) -> ! {
    let mut now = Instant::ZERO;
    loop {
        device.poll(now, phy);
        black_box(device.poll_at(now));
        now = now + Duration::from_millis(black_box(100));
    }
}

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {
        black_box(());
    }
}
