//! `txsock mitm`: a TESTING TOOL. A man-in-the-middle proxy that forwards txsock traffic
//! line by line and, depending on `--mode`, attacks it the way the threat model
//! (`docs/PROTOCOL.md` §16) says an active attacker can: tamper with a transfer, replay it,
//! drop the server's answer, reorder requests, or turn a refusal into a fake success. It logs
//! every frame it sees and every action it takes on stdout, so tests and the demo can show
//! what happened. It knows frames only as JSON lines; it holds no keys.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use txsock_core::Amount;

/// Longest line the proxy parses; longer input is forwarded in pieces of this size, untouched.
const MAX_LINE: usize = 4096;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Forward everything unchanged (and log it).
    Pass,
    /// Change each transfer's amount (x10), or its recipient with `--redirect-to`, leaving
    /// its MAC as it was. The server must refuse it (`bad_mac`).
    Tamper,
    /// Send each transfer frame to the server twice, and hide the answer to the copy from the
    /// client. The server must refuse the copy (`unknown_nonce`).
    Replay,
    /// Swallow the server's answer to each transfer. The client must retry with the same id
    /// and learn the original result; money must move once.
    DropReply,
    /// Hold each transfer and send the next request before it (swap consecutive frames).
    /// The client must notice that the answers do not match its requests.
    Reorder,
    /// Turn the server's refusal of a transfer (a refused receipt or an `error`) into a fake
    /// `committed` receipt. The client must detect the forgery.
    ForgeReply,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Tamper => "tamper",
            Mode::Replay => "replay",
            Mode::DropReply => "drop-reply",
            Mode::Reorder => "reorder",
            Mode::ForgeReply => "forge-reply",
        }
    }
}

/// Options of `txsock mitm`.
#[derive(Debug, Clone, Args)]
pub struct MitmArgs {
    /// Address to listen on (loopback only, unless --danger-any-address; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:11003")]
    pub listen: SocketAddr,

    /// The real server to forward to.
    #[arg(long, default_value = "127.0.0.1:11002")]
    pub upstream: String,

    /// The attack.
    #[arg(long, value_enum, default_value = "pass")]
    pub mode: Mode,

    /// Attack only the first N eligible frames (over all connections); 0 attacks every one.
    #[arg(long, default_value_t = 0)]
    pub limit: u64,

    /// In tamper mode, redirect transfers to this user instead of changing the amount.
    #[arg(long, value_name = "USER")]
    pub redirect_to: Option<String>,

    /// In reorder mode, how long to hold a transfer waiting for a frame to swap it with (ms).
    #[arg(long, default_value_t = 250)]
    pub hold_ms: u64,

    /// Allow listening on a non-loopback address (this tool attacks whatever passes it).
    #[arg(long)]
    pub danger_any_address: bool,

    /// Attack a TLS server: present clients a forged certificate for NAME (from a CA made
    /// up on the spot) and connect upstream with TLS, checking NAME against --upstream-ca.
    /// A client that checks certificates refuses the forgery at the handshake, before any
    /// frame reaches this proxy.
    #[arg(long, value_name = "NAME")]
    pub danger_tls_impersonate: Option<String>,

    /// With --danger-tls-impersonate: the CA (PEM) of the real server's certificate
    /// (default: the system's CAs).
    #[arg(long, value_name = "FILE", requires = "danger_tls_impersonate")]
    pub upstream_ca: Option<std::path::PathBuf>,
}

/// The TLS of an impersonating proxy: a forged server side and a real client side.
struct Impersonation {
    name: String,
    forged: tokio_rustls::TlsAcceptor,
    upstream: crate::tls::ClientTls,
    /// Holds the forged certificate's files while the proxy runs.
    _files: tempfile::TempDir,
}

impl Impersonation {
    fn new(name: &str, upstream_ca: Option<&std::path::Path>, upstream: &str) -> Result<Self> {
        let dir = tempfile::tempdir().context("a directory for the forged certificate")?;
        let forged = crate::tls::dev_certificate(&[name.to_string()], 1)?;
        let files = crate::tls::write_dev_certificate(dir.path(), &forged)?;
        let acceptor = crate::tls::ServerTls::load(&files.cert, &files.key)?.acceptor();
        let upstream = crate::tls::ClientTls::new(upstream_ca, Some(name), upstream)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Impersonation {
            name: name.to_string(),
            forged: acceptor,
            upstream,
            _files: dir,
        })
    }
}

/// A read half and a write half, plaintext or TLS.
type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
type Writer = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// One forwarded request, awaiting its answer (the server answers in request order).
struct Pending {
    /// Sent by the proxy, not the client: its answer is hidden from the client.
    injected: bool,
    /// The request's `op`.
    op: String,
    /// The request frame, when it parsed.
    frame: Option<Value>,
}

