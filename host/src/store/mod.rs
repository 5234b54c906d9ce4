//! Durable storage behind one trait: SQLite (embedded, the default) and MySQL/MariaDB
//! (a shared server database, so that several `txsock serve` processes share one ledger).
//!
//! A store executes the core's [`LedgerRequest`]s following the contract documented there,
//! many at a time in one transaction (group commit), and serves the admin commands.

#[cfg(test)]
mod conformance;
pub mod mysql;
pub mod row;
pub mod sqlite;

use anyhow::Result;
use txsock_core::auth::Verifier;
use txsock_core::ledger::{LedgerReply, LedgerRequest};
use txsock_core::{Amount, Instant, TransferId, Username};

/// A transfer that a batch committed for the first time (for `transactions.log`).
#[derive(Debug, Clone)]
pub struct Committed {
    /// Idempotency key.
    pub id: TransferId,
    /// Sender.
    pub from: Username,
    /// Recipient.
    pub to: Username,
    /// Amount.
    pub amount: Amount,
    /// Sender's balance afterwards.
    pub balance_after: Amount,
    /// Commit time, ms since the Unix epoch.
    pub at_ms: u64,
}

/// One user as `txsock user list` shows it.
#[derive(Debug, Clone)]
pub struct UserSummary {
    /// Name.
    pub name: String,
    /// Balance.
    pub balance: Amount,
    /// Locked by an administrator.
    pub admin_locked: bool,
    /// Locked by failed logins until this instant (ms since the epoch), if in the future.
    pub locked_until_ms: u64,
    /// Consecutive failed logins.
    pub failures: u32,
}

/// Result of `txsock ledger check`.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Accounts checked.
    pub accounts: u64,
    /// Journal entries read.
    pub entries: u64,
    /// Sum of all balances, minor units.
    pub total: i128,
    /// Money created (opening balances and deposits), minor units.
    pub minted: i128,
    /// Everything wrong, one line each; empty if the ledger is consistent.
    pub problems: Vec<String>,
}

/// Durable ledger storage.
pub trait Store: Send + 'static {
    /// Executes `batch` (requests with the time they were made) in one transaction and one
    /// sync, returning one reply per request in order. Transfers newly committed are pushed
    /// to `committed`. An `Err` means nothing of the batch was committed.
    fn execute_batch(
        &mut self,
        batch: &[(LedgerRequest, Instant)],
        committed: &mut Vec<Committed>,
    ) -> Result<Vec<LedgerReply>>;

    /// The server secret (created on first use and shared by every server on this store).
    fn server_secret(&mut self) -> Result<[u8; 32]>;

    /// Creates a user with `balance` (recorded as a deposit when non-zero).
    fn add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        now_ms: u64,
    ) -> Result<()>;

    /// All users, by name.
    fn list_users(&mut self) -> Result<Vec<UserSummary>>;

    /// Sets or clears the administrator lock; clearing also resets failed logins.
    fn set_admin_lock(&mut self, user: &Username, locked: bool) -> Result<()>;

    /// Adds `amount` to `user`, journaled as a deposit; returns the new balance.
    fn deposit(&mut self, user: &Username, amount: Amount, now_ms: u64) -> Result<Amount>;

    /// Checks that every balance equals its journal and that money is conserved.
    fn check(&mut self) -> Result<CheckReport>;
}

/// Opens the store a `--db` value names: `mysql://USER:PASS@HOST:PORT/DB` (or `mariadb://…`)
/// for MySQL/MariaDB, `sqlite://PATH` or a plain path for SQLite. Either way the schema is
/// created or migrated first.
pub fn open(db: &str, opening_balance: Amount) -> Result<Box<dyn Store>> {
    if db.starts_with("mysql://") || db.starts_with("mariadb://") {
        return Ok(Box::new(mysql::MysqlStore::open(db, opening_balance)?));
    }
    let path = db.strip_prefix("sqlite://").unwrap_or(db);
    Ok(Box::new(sqlite::SqliteStore::open(
        std::path::Path::new(path),
        opening_balance,
    )?))
}
