//! `txsock serve`: the TCP server. One core [`ServerSession`] per connection; this module
//! only moves bytes, reads the clock, hands ledger requests to the group commit (which commits
//! them on the connection's own thread when the store is free) and writes the audit logs.

mod lock;
#[cfg(unix)]
mod service;

use crate::audit::{Audit, Log};
use crate::clock;
use crate::config::{millis, seconds};
use crate::group_commit::{self, CommitQueue, PendingReply};
use crate::tls::Transport;
use crate::StorageArgs;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use txsock_core::framing::{DEFAULT_MAX_FRAME, MAX_RESPONSE};
use txsock_core::lockout::{Backoff, PeerAddr};
use txsock_core::replay::DEFAULT_NONCES;
use txsock_core::session::{
    PipelineQueue, PipelinedRequest, ServerConfig, ServerEvent, ServerSession, ServerShared,
};
use txsock_core::{Amount, Duration, ErrorCode};

/// The largest frame capacity compiled in; `--max-frame` chooses up to this at run time.
pub const FRAME_CAPACITY: usize = 1024;
/// The largest nonce ring compiled in; `--nonces` chooses up to this at run time.
pub const NONCE_CAPACITY: usize = 64;
/// The most requests one connection may have waiting on the ledger at once; `--pipeline`
/// chooses up to this at run time.
pub const PIPELINE_CAPACITY: usize = 16;
/// Peer addresses whose failed logins are remembered.
const ADDRESSES: usize = 4096;
/// Bytes read from a socket at once. The buffer lives on the stack only while it is read
/// and handed to the session, never in an idle connection's task; what the session cannot
/// take yet (at most this much) is kept on the heap until it can.
const READ_CHUNK: usize = 4096;

/// The host's session: the output buffer holds the largest response. Every connection
/// gets the core's default capacities while `--max-frame` and `--nonces` are within the
/// defaults (1.3 KB less than the largest, 12 MiB at 10,000 connections), else the largest.
/// Pipelined requests wait in a [`HeapPipeline`], which an idle connection does not hold.
type Session<const FRAME: usize, const NONCES: usize> =
    ServerSession<FRAME, NONCES, MAX_RESPONSE, HeapPipeline<{ PIPELINE_CAPACITY - 1 }>>;

/// Where a session keeps the requests pipelined behind the first one that waits on the
/// ledger: a fixed queue of `N` on the heap, allocated when the second request arrives and
/// freed when the last leaves, so that an idle connection's session holds one empty pointer
/// (8 bytes) instead of `N` requests (about 200 bytes each).
#[derive(Default)]
pub struct HeapPipeline<const N: usize>(Option<Box<heapless::Deque<PipelinedRequest, N>>>);

impl<const N: usize> PipelineQueue for HeapPipeline<N> {
    fn capacity(&self) -> usize {
        N
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    #[allow(clippy::result_large_err)] // The trait's signature.
    fn push_back(&mut self, request: PipelinedRequest) -> Result<(), PipelinedRequest> {
        self.0
            .get_or_insert_with(|| Box::new(heapless::Deque::new()))
            .push_back(request)
    }

    fn pop_front(&mut self) -> Option<PipelinedRequest> {
        let queue = self.0.as_mut()?;
        let first = queue.pop_front();
        if queue.is_empty() {
            self.0 = None;
        }
        first
    }

    fn get(&self, index: usize) -> Option<&PipelinedRequest> {
        self.0.as_ref()?.iter().nth(index)
    }
}
type Shared = ServerShared<ChaCha20Rng, ADDRESSES>;

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Registration {
    /// Anyone may register over the network.
    Open,
    /// Only administrators create users (`txsock user add`).
    Closed,
}

impl Registration {
    /// The core's default ([`ServerConfig::DEFAULT`]).
    const DEFAULT: Registration = if ServerConfig::DEFAULT.registration_open {
        Registration::Open
    } else {
        Registration::Closed
    };
}

/// The core's defaults that the flags below show and use: every default of `txsock serve`
/// that is also a core setting comes from [`ServerConfig::DEFAULT`] and [`Backoff`], never
/// from a literal here.
mod default {
    use super::{Backoff, ServerConfig};

    const CORE: ServerConfig = ServerConfig::DEFAULT;

    // The lockout flags set both backoffs at once, so the core's two defaults must agree.
    const _: () = assert!(
        Backoff::ACCOUNT.base.millis() == Backoff::ADDRESS.base.millis()
            && Backoff::ACCOUNT.max.millis() == Backoff::ADDRESS.max.millis()
            && Backoff::ACCOUNT.forget_after.millis() == Backoff::ADDRESS.forget_after.millis()
    );
    // The flags below are u16.
    const _: () = assert!(CORE.max_frame <= u16::MAX as usize && CORE.max_nonces <= 64);

