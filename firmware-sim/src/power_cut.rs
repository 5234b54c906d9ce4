//! Power cuts at flash writes: does the [`FlashLedger`] lose or duplicate money when the power
//! goes at any write or erase of a transfer?
//!
//! [`CutFlash`] is a [`RamFlash`] whose power goes at a chosen step (the n-th write or erase
//! since it was powered): that operation is left undone or *torn* (a write programs some of its
//! words and part of the bits of the next one; an erase leaves part of the sector erased, or
//! the whole sector garbage), and every operation after it fails. A run then *reboots*: it
//! opens a new ledger on the flash image as the cut left it, and checks:
//!
//! 1. the ledger opens (a cut never makes it unreadable);
//! 2. money is conserved (the balances add up to the money minted);
//! 3. the balances are those of the acknowledged operations, plus the one in flight when the
//!    power went either wholly applied or not at all (compared with a [`MemLedger`] replaying
//!    the same operations);
//! 4. the journal holds every acknowledged committed transfer exactly once, and no transfer
//!    that was not acknowledged, except possibly the one in flight;
//! 5. re-sending every acknowledged transfer with its id answers its original outcome and
//!    moves nothing.
//!
//! Then it carries on (re-sending the operation in flight first, as a client would) and, at
//! the end, must reach the same balances as a run without cuts.
//!
//! [`exhaustive`] cuts a fixed scenario at every one of its write and erase steps in turn,
//! three times each (the operation not done, torn at a word, torn inside a word): the test
//! suite runs it (`tests/power_cut.rs`). [`random`] runs
//! longer random scenarios with cuts at random steps, several per run, all torn at random:
//! `txsock-firmware-sim --power-cuts N --seed S` runs it on demand.

use std::collections::BTreeMap;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use txsock_core::auth::Verifier;
use txsock_core::ledger::{Ledger, LedgerReply, LedgerRequest, MemLedger, TransferOutcome};
use txsock_core::lockout::Backoff;
use txsock_core::{Amount, ErrorCode, Instant, TransferId, Username};

use crate::flash_ledger::{FlashLedger, NorFlashPages};
use crate::ram_flash::{RamFlash, ERASE_SIZE, WRITE_SIZE};

/// Sectors of the simulated flash for [`exhaustive`] (12 KiB: so small that the store must
/// reuse sectors, moving live items out and erasing, within the small scenario).
pub const EXHAUSTIVE_SECTORS: usize = 3;

/// Sectors of the simulated flash for [`random`] (64 KiB: room for a long scenario's
/// records, still reused many times over).
pub const RANDOM_SECTORS: usize = 16;

/// Opening balance of every account in the scenarios.
const OPENING: Amount = Amount(1000);

/// Error of a [`CutFlash`] operation: the power is gone, or the request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutError {
    /// The power was cut (at this operation or before it).
    PowerLost,
    /// The underlying flash refused the request (misaligned, out of range).
    Refused(NorFlashErrorKind),
}

impl NorFlashError for CutError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            CutError::PowerLost => NorFlashErrorKind::Other,
            CutError::Refused(kind) => *kind,
        }
    }
}

/// What the power cut leaves of the write or erase it interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// Nothing: the operation did not start.
    None,
    /// Part of it. A write programs a prefix of its words, each word whole or not at all (the
    /// model of flash that programs a word at a time, as MCU flash with ECC words does, and of
    /// a file written by one host `write`); an erase stops part-way or leaves the sector
    /// garbage.
    Words,
    /// As [`Tear::Words`], and the word being programmed gets some of its bits: the model of
    /// NOR programmed bit by bit (SPI NOR), the harshest.
    Bits,
}

/// Where and how the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The write or erase (counted from 0 since the flash was powered) the power goes at.
    pub step: u64,
    /// What the cut leaves of that operation.
    pub tear: Tear,
    /// Seed of the tear's shape.
    pub seed: u64,
}

impl Cut {
    fn torn(&self) -> bool {
        self.tear != Tear::None
    }
}

