//! The `txsock` binary's command line: help that tells the truth, errors that say what is
//! wrong. (Its presence also makes `cargo test` build the binary that `tests/` drives.)

use std::process::Command;

fn txsock(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_txsock"))
        .args(args)
        .env_remove("TXSOCK_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn help_lists_every_subcommand() {
    let out = txsock(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "user", "account", "ledger"] {
        assert!(text.contains(sub), "--help does not mention {sub}:\n{text}");
    }
}

#[test]
fn serve_help_shows_defaults() {
    let out = txsock(&["serve", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("127.0.0.1:11002") && text.contains("txsock-data"),
        "{text}"
    );
}

#[test]
fn bad_flag_values_are_refused_clearly() {
    let out = txsock(&["serve", "--max-frame", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-frame"));
    let out = txsock(&["account", "deposit", "alice", "-5"]);
    assert!(!out.status.success());
}
