//! One storage test suite, written once and run against every backend: every behaviour of
//! the [`Store`] trait and the ledger contract on [`LedgerRequest`], and what must hold when
//! several processes (here: several `Store` instances, each with its own connection) work on
//! one database at once.
//!
//! `mem::*` runs the ledger contract's tests on the core's [`MemLedger`] (the device's
//! ledger) behind a test adapter, so that the device and the host answer every case alike;
//! the tests of SQL-only behaviour (schema versions, `ledger check` on a corrupted journal)
//! are not in its list. `flash::*` runs the same cases on the device's flash ledger
//! (`txsock_firmware_sim::flash_ledger::FlashLedger`) over a simulated NOR flash in RAM,
//! reopening the ledger from the flash image at every `open` (a reboot), behind the same kind
//! of adapter. `sqlite::*` runs on a temporary SQLite file. `mysql::*` runs on the MySQL/MariaDB server
//! named by `TXSOCK_TEST_MYSQL_URL` (`mysql://USER:PASS@HOST:PORT/DB`; each test creates and
//! drops its own database `DB_<pid>_<test>`, so USER needs CREATE and DROP on `DB%`, and
//! PROCESS for the store tests that watch for a lock wait in `information_schema.INNODB_TRX`).
//! `cargo xtask test` starts a throwaway MariaDB and sets it. When it is not set, the MySQL
//! tests fail if `CI` is set or `TXSOCK_REQUIRE_MYSQL=1`, and otherwise print
//! "skipped: TXSOCK_TEST_MYSQL_URL not set" and pass.

use super::row::FOREVER;
use super::{CheckReport, Committed, Store, UserSummary};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::{Arc, Barrier};
use txsock_core::auth::Verifier;
use txsock_core::ledger::{
    EntryKind, Ledger, LedgerReply, LedgerRequest, MemLedger, TransferOutcome,
};
use txsock_core::lockout::{Backoff, LockoutState};
use txsock_core::message::HISTORY_PAGE;
use txsock_core::{Amount, ErrorCode, Instant, TransferId, Username};
use txsock_firmware_sim::flash_ledger::{FlashLedger, NorFlashPages};
use txsock_firmware_sim::ram_flash::RamFlash;

/// A database to run one test on.
trait Backend: Sync {
    /// Opens another store (another connection) on this test's database.
    fn try_open(&self, opening: Amount) -> Result<Box<dyn Store>>;

    /// Runs one SQL statement directly (to corrupt or age the database on purpose).
    fn sql(&self, statement: &str);

    /// Sets `name`'s balance behind the ledger's back, in minor units.
    fn set_balance(&self, name: &str, minor: i64) {
        self.sql(&format!(
            "UPDATE users SET balance = {minor} WHERE name = '{name}'"
        ));
    }

    /// Whether the ledger stamps journal entries with the wall clock (a `MemLedger` keeps
    /// no clock: its entries carry `at = 0`, as the contract allows).
    fn has_clock(&self) -> bool {
        true
    }

    /// Whether the ledger journals each deposit (and so lists them in a statement): the SQL
    /// stores do; a `MemLedger` and the flash ledger keep only each account's total.
    fn journals_deposits(&self) -> bool {
        true
    }

    fn open(&self, opening: Amount) -> Box<dyn Store> {
        self.try_open(opening).expect("opening the store")
    }
}

/// A temporary SQLite file.
struct SqliteBackend {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteBackend {
    fn new() -> SqliteBackend {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("txsock.db");
        SqliteBackend { _dir: dir, path }
    }
}

impl Backend for SqliteBackend {
    fn try_open(&self, opening: Amount) -> Result<Box<dyn Store>> {
        Ok(Box::new(super::sqlite::SqliteStore::open(
            &self.path, opening,
        )?))
    }

    fn sql(&self, statement: &str) {
        let conn = rusqlite::Connection::open(&self.path).expect("open");
        conn.execute_batch(statement).expect(statement);
        if statement.contains("dbg") {
            let mut st = conn
                .prepare("select seq, kind, from_user, transfer_id, to_user, amount from journal")
                .unwrap();
            let rows: Vec<String> = st
                .query_map([], |r| {
                    Ok(format!(
                        "{:?} {:?} {:?} {:?} {:?}",
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?
                    ))
                })
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            eprintln!("JOURNAL {rows:#?}");
        }
    }
}

/// A database of its own on the test MySQL/MariaDB server, dropped afterwards.
pub(super) struct MysqlBackend {
    /// The test's database URL.
    pub(super) url: String,
    /// The server without a database, for creating and dropping it.
    server: ::mysql::Opts,
    db: String,
}

/// The environment variable naming the test server.
const URL_VAR: &str = "TXSOCK_TEST_MYSQL_URL";

/// The test server's URL, or `None` when MySQL tests are to be skipped. Panics (fails the
/// test) when they must run: in CI or with `TXSOCK_REQUIRE_MYSQL=1`.
pub fn test_mysql_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            let required = std::env::var("TXSOCK_REQUIRE_MYSQL").is_ok_and(|v| v == "1");
            assert!(
                !(ci || required),
                "{URL_VAR} is not set, and MySQL tests are required here (CI or \
                 TXSOCK_REQUIRE_MYSQL=1): run them with `cargo xtask test`, which starts a \
                 throwaway MariaDB, or point {URL_VAR} at a server \
                 (mysql://USER:PASS@HOST:PORT/DB)"
            );
            eprintln!("skipped: {URL_VAR} not set");
            None
        }
    }
}

impl MysqlBackend {
    /// A fresh database for `test`, or `None` when MySQL tests are skipped.
    pub(super) fn new(test: &str) -> Option<MysqlBackend> {
        let base_url = test_mysql_url()?;
        // A test whose transaction is retried sleeps the store's pause between attempts: a
        // pause beyond its 0.5 s ceiling would hang the test (and libtest waits for every
        // hung test before it reports the pause's own unit test failing). Every MySQL test
        // checks the bound first, so such a fault fails them at once.
        for attempt in 0..=20 {
            let pause = super::mysql::backoff(attempt);
            assert!(
                pause <= std::time::Duration::from_millis(500),
                "the pause before attempt {} is {pause:?}, over its 0.5 s ceiling",
                attempt + 1
            );
        }
        let opts = ::mysql::Opts::from_url(&base_url).expect("TXSOCK_TEST_MYSQL_URL is invalid");
        let base = opts.get_db_name().unwrap_or("txsock_test").to_string();
        let mut db = format!("{base}_{}_{test}", std::process::id());
        db.truncate(64);
        let server: ::mysql::Opts = ::mysql::OptsBuilder::from_opts(opts)
            .db_name(None::<String>)
            .into();
        let mut conn = ::mysql::Conn::new(server.clone()).expect("connecting to the test server");
        use ::mysql::prelude::Queryable;
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .expect("drop");
        conn.query_drop(format!("CREATE DATABASE `{db}`"))
            .expect("creating the test database");
        let (head, _) = base_url.split_once('?').unwrap_or((&base_url, ""));
        let query = &base_url[head.len()..];
        let (server_part, _) = head.rsplit_once('/').expect("URL has a /DB part");
        let url = format!("{server_part}/{db}{query}");
        Some(MysqlBackend { url, server, db })
    }
}

