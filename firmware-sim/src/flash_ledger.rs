//! A [`Ledger`] on NOR flash that survives power loss: [`FlashLedger`].
//!
//! The device's [`MemLedger`](txsock_core::MemLedger) is rebuilt at every boot; a board that
//! must keep its money across resets and power cuts uses a `FlashLedger` instead. It answers
//! the same [`LedgerRequest`]s under the same contract, deciding every transfer with the
//! core's one money rule ([`decide_transfer`]), and keeps on flash:
//!
//! - accounts: verifier, balance, lockout state, and what was deposited into them;
//! - the final outcome of every transfer id per sender (committed or refused), so that a
//!   retry after a lost reply or a reboot gets the original answer;
//! - the journal of committed transfers (for history), in commit order;
//! - the device secret (the fake-salt key of `ServerShared::new`), drawn from the RNG at
//!   the first boot and never changed: [`FlashLedger::secret`];
//! - the time floor that keeps lockouts meaningful across resets (below).
//!
//! # The store: sequential-storage, and why not ekv
//!
//! The records live in a [sequential-storage](https://docs.rs/sequential-storage) map: a
//! key-value store on raw NOR flash that appends each item (header CRC, data CRC) and, when a
//! page must be reused, first copies the live items out. A power cut at any write or erase
//! leaves every item either whole (and found) or torn (and ignored, the key keeping its
//! previous value); reads never see half an item.
//!
//! A transfer writes several records (two accounts, the id's outcome, a journal entry, the
//! metadata), and the map is atomic per item only. The ledger makes the whole transaction
//! atomic with a **write-ahead record**: it first stores *all* of the transaction's writes,
//! as absolute values, in one item (key `w`); that store is the commit point. Then it stores
//! each record in turn. At every boot (and after a failed operation) it reads the latest
//! valid write-ahead record and stores again whichever of its records do not hold that value.
//! Why this is enough:
//!
//! - a cut before the write-ahead item is whole leaves the previous one as the latest, and
//!   that previous transaction was already fully applied (the next one only starts after
//!   it), so redoing it changes nothing: the new transaction did not happen;
//! - a cut after it redoes the new transaction at the next boot; the values are absolute, so
//!   redoing a write that had already landed is harmless;
//! - nothing is answered before the records are stored, so nothing acknowledged is lost; and
//!   a retried transfer finds its outcome record, so nothing is applied twice.
//!
//! [ekv](https://docs.rs/ekv) was the first choice, for its atomic multi-key write
//! transactions (no write-ahead record of our own). It failed this crate's power-cut test
//! (`power_cut`): after some cuts ekv 1.0 mounted an *empty* database or refused to mount
//! at all (with its CRCs on, a chunk header torn between its two words makes the database
//! unreadable; with them off, a cut while it moves its metadata to a new page loses every
//! key). Money must survive a cut at any write, so ekv is out until that is fixed upstream;
//! the ledger's own write-ahead record is a few dozen lines whose argument is above.
//!
//! Costs: every transaction writes its records twice (once in the write-ahead item), and the
//! map finds a key by scanning items (no cache is configured, so it costs no RAM): fine for a
//! device's few transfers a second, not for a host.
//!
//! # Time across resets
//!
//! A device's clock restarts at every boot, but a lockout's `locked_until` must mean the same
//! thing after a reset (else a power cycle would unlock an account, or a lock taken late in a
//! long uptime would outlast the reboot by that uptime). The ledger therefore keeps its own
//! clock: *ledger time* = the driver's `now` + an epoch fixed at [`open`](FlashLedger::open).
//! Every transaction records the ledger time it ran at as the **time floor**; at boot the
//! epoch is chosen so that ledger time starts at the floor (`epoch = floor - now_at_boot`, or
//! 0 if the driver's clock is already past the floor, as a wall clock would be). Lockout
//! states are stored in ledger time and converted to and from the driver's clock at the
//! boundary. The effect: ledger time never runs backwards, and time spent powered off counts
//! as zero (the device has no clock to measure it), so a lock resumes after a reboot with the
//! time it had left when the ledger last wrote, and a reset never shortens it.
//!
//! # Using it
//!
//! ```ignore
//! // Blocking flash (embedded_storage::nor_flash::NorFlash), on a device: opened in place,
//! // in a `static` (the ledger is a few KiB; a device's stack budget is 8 KiB).
//! static mut LEDGER: MaybeUninit<FlashLedger<NorFlashPages<Flash>>> = MaybeUninit::uninit();
//! let ledger = FlashLedger::open_in(slot, flash, opening, &mut rng, now)?;
//! let secret = ledger.secret();               // DeviceConfig::secret
//! let device = Device::init(slot, DeviceParts { ledger, .. }, ..);
//!
//! // On a host, by value:
//! let mut ledger = FlashLedger::open(flash, opening, &mut rng, now)?;
//! ```
//!
//! - [`FlashLedger::open`] / [`open_in`](FlashLedger::open_in) (blocking flash, wrapped in
//!   [`NorFlashPages`]) and [`open_on`](FlashLedger::open_on) /
//!   [`open_on_in`](FlashLedger::open_on_in) (any async `NorFlash`, whose operations the
//!   ledger runs to completion where it calls them): finishes the last transaction if a cut
//!   interrupted it; a flash without a ledger (erased) is provisioned with a fresh secret. The
//!   whole flash is the ledger's: give it a partition of its own.
//! - [`Ledger::execute`]: the ledger contract, answered synchronously (both of the core's
//!   drive loops, blocking and async, call it so). A flash failure answers
//!   [`LedgerReply::Unavailable`] (the client retries with the same id); a full flash refuses
//!   registrations and transfers with [`ErrorCode::LedgerFull`].
//! - Administration: [`add_user`](FlashLedger::add_user), [`deposit`](FlashLedger::deposit),
//!   [`update_account`](FlashLedger::update_account), and reading everything back with
//!   [`for_each_account`](FlashLedger::for_each_account) and
//!   [`for_each_committed`](FlashLedger::for_each_committed).
//!
//! # Memory
//!
//! RAM: the `FlashLedger` itself ([`size_of`](core::mem::size_of): the metadata, a
//! [`BUFFER`]-byte working buffer, the write-ahead record being built and the arena the map's
//! futures run in; 2,800 bytes on a 32-bit target).
//!
//! Stack: sequential-storage is async only, and its futures nest a dozen `async fn`s deep. The
//! ledger's own logic is synchronous; each map operation is one future, written into the
//! arena inside the ledger and polled there to completion (`run`), so no future lives on the
//! stack and no level's state is moved through the frames above it. Each request kind has its
//! own frame. Measured on Cortex-M4 (opt-level `z`): a transfer's deepest call is about 3 KiB
//! below `Ledger::execute`; before (the ledger `async` too, the futures polled by
//! `block_on`), opening alone took 13.6 KiB.
//! Flash: at least 2 sectors (the map needs a free one to move items into); every
//! transaction appends about twice its records (a transfer about 1.3 KiB) until the map
//! reuses pages. Outcomes and journal entries are never deleted, so the flash bounds the
//! number of transfers a device can make, like `MemLedger`'s `TRANSFERS`: when full, new
//! transfers and registrations are refused with `LedgerFull`.

