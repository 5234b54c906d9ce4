//! `cargo xtask board`: the txsock device on QEMU's mps2-an386 board (firmware-sim/board), on
//! the network; and what the `board` step of `cargo xtask test` needs.
//!
//! The board's flash is a host file, `flash.bin`, in the board's state directory (QEMU runs
//! there and the image opens it through semihosting). It persists between boots: stopping QEMU
//! and booting again is a reboot of the same board. A new flash file is *provisioned* here, as
//! a factory would over the debug port: sector 0 gets the provisioning record that
//! firmware-sim/board/src/provision.rs reads (16-byte magic, a 32-byte RNG seed and 32
//! reserved bytes, from the host's /dev/urandom), the rest stays erased (the image grows the
//! file to its full size, erased, at its first boot, and the flash ledger formats its region).

use std::fs;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::prerequisites::{self, Need};
use crate::qemu;
use crate::targets;
use crate::util::{self, Error};

/// The board's crate, relative to the repository root (its own workspace).
pub const CRATE: &str = "firmware-sim/board";
/// The board image.
pub const IMAGE: &str = "txsock-board";
/// The flash's own check image.
pub const FLASH_CHECK: &str = "flash-check";
/// The device's address and port on QEMU's user-mode network.
pub const GUEST: &str = "10.0.2.15:11002";
/// The host port forwarded to the device unless `--port` says otherwise: txsock's own default
/// port, so `txsock client` needs no `--server`.
pub const DEFAULT_PORT: u16 = 11002;
/// The provisioning record's first bytes (firmware-sim/board/src/provision.rs `MAGIC`).
const MAGIC: &[u8; 16] = b"TXSOCK-BOARD-V1\0";
/// One flash sector: the provisioning record's sector.
const SECTOR: usize = 4096;

/// The board crate's manifest, for `cargo fmt --manifest-path`.
pub fn manifest(root: &Path) -> PathBuf {
    root.join(CRATE).join("Cargo.toml")
}

/// Where the board keeps its flash between boots: `target/board/`.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join("target").join("board")
}

/// Builds the board's images (release, like the other Cortex-M images, into target/cortex-m)
/// and returns the directory that holds them.
pub fn build(root: &Path) -> Result<PathBuf, Error> {
    prerequisites::ensure(&[Need::Qemu])?;
    qemu::build(&root.join(CRATE), &root.join("target").join("cortex-m"))
}

/// Writes a newly provisioned flash file to `path`: the record in sector 0, erased after it.
pub fn provision(path: &Path) -> Result<(), Error> {
    let io = |error: std::io::Error| Error::new(format!("{}: {error}", path.display()));
    let mut secrets = [0u8; 64];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut secrets))
        .map_err(|error| Error::new(format!("/dev/urandom: {error}")))?;
    let mut sector = vec![0xFF; SECTOR];
    sector[..16].copy_from_slice(MAGIC);
    sector[16..80].copy_from_slice(&secrets);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let partial = path.with_extension("new");
    fs::write(&partial, &sector).map_err(io)?;
    fs::rename(&partial, path).map_err(io)
}

