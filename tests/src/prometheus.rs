//! The daemon's metrics endpoint (`--metrics`) and a real Prometheus server to scrape it:
//! Debian's `prometheus` started on a free loopback port with a config and a storage directory
//! of its own, queried over its HTTP API, killed when dropped; and `promtool check metrics`.
//!
//! HTTP goes through a tiny client of our own (HTTP/1.0, so that no answer is chunked): the
//! harness shares nothing with the code under test.

use std::{
    collections::BTreeSet,
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{clickhouse::free_port, temp_dir, Daemon};

/// The server and the checker Debian's `prometheus` package installs.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
pub const PROMTOOL_BIN: &str = "/usr/bin/promtool";
/// How long a started server may take to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The address the daemon serves its metrics on, from its log line
/// `metrics on http://ADDR/metrics` (so that a test can ask for port 0).
#[track_caller]
pub fn metrics_addr(d: &Daemon) -> SocketAddr {
    d.output()
        .iter()
        .find_map(|l| {
            let rest = l.split_once("metrics on http://")?.1;
            rest.split_once("/metrics")?.0.parse().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no `metrics on` line in the daemon's output: {:?}",
                d.output()
            )
        })
}

/// `GET path` from `addr`: the status and the body.
#[track_caller]
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .unwrap_or_else(|e| panic!("send to {addr}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read from {addr}{path}: {e}"));
    let text = String::from_utf8(raw).unwrap_or_else(|e| panic!("{addr}{path}: not UTF-8: {e}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{addr}{path}: no end of head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{addr}{path}: no status in {head:?}"));
    (status, body.to_owned())
}

/// The daemon's `/metrics` now (asserting a 200).
#[track_caller]
pub fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample `series` (its name and labels exactly as the daemon writes them).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("{series}: `{v}` is not a number: {e}"))
        })
}

/// The names of the samples in an exposition (each name once).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Scrapes until `pred` holds for the exposition; panics with the last one after `timeout`.
#[track_caller]
pub fn wait_scrape(addr: SocketAddr, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = scrape(addr);
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics did not get there within {timeout:?}:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `promtool check metrics` on `text` (on its standard input).
pub fn promtool_check(text: &str) -> Output {
    let mut child = Command::new(PROMTOOL_BIN)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PROMTOOL_BIN} (apt-get install prometheus): {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("write to promtool");
    drop(stdin);
    child.wait_with_output().expect("promtool")
}

/// A running private Prometheus server.
pub struct Prometheus {
    dir: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts a server scraping `targets` every second (job `nhiscope`) and waits until it is
    /// ready. `None` (after `skipping: <why>`) when Prometheus is not installed, unless the
    /// run requires it (CI): then that is a failure.
    #[track_caller]
    pub fn start(targets: &[SocketAddr]) -> Option<Prometheus> {
        if !std::path::Path::new(PROMETHEUS_BIN).exists() {
            let why = format!("{PROMETHEUS_BIN} is missing (apt-get install prometheus)");
            assert!(!crate::clickhouse::required(), "{why}");
            eprintln!("skipping: {why}");
            return None;
        }
        let dir = temp_dir("prometheus");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: nhiscope\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        // A free port may be taken between the check and the server's bind: try a few.
        for attempt in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let log_file =
                fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            let child = Command::new(PROMETHEUS_BIN)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS_BIN}: {e}"));
            let mut p = Prometheus {
                dir: dir.clone(),
                addr,
                child: Some(child),
            };
            if p.wait_ready(&log) {
                return Some(p);
            }
            p.kill();
        }
        panic!(
            "Prometheus did not start on a free port (logs in {})",
            dir.display()
        );
    }

    /// True once `/-/ready` answers 200; false when the server exited because its port was
    /// taken; panics otherwise.
    fn wait_ready(&mut self, log: &std::path::Path) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let text = fs::read_to_string(log).unwrap_or_default();
                if text.contains("address already in use") {
                    return false;
                }
                panic!("Prometheus exited ({status}):\n{text}");
            }
            if TcpStream::connect(self.addr).is_ok() && get(self.addr, "/-/ready").0 == 200 {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within {START_TIMEOUT:?}:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The result of an instant query (`data.result`): an error answer is a panic.
    #[track_caller]
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let (status, body) = get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        );
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{promql}: not JSON ({e}): {body}"));
        assert!(
            status == 200 && v["status"] == "success",
            "{promql}: HTTP {status}: {body}"
        );
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Queries `promql` until `pred` holds for its result; panics after `timeout` with the
    /// last result and the scrape targets' state.
    #[track_caller]
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(promql);
            if pred(&r) {
                return r;
            }
            if Instant::now() > deadline {
                let targets = get(self.addr, "/api/v1/targets").1;
                panic!(
                    "{promql}: not as expected within {timeout:?}: {r:?}\ntargets: {targets}\n\
                     (logs in {})",
                    self.dir.display()
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The one value of an instant query's result with a single series, as a number.
#[track_caller]
pub fn single_value(result: &[Value]) -> Option<f64> {
    match result {
        [one] => one["value"][1].as_str().and_then(|v| v.parse().ok()),
        _ => None,
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a query string.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
