//! Conversions between SQL rows and the core's types, shared by the SQLite and MySQL stores.
//!
//! Both stores keep money as signed 64-bit integers of minor units, names as text, admin
//! locks as a flag and refusal codes by their wire names; these helpers are the one place
//! that says how.

use anyhow::{anyhow, Result};
use txsock_core::auth::Verifier;
use txsock_core::ledger::{EntryKind, LedgerReply, RecordedOutcome};
use txsock_core::lockout::LockoutState;
use txsock_core::{Amount, ErrorCode, Instant, TransferId, Username};

/// Admin locks are stored as a flag; to the core they look like a lock that never ends.
pub const FOREVER: u64 = i64::MAX as u64;

/// A username read from the database.
pub fn name_of(row_value: String) -> Result<Username> {
    Username::parse(&row_value).map_err(|e| anyhow!("bad username {row_value:?} in database: {e}"))
}

/// A journal row's kind from its `transfer_id` and `from_user`: both set for a transfer,
/// both NULL for a deposit (money created for `to_user`); anything else is a damaged row.
pub fn entry_kind(id: Option<String>, from: Option<String>) -> Result<EntryKind> {
    match (id, from) {
        (Some(id), Some(from)) => Ok(EntryKind::Transfer {
            id: TransferId::parse(&id).map_err(|e| anyhow!("bad transfer id {id:?}: {e}"))?,
            from: name_of(from)?,
        }),
        (None, None) => Ok(EntryKind::Deposit),
        (id, from) => Err(anyhow!(
            "journal row with transfer id {id:?} but sender {from:?} in database"
        )),
    }
}

/// An amount or balance read from the database (a negative value, which the schemas'
/// checks forbid, reads as zero).
pub fn amount_of(v: i64) -> Amount {
    Amount(u64::try_from(v).unwrap_or(0))
}

/// An amount or balance as the database stores it.
pub fn sql_amount(a: Amount) -> i64 {
    // Amounts and balances are capped at Amount::MAX (1e15) by the core's money rule, so
    // this conversion is exact.
    i64::try_from(a.minor()).unwrap_or(i64::MAX)
}

/// A transfer id's recorded outcome from its row: recipient, amount, the sender's balance
/// with it, and the refusal code (`None` for a committed transfer). An unknown code, which
/// only a newer txsock could have written, reads as `internal`.
pub fn recorded<'a>(
    to: &'a str,
    amount: i64,
    balance: i64,
    code: Option<&str>,
) -> RecordedOutcome<'a> {
    RecordedOutcome {
        to,
        amount: amount_of(amount),
        result: match code {
            None => Ok(()),
            Some(code) => Err(ErrorCode::from_name(code).unwrap_or(ErrorCode::Internal)),
        },
        balance: amount_of(balance),
    }
}

/// Formats signed minor units as money (sums over the ledger can pass `Amount`'s range).
pub fn fmt_i128(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// A user's login row: salt, iterations, StoredKey, ServerKey, failures, last failure (ms),
/// locked until (ms), admin lock.
pub type CredentialsRow = (Vec<u8>, u32, Vec<u8>, Vec<u8>, u32, i64, i64, bool);

/// The answer to a credentials request from `user`'s row (`None`: no such user, which gets
/// no verifier and the default lockout state). An admin lock reads as a lock that never ends.
pub fn credentials_of(user: &Username, row: Option<CredentialsRow>) -> Result<LedgerReply> {
    let Some((salt, iterations, stored, server, failures, last, until, admin_locked)) = row else {
        return Ok(LedgerReply::Credentials {
            verifier: None,
            lockout: LockoutState::default(),
        });
    };
    let mut verifier = Verifier {
        salt: Default::default(),
        iterations,
        stored_key: [0; 32],
        server_key: [0; 32],
    };
    verifier
        .salt
        .extend_from_slice(&salt)
        .map_err(|_| anyhow!("salt too long for {user}"))?;
    verifier.stored_key = stored
        .try_into()
        .map_err(|_| anyhow!("bad stored key for {user}"))?;
    verifier.server_key = server
        .try_into()
        .map_err(|_| anyhow!("bad server key for {user}"))?;
    let lockout = LockoutState {
        failures,
        last_failure: Instant::from_millis(last as u64),
        locked_until: Instant::from_millis(if admin_locked { FOREVER } else { until as u64 }),
    };
    Ok(LedgerReply::Credentials {
        verifier: Some(verifier),
        lockout,
    })
}

/// The meta row an unknown user's failed login rewrites, so that it costs the store the same
/// write and sync as a real user's failure (PROTOCOL.md §16).
pub const LOGIN_FAILURE_DECOY: &str = "login_failure_decoy";

/// A value for [`LOGIN_FAILURE_DECOY`] that differs from the last one written: a database
/// skips a write that changes nothing (SQLite compares the cell), which would bring the
/// timing difference back.
pub fn login_failure_decoy_value() -> Vec<u8> {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut value = crate::clock::unix_millis().to_le_bytes().to_vec();
    value.extend_from_slice(&n.to_le_bytes());
    value
}
