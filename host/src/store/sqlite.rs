//! The embedded SQLite store: WAL journal, `synchronous = FULL`, one writer thread.

use super::row::{amount_of, credentials_of, fmt_i128, name_of, recorded, sql_amount, FOREVER};
use super::{Access, CheckReport, Committed, Store, UserSummary};
use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use txsock_core::auth::Verifier;
use txsock_core::ledger::{
    credit, decide_transfer, HistoryEntry, HistoryPage, LedgerReply, LedgerRequest,
    TransferDecision, TransferFacts, TransferOutcome, MAX_BALANCE,
};
use txsock_core::lockout::LockoutState;
use txsock_core::message::HISTORY_PAGE;
use txsock_core::{Amount, ErrorCode, Instant, TransferId, Username};

/// Schema migrations: `MIGRATIONS[i]` takes a database from version `i` to `i + 1`
/// (version 0 is an empty database). To change the schema, append a migration.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4];

/// Schema version this code writes; older databases are migrated on open.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The version table: one row, the schema version of the database.
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);";

/// Version 1: users, the journal and the server secret.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    balance INTEGER NOT NULL CHECK (balance >= 0),
    failures INTEGER NOT NULL DEFAULT 0,
    last_failure_ms INTEGER NOT NULL DEFAULT 0,
    locked_until_ms INTEGER NOT NULL DEFAULT 0,
    admin_locked INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
-- kind: 'transfer' (from_user -> to_user) or 'deposit' (money created for to_user).
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('transfer', 'deposit')),
    from_user TEXT,
    transfer_id TEXT,
    to_user TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    balance_after INTEGER,
    at_ms INTEGER NOT NULL,
    UNIQUE (from_user, transfer_id)
);
CREATE INDEX IF NOT EXISTS journal_to ON journal (to_user, seq);
CREATE INDEX IF NOT EXISTS journal_from ON journal (from_user, seq);
";

/// Version 2: final refusals of transfer ids.
const SCHEMA_V2: &str = "
-- Final refusals (insufficient funds, unknown recipient, ...), so that a retried transfer id
-- gets its original answer. Nothing moved for these; they are not part of the journal.
CREATE TABLE IF NOT EXISTS refusals (
    from_user TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    to_user TEXT NOT NULL,
    amount INTEGER NOT NULL,
    code TEXT NOT NULL,
    balance_at INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (from_user, transfer_id)
);
";

/// Version 3: no `journal_from` index. Look-ups by sender use the unique index on
/// (from_user, transfer_id), which the history query's OR plan takes just as well; the
/// dropped index cost every transfer one more B-tree insert and a page write per commit.
const SCHEMA_V3: &str = "DROP INDEX IF EXISTS journal_from;";

/// Version 4: the journal without `AUTOINCREMENT`, rebuilt with every row and its `seq`
/// (checked first: [`journal_ids_intact`]). `seq` stays the row id, so ids stay unique and
/// a new row still takes the largest id + 1. What `AUTOINCREMENT` added was a
/// `sqlite_sequence` row that every commit with a journal entry rewrote, one more page
/// written and synced per commit, so that the ids of deleted rows would never be handed out
/// again. The journal deletes nothing, and now two triggers keep it so ([`JOURNAL_GUARDS`]:
/// no row deleted, no id changed): the largest id only grows and no id is handed out twice.
const SCHEMA_V4: &str = "
CREATE TABLE journal_v4 (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('transfer', 'deposit')),
    from_user TEXT,
    transfer_id TEXT,
    to_user TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    balance_after INTEGER,
    at_ms INTEGER NOT NULL,
    UNIQUE (from_user, transfer_id)
);
INSERT INTO journal_v4 (seq, kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
    SELECT seq, kind, from_user, transfer_id, to_user, amount, balance_after, at_ms
    FROM journal ORDER BY seq;
DROP TABLE journal;
ALTER TABLE journal_v4 RENAME TO journal;
CREATE INDEX journal_to ON journal (to_user, seq);
";

/// The triggers that keep the journal's ids from being handed out twice (see
/// [`SCHEMA_V4`]), by name; `ledger check` reports a missing one.
const JOURNAL_GUARDS: [&str; 2] = ["journal_keeps_rows", "journal_ids_never_change"];

/// Creates the [`JOURNAL_GUARDS`] where missing; run by every migration to the current
/// schema and every writable open, so a dropped guard comes back with the next server.
///
/// - No row is deleted.
/// - No update changes a row's id, however it is spelt: SQLite's `UPDATE OF seq` would not
///   fire for `SET rowid = …` (nor `oid`, `_rowid_`), so the trigger takes every update of
///   the journal (txsock never updates a journal row) and compares the ids. Nor may an
///   update give a row the (sender, transfer id) of another: `UPDATE OR REPLACE` would
///   delete that other row without firing the delete guard (SQLite fires delete triggers
///   for a `REPLACE` only with `recursive_triggers` on, which an editor's connection does
///   not have).
/// - `journal_keeps_ids`, the update guard up to this version (`UPDATE OF seq` only), is
///   replaced.
///
/// `INSERT OR REPLACE` (`REPLACE INTO`) of a row whose id or (sender, transfer id) is taken
/// replaces that row without a trigger, for the same reason. Guarding it would take a
/// trigger on every insert, which is the ledger's hot path (any `BEFORE INSERT` trigger,
/// even one that never fires, costs each insert a trigger program: about 2.5 µs a row
/// measured); `ledger check` finds what such an edit does to the money (every balance
/// against its journal entries). docs/TESTING.md has the measurement.
const JOURNAL_GUARDS_SQL: &str = "
DROP TRIGGER IF EXISTS journal_keeps_ids;
CREATE TRIGGER IF NOT EXISTS journal_keeps_rows BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal keeps every row: ids are never handed out twice'); END;
CREATE TRIGGER IF NOT EXISTS journal_ids_never_change BEFORE UPDATE ON journal
BEGIN
    SELECT RAISE(ABORT, 'journal ids never change: they are never handed out twice')
        WHERE NEW.seq IS NOT OLD.seq;
    SELECT RAISE(ABORT, 'the journal keeps every row: no update may take another row''s transfer id')
        WHERE EXISTS (SELECT 1 FROM journal WHERE from_user = NEW.from_user
                      AND transfer_id = NEW.transfer_id AND seq <> OLD.seq);
END;
";

/// Before [`SCHEMA_V4`] drops `AUTOINCREMENT`: refuses a journal whose `sqlite_sequence`
/// says ids above its last row were handed out (rows deleted from its end, which txsock
/// never does), since without `AUTOINCREMENT` those ids would be handed out again.
///
/// A file without `sqlite_sequence` (made by hand, its journal created without
/// `AUTOINCREMENT`: SQLite creates the table with the first such table and never lets it
/// be dropped) records no ids beyond its rows: its ids were already handed out as the
/// largest + 1, as they are from version 4 on, and it is migrated as it is.
fn journal_ids_intact(tx: &Connection) -> Result<()> {
    let sequence_kept: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence')",
        [],
        |r| r.get(0),
    )?;
    if !sequence_kept {
        return Ok(());
    }
    let (last, issued): (i64, i64) = tx.query_row(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM journal),
                (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'journal')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if issued > last {
        bail!(
            "the journal's ids went up to {issued} but its last row is {last}: rows were \
             deleted from its end outside txsock, and this version would hand their ids out \
             again. Restore the journal from a backup, or open the file with the txsock that \
             wrote it"
        );
    }
    Ok(())
}

