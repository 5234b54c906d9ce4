//! Cortex-M4 image of the txsock device, run under QEMU (`-machine mps2-an386`) by
//! `cargo xtask qemu`.
//!
//! The device is firmware-sim's [`Device`](txsock_firmware_sim::device::Device), built without
//! `std` with the sizes of [`board`]: 4 sessions, 1 KiB + 1 KiB of socket buffers each, an
//! 8-account, 32-entry [`MemLedger`](txsock_core::MemLedger), a ChaCha20 nonce RNG. A scripted
//! client (a core `ClientSession` on its own smoltcp interface) reaches it over an in-memory
//! link with 5% loss and 10% reordering, in simulated time, and runs firmware-sim's
//! [`Scenario`]: registrations, a login, five pipelined transfers, a replay, a tamper attempt,
//! a genuine transfer, a balance and a logout, each checked against the device's ledger.
//!
//! Everything lives in zero-initialised statics built in place (no `.data` initialisers, no
//! large temporaries on the stack). It prints over semihosting:
//!
//! ```text
//! device ok: transfers=<n> checks=<n> simulated_ms=<n> frames=<n> lost=<n> retransmissions=<n>
//! device rng: ChaCha20 with a fixed seed (mps2-an386 has no TRNG; test only)
//! device memory: socket_buffers=<bytes> socket_storage=<bytes> device=<bytes> (sessions=4x<bytes>) ledger=<bytes>
//! device flash=<bytes> ram=<bytes> stack_peak=<bytes> device_ram=<bytes> device_stack_peak=<bytes> client_stack_peak=<bytes>
//! ```
//!
//! and exits with success; on any failure it prints `device FAILED: <step>: <what>` and exits
//! with failure. `flash`, `ram` and `stack_peak` are the whole image's (the client and the link
//! are test equipment, not part of the device); `device_ram` is the device's statics alone and
//! `device_stack_peak` the deepest stack any device poll reached (see [`stack`]). The
//! `device-alone` image measures the device's flash without the client.
//!
//! The RNG seed is fixed: QEMU's mps2-an386 has no TRNG. A board seeds the RNG from its TRNG.

#![no_std]
#![no_main]

#[path = "../../../core/cortex-m-test/src/runtime.rs"]
mod runtime;
mod stack;

use core::mem::{size_of, MaybeUninit};
use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use runtime::{exit, print, Footprint};
use smoltcp::iface::SocketStorage;
use txsock_core::{Duration, Instant};
use txsock_firmware_sim::client::{ClientNet, SimClock};
use txsock_firmware_sim::device::DeviceParts;
use txsock_firmware_sim::link::Side;
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::{self, Part, Scenario, OPENING};

/// The name in failure messages.
const IMAGE: &str = "device";

/// Seed of the device's RNG, smoltcp, the link's faults and the client: fixed, because QEMU's
/// mps2-an386 has no TRNG. Test only.
const SEED: u64 = 0x7853_6f63;

/// Simulated time the scenario may take.
const LIMIT: Duration = Duration::from_secs(600);

