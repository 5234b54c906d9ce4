//! `cargo xtask mutants [--all] [FILES…]`: cargo-mutants, one run per source file.
//!
//! Each file's mutants are built and tested against the tests of the file's own package
//! (`cargo test -p PACKAGE --tests`: unit and integration tests; no doc tests, examples or
//! benches), one mutant at a time per run (`-j 1`: the machine is shared); `--parallel N`
//! runs N files at once, each in its own build directory. Exclusions, each justified, are in
//! `.cargo/mutants.toml`, checked first for patterns that match nothing. docs/TESTING.md
//! lists the survivors and why each is acceptable, and what judging a mutant costs.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use crate::mariadb;
use crate::prerequisites::is_root;
use crate::util::{self, display, Error};

/// The files whose mutants need a MariaDB server to be judged: the MySQL store, and the
/// store module, whose `Store` trait's default methods are the MySQL store's (only a MySQL
/// test sees `Store::commits_locally`'s default).
const NEEDS_MARIADB: &[&str] = &["host/src/store/mysql.rs", "host/src/store/mod.rs"];

/// The host's storage module and the firmware's device: mutated only with `--all`.
const HOST_AND_DEVICE: &[&str] = &[
    "host/src/store/mod.rs",
    "host/src/store/failure.rs",
    "host/src/store/row.rs",
    "host/src/store/sqlite.rs",
    "host/src/store/mysql.rs",
    "firmware-sim/src/device.rs",
];

/// The core's `opt-level` in mutant builds unless `--opt-level` says otherwise: unoptimised.
/// The workspace builds the core at `opt-level = 1` for fast tests; a mutant's build is then
/// about three times slower (16 s against 6 s for the core's unit tests on the shared 2-core
/// machine, and a mutant rebuilds 12 test binaries), more than the test time it saves once
/// the property tests run [`PROPTEST_CASES`] cases (docs/TESTING.md, "Judging cost").
pub const CORE_OPT_LEVEL: u8 = 0;

/// The cargo argument that builds the core at `opt_level` for a mutant.
fn core_opt_level_arg(opt_level: u8) -> String {
    format!("--config=profile.dev.package.txsock-core.opt-level={opt_level}")
}

/// The number of cases each property test runs for a mutant (proptest 1.12 reads
/// `PROPTEST_CASES` and lets it override the cases a test configures; an explicit
/// `PROPTEST_CASES` in the environment is passed on instead). Every test still runs; the
/// core's property tests (64, 48 and 4096 cases of their own) took two thirds of its
/// suite's CPU.
const PROPTEST_CASES: (&str, &str) = ("PROPTEST_CASES", "16");

/// The tests that judge a file's mutants, by path prefix (the first that matches): the
/// package's unit and integration tests (no examples, benches or doc tests, which judge no
/// mutant here), except where that suite is too slow to run once per mutant.
///
/// - The host's stores: the binary's unit tests, which hold the store conformance suite
///   (every store against the same contract: money, exactly once, refusals, lockout,
///   concurrency) and the stores' own tests. The command-line tests (`host/tests/cli.rs`)
///   start the binary for each case and add minutes per mutant.
/// - The firmware device: the tests that run it over the simulated link (`device`:
///   deadlines, hang-ups, garbage, refusals; `scenario`: transfers, replay and tampering;
///   `sim`: a thousand transfers at 10 % loss, more clients than sessions, outages). The
///   power-cut, sweep and tap tests take 10+ minutes together under load and test the flash
///   ledger, the fault sweep and a real TAP device rather than the device's logic.
/// - The firmware's flash ledger: the crate's unit tests (the ledger's own, the power-cut
///   harness's) and the power-cut test (a cut at every write and erase of a scenario, and
///   random torn cuts), about 40 s at load 19; not the simulator, sweep and TAP tests.
const JUDGES: &[(&str, &[&str])] = &[
    ("host/", &["--bin", "txsock"]),
    (
        "firmware-sim/src/device.rs",
        &["--test", "device", "--test", "scenario", "--test", "sim"],
    ),
    (
        "firmware-sim/src/flash_ledger.rs",
        &["--lib", "--test", "power_cut"],
    ),
    ("", &["--tests"]),
];