    pub const MAX_FRAME: u16 = CORE.max_frame as u16;
    pub const NONCES: u16 = CORE.max_nonces as u16;
    pub const PIPELINE: u16 = CORE.max_pipeline as u16;
    pub const MAX_BAD_FRAMES: u16 = CORE.max_bad_frames;
    pub const MIN_ITERATIONS: u32 = CORE.min_iterations;
    pub const IDLE_TIMEOUT_SECS: u64 = CORE.idle_timeout.secs();
    pub const LOGIN_DEADLINE_SECS: u64 = CORE.login_deadline.secs();
    pub const LOCK_AFTER: u32 = CORE.account_backoff.lock_after;
    pub const ADDRESS_LOCK_AFTER: u32 = CORE.address_backoff.lock_after;
    pub const LOCKOUT_BASE_MS: u64 = CORE.account_backoff.base.millis();
    pub const LOCKOUT_MAX_SECS: u64 = CORE.account_backoff.max.secs();
    pub const FORGET_AFTER_SECS: u64 = CORE.account_backoff.forget_after.secs();
}

fn parse_amount(s: &str) -> Result<Amount, String> {
    Amount::parse_non_negative(s).map_err(|e| e.to_string())
}

/// Parses `--listen`: an IP address and port, or a host name and port resolved now (its
/// first IPv4 address if it has one, else its first address).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let addresses: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("`{text}` is not HOST:PORT ({e})"))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

/// Options of `txsock serve`. Every option can also be set with a `TXSOCK_*` environment
/// variable or in `txsock.toml` (same name as the long flag); the flag wins.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on, as IP:PORT or HOST:PORT (`localhost:11002`; a host name is
    /// resolved once, at start-up, to its first IPv4 address if it has one). Port 0 picks a
    /// free port.
    #[arg(long, env = "TXSOCK_LISTEN", default_value = "127.0.0.1:11002", value_parser = parse_listen)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// Whether clients may register themselves.
    #[arg(long, env = "TXSOCK_REGISTRATION", value_enum, default_value_t = Registration::DEFAULT)]
    pub registration: Registration,

    /// Balance given to each newly registered account (money created, journaled as a deposit).
    #[arg(long, env = "TXSOCK_OPENING_BALANCE", default_value = "0", value_parser = parse_amount)]
    pub opening_balance: Amount,

    /// Lowest PBKDF2 iteration count accepted at registration; also shown to unknown users.
    #[arg(long, env = "TXSOCK_MIN_ITERATIONS", default_value_t = default::MIN_ITERATIONS)]
    pub min_iterations: u32,

    /// Maximum simultaneous connections; one more gets a `server_busy` error and is closed.
    #[arg(long, env = "TXSOCK_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Longest request line in bytes (64 to 1024); a longer line is refused and skipped.
    /// Above the default (or with `--nonces` above its default) every connection's session
    /// takes 1.3 KB more.
    #[arg(long, env = "TXSOCK_MAX_FRAME", default_value_t = default::MAX_FRAME, value_parser = clap::value_parser!(u16).range(64..=FRAME_CAPACITY as i64))]
    pub max_frame: u16,

    /// Seconds (or a duration: 90s, 5m) without a request before a connection is closed.
    #[arg(long, env = "TXSOCK_IDLE_TIMEOUT", default_value_t = default::IDLE_TIMEOUT_SECS, value_parser = seconds)]
    pub idle_timeout: u64,

    /// Seconds (or a duration: 30s, 1m) a new connection has to complete its login (slow
    /// clients are cut off).
    #[arg(long, env = "TXSOCK_LOGIN_DEADLINE", default_value_t = default::LOGIN_DEADLINE_SECS, value_parser = seconds)]
    pub login_deadline: u64,

    /// Bytes of unread responses held for one connection (its socket send buffer).
    #[arg(long, env = "TXSOCK_MAX_OUTPUT", default_value_t = 65_536)]
    pub max_output: usize,

    /// Seconds (or a duration: 10s, 1m) a response may wait for a client that does not read
    /// before it is cut off.
    #[arg(long, env = "TXSOCK_WRITE_TIMEOUT", default_value_t = 10, value_parser = seconds)]
    pub write_timeout: u64,

    /// Invalid frames (bad MAC, replay, malformed, oversize) tolerated per connection; the next
    /// one closes it.
    #[arg(long, env = "TXSOCK_MAX_BAD_FRAMES", default_value_t = default::MAX_BAD_FRAMES)]
    pub max_bad_frames: u16,

    /// Outstanding nonces per session (1 to 64); the oldest is evicted beyond that. Above the
    /// default (or with `--max-frame` above its default) every connection's session takes
    /// 1.3 KB more.
    #[arg(long, env = "TXSOCK_NONCES", default_value_t = default::NONCES, value_parser = clap::value_parser!(u16).range(1..=NONCE_CAPACITY as i64))]
    pub nonces: u16,

    /// Consecutive failed logins that lock an account (the Nth failure starts a lock that
    /// doubles with each further failure).
    #[arg(long, env = "TXSOCK_LOCKOUT_AFTER", default_value_t = default::LOCK_AFTER)]
    pub lockout_after: u32,

    /// Failed logins from one address that throttle it (the Nth failure starts it).
    #[arg(long, env = "TXSOCK_ADDRESS_LOCKOUT_AFTER", default_value_t = default::ADDRESS_LOCK_AFTER)]
    pub address_lockout_after: u32,

    /// First lockout length in milliseconds (or a duration: 500ms, 2s), for accounts and
    /// addresses; it doubles with each further failure.
    #[arg(long, env = "TXSOCK_LOCKOUT_BASE_MS", default_value_t = default::LOCKOUT_BASE_MS, value_parser = millis)]
    pub lockout_base_ms: u64,

