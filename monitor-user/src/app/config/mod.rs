//! The daemon's configuration file (`nhiscope daemon --config FILE`, `nhiscope config check
//! FILE`): every daemon setting in one YAML file, each key named after its flag
//! (`--ringbuf-size` is `ringbuf_size:`), ClickHouse inline under `clickhouse:` with the keys of
//! a `--clickhouse-config` file. See examples/daemon.yaml.
//!
//! The flow: [`load`] reads and checks the file ([`ConfigFile`]); [`Settings::resolve`] lays the
//! flags given on the command line ([`Flags`]) over it, fills in the defaults and checks what
//! spans keys; the daemon runs on the [`Settings`]. On SIGHUP, [`Reload`] does the same again
//! with the same flags, and [`changes`] says what changed: the registry, the log level and the
//! cmdline mode change live, anything else needs a restart.
//!
//! Every value is checked by the same parser as its flag, inside serde's `Deserialize`, while
//! the YAML parser (serde_norway) still knows the position of the value: errors name
//! `FILE:LINE:COLUMN` and the key, as the registry's do. A file with several bad keys gets every error: each top-level entry is
//! parsed again on its own lines (see [`parse`]). Relative paths are relative to the file's
//! directory.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::{
    app::logging::LogFormat,
    domain::redact::CmdlineMode,
    publish::events_file::{self, Rotation},
    publish::store::config::{display_url, ConfigError, FileConfig, StoreConfig},
};

/// One thing wrong with the configuration: `FILE:LINE:COLUMN: message` when the place is known,
/// `FILE: message` when only the file is, the message alone for flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The config file, if the problem is in one.
    pub file: Option<String>,
    /// Line and column (from 1) in `file`.
    pub at: Option<(usize, usize)>,
    /// What is wrong, starting with the key or flag.
    pub message: String,
}

impl Problem {
    /// A problem that names its own place (a flag, or another file's `FILE:LINE:COLUMN`).
    pub fn plain(message: impl Into<String>) -> Self {
        Self {
            file: None,
            at: None,
            message: message.into(),
        }
    }

    fn in_file(file: &Path, at: Option<(usize, usize)>, message: impl Into<String>) -> Self {
        Self {
            file: Some(file.display().to_string()),
            at,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.at) {
            (Some(file), Some((line, column))) => {
                write!(f, "{file}:{line}:{column}: {}", self.message)
            }
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// Every problem, one a line.
pub fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The file's keys, each checked; all optional. Field names are the flags' names with `_`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default, deserialize_with = "path")]
    pub registry: Option<PathBuf>,
    #[serde(default, deserialize_with = "events_path")]
    pub json: Option<String>,
    #[serde(default, deserialize_with = "size")]
    pub json_max_size: Option<u64>,
    #[serde(default, deserialize_with = "keep")]
    pub json_keep: Option<u32>,
    #[serde(default, deserialize_with = "ringbuf_size")]
    pub ringbuf_size: Option<u32>,
    #[serde(default, deserialize_with = "name")]
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "path")]
    pub live_socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "metrics")]
    pub metrics: Option<SocketAddr>,
    #[serde(default, deserialize_with = "log_level")]
    pub log_level: Option<String>,
    #[serde(default, deserialize_with = "log_format")]
    pub log_format: Option<LogFormat>,
    #[serde(default, deserialize_with = "cmdline")]
    pub cmdline: Option<CmdlineMode>,
    #[serde(default, deserialize_with = "name")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "path")]
    pub pods_log_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "path")]
    pub containers_log_dir: Option<PathBuf>,
    #[serde(default)]
    pub wire_all_connections: Option<bool>,
    #[serde(default, deserialize_with = "holder_set_max")]
    pub holder_set_max: Option<u32>,
    #[serde(default)]
    pub dns_servers: Option<Vec<std::net::IpAddr>>,
    #[serde(default, deserialize_with = "path")]
    pub resolv_conf: Option<PathBuf>,
    /// The keys of a `--clickhouse-config` file (`crate::publish::store::config`).
    #[serde(default)]
    pub clickhouse: Option<FileConfig>,
}

