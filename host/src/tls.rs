//! TLS for the host: rustls, TLS 1.3 only, with the *ring* crypto provider, under the
//! unchanged protocol (`docs/PROTOCOL.md` §16: the MAC, nonce and receipt layer stays end to
//! end; TLS adds confidentiality and server authentication on the hop it covers).
//!
//! What lives here, so that `serve`, `client`, `stress`, `mitm` and `demo` only hook in:
//! - the server's configuration, whose certificate is [reloaded](ServerTls::reload) in place
//!   (on SIGHUP) without touching the connections already open;
//! - [`Transport`], what the server's connection loop needs of a plaintext or TLS stream;
//! - the client's configuration (`--ca FILE` or the system's roots), its blocking
//!   [`ClientStream`] and the sentences that explain each TLS failure ([`TlsError`]);
//! - development certificates ([`dev_certificate`], for `txsock cert self-signed`).
//!
//! Why *ring* and not aws-lc-rs: ring needs only the C compiler the bundled SQLite needs
//! already and builds in seconds; aws-lc-rs compiles the AWS-LC C library (cmake, and nasm on
//! Windows), which takes minutes on the development machine and grows the binary. TLS 1.3 with
//! X25519/P-256 and AES-GCM/ChaCha20 is all txsock needs; what ring lacks (the post-quantum
//! hybrid key exchange, FIPS) is not asked for.

use anyhow::{bail, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The only protocol version offered or accepted: TLS 1.3 (no downgrade to older versions,
/// no renegotiation, forward secrecy always).
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The crypto provider every TLS configuration here uses.
fn provider() -> Arc<CryptoProvider> {
    // Deprecated in rustls 0.23.48 because ring has no post-quantum key exchange: a choice
    // made on purpose (see the module doc), and one line to change.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS failure explained in words (the client's exit status 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    /// The [`TlsError`] inside an I/O error, if it carries one.
    pub fn within(e: &io::Error) -> Option<&TlsError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<TlsError>())
    }
}

/// Whether `bytes`, the first a peer sent, are a TLS record (handshake or alert, record
/// version 3.x) rather than a txsock frame, which is JSON text and never starts with a
/// control character.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}

// ---------------------------------------------------------------------------------------
// Server

/// The certificate and key files, and what was last loaded from them.
#[derive(Debug)]
struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    fn current(&self) -> Arc<CertifiedKey> {
        // A panic while replacing the key cannot leave it half-written (it is one Arc).
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads a PEM certificate chain and private key and checks that they belong together.
fn load_certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "{} holds no certificate (expected PEM, `-----BEGIN CERTIFICATE-----`)",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the private key {} (expected one PEM private key): {e}",
            key.display()
        )
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        anyhow::anyhow!(
            "the key {} does not go with the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

/// The server's TLS: TLS 1.3 only, no client certificates, a certificate that can be
/// replaced while serving.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    certificate: Arc<Certificate>,
}

impl ServerTls {
    /// Loads the PEM certificate chain `cert` (leaf first) and private key `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls> {
        let provider = provider();
        let loaded = load_certified_key(cert, key, &provider)?;
        let certificate = Arc::new(Certificate {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(loaded)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .context("TLS 1.3 with the ring provider")?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        // txsock clients never resume a TLS session (a reconnect logs in again anyway), so
        // sending tickets after every handshake would only cost bytes.
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            certificate,
        })
    }

    /// Reads the certificate and key files again; new handshakes use them from now on, and
    /// connections already open keep theirs. On error the old certificate stays in use.
    pub fn reload(&self) -> Result<()> {
        let loaded = load_certified_key(
            &self.certificate.cert,
            &self.certificate.key,
            &self.config.crypto_provider().clone(),
        )?;
        *self
            .certificate
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// The acceptor for one handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// The TLS options of `txsock serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeTlsArgs {
    /// Serve TLS 1.3 only, with this certificate chain (PEM, the server's certificate
    /// first); needs --tls-key. SIGHUP reads both files again: new connections get the new
    /// certificate, open ones keep theirs. `txsock cert self-signed` makes one for testing.
    #[arg(
        long,
        env = "TXSOCK_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "TXSOCK_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve plaintext on a non-loopback address: anyone on the path reads names, amounts
    /// and balances (the MACs still stop changes). Without TLS, `serve` refuses such an
    /// address unless given this; loopback addresses are plaintext by default.
    #[arg(long, env = "TXSOCK_PLAINTEXT", conflicts_with = "tls_cert",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = clap::ArgAction::Set)]
    pub plaintext: bool,
}

