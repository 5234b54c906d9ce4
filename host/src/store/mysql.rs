//! The MySQL/MariaDB store: several `txsock serve` processes share one ledger.
//!
//! Each process still commits many sessions' requests in one transaction (group commit);
//! what changes is that other processes commit to the same tables at the same time. Under
//! InnoDB's default isolation (REPEATABLE READ, set explicitly for each connection) the
//! store stays correct as follows:
//!
//! - **Row locks, in one global order.** A batch's transaction starts with one
//!   `SELECT … FOR UPDATE` of every user row that its transfers and login updates touch,
//!   sorted by name. Two processes' batches that share an account queue behind each other
//!   until the first commits, instead of deadlocking or losing an update.
//! - **No stale snapshot.** That locking statement is the transaction's first, and InnoDB
//!   takes the consistent-read snapshot at the first plain read, after the locks are held.
//!   A journal entry for `(from, id)` is only ever written by a transaction holding the
//!   lock on `from` (and so is a recorded refusal), so the plain reads that decide "new or
//!   repeated id" see every earlier outcome of that id. Reads that decide a write
//!   (balances, lockout state) are locking reads anyway: they see the latest committed row.
//! - **Few round trips.** A run of transfers in a batch reads its balances and the earlier
//!   outcomes of its ids with one statement each, applies the ledger contract in memory in
//!   request order, then writes each changed balance once and the journal and refusals with
//!   multi-row inserts: a batch costs statements per account touched, not per transfer.
//! - **Conditional updates.** A balance is written as a compare-and-set
//!   (`SET balance = new WHERE name = ? AND balance = <value read under the lock>`) whose
//!   affected rows are checked, so nothing is overwritten even if a lock failed to hold;
//!   `CHECK (balance >= 0)` backs it up.
//! - **Unique ids.** A unique key on `journal (from_user, transfer_id)` (and the primary key
//!   of `refusals`) makes a second outcome for an id impossible whatever happens; a
//!   duplicate-key error on insert rolls the batch back and runs it again, and that run
//!   reads the outcome recorded first and answers with it (the idempotent case).
//! - **Retries.** A deadlock (1213), a lock wait timeout (1205), a snapshot conflict
//!   (1020, MariaDB 11.6+) or an unhandled duplicate key (1062) rolls the whole batch back and runs it again, at most
//!   [`MAX_ATTEMPTS`] times, with a growing random pause. So does a connection lost before
//!   `COMMIT` was sent (InnoDB rolls back a disconnected transaction); one lost after
//!   `COMMIT` was sent is an error, as its outcome is unknown, and clients retry with the
//!   same transfer ids. A batch of several requests that deadlocks (1213, or fails Galera
//!   certification) [`SPLIT_AFTER`] times, or waits out one lock wait timeout (1205), is
//!   committed in two halves, one after the other, each split again the same way
//!   ([`MysqlStore::commit_splitting`]): a contended account then holds up or fails only
//!   its own part of the batch, never the requests that merely shared its commit. Only
//!   contention splits: lost connections, a node not ready (1047), snapshot conflicts and
//!   duplicate keys keep their [`MAX_ATTEMPTS`] runs of the whole batch, as retrying them
//!   unchanged succeeds, and a failed check after a `COMMIT` that succeeded is never run
//!   again in parts (its outcome is unknown, not a conflict). A lock wait splits at once
//!   and a part of a split batch gives up after one wait, because a row held for the whole
//!   timeout (10 s) is held by a transaction that is stuck, and waiting for it again at
//!   every level of the split would multiply the time the batch's sessions wait: so the
//!   worst case is one wait per level (log2 of the batch's size, plus one), not
//!   [`MAX_ATTEMPTS`] waits per level. A batch of one request, which cannot split, keeps
//!   its [`MAX_ATTEMPTS`] runs, as before splitting existed (up to 80 s behind a stuck row,
//!   while the sessions behind it wait: the lock wait timeout bounds each run).
//!
//! Durability is the server's: with InnoDB's default `innodb_flush_log_at_trx_commit = 1`,
//! `COMMIT` returns after the redo log is flushed, so an acknowledged transfer is on disk.
//!
//! # On a Galera cluster
//!
//! Each server may use a different node of a MariaDB Galera cluster (multi-primary,
//! synchronous replication). Galera certifies optimistically: `FOR UPDATE` locks hold only on
//! the node that takes them, and at `COMMIT` a transaction whose written rows were written
//! meanwhile by a transaction of another node fails certification, reported as a deadlock
//! (1213). The rules above then stay correct as follows:
//!
//! - **Conflicts abort, then retry.** A certification failure is a rolled-back transaction,
//!   retried like any deadlock (also when it comes at `COMMIT`, which then changed nothing),
//!   and split as above when it keeps failing (servers on different nodes whose batches share
//!   accounts abort each other's batches all the time); nothing is acknowledged before a
//!   `COMMIT` that succeeded.
//! - **Causal reads.** On a connection to a Galera node (detected when it connects:
//!   `wsrep_on`) the session sets `wsrep_sync_wait = 1`: every read first waits until the
//!   node has applied every transaction committed anywhere in the cluster before it began.
//!   So the reads that decide (balances, earlier outcomes of an id, credentials) see what
//!   any other node committed, and a retry of an id on another node sees its first outcome.
//!   On MariaDB Galera, a batch's reads after its first locking read skip that wait
//!   ([`NO_CAUSAL_WAIT`]); other Galera flavours (Percona XtraDB Cluster, MySQL wsrep) lack
//!   `SET STATEMENT`, so there every read waits.
//! - **One certification key per sender.** Every transaction that records outcomes for a
//!   sender's transfer ids also writes that sender's marker row in `meta`
//!   ([`SENDER_MARKER`]). A commit writes the sender's balance anyway, but a refusal writes
//!   none; without the marker, two nodes deciding the same id at once (a client that failed
//!   over while its first server's batch was still running) could record a refusal on one
//!   and a commit on the other. With it, the second to commit fails certification, runs
//!   again, and reads the first's outcome.
//! - **Aborts that no statement reports.** When a replicated transaction needs locks that a
//!   local one holds, Galera rolls the local one back ("brute-force abort"); its next
//!   statement normally fails with 1213 and the batch runs again. Under the crash test's load
//!   that was not always so: statements after such an abort ran outside the rolled-back
//!   transaction (in autocommit mode: money was created), and once a `COMMIT` succeeded that
//!   committed nothing (a transfer was acknowledged that no node had). So on Galera the
//!   session runs with `autocommit = 0`, each transaction first writes a random token into
//!   a session temporary table and checks that it is still there right before `COMMIT`
//!   ([`liveness_token`]), and after the `COMMIT` the batch reads back the outcomes it
//!   recorded before anything is acknowledged ([`MysqlStore::recorded_count`]); either
//!   check failing runs the batch again.
//! - **Nodes that cannot serve.** A node that is not synced or not in the primary component
//!   answers 1047 (`WSREP has not yet prepared node for application use`): handled like a
//!   lost connection (reconnect, run again if `COMMIT` was not sent). When the retries run
//!   out the request is answered `internal`, and clients move to another server.
//! - **Schema.** `GET_LOCK` is local to a node, so servers starting at once on different
//!   nodes may migrate at the same time: every migration statement is idempotent DDL (a
//!   `DROP` that another node ran first finds nothing and counts as done), which Galera runs
//!   in total order on all nodes, and each version is recorded in a retried transaction.

use super::row::{
    amount_of, credentials_of, fmt_i128, name_of, recorded, sql_amount, CredentialsRow, FOREVER,
};
use super::{Access, CheckReport, Committed, DurablePrefix, Store, UserSummary};
use anyhow::{anyhow, bail, Context, Result};
use mysql::consts::CapabilityFlags;
use mysql::prelude::{FromRow, Queryable};
use mysql::{Conn, Opts, OptsBuilder, Params, Row, Value};
use std::collections::HashMap;
use std::time::Duration;
use txsock_core::auth::Verifier;
use txsock_core::ledger::{
    credit, decide_transfer, HistoryEntry, HistoryPage, LedgerReply, LedgerRequest,
    TransferDecision, TransferFacts, MAX_BALANCE,
};
use txsock_core::lockout::LockoutState;
use txsock_core::message::HISTORY_PAGE;
use txsock_core::{Amount, ErrorCode, Instant, TransferId, Username};

/// Attempts at one transaction before its error is returned (deadlocks, lock waits).
pub const MAX_ATTEMPTS: u32 = 8;

/// Runs of a batch of several requests before a conflict splits it in two (see
/// [`MysqlStore::commit_splitting`]): a batch that lost this many times to other servers'
/// commits on a Galera cluster likely will again, and a smaller write set conflicts less.
pub const SPLIT_AFTER: u32 = 3;

/// How many runs of one transaction each kind of contention allows before its error is
/// returned; all failures together allow at most [`MAX_ATTEMPTS`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tries {
    /// Runs ending in a deadlock or a Galera certification failure.
    deadlocks: u32,
    /// Runs ending in a lock wait timeout.
    lock_waits: u32,
}