/// Every top-level key, in the order of the example and the README.
pub const KEYS: &[&str] = &[
    "registry",
    "json",
    "json_max_size",
    "json_keep",
    "ringbuf_size",
    "hostname",
    "live_socket",
    "metrics",
    "log_level",
    "log_format",
    "cmdline",
    "user",
    "pods_log_dir",
    "containers_log_dir",
    "wire_all_connections",
    "holder_set_max",
    "dns_servers",
    "resolv_conf",
    "clickhouse",
];

/// A config file, read and checked.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// Its text, where the places of later errors are found.
    pub text: Arc<str>,
    pub config: DaemonConfig,
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<ConfigFile, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem::in_file(
            path,
            None,
            format!("cannot read the config file: {}", io_reason(&e)),
        )]
    })?;
    parse(&text, path)
}

/// Checks a config file's `text`; `path` names it in errors and is where relative paths start.
///
/// serde stops at the first error. To report every one, a file whose top level is a block
/// mapping (any file written by hand) is then parsed again one top-level entry at a time, each
/// on its own lines and columns (the lines before it left blank), and the errors of all are
/// given, in order.
pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, Vec<Problem>> {
    let one = |text: &str| -> Result<DaemonConfig, Problem> {
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
        {
            return Ok(DaemonConfig::default());
        }
        serde_norway::from_str::<DaemonConfig>(text).map_err(|e| yaml_problem(path, text, &e))
    };
    match one(text) {
        Ok(config) => Ok(ConfigFile {
            path: path.to_owned(),
            text: text.into(),
            config,
        }),
        Err(first) => {
            let mut problems: Vec<Problem> = top_level_entries(text)
                .unwrap_or_default()
                .iter()
                .filter_map(|entry| one(entry).err())
                .collect();
            if !problems.contains(&first) {
                problems.push(first);
            }
            problems.sort_by_key(|p| p.at);
            problems.dedup();
            Err(problems)
        }
    }
}

/// The YAML parser's error as a problem at its place. An error at the end of the input is placed
/// just after its last character (libyaml says the line after the last one).
fn yaml_problem(path: &Path, text: &str, e: &serde_norway::Error) -> Problem {
    let full = e.to_string();
    let lines: Vec<&str> = text.split('\n').collect();
    let place = |line: usize, column: usize| match lines.last() {
        Some(last) if line > lines.len() => (lines.len(), last.chars().count() + 1),
        _ => (line, column),
    };
    match e.location() {
        Some(at) => Problem::in_file(
            path,
            Some(place(at.line(), at.column())),
            full.replacen(
                &format!(" at line {} column {}", at.line(), at.column()),
                "",
                1,
            ),
        ),
        None => Problem::in_file(path, None, full),
    }
}

/// The text of each top-level entry of a block mapping, at its own place (every other line
/// blank); `None` when the top level is something else (a flow mapping, a list, directives).
fn top_level_entries(text: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut starts = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let l = l.trim_end_matches('\r');
        match l.chars().next() {
            None | Some(' ' | '\t' | '#') => {}
            Some('-' | '{' | '[' | '%' | '.') if l != "---" && l != "..." => return None,
            _ if l == "---" || l == "..." => {}
            _ => starts.push(i),
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let mut entry = "\n".repeat(start);
        entry.push_str(&lines[start..end].join("\n"));
        out.push(entry);
    }
    Some(out)
}

/// Where `keys` (a top-level key, then keys nested under it) is in `text`: the line and the
/// column of its value (of the key when the value starts on the next line), or of the deepest
/// of its parents that is there. Block style only, as people write config files; `None` when
/// not even the top-level key is found.
pub fn locate(text: &str, keys: &[&str]) -> Option<(usize, usize)> {
    let mut found = None;
    let mut depth = 0;
    let mut parent_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let Some(&key) = keys.get(depth) else { break };
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if parent_indent.is_some_and(|p| indent <= p) {
            break;
        }
        if depth == 0 && indent > 0 {
            continue;
        }
        let Some(rest) = trimmed
            .strip_prefix(key)
            .and_then(|r| r.trim_start().strip_prefix(':'))
        else {
            continue;
        };
        let value = rest.trim_start();
        let column = if value.is_empty() || value.starts_with('#') {
            indent + 1
        } else {
            line.len() - value.len() + 1
        };
        found = Some((i + 1, column));
        parent_indent = Some(indent);
        depth += 1;
    }
    found
}

