//! Crash safety, Jepsen style: clients transfer between a few accounts while the server is
//! killed with SIGKILL at random moments under load and restarted; clients reconnect and
//! retry with the same transfer ids. Afterwards, read from the database itself: every
//! acknowledged transfer is journaled exactly once with its recipient and amount, nothing
//! refused or unacknowledged is journaled, money is conserved, no balance is negative,
//! `txsock ledger check` passes, and every transfer id sent again (during the run and once
//! more at the end) gets back its original result. Clients pipeline: each sends a window of
//! transfers back to back before reading their receipts, so a kill lands while several of a
//! connection's transfers wait on the ledger at once (PROTOCOL.md §5, pipelining).
//!
//! Runs on SQLite and on MySQL/MariaDB (`TXSOCK_TEST_MYSQL_URL`; see `tests/mysql.rs`).
//! The short forms run in `cargo test`; `cargo xtask crash --rounds N` runs the long forms
//! (`TXSOCK_CRASH_ROUNDS=N`, default 20 kills).

use rand_core::RngCore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use txsock_core::session::{ClientEvent, ReceiptInfo};
use txsock_core::{Amount, ErrorCode};
use txsock_e2e::*;

const ACCOUNTS: [&str; 4] = ["acct0", "acct1", "acct2", "acct3"];
/// Every account's opening balance, in minor units (1000.00).
const OPENING: u64 = 100_000;

/// What one client saw: the verified receipt of every transfer id it finished.
type Acknowledged = HashMap<String, ReceiptInfo>;

fn random_below(n: u64) -> u64 {
    rand_core::OsRng.next_u64() % n
}

/// Where the ledger lives, so the checks can read it directly rather than through txsock.
enum Backend {
    Sqlite,
    Mysql(MysqlDatabase),
}

/// One journaled transfer: sender, transfer id, recipient, amount (minor units).
type JournalRow = (String, String, String, u64);

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Mysql(_) => "mariadb",
        }
    }

    fn start_server(&self, flags: &[&str]) -> Server {
        match self {
            Backend::Sqlite => Server::start(flags),
            Backend::Mysql(db) => Server::start_on_db(&db.url, flags),
        }
    }

    /// Every transfer in the journal, and every account's balance.
    fn read_ledger(&self, server: &Server) -> (Vec<JournalRow>, Vec<(String, i64)>) {
        const JOURNAL: &str =
            "SELECT from_user, transfer_id, to_user, amount FROM journal WHERE kind = 'transfer'";
        const BALANCES: &str = "SELECT name, balance FROM users";
        match self {
            Backend::Sqlite => {
                let db = rusqlite::Connection::open(server.data_dir.join("txsock.db"))
                    .expect("open the SQLite ledger");
                let journal = db
                    .prepare(JOURNAL)
                    .unwrap()
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let balances = db
                    .prepare(BALANCES)
                    .unwrap()
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                (journal, balances)
            }
            Backend::Mysql(db) => {
                use mysql::prelude::Queryable;
                let mut conn = db.connect();
                (conn.query(JOURNAL).unwrap(), conn.query(BALANCES).unwrap())
            }
        }
    }
}

