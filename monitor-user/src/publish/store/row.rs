//! Rows: what an [`Event`], a coverage gap and a heartbeat become in ClickHouse.
//!
//! Two layers. The *neutral* rows ([`EventRow`], [`LossRow`], [`AgentRow`]) are built once, when
//! the daemon hands an event to the store; they carry the row's identity (`host`, `run_id`,
//! `seq`), are what the spool keeps on disk (JSON lines), and do not depend on the server. An
//! [`EventRow`] is the [`Event`] itself with its identity: its fields are not copied into another
//! shape. The *wire* rows (`Legacy*`, `Modern*`) borrow from them, one set per [`Dialect`], and
//! are what the `clickhouse` crate serializes as RowBinary: their field names are the column
//! names and their field types the RowBinary encoding of the column types in [`super::schema`].
//! Text a column needs (an address on a legacy server, drift kind names) is made there, as the
//! row is written.
//!
//! Optional event fields: numbers that can legitimately be 0 (`flags`, `result`, ports, `count`)
//! are `Nullable` columns; strings use `''` for "absent" (no event carries an empty path, address
//! or NHI id), which keeps them out of `Nullable` and lets `nhi` be in the sorting key.

use std::net::{IpAddr, Ipv6Addr};

use clickhouse::Row;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::domain::event::Ts;
use crate::domain::event::{DriftKind, Event, Kind, OpenOp, Proto, Verdict};

/// Seconds for a `DateTime` column (which ends in 2106).
fn datetime(t: Ts) -> u32 {
    u32::try_from(t.secs).unwrap_or(u32::MAX)
}

/// Nanoseconds since the epoch for a `DateTime64(9)` column (which ends in 2262).
fn datetime64(t: Ts) -> i64 {
    i64::try_from(t.secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|n| n.checked_add(i64::from(t.nanos)))
        .unwrap_or(i64::MAX)
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
        // Since schema version 5.
        Kind::Request => 7,
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
        Kind::Request,
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

/// One event, as the store keeps it. `(host, run_id, seq)` identifies it uniquely: `run_id` is
/// drawn at random each time the store starts and `seq` counts the events of that run from 0.
///
/// In the spool, one JSON line `{"run_id":..,"seq":..,"event":{..}}` with the event as its JSON
/// line; lines of earlier versions (the event's columns side by side) are read too.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    pub run_id: u64,
    pub seq: u64,
    pub event: Event,
}

impl EventRow {
    pub fn new(event: Event, run_id: u64, seq: u64) -> Self {
        Self { run_id, seq, event }
    }

    /// The row for a copy of `e`.
    pub fn from_event(e: &Event, run_id: u64, seq: u64) -> Self {
        Self::new(e.clone(), run_id, seq)
    }

    pub fn ts(&self) -> Ts {
        self.event.ts
    }

    pub fn host(&self) -> &str {
        &self.event.host
    }

    /// The spool line, without its newline: the bytes `Serialize` gives, written directly
    /// (the event as [`Event::write_json`] writes it).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"run_id\":{},\"seq\":{},\"event\":",
            self.run_id, self.seq
        );
        self.event.write_json(out);
        out.push(b'}');
    }
}

impl Serialize for EventRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Line<'a> {
            run_id: u64,
            seq: u64,
            event: &'a Event,
        }
        Line {
            run_id: self.run_id,
            seq: self.seq,
            event: &self.event,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for EventRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Line {
            Now {
                run_id: u64,
                seq: u64,
                event: Box<Event>,
            },
            Columns(serde_json::Map<String, serde_json::Value>),
        }
        match Line::deserialize(d)? {
            Line::Now { run_id, seq, event } => Ok(Self {
                run_id,
                seq,
                event: *event,
            }),
            Line::Columns(m) => columns_row(m).map_err(serde::de::Error::custom),
        }
    }
}

/// A spool line of an earlier version: the event's columns side by side (`ts` as
/// `{secs, nanos}`, `kind` and `verdict` as their codes, `''` and `[]` for absent).
fn columns_row(mut m: serde_json::Map<String, serde_json::Value>) -> Result<EventRow, String> {
    use serde_json::Value;
    let num = |m: &serde_json::Map<String, Value>, k: &str| {
        m.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("an event row without `{k}`"))
    };
    let run_id = num(&m, "run_id")?;
    let seq = num(&m, "seq")?;
    let ts: Ts = m
        .remove("ts")
        .and_then(|t| serde_json::from_value(t).ok())
        .ok_or("an event row without `ts`")?;
    let code = |m: &serde_json::Map<String, Value>, k: &str| {
        m.get(k)
            .and_then(Value::as_i64)
            .and_then(|c| i8::try_from(c).ok())
    };
    let kind = code(&m, "kind")
        .and_then(kind_from_code)
        .ok_or("an event row of an unknown kind")?;
    let verdict = code(&m, "verdict")
        .and_then(verdict_from_code)
        .ok_or("an event row with an unknown verdict")?;
    for k in ["run_id", "seq"] {
        m.remove(k);
    }
    // Absent text was written `''`, absent DNS names `[]` (connects always carry the list).
    m.retain(|k, v| match v {
        Value::String(s) => {
            !s.is_empty() || matches!(k.as_str(), "host" | "exe" | "comm" | "reason")
        }
        Value::Array(a) => !a.is_empty() || k != "dns_names" || kind == Kind::Connect,
        _ => true,
    });
    m.insert("ts".into(), Value::String(ts.to_rfc3339()));
    m.insert("kind".into(), Value::String(kind.as_str().into()));
    m.insert("verdict".into(), Value::String(verdict.as_str().into()));
    m.entry("nhi").or_insert(Value::Null);
    let event: Event = serde_json::from_value(Value::Object(m)).map_err(|e| e.to_string())?;
    Ok(EventRow { run_id, seq, event })
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

