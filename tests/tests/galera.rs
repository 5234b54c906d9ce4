//! txsock on a three-node MariaDB Galera cluster (`txsock_e2e::galera`), one `txsock serve` per
//! node. Each test starts its own cluster (about 20 s), or prints `skipped: <why>` where
//! mariadb-server, rsync or galera-4 are missing (and fails instead when `CI` is set or
//! `TXSOCK_REQUIRE_GALERA=1`).

use txsock_e2e::*;

/// Three servers started at the same moment on three nodes create one schema between them,
/// and what one server records the others see at once.
#[test]
fn three_servers_start_at_once_on_three_nodes() {
    let Some(cluster) = galera_cluster() else {
        return;
    };
    let urls: Vec<String> = (0..galera::NODES)
        .map(|i| cluster.url(i, galera::DATABASE))
        .collect();
    let servers: Vec<Server> = std::thread::scope(|scope| {
        let starting: Vec<_> = urls
            .iter()
            .map(|url| {
                scope.spawn(move || Server::start_on_db(url, &["--opening-balance", "10.00"]))
            })
            .collect();
        starting
            .into_iter()
            .map(|s| s.join().expect("server start"))
            .collect()
    });
    let version = cluster
        .sql(1, "SELECT version FROM txsock_test.schema_version")
        .expect("schema version");
    assert!(!version.trim().is_empty(), "no schema version recorded");
    drop(servers[0].login("alice", true));
    drop(servers[1].login("bob", true));
    let mut alice = servers[2].login("alice", false);
    let receipt = alice
        .transfer("t1", "bob", txsock_core::Amount(250))
        .expect("transfer");
    assert!(receipt.result.is_ok(), "{receipt:?}");
    assert_eq!(servers[0].user_balance("bob"), txsock_core::Amount(1250));
    for server in &servers {
        assert!(server.ledger_ok());
    }
}
