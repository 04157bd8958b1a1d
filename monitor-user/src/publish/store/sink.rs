//! The sink: turns batches into RowBinary inserts over HTTP, and the writer task that sends
//! them, falls back to the spool when ClickHouse fails, and replays the spool when it returns.
//!
//! The writer is one tokio task. Batches reach it through a small channel (or, when the channel
//! is full, go straight to the spool from [`super::StoreHandle::send`]). While ClickHouse works
//! and the spool is empty, a batch is inserted at once; otherwise it goes behind the spooled
//! ones, and the spool is replayed oldest first whenever an attempt is due (exponential
//! backoff, up to `retry_max`).
//!
//! Inserting the same batch twice must not store it twice. Each attempt whose outcome is
//! unknown (a timeout, a dropped connection, an error after the request was sent, a batch
//! restored from an earlier process) marks the batch *uncertain*; an uncertain batch is first
//! looked up by its rows' identity (`host`, `run_id`, `seq` range, and its time range for
//! partition pruning), and only the rows not found are inserted. See [`super`] for how this
//! combines with `ReplacingMergeTree` and `insert_deduplication_token`.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use clickhouse::{Client, RowWrite};
use tokio::sync::{mpsc, oneshot};

pub use super::batch::{Batch, Rows};
use super::{
    client::{admin_client, SinkError},
    config::StoreConfig,
    migrate,
    row::{LegacyAgent, LegacyEvent, LegacyLoss, ModernAgent, ModernEvent, ModernLoss},
    schema::{Dialect, Schema},
    shared::{blocking, Overflow, Shared, ShutdownReport},
    spool::SpoolClaim,
};

/// A connection to a migrated database.
pub struct Conn {
    /// Queries and inserts, in the store's database.
    pub client: Client,
    pub schema: Schema,
    pub server_version: String,
    user: Option<String>,
    timeout: Duration,
}

impl Conn {
    /// Connects, migrates the schema, and returns the connection the sink inserts through.
    pub async fn open(config: &StoreConfig) -> Result<(Conn, migrate::Report), SinkError> {
        let admin = admin_client(config);
        let user = config.user.as_deref();
        let report =
            tokio::time::timeout(config.request_timeout * 3, migrate::migrate(&admin, config))
                .await
                .map_err(|_| SinkError::new("no answer in time while migrating the schema", false))?
                .map_err(|e| match e {
                    migrate::MigrateError::ClickHouse { during, source } => {
                        let mut s = SinkError::from_clickhouse(&source, user);
                        s.message = format!("{during}: {}", s.message);
                        s
                    }
                    other => SinkError::new(other.to_string(), false),
                })?;
        let mut client = admin.with_database(&config.database);
        if config.cluster.is_some() {
            // Make a Distributed insert synchronous, so that the idempotency check sees it.
            client = client.with_setting("insert_distributed_sync", "1");
        }
        let conn = Conn {
            client,
            schema: report.schema.clone(),
            server_version: report.server_version.clone(),
            user: config.user.clone(),
            timeout: config.request_timeout,
        };
        Ok((conn, report))
    }

    /// A connection to a database assumed migrated to `schema` (tools and tests; the store
    /// uses [`Conn::open`]).
    pub fn unmigrated(config: &StoreConfig, schema: Schema) -> Conn {
        Conn {
            client: admin_client(config).with_database(&config.database),
            schema,
            server_version: String::new(),
            user: config.user.clone(),
            timeout: config.request_timeout,
        }
    }

    /// A request that succeeds when the server answers and accepts our credentials.
    pub async fn ping(&self) -> Result<(), SinkError> {
        let q = self.client.query("SELECT 1").execute();
        match tokio::time::timeout(self.timeout, q).await {
            Ok(r) => r.map_err(|e| self.err(&e)),
            Err(_) => Err(SinkError::new("no answer in time", false)),
        }
    }

    fn err(&self, e: &clickhouse::error::Error) -> SinkError {
        SinkError::from_clickhouse(e, self.user.as_deref())
    }

