//! A throwaway MariaDB server for the MySQL/MariaDB tests of `cargo xtask test`.
//!
//! `mariadb-install-db` creates a data directory in a new temporary directory, `mariadbd`
//! serves it on a free loopback port and a socket in that directory (no other network, no
//! option files read), and the root account, over the socket, creates the database
//! `txsock_test` and a user `txsock` (random password) allowed on `txsock_test%`, since the
//! tests create one database each, and to read `information_schema.INNODB_TRX` (`PROCESS`:
//! the store tests that wait for a lock wait). [`MariaDb::url`] is what `TXSOCK_TEST_MYSQL_URL` is set
//! to. Dropping the value stops the server (SIGTERM, then SIGKILL after 30 s) and removes the
//! directory, whether the tests passed or not.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::galera;
use crate::util::{self, display, Error};

/// The environment variable the tests read.
pub const URL_VAR: &str = "TXSOCK_TEST_MYSQL_URL";

/// How long `mariadbd` may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running throwaway MariaDB server, stopped and deleted on drop.
pub struct MariaDb {
    child: Option<Child>,
    dir: PathBuf,
    /// `mysql://txsock:PASSWORD@127.0.0.1:PORT/txsock_test`.
    pub url: String,
}

/// Finds `program` on `PATH` or in the sbin directories (not on a normal user's `PATH`).
pub fn find(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(program))
        .find(|path| util::is_executable(path))
}

fn need(program: &str) -> Result<PathBuf, Error> {
    find(program).ok_or_else(|| {
        Error::new(format!(
            "`{program}` not found: install Debian's mariadb-server (`cargo xtask test` does \
             so as root)"
        ))
    })
}

fn is_root() -> bool {
    util::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// 16 random hex digits from the kernel.
fn random_hex() -> Result<String, Error> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::new(format!("reading /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::new(format!("finding a free loopback port: {e}")))
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl MariaDb {
    /// Installs a data directory and starts the server; returns once it accepts connections
    /// and the test user and database exist.
    pub fn start() -> Result<MariaDb, Error> {
        let install_db = need("mariadb-install-db")?;
        let mariadbd = need("mariadbd")?;
        let client = need("mariadb")?;
        let dir = std::env::temp_dir().join(format!("txsock-mariadb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::new(format!("creating {}: {e}", dir.display())))?;
        // From here on, dropping `server` cleans up, also on the error paths below.
        let mut server = MariaDb {
            child: None,
            dir: dir.clone(),
            url: String::new(),
        };
        let data = dir.join("data");
        let socket = dir.join("sock");
        // mariadbd refuses to run as root unless told to.
        let as_root: &[&str] = if is_root() { &["--user=root"] } else { &[] };

        let install_log = dir.join("install.log");
        let log_file = |path: &Path| {
            fs::File::create(path)
                .map_err(|e| Error::new(format!("creating {}: {e}", path.display())))
        };
        let mut install = Command::new(&install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .args(as_root)
            .stdin(Stdio::null())
            .stdout(log_file(&install_log)?)
            .stderr(log_file(&install_log.with_extension("err"))?);
        println!("$ {}", display(&install));
        let status = install
            .status()
            .map_err(|e| Error::new(format!("could not start {}: {e}", install_db.display())))?;
        if !status.success() {
            return Err(Error::new(format!(
                "mariadb-install-db failed ({status}):\n{}\n{}",
                tail(&install_log),
                tail(&install_log.with_extension("err"))
            )));
        }

        let port = free_port()?;
        let error_log = dir.join("error.log");
        let mut serve = Command::new(&mariadbd);
        serve
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", error_log.display()))
            .args(["--max-connections=1000", "--skip-name-resolve"])
            // The durability contract, spelled out rather than left to the defaults: the
            // redo log is flushed at every COMMIT, and there is no binary log (a single
            // server needs none; README "Recommended MariaDB settings").
            .args(["--innodb-flush-log-at-trx-commit=1", "--skip-log-bin"])
            .args(as_root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        println!("$ {}", display(&serve));
        server.child = Some(
            serve
                .spawn()
                .map_err(|e| Error::new(format!("could not start {}: {e}", mariadbd.display())))?,
        );

        // Wait until root can run a statement over the socket.
        let as_root_client = |sql: &str| {
            let mut command = Command::new(&client);
            command
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["--user=root", "--batch", "--execute", sql]);
            command
        };
        let started = Instant::now();
        loop {
            if let Some(child) = server.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    server.child = None;
                    return Err(Error::new(format!(
                        "mariadbd exited at start ({status}):\n{}",
                        tail(&error_log)
                    )));
                }
            }
            if util::succeeds(&mut as_root_client("SELECT 1")) {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::new(format!(
                    "mariadbd did not accept connections within {} s:\n{}",
                    START_TIMEOUT.as_secs(),
                    tail(&error_log)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }

        let password = random_hex()?;
        let mut sql = String::from("CREATE DATABASE txsock_test;");
        // 'localhost' is the socket (the driver prefers it on loopback), 127.0.0.1 is TCP.
        for host in ["localhost", "127.0.0.1"] {
            sql.push_str(&format!(
                "CREATE USER 'txsock'@'{host}' IDENTIFIED BY '{password}';\
                 GRANT ALL PRIVILEGES ON `txsock\\_test%`.* TO 'txsock'@'{host}';\
                 GRANT PROCESS ON *.* TO 'txsock'@'{host}';"
            ));
        }
        let mut create = as_root_client(&sql);
        create.stdin(Stdio::null());
        let status = create
            .status()
            .map_err(|e| Error::new(format!("could not start {}: {e}", client.display())))?;
        if !status.success() {
            return Err(Error::new(format!(
                "creating the test database and user failed ({status})"
            )));
        }
        server.url = format!("mysql://txsock:{password}@127.0.0.1:{port}/txsock_test");
        println!(
            "MariaDB for the tests: 127.0.0.1:{port}, data in {} ({} s to start)",
            dir.display(),
            started.elapsed().as_secs()
        );
        Ok(server)
    }
}

/// Points `command` at a MySQL/MariaDB server for the tests: the one `TXSOCK_TEST_MYSQL_URL`
/// already names, or a throwaway [`MariaDb`] started here. Keep the returned value until
/// `command` is done: dropping it stops the throwaway server.
pub fn provide(command: &mut Command) -> Result<Option<MariaDb>, Error> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => {
            println!("using {URL_VAR} from the environment");
            Ok(None)
        }
        _ => {
            let server = MariaDb::start()?;
            command.env(URL_VAR, &server.url);
            Ok(Some(server))
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            galera::wait_or_kill(&mut child, Instant::now() + galera::STOP_TIMEOUT);
            println!("MariaDB for the tests stopped");
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test -p xtask -- --ignored`: needs mariadb-server installed.
    #[test]
    #[ignore = "starts a MariaDB server (needs mariadb-server)"]
    fn starts_serves_and_cleans_up() {
        let server = MariaDb::start().expect("start");
        let dir = server.dir.clone();
        assert!(server.url.starts_with("mysql://txsock:"));
        let port: String = server
            .url
            .rsplit(':')
            .next()
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_string();
        assert!(std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok());
        drop(server);
        assert!(!dir.exists());
        assert!(std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err());
    }
}
