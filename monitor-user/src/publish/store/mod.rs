//! The ClickHouse store: every decided event, every coverage gap and a heartbeat per host, kept
//! in ClickHouse with nothing lost and nothing doubled across outages, retries and crashes.
//!
//! ```text
//! StoreHandle::send(&[Event]) ──> pending rows ──(batch_rows or batch_interval)──> batch
//!      (seq numbers here)                                                            │
//!            channel full? ──────────────────────────> spool (disk) <── insert failed │
//!                                                        │   ▲                       ▼
//!                                       replay, oldest first │        writer task ─> INSERT ... FORMAT RowBinary
//! ```
//! * [`config`]: URL, database, credentials (file or environment, never argv), limits.
//! * [`client`]: the HTTP client, and what its errors mean for a user.
//! * [`schema`] and [`migrate`]: versioned DDL for 18.16 and for current servers.
//! * [`row`]: the rows, neutral (what the spool keeps) and per dialect (what is sent).
//! * [`batch`]: rows of one table inserted (and spooled) together, under one token.
//! * [`sink`]: inserts, the idempotency check, and the writer task.
//! * `shared`: what the handle, the writer and the spooler share (pending rows, the spool,
//!   the ledger behind the checkpoint, the counters).
//! * [`spool`]: the bounded on-disk queue, its lock and the checkpoint.
//! * [`queries`]: the queries nhiscope ships, for both dialects.
//! * [`read`]: what `nhiscope query`, `scope suggest` and the dashboard read, as plain records.
//!
//! # Nothing doubled
//! Every row carries its identity `(host, run_id, seq)`: `run_id` is random per store start,
//! `seq` numbers the rows of that run. Three layers keep a row from being stored twice:
//! 1. A batch whose earlier attempt may have reached the server (a timeout, a connection lost
//!    mid-request, a server error, a batch restored from the spool of a dead process) is
//!    *uncertain*; before inserting it again the sink selects the `seq`s of its range and
//!    inserts only the missing rows. This works on 18.16 and makes retries exact in the
//!    common case, without `FINAL`.
//! 2. On current servers the insert carries `insert_deduplication_token` (the batch's token,
//!    the same on every retry) and the tables have `non_replicated_deduplication_window`, so
//!    the server itself drops a repeated batch. Replicated tables (`--cluster`) deduplicate
//!    repeated blocks on 18.16 too, since a plain retry sends identical rows (not tested here:
//!    that needs ZooKeeper).
//! 3. All tables are `ReplacingMergeTree` sorted by a key that ends with `(run_id, seq)`: if
//!    a copy slips through anyway (a check racing an insert the server was still writing),
//!    merges remove it, and `FINAL` hides it until then.
//!
//! # Nothing lost
//! A batch leaves memory only into ClickHouse or into the spool (`fsync`ed, renamed into
//! place). When the spool is full, the events that do not fit are counted and written as a
//! `spool_full` loss row. A checkpoint (`state.json`) records what was accepted and what was
//! made durable; after a crash, the next start writes the difference as an `unclean_stop` loss
//! row covering the time the agent was down. A batch the server rejects as bad data, try
//! after try, is moved to the spool's `deadletter/` with a `rejected_by_server` loss row, so
//! that it does not hold up the batches behind it; a batch file or checkpoint that cannot be
//! read back at start is moved to `corrupt/` with a loss row too.
//!
//! # Never in the way of the event loop
//! The daemon's loop calls [`StoreHandle::send`], which only takes short locks on memory. Every
//! file operation (spool writes and their `fsync`s, checkpoints, reading spooled batches back)
//! runs on tokio's blocking pool ([`blocking`]); when the writer cannot take a batch at once, a
//! spooler task writes it to the spool; when even that falls behind, the batch is counted as
//! dropped (a `spool_full` loss row) rather than making the loop wait. The store's counters are
//! read from atomics ([`SpoolGauge`]), never through the spool's lock, which a write may hold
//! for the length of an `fsync`.

pub mod batch;
pub mod client;
pub mod config;
pub mod migrate;
pub mod queries;
pub mod read;
pub mod row;
pub mod schema;
mod shared;
pub mod sink;
pub mod spool;
pub mod tls;

#[cfg(test)]
mod tests;

use std::{path::PathBuf, sync::Arc, time::SystemTime};

use tokio::sync::{mpsc, oneshot};

