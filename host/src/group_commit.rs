//! Group commit: many sessions' ledger requests in one transaction and one sync. It moves no
//! money itself: the store applies the core's money rule; this module decides only what goes
//! into each commit, who runs it, and when the replies may leave (after the commit returned).
//!
//! Sessions queue their requests (up to their pipeline limit each, in request order) and
//! wait for the replies. Whoever commits takes whatever is queued (up to a batch limit) as
//! one batch, in queue order, so under load a commit carries up to clients × pipeline
//! transfers while a lone request is committed at once. One session's requests keep their
//! order: it queues them one after another into one FIFO queue, a batch applies its requests
//! in order, and batches are taken from the queue only while holding the store, so an
//! earlier batch is committed before a later one is taken. Replies go out only after the
//! commit returned, so an acknowledged transfer is on disk.
//!
//! Who commits: the session that queued, on its own thread, when the store commits locally
//! ([`Store::commits_locally`]: SQLite, not MySQL), the thread may block (no runtime, or a
//! multi-threaded tokio runtime with at least two workers), the store is free and the queue
//! holds no more than the requests it just queued ([`CommitQueue::commit_now`]); else the
//! worker thread, once the store is free again. A lone client's request is thus read,
//! committed and answered on one thread: no hand-off to the worker and back, each a thread
//! wake-up that cost tens of microseconds against a sync of about forty
//! (docs/BENCHMARKS.md, "host-perf").
//!
//! A commit that panics is answered like one that failed: its requests get `Unavailable`
//! (`internal` on the wire), a `storage_failure` line is written, and the next batch
//! commits as usual. Only the parts the store committed before the panic (MySQL commits a
//! contended batch in parts, [`Store::recover_from_panic`]) keep their real replies, and
//! their transfers are logged and counted like any committed transfer.

use crate::audit::{Audit, Log};
use crate::store::{Committed, DurablePrefix, Store};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use tokio::sync::oneshot;
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
    /// Transactions committed, one sync each ([`Store::last_batch_transactions`]): one per
    /// batch, or one per part of a batch the store committed in parts; none for a batch
    /// whose commit failed.
    pub commits: AtomicU64,
    /// Requests executed.
    pub requests: AtomicU64,
    /// Transfers newly committed.
    pub transfers: AtomicU64,
    /// Largest batch seen.
    pub largest_batch: AtomicU64,
}

/// The queue and whether the worker sleeps on it.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// The worker waits on [`Shared::wake`] for jobs (so a queuer must wake it).
    worker_waiting: bool,
    /// Every [`CommitQueue`] is gone: the worker finishes the queue and ends.
    closed: bool,
}

/// What the worker and every session share.
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The store, and the buffers of one batch. Held from taking a batch off the queue until
    /// its commit returned: that is what keeps batches in queue order.
    committer: Mutex<Committer>,
    audit: Arc<Audit>,
    stats: Arc<CommitStats>,
    max_batch: usize,
    /// [`Store::commits_locally`], read once: whether a session may commit on its own thread.
    inline: bool,
}

/// The store and one batch's buffers (kept between batches to reuse their allocations).
struct Committer {
    store: Box<dyn Store>,
    batch: Vec<(LedgerRequest, Instant)>,
    reply_to: Vec<oneshot::Sender<LedgerReply>>,
    committed: Vec<Committed>,
}

/// Marks the queue closed once the last [`CommitQueue`] is dropped.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        let mut queue = lock(&self.0.queue);
        queue.closed = true;
        self.0.wake.notify_one();
    }
}

/// A cloneable handle to the group commit: the queue its requests wait in.
#[derive(Clone)]
pub struct CommitQueue {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
    /// The commits' counters.
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

/// Locks `mutex`, also after a panic while it was held: a commit that panicked rolled its
/// transaction back as it unwound, and the queue is changed only in single steps.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the worker over `store`. `max_batch` bounds one commit. The queue itself needs no
/// bound: each session has at most its pipeline limit outstanding, and the connections are
/// bounded by `--max-connections`.
pub fn spawn(
    store: Box<dyn Store>,
    audit: Arc<Audit>,
    max_batch: usize,
) -> (CommitQueue, CommitWorker) {
    let max_batch = max_batch.max(1);
    let stats = Arc::new(CommitStats::default());
    let inline = store.commits_locally();
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
        committer: Mutex::new(Committer {
            store,
            batch: Vec::with_capacity(max_batch),
            reply_to: Vec::with_capacity(max_batch),
            committed: Vec::new(),
        }),
        audit,
        stats: stats.clone(),
        max_batch,
        inline,
    });
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("txsock-ledger".into())
        .spawn(move || run(&worker))
        .expect("spawning the ledger thread");
    let queue = CommitQueue {
        _closer: Arc::new(Closer(shared.clone())),
        shared,
        stats,
    };
    (queue, CommitWorker { thread })
}

