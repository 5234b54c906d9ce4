//! txsock on a three-node MariaDB Galera cluster (`txsock_e2e::galera`), one `txsock serve` per
//! node, with servers and database nodes killed under load.
//!
//! Clients spread over the three servers transfer between a few accounts. At random moments
//! (after a random number of new receipts) a `txsock serve` is killed with SIGKILL and
//! started again, and a database node is killed with SIGKILL and started again, rejoining the
//! cluster by state transfer (IST or SST). Clients that lose their server, or whose server
//! answers `internal` (its node is down), move to the next server, log in again and re-send
//! the same transfer id; now and then a client re-sends an answered id on another server and
//! demands the original result. Afterwards, read from *each* node directly: every
//! acknowledged transfer journaled exactly once as acknowledged, nothing else journaled,
//! money conserved, no negative balance; `txsock ledger check` passes against each node; and
//! every id sent once more gets its original result.
//!
//! Each test starts its own cluster (about 20 s), or prints `skipped: <why>` where
//! mariadb-server, rsync or galera-4 are missing (and fails instead when `CI` is set or
//! `TXSOCK_REQUIRE_GALERA=1`). The short form runs in `cargo test`; `cargo xtask crash
//! --backend galera --rounds N` runs the long one (`TXSOCK_CRASH_ROUNDS=N`, default 20).

use mysql::prelude::Queryable;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use txsock_core::session::ReceiptInfo;
use txsock_core::Amount;
use txsock_e2e::crash::*;
use txsock_e2e::galera::{Cluster, DATABASE, NODES};
use txsock_e2e::*;

/// The servers' current addresses (a restarted server listens on a new port).
type Addresses = Arc<RwLock<Vec<SocketAddr>>>;

/// A client that moves to the next server whenever its server cannot answer.
struct Roamer {
    addrs: Addresses,
    user: String,
    /// Index of the server in use.
    at: usize,
    conn: Option<Client>,
    /// Times it left a server that failed it.
    moves: usize,
    /// Index of the server that gave the last receipt.
    answered_by: usize,
}

impl Roamer {
    fn new(addrs: Addresses, user: &str, at: usize) -> Roamer {
        Roamer {
            addrs,
            user: user.to_owned(),
            at,
            conn: None,
            moves: 0,
            answered_by: at,
        }
    }

    /// Gives up the current server for the next one.
    fn move_on(&mut self) {
        self.conn = None;
        self.at = (self.at + 1) % NODES;
        self.moves += 1;
    }

    /// Connects and logs in, trying the servers in turn; false after the deadline.
    fn connect(&mut self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            let target = self.addrs.read().unwrap()[self.at];
            if let Ok(stream) =
                std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))
            {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let mut c = client_over(stream);
                if c.login(&self.user, &password(&self.user)).is_ok() {
                    self.conn = Some(c);
                    return true;
                }
            }
            self.move_on();
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends transfer `id` until a verified receipt arrives, moving between servers.
    fn transfer(
        &mut self,
        id: &str,
        to: &str,
        amount: Amount,
        deadline: Instant,
    ) -> Option<ReceiptInfo> {
        while Instant::now() < deadline {
            if self.conn.is_none() && !self.connect(deadline) {
                return None;
            }
            let c = self.conn.as_mut()?;
            match c.transfer(id, to, amount) {
                Ok(receipt) => {
                    self.answered_by = self.at;
                    return Some(receipt);
                }
                // Lost, or refused as `internal` (this server's node is down): the outcome is
                // unknown, so the same id goes to the next server.
                Err(_) => self.move_on(),
            }
        }
        None
    }
}

/// The sizes of one run.
struct Plan {
    /// Rounds; each kills one `txsock serve` and one database node.
    rounds: usize,
    /// Transfers each client sends at least (it goes on until the last kill is behind it).
    min_transfers: usize,
}

/// The journal's transfers and every balance, read from node `node` itself.
fn read_node(cluster: &Cluster, node: usize) -> (Vec<JournalRow>, Vec<(String, i64)>) {
    let opts = mysql::Opts::from_url(&cluster.url(node, DATABASE)).expect("node URL");
    let mut conn = mysql::Conn::new(opts).expect("connecting to a node");
    // Causal reads: everything committed anywhere before is applied here first.
    conn.query_drop("SET SESSION wsrep_sync_wait = 1")
        .expect("wsrep_sync_wait");
    let journal = conn.query(JOURNAL_QUERY).expect("journal");
    let balances = conn.query(BALANCES_QUERY).expect("balances");
    (journal, balances)
}

/// What happened when, for the messages of a failed check.
#[derive(Clone)]
struct Timeline(Arc<std::sync::Mutex<Vec<(Instant, String)>>>, Instant);

impl Timeline {
    fn new() -> Timeline {
        Timeline(Arc::default(), Instant::now())
    }

    fn note(&self, what: String) {
        let mut events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        events.push((Instant::now(), what));
    }

