//! The smaller operator and user tools of issue 19: `user list --json`, `user add` from
//! `TXSOCK_PASSWORD`, `-q`/`-v`, shell completions and the man page, the history's header
//! row and ISO 8601 timestamps, the menu's help and its server check before the password,
//! and the Python example without a terminal.

use std::process::{Command, Stdio};
use std::time::Duration;
use txsock_e2e::*;

/// `txsock ARGS` with the environment variables `env` (see [`txsock_in_env`]).
fn txsock(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    txsock_in_env(&std::env::temp_dir(), args, env)
}

#[test]
fn user_add_takes_the_password_from_the_environment_and_user_list_prints_json() {
    let server = Server::start(&[]);
    let data = server.data_dir.to_str().expect("utf-8").to_string();
    let iterations = ITERATIONS.to_string();
    let alice = password("alice");
    let add = txsock(
        &[
            "user",
            "add",
            "alice",
            "--balance",
            "12.50",
            "--iterations",
            &iterations,
            "--min-iterations",
            &iterations,
            "--data-dir",
            &data,
        ],
        &[("TXSOCK_PASSWORD", &alice)],
    );
    assert!(add.status.success(), "{}", stderr(&add));
    // The password from the environment is the account's: the client logs in with it.
    let balance = server.run_client_as("alice", &["balance"]);
    assert_eq!(balance.code, 0, "{}", balance.stderr);
    assert!(balance.stdout.contains("12.50"), "{}", balance.stdout);
    drop(server.login("bob", true));
    assert!(txsock(&["user", "lock", "bob", "--data-dir", &data], &[])
        .status
        .success());

    let list = txsock(&["user", "list", "--json", "--data-dir", &data], &[]);
    assert!(list.status.success(), "{}", stderr(&list));
    let users: Vec<serde_json::Value> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(users.len(), 2, "{}", stdout(&list));
    assert_eq!(users[0]["name"], "alice");
    assert_eq!(users[0]["balance"], "12.50");
    assert_eq!(users[0]["admin_locked"], false);
    assert_eq!(users[1]["name"], "bob");
    assert_eq!(users[1]["admin_locked"], true);
    assert!(users[1]["locked_until"].is_null() && users[1]["failed_logins"] == 0);
}

/// `txsock ARGS` collected with `Command::output`, which reads while the command runs (a
/// completion script is larger than a pipe's buffer; these commands never wait on input).
fn generated(args: &[&str]) -> std::process::Output {
    Command::new(txsock_bin())
        .args(args)
        .env_remove("TXSOCK_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run txsock")
}

#[test]
fn completions_and_the_man_page_come_from_the_same_definitions() {
    let bash = generated(&["completions", "bash"]);
    assert!(bash.status.success(), "{}", stderr(&bash));
    let script = stdout(&bash);
    assert!(
        script.contains("_txsock()") && script.contains("complete -F"),
        "{script}"
    );
    assert!(
        script.contains("--metrics"),
        "serve's options are completed"
    );
    let zsh = generated(&["completions", "zsh"]);
    assert!(stdout(&zsh).starts_with("#compdef txsock"));
    let bad = generated(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));

    let man = generated(&["man"]);
    assert!(man.status.success(), "{}", stderr(&man));
    let page = stdout(&man);
    assert!(page.contains(".TH txsock 1"), "{page}");
    for section in ["TXSOCK SERVE", "TXSOCK CLIENT", "TXSOCK LEDGER"] {
        assert!(page.contains(section), "no {section} section");
    }
    assert!(page.contains("metrics"), "serve's options are in the page");
}

#[test]
fn quiet_and_verbose_set_the_log_level_over_rust_log() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let data = data.to_str().expect("utf-8");
    // A server started and stopped: its start and stop lines are INFO. -q drops them;
    // -v overrides RUST_LOG=warn, which alone would drop them too.
    let serve = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data];
        args.extend_from_slice(flags);
        let child = Command::new(txsock_bin())
            .args(&args)
            .env_remove("TXSOCK_CONFIG")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        std::thread::sleep(Duration::from_millis(700));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        output_within(child, Duration::from_secs(20))
    };
    let quiet = serve(&["-q"], &[]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains("INFO"), "{}", stderr(&quiet));
    let normal = serve(&[], &[]);
    assert!(stderr(&normal).contains("INFO"), "{}", stderr(&normal));
    let verbose = serve(&["-v"], &[("RUST_LOG", "warn")]);
    assert!(stderr(&verbose).contains("INFO"), "{}", stderr(&verbose));
    let both = txsock(&["-q", "-v", "ledger", "check"], &[]);
    assert_eq!(both.status.code(), Some(2), "-q and -v conflict");
}

