//! A run's results as text, as JSON (`--json`, with serde_json) and as one self-contained HTML
//! page with SVG plots (`--report`, written by hand: no dependencies).

use super::attack::Findings;
use super::record::{Counts, Point};
use super::target::ServerStats;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Memory of one phase of a run (KiB).
#[derive(Debug, Clone, Default)]
pub struct PhaseMemory {
    /// What ran.
    pub name: String,
    /// Start, seconds since the run started.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Resident memory when it began.
    pub before_kib: Option<u64>,
    /// Highest sample while it ran.
    pub peak_kib: Option<u64>,
    /// After it ended (and settled).
    pub after_kib: Option<u64>,
}

impl PhaseMemory {
    /// Peak minus before.
    pub fn growth_kib(&self) -> Option<i64> {
        Some(self.peak_kib? as i64 - self.before_kib? as i64)
    }
}

/// Results of `connections`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionsOutcome {
    /// Asked for.
    pub count: usize,
    /// Logged in.
    pub logged_in: usize,
    /// Still open at the end of the hold.
    pub still_open: usize,
    /// Failures by reason.
    pub failed: BTreeMap<String, u64>,
    /// Seconds to log all in.
    pub setup_secs: f64,
    /// Server memory before the first connection.
    pub before_kib: Option<u64>,
    /// Server memory with all of them held.
    pub held_kib: Option<u64>,
}

impl ConnectionsOutcome {
    /// Server bytes per held connection.
    pub fn per_connection_bytes(&self) -> Option<f64> {
        let grown = self.held_kib? as f64 - self.before_kib? as f64;
        (self.logged_in > 0).then(|| grown * 1024.0 / self.logged_in as f64)
    }
}

/// Everything a run measured.
#[derive(Default)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// Parameters, for the record.
    pub params: Vec<(String, String)>,
    /// Caveats.
    pub notes: Vec<String>,
    /// Totals of the run.
    pub totals: Counts,
    /// Time series.
    pub series: Vec<Point>,
    /// Memory by phase.
    pub phases: Vec<PhaseMemory>,
    /// Length of the transfer window (load, mix), seconds.
    pub window_secs: f64,
    /// Transfers committed within the window.
    pub committed_in_window: u64,
    /// `connections` results.
    pub connections: Option<ConnectionsOutcome>,
    /// Attack findings by attack.
    pub findings: BTreeMap<String, Findings>,
    /// What the spawned server reported when it stopped.
    pub server: ServerStats,
}

impl Outcome {
    fn transfers_per_second(&self) -> Option<f64> {
        (self.window_secs > 0.0).then(|| self.committed_in_window as f64 / self.window_secs)
    }

    fn percentile(&self, q: f64) -> Option<u64> {
        let h = &self.totals.latency;
        (!h.is_empty()).then(|| h.value_at_quantile(q))
    }

    /// The phase whose memory growth the scenario is about (mix: the attacks).
    fn key_phase(&self) -> Option<&PhaseMemory> {
        self.phases
            .iter()
            .find(|p| p.name.starts_with("attacks"))
            .or(self.phases.first())
    }

    fn transfers_per_commit(&self) -> Option<f64> {
        let (t, c) = (self.server.transfers?, self.server.commits?);
        (c > 0).then(|| t as f64 / c as f64)
    }

    /// The figures a benchmark reads: one flat object.
    fn headline(&self) -> Headline {
        let key = self.key_phase();
        Headline {
            transfers_per_second: num(self.transfers_per_second()),
            latency_p50_us: self.percentile(0.5),
            latency_p99_us: self.percentile(0.99),
            memory_growth_kib: key.and_then(PhaseMemory::growth_kib),
            memory_after_growth_kib: key
                .and_then(|p| Some(p.after_kib? as i64 - p.before_kib? as i64)),
            transfers_per_commit: num(self.transfers_per_commit()),
            largest_batch: self.server.largest_batch,
            violations: self
                .findings
                .values()
                .flat_map(|f| f.violations.values())
                .sum(),
            connections: self.connections.as_ref().map(|c| HeadlineConnections {
                connections_logged_in: c.logged_in,
                held_kib: c.held_kib,
                per_connection_bytes: num(c.per_connection_bytes()),
            }),
        }
    }
}

// ------------------------------------------------------------------------------------------
// JSON

/// A figure as the report writes it: rounded to three decimals (plenty for every figure
/// here), as an integer when whole, and `null` when not finite.
#[derive(Debug, Clone, Copy)]
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.0.is_finite() {
            return s.serialize_none();
        }
        let rounded = (self.0 * 1000.0).round() / 1000.0;
        // Whole numbers below 2^53 are exact in both types.
        if rounded.fract() == 0.0 && rounded.abs() < 9.0e15 {
            s.serialize_i64(rounded as i64)
        } else {
            s.serialize_f64(rounded)
        }
    }
}

