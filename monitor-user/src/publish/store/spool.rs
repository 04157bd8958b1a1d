//! The on-disk spool: where batches wait while ClickHouse is away, bounded in bytes, replayed
//! oldest first, and kept across restarts and `SIGKILL`.
//!
//! Layout of the spool directory:
//! ```text
//! batches/0000000000000042.events.batch   one batch per file: a JSON header line, then one
//!                                         JSON row per line; named by a counter, so the names'
//!                                         order is the replay order
//! batches/*.tmp                           a batch being written (removed at open)
//! corrupt/                                files that could not be read back (kept for a look)
//! deadletter/                             batches the server rejected as bad data, again and
//!                                         again (kept for a look; a loss row says so)
//! state.json                              the store's checkpoint (see [`State`])
//! lock                                    the pid of the daemon using this spool (`flock`ed)
//! ```
//! A batch file or checkpoint appears whole or not at all: it is written under a `.tmp` name,
//! `fsync`ed, renamed, and the directory `fsync`ed, so neither a crash nor a power cut leaves
//! half of one. What cannot be read back at start is moved aside and reported (see
//! [`Spool::take_unreadable`] and [`Spool::read_state`]): the store turns it into a loss row.
//!
//! Batches restored from an earlier process are replayed as *uncertain*: that process may have
//! inserted one and died before removing its file, so the sink checks before inserting it again.

use std::{
    collections::VecDeque,
    fs::{self, File},
    io::{self, BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    batch::{Batch, Rows},
    row::Ts,
    schema::Table,
};
use crate::publish::files::{self, FileError, Owner, PidLock};

const HEADER_VERSION: u32 = 1;

/// The lock file in a spool directory: it holds the pid of the daemon using the spool.
pub const SPOOL_LOCK: &str = "lock";

/// A spool directory checked and locked for one store (see [`super::Store::claim`]); the lock
/// is released when the store's writer stops.
#[derive(Debug)]
pub struct SpoolClaim {
    lock: PidLock,
}

impl SpoolClaim {
    /// Makes sure `dir` is `owner`'s own (created 0700, or refused when another user owns it or
    /// others may write there) and locks it.
    pub(super) fn acquire(dir: &Path, owner: Owner) -> Result<SpoolClaim, FileError> {
        let lock_path = dir.join(SPOOL_LOCK);
        // Another daemon's lock is the clearest reason to stop, so it is looked at first (its
        // spool may well belong to another user); the checks follow, before anything is used.
        let early = fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir())
            .then(|| PidLock::acquire("spool directory", dir, &lock_path))
            .transpose()?;
        files::private_dir("spool directory", dir, owner)?;
        let lock = match early {
            Some(l) => l,
            None => PidLock::acquire("spool directory", dir, &lock_path)?,
        };
        Ok(SpoolClaim { lock })
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }
}

/// The first line of a batch file.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    v: u32,
    table: Table,
    token: String,
    rows: usize,
    run_id: u64,
    first_seq: u64,
    last_seq: u64,
    /// The oldest row's time (absent in files of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oldest: Option<Ts>,
}

/// A batch file waiting in the spool.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub table: Table,
    pub rows: usize,
    pub run_id: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The oldest row's time, when known.
    pub oldest: Option<Ts>,
    /// Whether an attempt to insert it may have reached the server.
    pub uncertain: bool,
}

/// What became of a pushed batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// It did not fit under the bound and was not written.
    Full,
}

/// Why a spooled batch could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: not a batch file: {why}")]
    Corrupt { path: String, why: String },
}

/// The spool of one store.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    batches: PathBuf,
    max_bytes: u64,
    bytes: u64,
    rows: u64,
    queue: VecDeque<Entry>,
    next_id: u64,
    /// Batch files found unreadable by `open` and moved to `corrupt/`, not reported yet.
    unreadable: Vec<(PathBuf, String)>,
}