/// Every retry a transaction may have ([`MysqlStore::transaction`]).
const ALL_TRIES: Tries = Tries {
    deadlocks: MAX_ATTEMPTS,
    lock_waits: MAX_ATTEMPTS,
};

/// Schema migrations: `MIGRATIONS[i]` takes a database from version `i` to `i + 1`
/// (version 0 is an empty database). MySQL cannot roll DDL back, so each statement is
/// idempotent (a `DROP` of what is already gone counts as done: [`already_done`]) and the
/// version is recorded after each migration. To change the schema, append a migration.
const MIGRATIONS: &[&[&str]] = &[SCHEMA_V1, SCHEMA_V2];

/// Schema version this code writes; older databases are migrated on open.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The version table: one row, the schema version of the database.
const VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL) ENGINE=InnoDB";

/// Version 1: users, the journal, final refusals and the server secret. Names and ids are
/// binary strings, compared byte for byte as SQLite does.
const SCHEMA_V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (
        meta_key VARCHAR(64) NOT NULL PRIMARY KEY,
        meta_value VARBINARY(255) NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS users (
        name VARBINARY(32) NOT NULL PRIMARY KEY,
        salt VARBINARY(64) NOT NULL,
        iterations INT UNSIGNED NOT NULL,
        stored_key BINARY(32) NOT NULL,
        server_key BINARY(32) NOT NULL,
        balance BIGINT NOT NULL,
        failures INT UNSIGNED NOT NULL DEFAULT 0,
        last_failure_ms BIGINT NOT NULL DEFAULT 0,
        locked_until_ms BIGINT NOT NULL DEFAULT 0,
        admin_locked TINYINT NOT NULL DEFAULT 0,
        created_ms BIGINT NOT NULL,
        CONSTRAINT balance_not_negative CHECK (balance >= 0)
    ) ENGINE=InnoDB",
    // kind: 'transfer' (from_user -> to_user) or 'deposit' (money created for to_user).
    "CREATE TABLE IF NOT EXISTS journal (
        seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        kind ENUM('transfer', 'deposit') NOT NULL,
        from_user VARBINARY(32) NULL,
        transfer_id VARBINARY(32) NULL,
        to_user VARBINARY(32) NOT NULL,
        amount BIGINT NOT NULL,
        balance_after BIGINT NULL,
        at_ms BIGINT NOT NULL,
        CONSTRAINT amount_positive CHECK (amount > 0),
        UNIQUE KEY journal_id (from_user, transfer_id),
        KEY journal_to (to_user, seq),
        KEY journal_from (from_user, seq)
    ) ENGINE=InnoDB",
    // Final refusals (insufficient funds, unknown recipient, ...), so that a retried
    // transfer id gets its original answer. Nothing moved for these; not in the journal.
    "CREATE TABLE IF NOT EXISTS refusals (
        from_user VARBINARY(32) NOT NULL,
        transfer_id VARBINARY(32) NOT NULL,
        to_user VARBINARY(32) NOT NULL,
        amount BIGINT NOT NULL,
        code VARCHAR(32) NOT NULL,
        balance_at BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        PRIMARY KEY (from_user, transfer_id)
    ) ENGINE=InnoDB",
];

/// Version 2: no `journal_from (from_user, seq)` index. Its prefix is the unique key's
/// (`journal_id (from_user, transfer_id)`), which serves every read by sender as well (the
/// history page's `from_user = ? OR to_user = ?` merges it with `journal_to`, then sorts, as
/// it did with `journal_from`; `ledger check` reads whole tables). The index cost every
/// journal row one more B-tree insert and its pages in the buffer pool and the redo log.
/// Dropping a secondary index is in place on InnoDB (no table copy), and a short DDL on
/// Galera (run on all nodes in total order).
const SCHEMA_V2: &[&str] = &["ALTER TABLE journal DROP INDEX journal_from"];

/// Settings every connection starts with: strict mode (errors, never silent truncation),
/// the default isolation whatever the server's configuration, and lock waits short enough
/// that a stuck batch is retried rather than holding its sessions for 50 s.
const SESSION_INIT: &[&str] = &[
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET SESSION innodb_lock_wait_timeout = 10",
];

/// Server errors after which the transaction was (or must be) rolled back and can simply
/// be run again: lock wait timeout, deadlock, snapshot conflict ("record has changed since
/// last read", MariaDB 11.6+ with `innodb_snapshot_isolation`).
const RETRYABLE: &[u16] = &[1205, 1213, 1020];

/// Duplicate key.
const ER_DUP_ENTRY: u16 = 1062;

/// "Can't DROP …; check that column/key exists": a migration's `DROP` found nothing to drop.
const ER_CANT_DROP_FIELD_OR_KEY: u16 = 1091;

/// Galera: the node is not ready for queries (joining, donating, or outside the primary
/// component): "WSREP has not yet prepared node for application use".
const ER_WSREP_NOT_READY: u16 = 1047;

/// On Galera, the `meta` key prefix of the row each transaction that records a transfer
/// outcome for a sender also writes (followed by the sender's name): see the module
/// documentation.
const SENDER_MARKER: &str = "sender.";

/// On MariaDB Galera, the prefix of a read made while this transaction holds row locks: no
/// causal wait. `SET STATEMENT` is MariaDB's only (MySQL and Galera on MySQL, such as Percona
/// XtraDB Cluster, answer a syntax error), so it is used only where the connection found
/// both `wsrep_on` and MariaDB ([`is_mariadb`]); elsewhere the reads keep their causal wait.
///
/// Why: the transaction's first statement (the locking read of its users) already waited
/// until this node had applied everything committed in the cluster before it, and whatever
/// another node commits after that on the same senders conflicts with this transaction's
/// writes (balances, sender markers) at certification, which runs it again. A causal wait
/// while holding locks makes a replicated transaction that needs those locks wait for this
/// one while this one waits for it to be applied: only Galera's brute-force abort breaks
/// that, and while it does not, the node applies nothing and flow control stalls every node.
const NO_CAUSAL_WAIT: &str = "SET STATEMENT wsrep_sync_wait = 0 FOR";

/// Most names one locking statement lists; larger lock sets take several, in order.
const LOCK_CHUNK: usize = 256;

/// Most rows one multi-row insert writes (a power of two): a commit of up to this many
/// transfers writes its journal with at most 1 + log2 of it statements, usually 2 or 3.
const INSERT_CHUNK: usize = 256;

/// A MySQL or MariaDB database.
pub struct MysqlStore {
    opts: Opts,
    /// The open connection; `None` after a connection failure (reconnects on next use).
    conn: Option<Conn>,
    /// The URL without the password, for messages.
    shown: String,
    opening_balance: Amount,
    /// Whether the database is a Galera cluster node (seen on the last connection made).
    galera: bool,
    /// [`NO_CAUSAL_WAIT`] on a MariaDB Galera node, else empty (seen on the last connection).
    no_causal_wait: &'static str,
    /// Whether every session is `READ ONLY` ([`Access::ReadOnly`]).
    read_only: bool,
    /// Test seam: runs between a batch's `COMMIT` and the read-back of its outcomes on
    /// Galera ([`MysqlStore::commit_batch`]), where the tests do to the single server what a
    /// cluster can do there (commit nothing after all, lose the connection, stall the read).
    #[cfg(test)]
    after_commit: Option<Box<dyn FnMut() + Send>>,
    /// What the current [`Store::execute_batch`] has committed so far (the last one's, once
    /// it returned): its transactions (several after a split) and, within a split, the
    /// replies and transfers of the parts done, which [`Store::recover_from_panic`] hands
    /// back when a later part panics.
    done: DurablePrefix,
    /// Test seam: when `n` > 0, the `n`th transaction from now to reach its `COMMIT` panics
    /// right before it (after all its writes), as a bug in the ledger code would
    /// (`Store::recover_from_panic`).
    #[cfg(test)]
    pub(super) panic_before_commit: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// How a failed statement is handled.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Lock conflict: roll back and run the transaction again.
    Conflict,
    /// The connection is gone: reconnect; run again if `COMMIT` was not sent.
    Connection,
    /// Anything else: this request fails, the rest of the batch goes on.
    Other,
}

fn classify(e: &anyhow::Error) -> Failure {
    if e.downcast_ref::<OutcomeUnknown>().is_some() {
        return Failure::Other;
    }
    for cause in e.chain() {
        if cause.downcast_ref::<AbortedByCluster>().is_some() {
            return Failure::Conflict;
        }
        if let Some(e) = cause.downcast_ref::<mysql::Error>() {
            return match e {
                // A duplicate key that no caller handled: an outcome recorded meanwhile by
                // another transaction; the next attempt reads it.
                mysql::Error::MySqlError(s)
                    if RETRYABLE.contains(&s.code) || s.code == ER_DUP_ENTRY =>
                {
                    Failure::Conflict
                }
                mysql::Error::MySqlError(s) if s.code == ER_WSREP_NOT_READY => Failure::Connection,
                mysql::Error::IoError(_)
                | mysql::Error::DriverError(_)
                | mysql::Error::CodecError(_) => Failure::Connection,
                _ => Failure::Other,
            };
        }
    }
    Failure::Other
}

