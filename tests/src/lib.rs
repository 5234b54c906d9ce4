//! Test kit for end-to-end tests: start a real `txsock serve` on 127.0.0.1 with a free port
//! and a temporary data directory, talk to it with the core's blocking client over TCP, run
//! admin commands, read the audit logs, and stop everything afterwards.

use embedded_io_adapters::std::FromStd;
use rand_core::OsRng;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use txsock_core::auth::SessionMacs;
use txsock_core::blocking::BlockingClient;
use txsock_core::encoding::{hex_decode, hex_encode};
use txsock_core::mac;
use txsock_core::message::Response;
use txsock_core::session::client::ClientEvent;
use txsock_core::session::{ClientConfig, ClientSession};
use txsock_core::{Amount, ErrorCode, Username};

/// What the kill -9 tests (`tests/crash.rs`, `tests/galera.rs`) share: load and ledger checks.
pub mod crash;

/// The throwaway Galera cluster, the same code `cargo xtask bench` starts it with.
#[path = "../../xtask/src/galera.rs"]
pub mod galera;

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
    /// Its first line on stdout (`txsock listening on ADDR (...)`), which also names the
    /// metrics endpoint: [`metrics_addr`](Self::metrics_addr).
    pub banner: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
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
        Server::start_in_env(data_dir, extra, &[])
    }

    /// Starts a server on `data_dir` with `extra` flags and the environment variables `env`
    /// (kept across restarts).
    pub fn start_in_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr, banner) = spawn(data_dir, &args, &env);
        Server {
            child: Some(child),
            addr,
            banner,
            data_dir: data_dir.to_path_buf(),
            args,
            env,
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
        let (child, addr, banner) = spawn(&self.data_dir, &self.args, &self.env);
        self.child = Some(child);
        self.addr = addr;
        self.banner = banner;
    }

    /// Kills the server with SIGKILL and starts it again on the same data (new port).
    pub fn crash_and_restart(&mut self) {
        self.kill();
        let (child, addr, banner) = spawn(&self.data_dir, &self.args, &self.env);
        self.child = Some(child);
        self.addr = addr;
        self.banner = banner;
    }

    /// The metrics endpoint the server announced (`--metrics 127.0.0.1:0` lets the server
    /// pick the port, so no other process can take it between choosing and binding).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.banner
            .split_once("metrics on http://")
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no metrics endpoint in {:?}", self.banner))
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
            test_client_config(),
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
    /// has one, and for `user add` the server's `--min-iterations` unless ARGS has one) and
    /// returns its output.
    pub fn admin(&self, args: &[&str], stdin: &str) -> Output {
        let mut args = args.to_vec();
        let iterations = ITERATIONS.to_string();
        if args.starts_with(&["user", "add"]) && !args.contains(&"--min-iterations") {
            args.extend(["--min-iterations", &iterations]);
        }
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

    /// Registers each of `users` with its test [`password`] (and logs out).
    pub fn register(&self, users: &[&str]) {
        for user in users {
            drop(self.login(user, true));
        }
    }

    /// `txsock client --user USER ARGS` against this server with USER's test [`password`]
    /// and nothing on standard input (see [`run_client`]).
    pub fn run_client_as(&self, user: &str, args: &[&str]) -> ClientRun {
        let mut all = vec!["--user", user];
        all.extend_from_slice(args);
        run_client(self.addr, &all, Some(&password(user)), "")
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
    BlockingClient::new(FromStd::new(stream), OsRng, test_client_config())
}

/// A blocking protocol client over TCP.
pub type Client = BlockingClient<FromStd<TcpStream>, OsRng>;

/// Starts `txsock serve`; returns the child, its address and its first line (the banner).
fn spawn(
    data_dir: &Path,
    extra: &[String],
    env: &[(String, String)],
) -> (Child, SocketAddr, String) {
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
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().map(|(k, v)| (k, v)))
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
    (child, addr, first)
}

/// Writes `stdin` to `child`'s piped standard input and closes it.
fn feed_stdin(child: &mut Child, stdin: &str) {
    // A command that refuses its arguments exits before reading stdin: the write then
    // fails with a broken pipe, which is not the test's failure.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
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
    feed_stdin(&mut child, stdin);
    child.wait_with_output().expect("wait")
}

