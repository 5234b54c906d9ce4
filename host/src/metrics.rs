//! `txsock serve --metrics ADDR`: counters, gauges and histograms in the Prometheus text
//! format (version 0.0.4) at `http://ADDR/metrics`, for Prometheus or any scraper.
//!
//! The registry and its encoding are `prometheus-client`'s. The endpoint is a small tokio
//! task: it answers `GET /metrics` (and `HEAD`) with one response per connection and
//! anything else with 404 or 405; a request head is read for at most 5 s and 8 KiB, and at
//! most [`SCRAPES`] scrapes are served at once, so a scraper that stalls costs one task.
//!
//! The server reports through the free functions below ([`connection_opened`],
//! [`server_event`], [`commit`], ...), which do nothing unless [`install`] ran: the hooks
//! in `serve` and `group_commit` are one call each and cost nothing without `--metrics`.
//!
//! What is measured where:
//! - connections, logins, lockouts, refused frames (bad MAC, replays, ...): from the
//!   accept loop and the core's [`ServerEvent`]s, as the audit logs see them;
//! - transfers committed, repeated and refused by reason, the batch size and the commit
//!   latency: in the group-commit worker, around `Store::execute_batch`. The commit latency
//!   includes the fsync: SQLite syncs inside `COMMIT` (WAL, `synchronous=FULL`) and MySQL
//!   inside its commit, and neither reports the sync's own time, so the fsync is not
//!   measured apart;
//! - the resident memory (Linux): read from `/proc/self/statm` at each scrape.

use anyhow::Result;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use txsock_core::ledger::{LedgerReply, LedgerRequest};
use txsock_core::session::ServerEvent;
use txsock_core::ErrorCode;

/// Scrapes served at once; more wait for a turn.
const SCRAPES: usize = 4;
/// Longest request head read from a scraper.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a scraper has to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One label, e.g. `code="bad_mac"`.
type Label = [(&'static str, &'static str); 1];

