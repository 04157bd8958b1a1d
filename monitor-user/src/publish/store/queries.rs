//! The queries nhiscope ships, in both dialects: event history for responders (by NHI, by
//! host, drift), coverage gaps, and the fleet's heartbeats. `nhiscope query`, the dashboard's
//! history and the Grafana dashboards use these; tests run every one on 18.16 and on a
//! current engine.
//!
//! SQL text holds `{db}` for the database and `?` for parameters, bound in order (by the
//! `clickhouse` crate, or by [`Query::render`] as escaped literals). Times are bound as Unix
//! seconds inside `toDateTime(?)`, which both dialects compare with their time columns.
//!
//! Event listings use `FINAL`, so that even a duplicate not merged away yet is shown once.

use std::net::IpAddr;

use clickhouse::{Client, Row};
use serde::Deserialize;

use super::{
    row::{kind_from_code, verdict_from_code, EventRow, Ts},
    schema::{Dialect, Schema},
};
use crate::domain::event::{syscall_from_name, DriftKind, Event, Kind, Proto, SharedStr};

/// A parameter value.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Str(String),
    U64(u64),
    /// A list of strings (`Array(String)`); empty is allowed.
    Strs(Vec<String>),
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Param::Str(s.to_owned())
    }
}

impl From<u64> for Param {
    fn from(n: u64) -> Self {
        Param::U64(n)
    }
}

impl From<Ts> for Param {
    fn from(t: Ts) -> Self {
        Param::U64(t.secs)
    }
}

/// A shipped query.
#[derive(Debug)]
pub struct Query {
    pub name: &'static str,
    pub description: &'static str,
    /// What the `?`s stand for, in order.
    pub params: &'static [&'static str],
    /// Whether it returns events ([`fetch_events`]) rather than a summary.
    pub returns_events: bool,
    legacy: &'static str,
    modern: &'static str,
}

/// Columns of `events` read as an [`EventRecord`] (the same layout in both dialects).
macro_rules! legacy_event_columns {
    () => {
        "host, run_id, seq, toUInt64(toUnixTimestamp(ts)) AS secs, ts_ns AS nanos, \
         CAST(kind AS Int8) AS kind_code, pid, tid, ppid, uid, gid, exe, comm, cmdline, \
         cgroup_id, container, syscall, path, path_arg, target, flags, result, error, daddr, \
         dport, saddr, sport, dns_names, count, cause, nhi, CAST(verdict AS Int8) AS \
         verdict_code, drift, reason, script, proto, pod_uid, pod, pod_namespace, \
         container_name, established_before_use, sni, alpn, tls_version, http_method, \
         http_host, http_path"
    };
}

macro_rules! modern_event_columns {
    () => {
        "host, run_id, seq, toUInt64(toUnixTimestamp(ts)) AS secs, \
         toUInt32(toUnixTimestamp64Nano(ts) % 1000000000) AS nanos, \
         CAST(kind AS Int8) AS kind_code, pid, tid, ppid, uid, gid, exe, comm, cmdline, \
         cgroup_id, container, syscall, path, path_arg, target, flags, result, error, \
         ifNull(replaceRegexpOne(toString(daddr), '^::ffff:', ''), '') AS daddr_text, dport, \
         ifNull(replaceRegexpOne(toString(saddr), '^::ffff:', ''), '') AS saddr_text, sport, \
         dns_names, count, cause, nhi, CAST(verdict AS Int8) AS verdict_code, drift, reason, \
         script, proto, pod_uid, pod, pod_namespace, container_name, established_before_use, \
         sni, alpn, tls_version, http_method, http_host, http_path"
    };
}

/// Events of one NHI in a time range, oldest first.
pub const EVENTS_BY_NHI: Query = Query {
    name: "events_by_nhi",
    description: "every use of one NHI in a time range, oldest first",
    params: &["nhi", "from", "to", "limit"],
    returns_events: true,
    legacy: concat!(
        "SELECT ",
        legacy_event_columns!(),
        " FROM {db}.events FINAL WHERE nhi = ? AND ts >= toDateTime(?) AND ts < toDateTime(?) \
         ORDER BY ts, ts_ns, host, run_id, seq LIMIT ?"
    ),
    modern: concat!(
        "SELECT ",
        modern_event_columns!(),
        " FROM {db}.events FINAL WHERE nhi = ? AND ts >= toDateTime(?) AND ts < toDateTime(?) \
         ORDER BY ts, host, run_id, seq LIMIT ?"
    ),
};

