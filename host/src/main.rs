//! `txsock`: authenticated money transfers over TCP — server, admin commands and tools.
//!
//! This file only parses arguments and dispatches to the subcommand modules.

mod admin;
mod audit;
mod cert;
mod client;
mod clock;
mod config;
mod demo;
mod group_commit;
mod logging;
mod manual;
mod metrics;
mod mitm;
mod serve;
mod store;
mod stress;
mod tls;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use txsock_core::Amount;

/// Authenticated money transfers over TCP.
///
/// Every setting of `serve`, the admin commands and `client` can also come from a `TXSOCK_*`
/// environment variable or from `txsock.toml` in the current directory (keys are the long
/// option names, under `[serve]` or `[client]`); command-line flags win.
#[derive(Debug, Parser)]
#[command(
    name = "txsock",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Settings file: `[serve]` and `[client]` sections of long option names, e.g. `[serve]`
    /// `listen = "127.0.0.1:11002"` (keys outside a section are the server's).
    #[arg(
        long,
        global = true,
        env = "TXSOCK_CONFIG",
        default_value = "txsock.toml"
    )]
    pub config: PathBuf,

    /// Stderr log format: `text` (coloured only on a terminal, unless NO_COLOR is set) or
    /// `json`, one object per line for log shippers. `RUST_LOG` sets the level (default
    /// info; debug adds connections, logins and commits).
    #[arg(
        long,
        global = true,
        env = "TXSOCK_LOG_FORMAT",
        value_enum,
        default_value_t = logging::LogFormat::Text
    )]
    pub log_format: logging::LogFormat,

    /// More on stderr: -v adds debug lines (connections, logins, commits), -vv trace.
    /// Overrides RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less on stderr: -q only warnings and errors, -qq only errors. Overrides RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (TCP on 127.0.0.1:11002, SQLite in ./txsock-data by default).
    #[command(
        after_help = "On Unix: SIGTERM and SIGINT stop gracefully (in-flight requests \
        finish; exit 0); SIGHUP reopens the audit logs (log rotation), \
        reloads the TLS certificate and key, and reads txsock.toml again, applying the \
        settings that can change while serving (log-filter, registration, min-iterations, \
        idle-timeout, login-deadline, max-bad-frames and the lockout settings) and logging \
        any other changed setting as needing a restart; connections stay open. Under systemd \
        (Type=notify-reload or notify) it sends READY=1 once listening, RELOADING=1 then \
        READY=1 around a reload, STOPPING=1 on shutdown, and WATCHDOG=1 while the ledger \
        answers if WatchdogSec= is set; docs/txsock.service is a sample unit file.\n\nExit status: 0 stopped on request; \
        1 could not start (port in use, another server on the data directory, ...); 2 invalid \
        input, or the database or data directory missing, damaged, not writable or on a full \
        disk (the message names it and says what to do)."
    )]
    Serve(serve::ServeArgs),
    /// Manage users (works whether or not a server is running).
    #[command(subcommand, after_help = admin::EXIT_HELP)]
    User(admin::UserCommand),
    /// Manage account balances.
    #[command(subcommand, after_help = admin::EXIT_HELP)]
    Account(admin::AccountCommand),
    /// Inspect the ledger.
    #[command(subcommand)]
    Ledger(admin::LedgerCommand),
    /// The terminal client: an interactive menu, or one scriptable subcommand.
    Client(client::ClientArgs),
    /// TESTING TOOL: a man-in-the-middle proxy that attacks the traffic it forwards.
    Mitm(mitm::MitmArgs),
    /// See it work: a server, attacks through a proxy, and a client that catches them.
    Demo(demo::DemoArgs),
    /// Load and attack generator: throughput, latency, server memory, a report with plots.
    Stress(stress::StressArgs),
    /// Certificates for TLS (`cert self-signed` for development and tests).
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Print a shell completion script, e.g. `txsock completions bash >
    /// /etc/bash_completion.d/txsock` (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `txsock man > /usr/local/share/man/man1/txsock.1`.
    Man,
}

