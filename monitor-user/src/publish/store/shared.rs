//! The state a running store shares between the daemon's side ([`super::StoreHandle`]), the
//! writer task ([`super::sink`]) and the spooler: rows not yet in a batch, the spool and its
//! gauge, the durability ledger behind the checkpoint, and the counters.
//!
//! Everything here takes short locks on memory only, except what is documented to block on the
//! disk (spool writes, checkpoints), which the writer and the spooler run through [`blocking`].

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::{
    batch::{Batch, Rows},
    config::StoreConfig,
    row::{AgentRow, EventRow, LossRow, Ts},
    schema,
    spool::{self, Dropped, Pushed, Ranges, Spool, State},
};
use crate::domain::event::{Event, Kind};

/// Counters of the store itself, also written on every heartbeat (`store_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Events accepted by [`StoreHandle::send`].
    pub accepted: u64,
    /// Rows inserted into ClickHouse (events, losses, heartbeats).
    pub inserted_rows: u64,
    /// Rows written to the spool.
    pub spooled_rows: u64,
    /// Rows waiting in the spool now, and their bytes.
    pub spool_rows: u64,
    pub spool_bytes: u64,
    /// Events dropped because the spool was full, or because the writer and the spooler were
    /// both behind (`dropped_backlog` of them).
    pub dropped_events: u64,
    /// Of `dropped_events`, those dropped because the writer and the spooler were both behind
    /// (the `store_backlog` loss rows); the rest are `spool_full`.
    pub dropped_backlog: u64,
    /// Failed requests to ClickHouse.
    pub errors: u64,
    /// Whether the last request to ClickHouse succeeded.
    pub healthy: bool,
    /// Age of the oldest event not yet in ClickHouse (in memory, in flight or spooled); zero
    /// when everything accepted is stored.
    pub lag: Duration,
}

/// What `shutdown` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    pub stats: StoreStats,
    /// Batches left in the spool for the next start.
    pub spooled_batches: usize,
}

/// Work for the spooler task.
pub(crate) enum Overflow {
    /// A batch the writer had no room for: to the spool.
    Batch(Batch),
    /// Answered once every batch sent before it is spooled (the final flush waits for it).
    Flush(oneshot::Sender<()>),
}

/// Runs `f` on tokio's blocking pool and waits for it: file writes, `fsync`s and the parsing
/// of spooled batches must not hold up the thread the daemon's event loop runs on.
pub(crate) async fn blocking<R: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared) -> R + Send + 'static,
) -> R {
    let s = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down and did not run it: this task is about to be dropped
        // too, and what was not written is found by the next start's accounting.
        Err(_) => std::future::pending().await,
    }
}

/// The spool's size, readable without its lock.
#[derive(Default)]
pub(crate) struct SpoolGauge {
    batches: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    oldest: Mutex<Option<Ts>>,
}

impl SpoolGauge {
    fn publish(&self, s: &Spool) {
        self.batches.store(s.len() as u64, Ordering::Relaxed);
        self.rows.store(s.rows(), Ordering::Relaxed);
        self.bytes.store(s.bytes(), Ordering::Relaxed);
        *lock(&self.oldest) = s.oldest_event();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches() == 0
    }

    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

/// The spool, locked; the gauge is brought up to date when the lock is let go.
pub(crate) struct SpoolGuard<'a> {
    spool: MutexGuard<'a, Spool>,
    gauge: &'a SpoolGauge,
}

impl std::ops::Deref for SpoolGuard<'_> {
    type Target = Spool;
    fn deref(&self) -> &Spool {
        &self.spool
    }
}

impl std::ops::DerefMut for SpoolGuard<'_> {
    fn deref_mut(&mut self) -> &mut Spool {
        &mut self.spool
    }
}

impl Drop for SpoolGuard<'_> {
    fn drop(&mut self) {
        self.gauge.publish(&self.spool);
    }
}

/// Rows not yet in a batch.
#[derive(Default)]
struct Pending {
    events: Vec<EventRow>,
    losses: Vec<LossRow>,
    agents: Vec<AgentRow>,
    /// Next event `seq` (events accepted so far).
    next_seq: u64,
    /// Next `seq` of loss and heartbeat rows.
    next_aux: u64,
    /// When the oldest pending row arrived.
    since: Option<Instant>,
    /// End of the last loss row per cause (the next one starts there).
    last_loss: HashMap<String, Ts>,
}

impl Pending {
    fn next_aux(&mut self) -> u64 {
        let s = self.next_aux;
        self.next_aux += 1;
        s
    }
}

