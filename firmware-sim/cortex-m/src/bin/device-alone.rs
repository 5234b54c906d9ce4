//! The device alone, as a board links it: firmware-sim's device with the sizes of
//! [`board`](txsock_firmware_sim::scenario::board) (smoltcp, the core's server engine, 4
//! sessions, the ledger, the ChaCha20 RNG) and the runtime, but no client, no link simulation and
//! no scenario. It measures the device's own flash and RAM.
//!
//! Its network device is a stand-in whose frames the optimiser cannot see
//! ([`alone::Opaque`](txsock_firmware_sim::alone::Opaque)), so everything a real driver would
//! reach stays linked. It polls the device a few times, checks that the device is idle and
//! listening, and prints
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

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use runtime::{exit, print, Footprint};
use txsock_firmware_sim::alone::{poll_idle, AloneMemory};
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

/// The name in failure messages.
const IMAGE: &str = "device_alone";

/// Fixed RNG seed: QEMU's mps2-an386 has no TRNG. Test only.
const SEED: u64 = 0x7853_6f63;

static mut LEDGER: MaybeUninit<BoardLedger> = MaybeUninit::uninit();
static mut MEMORY: AloneMemory<BoardLedger> = AloneMemory::new();

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once and takes each static exactly once here.
    let (ledger, memory) = unsafe { (&mut *addr_of_mut!(LEDGER), &mut *addr_of_mut!(MEMORY)) };
    let ledger = ledger.write(BoardLedger::new(OPENING));
    let (device, mut phy) = memory.start(
        ledger,
        ChaCha20Rng::seed_from_u64(SEED),
        &device_config(SEED),
    );
    if !poll_idle(device, &mut phy, 10) {
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
