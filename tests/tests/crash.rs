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

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use txsock_core::session::{ClientEvent, ReceiptInfo};
use txsock_core::Amount;
use txsock_e2e::crash::*;
use txsock_e2e::*;

/// Where the ledger lives, so the checks can read it directly rather than through txsock.
enum Backend {
    Sqlite,
    Mysql(MysqlDatabase),
}

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
        match self {
            Backend::Sqlite => {
                let db = rusqlite::Connection::open(server.data_dir.join("txsock.db"))
                    .expect("open the SQLite ledger");
                let journal = db
                    .prepare(JOURNAL_QUERY)
                    .unwrap()
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let balances = db
                    .prepare(BALANCES_QUERY)
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
                (
                    conn.query(JOURNAL_QUERY).unwrap(),
                    conn.query(BALANCES_QUERY).unwrap(),
                )
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

fn run_bank(backend: Backend, plan: Plan) {
    let mut server = backend.start_server(&OPENING_FLAGS);
    for name in ACCOUNTS {
        drop(server.login(name, true));
    }
    let addr = Arc::new(RwLock::new(server.addr));
    let deadline = Instant::now() + Duration::from_secs(120 + 15 * plan.kills as u64);
    // Receipts verified so far, by all clients: the killer waits for progress between kills.
    let load = Arc::new(Load::default());

    let clients: Vec<_> = ACCOUNTS
        .iter()
        .enumerate()
        .map(|(i, &user)| {
            let (addr, load) = (addr.clone(), load.clone());
            let min_transfers = plan.min_transfers;
            std::thread::spawn(move || {
                let mut acked = Acknowledged::new();
                let mut retries = 0usize;
                let mut conn = None;
                let mut k = 0;
                // Keep the load on until every kill has hit it, within a hard cap.
                while load.goes_on(k, min_transfers) {
                    let window: Vec<Planned> = (0..WINDOW)
                        .map(|j| {
                            (
                                format!("{user}-{}", k + j),
                                random_recipient(i),
                                random_amount(),
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
                        assert_committed_or_short_of_funds(id, receipt);
                        load.acknowledge();
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
                            assert_same_outcome(&format!("{id}: retry got"), again, receipt);
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
    while kills < plan.kills && load.wait_for_progress(gap, deadline, &clients) {
        server.crash_and_restart();
        *addr.write().unwrap() = server.addr;
        kills += 1;
    }
    load.killing_done();
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
    let told = results.iter().map(|(user, acked, _)| (*user, acked));
    let final_retries = resend_all(told, |_, user, acked| {
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
            let again = transfer_until_answered(&addr, &mut conn, user, &window, final_deadline)
                .unwrap_or_else(|| panic!("{user}: final retry of {window:?} not answered"));
            for ((id, receipt), again) in chunk.iter().zip(&again) {
                assert_same_outcome(
                    &format!("{user}/{id}: after the last restart"),
                    again,
                    receipt,
                );
            }
        }
    });
    let retries = final_retries + results.iter().map(|r| r.2).sum::<usize>();
    assert!(server.stop(), "server did not stop cleanly");

    // The journal holds exactly the acknowledged transfers, each once, as acknowledged.
    let (journal, balances) = backend.read_ledger(&server);
    let told = results.iter().map(|(user, acked, _)| (*user, acked));
    let Tally { committed, refused } =
        check_ledger(backend.name(), journal, &balances, told, &|_| String::new());
    let sent = committed + refused;
    assert_ledger_check_passes(&server, backend.name());
    println!(
        "crash test on {}: {kills} kills, {sent} transfers acknowledged ({committed} committed, \
         {refused} refused), {retries} same-id retries with the original result, lost: 0, \
         duplicated: 0",
        backend.name()
    );
}

/// [`long_rounds`] kills.
fn long_plan() -> Plan {
    let kills = long_rounds();
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
