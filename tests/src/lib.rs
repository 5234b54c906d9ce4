//! Test kit for end-to-end tests: start a real `txsock serve` on 127.0.0.1 with a free port
//! and a temporary data directory, talk to it with the core's blocking client over TCP, run
//! admin commands, read the audit logs, and stop everything afterwards.

use embedded_io_adapters::std::FromStd;
use rand_core::OsRng;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use txsock_core::blocking::BlockingClient;
use txsock_core::session::ClientConfig;

/// PBKDF2 iterations the test servers accept and the test clients use (fast, test only).
pub const ITERATIONS: u32 = 4096;

/// Path of the `txsock` binary built beside this test executable.
pub fn txsock_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/txsock
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("txsock");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p txsock-host`; `cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// A running `txsock serve`, killed on drop.
pub struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server in a new temporary directory with `extra` flags.
    pub fn start(extra: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut server = Server::start_in(&data_dir, extra);
        server._temp = Some(temp);
        server
    }

    /// Starts a server on `data_dir` (kept after the server stops).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(data_dir, &args);
        Server {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            args,
            _temp: None,
        }
    }

    /// Stops the server with SIGTERM and waits; returns its exit status success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (no shutdown at all).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts again on the same data directory and flags (new port).
    pub fn restart(&mut self) {
        assert!(self.stop(), "server did not stop cleanly");
        let (child, addr) = spawn(&self.data_dir, &self.args);
        self.child = Some(child);
        self.addr = addr;
    }

    /// Kills the server with SIGKILL and starts it again on the same data (new port).
    pub fn crash_and_restart(&mut self) {
        self.kill();
        let (child, addr) = spawn(&self.data_dir, &self.args);
        self.child = Some(child);
        self.addr = addr;
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A raw TCP connection.
    pub fn connect_raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s
    }

    /// A raw TCP connection with a tiny receive buffer, for a client that will not read.
    pub fn connect_small_window(&self) -> TcpStream {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
        socket.connect(&self.addr.into()).expect("connect");
        let s: TcpStream = socket.into();
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s
    }

    /// A protocol client.
    pub fn client(&self) -> Client {
        BlockingClient::new(
            FromStd::new(self.connect_raw()),
            OsRng,
            ClientConfig {
                min_iterations: ITERATIONS,
                ..ClientConfig::default()
            },
        )
    }

    /// A client registered (if `register`) and logged in as `user` with password `user-password`.
    pub fn login(&self, user: &str, register: bool) -> Client {
        let mut c = self.client();
        if register {
            c.register(user, &password(user), ITERATIONS)
                .expect("register");
        }
        c.login(user, &password(user)).expect("login");
        c
    }

    /// Starts a server in a new temporary directory (audit logs) on the database `db`
    /// (`--db`, e.g. a [`MysqlDatabase`]'s URL) with `extra` flags.
    pub fn start_on_db(db: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--db", db];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// Runs `txsock ARGS --data-dir DATA` (an admin command, with the server's `--db` if it
    /// has one) and returns its output.
    pub fn admin(&self, args: &[&str], stdin: &str) -> Output {
        let mut args = args.to_vec();
        if let Some(i) = self.args.iter().position(|a| a == "--db") {
            args.push("--db");
            args.push(&self.args[i + 1]);
        }
        admin(&self.data_dir, &args, stdin)
    }

    /// The contents of an audit log (`sessions.log`, `transactions.log`, `error.log`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.data_dir.join(name)).unwrap_or_default()
    }

    /// Waits up to 5 s for `needle` to appear in log `name`.
    pub fn wait_for_log(&self, name: &str, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.log(name).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test password of `user`.
pub fn password(user: &str) -> String {
    format!("{user}-password")
}

/// A protocol client over an already connected stream.
pub fn client_over(stream: TcpStream) -> Client {
    BlockingClient::new(
        FromStd::new(stream),
        OsRng,
        ClientConfig {
            min_iterations: ITERATIONS,
            ..ClientConfig::default()
        },
    )
}

/// A blocking protocol client over TCP.
pub type Client = BlockingClient<FromStd<TcpStream>, OsRng>;

fn spawn(data_dir: &Path, extra: &[String]) -> (Child, SocketAddr) {
    let mut cmd = Command::new(txsock_bin());
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--min-iterations")
        .arg(ITERATIONS.to_string())
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("TXSOCK_CONFIG")
        .current_dir(data_dir.parent().unwrap_or(data_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn txsock serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .strip_prefix("txsock listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from txsock serve: {first:?}"));
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Runs an admin command on `data_dir`.
pub fn admin(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(txsock_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TXSOCK_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn txsock");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Sends raw bytes and reads lines until `count` lines or EOF or timeout.
pub fn raw_exchange(stream: &mut TcpStream, send: &[u8], count: usize) -> Vec<String> {
    stream.write_all(send).expect("send");
    read_lines(stream, count)
}

/// Reads up to `count` lines (stops at EOF or read timeout).
pub fn read_lines(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < count {
        if let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            continue;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// True once the peer has closed `stream` (reads EOF within the read timeout).
pub fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// The environment variable naming the MySQL/MariaDB server for tests
/// (`mysql://USER:PASS@HOST:PORT/DB`); `cargo xtask test` starts a throwaway MariaDB and
/// sets it.
pub const MYSQL_URL_VAR: &str = "TXSOCK_TEST_MYSQL_URL";

/// The test MySQL/MariaDB URL, or `None` when MySQL tests are to be skipped (it prints
/// "skipped: TXSOCK_TEST_MYSQL_URL not set"). Panics, failing the test, when the variable
/// is unset but MySQL tests are required: when `CI` is set or `TXSOCK_REQUIRE_MYSQL=1`.
pub fn test_mysql_url() -> Option<String> {
    match std::env::var(MYSQL_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            let required = std::env::var("TXSOCK_REQUIRE_MYSQL").is_ok_and(|v| v == "1");
            assert!(
                !(ci || required),
                "{MYSQL_URL_VAR} is not set, and MySQL tests are required here (CI or \
                 TXSOCK_REQUIRE_MYSQL=1): run them with `cargo xtask test`, which starts a \
                 throwaway MariaDB, or point {MYSQL_URL_VAR} at a server"
            );
            eprintln!("skipped: {MYSQL_URL_VAR} not set");
            None
        }
    }
}

/// A database of its own on the test MySQL/MariaDB server, dropped on drop.
pub struct MysqlDatabase {
    /// Its URL, for `--db`.
    pub url: String,
    name: String,
    server: mysql::Opts,
}

impl MysqlDatabase {
    /// Creates `<DB>_<pid>_<suffix>` (DB: the test URL's database), or `None` to skip.
    pub fn create(suffix: &str) -> Option<MysqlDatabase> {
        use mysql::prelude::Queryable;
        let base_url = test_mysql_url()?;
        let opts = mysql::Opts::from_url(&base_url).expect("invalid TXSOCK_TEST_MYSQL_URL");
        let base = opts.get_db_name().unwrap_or("txsock_test").to_string();
        let mut name = format!("{base}_{}_{suffix}", std::process::id());
        name.truncate(64);
        let server: mysql::Opts = mysql::OptsBuilder::from_opts(opts)
            .db_name(None::<String>)
            .into();
        let mut conn = mysql::Conn::new(server.clone()).expect("connecting to the test server");
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
            .expect("drop");
        conn.query_drop(format!("CREATE DATABASE `{name}`"))
            .expect("creating the test database");
        let (head, query) = base_url.split_at(base_url.find('?').unwrap_or(base_url.len()));
        let (server_part, _) = head.rsplit_once('/').expect("URL has a /DB part");
        let url = format!("{server_part}/{name}{query}");
        Some(MysqlDatabase { url, name, server })
    }

    /// A connection to this database.
    pub fn connect(&self) -> mysql::Conn {
        let opts: mysql::Opts = mysql::OptsBuilder::from_opts(self.server.clone())
            .db_name(Some(self.name.clone()))
            .into();
        mysql::Conn::new(opts).expect("connecting to the test database")
    }
}

impl Drop for MysqlDatabase {
    fn drop(&mut self) {
        use mysql::prelude::Queryable;
        if let Ok(mut conn) = mysql::Conn::new(self.server.clone()) {
            let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}