/// Events on one host in a time range, oldest first.
pub const EVENTS_BY_HOST: Query = Query {
    name: "events_by_host",
    description: "everything seen on one host in a time range, oldest first",
    params: &["host", "from", "to", "limit"],
    returns_events: true,
    legacy: concat!(
        "SELECT ",
        legacy_event_columns!(),
        " FROM {db}.events FINAL WHERE host = ? AND ts >= toDateTime(?) AND ts < toDateTime(?) \
         ORDER BY ts, ts_ns, run_id, seq LIMIT ?"
    ),
    modern: concat!(
        "SELECT ",
        modern_event_columns!(),
        " FROM {db}.events FINAL WHERE host = ? AND ts >= toDateTime(?) AND ts < toDateTime(?) \
         ORDER BY ts, run_id, seq LIMIT ?"
    ),
};

/// Drift and unregistered use in a time range, newest first.
pub const DRIFT: Query = Query {
    name: "drift",
    description: "drift and unregistered credential use in a time range, newest first",
    params: &["from", "to", "limit"],
    returns_events: true,
    legacy: concat!(
        "SELECT ",
        legacy_event_columns!(),
        " FROM {db}.events FINAL WHERE verdict IN ('drift', 'unregistered') \
         AND ts >= toDateTime(?) AND ts < toDateTime(?) \
         ORDER BY ts DESC, ts_ns DESC, host, run_id, seq LIMIT ?"
    ),
    modern: concat!(
        "SELECT ",
        modern_event_columns!(),
        " FROM {db}.events FINAL WHERE verdict IN ('drift', 'unregistered') \
         AND ts >= toDateTime(?) AND ts < toDateTime(?) \
         ORDER BY ts DESC, host, run_id, seq LIMIT ?"
    ),
};

/// Per NHI: events, drifts, distinct hosts and executables, first and last use.
pub const NHI_SUMMARY: Query = Query {
    name: "nhi_summary",
    description: "per NHI: uses, drifts, hosts, executables, first and last use",
    params: &["from", "to"],
    returns_events: false,
    legacy: "SELECT nhi, count() AS events, countIf(verdict = 'drift') AS drifts, \
             uniqExact(host) AS hosts, uniqExact(exe) AS exes, \
             toUInt64(toUnixTimestamp(min(ts))) AS first_secs, \
             toUInt64(toUnixTimestamp(max(ts))) AS last_secs \
             FROM {db}.events WHERE nhi != '' AND ts >= toDateTime(?) AND ts < toDateTime(?) \
             GROUP BY nhi ORDER BY nhi",
    modern: "SELECT nhi, count() AS events, countIf(verdict = 'drift') AS drifts, \
             uniqExact(host) AS hosts, uniqExact(exe) AS exes, \
             toUInt64(toUnixTimestamp(min(ts))) AS first_secs, \
             toUInt64(toUnixTimestamp(max(ts))) AS last_secs \
             FROM {db}.events WHERE nhi != '' AND ts >= toDateTime(?) AND ts < toDateTime(?) \
             GROUP BY nhi ORDER BY nhi",
};

/// Drift kinds per NHI.
pub const DRIFT_KINDS: Query = Query {
    name: "drift_kinds",
    description: "how often each kind of drift happened, per NHI",
    params: &["from", "to"],
    returns_events: false,
    legacy: "SELECT nhi, arrayJoin(drift) AS kind, count() AS n FROM {db}.events \
             WHERE verdict = 'drift' AND ts >= toDateTime(?) AND ts < toDateTime(?) \
             GROUP BY nhi, kind ORDER BY n DESC, nhi, kind",
    modern: "SELECT nhi, toString(arrayJoin(drift)) AS kind, count() AS n FROM {db}.events \
             WHERE verdict = 'drift' AND ts >= toDateTime(?) AND ts < toDateTime(?) \
             GROUP BY nhi, kind ORDER BY n DESC, nhi, kind",
};

