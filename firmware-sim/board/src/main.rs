//! The txsock device on a board: QEMU's `mps2-an386` (Cortex-M4, 25 MHz) with its SMSC LAN9118
//! Ethernet controller.
//!
//! It runs firmware-sim's [`Device`](txsock_firmware_sim::device::Device) (the same code as
//! the simulator, the TAP bridge and the other images) over the [`lan9118`] driver, with its
//! clock from SysTick ([`clock`]), its nonce RNG seeded at boot from the provisioned seed, the
//! boot count and free-running counters ([`provision`]: QEMU has no TRNG), and its flash in a
//! host file reached through semihosting ([`flash`]). `cargo xtask board` builds and boots it
//! with QEMU's user-mode network: the device is 10.0.2.15, and QEMU forwards a loopback port of
//! the host to its port 11002.
//!
//! It prints (semihosting stdout)
//!
//! ```text
//! board listening on 10.0.2.15:11002 (LAN9118 ID_REV 0x01180001, mac 02:74:78:73:00:01, link up, boot 3)
//! board footprint flash=<bytes> ram=<bytes> stack_peak=<bytes> device_ram=<bytes>
//! ```
//!
//! then one line per registration, login and refusal, and the footprint line again whenever
//! the peak stack grew. It serves until QEMU is stopped. A boot that cannot start (flash not
//! provisioned, no LAN9118) prints `board FAILED: <why>` and exits with failure.
//!
//! The ledger is firmware-sim's [`FlashLedger`] on the flash file's ledger region: accounts,
//! balances, the outcome of every transfer id and the device secret survive reboots and power
//! cuts (QEMU killed with SIGKILL).

#![no_std]
#![no_main]

#[path = "../../../core/cortex-m-test/src/runtime.rs"]
mod runtime;

mod clock;
mod flash;
mod lan9118;
mod mmio;
mod provision;

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use runtime::{exit, print, Footprint};
use smoltcp::iface::SocketStorage;
use txsock_core::session::{ServerConfig, ServerEvent};
use txsock_core::{Amount, Instant};
use txsock_firmware_sim::device::{
    Device, DeviceConfig, DeviceEvent, DeviceParts, SocketBuffers, DEFAULT_PORT,
};
use txsock_firmware_sim::flash_ledger::{FlashLedger, NorFlashPages};
use txsock_firmware_sim::scenario::board::{RX, SESSIONS, SOCKETS, TX};
use txsock_firmware_sim::scenario::ITERATIONS;

use crate::clock::Clock;
use crate::flash::Flash;
use crate::lan9118::Lan9118;
use crate::mmio::Block;
use crate::provision::{
    BOOT_COUNTER_BASE, FLASH_FILE, LEDGER_BASE, LEDGER_SECTORS, PROVISIONING_BASE,
};

/// The name in failure messages (used by the runtime).
const IMAGE: &str = "board";

/// The device's address on QEMU's user-mode network (its default guest address).
const ADDRESS: [u8; 4] = [10, 0, 2, 15];
/// That network's prefix length.
const PREFIX_LEN: u8 = 24;
/// The device's Ethernet address (locally administered, unicast).
const MAC: [u8; 6] = [0x02, 0x74, 0x78, 0x73, 0x00, 0x01];
/// Opening balance of a registered account: 100.00.
const OPENING: Amount = Amount(10_000);

/// How often the loop checks whether the peak stack grew (the check scans the stack region).
const FOOTPRINT_EVERY_MS: u64 = 2_000;

type BoardLedger = FlashLedger<NorFlashPages<Flash>>;
type BoardBuffers = SocketBuffers<SESSIONS, RX, TX>;
type BoardDevice<'a> = Device<'a, BoardLedger, ChaCha20Rng, SESSIONS, SOCKETS>;

