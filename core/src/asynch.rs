//! Async drivers over [`embedded_io_async`] streams (feature `async`), for embassy and any other
//! executor: [`serve`] runs one [`ServerSession`] over a stream until it closes, [`AsyncClient`]
//! wraps a [`ClientSession`] with one async call per operation.
//!
//! They are the [`blocking`](crate::blocking) drivers with awaits, and share everything with
//! them but the waiting: the drive loop ([`DriveLoop`], also behind [`ServerSession::drive`]),
//! the read buffer, the error type ([`AsyncError`] is the blocking drivers' error), and what
//! each client call waits for. Three small traits stand for what the executor and the board
//! provide, so that this crate depends on no executor:
//!
//! - [`AsyncLedger`]: a ledger that may await its storage (a flash ledger on an async flash
//!   driver, a ledger shared between tasks behind an async mutex). Every synchronous
//!   [`Ledger`] is one, answering at once.
//! - [`SharedState`]: how a session reaches the [`ServerShared`] state (policy, RNG, login
//!   throttle) it shares with the server's other sessions. It is held only for one
//!   synchronous `handle_*` call at a time, never across an await.
//! - [`Timer`]: the executor's clock and sleep, for [`ServerSession::poll_timeout`]'s deadlines.
//!
//! Nothing here blocks: a ledger that waits for flash, a stream with no data and a deadline
//! far away all yield to the executor.

use crate::amount::Amount;
use crate::driver::{expect, pick, InputBuffer, NONCE_REFILL};
use crate::ledger::{HistoryPage, Ledger, LedgerReply, LedgerRequest};
use crate::session::client::{ClientConfig, ClientEvent, ClientSession, ReceiptInfo};
use crate::session::drive::{DriveLoop, DriveStep};
use crate::session::server::{ServerEvent, ServerSession, ServerShared};
use crate::time::Instant;
use core::cell::RefCell;
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;
use embedded_io_async::{Read, Write};
use rand_core::{CryptoRng, RngCore};

/// Error returned by the async drivers: the drivers' shared
/// [`DriverError`](crate::driver::DriverError).
pub use crate::driver::DriverError as AsyncError;

/// A ledger whose answers may take a while: [`execute`](Self::execute) is awaited, and the
/// executor runs other tasks meanwhile. The contract is [`Ledger`]'s, request by request
/// ([`LedgerRequest`]).
///
/// Every [`Ledger`] is an `AsyncLedger` that answers at once, so a [`MemLedger`](crate::MemLedger)
/// (or any synchronous ledger) serves as it is.
// The executors this is for (embassy's) run tasks on one thread: the returned future need not
// be `Send`, which is what the lint warns about.
#[allow(async_fn_in_trait)]
pub trait AsyncLedger {
    /// Executes `request` and answers it, following the contract on [`LedgerRequest`].
    async fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply;
}

impl<L: Ledger + ?Sized> AsyncLedger for L {
    async fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
        Ledger::execute(self, request, now)
    }
}

/// Access to the [`ServerShared`] state that all of a server's sessions share.
///
/// The drivers call [`with`](Self::with) for one synchronous session call at a time (a few
/// HMACs at most) and never await inside it, so a blocking mutex fits: a [`RefCell`] when
/// every session runs on one executor without preemption (implemented here), or a
/// critical-section mutex when sessions run at several interrupt priorities.
pub trait SharedState<R, const ADDRS: usize> {
    /// Runs `f` with exclusive access to the shared state.
    fn with<T>(&self, f: impl FnOnce(&mut ServerShared<R, ADDRS>) -> T) -> T;
}

impl<R, const ADDRS: usize> SharedState<R, ADDRS> for RefCell<ServerShared<R, ADDRS>> {
    fn with<T>(&self, f: impl FnOnce(&mut ServerShared<R, ADDRS>) -> T) -> T {
        // Cannot panic: the drivers never call `with` from inside `f`, and `f` does not await,
        // so no other borrow can be live.
        f(&mut self.borrow_mut())
    }
}