/// Where the ledger lives; shared by `serve` and the admin commands.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Directory for the SQLite database and the audit logs.
    #[arg(long, env = "TXSOCK_DATA_DIR", default_value = "txsock-data")]
    pub data_dir: PathBuf,

    /// Database: SQLite as `sqlite://PATH` or a plain path (default: DATA_DIR/txsock.db), or
    /// MySQL/MariaDB as `mysql://USER:PASS@HOST:PORT/DB`, which several servers can share
    /// (the data directory then holds only this process's audit logs). Other schemes are
    /// refused. `serve` and `user add` create the database and schema if missing; `user
    /// list` and `ledger check` open an existing one read-only and create nothing.
    #[arg(long, env = "TXSOCK_DB")]
    pub db: Option<String>,
}

impl StorageArgs {
    /// Where the database is: `--db`, else `DATA_DIR/txsock.db`.
    pub fn location(&self) -> Result<store::Location> {
        match &self.db {
            // An unknown scheme is invalid input: exit status 2, as for a usage error.
            Some(url) => {
                store::Location::parse(url).map_err(|e| store::Invalid(format!("{e:#}")).into())
            }
            None => Ok(store::Location::Sqlite(self.data_dir.join("txsock.db"))),
        }
    }

    /// Checks `--db` without opening anything (to fail before asking for a password).
    pub fn validate(&self) -> Result<()> {
        self.location().map(drop)
    }

    /// Opens the store and returns it with the data directory, both created if missing
    /// (`serve`, `user add`). A failure is a [`store::storage_failure`] naming the database.
    pub fn open(&self, opening_balance: Amount) -> Result<(Box<dyn store::Store>, PathBuf)> {
        // An invalid `--db` must not leave a data directory behind.
        let location = self.location()?;
        let failed = |e| store::storage_failure(&location, e);
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data directory {}", self.data_dir.display()))
            .map_err(failed)?;
        let store =
            store::open_at(&location, opening_balance, store::Access::Create).map_err(failed)?;
        Ok((store, self.data_dir.clone()))
    }

    /// Opens an existing store as `access` says ([`store::Access::Existing`] or
    /// [`store::Access::ReadOnly`]); creates nothing, and names the missing data directory
    /// or database if there is none. A failure is a [`store::storage_failure`].
    pub fn open_existing(&self, access: store::Access) -> Result<Box<dyn store::Store>> {
        let location = self.location()?;
        let failed = |e| store::storage_failure(&location, e);
        if self.db.is_none() && !self.data_dir.is_dir() {
            return Err(failed(anyhow::anyhow!(
                "data directory {} does not exist (nothing was created; check --data-dir or \
                 TXSOCK_DATA_DIR)",
                self.data_dir.display()
            )));
        }
        store::open_at(&location, Amount(0), access).map_err(failed)
    }

    /// Marks `e`, from an operation on this store, as a failure of its database (unless it
    /// is the ledger's refusal).
    pub fn failed(&self, e: anyhow::Error) -> anyhow::Error {
        match self.location() {
            Ok(location) => store::storage_failure(&location, e),
            Err(_) => e,
        }
    }
}

fn main() -> ExitCode {
    let cli = config::parse();
    let log_filter = match &cli.command {
        Command::Serve(args) => args.log_filter.as_deref(),
        _ => None,
    };
    match logging::filter(i16::from(cli.verbose) - i16::from(cli.quiet), log_filter) {
        Ok(filter) => logging::init(cli.log_format, filter),
        Err(e) => {
            eprintln!("txsock: invalid input: {e} (check --log-filter, TXSOCK_LOG_FILTER or `log-filter` in txsock.toml)");
            return ExitCode::from(2);
        }
    }
    let result = match cli.command {
        Command::Serve(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve::run(args))),
        Command::User(cmd) => admin::user(cmd),
        Command::Account(cmd) => admin::account(cmd),
        Command::Ledger(cmd) => return admin::ledger(cmd),
        Command::Client(args) => return client::run(args),
        Command::Demo(args) => return demo::run(args),
        Command::Mitm(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(mitm::run(args))),
        Command::Stress(args) => stress::run(args),
        Command::Cert(command) => cert::run(command),
        Command::Completions { shell } => manual::completions(shell),
        Command::Man => manual::man(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => store::report(&e),
    }
}