/// Events per minute and verdict (a dashboard's time series).
pub const VERDICTS_PER_MINUTE: Query = Query {
    name: "verdicts_per_minute",
    description: "events per minute and verdict",
    params: &["from", "to"],
    returns_events: false,
    legacy: "SELECT toUInt64(toUnixTimestamp(toStartOfMinute(ts))) AS minute, \
             toString(verdict) AS verdict, count() AS n FROM {db}.events \
             WHERE ts >= toDateTime(?) AND ts < toDateTime(?) \
             GROUP BY minute, verdict ORDER BY minute, verdict",
    modern: "SELECT toUInt64(toUnixTimestamp(toStartOfMinute(ts))) AS minute, \
             toString(verdict) AS verdict, count() AS n FROM {db}.events \
             WHERE ts >= toDateTime(?) AND ts < toDateTime(?) \
             GROUP BY minute, verdict ORDER BY minute, verdict",
};

/// The server name of a request: its TLS server name, else its HTTP `Host` without the port.
macro_rules! server_name {
    () => {
        "if(sni != '', sni, replaceRegexpOne(http_host, ':[0-9]+\\\\z', ''))"
    };
}

/// The APIs each NHI's holders talked to: server name, port, method and path of their requests
/// (`request` events), with how many, how many drifted and which drift kinds, first and last.
pub const APIS: Query = Query {
    name: "apis",
    description: "per NHI: the APIs its holders used (server name, port, HTTP method and path), \
                  with counts, drift and first and last use",
    params: &["from", "to"],
    returns_events: false,
    legacy: concat!(
        "SELECT nhi, ",
        server_name!(),
        " AS server_name, dport, http_method AS method, http_path AS path, count() AS n, \
         countIf(verdict = 'drift') AS drifts, arraySort(groupUniqArrayArray(drift)) AS drift, \
         toUInt64(toUnixTimestamp(min(ts))) AS first_secs, \
         toUInt64(toUnixTimestamp(max(ts))) AS last_secs \
         FROM {db}.events FINAL WHERE kind = 'request' AND nhi != '' \
         AND ts >= toDateTime(?) AND ts < toDateTime(?) \
         GROUP BY nhi, server_name, dport, method, path \
         ORDER BY nhi, n DESC, server_name, dport, method, path"
    ),
    modern: concat!(
        "SELECT toString(nhi) AS nhi, toString(",
        server_name!(),
        ") AS server_name, dport, toString(http_method) AS method, http_path AS path, \
         count() AS n, countIf(verdict = 'drift') AS drifts, \
         arraySort(arrayMap(x -> toString(x), groupUniqArrayArray(drift))) AS drift, \
         toUInt64(toUnixTimestamp(min(ts))) AS first_secs, \
         toUInt64(toUnixTimestamp(max(ts))) AS last_secs \
         FROM {db}.events FINAL WHERE kind = 'request' AND nhi != '' \
         AND ts >= toDateTime(?) AND ts < toDateTime(?) \
         GROUP BY nhi, server_name, dport, method, path \
         ORDER BY nhi, n DESC, server_name, dport, method, path"
    ),
};

/// Coverage gaps overlapping a time range.
pub const LOSSES: Query = Query {
    name: "losses",
    description: "coverage gaps (lost events) overlapping a time range",
    params: &["from", "to"],
    returns_events: false,
    legacy: "SELECT host, toUInt64(toUnixTimestamp(start_ts)) AS start_secs, \
             toUInt64(toUnixTimestamp(end_ts)) AS end_secs, count, cause, reason \
             FROM {db}.losses FINAL WHERE end_ts >= toDateTime(?) AND start_ts < toDateTime(?) \
             ORDER BY end_ts, host, cause",
    modern: "SELECT host, toUInt64(toUnixTimestamp(start_ts)) AS start_secs, \
             toUInt64(toUnixTimestamp(end_ts)) AS end_secs, count, cause, reason \
             FROM {db}.losses FINAL WHERE end_ts >= toDateTime(?) AND start_ts < toDateTime(?) \
             ORDER BY end_ts, host, cause",
};

/// Lost events per host and cause.
pub const LOSSES_BY_HOST: Query = Query {
    name: "losses_by_host",
    description: "lost events per host and cause in a time range",
    params: &["from", "to"],
    returns_events: false,
    legacy: "SELECT host, cause, sum(count) AS lost FROM {db}.losses FINAL \
             WHERE end_ts >= toDateTime(?) AND start_ts < toDateTime(?) \
             GROUP BY host, cause ORDER BY host, cause",
    modern: "SELECT host, toString(cause) AS cause, sum(count) AS lost FROM {db}.losses FINAL \
             WHERE end_ts >= toDateTime(?) AND start_ts < toDateTime(?) \
             GROUP BY host, cause ORDER BY host, cause",
};