    /// Longest lockout in seconds (or a duration: 15m, 1h), for accounts and addresses.
    #[arg(long, env = "TXSOCK_LOCKOUT_MAX", default_value_t = default::LOCKOUT_MAX_SECS, value_parser = seconds)]
    pub lockout_max: u64,

    /// Seconds (or a duration: 1h, 1d) after which failed logins are forgotten, for accounts
    /// and addresses: a failure more than this long after the previous one counts as the
    /// first again.
    #[arg(long, env = "TXSOCK_FORGET_AFTER", default_value_t = default::FORGET_AFTER_SECS, value_parser = seconds)]
    pub forget_after: u64,

    /// Most ledger requests committed in one transaction (group commit).
    #[arg(long, env = "TXSOCK_MAX_BATCH", default_value_t = 512)]
    pub max_batch: usize,

    #[command(flatten)]
    pub tls: crate::tls::ServeTlsArgs,

    /// Serve Prometheus metrics (text format) at http://ADDR/metrics, e.g. 127.0.0.1:9102:
    /// connections, logins, transfers, refused frames, commit batch sizes and latency,
    /// memory. Off by default; the endpoint has no authentication, so keep it on loopback
    /// or a private network.
    #[arg(long, env = "TXSOCK_METRICS", value_name = "ADDR", value_parser = parse_listen)]
    pub metrics: Option<SocketAddr>,

    /// Requests (transfers, balances, history pages) one connection may have waiting on the
    /// ledger at once, 1 to 16; never more than `--nonces` (a client cannot sign more
    /// transfers than it holds nonces). Pipelined transfers of many clients share commits;
    /// answers still leave in request order.
    #[arg(long, env = "TXSOCK_PIPELINE", default_value_t = default::PIPELINE, value_parser = clap::value_parser!(u16).range(1..=PIPELINE_CAPACITY as i64))]
    pub pipeline: u16,

    /// What the operational log on stderr shows, as RUST_LOG directives: `info` (the
    /// default), `debug` (a line per connection, login and commit), `warn`, or per target
    /// (`txsock=debug,warn`). Overrides RUST_LOG; -v and -q override it. Read again on SIGHUP
    /// from txsock.toml (`log-filter`).
    #[arg(long, env = "TXSOCK_LOG_FILTER", value_name = "DIRECTIVES")]
    pub log_filter: Option<String>,
}

impl ServeArgs {
    fn core_config(&self) -> ServerConfig {
        let backoff = |lock_after| Backoff {
            lock_after,
            base: Duration::from_millis(self.lockout_base_ms),
            max: Duration::from_secs(self.lockout_max),
            forget_after: Duration::from_secs(self.forget_after),
        };
        ServerConfig {
            registration_open: self.registration == Registration::Open,
            min_iterations: self.min_iterations,
            unknown_user_iterations: self.min_iterations,
            max_bad_frames: self.max_bad_frames,
            login_deadline: Duration::from_secs(self.login_deadline),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            account_backoff: backoff(self.lockout_after),
            address_backoff: backoff(self.address_lockout_after),
            max_frame: usize::from(self.max_frame),
            max_nonces: usize::from(self.nonces),
            max_pipeline: usize::from(self.pipeline),
        }
    }
}

struct Server {
    shared: Mutex<Shared>,
    ledger: CommitQueue,
    audit: Arc<Audit>,
    write_timeout: StdDuration,
    max_output: usize,
}