/// A [`RamFlash`] that loses power at a [`Cut`]: see the [module documentation](self).
#[derive(Debug)]
pub struct CutFlash {
    flash: RamFlash<Vec<u8>>,
    cut: Option<Cut>,
    steps: u64,
    erases: u64,
    dead: bool,
}

impl CutFlash {
    /// Powers `image` (a whole flash) with the power going at `cut`, if any.
    pub fn new(image: Vec<u8>, cut: Option<Cut>) -> Self {
        CutFlash {
            flash: RamFlash::new(image),
            cut,
            steps: 0,
            erases: 0,
            dead: false,
        }
    }

    /// Writes and erases attempted since powered.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether the power went.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The flash image as it is now.
    pub fn image(&self) -> Vec<u8> {
        self.flash.bytes().to_vec()
    }

    /// Counts a write or erase; true if the power goes at it.
    fn step(&mut self) -> Result<Option<Cut>, CutError> {
        if self.dead {
            return Err(CutError::PowerLost);
        }
        let step = self.steps;
        self.steps += 1;
        Ok(self.cut.filter(|c| c.step == step))
    }
}

impl ErrorType for CutFlash {
    type Error = CutError;
}

impl ReadNorFlash for CutFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), CutError> {
        if self.dead {
            return Err(CutError::PowerLost);
        }
        self.flash
            .read(offset, bytes)
            .map_err(|e| CutError::Refused(e.kind()))
    }

    fn capacity(&self) -> usize {
        self.flash.capacity()
    }
}

impl NorFlash for CutFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), CutError> {
        self.erases += 1;
        let Some(cut) = self.step()? else {
            return self
                .flash
                .erase(from, to)
                .map_err(|e| CutError::Refused(e.kind()));
        };
        self.dead = true;
        if cut.torn() {
            let mut rng = ChaCha20Rng::seed_from_u64(cut.seed);
            let sector = &mut self.flash.bytes_mut()[from as usize..to as usize];
            if rng.next_u32() % 2 == 0 {
                // Stopped part-way: a prefix erased, the rest as it was.
                let n = rng.next_u32() as usize % sector.len();
                sector[..n].fill(0xFF);
            } else {
                // Anything at all.
                rng.fill_bytes(sector);
            }
        }
        Err(CutError::PowerLost)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), CutError> {
        let Some(cut) = self.step()? else {
            return self
                .flash
                .write(offset, bytes)
                .map_err(|e| CutError::Refused(e.kind()));
        };
        self.dead = true;
        if cut.torn() {
            let mut rng = ChaCha20Rng::seed_from_u64(cut.seed);
            let words = bytes.len() / WRITE_SIZE;
            let done = rng.next_u32() as usize % (words + 1);
            let at = offset as usize;
            let cells = &mut self.flash.bytes_mut()[at..at + bytes.len()];
            for (cell, byte) in cells.iter_mut().zip(bytes).take(done * WRITE_SIZE) {
                *cell &= *byte;
            }
            if cut.tear == Tear::Bits {
                // The word being programmed when the power went: some of its bits made it.
                let partial = done * WRITE_SIZE..((done + 1) * WRITE_SIZE).min(bytes.len());
                for (cell, byte) in cells[partial.clone()].iter_mut().zip(&bytes[partial]) {
                    *cell &= *byte | rng.next_u32() as u8;
                }
            }
        }
        Err(CutError::PowerLost)
    }
}

/// One operation of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Register `user` (with the opening balance).
    Register(String),
    /// A transfer: `(from, id, to, amount in minor units)`.
    Transfer(String, String, String, u64),
    /// A failed login of `user`.
    LoginFailed(String),
}

impl Op {
    fn request(&self, at: Instant) -> LedgerRequest {
        let user = |s: &str| Username::parse(s).expect("scenario names are valid");
        match self {
            Op::Register(name) => LedgerRequest::Register {
                user: user(name),
                verifier: verifier(name),
            },
            Op::Transfer(from, id, to, amount) => LedgerRequest::Transfer {
                from: user(from),
                id: TransferId::parse(id).expect("scenario ids are valid"),
                to: user(to),
                amount: Amount(*amount),
            },
            Op::LoginFailed(name) => LedgerRequest::LoginFailed {
                user: user(name),
                now: at,
                policy: Backoff::ACCOUNT,
            },
        }
    }
}

