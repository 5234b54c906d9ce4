//! The device alone with its ledger on flash, as a board links it: `device-alone`'s device
//! (smoltcp, the core's server engine, 4 sessions, the ChaCha20 RNG) with firmware-sim's
//! [`FlashLedger`] in place of the `MemLedger`, on [`FLASH_SECTORS`] sectors of NOR flash
//! simulated in RAM ([`RamFlash`]; a board lends its own `NorFlash`, the QEMU board a
//! semihosted file). It measures what the flash ledger adds.
//!
//! Before the device starts it drives the ledger as the device would (registrations, a
//! transfer, its retry, a refusal, a failed login, history), reboots it (reopens it from the
//! flash image alone) and checks that everything is still there and the secret unchanged.
//! Then it builds the device on the ledger, polls it idle, and prints
//!
//! ```text
//! device_flash flash=<bytes> ram=<bytes> stack_peak=<bytes> flash_image=<bytes> ledger=<bytes> map_futures=<fetch>/<store>
//! ```
//!
//! `ram` includes the simulated flash (`flash_image` bytes), which a board does not have in
//! RAM; `ledger` is the `FlashLedger` itself (opened in place in its `static`, as a board
//! does); `map_futures` the sizes of sequential-storage's two futures, which run in an arena
//! inside the ledger; `stack_peak` is the whole run's (painted at reset), the ledger calls'
//! included.

#![no_std]
#![no_main]

#[path = "../../../../core/cortex-m-test/src/runtime.rs"]
mod runtime;

use core::mem::{size_of, MaybeUninit};
use core::ptr::addr_of_mut;

use cortex_m_rt::entry;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use runtime::{exit, print, Footprint};
use txsock_core::auth::Verifier;
use txsock_core::ledger::{Ledger, LedgerReply, LedgerRequest, TransferOutcome};
use txsock_core::lockout::Backoff;
use txsock_core::{Amount, Instant, TransferId, Username};
use txsock_firmware_sim::alone::{poll_idle, AloneMemory};
use txsock_firmware_sim::flash_ledger::{FlashLedger, NorFlashPages};
use txsock_firmware_sim::ram_flash::{RamFlash, ERASE_SIZE};
use txsock_firmware_sim::scenario::board::*;
use txsock_firmware_sim::scenario::OPENING;

/// The name in failure messages.
const IMAGE: &str = "device_flash";

/// Fixed RNG seed: QEMU's mps2-an386 has no TRNG. Test only.
const SEED: u64 = 0x7853_6f63;

/// Sectors of the simulated flash: the fewest that let the store reuse sectors.
const FLASH_SECTORS: usize = 4;

type Flash = RamFlash<&'static mut [u8]>;
type BoardFlashLedger = FlashLedger<NorFlashPages<Flash>>;

static mut FLASH: [u8; FLASH_SECTORS * ERASE_SIZE] = [0; FLASH_SECTORS * ERASE_SIZE];
static mut LEDGER: MaybeUninit<BoardFlashLedger> = MaybeUninit::uninit();
static mut MEMORY: AloneMemory<BoardFlashLedger> = AloneMemory::new();

fn fail(what: &str) -> ! {
    print(format_args!("{IMAGE} FAILED: {what}\n"));
    exit(false)
}

fn name(s: &str) -> Username {
    Username::parse(s).unwrap_or_else(|_| fail("bad name"))
}

fn transfer(id: &str, amount: u64) -> LedgerRequest {
    LedgerRequest::Transfer {
        from: name("alice"),
        id: TransferId::parse(id).unwrap_or_else(|_| fail("bad id")),
        to: name("bob"),
        amount: Amount(amount),
    }
}

/// Runs `request` on `ledger`, as a device poll would.
fn call(ledger: &mut BoardFlashLedger, request: &LedgerRequest) -> LedgerReply {
    ledger.execute(request, Instant::from_millis(1))
}

/// Opens the ledger in `slot` (in place: it is a few KiB) with an RNG seeded from `seed` (a
/// secret drawn from it would differ at every boot) or fails.
fn open(
    slot: &'static mut MaybeUninit<BoardFlashLedger>,
    flash: Flash,
    seed: u64,
) -> &'static mut BoardFlashLedger {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    BoardFlashLedger::open_in(slot, flash, OPENING, &mut rng, Instant::ZERO)
        .unwrap_or_else(|_| fail("the ledger does not open"))
}

