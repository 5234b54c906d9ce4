//! The Windows build of `txsock` under Wine, against and beside the Linux one: a smoke test
//! that it works for real, not only compiles.
//!
//! `cargo xtask test` (step `windows`) cross-builds `txsock.exe` for x86_64-pc-windows-gnu and
//! runs this test with `--ignored --nocapture`, naming the executable in `TXSOCK_WINDOWS_EXE`.
//! Without that variable (plain `cargo test`, or a machine without Wine) it prints
//! `SKIPPED: <reason>` and passes. Everything runs in a throwaway `WINEPREFIX` in a temporary
//! directory, on 127.0.0.1 only, with a time limit on every wait; `wineserver -k` ends every
//! Windows process of the prefix afterwards, also when the test fails.
//!
//! What it checks, in order:
//! 1. `txsock.exe user add` creates a user in a data directory given as a Windows path with a
//!    drive letter and a space (`Z:\...\txsock data`), from an executable installed under a
//!    path with a space (`...\Program Files\txsock\txsock.exe`);
//! 2. `txsock.exe serve` listens on a loopback port, and the Linux `txsock client` registers,
//!    logs in, transfers (and retries the same transfer id), and is refused a wrong password;
//! 3. Ctrl-C (SIGINT to the Wine process, which Wine turns into `CTRL_C_EVENT`) stops the
//!    server gracefully, through its Windows console handler: exit status 0 and its closing
//!    line;
//! 4. the audit logs are in the Windows data directory, and `txsock.exe ledger check` and
//!    `txsock.exe user list` read the ledger the Windows server wrote;
//! 5. `txsock.exe client` registers, transfers and reads balances against the Linux server.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use txsock_e2e::*;

/// Where `cargo xtask test` names the cross-built `txsock.exe`.
const EXE_VAR: &str = "TXSOCK_WINDOWS_EXE";
/// A directory of DLLs to put beside `txsock.exe`, for this test only, if it does not start
/// without them (the xtask's `bcryptprimitives.dll` stand-in for a Wine that lacks it).
const DLL_DIR_VAR: &str = "TXSOCK_WINDOWS_DLL_DIR";
/// The Wine loader; default [`WINE_LOADER`].
const WINE_VAR: &str = "TXSOCK_WINE";
/// Debian's 64-bit Wine loader (package wine64; it is not on `PATH`).
const WINE_LOADER: &str = "/usr/lib/wine/wine64";

/// How long one Windows command may take. Generous: the first start in a new prefix is slow,
/// and a debug build of txsock.exe is large.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// How long creating the prefix may take.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// The Windows executable and the Wine to run it with, or why this machine cannot.
fn setup() -> Result<(PathBuf, Option<PathBuf>, PathBuf), String> {
    let exe = std::env::var_os(EXE_VAR)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{EXE_VAR} is not set (`cargo xtask test` sets it)"))?;
    if !exe.is_file() {
        return Err(format!("{EXE_VAR}={} does not exist", exe.display()));
    }
    let dlls = std::env::var_os(DLL_DIR_VAR).map(PathBuf::from);
    let wine = std::env::var_os(WINE_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(WINE_LOADER));
    if !wine.is_file() {
        return Err(format!(
            "no Wine loader at {} (Debian package wine64)",
            wine.display()
        ));
    }
    Ok((exe, dlls, wine))
}

/// A throwaway Wine prefix with `txsock.exe` installed in it; every Windows process of the
/// prefix is ended and the directory deleted on drop.
struct Wine {
    loader: PathBuf,
    /// The temporary directory: the prefix, the installed executable and the data.
    root: tempfile::TempDir,
    /// `txsock.exe`, under a directory name with a space.
    exe: PathBuf,
}

