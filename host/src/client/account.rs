//! One account on one server, over blocking TCP: connects, logs in, and runs requests with the
//! retry rules of `docs/PROTOCOL.md` §13. Every protocol decision (framing, SCRAM, MACs,
//! receipt and sequence checks) is the core [`ClientSession`]'s, driven by the core
//! [`BlockingClient`]; this module only chooses *when* to reconnect and retry.
//!
//! [`ClientSession`]: txsock_core::session::ClientSession

use super::failover::{self, Servers};
use super::human;
use crate::tls::{ClientStream, ClientTls, TlsError};
use embedded_io_adapters::std::FromStd;
use rand_core::OsRng;
use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;
use txsock_core::blocking::{BlockingClient, BlockingError};
use txsock_core::ledger::HistoryEntry;
use txsock_core::message::MAX_NONCE_BATCH;
use txsock_core::session::{ClientConfig, ClientError, ClientEvent, IntegrityError, RequestKind};
use txsock_core::{Amount, ErrorCode, TransferId, Username};

/// The core's blocking client on a std TCP stream, plaintext or TLS.
pub type Client = BlockingClient<FromStd<ClientStream>, OsRng>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Link {
    /// The servers (`HOST:PORT` each), and the one in use.
    pub servers: Servers,
    /// Connect timeout, and how long to wait for each reply.
    pub timeout: Duration,
    /// The session's policy (minimum PBKDF2 iterations at login).
    pub config: ClientConfig,
    /// Connections tried for one request before giving up (at least 1).
    pub attempts: u32,
    /// TLS settings (`None`: plaintext), or why they could not be read.
    pub tls: Option<Result<ClientTls, TlsError>>,
}

/// Why a request got no verified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made.
    Connect(String),
    /// The connection broke or went silent after the request was sent.
    Lost(String),
    /// The server refused (an unauthenticated `error` frame, or a login failure).
    Refused(ErrorCode),
    /// An answer failed verification: forged, altered, replayed or reordered.
    Integrity(IntegrityError),
    /// This client could not send the request.
    Local(String),
    /// TLS failed (certificate refused, or one side does not speak TLS): retrying would
    /// not change it.
    Tls(String),
}

impl Failure {
    fn from_blocking(e: BlockingError<io::Error>, timeout: Duration) -> Failure {
        match e {
            BlockingError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Failure::Lost(format!("no reply within {} s", timeout.as_secs_f32()))
            }
            BlockingError::Io(e) => match TlsError::within(&e) {
                Some(tls) => Failure::Tls(tls.to_string()),
                None => Failure::Lost(e.to_string()),
            },
            BlockingError::Closed => Failure::Lost("the connection was closed".into()),
            BlockingError::Refused(code) if code.is_fatal() => {
                Failure::Lost(human::refusal(code).into())
            }
            BlockingError::Refused(code) => Failure::Refused(code),
            BlockingError::Integrity(e) => Failure::Integrity(e),
            BlockingError::Client(ClientError::Failed) => {
                Failure::Integrity(IntegrityError::UnexpectedResponse)
            }
            BlockingError::Client(e) => Failure::Local(e.to_string()),
            BlockingError::Unexpected => Failure::Integrity(IntegrityError::UnexpectedResponse),
            // BlockingError is non-exhaustive.
            other => Failure::Local(other.to_string()),
        }
    }

    /// Human text; `min_iterations` explains a refused challenge.
    pub fn describe(&self, min_iterations: u32) -> String {
        match self {
            Failure::Connect(s) => format!("cannot connect: {s}"),
            Failure::Lost(s) => format!("connection lost: {s}"),
            Failure::Refused(code) => human::refusal(*code).into(),
            Failure::Integrity(e) => human::integrity(*e, min_iterations),
            Failure::Local(s) => s.clone(),
            Failure::Tls(s) => s.clone(),
        }
    }
}

/// A detected attack or corruption: something only a party on the path would cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// The session refused an answer.
    Integrity(IntegrityError),
    /// The server refused a request this client built correctly with a code that
    /// [means it was altered in transit](ErrorCode::means_altered_in_transit) (`bad_mac`,
    /// `unknown_nonce`, `malformed`, ...): it was altered or replayed on the way.
    Altered(ErrorCode),
}

