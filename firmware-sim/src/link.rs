//! A simulated Ethernet link between two smoltcp interfaces, with seeded faults.
//!
//! Modelled on smoltcp's `phy::FaultInjector` (seeded loss, corruption and a size cap), plus
//! what a constrained radio or serial link adds: a propagation delay, reordering, and a
//! fixed number of frames in flight (a full link drops the frame, as a full transmit ring
//! would; two sides blocking on each other instead could deadlock).
//!
//! A [`Link`] holds the frames in flight in both directions; [`Link::end`] lends one side of
//! it as a smoltcp [`phy::Device`]. Frames are delivered in order of their delivery time,
//! which a driver reads with [`Link::next_delivery`] to jump a simulated clock.
//!
//! Every frame handed to the link, with its time, direction and fate, goes into a SHA-256
//! transcript ([`Link::transcript`]): the same seed and configuration give the same
//! transcript, byte for byte. The link also counts TCP retransmissions, by remembering the
//! highest sequence number each flow has sent.
//!
//! No allocation: `SLOTS` frames of up to `FRAME` bytes per direction.

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use sha2::{Digest, Sha256};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

/// Ethernet header length: the link's MTU is the IP MTU plus this.
pub const ETHERNET_HEADER: usize = 14;

/// The smallest IP MTU a link accepts (IPv4's minimum, RFC 791).
pub const MIN_MTU: usize = 68;

/// A probability, in units of 2^-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probability(u32);

impl Probability {
    /// Never.
    pub const NEVER: Probability = Probability(0);

    /// `p`, clamped to `[0, 1)`.
    pub fn new(p: f64) -> Probability {
        let scaled = p.clamp(0.0, 1.0) * 4_294_967_296.0;
        // The cast saturates at u32::MAX for p = 1.
        Probability(scaled as u32)
    }

    /// `ppm` parts per million.
    pub const fn per_million(ppm: u32) -> Probability {
        let scaled = (ppm as u64 * 4_294_967_296) / 1_000_000;
        Probability(if scaled > u32::MAX as u64 {
            u32::MAX
        } else {
            scaled as u32
        })
    }

    /// As a fraction.
    pub fn get(self) -> f64 {
        f64::from(self.0) / 4_294_967_296.0
    }
}

/// How a [`Link`] mistreats frames. Both directions get the same treatment (with
/// independent random draws).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Chance a frame is lost.
    pub loss: Probability,
    /// Chance a delivered frame has one bit flipped (TCP and IP checksums catch it).
    pub corrupt: Probability,
    /// Chance a frame is held back by an extra delay, so that later frames overtake it.
    pub reorder: Probability,
    /// One-way delay, in milliseconds.
    pub delay_ms: u32,
    /// IP MTU in bytes; frames are at most this plus [`ETHERNET_HEADER`].
    pub mtu: usize,
    /// Seed of the fault decisions.
    pub seed: u64,
    /// An outage: every frame sent from `.0` for `.1` milliseconds is lost (`.1 == 0`: none).
    pub outage_ms: (u64, u64),
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            loss: Probability::NEVER,
            corrupt: Probability::NEVER,
            reorder: Probability::NEVER,
            delay_ms: 10,
            mtu: 576,
            seed: 1,
            outage_ms: (0, 0),
        }
    }
}

/// What happened on a link, both directions together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames handed to the link.
    pub sent: u64,
    /// Frames delivered.
    pub delivered: u64,
    /// Frames lost on purpose.
    pub lost: u64,
    /// Frames dropped because `SLOTS` frames were already in flight.
    pub overflowed: u64,
    /// Frames with a bit flipped.
    pub corrupted: u64,
    /// Frames held back for reordering.
    pub reordered: u64,
    /// TCP segments that carried sequence space already sent (retransmissions).
    pub retransmissions: u64,
    /// Bytes handed to the link.
    pub bytes: u64,
}

/// One side of a [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Conventionally the device.
    A,
    /// Conventionally the client.
    B,
}

/// A frame in flight; all-zero bytes are a free slot.
#[derive(Clone, Copy)]
struct Frame<const FRAME: usize> {
    data: [u8; FRAME],
    len: usize,
    /// Delivery time, milliseconds.
    at: i64,
    /// Order of transmission, to break ties in delivery time.
    order: u64,
    used: bool,
}

/// TCP flows whose highest sent sequence number a direction remembers.
const FLOWS: usize = 16;

