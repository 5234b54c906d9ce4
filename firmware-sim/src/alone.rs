//! The device alone, as the footprint images link it (firmware-sim/cortex-m's `device-alone`
//! and `device-flash`, firmware-sim/targets' images): the device with the sizes of
//! [`board`](crate::scenario::board), its memory for `static`s, and stand-ins for a board's
//! hardware whose contents the optimiser cannot see (everything goes through
//! [`core::hint::black_box`]), so that everything a real driver would reach stays linked:
//! a network device ([`Opaque`]) and a NOR flash ([`OpaqueFlash`]).
//!
//! One place for what every such image does, so that their figures differ only by what they
//! are meant to measure (the ledger, the architecture).

use core::hint::black_box;
use core::mem::MaybeUninit;

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use rand_chacha::ChaCha20Rng;
use smoltcp::iface::SocketStorage;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use txsock_core::ledger::Ledger;
use txsock_core::{Duration, Instant};

use crate::device::{Device, DeviceConfig, DeviceParts};
use crate::scenario::board::{BoardBuffers, MTU, SESSIONS, SOCKETS};

/// An Ethernet frame of the board's link: [`MTU`] and the Ethernet header.
pub const FRAME: usize = MTU + 14;

/// The device with the board's sizes over the ledger `L`.
pub type AloneDevice<L> = Device<'static, L, ChaCha20Rng, SESSIONS, SOCKETS>;

/// Everything the device alone needs besides its ledger, to be put in a `static`: all zero
/// or uninitialised, so it costs no flash (`.bss`), and written in place by
/// [`start`](Self::start).
pub struct AloneMemory<L: Ledger + 'static> {
    buffers: BoardBuffers,
    sockets: MaybeUninit<[SocketStorage<'static>; SOCKETS]>,
    device: MaybeUninit<AloneDevice<L>>,
    frame: [u8; FRAME],
}

impl<L: Ledger + 'static> Default for AloneMemory<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L: Ledger + 'static> AloneMemory<L> {
    /// Empty memory, for a `static` initialiser.
    pub const fn new() -> Self {
        AloneMemory {
            buffers: BoardBuffers::new(),
            sockets: MaybeUninit::uninit(),
            device: MaybeUninit::uninit(),
            frame: [0; FRAME],
        }
    }

    /// Starts the device on `ledger` at time zero, with `rng` for its nonces and `config`
    /// (the board's, [`device_config`](crate::scenario::board::device_config), and the
    /// ledger's secret), over an [`Opaque`] network device, which it returns with the device.
    /// Call it once per memory.
    pub fn start(
        &'static mut self,
        ledger: &'static mut L,
        rng: ChaCha20Rng,
        config: &DeviceConfig,
    ) -> (&'static mut AloneDevice<L>, Opaque) {
        let AloneMemory {
            buffers,
            sockets,
            device,
            frame,
        } = self;
        let mut phy = Opaque { frame };
        let sockets = sockets.write([SocketStorage::EMPTY; SOCKETS]);
        let device = AloneDevice::init(
            device,
            DeviceParts {
                sockets,
                buffers,
                ledger,
            },
            rng,
            config,
            &mut phy,
            Instant::ZERO,
        );
        (device, phy)
    }
}

/// Polls `device` `polls` times, 100 ms apart, from time zero; whether it stayed idle (no
/// session, no connection accepted), as it must with an [`Opaque`] network that receives
/// nothing.
pub fn poll_idle<L: Ledger>(device: &mut AloneDevice<L>, phy: &mut Opaque, polls: u32) -> bool {
    let mut now = Instant::ZERO;
    for _ in 0..polls {
        device.poll(now, phy);
        now = now + Duration::from_millis(100);
    }
    device.open_sessions() == 0 && device.stats().accepted == 0
}

/// A network device whose received frames the optimiser cannot predict. It receives nothing at
/// run time (the length is always 0), like an Ethernet MAC on an unplugged cable.
pub struct Opaque {
    /// The frame buffer both directions use.
    frame: &'static mut [u8; FRAME],
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
        caps.max_transmission_unit = FRAME;
        caps
    }
}

/// A NOR flash (4 KiB sectors, 4-byte words, 1 MiB) whose contents the optimiser cannot see:
/// for images that are linked, never run.
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
