//! The Galera rows of `cargo xtask bench`: durable transfers/s on a throwaway three-node
//! Galera cluster ([`crate::galera`]), first with one `txsock serve` (on node 0), then with
//! three (one per node, the load's clients spread over them), each under the same
//! `txsock stress load` as the SQLite row (32 clients, pipeline 8).
//!
//! On the two shared cores of the development machine the three database nodes and three
//! servers compete for the same CPUs, so the three-server figure is about correctness under
//! contention (certification conflicts retried, nothing lost), not about scaling.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::galera::{Cluster, DATABASE, NODES};
use crate::util::{display, Error};

/// PBKDF2 iterations of the stress users (the servers' minimum).
const ITERATIONS: &str = "4096";

/// A `txsock serve` on one node, stopped on drop (or by [`Serve::stop`], which also reads
/// its closing figures).
struct Serve {
    child: Child,
    addr: String,
    /// Its output lines after the first (stdout and stderr), for [`Serve::stop`].
    lines: Arc<Mutex<Vec<String>>>,
}

/// What the servers of one row committed, from their closing lines (`txsock stopped: N
/// transfers in M commits` and the `largest_batch=` of the `stopped` log line): the stress
/// tool reads these only from a server it spawned itself, and these servers it attaches to.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Commits {
    /// Transfers committed, summed over the servers.
    pub transfers: u64,
    /// Commits, summed over the servers.
    pub commits: u64,
    /// The largest commit of any server, in requests.
    pub largest_batch: Option<u64>,
}

impl Commits {
    /// Mean transfers per commit over all servers (`None` without commits).
    pub fn per_commit(&self) -> Option<f64> {
        (self.commits > 0).then(|| self.transfers as f64 / self.commits as f64)
    }

    /// Adds one server's closing lines; false if they hold no `txsock stopped:` line.
    fn add(&mut self, lines: &[String]) -> bool {
        let Some(stopped) = lines
            .iter()
            .find_map(|l| l.strip_prefix("txsock stopped: "))
        else {
            return false;
        };
        // `N transfers in M commits`
        let words: Vec<&str> = stopped.split_whitespace().collect();
        let (Some(transfers), Some(commits)) = (
            words.first().and_then(|w| w.parse::<u64>().ok()),
            words.get(3).and_then(|w| w.parse::<u64>().ok()),
        ) else {
            return false;
        };
        self.transfers += transfers;
        self.commits += commits;
        let largest = lines.iter().rev().find_map(|l| {
            let rest = &l[l.find("largest_batch=")? + "largest_batch=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        });
        self.largest_batch = self.largest_batch.max(largest);
        true
    }
}

/// One Galera row: the stress tool's JSON and what the servers committed.
#[derive(Debug)]
pub struct Run {
    /// `txsock stress load --json` output.
    pub json: String,
    /// The servers' commits; `None` if a server did not report them (it did not stop
    /// cleanly).
    pub commits: Option<Commits>,
}

/// A server's whole output, kept in a file for reading after the run.
type LogFile = Arc<Mutex<File>>;

/// Keeps the lines of `reader` in `into` (the last 200) and all of them in `log`, echoing
/// warnings and errors.
fn keep_lines(
    reader: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    log: LogFile,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("{line}");
            }
            {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(log, "{line}");
            }
            let mut lines = into.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() >= 200 {
                lines.remove(0);
            }
            lines.push(line);
        }
    });
}

impl Serve {
    /// Starts a server with data directory `dir`; its whole output goes to `log`.
    fn start(txsock: &Path, dir: &Path, url: &str, log: &Path) -> Result<Serve, Error> {
        let log = File::create(log)
            .map_err(|e| Error::new(format!("could not create {}: {e}", log.display())))?;
        let log = Arc::new(Mutex::new(log));
        let mut command = Command::new(txsock);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(["--min-iterations", ITERATIONS])
            .args(["--opening-balance", "1000000000"])
            // The URL holds the throwaway password: passed in the environment.
            .env("TXSOCK_DB", url)
            .env_remove("TXSOCK_CONFIG")
            // The `stopped` line (info) has the largest commit; the store's retries are
            // debug lines (`GALERA_BENCH_RUST_LOG=warn,txsock::serve=info,txsock::store=debug`).
            .env(
                "RUST_LOG",
                std::env::var("GALERA_BENCH_RUST_LOG")
                    .unwrap_or_else(|_| "warn,txsock::serve=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        println!("$ {}", display(&command));
        let mut child = command
            .spawn()
            .map_err(|e| Error::new(format!("could not start txsock serve: {e}")))?;
        let kept = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            keep_lines(stderr, kept.clone(), log.clone());
        }
        let mut stdout = child.stdout.take().map(BufReader::new);
        let mut first = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_line(&mut first);
        }
        let first = first.trim_end().to_string();
        let _ = writeln!(log.lock().unwrap_or_else(|p| p.into_inner()), "{first}");
        // Keep draining stdout so the server never blocks on a full pipe.
        if let Some(out) = stdout {
            keep_lines(out, kept.clone(), log.clone());
        }
        let mut serve = Serve {
            child,
            addr: String::new(),
            lines: kept,
        };
        match first
            .strip_prefix("txsock listening on ")
            .and_then(|rest| rest.split_whitespace().next())
        {
            Some(addr) => serve.addr = addr.to_string(),
            None => {
                return Err(Error::new(format!(
                    "txsock serve on the cluster did not start: {first:?}"
                )))
            }
        }
        Ok(serve)
    }
}