/// Drives the ledger in `slot` as a device would, reboots it, checks it; returns the ledger.
///
/// Replies are matched against patterns rather than compared with `!=`: this check is
/// counted in the image's flash figure, and `LedgerReply`'s derived `PartialEq` (every
/// variant) cost 460 bytes that no device needs.
#[inline(never)]
fn exercise(
    slot: &'static mut MaybeUninit<BoardFlashLedger>,
    flash: Flash,
) -> &'static mut BoardFlashLedger {
    // SAFETY (both `slot` reborrows below): `slot` is the only reference to the static, and
    // each reborrow ends before the next one starts.
    let slot: *mut MaybeUninit<BoardFlashLedger> = slot;
    let ledger = open(unsafe { &mut *slot }, flash, SEED);
    let secret = ledger.secret();
    for user in ["alice", "bob"] {
        let mut verifier = Verifier {
            salt: Default::default(),
            iterations: 4096,
            stored_key: [user.len() as u8; 32],
            server_key: [0x5a; 32],
        };
        let _ = verifier.salt.extend_from_slice(&[7; 16]);
        let reply = call(
            ledger,
            &LedgerRequest::Register {
                user: name(user),
                verifier,
            },
        );
        if !matches!(reply, LedgerReply::Registered(Ok(()))) {
            fail("registration");
        }
    }
    let sent = TransferOutcome {
        result: Ok(()),
        balance: Amount(OPENING.minor() - 250),
    };
    for _ in 0..2 {
        // The second time is the retry: the same outcome, nothing moved.
        if !matches!(call(ledger, &transfer("t1", 250)), LedgerReply::Transfer(o) if o == sent) {
            fail("transfer");
        }
    }
    let refused = call(ledger, &transfer("t2", OPENING.minor()));
    if !matches!(
        refused,
        LedgerReply::Transfer(TransferOutcome { result: Err(_), .. })
    ) {
        fail("refusal");
    }
    let failed = LedgerRequest::LoginFailed {
        user: name("bob"),
        now: Instant::from_millis(1),
        policy: Backoff::ACCOUNT,
    };
    if !matches!(call(ledger, &failed), LedgerReply::Recorded(_)) {
        fail("failed login");
    }
    let history = LedgerRequest::History {
        user: name("bob"),
        offset: 0,
        deposits: true,
    };
    if !matches!(call(ledger, &history), LedgerReply::History(Ok(p)) if p.entries.len() == 1) {
        fail("history");
    }
    // Reboot: only the flash is kept (taken out in place: the ledger is never moved).
    let flash = ledger.with_flash(|f| core::mem::replace(f.flash_mut(), RamFlash::new(&mut [])));
    // SAFETY: the ledger was opened in the slot and is not used after this.
    unsafe { (*slot).assume_init_drop() };
    let ledger = open(unsafe { &mut *slot }, flash, SEED + 1);
    if ledger.secret() != secret {
        fail("the secret changed across a reboot");
    }
    if !matches!(call(ledger, &transfer("t1", 250)), LedgerReply::Transfer(o) if o == sent) {
        fail("the transfer's outcome after the reboot");
    }
    let balance = call(ledger, &LedgerRequest::Balance { user: name("bob") });
    if !matches!(balance, LedgerReply::Balance(Ok(a)) if a == Amount(OPENING.minor() + 250)) {
        fail("the balance after the reboot");
    }
    ledger
}

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once and takes each static exactly once here.
    let (image, slot, memory) = unsafe {
        (
            &mut *addr_of_mut!(FLASH),
            &mut *addr_of_mut!(LEDGER),
            &mut *addr_of_mut!(MEMORY),
        )
    };
    // A new chip is erased; the zeroed static is not.
    let mut flash = RamFlash::new(&mut image[..]);
    if BoardFlashLedger::erase_all(&mut flash).is_err() {
        fail("erase");
    }
    let ledger = exercise(slot, flash);
    let mut config = device_config(SEED);
    config.secret = ledger.secret();
    let (device, mut phy) = memory.start(ledger, ChaCha20Rng::seed_from_u64(SEED), &config);
    if !poll_idle(device, &mut phy, 10) {
        fail("an idle device accepted a connection");
    }
    let footprint = Footprint::measure();
    let [fetch, store] = device.ledger_mut().map_future_sizes();
    print(format_args!(
        "device_flash flash={} ram={} stack_peak={} flash_image={} ledger={} map_futures={}/{}\n",
        footprint.flash,
        footprint.ram,
        footprint.stack_peak,
        FLASH_SECTORS * ERASE_SIZE,
        size_of::<BoardFlashLedger>(),
        fetch,
        store
    ));
    exit(true)
}