#[derive(Clone, Copy, Default)]
struct Flow {
    /// (source port, destination port); (0, 0) is a free entry.
    ports: (u16, u16),
    /// One past the highest sequence number sent.
    high: u32,
    /// Last use, for eviction.
    used: u64,
}

/// Frames in flight in one direction, and that direction's random state.
struct Queue<const SLOTS: usize, const FRAME: usize> {
    frames: [Frame<FRAME>; SLOTS],
    rng: u64,
    flows: [Flow; FLOWS],
}

impl<const SLOTS: usize, const FRAME: usize> Queue<SLOTS, FRAME> {
    /// xorshift64*: fault decisions need to be reproducible, not unpredictable.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, p: Probability) -> bool {
        ((self.next() >> 32) as u32) < p.0
    }

    /// The deliverable frame with the earliest delivery time.
    fn ready(&self, now: i64) -> Option<usize> {
        self.frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.used && f.at <= now)
            .min_by_key(|(_, f)| (f.at, f.order))
            .map(|(i, _)| i)
    }

    fn next_delivery(&self) -> Option<i64> {
        self.frames.iter().filter(|f| f.used).map(|f| f.at).min()
    }
}

/// Whether `frame` is a TCP segment carrying sequence space its flow already sent.
fn is_retransmission(flows: &mut [Flow; FLOWS], frame: &[u8], order: u64) -> bool {
    let Some((ports, seq, len)) = tcp_segment(frame) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    let end = seq.wrapping_add(len);
    let slot = match flows.iter().position(|f| f.ports == ports) {
        Some(i) => i,
        None => {
            // A new flow takes a free entry or the least recently used one.
            let i = flows
                .iter()
                .enumerate()
                .min_by_key(|(_, f)| if f.ports == (0, 0) { 0 } else { f.used + 1 })
                .map_or(0, |(i, _)| i);
            flows[i] = Flow {
                ports,
                high: end,
                used: order,
            };
            return false;
        }
    };
    let flow = &mut flows[slot];
    flow.used = order;
    // Serial number arithmetic (RFC 1982): `end` at or before `high` is old data.
    let old = (end.wrapping_sub(flow.high) as i32) <= 0;
    if !old {
        flow.high = end;
    }
    old
}

/// `((source port, destination port), sequence number, segment length)` of a TCP/IPv4 frame,
/// SYN and FIN counted in the length.
fn tcp_segment(frame: &[u8]) -> Option<((u16, u16), u32, u32)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
    Some((
        (tcp.src_port(), tcp.dst_port()),
        tcp.seq_number().0 as u32,
        len,
    ))
}

/// A two-way link with `SLOTS` frames of up to `FRAME` bytes in flight per direction.
pub struct Link<const SLOTS: usize, const FRAME: usize> {
    config: LinkConfig,
    /// `queues[0]` carries frames from A to B, `queues[1]` from B to A.
    queues: [Queue<SLOTS, FRAME>; 2],
    scratch: [u8; FRAME],
    transcript: Sha256,
    stats: LinkStats,
    order: u64,
}

impl<const SLOTS: usize, const FRAME: usize> Link<SLOTS, FRAME> {
    /// An empty link. Panics if `config.mtu` is below [`MIN_MTU`] or a frame of that MTU
    /// does not fit in `FRAME` bytes.
    pub fn new(config: LinkConfig) -> Self {
        let mut link = MaybeUninit::uninit();
        Self::init(&mut link, config);
        // SAFETY: `init` initialised every field.
        unsafe { link.assume_init() }
    }

