//! `cargo xtask qemu`: build the Cortex-M4 images and run them under QEMU.

use std::env;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::prerequisites::{self, Need};
use crate::util::{self, repo_root, run, Error};

/// The images' target: Cortex-M4 with FPU.
pub const TARGET: &str = "thumbv7em-none-eabihf";

/// The image crates, relative to the repository root: each its own workspace, excluded from the
/// root one, built for [`TARGET`] into the same target directory.
pub const IMAGE_CRATES: [&str; 2] = ["core/cortex-m-test", "firmware-sim/cortex-m"];

/// One image: a binary of one of the [`IMAGE_CRATES`] that runs under QEMU and prints a footprint
/// line. The crates share a target directory, so all ELFs end up side by side.
struct Image {
    /// The binary's name, as in `core/cortex-m-test/Cargo.toml`.
    bin: &'static str,
    /// How its footprint line starts.
    footprint: &'static str,
    /// Its label in the summary.
    label: &'static str,
}

/// The whole self-test: both sessions, the RFC and protocol vectors, the runtime.
const SELFTEST: Image = Image {
    bin: "txsock-cortex-m-test",
    footprint: "flash=",
    label: "selftest",
};

/// The server engine alone, as a device server links it, driven by a canned transcript.
const SERVER_ENGINE: Image = Image {
    bin: "server-engine",
    footprint: "server_engine flash=",
    label: "server_engine",
};

/// The runtime alone (start-up, semihosting, `core::fmt`, panic and fault handlers): what the
/// server-engine image carries besides the engine.
const BASELINE: Image = Image {
    bin: "baseline",
    footprint: "baseline flash=",
    label: "baseline",
};

/// firmware-sim's device (smoltcp, 4 sessions, ledger) serving a scripted client over an
/// in-memory lossy link: transfers, a replay, a tamper attempt.
const DEVICE: Image = Image {
    bin: "txsock-device",
    footprint: "device flash=",
    label: "device",
};

/// The device alone, as a board links it (no client, no link simulation): its own flash.
const DEVICE_ALONE: Image = Image {
    bin: "device-alone",
    footprint: "device_alone flash=",
    label: "device_alone",
};

/// The device alone with firmware-sim's flash ledger on simulated flash (in RAM): what the
/// flash ledger costs.
const DEVICE_FLASH: Image = Image {
    bin: "device-flash",
    footprint: "device_flash flash=",
    label: "device_flash",
};

/// Every image, in the order they run.
const IMAGES: [&Image; 6] = [
    &SELFTEST,
    &SERVER_ENGINE,
    &BASELINE,
    &DEVICE,
    &DEVICE_ALONE,
    &DEVICE_FLASH,
];

/// The budgets for the device image (smoltcp + core + 4 sessions + ledger): flash, RAM
/// and peak stack. Enforced for the device's images (with `MemLedger` and with the flash
/// ledger): `cargo xtask qemu` fails when one is over. The board step checks the same figures
/// (tests/tests/board.rs).
pub const DEVICE_FLASH_BUDGET: u64 = 96 * 1024;
pub const DEVICE_RAM_BUDGET: u64 = 48 * 1024;
pub const DEVICE_STACK_BUDGET: u64 = 8 * 1024;
/// The flash goal for the device image: reported, not enforced.
const DEVICE_FLASH_GOAL: u64 = 80 * 1024;

/// The budget for the server engine on Cortex-M: flash, net of the runtime.
const SERVER_ENGINE_FLASH_BUDGET: u64 = 48 * 1024;

/// The budget for the server engine on Cortex-M: RAM per session.
const SERVER_SESSION_BUDGET: u64 = 2 * 1024;

/// How long QEMU may run one image before it counts as hung.
const TIMEOUT_SECONDS: u32 = 300;

/// The manifests of the image crates, for `cargo fmt --manifest-path`.
pub fn image_manifests(root: &Path) -> Vec<PathBuf> {
    IMAGE_CRATES
        .iter()
        .map(|krate| root.join(krate).join("Cargo.toml"))
        .collect()
}