use core::future::Future;
use core::mem::{align_of, size_of, MaybeUninit};
use core::pin::Pin;
use core::ptr::addr_of_mut;
use core::task::{Context, Poll, Waker};

use embedded_storage::nor_flash::NorFlash;
use embedded_storage_async::nor_flash::NorFlash as AsyncNorFlash;
use rand_core::{CryptoRng, RngCore};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use txsock_core::auth::{Verifier, MAX_SALT};
use txsock_core::ledger::{
    credit, decide_transfer, HistoryPage, JournalEntry, Ledger, LedgerReply, LedgerRequest,
    RecordedOutcome, TransferDecision, TransferFacts, TransferOutcome,
};
use txsock_core::lockout::{Backoff, LockoutState};
use txsock_core::message::HISTORY_PAGE;
use txsock_core::names::{MAX_TRANSFER_ID, MAX_USERNAME};
use txsock_core::{Amount, ErrorCode, Instant, TransferId, Username};

/// A blocking [`NorFlash`] as the async flash the map runs on. Its operations complete
/// before their futures are first polled, so the blocking [`Ledger::execute`] can drive
/// them.
#[derive(Debug)]
pub struct NorFlashPages<F>(F);

impl<F: NorFlash> NorFlashPages<F> {
    /// Wraps `flash`. Does not touch it.
    pub fn new(flash: F) -> Self {
        NorFlashPages(flash)
    }

    /// The flash.
    pub fn flash(&self) -> &F {
        &self.0
    }

    /// The flash, to save or inspect its image (see [`FlashLedger::with_flash`]).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.0
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.0
    }
}

impl<F: NorFlash> embedded_storage_async::nor_flash::ErrorType for NorFlashPages<F> {
    type Error = F::Error;
}

impl<F: NorFlash> embedded_storage_async::nor_flash::ReadNorFlash for NorFlashPages<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), F::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: NorFlash> AsyncNorFlash for NorFlashPages<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), F::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), F::Error> {
        self.0.write(offset, bytes)
    }
}

/// Error returned by [`FlashLedger::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The flash's geometry does not suit the map: fewer than 2 sectors, or sectors too small
    /// for a record.
    Geometry,
    /// The ledger's records could not be read or written (see the error).
    Storage(StorageError),
}

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OpenError::Geometry => f.write_str(
                "the flash is too small for the ledger: it needs at least 2 sectors of 4 KiB",
            ),
            OpenError::Storage(e) => write!(f, "cannot open the ledger: {e}"),
        }
    }
}

impl core::error::Error for OpenError {}

/// Why a ledger operation could not be done at all (storage, not the money rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// The flash has no room for the write.
    Full,
    /// A record could not be read back (damaged flash, or another format).
    Corrupted,
    /// The flash failed (a power cut in simulation); the state on flash is whatever the last
    /// committed transaction left, and the next operation finishes that transaction.
    Flash,
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StorageError::Full => "the ledger's flash is full",
            StorageError::Corrupted => "a ledger record on flash is damaged",
            StorageError::Flash => "the flash failed",
        })
    }
}

impl core::error::Error for StorageError {}

impl<E> From<sequential_storage::Error<E>> for StorageError {
    fn from(e: sequential_storage::Error<E>) -> Self {
        match e {
            sequential_storage::Error::Storage { .. } => StorageError::Flash,
            sequential_storage::Error::FullStorage => StorageError::Full,
            _ => StorageError::Corrupted,
        }
    }
}

/// One account of a [`FlashLedger`], as [`for_each_account`](FlashLedger::for_each_account)
/// reads it and [`update_account`](FlashLedger::update_account) changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashAccount {
    /// Username.
    pub user: Username,
    /// SCRAM verifier.
    pub verifier: Verifier,
    /// Balance.
    pub balance: Amount,
    /// Failed-login state, in the driver's clock of this boot.
    pub lockout: LockoutState,
    /// Money deposited into the account (its opening balance and deposits), minor units.
    pub deposited: u64,
    /// How many deposits that was (a zero opening balance is none).
    pub deposits: u32,
}

/// Key and value bounds of the ledger's records.
const KEY_CAP: usize = 2 + MAX_USERNAME + MAX_TRANSFER_ID;
const VALUE_CAP: usize = ACCOUNT_RECORD_MAX;
type Key = heapless::Vec<u8, KEY_CAP>;
type Value = heapless::Vec<u8, VALUE_CAP>;

/// Record kinds, the first byte of every key.
const ACCOUNT: u8 = b'a';
const OUTCOME: u8 = b'i';
const META: &[u8] = b"m";
const JOURNAL: u8 = b't';
/// The account index: `n` + index (big-endian `u32`) holds the name of the index-th account.
const INDEX: u8 = b'n';
/// The write-ahead record: the last transaction's writes (see the module documentation).
const WAL: &[u8] = b"w";
/// The key an unknown user's failed login writes, so that it costs what a known one does.
const DECOY: &[u8] = b"x";

/// Version of the record layout below (the first byte of the metadata).
const FORMAT: u8 = 1;

/// Size of an account record with the longest salt: a decoy write has this size.
const ACCOUNT_RECORD_MAX: usize = 8 + 8 + 4 + 4 + 8 + 8 + 4 + 32 + 32 + 1 + MAX_SALT;

const _: () = {
    // The longest key is an outcome's; the longest values, an account's and a journal
    // entry's. (Keys on flash are read back into a `Key`: a longer one would not load.)
    assert!(1 + 1 + MAX_USERNAME + MAX_TRANSFER_ID <= KEY_CAP);
    assert!(ACCOUNT_RECORD_MAX <= VALUE_CAP);
    assert!(3 + 2 * MAX_USERNAME + MAX_TRANSFER_ID + 16 <= VALUE_CAP);
    assert!(1 + MAX_USERNAME + 8 + 1 + 32 + 8 <= VALUE_CAP);
};

/// What the ledger keeps beside the accounts, in one record rewritten by every transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    secret: [u8; 32],
    /// Sequence number of the next journal entry (= committed transfers so far).
    next_seq: u32,
    /// The ledger time of the last write transaction.
    floor: u64,
    /// Money created (opening balances and deposits), minor units.
    minted: u64,
    /// Accounts so far (the account index's length).
    accounts: u32,
}

/// Appends to a fixed buffer; every record's size is bounded by the constants above, so the
/// pushes cannot fail (they would only truncate).
struct Put<const N: usize>(heapless::Vec<u8, N>);

impl<const N: usize> Put<N> {
    fn new() -> Self {
        Put(heapless::Vec::new())
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let _ = self.0.extend_from_slice(b);
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// A length-prefixed string of at most 255 bytes.
    fn text(&mut self, s: &str) -> &mut Self {
        self.u8(s.len() as u8).bytes(s.as_bytes())
    }
    fn done(&mut self) -> heapless::Vec<u8, N> {
        core::mem::take(&mut self.0)
    }
}

/// Reads what [`Put`] wrote; `None` for a short or malformed record.
struct Get<'a>(&'a [u8]);

