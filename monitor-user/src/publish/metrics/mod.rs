//! `nhiscope daemon --metrics ADDR`: the daemon's numbers for Prometheus.
//!
//! [`Metrics`] is shared by the daemon's loop, which writes it, and the metrics server
//! ([`http`], on a thread of its own), which reads it when scraped. The loop writes in two ways:
//! [`Metrics::observe`] counts each event as it leaves the daemon (atomic increments, no
//! allocation), and [`Metrics::sample`] copies, once a second, the numbers that already live
//! elsewhere: the kernel's loss counters, the ring buffer's fill, the DNS tracker's counters and
//! cache, the store's lag and spool, the live feed's clients (the same sources as the health
//! report the dashboard gets). A scrape reads atomics only; it never waits for the loop, and a
//! stalled loop shows as a failing `/healthz` rather than as a hung scrape.
//!
//! Labels are bounded: event kinds, verdicts, drift kinds and loss causes are fixed lists, and
//! NHI ids come from the registry (every id of every registry loaded during this run). No label
//! carries a path, a pid, a command line or anything else a monitored process chooses.

pub mod http;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        PoisonError, RwLock,
    },
    time::{Duration, Instant, SystemTime},
};

use monitor_common::{LossCause, LOSS_CAUSES};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use crate::{
    domain::event::{DriftKind, Event, Kind, Verdict},
    domain::registry::Registry,
};

/// The loop turns at least once a second (its tick); `/healthz` fails when it has not turned
/// for this long.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Event kinds, in the order of [`kind_index`].
const KINDS: [Kind; 7] = [
    Kind::Open,
    Kind::Connect,
    Kind::Exec,
    Kind::Exit,
    Kind::Dns,
    Kind::Loss,
    Kind::Request,
];
/// Verdicts, in the order of [`verdict_index`].
const VERDICTS: [Verdict; 3] = [Verdict::Ok, Verdict::Drift, Verdict::Unregistered];
/// Drift kinds, in the order of [`drift_index`].
const DRIFT_KINDS: [DriftKind; 7] = [
    DriftKind::ReaderOutOfScope,
    DriftKind::EndpointOutOfScope,
    DriftKind::Expired,
    DriftKind::StaleCredential,
    DriftKind::InteractiveUse,
    DriftKind::ApiOutOfScope,
    DriftKind::NameMismatch,
];
/// Loss causes of the store (the `cause` of its loss rows), after the kernel's.
const STORE_LOSS_CAUSES: [&str; 2] = ["spool_full", "store_backlog"];

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Open => 0,
        Kind::Connect => 1,
        Kind::Exec => 2,
        Kind::Exit => 3,
        Kind::Dns => 4,
        Kind::Loss => 5,
        Kind::Request => 6,
    }
}

fn kind_name(k: Kind) -> &'static str {
    k.as_str()
}

fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Ok => 0,
        Verdict::Drift => 1,
        Verdict::Unregistered => 2,
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    v.as_str()
}

fn drift_index(d: DriftKind) -> usize {
    match d {
        DriftKind::ReaderOutOfScope => 0,
        DriftKind::EndpointOutOfScope => 1,
        DriftKind::Expired => 2,
        DriftKind::StaleCredential => 3,
        DriftKind::InteractiveUse => 4,
        DriftKind::ApiOutOfScope => 5,
        DriftKind::NameMismatch => 6,
    }
}

/// An `f64` kept in an `AtomicU64` (its bits).
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Drift counters of one NHI, by drift kind.
#[derive(Debug)]
struct NhiDrift {
    id: Box<str>,
    counts: [AtomicU64; DRIFT_KINDS.len()],
}

/// The store's numbers (present once a store is configured).
#[derive(Debug, Default)]
struct StoreNumbers {
    configured: AtomicBool,
    up: AtomicBool,
    lag_secs: AtomicF64,
    inserted_rows: AtomicU64,
    errors: AtomicU64,
    spool_bytes: AtomicU64,
    spool_rows: AtomicU64,
    /// Per [`STORE_LOSS_CAUSES`].
    losses: [AtomicU64; STORE_LOSS_CAUSES.len()],
}