impl Server {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the shared state half-updated in a
        // way that matters (it is a throttle table and an RNG), so keep serving.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the server until it is asked to stop (see [`Signals`]).
pub async fn run(args: ServeArgs) -> Result<()> {
    // Nothing is created on disk before the port and the data directory are known to be
    // free: a bad --db, a port in use or a second server on the directory changes nothing.
    args.storage.validate()?;
    let tls = args.tls.server(args.listen)?;
    let listener = listen(args.listen).map_err(|e| listen_error(args.listen, e))?;
    let metrics = match args.metrics {
        Some(address) => Some(crate::metrics::bind(address).await?),
        None => None,
    };
    let data_dir_failure = |e| {
        let dir = &args.storage.data_dir;
        crate::store::io_failure_of(format!("data directory {}", dir.display()), dir, e)
    };
    let _lock = lock::DataDirLock::acquire(&args.storage.data_dir, listener.local_addr()?)
        .map_err(data_dir_failure)?;
    // An SQLite database outside the data directory: its directory is locked the same way.
    let _database_lock = match args.storage.location()? {
        crate::store::Location::Sqlite(path) => {
            lock::lock_database_dir(&path, &args.storage.data_dir, listener.local_addr()?)
                .map_err(data_dir_failure)?
        }
        crate::store::Location::Mysql(_) => None,
    };
    let (store, data_dir) = args.storage.open(args.opening_balance)?;
    let mut store = store;
    let secret = store.server_secret().map_err(|e| args.storage.failed(e))?;
    let audit = Arc::new(Audit::open(&data_dir).map_err(|e| {
        let what = format!("audit logs in {}", data_dir.display());
        crate::store::failure_of(what, Some(data_dir.clone()), e)
    })?);
    let (ledger, worker) = group_commit::spawn(store, audit.clone(), args.max_batch);
    let rng = ChaCha20Rng::from_rng(OsRng)
        .map_err(|e| anyhow::anyhow!("seeding the nonce generator: {e}"))?;
    let server = Arc::new(Server {
        shared: Mutex::new(ServerShared::new(args.core_config(), rng, secret)),
        ledger,
        audit: audit.clone(),
        write_timeout: StdDuration::from_secs(args.write_timeout),
        max_output: args.max_output,
    });
    let local = listener.local_addr()?;
    let metrics_line = match metrics {
        Some(metrics) => {
            let address = metrics.local_addr()?;
            crate::metrics::install(metrics);
            format!("; metrics on http://{address}/metrics")
        }
        None => String::new(),
    };
    // Before announcing the address, so that a stop request from whoever waits for the
    // announcement is never the default action (on Unix: exit without a graceful stop).
    let mut signals = Signals::new()?;
    #[cfg(unix)]
    let reloader = service::reload_on_hangup(service::Reloader {
        audit: audit.clone(),
        tls: tls.clone(),
        server: server.clone(),
        running: args.clone(),
    })?;
    println!(
        "txsock listening on {local} ({}data in {}{metrics_line})",
        if tls.is_some() { "TLS 1.3; " } else { "" },
        data_dir.display()
    );
    tracing::info!(%local, registration = ?args.registration, "serving");
    #[cfg(unix)]
    notify_service_manager(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("listening on {local}")),
    ]);
    #[cfg(unix)]
    let watchdog = service::watchdog(server.clone());

    let default_sized = usize::from(args.max_frame) <= DEFAULT_MAX_FRAME
        && usize::from(args.nonces) <= DEFAULT_NONCES;
    // Each connection's task holds a permit of `permits` until it ends, so the stop waits for
    // them by taking every permit back: no handle per connection is kept (a `JoinSet` entry
    // cost each idle connection 64 bytes). Refusals are short (one line, bounded by the write
    // timeout) and are kept in a `JoinSet` as before: every one is answered `server_busy`.
    let permits = Arc::new(Semaphore::new(args.max_connections));
    let mut refusals = tokio::task::JoinSet::new();
    let acceptor = tls.as_ref().map(crate::tls::ServerTls::acceptor);
    let handshake_timeout = StdDuration::from_secs(args.login_deadline);
    let (stop_tx, stop_rx) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(StdDuration::from_millis(50)).await;
                        continue;
                    }
                };
                let server = server.clone();
                let link = Link { acceptor: acceptor.clone(), handshake_timeout, peer };
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        spawn_connection(server, link, stream, stop_rx.clone(), default_sized, permit);
                    }
                    Err(_) => {
                        server.audit.write(Log::Errors, format_args!("limit max_connections peer={peer}"));
                        crate::metrics::connection_refused("max_connections");
                        crate::logging::connection_refused(peer, args.max_connections);
                        refusals.spawn(async move {
                            if let Some(opened) = link.open(&server, stream).await {
                                opened.refuse(&server, peer).await;
                            }
                        });
                    }
                }
            }
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            _ = signals.recv() => break,
        }
    }
    #[cfg(unix)]
    notify_service_manager(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async {
        let _connections = take_all(&permits, args.max_connections).await;
        while refusals.join_next().await.is_some() {}
    };
    if tokio::time::timeout(StdDuration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!(
            "some connections did not finish in 10 s; waiting for them (a client that reads \
             nothing is cut off by --write-timeout)"
        );
    }
    // The SIGHUP and watchdog tasks hold ledger handles: end them before the worker's wait.
    #[cfg(unix)]
    for task in std::iter::once(reloader).chain(watchdog) {
        task.abort();
        let _ = task.await;
    }
    let stats = server.ledger.stats.clone();
    drop(server);
    // Every ledger handle is gone now, so the worker finishes its queue and exits.
    tokio::task::spawn_blocking(move || worker.join()).await?;
    audit.sync();
    let commits = stats.commits.load(Ordering::Relaxed);
    let transfers = stats.transfers.load(Ordering::Relaxed);
    tracing::info!(
        commits,
        transfers,
        largest_batch = stats.largest_batch.load(Ordering::Relaxed),
        "stopped"
    );
    println!("txsock stopped: {transfers} transfers in {commits} commits");
    Ok(())
}

/// Takes all `count` permits of `semaphore`: returns once every task holding one has ended.
async fn take_all(semaphore: &Semaphore, count: usize) -> Vec<tokio::sync::SemaphorePermit<'_>> {
    let mut taken = Vec::new();
    let mut left = count;
    while left > 0 {
        let n = left.min(u32::MAX as usize);
        match semaphore.acquire_many(n as u32).await {
            Ok(permit) => taken.push(permit),
            // Never closed; nothing to wait for if it were.
            Err(_) => break,
        }
        left -= n;
    }
    taken
}

/// Connections the kernel may hold for `accept` (capped by `net.core.somaxconn`). tokio's
/// `TcpListener::bind` asks for 128: a burst of more connections than that at once drops
/// SYNs, which the clients' kernels retry only after 1 s, then 3 s.
const LISTEN_BACKLOG: u32 = 1024;

/// What a failed `listen` means, in words.
fn listen_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let advice = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            ": another program (perhaps another txsock serve) listens there; stop it or choose \
             another --listen"
        }
        std::io::ErrorKind::AddrNotAvailable => ": no interface of this machine has that address",
        std::io::ErrorKind::PermissionDenied => {
            ": ports below 1024 need privileges; choose another --listen"
        }
        _ => "",
    };
    anyhow::anyhow!("cannot listen on {addr}: {e}{advice}")
}