fn verifier(name: &str) -> Verifier {
    let seed = name.len() as u8;
    let mut v = Verifier {
        salt: heapless::Vec::new(),
        iterations: 4096,
        stored_key: [seed; 32],
        server_key: [seed ^ 0x5A; 32],
    };
    let _ = v.salt.extend_from_slice(&[seed; 16]);
    v
}

/// The users every scenario starts with (registered before any cut).
const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// The scenario [`exhaustive`] cuts at every step: commits, a refusal, a retry (no write), a
/// failed login, a registration, and transfers to and from the new account.
pub fn small_scenario() -> Vec<Op> {
    let t = |from: &str, id: &str, to: &str, amount| {
        Op::Transfer(from.into(), id.into(), to.into(), amount)
    };
    vec![
        t("alice", "1", "bob", 100),
        t("bob", "1", "carol", 50),
        t("alice", "1", "bob", 100),
        t("alice", "2", "carol", 5000),
        Op::LoginFailed("alice".into()),
        t("carol", "3", "alice", 25),
        Op::Register("dave".into()),
        t("dave", "4", "alice", 10),
        t("alice", "5", "dave", 1),
        t("bob", "6", "alice", 7),
        t("carol", "3", "alice", 25),
        t("alice", "7", "bob", 3),
    ]
}

/// A random scenario of `len` operations over four users (one registered on the way).
pub fn random_scenario(rng: &mut ChaCha20Rng, len: usize) -> Vec<Op> {
    let names = ["alice", "bob", "carol", "dave"];
    let mut ops = Vec::with_capacity(len + 1);
    let join_at = rng.next_u32() as usize % len.max(1);
    for i in 0..len {
        if i == join_at {
            ops.push(Op::Register("dave".into()));
        }
        let r = rng.next_u32();
        ops.push(match r % 10 {
            0 => Op::LoginFailed(names[(r / 10) as usize % 4].into()),
            // A retry of an earlier id (same transfer or, sometimes, another under its id).
            1 | 2 => match ops
                .iter()
                .filter(|o| matches!(o, Op::Transfer(..)))
                .nth(r as usize / 10 % (i + 1))
            {
                Some(Op::Transfer(from, id, to, amount)) if r % 3 == 0 => {
                    Op::Transfer(from.clone(), id.clone(), to.clone(), amount + 1)
                }
                Some(earlier) => earlier.clone(),
                None => Op::LoginFailed("bob".into()),
            },
            _ => {
                let from = names[(r / 10) as usize % 4];
                let to = names[(r / 40) as usize % 4];
                let amount = u64::from(rng.next_u32() % 700 + 1);
                Op::Transfer(from.into(), format!("r{i}"), to.into(), amount)
            }
        });
    }
    ops
}

/// A blank flash with the scenario's users registered (the state every run starts from).
fn provisioned(sectors: usize) -> Vec<u8> {
    let mut flash = RamFlash::new(vec![0xFF; sectors * ERASE_SIZE]);
    {
        let mut ledger = open(&mut flash, 1).expect("a blank flash opens");
        for name in USERS {
            let reply = ledger.execute(
                &Op::Register(name.into()).request(Instant::ZERO),
                Instant::ZERO,
            );
            assert_eq!(reply, LedgerReply::Registered(Ok(())));
        }
    }
    flash.into_inner()
}

fn open<F: NorFlash>(flash: F, seed: u64) -> Result<FlashLedger<NorFlashPages<F>>, String> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    FlashLedger::open(flash, OPENING, &mut rng, Instant::ZERO).map_err(|e| format!("{e}"))
}

/// The reference: a [`MemLedger`] that has run `ops`.
fn model(ops: &[Op]) -> Box<MemLedger<8, 1024>> {
    let mut m = Box::new(MemLedger::new(OPENING));
    for op in USERS
        .iter()
        .map(|n| Op::Register((*n).into()))
        .chain(ops.iter().cloned())
    {
        m.execute(&op.request(Instant::ZERO), Instant::ZERO);
    }
    m
}