impl ServeTlsArgs {
    /// The server's TLS, or `None` for plaintext: refused (in one line) on an address that
    /// is not loopback unless `--plaintext` says so.
    pub fn server(&self, listen: std::net::SocketAddr) -> Result<Option<ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => ServerTls::load(cert, key).map(Some),
            (None, None) if listen.ip().is_loopback() || self.plaintext => Ok(None),
            (None, None) => bail!(
                "refusing to serve plaintext on {listen}, which is not a loopback address: give \
                 --tls-cert FILE --tls-key FILE, or --plaintext to accept that anyone on the \
                 path can read names, amounts and balances"
            ),
            // clap's `requires` rules this out; say it anyway rather than panic.
            _ => bail!("--tls-cert and --tls-key go together"),
        }
    }
}

/// What the server's connection loop needs of a stream: wait until a read can make
/// progress, then read without waiting, so that the read buffer lives on the stack only
/// while it is used and never in an idle connection's future.
pub trait Transport: AsyncWrite + Unpin + Send + Sync {
    /// Resolves when [`Transport::try_read`] may return something (or an error/EOF).
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what is available now; `WouldBlock` if nothing is.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Transport for TcpStream {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        let (tcp, tls) = self.get_ref();
        // rustls may hold decrypted bytes not yet read (a record larger than one read): then
        // a read makes progress without the socket becoming readable again.
        let buffered = !tls.wants_read();
        async move {
            if buffered {
                Ok(())
            } else {
                tcp.readable().await
            }
        }
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Called right after `ready`: poll once, and treat "not yet" as WouldBlock. The
        // no-op waker is fine because the caller waits on `ready` again, which registers a
        // real one.
        let mut cx = TaskContext::from_waker(Waker::noop());
        let mut out = ReadBuf::new(buf);
        match Pin::new(self).poll_read(&mut cx, &mut out) {
            Poll::Ready(Ok(())) => Ok(out.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// Why a server-side handshake failed, in a few words for `error.log` (no spaces).
pub fn handshake_failure_reason(e: &io::Error) -> &'static str {
    if let Some(rustls_error) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match rustls_error {
            rustls::Error::InvalidMessage(_) => "not_tls",
            rustls::Error::AlertReceived(_) => "client_alert",
            rustls::Error::PeerIncompatible(_) => "incompatible",
            _ => "handshake_error",
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "closed",
        io::ErrorKind::TimedOut => "timeout",
        _ => "io_error",
    }
}

// ---------------------------------------------------------------------------------------
// Client

/// The TLS options of `txsock client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTlsArgs {
    /// Connect with TLS 1.3 and check the server's certificate (against --ca FILE, else the
    /// system's trusted CAs) and name (--tls-name, else the host of --server).
    #[arg(long, global = true, env = "TXSOCK_TLS")]
    pub tls: bool,

    /// Trust the CA certificates in this PEM file instead of the system's (with --tls), e.g.
    /// the `ca.pem` of `txsock cert self-signed`.
    #[arg(
        long,
        global = true,
        env = "TXSOCK_CA",
        value_name = "FILE",
        requires = "tls"
    )]
    pub ca: Option<PathBuf>,

    /// The name the server's certificate must carry (with --tls; default: the host of
    /// --server), for a server reached by another name or address.
    #[arg(
        long,
        global = true,
        env = "TXSOCK_TLS_NAME",
        value_name = "NAME",
        requires = "tls"
    )]
    pub tls_name: Option<String>,
}

impl ClientTlsArgs {
    /// The TLS to use towards `server`: `None` for plaintext, else the settings or why they
    /// cannot be had (an unreadable CA file).
    pub fn client(&self, server: &str) -> Option<Result<ClientTls, TlsError>> {
        // With several servers (`A,B,C`) each connection takes its own name
        // ([`ClientTls::for_server`]); the first checks the settings now.
        let first = server.split(',').next().unwrap_or(server);
        self.tls
            .then(|| ClientTls::new(self.ca.as_deref(), self.tls_name.as_deref(), first))
    }
}

/// A client's TLS settings: whom to trust and which name the certificate must carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    /// The name came from `--tls-name`, not from a server's address.
    explicit: bool,
}

