//! `txsock client`: the terminal client, interactive (a menu, like a terminal banking client)
//! or scriptable (one subcommand per run, exit codes, `--json`).
//!
//! The protocol is entirely the core's: [`account`] drives the core `BlockingClient` over a
//! std `TcpStream` and only decides when to reconnect and retry; [`human`] turns error codes
//! and integrity failures into sentences. Every input is validated before anything is sent.

mod account;
pub mod failover;
mod human;
mod interactive;

use account::{Account, Alert, Failure, Link, Outcome, Sink, TransferItem, TransferReport};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;
use txsock_core::auth::DEFAULT_ITERATIONS;
use txsock_core::ledger::EntryKind;
use txsock_core::names::check_password;
use txsock_core::session::ClientConfig;
use txsock_core::{Amount, ErrorCode, TransferId, Username};

/// Exit status: the command's input was invalid (also clap's status for usage errors).
pub const EXIT_INPUT: u8 = 2;
/// Exit status: the server refused (wrong password, insufficient funds, name taken, ...).
pub const EXIT_REFUSED: u8 = 3;
/// Exit status: an answer failed verification, or a request was altered on the way.
pub const EXIT_INTEGRITY: u8 = 4;
/// Exit status: no connection, or no answer (the outcome may be unknown).
pub const EXIT_CONNECTION: u8 = 5;

/// Most transfers one `transfer` command sends.
const MAX_TRANSFERS: usize = 16;

const EXIT_HELP: &str = "\
Password: from the first line of standard input with --password-stdin, else from the
TXSOCK_PASSWORD environment variable, else asked without echo on a terminal. Never an argument.

Exit status:
  0  success (every transfer committed)
  1  local error (e.g. standard input unreadable)
  2  invalid input or usage (nothing was sent)
  3  refused by the server (wrong password or locked out, insufficient funds, unknown
     recipient, name taken, ...): a definite answer
  4  integrity failure: a forged, altered, replayed or reordered message was detected
     (the output says what was verified afterwards)
  5  connection failure: no connection or no answer; a transfer's outcome may be unknown
     (re-run with the same --id: a retry never moves money twice). Also every TLS failure,
     with its reason: a certificate from an unknown CA, for another name, or expired; a
     plaintext server reached with --tls, or a TLS server without it

Examples:
  txsock client                                   # interactive menu
  TXSOCK_PASSWORD=... txsock client --user alice register
  txsock client --user alice --password-stdin balance < pw.txt
  txsock client --user alice --json transfer bob 12.50 --id rent-2026-01
  txsock client --user alice transfer bob 1.00 carol 2.50   # two transfers, pipelined
  txsock client --server bank.example:11002 --tls --user alice balance   # system CAs
  txsock client --tls --ca certs/ca.pem --user alice balance   # txsock cert self-signed

A transfer id sent again gets its original outcome and moves nothing: the client says
\"already committed earlier, nothing moved\" (--json: \"already_committed\": true) and shows the
balance recorded then beside the current one (\"balance\" and \"balance_now\"). It tells a
re-sent id from the authenticated history before and after sending (\"already_committed\":
null when it cannot: more than a page of transfers committed meanwhile).";

/// Parses `--timeout`: whole seconds or a duration, 1 s to 1 h.
fn client_timeout(text: &str) -> Result<u64, String> {
    let secs = crate::config::seconds(text)?;
    if (1..=3600).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("`{text}` is outside 1 s to 1 h"))
    }
}

