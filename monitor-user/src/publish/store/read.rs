//! The store's read side: what `nhiscope query`, `nhiscope scope suggest` and the dashboard's
//! history read from ClickHouse, through one [`Reader`].
//!
//! A reader runs the shipped queries ([`QUERIES`], in the database's dialect) and hands back
//! plain records: events as [`Event`]s, the dashboard's counts as [`Dashboard`], an NHI's uses
//! as [`ScopeRecord`]s, any other query as a table of JSON values. How rows are laid out in
//! ClickHouse (column types, enum codes, the two dialects) stays inside the store; a row the
//! reader cannot make sense of (a kind or verdict this version does not know) is left out, as
//! the readers always did. Its errors name the server and say what went wrong in words a user
//! acts on, never with a password.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickhouse::{Client, Row};
use serde::Deserialize;
use serde_json::Value;

pub use super::queries::{Param, Query, ALL as QUERIES};
use super::{
    client::{admin_client, SinkError},
    config::StoreConfig,
    migrate,
    queries::{
        self, AGENTS, DASHBOARD_ACTIVITY, DASHBOARD_DRIFT, DASHBOARD_RECENT, DASHBOARD_USES,
        LOSSES_BY_HOST, SCOPE_USES,
    },
    row::{kind_from_code, verdict_from_code},
    schema::Schema,
};
use crate::{
    domain::event::{DriftKind, Event, Kind, Verdict},
    domain::scope::ScopeRecord,
    domain::wire::WireFields,
};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[error("ClickHouse {url}: {message}")]
pub struct ReadError {
    /// The server, without credentials.
    url: String,
    message: String,
}

/// Reads the history of one ClickHouse. The schema (the database's dialect) is read before the
/// first query and again after any failure: the database may have been dropped and made again
/// in another dialect meanwhile.
pub struct Reader {
    config: StoreConfig,
    client: Client,
    schema: Option<Schema>,
}

/// What the dashboard's history reads: a time window, the hosts, and how many rows at most.
#[derive(Clone, Debug)]
pub struct DashboardRequest {
    pub from: SystemTime,
    pub to: SystemTime,
    /// Where the activity buckets start (inside the window).
    pub activity_from: SystemTime,
    /// Only these hosts; empty: every host.
    pub hosts: Vec<String>,
    /// Use counts read at most.
    pub uses_limit: u64,
    /// Newest drift events read.
    pub drift_limit: u64,
    /// Newest events read.
    pub stream_limit: u64,
}

/// What the dashboard's history read.
#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    /// Uses in the window, counted by everything the NHI views show, most frequent first.
    pub uses: Vec<UseCount>,
    /// `uses_limit` counts came back: the rarest uses are missing.
    pub uses_cut: bool,
    /// Uses per NHI and 10-second bucket, since `activity_from`.
    pub activity: Vec<ActivityCount>,
    /// The newest drift, newest first.
    pub drifts: Vec<Event>,
    /// The newest events, newest first.
    pub stream: Vec<Event>,
    /// The last heartbeat of each host.
    pub heartbeats: Vec<Heartbeat>,
    /// Events lost in the window, per host and cause.
    pub losses: Vec<HostLoss>,
}

/// Uses alike (an NHI, or unregistered credentials; the verdict, kind, host, process, target
/// and drift), counted.
#[derive(Clone, Debug, PartialEq)]
pub struct UseCount {
    /// Empty for unregistered credentials.
    pub nhi: String,
    pub verdict: Verdict,
    /// An open, a connect or a request.
    pub kind: Kind,
    pub host: String,
    pub exe: String,
    pub uid: u32,
    /// The file opened (empty for a connect).
    pub path: String,
    /// The destination's address (empty for an open).
    pub daddr: String,
    pub dport: Option<u16>,
    pub dns_names: Vec<String>,
    pub drift: Vec<DriftKind>,
    /// A request: its server name, HTTP method, host and path (no ALPN or TLS version).
    pub wire: WireFields,
    pub n: u64,
    /// The newest of them, in ns since the epoch.
    pub last_ns: u64,
}

/// Uses of one NHI (empty: unregistered credentials) in one 10-second bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityCount {
    pub nhi: String,
    /// The bucket's index since the epoch (its start in seconds / 10).
    pub bucket: u64,
    pub n: u64,
}

/// A host's last heartbeat.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub host: String,
    pub at: SystemTime,
    /// Its daemon's version.
    pub version: String,
}

