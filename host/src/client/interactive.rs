//! The interactive menu: register, log in, balance, transfer, history, log out, quit.
//!
//! On a terminal, answers are read with a line editor (rustyline: editing keys, Up for the
//! session's earlier answers, nothing written to disk) and passwords without echo;
//! otherwise, for scripted use, every answer and password is the next input line. Every
//! input is checked before it is sent.

use super::account::{self, Account, Failure, Sink, TransferItem};
use super::{new_id, parse_amount, parse_user, ClientArgs};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use txsock_core::blocking::BlockingError;
use txsock_core::ledger::{EntryKind, HistoryEntry};
use txsock_core::names::check_password;
use txsock_core::Username;

/// The menu's help before login (`?`, `help`).
const HELP_LOGGED_OUT: &str = "\
Choices (the number, the letter or the word):
  1, r, register  create an account: the password never leaves this machine (a SCRAM
                  verifier is computed here), then log in
  2, l, login     log in; the server must prove it knows your account's verifier
  q, quit         leave (an empty line does nothing)
End of input quits. `txsock client --help` lists the scriptable commands (balance,
transfer, history) and their exit statuses.";

/// The menu's help once logged in.
const HELP_LOGGED_IN: &str = "\
Choices (the number, the letter or the word):
  1, b, balance   the balance, authenticated by the server's MAC
  2, t, transfer  send money: recipient, amount, then confirm; the receipt is verified
                  and a lost answer is retried with the same id (never moves money twice)
  3, h, history   your latest transfers and deposits, newest first, each authenticated
  4, o, logout    end the session
  q, quit         log out and leave";

/// History entries shown by the menu.
const HISTORY_SHOWN: usize = 10;

/// Said under a history read from a server older than statements.
pub(crate) const DEPOSITS_NOT_LISTED: &str =
    "(this server lists transfers only: deposits are not shown; upgrade the server to see them)";

/// The header row above [`history_line`]s, aligned with them.
pub(crate) const HISTORY_HEADER: &str =
    "committed at (UTC, ISO 8601)  id               direction         amount  counterparty";

/// One history entry as a line, from `user`'s point of view.
pub(crate) fn history_line(user: &Username, e: &HistoryEntry) -> String {
    let when = if e.at == 0 {
        "-".to_string()
    } else {
        crate::clock::stamp_millis(e.at)
    };
    let amount = e.amount.to_string();
    match &e.kind {
        EntryKind::Transfer { id, from } if from == user => {
            format!(
                "{when:<28}  {:<16} sent     {amount:>14}  to {}",
                id.as_str(),
                e.to
            )
        }
        EntryKind::Transfer { id, from } => {
            format!(
                "{when:<28}  {:<16} received {amount:>14}  from {from}",
                id.as_str()
            )
        }
        EntryKind::Deposit => {
            format!(
                "{when:<28}  {:<16} deposit  {amount:>14}  (money added by the operator)",
                "-"
            )
        }
    }
}

/// Where answers come from: a line editor on a terminal (arrow keys, editing, the session's
/// earlier answers with Up), else plain lines (scripts, pipes).
enum Input {
    Editor(Box<rustyline::DefaultEditor>),
    Lines(Box<dyn BufRead>),
}

struct Ui<'a> {
    args: &'a ClientArgs,
    input: Input,
    terminal: bool,
}

