//! A core [`ClientSession`] driven over a tokio [`TcpStream`]: the async twin of the core's
//! blocking client. It only moves bytes (`poll_transmit` out, `handle_input` in) and hands
//! back `poll_event`; every protocol decision is the session's.

use rand_core::OsRng;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use txsock_core::auth::{self, Verifier, SALT_LEN};
use txsock_core::crypto::Key;
use txsock_core::framing::MAX_RESPONSE;
use txsock_core::replay::DEFAULT_NONCES;
use txsock_core::session::{ClientConfig, ClientError, ClientEvent, ClientSession};
use txsock_core::ErrorCode;

/// Output buffer of a stress session: room for a whole pipeline of transfers (about 200
/// bytes each) before a flush.
const OUT: usize = 4096;
/// The longest request a session writes, with headroom (the core's `MAX_REQUEST`).
const MAX_REQUEST: usize = 384;

/// The client session the stress tool drives.
pub type StressSession = ClientSession<MAX_RESPONSE, DEFAULT_NONCES, OUT>;

/// Why a connection's conversation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// Socket error or the peer closed the connection.
    Io(String),
    /// No answer in time.
    Timeout,
    /// The session refused to send (a local limit or a failed session).
    Client(ClientError),
    /// The server refused the request, or closed the session with this code.
    Refused(ErrorCode),
    /// The server's answer did not verify.
    Integrity(String),
    /// An event this step did not expect.
    Unexpected,
}

impl ConnError {
    /// A short stable name for reports: the error code, or a kind.
    pub fn name(&self) -> String {
        match self {
            ConnError::Io(_) => "connection_lost".into(),
            ConnError::Timeout => "client_timeout".into(),
            ConnError::Client(_) => "client_error".into(),
            ConnError::Refused(code) => code.name().into(),
            ConnError::Integrity(_) => "integrity_failure".into(),
            ConnError::Unexpected => "unexpected_event".into(),
        }
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "connection: {e}"),
            ConnError::Timeout => f.write_str("no answer in time"),
            ConnError::Client(e) => write!(f, "client: {e}"),
            ConnError::Refused(code) => write!(f, "refused: {code}"),
            ConnError::Integrity(e) => write!(f, "integrity failure: {e}"),
            ConnError::Unexpected => f.write_str("unexpected answer"),
        }
    }
}

impl From<ClientError> for ConnError {
    fn from(e: ClientError) -> Self {
        ConnError::Client(e)
    }
}

/// How long one step of a conversation (connect, a login round trip) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A stress user: its name and the SCRAM key derived once from its password, so thousands of
/// logins cost one PBKDF2 (the session's provisioned-key login).
#[derive(Clone)]
pub struct Account {
    /// Username.
    pub user: String,
    /// Salt used at registration.
    pub salt: [u8; SALT_LEN],
    /// `SaltedPassword` for that salt.
    pub key: Key,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

impl Account {
    /// A new account description (runs PBKDF2 once).
    pub fn new(user: String, iterations: u32) -> Account {
        let mut salt = [0u8; SALT_LEN];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut salt);
        let password = format!("{user}-stress-password");
        let key = auth::salted_password(password.as_bytes(), &salt, iterations);
        Account {
            user,
            salt,
            key,
            iterations,
        }
    }

    /// The verifier a registration sends.
    pub fn verifier(&self) -> Verifier {
        Verifier::from_salted_password(&self.key, &self.salt, self.iterations)
    }
}

/// The TLS every new [`Conn`] of this run uses, if any (set once, before the first).
static TLS: std::sync::OnceLock<crate::tls::ClientTls> = std::sync::OnceLock::new();

/// Makes every later [`Conn::connect`] use TLS with `tls`.
pub fn use_tls(tls: crate::tls::ClientTls) {
    // A second call (never made: one run per process) would keep the first settings.
    let _ = TLS.set(tls);
}

/// A connection's stream: plaintext, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One client connection.
pub struct Conn {
    stream: Stream,
    /// The protocol engine.
    pub session: StressSession,
    buf: Box<[u8; 4096]>,
    start: usize,
    end: usize,
}

impl Conn {
    /// Connects to `addr`; the session accepts `iterations` or more at login.
    pub async fn connect(addr: SocketAddr, iterations: u32) -> Result<Conn, ConnError> {
        Conn::connect_with(addr, iterations, None).await
    }

    /// Connects with a receive buffer of `recv_buffer` bytes (a small window makes a client
    /// that does not read visible to the server quickly).
    pub async fn connect_with(
        addr: SocketAddr,
        iterations: u32,
        recv_buffer: Option<u32>,
    ) -> Result<Conn, ConnError> {
        Conn::connect_from(addr, None, iterations, recv_buffer).await
    }

