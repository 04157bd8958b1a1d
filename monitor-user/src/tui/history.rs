//! The dashboard's history from ClickHouse: the NHIs' uses over `--since` (one host, some hosts,
//! or the whole fleet), the newest drift and events, and every host's last heartbeat, fetched
//! again every `--refresh`. When ClickHouse is unreachable it says why and tries again, with a
//! backoff, for as long as the dashboard runs.
//!
//! What the NHI views count is aggregated by the server ([`queries::DASHBOARD_USES`]), so a
//! day of a fleet costs a few thousand rows, not every event. Each snapshot says, per host, the
//! newest use it counted: the dashboard adds the live events after that (see `App::on_history`),
//! so nothing is counted twice and nothing is missing while the newest rows are still on their
//! way to ClickHouse.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clickhouse::{Client, Row};
use serde::Deserialize;
use tokio::{sync::mpsc, task::JoinHandle};

use super::app::{Stats, Subject, Update};
use crate::{
    event::{DriftKind, Event},
    store::{
        config::StoreConfig,
        migrate,
        queries::{self, Param},
        row::{drift_from_name, kind_from_code, verdict_from_code, EventRow},
        schema::Schema,
        sink::{admin_client, SinkError},
    },
};

/// Rows of [`queries::DASHBOARD_USES`] read at most; beyond, the snapshot says it is cut.
pub const USES_LIMIT: u64 = 50_000;
/// The activity sparklines' window.
const ACTIVITY_WINDOW: Duration = Duration::from_secs(600);
/// Events from the future (a host's clock ahead) up to this are still shown.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// What history to show.
#[derive(Clone, Debug)]
pub struct Options {
    pub config: StoreConfig,
    /// How far back.
    pub since: Duration,
    /// Only these hosts; empty: every host.
    pub hosts: Vec<String>,
    /// How often to fetch again.
    pub refresh: Duration,
    /// Newest drift events to fetch.
    pub drift_limit: u64,
    /// Newest events to fetch.
    pub stream_limit: u64,
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
    /// More use rows than [`USES_LIMIT`]: the rarest ones are missing from `stats`.
    pub truncated: bool,
}

/// A row of [`queries::DASHBOARD_USES`], in its column order.
#[derive(Clone, Debug, Row, Deserialize)]
pub struct UseRecord {
    pub nhi: String,
    pub verdict_code: i8,
    pub kind_code: i8,
    pub host: String,
    pub exe: String,
    pub uid: u32,
    pub path: String,
    #[serde(alias = "daddr_text")]
    pub daddr: String,
    pub dport: Option<u16>,
    pub dns_names: Vec<String>,
    pub drift: Vec<String>,
    pub n: u64,
    pub last_ns: u64,
}

/// A row of [`queries::DASHBOARD_ACTIVITY`].
#[derive(Clone, Debug, Row, Deserialize)]
pub struct ActivityRecord {
    pub nhi: String,
    pub bucket: u64,
    pub n: u64,
}

/// A row of [`queries::AGENTS`].
#[derive(Clone, Debug, Row, Deserialize)]
pub struct AgentRecord {
    pub host: String,
    pub last_secs: u64,
    pub version: String,
    pub counter_names: Vec<String>,
    pub counter_values: Vec<u64>,
}

/// A row of [`queries::LOSSES_BY_HOST`].
#[derive(Clone, Debug, Row, Deserialize)]
pub struct LossRecord {
    pub host: String,
    pub cause: String,
    pub lost: u64,
}

/// Everything one fetch read, before it is put together.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    pub uses: Vec<UseRecord>,
    pub activity: Vec<ActivityRecord>,
    pub drifts: Vec<EventRow>,
    pub stream: Vec<EventRow>,
    pub agents: Vec<AgentRecord>,
    pub losses: Vec<LossRecord>,
}

fn subject(nhi: &str) -> Subject {
    if nhi.is_empty() {
        Subject::Unregistered
    } else {
        Subject::Nhi(nhi.to_owned())
    }
}