/// The cargo arguments that select the tests judging `file`'s mutants ([`JUDGES`]).
fn judges_of(file: &str) -> &'static [&'static str] {
    let file = file.trim_start_matches("./");
    JUDGES
        .iter()
        .find(|(prefix, _)| file.starts_with(prefix))
        .map_or(&["--tests"], |(_, args)| args)
}

/// How to install cargo-mutants, said when it is missing and run when root.
const INSTALL: &[&str] = &["install", "cargo-mutants", "--locked"];

/// One file's outcome, read from cargo-mutants' `mutants.out`.
struct Outcome {
    file: String,
    seconds: f64,
    caught: usize,
    missed: Vec<String>,
    timeouts: Vec<String>,
    unviable: usize,
}

impl Outcome {
    /// Caught over viable (caught, missed and timed out), in percent; `None` without viable
    /// mutants.
    fn score(&self) -> Option<f64> {
        let viable = self.caught + self.missed.len() + self.timeouts.len();
        (viable > 0).then(|| 100.0 * self.caught as f64 / viable as f64)
    }
}

/// The package whose tests judge `file`'s mutants.
fn package_of(file: &str) -> Result<&'static str, Error> {
    let file = file.trim_start_matches("./");
    [
        ("core/", "txsock-core"),
        ("host/", "txsock-host"),
        ("firmware-sim/", "txsock-firmware-sim"),
    ]
    .into_iter()
    .find(|(dir, _)| file.starts_with(dir))
    .map(|(_, package)| package)
    .ok_or_else(|| {
        Error::new(format!(
            "{file}: not in core/, host/ or firmware-sim/ (give paths from the repository root)"
        ))
    })
}

/// The core's source files that cargo-mutants would mutate (its `--list-files`, which
/// honours the exclusions in `.cargo/mutants.toml`).
fn core_files(root: &Path) -> Result<Vec<String>, Error> {
    let listed =
        util::output(cargo_mutants(root).args(["--list-files", "--package", "txsock-core"]))?;
    let files: BTreeSet<String> = listed
        .lines()
        .map(str::trim)
        .filter(|line| line.ends_with(".rs"))
        .map(String::from)
        .collect();
    if files.is_empty() {
        return Err(Error::new(
            "`cargo mutants --list-files` lists no core files",
        ));
    }
    Ok(files.into_iter().collect())
}

fn cargo_mutants(root: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root).arg("mutants");
    command
}

/// Installs cargo-mutants when missing (as root), or says exactly what to run.
fn ensure_cargo_mutants(root: &Path) -> Result<(), Error> {
    if util::succeeds(cargo_mutants(root).arg("--version")) {
        return Ok(());
    }
    let install = format!("cargo {}", INSTALL.join(" "));
    if !is_root() {
        return Err(Error::new(format!(
            "cargo-mutants is missing. Install it (a few minutes to compile) with:\n    {install}"
        )));
    }
    println!("cargo-mutants is missing: installing it ({install})");
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    util::run(command.args(INSTALL))
}

/// What `cargo xtask mutants` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The files to mutate (all of the core's when empty).
    pub files: Vec<String>,
    /// Also the host's store module and the firmware device.
    pub all: bool,
    /// Only the mutants whose name matches this (cargo-mutants' `--re`).
    pub re: Option<String>,
    /// Files run at once, each in a build directory of its own (at least 1).
    pub parallel: usize,
    /// The core's `opt-level` in mutant builds ([`CORE_OPT_LEVEL`] when `None`).
    pub opt_level: Option<u8>,
    /// A mutant's tests' time limit in seconds (cargo-mutants' `--timeout`; by default five
    /// times the unmutated tests' time, twenty minutes on the loaded machine).
    pub timeout: Option<u32>,
    /// Only check that every `exclude_re` of `.cargo/mutants.toml` still matches a mutant.
    pub check: bool,
    /// Skip the unmutated baseline (cargo-mutants' `--baseline=skip`): for re-running a
    /// `--re` slice of a file whose unmutated tests are known to pass, the baseline (a build
    /// and a full test run, 1 to 8 minutes on the loaded machine) is paid once, not per slice.
    /// Needs `timeout`: without a baseline there is no test time to derive a limit from.
    pub baseline_skip: bool,
}

