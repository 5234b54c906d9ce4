//! What SHA-256 costs the server on a Cortex-M4, with and without the core's `compact-sha256`
//! feature: guest instructions per SHA-256 block, per HMAC, and the server's work per login and
//! per transfer frame. Not part of `cargo xtask qemu` (it needs QEMU's `-icount`); built only
//! with this crate's `sha-cost` feature:
//!
//! ```text
//! cargo build --release --target thumbv7em-none-eabihf --bin sha-cost --features sha-cost
//! cargo build ... --no-default-features --features sha-cost      # without compact-sha256
//! qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -icount shift=0 \
//!     -semihosting-config enable=on,target=native -kernel .../sha-cost > out.txt
//! ```
//!
//! (with Debian's toolchain, as `cargo xtask qemu` prints it). It prints one line:
//!
//! ```text
//! sha_cost compact_sha256=<bool> insns_per_tick=<n> sha256_block=<insns> hmac_100=<insns> login=<insns> login_rng=<insns> nonces=<insns> nonces_rng=<insns> transfer=<insns> flash=<bytes> ram=<bytes> stack_peak=<bytes>
//! ```
//!
//! How it counts: with `-icount shift=0` QEMU advances its virtual clock by exactly 1 ns per
//! guest instruction, and SysTick (processor clock, 25 MHz on mps2-an386) counts that clock, so
//! one tick is 40 instructions; the image checks this on 10,000 `nop`s (`insns_per_tick`: 100 calls of a
//! function of 100 `nop`s, less 100 calls of the same function without them). QEMU has no cycle counter (DWT's `CYCCNT` is not emulated) and is not
//! cycle-accurate: these are instructions, not cycles. A Cortex-M4 spends one cycle on most
//! instructions but two or more on loads, stores and taken branches, plus its flash's wait
//! states; the rolled loop of `compact-sha256` reads its round constants from flash, the
//! unrolled code has them as immediates.
//!
//! - `sha256_block`: one `crypto::sha256` of 54 or 55 bytes (one block, padding included), the
//!   mean of 100;
//! - `hmac_100`: one `crypto::hmac_sha256` of 100 bytes under a 32-byte key (4 blocks), the
//!   mean of 100;
//! - `login`: the server's work for one login (the `login` request and the client's proof,
//!   SCRAM verified), without the client's (PBKDF2 is the client's), the mean of 8 logins;
//! - `nonces`: the server's work to issue a batch of 8 transfer nonces (the most a request
//!   may ask for), the mean of 2;
//! - `transfer`: the server's work for one transfer frame (parse, MAC check, ledger, receipt
//!   and its MAC), the mean of 16;
//! - `*_rng`: the part of the line before it spent in the test RNG ([`TestRng`], a SHA-256
//!   counter generator: a device uses a ChaCha RNG seeded from its TRNG instead, whose cost
//!   does not depend on `compact-sha256`).

#![no_std]
#![no_main]

#[path = "../runtime.rs"]
mod runtime;

use core::cell::Cell;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::entry;
use rand_core::{CryptoRng, RngCore};
use runtime::{exit, print, Footprint};
use txsock_core::crypto::{hmac_sha256, sha256};
use txsock_core::lockout::PeerAddr;
use txsock_core::message::MAX_NONCE_BATCH;
use txsock_core::selftest::{TestLedger, TestRng, TEST_ITERATIONS};
use txsock_core::session::client::{ClientConfig, ClientEvent};
use txsock_core::session::{ServerConfig, ServerShared};
use txsock_core::{Amount, ClientSession, Duration, Instant, MemLedger, ServerSession};

/// The name in failure messages.
const IMAGE: &str = "sha_cost";

/// SysTick's 24-bit counter.
const WRAP: u32 = 1 << 24;

/// SysTick read as a clock of 40-instruction ticks (under `-icount shift=0`).
struct Clock;

impl Clock {
    fn start(mut syst: SYST) -> Clock {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(WRAP - 1);
        syst.clear_current();
        syst.enable_counter();
        Clock
    }

    /// The counter now (it counts down).
    fn now(&self) -> u32 {
        SYST::get_current()
    }

    /// Ticks since `start` (one wrap at most: 671 million instructions).
    fn since(&self, start: u32) -> u32 {
        start.wrapping_sub(self.now()) % WRAP
    }
}

/// Ticks spent inside the RNG, counted by [`TimedRng`].
struct RngTicks(Cell<u32>);

