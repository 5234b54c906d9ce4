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

// The flash stand-in is the `flash-ledger` image's.
#[allow(dead_code)]
mod opaque;

use core::hint::black_box;
use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::addr_of_mut;

use opaque::Opaque;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use smoltcp::iface::SocketStorage;
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::device::DeviceParts;
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

static mut LEDGER: MaybeUninit<BoardLedger> = MaybeUninit::uninit();
static mut BUFFERS: BoardBuffers = BoardBuffers::new();
static mut SOCKET_STORAGE: MaybeUninit<[SocketStorage<'static>; SOCKETS]> = MaybeUninit::uninit();
static mut DEVICE: MaybeUninit<BoardDevice<'static>> = MaybeUninit::uninit();
static mut FRAME: [u8; MTU + 14] = [0; MTU + 14];

/// The entry point the linker script keeps; everything the device needs is reached from here.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    // SAFETY: `_start` runs once and takes each static exactly once here.
    let (ledger, buffers, sockets, device, frame) = unsafe {
        (
            &mut *addr_of_mut!(LEDGER),
            &mut *addr_of_mut!(BUFFERS),
            &mut *addr_of_mut!(SOCKET_STORAGE),
            &mut *addr_of_mut!(DEVICE),
            &mut *addr_of_mut!(FRAME),
        )
    };
    let seed = black_box(0u64);
    let mut phy = Opaque { frame };
    let ledger = ledger.write(BoardLedger::new(OPENING));
    let sockets = sockets.write([SocketStorage::EMPTY; SOCKETS]);
    let device = BoardDevice::init(
        device,
        DeviceParts {
            sockets,
            buffers,
            ledger,
        },
        ChaCha20Rng::seed_from_u64(seed),
        &device_config(seed),
        &mut phy,
        Instant::ZERO,
    );
    let mut now = Instant::ZERO;
    loop {
        device.poll(now, &mut phy);
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
