//! Rows: what an [`Event`], a coverage gap and a heartbeat become in ClickHouse.
//!
//! Two layers. The *neutral* rows ([`EventRow`], [`LossRow`], [`AgentRow`]) are built once, when
//! the daemon hands an event to the store; they carry the row's identity (`host`, `run_id`,
//! `seq`), are what the spool keeps on disk (JSON lines), and do not depend on the server. The
//! *wire* rows (`Legacy*`, `Modern*`) borrow from them, one set per [`Dialect`], and are what the
//! `clickhouse` crate serializes as RowBinary: their field names are the column names and their
//! field types the RowBinary encoding of the column types in [`super::schema`].
//!
//! Optional event fields: numbers that can legitimately be 0 (`flags`, `result`, ports, `count`)
//! are `Nullable` columns; strings use `''` for "absent" (no event carries an empty path, address
//! or NHI id), which keeps them out of `Nullable` and lets `nhi` be in the sorting key.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::event::{DriftKind, Event, Kind, Verdict};

/// An instant as seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ts {
    pub secs: u64,
    pub nanos: u32,
}

impl Ts {
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    /// Parses the RFC 3339 timestamp of an [`Event`]; `None` when it is not one.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        // Events carry `2026-11-23T14:54:19.123456789Z`, and the part up to the second repeats
        // from one event to the next: its calendar arithmetic is done once per second.
        thread_local! {
            static LAST: std::cell::RefCell<(String, u64)> =
                const { std::cell::RefCell::new((String::new(), 0)) };
        }
        let b = s.as_bytes();
        if b.len() == 30
            && b[19] == b'.'
            && b[29] == b'Z'
            && b[20..29].iter().all(u8::is_ascii_digit)
        {
            let prefix = &s[..19];
            let nanos = b[20..29]
                .iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            let cached = LAST.with(|l| {
                let l = l.borrow();
                (l.0 == prefix).then_some(l.1)
            });
            let secs = match cached {
                Some(secs) => secs,
                None => {
                    let whole = humantime::parse_rfc3339(&format!("{prefix}Z")).ok()?;
                    let secs = whole.duration_since(UNIX_EPOCH).ok()?.as_secs();
                    LAST.with(|l| *l.borrow_mut() = (prefix.to_owned(), secs));
                    secs
                }
            };
            return Some(Self { secs, nanos });
        }
        humantime::parse_rfc3339(s).ok().map(Self::from_system)
    }

    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.secs, self.nanos)
    }

    /// `2026-11-23T11:52:05.123456789Z`: the form events carry.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_nanos(self.to_system()).to_string()
    }

    /// Seconds for a `DateTime` column (which ends in 2106).
    fn datetime(self) -> u32 {
        u32::try_from(self.secs).unwrap_or(u32::MAX)
    }

    /// Nanoseconds since the epoch for a `DateTime64(9)` column (which ends in 2262).
    fn datetime64(self) -> i64 {
        i64::try_from(self.secs)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .and_then(|n| n.checked_add(i64::from(self.nanos)))
            .unwrap_or(i64::MAX)
    }
}

/// `Enum8` values of the `kind` column: stable, never reused.
pub fn kind_code(k: Kind) -> i8 {
    match k {
        Kind::Open => 1,
        Kind::Connect => 2,
        Kind::Exec => 3,
        Kind::Exit => 4,
        Kind::Dns => 5,
        Kind::Loss => 6,
    }
}

pub fn kind_from_code(c: i8) -> Option<Kind> {
    [
        Kind::Open,
        Kind::Connect,
        Kind::Exec,
        Kind::Exit,
        Kind::Dns,
        Kind::Loss,
    ]
    .into_iter()
    .find(|k| kind_code(*k) == c)
}

/// `Enum8` values of the `verdict` column: stable, never reused.
pub fn verdict_code(v: Verdict) -> i8 {
    match v {
        Verdict::Ok => 1,
        Verdict::Drift => 2,
        Verdict::Unregistered => 3,
    }
}

pub fn verdict_from_code(c: i8) -> Option<Verdict> {
    [Verdict::Ok, Verdict::Drift, Verdict::Unregistered]
        .into_iter()
        .find(|v| verdict_code(*v) == c)
}

const DRIFT_KINDS: [DriftKind; 5] = [
    DriftKind::ReaderOutOfScope,
    DriftKind::EndpointOutOfScope,
    DriftKind::Expired,
    DriftKind::StaleCredential,
    DriftKind::InteractiveUse,
];

/// The drift kind stored as `name` (`reader_out_of_scope`, ...).
pub fn drift_from_name(name: &str) -> Option<DriftKind> {
    DRIFT_KINDS.into_iter().find(|k| k.as_str() == name)
}