/// Options of `txsock client`.
#[derive(Debug, Args)]
#[command(after_long_help = EXIT_HELP)]
pub struct ClientArgs {
    /// Server address, HOST:PORT; or several servers of one ledger, HOST:PORT,HOST:PORT,...:
    /// the client uses the first that answers and moves to the next when one cannot be
    /// reached, drops the connection or answers `internal`, logging in again and re-sending a
    /// pending transfer with the same id (the ledger answers it with its original outcome).
    #[arg(
        long,
        global = true,
        env = "TXSOCK_SERVER",
        default_value = "127.0.0.1:11002",
        value_parser = failover::parse
    )]
    pub server: String,

    /// Username (required by the subcommands; the menu asks for it).
    #[arg(long, short = 'u', global = true, env = "TXSOCK_USER")]
    pub user: Option<String>,

    /// Read the password from the first line of standard input.
    #[arg(long, global = true)]
    pub password_stdin: bool,

    /// Print one JSON object per result on stdout (warnings still go to stderr).
    #[arg(long, global = true, env = "TXSOCK_JSON")]
    pub json: bool,

    /// Lowest PBKDF2 iteration count accepted at login; registration uses this count too.
    /// A server (or man in the middle) offering fewer is refused before the password is used.
    /// Its variable is TXSOCK_CLIENT_MIN_ITERATIONS, not the server's TXSOCK_MIN_ITERATIONS,
    /// so that a shell set up for a test server does not weaken the client.
    #[arg(long, global = true, default_value_t = DEFAULT_ITERATIONS,
          env = "TXSOCK_CLIENT_MIN_ITERATIONS",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub min_iterations: u32,

    /// Seconds (or a duration: 10s, 1m) to wait for a connection and for each answer, 1 s
    /// to 1 h.
    #[arg(long, global = true, default_value_t = 10, env = "TXSOCK_TIMEOUT",
          value_parser = client_timeout)]
    pub timeout: u64,

    /// Connections tried for one request before giving up; a transfer whose answer was lost
    /// or could not be verified is retried with the same id on a new connection.
    #[arg(long, global = true, default_value_t = 3, env = "TXSOCK_ATTEMPTS",
          value_parser = clap::value_parser!(u32).range(1..=10))]
    pub attempts: u32,

    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,

    #[command(subcommand)]
    pub command: Option<ClientCommand>,
}

/// The scriptable subcommands; without one, the client shows its menu.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create the account. The SCRAM verifier is computed here: the password is never sent.
    Register,
    /// Print the verified balance.
    Balance,
    /// Print the verified history, newest first: transfers sent and received, and deposits
    /// (the opening balance, an administrator's `account deposit`).
    History {
        /// Most entries to print.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Send money: `transfer TO AMOUNT [TO AMOUNT ...]` (several are pipelined).
    Transfer {
        /// Recipient and amount (e.g. `bob 12.50`), repeated for more transfers.
        #[arg(value_names = ["TO", "AMOUNT"], num_args = 2.., required = true,
              allow_negative_numbers = true)]
        pairs: Vec<String>,
        /// Transfer id (idempotency key), one per transfer; default: a random one. Re-running
        /// with the same id returns the original result and never moves money twice.
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
    },
}

impl ClientArgs {
    fn link(&self) -> Link {
        Link {
            // clap checked it with `failover::parse`.
            servers: failover::Servers::parse(&self.server).expect("a checked --server"),
            timeout: Duration::from_secs(self.timeout),
            config: ClientConfig {
                min_iterations: self.min_iterations,
                ..ClientConfig::default()
            },
            attempts: self.attempts,
            tls: self.tls.client(&self.server),
        }
    }
}

/// Runs `txsock client`.
pub fn run(args: ClientArgs) -> ExitCode {
    match &args.command {
        None => interactive::run(&args),
        Some(command) => match script(&args, command) {
            Ok(code) => ExitCode::from(code),
            Err(Problem(code, message)) => {
                if args.json {
                    let status = if code == EXIT_INPUT {
                        "invalid_input"
                    } else {
                        "error"
                    };
                    println!("{}", json!({"status": status, "message": message}));
                }
                eprintln!("txsock client: {message}");
                ExitCode::from(code)
            }
        },
    }
}

/// An error before anything was sent: exit status and message.
#[derive(Debug)]
struct Problem(u8, String);

fn invalid(message: impl Into<String>) -> Problem {
    Problem(EXIT_INPUT, message.into())
}

/// Parses a username with a clear message.
pub(crate) fn parse_user(what: &str, s: &str) -> Result<Username, String> {
    Username::parse(s).map_err(|e| {
        format!("{what} {s:?} is not a valid username ({e}): use 1-32 of a-z 0-9 _ . - starting with a letter or digit")
    })
}

/// Parses an amount with a clear message.
pub(crate) fn parse_amount(s: &str) -> Result<Amount, String> {
    Amount::parse(s).map_err(|e| {
        format!("amount {s:?} is not valid ({e}): use a positive number with at most two decimals, e.g. 12.50")
    })
}

/// Parses a transfer id with a clear message.
pub(crate) fn parse_id(s: &str) -> Result<TransferId, String> {
    TransferId::parse(s).map_err(|e| {
        format!("transfer id {s:?} is not valid ({e}): use 1-32 of A-Z a-z 0-9 _ . : -")
    })
}