impl Alert {
    /// Stable name for `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Alert::Integrity(e) => human::integrity_name(e),
            Alert::Altered(ErrorCode::UnknownNonce) => "nonce_refused",
            Alert::Altered(_) => "altered_in_transit",
        }
    }

    /// Human text.
    pub fn describe(self, min_iterations: u32) -> String {
        match self {
            Alert::Integrity(e) => human::integrity(e, min_iterations),
            Alert::Altered(ErrorCode::UnknownNonce) => {
                "the server refused this client's fresh one-time nonce (unknown_nonce): the \
                 nonces or the transfer were tampered with on the way"
                    .into()
            }
            Alert::Altered(code) => format!(
                "the server refused a correctly built transfer ({}): it was altered on the way",
                code.name()
            ),
        }
    }
}

/// Where progress notes and warnings go: stderr for scripts (stdout stays machine-readable),
/// stdout for the interactive menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Standard error.
    Stderr,
    /// Standard output.
    Stdout,
}

impl Sink {
    /// Prints one note.
    pub fn say(self, text: &str) {
        match self {
            Sink::Stderr => eprintln!("{text}"),
            Sink::Stdout => println!("{text}"),
        }
    }
}

/// Opens a TCP connection to the first of the link's servers that answers (see
/// [`failover`]) and wraps it in a core client.
pub fn connect(link: &Link) -> Result<Client, Failure> {
    link.servers.connect(|server| connect_to(link, server))
}

/// Opens a TCP connection to `server` with the link's timeouts, runs the TLS handshake if
/// the link has TLS, and wraps it in a core client.
fn connect_to(link: &Link, server: &str) -> Result<Client, Failure> {
    let tls = match &link.tls {
        None => None,
        Some(Ok(tls)) => Some(
            tls.for_server(server)
                .map_err(|e| Failure::Tls(e.to_string()))?,
        ),
        Some(Err(e)) => return Err(Failure::Tls(e.to_string())),
    };
    let addrs: Vec<_> = server
        .to_socket_addrs()
        .map_err(|e| Failure::Connect(format!("{server}: {e}")))?
        .collect();
    let mut last = format!("{server}: no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, link.timeout) {
            Ok(stream) => {
                let setup = stream
                    .set_read_timeout(Some(link.timeout))
                    .and_then(|()| stream.set_write_timeout(Some(link.timeout)))
                    .and_then(|()| stream.set_nodelay(true));
                if let Err(e) = setup {
                    last = format!("{addr}: {e}");
                    continue;
                }
                let stream = match tls {
                    None => ClientStream::plain(stream),
                    Some(tls) => tls
                        .handshake(stream)
                        .map_err(|e| Failure::Tls(format!("{addr}: {e}")))?,
                };
                return Ok(BlockingClient::new(
                    FromStd::new(stream),
                    OsRng,
                    link.config,
                ));
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(Failure::Connect(last))
}

/// One transfer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferItem {
    /// Idempotency key: a retry with the same id never moves money twice.
    pub id: TransferId,
    /// Recipient.
    pub to: Username,
    /// Amount.
    pub amount: Amount,
}

/// The fate of one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A verified receipt says it is committed; `balance` is the sender's right after it.
    Committed {
        /// Sender's balance after the transfer.
        balance: Amount,
    },
    /// A verified receipt says the ledger refused it; nothing moved.
    Refused {
        /// Why.
        code: ErrorCode,
        /// Sender's balance now.
        balance: Amount,
    },
    /// No verified answer: `last` is why the last attempt failed.
    Unknown {
        /// The last attempt's failure.
        last: Failure,
    },
}

/// A transfer and what became of it.
#[derive(Debug, Clone)]
pub struct TransferReport {
    /// The request.
    pub item: TransferItem,
    /// Its fate.
    pub outcome: Outcome,
    /// How many times it was sent to the server (0: never sent).
    pub sends: u32,
    /// Attacks detected while sending it.
    pub alerts: Vec<Alert>,
    /// For a committed transfer: `Some(true)` if it had been committed before this run sent
    /// it (a re-sent id: nothing moved now, and the receipt's balance is the one recorded
    /// then), `Some(false)` if this run's request moved the money, `None` if that could not
    /// be told (see [`committed_earlier`]).
    pub earlier: Option<bool>,
    /// The verified balance after all the transfers, fetched when a receipt's balance may
    /// be an old one (`earlier` is not `Some(false)`).
    pub balance_now: Option<Amount>,
}