fn balances_of_model(m: &MemLedger<8, 1024>) -> BTreeMap<String, u64> {
    m.accounts()
        .iter()
        .map(|a| (a.user.to_string(), a.balance.minor()))
        .collect()
}

fn balances<F: NorFlash>(
    ledger: &mut FlashLedger<NorFlashPages<F>>,
) -> Result<BTreeMap<String, u64>, String> {
    let mut b = BTreeMap::new();
    ledger
        .for_each_account(|a| {
            b.insert(a.user.to_string(), a.balance.minor());
        })
        .map_err(|e| format!("reading the accounts: {e}"))?;
    Ok(b)
}

/// Whether a reply is the storage failing (the operation is in flight, not acknowledged).
fn failed(reply: &LedgerReply) -> bool {
    matches!(
        reply,
        LedgerReply::Unavailable | LedgerReply::Registered(Err(ErrorCode::Internal))
    )
}

/// What happened in one powered stretch: the replies acknowledged, in order, and the
/// operation in flight when the power went.
struct Stretch {
    acknowledged: Vec<(usize, LedgerReply)>,
    in_flight: Option<usize>,
    /// ekv panicked on the flash error (a reset, on a board) rather than returning it.
    panicked: bool,
}

/// Runs `ops[from..]` on `ledger` until one fails (the power went).
fn run<F: NorFlash>(
    ledger: &mut FlashLedger<NorFlashPages<F>>,
    ops: &[Op],
    from: usize,
    clock: &mut u64,
) -> Stretch {
    let mut acknowledged = Vec::new();
    for (i, op) in ops.iter().enumerate().skip(from) {
        *clock += 1;
        let at = Instant::from_millis(*clock);
        // A store that panics on a flash error (ekv 1.0 did, once) would reset a board; here
        // it ends the powered stretch like the cut itself, and is counted.
        let Ok(reply) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ledger.execute(&op.request(at), at)
        })) else {
            return Stretch {
                acknowledged,
                in_flight: Some(i),
                panicked: true,
            };
        };
        if failed(&reply) {
            return Stretch {
                acknowledged,
                in_flight: Some(i),
                panicked: false,
            };
        }
        acknowledged.push((i, reply));
    }
    Stretch {
        acknowledged,
        in_flight: None,
        panicked: false,
    }
}