/// Connects and logs in, retrying while the server is down; `None` after the deadline.
fn connect(addr: &RwLock<SocketAddr>, user: &str, deadline: Instant) -> Option<Client> {
    while Instant::now() < deadline {
        let target = *addr.read().unwrap();
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut c = client_over(stream);
            if c.login(user, &password(user)).is_ok() {
                return Some(c);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Transfers sent back to back before their receipts are read: fewer than the server's
/// default `--pipeline`, so all of them wait on the ledger together.
const WINDOW: usize = 4;

/// One transfer of a window: id, recipient, amount.
type Planned = (String, &'static str, Amount);

/// Sends `window` back to back, pipelined, then reads the verified receipts in order.
fn send_window(c: &mut Client, window: &[Planned]) -> Option<Vec<ReceiptInfo>> {
    if c.session().available_nonces() < window.len() {
        c.session().request_nonces(WINDOW as u8).ok()?;
        match c.next_event() {
            Ok(ClientEvent::Nonces { .. }) => {}
            _ => return None,
        }
    }
    for (id, to, amount) in window {
        c.session().transfer(id, to, *amount).ok()?;
    }
    let mut receipts = Vec::with_capacity(window.len());
    for _ in window {
        match c.next_event() {
            Ok(ClientEvent::Receipt(r)) => receipts.push(r),
            _ => return None,
        }
    }
    Some(receipts)
}

/// Sends `window` until verified receipts for all of it arrive, reconnecting as needed.
fn transfer_until_answered(
    addr: &RwLock<SocketAddr>,
    conn: &mut Option<Client>,
    user: &str,
    window: &[Planned],
    deadline: Instant,
) -> Option<Vec<ReceiptInfo>> {
    while Instant::now() < deadline {
        if conn.is_none() {
            *conn = connect(addr, user, deadline);
        }
        let c = conn.as_mut()?;
        match send_window(c, window) {
            Some(receipts) => return Some(receipts),
            // Connection lost or refused mid-flight: the outcomes are unknown, so retry the
            // same ids on a new connection; the server answers with the original results.
            None => *conn = None,
        }
    }
    None
}

/// The sizes of one run.
struct Plan {
    /// How many times the server is killed.
    kills: usize,
    /// Transfers each client sends at least (it goes on until the last kill is behind it).
    min_transfers: usize,
}

/// Receipts equal as far as the outcome goes: result, recipient, amount, balance after.
fn same_outcome(a: &ReceiptInfo, b: &ReceiptInfo) -> bool {
    (a.result, &a.to, a.amount, a.balance) == (b.result, &b.to, b.amount, b.balance)
}

fn run_bank(backend: Backend, plan: Plan) {
    let mut server = backend.start_server(&["--opening-balance", "1000.00"]);
    for name in ACCOUNTS {
        drop(server.login(name, true));
    }
    let addr = Arc::new(RwLock::new(server.addr));
    let deadline = Instant::now() + Duration::from_secs(120 + 15 * plan.kills as u64);
    // Receipts verified so far, by all clients: the killer waits for progress between kills.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let killing_done = Arc::new(AtomicBool::new(false));

    let clients: Vec<_> = ACCOUNTS
        .iter()
        .enumerate()
        .map(|(i, &user)| {
            let (addr, acknowledged, killing_done) =
                (addr.clone(), acknowledged.clone(), killing_done.clone());
            let min_transfers = plan.min_transfers;
            std::thread::spawn(move || {
                let mut acked = Acknowledged::new();
                let mut retries = 0usize;
                let mut conn = None;
                let mut k = 0;
                // Keep the load on until every kill has hit it, within a hard cap.
                while (k < min_transfers || !killing_done.load(Ordering::Acquire))
                    && k < 50 * min_transfers
                {
                    let window: Vec<Planned> = (0..WINDOW)
                        .map(|j| {
                            let to = ACCOUNTS[(i + 1 + random_below(3) as usize) % ACCOUNTS.len()];
                            (
                                format!("{user}-{}", k + j),
                                to,
                                Amount(1 + random_below(30_000)),
                            )
                        })
                        .collect();
                    k += WINDOW;
                    let Some(receipts) =
                        transfer_until_answered(&addr, &mut conn, user, &window, deadline)
                    else {
                        panic!("{user}: no answer for {window:?} before the deadline");
                    };
                    for ((id, _, _), receipt) in window.iter().zip(&receipts) {
                        assert!(
                            receipt.result.is_ok()
                                || receipt.result == Err(ErrorCode::InsufficientFunds),
                            "{id}: {receipt:?}"
                        );
                        acknowledged.fetch_add(1, Ordering::Release);
                    }
                    // Now and then, act as if the replies were lost: send the same ids again
                    // and demand the original results.
                    if k % (7 * WINDOW) == 3 * WINDOW {
                        let again =
                            transfer_until_answered(&addr, &mut conn, user, &window, deadline)
                                .unwrap_or_else(|| {
                                    panic!("{user}: retry of {window:?} not answered")
                                });
                        for ((id, _, _), (again, receipt)) in
                            window.iter().zip(again.iter().zip(&receipts))
                        {
                            assert!(
                                same_outcome(again, receipt),
                                "{id}: retry got {again:?}, first answer {receipt:?}"
                            );
                            retries += 1;
                        }
                    }
                    for ((id, _, _), receipt) in window.into_iter().zip(receipts) {
                        acked.insert(id, receipt);
                    }
                }
                (user, acked, retries)
            })
        })
        .collect();

    // Each kill lands at a random moment while transfers are flowing: after a random number
    // of new receipts since the last restart (on average the share of the planned load that
    // spreads the kills over the whole run), plus a random few milliseconds.
    let gap = (ACCOUNTS.len() * plan.min_transfers / plan.kills).max(1) as u64;
    let mut kills = 0;
    while kills < plan.kills && Instant::now() < deadline {
        let wait_for = acknowledged.load(Ordering::Acquire) + 1 + random_below(2 * gap) as usize;
        while acknowledged.load(Ordering::Acquire) < wait_for
            && Instant::now() < deadline
            && !clients.iter().all(|c| c.is_finished())
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        if clients.iter().all(|c| c.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(random_below(25)));
        server.crash_and_restart();
        *addr.write().unwrap() = server.addr;
        kills += 1;
    }
    killing_done.store(true, Ordering::Release);
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    assert_eq!(
        kills, plan.kills,
        "the server was killed {kills} times, not {}",
        plan.kills
    );

    // After the last restart, every transfer id once more: each gets its original answer.
    let final_deadline = Instant::now() + Duration::from_secs(300);
    let final_retries: usize = std::thread::scope(|scope| {
        let checkers: Vec<_> = results
            .iter()
            .map(|(user, acked, _)| {
                let addr = &addr;
                scope.spawn(move || {
                    let mut conn = None;
                    let all: Vec<_> = acked.iter().collect();
                    for chunk in all.chunks(WINDOW) {
                        let window: Vec<Planned> = chunk
                            .iter()
                            .map(|(id, r)| {
                                let to = ACCOUNTS.into_iter().find(|a| *a == r.to.as_str());
                                (id.to_string(), to.expect("an account"), r.amount)
                            })
                            .collect();
                        let again =
                            transfer_until_answered(addr, &mut conn, user, &window, final_deadline)
                                .unwrap_or_else(|| {
                                    panic!("{user}: final retry of {window:?} not answered")
                                });
                        for ((id, receipt), again) in chunk.iter().zip(&again) {
                            assert!(
                                same_outcome(again, receipt),
                                "{user}/{id}: after the last restart {again:?}, first answer \
                                 {receipt:?}"
                            );
                        }
                    }
                    acked.len()
                })
            })
            .collect();
        checkers
            .into_iter()
            .map(|c| c.join().expect("checker"))
            .sum()
    });
    let retries = final_retries + results.iter().map(|r| r.2).sum::<usize>();
    assert!(server.stop(), "server did not stop cleanly");

    // The journal holds exactly the acknowledged transfers, each once, as acknowledged.
    let (journal, balances) = backend.read_ledger(&server);
    let mut journaled: HashMap<(String, String), Vec<(String, u64)>> = HashMap::new();
    for (from, id, to, amount) in journal {
        journaled.entry((from, id)).or_default().push((to, amount));
    }
    let (mut committed, mut refused, mut sent) = (0, 0, 0);
    for (user, acked, _) in &results {
        for (id, receipt) in acked {
            sent += 1;
            let rows = journaled
                .remove(&(user.to_string(), id.clone()))
                .unwrap_or_default();
            match receipt.result {
                Ok(()) => {
                    committed += 1;
                    assert_eq!(
                        rows,
                        [(receipt.to.to_string(), receipt.amount.minor())],
                        "{user}/{id} acknowledged as {receipt:?}, journaled as {rows:?}"
                    );
                }
                Err(_) => {
                    refused += 1;
                    assert!(
                        rows.is_empty(),
                        "{user}/{id} refused but journaled {rows:?}"
                    );
                }
            }
        }
    }
    assert!(
        journaled.is_empty(),
        "journaled transfers nobody was told about: {journaled:?}"
    );
    let total: i64 = balances.iter().map(|(_, b)| b).sum();
    assert_eq!(
        total as u64,
        OPENING * ACCOUNTS.len() as u64,
        "money not conserved: {balances:?}"
    );
    assert!(
        balances.iter().all(|(_, b)| *b >= 0),
        "negative balance: {balances:?}"
    );
    let check = server.admin(&["ledger", "check"], "");
    assert!(
        check.status.success(),
        "ledger check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    println!(
        "crash test on {}: {kills} kills, {sent} transfers acknowledged ({committed} committed, \
         {refused} refused), {retries} same-id retries with the original result, lost: 0, \
         duplicated: 0",
        backend.name()
    );
}

/// `TXSOCK_CRASH_ROUNDS` (set by `cargo xtask crash --rounds N`), default 20.
fn long_plan() -> Plan {
    let kills = std::env::var("TXSOCK_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(20);
    Plan {
        kills,
        min_transfers: 100 * kills,
    }
}

const SHORT: Plan = Plan {
    kills: 5,
    min_transfers: 150,
};

#[test]
fn transfers_survive_sigkill_short_sqlite() {
    run_bank(Backend::Sqlite, SHORT);
}

#[test]
fn transfers_survive_sigkill_short_mysql() {
    let Some(db) = MysqlDatabase::create("crash_short") else {
        return;
    };
    run_bank(Backend::Mysql(db), SHORT);
}

/// The long form on SQLite: `cargo xtask crash --rounds N`.
#[test]
#[ignore = "long; run with cargo xtask crash"]
fn transfers_survive_sigkill_long_sqlite() {
    run_bank(Backend::Sqlite, long_plan());
}

/// The long form on MySQL/MariaDB: `cargo xtask crash --rounds N`.
#[test]
#[ignore = "long; run with cargo xtask crash"]
fn transfers_survive_sigkill_long_mysql() {
    let Some(db) = MysqlDatabase::create("crash_long") else {
        return;
    };
    run_bank(Backend::Mysql(db), long_plan());
}
