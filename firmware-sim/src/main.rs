//! `txsock-firmware-sim`: the txsock device (core server on smoltcp) on a simulated link, or
//! on a TAP interface. See [`USAGE`].

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use txsock_core::Duration;
use txsock_firmware_sim::link::{LinkConfig, Probability, MIN_MTU};
use txsock_firmware_sim::power_cut;
use txsock_firmware_sim::sim::{self, SimConfig, MAX_CLIENTS, MAX_MTU};
use txsock_firmware_sim::sweep::{self, SweepConfig};
use txsock_firmware_sim::tap::{self, TapConfig};

const USAGE: &str = "\
txsock-firmware-sim: txsock's core server on smoltcp, as a microcontroller would run it

USAGE:
    txsock-firmware-sim [OPTIONS]              simulate a device and clients on a lossy link
    txsock-firmware-sim --sweep N [--seed S]   run N random scenarios, report the failing ones
    txsock-firmware-sim --tap NAME [OPTIONS]   serve real clients on TAP interface NAME
    txsock-firmware-sim --power-cuts N [--seed S] [--ops N]
                                               cut the flash ledger's power N times at random

SIMULATION (all deterministic: the same options give the same transcript hash):
    --transfers N     transfers in total [default: 100]
    --clients N       simulated clients, 1 to 12; more than the device's 4 sessions shows
                      the server_busy refusal [default: 1]
    --loss P          chance each frame is lost, 0 to 1 [default: 0]
    --reorder P       chance each frame is held back so later ones overtake it [default: 0]
    --corrupt P       chance each frame gets a bit flipped [default: 0]
    --delay MS        one-way delay in milliseconds [default: 10]
    --mtu BYTES       IP MTU of the link, 68 to 1500 [default: 576]
    --outage AT:SECS  the link goes down at AT seconds for SECS seconds (a long one outlasts
                      the device's idle timeout: clients reconnect and re-send)
    --restart-at T[,T...]
                      the device restarts at each T seconds: sessions and TCP state lost,
                      ledger kept; clients reconnect and re-send with the same ids
    --clock-jump AT:SECS
                      the clients' clock jumps by SECS seconds (may be negative) at AT seconds
    --resets N        each client resets its own connection N times, a few receipts in, then
                      reconnects and re-sends what is unanswered [default: 0]
    --seed N          seed of everything random [default: 1]
    --flash           keep the device's ledger on a simulated 1 MiB NOR flash (the flash
                      ledger, ekv) instead of in RAM; a --restart-at reboots it from the
                      flash image. At most 1000 transfers. With --sweep: every scenario
                      uses it

SWEEP (the simulator as a fault explorer):
    --sweep N         draw N scenarios from --seed: loss 0-50%, reorder 0-20%, corruption
                      0-5%, delay 1-250 ms, MTU 68-1500, an outage in 1 of 4, 1-8 clients,
                      1-250 transfers, device restarts in 1 of 5, a clock jump in 1 of 7,
                      resetting clients in 1 of 5. Each must complete every transfer exactly
                      once with verified receipts and conserved money; every 10th runs twice
                      and must give the same transcript hash. Each failure is printed with the
                      command that replays it, then a summary line; progress goes to stderr.
                      Exit status 1 if any scenario failed.
    --jobs N          worker threads for --sweep [default: 1]

POWER CUTS (the flash ledger on a simulated NOR flash whose power goes at a write or erase):
    --power-cuts N    N random runs from --seed, each a random scenario of --ops transfers,
                      failed logins, retries and a registration, cut 1 to 6 times at random
                      write/erase steps (3 in 4 torn: a write programs some of its words,
                      each whole or not at all; an erase stops part-way or leaves garbage).
                      After each
                      cut the ledger reboots from the flash image and must have every
                      acknowledged transfer exactly once, nothing half-applied, money
                      conserved and every re-sent id answered with its original outcome; each
                      run must end as an uncut one. Exit status 1 on the first failure.
    --ops N           operations per power-cut run [default: 40]
    --torn-bits       tear writes inside a word too (some bits of the word being programmed
                      made it, as on bit-programmed SPI NOR)

