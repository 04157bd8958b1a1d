//! A local ClickHouse server for development: `cargo xtask run` starts it when no ClickHouse is
//! configured, so that the daemon has somewhere to write; `cargo xtask clickhouse stop` stops it.
//!
//! Everything lives under `<repo>/.nhiscope/` (gitignored): the server's config, data and logs
//! in `clickhouse/`, and `clickhouse.yaml`, the daemon's `--clickhouse-config` pointing at it
//! with a spool in `spool/`. The server listens on loopback only, on ports 18123 (HTTP) and
//! 19000 (native), away from a system server's 8123 and 9000, and keeps running in the
//! background after `run` ends (its pid is in `clickhouse/server.pid`).
//!
//! Other local users can reach a loopback port too, so the server's `default` user has a
//! password: generated once, kept in `clickhouse.password` (0600, like `clickhouse/users.xml`,
//! which holds it too), and named by `clickhouse.yaml`'s `password_file:`, which the daemon and
//! the dashboard read. It never goes on a command line.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
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
    let password = password()?;
    write_daemon_config()?;
    // Written on every start: a server started by an older `run` (without a password) reloads
    // users.xml by itself within seconds.
    write_server_config(&dir, &password)?;
    if answers() {
        wait_for_password()?;
        return Ok(url());
    }
    if !Path::new(SERVER_BIN).is_file() {
        bail!("clickhouse: {SERVER_BIN} is missing: run `cargo xtask setup` as root");
    }
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

/// The local server for as long as this lives: started unless it answered already, and then
/// stopped again when this is dropped, so that a bench leaves the machine as it found it (a
/// server left running merges in the background while later measurements run).
pub struct ForAWhile {
    started: bool,
}

/// [`start`], for a while (see [`ForAWhile`]).
pub fn start_for_a_while() -> Result<ForAWhile> {
    let started = !answers();
    start()?;
    Ok(ForAWhile { started })
}

impl Drop for ForAWhile {
    fn drop(&mut self) {
        if self.started {
            if let Err(e) = stop() {
                eprintln!("clickhouse: could not stop the server this run started: {e:#}");
            }
        }
    }
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

/// Until the running server takes the password (it reloads users.xml every few seconds).
fn wait_for_password() -> Result<()> {
    let started = Instant::now();
    loop {
        match query("SELECT 1") {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > Duration::from_secs(20) => bail!(
                "clickhouse: the running server does not take the password in {} ({e}); \
                 restart it: `cargo xtask clickhouse stop`, then run again",
                password_file().display()
            ),
            Err(_) => thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// `.nhiscope/clickhouse.password`: the `default` user's password (0600).
pub fn password_file() -> PathBuf {
    state_dir().join("clickhouse.password")
}

/// The password, made on first use: 32 random bytes, hex.
fn password() -> Result<String> {
    let path = password_file();
    if let Ok(text) = fs::read_to_string(&path) {
        let text = text.trim().to_owned();
        if !text.is_empty() {
            // Tightened in case an editor or a copy loosened it.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            return Ok(text);
        }
    }
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let _ = fs::remove_file(&path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{password}").with_context(|| format!("writing {}", path.display()))?;
    Ok(password)
}

/// `Basic base64(default:PASSWORD)`: the HTTP interface's credentials, in a header rather than
/// the URL (which the server may log).
fn basic_auth(password: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("default:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs `sql` on the local server over HTTP and returns the body (an error for a non-200).
pub fn query(sql: &str) -> Result<String> {
    let auth = basic_auth(&password()?);
    let mut s = TcpStream::connect(("127.0.0.1", HTTP_PORT))
        .with_context(|| format!("clickhouse: cannot connect to {}", url()))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = format!(
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\
         Content-Length: {}\r\n\r\n{sql}",
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

/// The lines of a daemon config that reach the local server: its URL and password file.
pub fn config_lines() -> String {
    format!(
        "url: {}\nuser: default\npassword_file: {}\n",
        url(),
        password_file().display()
    )
}

fn write_daemon_config() -> Result<()> {
    let text = format!(
        "# Written by `cargo xtask run`: the local development server.\n\
         {}\
         spool_dir: {}\n",
        config_lines(),
        state_dir().join("spool").display()
    );
    fs::write(daemon_config(), text).context("writing .nhiscope/clickhouse.yaml")
}

/// Writes `path` with `text`, readable by its owner only (it holds the password).
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn write_server_config(dir: &Path, password: &str) -> Result<()> {
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
            <password>@PASSWORD@</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#;
    fs::write(dir.join("config.xml"), config)?;
    // The password is hex: nothing in it needs escaping in XML.
    write_private(
        &dir.join("users.xml"),
        &users.replace("@PASSWORD@", password),
    )
}

#[cfg(test)]
mod tests {
    use super::basic_auth;

    #[test]
    fn basic_auth_is_base64_of_user_and_password() {
        // `printf default:pw | base64`
        assert_eq!(basic_auth("pw"), "Basic ZGVmYXVsdDpwdw==");
        assert_eq!(basic_auth("pw1"), "Basic ZGVmYXVsdDpwdzE=");
        assert_eq!(basic_auth("pw12"), "Basic ZGVmYXVsdDpwdzEy");
    }
}