/// The event's address for an `IPv6` column: IPv4 as `::ffff:a.b.c.d`.
fn ipv6(addr: Option<IpAddr>) -> Option<Ipv6Addr> {
    addr.map(|a| match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    })
}

/// An address for a `String` column: its text, `''` when absent. Written as the row is.
pub struct AddrText(Option<IpAddr>);

impl Serialize for AddrText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::io::Write as _;
        let Some(a) = self.0 else {
            return s.serialize_str("");
        };
        // The longest address text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`) is 45
        // bytes.
        let mut buf = [0u8; 64];
        let mut w = &mut buf[..];
        write!(w, "{a}").map_err(serde::ser::Error::custom)?;
        let n = 64 - w.len();
        let text = std::str::from_utf8(&buf[..n]).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

/// Drift kinds for an `Array(LowCardinality(String))` column: their names.
pub struct DriftNames<'a>(&'a [DriftKind]);

impl Serialize for DriftNames<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|k| k.as_str()))
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
    daddr: AddrText,
    dport: Option<u16>,
    saddr: AddrText,
    sport: Option<u16>,
    dns_names: &'a [String],
    count: Option<u64>,
    cause: &'a str,
    nhi: &'a str,
    verdict: i8,
    drift: DriftNames<'a>,
    reason: &'a str,
    script: &'a str,
    proto: &'a str,
    pod_uid: &'a str,
    pod: &'a str,
    pod_namespace: &'a str,
    container_name: &'a str,
    established_before_use: u8,
    sni: &'a str,
    alpn: &'a [String],
    tls_version: &'a str,
    http_method: &'a str,
    http_host: &'a str,
    http_path: &'a str,
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
    drift: DriftNames<'a>,
    reason: &'a str,
    script: &'a str,
    proto: &'a str,
    pod_uid: &'a str,
    pod: &'a str,
    pod_namespace: &'a str,
    container_name: &'a str,
    established_before_use: u8,
    sni: &'a str,
    alpn: &'a [String],
    tls_version: &'a str,
    http_method: &'a str,
    http_host: &'a str,
    http_path: &'a str,
}

/// An optional text as a `String` column.
fn text<S: std::ops::Deref<Target = str>>(s: &Option<S>) -> &str {
    s.as_deref().unwrap_or_default()
}

/// Expands to the wire event of one dialect; the fields both share are listed once.
macro_rules! wire_event {
    ($ty:ident, $r:expr, { $($own:ident: $val:expr),* $(,)? }) => {{
        let r: &EventRow = $r;
        let e = &r.event;
        $ty {
            $($own: $val,)*
            host: &e.host,
            run_id: r.run_id,
            seq: r.seq,
            kind: kind_code(e.kind),
            pid: e.pid,
            tid: e.tid,
            ppid: e.ppid,
            uid: e.uid,
            gid: e.gid,
            exe: &e.exe,
            comm: &e.comm,
            cmdline: &e.cmdline,
            cgroup_id: e.cgroup_id,
            container: text(&e.container),
            syscall: e.syscall.map_or("", OpenOp::name),
            path: text(&e.path),
            path_arg: text(&e.path_arg),
            target: text(&e.target),
            flags: e.flags,
            result: e.result,
            error: text(&e.error),
            dport: e.dport,
            sport: e.sport,
            dns_names: e.dns_names.as_deref().unwrap_or_default(),
            count: e.count,
            cause: text(&e.cause),
            nhi: text(&e.nhi),
            verdict: verdict_code(e.verdict),
            drift: DriftNames(&e.drift),
            reason: &e.reason,
            script: text(&e.script),
            proto: e.proto.map_or("", Proto::as_str),
            pod_uid: text(&e.pod_uid),
            pod: text(&e.pod),
            pod_namespace: text(&e.pod_namespace),
            container_name: text(&e.container_name),
            established_before_use: u8::from(e.established_before_use),
            sni: text(&e.wire.sni),
            alpn: e.wire.alpn.as_deref().unwrap_or_default(),
            tls_version: text(&e.wire.tls_version),
            http_method: text(&e.wire.http_method),
            http_host: text(&e.wire.http_host),
            http_path: text(&e.wire.http_path),
        }
    }};
}

impl<'a> LegacyEvent<'a> {
    pub fn new(r: &'a EventRow) -> Self {
        wire_event!(LegacyEvent, r, {
            ts: datetime(r.event.ts),
            ts_ns: r.event.ts.nanos,
            daddr: AddrText(r.event.daddr),
            saddr: AddrText(r.event.saddr),
        })
    }
}

impl<'a> ModernEvent<'a> {
    pub fn new(r: &'a EventRow) -> Self {
        wire_event!(ModernEvent, r, {
            ts: datetime64(r.event.ts),
            daddr: ipv6(r.event.daddr),
            saddr: ipv6(r.event.saddr),
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
            start_ts: datetime(r.start),
            start_ns: r.start.nanos,
            end_ts: datetime(r.end),
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
            start_ts: datetime64(r.start),
            end_ts: datetime64(r.end),
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
            ts: datetime(r.ts),
            ts_ns: r.ts.nanos,
            started: datetime(r.started),
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
            ts: datetime64(r.ts),
            started: datetime64(r.started),
            version: &r.version,
            counters: &r.counters,
        }
    }
}