/// Builds the images and runs each one; fails if the build fails, QEMU exits non-zero or times
/// out, or an image does not print its footprint line. Then prints the footprints, and the
/// server engine's net flash (server-engine image minus baseline image) against its budget;
/// fails if the device's figures (with `MemLedger` or with the flash ledger) are over the
/// device budget.
pub fn qemu() -> Result<(), Error> {
    prerequisites::ensure(&[Need::Qemu])?;
    let root = repo_root();
    let target_dir = root.join("target").join("cortex-m");
    let mut bin_dir = PathBuf::new();
    for krate in IMAGE_CRATES {
        bin_dir = build(&root.join(krate), &target_dir)?;
    }
    let mut footprints = Vec::new();
    for image in IMAGES {
        println!("--> image {}", image.bin);
        let log = target_dir.join(format!("qemu-{}.txt", image.bin));
        let output = run_image(&bin_dir.join(image.bin), &log)
            .map_err(|error| Error::new(format!("image `{}`: {error}", image.bin)))?;
        let footprint = output
            .lines()
            .find(|line| line.starts_with(image.footprint))
            .ok_or_else(|| {
                Error::new(format!(
                    "image `{}`: QEMU exited 0 but the image printed no `{}..` line",
                    image.bin, image.footprint
                ))
            })?;
        footprints.push((image, footprint.to_owned()));
    }
    // The embassy-net server's image (firmware-sim/embassy, its own build), reported beside the
    // device's figures.
    let embassy = crate::embassy::image(&root, &target_dir)?;
    let value = |image: &Image, key: &str| -> Result<u64, Error> {
        footprints
            .iter()
            .find(|(i, _)| i.bin == image.bin)
            .and_then(|(_, line)| field(line, key))
            .ok_or_else(|| {
                Error::new(format!(
                    "image `{}`: no `{key}=<bytes>` in its footprint line",
                    image.bin
                ))
            })
    };
    let net_flash = value(&SERVER_ENGINE, "flash")?.saturating_sub(value(&BASELINE, "flash")?);
    let session = value(&SERVER_ENGINE, "server_session")?;
    println!("footprint (bytes):");
    for (image, line) in &footprints {
        let line = line.strip_prefix(image.label).unwrap_or(line).trim_start();
        println!("  {:<14} {line}", format!("{}:", image.label));
    }
    println!(
        "  server_engine_net_flash={net_flash} (server_engine - baseline flash; budget \
         {SERVER_ENGINE_FLASH_BUDGET}: {})",
        verdict(net_flash, SERVER_ENGINE_FLASH_BUDGET)
    );
    println!(
        "  server_session={session} (one default ServerSession; budget \
         {SERVER_SESSION_BUDGET}: {})",
        verdict(session, SERVER_SESSION_BUDGET)
    );
    // The device's own figures: flash of the device alone, RAM of its statics, and the deepest
    // stack it reached, serving (device image) or setting up (device_alone, from reset).
    let device_flash = value(&DEVICE_ALONE, "flash")?;
    let device_ram = value(&DEVICE, "device_ram")?;
    let serving = value(&DEVICE, "device_stack_peak")?;
    let setup = value(&DEVICE_ALONE, "stack_peak")?;
    let device_stack = serving.max(setup);
    println!(
        "  device_image flash={device_flash} (device_alone; budget {DEVICE_FLASH_BUDGET}: {}; \
         goal {DEVICE_FLASH_GOAL}: {}) ram={device_ram} (device statics; budget \
         {DEVICE_RAM_BUDGET}: {}) stack_peak={device_stack} (max of serving {serving} and set-up \
         {setup}; budget {DEVICE_STACK_BUDGET}: {})",
        verdict(device_flash, DEVICE_FLASH_BUDGET),
        goal(device_flash),
        verdict(device_ram, DEVICE_RAM_BUDGET),
        verdict(device_stack, DEVICE_STACK_BUDGET)
    );
    let mut over = over_budget(
        "device_image (MemLedger)",
        [device_flash, device_ram, device_stack],
    );
    // Both `ram` figures are every static of the image (the device_alone image's, not the
    // device's own `device_ram`), so the difference is what embassy costs.
    let embassy_flash = field(&embassy, "flash").unwrap_or(0);
    let embassy_ram = field(&embassy, "ram").unwrap_or(0);
    let alone_ram = value(&DEVICE_ALONE, "ram")?;
    println!(
        "  embassy_image flash={embassy_flash} ({:+} against device_alone; budget \
         {DEVICE_FLASH_BUDGET}: {}) ram={embassy_ram} ({:+} against device_alone's {alone_ram}; \
         budget {DEVICE_RAM_BUDGET}: {}): the same server on embassy-net, same sizes [{embassy}]",
        embassy_flash as i64 - device_flash as i64,
        verdict(embassy_flash, DEVICE_FLASH_BUDGET),
        embassy_ram as i64 - alone_ram as i64,
        verdict(embassy_ram, DEVICE_RAM_BUDGET),
    );
    // With the flash ledger: its RAM net of the simulated flash (a board's flash is not RAM).
    let flash_flash = value(&DEVICE_FLASH, "flash")?;
    let flash_ram =
        value(&DEVICE_FLASH, "ram")?.saturating_sub(value(&DEVICE_FLASH, "flash_image")?);
    let flash_stack = value(&DEVICE_FLASH, "stack_peak")?;
    println!(
        "  device_flash_ledger flash={flash_flash} (budget {DEVICE_FLASH_BUDGET}: {}; goal \
         {DEVICE_FLASH_GOAL}: {}) ram={flash_ram} (whole image less the simulated flash; budget \
         {DEVICE_RAM_BUDGET}: {}) stack_peak={flash_stack} (set-up and ledger calls; budget \
         {DEVICE_STACK_BUDGET}: {})",
        verdict(flash_flash, DEVICE_FLASH_BUDGET),
        goal(flash_flash),
        verdict(flash_ram, DEVICE_RAM_BUDGET),
        verdict(flash_stack, DEVICE_STACK_BUDGET)
    );
    over.extend(over_budget(
        "device_flash (FlashLedger)",
        [flash_flash, flash_ram, flash_stack],
    ));
    if over.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "over the device budget: {} (find what grew with `llvm-nm --size-sort` on the ELF \
             in {} and the images' frames in their disassembly; see docs/PORTING.md, \
             \"Measured footprint\")",
            over.join("; "),
            bin_dir.display()
        )))
    }
}