/// The settings given on the command line or in a flag's environment variable. `None`: not
/// given (clap's default does not count), the file's value or the default applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flags {
    pub registry: Option<PathBuf>,
    pub json: Option<String>,
    pub json_max_size: Option<u64>,
    pub json_keep: Option<u32>,
    pub ringbuf_size: Option<u32>,
    pub hostname: Option<String>,
    pub live_socket: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    /// `--log-level`, `NHISCOPE_LOG`, or `RUST_LOG` (which wins).
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub cmdline: Option<CmdlineMode>,
    pub user: Option<String>,
    pub pods_log_dir: Option<PathBuf>,
    pub containers_log_dir: Option<PathBuf>,
    /// `--wire-all-connections` (only ever `Some(true)`).
    pub wire_all_connections: Option<bool>,
    pub holder_set_max: Option<u32>,
    /// `--dns-server` (given at least once).
    pub dns_servers: Option<Vec<std::net::IpAddr>>,
    pub resolv_conf: Option<PathBuf>,
    /// `--clickhouse URL` (or `NHISCOPE_CLICKHOUSE_URL`): wins over `clickhouse: url:`.
    pub clickhouse_url: Option<String>,
    /// `--clickhouse-config FILE`: used instead of the file's `clickhouse:` section.
    pub clickhouse_config: Option<PathBuf>,
}

/// The log level when neither a flag nor the file gives one.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// What the daemon runs with: the file, the flags over it, the defaults under both.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub registry: PathBuf,
    /// `--json`: a path, or `-` for standard output.
    pub json: Option<String>,
    pub json_rotation: Option<Rotation>,
    pub ringbuf_size: Option<u32>,
    pub hostname: Option<String>,
    pub live_socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    /// An env_logger filter.
    pub log_level: String,
    pub log_format: LogFormat,
    pub cmdline: CmdlineMode,
    pub user: Option<String>,
    /// The kubelet's log directories, which name pods and containers (`kubernetes`).
    pub pods_log_dir: PathBuf,
    pub containers_log_dir: PathBuf,
    /// Every process's connections are read for their first bytes, not only holders'.
    pub wire_all_connections: bool,
    /// The kernel's holder set's size (`None`: `monitor_common::HOLDERS_MAX`).
    pub holder_set_max: Option<u32>,
    /// DNS servers whose answers are believed besides the host's and loopback ones.
    pub dns_servers: Vec<std::net::IpAddr>,
    /// The host's resolver configuration.
    pub resolv_conf: PathBuf,
    pub clickhouse: ClickHouse,
}

/// Where the ClickHouse settings come from.
#[derive(Clone, Debug)]
pub enum ClickHouse {
    /// The flags alone (or nothing: the store is off): `--clickhouse URL`,
    /// `--clickhouse-config FILE`.
    Flags {
        url: Option<String>,
        file: Option<PathBuf>,
    },
    /// The config file's `clickhouse:` section, with `--clickhouse URL` over its `url:`.
    Section {
        file: PathBuf,
        text: Arc<str>,
        section: Box<FileConfig>,
        url: Option<String>,
    },
}

impl PartialEq for ClickHouse {
    /// The same settings, wherever they are in the file (its text is not compared).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Flags { url: a, file: f }, Self::Flags { url: b, file: g }) => a == b && f == g,
            (
                Self::Section {
                    section: a, url: u, ..
                },
                Self::Section {
                    section: b, url: v, ..
                },
            ) => a == b && u == v,
            _ => false,
        }
    }
}

