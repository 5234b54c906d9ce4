//! `txsock stress`: a load and attack generator against a running server (`--server`) or
//! one it starts itself (`--spawn`), with a progress bar, latency histograms, the server's
//! memory sampled over the run, and a report (`--json`, `--report FILE.html`).
//!
//! Clients are core [`ClientSession`](txsock_core::ClientSession)s driven over tokio sockets
//! ([`conn`]); the attacks write their hostile bytes raw ([`attack`]). Traffic goes to
//! loopback addresses only, and every loop is bounded in time.

mod attack;
mod conn;
mod load;
mod record;
mod report;
mod target;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use record::Recorder;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use target::Target;
use tokio::sync::watch;
use txsock_core::Amount;

/// Options of `txsock stress`.
#[derive(Debug, Args)]
pub struct StressArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Logged-in clients sending transfers, each verified by its receipt: throughput,
    /// latency percentiles, errors by code.
    Load(LoadArgs),
    /// Many idle logged-in connections held open: server memory per connection.
    Connections(ConnectionsArgs),
    /// Connections past the server's limit (answered `server_busy` and closed).
    Flood(AttackArgs),
    /// Slow clients: endless lines trickled a byte a second before and after login, and
    /// clients that never read their answers.
    Slowloris(AttackArgs),
    /// Lines far past the frame limit, with and without a newline.
    Oversize(AttackArgs),
    /// Random bytes, invalid UTF-8, deep JSON, NULs and wrong shapes.
    Garbage(AttackArgs),
    /// Replayed, tampered, forged and cross-session transfer frames.
    Replay(AttackArgs),
    /// Logged-in sessions asking for nonces without ever using them.
    NonceFlood(AttackArgs),
    /// Failed logins as a real user and as unknown names, timed from `proof` to answer:
    /// both medians, their quartiles and the ratio of the medians (a username oracle if the
    /// two differ). The spawned server has lockouts off so every failure takes the
    /// wrong-password path.
    UserTiming(AttackArgs),
    /// Every attack at once beside a transfer load: memory before, during and after.
    Mix(MixArgs),
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The server to test, a loopback address such as 127.0.0.1:11002. `load` takes several
    /// servers of one ledger, comma-separated (ADDR,ADDR,...): its clients start spread over
    /// them, and a client whose server cannot be reached, drops the connection or answers
    /// `internal` moves to the next one, logs in again and re-sends its unanswered transfers
    /// with the same ids. Other scenarios use the first.
    #[arg(
        long,
        value_name = "ADDR",
        value_delimiter = ',',
        required_unless_present = "spawn",
        conflicts_with = "spawn"
    )]
    pub server: Vec<SocketAddr>,

    /// Start `txsock serve` (this executable) on a free port with a temporary data directory,
    /// a PBKDF2 minimum of `--iterations`, and limits suited to the scenario; stop it at the end.
    #[arg(long)]
    pub spawn: bool,

    /// Process id of the `--server` to sample its memory (from /proc/PID/status).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// PBKDF2 iterations of the stress users. Low for speed: the server must accept it (its
    /// `--min-iterations`; `--spawn` sets that), and each client refuses a challenge below it.
    /// Real users keep the default of 600,000; PBKDF2 runs on the client, not the server.
    #[arg(long, default_value_t = 4096)]
    pub iterations: u32,

    /// Extra flag for the spawned server, e.g. `--server-arg=--max-batch=64` (repeatable;
    /// replaces the stress tool's own setting of the same flag).
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    /// Write a self-contained HTML report with plots to this file.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,

    /// Print the raw figures as JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,

    /// Worker threads of the stress tool's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,

    /// TLS (`load` and `connections` only): with --spawn the server gets a throwaway
    /// certificate that the clients trust; with --server, --ca and --tls-name as for
    /// `txsock client`.
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Options of `load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Concurrent clients, one connection and one user each.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// How long to send transfers (after every client has logged in).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Transfers in flight per client (1 to 14; 1 waits for each receipt).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=14))]
    pub pipeline: u16,
}

/// Options of `connections`.
#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open and log in. More than 20,000 come from several source
    /// addresses (127.0.0.1, 127.0.0.2, ...: one has about 28,000 ports towards a server),
    /// so the server must listen on IPv4 loopback. The open-file limit is raised to the
    /// count plus 256 (past the hard limit only as root); the run stops at once if it
    /// cannot be.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// How long to hold them once all are logged in.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Logins in progress at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
}

/// Options of the attacks.
#[derive(Debug, Clone, Args)]
pub struct AttackArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long to attack.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Attacking connections at once (default per attack; for `flood`, connections per
    /// round: past the spawned server's limit, or set it above your server's).
    #[arg(long)]
    pub count: Option<usize>,
    /// Connection limit of the spawned server.
    #[arg(long, default_value_t = 256)]
    pub limit: usize,
    /// Line length for `oversize`, bytes.
    #[arg(long, default_value_t = 65_536)]
    pub size: usize,
}

/// Options of `mix`.
#[derive(Debug, Clone, Args)]
pub struct MixArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Transfer clients beside the attacks.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Transfers in flight per client.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=14))]
    pub pipeline: u16,
    /// How long the attacks run (after a load-only warm-up, before a load-only cool-down).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Connection limit of the spawned server (the flood opens more than this).
    #[arg(long, default_value_t = 256)]
    pub limit: usize,
    /// The attacks to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(attack::ALL))]
    pub attacks: Vec<String>,
}

/// What every part of a run shares.
#[derive(Clone)]
pub struct Ctx {
    /// The server (the first of `servers`).
    pub addr: SocketAddr,
    /// Every server given (`load` spreads its clients over them; see [`CommonArgs::server`]).
    pub servers: Vec<SocketAddr>,
    /// PBKDF2 iterations of the stress users.
    pub iterations: u32,
    /// Prefix of this run's usernames (fresh per run, so reruns against one server work).
    pub prefix: String,
    /// Results.
    pub rec: Arc<Recorder>,
}

/// Open files needed beside one per connection (runtime, logs, database, listener).
const FILES_SPARE: u64 = 256;

/// Default connections at once for an attack.
fn default_count(attack: &str, limit: usize, spawned: bool) -> usize {
    match attack {
        "flood" if spawned => limit + 64,
        "flood" => 10_064,
        "slowloris" => 48,
        "oversize" => 8,
        "garbage" => 8,
        "replay" => 2,
        _ => 4,
    }
}

/// Runs `txsock stress`.
pub fn run(args: StressArgs) -> Result<()> {
    let common = match &args.scenario {
        Scenario::Load(a) => &a.common,
        Scenario::Connections(a) => &a.common,
        Scenario::Mix(a) => &a.common,
        Scenario::Flood(a)
        | Scenario::Slowloris(a)
        | Scenario::Oversize(a)
        | Scenario::Garbage(a)
        | Scenario::Replay(a)
        | Scenario::NonceFlood(a)
        | Scenario::UserTiming(a) => &a.common,
    }
    .clone();
    for addr in &common.server {
        if !addr.ip().is_loopback() {
            bail!("txsock stress sends heavy and hostile traffic: only loopback servers (127.0.0.0/8, ::1) may be targeted, not {addr}");
        }
    }
    // Each connection takes a file here and one in a spawned server (which inherits the
    // limit), plus some for the runtime, the logs and the database.
    let wanted = match &args.scenario {
        Scenario::Connections(a) => a.count as u64 + FILES_SPARE,
        _ => 0,
    };
    let files = target::raise_file_limit(wanted);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(common.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime.block_on(scenario(args.scenario, &common, files))?;
    // Tasks still blocked on sockets the server closed are not worth waiting for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(path) = &common.report {
        std::fs::write(path, report::html(&outcome))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if common.json {
        println!("{}", report::json(&outcome));
    } else {
        print!("{}", report::text(&outcome));
        if let Some(path) = &common.report {
            println!("report: {}", path.display());
        }
    }
    Ok(())
}

/// Flags for a spawned server: `ours`, minus any the user overrides with `--server-arg`.
fn server_flags(ours: &[(&str, String)], user: &[String]) -> Vec<String> {
    let named = |flag: &str| {
        user.iter()
            .any(|u| u == flag || u.starts_with(&format!("{flag}=")))
    };
    let mut flags: Vec<String> = ours
        .iter()
        .filter(|(flag, _)| !named(flag))
        .map(|(flag, value)| format!("{flag}={value}"))
        .collect();
    flags.extend(user.iter().cloned());
    flags
}

fn progress(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template =
        format!("{{spinner}} {{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// One phase of a run, for memory before/during/after.
struct Phase {
    name: String,
    start: f64,
    end: f64,
    before: Option<u64>,
    after: Option<u64>,
}

/// Samples the recorder every `interval` (series point, server memory, progress bar) until
/// dropped.
struct Sampler {
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(
        rec: Arc<Recorder>,
        pid: Option<u32>,
        interval: Duration,
        bar: ProgressBar,
        time_based: bool,
    ) -> Sampler {
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let p = rec.tick(pid.and_then(target::rss_kib));
                let rate = p.committed as f64 / p.secs.max(1e-9);
                let mut msg = String::new();
                if p.committed > 0 {
                    msg += &format!("{rate:.0} transfers/s, p99 {:.1} ms", p.p99 as f64 / 1000.0);
                }
                let errors: u64 = p.errors.values().sum::<u64>() + p.answers.values().sum::<u64>();
                if errors > 0 {
                    msg += &format!(" {errors} errors/answers");
                }
                if let Some(kib) = p.rss_kib {
                    msg += &format!(" server {:.1} MiB", kib as f64 / 1024.0);
                }
                bar.set_message(msg);
                if time_based {
                    let ms = (p.t * 1000.0) as u64;
                    bar.set_position(ms.min(bar.length().unwrap_or(ms)));
                }
            }
        });
        Sampler { task }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn interval_for(total: Duration) -> Duration {
    if total <= Duration::from_secs(30) {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    }
}

fn run_prefix() -> String {
    let mut raw = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    format!(
        "s{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

const BIG_BALANCE: &str = "1000000000";

async fn scenario(
    scenario: Scenario,
    common: &CommonArgs,
    files: Option<u64>,
) -> Result<report::Outcome> {
    let mut params: Vec<(String, String)> = Vec::new();
    let mut notes = Vec::new();
    let (name, ours): (&str, Vec<(&str, String)>) = match &scenario {
        Scenario::Load(a) => (
            "load",
            vec![
                ("--opening-balance", BIG_BALANCE.into()),
                ("--max-connections", (a.clients + 64).to_string()),
            ],
        ),
        Scenario::Connections(a) => (
            "connections",
            vec![("--max-connections", (a.count + 64).to_string())],
        ),
        Scenario::Mix(a) => (
            "mix",
            vec![
                ("--opening-balance", BIG_BALANCE.into()),
                ("--max-connections", a.limit.to_string()),
                ("--login-deadline", "5".into()),
                ("--idle-timeout", "10".into()),
                ("--write-timeout", "5".into()),
            ],
        ),
        Scenario::UserTiming(a) => (
            "user-timing",
            vec![
                ("--max-connections", a.limit.to_string()),
                ("--lockout-after", u32::MAX.to_string()),
                ("--address-lockout-after", u32::MAX.to_string()),
            ],
        ),
        Scenario::Flood(a)
        | Scenario::Slowloris(a)
        | Scenario::Oversize(a)
        | Scenario::Garbage(a)
        | Scenario::Replay(a)
        | Scenario::NonceFlood(a) => (
            match &scenario {
                Scenario::Flood(_) => "flood",
                Scenario::Slowloris(_) => "slowloris",
                Scenario::Oversize(_) => "oversize",
                Scenario::Garbage(_) => "garbage",
                Scenario::Replay(_) => "replay",
                _ => "nonce-flood",
            },
            vec![
                ("--opening-balance", BIG_BALANCE.into()),
                ("--max-connections", a.limit.to_string()),
                ("--login-deadline", "5".into()),
                ("--idle-timeout", "10".into()),
                ("--write-timeout", "5".into()),
            ],
        ),
    };
    let mut ours = ours;
    // Kept until the run ends: the spawned server's throwaway certificate.
    let mut _certificate_dir = None;
    if common.tls.tls {
        if !matches!(name, "load" | "connections") {
            bail!("--tls works with `load` and `connections`; the attacks write raw bytes");
        }
        let server_side = if common.spawn {
            let dir = tempfile::tempdir().context("a directory for the test certificate")?;
            let certificate = crate::tls::dev_certificate(&["127.0.0.1".into()], 1)?;
            let files = crate::tls::write_dev_certificate(dir.path(), &certificate)?;
            ours.push(("--tls-cert", files.cert.display().to_string()));
            ours.push(("--tls-key", files.key.display().to_string()));
            _certificate_dir = Some(dir);
            crate::tls::ClientTls::new(Some(&files.ca), None, "127.0.0.1:0")
        } else {
            let server = common
                .server
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default();
            crate::tls::ClientTls::new(
                common.tls.ca.as_deref(),
                common.tls.tls_name.as_deref(),
                &server,
            )
        };
        conn::use_tls(server_side.map_err(|e| anyhow::anyhow!("{e}"))?);
        params.push(("transport".into(), "TLS 1.3".into()));
    }
    let mut target = if common.spawn {
        let flags = server_flags(&ours, &common.server_args);
        params.push((
            "server".into(),
            format!("spawned: txsock serve {}", flags.join(" ")),
        ));
        Target::spawn(common.iterations, &flags)?
    } else {
        // Checked by clap: one of --server and --spawn is present.
        let addr = *common.server.first().context("--server or --spawn")?;
        let all: Vec<String> = common.server.iter().map(|a| a.to_string()).collect();
        params.push(("server".into(), all.join(",")));
        Target::attach(addr, common.server_pid)
    };
    if let Some(why) = target::RSS_UNAVAILABLE {
        notes.push(why.to_string());
    } else if target.pid.is_none() {
        notes.push("server memory not sampled: give --server-pid (or use --spawn)".to_string());
    }
    params.push(("scenario".into(), name.into()));
    params.push(("iterations".into(), common.iterations.to_string()));
    params.push((
        "open_file_limit".into(),
        files.map_or_else(|| "none".into(), |files| files.to_string()),
    ));
    params.push(("stress_threads".into(), common.threads.to_string()));
    let ctx = Ctx {
        addr: target.addr,
        servers: if common.server.is_empty() {
            vec![target.addr]
        } else {
            common.server.clone()
        },
        iterations: common.iterations,
        prefix: run_prefix(),
        rec: Arc::new(Recorder::new()),
    };
    let result = match scenario {
        Scenario::Load(a) => run_load(&ctx, &target, &a, &mut params).await,
        Scenario::Connections(a) => run_connections(&ctx, &target, &a, files, &mut params).await,
        Scenario::Mix(a) => run_mix(&ctx, &target, &a, &mut params).await,
        Scenario::Flood(a)
        | Scenario::Slowloris(a)
        | Scenario::Oversize(a)
        | Scenario::Garbage(a)
        | Scenario::Replay(a)
        | Scenario::NonceFlood(a)
        | Scenario::UserTiming(a) => {
            run_attack(&ctx, &target, name, &a, target.is_spawned(), &mut params).await
        }
    };
    let server = target.stop();
    let mut outcome = result?;
    outcome.scenario = name.into();
    outcome.params = params;
    outcome.notes.extend(notes);
    outcome.server = server;
    Ok(outcome)
}

fn finish(ctx: &Ctx, phases: Vec<Phase>) -> report::Outcome {
    let series = ctx.rec.series();
    let phases = phases
        .into_iter()
        .map(|p| {
            let peak = series
                .iter()
                .filter(|s| s.t >= p.start && s.t <= p.end)
                .filter_map(|s| s.rss_kib)
                .chain(p.before)
                .max();
            report::PhaseMemory {
                name: p.name,
                start: p.start,
                end: p.end,
                before_kib: p.before,
                peak_kib: peak,
                after_kib: p.after,
            }
        })
        .collect();
    report::Outcome {
        totals: ctx.rec.total(),
        series,
        phases,
        ..report::Outcome::default()
    }
}

async fn run_load(
    ctx: &Ctx,
    target: &Target,
    a: &LoadArgs,
    params: &mut Vec<(String, String)>,
) -> Result<report::Outcome> {
    params.push(("clients".into(), a.clients.to_string()));
    params.push(("pipeline".into(), a.pipeline.to_string()));
    params.push(("duration_s".into(), report::seconds(a.duration)));
    let load = load::LoadParams {
        clients: a.clients.max(1),
        pipeline: usize::from(a.pipeline),
        amount: Amount::parse("0.01").expect("constant amount"),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = load::start(ctx, load, stop_rx).await?;
    let before = target.rss_kib();
    let bar = progress(a.duration.as_millis() as u64, "ms");
    let sampler = Sampler::start(
        ctx.rec.clone(),
        target.pid,
        interval_for(a.duration),
        bar.clone(),
        true,
    );
    tokio::time::sleep(a.duration).await;
    let _ = stop_tx.send(true);
    let window = ctx.rec.tick(target.rss_kib());
    let committed_in_window = ctx.rec.total().committed;
    drop(sampler);
    while clients.join_next().await.is_some() {}
    ctx.rec.tick(target.rss_kib());
    bar.finish_and_clear();
    let after = target.rss_kib();
    let mut outcome = finish(
        ctx,
        vec![Phase {
            name: "load".into(),
            start: 0.0,
            end: window.t,
            before,
            after,
        }],
    );
    outcome.window_secs = window.t;
    outcome.committed_in_window = committed_in_window;
    Ok(outcome)
}

async fn run_connections(
    ctx: &Ctx,
    target: &Target,
    a: &ConnectionsArgs,
    files: Option<u64>,
    params: &mut Vec<(String, String)>,
) -> Result<report::Outcome> {
    params.push(("count".into(), a.count.to_string()));
    params.push(("hold_s".into(), report::seconds(a.hold)));
    params.push(("parallel_logins".into(), a.parallel.to_string()));
    if let Some(files) = files.filter(|&files| a.count as u64 + FILES_SPARE > files) {
        bail!(
            "{} connections need {} open files, but this process may open {files}, and could \
             not raise its limit: raise the hard limit (as root: `ulimit -Hn {}`, or \
             LimitNOFILE= in a service unit) and run again, or ask for fewer with --count",
            a.count,
            a.count as u64 + FILES_SPARE,
            a.count as u64 + FILES_SPARE
        );
    }
    if a.count > load::PER_SOURCE && load::source_addresses(ctx.addr, a.count).is_empty() {
        bail!(
            "more than {} connections need several source addresses, which only an IPv4 \
             loopback server has (127.0.0.0/8): run the server on 127.0.0.1 or use a lower --count",
            load::PER_SOURCE
        );
    }
    if a.count > 254 * load::PER_SOURCE {
        bail!(
            "--count {} is more than 254 loopback source addresses carry ({} each)",
            a.count,
            load::PER_SOURCE
        );
    }
    ctx.rec.reset();
    let before = target.rss_kib();
    let bar = progress(a.count as u64, "logged in");
    let sampler = Sampler::start(
        ctx.rec.clone(),
        target.pid,
        Duration::from_millis(500),
        bar.clone(),
        false,
    );
    let start = ctx.rec.elapsed();
    let held = Arc::new(std::sync::Mutex::new(None));
    let held_in = held.clone();
    let pid = target.pid;
    let result = load::connections(
        ctx,
        a.count,
        a.parallel,
        a.hold,
        |n| bar.set_position(n),
        async move || {
            // Settle, then take the figure the scenario is about.
            tokio::time::sleep(Duration::from_millis(500)).await;
            *held_in.lock().unwrap_or_else(|p| p.into_inner()) = pid.and_then(target::rss_kib);
        },
    )
    .await?;
    let end = ctx.rec.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(sampler);
    ctx.rec.tick(target.rss_kib());
    bar.finish_and_clear();
    let after = target.rss_kib();
    let held = *held.lock().unwrap_or_else(|p| p.into_inner());
    let mut outcome = finish(
        ctx,
        vec![Phase {
            name: "connections".into(),
            start,
            end,
            before,
            after,
        }],
    );
    outcome.connections = Some(report::ConnectionsOutcome {
        count: result.count,
        logged_in: result.logged_in,
        still_open: result.still_open,
        failed: result.failed,
        setup_secs: result.setup_secs,
        before_kib: before,
        held_kib: held,
    });
    Ok(outcome)
}

/// Registers the account attacks log in as, and the recipient of their transfers.
async fn attack_accounts(ctx: &Ctx) -> Result<conn::Account> {
    let names = vec![format!("{}a", ctx.prefix), format!("{}sink", ctx.prefix)];
    let mut accounts = load::register(ctx, names).await?;
    Ok(accounts.swap_remove(0))
}

async fn run_attack(
    ctx: &Ctx,
    target: &Target,
    name: &str,
    a: &AttackArgs,
    spawned: bool,
    params: &mut Vec<(String, String)>,
) -> Result<report::Outcome> {
    let count = a
        .count
        .unwrap_or_else(|| default_count(name, a.limit, spawned));
    params.push(("duration_s".into(), report::seconds(a.duration)));
    params.push(("count".into(), count.to_string()));
    if name == "oversize" {
        params.push(("line_size_bytes".into(), a.size.to_string()));
    }
    if spawned {
        params.push(("server_connection_limit".into(), a.limit.to_string()));
    }
    let account = attack_accounts(ctx).await?;
    let attack_params = attack::AttackParams {
        count,
        size: a.size,
    };
    let own = attack::prepare(ctx, name, attack_params).await?;
    ctx.rec.reset();
    let before = target.rss_kib();
    let bar = progress(a.duration.as_millis() as u64, "ms");
    let sampler = Sampler::start(
        ctx.rec.clone(),
        target.pid,
        interval_for(a.duration),
        bar.clone(),
        true,
    );
    let until = tokio::time::Instant::now() + a.duration;
    let findings = attack::run(ctx, name, attack_params, &account, own, until).await?;
    let end = ctx.rec.elapsed();
    // Let the server close what it closes, then see whether the memory came back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = target.rss_kib();
    drop(sampler);
    ctx.rec.tick(after);
    bar.finish_and_clear();
    let mut outcome = finish(
        ctx,
        vec![Phase {
            name: name.into(),
            start: 0.0,
            end,
            before,
            after,
        }],
    );
    outcome.findings.insert(name.to_string(), findings);
    Ok(outcome)
}

async fn run_mix(
    ctx: &Ctx,
    target: &Target,
    a: &MixArgs,
    params: &mut Vec<(String, String)>,
) -> Result<report::Outcome> {
    let spawned = target.is_spawned();
    let warmup = Duration::from_secs(3);
    let cooldown = Duration::from_secs(3);
    params.push(("clients".into(), a.clients.to_string()));
    params.push(("pipeline".into(), a.pipeline.to_string()));
    params.push(("attack_duration_s".into(), report::seconds(a.duration)));
    params.push(("warmup_s".into(), report::seconds(warmup)));
    params.push(("cooldown_s".into(), report::seconds(cooldown)));
    if spawned {
        params.push(("server_connection_limit".into(), a.limit.to_string()));
    }
    let account = attack_accounts(ctx).await?;
    let chosen: Vec<&'static str> = attack::ALL
        .into_iter()
        .filter(|name| a.attacks.is_empty() || a.attacks.iter().any(|x| x == name))
        .collect();
    params.push(("attacks".into(), chosen.join(", ")));
    let mut prepared = Vec::new();
    for name in chosen {
        // The mix runs every attack at a lower intensity than alone, so they share the
        // machine with the load.
        let count = match name {
            "flood" if spawned => a.limit + 64,
            "flood" => 10_064,
            "slowloris" => 24,
            "nonce-flood" => 2,
            "replay" => 1,
            _ => 4,
        };
        let attack_params = attack::AttackParams {
            count,
            size: 65_536,
        };
        params.push((
            format!("{}_connections", name.replace('-', "_")),
            count.to_string(),
        ));
        let own = attack::prepare(ctx, name, attack_params).await?;
        prepared.push((name, attack_params, own));
    }
    let load = load::LoadParams {
        clients: a.clients.max(1),
        pipeline: usize::from(a.pipeline),
        amount: Amount::parse("0.01").expect("constant amount"),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = load::start(ctx, load, stop_rx).await?;
    let total = warmup + a.duration + cooldown;
    let bar = progress(total.as_millis() as u64, "ms");
    let sampler = Sampler::start(
        ctx.rec.clone(),
        target.pid,
        interval_for(total),
        bar.clone(),
        true,
    );
    let load_before = target.rss_kib();
    tokio::time::sleep(warmup).await;
    let attack_start = ctx.rec.elapsed();
    let before = target.rss_kib();
    let until = tokio::time::Instant::now() + a.duration;
    let mut attacks = tokio::task::JoinSet::new();
    for (name, attack_params, own) in prepared {
        let (ctx, account) = (ctx.clone(), account.clone());
        attacks.spawn(async move {
            let findings = attack::run(&ctx, name, attack_params, &account, own, until).await;
            (name, findings)
        });
    }
    let mut findings = std::collections::BTreeMap::new();
    while let Some(done) = attacks.join_next().await {
        let (name, f) = done?;
        match f {
            Ok(f) => {
                findings.insert(name.to_string(), f);
            }
            // One attack that could not run does not spoil the others' figures.
            Err(e) => ctx.rec.answer(name, &format!("attack failed: {e:#}")),
        }
    }
    let attack_end = ctx.rec.elapsed();
    let during_end_rss = target.rss_kib();
    tokio::time::sleep(cooldown).await;
    let after = target.rss_kib();
    let _ = stop_tx.send(true);
    let window = ctx.rec.tick(after);
    let committed_in_window = ctx.rec.total().committed;
    drop(sampler);
    while clients.join_next().await.is_some() {}
    ctx.rec.tick(target.rss_kib());
    bar.finish_and_clear();
    let mut outcome = finish(
        ctx,
        vec![
            Phase {
                name: "warm-up (load only)".into(),
                start: 0.0,
                end: attack_start,
                before: load_before,
                after: before,
            },
            Phase {
                name: "attacks beside the load".into(),
                start: attack_start,
                end: attack_end,
                before,
                after: during_end_rss,
            },
            Phase {
                name: "cool-down (load only)".into(),
                start: attack_end,
                end: window.t,
                before: during_end_rss,
                after,
            },
        ],
    );
    outcome.window_secs = window.t;
    outcome.committed_in_window = committed_in_window;
    outcome.findings = findings;
    Ok(outcome)
}