// The board's memory, all zero-initialised (.bss: no flash) and written in place at boot.
static mut LEDGER: MaybeUninit<BoardLedger> = MaybeUninit::uninit();
static mut BUFFERS: BoardBuffers = BoardBuffers::new();
static mut SOCKET_STORAGE: MaybeUninit<[SocketStorage<'static>; SOCKETS]> = MaybeUninit::uninit();
static mut DEVICE: MaybeUninit<BoardDevice<'static>> = MaybeUninit::uninit();
static mut FRAMES: lan9118::Buffers = lan9118::Buffers::new();

/// Prints `board FAILED: <what>: <error>` and exits with failure.
fn fail(what: &str, error: &dyn core::fmt::Display) -> ! {
    print(format_args!("{IMAGE} FAILED: {what}: {error}\n"));
    exit(false)
}

#[entry]
fn main() -> ! {
    let (device, mut eth, mut clock, device_ram) = start();
    serve(device, &mut eth, &mut clock, device_ram)
}

/// Boots the board: clock, provisioning, boot counter, LAN9118, ledger, device. Its own frame,
/// not inlined: its locals (the configuration, the RNG before it moves into the device) are
/// gone before the device serves, and the serving stack starts shallow.
#[inline(never)]
fn start() -> (
    &'static mut BoardDevice<'static>,
    Lan9118<'static>,
    Clock,
    usize,
) {
    // `take` succeeds: this is its first call.
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        fail("start", &"core peripherals already taken")
    };
    clock::start(peripherals.SYST);
    let mut clock = Clock::new();

    // SAFETY: `main` runs once and takes each static exactly once here.
    let (ledger, buffers, sockets, device, frames) = unsafe {
        (
            &mut *addr_of_mut!(LEDGER),
            &mut *addr_of_mut!(BUFFERS),
            &mut *addr_of_mut!(SOCKET_STORAGE),
            &mut *addr_of_mut!(DEVICE),
            &mut *addr_of_mut!(FRAMES),
        )
    };

    let record = Flash::open(FLASH_FILE, PROVISIONING_BASE, flash::SECTOR as u32)
        .map_err(provision::ProvisionError::from)
        .and_then(|mut region| provision::read_record(&mut region))
        .unwrap_or_else(|error| fail("provisioning", &error));
    let boot = Flash::open(FLASH_FILE, BOOT_COUNTER_BASE, flash::SECTOR as u32)
        .and_then(|mut region| provision::next_boot(&mut region))
        .unwrap_or_else(|error| fail("boot counter", &error));
    let ledger_flash = Flash::open(
        FLASH_FILE,
        LEDGER_BASE,
        LEDGER_SECTORS * flash::SECTOR as u32,
    )
    .unwrap_or_else(|error| fail("ledger flash", &error));

    // SAFETY: 0x4020_0000..+0x100 is the LAN9118's register window on mps2-an386 (32-bit
    // accesses), and this is the only `Block` over it.
    let registers = unsafe { Block::new(lan9118::MPS2_BASE, lan9118::WINDOW) };
    let mut eth =
        Lan9118::init(registers, frames, MAC).unwrap_or_else(|error| fail("LAN9118", &error));

    let seed = provision::boot_seed(&record, boot, [clock::fine(), eth.free_run()]);
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut config = DeviceConfig {
        mac: MAC,
        address: ADDRESS,
        prefix_len: PREFIX_LEN,
        port: DEFAULT_PORT,
        // A test board: the clients' PBKDF2 may be as low as the scenario's so that `txsock
        // stress` (4,096 iterations by default) can log in; production keeps the default.
        server: ServerConfig {
            min_iterations: ITERATIONS,
            unknown_user_iterations: ITERATIONS,
            ..ServerConfig::DEFAULT
        },
        // The ledger's (provisioned at its first boot, kept with the accounts): set below.
        secret: [0; 32],
        net_seed: rng.next_u64(),
    };

    // Opened in its static: the ledger is a few KiB, never moved through the stack.
    let ledger = BoardLedger::open_in(ledger, ledger_flash, OPENING, &mut rng, clock.now())
        .unwrap_or_else(|error| {
            fail(
                "ledger (`cargo xtask board --fresh` starts a new board)",
                &error,
            )
        });
    config.secret = ledger.secret();
    let sockets = sockets.write([SocketStorage::EMPTY; SOCKETS]);
    let device = BoardDevice::init(
        device,
        DeviceParts {
            sockets,
            buffers,
            ledger,
        },
        rng,
        &config,
        &mut eth,
        clock.now(),
    );
    let budget = device.memory_budget::<RX, TX>();
    let mac = eth
        .mac_address()
        .unwrap_or_else(|error| fail("LAN9118", &error));
    let [a, b, c, d] = ADDRESS;
    print(format_args!(
        "{IMAGE} listening on {a}.{b}.{c}.{d}:{DEFAULT_PORT} (LAN9118 ID_REV {:#010x}, mac \
         {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, link {}, boot {boot}, ledger FlashLedger on \
         {} KiB of flash)\n",
        eth.id_rev(),
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5],
        if eth.link_up() { "up" } else { "down" },
        LEDGER_SECTORS as usize * flash::SECTOR / 1024,
    ));
    let device_ram = budget.total() + size_of_frames();
    (device, eth, clock, device_ram)
}