/// A listening socket on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and tokio do on Unix: a restarted server can bind while old connections linger.
    // Not on Windows, where SO_REUSEADDR would let a second process bind the same port while
    // this one listens (and take its connections); there a lingering connection does not
    // block the bind anyway.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What stops the server: SIGINT (Ctrl-C) and SIGTERM on Unix; Ctrl-C, Ctrl-Break, closing the
/// console, logoff and system shutdown on Windows (tokio's console control events). Every
/// listener is registered once, before the accept loop, so that no stop request is missed
/// between two turns of the loop.
///
/// On close, logoff and shutdown Windows ends the process as soon as the handler returns,
/// so the graceful stop may be cut short there; that loses nothing acknowledged, because a
/// transfer is committed before its acknowledgement and each audit line is written at once.
#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
        }
    }
}

/// See the Unix [`Signals`].
/// Tells systemd (`Type=notify`) through `$NOTIFY_SOCKET`, if set, that the server is ready
/// (listening) or stopping; without the variable this does nothing.
#[cfg(unix)]
fn notify_service_manager(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("cannot notify the service manager through NOTIFY_SOCKET: {e}");
    }
}

#[cfg(windows)]
struct Signals {
    ctrl_c: tokio::signal::windows::CtrlC,
    ctrl_break: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
    logoff: tokio::signal::windows::CtrlLogoff,
    shutdown: tokio::signal::windows::CtrlShutdown,
}

#[cfg(windows)]
impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::windows;
        let context = "listening for console control events";
        Ok(Signals {
            ctrl_c: windows::ctrl_c().context(context)?,
            ctrl_break: windows::ctrl_break().context(context)?,
            close: windows::ctrl_close().context(context)?,
            logoff: windows::ctrl_logoff().context(context)?,
            shutdown: windows::ctrl_shutdown().context(context)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.ctrl_c.recv() => tracing::info!("Ctrl-C received"),
            _ = self.ctrl_break.recv() => tracing::info!("Ctrl-Break received"),
            _ = self.close.recv() => tracing::info!("console closed"),
            _ = self.logoff.recv() => tracing::info!("user logging off"),
            _ = self.shutdown.recv() => tracing::info!("system shutting down"),
        }
    }
}

fn peer_addr(peer: SocketAddr) -> PeerAddr {
    match peer {
        SocketAddr::V4(a) => PeerAddr::ipv4(a.ip().octets()),
        SocketAddr::V6(a) => PeerAddr(a.ip().octets()),
    }
}

/// Answers a connection over the limit with one error line and closes it.
async fn refuse<S: Transport>(server: &Server, mut stream: S, peer: SocketAddr) {
    let mut session =
        Session::<DEFAULT_MAX_FRAME, DEFAULT_NONCES>::new(peer_addr(peer), clock::now());
    session.close_with(ErrorCode::ServerBusy);
    let _ = tokio::time::timeout(server.write_timeout, async {
        stream.write_all(session.poll_transmit()).await?;
        stream.shutdown().await
    })
    .await;
}

/// How an accepted connection is opened: plaintext, or TLS with a handshake bounded by the
/// login deadline.
struct Link {
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: StdDuration,
    peer: SocketAddr,
}

/// The most bytes a plaintext connection's task (the future of [`connection`]) may take:
/// every idle connection holds one, so 10,000 idle connections hold 10,000 of them (the
/// session is boxed and counted apart). What a connection needs only while it writes (the
/// answers gathered in [`flush`]) or reads (the read buffer, [`read_into`]) stays out of it,
/// and so do copies of its arguments (see [`Conn`]). A unit test holds the task to this
/// bound. With rustc 1.95 and tokio 1.54 it is 944 bytes (1,360 before these two were taken
/// out); the bound leaves 16 for other compiler versions.
#[cfg_attr(not(test), allow(dead_code))] // Read by the size test; documents the bound.
pub const CONNECTION_TASK_BYTES: usize = 960;

/// What a connection's task owns until it ends. The connection's future keeps it as its one
/// argument and uses its fields in place: every argument an async function takes is kept
/// for the whole future, so passing these down through several functions (open, then serve,
/// then the sized connection) kept each one several times in every idle connection.
struct Conn<S> {
    server: Arc<Server>,
    stream: S,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    /// Returned when the task ends; the stop waits for all of them (see [`run`]).
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// Counts the connection as open while the task lives.
    _open: crate::metrics::OpenConnection,
}