#[cfg(test)]
impl CommitQueue {
    /// Whether the worker thread sleeps on an empty queue (so it will not take a job until
    /// it is woken).
    fn worker_sleeps(&self) -> bool {
        let queue = lock(&self.shared.queue);
        queue.worker_waiting && queue.jobs.is_empty()
    }

    /// How many requests wait in the queue (not yet taken into a batch).
    pub(crate) fn queued(&self) -> usize {
        lock(&self.shared.queue).jobs.len()
    }
}

/// The reply to one submitted request, to await once the requests before it are answered.
pub struct PendingReply(oneshot::Receiver<LedgerReply>);

impl std::future::Future for PendingReply {
    type Output = LedgerReply;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<LedgerReply> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(LedgerReply::Unavailable))
    }
}

impl CommitQueue {
    /// Queues `request` behind every request queued before it. The returned reply resolves
    /// once its commit has returned (`Unavailable` if the commit could not run); call
    /// [`CommitQueue::commit_now`] after queueing a session's requests.
    pub fn queue(&self, request: LedgerRequest, now: Instant) -> PendingReply {
        let (reply, rx) = oneshot::channel();
        lock(&self.shared.queue).jobs.push_back(Job {
            request,
            now,
            reply,
        });
        PendingReply(rx)
    }

    /// Commits the caller's `queued` requests, just queued: here, at once, if the store
    /// commits locally ([`Store::commits_locally`]), this thread may block (no runtime at
    /// all, or a worker of a multi-threaded tokio runtime with at least two workers, so that
    /// the others carry the runtime meanwhile), the store is free and the queue holds at most
    /// `queued` requests; else by waking the worker thread, which commits what is queued
    /// once the store is free. Either way, every request queued before this call is
    /// committed without another call.
    ///
    /// A commit here is at most `queued` requests (usually the caller's own; another
    /// session's if the worker took some of the caller's first) and one local sync, so it
    /// blocks the tokio worker only briefly; anything bigger, and every commit of a store
    /// that can wait on the network or on locks, is the worker thread's. `block_in_place`
    /// would let the caller commit more, but it starts threads to carry the runtime
    /// meanwhile, and each new thread's malloc arena added more than 2 MiB to the attack
    /// mix's growth.
    pub fn commit_now(&self, queued: usize) {
        let shared = &*self.shared;
        let may_block = shared.inline
            && match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                        && handle.metrics().num_workers() >= 2
                }
                Err(_) => true,
            };
        if may_block {
            let committer = match shared.committer.try_lock() {
                Ok(committer) => Some(committer),
                // As `lock`: a panic while it was held left nothing half-done.
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut committer) = committer {
                commit_one_batch(shared, &mut committer, queued);
            }
        }
        // Whatever is still queued (others' requests, or the store was busy) is the
        // worker's.
        self.hand_to_worker();
    }

    /// Leaves whatever is queued to the worker thread, waking it if it sleeps: for a caller
    /// that must never run a commit itself (the systemd watchdog's probe).
    pub fn hand_to_worker(&self) {
        let queue = lock(&self.shared.queue);
        if queue.worker_waiting && !queue.jobs.is_empty() {
            self.shared.wake.notify_one();
        }
    }
}

