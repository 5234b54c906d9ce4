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
use std::time::{Duration, Instant};

use crate::galera::{Cluster, DATABASE, NODES};
use crate::util::{display, Error};

/// PBKDF2 iterations of the stress users (the servers' minimum).
const ITERATIONS: &str = "4096";

/// A `txsock serve` on one node, stopped on drop.
struct Serve {
    child: Child,
    addr: String,
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
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        println!("$ {}", display(&command));
        let mut child = command
            .spawn()
            .map_err(|e| Error::new(format!("could not start txsock serve: {e}")))?;
        let stdout = child.stdout.take();
        let mut lines = stdout.map(|out| BufReader::new(out).lines());
        let first = lines
            .as_mut()
            .and_then(|l| l.next())
            .and_then(Result::ok)
            .unwrap_or_default();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.into_iter().flatten().for_each(drop));
        let mut serve = Serve {
            child,
            addr: String::new(),
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

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stress JSON of the load with one server and with three, each `Err` if it could not
/// be measured. `stress` runs `txsock stress ARGS` against running servers and returns its
/// JSON.
pub fn measure(
    txsock: &Path,
    dir: &Path,
    load: &[&str],
    stress: impl Fn(&str, &[&str]) -> Result<String, Error>,
) -> (Result<String, Error>, Result<String, Error>) {
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(e) => {
            let e = format!("no Galera cluster: {e}");
            return (Err(Error::new(e.clone())), Err(Error::new(e)));
        }
    };
    let run = |servers: usize, name: &str| -> Result<String, Error> {
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
        stress(name, &args)
    };
    let one = run(1, "galera-1");
    let three = run(NODES, "galera-3");
    drop(cluster);
    (one, three)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            let json = result.unwrap_or_else(|e| panic!("{servers} server(s): {e}"));
            println!(
                "Galera, {servers} server(s): {:.0} transfers/s, {:.1} per commit, p50 {:.1} ms, \
                 p99 {:.1} ms",
                number(&json, "transfers_per_second").unwrap_or(f64::NAN),
                number(&json, "transfers_per_commit").unwrap_or(f64::NAN),
                number(&json, "latency_p50_us").unwrap_or(f64::NAN) / 1000.0,
                number(&json, "latency_p99_us").unwrap_or(f64::NAN) / 1000.0,
            );
        }
    }
}
