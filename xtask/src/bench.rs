//! `cargo xtask bench`: every performance figure of the design brief in one run, each next
//! to its anchor measured in the same run, written to `target/bench/summary.md`.
//!
//! 1. core: core's `frame_ratio` bench (transfer frames per second against raw HMAC-SHA256
//!    over the same bytes, alternating in short rounds, each side at the 1st percentile of
//!    its timed batches);
//! 2. durable transfers/s with 32 clients and the 1-client median round trip (`txsock stress
//!    load --spawn`) against pgbench's TPC-B on a throwaway PostgreSQL cluster, fsync on
//!    ([`crate::pgbench`]);
//!    then the same load on a throwaway three-node Galera cluster with one server and with
//!    three ([`crate::galera_bench`]);
//! 3. server memory with 10,000 idle logged-in connections (`txsock stress connections`), then
//!    with 100,000 (several 127.0.0.x source addresses), or with as many as the open-file hard
//!    limit allows when it cannot be raised that far (the row gives that count, the bytes per
//!    connection and the memory 100,000 would hold at that rate);
//! 4. server memory growth under the attack mix (`txsock stress mix`);
//! 5. the figures of 2 and 3 again over TLS 1.3 (`--tls`), each beside its plaintext figure
//!    from this run;
//! 6. the same 32-client load on a throwaway MariaDB server ([`crate::mariadb`]) against the
//!    same pgbench figure;
//! 7. the physical floor of a durable commit: the median of one 4 KiB write and `fdatasync`
//!    on the disk where the spawned servers keep their data, over up to 1,000 syncs just
//!    before and 1,000 just after the single-client load (the anchor of its round trip).
//!
//! It reports and asserts nothing: a figure that could not be measured says why in the table.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::pgbench::{self, Postgres};
use crate::util::{display, output, repo_root, run, Error};
use crate::{cargo, galera_bench};

/// The bench of the core row: `core/benches/frame_ratio.rs`.
const CORE_BENCH: &str = "frame_ratio";
/// Frames per second the core should reach, as a fraction of raw HMAC-SHA256 over the same
/// bytes.
const TARGET_RATIO: f64 = 0.33;

/// How long each transfer load runs (txsock) and each pgbench run (PostgreSQL).
const LOAD_SECONDS: u32 = 15;
/// pgbench's scale: one branch per client, so 32 clients do not queue on one row.
const PG_SCALE: u32 = 32;
/// Clients of the concurrent figure, and their pipeline depth.
const CLIENTS: u32 = 32;
const PIPELINE: u32 = 8;
/// Idle logged-in connections of the memory figure, and its target.
const CONNECTIONS: u32 = 10_000;
const CONNECTIONS_TARGET_MIB: f64 = 48.0;
/// How long the attack mix runs, and the growth target.
/// The large idle-connection figure (needs an open-file limit above it: raised by the
/// stress tool when it may) and its target.
const MANY_CONNECTIONS: u32 = 100_000;
const MANY_CONNECTIONS_TARGET_MIB: f64 = 400.0;
const MIX_SECONDS: u32 = 20;
const MIX_TARGET_MIB: f64 = 2.0;
/// Durable transfers/s as a multiple of pgbench's tps, and the round-trip fraction.
const THROUGHPUT_TARGET: f64 = 10.0;
const ROUND_TRIP_TARGET: f64 = 1.0 / 3.0;
/// The single-client round trip as a multiple of one fdatasync on the same disk.
const FLOOR_TARGET: f64 = 1.5;
/// Syncs of one fdatasync measurement at most, the time it may take at most, and the syncs
/// first done and not counted (the file's first syncs also allocate its blocks).
const FSYNC_ROUNDS: usize = 1000;
const FSYNC_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);
const FSYNC_WARMUP: usize = 20;
/// Medians of the two fdatasync measurements further apart than this factor: the disk was
/// busy with other work, and the summary says the floor ratio is uncertain.
const FSYNC_SPREAD: f64 = 1.5;

/// Times, in milliseconds and sorted, of writing 4 KiB at the start of a file in `dir` and
/// `fdatasync`ing it (`File::sync_data`): up to `rounds` rounds within `budget` (at least
/// one), after [`FSYNC_WARMUP`] rounds not counted. One commit of SQLite's WAL or
/// PostgreSQL's does at least this.
fn fdatasync_times(
    dir: &Path,
    rounds: usize,
    budget: std::time::Duration,
) -> Result<Vec<f64>, Error> {
    use std::io::{Seek, SeekFrom, Write};
    use std::time::Instant;
    let path = dir.join(format!("txsock-fdatasync-{}", std::process::id()));
    let result = (|| -> std::io::Result<Vec<f64>> {
        let mut file = fs::File::create(&path)?;
        let block = [0x5au8; 4096];
        file.write_all(&block)?;
        file.sync_all()?;
        let mut round = || -> std::io::Result<f64> {
            let started = Instant::now();
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&block)?;
            file.sync_data()?;
            Ok(started.elapsed().as_secs_f64() * 1000.0)
        };
        for _ in 0..FSYNC_WARMUP {
            round()?;
        }
        let started = Instant::now();
        let mut times = Vec::with_capacity(rounds);
        while times.is_empty() || (times.len() < rounds && started.elapsed() < budget) {
            times.push(round()?);
        }
        times.sort_by(f64::total_cmp);
        Ok(times)
    })();
    let _ = fs::remove_file(&path);
    result.map_err(|e| Error::new(format!("fdatasync loop in {}: {e}", dir.display())))
}