/// Which contention ended a run, if any: a deadlock (1213, also a Galera certification
/// failure, or [`AbortedByCluster`]) or a lock wait timeout (1205). Only these split a
/// batch ([`MysqlStore::commit_splitting`]); an [`OutcomeUnknown`] never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contention {
    /// 1213 or a certification failure: smaller write sets conflict less.
    Deadlock,
    /// 1205: a row held for the whole lock wait timeout.
    LockWait,
}

/// The contention `e` reports, found however deep in its context chain (as [`classify`]).
fn contention(e: &anyhow::Error) -> Option<Contention> {
    if e.downcast_ref::<OutcomeUnknown>().is_some() {
        return None;
    }
    for cause in e.chain() {
        if cause.downcast_ref::<AbortedByCluster>().is_some() {
            return Some(Contention::Deadlock);
        }
        if let Some(e) = cause.downcast_ref::<mysql::Error>() {
            return match e {
                mysql::Error::MySqlError(s) if s.code == 1213 => Some(Contention::Deadlock),
                mysql::Error::MySqlError(s) if s.code == 1205 => Some(Contention::LockWait),
                _ => None,
            };
        }
    }
    None
}

/// The check after a `COMMIT` that succeeded failed ([`MysqlStore::recorded_count`]): the
/// batch's outcome is unknown, whatever the cause ([`Failure::Other`]: never run again,
/// whole or in parts; clients retry the same ids).
#[derive(Debug)]
struct OutcomeUnknown;

impl std::fmt::Display for OutcomeUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("checking the outcomes a commit recorded")
    }
}

/// Galera rolled this session's transaction back under it (a replicated transaction took its
/// locks: a "brute force" abort) without any statement reporting it; see [`check_alive`].
#[derive(Debug)]
struct AbortedByCluster;

impl std::fmt::Display for AbortedByCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the transaction was rolled back by the cluster (brute-force abort)")
    }
}

impl std::error::Error for AbortedByCluster {}

/// On Galera, the first statements of every transaction: a fresh random token in the
/// session's temporary table `txsock_alive`, written by this transaction, so that
/// [`check_alive`] can tell that the transaction is still the one that began.
///
/// Why: when a replicated transaction needs locks that a local one holds, Galera rolls the
/// local one back. Normally its next statement then fails with a deadlock (1213) and the
/// batch runs again; but under load in the crash test, statements after such an abort were
/// seen to run without an error, outside the rolled-back transaction (a balance update found
/// the balance changed under a lock it held, and once a transfer was acknowledged that no
/// node had recorded). The session runs with `autocommit = 0`, so such statements fall into a
/// new transaction that nothing commits unless the token is still there.
fn liveness_token(c: &mut Conn) -> Result<u64> {
    let token = rand_core::RngCore::next_u64(&mut rand_core::OsRng) >> 1;
    c.query_drop("DELETE FROM txsock_alive")?;
    c.exec_drop("INSERT INTO txsock_alive (token) VALUES (?)", (token,))?;
    Ok(token)
}

/// The last statement before `COMMIT` on Galera: fails with [`AbortedByCluster`] (a conflict:
/// roll back, run again) unless this transaction's token is still visible, i.e. the
/// transaction that wrote it is the one about to commit.
fn check_alive(c: &mut Conn, token: u64, no_causal_wait: &str) -> Result<()> {
    // Only on Galera; a session table needs no causal wait (see `NO_CAUSAL_WAIT`).
    let found: Option<(u64,)> = first(
        c,
        &format!("{no_causal_wait} SELECT COUNT(*) FROM txsock_alive WHERE token = ?"),
        (token,),
    )?;
    if found != Some((1,)) {
        return Err(anyhow::Error::new(AbortedByCluster));
    }
    Ok(())
}

/// Whether a migration statement failed only because what it drops is gone already (an
/// earlier run of the same migration, or another server's on Galera, dropped it; MySQL has
/// no `DROP INDEX IF EXISTS`, MariaDB's own spelling). Only a statement that does nothing
/// but drop ([`drops_only`]) counts as done: a `DROP` with another clause would have that
/// clause skipped.
fn already_done(statement: &str, e: &mysql::Error) -> bool {
    drops_only(statement)
        && matches!(e, mysql::Error::MySqlError(e) if e.code == ER_CANT_DROP_FIELD_OR_KEY)
}

/// Whether a migration statement is one `DROP` and nothing else
/// (`ALTER TABLE t DROP INDEX i`): no second clause after a comma.
fn drops_only(statement: &str) -> bool {
    statement.contains(" DROP ") && !statement.contains(',')
}

fn is_duplicate(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(s) if s.code == ER_DUP_ENTRY)
}

/// The first row of a query, converted without panicking (the driver's own typed
/// `exec_first` panics on a row of an unexpected shape).
fn first<T: FromRow>(c: &mut Conn, sql: &str, params: impl Into<Params>) -> Result<Option<T>> {
    let row: Option<Row> = c.exec_first(sql, params)?;
    row.map(convert).transpose()
}

/// Every row of a query, converted without panicking.
fn all<T: FromRow>(c: &mut Conn, sql: &str, params: impl Into<Params>) -> Result<Vec<T>> {
    let rows: Vec<Row> = c.exec(sql, params)?;
    rows.into_iter().map(convert).collect()
}

fn convert<T: FromRow>(row: Row) -> Result<T> {
    mysql::from_row_opt(row).map_err(|e| anyhow!("unexpected row from the database: {e}"))
}

impl MysqlStore {
    /// Connects to `url` (`mysql://USER:PASS@HOST:PORT/DB`, or `mariadb://…`), creating or
    /// migrating the schema as needed.
    #[cfg(test)]
    pub fn open(url: &str, opening_balance: Amount) -> Result<MysqlStore> {
        MysqlStore::open_with(url, opening_balance, Access::Create)
    }

    /// Connects to `url` as `access` says: [`Access::Create`] creates or migrates the
    /// schema; [`Access::Existing`] requires a txsock schema, then migrates it;
    /// [`Access::ReadOnly`] requires one, never changes it, and runs every session
    /// `READ ONLY` (a user with only `SELECT` grants can use it).
    pub fn open_with(url: &str, opening_balance: Amount, access: Access) -> Result<MysqlStore> {
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        // The URL error would repeat the URL, password included: say what is wrong instead.
        let opts = Opts::from_url(&url).map_err(|_| {
            anyhow!("invalid database URL: expected mysql://USER:PASSWORD@HOST:PORT/DATABASE")
        })?;
        let Some(db) = opts.get_db_name().map(str::to_string) else {
            bail!("the database URL names no database: mysql://USER:PASSWORD@HOST:PORT/DATABASE");
        };
        let shown = format!(
            "mysql://{}@{}:{}/{db}",
            opts.get_user().unwrap_or(""),
            opts.get_ip_or_hostname(),
            opts.get_tcp_port()
        );
        let mut init = SESSION_INIT.to_vec();
        if access == Access::ReadOnly {
            init.push("SET SESSION TRANSACTION READ ONLY");
        }
        let opts: Opts = OptsBuilder::from_opts(opts)
            // Affected rows = rows matched, not rows changed: "no such user" stays
            // distinguishable from "already so".
            .additional_capabilities(CapabilityFlags::CLIENT_FOUND_ROWS)
            .tcp_connect_timeout(Some(Duration::from_secs(10)))
            .read_timeout(Some(Duration::from_secs(120)))
            .write_timeout(Some(Duration::from_secs(120)))
            .stmt_cache_size(128)
            .init(init)
            .into();
        let mut store = MysqlStore {
            opts,
            conn: None,
            shown,
            opening_balance,
            galera: false,
            no_causal_wait: "",
            read_only: access == Access::ReadOnly,
            #[cfg(test)]
            after_commit: None,
            done: DurablePrefix::default(),
            #[cfg(test)]
            panic_before_commit: Default::default(),
        };
        if access != Access::Create {
            store.require_schema(access == Access::ReadOnly)?;
        }
        if access != Access::ReadOnly {
            store
                .migrate()
                .with_context(|| format!("schema of {}", store.shown))?;
        }
        Ok(store)
    }

    /// Refuses a database that does not exist or holds no txsock schema (or, when
    /// `read_only`, a newer one than this code reads).
    fn require_schema(&mut self, read_only: bool) -> Result<()> {
        let shown = self.shown.clone();
        let c = self.connect()?;
        let version: Result<Option<(Option<i64>,)>> =
            first(c, "SELECT MAX(version) FROM schema_version", ());
        let version = match version {
            Ok(v) => v.and_then(|(v,)| v),
            Err(e) => {
                let code = e
                    .chain()
                    .find_map(|c| match c.downcast_ref::<mysql::Error>() {
                        Some(mysql::Error::MySqlError(s)) => Some(s.code),
                        _ => None,
                    });
                match code {
                    // ER_NO_SUCH_TABLE
                    Some(1146) => {
                        bail!("{shown} is not a txsock database (it has no schema_version table)")
                    }
                    _ => return Err(e.context(format!("reading {shown}"))),
                }
            }
        };
        match version {
            Some(v) if read_only && v > SCHEMA_VERSION => {
                bail!("{shown}: schema version {v} is newer than this txsock's ({SCHEMA_VERSION})")
            }
            Some(_) => Ok(()),
            None => bail!("{shown} is not a txsock database (its schema_version table is empty)"),
        }
    }

