//! What a run measured: a latency histogram, counters by outcome, and a time series of
//! fixed intervals (throughput, latency percentiles, errors, server memory).

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use txsock_core::ErrorCode;

/// Highest latency the histograms hold, in microseconds (larger values are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;

fn histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits (1 <= low, high >= 2 * low, 3 digits).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Counters for one interval, or for the whole run.
#[derive(Clone)]
pub struct Counts {
    /// Latency of verified receipts, microseconds.
    pub latency: Histogram<u64>,
    /// Receipts with result `committed`.
    pub committed: u64,
    /// Receipts whose result is a refusal, by code.
    pub refused: BTreeMap<String, u64>,
    /// Load errors by name: `error` answers, closes, lost connections, integrity failures.
    pub errors: BTreeMap<String, u64>,
    /// What attack connections got back, by attack and answer.
    pub answers: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            latency: histogram(),
            committed: 0,
            refused: BTreeMap::new(),
            errors: BTreeMap::new(),
            answers: BTreeMap::new(),
        }
    }
}

impl Counts {
    fn merge(&mut self, other: &Counts) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.committed += other.committed;
        for (k, v) in &other.refused {
            *self.refused.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (attack, answers) in &other.answers {
            let mine = self.answers.entry(attack.clone()).or_default();
            for (k, v) in answers {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
    }
}

/// One interval of the time series.
#[derive(Clone)]
pub struct Point {
    /// End of the interval, seconds since the run started.
    pub t: f64,
    /// Length of the interval, seconds.
    pub secs: f64,
    /// Committed transfers in the interval.
    pub committed: u64,
    /// Latency percentiles of the interval (µs): p50, p90, p99, max; zero if no receipts.
    pub p50: u64,
    /// p90.
    pub p90: u64,
    /// p99.
    pub p99: u64,
    /// Highest.
    pub max: u64,
    /// Load errors by name.
    pub errors: BTreeMap<String, u64>,
    /// Attack answers, `attack/answer` -> count.
    pub answers: BTreeMap<String, u64>,
    /// Server resident memory at the end of the interval, KiB.
    pub rss_kib: Option<u64>,
}

/// Collects results from all client tasks. Cheap to call from many tasks: one short lock.
pub struct Recorder {
    start: Mutex<Instant>,
    window: Mutex<(Instant, Counts)>,
    total: Mutex<Counts>,
    series: Mutex<Vec<Point>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        let now = Instant::now();
        Recorder {
            start: Mutex::new(now),
            window: Mutex::new((now, Counts::default())),
            total: Mutex::new(Counts::default()),
            series: Mutex::new(Vec::new()),
        }
    }

    /// Starts again from nothing (after a setup phase that is not part of the figures).
    pub fn reset(&self) {
        let now = Instant::now();
        *self.start.lock().unwrap_or_else(|p| p.into_inner()) = now;
        *self.window.lock().unwrap_or_else(|p| p.into_inner()) = (now, Counts::default());
        *self.total.lock().unwrap_or_else(|p| p.into_inner()) = Counts::default();
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Seconds since the run started.
    pub fn elapsed(&self) -> f64 {
        self.start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            .as_secs_f64()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Counts) -> T) -> T {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut w.1)
    }

    /// A verified receipt after `latency`.
    pub fn receipt(&self, latency: Duration, result: Result<(), ErrorCode>) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.with(|c| {
            c.latency.saturating_record(us);
            match result {
                Ok(()) => c.committed += 1,
                Err(code) => *c.refused.entry(code.name().to_string()).or_default() += 1,
            }
        });
    }

    /// A load error.
    pub fn error(&self, name: &str) {
        self.with(|c| *c.errors.entry(name.to_string()).or_default() += 1);
    }

    /// What an attack got back (`answer` is an error code name or a kind like `closed`).
    pub fn answer(&self, attack: &str, answer: &str) {
        self.answers(attack, answer, 1);
    }

    /// `n` answers at once.
    pub fn answers(&self, attack: &str, answer: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.with(|c| {
            *c.answers
                .entry(attack.to_string())
                .or_default()
                .entry(answer.to_string())
                .or_default() += n
        });
    }

    /// Closes the current interval: adds it to the totals and the series.
    pub fn tick(&self, rss_kib: Option<u64>) -> Point {
        let now = Instant::now();
        let (began, counts) = {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let began = std::mem::replace(&mut w.0, now);
            (began, std::mem::take(&mut w.1))
        };
        self.total
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .merge(&counts);
        let h = &counts.latency;
        let pct = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let point = Point {
            t: now
                .duration_since(*self.start.lock().unwrap_or_else(|p| p.into_inner()))
                .as_secs_f64(),
            secs: now.duration_since(began).as_secs_f64(),
            committed: counts.committed,
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: if h.is_empty() { 0 } else { h.max() },
            errors: counts.errors.clone(),
            answers: counts
                .answers
                .iter()
                .flat_map(|(a, m)| m.iter().map(move |(k, v)| (format!("{a}/{k}"), *v)))
                .collect(),
            rss_kib,
        };
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(point.clone());
        point
    }

    /// The totals so far (closed intervals only; call [`tick`](Self::tick) first).
    pub fn total(&self) -> Counts {
        self.total.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The time series so far.
    pub fn series(&self) -> Vec<Point> {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