/// Starts the task of a connection within `--max-connections`. A plaintext connection's
/// task is the connection's future itself (no wrapper: see [`Conn`]); a TLS connection's
/// runs the handshake first and boxes the rest.
fn spawn_connection(
    server: Arc<Server>,
    link: Link,
    stream: TcpStream,
    stop: watch::Receiver<bool>,
    default_sized: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let open = crate::metrics::connection_opened();
    let peer = link.peer;
    if link.acceptor.is_none() {
        set_socket_options(&server, &stream);
        let conn = Conn {
            server,
            stream,
            peer,
            stop,
            _permit: permit,
            _open: open,
        };
        if default_sized {
            tokio::spawn(connection::<_, DEFAULT_MAX_FRAME, DEFAULT_NONCES>(conn));
        } else {
            tokio::spawn(connection::<_, FRAME_CAPACITY, NONCE_CAPACITY>(conn));
        }
        return;
    }
    tokio::spawn(async move {
        let Some(opened) = link.open(&server, stream).await else {
            return;
        };
        match opened {
            Opened::Plain(stream) => {
                let conn = Conn {
                    server,
                    stream,
                    peer,
                    stop,
                    _permit: permit,
                    _open: open,
                };
                sized_connection(conn, default_sized).await
            }
            // Boxed: a TLS connection's future holds its rustls state (several KiB).
            Opened::Tls(stream) => {
                let conn = Conn {
                    server,
                    stream: *stream,
                    peer,
                    stop,
                    _permit: permit,
                    _open: open,
                };
                Box::pin(sized_connection(conn, default_sized)).await
            }
        }
    });
}

/// An opened connection.
enum Opened {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Opened {
    /// Answers `server_busy` and closes (see [`refuse`]).
    async fn refuse(self, server: &Server, peer: SocketAddr) {
        match self {
            Opened::Plain(s) => refuse(server, s, peer).await,
            Opened::Tls(s) => Box::pin(refuse(server, *s, peer)).await,
        }
    }
}

impl Link {
    /// Sets the socket options and runs the TLS handshake if there is one; a failed
    /// handshake is logged to `error.log` and closes the connection (`None`).
    async fn open(self, server: &Server, stream: TcpStream) -> Option<Opened> {
        set_socket_options(server, &stream);
        let Some(acceptor) = self.acceptor else {
            return Some(Opened::Plain(stream));
        };
        // Boxed for the same reason as in `Opened::serve`: the handshake holds rustls state.
        let error =
            match tokio::time::timeout(self.handshake_timeout, Box::pin(acceptor.accept(stream)))
                .await
            {
                Ok(Ok(stream)) => return Some(Opened::Tls(Box::new(stream))),
                Ok(Err(e)) => e,
                Err(_) => std::io::ErrorKind::TimedOut.into(),
            };
        let reason = crate::tls::handshake_failure_reason(&error);
        let peer = self.peer;
        server.audit.write(
            Log::Errors,
            format_args!("tls_failed reason={reason} peer={peer}"),
        );
        tracing::debug!(%peer, "TLS handshake failed: {error}");
        None
    }
}

/// No Nagle delay; the send buffer holds at most `--max-output` (see `ServeArgs`).
fn set_socket_options(server: &Server, stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(stream).set_send_buffer_size(server.max_output);
}

enum WriteError {
    Closed,
    Stalled,
}

/// Answers every ledger reply that has already arrived, then writes the connection's output
/// and returns once it is all written.
///
/// The replies of one commit arrive together; answered here at once, they leave in one write
/// instead of one write each. The session's output holds one answer, so earlier answers move
/// to `gathered` (at most `--pipeline` answers), which lives in this call only: a connection
/// that waits for input holds no part of it (see [`CONNECTION_TASK_BYTES`]).
async fn flush<S: Transport, const FRAME: usize, const NONCES: usize>(
    server: &Server,
    stream: &mut S,
    session: &mut Session<FRAME, NONCES>,
    in_flight: &mut VecDeque<PendingReply>,
    peer: SocketAddr,
) -> Result<(), WriteError> {
    let mut gathered = Vec::new();
    while let Some(reply) = in_flight.front_mut().and_then(ready_now) {
        in_flight.pop_front();
        if !session.has_room_for_reply() {
            take_output(session, &mut gathered);
        }
        session.handle_ledger(&mut server.shared(), clock::now(), reply);
        log_events(server, session, peer);
    }
    if in_flight.is_empty() {
        *in_flight = VecDeque::new();
    }
    if !gathered.is_empty() {
        take_output(session, &mut gathered);
    }
    let timeout = server.write_timeout;
    // One write loop for both sources: `gathered` if it holds anything, else the session.
    loop {
        let from_session = gathered.is_empty();
        let bytes: &[u8] = if from_session {
            session.poll_transmit()
        } else {
            &gathered
        };
        if bytes.is_empty() {
            break;
        }
        match tokio::time::timeout(timeout, stream.write(bytes)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(WriteError::Closed),
            Ok(Ok(n)) if from_session => session.advance_transmit(n),
            Ok(Ok(n)) => {
                gathered.drain(..n);
            }
            Err(_) => return Err(WriteError::Stalled),
        }
    }
    // TLS may hold encrypted bytes that the socket did not take yet; plain TCP holds none.
    match tokio::time::timeout(timeout, stream.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteError::Closed),
        Err(_) => Err(WriteError::Stalled),
    }
}

/// Moves the session's output to the end of `gathered`, making room for the next answer.
fn take_output<const FRAME: usize, const NONCES: usize>(
    session: &mut Session<FRAME, NONCES>,
    gathered: &mut Vec<u8>,
) {
    let output = session.poll_transmit();
    let n = output.len();
    gathered.extend_from_slice(output);
    session.advance_transmit(n);
}