    fn connect(&mut self) -> Result<&mut Conn> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let mut conn = Conn::new(self.opts.clone())
                    .with_context(|| format!("connecting to {}", self.shown))?;
                let galera = causal_reads_if_galera(&mut conn, self.read_only)
                    .with_context(|| format!("setting up the session on {}", self.shown))?;
                if galera && !self.galera {
                    tracing::info!(
                        "{} is a Galera cluster node: causal reads (wsrep_sync_wait = 1)",
                        self.shown
                    );
                }
                self.galera = galera;
                self.no_causal_wait = no_causal_wait_prefix(galera, || is_mariadb(&mut conn))?;
                conn
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// Creates or migrates the schema to [`SCHEMA_VERSION`]. A named lock makes servers
    /// that start at once on the same database migrate it one after the other.
    /// (On Galera the lock is the node's only: see the module documentation.)
    fn migrate(&mut self) -> Result<()> {
        let c = self.connect()?;
        let got: Option<(Option<i64>,)> = first(
            c,
            "SELECT GET_LOCK(CONCAT('txsock.schema.', DATABASE()), 60)",
            (),
        )?;
        if got != Some((Some(1),)) {
            bail!("timed out waiting for another server to migrate the schema");
        }
        // A DDL statement waits for every open transaction on its table (MariaDB's default
        // wait is a day), and every later statement on that table queues behind it: an older
        // server still serving would stall. Waiting a minute, then failing the open, says so.
        let result = self
            .connect()
            .and_then(|c| Ok(c.query_drop("SET SESSION lock_wait_timeout = 60")?))
            .and_then(|()| self.migrate_locked());
        let released = self.connect().and_then(|c| {
            c.query_drop("SET SESSION lock_wait_timeout = DEFAULT")?;
            Ok(c.query_drop("DO RELEASE_LOCK(CONCAT('txsock.schema.', DATABASE()))")?)
        });
        result?;
        released
    }

    /// Runs the migrations the database lacks, each statement idempotent, and records each
    /// version reached in a transaction of its own (retried: on Galera, servers on other
    /// nodes may record the same version at the same time).
    fn migrate_locked(&mut self) -> Result<()> {
        self.connect()?.query_drop(VERSION_TABLE)?;
        loop {
            let stored: Option<(Option<i64>,)> = first(
                self.connect()?,
                "SELECT MAX(version) FROM schema_version",
                (),
            )?;
            let version = stored.and_then(|(v,)| v).unwrap_or(0);
            if version > SCHEMA_VERSION {
                bail!("schema version {version} is newer than this txsock's ({SCHEMA_VERSION})");
            }
            if version == SCHEMA_VERSION {
                return Ok(());
            }
            let c = self.connect()?;
            for statement in MIGRATIONS[version as usize] {
                match c.query_drop(statement) {
                    Err(e) if already_done(statement, &e) => {}
                    other => {
                        other.with_context(|| format!("migrating from schema version {version}"))?
                    }
                }
            }
            self.transaction(|c| {
                c.exec_drop("DELETE FROM schema_version WHERE version <= ?", (version,))?;
                c.exec_drop(
                    "INSERT INTO schema_version (version) VALUES (?)",
                    (version + 1,),
                )?;
                Ok(())
            })?;
        }
    }

    /// Runs `body` in a transaction and commits it, retrying as the module documentation
    /// says. `body` must be safe to run again from the start.
    fn transaction<T>(&mut self, body: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        self.transaction_tries(ALL_TRIES, body)
    }

    /// [`MysqlStore::transaction`] with at most the runs `tries` allows (at least one).
    fn transaction_tries<T>(
        &mut self,
        tries: Tries,
        mut body: impl FnMut(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 1;
        let (mut deadlocks, mut lock_waits) = (0, 0);
        loop {
            let mut commit_sent = false;
            // Connecting tells whether this is a Galera node.
            let connected = self.connect().map(|_| ());
            // A read-only session writes nothing that could be committed in part.
            let galera = self.galera && !self.read_only;
            let no_causal_wait = self.no_causal_wait;
            #[cfg(test)]
            let panic_before_commit = self.panic_before_commit.clone();
            let result = match connected.and_then(|()| self.connect()) {
                Ok(c) => (|| {
                    c.query_drop("START TRANSACTION")?;
                    let token = if galera {
                        Some(liveness_token(c)?)
                    } else {
                        None
                    };
                    let value = body(c)?;
                    if let Some(token) = token {
                        check_alive(c, token, no_causal_wait)?;
                    }
                    #[cfg(test)]
                    if panic_before_commit.fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    ) == Ok(1)
                    {
                        panic!("the test panics before COMMIT");
                    }
                    commit_sent = true;
                    c.query_drop("COMMIT")?;
                    Ok(value)
                })(),
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let failure = classify(&e);
            if failure == Failure::Connection {
                self.conn = None;
            } else if let Some(c) = &mut self.conn {
                if c.query_drop("ROLLBACK").is_err() {
                    self.conn = None;
                }
            }
            let again = match failure {
                Failure::Conflict => true,
                Failure::Connection => !commit_sent,
                Failure::Other => false,
            };
            match contention(&e) {
                Some(Contention::Deadlock) => deadlocks += 1,
                Some(Contention::LockWait) => lock_waits += 1,
                None => {}
            }
            if !again
                || attempt >= MAX_ATTEMPTS
                || deadlocks >= tries.deadlocks
                || lock_waits >= tries.lock_waits
            {
                return Err(e);
            }
            tracing::debug!("transaction attempt {attempt} rolled back, retrying: {e:#}");
            std::thread::sleep(backoff(attempt));
            attempt += 1;
        }
    }
    /// One run of a batch in one transaction (retried as [`MysqlStore::transaction`]
    /// says, at most as `tries` allows); `recorded` gets the `(sender, id)` of every outcome
    /// it recorded.
    fn batch_once(
        &mut self,
        batch: &[(LedgerRequest, Instant)],
        names: &[&str],
        committed: &mut Vec<Committed>,
        recorded: &mut Vec<IdKey>,
        tries: Tries,
    ) -> Result<Vec<LedgerReply>> {
        let first_committed = committed.len();
        let opening = self.opening_balance;
        let galera = self.galera;
        let no_causal_wait = self.no_causal_wait;
        self.transaction_tries(tries, |c| {
            committed.truncate(first_committed);
            recorded.clear();
            // First statement of the transaction: see the module documentation.
            let mut balances = Balances::new();
            lock_users(c, names, &mut balances)?;
            let mut replies = Vec::with_capacity(batch.len());
            let mut rest = batch;
            while let Some(((request, _), after)) = rest.split_first() {
                let run = rest
                    .iter()
                    .take_while(|(r, _)| matches!(r, LedgerRequest::Transfer { .. }))
                    .count();
                if run > 0 {
                    replies.extend(transfers(
                        c,
                        &rest[..run],
                        &mut balances,
                        committed,
                        galera,
                        no_causal_wait,
                        recorded,
                    )?);
                    rest = &rest[run..];
                    continue;
                }
                rest = after;
                let savepoint = writes(request);
                if savepoint {
                    // Replaces the previous request's savepoint of the same name.
                    c.query_drop("SAVEPOINT r")?;
                }
                let before = committed.len();
                match execute_one(opening, c, request) {
                    Ok(reply) => replies.push(reply),
                    Err(e) if classify(&e) != Failure::Other => return Err(e),
                    Err(e) => {
                        // One request's failure never undoes the others.
                        committed.truncate(before);
                        if savepoint {
                            c.query_drop("ROLLBACK TO SAVEPOINT r")?;
                        }
                        tracing::error!("ledger request failed: {e:#}");
                        replies.push(LedgerReply::Unavailable);
                    }
                }
            }
            Ok(replies)
        })
    }

    /// How many of `keys` (`(sender, id)`) have a recorded outcome, journal or refusal, read
    /// in a transaction of its own after a commit. On Galera a `COMMIT` that returned
    /// success was seen, under load, to have committed nothing (a transaction aborted by the
    /// cluster just before it, see [`liveness_token`]); this check keeps such a batch from
    /// being acknowledged.
    fn recorded_count(&mut self, keys: &[IdKey]) -> Result<usize> {
        let no_causal_wait = self.no_causal_wait;
        let c = self.connect()?;
        let mut found = 0;
        for chunk in keys.chunks(LOCK_CHUNK) {
            let pairs = vec!["(?, ?)"; chunk.len()].join(", ");
            let mut params: Vec<Value> = Vec::with_capacity(4 * chunk.len());
            for _ in 0..2 {
                for (from, id) in chunk {
                    params.push(from.as_str().into());
                    params.push(id.as_str().into());
                }
            }
            // This node's own state is enough (the commit was local): no causal wait where
            // the node lets a statement skip it (MariaDB: `NO_CAUSAL_WAIT`), as the wait can
            // time out while a node leaves the cluster; other Galera flavours wait.
            let count: Option<(i64,)> = first(
                c,
                &format!(
                    "{no_causal_wait}
                 SELECT (SELECT COUNT(*) FROM journal WHERE (from_user, transfer_id) IN ({pairs}))
                          + (SELECT COUNT(*) FROM refusals WHERE (from_user, transfer_id) IN ({pairs}))"
                ),
                Params::Positional(params),
            )?;
            found += count.map_or(0, |(n,)| n.max(0) as usize);
        }
        // Ends the read (the session may run with autocommit off).
        c.query_drop("COMMIT")?;
        Ok(found)
    }
}

/// A random pause before attempt `attempt + 1`: up to 2^attempt ms, at most 0.5 s, so that
/// transactions that collided do not collide again in step.
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling = (1u64 << attempt.min(9)).min(500);
    let jitter = u64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng)) % ceiling;
    Duration::from_millis(1 + jitter)
}

