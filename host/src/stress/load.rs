//! Well-behaved clients: `load` (logged-in clients sending transfers, each verified by its
//! receipt) and `connections` (many idle logged-in connections).

use super::conn::{Account, Conn, ConnError};
use super::Ctx;
use anyhow::{bail, Result};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use txsock_core::session::client::MAX_PIPELINE;
use txsock_core::session::ClientEvent;
use txsock_core::{Amount, ErrorCode};

/// Nonces a session may hold outstanding on the server (its ring; `txsock serve --nonces`).
pub const RING: usize = 16;
/// Nonces asked for at once (the protocol's maximum batch).
const BATCH: usize = 8;
/// How long outstanding receipts are awaited after the run's end.
const DRAIN: Duration = Duration::from_secs(10);

/// Creates the accounts named `names` (PBKDF2 once each, on blocking threads) and registers
/// them over a few connections.
pub async fn register(ctx: &Ctx, names: Vec<String>) -> Result<Vec<Account>> {
    let iterations = ctx.iterations;
    let accounts = tokio::task::spawn_blocking(move || {
        names
            .into_iter()
            .map(|n| Account::new(n, iterations))
            .collect::<Vec<_>>()
    })
    .await?;
    let lanes = accounts.len().clamp(1, 8);
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let mine: Vec<Account> = accounts.iter().skip(lane).step_by(lanes).cloned().collect();
        let (servers, iterations) = (ctx.servers.clone(), ctx.iterations);
        tasks.spawn(async move {
            // The first server that answers (they share one ledger).
            let mut conn = Err(ConnError::Unexpected);
            for addr in servers {
                conn = Conn::connect(addr, iterations).await;
                if conn.is_ok() {
                    break;
                }
            }
            let mut conn = conn?;
            for account in &mine {
                conn.register(account).await?;
            }
            Ok::<_, ConnError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done? {
            bail!("registering the stress users failed: {e}");
        }
    }
    Ok(accounts)
}

/// Connections opened from one source address at most: the kernel has about 28,000
/// ephemeral ports (32768 to 60999 by default) per source address towards one server.
pub const PER_SOURCE: usize = 20_000;

/// The local addresses `count` connections to `server` come from: none (the kernel
/// chooses) while one address has ports enough ([`PER_SOURCE`]), else the first
/// `count / PER_SOURCE` (rounded up) addresses of 127.0.0.0/8 from 127.0.0.1, each
/// taking an equal share, which needs an IPv4 loopback server (the whole 127.0.0.0/8
/// reaches it on Linux).
pub fn source_addresses(server: std::net::SocketAddr, count: usize) -> Vec<std::net::IpAddr> {
    let needed = count.div_ceil(PER_SOURCE);
    if needed <= 1 || !matches!(server.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback()) {
        return Vec::new();
    }
    (1..=needed.min(254))
        .map(|last| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last as u8)))
        .collect()
}

/// Parameters of the transfer load.
#[derive(Debug, Clone, Copy)]
pub struct LoadParams {
    /// Concurrent clients, one connection each.
    pub clients: usize,
    /// Transfers in flight per client (1 = one at a time).
    pub pipeline: usize,
    /// Amount of each transfer.
    pub amount: Amount,
}

