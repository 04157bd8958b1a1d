//! A private ClickHouse cluster for a test: a ZooKeeper server (Debian's `libzookeeper-java` package,
//! started by hand on a free port with a data directory of its own, not through systemd) and two
//! `clickhouse-server` 18.16 instances whose configs declare the cluster [`CLUSTER`]: two shards
//! of one replica each (`internal_replication`), macros `{shard}` = `01`/`02` and `{replica}`,
//! and the ZooKeeper for replicated tables and `ON CLUSTER` DDL.
//!
//! [`Cluster::start`] returns `None` (after printing `skipping: <why>`) when ZooKeeper or the
//! server is not installed, unless `NHISCOPE_REQUIRE_CLICKHOUSE=1` or `NHISCOPE_REQUIRE_BPF=1`:
//! then that is a failure. Everything is killed when dropped.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    clickhouse::{free_port, required, ClickHouse, SERVER_BIN},
    temp_dir,
};

/// The cluster's name in `remote_servers`.
pub const CLUSTER: &str = "nhiscope_test";
/// Debian's ZooKeeper jar (its manifest names every dependency) and the JVM.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
pub const JAVA: &str = "/usr/bin/java";
/// A logger for ZooKeeper's output (stderr, into its `stdout.log`).
const SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";
/// How long ZooKeeper may take to start serving.
pub const ZK_START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running standalone ZooKeeper server.
pub struct ZooKeeper {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl ZooKeeper {
    /// Starts a fresh standalone server on a free loopback port and waits until it answers.
    #[track_caller]
    fn start() -> ZooKeeper {
        let dir = temp_dir("zookeeper");
        let port = free_port();
        let data = dir.join("data");
        fs::create_dir_all(&data).unwrap_or_else(|e| panic!("cannot create {data:?}: {e}"));
        let cfg = dir.join("zoo.cfg");
        fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=100\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=srvr\nforceSync=no\npreAllocSize=1024\n",
                data.display()
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {cfg:?}: {e}"));
        let out = fs::File::create(dir.join("stdout.log"))
            .unwrap_or_else(|e| panic!("cannot create stdout.log: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone a file handle: {e}"));
        let child = Command::new(JAVA)
            .arg("-Xmx256m")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-cp")
            .arg(format!("{ZOOKEEPER_JAR}:{SLF4J_SIMPLE}"))
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&cfg)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ZooKeeper with {JAVA}: {e}"));
        let mut zk = ZooKeeper {
            dir,
            port,
            child: Some(child),
        };
        let started = Instant::now();
        loop {
            if zk.serving() {
                return zk;
            }
            if let Some(status) = zk.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "ZooKeeper exited ({status}) before answering\n{}",
                    zk.logs()
                );
            }
            if started.elapsed() > ZK_START_TIMEOUT {
                panic!(
                    "ZooKeeper did not answer within {ZK_START_TIMEOUT:?}\n{}",
                    zk.logs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it serves requests: its answer to the `srvr` four-letter command names its
    /// mode (`ruok` says `imok` before the server is running, and a ClickHouse 18.16 that
    /// failed its first connection to ZooKeeper crashes on `ON CLUSTER`).
    fn serving(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = Vec::new();
        s.write_all(b"srvr").is_ok()
            && s.read_to_end(&mut answer).is_ok()
            && String::from_utf8_lossy(&answer).contains("Mode: standalone")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tail of its output, for failure messages.
    pub fn logs(&self) -> String {
        let text = fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = "--- zookeeper stdout.log (last 20 lines):\n".to_owned();
        for l in &lines[lines.len().saturating_sub(20)..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// ZooKeeper and the two servers of [`CLUSTER`]; `servers[i]` is shard `0{i+1}`.
pub struct Cluster {
    // Dropped in order: the servers before the ZooKeeper they use.
    pub servers: Vec<ClickHouse>,
    pub zookeeper: ZooKeeper,
}

impl Cluster {
    /// Starts ZooKeeper, then both servers (side by side), and waits until all answer.
    #[track_caller]
    pub fn start(name: &str) -> Option<Cluster> {
        let missing = [JAVA, ZOOKEEPER_JAR, SERVER_BIN]
            .into_iter()
            .find(|p| !Path::new(p).is_file());
        if let Some(p) = missing {
            let why = format!(
                "{p} is missing (install libzookeeper-java and clickhouse-server with `cargo xtask setup`)"
            );
            if required() {
                panic!("this test needs ZooKeeper and ClickHouse: {why}");
            }
            eprintln!("skipping: {why}");
            return None;
        }
        let zookeeper = ZooKeeper::start();
        // Every port is chosen first: each config names both servers.
        let ports: Vec<(u16, u16, u16)> = (0..2)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let shards: String = ports
            .iter()
            .map(|(_, tcp, _)| {
                format!(
                    "<shard><internal_replication>true</internal_replication><replica>\
                     <host>127.0.0.1</host><port>{tcp}</port></replica></shard>"
                )
            })
            .collect();
        let zk_port = zookeeper.port();
        let starting: Vec<_> = ports
            .iter()
            .enumerate()
            .map(|(i, &(http, tcp, interserver))| {
                let shard = i + 1;
                let extra = format!(
                    r#"    <interserver_http_port>{interserver}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>
    <zookeeper>
        <node><host>127.0.0.1</host><port>{zk_port}</port></node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>
    <macros><shard>0{shard}</shard><replica>ch{shard}</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"#
                );
                let name = format!("{name}-shard{shard}");
                thread::spawn(move || ClickHouse::start_with(&name, http, tcp, &extra))
            })
            .collect();
        let mut servers = Vec::new();
        for t in starting {
            match t.join() {
                Ok(Some(ch)) => servers.push(ch),
                Ok(None) => return None,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        // 18.16 opens its ZooKeeper session in the background after it starts listening, and
        // crashes (a NULL session in zkutil::ZooKeeper::createImpl) on an ON CLUSTER query that
        // comes first: wait until every server can read ZooKeeper's root.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for (i, s) in servers.iter().enumerate() {
            loop {
                let probe = "SELECT count() FROM system.zookeeper WHERE path = '/'";
                if matches!(s.http("POST", "/", probe.as_bytes()), Ok((200, _))) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    panic!(
                        "shard {} never reached ZooKeeper on port {zk_port}\n{}",
                        i + 1,
                        s.logs()
                    );
                }
                thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        Some(Cluster { servers, zookeeper })
    }

    /// Every server's and ZooKeeper's log tails, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.servers.iter().enumerate() {
            out.push_str(&format!("=== shard {}:\n{}", i + 1, s.logs()));
        }
        out.push_str(&self.zookeeper.logs());
        out
    }
}