TAP (the device on a Linux TAP interface that already exists, e.g. made by
firmware-sim/tap-netns.sh; needs /dev/net/tun, usually root):
    --tap NAME        the TAP interface
    --address A.B.C.D/P
                      the device's IPv4 address [default: 192.0.2.2/24]
    --seed N          seed of the device's RNG [default: from /dev/urandom, as a board
                      seeds it from its TRNG]
    --serve-for SECS  stop after this many seconds [default: run until killed]

    -h, --help        print this help

Exit status: 0 if every transfer completed exactly once and money was conserved (or every
scenario of a sweep did, or the TAP device stopped cleanly), 1 otherwise, 2 on a usage error.
";

enum Mode {
    Help,
    Simulate(SimConfig),
    Sweep(SweepConfig),
    Tap(TapConfig),
    PowerCuts {
        runs: u64,
        ops: usize,
        seed: u64,
        tear: power_cut::Tear,
    },
}

fn parse(args: &[String]) -> Result<Mode, String> {
    let mut config = SimConfig::default();
    let mut link = LinkConfig::default();
    let mut tap_name = None;
    let mut address = ([192, 0, 2, 2], 24);
    let mut serve_for = None;
    let mut seed_given = false;
    let mut sweep_count = None;
    let mut jobs = 1;
    let mut power_cuts = None;
    let mut cut_ops = 40;
    let mut tear = power_cut::Tear::Words;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Mode::Help);
        }
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--transfers" => config.transfers = number(flag, &value()?)?,
            "--clients" => {
                config.clients = number(flag, &value()?)?;
                if config.clients == 0 || config.clients > MAX_CLIENTS {
                    return Err(format!("--clients must be 1 to {MAX_CLIENTS}"));
                }
            }
            "--loss" => link.loss = probability(flag, &value()?)?,
            "--reorder" => link.reorder = probability(flag, &value()?)?,
            "--corrupt" => link.corrupt = probability(flag, &value()?)?,
            "--delay" => link.delay_ms = number(flag, &value()?)?,
            "--mtu" => {
                link.mtu = number(flag, &value()?)?;
                if !(MIN_MTU..=MAX_MTU).contains(&link.mtu) {
                    return Err(format!("--mtu must be {MIN_MTU} to {MAX_MTU}"));
                }
            }
            "--outage" => {
                let text = value()?;
                let (at, length) = text
                    .split_once(':')
                    .ok_or_else(|| format!("--outage: `{text}` is not AT:SECONDS"))?;
                let at: u64 = number(flag, at)?;
                let length: u64 = number(flag, length)?;
                link.outage_ms = (at * 1000, length * 1000);
            }
            "--restart-at" => {
                config.faults.restarts = value()?
                    .split(',')
                    .map(|t| number(flag, t).map(Duration::from_secs))
                    .collect::<Result<_, _>>()?;
            }
            "--clock-jump" => {
                let text = value()?;
                let (at, by) = text
                    .split_once(':')
                    .ok_or_else(|| format!("--clock-jump: `{text}` is not AT:SECONDS"))?;
                let at: u64 = number(flag, at)?;
                let by: i64 = number(flag, by)?;
                let by = by
                    .checked_mul(1000)
                    .ok_or_else(|| format!("--clock-jump: {by} s is too far"))?;
                config.faults.clock_jump = Some((Duration::from_secs(at), by));
            }
            "--resets" => config.faults.resets = number(flag, &value()?)?,
            "--torn-bits" => {
                if inline.is_some() {
                    return Err("--torn-bits takes no value".into());
                }
                tear = power_cut::Tear::Bits;
            }
            "--flash" => {
                if inline.is_some() {
                    return Err("--flash takes no value".into());
                }
                config.flash = true;
            }
            "--sweep" => sweep_count = Some(number(flag, &value()?)?),
            "--power-cuts" => power_cuts = Some(number(flag, &value()?)?),
            "--ops" => {
                cut_ops = number(flag, &value()?)?;
                if cut_ops == 0 {
                    return Err("--ops must be at least 1".into());
                }
            }
            "--jobs" => {
                jobs = number(flag, &value()?)?;
                if jobs == 0 {
                    return Err("--jobs must be at least 1".into());
                }
            }
            "--seed" => {
                config.seed = number(flag, &value()?)?;
                seed_given = true;
            }
            "--tap" => tap_name = Some(value()?),
            "--address" => address = cidr(&value()?)?,
            "--serve-for" => serve_for = Some(Duration::from_secs(number(flag, &value()?)?)),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    config.link = link;
    if let Some(runs) = power_cuts {
        if tap_name.is_some() || sweep_count.is_some() {
            return Err("--power-cuts goes with neither --sweep nor --tap".into());
        }
        return Ok(Mode::PowerCuts {
            runs,
            ops: cut_ops,
            seed: config.seed,
            tear,
        });
    }
    if let Some(scenarios) = sweep_count {
        if tap_name.is_some() {
            return Err("--sweep and --tap do not go together".into());
        }
        return Ok(Mode::Sweep(SweepConfig {
            scenarios,
            seed: config.seed,
            jobs,
            repeat_every: 10,
            flash: config.flash,
        }));
    }
    Ok(match tap_name {
        Some(interface) => Mode::Tap(TapConfig {
            interface,
            address: address.0,
            prefix_len: address.1,
            seed: seed_given.then_some(config.seed),
            serve_for,
        }),
        None => Mode::Simulate(config),
    })
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: `{text}` is not a valid number"))
}