// SAFETY: single core, no interrupts use it.
unsafe impl Sync for RngTicks {}

static RNG_TICKS: RngTicks = RngTicks(Cell::new(0));

/// The self-test's RNG, with the time spent in it counted, so that the server's own work can
/// be told apart from the test RNG's (see the module documentation).
struct TimedRng(TestRng);

impl RngCore for TimedRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let start = SYST::get_current();
        self.0.fill_bytes(dest);
        let spent = start.wrapping_sub(SYST::get_current()) % WRAP;
        RNG_TICKS.0.set(RNG_TICKS.0.get() + spent);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

// The self-test RNG's claim, carried over: a test image only.
impl CryptoRng for TimedRng {}

/// A client and a server session in memory; only the server's work is timed.
struct Pair {
    shared: ServerShared<TimedRng, 8>,
    server: ServerSession,
    ledger: TestLedger,
    client: ClientSession,
    client_rng: TestRng,
    now: Instant,
    /// Server ticks so far, and the RNG's share of them.
    server_ticks: u32,
    rng_ticks: u32,
}

impl Pair {
    /// Moves the client's output to the server (timed) and the server's answer back; returns
    /// the client's next event.
    fn step(&mut self, clock: &Clock) -> Option<ClientEvent> {
        if let Some(event) = self.client.poll_event() {
            return Some(event);
        }
        let mut request = [0u8; 1024];
        let pending = self.client.poll_transmit();
        let n = pending.len().min(request.len());
        request[..n].copy_from_slice(&pending[..n]);
        self.client.advance_transmit(n);
        let mut out = [0u8; 2048];
        let mut written = 0;
        let rng_before = RNG_TICKS.0.get();
        let start = clock.now();
        let transmit = |pending: &[u8]| {
            let n = pending.len().min(out.len() - written);
            out[written..written + n].copy_from_slice(&pending[..n]);
            written += n;
            Ok::<_, core::convert::Infallible>(n)
        };
        let Ok(_) = self.server.drive(
            &mut self.shared,
            &mut self.ledger,
            self.now,
            &request[..n],
            transmit,
            |_| {},
        );
        self.server_ticks += clock.since(start);
        self.rng_ticks += RNG_TICKS.0.get() - rng_before;
        self.client.handle_input(&out[..written]);
        self.client.poll_event()
    }

    fn reset_counts(&mut self) {
        self.server_ticks = 0;
        self.rng_ticks = 0;
    }

    fn login(&mut self, clock: &Clock, user: &str, password: &str) -> Result<(), &'static str> {
        self.client
            .login(&mut self.client_rng, user)
            .map_err(|_| "login request")?;
        if !matches!(self.step(clock), Some(ClientEvent::Challenge { .. })) {
            return Err("challenge");
        }
        self.client
            .answer_with_password(password)
            .map_err(|_| "answer")?;
        if self.step(clock) != Some(ClientEvent::LoggedIn) {
            return Err("logged in");
        }
        Ok(())
    }
}

fn client() -> ClientSession {
    ClientSession::new(ClientConfig {
        min_iterations: TEST_ITERATIONS,
        ..ClientConfig::default()
    })
}

/// 100 instructions, and the call's few.
#[inline(never)]
fn hundred_nops() {
    // SAFETY: `nop`s only: no memory, no registers.
    unsafe { core::arch::asm!(".rept 100", "nop", ".endr", options(nomem, nostack)) };
}

/// The call's few instructions alone (the same as [`hundred_nops`]' but for the `nop`s).
#[inline(never)]
fn no_nops() {
    // SAFETY: no instructions: keeps the function from being merged away.
    unsafe { core::arch::asm!("", options(nomem, nostack)) };
}

/// `(instructions per tick, SHA-256 block, HMAC of 100 bytes)`.
fn primitives(clock: &Clock) -> (u32, u32, u32) {
    let start = clock.now();
    for _ in 0..100 {
        hundred_nops();
    }
    let with_nops = clock.since(start);
    let start = clock.now();
    for _ in 0..100 {
        no_nops();
    }
    let nop_ticks = with_nops.saturating_sub(clock.since(start)).max(1);
    let per_tick = (10_000 + nop_ticks / 2) / nop_ticks;
    let data = [0x5a_u8; 100];
    let start = clock.now();
    for i in 0..100u8 {
        core::hint::black_box(sha256(core::hint::black_box(
            &data[..55 - usize::from(i & 1)],
        )));
    }
    let block = clock.since(start) * per_tick / 100;
    let key = [7u8; 32];
    let start = clock.now();
    for _ in 0..100 {
        core::hint::black_box(hmac_sha256(
            core::hint::black_box(&key),
            core::hint::black_box(&data),
        ));
    }
    let hmac = clock.since(start) * per_tick / 100;
    (per_tick, block, hmac)
}

