//! The server under test: one this process started (`--spawn`) or one already running
//! (`--server`), and its resident memory read from `/proc/PID/status`.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the spawned server said when it stopped.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// The closing line, `txsock stopped: N transfers in M commits`.
    pub line: Option<String>,
    /// Transfers committed (from the closing line).
    pub transfers: Option<u64>,
    /// Commits (from the closing line).
    pub commits: Option<u64>,
    /// The largest group commit, in ledger requests (from the server's `stopped` log line).
    pub largest_batch: Option<u64>,
    /// Whether it exited with status 0.
    pub clean_exit: bool,
}

struct Spawned {
    child: Child,
    dir: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The server under test.
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, if known (memory is sampled only then).
    pub pid: Option<u32>,
    spawned: Option<Spawned>,
}

/// Raises this process's open-file limit to its hard limit (children inherit it), and the
/// hard limit too to `wanted` if it is lower and this process may (root, or
/// `CAP_SYS_RESOURCE`; never past the kernel's `fs.nr_open`); returns the new soft limit
/// (1024, the usual default, if it cannot be read).
#[cfg(unix)]
pub fn raise_file_limit(wanted: u64) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Some(1024);
        }
        #[allow(clippy::unnecessary_cast)] // `rlim_t` is narrower on some targets.
        let hard = lim.rlim_max as u64;
        if hard < wanted {
            let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(wanted);
            let raised = libc::rlimit {
                rlim_cur: wanted.min(ceiling) as libc::rlim_t,
                rlim_max: wanted.min(ceiling) as libc::rlim_t,
            };
            // Fails without the privilege: the hard limit stays, and is used below.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is narrower on some targets.
    let soft = lim.rlim_cur as u64;
    Some(soft)
}

/// Elsewhere (Windows) sockets are not counted against an open-file limit: nothing to raise.
#[cfg(not(unix))]
pub fn raise_file_limit(_wanted: u64) -> Option<u64> {
    None
}

