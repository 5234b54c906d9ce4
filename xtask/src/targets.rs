//! Step `targets` of `cargo xtask test`: the core and the device built for architectures besides
//! the Cortex-M4 (firmware-sim/targets), and their linked sizes read from the ELF.
//!
//! - thumbv6m-none-eabi: Cortex-M0/M0+, which has no atomic compare-and-swap;
//! - riscv32imc-unknown-none-elf: 32-bit RISC-V without atomics (ESP32-C3 class).
//!
//! Build only: the images have no runtime and are never run. `device-size` is the device with
//! `device-alone`'s sizes (MemLedger), `flash-ledger` the same with firmware-sim's FlashLedger
//! over a NOR flash; building them compiles all of txsock-core and firmware-sim's device and
//! flash ledger for that target. Uses rustup's target if installed, else Debian's rustc-web with `-Z
//! build-std=core` (rustc-web 1.96 lists both targets), linked with a rustup toolchain's
//! rust-lld, as `cargo xtask qemu` does.

use std::fs;
use std::path::Path;

use crate::prerequisites::{self, Need};
use crate::qemu;
use crate::util::Error;

/// The crate that links the device for each target, relative to the repository root.
pub const CRATE: &str = "firmware-sim/targets";
/// Its images: the device with `MemLedger`, and with the flash ledger.
const IMAGES: [&str; 2] = ["device-size", "flash-ledger"];
/// The targets, besides the Cortex-M4's thumbv7em-none-eabihf.
pub const TARGETS: [&str; 2] = ["thumbv6m-none-eabi", "riscv32imc-unknown-none-elf"];

/// The crate's manifest, for `cargo fmt --manifest-path`.
pub fn manifest(root: &Path) -> std::path::PathBuf {
    root.join(CRATE).join("Cargo.toml")
}

/// Builds the device for each of [`TARGETS`] and prints its linked size.
pub fn targets(root: &Path) -> Result<(), Error> {
    if TARGETS.iter().any(|target| !qemu::prebuilt_std(target)) {
        prerequisites::ensure(&[Need::BuildStd])?;
    }
    let target_dir = root.join("target").join("cortex-m");
    let mut lines = Vec::new();
    for target in TARGETS {
        println!("--> {target}");
        let bin_dir = qemu::build_for(&root.join(CRATE), target, &target_dir, &[])?;
        for image in IMAGES {
            let elf = bin_dir.join(image);
            let io = |error: std::io::Error| Error::new(format!("{}: {error}", elf.display()));
            let bytes = fs::read(&elf).map_err(io)?;
            let sizes = Sizes::of(&bytes).ok_or_else(|| {
                Error::new(format!("{}: not a 32-bit little-endian ELF", elf.display()))
            })?;
            lines.push(format!(
                "  {target:<28} {image:<12} flash={} (text {} + rodata {} + data {}) ram={} \
                 (data {} + bss {})",
                sizes.text + sizes.rodata + sizes.data,
                sizes.text,
                sizes.rodata,
                sizes.data,
                sizes.data + sizes.bss,
                sizes.data,
                sizes.bss
            ));
        }
    }
    println!(
        "device linked for other targets (bytes; no runtime, not run; device-size: MemLedger, \
         flash-ledger: FlashLedger):"
    );
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// What an image's loaded sections add up to, in bytes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sizes {
    /// Executable sections.
    text: u64,
    /// Other read-only sections that are loaded.
    rodata: u64,
    /// Writable sections with initial values (in flash and in RAM).
    data: u64,
    /// Writable sections without initial values (RAM only).
    bss: u64,
}

const SHT_NOBITS: u32 = 8;
const SHF_WRITE: u32 = 0x1;
const SHF_ALLOC: u32 = 0x2;
const SHF_EXECINSTR: u32 = 0x4;

impl Sizes {
    /// Reads the section headers of a 32-bit little-endian ELF (`None` if `elf` is not one).
    fn of(elf: &[u8]) -> Option<Sizes> {
        let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
        // Magic, ELFCLASS32, ELFDATA2LSB.
        if elf.get(..6)? != b"\x7fELF\x01\x01" {
            return None;
        }
        let table = u32_at(0x20)? as usize;
        let entry = usize::from(u16_at(0x2e)?);
        let count = usize::from(u16_at(0x30)?);
        let mut sizes = Sizes::default();
        for index in 0..count {
            let header = table + index * entry;
            let kind = u32_at(header + 4)?;
            let flags = u32_at(header + 8)?;
            let size = u64::from(u32_at(header + 20)?);
            if flags & SHF_ALLOC == 0 {
                continue;
            }
            if flags & SHF_WRITE != 0 {
                if kind == SHT_NOBITS {
                    sizes.bss += size;
                } else {
                    sizes.data += size;
                }
            } else if flags & SHF_EXECINSTR != 0 {
                sizes.text += size;
            } else {
                sizes.rodata += size;
            }
        }
        Some(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 32-bit ELF with a null section, .text, .rodata, .data, .bss and a non-loaded
    /// .comment.
    fn elf(sections: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x34];
        bytes[..6].copy_from_slice(b"\x7fELF\x01\x01");
        bytes[0x20..0x24].copy_from_slice(&0x34u32.to_le_bytes());
        bytes[0x2e..0x30].copy_from_slice(&40u16.to_le_bytes());
        bytes[0x30..0x32].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        for &(kind, flags, size) in sections {
            let mut header = [0u8; 40];
            header[4..8].copy_from_slice(&kind.to_le_bytes());
            header[8..12].copy_from_slice(&flags.to_le_bytes());
            header[20..24].copy_from_slice(&size.to_le_bytes());
            bytes.extend_from_slice(&header);
        }
        bytes
    }

    #[test]
    fn adds_up_loaded_sections_by_kind() {
        let image = elf(&[
            (0, 0, 0),
            (1, SHF_ALLOC | SHF_EXECINSTR, 1000),
            (1, SHF_ALLOC, 200),
            (1, SHF_ALLOC | SHF_WRITE, 30),
            (SHT_NOBITS, SHF_ALLOC | SHF_WRITE, 4000),
            (1, 0, 77),
        ]);
        assert_eq!(
            Sizes::of(&image),
            Some(Sizes {
                text: 1000,
                rodata: 200,
                data: 30,
                bss: 4000
            })
        );
    }

    #[test]
    fn refuses_what_is_not_a_32_bit_little_endian_elf() {
        assert_eq!(Sizes::of(b"not an elf at all, not at all"), None);
        let mut image = elf(&[(0, 0, 0)]);
        image[4] = 2; // ELFCLASS64
        assert_eq!(Sizes::of(&image), None);
        let truncated = &elf(&[(0, 0, 0), (1, SHF_ALLOC, 5)])[..0x40];
        assert_eq!(Sizes::of(truncated), None);
    }
}