fn run(clock: &Clock) -> Result<(), &'static str> {
    let (per_tick, block, hmac) = primitives(clock);
    if per_tick != 40 {
        // Without `-icount shift=0` SysTick follows the host's clock: the counts mean nothing.
        return Err("SysTick is not 40 instructions a tick: run under `-icount shift=0`");
    }
    let config = ServerConfig {
        min_iterations: TEST_ITERATIONS,
        unknown_user_iterations: TEST_ITERATIONS,
        ..ServerConfig::default()
    };
    let mut p = Pair {
        shared: ServerShared::new(config, TimedRng(TestRng::new(1)), [7; 32]),
        server: ServerSession::new(PeerAddr::ipv4([192, 0, 2, 1]), Instant::ZERO),
        ledger: MemLedger::new(Amount(10_000)),
        client: client(),
        client_rng: TestRng::new(2),
        now: Instant::ZERO,
        server_ticks: 0,
        rng_ticks: 0,
    };
    for user in ["bob", "alice"] {
        p.client
            .register(&mut p.client_rng, user, "a password", TEST_ITERATIONS)
            .map_err(|_| "register request")?;
        if p.step(clock) != Some(ClientEvent::Registered) {
            return Err("registered");
        }
        p.server = ServerSession::new(PeerAddr::ipv4([192, 0, 2, 1]), p.now);
        p.client = client();
    }
    const LOGINS: u32 = 8;
    p.reset_counts();
    for _ in 0..LOGINS {
        p.now = p.now + Duration::from_millis(1_000);
        p.server = ServerSession::new(PeerAddr::ipv4([192, 0, 2, 1]), p.now);
        p.client = client();
        p.login(clock, "alice", "a password")?;
    }
    let login = p.server_ticks * per_tick / LOGINS;
    let login_rng = p.rng_ticks * per_tick / LOGINS;

    // Two batches of the most nonces a request may ask for, each used by as many transfers.
    const BATCH: u8 = MAX_NONCE_BATCH as u8;
    const IDS: [[&str; BATCH as usize]; 2] = [
        ["ta", "tb", "tc", "td", "te", "tf", "tg", "th"],
        ["ti", "tj", "tk", "tl", "tm", "tn", "to", "tp"],
    ];
    let (mut nonces, mut nonces_rng, mut transfer) = (0, 0, 0);
    for batch in IDS {
        p.reset_counts();
        p.client
            .request_nonces(BATCH)
            .map_err(|_| "nonces request")?;
        if p.step(clock)
            != Some(ClientEvent::Nonces {
                available: BATCH.into(),
            })
        {
            return Err("nonces");
        }
        nonces += p.server_ticks * per_tick / 2;
        nonces_rng += p.rng_ticks * per_tick / 2;
        p.reset_counts();
        for id in batch {
            p.client
                .transfer(id, "bob", Amount(10))
                .map_err(|_| "transfer request")?;
            if !matches!(p.step(clock), Some(ClientEvent::Receipt(r)) if r.result.is_ok()) {
                return Err("receipt");
            }
        }
        transfer += p.server_ticks * per_tick / u32::from(2 * BATCH);
        if p.rng_ticks != 0 {
            return Err("a transfer drew random numbers");
        }
    }
    let footprint = Footprint::measure();
    print(format_args!(
        "sha_cost compact_sha256={} insns_per_tick={per_tick} sha256_block={block} hmac_100={hmac} \
         login={login} login_rng={login_rng} nonces={nonces} nonces_rng={nonces_rng} \
         transfer={transfer} flash={} ram={} stack_peak={}\n",
        cfg!(feature = "compact-sha256"),
        footprint.flash,
        footprint.ram,
        footprint.stack_peak,
    ));
    Ok(())
}

#[entry]
fn main() -> ! {
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        print(format_args!("{IMAGE} FAILED: peripherals\n"));
        exit(false)
    };
    let clock = Clock::start(peripherals.SYST);
    match run(&clock) {
        Ok(()) => exit(true),
        Err(what) => {
            print(format_args!("{IMAGE} FAILED: {what}\n"));
            exit(false)
        }
    }
}