/// The executor's clock and sleep, as [`serve`] needs them for deadlines.
///
/// With embassy: `now` is `embassy_time::Instant::now().as_millis()` and `sleep_until` is
/// `embassy_time::Timer::at(..)`. The clock must be monotonic; its epoch is free (boot).
#[allow(async_fn_in_trait)]
pub trait Timer {
    /// The current time.
    fn now(&self) -> Instant;
    /// Completes at `deadline` or later (at once if it has passed).
    async fn sleep_until(&self, deadline: Instant);
}

/// Runs the drive loop ([`DriveLoop`], the loop of [`ServerSession::drive`]) over `input` with
/// awaits: answers ledger requests from `ledger`, hands events to `on_event`, and writes the
/// session's output to `io` until the session makes no more progress. Returns the input
/// bytes consumed; the rest must be offered again once output has drained.
///
/// If `io` stops taking bytes (a write returns 0: the peer is gone), the loop ends with the
/// output still pending in the session.
pub async fn drive<
    T,
    R,
    L,
    S,
    C,
    const FRAME: usize,
    const NONCES: usize,
    const OUT: usize,
    const ADDRS: usize,
>(
    io: &mut T,
    session: &mut ServerSession<FRAME, NONCES, OUT>,
    shared: &S,
    ledger: &mut L,
    timer: &C,
    input: &[u8],
    mut on_event: impl FnMut(ServerEvent),
) -> Result<usize, T::Error>
where
    T: Write,
    R: RngCore + CryptoRng,
    L: AsyncLedger + ?Sized,
    S: SharedState<R, ADDRS> + ?Sized,
    C: Timer + ?Sized,
{
    let mut steps = DriveLoop::new();
    loop {
        let now = timer.now();
        match shared.with(|s| steps.next(session, s, now, input)) {
            DriveStep::Ledger(request) => {
                let reply = ledger.execute(&request, now).await;
                let now = timer.now();
                shared.with(|s| steps.answer(session, s, now, reply));
            }
            DriveStep::Event(event) => on_event(event),
            DriveStep::Transmit => {
                let n = io.write(session.poll_transmit()).await?;
                steps.transmitted(session, n);
            }
            DriveStep::Done { consumed } => return Ok(consumed),
        }
    }
}

/// What ended a wait for input.
enum Wake<E> {
    Read(Result<usize, E>),
    Deadline,
}

/// Reads into `buf`, or gives up at `deadline` (never, if `None`).
async fn read_until<T: Read + ?Sized, C: Timer + ?Sized>(
    io: &mut T,
    buf: &mut [u8],
    timer: &C,
    deadline: Option<Instant>,
) -> Wake<T::Error> {
    let mut read = pin!(io.read(buf));
    let mut sleep = pin!(async {
        match deadline {
            Some(at) => timer.sleep_until(at).await,
            None => core::future::pending().await,
        }
    });
    poll_fn(|cx| {
        if let Poll::Ready(result) = read.as_mut().poll(cx) {
            return Poll::Ready(Wake::Read(result));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Deadline);
        }
        Poll::Pending
    })
    .await
}

/// Runs `session` over `io` until it closes or the peer hangs up: the async counterpart of
/// [`blocking::serve`](crate::blocking::serve), with the same loop ([`drive`]) and these
/// differences, all about waiting:
///
/// - the ledger is awaited ([`AsyncLedger`]), and the shared state is reached through
///   [`SharedState`], so many sessions run as tasks of one executor;
/// - deadlines are the session's own: while waiting for input it also waits for
///   [`ServerSession::poll_timeout`] on `timer`, then calls
///   [`handle_timeout`](ServerSession::handle_timeout), writes the `timeout` error and returns
///   `Ok` (the blocking driver needs a stream read timeout instead);
/// - events go to `on_event` instead of being dropped.
///
/// Returns `Ok` when the session has closed and its output is written, or when the peer
/// closed the stream (a read of 0 bytes, or a write that takes none); a stream error ends it
/// with `Err`. The caller closes the stream afterwards. A read cut short by a deadline is
/// dropped, so `io`'s `read` must be cancel-safe (embassy-net's `TcpSocket`'s is).
pub async fn serve<
    T,
    R,
    L,
    S,
    C,
    const FRAME: usize,
    const NONCES: usize,
    const OUT: usize,
    const ADDRS: usize,