/// Whether `c` is connected to a Galera node (`wsrep_on` is `ON`; MySQL has no such
/// variable and MariaDB without a cluster says `OFF`); if so, turns on causal reads for the
/// session (see the module documentation) and, unless `read_only`, prepares the liveness
/// check of [`liveness_token`].
fn causal_reads_if_galera(c: &mut Conn, read_only: bool) -> Result<bool> {
    let row: Option<(String, String)> = first(c, "SHOW VARIABLES LIKE 'wsrep_on'", ())?;
    let galera = row.is_some_and(|(_, value)| value.eq_ignore_ascii_case("ON"));
    if galera {
        c.query_drop("SET SESSION wsrep_sync_wait = 1")?;
    }
    if galera && !read_only {
        // See `liveness_token`.
        c.query_drop("SET SESSION autocommit = 0")?;
        c.query_drop(
            "CREATE TEMPORARY TABLE IF NOT EXISTS txsock_alive (token BIGINT UNSIGNED NOT NULL)
             ENGINE=InnoDB",
        )?;
    }
    Ok(galera)
}

/// The prefix that lets a statement skip the causal wait: [`NO_CAUSAL_WAIT`] on a Galera node
/// that is MariaDB (`mariadb` is asked only on Galera: one query fewer elsewhere), else none.
/// Another Galera flavour keeps its causal reads: `SET STATEMENT` would be a syntax error
/// there and fail every batch.
fn no_causal_wait_prefix(
    galera: bool,
    mariadb: impl FnOnce() -> Result<bool>,
) -> Result<&'static str> {
    Ok(if galera && mariadb()? {
        NO_CAUSAL_WAIT
    } else {
        ""
    })
}

/// Whether `c` is connected to MariaDB (its version says so: `10.11.6-MariaDB-…`), whose
/// `SET STATEMENT` [`NO_CAUSAL_WAIT`] needs.
fn is_mariadb(c: &mut Conn) -> Result<bool> {
    let version: Option<(String,)> = first(c, "SELECT VERSION()", ())?;
    Ok(version.is_some_and(|(v,)| names_mariadb(&v)))
}

/// Whether a server version string is MariaDB's.
fn names_mariadb(version: &str) -> bool {
    version.to_ascii_lowercase().contains("mariadb")
}

/// The user rows a batch writes, sorted and without repeats: the lock set.
fn lock_set(batch: &[(LedgerRequest, Instant)]) -> Vec<&str> {
    let mut names = Vec::new();
    for (request, _) in batch {
        match request {
            LedgerRequest::Transfer { from, to, .. } => {
                names.push(from.as_str());
                names.push(to.as_str());
            }
            LedgerRequest::LoginFailed { user, .. } | LedgerRequest::LoginSucceeded { user } => {
                names.push(user.as_str())
            }
            _ => {}
        }
    }
    names.sort_unstable();
    names.dedup();
    names
}

/// Balances by user name, as they stand in the running transaction.
type Balances = HashMap<String, i64>;

/// Locks the rows of `names` (sorted) in that order, and adds the balances read under
/// those locks to `balances` (users that do not exist are absent).
fn lock_users(c: &mut Conn, names: &[&str], balances: &mut Balances) -> Result<()> {
    for chunk in names.chunks(LOCK_CHUNK) {
        let (values, marks) = padded(chunk);
        let rows: Vec<(String, i64)> = all(
            c,
            &format!(
                "SELECT name, balance FROM users FORCE INDEX (PRIMARY) WHERE name IN ({marks}) \
                 ORDER BY name FOR UPDATE"
            ),
            Params::Positional(values.into_iter().map(Value::from).collect()),
        )?;
        balances.extend(rows);
    }
    Ok(())
}

fn balance(c: &mut Conn, user: &Username, lock: bool) -> Result<Option<i64>> {
    let sql = if lock {
        "SELECT balance FROM users WHERE name = ? FOR UPDATE"
    } else {
        "SELECT balance FROM users WHERE name = ?"
    };
    Ok(first::<(i64,)>(c, sql, (user.as_str(),))?.map(|(b,)| b))
}

fn register(
    c: &mut Conn,
    user: &Username,
    v: &Verifier,
    opening: Amount,
    now_ms: u64,
) -> Result<Result<(), ErrorCode>> {
    if let Err(code) = credit(Amount(0), opening) {
        return Ok(Err(code));
    }
    let inserted = c.exec_drop(
        "INSERT INTO users (name, salt, iterations, stored_key, server_key, balance, created_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            user.as_str(),
            &v.salt[..],
            v.iterations,
            &v.stored_key[..],
            &v.server_key[..],
            sql_amount(opening),
            now_ms as i64,
        ),
    );
    match inserted {
        Err(e) if is_duplicate(&e) => return Ok(Err(ErrorCode::UserExists)),
        other => other?,
    }
    if opening.minor() > 0 {
        c.exec_drop(
            "INSERT INTO journal (kind, to_user, amount, balance_after, at_ms)
             VALUES ('deposit', ?, ?, ?, ?)",
            (
                user.as_str(),
                sql_amount(opening),
                sql_amount(opening),
                now_ms as i64,
            ),
        )?;
    }
    Ok(Ok(()))
}

fn credentials(c: &mut Conn, user: &Username) -> Result<LedgerReply> {
    let row: Option<CredentialsRow> = first(
        c,
        "SELECT salt, iterations, stored_key, server_key, failures, last_failure_ms,
                locked_until_ms, admin_locked
         FROM users WHERE name = ?",
        (user.as_str(),),
    )?;
    credentials_of(user, row)
}

fn lockout_update(
    c: &mut Conn,
    user: &Username,
    f: impl FnOnce(&mut LockoutState),
) -> Result<LockoutState> {
    let row: Option<(u32, i64, i64)> = first(
        c,
        "SELECT failures, last_failure_ms, locked_until_ms FROM users WHERE name = ? FOR UPDATE",
        (user.as_str(),),
    )?;
    // Unknown users have no state to update, but the store does the same work as for a
    // known one (one row written in the batch's transaction), or a failed login's answer
    // time would tell whether the name exists (PROTOCOL.md §16).
    let Some((failures, last, until)) = row else {
        c.exec_drop(
            "INSERT INTO meta (meta_key, meta_value) VALUES (?, ?)
             ON DUPLICATE KEY UPDATE meta_value = VALUES(meta_value)",
            (
                super::row::LOGIN_FAILURE_DECOY,
                super::row::login_failure_decoy_value(),
            ),
        )?;
        return Ok(LockoutState::default());
    };
    let mut state = LockoutState {
        failures,
        last_failure: Instant::from_millis(last as u64),
        locked_until: Instant::from_millis(until as u64),
    };
    f(&mut state);
    c.exec_drop(
        "UPDATE users SET failures = ?, last_failure_ms = ?, locked_until_ms = ? WHERE name = ?",
        (
            state.failures,
            state.last_failure.millis() as i64,
            state.locked_until.millis().min(FOREVER) as i64,
            user.as_str(),
        ),
    )?;
    Ok(state)
}

/// Lists of more than this many items are padded to a multiple of it, shorter ones to a
/// power of two ([`padded_len`]).
const PAD_STEP: usize = 32;

/// The length a list of `n` items (at most [`LOCK_CHUNK`]) is padded to, so that a
/// handful of prepared statements serve every batch size: the next power of two up to
/// [`PAD_STEP`], then the next multiple of it (13 lengths up to 256). A commit of 130
/// transfers looks up 160 pairs, not 256: every padded item is a parameter the server
/// binds and a range it builds and merges again.
fn padded_len(n: usize) -> usize {
    if n <= PAD_STEP {
        n.next_power_of_two()
    } else {
        n.div_ceil(PAD_STEP) * PAD_STEP
    }
}

/// Pads `values` to [`padded_len`] by repeating the last (harmless in an `IN` list);
/// returns the padded values and a `?, ?, …` list of that length.
fn padded<'a>(values: &[&'a str]) -> (Vec<&'a str>, String) {
    let mut padded = values.to_vec();
    if let Some(&last) = values.last() {
        padded.resize(padded_len(values.len()), last);
    }
    let marks = vec!["?"; padded.len()].join(", ");
    (padded, marks)
}

