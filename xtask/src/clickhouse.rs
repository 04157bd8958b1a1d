//! A local ClickHouse server for development: `cargo xtask run` starts it when no ClickHouse is
//! configured, so that the daemon has somewhere to write; `cargo xtask clickhouse stop` stops it.
//!
//! Everything lives under `<repo>/.nhiscope/` (gitignored): the server's config, data and logs
//! in `clickhouse/`, and `clickhouse.yaml`, the daemon's `--clickhouse-config` pointing at it
//! with a spool in `spool/`. The server listens on loopback only, on ports 18123 (HTTP) and
//! 19000 (native), away from a system server's 8123 and 9000, and keeps running in the
//! background after `run` ends (its pid is in `clickhouse/server.pid`).

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};

use crate::cmd;

pub const HTTP_PORT: u16 = 18123;
const TCP_PORT: u16 = 19000;
const SERVER_BIN: &str = "/usr/sbin/clickhouse-server";

#[derive(Args, Debug)]
pub struct Options {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Start the local server (if it is not running) and print its URL.
    Start,
    /// Stop the local server.
    Stop,
    /// Say whether it runs.
    Status,
}

pub fn run(opts: &Options) -> Result<()> {
    match opts.action {
        Action::Start => {
            let url = start()?;
            println!("{url}");
        }
        Action::Stop => stop()?,
        Action::Status => match running_pid() {
            Some(pid) if answers() => println!("running (pid {pid}): {}", url()),
            Some(pid) => println!("pid {pid} exists but {} does not answer", url()),
            None => println!("not running"),
        },
    }
    Ok(())
}

/// `<repo>/.nhiscope`.
pub fn state_dir() -> PathBuf {
    cmd::workspace_root().join(".nhiscope")
}

fn server_dir() -> PathBuf {
    state_dir().join("clickhouse")
}

pub fn url() -> String {
    format!("http://127.0.0.1:{HTTP_PORT}")
}

/// Starts the server unless it answers already; writes the daemon's config file; returns the
/// URL.
pub fn start() -> Result<String> {
    let dir = server_dir();
    fs::create_dir_all(dir.join("log")).with_context(|| format!("creating {}", dir.display()))?;
    write_daemon_config()?;
    if answers() {
        return Ok(url());
    }
    if !Path::new(SERVER_BIN).is_file() {
        bail!("clickhouse: {SERVER_BIN} is missing: run `cargo xtask setup` as root");
    }
    write_server_config(&dir)?;
    let log = fs::File::create(dir.join("log").join("stdout.log"))?;
    let err = log.try_clone()?;
    eprintln!(
        "+ {SERVER_BIN} --config-file={} (data in {})",
        dir.join("config.xml").display(),
        dir.display()
    );
    let child = Command::new(SERVER_BIN)
        .arg(format!(
            "--config-file={}",
            dir.join("config.xml").display()
        ))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: it outlives `cargo xtask run`, and Ctrl-C on the daemon
        // spares it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start {SERVER_BIN}"))?;
    fs::write(dir.join("server.pid"), child.id().to_string())?;
    let started = Instant::now();
    while !answers() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "clickhouse: the server did not answer on {} within 30 s; see {}",
                url(),
                dir.join("log").display()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "clickhouse: local server on {} (pid {}), data in {}",
        url(),
        child.id(),
        dir.display()
    );
    Ok(url())
}

pub fn stop() -> Result<()> {
    let Some(pid) = running_pid() else {
        eprintln!("clickhouse: not running");
        return Ok(());
    };
    // SAFETY: kill has no memory-safety preconditions; `running_pid` checked that this pid is
    // a clickhouse-server with our config.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while running_pid().is_some() && started.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(100));
    }
    let _ = fs::remove_file(server_dir().join("server.pid"));
    eprintln!("clickhouse: stopped (pid {pid})");
    Ok(())
}

/// The pid in `server.pid`, if that process is our server.
fn running_pid() -> Option<i32> {
    let pid: i32 = fs::read_to_string(server_dir().join("server.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = server_dir().join("config.xml");
    String::from_utf8_lossy(&cmdline)
        .contains(&*ours.to_string_lossy())
        .then_some(pid)
}

/// Whether something answers `Ok.` to `/ping` on our port.
fn answers() -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", HTTP_PORT)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.ends_with("Ok.\n")
}

/// Runs `sql` on the local server over HTTP and returns the body (an error for a non-200).
pub fn query(sql: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", HTTP_PORT))
        .with_context(|| format!("clickhouse: cannot connect to {}", url()))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = format!(
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("clickhouse: `{sql}` failed: {}", body.trim());
    }
    Ok(body.to_owned())
}

/// `.nhiscope/clickhouse.yaml`: the daemon's `--clickhouse-config`.
pub fn daemon_config() -> PathBuf {
    state_dir().join("clickhouse.yaml")
}

fn write_daemon_config() -> Result<()> {
    let text = format!(
        "# Written by `cargo xtask run`: the local development server.\n\
         url: {}\n\
         spool_dir: {}\n",
        url(),
        state_dir().join("spool").display()
    );
    fs::write(daemon_config(), text).context("writing .nhiscope/clickhouse.yaml")
}

fn write_server_config(dir: &Path) -> Result<()> {
    let d = dir.display();
    let config = include_str!("../../examples/clickhouse/config.xml.in")
        .replace("@DIR@", &d.to_string())
        .replace("@HTTP_PORT@", &HTTP_PORT.to_string())
        .replace("@TCP_PORT@", &TCP_PORT.to_string())
        .replace("@LOG_LEVEL@", "warning")
        .replace("@CACHE_BYTES@", "268435456")
        .replace("@EXTRA@", "");
    let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#;
    fs::write(dir.join("config.xml"), config)?;
    fs::write(dir.join("users.xml"), users)?;
    Ok(())
}