fn num(v: Option<f64>) -> Option<Num> {
    v.map(Num)
}

/// A length of time as a parameter's value: seconds, as few digits as it needs (`3`,
/// `0.5`); its key ends in `_s`.
pub fn seconds(d: std::time::Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// The parameters as one JSON object, in their order, with typed values: a whole number or
/// a decimal as a number, `none` as null, anything else as a string. Keys are snake_case
/// and name their unit (`duration_s`).
struct Pairs<'a>(&'a [(String, String)]);

/// One parameter's value, typed for JSON.
enum ParamValue<'a> {
    Integer(u64),
    Decimal(Num),
    Null,
    Text(&'a str),
}

impl<'a> ParamValue<'a> {
    fn of(text: &'a str) -> ParamValue<'a> {
        if let Ok(n) = text.parse::<u64>() {
            ParamValue::Integer(n)
        } else if let Some(x) = text.parse::<f64>().ok().filter(|x| x.is_finite()) {
            ParamValue::Decimal(Num(x))
        } else if text == "none" {
            ParamValue::Null
        } else {
            ParamValue::Text(text)
        }
    }
}

impl Serialize for ParamValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ParamValue::Integer(n) => s.serialize_u64(*n),
            ParamValue::Decimal(x) => x.serialize(s),
            ParamValue::Null => s.serialize_none(),
            ParamValue::Text(t) => s.serialize_str(t),
        }
    }
}

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, ParamValue::of(v))))
    }
}

/// A parameter for people: `duration_s`, `3` becomes `duration`, `3 s`; `open_file_limit`
/// becomes `open file limit`.
fn param_text(key: &str, value: &str) -> (String, String) {
    match key.strip_suffix("_s") {
        Some(key) => (key.replace('_', " "), format!("{value} s")),
        None => match key.strip_suffix("_bytes") {
            Some(key) => (key.replace('_', " "), format!("{value} bytes")),
            None => (key.replace('_', " "), value.to_string()),
        },
    }
}

/// A figure for people: whole numbers without decimals (`rounds: 3`), others with one.
fn figure_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

/// Whether an attack's run is a pass: none of its violations happened.
fn passed(f: &Findings) -> bool {
    f.violations.values().all(|n| *n == 0)
}

/// The run as `--json` prints it; field order is output order.
#[derive(Serialize)]
struct Report<'a> {
    scenario: &'a str,
    parameters: Pairs<'a>,
    headline: Headline,
    transfers: Transfers<'a>,
    latency_us: Latency,
    errors: &'a BTreeMap<String, u64>,
    attacks: BTreeMap<&'a str, Attack<'a>>,
    memory: Vec<Phase<'a>>,
    connections: Option<Connections<'a>>,
    server: Server<'a>,
    notes: &'a [String],
    series: Vec<SeriesPoint<'a>>,
}

/// The figures a benchmark reads (`cargo xtask bench` finds them by key).
#[derive(Serialize)]
struct Headline {
    transfers_per_second: Option<Num>,
    latency_p50_us: Option<u64>,
    latency_p99_us: Option<u64>,
    memory_growth_kib: Option<i64>,
    memory_after_growth_kib: Option<i64>,
    transfers_per_commit: Option<Num>,
    largest_batch: Option<u64>,
    violations: u64,
    /// Only for the `connections` scenario.
    #[serde(flatten)]
    connections: Option<HeadlineConnections>,
}

#[derive(Serialize)]
struct HeadlineConnections {
    connections_logged_in: usize,
    held_kib: Option<u64>,
    per_connection_bytes: Option<Num>,
}

#[derive(Serialize)]
struct Transfers<'a> {
    committed: u64,
    committed_in_window: u64,
    window_s: Num,
    per_second: Option<Num>,
    refused: &'a BTreeMap<String, u64>,
}

/// Receipt latency in microseconds; only the count when there were none.
#[derive(Serialize)]
struct Latency {
    count: u64,
    #[serde(flatten)]
    quantiles: Option<Quantiles>,
}

#[derive(Serialize)]
struct Quantiles {
    p50: u64,
    p90: u64,
    p99: u64,
    p99_9: u64,
    max: u64,
    mean: Num,
}

#[derive(Serialize)]
struct Attack<'a> {
    /// No violation: the server did what the protocol promises under this attack.
    passed: bool,
    answers: &'a BTreeMap<String, u64>,
    violations: &'a BTreeMap<String, u64>,
    figures: BTreeMap<&'a str, Num>,
}

