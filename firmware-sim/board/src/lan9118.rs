//! A polled smoltcp [`phy::Device`] for the SMSC (Microchip) LAN9118 and LAN9220 Ethernet
//! controllers, written from the LAN9220 datasheet (register names and bits are the
//! datasheet's) and checked against QEMU's `lan9118` model on `mps2-an386`.
//!
//! # What it does
//!
//! - [`Lan9118::init`] waits for the chip (`PMT_CTRL.READY`), checks the bus (`BYTE_TEST`) and
//!   the chip (`ID_REV`), soft-resets it (`HW_CFG.SRST`), resets the PHY and starts
//!   auto-negotiation over MII, sets the MAC address (`ADDRH`/`ADDRL`), turns the MAC's
//!   receiver and transmitter on (`MAC_CR.RXEN`, `TXEN`: frames are dropped without `RXEN`),
//!   leaves promiscuous mode (set at reset) for exact address filtering plus broadcast (ARP),
//!   and turns the transmitter on (`TX_CFG.TX_ON`, with `TXSAO` so a full TX status FIFO never
//!   stalls it). Interrupts stay off (`INT_EN = 0`): the board polls.
//! - Receiving ([`phy::Device::receive`]): when `RX_FIFO_INF.RXSUSED` says a status is waiting,
//!   pop it from the RX status FIFO, read the frame's words from the RX data FIFO, and hand
//!   smoltcp the frame **without its 4-byte FCS**, which the status length includes. A frame
//!   with the error bit set, shorter than an Ethernet header or longer than the buffer is read
//!   out and dropped (counted in [`Stats::rx_dropped`]): the data FIFO must always be drained by
//!   exactly the status's length.
//! - Transmitting ([`phy::Device::transmit`]): a token is given only while
//!   `TX_FIFO_INF.TDFREE` has room for a maximal frame and its two command words, so a frame is
//!   never written into a full FIFO; smoltcp keeps it and tries again at the next poll. A frame
//!   is one buffer: TX command A (first and last segment, length), TX command B (tag, length),
//!   then the data words, little-endian. Finished frames' statuses are drained from the TX
//!   status FIFO and their errors counted.
//!
//! # Not done
//!
//! Interrupts (external interrupt 13 on mps2-an386; QEMU drives the line active-low after
//! reset), flow control (`AFC_CFG`), multicast hash filtering, the EEPROM, and following the
//! negotiated duplex into `MAC_CR.FDPX` (the MAC is set to full duplex, which is what QEMU and
//! any switch port negotiate; a half-duplex link partner would need `FDPX` cleared after reading
//! the PHY's special status register 31).

use smoltcp::phy::{self, DeviceCapabilities, Medium};

use crate::mmio::Block;

/// Where the controller is on QEMU's `mps2-an386` (and on the MPS2 FPGA boards it models).
pub const MPS2_BASE: usize = 0x4020_0000;

/// The register window: the FIFO ports and the system control and status registers.
pub const WINDOW: usize = 0x100;

// System registers (byte offsets; LAN9220 datasheet, section 5.3).
const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const TX_STATUS_FIFO: usize = 0x48;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const RX_CFG: usize = 0x6c;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const FREE_RUN: usize = 0x9c;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

/// `BYTE_TEST` reads this whatever the bus width and byte order, when they are right.
const BYTE_TEST_VALUE: u32 = 0x8765_4321;
const PMT_CTRL_READY: u32 = 1 << 0;
const HW_CFG_SRST: u32 = 1 << 0;
const TX_CFG_TX_ON: u32 = 1 << 1;
const TX_CFG_TXSAO: u32 = 1 << 2;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;

// MAC control and status registers, reached through MAC_CSR_CMD/MAC_CSR_DATA (section 5.4).
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MII_ACC: u32 = 6;
const MII_DATA: u32 = 7;

const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_BCAST_DISABLE: u32 = 1 << 11;
const MAC_CR_PRMS: u32 = 1 << 18;
const MAC_CR_FDPX: u32 = 1 << 20;