#[derive(Default)]
struct Conversation {
    pending: VecDeque<Pending>,
    last_seq: u64,
}

struct Proxy {
    mode: Mode,
    upstream: String,
    budget: AtomicU64,
    limited: bool,
    redirect_to: Option<String>,
    hold: Duration,
    tls: Option<Impersonation>,
}

impl Proxy {
    /// Takes one attack from the budget; false when the `--limit` is used up.
    fn attack(&self) -> bool {
        !self.limited
            || self
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    /// Gives back an attack that did not happen.
    fn refund(&self) {
        if self.limited {
            self.budget.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn log(conn: u64, what: &str, detail: &str) {
    println!("mitm #{conn} {what} {detail}");
}

fn show(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

fn parse(line: &[u8]) -> Option<Value> {
    serde_json::from_slice(line).ok()
}

fn op_of(frame: &Option<Value>) -> String {
    frame
        .as_ref()
        .and_then(|v| v.get("op"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `transfer id=X` for a transfer, else the op.
fn describe(frame: &Option<Value>) -> String {
    match frame {
        Some(v) if field(v, "op") == "transfer" => format!("transfer id={}", field(v, "id")),
        _ => op_of(frame),
    }
}

fn frame_bytes(v: &Value) -> Vec<u8> {
    let mut bytes = v.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// What stops the proxy (exit 0): SIGTERM and SIGINT on Unix, Ctrl-C elsewhere. Connections
/// in flight are dropped: this is a testing tool, it holds nothing that must be finished.
struct Stop {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> Result<Stop> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Stop {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Stop {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the proxy until SIGTERM or Ctrl-C (exit 0).
pub async fn run(args: MitmArgs) -> Result<()> {
    if !args.listen.ip().is_loopback() && !args.danger_any_address {
        bail!(
            "refusing to listen on {}: txsock mitm is a testing tool that attacks the traffic it \
             forwards; use a loopback address (or --danger-any-address)",
            args.listen
        );
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    // Before the listening line, so that whoever waits for it never stops us by default action.
    let mut stop = Stop::new()?;
    println!(
        "txsock mitm listening on {local} forwarding to {} mode={}",
        args.upstream,
        args.mode.name()
    );
    println!(
        "TESTING TOOL: this proxy attacks the traffic it forwards; never put it in front of real users"
    );
    let proxy = Arc::new(Proxy {
        mode: args.mode,
        upstream: args.upstream.clone(),
        budget: AtomicU64::new(args.limit),
        limited: args.limit > 0,
        redirect_to: args.redirect_to.clone(),
        hold: Duration::from_millis(args.hold_ms),
        tls: match &args.danger_tls_impersonate {
            Some(name) => Some(Impersonation::new(
                name,
                args.upstream_ca.as_deref(),
                &args.upstream,
            )?),
            None => None,
        },
    });
    if let Some(tls) = &proxy.tls {
        println!(
            "TLS: presenting clients a forged certificate for {} (not signed by the server's CA)",
            tls.name
        );
    }
    let mut next = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.recv() => {
                println!("txsock mitm stopped");
                return Ok(());
            }
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                eprintln!("txsock mitm: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next += 1;
        let id = next;
        let proxy = proxy.clone();
        tokio::spawn(async move {
            log(id, "open", &format!("client {peer}"));
            connection(id, stream, &proxy).await;
            log(id, "closed", "");
        });
    }
}

async fn connection(id: u64, client: TcpStream, proxy: &Proxy) {
    let server = match TcpStream::connect(&proxy.upstream).await {
        Ok(s) => s,
        Err(e) => {
            log(
                id,
                "error",
                &format!("cannot reach {}: {e}", proxy.upstream),
            );
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let Some((client_read, client_write, server_read, server_write)) =
        halves(id, client, server, proxy).await
    else {
        return;
    };
    let conversation = Mutex::new(Conversation::default());
    let up = upstream(id, client_read, server_write, &conversation, proxy);
    let down = downstream(id, server_read, client_write, &conversation, proxy);
    tokio::pin!(up, down);
    // When one direction ends, give the other a moment to deliver what is in flight.
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(Duration::from_secs(5), down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(Duration::from_secs(5), up).await; }
    }
}

/// The two directions of both connections: plaintext, or (impersonating) TLS with the
/// client under the forged certificate and TLS to the server. `None` if a handshake failed.
async fn halves(
    id: u64,
    client: TcpStream,
    server: TcpStream,
    proxy: &Proxy,
) -> Option<(Reader, Writer, Reader, Writer)> {
    let Some(tls) = &proxy.tls else {
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        return Some((
            Box::new(client_read),
            Box::new(client_write),
            Box::new(server_read),
            Box::new(server_write),
        ));
    };
    let client = match tls.forged.accept(client).await {
        Ok(stream) => stream,
        Err(e) => {
            log(
                id,
                "TLS",
                &format!(
                    "handshake with the client failed ({e}): it refused the forged certificate for {}; \
                     nothing to attack",
                    tls.name
                ),
            );
            return None;
        }
    };
    log(id, "TLS", "the client accepted the forged certificate");
    let server = match tls
        .upstream
        .connector()
        .connect(tls.upstream.name().clone(), server)
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            log(
                id,
                "error",
                &format!(
                    "TLS to the server failed: {}",
                    crate::tls::explain(&e, tls.upstream.name())
                ),
            );
            return None;
        }
    };
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(server);
    Some((
        Box::new(client_read),
        Box::new(client_write),
        Box::new(server_read),
        Box::new(server_write),
    ))
}

/// Reads one line (with its newline) of at most [`MAX_LINE`] bytes; `None` at end of stream.
async fn read_line(reader: &mut BufReader<Reader>) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    match (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
    {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

fn push(conversation: &Mutex<Conversation>, injected: bool, frame: &Option<Value>) {
    let mut c = conversation.lock().unwrap_or_else(|p| p.into_inner());
    c.pending.push_back(Pending {
        injected,
        op: op_of(frame),
        frame: frame.clone(),
    });
}

/// Client to server: tamper, replay and reorder happen here.
async fn upstream(
    id: u64,
    client: Reader,
    mut server: Writer,
    conversation: &Mutex<Conversation>,
    proxy: &Proxy,
) {
    let mut reader = BufReader::new(client);
    while let Some(line) = read_line(&mut reader).await {
        let frame = parse(&line);
        let is_transfer = op_of(&frame) == "transfer";
        log(id, "c->s", &show(&line));
        let mut out: Vec<(bool, Option<Value>, Vec<u8>)> = Vec::new();
        match proxy.mode {
            Mode::Tamper if is_transfer && proxy.attack() => {
                // A transfer frame parsed, so `frame` is an object.
                let mut v = frame.clone().unwrap_or(Value::Null);
                let what = match &proxy.redirect_to {
                    Some(to) => {
                        let before = field(&v, "to").to_string();
                        v["to"] = json!(to);
                        format!("recipient {before} -> {to}")
                    }
                    None => {
                        let before = field(&v, "amount").to_string();
                        let after = Amount::parse(&before)
                            .ok()
                            .and_then(|a| a.minor().checked_mul(10))
                            .filter(|&m| m <= Amount::MAX.minor())
                            .map(Amount)
                            .unwrap_or(Amount(1));
                        v["amount"] = json!(after.to_string());
                        format!("amount {before} -> {after}")
                    }
                };
                log(
                    id,
                    "TAMPER",
                    &format!(
                        "transfer id={}: {what}; the MAC is left as the client made it",
                        field(&v, "id")
                    ),
                );
                let bytes = frame_bytes(&v);
                out.push((false, Some(v), bytes));
            }
            Mode::Replay if is_transfer && proxy.attack() => {
                out.push((false, frame.clone(), line.clone()));
                out.push((true, frame.clone(), line.clone()));
                log(
                    id,
                    "REPLAY",
                    &format!(
                        "sending transfer id={} a second time; its answer will be hidden from the client",
                        frame.as_ref().map(|v| field(v, "id")).unwrap_or("")
                    ),
                );
            }
            Mode::Reorder if is_transfer && proxy.attack() => {
                match tokio::time::timeout(proxy.hold, read_line(&mut reader)).await {
                    Ok(Some(next)) => {
                        let next_frame = parse(&next);
                        log(id, "c->s", &show(&next));
                        log(
                            id,
                            "REORDER",
                            &format!(
                                "swapping: sending the next request ({}) before transfer id={}",
                                describe(&next_frame),
                                frame.as_ref().map(|v| field(v, "id")).unwrap_or("")
                            ),
                        );
                        out.push((false, next_frame, next));
                        out.push((false, frame.clone(), line.clone()));
                    }
                    Ok(None) => {
                        proxy.refund();
                        out.push((false, frame.clone(), line.clone()));
                        send_all(id, &mut server, conversation, out).await;
                        break;
                    }
                    Err(_) => {
                        proxy.refund();
                        log(id, "reorder", "nothing to swap with; forwarding as is");
                        out.push((false, frame.clone(), line.clone()));
                    }
                }
            }
            _ => out.push((false, frame.clone(), line.clone())),
        }
        if !send_all(id, &mut server, conversation, out).await {
            break;
        }
    }
    let _ = server.shutdown().await;
}

/// Records each frame as pending (before it is written, so its answer cannot overtake the
/// record), then writes it. False if the server side is gone.
async fn send_all(
    id: u64,
    server: &mut Writer,
    conversation: &Mutex<Conversation>,
    frames: Vec<(bool, Option<Value>, Vec<u8>)>,
) -> bool {
    for (injected, frame, bytes) in frames {
        // The server answers every complete, non-blank line (an oversize line is forwarded
        // in pieces and answered once, at the piece with its newline).
        if bytes.ends_with(b"\n") && !bytes.iter().all(u8::is_ascii_whitespace) {
            push(conversation, injected, &frame);
        }
        if let Err(e) = server.write_all(&bytes).await {
            log(id, "error", &format!("writing to the server: {e}"));
            return false;
        }
    }
    true
}

/// Server to client: drop-reply and forge-reply happen here, and answers to injected frames
/// are hidden.
async fn downstream(
    id: u64,
    server: Reader,
    mut client: Writer,
    conversation: &Mutex<Conversation>,
    proxy: &Proxy,
) {
    let mut reader = BufReader::new(server);
    while let Some(line) = read_line(&mut reader).await {
        let frame = parse(&line);
        log(id, "s->c", &show(&line));
        let answered = {
            let mut c = conversation.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(seq) = frame
                .as_ref()
                .and_then(|v| v.get("seq"))
                .and_then(Value::as_u64)
            {
                c.last_seq = seq;
            }
            let request = c.pending.pop_front();
            request.map(|r| (r, c.last_seq))
        };
        let mut bytes = line;
        if let (Some((request, last_seq)), Some(answer)) = (answered, &frame) {
            if request.injected {
                log(
                    id,
                    "HIDE",
                    "that answer was to the proxy's injected copy; not forwarded",
                );
                continue;
            }
            if request.op == "transfer" {
                match proxy.mode {
                    Mode::DropReply if proxy.attack() => {
                        log(id, "DROP", "swallowed the server's answer to a transfer");
                        continue;
                    }
                    Mode::ForgeReply => {
                        if let Some(fake) = forge(answer, request.frame.as_ref(), last_seq) {
                            if proxy.attack() {
                                log(
                                    id,
                                    "FORGE",
                                    &format!(
                                        "turned the server's refusal into a fake success: {}",
                                        fake
                                    ),
                                );
                                bytes = frame_bytes(&fake);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if client.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = client.shutdown().await;
}

/// A fake `committed` receipt for a refused transfer, or `None` if it was not refused.
fn forge(answer: &Value, request: Option<&Value>, last_seq: u64) -> Option<Value> {
    match field(answer, "op") {
        "receipt" if field(answer, "result") != "committed" => {
            let mut fake = answer.clone();
            fake["result"] = json!("committed");
            let balance = Amount::parse_balance(field(answer, "balance")).unwrap_or(Amount(0));
            let amount = Amount::parse(field(answer, "amount")).unwrap_or(Amount(0));
            fake["balance"] = json!(balance.checked_sub(amount).unwrap_or(Amount(0)).to_string());
            Some(fake)
        }
        "error" => {
            let request = request?;
            Some(json!({
                "op": "receipt",
                "seq": last_seq + 1,
                "id": field(request, "id"),
                "to": field(request, "to"),
                "amount": field(request, "amount"),
                "result": "committed",
                "balance": "0.00",
                "mac": "0".repeat(64),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forge_turns_refusals_into_fake_successes_only() {
        let refused = json!({"op":"receipt","seq":3,"id":"t1","to":"bob","amount":"5.00",
                             "result":"insufficient_funds","balance":"2.00","mac":"ab"});
        let fake = forge(&refused, None, 3).unwrap();
        assert_eq!(
            (fake["result"].as_str(), fake["seq"].as_u64()),
            (Some("committed"), Some(3))
        );
        assert_eq!(fake["mac"], "ab", "the proxy has no key: the MAC stays");
        let mut committed = refused.clone();
        committed["result"] = json!("committed");
        assert!(forge(&committed, None, 3).is_none());
        let error = json!({"op":"error","code":"bad_mac","message":"x"});
        let request = json!({"op":"transfer","id":"t2","to":"bob","amount":"1.00"});
        let fake = forge(&error, Some(&request), 7).unwrap();
        assert_eq!(
            (fake["op"].as_str(), fake["seq"].as_u64()),
            (Some("receipt"), Some(8))
        );
        assert_eq!(fake["id"], "t2");
        assert!(forge(&json!({"op":"pong"}), Some(&request), 0).is_none());
    }
}
