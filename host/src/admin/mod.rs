//! Admin subcommands: `user add|list|lock|unlock`, `account deposit`, `ledger check`.
//! They open the same store as `serve` and work whether or not a server is running.

use crate::clock::{stamp_millis, unix_millis};
use crate::store::{Access, Invalid};
use crate::StorageArgs;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use txsock_core::auth::{Verifier, DEFAULT_ITERATIONS, SALT_LEN};
use txsock_core::names::check_password;
use txsock_core::session::ServerConfig;
use txsock_core::{Amount, Username};

/// The admin commands' exit statuses, shown by `--help` (the same for a storage failure as
/// `serve` and `ledger check`).
pub const EXIT_HELP: &str = "Exit status:
  0  done
  1  local error (e.g. no terminal to ask for the password)
  2  invalid input or usage, or the database missing, unreachable, damaged, not writable or
     on a full disk: nothing was done (the message names the database and says what to do)
  3  refused by the ledger: the user exists, no such user, the balance would pass the ceiling";

/// The server's default minimum PBKDF2 iteration count (`serve --min-iterations`).
const MIN_ITERATIONS: u32 = ServerConfig::DEFAULT.min_iterations;

fn parse_amount(s: &str) -> Result<Amount, String> {
    Amount::parse(s).map_err(|e| e.to_string())
}

fn parse_balance(s: &str) -> Result<Amount, String> {
    Amount::parse_non_negative(s).map_err(|e| e.to_string())
}

fn parse_user(s: &str) -> Result<Username, String> {
    Username::parse(s).map_err(|e| format!("invalid username: {e}"))
}