/// Each of `[flash, ram, stack_peak]` of the device image `image` that is over the device
/// budget, as `<image> <figure>=<bytes> > budget <bytes>`.
pub fn over_budget(image: &str, [flash, ram, stack]: [u64; 3]) -> Vec<String> {
    [
        ("flash", flash, DEVICE_FLASH_BUDGET),
        ("ram", ram, DEVICE_RAM_BUDGET),
        ("stack_peak", stack, DEVICE_STACK_BUDGET),
    ]
    .into_iter()
    .filter(|&(_, bytes, budget)| bytes > budget)
    .map(|(figure, bytes, budget)| format!("{image} {figure}={bytes} > budget {budget}"))
    .collect()
}

/// How `bytes` compares with the device's flash goal, for the summary (not enforced).
fn goal(bytes: u64) -> &'static str {
    if bytes <= DEVICE_FLASH_GOAL {
        "met"
    } else {
        "missed"
    }
}

/// The value of `key=<number>` in a space-separated footprint line.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// How `bytes` compares with `budget`, for the summary.
fn verdict(bytes: u64, budget: u64) -> &'static str {
    if bytes <= budget {
        "within"
    } else {
        "OVER"
    }
}

/// Builds the release images of the image crate in `crate_dir` (all its binaries, one cargo
/// invocation) into `target_dir` and returns the directory that holds the ELFs.
pub fn build(crate_dir: &Path, target_dir: &Path) -> Result<PathBuf, Error> {
    build_with(crate_dir, target_dir, &[])
}

