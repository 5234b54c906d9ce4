//! A throwaway three-node MariaDB Galera cluster on loopback, for the Galera tests and the
//! Galera rows of `cargo xtask bench`.
//!
//! std only and free of the rest of xtask, because the end-to-end tests include this very
//! file (`tests/src/lib.rs`, `#[path]`): they kill nodes and start them again, so they must
//! own the processes, and one implementation serves both.
//!
//! Layout: one temporary directory holds a directory per node (`node0`, `node1`, ...) with its
//! data, socket, pid file and error log. Each node is a `mariadbd` with `wsrep_on`, Debian's
//! galera-4 provider, and four loopback ports of its own: SQL, group communication
//! (`gmcast.listen_addr`), incremental state transfer (`ist.recv_addr`) and full state
//! transfer (rsync, `wsrep_sst_receive_address`). Every node lists all group addresses in
//! `wsrep_cluster_address=gcomm://…`; node 0 is bootstrapped with `--wsrep-new-cluster` and
//! the others join it and receive their data by state transfer. Memory is kept small
//! (16 MiB buffer pool, 32 MiB gcache, no performance schema): the cluster runs beside other
//! work. When run as root, the nodes run as the `mysql` account that Debian's mariadb-server
//! creates, because the rsync state transfer cannot run as root (its daemon drops to
//! `nobody`).
//!
//! [`Cluster::kill`] SIGKILLs a node; [`Cluster::restart`] starts it again without the
//! bootstrap flag, so it rejoins the running cluster and catches up (IST when the other nodes'
//! gcache still holds what it missed, else a full SST), and waits until it is synced. Dropping
//! the cluster stops every node (SIGTERM, then SIGKILL after 30 s) and deletes the directory.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The galera-4 provider library, as Debian installs it.
pub const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

/// How long a node may take to start, join and be synced.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Nodes in a [`Cluster`].
pub const NODES: usize = 3;

/// The database the test user may use, with every `txsock_test…` database.
pub const DATABASE: &str = "txsock_test";

/// One `mariadbd` of the cluster.
struct Node {
    dir: PathBuf,
    sql_port: u16,
    group_port: u16,
    ist_port: u16,
    sst_port: u16,
    child: Option<Child>,
}

/// A running throwaway Galera cluster of [`NODES`] nodes; stopped and deleted on drop.
pub struct Cluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    mariadbd: PathBuf,
    client: PathBuf,
    run_as: Option<&'static str>,
    password: String,
}

