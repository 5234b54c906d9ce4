//! NOR flash in RAM: the [`NorFlash`] a test, the simulator or a footprint image uses in place
//! of a chip.
//!
//! [`RamFlash`] behaves as NOR flash does: an erase sets every byte of whole sectors to `0xFF`,
//! a write can only clear bits (the new byte is `old & new`), and both need aligned offsets
//! and lengths ([`RamFlash::WRITE_SIZE`], [`RamFlash::ERASE_SIZE`]). It counts the writes and
//! erases it has done ([`RamFlash::steps`]), which is what the power-cut tests (`power_cut`, with
//! `std`) number their cut points by.
//!
//! The storage is anything that derefs to a byte slice: a `Vec<u8>` on a desktop, a
//! `&'static mut [u8]` (a zeroed static) on a microcontroller. Its length must be a multiple
//! of [`ERASE_SIZE`].

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind,
    ReadNorFlash,
};

/// Sector size of a [`RamFlash`]: the ledger's page size ([`ekv::config::PAGE_SIZE`]).
pub const ERASE_SIZE: usize = 4096;

/// Write granularity of a [`RamFlash`], in bytes (a 32-bit word, as most MCU flash has).
pub const WRITE_SIZE: usize = 4;

/// Error of a [`RamFlash`] operation: a misaligned or out-of-range request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamFlashError(pub NorFlashErrorKind);

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl core::fmt::Display for RamFlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "flash request refused: {:?}", self.0)
    }
}

impl core::error::Error for RamFlashError {}

/// NOR flash simulated in the bytes of `B`: see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct RamFlash<B> {
    bytes: B,
    steps: u64,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> RamFlash<B> {
    /// Flash over `bytes` as they are (pass erased bytes, all `0xFF`, for a blank chip, or an
    /// image saved from an earlier run to boot it again). Panics if the length is not a
    /// multiple of [`ERASE_SIZE`].
    pub fn new(bytes: B) -> Self {
        assert!(
            bytes.as_ref().len() % ERASE_SIZE == 0,
            "RamFlash size must be a multiple of {ERASE_SIZE}"
        );
        RamFlash { bytes, steps: 0 }
    }

    /// The flash image.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// The flash image, to damage it on purpose.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.bytes.as_mut()
    }

    /// Gives the storage back.
    pub fn into_inner(self) -> B {
        self.bytes
    }

    /// Writes and erases done since [`new`](Self::new): the numbering of power-cut points.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

impl<B> ErrorType for RamFlash<B> {
    type Error = RamFlashError;
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> ReadNorFlash for RamFlash<B> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len()).map_err(RamFlashError)?;
        let at = offset as usize;
        bytes.copy_from_slice(&self.bytes.as_ref()[at..at + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.as_ref().len()
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> NorFlash for RamFlash<B> {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to).map_err(RamFlashError)?;
        self.steps += 1;
        self.bytes.as_mut()[from as usize..to as usize].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len()).map_err(RamFlashError)?;
        self.steps += 1;
        let at = offset as usize;
        for (cell, byte) in self.bytes.as_mut()[at..at + bytes.len()]
            .iter_mut()
            .zip(bytes)
        {
            // NOR programming only clears bits.
            *cell &= *byte;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_nor_flash() {
        let mut flash = RamFlash::new(vec![0xFF; 2 * ERASE_SIZE]);
        flash.write(4, &[0x0F, 0xF0, 0xFF, 0x00]).unwrap();
        // A second write over the same bytes can only clear more bits.
        flash.write(4, &[0xFE, 0xFF, 0x0F, 0xFF]).unwrap();
        let mut out = [0; 4];
        flash.read(4, &mut out).unwrap();
        assert_eq!(out, [0x0E, 0xF0, 0x0F, 0x00]);
        assert!(flash.write(2, &[0; 4]).is_err(), "misaligned");
        assert!(flash.erase(0, 100).is_err(), "not a whole sector");
        flash.erase(0, ERASE_SIZE as u32).unwrap();
        flash.read(4, &mut out).unwrap();
        assert_eq!(out, [0xFF; 4]);
        assert_eq!(flash.steps(), 3);
    }
}