/// Everything `--metrics` reports.
struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections_accepted: Counter,
    connections_refused: Family<Label, Counter>,
    registrations: Counter,
    logins: Family<Label, Counter>,
    lockouts: Counter,
    address_throttles: Counter,
    frames_rejected: Family<Label, Counter>,
    mac_failures: Counter,
    replays: Counter,
    sessions_closed: Family<Label, Counter>,
    transfers_committed: Counter,
    transfers_repeated: Counter,
    transfers_refused: Family<Label, Counter>,
    commits: Counter,
    commit_failures: Counter,
    commit_batch_size: Histogram,
    commit_seconds: Histogram,
    resident_memory: Gauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::default(),
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_refused: Family::default(),
            registrations: Counter::default(),
            logins: Family::default(),
            lockouts: Counter::default(),
            address_throttles: Counter::default(),
            frames_rejected: Family::default(),
            mac_failures: Counter::default(),
            replays: Counter::default(),
            sessions_closed: Family::default(),
            transfers_committed: Counter::default(),
            transfers_repeated: Counter::default(),
            transfers_refused: Family::default(),
            commits: Counter::default(),
            commit_failures: Counter::default(),
            // 1, 2, 4, ... 4096 requests: the default --max-batch is 512.
            commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 50 µs to 3.3 s: an fsync on a fast SSD to a stalled disk.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            resident_memory: Gauge::default(),
        };
        metrics.register();
        // Series that exist from the start, so that a rate over them is 0 rather than absent.
        let _ = metrics
            .connections_refused
            .get_or_create(&label("reason", "max_connections"));
        for result in [
            "ok",
            "wrong_password",
            "unknown_user",
            "account_locked",
            "address_throttled",
        ] {
            let _ = metrics.logins.get_or_create(&label("result", result));
        }
        metrics
    }

    fn register(&mut self) {
        let r = self.registry.sub_registry_with_prefix("txsock");
        r.register(
            "connections_open",
            "Connections being served now",
            self.connections_open.clone(),
        );
        r.register(
            "connections_accepted",
            "Connections accepted and served",
            self.connections_accepted.clone(),
        );
        r.register(
            "connections_refused",
            "Connections answered server_busy and closed, by reason",
            self.connections_refused.clone(),
        );
        r.register(
            "registrations",
            "Users registered over the network",
            self.registrations.clone(),
        );
        r.register(
            "logins",
            "Login attempts by result: ok, wrong_password, unknown_user, account_locked, \
             address_throttled",
            self.logins.clone(),
        );
        r.register(
            "lockouts",
            "Failed logins that locked an account",
            self.lockouts.clone(),
        );
        r.register(
            "address_throttles",
            "Failed logins that throttled the peer's address",
            self.address_throttles.clone(),
        );
        r.register(
            "frames_rejected",
            "Frames refused without any effect, by the error code sent",
            self.frames_rejected.clone(),
        );
        r.register(
            "mac_failures",
            "Transfer frames whose MAC did not verify (frames_rejected with code bad_mac)",
            self.mac_failures.clone(),
        );
        r.register(
            "replays",
            "Transfer frames with an unknown or already used nonce (frames_rejected with code \
             unknown_nonce)",
            self.replays.clone(),
        );
        r.register(
            "sessions_closed",
            "Sessions the server closed because of an error, by code",
            self.sessions_closed.clone(),
        );
        r.register(
            "transfers_committed",
            "Transfers committed (money moved)",
            self.transfers_committed.clone(),
        );
        r.register(
            "transfers_repeated",
            "Transfer ids sent again and answered with their earlier commit (nothing moved)",
            self.transfers_repeated.clone(),
        );
        r.register(
            "transfers_refused",
            "Transfers the ledger refused, by reason (the error code)",
            self.transfers_refused.clone(),
        );
        r.register(
            "commits",
            "Transactions committed, one sync each (one per batch; one per part of a batch MySQL committed in parts)",
            self.commits.clone(),
        );
        r.register(
            "commit_failures",
            "Batches whose commit failed wholly or in part (storage errors or a panic; the failed requests got internal)",
            self.commit_failures.clone(),
        );
        r.register(
            "commit_batch_size",
            "Ledger requests per batch the store answered without an error",
            self.commit_batch_size.clone(),
        );
        r.register(
            "commit_seconds",
            "Time to execute and commit one batch, fsync included",
            self.commit_seconds.clone(),
        );
        if cfg!(target_os = "linux") {
            self.registry.register(
                "process_resident_memory_bytes",
                "Resident memory of the server process (RSS)",
                self.resident_memory.clone(),
            );
        }
    }

    /// The text a scrape returns.
    fn render(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// The resident set size from `/proc/self/statm` (Linux only).
fn resident_memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(page).ok().map(|page| pages * page)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

fn with(f: impl FnOnce(&Metrics)) {
    if let Some(metrics) = METRICS.get() {
        f(metrics)
    }
}

fn label(name: &'static str, value: &'static str) -> Label {
    [(name, value)]
}

/// Binds the metrics endpoint (before anything is created on disk, like `--listen`).
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        let advice = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                ": another program listens there; choose another --metrics address"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                ": no interface of this machine has that address"
            }
            _ => "",
        };
        anyhow::anyhow!("cannot serve metrics on {address}: {e}{advice}")
    })
}

/// Turns the metrics on and serves them on `listener` until the runtime stops.
pub fn install(listener: TcpListener) {
    let metrics = METRICS.get_or_init(Metrics::new);
    let turns = Arc::new(Semaphore::new(SCRAPES));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let turns = turns.clone();
            tokio::spawn(async move {
                let Ok(_turn) = turns.acquire().await else {
                    return;
                };
                let _ = answer(metrics, stream).await;
            });
        }
    });
}

