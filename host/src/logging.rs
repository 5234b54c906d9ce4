//! The operational log on stderr: what the server does, for the person or the log shipper
//! that runs it (the audit trail is elsewhere: `crate::audit`, docs/LOGS.md).
//!
//! Levels (`RUST_LOG`, default `info`):
//! - `error`/`warn`: storage failures, accounts locked, addresses throttled, the connection
//!   limit reached, signals and start-up problems;
//! - `info`: start, stop, signals, SIGHUP reopening;
//! - `debug`: each connection accepted and closed, registrations, logins, logouts, failed
//!   logins, refused frames, sessions closed on errors, and each committed batch.
//!
//! Text has ANSI colours only when stderr is a terminal and `NO_COLOR` is unset;
//! `--log-format json` writes one JSON object per line (`timestamp`, `level`, `target`,
//! `fields` with `message` and the event's fields) for log shippers.

use clap::ValueEnum;
use std::io::IsTerminal;
use std::net::SocketAddr;
use txsock_core::session::ServerEvent;

/// How stderr log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Replaces the running logger's filter; set once by [`init`].
type Reload = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

static RELOAD: std::sync::OnceLock<Reload> = std::sync::OnceLock::new();

static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format [`init`] installed (text if none was).
#[cfg_attr(not(unix), allow(dead_code))] // Only SIGHUP (Unix) asks.
pub fn current_format() -> LogFormat {
    FORMAT.get().copied().unwrap_or(LogFormat::Text)
}

/// The filter directives in force: `verbosity` is the count of `-v` minus that of `-q`; when
/// not 0 it sets the level (1 debug, 2 trace, -1 warn, -2 error) and overrides the rest;
/// else `serve --log-filter` (`log-filter` in txsock.toml), else `RUST_LOG`, else `info`.
pub fn filter(
    verbosity: i16,
    log_filter: Option<&str>,
) -> Result<tracing_subscriber::EnvFilter, String> {
    let level = match verbosity {
        i16::MIN..=-2 => Some("error"),
        -1 => Some("warn"),
        0 => None,
        1 => Some("debug"),
        _ => Some("trace"),
    };
    if let Some(directives) = level.or(log_filter) {
        return tracing_subscriber::EnvFilter::try_new(directives)
            .map_err(|e| format!("invalid log filter `{directives}`: {e}"));
    }
    Ok(tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
}

/// Installs the stderr logger with `filter` (see [`filter`]); `format` shapes the lines. The
/// filter can be replaced later with [`reload_filter`] (SIGHUP).
pub fn init(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    let _ = FORMAT.set(format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let builder = builder.with_ansi(colour()).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = RELOAD.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.init();
        }
        LogFormat::Json => {
            let builder = builder.json().with_ansi(false).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = RELOAD.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.init();
        }
    }
}

/// Replaces the filter of the logger [`init`] installed.
#[cfg_attr(not(unix), allow(dead_code))] // Only SIGHUP (Unix) reloads.
pub fn reload_filter(filter: tracing_subscriber::EnvFilter) -> Result<(), String> {
    match RELOAD.get() {
        Some(reload) => reload(filter),
        None => Err("no logger installed".into()),
    }
}

/// Colour only for a person at a terminal who has not asked for none (no-color.org).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs a connection the server accepted.
pub fn connection_accepted(peer: SocketAddr) {
    tracing::debug!(%peer, "connection accepted");
}

/// Logs a connection that ended, with its user if it logged in.
pub fn connection_closed(peer: SocketAddr, user: Option<&str>) {
    tracing::debug!(%peer, user = user.unwrap_or("-"), "connection closed");
}

/// Logs a connection refused at the connection limit.
pub fn connection_refused(peer: SocketAddr, limit: usize) {
    tracing::warn!(%peer, limit, "connection refused: --max-connections reached");
}

/// Logs what one session event says; `user` is the session's user, `-` before login.
pub fn server_event(event: &ServerEvent, user: &str, peer: SocketAddr) {
    match event {
        ServerEvent::Registered { user } => {
            tracing::debug!(user = user.as_str(), %peer, "registered")
        }
        ServerEvent::LoggedIn { user } => {
            tracing::debug!(user = user.as_str(), %peer, "logged in")
        }
        ServerEvent::LoginFailed { user, reason } => {
            tracing::debug!(user = user.as_str(), reason = reason.name(), %peer, "login failed")
        }
        ServerEvent::AccountLocked { user, until } => tracing::warn!(
            user = user.as_str(),
            until = %crate::clock::stamp_millis(until.millis()),
            %peer,
            "account locked after failed logins"
        ),
        ServerEvent::AddressThrottled => {
            tracing::warn!(%peer, "address throttled after failed logins")
        }
        ServerEvent::Rejected { code } => {
            tracing::debug!(code = code.name(), user, %peer, "frame refused")
        }
        ServerEvent::LoggedOut { user } => {
            tracing::debug!(user = user.as_str(), %peer, "logged out")
        }
        ServerEvent::Closing { code } => {
            tracing::debug!(code = code.name(), user, %peer, "closing the session")
        }
        _ => {}
    }
}

/// Logs one committed batch.
pub fn batch_committed(requests: usize, transfers: usize, elapsed: std::time::Duration) {
    tracing::debug!(
        requests,
        transfers,
        elapsed_us = elapsed.as_micros() as u64,
        "batch committed"
    );
}