    /// Inserts `batch` so that it is stored once, however often this is called for it;
    /// returns how many rows were written (0 when a check found them all stored already).
    pub async fn insert(&self, batch: &Batch) -> Result<usize, SinkError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let limit = self.timeout * 2 + Duration::from_millis(batch.len() as u64 / 50);
        let work = async {
            if batch.uncertain {
                let present = self.present(batch).await?;
                if present.len() >= batch.len() {
                    log::info!(
                        "batch {} was already stored: not inserting it again",
                        batch.token
                    );
                    return Ok(0);
                }
                if !present.is_empty() {
                    log::warn!(
                        "batch {}: {} of {} rows already stored: inserting the rest",
                        batch.token,
                        present.len(),
                        batch.len()
                    );
                    let rest = batch.without(&present);
                    return self.write(&rest).await.map(|()| rest.len());
                }
            }
            self.write(batch).await.map(|()| batch.len())
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(SinkError::new("no answer in time", true)))
    }

    /// The `seq`s of `batch`'s rows already in the table.
    async fn present(&self, batch: &Batch) -> Result<HashSet<u64>, SinkError> {
        let keys = batch.keys();
        let (lo, hi) = batch.seq_range();
        let t0 = keys.iter().map(|k| k.1.secs).min().unwrap_or(0);
        let t1 = keys.iter().map(|k| k.1.secs).max().unwrap_or(0) + 1;
        let table = batch.table();
        let sql = format!(
            "SELECT seq FROM {} WHERE host = ? AND run_id = ? AND seq >= ? AND seq <= ? \
             AND {time} >= toDateTime(?) AND {time} <= toDateTime(?)",
            self.schema.table(table),
            time = table.time_column(),
        );
        let seqs: Vec<u64> = self
            .client
            .query(&sql)
            .bind(batch.host().unwrap_or_default())
            .bind(batch.run_id)
            .bind(lo)
            .bind(hi)
            .bind(t0)
            .bind(t1)
            .fetch_all()
            .await
            .map_err(|e| self.err(&e))?;
        Ok(seqs.into_iter().collect())
    }

    async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        // Unqualified: the client names the database, and the crate quotes the whole name.
        let table = batch.table().name();
        let modern = self.schema.dialect == Dialect::Modern;
        let client = if modern {
            // Honoured by the table's non_replicated_deduplication_window (or replication).
            self.client
                .clone()
                .with_setting("insert_deduplication_token", &batch.token)
        } else {
            self.client.clone()
        };
        // Each table's rows, in the wire layout of the database's dialect.
        macro_rules! write_as {
            ($wire:ident, $rows:expr) => {
                write_rows::<$wire<'static>, _>(&client, table, $rows.iter().map($wire::new)).await
            };
        }
        let r = match (&batch.rows, modern) {
            (Rows::Events(r), false) => write_as!(LegacyEvent, r),
            (Rows::Events(r), true) => write_as!(ModernEvent, r),
            (Rows::Losses(r), false) => write_as!(LegacyLoss, r),
            (Rows::Losses(r), true) => write_as!(ModernLoss, r),
            (Rows::Agents(r), false) => write_as!(LegacyAgent, r),
            (Rows::Agents(r), true) => write_as!(ModernAgent, r),
        };
        r.map_err(|e| self.err(&e))
    }
}

/// One `INSERT INTO table (columns of T) FORMAT RowBinary` with every row of `rows`.
async fn write_rows<'r, T, I>(
    client: &Client,
    table: &str,
    rows: I,
) -> clickhouse::error::Result<()>
where
    T: RowWrite,
    I: Iterator<Item = <T as clickhouse::Row>::Value<'r>>,
{
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(&row).await?;
    }
    insert.end().await
}

/// Messages to the writer besides batches.
pub(crate) enum Control {
    /// Flush or spool everything, write a clean checkpoint, answer, and stop.
    Shutdown(oneshot::Sender<ShutdownReport>),
}

/// Delays between attempts while ClickHouse fails: 250 ms doubling up to `max`, each wait
/// drawn at random between half the delay and the whole of it ("equal jitter"), so that the
/// daemons of many hosts, cut off by the same outage, do not come back in step.
struct Backoff {
    delay: Duration,
    max: Duration,
    next: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);

    fn new(max: Duration) -> Self {
        Self {
            delay: Self::FIRST,
            max,
            next: None,
        }
    }

    fn failed(&mut self) {
        self.next = Some(Instant::now() + jittered(self.delay, random_u64()));
        self.delay = (self.delay * 2).min(self.max);
    }

    fn succeeded(&mut self) {
        self.delay = Self::FIRST;
        self.next = None;
    }

    fn due(&self) -> bool {
        self.next.is_none_or(|t| Instant::now() >= t)
    }
}