impl ClickHouse {
    /// The store's configuration (`None`: off), reading the files it names (password, PEM)
    /// and the environment through `env`. Errors in the section name its key's place.
    pub fn store_config(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<StoreConfig>, Vec<Problem>> {
        self.store_config_with(env, &|p: &Path| std::fs::read_to_string(p))
    }

    /// [`ClickHouse::store_config`] with the section's files read by `read` (the fuzz target
    /// gives its own); a `--clickhouse-config` file is read from disk.
    pub fn store_config_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Option<StoreConfig>, Vec<Problem>> {
        match self {
            Self::Flags { url, file } => {
                StoreConfig::load(file.as_deref(), url.as_deref(), None, env)
                    .map_err(|e| vec![Problem::plain(e.to_string())])
            }
            Self::Section {
                file,
                text,
                section,
                url,
            } => {
                let at = |key: &str| locate(text, &["clickhouse", key]);
                if section.url.is_none() && url.is_none() {
                    return Err(vec![Problem::in_file(
                        file,
                        locate(text, &["clickhouse"]),
                        "clickhouse: no `url:` and no --clickhouse URL",
                    )]);
                }
                StoreConfig::from_file_config(
                    FileConfig::clone(section),
                    Some(file),
                    text,
                    url.as_deref(),
                    None,
                    env,
                    read,
                )
                .map_err(|e| {
                    let problem = match e {
                        ConfigError::Url { url: shown, why } if url.is_none() => Problem::in_file(
                            file,
                            at("url"),
                            format!("clickhouse.url {shown}: {why}"),
                        ),
                        ConfigError::Value(m) => {
                            let prefix = format!("{}: ", file.display());
                            let m = m.strip_prefix(&prefix).unwrap_or(&m).to_owned();
                            let key = m.split([' ', ':']).next().unwrap_or("");
                            Problem::in_file(
                                file,
                                at(key).or_else(|| locate(text, &["clickhouse"])),
                                format!("clickhouse: {m}"),
                            )
                        }
                        ConfigError::Tls {
                            key,
                            file: named,
                            why,
                            ..
                        } => Problem::in_file(
                            file,
                            at(key),
                            format!("clickhouse.{key} {named}: {why}"),
                        ),
                        ConfigError::PasswordFile {
                            file: named,
                            source,
                        } => Problem::in_file(
                            file,
                            at("password_file"),
                            format!(
                                "clickhouse.password_file {named}: cannot read: {}",
                                io_reason(&source)
                            ),
                        ),
                        other => Problem::plain(other.to_string()),
                    };
                    vec![problem]
                })
            }
        }
    }

    /// The store as a summary shows it: `scheme://host:port`, where it is set, or `off`.
    pub fn summary(&self) -> String {
        let url = match self {
            Self::Flags { url, .. } => url.as_ref(),
            Self::Section { url, section, .. } => url.as_ref().or(section.url.as_ref()),
        };
        match (url, self) {
            (Some(u), _) => display_url(u),
            (None, Self::Flags { file: Some(f), .. }) => format!("as in {}", f.display()),
            _ => "off".to_owned(),
        }
    }
}

impl Settings {
    /// Lays `flags` over the config `file` (if any) over the defaults, and checks what spans
    /// keys. Every problem is given.
    pub fn resolve(file: Option<&ConfigFile>, flags: &Flags) -> Result<Settings, Vec<Problem>> {
        let none = DaemonConfig::default();
        let c = file.map_or(&none, |f| &f.config);
        let base = file.and_then(|f| f.path.parent()).map(Path::to_path_buf);
        let rel = |p: &PathBuf| match &base {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.clone(),
        };
        // A problem at the file's `key`.
        let at = |key: &str, message: String| match file {
            Some(f) => Problem::in_file(&f.path, locate(&f.text, &[key]), message),
            None => Problem::plain(message),
        };
        let mut problems = Vec::new();

        let registry = flags.registry.clone().or(c.registry.as_ref().map(rel));
        if registry.is_none() {
            problems.push(match file {
                Some(f) => Problem::in_file(
                    &f.path,
                    None,
                    "no `registry:` here and no --registry FILE: the daemon needs a registry",
                ),
                None => {
                    Problem::plain("--registry FILE is needed (or `registry:` in a --config file)")
                }
            });
        }

        let json = flags.json.clone().or_else(|| {
            c.json.as_ref().map(|j| match j.as_str() {
                "-" => j.clone(),
                p => rel(&PathBuf::from(p)).display().to_string(),
            })
        });
        let max_size = flags.json_max_size.or(c.json_max_size);
        let keep = flags.json_keep.or(c.json_keep);
        // Where a value came from, for the message: the flag or the file's key.
        let from_flag = |flag: bool, key: &str, message: &str| {
            if flag {
                Problem::plain(format!("--{}: {message}", key.replace('_', "-")))
            } else {
                at(key, format!("{key}: {message}"))
            }
        };
        if max_size.is_some() {
            match json.as_deref() {
                None => problems.push(from_flag(
                    flags.json_max_size.is_some(),
                    "json_max_size",
                    "needs an events file: --json PATH (or `json:` in the config file)",
                )),
                Some("-") => problems.push(from_flag(
                    flags.json_max_size.is_some(),
                    "json_max_size",
                    "events go to standard output (--json -), which the daemon cannot \
                     rotate; give --json PATH",
                )),
                Some(_) => {}
            }
        }
        if keep.is_some() && max_size.is_none() {
            problems.push(from_flag(
                flags.json_keep.is_some(),
                "json_keep",
                "needs --json-max-size (or `json_max_size:` in the config file)",
            ));
        }
        let json_rotation = max_size.map(|max_bytes| Rotation {
            max_bytes,
            keep: keep.unwrap_or(events_file::DEFAULT_KEEP),
        });

        let clickhouse = match (&flags.clickhouse_config, file, &c.clickhouse) {
            (None, Some(f), Some(section)) => {
                let mut section = section.clone();
                for p in [
                    &mut section.password_file,
                    &mut section.ca_file,
                    &mut section.client_cert_file,
                    &mut section.client_key_file,
                    &mut section.spool_dir,
                ]
                .into_iter()
                .flatten()
                {
                    *p = rel(p);
                }
                ClickHouse::Section {
                    file: f.path.clone(),
                    text: Arc::clone(&f.text),
                    section: Box::new(section),
                    url: flags.clickhouse_url.clone(),
                }
            }
            _ => ClickHouse::Flags {
                url: flags.clickhouse_url.clone(),
                file: flags.clickhouse_config.clone(),
            },
        };

        let Some(registry) = registry else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Settings {
            registry,
            json,
            json_rotation,
            ringbuf_size: flags.ringbuf_size.or(c.ringbuf_size),
            hostname: flags.hostname.clone().or(c.hostname.clone()),
            live_socket: flags
                .live_socket
                .clone()
                .or(c.live_socket.as_ref().map(rel))
                .unwrap_or_else(|| PathBuf::from(crate::publish::live::DEFAULT_SOCKET)),
            metrics: flags.metrics.or(c.metrics),
            log_level: flags
                .log_level
                .clone()
                .or(c.log_level.clone())
                .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned()),
            log_format: flags.log_format.or(c.log_format).unwrap_or_default(),
            cmdline: flags.cmdline.or(c.cmdline).unwrap_or_default(),
            user: flags.user.clone().or(c.user.clone()),
            pods_log_dir: flags
                .pods_log_dir
                .clone()
                .or(c.pods_log_dir.as_ref().map(rel))
                .unwrap_or_else(|| PathBuf::from(crate::domain::kubernetes::DEFAULT_PODS_LOG_DIR)),
            containers_log_dir: flags
                .containers_log_dir
                .clone()
                .or(c.containers_log_dir.as_ref().map(rel))
                .unwrap_or_else(|| {
                    PathBuf::from(crate::domain::kubernetes::DEFAULT_CONTAINERS_LOG_DIR)
                }),
            wire_all_connections: flags
                .wire_all_connections
                .or(c.wire_all_connections)
                .unwrap_or(false),
            holder_set_max: flags.holder_set_max.or(c.holder_set_max),
            dns_servers: flags
                .dns_servers
                .clone()
                .or(c.dns_servers.clone())
                .unwrap_or_default(),
            resolv_conf: flags
                .resolv_conf
                .clone()
                .or(c.resolv_conf.as_ref().map(rel))
                .unwrap_or_else(|| PathBuf::from(crate::sense::dns::resolv_conf::PATH)),
            clickhouse,
        })
    }

    /// The daemon's options; `reload` when the settings came from a `--config` file.
    pub fn options(&self, all_opens: bool, reload: Option<Reload>) -> crate::app::daemon::Options {
        crate::app::daemon::Options {
            registry: self.registry.clone(),
            json: self.json.clone(),
            json_rotation: self.json_rotation,
            ringbuf_bytes: self.ringbuf_size,
            hostname: self.hostname.clone(),
            all_opens,
            cmdline: self.cmdline,
            live_socket: self.live_socket.clone(),
            clickhouse: self.clickhouse.clone(),
            user: self.user.clone(),
            metrics: self.metrics,
            pods_log_dir: self.pods_log_dir.clone(),
            containers_log_dir: self.containers_log_dir.clone(),
            wire_all_connections: self.wire_all_connections,
            holder_set_max: self.holder_set_max,
            dns_servers: self.dns_servers.clone(),
            resolv_conf: self.resolv_conf.clone(),
            reload,
        }
    }
}