impl<'a> Get<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }
    fn text(&mut self) -> Option<&'a str> {
        let n = self.u8()? as usize;
        core::str::from_utf8(self.bytes(n)?).ok()
    }
}

/// A key from its parts, in order (one non-generic builder for every kind of key; every key's
/// length is bounded by [`KEY_CAP`], checked at compile time above).
fn key(parts: &[&[u8]]) -> Key {
    let mut k = Key::new();
    for part in parts {
        let _ = k.extend_from_slice(part);
    }
    k
}

/// The key of a fixed record (`META`, `WAL`).
fn fixed_key(name: &[u8]) -> Key {
    key(&[name])
}

fn account_key(user: &Username) -> Key {
    key(&[&[ACCOUNT], user.as_str().as_bytes()])
}

fn outcome_key(from: &Username, id: &TransferId) -> Key {
    let from = from.as_str();
    key(&[
        &[OUTCOME, from.len() as u8],
        from.as_bytes(),
        id.as_str().as_bytes(),
    ])
}

fn index_key(i: u32) -> Key {
    key(&[&[INDEX], &i.to_be_bytes()])
}

fn journal_key(seq: u32) -> Key {
    key(&[&[JOURNAL], &seq.to_be_bytes()])
}

fn encode_meta(m: &Meta) -> Value {
    Put::new()
        .u8(FORMAT)
        .bytes(&m.secret)
        .u32(m.next_seq)
        .u64(m.floor)
        .u64(m.minted)
        .u32(m.accounts)
        .done()
}

fn decode_meta(v: &[u8]) -> Option<Meta> {
    let mut g = Get(v);
    if g.u8()? != FORMAT {
        return None;
    }
    Some(Meta {
        secret: g.array()?,
        next_seq: g.u32()?,
        floor: g.u64()?,
        minted: g.u64()?,
        accounts: g.u32()?,
    })
}

/// An account as stored: lockout instants in ledger time.
fn encode_account(a: &FlashAccount) -> Value {
    let v = &a.verifier;
    Put::new()
        .u64(a.balance.minor())
        .u64(a.deposited)
        .u32(a.deposits)
        .u32(a.lockout.failures)
        .u64(a.lockout.last_failure.millis())
        .u64(a.lockout.locked_until.millis())
        .u32(v.iterations)
        .bytes(&v.stored_key)
        .bytes(&v.server_key)
        .u8(v.salt.len() as u8)
        .bytes(&v.salt)
        .done()
}

fn decode_account(user: Username, v: &[u8]) -> Option<FlashAccount> {
    let mut g = Get(v);
    let balance = Amount(g.u64()?);
    let deposited = g.u64()?;
    let deposits = g.u32()?;
    let lockout = LockoutState {
        failures: g.u32()?,
        last_failure: Instant::from_millis(g.u64()?),
        locked_until: Instant::from_millis(g.u64()?),
    };
    let iterations = g.u32()?;
    let stored_key = g.array()?;
    let server_key = g.array()?;
    let salt_len = g.u8()? as usize;
    let salt = heapless::Vec::from_slice(g.bytes(salt_len)?).ok()?;
    Some(FlashAccount {
        user,
        verifier: Verifier {
            salt,
            iterations,
            stored_key,
            server_key,
        },
        balance,
        lockout,
        deposited,
        deposits,
    })
}

/// An id's final outcome as stored.
#[derive(Debug, Clone)]
struct Outcome {
    to: Username,
    amount: Amount,
    result: Result<(), ErrorCode>,
    balance: Amount,
}

fn encode_outcome(o: &Outcome) -> Value {
    Put::new()
        .text(o.to.as_str())
        .u64(o.amount.minor())
        .text(o.result.err().map_or("", ErrorCode::name))
        .u64(o.balance.minor())
        .done()
}

fn decode_outcome(v: &[u8]) -> Option<Outcome> {
    let mut g = Get(v);
    let to = Username::parse(g.text()?).ok()?;
    let amount = Amount(g.u64()?);
    let result = match g.text()? {
        "" => Ok(()),
        name => Err(ErrorCode::from_name(name)?),
    };
    Some(Outcome {
        to,
        amount,
        result,
        balance: Amount(g.u64()?),
    })
}

fn encode_journal(e: &JournalEntry) -> Value {
    Put::new()
        .text(e.from.as_str())
        .text(e.id.as_str())
        .text(e.to.as_str())
        .u64(e.amount.minor())
        .u64(e.balance_after.minor())
        .done()
}

fn decode_journal(v: &[u8]) -> Option<JournalEntry> {
    let mut g = Get(v);
    Some(JournalEntry {
        from: Username::parse(g.text()?).ok()?,
        id: TransferId::parse(g.text()?).ok()?,
        to: Username::parse(g.text()?).ok()?,
        amount: Amount(g.u64()?),
        balance_after: Amount(g.u64()?),
        at: 0,
        refused: None,
    })
}

/// Size of the map's working buffer and of the largest write-ahead record: a transfer's
/// records with the longest names, with room to spare.
pub const BUFFER: usize = 1024;

/// The map's working buffer (word-aligned, as some flash drivers want).
#[repr(align(4))]
struct Buffer([u8; BUFFER]);

type Map<F> = MapStorage<Key, F, Cache<Uncached, Uncached, Uncached, Key>>;

/// Bytes the map's futures may take while they run (the larger of `fetch_item`'s and
/// `store_item`'s state, checked at compile time in [`run`]). They are measured per pointer
/// width: a future holds references.
const ARENA: usize = if cfg!(target_pointer_width = "64") {
    ARENA_64
} else {
    ARENA_32
};
/// [`ARENA`] on 32-bit targets (Cortex-M, RISC-V): the futures measured 508 and 540 bytes on
/// thumbv7em (sequential-storage 8.0.2, rustc 1.96; the `device-flash` image prints them).
const ARENA_32: usize = 640;
/// [`ARENA`] on 64-bit hosts.
const ARENA_64: usize = 1280;

/// Where a running map operation's future lives: in the ledger (RAM), not on the stack.
#[repr(C, align(8))]
struct Arena(MaybeUninit<[u8; ARENA]>);

/// The map with everything its operations need, each operation polled from one place
/// ([`run`]) with its future in the arena.
///
/// Why: sequential-storage is async only, and its futures nest a dozen `async fn`s deep.
/// Awaited from the ledger's own async code and driven by `block_on` (as the ledger first
/// did), the whole future tree and the copies made at each level lived in stack frames
/// (`Ledger::execute`'s alone was 6.5 KiB on Cortex-M4), and the device's stack peaked at
/// 19.9 KiB against its 8 KiB budget. Here the ledger's logic is synchronous and only the
/// map's two entry points are futures, each written once into the arena and polled in place.
struct Store<F: AsyncNorFlash> {
    map: Map<F>,
    buffer: Buffer,
    arena: Arena,
}

impl<F: AsyncNorFlash> Store<F> {
    /// The latest value of `key`, in the working buffer.
    fn fetch(&mut self, key: &Key) -> Result<Option<&[u8]>, StorageError> {
        let Store { map, buffer, arena } = self;
        Ok(run(arena, || map.fetch_item::<&[u8]>(&mut buffer.0, key))?)
    }