/// Whether transfer `id` of `user`, committed according to a receipt, was committed before
/// this run sent it, from the newest history page fetched before sending (`before`) and
/// after the receipts (`after`).
///
/// Verified history entries, as [`Account::history`] read them.
#[derive(Debug)]
pub struct History {
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
    /// Older entries exist.
    pub more: bool,
    /// Deposits are listed; false when the server is older than statements (PROTOCOL.md
    /// §6 `statement`) and only its transfers could be read.
    pub deposits: bool,
}

/// The protocol's receipt for a re-sent id is the original one (PROTOCOL.md §13) and does
/// not say that it is a repeat, so the client tells from the authenticated history, which
/// lists committed transfers newest first: the id in `before` means it was already
/// committed; otherwise the id's position in `after` relative to the newest entry of
/// `before` says which came first. `None` when both fell off the page (more than a page of
/// transfers committed meanwhile).
pub fn committed_earlier(
    user: &Username,
    id: &TransferId,
    before: &[HistoryEntry],
    after: &[HistoryEntry],
) -> Option<bool> {
    let mine = |e: &HistoryEntry| e.from() == Some(user) && e.id() == Some(id);
    if before.iter().any(mine) {
        return Some(true);
    }
    // An empty page: nothing of this user's was committed before.
    let Some(newest_before) = before.first() else {
        return Some(false);
    };
    match (
        after.iter().position(mine),
        after.iter().position(|e| e == newest_before),
    ) {
        (Some(at), Some(marker)) => Some(at > marker),
        (Some(_), None) => Some(false),
        (None, Some(_)) => Some(true),
        (None, None) => None,
    }
}

/// An account's credentials and its current connection.
pub struct Account {
    /// Connection settings.
    pub link: Link,
    /// The user.
    pub user: Username,
    password: String,
    conn: Option<Client>,
    /// Every attack detected so far, in order.
    pub alerts: Vec<Alert>,
    /// Where notes and warnings go.
    pub sink: Sink,
}

impl Account {
    /// Credentials only; nothing is sent until a request needs it.
    pub fn new(link: Link, user: Username, password: String, sink: Sink) -> Account {
        Account {
            link,
            user,
            password,
            conn: None,
            alerts: Vec::new(),
            sink,
        }
    }

    fn timeout(&self) -> Duration {
        self.link.timeout
    }

    fn alert(&mut self, alert: Alert) {
        let advice = match alert {
            Alert::Integrity(_) => "Do not trust that answer; this client did not.",
            Alert::Altered(_) => "Someone between you and the server is changing your requests.",
        };
        self.sink.say(&human::warning(
            &alert.describe(self.link.config.min_iterations),
            advice,
        ));
        self.alerts.push(alert);
    }

    /// The logged-in connection, reconnecting and logging in if there is none.
    fn ensure(&mut self) -> Result<&mut Client, Failure> {
        let usable = match &mut self.conn {
            Some(c) => !c.session().is_failed() && c.session().user().is_some(),
            None => false,
        };
        if !usable {
            self.conn = None;
            let mut client = connect(&self.link)?;
            let timeout = self.timeout();
            match client.login(self.user.as_str(), &self.password) {
                Ok(()) => {}
                Err(e) => {
                    let f = Failure::from_blocking(e, timeout);
                    if let Failure::Integrity(e) = f {
                        self.alert(Alert::Integrity(e));
                    }
                    return Err(f);
                }
            }
            self.conn = Some(client);
        }
        // Set just above.
        Ok(self.conn.as_mut().expect("connection present"))
    }

    /// Gives up the current server after `failure` if it says that server cannot serve now
    /// and there is another ([`failover`]); returns the server to use next.
    fn leave(&mut self, failure: &Failure) -> Option<String> {
        let next = self.link.servers.leave_after(failure)?.to_string();
        self.conn = None;
        Some(next)
    }