#[derive(Serialize)]
struct Phase<'a> {
    name: &'a str,
    start_s: Num,
    end_s: Num,
    before_kib: Option<u64>,
    peak_kib: Option<u64>,
    after_kib: Option<u64>,
    growth_kib: Option<i64>,
}

#[derive(Serialize)]
struct Connections<'a> {
    count: usize,
    logged_in: usize,
    still_open: usize,
    failed: &'a BTreeMap<String, u64>,
    setup_s: Num,
    before_kib: Option<u64>,
    held_kib: Option<u64>,
    per_connection_bytes: Option<Num>,
}

#[derive(Serialize)]
struct Server<'a> {
    line: Option<&'a str>,
    transfers: Option<u64>,
    commits: Option<u64>,
    largest_batch: Option<u64>,
    clean_exit: bool,
}

#[derive(Serialize)]
struct SeriesPoint<'a> {
    t: Num,
    committed: u64,
    per_second: Num,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
    rss_kib: Option<u64>,
    errors: &'a BTreeMap<String, u64>,
    answers: &'a BTreeMap<String, u64>,
}

/// The run as one JSON object.
pub fn json(o: &Outcome) -> String {
    let h = &o.totals.latency;
    let no_findings = Findings::default();
    let report = Report {
        scenario: &o.scenario,
        parameters: Pairs(&o.params),
        headline: o.headline(),
        transfers: Transfers {
            committed: o.totals.committed,
            committed_in_window: o.committed_in_window,
            window_s: Num(o.window_secs),
            per_second: num(o.transfers_per_second()),
            refused: &o.totals.refused,
        },
        latency_us: Latency {
            count: h.len(),
            quantiles: (!h.is_empty()).then(|| Quantiles {
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p99_9: h.value_at_quantile(0.999),
                max: h.max(),
                mean: Num(h.mean()),
            }),
        },
        errors: &o.totals.errors,
        attacks: o
            .totals
            .answers
            .iter()
            .map(|(name, answers)| {
                let f = o.findings.get(name).unwrap_or(&no_findings);
                let attack = Attack {
                    passed: passed(f),
                    answers,
                    violations: &f.violations,
                    figures: f
                        .figures
                        .iter()
                        .map(|(k, v)| (k.as_str(), Num(*v)))
                        .collect(),
                };
                (name.as_str(), attack)
            })
            .collect(),
        memory: o
            .phases
            .iter()
            .map(|p| Phase {
                name: &p.name,
                start_s: Num(p.start),
                end_s: Num(p.end),
                before_kib: p.before_kib,
                peak_kib: p.peak_kib,
                after_kib: p.after_kib,
                growth_kib: p.growth_kib(),
            })
            .collect(),
        connections: o.connections.as_ref().map(|c| Connections {
            count: c.count,
            logged_in: c.logged_in,
            still_open: c.still_open,
            failed: &c.failed,
            setup_s: Num(c.setup_secs),
            before_kib: c.before_kib,
            held_kib: c.held_kib,
            per_connection_bytes: num(c.per_connection_bytes()),
        }),
        server: Server {
            line: o.server.line.as_deref(),
            transfers: o.server.transfers,
            commits: o.server.commits,
            largest_batch: o.server.largest_batch,
            clean_exit: o.server.clean_exit,
        },
        notes: &o.notes,
        series: o
            .series
            .iter()
            .map(|p| SeriesPoint {
                t: Num(p.t),
                committed: p.committed,
                per_second: Num(p.committed as f64 / p.secs.max(1e-9)),
                p50_us: p.p50,
                p90_us: p.p90,
                p99_us: p.p99,
                max_us: p.max,
                rss_kib: p.rss_kib,
                errors: &p.errors,
                answers: &p.answers,
            })
            .collect(),
    };
    // Every key is a string and every value serialises, so this cannot fail.
    serde_json::to_string(&report).expect("the report serialises")
}