/// Reads one request head and answers it.
async fn answer(metrics: &Metrics, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, read).await.is_err() {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", prometheus_text::CONTENT_TYPE, metrics.render()),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "txsock serves its metrics at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A connection being served; dropping it counts the connection closed.
pub struct OpenConnection(());

impl Drop for OpenConnection {
    fn drop(&mut self) {
        with(|m| {
            m.connections_open.dec();
        });
    }
}

/// Counts a connection accepted and open until the returned guard is dropped.
pub fn connection_opened() -> OpenConnection {
    with(|m| {
        m.connections_accepted.inc();
        m.connections_open.inc();
    });
    OpenConnection(())
}

/// Counts a connection refused for `reason` (e.g. `max_connections`).
pub fn connection_refused(reason: &'static str) {
    with(|m| {
        m.connections_refused
            .get_or_create(&label("reason", reason))
            .inc();
    });
}

/// Counts what one session event says.
pub fn server_event(event: &ServerEvent) {
    with(|m| match event {
        ServerEvent::Registered { .. } => {
            m.registrations.inc();
        }
        ServerEvent::LoggedIn { .. } => {
            m.logins.get_or_create(&label("result", "ok")).inc();
        }
        ServerEvent::LoginFailed { reason, .. } => {
            m.logins
                .get_or_create(&label("result", reason.name()))
                .inc();
        }
        ServerEvent::AccountLocked { .. } => {
            m.lockouts.inc();
        }
        ServerEvent::AddressThrottled => {
            m.address_throttles.inc();
        }
        ServerEvent::Rejected { code } => {
            m.frames_rejected
                .get_or_create(&label("code", code.name()))
                .inc();
            match code {
                ErrorCode::BadMac => {
                    m.mac_failures.inc();
                }
                ErrorCode::UnknownNonce => {
                    m.replays.inc();
                }
                _ => {}
            }
        }
        ServerEvent::Closing { code } => {
            m.sessions_closed
                .get_or_create(&label("code", code.name()))
                .inc();
        }
        _ => {}
    });
}

/// Counts one batch the group commit executed: its requests, the replies it gave, how many
/// transfers it committed for the first time, the transactions it took
/// ([`crate::store::Store::last_batch_transactions`]), and how long it took.
pub fn commit(
    batch: &[(LedgerRequest, txsock_core::Instant)],
    replies: &[LedgerReply],
    newly_committed: usize,
    transactions: u64,
    elapsed: Duration,
) {
    with(|m| m.count_commit(batch, replies, newly_committed, transactions, elapsed));
}

impl Metrics {
    /// [`commit`] on these metrics.
    fn count_commit(
        &self,
        batch: &[(LedgerRequest, txsock_core::Instant)],
        replies: &[LedgerReply],
        newly_committed: usize,
        transactions: u64,
        elapsed: Duration,
    ) {
        self.commit_batch_size.observe(batch.len() as f64);
        self.commit_seconds.observe(elapsed.as_secs_f64());
        self.count_outcomes(batch, replies, newly_committed, transactions);
    }

    /// The counters of [`Metrics::count_commit`], without the histograms: the transactions,
    /// and the outcomes of the transfers in `batch` answered by `replies`.
    fn count_outcomes(
        &self,
        batch: &[(LedgerRequest, txsock_core::Instant)],
        replies: &[LedgerReply],
        newly_committed: usize,
        transactions: u64,
    ) {
        let m = self;
        m.commits.inc_by(transactions);
        let mut accepted = 0u64;
        for ((request, _), reply) in batch.iter().zip(replies) {
            if let (LedgerRequest::Transfer { .. }, LedgerReply::Transfer(outcome)) =
                (request, reply)
            {
                match outcome.result {
                    Ok(()) => accepted += 1,
                    Err(code) => {
                        m.transfers_refused
                            .get_or_create(&label("reason", code.name()))
                            .inc();
                    }
                }
            }
        }
        let newly = newly_committed as u64;
        m.transfers_committed.inc_by(newly);
        m.transfers_repeated.inc_by(accepted.saturating_sub(newly));
    }
}

/// Counts what a batch whose commit panicked had committed before the panic
/// ([`crate::store::Store::recover_from_panic`]): `batch` is its requests that were answered
/// as their parts finished, `replies` their replies. Only the counters: the histograms count
/// the batches the store answered without an error, which this one is not.
pub fn committed_in_part(
    batch: &[(LedgerRequest, txsock_core::Instant)],
    replies: &[LedgerReply],
    newly_committed: usize,
    transactions: u64,
) {
    with(|m| m.count_outcomes(batch, replies, newly_committed, transactions));
}

/// Counts one batch whose commit failed, wholly or in part (the histograms count every
/// batch the store answered without an error, so a failed part's batch is in both).
pub fn commit_failed() {
    with(|m| {
        m.commit_failures.inc();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.connections_accepted.inc();
        metrics.commit_batch_size.observe(3.0);
        let text = metrics.render();
        assert!(text.contains("# TYPE txsock_connections_accepted_total counter"));
        assert!(
            text.contains("txsock_connections_accepted_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("txsock_commit_batch_size_bucket{le=\"4\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("txsock_logins_total{result=\"wrong_password\"} 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF"),
            "OpenMetrics, not the Prometheus text format"
        );
        if cfg!(target_os = "linux") {
            assert!(
                !text.contains("process_resident_memory_bytes 0\n"),
                "{text}"
            );
        }
    }

    /// A batch counts as many commits as the transactions the store took for it (MySQL's
    /// split: one per part), and once in the batch-size histogram (review item 14).
    #[test]
    fn a_batch_counts_its_transactions_as_commits() {
        let metrics = Metrics::new();
        let batch: Vec<(LedgerRequest, txsock_core::Instant)> = Vec::new();
        metrics.count_commit(&batch, &[], 0, 3, Duration::from_millis(1));
        metrics.count_commit(&batch, &[], 0, 1, Duration::from_millis(1));
        let text = metrics.render();
        assert!(text.contains("txsock_commits_total 4\n"), "{text}");
        assert!(
            text.contains("txsock_commit_batch_size_count 2\n"),
            "{text}"
        );
    }

    /// A transfer of 1 from alice to bob with id `id`, as a batch holds it.
    fn transfer(id: &str) -> (LedgerRequest, txsock_core::Instant) {
        (
            LedgerRequest::Transfer {
                from: txsock_core::Username::parse("alice").unwrap(),
                id: txsock_core::TransferId::parse(id).unwrap(),
                to: txsock_core::Username::parse("bob").unwrap(),
                amount: txsock_core::Amount::parse_non_negative("1").unwrap(),
            },
            txsock_core::Instant::from_millis(0),
        )
    }

    /// The ledger's answer to a transfer with `result`.
    fn outcome(result: Result<(), ErrorCode>) -> LedgerReply {
        LedgerReply::Transfer(txsock_core::ledger::TransferOutcome {
            result,
            balance: txsock_core::Amount::parse_non_negative("0").unwrap(),
        })
    }

    /// What a batch that panicked had committed before the panic (review 1 item 2): its
    /// transactions and its transfers' outcomes are counted, but the batch is in neither
    /// histogram, which count the batches answered without an error.
    #[test]
    fn a_panicked_batchs_committed_part_is_counted_outside_the_histograms() {
        let metrics = Metrics::new();
        let batch = [transfer("t1"), transfer("t2"), transfer("t3")];
        let replies = [
            outcome(Ok(())),
            outcome(Err(ErrorCode::InsufficientFunds)),
            outcome(Ok(())),
        ];
        metrics.count_outcomes(&batch, &replies, 1, 2);
        let text = metrics.render();
        for line in [
            "txsock_commits_total 2\n",
            "txsock_transfers_committed_total 1\n",
            "txsock_transfers_repeated_total 1\n",
            "txsock_transfers_refused_total{reason=\"insufficient_funds\"} 1\n",
            "txsock_commit_batch_size_count 0\n",
            "txsock_commit_seconds_count 0\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }

    /// The group commit's panic arm reaches the process's metrics once they are on. The
    /// refusal counted has a reason no ledger gives (`internal`), so that no other test's
    /// commit, counted meanwhile in the same process, adds to it.
    #[test]
    fn what_a_panicked_batch_committed_reaches_the_process_metrics() {
        let metrics = METRICS.get_or_init(Metrics::new);
        committed_in_part(
            &[transfer("t1")],
            &[outcome(Err(ErrorCode::Internal))],
            0,
            0,
        );
        let text = metrics.render();
        assert!(
            text.contains("txsock_transfers_refused_total{reason=\"internal\"} 1\n"),
            "{text}"
        );
    }
}
