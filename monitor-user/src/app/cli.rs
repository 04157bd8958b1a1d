//! Command-line interface: every subcommand and flag, with its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// nhiscope: watch, from the kernel, how non-human identities (API keys, cloud keys,
/// service-account tokens, .env secrets) are used on this host, and flag every use that drifts
/// from the scope each was registered with.
#[derive(Debug, Parser)]
#[command(name = "nhiscope", version, propagate_version = true)]
pub struct Cli {
    /// Log level for messages on stderr: off, error, warn, info, debug, trace, or directives
    /// such as `info,nhiscope::publish::store=debug`. Also RUST_LOG (which wins over both).
    #[arg(long, global = true, value_name = "LEVEL", default_value = "info", env = "NHISCOPE_LOG", value_parser = crate::app::logging::parse_level)]
    pub log_level: String,

    /// How messages on stderr are written: `text` (for a person) or `json` (one JSON object a
    /// line with timestamp, level, target, message and fields, for a log shipper).
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = crate::app::logging::LogFormat::Text, env = "NHISCOPE_LOG_FORMAT")]
    pub log_format: crate::app::logging::LogFormat,

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
    /// Work with the daemon's configuration file (`nhiscope daemon --config FILE`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Packaging: write the man pages (one per command) into DIR/man and the bash, zsh and fish
    /// completions into DIR/completions (`cargo xtask package` runs it).
    #[command(hide = true)]
    PackageAssets {
        /// The directory to write into (made when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a daemon configuration file as `nhiscope daemon --config FILE` would read it:
    /// every key and value, the registry it names, its ClickHouse section (and the files that
    /// names) and its user. Prints a one-line summary, or every error as FILE:LINE:COLUMN with
    /// exit code 2. Starts nothing.
    Check {
        /// The configuration file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
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
    /// The query: events_by_nhi, events_by_host, drift, nhi_summary, drift_kinds, apis (the
    /// APIs each NHI's holders used: server names, methods, paths), verdicts_per_minute,
    /// losses, losses_by_host, agents, ... or `list` for all of them.
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
    #[arg(long, value_name = "PATH", default_value = crate::publish::live::DEFAULT_SOCKET)]
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

impl DaemonArgs {
    /// The settings given on the command line (or in their environment variables), as opposed
    /// to clap's defaults, which must not hide the config file's values. `matches` are this
    /// subcommand's; `global` the top level's, for --log-level and --log-format.
    pub fn flags(
        &self,
        matches: &clap::ArgMatches,
        global: &clap::ArgMatches,
        cli: &Cli,
    ) -> crate::app::config::Flags {
        use clap::parser::ValueSource;
        let given = |m: &clap::ArgMatches, id: &str| {
            matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let either = |id: &str| given(matches, id) || given(global, id);
        crate::app::config::Flags {
            registry: self.registry.clone(),
            json: self.json.clone(),
            json_max_size: self.json_max_size,
            json_keep: self.json_keep,
            ringbuf_size: self.ringbuf_size,
            hostname: self.hostname.clone(),
            live_socket: given(matches, "live_socket").then(|| self.live_socket.clone()),
            metrics: self.metrics,
            log_level: std::env::var("RUST_LOG")
                .ok()
                .or_else(|| either("log_level").then(|| cli.log_level.clone())),
            log_format: either("log_format").then_some(cli.log_format),
            cmdline: given(matches, "cmdline").then_some(self.cmdline),
            user: self.user.clone(),
            pods_log_dir: given(matches, "pods_log_dir").then(|| self.pods_log_dir.clone()),
            containers_log_dir: given(matches, "containers_log_dir")
                .then(|| self.containers_log_dir.clone()),
            wire_all_connections: self.wire_all_connections.then_some(true),
            holder_set_max: self.holder_set_max,
            dns_servers: (!self.dns_servers.is_empty()).then(|| self.dns_servers.clone()),
            resolv_conf: given(matches, "resolv_conf").then(|| self.resolv_conf.clone()),
            clickhouse_url: self.clickhouse.clickhouse.clone(),
            clickhouse_config: self.clickhouse.clickhouse_config.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Read the daemon's settings from this YAML file (every key is one of the flags below;
    /// see examples/daemon.yaml). Flags given on the command line win over it. SIGHUP reads it
    /// again: the registry, log level and cmdline mode change live, other changes are logged
    /// as needing a restart.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The NHI registry (YAML): the NHIs, their credential files and declared scope. Needed,
    /// here or as `registry:` in --config.
    #[arg(long, value_name = "FILE")]
    pub registry: Option<PathBuf>,

    /// Write every event as one JSON line to PATH, or to standard output with `-`. The file is
    /// reopened on SIGUSR1 (for logrotate's `postrotate`).
    #[arg(long, value_name = "PATH|-")]
    pub json: Option<String>,

    /// Rotate the --json file before it would grow past this size: bytes, or with K, M or G
    /// (powers of 1024), e.g. 100M. PATH becomes PATH.1, PATH.1 becomes PATH.2, and so on.
    /// Needs --json (here or in --config).
    #[arg(long, value_name = "BYTES", value_parser = crate::publish::events_file::parse_size)]
    pub json_max_size: Option<u64>,

    /// How many rotated --json files to keep (PATH.1 newest ... PATH.N oldest; older ones are
    /// removed), 1 to 10000. Needs --json-max-size (here or in --config). Default 5.
    #[arg(long, value_name = "N", value_parser = parse_json_keep)]
    pub json_keep: Option<u32>,

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
    #[arg(long, value_name = "PATH", default_value = crate::publish::live::DEFAULT_SOCKET)]
    pub live_socket: PathBuf,

    /// Debugging: send every open from the kernel, bypassing the in-kernel prefilter. Costly.
    #[arg(long, hide = true)]
    pub all_opens: bool,

    /// How much of each process's command line events carry: `redacted` (every argument, with
    /// secret-looking values such as passwords, tokens, header values, URL passwords and
    /// random-looking words replaced by `***`), `argv0` (the program only) or `full` (as the
    /// process gave it, secrets included: for test hosts only).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = crate::domain::redact::CmdlineMode::Redacted)]
    pub cmdline: crate::domain::redact::CmdlineMode,

    /// Once the probes are attached, switch to this unprivileged user (e.g. `nhiscope`, made
    /// with `useradd --system`; the package makes it), keeping only CAP_BPF and
    /// CAP_DAC_READ_SEARCH. The spool directory and the --json file are this user's. Default:
    /// stay root, with the same capabilities.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at
    /// http://ADDR/healthz (200 once the probes are attached and while the event loop turns,
    /// 503 with the reason otherwise). ADDR is an IP address and port, e.g. 127.0.0.1:9464 or
    /// [::1]:9464; any local process can read it, so prefer a loopback address. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,

    /// The kubelet's pod log directory, whose entries `<namespace>_<pod>_<uid>` name the pods
    /// whose UIDs the cgroup paths give: events of processes in a pod carry `pod_uid`, `pod` and
    /// `pod_namespace`. Read only when a process runs in a pod; a missing directory leaves the
    /// names out.
    #[arg(long, value_name = "DIR", default_value = crate::domain::kubernetes::DEFAULT_PODS_LOG_DIR)]
    pub pods_log_dir: PathBuf,

    /// The kubelet's container log links, `<pod>_<namespace>_<container>-<container id>.log`,
    /// which give events of processes in a pod their `container_name`.
    #[arg(long, value_name = "DIR", default_value = crate::domain::kubernetes::DEFAULT_CONTAINERS_LOG_DIR)]
    pub containers_log_dir: PathBuf,

    /// Read the first bytes (TLS server name and ALPN, HTTP/1.x method, host and path) of every
    /// process's TCP connections, not only of processes that hold an NHI: `request` events
    /// without an NHI then show which APIs the host talks to. Costs copies of at most 2 KiB in
    /// all per connection. Config key `wire_all_connections`.
    #[arg(long)]
    pub wire_all_connections: bool,

    /// Size of the kernel's holder set: how many processes that hold an NHI (and their
    /// children) the kernel can mark connections for, 64 to 4194304 (default 16384). While it
    /// is full, every process's connections are marked, so that none of a holder's goes
    /// unread (more copies, never fewer); the daemon logs it and exports
    /// `nhiscope_holder_set_full`. Config key `holder_set_max`.
    #[arg(long, value_name = "N", value_parser = parse_holder_set_max)]
    pub holder_set_max: Option<u32>,

    /// A DNS server whose answers are believed, besides the nameservers of the host's
    /// resolver configuration (--resolv-conf, read again when it changes) and servers on
    /// loopback addresses; may be
    /// given again for more (a cluster's DNS service address, for pods that ask it). An answer
    /// from any other server names no address: a holder that asks a server of its own choice
    /// would otherwise name the addresses it calls. Config key `dns_servers`.
    #[arg(long = "dns-server", value_name = "ADDR")]
    pub dns_servers: Vec<std::net::IpAddr>,

    /// The host's resolver configuration, whose nameservers' answers are believed (read again
    /// when it changes). In a container, the host's file mounted in (a pod's own lists the
    /// cluster's DNS service, not the node's resolvers). Config key `resolv_conf`.
    #[arg(long, value_name = "FILE", default_value = crate::sense::dns::resolv_conf::PATH)]
    pub resolv_conf: PathBuf,

    /// Where events are stored (ClickHouse); off when neither flag nor config gives a URL.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

/// Where ClickHouse is. Credentials never go on the command line: they come from the config
/// file (`user:`, `password_file:`) or from NHISCOPE_CLICKHOUSE_USER and
/// NHISCOPE_CLICKHOUSE_PASSWORD.
#[derive(Debug, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse's HTTP interface, e.g. http://127.0.0.1:8123, or https://HOST:8443 over TLS
    /// (verified with the system's roots or the config file's ca_file). Wins over the config
    /// file's.
    #[arg(long, value_name = "URL", env = "NHISCOPE_CLICKHOUSE_URL")]
    pub clickhouse: Option<String>,

    /// ClickHouse settings (YAML): url, database, user, password_file, ca_file,
    /// client_cert_file, client_key_file, cluster, retention_days, spool_dir, spool_max_bytes,
    /// batch_rows, batch_interval, compression.
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

pub(crate) fn parse_json_keep(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a number of files from 1 to 10000")),
    }
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

pub(crate) fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an address and port like 127.0.0.1:9464 or [::1]:9464"))
}

/// `--holder-set-max`: 64 to 4194304 processes (a pid is at most 2^22).
pub(crate) fn parse_holder_set_max(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if (64..=1 << 22).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not between 64 and 4194304"))
    }
}

pub(crate) fn parse_ringbuf_size(s: &str) -> Result<u32, String> {
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
    use clap::{CommandFactory, FromArgMatches};

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
        use crate::domain::redact::CmdlineMode;
        assert_eq!(parse(&[]), Ok(CmdlineMode::Redacted));
        assert_eq!(parse(&["--cmdline", "argv0"]), Ok(CmdlineMode::Argv0));
        assert_eq!(parse(&["--cmdline", "full"]), Ok(CmdlineMode::Full));
        assert!(parse(&["--cmdline", "some"]).is_err());
    }

    #[test]
    fn metrics_address_is_an_ip_and_port() {
        assert_eq!(
            parse_metrics_addr("127.0.0.1:9464"),
            Ok(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        assert!(parse_metrics_addr("[::1]:9464").is_ok());
        for bad in [
            "notaport",
            "127.0.0.1",
            "127.0.0.1:99999",
            "localhost:9464",
            ":9464",
        ] {
            let e = parse_metrics_addr(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    /// The daemon's flags as the daemon reads them: what was given, laid over no config file.
    fn daemon_flags(extra: &[&str]) -> Result<crate::app::config::Flags, String> {
        let mut args = vec!["nhiscope", "daemon"];
        args.extend_from_slice(extra);
        let m = Cli::command()
            .try_get_matches_from(args)
            .map_err(|e| e.to_string())?;
        let cli = Cli::from_arg_matches(&m).map_err(|e| e.to_string())?;
        match &cli.command {
            Command::Daemon(d) => {
                Ok(d.flags(m.subcommand_matches("daemon").expect("daemon"), &m, &cli))
            }
            other => panic!("not the daemon: {other:?}"),
        }
    }

    #[test]
    fn only_flags_given_count_not_their_defaults() {
        let f = daemon_flags(&["--config", "c.yaml"]).expect("parses");
        assert_eq!(
            f,
            crate::app::config::Flags::default(),
            "defaults must not hide the file"
        );
        let f = daemon_flags(&[
            "--live-socket",
            "/run/x.sock",
            "--cmdline",
            "redacted",
            "--log-format",
            "text",
            "--log-level",
            "debug",
            "--ringbuf-size",
            "65536",
        ])
        .expect("parses");
        assert_eq!(
            f.live_socket.as_deref(),
            Some(std::path::Path::new("/run/x.sock"))
        );
        assert_eq!(
            f.cmdline,
            Some(crate::domain::redact::CmdlineMode::Redacted),
            "given, if default"
        );
        assert_eq!(f.log_format, Some(crate::app::logging::LogFormat::Text));
        if std::env::var_os("RUST_LOG").is_none() {
            assert_eq!(f.log_level.as_deref(), Some("debug"));
        }
        assert_eq!(f.ringbuf_size, Some(65536));
        // Global flags before the subcommand count too.
        let m = Cli::command()
            .try_get_matches_from(["nhiscope", "--log-format", "json", "daemon"])
            .expect("parses");
        let cli = Cli::from_arg_matches(&m).expect("parses");
        let Command::Daemon(d) = &cli.command else {
            panic!("not the daemon")
        };
        let f = d.flags(m.subcommand_matches("daemon").expect("daemon"), &m, &cli);
        assert_eq!(f.log_format, Some(crate::app::logging::LogFormat::Json));
        assert!(daemon_flags(&["--log-level", "loud"])
            .unwrap_err()
            .contains("--log-level"));
    }

    #[test]
    fn json_rotation_flags_are_checked() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["--registry", "r.yaml"];
            args.extend_from_slice(extra);
            let flags = daemon_flags(&args)?;
            crate::app::config::Settings::resolve(None, &flags)
                .map(|s| s.json_rotation.map(|r| (r.max_bytes, r.keep)))
                .map_err(|p| crate::app::config::lines(&p))
        };
        assert_eq!(
            parse(&[
                "--json",
                "e.jsonl",
                "--json-max-size",
                "1M",
                "--json-keep",
                "3"
            ]),
            Ok(Some((1 << 20, 3)))
        );
        assert_eq!(
            parse(&["--json", "e.jsonl", "--json-max-size", "100M"]),
            Ok(Some((100 << 20, 5))),
            "five old files by default"
        );
        assert_eq!(parse(&["--json", "e.jsonl"]), Ok(None));
        let e = parse(&["--json", "e.jsonl", "--json-max-size", "12Q"]).unwrap_err();
        assert!(e.contains("--json-max-size") && e.contains("12Q"), "{e}");
        let e = parse(&["--json", "e", "--json-max-size", "1M", "--json-keep", "0"]).unwrap_err();
        assert!(e.contains("--json-keep"), "{e}");
        let e = parse(&["--json", "e.jsonl", "--json-keep", "3"]).unwrap_err();
        assert!(e.contains("--json-max-size"), "{e}");
        let e = parse(&["--json-max-size", "1M"]).unwrap_err();
        assert!(e.contains("--json"), "{e}");
        let e = parse(&["--json", "-", "--json-max-size", "1M"]).unwrap_err();
        assert!(e.contains("standard output"), "{e}");
        let log = |f: &str| {
            Cli::try_parse_from(["nhiscope", "--log-format", f, "registry", "check", "r"])
                .map(|c| c.log_format)
                .map_err(|e| e.to_string())
        };
        assert_eq!(log("json"), Ok(crate::app::logging::LogFormat::Json));
        assert!(log("xml").unwrap_err().contains("--log-format"));
    }

    #[test]
    fn holder_set_max_is_a_number_of_processes_in_range() {
        assert_eq!(parse_holder_set_max("64"), Ok(64));
        assert_eq!(parse_holder_set_max("4194304"), Ok(1 << 22));
        assert!(parse_holder_set_max("63").is_err());
        assert!(parse_holder_set_max("4194305").is_err());
        assert!(parse_holder_set_max("many").is_err());
    }

    #[test]
    fn ringbuf_size_must_be_a_power_of_two() {
        assert_eq!(parse_ringbuf_size("65536"), Ok(65536));
        assert!(parse_ringbuf_size("65535").is_err());
        assert!(parse_ringbuf_size("1024").is_err());
        assert!(parse_ringbuf_size("x").is_err());
    }
}
