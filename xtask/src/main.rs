//! `cargo xtask`: the project's own build tasks (see [`HELP`]).
//!
//! std only, no dependencies: it has to build on a fresh machine before anything it would
//! install is there.

mod bench;
mod board;
mod crash;
mod embassy;
mod fuzz;
// Shared with the end-to-end kit, which uses all of it; xtask only starts and stops clusters.
#[allow(dead_code)]
mod galera;
mod galera_bench;
mod mariadb;
mod mutants;
mod pgbench;
mod prerequisites;
mod qemu;
mod targets;
mod util;
mod windows;

use std::env;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use prerequisites::Need;
use util::{repo_root, run, Error};

const HELP: &str = "\
cargo xtask: txsock's build tasks

USAGE:
    cargo xtask <TASK> [OPTIONS]

TASKS:
    test            The whole test suite, as CI runs it (.ci/run). Steps, in order, stopping at
                    the first failure:
                      1. prerequisites  install missing tools (apt-get as root, else print
                                        the command to run and fail) and the rustfmt/clippy
                                        components (rustup component add)
                      2. fmt            cargo fmt --all -- --check, and the same for
                                        core/cortex-m-test, firmware-sim/cortex-m,
                                        firmware-sim/board and firmware-sim/targets (not
                                        workspace members)
                      3. clippy         cargo clippy --workspace --all-targets -- -D warnings,
                                        and firmware-sim/board and firmware-sim/targets for
                                        the host's target (--release)
                      4. test           cargo test --workspace, with TXSOCK_TEST_MYSQL_URL
                                        pointing at a throwaway MariaDB (mariadb-install-db
                                        into a temporary directory, mariadbd on a free
                                        loopback port and a socket there, stopped and
                                        deleted afterwards); a TXSOCK_TEST_MYSQL_URL already
                                        set is used instead. The Galera tests
                                        (tests/tests/galera.rs) start their own three-node
                                        cluster (xtask/src/galera.rs) and are required
                                        (TXSOCK_REQUIRE_GALERA=1): the short crash test on it
                                        takes about 1 to 2 minutes
                      5. qemu           what `cargo xtask qemu` does
                      6. tap            firmware-sim's device on a TAP interface in a network
                                        namespace (firmware-sim/tap-netns.sh), reached by
                                        `txsock client` from another namespace (192.0.2.0/24,
                                        no route out, deleted afterwards); prints `SKIPPED:
                                        <reason>` where there is no root, /dev/net/tun or
                                        namespace support
                      7. embassy        firmware-sim/embassy (the server on embassy-net, its
                                        own workspace): fmt, clippy, then its TAP binary in a
                                        network namespace reached by `txsock client` and
                                        `txsock mitm` from another (register, login,
                                        transfers, a replay and a tampered frame refused,
                                        server_busy past its 4 sessions); `SKIPPED: <reason>`
                                        as in `tap`. Its thumbv7em image is built and run by
                                        step 5
                      8. windows        txsock.exe cross-built for x86_64-pc-windows-gnu
                                        (target/windows; rustup's target if installed, else
                                        Debian's rustc-web with -Z build-std=std,panic_abort;
                                        mingw-w64 for SQLite and linking; the build time is
                                        printed), then tests/tests/windows.rs under Wine
                                        (/usr/lib/wine/wine64, a throwaway WINEPREFIX,
                                        127.0.0.1 only): txsock.exe user add, serve against
                                        the Linux client, Ctrl-C, ledger check, and
                                        txsock.exe client against the Linux server; installs
                                        gcc-mingw-w64-x86-64 and wine64 as root, else prints
                                        `SKIPPED: <reason>`
                      9. board          firmware-sim/board under QEMU: flash-check (the
                                        semihosting NOR flash against a new file), then
                                        tests/tests/board.rs: the image booted with a free
                                        port, `txsock client` registers, logs in and
                                        transfers (receipts, balances, a retried id), `txsock
                                        mitm --mode tamper` is caught, a bounded `txsock
                                        stress load`, the footprint against the device budget
                                        (96 KiB flash, 48 KiB RAM, 8 KiB stack; fails when
                                        over),
                                        and a SIGKILL of QEMU mid-transfers and a reboot:
                                        every acknowledged transfer still there exactly
                                        once, balances add up, same device secret
                     10. targets        the core and the device (with MemLedger and with
                                        the flash ledger) built (not run) for
                                        thumbv6m-none-eabi and riscv32imc-unknown-none-elf
                                        (firmware-sim/targets; rustup's targets if installed,
                                        else Debian's rustc-web with -Z build-std=core), and
                                        their linked sizes read from the ELF
    qemu            Build the images of core/cortex-m-test and firmware-sim/cortex-m for
                    thumbv7em-none-eabihf (release) into target/cortex-m and run each under
                    QEMU (Cortex-M4, mps2-an386, semihosting, 300 s timeout each), stopping at
                    the first that fails:
                      txsock-cortex-m-test  the self-test (both sessions, vectors)
                      server-engine         one ServerSession, ServerShared and MemLedger
                                            driven by a canned transcript: the server engine
                                            as a device links it
                      baseline              the runtime alone (start-up, semihosting, fmt,
                                            panic handler)
                      txsock-device         firmware-sim's device (smoltcp, 4 sessions,
                                            ledger) serving a scripted client over an
                                            in-memory lossy link: transfers, a replay, a
                                            tamper attempt
                      device-alone          the device alone, as a board links it
                      embassy-image         firmware-sim/embassy's server on embassy-net
                                            (Cortex-M executor, SysTick time driver, a
                                            stand-in network driver), booted to `accept`
                      device-flash          the device alone with the flash ledger on
                                            simulated flash (ledger calls and a reboot
                                            first): what the flash ledger costs
                    Prints each image's output, then a summary of their footprint lines
                    (`flash=.. ram=.. stack_peak=.. server_session=..`, bytes), and
                    `server_engine_net_flash` (server-engine minus baseline flash) and
                    `server_session` against the issue's budgets (48 KiB, 2 KiB), and the
                    device's flash, RAM and peak stack against its budgets (96 KiB, 48 KiB,
                    8 KiB) with MemLedger (device-alone, txsock-device) and with the flash
                    ledger (device-flash): fails, naming each figure, when one is over (the
                    80 KiB flash goal is reported). Uses rustup's thumbv7em-none-eabihf target if installed,
                    else Debian's rustc-web/cargo-web with -Z build-std=core, linked with a
                    rustup toolchain's rust-lld. Installs missing prerequisites first, as
                    `test` does.
    board           The txsock device on QEMU's mps2-an386 board (firmware-sim/board: Cortex-M4,
                    SMSC LAN9118 Ethernet, polled): builds the image as `qemu` does, boots it with
                    QEMU's user-mode network (the device is 10.0.2.15:11002, forwarded from
                    127.0.0.1:PORT), prints the address to use, and runs in the foreground until
                    Ctrl-C. The board's flash is target/board/flash.bin, a host file reached
                    through semihosting that persists between boots (a reboot, not a new board);
                    its ledger is firmware-sim's FlashLedger on it. A new one is provisioned
                    with an RNG seed from /dev/urandom.
        --port P        host port forwarded to the device [default: 11002]
        --fresh         erase the flash first (a new board)
        --test          run step 9 of `test` instead (flash-check and tests/tests/board.rs)
    targets         What step 10 of `test` does: the device built for thumbv6m-none-eabi and
                    riscv32imc-unknown-none-elf, with its linked sizes.
    embassy         What step 7 of `test` does.
    windows         What step 8 of `test` does: build txsock.exe and run the smoke test under
                    Wine (or print `SKIPPED: <reason>`).
    bench           Every performance figure of the design brief in one run, each next to
                    its anchor measured in the same run (about 5 minutes once built; not a
                    test, asserts nothing), written to target/bench/summary.md (a table:
                    figure, txsock, anchor, ratio, target, met?) and printed:
                      1. core   cargo bench -p txsock-core --bench frame_ratio: the rate
                                at which a logged-in ServerSession handles transfer frames,
                                against raw HMAC-SHA256 over the same bytes (target >= 0.33),
                                the two alternating in 200 rounds (about 10 s), each at the
                                1st percentile of its timed batches
                      2. durable  a throwaway PostgreSQL cluster (initdb in a temp dir, fsync
                                on, loopback port; as root it runs as `postgres`; Debian's
                                postgresql is installed if missing), pgbench -i -s 32, TPC-B
                                with 32 clients and with 1 (logged, for the median), stopped;
                                then txsock stress load --spawn with 32 clients (pipeline 8)
                                and with 1 (one transfer at a time), 15 s each: transfers/s
                                >= 10x pgbench tps, median round trip <= 1/3 of pgbench's;
                                then the 32-client load on a throwaway three-node Galera
                                cluster (xtask/src/galera.rs) with one `txsock serve` and with
                                three (clients spread over them): no target (2 shared cores:
                                correctness under contention, not scaling)
                      3. memory  txsock stress connections --spawn --count 10000 (<= 64 MiB)
                      4. attacks txsock stress mix --spawn --duration 20s (growth <= 2 MiB)
                    Builds txsock with --release. Each stress run's HTML report and JSON go
                    to target/bench/. A figure that cannot be measured says why in the table.
    crash           The crash test's long form (tests/tests/crash.rs): four clients transfer
                    between four accounts while `txsock serve` is killed with SIGKILL N times
                    at random moments under load and restarted; clients reconnect and retry
                    with the same transfer ids. Then, read from the database: every
                    acknowledged transfer journaled exactly once, nothing else journaled,
                    money conserved, no negative balance, `txsock ledger check` passes, and
                    every transfer id sent again gets its original result. Runs on SQLite,
                    then on MariaDB (TXSOCK_TEST_MYSQL_URL if set, else a throwaway server as
                    in `test`), and prints each run's figures (kills, transfers acknowledged,
                    retries, lost: 0). The short form (5 kills) runs in `test`. Then on a
                    throwaway three-node Galera cluster (tests/tests/galera.rs, one `txsock
                    serve` per node, clients spread over the three and moving to the next
                    server when theirs fails): each of N rounds SIGKILLs a random server
                    (restarted) and a random database node (restarted, rejoins by IST/SST)
                    at random moments under load; the same checks run against every node.
                    The short form (2 rounds) runs in `test`. Installs missing prerequisites
                    first, as `test` does.
        --rounds N      kills (Galera: rounds) per backend [default: 20]
        --backend B     all, sqlite, mysql or galera [default: all]
    fuzz            cargo +nightly fuzz build, then for each target that `cargo +nightly fuzz
                    list` lists in fuzz/, run `cargo +nightly fuzz run <target>
                    fuzz/corpus-local/<target> fuzz/corpus/<target> --
                    -max_total_time=<SECONDS> -max_len=4096 -dict=fuzz/protocol.dict` (new
                    inputs go to corpus-local/; the checked-in seeds in corpus/ stay as they
                    are). Runs every target even if one fails, then prints each one's
                    executions per second. Installs cargo-fuzz (cargo install cargo-fuzz) if
                    it is missing.
        --seconds N     time per target, in seconds [default: 60]
    mutants [FILES…]
                    cargo-mutants (on demand, not a CI step; see docs/TESTING.md), one file
                    per run: `cargo mutants --package P --file F --jobs 1` for each of
                    FILES (paths from the repository root, under core/, host/ or
                    firmware-sim/; P is that crate), or for every core source file that
                    `cargo mutants --list-files` lists when none is given. Each mutant is
                    judged by `cargo test -p P --tests` (unit and integration tests;
                    the host's stores by the binary's unit tests, the device by its
                    device, scenario and sim tests, the flash ledger by the crate's unit
                    tests and its power_cut test: the whole suites take minutes per
                    mutant), with PROPTEST_CASES=16 unless set (every property test
                    still runs, with fewer cases: the core's suite costs a third of the
                    CPU). Exclusions, each justified, are in .cargo/mutants.toml; first
                    warns about each exclude_re there that matches no mutant (stale). Each
                    run builds its scratch copies in target/mutants/build (build-2, … for
                    the other parallel runs and for other xtask runs at the same time, each
                    claimed by a .lock file; under CARGO_TARGET_DIR if set), apart from
                    the worktree's builds, so dependencies build once; each file's results
                    go to target/mutants/<file>/. Prints a table (caught, missed, timeouts,
                    unviable, score = caught / viable), the timeouts and the missed
                    mutants, and fails if any was missed or if cargo-mutants could not
                    judge (e.g. the unmutated tests failed). host/src/store/mysql.rs and
                    mod.rs get a throwaway MariaDB, as in `test`. Installs cargo-mutants as
                    root (cargo install cargo-mutants --locked), else says to. Each mutant
                    costs a build and a test run: 10 to 40 s for the core on the shared
                    2-core machine, which has about 890 of them.
        --all           also the host's store module (host/src/store/) and the firmware
                        device (firmware-sim/src/device.rs)
        --re REGEX      only the mutants whose name matches REGEX (cargo-mutants' --re, e.g.
                        `--re 'SqliteStore::deposit'`), to re-run a subset of a file
        --opt-level N   the core's opt-level in mutant builds [default: 0]
        --timeout S     a mutant's tests' time limit in seconds [default: cargo-mutants'
                        own, five times the unmutated tests' time]
        --parallel N    run N files at once, each in its own build directory (two runs
                        must never share one: each overwrites the other's mutant under its
                        tests) [default: 1]
        --baseline-skip skip the unmutated baseline (cargo-mutants' --baseline=skip, which
                        otherwise builds and tests the unmutated tree first, 1 to 8 minutes
                        per run): for re-running --re slices of a file whose unmutated tests
                        you have just seen pass. Needs --timeout (no baseline time to derive
                        one from). Run the file's tests first: with a failing unmutated
                        test, every mutant would count as caught
        --check         only check .cargo/mutants.toml: fail if an exclude_re matches no
                        mutant (about a minute)

OPTIONS:
    -h, --help      Print this help

Exit status: 0 on success, 1 if a step failed, 2 on a usage error.
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let task = match parse(&args) {
        Ok(task) => task,
        Err(message) => {
            eprintln!("error: {message}\nRun `cargo xtask --help` for the tasks and options.");
            return ExitCode::from(2);
        }
    };
    let result = match task {
        Task::Help => {
            print!("{HELP}");
            Ok(())
        }
        Task::Test => test(),
        Task::Qemu => qemu::qemu(),
        Task::Board { test: true, .. } => board_test(&repo_root()),
        Task::Board { port, fresh, .. } => board::run(port, fresh),
        Task::Targets => targets::targets(&repo_root()),
        Task::Embassy => embassy::test(&repo_root()),
        Task::Windows => windows::test(&repo_root()),
        Task::Bench => bench::bench(),
        Task::Fuzz { seconds } => fuzz::fuzz(seconds),
        Task::Crash { rounds, backends } => crash::crash(&repo_root(), rounds, backends),
        Task::Mutants(request) => mutants::mutants(&request),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    Help,
    Test,
    Qemu,
    Board {
        port: u16,
        fresh: bool,
        test: bool,
    },
    Targets,
    Embassy,
    Windows,
    Bench,
    Fuzz {
        seconds: u64,
    },
    Crash {
        rounds: u32,
        backends: crash::Backends,
    },
    Mutants(mutants::Request),
}

fn parse(args: &[String]) -> Result<Task, String> {
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        return Ok(Task::Help);
    }
    let Some((task, rest)) = args.split_first() else {
        return Err("no task given".into());
    };
    let task =
        match task.as_str() {
            "help" => Task::Help,
            "test" => Task::Test,
            "qemu" => Task::Qemu,
            "targets" => Task::Targets,
            "embassy" => Task::Embassy,
            "windows" => Task::Windows,
            "bench" => Task::Bench,
            "fuzz" => {
                let mut seconds = 60;
                for (option, value) in options(rest, &["--seconds"], "fuzz")? {
                    debug_assert_eq!(option, "--seconds");
                    seconds = positive(option, value)?;
                }
                return Ok(Task::Fuzz { seconds });
            }
            "board" => {
                let mut port = board::DEFAULT_PORT;
                let is_flag = |arg: &String| arg == "--fresh" || arg == "--test";
                let flags: Vec<String> = rest.iter().filter(|a| !is_flag(a)).cloned().collect();
                let fresh = rest.iter().any(|arg| arg == "--fresh");
                let test = rest.iter().any(|arg| arg == "--test");
                for (option, value) in options(&flags, &["--port"], "board")? {
                    debug_assert_eq!(option, "--port");
                    port = positive(option, value)?;
                }
                return Ok(Task::Board { port, fresh, test });
            }
            "crash" => {
                let (mut rounds, mut backends) = (20, crash::Backends::All);
                for (option, value) in options(rest, &["--rounds", "--backend"], "crash")? {
                    match option {
                        "--rounds" => rounds = positive(option, value)?,
                        _ => backends = crash::Backends::parse(value)?,
                    }
                }
                return Ok(Task::Crash { rounds, backends });
            }
            "mutants" => {
                let mut request = mutants::Request {
                    parallel: 1,
                    ..mutants::Request::default()
                };
                let mut args = rest.iter();
                while let Some(arg) = args.next() {
                    let (option, inline) = match arg.split_once('=') {
                        Some((option, value)) if option.starts_with("--") => (option, Some(value)),
                        _ => (arg.as_str(), None),
                    };
                    let mut value =
                        |what: &str| match inline.or_else(|| args.next().map(String::as_str)) {
                            Some(value) if !value.is_empty() => Ok(value.to_string()),
                            _ => Err(format!("`{option}` needs {what}")),
                        };
                    match option {
                        "--all" if inline.is_none() => request.all = true,
                        "--check" if inline.is_none() => request.check = true,
                        "--baseline-skip" if inline.is_none() => request.baseline_skip = true,
                        "--re" => request.re = Some(value("a regular expression")?),
                        "--opt-level" => {
                            request.opt_level = match value("0, 1, 2 or 3")?.parse() {
                                Ok(n) if n <= 3 => Some(n),
                                _ => return Err("`--opt-level` needs 0, 1, 2 or 3".to_string()),
                            }
                        }
                        "--timeout" => {
                            request.timeout = match value("a number of seconds")?.parse() {
                                Ok(n) if n >= 1 => Some(n),
                                _ => {
                                    return Err("`--timeout` needs a number of seconds, at least 1"
                                        .to_string())
                                }
                            }
                        }
                        "--parallel" => {
                            request.parallel = match value("a number of files")?.parse() {
                                Ok(n) if n >= 1 => n,
                                _ => {
                                    return Err("`--parallel` needs a number of files, at least 1"
                                        .to_string())
                                }
                            }
                        }
                        option if option.starts_with('-') => {
                            return Err(format!("unexpected argument `{arg}` for `mutants`"))
                        }
                        file => request.files.push(file.to_string()),
                    }
                }
                if request.baseline_skip && request.timeout.is_none() {
                    return Err(
                        "`--baseline-skip` needs `--timeout S`: without the unmutated \
                                baseline there is no test time to derive a mutant's limit from"
                            .to_string(),
                    );
                }
                return Ok(Task::Mutants(request));
            }
            other => return Err(format!("unknown task `{other}`")),
        };
    match rest.first() {
        Some(arg) => Err(format!("unexpected argument `{arg}`")),
        None => Ok(task),
    }
}