fn from_nanos(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The use a row stands for, as an event the NHI aggregates read.
fn use_event(u: &UseRecord) -> Option<Event> {
    let mut e = Event::bare(
        kind_from_code(u.kind_code)?,
        verdict_from_code(u.verdict_code)?,
    );
    e.nhi = (!u.nhi.is_empty()).then(|| u.nhi.clone());
    e.host = std::sync::Arc::from(u.host.as_str());
    e.exe = u.exe.clone();
    e.uid = u.uid;
    e.path = (!u.path.is_empty()).then(|| u.path.clone());
    e.daddr = u.daddr.parse().ok();
    e.dport = u.dport;
    e.dns_names = (!u.dns_names.is_empty()).then(|| u.dns_names.clone());
    e.drift = u
        .drift
        .iter()
        .filter_map(|d| drift_from_name(d))
        .collect::<Vec<DriftKind>>();
    Some(e)
}

fn events(rows: &[EventRow]) -> Vec<Event> {
    rows.iter().map(|r| r.event.clone()).collect()
}

impl Snapshot {
    /// Puts one fetch together (no I/O).
    pub fn build(f: &Fetched, at: SystemTime) -> Snapshot {
        let mut s = Snapshot {
            at,
            stats: BTreeMap::new(),
            watermarks: HashMap::new(),
            drifts: Vec::new(),
            stream: Vec::new(),
            hosts: Vec::new(),
            truncated: f.uses.len() as u64 >= USES_LIMIT,
        };
        for u in &f.uses {
            let Some(e) = use_event(u) else { continue };
            s.stats
                .entry(subject(&u.nhi))
                .or_default()
                .add(&e, u.n, from_nanos(u.last_ns), false);
            let w = s.watermarks.entry(u.host.clone()).or_default();
            *w = (*w).max(u.last_ns);
        }
        for a in &f.activity {
            let stats = s.stats.entry(subject(&a.nhi)).or_default();
            *stats.activity.entry(a.bucket).or_default() += a.n;
        }
        s.drifts = events(&f.drifts);
        s.stream = events(&f.stream);
        let mut hosts: BTreeMap<String, HostSummary> = BTreeMap::new();
        fn host<'m>(
            hosts: &'m mut BTreeMap<String, HostSummary>,
            name: &str,
        ) -> &'m mut HostSummary {
            hosts.entry(name.to_owned()).or_insert_with(|| HostSummary {
                host: name.to_owned(),
                ..HostSummary::default()
            })
        }
        for a in &f.agents {
            let h = host(&mut hosts, &a.host);
            h.last_heartbeat = Some(UNIX_EPOCH + Duration::from_secs(a.last_secs));
            h.version = a.version.clone();
        }
        for l in &f.losses {
            *host(&mut hosts, &l.host)
                .lost
                .entry(l.cause.clone())
                .or_default() += l.lost;
        }
        for h in s.watermarks.keys() {
            host(&mut hosts, h);
        }
        s.hosts = hosts.into_values().collect();
        s
    }
}

/// Reads one snapshot.
pub async fn fetch(
    client: &Client,
    schema: &Schema,
    opts: &Options,
    now: SystemTime,
) -> clickhouse::error::Result<Snapshot> {
    let from = now.checked_sub(opts.since).unwrap_or(UNIX_EPOCH);
    let secs =
        |t: SystemTime| Param::U64(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let to = secs(now + CLOCK_SKEW);
    let hosts = Param::Strs(opts.hosts.clone());
    let window = [secs(from), to.clone(), hosts.clone(), hosts.clone()];
    let with_limit = |n: u64| {
        let mut v = window.to_vec();
        v.push(Param::U64(n));
        v
    };
    let activity_from = now
        .checked_sub(ACTIVITY_WINDOW)
        .unwrap_or(UNIX_EPOCH)
        .max(from);
    let activity_params = [secs(activity_from), to.clone(), hosts.clone(), hosts];
    let uses = queries::fetch_rows::<UseRecord>(
        client,
        schema,
        &queries::DASHBOARD_USES,
        &with_limit(USES_LIMIT),
    )
    .await?;
    let activity = queries::fetch_rows::<ActivityRecord>(
        client,
        schema,
        &queries::DASHBOARD_ACTIVITY,
        &activity_params,
    )
    .await?;
    let drifts = queries::fetch_events(
        client,
        schema,
        &queries::DASHBOARD_DRIFT,
        &with_limit(opts.drift_limit),
    )
    .await?;
    let stream = queries::fetch_events(
        client,
        schema,
        &queries::DASHBOARD_RECENT,
        &with_limit(opts.stream_limit),
    )
    .await?;
    let agents = queries::fetch_rows::<AgentRecord>(client, schema, &queries::AGENTS, &[]).await?;
    let mut losses = queries::fetch_rows::<LossRecord>(
        client,
        schema,
        &queries::LOSSES_BY_HOST,
        &[secs(from), to],
    )
    .await?;
    let mut agents = agents;
    if !opts.hosts.is_empty() {
        agents.retain(|a| opts.hosts.contains(&a.host));
        losses.retain(|l| opts.hosts.contains(&l.host));
    }
    let f = Fetched {
        uses,
        activity,
        drifts,
        stream,
        agents,
        losses,
    };
    Ok(Snapshot::build(&f, now))
}

/// Starts fetching on the current runtime; it ends when `tx`'s receiver is dropped.
pub fn spawn(opts: Options, tx: mpsc::Sender<Update>) -> JoinHandle<()> {
    tokio::spawn(run(opts, tx))
}

async fn run(opts: Options, tx: mpsc::Sender<Update>) {
    let client = admin_client(&opts.config);
    let mut schema: Option<Schema> = None;
    let mut retry = FIRST_RETRY;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let result = async {
            if schema.is_none() {
                schema = Some(
                    migrate::read_schema(&client, &opts.config)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let Some(s) = &schema else {
                return Err("no schema".to_owned());
            };
            fetch(&client, s, &opts, SystemTime::now())
                .await
                .map_err(|e| SinkError::from_clickhouse(&e, opts.config.user.as_deref()).message)
        }
        .await;
        let (update, wait) = match result {
            Ok(snapshot) => {
                retry = FIRST_RETRY;
                attempt = 0;
                (Update::History(Box::new(snapshot)), opts.refresh)
            }
            Err(reason) => {
                // The database may have been dropped and made again in another dialect.
                schema = None;
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                (
                    Update::HistoryDown {
                        reason: format!("ClickHouse {}: {reason}", opts.config.display_url()),
                        attempt,
                        retry_in: wait,
                    },
                    wait,
                )
            }
        };
        if tx.send(update).await.is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}
