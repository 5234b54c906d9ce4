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
mod mitm;
mod serve;
mod store;
mod stress;
mod tls;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use txsock_core::Amount;

/// Authenticated money transfers over TCP.
///
/// Every setting can also come from a `TXSOCK_*` environment variable or from `txsock.toml`
/// in the current directory (keys are the long option names); command-line flags win.
#[derive(Debug, Parser)]
#[command(
    name = "txsock",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Settings file; its keys are long option names, e.g. `listen = "127.0.0.1:11002"`.
    #[arg(
        long,
        global = true,
        env = "TXSOCK_CONFIG",
        default_value = "txsock.toml"
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (TCP on 127.0.0.1:11002, SQLite in ./txsock-data by default).
    #[command(
        after_help = "On Unix: SIGTERM and SIGINT stop gracefully (in-flight requests \
        finish; exit 0); SIGHUP reopens the audit logs (log rotation) \
        and reloads the TLS certificate and key (connections stay open). Under systemd \
        (Type=notify) it sends READY=1 once listening and STOPPING=1 on shutdown; \
        docs/txsock.service is a sample unit file."
    )]
    Serve(serve::ServeArgs),
    /// Manage users (works whether or not a server is running).
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Manage account balances.
    #[command(subcommand)]
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
            Some(url) => store::Location::parse(url),
            None => Ok(store::Location::Sqlite(self.data_dir.join("txsock.db"))),
        }
    }

    /// Checks `--db` without opening anything (to fail before asking for a password).
    pub fn validate(&self) -> Result<()> {
        self.location().map(drop)
    }

    /// Opens the store and returns it with the data directory, both created if missing
    /// (`serve`, `user add`).
    pub fn open(&self, opening_balance: Amount) -> Result<(Box<dyn store::Store>, PathBuf)> {
        // An invalid `--db` must not leave a data directory behind.
        let location = self.location()?;
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create data directory {}: {e}",
                self.data_dir.display()
            )
        })?;
        let store = store::open_at(&location, opening_balance, store::Access::Create)?;
        Ok((store, self.data_dir.clone()))
    }

    /// Opens an existing store as `access` says ([`store::Access::Existing`] or
    /// [`store::Access::ReadOnly`]); creates nothing, and names the missing data directory
    /// or database if there is none.
    pub fn open_existing(&self, access: store::Access) -> Result<Box<dyn store::Store>> {
        let location = self.location()?;
        if self.db.is_none() && !self.data_dir.is_dir() {
            anyhow::bail!(
                "data directory {} does not exist (nothing was created; check --data-dir or \
                 TXSOCK_DATA_DIR)",
                self.data_dir.display()
            );
        }
        store::open_at(&location, Amount(0), access)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = config::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("txsock: {e:#}");
            ExitCode::FAILURE
        }
    }
}