/// The reply if the ledger has already sent it, without waiting (`Unavailable` if the worker
/// is gone, as when awaited). Polled with a waker that does nothing: a reply not there yet
/// is awaited later in the connection's loop, which registers the task's own waker.
fn ready_now(reply: &mut PendingReply) -> Option<txsock_core::ledger::LedgerReply> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::future::Future::poll(std::pin::Pin::new(reply), &mut context) {
        std::task::Poll::Ready(reply) => Some(reply),
        std::task::Poll::Pending => None,
    }
}

/// Reads what the socket has into a stack buffer, hands it to the session, and keeps what
/// the session did not take yet (requests pipelined behind one that waits for the ledger)
/// in `pending`; false once the peer has closed its side or the socket failed. A separate,
/// synchronous function so that the buffer is never part of the connection's future.
fn read_into<S: Transport, const FRAME: usize, const NONCES: usize>(
    server: &Server,
    stream: &mut S,
    session: &mut Session<FRAME, NONCES>,
    pending: &mut Vec<u8>,
    peer: SocketAddr,
    first: &mut bool,
) -> bool {
    let mut chunk = [0u8; READ_CHUNK];
    let read = stream.try_read(&mut chunk);
    let was_first = std::mem::replace(first, *first && !matches!(read, Ok(1..)));
    match read {
        Ok(0) => false,
        Ok(n) if was_first && crate::tls::looks_like_tls(&chunk[..n]) => {
            // A TLS client at a plaintext port: close at once (it reports a handshake
            // failure) rather than wait for a newline that may never come.
            server
                .audit
                .write(Log::Errors, format_args!("tls_on_plaintext peer={peer}"));
            false
        }
        Ok(n) => {
            let used = session.handle_input(&mut server.shared(), clock::now(), &chunk[..n]);
            pending.extend_from_slice(&chunk[used..n]);
            true
        }
        // The readiness was spurious; wait for the next.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
        Err(_) => false,
    }
}

/// Serves one connection with a default-sized session if `default_sized`, else with the
/// largest.
async fn sized_connection<S: Transport>(conn: Conn<S>, default_sized: bool) {
    if default_sized {
        connection::<_, DEFAULT_MAX_FRAME, DEFAULT_NONCES>(conn).await
    } else {
        connection::<_, FRAME_CAPACITY, NONCE_CAPACITY>(conn).await
    }
}

/// Serves one connection until it closes, the peer leaves or the server stops.
async fn connection<S: Transport, const FRAME: usize, const NONCES: usize>(mut conn: Conn<S>) {
    // Fields used in place, never moved out (see [`Conn`]).
    let server = &*conn.server;
    crate::logging::connection_accepted(conn.peer);
    let mut session = Box::new(Session::<FRAME, NONCES>::new(
        peer_addr(conn.peer),
        clock::now(),
    ));
    // Input the session has not taken yet; at most one read's worth, since the socket is
    // read only once this is empty. Freed when drained, so an idle connection holds none.
    let mut pending: Vec<u8> = Vec::new();
    // Replies owed by the ledger, oldest first (at most `--pipeline`). Freed when drained.
    let mut in_flight: VecDeque<PendingReply> = VecDeque::new();
    let mut peer_done = false;
    let mut first = true;
    // Once the server stops: no more input; the replies owed are still delivered.
    let mut stopping = false;
    loop {
        // A frame held behind earlier answers is taken even without new input.
        if !pending.is_empty() || (session.holds_frame() && session.wants_input()) {
            let used = session.handle_input(&mut server.shared(), clock::now(), &pending);
            pending.drain(..used);
            if pending.is_empty() {
                pending = Vec::new();
            }
        }
        // Log what the input caused before waiting on the ledger, so nothing queued is lost.
        log_events(server, &mut session, conn.peer);
        // All of the input's requests are queued before any is committed, so that they
        // can share one commit.
        let queued = in_flight.len();
        while let Some(request) = session.poll_ledger() {
            in_flight.push_back(server.ledger.queue(request, clock::now()));
        }
        if in_flight.len() > queued {
            server.ledger.commit_now(in_flight.len() - queued);
        }
        match flush(
            server,
            &mut conn.stream,
            &mut session,
            &mut in_flight,
            conn.peer,
        )
        .await
        {
            Ok(()) => {}
            Err(WriteError::Closed) => break,
            Err(WriteError::Stalled) => {
                // "-" when not logged in, as in every other line (docs/LOGS.md).
                let user = session.user().map_or_else(|| "-".into(), |u| u.to_string());
                server.audit.write(
                    Log::Errors,
                    format_args!("limit output_overflow user={user} peer={}", conn.peer),
                );
                break;
            }
        }
        if session.is_closed()
            || (in_flight.is_empty() && (stopping || (peer_done && pending.is_empty())))
        {
            break;
        }
        if (!pending.is_empty() || session.holds_frame()) && session.wants_input() {
            continue;
        }
        let deadline = session.poll_timeout(&server.shared());
        let reading = pending.is_empty() && !peer_done && !stopping;
        tokio::select! {
            // Replies first: they free the pipeline for the input behind them.
            biased;
            reply = async { in_flight.front_mut().expect("guarded: not empty").await },
                if !in_flight.is_empty() =>
            {
                in_flight.pop_front();
                if in_flight.is_empty() {
                    in_flight = VecDeque::new();
                }
                // flush above left the output empty, so the answer has room; the next flush
                // answers the replies that arrived with it.
                session.handle_ledger(&mut server.shared(), clock::now(), reply);
                log_events(server, &mut session, conn.peer);
            }
            ready = conn.stream.ready(), if reading => {
                peer_done = ready.is_err()
                    || !read_into(server, &mut conn.stream, &mut session, &mut pending, conn.peer, &mut first);
            }
            _ = sleep_until(deadline) => {
                session.handle_timeout(&server.shared(), clock::now());
            }
            _ = conn.stop.changed(), if !stopping => stopping = true,
        }
    }
    if let Some(user) = session.user() {
        server.audit.write(
            Log::Sessions,
            format_args!("disconnect user={user} peer={}", conn.peer),
        );
    }
    crate::logging::connection_closed(conn.peer, session.user().map(|u| u.as_str()));
}