    /// The sizes of the map operations' futures, which [`ARENA`] must hold.
    fn future_sizes(&mut self) -> [usize; 2] {
        fn size<T>(_: &impl FnOnce() -> T) -> usize {
            size_of::<T>()
        }
        let Store { map, buffer, .. } = self;
        let key = Key::new();
        let value: &[u8] = &[];
        let fetch = size(&|| map.fetch_item::<&[u8]>(&mut buffer.0, &key));
        let store = size(&|| map.store_item(&mut buffer.0, &key, &value));
        [fetch, store]
    }

    /// Stores `value` as `key`'s latest value.
    fn store(&mut self, key: &Key, value: &[u8]) -> Result<(), StorageError> {
        let Store { map, buffer, arena } = self;
        Ok(run(arena, || map.store_item(&mut buffer.0, key, &value))?)
    }
}

/// Runs the future `make` returns to completion, in `arena`. Over [`NorFlashPages`] every
/// flash operation is done when first polled, so this never waits; an async flash that is not
/// ready is polled again at once (the ledger answers synchronously).
///
/// Not inlined, so that its frame is the same for every call: the callers' frames stay small.
#[inline(never)]
fn run<T: Future>(arena: &mut Arena, make: impl FnOnce() -> T) -> T::Output {
    const {
        assert!(
            size_of::<T>() <= ARENA && align_of::<T>() <= align_of::<Arena>(),
            "a map future outgrew the arena: raise ARENA_32 / ARENA_64"
        )
    };
    /// Drops the future in place when the call ends, also if a poll panics (pinned memory is
    /// dropped before it is reused).
    struct Slot<T>(*mut T);
    impl<T> Drop for Slot<T> {
        fn drop(&mut self) {
            // SAFETY: the slot holds a future written by `run` and not yet dropped.
            unsafe { core::ptr::drop_in_place(self.0) }
        }
    }
    let at = arena.0.as_mut_ptr().cast::<T>();
    // SAFETY: the arena is large and aligned enough for `T` (checked above) and exclusively
    // borrowed for this whole call. The future is written once; only then does `Slot` own it
    // (so a panic in `make` drops nothing), and it is pinned there, never moved, and dropped
    // in place by `Slot` before the borrow ends.
    let slot = unsafe {
        at.write(make());
        Slot(at)
    };
    // SAFETY: as above: initialised, never moved until dropped in place.
    let mut future = unsafe { Pin::new_unchecked(&mut *slot.0) };
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

/// The ledger on NOR flash that survives power loss: see the [module documentation](self).
///
/// `F` is the flash: a blocking [`NorFlash`] in [`NorFlashPages`] (what [`open`](Self::open)
/// makes), or any async [`NorFlash`](embedded_storage_async::nor_flash::NorFlash)
/// ([`open_on`](Self::open_on)), whose operations the ledger runs to completion.
pub struct FlashLedger<F: AsyncNorFlash> {
    store: Store<F>,
    /// The write-ahead record being written or replayed.
    record: heapless::Vec<u8, BUFFER>,
    opening_balance: Amount,
    /// The last committed metadata (reloaded after a failed transaction).
    meta: Meta,
    /// Ledger time minus the driver's clock, fixed at open.
    epoch: u64,
    /// An operation failed: the last transaction may be unfinished and `meta` stale.
    stale: bool,
}

impl<F: AsyncNorFlash> core::fmt::Debug for FlashLedger<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlashLedger")
            .field("opening_balance", &self.opening_balance)
            .field("committed", &self.meta.next_seq)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<F: NorFlash> FlashLedger<NorFlashPages<F>> {
    /// Opens the ledger on a blocking flash: see [`open_on`](Self::open_on).
    pub fn open(
        flash: F,
        opening_balance: Amount,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<Self, OpenError> {
        Self::open_on(NorFlashPages::new(flash), opening_balance, rng, now)
    }

    /// [`open`](Self::open) into `slot`: see [`open_on_in`](Self::open_on_in).
    pub fn open_in<'s>(
        slot: &'s mut MaybeUninit<Self>,
        flash: F,
        opening_balance: Amount,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<&'s mut Self, OpenError> {
        Self::open_on_in(slot, NorFlashPages::new(flash), opening_balance, rng, now)
    }

    /// Erases the whole flash (a factory reset): the next [`open`](Self::open) starts a new,
    /// empty ledger with a new secret.
    pub fn erase_all(flash: &mut F) -> Result<(), F::Error> {
        let end = (flash.capacity() / F::ERASE_SIZE * F::ERASE_SIZE) as u32;
        flash.erase(0, end)
    }
}

impl<F: AsyncNorFlash> FlashLedger<F> {
    /// Opens the ledger on `flash` (all of it, rounded down to whole sectors) at the driver's
    /// time `now`: finishes the last transaction if a cut interrupted it, and provisions a
    /// flash without a ledger with a secret drawn from `rng`. New accounts get
    /// `opening_balance` (minted money).
    pub fn open_on(
        flash: F,
        opening_balance: Amount,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<Self, OpenError> {
        let mut slot = MaybeUninit::uninit();
        Self::open_on_in(&mut slot, flash, opening_balance, rng, now)?;
        // SAFETY: `open_on_in` succeeded, so it initialised the slot.
        Ok(unsafe { slot.assume_init() })
    }

    /// [`open_on`](Self::open_on) into `slot` (say a `static`), without moving the ledger
    /// through the stack: its buffers are a few KiB, a device's stack budget 8 KiB. On an error
    /// the slot is left uninitialised (the flash is dropped).
    pub fn open_on_in<'s>(
        slot: &'s mut MaybeUninit<Self>,
        flash: F,
        opening_balance: Amount,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<&'s mut Self, OpenError> {
        let end = (flash.capacity() / F::ERASE_SIZE * F::ERASE_SIZE) as u32;
        let config = MapConfig::try_new(0..end).map_err(|_| OpenError::Geometry)?;
        let at = slot.as_mut_ptr();
        // SAFETY: `at` is valid for writes and every field is written here, the large ones in
        // place (the working buffer zeroed, the arena left uninitialised: it is a
        // `MaybeUninit`), before the reference below is made.
        let ledger = unsafe {
            addr_of_mut!((*at).store.map).write(MapStorage::new(
                flash,
                config,
                Cache::new_uncached(),
            ));
            addr_of_mut!((*at).store.buffer).write_bytes(0, 1);
            addr_of_mut!((*at).record).write(heapless::Vec::new());
            addr_of_mut!((*at).opening_balance).write(opening_balance);
            addr_of_mut!((*at).meta).write(Meta {
                secret: [0; 32],
                next_seq: 0,
                floor: now.millis(),
                minted: 0,
                accounts: 0,
            });
            addr_of_mut!((*at).epoch).write(0);
            addr_of_mut!((*at).stale).write(false);
            &mut *at
        };
        match ledger.boot(rng, now) {
            Ok(()) => Ok(ledger),
            Err(e) => {
                // SAFETY: initialised above and not used after; the caller's slot goes back to
                // uninitialised.
                unsafe { core::ptr::drop_in_place(ledger) };
                Err(OpenError::Storage(e))
            }
        }
    }

    /// At open: finishes the last transaction, reads the metadata or provisions the secret,
    /// fixes the epoch.
    fn boot(
        &mut self,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<(), StorageError> {
        self.recover()?;
        match self.read_meta()? {
            Some(meta) => self.meta = meta,
            None => {
                // First boot: provision the secret, once.
                rng.fill_bytes(&mut self.meta.secret);
                let meta = self.meta;
                self.commit(now, &meta)?;
            }
        }
        self.epoch = self.meta.floor.saturating_sub(now.millis());
        Ok(())
    }

    /// The device secret: random, drawn at the first boot, the same at every boot after
    /// (pass it as [`DeviceConfig::secret`](crate::device::DeviceConfig::secret)).
    pub fn secret(&self) -> [u8; 32] {
        self.meta.secret
    }

    /// Runs `f` on the flash under the ledger: to save its image, or to take it back at a
    /// simulated power-off. Writing to it behind the ledger's back corrupts the ledger.
    pub fn with_flash<T>(&mut self, f: impl FnOnce(&mut F) -> T) -> T {
        f(self.store.map.flash())
    }

    /// Gives the flash back (the ledger is closed; the flash holds everything).
    pub fn into_flash(self) -> F {
        self.store.map.destroy().0
    }

    /// The bytes the map's futures take while they run (`fetch_item`, `store_item`): they live
    /// in the ledger, in an arena of [`ARENA`] bytes, rather than on the stack. For footprint
    /// reports.
    pub fn map_future_sizes(&mut self) -> [usize; 2] {
        self.store.future_sizes()
    }

    /// Transfers committed so far (the journal's length).
    pub fn committed(&self) -> u32 {
        self.meta.next_seq
    }

    /// Money created: opening balances plus deposits, minor units. Equals the sum of the
    /// balances always.
    pub fn minted(&self) -> u128 {
        u128::from(self.meta.minted)
    }

    /// Ledger time minus the driver's clock (see "Time across resets" in the module docs).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Answers `request` as the [`Ledger`] contract says ([`Ledger::execute`]).
    fn execute_now(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
        match self.try_execute(request, now) {
            Ok(reply) => reply,
            Err(_) => {
                self.stale = true;
                LedgerReply::Unavailable
            }
        }
    }

    /// Creates `user` with `verifier` and `balance` (minted money), as an administrator
    /// provisions an account: `UserExists`, `BalanceOverflow` past
    /// [`MAX_BALANCE`](txsock_core::ledger::MAX_BALANCE), `LedgerFull` when the flash is
    /// full, `Internal` if the flash failed.
    pub fn add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        let result = self.try_add_user(user, verifier, balance, now);
        self.settle(result)
    }

    /// Adds `amount` to `user` (money created by an administrator); returns the new balance.
    /// `UnknownRecipient`, `BalanceOverflow`, `LedgerFull`, or `Internal` as
    /// [`add_user`](Self::add_user).
    pub fn deposit(
        &mut self,
        user: &Username,
        amount: Amount,
        now: Instant,
    ) -> Result<Amount, ErrorCode> {
        let result = self.try_deposit(user, amount, now);
        self.settle(result)
    }

    /// Changes `user`'s account with `change` (an administrator's unlock, a test's
    /// corruption) and writes it back; `Ok(false)` for an unknown user. Changing a balance
    /// here bypasses the money rule.
    pub fn update_account(
        &mut self,
        user: &Username,
        now: Instant,
        change: impl FnOnce(&mut FlashAccount),
    ) -> Result<bool, StorageError> {
        let result = self.try_update(user, now, change);
        if result.is_err() {
            self.stale = true;
        }
        result
    }

    /// Calls `f` with every account, in the order they were created.
    pub fn for_each_account(
        &mut self,
        mut f: impl FnMut(&FlashAccount),
    ) -> Result<(), StorageError> {
        for i in 0..self.meta.accounts {
            let name = self
                .read(&index_key(i), |v| {
                    core::str::from_utf8(v)
                        .ok()
                        .and_then(|name| Username::parse(name).ok())
                })?
                .ok_or(StorageError::Corrupted)?;
            let mut account = self.read_account(&name)?.ok_or(StorageError::Corrupted)?;
            account.lockout = self.to_driver(account.lockout);
            f(&account);
        }
        Ok(())
    }

    /// Calls `f` with every committed transfer, oldest first (`at` is 0: the ledger keeps no
    /// wall clock).
    pub fn for_each_committed(
        &mut self,
        mut f: impl FnMut(&JournalEntry),
    ) -> Result<(), StorageError> {
        for seq in 0..self.meta.next_seq {
            f(&self.read_journal(seq)?);
        }
        Ok(())
    }

    fn settle<T>(
        &mut self,
        result: Result<Result<T, ErrorCode>, StorageError>,
    ) -> Result<T, ErrorCode> {
        match result {
            Ok(r) => r,
            Err(StorageError::Full) => Err(ErrorCode::LedgerFull),
            Err(_) => {
                self.stale = true;
                Err(ErrorCode::Internal)
            }
        }
    }

    fn ledger_time(&self, now: Instant) -> u64 {
        now.millis().saturating_add(self.epoch)
    }

    /// A stored lockout state (ledger time) in the driver's clock of this boot. Zero stays
    /// zero ("never"); an instant before this boot becomes zero (in the past).
    fn to_driver(&self, s: LockoutState) -> LockoutState {
        let t = |i: Instant| Instant::from_millis(i.millis().saturating_sub(self.epoch));
        LockoutState {
            failures: s.failures,
            last_failure: t(s.last_failure),
            locked_until: t(s.locked_until),
        }
    }

    /// Reads `key`'s latest value into the buffer and decodes it with `decode`.
    fn read<T>(
        &mut self,
        key: &Key,
        decode: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, StorageError> {
        match self.store.fetch(key)? {
            Some(value) => decode(value).map(Some).ok_or(StorageError::Corrupted),
            None => Ok(None),
        }
    }

    fn read_meta(&mut self) -> Result<Option<Meta>, StorageError> {
        self.read(&fixed_key(META), decode_meta)
    }

    fn read_account(&mut self, user: &Username) -> Result<Option<FlashAccount>, StorageError> {
        self.read(&account_key(user), |v| decode_account(user.clone(), v))
    }

    fn read_outcome(
        &mut self,
        from: &Username,
        id: &TransferId,
    ) -> Result<Option<Outcome>, StorageError> {
        self.read(&outcome_key(from, id), decode_outcome)
    }

    fn read_journal(&mut self, seq: u32) -> Result<JournalEntry, StorageError> {
        self.read(&journal_key(seq), decode_journal)?
            .ok_or(StorageError::Corrupted)
    }

    /// Adds the write of `value` to `key` to the transaction being built (the write-ahead
    /// record in `self.record`).
    #[inline(never)]
    fn stage(&mut self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        if self.record.is_empty() {
            // The entry count, raised as entries come.
            let _ = self.record.push(0);
        }
        let record = &mut self.record;
        let fits = record.extend_from_slice(&[key.len() as u8]).is_ok()
            && record.extend_from_slice(key).is_ok()
            && record
                .extend_from_slice(&(value.len() as u16).to_le_bytes())
                .is_ok()
            && record.extend_from_slice(value).is_ok();
        if !fits {
            // Bounded by the record sizes checked at compile time: cannot happen.
            self.record.clear();
            return Err(StorageError::Corrupted);
        }
        self.record[0] += 1;
        Ok(())
    }

    /// Commits the staged writes and the metadata `meta` (with the time floor raised to
    /// `now`) as one transaction: the write-ahead record first (the commit point), then each
    /// record. On success `meta` becomes the cached metadata.
    fn commit(&mut self, now: Instant, meta: &Meta) -> Result<(), StorageError> {
        let mut meta = *meta;
        meta.floor = meta.floor.max(self.ledger_time(now));
        self.stage(META, &encode_meta(&meta))?;
        let wal = fixed_key(WAL);
        let stored = self.store.store(&wal, &self.record);
        if let Err(e) = stored {
            self.record.clear();
            return Err(e);
        }
        // Committed: from here on, a cut is finished by the next boot.
        let applied = self.apply(false);
        self.record.clear();
        applied?;
        self.meta = meta;
        Ok(())
    }

    /// Stores each record of the write-ahead record in `self.record`; with `check`, only
    /// those that do not already hold their value (a replay at boot writes nothing when the
    /// transaction had finished).
    fn apply(&mut self, check: bool) -> Result<(), StorageError> {
        let Some((&count, mut rest)) = self.record.split_first() else {
            return Ok(());
        };
        for _ in 0..count {
            let mut get = Get(rest);
            let entry = (|| {
                let key_len = get.u8()? as usize;
                let key = get.bytes(key_len)?;
                let value_len = u16::from_le_bytes(get.array()?) as usize;
                Some((key, get.bytes(value_len)?))
            })();
            let Some((key, value)) = entry else {
                return Err(StorageError::Corrupted);
            };
            rest = get.0;
            let key = Key::from_slice(key).map_err(|_| StorageError::Corrupted)?;
            if check && self.store.fetch(&key)? == Some(value) {
                continue;
            }
            self.store.store(&key, value)?;
        }
        Ok(())
    }

    /// Finishes the last transaction from its write-ahead record (see the module docs).
    fn recover(&mut self) -> Result<(), StorageError> {
        let wal = fixed_key(WAL);
        let Some(record) = self.store.fetch(&wal)? else {
            return Ok(());
        };
        self.record.clear();
        self.record
            .extend_from_slice(record)
            .map_err(|_| StorageError::Corrupted)?;
        let applied = self.apply(true);
        // The next transaction builds its own record.
        self.record.clear();
        applied
    }

    fn try_execute(
        &mut self,
        request: &LedgerRequest,
        now: Instant,
    ) -> Result<LedgerReply, StorageError> {
        if self.stale {
            // After a failed transaction, finish it from its write-ahead record and believe
            // the flash, not the cache.
            self.recover()?;
            if let Some(meta) = self.read_meta()? {
                self.meta = meta;
            }
            self.stale = false;
        }
        Ok(match request {
            LedgerRequest::Register { user, verifier } => {
                let opening = self.opening_balance;
                match self.try_add_user(user, verifier, opening, now) {
                    Err(StorageError::Full) => LedgerReply::Registered(Err(ErrorCode::LedgerFull)),
                    other => LedgerReply::Registered(other?),
                }
            }
            LedgerRequest::Credentials { user } => match self.read_account(user)? {
                Some(account) => LedgerReply::Credentials {
                    verifier: Some(account.verifier),
                    lockout: self.to_driver(account.lockout),
                },
                None => LedgerReply::Credentials {
                    verifier: None,
                    lockout: LockoutState::default(),
                },
            },
            LedgerRequest::LoginFailed {
                user,
                now: at,
                policy,
            } => LedgerReply::Recorded(self.login_failed(user, *at, policy, now)?),
            LedgerRequest::LoginSucceeded { user } => {
                self.login_succeeded(user, now)?;
                LedgerReply::Recorded(LockoutState::default())
            }
            LedgerRequest::Transfer {
                from,
                id,
                to,
                amount,
            } => LedgerReply::Transfer(self.transfer(from, id, to, *amount, now)?),
            LedgerRequest::Balance { user } => LedgerReply::Balance(
                self.read_account(user)?
                    .map(|a| a.balance)
                    .ok_or(ErrorCode::NotLoggedIn),
            ),
            // Deposits are kept as per-account totals, not as journal entries: none listed.
            LedgerRequest::History { user, offset, .. } => {
                LedgerReply::History(Ok(self.history(user, *offset)?))
            }
            // A request this ledger does not know yet (the enum may grow): not answerable.
            _ => LedgerReply::Unavailable,
        })
    }

    /// Records a failed login of `user` at `at` (the driver's clock).
    // Each request kind in its own frame (here and below): the device's stack holds only the
    // one that runs, not all of them side by side.
    #[inline(never)]
    fn login_failed(
        &mut self,
        user: &Username,
        at: Instant,
        policy: &Backoff,
        now: Instant,
    ) -> Result<LockoutState, StorageError> {
        let at_ledger = Instant::from_millis(self.ledger_time(at));
        let meta = self.meta;
        match self.read_account(user)? {
            Some(mut account) => {
                account.lockout.record_failure(at_ledger, policy);
                self.stage(&account_key(user), &encode_account(&account))?;
                self.commit(now, &meta)?;
                Ok(self.to_driver(account.lockout))
            }
            None => {
                // The same storage work as for a known user (see the contract).
                self.stage(DECOY, &[0; ACCOUNT_RECORD_MAX])?;
                self.commit(now, &meta)?;
                Ok(LockoutState::default())
            }
        }
    }

    /// Clears `user`'s failed logins, if any.
    #[inline(never)]
    fn login_succeeded(&mut self, user: &Username, now: Instant) -> Result<(), StorageError> {
        if let Some(mut account) = self.read_account(user)? {
            // Most logins follow no failure: nothing to write then.
            if account.lockout != LockoutState::default() {
                account.lockout.record_success();
                self.stage(&account_key(user), &encode_account(&account))?;
                let meta = self.meta;
                self.commit(now, &meta)?;
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn transfer(
        &mut self,
        from: &Username,
        id: &TransferId,
        to: &Username,
        amount: Amount,
        now: Instant,
    ) -> Result<TransferOutcome, StorageError> {
        let sender = self.read_account(from)?;
        let recipient = self.read_account(to)?;
        let earlier = self.read_outcome(from, id)?;
        let facts = TransferFacts {
            sender: sender.as_ref().map(|a| a.balance),
            recipient: recipient.as_ref().map(|a| a.balance),
            earlier: earlier.as_ref().map(|o| RecordedOutcome {
                to: o.to.as_str(),
                amount: o.amount,
                result: o.result,
                balance: o.balance,
            }),
        };
        let decision = decide_transfer(from, to, amount, facts);
        let outcome = decision.outcome();
        let record = |result, balance| Outcome {
            to: to.clone(),
            amount,
            result,
            balance,
        };
        let meta = self.meta;
        match decision {
            TransferDecision::Answer(_) => Ok(outcome),
            TransferDecision::Refuse(refusal) => {
                self.stage(
                    &outcome_key(from, id),
                    &encode_outcome(&record(refusal.result, refusal.balance)),
                )?;
                match self.commit(now, &meta) {
                    // Recorded so a retry gets the same answer; a full flash only loses that.
                    Ok(()) | Err(StorageError::Full) => Ok(outcome),
                    Err(e) => Err(e),
                }
            }
            TransferDecision::Commit {
                sender_after,
                recipient_after,
            } => {
                // Both accounts exist: the rule commits only with both balances read.
                let (Some(mut sender), Some(mut recipient)) = (sender, recipient) else {
                    return Err(StorageError::Corrupted);
                };
                sender.balance = sender_after;
                recipient.balance = recipient_after;
                let mut next = meta;
                next.next_seq = meta.next_seq.checked_add(1).ok_or(StorageError::Full)?;
                // One record per statement, so that their encodings share stack slots.
                self.stage(&account_key(from), &encode_account(&sender))?;
                self.stage(&account_key(to), &encode_account(&recipient))?;
                self.stage(
                    &outcome_key(from, id),
                    &encode_outcome(&record(Ok(()), sender_after)),
                )?;
                self.stage(
                    &journal_key(meta.next_seq),
                    &encode_journal(&JournalEntry {
                        id: id.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        amount,
                        balance_after: sender_after,
                        at: 0,
                        refused: None,
                    }),
                )?;
                drop((sender, recipient));
                match self.commit(now, &next) {
                    Ok(()) => Ok(outcome),
                    Err(StorageError::Full) => Ok(TransferOutcome {
                        result: Err(ErrorCode::LedgerFull),
                        balance: facts.sender.unwrap_or(Amount(0)),
                    }),
                    Err(e) => Err(e),
                }
            }
        }
    }

    #[inline(never)]
    fn history(&mut self, user: &Username, offset: u32) -> Result<HistoryPage, StorageError> {
        let mut page = HistoryPage::default();
        let mut skip = offset;
        for seq in (0..self.meta.next_seq).rev() {
            let entry = self.read_journal(seq)?;
            if entry.from != *user && entry.to != *user {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if page.entries.len() == HISTORY_PAGE {
                page.more = true;
                break;
            }
            // len < HISTORY_PAGE, so there is room.
            let _ = page.entries.push((&entry).into());
        }
        Ok(page)
    }

    #[inline(never)]
    fn try_add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        now: Instant,
    ) -> Result<Result<(), ErrorCode>, StorageError> {
        if self.read_account(user)?.is_some() {
            return Ok(Err(ErrorCode::UserExists));
        }
        let balance = match credit(Amount(0), balance) {
            Ok(b) => b,
            Err(code) => return Ok(Err(code)),
        };
        let mut meta = self.meta;
        let Some(minted) = meta.minted.checked_add(balance.minor()) else {
            return Ok(Err(ErrorCode::BalanceOverflow));
        };
        meta.minted = minted;
        let Some(accounts) = meta.accounts.checked_add(1) else {
            return Ok(Err(ErrorCode::LedgerFull));
        };
        let index = index_key(meta.accounts);
        meta.accounts = accounts;
        let account = FlashAccount {
            user: user.clone(),
            verifier: verifier.clone(),
            balance,
            lockout: LockoutState::default(),
            deposited: balance.minor(),
            deposits: u32::from(balance.minor() > 0),
        };
        self.stage(&account_key(user), &encode_account(&account))?;
        self.stage(&index, user.as_str().as_bytes())?;
        drop(account);
        self.commit(now, &meta)?;
        Ok(Ok(()))
    }

    fn try_deposit(
        &mut self,
        user: &Username,
        amount: Amount,
        now: Instant,
    ) -> Result<Result<Amount, ErrorCode>, StorageError> {
        let Some(mut account) = self.read_account(user)? else {
            return Ok(Err(ErrorCode::UnknownRecipient));
        };
        let mut meta = self.meta;
        let (Some(minted), Some(deposited)) = (
            meta.minted.checked_add(amount.minor()),
            account.deposited.checked_add(amount.minor()),
        ) else {
            return Ok(Err(ErrorCode::BalanceOverflow));
        };
        account.balance = match credit(account.balance, amount) {
            Ok(b) => b,
            Err(code) => return Ok(Err(code)),
        };
        account.deposited = deposited;
        account.deposits = account.deposits.saturating_add(1);
        meta.minted = minted;
        let balance = account.balance;
        self.stage(&account_key(user), &encode_account(&account))?;
        drop(account);
        self.commit(now, &meta)?;
        Ok(Ok(balance))
    }

    fn try_update(
        &mut self,
        user: &Username,
        now: Instant,
        change: impl FnOnce(&mut FlashAccount),
    ) -> Result<bool, StorageError> {
        let Some(mut account) = self.read_account(user)? else {
            return Ok(false);
        };
        let epoch = self.epoch;
        account.lockout = self.to_driver(account.lockout);
        change(&mut account);
        account.user = user.clone();
        // Back to ledger time (zero stays "never").
        let t = |i: Instant| match i.millis() {
            0 => i,
            ms => Instant::from_millis(ms.saturating_add(epoch)),
        };
        account.lockout.last_failure = t(account.lockout.last_failure);
        account.lockout.locked_until = t(account.lockout.locked_until);
        self.stage(&account_key(user), &encode_account(&account))?;
        drop(account);
        let meta = self.meta;
        self.commit(now, &meta)?;
        Ok(true)
    }
}

impl<F: AsyncNorFlash> FlashLedger<F> {
    /// Sum of all balances, minor units.
    pub fn total(&mut self) -> Result<u128, StorageError> {
        let mut total = 0u128;
        self.for_each_account(|a| total += u128::from(a.balance.minor()))?;
        Ok(total)
    }
}

impl<F: AsyncNorFlash> Ledger for FlashLedger<F> {
    fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
        self.execute_now(request, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram_flash::{RamFlash, ERASE_SIZE};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use txsock_core::lockout::Backoff;

    type Image = RamFlash<Vec<u8>>;
    type Opened<'f> = FlashLedger<NorFlashPages<&'f mut Image>>;

    fn blank(pages: usize) -> Image {
        RamFlash::new(vec![0xFF; pages * ERASE_SIZE])
    }

    fn open(flash: &mut Image, now: u64) -> Opened<'_> {
        let mut rng = ChaCha20Rng::seed_from_u64(now);
        FlashLedger::open(flash, Amount(1000), &mut rng, Instant::from_millis(now)).unwrap()
    }

    fn user(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    fn verifier(seed: u8) -> Verifier {
        Verifier {
            salt: heapless::Vec::from_slice(&[seed; 16]).unwrap(),
            iterations: 4096,
            stored_key: [seed; 32],
            server_key: [seed ^ 1; 32],
        }
    }

    fn register(l: &mut Opened<'_>, name: &str) -> LedgerReply {
        l.execute(
            &LedgerRequest::Register {
                user: user(name),
                verifier: verifier(name.len() as u8),
            },
            Instant::ZERO,
        )
    }

    fn send(l: &mut Opened<'_>, from: &str, id: &str, to: &str, amount: u64) -> LedgerReply {
        l.execute(
            &LedgerRequest::Transfer {
                from: user(from),
                id: TransferId::parse(id).unwrap(),
                to: user(to),
                amount: Amount(amount),
            },
            Instant::ZERO,
        )
    }

    fn balance(l: &mut Opened<'_>, name: &str) -> LedgerReply {
        l.execute(&LedgerRequest::Balance { user: user(name) }, Instant::ZERO)
    }

    fn transferred(result: Result<(), ErrorCode>, balance: u64) -> LedgerReply {
        LedgerReply::Transfer(TransferOutcome {
            result,
            balance: Amount(balance),
        })
    }

    #[test]
    fn everything_survives_a_reboot_and_the_secret_is_drawn_once() {
        let mut flash = blank(16);
        let secret;
        {
            let mut l = open(&mut flash, 0);
            secret = l.secret();
            assert_ne!(secret, [0; 32]);
            assert_eq!(register(&mut l, "alice"), LedgerReply::Registered(Ok(())));
            assert_eq!(register(&mut l, "bob"), LedgerReply::Registered(Ok(())));
            assert_eq!(
                register(&mut l, "bob"),
                LedgerReply::Registered(Err(ErrorCode::UserExists))
            );
            assert_eq!(
                send(&mut l, "alice", "1", "bob", 300),
                transferred(Ok(()), 700)
            );
            assert_eq!(
                send(&mut l, "alice", "2", "bob", 800),
                transferred(Err(ErrorCode::InsufficientFunds), 700)
            );
        }
        // A different RNG at the next boot: the secret stays the first one.
        let mut l = open(&mut flash, 99);
        assert_eq!(l.secret(), secret);
        assert_eq!(
            balance(&mut l, "alice"),
            LedgerReply::Balance(Ok(Amount(700)))
        );
        assert_eq!(
            balance(&mut l, "bob"),
            LedgerReply::Balance(Ok(Amount(1300)))
        );
        // Both outcomes are final, with their original balances.
        assert_eq!(
            send(&mut l, "alice", "1", "bob", 300),
            transferred(Ok(()), 700)
        );
        l.deposit(&user("alice"), Amount(5000), Instant::ZERO)
            .unwrap();
        assert_eq!(
            send(&mut l, "alice", "2", "bob", 800),
            transferred(Err(ErrorCode::InsufficientFunds), 700)
        );
        assert_eq!(
            send(&mut l, "alice", "1", "bob", 301),
            transferred(Err(ErrorCode::DuplicateId), 5700)
        );
        assert_eq!(l.total().unwrap(), l.minted());
        let mut journal = Vec::new();
        l.for_each_committed(|e| journal.push((e.from.to_string(), e.id.to_string())))
            .unwrap();
        assert_eq!(journal, [("alice".to_string(), "1".to_string())]);
        let LedgerReply::History(Ok(page)) = l.execute(
            &LedgerRequest::History {
                user: user("bob"),
                offset: 0,
                deposits: true,
            },
            Instant::ZERO,
        ) else {
            panic!("history")
        };
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].amount, Amount(300));
    }

    #[test]
    fn a_lock_keeps_its_remaining_time_across_a_reset() {
        let mut flash = blank(16);
        let policy = Backoff::ACCOUNT;
        let fail = |l: &mut Opened<'_>, at: u64| match l.execute(
            &LedgerRequest::LoginFailed {
                user: user("alice"),
                now: Instant::from_millis(at),
                policy,
            },
            Instant::from_millis(at),
        ) {
            LedgerReply::Recorded(state) => state,
            other => panic!("{other:?}"),
        };
        let locked_until;
        {
            // A long uptime: the device clock is at 10 hours.
            let t = 36_000_000;
            let mut l = open(&mut flash, t);
            register(&mut l, "alice");
            let mut state = LockoutState::default();
            for i in 0..policy.lock_after + 3 {
                state = fail(&mut l, t + u64::from(i));
            }
            locked_until = state.locked_until.millis() - (t + u64::from(policy.lock_after + 2));
            assert!(locked_until >= 8_000, "{state:?}");
        }
        // The reboot's clock starts at 0; the lock still has what it had left.
        let mut l = open(&mut flash, 0);
        let LedgerReply::Credentials { lockout, .. } = l.execute(
            &LedgerRequest::Credentials {
                user: user("alice"),
            },
            Instant::ZERO,
        ) else {
            panic!("credentials")
        };
        assert!(lockout.is_locked(Instant::ZERO));
        assert!(lockout.is_locked(Instant::from_millis(locked_until - 1)));
        assert!(!lockout.is_locked(Instant::from_millis(locked_until)));
        // The failures still count: one more doubles the lock instead of starting over.
        let state = fail(&mut l, 10);
        assert_eq!(state.failures, policy.lock_after + 4);
        // A success resets it, and the reset survives too.
        l.execute(
            &LedgerRequest::LoginSucceeded {
                user: user("alice"),
            },
            Instant::ZERO,
        );
        drop(l);
        let mut l = open(&mut flash, 0);
        assert_eq!(
            l.execute(
                &LedgerRequest::Credentials {
                    user: user("alice")
                },
                Instant::ZERO
            ),
            LedgerReply::Credentials {
                verifier: Some(verifier(5)),
                lockout: LockoutState::default()
            }
        );
    }

    #[test]
    fn a_flash_of_one_sector_is_refused_and_erase_all_starts_anew() {
        let mut small = blank(1);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let opened = FlashLedger::open(&mut small, Amount(0), &mut rng, Instant::ZERO);
        assert_eq!(opened.err(), Some(OpenError::Geometry));
        let mut flash = blank(4);
        let secret = open(&mut flash, 0).secret();
        FlashLedger::<NorFlashPages<&mut Image>>::erase_all(&mut &mut flash).unwrap();
        assert!(flash.bytes().iter().all(|&b| b == 0xFF));
        assert_ne!(open(&mut flash, 1).secret(), secret);
    }

    #[test]
    fn a_full_flash_refuses_with_ledger_full_and_keeps_its_money() {
        let mut flash = blank(4);
        let mut l = open(&mut flash, 0);
        register(&mut l, "a");
        register(&mut l, "b");
        let mut full = false;
        for i in 0..500 {
            match send(&mut l, "a", &format!("{i}"), "b", 0) {
                LedgerReply::Transfer(TransferOutcome {
                    result: Err(ErrorCode::LedgerFull),
                    ..
                }) => {
                    full = true;
                    break;
                }
                // Zero is refused by nobody here: the core rejects it before the ledger.
                LedgerReply::Transfer(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(full, "4 sectors never filled up");
        assert_eq!(l.total().unwrap(), l.minted());
        drop(l);
        let mut l = open(&mut flash, 0);
        assert_eq!(l.total().unwrap(), 2000);
    }
}