/// Durability accounting for the checkpoint.
#[derive(Default)]
struct Ledger {
    /// Event seqs stored, spooled, or counted as dropped.
    accounted: Ranges,
    /// Event batches cut but not yet accounted: first seq -> time of their first row.
    in_transit: BTreeMap<u64, Ts>,
    /// Spool-full drops not yet written as a loss row.
    dropped: Option<Dropped>,
    /// Drops because the writer and the spooler were both behind, not yet written.
    backlog: Option<Dropped>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    inserted_rows: AtomicU64,
    spooled_rows: AtomicU64,
    dropped_events: AtomicU64,
    dropped_backlog: AtomicU64,
    errors: AtomicU64,
    healthy: AtomicBool,
}

/// State shared by the handle and the writer. Locks are never nested.
pub(crate) struct Shared {
    host: String,
    run_id: u64,
    started: Ts,
    pub(super) config: StoreConfig,
    pending: Mutex<Pending>,
    /// Locked only off the event loop (see [`blocking`]); read through `gauge` elsewhere.
    spool: Mutex<Spool>,
    gauge: SpoolGauge,
    ledger: Mutex<Ledger>,
    batches: mpsc::Sender<Batch>,
    pub(crate) overflow: mpsc::Sender<Overflow>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every update is a
    // single push or assignment): keep going rather than losing events.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The state of a store that starts with `spool`; batches go to the writer through
    /// `batches`, and to the spooler through `overflow` when the writer is busy.
    pub(super) fn new(
        host: String,
        run_id: u64,
        started: Ts,
        config: StoreConfig,
        spool: Spool,
        batches: mpsc::Sender<Batch>,
        overflow: mpsc::Sender<Overflow>,
    ) -> Shared {
        let gauge = SpoolGauge::default();
        gauge.publish(&spool);
        Shared {
            host,
            run_id,
            started,
            config,
            pending: Mutex::new(Pending::default()),
            spool: Mutex::new(spool),
            gauge,
            ledger: Mutex::new(Ledger::default()),
            batches,
            overflow,
            counters: Counters::default(),
            last_error: Mutex::new(None),
        }
    }

    /// This store's run id (the `run_id` column of its rows).
    pub(super) fn run_id(&self) -> u64 {
        self.run_id
    }

    /// A coverage gap as a pending loss row.
    pub(super) fn record_loss(
        &self,
        start: Ts,
        end: Ts,
        count: u64,
        cause: String,
        reason: String,
    ) {
        let mut p = self.pending();
        let seq = p.next_aux();
        p.losses.push(LossRow {
            host: self.host.clone(),
            run_id: self.run_id,
            seq,
            start,
            end,
            count,
            cause,
            reason,
        });
        p.since.get_or_insert_with(Instant::now);
    }

    /// A pending heartbeat row with the daemon's `counters` and the store's own (`store_*`).
    pub(super) fn heartbeat(&self, counters: &[(&str, u64)]) {
        let s = self.stats();
        let mut all: Vec<(String, u64)> = counters
            .iter()
            .map(|(n, v)| ((*n).to_owned(), *v))
            .collect();
        all.extend([
            ("store_accepted".to_owned(), s.accepted),
            ("store_inserted_rows".to_owned(), s.inserted_rows),
            ("store_spooled_rows".to_owned(), s.spooled_rows),
            ("store_spool_rows".to_owned(), s.spool_rows),
            ("store_spool_bytes".to_owned(), s.spool_bytes),
            ("store_dropped_events".to_owned(), s.dropped_events),
            ("store_errors".to_owned(), s.errors),
        ]);
        let mut p = self.pending();
        let seq = p.next_aux();
        p.agents.push(AgentRow {
            host: self.host.clone(),
            run_id: self.run_id,
            seq,
            ts: Ts::now(),
            started: self.started,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            counters: all,
        });
        p.since.get_or_insert_with(Instant::now);
    }