/// How many pages the WAL holds before the commit that passes the mark copies them into the
/// database file (SQLite's `wal_autocheckpoint`; its default is 1,000).
///
/// A checkpoint writes each page changed since the last one once, however many commits
/// changed it, and the ledger's hot pages (the balances' leaves, each sender's and each
/// recipient's leaf of the journal's indexes) change in nearly every commit: at 4,000 pages
/// a checkpoint comes a quarter as often and copies each hot page a quarter as often (bytes
/// written per transfer −9 % with 32 clients, docs/BENCHMARKS.md "Issue 14, the SQLite commit
/// cycle"). The WAL file grows to about this many frames (16.5 MB at 4 KiB pages) and no
/// further: the checkpoint runs in the writer's own commit, with no other writer, so it
/// catches up with the whole WAL, and the next commit writes the WAL from its start again
/// (unless a reader still reads an older snapshot, as with any mark).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4_000;

/// A SQLite database file.
pub struct SqliteStore {
    conn: Connection,
    opening_balance: Amount,
    /// The file, for messages.
    path: std::path::PathBuf,
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the database at `path`.
    #[cfg(test)]
    pub fn open(path: &Path, opening_balance: Amount) -> Result<SqliteStore> {
        SqliteStore::open_with(path, opening_balance, Access::Create)
    }

    /// Opens the database at `path` as `access` says. Only [`Access::Create`] creates the
    /// file (and its directory); [`Access::ReadOnly`] opens with `SQLITE_OPEN_READONLY`
    /// and writes nothing, not even a schema migration.
    pub fn open_with(path: &Path, opening_balance: Amount, access: Access) -> Result<SqliteStore> {
        if access == Access::Create {
            if let Some(dir) = path.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
            }
        } else {
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => bail!("{} is not a file, so not a txsock database", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "no txsock database at {} (nothing was created; check --data-dir or --db)",
                    path.display()
                ),
                Err(e) => bail!("cannot open {}: {e}", path.display()),
            }
        }
        if access == Access::ReadOnly {
            return SqliteStore::open_read_only(path, opening_balance);
        }
        let flags = if access == Access::Create {
            OpenFlags::default()
        } else {
            OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE
        };
        let mut conn = Connection::open_with_flags(path, flags)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        if access == Access::Existing && schema_version(&conn, path)?.is_none() {
            bail!(
                "{} is not a txsock database (it has no schema_version table)",
                path.display()
            );
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: every commit's WAL frames are fsynced before COMMIT returns, so an
        // acknowledged transfer survives a crash or power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn).with_context(|| format!("schema of {}", path.display()))?;
        // The row an unknown user's failed login rewrites (see `lockout_update`), created
        // here so that the first such failure is an update like every later one.
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, x'')",
            [super::row::LOGIN_FAILURE_DECOY],
        )?;
        // Room for every statement of the ledger's hot path (see `execute`), with the
        // multi-row writes' chunk sizes (see `write_rows`).
        conn.set_prepared_statement_cache_capacity(64);
        Ok(SqliteStore {
            conn,
            opening_balance,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing file read-only. A WAL database needs its `-shm` index: a reader
    /// that may not create it (a read-only auditor, after the server removed it on a clean
    /// stop) opens the file as `immutable` instead, which is safe because without a `-wal`
    /// file no server has the database open for writing.
    fn open_read_only(path: &Path, opening_balance: Amount) -> Result<SqliteStore> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = |path: &Path, flags| -> Result<Connection> {
            let conn = Connection::open_with_flags(path, flags)
                .with_context(|| format!("opening {} read-only", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            Ok(conn)
        };
        let mut conn = open(path, flags)?;
        let probe = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        });
        let cannot_open = matches!(&probe, Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(e.code, rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly));
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        if cannot_open && !Path::new(&wal).exists() {
            drop(conn);
            conn = open(
                Path::new(&format!("file:{}?immutable=1", uri_path(path))),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )?;
        }
        Ok(SqliteStore {
            conn,
            opening_balance,
            path: path.to_path_buf(),
        })
    }

    /// Refuses a file that holds no txsock schema (an empty file, another program's
    /// database) or a newer one.
    fn require_schema(&self) -> Result<()> {
        match schema_version(&self.conn, &self.path)? {
            None => bail!(
                "{} is not a txsock database (it has no schema_version table)",
                self.path.display()
            ),
            Some(v) if v > SCHEMA_VERSION => bail!(
                "{}: schema version {v} is newer than this txsock's ({SCHEMA_VERSION})",
                self.path.display()
            ),
            Some(_) => Ok(()),
        }
    }
}

/// The schema version recorded in the database, `None` if it has no version table.
fn schema_version(conn: &Connection, path: &Path) -> Result<Option<i64>> {
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
            [],
            |r| r.get(0),
        )
        .with_context(|| format!("reading {}", path.display()))?;
    if !has_table {
        return Ok(None);
    }
    Ok(Some(
        conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .with_context(|| format!("reading {}", path.display()))?,
    ))
}

/// `path` for an SQLite `file:` URI: `%`, `?` and `#` percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.display().to_string().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Creates or migrates the schema to [`SCHEMA_VERSION`], in one immediate transaction so
/// that servers opening the same file at once migrate it once.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(VERSION_TABLE)?;
    let stored: Option<i64> = tx
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?;
    let version = stored.unwrap_or(0);
    if version > SCHEMA_VERSION {
        bail!("schema version {version} is newer than this txsock's ({SCHEMA_VERSION})");
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        if from == 3 {
            journal_ids_intact(&tx).context("migrating from schema version 3")?;
        }
        tx.execute_batch(migration)
            .with_context(|| format!("migrating from schema version {from}"))?;
    }
    tx.execute_batch(JOURNAL_GUARDS_SQL)?;
    if stored.is_none() {
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )?;
    } else if version < SCHEMA_VERSION {
        tx.execute("UPDATE schema_version SET version = ?1", [SCHEMA_VERSION])?;
    }
    tx.commit()?;
    Ok(())
}

/// Runs a statement of the ledger's hot path from the connection's statement cache: SQLite
/// parses each statement once per connection instead of once per request.
fn execute(tx: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
    Ok(tx.prepare_cached(sql)?.execute(params)?)
}

/// The first row of a cached query, if any (see [`execute`]).
fn query_row<T>(
    tx: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    Ok(tx.prepare_cached(sql)?.query_row(params, row).optional()?)
}

fn balance(tx: &Connection, user: &Username) -> Result<Option<i64>> {
    query_row(
        tx,
        "SELECT balance FROM users WHERE name = ?1",
        [user.as_str()],
        |r| r.get(0),
    )
}

