//! Blocking drivers over [`embedded_io`] streams, for boards without an async runtime.
//!
//! They hold a small read buffer and move bytes between a stream and a session; every
//! protocol decision stays in the session. [`BlockingClient`] wraps a [`ClientSession`] with
//! one call per operation; [`serve`] runs a [`ServerSession`] over one stream against a
//! synchronous [`Ledger`] until the session closes.

use crate::amount::Amount;
use crate::driver::{expect, pick, InputBuffer, NONCE_REFILL};
use crate::ledger::{HistoryPage, Ledger};
use crate::session::client::{ClientConfig, ClientEvent, ClientSession, ReceiptInfo};
use crate::session::server::{ServerSession, ServerShared};
use crate::time::Instant;
use embedded_io::{Read, Write};
use rand_core::{CryptoRng, RngCore};

pub use crate::driver::READ_CHUNK;

/// Error returned by the blocking drivers: the drivers' shared [`DriverError`](crate::driver::DriverError).
pub use crate::driver::DriverError as BlockingError;

/// A client session on a blocking stream.
pub struct BlockingClient<T, R> {
    io: T,
    rng: R,
    session: ClientSession,
    input: InputBuffer,
}

impl<T: Read + Write, R: RngCore + CryptoRng> BlockingClient<T, R> {
    /// Wraps a connected stream.
    pub fn new(io: T, rng: R, config: ClientConfig) -> Self {
        BlockingClient {
            io,
            rng,
            session: ClientSession::new(config),
            input: InputBuffer::new(),
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
            if self.input.is_empty() {
                let n = self
                    .io
                    .read(self.input.space())
                    .map_err(BlockingError::Io)?;
                if n == 0 {
                    return Err(BlockingError::Closed);
                }
                self.input.filled(n);
            }
            let used = self.session.handle_input(self.input.pending());
            self.input.consume(used);
        }
    }

    fn expect<V>(
        &mut self,
        pick: impl FnOnce(ClientEvent) -> Option<V>,
    ) -> Result<V, BlockingError<T::Error>> {
        expect(self.next_event()?, pick)
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
        self.expect(pick::registered)
    }

    /// Logs in with a password.
    pub fn login(&mut self, user: &str, password: &str) -> Result<(), BlockingError<T::Error>> {
        self.session.login(&mut self.rng, user)?;
        self.expect(pick::challenge)?;
        self.session.answer_with_password(password)?;
        self.expect(pick::logged_in)
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
            self.session.request_nonces(NONCE_REFILL)?;
            self.expect(pick::nonces)?;
        }
        self.session.transfer(id, to, amount)?;
        self.expect(pick::receipt)
    }

    /// The verified balance.
    pub fn balance(&mut self) -> Result<Amount, BlockingError<T::Error>> {
        self.session.balance()?;
        self.expect(pick::balance)
    }

    /// A verified page of history.
    pub fn history(&mut self, offset: u32) -> Result<HistoryPage, BlockingError<T::Error>> {
        self.session.history(offset)?;
        self.expect(pick::history)
    }

    /// A verified page of the statement (history with deposits).
    pub fn statement(&mut self, offset: u32) -> Result<HistoryPage, BlockingError<T::Error>> {
        self.session.statement(offset)?;
        self.expect(pick::history)
    }

    /// Logs out.
    pub fn logout(&mut self) -> Result<(), BlockingError<T::Error>> {
        self.session.logout()?;
        self.expect(pick::logged_out)
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
    let mut input = InputBuffer::new();
    loop {
        // The blocking driver does not log, so events are dropped as they come.
        let used = session.drive(
            shared,
            ledger,
            clock(),
            input.pending(),
            |out| io.write(out),
            |_| {},
        )?;
        input.consume(used);
        io.flush()?;
        if session.is_closed() {
            return Ok(());
        }
        if input.is_empty() {
            match io.read(input.space()) {
                Ok(0) => return Ok(()),
                Ok(n) => input.filled(n),
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
