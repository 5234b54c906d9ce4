//! What the blocking ([`blocking`](crate::blocking)) and async (`asynch`, feature `async`)
//! drivers share besides the drive loop ([`DriveLoop`](crate::session::DriveLoop)): their
//! error type, their read buffer, and how a client call reads the session's next event.
//!
//! The two drivers differ only in how they wait for a stream; these parts make sure they
//! cannot differ in anything else.

use crate::error::ErrorCode;
use crate::ledger::HistoryPage;
use crate::session::client::{ClientError, ClientEvent, IntegrityError, ReceiptInfo};
use crate::Amount;
use core::fmt;

/// Size of the drivers' read buffer in bytes. Any size works; bigger means fewer reads.
pub const READ_CHUNK: usize = 256;

/// Error returned by the client and server drivers, generic over the stream's error `E`.
/// Re-exported as `blocking::BlockingError` and `asynch::AsyncError`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError<E> {
    /// The stream failed.
    Io(E),
    /// The peer closed the stream.
    Closed,
    /// The client could not send the request.
    Client(ClientError),
    /// The server refused the request.
    Refused(ErrorCode),
    /// The server's answer cannot be trusted.
    Integrity(IntegrityError),
    /// The server answered something this call did not ask for.
    Unexpected,
}

impl<E: fmt::Debug> fmt::Display for DriverError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Io(e) => write!(f, "stream error: {e:?}"),
            DriverError::Closed => f.write_str("connection closed"),
            DriverError::Client(e) => write!(f, "{e}"),
            DriverError::Refused(code) => write!(f, "refused: {code}"),
            DriverError::Integrity(e) => write!(f, "integrity failure: {e}"),
            DriverError::Unexpected => f.write_str("unexpected response"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for DriverError<E> {}

impl<E> From<ClientError> for DriverError<E> {
    fn from(e: ClientError) -> Self {
        DriverError::Client(e)
    }
}

/// Bytes read from a stream and not yet consumed by a session.
#[derive(Debug, Clone)]
pub(crate) struct InputBuffer {
    buf: [u8; READ_CHUNK],
    start: usize,
    end: usize,
}

impl InputBuffer {
    pub(crate) const fn new() -> Self {
        InputBuffer {
            buf: [0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// The bytes waiting for the session.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// True when everything read has been consumed: time to read again.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` pending bytes as consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// The whole buffer, to read into once it [`is_empty`](Self::is_empty); then call
    /// [`filled`](Self::filled).
    pub(crate) fn space(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// `n` bytes were read into [`space`](Self::space).
    pub(crate) fn filled(&mut self, n: usize) {
        self.start = 0;
        self.end = n.min(READ_CHUNK);
    }
}

/// What a client call makes of the event it waited for: a refusal, a closing or an integrity
/// failure is an error whatever the call asked; anything else is `pick`ed or
/// [`DriverError::Unexpected`].
pub(crate) fn expect<V, E>(
    event: ClientEvent,
    pick: impl FnOnce(ClientEvent) -> Option<V>,
) -> Result<V, DriverError<E>> {
    match event {
        ClientEvent::Refused { code, .. } | ClientEvent::Closed { code } => {
            Err(DriverError::Refused(code))
        }
        ClientEvent::Integrity(e) => Err(DriverError::Integrity(e)),
        other => pick(other).ok_or(DriverError::Unexpected),
    }
}

/// The event each client call waits for, one picker per call, for [`expect`].
pub(crate) mod pick {
    use super::*;

    pub(crate) fn registered(e: ClientEvent) -> Option<()> {
        matches!(e, ClientEvent::Registered).then_some(())
    }

    pub(crate) fn challenge(e: ClientEvent) -> Option<()> {
        matches!(e, ClientEvent::Challenge { .. }).then_some(())
    }

    pub(crate) fn logged_in(e: ClientEvent) -> Option<()> {
        matches!(e, ClientEvent::LoggedIn).then_some(())
    }

    pub(crate) fn nonces(e: ClientEvent) -> Option<()> {
        matches!(e, ClientEvent::Nonces { .. }).then_some(())
    }

    pub(crate) fn receipt(e: ClientEvent) -> Option<ReceiptInfo> {
        match e {
            ClientEvent::Receipt(r) => Some(r),
            _ => None,
        }
    }

    pub(crate) fn balance(e: ClientEvent) -> Option<Amount> {
        match e {
            ClientEvent::Balance(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn history(e: ClientEvent) -> Option<HistoryPage> {
        match e {
            ClientEvent::History(h) => Some(h),
            _ => None,
        }
    }

    pub(crate) fn logged_out(e: ClientEvent) -> Option<()> {
        matches!(e, ClientEvent::LoggedOut).then_some(())
    }
}

/// How many nonces a client call asks for when it has none left.
pub(crate) const NONCE_REFILL: u8 = 4;