fn register(
    tx: &Connection,
    user: &Username,
    v: &Verifier,
    opening: Amount,
    now_ms: u64,
) -> Result<Result<(), ErrorCode>> {
    if balance(tx, user)?.is_some() {
        return Ok(Err(ErrorCode::UserExists));
    }
    if let Err(code) = credit(Amount(0), opening) {
        return Ok(Err(code));
    }
    execute(
        tx,
        "INSERT INTO users (name, salt, iterations, stored_key, server_key, balance, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            user.as_str(),
            &v.salt[..],
            v.iterations,
            &v.stored_key[..],
            &v.server_key[..],
            sql_amount(opening),
            now_ms as i64
        ],
    )?;
    if opening.minor() > 0 {
        execute(
            tx,
            "INSERT INTO journal (kind, to_user, amount, balance_after, at_ms) VALUES ('deposit', ?1, ?2, ?2, ?3)",
            params![user.as_str(), sql_amount(opening), now_ms as i64],
        )?;
    }
    Ok(Ok(()))
}

fn credentials(tx: &Connection, user: &Username) -> Result<LedgerReply> {
    let row = query_row(
        tx,
        "SELECT salt, iterations, stored_key, server_key, failures, last_failure_ms,
                locked_until_ms, admin_locked
         FROM users WHERE name = ?1",
        [user.as_str()],
        |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, bool>(7)?,
            ))
        },
    )?;
    credentials_of(user, row)
}

fn lockout_update(
    tx: &Connection,
    user: &Username,
    f: impl FnOnce(&mut LockoutState),
) -> Result<LockoutState> {
    let row = query_row(
        tx,
        "SELECT failures, last_failure_ms, locked_until_ms FROM users WHERE name = ?1",
        [user.as_str()],
        |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )?;
    // Unknown users have no state to update, but the store does the same work as for a
    // known one (one row written, so the batch's commit syncs as it would), or a failed
    // login's answer time would tell whether the name exists (PROTOCOL.md §16).
    let Some((failures, last, until)) = row else {
        execute(
            tx,
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![
                super::row::LOGIN_FAILURE_DECOY,
                super::row::login_failure_decoy_value()
            ],
        )?;
        return Ok(LockoutState::default());
    };
    let mut state = LockoutState {
        failures,
        last_failure: Instant::from_millis(last as u64),
        locked_until: Instant::from_millis(until as u64),
    };
    f(&mut state);
    execute(
        tx,
        "UPDATE users SET failures = ?2, last_failure_ms = ?3, locked_until_ms = ?4 WHERE name = ?1",
        params![user.as_str(), state.failures, state.last_failure.millis() as i64, state.locked_until.millis().min(FOREVER) as i64],
    )?;
    Ok(state)
}

/// A transfer id's final outcome as stored: recipient, amount, the sender's balance with it,
/// and the refusal code (`None` if committed).
type StoredOutcome = (String, i64, i64, Option<String>);

/// The final outcome recorded for `from`'s transfer `id`, if it has one: committed (in the
/// journal, with the balance after it) or refused (in `refusals`, with its code and the
/// balance then): recipient, amount, balance, code (`None` if committed).
fn earlier_outcome(tx: &Connection, from: &str, id: &str) -> Result<Option<StoredOutcome>> {
    query_row(
        tx,
        "SELECT to_user, amount, balance_after, NULL FROM journal
             WHERE from_user = ?1 AND transfer_id = ?2
         UNION ALL
         SELECT to_user, amount, balance_at, code FROM refusals
             WHERE from_user = ?1 AND transfer_id = ?2",
        [from, id],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        },
    )
}

/// One transfer: the rows the money rule needs are read (both balances, the id's recorded
/// outcome), [`decide_transfer`] decides, and exactly the writes it names are made. Every
/// read and write is inside the batch's `IMMEDIATE` transaction, which holds SQLite's one
/// write lock, so nothing changes between the reads and the writes.
fn transfer(
    tx: &Connection,
    from: &Username,
    id: &TransferId,
    to: &Username,
    amount: Amount,
    now_ms: u64,
    committed: &mut Vec<Committed>,
) -> Result<TransferOutcome> {
    let sender = balance(tx, from)?;
    let recipient = if from == to { sender } else { balance(tx, to)? };
    let earlier = earlier_outcome(tx, from.as_str(), id.as_str())?;
    let facts = TransferFacts {
        sender: sender.map(amount_of),
        recipient: recipient.map(amount_of),
        earlier: earlier
            .as_ref()
            .map(|(to, amount, balance, code)| recorded(to, *amount, *balance, code.as_deref())),
    };
    let decision = decide(from, id, to, amount, facts, now_ms, committed);
    match decision {
        TransferDecision::Answer(_) => {}
        TransferDecision::Refuse(refusal) => {
            let code = refusal.result.err().map_or("internal", ErrorCode::name);
            execute(
                tx,
                "INSERT INTO refusals (from_user, transfer_id, to_user, amount, code, balance_at, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![from.as_str(), id.as_str(), to.as_str(), sql_amount(amount), code, sql_amount(refusal.balance), now_ms as i64],
            )?;
        }
        TransferDecision::Commit {
            sender_after,
            recipient_after,
        } => {
            // Compare-and-set: the rule decided on the balances read above.
            for (user, old, new) in [
                (from, sender, sender_after),
                (to, recipient, recipient_after),
            ] {
                let changed = execute(
                    tx,
                    "UPDATE users SET balance = ?3 WHERE name = ?1 AND balance = ?2",
                    params![user.as_str(), old, sql_amount(new)],
                )?;
                if changed != 1 {
                    bail!("the balance of {user} changed under the write lock");
                }
            }
            execute(
                tx,
                "INSERT INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms)
                 VALUES ('transfer', ?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    from.as_str(),
                    id.as_str(),
                    to.as_str(),
                    sql_amount(amount),
                    sql_amount(sender_after),
                    now_ms as i64
                ],
            )?;
        }
    }
    Ok(decision.outcome())
}

/// Decides one transfer by the money rule on `facts` and, if it commits, adds it to
/// `committed` (what the audit log and the metrics take): the one place where both batch
/// paths ([`transfer`], [`TransferRun::transfer`]) do so. A caller whose writes then fail
/// truncates `committed` back.
fn decide(
    from: &Username,
    id: &TransferId,
    to: &Username,
    amount: Amount,
    facts: TransferFacts,
    now_ms: u64,
    committed: &mut Vec<Committed>,
) -> TransferDecision {
    let decision = decide_transfer(from, to, amount, facts);
    if let TransferDecision::Commit { sender_after, .. } = decision {
        committed.push(Committed::transfer(
            from,
            id,
            to,
            amount,
            sender_after,
            now_ms,
        ));
    }
    decision
}

