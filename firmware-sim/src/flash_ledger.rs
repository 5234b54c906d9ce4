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
//! - the device secret (the fake-salt key of [`ServerShared::new`]), drawn from the RNG at
//!   the first boot and never changed: [`FlashLedger::secret`];
//! - the time floor that keeps lockouts meaningful across resets (below).
//!
//! # The store: ekv, and why not sequential-storage
//!
//! The storage engine is [ekv](https://docs.rs/ekv), a key-value database for raw NOR flash
//! (a log-structured merge tree) whose **write transactions are atomic across keys**: a
//! transfer writes the sender's account, the recipient's account, the id's outcome, the
//! journal entry and the ledger's metadata in one transaction, and a power cut at any flash
//! write leaves either all of them or none. The correctness argument is therefore short:
//! read the facts, call [`decide_transfer`], write what it says in one transaction, answer
//! only after the commit returned. Nothing is ever half-applied, and no recovery code of our
//! own runs at boot.
//!
//! [sequential-storage](https://docs.rs/sequential-storage) (a map and a queue with
//! power-fail-safe single items) was the other candidate. It has no multi-key transaction: an
//! atomic transfer would need our own write-ahead record (write the outcome with both new
//! balances first, then the two accounts, and redo unfinished ones at boot), that is, a
//! recovery protocol written and proved by hand, which is exactly what the ecosystem store
//! should spare us. Its strength (many small writes per erased page) matters less here than
//! getting money right. The price of ekv: each write transaction starts a new file, so every
//! transfer, registration or failed login programs at least part of a fresh page (erasing
//! one), and the merge tree compacts in the background of writes; reads are `O(log n)`.
//!
//! ekv's geometry is fixed at compile time by this crate's features on it (see
//! `Cargo.toml`): 4 KiB pages, at most 256 of them (1 MiB), 256-byte chunks, CRCs on. The
//! [`NorFlash`] a board lends must erase in sectors that divide 4 KiB and write in units that
//! divide 4 bytes (checked at compile time by [`NorFlashPages`]).
//!
//! # Time across resets
//!
//! A device's clock restarts at every boot, but a lockout's `locked_until` must mean the same
//! thing after a reset (else a power cycle would unlock an account, or a lock taken late in a
//! long uptime would outlast the reboot by that uptime). The ledger therefore keeps its own
//! clock: *ledger time* = the driver's `now` + an epoch fixed at [`open`](FlashLedger::open).
//! Every write transaction records the ledger time it ran at as the **time floor**; at boot
//! the epoch is chosen so that ledger time starts at the floor (`epoch = floor - now_at_boot`,
//! or 0 if the driver's clock is already past the floor, as a wall clock would be). Lockout
//! states are stored in ledger time and converted to and from the driver's clock at the
//! boundary. The effect: ledger time never runs backwards, and time spent powered off counts
//! as zero (the device has no clock to measure it), so a lock resumes after a reboot with the
//! time it had left when the ledger last wrote, and a reset never shortens it.
//!
//! # Using it
//!
//! ```ignore
//! // Blocking flash (embedded_storage::nor_flash::NorFlash), the synchronous device loop:
//! let mut ledger = FlashLedger::open(NorFlashPages::new(flash), opening, &mut rng, now)?;
//! let secret = ledger.secret();               // DeviceConfig::secret
//! let device = Device::init(slot, DeviceParts { ledger: &mut ledger, .. }, ..);
//!
//! // Async flash (embedded_storage_async), an async driver:
//! let mut ledger = FlashLedger::open_async(AsyncNorFlashPages::new(flash), opening, &mut rng, now).await?;
//! let reply = ledger.execute_async(&request, now).await;
//! ```
//!
//! - [`FlashLedger::open`] / [`open_async`](FlashLedger::open_async): mounts the database;
//!   a blank (all-erased) flash is formatted and provisioned with a fresh secret; a flash
//!   that holds something else is refused ([`OpenError::Corrupted`]) rather than wiped.
//! - [`Ledger::execute`] (blocking, for [`NorFlashPages`] whose operations complete at once)
//!   and [`execute_async`](FlashLedger::execute_async): the ledger contract. A flash failure
//!   answers [`LedgerReply::Unavailable`] (the client retries with the same id); a full flash
//!   refuses registrations and transfers with [`ErrorCode::LedgerFull`].
//! - Administration: [`add_user`](FlashLedger::add_user), [`deposit`](FlashLedger::deposit),
//!   [`update_account`](FlashLedger::update_account), and reading everything back with
//!   [`for_each_account`](FlashLedger::for_each_account) and
//!   [`for_each_committed`](FlashLedger::for_each_committed).
//!
//! # Memory
//!
//! RAM: the `FlashLedger` itself ([`size_of`](core::mem::size_of), about 1 KiB: ekv's
//! page readers and allocation bitmap, plus the cached metadata). Flash: every transaction
//! costs at least one page until compaction merges files; keep a few times the live data
//! free. Journal entries and outcomes are never deleted, so the flash bounds the number of
//! transfers a device can make, like `MemLedger`'s `TRANSFERS`.
//!
//! # The first boot and a cut during it
//!
//! Provisioning (format, then one transaction writing the secret) is the only step that is
//! not power-fail safe as a whole: a cut inside ekv's format can leave a torn format header,
//! which the next boot reports as [`OpenError::Corrupted`]. Nothing was acknowledged then, so
//! nothing can be lost: erase the flash ([`FlashLedger::erase_all`]) and boot again. A cut
//! after the format but before the secret's transaction is healed by the next boot.