    /// Builds an empty link in `slot`, in place (a board's static: no frame-sized temporary
    /// on the stack), and returns it. Panics as [`new`](Self::new) does.
    pub fn init(slot: &mut MaybeUninit<Self>, config: LinkConfig) -> &mut Self {
        assert!(
            config.mtu >= MIN_MTU && config.mtu + ETHERNET_HEADER <= FRAME,
            "the link's MTU must be at least {MIN_MTU} and at most FRAME - {ETHERNET_HEADER}"
        );
        let seed = config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let this = slot.as_mut_ptr();
        // SAFETY: `this` is valid for writes and aligned. The frames, flows and scratch buffer
        // are plain integers, arrays and `bool`s, for which all-zero bytes are valid values
        // (an empty queue); every other field is written explicitly. No reference to
        // uninitialised memory is made before `assume_init_mut`.
        unsafe {
            let queues = addr_of_mut!((*this).queues).cast::<Queue<SLOTS, FRAME>>();
            for (i, seed) in [seed, seed ^ 0xa5a5_a5a5_5a5a_5a5a].into_iter().enumerate() {
                let queue = queues.add(i);
                addr_of_mut!((*queue).frames).write_bytes(0, 1);
                addr_of_mut!((*queue).flows).write_bytes(0, 1);
                // xorshift must not start at 0.
                addr_of_mut!((*queue).rng).write(seed | 1);
            }
            addr_of_mut!((*this).scratch).write_bytes(0, 1);
            addr_of_mut!((*this).config).write(config);
            addr_of_mut!((*this).transcript).write(Sha256::new());
            addr_of_mut!((*this).stats).write(LinkStats::default());
            addr_of_mut!((*this).order).write(0);
            slot.assume_init_mut()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Side `side` of the link, as a smoltcp device.
    pub fn end(&mut self, side: Side) -> LinkEnd<'_, SLOTS, FRAME> {
        let [a_to_b, b_to_a] = &mut self.queues;
        let (rx, tx, direction) = match side {
            Side::A => (b_to_a, a_to_b, 0),
            Side::B => (a_to_b, b_to_a, 1),
        };
        LinkEnd {
            rx,
            tx: Sender {
                queue: tx,
                config: &self.config,
                scratch: &mut self.scratch,
                transcript: &mut self.transcript,
                stats: &mut self.stats,
                order: &mut self.order,
                direction,
            },
        }
    }

    /// When the next frame in flight is due, if any.
    pub fn next_delivery(&self) -> Option<Instant> {
        let a = self.queues[0].next_delivery();
        let b = self.queues[1].next_delivery();
        a.into_iter().chain(b).min().map(Instant::from_millis)
    }

    /// Frames in flight, both directions.
    pub fn in_flight(&self) -> usize {
        self.queues
            .iter()
            .map(|q| q.frames.iter().filter(|f| f.used).count())
            .sum()
    }

    /// Counters so far.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// SHA-256 of everything handed to the link so far.
    pub fn transcript(&self) -> [u8; 32] {
        self.transcript.clone().finalize().into()
    }
}

/// The transmitting half of a [`LinkEnd`].
struct Sender<'l, const SLOTS: usize, const FRAME: usize> {
    queue: &'l mut Queue<SLOTS, FRAME>,
    config: &'l LinkConfig,
    scratch: &'l mut [u8; FRAME],
    transcript: &'l mut Sha256,
    stats: &'l mut LinkStats,
    order: &'l mut u64,
    direction: u8,
}

/// What became of a frame, as recorded in the transcript.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Fate {
    Delivered = 0,
    Lost = 1,
    Overflowed = 2,
    TooLong = 3,
}

impl<const SLOTS: usize, const FRAME: usize> Sender<'_, SLOTS, FRAME> {
    fn reborrow(&mut self) -> Sender<'_, SLOTS, FRAME> {
        Sender {
            queue: &mut *self.queue,
            config: self.config,
            scratch: &mut *self.scratch,
            transcript: &mut *self.transcript,
            stats: &mut *self.stats,
            order: &mut *self.order,
            direction: self.direction,
        }
    }

    fn send<R>(self, now: Instant, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let Sender {
            queue,
            config,
            scratch,
            transcript,
            stats,
            order,
            direction,
        } = self;
        *order += 1;
        stats.sent += 1;
        stats.bytes += len as u64;
        let now_ms = now.total_millis();
        let free = queue.frames.iter().position(|f| !f.used);
        let (outage_start, outage_len) = config.outage_ms;
        let down = (outage_start..outage_start.saturating_add(outage_len))
            .contains(&u64::try_from(now_ms).unwrap_or(0));
        let (fate, index) = if len > FRAME || len > config.mtu + ETHERNET_HEADER {
            (Fate::TooLong, None)
        } else if down || queue.chance(config.loss) {
            (Fate::Lost, None)
        } else {
            match free {
                Some(i) => (Fate::Delivered, Some(i)),
                None => (Fate::Overflowed, None),
            }
        };
        // Fill the frame even if it is dropped: smoltcp needs a buffer either way.
        let buffer: &mut [u8] = match index {
            Some(i) => &mut queue.frames[i].data[..len],
            None => &mut scratch[..len.min(FRAME)],
        };
        let result = f(buffer);
        if is_retransmission(&mut queue.flows, buffer, *order) {
            stats.retransmissions += 1;
        }
        let mut at = now_ms + i64::from(config.delay_ms);
        let mut flipped = None;
        if let Some(i) = index {
            if queue.chance(config.reorder) {
                // Held back long enough for frames sent after it to arrive first.
                at += 1 + (queue.next() % (2 * u64::from(config.delay_ms) + 10)) as i64;
                stats.reordered += 1;
            }
            if len > 0 && queue.chance(config.corrupt) {
                let byte = (queue.next() % len as u64) as usize;
                let bit = 1u8 << (queue.next() % 8);
                queue.frames[i].data[byte] ^= bit;
                flipped = Some((byte as u32, bit));
                stats.corrupted += 1;
            }
            let frame = &mut queue.frames[i];
            frame.len = len;
            frame.at = at;
            frame.order = *order;
            frame.used = true;
        }
        match fate {
            Fate::Lost => stats.lost += 1,
            Fate::Overflowed => stats.overflowed += 1,
            _ => {}
        }
        transcript.update([direction, fate as u8]);
        transcript.update(now_ms.to_le_bytes());
        transcript.update(at.to_le_bytes());
        transcript.update((len as u32).to_le_bytes());
        if let Some((byte, bit)) = flipped {
            transcript.update(byte.to_le_bytes());
            transcript.update([bit]);
        }
        let recorded: &[u8] = match index {
            Some(i) => &queue.frames[i].data[..len],
            None => &scratch[..len.min(FRAME)],
        };
        transcript.update(recorded);
        result
    }
}

