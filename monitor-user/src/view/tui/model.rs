//! The dashboard's model: what it knows of each NHI (the aggregates the views draw), of the
//! fleet, and the updates that reach it from the daemon's socket and from ClickHouse.
//!
//! Plain data and the arithmetic on it, apart from the state machine that applies updates and
//! keys ([`super::app`]), so that the filter, the history reader and the views can use these
//! types without depending on one another.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    domain::event::{DriftKind, Event, Kind, Verdict},
    publish::live::protocol::{Message, NhiSummary},
};

/// Width of an activity bucket.
pub const BUCKET_SECS: u64 = 10;
/// Activity buckets kept per NHI.
const BUCKETS_KEPT: u64 = 60;

/// What the socket client and the history reader report.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// Connected; `hello` follows.
    Connected,
    /// A message from the daemon.
    Message(Message),
    /// A line that is not a message this dashboard knows.
    Garbled(String),
    /// The connection failed or ended.
    Down {
        reason: String,
        attempt: u32,
        retry_in: Duration,
    },
    /// A history snapshot from ClickHouse.
    History(Box<Snapshot>),
    /// ClickHouse could not be read.
    HistoryDown {
        reason: String,
        attempt: u32,
        retry_in: Duration,
    },
}

/// What a row of the overview stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A registered NHI (or one named by events but no longer in the registry).
    Nhi(String),
    /// Watched credential files that no NHI owns.
    Unregistered,
}

impl Subject {
    pub fn name(&self) -> &str {
        match self {
            Subject::Nhi(id) => id,
            Subject::Unregistered => "(unregistered)",
        }
    }

    pub(super) fn of(e: &Event) -> Option<Subject> {
        match (&e.nhi, e.verdict) {
            (Some(id), _) => Some(Subject::Nhi(id.to_string())),
            (None, Verdict::Unregistered) => Some(Subject::Unregistered),
            (None, _) => None,
        }
    }
}

/// A process, destination or path as observed, and whether it was outside the scope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    pub count: u64,
    /// At least one of its uses was drift of the matching kind.
    pub outside: bool,
    /// DNS names seen for a destination.
    pub names: BTreeSet<String>,
}

/// What was observed of one NHI since the dashboard started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Opens of its credentials.
    pub reads: u64,
    /// Connections by its holders.
    pub connections: u64,
    /// Uses with a `drift` verdict.
    pub drifts: u64,
    /// The latest open or connect.
    pub last_seen: Option<SystemTime>,
    /// Uses per [`BUCKET_SECS`] bucket (by the bucket's index since the epoch).
    pub activity: BTreeMap<u64, u64>,
    /// Readers by (exe, uid); `outside`: a `reader_out_of_scope` open.
    pub readers: BTreeMap<(String, u32), Seen>,
    /// Destinations (`addr:port`); `outside`: an `endpoint_out_of_scope` connect.
    pub endpoints: BTreeMap<String, Seen>,
    /// APIs its holders' requests named ([`api_text`]); `outside`: an `api_out_of_scope` or
    /// `name_mismatch` request.
    pub apis: BTreeMap<String, Seen>,
    /// Uses by executable.
    pub processes: BTreeMap<String, u64>,
    /// Paths opened.
    pub paths: BTreeMap<String, u64>,
    pub drift_kinds: BTreeMap<DriftKind, u64>,
    /// Hosts the uses came from.
    pub hosts: BTreeSet<String>,
}

impl Stats {
    pub(super) fn record(&mut self, e: &Event, at: SystemTime) {
        self.add(e, 1, at, true);
    }