/// The host part of `HOST:PORT` (without the brackets of `[::1]:PORT`).
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl ClientTls {
    /// Trusts the PEM certificates in `ca`, or the system's roots without it, and expects the
    /// name `name` (default: the host part of `server`) in the server's certificate.
    pub fn new(ca: Option<&Path>, name: Option<&str>, server: &str) -> Result<ClientTls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        TlsError(format!("cannot read the CA file {}: {e}", path.display()))
                    })?;
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        TlsError(format!(
                            "{}: not a usable CA certificate: {e}",
                            path.display()
                        ))
                    })?;
                }
                if roots.is_empty() {
                    return Err(TlsError(format!(
                        "{} holds no certificate (expected PEM, `-----BEGIN CERTIFICATE-----`)",
                        path.display()
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError(
                        "no CA certificates found in the system's store: pass the server's CA \
                         with --ca FILE"
                            .into(),
                    ));
                }
            }
        }
        let name_given = name.is_some();
        let name_text = name.unwrap_or_else(|| host_of(server)).to_string();
        let name = ServerName::try_from(name_text.clone()).map_err(|_| {
            TlsError(format!(
                "`{name_text}` is not a host name or IP address to check the certificate \
                 against: set --tls-name"
            ))
        })?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError(format!("TLS 1.3 with the ring provider: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            name,
            explicit: name_given,
        })
    }

    /// The same settings for `server` (one of several, `--server A,B,C`): the certificate
    /// must carry that server's host, unless `--tls-name` set the name for all.
    pub fn for_server(&self, server: &str) -> Result<ClientTls, TlsError> {
        if self.explicit {
            return Ok(self.clone());
        }
        let host = host_of(server).to_string();
        let name = ServerName::try_from(host.clone()).map_err(|_| {
            TlsError(format!(
                "`{host}` is not a host name or IP address to check the certificate against: \
                 set --tls-name"
            ))
        })?;
        Ok(ClientTls {
            name,
            ..self.clone()
        })
    }

    /// The name the certificate must carry.
    pub fn name(&self) -> &ServerName<'static> {
        &self.name
    }

    /// The connector for tokio streams (the stress tool).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// Runs the handshake on `tcp`, whose read and write timeouts bound it.
    pub fn handshake(&self, mut tcp: std::net::TcpStream) -> Result<ClientStream, TlsError> {
        let mut conn = rustls::ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| TlsError(format!("TLS: {e}")))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                return Err(explain(&e, &self.name));
            }
        }
        Ok(ClientStream::Tls(
            Box::new(rustls::StreamOwned::new(conn, tcp)),
            self.name.clone(),
        ))
    }
}

/// A readable reason for a failed client handshake (or TLS read).
pub fn explain(e: &io::Error, name: &ServerName<'_>) -> TlsError {
    let plaintext = "the server did not answer in TLS: it may be serving plaintext (then leave \
                     out --tls)";
    if let Some(error) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return TlsError(explain_rustls(error, name, plaintext));
    }
    let text = match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => format!(
            "the server closed the connection during the TLS handshake: it may be serving \
             plaintext (then leave out --tls) ({e})"
        ),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no TLS handshake answer in time; {plaintext}")
        }
        _ => format!("TLS handshake: {e}"),
    };
    TlsError(text)
}

fn explain_rustls(error: &rustls::Error, name: &ServerName<'_>, plaintext: &str) -> String {
    use rustls::CertificateError as C;
    let name = name.to_str();
    match error {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "the server's certificate is not signed by an authority this \
                                 client trusts (unknown CA): pass the CA that signed it with \
                                 --ca FILE"
                .into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the server's certificate is not valid for the name `{name}` (wrong name): \
                 connect by a name the certificate carries, or set --tls-name"
            ),
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired: \
                                                       the server must renew it"
                .into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet: check this machine's clock".into()
            }
            C::BadSignature => {
                "the server's certificate does not verify against the trusted CA (bad \
                 signature): a forged or substituted certificate"
                    .into()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => plaintext.into(),
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the TLS handshake (alert: {alert:?})")
        }
        rustls::Error::PeerIncompatible(why) => {
            format!("the server cannot do TLS 1.3 as this client requires ({why:?})")
        }
        other => format!("TLS: {other}"),
    }
}

/// The client's blocking stream: plaintext TCP, or TLS over it.
#[derive(Debug)]
pub enum ClientStream {
    /// Plaintext; `first` until the first bytes were read (and checked for a TLS record).
    Plain {
        /// The socket.
        tcp: std::net::TcpStream,
        /// Nothing read yet.
        first: bool,
    },
    /// TLS 1.3, and the name its certificate was checked against.
    Tls(
        Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>,
        ServerName<'static>,
    ),
}

