//! Where the store writes and how: the `--clickhouse URL` flag, the `--clickhouse-config FILE`
//! (YAML), and the environment.
//!
//! Credentials never come from the command line (where `ps` shows them to every user) nor from
//! the URL: the user from `user:` in the file or `NHISCOPE_CLICKHOUSE_USER`, the password from
//! the file named by `password_file:` or `NHISCOPE_CLICKHOUSE_PASSWORD`. The password is kept in
//! a [`Secret`], which never prints.
//!
//! ```yaml
//! url: https://ch.example:8443   # http://, or https:// verified with the system roots...
//! ca_file: /etc/nhiscope/clickhouse-ca.pem      # ...or with these certificates only
//! client_cert_file: /etc/nhiscope/client.pem    # optional: a client certificate (PEM)
//! client_key_file: /etc/nhiscope/client.key     # and its private key (PEM)
//! database: nhiscope               # letters, digits, _
//! user: nhiscope
//! password_file: /etc/nhiscope/clickhouse.password
//! cluster: fleet                   # optional: replicated tables ON CLUSTER
//! retention_days: 90               # optional: TTL (current servers) or dropped partitions (18.16)
//! spool_dir: /var/lib/nhiscope/spool
//! spool_max_bytes: 1073741824
//! batch_rows: 100000               # a batch is sent when it has this many rows...
//! batch_interval: 500ms            # ...or is this old
//! compression: lz4                 # lz4 or none
//! ```

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use thiserror::Error;

/// Environment variable holding the ClickHouse user.
pub const ENV_USER: &str = "NHISCOPE_CLICKHOUSE_USER";
/// Environment variable holding the ClickHouse password.
pub const ENV_PASSWORD: &str = "NHISCOPE_CLICKHOUSE_PASSWORD";

/// The default spool directory (the daemon runs as root).
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/nhiscope/spool";

/// A password: shown as `***` by `Debug`, readable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How request bodies are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
}

/// Everything the store needs; build it with [`StoreConfig::new`] or [`StoreConfig::load`].
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// `http://host:port` or `https://host:port`, checked: no credentials, no path, no query.
    pub url: String,
    /// For an `https://` URL: how the server is verified and the client certificate.
    pub tls: Option<super::tls::Tls>,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub cluster: Option<String>,
    pub retention_days: Option<u32>,
    pub spool_dir: PathBuf,
    /// Bound on the spool's batch files; loss rows are kept beyond it.
    pub spool_max_bytes: u64,
    pub batch_rows: usize,
    pub batch_interval: Duration,
    pub compression: Compression,
    /// Longest wait for one insert or query before it counts as failed.
    pub request_timeout: Duration,
    /// Longest wait between two attempts while ClickHouse is failing.
    pub retry_max: Duration,
    /// How long `shutdown` may spend inserting before it spools what is left.
    pub shutdown_timeout: Duration,
}

/// A configuration that cannot be used: the daemon exits with code 2.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The URL is unusable; the message says why.
    #[error("--clickhouse {url}: {why}")]
    Url { url: String, why: String },
    /// The config file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// The config file is not valid (position when known, then the message).
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value is invalid, wherever it came from.
    #[error("{0}")]
    Value(String),
    /// A TLS file (`ca_file:`, `client_cert_file:`, `client_key_file:`) cannot be used.
    #[error("{at}: {key} {file}: {why}")]
    Tls {
        /// The config file that named it.
        at: String,
        key: &'static str,
        file: String,
        why: String,
    },
    /// The password file could not be read.
    #[error("password_file {file}: cannot read: {source}")]
    PasswordFile {
        file: String,
        source: std::io::Error,
    },
}

/// The config file's keys; all optional. The daemon's config file (`crate::app::config`) holds the
/// same keys under `clickhouse:`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub url: Option<String>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub cluster: Option<String>,
    pub retention_days: Option<u32>,
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: Option<u64>,
    pub batch_rows: Option<usize>,
    /// Durations are read as text and parsed after, where the key's line can be found.
    pub batch_interval: Option<String>,
    pub compression: Option<Compression>,
    pub request_timeout: Option<String>,
    pub retry_max: Option<String>,
}

