//! The one place where the board touches memory-mapped registers.
//!
//! # The `unsafe` boundary
//!
//! [`Block`] is a block of 32-bit registers at a fixed physical address. Creating one is
//! `unsafe` ([`Block::new`]): the caller promises that the address range is a peripheral's
//! registers on this board, that the block is the only driver of that peripheral, and that
//! 32-bit accesses are allowed there. After that, [`Block::read`] and [`Block::write`] are safe:
//! the offset is checked against the block's size (an offset outside it panics: a driver bug,
//! never input-dependent), and every access is a single volatile 32-bit load or store, which is
//! what the peripherals on this board require. Nothing else in the board crate dereferences a
//! raw pointer to a peripheral.

use core::ptr::{read_volatile, write_volatile};

/// A block of 32-bit memory-mapped registers: see the [module documentation](self).
#[derive(Debug)]
pub struct Block {
    base: usize,
    size: usize,
}

impl Block {
    /// The registers at `base`, `size` bytes of them.
    ///
    /// # Safety
    ///
    /// `[base, base + size)` must be the registers of one peripheral, word-aligned, that accept
    /// 32-bit volatile loads and stores, and no other code may access them while the returned
    /// block exists (a second `Block` over the same range would let two drivers interleave
    /// their register sequences).
    pub const unsafe fn new(base: usize, size: usize) -> Block {
        Block { base, size }
    }

    /// The 32-bit register at byte `offset`.
    #[inline(always)]
    pub fn read(&self, offset: usize) -> u32 {
        let address = self.address(offset);
        // SAFETY: `address` lies inside the block (checked above), which `new`'s caller
        // promised is word-aligned peripheral registers owned by this block.
        unsafe { read_volatile(address as *const u32) }
    }

    /// Writes the 32-bit register at byte `offset`.
    #[inline(always)]
    pub fn write(&self, offset: usize, value: u32) {
        let address = self.address(offset);
        // SAFETY: as in `read`.
        unsafe { write_volatile(address as *mut u32, value) }
    }

    fn address(&self, offset: usize) -> usize {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.size,
            "register offset outside the block"
        );
        self.base + offset
    }
}
