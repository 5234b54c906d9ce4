//! The anchor of the durability figures of `cargo xtask bench`: a throwaway PostgreSQL
//! cluster, fsync on, measured with pgbench's TPC-B-like script.
//!
//! `initdb` creates a cluster in a new temporary directory, `postgres` serves it on a free
//! loopback port (and a socket in that directory), pgbench runs against it over TCP, and
//! dropping the value stops the server (SIGINT, a fast shutdown; SIGKILL after 30 s) and
//! removes the directory. PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` user (Debian's package creates it), or `nobody`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, display, Error};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One pgbench run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Concurrent clients.
    pub clients: u32,
    /// Transactions per second (pgbench's figure without the initial connection time).
    pub tps: f64,
    /// pgbench's average latency, milliseconds.
    pub latency_avg_ms: f64,
    /// Median transaction latency from pgbench's per-transaction log, milliseconds (runs
    /// with `log`).
    pub latency_median_ms: Option<f64>,
    /// Transactions processed.
    pub transactions: u64,
}

/// A running throwaway cluster.
pub struct Postgres {
    child: Option<Child>,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The OS user the server runs as (`None`: this process's user).
    user: Option<String>,
}

/// The directory holding `initdb` and `postgres`: on `PATH`, or Debian's
/// `/usr/lib/postgresql/<version>/bin` (the highest version).
fn server_bin() -> Option<PathBuf> {
    if let Some(initdb) = crate::mariadb::find("initdb") {
        let dir = fs::canonicalize(&initdb).ok()?.parent()?.to_path_buf();
        if util::is_executable(&dir.join("postgres")) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            util::is_executable(&bin.join("initdb")).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `postgres --version`, e.g. `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
pub fn version() -> Option<String> {
    let bin = server_bin()?;
    let out = util::output(Command::new(bin.join("postgres")).arg("--version")).ok()?;
    Some(out.trim().to_string())
}

fn is_root() -> bool {
    util::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::new(format!("finding a free loopback port: {e}")))
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The number after `key` in pgbench's report, e.g. `tps = 1234.5 (...)`.
fn figure(report: &str, key: &str) -> Option<f64> {
    report.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(key)?.trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Median latency (ms) from pgbench `--log` files `<prefix>.*`: one line per transaction,
/// `client_id transaction_no time_us script_no epoch epoch_us`.
fn median_from_logs(dir: &Path, prefix: &str) -> Option<f64> {
    let mut latencies: Vec<u64> = Vec::new();
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(prefix) {
            continue;
        }
        let text = fs::read_to_string(entry.path()).ok()?;
        latencies.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
    }
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    Some(latencies[latencies.len() / 2] as f64 / 1000.0)
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts it; returns once it accepts
    /// connections. Installs Debian's `postgresql` first when it is missing and this runs as
    /// root.
    pub fn start() -> Result<Postgres, Error> {
        crate::prerequisites::ensure(&[crate::prerequisites::Need::Bench])?;
        let bin = server_bin().ok_or_else(|| {
            Error::new("PostgreSQL's initdb not found: install Debian's postgresql")
        })?;
        let user = if is_root() {
            let postgres = util::succeeds(Command::new("id").arg("postgres"));
            Some(if postgres { "postgres" } else { "nobody" }.to_string())
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("txsock-bench-pg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::new(format!("creating {}: {e}", dir.display())))?;
        // From here on, dropping `pg` cleans up, also on the error paths below.
        let mut pg = Postgres {
            child: None,
            dir: dir.clone(),
            bin,
            port: free_port()?,
            user,
        };
        if let Some(user) = &pg.user {
            util::run(Command::new("chown").arg(user).arg(&dir))?;
        }
        let data = dir.join("data");
        let initdb_log = dir.join("initdb.log");
        let mut initdb = pg.as_server_user("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--locale=C", "-E", "UTF8"])
            .stdin(Stdio::null())
            .stdout(log_file(&initdb_log)?)
            .stderr(log_file(&initdb_log.with_extension("err"))?);
        println!("$ {}", display(&initdb));
        let status = initdb
            .status()
            .map_err(|e| Error::new(format!("could not start initdb: {e}")))?;
        if !status.success() {
            return Err(Error::new(format!(
                "initdb failed ({status}):\n{}",
                tail(&initdb_log.with_extension("err"))
            )));
        }

        let log = dir.join("postgres.log");
        let mut serve = pg.as_server_user("postgres");
        serve
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .arg("-p")
            .arg(pg.port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "full_page_writes=on",
                "-c",
                "max_connections=100",
            ])
            .stdin(Stdio::null())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log.with_extension("err"))?);
        println!("$ {}", display(&serve));
        pg.child = Some(
            serve
                .spawn()
                .map_err(|e| Error::new(format!("could not start postgres: {e}")))?,
        );
        let started = Instant::now();
        loop {
            if let Some(child) = pg.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    pg.child = None;
                    return Err(Error::new(format!(
                        "postgres exited at start ({status}):\n{}",
                        tail(&log.with_extension("err"))
                    )));
                }
            }
            if util::succeeds(pg.client("psql").args(["-c", "SELECT 1"])) {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::new(format!(
                    "postgres did not accept connections within {} s:\n{}",
                    START_TIMEOUT.as_secs(),
                    tail(&log.with_extension("err"))
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "PostgreSQL for the anchor: 127.0.0.1:{}, data in {}, fsync on",
            pg.port,
            data.display()
        );
        Ok(pg)
    }

    /// A server program (`initdb`, `postgres`) run as the server's user.
    fn as_server_user(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// A client program (`psql`, `pgbench`) connected to the cluster over TCP.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .env("PGDATABASE", "postgres")
            .current_dir(&self.dir);
        command
    }

    /// `pgbench -i -s SCALE`: the TPC-B tables (100,000 accounts and one branch per scale).
    pub fn init(&self, scale: u32) -> Result<(), Error> {
        let started = Instant::now();
        util::run(
            self.client("pgbench")
                .args(["-i", "-q", "-s", &scale.to_string()])
                .stdout(Stdio::null()),
        )?;
        println!(
            "pgbench tables at scale {scale} ready in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// `pgbench -c CLIENTS -T SECONDS -M prepared` (the built-in TPC-B-like script); with
    /// `log`, per-transaction latencies are logged and their median computed.
    pub fn run(&self, clients: u32, seconds: u32, log: bool) -> Result<Run, Error> {
        let prefix = format!("pgbench-log-{clients}");
        let mut command = self.client("pgbench");
        command.args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &seconds.to_string(),
            "-M",
            "prepared",
            "-n",
        ]);
        if log {
            command.args([
                "-l",
                &format!("--log-prefix={}", self.dir.join(&prefix).display()),
            ]);
        }
        println!("$ {}", display(&command));
        let report = util::output(&mut command)?;
        let tps = figure(&report, "tps")
            .ok_or_else(|| Error::new(format!("no tps in pgbench's report:\n{report}")))?;
        Ok(Run {
            clients,
            tps,
            latency_avg_ms: figure(&report, "latency average").unwrap_or(f64::NAN),
            latency_median_ms: if log {
                median_from_logs(&self.dir, &prefix)
            } else {
                None
            },
            transactions: figure(&report, "number of transactions actually processed:")
                .map_or(0, |t| t as u64),
        })
    }

    /// The postmaster's process id (the child may be `runuser`, which waits for it).
    fn postmaster_pid(&self) -> Option<String> {
        let text = fs::read_to_string(self.dir.join("data").join("postmaster.pid")).ok()?;
        text.lines().next().map(|l| l.trim().to_string())
    }
}

fn log_file(path: &Path) -> Result<fs::File, Error> {
    fs::File::create(path).map_err(|e| Error::new(format!("creating {}: {e}", path.display())))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = self
                .postmaster_pid()
                .unwrap_or_else(|| child.id().to_string());
            // SIGINT: PostgreSQL's fast shutdown.
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    _ => {
                        let _ = Command::new("kill").args(["-KILL", &pid]).status();
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
            println!("PostgreSQL for the anchor stopped");
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_figures() {
        let report = "transaction type: <builtin: TPC-B (sort of)>\nscaling factor: 32\n\
                      number of transactions actually processed: 12345\n\
                      latency average = 25.932 ms\n\
                      initial connection time = 12.3 ms\n\
                      tps = 1234.567890 (without initial connection time)\n";
        assert_eq!(figure(report, "tps"), Some(1234.56789));
        assert_eq!(figure(report, "latency average"), Some(25.932));
        assert_eq!(
            figure(report, "number of transactions actually processed:"),
            Some(12345.0)
        );
        assert_eq!(figure(report, "nothing"), None);
    }

    #[test]
    fn median_of_logged_latencies() {
        let dir = std::env::temp_dir().join(format!("txsock-xtask-pglog-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("lg.123"), "0 0 3000 0 1 2\n0 1 1000 0 1 2\n").unwrap();
        fs::write(dir.join("lg.123.1"), "1 0 2000 0 1 2\n").unwrap();
        fs::write(dir.join("other"), "0 0 9999999 0 1 2\n").unwrap();
        assert_eq!(median_from_logs(&dir, "lg"), Some(2.0));
        fs::remove_dir_all(&dir).unwrap();
    }
}
