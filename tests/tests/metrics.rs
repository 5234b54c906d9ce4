//! `txsock serve --metrics` (issue 19, "Metrics"): the endpoint serves the Prometheus text
//! format; known traffic moves exactly the counters it should; and during a `txsock stress
//! load` the counters move, and afterwards agree with what the load reports it did.
//! Behaviour only: no rate or latency figure is asserted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use txsock_e2e::*;

/// One HTTP request; returns the status line, the headers and the body.
fn http_get(address: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: */*\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// The samples of one scrape: series (name and labels, as written) to value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn take(address: SocketAddr) -> Scrape {
        let (status, headers, body) = http_get(address, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
        assert!(
            headers.contains("Content-Type: text/plain; version=0.0.4"),
            "not the Prometheus text format: {headers}"
        );
        let mut samples = HashMap::new();
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line:?}"));
            samples.insert(series.to_string(), value);
        }
        Scrape(samples)
    }

    /// A sample's value, 0 if the series is absent (a labelled series appears when first
    /// counted).
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The sum over a family's labelled series (`name{...}`).
    fn sum(&self, name: &str) -> f64 {
        let prefix = format!("{name}{{");
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Polls the endpoint until `done` holds for a scrape, for at most `limit`.
fn scrape_until(address: SocketAddr, limit: Duration, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + limit;
    loop {
        let scrape = Scrape::take(address);
        if done(&scrape) || Instant::now() > deadline {
            return scrape;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const COMMITTED: &str = "txsock_transfers_committed_total";
const LOGINS_OK: &str = "txsock_logins_total{result=\"ok\"}";

#[test]
fn known_traffic_moves_exactly_its_counters() {
    let server = Server::start(&["--metrics", "127.0.0.1:0", "--opening-balance", "100"]);
    let metrics = server.metrics_addr();
    let before = Scrape::take(metrics);
    assert_eq!(before.get(COMMITTED), 0.0);
    assert!(before.get("process_resident_memory_bytes") > 0.0 || cfg!(not(target_os = "linux")));

    let mut alice = server.raw_login("alice", true);
    let mut bob = server.raw_login("bob", true);
    assert_eq!(alice.transfer("t1", "bob", "1.00").result, "committed");
    assert_eq!(alice.transfer("t1", "bob", "1.00").result, "committed");
    assert_eq!(
        alice.transfer("t2", "bob", "5000.00").result,
        "insufficient_funds"
    );
    // A frame whose MAC was tampered with, then a genuine frame sent twice (a replay).
    let nonce = alice.nonce();
    let mut forged = alice.transfer_frame("t3", "bob", "2.00", &nonce);
    forged = forged.replace("\"mac\":\"", "\"mac\":\"0");
    forged.truncate(forged.len() - 3);
    forged.push_str("\"}");
    assert!(alice.exchange(&forged).contains("bad_mac"), "{forged}");
    let nonce = alice.nonce();
    let genuine = alice.transfer_frame("t4", "bob", "2.00", &nonce);
    let receipt = alice.exchange(&genuine);
    assert_eq!(
        alice
            .verify_receipt(&receipt, "t4", "bob", "2.00", &nonce)
            .result,
        "committed"
    );
    assert!(alice.exchange(&genuine).contains("unknown_nonce"));
    assert!(bob.exchange("{nonsense").contains("malformed"));
    let mut mallory = LineConn::new(server.connect_raw());
    assert!(mallory.login("alice", "not-her-password").keys.is_none());

    let after = scrape_until(metrics, Duration::from_secs(5), |s| {
        s.get("txsock_logins_total{result=\"wrong_password\"}") >= 1.0
    });
    let expect = [
        ("txsock_registrations_total", 2.0),
        (LOGINS_OK, 2.0),
        ("txsock_logins_total{result=\"wrong_password\"}", 1.0),
        (COMMITTED, 2.0),
        ("txsock_transfers_repeated_total", 1.0),
        (
            "txsock_transfers_refused_total{reason=\"insufficient_funds\"}",
            1.0,
        ),
        ("txsock_mac_failures_total", 1.0),
        ("txsock_replays_total", 1.0),
        ("txsock_frames_rejected_total{code=\"bad_mac\"}", 1.0),
        ("txsock_frames_rejected_total{code=\"unknown_nonce\"}", 1.0),
        ("txsock_frames_rejected_total{code=\"malformed\"}", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(after.get(series), value, "{series}");
    }
    // Two registrations, three logins and the raw connections, all counted once.
    assert!(after.get("txsock_connections_accepted_total") >= 5.0);
    assert!(after.get("txsock_connections_open") >= 2.0);
    assert_commit_histograms_agree(&after);

    // Anything but /metrics is a clear 404; the server keeps serving.
    let (status, _, body) = http_get(metrics, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(body.contains("/metrics"), "{body}");
    alice.balance();
}

/// Every committed batch is in both histograms once, and each histogram's `+Inf` bucket is
/// its count. (The counts equal `txsock_commits_total` because this server's SQLite commits
/// each batch in one transaction; a split MySQL batch would count more transactions.)
fn assert_commit_histograms_agree(scrape: &Scrape) {
    let commits = scrape.get("txsock_commits_total");
    assert!(commits > 0.0);
    for histogram in ["txsock_commit_batch_size", "txsock_commit_seconds"] {
        let count = scrape.get(&format!("{histogram}_count"));
        assert_eq!(count, commits, "{histogram}_count");
        assert_eq!(
            scrape.get(&format!("{histogram}_bucket{{le=\"+Inf\"}}")),
            count,
            "{histogram} +Inf bucket"
        );
    }
    // A batch holds every ledger request (logins too), so at least one per committed
    // transfer and one per batch.
    let requests = scrape.get("txsock_commit_batch_size_sum");
    assert!(requests >= commits && requests >= scrape.get(COMMITTED));
}

#[test]
fn counters_move_during_a_load_and_agree_with_it_after() {
    // The load's users need money to send (`stress load --spawn` gives the same).
    let server = Server::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--opening-balance",
        "1000000000",
    ]);
    let metrics = server.metrics_addr();
    let before = Scrape::take(metrics);
    let clients = 2.0;
    let temp = tempfile::tempdir().expect("temp dir");
    let load = Command::new(txsock_bin())
        .args(["stress", "load", "--server", &server.addr.to_string()])
        .args(["--clients", "2", "--duration", "3s", "--json"])
        .args(["--iterations", &ITERATIONS.to_string()])
        .env_remove("TXSOCK_CONFIG")
        .env("RUST_LOG", "warn")
        .current_dir(temp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run txsock stress load");

    // During the load: both clients are connected and transfers are being committed.
    let first = scrape_until(metrics, Duration::from_secs(30), |s| {
        s.get(LOGINS_OK) >= before.get(LOGINS_OK) + clients && s.get(COMMITTED) > 0.0
    });
    assert!(
        first.get(COMMITTED) > 0.0,
        "no commit within 30 s of the load"
    );
    assert!(first.get("txsock_connections_open") >= clients);
    let second = scrape_until(metrics, Duration::from_secs(10), |s| {
        s.get(COMMITTED) > first.get(COMMITTED)
    });
    assert!(
        second.get(COMMITTED) > first.get(COMMITTED),
        "the committed counter did not move during the load"
    );

    let out = output_within(load, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "stress load failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stress JSON");
    let committed = report["transfers"]["committed"]
        .as_u64()
        .expect("transfers.committed") as f64;
    assert!(committed > 0.0);

    let after = Scrape::take(metrics);
    let logged = server
        .log("transactions.log")
        .lines()
        .filter(|l| l.contains(" transfer "))
        .count() as f64;
    // The counter is the server's own record: one transactions.log line per commit.
    assert_eq!(
        after.get(COMMITTED),
        logged,
        "counter and transactions.log differ"
    );
    assert_eq!(
        after.get(COMMITTED) - before.get(COMMITTED),
        committed,
        "the server's committed counter and the load's verified receipts differ \
         (transactions.log has {logged}; load errors {})",
        report["errors"]
    );
    let refused_by_load: u64 = report["transfers"]["refused"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    assert_eq!(
        after.sum("txsock_transfers_refused_total") - before.sum("txsock_transfers_refused_total"),
        refused_by_load as f64
    );
    assert!(after.get(LOGINS_OK) - before.get(LOGINS_OK) >= clients);
    assert!(after.get("txsock_registrations_total") >= clients);
    assert!(
        after.get("txsock_connections_accepted_total")
            - before.get("txsock_connections_accepted_total")
            >= clients
    );
    // A well-behaved load sends no bad frame.
    assert_eq!(after.get("txsock_mac_failures_total"), 0.0);
    assert_eq!(after.get("txsock_replays_total"), 0.0);
    assert_eq!(after.get("txsock_commit_failures_total"), 0.0);
    assert_commit_histograms_agree(&after);
    if cfg!(target_os = "linux") {
        assert!(after.get("process_resident_memory_bytes") > 1e6);
    }
    // The load's clients have gone.
    let idle = scrape_until(metrics, Duration::from_secs(10), |s| {
        s.get("txsock_connections_open") == 0.0
    });
    assert_eq!(idle.get("txsock_connections_open"), 0.0);
}

#[test]
fn metrics_port_in_use_is_refused_before_anything_is_created() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let out = Command::new(txsock_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics", &address])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("TXSOCK_CONFIG")
        .current_dir(temp.path())
        .stdin(Stdio::null())
        .output()
        .expect("run txsock serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot serve metrics on {address}"))
            && stderr.contains("--metrics"),
        "{stderr}"
    );
    assert!(!data.exists(), "a data directory was created");
}
