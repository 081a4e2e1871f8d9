//! A real Redis for the tests: one `redis-server`, or, with `DESKHOOK_TEST_REDIS=cluster`, a
//! Redis Cluster of three masters, as many managed Redis offerings run. Every node is on free
//! ports with its data in a scratch directory, and the same tests run against either: the
//! URL tells deskhook which it is (`redis://` or `redis+cluster://`).
//!
//! Without `redis-server` (and, for a cluster, `redis-cli`) on the machine the tests that need
//! it are skipped with a message saying so, except in CI (`CI=true`), where a missing Redis
//! fails the run: CI installs it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::TempDir;

/// The environment variable choosing the Redis the tests run against: `cluster` for a
/// three-master cluster, anything else (or nothing) for one server.
pub const MODE_VAR: &str = "DESKHOOK_TEST_REDIS";
/// Masters of the test cluster: the fewest `redis-cli --cluster create` accepts.
const CLUSTER_NODES: usize = 3;
/// Longest wait for a node to answer, or for the cluster to agree it is whole.
const STARTUP: Duration = Duration::from_secs(30);

/// A running Redis, standalone or a cluster; every node is killed on drop.
pub struct RedisServer {
    nodes: Vec<Node>,
    cluster: bool,
}

impl RedisServer {
    /// Starts one server, or a cluster when [`MODE_VAR`] says so; returns `None` (after
    /// printing why) when a program it needs is missing outside CI. In CI a missing program
    /// panics.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_as(
            test,
            std::env::var(MODE_VAR).is_ok_and(|mode| mode == "cluster"),
        )
    }

    /// One server, whatever [`MODE_VAR`] says, for a test about a single Redis.
    pub fn start_single(test: &str) -> Option<Self> {
        Self::start_as(test, false)
    }

    /// A cluster, whatever [`MODE_VAR`] says, for a test about a Redis Cluster.
    pub fn start_cluster(test: &str) -> Option<Self> {
        Self::start_as(test, true)
    }

    fn start_as(test: &str, cluster: bool) -> Option<Self> {
        super::tools::require(test, &["redis-server"], "redis-server")?;
        if cluster {
            super::tools::require(test, &["redis-cli"], "redis-tools")?;
        }
        let count = if cluster { CLUSTER_NODES } else { 1 };
        let mut server = Self {
            nodes: (0..count).map(|_| Node::new(cluster)).collect(),
            cluster,
        };
        for node in &mut server.nodes {
            node.start_on_free_ports();
        }
        if cluster {
            server.create_cluster();
            server.wait_until_whole();
        }
        Some(server)
    }

    /// The URL deskhook is given: a cluster is named by its first node, as a seed.
    pub fn url(&self) -> String {
        let scheme = if self.cluster {
            "redis+cluster"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.nodes[0].port)
    }

    /// A plain `redis://` URL of a node that does not hold `key`: it answers `MOVED` for it.
    pub fn url_of_node_not_holding(&self, key: &str) -> String {
        let node = self
            .nodes
            .iter()
            .find(|node| !node.holds(key))
            .unwrap_or_else(|| panic!("every Redis node holds the slot of {key}"));
        node.url()
    }

    /// A plain `redis://` URL of the node that holds `key`, for a test that reads deskhook's
    /// keys with an ordinary client: in a cluster the other nodes answer `MOVED`.
    pub fn url_of_node_holding(&self, key: &str) -> String {
        let node = self
            .nodes
            .iter()
            .find(|node| node.holds(key))
            .unwrap_or_else(|| panic!("no Redis node holds the slot of {key}"));
        node.url()
    }

    /// `used_memory` and `used_memory_peak` of every node, from `INFO memory`.
    pub fn memory(&self) -> Vec<NodeMemory> {
        self.nodes.iter().map(Node::memory).collect()
    }

    /// Joins the nodes into one cluster, the slots spread evenly, no replicas: the way an
    /// operator creates one.
    fn create_cluster(&self) {
        let addresses: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = run_bounded(
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addresses)
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
            STARTUP,
        );
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Waits until every node says `cluster_state:ok`: all slots served, so a command on any
    /// key succeeds.
    fn wait_until_whole(&self) {
        let deadline = Instant::now() + STARTUP;
        while !self.nodes.iter().all(Node::cluster_is_ok) {
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not reach cluster_state:ok in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills every node with SIGKILL (no chance to flush anything) and starts them again on
    /// the same ports with the same data directories (and, for a cluster, the same
    /// `nodes.conf`, so the cluster forms again as it was).
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills every node (SIGKILL).
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every node again after [`RedisServer::kill`], and waits until the cluster is
    /// whole again.
    pub fn start_again(&mut self) {
        for node in &mut self.nodes {
            node.spawn();
        }
        for node in &mut self.nodes {
            assert!(
                node.answers_in_time(),
                "redis-server on port {} exited at its restart",
                node.port
            );
        }
        if self.cluster {
            self.wait_until_whole();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one node's `INFO memory` says, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct NodeMemory {
    pub port: u16,
    pub used: u64,
    pub peak: u64,
}

/// One `redis-server` process and what it keeps across restarts.
struct Node {
    child: Option<Child>,
    port: u16,
    /// The cluster bus port (`--cluster-port`, Redis 7 and later), chosen free like the
    /// client port rather than the default port + 10000, which may be taken or out of range.
    bus_port: u16,
    cluster: bool,
    dir: TempDir,
}

impl Node {
    fn new(cluster: bool) -> Self {
        let (port, bus_port) = two_free_ports();
        Self {
            child: None,
            port,
            bus_port,
            cluster,
            dir: TempDir::new("redis"),
        }
    }

    /// Starts the server on ports that were free a moment ago. Another process (a client's
    /// outgoing connection, another test) may have taken one since, and the server then exits
    /// at once: it is tried again on other ports.
    fn start_on_free_ports(&mut self) {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            self.spawn();
            if self.answers_in_time() {
                return;
            }
            (self.port, self.bus_port) = two_free_ports();
        }
        panic!("redis-server exited at start on {ATTEMPTS} pairs of free ports");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `appendonly yes` with `appendfsync always`: every write the server acknowledged is on
    /// disk, which is what the restart tests rely on.
    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path(""));
        if self.cluster {
            // nodes.conf is written in --dir: a restarted node finds its cluster there.
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-port", &self.bus_port.to_string()]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    /// Waits until the server answers `PING`: true, or false if it exited first (its port
    /// was taken). A server that neither answers nor exits in time fails the test.
    fn answers_in_time(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        while self.query::<String>(&redis::cmd("PING")).as_deref() != Some("PONG") {
            let child = self.child.as_mut().expect("the server was spawned");
            if child
                .try_wait()
                .expect("the server can be polled")
                .is_some()
            {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer in time",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn cluster_is_ok(&self) -> bool {
        let mut info = redis::cmd("CLUSTER");
        info.arg("INFO");
        self.query::<String>(&info)
            .is_some_and(|info| info.lines().any(|line| line.trim() == "cluster_state:ok"))
    }

    /// Whether this node serves `key`'s slot: any other node of a cluster refuses a command
    /// on it with `MOVED`.
    fn holds(&self, key: &str) -> bool {
        let mut exists = redis::cmd("EXISTS");
        exists.arg(key);
        self.query::<i64>(&exists).is_some()
    }

    fn memory(&self) -> NodeMemory {
        let mut info = redis::cmd("INFO");
        info.arg("memory");
        let info: String = self
            .query(&info)
            .unwrap_or_else(|| panic!("INFO memory is answered on port {}", self.port));
        let field = |name: &str| -> u64 {
            info.lines()
                .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in INFO memory"))
        };
        NodeMemory {
            port: self.port,
            used: field("used_memory"),
            peak: field("used_memory_peak"),
        }
    }

    /// The answer to `command` on a connection of its own, or `None` on any failure.
    fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Option<T> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        connection
            .set_read_timeout(Some(Duration::from_secs(1)))
            .ok()?;
        command.query(&mut connection).ok()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two distinct ports nothing listens on now: both are held until both are chosen.
fn two_free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (first, second) = (bind(), bind());
    let port = |listener: &std::net::TcpListener| listener.local_addr().expect("bound").port();
    (port(&first), port(&second))
}

/// Runs `command` to its end, killing it if it takes longer than `limit`.
fn run_bounded(command: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("the child can be polled").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child
                .wait_with_output()
                .expect("the child can be waited for");
            panic!(
                "{command:?} did not finish in {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .expect("the child can be waited for")
}
