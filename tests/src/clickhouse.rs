//! A real, private ClickHouse server for a test: Debian's `clickhouse-server` started on free
//! ports with a config of our own under a fresh directory, stopped and restarted on demand (for
//! outage tests), and killed when dropped.
//!
//! [`ClickHouse::start`] returns `None` (after printing `skipping: <why>`) when the server is
//! not installed, unless `NHISCOPE_REQUIRE_CLICKHOUSE=1` or `NHISCOPE_REQUIRE_BPF=1` (what
//! `cargo xtask test`, hence CI, sets): then a missing server is a failure.
//!
//! Queries go over HTTP with a tiny client of our own, so that the harness shares nothing with
//! the code under test.

use std::{
    env, fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::temp_dir;

/// The server binary Debian installs.
pub const SERVER_BIN: &str = "/usr/sbin/clickhouse-server";
/// How long a (re)started server may take to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A user with a password, besides `default` (no password).
pub const WRITER_USER: &str = "writer";
pub const WRITER_PASSWORD: &str = "s3cret-w";

/// A running private ClickHouse server.
pub struct ClickHouse {
    dir: PathBuf,
    http_port: u16,
    child: Option<Child>,
}

/// Whether tests must not skip when the server is missing.
pub(crate) fn required() -> bool {
    ["NHISCOPE_REQUIRE_CLICKHOUSE", "NHISCOPE_REQUIRE_BPF"]
        .iter()
        .any(|v| env::var_os(v).is_some_and(|v| v == "1"))
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999 by default): a port handed out here and
    // bound a moment later by a server cannot meanwhile become the source port of some outgoing
    // connection (ZooKeeper clients, HTTP requests), which `bind(:0)` ports can. No port is
    // handed out twice by one test process.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(131)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000 on 127.0.0.1")
}

impl ClickHouse {
    /// Starts a fresh server (empty data) and waits until it answers.
    #[track_caller]
    pub fn start(name: &str) -> Option<ClickHouse> {
        Self::start_with(name, free_port(), free_port(), "")
    }

    /// [`ClickHouse::start`] on the given ports, with `extra` XML elements (a cluster's
    /// `remote_servers`, `zookeeper`, `macros`...) added to the top level of its config.
    #[track_caller]
    pub fn start_with(
        name: &str,
        http_port: u16,
        tcp_port: u16,
        extra: &str,
    ) -> Option<ClickHouse> {
        if !Path::new(SERVER_BIN).is_file() {
            let why = format!("{SERVER_BIN} is missing (install it with `cargo xtask setup`)");
            if required() {
                panic!("this test needs ClickHouse: {why}");
            }
            eprintln!("skipping: {why}");
            return None;
        }
        let dir = temp_dir(&format!("clickhouse-{name}"));
        write_config(&dir, http_port, tcp_port, extra);
        let mut ch = ClickHouse {
            dir,
            http_port,
            child: None,
        };
        ch.launch();
        Some(ch)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The directory holding its config, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[track_caller]
    fn launch(&mut self) {
        let config = self.dir.join("config.xml");
        let out = fs::File::create(self.dir.join("stdout.log"))
            .unwrap_or_else(|e| panic!("cannot create stdout.log: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone a file handle: {e}"));
        let child = Command::new(SERVER_BIN)
            .arg(format!("--config-file={}", config.display()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SERVER_BIN}: {e}"));
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Ok((200, body)) = self.http("GET", "/ping", b"") {
                if body.starts_with(b"Ok.") {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "clickhouse-server exited ({status}) before answering\n{}",
                    self.logs()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "clickhouse-server did not answer within {START_TIMEOUT:?}\n{}",
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tail of its logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["stdout.log", "log/server.log"] {
            let text = fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {f} (last 20 lines):\n"));
            for l in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Stops it (SIGKILL: an outage as abrupt as they come) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The port is free once the listener is gone.
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.http_port)).is_ok()
            && started.elapsed() < Duration::from_secs(10)
        {
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same data and ports.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs `sql` as `default` and returns the body; panics on an error, with the message.
    #[track_caller]
    pub fn query(&self, sql: &str) -> String {
        match self.http("POST", "/", sql.as_bytes()) {
            Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
            Ok((status, body)) => panic!(
                "ClickHouse answered {status} to `{sql}`: {}",
                String::from_utf8_lossy(&body)
            ),
            Err(e) => panic!("cannot query ClickHouse (`{sql}`): {e}"),
        }
    }

    /// Runs `sql` and parses the result as one number.
    #[track_caller]
    pub fn query_u64(&self, sql: &str) -> u64 {
        let text = self.query(sql);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("`{sql}` returned {text:?}, not a number: {e}"))
    }

    /// Runs `sql` with `FORMAT JSONEachRow` appended and parses every row (64-bit numbers,
    /// which ClickHouse quotes, come back as numbers).
    #[track_caller]
    pub fn query_json(&self, sql: &str) -> Vec<serde_json::Value> {
        let path = "/?output_format_json_quote_64bit_integers=0";
        let body = format!("{sql} FORMAT JSONEachRow");
        let text = match self.http("POST", path, body.as_bytes()) {
            Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
            Ok((status, body)) => panic!(
                "ClickHouse answered {status} to `{sql}`: {}",
                String::from_utf8_lossy(&body)
            ),
            Err(e) => panic!("cannot query ClickHouse (`{sql}`): {e}"),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// One HTTP/1.0 request; returns the status and the body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        let status_line = String::from_utf8_lossy(&resp[..split]).into_owned();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line: {status_line}")))?;
        Ok((status, resp[split + 4..].to_vec()))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The server config: loopback only, everything under `dir`, UTC, small caches (tests run
/// several servers at once on a small machine), and two users: `default` without a password
/// and [`WRITER_USER`] with [`WRITER_PASSWORD`]; then `extra`.
fn write_config(dir: &Path, http_port: u16, tcp_port: u16, extra: &str) {
    let d = dir.display();
    let config = include_str!("../../examples/clickhouse/config.xml.in")
        .replace("@DIR@", &d.to_string())
        .replace("@HTTP_PORT@", &http_port.to_string())
        .replace("@TCP_PORT@", &tcp_port.to_string())
        .replace("@LOG_LEVEL@", "information")
        // Small caches: tests run several servers at once on a small machine.
        .replace("@CACHE_BYTES@", "67108864")
        .replace("@EXTRA@", extra);
    let users = format!(
        r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <{WRITER_USER}>
            <password>{WRITER_PASSWORD}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </{WRITER_USER}>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#
    );
    fs::write(dir.join("config.xml"), config)
        .unwrap_or_else(|e| panic!("cannot write config.xml: {e}"));
    fs::write(dir.join("users.xml"), users)
        .unwrap_or_else(|e| panic!("cannot write users.xml: {e}"));
}