impl Drop for MysqlBackend {
    fn drop(&mut self) {
        use ::mysql::prelude::Queryable;
        if let Ok(mut conn) = ::mysql::Conn::new(self.server.clone()) {
            let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db));
        }
    }
}

impl Backend for MysqlBackend {
    fn try_open(&self, opening: Amount) -> Result<Box<dyn Store>> {
        Ok(Box::new(super::mysql::MysqlStore::open(
            &self.url, opening,
        )?))
    }

    fn sql(&self, statement: &str) {
        use ::mysql::prelude::Queryable;
        let opts: ::mysql::Opts = ::mysql::OptsBuilder::from_opts(self.server.clone())
            .db_name(Some(self.db.clone()))
            .into();
        let mut conn = ::mysql::Conn::new(opts).expect("connect");
        conn.query_drop(statement).expect(statement);
    }
}

/// The core's fixed-capacity ledger, as a device holds it: room for every test's accounts
/// and journal.
type DeviceLedger = MemLedger<64, 1024>;

/// What every store opened on one [`MemBackend`] shares: the ledger, and what a device
/// keeps beside it (the admin's locks, the deposits' journal, the server secret).
#[derive(Default)]
struct MemShared {
    ledger: Option<Box<DeviceLedger>>,
    admin_locked: std::collections::BTreeSet<String>,
    /// Money deposited to each user (opening balances and deposits), and how many deposits.
    deposits: BTreeMap<String, (u128, u64)>,
    secret: Option<[u8; 32]>,
}

/// One [`DeviceLedger`] shared by every store opened on it, as one database is.
struct MemBackend {
    shared: Arc<Mutex<MemShared>>,
}

impl MemBackend {
    fn new() -> MemBackend {
        // On the heap: the ledger is larger than a test thread's stack likes.
        let shared = MemShared {
            ledger: Some(Box::new(DeviceLedger::new(Amount(0)))),
            ..MemShared::default()
        };
        MemBackend {
            shared: Arc::new(Mutex::new(shared)),
        }
    }
}

impl Backend for MemBackend {
    fn try_open(&self, opening: Amount) -> Result<Box<dyn Store>> {
        Ok(Box::new(MemStore {
            shared: self.shared.clone(),
            opening,
        }))
    }

    fn sql(&self, statement: &str) {
        panic!("no SQL on the in-memory ledger: {statement}");
    }

    fn has_clock(&self) -> bool {
        false
    }

    fn journals_deposits(&self) -> bool {
        false
    }

    fn set_balance(&self, name: &str, minor: i64) {
        let mut shared = self.shared.lock().unwrap();
        let ledger = shared.ledger.as_mut().unwrap();
        ledger.account_mut(&user(name)).expect("account").balance =
            Amount(u64::try_from(minor).unwrap());
    }
}

/// A [`Store`] over the shared [`DeviceLedger`]: every ledger request goes to
/// `MemLedger::execute` but registration, which goes to `MemLedger::add_user` with this
/// store's opening balance (a `MemLedger` has one opening balance; the tests open stores
/// with several).
struct MemStore {
    shared: Arc<Mutex<MemShared>>,
    opening: Amount,
}

impl MemShared {
    fn deposited(&mut self, name: &Username, amount: Amount) {
        if amount.minor() > 0 {
            let entry = self.deposits.entry(name.to_string()).or_default();
            entry.0 += u128::from(amount.minor());
            entry.1 += 1;
        }
    }
}

impl Store for MemStore {
    fn execute_batch(
        &mut self,
        batch: &[(LedgerRequest, Instant)],
        committed: &mut Vec<Committed>,
    ) -> Result<Vec<LedgerReply>> {
        let mut shared = self.shared.lock().unwrap();
        let mut replies = Vec::new();
        for (request, now) in batch {
            let ledger = shared.ledger.as_mut().unwrap();
            let journal_before = ledger.journal().len();
            let reply = match request {
                LedgerRequest::Register { user, verifier } => {
                    let result = ledger.add_user(user, verifier, self.opening);
                    if result.is_ok() {
                        shared.deposited(user, self.opening);
                    }
                    LedgerReply::Registered(result)
                }
                other => {
                    let mut reply = ledger.execute(other, *now);
                    if let (
                        LedgerRequest::Credentials { user },
                        LedgerReply::Credentials { lockout, .. },
                    ) = (other, &mut reply)
                    {
                        if shared.admin_locked.contains(user.as_str()) {
                            lockout.locked_until = Instant::from_millis(FOREVER);
                        }
                    }
                    reply
                }
            };
            let ledger = shared.ledger.as_ref().unwrap();
            if let Some(entry) = ledger.journal().get(journal_before) {
                if entry.is_committed() {
                    committed.push(Committed {
                        id: entry.id.clone(),
                        from: entry.from.clone(),
                        to: entry.to.clone(),
                        amount: entry.amount,
                        balance_after: entry.balance_after,
                        at_ms: crate::clock::unix_millis(),
                    });
                }
            }
            replies.push(reply);
        }
        Ok(replies)
    }

    fn server_secret(&mut self) -> Result<[u8; 32]> {
        let mut shared = self.shared.lock().unwrap();
        Ok(*shared.secret.get_or_insert_with(|| {
            let mut secret = [0; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
            secret
        }))
    }

    fn add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        _now_ms: u64,
    ) -> Result<()> {
        let mut shared = self.shared.lock().unwrap();
        let ledger = shared.ledger.as_mut().unwrap();
        ledger
            .add_user(user, verifier, balance)
            .map_err(|code| anyhow::anyhow!("cannot add {user}: {}", code.message()))?;
        shared.deposited(user, balance);
        Ok(())
    }