/// Writes each `(name, old, new)` balance of `changed` (names sorted, without repeats) as
/// one compare-and-set per chunk of [`LOCK_CHUNK`] users:
/// `UPDATE users SET balance = CASE name WHEN n THEN new … END
///  WHERE name IN (…) AND balance = CASE name WHEN n THEN old … END`,
/// padded to [`padded_len`] by repeating the last user (the first `WHEN` that matches
/// decides, so a repeat changes nothing). Fails unless every user's row matched, i.e. had
/// the balance read under this transaction's lock.
fn update_balances(c: &mut Conn, changed: &[(&str, i64, i64)]) -> Result<()> {
    for chunk in changed.chunks(LOCK_CHUNK) {
        let Some(&last) = chunk.last() else {
            continue;
        };
        let mut rows = chunk.to_vec();
        rows.resize(padded_len(chunk.len()), last);
        let cases = vec!["WHEN ? THEN ?"; rows.len()].join(" ");
        let marks = vec!["?"; rows.len()].join(", ");
        let mut params: Vec<Value> = Vec::with_capacity(5 * rows.len());
        params.extend(
            rows.iter()
                .flat_map(|&(name, _, new)| [Value::from(name), Value::from(new)]),
        );
        params.extend(rows.iter().map(|&(name, _, _)| Value::from(name)));
        params.extend(
            rows.iter()
                .flat_map(|&(name, old, _)| [Value::from(name), Value::from(old)]),
        );
        c.exec_drop(
            format!(
                "UPDATE users FORCE INDEX (PRIMARY) SET balance = CASE name {cases} END \
                 WHERE name IN ({marks}) AND balance = CASE name {cases} END"
            ),
            Params::Positional(params),
        )?;
        if c.affected_rows() != chunk.len() as u64 {
            bail!(
                "{} of {} balances changed under this transaction's lock",
                chunk.len() as u64 - c.affected_rows().min(chunk.len() as u64),
                chunk.len()
            );
        }
    }
    Ok(())
}

/// `(from_user, transfer_id)`.
type IdKey = (String, String);

/// A row of the outcome lookup: key, recipient, amount, balance, refusal code (if refused).
type OutcomeRow = (String, String, String, i64, i64, Option<String>);

/// An id's recorded outcome as this batch knows it: recipient, amount, balance, code.
type Recorded = (String, i64, i64, Option<String>);

/// Inserts `rows` (each `width` values) into `table (columns)` with a few multi-row
/// statements whose sizes are powers of two (at most [`INSERT_CHUNK`] rows each).
fn insert_rows(
    c: &mut Conn,
    table_columns: &str,
    prefix: &str,
    width: usize,
    rows: &[Vec<Value>],
) -> Result<()> {
    let one = format!("({prefix}{})", vec!["?"; width].join(", "));
    let mut rest = rows;
    while !rest.is_empty() {
        let n = if rest.len() >= INSERT_CHUNK {
            INSERT_CHUNK
        } else {
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (chunk, tail) = rest.split_at(n);
        let sql = format!(
            "INSERT INTO {table_columns} VALUES {}",
            vec![one.as_str(); n].join(", ")
        );
        let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
        c.exec_drop(sql, Params::Positional(params))?;
        rest = tail;
    }
    Ok(())
}

/// A run of consecutive transfer requests, executed together: one locking read of the
/// balances involved (rows this transaction has locked already), one read of the earlier
/// outcomes of their ids, the ledger contract applied in memory in request order, then one
/// compare-and-set `UPDATE` per changed balance and multi-row inserts into the journal and
/// the refusals. Any write failing fails the whole batch (a duplicate key is retried: the
/// next attempt reads the outcome that another transaction recorded first).
///
/// On Galera (`galera`), it also writes the marker row of every sender whose outcomes it
/// records (see the module documentation); `no_causal_wait` prefixes its outcome read. The `(sender, id)` of every outcome it records
/// (journal or refusal) is added to `new_outcomes`.
fn transfers(
    c: &mut Conn,
    run: &[(LedgerRequest, Instant)],
    balances: &mut Balances,
    committed: &mut Vec<Committed>,
    galera: bool,
    no_causal_wait: &str,
    new_outcomes: &mut Vec<IdKey>,
) -> Result<Vec<LedgerReply>> {
    let now_ms = crate::clock::unix_millis();
    let moves: Vec<(&Username, &TransferId, &Username, Amount)> = run
        .iter()
        .filter_map(|(request, _)| match request {
            LedgerRequest::Transfer {
                from,
                id,
                to,
                amount,
            } => Some((from, id, to, *amount)),
            _ => None,
        })
        .collect();
    let mut names: Vec<&str> = moves
        .iter()
        .flat_map(|(from, _, to, _)| [from.as_str(), to.as_str()])
        .collect();
    names.sort_unstable();
    names.dedup();
    // The batch's first statement locked and read every user its transfers name; a user
    // not read then (registered by an earlier request of this batch, or absent) is read now.
    let unread: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !balances.contains_key(*name))
        .collect();
    if !unread.is_empty() {
        lock_users(c, &unread, balances)?;
    }
    let before: Balances = names
        .iter()
        .filter_map(|name| Some((name.to_string(), *balances.get(*name)?)))
        .collect();

    // Earlier outcomes. A plain read is exact here: only a holder of the sender's row lock,
    // which this transaction has, records an outcome for the sender's ids (module docs). On
    // Galera it reads without a second causal wait (`NO_CAUSAL_WAIT`).
    // One `(from_user, transfer_id) IN (…)` list of exact pairs, which InnoDB reads as one
    // unique-key lookup each (separate `from_user IN` and `transfer_id IN` lists made it
    // look up every sender with every id: 32 × 128 ranges for a commit of 32 busy clients).
    let mut keys: Vec<(&str, &str)> = moves.iter().map(|m| (m.0.as_str(), m.1.as_str())).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut rows: Vec<OutcomeRow> = Vec::new();
    for chunk in keys.chunks(LOCK_CHUNK) {
        let Some(&last) = chunk.last() else {
            continue;
        };
        let mut pairs = chunk.to_vec();
        pairs.resize(padded_len(chunk.len()), last);
        let marks = vec!["(?, ?)"; pairs.len()].join(", ");
        let mut params: Vec<Value> = Vec::with_capacity(4 * pairs.len());
        for _ in 0..2 {
            params.extend(
                pairs
                    .iter()
                    .flat_map(|&(from, id)| [Value::from(from), Value::from(id)]),
            );
        }
        rows.extend(all::<OutcomeRow>(
            c,
            &format!(
                "{}
                 SELECT from_user, transfer_id, to_user, amount, balance_after, NULL FROM journal
                 WHERE (from_user, transfer_id) IN ({marks})
                 UNION ALL
                 SELECT from_user, transfer_id, to_user, amount, balance_at, code FROM refusals
                 WHERE (from_user, transfer_id) IN ({marks})",
                no_causal_wait
            ),
            Params::Positional(params),
        )?);
    }
    let mut outcomes: HashMap<IdKey, Recorded> = rows
        .into_iter()
        .map(|(from, id, to, amount, balance, code)| ((from, id), (to, amount, balance, code)))
        .collect();

    // The money rule, request by request, on the balances and outcomes as they stand after
    // the earlier requests of this run.
    let mut replies = Vec::with_capacity(moves.len());
    let mut journal: Vec<Vec<Value>> = Vec::new();
    let mut refusals: Vec<Vec<Value>> = Vec::new();
    for &(from, id, to, amount) in &moves {
        let key = (from.as_str().to_string(), id.as_str().to_string());
        let facts = TransferFacts {
            sender: balances.get(from.as_str()).copied().map(amount_of),
            recipient: balances.get(to.as_str()).copied().map(amount_of),
            earlier: outcomes.get(&key).map(|(to, amount, balance, code)| {
                recorded(to, *amount, *balance, code.as_deref())
            }),
        };
        let decision = decide_transfer(from, to, amount, facts);
        let amount_sql = sql_amount(amount);
        match decision {
            TransferDecision::Answer(_) => {}
            TransferDecision::Refuse(refusal) => {
                let code = refusal.result.err().map_or("internal", ErrorCode::name);
                let balance = sql_amount(refusal.balance);
                refusals.push(vec![
                    from.as_str().into(),
                    id.as_str().into(),
                    to.as_str().into(),
                    amount_sql.into(),
                    code.into(),
                    balance.into(),
                    (now_ms as i64).into(),
                ]);
                new_outcomes.push(key.clone());
                outcomes.insert(
                    key,
                    (to.to_string(), amount_sql, balance, Some(code.into())),
                );
            }
            TransferDecision::Commit {
                sender_after,
                recipient_after,
            } => {
                let after = sql_amount(sender_after);
                balances.insert(from.to_string(), after);
                balances.insert(to.to_string(), sql_amount(recipient_after));
                journal.push(vec![
                    from.as_str().into(),
                    id.as_str().into(),
                    to.as_str().into(),
                    amount_sql.into(),
                    after.into(),
                    (now_ms as i64).into(),
                ]);
                new_outcomes.push(key.clone());
                outcomes.insert(key, (to.to_string(), amount_sql, after, None));
                committed.push(Committed::transfer(
                    from,
                    id,
                    to,
                    amount,
                    sender_after,
                    now_ms,
                ));
            }
        }
        replies.push(LedgerReply::Transfer(decision.outcome()));
    }

    // Compare-and-set on rows this transaction holds locked: a mismatch would mean the lock
    // did not hold, and fails the batch rather than overwrite someone else's update.
    let mut changed: Vec<(&str, i64, i64)> = Vec::new();
    for name in &names {
        let (Some(&old), Some(&new)) = (before.get(*name), balances.get(*name)) else {
            continue;
        };
        if old == new {
            continue;
        }
        if new < 0 {
            bail!("balance of {name} would go negative");
        }
        changed.push((name, old, new));
    }
    update_balances(c, &changed)?;
    insert_rows(
        c,
        "journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)",
        "'transfer', ",
        6,
        &journal,
    )?;
    insert_rows(
        c,
        "refusals (from_user, transfer_id, to_user, amount, code, balance_at, at_ms)",
        "",
        7,
        &refusals,
    )?;
    if galera {
        let mut recorders: Vec<&str> = journal
            .iter()
            .chain(&refusals)
            .filter_map(|row| match row.first() {
                Some(Value::Bytes(name)) => std::str::from_utf8(name).ok(),
                _ => None,
            })
            .collect();
        recorders.sort_unstable();
        recorders.dedup();
        mark_senders(c, &recorders)?;
    }
    Ok(replies)
}