    /// Logs in now (used to check credentials before showing a menu).
    pub fn login(&mut self) -> Result<(), Failure> {
        self.ensure().map(|_| ())
    }

    fn pause(&self) {
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Runs a read-only request, reconnecting after a lost or unverifiable answer.
    fn read<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Client) -> Result<T, BlockingError<io::Error>>,
    ) -> Result<T, Failure> {
        let attempts = self.link.attempts.max(1);
        let timeout = self.timeout();
        let mut last = Failure::Local("no attempt made".into());
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.pause();
            }
            let result = self
                .ensure()
                .and_then(|c| op(c).map_err(|e| Failure::from_blocking(e, timeout)));
            let failure = match result {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            let moved = self.leave(&failure);
            match &failure {
                // A login failure, a refusal or a TLS failure is an answer: retrying would not
                // change it (unless it says that this server cannot serve and there is another).
                Failure::Refused(_) | Failure::Local(_) | Failure::Tls(_) if moved.is_none() => {
                    return Err(failure)
                }
                Failure::Integrity(e) if self.conn.is_some() => {
                    self.alert(Alert::Integrity(*e));
                }
                // A login whose challenge or server signature was refused (`ensure` raised the
                // alarm): trying again would only hand the attacker more proofs.
                Failure::Integrity(_) => return Err(failure),
                _ => {}
            }
            self.conn = None;
            if attempt < attempts {
                let why = failure.describe(self.link.config.min_iterations);
                let to = moved.map_or(String::new(), |server| format!(" to {server}"));
                self.sink.say(&format!(
                    "{what}: {why}; reconnecting{to} (attempt {} of {attempts})",
                    attempt + 1
                ));
            }
            last = failure;
        }
        Err(last)
    }

    /// The verified balance.
    pub fn balance(&mut self) -> Result<Amount, Failure> {
        self.read("balance", |c| c.balance())
    }

    /// Up to `limit` verified entries of the statement (transfers and deposits), newest
    /// first. A server older than statements refuses the request as `malformed`; the
    /// history (transfers only) is then read instead, and [`History::deposits`] says so.
    pub fn history(&mut self, limit: usize) -> Result<History, Failure> {
        self.read("history", |c| {
            let mut entries: Vec<HistoryEntry> = Vec::new();
            let mut deposits = true;
            // Each page adds at least one entry or ends the loop, and `limit` bounds it.
            loop {
                let offset = u32::try_from(entries.len()).unwrap_or(u32::MAX);
                let page = if deposits {
                    match c.statement(offset) {
                        Err(BlockingError::Refused(ErrorCode::Malformed)) if offset == 0 => {
                            deposits = false;
                            c.history(offset)
                        }
                        other => other,
                    }
                } else {
                    c.history(offset)
                }?;
                let got = page.entries.len();
                entries.extend(page.entries);
                if entries.len() >= limit || !page.more || got == 0 {
                    let more = page.more || entries.len() > limit;
                    entries.truncate(limit);
                    return Ok(History {
                        entries,
                        more,
                        deposits,
                    });
                }
            }
        })
    }

    /// Sends the transfers and returns a verified outcome for each one that got one.
    ///
    /// The first round pipelines them on one connection (nonces in batches, then the
    /// transfers in one write). Any transfer whose answer was lost, refused as an `error`
    /// frame (never proof of anything, §13), or failed verification, is sent again with the
    /// same id and a fresh nonce on a new connection, one at a time, up to
    /// [`Link::attempts`] rounds. The server's idempotency makes that safe: a retry returns
    /// the original result and never moves money twice.
    pub fn transfer(&mut self, items: &[TransferItem]) -> Vec<TransferReport> {
        let mut reports: Vec<TransferReport> = items
            .iter()
            .map(|item| TransferReport {
                item: item.clone(),
                outcome: Outcome::Unknown {
                    last: Failure::Local("not sent".into()),
                },
                sends: 0,
                alerts: Vec::new(),
                earlier: None,
                balance_now: None,
            })
            .collect();
        let attempts = self.link.attempts.max(1);
        // The newest history page before anything is sent, to tell a re-sent id afterwards.
        let mut before: Option<Vec<HistoryEntry>> = None;
        for round in 1..=attempts {
            let pending: Vec<usize> = (0..reports.len())
                .filter(|&i| matches!(reports[i].outcome, Outcome::Unknown { .. }))
                .collect();
            if pending.is_empty() {
                break;
            }
            if round > 1 {
                self.pause();
            }
            for &i in &pending {
                reports[i].outcome = Outcome::Unknown {
                    last: Failure::Local("not sent".into()),
                };
            }
            let timeout = self.link.timeout;
            let mut login = Ok(());
            if round == 1 {
                match self.ensure() {
                    Ok(_) => before = self.newest_history(),
                    Err(f) => login = Err(f),
                }
            }
            let round_result = match login.and_then(|()| self.ensure()) {
                Ok(client) => {
                    if round == 1 && pending.len() > 1 {
                        pipelined(client, &pending, &mut reports, timeout)
                    } else {
                        one_by_one(client, &pending, &mut reports, timeout)
                    }
                }
                Err(f) => {
                    // Wrong password or locked out: more attempts only extend a lockout. A
                    // refused challenge or server signature: more would only hand an attacker
                    // more proofs. A server that cannot serve: the next one may.
                    let moved = self.leave(&f);
                    let final_refusal = moved.is_none()
                        && matches!(
                            f,
                            Failure::Refused(_)
                                | Failure::Local(_)
                                | Failure::Integrity(_)
                                | Failure::Tls(_)
                        );
                    for &i in &pending {
                        if let Failure::Integrity(e) = f {
                            reports[i].alerts.push(Alert::Integrity(e));
                        }
                        reports[i].outcome = Outcome::Unknown { last: f.clone() };
                    }
                    if final_refusal {
                        break;
                    }
                    if round < attempts {
                        let why = f.describe(self.link.config.min_iterations);
                        let on = moved.map_or(String::new(), |server| format!(" on {server}"));
                        self.sink.say(&format!(
                            "login failed ({why}); trying again{on} (attempt {} of {attempts})",
                            round + 1
                        ));
                    }
                    continue;
                }
            };
            self.after_round(&mut reports, &pending, round_result, round, attempts);
        }
        self.classify(&mut reports, before);
        reports
    }

    /// The newest history page, or `None` if it could not be had (an integrity failure is
    /// reported as an alert, like any other).
    fn newest_history(&mut self) -> Option<Vec<HistoryEntry>> {
        let timeout = self.timeout();
        let result = self.ensure().ok()?.history(0);
        match result {
            Ok(page) => Some(page.entries.iter().cloned().collect()),
            Err(e) => {
                self.conn = None;
                if let Failure::Integrity(e) = Failure::from_blocking(e, timeout) {
                    self.alert(Alert::Integrity(e));
                }
                None
            }
        }
    }

    /// Sets [`TransferReport::earlier`] and [`TransferReport::balance_now`] of committed
    /// transfers (one history page and at most one balance, on the current connection).
    fn classify(&mut self, reports: &mut [TransferReport], before: Option<Vec<HistoryEntry>>) {
        let committed = |r: &TransferReport| matches!(r.outcome, Outcome::Committed { .. });
        if !reports.iter().any(committed) {
            return;
        }
        let after = match before {
            Some(_) => self.newest_history(),
            None => None,
        };
        if let (Some(before), Some(after)) = (&before, &after) {
            for r in reports.iter_mut().filter(|r| committed(r)) {
                r.earlier = committed_earlier(&self.user, &r.item.id, before, after);
            }
        }
        if reports
            .iter()
            .any(|r| committed(r) && r.earlier != Some(false))
        {
            let timeout = self.timeout();
            let now = self.ensure().ok().map(|c| c.balance());
            match now {
                Some(Ok(balance)) => {
                    for r in reports.iter_mut().filter(|r| committed(r)) {
                        r.balance_now = Some(balance);
                    }
                }
                Some(Err(e)) => {
                    self.conn = None;
                    if let Failure::Integrity(e) = Failure::from_blocking(e, timeout) {
                        self.alert(Alert::Integrity(e));
                    }
                }
                None => {}
            }
        }
    }

    fn after_round(
        &mut self,
        reports: &mut [TransferReport],
        pending: &[usize],
        broken: Option<Failure>,
        round: u32,
        attempts: u32,
    ) {
        if let Some(f) = &broken {
            self.conn = None;
            if let Failure::Integrity(e) = f {
                self.alert(Alert::Integrity(*e));
            }
        }
        // A server that lost its connection or answered `internal` (its storage failed):
        // the pending transfers go to the next server, if there is one.
        let unserved = broken.clone().or_else(|| {
            pending.iter().find_map(|&i| match &reports[i].outcome {
                Outcome::Unknown { last } if failover::leaves(last) => Some(last.clone()),
                _ => None,
            })
        });
        let moved = unserved.and_then(|f| self.leave(&f));
        for &i in pending {
            let report = &mut reports[i];
            let Outcome::Unknown { last } = &report.outcome else {
                if round > 1 {
                    self.sink.say(&format!(
                        "transfer {}: verified answer received on attempt {round}",
                        report.item.id
                    ));
                }
                continue;
            };
            let last = last.clone();
            match (&last, &broken) {
                (Failure::Refused(code), _) if code.means_altered_in_transit() => {
                    report.alerts.push(Alert::Altered(*code));
                    self.alert(Alert::Altered(*code));
                }
                (Failure::Integrity(e), _) => report.alerts.push(Alert::Integrity(*e)),
                (_, Some(Failure::Integrity(e))) if report.sends > 0 => {
                    report.alerts.push(Alert::Integrity(*e));
                }
                _ => {}
            }
            let last = match (&last, &broken) {
                (Failure::Local(_), Some(b)) => b.clone(),
                _ => last,
            };
            report.outcome = Outcome::Unknown { last: last.clone() };
            if round < attempts {
                let why = last.describe(self.link.config.min_iterations);
                let how = match (&moved, &broken) {
                    (Some(server), _) => format!("on {server}"),
                    (None, Some(_)) => "on a new connection".into(),
                    (None, None) => "and a fresh nonce".into(),
                };
                self.sink.say(&format!(
                    "transfer {}: no verified answer ({why}); retrying with the same id {how} \
                     (attempt {} of {attempts})",
                    report.item.id,
                    round + 1
                ));
            }
        }
    }

    /// Logs out politely, ignoring any failure (the connection closes either way).
    pub fn logout(&mut self) {
        if let Some(mut c) = self.conn.take() {
            if !c.session().is_failed() && c.session().user().is_some() {
                let _ = c.logout();
            }
        }
    }
}