/// Events lost on one host for one cause.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLoss {
    pub host: String,
    pub cause: String,
    pub lost: u64,
}

impl Reader {
    /// A reader of the ClickHouse `config` names (nothing is sent until a query).
    pub fn new(config: StoreConfig) -> Reader {
        Reader {
            client: admin_client(&config),
            config,
            schema: None,
        }
    }

    /// The events an event query (`query.returns_events`) returns, in its order.
    pub async fn events(
        &mut self,
        query: &Query,
        params: &[Param],
    ) -> Result<Vec<Event>, ReadError> {
        let schema = self.schema().await?;
        let rows = queries::fetch_events(&self.client, &schema, query, params).await;
        let rows = rows.map_err(|e| self.failed(&e))?;
        Ok(rows.into_iter().map(|r| r.event).collect())
    }

    /// A summary query's column names, in order, and its rows.
    pub async fn table(
        &mut self,
        query: &Query,
        params: &[Param],
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), ReadError> {
        let schema = self.schema().await?;
        let table = queries::fetch_table(&self.client, &schema, query, params).await;
        table.map_err(|e| self.failed(&e))
    }

    /// One NHI's uses between `from` and `to` on `hosts` (empty: every host), counted by
    /// process, file, destination, outcome and host, most frequent first.
    pub async fn scope_uses(
        &mut self,
        nhi: &str,
        from: SystemTime,
        to: SystemTime,
        hosts: &[String],
    ) -> Result<Vec<ScopeRecord>, ReadError> {
        let hosts = Param::Strs(hosts.to_vec());
        let params = [Param::from(nhi), secs(from), secs(to), hosts.clone(), hosts];
        let rows: Vec<ScopeRow> = self.rows(&SCOPE_USES, &params).await?;
        Ok(rows.into_iter().filter_map(ScopeRow::record).collect())
    }

    /// The dashboard's history: use counts, activity, the newest drift and events, and the
    /// fleet's heartbeats and losses, of the hosts asked for.
    pub async fn dashboard(&mut self, r: &DashboardRequest) -> Result<Dashboard, ReadError> {
        let hosts = Param::Strs(r.hosts.clone());
        let window = [secs(r.from), secs(r.to), hosts.clone(), hosts.clone()];
        let with_limit = |n: u64| {
            let mut v = window.to_vec();
            v.push(Param::U64(n));
            v
        };
        let activity_params = [secs(r.activity_from), secs(r.to), hosts.clone(), hosts];
        let uses: Vec<UseRow> = self
            .rows(&DASHBOARD_USES, &with_limit(r.uses_limit))
            .await?;
        let activity: Vec<ActivityRow> = self.rows(&DASHBOARD_ACTIVITY, &activity_params).await?;
        let drifts = self
            .events(&DASHBOARD_DRIFT, &with_limit(r.drift_limit))
            .await?;
        let stream = self
            .events(&DASHBOARD_RECENT, &with_limit(r.stream_limit))
            .await?;
        let mut agents: Vec<AgentRow> = self.rows(&AGENTS, &[]).await?;
        let mut losses: Vec<LossRow> = self
            .rows(&LOSSES_BY_HOST, &[secs(r.from), secs(r.to)])
            .await?;
        if !r.hosts.is_empty() {
            agents.retain(|a| r.hosts.contains(&a.host));
            losses.retain(|l| r.hosts.contains(&l.host));
        }
        Ok(Dashboard {
            uses_cut: uses.len() as u64 >= r.uses_limit,
            uses: uses.into_iter().filter_map(UseRow::count).collect(),
            activity: activity
                .into_iter()
                .map(|a| ActivityCount {
                    nhi: a.nhi,
                    bucket: a.bucket,
                    n: a.n,
                })
                .collect(),
            drifts,
            stream,
            heartbeats: agents
                .into_iter()
                .map(|a| Heartbeat {
                    host: a.host,
                    at: UNIX_EPOCH + Duration::from_secs(a.last_secs),
                    version: a.version,
                })
                .collect(),
            losses: losses
                .into_iter()
                .map(|l| HostLoss {
                    host: l.host,
                    cause: l.cause,
                    lost: l.lost,
                })
                .collect(),
        })
    }

    /// The database's schema, read once (and again after a failure).
    async fn schema(&mut self) -> Result<Schema, ReadError> {
        if let Some(s) = &self.schema {
            return Ok(s.clone());
        }
        let read = migrate::read_schema(&self.client, &self.config).await;
        let schema = read.map_err(|e| self.error(e.to_string()))?;
        self.schema = Some(schema.clone());
        Ok(schema)
    }