use core::future::Future;

use ekv::config::{ALIGN, MAX_PAGE_COUNT, PAGE_SIZE};
use ekv::flash::{Flash, PageID};
use ekv::{CommitError, CursorError, Database, MountError, ReadError, WriteError};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embedded_storage::nor_flash::NorFlash;
use rand_core::{CryptoRng, RngCore};
use txsock_core::auth::{Verifier, MAX_SALT};
use txsock_core::ledger::{
    credit, decide_transfer, HistoryPage, JournalEntry, Ledger, LedgerReply, LedgerRequest,
    RecordedOutcome, TransferDecision, TransferFacts, TransferOutcome,
};
use txsock_core::lockout::LockoutState;
use txsock_core::message::HISTORY_PAGE;
use txsock_core::names::{MAX_TRANSFER_ID, MAX_USERNAME};
use txsock_core::{Amount, ErrorCode, Instant, TransferId, Username};

#[allow(unused_imports)] // for doc links
use txsock_core::session::ServerShared;

/// The flash a [`FlashLedger`] runs on: ekv's [`Flash`] (pages), plus the one question ekv
/// cannot answer, whether the flash is blank (so that a first boot formats it and a damaged
/// ledger is never wiped). [`NorFlashPages`] and [`AsyncNorFlashPages`] implement it.
pub trait LedgerFlash: Flash {
    /// Whether every byte of the pages is erased (`0xFF`).
    fn is_blank(&mut self) -> impl Future<Output = Result<bool, Self::Error>>;
}

/// Pages of [`PAGE_SIZE`] bytes over a blocking [`NorFlash`]: the [`Flash`] that ekv (and so
/// a [`FlashLedger`]) runs on. Its operations complete before their futures are first polled,
/// so the blocking [`Ledger::execute`] can drive them.
///
/// Page `i` is bytes `i * PAGE_SIZE ..` of the flash; a flash larger than `MAX_PAGE_COUNT`
/// pages (1 MiB) only has its first 1 MiB used.
#[derive(Debug)]
pub struct NorFlashPages<F> {
    flash: F,
    pages: usize,
}

impl<F: NorFlash> NorFlashPages<F> {
    /// The pages of `flash`. Does not touch it.
    pub fn new(flash: F) -> Self {
        const {
            assert!(
                PAGE_SIZE % F::ERASE_SIZE == 0,
                "flash sectors must divide 4 KiB"
            );
            assert!(ALIGN % F::WRITE_SIZE == 0, "flash write size must divide 4");
            assert!(ALIGN % F::READ_SIZE == 0, "flash read size must divide 4");
        };
        let pages = (flash.capacity() / PAGE_SIZE).min(MAX_PAGE_COUNT);
        NorFlashPages { flash, pages }
    }

    /// The flash.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// The flash, to save or inspect its image (see [`FlashLedger::with_flash`]).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }
}

fn page_offset(page: PageID, offset: usize) -> u32 {
    // At most MAX_PAGE_COUNT * PAGE_SIZE (1 MiB): fits.
    (page.index() * PAGE_SIZE + offset) as u32
}