/// A wait between half of `delay` and all of it, chosen by `random`.
fn jittered(delay: Duration, random: u64) -> Duration {
    let half = delay / 2;
    let span = u64::try_from((delay - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random % span.saturating_add(1))
}

/// A random 64-bit number from the kernel: a run id, a backoff's jitter.
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most `buf.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 8 {
        return u64::from_le_bytes(buf);
    }
    // No getrandom (very old kernel): time and pid are unique enough per host.
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64;
    t ^ (u64::from(std::process::id()) << 48)
}

/// The writer task.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    batches: mpsc::Receiver<Batch>,
    control: mpsc::Receiver<Control>,
    conn: Option<Conn>,
    /// Whether the last request to ClickHouse succeeded.
    healthy: bool,
    backoff: Backoff,
    /// The last failure logged, and when (repeats are logged every 30 s only).
    last_error: Option<(String, Instant)>,
    /// When retention was last applied.
    retention_at: Option<Instant>,
    /// A control message (or the handle's end, `Some(None)`) that arrived during a request,
    /// which it cut short.
    stopping: Option<Option<Control>>,
    /// The spooled batch the server rejected as bad data, and how many times in a row.
    rejected: Option<(u64, u32)>,
    /// The spool's lock, held as long as the writer runs (also when a crash in a test leaks the
    /// handle: dropping the runtime drops the writer).
    _claim: SpoolClaim,
}

/// Times the server may reject a spooled batch as bad data before it is set aside.
const REJECTIONS_BEFORE_DEAD_LETTER: u32 = 3;

/// Runs `fut`; when a control message arrives meanwhile, it is kept in `stopping` and `fut` gets
/// `grace` more to finish, after which it is dropped (a request in flight is abandoned) and the
/// result is `None`. Once stopping, nothing new starts.
async fn interruptible<T>(
    control: &mut mpsc::Receiver<Control>,
    stopping: &mut Option<Option<Control>>,
    grace: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    if stopping.is_some() {
        return None;
    }
    tokio::pin!(fut);
    tokio::select! {
        biased;
        r = &mut fut => Some(r),
        c = control.recv() => {
            *stopping = Some(c);
            tokio::time::timeout(grace, fut).await.ok()
        }
    }
}

const TICK: Duration = Duration::from_millis(250);
const REPEAT_LOG: Duration = Duration::from_secs(30);
const PROGRESS_LOG: Duration = Duration::from_secs(2);
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Rows per insert when replaying the spool (small batches are merged up to this).
const REPLAY_ROWS: usize = 100_000;

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        batches: mpsc::Receiver<Batch>,
        control: mpsc::Receiver<Control>,
        claim: SpoolClaim,
    ) -> Self {
        let retry_max = shared.config.retry_max;
        Self {
            shared,
            batches,
            control,
            conn: None,
            healthy: false,
            backoff: Backoff::new(retry_max),
            last_error: None,
            retention_at: None,
            stopping: None,
            rejected: None,
            _claim: claim,
        }
    }

    /// [`Shared::stored`], off the event loop.
    async fn stored(&self, batch: Batch, written: usize) {
        blocking(&self.shared, move |s| s.stored(&batch, written)).await;
    }

    /// [`Shared::spool_batch`], off the event loop.
    async fn spool_batch(&self, batch: Batch) {
        blocking(&self.shared, move |s| s.spool_batch(batch)).await;
    }

    async fn checkpoint(&self, clean: bool) {
        blocking(&self.shared, move |s| {
            let _ = s.checkpoint(clean);
        })
        .await;
    }

    pub async fn run(mut self) {
        let period = TICK.min(self.shared.config.batch_interval);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.connect().await;
        loop {
            if let Some(c) = self.stopping.take() {
                self.stop(c).await;
                return;
            }
            tokio::select! {
                biased;
                c = self.control.recv() => {
                    self.stop(c).await;
                    return;
                }
                b = self.batches.recv() => match b {
                    Some(b) => self.deliver(b).await,
                    None => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    async fn stop(&mut self, c: Option<Control>) {
        match c {
            Some(Control::Shutdown(reply)) => {
                let report = self.shutdown().await;
                let _ = reply.send(report);
            }
            None => {
                self.shutdown().await;
            }
        }
    }

    async fn on_tick(&mut self) {
        for b in self.shared.cut_due(false) {
            self.deliver(b).await;
        }
        self.checkpoint(false).await;
        if self.backoff.due() && (self.conn.is_none() || !self.healthy || !self.spool_empty()) {
            self.recover().await;
        }
        if self.conn.is_some()
            && self.healthy
            && self
                .retention_at
                .is_none_or(|t| t.elapsed() >= RETENTION_EVERY)
        {
            self.retention_at = Some(Instant::now());
            if let Some(conn) = &self.conn {
                if let Err(e) = migrate::apply_retention(&conn.client, &conn.schema).await {
                    log::warn!("retention: {e}");
                }
            }
        }
    }

    /// Inserts `batch` on the connection, unless a shutdown cuts it short (then the insert
    /// may have landed: the error is uncertain). `None` without a connection.
    async fn insert(&mut self, batch: &Batch) -> Option<Result<usize, SinkError>> {
        let conn = self.conn.as_ref()?;
        let r = interruptible(
            &mut self.control,
            &mut self.stopping,
            self.shared.config.shutdown_timeout,
            conn.insert(batch),
        )
        .await;
        Some(r.unwrap_or_else(|| Err(SinkError::new("cut short by the shutdown", true))))
    }

    fn spool_empty(&self) -> bool {
        self.shared.gauge().is_empty()
    }

    /// Inserts a new batch, or spools it when ClickHouse is failing or older batches wait.
    async fn deliver(&mut self, batch: Batch) {
        if self.conn.is_some() && self.healthy && self.spool_empty() {
            let Some(r) = self.insert(&batch).await else {
                return;
            };
            match r {
                Ok(n) => {
                    self.succeeded();
                    self.stored(batch, n).await;
                    return;
                }
                Err(e) => {
                    if self.stopping.is_none() {
                        self.failed(&e);
                    }
                    let mut batch = batch;
                    batch.uncertain |= e.uncertain;
                    self.spool_batch(batch).await;
                    return;
                }
            }
        }
        // Behind the spooled batches, to keep the order; but while ClickHouse works, a batch
        // the full spool cannot take is inserted rather than dropped.
        let back = blocking(&self.shared, move |s| s.try_spool_batch(batch)).await;
        let Some(batch) = back else {
            if self.healthy && self.backoff.due() {
                self.recover().await;
            }
            return;
        };
        let direct = match (&self.conn, self.healthy) {
            (Some(conn), true) => {
                let grace = self.shared.config.shutdown_timeout;
                interruptible(
                    &mut self.control,
                    &mut self.stopping,
                    grace,
                    conn.insert(&batch),
                )
                .await
            }
            _ => None,
        };
        match direct {
            Some(Ok(n)) => self.stored(batch, n).await,
            Some(Err(e)) => {
                self.failed(&e);
                self.spool_batch(batch).await;
            }
            None => self.spool_batch(batch).await,
        }
    }

    /// Connects (and migrates) when not connected yet; true when connected.
    async fn connect(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        let opened = interruptible(
            &mut self.control,
            &mut self.stopping,
            self.shared.config.shutdown_timeout,
            Conn::open(&self.shared.config),
        )
        .await;
        let Some(opened) = opened else { return false };
        match opened {
            Ok((conn, report)) => {
                log::info!(
                    "ClickHouse {} ({}, {} dialect): database `{}` at schema version {}{}",
                    self.shared.config.display_url(),
                    report.server_version,
                    report.schema.dialect.as_str(),
                    report.schema.database,
                    report.version,
                    if report.applied.is_empty() {
                        String::new()
                    } else {
                        format!(" (applied {:?})", report.applied)
                    }
                );
                self.conn = Some(conn);
                self.succeeded();
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// Reconnects if needed and replays the spool, oldest batch first, until it is empty or an
    /// insert fails.
    async fn recover(&mut self) {
        if !self.connect().await {
            return;
        }
        if !self.healthy {
            // Probe before replaying, so that an outage logs one line, not one per attempt.
            let Some(conn) = &self.conn else { return };
            let Some(probe) = interruptible(
                &mut self.control,
                &mut self.stopping,
                self.shared.config.shutdown_timeout,
                conn.ping(),
            )
            .await
            else {
                return;
            };
            match probe {
                Ok(()) => self.succeeded(),
                Err(e) => {
                    self.failed(&e);
                    return;
                }
            }
        }
        let (batches, rows) = (self.shared.gauge().batches(), self.shared.gauge().rows());
        if batches == 0 {
            self.shared.flush_dropped();
            return;
        }
        log::info!(
            "ClickHouse {}: replaying the spool: {batches} batches, {rows} rows",
            self.shared.config.display_url()
        );
        let started = Instant::now();
        let mut last_log = Instant::now();
        let (mut done_batches, mut done_rows) = (0usize, 0u64);
        loop {
            if self.stopping.is_some() || !self.control.is_empty() {
                // Shutting down: what is left stays spooled for the next start.
                return;
            }
            // Many small spooled batches (an outage at a low rate) replay as few large inserts;
            // a batch the server rejected is tried alone, to know which one is at fault.
            let most = match self.rejected {
                Some(_) => 1,
                None => self.shared.config.batch_rows.max(REPLAY_ROWS),
            };
            // Reading and parsing the files is disk work: off the event loop.
            let (group, parts) = blocking(&self.shared, move |s| {
                let group = s.spool().front_group(most);
                let mut parts = Vec::with_capacity(group.len());
                for entry in &group {
                    let read = s.spool().read(entry);
                    match read {
                        Ok(b) => parts.push(b),
                        Err(e) if parts.is_empty() => {
                            log::error!("spool: {e}: moving it aside");
                            s.spool_quarantine(entry);
                            break;
                        }
                        // Replay what came before it; it is dealt with as the next group's first.
                        Err(_) => break,
                    }
                }
                (group, parts)
            })
            .await;
            let Some(first) = group.first().cloned() else {
                break;
            };
            if parts.is_empty() {
                continue;
            }
            let n = parts.len();
            let batch = Batch::merge(parts);
            let Some(r) = self.insert(&batch).await else {
                return;
            };
            match r {
                Ok(written) => {
                    self.succeeded();
                    self.rejected = None;
                    let path = first.path.clone();
                    blocking(&self.shared, move |s| {
                        for _ in 0..n {
                            if let Err(e) = s.spool().pop_front() {
                                log::error!("spool: cannot remove {}: {e}", path.display());
                            }
                        }
                    })
                    .await;
                    self.shared.replayed(&batch, written);
                    done_batches += n;
                    done_rows += batch.len() as u64;
                }
                Err(e) if e.rejected && self.stopping.is_none() => {
                    // The server answered: it is up, the data is what it refuses.
                    self.succeeded();
                    let tries = match self.rejected {
                        Some((id, t)) if id == first.id && n == 1 => t + 1,
                        _ if n == 1 => 1,
                        // A merged group: its batches are tried one by one from now on.
                        _ => 0,
                    };
                    self.rejected = Some((first.id, tries));
                    if tries >= REJECTIONS_BEFORE_DEAD_LETTER {
                        self.rejected = None;
                        let why = e.message.clone();
                        blocking(&self.shared, move |s| s.dead_letter_front(&why, tries)).await;
                    } else if tries > 0 {
                        log::warn!(
                            "ClickHouse rejected a spooled batch ({}), try {tries} of \
                             {REJECTIONS_BEFORE_DEAD_LETTER}",
                            e.message
                        );
                        // A pause before the next try: the server may be at fault after all.
                        tokio::time::sleep(Backoff::FIRST).await;
                    }
                }
                Err(e) => {
                    if e.uncertain {
                        blocking(&self.shared, move |s| s.spool().mark_front_uncertain(n)).await;
                    }
                    if self.stopping.is_some() {
                        return;
                    }
                    self.failed(&e);
                    log::warn!(
                        "spool replay paused after {done_batches} batches ({done_rows} rows): {}",
                        e.message
                    );
                    return;
                }
            }
            if last_log.elapsed() >= PROGRESS_LOG {
                last_log = Instant::now();
                let g = self.shared.gauge();
                log::info!(
                    "spool replay: {done_batches} batches, {done_rows} rows sent; {} batches, \
                     {} rows left ({:.0} rows/s)",
                    g.batches(),
                    g.rows(),
                    done_rows as f64 / started.elapsed().as_secs_f64().max(1e-3)
                );
            }
            tokio::task::yield_now().await;
        }
        log::info!(
            "spool replay done: {done_batches} batches, {done_rows} rows in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        self.checkpoint(false).await;
        self.shared.flush_dropped();
    }

    fn succeeded(&mut self) {
        if !self.healthy {
            if let Some((msg, _)) = self.last_error.take() {
                log::info!(
                    "ClickHouse {} is answering again (it failed with: {msg})",
                    self.shared.config.display_url()
                );
            }
        }
        self.healthy = true;
        self.backoff.succeeded();
        self.shared.set_healthy(true);
        self.shared.set_last_error(None);
    }

    fn failed(&mut self, e: &SinkError) {
        self.healthy = false;
        self.backoff.failed();
        self.shared.set_healthy(false);
        self.shared.set_last_error(Some(e.message.clone()));
        self.shared.count_error();
        let repeat = matches!(&self.last_error, Some((m, at)) if *m == e.message && at.elapsed() < REPEAT_LOG);
        if !repeat {
            log::error!(
                "ClickHouse {}: {}; keeping events in the spool at {} and retrying",
                self.shared.config.display_url(),
                e.message,
                self.shared.config.spool_dir.display()
            );
            self.last_error = Some((e.message.clone(), Instant::now()));
        }
    }

    /// Final flush: pending rows and queued batches are inserted if ClickHouse works and
    /// nothing is spooled, else spooled; bounded by `shutdown_timeout`.
    async fn shutdown(&mut self) -> ShutdownReport {
        let deadline = Instant::now() + self.shared.config.shutdown_timeout;
        // The batches the spooler still holds are spooled before the clean checkpoint.
        let (done, flushed) = oneshot::channel();
        if self
            .shared
            .overflow
            .send(Overflow::Flush(done))
            .await
            .is_ok()
        {
            let _ = flushed.await;
        }
        self.batches.close();
        let mut queued = Vec::new();
        while let Ok(b) = self.batches.try_recv() {
            queued.push(b);
        }
        queued.extend(self.shared.cut_due(true));
        for b in queued {
            let direct = self.conn.is_some()
                && self.healthy
                && self.spool_empty()
                && Instant::now() < deadline;
            if direct {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let r = match &self.conn {
                    Some(conn) => tokio::time::timeout(remaining, conn.insert(&b))
                        .await
                        .unwrap_or_else(|_| Err(SinkError::new("no answer in time", true))),
                    None => continue,
                };
                match r {
                    Ok(n) => {
                        self.stored(b, n).await;
                        continue;
                    }
                    Err(e) => {
                        self.failed(&e);
                        let mut b = b;
                        b.uncertain |= e.uncertain;
                        self.spool_batch(b).await;
                        continue;
                    }
                }
            }
            self.spool_batch(b).await;
        }
        // Dropped-event counts not yet written become a loss row, spooled if need be.
        if let Some(b) = self.shared.take_dropped_batch() {
            let stored = match (&self.conn, self.healthy && Instant::now() < deadline) {
                (Some(conn), true) => conn.insert(&b).await.is_ok(),
                _ => false,
            };
            if !stored {
                self.spool_batch(b).await;
            }
        }
        self.checkpoint(true).await;
        self.shared.report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_waits_are_jittered_within_half_to_whole_delay() {
        let d = Duration::from_millis(250);
        assert_eq!(jittered(d, 0), d / 2);
        assert_eq!(
            jittered(d, u64::MAX),
            d / 2 + Duration::from_nanos(u64::MAX % 125_000_001)
        );
        let waits: HashSet<Duration> = (0..32).map(|_| jittered(d, random_u64())).collect();
        assert!(waits.iter().all(|w| *w >= d / 2 && *w <= d), "{waits:?}");
        // 32 draws over 125 ms of nanoseconds: equal draws would mean no jitter at all.
        assert!(waits.len() > 1, "every wait was the same: {waits:?}");
    }

    #[test]
    fn backoff_doubles_up_to_its_max_and_resets_on_success() {
        let mut b = Backoff::new(Duration::from_secs(1));
        assert!(b.due(), "nothing failed yet");
        let start = Instant::now();
        b.failed();
        let next = b.next.expect("a failure schedules the next attempt");
        assert!(next >= start + Backoff::FIRST / 2, "{:?}", next - start);
        assert_eq!(b.delay, Backoff::FIRST * 2);
        for _ in 0..5 {
            b.failed();
        }
        assert_eq!(b.delay, Duration::from_secs(1));
        b.succeeded();
        assert!(b.due());
        assert_eq!(b.delay, Backoff::FIRST);
    }
}