const MII_BUSY: u32 = 1 << 0;
const MII_WRITE: u32 = 1 << 1;
/// The internal PHY's MII address.
const PHY_ADDRESS: u32 = 1;
const PHY_BCR: u32 = 0;
const PHY_BSR: u32 = 1;
const PHY_BCR_RESET: u32 = 1 << 15;
const PHY_BCR_AUTONEG: u32 = 1 << 12;
const PHY_BCR_RESTART_AUTONEG: u32 = 1 << 9;
const PHY_BSR_LINK_UP: u32 = 1 << 2;

// RX status word (section 5.2.3).
const RX_STATUS_ERROR: u32 = 1 << 15;
// TX command words (section 5.2.5).
const TX_CMD_A_FIRST: u32 = 1 << 13;
const TX_CMD_A_LAST: u32 = 1 << 12;
// TX status word (section 5.2.6).
const TX_STATUS_ERROR: u32 = 1 << 15;

/// Chip ids (`ID_REV` bits 31:16) this driver accepts: the LAN9115 to LAN9118 and the LAN9220
/// share this register interface. QEMU's model reads 0x0118.
const CHIP_IDS: [u32; 5] = [0x0115, 0x0116, 0x0117, 0x0118, 0x9220];

/// Where a register is: among the memory-mapped system registers, or behind one of the two
/// indirect ports (section 5.4): the MAC's registers behind `MAC_CSR_CMD`/`MAC_CSR_DATA`
/// (system registers), the PHY's behind `MII_ACC`/`MII_DATA` (MAC registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    System,
    Mac,
    Phy,
}

/// An indirect port: a command register that starts an access to an inner register (with a
/// busy bit to wait on) and a data register that carries the value, in the `outer` space.
struct Port {
    outer: Space,
    command: u32,
    data: u32,
    busy: u32,
    /// The command word that reads (`write` false) or writes inner register `register`.
    command_word: fn(register: u32, write: bool) -> u32,
    /// The bits of the data register that hold a value.
    data_mask: u32,
    /// How often to poll the busy bit, and what a timeout names.
    spins: u32,
    busy_step: &'static str,
}

impl Space {
    /// The port in front of this space's registers; `None` for the system registers.
    fn port(self) -> Option<&'static Port> {
        match self {
            Space::System => None,
            Space::Mac => Some(&MAC_PORT),
            Space::Phy => Some(&PHY_PORT),
        }
    }
}

const MAC_PORT: Port = Port {
    outer: Space::System,
    command: MAC_CSR_CMD as u32,
    data: MAC_CSR_DATA as u32,
    busy: MAC_CSR_BUSY,
    command_word: |register, write| MAC_CSR_BUSY | if write { 0 } else { MAC_CSR_READ } | register,
    data_mask: u32::MAX,
    spins: SPINS,
    busy_step: "MAC_CSR_CMD.CSRBusy",
};

const PHY_PORT: Port = Port {
    outer: Space::Mac,
    command: MII_ACC,
    data: MII_DATA,
    busy: MII_BUSY,
    command_word: |register, write| {
        PHY_ADDRESS << 11 | register << 6 | if write { MII_WRITE } else { 0 } | MII_BUSY
    },
    data_mask: 0xffff,
    spins: SPINS / 100,
    busy_step: "MII_ACC.MIIBZY",
};

/// An Ethernet frame without its FCS, the most this driver sends or receives (no VLAN tag).
pub const FRAME: usize = 1514;
/// The receive buffer: a maximal frame and its FCS, rounded up to whole FIFO words.
const RX_BUFFER: usize = (FRAME + 4).div_ceil(4) * 4;
/// Bytes of the TX data FIFO a frame takes at most: its command words and its data words.
const TX_NEEDS: u32 = 8 + RX_BUFFER as u32;