/// Runs cargo-mutants on the requested files (all of the core's when none; with `all`, also
/// the host's store module and the firmware device), `parallel` files at a time, then prints
/// each file's score and every surviving mutant; with `re`, only the mutants whose name
/// matches it. Warns first about exclusions that match no mutant (with `check`, only that,
/// and fails if any is stale). Fails if any mutant was missed, or if cargo-mutants itself
/// failed (its baseline, the unmutated tree's tests, failed; or it could not start).
pub fn mutants(request: &Request) -> Result<(), Error> {
    let root = util::repo_root();
    ensure_cargo_mutants(&root)?;
    let stale = stale_exclusions(&root)?;
    for re in &stale {
        println!("warning: .cargo/mutants.toml: exclude_re {re:?} matches no mutant (stale: fix or remove it)");
    }
    if request.check {
        return if stale.is_empty() {
            println!("every exclude_re in .cargo/mutants.toml matches a mutant");
            Ok(())
        } else {
            Err(Error::new(format!(
                "{} exclude_re patterns of .cargo/mutants.toml match no mutant",
                stale.len()
            )))
        };
    }
    let mut files: Vec<String> = if request.files.is_empty() {
        core_files(&root)?
    } else {
        request.files.clone()
    };
    if request.all {
        for file in HOST_AND_DEVICE {
            if !files.iter().any(|f| f == file) {
                files.push((*file).to_string());
            }
        }
    }
    for file in &files {
        package_of(file)?;
        if !root.join(file).is_file() {
            return Err(Error::new(format!("{file}: no such file")));
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out_root = target.join("mutants");
    fs::create_dir_all(&out_root)
        .map_err(|e| Error::new(format!("creating {}: {e}", out_root.display())))?;
    let parallel = request.parallel.clamp(1, files.len().max(1));
    // Each worker takes the next file from the queue and runs it in its own build directory.
    let queue = Mutex::new(files.iter().enumerate().collect::<VecDeque<_>>());
    let results: Mutex<Vec<Option<Result<Outcome, Error>>>> =
        Mutex::new(files.iter().map(|_| None).collect());
    let failed = AtomicBool::new(false);
    let claims = claim_build_dirs(&out_root, parallel)?;
    thread::scope(|scope| {
        for claim in &claims {
            let (queue, results, failed) = (&queue, &results, &failed);
            let (root, out_root, re) = (&root, &out_root, request.re.as_deref());
            let opt_level = request.opt_level.unwrap_or(CORE_OPT_LEVEL);
            let limits = Limits {
                timeout: request.timeout,
                baseline_skip: request.baseline_skip,
            };
            scope.spawn(move || {
                let build_dir = &claim.dir;
                while !failed.load(Ordering::Relaxed) {
                    let Some((index, file)) = lock(queue).pop_front() else {
                        break;
                    };
                    let result = run_file(
                        root,
                        out_root,
                        build_dir,
                        (file, re),
                        (opt_level, limits),
                        parallel > 1,
                    );
                    failed.fetch_or(result.is_err(), Ordering::Relaxed);
                    lock(results)[index] = Some(result);
                }
            });
        }
    });
    let mut outcomes = Vec::new();
    for result in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match result {
            Some(Ok(outcome)) => outcomes.push(outcome),
            Some(Err(error)) => return Err(error),
            // Not started: another file failed first.
            None => {}
        }
    }
    report(&outcomes)
}

/// Locks `mutex`, also if a worker panicked while holding it (the data is a queue or a
/// list of results, whole at every step).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The build directory of parallel worker `worker` (from 0): `build`, `build-2`, ….
///
/// cargo-mutants builds a scratch copy of the tree per run. All copies of one worker build
/// into one directory of their own, so dependencies build once for every file (a copy left
/// to its own `target/` rebuilds them all, minutes per file). Never the workspace's, and
/// never another worker's: path crates get the same artefact names from any copy, so a
/// second build in the same directory (the worktree's, or another file's run) overwrites
/// the mutant's `txsock-core` under its tests, which then judge the wrong code (two runs
/// sharing one directory reported false "missed" mutants).
fn build_dir(out_root: &Path, worker: usize) -> PathBuf {
    match worker {
        0 => out_root.join("build"),
        n => out_root.join(format!("build-{}", n + 1)),
    }
}

/// A build directory this process has claimed: no other `cargo xtask mutants` builds in it
/// until the claim is dropped (which removes its lock file).
struct Claim {
    dir: PathBuf,
    lock: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock);
    }
}