/// A fresh random transfer id, like `t-5f0c2a9d41b7`.
pub(crate) fn new_id() -> TransferId {
    let mut bytes = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // 14 characters from the allowed set.
    TransferId::parse(&format!("t-{hex}")).expect("generated id is valid")
}

fn password(args: &ClientArgs, confirm: bool) -> Result<String, Problem> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Problem(1, format!("reading the password from stdin: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if let Ok(p) = std::env::var("TXSOCK_PASSWORD") {
        p
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")
            .map_err(|e| Problem(1, format!("reading the password: {e}")))?;
        if confirm {
            let again = rpassword::prompt_password("Repeat password: ")
                .map_err(|e| Problem(1, format!("reading the password: {e}")))?;
            if again != first {
                return Err(invalid("the passwords do not match"));
            }
        }
        first
    } else {
        return Err(invalid(
            "no password: pass --password-stdin (first line of stdin) or set TXSOCK_PASSWORD",
        ));
    };
    check_password(&password).map_err(|e| {
        invalid(format!(
            "password {e}: use at least 8 characters, at most 128 bytes, no control characters"
        ))
    })?;
    Ok(password)
}

fn transfers(
    user: &Username,
    pairs: &[String],
    ids: &[String],
) -> Result<Vec<TransferItem>, Problem> {
    if pairs.len() % 2 != 0 {
        return Err(invalid("transfer takes pairs: TO AMOUNT [TO AMOUNT ...]"));
    }
    let count = pairs.len() / 2;
    if count > MAX_TRANSFERS {
        return Err(invalid(format!(
            "at most {MAX_TRANSFERS} transfers per command"
        )));
    }
    if !ids.is_empty() && ids.len() != count {
        return Err(invalid(format!(
            "give one --id per transfer ({count} transfers, {} ids) or none",
            ids.len()
        )));
    }
    let mut items: Vec<TransferItem> = Vec::with_capacity(count);
    for (n, pair) in pairs.chunks(2).enumerate() {
        let to = parse_user("recipient", &pair[0]).map_err(invalid)?;
        if &to == user {
            return Err(invalid("you cannot send money to yourself"));
        }
        let amount = parse_amount(&pair[1]).map_err(invalid)?;
        let id = match ids.get(n) {
            Some(id) => parse_id(id).map_err(invalid)?,
            None => new_id(),
        };
        if items.iter().any(|i| i.id == id) {
            return Err(invalid(format!("transfer id {id} is given twice")));
        }
        items.push(TransferItem { id, to, amount });
    }
    Ok(items)
}

fn failure_status(f: &Failure) -> (&'static str, u8) {
    match f {
        Failure::Connect(_) | Failure::Lost(_) => ("connection_failure", EXIT_CONNECTION),
        Failure::Tls(_) => ("tls_failure", EXIT_CONNECTION),
        Failure::Refused(_) => ("refused", EXIT_REFUSED),
        Failure::Integrity(_) => ("integrity_failure", EXIT_INTEGRITY),
        Failure::Local(_) => ("error", 1),
    }
}

fn alerts_json(alerts: &[Alert], min: u32) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| json!({"alert": a.name(), "message": a.describe(min)}))
            .collect(),
    )
}

/// Reports a failed request (not a transfer) and returns its exit status.
fn report_failure(args: &ClientArgs, f: &Failure, alerts: &[Alert]) -> u8 {
    let (status, mut code) = failure_status(f);
    if !alerts.is_empty() {
        code = EXIT_INTEGRITY;
    }
    let message = f.describe(args.min_iterations);
    if args.json {
        let mut v = json!({"status": status, "message": message,
                           "alerts": alerts_json(alerts, args.min_iterations)});
        if let Failure::Refused(c) = f {
            v["code"] = json!(c.name());
        }
        println!("{v}");
    } else {
        let label = status.replace('_', " ");
        println!("{label}: {message}");
    }
    code
}

