//! `txsock demo`: the whole story in one command. Starts a server in a temporary directory
//! and man-in-the-middle proxies (child processes of this same binary), creates two users,
//! and runs the real `txsock client` through an honest proxy and through each attack,
//! narrating what happened and checking it against the ledger and the audit logs. Exits 0
//! only if every attack was caught.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use txsock_core::auth::DEFAULT_ITERATIONS;

/// Options of `txsock demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// PBKDF2 iterations for the demo users (600,000 is the real-world default; fewer is faster).
    #[arg(long, default_value_t = DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(4096..=10_000_000))]
    pub iterations: u32,

    /// Keep the temporary directory (database and audit logs) and print where it is.
    #[arg(long)]
    pub keep: bool,
}

/// A child process killed on drop, with its stdout lines collected by a thread.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Spawns `exe args`, reads its first stdout line, and keeps collecting the rest.
    fn spawn(exe: &Path, dir: &Path, args: &[&str]) -> Result<(Proc, String)> {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .current_dir(dir)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        scrub(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let proc = Proc { child, lines };
        Ok((proc, first.trim().to_string()))
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Children must not pick up the caller's `TXSOCK_*` settings (a MySQL URL, another port).
fn scrub(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TXSOCK_") {
            cmd.env_remove(key);
        }
    }
}

/// The second word after `prefix` in `line`: the address in "... listening on ADDR ...".
fn address_after(line: &str, prefix: &str) -> Result<String> {
    line.strip_prefix(prefix)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .with_context(|| format!("unexpected first line: {line:?}"))
}

struct Demo {
    exe: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    server: String,
    iterations: u32,
    checks: Vec<(String, bool)>,
}

/// What `txsock client` printed and how it exited.
struct Run {
    code: i32,
    out: String,
}

fn exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        2 => "invalid input",
        3 => "refused by the server",
        4 => "integrity failure detected",
        5 => "connection failure",
        _ => "error",
    }
}

fn heading(n: usize, title: &str) {
    println!();
    println!(
        "── {n}. {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}

impl Demo {
    fn password(user: &str) -> String {
        format!("{user}-demo-password")
    }

    /// Runs `txsock client --server ADDR --user USER ARGS`, showing the command and its output.
    fn client(&self, via: &str, user: &str, args: &[&str]) -> Result<Run> {
        let iterations = self.iterations.to_string();
        let mut full = vec![
            "client",
            "--server",
            via,
            "--user",
            user,
            "--min-iterations",
            &iterations,
        ];
        full.extend_from_slice(args);
        let shown: Vec<&str> = full
            .iter()
            .copied()
            .filter(|a| *a != "--min-iterations" && *a != iterations.as_str())
            .collect();
        println!("  $ txsock {}", shown.join(" "));
        let mut cmd = Command::new(&self.exe);
        cmd.args(&full).current_dir(&self.dir).stdin(Stdio::null());
        scrub(&mut cmd);
        cmd.env("TXSOCK_PASSWORD", Self::password(user));
        let output = cmd.output().context("running txsock client")?;
        let mut out = String::from_utf8_lossy(&output.stderr).into_owned();
        out.push_str(&String::from_utf8_lossy(&output.stdout));
        for line in out.lines() {
            println!("    │ {line}");
        }
        let code = output.status.code().unwrap_or(-1);
        println!("    └ exit status {code} ({})", exit_meaning(code));
        Ok(Run { code, out })
    }

    fn admin(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .current_dir(&self.dir)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null());
        scrub(&mut cmd);
        let output = cmd.output().context("running an admin command")?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Balances of alice and bob, from `txsock user list` (the ledger itself).
    fn balances(&self) -> Result<(String, String)> {
        let text = self.admin(&["user", "list"])?;
        let of = |user: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(user))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_string()
        };
        Ok((of("alice"), of("bob")))
    }

    fn log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.data.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits up to 3 s for a line containing `needle` in audit log `name` past `skip` lines.
    fn wait_log(&self, name: &str, skip: usize, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(line) = self
                .log(name)
                .into_iter()
                .skip(skip)
                .find(|l| l.contains(needle))
            {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn committed_lines(&self, id: &str) -> usize {
        let needle = format!("transfer id={id} ");
        self.log("transactions.log")
            .iter()
            .filter(|l| l.contains(&needle))
            .count()
    }

    fn check(&mut self, what: &str, ok: bool) {
        println!("  {} {what}", if ok { "✓" } else { "✗" });
        self.checks.push((what.to_string(), ok));
    }

    fn show_balances(&self, before: &(String, String), after: &(String, String)) {
        println!(
            "  balances: alice {} -> {}, bob {} -> {}",
            before.0, after.0, before.1, after.1
        );
    }

    fn mitm(&self, mode: &str, extra: &[&str]) -> Result<(Proc, String)> {
        let mut args = vec![
            "mitm",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &self.server,
            "--mode",
            mode,
        ];
        args.extend_from_slice(extra);
        let (proc, first) = Proc::spawn(&self.exe, &self.dir, &args)?;
        let addr = address_after(&first, "txsock mitm listening on ")?;
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" {}", extra.join(" "))
        };
        println!("  (proxy: txsock mitm --mode {mode}{extra}, listening on {addr})");
        Ok((proc, addr))
    }

    /// Prints what the proxy did (its action lines, not every frame).
    fn show_actions(&self, proxy: &Proc) {
        std::thread::sleep(Duration::from_millis(100));
        for line in proxy.lines() {
            let action = line.split_whitespace().nth(2).unwrap_or("");
            if action.chars().all(|c| c.is_ascii_uppercase()) && !action.is_empty() {
                println!("    proxy: {line}");
            }
        }
    }
}