/// Registers `params.clients` users (plus a recipient for a lone client), logs each in, and
/// returns when all are logged in, with the recorder reset; they then send transfers until
/// `stop` turns true, and their tasks end after draining (join them with the returned set).
/// No client sends a transfer before the reset, so every receipt the server answers is
/// counted (a client that logged in first used to send a few whose receipts the reset
/// dropped, while the server committed them).
pub async fn start(
    ctx: &Ctx,
    params: LoadParams,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinSet<()>> {
    let mut names: Vec<String> = (0..params.clients)
        .map(|i| format!("{}c{i}", ctx.prefix))
        .collect();
    if params.clients == 1 {
        names.push(format!("{}sink", ctx.prefix));
    }
    let accounts = register(ctx, names).await?;
    let ready = Arc::new(Semaphore::new(0));
    let (go_tx, go) = watch::channel(false);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..params.clients {
        let me = accounts[i].clone();
        let to = accounts[(i + 1) % accounts.len()].user.clone();
        let (servers, iterations, rec) = (ctx.servers.clone(), ctx.iterations, ctx.rec.clone());
        let (stop, ready, go) = (stop.clone(), ready.clone(), go.clone());
        set.spawn(async move {
            let mut client = LoadClient {
                // Spread over the servers.
                at: i % servers.len(),
                servers,
                iterations,
                me,
                to,
                params,
                rec,
                next_id: 0,
                unanswered: VecDeque::new(),
                id: String::new(),
            };
            client.run(stop, ready, go).await;
        });
    }
    // Every client adds a permit once logged in (or after giving up on its first login).
    let _all = ready.acquire_many(params.clients as u32).await?;
    ctx.rec.reset();
    let _ = go_tx.send(true);
    Ok(set)
}

struct LoadClient {
    /// The servers of one ledger, and the one in use.
    servers: Vec<std::net::SocketAddr>,
    at: usize,
    iterations: u32,
    me: Account,
    to: String,
    params: LoadParams,
    rec: Arc<super::record::Recorder>,
    next_id: u64,
    /// Transfer ids (the numbers of `t0`, `t1`, ...) sent without a verified answer
    /// (connection lost, or `internal`): sent again, before any new one, with the same id
    /// (the ledger answers a recorded id with its original outcome).
    unanswered: VecDeque<u64>,
    /// The text of the id being sent, reused so that a transfer allocates nothing.
    id: String,
}

impl LoadClient {
    async fn login(&self) -> Result<Conn, ConnError> {
        let mut conn = Conn::connect(self.servers[self.at], self.iterations).await?;
        conn.login(&self.me).await?;
        Ok(conn)
    }

    /// Moves to the next server, if there is another, after `e` (no connection, a lost one,
    /// or `internal`: this server cannot serve now).
    fn leave_after(&mut self, e: &ConnError) {
        let cannot_serve = match e {
            ConnError::Io(_) | ConnError::Timeout => true,
            ConnError::Refused(code) => *code == ErrorCode::Internal || code.is_fatal(),
            _ => false,
        };
        if self.servers.len() > 1 && cannot_serve {
            self.at = (self.at + 1) % self.servers.len();
            self.rec.error("moved_to_next_server");
        }
    }

    async fn run(
        &mut self,
        mut stop: watch::Receiver<bool>,
        ready: Arc<Semaphore>,
        mut go: watch::Receiver<bool>,
    ) {
        let mut first = true;
        while !*stop.borrow() {
            let login = self.login().await;
            if first {
                ready.add_permits(1);
                first = false;
                // Everyone starts together, after the recorder's reset.
                let _ = go.wait_for(|go| *go).await;
            }
            let conn = match login {
                Ok(conn) => conn,
                Err(e) => {
                    self.rec.error(&format!("login_{}", e.name()));
                    self.leave_after(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            match self.transfers(conn, &mut stop).await {
                Ok(()) => return,
                Err(e) => {
                    self.rec.error(&format!("{}: {e}", e.name()));
                    self.leave_after(&e);
                }
            }
        }
        if first {
            ready.add_permits(1);
        }
    }

    /// Sends transfers on one logged-in connection until `stop`, then drains. An error
    /// means the connection is unusable (the caller reconnects).
    async fn transfers(
        &mut self,
        mut conn: Conn,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ConnError> {
        // Send time and id of each transfer awaiting its answer, in order.
        let mut sent: VecDeque<(std::time::Instant, u64)> = VecDeque::new();
        let result = self.send_and_receive(&mut conn, &mut sent, stop).await;
        // Whatever is unanswered goes again, first, on the next connection.
        for (_, id) in sent.into_iter().rev() {
            self.unanswered.push_front(id);
        }
        result
    }

    async fn send_and_receive(
        &mut self,
        conn: &mut Conn,
        sent: &mut VecDeque<(std::time::Instant, u64)>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ConnError> {
        let mut nonce_requests = 0usize;
        let mut stopping = false;
        let mut drain_until = None;
        loop {
            if !stopping && *stop.borrow() {
                stopping = true;
                drain_until = Some(Instant::now() + DRAIN);
            }
            if stopping && sent.is_empty() && nonce_requests == 0 {
                return Ok(());
            }
            if !stopping {
                while sent.len() < self.params.pipeline
                    && conn.session.available_nonces() > 0
                    && conn.session.outstanding() < MAX_PIPELINE
                    && conn.has_room()
                {
                    let session = &mut conn.session;
                    let id = self.unanswered.front().copied().unwrap_or(self.next_id);
                    self.id.clear();
                    // Writing to a `String` cannot fail.
                    let _ = write!(self.id, "t{id}");
                    session.transfer(&self.id, &self.to, self.params.amount)?;
                    if self.unanswered.pop_front().is_none() {
                        self.next_id += 1;
                    }
                    sent.push_back((std::time::Instant::now(), id));
                }
                let session = &mut conn.session;
                // Nonces the server will hold once the pending batches are served; never
                // more than its ring, so no batch evicts a nonce we still mean to use.
                let coming = session.available_nonces() + BATCH * nonce_requests;
                if coming + BATCH <= RING && session.outstanding() < MAX_PIPELINE && conn.has_room()
                {
                    let session = &mut conn.session;
                    session.request_nonces(BATCH as u8)?;
                    nonce_requests += 1;
                }
            }
            // The answers first, and without a look at the others while one is there: most
            // events are answers already read, and polling the stop and the drain timer
            // would register (and drop) a waiter and a timer for each.
            let event = tokio::select! {
                biased;
                event = conn.next_event() => event?,
                _ = stop.changed(), if !stopping => continue,
                _ = sleep_until(drain_until) => return Err(ConnError::Timeout),
            };
            match event {
                ClientEvent::Receipt(r) => {
                    let Some((at, _)) = sent.pop_front() else {
                        return Err(ConnError::Unexpected);
                    };
                    self.rec.receipt(at.elapsed(), r.result);
                }
                ClientEvent::Nonces { .. } => nonce_requests = nonce_requests.saturating_sub(1),
                ClientEvent::Refused { request, code, .. } => {
                    use txsock_core::session::RequestKind;
                    match request {
                        RequestKind::Transfer => {
                            if let Some((_, id)) = sent.pop_front() {
                                // No outcome (`internal`, or a nonce refused): the same id
                                // goes again, here or, for `internal`, on the next server.
                                self.unanswered.push_back(id);
                            }
                            if code == ErrorCode::Internal && self.servers.len() > 1 {
                                self.rec.error(code.name());
                                return Err(ConnError::Refused(code));
                            }
                        }
                        RequestKind::Nonces => nonce_requests = nonce_requests.saturating_sub(1),
                        _ => {}
                    }
                    self.rec.error(code.name());
                }
                ClientEvent::Closed { code } => return Err(ConnError::Refused(code)),
                ClientEvent::Integrity(e) => return Err(ConnError::Integrity(e.to_string())),
                _ => return Err(ConnError::Unexpected),
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Result of the `connections` scenario.
pub struct Connections {
    /// Connections asked for.
    pub count: usize,
    /// Connections logged in and held.
    pub logged_in: usize,
    /// Connections that failed, by reason.
    pub failed: std::collections::BTreeMap<String, u64>,
    /// Seconds to open and log in all of them.
    pub setup_secs: f64,
    /// Connections still open at the end of the hold (not closed by the server).
    pub still_open: usize,
}

/// Opens `count` connections (`parallel` at a time), logs each in as one of a few users, and
/// holds them idle until `hold` has passed after the last login. `progress` counts logins.
/// `during` is called once all are held (for memory samples).
pub async fn connections(
    ctx: &Ctx,
    count: usize,
    parallel: usize,
    hold: Duration,
    progress: impl Fn(u64),
    during: impl AsyncFnOnce(),
) -> Result<Connections> {
    // One user per 100 connections: logins with a provisioned key cost no PBKDF2, and several
    // sessions of one user are as heavy on the server as sessions of different users.
    let sources = source_addresses(ctx.addr, count);
    let users = count.div_ceil(100).max(1);
    let names = (0..users).map(|i| format!("{}i{i}", ctx.prefix)).collect();
    let accounts = Arc::new(register(ctx, names).await?);
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let (release_tx, release) = watch::channel(false);
    let done = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let account = accounts[i % accounts.len()].clone();
        let (gate, done, alive) = (gate.clone(), done.clone(), alive.clone());
        let mut release = release.clone();
        let (addr, iterations) = (ctx.addr, ctx.iterations);
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        set.spawn(async move {
            let permit = gate.acquire_owned().await;
            let login = async {
                let mut conn = Conn::connect_from(addr, source, iterations, None).await?;
                conn.login(&account).await?;
                Ok::<_, ConnError>(conn)
            }
            .await;
            drop(permit);
            done.fetch_add(1, Ordering::Relaxed);
            let mut conn = login?;
            alive.fetch_add(1, Ordering::Relaxed);
            // Hold it: wait for the release, noticing if the server closes it first.
            let closed = tokio::select! {
                e = conn.next_event() => Some(e),
                _ = release.wait_for(|r| *r) => None,
            };
            match closed {
                None => Ok(()),
                Some(Ok(ClientEvent::Closed { code })) => {
                    alive.fetch_sub(1, Ordering::Relaxed);
                    Err(ConnError::Refused(code))
                }
                Some(Ok(_)) => {
                    alive.fetch_sub(1, Ordering::Relaxed);
                    Err(ConnError::Unexpected)
                }
                Some(Err(e)) => {
                    alive.fetch_sub(1, Ordering::Relaxed);
                    Err(e)
                }
            }
        });
    }
    while (done.load(Ordering::Relaxed) as usize) < count {
        progress(done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(100)).await;
        if set.is_empty() {
            break;
        }
    }
    progress(count as u64);
    let setup_secs = started.elapsed().as_secs_f64();
    let logged_in = alive.load(Ordering::Relaxed) as usize;
    let hold_until = Instant::now() + hold;
    during().await;
    tokio::time::sleep_until(hold_until).await;
    let still_open = alive.load(Ordering::Relaxed) as usize;
    let _ = release_tx.send(true);
    let mut failed = std::collections::BTreeMap::new();
    while let Some(result) = set.join_next().await {
        if let Ok(Err(e)) = result {
            *failed.entry(e.name()).or_insert(0u64) += 1;
        }
    }
    Ok(Connections {
        count,
        logged_in,
        failed,
        setup_secs,
        still_open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_connections_spread_over_loopback_source_addresses() {
        let v4: std::net::SocketAddr = "127.0.0.1:11002".parse().unwrap();
        assert!(source_addresses(v4, PER_SOURCE).is_empty());
        let sources = source_addresses(v4, 100_000);
        assert_eq!(sources.len(), 5);
        assert_eq!(sources[0].to_string(), "127.0.0.1");
        assert_eq!(sources[4].to_string(), "127.0.0.5");
        assert_eq!(source_addresses(v4, PER_SOURCE + 1).len(), 2);
        // No other loopback address to spread over.
        let v6: std::net::SocketAddr = "[::1]:11002".parse().unwrap();
        assert!(source_addresses(v6, 100_000).is_empty());
    }
}
