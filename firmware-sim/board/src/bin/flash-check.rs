//! The board's semihosting NOR flash on its own, under QEMU: every promise of
//! [`flash`](../flash/index.html)'s documentation, checked against a real host file.
//!
//! Run in a directory without `flash-check.bin` (the `board` step of `cargo xtask test` uses a
//! temporary one). Prints `flash_check ok: <checks> checks` and exits 0, or
//! `flash_check FAILED: <check>` and exits 1.

#![no_std]
#![no_main]

// The footprint half of the shared runtime is not used by this image.
#[allow(dead_code)]
#[path = "../../../../core/cortex-m-test/src/runtime.rs"]
mod runtime;

#[path = "../flash.rs"]
mod flash;

use cortex_m_rt::entry;
use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use flash::{Flash, FlashError, SECTOR};
use runtime::{exit, print};

const IMAGE: &str = "flash_check";
const FILE: &str = "flash-check.bin\0";
/// Two regions of the file: sectors 0-1 and sectors 2-3.
const SECTORS: u32 = 2;

struct Checks(u32);

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        self.0 += 1;
        if !ok {
            print(format_args!("{IMAGE} FAILED: {what}\n"));
            exit(false)
        }
    }
}

fn read<const N: usize>(flash: &mut Flash, offset: u32) -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(error) = flash.read(offset, &mut bytes) {
        print(format_args!("{IMAGE} FAILED: read at {offset}: {error}\n"));
        exit(false)
    }
    bytes
}

fn kind<T>(result: Result<T, FlashError>) -> Option<NorFlashErrorKind> {
    result.err().map(|error| error.kind())
}

#[entry]
fn main() -> ! {
    let mut checks = Checks(0);
    let size = SECTORS * SECTOR as u32;
    let (Ok(mut low), Ok(mut high)) = (Flash::open(FILE, 0, size), Flash::open(FILE, size, size))
    else {
        print(format_args!("{IMAGE} FAILED: open {FILE}\n"));
        exit(false)
    };
    checks.check(
        low.capacity() == size as usize,
        "capacity is the region's size",
    );
    checks.check(
        Flash::WRITE_SIZE == 4 && Flash::ERASE_SIZE == SECTOR && Flash::READ_SIZE == 1,
        "granularity: write 4, erase 4096, read 1",
    );

    // A new file reads erased, in both regions.
    checks.check(
        read::<64>(&mut low, 0) == [0xFF; 64],
        "a new flash reads 0xFF",
    );
    checks.check(
        read::<64>(&mut high, size - 64) == [0xFF; 64],
        "the file was grown to the last region's end, erased",
    );

    // A write stores the bytes; writing again can only clear bits (the AND of both).
    checks.check(
        low.write(8, &[0xF0, 0x0F, 0xAA, 0x55]).is_ok(),
        "write a word",
    );
    checks.check(
        read::<4>(&mut low, 8) == [0xF0, 0x0F, 0xAA, 0x55],
        "read it back",
    );
    checks.check(
        low.write(8, &[0xFF, 0xFF, 0x0F, 0xFF]).is_ok(),
        "write it again",
    );
    checks.check(
        read::<4>(&mut low, 8) == [0xF0, 0x0F, 0x0A, 0x55],
        "a second write ANDs: no bit is set again",
    );
    checks.check(read::<4>(&mut low, 4) == [0xFF; 4], "neighbours untouched");
    checks.check(read::<4>(&mut low, 12) == [0xFF; 4], "neighbours untouched");

    // Regions are separate: writing one leaves the other erased.
    checks.check(
        read::<4>(&mut high, 8) == [0xFF; 4],
        "regions do not overlap",
    );

    // A write across sectors and longer than one host chunk.
    let pattern = [0x3C; 600];
    checks.check(
        low.write(SECTOR as u32 - 300, &pattern).is_ok(),
        "write across a sector boundary",
    );
    checks.check(
        read::<600>(&mut low, SECTOR as u32 - 300) == pattern,
        "read across a sector boundary",
    );

    // Misaligned and out-of-range calls fail and change nothing.
    checks.check(
        kind(low.write(9, &[0; 4])) == Some(NorFlashErrorKind::NotAligned),
        "an unaligned write offset is refused",
    );
    checks.check(
        kind(low.write(8, &[0; 3])) == Some(NorFlashErrorKind::NotAligned),
        "an unaligned write length is refused",
    );
    checks.check(
        kind(low.write(size - 4, &[0; 8])) == Some(NorFlashErrorKind::OutOfBounds),
        "a write past the region is refused",
    );
    checks.check(
        kind(low.erase(0, 100)) == Some(NorFlashErrorKind::NotAligned),
        "an unaligned erase is refused",
    );
    checks.check(
        kind(low.erase(0, size + SECTOR as u32)) == Some(NorFlashErrorKind::OutOfBounds),
        "an erase past the region is refused",
    );
    let mut past = [0u8; 1];
    checks.check(
        kind(low.read(size, &mut past)) == Some(NorFlashErrorKind::OutOfBounds),
        "a read past the region is refused",
    );
    checks.check(
        read::<4>(&mut low, 8) == [0xF0, 0x0F, 0x0A, 0x55],
        "refused calls changed nothing",
    );

    // Erase sets a whole sector back to 0xFF, and only that sector.
    checks.check(low.erase(0, SECTOR as u32).is_ok(), "erase sector 0");
    checks.check(read::<16>(&mut low, 0) == [0xFF; 16], "sector 0 erased");
    checks.check(
        read::<4>(&mut low, SECTOR as u32) == [0x3C; 4],
        "sector 1 untouched by erasing sector 0",
    );

    // What was written survives closing the file: a new handle reads it.
    checks.check(
        high.write(0, &[1, 2, 3, 4]).is_ok(),
        "write before reopening",
    );
    drop(high);
    let Ok(mut again) = Flash::open(FILE, size, size) else {
        print(format_args!("{IMAGE} FAILED: reopen {FILE}\n"));
        exit(false)
    };
    checks.check(
        read::<4>(&mut again, 0) == [1, 2, 3, 4],
        "data persists across opens",
    );

    print(format_args!("{IMAGE} ok: {} checks\n", checks.0));
    exit(true)
}
