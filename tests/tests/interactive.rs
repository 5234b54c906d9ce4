//! The interactive `txsock client`, driven through its menu in a pseudo-terminal: register,
//! balance, transfer (with input refused before sending), history, log out, a wrong
//! password, log in again, quit. Passwords are typed at no-echo prompts and must never
//! appear on the screen.

use rexpect::session::{spawn_command, PtySession};
use std::process::Command;
use std::time::Duration;
use txsock_core::Amount;
use txsock_e2e::*;

const PASSWORD: &str = "menu-secret-1";
const WRONG: &str = "menu-wrong-password";

struct Screen {
    pty: PtySession,
    seen: String,
}

impl Screen {
    fn expect(&mut self, text: &str) {
        match self.pty.exp_string(text) {
            Ok(before) => {
                self.seen.push_str(&before);
                self.seen.push_str(text);
            }
            Err(e) => panic!("waiting for {text:?}: {e}\nscreen so far:\n{}", self.seen),
        }
    }

    fn type_line(&mut self, line: &str) {
        self.pty.send_line(line).expect("type");
    }

    /// Types at a password prompt, after giving the client a moment to turn echo off.
    fn type_secret(&mut self, prompt: &str, secret: &str) {
        self.expect(prompt);
        std::thread::sleep(Duration::from_millis(300));
        self.type_line(secret);
    }

    fn choose(&mut self, choice: &str) {
        self.expect("Choose: ");
        self.type_line(choice);
    }
}

#[test]
fn menu_register_transfer_history_wrong_password_and_quit() {
    let server = Server::start(&["--opening-balance", "100.00"]);
    drop(server.login("bob", true));
    let mut cmd = Command::new(txsock_bin());
    cmd.args(["client", "--server", &server.addr.to_string()])
        .args(["--min-iterations", &ITERATIONS.to_string()])
        .env_remove("TXSOCK_PASSWORD")
        .env_remove("TXSOCK_CONFIG");
    let pty = spawn_command(cmd, Some(30_000)).expect("spawn in a pty");
    let mut s = Screen {
        pty,
        seen: String::new(),
    };

    // Register (with a mismatched repeat first), which also logs in.
    s.expect("Not logged in.");
    s.choose("1");
    s.expect("New username: ");
    s.type_line("Alice");
    s.type_secret("Choose a password", PASSWORD);
    s.type_secret("Repeat the password: ", "something else");
    s.expect("the passwords do not match");
    s.type_secret("Choose a password", PASSWORD);
    s.type_secret("Repeat the password: ", PASSWORD);
    s.expect("Registered alice.");
    s.expect("Logged in as alice.");

    s.choose("1");
    s.expect("Balance: 100.00");

    // A transfer: bad input is refused and asked again, then a confirmation.
    s.choose("2");
    s.expect("Recipient: ");
    s.type_line("alice");
    s.expect("yourself");
    s.type_line("bob");
    s.expect("Amount (e.g. 12.50): ");
    s.type_line("1.234");
    s.expect("at most two decimals");
    s.type_line("12.50");
    s.expect("Send 12.50 to bob? [y/N] ");
    s.type_line("y");
    s.expect("committed: alice -> bob 12.50");
    s.expect("your balance is now 87.50");

    s.choose("3");
    s.expect("sent");
    s.expect("to bob");

    s.choose("4");
    s.expect("Logged out.");

    // A wrong password: refused with the human explanation.
    s.choose("2");
    s.expect("Username: ");
    s.type_line("alice");
    s.type_secret("Password (not shown): ", WRONG);
    s.expect("Login failed: wrong username or password");
    s.expect("Not logged in.");

    // The right one.
    s.choose("2");
    s.expect("Username: ");
    s.type_line("alice");
    s.type_secret("Password (not shown): ", PASSWORD);
    s.expect("Logged in as alice.");
    s.choose("1");
    s.expect("Balance: 87.50");
    s.choose("q");
    s.expect("Goodbye.");
    let rest = s.pty.exp_eof().unwrap_or_default();
    s.seen.push_str(&rest);

    for secret in [PASSWORD, WRONG, "something else"] {
        assert!(
            !s.seen.contains(secret),
            "a password was echoed to the screen:\n{}",
            s.seen
        );
    }
    assert_eq!(
        server.user_balance("bob"),
        Amount::parse_balance("112.50").unwrap()
    );
    assert!(server
        .log("sessions.log")
        .contains("login_failed user=alice"));
}
