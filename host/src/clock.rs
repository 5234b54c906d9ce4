//! The host's clock: Unix time in milliseconds, so lockouts stored in the ledger keep their
//! meaning across restarts and across servers sharing one database.

use std::time::{SystemTime, UNIX_EPOCH};
use txsock_core::Instant;

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Now, as the core sees it.
pub fn now() -> Instant {
    Instant::from_millis(unix_millis())
}

/// Converts a core instant into a tokio deadline.
pub fn deadline(at: Instant) -> tokio::time::Instant {
    let wait = at.millis().saturating_sub(unix_millis());
    tokio::time::Instant::now() + std::time::Duration::from_millis(wait)
}

/// An RFC 3339 timestamp for log lines.
pub fn stamp_millis(ms: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}
