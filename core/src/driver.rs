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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::client::RequestKind;
    use crate::TransferId;
    use crate::Username;

    fn receipt() -> ReceiptInfo {
        ReceiptInfo {
            id: TransferId::parse("t-1").unwrap(),
            to: Username::parse("bob").unwrap(),
            amount: Amount(125),
            result: Ok(()),
            balance: Amount(875),
        }
    }

    fn page() -> HistoryPage {
        HistoryPage {
            entries: heapless::Vec::new(),
            more: true,
        }
    }

    /// One event of every kind a picker might meet.
    fn events() -> [ClientEvent; 8] {
        [
            ClientEvent::Registered,
            ClientEvent::Challenge { iterations: 4096 },
            ClientEvent::LoggedIn,
            ClientEvent::Nonces { available: 3 },
            ClientEvent::Receipt(receipt()),
            ClientEvent::Balance(Amount(875)),
            ClientEvent::History(page()),
            ClientEvent::LoggedOut,
        ]
    }

    /// Each call takes exactly the event it waited for: any other answer is not its own.
    #[test]
    fn each_picker_takes_only_its_own_event() {
        for (i, e) in events().into_iter().enumerate() {
            let own = |n: usize| i == n;
            assert_eq!(pick::registered(e.clone()).is_some(), own(0), "{e:?}");
            assert_eq!(pick::challenge(e.clone()).is_some(), own(1), "{e:?}");
            assert_eq!(pick::logged_in(e.clone()).is_some(), own(2), "{e:?}");
            assert_eq!(pick::nonces(e.clone()).is_some(), own(3), "{e:?}");
            assert_eq!(pick::receipt(e.clone()), own(4).then(receipt), "{e:?}");
            assert_eq!(pick::balance(e.clone()), own(5).then_some(Amount(875)));
            assert_eq!(pick::history(e.clone()), own(6).then(page), "{e:?}");
            assert_eq!(pick::logged_out(e.clone()).is_some(), own(7), "{e:?}");
            assert_eq!(pick::registered(ClientEvent::Pong), None);
        }
    }

    /// A refusal, a closing or an integrity failure is an error whatever the call asked;
    /// another call's event is `Unexpected`.
    #[test]
    fn refusals_and_integrity_failures_are_errors_for_every_call() {
        let refused = ClientEvent::Refused {
            request: RequestKind::Balance,
            code: ErrorCode::InsufficientFunds,
            id: None,
        };
        assert_eq!(
            expect::<_, ()>(refused, |_| Some(())),
            Err(DriverError::Refused(ErrorCode::InsufficientFunds))
        );
        let closed = ClientEvent::Closed {
            code: ErrorCode::Timeout,
        };
        assert_eq!(
            expect::<_, ()>(closed, |_| Some(())),
            Err(DriverError::Refused(ErrorCode::Timeout))
        );
        let forged = ClientEvent::Integrity(IntegrityError::BadSequence);
        assert_eq!(
            expect::<_, ()>(forged, |_| Some(())),
            Err(DriverError::Integrity(IntegrityError::BadSequence))
        );
        assert_eq!(
            expect::<_, ()>(ClientEvent::Pong, pick::balance),
            Err(DriverError::Unexpected)
        );
        assert_eq!(
            expect::<_, ()>(ClientEvent::Balance(Amount(1)), pick::balance),
            Ok(Amount(1))
        );
        assert_eq!(
            DriverError::<()>::from(ClientError::NotLoggedIn),
            DriverError::Client(ClientError::NotLoggedIn)
        );
    }

    /// Each error tells a person which of the cases it is (the text is for logs and
    /// terminals; no code parses it).
    #[test]
    fn each_error_says_what_happened() {
        use std::string::ToString;
        let texts: std::vec::Vec<_> = [
            DriverError::Io("reset"),
            DriverError::Closed,
            DriverError::Client(ClientError::NotLoggedIn),
            DriverError::Refused(ErrorCode::InsufficientFunds),
            DriverError::Integrity(IntegrityError::BadSequence),
            DriverError::Unexpected,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        for (i, text) in texts.iter().enumerate() {
            assert!(!text.is_empty());
            assert!(!texts[..i].contains(text), "{text}");
        }
        assert!(texts[0].contains("reset"), "{}", texts[0]);
    }

    /// The read buffer hands out what was read, in order, each byte once.
    #[test]
    fn the_input_buffer_hands_out_each_byte_once() {
        let mut input = InputBuffer::new();
        assert!(input.is_empty());
        assert_eq!(input.pending(), b"");
        assert_eq!(input.space().len(), READ_CHUNK);
        input.space()[..5].copy_from_slice(b"hello");
        input.filled(5);
        assert!(!input.is_empty());
        assert_eq!(input.pending(), b"hello");
        input.consume(2);
        assert_eq!(input.pending(), b"llo");
        input.consume(0);
        assert_eq!(input.pending(), b"llo");
        // More than is pending consumes what is there, no more.
        input.consume(10);
        assert!(input.is_empty());
        assert_eq!(input.pending(), b"");
        // A new read starts again at the front; a claim beyond the buffer is clamped.
        input.space()[..2].copy_from_slice(b"ok");
        input.filled(2);
        assert_eq!(input.pending(), b"ok");
        input.filled(READ_CHUNK + 1);
        assert_eq!(input.pending().len(), READ_CHUNK);
    }
}