    /// Connects from the local address `source` (any port) if given: one source address
    /// has about 28,000 ephemeral ports towards one server address, so more connections
    /// than that come from several loopback addresses.
    pub async fn connect_from(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        iterations: u32,
        recv_buffer: Option<u32>,
    ) -> Result<Conn, ConnError> {
        let io = |e: std::io::Error| ConnError::Io(e.to_string());
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(io)?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).map_err(io)?;
        }
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0)).map_err(io)?;
        }
        let stream = tokio::time::timeout(STEP_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| ConnError::Timeout)?
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
        let stream = match TLS.get() {
            None => Stream::Plain(stream),
            Some(tls) => {
                let handshake = tls.connector().connect(tls.name().clone(), stream);
                let stream = tokio::time::timeout(STEP_TIMEOUT, handshake)
                    .await
                    .map_err(|_| ConnError::Timeout)?
                    .map_err(|e| ConnError::Io(crate::tls::explain(&e, tls.name()).to_string()))?;
                Stream::Tls(Box::new(stream))
            }
        };
        let config = ClientConfig {
            min_iterations: iterations,
            ..ClientConfig::default()
        };
        Ok(Conn {
            stream,
            session: ClientSession::new(config),
            buf: Box::new([0; 4096]),
            start: 0,
            end: 0,
        })
    }

    /// Whether the session's output buffer has room for one more request without a flush.
    pub fn has_room(&self) -> bool {
        self.session.poll_transmit().len() + MAX_REQUEST <= OUT
    }

    /// Writes everything the session has to send.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        while !self.session.poll_transmit().is_empty() {
            let n = self
                .stream
                .write(self.session.poll_transmit())
                .await
                .map_err(|e| ConnError::Io(e.to_string()))?;
            if n == 0 {
                return Err(ConnError::Io("closed".into()));
            }
            self.session.advance_transmit(n);
        }
        // TLS may hold encrypted bytes the socket did not take yet; plain TCP holds none.
        self.stream
            .flush()
            .await
            .map_err(|e| ConnError::Io(e.to_string()))
    }

    /// The next event: from the answers already read if they hold one, else after writing
    /// everything the session has to send and reading more. Requests queued while answers
    /// read together are handled (a pipeline refilled after each receipt) thus leave in one
    /// write, and the answers to them arrive in few reads.
    pub async fn next_event(&mut self) -> Result<ClientEvent, ConnError> {
        loop {
            if let Some(event) = self.session.poll_event() {
                return Ok(event);
            }
            if self.start == self.end {
                self.flush().await?;
                let n = self
                    .stream
                    .read(&mut self.buf[..])
                    .await
                    .map_err(|e| ConnError::Io(e.to_string()))?;
                if n == 0 {
                    return Err(ConnError::Io("closed by the server".into()));
                }
                self.start = 0;
                self.end = n;
            }
            let taken = self.session.handle_input(&self.buf[self.start..self.end]);
            self.start += taken;
            if taken == 0 && self.start != self.end {
                // The session takes no more until its output is written.
                self.flush().await?;
            }
        }
    }

    /// The next event, or [`ConnError::Timeout`] after `STEP_TIMEOUT`.
    async fn step(&mut self) -> Result<ClientEvent, ConnError> {
        match tokio::time::timeout(STEP_TIMEOUT, self.next_event()).await {
            Ok(Ok(ClientEvent::Refused { code, .. })) | Ok(Ok(ClientEvent::Closed { code })) => {
                Err(ConnError::Refused(code))
            }
            Ok(Ok(ClientEvent::Integrity(e))) => Err(ConnError::Integrity(e.to_string())),
            Ok(other) => other,
            Err(_) => Err(ConnError::Timeout),
        }
    }

    /// Registers `account`; `user_exists` counts as success (a rerun against the same server).
    pub async fn register(&mut self, account: &Account) -> Result<(), ConnError> {
        let user = txsock_core::Username::parse(&account.user)
            .map_err(|e| ConnError::Client(ClientError::InvalidInput(e)))?;
        self.session
            .register_with_verifier(&user, &account.verifier())?;
        match self.step().await {
            Ok(ClientEvent::Registered) | Err(ConnError::Refused(ErrorCode::UserExists)) => Ok(()),
            Ok(_) => Err(ConnError::Unexpected),
            Err(e) => Err(e),
        }
    }

    /// Logs in as `account` with its provisioned key.
    pub async fn login(&mut self, account: &Account) -> Result<(), ConnError> {
        self.session.login(&mut OsRng, &account.user)?;
        match self.step().await? {
            ClientEvent::Challenge { .. } => {}
            _ => return Err(ConnError::Unexpected),
        }
        self.session.answer_with_key(&account.key)?;
        match self.step().await? {
            ClientEvent::LoggedIn => Ok(()),
            _ => Err(ConnError::Unexpected),
        }
    }

    /// Asks for `count` nonces and waits for them.
    pub async fn nonces(&mut self, count: u8) -> Result<usize, ConnError> {
        self.session.request_nonces(count)?;
        match self.step().await? {
            ClientEvent::Nonces { available } => Ok(available),
            _ => Err(ConnError::Unexpected),
        }
    }

    /// The raw stream, for attacks that write bytes outside the protocol. Bytes the session
    /// has read but not consumed are returned too.
    pub fn into_raw(self) -> (TcpStream, Vec<u8>) {
        let rest = self.buf[self.start..self.end].to_vec();
        match self.stream {
            Stream::Plain(stream) => (stream, rest),
            // Invariant: `stress::run` refuses --tls for the attacks, the only callers.
            Stream::Tls(_) => unreachable!("raw bytes over TLS: --tls is refused for attacks"),
        }
    }
}