    /// `n` uses like `e`, the newest at `at`; `activity`: count them in the bucket of `at`
    /// (a history snapshot brings its buckets separately).
    pub fn add(&mut self, e: &Event, n: u64, at: SystemTime, activity: bool) {
        if !e.host.is_empty() {
            self.hosts.insert(e.host.to_string());
        }
        if e.verdict == Verdict::Drift {
            self.drifts += n;
            for k in &e.drift {
                *self.drift_kinds.entry(*k).or_default() += n;
            }
        }
        match e.kind {
            Kind::Open => {
                self.reads += n;
                let r = self.readers.entry((e.exe.to_string(), e.uid)).or_default();
                r.count += n;
                r.outside |= e.drift.contains(&DriftKind::ReaderOutOfScope);
                if let Some(p) = &e.path {
                    *self.paths.entry(p.clone()).or_default() += n;
                }
            }
            Kind::Connect => {
                self.connections += n;
                let dest = e.destination().unwrap_or_else(|| "?".to_owned());
                let d = self.endpoints.entry(dest).or_default();
                d.count += n;
                d.outside |= e.drift.contains(&DriftKind::EndpointOutOfScope);
                d.names.extend(e.dns_names.iter().flatten().cloned());
            }
            // A connection's first bytes: its connect counted the use.
            Kind::Request => {
                let a = self.apis.entry(api_text(e)).or_default();
                a.count += n;
                a.outside |= e
                    .drift
                    .iter()
                    .any(|k| matches!(k, DriftKind::ApiOutOfScope | DriftKind::NameMismatch));
                return;
            }
            _ => return,
        }
        *self.processes.entry(e.exe.to_string()).or_default() += n;
        self.last_seen = Some(self.last_seen.map_or(at, |l| l.max(at)));
        if activity {
            let bucket = bucket_of(at);
            *self.activity.entry(bucket).or_default() += n;
            self.activity = self
                .activity
                .split_off(&bucket.saturating_sub(BUCKETS_KEPT));
        }
    }

    /// Uses in the `n` buckets up to the one holding `now`, oldest first.
    pub fn series(&self, now: SystemTime, n: usize) -> Vec<u64> {
        let last = bucket_of(now);
        let first = (last + 1).saturating_sub(n as u64);
        (first..=last)
            .map(|b| self.activity.get(&b).copied().unwrap_or(0))
            .collect()
    }
}

/// A request's API as the detail lists it: the server name (else the address and port), then
/// for plaintext HTTP the method and path (`api.test GET /v1/charges`, `s3.test (TLS)`).
pub fn api_text(e: &Event) -> String {
    let place = match e.wire.server_name() {
        Some(name) => name.to_owned(),
        None => e.destination().unwrap_or_else(|| "?".to_owned()),
    };
    match (&e.wire.http_method, &e.wire.http_path) {
        (Some(m), Some(p)) => format!("{place} {m} {p}"),
        (Some(m), None) => format!("{place} {m}"),
        _ if e.wire.sni.is_some() => format!("{place} (TLS)"),
        _ => place,
    }
}

fn bucket_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / BUCKET_SECS
}

/// How an NHI stands, as the overview's first column says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Used outside its scope at least once.
    Drift,
    /// Unowned credential files were used.
    Unregistered,
    /// Used, always inside its scope.
    Ok,
    /// Not used since the dashboard started.
    Idle,
}

impl Status {
    pub fn text(self) -> &'static str {
        match self {
            Status::Drift => "DRIFT",
            Status::Unregistered => "UNREG",
            Status::Ok => "ok",
            Status::Idle => "idle",
        }
    }
}

/// One row of the overview.
#[derive(Clone, Debug)]
pub struct NhiRow<'a> {
    pub subject: Subject,
    pub declared: Option<&'a NhiSummary>,
    pub stats: Option<&'a Stats>,
}

impl NhiRow<'_> {
    pub fn status(&self) -> Status {
        match (&self.subject, self.stats) {
            (Subject::Unregistered, _) => Status::Unregistered,
            (_, Some(s)) if s.drifts > 0 => Status::Drift,
            (_, Some(s)) if s.reads + s.connections > 0 => Status::Ok,
            _ => Status::Idle,
        }
    }

    pub fn owner(&self) -> Option<&str> {
        self.declared.and_then(|d| d.owner.as_deref())
    }
}

/// One host of the fleet, from its heartbeats and loss rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostSummary {
    pub host: String,
    /// Its daemon's last heartbeat.
    pub last_heartbeat: Option<SystemTime>,
    pub version: String,
    /// Events lost on it in the window, by cause.
    pub lost: BTreeMap<String, u64>,
}

/// What one fetch found.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// When it was fetched.
    pub at: SystemTime,
    /// Per NHI (and unregistered credentials), over the window.
    pub stats: BTreeMap<Subject, Stats>,
    /// Per host: the newest use counted in `stats`, in ns since the epoch.
    pub watermarks: HashMap<String, u64>,
    /// The newest drift, newest first.
    pub drifts: Vec<Event>,
    /// The newest events, newest first.
    pub stream: Vec<Event>,
    /// Every host with a heartbeat, or with a use or loss in the window.
    pub hosts: Vec<HostSummary>,
    /// More use rows than [`USES_LIMIT`](super::history::USES_LIMIT): the rarest ones are missing from `stats`.
    pub truncated: bool,
}
