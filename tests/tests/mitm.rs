//! Each `txsock mitm` mode, end to end with real processes: a `txsock serve`, the proxy in
//! front of it, and `txsock client` through the proxy. Every test checks the server's
//! answer (its `error.log`), the ledger (balances, `transactions.log`, `ledger check`), the
//! proxy's own log of what it did, and the client's report and exit status.

use serde_json::Value;
use std::process::Command;
use txsock_core::Amount;
use txsock_e2e::*;

fn money(s: &str) -> Amount {
    Amount::parse_balance(s).unwrap()
}

/// A server where alice and bob (and mallory) have 100.00 each.
fn bank() -> Server {
    let server = Server::start(&["--opening-balance", "100.00"]);
    for user in ["alice", "bob", "mallory"] {
        drop(server.login(user, true));
    }
    server
}

/// `txsock client --json --user alice ARGS` through `mitm`.
fn alice(mitm: &Mitm, args: &[&str]) -> ClientRun {
    let mut all = vec!["--json", "--user", "alice"];
    all.extend_from_slice(args);
    run_client(mitm.addr, &all, Some(&password("alice")), "")
}

fn alerts(v: &Value) -> Vec<String> {
    v["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_string())
        .collect()
}

fn balances(server: &Server) -> (Amount, Amount) {
    (server.user_balance("alice"), server.user_balance("bob"))
}

#[test]
fn pass_forwards_everything_and_logs_every_frame() {
    let server = bank();
    let mitm = Mitm::start(&server, "pass", &[]);
    let run = alice(&mitm, &["transfer", "bob", "10.00", "--id", "p1"]);
    assert_eq!(run.code, 0, "{run:?}");
    let r = &run.json()[0];
    assert_eq!(
        (r["status"].as_str(), r["balance"].as_str()),
        (Some("committed"), Some("90.00"))
    );
    assert!(alerts(r).is_empty());
    assert_eq!(balances(&server), (money("90.00"), money("110.00")));
    assert_eq!(server.committed("p1"), 1);
    let sent = mitm.actions("c->s").join("\n");
    for op in ["login", "proof", "nonces", "transfer", "logout"] {
        assert!(
            sent.contains(&format!("\"op\":\"{op}\"")),
            "{op} not logged:\n{sent}"
        );
    }
    let got = mitm.actions("s->c").join("\n");
    for op in ["challenge", "welcome", "nonces", "receipt", "bye"] {
        assert!(
            got.contains(&format!("\"op\":\"{op}\"")),
            "{op} not logged:\n{got}"
        );
    }
    assert!(server.ledger_ok());
}

#[test]
fn tampered_transfer_is_refused_by_the_server_and_moves_nothing() {
    let server = bank();
    let mitm = Mitm::start(&server, "tamper", &[]);
    let run = alice(&mitm, &["transfer", "bob", "5.00", "--id", "t1"]);
    assert_eq!(run.code, 4, "integrity failure expected: {run:?}");
    let r = &run.json()[0];
    // Known within what the protocol proves: refused as altered, so nothing moved.
    assert_eq!(
        (r["status"].as_str(), r["code"].as_str()),
        (Some("altered"), Some("bad_mac"))
    );
    assert_eq!(r["sends"], 3, "every attempt is tampered");
    assert_eq!(alerts(r), ["altered_in_transit"; 3]);
    assert!(run.stderr.contains("SECURITY WARNING"), "{}", run.stderr);
    let tampered = mitm.actions("TAMPER");
    assert_eq!(tampered.len(), 3, "{tampered:?}");
    assert!(tampered[0].contains("amount 5.00 -> 50.00"), "{tampered:?}");
    assert!(server.wait_for_log("error.log", "rejected code=bad_mac user=alice"));
    assert_eq!(
        server
            .log("error.log")
            .matches("rejected code=bad_mac user=alice")
            .count(),
        3
    );
    assert_eq!(balances(&server), (money("100.00"), money("100.00")));
    assert_eq!(server.committed("t1"), 0);

    // Redirecting the recipient is caught the same way: mallory gets nothing.
    let redirect = Mitm::start(&server, "tamper", &["--redirect-to", "mallory"]);
    let run = alice(
        &redirect,
        &["--attempts", "1", "transfer", "bob", "5.00", "--id", "t2"],
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert!(redirect.actions("TAMPER")[0].contains("recipient bob -> mallory"));
    assert_eq!(server.user_balance("mallory"), money("100.00"));
    assert_eq!(balances(&server), (money("100.00"), money("100.00")));
    assert_eq!(server.committed("t2"), 0);
    assert!(server.ledger_ok());
}

#[test]
fn replayed_transfer_is_refused_and_money_moves_exactly_once() {
    let server = bank();
    let mitm = Mitm::start(&server, "replay", &[]);
    let run = alice(&mitm, &["transfer", "bob", "1.00", "--id", "r1"]);
    assert_eq!(run.code, 0, "the client's own transfer succeeds: {run:?}");
    assert_eq!(run.json()[0]["status"], "committed");
    assert_eq!(mitm.actions("REPLAY").len(), 1);
    assert_eq!(mitm.actions("HIDE").len(), 1, "the copy's answer is hidden");
    assert!(server.wait_for_log("error.log", "rejected code=unknown_nonce user=alice"));
    assert_eq!(server.committed("r1"), 1);
    assert_eq!(balances(&server), (money("99.00"), money("101.00")));
    assert!(server.ledger_ok());
}

#[test]
fn dropped_reply_is_retried_with_the_same_id_and_moves_money_once() {
    let server = bank();
    // Once: the retry on a new connection gets the original result.
    let once = Mitm::start(&server, "drop-reply", &["--limit", "1"]);
    let run = alice(
        &once,
        &["--timeout", "2", "transfer", "bob", "2.00", "--id", "d1"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let r = &run.json()[0];
    assert_eq!(
        (r["status"].as_str(), r["sends"].as_u64()),
        (Some("committed"), Some(2))
    );
    assert_eq!(r["balance"], "98.00");
    assert!(run.stderr.contains("no reply within 2 s"), "{}", run.stderr);
    assert_eq!(once.actions("DROP").len(), 1);
    assert_eq!(server.committed("d1"), 1);
    assert_eq!(balances(&server), (money("98.00"), money("102.00")));

    // Always: three sends, no verified answer, a connection failure, and still one move.
    let always = Mitm::start(&server, "drop-reply", &[]);
    let mut args = vec![
        "--user",
        "alice",
        "--timeout",
        "2",
        "transfer",
        "bob",
        "3.00",
    ];
    args.extend(["--id", "d2"]);
    let run = run_client(always.addr, &args, Some(&password("alice")), "");
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stdout.contains("UNKNOWN outcome"), "{}", run.stdout);
    assert!(run.stdout.contains("--id d2"), "{}", run.stdout);
    assert_eq!(always.actions("DROP").len(), 3);
    assert_eq!(server.committed("d2"), 1, "three sends, one transfer");
    assert_eq!(balances(&server), (money("95.00"), money("105.00")));
    // Asking the server directly with the same id reports the original result.
    let mut args = vec!["--json", "--user", "alice", "transfer", "bob", "3.00"];
    args.extend(["--id", "d2"]);
    let run = run_client(server.addr, &args, Some(&password("alice")), "");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()[0]["balance"], "95.00");
    assert_eq!(server.committed("d2"), 1);
    assert!(server.ledger_ok());
}

#[test]
fn reordered_pipelined_transfers_are_detected_and_each_moves_once() {
    let server = bank();
    let mitm = Mitm::start(&server, "reorder", &["--limit", "1"]);
    let mut args = vec!["transfer", "bob", "0.50", "bob", "0.25"];
    args.extend(["--id", "o1", "--id", "o2"]);
    let run = alice(&mitm, &args);
    assert_eq!(run.code, 4, "{run:?}");
    let results = run.json();
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r["status"], "committed", "{r}");
        assert!(!alerts(r).is_empty(), "{r}");
    }
    assert_eq!(mitm.actions("REORDER").len(), 1);
    assert!(run.stderr.contains("SECURITY WARNING"));
    assert_eq!((server.committed("o1"), server.committed("o2")), (1, 1));
    assert_eq!(balances(&server), (money("99.25"), money("100.75")));
    assert!(server.ledger_ok());
}

