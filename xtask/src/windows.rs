//! `cargo xtask test`, step `windows`: txsock.exe cross-built for Windows and run under Wine.
//!
//! 1. Skips (prints `SKIPPED: <reason>`) where it cannot run: not x86-64 Linux, or mingw-w64
//!    or Wine missing and not installable (not root, or apt-get failed).
//! 2. Builds `txsock.exe` for [`TARGET`] (dev profile) into `target/windows`: with rustup's
//!    prebuilt target if installed, else Debian's rustc-web/cargo-web building std from
//!    rust-web-src, the same recipe as the Cortex-M images (see `qemu.rs`). mingw-w64 compiles
//!    SQLite's C and links. This is the step's expensive part; its time is printed.
//! 3. Builds `bcryptprimitives.dll` from `xtask/wine/bcryptprimitives.c`: `ProcessPrng`, which
//!    Rust's std needs on Windows, for a Wine without it (Debian 12's 8.0). The test puts it
//!    beside txsock.exe only if txsock.exe does not start without it.
//! 4. Runs the smoke test `tests/tests/windows.rs` (see its doc: the Windows server with the
//!    Linux client, Ctrl-C, the Windows client with the Linux server, Windows paths), bounded
//!    by [`TEST_LIMIT_SECONDS`] on top of the test's own time limits.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::prerequisites::{self, Need};
use crate::util::{run, Error};
use crate::{build_txsock, qemu};

/// The Windows target: 64-bit, GNU ABI (mingw-w64), which Debian can cross-compile for.
pub const TARGET: &str = "x86_64-pc-windows-gnu";

/// Debian's 64-bit Wine loader (package wine64); Debian puts no `wine64` on `PATH`.
pub const WINE_LOADER: &str = "/usr/lib/wine/wine64";

/// mingw-w64's C compiler for [`TARGET`].
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// The stand-in DLL's source, relative to the repository root.
const SHIM_SOURCE: &str = "xtask/wine/bcryptprimitives.c";

/// The whole smoke test's bound (building the test executable included); the test bounds
/// each of its own waits far below this.
const TEST_LIMIT_SECONDS: u32 = 900;

/// Whether the `rustc` that `cargo` runs has rustup's prebuilt [`TARGET`] standard library
/// (`rustup target add x86_64-pc-windows-gnu`).
pub fn rustup_target_installed() -> bool {
    qemu::prebuilt_std(TARGET)
}

/// The `windows` step of `cargo xtask test`.
pub fn test(root: &Path) -> Result<(), Error> {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED: {reason}");
        return Ok(());
    }
    let target_dir = root.join("target").join("windows");
    let started = Instant::now();
    let exe = build(root, &target_dir)?;
    let build_seconds = started.elapsed().as_secs_f64();
    println!(
        "txsock.exe built in {build_seconds:.1} s: {}",
        exe.display()
    );
    let dlls = target_dir.join("wine-dlls");
    std::fs::create_dir_all(&dlls)
        .map_err(|error| Error::new(format!("{}: {error}", dlls.display())))?;
    run(Command::new(MINGW_GCC)
        .args(["-shared", "-O2", "-s", "-o"])
        .arg(dlls.join("bcryptprimitives.dll"))
        .arg(root.join(SHIM_SOURCE))
        .arg("-ladvapi32"))?;
    // The Linux `txsock` the test runs beside txsock.exe.
    build_txsock(root)?;
    let started = Instant::now();
    let mut test = Command::new("timeout");
    test.current_dir(root)
        .args(["--kill-after=10", &TEST_LIMIT_SECONDS.to_string()])
        .arg(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["test", "-p", "txsock-e2e", "--test", "windows"])
        .args(["--", "--ignored", "--nocapture"])
        .env("TXSOCK_WINDOWS_EXE", &exe)
        .env("TXSOCK_WINDOWS_DLL_DIR", &dlls)
        .env("TXSOCK_WINE", WINE_LOADER);
    let result = run(&mut test);
    let test_seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            println!(
                "windows: txsock.exe built in {build_seconds:.1} s, smoke test under Wine passed \
                 in {test_seconds:.1} s"
            );
            Ok(())
        }
        Err(error) if test_seconds >= f64::from(TEST_LIMIT_SECONDS) => Err(Error::new(format!(
            "the Windows smoke test did not finish within {TEST_LIMIT_SECONDS} s: {error}"
        ))),
        Err(error) => Err(error),
    }
}

/// Why this machine cannot run the step, if it cannot. Installs the missing Debian packages
/// first when it can (as root).
fn skip_reason() -> Option<String> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Some("the Windows step runs on x86-64 Linux (Debian's mingw-w64 and Wine)".into());
    }
    let missing = prerequisites::missing(&[Need::Windows]);
    if missing.is_empty() {
        return None;
    }
    if !prerequisites::is_root() {
        return Some(format!(
            "missing Debian packages {} and not root to install them (sudo apt-get install -y {})",
            missing.join(" "),
            missing.join(" ")
        ));
    }
    match prerequisites::ensure(&[Need::Windows]) {
        Ok(()) => None,
        Err(error) => Some(format!("cannot install {}: {error}", missing.join(" "))),
    }
}

/// Builds `txsock.exe` into `target_dir` and returns its path.
fn build(root: &Path, target_dir: &Path) -> Result<PathBuf, Error> {
    let mut command;
    if rustup_target_installed() {
        println!("toolchain: the default rustc's prebuilt {TARGET} target");
        command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    } else {
        println!("toolchain: Debian's /usr/bin/rustc with -Z build-std=std,panic_abort");
        command = Command::new("/usr/bin/cargo");
        command
            .env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["-Z", "build-std=std,panic_abort"]);
    }
    command
        .current_dir(root)
        // No debug info: it would make the build slower (linking, mostly) and the executable
        // ten times larger, for a smoke test that never reads it.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .args([
            "build",
            "-p",
            "txsock-host",
            "--bin",
            "txsock",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(target_dir);
    run(&mut command)?;
    Ok(target_dir.join(TARGET).join("debug").join("txsock.exe"))
}