    /// A summary query's rows as `T` (its fields in the query's column order).
    async fn rows<T>(&mut self, query: &Query, params: &[Param]) -> Result<Vec<T>, ReadError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let schema = self.schema().await?;
        let rows = queries::fetch_rows(&self.client, &schema, query, params).await;
        rows.map_err(|e| self.failed(&e))
    }

    /// A failed query, in words a user acts on.
    fn failed(&mut self, e: &clickhouse::error::Error) -> ReadError {
        let user = self.config.user.as_deref();
        self.error(SinkError::from_clickhouse(e, user).message)
    }

    /// An error of this server; the schema is read again before the next query.
    fn error(&mut self, message: String) -> ReadError {
        self.schema = None;
        ReadError {
            url: self.config.display_url(),
            message,
        }
    }
}

/// A time as the queries bind it (Unix seconds).
fn secs(t: SystemTime) -> Param {
    Param::U64(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
}

/// A text column's value: `None` when empty.
fn text(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A row of [`SCOPE_USES`], in its column order.
#[derive(Row, Deserialize)]
struct ScopeRow {
    kind_code: i8,
    exe: String,
    uid: u32,
    path: String,
    #[serde(alias = "daddr_text")]
    daddr: String,
    dport: Option<u16>,
    dns_names: Vec<String>,
    /// 1 when the open succeeded (connects always 1).
    succeeded: u8,
    host: String,
    sni: String,
    http_host: String,
    http_method: String,
    http_path: String,
    n: u64,
    first_secs: u64,
    last_secs: u64,
}

impl ScopeRow {
    fn record(self) -> Option<ScopeRecord> {
        Some(ScopeRecord {
            kind: kind_from_code(self.kind_code)?,
            exe: self.exe,
            uid: self.uid,
            path: self.path,
            daddr: self.daddr,
            dport: self.dport,
            dns_names: self.dns_names,
            succeeded: self.succeeded != 0,
            host: self.host,
            wire: WireFields {
                sni: text(self.sni),
                alpn: None,
                tls_version: None,
                http_method: text(self.http_method),
                http_host: text(self.http_host),
                http_path: text(self.http_path),
            },
            n: self.n,
            first_secs: self.first_secs,
            last_secs: self.last_secs,
        })
    }
}

/// A row of [`DASHBOARD_USES`], in its column order.
#[derive(Row, Deserialize)]
struct UseRow {
    nhi: String,
    verdict_code: i8,
    kind_code: i8,
    host: String,
    exe: String,
    uid: u32,
    path: String,
    #[serde(alias = "daddr_text")]
    daddr: String,
    dport: Option<u16>,
    dns_names: Vec<String>,
    drift: Vec<String>,
    sni: String,
    http_host: String,
    http_method: String,
    http_path: String,
    n: u64,
    last_ns: u64,
}

impl UseRow {
    fn count(self) -> Option<UseCount> {
        Some(UseCount {
            kind: kind_from_code(self.kind_code)?,
            verdict: verdict_from_code(self.verdict_code)?,
            drift: self
                .drift
                .iter()
                .filter_map(|d| DriftKind::from_name(d))
                .collect(),
            nhi: self.nhi,
            host: self.host,
            exe: self.exe,
            uid: self.uid,
            path: self.path,
            daddr: self.daddr,
            dport: self.dport,
            dns_names: self.dns_names,
            wire: WireFields {
                sni: text(self.sni),
                alpn: None,
                tls_version: None,
                http_method: text(self.http_method),
                http_host: text(self.http_host),
                http_path: text(self.http_path),
            },
            n: self.n,
            last_ns: self.last_ns,
        })
    }
}

/// A row of [`DASHBOARD_ACTIVITY`].
#[derive(Row, Deserialize)]
struct ActivityRow {
    nhi: String,
    bucket: u64,
    n: u64,
}

/// A row of [`AGENTS`].
#[derive(Row, Deserialize)]
#[expect(
    dead_code,
    reason = "the counters are read (RowBinary goes in column order) but not shown"
)]
struct AgentRow {
    host: String,
    last_secs: u64,
    version: String,
    counter_names: Vec<String>,
    counter_values: Vec<u64>,
}

/// A row of [`LOSSES_BY_HOST`].
#[derive(Row, Deserialize)]
struct LossRow {
    host: String,
    cause: String,
    lost: u64,
}