/// Why server memory cannot be sampled on this platform, if it cannot.
pub const RSS_UNAVAILABLE: Option<&str> = if cfg!(target_os = "linux") {
    None
} else {
    Some("server memory not sampled: reading it needs Linux's /proc/PID/status")
};

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/PID/status`); `None` where there is no
/// such file (see [`RSS_UNAVAILABLE`]).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn keep_lines(reader: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            let mut lines = into.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() >= 200 {
                lines.remove(0);
            }
            lines.push(line);
        }
    });
}

impl Target {
    /// A server already running at `addr`.
    pub fn attach(addr: SocketAddr, pid: Option<u32>) -> Target {
        Target {
            addr,
            pid,
            spawned: None,
        }
    }

    /// Starts `txsock serve` (this same executable) on a free loopback port with a new data
    /// directory under the system's temporary directory, `iterations` as its PBKDF2 minimum,
    /// and `flags` after that.
    pub fn spawn(iterations: u32, flags: &[String]) -> Result<Target> {
        let exe = std::env::current_exe().context("finding the txsock executable")?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("txsock-stress-{}-{stamp:x}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--min-iterations")
            .arg(iterations.to_string())
            .args(flags)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "warn,txsock::serve=info")
            .env("NO_COLOR", "1");
        #[cfg(windows)]
        {
            use std::os::windows::process::CommandExt as _;
            // Its own process group, so that `stop` can send Ctrl-Break to it alone.
            cmd.creation_flags(windows::CREATE_NEW_PROCESS_GROUP);
        }
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TXSOCK_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        keep_lines(stdout, out.clone());
        keep_lines(stderr, err.clone());
        let mut spawned = Spawned {
            child,
            dir,
            stdout: out,
            stderr: err,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let first = spawned
                .stdout
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .first()
                .cloned();
            if let Some(line) = first {
                let addr = line
                    .strip_prefix("txsock listening on ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                match addr {
                    Some(addr) => break addr,
                    None => {
                        let _ = spawned.child.kill();
                        bail!("unexpected first line from txsock serve: {line:?}");
                    }
                }
            }
            if let Ok(Some(status)) = spawned.child.try_wait() {
                let errors = spawned
                    .stderr
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .join("\n");
                bail!("txsock serve exited ({status}) before listening:\n{errors}");
            }
            if Instant::now() > deadline {
                let _ = spawned.child.kill();
                bail!("txsock serve did not start listening within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let pid = spawned.child.id();
        Ok(Target {
            addr,
            pid: Some(pid),
            spawned: Some(spawned),
        })
    }

    /// Whether this process started the server.
    pub fn is_spawned(&self) -> bool {
        self.spawned.is_some()
    }

    /// The server's resident memory now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid.and_then(rss_kib)
    }

    /// Stops a spawned server (SIGTERM on Unix, Ctrl-Break on Windows; killed if that fails
    /// or it has not exited after 20 s), removes its data directory and returns what it
    /// reported. A server this process did not start is left running.
    pub fn stop(&mut self) -> ServerStats {
        let Some(mut spawned) = self.spawned.take() else {
            return ServerStats::default();
        };
        if !ask_to_stop(&spawned.child) {
            tracing::warn!("could not ask the spawned server to stop gracefully; killing it");
            let _ = spawned.child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut clean_exit = false;
        loop {
            match spawned.child.try_wait() {
                Ok(Some(status)) => {
                    clean_exit = status.success();
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = spawned.child.kill();
                    let _ = spawned.child.wait();
                    break;
                }
            }
        }
        // Let the reader threads see the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let mut stats = ServerStats {
            clean_exit,
            ..ServerStats::default()
        };
        let stdout = spawned.stdout.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(line) = stdout.iter().find(|l| l.starts_with("txsock stopped:")) {
            // `txsock stopped: N transfers in M commits`
            let words: Vec<&str> = line.split_whitespace().collect();
            stats.transfers = words.get(2).and_then(|w| w.parse().ok());
            stats.commits = words.get(5).and_then(|w| w.parse().ok());
            stats.line = Some(line.clone());
        }
        let stderr = spawned.stderr.lock().unwrap_or_else(|p| p.into_inner());
        stats.largest_batch = stderr.iter().rev().find_map(|l| {
            let rest = &l[l.find("largest_batch=")? + "largest_batch=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        let _ = std::fs::remove_dir_all(&spawned.dir);
        stats
    }
}

/// Asks `child`, a server this process spawned and has not waited for yet, to stop
/// gracefully: SIGTERM. False if that could not be sent.
#[cfg(unix)]
fn ask_to_stop(child: &Child) -> bool {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return false;
    };
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    unsafe { libc::kill(pid, libc::SIGTERM) == 0 }
}

/// Asks `child`, a server this process spawned in its own process group, to stop gracefully:
/// Ctrl-Break to that group (Ctrl-C cannot be sent to one group alone). False if that could
/// not be sent: no shared console (this process runs detached), or under Wine 8.0, where it
/// fails (tried by hand); `stop` then kills the server.
#[cfg(windows)]
fn ask_to_stop(child: &Child) -> bool {
    // SAFETY: the call only reads its two integer arguments; the group id is the spawned
    // child's process id (CREATE_NEW_PROCESS_GROUP makes it the group's id).
    unsafe { windows::GenerateConsoleCtrlEvent(windows::CTRL_BREAK_EVENT, child.id()) != 0 }
}

/// Elsewhere: no graceful stop, `stop` kills.
#[cfg(not(any(unix, windows)))]
fn ask_to_stop(_child: &Child) -> bool {
    false
}

/// The two Win32 items `stop` needs (kernel32, which every Windows program links).
#[cfg(windows)]
mod windows {
    /// `CREATE_NEW_PROCESS_GROUP` from `WinBase.h`.
    pub const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    /// `CTRL_BREAK_EVENT` from `wincon.h`.
    pub const CTRL_BREAK_EVENT: u32 = 1;

    #[link(name = "kernel32")]
    extern "system" {
        /// <https://learn.microsoft.com/windows/console/generateconsolectrlevent>
        pub fn GenerateConsoleCtrlEvent(event: u32, process_group: u32) -> i32;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(spawned) = &mut self.spawned {
            let _ = spawned.child.kill();
            let _ = spawned.child.wait();
            let _ = std::fs::remove_dir_all(&spawned.dir);
        }
    }
}