// ------------------------------------------------------------------------------------------
// Text

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn signed_mib(kib: Option<i64>) -> String {
    kib.map_or("-".into(), |k| format!("{:+.2} MiB", k as f64 / 1024.0))
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The human summary printed at the end of a run.
pub fn text(o: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "txsock stress {}", o.scenario);
    for (k, v) in &o.params {
        let (k, v) = param_text(k, v);
        let _ = writeln!(s, "  {k}: {v}");
    }
    if let Some(rate) = o.transfers_per_second() {
        let _ = writeln!(
            s,
            "transfers: {} committed in {:.1} s = {rate:.0}/s (verified receipts)",
            o.committed_in_window, o.window_secs
        );
        for (code, n) in &o.totals.refused {
            let _ = writeln!(s, "  refused in receipts: {code} x{n}");
        }
    }
    let h = &o.totals.latency;
    if !h.is_empty() {
        let _ = writeln!(
            s,
            "latency: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} receipts)",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            h.len()
        );
    }
    if !o.totals.errors.is_empty() {
        let _ = writeln!(s, "load errors:");
        for (k, v) in &o.totals.errors {
            let _ = writeln!(s, "  {k} x{v}");
        }
    }
    if let Some(c) = &o.connections {
        let _ = writeln!(
            s,
            "connections: {} of {} logged in ({:.1} s), {} still open after the hold",
            c.logged_in, c.count, c.setup_secs, c.still_open
        );
        for (k, v) in &c.failed {
            let _ = writeln!(s, "  failed: {k} x{v}");
        }
        let _ = writeln!(
            s,
            "server memory: {} before, {} with them held = {} per connection",
            mib(c.before_kib),
            mib(c.held_kib),
            c.per_connection_bytes()
                .map_or("-".into(), |b| format!("{:.0} bytes", b))
        );
    }
    for (attack, answers) in &o.totals.answers {
        let _ = writeln!(s, "{attack}: the server answered");
        for (k, v) in answers {
            let _ = writeln!(s, "  {k} x{v}");
        }
        if let Some(f) = o.findings.get(attack) {
            for (k, v) in &f.figures {
                let _ = writeln!(s, "  ({k}: {})", figure_text(*v));
            }
            for (k, v) in &f.violations {
                let _ = writeln!(s, "  VIOLATION {k} x{v}");
            }
        }
    }
    // One verdict line per attack, as the demo has: pass when no violation happened.
    let attacks: std::collections::BTreeSet<&String> =
        o.totals.answers.keys().chain(o.findings.keys()).collect();
    if !attacks.is_empty() {
        let _ = writeln!(s, "verdicts:");
        let none = Findings::default();
        for attack in attacks {
            let f = o.findings.get(attack).unwrap_or(&none);
            if passed(f) {
                let checked: Vec<&str> = f.violations.keys().map(String::as_str).collect();
                let what = if checked.is_empty() {
                    "no violation".to_string()
                } else {
                    format!("no violation ({} checked)", checked.join(", "))
                };
                let _ = writeln!(s, "  \u{2713} {attack}: passed, {what}");
            } else {
                let failed: Vec<String> = f
                    .violations
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| format!("{k} x{n}"))
                    .collect();
                let _ = writeln!(s, "  \u{2717} {attack}: FAILED: {}", failed.join(", "));
            }
        }
    }
    for p in o.phases.iter().filter(|p| p.before_kib.is_some()) {
        let _ = writeln!(
            s,
            "server memory, {}: before {}, peak {} ({}), after {}",
            p.name,
            mib(p.before_kib),
            mib(p.peak_kib),
            signed_mib(p.growth_kib()),
            mib(p.after_kib)
        );
    }
    if let Some(line) = &o.server.line {
        let per = o
            .transfers_per_commit()
            .map_or(String::new(), |t| format!(" ({t:.1} transfers per commit"));
        let largest = o
            .server
            .largest_batch
            .map_or(String::new(), |b| format!(", largest batch {b} requests"));
        let close = if per.is_empty() { "" } else { ")" };
        let _ = writeln!(s, "server: {line}{per}{largest}{close}");
    }
    for n in &o.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