/// What the loop copies into [`Metrics`] once a second, from where each number lives.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// The fullest the ring buffer was since the previous sample, 0 to 1 (the health report's
    /// `ringbuf_fill`).
    pub ringbuf_fill: f64,
    pub ringbuf_bytes: u64,
    /// The kernel's loss counters, by [`LossCause`].
    pub kernel_losses: [u64; LOSS_CAUSES as usize],
    /// Kernel records decoded so far.
    pub records: u64,
    /// Reads of a credential into a pipe whose parent could not be ruled out as its reader
    /// (`Stats::parent_pipe_undetermined`).
    pub parent_pipe_undetermined: u64,
    /// Destinations holders' judged lists forgot (`Stats::judged_forgotten`).
    pub judged_forgotten: u64,
    pub dns: crate::sense::dns::DnsStats,
    pub dns_cached_addresses: usize,
    /// The store's counters, when the daemon writes to ClickHouse.
    pub store: Option<crate::publish::store::StoreStats>,
    pub live_clients: usize,
    pub live_clients_dropped: u64,
    pub live_clients_refused: u64,
}

/// The daemon's metrics: written by its loop, read by the metrics server.
#[derive(Debug)]
pub struct Metrics {
    /// When the daemon started (for the loop's last turn).
    started: Instant,
    start_unix: f64,
    /// Probes attached (0 until `ready`).
    probes: AtomicU64,
    ready: AtomicBool,
    stopping: AtomicBool,
    /// Milliseconds from `started` to the loop's last turn.
    last_turn_ms: AtomicU64,
    events: [[AtomicU64; VERDICTS.len()]; KINDS.len()],
    /// Sorted by id.
    drift: RwLock<Vec<NhiDrift>>,
    kernel_losses: [AtomicU64; LOSS_CAUSES as usize],
    records: AtomicU64,
    parent_pipe_undetermined: AtomicU64,
    /// The kernel's holder set is full (every connection is marked).
    holder_set_full: AtomicBool,
    judged_forgotten: AtomicU64,
    ringbuf_fill: AtomicF64,
    ringbuf_bytes: AtomicU64,
    dns_cached: AtomicU64,
    dns_queries: AtomicU64,
    dns_rejected: AtomicU64,
    dns_not_asked_other_server: AtomicU64,
    dns_not_asked_user_namespace: AtomicU64,
    store: StoreNumbers,
    live_clients: AtomicU64,
    live_dropped: AtomicU64,
    live_refused: AtomicU64,
    registry_nhis: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What `/healthz` says.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    /// Probes attached and the loop turning: a sentence saying so.
    Ok(String),
    /// Why not.
    Failing(String),
}