impl Ui<'_> {
    /// Prints `prompt` and reads one line; `None` at end of input (or Ctrl-C, Ctrl-D at the
    /// line editor).
    fn ask(&mut self, prompt: &str) -> Option<String> {
        match &mut self.input {
            Input::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => {
                    let line = line.trim().to_string();
                    if !line.is_empty() {
                        // Passwords never come through here (they are read without echo).
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    Some(line)
                }
                Err(_) => {
                    println!();
                    None
                }
            },
            Input::Lines(input) => {
                print!("{prompt}");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                match input.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        println!();
                        None
                    }
                    Ok(_) => Some(line.trim().to_string()),
                }
            }
        }
    }

    /// Reads a password without echo (from the terminal), or the next line if not a terminal.
    fn ask_password(&mut self, prompt: &str) -> Option<String> {
        if self.terminal {
            match rpassword::prompt_password(prompt) {
                Ok(p) => Some(p),
                Err(e) => {
                    println!("cannot read the password: {e}");
                    None
                }
            }
        } else {
            let line = self.ask(prompt)?;
            Some(line)
        }
    }

    /// Asks until the answer is valid; empty input (or end of input) cancels.
    fn ask_valid<T>(
        &mut self,
        prompt: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        loop {
            let line = self.ask(prompt)?;
            if line.is_empty() {
                return None;
            }
            match parse(&line) {
                Ok(v) => return Some(v),
                Err(e) => println!("  {e} (empty line cancels)"),
            }
        }
    }

    fn link(&self) -> account::Link {
        self.args.link()
    }

    /// Checks that the server answers before a password is asked for: a wrong `--server`
    /// or a stopped server should cost a moment, not a password typed for nothing.
    fn reachable(&self) -> bool {
        match account::connect(&self.link()) {
            Ok(_) => true,
            Err(f) => {
                println!(
                    "Cannot reach the server: {}. Check --server ({}); nothing was sent.",
                    f.describe(self.args.min_iterations),
                    self.args.server
                );
                false
            }
        }
    }

    fn register(&mut self) -> Option<Account> {
        let user = self.ask_valid("New username: ", |s| parse_user("username", s))?;
        if !self.reachable() {
            return None;
        }
        let password = loop {
            let first = self.ask_password("Choose a password (8+ characters, not shown): ")?;
            if let Err(e) = check_password(&first) {
                println!("  password {e}: use at least 8 characters, at most 128 bytes, no control characters");
                continue;
            }
            let again = self.ask_password("Repeat the password: ")?;
            if again != first {
                println!("  the passwords do not match; try again");
                continue;
            }
            break first;
        };
        let min = self.args.min_iterations;
        println!("Computing the password verifier here ({min} PBKDF2 iterations); the password itself is never sent...");
        let link = self.link();
        let result = account::connect(&link).and_then(|mut c| {
            c.register(user.as_str(), &password, min)
                .map_err(|e| match e {
                    BlockingError::Refused(code) => Failure::Refused(code),
                    BlockingError::Integrity(e) => Failure::Integrity(e),
                    other => Failure::Lost(other.to_string()),
                })
        });
        match result {
            Ok(()) => println!("Registered {user}. Logging in..."),
            Err(f) => {
                println!("Registration failed: {}", f.describe(min));
                return None;
            }
        }
        self.login_as(user, password)
    }

    fn login(&mut self) -> Option<Account> {
        let user = self.ask_valid("Username: ", |s| parse_user("username", s))?;
        if !self.reachable() {
            return None;
        }
        let password = self.ask_password("Password (not shown): ")?;
        if password.is_empty() {
            return None;
        }
        if let Err(e) = check_password(&password) {
            println!(
                "Login failed: password {e} (passwords have at least 8 characters, at most 128 bytes, no control characters); nothing was sent"
            );
            return None;
        }
        println!("Logging in (PBKDF2 runs here, the password is never sent)...");
        self.login_as(user, password)
    }

    fn login_as(&mut self, user: Username, password: String) -> Option<Account> {
        let mut acc = Account::new(self.link(), user, password, Sink::Stdout);
        match acc.login() {
            Ok(()) => {
                println!(
                    "Logged in as {}. The server proved it holds your account's verifier.",
                    acc.user
                );
                Some(acc)
            }
            Err(f) => {
                println!("Login failed: {}", f.describe(self.args.min_iterations));
                None
            }
        }
    }

    fn transfer(&mut self, acc: &mut Account) {
        let me = acc.user.clone();
        let Some(to) = self.ask_valid("Recipient: ", |s| {
            let to = parse_user("recipient", s)?;
            if to == me {
                return Err("you cannot send money to yourself".into());
            }
            Ok(to)
        }) else {
            println!("Cancelled.");
            return;
        };
        let Some(amount) = self.ask_valid("Amount (e.g. 12.50): ", parse_amount) else {
            println!("Cancelled.");
            return;
        };
        let Some(answer) = self.ask(&format!("Send {amount} to {to}? [y/N] ")) else {
            return;
        };
        if !matches!(answer.as_str(), "y" | "Y" | "yes" | "Yes") {
            println!("Cancelled; nothing was sent.");
            return;
        }
        let item = TransferItem {
            id: new_id(),
            to,
            amount,
        };
        let reports = acc.transfer(std::slice::from_ref(&item));
        for r in &reports {
            println!(
                "{}",
                super::transfer_text(&acc.user, r, self.args.min_iterations)
            );
        }
    }

    fn failed(&self, acc: &Account, what: &str, f: &Failure) {
        println!("{what} failed: {}", f.describe(self.args.min_iterations));
        if !acc.alerts.is_empty() {
            println!("(an attack was detected on this connection; see the warning above)");
        }
    }
}