    fn list_users(&mut self) -> Result<Vec<UserSummary>> {
        let shared = self.shared.lock().unwrap();
        let mut users: Vec<UserSummary> = shared
            .ledger
            .as_ref()
            .unwrap()
            .accounts()
            .iter()
            .map(|a| UserSummary {
                name: a.user.to_string(),
                balance: a.balance,
                admin_locked: shared.admin_locked.contains(a.user.as_str()),
                locked_until_ms: a.lockout.locked_until.millis(),
                failures: a.lockout.failures,
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    fn set_admin_lock(&mut self, user: &Username, locked: bool) -> Result<()> {
        let mut shared = self.shared.lock().unwrap();
        let account = shared
            .ledger
            .as_mut()
            .unwrap()
            .account_mut(user)
            .ok_or_else(|| anyhow::anyhow!("no user named {user}"))?;
        if !locked {
            account.lockout = LockoutState::default();
            shared.admin_locked.remove(user.as_str());
        } else {
            shared.admin_locked.insert(user.to_string());
        }
        Ok(())
    }

    fn deposit(&mut self, user: &Username, amount: Amount, _now_ms: u64) -> Result<Amount> {
        let mut shared = self.shared.lock().unwrap();
        let balance = shared
            .ledger
            .as_mut()
            .unwrap()
            .deposit(user, amount)
            .map_err(|code| anyhow::anyhow!("cannot deposit to {user}: {}", code.message()))?;
        shared.deposited(user, amount);
        Ok(balance)
    }

    fn integrity(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn check(&mut self) -> Result<CheckReport> {
        let shared = self.shared.lock().unwrap();
        let ledger = shared.ledger.as_ref().unwrap();
        let mut report = CheckReport::default();
        let journal: Vec<_> = ledger
            .journal()
            .iter()
            .filter(|e| e.is_committed())
            .collect();
        for account in ledger.accounts() {
            let name = account.user.as_str();
            let (deposited, _) = shared.deposits.get(name).copied().unwrap_or_default();
            let credits: u128 = journal
                .iter()
                .filter(|e| e.to.as_str() == name)
                .map(|e| u128::from(e.amount.minor()))
                .sum();
            let debits: u128 = journal
                .iter()
                .filter(|e| e.from.as_str() == name)
                .map(|e| u128::from(e.amount.minor()))
                .sum();
            let expected = (deposited + credits) as i128 - debits as i128;
            report.accounts += 1;
            report.total += i128::from(account.balance.minor());
            if i128::from(account.balance.minor()) != expected {
                report.problems.push(format!(
                    "{name}: balance {} but the journal gives {expected}",
                    account.balance
                ));
            }
        }
        report.entries = journal.len() as u64 + shared.deposits.values().map(|d| d.1).sum::<u64>();
        report.minted = shared.deposits.values().map(|d| d.0 as i128).sum();
        if report.total != report.minted {
            report.problems.push("money not conserved".into());
        }
        Ok(report)
    }
}

/// The device's flash ledger on a simulated NOR flash.
type DeviceFlashLedger = FlashLedger<NorFlashPages<RamFlash<Vec<u8>>>>;

/// Sectors of the simulated flash (512 KiB: room for every test's accounts and journal).
const FLASH_SECTORS: usize = 128;

/// What every store opened on one [`FlashBackend`] shares: the flash (and the ledger open on
/// it), and the admin's locks (a host concept the device does not have, as for [`MemShared`]).
struct FlashShared {
    ledger: Option<DeviceFlashLedger>,
    image: Vec<u8>,
    admin_locked: std::collections::BTreeSet<String>,
    boots: u64,
}

impl FlashShared {
    /// Powers the ledger off and on again: it reopens from the flash image alone.
    fn reboot(&mut self) -> Result<()> {
        if let Some(mut old) = self.ledger.take() {
            self.image = old
                .with_flash(|pages| std::mem::replace(pages.flash_mut(), RamFlash::new(Vec::new())))
                .into_inner();
        }
        self.boots += 1;
        let mut rng =
            <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(self.boots);
        let flash = RamFlash::new(std::mem::take(&mut self.image));
        let ledger = FlashLedger::open(flash, Amount(0), &mut rng, now())
            .map_err(|e| anyhow::anyhow!("the flash ledger does not open: {e}"))?;
        self.ledger = Some(ledger);
        Ok(())
    }

    fn ledger(&mut self) -> &mut DeviceFlashLedger {
        self.ledger.as_mut().expect("booted when opened")
    }
}

/// One [`DeviceFlashLedger`] shared by every store opened on it; each `open` reboots it.
struct FlashBackend {
    shared: Arc<Mutex<FlashShared>>,
}

impl FlashBackend {
    fn new() -> FlashBackend {
        FlashBackend {
            shared: Arc::new(Mutex::new(FlashShared {
                ledger: None,
                image: vec![0xFF; FLASH_SECTORS * txsock_firmware_sim::ram_flash::ERASE_SIZE],
                admin_locked: Default::default(),
                boots: 0,
            })),
        }
    }
}

impl Backend for FlashBackend {
    fn try_open(&self, opening: Amount) -> Result<Box<dyn Store>> {
        self.shared.lock().unwrap().reboot()?;
        Ok(Box::new(FlashStore {
            shared: self.shared.clone(),
            opening,
        }))
    }

    fn sql(&self, statement: &str) {
        panic!("no SQL on the flash ledger: {statement}");
    }

    fn has_clock(&self) -> bool {
        false
    }

    fn journals_deposits(&self) -> bool {
        false
    }

    fn set_balance(&self, name: &str, minor: i64) {
        let mut shared = self.shared.lock().unwrap();
        let found = shared
            .ledger()
            .update_account(&user(name), now(), |a| {
                a.balance = Amount(u64::try_from(minor).unwrap());
            })
            .expect("writing the account");
        assert!(found, "no account {name}");
    }
}

/// A [`Store`] over the shared [`DeviceFlashLedger`]: as [`MemStore`], every ledger request
/// goes to `execute` but registration, which goes to `add_user` with this store's opening
/// balance.
struct FlashStore {
    shared: Arc<Mutex<FlashShared>>,
    opening: Amount,
}

impl Store for FlashStore {
    fn execute_batch(
        &mut self,
        batch: &[(LedgerRequest, Instant)],
        committed: &mut Vec<Committed>,
    ) -> Result<Vec<LedgerReply>> {
        let mut shared = self.shared.lock().unwrap();
        let mut replies = Vec::new();
        for (request, now) in batch {
            let admin_locked = match request {
                LedgerRequest::Credentials { user } => shared.admin_locked.contains(user.as_str()),
                _ => false,
            };
            let ledger = shared.ledger();
            let before = ledger.committed();
            let mut reply = match request {
                LedgerRequest::Register { user, verifier } => {
                    LedgerReply::Registered(ledger.add_user(user, verifier, self.opening, *now))
                }
                other => ledger.execute(other, *now),
            };
            if let LedgerReply::Credentials { lockout, .. } = &mut reply {
                if admin_locked {
                    lockout.locked_until = Instant::from_millis(FOREVER);
                }
            }
            if ledger.committed() > before {
                if let (
                    LedgerRequest::Transfer {
                        from,
                        id,
                        to,
                        amount,
                    },
                    LedgerReply::Transfer(outcome),
                ) = (request, &reply)
                {
                    committed.push(Committed::transfer(
                        from,
                        id,
                        to,
                        *amount,
                        outcome.balance,
                        crate::clock::unix_millis(),
                    ));
                }
            }
            replies.push(reply);
        }
        Ok(replies)
    }

    fn server_secret(&mut self) -> Result<[u8; 32]> {
        Ok(self.shared.lock().unwrap().ledger().secret())
    }

    fn add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        _now_ms: u64,
    ) -> Result<()> {
        let mut shared = self.shared.lock().unwrap();
        shared
            .ledger()
            .add_user(user, verifier, balance, now())
            .map_err(|code| anyhow::anyhow!("cannot add {user}: {}", code.message()))
    }

    fn list_users(&mut self) -> Result<Vec<UserSummary>> {
        let mut shared = self.shared.lock().unwrap();
        let mut accounts = Vec::new();
        shared
            .ledger()
            .for_each_account(|a| accounts.push(a.clone()))?;
        let mut users: Vec<UserSummary> = accounts
            .into_iter()
            .map(|a| UserSummary {
                admin_locked: shared.admin_locked.contains(a.user.as_str()),
                name: a.user.to_string(),
                balance: a.balance,
                locked_until_ms: a.lockout.locked_until.millis(),
                failures: a.lockout.failures,
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    fn set_admin_lock(&mut self, user: &Username, locked: bool) -> Result<()> {
        let mut shared = self.shared.lock().unwrap();
        let found = shared.ledger().update_account(user, now(), |a| {
            if !locked {
                a.lockout = LockoutState::default();
            }
        })?;
        if !found {
            anyhow::bail!("no user named {user}");
        }
        if locked {
            shared.admin_locked.insert(user.to_string());
        } else {
            shared.admin_locked.remove(user.as_str());
        }
        Ok(())
    }

    fn deposit(&mut self, user: &Username, amount: Amount, _now_ms: u64) -> Result<Amount> {
        let mut shared = self.shared.lock().unwrap();
        shared
            .ledger()
            .deposit(user, amount, now())
            .map_err(|code| anyhow::anyhow!("cannot deposit to {user}: {}", code.message()))
    }

    fn integrity(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn check(&mut self) -> Result<CheckReport> {
        let mut shared = self.shared.lock().unwrap();
        let ledger = shared.ledger();
        let mut accounts = Vec::new();
        ledger.for_each_account(|a| accounts.push(a.clone()))?;
        let mut journal = Vec::new();
        ledger.for_each_committed(|e| journal.push(e.clone()))?;
        let mut report = CheckReport::default();
        for account in &accounts {
            let name = &account.user;
            let credits: u128 = journal
                .iter()
                .filter(|e| e.to == *name)
                .map(|e| u128::from(e.amount.minor()))
                .sum();
            let debits: u128 = journal
                .iter()
                .filter(|e| e.from == *name)
                .map(|e| u128::from(e.amount.minor()))
                .sum();
            let expected = (u128::from(account.deposited) + credits) as i128 - debits as i128;
            report.accounts += 1;
            report.total += i128::from(account.balance.minor());
            if i128::from(account.balance.minor()) != expected {
                report.problems.push(format!(
                    "{name}: balance {} but the journal gives {expected}",
                    account.balance
                ));
            }
        }
        report.entries =
            journal.len() as u64 + accounts.iter().map(|a| u64::from(a.deposits)).sum::<u64>();
        report.minted = ledger.minted() as i128;
        if report.total != report.minted {
            report.problems.push("money not conserved".into());
        }
        Ok(report)
    }
}

/// Declares each test once per backend: `sqlite::NAME` and `mysql::NAME`.
macro_rules! conformance {
    (sql_only: [$($sql_name:ident),* $(,)?], all: [$($name:ident),* $(,)?] $(,)?) => {
        mod mem {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::MemBackend::new());
                }
            )*
        }
        mod flash {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::FlashBackend::new());
                }
            )*
        }
        conformance!($($sql_name,)* $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::SqliteBackend::new());
                }
            )*
        }
        mod mysql {
            $(
                #[test]
                fn $name() {
                    if let Some(backend) = super::MysqlBackend::new(stringify!($name)) {
                        super::$name(&backend);
                    }
                }
            )*
        }
    };
}