/// The `&'static str` name of a syscall, as [`Event::syscall`] holds it.
fn syscall_name(s: &str) -> Option<&'static str> {
    (0..64)
        .filter_map(monitor_common::OpenOp::from_u32)
        .map(monitor_common::OpenOp::name)
        .find(|n| *n == s)
}

/// One event, as the store keeps it. `(host, run_id, seq)` identifies it uniquely: `run_id` is
/// drawn at random each time the store starts and `seq` counts the events of that run from 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub host: String,
    pub run_id: u64,
    pub seq: u64,
    pub ts: Ts,
    /// [`kind_code`].
    pub kind: i8,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe: String,
    pub comm: String,
    pub cmdline: Vec<String>,
    pub cgroup_id: u64,
    pub container: String,
    pub syscall: String,
    pub path: String,
    pub path_arg: String,
    pub target: String,
    pub flags: Option<u32>,
    pub result: Option<i64>,
    pub error: String,
    pub daddr: String,
    pub dport: Option<u16>,
    pub saddr: String,
    pub sport: Option<u16>,
    pub dns_names: Vec<String>,
    pub count: Option<u64>,
    pub cause: String,
    pub nhi: String,
    /// [`verdict_code`].
    pub verdict: i8,
    pub drift: Vec<String>,
    pub reason: String,
    /// Schema version 2. Default when read from a spool written before it.
    #[serde(default)]
    pub script: String,
    #[serde(default)]
    pub proto: String,
    /// Schema version 3: the Kubernetes pod and container. Default when read from a spool
    /// written before it.
    #[serde(default)]
    pub pod_uid: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub container_name: String,
}

impl EventRow {
    /// The row for `e`; `fallback_ts` is used when `e.ts` is not RFC 3339 (a bug upstream, but
    /// the event is still worth keeping).
    pub fn from_event(e: &Event, run_id: u64, seq: u64, fallback_ts: Ts) -> Self {
        Self::from_owned(e.clone(), run_id, seq, fallback_ts)
    }

    /// [`EventRow::from_event`], taking the event's strings instead of copying them.
    pub fn from_owned(e: Event, run_id: u64, seq: u64, fallback_ts: Ts) -> Self {
        Self {
            ts: Ts::parse_rfc3339(&e.ts).unwrap_or(fallback_ts),
            host: e.host,
            run_id,
            seq,
            kind: kind_code(e.kind),
            pid: e.pid,
            tid: e.tid,
            ppid: e.ppid,
            uid: e.uid,
            gid: e.gid,
            exe: e.exe,
            comm: e.comm,
            cmdline: e.cmdline,
            cgroup_id: e.cgroup_id,
            container: e.container.unwrap_or_default(),
            syscall: e.syscall.unwrap_or_default().to_owned(),
            path: e.path.unwrap_or_default(),
            path_arg: e.path_arg.unwrap_or_default(),
            target: e.target.unwrap_or_default(),
            flags: e.flags,
            result: e.result,
            error: e.error.unwrap_or_default(),
            daddr: e.daddr.unwrap_or_default(),
            dport: e.dport,
            saddr: e.saddr.unwrap_or_default(),
            sport: e.sport,
            dns_names: e.dns_names.unwrap_or_default(),
            count: e.count,
            cause: e.cause.unwrap_or_default(),
            nhi: e.nhi.unwrap_or_default(),
            verdict: verdict_code(e.verdict),
            drift: e.drift.iter().map(|d| d.as_str().to_owned()).collect(),
            reason: e.reason,
            script: e.script.unwrap_or_default(),
            proto: e.proto.unwrap_or_default().to_owned(),
            pod_uid: e.pod_uid.unwrap_or_default(),
            pod: e.pod.unwrap_or_default(),
            pod_namespace: e.pod_namespace.unwrap_or_default(),
            container_name: e.container_name.unwrap_or_default(),
        }
    }