/// The checks after a reboot (see the module documentation); `done` is how many operations
/// are acknowledged or were in flight, `answers` every acknowledged transfer's reply.
fn check_after_reboot(
    image: Vec<u8>,
    ops: &[Op],
    acknowledged: usize,
    in_flight: Option<usize>,
    answers: &BTreeMap<usize, LedgerReply>,
) -> Result<Vec<u8>, String> {
    let mut flash = RamFlash::new(image);
    let mut ledger = open(&mut flash, 7).map_err(|e| format!("the ledger does not open: {e}"))?;
    let total = ledger.total().map_err(|e| e.to_string())?;
    if total != ledger.minted() {
        return Err(format!(
            "money not conserved: balances {total}, minted {}",
            ledger.minted()
        ));
    }
    let now = balances(&mut ledger)?;
    let without = balances_of_model(&model(&ops[..acknowledged]));
    let with = in_flight.map(|i| balances_of_model(&model(&ops[..=i])));
    if now != without && Some(&now) != with.as_ref() {
        return Err(format!(
            "balances {now:?} are neither {without:?} (in-flight op not applied) nor {with:?} \
             (applied)"
        ));
    }
    // The journal: acknowledged commits exactly once; nothing else but the op in flight.
    let mut journal: BTreeMap<(String, String), usize> = BTreeMap::new();
    ledger
        .for_each_committed(|e| {
            *journal
                .entry((e.from.to_string(), e.id.to_string()))
                .or_default() += 1;
        })
        .map_err(|e| e.to_string())?;
    if let Some((key, n)) = journal.iter().find(|(_, n)| **n > 1) {
        return Err(format!("transfer {key:?} journaled {n} times"));
    }
    for (i, reply) in answers {
        if let (Op::Transfer(from, id, ..), LedgerReply::Transfer(o)) = (&ops[*i], reply) {
            if o.result.is_ok() && !journal.contains_key(&(from.clone(), id.clone())) {
                return Err(format!(
                    "acknowledged transfer {from}/{id} is not in the journal"
                ));
            }
        }
    }
    let allowed = |from: &str, id: &str| {
        ops[..acknowledged]
            .iter()
            .chain(in_flight.map(|i| &ops[i]))
            .any(|o| matches!(o, Op::Transfer(f, d, ..) if f == from && d == id))
    };
    if let Some((from, id)) = journal.keys().find(|(f, d)| !allowed(f, d)) {
        return Err(format!("transfer {from}/{id} committed but never sent"));
    }
    // Every acknowledged transfer, sent again: its original answer, nothing moved.
    for (i, reply) in answers {
        let not_final = matches!(
            reply,
            LedgerReply::Transfer(TransferOutcome {
                result: Err(ErrorCode::NotLoggedIn | ErrorCode::LedgerFull),
                ..
            })
        );
        if !matches!(ops[*i], Op::Transfer(..)) || not_final {
            continue;
        }
        let again = ledger.execute(&ops[*i].request(Instant::ZERO), Instant::ZERO);
        let expected = match (reply, &again) {
            // A later transfer under the same id: DuplicateId quotes the balance *now*.
            (
                LedgerReply::Transfer(TransferOutcome {
                    result: Err(ErrorCode::DuplicateId),
                    ..
                }),
                LedgerReply::Transfer(TransferOutcome {
                    result: Err(ErrorCode::DuplicateId),
                    ..
                }),
            ) => &again,
            _ => reply,
        };
        if again != *expected {
            return Err(format!(
                "op {i} {:?} answered {again:?} after the reboot, {reply:?} before",
                ops[*i]
            ));
        }
    }
    if balances(&mut ledger)? != now {
        return Err("re-sending acknowledged transfers moved money".into());
    }
    drop(ledger);
    Ok(flash.into_inner())
}

/// What a power-cut run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Runs made (one per cut point and kind for [`exhaustive`]).
    pub runs: u64,
    /// Power cuts made and recovered from.
    pub cuts: u64,
    /// Of them, torn writes or erases.
    pub torn: u64,
    /// Write and erase steps of the scenario without cuts.
    pub steps: u64,
    /// Of them, erases (the store reusing sectors).
    pub erases: u64,
    /// Cuts at which the store panicked on the flash error instead of returning it (a reset
    /// on a board; recovered from like the others).
    pub panics: u64,
}

impl std::fmt::Display for CutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "power cuts: {} runs, {} cuts ({} torn), every reboot consistent",
            self.runs, self.cuts, self.torn
        )?;
        if self.steps > 0 {
            write!(
                f,
                "; the scenario has {} write/erase steps ({} erases)",
                self.steps, self.erases
            )?;
        }
        if self.panics > 0 {
            write!(
                f,
                "; ekv panicked on the flash error at {} of them",
                self.panics
            )?;
        }
        Ok(())
    }
}

