//! Command-line interface: every subcommand and flag, with its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// nhiscope: watch, from the kernel, how non-human identities (API keys, cloud keys,
/// service-account tokens, .env secrets) are used on this host, and flag every use that drifts
/// from the scope each was registered with.
#[derive(Debug, Parser)]
#[command(name = "nhiscope", version, propagate_version = true)]
pub struct Cli {
    /// Log level for messages on stderr: error, warn, info, debug, trace. Also RUST_LOG.
    #[arg(long, global = true, default_value = "info", env = "NHISCOPE_LOG")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the probes and decide on every credential use and holder connection (needs root).
    Daemon(DaemonArgs),
    /// Work with NHI registry files.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// The ClickHouse database the daemon writes to.
    #[command(subcommand)]
    Db(DbCommand),
    /// The terminal dashboard: every NHI at a glance, drift as it happens, live from the
    /// daemon's socket and, with --clickhouse, over the history of a host or the whole fleet
    /// (press `?` inside for the keys).
    Tui(TuiArgs),
    /// History for incident responders: run one of the shipped queries on ClickHouse and print
    /// the rows as a table, JSON lines or CSV (`nhiscope query list` names them).
    Query(QueryArgs),
    /// Least-privilege scopes learned from what NHIs were seen doing.
    #[command(subcommand)]
    Scope(ScopeCommand),
    /// Packaging: write the man pages (one per command) into DIR/man and the bash, zsh and fish
    /// completions into DIR/completions (`cargo xtask package` runs it).
    #[command(hide = true)]
    PackageAssets {
        /// The directory to write into (made when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// How rows are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a person (long values cut).
    Table,
    /// One JSON object per line (events as the daemon writes them).
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query: events_by_nhi, events_by_host, drift, nhi_summary, drift_kinds,
    /// verdicts_per_minute, losses, losses_by_host, agents, ... or `list` for all of them.
    #[arg(value_name = "QUERY")]
    pub name: String,

    /// The NHI, for queries about one NHI.
    #[arg(long, value_name = "ID")]
    pub nhi: Option<String>,

    /// The host, for queries about one host (repeat for queries over some hosts).
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// How far back: `30m`, `24h`, `7d` (default 24h; --from wins).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<std::time::Duration>,

    /// Start of the time range, RFC 3339 (`2026-11-23T09:00:00Z`).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,

    /// End of the time range, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,

    /// At most this many rows, for queries that take a limit.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: u64,

    /// How to print the rows.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// The ClickHouse to read.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

#[derive(Debug, Subcommand)]
pub enum ScopeCommand {
    /// Print a registry entry for one NHI that allows exactly what it was seen doing: the
    /// readers (exe, uid) that opened its credentials, and the destinations and ports its
    /// holders connected to. With --registry, what is declared and unused is listed too.
    Suggest(SuggestArgs),
}

#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// The NHI.
    #[arg(long, value_name = "ID")]
    pub nhi: String,

    /// How far back to learn from: `24h`, `7d`, `30d`.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub since: std::time::Duration,

    /// Learn from these hosts only (repeatable; default: every host).
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// The registry in force: keeps the NHI's owner, credentials, expiry, max age, holders and
    /// interactive setting, and notes what it declares that was never used.
    #[arg(long, value_name = "FILE")]
    pub registry: Option<PathBuf>,

    /// The ClickHouse to read.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

#[derive(Debug, Args)]
pub struct TuiArgs {
    /// The daemon's live socket (its `--live-socket`).
    #[arg(long, value_name = "PATH", default_value = crate::live::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Do not read the live socket: show the history from ClickHouse only (e.g. on an
    /// analyst's workstation with no daemon). Needs ClickHouse.
    #[arg(long)]
    pub no_live: bool,

    /// How far back the history from ClickHouse goes: `15m`, `24h`, `7d`. Needs ClickHouse;
    /// with ClickHouse and no --since, the last hour.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<std::time::Duration>,

    /// Only this host's history (repeat for several hosts). Default: every host that writes
    /// to this ClickHouse (the fleet). Needs ClickHouse.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// How often the history is read again from ClickHouse (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_refresh)]
    pub refresh: std::time::Duration,

    /// Where the history is: the ClickHouse the daemons write to. Without it the dashboard
    /// shows the live feed only.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The NHI registry (YAML): the NHIs, their credential files and declared scope.
    #[arg(long, value_name = "FILE")]
    pub registry: PathBuf,

    /// Write every event as one JSON line to PATH, or to standard output with `-`.
    #[arg(long, value_name = "PATH|-")]
    pub json: Option<String>,

    /// Size of the kernel-to-daemon ring buffer in bytes: a power of two, at least 4096
    /// (default 8 MiB). Larger survives longer bursts, and costs twice its size in resident
    /// memory; overflow is counted and reported as `loss` events.
    #[arg(long, value_name = "BYTES", value_parser = parse_ringbuf_size)]
    pub ringbuf_size: Option<u32>,

    /// Host name written on every event (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// The live feed's unix socket (mode 0600; root and the daemon's user only), which
    /// `nhiscope tui` reads.
    #[arg(long, value_name = "PATH", default_value = crate::live::DEFAULT_SOCKET)]
    pub live_socket: PathBuf,

    /// Debugging: send every open from the kernel, bypassing the in-kernel prefilter. Costly.
    #[arg(long, hide = true)]
    pub all_opens: bool,

    /// How much of each process's command line events carry: `redacted` (every argument, with
    /// secret-looking values such as passwords, tokens, header values, URL passwords and
    /// random-looking words replaced by `***`), `argv0` (the program only) or `full` (as the
    /// process gave it, secrets included: for test hosts only).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = crate::redact::CmdlineMode::Redacted)]
    pub cmdline: crate::redact::CmdlineMode,

    /// Once the probes are attached, switch to this unprivileged user (e.g. `nhiscope`, made
    /// with `useradd --system`; the package makes it), keeping only CAP_BPF and
    /// CAP_DAC_READ_SEARCH. The spool directory and the --json file are this user's. Default:
    /// stay root, with the same capabilities.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Where events are stored (ClickHouse); off when neither flag nor config gives a URL.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

/// Where ClickHouse is. Credentials never go on the command line: they come from the config
/// file (`user:`, `password_file:`) or from NHISCOPE_CLICKHOUSE_USER and
/// NHISCOPE_CLICKHOUSE_PASSWORD.
#[derive(Debug, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse's HTTP interface, e.g. http://127.0.0.1:8123 (wins over the config file's).
    #[arg(long, value_name = "URL", env = "NHISCOPE_CLICKHOUSE_URL")]
    pub clickhouse: Option<String>,

    /// ClickHouse settings (YAML): url, database, user, password_file, cluster, retention_days,
    /// spool_dir, spool_max_bytes, batch_rows, batch_interval, compression.
    #[arg(long, value_name = "FILE")]
    pub clickhouse_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the database and its tables, or bring them to this version's schema. Safe to run
    /// again; the daemon does the same at start. Exit code 2 for a bad URL or config.
    Migrate {
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
        /// Create replicated tables ON CLUSTER NAME, with Distributed tables over them.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Validate a registry file; every error names FILE:LINE:COLUMN. Exit code 2 when invalid.
    Check {
        /// The registry file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s, 15m, 24h or 7d: {e}"))?;
    if d.is_zero() {
        return Err("the duration must be more than zero".to_owned());
    }
    Ok(d)
}

fn parse_refresh(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s} is too often: at least 1s"));
    }
    Ok(d)
}

fn parse_ringbuf_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(
            parse_duration("24h"),
            Ok(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_duration("7d"),
            Ok(std::time::Duration::from_secs(7 * 86_400))
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_refresh("100ms").is_err());
    }

    #[test]
    fn command_lines_are_redacted_unless_asked() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["nhiscope", "daemon", "--registry", "r.yaml"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Daemon(d)) => Ok(d.cmdline),
                Ok(other) => panic!("not the daemon: {other:?}"),
                Err(e) => Err(e.kind()),
            }
        };
        use crate::redact::CmdlineMode;
        assert_eq!(parse(&[]), Ok(CmdlineMode::Redacted));
        assert_eq!(parse(&["--cmdline", "argv0"]), Ok(CmdlineMode::Argv0));
        assert_eq!(parse(&["--cmdline", "full"]), Ok(CmdlineMode::Full));
        assert!(parse(&["--cmdline", "some"]).is_err());
    }

    #[test]
    fn ringbuf_size_must_be_a_power_of_two() {
        assert_eq!(parse_ringbuf_size("65536"), Ok(65536));
        assert!(parse_ringbuf_size("65535").is_err());
        assert!(parse_ringbuf_size("1024").is_err());
        assert!(parse_ringbuf_size("x").is_err());
    }
}