/// A page of `user`'s history; with `deposits`, the deposits to `user` too (a deposit has
/// no `from_user`, so `to_user = ?1` is what finds it).
fn history(tx: &Connection, user: &Username, offset: u32, deposits: bool) -> Result<HistoryPage> {
    let mut stmt = tx.prepare_cached(if deposits {
        "SELECT transfer_id, from_user, to_user, amount, at_ms FROM journal
         WHERE from_user = ?1 OR to_user = ?1
         ORDER BY seq DESC LIMIT ?2 OFFSET ?3"
    } else {
        "SELECT transfer_id, from_user, to_user, amount, at_ms FROM journal
         WHERE kind = 'transfer' AND (from_user = ?1 OR to_user = ?1)
         ORDER BY seq DESC LIMIT ?2 OFFSET ?3"
    })?;
    let rows = stmt.query_map(
        params![user.as_str(), HISTORY_PAGE as i64 + 1, offset],
        |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        },
    )?;
    let mut page = HistoryPage::default();
    for row in rows {
        let (id, from, to, amount, at) = row?;
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

fn execute_one(
    opening_balance: Amount,
    tx: &Connection,
    request: &LedgerRequest,
    now: Instant,
    committed: &mut Vec<Committed>,
) -> Result<LedgerReply> {
    let now_ms = crate::clock::unix_millis();
    Ok(match request {
        LedgerRequest::Register { user, verifier } => {
            LedgerReply::Registered(register(tx, user, verifier, opening_balance, now_ms)?)
        }
        LedgerRequest::Credentials { user } => credentials(tx, user)?,
        LedgerRequest::LoginFailed { user, now, policy } => {
            LedgerReply::Recorded(lockout_update(tx, user, |s| {
                s.record_failure(*now, policy);
            })?)
        }
        LedgerRequest::LoginSucceeded { user } => {
            LedgerReply::Recorded(lockout_update(tx, user, |s| s.record_success())?)
        }
        LedgerRequest::Transfer {
            from,
            id,
            to,
            amount,
        } => LedgerReply::Transfer(transfer(tx, from, id, to, *amount, now_ms, committed)?),
        LedgerRequest::Balance { user } => LedgerReply::Balance(
            balance(tx, user)?
                .map(amount_of)
                .ok_or(ErrorCode::NotLoggedIn),
        ),
        LedgerRequest::History {
            user,
            offset,
            deposits,
        } => LedgerReply::History(Ok(history(tx, user, *offset, *deposits)?)),
        _ => {
            let _ = now;
            LedgerReply::Unavailable
        }
    })
}

/// Executes `batch` in the open transaction `tx` with no savepoint, each run of transfers
/// through one [`TransferRun`]. Any request's failure fails the whole call (the caller then
/// rolls back and runs [`batch_one_by_one`]).
fn batch_at_once(
    opening_balance: Amount,
    tx: &Connection,
    batch: &[(LedgerRequest, Instant)],
    committed: &mut Vec<Committed>,
) -> Result<Vec<LedgerReply>> {
    let now_ms = crate::clock::unix_millis();
    let mut replies = Vec::with_capacity(batch.len());
    let mut run = TransferRun::default();
    let mut run_read = false;
    for (at, (request, now)) in batch.iter().enumerate() {
        match request {
            LedgerRequest::Transfer {
                from,
                id,
                to,
                amount,
            } => {
                if !run_read {
                    run.read_ahead(tx, &batch[at..])?;
                    run_read = true;
                }
                replies.push(LedgerReply::Transfer(
                    run.transfer(from, id, to, *amount, now_ms, committed),
                ));
            }
            other => {
                // Every other request sees the run's writes, as it would one by one, and
                // the next run reads what they wrote.
                run.write(tx)?;
                run_read = false;
                replies.push(execute_one(opening_balance, tx, other, *now, committed)?);
            }
        }
    }
    run.write(tx)?;
    Ok(replies)
}

/// Executes `batch` in the open transaction `tx` request by request, each in a savepoint of
/// its own: a request that fails is answered `Unavailable` and undone alone, and the others
/// stand. Slower than [`batch_at_once`]; used only after a request failed there.
fn batch_one_by_one(
    opening_balance: Amount,
    tx: &Connection,
    batch: &[(LedgerRequest, Instant)],
    committed: &mut Vec<Committed>,
) -> Result<Vec<LedgerReply>> {
    let mut replies = Vec::with_capacity(batch.len());
    for (request, now) in batch {
        execute(tx, "SAVEPOINT request", [])?;
        let before = committed.len();
        match execute_one(opening_balance, tx, request, *now, committed) {
            Ok(reply) => replies.push(reply),
            Err(e) => {
                committed.truncate(before);
                execute(tx, "ROLLBACK TO request", [])?;
                tracing::error!("ledger request failed: {e:#}");
                replies.push(LedgerReply::Unavailable);
            }
        }
        execute(tx, "RELEASE request", [])?;
    }
    Ok(replies)
}

/// A transfer id's final outcome as [`TransferRun`] remembers it: recipient, amount, the
/// sender's balance with it, and the refusal code (`None` if committed).
type Outcome = (String, i64, i64, Option<&'static str>);

/// A run of consecutive transfers of one batch, decided one after another by the money rule
/// on the balances and outcomes as the earlier transfers of the run left them, and written
/// together ([`TransferRun::write`]): each touched balance once (compare-and-set on the value
/// read), the journal and the refusals in multi-row statements. Every read is inside the
/// batch's `IMMEDIATE` transaction, so nothing changes between the reads and the writes.
/// One transfer at a time this would be eight statements (two balance reads, the id's
/// look-up, two balance updates, the journal insert and a savepoint around them); here it
/// is a share of the run's reads (from [`MULTI_ROW_FROM`] accounts on) and of its writes.
#[derive(Default)]
struct TransferRun<'a> {
    /// Every account of the run: its balance as stored and as the run left it (`None`:
    /// no such account).
    balances: BTreeMap<&'a str, (Option<i64>, Option<i64>)>,
    /// The outcomes recorded before the run for its (sender, id) pairs; a pair of the run
    /// that is not here has none.
    stored: HashMap<(&'a str, &'a str), StoredOutcome>,
    /// The outcomes this run recorded, by (sender, id).
    outcomes: HashMap<(&'a str, &'a str), Outcome>,
    /// Journal rows to insert: sender, id, recipient, amount, sender's balance after, time.
    journal: Vec<(&'a str, &'a str, &'a str, i64, i64, i64)>,
    /// Refusal rows to insert: sender, id, recipient, amount, code, sender's balance, time.
    refusals: Vec<(&'a str, &'a str, &'a str, i64, &'static str, i64, i64)>,
}

impl<'a> TransferRun<'a> {
    /// Reads what the transfers at the front of `batch` (up to its first other request)
    /// need, in a few statements rather than three a transfer: the balance of each of their
    /// accounts ([`TransferRun::balances`]) and the outcome recorded for each of their ids
    /// ([`TransferRun::stored`]). Called once, before the run's first transfer. A short run
    /// (fewer than [`MULTI_ROW_FROM`] accounts) reads a row a statement.
    fn read_ahead(&mut self, tx: &Connection, batch: &'a [(LedgerRequest, Instant)]) -> Result<()> {
        let mut names = BTreeSet::new();
        let mut keys = HashSet::new();
        for (request, _) in batch {
            let LedgerRequest::Transfer { from, id, to, .. } = request else {
                break;
            };
            names.extend([from.as_str(), to.as_str()]);
            keys.insert((from.as_str(), id.as_str()));
        }
        let names: Vec<&'a str> = names.into_iter().collect();
        let keys: Vec<(&'a str, &'a str)> = keys.into_iter().collect();
        if names.len() < MULTI_ROW_FROM {
            // A short run (a lone client's transfer): a statement a row costs less.
            for name in names {
                let stored = query_row(
                    tx,
                    "SELECT balance FROM users WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )?;
                self.balances.insert(name, (stored, stored));
            }
            for (from, id) in keys {
                if let Some(outcome) = earlier_outcome(tx, from, id)? {
                    self.stored.insert((from, id), outcome);
                }
            }
            return Ok(());
        }
        for &name in &names {
            self.balances.insert(name, (None, None));
        }
        for_chunks(
            "SELECT name, balance FROM users WHERE name IN (",
            "?",
            ")",
            &names,
            |sql, chunk| {
                let mut stmt = tx.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(chunk))?;
                while let Some(row) = rows.next()? {
                    let (name, balance) = (row.get_ref(0)?.as_str()?, row.get::<_, i64>(1)?);
                    if let Some(entry) = self.balances.get_mut(name) {
                        *entry = (Some(balance), Some(balance));
                    }
                }
                Ok(())
            },
        )?;
        // A join with the ids as a table of values, each with its place in the chunk:
        // SQLite plans `(a, b) IN (VALUES ...)` as a scan of the whole table.
        for (head, tail) in [
            (
                "SELECT v.column3, j.to_user, j.amount, j.balance_after, NULL \
                 FROM (VALUES ",
                ") AS v JOIN journal j ON j.from_user = v.column1 AND j.transfer_id = v.column2",
            ),
            (
                "SELECT v.column3, r.to_user, r.amount, r.balance_at, r.code \
                 FROM (VALUES ",
                ") AS v JOIN refusals r ON r.from_user = v.column1 AND r.transfer_id = v.column2",
            ),
        ] {
            for_chunks(head, "(?, ?, ?)", tail, &keys, |sql, chunk| {
                let mut stmt = tx.prepare_cached(sql)?;
                let places: Vec<i64> = (0..chunk.len() as i64).collect();
                let mut params: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 3);
                for ((from, id), place) in chunk.iter().zip(&places) {
                    params.extend([from as &dyn ToSql, id, place]);
                }
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                while let Some(row) = rows.next()? {
                    let key = usize::try_from(row.get::<_, i64>(0)?)
                        .ok()
                        .and_then(|place| chunk.get(place))
                        .context("a row of the outcomes read ahead has no place")?;
                    let outcome = (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
                    // The journal is read first: an id in both tables (only by hand) is
                    // answered from the journal, as a transfer read alone is.
                    self.stored.entry(*key).or_insert(outcome);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The balance of `user` as the run stands (read by [`TransferRun::read_ahead`]).
    fn balance(&self, user: &Username) -> Option<i64> {
        self.balances.get(user.as_str()).and_then(|&(_, now)| now)
    }

    /// Decides one transfer (see [`transfer`] for the same rule one at a time) and keeps
    /// its writes for [`TransferRun::write`].
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        from: &'a Username,
        id: &'a TransferId,
        to: &'a Username,
        amount: Amount,
        now_ms: u64,
        committed: &mut Vec<Committed>,
    ) -> TransferOutcome {
        let sender = self.balance(from);
        let recipient = if from == to { sender } else { self.balance(to) };
        let key = (from.as_str(), id.as_str());
        let earlier = match self.outcomes.get(&key) {
            Some((to, amount, balance, code)) => Some(recorded(to, *amount, *balance, *code)),
            None => self.stored.get(&key).map(|(to, amount, balance, code)| {
                recorded(to, *amount, *balance, code.as_deref())
            }),
        };
        let facts = TransferFacts {
            sender: sender.map(amount_of),
            recipient: recipient.map(amount_of),
            earlier,
        };
        let decision = decide(from, id, to, amount, facts, now_ms, committed);
        let now = now_ms as i64;
        match decision {
            TransferDecision::Answer(_) => {}
            TransferDecision::Refuse(refusal) => {
                let code = refusal.result.err().map_or("internal", ErrorCode::name);
                let balance = sql_amount(refusal.balance);
                let amount = sql_amount(amount);
                self.refusals
                    .push((key.0, key.1, to.as_str(), amount, code, balance, now));
                self.outcomes
                    .insert(key, (to.to_string(), amount, balance, Some(code)));
            }
            TransferDecision::Commit {
                sender_after,
                recipient_after,
            } => {
                let (after, amount_sql) = (sql_amount(sender_after), sql_amount(amount));
                for (user, new) in [(from, after), (to, sql_amount(recipient_after))] {
                    if let Some(entry) = self.balances.get_mut(user.as_str()) {
                        entry.1 = Some(new);
                    }
                }
                self.journal
                    .push((key.0, key.1, to.as_str(), amount_sql, after, now));
                self.outcomes
                    .insert(key, (to.to_string(), amount_sql, after, None));
            }
        }
        decision.outcome()
    }

    /// Makes the run's writes and starts a new run.
    fn write(&mut self, tx: &Connection) -> Result<()> {
        // Compare-and-set: each balance the run changed, where it still is what the rule
        // decided on (read in this transaction under the write lock, so it always is).
        let balances: Vec<(&str, i64, i64)> = std::mem::take(&mut self.balances)
            .into_iter()
            .filter_map(|(user, balance)| match balance {
                (Some(old), Some(new)) if old != new => Some((user, old, new)),
                _ => None,
            })
            .collect();
        if balances.len() < MULTI_ROW_FROM {
            for (user, old, new) in balances {
                let changed = execute(
                    tx,
                    "UPDATE users SET balance = ?3 WHERE name = ?1 AND balance = ?2",
                    params![user, old, new],
                )?;
                if changed != 1 {
                    bail!("the balance of {user} changed under the write lock");
                }
            }
        } else {
            write_rows(
                tx,
                "UPDATE OR FAIL users SET balance = v.column3 FROM (VALUES ",
                "(?, ?, ?)",
                ") AS v WHERE users.name = v.column1 AND users.balance = v.column2",
                &balances,
                |(user, old, new), params| params.extend([user as &dyn ToSql, old, new]),
            )
            .context("a balance changed under the write lock")?;
        }
        let journal = std::mem::take(&mut self.journal);
        write_rows(
            tx,
            "INSERT OR FAIL INTO journal (kind, from_user, transfer_id, to_user, amount, balance_after, at_ms) VALUES ",
            "('transfer', ?, ?, ?, ?, ?, ?)",
            "",
            &journal,
            |(from, id, to, amount, after, at), params| {
                params.extend([from as &dyn ToSql, id, to, amount, after, at]);
            },
        )?;
        let refusals = std::mem::take(&mut self.refusals);
        write_rows(
            tx,
            "INSERT OR FAIL INTO refusals (from_user, transfer_id, to_user, amount, code, balance_at, at_ms) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?)",
            "",
            &refusals,
            |(from, id, to, amount, code, balance, at), params| {
                params.extend([from as &dyn ToSql, id, to, amount, code, balance, at]);
            },
        )?;
        self.outcomes.clear();
        self.stored.clear();
        Ok(())
    }
}

/// The fewest rows [`TransferRun`] reads or updates with one multi-row statement: below,
/// a statement a row is cheaper than the multi-row form's table of values (a lone client's
/// transfer, two accounts and one id, took about 15 µs longer that way, measured).
const MULTI_ROW_FROM: usize = 8;

/// The most rows one multi-row statement takes; a longer list is written in chunks of powers
/// of two (at most seven statement shapes per statement, all in the statement cache).
const INSERT_CHUNK: usize = 64;

/// Calls `f` with each chunk of `rows` in order, as [`INSERT_CHUNK`] allows, and the SQL
/// for it: `head`, one `values` tuple per row of the chunk, comma-separated, and `tail`.
fn for_chunks<'r, T>(
    head: &str,
    values: &str,
    tail: &str,
    rows: &'r [T],
    mut f: impl FnMut(&str, &'r [T]) -> Result<()>,
) -> Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = if rest.len() >= INSERT_CHUNK {
            INSERT_CHUNK
        } else {
            1 << rest.len().ilog2()
        };
        // Every chunk takes a row at least, or the loop would never end.
        debug_assert!(n >= 1, "an empty chunk of {} rows", rest.len());
        let (chunk, after) = rest.split_at(n);
        let mut sql = String::with_capacity(head.len() + n * (values.len() + 2) + tail.len());
        sql.push_str(head);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(values);
        }
        sql.push_str(tail);
        f(&sql, chunk)?;
        rest = after;
    }
    Ok(())
}

/// Writes `rows` with `head`, one `values` tuple per row and `tail`, in as few statements as
/// [`INSERT_CHUNK`] allows ([`for_chunks`]), in order; each statement must change exactly
/// its rows (an insert of each row, or an update that finds each).
///
/// The statements say `OR FAIL`: a multi-row write under the default `ABORT` makes SQLite
/// keep a statement journal, a copy of every page the statement touches taken before it
/// touches it, so that a constraint failure could undo the statement alone (a tenth of the
/// ledger thread's time at 32 clients, measured). `FAIL` stops at the failing row without
/// that copy; the rows before it are not undone by the statement, but any failure here
/// fails [`batch_at_once`], whose caller rolls the whole transaction back.
fn write_rows<'r, T>(
    tx: &Connection,
    head: &str,
    values: &str,
    tail: &str,
    rows: &'r [T],
    bind: impl Fn(&'r T, &mut Vec<&'r dyn ToSql>),
) -> Result<()> {
    let mut params = Vec::new();
    for_chunks(head, values, tail, rows, |sql, chunk| {
        params.clear();
        for row in chunk {
            bind(row, &mut params);
        }
        let changed = tx
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params.iter()))?;
        if changed != chunk.len() {
            bail!("wrote {changed} rows of {}", chunk.len());
        }
        Ok(())
    })
}

