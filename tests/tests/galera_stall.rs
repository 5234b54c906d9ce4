//! An on-demand check (`#[ignore]`d; run it by name): does a Galera node stall when
//! a local transaction holds a row lock that a replicated write needs, while a causal read
//! waits on that node? The fifth stop's three-server bench once saw the whole cluster stop
//! committing for 50 s (docs/BENCHMARKS.md, "galera"; the suspicion: an applier stuck behind
//! a local transaction that its brute-force abort did not free, cf. MDEV-24966).
//!
//! Each case: a local transaction on node 0 locks row 1 (`SELECT … FOR UPDATE`, then
//! optionally writes it); node 1 updates row 1 and commits (its certification passes: node
//! 0's transaction has not been certified); node 0's applier then needs the lock. A causal
//! read (`wsrep_sync_wait = 1`) on node 0 waits until that write is applied: either from a
//! second connection, or from the lock holder itself (what a txsock batch did before it
//! skipped the causal wait under locks). Each case asserts what must happen without a
//! stall: node 1's commit succeeds, the causal read answers (the holder's own read may
//! instead be aborted by the cluster, deadlock 1213), and row 1 ends with node 1's write
//! and without the holder's, which the cluster aborted. A stall shows as a read that fails
//! with the lock wait timeout. It also prints how long the reads took.
//!
//! `cargo test -p txsock-e2e --test galera_stall -- --ignored --nocapture` (starts its own
//! three-node cluster, about 20 s, as tests/tests/galera.rs; needs mariadb-server, galera-4,
//! rsync).

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder};
use std::time::{Duration, Instant};
use txsock_e2e::galera::{Cluster, DATABASE};

fn connect(cluster: &Cluster, node: usize) -> Conn {
    let url = Opts::from_url(&cluster.url(node, DATABASE)).expect("a node's URL");
    let opts: Opts = OptsBuilder::from_opts(url)
        .read_timeout(Some(Duration::from_secs(150)))
        .into();
    Conn::new(opts).expect("connecting to a node")
}

/// Runs one case on row 1, whose value is `before`, and asserts its outcome (module doc).
fn case(cluster: &Cluster, name: &str, holder_writes: bool, holder_reads: bool, before: i64) {
    let mut holder = connect(cluster, 0);
    let mut other = connect(cluster, 1);
    holder
        .query_drop("SET SESSION wsrep_sync_wait = 0")
        .unwrap();
    holder.query_drop("START TRANSACTION").unwrap();
    let _: Option<i64> = holder
        .query_first("SELECT v FROM stall WHERE id = 1 FOR UPDATE")
        .unwrap();
    if holder_writes {
        holder
            .query_drop("UPDATE stall SET v = v + 100 WHERE id = 1")
            .unwrap();
    }
    let started = Instant::now();
    let (read, read_took, remote_commit) = if holder_reads {
        // The holder reads causally over and over while node 1's write arrives, so that a
        // read is under way when the applier needs the holder's lock.
        let remote = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let began = Instant::now();
            other
                .query_drop("UPDATE stall SET v = v + 1 WHERE id = 1")
                .map_err(|e| e.to_string())
                .map(|()| began.elapsed())
        });
        let mut slowest = Duration::ZERO;
        let mut read: Result<Option<i64>, String> = Ok(None);
        let set = holder
            .query_drop("SET SESSION wsrep_sync_wait = 1")
            .map_err(|e| e.to_string());
        if let Err(e) = set {
            read = Err(e);
        }
        while read.is_ok() && started.elapsed() < Duration::from_millis(300) {
            let began = Instant::now();
            read = holder
                .query_first("SELECT v FROM stall WHERE id = 2")
                .map_err(|e| e.to_string());
            slowest = slowest.max(began.elapsed());
        }
        let remote = remote.join().expect("the remote writer");
        (read, slowest, remote)
    } else {
        let remote = other
            .query_drop("UPDATE stall SET v = v + 1 WHERE id = 1")
            .map_err(|e| e.to_string())
            .map(|()| started.elapsed());
        let mut reader = connect(cluster, 0);
        reader
            .query_drop("SET SESSION wsrep_sync_wait = 1")
            .unwrap();
        let began = Instant::now();
        let read = reader
            .query_first("SELECT v FROM stall WHERE id = 1")
            .map_err(|e| e.to_string());
        (read, began.elapsed(), remote)
    };
    let holder_after = holder.query_drop("COMMIT").map_err(|e| e.to_string());
    let row: Option<i64> = connect(cluster, 0)
        .query_first("SELECT v FROM stall WHERE id = 1")
        .unwrap();
    println!(
        "{name}: remote commit {remote_commit:?}; slowest causal read {} ms -> {read:?}; holder's COMMIT -> {holder_after:?}; row 1 now {row:?}",
        read_took.as_millis()
    );
    assert!(
        remote_commit.is_ok(),
        "{name}: node 1's commit: {remote_commit:?}"
    );
    match &read {
        Ok(_) => {}
        Err(e) if holder_reads && e.contains("1213") => {}
        Err(e) => panic!("{name}: the causal read failed: {e}"),
    }
    assert_eq!(
        row,
        Some(before + 1),
        "{name}: row 1 holds node 1's write and not the aborted holder's"
    );
}

#[test]
#[ignore = "an experiment on a three-node Galera cluster; run it by name"]
fn a_causal_read_behind_a_local_lock_holder() {
    if let Some(why) = txsock_e2e::galera::missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let cluster = Cluster::start().expect("starting the Galera cluster");
    let mut setup = connect(&cluster, 0);
    setup
        .query_drop("CREATE TABLE stall (id INT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB")
        .unwrap();
    setup
        .query_drop("INSERT INTO stall VALUES (1, 0), (2, 0)")
        .unwrap();
    for (before, (name, writes, reads)) in (0..).zip([
        ("lock only, read from another connection", false, false),
        ("lock and write, read from another connection", true, false),
        ("lock only, the holder reads", false, true),
        ("lock and write, the holder reads", true, true),
    ]) {
        case(&cluster, name, writes, reads, before);
    }
    for node in 0..3 {
        println!(
            "node {node}: {}",
            cluster
                .sql(
                    node,
                    "SHOW GLOBAL STATUS WHERE Variable_name IN \
                     ('wsrep_local_bf_aborts', 'wsrep_local_cert_failures', \
                      'wsrep_flow_control_paused', 'wsrep_local_state_comment')"
                )
                .unwrap_or_else(|e| e)
                .replace('\n', "; ")
        );
    }
}