/// The value at fraction `p` (0 to 1) of `sorted`, the nearest rank below; NaN if empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).floor() as usize;
    sorted[rank]
}

/// The physical floor of a durable commit on the disk where the spawned servers keep their
/// data, measured just before and just after the single-client load, so that it sees the
/// disk as the round trip saw it. A single loop minutes earlier moved with whatever else the
/// shared disk did at that moment.
struct Floor {
    /// Sorted times of the measurement before the load, in milliseconds.
    before: Vec<f64>,
    /// Sorted times of the measurement after the load, in milliseconds.
    after: Vec<f64>,
}

impl Floor {
    /// Every sync of both measurements, sorted.
    fn pooled(&self) -> Vec<f64> {
        let mut all = [self.before.as_slice(), self.after.as_slice()].concat();
        all.sort_by(f64::total_cmp);
        all
    }

    /// The anchor of the round trip: the median of every sync, compared like with like with
    /// the round trip's own median (which contains one commit's syncs).
    fn median(&self) -> f64 {
        percentile(&self.pooled(), 0.5)
    }

    /// Whether the two measurements disagree by more than [`FSYNC_SPREAD`].
    fn unsteady(&self) -> bool {
        let (a, b) = (percentile(&self.before, 0.5), percentile(&self.after, 0.5));
        a.max(b) > FSYNC_SPREAD * a.min(b)
    }

    /// The anchor column: the median and how steady it was.
    fn describe(&self) -> String {
        let all = self.pooled();
        format!(
            "one 4 KiB write + fdatasync on the same disk, median of {} syncs before and \
             after the load: {:.3} ms (p10 {:.3}; before {:.3}, after {:.3})",
            all.len(),
            percentile(&all, 0.5),
            percentile(&all, 0.1),
            percentile(&self.before, 0.5),
            percentile(&self.after, 0.5),
        )
    }
}

/// One row of the summary table.
struct Row {
    figure: &'static str,
    txsock: String,
    anchor: String,
    ratio: String,
    target: String,
    met: &'static str,
}

impl Row {
    fn failed(figure: &'static str, target: &str, error: &Error) -> Row {
        Row {
            figure,
            txsock: format!("not measured: {error}"),
            anchor: "-".into(),
            ratio: "-".into(),
            target: target.into(),
            met: "?",
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}

/// What a `stress connections --json` report says the server held: MiB, connections logged
/// in, and both with the bytes each, as the rows print them.
fn held_connections(json: &str) -> (f64, f64, String) {
    let mib = number(json, "held_kib").unwrap_or(f64::NAN) / 1024.0;
    let logged_in = number(json, "connections_logged_in").unwrap_or(f64::NAN);
    let per = number(json, "per_connection_bytes").unwrap_or(f64::NAN);
    let text = format!(
        "{mib:.1} MiB ({} logged in, {} bytes each over the idle server)",
        thousands(logged_in),
        thousands(per)
    );
    (mib, logged_in, text)
}

/// Whether the core row meets its target: its figure (each side's fastest batches) and the
/// median batches' ratio must both reach it. A run whose median falls short while its
/// fastest batches reach it was disturbed by other work on the machine: it settles nothing.
fn core_met(ratio: f64, median_ratio: f64) -> &'static str {
    match (ratio >= TARGET_RATIO, median_ratio >= TARGET_RATIO) {
        (true, true) => "yes",
        (true, false) => "uncertain (the median batches fall short: a contended run, run again)",
        (false, _) => "no",
    }
}

/// Open files the stress tool keeps beside one per connection (its `FILES_SPARE`): the
/// server it spawns needs fewer (runtime, logs, database, listener).
const STRESS_FILES_SPARE: u64 = 256;

/// The open-file hard limit of this process, which the stress tool and the server it spawns
/// inherit (each may raise its soft limit to it; only `CAP_SYS_RESOURCE` may raise it), from
/// `/proc/self/limits`; `None` where that file is missing or says "unlimited".
fn open_file_hard_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    hard_limit_in(&limits, "Max open files")
}

/// The hard limit (third column) of the row `name` of a `/proc/PID/limits` text.
fn hard_limit_in(limits: &str, name: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|line| line.strip_prefix(name))?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Connections of the large idle figure: [`MANY_CONNECTIONS`], or fewer if the open-file
/// hard limit `hard` is lower: every connection is one file in the stress tool and one in
/// the server (two processes, each with its own limit), and the stress tool refuses a count
/// above its limit less [`STRESS_FILES_SPARE`]. An unknown limit leaves the full count (the
/// stress tool then says what stopped it).
fn many_connections_count(hard: Option<u64>) -> u32 {
    match hard {
        Some(hard) => hard
            .saturating_sub(STRESS_FILES_SPARE)
            .min(u64::from(MANY_CONNECTIONS)) as u32,
        None => MANY_CONNECTIONS,
    }
}

