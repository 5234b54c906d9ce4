//! What a service manager sees of a running server (Unix): SIGHUP reloads, and the systemd
//! protocol around it (`RELOADING=1`/`READY=1`, `WATCHDOG=1`).
//!
//! **What SIGHUP reloads.** The audit logs are reopened (log rotation), the TLS certificate
//! and key are read again (renewal), and the settings are read again exactly as at start-up
//! (the same command line, environment and txsock.toml, so in practice what changed in
//! txsock.toml). Of those, the ones that only steer decisions taken later apply at once, to
//! every session from its next request or timer:
//! `log-filter`, `registration`, `min-iterations`, `idle-timeout`, `login-deadline`,
//! `max-bad-frames`, `lockout-after`, `address-lockout-after`, `lockout-base-ms`,
//! `lockout-max` and `forget-after`. The others size or place something that exists once
//! (the listening socket, the database, the metrics port, buffers, the connection limit,
//! the commit queue, the opening balance written into the ledger, the log format): a change
//! to one of them is logged as needing a restart, and the running value stays. A settings
//! file that no longer parses changes nothing and says why. The TLS handshake keeps the
//! `login-deadline` it started with.

use super::{notify_service_manager, ServeArgs, Server};
use crate::audit::Audit;
use crate::clock;
use crate::group_commit::{CommitQueue, PendingReply};
use anyhow::{Context, Result};
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use txsock_core::ledger::{LedgerReply, LedgerRequest};
use txsock_core::Username;

/// What a SIGHUP acts on.
pub(super) struct Reloader {
    /// The audit logs to reopen.
    pub(super) audit: Arc<Audit>,
    /// The TLS certificate to read again, if serving TLS.
    pub(super) tls: Option<crate::tls::ServerTls>,
    /// The server whose session policy changes.
    pub(super) server: Arc<Server>,
    /// The settings in force.
    pub(super) running: ServeArgs,
}

/// Handles SIGHUP until aborted. Registered before the listening line is printed, so a
/// SIGHUP is never the default action (exit). Abort the task before waiting for the ledger
/// worker to finish: it holds a ledger handle.
pub(super) fn reload_on_hangup(mut reloader: Reloader) -> Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reloader.reload();
        }
    }))
}

