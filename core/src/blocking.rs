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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::DriverError;
    use crate::error::ErrorCode;
    use crate::ledger::{EntryKind, HistoryEntry, LedgerReply, LedgerRequest};
    use crate::lockout::PeerAddr;
    use crate::selftest::{TestLedger, TestRng, TEST_ITERATIONS};
    use crate::session::server::ServerConfig;
    use crate::session::ClientError;
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// More writes than any conversation here needs: a driver past it loops without making
    /// progress, and the test fails instead of hanging.
    const MAX_WRITES: usize = 100_000;

    /// The test streams: a [`Source`] answers the reads, and the writes go to `written`, at
    /// most `max_write` bytes each, so a driver must finish partial writes.
    struct Stream<S> {
        source: S,
        written: Vec<u8>,
        max_write: usize,
        /// Writes and flushes so far: past [`MAX_WRITES`] the test fails.
        writes: usize,
    }

    /// What a test stream's reads return, given everything written to the stream so far
    /// (which the source may take, as a server takes its input).
    trait Source {
        type Error: embedded_io::Error;
        fn read(&mut self, written: &mut Vec<u8>, buf: &mut [u8]) -> Result<usize, Self::Error>;
    }

    impl<S> Stream<S> {
        fn new(source: S, max_write: usize) -> Stream<S> {
            Stream {
                source,
                written: Vec::new(),
                max_write,
                writes: 0,
            }
        }

        /// Counts a write or a flush: a driver that writes or flushes again and again without
        /// reading (input never consumed, or output never marked written) fails, not hangs.
        fn count(&mut self) {
            self.writes += 1;
            assert!(
                self.writes < MAX_WRITES,
                "the driver loops without progress"
            );
        }
    }

    impl<S: Source> embedded_io::ErrorType for Stream<S> {
        type Error = S::Error;
    }

    impl<S: Source> Write for Stream<S> {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.count();
            let n = buf.len().min(self.max_write);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            self.count();
            Ok(())
        }
    }

    impl<S: Source> Read for Stream<S> {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            self.source.read(&mut self.written, buf)
        }
    }

    /// The server of every test here: the test iteration counts, the default deadlines.
    fn server() -> (ServerSession, ServerShared<TestRng, 8>) {
        let config = ServerConfig {
            min_iterations: TEST_ITERATIONS,
            unknown_user_iterations: TEST_ITERATIONS,
            ..ServerConfig::default()
        };
        (
            ServerSession::new(PeerAddr::ipv4([192, 0, 2, 1]), Instant::ZERO),
            ServerShared::new(config, TestRng::new(1), [7; 32]),
        )
    }

    /// A server session behind a stream, in the same thread: what the client wrote is handed
    /// to the server when the client reads, and the server's answer is what the read returns;
    /// with no answer the read ends the stream (`Ok(0)`), so a client waiting for an answer
    /// that was never asked for fails instead of blocking.
    struct Served<L = TestLedger> {
        server: ServerSession,
        shared: ServerShared<TestRng, 8>,
        ledger: Counted<L>,
        to_client: VecDeque<u8>,
    }

    /// More ledger requests than any conversation here makes.
    const MAX_LEDGER_REQUESTS: usize = 10_000;

    /// A ledger that counts its requests: a server that asks again and again without
    /// answering its client (a request handed out but never marked as handed out) fails the
    /// test instead of hanging it inside the server's drive loop.
    struct Counted<L> {
        ledger: L,
        requests: usize,
    }

    impl<L: Ledger> Ledger for Counted<L> {
        fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
            self.requests += 1;
            assert!(
                self.requests < MAX_LEDGER_REQUESTS,
                "the server asks the ledger without end"
            );
            self.ledger.execute(request, now)
        }
    }

    /// A client's stream to a server session with `ledger` (see [`Served`]).
    type Loopback<L = TestLedger> = Stream<Served<L>>;

    fn loopback<L: Ledger>(max_write: usize, ledger: L) -> Loopback<L> {
        let (server, shared) = server();
        let served = Served {
            server,
            shared,
            ledger: Counted {
                ledger,
                requests: 0,
            },
            to_client: VecDeque::new(),
        };
        Stream::new(served, max_write)
    }

    impl<L: Ledger> Source for Served<L> {
        type Error = core::convert::Infallible;
        fn read(&mut self, written: &mut Vec<u8>, buf: &mut [u8]) -> Result<usize, Self::Error> {
            if self.to_client.is_empty() {
                let to_client = &mut self.to_client;
                let used = self
                    .server
                    .drive(
                        &mut self.shared,
                        &mut self.ledger,
                        Instant::ZERO,
                        written,
                        |out: &[u8]| {
                            to_client.extend(out);
                            // Bounded: a server offering the same bytes again and again
                            // (output never marked written) fails the test, not hangs it.
                            assert!(
                                to_client.len() < 1 << 20,
                                "the server's output never drains"
                            );
                            Ok::<_, core::convert::Infallible>(out.len())
                        },
                        |_| {},
                    )
                    .unwrap();
                written.drain(..used);
            }
            let n = buf.len().min(self.to_client.len());
            for (slot, byte) in buf.iter_mut().zip(self.to_client.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    fn client_on<L: Ledger>(io: Loopback<L>) -> BlockingClient<Loopback<L>, TestRng> {
        let config = ClientConfig {
            min_iterations: TEST_ITERATIONS,
            ..ClientConfig::default()
        };
        BlockingClient::new(io, TestRng::new(2), config)
    }

    fn client(max_write: usize) -> BlockingClient<Loopback, TestRng> {
        client_on(loopback(max_write, TestLedger::new(Amount(10_000))))
    }

    /// A ledger that journals deposits one by one: every history page it gives ends with a
    /// deposit to the user, asked for or not (a `history` request asks for none).
    struct Depositing(TestLedger);

    impl Ledger for Depositing {
        fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
            let mut reply = self.0.execute(request, now);
            if let (LedgerRequest::History { user, .. }, LedgerReply::History(Ok(page))) =
                (request, &mut reply)
            {
                let deposit = HistoryEntry {
                    kind: EntryKind::Deposit,
                    to: user.clone(),
                    amount: Amount(10_000),
                    at: 7,
                };
                page.entries.push(deposit).unwrap();
            }
            reply
        }
    }

    /// A statement lists the deposits the ledger journals, verified; a history page never
    /// shows one, even from a ledger that gives one anyway (it is left out rather than shown
    /// as a transfer, and the page still verifies).
    #[test]
    fn statements_list_deposits_and_history_pages_never_do() {
        let mut c = client_on(loopback(
            usize::MAX,
            Depositing(TestLedger::new(Amount(10_000))),
        ));
        c.register("alice", "alice's password", TEST_ITERATIONS)
            .unwrap();
        c.register("bob", "bob's password", TEST_ITERATIONS)
            .unwrap();
        c.login("alice", "alice's password").unwrap();
        c.transfer("t-1", "bob", Amount(125)).unwrap();
        let statement = c.statement(0).unwrap();
        assert_eq!(statement.entries.len(), 2, "{statement:?}");
        assert!(statement.entries[0]
            .id()
            .is_some_and(|id| id.as_str() == "t-1"));
        let deposit = &statement.entries[1];
        assert_eq!(deposit.kind, EntryKind::Deposit);
        assert_eq!(
            (deposit.to.as_str(), deposit.amount, deposit.at),
            ("alice", Amount(10_000), 7)
        );
        let history = c.history(0).unwrap();
        assert_eq!(history.entries.len(), 1, "{history:?}");
        assert!(history.entries[0]
            .id()
            .is_some_and(|id| id.as_str() == "t-1"));
    }

    /// Every call of the blocking client, each answered with what the server verified, over
    /// a stream that takes five bytes per write.
    #[test]
    fn every_call_gets_its_verified_answer() {
        let mut c = client(5);
        c.register("alice", "alice's password", TEST_ITERATIONS)
            .unwrap();
        c.register("bob", "bob's password", TEST_ITERATIONS)
            .unwrap();
        assert_eq!(
            c.register("bob", "another password", TEST_ITERATIONS),
            Err(DriverError::Refused(ErrorCode::UserExists))
        );
        assert_eq!(
            c.login("alice", "not alice's password"),
            Err(DriverError::Refused(ErrorCode::AuthFailed))
        );
        c.login("alice", "alice's password").unwrap();
        assert_eq!(c.session().user().map(|u| u.as_str()), Some("alice"));
        // No nonces in hand: the call fetches them first, then spends one.
        assert_eq!(c.session().available_nonces(), 0);
        let receipt = c.transfer("t-1", "bob", Amount(125)).unwrap();
        assert_eq!(receipt.id.as_str(), "t-1");
        assert_eq!(receipt.to.as_str(), "bob");
        assert_eq!(receipt.amount, Amount(125));
        assert_eq!(receipt.result, Ok(()));
        assert_eq!(receipt.balance, Amount(9_875));
        assert_eq!(
            c.session().available_nonces(),
            usize::from(crate::driver::NONCE_REFILL) - 1
        );
        let refused = c.transfer("t-2", "bob", Amount(1_000_000)).unwrap();
        assert_eq!(refused.result, Err(ErrorCode::InsufficientFunds));
        assert_eq!(refused.balance, Amount(9_875));
        assert_eq!(c.balance().unwrap(), Amount(9_875));
        let history = c.history(0).unwrap();
        assert_eq!(history.entries.len(), 1);
        assert!(matches!(&history.entries[0].kind,
            EntryKind::Transfer { id, .. } if id.as_str() == "t-1"));
        let statement = c.statement(0).unwrap();
        assert!(statement
            .entries
            .iter()
            .any(|e| matches!(&e.kind, EntryKind::Transfer { id, .. } if id.as_str() == "t-1")));
        c.logout().unwrap();
        assert_eq!(c.session().user(), None);
        assert_eq!(
            c.balance(),
            Err(DriverError::Client(ClientError::NotLoggedIn))
        );
        // The stream given back is the one the calls used.
        let stream = c.into_inner();
        assert!(stream.writes > 0);
        assert!(stream.written.is_empty());
    }

    /// A call answered by the event of a request made earlier through `session()` says so
    /// rather than taking that answer for its own.
    #[test]
    fn an_answer_to_another_request_is_unexpected() {
        let mut c = client(usize::MAX);
        c.session().ping().unwrap();
        assert_eq!(
            c.register("alice", "alice's password", TEST_ITERATIONS),
            Err(DriverError::Unexpected)
        );
    }

    /// A stream that ends, or takes no bytes, is a closed connection, not a hang.
    #[test]
    fn a_closed_stream_is_an_error() {
        let mut c = client(0);
        assert_eq!(
            c.register("alice", "alice's password", TEST_ITERATIONS),
            Err(DriverError::Closed)
        );
        let mut c = client(usize::MAX);
        c.session().ping().unwrap();
        c.flush().unwrap();
        // The ping's answer is read and handed out; the next read finds the stream ended.
        assert_eq!(c.next_event(), Ok(ClientEvent::Pong));
        assert_eq!(c.next_event(), Err(DriverError::Closed));
    }

    /// A client that sent part of a line: reads give it, then time out.
    struct TimesOut(&'static [u8]);

    impl Source for TimesOut {
        type Error = embedded_io::ErrorKind;
        fn read(&mut self, _: &mut Vec<u8>, buf: &mut [u8]) -> Result<usize, Self::Error> {
            if self.0.is_empty() {
                return Err(embedded_io::ErrorKind::TimedOut);
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// When the stream's read times out past the login deadline, `serve` writes the whole
    /// `timeout` error before it returns the stream's error.
    #[test]
    fn a_read_timeout_past_the_deadline_writes_the_timeout_error() {
        // Three bytes per write: the driver must finish the frame.
        let mut io = Stream::new(TimesOut(b"{\"op\":\"pi"), 3);
        let (mut session, mut shared) = server();
        let mut ledger = TestLedger::new(Amount(0));
        let deadline = Instant::ZERO + ServerConfig::DEFAULT.login_deadline;
        // The clock reaches the deadline once the partial line has been read (the third
        // reading: the first pass, the pass that takes the line, the timed-out read).
        let mut readings = 0;
        let clock = || {
            readings += 1;
            if readings < 3 {
                Instant::ZERO
            } else {
                deadline
            }
        };
        let served = serve(&mut io, &mut session, &mut shared, &mut ledger, clock);
        assert_eq!(served, Err(embedded_io::ErrorKind::TimedOut));
        let answer = String::from_utf8(io.written).unwrap();
        assert!(
            answer.starts_with("{\"op\":\"error\",\"code\":\"timeout\"") && answer.ends_with('\n'),
            "{answer}"
        );
        assert_eq!(answer.matches('\n').count(), 1, "{answer}");
        assert!(session.is_closed());
    }
}