pub use config::{ConfigError, StoreConfig};
use row::Ts;
use shared::{blocking, Overflow, Shared};
pub use shared::{ShutdownReport, StoreStats};
use sink::{random_u64, Control, Writer};
use spool::Spool;
pub use spool::{SpoolClaim, SPOOL_LOCK};

use crate::{
    domain::event::Event,
    publish::files::{FileError, Owner},
};

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The configuration is unusable (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spool directory is not the daemon's own, or another daemon uses it (exit code 2).
    #[error(transparent)]
    Files(#[from] FileError),
    /// The spool directory cannot be used (exit code 2: the user must fix a path or a mount).
    #[error("spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store must be started inside a tokio runtime.
    #[error("the store needs a tokio runtime")]
    NoRuntime,
    /// The writer task ended before answering (it panicked).
    #[error("the store's writer task stopped unexpectedly")]
    WriterGone,
    /// ClickHouse failed (for `db migrate`, which has no spool to fall back on).
    #[error("ClickHouse {url}: {message}")]
    Server { url: String, message: String },
}

impl StoreError {
    /// The process exit code for this error when it happens at start.
    pub fn exit_code(&self) -> u8 {
        match self {
            StoreError::Config(_) | StoreError::Files(_) | StoreError::Spool { .. } => 2,
            StoreError::NoRuntime | StoreError::WriterGone | StoreError::Server { .. } => 1,
        }
    }
}

/// A coverage gap to record (see [`StoreHandle::record_loss`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Loss {
    pub start: SystemTime,
    pub end: SystemTime,
    pub count: u64,
    /// A stable name: `ringbuf_full_open`, `decode_error`, ...
    pub cause: String,
    /// A sentence for a person.
    pub reason: String,
}

/// Starts stores.
pub struct Store;

impl Store {
    /// Makes sure the spool directory is `owner`'s own (created 0700, or refused when another
    /// user owns it or others may write there) and locks it, so that a second daemon on it
    /// stops with the first one's pid instead of sharing its files. The daemon claims before it
    /// drops privileges, and starts the store after.
    pub fn claim(config: &StoreConfig, owner: Owner) -> Result<SpoolClaim, StoreError> {
        Ok(SpoolClaim::acquire(&config.spool_dir, owner)?)
    }

    /// [`Store::claim`]s the spool as the current user and starts the store on it.
    pub fn start(config: StoreConfig, host: impl Into<String>) -> Result<StoreHandle, StoreError> {
        config.validate()?;
        let claim = Self::claim(&config, Owner::current())?;
        Self::start_claimed(config, host, claim)
    }

    /// Opens the claimed spool, writes the loss rows of an earlier unclean stop and of what
    /// could not be read back, and spawns the writer task (which connects, migrates and
    /// replays the spool in the background: an unreachable server is not an error here). Must
    /// be called inside a tokio runtime. `host` is written on heartbeats and loss rows (events
    /// carry their own).
    pub fn start_claimed(
        config: StoreConfig,
        host: impl Into<String>,
        claim: SpoolClaim,
    ) -> Result<StoreHandle, StoreError> {
        config.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        let host = host.into();
        let spool_dir = config.spool_dir.clone();
        let spool_err = |source| StoreError::Spool {
            path: spool_dir.clone(),
            source,
        };
        log::debug!(
            "spool {}: locked ({})",
            spool_dir.display(),
            claim.lock_path().display()
        );
        let mut spool =
            Spool::open(&config.spool_dir, config.spool_max_bytes).map_err(spool_err)?;
        if !spool.is_empty() {
            log::info!(
                "spool {}: {} batches ({} rows, {} bytes) from an earlier run wait for ClickHouse",
                config.spool_dir.display(),
                spool.len(),
                spool.rows(),
                spool.bytes()
            );
        }
        let previous = spool.read_state();
        let unreadable = spool.take_unreadable();
        let run_id = random_u64();
        let started = Ts::now();
        let (batch_tx, batch_rx) = mpsc::channel(BATCH_QUEUE);
        let (overflow_tx, overflow_rx) = mpsc::channel(OVERFLOW_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared::new(
            host.clone(),
            run_id,
            started,
            config,
            spool,
            batch_tx,
            overflow_tx,
        ));
        shared.unreadable_at_start(previous.as_ref().err(), &unreadable);
        if let Ok(Some(prev)) = previous {
            shared.recover_previous(prev);
        }
        shared.checkpoint(true).map_err(spool_err)?;
        rt.spawn(spooler(Arc::clone(&shared), overflow_rx));
        let writer = Writer::new(Arc::clone(&shared), batch_rx, control_rx, claim);
        let task = rt.spawn(writer.run());
        Ok(StoreHandle {
            shared,
            control: control_tx,
            task: Some(task),
        })
    }
}