conformance!(
    sql_only: [schema_is_versioned_and_survives_reopening],
    all: [
    registration_and_credentials,
    login_failures_are_recorded_and_reset,
    admin_lock_and_unlock,
    transfer_contract,
    batch_answers_in_order_and_requests_fail_alone,
    balance_and_history_pages,
    deposits_and_user_list,
    statements_list_deposits,
    server_secret_is_created_once_and_shared,
    check_finds_inconsistencies,
    concurrent_full_balance_transfers_exactly_one_succeeds,
    concurrent_retries_of_one_id_commit_once,
    concurrent_crossing_transfers_conserve_money,
    concurrent_login_failures_are_all_counted,
    concurrent_registrations_of_one_name,
    ],
);

fn user(name: &str) -> Username {
    Username::parse(name).expect("username")
}

fn money(s: &str) -> Amount {
    Amount::parse_non_negative(s).expect("amount")
}

/// A verifier for tests, its keys and salt filled with `seed` (no password behind it).
pub(crate) fn verifier(seed: u8) -> Verifier {
    let mut v = Verifier {
        salt: Default::default(),
        iterations: 4096,
        stored_key: [seed; 32],
        server_key: [seed.wrapping_add(1); 32],
    };
    let _ = v.salt.extend_from_slice(&[seed; 16]);
    v
}

fn now() -> Instant {
    crate::clock::now()
}

/// One batch; panics if the store fails it as a whole.
fn batch(
    store: &mut dyn Store,
    requests: Vec<LedgerRequest>,
) -> (Vec<LedgerReply>, Vec<Committed>) {
    let batch: Vec<(LedgerRequest, Instant)> = requests.into_iter().map(|r| (r, now())).collect();
    let mut committed = Vec::new();
    let replies = store
        .execute_batch(&batch, &mut committed)
        .expect("execute_batch");
    assert_eq!(replies.len(), batch.len(), "one reply per request");
    (replies, committed)
}

fn one(store: &mut dyn Store, request: LedgerRequest) -> LedgerReply {
    batch(store, vec![request]).0.remove(0)
}

fn register_req(name: &str, seed: u8) -> LedgerRequest {
    LedgerRequest::Register {
        user: user(name),
        verifier: verifier(seed),
    }
}

fn register(store: &mut dyn Store, name: &str) -> Result<(), ErrorCode> {
    match one(store, register_req(name, name.len() as u8)) {
        LedgerReply::Registered(r) => r,
        other => panic!("register {name}: {other:?}"),
    }
}

