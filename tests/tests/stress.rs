//! `txsock stress`: the load scenario's JSON and HTML report are well-formed, and the replay
//! attack gets the refusals the protocol promises. Behaviour only: no timing or throughput
//! is asserted (benchmarks report numbers; see `cargo xtask bench`).

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use txsock_e2e::txsock_bin;

/// Runs `txsock stress ARGS` in `dir` (so no stray `txsock.toml` is read).
fn stress(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(txsock_bin())
        .arg("stress")
        .args(args)
        .env_remove("TXSOCK_CONFIG")
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .output()
        .expect("run txsock stress");
    assert!(
        out.status.success(),
        "txsock stress {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

#[test]
fn load_writes_well_formed_json_and_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("r.html");
    let out = stress(
        dir.path(),
        &[
            "load",
            "--spawn",
            "--clients",
            "2",
            "--duration",
            "1s",
            "--json",
            "--report",
            report.to_str().expect("utf-8 path"),
        ],
    );
    let v = json(&out);
    assert_eq!(v["scenario"], "load");
    assert_eq!(v["parameters"]["clients"], 2);
    assert_eq!(v["parameters"]["duration_s"], 1);
    let keys = v["parameters"].as_object().expect("parameters object");
    assert!(
        keys.keys().all(|k| k
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')),
        "parameter keys are snake_case: {keys:?}"
    );

    // Transfers were sent and verified by their receipts, without integrity failures.
    let committed = count(&v["transfers"], "committed");
    assert!(committed > 0, "no committed transfers: {}", v["transfers"]);
    let latency = &v["latency_us"];
    assert!(count(latency, "count") >= committed);
    let (p50, p99, max) = (
        count(latency, "p50"),
        count(latency, "p99"),
        count(latency, "max"),
    );
    assert!(
        0 < p50 && p50 <= p99 && p99 <= max,
        "percentiles: {latency}"
    );
    let errors = v["errors"].as_object().expect("errors object");
    assert!(
        !errors.keys().any(|k| k.contains("integrity")),
        "integrity failures: {errors:?}"
    );

    // The spawned server was sampled and reported its commits when it stopped.
    let server = &v["server"];
    assert!(server["line"]
        .as_str()
        .is_some_and(|l| l.starts_with("txsock stopped:")));
    assert!(count(server, "transfers") >= committed);
    assert!(count(server, "commits") > 0);
    let series = v["series"].as_array().expect("series array");
    assert!(!series.is_empty());
    for point in series {
        assert!(point["t"].is_number() && point["per_second"].is_number());
        assert!(point["rss_kib"].as_u64().is_some_and(|k| k > 0), "{point}");
    }
    let memory = v["memory"].as_array().expect("memory phases");
    assert!(memory[0]["before_kib"].as_u64().is_some_and(|k| k > 0));

    // The report is one self-contained page with the four plots and the raw figures.
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), 4, "four plots");
    assert_eq!(html.matches("</svg>").count(), 4);
    for title in [
        "Throughput",
        "Latency percentiles",
        "Server resident memory",
        "Errors",
    ] {
        assert!(html.contains(title), "no {title} plot");
    }
    assert!(html.contains("<polyline"), "plots have lines");
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "self-contained"
    );
}

#[test]
fn replay_attack_gets_refusals_and_moves_money_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = stress(
        dir.path(),
        &[
            "replay",
            "--spawn",
            "--duration",
            "1s",
            "--count",
            "1",
            "--json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["scenario"], "replay");
    let answers = &v["attacks"]["replay"]["answers"];
    let rounds = count(answers, "original: receipt committed");
    assert!(rounds >= 1, "no round completed: {answers}");
    // A replayed frame's nonce is used up; altered, forged and cross-session frames fail
    // their MAC; the ninth bad frame closes the connection.
    assert_eq!(
        count(answers, "replayed: unknown_nonce"),
        rounds,
        "{answers}"
    );
    for probe in [
        "amount changed",
        "recipient changed",
        "forged mac",
        "fresh nonce, forged mac",
        "other session",
    ] {
        assert_eq!(
            count(answers, &format!("{probe}: bad_mac")),
            rounds,
            "{probe}: {answers}"
        );
    }
    assert_eq!(
        count(answers, "repeated replays: too_many_bad_frames"),
        rounds
    );
    // A same-id retry returns the original outcome; the money moved once.
    assert_eq!(count(answers, "same id retried: receipt committed"), rounds);
    assert_eq!(count(answers, "balance: moved once"), rounds);
    let answers = answers.as_object().expect("answers object");
    assert!(
        !answers
            .keys()
            .any(|k| k.ends_with(": receipt") || k.contains("round failed")),
        "{answers:?}"
    );
    assert_eq!(v["headline"]["violations"], 0);
    assert_eq!(v["attacks"]["replay"]["passed"], true);

    // The summary ends the attack with a verdict line and prints counts as integers.
    let out = stress(
        dir.path(),
        &["replay", "--spawn", "--duration", "1s", "--count", "1"],
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("\u{2713} replay: passed, no violation"),
        "{summary}"
    );
    assert!(summary.contains("  duration: 1 s\n"), "{summary}");
    assert!(
        !summary.contains(".0)"),
        "a whole count with a decimal: {summary}"
    );
}

/// `user-timing` times failed logins as a real user and as unknown names and reports both
/// medians and their ratio. Behaviour only: the figures' presence and consistency, never
/// their values (the measured figures are in issue 12's closing note and PROTOCOL.md §16).
#[test]
fn user_timing_reports_both_medians_and_their_ratio() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = stress(
        dir.path(),
        &["user-timing", "--spawn", "--duration", "1s", "--json"],
    );
    let v = json(&out);
    assert_eq!(v["scenario"], "user-timing");
    let attack = &v["attacks"]["user-timing"];
    let answers = attack["answers"].as_object().expect("answers object");
    assert!(
        answers.keys().all(|k| k.ends_with(": auth_failed")),
        "every probe is answered auth_failed: {attack}"
    );
    let f = &attack["figures"];
    let figure = |k: &str| {
        f[k].as_f64()
            .unwrap_or_else(|| panic!("figure {k} missing: {f}"))
    };
    for kind in ["wrong_password", "unknown_user"] {
        assert!(figure(&format!("{kind}_samples")) >= 1.0, "{f}");
        let (p25, median, p75) = (
            figure(&format!("{kind}_p25_us")),
            figure(&format!("{kind}_median_us")),
            figure(&format!("{kind}_p75_us")),
        );
        assert!(0.0 < p25 && p25 <= median && median <= p75, "{kind}: {f}");
    }
    let ratio = figure("wrong_password_median_us") / figure("unknown_user_median_us");
    assert!(
        (figure("median_ratio") - ratio).abs() < 0.01,
        "median_ratio is the ratio of the medians: {f}"
    );
    assert!([0.0, 1.0].contains(&figure("middle_halves_overlap")), "{f}");
}

/// `load --server A,B`: the client that starts on A, which cannot be reached, moves to B,
/// and the load runs there (without the move it would commit nothing).
#[test]
fn load_moves_to_the_next_server_when_one_is_unreachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = txsock_e2e::Server::start(&["--opening-balance", "1000.00"]);
    // A loopback port nobody listens on (bound, then released).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let servers = format!("{dead},{}", server.addr);
    let out = stress(
        dir.path(),
        &[
            "load",
            "--server",
            &servers,
            "--iterations",
            "4096",
            "--clients",
            "1",
            "--duration",
            "1s",
            "--json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["parameters"]["server"], servers.as_str());
    assert!(
        count(&v["transfers"], "committed") > 0,
        "no committed transfers: {v}"
    );
}