impl ClientStream {
    /// A plaintext stream.
    pub fn plain(tcp: std::net::TcpStream) -> ClientStream {
        ClientStream::Plain { tcp, first: true }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain { tcp, first } => {
                let n = tcp.read(buf)?;
                if *first && n > 0 {
                    *first = false;
                    if looks_like_tls(&buf[..n]) {
                        return Err(io::Error::other(TlsError(
                            "the server speaks TLS (it answered with a TLS record): add --tls \
                             (and --ca FILE unless its certificate is signed by a CA this \
                             system trusts)"
                                .into(),
                        )));
                    }
                }
                Ok(n)
            }
            ClientStream::Tls(tls, name) => tls.read(buf).map_err(|e| {
                if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
                    io::Error::other(explain(&e, name))
                } else {
                    e
                }
            }),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain { tcp, .. } => tcp.write(buf),
            ClientStream::Tls(tls, _) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain { tcp, .. } => tcp.flush(),
            ClientStream::Tls(tls, _) => tls.flush(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Development certificates

/// A throwaway certificate authority and a server certificate it signed, as PEM text.
#[derive(Debug, Clone)]
pub struct DevCertificate {
    /// The authority's certificate: what clients trust (`--ca`).
    pub ca: String,
    /// The server's certificate chain (leaf, then the authority).
    pub chain: String,
    /// The server's private key (PKCS#8).
    pub key: String,
}

/// Makes a new authority (whose key is thrown away, so it can sign nothing else) and a
/// certificate for `names` (host names or IP addresses) valid for `days` days from now.
pub fn dev_certificate(names: &[String], days: u32) -> Result<DevCertificate> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let now = time::OffsetDateTime::now_utc();
    let until = now + time::Duration::days(i64::from(days));
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    // A name of its own, so that a certificate from another development CA is an unknown
    // issuer to clients that trust this one (not a bad signature under the same name).
    let mut tag = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tag);
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    ca.distinguished_name
        .push(DnType::CommonName, format!("txsock development CA {tag}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = until;
    let ca = ca.self_signed(&ca_key).context("signing the CA")?;

    let key = KeyPair::generate().context("generating the server key")?;
    let mut leaf = CertificateParams::new(names.to_vec())
        .with_context(|| format!("{names:?} are not host names or IP addresses"))?;
    leaf.distinguished_name
        .push(DnType::CommonName, names.first().map_or("txsock", |n| n));
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = until;
    let leaf = leaf
        .signed_by(&key, &ca, &ca_key)
        .context("signing the server certificate")?;
    Ok(DevCertificate {
        ca: ca.pem(),
        chain: format!("{}{}", leaf.pem(), ca.pem()),
        key: key.serialize_pem(),
    })
}

/// The three files of a [`DevCertificate`] in a directory.
#[derive(Debug, Clone)]
pub struct DevFiles {
    /// `ca.pem`.
    pub ca: PathBuf,
    /// `cert.pem`.
    pub cert: PathBuf,
    /// `key.pem` (readable by its owner only, on Unix).
    pub key: PathBuf,
}

impl DevFiles {
    /// The file names in `dir`.
    pub fn in_dir(dir: &Path) -> DevFiles {
        DevFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// Writes `certificate` to `dir` (created if missing) as `ca.pem`, `cert.pem`, `key.pem`.
pub fn write_dev_certificate(dir: &Path, certificate: &DevCertificate) -> Result<DevFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = DevFiles::in_dir(dir);
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(&files.ca, &certificate.ca)?;
    write(&files.cert, &certificate.chain)?;
    // The key is created owner-only before anything is written into it.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&files.key)
        .with_context(|| format!("cannot write {}", files.key.display()))?;
    file.write_all(certificate.key.as_bytes())
        .with_context(|| format!("cannot write {}", files.key.display()))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_frames() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x00]));
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]));
        assert!(!looks_like_tls(b"{\"op\":\"login\"}\n"));
        assert!(!looks_like_tls(&[0x16]));
    }

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("example.org:11002"), "example.org");
        assert_eq!(host_of("[::1]:11002"), "::1");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
    }

    #[test]
    fn dev_certificate_loads_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let first = dev_certificate(&["localhost".into(), "127.0.0.1".into()], 30).unwrap();
        let files = write_dev_certificate(dir.path(), &first).unwrap();
        let tls = ServerTls::load(&files.cert, &files.key).unwrap();
        let before = tls.certificate.current();
        let second = dev_certificate(&["localhost".into()], 30).unwrap();
        write_dev_certificate(dir.path(), &second).unwrap();
        tls.reload().unwrap();
        assert_ne!(before.cert[0], tls.certificate.current().cert[0]);
        // A key that does not match keeps the old certificate in use.
        std::fs::write(&files.key, &first.key).unwrap();
        let current = tls.certificate.current();
        assert!(tls.reload().is_err());
        assert_eq!(current.cert[0], tls.certificate.current().cert[0]);
    }
}