async fn sleep_until(at: Option<txsock_core::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(clock::deadline(at)).await,
        None => std::future::pending().await,
    }
}

fn log_events<const FRAME: usize, const NONCES: usize>(
    server: &Server,
    session: &mut Session<FRAME, NONCES>,
    peer: SocketAddr,
) {
    while let Some(event) = session.poll_event() {
        crate::metrics::server_event(&event);
        let user = session
            .user()
            .map(|u| u.to_string())
            .unwrap_or_else(|| "-".into());
        crate::logging::server_event(&event, &user, peer);
        let audit = &server.audit;
        match event {
            ServerEvent::Registered { user } => audit.write(
                Log::Sessions,
                format_args!("register user={user} peer={peer}"),
            ),
            ServerEvent::LoggedIn { user } => {
                audit.write(Log::Sessions, format_args!("login user={user} peer={peer}"))
            }
            ServerEvent::LoginFailed { user, reason } => audit.write(
                Log::Sessions,
                format_args!("login_failed user={user} reason={reason} peer={peer}"),
            ),
            ServerEvent::AccountLocked { user, until } => {
                let until = clock::stamp_millis(until.millis());
                audit.write(
                    Log::Sessions,
                    format_args!("lockout user={user} until={until} peer={peer}"),
                );
                audit.write(
                    Log::Errors,
                    format_args!("lockout user={user} until={until} peer={peer}"),
                );
            }
            ServerEvent::AddressThrottled => {
                audit.write(Log::Errors, format_args!("address_throttled peer={peer}"))
            }
            ServerEvent::Rejected { code } => audit.write(
                Log::Errors,
                format_args!("rejected code={} user={user} peer={peer}", code.name()),
            ),
            ServerEvent::LoggedOut { user } => audit.write(
                Log::Sessions,
                format_args!("logout user={user} peer={peer}"),
            ),
            ServerEvent::Closing { code } => audit.write(
                Log::Errors,
                format_args!("closed code={} user={user} peer={peer}", code.name()),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_from;
    use crate::Command;

    fn serve_args(list: &[&str]) -> ServeArgs {
        // An empty settings file, so that no txsock.toml in the working directory counts.
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, "").unwrap();
        let mut argv = vec!["txsock", "--config", empty.to_str().unwrap(), "serve"];
        argv.extend_from_slice(list);
        let cli = parse_from(argv.iter().map(Into::into).collect()).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        args
    }

    /// Bytes of the future that `f` returns (never called).
    fn returned_size<A, F: FnOnce(A) -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every idle connection holds its task's future: it stays within its documented size,
    /// with either session size.
    #[test]
    fn a_connection_task_stays_small() {
        for task in [
            returned_size(&connection::<TcpStream, DEFAULT_MAX_FRAME, DEFAULT_NONCES>),
            returned_size(&connection::<TcpStream, FRAME_CAPACITY, NONCE_CAPACITY>),
        ] {
            assert!(
                task <= CONNECTION_TASK_BYTES,
                "a connection's task takes {task} bytes, more than CONNECTION_TASK_BYTES \
                 ({CONNECTION_TASK_BYTES}): every idle connection would grow. If a new \
                 compiler or tokio alone made it grow, re-measure 10,000 idle connections \
                 (`cargo xtask bench`) and raise the bound with the figure"
            );
        }
    }

    /// With no flags, `txsock serve` runs the core's defaults, whatever they are.
    #[test]
    fn defaults_are_the_cores() {
        assert_eq!(serve_args(&[]).core_config(), ServerConfig::DEFAULT);
    }

    #[test]
    fn forget_after_sets_both_backoffs() {
        let config = serve_args(&["--forget-after", "60"]).core_config();
        assert_eq!(config.account_backoff.forget_after, Duration::from_secs(60));
        assert_eq!(config.address_backoff.forget_after, Duration::from_secs(60));
        assert_eq!(config.account_backoff.base, Backoff::ACCOUNT.base);
    }

    #[test]
    fn forget_after_from_the_settings_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "forget-after = 120\n").unwrap();
        let cli = parse_from(
            ["txsock", "--config", file.to_str().unwrap(), "serve"]
                .iter()
                .map(Into::into)
                .collect(),
        )
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.forget_after, 120);
        assert_eq!(serve_args(&["--forget-after", "5m"]).forget_after, 300);
        assert_eq!(
            serve_args(&["--lockout-base-ms", "2s"]).lockout_base_ms,
            2000
        );
        assert!(parse_from(
            ["txsock", "serve", "--forget-after", "soon"]
                .iter()
                .map(Into::into)
                .collect()
        )
        .is_err());
    }
}