impl Reloader {
    fn reload(&mut self) {
        // systemd's Type=notify-reload wants the monotonic time with RELOADING=1.
        match NotifyState::monotonic_usec_now() {
            Ok(now) => notify_service_manager(&[NotifyState::Reloading, now]),
            Err(_) => notify_service_manager(&[NotifyState::Reloading]),
        }
        match self.audit.reopen() {
            Ok(()) => tracing::info!("SIGHUP received: audit logs reopened"),
            Err(e) => tracing::error!(
                "SIGHUP received: cannot reopen the audit logs ({e:#}); still writing to the old files"
            ),
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP received: TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    "SIGHUP received: cannot reload the TLS certificate ({e:#}); still using the old one"
                ),
            }
        }
        match crate::config::parse_from(std::env::args_os().collect()) {
            Ok(crate::Cli {
                command: crate::Command::Serve(new),
                verbose,
                quiet,
                log_format,
                ..
            }) => self.apply(new, i16::from(verbose) - i16::from(quiet), log_format),
            Ok(_) => tracing::error!(
                "SIGHUP received: the command line no longer reads as `serve`; settings unchanged"
            ),
            Err(e) => {
                let reason = e.to_string();
                let reason = reason
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                tracing::error!(
                    "SIGHUP received: settings not read again ({reason}); nothing changed"
                );
            }
        }
        notify_service_manager(&[NotifyState::Ready, NotifyState::Status("reloaded")]);
    }

    /// Applies the reloadable settings of `new` and reports the others that changed.
    fn apply(&mut self, new: ServeArgs, verbosity: i16, log_format: crate::logging::LogFormat) {
        let mut applied: Vec<String> = Vec::new();
        let mut restart: Vec<&str> = Vec::new();
        let old = &mut self.running;
        if old.log_filter != new.log_filter {
            match crate::logging::filter(verbosity, new.log_filter.as_deref())
                .and_then(crate::logging::reload_filter)
            {
                Ok(()) => {
                    applied.push(format!(
                        "log-filter = {:?}",
                        new.log_filter.as_deref().unwrap_or("")
                    ));
                    old.log_filter = new.log_filter.clone();
                }
                Err(e) => tracing::error!("SIGHUP received: log-filter not changed: {e}"),
            }
        }
        macro_rules! reload {
            ($($field:ident),*) => {$(
                if old.$field != new.$field {
                    applied.push(format!("{} = {:?}", stringify!($field).replace('_', "-"), new.$field));
                    old.$field = new.$field;
                }
            )*};
        }
        reload!(
            registration,
            min_iterations,
            idle_timeout,
            login_deadline,
            max_bad_frames,
            lockout_after,
            address_lockout_after,
            lockout_base_ms,
            lockout_max,
            forget_after
        );
        macro_rules! needs_restart {
            ($($name:literal: $old:expr, $new:expr);* $(;)?) => {$(
                if $old != $new {
                    restart.push($name);
                }
            )*};
        }
        needs_restart!(
            "listen": old.listen, new.listen;
            "data-dir or db": format!("{:?}", old.storage), format!("{:?}", new.storage);
            "opening-balance": old.opening_balance, new.opening_balance;
            "max-connections": old.max_connections, new.max_connections;
            "max-frame": old.max_frame, new.max_frame;
            "max-output": old.max_output, new.max_output;
            "write-timeout": old.write_timeout, new.write_timeout;
            "nonces": old.nonces, new.nonces;
            "max-batch": old.max_batch, new.max_batch;
            "tls-cert or tls-key": format!("{:?}", old.tls), format!("{:?}", new.tls);
            "metrics": old.metrics, new.metrics;
            "pipeline": old.pipeline, new.pipeline;
            "log-format": crate::logging::current_format(), log_format;
        );
        // Only reloadable fields differ from what the sessions were built with, so the
        // sizes (frame, nonces, pipeline) in the policy stay those of the running server.
        self.server.shared().config = old.core_config();
        for setting in &applied {
            tracing::info!("SIGHUP received: applied {setting}");
        }
        for setting in &restart {
            tracing::warn!(
                "SIGHUP received: `{setting}` changed but needs a restart; the running value stays"
            );
        }
        if applied.is_empty() && restart.is_empty() {
            tracing::info!("SIGHUP received: settings read again; none changed");
        }
    }
}

/// With `WATCHDOG_USEC` set (systemd `WatchdogSec=`), sends `WATCHDOG=1` every half of it,
/// each time after a read through the ledger thread has been answered ([`probe_ledger`]):
/// a server whose store is held (a commit stuck on a hung disk or a lock that never comes,
/// on the ledger thread or a session's) or whose ledger thread is gone stops petting the
/// watchdog, logs a warning each period, and systemd restarts it. `None` without a
/// watchdog. Abort the task before waiting for the ledger worker to finish: it holds a
/// ledger handle.
pub(super) fn watchdog(server: Arc<Server>) -> Option<JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()? / 2;
    tracing::info!(
        interval_ms = period.as_millis() as u64,
        "systemd watchdog enabled: WATCHDOG=1 after each ledger probe"
    );
    let ledger = server.ledger.clone();
    drop(server);
    Some(tokio::spawn(probe_ledger(ledger, period, |answered| {
        if answered {
            notify_service_manager(&[NotifyState::Watchdog]);
        }
    })))
}