>(
    io: &mut T,
    session: &mut ServerSession<FRAME, NONCES, OUT>,
    shared: &S,
    ledger: &mut L,
    timer: &C,
    mut on_event: impl FnMut(ServerEvent),
) -> Result<(), T::Error>
where
    T: Read + Write,
    R: RngCore + CryptoRng,
    L: AsyncLedger + ?Sized,
    S: SharedState<R, ADDRS> + ?Sized,
    C: Timer + ?Sized,
{
    let mut input = InputBuffer::new();
    loop {
        let used = drive(
            io,
            session,
            shared,
            ledger,
            timer,
            input.pending(),
            &mut on_event,
        )
        .await?;
        input.consume(used);
        io.flush().await?;
        if session.is_closed() {
            return Ok(());
        }
        if !session.poll_transmit().is_empty() {
            // A write took nothing: the stream is closed for writing.
            return Ok(());
        }
        if input.is_empty() {
            let deadline = shared.with(|s| session.poll_timeout(s));
            match read_until(io, input.space(), timer, deadline).await {
                Wake::Read(Ok(0)) => return Ok(()),
                Wake::Read(Ok(n)) => input.filled(n),
                Wake::Read(Err(e)) => return Err(e),
                Wake::Deadline => {
                    let now = timer.now();
                    shared.with(|s| session.handle_timeout(s, now));
                }
            }
        }
    }
}

/// A client session on an async stream: [`BlockingClient`](crate::blocking::BlockingClient)
/// with awaits. A call waits for the server as long as it takes; bound it with the executor's
/// timeout (`embassy_time::with_timeout`) where that matters.
pub struct AsyncClient<T, R> {
    io: T,
    rng: R,
    session: ClientSession,
    input: InputBuffer,
}