fn script(args: &ClientArgs, command: &ClientCommand) -> Result<u8, Problem> {
    let Some(name) = &args.user else {
        return Err(invalid("--user NAME is required"));
    };
    let user = parse_user("user", name).map_err(invalid)?;
    let items = match command {
        ClientCommand::Transfer { pairs, ids } => transfers(&user, pairs, ids)?,
        _ => Vec::new(),
    };
    let password = password(args, matches!(command, ClientCommand::Register))?;
    let link = args.link();
    let min = args.min_iterations;

    if let ClientCommand::Register = command {
        let result = account::connect(&link).and_then(|mut c| {
            c.register(user.as_str(), &password, min)
                .map_err(|e| match e {
                    txsock_core::blocking::BlockingError::Refused(code) => Failure::Refused(code),
                    txsock_core::blocking::BlockingError::Integrity(e) => Failure::Integrity(e),
                    other => Failure::Lost(format!(
                        "{other}; the account may or may not exist: try logging in"
                    )),
                })
        });
        return Ok(match result {
            Ok(()) => {
                if args.json {
                    println!("{}", json!({"status": "registered", "user": user.as_str()}));
                } else {
                    println!("registered {user}");
                }
                0
            }
            Err(f) => report_failure(args, &f, &[]),
        });
    }

    let mut account = Account::new(link, user.clone(), password, Sink::Stderr);
    let code = match command {
        ClientCommand::Balance => match account.balance() {
            Ok(balance) => {
                if args.json {
                    println!(
                        "{}",
                        json!({"status": "ok", "user": user.as_str(), "balance": balance.to_string(),
                               "alerts": alerts_json(&account.alerts, min)})
                    );
                } else {
                    println!("balance of {user}: {balance}");
                }
                if account.alerts.is_empty() {
                    0
                } else {
                    EXIT_INTEGRITY
                }
            }
            Err(f) => report_failure(args, &f, &account.alerts),
        },
        ClientCommand::History { limit } => match account.history(*limit as usize) {
            Ok(history) => {
                if args.json {
                    let list: Vec<Value> = history
                        .entries
                        .iter()
                        .map(|e| {
                            // ISO 8601 as in the text, and the milliseconds the MAC covers.
                            let at = (e.at != 0).then(|| crate::clock::stamp_millis(e.at));
                            // A deposit has no id and no sender: null, as in the protocol
                            // where the fields are absent.
                            let kind = match e.kind {
                                EntryKind::Transfer { .. } => "transfer",
                                EntryKind::Deposit => "deposit",
                            };
                            json!({"kind": kind, "id": e.id().map(TransferId::as_str),
                                   "from": e.from().map(Username::as_str), "to": e.to.as_str(),
                                   "amount": e.amount.to_string(), "at": at, "at_ms": e.at})
                        })
                        .collect();
                    println!(
                        "{}",
                        json!({"status": "ok", "user": user.as_str(), "entries": list,
                               "more": history.more, "deposits_listed": history.deposits,
                               "alerts": alerts_json(&account.alerts, min)})
                    );
                } else {
                    if history.entries.is_empty() {
                        println!("nothing yet: no transfers or deposits");
                    } else {
                        println!("{}", interactive::HISTORY_HEADER);
                    }
                    for e in &history.entries {
                        println!("{}", interactive::history_line(&user, e));
                    }
                    if history.more {
                        println!("(older entries exist: raise --limit)");
                    }
                    if !history.deposits {
                        println!("{}", interactive::DEPOSITS_NOT_LISTED);
                    }
                }
                if account.alerts.is_empty() {
                    0
                } else {
                    EXIT_INTEGRITY
                }
            }
            Err(f) => report_failure(args, &f, &account.alerts),
        },
        ClientCommand::Transfer { .. } => {
            let reports = account.transfer(&items);
            let mut code = 0;
            for r in &reports {
                code = worse(code, transfer_exit(r));
                print_transfer(args, &user, r);
            }
            if !account.alerts.is_empty() {
                code = EXIT_INTEGRITY;
            }
            code
        }
        ClientCommand::Register => unreachable!("handled above"),
    };
    account.logout();
    Ok(code)
}

/// Exit status of one transfer's report.
fn transfer_exit(r: &TransferReport) -> u8 {
    if !r.alerts.is_empty() {
        return EXIT_INTEGRITY;
    }
    match &r.outcome {
        Outcome::Committed { .. } => 0,
        Outcome::Refused { .. } => EXIT_REFUSED,
        Outcome::Unknown { last } if r.sends == 0 => failure_status(last).1,
        Outcome::Unknown {
            last: Failure::Integrity(_),
        } => EXIT_INTEGRITY,
        Outcome::Unknown { .. } => EXIT_CONNECTION,
    }
}

