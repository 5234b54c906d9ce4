//! Blocking drivers over [`embedded_io`] streams, for boards without an async runtime.
//!
//! They hold a small read buffer and move bytes between a stream and a session; every
//! protocol decision stays in the session. [`BlockingClient`] wraps a [`ClientSession`] with
//! one call per operation; [`serve`] runs a [`ServerSession`] over one stream against a
//! synchronous [`Ledger`] until the session closes.

use crate::amount::Amount;
use crate::error::ErrorCode;
use crate::ledger::{HistoryPage, Ledger};
use crate::session::client::{
    ClientConfig, ClientError, ClientEvent, ClientSession, IntegrityError, ReceiptInfo,
};
use crate::session::server::{ServerSession, ServerShared};
use crate::time::Instant;
use core::fmt;
use embedded_io::{Read, Write};
use rand_core::{CryptoRng, RngCore};

/// Size of the drivers' read buffer in bytes. Any size works; bigger means fewer reads.
pub const READ_CHUNK: usize = 256;

/// Error returned by the blocking drivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockingError<E> {
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

impl<E: fmt::Debug> fmt::Display for BlockingError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockingError::Io(e) => write!(f, "stream error: {e:?}"),
            BlockingError::Closed => f.write_str("connection closed"),
            BlockingError::Client(e) => write!(f, "{e}"),
            BlockingError::Refused(code) => write!(f, "refused: {code}"),
            BlockingError::Integrity(e) => write!(f, "integrity failure: {e}"),
            BlockingError::Unexpected => f.write_str("unexpected response"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for BlockingError<E> {}

impl<E> From<ClientError> for BlockingError<E> {
    fn from(e: ClientError) -> Self {
        BlockingError::Client(e)
    }
}

/// A client session on a blocking stream.
pub struct BlockingClient<T, R> {
    io: T,
    rng: R,
    session: ClientSession,
    buf: [u8; READ_CHUNK],
    start: usize,
    end: usize,
}

impl<T: Read + Write, R: RngCore + CryptoRng> BlockingClient<T, R> {
    /// Wraps a connected stream.
    pub fn new(io: T, rng: R, config: ClientConfig) -> Self {
        BlockingClient {
            io,
            rng,
            session: ClientSession::new(config),
            buf: [0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// The session, for requests this wrapper has no method for.
    pub fn session(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    /// Gives back the stream.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Writes all pending output.
    pub fn flush(&mut self) -> Result<(), BlockingError<T::Error>> {
        while !self.session.poll_transmit().is_empty() {
            let n = self
                .io
                .write(self.session.poll_transmit())
                .map_err(BlockingError::Io)?;
            if n == 0 {
                return Err(BlockingError::Closed);
            }
            self.session.advance_transmit(n);
        }
        self.io.flush().map_err(BlockingError::Io)
    }

    /// Flushes, then reads until the session has an event.
    pub fn next_event(&mut self) -> Result<ClientEvent, BlockingError<T::Error>> {
        loop {
            if let Some(event) = self.session.poll_event() {
                return Ok(event);
            }
            self.flush()?;
            if self.start == self.end {
                let n = self.io.read(&mut self.buf).map_err(BlockingError::Io)?;
                if n == 0 {
                    return Err(BlockingError::Closed);
                }
                self.start = 0;
                self.end = n;
            }
            self.start += self.session.handle_input(&self.buf[self.start..self.end]);
        }
    }

    fn expect<V>(
        &mut self,
        pick: impl Fn(ClientEvent) -> Option<V>,
    ) -> Result<V, BlockingError<T::Error>> {
        match self.next_event()? {
            ClientEvent::Refused { code, .. } | ClientEvent::Closed { code } => {
                Err(BlockingError::Refused(code))
            }
            ClientEvent::Integrity(e) => Err(BlockingError::Integrity(e)),
            other => pick(other).ok_or(BlockingError::Unexpected),
        }
    }

    /// Registers `user`; PBKDF2 with `iterations` runs here.
    pub fn register(
        &mut self,
        user: &str,
        password: &str,
        iterations: u32,
    ) -> Result<(), BlockingError<T::Error>> {
        self.session
            .register(&mut self.rng, user, password, iterations)?;
        self.expect(|e| matches!(e, ClientEvent::Registered).then_some(()))
    }

    /// Logs in with a password.
    pub fn login(&mut self, user: &str, password: &str) -> Result<(), BlockingError<T::Error>> {
        self.session.login(&mut self.rng, user)?;
        self.expect(|e| matches!(e, ClientEvent::Challenge { .. }).then_some(()))?;
        self.session.answer_with_password(password)?;
        self.expect(|e| matches!(e, ClientEvent::LoggedIn).then_some(()))
    }

    /// Sends one transfer and waits for its verified receipt (fetching nonces if needed).
    /// A refusal arrives as a receipt whose `result` is `Err`.
    pub fn transfer(
        &mut self,
        id: &str,
        to: &str,
        amount: Amount,
    ) -> Result<ReceiptInfo, BlockingError<T::Error>> {
        if self.session.available_nonces() == 0 {
            self.session.request_nonces(4)?;
            self.expect(|e| matches!(e, ClientEvent::Nonces { .. }).then_some(()))?;
        }
        self.session.transfer(id, to, amount)?;
        self.expect(|e| match e {
            ClientEvent::Receipt(r) => Some(r),
            _ => None,
        })
    }

    /// The verified balance.
    pub fn balance(&mut self) -> Result<Amount, BlockingError<T::Error>> {
        self.session.balance()?;
        self.expect(|e| match e {
            ClientEvent::Balance(b) => Some(b),
            _ => None,
        })
    }

    /// A verified page of history.
    pub fn history(&mut self, offset: u32) -> Result<HistoryPage, BlockingError<T::Error>> {
        self.session.history(offset)?;
        self.expect(|e| match e {
            ClientEvent::History(h) => Some(h),
            _ => None,
        })
    }

    /// Logs out.
    pub fn logout(&mut self) -> Result<(), BlockingError<T::Error>> {
        self.session.logout()?;
        self.expect(|e| matches!(e, ClientEvent::LoggedOut).then_some(()))
    }
}

/// Runs `session` over `io` until it closes or the peer hangs up, answering ledger requests
/// from `ledger` at once. `clock` is read for every input.
///
/// Timeouts are the stream's business here: give it a read timeout that returns an error,
/// and this returns that error after the session has had its `handle_timeout`.
pub fn serve<
    T,
    R,
    L,
    const FRAME: usize,
    const NONCES: usize,
    const OUT: usize,
    const ADDRS: usize,
>(
    io: &mut T,
    session: &mut ServerSession<FRAME, NONCES, OUT>,
    shared: &mut ServerShared<R, ADDRS>,
    ledger: &mut L,
    mut clock: impl FnMut() -> Instant,
) -> Result<(), T::Error>
where
    T: Read + Write,
    R: RngCore + CryptoRng,
    L: Ledger,
{
    let mut buf = [0u8; READ_CHUNK];
    let (mut start, mut end) = (0, 0);
    loop {
        // The blocking driver does not log, so events are dropped as they come.
        start += session.drive(
            shared,
            ledger,
            clock(),
            &buf[start..end],
            |out| io.write(out),
            |_| {},
        )?;
        io.flush()?;
        if session.is_closed() {
            return Ok(());
        }
        if start == end {
            match io.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    start = 0;
                    end = n;
                }
                Err(e) => {
                    session.handle_timeout(shared, clock());
                    continue_write(io, session)?;
                    return Err(e);
                }
            }
        }
    }
}

fn continue_write<T: Write, const F: usize, const N: usize, const O: usize>(
    io: &mut T,
    session: &mut ServerSession<F, N, O>,
) -> Result<(), T::Error> {
    while !session.poll_transmit().is_empty() {
        let n = io.write(session.poll_transmit())?;
        if n == 0 {
            break;
        }
        session.advance_transmit(n);
    }
    io.flush()
}
