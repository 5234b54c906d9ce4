//! The embassy-net server as a Cortex-M4 board links it (QEMU mps2-an386): embassy-executor's
//! Cortex-M thread executor, embassy-net with [`SESSIONS`] session tasks and the refusal task,
//! the shared [`MemLedger`], the ChaCha20 RNG, and the two things a board's HAL provides: a
//! time driver (SysTick here, at 1 kHz) and a network driver (a stand-in here, like an Ethernet
//! MAC on an unplugged cable, whose frames the optimiser cannot see).
//!
//! It boots, spawns every task, lets them reach `accept`, checks that every session socket is
//! listening, and prints
//!
//! ```text
//! embassy flash=<bytes> ram=<bytes> stack_peak=<bytes> server=<bytes> buffers=<bytes>
//! ```
//!
//! (`server`: the shared [`Server`] with its ledger; `buffers`: the socket buffers.)
//!
//! `ram` is every static: the executor's task storage (each session task's future holds its
//! `ServerSession`), the stack resources, the socket buffers and the server with its ledger.
//! The sizes are the device image's (`firmware-sim/cortex-m`'s `device-alone`), so the two
//! compare: 4 sessions, 1 KiB + 1 KiB socket buffers, `MemLedger<8, 32>`.

#![no_std]
#![no_main]

#[path = "../../../../core/cortex-m-test/src/runtime.rs"]
mod runtime;

use core::cell::{Cell, RefCell};
use core::hint::black_box;
use core::mem::{size_of, size_of_val};
use core::task::{Context, Waker};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use critical_section::Mutex as CsMutex;
use embassy_executor::{Executor, Spawner};
use embassy_net::driver::{Capabilities, HardwareAddress, LinkState};
use embassy_net::tcp::TcpSocket;
use embassy_net::{Config, Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time_queue_utils::Queue;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use runtime::{exit, print, Footprint};
use static_cell::{ConstStaticCell, StaticCell};
use txsock_core::session::ServerConfig;
use txsock_core::{Amount, MemLedger};
use txsock_embassy::{Server, SocketBuffers, DEFAULT_PORT};

/// The name in failure messages.
const IMAGE: &str = "embassy";

/// The device image's sizes.
const SESSIONS: usize = 4;
const SOCKET_RX: usize = 1024;
const SOCKET_TX: usize = 1024;
type BoardLedger = MemLedger<8, 32>;
type BoardServer = Server<NoopRawMutex, BoardLedger, ChaCha20Rng>;
const MTU: usize = 1514;

/// Fixed RNG seed: QEMU's mps2-an386 has no TRNG. Test only.
const SEED: u64 = 0x7853_6f63;

/// mps2-an386's core clock, which SysTick counts.
const CORE_HZ: u32 = 25_000_000;

// --- What a HAL provides: a time driver... ---------------------------------------------------

/// embassy-time's driver on SysTick: a millisecond interrupt advances the clock (in embassy's
/// default 1 MHz ticks) and wakes the timers that are due.
struct SysTickDriver {
    ticks: CsMutex<Cell<u64>>,
    queue: CsMutex<RefCell<Queue>>,
}

impl embassy_time_driver::Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            // The 1 kHz interrupt checks the queue anyway; nothing to arm.
            let _ = self.queue.borrow(cs).borrow_mut().schedule_wake(at, waker);
        })
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: CsMutex::new(Cell::new(0)),
    queue: CsMutex::new(RefCell::new(Queue::new())),
});

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        let now = ticks.get() + embassy_time_driver::TICK_HZ / 1000;
        ticks.set(now);
        DRIVER.queue.borrow(cs).borrow_mut().next_expiration(now);
    });
}

// --- ... and a network driver ----------------------------------------------------------------

/// An Ethernet driver whose received frames the optimiser cannot predict. It receives nothing
/// at run time, and what it is asked to send goes through [`black_box`].
struct Unplugged {
    frame: [u8; MTU],
}

struct Rx<'a>(&'a mut [u8]);
struct Tx<'a>(&'a mut [u8]);

impl embassy_net::driver::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl embassy_net::driver::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.0.len());
        let result = f(&mut self.0[..len]);
        black_box(&self.0[..len]);
        result
    }
}

