//! Group commit: one worker thread that owns the store and commits many sessions' ledger
//! requests in one transaction and one sync. It moves no money itself: the store applies the
//! core's money rule; this module decides only what goes into each commit and when the
//! replies may leave (after the commit returned).
//!
//! Sessions send their requests (up to their pipeline limit each, in request order) and
//! wait for the replies. The worker takes whatever is queued (up to a batch limit) as one
//! batch, in queue order, so under load a commit carries up to clients × pipeline transfers
//! while a lone request is committed at once. One session's requests keep their order: it
//! sends them one after another into one FIFO queue, and a batch applies its requests in
//! order. Replies go out only after the commit returned, so an acknowledged transfer is on
//! disk.

use crate::audit::{Audit, Log};
use crate::store::{Committed, Store};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use txsock_core::ledger::{LedgerReply, LedgerRequest};
use txsock_core::Instant;

struct Job {
    request: LedgerRequest,
    now: Instant,
    reply: oneshot::Sender<LedgerReply>,
}

/// Counters for reports and the closing log line.
#[derive(Default, Debug)]
pub struct CommitStats {
    /// Commits (batches) executed.
    pub commits: AtomicU64,
    /// Requests executed.
    pub requests: AtomicU64,
    /// Transfers newly committed.
    pub transfers: AtomicU64,
    /// Largest batch seen.
    pub largest_batch: AtomicU64,
}

/// A cloneable handle to the group-commit worker: the queue its requests wait in.
#[derive(Clone)]
pub struct CommitQueue {
    tx: mpsc::Sender<Job>,
    /// The worker's counters.
    pub stats: Arc<CommitStats>,
}

/// The worker thread; join it after every handle is dropped to finish in-flight commits.
pub struct CommitWorker {
    thread: std::thread::JoinHandle<()>,
}

impl CommitWorker {
    /// Waits until every queued request has been committed and answered.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Starts the worker over `store`. `queue` bounds the requests waiting (each session has at
/// most its pipeline limit outstanding, so connections × pipeline is a natural size; a full
/// queue makes senders wait); `max_batch` bounds one commit.
pub fn spawn(
    store: Box<dyn Store>,
    audit: Arc<Audit>,
    queue: usize,
    max_batch: usize,
) -> (CommitQueue, CommitWorker) {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let stats = Arc::new(CommitStats::default());
    let worker_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name("txsock-ledger".into())
        .spawn(move || run(store, rx, audit, worker_stats, max_batch.max(1)))
        .expect("spawning the ledger thread");
    (CommitQueue { tx, stats }, CommitWorker { thread })
}

/// The reply to one submitted request, to await once the requests before it are answered.
pub struct PendingReply(Option<oneshot::Receiver<LedgerReply>>);

impl std::future::Future for PendingReply {
    type Output = LedgerReply;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<LedgerReply> {
        match &mut self.0 {
            None => std::task::Poll::Ready(LedgerReply::Unavailable),
            Some(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(LedgerReply::Unavailable)),
        }
    }
}

impl CommitQueue {
    /// Queues `request` behind every request submitted before it, waiting for room in the
    /// queue; the returned reply resolves once its commit has returned (`Unavailable` if
    /// the worker is gone).
    pub async fn submit(&self, request: LedgerRequest, now: Instant) -> PendingReply {
        // `reserve` first, so that the waiting future does not hold the request.
        let Ok(permit) = self.tx.reserve().await else {
            return PendingReply(None);
        };
        let (reply, rx) = oneshot::channel();
        permit.send(Job {
            request,
            now,
            reply,
        });
        PendingReply(Some(rx))
    }
}

fn run(
    mut store: Box<dyn Store>,
    mut rx: mpsc::Receiver<Job>,
    audit: Arc<Audit>,
    stats: Arc<CommitStats>,
    max_batch: usize,
) {
    // One batch: the requests with their times, and where each reply goes.
    let mut batch: Vec<(LedgerRequest, Instant)> = Vec::with_capacity(max_batch);
    let mut reply_to: Vec<oneshot::Sender<LedgerReply>> = Vec::with_capacity(max_batch);
    let mut committed: Vec<Committed> = Vec::new();
    while let Some(mut job) = rx.blocking_recv() {
        batch.clear();
        loop {
            batch.push((job.request, job.now));
            reply_to.push(job.reply);
            if reply_to.len() >= max_batch {
                break;
            }
            match rx.try_recv() {
                Ok(next) => job = next,
                Err(_) => break,
            }
        }
        committed.clear();
        let started = std::time::Instant::now();
        let replies = match store.execute_batch(&batch, &mut committed) {
            Ok(replies) => {
                let elapsed = started.elapsed();
                crate::metrics::commit(&batch, &replies, committed.len(), elapsed);
                crate::logging::batch_committed(batch.len(), committed.len(), elapsed);
                replies
            }
            Err(e) => {
                crate::metrics::commit_failed();
                match crate::store::advice(&e) {
                    Some(advice) => tracing::error!(
                        "commit of {} requests failed (all answered internal): {e:#}; what to \
                         do: {advice}",
                        reply_to.len()
                    ),
                    None => tracing::error!(
                        "commit of {} requests failed (all answered internal): {e:#}",
                        reply_to.len()
                    ),
                }
                audit.write(
                    Log::Errors,
                    format_args!("storage_failure requests={} error={e:#}", reply_to.len()),
                );
                vec![LedgerReply::Unavailable; reply_to.len()]
            }
        };
        audit.write_each(Log::Transactions, &committed, |line, c| {
            let _ = write!(
                line,
                "transfer id={} from={} to={} amount={} balance_after={} committed_at={}",
                c.id,
                c.from,
                c.to,
                c.amount,
                c.balance_after,
                crate::clock::stamp_millis(c.at_ms)
            );
        });
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(reply_to.len() as u64, Ordering::Relaxed);
        stats
            .transfers
            .fetch_add(committed.len() as u64, Ordering::Relaxed);
        stats
            .largest_batch
            .fetch_max(reply_to.len() as u64, Ordering::Relaxed);
        for (to, reply) in reply_to.drain(..).zip(replies) {
            // A session that went away no longer needs its answer.
            let _ = to.send(reply);
        }
    }
}