#[test]
fn forged_success_is_detected_by_the_client() {
    let server = bank();
    // Every answer forged: no verified answer at all, and the client says so loudly.
    let always = Mitm::start(&server, "forge-reply", &[]);
    let run = alice(&always, &["transfer", "bob", "500.00", "--id", "f1"]);
    assert_eq!(run.code, 4, "{run:?}");
    let r = &run.json()[0];
    assert_eq!(r["status"], "unknown");
    assert_eq!(alerts(r), ["forged_receipt"; 3]);
    assert!(
        run.stderr
            .contains("the server's confirmation was forged or altered"),
        "{}",
        run.stderr
    );
    assert_eq!(always.actions("FORGE").len(), 3);
    // The server saw nothing wrong (the forgery happened after it answered): nothing moved.
    assert_eq!(server.committed("f1"), 0);
    assert_eq!(balances(&server), (money("100.00"), money("100.00")));

    // Forged once: the re-check on a new connection learns the real, verified refusal.
    let once = Mitm::start(&server, "forge-reply", &["--limit", "1"]);
    let run = alice(&once, &["transfer", "bob", "600.00", "--id", "f2"]);
    assert_eq!(run.code, 4, "an attack was detected: {run:?}");
    let r = &run.json()[0];
    assert_eq!(
        (r["status"].as_str(), r["code"].as_str()),
        (Some("refused"), Some("insufficient_funds"))
    );
    assert_eq!(alerts(r), ["forged_receipt"]);
    assert_eq!(balances(&server), (money("100.00"), money("100.00")));
    assert!(server.ledger_ok());
}

#[test]
fn mitm_says_it_is_a_testing_tool_and_stays_on_loopback() {
    let help = Command::new(txsock_bin())
        .args(["mitm", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.starts_with("TESTING TOOL"), "{text}");
    let top = Command::new(txsock_bin()).arg("--help").output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.lines()
            .any(|l| l.trim_start().starts_with("mitm") && l.contains("TESTING TOOL")),
        "{top}"
    );
    let refused = Command::new(txsock_bin())
        .args(["mitm", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("testing tool"));
}

#[test]
fn mitm_exits_0_on_sigterm() {
    let server = bank();
    let mut mitm = Mitm::start(&server, "pass", &[]);
    // With a connection open through it, as when a supervisor stops it mid-test.
    let _open = std::net::TcpStream::connect(mitm.addr).expect("connect to mitm");
    let status = mitm
        .terminate()
        .expect("txsock mitm did not exit within 10 s of SIGTERM");
    assert!(
        status.success(),
        "txsock mitm exited with {status} on SIGTERM"
    );
}
