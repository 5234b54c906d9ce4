//! # txsock-core
//!
//! The protocol engine of txsock: authenticated money transfers over a byte stream, with the
//! same code on a desktop server and on a microcontroller.
//!
//! This crate does **not** do I/O, read a clock, allocate, touch storage, or panic on any
//! input. It takes bytes, ledger answers and "now" in; it hands bytes, ledger requests and
//! events out. Drivers (the `txsock` host over tokio, the smoltcp firmware, the blocking
//! [`blocking`] driver over `embedded-io`) only move bytes and answers around.
//!
//! ## Layers, bottom up
//!
//! - [`time`]: the driver's clock as an [`Instant`] in milliseconds.
//! - [`framing`]: newline-delimited frames in a fixed buffer ([`FrameDecoder`]).
//! - [`amount`], [`names`], [`encoding`]: validated values (money in minor units, usernames,
//!   transfer ids, hex and base64).
//! - [`message`]: every request and response, parsed with serde-json-core without
//!   allocation.
//! - [`crypto`], [`auth`], [`mac`]: HMAC-SHA256, SCRAM-SHA-256 login
//!   ([RFC 5802](https://www.rfc-editor.org/rfc/rfc5802),
//!   [RFC 7677](https://www.rfc-editor.org/rfc/rfc7677)), session keys, and the canonical
//!   MAC inputs of transfers and receipts.
//! - [`replay`]: the nonce ring that makes every transfer one-time.
//! - [`lockout`]: failed-login backoff per account and per address.
//! - [`ledger`]: the contract between a session and storage, and [`MemLedger`], a
//!   fixed-capacity ledger.
//! - [`session`]: the two state machines, [`ServerSession`] and [`ClientSession`].
//! - [`blocking`]: drivers for boards with `embedded-io` streams and no async runtime;
//!   `asynch` (feature `async`): the same drivers over `embedded-io-async` streams, for
//!   embassy and other executors. Both run one drive loop ([`session::DriveLoop`]) and share
//!   [`driver`]'s error type and buffers.
//!
//! ## Sizing
//!
//! Capacities are const generics with documented defaults: the frame length
//! ([`framing::DEFAULT_MAX_FRAME`]), outstanding nonces ([`replay::DEFAULT_NONCES`]), the
//! output buffer ([`session::server::DEFAULT_OUTPUT`]) and the ledger's accounts and journal.
//! A default [`ServerSession`] is about 2 KiB.
//!
//! ## Features
//!
//! - `fast-request` (default): the host's flash-for-time trades (eight-byte scans, inlined
//!   copies, whole-block MAC updates, the layout shortcuts for a transfer request, the
//!   client's transfer writer and its receipt reader); device images leave it off.
//! - `compact-sha256`: `sha2`'s compact SHA-256 (a loop over the rounds, about 1.6 KB less
//!   flash, slower per block), for microcontrollers without SHA instructions; every device
//!   image turns it on. Never on a host, where it would also turn off SHA-NI.
//! - `defmt`: derives `defmt::Format` for public types, for logging on embedded targets.
//! - `async`: the `asynch` module, async drivers over `embedded-io-async` 0.7 streams (the
//!   traits embassy-net's `TcpSocket` implements), with an async ledger trait and a
//!   caller-provided timer, so that the core depends on no executor.
//! - `_testkit` (private): the `selftest` and `fuzzing` modules, for the crate's tests,
//!   benches, fuzz targets and the QEMU self-test image. It holds a seeded, predictable RNG
//!   and code that panics on purpose, so no product build turns it on.

#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(test)]
mod alive;
pub mod amount;
#[cfg(feature = "async")]
pub mod asynch;
pub mod auth;
pub mod blocking;
pub mod crypto;
pub mod driver;
pub mod encoding;
pub mod error;
pub mod framing;
pub mod ledger;
pub mod lockout;
pub mod mac;
pub mod message;
pub mod names;
pub mod replay;
pub mod response;
mod scan;
pub mod session;
pub mod time;

#[cfg(feature = "_testkit")]
pub mod fuzzing;
#[cfg(any(test, feature = "_testkit"))]
pub mod selftest;

pub use amount::Amount;
pub use error::ErrorCode;
pub use framing::FrameDecoder;
pub use ledger::{Ledger, LedgerReply, LedgerRequest, MemLedger};
pub use names::{TransferId, Username};
pub use session::{ClientSession, ServerSession};
pub use time::{Duration, Instant};