impl<F: NorFlash> LedgerFlash for NorFlashPages<F> {
    async fn is_blank(&mut self) -> Result<bool, F::Error> {
        let mut chunk = [0u8; 256];
        for offset in (0..self.pages * PAGE_SIZE).step_by(chunk.len()) {
            self.flash.read(offset as u32, &mut chunk)?;
            if chunk.iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl<F: NorFlash> Flash for NorFlashPages<F> {
    type Error = F::Error;

    fn page_count(&self) -> usize {
        self.pages
    }

    async fn erase(&mut self, page: PageID) -> Result<(), F::Error> {
        let from = page_offset(page, 0);
        self.flash.erase(from, from + PAGE_SIZE as u32)
    }

    async fn read(&mut self, page: PageID, offset: usize, data: &mut [u8]) -> Result<(), F::Error> {
        self.flash.read(page_offset(page, offset), data)
    }

    async fn write(&mut self, page: PageID, offset: usize, data: &[u8]) -> Result<(), F::Error> {
        self.flash.write(page_offset(page, offset), data)
    }
}

/// Pages of [`PAGE_SIZE`] bytes over an async
/// [`NorFlash`](embedded_storage_async::nor_flash::NorFlash), for an async driver: use
/// [`FlashLedger::open_async`] and [`FlashLedger::execute_async`] with it (the blocking
/// [`Ledger`] impl would spin while the flash is busy).
#[derive(Debug)]
pub struct AsyncNorFlashPages<F> {
    flash: F,
    pages: usize,
}

impl<F: embedded_storage_async::nor_flash::NorFlash> AsyncNorFlashPages<F> {
    /// The pages of `flash`. Does not touch it.
    pub fn new(flash: F) -> Self {
        const {
            assert!(
                PAGE_SIZE % F::ERASE_SIZE == 0,
                "flash sectors must divide 4 KiB"
            );
            assert!(ALIGN % F::WRITE_SIZE == 0, "flash write size must divide 4");
            assert!(ALIGN % F::READ_SIZE == 0, "flash read size must divide 4");
        };
        let pages = (flash.capacity() / PAGE_SIZE).min(MAX_PAGE_COUNT);
        AsyncNorFlashPages { flash, pages }
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }
}

impl<F: embedded_storage_async::nor_flash::NorFlash> LedgerFlash for AsyncNorFlashPages<F> {
    async fn is_blank(&mut self) -> Result<bool, F::Error> {
        let mut chunk = [0u8; 256];
        for offset in (0..self.pages * PAGE_SIZE).step_by(chunk.len()) {
            self.flash.read(offset as u32, &mut chunk).await?;
            if chunk.iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl<F: embedded_storage_async::nor_flash::NorFlash> Flash for AsyncNorFlashPages<F> {
    type Error = F::Error;

    fn page_count(&self) -> usize {
        self.pages
    }

    async fn erase(&mut self, page: PageID) -> Result<(), F::Error> {
        let from = page_offset(page, 0);
        self.flash.erase(from, from + PAGE_SIZE as u32).await
    }

    async fn read(&mut self, page: PageID, offset: usize, data: &mut [u8]) -> Result<(), F::Error> {
        self.flash.read(page_offset(page, offset), data).await
    }

    async fn write(&mut self, page: PageID, offset: usize, data: &[u8]) -> Result<(), F::Error> {
        self.flash.write(page_offset(page, offset), data).await
    }
}

/// Error returned by [`FlashLedger::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError<E> {
    /// The flash holds neither a ledger nor erased bytes (another program's data, a different
    /// ekv configuration, or a format torn by a power cut at the very first boot). Nothing
    /// was changed; erase it to start a new, empty ledger.
    Corrupted,
    /// The ledger's records are not this version's (or are damaged).
    BadRecord,
    /// Provisioning a blank flash failed (it is too small: [`StorageError::Full`]).
    Storage(StorageError),
    /// The flash itself failed.
    Flash(E),
}

impl<E: core::fmt::Debug> core::fmt::Display for OpenError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OpenError::Corrupted => f.write_str(
                "the flash holds no txsock ledger and is not erased: erase it to start anew",
            ),
            OpenError::BadRecord => f.write_str("the ledger's records are damaged"),
            OpenError::Storage(e) => write!(f, "cannot provision the ledger: {e}"),
            OpenError::Flash(e) => write!(f, "flash error: {e:?}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for OpenError<E> {}

/// Why a ledger operation could not be done at all (storage, not the money rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// The flash has no room for the write.
    Full,
    /// A record could not be read back (damaged flash, or another format).
    Corrupted,
    /// The flash failed (a power cut in simulation); the state on flash is whatever the last
    /// committed transaction left.
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

impl<E> From<ReadError<E>> for StorageError {
    fn from(e: ReadError<E>) -> Self {
        match e {
            ReadError::Flash(_) => StorageError::Flash,
            _ => StorageError::Corrupted,
        }
    }
}

impl<E> From<WriteError<E>> for StorageError {
    fn from(e: WriteError<E>) -> Self {
        match e {
            WriteError::Full => StorageError::Full,
            WriteError::Flash(_) => StorageError::Flash,
            _ => StorageError::Corrupted,
        }
    }
}

impl<E> From<CommitError<E>> for StorageError {
    fn from(e: CommitError<E>) -> Self {
        match e {
            CommitError::Flash(_) => StorageError::Flash,
            _ => StorageError::Corrupted,
        }
    }
}

impl<E> From<CursorError<E>> for StorageError {
    fn from(e: CursorError<E>) -> Self {
        match e {
            CursorError::Flash(_) => StorageError::Flash,
            _ => StorageError::Corrupted,
        }
    }
}

impl<E> From<ekv::Error<E>> for StorageError {
    fn from(e: ekv::Error<E>) -> Self {
        match e {
            ekv::Error::Flash(_) => StorageError::Flash,
            ekv::Error::Corrupted => StorageError::Corrupted,
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

/// Key and value bounds (ekv is built with 128-byte keys and 256-byte values).
const KEY_CAP: usize = 128;
const VALUE_CAP: usize = 256;
type Key = heapless::Vec<u8, KEY_CAP>;
type Value = heapless::Vec<u8, VALUE_CAP>;

/// Record kinds, the first byte of every key. Their order is the order ekv wants writes in.
const ACCOUNT: u8 = b'a';
const OUTCOME: u8 = b'i';
const META: &[u8] = b"m";
const JOURNAL: u8 = b't';
/// The key an unknown user's failed login writes, so that it costs what a known one does.
const DECOY: &[u8] = b"x";

/// Version of the record layout below (the first byte of the metadata).
const FORMAT: u8 = 1;

/// Size of an account record with the longest salt: a decoy write has this size.
const ACCOUNT_RECORD_MAX: usize = 8 + 8 + 4 + 4 + 8 + 8 + 4 + 32 + 32 + 1 + MAX_SALT;

const _: () = {
    assert!(1 + 1 + MAX_USERNAME + MAX_TRANSFER_ID <= KEY_CAP);
    assert!(ACCOUNT_RECORD_MAX <= VALUE_CAP);
    assert!(3 + 2 * MAX_USERNAME + MAX_TRANSFER_ID + 16 <= VALUE_CAP);
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

fn account_key(user: &Username) -> Key {
    let mut k = Put::<KEY_CAP>::new();
    k.u8(ACCOUNT).bytes(user.as_str().as_bytes());
    k.done()
}

fn outcome_key(from: &Username, id: &TransferId) -> Key {
    let mut k = Put::<KEY_CAP>::new();
    k.u8(OUTCOME)
        .text(from.as_str())
        .bytes(id.as_str().as_bytes());
    k.done()
}

fn journal_key(seq: u32) -> Key {
    let mut k = Put::<KEY_CAP>::new();
    // Big-endian, so that ekv's key order is commit order.
    k.u8(JOURNAL).bytes(&seq.to_be_bytes());
    k.done()
}

fn encode_meta(m: &Meta) -> Value {
    Put::new()
        .u8(FORMAT)
        .bytes(&m.secret)
        .u32(m.next_seq)
        .u64(m.floor)
        .u64(m.minted)
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

/// A transfer's ledger on NOR flash that survives power loss: see the
/// [module documentation](self).
///
/// `F` is the flash as ekv sees it: [`NorFlashPages`] over a blocking
/// [`NorFlash`], or [`AsyncNorFlashPages`] over an async one.
pub struct FlashLedger<F: LedgerFlash> {
    db: Database<F, NoopRawMutex>,
    opening_balance: Amount,
    /// The last committed metadata (reloaded after a failed transaction).
    meta: Meta,
    /// Ledger time minus the driver's clock, fixed at open.
    epoch: u64,
    /// A transaction failed: `meta` may be ahead of or behind the flash until reloaded.
    stale: bool,
}

impl<F: LedgerFlash> core::fmt::Debug for FlashLedger<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlashLedger")
            .field("opening_balance", &self.opening_balance)
            .field("committed", &self.meta.next_seq)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Runs `future` to completion on this thread. Over [`NorFlashPages`] every flash operation
/// is done when first polled, so this never waits.
fn block_on<T>(future: impl Future<Output = T>) -> T {
    embassy_futures::block_on(future)
}

impl<F: NorFlash> FlashLedger<NorFlashPages<F>> {
    /// Opens the ledger on a blocking flash: see [`open_async`](Self::open_async).
    pub fn open(
        flash: F,
        opening_balance: Amount,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<Self, OpenError<F::Error>> {
        block_on(Self::open_async(
            NorFlashPages::new(flash),
            opening_balance,
            rng,
            now,
        ))
    }

    /// Erases the whole flash (a factory reset): the next [`open`](Self::open) starts a new,
    /// empty ledger with a new secret.
    pub fn erase_all(flash: &mut F) -> Result<(), F::Error> {
        let end = (flash.capacity() / F::ERASE_SIZE * F::ERASE_SIZE) as u32;
        flash.erase(0, end)
    }
}

impl<F: LedgerFlash> FlashLedger<F> {
    /// Opens the ledger on `flash` at the driver's time `now`: mounts it, or formats and
    /// provisions a blank (all-erased) flash with a secret drawn from `rng`. New accounts get
    /// `opening_balance` (minted money). `rng` also seeds ekv's wear levelling.
    pub async fn open_async(
        flash: F,
        opening_balance: Amount,
        rng: &mut (impl RngCore + CryptoRng),
        now: Instant,
    ) -> Result<Self, OpenError<F::Error>> {
        let mut config = ekv::Config::default();
        config.random_seed = rng.next_u32();
        let db = Database::new(flash, config);
        match db.mount().await {
            Ok(()) => {}
            Err(MountError::Flash(e)) => return Err(OpenError::Flash(e)),
            Err(MountError::Corrupted) => {
                let blank = db.lock_flash().await.is_blank().await;
                if !blank.map_err(OpenError::Flash)? {
                    return Err(OpenError::Corrupted);
                }
                db.format().await.map_err(|e| match e {
                    ekv::FormatError::Flash(e) => OpenError::Flash(e),
                })?;
            }
        }
        let mut ledger = FlashLedger {
            db,
            opening_balance,
            meta: Meta {
                secret: [0; 32],
                next_seq: 0,
                floor: now.millis(),
                minted: 0,
            },
            epoch: 0,
            stale: false,
        };
        match ledger.read_meta().await {
            Ok(Some(meta)) => ledger.meta = meta,
            Ok(None) => {
                // First boot: provision the secret, once.
                rng.fill_bytes(&mut ledger.meta.secret);
                let meta = ledger.meta;
                ledger
                    .transact(now, &meta, &mut [])
                    .await
                    .map_err(OpenError::Storage)?;
            }
            Err(_) => return Err(OpenError::BadRecord),
        }
        ledger.epoch = ledger.meta.floor.saturating_sub(now.millis());
        Ok(ledger)
    }

    /// The device secret: random, drawn at the first boot, the same at every boot after
    /// (pass it as [`DeviceConfig::secret`](crate::device::DeviceConfig::secret)).
    pub fn secret(&self) -> [u8; 32] {
        self.meta.secret
    }

    /// Runs `f` on the flash under the ledger: to save its image, or to take it back at a
    /// simulated power-off (ekv keeps the flash until the ledger is dropped). Writing to it
    /// behind the ledger's back corrupts the ledger.
    pub fn with_flash<T>(&mut self, f: impl FnOnce(&mut F) -> T) -> T {
        block_on(async {
            let mut flash = self.db.lock_flash().await;
            f(&mut flash)
        })
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

    /// Answers `request` as the [`Ledger`] contract says; the async form of
    /// [`Ledger::execute`].
    pub async fn execute_async(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
        match self.try_execute(request, now).await {
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
    pub async fn add_user_async(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        let result = self.try_add_user(user, verifier, balance, now).await;
        self.settle(result)
    }

    /// Adds `amount` to `user` (money created by an administrator); returns the new balance.
    /// `UnknownRecipient`, `BalanceOverflow`, `LedgerFull`, or `Internal` as
    /// [`add_user_async`](Self::add_user_async).
    pub async fn deposit_async(
        &mut self,
        user: &Username,
        amount: Amount,
        now: Instant,
    ) -> Result<Amount, ErrorCode> {
        let result = self.try_deposit(user, amount, now).await;
        self.settle(result)
    }

    /// Changes `user`'s account with `change` (an administrator's unlock, a test's
    /// corruption) and writes it back; `Ok(false)` for an unknown user. Changing a balance
    /// here bypasses the money rule.
    pub async fn update_account_async(
        &mut self,
        user: &Username,
        now: Instant,
        change: impl FnOnce(&mut FlashAccount),
    ) -> Result<bool, StorageError> {
        let result = self.try_update(user, now, change).await;
        if result.is_err() {
            self.stale = true;
        }
        result
    }

    /// Calls `f` with every account, in name order.
    pub async fn for_each_account_async(
        &mut self,
        mut f: impl FnMut(&FlashAccount),
    ) -> Result<(), StorageError> {
        let tx = self.db.read_transaction().await;
        let mut cursor = tx.read_range(&[ACCOUNT][..]..&[ACCOUNT + 1][..]).await?;
        let mut key = [0; KEY_CAP];
        let mut value = [0; VALUE_CAP];
        while let Some((k, v)) = cursor.next(&mut key, &mut value).await? {
            let user = core::str::from_utf8(&key[1..k])
                .ok()
                .and_then(|name| Username::parse(name).ok())
                .ok_or(StorageError::Corrupted)?;
            let mut account = decode_account(user, &value[..v]).ok_or(StorageError::Corrupted)?;
            account.lockout = self.to_driver(account.lockout);
            f(&account);
        }
        Ok(())
    }

    /// Calls `f` with every committed transfer, oldest first (`at` is 0: the ledger keeps no
    /// wall clock).
    pub async fn for_each_committed_async(
        &mut self,
        mut f: impl FnMut(&JournalEntry),
    ) -> Result<(), StorageError> {
        let tx = self.db.read_transaction().await;
        let mut cursor = tx.read_range(&[JOURNAL][..]..&[JOURNAL + 1][..]).await?;
        let mut key = [0; KEY_CAP];
        let mut value = [0; VALUE_CAP];
        while let Some((_, v)) = cursor.next(&mut key, &mut value).await? {
            f(&decode_journal(&value[..v]).ok_or(StorageError::Corrupted)?);
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

    async fn read_meta(&mut self) -> Result<Option<Meta>, StorageError> {
        let mut value = [0; VALUE_CAP];
        let tx = self.db.read_transaction().await;
        match tx.read(META, &mut value).await {
            Ok(n) => decode_meta(&value[..n])
                .map(Some)
                .ok_or(StorageError::Corrupted),
            Err(ReadError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_account(
        &mut self,
        user: &Username,
    ) -> Result<Option<FlashAccount>, StorageError> {
        let mut value = [0; VALUE_CAP];
        let tx = self.db.read_transaction().await;
        match tx.read(&account_key(user), &mut value).await {
            Ok(n) => decode_account(user.clone(), &value[..n])
                .map(Some)
                .ok_or(StorageError::Corrupted),
            Err(ReadError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_outcome(
        &mut self,
        from: &Username,
        id: &TransferId,
    ) -> Result<Option<Outcome>, StorageError> {
        let mut value = [0; VALUE_CAP];
        let tx = self.db.read_transaction().await;
        match tx.read(&outcome_key(from, id), &mut value).await {
            Ok(n) => decode_outcome(&value[..n])
                .map(Some)
                .ok_or(StorageError::Corrupted),
            Err(ReadError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_journal(&mut self, seq: u32) -> Result<JournalEntry, StorageError> {
        let mut value = [0; VALUE_CAP];
        let tx = self.db.read_transaction().await;
        let n = tx.read(&journal_key(seq), &mut value).await?;
        decode_journal(&value[..n]).ok_or(StorageError::Corrupted)
    }

    /// Writes `writes` and the metadata `meta` (with the time floor raised to `now`) in one
    /// atomic transaction; on success `meta` becomes the cached metadata.
    async fn transact(
        &mut self,
        now: Instant,
        meta: &Meta,
        writes: &mut [(&[u8], &[u8])],
    ) -> Result<(), StorageError> {
        let mut meta = *meta;
        meta.floor = meta.floor.max(self.ledger_time(now));
        let meta_value = encode_meta(&meta);
        // ekv takes a transaction's keys in ascending order.
        writes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut tx = self.db.write_transaction().await;
        let mut meta_written = false;
        for (key, value) in writes.iter() {
            if !meta_written && *key > META {
                tx.write(META, &meta_value).await?;
                meta_written = true;
            }
            tx.write(key, value).await?;
        }
        if !meta_written {
            tx.write(META, &meta_value).await?;
        }
        tx.commit().await?;
        self.meta = meta;
        Ok(())
    }

    async fn try_execute(
        &mut self,
        request: &LedgerRequest,
        now: Instant,
    ) -> Result<LedgerReply, StorageError> {
        if self.stale {
            // After a failed transaction, believe the flash, not the cache.
            if let Some(meta) = self.read_meta().await? {
                self.meta = meta;
            }
            self.stale = false;
        }
        Ok(match request {
            LedgerRequest::Register { user, verifier } => {
                let opening = self.opening_balance;
                match self.try_add_user(user, verifier, opening, now).await {
                    Err(StorageError::Full) => LedgerReply::Registered(Err(ErrorCode::LedgerFull)),
                    other => LedgerReply::Registered(other?),
                }
            }
            LedgerRequest::Credentials { user } => match self.read_account(user).await? {
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
            } => {
                let at_ledger = Instant::from_millis(self.ledger_time(*at));
                let meta = self.meta;
                match self.read_account(user).await? {
                    Some(mut account) => {
                        account.lockout.record_failure(at_ledger, policy);
                        let key = account_key(user);
                        let value = encode_account(&account);
                        self.transact(now, &meta, &mut [(&key, &value)]).await?;
                        LedgerReply::Recorded(self.to_driver(account.lockout))
                    }
                    None => {
                        // The same storage work as for a known user (see the contract).
                        let decoy = [0; ACCOUNT_RECORD_MAX];
                        self.transact(now, &meta, &mut [(DECOY, &decoy)]).await?;
                        LedgerReply::Recorded(LockoutState::default())
                    }
                }
            }
            LedgerRequest::LoginSucceeded { user } => {
                if let Some(mut account) = self.read_account(user).await? {
                    // Most logins follow no failure: nothing to write then.
                    if account.lockout != LockoutState::default() {
                        account.lockout.record_success();
                        let key = account_key(user);
                        let value = encode_account(&account);
                        let meta = self.meta;
                        self.transact(now, &meta, &mut [(&key, &value)]).await?;
                    }
                }
                LedgerReply::Recorded(LockoutState::default())
            }
            LedgerRequest::Transfer {
                from,
                id,
                to,
                amount,
            } => LedgerReply::Transfer(self.transfer(from, id, to, *amount, now).await?),
            LedgerRequest::Balance { user } => LedgerReply::Balance(
                self.read_account(user)
                    .await?
                    .map(|a| a.balance)
                    .ok_or(ErrorCode::NotLoggedIn),
            ),
            LedgerRequest::History { user, offset } => {
                LedgerReply::History(Ok(self.history(user, *offset).await?))
            }
            // A request this ledger does not know yet (the enum may grow): not answerable.
            _ => LedgerReply::Unavailable,
        })
    }

    async fn transfer(
        &mut self,
        from: &Username,
        id: &TransferId,
        to: &Username,
        amount: Amount,
        now: Instant,
    ) -> Result<TransferOutcome, StorageError> {
        let sender = self.read_account(from).await?;
        let recipient = self.read_account(to).await?;
        let earlier = self.read_outcome(from, id).await?;
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
                let key = outcome_key(from, id);
                let value = encode_outcome(&record(refusal.result, refusal.balance));
                match self.transact(now, &meta, &mut [(&key, &value)]).await {
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
                let entry = JournalEntry {
                    id: id.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    amount,
                    balance_after: sender_after,
                    at: 0,
                    refused: None,
                };
                let mut next = meta;
                next.next_seq = meta.next_seq.checked_add(1).ok_or(StorageError::Full)?;
                let keys = [
                    account_key(from),
                    account_key(to),
                    outcome_key(from, id),
                    journal_key(meta.next_seq),
                ];
                let values = [
                    encode_account(&sender),
                    encode_account(&recipient),
                    encode_outcome(&record(Ok(()), sender_after)),
                    encode_journal(&entry),
                ];
                let mut writes = [
                    (&keys[0][..], &values[0][..]),
                    (&keys[1][..], &values[1][..]),
                    (&keys[2][..], &values[2][..]),
                    (&keys[3][..], &values[3][..]),
                ];
                match self.transact(now, &next, &mut writes).await {
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

    async fn history(&mut self, user: &Username, offset: u32) -> Result<HistoryPage, StorageError> {
        let mut page = HistoryPage::default();
        let mut skip = offset;
        for seq in (0..self.meta.next_seq).rev() {
            let entry = self.read_journal(seq).await?;
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

    async fn try_add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        now: Instant,
    ) -> Result<Result<(), ErrorCode>, StorageError> {
        if self.read_account(user).await?.is_some() {
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
        let account = FlashAccount {
            user: user.clone(),
            verifier: verifier.clone(),
            balance,
            lockout: LockoutState::default(),
            deposited: balance.minor(),
            deposits: u32::from(balance.minor() > 0),
        };
        let key = account_key(user);
        let value = encode_account(&account);
        self.transact(now, &meta, &mut [(&key, &value)]).await?;
        Ok(Ok(()))
    }

    async fn try_deposit(
        &mut self,
        user: &Username,
        amount: Amount,
        now: Instant,
    ) -> Result<Result<Amount, ErrorCode>, StorageError> {
        let Some(mut account) = self.read_account(user).await? else {
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
        let key = account_key(user);
        let value = encode_account(&account);
        self.transact(now, &meta, &mut [(&key, &value)]).await?;
        Ok(Ok(account.balance))
    }

    async fn try_update(
        &mut self,
        user: &Username,
        now: Instant,
        change: impl FnOnce(&mut FlashAccount),
    ) -> Result<bool, StorageError> {
        let Some(mut account) = self.read_account(user).await? else {
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
        let key = account_key(user);
        let value = encode_account(&account);
        let meta = self.meta;
        self.transact(now, &meta, &mut [(&key, &value)]).await?;
        Ok(true)
    }
}

/// The blocking forms, for [`NorFlashPages`] (whose operations complete at once).
impl<F: LedgerFlash> FlashLedger<F> {
    /// Blocking [`add_user_async`](Self::add_user_async).
    pub fn add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        block_on(self.add_user_async(user, verifier, balance, now))
    }

    /// Blocking [`deposit_async`](Self::deposit_async).
    pub fn deposit(
        &mut self,
        user: &Username,
        amount: Amount,
        now: Instant,
    ) -> Result<Amount, ErrorCode> {
        block_on(self.deposit_async(user, amount, now))
    }

    /// Blocking [`update_account_async`](Self::update_account_async).
    pub fn update_account(
        &mut self,
        user: &Username,
        now: Instant,
        change: impl FnOnce(&mut FlashAccount),
    ) -> Result<bool, StorageError> {
        block_on(self.update_account_async(user, now, change))
    }

    /// Blocking [`for_each_account_async`](Self::for_each_account_async).
    pub fn for_each_account(&mut self, f: impl FnMut(&FlashAccount)) -> Result<(), StorageError> {
        block_on(self.for_each_account_async(f))
    }

    /// Blocking [`for_each_committed_async`](Self::for_each_committed_async).
    pub fn for_each_committed(&mut self, f: impl FnMut(&JournalEntry)) -> Result<(), StorageError> {
        block_on(self.for_each_committed_async(f))
    }

    /// Sum of all balances, minor units.
    pub fn total(&mut self) -> Result<u128, StorageError> {
        let mut total = 0u128;
        self.for_each_account(|a| total += u128::from(a.balance.minor()))?;
        Ok(total)
    }
}

impl<F: LedgerFlash> Ledger for FlashLedger<F> {
    fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
        block_on(self.execute_async(request, now))
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
    fn a_flash_that_is_neither_blank_nor_a_ledger_is_refused_not_wiped() {
        let mut flash = blank(16);
        flash.bytes_mut()[5000] = 0x12;
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let opened = FlashLedger::open(&mut flash, Amount(0), &mut rng, Instant::ZERO);
        assert_eq!(opened.err(), Some(OpenError::Corrupted));
        assert_eq!(flash.bytes()[5000], 0x12);
        FlashLedger::<NorFlashPages<&mut Image>>::erase_all(&mut &mut flash).unwrap();
        open(&mut flash, 0);
    }

    #[test]
    fn a_full_flash_refuses_with_ledger_full_and_keeps_its_money() {
        let mut flash = blank(16);
        let mut l = open(&mut flash, 0);
        register(&mut l, "a");
        register(&mut l, "b");
        let mut full = false;
        for i in 0..2000 {
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
        assert!(full, "8 pages never filled up");
        assert_eq!(l.total().unwrap(), l.minted());
        drop(l);
        let mut l = open(&mut flash, 0);
        assert_eq!(l.total().unwrap(), 2000);
    }
}