    /// The event this row was made from (the inverse of [`EventRow::from_event`] for every
    /// event the daemon produces). `None` when a code or name is unknown to this version.
    pub fn to_event(&self) -> Option<Event> {
        let kind = kind_from_code(self.kind)?;
        let mut e = Event::new(kind, self.ts.to_rfc3339(), self.host.clone());
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        e.pid = self.pid;
        e.tid = self.tid;
        e.ppid = self.ppid;
        e.uid = self.uid;
        e.gid = self.gid;
        e.exe = self.exe.clone();
        e.comm = self.comm.clone();
        e.cmdline = self.cmdline.clone();
        e.cgroup_id = self.cgroup_id;
        e.container = text(&self.container);
        e.syscall = if self.syscall.is_empty() {
            None
        } else {
            Some(syscall_name(&self.syscall)?)
        };
        e.path = text(&self.path);
        e.path_arg = text(&self.path_arg);
        e.target = text(&self.target);
        e.flags = self.flags;
        e.result = self.result;
        e.error = text(&self.error);
        e.daddr = text(&self.daddr);
        e.dport = self.dport;
        e.saddr = text(&self.saddr);
        e.sport = self.sport;
        // Connects always carry the list (possibly empty); other kinds never do.
        e.dns_names =
            (kind == Kind::Connect || !self.dns_names.is_empty()).then(|| self.dns_names.clone());
        e.count = self.count;
        e.cause = text(&self.cause);
        e.nhi = text(&self.nhi);
        e.verdict = verdict_from_code(self.verdict)?;
        e.drift = self
            .drift
            .iter()
            .map(|d| drift_from_name(d))
            .collect::<Option<_>>()?;
        e.reason = self.reason.clone();
        e.script = text(&self.script);
        e.proto = match self.proto.as_str() {
            "" => None,
            "tcp" => Some("tcp"),
            "udp" => Some("udp"),
            _ => return None,
        };
        e.pod_uid = text(&self.pod_uid);
        e.pod = text(&self.pod);
        e.pod_namespace = text(&self.pod_namespace);
        e.container_name = text(&self.container_name);
        Some(e)
    }
}

/// A coverage gap: between `start` and `end`, `count` events were lost on `host`, because of
/// `cause` (`ringbuf_full_open`, `spool_full`, `unclean_stop`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossRow {
    pub host: String,
    pub run_id: u64,
    pub seq: u64,
    pub start: Ts,
    pub end: Ts,
    pub count: u64,
    pub cause: String,
    pub reason: String,
}

/// A heartbeat: the agent on `host` was alive at `ts`, with these counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRow {
    pub host: String,
    pub run_id: u64,
    pub seq: u64,
    pub ts: Ts,
    pub started: Ts,
    pub version: String,
    pub counters: Vec<(String, u64)>,
}

/// The event's address for an `IPv6` column: IPv4 as `::ffff:a.b.c.d`; `None` when absent or
/// not an address.
fn ipv6(addr: &str) -> Option<Ipv6Addr> {
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => Some(v6),
    }
}

/// `events` on servers without DateTime64 and IPv6 (Debian's 18.16).
#[derive(Row, Serialize)]
pub struct LegacyEvent<'a> {
    ts: u32,
    ts_ns: u32,
    host: &'a str,
    run_id: u64,
    seq: u64,
    kind: i8,
    pid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    gid: u32,
    exe: &'a str,
    comm: &'a str,
    cmdline: &'a [String],
    cgroup_id: u64,
    container: &'a str,
    syscall: &'a str,
    path: &'a str,
    path_arg: &'a str,
    target: &'a str,
    flags: Option<u32>,
    result: Option<i64>,
    error: &'a str,
    daddr: &'a str,
    dport: Option<u16>,
    saddr: &'a str,
    sport: Option<u16>,
    dns_names: &'a [String],
    count: Option<u64>,
    cause: &'a str,
    nhi: &'a str,
    verdict: i8,
    drift: &'a [String],
    reason: &'a str,
    script: &'a str,
    proto: &'a str,
    pod_uid: &'a str,
    pod: &'a str,
    pod_namespace: &'a str,
    container_name: &'a str,
}

/// `events` on current servers: `DateTime64(9)` and `IPv6` columns.
#[derive(Row, Serialize)]
pub struct ModernEvent<'a> {
    ts: i64,
    host: &'a str,
    run_id: u64,
    seq: u64,
    kind: i8,
    pid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    gid: u32,
    exe: &'a str,
    comm: &'a str,
    cmdline: &'a [String],
    cgroup_id: u64,
    container: &'a str,
    syscall: &'a str,
    path: &'a str,
    path_arg: &'a str,
    target: &'a str,
    flags: Option<u32>,
    result: Option<i64>,
    error: &'a str,
    daddr: Option<Ipv6Addr>,
    dport: Option<u16>,
    saddr: Option<Ipv6Addr>,
    sport: Option<u16>,
    dns_names: &'a [String],
    count: Option<u64>,
    cause: &'a str,
    nhi: &'a str,
    verdict: i8,
    drift: &'a [String],
    reason: &'a str,
    script: &'a str,
    proto: &'a str,
    pod_uid: &'a str,
    pod: &'a str,
    pod_namespace: &'a str,
    container_name: &'a str,
}