// ------------------------------------------------------------------------------------------
// HTML and SVG

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// One line of a chart.
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A step of 1, 2 or 5 times a power of ten giving about `n` ticks up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart as inline SVG. `bands` shade x ranges (phases); `log_y` uses a log scale.
fn chart(
    title: &str,
    y_label: &str,
    lines: &[Line],
    log_y: bool,
    bands: &[(f64, f64, String)],
) -> String {
    const W: f64 = 960.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const B: f64 = 45.0;
    // Legend entries flow into rows above the plot area.
    let mut legend = Vec::new();
    let (mut x, mut row) = (L, 0.0);
    for line in lines {
        let width = 26.0 + 6.5 * line.name.chars().count() as f64;
        if x > L && x + width > W - R {
            x = L;
            row += 1.0;
        }
        legend.push((x, 32.0 + 14.0 * row));
        x += width;
    }
    let extra = 14.0 * row;
    let top: f64 = 48.0 + extra;
    let height: f64 = 300.0 + extra;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        svg,
        r#"<rect x="0" y="0" width="{W}" height="{height}" fill="white"/><text x="{L}" y="18" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .collect();
    if all.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" fill="#666">no data</text></svg>"##,
            W / 2.0 - 20.0,
            height / 2.0
        );
        return svg;
    }
    let x_max = all.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let (y_lo, y_hi) = if log_y {
        let positive: Vec<f64> = all.iter().map(|p| p.1).filter(|v| *v > 0.0).collect();
        let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = positive.iter().copied().fold(0.0, f64::max);
        if positive.is_empty() {
            (0.0, 1.0)
        } else {
            (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
            )
        }
    } else {
        let hi = all.iter().map(|p| p.1).fold(0.0, f64::max);
        // An all-zero chart still gets a readable axis.
        let hi = if hi > 0.0 { hi } else { 1.0 };
        let step = nice_step(hi, 5.0);
        (0.0, (hi / step).ceil().max(1.0) * step)
    };
    let px = |x: f64| L + (x / x_max) * (W - L - R);
    let py = |y: f64| {
        let v = if log_y {
            y.max(10f64.powf(y_lo)).log10()
        } else {
            y
        };
        height - B - (v - y_lo) / (y_hi - y_lo) * (height - top - B)
    };
    for (i, (start, end, label)) in bands.iter().enumerate() {
        let fill = if i % 2 == 0 { "#f3f3f8" } else { "#fdf3e7" };
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}" fill="#888" font-size="11">{}</text>"##,
            px(*start),
            (px(*end) - px(*start)).max(0.0),
            height - top - B,
            px(*start) + 3.0,
            top + 12.0,
            esc(label)
        );
    }
    // Y grid and ticks.
    let ticks: Vec<f64> = if log_y {
        (y_lo as i32..=y_hi as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        let step = nice_step(y_hi, 5.0);
        (0..=((y_hi / step).round() as usize))
            .map(|i| i as f64 * step)
            .collect()
    };
    for t in ticks {
        let y = py(t);
        let _ = write!(
            svg,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    // X ticks (seconds).
    let step = nice_step(x_max, 8.0);
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#999"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4}</text>"##,
            px(x),
            height - B,
            height - B + 5.0,
            height - B + 18.0,
            fmt_tick(x)
        );
        x += step;
    }
    let _ = write!(
        svg,
        r##"<line x1="{L}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#333"/><line x1="{L}" y1="{top}" x2="{L}" y2="{0:.1}" stroke="#333"/>"##,
        height - B,
        W - R
    );
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        L + (W - L - R) / 2.0,
        height - 8.0,
        top + (height - top - B) / 2.0,
        esc(y_label)
    );
    // Lines and legend.
    for (i, (line, (legend_x, legend_y))) in lines.iter().zip(legend).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        if points.len() == 1 {
            let (x, y) = line.points[0];
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(x),
                py(y)
            );
        } else {
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
                points.join(" ")
            );
        }
        let label = esc(&line.name);
        let _ = write!(
            svg,
            r#"<rect x="{legend_x:.1}" y="{legend_y:.1}" width="12" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            legend_x + 16.0,
            legend_y + 6.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>");
    for row in rows {
        s.push_str("<tr>");
        for cell in row {
            let _ = write!(s, "<td>{}</td>", esc(cell));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

/// The self-contained HTML report.
/// The points whose interval was a full one: a rate over the short interval that closes a
/// run (the tail after the load stopped) would be drawn as a drop towards 0.
fn full_intervals(series: &[Point]) -> Vec<&Point> {
    let mut lengths: Vec<f64> = series.iter().map(|p| p.secs).collect();
    lengths.sort_by(f64::total_cmp);
    let typical = lengths.get(lengths.len() / 2).copied().unwrap_or(0.0);
    series.iter().filter(|p| p.secs >= typical * 0.5).collect()
}

pub fn html(o: &Outcome) -> String {
    let series = &o.series;
    let rated = full_intervals(series);
    let bands: Vec<(f64, f64, String)> = if o.phases.len() > 1 {
        o.phases
            .iter()
            .map(|p| (p.start, p.end, p.name.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let throughput = chart(
        "Throughput: committed transfers per second (verified receipts)",
        "transfers/s",
        &[Line {
            name: "committed/s".into(),
            points: rated
                .iter()
                .map(|p| (p.t, p.committed as f64 / p.secs.max(1e-9)))
                .collect(),
        }],
        false,
        &bands,
    );
    let with_receipts: Vec<&Point> = series.iter().filter(|p| p.max > 0).collect();
    let pct = |name: &str, f: fn(&Point) -> u64| Line {
        name: name.into(),
        points: with_receipts
            .iter()
            .map(|p| (p.t, f(p) as f64 / 1000.0))
            .collect(),
    };
    let latency = chart(
        "Latency percentiles per interval (transfer sent to receipt verified)",
        "milliseconds (log)",
        &[
            pct("p50", |p| p.p50),
            pct("p90", |p| p.p90),
            pct("p99", |p| p.p99),
            pct("max", |p| p.max),
        ],
        true,
        &bands,
    );
    let memory = chart(
        "Server resident memory (VmRSS)",
        "MiB",
        &[Line {
            name: "server RSS".into(),
            points: series
                .iter()
                .filter_map(|p| Some((p.t, p.rss_kib? as f64 / 1024.0)))
                .collect(),
        }],
        false,
        &bands,
    );
    // Errors and attack answers: the busiest names get a line each, the rest one together.
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for p in series {
        for (k, v) in p.errors.iter().chain(p.answers.iter()) {
            *totals.entry(k.clone()).or_default() += v;
        }
    }
    let mut names: Vec<(String, u64)> = totals.into_iter().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.1));
    let shown: Vec<String> = names.iter().take(7).map(|(k, _)| k.clone()).collect();
    let mut lines: Vec<Line> = shown
        .iter()
        .map(|name| Line {
            name: name.clone(),
            points: rated
                .iter()
                .map(|p| {
                    let n = p.errors.get(name).or(p.answers.get(name)).copied();
                    (p.t, n.unwrap_or(0) as f64 / p.secs.max(1e-9))
                })
                .collect(),
        })
        .collect();
    if names.is_empty() {
        lines.push(Line {
            name: "none".into(),
            points: series.iter().map(|p| (p.t, 0.0)).collect(),
        });
    }
    if names.len() > shown.len() {
        lines.push(Line {
            name: "other".into(),
            points: rated
                .iter()
                .map(|p| {
                    let n: u64 = p
                        .errors
                        .iter()
                        .chain(p.answers.iter())
                        .filter(|(k, _)| !shown.contains(k))
                        .map(|(_, v)| v)
                        .sum();
                    (p.t, n as f64 / p.secs.max(1e-9))
                })
                .collect(),
        });
    }
    // One busy name (nonce-flood's nonces, 10^5 a second) would flatten the others on a
    // linear axis: past a 20-fold spread the axis is logarithmic.
    let busiest = names.first().map_or(0, |n| n.1);
    let quietest = names.iter().take(7).map(|n| n.1).min().unwrap_or(0);
    let log = quietest > 0 && busiest > 20 * quietest;
    let errors = chart(
        "Errors and attack answers per second",
        if log {
            "per second (log)"
        } else {
            "per second"
        },
        &lines,
        log,
        &bands,
    );

    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>txsock stress {}</h1><p class=\"sub\">{}</p>",
        esc(&o.scenario),
        esc(&crate::clock::stamp_millis(crate::clock::unix_millis()))
    );
    body.push_str("<h2>Parameters</h2>");
    body.push_str(&table(
        &["parameter", "value"],
        &o.params
            .iter()
            .map(|(k, v)| {
                let (k, v) = param_text(k, v);
                vec![k, v]
            })
            .collect::<Vec<_>>(),
    ));
    body.push_str("<h2>Plots</h2>");
    for svg in [&throughput, &latency, &memory, &errors] {
        let _ = write!(body, "<div class=\"plot\">{svg}</div>");
    }
    body.push_str("<h2>Summary</h2><pre>");
    // The parameters are in their table above.
    let summary = text(o);
    let summary: Vec<&str> = summary
        .lines()
        .filter(|l| {
            !l.starts_with("  ")
                || !o.params.iter().any(|(k, v)| {
                    l.trim_start()
                        .starts_with(&format!("{}:", param_text(k, v).0))
                })
        })
        .collect();
    body.push_str(&esc(&summary.join("\n")));
    body.push_str("</pre>");
    let h = &o.totals.latency;
    if !h.is_empty() {
        body.push_str("<h2>Latency percentiles (whole run)</h2>");
        let rows = [0.5, 0.9, 0.99, 0.999, 1.0]
            .iter()
            .map(|q| {
                vec![
                    if *q == 1.0 {
                        "max".to_string()
                    } else {
                        format!("p{}", q * 100.0)
                    },
                    ms(h.value_at_quantile(*q)),
                ]
            })
            .collect::<Vec<_>>();
        body.push_str(&table(&["percentile", "latency"], &rows));
    }
    if !o.phases.is_empty() {
        body.push_str("<h2>Server memory by phase</h2>");
        let rows = o
            .phases
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    format!("{:.1}–{:.1} s", p.start, p.end),
                    mib(p.before_kib),
                    mib(p.peak_kib),
                    signed_mib(p.growth_kib()),
                    mib(p.after_kib),
                ]
            })
            .collect::<Vec<_>>();
        body.push_str(&table(
            &["phase", "time", "before", "peak", "growth", "after"],
            &rows,
        ));
    }
    if !o.totals.answers.is_empty() {
        body.push_str("<h2>What the server answered the attacks</h2>");
        let rows = o
            .totals
            .answers
            .iter()
            .flat_map(|(a, m)| {
                m.iter()
                    .map(move |(k, v)| vec![a.clone(), k.clone(), v.to_string()])
            })
            .collect::<Vec<_>>();
        body.push_str(&table(&["attack", "probe: answer", "count"], &rows));
    }
    let _ = write!(
        body,
        "<h2>Raw figures</h2><details><summary>JSON</summary><pre>{}</pre></details>",
        esc(&json(o))
    );
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>txsock stress {}</title><style>{}</style></head><body>{body}</body></html>\n",
        esc(&o.scenario),
        "body{font-family:sans-serif;margin:24px;max-width:1000px;color:#222}\
         h1{margin-bottom:0}.sub{color:#666;margin-top:4px}\
         table{border-collapse:collapse;margin:8px 0}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}\
         th{background:#f0f0f0}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow-x:auto}\
         .plot{margin:12px 0;border:1px solid #eee}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_and_non_finite_is_null() {
        let text = serde_json::to_string(&[
            Num(1.23456),
            Num(7.0),
            Num(-2.5),
            Num(f64::NAN),
            Num(f64::INFINITY),
        ])
        .unwrap();
        assert_eq!(text, "[1.235,7,-2.5,null,null]");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.3, 5.0), 0.1);
        assert_eq!(fmt_tick(25_000.0), "25k");
    }

    /// An outcome with every part filled in, odd numbers included.
    fn sample() -> Outcome {
        let mut o = Outcome {
            scenario: "mix".into(),
            params: vec![
                ("clients".into(), "4".into()),
                ("duration_s".into(), "2.5".into()),
                ("open_file_limit".into(), "none".into()),
                ("note \"q\"".into(), "a\nb".into()),
            ],
            notes: vec!["first".into(), "tab\there".into()],
            window_secs: 2.5,
            committed_in_window: 1001,
            ..Outcome::default()
        };
        for us in [100, 250, 250, 4000, 90_000] {
            o.totals.latency.saturating_record(us);
        }
        o.totals.committed = 1234;
        o.totals.refused.insert("insufficient_funds".into(), 3);
        o.totals.errors.insert("closed".into(), 2);
        o.totals
            .answers
            .insert("replay".into(), [("unknown_nonce".into(), 9)].into());
        o.totals.answers.insert("flood".into(), BTreeMap::new());
        let mut f = Findings::default();
        f.violations.insert("replay_accepted".into(), 0);
        f.figures.insert("rate".into(), 1.0 / 3.0);
        f.figures.insert("whole".into(), 42.0);
        f.figures.insert("inf".into(), f64::INFINITY);
        o.findings.insert("replay".into(), f);
        o.series.push(Point {
            t: 1.0,
            secs: 1.0,
            committed: 500,
            p50: 250,
            p90: 4000,
            p99: 90_000,
            max: 90_000,
            errors: [("closed".into(), 1)].into(),
            answers: [("replay/unknown_nonce".into(), 4)].into(),
            rss_kib: Some(20_480),
        });
        o.series.push(Point {
            t: 2.5,
            secs: 0.0,
            committed: 0,
            p50: 0,
            p90: 0,
            p99: 0,
            max: 0,
            errors: BTreeMap::new(),
            answers: BTreeMap::new(),
            rss_kib: None,
        });
        o.phases.push(PhaseMemory {
            name: "attacks".into(),
            start: 0.5,
            end: 2.25,
            before_kib: Some(20_000),
            peak_kib: Some(20_100),
            after_kib: Some(19_990),
        });
        o.phases.push(PhaseMemory {
            name: "idle".into(),
            ..PhaseMemory::default()
        });
        o.connections = Some(ConnectionsOutcome {
            count: 10,
            logged_in: 9,
            still_open: 8,
            failed: [("refused".into(), 1)].into(),
            setup_secs: 0.123_456,
            before_kib: Some(1000),
            held_kib: Some(1100),
        });
        o.server = ServerStats {
            line: Some("txsock stopped: 1234 transfers in 99 commits".into()),
            transfers: Some(1234),
            commits: Some(99),
            largest_batch: None,
            clean_exit: true,
        };
        o
    }

    /// The `--json` document, byte for byte: field names and order, integers, three-decimal
    /// figures, `null`s, absent connections figures in the headline when there are none.
    #[test]
    fn json_document() {
        let want = r#"{"scenario":"mix","parameters":{"clients":4,"duration_s":2.5,"open_file_limit":null,"note \"q\"":"a\nb"},"headline":{"transfers_per_second":400.4,"latency_p50_us":250,"latency_p99_us":90047,"memory_growth_kib":100,"memory_after_growth_kib":-10,"transfers_per_commit":12.465,"largest_batch":null,"violations":0,"connections_logged_in":9,"held_kib":1100,"per_connection_bytes":11377.778},"transfers":{"committed":1234,"committed_in_window":1001,"window_s":2.5,"per_second":400.4,"refused":{"insufficient_funds":3}},"latency_us":{"count":5,"p50":250,"p90":90047,"p99":90047,"p99_9":90047,"max":90047,"mean":18923.4},"errors":{"closed":2},"attacks":{"flood":{"passed":true,"answers":{},"violations":{},"figures":{}},"replay":{"passed":true,"answers":{"unknown_nonce":9},"violations":{"replay_accepted":0},"figures":{"inf":null,"rate":0.333,"whole":42}}},"memory":[{"name":"attacks","start_s":0.5,"end_s":2.25,"before_kib":20000,"peak_kib":20100,"after_kib":19990,"growth_kib":100},{"name":"idle","start_s":0,"end_s":0,"before_kib":null,"peak_kib":null,"after_kib":null,"growth_kib":null}],"connections":{"count":10,"logged_in":9,"still_open":8,"failed":{"refused":1},"setup_s":0.123,"before_kib":1000,"held_kib":1100,"per_connection_bytes":11377.778},"server":{"line":"txsock stopped: 1234 transfers in 99 commits","transfers":1234,"commits":99,"largest_batch":null,"clean_exit":true},"notes":["first","tab\there"],"series":[{"t":1,"committed":500,"per_second":500,"p50_us":250,"p90_us":4000,"p99_us":90000,"max_us":90000,"rss_kib":20480,"errors":{"closed":1},"answers":{"replay/unknown_nonce":4}},{"t":2.5,"committed":0,"per_second":0,"p50_us":0,"p90_us":0,"p99_us":0,"max_us":0,"rss_kib":null,"errors":{},"answers":{}}]}"#;
        assert_eq!(json(&sample()), want);
        let empty = json(&Outcome::default());
        assert!(empty.contains(r#""latency_us":{"count":0},"#), "{empty}");
        assert!(!empty.contains("connections_logged_in"), "{empty}");
        assert!(empty.contains(r#""connections":null,"#), "{empty}");
    }

    /// The summary: parameters with their unit, whole figures without decimals, one
    /// verdict line per attack (a violation fails it).
    #[test]
    fn text_has_verdicts_and_whole_counts() {
        let mut o = sample();
        let t = text(&o);
        assert!(t.contains("  duration: 2.5 s\n"), "{t}");
        assert!(t.contains("(whole: 42)") && !t.contains("42.0"), "{t}");
        assert!(
            t.contains("\u{2713} replay: passed, no violation (replay_accepted checked)"),
            "{t}"
        );
        assert!(t.contains("\u{2713} flood: passed"), "{t}");
        o.findings
            .get_mut("replay")
            .unwrap()
            .violations
            .insert("replay_accepted".into(), 2);
        let t = text(&o);
        assert!(
            t.contains("\u{2717} replay: FAILED: replay_accepted x2"),
            "{t}"
        );
        assert!(json(&o).contains(r#""replay":{"passed":false"#));
    }

    /// The short interval that closes a run is not drawn as a rate (it would be a drop to
    /// 0); one busy answer puts the errors plot on a log axis.
    #[test]
    fn plots_skip_the_closing_interval_and_use_a_log_axis_for_a_wide_spread() {
        let mut o = sample();
        let page = html(&o);
        let throughput = &page[page.find("Throughput").unwrap()..];
        let throughput = &throughput[..throughput.find("</svg>").unwrap()];
        // Only the full interval (t = 1) is drawn: one point, so a dot and no line.
        assert_eq!(throughput.matches("<circle").count(), 1, "{throughput}");
        assert!(!throughput.contains("<polyline"), "{throughput}");
        assert!(!page.contains("per second (log)"));
        o.series[0]
            .answers
            .insert("nonce-flood/nonces".into(), 150_000);
        assert!(html(&o).contains("per second (log)"));
    }

    #[test]
    fn empty_outcome_renders() {
        let o = Outcome::default();
        assert!(html(&o).contains("<svg"));
        assert!(json(&o).starts_with('{'));
    }
}