impl Spool {
    /// Opens (creating it if needed) the spool under `root`, bounded by `max_bytes`.
    pub fn open(root: &Path, max_bytes: u64) -> io::Result<Spool> {
        let batches = root.join("batches");
        fs::create_dir_all(&batches)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&batches)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if let Some(id) = name.split('.').next().and_then(|n| n.parse::<u64>().ok()) {
                found.push((id, path));
            }
        }
        found.sort();
        let mut spool = Spool {
            root: root.to_path_buf(),
            batches,
            max_bytes,
            bytes: 0,
            rows: 0,
            queue: VecDeque::new(),
            next_id: found.last().map_or(0, |(id, _)| id + 1),
            unreadable: Vec::new(),
        };
        for (id, path) in found {
            match read_header(&path) {
                Ok((header, bytes)) => {
                    spool.bytes += bytes;
                    spool.rows += header.rows as u64;
                    spool.queue.push_back(Entry {
                        id,
                        path,
                        bytes,
                        table: header.table,
                        rows: header.rows,
                        run_id: header.run_id,
                        first_seq: header.first_seq,
                        last_seq: header.last_seq,
                        oldest: header.oldest,
                        uncertain: true,
                    });
                }
                Err(e) => {
                    log::error!("spool: {e}: moving it aside");
                    let moved = spool.quarantine(&path);
                    spool.unreadable.push((moved, e.to_string()));
                }
            }
        }
        Ok(spool)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The batch files `open` could not read (where they were moved, and why), once.
    pub fn take_unreadable(&mut self) -> Vec<(PathBuf, String)> {
        std::mem::take(&mut self.unreadable)
    }

    /// Writes `batch` durably at the back of the queue, unless events or heartbeats would take
    /// the spool over its bound (loss rows always fit: they are what records that bound).
    pub fn push(&mut self, batch: &Batch) -> io::Result<Pushed> {
        let bytes = encode(batch)?;
        let exempt = batch.table() == Table::Losses;
        if !exempt && self.bytes + bytes.len() as u64 > self.max_bytes {
            return Ok(Pushed::Full);
        }
        #[cfg(test)]
        tests_slow::wait(&self.root);
        let id = self.next_id;
        let name = format!("{id:016}.{}.batch", batch.table().name());
        let path = self.batches.join(&name);
        let tmp = self.batches.join(format!("{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&self.batches)?.sync_all()?;
        self.next_id += 1;
        self.bytes += bytes.len() as u64;
        self.rows += batch.len() as u64;
        let (first_seq, last_seq) = batch.seq_range();
        self.queue.push_back(Entry {
            id,
            path,
            bytes: bytes.len() as u64,
            table: batch.table(),
            rows: batch.len(),
            run_id: batch.run_id,
            first_seq,
            last_seq,
            oldest: batch.oldest_ts(),
            uncertain: batch.uncertain,
        });
        Ok(Pushed::Stored)
    }

    /// The oldest batch.
    pub fn front(&self) -> Option<&Entry> {
        self.queue.front()
    }

    /// The oldest batches that replay as one insert: consecutive, of one table and one run, at
    /// most `max_rows` rows in all (but always the oldest batch, however large).
    pub fn front_group(&self, max_rows: usize) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        let mut rows = 0;
        for e in &self.queue {
            if let Some(first) = out.first() {
                if e.table != first.table || e.run_id != first.run_id || rows + e.rows > max_rows {
                    break;
                }
            }
            rows += e.rows;
            out.push(e.clone());
        }
        out
    }

    /// Marks the oldest `n` batches as possibly inserted (a replay had an unknown outcome).
    pub fn mark_front_uncertain(&mut self, n: usize) {
        for e in self.queue.iter_mut().take(n) {
            e.uncertain = true;
        }
    }

    /// Reads a batch back.
    pub fn read(&self, e: &Entry) -> Result<Batch, SpoolError> {
        let path = e.path.display().to_string();
        let corrupt = |why: String| SpoolError::Corrupt {
            path: path.clone(),
            why,
        };
        let f = File::open(&e.path).map_err(|source| SpoolError::Io {
            path: path.clone(),
            source,
        })?;
        let mut lines = BufReader::new(f).lines();
        let header: Header = match lines.next() {
            Some(Ok(l)) => serde_json::from_str(&l).map_err(|e| corrupt(e.to_string()))?,
            _ => return Err(corrupt("no header".into())),
        };
        if header.v != HEADER_VERSION {
            return Err(corrupt(format!("format version {}", header.v)));
        }
        let rows = lines.map(|l| l.map_err(|e| corrupt(e.to_string())));
        let rows = match header.table {
            Table::Events => Rows::Events(parse_rows(rows, &corrupt)?),
            Table::Losses => Rows::Losses(parse_rows(rows, &corrupt)?),
            Table::Agents => Rows::Agents(parse_rows(rows, &corrupt)?),
        };
        let batch = Batch {
            token: header.token,
            run_id: header.run_id,
            rows,
            uncertain: e.uncertain,
        };
        if batch.len() != header.rows {
            return Err(corrupt(format!(
                "{} rows, the header says {}",
                batch.len(),
                header.rows
            )));
        }
        Ok(batch)
    }

    /// Removes the oldest batch (it is stored in ClickHouse).
    pub fn pop_front(&mut self) -> io::Result<()> {
        if let Some(e) = self.queue.pop_front() {
            self.bytes -= e.bytes;
            self.rows -= e.rows as u64;
            match fs::remove_file(&e.path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves the oldest batch to `corrupt/` (it cannot be read back).
    pub fn quarantine_front(&mut self) -> Option<Entry> {
        let e = self.queue.pop_front()?;
        self.bytes -= e.bytes;
        self.rows -= e.rows as u64;
        self.quarantine(&e.path);
        Some(e)
    }

    /// Moves the oldest batch to `deadletter/` (the server keeps rejecting it as bad data);
    /// returns it with its new path.
    pub fn dead_letter_front(&mut self) -> Option<Entry> {
        let mut e = self.queue.pop_front()?;
        self.bytes -= e.bytes;
        self.rows -= e.rows as u64;
        e.path = self.move_aside(&e.path, "deadletter");
        Some(e)
    }

    fn quarantine(&self, path: &Path) -> PathBuf {
        self.move_aside(path, "corrupt")
    }

    /// Moves `path` into the subdirectory `to` of the spool; returns where it is now.
    fn move_aside(&self, path: &Path, to: &str) -> PathBuf {
        let dir = self.root.join(to);
        let dest = dir.join(path.file_name().unwrap_or_default());
        let moved = fs::create_dir_all(&dir)
            .and_then(|()| fs::rename(path, &dest))
            .and_then(|()| File::open(&dir)?.sync_all());
        match moved {
            Ok(()) => dest,
            Err(e) => {
                log::error!("spool: cannot move {} to {to}/: {e}", path.display());
                path.to_path_buf()
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of the batches waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rows of the batches waiting.
    /// The oldest time of any event row waiting here: the first event batch's (batches are
    /// spooled in order).
    pub fn oldest_event(&self) -> Option<Ts> {
        self.queue
            .iter()
            .find(|e| e.table == Table::Events)
            .and_then(|e| e.oldest)
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The event sequence ranges `[first, last]` of run `run_id` waiting here.
    pub fn event_ranges(&self, run_id: u64) -> Vec<(u64, u64)> {
        self.queue
            .iter()
            .filter(|e| e.table == Table::Events && e.run_id == run_id && e.rows > 0)
            .map(|e| (e.first_seq, e.last_seq))
            .collect()
    }

    /// The checkpoint an earlier store left, if any. One that cannot be read is moved to
    /// `corrupt/` and its error returned: what the previous run accounted for is then unknown,
    /// which the store must say rather than start as if nothing had happened.
    pub fn read_state(&self) -> Result<Option<State>, String> {
        let path = self.root.join("state.json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            let moved = self.quarantine(&path);
            format!("{}: {e} (moved to {})", path.display(), moved.display())
        })
    }

    /// Replaces the checkpoint atomically and durably: the file and the directory are
    /// `fsync`ed, so that after a power cut the checkpoint is the last one written, not an
    /// empty file or an older one.
    pub fn write_state(&self, state: &State) -> io::Result<()> {
        let path = self.root.join("state.json");
        let tmp = self.root.join("state.json.tmp");
        {
            let mut f = File::create(&tmp)?;
            serde_json::to_writer(&mut f, state)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&self.root)?.sync_all()
    }
}

/// A spool that writes slowly, for tests of who waits for the disk.
#[cfg(test)]
pub(crate) mod tests_slow {
    use std::{
        path::{Path, PathBuf},
        sync::Mutex,
        time::Duration,
    };

    static SLOW: Mutex<Vec<(PathBuf, Duration)>> = Mutex::new(Vec::new());

    /// Every batch written under `root` takes `delay` more.
    pub(crate) fn set(root: &Path, delay: Duration) {
        SLOW.lock().unwrap().push((root.to_path_buf(), delay));
    }

    pub(super) fn wait(root: &Path) {
        let delay = SLOW
            .lock()
            .unwrap()
            .iter()
            .find(|(r, _)| r == root)
            .map(|(_, d)| *d);
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
    }
}

fn parse_rows<T: serde::de::DeserializeOwned>(
    lines: impl Iterator<Item = Result<String, SpoolError>>,
    corrupt: &dyn Fn(String) -> SpoolError,
) -> Result<Vec<T>, SpoolError> {
    let mut out = Vec::new();
    for line in lines {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| corrupt(e.to_string()))?);
    }
    Ok(out)
}

fn read_header(path: &Path) -> Result<(Header, u64), SpoolError> {
    let p = path.display().to_string();
    let io_err = |source| SpoolError::Io {
        path: p.clone(),
        source,
    };
    let f = File::open(path).map_err(io_err)?;
    let bytes = f.metadata().map_err(io_err)?.len();
    let mut line = String::new();
    BufReader::new(f).read_line(&mut line).map_err(io_err)?;
    let header: Header = serde_json::from_str(&line).map_err(|e| SpoolError::Corrupt {
        path: p.clone(),
        why: e.to_string(),
    })?;
    Ok((header, bytes))
}

fn encode(batch: &Batch) -> io::Result<Vec<u8>> {
    let (first_seq, last_seq) = batch.seq_range();
    let header = Header {
        v: HEADER_VERSION,
        table: batch.table(),
        token: batch.token.clone(),
        rows: batch.len(),
        run_id: batch.run_id,
        first_seq,
        last_seq,
        oldest: batch.oldest_ts(),
    };
    let mut out = serde_json::to_vec(&header)?;
    out.push(b'\n');
    fn lines<T: Serialize>(out: &mut Vec<u8>, rows: &[T]) -> io::Result<()> {
        for r in rows {
            serde_json::to_writer(&mut *out, r)?;
            out.push(b'\n');
        }
        Ok(())
    }
    match &batch.rows {
        Rows::Events(r) => {
            for row in r {
                row.write_line(&mut out);
                out.push(b'\n');
            }
        }
        Rows::Losses(r) => lines(&mut out, r)?,
        Rows::Agents(r) => lines(&mut out, r)?,
    }
    Ok(out)
}

/// The store's checkpoint, rewritten after every batch that reached ClickHouse or the spool and
/// every quarter second: after a crash, the next store compares what the dead one had accepted
/// with what it had made durable, and writes the difference as a loss row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub run_id: u64,
    pub host: String,
    pub started: Ts,
    /// When this checkpoint was written.
    pub updated: Ts,
    /// Events accepted: sequence numbers `0..next_seq` were handed out.
    pub next_seq: u64,
    /// Event sequence ranges `[first, last]` stored in ClickHouse or in the spool.
    pub durable: Vec<(u64, u64)>,
    /// The time of the oldest accepted event that was not durable yet.
    pub oldest_pending: Option<Ts>,
    /// Whether the store shut down cleanly (nothing was left in memory).
    pub clean: bool,
    /// Events dropped because the spool was full, not yet written as a loss row.
    pub dropped: Option<Dropped>,
    /// Events dropped because the store was behind, not yet written as a loss row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Dropped>,
}

/// Events the full spool could not take: how many, and their time span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub start: Ts,
    pub end: Ts,
    pub count: u64,
}

impl Dropped {
    pub fn add(this: &mut Option<Dropped>, start: Ts, end: Ts, count: u64) {
        match this {
            Some(d) => {
                d.start = d.start.min(start);
                d.end = d.end.max(end);
                d.count += count;
            }
            None => *this = Some(Dropped { start, end, count }),
        }
    }
}

/// A set of `u64`s as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn from_vec(mut v: Vec<(u64, u64)>) -> Self {
        v.sort_unstable();
        let mut r = Ranges(Vec::with_capacity(v.len()));
        for (a, b) in v {
            r.insert(a, b);
        }
        r
    }

    /// Adds `[a, b]`.
    pub fn insert(&mut self, a: u64, b: u64) {
        if a > b {
            return;
        }
        // Index of the first range that ends at or after a - 1 (could merge with [a, b]).
        let i = self.0.partition_point(|&(_, e)| e.saturating_add(1) < a);
        let mut lo = a;
        let mut hi = b;
        let mut j = i;
        while j < self.0.len() && self.0[j].0 <= hi.saturating_add(1) {
            lo = lo.min(self.0[j].0);
            hi = hi.max(self.0[j].1);
            j += 1;
        }
        self.0.splice(i..j, [(lo, hi)]);
    }

    /// How many of `0..n` are in the set.
    pub fn count_below(&self, n: u64) -> u64 {
        self.0
            .iter()
            .filter(|(a, _)| *a < n)
            .map(|&(a, b)| b.min(n - 1) - a + 1)
            .sum()
    }

    pub fn as_vec(&self) -> &[(u64, u64)] {
        &self.0
    }
}
