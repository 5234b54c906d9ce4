//! Attacks: connections past the limit, slow clients, oversize lines, garbage, replayed and
//! forged transfers, nonce floods, and a timing probe for usernames (`user-timing`). Each records what the server answered, as
//! `attack -> "probe: answer"` counts in the [`Recorder`](super::record::Recorder).
//!
//! Logins and transfers go through the core [`ClientSession`](txsock_core::ClientSession)
//! (see [`Conn`]); the hostile bytes are written raw, outside any session, on purpose.

use super::conn::{Account, Conn, ConnError};
use super::record::Recorder;
use super::Ctx;
use anyhow::Result;
use rand_core::{OsRng, RngCore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use txsock_core::message::Response;
use txsock_core::session::ClientEvent;
use txsock_core::Amount;

/// The attacks, in the order `mix` starts them.
pub const ALL: [&str; 6] = [
    "flood",
    "slowloris",
    "oversize",
    "garbage",
    "replay",
    "nonce-flood",
];

/// Extra figures an attack reports beside the answers.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Things that must never happen, by name (a replay accepted, money moved twice). All
    /// zero on a correct server.
    pub violations: std::collections::BTreeMap<String, u64>,
    /// Other figures, by name.
    pub figures: std::collections::BTreeMap<String, f64>,
}

impl Findings {
    fn violation(&mut self, name: &str, n: u64) {
        *self.violations.entry(name.to_string()).or_default() += n;
    }

    fn figure(&mut self, name: &str, value: f64) {
        self.figures.insert(name.to_string(), value);
    }

    fn merge(&mut self, other: Findings) {
        for (k, v) in other.violations {
            *self.violations.entry(k).or_default() += v;
        }
        for (k, v) in other.figures {
            let e = self.figures.entry(k).or_insert(0.0);
            *e = e.max(v);
        }
    }
}

/// How hard an attack pushes.
#[derive(Debug, Clone, Copy)]
pub struct AttackParams {
    /// Connections at once (for `flood`: connections opened per round).
    pub count: usize,
    /// Line size for `oversize`, bytes.
    pub size: usize,
}

/// The name under which an answer line (with or without its newline) is counted: an error's
/// `code`, else the response's `op`, parsed as a client parses it; `unparsed` for anything
/// that is not a valid response.
pub fn classify(line: &[u8]) -> String {
    let frame = line.strip_suffix(b"\n").unwrap_or(line);
    match Response::parse(frame) {
        Ok(Response::Error(e)) => e.code.to_string(),
        Ok(response) => response.op().to_string(),
        Err(_) => "unparsed".into(),
    }
}

/// How a raw connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closed it (EOF).
    Closed,
    /// The server reset it.
    Reset,
    /// Still open when we stopped waiting.
    Open,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Closed => "closed by server",
            End::Reset => "reset by server",
            End::Open => "still open",
        }
    }
}

/// Reads answer lines until the server closes, `quiet` passes without a byte, or `until`.
/// Returns the answers (classified) and how it ended.
async fn read_answers(
    reader: &mut OwnedReadHalf,
    mut pending: Vec<u8>,
    quiet: Duration,
    until: Instant,
) -> (Vec<String>, End) {
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            answers.push(classify(&line));
        }
        if pending.len() > 64 * 1024 {
            pending.clear();
        }
        let wait = quiet.min(until.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, reader.read(&mut buf)).await {
            Err(_) => return (answers, End::Open),
            Ok(Ok(0)) => return (answers, End::Closed),
            Ok(Err(_)) => return (answers, End::Reset),
            Ok(Ok(n)) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// What the server has sent so far, without waiting.
fn answers_so_far(reader: &OwnedReadHalf) -> (Vec<String>, End) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        match reader.try_read(&mut buf) {
            Ok(0) => break End::Closed,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break End::Open,
            Err(_) => break End::Reset,
        }
    };
    let answers = pending
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(classify)
        .collect();
    (answers, end)
}