/// Runs the demo; exit status 0 only if every attack was caught.
pub fn run(args: DemoArgs) -> ExitCode {
    match demo(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("txsock demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: DemoArgs) -> Result<bool> {
    let exe = std::env::current_exe().context("locating the txsock binary")?;
    let temp = tempfile::Builder::new()
        .prefix("txsock-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = temp.path().to_path_buf();
    let data = dir.join("data");
    println!("txsock demo: a server, a man in the middle, and a client that cannot be fooled.");
    println!();
    println!(
        "Starting a server on 127.0.0.1 (SQLite ledger and audit logs in {})",
        data.display()
    );
    let data_arg = data.display().to_string();
    let iterations = args.iterations.to_string();
    let (server_proc, first) = Proc::spawn(
        &exe,
        &dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_arg,
            "--min-iterations",
            &iterations,
            "--opening-balance",
            "100.00",
        ],
    )?;
    let server = address_after(&first, "txsock listening on ")?;
    println!("  server listening on {server}; every new account opens with 100.00");
    println!(
        "  (PBKDF2: {} iterations per login, paid by the client)",
        args.iterations
    );

    let mut d = Demo {
        exe,
        dir,
        data,
        server: server.clone(),
        iterations: args.iterations,
        checks: Vec::new(),
    };

    heading(1, "Two users register (straight to the server)");
    for user in ["alice", "bob"] {
        let run = d.client(&server, user, &["register"])?;
        if run.code != 0 {
            bail!("could not register {user}");
        }
    }

    heading(2, "An honest transfer through a proxy that only watches");
    why("The proxy forwards every frame untouched.");
    let (proxy, via) = d.mitm("pass", &[])?;
    let before = d.balances()?;
    let run = d.client(
        &via,
        "alice",
        &["transfer", "bob", "10.00", "--id", "demo-honest"],
    )?;
    let after = d.balances()?;
    d.show_balances(&before, &after);
    println!(
        "    proxy: saw {} frames and changed none",
        proxy
            .lines()
            .iter()
            .filter(|l| l.contains(" c->s ") || l.contains(" s->c "))
            .count()
    );
    d.check(
        "accepted: committed, exit 0, alice 90.00 and bob 110.00",
        run.code == 0
            && run.out.contains("committed")
            && after == ("90.00".into(), "110.00".into()),
    );
    drop(proxy);

    heading(
        3,
        "A tampered transfer: the proxy changes the amount (5.00 -> 50.00)",
    );
    why("The transfer's HMAC, under a per-session key the proxy never sees, covers the sender, the id, the recipient, the amount and a one-time nonce.");
    let (proxy, via) = d.mitm("tamper", &[])?;
    let before = d.balances()?;
    let errors = d.log("error.log").len();
    let run = d.client(
        &via,
        "alice",
        &[
            "--attempts",
            "1",
            "transfer",
            "bob",
            "5.00",
            "--id",
            "demo-tamper",
        ],
    )?;
    d.show_actions(&proxy);
    let after = d.balances()?;
    d.show_balances(&before, &after);
    let alert = d.wait_log("error.log", errors, "code=bad_mac");
    if let Some(line) = &alert {
        println!("  error.log: {line}");
    }
    d.check(
        "rejected: the server refused the altered MAC, the ledger is unchanged, the client exits 4",
        run.code == 4
            && alert.is_some()
            && after == before
            && d.committed_lines("demo-tamper") == 0,
    );
    drop(proxy);

    heading(
        4,
        "A replayed transfer: the proxy sends alice's frame twice",
    );
    why("Each server-issued nonce is accepted once: the copy arrives with a nonce already used.");
    let (proxy, via) = d.mitm("replay", &[])?;
    let before = d.balances()?;
    let errors = d.log("error.log").len();
    let run = d.client(
        &via,
        "alice",
        &["transfer", "bob", "1.00", "--id", "demo-replay"],
    )?;
    d.show_actions(&proxy);
    let after = d.balances()?;
    d.show_balances(&before, &after);
    let alert = d.wait_log("error.log", errors, "code=unknown_nonce");
    if let Some(line) = &alert {
        println!("  error.log: {line}");
    }
    d.check(
        "rejected: the copy's nonce was already used; money moved exactly once",
        run.code == 0
            && alert.is_some()
            && after == ("89.00".into(), "111.00".into())
            && d.committed_lines("demo-replay") == 1,
    );
    drop(proxy);

    heading(
        5,
        "A forged reply: the proxy turns a refusal into a fake success",
    );
    why("Alice sends 500.00 but has 89.00. Receipts carry a MAC under a key the proxy does not have, bound to the request's nonce; the client re-checks on a new connection.");
    let (proxy, via) = d.mitm("forge-reply", &["--limit", "1"])?;
    let before = d.balances()?;
    let run = d.client(
        &via,
        "alice",
        &["transfer", "bob", "500.00", "--id", "demo-forge"],
    )?;
    d.show_actions(&proxy);
    let after = d.balances()?;
    d.show_balances(&before, &after);
    d.check(
        "detected: the client refused the forged receipt and learned the real answer (insufficient funds)",
        run.code == 4
            && run.out.contains("forged")
            && run.out.contains("insufficient funds")
            && after == before
            && d.committed_lines("demo-forge") == 0,
    );
    drop(proxy);

    heading(
        6,
        "A lost reply: the proxy swallows the server's answer once",
    );
    why("The client retries with the same transfer id; the server answers a repeated id with the original result.");
    let (proxy, via) = d.mitm("drop-reply", &["--limit", "1"])?;
    let before = d.balances()?;
    let run = d.client(
        &via,
        "alice",
        &[
            "--timeout",
            "2",
            "transfer",
            "bob",
            "2.00",
            "--id",
            "demo-lost",
        ],
    )?;
    d.show_actions(&proxy);
    let after = d.balances()?;
    d.show_balances(&before, &after);
    d.check(
        "recovered: the retry with the same id returned the original result; money moved once",
        run.code == 0
            && after == ("87.00".into(), "113.00".into())
            && d.committed_lines("demo-lost") == 1,
    );
    drop(proxy);

    heading(
        7,
        "Reordered requests: two pipelined transfers, swapped on the way",
    );
    why("Receipts are numbered and bound to their request, so swapped answers cannot pass; the client re-checks each transfer by id.");
    let (proxy, via) = d.mitm("reorder", &["--limit", "1"])?;
    let before = d.balances()?;
    let run = d.client(
        &via,
        "alice",
        &[
            "transfer", "bob", "0.50", "bob", "0.25", "--id", "demo-r1", "--id", "demo-r2",
        ],
    )?;
    d.show_actions(&proxy);
    let after = d.balances()?;
    d.show_balances(&before, &after);
    d.check(
        "detected: the answers did not match the requests; re-checked by id, each moved once",
        run.code == 4
            && after == ("86.25".into(), "113.75".into())
            && d.committed_lines("demo-r1") == 1
            && d.committed_lines("demo-r2") == 1,
    );
    drop(proxy);

    tls_step(&mut d)?;

    heading(9, "The ledger and the audit logs");
    print!("{}", indent(&d.admin(&["user", "list"])?));
    let check = d.admin(&["ledger", "check"])?;
    print!("{}", indent(&check));
    d.check(
        "ledger check: balances equal the journal",
        check.contains("ledger OK"),
    );
    println!("  error.log (what the server refused):");
    for line in d.log("error.log") {
        println!("    {line}");
    }
    println!("  transactions.log (what the server committed):");
    for line in d.log("transactions.log") {
        println!("    {line}");
    }
    drop(server_proc);

    let failed: Vec<&(String, bool)> = d.checks.iter().filter(|(_, ok)| !ok).collect();
    println!();
    if failed.is_empty() {
        println!(
            "All {} checks passed: every attack was caught, and money moved only when it should.",
            d.checks.len()
        );
    } else {
        println!("{} of {} checks FAILED:", failed.len(), d.checks.len());
        for (what, _) in &failed {
            println!("  ✗ {what}");
        }
    }
    if args.keep {
        let kept = temp.keep();
        println!("Data and audit logs kept in {}", kept.display());
    }
    Ok(failed.is_empty())
}

/// Step 8: a second server, speaking TLS, and a proxy that tries to impersonate it with a
/// certificate of its own. The client refuses it at the handshake: no frame ever reaches
/// the proxy, so there is nothing to alter, replay or even read.
fn tls_step(d: &mut Demo) -> Result<()> {
    heading(
        8,
        "TLS: a proxy that impersonates the server with a forged certificate",
    );
    why("A second server speaks TLS 1.3 with a development certificate; clients trust its CA with --ca. The proxy terminates TLS itself with a certificate from a CA of its own making.");
    let certs = d.dir.join("certs");
    let certs_arg = certs.display().to_string();
    let mut cmd = Command::new(&d.exe);
    cmd.args([
        "cert",
        "self-signed",
        "--name",
        "127.0.0.1",
        "--out",
        &certs_arg,
    ])
    .current_dir(&d.dir)
    .stdin(Stdio::null());
    scrub(&mut cmd);
    println!("  $ txsock cert self-signed --name 127.0.0.1 --out {certs_arg}");
    let output = cmd.output().context("running txsock cert")?;
    if !output.status.success() {
        bail!(
            "txsock cert failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let files = crate::tls::DevFiles::in_dir(&certs);
    let (cert, key, ca) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
        files.ca.display().to_string(),
    );
    let data = d.dir.join("data-tls");
    let data_arg = data.display().to_string();
    let iterations = d.iterations.to_string();
    let (server_proc, first) = Proc::spawn(
        &d.exe,
        &d.dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_arg,
            "--min-iterations",
            &iterations,
            "--opening-balance",
            "100.00",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    )?;
    let server = address_after(&first, "txsock listening on ")?;
    println!("  TLS server listening on {server} (--tls-cert {cert} --tls-key {key})");
    let tls = ["--tls", "--ca", ca.as_str()];
    for user in ["alice", "bob"] {
        let mut args = tls.to_vec();
        args.push("register");
        if d.client(&server, user, &args)?.code != 0 {
            bail!("could not register {user} on the TLS server");
        }
    }
    let mut args = tls.to_vec();
    args.extend(["transfer", "bob", "10.00", "--id", "demo-tls"]);
    let honest = d.client(&server, "alice", &args)?;
    d.check(
        "over TLS: the same protocol inside, committed, exit 0",
        honest.code == 0 && honest.out.contains("committed"),
    );

    let (proxy, first) = Proc::spawn(
        &d.exe,
        &d.dir,
        &[
            "mitm",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &server,
            "--mode",
            "tamper",
            "--danger-tls-impersonate",
            "127.0.0.1",
            "--upstream-ca",
            &ca,
        ],
    )?;
    let via = address_after(&first, "txsock mitm listening on ")?;
    println!(
        "  (proxy: txsock mitm --mode tamper --danger-tls-impersonate 127.0.0.1, listening on {via})"
    );
    let mut args = tls.to_vec();
    args.extend(["transfer", "bob", "5.00", "--id", "demo-tls-mitm"]);
    let run = d.client(&via, "alice", &args)?;
    d.show_actions(&proxy);
    let frames = proxy
        .lines()
        .iter()
        .filter(|l| l.contains(" c->s ") || l.contains(" s->c "))
        .count();
    let moved = std::fs::read_to_string(data.join("transactions.log"))
        .unwrap_or_default()
        .contains("id=demo-tls-mitm ");
    d.check(
        "refused at the handshake: the client did not trust the forged certificate (exit 5), \
         the proxy saw no frame, nothing moved",
        run.code == 5 && run.out.contains("not signed by an authority") && frames == 0 && !moved,
    );
    drop(proxy);
    drop(server_proc);
    Ok(())
}

/// Prints why the next step should turn out the way it does, wrapped at 90 columns.
fn why(text: &str) {
    let mut line = String::from(" ");
    for word in text.split_whitespace() {
        if line.len() + word.len() > 90 {
            println!("{line}");
            line = String::from(" ");
        }
        line.push(' ');
        line.push_str(word);
    }
    println!("{line}");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
