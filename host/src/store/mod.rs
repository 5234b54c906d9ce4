//! Durable storage behind one trait: SQLite (embedded, the default) and MySQL/MariaDB
//! (a shared server database, so that several `txsock serve` processes share one ledger).
//!
//! A store executes the core's [`LedgerRequest`]s following the contract documented there,
//! many at a time in one transaction (group commit), and serves the admin commands.

#[cfg(test)]
pub(crate) mod conformance;
mod failure;
#[cfg(test)]
mod failure_tests;
pub mod mysql;
pub mod row;
pub mod sqlite;

pub use failure::{
    advice, failure_of, io_failure_of, report, storage_failure, Invalid, Refused, EXIT_STORAGE,
};

use anyhow::{bail, Result};
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

impl Committed {
    /// The record of a transfer the money rule committed just now.
    pub fn transfer(
        from: &Username,
        id: &TransferId,
        to: &Username,
        amount: Amount,
        balance_after: Amount,
        at_ms: u64,
    ) -> Committed {
        Committed {
            id: id.clone(),
            from: from.clone(),
            to: to.clone(),
            amount,
            balance_after,
            at_ms,
        }
    }
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

/// What of a batch is durable although [`Store::execute_batch`] panicked
/// ([`Store::recover_from_panic`]): its first requests, in parts whose commit had returned
/// before the panic. Nothing of the requests after them was committed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DurablePrefix {
    /// The replies to the batch's first `replies.len()` requests, final: a part that
    /// committed, or one that failed alone and is answered `Unavailable` as when no panic
    /// follows.
    pub replies: Vec<LedgerReply>,
    /// How many transfers at the front of `execute_batch`'s `committed` are durable (its
    /// length before the batch included); the ones after them were undone.
    pub committed: usize,
    /// Transactions committed, one sync each (as [`Store::last_batch_transactions`]).
    pub transactions: u64,
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

    /// The database's own consistency check (SQLite's `PRAGMA integrity_check`, MySQL's
    /// `CHECK TABLE`): one line per problem found, empty if none. A database too damaged
    /// to be checked is a problem, not an `Err`; `Err` means the check could not run.
    fn integrity(&mut self) -> Result<Vec<String>>;

    /// Whether [`Store::execute_batch`] is local and bounded (a file on this machine: no
    /// network, no lock waits on other servers, no sleeps between retries), so that a
    /// session may run a small commit inline on its tokio worker. False (the default) keeps
    /// every commit on the ledger thread: a store that can wait seconds (MySQL's lock
    /// waits, reconnects and read timeouts) would freeze that worker's other connections.
    fn commits_locally(&self) -> bool {
        false
    }

    /// Called after [`Store::execute_batch`] panicked: leaves the store fit for the next
    /// batch, and says what of the panicked batch is durable all the same. A store that
    /// commits a batch in parts (MySQL's split) may have committed its first parts before a
    /// later one panicked: those requests are answered with their real replies, and their
    /// transfers logged and counted, while the rest of the batch is answered `Unavailable`.
    ///
    /// The default does nothing and reports nothing durable, which suits a store that
    /// commits every batch in one transaction whose `COMMIT` is its last step, and whose
    /// open transaction rolls back as the panic unwinds (SQLite's `Transaction` does on
    /// drop). A store that keeps a transaction open on a connection it keeps (MySQL) must
    /// drop that connection, or the next batch would commit the panicked one's partial
    /// writes.
    fn recover_from_panic(&mut self) -> DurablePrefix {
        DurablePrefix::default()
    }

    /// How many transactions, each with its sync, the last [`Store::execute_batch`] that
    /// returned `Ok` committed: one for a store that commits every batch whole (the
    /// default, SQLite's and the test stores'); MySQL commits a batch that keeps
    /// conflicting in parts, one transaction each, and a part that failed counts none.
    /// Counted by `txsock_commits_total` and the closing `commits=` figure.
    fn last_batch_transactions(&self) -> u64 {
        1
    }
}

/// How a command opens its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create the database if it does not exist, and create or migrate the schema
    /// (`serve`, `user add`).
    Create,
    /// Open an existing txsock database for writing, migrating its schema (`user lock`,
    /// `account deposit`, ...); a missing database is an error, and nothing is created.
    Existing,
    /// Open an existing txsock database read-only: no migration, no file or directory
    /// created, nothing written (`ledger check`, `user list`); works without write
    /// permission.
    ReadOnly,
}

/// Where a `--db` value points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file.
    Sqlite(std::path::PathBuf),
    /// A MySQL/MariaDB URL (`mysql://…` or `mariadb://…`).
    Mysql(String),
}

impl Location {
    /// The database as shown in messages: the path, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Mysql(url) => match url.split_once("://") {
                Some((scheme, rest)) => match rest.rsplit_once('@') {
                    Some((credentials, host)) => {
                        let user = credentials.split(':').next().unwrap_or("");
                        format!("{scheme}://{user}@{host}")
                    }
                    None => url.clone(),
                },
                None => url.clone(),
            },
        }
    }

    /// Parses a `--db` value: `mysql://…` or `mariadb://…`, `sqlite://PATH`, or a plain path.
    /// Any other `SCHEME://` is refused (a typo such as `mysq://` or an unsupported
    /// database such as `postgres://` must not become a directory named after the URL).
    pub fn parse(db: &str) -> Result<Location> {
        if db.starts_with("mysql://") || db.starts_with("mariadb://") {
            return Ok(Location::Mysql(db.to_string()));
        }
        if let Some(path) = db.strip_prefix("sqlite://") {
            return Ok(Location::Sqlite(path.into()));
        }
        if let Some((scheme, _)) = db.split_once("://") {
            let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if is_scheme {
                bail!(
                    "unsupported database URL scheme `{scheme}://` in --db: use \
                     sqlite://PATH (or a plain path) or mysql://USER:PASSWORD@HOST:PORT/DATABASE \
                     (mariadb:// also works)"
                );
            }
        }
        Ok(Location::Sqlite(db.into()))
    }
}

/// Opens the store at `location` as `access` says.
pub fn open_at(
    location: &Location,
    opening_balance: Amount,
    access: Access,
) -> Result<Box<dyn Store>> {
    Ok(match location {
        Location::Mysql(url) => {
            Box::new(mysql::MysqlStore::open_with(url, opening_balance, access)?)
        }
        Location::Sqlite(path) => Box::new(sqlite::SqliteStore::open_with(
            path,
            opening_balance,
            access,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::Location;

    #[test]
    fn location_accepts_known_schemes_and_plain_paths_only() {
        assert_eq!(
            Location::parse("sqlite://a/b.db").unwrap(),
            Location::Sqlite("a/b.db".into())
        );
        assert_eq!(
            Location::parse("./data/x.db").unwrap(),
            Location::Sqlite("./data/x.db".into())
        );
        assert!(matches!(
            Location::parse("mariadb://u:p@h:1/d").unwrap(),
            Location::Mysql(_)
        ));
        assert_eq!(
            Location::parse("mysql://u:secret@h:1/d").unwrap().shown(),
            "mysql://u@h:1/d"
        );
        for bad in [
            "postgres://u@h/d",
            "mysq://u@h/d",
            "sqlite3://x.db",
            "file://x.db",
        ] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains("unsupported database URL scheme"), "{bad}: {e}");
        }
    }
}