fn probability(flag: &str, text: &str) -> Result<Probability, String> {
    let p: f64 = number(flag, text)?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{flag}: {p} is not between 0 and 1"));
    }
    Ok(Probability::new(p))
}

fn cidr(text: &str) -> Result<([u8; 4], u8), String> {
    let bad = || format!("--address: `{text}` is not A.B.C.D/P");
    let (ip, prefix) = text.split_once('/').unwrap_or((text, "24"));
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    Ok((ip.octets(), prefix))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match parse(&args) {
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("error: {message}\nRun `txsock-firmware-sim --help` for the options.");
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Mode::Sweep(config) => run_sweep(&config),
        Mode::PowerCuts {
            runs,
            ops,
            seed,
            tear,
        } => {
            // A store panicking on a flash error is caught and counted; keep it off stderr.
            std::panic::set_hook(Box::new(|_| {}));
            match power_cut::random(runs, ops, seed, tear) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(problem) => {
                    println!("FAILED: {problem}");
                    ExitCode::FAILURE
                }
            }
        }
        Mode::Simulate(config) => match sim::run(&config) {
            Ok(report) => {
                println!("{report}");
                if report.clean() {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("error: the run was not clean (see above)");
                    ExitCode::FAILURE
                }
            }
            Err(error) => {
                eprintln!("error: simulation failed: {error}");
                ExitCode::FAILURE
            }
        },
        Mode::Tap(config) => match tap::serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `--sweep`: progress on stderr (a line rewritten in place on a terminal, a line per tenth
/// otherwise), each failure and the summary on stdout.
fn run_sweep(config: &SweepConfig) -> ExitCode {
    let terminal = std::io::stderr().is_terminal();
    let total = config.scenarios;
    let mut tenth = 0;
    // A scenario that panics is reported with the failures; keep the hook's copy off stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let report = sweep::sweep(
        config,
        std::time::Duration::from_millis(250),
        |done, failed| {
            let line = format!("sweep: {done}/{total} scenarios, {failed} failed");
            if terminal {
                eprint!("\r{line}");
                let _ = std::io::stderr().flush();
            } else if total > 0 && done * 10 / total > tenth {
                tenth = done * 10 / total;
                eprintln!("{line}");
            }
        },
    );
    if terminal {
        eprintln!();
    }
    for failure in &report.failures {
        println!(
            "FAILED scenario {}: {}\n    {}",
            failure.index, failure.problem, failure.command
        );
    }
    println!("{report}");
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
