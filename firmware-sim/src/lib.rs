//! # txsock-firmware-sim
//!
//! txsock's core server on [smoltcp](https://docs.rs/smoltcp): the device a microcontroller
//! runs, a simulated constrained link to test it on a desktop, and a bridge to a real TAP
//! interface.
//!
//! The device ([`device::Device`]) is `no_std` and allocation-free: one smoltcp interface,
//! statically sized TCP socket buffers, a fixed number of core
//! [`ServerSession`](txsock_core::ServerSession)s, and a [`Ledger`](txsock_core::Ledger)
//! answered synchronously (the core's fixed-capacity
//! [`MemLedger`](txsock_core::MemLedger) by default). One `poll(now)` drives everything. It
//! contains no protocol code of its own: every protocol decision is the core session's.
//!
//! This crate does **not** read a clock, pick an RNG seed, or own a network device: a board
//! (or the simulator) passes "now" to every call, seeds the RNG from its TRNG, and lends a
//! smoltcp [`phy::Device`](smoltcp::phy::Device). `docs/PORTING.md` says what a board must
//! provide.
//!
//! ## Layers
//!
//! - [`device`]: the device itself.
//! - [`alone`]: the device alone with the board's sizes and stand-ins for its hardware, as the
//!   footprint images (firmware-sim/cortex-m, firmware-sim/targets) link it.
//! - [`flash_ledger`]: a [`Ledger`](txsock_core::Ledger) on NOR flash that survives power
//!   cuts (sequential-storage plus a write-ahead record), for boards whose money must outlive
//!   a reset; [`ram_flash`]: NOR flash simulated in RAM.
//! - [`link`]: a simulated Ethernet link with seeded loss, delay, reordering, corruption and
//!   an MTU, modelled on smoltcp's `FaultInjector`, which also hashes everything it carries
//!   (the transcript) and counts TCP retransmissions.
//! - [`client`]: the simulated clients' side: core [`ClientSession`](txsock_core::ClientSession)s
//!   on their own smoltcp interface, and a simulated clock that jumps to the next deadline.
//! - [`scenario`]: the scripted session (transfers, a replay, a tamper attempt) that the
//!   Cortex-M4 image (`firmware-sim/cortex-m`) runs under QEMU.
//! - `sim` (with `std`): the simulator behind the `txsock-firmware-sim` binary: many
//!   transfers over a lossy link, exactly once, with a summary.
//! - `sweep` (with `std`): the simulator as a fault explorer: many scenarios drawn from one
//!   seed (link faults, device restarts, clock jumps, resetting peers), each checked, every
//!   failure printed as the command that replays it.
//! - `power_cut` (with `std`): power cuts at every flash write and erase of the flash ledger,
//!   each followed by a reboot and the checks that nothing acknowledged was lost or doubled.
//! - `tap` (with `std`): the device on a Linux TAP interface, for real clients.
//!
//! ## Features
//!
//! - `std` (default): the simulator, the TAP bridge and the binary. Without it the crate is
//!   `#![no_std]`; the Cortex-M image builds it that way.

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

pub mod alone;
pub mod client;
pub mod device;
pub mod flash_ledger;
pub mod link;
pub mod ram_flash;
pub mod scenario;

#[cfg(feature = "std")]
pub mod power_cut;
#[cfg(feature = "std")]
pub mod sim;
#[cfg(feature = "std")]
pub mod sweep;
#[cfg(feature = "std")]
pub mod tap;