/// The last heartbeat of every host.
pub const AGENTS: Query = Query {
    name: "agents",
    description: "the last heartbeat of every host, with its counters",
    params: &[],
    returns_events: false,
    legacy: "SELECT host, toUInt64(toUnixTimestamp(max(ts))) AS last_secs, \
             argMax(version, ts) AS version, argMax(counter_names, ts) AS counter_names, \
             argMax(counter_values, ts) AS counter_values FROM {db}.agents \
             GROUP BY host ORDER BY host",
    modern: "SELECT host, toUInt64(toUnixTimestamp(max(ts))) AS last_secs, \
             toString(argMax(version, ts)) AS version, \
             arrayMap(x -> toString(x), mapKeys(argMax(counters, ts))) AS counter_names, \
             mapValues(argMax(counters, ts)) AS counter_values FROM {db}.agents \
             GROUP BY host ORDER BY host",
};

/// The part of a `WHERE` that keeps the hosts asked for: the parameter `hosts` (twice), an
/// empty list for every host.
macro_rules! hosts_filter {
    () => {
        "(empty(CAST(? AS Array(String))) OR has(CAST(? AS Array(String)), host))"
    };
}

/// The uses an NHI row of the dashboard counts: opens and connects with an NHI, and opens of
/// unregistered credentials.
macro_rules! uses_filter {
    () => {
        "kind IN ('open', 'connect') AND (nhi != '' OR verdict = 'unregistered')"
    };
}

/// The rows an NHI's detail counts: its uses and its holders' requests (the APIs they named).
macro_rules! uses_and_requests_filter {
    () => {
        "(kind IN ('open', 'connect') AND (nhi != '' OR verdict = 'unregistered') \
         OR kind = 'request' AND nhi != '')"
    };
}

/// The dashboard's history: uses (and requests) grouped by everything the NHI views show (who,
/// where, which API, what was outside the scope), with how many and the newest (ns since the
/// epoch).
pub const DASHBOARD_USES: Query = Query {
    name: "dashboard_uses",
    description: "uses and requests per NHI, host, process, path, destination, API and drift, \
                  with the newest",
    params: &["from", "to", "hosts", "hosts", "limit"],
    returns_events: false,
    legacy: concat!(
        "SELECT nhi, CAST(verdict AS Int8) AS verdict_code, CAST(kind AS Int8) AS kind_code, \
         host, exe, uid, path, daddr, dport, dns_names, drift, sni, http_host, http_method, \
         http_path, count() AS n, \
         max(toUInt64(toUnixTimestamp(ts)) * 1000000000 + ts_ns) AS last_ns \
         FROM {db}.events FINAL WHERE ",
        uses_and_requests_filter!(),
        " AND ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " GROUP BY nhi, verdict_code, kind_code, host, exe, uid, path, daddr, dport, \
         dns_names, drift, sni, http_host, http_method, http_path \
         ORDER BY n DESC, last_ns DESC LIMIT ?"
    ),
    modern: concat!(
        "SELECT nhi, CAST(verdict AS Int8) AS verdict_code, CAST(kind AS Int8) AS kind_code, \
         host, exe, uid, path, \
         ifNull(replaceRegexpOne(toString(daddr), '^::ffff:', ''), '') AS daddr_text, dport, \
         dns_names, drift, sni, http_host, http_method, http_path, count() AS n, \
         toUInt64(max(toUnixTimestamp64Nano(ts))) AS last_ns \
         FROM {db}.events FINAL WHERE ",
        uses_and_requests_filter!(),
        " AND ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " GROUP BY nhi, verdict_code, kind_code, host, exe, uid, path, daddr_text, dport, \
         dns_names, drift, sni, http_host, http_method, http_path \
         ORDER BY n DESC, last_ns DESC LIMIT ?"
    ),
};

