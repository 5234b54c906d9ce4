//! `cargo xtask crash --rounds N`: the long form of the crash test (`tests/tests/crash.rs`)
//! on SQLite and on a throwaway MariaDB.

use std::path::Path;
use std::process::Command;

use crate::prerequisites::{self, Need};
use crate::util::{run, Error};
use crate::{build_txsock, cargo, mariadb};

/// Which ledgers the crash test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// SQLite, then MariaDB.
    All,
    /// The embedded SQLite ledger only.
    Sqlite,
    /// A MySQL/MariaDB ledger only.
    Mysql,
}

impl Backends {
    /// Parses the value of `--backend`.
    pub fn parse(value: &str) -> Result<Backends, String> {
        match value {
            "all" => Ok(Backends::All),
            "sqlite" => Ok(Backends::Sqlite),
            "mysql" | "mariadb" => Ok(Backends::Mysql),
            other => Err(format!(
                "--backend: `{other}` is not one of all, sqlite, mysql"
            )),
        }
    }

    /// The long-form tests to run, by name.
    fn tests(self) -> &'static [&'static str] {
        const SQLITE: &str = "transfers_survive_sigkill_long_sqlite";
        const MYSQL: &str = "transfers_survive_sigkill_long_mysql";
        match self {
            Backends::All => &[SQLITE, MYSQL],
            Backends::Sqlite => &[SQLITE],
            Backends::Mysql => &[MYSQL],
        }
    }
}

/// Builds `txsock`, then runs the crash test's long forms with `rounds` kills each, one
/// backend after the other; the MySQL one on `TXSOCK_TEST_MYSQL_URL` if set, else on a
/// throwaway MariaDB (required: it fails rather than skips).
pub fn crash(root: &Path, rounds: u32, backends: Backends) -> Result<(), Error> {
    prerequisites::ensure(&[Need::Tests])?;
    build_txsock(root)?;
    let mut test: Command = cargo(root);
    test.args(["test", "-p", "txsock-e2e", "--test", "crash", "--"])
        .args(backends.tests())
        .args(["--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TXSOCK_CRASH_ROUNDS", rounds.to_string());
    let _mariadb = if backends == Backends::Sqlite {
        None
    } else {
        test.env("TXSOCK_REQUIRE_MYSQL", "1");
        mariadb::provide(&mut test)?
    };
    run(&mut test)
}
