//! Tools the tasks need, and the Debian packages that provide them.
//!
//! To require another tool, add one line to [`PREREQUISITES`].

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::util::{self, run, Error};
use crate::{galera, qemu, windows};

/// Which task needs a prerequisite.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Need {
    /// `cargo test --workspace` (the host tests).
    Tests,
    /// Running the Cortex-M image under QEMU.
    Qemu,
    /// Building for a target whose standard library rustup does not provide (the Cortex-M
    /// images without `thumbv7em-none-eabihf`, txsock.exe without `x86_64-pc-windows-gnu`):
    /// Debian's toolchain builds it from source instead (`-Z build-std`).
    BuildStd,
    /// The Windows step: cross-building txsock.exe (mingw-w64: SQLite's C, the linker, the
    /// test's stand-in DLL) and running it under Wine.
    Windows,
    /// `cargo xtask bench`: the PostgreSQL anchor (initdb, postgres, pgbench).
    Bench,
}

/// How to tell that a prerequisite is there.
#[derive(Clone, Copy, Debug)]
pub enum Present {
    /// An executable of this name is on `PATH`.
    OnPath(&'static str),
    /// This file or directory exists.
    Exists(&'static str),
}

/// One tool, the Debian package that provides it, and who needs it.
#[derive(Clone, Copy, Debug)]
pub struct Prerequisite {
    pub present: Present,
    pub package: &'static str,
    pub need: Need,
}

const fn prerequisite(present: Present, package: &'static str, need: Need) -> Prerequisite {
    Prerequisite {
        present,
        package,
        need,
    }
}

/// Everything any task needs that cargo does not fetch by itself.
pub const PREREQUISITES: &[Prerequisite] = &[
    // The MySQL/MariaDB tests run on a throwaway server (see `mariadb.rs`).
    prerequisite(
        Present::Exists("/usr/sbin/mariadbd"),
        "mariadb-server",
        Need::Tests,
    ),
    prerequisite(
        Present::OnPath("mariadb-install-db"),
        "mariadb-server",
        Need::Tests,
    ),
    prerequisite(Present::OnPath("mariadb"), "mariadb-client", Need::Tests),
    // The Galera tests run a throwaway three-node cluster (see `galera.rs`): the provider,
    // and rsync for the state transfers of nodes that rejoin.
    prerequisite(Present::Exists(galera::PROVIDER), "galera-4", Need::Tests),
    prerequisite(Present::OnPath("rsync"), "rsync", Need::Tests),
    // The benchmark's anchor runs pgbench against a throwaway cluster (see `pgbench.rs`).
    // (pg_ctlcluster: Debian's postgresql-common, which comes with every server version.)
    prerequisite(Present::OnPath("pg_ctlcluster"), "postgresql", Need::Bench),
    prerequisite(Present::OnPath("timeout"), "coreutils", Need::Qemu),
    prerequisite(
        Present::OnPath("qemu-system-arm"),
        "qemu-system-arm",
        Need::Qemu,
    ),
    prerequisite(
        Present::Exists("/usr/bin/rustc"),
        "rustc-web",
        Need::BuildStd,
    ),
    prerequisite(
        Present::Exists("/usr/bin/cargo"),
        "cargo-web",
        Need::BuildStd,
    ),
    prerequisite(
        Present::Exists("/usr/lib/rustlib/src/rust/library/core/Cargo.toml"),
        "rust-web-src",
        Need::BuildStd,
    ),
    // txsock.exe: the C compiler and linker for x86_64-pc-windows-gnu, and Debian's 64-bit
    // Wine (its loader is not on PATH).
    prerequisite(
        Present::OnPath("x86_64-w64-mingw32-gcc"),
        "gcc-mingw-w64-x86-64",
        Need::Windows,
    ),
    prerequisite(
        Present::Exists(windows::WINE_LOADER),
        "wine64",
        Need::Windows,
    ),
];

impl Present {
    fn check(self) -> bool {
        match self {
            Present::OnPath(program) => util::on_path(program),
            Present::Exists(path) => Path::new(path).exists(),
        }
    }
}

/// Set once `apt-get update` ran in this process.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Makes sure every prerequisite of `needs` is present.
///
/// [`Need::Qemu`] and [`Need::Windows`] imply [`Need::BuildStd`] when rustup lacks their
/// target. Missing packages are installed with apt-get when running as root; otherwise this
/// prints the command to run and fails.
pub fn ensure(needs: &[Need]) -> Result<(), Error> {
    let packages = missing(needs);
    if packages.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y {}", packages.join(" "));
    if !is_root() {
        return Err(Error::new(format!(
            "missing Debian packages: {}. Run:\n    sudo apt-get update && sudo {install}",
            packages.join(" ")
        )));
    }
    println!("installing missing Debian packages: {}", packages.join(" "));
    if !APT_UPDATED.swap(true, Ordering::Relaxed) {
        run(Command::new("apt-get").arg("update"))?;
    }
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y"])
        .args(&packages))?;
    let still_missing = missing(needs);
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "still missing after `{install}`: {}",
            still_missing.join(" ")
        )))
    }
}

/// The Debian packages that provide the missing prerequisites of `needs` (see [`ensure`]).
pub fn missing(needs: &[Need]) -> Vec<&'static str> {
    let mut needs = needs.to_vec();
    if (needs.contains(&Need::Qemu) && !qemu::rustup_target_installed())
        || (needs.contains(&Need::Windows) && !windows::rustup_target_installed())
    {
        needs.push(Need::BuildStd);
    }
    let mut packages: Vec<&'static str> = Vec::new();
    for p in PREREQUISITES {
        if needs.contains(&p.need) && !p.present.check() && !packages.contains(&p.package) {
            packages.push(p.package);
        }
    }
    packages
}

/// Makes sure the rustup components are installed (`rustup component add` if not).
pub fn ensure_rustup_components(components: &[&str]) -> Result<(), Error> {
    let installed =
        util::output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|component| {
            // Installed components are listed with their host triple, e.g. `clippy-x86_64-...`.
            let prefix = format!("{component}-");
            !installed
                .lines()
                .any(|line| line == *component || line.starts_with(&prefix))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("rustup")
        .args(["component", "add"])
        .args(&missing))
}

/// Whether this process runs as root (`id -u` is 0).
pub fn is_root() -> bool {
    util::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}