/// A task's `--option VALUE` / `--option=VALUE` pairs, each option one of `known`.
fn options<'a>(
    args: &'a [String],
    known: &[&'static str],
    task: &str,
) -> Result<Vec<(&'static str, &'a str)>, String> {
    let mut pairs = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg.as_str(), None),
        };
        let Some(&option) = known.iter().find(|&&known| known == name) else {
            return Err(format!("unexpected argument `{arg}` for `{task}`"));
        };
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .map(String::as_str)
                .ok_or_else(|| format!("{option} needs a value"))?,
        };
        pairs.push((option, value));
    }
    Ok(pairs)
}

/// The value of `option` as a positive integer.
fn positive<T: std::str::FromStr + Default + PartialOrd>(
    option: &str,
    value: &str,
) -> Result<T, String> {
    value
        .parse()
        .ok()
        .filter(|number| *number > T::default())
        .ok_or_else(|| format!("{option}: `{value}` is not a positive integer"))
}

/// A step of `cargo xtask test`: its name and what it does.
type Step<'a> = (&'static str, &'a dyn Fn() -> Result<(), Error>);

/// `cargo xtask test`: every step, in order, stopping at the first failure.
fn test() -> Result<(), Error> {
    let root = repo_root();
    let started = Instant::now();
    let steps: [Step; 10] = [
        ("prerequisites", &|| {
            prerequisites::ensure(&[Need::Tests, Need::Qemu])?;
            prerequisites::ensure_rustup_components(&["rustfmt", "clippy"])
        }),
        ("fmt", &|| {
            run(cargo(&root).args(["fmt", "--all", "--", "--check"]))?;
            let board = board::manifest(&root);
            let ports = targets::manifest(&root);
            for manifest in qemu::image_manifests(&root)
                .into_iter()
                .chain([board, ports])
            {
                run(cargo(&root)
                    .args(["fmt", "--manifest-path"])
                    .arg(manifest)
                    .args(["--", "--check"]))?;
            }
            Ok(())
        }),
        ("clippy", &|| {
            run(cargo(&root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            board::clippy(&root, cargo(&root).get_program())
        }),
        ("test", &|| {
            let mut test = cargo(&root);
            test.args(["test", "--workspace"]);
            // The Galera tests start their own cluster; step 1 installed what it needs.
            test.env("TXSOCK_REQUIRE_GALERA", "1");
            // Kept until the tests are done, then stopped (also when they failed).
            let _mariadb = mariadb::provide(&mut test)?;
            run(&mut test)
        }),
        ("qemu", &qemu::qemu),
        ("tap", &|| {
            // The device on a TAP interface in a network namespace, reached by the real
            // `txsock client` from another one; the test prints `SKIPPED: <reason>` where the
            // machine has no root, /dev/net/tun or namespaces.
            build_txsock(&root)?;
            run(cargo(&root).args([
                "test",
                "-p",
                "txsock-firmware-sim",
                "--test",
                "tap",
                "--",
                "--ignored",
                "--nocapture",
            ]))
        }),
        ("embassy", &|| embassy::test(&root)),
        ("windows", &|| windows::test(&root)),
        ("board", &|| board_test(&root)),
        ("targets", &|| targets::targets(&root)),
    ];
    let count = steps.len();
    for (index, (name, step)) in steps.iter().enumerate() {
        println!("==> [{}/{count}] {name}", index + 1);
        let step_started = Instant::now();
        let result = step();
        let elapsed = step_started.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("<== [{}/{count}] {name}: ok in {elapsed:.1} s", index + 1),
            Err(error) => {
                println!(
                    "<== [{}/{count}] {name}: FAILED after {elapsed:.1} s",
                    index + 1
                );
                return Err(Error::new(format!("step `{name}` failed: {error}")));
            }
        }
    }
    println!(
        "all {count} steps passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Step `board` (and `cargo xtask board --test`): the device on QEMU's mps2-an386 with its
/// LAN9118, reached by the real tools (see [`board::prepare_test`] and tests/tests/board.rs).
fn board_test(root: &Path) -> Result<(), Error> {
    let env = board::prepare_test(root)?;
    build_txsock(root)?;
    run(cargo(root)
        .args(["test", "-p", "txsock-e2e", "--test", "board"])
        .args(["--", "--ignored", "--nocapture"])
        .envs(env))
}

/// Builds the `txsock` binary (dev profile) that the end-to-end tests start.
fn build_txsock(root: &Path) -> Result<(), Error> {
    run(cargo(root).args(["build", "-p", "txsock-host", "--bin", "txsock"]))
}

/// The cargo that runs this xtask (same toolchain), in the repository root.
fn cargo(root: &Path) -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Task, String> {
        parse(
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn parses_tasks() {
        assert_eq!(parse_str("test"), Ok(Task::Test));
        assert_eq!(parse_str("qemu"), Ok(Task::Qemu));
        assert_eq!(parse_str("targets"), Ok(Task::Targets));
        assert_eq!(parse_str("windows"), Ok(Task::Windows));
        assert_eq!(parse_str("embassy"), Ok(Task::Embassy));
        assert_eq!(parse_str("bench"), Ok(Task::Bench));
        assert_eq!(parse_str("--help"), Ok(Task::Help));
        assert_eq!(parse_str("qemu -h"), Ok(Task::Help));
        let board = |port, fresh, test| Ok(Task::Board { port, fresh, test });
        assert_eq!(parse_str("board"), board(11002, false, false));
        assert_eq!(
            parse_str("board --fresh --port 12000"),
            board(12000, true, false)
        );
        assert_eq!(parse_str("board --port=12001"), board(12001, false, false));
        assert_eq!(parse_str("board --test"), board(11002, false, true));
        assert_eq!(parse_str("fuzz"), Ok(Task::Fuzz { seconds: 60 }));
        assert_eq!(parse_str("fuzz --seconds 5"), Ok(Task::Fuzz { seconds: 5 }));
        assert_eq!(parse_str("fuzz --seconds=7"), Ok(Task::Fuzz { seconds: 7 }));
        let crash = |rounds, backends| Ok(Task::Crash { rounds, backends });
        assert_eq!(parse_str("crash"), crash(20, crash::Backends::All));
        assert_eq!(
            parse_str("crash --rounds 30 --backend sqlite"),
            crash(30, crash::Backends::Sqlite)
        );
        assert_eq!(
            parse_str("crash --backend=mariadb --rounds=21"),
            crash(21, crash::Backends::Mysql)
        );
        let mutants = |files: &[&str], all, re: Option<&str>| {
            Ok(Task::Mutants(mutants::Request {
                files: files.iter().map(|f| f.to_string()).collect(),
                all,
                re: re.map(String::from),
                parallel: 1,
                opt_level: None,
                timeout: None,
                check: false,
                baseline_skip: false,
            }))
        };
        assert_eq!(parse_str("mutants"), mutants(&[], false, None));
        assert_eq!(
            parse_str("mutants core/src/replay.rs --all"),
            mutants(&["core/src/replay.rs"], true, None)
        );
        assert_eq!(
            parse_str("mutants host/src/store/sqlite.rs --re deposit"),
            mutants(&["host/src/store/sqlite.rs"], false, Some("deposit"))
        );
        assert_eq!(
            parse_str("mutants --re=fn\\s x.rs"),
            mutants(&["x.rs"], false, Some("fn\\s"))
        );
        assert_eq!(
            parse_str("mutants --re=a=b"),
            mutants(&[], false, Some("a=b"))
        );
        assert!(parse_str("mutants --re").is_err());
        assert!(parse_str("mutants --re=").is_err());
        let parallel = |text| match parse_str(text) {
            Ok(Task::Mutants(request)) => Ok((request.parallel, request.files)),
            other => Err(format!("{other:?}")),
        };
        assert_eq!(
            parallel("mutants --parallel 2 a.rs b.rs"),
            Ok((2, vec!["a.rs".into(), "b.rs".into()]))
        );
        assert_eq!(parallel("mutants --parallel=3"), Ok((3, vec![])));
        assert!(parse_str("mutants --parallel 0").is_err());
        assert!(matches!(
            parse_str("mutants --opt-level 1"),
            Ok(Task::Mutants(mutants::Request {
                opt_level: Some(1),
                ..
            }))
        ));
        assert!(parse_str("mutants --opt-level 4").is_err());
        assert!(matches!(
            parse_str("mutants --timeout=300"),
            Ok(Task::Mutants(mutants::Request {
                timeout: Some(300),
                ..
            }))
        ));
        assert!(parse_str("mutants --timeout 0").is_err());
        assert!(matches!(
            parse_str("mutants a.rs --baseline-skip --timeout 300"),
            Ok(Task::Mutants(mutants::Request {
                baseline_skip: true,
                timeout: Some(300),
                ..
            }))
        ));
        assert!(
            parse_str("mutants a.rs --baseline-skip").is_err(),
            "no baseline, no derived timeout"
        );
        assert!(parse_str("mutants --baseline-skip=yes --timeout 9").is_err());
        assert!(parse_str("mutants --opt-level s").is_err());
        assert!(parse_str("mutants --parallel").is_err());
        assert!(parse_str("mutants --parallel two").is_err());
        assert!(parse_str("mutants --all=yes").is_err());
        assert!(matches!(
            parse_str("mutants --check"),
            Ok(Task::Mutants(mutants::Request { check: true, .. }))
        ));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse_str("").is_err());
        assert!(parse_str("deploy").is_err());
        assert!(parse_str("test extra").is_err());
        assert!(parse_str("fuzz --seconds").is_err());
        assert!(parse_str("fuzz --seconds 0").is_err());
        assert!(parse_str("fuzz --seconds x").is_err());
        assert!(parse_str("fuzz --minutes 1").is_err());
        assert!(parse_str("board --port 0").is_err());
        assert!(parse_str("board --port 70000").is_err());
        assert!(parse_str("board --fast").is_err());
        assert!(parse_str("crash --rounds 0").is_err());
        assert!(parse_str("crash --rounds").is_err());
        assert!(parse_str("crash --backend postgres").is_err());
        assert_eq!(
            parse_str("crash --backend galera --rounds 3"),
            Ok(Task::Crash {
                rounds: 3,
                backends: crash::Backends::Galera
            })
        );
        assert!(parse_str("crash --seconds 5").is_err());
        assert!(parse_str("mutants --jobs 2").is_err());
    }
}
