//! The two protocol state machines: one per side of a connection.
//!
//! Both are sans-IO: bytes and ledger answers go in through `handle_*`, bytes, ledger
//! requests and events come out through `poll_*`, and "now" is always an argument. The host,
//! the firmware and the tests drive the same code.

pub mod client;
pub mod drive;
pub mod server;

pub use client::{
    ClientConfig, ClientError, ClientEvent, ClientSession, IntegrityError, ReceiptInfo, RequestKind,
};
pub use drive::{DriveLoop, DriveStep};
pub use server::{
    LoginFailure, NoPipeline, PipelineQueue, PipelinedRequest, ServerConfig, ServerEvent,
    ServerSession, ServerShared, DEFAULT_PIPELINE,
};
