//! `cargo xtask run`: the main job. Installs what is missing, builds in release, starts a local
//! ClickHouse when none is named (see `clickhouse.rs`), starts the daemon on
//! `examples/registry.yaml`, and shows the dashboard (`nhiscope tui`) on this terminal; quitting
//! the dashboard stops the daemon. Without a terminal (or with `--no-tui`) the daemon runs in the
//! foreground instead and prints its events as JSON lines.

use std::{
    io::IsTerminal,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{build, clickhouse, cmd, cmd::Cmd, setup};

#[derive(Args, Debug, Default)]
pub struct Options {
    /// Run the daemon in the foreground with its events on stdout, without the dashboard
    /// (the default when this is not a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Extra arguments for `nhiscope daemon`, after `--`.
    #[arg(last = true, value_name = "DAEMON_ARGS")]
    pub args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    setup::run(&setup::Options::default())?;
    let binary = build::run(&build::Options { release: true })?;
    let registry = cmd::workspace_root().join("examples").join("registry.yaml");
    if !registry.is_file() {
        bail!("run: {} is missing", registry.display());
    }
    let store = clickhouse_args(&binary, &opts.args)?;
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if opts.no_tui || !terminal {
        // exec, not spawn: Ctrl-C and SIGTERM then reach the daemon itself, which flushes and
        // exits.
        return Err(Cmd::new(&binary)
            .arg("daemon")
            .arg("--registry")
            .arg(&registry)
            .args(["--json", "-"])
            .args(store)
            .args(&opts.args)
            .exec());
    }
    with_dashboard(&binary, &registry, &store, &opts.args)
}

/// The daemon in the background (events to `.nhiscope/events.jsonl`, its log to
/// `.nhiscope/daemon.log`), the dashboard in the foreground.
fn with_dashboard(
    binary: &Path,
    registry: &Path,
    store: &[String],
    extra: &[String],
) -> Result<()> {
    let state = cmd::workspace_root().join(".nhiscope");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let log_path = state.join("daemon.log");
    let events = state.join("events.jsonl");
    let socket = state.join("live.sock");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    println!(
        "run: starting the daemon (log: {}, events: {})",
        log_path.display(),
        events.display()
    );
    let mut daemon = Command::new(binary)
        .arg("daemon")
        .arg("--registry")
        .arg(registry)
        .arg("--json")
        .arg(&events)
        .arg("--live-socket")
        .arg(&socket)
        .args(store)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("ready") {
            break;
        }
        if let Some(status) = daemon.try_wait()? {
            bail!("run: the daemon stopped ({status}) before it was ready:\n{text}");
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = daemon.kill();
            bail!("run: the daemon was not ready after 60 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tui = Command::new(binary)
        .arg("tui")
        .arg("--socket")
        .arg(&socket)
        .args(tui_history_args(store, extra))
        .status()
        .with_context(|| format!("starting {} tui", binary.display()));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let stopped = daemon.wait()?;
    println!(
        "run: daemon stopped ({stopped}); its events are in {}",
        events.display()
    );
    let tui = tui?;
    if !tui.success() {
        bail!("run: the dashboard exited with {tui}");
    }
    Ok(())
}

/// The dashboard reads the history from the ClickHouse the daemon writes to (the last day), so
/// what happened before it started shows too.
fn tui_history_args(store: &[String], daemon_args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut named = daemon_args.iter();
    while let Some(a) = named.next() {
        let flag = a.split('=').next().unwrap_or(a);
        if flag == "--clickhouse" || flag == "--clickhouse-config" {
            out.push(a.clone());
            if !a.contains('=') {
                out.extend(named.next().cloned());
            }
        }
    }
    if out.is_empty() {
        out.extend(store.iter().cloned());
    }
    if !out.is_empty() {
        out.extend(["--since".to_owned(), "24h".to_owned()]);
    }
    out
}

/// `--clickhouse-config .nhiscope/clickhouse.yaml`, with the local server started, unless the
/// user names a ClickHouse among the daemon's arguments (or this daemon has no ClickHouse flags
/// yet).
fn clickhouse_args(binary: &Path, args: &[String]) -> Result<Vec<String>> {
    if args.iter().any(|a| a.starts_with("--clickhouse")) {
        return Ok(Vec::new());
    }
    let help = Cmd::new(binary).args(["daemon", "--help"]).probe();
    if !help.is_some_and(|h| h.contains("--clickhouse-config")) {
        return Ok(Vec::new());
    }
    clickhouse::start()?;
    Ok(vec![
        "--clickhouse-config".to_owned(),
        clickhouse::daemon_config().display().to_string(),
    ])
}

#[cfg(test)]
mod tests {
    use super::tui_history_args;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_dashboard_reads_the_clickhouse_the_daemon_writes_to() {
        let local = strings(&["--clickhouse-config", ".nhiscope/clickhouse.yaml"]);
        assert_eq!(
            tui_history_args(&local, &strings(&["--hostname", "web-1"])),
            strings(&[
                "--clickhouse-config",
                ".nhiscope/clickhouse.yaml",
                "--since",
                "24h"
            ])
        );
        assert_eq!(
            tui_history_args(&[], &strings(&["--clickhouse", "http://ch:8123", "-v"])),
            strings(&["--clickhouse", "http://ch:8123", "--since", "24h"])
        );
        assert_eq!(
            tui_history_args(&[], &strings(&["--clickhouse=http://ch:8123"])),
            strings(&["--clickhouse=http://ch:8123", "--since", "24h"])
        );
        assert!(
            tui_history_args(&[], &[]).is_empty(),
            "no ClickHouse: live only"
        );
    }
}