/// Polls a register's bit this many times before giving up. Each poll is a bus read, so this
/// is generous: well over a second on a 25 MHz Cortex-M4, where the datasheet's waits are
/// microseconds (soft reset) to a few hundred microseconds (PHY reset).
const SPINS: u32 = 1_000_000;

/// Why [`Lan9118::init`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// `BYTE_TEST` did not read 0x87654321: the bus is wired or configured wrong (width, byte
    /// order), or there is no controller at this address.
    ByteTest(u32),
    /// `ID_REV` names a chip this driver does not know.
    UnknownChip(u32),
    /// A bit the datasheet says will change did not within [`SPINS`] polls: the named step.
    Timeout(&'static str),
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::ByteTest(value) => {
                write!(f, "BYTE_TEST read {value:#010x}, not 0x87654321")
            }
            InitError::UnknownChip(id) => write!(f, "unknown chip: ID_REV {id:#010x}"),
            InitError::Timeout(step) => write!(f, "timed out waiting for {step}"),
        }
    }
}

/// Frame counters since [`Lan9118::init`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to smoltcp.
    pub rx_frames: u32,
    /// Frames read out and dropped: error status, runt, or too long for the buffer.
    pub rx_dropped: u32,
    /// Frames written to the TX FIFO.
    pub tx_frames: u32,
    /// Frames whose TX status reported an error.
    pub tx_errors: u32,
}

/// The driver's frame buffers: a received frame and a frame being built. All zero, so a
/// `static` of it costs no flash.
pub struct Buffers {
    rx: [u8; RX_BUFFER],
    tx: [u8; FRAME],
}

impl Buffers {
    /// Zeroed buffers.
    pub const fn new() -> Buffers {
        Buffers {
            rx: [0; RX_BUFFER],
            tx: [0; FRAME],
        }
    }
}

/// A LAN9118/LAN9220 as a smoltcp [`phy::Device`]: see the [module documentation](self).
pub struct Lan9118<'a> {
    regs: Block,
    buffers: &'a mut Buffers,
    stats: Stats,
    /// Tag of the next frame's TX command B, to match statuses when debugging.
    tag: u16,
}

