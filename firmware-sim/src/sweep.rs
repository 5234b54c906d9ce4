//! The simulator as a fault explorer: many scenarios drawn from one master seed, each run
//! and checked, every failure printed as the command that replays it.
//!
//! A scenario is a whole [`SimConfig`]: link loss (0 to 50 %), reordering (0 to 20 %),
//! corruption (0 to 5 %), delay, MTU, sometimes an outage, 1 to 8 clients, up to
//! [`MAX_TRANSFERS`] transfers, and sometimes the device restarting (its ledger kept), the
//! clients' clock jumping, or clients resetting their own connections ([`Faults`]). Scenario
//! `i` of master seed `S` is always the same, so a failure found once is found again.
//!
//! Each run must end without an error and be [`clean`](SimReport::clean): every transfer's
//! receipt verified, every transfer committed exactly once, nothing else in the journal, money
//! conserved. Every [`SweepConfig::repeat_every`]-th scenario runs twice and must give the
//! same transcript hash both times.
//!
//! [`command`] turns a scenario into the `txsock-firmware-sim` command line that replays it:
//! probabilities are printed in Rust's shortest round-trip form and times in whole seconds, so
//! the binary rebuilds exactly the same configuration.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration as WallDuration;

use txsock_core::Duration;

use crate::link::{LinkConfig, Probability, MIN_MTU};
use crate::sim::{run, Faults, SimConfig, SimReport, MAX_MTU};

/// The most transfers a drawn scenario makes.
pub const MAX_TRANSFERS: u64 = 250;

/// The most clients a drawn scenario has.
pub const MAX_SWEEP_CLIENTS: u64 = 8;

/// A sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepConfig {
    /// Scenarios to run.
    pub scenarios: u64,
    /// The master seed every scenario is drawn from.
    pub seed: u64,
    /// Worker threads.
    pub jobs: usize,
    /// Every this many scenarios, one runs twice and must give the same transcript (0: never).
    pub repeat_every: u64,
    /// Every scenario's device keeps its ledger on simulated flash ([`SimConfig::flash`]).
    pub flash: bool,
}

/// A scenario that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepFailure {
    /// Its index in the sweep.
    pub index: u64,
    /// The command that replays it.
    pub command: String,
    /// What went wrong.
    pub problem: String,
}

/// What a sweep found.
#[derive(Debug, Clone)]
pub struct SweepReport {
    /// The sweep.
    pub config: SweepConfig,
    /// Failed scenarios, in index order.
    pub failures: Vec<SweepFailure>,
    /// Scenarios run twice to compare transcripts.
    pub repeated: u64,
    /// Transfers made, over all scenarios.
    pub transfers: u64,
    /// Wall-clock time.
    pub wall: WallDuration,
}

impl std::fmt::Display for SweepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sweep: {} scenarios, {} failed, seed {}, {:.1} s",
            self.config.scenarios,
            self.failures.len(),
            self.config.seed,
            self.wall.as_secs_f64()
        )
    }
}

/// A SplitMix64 stream: the scenario's draws.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with chance `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A probability of at most `max_ppm` parts per million, as the command line gives it.
    fn probability(&mut self, max_ppm: u64) -> f64 {
        self.range(0, max_ppm) as f64 / 1e6
    }
}

/// Scenario `index` of master seed `seed`.
pub fn scenario(seed: u64, index: u64) -> SimConfig {
    let mut d = Draw(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93));
    d.next();
    let loss = d.probability(500_000);
    let reorder = d.probability(200_000);
    let corrupt = d.probability(50_000);
    let delay_ms = d.range(1, 250) as u32;
    let mtu = match d.range(0, 9) {
        0 => MIN_MTU,
        1 => d.range(MIN_MTU as u64, 256) as usize,
        2..=6 => 576,
        _ => d.range(256, MAX_MTU as u64) as usize,
    };
    let outage_ms = if d.chance(25) {
        (d.range(0, 120) * 1000, d.range(1, 900) * 1000)
    } else {
        (0, 0)
    };
    let clients = d.range(1, MAX_SWEEP_CLIENTS) as usize;
    let transfers = d.range(1, MAX_TRANSFERS) as u32;
    let mut faults = Faults::default();
    if d.chance(20) {
        let first = d.range(0, 300);
        faults.restarts.push(Duration::from_secs(first));
        if d.chance(30) {
            faults
                .restarts
                .push(Duration::from_secs(first + d.range(1, 300)));
        }
    }
    if d.chance(15) {
        let at = Duration::from_secs(d.range(0, 120));
        let by = d.range(0, 2 * 3600) as i64 - 600;
        faults.clock_jump = Some((at, by * 1000));
    }
    if d.chance(20) {
        faults.resets = d.range(1, 3) as u32;
    }
    SimConfig {
        link: LinkConfig {
            loss: Probability::new(loss),
            reorder: Probability::new(reorder),
            corrupt: Probability::new(corrupt),
            delay_ms,
            mtu,
            outage_ms,
            ..LinkConfig::default()
        },
        transfers,
        clients,
        seed: d.next() >> 11,
        faults,
        ..SimConfig::default()
    }
}