/// A server on which alice and bob registered with 10.00 each and alice sent bob 1.00 as
/// transfer `id`, with the client.
fn alice_paid_bob(id: &str) -> Server {
    let server = Server::start(&["--opening-balance", "10"]);
    server.register(&["alice", "bob"]);
    let sent = server.run_client_as("alice", &["transfer", "bob", "1.00", "--id", id]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    server
}

#[test]
fn history_has_a_header_row_and_iso_8601_times_in_text_and_json() {
    let server = alice_paid_bob("h-1");
    let text = server.run_client_as("alice", &["history"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(lines[0].starts_with("committed at"), "{}", text.stdout);
    let entry = lines
        .iter()
        .find(|l| l.contains("h-1"))
        .expect("the transfer");
    let stamp = entry.split_whitespace().next().unwrap_or("");
    assert!(
        stamp.len() == 24 && stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z'),
        "not ISO 8601: {entry}"
    );
    let json = server.run_client_as("alice", &["--json", "history"]);
    let v = &json.json()[0];
    let e = &v["entries"][0];
    assert_eq!(e["at"].as_str(), Some(stamp), "{v}");
    assert!(e["at_ms"].as_u64().is_some_and(|ms| ms > 0), "{v}");
}

#[test]
fn the_menu_has_help_and_checks_the_server_before_the_password() {
    let help = run_client("127.0.0.1:9".parse().expect("address"), &[], None, "?\nq\n");
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(help.stdout.contains("1, r, register"), "{}", help.stdout);
    assert!(help.stdout.contains("?) Help"), "{}", help.stdout);

    // Nothing listens on the port: the menu says so and never asks for the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("address");
    drop(closed);
    let menu = run_client(addr, &["--user", "alice"], None, "a-password\nq\n");
    assert!(
        menu.stdout.contains("Cannot reach the server"),
        "{}",
        menu.stdout
    );
    assert!(!menu.stdout.contains("Password for"), "{}", menu.stdout);
}

#[test]
fn the_python_example_without_a_terminal_says_what_to_do() {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/python/txsock_client.py");
    let child = Command::new("python3")
        .arg(script)
        .args(["--server", "127.0.0.1:9", "--user", "alice", "balance"])
        .env_remove("TXSOCK_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    let out = output_within(child, Duration::from_secs(30));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no terminal") && err.contains("TXSOCK_PASSWORD"),
        "{err}"
    );
    assert!(!err.contains("Traceback"), "{err}");
}

/// On a terminal the menu reads with a line editor: Up recalls an earlier answer and
/// Backspace edits the line before Enter sends it.
#[cfg(unix)]
#[test]
fn the_menu_edits_lines_and_recalls_earlier_answers_on_a_terminal() {
    use rexpect::session::spawn_command;
    let mut cmd = Command::new(txsock_bin());
    cmd.args(["client", "--server", "127.0.0.1:9"])
        .env_remove("TXSOCK_CONFIG")
        .env_remove("TXSOCK_USER");
    let mut pty = spawn_command(cmd, Some(20_000)).expect("spawn in a pty");
    let expect = |pty: &mut rexpect::session::PtySession, text: &str| {
        pty.exp_string(text)
            .unwrap_or_else(|e| panic!("waiting for {text:?}: {e}"));
    };
    expect(&mut pty, "Choose: ");
    pty.send_line("?").expect("type");
    expect(&mut pty, "1, r, register");
    expect(&mut pty, "Choose: ");
    // Up, then Enter: the earlier `?` again.
    pty.send("\x1b[A").expect("type");
    pty.send_line("").expect("type");
    expect(&mut pty, "1, r, register");
    expect(&mut pty, "Choose: ");
    // `qx`, Backspace, Enter: `q`.
    pty.send("qx\x7f").expect("type");
    pty.send_line("").expect("type");
    expect(&mut pty, "Goodbye.");
}

/// Deposits are in the history (issue 19): the opening balance and an administrator's
/// `account deposit` appear in the client's text and JSON among the transfers, read with the
/// authenticated `statement`; nobody sees another user's deposits; and the `history` request
/// of older clients still answers transfers only, in its old form.
#[test]
fn history_lists_deposits_and_the_old_history_request_lists_transfers_only() {
    let server = Server::start(&["--opening-balance", "10"]);
    server.register(&["alice", "bob"]);
    let out = server.admin(&["account", "deposit", "alice", "2.50"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = server.run_client_as("alice", &["transfer", "bob", "1.00", "--id", "d-1"]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);

    // Text: the header, then newest first over two pages (a page holds two entries).
    let text = server.run_client_as("alice", &["history"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", text.stdout);
    assert!(lines[0].starts_with("committed at"), "{}", text.stdout);
    assert!(
        lines[1].contains("d-1") && lines[1].contains("sent"),
        "{}",
        text.stdout
    );
    for (line, amount) in [(lines[2], "2.50"), (lines[3], "10.00")] {
        assert!(
            line.contains(" deposit ") && line.contains(amount) && line.contains("operator"),
            "{}",
            text.stdout
        );
    }

    // JSON: a deposit has a kind, and neither id nor sender.
    let json = server.run_client_as("alice", &["--json", "history"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v = &json.json()[0];
    let shown: Vec<(String, String, String)> = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["kind"].to_string(),
                e["id"].to_string(),
                e["amount"].to_string(),
            )
        })
        .collect();
    let row = |k: &str, id: &str, a: &str| (k.to_string(), id.to_string(), a.to_string());
    assert_eq!(
        shown,
        [
            row("\"transfer\"", "\"d-1\"", "\"1.00\""),
            row("\"deposit\"", "null", "\"2.50\""),
            row("\"deposit\"", "null", "\"10.00\"")
        ],
        "{v}"
    );
    assert_eq!(v["entries"][1]["to"], "alice", "{v}");
    assert_eq!(v["deposits_listed"], true, "{v}");

    // bob, through the core client: his own opening balance and what he received, verified.
    let mut bob = server.login("bob", false);
    let mut entries = Vec::new();
    loop {
        let page = bob.statement(entries.len() as u32).expect("statement");
        let more = page.more;
        entries.extend(page.entries);
        if !more {
            break;
        }
    }
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0].id().map(|i| i.as_str()), Some("d-1"));
    assert_eq!(entries[0].from().map(|u| u.as_str()), Some("alice"));
    assert_eq!(entries[1].kind, txsock_core::ledger::EntryKind::Deposit);
    assert_eq!(entries[1].to.as_str(), "bob");
    assert_eq!(
        entries[1].amount,
        txsock_core::Amount::parse("10.00").expect("amount")
    );
    assert_eq!(bob.history(0).expect("history").entries.len(), 1);

    // The request of clients older than statements: transfers only, in the old form.
    let mut raw = server.raw_login("alice", false);
    let line = raw.exchange("{\"op\":\"history\"}");
    assert!(line.starts_with("{\"op\":\"history\","), "{line}");
    assert!(line.contains("\"id\":\"d-1\""), "{line}");
    assert!(!line.contains("kind") && !line.contains("2.50"), "{line}");
    assert!(line.contains("\"more\":false"), "{line}");
}

/// Against a server older than statements (imitated by a proxy that turns the client's
/// `statement` into an op the server does not know, so it answers `malformed` and numbers
/// nothing, as an older server does), the client reads the transfers-only history and says
/// that deposits are not shown, in text and in JSON.
#[test]
fn history_from_a_server_without_statements_says_deposits_are_not_shown() {
    let server = alice_paid_bob("o-1");
    let alice = password("alice");
    let older = Proxy::start_both(
        server.addr,
        |line| line.replace("\"op\":\"statement\"", "\"op\":\"statement-unknown\""),
        str::to_string,
    );
    let text = run_client(
        older.addr,
        &["--user", "alice", "history"],
        Some(&alice),
        "",
    );
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("o-1"), "{}", text.stdout);
    assert!(!text.stdout.contains(" deposit "), "{}", text.stdout);
    assert!(
        text.stdout.contains("this server lists transfers only"),
        "{}",
        text.stdout
    );
    let json = run_client(
        older.addr,
        &["--user", "alice", "--json", "history"],
        Some(&alice),
        "",
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v = &json.json()[0];
    assert_eq!(v["deposits_listed"], false, "{v}");
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(1), "{v}");
    // The request really went out as `statement` first, then as `history`.
    let sent = older.client_lines.lock().expect("lines").join("\n");
    assert!(sent.contains("\"op\":\"statement\"") && sent.contains("\"op\":\"history\""));
}
