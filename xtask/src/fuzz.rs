//! `cargo xtask fuzz --seconds N`: every cargo-fuzz target in `fuzz/`, one after the other.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::{self, display, repo_root, run, Error};

/// What one target's run reported.
struct Outcome {
    target: String,
    seconds: f64,
    runs: Option<u64>,
    execs_per_sec: Option<u64>,
    error: Option<String>,
}

/// Builds every target, then runs each for `seconds` on the curated seeds of
/// `fuzz/corpus/<target>` (read only) and the working corpus `fuzz/corpus-local/<target>`
/// (where libFuzzer adds what it finds), with `fuzz/protocol.dict`. Runs all targets even
/// if one fails, then prints executions per second for each.
pub fn fuzz(seconds: u64) -> Result<(), Error> {
    let dir = repo_root().join("fuzz");
    if !dir.join("Cargo.toml").is_file() {
        return Err(Error::new(format!("no fuzz crate at {}", dir.display())));
    }
    let nightly_fuzz = || {
        let mut command = Command::new("cargo");
        command.current_dir(&dir).args(["+nightly", "fuzz"]);
        command
    };
    if !util::succeeds(nightly_fuzz().arg("--version")) {
        println!("cargo-fuzz is missing: installing it");
        run(Command::new("cargo").args(["install", "cargo-fuzz"]))?;
    }
    let listed = util::output(nightly_fuzz().arg("list"))?;
    let targets: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if targets.is_empty() {
        return Err(Error::new("`cargo +nightly fuzz list` lists no targets"));
    }
    // One build for all targets, so the time limits below are spent fuzzing.
    run(nightly_fuzz().arg("build"))?;

    let dict = dir.join("protocol.dict");
    let mut outcomes = Vec::new();
    for target in &targets {
        println!("==> fuzz {target} for {seconds} s");
        let work = dir.join("corpus-local").join(target);
        fs::create_dir_all(&work)
            .map_err(|error| Error::new(format!("cannot create {}: {error}", work.display())))?;
        let seeds = dir.join("corpus").join(target);
        let mut command = nightly_fuzz();
        command.args(["run", target]).arg(&work);
        if seeds.is_dir() {
            command.arg(&seeds);
        }
        command.args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-max_len=4096",
            "-timeout=10",
            "-print_final_stats=1",
        ]);
        if dict.is_file() {
            command.arg(format!("-dict={}", dict.display()));
        }
        let started = Instant::now();
        let outcome = run_and_watch(target, &mut command, started);
        match &outcome.error {
            None => println!("<== fuzz {target}: ok in {:.1} s", outcome.seconds),
            Some(error) => println!(
                "<== fuzz {target}: FAILED after {:.1} s: {error}",
                outcome.seconds
            ),
        }
        outcomes.push(outcome);
    }

    println!("fuzz summary ({seconds} s per target):");
    let show = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    for o in &outcomes {
        println!(
            "  {:16} {:>12} runs  {:>8} exec/s  {}",
            o.target,
            show(o.runs),
            show(o.execs_per_sec),
            if o.error.is_some() { "FAILED" } else { "ok" }
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.error.is_some())
        .map(|o| o.target.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "fuzz targets failed: {} (crash inputs are in fuzz/artifacts/<target>/)",
            failed.join(", ")
        )))
    }
}

/// Runs `command`, passing its stderr through while picking libFuzzer's final stats out.
fn run_and_watch(target: &str, command: &mut Command, started: Instant) -> Outcome {
    let shown = display(command);
    println!("$ {shown}");
    let mut outcome = Outcome {
        target: target.to_string(),
        seconds: 0.0,
        runs: None,
        execs_per_sec: None,
        error: None,
    };
    let child = command.stdin(Stdio::null()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            outcome.error = Some(format!("could not start `{shown}`: {error}"));
            return outcome;
        }
    };
    if let Some(stderr) = child.stderr.take() {
        let mut echo = std::io::stderr();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(echo, "{line}");
            if let Some(n) = stat(&line, "stat::number_of_executed_units:") {
                outcome.runs = Some(n);
            }
            if let Some(n) = stat(&line, "stat::average_exec_per_sec:") {
                outcome.execs_per_sec = Some(n);
            }
        }
    }
    match child.wait() {
        Ok(status) if status.success() => {}
        Ok(status) => outcome.error = Some(format!("`{shown}` failed ({status})")),
        Err(error) => outcome.error = Some(format!("`{shown}`: {error}")),
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// The number after `prefix` on a libFuzzer stats line.
fn stat(line: &str, prefix: &str) -> Option<u64> {
    line.trim().strip_prefix(prefix)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_stats() {
        assert_eq!(
            stat(
                "stat::average_exec_per_sec:     4321",
                "stat::average_exec_per_sec:"
            ),
            Some(4321)
        );
        assert_eq!(
            stat("#2 INITED cov: 5", "stat::average_exec_per_sec:"),
            None
        );
    }
}