/// Uses per NHI in 10-second buckets (the dashboard's activity sparklines).
pub const DASHBOARD_ACTIVITY: Query = Query {
    name: "dashboard_activity",
    description: "uses per NHI in 10-second buckets",
    params: &["from", "to", "hosts", "hosts"],
    returns_events: false,
    legacy: concat!(
        "SELECT nhi, intDiv(toUInt64(toUnixTimestamp(ts)), 10) AS bucket, count() AS n \
         FROM {db}.events FINAL WHERE ",
        uses_filter!(),
        " AND ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " GROUP BY nhi, bucket ORDER BY nhi, bucket"
    ),
    modern: concat!(
        "SELECT toString(nhi) AS nhi, intDiv(toUInt64(toUnixTimestamp(ts)), 10) AS bucket, \
         count() AS n FROM {db}.events FINAL WHERE ",
        uses_filter!(),
        " AND ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " GROUP BY nhi, bucket ORDER BY nhi, bucket"
    ),
};

/// The newest events of some hosts, newest first (the dashboard's stream).
pub const DASHBOARD_RECENT: Query = Query {
    name: "dashboard_recent",
    description: "the newest events of some hosts (all when none is named), newest first",
    params: &["from", "to", "hosts", "hosts", "limit"],
    returns_events: true,
    legacy: concat!(
        "SELECT ",
        legacy_event_columns!(),
        " FROM {db}.events FINAL WHERE ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " ORDER BY ts DESC, ts_ns DESC, host, run_id, seq DESC LIMIT ?"
    ),
    modern: concat!(
        "SELECT ",
        modern_event_columns!(),
        " FROM {db}.events FINAL WHERE ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " ORDER BY ts DESC, host, run_id, seq DESC LIMIT ?"
    ),
};

/// The newest drift of some hosts, newest first (the dashboard's drift feed).
pub const DASHBOARD_DRIFT: Query = Query {
    name: "dashboard_drift",
    description: "the newest drift of some hosts (all when none is named), newest first",
    params: &["from", "to", "hosts", "hosts", "limit"],
    returns_events: true,
    legacy: concat!(
        "SELECT ",
        legacy_event_columns!(),
        " FROM {db}.events FINAL WHERE verdict = 'drift' \
         AND ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " ORDER BY ts DESC, ts_ns DESC, host, run_id, seq DESC LIMIT ?"
    ),
    modern: concat!(
        "SELECT ",
        modern_event_columns!(),
        " FROM {db}.events FINAL WHERE verdict = 'drift' \
         AND ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " ORDER BY ts DESC, host, run_id, seq DESC LIMIT ?"
    ),
};

/// One NHI's uses by process, file and destination (and, for requests, the API: server name,
/// method and path), with whether each open succeeded (what `nhiscope scope suggest` learns a
/// scope from).
pub const SCOPE_USES: Query = Query {
    name: "scope_uses",
    description: "one NHI's uses by process, file, destination and host, in a time range",
    params: &["nhi", "from", "to", "hosts", "hosts"],
    returns_events: false,
    legacy: concat!(
        "SELECT CAST(kind AS Int8) AS kind_code, exe, uid, path, daddr, dport, dns_names, \
         toUInt8(ifNull(result, 0) >= 0) AS succeeded, host, sni, http_host, http_method, \
         http_path, count() AS n, \
         toUInt64(toUnixTimestamp(min(ts))) AS first_secs, \
         toUInt64(toUnixTimestamp(max(ts))) AS last_secs \
         FROM {db}.events FINAL WHERE nhi = ? AND kind IN ('open', 'connect', 'request') \
         AND ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " GROUP BY kind_code, exe, uid, path, daddr, dport, dns_names, succeeded, host, sni, \
         http_host, http_method, http_path \
         ORDER BY n DESC, exe, path, daddr, dport, sni, http_host, http_method, http_path"
    ),
    modern: concat!(
        "SELECT CAST(kind AS Int8) AS kind_code, exe, uid, path, \
         ifNull(replaceRegexpOne(toString(daddr), '^::ffff:', ''), '') AS daddr_text, dport, \
         dns_names, toUInt8(ifNull(result, 0) >= 0) AS succeeded, host, sni, http_host, \
         http_method, http_path, count() AS n, toUInt64(toUnixTimestamp(min(ts))) AS first_secs, \
         toUInt64(toUnixTimestamp(max(ts))) AS last_secs \
         FROM {db}.events FINAL WHERE nhi = ? AND kind IN ('open', 'connect', 'request') \
         AND ts >= toDateTime(?) AND ts < toDateTime(?) AND ",
        hosts_filter!(),
        " GROUP BY kind_code, exe, uid, path, daddr_text, dport, dns_names, succeeded, host, \
         sni, http_host, http_method, http_path \
         ORDER BY n DESC, exe, path, daddr_text, dport, sni, http_host, http_method, http_path"
    ),
};