/// The server's resident MiB at `count` connections, from `held_kib` at `measured`
/// connections costing `per_connection` bytes each.
fn projected_mib(held_kib: f64, per_connection: f64, measured: f64, count: u32) -> f64 {
    (held_kib * 1024.0 + per_connection * (f64::from(count) - measured)) / (1024.0 * 1024.0)
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The first number after `"key":` in a JSON text (`None` for `null` or no such key). The
/// stress tool's `headline` keys are unique in its output; xtask has no JSON parser.
pub(crate) fn number(json: &str, key: &str) -> Option<f64> {
    let quoted = format!("\"{key}\":");
    let rest = json[json.find(&quoted)? + quoted.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Where cargo builds: `$CARGO_TARGET_DIR`, or `target`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    root.join(
        env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target")),
    )
}

/// Runs `txsock stress ARGS --spawn --json --report DIR/NAME.html`, keeps the JSON in
/// `DIR/NAME.json` and returns it.
fn stress(txsock: &Path, dir: &Path, name: &str, args: &[&str]) -> Result<String, Error> {
    stress_with(txsock, dir, name, args, &["--spawn"])
}

/// [`stress`] with `extra` in place of `--spawn` (e.g. nothing, when ARGS name servers).
pub(crate) fn stress_with(
    txsock: &Path,
    dir: &Path,
    name: &str,
    args: &[&str],
    extra: &[&str],
) -> Result<String, Error> {
    run_stress(txsock, dir, name, args, extra, false)
}

/// [`stress`] (ARGS give `--spawn` or the server), with the stress tool's last line of
/// error output in the error: what stopped it (e.g. an open-file limit it may not raise).
fn stress_telling_why(
    txsock: &Path,
    dir: &Path,
    name: &str,
    args: &[&str],
) -> Result<String, Error> {
    run_stress(txsock, dir, name, args, &[], true)
}

/// Runs `txsock stress ARGS EXTRA --json --report DIR/NAME.html`, keeps the JSON in
/// `DIR/NAME.json` and returns it. The stress tool's error output goes straight to ours,
/// or, if `tell_why`, is shown once it has finished and its last line ends the error of a
/// failed run.
fn run_stress(
    txsock: &Path,
    dir: &Path,
    name: &str,
    args: &[&str],
    extra: &[&str],
    tell_why: bool,
) -> Result<String, Error> {
    let report = dir.join(format!("{name}.html"));
    let mut command = Command::new(txsock);
    command
        .arg("stress")
        .args(args)
        .args(extra)
        .args(["--json", "--report"])
        .arg(&report)
        .env_remove("TXSOCK_CONFIG")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(if tell_why {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
    let shown = display(&command);
    println!("$ {shown}");
    let out = command
        .output()
        .map_err(|e| Error::new(format!("could not start `{shown}`: {e}")))?;
    let errors = String::from_utf8_lossy(&out.stderr);
    eprint!("{errors}");
    if !out.status.success() {
        let why = match errors.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!(": {line}"),
            None if tell_why => ": no error output".into(),
            None => String::new(),
        };
        return Err(Error::new(format!(
            "`{shown}` failed ({}){why}",
            out.status
        )));
    }
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let path = dir.join(format!("{name}.json"));
    fs::write(&path, &json).map_err(|e| Error::new(format!("writing {}: {e}", path.display())))?;
    Ok(json)
}

/// A line about the machine: CPU, cores, memory, kernel, file system of the temporary
/// directory (where both databases live), and the load average now.
fn machine() -> String {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("?".to_string(), |kib| {
            format!("{:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = crate::util::output(Command::new("uname").arg("-sr")).unwrap_or_default();
    let fs_type = crate::util::output(
        Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(env::temp_dir()),
    )
    .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {memory}, {}, {} ({}) for both databases",
        kernel.trim(),
        env::temp_dir().display(),
        fs_type.trim()
    )
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// `cargo xtask bench`: every figure, then `target/bench/summary.md`.
pub fn bench() -> Result<(), Error> {
    let root = repo_root();
    let dir = target_dir(&root).join("bench");
    fs::create_dir_all(&dir).map_err(|e| Error::new(format!("creating {}: {e}", dir.display())))?;
    let load_at_start = load_average();
    let mut rows = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // 1. The core against raw HMAC.
    let core_figure =
        "core: transfer frames parsed, verified, answered and encoded per second, one core";
    match core_bench(&root) {
        Ok(c) => {
            rows.push(Row {
                figure: core_figure,
                txsock: format!("{}/s", thousands(1e9 / c.frame_ns)),
                anchor: format!(
                    "raw HMAC-SHA256 over the same {} bytes: {}/s",
                    c.bytes,
                    thousands(1e9 / c.hmac_ns)
                ),
                ratio: format!(
                    "{:.2} (1st percentile of each side's batches, {} rounds alternating; \
                     per tenth of the run {:.3}–{:.3}; from median batches {:.3})",
                    c.ratio, c.rounds, c.block_min, c.block_max, c.median_ratio
                ),
                target: format!("≥ {TARGET_RATIO:.2}"),
                met: core_met(c.ratio, c.median_ratio),
            });
        }
        Err(e) => rows.push(Row::failed(core_figure, "≥ 0.33", &e)),
    }

    // The server and the stress tool, optimised.
    let txsock = run(cargo(&root).args(["build", "--release", "-p", "txsock-host"]))
        .map(|()| target_dir(&root).join("release").join("txsock"));

    // 2. Durability: PostgreSQL first (then stopped), then txsock on the same disk.
    let anchor = Postgres::start().and_then(|pg| {
        pg.init(PG_SCALE)?;
        let many = pg.run(CLIENTS, LOAD_SECONDS, false)?;
        let one = pg.run(1, LOAD_SECONDS, true)?;
        Ok((many, one))
    });
    let seconds = format!("{LOAD_SECONDS}s");
    let clients = CLIENTS.to_string();
    let pipeline = PIPELINE.to_string();
    let many = txsock.as_ref().map_err(clone_error).and_then(|bin| {
        stress(
            bin,
            &dir,
            "load-32",
            &[
                "load",
                "--clients",
                &clients,
                "--pipeline",
                &pipeline,
                "--duration",
                &seconds,
            ],
        )
    });
    // The physical floor, on the disk where the spawned servers keep their data, around the
    // single-client load.
    let floor_before = fdatasync_times(&env::temp_dir(), FSYNC_ROUNDS, FSYNC_BUDGET);
    let one = txsock.as_ref().map_err(clone_error).and_then(|bin| {
        stress(
            bin,
            &dir,
            "load-1",
            &[
                "load",
                "--clients",
                "1",
                "--pipeline",
                "1",
                "--duration",
                &seconds,
            ],
        )
    });
    let floor = floor_before.and_then(|before| {
        let after = fdatasync_times(&env::temp_dir(), FSYNC_ROUNDS, FSYNC_BUDGET)?;
        Ok(Floor { before, after })
    });
    let throughput_figure = "durable transfers/s, 32 clients, loopback, SQLite";
    let throughput_target = format!("≥ {THROUGHPUT_TARGET:.0}x pgbench tps");
    match (&many, &anchor) {
        (Ok(json), Ok((pg, _))) => {
            let tps = number(json, "transfers_per_second").unwrap_or(f64::NAN);
            let ratio = tps / pg.tps;
            rows.push(Row {
                figure: throughput_figure,
                txsock: format!(
                    "{}/s (pipeline {PIPELINE}; {} transfers per commit, largest {})",
                    thousands(tps),
                    number(json, "transfers_per_commit").map_or("?".into(), |v| format!("{v:.1}")),
                    number(json, "largest_batch").map_or("?".into(), |v| format!("{v:.0}")),
                ),
                anchor: format!(
                    "pgbench TPC-B, {CLIENTS} clients, scale {PG_SCALE}, fsync on: {} tps",
                    thousands(pg.tps)
                ),
                ratio: format!("{ratio:.1}x"),
                target: throughput_target,
                met: met(ratio >= THROUGHPUT_TARGET),
            });
        }
        (Err(e), _) | (_, Err(e)) => {
            rows.push(Row::failed(throughput_figure, &throughput_target, e))
        }
    }
    let floor_figure = "single-client transfer round trip, durable, median, against the disk";
    let floor_target = format!("≤ {FLOOR_TARGET:.1}x one fdatasync");
    match (&one, &floor) {
        (Ok(json), Ok(floor)) => {
            let ms = number(json, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0;
            let ratio = ms / floor.median();
            if floor.unsteady() {
                notes.push(format!(
                    "{floor_figure}: the disk was busy with other work (the fdatasync medians \
                     before and after the load differ by more than {FSYNC_SPREAD}x), so the \
                     ratio is uncertain; run it again on a quiet machine"
                ));
            }
            rows.push(Row {
                figure: floor_figure,
                txsock: format!("{ms:.2} ms"),
                anchor: floor.describe(),
                ratio: format!("{ratio:.2}x"),
                target: floor_target,
                met: met(ratio <= FLOOR_TARGET),
            });
        }
        (Err(e), _) | (_, Err(e)) => rows.push(Row::failed(floor_figure, &floor_target, e)),
    }
    let round_trip_figure = "single-client transfer round trip, durable, median";
    let round_trip_target = "≤ 1/3 of pgbench's".to_string();
    match (&one, &anchor) {
        (Ok(json), Ok((_, pg))) => {
            let ms = number(json, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0;
            let pg_ms = pg.latency_median_ms.unwrap_or(pg.latency_avg_ms);
            let ratio = ms / pg_ms;
            rows.push(Row {
                figure: round_trip_figure,
                txsock: format!("{ms:.2} ms"),
                anchor: format!("pgbench TPC-B, 1 client, fsync on: median {pg_ms:.2} ms"),
                ratio: format!("{ratio:.2}"),
                target: round_trip_target,
                met: met(ratio <= ROUND_TRIP_TARGET),
            });
        }
        (Err(e), _) | (_, Err(e)) => {
            rows.push(Row::failed(round_trip_figure, &round_trip_target, e))
        }
    }

    // The same load on a three-node Galera cluster: one server, then three.
    let load = [
        "--clients",
        clients.as_str(),
        "--pipeline",
        pipeline.as_str(),
        "--duration",
        seconds.as_str(),
    ];
    let (galera_one, galera_three) = match &txsock {
        Ok(bin) => galera_bench::measure(bin, &dir, &load, |name, args| {
            stress_with(bin, &dir, name, args, &[])
        }),
        Err(e) => (Err(clone_error(e)), Err(clone_error(e))),
    };
    let sqlite_tps = many
        .as_ref()
        .ok()
        .and_then(|json| number(json, "transfers_per_second"));
    for (figure, result) in [
        (
            "durable transfers/s, 32 clients, Galera (3 nodes), 1 server",
            &galera_one,
        ),
        (
            "durable transfers/s, 32 clients, Galera (3 nodes), 3 servers",
            &galera_three,
        ),
    ] {
        let target = "none: on 2 shared cores, correctness under contention, not scaling";
        match result {
            Ok(galera_bench::Run { json, commits }) => {
                let commits = *commits;
                let tps = number(json, "transfers_per_second").unwrap_or(f64::NAN);
                rows.push(Row {
                    figure,
                    txsock: format!("{}/s (pipeline {PIPELINE})", thousands(tps)),
                    anchor: sqlite_tps.map_or("-".into(), |s| {
                        format!("the SQLite row: {}/s", thousands(s))
                    }),
                    ratio: sqlite_tps.map_or("-".into(), |s| format!("{:.2}x", tps / s)),
                    target: target.into(),
                    met: "-",
                });
                notes.push(format!(
                    "{figure}: {} transfers per commit on average (largest commit {} \
                     requests), latency p50 {:.2} ms, p99 {:.2} ms; load errors (internal \
                     answers, lost connections, moves to another server): {} (`{}`).",
                    commits
                        .and_then(|c| c.per_commit())
                        .map_or("? (a server did not stop cleanly)".into(), |v| format!(
                            "{v:.1}"
                        )),
                    commits
                        .and_then(|c| c.largest_batch)
                        .map_or("?".into(), |v| v.to_string()),
                    number(json, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0,
                    number(json, "latency_p99_us").unwrap_or(f64::NAN) / 1000.0,
                    errors_of(json),
                    if figure.ends_with("1 server") {
                        "galera-1.html"
                    } else {
                        "galera-3.html"
                    },
                ));
            }
            Err(e) => rows.push(Row::failed(figure, target, e)),
        }
    }

    // 3. Memory of idle logged-in connections.
    let count = CONNECTIONS.to_string();
    let connections = txsock.as_ref().map_err(clone_error).and_then(|bin| {
        stress(
            bin,
            &dir,
            "connections",
            &["connections", "--count", &count],
        )
    });
    let connections_figure = "server memory, 10,000 idle logged-in connections";
    let connections_target = format!("≤ {CONNECTIONS_TARGET_MIB:.0} MiB resident");
    match &connections {
        Ok(json) => {
            let (mib, logged_in, held) = held_connections(json);
            rows.push(Row {
                figure: connections_figure,
                txsock: held,
                anchor: "-".into(),
                ratio: "-".into(),
                target: connections_target,
                met: met(mib <= CONNECTIONS_TARGET_MIB && logged_in >= f64::from(CONNECTIONS)),
            });
        }
        Err(e) => rows.push(Row::failed(connections_figure, &connections_target, e)),
    }

    // 3b. The same at 100,000 connections (from several 127.0.0.x source addresses), or at
    // as many as the open-file hard limit allows each process, with the rate per connection
    // carried on to 100,000.
    let many_count = many_connections_count(open_file_hard_limit());
    let many_count_text = many_count.to_string();
    let many_connections = txsock.as_ref().map_err(clone_error).and_then(|bin| {
        stress_telling_why(
            bin,
            &dir,
            "connections-100k",
            &["connections", "--count", &many_count_text, "--spawn"],
        )
    });
    let many_figure = "server memory, 100,000 idle logged-in connections";
    let many_target = format!("≤ {MANY_CONNECTIONS_TARGET_MIB:.0} MiB resident");
    match &many_connections {
        Ok(json) => {
            let (mib, logged_in, held) = held_connections(json);
            let per = number(json, "per_connection_bytes").unwrap_or(f64::NAN);
            let row = if many_count >= MANY_CONNECTIONS {
                Row {
                    figure: many_figure,
                    txsock: held,
                    anchor: "-".into(),
                    ratio: "-".into(),
                    target: many_target,
                    met: met(mib <= MANY_CONNECTIONS_TARGET_MIB
                        && logged_in >= f64::from(MANY_CONNECTIONS)),
                }
            } else {
                let projected = projected_mib(mib * 1024.0, per, logged_in, MANY_CONNECTIONS);
                Row {
                    figure: many_figure,
                    txsock: format!(
                        "{} held, the most the open-file hard limit ({} files a process) \
                         allows: {held}; at that rate 100,000 would hold {projected:.1} MiB",
                        thousands(f64::from(many_count)),
                        open_file_hard_limit().map_or_else(|| "?".into(), |h| thousands(h as f64)),
                    ),
                    anchor: "-".into(),
                    ratio: "-".into(),
                    target: many_target,
                    met: if logged_in >= f64::from(many_count)
                        && projected <= MANY_CONNECTIONS_TARGET_MIB
                    {
                        "projected"
                    } else {
                        "no"
                    },
                }
            };
            rows.push(row);
        }
        Err(e) => rows.push(Row::failed(many_figure, &many_target, e)),
    }

    // 4. Memory growth under the attack mix.
    let mix_seconds = format!("{MIX_SECONDS}s");
    let mix = txsock
        .as_ref()
        .map_err(clone_error)
        .and_then(|bin| stress(bin, &dir, "mix", &["mix", "--duration", &mix_seconds]));
    let mix_figure = "server memory growth under the attack mix (floods, oversize, replays)";
    let mix_target = format!("≤ {MIX_TARGET_MIB:.0} MiB growth");
    match &mix {
        Ok(json) => {
            let mib = number(json, "memory_growth_kib").unwrap_or(f64::NAN) / 1024.0;
            let violations = number(json, "violations").unwrap_or(f64::NAN);
            rows.push(Row {
                figure: mix_figure,
                txsock: format!(
                    "{mib:+.2} MiB (peak during the attacks minus before; {violations} violations)"
                ),
                anchor: "-".into(),
                ratio: "-".into(),
                target: mix_target,
                met: met(mib <= MIX_TARGET_MIB),
            });
        }
        Err(e) => rows.push(Row::failed(mix_figure, &mix_target, e)),
    }

    // 5. TLS beside plaintext: the same loads and connections with `--tls`.
    let tls_runs = [
        (
            "load-32-tls",
            vec![
                "load",
                "--tls",
                "--clients",
                &clients,
                "--pipeline",
                &pipeline,
                "--duration",
                &seconds,
            ],
        ),
        (
            "load-1-tls",
            vec![
                "load",
                "--tls",
                "--clients",
                "1",
                "--pipeline",
                "1",
                "--duration",
                &seconds,
            ],
        ),
        (
            "connections-tls",
            vec!["connections", "--tls", "--count", &count],
        ),
    ];
    let mut tls: Vec<Result<String, Error>> = Vec::new();
    for (name, args) in &tls_runs {
        tls.push(
            txsock
                .as_ref()
                .map_err(clone_error)
                .and_then(|bin| stress(bin, &dir, name, args)),
        );
    }
    let plain = [&many, &one, &connections];
    let figures = [
        "TLS 1.3: durable transfers/s, 32 clients",
        "TLS 1.3: single-client round trip, median",
        "TLS 1.3: server memory, 10,000 idle logged-in connections",
    ];
    for (i, figure) in figures.into_iter().enumerate() {
        let (Ok(with_tls), Ok(without)) = (&tls[i], plain[i]) else {
            let error = match (&tls[i], plain[i]) {
                (Err(e), _) | (_, Err(e)) => clone_error(e),
                _ => Error::new("unreachable"),
            };
            rows.push(Row::failed(figure, "reported", &error));
            continue;
        };
        let (txsock_text, anchor, ratio) = match i {
            0 => {
                let (t, p) = (
                    number(with_tls, "transfers_per_second").unwrap_or(f64::NAN),
                    number(without, "transfers_per_second").unwrap_or(f64::NAN),
                );
                (
                    format!("{}/s", thousands(t)),
                    format!("plaintext: {}/s", thousands(p)),
                    t / p,
                )
            }
            1 => {
                let (t, p) = (
                    number(with_tls, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0,
                    number(without, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0,
                );
                (format!("{t:.2} ms"), format!("plaintext: {p:.2} ms"), t / p)
            }
            _ => {
                let (t, p) = (
                    number(with_tls, "held_kib").unwrap_or(f64::NAN) / 1024.0,
                    number(without, "held_kib").unwrap_or(f64::NAN) / 1024.0,
                );
                let per = |json: &str| {
                    thousands(number(json, "per_connection_bytes").unwrap_or(f64::NAN))
                };
                (
                    format!(
                        "{t:.1} MiB ({} logged in, {} bytes each)",
                        thousands(number(with_tls, "connections_logged_in").unwrap_or(f64::NAN)),
                        per(with_tls)
                    ),
                    format!("plaintext: {p:.1} MiB ({} bytes each)", per(without)),
                    t / p,
                )
            }
        };
        rows.push(Row {
            figure,
            txsock: txsock_text,
            anchor,
            ratio: format!("{ratio:.2}x"),
            target: "reported".into(),
            met: "-",
        });
    }

    // 6. The 32-client load on MariaDB, against the same pgbench figure.
    let mariadb_figure = "durable transfers/s, 32 clients, loopback, MariaDB";
    let mariadb = txsock.as_ref().map_err(clone_error).and_then(|bin| {
        let server = crate::mariadb::MariaDb::start()?;
        let db = format!("--server-arg=--db={}", server.url);
        stress(
            bin,
            &dir,
            "load-32-mariadb",
            &[
                "load",
                "--clients",
                &clients,
                "--pipeline",
                &pipeline,
                "--duration",
                &seconds,
                &db,
            ],
        )
    });
    match (&mariadb, &anchor) {
        (Ok(json), Ok((pg, _))) => {
            let tps = number(json, "transfers_per_second").unwrap_or(f64::NAN);
            let ratio = tps / pg.tps;
            rows.push(Row {
                figure: mariadb_figure,
                txsock: format!(
                    "{}/s (pipeline {PIPELINE}; {} transfers per commit)",
                    thousands(tps),
                    number(json, "transfers_per_commit").map_or("?".into(), |v| format!("{v:.1}"))
                ),
                anchor: format!("the same pgbench figure: {} tps", thousands(pg.tps)),
                ratio: format!("{ratio:.1}x"),
                target: format!("≥ {THROUGHPUT_TARGET:.0}x pgbench tps"),
                met: met(ratio >= THROUGHPUT_TARGET),
            });
        }
        (Err(e), _) | (_, Err(e)) => rows.push(Row::failed(
            mariadb_figure,
            &format!("≥ {THROUGHPUT_TARGET:.0}x pgbench tps"),
            e,
        )),
    }

    // Details under the table.
    if let Ok(json) = &many {
        notes.push(format!(
            "txsock, {CLIENTS} clients: {} transfers per commit on average, largest commit {} \
             requests; latency p50 {:.2} ms, p99 {:.2} ms (`load-32.html`).",
            number(json, "transfers_per_commit").map_or("?".into(), |v| format!("{v:.1}")),
            number(json, "largest_batch").map_or("?".into(), |v| format!("{v:.0}")),
            number(json, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0,
            number(json, "latency_p99_us").unwrap_or(f64::NAN) / 1000.0,
        ));
    }
    if let Ok(json) = &one {
        notes.push(format!(
            "txsock, 1 client, one transfer at a time: {}/s, {} transfers per commit \
             (`load-1.html`).",
            thousands(number(json, "transfers_per_second").unwrap_or(f64::NAN)),
            number(json, "transfers_per_commit").map_or("?".into(), |v| format!("{v:.1}")),
        ));
    }
    if let Ok((many, one)) = &anchor {
        for run in [many, one] {
            notes.push(format!(
                "pgbench, {} client(s): {} tps, {} transactions, latency average {:.2} ms{}.",
                run.clients,
                thousands(run.tps),
                thousands(run.transactions as f64),
                run.latency_avg_ms,
                run.latency_median_ms
                    .map_or(String::new(), |m| format!(", median {m:.2} ms")),
            ));
        }
    }
    if let Ok(json) = &mix {
        notes.push(format!(
            "mix: memory after the attacks {:+.2} MiB over before (`mix.html` shows the phases \
             and what the server answered).",
            number(json, "memory_after_growth_kib").unwrap_or(f64::NAN) / 1024.0
        ));
    }
    let pgbench_version = pgbench::version().unwrap_or_else(|| "PostgreSQL".into());
    let mut md = String::new();
    let _ = writeln!(md, "# txsock benchmark summary\n");
    let _ = writeln!(
        md,
        "`cargo xtask bench`, {}. Machine: {}. Load average {} at the start, {} at the end: \
         other work on the machine (compiles, tests) makes every figure noisy.\n",
        crate::util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .unwrap_or_default()
            .trim(),
        machine(),
        load_at_start,
        load_average()
    );
    let _ = writeln!(md, "| figure | txsock | anchor | ratio | target | met? |");
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.figure, r.txsock, r.anchor, r.ratio, r.target, r.met
        );
    }
    let _ = writeln!(md);
    for n in &notes {
        let _ = writeln!(md, "- {n}");
    }
    let _ = writeln!(
        md,
        "- Anchor: {pgbench_version}, a throwaway cluster (initdb, fsync on, \
         synchronous_commit on) on the same disk, `pgbench -M prepared` for {LOAD_SECONDS} s \
         per run; txsock: `txsock stress ... --spawn` (SQLite WAL, synchronous=FULL, group \
         commit) for {LOAD_SECONDS} s per load. Reports with plots and the raw JSON are in \
         `{}`.",
        dir.display()
    );
    let path = dir.join("summary.md");
    fs::write(&path, &md).map_err(|e| Error::new(format!("writing {}: {e}", path.display())))?;
    println!("\n{md}\nwritten to {}", path.display());
    Ok(())
}

/// The `"errors"` object of a stress JSON report, as text (`{}` when none).
pub(crate) fn errors_of(json: &str) -> String {
    let Some(start) = json.find("\"errors\":") else {
        return "?".into();
    };
    let rest = &json[start + "\"errors\":".len()..];
    match rest.find('}') {
        Some(end) => rest[..=end].trim().to_string(),
        None => "?".into(),
    }
}

fn clone_error(e: &Error) -> Error {
    Error::new(e.to_string())
}

/// The core row, as `core/benches/frame_ratio.rs` prints it on its `frame_ratio:` line:
/// nanoseconds per transfer frame and per raw HMAC-SHA256 over `bytes` (each the 1st
/// percentile of its batches), their ratio (HMAC over frame), the smallest and largest ratio
/// of the run's blocks of rounds, and the ratio of the median batches.
#[derive(Debug, PartialEq)]
struct Core {
    bytes: usize,
    rounds: usize,
    frame_ns: f64,
    hmac_ns: f64,
    ratio: f64,
    block_min: f64,
    block_max: f64,
    median_ratio: f64,
}

/// Runs `cargo bench -p txsock-core --bench frame_ratio` (its summary goes to the terminal)
/// and reads its figures.
fn core_bench(root: &Path) -> Result<Core, Error> {
    let out = output(cargo(root).args(["bench", "-p", "txsock-core", "--bench", CORE_BENCH]))?;
    print!("{out}");
    let core = parse_core(&out).ok_or_else(|| {
        Error::new(format!(
            "no complete `{CORE_BENCH}:` line in the output of `cargo bench --bench {CORE_BENCH}`"
        ))
    })?;
    println!(
        "core: ratio {:.3} (target >= {TARGET_RATIO:.2})",
        core.ratio
    );
    Ok(core)
}

/// The figures of the bench's `frame_ratio: key=value …` line; `None` if a field is missing
/// or not a number.
fn parse_core(out: &str) -> Option<Core> {
    let prefix = format!("{CORE_BENCH}:");
    let line = out
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))?;
    let field = |key: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(Core {
        bytes: field("bytes")? as usize,
        rounds: field("rounds")? as usize,
        frame_ns: field("frame_ns")?,
        hmac_ns: field("hmac_ns")?,
        ratio: field("ratio")?,
        block_min: field("block_min")?,
        block_max: field("block_max")?,
        median_ratio: field("median_ratio")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_headline_numbers() {
        let json = r#"{"headline":{"transfers_per_second":1234.5,"latency_p50_us":2500,"held_kib":null},"x":{"held_kib":7}}"#;
        assert_eq!(number(json, "transfers_per_second"), Some(1234.5));
        assert_eq!(number(json, "latency_p50_us"), Some(2500.0));
        assert_eq!(number(json, "held_kib"), None);
        assert_eq!(number(json, "missing"), None);
    }

    #[test]
    fn large_idle_figure_fits_the_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             unlimited            unlimited            processes \n\
                      Max open files            1024                 20000                files     \n";
        assert_eq!(hard_limit_in(limits, "Max open files"), Some(20_000));
        assert_eq!(hard_limit_in(limits, "Max processes"), None);
        assert_eq!(hard_limit_in(limits, "Max locked memory"), None);
        // Both processes hold one file a connection; the stress tool keeps its spare.
        assert_eq!(many_connections_count(Some(20_000)), 19_744);
        assert_eq!(many_connections_count(Some(1_048_576)), MANY_CONNECTIONS);
        assert_eq!(
            many_connections_count(Some(u64::from(MANY_CONNECTIONS) + STRESS_FILES_SPARE)),
            MANY_CONNECTIONS
        );
        assert_eq!(many_connections_count(Some(100)), 0);
        assert_eq!(many_connections_count(None), MANY_CONNECTIONS);
        // 10 MiB held at 1,000 connections of 4,096 bytes: 3 more cost 12 KiB.
        let mib = projected_mib(10.0 * 1024.0, 4096.0, 1_000.0, 1_003);
        assert!((mib - (10.0 + 12.0 / 1024.0)).abs() < 1e-9, "{mib}");
    }

    /// The limit read from `/proc/self/limits` is the one the shell reports.
    #[cfg(target_os = "linux")]
    #[test]
    fn open_file_hard_limit_is_the_shells() {
        let out = Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .expect("sh runs");
        let shell = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .ok();
        assert_eq!(open_file_hard_limit(), shell);
    }

    #[test]
    fn percentiles_by_nearest_rank_below() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&sorted, 0.5), 5.0);
        assert_eq!(percentile(&sorted, 0.1), 1.0);
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 1.0), 10.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_floor_pools_both_measurements_and_says_when_they_disagree() {
        let steady = Floor {
            before: vec![0.04, 0.05, 0.06],
            after: vec![0.05, 0.05, 9.0],
        };
        assert_eq!(steady.median(), 0.05);
        assert!(!steady.unsteady());
        assert!(steady.describe().contains("median of 6 syncs"));
        let busy = Floor {
            before: vec![0.04, 0.05, 0.06],
            after: vec![0.1, 0.2, 0.3],
        };
        assert!(busy.unsteady());
    }

    #[test]
    fn times_syncs_within_the_budget() {
        let dir = env::temp_dir();
        let times = fdatasync_times(&dir, 5, std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(times.len(), 5);
        assert!(times.windows(2).all(|w| w[0] <= w[1]) && times[0] > 0.0);
        // Out of time: still one.
        let one = fdatasync_times(&dir, 5, std::time::Duration::ZERO).unwrap();
        assert_eq!(one.len(), 1);
        let missing = dir.join("txsock-no-such-directory-for-fdatasync");
        assert!(fdatasync_times(&missing, 5, std::time::Duration::ZERO).is_err());
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    /// The core row end to end: builds and runs `frame_ratio` (about 10 s after the build)
    /// and reads its line. `cargo test -p xtask -- --ignored core_row --nocapture`.
    #[test]
    #[ignore = "builds and runs the core's frame_ratio bench"]
    fn core_row() {
        let core = core_bench(&repo_root()).unwrap();
        assert_eq!(core.rounds, 200);
        assert!(core.bytes > 100 && core.frame_ns > 0.0 && core.hmac_ns > 0.0);
        assert!(core.ratio > 0.0 && core.block_min <= core.block_max);
    }

    #[test]
    fn reads_the_core_line() {
        let out = "200 alternating rounds ...\nratio 0.385\nframe_ratio: bytes=172 rounds=200 \
                   frame_ns=840.5 hmac_ns=324.0 ratio=0.3850 block_min=0.3840 \
                   block_max=0.3880 median_ratio=0.3760 timer_ns=30\n";
        assert_eq!(
            parse_core(out),
            Some(Core {
                bytes: 172,
                rounds: 200,
                frame_ns: 840.5,
                hmac_ns: 324.0,
                ratio: 0.385,
                block_min: 0.384,
                block_max: 0.388,
                median_ratio: 0.376,
            })
        );
        // `median_ratio=` must not be read as `ratio=`, nor a missing field as zero.
        assert_eq!(parse_core(&out.replace(" ratio=0.3850", "")), None);
        assert_eq!(parse_core(&out.replace("hmac_ns=324.0", "hmac_ns=x")), None);
        assert_eq!(parse_core("ratio=0.4"), None);
    }

    /// The core row is met only when its median batches reach the target too.
    #[test]
    fn the_core_row_needs_its_median_too() {
        assert_eq!(core_met(0.38, 0.39), "yes");
        assert_eq!(core_met(TARGET_RATIO, TARGET_RATIO), "yes");
        assert!(core_met(0.38, 0.30).starts_with("uncertain"));
        assert_eq!(core_met(0.32, 0.39), "no");
        assert_eq!(core_met(0.30, 0.30), "no");
    }
}
