//! The board's flash: a file on the host, reached through Arm semihosting, with NOR flash
//! semantics, as an `embedded_storage::nor_flash::NorFlash`.
//!
//! mps2-an386 has no flash that persists (QEMU loads the image into RAM-backed memory at every
//! boot), so the board's non-volatile memory is a host file that QEMU reads and writes for the
//! image with semihosting calls (`SYS_OPEN`, `SYS_FLEN`, `SYS_SEEK`, `SYS_READ`, `SYS_WRITE`;
//! QEMU must run with `-semihosting-config enable=on,target=native`). A semihosting write is a
//! host `write(2)` that has returned when the call returns, so it survives QEMU being killed
//! (SIGKILL) at any moment after: what a power cut after the write would keep. (It does not
//! survive the host losing power; the host's page cache is not synced. That is beyond what an
//! emulated board promises.)
//!
//! # NOR semantics, and granularity
//!
//! - Erased bytes read `0xFF`; [`erase`](NorFlash::erase) works on whole sectors of
//!   [`SECTOR`] (4 KiB, a common NOR sector), aligned.
//! - A [`write`](NorFlash::write) can only clear bits: the new contents are the old AND the
//!   written bytes (the file is read, ANDed and written back), so writing a byte twice is
//!   allowed ([`MultiwriteNorFlash`]) and never sets a bit. Writes are in whole words of
//!   [`WORD`] (4) bytes, aligned: offset and length must be multiples of 4.
//! - Reads have no alignment ([`READ_SIZE`](ReadNorFlash::READ_SIZE) 1).
//! - Misaligned or out-of-range calls fail with `NotAligned` or `OutOfBounds` and change
//!   nothing; a failing host call fails with `Other`.
//!
//! A [`Flash`] is one region of the file (`[base, base + capacity)`), with its own host handle,
//! so the board can give the provisioning record, the boot counter and the ledger each their
//! own region, addressed from 0, and none can reach into another's.
//!
//! # The `unsafe` boundary
//!
//! Semihosting calls are `unsafe` (a `bkpt 0xab` with a pointer to an argument block). They
//! are made only in [`host`], each with a block of plain integers and pointers into live
//! buffers whose lengths are passed beside them; QEMU reads or writes exactly those bytes.

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError,
    NorFlashErrorKind, ReadNorFlash,
};

/// Erase granularity: one sector.
pub const SECTOR: usize = 4096;
/// Write granularity: one word.
pub const WORD: usize = 4;
/// Bytes moved per host call when erasing or read-modify-writing.
const CHUNK: usize = 256;

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// Offset or length not a multiple of the operation's granularity.
    NotAligned,
    /// Outside the region.
    OutOfBounds,
    /// A semihosting call failed (the named one): the host file is gone, unwritable or short.
    Host(&'static str),
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::Host(_) => NorFlashErrorKind::Other,
        }
    }
}

impl From<NorFlashErrorKind> for FlashError {
    fn from(kind: NorFlashErrorKind) -> Self {
        match kind {
            NorFlashErrorKind::NotAligned => FlashError::NotAligned,
            NorFlashErrorKind::OutOfBounds => FlashError::OutOfBounds,
            _ => FlashError::Host("check"),
        }
    }
}

impl core::fmt::Display for FlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FlashError::NotAligned => f.write_str("not aligned to the flash's granularity"),
            FlashError::OutOfBounds => f.write_str("outside the flash region"),
            FlashError::Host(call) => write!(f, "semihosting {call} failed"),
        }
    }
}

/// One region of the flash file: see the [module documentation](self).
#[derive(Debug)]
pub struct Flash {
    handle: usize,
    base: u32,
    capacity: u32,
}

impl Flash {
    /// Opens `[base, base + capacity)` of the host file `path` (NUL-terminated, relative to
    /// QEMU's working directory). A file shorter than the region's end is extended with erased
    /// bytes; a missing file is created (erased). `base` and `capacity` must be whole sectors.
    pub fn open(path: &str, base: u32, capacity: u32) -> Result<Flash, FlashError> {
        if !(base as usize).is_multiple_of(SECTOR) || !(capacity as usize).is_multiple_of(SECTOR) {
            return Err(FlashError::NotAligned);
        }
        let end = base.checked_add(capacity).ok_or(FlashError::OutOfBounds)?;
        let handle = match host::open(path, host::READ_WRITE) {
            Some(handle) => handle,
            None => host::open(path, host::CREATE).ok_or(FlashError::Host("SYS_OPEN"))?,
        };
        let flash = Flash {
            handle,
            base,
            capacity,
        };
        let length = host::length(handle).ok_or(FlashError::Host("SYS_FLEN"))?;
        if length < end {
            // Grow by whole erased chunks from the current end; a boot cut short here just
            // grows it again next time.
            let erased = [0xFF; CHUNK];
            let mut at = length;
            while at < end {
                let n = (end - at).min(CHUNK as u32) as usize;
                host::write_at(handle, at, &erased[..n]).ok_or(FlashError::Host("SYS_WRITE"))?;
                at += n as u32;
            }
        }
        Ok(flash)
    }
}