/// Runs the menu until the user quits or input ends.
pub fn run(args: &ClientArgs) -> ExitCode {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let editor = if terminal && std::io::stdout().is_terminal() {
        rustyline::DefaultEditor::new().ok()
    } else {
        None
    };
    let input = match editor {
        Some(editor) => Input::Editor(Box::new(editor)),
        None => Input::Lines(Box::new(std::io::BufReader::new(stdin))),
    };
    let mut ui = Ui {
        args,
        input,
        terminal,
    };
    println!("txsock client: server {}", args.server);
    println!("Every answer from the server is verified; a forged one raises a loud warning.");
    let mut account: Option<Account> = None;
    if let Some(name) = &args.user {
        match parse_user("user", name) {
            Ok(user) => {
                if ui.reachable() {
                    if let Some(password) =
                        ui.ask_password(&format!("Password for {user} (not shown): "))
                    {
                        account = ui.login_as(user, password);
                    }
                }
            }
            Err(e) => println!("{e}"),
        }
    }
    loop {
        match &mut account {
            None => {
                println!();
                println!("Not logged in.");
                println!("  1) Register a new account");
                println!("  2) Log in");
                println!("  q) Quit         ?) Help");
                let Some(choice) = ui.ask("Choose: ") else {
                    break;
                };
                match choice.as_str() {
                    "1" | "r" | "register" => account = ui.register(),
                    "2" | "l" | "login" => account = ui.login(),
                    "q" | "quit" | "exit" => break,
                    "?" | "help" => println!("{HELP_LOGGED_OUT}"),
                    "" => {}
                    other => println!("Unknown choice {other:?}: type 1, 2 or q (? for help)."),
                }
            }
            Some(acc) => {
                println!();
                println!("Logged in as {}.", acc.user);
                println!("  1) Balance");
                println!("  2) Transfer");
                println!("  3) History");
                println!("  4) Log out");
                println!("  q) Quit         ?) Help");
                let Some(choice) = ui.ask("Choose: ") else {
                    break;
                };
                match choice.as_str() {
                    "1" | "b" | "balance" => match acc.balance() {
                        Ok(b) => println!("Balance: {b}"),
                        Err(f) => ui.failed(acc, "Balance", &f),
                    },
                    "2" | "t" | "transfer" => ui.transfer(acc),
                    "3" | "h" | "history" => match acc.history(HISTORY_SHOWN) {
                        Ok(history) => {
                            if history.entries.is_empty() {
                                println!("Nothing yet.");
                            } else {
                                println!("{HISTORY_HEADER}");
                            }
                            for e in &history.entries {
                                println!("{}", history_line(&acc.user, e));
                            }
                            if history.more {
                                println!("(older entries not shown)");
                            }
                            if !history.deposits {
                                println!("{DEPOSITS_NOT_LISTED}");
                            }
                        }
                        Err(f) => ui.failed(acc, "History", &f),
                    },
                    "4" | "o" | "logout" => {
                        acc.logout();
                        println!("Logged out.");
                        account = None;
                    }
                    "q" | "quit" | "exit" => break,
                    "?" | "help" => println!("{HELP_LOGGED_IN}"),
                    "" => {}
                    other => println!("Unknown choice {other:?}: type 1-4 or q (? for help)."),
                }
            }
        }
    }
    if let Some(mut acc) = account {
        acc.logout();
    }
    println!("Goodbye.");
    ExitCode::SUCCESS
}