/// The most build directories looked at for a free one (each holds a few hundred MB).
const MAX_BUILD_DIRS: usize = 8;

/// Claims `count` build directories under `out_root` that no other running `cargo xtask
/// mutants` holds, lowest first ([`build_dir`]), each by creating `<dir>.lock` holding this
/// process's id. A lock whose process is gone (a run that was killed) is taken over. So two
/// runs started separately never share a directory either (the same false "missed" as two
/// parallel runs sharing one).
fn claim_build_dirs(out_root: &Path, count: usize) -> Result<Vec<Claim>, Error> {
    let mut claims = Vec::new();
    let mut n = 0;
    while claims.len() < count {
        if n >= MAX_BUILD_DIRS {
            return Err(Error::new(format!(
                "no free build directory under {} (each of {MAX_BUILD_DIRS} has a \
                 running `cargo xtask mutants`: its `.lock` file names the process)",
                out_root.display()
            )));
        }
        let dir = build_dir(out_root, n);
        let lock = dir.with_extension("lock");
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut file) => {
                use std::io::Write;
                let _ = write!(file, "{}", std::process::id());
                claims.push(Claim { dir, lock });
                n += 1;
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                if holder_is_gone(&lock) {
                    // Taken over: try the same directory again.
                    let _ = fs::remove_file(&lock);
                } else {
                    n += 1;
                }
            }
            Err(error) => {
                return Err(Error::new(format!("creating {}: {error}", lock.display())));
            }
        }
    }
    Ok(claims)
}

/// Whether the process named in `lock` has ended (Linux's `/proc`; elsewhere, and for a lock
/// that cannot be read, it is taken to be running: a directory is then skipped, never
/// shared).
fn holder_is_gone(lock: &Path) -> bool {
    let Ok(text) = fs::read_to_string(lock) else {
        return false;
    };
    match text.trim().parse::<u32>() {
        Ok(pid) => {
            Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.to_string()).exists()
        }
        Err(_) => false,
    }
}

/// Where the run of `file` in `build_dir` keeps its results: `target/mutants/<file>` for the
/// first build directory, `<file>-2`, … for the others ([`build_dir`]), so that two runs of
/// one file at the same time (a second `cargo xtask mutants` with other `--re`) never write
/// into each other's `mutants.out`.
fn results_dir(out_root: &Path, build_dir: &Path, file: &str) -> PathBuf {
    let worker = build_dir
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_prefix("build"))
        .unwrap_or_default();
    out_root.join(format!("{}{worker}", file.replace(['/', '.'], "_")))
}

/// How long a mutant's tests may run, and whether the unmutated baseline runs first.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// cargo-mutants' `--timeout` in seconds (its own default when `None`).
    timeout: Option<u32>,
    /// cargo-mutants' `--baseline=skip`.
    baseline_skip: bool,
}

/// cargo-mutants' arguments for `limits`.
fn limit_args(limits: Limits) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(timeout) = limits.timeout {
        args.push(format!("--timeout={timeout}"));
    }
    if limits.baseline_skip {
        args.push("--baseline=skip".to_string());
    }
    args
}