impl Wine {
    /// A new prefix with `exe` installed; the DLLs in `dlls` go beside it if it does not start
    /// without them.
    fn new(exe: &Path, dlls: Option<&Path>, loader: PathBuf) -> Wine {
        let root = tempfile::Builder::new()
            .prefix("txsock-wine-")
            .tempdir()
            .expect("temp dir");
        let install = root.path().join("Program Files").join("txsock");
        std::fs::create_dir_all(&install).expect("create the install directory");
        let installed = install.join("txsock.exe");
        std::fs::copy(exe, &installed).expect("copy txsock.exe");
        let wine = Wine {
            loader,
            root,
            exe: installed,
        };
        let started = Instant::now();
        let mut boot = wine.command();
        boot.args(["wineboot", "--init"]);
        let out = run_within(boot, "", BOOT_LIMIT, "wineboot --init");
        assert!(out.status.success(), "wineboot --init failed: {out:?}");
        println!(
            "wine prefix created in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let out = wine.run(&["--version"], "");
        if out.status.success() {
            return wine;
        }
        // Debian 12's Wine 8.0 has no bcryptprimitives.dll, whose ProcessPrng std imports.
        let dlls = dlls.unwrap_or_else(|| panic!("txsock.exe does not start: {out:?}"));
        println!(
            "txsock.exe does not start under this Wine ({}): adding the DLLs of {}",
            out.status,
            dlls.display()
        );
        for entry in std::fs::read_dir(dlls).expect("read the DLL directory") {
            let path = entry.expect("DLL directory entry").path();
            if path.extension().is_some_and(|ext| ext == "dll") {
                let name = path.file_name().expect("file name");
                std::fs::copy(&path, install.join(name)).expect("copy a DLL");
            }
        }
        let out = wine.run(&["--version"], "");
        assert!(out.status.success(), "txsock.exe does not start");
        wine
    }

    /// A command that runs a Windows program in this prefix: quiet, headless, and without
    /// the Mono and Gecko installers (nothing here needs them).
    fn command(&self) -> Command {
        let mut command = Command::new(&self.loader);
        command
            .env("WINEPREFIX", self.root.path().join("prefix"))
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env("NO_COLOR", "1")
            // Not the install directory: Windows also looks for DLLs in the current one.
            .current_dir(self.root.path());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TXSOCK_") {
                command.env_remove(key);
            }
        }
        command
    }

    /// `txsock.exe ARGS`.
    fn txsock(&self, args: &[&str]) -> Command {
        let mut command = self.command();
        command.arg(&self.exe).args(args);
        command
    }

    /// Runs `txsock.exe ARGS` with `stdin` and returns its output.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let out = run_within(
            self.txsock(args),
            stdin,
            COMMAND_LIMIT,
            &format!("txsock.exe {}", args.join(" ")),
        );
        println!(
            "$ txsock.exe {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The Linux path `path` as the Windows programs see it: drive Z: is `/`.
    fn windows_path(path: &Path) -> String {
        format!("Z:{}", path.display()).replace('/', "\\")
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        // wineserver beside the loader (Debian: wineserver64 beside wine64), else on PATH.
        let dir = self.loader.parent().unwrap_or(Path::new("/"));
        let server = ["wineserver64", "wineserver"]
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .unwrap_or_else(|| PathBuf::from("wineserver"));
        let mut kill = Command::new(server);
        kill.arg("-k")
            .env("WINEPREFIX", self.root.path().join("prefix"));
        if let Ok(child) = kill.stdin(Stdio::null()).spawn() {
            let _ = output_within(child, Duration::from_secs(30));
        }
    }
}

/// Runs `command` with `stdin`, killing it after `limit` (then fails the test).
fn run_within(mut command: Command, stdin: &str, limit: Duration, what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let started = Instant::now();
    let out = output_within(child, limit);
    assert!(
        started.elapsed() < limit,
        "{what} did not finish within {limit:?}: {out:?}"
    );
    out
}

/// `txsock.exe serve` under Wine; killed on drop if still running.
struct WindowsServer {
    child: Child,
    addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
}

impl WindowsServer {
    fn start(wine: &Wine, data_dir: &str) -> WindowsServer {
        let mut child = wine
            .txsock(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir,
                "--min-iterations",
                &ITERATIONS.to_string(),
                "--opening-balance",
                "100.00",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start txsock.exe serve");
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                println!("[txsock.exe serve] {line}");
            }
        });
        let mut server = WindowsServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
        };
        let first = server
            .stdout
            .recv_timeout(COMMAND_LIMIT)
            .unwrap_or_else(|e| panic!("txsock.exe serve printed nothing within 120 s: {e}"));
        println!("[txsock.exe serve] {first}");
        server.addr = first
            .strip_prefix("txsock listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from txsock.exe serve: {first:?}"));
        assert!(
            first.contains(data_dir),
            "the server names its data directory: {first:?}"
        );
        server
    }

    /// Ctrl-C: SIGINT to the Wine process, which Wine delivers to the program as
    /// `CTRL_C_EVENT`. Returns the exit status and the lines printed after the first.
    fn ctrl_c(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -INT {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for txsock.exe serve") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "txsock.exe serve did not stop within 30 s of Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            println!("[txsock.exe serve] {line}");
            lines.push(line);
        }
        (status, lines)
    }
}