fn transfer_req(from: &str, id: &str, to: &str, amount: &str) -> LedgerRequest {
    LedgerRequest::Transfer {
        from: user(from),
        id: TransferId::parse(id).expect("id"),
        to: user(to),
        amount: money(amount),
    }
}

fn transfer_reply(reply: LedgerReply) -> TransferOutcome {
    match reply {
        LedgerReply::Transfer(outcome) => outcome,
        other => panic!("expected a transfer reply, got {other:?}"),
    }
}

fn send(store: &mut dyn Store, from: &str, id: &str, to: &str, amount: &str) -> TransferOutcome {
    transfer_reply(one(store, transfer_req(from, id, to, amount)))
}

fn balance(store: &mut dyn Store, name: &str) -> Amount {
    match one(store, LedgerRequest::Balance { user: user(name) }) {
        LedgerReply::Balance(Ok(b)) => b,
        other => panic!("balance of {name}: {other:?}"),
    }
}

fn credentials(store: &mut dyn Store, name: &str) -> (Option<Verifier>, LockoutState) {
    match one(store, LedgerRequest::Credentials { user: user(name) }) {
        LedgerReply::Credentials { verifier, lockout } => (verifier, lockout),
        other => panic!("credentials of {name}: {other:?}"),
    }
}

fn ok(balance: &str) -> TransferOutcome {
    TransferOutcome {
        result: Ok(()),
        balance: money(balance),
    }
}

fn refused(code: ErrorCode, balance: &str) -> TransferOutcome {
    TransferOutcome {
        result: Err(code),
        balance: money(balance),
    }
}

/// Asserts that `txsock ledger check` would pass, and returns (entries, total minor units).
fn assert_consistent(store: &mut dyn Store) -> (u64, i128) {
    let report = store.check().expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.total, report.minted);
    (report.entries, report.total)
}

