//! The embassy-net server (`firmware-sim/embassy`, its own workspace): step `embassy` of `cargo
//! xtask test`, and its Cortex-M4 image in `cargo xtask qemu`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::qemu;
use crate::util::{run, Error};

/// The crate, relative to the repository root.
const CRATE: &str = "firmware-sim/embassy";

/// The Cortex-M image's binary and the start of its footprint line.
const IMAGE_BIN: &str = "embassy-image";
const IMAGE_FOOTPRINT: &str = "embassy flash=";

/// The host workspace's target directory, where `txsock` is built: the sub-workspace builds
/// there too, so that its TAP test finds `txsock` beside it and no second target directory
/// appears.
fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
}

/// `cargo <args>` inside the crate (its `.cargo/config.toml` applies), into the host target
/// directory.
fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(root.join(CRATE))
        .args(args)
        .arg("--target-dir")
        .arg(target_dir(root));
    command
}

/// Step `embassy` of `cargo xtask test`: fmt and clippy of the sub-workspace (the TAP binary,
/// the library and the test, for the host), then the server on a TAP interface reached by the
/// real `txsock client` and `txsock mitm` (`firmware-sim/embassy/tests/tap.rs`: register,
/// login, transfers, a replay and a tampered frame refused, `server_busy`; it prints `SKIPPED:
/// <reason>` without root, /dev/net/tun or namespaces). The thumbv7em build is checked by
/// step `qemu`, which builds and runs the image.
pub fn test(root: &Path) -> Result<(), Error> {
    let manifest = root.join(CRATE).join("Cargo.toml");
    run(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args(["fmt", "--manifest-path"])
            .arg(&manifest)
            .args(["--", "--check"]),
    )?;
    run(
        cargo(root, &["clippy", "--features", "tap", "--all-targets"])
            .args(["--", "-D", "warnings"]),
    )?;
    crate::build_txsock(root)?;
    let txsock = target_dir(root).join("debug").join("txsock");
    run(cargo(root, &["test", "--features", "tap", "--test", "tap"])
        .env("TXSOCK_BIN", txsock)
        .args(["--", "--ignored", "--nocapture"]))
}

/// Builds the Cortex-M4 image (`--features cortex-m`, release, for [`qemu::TARGET`]) into
/// `target_dir`, runs it under QEMU and returns its footprint line.
pub fn image(root: &Path, target_dir: &Path) -> Result<String, Error> {
    let bin_dir = qemu::build_with(
        &root.join(CRATE),
        target_dir,
        &["--features", "cortex-m", "--bin", IMAGE_BIN],
    )?;
    println!("--> image {IMAGE_BIN}");
    let log = target_dir.join(format!("qemu-{IMAGE_BIN}.txt"));
    let output = qemu::run_image(&bin_dir.join(IMAGE_BIN), &log)
        .map_err(|error| Error::new(format!("image `{IMAGE_BIN}`: {error}")))?;
    output
        .lines()
        .find(|line| line.starts_with(IMAGE_FOOTPRINT))
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(format!(
                "image `{IMAGE_BIN}`: QEMU exited 0 but the image printed no `{IMAGE_FOOTPRINT}..` line"
            ))
        })
}
