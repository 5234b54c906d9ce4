//! `txsock serve` end to end: real processes, real sockets on 127.0.0.1, temporary data.

use std::io::Write;
use std::time::Duration;
use txsock_core::blocking::BlockingError;
use txsock_core::{Amount, ErrorCode};
use txsock_e2e::*;

fn refused<T: std::fmt::Debug>(r: Result<T, BlockingError<std::io::Error>>) -> ErrorCode {
    match r {
        Err(BlockingError::Refused(code)) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn money(s: &str) -> Amount {
    Amount::parse_non_negative(s).unwrap()
}

fn users(server: &Server) -> String {
    let out = server.admin(&["user", "list"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn balance_of(server: &Server, user: &str) -> Amount {
    let text = users(server);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(user))
        .expect("user listed");
    money(line.split_whitespace().nth(1).unwrap())
}

fn ledger_check(server: &Server) -> (bool, String) {
    let out = server.admin(&["ledger", "check"], "");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn full_conversation_then_restart_keeps_everything() {
    let mut server = Server::start(&["--opening-balance", "100.00", "--lockout-base-ms", "600000"]);
    let mut bob = server.login("bob", true);
    let mut alice = server.login("alice", true);

    // A batch of nonces, then pipelined transfers answered in order.
    let s = alice.session();
    s.request_nonces(4).unwrap();
    match alice.next_event().unwrap() {
        txsock_core::session::ClientEvent::Nonces { available } => assert_eq!(available, 4),
        other => panic!("{other:?}"),
    }
    for (i, amount) in ["10.00", "2.50", "0.25"].iter().enumerate() {
        alice
            .session()
            .transfer(&format!("p{i}"), "bob", money(amount))
            .unwrap();
    }
    let mut balances = Vec::new();
    for _ in 0..3 {
        match alice.next_event().unwrap() {
            txsock_core::session::ClientEvent::Receipt(r) => {
                assert_eq!(r.result, Ok(()));
                balances.push(r.balance);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(balances, [money("90.00"), money("87.50"), money("87.25")]);
    assert_eq!(alice.balance().unwrap(), money("87.25"));
    assert_eq!(bob.balance().unwrap(), money("112.75"));
    let page = alice.history(0).unwrap();
    assert_eq!(page.entries[0].id().map(|i| i.as_str()), Some("p2"));
    assert!(page.more);
    alice.logout().unwrap();

    // Failed logins leave a lockout that must survive the restart.
    for _ in 0..5 {
        let mut c = server.client();
        assert_eq!(
            refused(c.login("bob", "wrong password!")),
            ErrorCode::AuthFailed
        );
    }
    assert!(
        server
            .log("transactions.log")
            .lines()
            .filter(|l| l.contains(" transfer id=p"))
            .count()
            == 3
    );
    assert!(server.log("sessions.log").contains("login user=alice"));
    assert!(server.log("sessions.log").contains("lockout user=bob"));
    drop(bob);

    server.restart();
    assert_eq!(balance_of(&server, "alice"), money("87.25"));
    assert_eq!(balance_of(&server, "bob"), money("112.75"));
    assert!(
        users(&server).contains("locked until"),
        "lockout lost in restart:\n{}",
        users(&server)
    );
    let mut bob = server.client();
    assert_eq!(
        refused(bob.login("bob", &password("bob"))),
        ErrorCode::AuthFailed
    );
    let mut alice = server.login("alice", false);
    // The journal survived: the same transfer id returns the original result.
    let r = alice.transfer("p0", "bob", money("10.00")).unwrap();
    assert_eq!((r.result, r.balance), (Ok(()), money("90.00")));
    assert_eq!(alice.balance().unwrap(), money("87.25"));
    let (ok, text) = ledger_check(&server);
    assert!(ok, "{text}");
}

#[test]
fn refused_transfers_change_nothing() {
    let server = Server::start(&["--opening-balance", "5.00"]);
    drop(server.login("carol", true));
    let mut dave = server.login("dave", true);
    let over = dave.transfer("o1", "carol", money("5.01")).unwrap();
    assert_eq!(over.result, Err(ErrorCode::InsufficientFunds));
    assert_eq!(over.balance, money("5.00"));
    let unknown = dave.transfer("o2", "nobody", money("1")).unwrap();
    assert_eq!(unknown.result, Err(ErrorCode::UnknownRecipient));
    let own = dave.transfer("o3", "dave", money("1")).unwrap();
    assert_eq!(own.result, Err(ErrorCode::SelfTransfer));
    assert_eq!(balance_of(&server, "dave"), money("5.00"));
    assert_eq!(balance_of(&server, "carol"), money("5.00"));
    assert_eq!(server.log("transactions.log"), "");
    // A refusal is the id's final answer: after funds arrive, retrying the same id still
    // answers the refusal (a lost reply never turns into a different outcome); a new id works.
    let out = server.admin(&["account", "deposit", "dave", "1.00"], "");
    assert!(out.status.success());
    let again = dave.transfer("o1", "carol", money("5.01")).unwrap();
    assert_eq!(
        (again.result, again.balance),
        (Err(ErrorCode::InsufficientFunds), money("5.00"))
    );
    assert_eq!(
        dave.transfer("o4", "carol", money("5.01")).unwrap().result,
        Ok(())
    );
    assert!(ledger_check(&server).0);
}

#[test]
fn connection_cap_refuses_one_more_and_keeps_serving() {
    let server = Server::start(&["--max-connections", "2"]);
    let _a = server.connect_raw();
    let _b = server.connect_raw();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = server.connect_raw();
    let lines = read_lines(&mut third, 1);
    assert!(
        lines.first().is_some_and(|l| l.contains("server_busy")),
        "{lines:?}"
    );
    assert!(closed_by_peer(&mut third));
    assert!(server.wait_for_log("error.log", "limit max_connections"));
    drop(_a);
    std::thread::sleep(Duration::from_millis(200));
    let mut ok = server.connect_raw();
    assert_eq!(
        raw_exchange(&mut ok, b"{\"op\":\"ping\"}\n", 1),
        ["{\"op\":\"pong\"}"]
    );
}

#[test]
fn oversize_line_is_refused_and_the_connection_stays_usable() {
    let server = Server::start(&["--max-frame", "128"]);
    let mut c = server.connect_raw();
    let mut line = vec![b'x'; 10_000];
    line.push(b'\n');
    line.extend_from_slice(b"{\"op\":\"ping\"}\n");
    let lines = raw_exchange(&mut c, &line, 2);
    assert!(lines[0].contains("frame_too_long"), "{lines:?}");
    assert_eq!(lines[1], "{\"op\":\"pong\"}");
    assert!(server.wait_for_log("error.log", "rejected code=frame_too_long"));
}

/// Limits raised above the core's defaults are honoured in full: the server then gives each
/// connection a session with room for them (the defaults get smaller sessions).
#[test]
fn raised_frame_and_nonce_limits_are_held_in_full() {
    let server = Server::start(&[
        "--max-frame",
        "1024",
        "--nonces",
        "40",
        "--opening-balance",
        "10.00",
    ]);
    drop(server.login("bob", true));
    let mut alice = server.raw_login("alice", true);
    // 40 outstanding nonces, more than the default ring of 16: the oldest is still good.
    let nonces: Vec<String> = (0..5).flat_map(|_| alice.nonces(8)).collect();
    assert_eq!(nonces.len(), 40);
    let frame = alice.transfer_frame("t1", "bob", "1.00", &nonces[0]);
    let line = alice.exchange(&frame);
    let receipt = alice.verify_receipt(&line, "t1", "bob", "1.00", &nonces[0]);
    assert_eq!(receipt.result, "committed");
    // A 900-byte line is within the limit, so it is parsed (and refused as malformed)
    // rather than refused for its length.
    let long = format!("{{\"op\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(880));
    assert_eq!(alice.exchange(&long), error_line(ErrorCode::Malformed));
    let mut c = server.connect_raw();
    let mut too_long = vec![b'x'; 1100];
    too_long.push(b'\n');
    assert!(raw_exchange(&mut c, &too_long, 1)[0].contains("frame_too_long"));
}

#[test]
fn slow_client_is_cut_off_at_the_login_deadline() {
    let server = Server::start(&["--login-deadline", "1"]);
    let mut slow = server.connect_raw();
    slow.write_all(b"{\"op\":\"pi").unwrap();
    let lines = read_lines(&mut slow, 1);
    assert!(
        lines.first().is_some_and(|l| l.contains("timeout")),
        "{lines:?}"
    );
    assert!(closed_by_peer(&mut slow));
    assert!(server.wait_for_log("error.log", "closed code=timeout"));
    let mut other = server.connect_raw();
    assert_eq!(
        raw_exchange(&mut other, b"{\"op\":\"ping\"}\n", 1),
        ["{\"op\":\"pong\"}"]
    );
}

#[test]
fn client_that_never_reads_is_cut_off() {
    let server = Server::start(&["--max-output", "4096", "--write-timeout", "1"]);
    let mut greedy = server.connect_small_window();
    let ping = b"{\"op\":\"ping\"}\n".repeat(2000);
    // Keep sending without reading until the server stops accepting (it is cut off).
    greedy
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..200 {
        if greedy.write_all(&ping).is_err() {
            break;
        }
        if server.log("error.log").contains("output_overflow") {
            break;
        }
    }
    assert!(server.wait_for_log("error.log", "limit output_overflow user=- peer="));
    // No final error arrives (PROTOCOL.md §2): the client reads pongs, perhaps a last one cut
    // short, then the end of the connection (EOF or a reset, which may also drop what was
    // still unread).
    greedy
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut greedy, &mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("output_overflow"), "{text}");
    let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
    assert!(
        complete.lines().all(|l| l == "{\"op\":\"pong\"}"),
        "only whole pongs before the cut: {complete}"
    );
    let mut other = server.connect_raw();
    assert_eq!(
        raw_exchange(&mut other, b"{\"op\":\"ping\"}\n", 1),
        ["{\"op\":\"pong\"}"]
    );
}

#[test]
fn bad_frames_close_the_connection_and_are_logged() {
    let server = Server::start(&["--max-bad-frames", "2"]);
    let mut c = server.connect_raw();
    let lines = raw_exchange(&mut c, b"nope\n{\"op\":1}\n\xff\xfe\n", 3);
    assert!(
        lines[0].contains("malformed") && lines[1].contains("malformed"),
        "{lines:?}"
    );
    assert!(lines[2].contains("too_many_bad_frames"), "{lines:?}");
    assert!(closed_by_peer(&mut c));
}

#[test]
fn closed_registration_and_admin_users() {
    let server = Server::start(&["--registration", "closed"]);
    let mut c = server.client();
    assert_eq!(
        refused(c.register("erin", &password("erin"), ITERATIONS)),
        ErrorCode::RegistrationClosed
    );
    let out = server.admin(
        &[
            "user",
            "add",
            "erin",
            "--balance",
            "20",
            "--password-stdin",
            "--iterations",
            &ITERATIONS.to_string(),
            "--min-iterations",
            &ITERATIONS.to_string(),
        ],
        &format!("{}\n", password("erin")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.admin(
        &["user", "add", "erin", "--password-stdin"],
        "whatever-long\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let mut erin = server.login("erin", false);
    assert_eq!(erin.balance().unwrap(), money("20.00"));
    assert!(server.admin(&["user", "lock", "erin"], "").status.success());
    assert_eq!(
        refused(server.client().login("erin", &password("erin"))),
        ErrorCode::AuthFailed
    );
    // The open session is untouched by the lock.
    assert_eq!(erin.balance().unwrap(), money("20.00"));
    assert!(server
        .admin(&["user", "unlock", "erin"], "")
        .status
        .success());
    drop(server.login("erin", false));
    assert!(!server
        .admin(&["user", "lock", "nobody"], "")
        .status
        .success());
}

#[test]
fn ledger_check_passes_after_load_and_fails_on_corruption() {
    let mut server = Server::start(&["--opening-balance", "50.00"]);
    let names = ["u0", "u1", "u2", "u3"];
    for n in names {
        drop(server.login(n, true));
    }
    let handles: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut c = server.login(name, false);
            let to = names[(i + 1) % names.len()];
            std::thread::spawn(move || {
                for k in 0..40 {
                    let r = c.transfer(&format!("k{k}"), to, Amount(100 + k)).unwrap();
                    assert!(r.result.is_ok() || r.result == Err(ErrorCode::InsufficientFunds));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (ok, text) = ledger_check(&server);
    assert!(ok, "{text}");
    assert!(server.stop());
    let db = rusqlite::Connection::open(server.data_dir.join("txsock.db")).unwrap();
    db.execute(
        "UPDATE users SET balance = balance + 1 WHERE name = 'u1'",
        [],
    )
    .unwrap();
    drop(db);
    let (ok, text) = ledger_check(&server);
    assert!(!ok);
    assert!(
        text.contains("u1: balance") && text.contains("not conserved"),
        "{text}"
    );
}

/// Issue 12, item 1: no path that credits money takes a balance past 10^15 minor units, the
/// ceiling every balance on the wire must respect (docs/PROTOCOL.md §4).
#[test]
fn no_credit_passes_the_balance_ceiling() {
    let server = Server::start(&["--opening-balance", "5.00"]);
    let ceiling = "10000000000000.00";
    let iterations = ITERATIONS.to_string();
    let add = |name: &str, balance: &str| {
        server.admin(
            &[
                "user",
                "add",
                name,
                "--balance",
                balance,
                "--password-stdin",
                "--iterations",
                &iterations,
            ],
            &format!("{}\n", password(name)),
        )
    };
    let out = add("rich", ceiling);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = add("richer", "10000000000000.01");
    assert!(!out.status.success());
    // A deposit and a transfer of one cent more are both refused, and nothing moves.
    let out = server.admin(&["account", "deposit", "rich", "0.01"], "");
    assert!(!out.status.success());
    let mut dave = server.login("dave", true);
    let over = dave.transfer("c1", "rich", money("0.01")).unwrap();
    assert_eq!(
        (over.result, over.balance),
        (Err(ErrorCode::BalanceOverflow), money("5.00"))
    );
    assert_eq!(balance_of(&server, "rich"), money(ceiling));
    assert_eq!(balance_of(&server, "dave"), money("5.00"));
    // rich can still spend, and then receive again up to the ceiling.
    let mut rich = server.login("rich", false);
    assert_eq!(
        rich.transfer("r1", "dave", money("1.00")).unwrap().result,
        Ok(())
    );
    assert_eq!(
        dave.transfer("c2", "rich", money("1.00")).unwrap().result,
        Ok(())
    );
    assert_eq!(balance_of(&server, "rich"), money(ceiling));
    assert!(ledger_check(&server).0);
}

/// The events, each with its key list, that `docs/LOGS.md` documents for log `file`, read
/// from the example column of its tables (`limit` events are named by their second word).
fn documented_events(file: &str) -> Vec<(String, Vec<String>)> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/LOGS.md"),
    )
    .expect("docs/LOGS.md");
    let mut events = Vec::new();
    let mut section = String::new();
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.to_string();
        } else if section.starts_with(&format!("`{file}`")) && line.starts_with("| `") {
            let example = line.trim_end_matches(" |").rsplit(" | ").next().unwrap();
            events.push(log_shape(example.trim_matches('`')));
        }
    }
    assert!(
        !events.is_empty(),
        "docs/LOGS.md documents no event of {file}"
    );
    events
}

/// A log line's event name and keys, checking its timestamp (RFC 3339, UTC, milliseconds).
fn log_shape(line: &str) -> (String, Vec<String>) {
    let mut words = line.split(' ');
    let stamp = words.next().unwrap_or_default();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "timestamp of {line:?}"
    );
    let mut event = words.next().unwrap_or_default().to_string();
    if event == "limit" {
        event = format!("limit {}", words.next().unwrap_or_default());
    }
    let mut keys = Vec::new();
    for word in words {
        let (key, _) = word
            .split_once('=')
            .unwrap_or_else(|| panic!("{word:?} in {line:?}"));
        keys.push(key.to_string());
        if key == "error" {
            break; // free text to the end of the line
        }
    }
    (event, keys)
}

/// Every line the server writes to its three audit logs is an event `docs/LOGS.md`
/// documents for that log, with the documented keys in the documented order.
#[test]
fn audit_log_lines_are_the_ones_docs_logs_md_documents() {
    let server = Server::start(&[
        "--max-bad-frames",
        "1",
        "--lockout-after",
        "1",
        "--opening-balance",
        "100",
    ]);
    server
        .client()
        .register("bob", &password("bob"), ITERATIONS)
        .expect("register bob");
    let mut alice = server.raw_login("alice", true);
    alice.transfer("t-1", "bob", "1.00");
    assert!(alice
        .exchange("{\"op\":\"nonces\",\"count\":0}")
        .contains("malformed"));
    assert_eq!(alice.exchange("{\"op\":\"logout\"}"), "{\"op\":\"bye\"}");
    let failed = LineConn::new(server.connect_raw()).login("alice", "not alice's password");
    assert!(failed.reply.contains("auth_failed"), "{}", failed.reply);
    let mut noisy = server.connect_raw();
    let lines = raw_exchange(&mut noisy, b"x\nx\n", 2);
    assert!(lines[1].contains("too_many_bad_frames"), "{lines:?}");
    drop(server.raw_login("bob", false));
    for (file, needle) in [
        ("sessions.log", "disconnect user=bob"),
        ("sessions.log", "lockout user=alice"),
        ("transactions.log", "transfer id=t-1"),
        ("error.log", "closed code=too_many_bad_frames"),
    ] {
        assert!(server.wait_for_log(file, needle), "{file}: {needle}");
    }
    for file in ["sessions.log", "transactions.log", "error.log"] {
        let documented = documented_events(file);
        for line in server.log(file).lines() {
            let shape = log_shape(line);
            assert!(
                documented.contains(&shape),
                "{file}: {line:?} is not documented in docs/LOGS.md ({shape:?})"
            );
        }
    }
}
