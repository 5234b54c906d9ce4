//! `cargo xtask crash --rounds N`: the long form of the crash tests: `tests/tests/crash.rs` on
//! SQLite and on a throwaway MariaDB, `tests/tests/galera.rs` on a throwaway Galera cluster.

use std::path::Path;
use std::process::Command;

use crate::prerequisites::{self, Need};
use crate::util::{run, Error};
use crate::{build_txsock, cargo, mariadb};

/// Which ledgers the crash test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// SQLite, then MariaDB, then Galera.
    All,
    /// The embedded SQLite ledger only.
    Sqlite,
    /// A MySQL/MariaDB ledger only.
    Mysql,
    /// A three-node Galera cluster only (servers and database nodes killed).
    Galera,
}

impl Backends {
    /// Parses the value of `--backend`.
    pub fn parse(value: &str) -> Result<Backends, String> {
        match value {
            "all" => Ok(Backends::All),
            "sqlite" => Ok(Backends::Sqlite),
            "mysql" | "mariadb" => Ok(Backends::Mysql),
            "galera" => Ok(Backends::Galera),
            other => Err(format!(
                "--backend: `{other}` is not one of all, sqlite, mysql, galera"
            )),
        }
    }

    /// The long-form tests of `tests/tests/crash.rs` to run, by name.
    fn tests(self) -> &'static [&'static str] {
        const SQLITE: &str = "transfers_survive_sigkill_long_sqlite";
        const MYSQL: &str = "transfers_survive_sigkill_long_mysql";
        match self {
            Backends::All => &[SQLITE, MYSQL],
            Backends::Sqlite => &[SQLITE],
            Backends::Mysql => &[MYSQL],
            Backends::Galera => &[],
        }
    }

    /// Whether the Galera long form runs.
    fn galera(self) -> bool {
        matches!(self, Backends::All | Backends::Galera)
    }
}

/// The long form of `tests/tests/galera.rs`.
const GALERA_TEST: &str = "transfers_survive_sigkill_of_servers_and_nodes_long_galera";

/// Builds `txsock`, then runs the crash tests' long forms with `rounds` kills each, one
/// backend after the other; the MySQL one on `TXSOCK_TEST_MYSQL_URL` if set, else on a
/// throwaway MariaDB, the Galera one on a throwaway cluster that the test starts itself
/// (required: they fail rather than skip).
pub fn crash(root: &Path, rounds: u32, backends: Backends) -> Result<(), Error> {
    prerequisites::ensure(&[Need::Tests])?;
    build_txsock(root)?;
    if !backends.tests().is_empty() {
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
        run(&mut test)?;
    }
    if backends.galera() {
        run(cargo(root)
            .args([
                "test",
                "-p",
                "txsock-e2e",
                "--test",
                "galera",
                "--",
                GALERA_TEST,
            ])
            .args(["--exact", "--ignored", "--nocapture"])
            .env("TXSOCK_CRASH_ROUNDS", rounds.to_string())
            .env("TXSOCK_REQUIRE_GALERA", "1"))?;
    }
    Ok(())
}