/// Finds `program` on `PATH` or in the sbin directories (not on a normal user's `PATH`).
fn find(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Why a cluster cannot be started here, or `None` if everything it needs is installed.
pub fn missing() -> Option<String> {
    for program in ["mariadbd", "mariadb-install-db", "mariadb", "rsync"] {
        if find(program).is_none() {
            return Some(format!(
                "`{program}` not found (Debian: mariadb-server, rsync)"
            ));
        }
    }
    if !Path::new(PROVIDER).exists() {
        return Some(format!("{PROVIDER} not found (Debian: galera-4)"));
    }
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// 16 random hex digits from the kernel.
fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Distinct loopback ports nobody listens on right now (all bound at once, so distinct).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("finding free loopback ports: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("finding free loopback ports: {e}"))
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn shown(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

impl Node {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }
}

impl Cluster {
    /// Creates the nodes' directories, bootstraps node 0, joins the others, and creates the
    /// database [`DATABASE`] and a user `txsock` (random password) allowed on
    /// `txsock_test%`; returns once every node is synced.
    pub fn start() -> Result<Cluster, String> {
        if let Some(why) = missing() {
            return Err(format!("cannot start a Galera cluster: {why}"));
        }
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "txsock-galera-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        let ports = free_ports(4 * NODES)?;
        let nodes = ports
            .chunks(4)
            .enumerate()
            .map(|(i, p)| Node {
                dir: dir.join(format!("node{i}")),
                sql_port: p[0],
                group_port: p[1],
                ist_port: p[2],
                sst_port: p[3],
                child: None,
            })
            .collect();
        // Dropping `cluster` cleans up from here on, also on the error paths below.
        let mut cluster = Cluster {
            dir: dir.clone(),
            nodes,
            // `missing` found all three.
            mariadbd: find("mariadbd").unwrap_or_default(),
            client: find("mariadb").unwrap_or_default(),
            run_as: is_root().then_some("mysql"),
            password: random_hex()?,
        };
        for node in &cluster.nodes {
            fs::create_dir_all(node.data())
                .map_err(|e| format!("creating {}: {e}", node.data().display()))?;
        }
        if let Some(user) = cluster.run_as {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(&dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "chown -R {user}: {} failed ({status}): is Debian's mariadb-server installed?",
                    dir.display()
                ));
            }
        }
        let started = Instant::now();
        cluster.install(0)?;
        cluster.spawn(0, true)?;
        cluster.wait_synced(0)?;
        for i in 1..NODES {
            cluster.spawn(i, false)?;
        }
        for i in 1..NODES {
            cluster.wait_synced(i)?;
        }
        let mut sql = format!("CREATE DATABASE IF NOT EXISTS {DATABASE};");
        // 'localhost' is the socket (the driver prefers it on loopback), 127.0.0.1 is TCP.
        for host in ["localhost", "127.0.0.1"] {
            sql.push_str(&format!(
                "CREATE USER 'txsock'@'{host}' IDENTIFIED BY '{}';\
                 GRANT ALL PRIVILEGES ON `txsock\\_test%`.* TO 'txsock'@'{host}';",
                cluster.password
            ));
        }
        cluster.sql(0, &sql)?;
        // Replication applies the user on the other nodes a moment later: a causal read on
        // each waits for it, so that servers may connect to any node at once.
        for node in 1..NODES {
            let seen = cluster.sql(
                node,
                "SET SESSION wsrep_sync_wait = 1; \
                 SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'txsock'",
            )?;
            if seen.trim() != "2" {
                return Err(format!(
                    "node {node} does not have the test user after a causal read ({seen:?})"
                ));
            }
        }
        println!(
            "Galera cluster for the tests: {NODES} nodes on 127.0.0.1:{}, data in {} ({} s to \
             start)",
            cluster
                .nodes
                .iter()
                .map(|n| n.sql_port.to_string())
                .collect::<Vec<_>>()
                .join(","),
            dir.display(),
            started.elapsed().as_secs()
        );
        Ok(cluster)
    }

    /// The URL of database `database` on node `node`, as user `txsock`.
    pub fn url(&self, node: usize, database: &str) -> String {
        format!(
            "mysql://txsock:{}@127.0.0.1:{}/{database}",
            self.password, self.nodes[node].sql_port
        )
    }

    /// Node `node`'s SQL port.
    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].sql_port
    }

    /// Runs `sql` as root on node `node` (over its socket); returns the output (tab-separated,
    /// no column names).
    pub fn sql(&self, node: usize, sql: &str) -> Result<String, String> {
        let output = Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.nodes[node].socket().display()))
            .args([
                "--user=root",
                "--batch",
                "--skip-column-names",
                "--execute",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not start {}: {e}", self.client.display()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "node {node}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Whether node `node` is running, in the primary component and synced.
    pub fn synced(&self, node: usize) -> bool {
        self.sql(node, "SHOW STATUS LIKE 'wsrep_local_state_comment'")
            .is_ok_and(|out| out.contains("Synced"))
    }

    /// Kills node `node` with SIGKILL (no shutdown at all).
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `node` again (after [`Cluster::kill`]): it rejoins the cluster and catches
    /// up by state transfer; returns once it is synced.
    pub fn restart(&mut self, node: usize) -> Result<(), String> {
        self.kill(node);
        self.spawn(node, false)?;
        self.wait_synced(node)
    }

    /// `mariadb-install-db` into node `node`'s data directory.
    fn install(&self, node: usize) -> Result<(), String> {
        let install_db = find("mariadb-install-db").unwrap_or_default();
        let log = self.nodes[node].dir.join("install.log");
        let log_file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut install = Command::new(&install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.nodes[node].data().display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .args(self.run_as.map(|u| format!("--user={u}")))
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(|e| format!("{}: {e}", log.display()))?,
            )
            .stderr(log_file);
        println!("$ {}", shown(&install));
        let status = install
            .status()
            .map_err(|e| format!("could not start {}: {e}", install_db.display()))?;
        if !status.success() {
            return Err(format!(
                "mariadb-install-db failed ({status}):\n{}",
                tail(&log)
            ));
        }
        Ok(())
    }

    /// Starts node `node`'s `mariadbd`; `bootstrap` makes it a new cluster's first node.
    fn spawn(&mut self, node: usize, bootstrap: bool) -> Result<(), String> {
        let members: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.group_port))
            .collect();
        let n = &self.nodes[node];
        let provider_options = format!(
            "gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=32M;\
             evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S",
            n.group_port, n.ist_port
        );
        let mut serve = Command::new(&self.mariadbd);
        serve
            .arg("--no-defaults")
            .args(self.run_as.map(|u| format!("--user={u}")))
            .arg(format!("--datadir={}", n.data().display()))
            .arg(format!("--socket={}", n.socket().display()))
            .arg(format!("--port={}", n.sql_port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--pid-file={}",
                n.dir.join("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", n.error_log().display()))
            .args([
                "--skip-name-resolve",
                "--max-connections=500",
                "--performance-schema=OFF",
                "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=16M",
                // What Galera requires: row-based replication, InnoDB, interleaved
                // auto-increment locks.
                "--binlog-format=ROW",
                "--default-storage-engine=InnoDB",
                "--innodb-autoinc-lock-mode=2",
                "--wsrep-on=ON",
                "--wsrep-cluster-name=txsock-test",
                "--wsrep-sst-method=rsync",
            ])
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg(format!(
                "--wsrep-cluster-address=gcomm://{}",
                members.join(",")
            ))
            .arg(format!("--wsrep-node-address=127.0.0.1:{}", n.group_port))
            .arg(format!("--wsrep-node-name=node{node}"))
            .arg(format!(
                "--wsrep-sst-receive-address=127.0.0.1:{}",
                n.sst_port
            ))
            .arg(format!("--wsrep-provider-options={provider_options}"))
            .args(bootstrap.then_some("--wsrep-new-cluster"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = serve
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", self.mariadbd.display()))?;
        self.nodes[node].child = Some(child);
        Ok(())
    }

    /// Waits until node `node` is synced.
    fn wait_synced(&mut self, node: usize) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.nodes[node].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.nodes[node].child = None;
                    return Err(format!(
                        "Galera node {node} exited at start ({status}):\n{}",
                        tail(&self.nodes[node].error_log())
                    ));
                }
            }
            if self.synced(node) {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "Galera node {node} was not synced within {} s:\n{}",
                    START_TIMEOUT.as_secs(),
                    tail(&self.nodes[node].error_log())
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for child in &children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for child in &mut children {
            wait_or_kill(child, deadline);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// How long a database server may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for `child` to exit, killing it (SIGKILL) if it has not by `deadline`: the end of a
/// graceful stop that must not hang. Also `mariadb.rs`'s, for the tests' MariaDB.
pub fn wait_or_kill(child: &mut Child, deadline: Instant) {
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}
