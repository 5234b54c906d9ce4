//! The Galera rows of `cargo xtask bench`: durable transfers/s on a throwaway three-node
//! Galera cluster ([`crate::galera`]), first with one `txsock serve` (on node 0), then with
//! three (one per node, the load's clients spread over them), each under the same
//! `txsock stress load` as the SQLite row (32 clients, pipeline 8).
//!
//! On the two shared cores of the development machine the three database nodes and three
//! servers compete for the same CPUs, so the three-server figure is about correctness under
//! contention (certification conflicts retried, nothing lost), not about scaling.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
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

/// Keeps the lines of `reader` in `into` (the last 200), echoing warnings and errors.
fn keep_lines(reader: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("{line}");
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
    fn start(txsock: &Path, dir: &Path, url: &str) -> Result<Serve, Error> {
        let mut command = Command::new(txsock);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(["--min-iterations", ITERATIONS])
            .args(["--opening-balance", "1000000000"])
            // The URL holds the throwaway password: passed in the environment.
            .env("TXSOCK_DB", url)
            .env_remove("TXSOCK_CONFIG")
            // The `stopped` line (info) has the largest commit.
            .env("RUST_LOG", "warn,txsock::serve=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        println!("$ {}", display(&command));
        let mut child = command
            .spawn()
            .map_err(|e| Error::new(format!("could not start txsock serve: {e}")))?;
        let kept = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            keep_lines(stderr, kept.clone());
        }
        let mut stdout = child.stdout.take().map(BufReader::new);
        let mut first = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_line(&mut first);
        }
        let first = first.trim_end().to_string();
        // Keep draining stdout so the server never blocks on a full pipe.
        if let Some(out) = stdout {
            keep_lines(out, kept.clone());
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

/// The load with one server and with three, each `Err` if it could not be measured.
/// `stress` runs `txsock stress ARGS` against running servers and returns its JSON.
pub fn measure(
    txsock: &Path,
    dir: &Path,
    load: &[&str],
    stress: impl Fn(&str, &[&str]) -> Result<String, Error>,
) -> (Result<Run, Error>, Result<Run, Error>) {
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(e) => {
            let e = format!("no Galera cluster: {e}");
            return (Err(Error::new(e.clone())), Err(Error::new(e)));
        }
    };
    let run = |servers: usize, name: &str| -> Result<Run, Error> {
        let serves = (0..servers)
            .map(|i| {
                let data = dir.join(format!("{name}-serve{i}"));
                let _ = std::fs::remove_dir_all(&data);
                Serve::start(txsock, &data, &cluster.url(i, DATABASE))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let list: Vec<&str> = serves.iter().map(|s| s.addr.as_str()).collect();
        let list = list.join(",");
        let mut args = vec!["load", "--server", &list, "--iterations", ITERATIONS];
        args.extend_from_slice(load);
        let json = stress(name, &args)?;
        let mut commits = Some(Commits::default());
        for serve in serves {
            serve.stop(&mut commits);
        }
        Ok(Run { json, commits })
    };
    let one = run(1, "galera-1");
    let three = run(NODES, "galera-3");
    drop(cluster);
    (one, three)
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
    use crate::bench::{number, stress_with, target_dir};
    use crate::util::repo_root;

    /// The Galera rows alone, without the rest of `cargo xtask bench`: `cargo build --release
    /// -p txsock-host && cargo test -p xtask -- --ignored galera_rows --nocapture` (needs
    /// mariadb-server, galera-4 and rsync).
    #[test]
    #[ignore = "starts a Galera cluster and loads it for 2 x 15 s (needs galera-4)"]
    fn galera_rows() {
        let root = repo_root();
        let txsock = target_dir(&root).join("release").join("txsock");
        assert!(
            txsock.exists(),
            "build it first: cargo build --release -p txsock-host"
        );
        let dir = target_dir(&root).join("bench");
        std::fs::create_dir_all(&dir).expect("target/bench");
        let load = ["--clients", "32", "--pipeline", "8", "--duration", "15s"];
        let (one, three) = measure(&txsock, &dir, &load, |name, args| {
            stress_with(&txsock, &dir, name, args, &[])
        });
        for (servers, result) in [(1, one), (3, three)] {
            let run = result.unwrap_or_else(|e| panic!("{servers} server(s): {e}"));
            let json = run.json;
            println!(
                "Galera, {servers} server(s): {:.0} transfers/s, {:.1} per commit, p50 {:.1} ms, \
                 p99 {:.1} ms",
                number(&json, "transfers_per_second").unwrap_or(f64::NAN),
                run.commits.and_then(|c| c.per_commit()).unwrap_or(f64::NAN),
                number(&json, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0,
                number(&json, "latency_p99_us").unwrap_or(f64::NAN) / 1000.0,
            );
        }
    }
}