impl embassy_net::driver::Driver for Unplugged {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _cx: &mut Context) -> Option<(Rx<'_>, Tx<'_>)> {
        // Always 0 at run time, but opaque to the optimiser: the receive path stays linked.
        let len = black_box(0usize).min(MTU);
        if len == 0 {
            return None;
        }
        let (rx, tx) = self.frame.split_at_mut(len);
        Some((Rx(rx), Tx(tx)))
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Tx<'_>> {
        Some(Tx(&mut self.frame))
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet([0x02, 0, 0, 0, 0, 0x02])
    }
}

// --- The board's own lines -------------------------------------------------------------------

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, &'static mut Unplugged>) -> ! {
    runner.run().await
}

#[embassy_executor::task(pool_size = SESSIONS)]
async fn session_task(
    server: &'static BoardServer,
    slot: usize,
    mut socket: TcpSocket<'static>,
) -> ! {
    server.serve(slot, &mut socket, |_| {}).await
}

#[embassy_executor::task]
async fn refusal_task(server: &'static BoardServer, mut socket: TcpSocket<'static>) -> ! {
    server.refuse(&mut socket, |_| {}).await
}

// Zero-initialised statics taken in place (`ConstStaticCell`): no flash for an initialiser and
// no copy on the stack. The server is not all zeros (its RNG state), so it is built once.
static RESOURCES: ConstStaticCell<StackResources<{ SESSIONS + 1 }>> =
    ConstStaticCell::new(StackResources::new());
static SERVER: StaticCell<BoardServer> = StaticCell::new();
static BUFFERS: ConstStaticCell<SocketBuffers<SESSIONS, SOCKET_RX, SOCKET_TX>> =
    ConstStaticCell::new(SocketBuffers::new());
static DRIVER_FRAME: ConstStaticCell<Unplugged> =
    ConstStaticCell::new(Unplugged { frame: [0; MTU] });

#[embassy_executor::task]
async fn main_task(spawner: Spawner) {
    let config = Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(192, 0, 2, 2), 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let device = DRIVER_FRAME.take();
    let (stack, runner) = embassy_net::new(&mut *device, config, RESOURCES.take(), SEED);
    spawner.spawn(net_task(runner).unwrap());

    let server_config = ServerConfig {
        min_iterations: 4096,
        unknown_user_iterations: 4096,
        ..ServerConfig::default()
    };
    let server: &'static BoardServer = SERVER.init(Server::new(
        server_config,
        ChaCha20Rng::seed_from_u64(SEED),
        [0x5e; 32],
        BoardLedger::new(Amount(10_000)),
        DEFAULT_PORT,
    ));
    let (sessions, refusal) = BUFFERS.take().sockets(stack);
    for (slot, socket) in sessions.into_iter().enumerate() {
        spawner.spawn(session_task(server, slot, socket).unwrap());
    }
    spawner.spawn(refusal_task(server, refusal).unwrap());

    // Let every task reach `accept` (and the clock run: the time driver works), then check
    // that nothing happened without a network.
    embassy_time::Timer::after_millis(20).await;
    let stats = server.stats();
    if stats.accepted != 0 || stats.refused != 0 {
        print(format_args!(
            "{IMAGE} FAILED: a connection without a network\n"
        ));
        exit(false)
    }
    let footprint = Footprint::measure();
    print(format_args!(
        "{IMAGE} flash={} ram={} stack_peak={} server={} buffers={}\n",
        footprint.flash,
        footprint.ram,
        footprint.stack_peak,
        size_of_val(server),
        size_of::<SocketBuffers<SESSIONS, SOCKET_RX, SOCKET_TX>>(),
    ));
    exit(true)
}

#[entry]
fn main() -> ! {
    // Cannot fail: taken once, at reset.
    let mut peripherals = cortex_m::Peripherals::take().unwrap();
    let syst = &mut peripherals.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_counter();
    syst.enable_interrupt();

    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    let executor = EXECUTOR.init(Executor::new());
    executor.run(|spawner| spawner.spawn(main_task(spawner).unwrap()))
}
