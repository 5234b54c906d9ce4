//! What makes one board this board: the provisioning record (its RNG seed), the boot counter,
//! and the boot's RNG seed derived from them. (The device secret is the flash ledger's, drawn
//! from this RNG at the ledger's first boot and kept with the accounts.)
//!
//! # Flash layout
//!
//! | region | sectors | what |
//! | --- | --- | --- |
//! | provisioning | 0 | [`Record`]: [`MAGIC`], the RNG seed, 32 reserved bytes. Written once, at provisioning (`cargo xtask board` writes it into a new flash file from the host's `/dev/urandom`, as a factory would over the debug port); read-only for the board. |
//! | boot counter | 1 | one bit cleared per boot ([`next_boot`]) |
//! | ledger | 2.. | the flash ledger's ([`LEDGER_BASE`], [`LEDGER_SECTORS`]) |
//!
//! # The RNG seed
//!
//! mps2-an386 has **no TRNG**, and QEMU offers none to the guest. So the nonce RNG is seeded at
//! every boot from SHA-256 over the provisioned seed (secret, per board, not in the binary),
//! the boot count (different at every boot, written to flash before the seed is used), and two
//! free-running counters read after the host file I/O of the boot (SysTick and the LAN9118's
//! `FREE_RUN`, both at 25 MHz, whose low bits vary with the host's timing). The provisioned
//! seed makes the stream unpredictable to anyone without the flash file; the boot count makes
//! it differ from every earlier boot's even when the counters happen to match. A board with a
//! TRNG seeds from it instead and keeps nothing of this but the secret.

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use sha2::{Digest, Sha256};

use crate::flash::{Flash, FlashError, SECTOR};

/// The flash file, relative to QEMU's working directory (`cargo xtask board` runs QEMU in the
/// board's state directory).
pub const FLASH_FILE: &str = "flash.bin\0";

/// Start of the provisioning record.
pub const PROVISIONING_BASE: u32 = 0;
/// Start of the boot counter's sector.
pub const BOOT_COUNTER_BASE: u32 = SECTOR as u32;
/// Start of the ledger's region.
pub const LEDGER_BASE: u32 = 2 * SECTOR as u32;
/// Sectors of the ledger's region: the rest of a 1 MiB flash (1,016 KiB), within the flash
/// ledger's limit of 256 pages. Every committed transfer stays on flash (its outcome answers a
/// retried id), so this bounds the transfers a board can make, a few thousand.
pub const LEDGER_SECTORS: u32 = 254;

/// The first bytes of a provisioning record; `cargo xtask board` writes the same.
pub const MAGIC: [u8; 16] = *b"TXSOCK-BOARD-V1\0";

/// The provisioning record: [`MAGIC`], then the seed, then 32 reserved bytes (80 bytes).
pub struct Record {
    /// The RNG seed, mixed into every boot's seed.
    pub seed: [u8; 32],
}

/// Why the board cannot start from its flash.
#[derive(Debug, Clone, Copy)]
pub enum ProvisionError {
    /// The flash could not be read or written.
    Flash(FlashError),
    /// Sector 0 holds no provisioning record.
    NotProvisioned,
}

impl From<FlashError> for ProvisionError {
    fn from(error: FlashError) -> Self {
        ProvisionError::Flash(error)
    }
}

impl core::fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProvisionError::Flash(error) => write!(f, "flash: {error}"),
            ProvisionError::NotProvisioned => f.write_str(
                "the flash holds no provisioning record (RNG seed): run `cargo xtask board \
                 --fresh` to provision a new board",
            ),
        }
    }
}

/// Reads the provisioning record from its region.
pub fn read_record(flash: &mut Flash) -> Result<Record, ProvisionError> {
    let mut bytes = [0u8; 48];
    flash.read(0, &mut bytes)?;
    if bytes[..16] != MAGIC {
        return Err(ProvisionError::NotProvisioned);
    }
    let mut record = Record { seed: [0; 32] };
    record.seed.copy_from_slice(&bytes[16..48]);
    Ok(record)
}

/// Counts this boot in the boot counter's sector and returns the count (0 for the first boot
/// after the sector was erased).
///
/// The count is the number of cleared bits, cleared in order from the first word's lowest bit:
/// a boot clears one more bit, a write that only clears bits, as NOR flash allows without an
/// erase. After 32,768 boots the sector is full; it is erased and the count starts again (the
/// counters mixed into the seed still differ).
pub fn next_boot(flash: &mut Flash) -> Result<u32, FlashError> {
    let mut chunk = [0u8; 256];
    let mut base = 0u32;
    while (base as usize) < SECTOR {
        flash.read(base, &mut chunk)?;
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            if word != 0 {
                let offset = base + 4 * i as u32;
                let count = offset * 8 + word.trailing_zeros();
                flash.write(offset, &(word << 1).to_le_bytes())?;
                return Ok(count);
            }
        }
        base += chunk.len() as u32;
    }
    flash.erase(0, SECTOR as u32)?;
    flash.write(0, &(u32::MAX << 1).to_le_bytes())?;
    Ok(0)
}

/// This boot's RNG seed: see the [module documentation](self).
pub fn boot_seed(record: &Record, boot: u32, counters: [u32; 2]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"txsock-board rng seed v1");
    hash.update(record.seed);
    hash.update(boot.to_le_bytes());
    for counter in counters {
        hash.update(counter.to_le_bytes());
    }
    hash.finalize().into()
}