/// Expands to the wire event of one dialect; the fields both share are listed once.
macro_rules! wire_event {
    ($ty:ident, $r:expr, { $($own:ident: $val:expr),* $(,)? }) => {{
        let r = $r;
        $ty {
            $($own: $val,)*
            host: &r.host,
            run_id: r.run_id,
            seq: r.seq,
            kind: r.kind,
            pid: r.pid,
            tid: r.tid,
            ppid: r.ppid,
            uid: r.uid,
            gid: r.gid,
            exe: &r.exe,
            comm: &r.comm,
            cmdline: &r.cmdline,
            cgroup_id: r.cgroup_id,
            container: &r.container,
            syscall: &r.syscall,
            path: &r.path,
            path_arg: &r.path_arg,
            target: &r.target,
            flags: r.flags,
            result: r.result,
            error: &r.error,
            dport: r.dport,
            sport: r.sport,
            dns_names: &r.dns_names,
            count: r.count,
            cause: &r.cause,
            nhi: &r.nhi,
            verdict: r.verdict,
            drift: &r.drift,
            reason: &r.reason,
            script: &r.script,
            proto: &r.proto,
            pod_uid: &r.pod_uid,
            pod: &r.pod,
            pod_namespace: &r.pod_namespace,
            container_name: &r.container_name,
        }
    }};
}

impl<'a> LegacyEvent<'a> {
    pub fn new(r: &'a EventRow) -> Self {
        wire_event!(LegacyEvent, r, {
            ts: r.ts.datetime(),
            ts_ns: r.ts.nanos,
            daddr: &r.daddr,
            saddr: &r.saddr,
        })
    }
}

impl<'a> ModernEvent<'a> {
    pub fn new(r: &'a EventRow) -> Self {
        wire_event!(ModernEvent, r, {
            ts: r.ts.datetime64(),
            daddr: ipv6(&r.daddr),
            saddr: ipv6(&r.saddr),
        })
    }
}

/// `losses` on servers without DateTime64.
#[derive(Row, Serialize)]
pub struct LegacyLoss<'a> {
    host: &'a str,
    run_id: u64,
    seq: u64,
    start_ts: u32,
    start_ns: u32,
    end_ts: u32,
    end_ns: u32,
    count: u64,
    cause: &'a str,
    reason: &'a str,
}

impl<'a> LegacyLoss<'a> {
    pub fn new(r: &'a LossRow) -> Self {
        Self {
            host: &r.host,
            run_id: r.run_id,
            seq: r.seq,
            start_ts: r.start.datetime(),
            start_ns: r.start.nanos,
            end_ts: r.end.datetime(),
            end_ns: r.end.nanos,
            count: r.count,
            cause: &r.cause,
            reason: &r.reason,
        }
    }
}

/// `losses` on current servers.
#[derive(Row, Serialize)]
pub struct ModernLoss<'a> {
    host: &'a str,
    run_id: u64,
    seq: u64,
    start_ts: i64,
    end_ts: i64,
    count: u64,
    cause: &'a str,
    reason: &'a str,
}

impl<'a> ModernLoss<'a> {
    pub fn new(r: &'a LossRow) -> Self {
        Self {
            host: &r.host,
            run_id: r.run_id,
            seq: r.seq,
            start_ts: r.start.datetime64(),
            end_ts: r.end.datetime64(),
            count: r.count,
            cause: &r.cause,
            reason: &r.reason,
        }
    }
}

/// `agents` on servers without DateTime64 and Map: counters as two parallel arrays.
#[derive(Row, Serialize)]
pub struct LegacyAgent<'a> {
    host: &'a str,
    run_id: u64,
    seq: u64,
    ts: u32,
    ts_ns: u32,
    started: u32,
    version: &'a str,
    counter_names: Vec<&'a str>,
    counter_values: Vec<u64>,
}

impl<'a> LegacyAgent<'a> {
    pub fn new(r: &'a AgentRow) -> Self {
        Self {
            host: &r.host,
            run_id: r.run_id,
            seq: r.seq,
            ts: r.ts.datetime(),
            ts_ns: r.ts.nanos,
            started: r.started.datetime(),
            version: &r.version,
            counter_names: r.counters.iter().map(|(n, _)| n.as_str()).collect(),
            counter_values: r.counters.iter().map(|(_, v)| *v).collect(),
        }
    }
}

/// `agents` on current servers: `counters` is a `Map(LowCardinality(String), UInt64)`, whose
/// RowBinary form is that of a list of (name, value) pairs.
#[derive(Row, Serialize)]
pub struct ModernAgent<'a> {
    host: &'a str,
    run_id: u64,
    seq: u64,
    ts: i64,
    started: i64,
    version: &'a str,
    counters: &'a [(String, u64)],
}

impl<'a> ModernAgent<'a> {
    pub fn new(r: &'a AgentRow) -> Self {
        Self {
            host: &r.host,
            run_id: r.run_id,
            seq: r.seq,
            ts: r.ts.datetime64(),
            started: r.started.datetime64(),
            version: &r.version,
            counters: &r.counters,
        }
    }
}