/// Opens `n` stores (each its own connection), then runs `f(i, store)` on each in its own
/// thread, all starting together; returns the results in order.
fn concurrently<T: Send + 'static>(
    b: &dyn Backend,
    n: usize,
    f: impl Fn(usize, &mut dyn Store) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let stores: Vec<Box<dyn Store>> = (0..n).map(|_| b.open(money("0"))).collect();
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let threads: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, mut store)| {
            let barrier = barrier.clone();
            let f = f.clone();
            std::thread::spawn(move || {
                barrier.wait();
                f(i, store.as_mut())
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("worker thread panicked"))
        .collect()
}

fn schema_is_versioned_and_survives_reopening(b: &dyn Backend) {
    {
        let mut store = b.open(money("5.00"));
        assert_eq!(register(store.as_mut(), "alice"), Ok(()));
    }
    // Opening again (migrations already applied) keeps everything.
    let mut store = b.open(money("5.00"));
    assert_eq!(balance(store.as_mut(), "alice"), money("5.00"));
    assert_eq!(credentials(store.as_mut(), "alice").0, Some(verifier(5)));
    drop(store);
    // Migrations are idempotent: a database that claims to be older is migrated again.
    b.sql("UPDATE schema_version SET version = 0");
    let mut store = b.open(money("5.00"));
    assert_eq!(balance(store.as_mut(), "alice"), money("5.00"));
    assert_eq!(
        send(store.as_mut(), "alice", "1", "alice", "1.00").result,
        Err(ErrorCode::SelfTransfer)
    );
    drop(store);
    // A database from a newer txsock is refused, not misread.
    b.sql("UPDATE schema_version SET version = 999");
    let refused = b
        .try_open(money("0"))
        .err()
        .expect("a newer schema must be refused");
    assert!(format!("{refused:#}").contains("newer"), "{refused:#}");
}

fn registration_and_credentials(b: &dyn Backend) {
    let mut store = b.open(money("100.00"));
    assert_eq!(register(store.as_mut(), "alice"), Ok(()));
    assert_eq!(
        register(store.as_mut(), "alice"),
        Err(ErrorCode::UserExists)
    );
    let (v, lockout) = credentials(store.as_mut(), "alice");
    assert_eq!(v, Some(verifier(5)));
    assert_eq!(lockout, LockoutState::default());
    // Unknown users: no verifier, default lockout state.
    assert_eq!(
        credentials(store.as_mut(), "nobody"),
        (None, LockoutState::default())
    );
    assert_eq!(balance(store.as_mut(), "alice"), money("100.00"));
    // The opening balance is minted money, journaled as a deposit.
    let report = store.check().expect("check");
    assert_eq!((report.accounts, report.entries), (1, 1));
    assert_eq!(report.minted, 10000);
    // With no opening balance, nothing is journaled.
    let mut zero = b.open(money("0"));
    assert_eq!(register(zero.as_mut(), "bob"), Ok(()));
    assert_eq!(balance(zero.as_mut(), "bob"), money("0"));
    assert_eq!(assert_consistent(zero.as_mut()), (1, 10000));
}

fn login_failures_are_recorded_and_reset(b: &dyn Backend) {
    let mut store = b.open(money("1.00"));
    register(store.as_mut(), "alice").unwrap();
    let policy = Backoff::ACCOUNT;
    let mut expected = LockoutState::default();
    let start = now();
    for i in 0..7u64 {
        let at = Instant::from_millis(start.millis() + i);
        expected.record_failure(at, &policy);
        let reply = one(
            store.as_mut(),
            LedgerRequest::LoginFailed {
                user: user("alice"),
                now: at,
                policy,
            },
        );
        assert_eq!(reply, LedgerReply::Recorded(expected), "failure {i}");
        assert_eq!(credentials(store.as_mut(), "alice").1, expected);
    }
    assert!(expected.locked_until > start, "7 failures lock the account");
    // A success resets the state.
    let reply = one(
        store.as_mut(),
        LedgerRequest::LoginSucceeded {
            user: user("alice"),
        },
    );
    expected.record_success();
    assert_eq!(reply, LedgerReply::Recorded(expected));
    assert_eq!(credentials(store.as_mut(), "alice").1, expected);
    // An unknown user has nothing to record and is not created.
    let reply = one(
        store.as_mut(),
        LedgerRequest::LoginFailed {
            user: user("nobody"),
            now: start,
            policy,
        },
    );
    assert_eq!(reply, LedgerReply::Recorded(LockoutState::default()));
    assert_eq!(credentials(store.as_mut(), "nobody").0, None);
}

fn admin_lock_and_unlock(b: &dyn Backend) {
    let mut store = b.open(money("0"));
    store
        .add_user(&user("alice"), &verifier(1), money("0"), 1)
        .unwrap();
    store.set_admin_lock(&user("alice"), true).unwrap();
    // Locking twice is fine (the user exists).
    store.set_admin_lock(&user("alice"), true).unwrap();
    let (_, lockout) = credentials(store.as_mut(), "alice");
    assert_eq!(lockout.locked_until, Instant::from_millis(FOREVER));
    let listed = store.list_users().unwrap();
    assert!(listed[0].admin_locked);
    // Failed logins meanwhile, then an unlock clears both.
    one(
        store.as_mut(),
        LedgerRequest::LoginFailed {
            user: user("alice"),
            now: now(),
            policy: Backoff::ACCOUNT,
        },
    );
    assert_eq!(store.list_users().unwrap()[0].failures, 1);
    store.set_admin_lock(&user("alice"), false).unwrap();
    let (_, lockout) = credentials(store.as_mut(), "alice");
    assert_eq!((lockout.failures, lockout.locked_until), (0, Instant::ZERO));
    let listed = store.list_users().unwrap();
    assert!(!listed[0].admin_locked);
    assert_eq!(listed[0].failures, 0);
    assert!(store.set_admin_lock(&user("nobody"), true).is_err());
    assert!(store.set_admin_lock(&user("nobody"), false).is_err());
}

fn transfer_contract(b: &dyn Backend) {
    let mut store = b.open(money("10.00"));
    for name in ["a", "b", "c"] {
        register(store.as_mut(), name).unwrap();
    }
    let s = store.as_mut();
    let (replies, committed) = batch(s, vec![transfer_req("a", "1", "b", "3.00")]);
    assert_eq!(transfer_reply(replies[0].clone()), ok("7.00"));
    assert_eq!(committed.len(), 1);
    let c = &committed[0];
    assert_eq!(
        (c.id.as_str(), c.from.as_str(), c.to.as_str()),
        ("1", "a", "b")
    );
    assert_eq!((c.amount, c.balance_after), (money("3.00"), money("7.00")));
    assert!(c.at_ms > 0);
    // Idempotent retry: the original outcome, nothing moved, nothing newly committed.
    let (replies, committed) = batch(s, vec![transfer_req("a", "1", "b", "3.00")]);
    assert_eq!(transfer_reply(replies[0].clone()), ok("7.00"));
    assert!(committed.is_empty());
    // The same id for another transfer: refused, with the balance now.
    assert_eq!(
        send(s, "a", "1", "c", "3.00"),
        refused(ErrorCode::DuplicateId, "7.00")
    );
    assert_eq!(
        send(s, "a", "1", "b", "3.01"),
        refused(ErrorCode::DuplicateId, "7.00")
    );
    assert_eq!(
        send(s, "a", "2", "a", "1.00"),
        refused(ErrorCode::SelfTransfer, "7.00")
    );
    assert_eq!(
        send(s, "a", "3", "zed", "1.00"),
        refused(ErrorCode::UnknownRecipient, "7.00")
    );
    assert_eq!(
        send(s, "a", "4", "b", "7.01"),
        refused(ErrorCode::InsufficientFunds, "7.00")
    );
    // A refusal is final too: retries get it with the balance at the refusal, even after
    // the balances changed; the id with another transfer is a duplicate.
    store.deposit(&user("a"), money("1.00"), 1).unwrap();
    let s = store.as_mut();
    assert_eq!(
        send(s, "a", "4", "b", "7.01"),
        refused(ErrorCode::InsufficientFunds, "7.00")
    );
    assert_eq!(
        send(s, "a", "2", "a", "1.00"),
        refused(ErrorCode::SelfTransfer, "7.00")
    );
    assert_eq!(
        send(s, "a", "3", "zed", "1.00"),
        refused(ErrorCode::UnknownRecipient, "7.00")
    );
    assert_eq!(
        send(s, "a", "4", "b", "7.00"),
        refused(ErrorCode::DuplicateId, "8.00")
    );
    assert_eq!(send(s, "a", "5", "b", "7.50"), ok("0.50"));
    // The same id from another sender is another transfer.
    assert_eq!(send(s, "b", "1", "a", "0.50"), ok("20.00"));
    // The recipient's balance may reach the ceiling (10^15 minor units) but not pass it.
    b.set_balance("c", 999_999_999_999_000);
    assert_eq!(send(s, "b", "ceiling", "c", "10.00"), ok("10.00"));
    assert_eq!(
        send(s, "b", "6", "c", "0.01"),
        refused(ErrorCode::BalanceOverflow, "10.00")
    );
    b.set_balance("c", 9223372036854775000);
    assert_eq!(
        send(s, "b", "7", "c", "10.00"),
        refused(ErrorCode::BalanceOverflow, "10.00")
    );
    // Back to what the journal gives (10.00 opening + 10.00 received): refusals are final.
    b.set_balance("c", 2000);
    assert_eq!(
        send(s, "b", "7", "c", "10.00"),
        refused(ErrorCode::BalanceOverflow, "10.00")
    );
    assert_eq!(balance(s, "a"), money("1.00"));
    assert_eq!(balance(s, "b"), money("10.00"));
    assert_eq!(balance(s, "c"), money("20.00"));
    // Refusals are not journal entries: 3 opening deposits, 1 deposit and 4 transfers.
    assert_eq!(assert_consistent(s), (8, 3100));
}

fn batch_answers_in_order_and_requests_fail_alone(b: &dyn Backend) {
    let mut store = b.open(money("10.00"));
    register(store.as_mut(), "alice").unwrap();
    let (replies, committed) = batch(
        store.as_mut(),
        vec![
            register_req("dave", 4),
            transfer_req("alice", "t1", "dave", "1.00"),
            // The sender has no account: `not_logged_in`, nothing recorded; the rest stands.
            transfer_req("ghost", "t1", "alice", "1.00"),
            transfer_req("alice", "t1", "dave", "1.00"),
            transfer_req("alice", "t2", "dave", "2.00"),
            LedgerRequest::Balance { user: user("dave") },
            register_req("dave", 4),
        ],
    );
    assert_eq!(replies[0], LedgerReply::Registered(Ok(())));
    assert_eq!(transfer_reply(replies[1].clone()), ok("9.00"));
    assert_eq!(
        transfer_reply(replies[2].clone()),
        refused(ErrorCode::NotLoggedIn, "0")
    );
    // A repeat within the same batch is the idempotent case too.
    assert_eq!(transfer_reply(replies[3].clone()), ok("9.00"));
    assert_eq!(transfer_reply(replies[4].clone()), ok("7.00"));
    assert_eq!(replies[5], LedgerReply::Balance(Ok(money("13.00"))));
    assert_eq!(
        replies[6],
        LedgerReply::Registered(Err(ErrorCode::UserExists))
    );
    let ids: Vec<&str> = committed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2"]);
    assert_eq!(balance(store.as_mut(), "alice"), money("7.00"));
    assert_eq!(assert_consistent(store.as_mut()), (4, 2000));
}

fn balance_and_history_pages(b: &dyn Backend) {
    let mut store = b.open(money("10.00"));
    for name in ["alice", "bob", "carol"] {
        register(store.as_mut(), name).unwrap();
    }
    let s = store.as_mut();
    let n = 2 * HISTORY_PAGE + 1;
    for i in 0..n {
        send(s, "alice", &format!("h{i}"), "bob", "0.01");
    }
    send(s, "bob", "x", "carol", "0.02");
    store.deposit(&user("bob"), money("1.00"), 5).unwrap();
    let s = store.as_mut();
    let page = |s: &mut dyn Store, who: &str, offset: u32| match one(
        s,
        LedgerRequest::History {
            user: user(who),
            offset,
            deposits: false,
        },
    ) {
        LedgerReply::History(Ok(page)) => page,
        other => panic!("history: {other:?}"),
    };
    // Newest first, sent and received, deposits not shown.
    let first = page(s, "bob", 0);
    assert_eq!(first.entries.len(), HISTORY_PAGE);
    assert!(first.more);
    let e = &first.entries[0];
    assert_eq!(
        (
            e.id().map(TransferId::as_str),
            e.from().map(Username::as_str),
            e.to.as_str(),
            e.amount
        ),
        (Some("x"), Some("bob"), "carol", money("0.02"))
    );
    assert_eq!(e.at > 0, b.has_clock());
    assert_eq!(
        first.entries[1].id().map(TransferId::as_str),
        Some(format!("h{}", n - 1).as_str())
    );
    // All of bob's n + 1 entries over the pages, then an empty page.
    let mut seen = 0;
    let mut offset = 0;
    loop {
        let p = page(s, "bob", offset);
        seen += p.entries.len();
        offset += p.entries.len() as u32;
        if !p.more {
            break;
        }
        assert!(seen <= n + 1, "history never ends");
    }
    assert_eq!(seen, n + 1);
    let last = page(s, "bob", offset);
    assert!(last.entries.is_empty() && !last.more);
    let carol = page(s, "carol", 0);
    assert_eq!(carol.entries.len(), 1);
    assert!(!carol.more);
    assert_eq!(balance(s, "carol"), money("10.02"));
    // Balance of an unknown user: `not_logged_in` (only a logged-in user asks), not zero.
    assert_eq!(
        one(
            s,
            LedgerRequest::Balance {
                user: user("nobody")
            }
        ),
        LedgerReply::Balance(Err(ErrorCode::NotLoggedIn))
    );
}

/// A statement (history with deposits) lists the deposits made to the user, the opening
/// balance included, among the transfers in journal order; a history never does.
fn statements_list_deposits(b: &dyn Backend) {
    let mut store = b.open(money("10.00"));
    for name in ["alice", "bob"] {
        register(store.as_mut(), name).unwrap();
    }
    send(store.as_mut(), "alice", "t1", "bob", "1.00");
    store.deposit(&user("bob"), money("2.50"), 7).unwrap();
    send(store.as_mut(), "bob", "t2", "alice", "0.50");
    let s = store.as_mut();
    let page = |s: &mut dyn Store, who: &str, offset: u32, deposits: bool| match one(
        s,
        LedgerRequest::History {
            user: user(who),
            offset,
            deposits,
        },
    ) {
        LedgerReply::History(Ok(page)) => page,
        other => panic!("history: {other:?}"),
    };
    let shown = |s: &mut dyn Store, who: &str, deposits: bool| {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let p = page(s, who, offset, deposits);
            offset += p.entries.len() as u32;
            all.extend(p.entries.iter().map(|e| match &e.kind {
                EntryKind::Transfer { id, .. } => (id.to_string(), e.amount),
                EntryKind::Deposit => (format!("deposit to {}", e.to), e.amount),
            }));
            if !p.more {
                return all;
            }
        }
    };
    let transfers = [
        ("t2".to_string(), money("0.50")),
        ("t1".to_string(), money("1.00")),
    ];
    assert_eq!(shown(s, "bob", false), transfers);
    if b.journals_deposits() {
        let deposit = |amount| ("deposit to bob".to_string(), money(amount));
        assert_eq!(
            shown(s, "bob", true),
            [
                transfers[0].clone(),
                deposit("2.50"),
                transfers[1].clone(),
                deposit("10.00")
            ]
        );
        // Nobody else's deposits: alice sees her opening balance, not bob's deposit.
        let alice = shown(s, "alice", true);
        assert_eq!(alice.len(), 3, "{alice:?}");
        assert_eq!(alice[2], ("deposit to alice".to_string(), money("10.00")));
        let d = &page(s, "bob", 1, true).entries[0];
        assert_eq!((&d.kind, d.to.as_str()), (&EntryKind::Deposit, "bob"));
        assert_eq!(d.at, 7);
    } else {
        assert_eq!(shown(s, "bob", true), transfers);
    }
}