/// The environment variables that would hand `txsock` settings of this process's
/// surroundings (a settings file, a database, a data directory, a minimum of iterations):
/// an operator's command in a test names everything it uses on its command line.
const SETTINGS_VARIABLES: [&str; 4] = [
    "TXSOCK_CONFIG",
    "TXSOCK_DB",
    "TXSOCK_DATA_DIR",
    "TXSOCK_MIN_ITERATIONS",
];

/// `txsock ARGS` in `cwd`, with none of the [`SETTINGS_VARIABLES`], its output piped.
fn operator_command(program: impl AsRef<std::ffi::OsStr>, cwd: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for variable in SETTINGS_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// Runs `txsock ARGS` in `cwd` as an operator types it (no settings from the environment,
/// standard input closed); killed after 30 s.
pub fn txsock_in(cwd: &Path, args: &[&str]) -> Output {
    txsock_in_env(cwd, args, &[])
}

/// [`txsock_in`] with exactly the environment variables `env` of txsock's own (no
/// `TXSOCK_PASSWORD` or `RUST_LOG` from this process unless `env` names them).
pub fn txsock_in_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = operator_command(txsock_bin(), cwd)
        .args(args)
        .env_remove("TXSOCK_PASSWORD")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn txsock");
    output_within(child, Duration::from_secs(30))
}

/// A command's standard output, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's standard error, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// [`txsock_in`] with `stdin` on standard input.
pub fn txsock_in_with_stdin(cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = operator_command(txsock_bin(), cwd)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn txsock");
    feed_stdin(&mut child, stdin);
    output_within(child, Duration::from_secs(30))
}