/// Runs cargo-mutants on one file with `build_dir`; with `quiet`, its output goes to a log
/// file beside the results (two runs' progress lines would interleave on the terminal).
fn run_file(
    root: &Path,
    out_root: &Path,
    build_dir: &Path,
    (file, re): (&str, Option<&str>),
    (opt_level, limits): (u8, Limits),
    quiet: bool,
) -> Result<Outcome, Error> {
    let package = package_of(file)?;
    let out = results_dir(out_root, build_dir, file);
    let mut command = cargo_mutants(root);
    command
        .env("CARGO_TARGET_DIR", build_dir)
        .args(["--package", package, "--file", file, "--jobs", "1"])
        .arg("--output")
        .arg(&out)
        .arg(format!("--cargo-arg={}", core_opt_level_arg(opt_level)))
        .args(
            judges_of(file)
                .iter()
                .map(|arg| format!("--cargo-arg={arg}")),
        );
    if std::env::var_os(PROPTEST_CASES.0).is_none() {
        command.env(PROPTEST_CASES.0, PROPTEST_CASES.1);
    }
    if let Some(re) = re {
        command.args(["--re", re]);
    }
    command.args(limit_args(limits));
    // The MySQL store's tests need a server: a throwaway MariaDB, as in `cargo xtask test`
    // ([`NEEDS_MARIADB`]). The other files' mutants are judged without it (the conformance
    // suite skips MySQL), which saves its tests' time on every mutant.
    let _mariadb = if NEEDS_MARIADB.contains(&file.trim_start_matches("./")) {
        mariadb::provide(&mut command)?
    } else {
        None
    };
    println!("==> mutants {file} (build dir {})", build_dir.display());
    println!(
        "$ {}={} {}",
        PROPTEST_CASES.0,
        std::env::var(PROPTEST_CASES.0).unwrap_or_else(|_| PROPTEST_CASES.1.to_string()),
        display(&command)
    );
    if quiet {
        let log_path = out.with_extension("log");
        let log = fs::File::create(&log_path)
            .map_err(|e| Error::new(format!("creating {}: {e}", log_path.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::new(format!("{}: {e}", log_path.display())))?;
        command.stdout(log).stderr(err);
        println!("    its output: {}", log_path.display());
    }
    let started = Instant::now();
    // cargo-mutants exits non-zero when a mutant survives: read its outcome files instead.
    let status = command
        .status()
        .map_err(|error| Error::new(format!("could not start cargo mutants: {error}")))?;
    if !mutants_ran(status.code()) {
        return Err(Error::new(format!(
            "{file}: cargo mutants failed ({status}) before judging the mutants: see its \
             output and {}",
            out.join("mutants.out").join("debug.log").display()
        )));
    }
    let outcome = read_outcome(
        file,
        &out.join("mutants.out"),
        started.elapsed().as_secs_f64(),
    )
    .map_err(|error| Error::new(format!("{file}: cargo mutants ({status}): {error}")))?;
    println!(
        "<== mutants {file}: {} caught, {} missed, {} timeouts, {} unviable in {:.0} s",
        outcome.caught,
        outcome.missed.len(),
        outcome.timeouts.len(),
        outcome.unviable,
        outcome.seconds
    );
    Ok(outcome)
}

/// The `exclude_re` patterns of `.cargo/mutants.toml` that exclude no mutant of the
/// workspace. cargo-mutants says nothing about them, and a pattern goes stale silently when
/// the code it names is renamed or moved (three did after the pipeline work): the mutant
/// it was meant to excuse is then run, and shows as missed, while the config still reads as
/// if it were handled. Judged by cargo-mutants' own matching: the workspace's mutants are
/// listed without the config (its globs given as `--exclude`), then once more per pattern
/// with that pattern as `--exclude-re`; a pattern that leaves the list as long matches
/// nothing.
fn stale_exclusions(root: &Path) -> Result<Vec<String>, Error> {
    let path = root.join(".cargo/mutants.toml");
    let config = fs::read_to_string(&path)
        .map_err(|e| Error::new(format!("reading {}: {e}", path.display())))?;
    let parse = |key| {
        toml_string_array(&config, key)
            .map_err(|e| Error::new(format!("{}: `{key}`: {e}", path.display())))
    };
    let (patterns, globs) = (parse("exclude_re")?, parse("exclude_globs")?);
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    println!(
        "checking that each of the {} exclude_re patterns of .cargo/mutants.toml matches a mutant",
        patterns.len()
    );
    let count = |pattern: Option<&str>| -> Result<usize, Error> {
        let mut command = cargo_mutants(root);
        command.args(["--list", "--no-config", "--workspace"]);
        for glob in &globs {
            command.args(["--exclude", glob]);
        }
        if let Some(pattern) = pattern {
            command.args(["--exclude-re", pattern]);
        }
        Ok(util::output(&mut command)?.lines().count())
    };
    let all = count(None)?;
    let mut stale = Vec::new();
    for pattern in patterns {
        if count(Some(&pattern))? >= all {
            stale.push(pattern);
        }
    }
    Ok(stale)
}

/// The strings of the array `key = [ … ]` at the top of a TOML document: literal
/// (`'…'`) and basic (`"…"`, with the usual escapes) strings, with comments and line
/// breaks between them. Empty if `key` is absent. Enough TOML for `.cargo/mutants.toml`
/// without a parser crate (the xtask builds from std alone).
fn toml_string_array(text: &str, key: &str) -> Result<Vec<String>, String> {
    let Some(start) = text
        .lines()
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find_map(|(at, line)| {
            let rest = line.strip_prefix(key)?.trim_start();
            rest.starts_with('=')
                .then(|| at + line.len() - rest.len() + 1)
        })
    else {
        return Ok(Vec::new());
    };
    let mut chars = text[start..].chars().peekable();
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    if chars.next() != Some('[') {
        return Err("not an array".to_string());
    }
    let mut strings = Vec::new();
    loop {
        match chars.next() {
            None => return Err("unterminated array".to_string()),
            Some(']') => return Ok(strings),
            Some(c) if c.is_whitespace() || c == ',' => {}
            Some('#') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            Some('\'') => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None | Some('\n') => return Err("unterminated '…' string".to_string()),
                        Some('\'') => break,
                        Some(c) => s.push(c),
                    }
                }
                strings.push(s);
            }
            Some('"') => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None | Some('\n') => return Err("unterminated \"…\" string".to_string()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\\') => s.push('\\'),
                            Some('"') => s.push('"'),
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            other => return Err(format!("unsupported escape \\{other:?}")),
                        },
                        Some(c) => s.push(c),
                    }
                }
                strings.push(s);
            }
            Some(other) => return Err(format!("unexpected `{other}` in the array")),
        }
    }
}