/// Writes a fresh random value into the [`SENDER_MARKER`] row of each of `senders`, so that
/// Galera certifies this transaction against every other that records an outcome for them.
/// (A write that changes nothing is skipped by InnoDB and certifies nothing: hence random.)
fn mark_senders(c: &mut Conn, senders: &[&str]) -> Result<()> {
    for chunk in senders.chunks(LOCK_CHUNK) {
        let (names, _) = padded(chunk);
        let mut params: Vec<Value> = Vec::with_capacity(2 * names.len());
        for name in &names {
            let mut fresh = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut fresh);
            params.push(format!("{SENDER_MARKER}{name}").into());
            params.push(fresh[..].into());
        }
        c.exec_drop(
            format!(
                "INSERT INTO meta (meta_key, meta_value) VALUES {}
                 ON DUPLICATE KEY UPDATE meta_value = VALUES(meta_value)",
                vec!["(?, ?)"; names.len()].join(", ")
            ),
            Params::Positional(params),
        )?;
    }
    Ok(())
}

type HistoryRow = (Option<String>, Option<String>, String, i64, i64);

/// A page of `user`'s history; with `deposits`, the deposits to `user` too (a deposit has
/// no `from_user`, so `to_user = ?` is what finds it).
fn history(c: &mut Conn, user: &Username, offset: u32, deposits: bool) -> Result<HistoryPage> {
    let rows: Vec<HistoryRow> = all(
        c,
        if deposits {
            "SELECT transfer_id, from_user, to_user, amount, at_ms FROM journal
             WHERE from_user = ? OR to_user = ?
             ORDER BY seq DESC LIMIT ? OFFSET ?"
        } else {
            "SELECT transfer_id, from_user, to_user, amount, at_ms FROM journal
             WHERE kind = 'transfer' AND (from_user = ? OR to_user = ?)
             ORDER BY seq DESC LIMIT ? OFFSET ?"
        },
        (
            user.as_str(),
            user.as_str(),
            HISTORY_PAGE as u64 + 1,
            u64::from(offset),
        ),
    )?;
    let mut page = HistoryPage::default();
    for (id, from, to, amount, at) in rows {
        if page.entries.len() == HISTORY_PAGE {
            page.more = true;
            break;
        }
        let entry = HistoryEntry {
            kind: super::row::entry_kind(id, from)?,
            to: name_of(to)?,
            amount: amount_of(amount),
            at: at as u64,
        };
        let _ = page.entries.push(entry);
    }
    Ok(page)
}

/// Whether a request writes (and so needs a savepoint to be undone on its own).
fn writes(request: &LedgerRequest) -> bool {
    matches!(
        request,
        LedgerRequest::Register { .. }
            | LedgerRequest::LoginFailed { .. }
            | LedgerRequest::LoginSucceeded { .. }
    )
}

fn execute_one(
    opening_balance: Amount,
    c: &mut Conn,
    request: &LedgerRequest,
) -> Result<LedgerReply> {
    let now_ms = crate::clock::unix_millis();
    Ok(match request {
        LedgerRequest::Register { user, verifier } => {
            LedgerReply::Registered(register(c, user, verifier, opening_balance, now_ms)?)
        }
        LedgerRequest::Credentials { user } => credentials(c, user)?,
        LedgerRequest::LoginFailed { user, now, policy } => {
            LedgerReply::Recorded(lockout_update(c, user, |s| {
                s.record_failure(*now, policy);
            })?)
        }
        LedgerRequest::LoginSucceeded { user } => {
            LedgerReply::Recorded(lockout_update(c, user, |s| s.record_success())?)
        }
        // Transfers go through `transfers`, a run at a time.
        LedgerRequest::Transfer { .. } => bail!("a transfer outside a run of transfers"),
        LedgerRequest::Balance { user } => LedgerReply::Balance(
            balance(c, user, false)?
                .map(amount_of)
                .ok_or(ErrorCode::NotLoggedIn),
        ),
        LedgerRequest::History {
            user,
            offset,
            deposits,
        } => LedgerReply::History(Ok(history(c, user, *offset, *deposits)?)),
        _ => LedgerReply::Unavailable,
    })
}

/// Parses an integer that MySQL returns as a decimal string (sums are DECIMAL).
fn big(v: Option<String>) -> Result<i128> {
    let text = v.unwrap_or_else(|| "0".into());
    text.parse()
        .map_err(|_| anyhow!("unexpected number {text:?} from the database"))
}

type CheckRow = (String, i64, Option<String>, Option<String>);

fn check_snapshot(c: &mut Conn) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let rows: Vec<CheckRow> = all(
        c,
        "SELECT u.name, u.balance, CAST(c.total AS CHAR), CAST(d.total AS CHAR)
         FROM users u
         LEFT JOIN (SELECT to_user, SUM(amount) AS total FROM journal GROUP BY to_user) c
                ON c.to_user = u.name
         LEFT JOIN (SELECT from_user, SUM(amount) AS total FROM journal
                    WHERE kind = 'transfer' GROUP BY from_user) d
                ON d.from_user = u.name
         ORDER BY u.name",
        (),
    )?;
    for (name, balance, credits, debits) in rows {
        report.accounts += 1;
        report.total += i128::from(balance);
        let expected = big(credits)? - big(debits)?;
        if i128::from(balance) != expected {
            report.problems.push(format!(
                "{name}: balance {} but the journal gives {}",
                amount_of(balance),
                fmt_i128(expected)
            ));
        }
        if balance < 0 {
            report.problems.push(format!("{name}: negative balance"));
        }
    }
    report.entries = first::<(u64,)>(c, "SELECT COUNT(*) FROM journal", ())?.map_or(0, |r| r.0);
    report.minted = big(first::<(Option<String>,)>(
        c,
        "SELECT CAST(COALESCE(SUM(amount), 0) AS CHAR) FROM journal WHERE kind = 'deposit'",
        (),
    )?
    .and_then(|r| r.0))?;
    let orphans = first::<(u64,)>(
        c,
        "SELECT COUNT(*) FROM journal j
         WHERE NOT EXISTS (SELECT 1 FROM users WHERE name = j.to_user)
            OR (j.from_user IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM users WHERE name = j.from_user))",
        (),
    )?
    .map_or(0, |r| r.0);
    if orphans > 0 {
        report.problems.push(format!(
            "{orphans} journal entries name users that do not exist"
        ));
    }
    if report.total != report.minted {
        report.problems.push(format!(
            "money not conserved: balances sum to {} but {} was deposited",
            fmt_i128(report.total),
            fmt_i128(report.minted)
        ));
    }
    Ok(report)
}