impl Drop for WindowsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Linux `txsock client --user USER ARGS` against `addr`.
fn linux_client(addr: SocketAddr, user: &str, password: &str, args: &[&str]) -> ClientRun {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    let run = run_client(addr, &all, Some(password), "");
    println!(
        "$ txsock client --user {user} {}: {}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

#[test]
#[ignore = "needs Wine and the cross-built txsock.exe: `cargo xtask test` runs it (step windows)"]
fn txsock_exe_serves_the_linux_client_and_is_a_client_of_the_linux_server() {
    let (exe, dlls, loader) = match setup() {
        Ok(setup) => setup,
        Err(reason) => {
            println!("SKIPPED: {reason}");
            return;
        }
    };
    let wine = Wine::new(&exe, dlls.as_deref(), loader);
    let data = wine.root.path().join("txsock data");
    let data_dir = Wine::windows_path(&data);
    let iterations = ITERATIONS.to_string();

    // 1. An administrator's user, in a data directory with a drive letter and a space.
    let out = wine.run(
        &[
            "user",
            "add",
            "alice",
            "--balance",
            "100.00",
            "--password-stdin",
            "--iterations",
            &iterations,
            "--min-iterations",
            &iterations,
            "--data-dir",
            &data_dir,
        ],
        &format!("{}\n", password("alice")),
    );
    assert!(out.status.success(), "txsock.exe user add");
    assert!(
        data.join("txsock.db").is_file(),
        "the database is in {data:?}"
    );

    // 2. The Windows server, the Linux client.
    let server = WindowsServer::start(&wine, &data_dir);
    let run = linux_client(server.addr, "bob", &password("bob"), &["register"]);
    assert_eq!(run.code, 0, "register bob: {run:?}");
    let transfer = ["--json", "transfer", "bob", "12.50", "--id", "win-1"];
    let run = linux_client(server.addr, "alice", &password("alice"), &transfer);
    assert_eq!(run.code, 0, "transfer: {run:?}");
    assert_eq!(run.json()[0]["status"], "committed", "{run:?}");
    assert_eq!(run.json()[0]["balance"], "87.50", "{run:?}");
    // The same id again: the original result, no second debit.
    let run = linux_client(server.addr, "alice", &password("alice"), &transfer);
    assert_eq!(run.code, 0, "transfer retried: {run:?}");
    assert_eq!(run.json()[0]["balance"], "87.50", "{run:?}");
    let run = linux_client(server.addr, "alice", "not alice's password", &["balance"]);
    assert_eq!(run.code, 3, "a wrong password is refused: {run:?}");
    let run = linux_client(server.addr, "bob", &password("bob"), &["--json", "balance"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()[0]["balance"], "112.50", "{run:?}");

    // 3. Ctrl-C: a graceful stop through the Windows console handler.
    let (status, lines) = server.ctrl_c();
    assert!(status.success(), "txsock.exe serve after Ctrl-C: {status}");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("txsock stopped: 1 transfers in")),
        "the closing line: {lines:?}"
    );

    // 4. The audit logs in the Windows data directory, and the ledger the server wrote.
    let log = |name: &str| std::fs::read_to_string(data.join(name)).unwrap_or_default();
    let sessions = log("sessions.log");
    assert!(sessions.contains("register user=bob"), "{sessions}");
    assert!(sessions.contains("login user=alice"), "{sessions}");
    assert!(sessions.contains("login_failed user=alice"), "{sessions}");
    let transactions = log("transactions.log");
    assert_eq!(
        transactions.matches(" transfer id=win-1 ").count(),
        1,
        "one journal line for the transfer and its retry: {transactions}"
    );
    assert!(
        transactions.contains("from=alice to=bob amount=12.50"),
        "{transactions}"
    );
    assert!(data.join("error.log").is_file(), "error.log in {data:?}");
    let out = wine.run(&["ledger", "check", "--data-dir", &data_dir], "");
    assert!(out.status.success(), "txsock.exe ledger check");
    let out = wine.run(&["user", "list", "--data-dir", &data_dir], "");
    assert!(out.status.success(), "txsock.exe user list");
    let list = stdout(&out);
    for (user, balance) in [("alice", "87.50"), ("bob", "112.50")] {
        assert!(
            list.lines()
                .any(|line| line.split_whitespace().next() == Some(user) && line.contains(balance)),
            "{user} has {balance}: {list}"
        );
    }

    // 5. The Windows client, the Linux server.
    let mut linux = Server::start(&["--opening-balance", "100.00"]);
    let address = linux.addr.to_string();
    let client = |user: &str, args: &[&str]| {
        let mut all = vec![
            "client",
            "--server",
            address.as_str(),
            "--min-iterations",
            &iterations,
            "--user",
            user,
        ];
        all.extend_from_slice(args);
        let mut command = wine.txsock(&all);
        command.env("TXSOCK_PASSWORD", password(user));
        let out = run_within(command, "", COMMAND_LIMIT, "txsock.exe client");
        println!(
            "$ txsock.exe client --user {user} {}: {}\n{}{}",
            args.join(" "),
            out.status,
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    for user in ["carol", "dave"] {
        let out = client(user, &["register"]);
        assert!(out.status.success(), "txsock.exe client register {user}");
        assert_eq!(stdout(&out).trim(), format!("registered {user}"));
    }
    let out = client(
        "carol",
        &["--json", "transfer", "dave", "5.00", "--id", "win-2"],
    );
    assert!(out.status.success(), "txsock.exe client transfer");
    let text = stdout(&out);
    assert!(text.contains("\"status\":\"committed\""), "{text}");
    assert!(text.contains("\"balance\":\"95.00\""), "{text}");
    let out = client("dave", &["balance"]);
    assert!(out.status.success(), "txsock.exe client balance");
    assert_eq!(stdout(&out).trim(), "balance of dave: 105.00");
    assert_eq!(linux.committed("win-2"), 1);
    assert!(linux.ledger_ok(), "ledger check on the Linux server's data");
    assert!(linux.stop(), "the Linux server stops cleanly");
}