/// Runs `txsock ARGS` in `cwd` as user `nobody` (who may write nowhere here), otherwise as
/// [`txsock_in`]; or says why this process cannot switch users (it needs root and setpriv).
pub fn as_nobody(cwd: &Path, args: &[&str]) -> Result<Output, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not running as root, so cannot run a command as another user".into());
    }
    let child = operator_command("setpriv", cwd)
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(txsock_bin())
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("setpriv: {e}"))?;
    let out = output_within(child, Duration::from_secs(30));
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("setpriv:") {
        return Err(format!(
            "setpriv failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Whether user `nobody` can run the `txsock` binary from `cwd` (a target directory under a
/// private home is out of its reach), or why not: the test that needs it skips with that.
pub fn nobody_can_run_txsock(cwd: &Path) -> Result<(), String> {
    let out = as_nobody(cwd, &["--version"])?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "user nobody cannot run {}: {}{}",
        txsock_bin().display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
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

// ---------------------------------------------------------------------------------------
// Raw connections: speak the wire protocol line by line, with the session keys in hand, so
// a test can send genuine frames and tampered ones on the same session.
// ---------------------------------------------------------------------------------------

/// The exact `error` frame the server sends for `code` (without the newline).
pub fn error_line(code: ErrorCode) -> String {
    format!(
        "{{\"op\":\"error\",\"code\":\"{}\",\"message\":\"{}\"}}",
        code.name(),
        code.message()
    )
}

/// A TCP connection to `server` from a chosen loopback source address (Linux routes all of
/// 127.0.0.0/8 to `lo`, so 127.0.0.2 is a second client address on one machine).
pub fn connect_from(server: &Server, source: Ipv4Addr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source address");
    socket.connect(&server.addr.into()).expect("connect");
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// A line-oriented raw connection that keeps bytes read past a line for the next one.
pub struct LineConn {
    /// The socket.
    pub stream: TcpStream,
    pending: Vec<u8>,
}

/// What one SCRAM login attempt over a [`LineConn`] sent and received.
#[derive(Debug)]
pub struct LoginAttempt {
    /// The `login` frame sent (without newline).
    pub login: String,
    /// The server's answer to it (a `challenge` line, normally).
    pub challenge: String,
    /// The `proof` frame sent (without newline); empty if no challenge came.
    pub proof: String,
    /// The server's answer to the proof: `welcome` or an `error` line.
    pub reply: String,
    /// The session keys, if the server said `welcome` and its signature verified.
    pub keys: Option<SessionMacs>,
}

impl LineConn {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> LineConn {
        LineConn {
            stream,
            pending: Vec::new(),
        }
    }

    /// Our address as the server sees it (`peer=` in the audit logs).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next line (without its newline), or `None` at EOF, reset or read timeout.
    pub fn recv(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                return Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Sends `frame` plus a newline and returns the answer line.
    pub fn exchange(&mut self, frame: &str) -> String {
        self.send_raw(format!("{frame}\n").as_bytes());
        self.recv()
            .unwrap_or_else(|| panic!("no answer to {frame:?}"))
    }

    /// True if nothing at all arrives within `wait` (the connection stays open and silent).
    pub fn silent_for(&mut self, wait: Duration) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 64];
        let silent = match self.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                false
            }
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        silent
    }

    /// True once the server has closed the connection (after any lines still pending).
    pub fn closed_by_peer(&mut self) -> bool {
        self.pending.clear();
        closed_by_peer(&mut self.stream)
    }

    /// One SCRAM login attempt as `user` with `password`, made by the core's
    /// [`ClientSession`] (which runs PBKDF2 at the challenge's count and verifies the server
    /// signature of a `welcome`); the frames it sent and received are recorded raw, for tests
    /// that replay or alter them. Panics if a `welcome`'s signature does not verify.
    pub fn login(&mut self, user: &str, password: &str) -> LoginAttempt {
        let mut client: ClientSession = ClientSession::new(test_client_config());
        client
            .login(&mut OsRng, user)
            .expect("a valid login request");
        let login = take_frame(&mut client);
        let challenge = self.exchange(&login);
        let mut attempt = LoginAttempt {
            login,
            reply: challenge.clone(),
            challenge,
            proof: String::new(),
            keys: None,
        };
        if !matches!(
            deliver(&mut client, &attempt.challenge),
            Some(ClientEvent::Challenge { .. })
        ) {
            return attempt;
        }
        client
            .answer_with_password(password)
            .expect("a proof after a challenge");
        attempt.proof = take_frame(&mut client);
        attempt.reply = self.exchange(&attempt.proof);
        match deliver(&mut client, &attempt.reply) {
            Some(ClientEvent::LoggedIn) => {
                attempt.keys = client.danger_session_macs().cloned();
            }
            Some(ClientEvent::Integrity(e)) => {
                panic!("the welcome does not verify ({e}): {}", attempt.reply)
            }
            _ => {}
        }
        attempt
    }
}

/// The client configuration of every test client: it accepts the test servers' [`ITERATIONS`].
fn test_client_config() -> ClientConfig {
    ClientConfig {
        min_iterations: ITERATIONS,
        ..ClientConfig::default()
    }
}

/// Takes the client session's pending frame, without its newline.
fn take_frame(client: &mut ClientSession) -> String {
    let pending = client.poll_transmit();
    let n = pending.len();
    let frame = std::str::from_utf8(pending)
        .expect("the client writes UTF-8")
        .trim_end_matches('\n')
        .to_string();
    client.advance_transmit(n);
    frame
}

/// Hands one line from the server to the client session; returns the event it caused.
fn deliver(client: &mut ClientSession, line: &str) -> Option<ClientEvent> {
    let framed = format!("{line}\n");
    let mut used = 0;
    while used < framed.len() {
        let n = client.handle_input(&framed.as_bytes()[used..]);
        if n == 0 {
            break;
        }
        used += n;
    }
    client.poll_event()
}

/// The parsed, verified contents of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReceipt {
    /// `committed` or the refusal's code name.
    pub result: String,
    /// The sender's balance in the receipt.
    pub balance: Amount,
}

/// A logged-in session driven frame by frame, holding its session keys: it builds genuine
/// transfer frames (and anything else) and checks the server's authenticated answers.
pub struct RawSession {
    /// The connection.
    pub conn: LineConn,
    /// The normalised logged-in user.
    pub user: String,
    /// The session keys derived at login.
    pub keys: SessionMacs,
    seq: u32,
}

impl RawSession {
    /// Logs in as `user` with its test password over an already connected stream.
    pub fn login_over(stream: TcpStream, user: &str) -> RawSession {
        let mut conn = LineConn::new(stream);
        let attempt = conn.login(user, &password(user));
        let Some(keys) = attempt.keys else {
            panic!("login as {user} failed: {}", attempt.reply);
        };
        RawSession {
            conn,
            user: Username::parse(user).unwrap().as_str().to_string(),
            keys,
            seq: 0,
        }
    }

    /// Our address as the server sees it.
    pub fn peer(&self) -> SocketAddr {
        self.conn.local_addr()
    }

    /// Sends one frame (a newline is added) and returns the answer line.
    pub fn exchange(&mut self, frame: &str) -> String {
        self.conn.exchange(frame)
    }

    /// Asks for `count` nonces and returns them (hex), oldest first.
    pub fn nonces(&mut self, count: u8) -> Vec<String> {
        let line = self.exchange(&format!("{{\"op\":\"nonces\",\"count\":{count}}}"));
        let nonces = match Response::parse(line.as_bytes()) {
            Ok(Response::Nonces(n)) => n.nonces.iter().map(|s| s.to_string()).collect(),
            _ => panic!("expected nonces, got {line}"),
        };
        nonces
    }

    /// One fresh nonce.
    pub fn nonce(&mut self) -> String {
        self.nonces(1).remove(0)
    }

    /// The genuine transfer MAC (hex) of this session for the given fields.
    pub fn tag(&self, id: &str, to: &str, amount: &str, nonce: &str) -> String {
        let to = Username::parse(to).expect("recipient");
        let amount = Amount::parse(amount).expect("amount");
        let nonce = hex_decode::<16>(nonce).expect("nonce hex");
        let tag = mac::transfer(
            &self.keys.client_to_server,
            &self.user,
            id,
            to.as_str(),
            amount,
            &nonce,
        );
        hex_encode::<64>(tag.as_bytes()).to_string()
    }

    /// A genuine transfer frame (without newline), fields in the reference order.
    pub fn transfer_frame(&self, id: &str, to: &str, amount: &str, nonce: &str) -> String {
        let mac = self.tag(id, to, amount, nonce);
        format!(
            "{{\"op\":\"transfer\",\"id\":\"{id}\",\"to\":\"{to}\",\"amount\":\"{amount}\",\
             \"nonce\":\"{nonce}\",\"mac\":\"{mac}\"}}"
        )
    }

    /// Checks that `line` is the receipt of the transfer (`id`, `to`, `amount`, `nonce`):
    /// its MAC under the s2c key, its echo and its sequence number. Returns its outcome.
    pub fn verify_receipt(
        &mut self,
        line: &str,
        id: &str,
        to: &str,
        amount: &str,
        nonce: &str,
    ) -> RawReceipt {
        let Ok(Response::Receipt(r)) = Response::parse(line.as_bytes()) else {
            panic!("expected a receipt for {id}, got {line}");
        };
        let to = Username::parse(to).unwrap();
        let amount = Amount::parse(amount).unwrap();
        let balance = Amount::parse_balance(r.balance).expect("receipt balance");
        let nonce = hex_decode::<16>(nonce).unwrap();
        let tag = mac::receipt(
            &self.keys.server_to_client,
            &mac::ReceiptFields {
                seq: r.seq,
                id,
                to: to.as_str(),
                amount,
                result: r.result,
                balance,
                nonce: &nonce,
            },
        );
        assert!(
            hex_decode::<32>(r.mac).is_ok_and(|m| tag.ct_eq(&m)),
            "receipt MAC does not verify: {line}"
        );
        assert_eq!(
            (r.id, r.to, Amount::parse(r.amount).ok()),
            (id, to.as_str(), Some(amount)),
            "receipt echo: {line}"
        );
        assert_eq!(r.seq, self.seq + 1, "receipt sequence: {line}");
        self.seq = r.seq;
        RawReceipt {
            result: r.result.to_string(),
            balance,
        }
    }

    /// Sends a genuine transfer with a fresh nonce and returns its verified receipt.
    pub fn transfer(&mut self, id: &str, to: &str, amount: &str) -> RawReceipt {
        let nonce = self.nonce();
        let line = self.exchange(&self.transfer_frame(id, to, amount, &nonce));
        self.verify_receipt(&line, id, to, amount, &nonce)
    }

    /// The verified balance, and the raw `balance` line it came in.
    pub fn balance_line(&mut self) -> (Amount, String) {
        let line = self.exchange("{\"op\":\"balance\"}");
        let Ok(Response::Balance(b)) = Response::parse(line.as_bytes()) else {
            panic!("expected a balance, got {line}");
        };
        let balance = Amount::parse_balance(b.balance).expect("balance");
        let tag = mac::balance(&self.keys.server_to_client, b.seq, balance);
        assert!(
            hex_decode::<32>(b.mac).is_ok_and(|m| tag.ct_eq(&m)),
            "balance MAC does not verify: {line}"
        );
        assert_eq!(b.seq, self.seq + 1, "balance sequence: {line}");
        self.seq = b.seq;
        (balance, line)
    }

    /// The verified balance.
    pub fn balance(&mut self) -> Amount {
        self.balance_line().0
    }
}

impl Server {
    /// A raw logged-in session as `user` (registered first if `register`).
    pub fn raw_login(&self, user: &str, register: bool) -> RawSession {
        if register {
            self.client()
                .register(user, &password(user), ITERATIONS)
                .expect("register");
        }
        RawSession::login_over(self.connect_raw(), user)
    }

    /// The lines of log `name` that contain every one of `needles`.
    pub fn log_lines(&self, name: &str, needles: &[&str]) -> Vec<String> {
        self.log(name)
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }
}

/// A man in the middle on 127.0.0.1: forwards each accepted connection to `upstream`,
/// passing the server's lines through `rewrite`, and records the lines the client sent.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Every line the client sent through the proxy, in order.
    pub client_lines: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Starts the proxy; it serves until the test process ends.
    pub fn start(upstream: SocketAddr, rewrite: fn(&str) -> String) -> Proxy {
        Proxy::start_both(upstream, str::to_string, rewrite)
    }

    /// [`start`](Self::start), also passing the client's lines through `rewrite_up` on their
    /// way to the server (`client_lines` records them as the client sent them).
    pub fn start_both(
        upstream: SocketAddr,
        rewrite_up: fn(&str) -> String,
        rewrite: fn(&str) -> String,
    ) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let client_lines = Arc::new(Mutex::new(Vec::new()));
        let lines = client_lines.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let lines = lines.clone();
                let (client_r, server_w) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut server_w = server_w;
                    for line in BufReader::new(client_r).split(b'\n') {
                        let Ok(line) = line else { break };
                        lines
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&line).into_owned());
                        // Bytes that are not UTF-8 pass as they are.
                        let mut out = match std::str::from_utf8(&line) {
                            Ok(text) => rewrite_up(text).into_bytes(),
                            Err(_) => line,
                        };
                        out.push(b'\n');
                        if server_w.write_all(&out).is_err() {
                            break;
                        }
                    }
                    let _ = server_w.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut client_w = client;
                    for line in BufReader::new(server).lines() {
                        let Ok(line) = line else { break };
                        let out = format!("{}\n", rewrite(&line));
                        if client_w.write_all(out.as_bytes()).is_err() {
                            break;
                        }
                    }
                    let _ = client_w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy { addr, client_lines }
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