/// What SIGHUP needs: the config file, the flags that still win over it, and the settings in
/// force.
#[derive(Clone, Debug)]
pub struct Reload {
    pub path: PathBuf,
    pub flags: Flags,
    pub running: Settings,
}

impl Reload {
    /// The file read again, under the same flags.
    pub fn reread(&self) -> Result<Settings, Vec<Problem>> {
        let file = load(&self.path)?;
        Settings::resolve(Some(&file), &self.flags)
    }
}

/// What differs between two settings, by key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Put in force at once: `registry`, `log_level`, `cmdline`.
    pub live: Vec<&'static str>,
    /// Only a restart puts these in force.
    pub restart: Vec<&'static str>,
}

/// The keys whose values differ from `old` to `new`.
pub fn changes(old: &Settings, new: &Settings) -> Changes {
    let mut c = Changes::default();
    let mut check = |key, differs: bool, live: bool| {
        if differs {
            if live {
                c.live.push(key);
            } else {
                c.restart.push(key);
            }
        }
    };
    check("registry", old.registry != new.registry, true);
    check("json", old.json != new.json, false);
    let (a, b) = (old.json_rotation, new.json_rotation);
    check(
        "json_max_size",
        a.map(|r| r.max_bytes) != b.map(|r| r.max_bytes),
        false,
    );
    check("json_keep", a.map(|r| r.keep) != b.map(|r| r.keep), false);
    check("ringbuf_size", old.ringbuf_size != new.ringbuf_size, false);
    check("hostname", old.hostname != new.hostname, false);
    check("live_socket", old.live_socket != new.live_socket, false);
    check("metrics", old.metrics != new.metrics, false);
    check("log_level", old.log_level != new.log_level, true);
    check("log_format", old.log_format != new.log_format, false);
    check("cmdline", old.cmdline != new.cmdline, true);
    check("user", old.user != new.user, false);
    check("pods_log_dir", old.pods_log_dir != new.pods_log_dir, false);
    check(
        "containers_log_dir",
        old.containers_log_dir != new.containers_log_dir,
        false,
    );
    check(
        "wire_all_connections",
        old.wire_all_connections != new.wire_all_connections,
        false,
    );
    check(
        "holder_set_max",
        old.holder_set_max != new.holder_set_max,
        false,
    );
    check("dns_servers", old.dns_servers != new.dns_servers, false);
    check("resolv_conf", old.resolv_conf != new.resolv_conf, false);
    check("clickhouse", old.clickhouse != new.clickhouse, false);
    c
}