/// Serves until QEMU stops: polls the device, reports the footprint when the peak stack grew,
/// sleeps until the next tick when nothing is due.
fn serve(
    device: &mut BoardDevice<'static>,
    eth: &mut Lan9118<'static>,
    clock: &mut Clock,
    device_ram: usize,
) -> ! {
    let mut stack_peak = report_footprint(device_ram, eth, 0);
    let mut next_footprint = Instant::ZERO;

    loop {
        let now = clock.now();
        device.poll_with(now, eth, log);
        if now >= next_footprint {
            stack_peak = report_footprint(device_ram, eth, stack_peak);
            next_footprint = now + txsock_core::Duration::from_millis(FOOTPRINT_EVERY_MS);
        }
        let due = device.poll_at(now).is_some_and(|at| at <= now);
        if !due && !eth.frame_waiting() {
            // Until the next SysTick (1 ms): a frame arriving meanwhile waits in the FIFO.
            cortex_m::asm::wfi();
        }
    }
}

/// The driver's frame buffers: RAM the board adds to the device's own (`device_ram` counts both).
fn size_of_frames() -> usize {
    core::mem::size_of::<lan9118::Buffers>()
}

/// Prints the footprint line (and the driver's frame counters) if the peak stack grew beyond
/// `last` (or at the first call), and returns the peak.
fn report_footprint(device_ram: usize, eth: &Lan9118<'_>, last: usize) -> usize {
    let footprint = Footprint::measure();
    if last == 0 || footprint.stack_peak > last {
        let net = eth.stats();
        print(format_args!(
            "{IMAGE} footprint flash={} ram={} stack_peak={} device_ram={device_ram}\n\
             {IMAGE} frames rx={} rx_dropped={} tx={} tx_errors={}\n",
            footprint.flash,
            footprint.ram,
            footprint.stack_peak,
            net.rx_frames,
            net.rx_dropped,
            net.tx_frames,
            net.tx_errors
        ));
    }
    footprint.stack_peak
}

/// One line for the events worth seeing on the console.
fn log(event: DeviceEvent<'_>) {
    match event {
        DeviceEvent::Refused { .. } => print(format_args!("{IMAGE}: refused a client: busy\n")),
        DeviceEvent::Session { slot, event } => match event {
            ServerEvent::Registered { user } => print(format_args!(
                "{IMAGE}: session {slot}: registered {}\n",
                user.as_str()
            )),
            ServerEvent::LoggedIn { user } => print(format_args!(
                "{IMAGE}: session {slot}: {} logged in\n",
                user.as_str()
            )),
            ServerEvent::LoginFailed { .. } => {
                print(format_args!("{IMAGE}: session {slot}: login failed\n"))
            }
            ServerEvent::Rejected { code, .. } => print(format_args!(
                "{IMAGE}: session {slot}: rejected a frame: {}\n",
                code.name()
            )),
            _ => {}
        },
        _ => {}
    }
}