// The device's memory. `MaybeUninit` statics and all-zero buffers land in `.bss`: no flash.
static mut LEDGER: MaybeUninit<BoardLedger> = MaybeUninit::uninit();
static mut BUFFERS: BoardBuffers = BoardBuffers::new();
static mut SOCKET_STORAGE: MaybeUninit<[SocketStorage<'static>; SOCKETS]> = MaybeUninit::uninit();
static mut DEVICE: MaybeUninit<BoardDevice<'static>> = MaybeUninit::uninit();

// Test equipment: the link and the scripted client.
static mut LINK: MaybeUninit<BoardLink> = MaybeUninit::uninit();
static mut CLIENT_SOCKET_STORAGE: MaybeUninit<[SocketStorage<'static>; 1]> = MaybeUninit::uninit();
static mut CLIENT_BUFFERS: ClientBuffers = ClientBuffers::new();
static mut SCENARIO: MaybeUninit<Scenario> = MaybeUninit::uninit();
static mut NET: MaybeUninit<ClientNet<'static, 1>> = MaybeUninit::uninit();

/// Bytes of the device's statics.
const DEVICE_RAM: usize = size_of::<BoardLedger>()
    + size_of::<BoardBuffers>()
    + size_of::<[SocketStorage<'static>; SOCKETS]>()
    + size_of::<BoardDevice<'static>>();

/// Everything the run uses, in statics.
struct Parts {
    device: &'static mut BoardDevice<'static>,
    net: &'static mut ClientNet<'static, 1>,
    link: &'static mut BoardLink,
    script: &'static mut Scenario,
}

/// Builds the device and the test equipment in their statics. Out of line, so that its
/// temporaries are gone from the stack before the run.
#[inline(never)]
fn setup() -> Parts {
    // SAFETY: `setup` runs once (from `main`) and takes each static exactly once, so these are
    // the only references to them for the rest of the program.
    let (ledger, buffers, sockets, device, link, client_sockets, client_buffers, net, script) = unsafe {
        (
            &mut *addr_of_mut!(LEDGER),
            &mut *addr_of_mut!(BUFFERS),
            &mut *addr_of_mut!(SOCKET_STORAGE),
            &mut *addr_of_mut!(DEVICE),
            &mut *addr_of_mut!(LINK),
            &mut *addr_of_mut!(CLIENT_SOCKET_STORAGE),
            &mut *addr_of_mut!(CLIENT_BUFFERS),
            &mut *addr_of_mut!(NET),
            &mut *addr_of_mut!(SCENARIO),
        )
    };
    let link = BoardLink::init(link, link_config(SEED));
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
        &mut link.end(Side::A),
        Instant::ZERO,
    );
    let client_sockets = client_sockets.write([SocketStorage::EMPTY; 1]);
    let net = net.write(ClientNet::new(
        client_sockets,
        client_buffers,
        &client_config(SEED),
        &mut link.end(Side::B),
        Instant::ZERO,
    ));
    let script = Scenario::init(script, SEED);
    Parts {
        device,
        net,
        link,
        script,
    }
}

#[entry]
fn main() -> ! {
    let Parts {
        device,
        net,
        link,
        script,
    } = setup();
    let budget = device.memory_budget::<RX, TX>();
    let mut clock = SimClock::new(Instant::ZERO);

    // Deepest stack so far (set-up), before the per-part measurements repaint the stack.
    let setup_peak = Footprint::measure().stack_peak;
    let (mut device_peak, mut client_peak) = (0, 0);
    let result = scenario::run(
        device,
        net,
        link,
        script,
        &mut clock,
        LIMIT,
        |part, step| {
            let used = stack::measure(|| step());
            let peak = match part {
                Part::Device => &mut device_peak,
                Part::Client => &mut client_peak,
            };
            *peak = (*peak).max(used);
        },
    );
    match result {
        Ok(report) => {
            let footprint = Footprint::measure();
            let stats = link.stats();
            print(format_args!(
                "device ok: transfers={} checks={} simulated_ms={} frames={} lost={} \
                 retransmissions={}\n",
                report.transfers,
                report.checks,
                report.simulated.millis(),
                stats.sent,
                stats.lost,
                stats.retransmissions
            ));
            print(format_args!(
                "device rng: ChaCha20 with a fixed seed (mps2-an386 has no TRNG; test only)\n"
            ));
            print(format_args!(
                "device memory: socket_buffers={} socket_storage={} device={} (sessions={}x{}) \
                 ledger={}\n",
                budget.socket_buffers,
                budget.socket_storage,
                budget.device,
                budget.sessions,
                budget.session_bytes,
                budget.ledger
            ));
            let stack_peak = footprint
                .stack_peak
                .max(setup_peak)
                .max(device_peak)
                .max(client_peak);
            print(format_args!(
                "device flash={} ram={} stack_peak={stack_peak} device_ram={DEVICE_RAM} \
                 device_stack_peak={device_peak} client_stack_peak={client_peak} \
                 setup_stack_peak={setup_peak}\n",
                footprint.flash, footprint.ram
            ));
            if device_peak >= stack::WINDOW || client_peak >= stack::WINDOW {
                print(format_args!(
                    "{IMAGE} FAILED: stack use reached the measurement window ({} bytes)\n",
                    stack::WINDOW
                ));
                exit(false)
            }
            exit(true)
        }
        Err(what) => {
            print(format_args!(
                "{IMAGE} FAILED: {}: {what}\n",
                script.step_name()
            ));
            exit(false)
        }
    }
}