/// Takes up to a batch off the queue and commits it, then answers it; takes none if the
/// queue held more than `at_most` requests. The caller holds the committer, so no other
/// batch is taken meanwhile.
fn commit_one_batch(shared: &Shared, committer: &mut Committer, at_most: usize) {
    let Committer {
        store,
        batch,
        reply_to,
        committed,
    } = committer;
    batch.clear();
    reply_to.clear();
    {
        let mut queue = lock(&shared.queue);
        if queue.jobs.len() > at_most {
            return;
        }
        let n = queue.jobs.len().min(shared.max_batch);
        for job in queue.jobs.drain(..n) {
            batch.push((job.request, job.now));
            reply_to.push(job.reply);
        }
    }
    if batch.is_empty() {
        return;
    }
    committed.clear();
    let started = std::time::Instant::now();
    // A panic in the store is a failed commit (every request after the store's durable
    // prefix answered `Unavailable`, one `storage_failure` line); the store is told, so that
    // it drops whatever transaction the panic left open, and the next batch commits as
    // usual. What it committed before the panic is answered, logged and counted as such.
    let mut durable = DurablePrefix::default();
    let outcome = catch_unwind(AssertUnwindSafe(|| store.execute_batch(batch, committed)))
        .unwrap_or_else(|panic| {
            durable = store.recover_from_panic();
            // A store's account of its own panic is trusted no further than the batch: more
            // replies than requests would panic below, outside this guard, and leave every
            // queued request unanswered (a longer `committed` needs no clamp: truncating to
            // it changes nothing).
            durable.replies.truncate(batch.len());
            committed.truncate(durable.committed);
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic");
            Err(anyhow::anyhow!("panic: {what}"))
        });
    let transactions;
    let replies = match outcome {
        Ok(replies) => {
            let elapsed = started.elapsed();
            transactions = store.last_batch_transactions();
            crate::metrics::commit(batch, &replies, committed.len(), transactions, elapsed);
            crate::logging::batch_committed(batch.len(), committed.len(), elapsed);
            // A store that commits a batch in parts (MySQL's split) answers a part that
            // failed `Unavailable` and logs why: that part is a failed commit too.
            let failed = replies
                .iter()
                .filter(|r| matches!(r, LedgerReply::Unavailable))
                .count();
            if failed > 0 {
                crate::metrics::commit_failed();
                shared.audit.write(
                    Log::Errors,
                    format_args!(
                        "storage_failure requests={failed} error=part of a batch of {} \
                         failed (the server log says why)",
                        batch.len()
                    ),
                );
            }
            replies
        }
        Err(e) => {
            // Empty unless the store panicked after committing part of the batch.
            let DurablePrefix {
                replies: mut answered,
                transactions: durable_transactions,
                ..
            } = durable;
            transactions = durable_transactions;
            crate::metrics::committed_in_part(
                &batch[..answered.len()],
                &answered,
                committed.len(),
                transactions,
            );
            crate::metrics::commit_failed();
            let failed = if answered.is_empty() {
                "all answered internal".to_owned()
            } else {
                format!(
                    "its first {} answered as the parts the store finished before it, the \
                     rest internal",
                    answered.len()
                )
            };
            match crate::store::advice(&e) {
                Some(advice) => tracing::error!(
                    "commit of {} requests failed ({failed}): {e:#}; what to do: {advice}",
                    reply_to.len()
                ),
                None => tracing::error!(
                    "commit of {} requests failed ({failed}): {e:#}",
                    reply_to.len()
                ),
            }
            answered.resize(reply_to.len(), LedgerReply::Unavailable);
            // Every request answered `internal`: the rest, and a part of a split that
            // failed alone before the panic.
            let unavailable = answered
                .iter()
                .filter(|r| matches!(r, LedgerReply::Unavailable))
                .count();
            shared.audit.write(
                Log::Errors,
                format_args!("storage_failure requests={unavailable} error={e:#}"),
            );
            answered
        }
    };
    shared
        .audit
        .write_each(Log::Transactions, committed.iter(), |line, c| {
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
    let stats = &shared.stats;
    stats.commits.fetch_add(transactions, Ordering::Relaxed);
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

/// The worker: commits whatever is queued while no session does, until every handle is
/// gone and the queue is empty.
fn run(shared: &Shared) {
    loop {
        {
            let mut queue = lock(&shared.queue);
            while queue.jobs.is_empty() {
                if queue.closed {
                    return;
                }
                queue.worker_waiting = true;
                queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
                queue.worker_waiting = false;
            }
        }
        let mut committer = lock(&shared.committer);
        commit_one_batch(shared, &mut committer, usize::MAX);
    }
}

/// A store for the group commit's tests and the watchdog's: SQLite that commits locally or
/// not, as told, and can misbehave on command.
#[cfg(test)]
pub(crate) mod probe {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use std::sync::atomic::AtomicBool;
    use txsock_core::auth::Verifier;
    use txsock_core::{Amount, Username};

    /// SQLite that says whether it commits locally as told, records which thread ran each
    /// commit, and, when told, panics in its next commit (also after committing the
    /// batch's first request alone, as MySQL's split commits a part before a later one
    /// panics), answers the next batch's first request `Unavailable` (as a store that
    /// commits in parts answers a failed part), holds its next commit until released (a
    /// hung disk), and reports a number of transactions per batch.
    struct Probe {
        sqlite: SqliteStore,
        locally: bool,
        handle: ProbeHandle,
        /// What the panic after a committed first request left durable.
        durable: DurablePrefix,
    }

    impl Store for Probe {
        fn execute_batch(
            &mut self,
            batch: &[(LedgerRequest, Instant)],
            committed: &mut Vec<Committed>,
        ) -> anyhow::Result<Vec<LedgerReply>> {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            let handle = &self.handle;
            handle.threads.lock().unwrap().push(thread);
            if handle.hold_next.swap(false, Ordering::SeqCst) {
                let (released, wake) = &*handle.released;
                let mut released = released.lock().unwrap();
                while !*released {
                    released = wake.wait(released).unwrap();
                }
            }
            if handle.panic_next.swap(false, Ordering::SeqCst) {
                panic!("the probe store panics as told");
            }
            if handle.overstated_panic_next.swap(false, Ordering::SeqCst) {
                self.durable = DurablePrefix {
                    replies: vec![LedgerReply::Unavailable; batch.len() + 3],
                    committed: committed.len() + 5,
                    transactions: 0,
                };
                panic!("the probe store panics and overstates what it finished");
            }
            if handle.panic_after_first_next.swap(false, Ordering::SeqCst) {
                let replies = self.sqlite.execute_batch(&batch[..1], committed)?;
                self.durable = DurablePrefix {
                    replies,
                    committed: committed.len(),
                    transactions: 1,
                };
                panic!("the probe store panics after committing a part");
            }
            let mut replies = self.sqlite.execute_batch(batch, committed)?;
            if handle.fail_first_next.swap(false, Ordering::SeqCst) {
                replies[0] = LedgerReply::Unavailable;
            }
            Ok(replies)
        }
        fn server_secret(&mut self) -> anyhow::Result<[u8; 32]> {
            self.sqlite.server_secret()
        }
        fn add_user(
            &mut self,
            user: &Username,
            verifier: &Verifier,
            balance: Amount,
            now_ms: u64,
        ) -> anyhow::Result<()> {
            self.sqlite.add_user(user, verifier, balance, now_ms)
        }
        fn list_users(&mut self) -> anyhow::Result<Vec<crate::store::UserSummary>> {
            self.sqlite.list_users()
        }
        fn set_admin_lock(&mut self, user: &Username, locked: bool) -> anyhow::Result<()> {
            self.sqlite.set_admin_lock(user, locked)
        }
        fn deposit(
            &mut self,
            user: &Username,
            amount: Amount,
            now_ms: u64,
        ) -> anyhow::Result<Amount> {
            self.sqlite.deposit(user, amount, now_ms)
        }
        fn check(&mut self) -> anyhow::Result<crate::store::CheckReport> {
            self.sqlite.check()
        }
        fn integrity(&mut self) -> anyhow::Result<Vec<String>> {
            self.sqlite.integrity()
        }
        fn commits_locally(&self) -> bool {
            self.locally
        }
        fn recover_from_panic(&mut self) -> DurablePrefix {
            std::mem::take(&mut self.durable)
        }
        fn last_batch_transactions(&self) -> u64 {
            self.handle.transactions.load(Ordering::SeqCst)
        }
    }

    /// What a test sees of a [`Probe`]: the threads that committed, and its switches.
    #[derive(Clone)]
    pub(crate) struct ProbeHandle {
        /// The name of the thread of each commit, in order (pushed as the commit starts).
        pub(crate) threads: Arc<Mutex<Vec<String>>>,
        /// The next commit panics.
        pub(crate) panic_next: Arc<AtomicBool>,
        /// The next commit commits its first request alone, then panics.
        pub(crate) panic_after_first_next: Arc<AtomicBool>,
        /// The next commit panics and then reports a durable prefix longer than its batch
        /// and than what it committed (a store bug the group commit must survive).
        pub(crate) overstated_panic_next: Arc<AtomicBool>,
        /// The next batch's first request is answered `Unavailable`.
        pub(crate) fail_first_next: Arc<AtomicBool>,
        /// The next commit waits until [`ProbeHandle::release`].
        pub(crate) hold_next: Arc<AtomicBool>,
        released: Arc<(Mutex<bool>, Condvar)>,
        /// What `last_batch_transactions` says (1 unless set).
        pub(crate) transactions: Arc<AtomicU64>,
    }

    impl ProbeHandle {
        /// Lets a held commit (and every later one) go on.
        pub(crate) fn release(&self) {
            let (released, wake) = &*self.released;
            *released.lock().unwrap() = true;
            wake.notify_all();
        }

        /// Waits (bounded) until `n` commits have started.
        pub(crate) fn until_commits_started(&self, n: usize) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.threads.lock().unwrap().len() < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{n} commits never started"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// A group commit over a [`Probe`] in `dir`, with users opening at 10.
    pub(crate) fn start_probe(
        dir: &std::path::Path,
        locally: bool,
    ) -> (CommitQueue, CommitWorker, ProbeHandle) {
        let sqlite = SqliteStore::open(
            &dir.join("txsock.db"),
            Amount::parse_non_negative("10").unwrap(),
        )
        .expect("open");
        let handle = ProbeHandle {
            threads: Arc::default(),
            panic_next: Arc::default(),
            panic_after_first_next: Arc::default(),
            overstated_panic_next: Arc::default(),
            fail_first_next: Arc::default(),
            hold_next: Arc::default(),
            released: Arc::default(),
            transactions: Arc::new(AtomicU64::new(1)),
        };
        let store = Probe {
            sqlite,
            locally,
            handle: handle.clone(),
            durable: DurablePrefix::default(),
        };
        let audit = Arc::new(Audit::open(dir).expect("audit logs"));
        let (queue, worker) = spawn(Box::new(store), audit, 512);
        (queue, worker, handle)
    }

    /// The ids of the transfers in the `transactions.log` written in `dir`, in order.
    pub(crate) fn logged_transfer_ids(dir: &std::path::Path) -> Vec<String> {
        let log = std::fs::read_to_string(dir.join("transactions.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.split(" id=").nth(1)?.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    /// Waits (bounded) until the worker thread sleeps on the empty queue.
    pub(crate) fn until_the_worker_sleeps(queue: &CommitQueue) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !queue.worker_sleeps() {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker thread never went to sleep"
            );
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::probe::{start_probe, until_the_worker_sleeps};
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use txsock_core::{Amount, ErrorCode, TransferId, Username};

    fn start(dir: &std::path::Path, opening_balance: &str) -> (CommitQueue, CommitWorker) {
        let balance = Amount::parse_non_negative(opening_balance).unwrap();
        let store = SqliteStore::open(&dir.join("txsock.db"), balance).expect("open");
        let audit = Arc::new(Audit::open(dir).expect("audit logs"));
        spawn(Box::new(store), audit, 512)
    }

    /// A store that does not commit locally (MySQL) is always committed by the worker
    /// thread, with no runtime, or inside a multi-threaded runtime with several workers:
    /// the caller never runs its commit.
    #[test]
    fn a_store_that_does_not_commit_locally_is_committed_by_the_worker_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (queue, worker, probe) = start_probe(dir.path(), false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        for i in 0..10 {
            until_the_worker_sleeps(&queue);
            let reply = queue.queue(register(&format!("u{i}")), crate::clock::now());
            if i % 2 == 0 {
                queue.commit_now(1);
            } else {
                runtime.block_on(async {
                    let queue = queue.clone();
                    tokio::spawn(async move { queue.commit_now(1) })
                        .await
                        .unwrap()
                });
            }
            assert_eq!(wait_within(reply), LedgerReply::Registered(Ok(())));
        }
        let threads = probe.threads.lock().unwrap().clone();
        assert_eq!(threads.len(), 10);
        assert!(
            threads.iter().all(|t| t == "txsock-ledger"),
            "only the worker thread commits: {threads:?}"
        );
        drop(queue);
        join_within(worker);
    }

    /// A runtime with one worker must not block it: even a store that commits locally is
    /// then committed by the worker thread.
    #[test]
    fn a_runtime_with_one_worker_leaves_every_commit_to_the_worker_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (queue, worker, probe) = start_probe(dir.path(), true);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        for i in 0..4 {
            until_the_worker_sleeps(&queue);
            let reply = queue.queue(register(&format!("u{i}")), crate::clock::now());
            runtime.block_on(async {
                let queue = queue.clone();
                tokio::spawn(async move { queue.commit_now(1) })
                    .await
                    .unwrap()
            });
            assert_eq!(wait_within(reply), LedgerReply::Registered(Ok(())));
        }
        let threads = probe.threads.lock().unwrap().clone();
        assert_eq!(threads, ["txsock-ledger"; 4]);
        drop(queue);
        join_within(worker);
    }

    /// A commit that panics, on the caller's thread or the worker's, answers its batch
    /// `Unavailable` and leaves the group commit working: the next request commits, on the
    /// same path, and the panic is in the error log as a `storage_failure`.
    #[test]
    fn a_commit_that_panics_answers_its_batch_unavailable_and_the_next_one_commits() {
        for locally in [true, false] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (queue, worker, probe) = start_probe(dir.path(), locally);
            until_the_worker_sleeps(&queue);
            probe.panic_next.store(true, Ordering::SeqCst);
            let first = queue.queue(register("alice"), crate::clock::now());
            let second = queue.queue(register("bob"), crate::clock::now());
            queue.commit_now(2);
            assert_eq!(
                wait_within(first),
                LedgerReply::Unavailable,
                "locally={locally}"
            );
            assert_eq!(
                wait_within(second),
                LedgerReply::Unavailable,
                "locally={locally}"
            );
            until_the_worker_sleeps(&queue);
            let next = queue.queue(register("alice"), crate::clock::now());
            queue.commit_now(1);
            assert_eq!(
                wait_within(next),
                LedgerReply::Registered(Ok(())),
                "locally={locally}"
            );
            let threads = probe.threads.lock().unwrap().clone();
            let expected = if locally {
                std::thread::current().name().unwrap_or("").to_owned()
            } else {
                "txsock-ledger".to_owned()
            };
            assert_eq!(threads, [expected.clone(), expected], "locally={locally}");
            drop(queue);
            join_within(worker);
            let errors = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            assert!(
                errors.contains("storage_failure requests=2 error=panic: the probe store panics"),
                "locally={locally}: {errors}"
            );
        }
    }

    /// A store whose account of its panic claims more than its batch and more than it
    /// committed (review 1 of stop 7, item 2): the group commit trusts it no further than the
    /// batch, answers the request, and the next batch commits as usual. On the caller's
    /// thread and on the worker's.
    #[test]
    fn a_store_that_overstates_its_durable_prefix_after_a_panic_cannot_wedge_the_queue() {
        for locally in [true, false] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (queue, worker, probe) = start_probe(dir.path(), locally);
            until_the_worker_sleeps(&queue);
            probe.overstated_panic_next.store(true, Ordering::SeqCst);
            let first = queue.queue(register("alice"), crate::clock::now());
            queue.commit_now(1);
            assert_eq!(
                wait_within(first),
                LedgerReply::Unavailable,
                "locally={locally}"
            );
            let next = queue.queue(register("alice"), crate::clock::now());
            queue.commit_now(1);
            assert_eq!(
                wait_within(next),
                LedgerReply::Registered(Ok(())),
                "locally={locally}"
            );
            drop(queue);
            join_within(worker);
        }
    }

    /// A store that committed the front of a batch and then panicked (MySQL's split, review
    /// 1 item 2): the committed front keeps its real reply, its transfer is logged and its
    /// transaction counted; only the rest is answered `Unavailable`, is left out of the
    /// ledger, and is what the `storage_failure` line counts. Sent again, the rest commits
    /// alone and the front is a repeat. On the caller's thread and on the worker's.
    #[test]
    fn a_panic_after_a_committed_part_keeps_that_parts_replies_log_lines_and_count() {
        for locally in [true, false] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (queue, worker, probe) = start_probe(dir.path(), locally);
            for name in ["alice", "bob"] {
                let reply = queue.queue(register(name), crate::clock::now());
                queue.commit_now(1);
                assert_eq!(wait_within(reply), LedgerReply::Registered(Ok(())));
            }
            until_the_worker_sleeps(&queue);
            probe.panic_after_first_next.store(true, Ordering::SeqCst);
            let t1 = queue.queue(transfer("alice", "t1", "bob", "3"), crate::clock::now());
            let t2 = queue.queue(transfer("alice", "t2", "bob", "4"), crate::clock::now());
            let carol = queue.queue(register("carol"), crate::clock::now());
            queue.commit_now(3);
            let sent = |balance: &str| {
                LedgerReply::Transfer(txsock_core::ledger::TransferOutcome {
                    result: Ok(()),
                    balance: Amount::parse_non_negative(balance).unwrap(),
                })
            };
            assert_eq!(wait_within(t1), sent("7"), "locally={locally}");
            assert_eq!(
                wait_within(t2),
                LedgerReply::Unavailable,
                "locally={locally}"
            );
            assert_eq!(
                wait_within(carol),
                LedgerReply::Unavailable,
                "locally={locally}"
            );
            let stats = queue.stats.clone();
            // Commits, transfers, requests.
            let counted = || {
                [&stats.commits, &stats.transfers, &stats.requests]
                    .map(|counter| counter.load(Ordering::Relaxed))
            };
            assert_eq!(counted(), [3, 1, 5], "locally={locally}");
            until_the_worker_sleeps(&queue);
            let t2 = queue.queue(transfer("alice", "t2", "bob", "4"), crate::clock::now());
            let t1 = queue.queue(transfer("alice", "t1", "bob", "3"), crate::clock::now());
            queue.commit_now(2);
            assert_eq!(wait_within(t2), sent("3"), "locally={locally}");
            let repeat = wait_within(t1);
            assert!(
                matches!(&repeat, LedgerReply::Transfer(o) if o.result.is_ok()),
                "locally={locally}: {repeat:?}"
            );
            assert_eq!(counted(), [4, 2, 7], "locally={locally}");
            drop(queue);
            join_within(worker);
            assert_eq!(
                super::probe::logged_transfer_ids(dir.path()),
                ["t1", "t2"],
                "locally={locally}"
            );
            let errors = std::fs::read_to_string(dir.path().join("error.log")).unwrap();
            assert!(
                errors.contains(
                    "storage_failure requests=2 error=panic: the probe store panics after \
                     committing a part"
                ),
                "locally={locally}: {errors}"
            );
            // The batches that committed whole wrote none.
            assert_eq!(
                errors.matches("storage_failure").count(),
                1,
                "locally={locally}: {errors}"
            );
            let mut store = SqliteStore::open(
                &dir.path().join("txsock.db"),
                Amount::parse_non_negative("10").unwrap(),
            )
            .expect("open");
            let users: Vec<(String, Amount)> = store
                .list_users()
                .unwrap()
                .into_iter()
                .map(|u| (u.name, u.balance))
                .collect();
            let balance = |b| Amount::parse_non_negative(b).unwrap();
            assert_eq!(
                users,
                [
                    ("alice".to_owned(), balance("3")),
                    ("bob".to_owned(), balance("17"))
                ],
                "locally={locally}"
            );
        }
    }

    fn register(name: &str) -> LedgerRequest {
        LedgerRequest::Register {
            user: Username::parse(name).unwrap(),
            verifier: crate::store::conformance::verifier(1),
        }
    }

    fn transfer(from: &str, id: &str, to: &str, amount: &str) -> LedgerRequest {
        LedgerRequest::Transfer {
            from: Username::parse(from).unwrap(),
            id: TransferId::parse(id).unwrap(),
            to: Username::parse(to).unwrap(),
            amount: Amount::parse_non_negative(amount).unwrap(),
        }
    }

    /// The reply if it is there already, without waiting.
    fn now_or_never(reply: &mut PendingReply) -> Option<LedgerReply> {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(std::pin::Pin::new(reply), &mut context) {
            std::task::Poll::Ready(reply) => Some(reply),
            std::task::Poll::Pending => None,
        }
    }

    /// A batch that committed in part (some replies `Unavailable`) writes a `storage_failure`
    /// line counting only the failed requests; the others are answered as committed.
    #[test]
    fn a_batch_that_failed_in_part_writes_storage_failure_for_that_part() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (queue, worker, probe) = start_probe(dir.path(), true);
        until_the_worker_sleeps(&queue);
        probe.fail_first_next.store(true, Ordering::SeqCst);
        let first = queue.queue(register("alice"), crate::clock::now());
        let second = queue.queue(register("bob"), crate::clock::now());
        queue.commit_now(2);
        assert_eq!(wait_within(first), LedgerReply::Unavailable);
        assert_eq!(wait_within(second), LedgerReply::Registered(Ok(())));
        drop(queue);
        join_within(worker);
        let errors = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        assert!(
            errors.contains("storage_failure requests=1 error=part of a batch of 2 failed"),
            "{errors}"
        );
    }

    /// With the store free, `commit_now` commits on the calling thread: the reply is there
    /// when it returns, with no hand-off to the worker thread (a lone client's round trip).
    /// Each request is queued only once the worker sleeps, so the worker cannot take it.
    #[test]
    fn a_request_queued_while_the_store_is_free_is_committed_by_the_caller() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (queue, worker) = start(dir.path(), "10");
        for _ in 0..20 {
            until_the_worker_sleeps(&queue);
            let mut reply = queue.queue(register("alice"), crate::clock::now());
            queue.commit_now(1);
            assert!(
                now_or_never(&mut reply).is_some(),
                "the caller committed its own request"
            );
        }
        assert_eq!(queue.stats.commits.load(Ordering::Relaxed), 20);
        drop(queue);
        join_within(worker);
    }

    /// Eight senders, each with 10 and two transfers of 6 queued in order, all at once: half
    /// commit themselves (no runtime), half leave it to the worker thread (inside a
    /// single-threaded runtime, which must not block). Whoever commits, every sender's first
    /// transfer is committed and its second refused: one session's requests keep their order.
    #[test]
    fn one_senders_requests_commit_in_order_whoever_commits_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (queue, worker) = start(dir.path(), "10");
        for name in (0..8).map(|i| format!("s{i}")).chain(["sink".into()]) {
            let reply = queue.queue(register(&name), crate::clock::now());
            queue.commit_now(1);
            assert_eq!(wait_within(reply), LedgerReply::Registered(Ok(())));
        }
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let from = format!("s{i}");
                    let first = queue.queue(transfer(&from, "a", "sink", "6"), crate::clock::now());
                    let second =
                        queue.queue(transfer(&from, "b", "sink", "6"), crate::clock::now());
                    if i % 2 == 0 {
                        queue.commit_now(2);
                    } else {
                        tokio::runtime::Builder::new_current_thread()
                            .build()
                            .unwrap()
                            .block_on(async { queue.commit_now(2) });
                    }
                    (wait_within(first), wait_within(second))
                })
            })
            .collect();
        for thread in threads {
            let (first, second) = thread.join().expect("a sender's thread");
            let outcome = |reply| match reply {
                LedgerReply::Transfer(outcome) => outcome.result,
                other => panic!("not a transfer's answer: {other:?}"),
            };
            assert_eq!(outcome(first), Ok(()));
            assert_eq!(outcome(second), Err(ErrorCode::InsufficientFunds));
        }
        drop(queue);
        join_within(worker);
    }

    /// The reply, waiting at most 10 s for it (a request nobody commits fails the test
    /// instead of hanging it).
    fn wait_within(reply: PendingReply) -> LedgerReply {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), reply).await
            })
            .expect("no reply within 10 s")
    }

    /// Joins the worker thread, failing the test if it has not ended within 10 s.
    fn join_within(worker: CommitWorker) {
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            worker.join();
            let _ = done.send(());
        });
        ended
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the worker thread did not end within 10 s of the last handle's drop");
    }

    /// Shutdown with requests queued (review item 8): the last handle is dropped while the
    /// worker commits a batch (held, then released; once that batch panics) or while it
    /// sleeps and nobody woke it for the queued requests. Every request is answered once,
    /// the queued ones committed, the worker ends, and a request answered `Unavailable` left
    /// nothing in the ledger while each one answered as registered is in it.
    #[test]
    fn queued_requests_are_all_answered_when_the_last_handle_is_dropped() {
        for (case, worker_busy, first_panics) in [
            ("busy", true, false),
            ("busy, its batch panics", true, true),
            ("asleep", false, false),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (queue, worker, probe) = start_probe(dir.path(), false);
            until_the_worker_sleeps(&queue);
            let mut replies = Vec::new();
            if worker_busy {
                probe.hold_next.store(true, Ordering::SeqCst);
                probe.panic_next.store(first_panics, Ordering::SeqCst);
                replies.push((
                    "first".to_owned(),
                    queue.queue(register("first"), crate::clock::now()),
                ));
                queue.commit_now(1);
                probe.until_commits_started(1);
            }
            // Other sessions' requests, queued while the worker is held or asleep; here no
            // one tells the worker about them.
            for i in 0..5 {
                let name = format!("u{i}");
                let reply = queue.queue(register(&name), crate::clock::now());
                replies.push((name, reply));
            }
            assert_eq!(queue.queued(), 5, "{case}");
            drop(queue);
            probe.release();
            let answers: Vec<(String, LedgerReply)> = replies
                .into_iter()
                .map(|(name, reply)| (name, wait_within(reply)))
                .collect();
            join_within(worker);
            let mut store = SqliteStore::open(
                &dir.path().join("txsock.db"),
                Amount::parse_non_negative("10").unwrap(),
            )
            .expect("open");
            let users: Vec<String> = store
                .list_users()
                .unwrap()
                .into_iter()
                .map(|u| u.name)
                .collect();
            for (name, answer) in &answers {
                match answer {
                    LedgerReply::Registered(Ok(())) => {
                        assert!(
                            users.contains(name),
                            "{case}: {name} answered but not in {users:?}"
                        )
                    }
                    LedgerReply::Unavailable => {
                        assert!(
                            !users.contains(name),
                            "{case}: {name} unavailable but in {users:?}"
                        )
                    }
                    other => panic!("{case}: {name}: {other:?}"),
                }
                let queued_after = name.starts_with('u');
                assert!(
                    !queued_after || matches!(answer, LedgerReply::Registered(Ok(()))),
                    "{case}: {name}, queued before the drop, was not committed: {answer:?}"
                );
            }
            let first = answers.iter().find(|(name, _)| name == "first");
            if let Some((_, answer)) = first {
                let expected = if first_panics {
                    LedgerReply::Unavailable
                } else {
                    LedgerReply::Registered(Ok(()))
                };
                assert_eq!(answer, &expected, "{case}");
            }
            // The held batch, then the five in one: nothing was committed twice.
            let commits = probe.threads.lock().unwrap().len();
            assert_eq!(commits, if worker_busy { 2 } else { 1 }, "{case}");
        }
    }

    /// A caller whose `commit_now` finds another session's request queued before its own
    /// declines to commit (it would commit that session's request on its thread), and the
    /// sleeping worker is woken for both (review item 8): both are committed, by the worker.
    #[test]
    fn a_caller_that_finds_another_sessions_request_waiting_wakes_the_sleeping_worker() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (queue, worker, probe) = start_probe(dir.path(), true);
        for round in 0..5 {
            until_the_worker_sleeps(&queue);
            // The other session queued and has not called `commit_now` yet.
            let other = queue.queue(register(&format!("o{round}")), crate::clock::now());
            let own = queue.queue(register(&format!("c{round}")), crate::clock::now());
            queue.commit_now(1);
            assert_eq!(wait_within(own), LedgerReply::Registered(Ok(())));
            assert_eq!(wait_within(other), LedgerReply::Registered(Ok(())));
        }
        let threads = probe.threads.lock().unwrap().clone();
        assert_eq!(threads, ["txsock-ledger"; 5], "the caller never commits");
        drop(queue);
        join_within(worker);
    }

    /// The commit count is the store's transactions (review item 14): a batch that the
    /// store committed in three parts counts three, one that failed counts none, a whole
    /// one counts one.
    #[test]
    fn the_commit_count_is_the_transactions_the_store_committed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (queue, worker, probe) = start_probe(dir.path(), false);
        let commits = || queue.stats.commits.load(Ordering::Relaxed);
        probe.transactions.store(3, Ordering::SeqCst);
        let reply = queue.queue(register("alice"), crate::clock::now());
        queue.commit_now(1);
        assert_eq!(wait_within(reply), LedgerReply::Registered(Ok(())));
        assert_eq!(commits(), 3);
        probe.transactions.store(1, Ordering::SeqCst);
        probe.panic_next.store(true, Ordering::SeqCst);
        let reply = queue.queue(register("bob"), crate::clock::now());
        queue.commit_now(1);
        assert_eq!(wait_within(reply), LedgerReply::Unavailable);
        assert_eq!(commits(), 3, "a failed batch committed no transaction");
        let reply = queue.queue(register("bob"), crate::clock::now());
        queue.commit_now(1);
        assert_eq!(wait_within(reply), LedgerReply::Registered(Ok(())));
        assert_eq!(commits(), 4);
        drop(queue);
        join_within(worker);
    }
}