    /// The events around the one that mentions `needle`: the kills within 20 s before it.
    fn around(&self, needle: &str) -> String {
        let events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(&(at, _)) = events.iter().find(|(_, e)| e.starts_with(needle)) else {
            return format!("({needle} not in the timeline)");
        };
        events
            .iter()
            .filter(|(t, e)| {
                (e.starts_with(needle) || !e.contains("answered"))
                    && *t + Duration::from_secs(20) >= at
                    && *t <= at + Duration::from_secs(5)
            })
            .map(|(t, e)| format!("{:.3} s {e}", (*t - self.1).as_secs_f64()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What each client was told: user, receipts by id, same-id retries, moves.
type Told = (&'static str, Acknowledged, usize, usize);

/// On every node, read directly: [`check_ledger`]'s checks (exactly the acknowledged
/// transfers journaled, money conserved, no negative balance), each failure with the
/// timeline around the transfer. Returns what was acknowledged, by outcome.
fn check_nodes(cluster: &Cluster, results: &[Told], timeline: &Timeline, when: &str) -> Tally {
    let mut tally = Tally::default();
    for node in 0..NODES {
        let (journal, balances) = read_node(cluster, node);
        let told = results.iter().map(|(user, acked, _, _)| (*user, acked));
        tally = check_ledger(
            &format!("{when}, node {node}"),
            journal,
            &balances,
            told,
            &|id| format!("; timeline: {}", timeline.around(&format!("{id} answered"))),
        );
    }
    tally
}

fn start_servers(cluster: &Cluster) -> Vec<Server> {
    let urls: Vec<String> = (0..NODES).map(|i| cluster.url(i, DATABASE)).collect();
    // All at once: they create and migrate one schema between them.
    std::thread::scope(|scope| {
        let starting: Vec<_> = urls
            .iter()
            .map(|url| scope.spawn(move || Server::start_on_db(url, &OPENING_FLAGS)))
            .collect();
        starting
            .into_iter()
            .map(|s| s.join().expect("server start"))
            .collect()
    })
}

/// The same transfer id sent at the same moment through two servers on two nodes, `count`
/// times: both get the same outcome (one node's transaction fails certification, runs again
/// and reads the other's outcome). Returns the receipts, for the checks at the end.
fn same_id_on_two_nodes_at_once(servers: &[Server], count: usize) -> Acknowledged {
    let mut a = servers[0].login("acct0", false);
    let mut b = servers[1].login("acct0", false);
    let mut acked = Acknowledged::new();
    for k in 0..count {
        let id = format!("acct0-twice-{k}");
        let amount = Amount(1 + random_below(500));
        let barrier = std::sync::Barrier::new(2);
        let (first, second) = std::thread::scope(|scope| {
            let (id, barrier) = (&id, &barrier);
            let one = scope.spawn(|| {
                barrier.wait();
                a.transfer(id, "acct1", amount)
            });
            let other = scope.spawn(|| {
                barrier.wait();
                b.transfer(id, "acct1", amount)
            });
            (one.join().expect("thread"), other.join().expect("thread"))
        });
        let (first, second) = (
            first.unwrap_or_else(|e| panic!("{id} on node 0: {e:?}")),
            second.unwrap_or_else(|e| panic!("{id} on node 1: {e:?}")),
        );
        assert!(
            same_outcome(&first, &second),
            "{id} sent through two nodes at once: {first:?} and {second:?}"
        );
        acked.insert(id, first);
    }
    acked
}

fn run_cluster_bank(mut cluster: Cluster, plan: Plan) {
    let started = Instant::now();
    let mut servers = start_servers(&cluster);
    for (i, name) in ACCOUNTS.iter().enumerate() {
        // Registered on one server, each account logs in on another: users are shared.
        drop(servers[i % NODES].login(name, true));
        drop(servers[(i + 1) % NODES].login(name, false));
    }
    let twice = same_id_on_two_nodes_at_once(&servers, 30);
    let addrs: Addresses = Arc::new(RwLock::new(servers.iter().map(|s| s.addr).collect()));
    let deadline = Instant::now() + Duration::from_secs(180 + 40 * plan.rounds as u64);
    let load = Arc::new(Load::default());
    let timeline = Timeline::new();

    let clients: Vec<_> = ACCOUNTS
        .iter()
        .enumerate()
        .map(|(i, &user)| {
            let (addrs, load, timeline) = (addrs.clone(), load.clone(), timeline.clone());
            let min_transfers = plan.min_transfers;
            std::thread::spawn(move || {
                let mut acked = Acknowledged::new();
                let mut retries = 0usize;
                let mut roamer = Roamer::new(addrs, user, i % NODES);
                let mut k = 0;
                while load.goes_on(k, min_transfers) {
                    let id = format!("{user}-{k}");
                    k += 1;
                    let to = random_recipient(i);
                    let amount = random_amount();
                    let receipt = roamer
                        .transfer(&id, to, amount, deadline)
                        .unwrap_or_else(|| {
                            panic!("{user}: no answer for {id} before the deadline")
                        });
                    assert_committed_or_short_of_funds(&id, &receipt);
                    load.acknowledge();
                    // Now and then, act as if the reply was lost and the client moved: send
                    // the same id to the next server and demand the original result.
                    if k % 7 == 3 {
                        roamer.move_on();
                        let again = roamer
                            .transfer(&id, to, amount, deadline)
                            .unwrap_or_else(|| panic!("{user}: retry of {id} not answered"));
                        assert_same_outcome(
                            &format!("{id}: retry on another server got"),
                            &again,
                            &receipt,
                        );
                        retries += 1;
                    }
                    timeline.note(format!(
                        "{id} answered by server {} ({:?})",
                        roamer.answered_by, receipt.result
                    ));
                    acked.insert(id, receipt);
                }
                (user, acked, retries, roamer.moves)
            })
        })
        .collect();

    // Each round: a server killed and restarted, then a database node killed and restarted,
    // each after a random number of new receipts (so at a random moment under load).
    let gap = (ACCOUNTS.len() * plan.min_transfers / (2 * plan.rounds)).max(1) as u64;
    let (mut server_kills, mut node_kills) = (0, 0);
    let mut rejoin = Duration::ZERO;
    for _ in 0..plan.rounds {
        if !load.wait_for_progress(gap, deadline, &clients) {
            break;
        }
        let victim = random_below(NODES as u64) as usize;
        timeline.note(format!("server {victim} killed"));
        servers[victim].crash_and_restart();
        addrs.write().unwrap()[victim] = servers[victim].addr;
        server_kills += 1;
        if !load.wait_for_progress(gap, deadline, &clients) {
            break;
        }
        let node = random_below(NODES as u64) as usize;
        timeline.note(format!("node {node} killed"));
        cluster.kill(node);
        node_kills += 1;
        // Down for a moment under load (its server answers `internal` meanwhile).
        std::thread::sleep(Duration::from_millis(random_below(1500)));
        let restarting = Instant::now();
        timeline.note(format!("node {node} restarting"));
        cluster
            .restart(node)
            .unwrap_or_else(|e| panic!("node {node} did not rejoin: {e}"));
        timeline.note(format!("node {node} synced"));
        rejoin = rejoin.max(restarting.elapsed());
    }
    load.killing_done();
    let mut results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    // Checked like the rest from here on.
    results.push(("acct0", twice, 0, 0));
    assert_eq!(
        (server_kills, node_kills),
        (plan.rounds, plan.rounds),
        "kills (servers, nodes) short of the plan"
    );

    // Before anything is sent again: every node holds exactly what was acknowledged.
    check_nodes(&cluster, &results, &timeline, "after the load");

    // Every id once more, each client starting on another server: the original answers.
    let final_deadline = Instant::now() + Duration::from_secs(300);
    let told = results.iter().map(|(user, acked, _, _)| (*user, acked));
    let final_retries = resend_all(told, |i, user, acked| {
        let mut roamer = Roamer::new(addrs.clone(), user, (i + 1) % NODES);
        for (id, receipt) in acked {
            let again = roamer
                .transfer(id, receipt.to.as_str(), receipt.amount, final_deadline)
                .unwrap_or_else(|| panic!("{user}: final retry of {id} not answered"));
            assert_same_outcome(&format!("{user}/{id}: at the end"), &again, receipt);
        }
    });
    let retries = final_retries + results.iter().map(|r| r.2).sum::<usize>();
    let moves: usize = results.iter().map(|r| r.3).sum();
    for server in &mut servers {
        assert!(server.stop(), "server did not stop cleanly");
    }

    // And after them: nothing changed, and `ledger check` passes against each node.
    let Tally { committed, refused } = check_nodes(&cluster, &results, &timeline, "at the end");
    for (node, server) in servers.iter().enumerate() {
        // `ledger check` with the configuration of this node's server (its --db).
        assert_ledger_check_passes(server, &format!("node {node}"));
    }
    println!(
        "crash test on galera ({NODES} nodes, {NODES} servers): {server_kills} servers and \
         {node_kills} database nodes killed and restarted (slowest rejoin {:.1} s), {} \
         transfers acknowledged ({committed} committed, {refused} refused), {moves} moves to \
         another server, {retries} same-id retries with the original result, lost: 0, \
         duplicated: 0, on every node; {:.0} s in all",
        rejoin.as_secs_f64(),
        committed + refused,
        started.elapsed().as_secs_f64()
    );
}

/// [`long_rounds`] rounds.
fn long_plan() -> Plan {
    let rounds = long_rounds();
    Plan {
        rounds,
        min_transfers: 60 * rounds,
    }
}

/// Two rounds: two servers and two database nodes killed.
const SHORT: Plan = Plan {
    rounds: 2,
    min_transfers: 80,
};

#[test]
fn transfers_survive_sigkill_of_servers_and_nodes_short_galera() {
    let Some(cluster) = galera_cluster() else {
        return;
    };
    run_cluster_bank(cluster, SHORT);
}

/// The long form: `cargo xtask crash --backend galera --rounds N`.
#[test]
#[ignore = "long; run with cargo xtask crash --backend galera"]
fn transfers_survive_sigkill_of_servers_and_nodes_long_galera() {
    let Some(cluster) = galera_cluster() else {
        return;
    };
    run_cluster_bank(cluster, long_plan());
}