/// Pause after the server refused a connection (at its limit), so a refused attacker does
/// not spin.
const BACK_OFF: Duration = Duration::from_millis(250);

async fn back_off_if_busy(answers: &[String]) {
    if answers.iter().any(|a| a == "server_busy") {
        tokio::time::sleep(BACK_OFF).await;
    }
}

fn record_all(rec: &Recorder, attack: &str, probe: &str, answers: &[String], end: End) {
    for a in answers {
        rec.answer(attack, &format!("{probe}: {a}"));
    }
    rec.answer(attack, &format!("{probe}: {}", end.name()));
}

async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = s.set_nodelay(true);
    Some(s)
}

/// Accounts an attack needs of its own, registered before any attack starts (a flood
/// running beside it would refuse the registration): one per `replay` lane.
pub async fn prepare(ctx: &Ctx, name: &str, params: AttackParams) -> Result<Vec<Account>> {
    if name != "replay" {
        return Ok(Vec::new());
    }
    // Each lane has an account of its own: the balance check assumes nobody else moves
    // that account's money meanwhile.
    let names = (0..params.count.max(1))
        .map(|i| format!("{}r{i}", ctx.prefix))
        .collect();
    super::load::register(ctx, names).await
}

/// Runs attack `name` with `params` until `until`; `account` is the shared attacker's
/// account, `own` what [`prepare`] registered for this attack.
pub async fn run(
    ctx: &Ctx,
    name: &str,
    params: AttackParams,
    account: &Account,
    own: Vec<Account>,
    until: Instant,
) -> Result<Findings> {
    match name {
        "flood" => flood(ctx, params.count, until).await,
        "slowloris" => slowloris(ctx, params.count, account, until).await,
        "oversize" => oversize(ctx, params.count, params.size, until).await,
        "garbage" => garbage(ctx, params.count, until).await,
        "replay" => replay(ctx, own, until).await,
        "nonce-flood" => nonce_flood(ctx, params.count, account, until).await,
        "user-timing" => user_timing(ctx, account, until).await,
        other => anyhow::bail!("unknown attack {other}"),
    }
}