impl MysqlStore {
    /// Runs `batch` as one transaction (at most the runs `tries` allows) and,
    /// on Galera, checks that its outcomes are in the database before anything is
    /// acknowledged.
    fn commit_batch(
        &mut self,
        batch: &[(LedgerRequest, Instant)],
        committed: &mut Vec<Committed>,
        tries: Tries,
    ) -> Result<Vec<LedgerReply>> {
        let first_committed = committed.len();
        let names = lock_set(batch);
        let mut recorded = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let result = self.batch_once(batch, &names, committed, &mut recorded, tries);
            if result.is_err() {
                committed.truncate(first_committed);
            }
            // On Galera, nothing is acknowledged before the outcomes this batch recorded
            // are seen in the database after its COMMIT (see `recorded_count`).
            if result.is_err() || !self.galera || recorded.is_empty() {
                return result;
            }
            #[cfg(test)]
            if let Some(after_commit) = &mut self.after_commit {
                after_commit();
            }
            // A read only: tried again after a lock or causal-read timeout or a lost
            // connection (while a node leaves the cluster, say), a few times.
            let mut found = self.recorded_count(&recorded);
            for retry in 1..4 {
                match &found {
                    Err(e) if classify(e) != Failure::Other => {
                        if classify(e) == Failure::Connection {
                            self.conn = None;
                        }
                        std::thread::sleep(backoff(retry));
                        found = self.recorded_count(&recorded);
                    }
                    _ => break,
                }
            }
            match found {
                Ok(n) if n == recorded.len() => return result,
                Ok(n) => tracing::warn!(
                    "after a COMMIT that succeeded, only {n} of the {} outcomes it recorded are \
                     in the database: running the batch again (attempt {attempt})",
                    recorded.len()
                ),
                // The outcome is unknown: clients retry the same ids. Marked so that no
                // caller takes it for a conflict of an uncommitted batch and runs it again.
                Err(e) => {
                    committed.truncate(first_committed);
                    return Err(e.context(OutcomeUnknown));
                }
            }
            committed.truncate(first_committed);
        }
        bail!("the outcomes of a committed batch kept missing from the database")
    }

    /// Commits `batch`; a batch of several requests that keeps deadlocking with other
    /// transactions ([`SPLIT_AFTER`] runs) or waits out a lock wait timeout is split in two
    /// halves, committed one after the other (each split again the same way), so that one
    /// contended account delays its own part of the batch instead of failing all of it
    /// (module documentation: which failures split, and why). Request order is kept. A part
    /// that still fails (a single request after [`MAX_ATTEMPTS`] runs, or one lock wait) is
    /// answered
    /// [`LedgerReply::Unavailable`] (`internal`: its clients retry the same ids) while the
    /// parts committed stay committed; only a failure of the undivided batch is an error.
    /// Each part done (committed, or failed and answered so) is added to `done` in order, so
    /// that a panic in a later part leaves the earlier parts' replies and transfers to the
    /// group commit ([`Store::recover_from_panic`]) instead of answering them `Unavailable`.
    fn commit_splitting(
        &mut self,
        batch: &[(LedgerRequest, Instant)],
        committed: &mut Vec<Committed>,
        whole: bool,
    ) -> Result<Vec<LedgerReply>> {
        let tries = if batch.len() > 1 {
            Tries {
                deadlocks: SPLIT_AFTER,
                lock_waits: 1,
            }
        } else if whole {
            ALL_TRIES
        } else {
            Tries {
                deadlocks: MAX_ATTEMPTS,
                lock_waits: 1,
            }
        };
        let first_committed = committed.len();
        let e = match self.commit_batch(batch, committed, tries) {
            Ok(replies) => {
                self.done.transactions += 1;
                // A part is durable now, whatever happens to the parts after it. (A batch
                // committed whole has nothing after it: no copy of its replies.)
                if !whole {
                    self.done.replies.extend_from_slice(&replies);
                    self.done.committed = committed.len();
                }
                return Ok(replies);
            }
            Err(e) => e,
        };
        committed.truncate(first_committed);
        if batch.len() > 1 && contention(&e).is_some() {
            tracing::debug!(
                "a batch of {} requests kept conflicting, committing it in two parts: {e:#}",
                batch.len()
            );
            let (front, back) = batch.split_at(batch.len() / 2);
            let mut replies = self.commit_splitting(front, committed, false)?;
            replies.extend(self.commit_splitting(back, committed, false)?);
            return Ok(replies);
        }
        if whole {
            return Err(e);
        }
        tracing::error!(
            "{} requests of a split commit failed (answered internal): {e:#}",
            batch.len()
        );
        // Final too: a panic in a later part leaves this one's answer as it is.
        let replies = vec![LedgerReply::Unavailable; batch.len()];
        self.done.replies.extend_from_slice(&replies);
        Ok(replies)
    }
}

impl Store for MysqlStore {
    fn recover_from_panic(&mut self) -> DurablePrefix {
        // The panicked batch may have left its transaction open on this connection: closing
        // it rolls the transaction back (the server drops a disconnected one's changes).
        self.conn = None;
        // The parts of a split that committed before the panic stay committed.
        std::mem::take(&mut self.done)
    }

    fn execute_batch(
        &mut self,
        batch: &[(LedgerRequest, Instant)],
        committed: &mut Vec<Committed>,
    ) -> Result<Vec<LedgerReply>> {
        self.done = DurablePrefix {
            committed: committed.len(),
            ..DurablePrefix::default()
        };
        self.commit_splitting(batch, committed, true)
    }

    fn last_batch_transactions(&self) -> u64 {
        self.done.transactions
    }

    fn server_secret(&mut self) -> Result<[u8; 32]> {
        let mut fresh = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut fresh);
        // Insert if absent, then read: every server on this database gets the same secret.
        let stored: Vec<u8> = self.transaction(|c| {
            c.exec_drop(
                "INSERT INTO meta (meta_key, meta_value) VALUES ('server_secret', ?)
                 ON DUPLICATE KEY UPDATE meta_key = meta_key",
                (&fresh[..],),
            )?;
            first::<(Vec<u8>,)>(
                c,
                "SELECT meta_value FROM meta WHERE meta_key = 'server_secret'",
                (),
            )?
            .map(|r| r.0)
            .ok_or_else(|| anyhow!("server secret missing right after its insert"))
        })?;
        stored
            .try_into()
            .map_err(|_| anyhow!("corrupt server secret"))
    }

    fn add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        now_ms: u64,
    ) -> Result<()> {
        match self.transaction(|c| register(c, user, verifier, balance, now_ms))? {
            Ok(()) => {}
            Err(ErrorCode::UserExists) => {
                return Err(super::Refused(format!("user {user} already exists")).into())
            }
            Err(_) => {
                return Err(super::Refused(format!(
                    "the balance of {user} would pass the ceiling of {MAX_BALANCE}"
                ))
                .into())
            }
        }
        Ok(())
    }

    fn list_users(&mut self) -> Result<Vec<UserSummary>> {
        let rows: Vec<(String, i64, bool, i64, u32)> = all(
            self.connect()?,
            "SELECT name, balance, admin_locked, locked_until_ms, failures FROM users ORDER BY name",
            (),
        )?;
        Ok(rows
            .into_iter()
            .map(
                |(name, balance, admin_locked, until, failures)| UserSummary {
                    name,
                    balance: amount_of(balance),
                    admin_locked,
                    locked_until_ms: until as u64,
                    failures,
                },
            )
            .collect())
    }

    fn set_admin_lock(&mut self, user: &Username, locked: bool) -> Result<()> {
        let matched = self.transaction(|c| {
            if locked {
                c.exec_drop(
                    "UPDATE users SET admin_locked = 1 WHERE name = ?",
                    (user.as_str(),),
                )?;
            } else {
                c.exec_drop(
                    "UPDATE users SET admin_locked = 0, failures = 0, locked_until_ms = 0
                     WHERE name = ?",
                    (user.as_str(),),
                )?;
            }
            Ok(c.affected_rows())
        })?;
        if matched == 0 {
            return Err(super::Refused(format!("no user named {user}")).into());
        }
        Ok(())
    }

    fn deposit(&mut self, user: &Username, amount: Amount, now_ms: u64) -> Result<Amount> {
        let new = self.transaction(|c| {
            let Some(old) = balance(c, user, true)? else {
                return Err(super::Refused(format!("no user named {user}")).into());
            };
            let Ok(new) = credit(amount_of(old), amount).map(sql_amount) else {
                return Err(super::Refused(format!(
                    "the balance of {user} would pass the ceiling of {MAX_BALANCE}"
                ))
                .into());
            };
            c.exec_drop(
                "UPDATE users SET balance = ? WHERE name = ?",
                (new, user.as_str()),
            )?;
            c.exec_drop(
                "INSERT INTO journal (kind, to_user, amount, balance_after, at_ms)
                 VALUES ('deposit', ?, ?, ?, ?)",
                (user.as_str(), sql_amount(amount), new, now_ms as i64),
            )?;
            Ok(new)
        })?;
        Ok(amount_of(new))
    }

    fn check(&mut self) -> Result<CheckReport> {
        let c = self.connect()?;
        // One consistent snapshot: a correct answer even while servers keep committing.
        c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")?;
        let report = check_snapshot(c);
        let ended = c.query_drop("COMMIT");
        let report = report?;
        ended?;
        Ok(report)
    }

    fn integrity(&mut self) -> Result<Vec<String>> {
        let shown = self.shown.clone();
        let rows: Vec<(String, String, String, String)> = all(
            self.connect()?,
            "CHECK TABLE schema_version, meta, users, journal, refusals",
            (),
        )?;
        Ok(rows
            .into_iter()
            .filter(|(_, _, kind, text)| {
                let kind = kind.to_ascii_lowercase();
                kind == "error" || kind == "warning" || (kind == "status" && text != "OK")
            })
            .map(|(table, _, kind, text)| format!("{shown}: {table}: {kind}: {text}"))
            .collect())
    }
}

#[cfg(test)]
#[path = "mysql_tests.rs"]
mod unit_tests;