/// Closes the host handle (`SYS_CLOSE`); what was written stays in the file.
impl Drop for Flash {
    fn drop(&mut self) {
        host::close(self.handle);
    }
}

impl ErrorType for Flash {
    type Error = FlashError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len())?;
        host::read_at(self.handle, self.base + offset, bytes).ok_or(FlashError::Host("SYS_READ"))
    }

    fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to)?;
        let erased = [0xFF; CHUNK];
        let mut at = from;
        while at < to {
            host::write_at(self.handle, self.base + at, &erased)
                .ok_or(FlashError::Host("SYS_WRITE"))?;
            at += CHUNK as u32;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len())?;
        let mut old = [0u8; CHUNK];
        let mut at = offset;
        for new in bytes.chunks(CHUNK) {
            let old = &mut old[..new.len()];
            let address = self.base + at;
            host::read_at(self.handle, address, old).ok_or(FlashError::Host("SYS_READ"))?;
            for (old, new) in old.iter_mut().zip(new) {
                *old &= new;
            }
            host::write_at(self.handle, address, old).ok_or(FlashError::Host("SYS_WRITE"))?;
            at += new.len() as u32;
        }
        Ok(())
    }
}

/// Writing a word again ANDs it with what is there, as NOR flash does.
impl MultiwriteNorFlash for Flash {}

/// The semihosting calls: the crate's only use of them besides output and exit.
mod host {
    use cortex_m_semihosting::{nr, syscall};

    /// `fopen` mode "r+b": an existing file, read and write.
    pub const READ_WRITE: usize = nr::open::RW_BINARY;
    /// `fopen` mode "w+b": create (or truncate) and read and write.
    pub const CREATE: usize = nr::open::RW_TRUNC_BINARY;

    /// `SYS_OPEN`: a handle, or `None`. `path` must end with a NUL byte.
    pub fn open(path: &str, mode: usize) -> Option<usize> {
        if !path.ends_with('\0') {
            return None;
        }
        let block = [path.as_ptr() as usize, mode, path.len() - 1];
        // SAFETY: the block holds a pointer to `path`'s bytes (alive for the call, NUL at
        // `len - 1`, which is the length passed), the mode and the length. QEMU only reads them.
        let handle = unsafe { syscall(nr::OPEN, &block) };
        (handle as isize != -1).then_some(handle)
    }

    /// `SYS_CLOSE`: best effort (a handle the host no longer has is closed already).
    pub fn close(handle: usize) {
        let block = [handle];
        // SAFETY: a block of one integer; QEMU reads it.
        let _ = unsafe { syscall(nr::CLOSE, &block) };
    }

    /// `SYS_FLEN`: the file's length.
    pub fn length(handle: usize) -> Option<u32> {
        let block = [handle];
        // SAFETY: a block of one integer; QEMU reads it.
        let length = unsafe { syscall(nr::FLEN, &block) } as isize;
        u32::try_from(length).ok()
    }

    fn seek(handle: usize, position: u32) -> Option<()> {
        let block = [handle, position as usize];
        // SAFETY: a block of two integers; QEMU reads them.
        (unsafe { syscall(nr::SEEK, &block) } == 0).then_some(())
    }

    /// `SYS_SEEK` then `SYS_READ` of all of `bytes`.
    pub fn read_at(handle: usize, position: u32, bytes: &mut [u8]) -> Option<()> {
        seek(handle, position)?;
        let block = [handle, bytes.as_mut_ptr() as usize, bytes.len()];
        // SAFETY: the block points at `bytes`, writable and alive for the call, with its
        // length; QEMU writes at most that many bytes there. It returns the bytes NOT read.
        (unsafe { syscall(nr::READ, &block) } == 0).then_some(())
    }

    /// `SYS_SEEK` then `SYS_WRITE` of all of `bytes`.
    pub fn write_at(handle: usize, position: u32, bytes: &[u8]) -> Option<()> {
        seek(handle, position)?;
        let block = [handle, bytes.as_ptr() as usize, bytes.len()];
        // SAFETY: the block points at `bytes`, alive for the call, with its length; QEMU only
        // reads them. It returns the bytes NOT written.
        (unsafe { syscall(nr::WRITE, &block) } == 0).then_some(())
    }
}