/// `nhiscope config check FILE`: the file as `nhiscope daemon --config FILE` alone would run
/// it, and what it names: the registry (loaded), the ClickHouse section (with its password and
/// PEM files, `env` giving the environment) and the user (looked up). Nothing is started or
/// written. The one-line summary, or every problem.
pub fn check(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<Problem>> {
    let file = load(path)?;
    let s = Settings::resolve(Some(&file), &Flags::default())?;
    let mut problems = Vec::new();
    let at = |key: &str| locate(&file.text, &[key]);
    let nhis = match crate::domain::registry::load(&s.registry) {
        Ok(r) => r.nhis.len(),
        Err(e @ crate::domain::registry::RegistryError::Read { .. }) => {
            problems.push(Problem::in_file(
                path,
                at("registry"),
                format!("registry: {e}"),
            ));
            0
        }
        Err(e) => {
            problems.push(Problem::plain(e.to_string()));
            0
        }
    };
    if let Err(p) = s.clickhouse.store_config(env) {
        problems.extend(p);
    }
    if let Some(user) = &s.user {
        if let Err(e) = crate::app::privileges::Account::lookup(user) {
            problems.push(Problem::in_file(path, at("user"), format!("user: {e}")));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let or_off = |v: Option<String>| v.unwrap_or_else(|| "off".to_owned());
    Ok(format!(
        "{}: ok: registry {} ({nhis} NHIs), events {}, ClickHouse {}, metrics {}, user {}",
        path.display(),
        s.registry.display(),
        or_off(s.json.clone()),
        s.clickhouse.summary(),
        or_off(s.metrics.map(|m| m.to_string())),
        s.user.as_deref().unwrap_or("root"),
    ))
}

/// An I/O error without Rust's ` (os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// A scalar checked by `check` (the flag's parser), or `null`. Numbers reach `check` as text,
/// as they would on the command line; an error gets the scalar's position.
struct Checked<T> {
    check: fn(&str) -> Result<T, String>,
    expecting: &'static str,
}

impl<'de, T> Visitor<'de> for Checked<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        (self.check)(v).map(Some).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_str(&v.to_string())
    }
}

fn checked<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    d.deserialize_option(Checked { check, expecting })
}

fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    checked(d, "a path", |v| {
        if v.is_empty() || v.contains('\0') {
            Err("the path is empty".to_owned())
        } else {
            Ok(PathBuf::from(v))
        }
    })
}

fn events_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, "a path, or - for standard output", |v| {
        if v.is_empty() || v.contains('\0') {
            Err("the path is empty: give a path, or - for standard output".to_owned())
        } else {
            Ok(v.to_owned())
        }
    })
}

fn name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, "a name", |v| {
        if v.trim().is_empty() || v.chars().any(char::is_control) {
            Err(format!("`{}` is not a name", v.escape_debug()))
        } else {
            Ok(v.to_owned())
        }
    })
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    checked(
        d,
        "a size: bytes, or with K, M or G",
        events_file::parse_size,
    )
}

fn keep<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(d, "a number of files", crate::app::cli::parse_json_keep)
}

fn ringbuf_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(
        d,
        "a size in bytes, a power of two",
        crate::app::cli::parse_ringbuf_size,
    )
}

fn holder_set_max<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    checked(
        d,
        "a number of processes",
        crate::app::cli::parse_holder_set_max,
    )
}

fn metrics<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    checked(
        d,
        "an address and port such as 127.0.0.1:9464",
        crate::app::cli::parse_metrics_addr,
    )
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, "a log level", crate::app::logging::parse_level)
}

fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LogFormat>, D::Error> {
    checked(d, "text or json", value_enum::<LogFormat>)
}

fn cmdline<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CmdlineMode>, D::Error> {
    checked(d, "redacted, argv0 or full", value_enum::<CmdlineMode>)
}

/// One of a flag's values, as clap reads them.
fn value_enum<T: clap::ValueEnum>(v: &str) -> Result<T, String> {
    T::from_str(v, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|x| x.to_possible_value())
            .map(|p| p.get_name().to_owned())
            .collect();
        format!("`{v}` is not one of {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests;