/// Every shipped query.
pub const ALL: &[&Query] = &[
    &EVENTS_BY_NHI,
    &EVENTS_BY_HOST,
    &DRIFT,
    &NHI_SUMMARY,
    &DRIFT_KINDS,
    &APIS,
    &VERDICTS_PER_MINUTE,
    &LOSSES,
    &LOSSES_BY_HOST,
    &AGENTS,
    &DASHBOARD_USES,
    &DASHBOARD_ACTIVITY,
    &DASHBOARD_RECENT,
    &DASHBOARD_DRIFT,
    &SCOPE_USES,
];

impl Query {
    /// The SQL for `dialect` on `database`, with `?` placeholders.
    pub fn sql(&self, dialect: Dialect, database: &str) -> String {
        let text = match dialect {
            Dialect::Legacy => self.legacy,
            Dialect::Modern => self.modern,
        };
        text.replace("{db}", database)
    }

    /// The SQL with `params` in place of the `?`s, as escaped literals.
    pub fn render(&self, dialect: Dialect, database: &str, params: &[Param]) -> String {
        let sql = self.sql(dialect, database);
        let mut out = String::with_capacity(sql.len());
        let mut values = params.iter();
        for c in sql.chars() {
            match (c, c == '?') {
                (_, true) => match values.next() {
                    Some(Param::U64(n)) => out.push_str(&n.to_string()),
                    Some(Param::Str(s)) => out.push_str(&quote(s)),
                    Some(Param::Strs(v)) => {
                        let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
                        out.push_str(&format!("[{}]", items.join(", ")));
                    }
                    None => out.push('?'),
                },
                (c, false) => out.push(c),
            }
        }
        out
    }

    fn bound(
        &self,
        client: &Client,
        schema: &Schema,
        params: &[Param],
    ) -> clickhouse::query::Query {
        let mut q = client.query(&self.sql(schema.dialect, &schema.database));
        for p in params {
            q = match p {
                Param::Str(s) => q.bind(s.as_str()),
                Param::U64(n) => q.bind(*n),
                Param::Strs(v) => q.bind(v.as_slice()),
            };
        }
        q
    }
}

/// A string literal: `'...'` with `\` and `'` escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// An event as the event queries return it.
#[derive(Debug, Row, Deserialize)]
pub struct EventRecord {
    host: String,
    run_id: u64,
    seq: u64,
    secs: u64,
    nanos: u32,
    kind_code: i8,
    pid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    gid: u32,
    exe: String,
    comm: String,
    cmdline: Vec<String>,
    cgroup_id: u64,
    container: String,
    syscall: String,
    path: String,
    path_arg: String,
    target: String,
    flags: Option<u32>,
    result: Option<i64>,
    error: String,
    #[serde(alias = "daddr_text")]
    daddr: String,
    dport: Option<u16>,
    #[serde(alias = "saddr_text")]
    saddr: String,
    sport: Option<u16>,
    dns_names: Vec<String>,
    count: Option<u64>,
    cause: String,
    nhi: String,
    verdict_code: i8,
    drift: Vec<String>,
    reason: String,
    script: String,
    proto: String,
    pod_uid: String,
    pod: String,
    pod_namespace: String,
    container_name: String,
    established_before_use: u8,
    sni: String,
    alpn: Vec<String>,
    tls_version: String,
    http_method: String,
    http_host: String,
    http_path: String,
}