/// The QEMU command that boots `elf` with the device reachable at 127.0.0.1:`port`, in `dir`
/// (where its flash file is). No display, monitor or serial port: the image talks through
/// semihosting (stdout), and Ctrl-C stops QEMU. `restrict=on` keeps the guest off every
/// network but the forwarded port.
pub fn qemu_command(elf: &Path, port: u16, dir: &Path) -> Command {
    let mut command = Command::new("qemu-system-arm");
    command
        .current_dir(dir)
        .args(["-cpu", "cortex-m4", "-machine", "mps2-an386"])
        .args(["-display", "none", "-monitor", "none", "-serial", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-nic")
        .arg(format!(
            "user,model=lan9118,restrict=on,hostfwd=tcp:127.0.0.1:{port}-{GUEST}"
        ))
        .arg("-kernel")
        .arg(elf);
    command
}

/// `cargo xtask board [--port P] [--fresh]`: builds the image, provisions the flash if it has
/// none (or `fresh`), and runs QEMU in the foreground until it is stopped.
pub fn run(port: u16, fresh: bool) -> Result<(), Error> {
    let root = util::repo_root();
    let bin_dir = build(&root)?;
    let dir = state_dir(&root);
    let flash = dir.join("flash.bin");
    if fresh && flash.exists() {
        fs::remove_file(&flash)
            .map_err(|error| Error::new(format!("{}: {error}", flash.display())))?;
        println!("--fresh: erased the board's flash ({})", flash.display());
    }
    if !flash.exists() {
        provision(&flash)?;
        println!(
            "provisioned a new board: {} (RNG seed from /dev/urandom)",
            flash.display()
        );
    }
    if let Err(error) = TcpListener::bind(("127.0.0.1", port)) {
        return Err(Error::new(format!(
            "127.0.0.1:{port} is not free ({error}): stop what listens there or pass \
             `--port <another>`"
        )));
    }
    let server = if port == DEFAULT_PORT {
        String::new()
    } else {
        format!("--server 127.0.0.1:{port} ")
    };
    println!(
        "\nThe device is at 127.0.0.1:{port} (forwarded to {GUEST} on the board).\n\
         Its flash is {} and survives reboots (`--fresh` erases it).\n\
         Try, in another terminal (PBKDF2 as low as 4096 is accepted by this test board):\n    \
         export TXSOCK_PASSWORD='a long passphrase'\n    \
         txsock client {server}--user alice --min-iterations 4096 register\n    \
         txsock client {server}--user alice --min-iterations 4096 balance\n    \
         txsock stress load --server 127.0.0.1:{port} --clients 2 --duration 10s\n\
         Ctrl-C stops the board.\n",
        flash.display()
    );
    let mut command = qemu_command(&bin_dir.join(IMAGE), port, &dir);
    command.stdin(Stdio::null());
    println!("$ {}   (in {})", util::display(&command), dir.display());
    let status = command
        .status()
        .map_err(|error| Error::new(format!("could not start qemu-system-arm: {error}")))?;
    match status.code() {
        Some(0) => Ok(()),
        // Stopped by a signal (Ctrl-C): the normal way out.
        None => Ok(()),
        Some(_) => Err(Error::new(format!("QEMU exited with {status}"))),
    }
}

/// The board step's preparation: builds the images, runs `flash-check` (the semihosting NOR
/// flash on its own, against a new file), and provisions a flash template for the end-to-end
/// test. Returns the environment for tests/tests/board.rs: `TXSOCK_BOARD_ELF` (the image)
/// and `TXSOCK_BOARD_FLASH` (the template, which the test copies for each board it boots).
pub fn prepare_test(root: &Path) -> Result<Vec<(&'static str, PathBuf)>, Error> {
    let bin_dir = build(root)?;
    let dir = state_dir(root).join("test");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|error| Error::new(format!("{}: {error}", dir.display())))?;

    let log = dir.join("flash-check.txt");
    let io = |error: std::io::Error| Error::new(format!("{}: {error}", log.display()));
    let out = fs::File::create(&log).map_err(io)?;
    let mut command = Command::new("timeout");
    command
        .current_dir(&dir)
        .args([
            "60",
            "qemu-system-arm",
            "-cpu",
            "cortex-m4",
            "-machine",
            "mps2-an386",
        ])
        .args([
            "-nographic",
            "-semihosting-config",
            "enable=on,target=native",
            "-kernel",
        ])
        .arg(bin_dir.join(FLASH_CHECK))
        .stdin(Stdio::null())
        .stderr(out.try_clone().map_err(io)?)
        .stdout(out);
    println!("$ {} > {}", util::display(&command), log.display());
    let status = command
        .status()
        .map_err(|error| Error::new(format!("could not start QEMU: {error}")))?;
    let output = fs::read_to_string(&log).map_err(io)?;
    print!("{output}");
    if !status.success() || !output.contains("flash_check ok") {
        return Err(Error::new(format!("flash-check failed ({status})")));
    }

    let template = dir.join("flash-template.bin");
    provision(&template)?;
    Ok(vec![
        ("TXSOCK_BOARD_ELF", bin_dir.join(IMAGE)),
        ("TXSOCK_BOARD_FLASH", template),
    ])
}

/// Clippy on the board's and the targets' crates, which are not workspace members. They are
/// linted for the host's target (their bare-metal targets may have no clippy: Debian's
/// toolchain has none), which checks all their code but the few `cfg(thumb)` lines of their
/// dependencies; `cargo` is the cargo that runs xtask.
pub fn clippy(root: &Path, cargo: &std::ffi::OsStr) -> Result<(), Error> {
    let version = util::output(Command::new("rustc").arg("-vV"))?;
    let host = version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .ok_or_else(|| Error::new("`rustc -vV` printed no `host:` line"))?
        .to_owned();
    for manifest in [manifest(root), targets::manifest(root)] {
        util::run(
            Command::new(cargo)
                .current_dir(root)
                .args(["clippy", "--release", "--target", &host, "--manifest-path"])
                .arg(&manifest)
                // Beside the images (target/cortex-m/<host>/), not in a target dir of their own.
                .arg("--target-dir")
                .arg(root.join("target").join("cortex-m"))
                .args(["--", "-D", "warnings"]),
        )?;
    }
    Ok(())
}