/// One side of a [`Link`], lent by [`Link::end`]: a smoltcp [`phy::Device`].
pub struct LinkEnd<'l, const SLOTS: usize, const FRAME: usize> {
    rx: &'l mut Queue<SLOTS, FRAME>,
    tx: Sender<'l, SLOTS, FRAME>,
}

/// A received frame.
pub struct LinkRxToken<'t, const SLOTS: usize, const FRAME: usize> {
    queue: &'t mut Queue<SLOTS, FRAME>,
    index: usize,
}

/// Permission to transmit one frame.
pub struct LinkTxToken<'t, const SLOTS: usize, const FRAME: usize> {
    sender: Sender<'t, SLOTS, FRAME>,
    now: Instant,
}

impl<const SLOTS: usize, const FRAME: usize> phy::RxToken for LinkRxToken<'_, SLOTS, FRAME> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let frame = &mut self.queue.frames[self.index];
        frame.used = false;
        f(&frame.data[..frame.len])
    }
}

impl<const SLOTS: usize, const FRAME: usize> phy::TxToken for LinkTxToken<'_, SLOTS, FRAME> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.sender.send(self.now, len, f)
    }
}

impl<const SLOTS: usize, const FRAME: usize> phy::Device for LinkEnd<'_, SLOTS, FRAME> {
    type RxToken<'t>
        = LinkRxToken<'t, SLOTS, FRAME>
    where
        Self: 't;
    type TxToken<'t>
        = LinkTxToken<'t, SLOTS, FRAME>
    where
        Self: 't;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let index = self.rx.ready(now.total_millis())?;
        self.tx.stats.delivered += 1;
        let sender = self.tx.reborrow();
        Some((
            LinkRxToken {
                queue: &mut *self.rx,
                index,
            },
            LinkTxToken { sender, now },
        ))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        Some(LinkTxToken {
            sender: self.tx.reborrow(),
            now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.tx.config.mtu + ETHERNET_HEADER;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phy::{Device as _, RxToken as _, TxToken as _};

    type TestLink = Link<4, 128>;

    fn at(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    fn send(link: &mut TestLink, side: Side, now: i64, frame: &[u8]) {
        let mut end = link.end(side);
        let token = end.transmit(at(now)).expect("a link always transmits");
        token.consume(frame.len(), |buf| buf.copy_from_slice(frame));
    }

    fn receive(link: &mut TestLink, side: Side, now: i64) -> Option<std::vec::Vec<u8>> {
        let mut end = link.end(side);
        let (rx, _) = end.receive(at(now))?;
        Some(rx.consume(|buf| buf.to_vec()))
    }

    /// Ethernet + IPv4 + TCP headers with sequence number `seq` and `payload` bytes of data.
    fn tcp_frame(seq: u32, payload: usize) -> std::vec::Vec<u8> {
        let mut f = std::vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        let tcp = &mut ip[20..];
        tcp[0..2].copy_from_slice(&11002u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&49152u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4;
        f
    }

    #[test]
    fn probabilities_convert() {
        assert_eq!(Probability::new(0.0), Probability::NEVER);
        assert_eq!(Probability::new(1.0).0, u32::MAX);
        assert_eq!(Probability::per_million(1_000_000).0, u32::MAX);
        assert!((Probability::new(0.1).get() - 0.1).abs() < 1e-9);
        assert!((Probability::per_million(50_000).get() - 0.05).abs() < 1e-9);
    }

    #[test]
    fn frames_arrive_after_the_delay_in_order() {
        let mut link = TestLink::new(LinkConfig {
            delay_ms: 10,
            mtu: 100,
            ..LinkConfig::default()
        });
        send(&mut link, Side::A, 0, b"first");
        send(&mut link, Side::A, 1, b"second");
        assert_eq!(receive(&mut link, Side::B, 9), None, "not before the delay");
        assert_eq!(receive(&mut link, Side::A, 20), None, "not to the sender");
        assert_eq!(link.next_delivery(), Some(at(10)));
        assert_eq!(
            receive(&mut link, Side::B, 20).as_deref(),
            Some(&b"first"[..])
        );
        assert_eq!(
            receive(&mut link, Side::B, 20).as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(link.in_flight(), 0);
        assert_eq!(link.stats().delivered, 2);
    }

    #[test]
    fn loss_and_a_full_link_drop_frames() {
        let mut lossy = TestLink::new(LinkConfig {
            loss: Probability::new(1.0),
            mtu: 100,
            ..LinkConfig::default()
        });
        send(&mut lossy, Side::A, 0, b"gone");
        assert_eq!(receive(&mut lossy, Side::B, 1000), None);
        assert_eq!(lossy.stats().lost, 1);

        let mut small = TestLink::new(LinkConfig {
            mtu: 100,
            ..LinkConfig::default()
        });
        for i in 0..6u8 {
            send(&mut small, Side::B, 0, &[i]);
        }
        assert_eq!(small.stats().overflowed, 2, "4 slots, 6 frames");
        assert_eq!(small.in_flight(), 4);
    }

    #[test]
    fn an_outage_loses_everything_in_its_window() {
        let mut link = TestLink::new(LinkConfig {
            mtu: 100,
            outage_ms: (100, 50),
            ..LinkConfig::default()
        });
        send(&mut link, Side::A, 99, b"before");
        send(&mut link, Side::A, 100, b"during");
        send(&mut link, Side::A, 149, b"during");
        send(&mut link, Side::A, 150, b"after");
        assert_eq!(link.stats().lost, 2);
        assert_eq!(link.in_flight(), 2);
    }

    #[test]
    fn resent_sequence_space_counts_as_a_retransmission() {
        let mut link = TestLink::new(LinkConfig {
            mtu: 100,
            ..LinkConfig::default()
        });
        send(&mut link, Side::A, 0, &tcp_frame(1000, 10));
        send(&mut link, Side::A, 1, &tcp_frame(1010, 10));
        assert_eq!(link.stats().retransmissions, 0);
        send(&mut link, Side::A, 2, &tcp_frame(1000, 10));
        assert_eq!(link.stats().retransmissions, 1);
        // A pure ACK carries no sequence space.
        send(&mut link, Side::A, 3, &tcp_frame(1000, 0));
        assert_eq!(link.stats().retransmissions, 1);
        // Sequence numbers wrap.
        send(&mut link, Side::B, 4, &tcp_frame(u32::MAX - 4, 10));
        send(&mut link, Side::B, 5, &tcp_frame(5, 10));
        assert_eq!(link.stats().retransmissions, 1);
    }

    #[test]
    fn the_transcript_depends_on_the_seed_only_through_the_faults() {
        let run = |seed, loss| {
            let mut link = TestLink::new(LinkConfig {
                loss: Probability::new(loss),
                reorder: Probability::new(0.5),
                mtu: 100,
                seed,
                ..LinkConfig::default()
            });
            for i in 0..32u8 {
                send(&mut link, Side::A, i64::from(i) * 3, &[i; 7]);
                while receive(&mut link, Side::B, i64::from(i) * 3).is_some() {}
            }
            link.transcript()
        };
        assert_eq!(run(1, 0.3), run(1, 0.3));
        assert_ne!(run(1, 0.3), run(2, 0.3));
    }
}
