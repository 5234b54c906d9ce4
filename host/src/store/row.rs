//! Conversions between SQL rows and the core's types, shared by the SQLite and MySQL stores.
//!
//! Both stores keep money as signed 64-bit integers of minor units, names as text, admin
//! locks as a flag and refusal codes by their wire names; these helpers are the one place
//! that says how.

use anyhow::{anyhow, Result};
use txsock_core::ledger::RecordedOutcome;
use txsock_core::{Amount, ErrorCode, Username};

/// Admin locks are stored as a flag; to the core they look like a lock that never ends.
pub const FOREVER: u64 = i64::MAX as u64;

/// A username read from the database.
pub fn name_of(row_value: String) -> Result<Username> {
    Username::parse(&row_value).map_err(|e| anyhow!("bad username {row_value:?} in database: {e}"))
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