impl<T: Read + Write, R: RngCore + CryptoRng> AsyncClient<T, R> {
    /// Wraps a connected stream.
    pub fn new(io: T, rng: R, config: ClientConfig) -> Self {
        AsyncClient {
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
    pub async fn flush(&mut self) -> Result<(), AsyncError<T::Error>> {
        while !self.session.poll_transmit().is_empty() {
            let n = self
                .io
                .write(self.session.poll_transmit())
                .await
                .map_err(AsyncError::Io)?;
            if n == 0 {
                return Err(AsyncError::Closed);
            }
            self.session.advance_transmit(n);
        }
        self.io.flush().await.map_err(AsyncError::Io)
    }

    /// Flushes, then reads until the session has an event.
    pub async fn next_event(&mut self) -> Result<ClientEvent, AsyncError<T::Error>> {
        loop {
            if let Some(event) = self.session.poll_event() {
                return Ok(event);
            }
            self.flush().await?;
            if self.input.is_empty() {
                let n = self
                    .io
                    .read(self.input.space())
                    .await
                    .map_err(AsyncError::Io)?;
                if n == 0 {
                    return Err(AsyncError::Closed);
                }
                self.input.filled(n);
            }
            let used = self.session.handle_input(self.input.pending());
            self.input.consume(used);
        }
    }

    async fn expect<V>(
        &mut self,
        pick: impl FnOnce(ClientEvent) -> Option<V>,
    ) -> Result<V, AsyncError<T::Error>> {
        expect(self.next_event().await?, pick)
    }

    /// Registers `user`; PBKDF2 with `iterations` runs here (and holds the executor while it
    /// does: register from a low-priority task, or provision users with a verifier).
    pub async fn register(
        &mut self,
        user: &str,
        password: &str,
        iterations: u32,
    ) -> Result<(), AsyncError<T::Error>> {
        self.session
            .register(&mut self.rng, user, password, iterations)?;
        self.expect(pick::registered).await
    }

    /// Logs in with a password (PBKDF2 runs here, as in [`register`](Self::register)).
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), AsyncError<T::Error>> {
        self.session.login(&mut self.rng, user)?;
        self.expect(pick::challenge).await?;
        self.session.answer_with_password(password)?;
        self.expect(pick::logged_in).await
    }

    /// Sends one transfer and waits for its verified receipt (fetching nonces if needed).
    /// A refusal arrives as a receipt whose `result` is `Err`.
    pub async fn transfer(
        &mut self,
        id: &str,
        to: &str,
        amount: Amount,
    ) -> Result<ReceiptInfo, AsyncError<T::Error>> {
        if self.session.available_nonces() == 0 {
            self.session.request_nonces(NONCE_REFILL)?;
            self.expect(pick::nonces).await?;
        }
        self.session.transfer(id, to, amount)?;
        self.expect(pick::receipt).await
    }

    /// The verified balance.
    pub async fn balance(&mut self) -> Result<Amount, AsyncError<T::Error>> {
        self.session.balance()?;
        self.expect(pick::balance).await
    }

    /// A verified page of history.
    pub async fn history(&mut self, offset: u32) -> Result<HistoryPage, AsyncError<T::Error>> {
        self.session.history(offset)?;
        self.expect(pick::history).await
    }

    /// A verified page of the statement (history with deposits).
    pub async fn statement(&mut self, offset: u32) -> Result<HistoryPage, AsyncError<T::Error>> {
        self.session.statement(offset)?;
        self.expect(pick::history).await
    }

    /// Logs out.
    pub async fn logout(&mut self) -> Result<(), AsyncError<T::Error>> {
        self.session.logout()?;
        self.expect(pick::logged_out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockout::PeerAddr;
    use crate::selftest::{TestLedger, TestRng, TEST_ITERATIONS};
    use crate::session::server::ServerConfig;
    use core::task::{Context, Waker};
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    use std::vec::Vec;

    /// Polls `future` until it is ready. Every future here makes progress whenever it is polled
    /// again, so a no-op waker and a bounded loop are the whole executor.
    fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1_000_000 {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
        panic!("the future did not finish");
    }

    /// Polls both until both are ready.
    async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
        let (mut a, mut b) = (pin!(a), pin!(b));
        let (mut a_out, mut b_out) = (None, None);
        poll_fn(|cx| {
            if a_out.is_none() {
                if let Poll::Ready(out) = a.as_mut().poll(cx) {
                    a_out = Some(out);
                }
            }
            if b_out.is_none() {
                if let Poll::Ready(out) = b.as_mut().poll(cx) {
                    b_out = Some(out);
                }
            }
            if a_out.is_some() && b_out.is_some() {
                Poll::Ready((a_out.take().unwrap(), b_out.take().unwrap()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    #[derive(Default)]
    struct Wire {
        bytes: RefCell<VecDeque<u8>>,
        closed: Cell<bool>,
        /// Everything that ever crossed this wire.
        log: RefCell<Vec<u8>>,
        /// Writes and flushes of the end that sends on this wire (see [`MAX_FLUSHES`]).
        flushes: Cell<usize>,
    }

    /// More writes and flushes than any conversation here needs: a driver past it loops
    /// without making progress (flushing without reading, or writing the same bytes again
    /// and again), and the test fails instead of hanging.
    const MAX_FLUSHES: usize = 100_000;

    /// Counts a write or a flush; fails past [`MAX_FLUSHES`].
    fn count_flush(flushes: &Cell<usize>) {
        flushes.set(flushes.get() + 1);
        assert!(
            flushes.get() < MAX_FLUSHES,
            "the driver loops without making progress"
        );
    }

    /// One end of an in-memory duplex stream; dropping it closes its sending side.
    struct End {
        rx: Rc<Wire>,
        tx: Rc<Wire>,
    }

    fn duplex() -> (End, End) {
        let (a, b) = (Rc::new(Wire::default()), Rc::new(Wire::default()));
        (
            End {
                rx: a.clone(),
                tx: b.clone(),
            },
            End { rx: b, tx: a },
        )
    }

    impl Drop for End {
        fn drop(&mut self) {
            self.tx.closed.set(true);
        }
    }

    impl embedded_io_async::ErrorType for End {
        type Error = core::convert::Infallible;
    }

    impl Read for End {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            poll_fn(|_| {
                let mut bytes = self.rx.bytes.borrow_mut();
                if bytes.is_empty() {
                    return if self.rx.closed.get() {
                        Poll::Ready(Ok(0))
                    } else {
                        Poll::Pending
                    };
                }
                let n = buf.len().min(bytes.len());
                for (slot, byte) in buf.iter_mut().zip(bytes.drain(..n)) {
                    *slot = byte;
                }
                Poll::Ready(Ok(n))
            })
            .await
        }
    }

    impl Write for End {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            count_flush(&self.tx.flushes);
            if self.tx.closed.get() {
                return Ok(0);
            }
            self.tx.bytes.borrow_mut().extend(buf);
            self.tx.log.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        async fn flush(&mut self) -> Result<(), Self::Error> {
            count_flush(&self.tx.flushes);
            Ok(())
        }
    }

    /// A clock stopped at `now`; sleeping completes only once the deadline has passed.
    struct StoppedClock {
        now: Instant,
    }

    impl Timer for StoppedClock {
        fn now(&self) -> Instant {
            self.now
        }
        async fn sleep_until(&self, deadline: Instant) {
            poll_fn(|_| {
                if self.now >= deadline {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        }
    }

    /// A ledger on slow storage: every answer takes two polls, so the driver must await it.
    struct SlowLedger {
        inner: TestLedger,
        awaited: usize,
    }

    impl AsyncLedger for SlowLedger {
        async fn execute(&mut self, request: &LedgerRequest, now: Instant) -> LedgerReply {
            let mut ready = false;
            poll_fn(|_| {
                if ready {
                    Poll::Ready(())
                } else {
                    ready = true;
                    Poll::Pending
                }
            })
            .await;
            self.awaited += 1;
            Ledger::execute(&mut self.inner, request, now)
        }
    }

    fn shared_state() -> ServerShared<TestRng, 8> {
        let config = ServerConfig {
            min_iterations: TEST_ITERATIONS,
            unknown_user_iterations: TEST_ITERATIONS,
            ..ServerConfig::default()
        };
        ServerShared::new(config, TestRng::new(1), [7; 32])
    }

    fn client_config() -> ClientConfig {
        ClientConfig {
            min_iterations: TEST_ITERATIONS,
            ..ClientConfig::default()
        }
    }

    /// A whole conversation through the async client and the async server, with a ledger
    /// that makes the driver wait: then the same client bytes through the blocking driver,
    /// which must answer byte for byte the same (one drive loop, two drivers).
    #[test]
    fn async_server_and_client_agree_with_the_blocking_driver() {
        let (server_end, client_end) = duplex();
        let client_log = server_end.rx.clone();
        let server_log = client_end.rx.clone();
        let shared = RefCell::new(shared_state());
        let mut ledger = SlowLedger {
            inner: TestLedger::new(Amount(10_000)),
            awaited: 0,
        };
        let clock = StoppedClock { now: Instant::ZERO };
        let mut events = Vec::new();
        let peer = PeerAddr::ipv4([192, 0, 2, 1]);
        let mut session: ServerSession = ServerSession::new(peer, Instant::ZERO);
        let client = async {
            let mut c = AsyncClient::new(client_end, TestRng::new(2), client_config());
            c.register("alice", "alice's password", TEST_ITERATIONS)
                .await
                .unwrap();
            c.register("bob", "bob's password", TEST_ITERATIONS)
                .await
                .unwrap();
            c.login("alice", "alice's password").await.unwrap();
            assert_eq!(c.session().user().map(|u| u.as_str()), Some("alice"));
            let receipt = c.transfer("t-1", "bob", Amount(125)).await.unwrap();
            assert_eq!(receipt.result, Ok(()));
            assert_eq!(receipt.balance, Amount(9_875));
            let again = c.transfer("t-1", "bob", Amount(125)).await.unwrap();
            assert_eq!(again.balance, Amount(9_875), "a retried id moves nothing");
            assert_eq!(c.balance().await.unwrap(), Amount(9_875));
            assert_eq!(c.history(0).await.unwrap().entries.len(), 1);
            let statement = c.statement(0).await.unwrap();
            assert!(statement
                .entries
                .iter()
                .any(|e| e.id().is_some_and(|id| id.as_str() == "t-1")));
            c.logout().await.unwrap();
            assert_eq!(
                c.balance().await,
                Err(AsyncError::Client(crate::session::ClientError::NotLoggedIn))
            );
        };
        let mut server_end = server_end;
        let server = serve(
            &mut server_end,
            &mut session,
            &shared,
            &mut ledger,
            &clock,
            |e| events.push(e),
        );
        let (served, ()) = block_on(join(server, client));
        assert_eq!(served, Ok(()), "the server ends when the client hangs up");
        // Two registrations, credentials, the login, two transfers, the balance, the history,
        // the statement.
        assert_eq!(ledger.awaited, 9, "every ledger request was awaited");
        assert!(events.contains(&ServerEvent::LoggedIn {
            user: crate::Username::parse("alice").unwrap()
        }));
        drop(server_end);

        // The same client bytes through the blocking driver, same RNG seed, same clock.
        let client_bytes = client_log.log.borrow().clone();
        let async_answer = server_log.log.borrow().clone();
        let mut stream = Recorded {
            input: &client_bytes,
            output: Vec::new(),
            flushes: Cell::new(0),
        };
        let mut shared = shared_state();
        let mut ledger = TestLedger::new(Amount(10_000));
        let mut session: ServerSession = ServerSession::new(peer, Instant::ZERO);
        crate::blocking::serve(&mut stream, &mut session, &mut shared, &mut ledger, || {
            Instant::ZERO
        })
        .unwrap();
        assert!(!async_answer.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&stream.output),
            String::from_utf8_lossy(&async_answer)
        );
    }

    /// A recorded client: reads give `input` in 100-byte pieces, then end of stream.
    struct Recorded<'a> {
        input: &'a [u8],
        output: Vec<u8>,
        flushes: Cell<usize>,
    }

    impl embedded_io::ErrorType for Recorded<'_> {
        type Error = core::convert::Infallible;
    }

    impl embedded_io::Read for Recorded<'_> {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = buf.len().min(self.input.len()).min(100);
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Ok(n)
        }
    }

    impl embedded_io::Write for Recorded<'_> {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            count_flush(&self.flushes);
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            count_flush(&self.flushes);
            Ok(())
        }
    }

    /// A client that connects and says nothing: at the login deadline the server writes the
    /// `timeout` error and ends, without the stream ever returning.
    #[test]
    fn a_silent_client_gets_the_timeout_at_the_login_deadline() {
        let (mut server_end, client_end) = duplex();
        let shared = RefCell::new(shared_state());
        let mut ledger = TestLedger::new(Amount(0));
        let mut session: ServerSession = ServerSession::new(PeerAddr([0; 16]), Instant::ZERO);
        let deadline = Instant::ZERO + ServerConfig::DEFAULT.login_deadline;
        // Before the deadline: the server keeps waiting.
        let early = StoppedClock {
            now: Instant::from_millis(deadline.millis() - 1),
        };
        let mut cx = Context::from_waker(Waker::noop());
        {
            let mut served = pin!(serve(
                &mut server_end,
                &mut session,
                &shared,
                &mut ledger,
                &early,
                |_| {}
            ));
            for _ in 0..100 {
                assert!(served.as_mut().poll(&mut cx).is_pending());
            }
        }
        let late = StoppedClock { now: deadline };
        let mut events = Vec::new();
        let served = block_on(serve(
            &mut server_end,
            &mut session,
            &shared,
            &mut ledger,
            &late,
            |e| events.push(e),
        ));
        assert_eq!(served, Ok(()));
        assert!(session.is_closed());
        let answer = client_end.rx.log.borrow().clone();
        let answer = String::from_utf8(answer).unwrap();
        assert!(
            answer.starts_with("{\"op\":\"error\",\"code\":\"timeout\""),
            "{answer}"
        );
        assert_eq!(
            events,
            [ServerEvent::Closing {
                code: crate::ErrorCode::Timeout
            }]
        );
    }

    /// A peer that closes its side mid-line ends the session with `Ok`, having sent nothing.
    #[test]
    fn a_peer_that_hangs_up_ends_the_session() {
        let (mut server_end, mut client_end) = duplex();
        block_on(client_end.write(b"{\"op\":\"pi")).unwrap();
        drop(client_end);
        let shared = RefCell::new(shared_state());
        let mut ledger = TestLedger::new(Amount(0));
        let mut session: ServerSession = ServerSession::new(PeerAddr([0; 16]), Instant::ZERO);
        let clock = StoppedClock { now: Instant::ZERO };
        let served = block_on(serve(
            &mut server_end,
            &mut session,
            &shared,
            &mut ledger,
            &clock,
            |_| {},
        ));
        assert_eq!(served, Ok(()));
        assert!(server_end.tx.log.borrow().is_empty());
    }
}