/// Parses the duration `value` of `key` in config `file` (whose text is `text`).
fn duration(
    file: &Path,
    text: &str,
    key: &str,
    value: Option<&str>,
) -> Result<Option<Duration>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    humantime::parse_duration(value).map(Some).map_err(|e| {
        let (line, column) = text
            .lines()
            .enumerate()
            .find_map(|(i, l)| {
                let rest = l.trim_start().strip_prefix(key)?.strip_prefix(':')?;
                let value_at = l.len() - rest.trim_start().len();
                Some((i + 1, value_at + 1))
            })
            .unwrap_or((1, 1));
        ConfigError::Invalid {
            file: file.display().to_string(),
            line,
            column,
            message: format!("{key}: `{value}` is not a duration ({e}); e.g. 500ms, 2s"),
        }
    })
}

impl StoreConfig {
    /// Defaults around a URL (checked); no credentials. An `https://` URL is verified with the
    /// system's root certificates (see [`StoreConfig::with_tls`] for others).
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let url = check_url(url)?;
        let tls = is_https(&url)
            .then(|| {
                super::tls::Tls::build(Default::default(), Path::new("-"), &|p: &Path| {
                    std::fs::read_to_string(p)
                })
            })
            .transpose()?;
        Ok(Self::defaults(url, tls))
    }

    /// Defaults around a checked URL and its TLS side.
    fn defaults(url: String, tls: Option<super::tls::Tls>) -> Self {
        Self {
            url,
            tls,
            database: "nhiscope".into(),
            user: None,
            password: None,
            cluster: None,
            retention_days: None,
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: 1 << 30,
            batch_rows: 100_000,
            batch_interval: Duration::from_millis(500),
            compression: Compression::Lz4,
            request_timeout: Duration::from_secs(10),
            retry_max: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    /// The configuration from the optional config `file`, the `--clickhouse` flag (`url`, which
    /// wins over the file's), the `--cluster` flag, and the environment (`env` reads a
    /// variable: `std::env::var(..).ok()` outside tests). `Ok(None)` when no URL is given at all:
    /// the store is off.
    pub fn load(
        file: Option<&Path>,
        url: Option<&str>,
        cluster: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                file: path.display().to_string(),
                source,
            })
        };
        let text = file.map(read).transpose()?;
        let read_password = |path: &Path| std::fs::read_to_string(path);
        Self::from_text(file.zip(text.as_deref()), url, cluster, env, &read_password)
    }

    /// [`StoreConfig::load`] with the config file already read: `file` is its path (for
    /// errors) and its text; `read_password` reads the files it names (`password_file:`, and
    /// the PEM files `ca_file:`, `client_cert_file:`, `client_key_file:`). No other I/O but the
    /// system's root certificates, read once, for an `https://` URL without `ca_file:`, so that
    /// any text can be tried on it (the fuzz target does).
    pub fn from_text(
        file: Option<(&Path, &str)>,
        url: Option<&str>,
        cluster: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
        read_password: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let (fc, text) = match file {
            Some((path, text)) => (parse_text(path, text)?, text),
            None => (FileConfig::default(), ""),
        };
        let file = file.map(|(path, _)| path);
        Self::from_file_config(fc, file, text, url, cluster, env, read_password)
    }

    /// [`StoreConfig::from_text`] with the keys already read: `fc` from `file`, whose text is
    /// `text` (where the lines of bad durations are found); `file` may also be the daemon's
    /// config file, whose `clickhouse:` section `fc` is.
    pub fn from_file_config(
        fc: FileConfig,
        file: Option<&Path>,
        text: &str,
        url: Option<&str>,
        cluster: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
        read_password: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let at = file.unwrap_or(Path::new("-"));
        let batch_interval = duration(at, text, "batch_interval", fc.batch_interval.as_deref())?;
        let request_timeout = duration(at, text, "request_timeout", fc.request_timeout.as_deref())?;
        let retry_max = duration(at, text, "retry_max", fc.retry_max.as_deref())?;
        let Some(url) = url.map(str::to_owned).or(fc.url.clone()) else {
            return match file {
                Some(path) => Err(ConfigError::Value(format!(
                    "{}: no `url:` and no --clickhouse URL",
                    path.display()
                ))),
                None => Ok(None),
            };
        };
        let tls_files = super::tls::TlsFiles {
            ca_file: fc.ca_file,
            client_cert_file: fc.client_cert_file,
            client_key_file: fc.client_key_file,
        };
        let checked = check_url(&url)?;
        if !is_https(&checked) && !tls_files.is_empty() {
            return Err(ConfigError::Value(format!(
                "{}: ca_file, client_cert_file and client_key_file are for an https:// URL, \
                 and the URL is {}",
                at.display(),
                display_url(&checked)
            )));
        }
        let tls = is_https(&checked)
            .then(|| super::tls::Tls::build(tls_files, at, read_password))
            .transpose()?;
        let mut c = Self::defaults(checked, tls);
        if let Some(v) = fc.database {
            c.database = v;
        }
        c.user = fc.user;
        c.cluster = cluster.map(str::to_owned).or(fc.cluster);
        c.retention_days = fc.retention_days;
        if let Some(v) = fc.spool_dir {
            c.spool_dir = v;
        }
        if let Some(v) = fc.spool_max_bytes {
            c.spool_max_bytes = v;
        }
        if let Some(v) = fc.batch_rows {
            c.batch_rows = v;
        }
        if let Some(v) = batch_interval {
            c.batch_interval = v;
        }
        if let Some(v) = fc.compression {
            c.compression = v;
        }
        if let Some(v) = request_timeout {
            c.request_timeout = v;
        }
        if let Some(v) = retry_max {
            c.retry_max = v;
        }
        if let Some(path) = &fc.password_file {
            let text = read_password(path).map_err(|source| ConfigError::PasswordFile {
                file: path.display().to_string(),
                source,
            })?;
            c.password = Some(Secret::new(text.trim_end_matches(['\n', '\r'])));
        }
        if let Some(user) = env(ENV_USER).filter(|u| !u.is_empty()) {
            c.user = Some(user);
        }
        if let Some(password) = env(ENV_PASSWORD) {
            c.password = Some(Secret::new(password));
        }
        c.validate()?;
        Ok(Some(c))
    }

    /// Checks the values a caller may have set by hand.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ident = |what: &str, v: &str| {
            let ok = !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !v.as_bytes()[0].is_ascii_digit();
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Value(format!(
                    "{what} `{v}`: use letters, digits and _ (not first a digit)"
                )))
            }
        };
        ident("database", &self.database)?;
        if let Some(c) = &self.cluster {
            ident("cluster", c)?;
        }
        if self.batch_rows == 0 {
            return Err(ConfigError::Value("batch_rows must be at least 1".into()));
        }
        if self.batch_interval.is_zero() {
            return Err(ConfigError::Value("batch_interval must not be 0".into()));
        }
        if self.retention_days == Some(0) {
            return Err(ConfigError::Value(
                "retention_days must be at least 1 (leave it out to keep rows forever)".into(),
            ));
        }
        Ok(())
    }

    /// The URL as logs, errors and screens may show it: `scheme://host:port` only.
    pub fn display_url(&self) -> String {
        display_url(&self.url)
    }

    /// A ClickHouse client for this URL: plain HTTP, or TLS as configured.
    pub fn http_client(&self) -> clickhouse::Client {
        match &self.tls {
            Some(tls) => tls.client(),
            None => clickhouse::Client::default(),
        }
    }
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// `url` as it may be printed anywhere: `scheme://host:port`, never a user, a password, a path
/// or a query string (which may hold `password=`). What does not parse as a URL is not quoted.
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = match u.host() {
                Some(url::Host::Domain(d)) => d.to_owned(),
                Some(url::Host::Ipv4(a)) => a.to_string(),
                Some(url::Host::Ipv6(a)) => format!("[{a}]"),
                None => return format!("{}://", u.scheme()),
            };
            match u.port_or_known_default() {
                Some(port) => format!("{}://{host}:{port}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The keys of the config file at `path` whose text is `text`.
fn parse_text(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let file = path.display().to_string();
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |at| (at.line(), at.column()));
        let mut message = e.to_string();
        // serde_norway appends " at line L column C": the prefix already says it.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        ConfigError::Invalid {
            file,
            line,
            column,
            message,
        }
    })
}

/// Checks a ClickHouse HTTP URL and returns it without a trailing `/`.
pub fn check_url(url: &str) -> Result<String, ConfigError> {
    let err = |why: &str| ConfigError::Url {
        // Never echo what may be a password (in the user part or the query string).
        url: display_url(url),
        why: why.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| err(&format!("not a URL ({e})")))?;
    match parsed.scheme() {
        "http" | "https" => {}
        s => return Err(err(&format!("scheme `{s}` is not http or https"))),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(err("no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(err(&format!(
            "credentials do not belong in the URL: set the user with `user:` in \
             --clickhouse-config or {ENV_USER}, the password with `password_file:` or {ENV_PASSWORD}"
        )));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(err(
            "a path is not supported (the database is set with `database:`)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(err("a query string is not supported"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}