/// [`build`] with `extra` cargo arguments (features, one binary).
pub fn build_with(crate_dir: &Path, target_dir: &Path, extra: &[&str]) -> Result<PathBuf, Error> {
    build_for(crate_dir, TARGET, target_dir, extra)
}

/// [`build_with`] for any bare-metal `target`.
///
/// With a prebuilt target in the default toolchain, a plain `cargo build`. Otherwise Debian's
/// rustc-web/cargo-web build `core` from rust-web-src (`-Z build-std`, allowed on a stable
/// compiler by `RUSTC_BOOTSTRAP=1`), and a rustup toolchain's `rust-lld` links, because Debian's
/// `rust-lld` points at an `lld` that Debian 12 does not ship.
pub fn build_for(
    crate_dir: &Path,
    target: &str,
    target_dir: &Path,
    extra: &[&str],
) -> Result<PathBuf, Error> {
    let mut command;
    if prebuilt_std(target) {
        println!("toolchain: the default rustc's prebuilt {target} target");
        command = Command::new("cargo");
    } else {
        let linker = rust_lld()?;
        println!(
            "toolchain: Debian's /usr/bin/rustc with -Z build-std=core, linker {}",
            linker.display()
        );
        let linker_variable = format!(
            "CARGO_TARGET_{}_LINKER",
            target.to_uppercase().replace('-', "_")
        );
        command = Command::new("/usr/bin/cargo");
        command
            .env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .env(linker_variable, linker)
            .args(["-Z", "build-std=core"]);
    }
    // Run inside the crate so that its `.cargo/config.toml` (rustflags `-Tlink.x`) applies;
    // `--config` adds to those rustflags (arrays from several sources are joined).
    command
        .arg("--config")
        .arg(remap_path_prefixes(target))
        .current_dir(crate_dir)
        .args(["build", "--release", "--target", target, "--target-dir"])
        .arg(target_dir)
        .args(extra);
    run(&mut command)?;
    Ok(target_dir.join(target).join("release"))
}

/// A `--config` value giving `target`'s rustflags `--remap-path-prefix` for the three places
/// source files come from: the repository (`txsock/`), cargo's registry (`crates/`) and the
/// Rust sources of `-Z build-std` (`rust/`). The file names of panic locations are a good part
/// of a device image's `.rodata` (about 3 KB of the board's, most of it cargo's registry path);
/// remapped, an image's size no longer depends on where the repository, cargo's home or the
/// Rust sources are (a clone in `/tmp/c` measured larger than one in `/work/main`), and the
/// images carry no paths of the machine that built them.
fn remap_path_prefixes(target: &str) -> String {
    let mut remaps = vec![
        (repo_root(), "txsock".to_owned()),
        (
            PathBuf::from("/usr/lib/rustlib/src/rust"),
            "rust".to_owned(),
        ),
    ];
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    if let Some(cargo_home) = cargo_home {
        // One directory per registry (`index.crates.io-<hash>`).
        if let Ok(registries) = fs::read_dir(cargo_home.join("registry").join("src")) {
            remaps.extend(
                registries
                    .flatten()
                    .map(|entry| (entry.path(), "crates".to_owned())),
            );
        }
        remaps.push((cargo_home.join("git").join("checkouts"), "git".to_owned()));
    }
    let flags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| format!("\"--remap-path-prefix={}={to}\"", from.display()))
        .collect();
    format!("target.{target}.rustflags=[{}]", flags.join(","))
}