/// `nhiscope db migrate`: the configuration from the config `file`, the `--clickhouse` URL,
/// `--cluster` and the environment; then the schema, applied. Returns a summary line.
pub fn db_migrate(
    file: Option<&std::path::Path>,
    url: Option<&str>,
    cluster: Option<&str>,
) -> Result<String, StoreError> {
    let env = |k: &str| std::env::var(k).ok();
    let config = StoreConfig::load(file, url, cluster, &env)?.ok_or_else(|| {
        ConfigError::Value(
            "no ClickHouse URL: give --clickhouse URL or `url:` in --clickhouse-config".into(),
        )
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Server {
            url: config.display_url(),
            message: format!("cannot start a runtime: {e}"),
        })?;
    let (_, report) = rt
        .block_on(sink::Conn::open(&config))
        .map_err(|e| StoreError::Server {
            url: config.display_url(),
            message: e.message,
        })?;
    let applied = if report.applied.is_empty() {
        "nothing to apply".to_owned()
    } else {
        format!(
            "applied {}",
            report
                .applied
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Ok(format!(
        "{}: database `{}` at schema version {} ({} dialect, ClickHouse {}): {applied}",
        config.display_url(),
        report.schema.database,
        report.version,
        report.schema.dialect.as_str(),
        report.server_version
    ))
}

/// Batches that may wait for the writer before they go to the spooler.
const BATCH_QUEUE: usize = 4;
/// Batches that may wait for the spooler before new ones are dropped (and counted): with
/// `BATCH_QUEUE`, the bound on the memory a stalled store holds.
const OVERFLOW_QUEUE: usize = 8;

/// Writes the batches the writer could not take to the spool, one at a time, on the blocking
/// pool.
async fn spooler(shared: Arc<Shared>, mut jobs: mpsc::Receiver<Overflow>) {
    while let Some(job) = jobs.recv().await {
        match job {
            Overflow::Batch(b) => blocking(&shared, move |s| s.spool_batch(b)).await,
            Overflow::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// The daemon's side of a running store. Dropping it without [`StoreHandle::shutdown`] makes
/// the writer flush (or spool) and stop in the background, if the runtime lives long enough; a
/// crash loses what is in memory, and the next start writes it as an `unclean_stop` loss row.
pub struct StoreHandle {
    shared: Arc<Shared>,
    control: mpsc::Sender<Control>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StoreHandle {
    /// Hands events to the store. Never blocks on ClickHouse and never drops: rows wait in
    /// memory until a batch is full or old enough; a batch the writer cannot take at once is
    /// written to the spool right here. `loss` events also become rows of `losses`, covering
    /// the time since the previous loss event of the same cause.
    pub fn send(&self, events: &[Event]) {
        self.send_owned(&mut events.to_vec());
    }

    /// [`StoreHandle::send`] taking the events (`events` is left empty): their strings move
    /// into the rows instead of being copied.
    pub fn send_owned(&self, events: &mut Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let cut = self.shared.accept(events.drain(..));
        for b in cut {
            self.shared.dispatch(b);
        }
    }

    /// Records a coverage gap that did not come as a `loss` event.
    pub fn record_loss(&self, loss: Loss) {
        self.shared.record_loss(
            Ts::from_system(loss.start),
            Ts::from_system(loss.end),
            loss.count,
            loss.cause,
            loss.reason,
        );
    }

    /// Writes a heartbeat row for this host with the daemon's `counters` and the store's own
    /// (`store_*`). Call it every few seconds.
    pub fn heartbeat(&self, counters: &[(&str, u64)]) {
        self.shared.heartbeat(counters);
    }

    /// The store's counters now.
    pub fn stats(&self) -> StoreStats {
        self.shared.stats()
    }

    /// Why the last request to ClickHouse failed, while it is failing.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error()
    }

    /// This store's run id (the `run_id` column of its rows).
    pub fn run_id(&self) -> u64 {
        self.shared.run_id()
    }

    /// Inserts what is in memory (or spools it when ClickHouse is failing, or when the
    /// shutdown timeout is reached), writes a clean checkpoint, and stops the writer.
    pub async fn shutdown(mut self) -> Result<ShutdownReport, StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_err() {
            return Err(StoreError::WriterGone);
        }
        let report = rx.await.map_err(|_| StoreError::WriterGone)?;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(report)
    }
}
