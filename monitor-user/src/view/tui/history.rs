//! The dashboard's history from ClickHouse: the NHIs' uses over `--since` (one host, some hosts,
//! or the whole fleet), the newest drift and events, and every host's last heartbeat, fetched
//! again every `--refresh`. When ClickHouse is unreachable it says why and tries again, with a
//! backoff, for as long as the dashboard runs.
//!
//! What the NHI views count is aggregated by the server (the store's [`Reader::dashboard`] reads
//! counts of uses alike), so a day of a fleet costs a few thousand rows, not every event. Each
//! snapshot says, per host, the newest use it counted: the dashboard adds the live events after
//! that (see `App::on_history`), so nothing is counted twice and nothing is missing while the
//! newest rows are still on their way to ClickHouse.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::model::{HostSummary, Snapshot, Subject, Update};
use crate::{
    domain::event::Event,
    publish::store::{
        read::{Dashboard, DashboardRequest, ReadError, Reader, UseCount},
        StoreConfig,
    },
};

/// Use counts read at most; beyond, the snapshot says it is cut.
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

/// The use a count stands for, as an event the NHI aggregates read.
fn use_event(u: &UseCount) -> Event {
    let mut e = Event::bare(u.kind, u.verdict);
    e.nhi = (!u.nhi.is_empty()).then(|| u.nhi.as_str().into());
    e.host = u.host.as_str().into();
    e.exe = u.exe.as_str().into();
    e.uid = u.uid;
    e.path = (!u.path.is_empty()).then(|| u.path.clone());
    e.daddr = u.daddr.parse().ok();
    e.dport = u.dport;
    e.dns_names = (!u.dns_names.is_empty()).then(|| u.dns_names.clone());
    e.drift = u.drift.clone();
    e.wire = u.wire.clone().into();
    e
}

impl Snapshot {
    /// Puts one read together (no I/O).
    pub fn build(mut f: Dashboard, at: SystemTime) -> Snapshot {
        let mut s = Snapshot {
            at,
            stats: BTreeMap::new(),
            watermarks: HashMap::new(),
            drifts: Vec::new(),
            stream: Vec::new(),
            hosts: Vec::new(),
            truncated: f.uses_cut,
        };
        for u in &f.uses {
            let e = use_event(u);
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
        s.drifts = std::mem::take(&mut f.drifts);
        s.stream = std::mem::take(&mut f.stream);
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
        for a in &f.heartbeats {
            let h = host(&mut hosts, &a.host);
            h.last_heartbeat = Some(a.at);
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
    reader: &mut Reader,
    opts: &Options,
    now: SystemTime,
) -> Result<Snapshot, ReadError> {
    let from = now.checked_sub(opts.since).unwrap_or(UNIX_EPOCH);
    let activity_from = now
        .checked_sub(ACTIVITY_WINDOW)
        .unwrap_or(UNIX_EPOCH)
        .max(from);
    let request = DashboardRequest {
        from,
        to: now + CLOCK_SKEW,
        activity_from,
        hosts: opts.hosts.clone(),
        uses_limit: USES_LIMIT,
        drift_limit: opts.drift_limit,
        stream_limit: opts.stream_limit,
    };
    let read = reader.dashboard(&request).await?;
    Ok(Snapshot::build(read, now))
}

/// Starts fetching on the current runtime; it ends when `tx`'s receiver is dropped.
pub fn spawn(opts: Options, tx: mpsc::Sender<Update>) -> JoinHandle<()> {
    tokio::spawn(run(opts, tx))
}

async fn run(opts: Options, tx: mpsc::Sender<Update>) {
    let mut reader = Reader::new(opts.config.clone());
    let mut retry = FIRST_RETRY;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let result = fetch(&mut reader, &opts, SystemTime::now()).await;
        let (update, wait) = match result {
            Ok(snapshot) => {
                retry = FIRST_RETRY;
                attempt = 0;
                (Update::History(Box::new(snapshot)), opts.refresh)
            }
            Err(e) => {
                // The reader reads the schema again: the database may have been dropped and
                // made again in another dialect.
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                (
                    Update::HistoryDown {
                        reason: e.to_string(),
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