/// `txsock user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password comes from the first line of stdin with
    /// --password-stdin, else from TXSOCK_PASSWORD, else it is asked without echo (twice).
    #[command(after_help = EXIT_HELP)]
    Add {
        /// Username: 1-32 of a-z 0-9 _ . - (case-insensitive).
        #[arg(value_parser = parse_user)]
        name: Username,
        /// Opening balance, e.g. 100.00 (journaled as a deposit).
        #[arg(long, default_value = "0", value_parser = parse_balance)]
        balance: Amount,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// PBKDF2 iterations for the user's verifier [default: 600000, or --min-iterations if
        /// higher]. Fewer than --min-iterations is refused: the server would refuse the login.
        #[arg(long)]
        iterations: Option<u32>,
        /// The server's minimum PBKDF2 iteration count (the same setting as `serve
        /// --min-iterations`, so `txsock.toml` and TXSOCK_MIN_ITERATIONS apply to both).
        #[arg(long, env = "TXSOCK_MIN_ITERATIONS", default_value_t = MIN_ITERATIONS)]
        min_iterations: u32,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// List users with balances and lock state (opens the database read-only and creates
    /// nothing).
    #[command(after_help = EXIT_HELP)]
    List {
        /// One JSON object per user on stdout: name, balance (a decimal string, as the
        /// protocol writes amounts), admin_locked, locked_until (ISO 8601 or null),
        /// failed_logins.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Lock a user out until unlocked (open sessions are not affected).
    #[command(after_help = EXIT_HELP)]
    Lock {
        /// Username.
        #[arg(value_parser = parse_user)]
        name: Username,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Unlock a user and clear their failed logins.
    #[command(after_help = EXIT_HELP)]
    Unlock {
        /// Username.
        #[arg(value_parser = parse_user)]
        name: Username,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

/// `txsock account …`.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add money to an account (creates money; journaled as a deposit).
    #[command(after_help = EXIT_HELP)]
    Deposit {
        /// Username.
        #[arg(value_parser = parse_user)]
        name: Username,
        /// Amount, e.g. 25.50.
        #[arg(value_parser = parse_amount)]
        amount: Amount,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

/// `txsock ledger …`.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Verify the database file (SQLite's integrity check, MySQL's CHECK TABLE), then that
    /// every balance equals its journal and that money is conserved. Opens the database
    /// read-only and creates nothing.
    ///
    /// Exit status: 0 consistent; 1 problems found (listed: a damaged database, or balances
    /// that disagree with the journal); 2 not checked (no such data directory or database,
    /// not a txsock database, database unreachable, invalid --db).
    Check {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

/// Reads a password: from stdin's first line, else from `TXSOCK_PASSWORD` (as the client
/// does), else from a no-echo prompt (asked twice).
fn read_password(from_stdin: bool) -> Result<String> {
    if !from_stdin {
        if let Ok(password) = std::env::var("TXSOCK_PASSWORD") {
            return Ok(password);
        }
    }
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password; use --password-stdin or set TXSOCK_PASSWORD");
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Repeat password: ")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

/// Runs `txsock user …`.
pub fn user(cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            balance,
            password_stdin,
            iterations,
            min_iterations,
            storage,
        } => {
            storage.validate()?;
            let iterations = iterations.unwrap_or(DEFAULT_ITERATIONS.max(min_iterations));
            if iterations < min_iterations {
                return Err(Invalid(format!(
                    "--iterations {iterations} is below the server's minimum of {min_iterations} \
                     PBKDF2 iterations (--min-iterations): the server would refuse every \
                     login of this user; use at least {min_iterations}"
                ))
                .into());
            }
            if iterations > txsock_core::auth::MAX_ITERATIONS {
                return Err(Invalid(format!(
                    "--iterations {iterations} is above {}, the most a conforming client runs \
                     at login (docs/PROTOCOL.md): no client could log in as this user",
                    txsock_core::auth::MAX_ITERATIONS
                ))
                .into());
            }
            let password = read_password(password_stdin)?;
            check_password(&password).map_err(|e| {
                Invalid(format!(
                    "password {e}: use at least 8 characters, at most 128 bytes, no control \
                     characters"
                ))
            })?;
            let (mut store, _) = storage.open(Amount(0))?;
            let mut salt = [0u8; SALT_LEN];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
            let verifier = Verifier::from_password(password.as_bytes(), &salt, iterations);
            store
                .add_user(&name, &verifier, balance, unix_millis())
                .map_err(|e| storage.failed(e))?;
            println!("created user {name} with balance {balance}");
        }
        UserCommand::List { json, storage } => {
            let users = storage
                .open_existing(Access::ReadOnly)?
                .list_users()
                .map_err(|e| storage.failed(e))?;
            let now = unix_millis();
            if json {
                for u in &users {
                    let locked_until =
                        (u.locked_until_ms > now).then(|| stamp_millis(u.locked_until_ms));
                    println!(
                        "{}",
                        serde_json::json!({
                            "name": u.name,
                            "balance": u.balance.to_string(),
                            "admin_locked": u.admin_locked,
                            "locked_until": locked_until,
                            "failed_logins": u.failures,
                        })
                    );
                }
                return Ok(());
            }
            println!("{:<32} {:>20}  state", "user", "balance");
            for u in &users {
                let state = if u.admin_locked {
                    "locked by admin".to_string()
                } else if u.locked_until_ms > now {
                    format!(
                        "locked until {} ({} failed logins)",
                        stamp_millis(u.locked_until_ms),
                        u.failures
                    )
                } else if u.failures > 0 {
                    format!("active ({} failed logins)", u.failures)
                } else {
                    "active".to_string()
                };
                println!("{:<32} {:>20}  {state}", u.name, u.balance.to_string());
            }
            println!("{} users", users.len());
        }
        UserCommand::Lock { name, storage } => {
            storage
                .open_existing(Access::Existing)?
                .set_admin_lock(&name, true)
                .map_err(|e| storage.failed(e))?;
            println!(
                "locked {name}: every login is refused, with the same answer as a wrong \
                 password, until `txsock user unlock {name}` (open sessions are not affected)"
            );
        }
        UserCommand::Unlock { name, storage } => {
            storage
                .open_existing(Access::Existing)?
                .set_admin_lock(&name, false)
                .map_err(|e| storage.failed(e))?;
            println!("unlocked {name}");
        }
    }
    Ok(())
}

/// Runs `txsock account …`.
pub fn account(cmd: AccountCommand) -> Result<()> {
    match cmd {
        AccountCommand::Deposit {
            name,
            amount,
            storage,
        } => {
            let mut store = storage.open_existing(Access::Existing)?;
            let balance = store
                .deposit(&name, amount, unix_millis())
                .map_err(|e| storage.failed(e))?;
            println!("deposited {amount} to {name}; balance {balance}");
        }
    }
    Ok(())
}

/// Runs `txsock ledger …`: exit 0 when the ledger is consistent, 1 when problems were found
/// (a damaged database file or tables, or an accounting mismatch), 2 when it could not be
/// checked (no such database, not a txsock database, unreachable server, invalid `--db`).
pub fn ledger(cmd: LedgerCommand) -> ExitCode {
    let LedgerCommand::Check { storage } = cmd;
    // Not checked: the same words and status as any command's storage failure.
    let failed = |e: anyhow::Error| {
        crate::store::report(&storage.failed(e));
        ExitCode::from(crate::store::EXIT_STORAGE)
    };
    let mut store = match storage.open_existing(Access::ReadOnly) {
        Ok(store) => store,
        Err(e) => return failed(e),
    };
    // The database's own check first: the accounting below means nothing on damaged pages.
    match store.integrity() {
        Ok(damage) if damage.is_empty() => {}
        Ok(damage) => {
            for p in &damage {
                println!("PROBLEM: {p}");
            }
            println!(
                "ledger CORRUPT: the database failed its integrity check ({} problems); \
                 restore it from a backup",
                damage.len()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => return failed(e),
    }
    let report = match store.check() {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let fmt = crate::store::row::fmt_i128;
    let relation = if report.total == report.minted {
        "="
    } else {
        "!="
    };
    println!(
        "{} accounts, {} journal entries, balances {} {relation} deposits {}",
        report.accounts,
        report.entries,
        fmt(report.total),
        fmt(report.minted)
    );
    if report.problems.is_empty() {
        println!("ledger OK");
        ExitCode::SUCCESS
    } else {
        for p in &report.problems {
            println!("PROBLEM: {p}");
        }
        println!("ledger INCONSISTENT: {} problems", report.problems.len());
        ExitCode::FAILURE
    }
}