/// Runs `elf` under QEMU with its output going to `log` (a file: QEMU's semihosting output must
/// never go to a pipe that may close early, or the image retries forever), then prints it.
pub fn run_image(elf: &Path, log: &Path) -> Result<String, Error> {
    let io_error = |error: std::io::Error| Error::new(format!("{}: {error}", log.display()));
    let stdout = File::create(log).map_err(io_error)?;
    let stderr = stdout.try_clone().map_err(io_error)?;
    let mut command = Command::new("timeout");
    command
        .arg(TIMEOUT_SECONDS.to_string())
        .args([
            "qemu-system-arm",
            "-cpu",
            "cortex-m4",
            "-machine",
            "mps2-an386",
            "-nographic",
        ])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf);
    let shown = util::display(&command);
    println!("$ {shown} > {}", log.display());
    let started = Instant::now();
    let status = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|error| Error::new(format!("could not start `{shown}`: {error}")))?;
    let output = String::from_utf8_lossy(&fs::read(log).map_err(io_error)?).into_owned();
    print!("{output}");
    if !output.is_empty() && !output.ends_with('\n') {
        println!();
    }
    println!(
        "QEMU: {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match status.code() {
        Some(0) => Ok(output),
        // `timeout` exits 124 when it had to stop the command.
        Some(124) => Err(Error::new(format!(
            "QEMU timed out after {TIMEOUT_SECONDS} s"
        ))),
        _ => Err(Error::new(format!("QEMU failed ({status})"))),
    }
}

/// Whether the `rustc` that `cargo` runs has a prebuilt `thumbv7em-none-eabihf` standard
/// library (with rustup: `rustup target add thumbv7em-none-eabihf`).
pub fn rustup_target_installed() -> bool {
    prebuilt_std(TARGET)
}

/// Whether the `rustc` that `cargo` runs has a prebuilt standard library for `target`.
pub fn prebuilt_std(target: &str) -> bool {
    let Ok(sysroot) = util::output(Command::new("rustc").args(["--print", "sysroot"])) else {
        return false;
    };
    Path::new(sysroot.trim())
        .join("lib")
        .join("rustlib")
        .join(target)
        .join("lib")
        .is_dir()
}

/// A rustup toolchain's `rust-lld`: a `stable-*` toolchain's first, else the current
/// toolchain's.
fn rust_lld() -> Result<PathBuf, Error> {
    let rustup_home = env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".rustup")));
    let mut sysroots = Vec::new();
    if let Some(rustup_home) = rustup_home {
        let mut stable = subdirectories(&rustup_home.join("toolchains"));
        stable.retain(|dir| {
            dir.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("stable-"))
        });
        sysroots.extend(stable);
    }
    if let Ok(sysroot) = util::output(Command::new("rustc").args(["--print", "sysroot"])) {
        sysroots.push(PathBuf::from(sysroot.trim()));
    }
    for sysroot in &sysroots {
        for host in subdirectories(&sysroot.join("lib").join("rustlib")) {
            let lld = host.join("bin").join("rust-lld");
            if util::is_executable(&lld) {
                return Ok(lld);
            }
        }
    }
    Err(Error::new(
        "no rust-lld found (looked in ~/.rustup/toolchains/stable-*/lib/rustlib/*/bin and the \
         current rustc's sysroot); install a rustup toolchain: \
         https://rustup.rs, then `rustup toolchain install stable`",
    ))
}

/// The subdirectories of `dir`, sorted; none if it cannot be read.
fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_footprint_fields() {
        let line = "server_engine flash=47364 ram=0 stack_peak=13516 server_session=1880";
        assert_eq!(field(line, "flash"), Some(47364));
        assert_eq!(field(line, "ram"), Some(0));
        assert_eq!(field(line, "server_session"), Some(1880));
        assert_eq!(field(line, "session"), None);
        assert_eq!(field("flash=x", "flash"), None);
        assert_eq!(field("baseline flash=5260", "flash"), Some(5260));
    }

    #[test]
    fn names_each_figure_over_the_device_budget() {
        assert!(over_budget("x", [98_304, 49_152, 8_192]).is_empty());
        assert_eq!(
            over_budget("device_flash", [98_305, 1, 8_193]),
            [
                "device_flash flash=98305 > budget 98304",
                "device_flash stack_peak=8193 > budget 8192"
            ]
        );
    }

    #[test]
    fn compares_with_budget() {
        assert_eq!(verdict(49152, SERVER_ENGINE_FLASH_BUDGET), "within");
        assert_eq!(verdict(49153, SERVER_ENGINE_FLASH_BUDGET), "OVER");
    }
}