/// A throwaway Galera cluster for a test, or `None` when Galera tests are to be skipped here
/// (it prints why). Panics, failing the test, when a cluster cannot be had but Galera tests
/// are required: when `CI` is set or `TXSOCK_REQUIRE_GALERA=1` (`cargo xtask test` installs
/// Debian's galera-4 and sets it).
pub fn galera_cluster() -> Option<galera::Cluster> {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let required = std::env::var("TXSOCK_REQUIRE_GALERA").is_ok_and(|v| v == "1");
    if let Some(why) = galera::missing() {
        assert!(
            !(ci || required),
            "Galera tests are required here (CI or TXSOCK_REQUIRE_GALERA=1) but {why}: run \
             them with `cargo xtask test`, which installs what they need as root"
        );
        eprintln!("skipped: {why}");
        return None;
    }
    Some(galera::Cluster::start().unwrap_or_else(|e| panic!("{e}")))
}

// ---------------------------------------------------------------------------------------
// The tools as processes: `txsock mitm` (the testing proxy) and `txsock client`.
// ---------------------------------------------------------------------------------------

/// Waits up to `limit` for `child` to exit, killing it after that; returns its output.
pub fn output_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    child.wait_with_output().expect("collect output")
}

/// A running `txsock mitm` in front of a server, killed on drop. Its log (every frame it
/// saw and every action it took) is collected as it is written.
pub struct Mitm {
    child: Child,
    /// Where clients connect.
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Mitm {
    /// Starts `txsock mitm --mode MODE EXTRA` on a free loopback port in front of `server`.
    pub fn start(server: &Server, mode: &str, extra: &[&str]) -> Mitm {
        Mitm::start_upstream(server.addr, mode, extra)
    }

    /// Starts `txsock mitm --mode MODE EXTRA` on a free loopback port in front of `upstream`
    /// (a server this kit did not start, such as the QEMU board).
    pub fn start_upstream(upstream: SocketAddr, mode: &str, extra: &[&str]) -> Mitm {
        let mut child = Command::new(txsock_bin())
            .args([
                "mitm",
                "--listen",
                "127.0.0.1:0",
                "--mode",
                mode,
                "--upstream",
            ])
            .arg(upstream.to_string())
            .args(extra)
            .env_remove("TXSOCK_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn txsock mitm");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout).lines();
        let first = reader.next().and_then(Result::ok).unwrap_or_default();
        let addr = first
            .strip_prefix("txsock mitm listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from txsock mitm: {first:?}"));
        let lines = Arc::new(Mutex::new(vec![first]));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in reader.map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Mitm { child, addr, lines }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Log lines of one action (`TAMPER`, `REPLAY`, `HIDE`, `DROP`, `REORDER`, `FORGE`, or
    /// `c->s` / `s->c` for forwarded frames), after waiting up to 2 s for at least one.
    pub fn actions(&self, action: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let found: Vec<String> = self
                .log()
                .into_iter()
                .filter(|l| l.split_whitespace().nth(2) == Some(action))
                .collect();
            if !found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Mitm {
    /// Sends SIGTERM and waits up to 10 s; returns how it exited (`None` if it did not).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run of `txsock client` printed and how it exited.
#[derive(Debug)]
pub struct ClientRun {
    /// Exit status (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error (progress notes and security warnings).
    pub stderr: String,
}

impl ClientRun {
    /// Standard output parsed as JSON lines (with `--json`).
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }
}

/// Runs `txsock client --server ADDR --min-iterations 4096 ARGS` (unless ARGS has its own
/// `--min-iterations`) with `password` (if any) in `TXSOCK_PASSWORD` and `stdin` on standard
/// input; killed after 60 s.
pub fn run_client(
    addr: SocketAddr,
    args: &[&str],
    password: Option<&str>,
    stdin: &str,
) -> ClientRun {
    run_client_at(&addr.to_string(), args, password, stdin)
}

/// [`run_client`] with `--server SERVERS` (one `HOST:PORT`, or several separated by commas).
pub fn run_client_at(
    servers: &str,
    args: &[&str],
    password: Option<&str>,
    stdin: &str,
) -> ClientRun {
    let mut cmd = Command::new(txsock_bin());
    cmd.args(["client", "--server", servers]);
    if !args.contains(&"--min-iterations") {
        cmd.args(["--min-iterations", &ITERATIONS.to_string()]);
    }
    cmd.args(args)
        .env_remove("TXSOCK_CONFIG")
        .env_remove("TXSOCK_PASSWORD")
        .env_remove("TXSOCK_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("TXSOCK_PASSWORD", p);
    }
    let mut child = cmd.spawn().expect("spawn txsock client");
    let mut input = child.stdin.take().expect("stdin");
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let out = output_within(child, Duration::from_secs(60));
    ClientRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Server {
    /// `user`'s balance from `txsock user list` (the ledger itself, not the protocol).
    pub fn user_balance(&self, user: &str) -> Amount {
        let out = self.admin(&["user", "list"], "");
        let text = String::from_utf8_lossy(&out.stdout);
        let field = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(user))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("{user} not in user list:\n{text}"));
        Amount::parse_balance(field).expect("balance")
    }

    /// How many `transactions.log` lines record transfer `id`.
    pub fn committed(&self, id: &str) -> usize {
        let needle = format!(" transfer id={id} ");
        self.log("transactions.log")
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// True if `ledger check` passes.
    pub fn ledger_ok(&self) -> bool {
        self.admin(&["ledger", "check"], "").status.success()
    }
}
