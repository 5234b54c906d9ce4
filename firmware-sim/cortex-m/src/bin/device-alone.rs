//! The device alone, as a board links it: firmware-sim's device with the sizes of
//! [`board`](txsock_firmware_sim::scenario::board) (smoltcp, the core's server engine, 4
//! sessions, the ledger, the ChaCha20 RNG) and the runtime, but no client, no link simulation and
//! no scenario. It measures the device's own flash and RAM.
//!
//! Its network device is a stand-in whose frames the optimiser cannot see (they go through
//! [`core::hint::black_box`]), so everything a real driver would reach stays linked. It polls the
//! device a few times, checks that the device is idle and listening, and prints
//!
//! ```text
//! device_alone flash=<bytes> ram=<bytes> stack_peak=<bytes>
//! ```
//!
//! `stack_peak` here is an idle device's; the `txsock-device` image measures the device's stack
//! while it serves a client.

#![no_std]
#![no_main]

#[path = "../../../../core/cortex-m-test/src/runtime.rs"]
mod runtime;

use core::hint::black_box;
use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use runtime::{exit, print, Footprint};
use smoltcp::iface::SocketStorage;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::device::DeviceParts;
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

/// The name in failure messages.
const IMAGE: &str = "device_alone";

/// Fixed RNG seed: QEMU's mps2-an386 has no TRNG. Test only.
const SEED: u64 = 0x7853_6f63;

static mut LEDGER: MaybeUninit<BoardLedger> = MaybeUninit::uninit();
static mut BUFFERS: BoardBuffers = BoardBuffers::new();
static mut SOCKET_STORAGE: MaybeUninit<[SocketStorage<'static>; SOCKETS]> = MaybeUninit::uninit();
static mut DEVICE: MaybeUninit<BoardDevice<'static>> = MaybeUninit::uninit();
static mut FRAME: [u8; MTU + 14] = [0; MTU + 14];

/// A network device whose received frames the optimiser cannot predict. It receives nothing at
/// run time (the length is always 0), like an Ethernet MAC on an unplugged cable.
struct Opaque {
    frame: &'static mut [u8; MTU + 14],
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a>(&'a mut [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.0.len());
        let result = f(&mut self.0[..len]);
        black_box(&mut self.0[..len]);
        result
    }
}

impl phy::Device for Opaque {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(
        &mut self,
        _now: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let len = black_box(0usize).min(self.frame.len());
        if len == 0 {
            return None;
        }
        let (rx, tx) = self.frame.split_at_mut(len);
        Some((Rx(rx), Tx(tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(&mut self.frame[..]))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU + 14;
        caps
    }
}

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once and takes each static exactly once here.
    let (ledger, buffers, sockets, device, frame) = unsafe {
        (
            &mut *addr_of_mut!(LEDGER),
            &mut *addr_of_mut!(BUFFERS),
            &mut *addr_of_mut!(SOCKET_STORAGE),
            &mut *addr_of_mut!(DEVICE),
            &mut *addr_of_mut!(FRAME),
        )
    };
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
        ChaCha20Rng::seed_from_u64(SEED),
        &device_config(SEED),
        &mut phy,
        Instant::ZERO,
    );
    let mut now = Instant::ZERO;
    for _ in 0..10 {
        device.poll(now, &mut phy);
        now = now + Duration::from_millis(100);
    }
    if device.open_sessions() != 0 || device.stats().accepted != 0 {
        print(format_args!(
            "{IMAGE} FAILED: an idle device accepted a connection\n"
        ));
        exit(false)
    }
    let footprint = Footprint::measure();
    print(format_args!(
        "device_alone flash={} ram={} stack_peak={}\n",
        footprint.flash, footprint.ram, footprint.stack_peak
    ));
    exit(true)
}
