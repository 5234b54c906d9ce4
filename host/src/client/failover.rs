//! Moving to another server: `--server A,B,C` names several servers of one ledger (several
//! `txsock serve` on one MySQL/MariaDB database or Galera cluster).
//!
//! The client connects to the first that answers, starting with the one that served it last,
//! and leaves it for the next one in the list when it cannot be reached, the connection is
//! lost, or it answers `internal` (its storage failed: for example its database node is
//! down) or closes with a fatal code (`server_busy`, ...). Whatever it was doing is then
//! done again on the next server: it logs in again (sessions, keys and nonces belong to one
//! server) and re-sends a pending transfer with the same id and a fresh nonce. That is
//! exactly-once all the same: every server answers a recorded id with its original outcome
//! (PROTOCOL.md §13), so a transfer that the first server committed before it went away is
//! answered "committed" by the second, with nothing moved twice.
//!
//! The rest of the client sees one hook: [`Servers::connect`] in place of a single connect,
//! and [`Servers::leave_after`] where a connection is dropped after a failure.

use super::account::Failure;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use txsock_core::ErrorCode;

/// The servers to use, in order, and the one in use; clones share the position.
#[derive(Debug, Clone)]
pub struct Servers {
    list: Arc<[String]>,
    current: Arc<AtomicUsize>,
}

/// Checks one `HOST:PORT`: a missing port is a usage error, not a connection failure.
fn check(text: &str) -> Result<&str, String> {
    let usable = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if usable {
        Ok(text)
    } else {
        Err(format!(
            "`{text}` is not HOST:PORT (the server's port is needed, e.g. {text}:11002)"
        ))
    }
}

/// Parses `--server`: one `HOST:PORT` or several separated by commas (no repeats).
pub fn parse(text: &str) -> Result<String, String> {
    Servers::parse(text).map(|_| text.to_string())
}

impl Servers {
    /// Parses `HOST:PORT[,HOST:PORT...]`.
    pub fn parse(text: &str) -> Result<Servers, String> {
        let mut list: Vec<String> = Vec::new();
        for part in text.split(',').map(str::trim) {
            let part = check(part)?.to_string();
            if list.contains(&part) {
                return Err(format!("`{part}` is listed twice in --server"));
            }
            list.push(part);
        }
        Ok(Servers {
            list: list.into(),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The server in use (or to be tried first).
    pub fn current(&self) -> &str {
        &self.list[self.current.load(Ordering::Relaxed) % self.list.len()]
    }

    /// Runs `connect` on each server in turn, starting with the current one, until one
    /// succeeds; that one becomes current. Returns the last failure if none does.
    pub fn connect<T>(
        &self,
        mut connect: impl FnMut(&str) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = Failure::Connect("no server given".into());
        for step in 0..self.list.len() {
            let index = (start + step) % self.list.len();
            match connect(&self.list[index]) {
                Ok(connection) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(failure) => last = failure,
            }
        }
        Err(last)
    }

    /// Called where a connection is given up after `failure`: if the failure says the
    /// server cannot serve now ([`leaves`]), the next connection starts with the next server.
    /// Returns the server moved to, if it moved.
    pub fn leave_after(&self, failure: &Failure) -> Option<&str> {
        if self.list.len() < 2 || !leaves(failure) {
            return None;
        }
        let next = (self.current.load(Ordering::Relaxed) + 1) % self.list.len();
        self.current.store(next, Ordering::Relaxed);
        Some(self.current())
    }
}

/// Whether `failure` is a reason to try another server: no connection, a lost one, or an
/// answer saying this server cannot serve now (`internal`: its storage failed). Refusals
/// that are answers (wrong password, insufficient funds, ...) and integrity failures (an
/// attack, which another server would not cure) are not.
pub fn leaves(failure: &Failure) -> bool {
    match failure {
        Failure::Connect(_) | Failure::Lost(_) => true,
        Failure::Refused(code) => *code == ErrorCode::Internal || code.is_fatal(),
        Failure::Integrity(_) | Failure::Local(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_or_several_servers() {
        let one = Servers::parse("127.0.0.1:11002").unwrap();
        assert_eq!(one.current(), "127.0.0.1:11002");
        assert_eq!(one.leave_after(&Failure::Lost("reset".into())), None);
        let three = Servers::parse("a:1, b:2,[::1]:3").unwrap();
        assert_eq!(three.current(), "a:1");
        assert_eq!(
            three.leave_after(&Failure::Lost("reset".into())),
            Some("b:2")
        );
        assert_eq!(
            three.leave_after(&Failure::Lost("reset".into())),
            Some("[::1]:3")
        );
        assert_eq!(
            three.leave_after(&Failure::Lost("reset".into())),
            Some("a:1")
        );
        assert!(Servers::parse("a:1,b").is_err());
        assert!(Servers::parse("a:1,").is_err());
        assert!(Servers::parse("a:1,a:1").is_err());
        assert!(Servers::parse("").is_err());
    }

    #[test]
    fn connects_to_the_first_that_answers_and_stays_there() {
        let servers = Servers::parse("a:1,b:2,c:3").unwrap();
        let mut tried = Vec::new();
        let got = servers.connect(|s| {
            tried.push(s.to_string());
            if s == "b:2" {
                Ok(s.to_string())
            } else {
                Err(Failure::Connect(format!("{s} down")))
            }
        });
        assert_eq!(got, Ok("b:2".to_string()));
        assert_eq!(tried, ["a:1", "b:2"]);
        assert_eq!(servers.current(), "b:2");
        // None answers: every one tried once, starting from the current, last failure kept.
        let mut tried = Vec::new();
        let got: Result<(), _> = servers.connect(|s| {
            tried.push(s.to_string());
            Err(Failure::Connect(s.to_string()))
        });
        assert_eq!(got, Err(Failure::Connect("a:1".into())));
        assert_eq!(tried, ["b:2", "c:3", "a:1"]);
    }

    #[test]
    fn leaves_only_a_server_that_cannot_serve() {
        let servers = Servers::parse("a:1,b:2").unwrap();
        let clone = servers.clone();
        assert_eq!(
            servers.leave_after(&Failure::Lost("reset".into())),
            Some("b:2")
        );
        assert_eq!(clone.current(), "b:2", "clones share the position");
        assert_eq!(
            servers.leave_after(&Failure::Refused(ErrorCode::Internal)),
            Some("a:1")
        );
        assert_eq!(
            servers.leave_after(&Failure::Refused(ErrorCode::InsufficientFunds)),
            None
        );
        assert_eq!(
            servers.leave_after(&Failure::Refused(ErrorCode::AuthFailed)),
            None
        );
        let alone = Servers::parse("a:1").unwrap();
        assert_eq!(alone.leave_after(&Failure::Lost("reset".into())), None);
    }
}