/// Whether cargo-mutants judged the mutants, from its exit status: 0 (all caught), 2 (some
/// missed) or 3 (some timed out). Anything else (1: bad usage, 4: the unmutated tree's
/// tests failed, 70: an internal error, or killed by a signal) means there are no results
/// to read, which must not pass for a clean run.
fn mutants_ran(code: Option<i32>) -> bool {
    matches!(code, Some(0 | 2 | 3))
}

/// Reads one run's `caught.txt`, `missed.txt`, `timeout.txt` and `unviable.txt`.
fn read_outcome(file: &str, dir: &Path, seconds: f64) -> Result<Outcome, String> {
    let lines = |name: &str| -> Result<Vec<String>, String> {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(String::from)
                .collect()),
            // A file without mutants (only declarations) leaves no lists.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        }
    };
    Ok(Outcome {
        file: file.to_string(),
        seconds,
        caught: lines("caught.txt")?.len(),
        missed: lines("missed.txt")?,
        timeouts: lines("timeout.txt")?,
        unviable: lines("unviable.txt")?.len(),
    })
}

/// Prints the table of scores and the survivors; an error if any mutant was missed.
fn report(outcomes: &[Outcome]) -> Result<(), Error> {
    println!("\n| file | caught | missed | timeouts | unviable | score | time |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for o in outcomes {
        let score = o
            .score()
            .map_or_else(|| "-".to_string(), |s| format!("{s:.0} %"));
        println!(
            "| {} | {} | {} | {} | {} | {score} | {:.0} s |",
            o.file,
            o.caught,
            o.missed.len(),
            o.timeouts.len(),
            o.unviable,
            o.seconds
        );
    }
    let timeouts: Vec<&String> = outcomes.iter().flat_map(|o| &o.timeouts).collect();
    if !timeouts.is_empty() {
        // A hang is noticed (the tests never pass) but not caught by an assertion; the score
        // counts it against, as issue 22's baseline did.
        println!("\ntimeouts (the tests hung under the mutant; each should be a known loop):");
        for mutant in &timeouts {
            println!("    {mutant}");
        }
    }
    let missed: Vec<&String> = outcomes.iter().flat_map(|o| &o.missed).collect();
    if missed.is_empty() {
        println!("\nno mutant was missed");
        return Ok(());
    }
    println!("\nmissed (each needs a test, or a line in docs/TESTING.md saying why not):");
    for mutant in &missed {
        println!("    {mutant}");
    }
    Err(Error::new(format!(
        "{} mutants were missed (see above and target/mutants/*/mutants.out)",
        missed.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_to_their_package() {
        assert_eq!(package_of("core/src/replay.rs").unwrap(), "txsock-core");
        assert_eq!(
            package_of("./host/src/store/row.rs").unwrap(),
            "txsock-host"
        );
        assert_eq!(
            package_of("firmware-sim/src/device.rs").unwrap(),
            "txsock-firmware-sim"
        );
        assert!(package_of("xtask/src/main.rs").is_err());
        assert!(package_of("/abs/core/src/replay.rs").is_err());
    }

    #[test]
    fn slow_suites_are_judged_by_the_tests_that_exercise_the_file() {
        assert_eq!(judges_of("core/src/replay.rs"), ["--tests"]);
        assert_eq!(judges_of("./host/src/store/sqlite.rs"), ["--bin", "txsock"]);
        assert!(judges_of("firmware-sim/src/device.rs").contains(&"sim"));
        assert_eq!(
            judges_of("firmware-sim/src/flash_ledger.rs"),
            ["--lib", "--test", "power_cut"]
        );
        assert_eq!(judges_of("firmware-sim/src/link.rs"), ["--tests"]);
    }

    #[test]
    fn limits_pass_through_to_cargo_mutants() {
        let limits = |timeout, baseline_skip| {
            limit_args(Limits {
                timeout,
                baseline_skip,
            })
        };
        assert!(limits(None, false).is_empty());
        assert_eq!(limits(Some(120), false), ["--timeout=120"]);
        assert_eq!(
            limits(Some(300), true),
            ["--timeout=300", "--baseline=skip"]
        );
    }

    #[test]
    fn only_a_judging_run_counts() {
        for judged in [0, 2, 3] {
            assert!(mutants_ran(Some(judged)), "{judged}");
        }
        for failed in [1, 4, 70] {
            assert!(!mutants_ran(Some(failed)), "{failed}");
        }
        assert!(!mutants_ran(None), "killed by a signal");
    }

    #[test]
    fn parallel_runs_never_share_a_build_dir() {
        let root = Path::new("/t/mutants");
        let dirs: BTreeSet<PathBuf> = (0..4).map(|w| build_dir(root, w)).collect();
        assert_eq!(dirs.len(), 4);
        assert_eq!(build_dir(root, 0), root.join("build"));
        assert_eq!(build_dir(root, 1), root.join("build-2"));
        assert!(dirs.iter().all(|dir| dir.starts_with(root)));
    }

    #[test]
    fn runs_in_different_build_dirs_keep_separate_results() {
        let root = Path::new("/t/mutants");
        let file = "core/src/replay.rs";
        let dirs: BTreeSet<PathBuf> = (0..4)
            .map(|w| results_dir(root, &build_dir(root, w), file))
            .collect();
        assert_eq!(dirs.len(), 4);
        assert_eq!(
            results_dir(root, &build_dir(root, 0), file),
            root.join("core_src_replay_rs")
        );
        assert_eq!(
            results_dir(root, &build_dir(root, 1), file),
            root.join("core_src_replay_rs-2")
        );
    }

    #[test]
    fn separate_runs_claim_separate_build_dirs() {
        let root = std::env::temp_dir().join(format!("xtask-claims-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let first = claim_build_dirs(&root, 2).unwrap();
        let second = claim_build_dirs(&root, 1).unwrap();
        let dirs = |claims: &[Claim]| claims.iter().map(|c| c.dir.clone()).collect::<Vec<_>>();
        assert_eq!(dirs(&first), [build_dir(&root, 0), build_dir(&root, 1)]);
        assert_eq!(dirs(&second), [build_dir(&root, 2)]);
        drop(first);
        let third = claim_build_dirs(&root, 1).unwrap();
        assert_eq!(
            dirs(&third),
            [build_dir(&root, 0)],
            "a dropped claim frees its dir"
        );
        // A lock left by a process that is gone is taken over; one of a live process is not.
        drop(third);
        fs::write(build_dir(&root, 0).with_extension("lock"), "4294967295").unwrap();
        assert_eq!(
            dirs(&claim_build_dirs(&root, 1).unwrap()),
            [build_dir(&root, 0)]
        );
        fs::write(build_dir(&root, 0).with_extension("lock"), "1").unwrap();
        assert_eq!(
            dirs(&claim_build_dirs(&root, 1).unwrap()),
            [build_dir(&root, 1)]
        );
        drop(second);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn reads_toml_string_arrays() {
        let text = r#"
gitignore = true
exclude_globs = ["a.rs", 'b.rs'] # trailing
exclude_re = [
    # a comment with 'quotes' and ] and [
    '<impl Display for (A|B)>::fmt',
    'x [^>]* y$',   # after
    "esc \\ \" q",
]
exclude_re_other = ['no']
"#;
        assert_eq!(
            toml_string_array(text, "exclude_re").unwrap(),
            ["<impl Display for (A|B)>::fmt", "x [^>]* y$", "esc \\ \" q"]
        );
        assert_eq!(
            toml_string_array(text, "exclude_globs").unwrap(),
            ["a.rs", "b.rs"]
        );
        assert_eq!(toml_string_array(text, "exclude_re_other").unwrap(), ["no"]);
        assert!(toml_string_array(text, "missing").unwrap().is_empty());
        assert!(toml_string_array("k = 'x'", "k").is_err());
        assert!(toml_string_array("k = ['x'", "k").is_err());
        assert!(toml_string_array("k = ['x\n']", "k").is_err());
        assert!(toml_string_array("k = [x]", "k").is_err());
    }

    #[test]
    fn reads_the_repository_config() {
        let path = util::repo_root().join(".cargo/mutants.toml");
        let text = fs::read_to_string(&path).unwrap();
        let patterns = toml_string_array(&text, "exclude_re").unwrap();
        // Every pattern line of the file ('…', one a line), and nothing else, was read.
        let quoted = text
            .lines()
            .map(str::trim_start)
            .filter(|line| line.starts_with('\'') && line.ends_with("',"))
            .count();
        assert!(!patterns.is_empty());
        assert_eq!(patterns.len(), quoted);
        assert!(toml_string_array(&text, "exclude_globs")
            .unwrap()
            .contains(&"core/src/selftest.rs".to_string()));
        assert!(patterns.iter().all(|p| !p.contains('\'') && !p.is_empty()));
    }

    #[test]
    fn score_is_caught_over_viable() {
        let outcome = Outcome {
            file: "f".into(),
            seconds: 0.0,
            caught: 19,
            missed: vec!["m".into()],
            timeouts: vec![],
            unviable: 7,
        };
        assert_eq!(outcome.score(), Some(95.0));
        let none = Outcome {
            caught: 0,
            missed: vec![],
            ..outcome
        };
        assert_eq!(none.score(), None);
    }
}