/// The more serious of two exit statuses: integrity, then connection, then refusal.
fn worse(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        EXIT_INTEGRITY => 4,
        EXIT_CONNECTION => 3,
        EXIT_REFUSED => 2,
        0 => 0,
        _ => 1,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The code with which the server refused every send of `r` as a frame altered in transit
/// (`bad_mac`, `malformed`, ...), if it did. Such a frame moves nothing, so the outcome is
/// known within what the protocol can prove (the `error` frame itself is not signed).
/// `unknown_nonce` is not one: the genuine frame may have used the nonce first.
fn refused_as_altered(r: &TransferReport) -> Option<ErrorCode> {
    let Outcome::Unknown {
        last: Failure::Refused(code),
    } = &r.outcome
    else {
        return None;
    };
    let altered = |c: &ErrorCode| c.means_altered_in_transit() && *c != ErrorCode::UnknownNonce;
    let every_send = r
        .alerts
        .iter()
        .filter(|a| matches!(a, Alert::Altered(c) if altered(c)))
        .count()
        == r.sends as usize;
    (r.sends > 0 && every_send && altered(code)).then_some(*code)
}

/// One line (or JSON object) for a transfer's fate.
pub(crate) fn transfer_text(user: &Username, r: &TransferReport, min: u32) -> String {
    let what = format!(
        "{user} -> {} {} (id {})",
        r.item.to, r.item.amount, r.item.id
    );
    let after_attack = if r.alerts.is_empty() {
        ""
    } else {
        " (verified after the attack reported above)"
    };
    let text = match &r.outcome {
        Outcome::Committed { balance } => {
            let note = if r.sends > 1 {
                format!(" — confirmed by the server on attempt {}", r.sends)
            } else {
                String::new()
            };
            let now = match r.balance_now {
                Some(now) => format!("; your balance now is {now}"),
                None => String::new(),
            };
            match r.earlier {
                Some(false) => format!("committed: {what}; your balance is now {balance}{note}"),
                Some(true) => format!(
                    "already committed earlier, nothing moved: {what}; the balance recorded \
                     right after it then was {balance}{now}"
                ),
                None => format!(
                    "committed (by this request or an earlier one with this id; money moved \
                     once): {what}; the balance recorded right after it was {balance}{now}{note}"
                ),
            }
        }
        Outcome::Refused { code, balance } => format!(
            "refused: {what}: {}; nothing moved; your balance when it was refused: {balance}",
            human::refusal(*code)
        ),
        Outcome::Unknown { last } if r.sends == 0 => {
            format!("not sent: {what}: {}", last.describe(min))
        }
        Outcome::Unknown { .. } if refused_as_altered(r).is_some() => {
            format!(
            "NOT DONE, altered on the way: {what}: the server refused {} as altered in transit \
             ({}), and an altered transfer moves no money. That refusal is not signed: to be \
             certain, run the same transfer again with --id {} over a network you trust (a \
             retry never moves money twice)",
            if r.sends == 1 { "it".to_string() } else { format!("all {} attempts", r.sends) },
            refused_as_altered(r).map_or("", ErrorCode::name),
            r.item.id
        )
        }
        Outcome::Unknown { last } => format!(
            "UNKNOWN outcome: {what}: no verified answer after {} attempt(s) ({}). Run the same \
             transfer again with --id {} to learn its fate: a retry never moves money twice",
            r.sends,
            last.describe(min),
            r.item.id
        ),
    };
    match r.outcome {
        Outcome::Unknown { .. } => text,
        _ => format!("{text}{after_attack}"),
    }
}

fn print_transfer(args: &ClientArgs, user: &Username, r: &TransferReport) {
    let min = args.min_iterations;
    if !args.json {
        println!("{}", transfer_text(user, r, min));
        return;
    }
    let mut v = json!({
        "id": r.item.id.as_str(),
        "from": user.as_str(),
        "to": r.item.to.as_str(),
        "amount": r.item.amount.to_string(),
        "sends": r.sends,
        "alerts": alerts_json(&r.alerts, min),
    });
    match &r.outcome {
        Outcome::Committed { balance } => {
            v["status"] = json!("committed");
            // The sender's balance recorded right after the transfer (for a re-sent id, an
            // old one: `balance_now` is the current one).
            v["balance"] = json!(balance.to_string());
            v["already_committed"] = json!(r.earlier);
            if r.earlier == Some(true) {
                v["message"] = json!("already committed earlier, nothing moved");
            }
            if let Some(now) = r.balance_now {
                v["balance_now"] = json!(now.to_string());
            }
        }
        Outcome::Refused { code, balance } => {
            v["status"] = json!("refused");
            v["code"] = json!(code.name());
            v["message"] = json!(human::refusal(*code));
            v["balance"] = json!(balance.to_string());
        }
        Outcome::Unknown { .. } if refused_as_altered(r).is_some() => {
            v["status"] = json!("altered");
            v["code"] = json!(refused_as_altered(r).map(ErrorCode::name));
            v["message"] = json!(transfer_text(user, r, min));
        }
        Outcome::Unknown { last } => {
            v["status"] = json!(if r.sends == 0 { "not_sent" } else { "unknown" });
            v["message"] = json!(last.describe(min));
            if let Failure::Refused(code) = last {
                v["code"] = json!(code.name());
            }
        }
    }
    println!("{v}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use txsock_core::ErrorCode;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn user() -> Username {
        Username::parse("alice").unwrap()
    }

    #[test]
    fn transfers_are_validated_before_anything_is_sent() {
        let items = transfers(&user(), &strings(&["Bob", "12.5", "carol", "1"]), &[]).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0].to.as_str(), items[0].amount),
            ("bob", Amount(1250))
        );
        assert_ne!(items[0].id, items[1].id, "generated ids are distinct");
        let with_ids = transfers(&user(), &strings(&["bob", "1"]), &strings(&["k1"])).unwrap();
        assert_eq!(with_ids[0].id.as_str(), "k1");
        let bad: &[(&[&str], &[&str], &str)] = &[
            (&["bob"], &[], "pairs"),
            (&["bob", "0"], &[], "amount"),
            (&["bob", "1.001"], &[], "amount"),
            (&["ALICE", "1"], &[], "yourself"),
            (&["b b", "1"], &[], "username"),
            (&["bob", "1", "carol", "2"], &["x"], "one --id per transfer"),
            (&["bob", "1", "carol", "2"], &["x", "x"], "twice"),
            (&["bob", "1"], &["bad id"], "transfer id"),
        ];
        for (pairs, ids, message) in bad {
            let Err(Problem(code, text)) = transfers(&user(), &strings(pairs), &strings(ids))
            else {
                panic!("{pairs:?} {ids:?} accepted");
            };
            assert_eq!(code, EXIT_INPUT);
            assert!(text.contains(message), "{pairs:?}: {text}");
        }
        let many: Vec<String> = (0..=MAX_TRANSFERS)
            .flat_map(|_| ["bob".to_string(), "1".to_string()])
            .collect();
        assert!(transfers(&user(), &many, &[]).is_err());
    }

    #[test]
    fn exit_status_ranks_integrity_over_connection_over_refusal() {
        assert_eq!(worse(0, EXIT_REFUSED), EXIT_REFUSED);
        assert_eq!(worse(EXIT_CONNECTION, EXIT_REFUSED), EXIT_CONNECTION);
        assert_eq!(worse(EXIT_CONNECTION, EXIT_INTEGRITY), EXIT_INTEGRITY);
        assert_eq!(worse(EXIT_INTEGRITY, 0), EXIT_INTEGRITY);
        let item = TransferItem {
            id: new_id(),
            to: Username::parse("bob").unwrap(),
            amount: Amount(100),
        };
        let report = |outcome, sends, alerts: Vec<Alert>| TransferReport {
            item: item.clone(),
            outcome,
            sends,
            alerts,
            earlier: None,
            balance_now: None,
        };
        let committed = Outcome::Committed { balance: Amount(0) };
        assert_eq!(transfer_exit(&report(committed.clone(), 1, vec![])), 0);
        let forged = Alert::Integrity(txsock_core::session::IntegrityError::ForgedReceipt);
        assert_eq!(
            transfer_exit(&report(committed, 2, vec![forged])),
            EXIT_INTEGRITY
        );
        let lost = Outcome::Unknown {
            last: Failure::Lost("no reply".into()),
        };
        assert_eq!(transfer_exit(&report(lost, 3, vec![])), EXIT_CONNECTION);
        let login_refused = Outcome::Unknown {
            last: Failure::Refused(ErrorCode::AuthFailed),
        };
        assert_eq!(
            transfer_exit(&report(login_refused, 0, vec![])),
            EXIT_REFUSED
        );
    }
}