fn record(report: &mut TransferReport, receipt: txsock_core::session::ReceiptInfo) {
    report.outcome = match receipt.result {
        Ok(()) => Outcome::Committed {
            balance: receipt.balance,
        },
        Err(code) => Outcome::Refused {
            code,
            balance: receipt.balance,
        },
    };
}

/// Sends each pending transfer and waits for its answer before the next. Returns the failure
/// that broke the session, if one did.
fn one_by_one(
    client: &mut Client,
    pending: &[usize],
    reports: &mut [TransferReport],
    timeout: Duration,
) -> Option<Failure> {
    for &i in pending {
        let item = reports[i].item.clone();
        reports[i].sends += 1;
        match client.transfer(item.id.as_str(), item.to.as_str(), item.amount) {
            Ok(receipt) => record(&mut reports[i], receipt),
            Err(e) => {
                let f = Failure::from_blocking(e, timeout);
                reports[i].outcome = Outcome::Unknown { last: f.clone() };
                if !matches!(f, Failure::Refused(_)) || client.session().is_failed() {
                    return Some(f);
                }
            }
        }
    }
    None
}

/// Sends the pending transfers pipelined: a batch of nonces, then up to 8 transfers in one
/// write, then their answers in order.
fn pipelined(
    client: &mut Client,
    pending: &[usize],
    reports: &mut [TransferReport],
    timeout: Duration,
) -> Option<Failure> {
    let broken = |e| Some(Failure::from_blocking(e, timeout));
    for chunk in pending.chunks(MAX_NONCE_BATCH) {
        // The chunk has 1 to 8 entries.
        let count = chunk.len() as u8;
        if let Err(e) = client.session().request_nonces(count) {
            return Some(Failure::Local(e.to_string()));
        }
        match client.next_event() {
            Ok(ClientEvent::Nonces { available }) if available >= chunk.len() => {}
            Ok(ClientEvent::Nonces { .. }) => {
                return Some(Failure::Lost("the server issued too few nonces".into()))
            }
            Ok(ClientEvent::Refused { code, .. } | ClientEvent::Closed { code }) => {
                return broken(BlockingError::Refused(code))
            }
            Ok(ClientEvent::Integrity(e)) => return Some(Failure::Integrity(e)),
            Ok(_) => return Some(Failure::Integrity(IntegrityError::UnexpectedResponse)),
            Err(e) => return broken(e),
        }
        for &i in chunk {
            let item = &reports[i].item;
            let mut sent =
                client
                    .session()
                    .transfer(item.id.as_str(), item.to.as_str(), item.amount);
            if sent == Err(ClientError::Busy) {
                // The output buffer is full: write it out, then there is room.
                if let Err(e) = client.flush() {
                    return broken(e);
                }
                sent = client
                    .session()
                    .transfer(item.id.as_str(), item.to.as_str(), item.amount);
            }
            if let Err(e) = sent {
                return Some(Failure::Local(e.to_string()));
            }
            reports[i].sends += 1;
        }
        if let Err(e) = client.flush() {
            return broken(e);
        }
        for _ in chunk {
            match client.next_event() {
                Ok(ClientEvent::Receipt(r)) => {
                    if let Some(&i) = chunk.iter().find(|&&i| reports[i].item.id == r.id) {
                        record(&mut reports[i], r);
                    }
                }
                Ok(ClientEvent::Refused {
                    request: RequestKind::Transfer,
                    code,
                    id: Some(id),
                }) => {
                    if let Some(&i) = chunk.iter().find(|&&i| reports[i].item.id == id) {
                        reports[i].outcome = Outcome::Unknown {
                            last: Failure::Refused(code),
                        };
                    }
                }
                Ok(ClientEvent::Refused { code, .. } | ClientEvent::Closed { code }) => {
                    return broken(BlockingError::Refused(code))
                }
                Ok(ClientEvent::Integrity(e)) => return Some(Failure::Integrity(e)),
                Ok(_) => return Some(Failure::Integrity(IntegrityError::UnexpectedResponse)),
                Err(e) => return broken(e),
            }
        }
    }
    None
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Committed { .. } => f.write_str("committed"),
            Outcome::Refused { code, .. } => f.write_str(code.name()),
            Outcome::Unknown { .. } => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, from: &str, to: &str) -> HistoryEntry {
        HistoryEntry::transfer(
            TransferId::parse(id).unwrap(),
            Username::parse(from).unwrap(),
            Username::parse(to).unwrap(),
            Amount(1),
            0,
        )
    }

    #[test]
    fn a_re_sent_id_is_told_from_the_history_pages() {
        let alice = Username::parse("alice").unwrap();
        let x = TransferId::parse("x").unwrap();
        let (old, mine, theirs) = (
            entry("old", "alice", "bob"),
            entry("x", "alice", "bob"),
            entry("x", "bob", "alice"),
        );
        let new = entry("n", "carol", "alice");
        // Already on the page before sending.
        assert_eq!(
            committed_earlier(&alice, &x, std::slice::from_ref(&mine), &[]),
            Some(true)
        );
        // No history before: it cannot have been committed earlier.
        assert_eq!(
            committed_earlier(&alice, &x, &[], std::slice::from_ref(&mine)),
            Some(false)
        );
        // Newer than the newest entry before sending: committed now.
        let after = [mine.clone(), old.clone()];
        assert_eq!(
            committed_earlier(&alice, &x, std::slice::from_ref(&old), &after),
            Some(false)
        );
        // Older than it (fell off the first page before): committed earlier.
        let after = [new.clone(), old.clone()];
        assert_eq!(
            committed_earlier(&alice, &x, std::slice::from_ref(&old), &after),
            Some(true)
        );
        // Someone else's transfer with the same id is not this one.
        let after = [theirs, old.clone()];
        assert_eq!(
            committed_earlier(&alice, &x, std::slice::from_ref(&old), &after),
            Some(true)
        );
        // Both gone from the page: cannot tell.
        assert_eq!(
            committed_earlier(&alice, &x, &[old], &[new.clone(), new]),
            None
        );
    }
}