impl Serve {
    /// Asks the server to stop (SIGTERM), waits up to 20 s, then kills it; true if it exited
    /// by itself.
    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Stops the server and adds its closing figures to `commits` (`None` once any server
    /// did not report them).
    fn stop(mut self, commits: &mut Option<Commits>) {
        let clean = self.terminate();
        // Let the reader threads see the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !(clean && commits.as_mut().is_some_and(|c| c.add(&lines))) {
            *commits = None;
        }
        // Drop then finds it exited.
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// The cluster-wide status counters printed after each row (summed over the nodes):
/// certification failures and brute-force aborts say how often the servers' batches
/// collided.
const COUNTERS: &[&str] = &[
    "wsrep_local_cert_failures",
    "wsrep_local_bf_aborts",
    "Com_commit",
    "Com_rollback",
    "Innodb_row_lock_waits",
    "Innodb_row_lock_time",
];

/// The summed values of [`COUNTERS`] over every node (absent ones count 0).
fn counters(cluster: &Cluster) -> Vec<u64> {
    let list = COUNTERS
        .iter()
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sums = vec![0u64; COUNTERS.len()];
    for node in 0..NODES {
        let Ok(out) = cluster.sql(
            node,
            &format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({list})"),
        ) else {
            continue;
        };
        for line in out.lines() {
            let mut words = line.split('\t');
            let (Some(name), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let at = COUNTERS.iter().position(|c| c.eq_ignore_ascii_case(name));
            if let (Some(at), Ok(value)) = (at, value.trim().parse::<u64>()) {
                sums[at] += value;
            }
        }
    }
    sums
}

/// Until `done`, writes to `log` every 2 s what each node's `txsock` sessions are doing
/// (statements running longer than 1 s, and open transactions): what a stalled server waits
/// for.
fn sample(cluster: &Cluster, log: &Path, done: &AtomicBool) {
    let Ok(mut log) = File::create(log) else {
        return;
    };
    let started = Instant::now();
    while !done.load(Ordering::Relaxed) {
        for node in 0..NODES {
            let out = cluster.sql(
                node,
                "SELECT 'running', id, time, state, LEFT(REPLACE(info, '\\n', ' '), 100) \
                 FROM information_schema.processlist \
                 WHERE user = 'txsock' AND command <> 'Sleep' AND time >= 1; \
                 SELECT 'trx', trx_mysql_thread_id, trx_state, trx_started, \
                 trx_rows_locked, trx_lock_structs, trx_wait_started \
                 FROM information_schema.innodb_trx WHERE trx_mysql_thread_id <> CONNECTION_ID()",
            );
            let out = out.unwrap_or_else(|e| e);
            for line in out.lines() {
                let _ = writeln!(
                    log,
                    "{:6.1}s node{node} {line}",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        for _ in 0..20 {
            if done.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The load with one server and with three, each `Err` if it could not be measured.
/// `stress` runs `txsock stress ARGS` against running servers and returns its JSON.
pub fn measure(
    txsock: &Path,
    dir: &Path,
    load: &[&str],
    stress: impl Fn(&str, &[&str]) -> Result<String, Error>,
) -> (Result<Run, Error>, Result<Run, Error>) {
    let mut rows = measure_rows(txsock, dir, load, &[1, NODES], stress).into_iter();
    let missing = || Err(Error::new("not measured"));
    (
        rows.next().unwrap_or_else(missing),
        rows.next().unwrap_or_else(missing),
    )
}

/// The load with each server count of `servers` (at most [`NODES`]) on one cluster, in
/// order. Each server's whole output is kept in `DIR/galera-N-serveI.log`, what the nodes'
/// `txsock` sessions were doing every 2 s in `DIR/galera-N-db.log`, and the row's
/// certification failures and the like are printed.
pub fn measure_rows(
    txsock: &Path,
    dir: &Path,
    load: &[&str],
    servers: &[usize],
    stress: impl Fn(&str, &[&str]) -> Result<String, Error>,
) -> Vec<Result<Run, Error>> {
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(e) => {
            let e = format!("no Galera cluster: {e}");
            return servers.iter().map(|_| Err(Error::new(e.clone()))).collect();
        }
    };
    let run = |servers: usize| -> Result<Run, Error> {
        let name = format!("galera-{servers}");
        let serves = (0..servers.min(NODES))
            .map(|i| {
                let data = dir.join(format!("{name}-serve{i}"));
                let _ = std::fs::remove_dir_all(&data);
                let log: PathBuf = dir.join(format!("{name}-serve{i}.log"));
                Serve::start(txsock, &data, &cluster.url(i, DATABASE), &log)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let list: Vec<&str> = serves.iter().map(|s| s.addr.as_str()).collect();
        let list = list.join(",");
        let mut args = vec!["load", "--server", &list, "--iterations", ITERATIONS];
        args.extend_from_slice(load);
        let before = counters(&cluster);
        let done = AtomicBool::new(false);
        let json = std::thread::scope(|scope| {
            let db_log = dir.join(format!("{name}-db.log"));
            let (cluster, done) = (&cluster, &done);
            scope.spawn(move || sample(cluster, &db_log, done));
            let json = stress(&name, &args);
            done.store(true, Ordering::Relaxed);
            json
        })?;
        let after = counters(&cluster);
        let delta: Vec<String> = COUNTERS
            .iter()
            .zip(after.iter().zip(&before))
            .map(|(name, (a, b))| format!("{name}={}", a.saturating_sub(*b)))
            .collect();
        println!("{name}: the cluster during the load: {}", delta.join(" "));
        let mut commits = Some(Commits::default());
        let started = Instant::now();
        for serve in serves {
            serve.stop(&mut commits);
        }
        println!(
            "{name}: servers stopped in {:.1} s, {}",
            started.elapsed().as_secs_f64(),
            if commits.is_some() {
                "cleanly"
            } else {
                "not cleanly"
            }
        );
        Ok(Run { json, commits })
    };
    let rows = servers.iter().map(|&n| run(n)).collect();
    drop(cluster);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_add_up_over_servers() {
        let lines = |line: &str, largest: &str| {
            vec![
                "2026-12-06T10:00:00Z  INFO txsock::serve: serving".to_string(),
                format!("2026-12-06T10:00:15Z  INFO txsock::serve: stopped commits=9 transfers=1 largest_batch={largest}"),
                line.to_string(),
            ]
        };
        let mut commits = Commits::default();
        assert!(commits.add(&lines(
            "txsock stopped: 1200 transfers in 100 commits",
            "40"
        )));
        assert!(commits.add(&lines("txsock stopped: 600 transfers in 20 commits", "64")));
        assert_eq!(
            commits,
            Commits {
                transfers: 1800,
                commits: 120,
                largest_batch: Some(64)
            }
        );
        assert_eq!(commits.per_commit(), Some(15.0));
        assert!(!commits.add(&["txsock listening on 127.0.0.1:1".to_string()]));
        assert_eq!(Commits::default().per_commit(), None);
    }
    use crate::bench::{errors_of, number, stress_with, target_dir};
    use crate::util::repo_root;

    /// The Galera rows alone, without the rest of `cargo xtask bench`: `cargo build --release
    /// -p txsock-host && cargo test -p xtask -- --ignored galera_rows --nocapture` (needs
    /// mariadb-server, galera-4 and rsync). `GALERA_BENCH_SERVERS=3` runs only the
    /// three-server row, `GALERA_BENCH_TXSOCK=PATH` measures another build (to compare
    /// commits), `GALERA_BENCH_SECONDS` changes the 15 s; the logs are in `target/bench`.
    #[test]
    #[ignore = "starts a Galera cluster and loads it for 2 x 15 s (needs galera-4)"]
    fn galera_rows() {
        let root = repo_root();
        let txsock = std::env::var_os("GALERA_BENCH_TXSOCK")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| target_dir(&root).join("release").join("txsock"));
        let servers: Vec<usize> = std::env::var("GALERA_BENCH_SERVERS")
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|_| vec![1, NODES]);
        let seconds = std::env::var("GALERA_BENCH_SECONDS").unwrap_or_else(|_| "15".into());
        let duration = format!("{seconds}s");
        assert!(
            txsock.exists(),
            "build it first: cargo build --release -p txsock-host"
        );
        let dir = target_dir(&root).join("bench");
        std::fs::create_dir_all(&dir).expect("target/bench");
        // The load client: the same binary unless `GALERA_BENCH_STRESS=PATH` (one client for
        // servers of several commits).
        let client = std::env::var_os("GALERA_BENCH_STRESS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| txsock.clone());
        let load = [
            "--clients",
            "32",
            "--pipeline",
            "8",
            "--duration",
            &duration,
        ];
        let rows = measure_rows(&txsock, &dir, &load, &servers, |name, args| {
            stress_with(&client, &dir, name, args, &[])
        });
        for (&servers, result) in servers.iter().zip(rows) {
            let run = result.unwrap_or_else(|e| panic!("{servers} server(s): {e}"));
            let json = run.json;
            println!(
                "Galera, {servers} server(s): {:.0} transfers/s, {:.1} per commit, p50 {:.1} ms, \
                 p99 {:.1} ms, errors: {}",
                number(&json, "transfers_per_second").unwrap_or(f64::NAN),
                run.commits.and_then(|c| c.per_commit()).unwrap_or(f64::NAN),
                number(&json, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0,
                number(&json, "latency_p99_us").unwrap_or(f64::NAN) / 1000.0,
                errors_of(&json),
            );
        }
    }
}