fn deposits_and_user_list(b: &dyn Backend) {
    let mut store = b.open(money("99.00"));
    // add_user takes its balance from the argument, not the opening balance.
    store
        .add_user(&user("carol"), &verifier(3), money("2.50"), 10)
        .unwrap();
    store
        .add_user(&user("alice"), &verifier(1), money("0"), 10)
        .unwrap();
    assert!(store
        .add_user(&user("alice"), &verifier(1), money("1.00"), 10)
        .is_err());
    assert_eq!(
        store.deposit(&user("alice"), money("1.25"), 11).unwrap(),
        money("1.25")
    );
    assert_eq!(
        store.deposit(&user("alice"), money("1.00"), 12).unwrap(),
        money("2.25")
    );
    assert!(store.deposit(&user("nobody"), money("1.00"), 12).is_err());
    let listed = store.list_users().unwrap();
    let summary: Vec<(&str, Amount, bool, u32)> = listed
        .iter()
        .map(|u| (u.name.as_str(), u.balance, u.admin_locked, u.failures))
        .collect();
    assert_eq!(
        summary,
        [
            ("alice", money("2.25"), false, 0),
            ("carol", money("2.50"), false, 0)
        ]
    );
    assert_eq!(credentials(store.as_mut(), "carol").0, Some(verifier(3)));
    // carol's deposit and alice's two; none for alice's zero opening.
    assert_eq!(assert_consistent(store.as_mut()), (3, 475));
    // A deposit may take a balance to the ceiling (10^15 minor units) but not past it.
    b.set_balance("carol", 999_999_999_999_750);
    assert_eq!(
        store.deposit(&user("carol"), money("2.50"), 13).unwrap(),
        Amount(1_000_000_000_000_000)
    );
    assert!(store.deposit(&user("carol"), money("0.01"), 13).is_err());
    b.set_balance("carol", 9223372036854775000);
    assert!(store.deposit(&user("carol"), money("10.00"), 13).is_err());
    // Back to what the journal gives: 2.50 at creation and the 2.50 deposited above.
    b.set_balance("carol", 500);
    assert_eq!(assert_consistent(store.as_mut()), (4, 725));
}

