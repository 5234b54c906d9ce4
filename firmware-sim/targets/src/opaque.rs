//! Stand-ins whose contents the optimiser cannot see (everything goes through
//! [`core::hint::black_box`]), so that everything a real driver would reach stays linked: a
//! network device and, for the flash ledger's image, a NOR flash. Shared by both images.

use core::hint::black_box;

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use txsock_firmware_sim::scenario::board::MTU;

/// A network device whose received frames the optimiser cannot predict.
pub struct Opaque {
    /// The frame buffer both directions use.
    pub frame: &'static mut [u8; MTU + 14],
}

/// A received frame.
pub struct Rx<'a>(&'a [u8]);
/// Room for a frame to send.
pub struct Tx<'a>(&'a mut [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.0.len());
        let result = f(&mut self.0[..len]);
        black_box(&mut self.0[..len]);
        result
    }
}

impl phy::Device for Opaque {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(
        &mut self,
        _now: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let len = black_box(0usize).min(self.frame.len());
        if len == 0 {
            return None;
        }
        let (rx, tx) = self.frame.split_at_mut(len);
        Some((Rx(rx), Tx(tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(&mut self.frame[..]))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU + 14;
        caps
    }
}

/// A NOR flash (4 KiB sectors, 4-byte words, 1 MiB) whose contents the optimiser cannot see.
pub struct OpaqueFlash;

impl ErrorType for OpaqueFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for OpaqueFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        for byte in bytes.iter_mut() {
            *byte = black_box(offset as u8);
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        black_box(1 << 20)
    }
}

impl NorFlash for OpaqueFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        black_box((from, to));
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        black_box((offset, bytes));
        Ok(())
    }
}