/// `flood`: rounds of `count` connections opened at once and held for two seconds (or until
/// `until`). Past the server's limit they get `server_busy` and are closed.
async fn flood(ctx: &Ctx, count: usize, until: Instant) -> Result<Findings> {
    let mut findings = Findings::default();
    let mut most_held = 0usize;
    let mut slowest_round = 0f64;
    let mut rounds = 0u64;
    while Instant::now() < until {
        rounds += 1;
        // Connection attempts in flight at once: more than the server's listen backlog only
        // measures the kernel's SYN retransmission timer.
        let gate = Arc::new(Semaphore::new(100));
        let mut set = JoinSet::new();
        for _ in 0..count {
            let (addr, rec, gate) = (ctx.addr, ctx.rec.clone(), gate.clone());
            set.spawn(async move {
                let permit = gate.acquire_owned().await;
                let stream = connect(addr).await;
                drop(permit);
                let Some(stream) = stream else {
                    rec.answer("flood", "connect failed");
                    return None;
                };
                let (mut r, w) = stream.into_split();
                // An accepted connection hears nothing; a refused one gets one line and EOF.
                let quiet = Duration::from_millis(500);
                let (answers, end) = read_answers(&mut r, Vec::new(), quiet, until).await;
                if end == End::Open && answers.is_empty() {
                    return Some((r, w));
                }
                record_all(&rec, "flood", "refused", &answers, end);
                None
            });
        }
        let mut held = Vec::new();
        let opening = Instant::now();
        while let Some(done) = set.join_next().await {
            if let Ok(Some(conn)) = done {
                held.push(conn);
            }
        }
        let secs = opening.elapsed().as_secs_f64();
        slowest_round = slowest_round.max(secs);
        let hold_until = (Instant::now() + Duration::from_secs(2)).min(until);
        tokio::time::sleep_until(hold_until).await;
        // What the held ones heard meanwhile: nothing (still held), a late `server_busy` (it
        // was still in the accept queue when we looked), or `timeout` (login deadline).
        let mut still_held = 0;
        for (r, w) in held {
            let (answers, end) = answers_so_far(&r);
            still_held += usize::from(answers.is_empty() && end == End::Open);
            record_all(&ctx.rec, "flood", "held", &answers, end);
            drop(w);
        }
        most_held = most_held.max(still_held);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    findings.figure("most_connections_held_to_the_end", most_held as f64);
    findings.figure("rounds", rounds as f64);
    findings.figure("longest_seconds_to_open_a_round", slowest_round);
    Ok(findings)
}

/// `slowloris`: `count` slow connections, a third of each kind: trickling one byte a second of
/// a line that never ends before logging in (closed at the login deadline) or logged in
/// (closed at the idle timeout: partial lines are not activity), and [`slow_reader`]s.
async fn slowloris(ctx: &Ctx, count: usize, account: &Account, until: Instant) -> Result<Findings> {
    let mut set = JoinSet::new();
    for i in 0..count {
        let (addr, iterations, rec, account) =
            (ctx.addr, ctx.iterations, ctx.rec.clone(), account.clone());
        let ctx = ctx.clone();
        set.spawn(async move {
            let started = Instant::now();
            if i % 3 == 2 {
                return slow_reader(&ctx, &account, until)
                    .await
                    .then(|| started.elapsed().as_secs_f64());
            }
            let (probe, stream, pending) = if i % 3 == 0 {
                let Some(s) = connect(addr).await else {
                    rec.answer("slowloris", "connect failed");
                    return None;
                };
                ("before login", s, Vec::new())
            } else {
                let mut conn = match Conn::connect(addr, iterations).await {
                    Ok(c) => c,
                    Err(e) => {
                        rec.answer("slowloris", &format!("login: {}", e.name()));
                        return None;
                    }
                };
                if let Err(e) = conn.login(&account).await {
                    rec.answer("slowloris", &format!("login: {}", e.name()));
                    return None;
                }
                let (s, rest) = conn.into_raw();
                ("logged in", s, rest)
            };
            let (mut r, mut w) = stream.into_split();
            let trickle = async {
                let _ = w.write_all(b"{\"op\":\"ping\"").await;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if w.write_all(b" ").await.is_err() {
                        break;
                    }
                }
                std::future::pending::<()>().await
            };
            let (answers, end) = tokio::select! {
                done = read_answers(&mut r, pending, Duration::from_secs(3600), until) => done,
                _ = trickle => unreachable!("the trickle never finishes"),
            };
            record_all(&rec, "slowloris", probe, &answers, end);
            (end != End::Open).then(|| started.elapsed().as_secs_f64())
        });
    }
    let mut findings = Findings::default();
    let mut closed_after: Vec<f64> = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(Some(secs)) = done {
            closed_after.push(secs);
        }
    }
    if let Some(max) = closed_after.iter().copied().reduce(f64::max) {
        findings.figure("longest_seconds_to_close", max);
    }
    Ok(findings)
}