    /// Why the last request to ClickHouse failed, while it is failing.
    pub(super) fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        lock(&self.pending)
    }

    pub(crate) fn spool(&self) -> SpoolGuard<'_> {
        SpoolGuard {
            spool: lock(&self.spool),
            gauge: &self.gauge,
        }
    }

    pub(crate) fn gauge(&self) -> &SpoolGauge {
        &self.gauge
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Turns events into pending rows; returns the batches that became full.
    pub(super) fn accept(&self, events: impl ExactSizeIterator<Item = Event>) -> Vec<Batch> {
        let mut cut = Vec::new();
        let n = events.len();
        let mut p = self.pending();
        for e in events {
            let seq = p.next_seq;
            p.next_seq += 1;
            if e.kind == Kind::Loss {
                let cause = e.cause.clone().unwrap_or_else(|| "unknown".into());
                let start = p.last_loss.get(&cause).copied().unwrap_or(self.started);
                p.last_loss.insert(cause.clone(), e.ts);
                let aux = p.next_aux();
                p.losses.push(LossRow {
                    host: e.host.to_string(),
                    run_id: self.run_id,
                    seq: aux,
                    start,
                    end: e.ts,
                    count: e.count.unwrap_or(0),
                    cause,
                    reason: e.reason.clone(),
                });
            }
            let row = EventRow::new(e, self.run_id, seq);
            p.events.push(row);
            p.since.get_or_insert_with(Instant::now);
            if p.events.len() >= self.config.batch_rows {
                // Full batches come in a row under load: room for the next one at once, rather
                // than growing (and copying) the vector a dozen times on the way.
                let rows =
                    std::mem::replace(&mut p.events, Vec::with_capacity(self.config.batch_rows));
                cut.push(Batch::new(&self.host, self.run_id, Rows::Events(rows)));
            }
        }
        self.counters
            .accepted
            .fetch_add(n as u64, Ordering::Relaxed);
        drop(p);
        for b in &cut {
            self.in_transit(b);
        }
        cut
    }

    /// Cuts the pending rows into batches when the oldest is `batch_interval` old (or `all`).
    pub(crate) fn cut_due(&self, all: bool) -> Vec<Batch> {
        let mut p = self.pending();
        let due = p
            .since
            .is_some_and(|t| all || t.elapsed() >= self.config.batch_interval);
        if !due {
            return Vec::new();
        }
        p.since = None;
        let mut out = Vec::new();
        if !p.events.is_empty() {
            let rows = std::mem::take(&mut p.events);
            out.push(Batch::new(&self.host, self.run_id, Rows::Events(rows)));
        }
        if !p.losses.is_empty() {
            let rows = std::mem::take(&mut p.losses);
            out.push(Batch::new(&self.host, self.run_id, Rows::Losses(rows)));
        }
        if !p.agents.is_empty() {
            let rows = std::mem::take(&mut p.agents);
            out.push(Batch::new(&self.host, self.run_id, Rows::Agents(rows)));
        }
        drop(p);
        for b in &out {
            self.in_transit(b);
        }
        out
    }

    fn in_transit(&self, b: &Batch) {
        if let Rows::Events(r) = &b.rows {
            if let Some(first) = r.first() {
                self.ledger().in_transit.insert(first.seq, first.ts());
            }
        }
    }

    /// Hands a batch to the writer, or to the spooler when the writer is busy, without
    /// waiting for either: when both are behind, the batch is dropped and counted.
    pub(super) fn dispatch(&self, b: Batch) {
        let b = match self.batches.try_send(b) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b)) => b,
        };
        match self.overflow.try_send(Overflow::Batch(b)) {
            Ok(()) => {}
            Err(
                mpsc::error::TrySendError::Full(Overflow::Batch(b))
                | mpsc::error::TrySendError::Closed(Overflow::Batch(b)),
            ) => self.drop_backlog(&b),
            Err(_) => {}
        }
    }

    /// Marks an event batch's seqs as accounted for.
    fn account(&self, b: &Batch) {
        if let Rows::Events(r) = &b.rows {
            let mut l = self.ledger();
            for row in r {
                l.accounted.insert(row.seq, row.seq);
            }
            if let Some(first) = r.first() {
                l.in_transit.remove(&first.seq);
            }
        }
    }

    /// A batch reached ClickHouse (`written` rows were new).
    pub(crate) fn stored(&self, b: &Batch, written: usize) {
        self.counters
            .inserted_rows
            .fetch_add(written as u64, Ordering::Relaxed);
        self.account(b);
        let _ = self.checkpoint(false);
    }

    /// A spooled batch reached ClickHouse.
    pub(crate) fn replayed(&self, _b: &Batch, written: usize) {
        self.counters
            .inserted_rows
            .fetch_add(written as u64, Ordering::Relaxed);
    }

    /// Writes a batch to the spool; when it does not fit, counts its events as dropped.
    pub(crate) fn spool_batch(&self, b: Batch) {
        if let Some(b) = self.try_spool_batch(b) {
            self.drop_batch(&b, "the spool is full");
            let _ = self.checkpoint(false);
        }
    }

    /// Like [`Shared::spool_batch`], but a batch that does not fit is handed back.
    pub(crate) fn try_spool_batch(&self, b: Batch) -> Option<Batch> {
        let pushed = self.spool().push(&b);
        match pushed {
            Ok(Pushed::Stored) => {
                self.counters
                    .spooled_rows
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                self.account(&b);
            }
            Ok(Pushed::Full) => return Some(b),
            Err(e) => {
                log::error!(
                    "spool {}: cannot write a batch: {e}",
                    self.config.spool_dir.display()
                );
                self.drop_batch(&b, "the spool cannot be written");
            }
        }
        let _ = self.checkpoint(false);
        None
    }

    /// Counts the events of a batch that neither the writer nor the spooler could queue.
    fn drop_backlog(&self, b: &Batch) {
        let Rows::Events(r) = &b.rows else {
            log::debug!("the store is behind: dropping a batch of {} rows", b.len());
            return;
        };
        let (Some(first), Some(last)) = (r.first(), r.last()) else {
            return;
        };
        let n = r.len() as u64;
        self.counters
            .dropped_backlog
            .fetch_add(n, Ordering::Relaxed);
        let total = self.counters.dropped_events.fetch_add(n, Ordering::Relaxed) + n;
        if total == n {
            log::error!(
                "the store cannot keep up (ClickHouse and the spool are both behind): dropping \
                 events; they are counted and will be written as a store_backlog loss row"
            );
        }
        let mut l = self.ledger();
        Dropped::add(&mut l.backlog, first.ts(), last.ts(), n);
        for row in r {
            l.accounted.insert(row.seq, row.seq);
        }
        l.in_transit.remove(&first.seq);
    }

    fn drop_batch(&self, b: &Batch, why: &str) {
        match &b.rows {
            Rows::Events(r) => {
                let (Some(first), Some(last)) = (r.first(), r.last()) else {
                    return;
                };
                let n = r.len() as u64;
                let total = self.counters.dropped_events.fetch_add(n, Ordering::Relaxed) + n;
                if total == n {
                    log::error!(
                        "{why} (spool: {} bytes, limit {}): dropping events; they are counted \
                         and will be written as a spool_full loss row",
                        self.gauge.bytes.load(Ordering::Relaxed),
                        self.config.spool_max_bytes
                    );
                }
                let mut l = self.ledger();
                Dropped::add(&mut l.dropped, first.ts(), last.ts(), n);
                for row in r {
                    l.accounted.insert(row.seq, row.seq);
                }
                l.in_transit.remove(&first.seq);
            }
            Rows::Agents(_) => log::debug!("{why}: dropping a heartbeat"),
            // Loss batches are exempt from the bound: only an I/O error gets here.
            Rows::Losses(r) => log::error!("{why}: {} loss rows are lost", r.len()),
        }
    }

    fn quarantined(&self, e: &spool::Entry) {
        if e.table == schema::Table::Events {
            let now = Ts::now();
            let mut p = self.pending();
            let seq = p.next_aux();
            p.losses.push(LossRow {
                host: self.host.clone(),
                run_id: self.run_id,
                seq,
                start: now,
                end: now,
                count: e.rows as u64,
                cause: "spool_corrupt".into(),
                reason: format!(
                    "{} spooled events could not be read back from {}.",
                    e.rows,
                    e.path.display()
                ),
            });
            p.since.get_or_insert_with(Instant::now);
        }
    }

    /// Moves the oldest spooled batch, which the server rejected as bad data `tries` times, to
    /// `deadletter/`, and writes a loss row that says so (except for a batch of loss rows:
    /// another loss row could meet the same fate, forever).
    pub(crate) fn dead_letter_front(&self, why: &str, tries: u32) {
        let gone = self.spool().dead_letter_front();
        let Some(e) = gone else { return };
        log::error!(
            "ClickHouse rejected a batch of {} {} rows {tries} times as bad data ({why}): moved \
             it to {} so that the batches behind it go on",
            e.rows,
            e.table.name(),
            e.path.display()
        );
        if e.table == schema::Table::Losses {
            return;
        }
        let now = Ts::now();
        let count = if e.table == schema::Table::Events {
            e.rows as u64
        } else {
            0
        };
        let mut p = self.pending();
        let seq = p.next_aux();
        p.losses.push(LossRow {
            host: self.host.clone(),
            run_id: self.run_id,
            seq,
            start: e.oldest.unwrap_or(now),
            end: now,
            count,
            cause: "rejected_by_server".into(),
            reason: format!(
                "ClickHouse rejected a batch of {} {} rows as bad data {tries} times ({why}); it \
                 was set aside in {} and is not stored.",
                e.rows,
                e.table.name(),
                e.path.display()
            ),
        });
        p.since.get_or_insert_with(Instant::now);
    }

    pub(crate) fn spool_quarantine(&self, e: &spool::Entry) {
        let gone = self.spool().quarantine_front();
        if let Some(gone) = gone {
            debug_assert_eq!(gone.id, e.id);
            self.quarantined(&gone);
        }
    }

    /// The drops not yet written, as loss rows.
    fn take_dropped_rows(&self) -> Vec<LossRow> {
        let (full, backlog) = {
            let mut l = self.ledger();
            (l.dropped.take(), l.backlog.take())
        };
        let mut rows = Vec::new();
        for (d, cause) in [(full, DropCause::SpoolFull), (backlog, DropCause::Backlog)] {
            if let Some(d) = d {
                let seq = self.pending().next_aux();
                rows.push(dropped_row(&self.host, self.run_id, seq, d, cause));
            }
        }
        rows
    }

    /// Moves drops into pending loss rows (the spool has room again).
    pub(crate) fn flush_dropped(&self) {
        let rows = self.take_dropped_rows();
        if !rows.is_empty() {
            let mut p = self.pending();
            p.losses.extend(rows);
            p.since.get_or_insert_with(Instant::now);
        }
    }

    /// Drops as a loss batch of their own, for the final flush.
    pub(crate) fn take_dropped_batch(&self) -> Option<Batch> {
        let rows = self.take_dropped_rows();
        (!rows.is_empty()).then(|| Batch::new(&self.host, self.run_id, Rows::Losses(rows)))
    }

    pub(crate) fn set_healthy(&self, ok: bool) {
        self.counters.healthy.store(ok, Ordering::Relaxed);
    }

    /// Why the last request failed, `None` once one succeeds again.
    pub(crate) fn set_last_error(&self, e: Option<String>) {
        *lock(&self.last_error) = e;
    }

    pub(crate) fn count_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let g = &self.gauge;
        let (spool_rows, spool_bytes, spool_oldest) = (
            g.rows.load(Ordering::Relaxed),
            g.bytes.load(Ordering::Relaxed),
            *lock(&g.oldest),
        );
        let pending = self.pending().events.first().map(EventRow::ts);
        let transit = self.ledger().in_transit.values().min().copied();
        let lag = [pending, transit, spool_oldest]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::ZERO, |oldest| {
                Ts::now()
                    .to_system()
                    .duration_since(oldest.to_system())
                    .unwrap_or_default()
            });
        StoreStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            inserted_rows: c.inserted_rows.load(Ordering::Relaxed),
            spooled_rows: c.spooled_rows.load(Ordering::Relaxed),
            spool_rows,
            spool_bytes,
            dropped_events: c.dropped_events.load(Ordering::Relaxed),
            dropped_backlog: c.dropped_backlog.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            healthy: c.healthy.load(Ordering::Relaxed),
            lag,
        }
    }

    pub(crate) fn report(&self) -> ShutdownReport {
        ShutdownReport {
            stats: self.stats(),
            spooled_batches: self.gauge.batches.load(Ordering::Relaxed) as usize,
        }
    }

    /// Writes `state.json`, durably. `clean` means nothing is in memory any more (the final
    /// flush). Blocks on the disk: call it through [`blocking`] once the store runs.
    pub(crate) fn checkpoint(&self, clean: bool) -> std::io::Result<()> {
        let (next_seq, pending_ts) = {
            let p = self.pending();
            (p.next_seq, p.events.first().map(EventRow::ts))
        };
        let (durable, transit_ts, dropped, backlog) = {
            let l = self.ledger();
            (
                l.accounted.as_vec().to_vec(),
                l.in_transit.values().min().copied(),
                l.dropped,
                l.backlog,
            )
        };
        let oldest_pending = match (pending_ts, transit_ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let state = State {
            run_id: self.run_id,
            host: self.host.clone(),
            started: self.started,
            updated: Ts::now(),
            next_seq,
            durable,
            oldest_pending,
            clean,
            dropped,
            backlog,
        };
        let r = self.spool().write_state(&state);
        if let Err(e) = &r {
            log::warn!(
                "spool {}: cannot write the checkpoint: {e}",
                self.config.spool_dir.display()
            );
        }
        r
    }

    /// Turns what could not be read back at start (a checkpoint, batch files) into a loss row,
    /// spooled at once: losing track must show in the losses table, not only in a log.
    pub(super) fn unreadable_at_start(
        &self,
        state: Option<&String>,
        batches: &[(PathBuf, String)],
    ) {
        let now = Ts::now();
        let mut rows = Vec::new();
        if let Some(why) = state {
            log::error!("spool: unreadable checkpoint {why}");
            let seq = self.pending().next_aux();
            rows.push(LossRow {
                host: self.host.clone(),
                run_id: self.run_id,
                seq,
                start: now,
                end: now,
                count: 0,
                cause: "checkpoint_corrupt".into(),
                reason: format!(
                    "The store's checkpoint could not be read ({why}): whether the previous run \
                     stopped cleanly, and how many of its events were lost, is unknown."
                ),
            });
        }
        for (path, why) in batches {
            let seq = self.pending().next_aux();
            rows.push(LossRow {
                host: self.host.clone(),
                run_id: self.run_id,
                seq,
                start: now,
                end: now,
                count: 0,
                cause: "spool_corrupt".into(),
                reason: format!(
                    "A spooled batch could not be read back ({why}); it was moved to {} and its \
                     rows, however many, are not stored.",
                    path.display()
                ),
            });
        }
        if rows.is_empty() {
            return;
        }
        let b = Batch::new(&self.host, self.run_id, Rows::Losses(rows));
        if let Err(e) = self.spool().push(&b) {
            log::error!("spool: cannot save the loss rows of what could not be read: {e}");
        }
    }

    /// Turns what an earlier store left unaccounted into loss rows.
    pub(super) fn recover_previous(&self, prev: State) {
        let now = Ts::now();
        let mut rows = Vec::new();
        if let Some(d) = prev.dropped {
            let cause = DropCause::SpoolFull;
            rows.push(dropped_row(&prev.host, prev.run_id, u64::MAX - 1, d, cause));
        }
        if let Some(d) = prev.backlog {
            let cause = DropCause::Backlog;
            rows.push(dropped_row(&prev.host, prev.run_id, u64::MAX - 2, d, cause));
        }
        if !prev.clean {
            let mut accounted = Ranges::from_vec(prev.durable.clone());
            for (a, b) in self.spool().event_ranges(prev.run_id) {
                accounted.insert(a, b);
            }
            let lost = prev.next_seq - accounted.count_below(prev.next_seq);
            let start = prev.oldest_pending.unwrap_or(prev.updated);
            log::warn!(
                "the previous store (run {:016x}) stopped without a shutdown: {lost} accepted \
                 events were not saved; writing a loss row for the gap since {}",
                prev.run_id,
                start.to_rfc3339()
            );
            rows.push(LossRow {
                host: prev.host.clone(),
                run_id: prev.run_id,
                seq: u64::MAX,
                start,
                end: now,
                count: lost,
                cause: "unclean_stop".into(),
                reason: format!(
                    "nhiscope stopped without flushing (killed or crashed) and restarted at \
                     {}: {lost} events it had accepted were lost, and nothing was observed in \
                     between.",
                    now.to_rfc3339()
                ),
            });
        }
        if rows.is_empty() {
            return;
        }
        // Spooled at once, so that a second crash cannot lose them; replayed with the rest.
        let b = Batch::new(&prev.host, prev.run_id, Rows::Losses(rows));
        if let Err(e) = self.spool().push(&b) {
            log::error!("spool: cannot save the loss rows of the previous run: {e}");
        }
    }
}

/// Why the store dropped events.
#[derive(Clone, Copy)]
enum DropCause {
    /// ClickHouse was failing and the spool had reached its bound.
    SpoolFull,
    /// The writer and the spooler both had a full queue: the store did not make the daemon's
    /// loop wait for them.
    Backlog,
}

fn dropped_row(host: &str, run_id: u64, seq: u64, d: Dropped, cause: DropCause) -> LossRow {
    let (cause, why) = match cause {
        DropCause::SpoolFull => (
            "spool_full",
            "ClickHouse was unreachable and the spool was full",
        ),
        DropCause::Backlog => (
            "store_backlog",
            "they came faster than ClickHouse and the spool could take them",
        ),
    };
    LossRow {
        host: host.to_owned(),
        run_id,
        seq,
        start: d.start,
        end: d.end,
        count: d.count,
        cause: cause.into(),
        reason: format!("{} events were dropped because {why}.", d.count),
    }
}