fn server_secret_is_created_once_and_shared(b: &dyn Backend) {
    // Every server starting at once on a new database gets the same secret.
    let secrets = concurrently(b, 8, |_, s| s.server_secret().expect("secret"));
    assert!(secrets.iter().all(|s| *s == secrets[0]), "{secrets:?}");
    assert_ne!(secrets[0], [0; 32]);
    let mut store = b.open(money("0"));
    assert_eq!(store.server_secret().unwrap(), secrets[0]);
    assert_eq!(store.server_secret().unwrap(), secrets[0]);
}

fn check_finds_inconsistencies(b: &dyn Backend) {
    let mut store = b.open(money("10.00"));
    register(store.as_mut(), "alice").unwrap();
    register(store.as_mut(), "bob").unwrap();
    send(store.as_mut(), "alice", "1", "bob", "1.00");
    assert_consistent(store.as_mut());
    b.set_balance("alice", 901);
    let report = store.check().unwrap();
    assert_eq!((report.accounts, report.entries), (2, 3));
    assert!(
        report.problems.iter().any(|p| p.starts_with("alice:")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.contains("not conserved")),
        "{:?}",
        report.problems
    );
}

fn concurrent_full_balance_transfers_exactly_one_succeeds(b: &dyn Backend) {
    const SENDERS: usize = 50;
    let mut store = b.open(money("100.00"));
    register(store.as_mut(), "alice").unwrap();
    for r in 0..5 {
        register(store.as_mut(), &format!("r{r}")).unwrap();
    }
    let (_, total_before) = assert_consistent(store.as_mut());
    // 50 stores (50 connections, as 50 server processes would have), each sending alice's
    // whole balance under its own id at the same moment.
    let outcomes = concurrently(b, SENDERS, |i, s| {
        send(
            s,
            "alice",
            &format!("all-{i}"),
            &format!("r{}", i % 5),
            "100.00",
        )
    });
    let succeeded = outcomes.iter().filter(|o| o.result.is_ok()).count();
    assert_eq!(succeeded, 1, "{outcomes:?}");
    for o in &outcomes {
        match o.result {
            Ok(()) => assert_eq!(o.balance, money("0")),
            Err(code) => assert_eq!(*o, refused(code, "0"), "{outcomes:?}"),
        }
        if let Err(code) = o.result {
            assert_eq!(code, ErrorCode::InsufficientFunds);
        }
    }
    assert_eq!(balance(store.as_mut(), "alice"), money("0"));
    let (entries, total) = assert_consistent(store.as_mut());
    assert_eq!(total, total_before);
    assert_eq!(entries, 6 + 1);
}

fn concurrent_retries_of_one_id_commit_once(b: &dyn Backend) {
    let mut store = b.open(money("100.00"));
    register(store.as_mut(), "alice").unwrap();
    register(store.as_mut(), "bob").unwrap();
    // The same transfer (a client retrying on several servers): one commit, one answer.
    let outcomes = concurrently(b, 20, |_, s| {
        let (replies, committed) = batch(s, vec![transfer_req("alice", "once", "bob", "10.00")]);
        (transfer_reply(replies[0].clone()), committed.len())
    });
    assert!(
        outcomes.iter().all(|(o, _)| *o == ok("90.00")),
        "{outcomes:?}"
    );
    let newly: usize = outcomes.iter().map(|(_, n)| n).sum();
    assert_eq!(newly, 1, "exactly one store commits the transfer");
    assert_eq!(balance(store.as_mut(), "alice"), money("90.00"));
    assert_eq!(balance(store.as_mut(), "bob"), money("110.00"));
    assert_eq!(assert_consistent(store.as_mut()), (3, 20000));
}

fn concurrent_crossing_transfers_conserve_money(b: &dyn Backend) {
    const USERS: usize = 4;
    const STORES: usize = 6;
    const BATCHES: usize = 15;
    let mut store = b.open(money("1.00"));
    for u in 0..USERS {
        register(store.as_mut(), &format!("u{u}")).unwrap();
    }
    let (entries_before, total_before) = assert_consistent(store.as_mut());
    // Batches of transfers in both directions between the same accounts, from several
    // stores at once: the pattern that deadlocks without a lock order. Amounts are small
    // against the balances so that most succeed; some run dry and are refused.
    let results = concurrently(b, STORES, |i, s| {
        let mut ok = 0;
        let mut newly = 0;
        for k in 0..BATCHES {
            let requests = (0..4)
                .map(|j| {
                    let from = (i + j + k) % USERS;
                    let to = (from + 1 + (i + k) % (USERS - 1)) % USERS;
                    transfer_req(
                        &format!("u{from}"),
                        &format!("s{i}-{k}-{j}"),
                        &format!("u{to}"),
                        "0.07",
                    )
                })
                .rev()
                .collect();
            let (replies, committed) = batch(s, requests);
            ok += replies
                .into_iter()
                .filter(|r| matches!(r, LedgerReply::Transfer(o) if o.result.is_ok()))
                .count();
            newly += committed.len();
        }
        (ok, newly)
    });
    let ok: usize = results.iter().map(|r| r.0).sum();
    let newly: usize = results.iter().map(|r| r.1).sum();
    // Ids are unique, so every success is one new journal entry.
    assert_eq!(ok, newly);
    assert!(ok > 0);
    let (entries, total) = assert_consistent(store.as_mut());
    assert_eq!(total, total_before);
    assert_eq!(entries, entries_before + ok as u64);
}

fn concurrent_login_failures_are_all_counted(b: &dyn Backend) {
    const STORES: usize = 16;
    let mut store = b.open(money("0"));
    register(store.as_mut(), "alice").unwrap();
    let at = now();
    let policy = Backoff::ACCOUNT;
    let states = concurrently(b, STORES, move |_, s| {
        match one(
            s,
            LedgerRequest::LoginFailed {
                user: user("alice"),
                now: at,
                policy,
            },
        ) {
            LedgerReply::Recorded(state) => state.failures,
            other => panic!("{other:?}"),
        }
    });
    // Each update saw the one before it: no lost update, every count seen once.
    let mut seen = states.clone();
    seen.sort_unstable();
    assert_eq!(seen, (1..=STORES as u32).collect::<Vec<_>>());
    assert_eq!(
        credentials(store.as_mut(), "alice").1.failures,
        STORES as u32
    );
}

fn concurrent_registrations_of_one_name(b: &dyn Backend) {
    let results = concurrently(b, 16, |i, s| match one(s, register_req("carol", i as u8)) {
        LedgerReply::Registered(r) => r,
        other => panic!("{other:?}"),
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(ErrorCode::UserExists))));
    let mut store = b.open(money("0"));
    assert_eq!(store.list_users().unwrap().len(), 1);
}