impl Metrics {
    pub fn new() -> Self {
        let start_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            started: Instant::now(),
            start_unix,
            probes: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            last_turn_ms: AtomicU64::new(0),
            events: Default::default(),
            drift: RwLock::new(Vec::new()),
            kernel_losses: Default::default(),
            records: AtomicU64::new(0),
            parent_pipe_undetermined: AtomicU64::new(0),
            holder_set_full: AtomicBool::new(false),
            judged_forgotten: AtomicU64::new(0),
            ringbuf_fill: AtomicF64::default(),
            ringbuf_bytes: AtomicU64::new(0),
            dns_cached: AtomicU64::new(0),
            dns_queries: AtomicU64::new(0),
            dns_rejected: AtomicU64::new(0),
            dns_not_asked_other_server: AtomicU64::new(0),
            dns_not_asked_user_namespace: AtomicU64::new(0),
            store: StoreNumbers::default(),
            live_clients: AtomicU64::new(0),
            live_dropped: AtomicU64::new(0),
            live_refused: AtomicU64::new(0),
            registry_nhis: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }
    }

    /// Counts events leaving the daemon: by kind and verdict, and drift by NHI and kind. No
    /// allocation unless a drift names an NHI no registry of this run had.
    pub fn observe(&self, events: &[Event]) {
        for e in events {
            self.events[kind_index(e.kind)][verdict_index(e.verdict)]
                .fetch_add(1, Ordering::Relaxed);
            if let (false, Some(nhi)) = (e.drift.is_empty(), e.nhi.as_deref()) {
                self.count_drift(nhi, &e.drift);
            }
        }
    }

    fn count_drift(&self, nhi: &str, kinds: &[DriftKind]) {
        if !self.try_count_drift(nhi, kinds) {
            // An NHI of no registry seen (the engine names only registered ones): counted all
            // the same, once made.
            self.add_nhis([nhi]);
            self.try_count_drift(nhi, kinds);
        }
    }

    /// Counts `kinds` for `nhi` if it has counters; false when it has none.
    fn try_count_drift(&self, nhi: &str, kinds: &[DriftKind]) -> bool {
        let drift = self.drift.read().unwrap_or_else(PoisonError::into_inner);
        let Ok(i) = drift.binary_search_by(|d| d.id.as_ref().cmp(nhi)) else {
            return false;
        };
        for &k in kinds {
            drift[i].counts[drift_index(k)].fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Adds the NHIs of `ids` that have no drift counters yet, at zero.
    fn add_nhis<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut drift = self.drift.write().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            if let Err(i) = drift.binary_search_by(|d| d.id.as_ref().cmp(id)) {
                drift.insert(
                    i,
                    NhiDrift {
                        id: id.into(),
                        counts: Default::default(),
                    },
                );
            }
        }
    }

    /// The registry in force (at start and after each reload): its NHIs get drift counters at
    /// zero, so that the first drift of each shows as an increase. NHIs of earlier registries
    /// keep theirs (counters do not go back).
    pub fn set_registry(&self, registry: &Registry) {
        self.registry_nhis
            .store(registry.nhis.len() as u64, Ordering::Relaxed);
        self.add_nhis(registry.nhis.iter().map(|n| n.id.as_str()));
    }

    /// A registry reload was tried; `ok` when the new registry is in force.
    pub fn reloaded(&self, ok: bool) {
        let c = if ok {
            &self.reloads
        } else {
            &self.reload_failures
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The probes are attached: the daemon is ready.
    pub fn set_ready(&self, probes: usize) {
        self.probes.store(probes as u64, Ordering::Relaxed);
        self.turned();
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the kernel's holder set is full (`nhiscope_holder_set_full`).
    pub fn set_holder_set_full(&self, full: bool) {
        self.holder_set_full.store(full, Ordering::Relaxed);
    }

    /// The daemon is stopping (a termination signal).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The loop turned (called from its once-a-second tick).
    pub fn turned(&self) {
        let ms = self.started.elapsed().as_millis();
        self.last_turn_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Copies the numbers that live elsewhere (see [`Sample`]).
    pub fn sample(&self, s: &Sample) {
        self.ringbuf_fill.set(s.ringbuf_fill);
        self.ringbuf_bytes.store(s.ringbuf_bytes, Ordering::Relaxed);
        for (c, v) in self.kernel_losses.iter().zip(s.kernel_losses) {
            c.store(v, Ordering::Relaxed);
        }
        self.records.store(s.records, Ordering::Relaxed);
        self.parent_pipe_undetermined
            .store(s.parent_pipe_undetermined, Ordering::Relaxed);
        self.judged_forgotten
            .store(s.judged_forgotten, Ordering::Relaxed);
        self.dns_cached
            .store(s.dns_cached_addresses as u64, Ordering::Relaxed);
        self.dns_queries.store(s.dns.queries, Ordering::Relaxed);
        self.dns_rejected
            .store(s.dns.not_believed(), Ordering::Relaxed);
        self.dns_not_asked_other_server
            .store(s.dns.other_server, Ordering::Relaxed);
        self.dns_not_asked_user_namespace
            .store(s.dns.untrusted_ns, Ordering::Relaxed);
        if let Some(st) = &s.store {
            let n = &self.store;
            n.up.store(st.healthy, Ordering::Relaxed);
            n.lag_secs.set(st.lag.as_secs_f64());
            n.inserted_rows.store(st.inserted_rows, Ordering::Relaxed);
            n.errors.store(st.errors, Ordering::Relaxed);
            n.spool_bytes.store(st.spool_bytes, Ordering::Relaxed);
            n.spool_rows.store(st.spool_rows, Ordering::Relaxed);
            let backlog = st.dropped_backlog;
            n.losses[0].store(st.dropped_events.saturating_sub(backlog), Ordering::Relaxed);
            n.losses[1].store(backlog, Ordering::Relaxed);
            n.configured.store(true, Ordering::Relaxed);
        }
        self.live_clients
            .store(s.live_clients as u64, Ordering::Relaxed);
        self.live_dropped
            .store(s.live_clients_dropped, Ordering::Relaxed);
        self.live_refused
            .store(s.live_clients_refused, Ordering::Relaxed);
    }

    /// Whether the daemon is healthy now: probes attached, not stopping, and the loop turned
    /// within [`STALL_LIMIT`].
    pub fn health(&self) -> Health {
        self.health_at(self.started.elapsed())
    }

    fn health_at(&self, now: Duration) -> Health {
        if self.stopping.load(Ordering::Relaxed) {
            return Health::Failing("stopping: the daemon received a termination signal".into());
        }
        if !self.ready.load(Ordering::Relaxed) {
            return Health::Failing("starting: the probes are not attached yet".into());
        }
        let last = Duration::from_millis(self.last_turn_ms.load(Ordering::Relaxed));
        let since = now.saturating_sub(last);
        if since > STALL_LIMIT {
            return Health::Failing(format!(
                "stalled: the event loop has not turned for {:.1}s (limit {}s)",
                since.as_secs_f64(),
                STALL_LIMIT.as_secs()
            ));
        }
        Health::Ok(format!(
            "ok: {} probes attached, event loop turned {:.1}s ago",
            self.probes.load(Ordering::Relaxed),
            since.as_secs_f64()
        ))
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(metrics: &std::sync::Arc<Self>) -> Result<String, fmt::Error> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Exposition(std::sync::Arc::clone(metrics))));
        let mut out = String::with_capacity(8 << 10);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// [`Metrics`] as prometheus-client's collector: every family written from the atomics at
/// scrape time.
#[derive(Debug)]
struct Exposition(std::sync::Arc<Metrics>);

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// One counter without labels (`name` without `_total`: the encoder adds it).
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> fmt::Result
where
    N: prometheus_client::encoding::EncodeGaugeValue,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let m = &*self.0;
        enc.encode_descriptor(
            "nhiscope_build",
            "The running nhiscope's version (always 1).",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        gauge(
            &mut enc,
            "nhiscope_start_time_seconds",
            "When the daemon started, in seconds since the Unix epoch.",
            m.start_unix,
        )?;
        let healthy = matches!(m.health(), Health::Ok(_));
        gauge(
            &mut enc,
            "nhiscope_ready",
            "1 when the probes are attached and the event loop is turning (what /healthz says), \
             else 0.",
            i64::from(healthy),
        )?;
        gauge(
            &mut enc,
            "nhiscope_probes_attached",
            "Kernel programs attached.",
            load(&m.probes),
        )?;
        counter(
            &mut enc,
            "nhiscope_kernel_records",
            "Records read from the kernel's ring buffer.",
            load(&m.records),
        )?;
        counter(
            &mut enc,
            "nhiscope_parent_pipe_undetermined",
            "Credential reads into a pipe whose read end the parent may hold above the file \
             descriptors the kernel compares (1024): the parent was taken to hold the NHI.",
            load(&m.parent_pipe_undetermined),
        )?;
        gauge(
            &mut enc,
            "nhiscope_holder_set_full",
            "1 while the kernel's holder set is full (--holder-set-max): every process's \
             connections are then read for their first bytes, not only holders'.",
            u64::from(m.holder_set_full.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut enc,
            "nhiscope_judged_destinations_forgotten",
            "Destinations a holder's list of judged ones forgot to make room (256 per process): \
             a connection to one of them found open at a later credential read is judged again.",
            load(&m.judged_forgotten),
        )?;
        {
            let mut f = enc.encode_descriptor(
                "nhiscope_events",
                "Events the daemon wrote, by kind (open, connect, exec, exit, dns, loss) and \
                 verdict (ok, drift, unregistered).",
                None,
                MetricType::Counter,
            )?;
            for (k, row) in KINDS.iter().zip(&m.events) {
                for (v, n) in VERDICTS.iter().zip(row) {
                    let labels = [("kind", kind_name(*k)), ("verdict", verdict_name(*v))];
                    ConstCounter::new(load(n)).encode(f.encode_family(&labels)?)?;
                }
            }
        }
        {
            let drift = m.drift.read().unwrap_or_else(PoisonError::into_inner);
            let mut f = enc.encode_descriptor(
                "nhiscope_drift",
                "Drift found, by NHI (registry id) and drift kind; an event with two kinds \
                 counts once in each.",
                None,
                MetricType::Counter,
            )?;
            for d in drift.iter() {
                for (k, n) in DRIFT_KINDS.iter().zip(&d.counts) {
                    let labels = [("nhi", d.id.as_ref()), ("kind", k.as_str())];
                    ConstCounter::new(load(n)).encode(f.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut f = enc.encode_descriptor(
                "nhiscope_losses",
                "What was lost, by cause: kernel records (ringbuf_full_*, pending_map_full: \
                 the ring buffer or a pending map was full) and events the ClickHouse store \
                 dropped (spool_full, store_backlog).",
                None,
                MetricType::Counter,
            )?;
            for c in LossCause::ALL {
                let labels = [("cause", c.name())];
                let n = load(&m.kernel_losses[c as usize]);
                ConstCounter::new(n).encode(f.encode_family(&labels)?)?;
            }
            for (c, n) in STORE_LOSS_CAUSES.iter().zip(&m.store.losses) {
                let labels = [("cause", *c)];
                ConstCounter::new(load(n)).encode(f.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut enc,
            "nhiscope_ringbuf_fill_ratio",
            "How full the kernel ring buffer was at its fullest in the last second, 0 to 1.",
            m.ringbuf_fill.get(),
        )?;
        gauge(
            &mut enc,
            "nhiscope_ringbuf_size_bytes",
            "The kernel ring buffer's size.",
            load(&m.ringbuf_bytes),
        )?;
        gauge(
            &mut enc,
            "nhiscope_dns_cache_addresses",
            "Addresses the DNS cache holds names for.",
            load(&m.dns_cached),
        )?;
        counter(
            &mut enc,
            "nhiscope_dns_queries",
            "DNS queries remembered: sent to a resolver of the host from a namespace it owns.",
            load(&m.dns_queries),
        )?;
        counter(
            &mut enc,
            "nhiscope_dns_rejected",
            "DNS answers not believed: responses to no query seen leaving the host, and answer \
             records off their question's CNAME chain.",
            load(&m.dns_rejected),
        )?;
        {
            let mut f = enc.encode_descriptor(
                "nhiscope_dns_queries_unbelievable",
                "DNS queries whose answers cannot be believed, so not remembered, by reason: \
                 other_server (sent to a server that is not one of the host's resolvers, \
                 --dns-server or a loopback address) and user_namespace (sent from a network \
                 namespace a user namespace owns, on a socket of another namespace than the \
                 sender's, or where the owner could not be read).",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in [
                ("other_server", &m.dns_not_asked_other_server),
                ("user_namespace", &m.dns_not_asked_user_namespace),
            ] {
                ConstCounter::new(load(n)).encode(f.encode_family(&[("reason", reason)])?)?;
            }
        }
        let st = &m.store;
        if st.configured.load(Ordering::Relaxed) {
            gauge(
                &mut enc,
                "nhiscope_clickhouse_up",
                "1 when the last request to ClickHouse succeeded, else 0.",
                i64::from(st.up.load(Ordering::Relaxed)),
            )?;
            gauge(
                &mut enc,
                "nhiscope_clickhouse_lag_seconds",
                "Age of the oldest event not yet stored in ClickHouse (in memory, in flight or \
                 spooled); 0 when everything is stored.",
                st.lag_secs.get(),
            )?;
            counter(
                &mut enc,
                "nhiscope_clickhouse_inserted_rows",
                "Rows inserted into ClickHouse (events, losses, heartbeats).",
                load(&st.inserted_rows),
            )?;
            counter(
                &mut enc,
                "nhiscope_clickhouse_errors",
                "Failed requests to ClickHouse.",
                load(&st.errors),
            )?;
            gauge(
                &mut enc,
                "nhiscope_spool_bytes",
                "Bytes waiting in the on-disk spool for ClickHouse.",
                load(&st.spool_bytes),
            )?;
            gauge(
                &mut enc,
                "nhiscope_spool_rows",
                "Rows waiting in the on-disk spool for ClickHouse.",
                load(&st.spool_rows),
            )?;
        }
        gauge(
            &mut enc,
            "nhiscope_live_clients",
            "Clients connected to the live feed (nhiscope tui).",
            load(&m.live_clients),
        )?;
        counter(
            &mut enc,
            "nhiscope_live_clients_dropped",
            "Live feed clients dropped for reading too slowly.",
            load(&m.live_dropped),
        )?;
        counter(
            &mut enc,
            "nhiscope_live_clients_refused",
            "Live feed connections refused by the peer check.",
            load(&m.live_refused),
        )?;
        gauge(
            &mut enc,
            "nhiscope_registry_nhis",
            "NHIs in the registry in force.",
            load(&m.registry_nhis),
        )?;
        counter(
            &mut enc,
            "nhiscope_registry_reloads",
            "Registry reloads that put a new registry in force (SIGHUP or a change of the file).",
            load(&m.reloads),
        )?;
        counter(
            &mut enc,
            "nhiscope_registry_reload_failures",
            "Registry reloads refused (invalid registry, or the kernel filter could not be \
             updated); the previous registry stayed in force.",
            load(&m.reload_failures),
        )?;
        Ok(())
    }
}