impl<'a> Lan9118<'a> {
    /// Brings the controller whose registers are `regs` up with the Ethernet address `mac`.
    pub fn init(regs: Block, buffers: &'a mut Buffers, mac: [u8; 6]) -> Result<Self, InitError> {
        let this = Lan9118 {
            regs,
            buffers,
            stats: Stats::default(),
            tag: 0,
        };
        // After power-up, no register but BYTE_TEST and PMT_CTRL may be touched before READY.
        let ready = (Space::System, PMT_CTRL as u32);
        this.wait(
            ready,
            PMT_CTRL_READY,
            PMT_CTRL_READY,
            SPINS,
            "PMT_CTRL.READY",
        )?;
        let byte_test = this.regs.read(BYTE_TEST);
        if byte_test != BYTE_TEST_VALUE {
            return Err(InitError::ByteTest(byte_test));
        }
        let id = this.regs.read(ID_REV);
        if !CHIP_IDS.contains(&(id >> 16)) {
            return Err(InitError::UnknownChip(id));
        }
        this.regs.write(HW_CFG, HW_CFG_SRST);
        let hw_cfg = (Space::System, HW_CFG as u32);
        this.wait(hw_cfg, HW_CFG_SRST, 0, SPINS, "HW_CFG.SRST to clear")?;
        this.wait(
            ready,
            PMT_CTRL_READY,
            PMT_CTRL_READY,
            SPINS,
            "READY after reset",
        )?;

        // Polled: no interrupt sources, the IRQ pin disabled, stale statuses cleared.
        this.regs.write(INT_EN, 0);
        this.regs.write(INT_STS, u32::MAX);
        this.regs.write(IRQ_CFG, 0);

        this.write(Space::Phy, PHY_BCR, PHY_BCR_RESET)?;
        let bcr = (Space::Phy, PHY_BCR);
        this.wait(bcr, PHY_BCR_RESET, 0, SPINS / 100, "the PHY reset")?;
        this.write(
            Space::Phy,
            PHY_BCR,
            PHY_BCR_AUTONEG | PHY_BCR_RESTART_AUTONEG,
        )?;

        let [a, b, c, d, e, f] = mac;
        this.write(Space::Mac, MAC_ADDRL, u32::from_le_bytes([a, b, c, d]))?;
        this.write(Space::Mac, MAC_ADDRH, u32::from_le_bytes([e, f, 0, 0]))?;
        let cr = this.read(Space::Mac, MAC_CR)?;
        let cr =
            (cr & !(MAC_CR_PRMS | MAC_CR_BCAST_DISABLE)) | MAC_CR_FDPX | MAC_CR_TXEN | MAC_CR_RXEN;
        this.write(Space::Mac, MAC_CR, cr)?;

        // Frames start at the first byte of the first RX word, and end on a word boundary.
        this.regs.write(RX_CFG, 0);
        this.regs.write(TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        Ok(this)
    }

    /// The Ethernet address the MAC filters on, read back from `ADDRH`/`ADDRL`.
    pub fn mac_address(&self) -> Result<[u8; 6], InitError> {
        let low = self.read(Space::Mac, MAC_ADDRL)?.to_le_bytes();
        let high = self.read(Space::Mac, MAC_ADDRH)?.to_le_bytes();
        Ok([low[0], low[1], low[2], low[3], high[0], high[1]])
    }

    /// `ID_REV`: chip id (bits 31:16) and revision.
    pub fn id_rev(&self) -> u32 {
        self.regs.read(ID_REV)
    }

    /// Whether the PHY reports a link (basic status register, link status).
    pub fn link_up(&self) -> bool {
        // The link bit latches low: read twice for the current state.
        let _ = self.read(Space::Phy, PHY_BSR);
        self.read(Space::Phy, PHY_BSR)
            .is_ok_and(|bsr| bsr & PHY_BSR_LINK_UP != 0)
    }

    /// `FREE_RUN`: a 32-bit counter at 25 MHz, free-running since the chip's reset.
    pub fn free_run(&self) -> u32 {
        self.regs.read(FREE_RUN)
    }

    /// Counters since [`init`](Self::init).
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether a received frame waits in the RX FIFO (`RX_FIFO_INF.RXSUSED`): the board does not
    /// sleep while one does.
    pub fn frame_waiting(&self) -> bool {
        (self.regs.read(RX_FIFO_INF) >> 16) & 0xff != 0
    }

    /// Reads register `register` of `space`: a system register directly, a MAC or PHY
    /// register through its indirect port (wait until the port is idle, start a read, wait for
    /// it, read the data register).
    fn read(&self, space: Space, register: u32) -> Result<u32, InitError> {
        let Some(port) = space.port() else {
            return Ok(self.regs.read(register as usize));
        };
        self.wait_idle(port)?;
        self.write(
            port.outer,
            port.command,
            (port.command_word)(register, false),
        )?;
        self.wait_idle(port)?;
        Ok(self.read(port.outer, port.data)? & port.data_mask)
    }

    /// Writes `value` to register `register` of `space`: through an indirect port, data first,
    /// then the command; wait until it is done.
    fn write(&self, space: Space, register: u32, value: u32) -> Result<(), InitError> {
        let Some(port) = space.port() else {
            self.regs.write(register as usize, value);
            return Ok(());
        };
        self.wait_idle(port)?;
        self.write(port.outer, port.data, value)?;
        self.write(
            port.outer,
            port.command,
            (port.command_word)(register, true),
        )?;
        self.wait_idle(port)
    }

    /// Polls register `register` of `space` at most `spins` times until `value & mask ==
    /// expected`; else times out naming `step`. Every wait of the driver is this one.
    fn wait(
        &self,
        (space, register): (Space, u32),
        mask: u32,
        expected: u32,
        spins: u32,
        step: &'static str,
    ) -> Result<(), InitError> {
        for _ in 0..spins {
            if self.read(space, register)? & mask == expected {
                return Ok(());
            }
        }
        Err(InitError::Timeout(step))
    }

    /// Waits until `port` is not busy.
    fn wait_idle(&self, port: &Port) -> Result<(), InitError> {
        self.wait(
            (port.outer, port.command),
            port.busy,
            0,
            port.spins,
            port.busy_step,
        )
    }

    /// Reads the TX status FIFO empty, counting frames that failed.
    fn drain_tx_status(regs: &Block, stats: &mut Stats) {
        let waiting = (regs.read(TX_FIFO_INF) >> 16) & 0xff;
        for _ in 0..waiting {
            if regs.read(TX_STATUS_FIFO) & TX_STATUS_ERROR != 0 {
                stats.tx_errors = stats.tx_errors.wrapping_add(1);
            }
        }
    }

    /// Whether the TX data FIFO has room for a maximal frame.
    fn tx_room(regs: &Block) -> bool {
        regs.read(TX_FIFO_INF) & 0xffff >= TX_NEEDS
    }
}

/// A received frame, FCS removed.
pub struct RxToken<'a>(&'a [u8]);