impl EventRecord {
    /// The event this record stores, its text made values again (the inverse of what the
    /// sink writes, `row::LegacyEvent` and `row::ModernEvent`). `None` when a code or name is
    /// unknown to this version.
    pub fn into_row(self) -> Option<EventRow> {
        let r = self;
        let kind = kind_from_code(r.kind_code)?;
        let text = |s: String| (!s.is_empty()).then_some(s);
        let addr = |s: &str| -> Option<Option<IpAddr>> {
            if s.is_empty() {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        let ts = Ts {
            secs: r.secs,
            nanos: r.nanos,
        };
        let mut e = Event::new(kind, ts, SharedStr::from(r.host));
        e.pid = r.pid;
        e.tid = r.tid;
        e.ppid = r.ppid;
        e.uid = r.uid;
        e.gid = r.gid;
        e.exe = r.exe.into();
        e.comm = r.comm.into();
        e.cmdline = r.cmdline.into();
        e.cgroup_id = r.cgroup_id;
        e.container = text(r.container);
        e.syscall = match r.syscall.as_str() {
            "" => None,
            name => Some(syscall_from_name(name)?),
        };
        e.path = text(r.path);
        e.path_arg = text(r.path_arg);
        e.target = text(r.target);
        e.flags = r.flags;
        e.result = r.result;
        e.error = text(r.error);
        e.daddr = addr(&r.daddr)?;
        e.dport = r.dport;
        e.saddr = addr(&r.saddr)?;
        e.sport = r.sport;
        // Connects and requests always carry the list (possibly empty); other kinds never do.
        e.dns_names = (matches!(kind, Kind::Connect | Kind::Request) || !r.dns_names.is_empty())
            .then_some(r.dns_names);
        e.count = r.count;
        e.cause = text(r.cause);
        e.nhi = text(r.nhi).map(SharedStr::from);
        e.verdict = verdict_from_code(r.verdict_code)?;
        e.drift = r
            .drift
            .iter()
            .map(|d| DriftKind::from_name(d))
            .collect::<Option<_>>()?;
        e.reason = r.reason;
        e.script = text(r.script);
        e.proto = match r.proto.as_str() {
            "" => None,
            name => Some(Proto::from_name(name)?),
        };
        e.pod_uid = text(r.pod_uid);
        e.pod = text(r.pod);
        e.pod_namespace = text(r.pod_namespace);
        e.container_name = text(r.container_name);
        e.established_before_use = r.established_before_use != 0;
        e.wire.sni = text(r.sni);
        // An empty ALPN list is not sent (the ClientHello had no ALPN extension, or it was cut).
        e.wire.alpn = (!r.alpn.is_empty()).then_some(r.alpn);
        e.wire.tls_version = text(r.tls_version);
        e.wire.http_method = text(r.http_method);
        e.wire.http_host = text(r.http_host);
        e.wire.http_path = text(r.http_path);
        Some(EventRow::new(e, r.run_id, r.seq))
    }
}

/// Runs an event query (`query.returns_events`) and returns its rows.
pub async fn fetch_events(
    client: &Client,
    schema: &Schema,
    query: &Query,
    params: &[Param],
) -> clickhouse::error::Result<Vec<EventRow>> {
    let records: Vec<EventRecord> = query.bound(client, schema, params).fetch_all().await?;
    Ok(records
        .into_iter()
        .filter_map(EventRecord::into_row)
        .collect())
}

/// Runs a summary query and reads its rows as `T` (fields in the query's column order).
pub async fn fetch_rows<T>(
    client: &Client,
    schema: &Schema,
    query: &Query,
    params: &[Param],
) -> clickhouse::error::Result<Vec<T>>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    query.bound(client, schema, params).fetch_all().await
}

/// Runs a summary query and returns its column names, in order, and its rows.
pub async fn fetch_table(
    client: &Client,
    schema: &Schema,
    query: &Query,
    params: &[Param],
) -> clickhouse::error::Result<(Vec<String>, Vec<Vec<serde_json::Value>>)> {
    #[derive(Deserialize)]
    struct Meta {
        name: String,
    }
    #[derive(Deserialize)]
    struct Compact {
        meta: Vec<Meta>,
        data: Vec<Vec<serde_json::Value>>,
    }
    let mut cursor = query
        .bound(client, schema, params)
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .fetch_bytes("JSONCompact")?;
    let bytes = cursor.collect().await?;
    let c: Compact = serde_json::from_slice(&bytes)
        .map_err(|e| clickhouse::error::Error::Custom(format!("not JSONCompact: {e}")))?;
    Ok((c.meta.into_iter().map(|m| m.name).collect(), c.data))
}

/// Runs any query and returns its rows as JSON objects (64-bit numbers as numbers).
pub async fn fetch_json(
    client: &Client,
    schema: &Schema,
    query: &Query,
    params: &[Param],
) -> clickhouse::error::Result<Vec<serde_json::Value>> {
    let mut cursor = query
        .bound(client, schema, params)
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .fetch_bytes("JSONEachRow")?;
    let bytes = cursor.collect().await?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l)
                .map_err(|e| clickhouse::error::Error::Custom(format!("not JSON: {e}")))
        })
        .collect()
}
