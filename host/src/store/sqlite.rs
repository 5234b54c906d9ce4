//! The embedded SQLite store: WAL journal, `synchronous = FULL`, one writer thread.

use super::row::{amount_of, credentials_of, fmt_i128, name_of, recorded, sql_amount, FOREVER};
use super::{Access, CheckReport, Committed, Store, UserSummary};
use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
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
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3];

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
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn).with_context(|| format!("schema of {}", path.display()))?;
        // The row an unknown user's failed login rewrites (see `lockout_update`), created
        // here so that the first such failure is an update like every later one.
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, x'')",
            [super::row::LOGIN_FAILURE_DECOY],
        )?;
        // Room for every statement of the ledger's hot path (see `execute`).
        conn.set_prepared_statement_cache_capacity(32);
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
        tx.execute_batch(migration)
            .with_context(|| format!("migrating from schema version {from}"))?;
    }
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
    // The id's final outcome, if it has one: committed (in the journal, with the balance
    // after it) or refused (in `refusals`, with its code and the balance then).
    let earlier = query_row(
        tx,
        "SELECT to_user, amount, balance_after, NULL FROM journal
             WHERE from_user = ?1 AND transfer_id = ?2
         UNION ALL
         SELECT to_user, amount, balance_at, code FROM refusals
             WHERE from_user = ?1 AND transfer_id = ?2",
        [from.as_str(), id.as_str()],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        },
    )?;
    let facts = TransferFacts {
        sender: sender.map(amount_of),
        recipient: recipient.map(amount_of),
        earlier: earlier
            .as_ref()
            .map(|(to, amount, balance, code)| recorded(to, *amount, *balance, code.as_deref())),
    };
    let decision = decide_transfer(from, to, amount, facts);
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
    Ok(decision.outcome())
}

fn history(tx: &Connection, user: &Username, offset: u32) -> Result<HistoryPage> {
    let mut stmt = tx.prepare_cached(
        "SELECT transfer_id, from_user, to_user, amount, at_ms FROM journal
         WHERE kind = 'transfer' AND (from_user = ?1 OR to_user = ?1)
         ORDER BY seq DESC LIMIT ?2 OFFSET ?3",
    )?;
    let rows = stmt.query_map(
        params![user.as_str(), HISTORY_PAGE as i64 + 1, offset],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
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
            id: TransferId::parse(&id)
                .map_err(|e| anyhow::anyhow!("bad transfer id {id:?}: {e}"))?,
            from: name_of(from)?,
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
        LedgerRequest::History { user, offset } => {
            LedgerReply::History(Ok(history(tx, user, *offset)?))
        }
        _ => {
            let _ = now;
            LedgerReply::Unavailable
        }
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
        let mut replies = Vec::with_capacity(batch.len());
        for (request, now) in batch {
            // A savepoint per request: one request's failure never undoes the others.
            execute(&tx, "SAVEPOINT request", [])?;
            let before = committed.len();
            match execute_one(self.opening_balance, &tx, request, *now, committed) {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    committed.truncate(before);
                    execute(&tx, "ROLLBACK TO request", [])?;
                    tracing::error!("ledger request failed: {e:#}");
                    replies.push(LedgerReply::Unavailable);
                }
            }
            execute(&tx, "RELEASE request", [])?;
        }
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
        if report.total != report.minted {
            report.problems.push(format!(
                "money not conserved: balances sum to {} but {} was deposited",
                fmt_i128(report.total),
                fmt_i128(report.minted)
            ));
        }
        Ok(report)
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
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod open_and_check_tests;
