//! The device as `device-size` links it, but with firmware-sim's flash ledger (`FlashLedger`
//! over a NOR flash) instead of `MemLedger`: what a board with persistent money costs on this
//! target. Linked and measured, never run, like `device-size`.

#![no_std]
#![no_main]

#[path = "../opaque.rs"]
mod opaque;

use core::hint::black_box;
use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::addr_of_mut;

use opaque::{Opaque, OpaqueFlash};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use smoltcp::iface::SocketStorage;
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::device::{Device, DeviceParts};
use txsock_firmware_sim::flash_ledger::{FlashLedger, NorFlashPages};
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

type Ledger = FlashLedger<NorFlashPages<OpaqueFlash>>;
type FlashDevice<'a> = Device<'a, Ledger, ChaCha20Rng, SESSIONS, SOCKETS>;

static mut LEDGER: MaybeUninit<Ledger> = MaybeUninit::uninit();
static mut BUFFERS: BoardBuffers = BoardBuffers::new();
static mut SOCKET_STORAGE: MaybeUninit<[SocketStorage<'static>; SOCKETS]> = MaybeUninit::uninit();
static mut DEVICE: MaybeUninit<FlashDevice<'static>> = MaybeUninit::uninit();
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
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut phy = Opaque { frame };
    let Ok(opened) = Ledger::open(OpaqueFlash, OPENING, &mut rng, Instant::ZERO) else {
        halt()
    };
    let ledger = ledger.write(opened);
    let mut config = device_config(seed);
    config.secret = ledger.secret();
    let sockets = sockets.write([SocketStorage::EMPTY; SOCKETS]);
    let device = FlashDevice::init(
        device,
        DeviceParts {
            sockets,
            buffers,
            ledger,
        },
        rng,
        &config,
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