/// Every `period`, a read of one balance through `ledger`, then `beat(true)` once it is
/// answered within `period`, else a warning and `beat(false)`.
///
/// The probe is always committed by the ledger thread ([`CommitQueue::hand_to_worker`]),
/// never on this task: it then finds a dead ledger thread as well as a held store, and a
/// store that hangs leaves this task free to warn. A probe not answered in time stays
/// the one awaited (no second one is queued behind it), so a stuck store holds at most
/// one probe, not one per period.
async fn probe_ledger(ledger: CommitQueue, period: Duration, mut beat: impl FnMut(bool)) {
    let probe = Username::parse("txsock-watchdog").expect("a valid username");
    let period = period.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting: Option<PendingReply> = None;
    loop {
        tick.tick().await;
        let answer = waiting.get_or_insert_with(|| {
            let request = LedgerRequest::Balance {
                user: probe.clone(),
            };
            let answer = ledger.queue(request, clock::now());
            ledger.hand_to_worker();
            answer
        });
        match tokio::time::timeout(period, answer).await {
            Ok(reply) => {
                waiting = None;
                if matches!(reply, LedgerReply::Balance(_)) {
                    beat(true);
                } else {
                    tracing::warn!(
                        "watchdog: the ledger did not answer its probe; WATCHDOG=1 withheld"
                    );
                    beat(false);
                }
            }
            Err(_) => {
                tracing::warn!(
                    "watchdog: the ledger has not answered its probe in {} ms; WATCHDOG=1 withheld",
                    period.as_millis()
                );
                beat(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_commit::probe::{start_probe, until_the_worker_sleeps, ProbeHandle};
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    /// Lets the held commit go on when dropped, also when an assertion fails first, so that
    /// no runtime worker stays blocked in the store.
    struct Release(ProbeHandle);

    impl Drop for Release {
        fn drop(&mut self) {
            self.0.release();
        }
    }

    /// Waits (bounded) until `beats` holds `n` beats.
    fn until_beats(beats: &Mutex<Vec<bool>>, n: usize, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while beats.lock().unwrap().len() < n {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A store that hangs in the probe's commit (review items 5 and 6), whether it commits
    /// locally (SQLite) or not: the watchdog keeps warning every period instead of hanging
    /// inside the store, and queues no second probe behind the one that waits (the queue
    /// stays empty: the probe is in the ledger thread's commit, never this task's). Once the
    /// store moves, the probe is answered and the beat comes back.
    #[test]
    fn a_stuck_store_withholds_the_beat_each_period_and_holds_one_probe() {
        for locally in [true, false] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (queue, worker, probe) = start_probe(dir.path(), locally);
            until_the_worker_sleeps(&queue);
            // Two workers: a store that commits locally may then be committed inline.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap();
            probe.hold_next.store(true, Ordering::SeqCst);
            // Dropped before the runtime, which could not end with a worker in the store.
            let release = Release(probe.clone());
            let beats = Arc::new(Mutex::new(Vec::new()));
            let seen = beats.clone();
            let task = runtime.spawn(probe_ledger(
                queue.clone(),
                Duration::from_millis(20),
                move |answered| seen.lock().unwrap().push(answered),
            ));
            until_beats(
                &beats,
                4,
                &format!("locally={locally}: the watchdog stopped warning (it hangs in the store)"),
            );
            assert!(
                beats.lock().unwrap().iter().all(|answered| !answered),
                "locally={locally}"
            );
            // On a loaded machine the ledger thread may take the probe after the beats.
            probe.until_commits_started(1);
            assert_eq!(
                queue.queued(),
                0,
                "locally={locally}: probes queued behind the stuck one"
            );
            assert_eq!(
                *probe.threads.lock().unwrap(),
                ["txsock-ledger"],
                "locally={locally}: one probe, in the ledger thread's commit"
            );
            drop(release);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !beats.lock().unwrap().contains(&true) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "locally={locally}: no beat after the store moved"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            task.abort();
            drop(runtime);
            let threads = probe.threads.lock().unwrap().clone();
            assert!(
                threads.iter().all(|t| t == "txsock-ledger"),
                "locally={locally}: {threads:?}"
            );
            drop(queue);
            worker.join();
        }
    }
}