/// The `txsock-firmware-sim` command line that runs `config` (for configurations that
/// [`scenario`] draws: stagger, retry and time limit at their defaults).
pub fn command(config: &SimConfig) -> String {
    let l = &config.link;
    let p = probability;
    let mut c = format!(
        "txsock-firmware-sim --transfers {} --clients {} --loss {} --reorder {} --corrupt {} \
         --delay {} --mtu {}",
        config.transfers,
        config.clients,
        p(l.loss),
        p(l.reorder),
        p(l.corrupt),
        l.delay_ms,
        l.mtu
    );
    if l.outage_ms.1 > 0 {
        c += &format!(
            " --outage {}:{}",
            l.outage_ms.0 / 1000,
            l.outage_ms.1 / 1000
        );
    }
    let f = &config.faults;
    if !f.restarts.is_empty() {
        let times: Vec<String> = f
            .restarts
            .iter()
            .map(|t| (t.millis() / 1000).to_string())
            .collect();
        c += &format!(" --restart-at {}", times.join(","));
    }
    if let Some((at, by)) = f.clock_jump {
        c += &format!(" --clock-jump {}:{}", at.millis() / 1000, by / 1000);
    }
    if f.resets > 0 {
        c += &format!(" --resets {}", f.resets);
    }
    if config.flash {
        c += " --flash";
    }
    c + &format!(" --seed {}", config.seed)
}

/// `p` as the shortest decimal that the command line turns back into exactly `p`.
fn probability(p: Probability) -> String {
    (1..=12)
        .map(|digits| format!("{:.digits$}", p.get()))
        .find(|text| text.parse().map(Probability::new) == Ok(p))
        .unwrap_or_else(|| p.get().to_string())
}

/// Runs `config` and checks it; `repeat` runs it twice and compares the transcripts.
pub fn check(config: &SimConfig, repeat: bool) -> Result<SimReport, String> {
    let once = || -> Result<SimReport, String> {
        let report = match panic::catch_unwind(AssertUnwindSafe(|| run(config))) {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => return Err(format!("simulation failed: {e}")),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                return Err(format!("panicked: {message}"));
            }
        };
        if !report.clean() {
            let first = report.to_string();
            let summary = first.lines().next().unwrap_or_default();
            return Err(format!("not clean: {summary}"));
        }
        Ok(report)
    };
    let first = once()?;
    if repeat {
        let second = once()?;
        if second.transcript != first.transcript {
            return Err(format!(
                "not deterministic: transcript {} then {}",
                first.transcript_hex(),
                second.transcript_hex()
            ));
        }
    }
    Ok(first)
}

/// Runs the sweep on `config.jobs` threads. `progress(done, failed)` is called from the
/// calling thread about every `tick` while the sweep runs, and once at the end. A scenario
/// that panics is a failure with the panic's message (the panic hook still prints it).
pub fn sweep(
    config: &SweepConfig,
    tick: WallDuration,
    mut progress: impl FnMut(u64, u64),
) -> SweepReport {
    let wall = std::time::Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let repeated = AtomicU64::new(0);
    let transfers = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let failed = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..config.jobs.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= config.scenarios {
                    return;
                }
                let mut sim = scenario(config.seed, index);
                sim.flash = config.flash;
                let repeat = config.repeat_every > 0 && index % config.repeat_every == 0;
                transfers.fetch_add(u64::from(sim.transfers), Ordering::Relaxed);
                if let Err(problem) = check(&sim, repeat) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let failure = SweepFailure {
                        index,
                        command: command(&sim),
                        problem,
                    };
                    failures
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(failure);
                }
                if repeat {
                    repeated.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        let mut reported = std::time::Instant::now();
        while done.load(Ordering::Relaxed) < config.scenarios {
            std::thread::sleep(tick.min(WallDuration::from_millis(20)));
            if reported.elapsed() >= tick {
                reported = std::time::Instant::now();
                progress(done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
            }
        }
    });
    progress(config.scenarios, failed.load(Ordering::Relaxed));
    let mut failures = failures
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    failures.sort_by_key(|f| f.index);
    SweepReport {
        config: *config,
        failures,
        repeated: repeated.into_inner(),
        transfers: transfers.into_inner(),
        wall: wall.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A printed probability is short and parses back to exactly the same [`Probability`],
    /// so a printed command replays its scenario.
    #[test]
    fn printed_probabilities_parse_back_exactly() {
        for ppm in (0..=1_000_000u32)
            .step_by(997)
            .chain([1, 999_999, 1_000_000])
        {
            let p = Probability::new(f64::from(ppm) / 1e6);
            let text = probability(p);
            assert_eq!(text.parse().map(Probability::new), Ok(p), "{text}");
            assert!(text.len() <= 8, "{text}");
        }
    }
}