/// `oversize`: lines far past the frame limit, with a newline (each refused with
/// `frame_too_long`; the 9th bad frame closes) and without (discarded in constant memory
/// until the login deadline closes the connection).
async fn oversize(ctx: &Ctx, count: usize, size: usize, until: Instant) -> Result<Findings> {
    let mut set = JoinSet::new();
    for i in 0..count {
        let (addr, rec) = (ctx.addr, ctx.rec.clone());
        set.spawn(async move {
            let mut bytes_sent = 0u64;
            let mut round = 0usize;
            while Instant::now() < until {
                round += 1;
                let with_newline = (i + round) % 2 == 0;
                let probe = if with_newline {
                    "with newline"
                } else {
                    "without newline"
                };
                let Some(stream) = connect(addr).await else {
                    rec.answer("oversize", "connect failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let (mut r, mut w) = stream.into_split();
                let line = vec![b'x'; size];
                let write = async {
                    let mut sent = 0u64;
                    // With newlines: 10 lines, one more than the bad-frame limit allows.
                    // Without: 16 lines' worth of one endless line.
                    for _ in 0..if with_newline { 10 } else { 16 } {
                        if w.write_all(&line).await.is_err() {
                            break;
                        }
                        sent += line.len() as u64;
                        if with_newline && w.write_all(b"\n").await.is_err() {
                            break;
                        }
                    }
                    sent
                };
                let read = read_answers(&mut r, Vec::new(), Duration::from_secs(30), until);
                let (sent, (answers, end)) = tokio::join!(write, read);
                bytes_sent += sent;
                record_all(&rec, "oversize", probe, &answers, end);
                back_off_if_busy(&answers).await;
            }
            bytes_sent
        });
    }
    let mut findings = Findings::default();
    let mut total = 0u64;
    while let Some(done) = set.join_next().await {
        total += done.unwrap_or(0);
    }
    findings.figure("mib_sent", total as f64 / (1024.0 * 1024.0));
    Ok(findings)
}

/// Bad lines of one kind, for `garbage`.
fn garbage_lines(kind: usize) -> (&'static str, Vec<u8>) {
    let mut out = Vec::new();
    let name = match kind % 6 {
        0 => {
            // Random bytes, with a newline now and then.
            let mut raw = vec![0u8; 4096];
            OsRng.fill_bytes(&mut raw);
            for chunk in raw.chunks(300) {
                out.extend_from_slice(chunk);
                out.push(b'\n');
            }
            "random bytes"
        }
        1 => {
            for _ in 0..10 {
                out.extend_from_slice(
                    b"{\"op\":\"login\",\"user\":\"\xff\xfe\xc0\xaf\",\"nonce\":\"abcdefgh\"}\n",
                );
            }
            "invalid utf-8"
        }
        2 => {
            // Nesting within the frame limit.
            for _ in 0..10 {
                out.extend_from_slice(b"{\"op\":\"ping\",\"x\":");
                out.extend(std::iter::repeat_n(b'[', 200));
                out.extend(std::iter::repeat_n(b']', 200));
                out.extend_from_slice(b"}\n");
            }
            "deep json"
        }
        3 => {
            // Nesting far past the frame limit.
            for _ in 0..10 {
                out.extend(std::iter::repeat_n(b'{', 5000));
                out.push(b'\n');
            }
            "deep json, oversize"
        }
        4 => {
            for _ in 0..10 {
                out.extend_from_slice(b"\0\0\0{\"op\":\"ping\"}\0\n");
            }
            "nul bytes"
        }
        _ => {
            let lines: [&[u8]; 5] = [
                b"{\"op\":\"nonces\",\"count\":\"8\"}\n",
                b"{\"op\":\"ping\",\"op\":\"ping\"}\n",
                b"{\"op\":\"transfer\",\"id\":1,\"to\":[],\"amount\":1e9}\n",
                b"{\"op\":\"login\",\"user\":\"a\",\"nonce\":\"p\\u0069ng\"}\n",
                b"[1,2,3]\n",
            ];
            for _ in 0..2 {
                for l in lines {
                    out.extend_from_slice(l);
                }
            }
            "wrong shapes"
        }
    };
    (name, out)
}

/// `garbage`: random bytes, invalid UTF-8, deep JSON, NULs, wrong types; each answered with
/// `malformed` (or `frame_too_long`) until the bad-frame limit closes the connection.
async fn garbage(ctx: &Ctx, count: usize, until: Instant) -> Result<Findings> {
    let mut set = JoinSet::new();
    for i in 0..count {
        let (addr, rec) = (ctx.addr, ctx.rec.clone());
        set.spawn(async move {
            let mut round = i;
            while Instant::now() < until {
                round += 1;
                let (probe, bytes) = garbage_lines(round);
                let Some(stream) = connect(addr).await else {
                    rec.answer("garbage", "connect failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let (mut r, mut w) = stream.into_split();
                let write = async {
                    let _ = w.write_all(&bytes).await;
                };
                let read = read_answers(&mut r, Vec::new(), Duration::from_secs(5), until);
                let ((), (answers, end)) = tokio::join!(write, read);
                record_all(&rec, "garbage", probe, &answers, end);
                back_off_if_busy(&answers).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    Ok(Findings::default())
}

/// `user-timing`: can the time to a failed login's answer tell an existing username from an
/// unknown one (PROTOCOL.md §16)? Alternates logins as the attacker's real account and as
/// names that do not exist, each with a proof that cannot verify, on one connection (a new
/// one if the server closes it), and times each `proof` until its answer arrives. Reports
/// both medians, their quartiles and the ratio of the medians; on a server without the
/// leak the ratio is near 1 and the middle halves overlap. Lockouts would turn the real
/// account's failures into the locked path: the spawned server has them off, and a
/// `--server` should too.
async fn user_timing(ctx: &Ctx, account: &Account, until: Instant) -> Result<Findings> {
    // 32 zero bytes: a well-formed proof that no verifier accepts.
    let proof = format!("{{\"op\":\"proof\",\"proof\":\"{}=\"}}\n", "A".repeat(43));
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut stream: Option<TcpStream> = None;
    let mut i = 0u64;
    while Instant::now() < until {
        let known = i % 2 == 0;
        let user = if known {
            account.user.clone()
        } else {
            format!("{}u{}", ctx.prefix, (i / 2) % 64)
        };
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match connect(ctx.addr).await {
                Some(s) => stream.insert(s),
                None => {
                    ctx.rec.answer("user-timing", "connect: failed");
                    tokio::time::sleep(BACK_OFF).await;
                    continue;
                }
            },
        };
        let login = format!(
            "{{\"op\":\"login\",\"user\":\"{user}\",\"nonce\":\"{}\"}}\n",
            random_hex(12)
        );
        let challenge = probe(s, login.as_bytes()).await;
        if challenge != "challenge" {
            ctx.rec
                .answer("user-timing", &format!("login: {challenge}"));
            stream = None;
            continue;
        }
        let start = std::time::Instant::now();
        let answer = probe(s, proof.as_bytes()).await;
        let took = start.elapsed();
        let kind = if known {
            "wrong password"
        } else {
            "unknown user"
        };
        ctx.rec.answer("user-timing", &format!("{kind}: {answer}"));
        if answer != "auth_failed" {
            stream = None;
            continue;
        }
        times[usize::from(!known)].push(took.as_secs_f64() * 1e6);
        i += 1;
    }
    let mut findings = Findings::default();
    let [wrong, unknown] = times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t
    });
    let quantile = |t: &[f64], q: f64| match t.len() {
        0 => f64::NAN,
        n => t[((n - 1) as f64 * q).round() as usize],
    };
    for (name, t) in [("wrong_password", &wrong), ("unknown_user", &unknown)] {
        findings.figure(&format!("{name}_samples"), t.len() as f64);
        findings.figure(&format!("{name}_p25_us"), quantile(t, 0.25));
        findings.figure(&format!("{name}_median_us"), quantile(t, 0.5));
        findings.figure(&format!("{name}_p75_us"), quantile(t, 0.75));
    }
    let ratio = quantile(&wrong, 0.5) / quantile(&unknown, 0.5);
    findings.figure("median_ratio", ratio);
    let apart = quantile(&wrong, 0.25) > quantile(&unknown, 0.75)
        || quantile(&unknown, 0.25) > quantile(&wrong, 0.75);
    findings.figure("middle_halves_overlap", if apart { 0.0 } else { 1.0 });
    Ok(findings)
}

/// Sends `frame` on a raw connection and reads one answer.
async fn probe(stream: &mut TcpStream, frame: &[u8]) -> String {
    let (mut r, mut w) = stream.split();
    if w.write_all(frame).await.is_err() {
        return "write failed".into();
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut byte)).await {
            Err(_) => return "no answer".into(),
            Ok(Ok(0)) | Ok(Err(_)) => return "closed by server".into(),
            Ok(Ok(_)) if byte[0] == b'\n' => return classify(&line),
            Ok(Ok(_)) => line.push(byte[0]),
        }
    }
}

/// Replaces the value of `"field":"..."` in a JSON frame.
fn set_field(frame: &[u8], field: &str, value: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(frame).into_owned();
    let key = format!("\"{field}\":\"");
    let Some(start) = text.find(&key).map(|s| s + key.len()) else {
        return frame.to_vec();
    };
    let end = text[start..].find('"').map_or(text.len(), |e| e + start);
    format!("{}{value}{}", &text[..start], &text[end..]).into_bytes()
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    OsRng.fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// One replay round: a real transfer with its verified receipt, then the same frame replayed,
/// tampered with, forged, and sent on another session of the same user; finally the balance
/// must show the money moved exactly once, also after a same-id retry.
async fn replay_round(ctx: &Ctx, account: &Account, round: u64) -> Result<Findings, ConnError> {
    let rec = &ctx.rec;
    let mut findings = Findings::default();
    let amount = Amount::parse("0.01").expect("constant amount");
    let to = format!("{}sink", ctx.prefix);
    let id = format!("r{round}-{}", random_hex(4));
    let mut a = Conn::connect(ctx.addr, ctx.iterations).await?;
    a.login(account).await?;
    a.nonces(4).await?;
    a.session.transfer(&id, &to, amount)?;
    let frame = a.session.poll_transmit().to_vec();
    let balance_after = match a.next_event().await? {
        ClientEvent::Receipt(r) => {
            rec.answer(
                "replay",
                &format!("original: receipt {}", result_name(&r.result)),
            );
            r.balance
        }
        ClientEvent::Refused { code, .. } | ClientEvent::Closed { code } => {
            return Err(ConnError::Refused(code))
        }
        _ => return Err(ConnError::Unexpected),
    };
    let mut b = Conn::connect(ctx.addr, ctx.iterations).await?;
    b.login(account).await?;
    let (mut sa, _) = a.into_raw();
    let (mut sb, _) = b.into_raw();

    let probes: Vec<(&str, Vec<u8>)> = vec![
        ("replayed", frame.clone()),
        ("amount changed", set_field(&frame, "amount", "1000.00")),
        ("recipient changed", set_field(&frame, "to", &ctx.prefix)),
        ("forged mac", set_field(&frame, "mac", &random_hex(32))),
        (
            "fresh nonce, forged mac",
            set_field(
                &set_field(&frame, "nonce", &random_hex(16)),
                "mac",
                &random_hex(32),
            ),
        ),
    ];
    for (name, bytes) in &probes {
        let answer = probe(&mut sa, bytes).await;
        if answer == "receipt" {
            findings.violation("forged or replayed transfer accepted", 1);
        }
        rec.answer("replay", &format!("{name}: {answer}"));
    }
    let answer = probe(&mut sb, &frame).await;
    if answer == "receipt" {
        findings.violation("transfer accepted on another session", 1);
    }
    rec.answer("replay", &format!("other session: {answer}"));
    // Keep replaying on the first connection until the bad-frame limit closes it.
    let mut sent = probes.len() as u64;
    loop {
        let answer = probe(&mut sa, &frame).await;
        sent += 1;
        if answer == "receipt" {
            findings.violation("forged or replayed transfer accepted", 1);
        }
        if answer != "unknown_nonce" || sent > 64 {
            rec.answer("replay", &format!("repeated replays: {answer}"));
            break;
        }
    }
    findings.figure("bad_frames_before_close", sent as f64);
    drop((sa, sb));

    // A same-id retry returns the original outcome, and the balance moved once.
    let mut c = Conn::connect(ctx.addr, ctx.iterations).await?;
    c.login(account).await?;
    c.nonces(2).await?;
    c.session.transfer(&id, &to, amount)?;
    match c.next_event().await? {
        ClientEvent::Receipt(r) => rec.answer(
            "replay",
            &format!("same id retried: receipt {}", result_name(&r.result)),
        ),
        ClientEvent::Refused { code, .. } => {
            rec.answer("replay", &format!("same id retried: {}", code.name()))
        }
        _ => return Err(ConnError::Unexpected),
    }
    c.session.balance()?;
    match c.next_event().await? {
        ClientEvent::Balance(now) if now == balance_after => {
            rec.answer("replay", "balance: moved once")
        }
        ClientEvent::Balance(_) => {
            rec.answer("replay", "balance: moved more than once");
            findings.violation("money moved twice", 1);
        }
        _ => return Err(ConnError::Unexpected),
    }
    Ok(findings)
}

fn result_name(result: &Result<(), txsock_core::ErrorCode>) -> &'static str {
    match result {
        Ok(()) => "committed",
        Err(code) => code.name(),
    }
}

/// `replay`: [`replay_round`]s, one lane per account (from [`prepare`]), until `until`.
async fn replay(ctx: &Ctx, accounts: Vec<Account>, until: Instant) -> Result<Findings> {
    let mut set = JoinSet::new();
    for (lane, account) in accounts.into_iter().enumerate() {
        let ctx = ctx.clone();
        set.spawn(async move {
            let mut findings = Findings::default();
            let mut round = lane as u64 * 1_000_000;
            loop {
                round += 1;
                match replay_round(&ctx, &account, round).await {
                    Ok(f) => findings.merge(f),
                    Err(e) => {
                        ctx.rec
                            .answer("replay", &format!("round failed: {}", e.name()));
                        tokio::time::sleep(BACK_OFF).await;
                    }
                }
                if Instant::now() >= until {
                    break findings;
                }
            }
        });
    }
    let mut findings = Findings::default();
    while let Some(done) = set.join_next().await {
        findings.merge(done?);
    }
    Ok(findings)
}

/// `nonce-flood`: `count` logged-in sessions asking for nonces as fast as the server answers
/// and never using them. The ring evicts the oldest; memory stays put. At the end each
/// session sends one transfer to show it still works.
async fn nonce_flood(
    ctx: &Ctx,
    count: usize,
    account: &Account,
    until: Instant,
) -> Result<Findings> {
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (ctx, account) = (ctx.clone(), account.clone());
        set.spawn(async move {
            let run = async {
                let mut conn = Conn::connect(ctx.addr, ctx.iterations).await?;
                conn.login(&account).await?;
                let mut outstanding = 0usize;
                let mut answered = 0u64;
                let mut issued = 0u64;
                while Instant::now() < until || outstanding > 0 {
                    while Instant::now() < until && outstanding < 15 {
                        conn.session.request_nonces(8)?;
                        outstanding += 1;
                    }
                    let event = tokio::time::timeout(Duration::from_secs(10), conn.next_event())
                        .await
                        .map_err(|_| ConnError::Timeout)??;
                    match event {
                        ClientEvent::Nonces { .. } => {
                            outstanding -= 1;
                            answered += 1;
                            issued += 8;
                        }
                        ClientEvent::Refused { code, .. } | ClientEvent::Closed { code } => {
                            return Err(ConnError::Refused(code))
                        }
                        _ => return Err(ConnError::Unexpected),
                    }
                    if answered % 1000 == 0 {
                        ctx.rec
                            .answers("nonce-flood", "nonces requested: nonces", 1000);
                    }
                }
                ctx.rec
                    .answers("nonce-flood", "nonces requested: nonces", answered % 1000);
                let to = format!("{}sink", ctx.prefix);
                let id = format!("n{}", random_hex(8));
                let amount = Amount::parse("0.01").expect("constant amount");
                conn.session.transfer(&id, &to, amount)?;
                match conn.next_event().await? {
                    ClientEvent::Receipt(r) => ctx.rec.answer(
                        "nonce-flood",
                        &format!("transfer afterwards: receipt {}", result_name(&r.result)),
                    ),
                    ClientEvent::Refused { code, .. } => ctx.rec.answer(
                        "nonce-flood",
                        &format!("transfer afterwards: {}", code.name()),
                    ),
                    _ => return Err(ConnError::Unexpected),
                }
                Ok::<u64, ConnError>(issued)
            };
            match run.await {
                Ok(issued) => issued,
                Err(e) => {
                    ctx.rec
                        .answer("nonce-flood", &format!("failed: {}", e.name()));
                    0
                }
            }
        });
    }
    let mut issued = 0u64;
    while let Some(done) = set.join_next().await {
        issued += done.unwrap_or(0);
    }
    let mut findings = Findings::default();
    findings.figure("nonces_issued", issued as f64);
    Ok(findings)
}

/// A logged-in session that sends `ping`s and never reads the answers, on a socket with a
/// small receive window. The server stops reading once its output to us is full, and closes
/// the connection after its write timeout. True if the server closed it before `until`.
async fn slow_reader(ctx: &Ctx, account: &Account, until: Instant) -> bool {
    const ATTACK: &str = "slowloris";
    let conn = match Conn::connect_with(ctx.addr, ctx.iterations, Some(4096)).await {
        Ok(c) => c,
        Err(e) => {
            ctx.rec.answer(ATTACK, &format!("login: {}", e.name()));
            return false;
        }
    };
    let mut conn = conn;
    if let Err(e) = conn.login(account).await {
        ctx.rec.answer(ATTACK, &format!("login: {}", e.name()));
        return false;
    }
    let (stream, _) = conn.into_raw();
    let (mut r, mut w) = stream.into_split();
    let pings = b"{\"op\":\"ping\"}\n".repeat(1024);
    let mut sent = 0u64;
    // Write until the writes block (the server stopped reading), at most 4 MiB.
    while sent < 4 << 20 && Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(1), w.write_all(&pings)).await {
            Ok(Ok(())) => sent += pings.len() as u64,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // Wait without reading: once the server gives up, a write fails.
    let mut closed = false;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(Err(_)) =
            tokio::time::timeout(Duration::from_millis(250), w.write_all(b" ")).await
        {
            closed = true;
            break;
        }
    }
    let state = if closed {
        "closed by server"
    } else {
        "still open"
    };
    ctx.rec.answer(ATTACK, &format!("not reading: {state}"));
    // Now read what the server did send, for the record.
    let (answers, _) = read_answers(
        &mut r,
        Vec::new(),
        Duration::from_millis(200),
        Instant::now() + Duration::from_secs(2),
    )
    .await;
    let pongs = answers.iter().filter(|a| *a == "pong").count() as u64;
    ctx.rec.answers(ATTACK, "not reading: pong", pongs);
    for a in answers.iter().filter(|a| *a != "pong") {
        ctx.rec.answer(ATTACK, &format!("not reading: {a}"));
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_parses_responses() {
        let error =
            br#"{"op":"error","code":"unknown_nonce","message":"unknown or already used nonce"}"#;
        assert_eq!(classify(error), "unknown_nonce");
        let mut line = error.to_vec();
        line.push(b'\n');
        assert_eq!(classify(&line), "unknown_nonce");
        assert_eq!(classify(b"{\"op\":\"pong\"}\n"), "pong");
        // Looks like an error to a substring search, but is no response.
        assert_eq!(classify(br#"{"op":"error","code":"bad_mac""#), "unparsed");
        assert_eq!(classify(b"\xff\xfe"), "unparsed");
    }
}