/// Runs `ops` from `image` with the power going at each cut of `cuts` in turn (a cut's step
/// counts from the boot it happens in), rebooting and checking after each; then checks that
/// the end state is the uncut one. Returns the cuts that happened (a cut past the end of the
/// work does not), and how many of them made ekv panic.
fn run_with_cuts(image: Vec<u8>, ops: &[Op], cuts: &[Cut]) -> Result<(Vec<Cut>, u64), String> {
    let mut made = Vec::new();
    let mut panics = 0;
    let mut image = image;
    let mut next = 0;
    let mut answers: BTreeMap<usize, LedgerReply> = BTreeMap::new();
    let mut clock = 0;
    let mut cuts = cuts.iter();
    loop {
        let cut = cuts.next().copied();
        let mut flash = CutFlash::new(image, cut);
        let stretch = {
            let mut ledger =
                open(&mut flash, next as u64).map_err(|e| format!("boot before op {next}: {e}"))?;
            run(&mut ledger, ops, next, &mut clock)
        };
        for (i, reply) in stretch.acknowledged.iter().cloned() {
            // An op re-sent after a cut: its answer must be what a first send would give.
            answers.entry(i).or_insert(reply);
        }
        let acknowledged = stretch.acknowledged.last().map_or(next, |(i, _)| i + 1);
        image = flash.image();
        if stretch.in_flight.is_none() && !flash.is_dead() {
            // Everything done before the cut's step came.
            break;
        }
        if !flash.is_dead() {
            return Err(format!(
                "op {:?} failed with the power on",
                stretch.in_flight.map(|i| &ops[i])
            ));
        }
        made.extend(cut);
        panics += u64::from(stretch.panicked);
        let in_flight = stretch.in_flight;
        image = check_after_reboot(image, ops, acknowledged, in_flight, &answers)
            .map_err(|e| format!("after a cut at {cut:?} (op {in_flight:?} in flight): {e}"))?;
        next = in_flight.unwrap_or(acknowledged);
    }
    // The end: as if the power had never gone.
    let mut flash = RamFlash::new(image);
    let mut ledger = open(&mut flash, 9)?;
    let end = balances(&mut ledger)?;
    let expected = balances_of_model(&model(ops));
    if end != expected {
        return Err(format!("ended with {end:?}, without cuts {expected:?}"));
    }
    Ok((made, panics))
}

/// Cuts `ops` at every write and erase step in turn, once leaving the operation undone, once
/// torn at a word and once inside one; every run must recover (see the module documentation).
pub fn exhaustive(ops: &[Op]) -> Result<CutReport, String> {
    let start = provisioned(EXHAUSTIVE_SECTORS);
    // The uncut run, to count its steps.
    let mut flash = CutFlash::new(start.clone(), None);
    {
        let mut ledger = open(&mut flash, 0)?;
        let stretch = run(&mut ledger, ops, 0, &mut 0);
        if stretch.in_flight.is_some() {
            return Err("the uncut run failed".into());
        }
    }
    let steps = flash.steps();
    let mut report = CutReport {
        steps,
        erases: flash.erases,
        ..CutReport::default()
    };
    for step in 0..steps {
        for tear in [Tear::None, Tear::Words, Tear::Bits] {
            let cut = Cut {
                step,
                tear,
                seed: step,
            };
            let (made, panics) = run_with_cuts(start.clone(), ops, &[cut])?;
            report.panics += panics;
            report.runs += 1;
            report.cuts += made.len() as u64;
            report.torn += made.iter().filter(|c| c.torn()).count() as u64;
        }
    }
    Ok(report)
}

/// `runs` random scenarios of `ops` operations from `seed`, each cut several times at random
/// steps, 3 in 4 of them torn with `tear`. Stops at the first failure, which names the run.
pub fn random(runs: u64, ops: usize, seed: u64, tear: Tear) -> Result<CutReport, String> {
    let start = provisioned(RANDOM_SECTORS);
    let mut report = CutReport::default();
    for run_index in 0..runs {
        let run_seed = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(run_index);
        let mut rng = ChaCha20Rng::seed_from_u64(run_seed);
        let scenario = random_scenario(&mut rng, ops);
        let cuts: Vec<Cut> = (0..1 + rng.next_u32() % 6)
            .map(|_| Cut {
                step: u64::from(rng.next_u32() % 120),
                tear: if rng.next_u32() % 4 != 0 {
                    tear
                } else {
                    Tear::None
                },
                seed: rng.next_u64(),
            })
            .collect();
        let (made, panics) = run_with_cuts(start.clone(), &scenario, &cuts)
            .map_err(|e| format!("run {run_index} (seed {seed}): {e}"))?;
        report.panics += panics;
        report.runs += 1;
        report.cuts += made.len() as u64;
        report.torn += made.iter().filter(|c| c.torn()).count() as u64;
    }
    Ok(report)
}