impl Store for SqliteStore {
    fn execute_batch(
        &mut self,
        batch: &[(LedgerRequest, Instant)],
        committed: &mut Vec<Committed>,
    ) -> Result<Vec<LedgerReply>> {
        let first_committed = committed.len();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let replies = match batch_at_once(self.opening_balance, &tx, batch, committed) {
            Ok(replies) => replies,
            Err(e) => {
                // A request failed. Nothing of this attempt stays: the batch runs again with
                // a savepoint per request, so that the failure is that request's alone.
                committed.truncate(first_committed);
                tx.rollback()?;
                tracing::debug!("batch failed ({e:#}); running it again request by request");
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?;
                let replies = batch_one_by_one(self.opening_balance, &tx, batch, committed)?;
                return match tx.commit() {
                    Ok(()) => Ok(replies),
                    Err(e) => {
                        committed.truncate(first_committed);
                        Err(e.into())
                    }
                };
            }
        };
        if let Err(e) = tx.commit() {
            committed.truncate(first_committed);
            return Err(e.into());
        }
        Ok(replies)
    }

    fn server_secret(&mut self) -> Result<[u8; 32]> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'server_secret'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let secret = match existing {
            Some(v) => v
                .try_into()
                .map_err(|_| anyhow::anyhow!("corrupt server secret"))?,
            None => {
                let mut s = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut s);
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('server_secret', ?1)",
                    [&s[..]],
                )?;
                s
            }
        };
        tx.commit()?;
        Ok(secret)
    }

    fn add_user(
        &mut self,
        user: &Username,
        verifier: &Verifier,
        balance: Amount,
        now_ms: u64,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        match register(&tx, user, verifier, balance, now_ms)? {
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
        tx.commit()?;
        Ok(())
    }

    fn list_users(&mut self) -> Result<Vec<UserSummary>> {
        self.require_schema()?;
        let mut stmt = self.conn.prepare(
            "SELECT name, balance, admin_locked, locked_until_ms, failures FROM users ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(UserSummary {
                name: r.get(0)?,
                balance: amount_of(r.get(1)?),
                admin_locked: r.get(2)?,
                locked_until_ms: r.get::<_, i64>(3)? as u64,
                failures: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn set_admin_lock(&mut self, user: &Username, locked: bool) -> Result<()> {
        let n = if locked {
            self.conn.execute(
                "UPDATE users SET admin_locked = 1 WHERE name = ?1",
                [user.as_str()],
            )?
        } else {
            self.conn.execute(
                "UPDATE users SET admin_locked = 0, failures = 0, locked_until_ms = 0 WHERE name = ?1",
                [user.as_str()],
            )?
        };
        if n == 0 {
            return Err(super::Refused(format!("no user named {user}")).into());
        }
        Ok(())
    }

    fn deposit(&mut self, user: &Username, amount: Amount, now_ms: u64) -> Result<Amount> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(old) = balance(&tx, user)? else {
            return Err(super::Refused(format!("no user named {user}")).into());
        };
        let Ok(new) = credit(amount_of(old), amount).map(sql_amount) else {
            return Err(super::Refused(format!(
                "the balance of {user} would pass the ceiling of {MAX_BALANCE}"
            ))
            .into());
        };
        tx.execute(
            "UPDATE users SET balance = ?2 WHERE name = ?1",
            params![user.as_str(), new],
        )?;
        tx.execute(
            "INSERT INTO journal (kind, to_user, amount, balance_after, at_ms) VALUES ('deposit', ?1, ?2, ?3, ?4)",
            params![user.as_str(), sql_amount(amount), new, now_ms as i64],
        )?;
        tx.commit()?;
        Ok(amount_of(new))
    }

    fn check(&mut self) -> Result<CheckReport> {
        self.require_schema()?;
        let tx = self.conn.transaction()?;
        let mut report = CheckReport::default();
        let mut stmt = tx.prepare(
            "SELECT u.name, u.balance,
                    COALESCE((SELECT SUM(amount) FROM journal WHERE to_user = u.name), 0),
                    COALESCE((SELECT SUM(amount) FROM journal WHERE from_user = u.name AND kind = 'transfer'), 0)
             FROM users u ORDER BY u.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (name, balance, credits, debits) = row?;
            report.accounts += 1;
            report.total += i128::from(balance);
            let expected = i128::from(credits) - i128::from(debits);
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
        drop(stmt);
        report.entries =
            tx.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get::<_, i64>(0))? as u64;
        report.minted = i128::from(tx.query_row(
            "SELECT COALESCE(SUM(amount), 0) FROM journal WHERE kind = 'deposit'",
            [],
            |r| r.get::<_, i64>(0),
        )?);
        let orphans: i64 = tx.query_row(
            "SELECT COUNT(*) FROM journal j WHERE NOT EXISTS (SELECT 1 FROM users WHERE name = j.to_user)
               OR (j.from_user IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users WHERE name = j.from_user))",
            [],
            |r| r.get(0),
        )?;
        if orphans > 0 {
            report.problems.push(format!(
                "{orphans} journal entries name users that do not exist"
            ));
        }
        if schema_version(&tx, &self.path)?.is_some_and(|v| v >= 4) {
            for guard in JOURNAL_GUARDS {
                let present: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?1)",
                    [guard],
                    |r| r.get(0),
                )?;
                if !present {
                    report.problems.push(format!(
                        "the journal's trigger {guard} is missing: journal ids could be handed \
                         out twice (`txsock serve` on this file creates it again)"
                    ));
                }
            }
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

    /// A local file: a commit is one transaction and one sync. (It waits only while another
    /// process holds the file, a command such as `txsock deposit`, for moments.)
    fn commits_locally(&self) -> bool {
        true
    }

    fn integrity(&mut self) -> Result<Vec<String>> {
        let path = self.path.display();
        let rows = (|| -> rusqlite::Result<Vec<String>> {
            let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        })();
        match rows {
            Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(Vec::new()),
            // One row may hold several lines (e.g. "*** in database main ***" and the pages).
            Ok(rows) => Ok(rows
                .iter()
                .flat_map(|row| row.lines())
                .filter(|line| !line.starts_with("*** in database"))
                .map(|line| format!("{path}: {line}"))
                .collect()),
            Err(rusqlite::Error::SqliteFailure(e, msg))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                Ok(vec![format!(
                    "{path}: {}",
                    msg.unwrap_or_else(|| e.to_string())
                )])
            }
            Err(e) => Err(anyhow::Error::from(e).context(format!("checking {path}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::verifier;
    use txsock_core::auth::Verifier;
    use txsock_core::lockout::Backoff;

    /// A failed login for an unknown name costs the same storage work as one for a real
    /// user (one page written and synced), so the answer's timing does not tell whether the
    /// name exists (PROTOCOL.md §16).
    #[test]
    fn an_unknown_users_failed_login_writes_like_a_known_users() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("txsock.db");
        let wal = dir.path().join("txsock.db-wal");
        let mut store =
            SqliteStore::open(&path, Amount::parse_non_negative("0").unwrap()).expect("open");
        let mut verifier = Verifier {
            salt: Default::default(),
            iterations: 4096,
            stored_key: [1; 32],
            server_key: [2; 32],
        };
        verifier.salt.extend_from_slice(&[3; 16]).unwrap();
        let mut run = |request: LedgerRequest| {
            let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            store
                .execute_batch(&[(request, crate::clock::now())], &mut Vec::new())
                .expect("batch");
            std::fs::metadata(&wal).expect("WAL").len() - before
        };
        let user = |name: &str| Username::parse(name).unwrap();
        run(LedgerRequest::Register {
            user: user("alice"),
            verifier,
        });
        let failed = |name: &str| LedgerRequest::LoginFailed {
            user: user(name),
            now: crate::clock::now(),
            policy: Backoff::ACCOUNT,
        };
        let known = run(failed("alice"));
        assert!(known > 0, "a failure is written to the WAL");
        // Several in a row, within one millisecond: each is a real write.
        for name in ["nobody", "nobody", "nobody-else", "nobody"] {
            assert_eq!(
                run(failed(name)),
                known,
                "an unknown name costs the same write"
            );
        }
    }
    type Executor = fn(
        Amount,
        &Connection,
        &[(LedgerRequest, Instant)],
        &mut Vec<Committed>,
    ) -> Result<Vec<LedgerReply>>;

    /// Runs `batch` with `execute` in one transaction of `store` and commits it.
    fn run_with(
        store: &mut SqliteStore,
        execute: Executor,
        batch: &[(LedgerRequest, Instant)],
    ) -> (Vec<LedgerReply>, Vec<String>) {
        let mut committed = Vec::new();
        let tx = store
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let replies = execute(store.opening_balance, &tx, batch, &mut committed).unwrap();
        tx.commit().unwrap();
        let committed = committed
            .iter()
            .map(|c| {
                format!(
                    "{} {} {} {} {}",
                    c.from, c.id, c.to, c.amount, c.balance_after
                )
            })
            .collect();
        (replies, committed)
    }

    /// Everything the ledger holds but the times: balances, journal, refusals.
    fn contents(store: &SqliteStore) -> Vec<String> {
        let mut rows = Vec::new();
        for sql in [
            "SELECT name || ' ' || balance FROM users ORDER BY name",
            "SELECT seq || ' ' || kind || ' ' || COALESCE(from_user, '-') || ' ' || \
             COALESCE(transfer_id, '-') || ' ' || to_user || ' ' || amount || ' ' || \
             COALESCE(balance_after, '-') FROM journal ORDER BY seq",
            "SELECT from_user || ' ' || transfer_id || ' ' || to_user || ' ' || amount || ' ' \
             || code || ' ' || balance_at FROM refusals ORDER BY from_user, transfer_id",
        ] {
            let mut stmt = store.conn.prepare(sql).unwrap();
            let found = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
            rows.extend(found.map(Result::unwrap));
        }
        rows
    }

    /// A batch run at once (one [`TransferRun`] per run of transfers, no savepoints) answers
    /// and writes exactly what the same batch run request by request does, for random
    /// batches of transfers (repeated ids, unknown senders and recipients, self-transfers,
    /// overdrafts, overflows) mixed with balances, registrations and failed logins.
    #[test]
    fn a_batch_at_once_equals_the_batch_request_by_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opening = Amount::parse_non_negative("10.00").unwrap();
        let open = |name: &str| SqliteStore::open(&dir.path().join(name), opening).unwrap();
        let (mut at_once, mut one_by_one) = (open("a.db"), open("b.db"));
        // Even rounds use the first six names, so most runs are short (a row a statement);
        // odd rounds use all eighteen, so most runs read and write many rows a statement
        // (from [`MULTI_ROW_FROM`] accounts on).
        let names = [
            "u0", "u1", "u2", "u3", "u4", "ghost", "w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7",
            "w8", "w9", "w10", "w11",
        ];
        let user = |i: u64| Username::parse(names[i as usize % names.len()]).unwrap();
        // A fixed xorshift sequence: the same batches on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let setup: Vec<_> = (0..4)
            .chain(6..names.len() as u64)
            .map(|i| {
                let request = LedgerRequest::Register {
                    user: user(i),
                    verifier: verifier(i as u8),
                };
                (request, crate::clock::now())
            })
            .collect();
        run_with(&mut at_once, batch_at_once, &setup);
        run_with(&mut one_by_one, batch_one_by_one, &setup);
        // One recipient near the ceiling, so that credits to it overflow.
        for store in [&at_once, &one_by_one] {
            store
                .conn
                .execute(
                    "UPDATE users SET balance = ?1 WHERE name = 'u3'",
                    [sql_amount(MAX_BALANCE) - 300],
                )
                .unwrap();
            store
                .conn
                .execute(
                    "INSERT INTO journal (kind, to_user, amount, balance_after, at_ms) \
                     VALUES ('deposit', 'u3', ?1, ?1, 0)",
                    [sql_amount(MAX_BALANCE) - 1300],
                )
                .unwrap();
        }
        for round in 0..60 {
            let span = if round % 2 == 0 {
                6
            } else {
                names.len() as u64
            };
            let len = 1 + next(150);
            let batch: Vec<_> = (0..len)
                .map(|_| {
                    let request = match next(20) {
                        0 => LedgerRequest::Balance {
                            user: user(next(span)),
                        },
                        1 => LedgerRequest::LoginFailed {
                            user: user(next(span)),
                            now: crate::clock::now(),
                            policy: Backoff::ACCOUNT,
                        },
                        2 if round % 10 == 9 => LedgerRequest::Register {
                            user: user(4),
                            verifier: verifier(4),
                        },
                        _ => {
                            let largest = if next(4) == 0 { 2_000 } else { 300 };
                            LedgerRequest::Transfer {
                                from: user(next(span)),
                                id: TransferId::parse(&format!("t{}", next(40))).unwrap(),
                                to: user(next(span)),
                                amount: Amount(1 + next(largest)),
                            }
                        }
                    };
                    (request, crate::clock::now())
                })
                .collect();
            let a = run_with(&mut at_once, batch_at_once, &batch);
            let b = run_with(&mut one_by_one, batch_one_by_one, &batch);
            assert_eq!(a, b, "round {round}: replies and committed transfers");
            assert_eq!(contents(&at_once), contents(&one_by_one), "round {round}");
        }
        let journal = contents(&at_once).len();
        assert!(journal > 200, "the batches moved money ({journal} rows)");
        for store in [&mut at_once, &mut one_by_one] {
            assert!(store.check().unwrap().problems.is_empty());
        }
    }

    /// A run writes only the balances it changed: an account whose transfers leave its
    /// balance as it was (a transfer and its return, refusals: to oneself, beyond the
    /// balance) is not rewritten, so the commit writes no page for it.
    #[test]
    fn a_run_writes_only_the_balances_it_changed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opening = Amount::parse_non_negative("10.00").unwrap();
        let mut store = SqliteStore::open(&dir.path().join("t.db"), opening).unwrap();
        let user = |name: &str| Username::parse(name).unwrap();
        let setup: Vec<_> = ["alice", "bob", "carol"]
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let request = LedgerRequest::Register {
                    user: user(name),
                    verifier: verifier(i as u8),
                };
                (request, crate::clock::now())
            })
            .collect();
        run_with(&mut store, batch_at_once, &setup);
        store
            .conn
            .execute_batch(
                "CREATE TEMP TABLE written (name TEXT);
                 CREATE TEMP TRIGGER balance_written AFTER UPDATE OF balance ON users
                 BEGIN INSERT INTO written VALUES (NEW.name); END;",
            )
            .unwrap();
        let transfer = |from: &str, id: &str, to: &str, amount: &str| {
            let request = LedgerRequest::Transfer {
                from: user(from),
                id: TransferId::parse(id).unwrap(),
                to: user(to),
                amount: Amount::parse_non_negative(amount).unwrap(),
            };
            (request, crate::clock::now())
        };
        let written = |store: &SqliteStore| -> Vec<String> {
            let mut stmt = store
                .conn
                .prepare("SELECT name FROM written ORDER BY name")
                .unwrap();
            let names = stmt.query_map([], |r| r.get(0)).unwrap();
            names.map(Result::unwrap).collect()
        };
        let (_, committed) = run_with(
            &mut store,
            batch_at_once,
            &[
                transfer("alice", "t1", "alice", "1.00"),
                transfer("bob", "t1", "carol", "1.00"),
                transfer("carol", "t1", "bob", "1.00"),
                transfer("carol", "t2", "alice", "100.00"),
            ],
        );
        assert_eq!(
            committed.len(),
            2,
            "two transfers moved money: {committed:?}"
        );
        assert!(written(&store).is_empty(), "{:?}", written(&store));
        run_with(
            &mut store,
            batch_at_once,
            &[transfer("alice", "t2", "bob", "2.00")],
        );
        assert_eq!(written(&store), ["alice", "bob"]);
    }

    /// A request that fails (here a history page over a corrupt journal row) fails alone:
    /// the batch is run again request by request, the failed request is answered
    /// `Unavailable`, and the transfers around it commit.
    #[test]
    fn a_failing_request_fails_alone_in_a_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opening = Amount::parse_non_negative("10.00").unwrap();
        let mut store = SqliteStore::open(&dir.path().join("t.db"), opening).unwrap();
        let user = |name: &str| Username::parse(name).unwrap();
        let now = crate::clock::now;
        for (i, name) in ["alice", "bob"].into_iter().enumerate() {
            let request = LedgerRequest::Register {
                user: user(name),
                verifier: verifier(i as u8),
            };
            store
                .execute_batch(&[(request, now())], &mut Vec::new())
                .unwrap();
        }
        store
            .conn
            .execute(
                "INSERT INTO journal (kind, from_user, transfer_id, to_user, amount, at_ms) \
                 VALUES ('transfer', 'carol', 'not an id', 'bob', 1, 0)",
                [],
            )
            .unwrap();
        let transfer = |id: &str, amount: &str| LedgerRequest::Transfer {
            from: user("alice"),
            id: TransferId::parse(id).unwrap(),
            to: user("bob"),
            amount: Amount::parse_non_negative(amount).unwrap(),
        };
        let batch = [
            (transfer("t1", "1.00"), now()),
            (
                LedgerRequest::History {
                    user: user("bob"),
                    offset: 0,
                    deposits: true,
                },
                now(),
            ),
            (transfer("t2", "2.00"), now()),
            (
                LedgerRequest::Balance {
                    user: user("alice"),
                },
                now(),
            ),
        ];
        let mut committed = Vec::new();
        let replies = store.execute_batch(&batch, &mut committed).unwrap();
        let ok = |balance: &str| {
            LedgerReply::Transfer(TransferOutcome {
                result: Ok(()),
                balance: Amount::parse_non_negative(balance).unwrap(),
            })
        };
        assert_eq!(replies[0], ok("9.00"));
        assert_eq!(replies[1], LedgerReply::Unavailable);
        assert_eq!(replies[2], ok("7.00"));
        assert_eq!(
            replies[3],
            LedgerReply::Balance(Ok(Amount::parse_non_negative("7.00").unwrap()))
        );
        let ids: Vec<&str> = committed.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"], "each committed transfer reported once");
        // Committed: a new store on the file sees them.
        drop(store);
        let mut store = SqliteStore::open(&dir.path().join("t.db"), opening).unwrap();
        let balance = store
            .execute_batch(
                &[(LedgerRequest::Balance { user: user("bob") }, now())],
                &mut Vec::new(),
            )
            .unwrap();
        assert_eq!(
            balance[0],
            LedgerReply::Balance(Ok(Amount::parse_non_negative("13.00").unwrap()))
        );
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod open_and_check_tests;