/// Room to build one frame, and the registers to send it through.
pub struct TxToken<'a> {
    regs: &'a Block,
    buffer: &'a mut [u8; FRAME],
    stats: &'a mut Stats,
    tag: &'a mut u16,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the capabilities' MTU (FRAME).
        let len = len.min(FRAME);
        let result = f(&mut self.buffer[..len]);
        // Room was checked when this token was given out, and only this driver writes the FIFO.
        let length = len as u32;
        *self.tag = self.tag.wrapping_add(1);
        self.regs
            .write(TX_DATA_FIFO, TX_CMD_A_FIRST | TX_CMD_A_LAST | length);
        self.regs
            .write(TX_DATA_FIFO, u32::from(*self.tag) << 16 | length);
        for chunk in self.buffer[..len].chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.regs.write(TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        self.stats.tx_frames = self.stats.tx_frames.wrapping_add(1);
        result
    }
}

impl phy::Device for Lan9118<'_> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _now: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let Lan9118 {
            regs,
            buffers,
            stats,
            tag,
        } = self;
        Self::drain_tx_status(regs, stats);
        // A frame can only be answered if it can be sent: leave it in the FIFO until then.
        if !Self::tx_room(regs) {
            return None;
        }
        let Buffers { rx, tx } = &mut **buffers;
        // Every status popped is a frame read out of the data FIFO, kept or dropped; bounded by
        // what was waiting when this call started.
        let waiting = (regs.read(RX_FIFO_INF) >> 16) & 0xff;
        for _ in 0..waiting {
            let status = regs.read(RX_STATUS_FIFO);
            let length = ((status >> 16) & 0x3fff) as usize;
            let words = length.div_ceil(4);
            if status & RX_STATUS_ERROR != 0 || length < 14 + 4 || length > rx.len() {
                for _ in 0..words {
                    let _ = regs.read(RX_DATA_FIFO);
                }
                stats.rx_dropped = stats.rx_dropped.wrapping_add(1);
                continue;
            }
            for word in rx[..words * 4].chunks_exact_mut(4) {
                word.copy_from_slice(&regs.read(RX_DATA_FIFO).to_le_bytes());
            }
            stats.rx_frames = stats.rx_frames.wrapping_add(1);
            let rx_token = RxToken(&rx[..length - 4]);
            let tx_token = TxToken {
                regs,
                buffer: tx,
                stats,
                tag,
            };
            return Some((rx_token, tx_token));
        }
        None
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let Lan9118 {
            regs,
            buffers,
            stats,
            tag,
        } = self;
        Self::drain_tx_status(regs, stats);
        if !Self::tx_room(regs) {
            return None;
        }
        Some(TxToken {
            regs,
            buffer: &mut buffers.tx,
            stats,
            tag,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME;
        caps.max_burst_size = Some(1);
        caps
    }
}
