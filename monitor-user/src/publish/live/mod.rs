//! The daemon's live feed: a unix socket on which the dashboard (`nhiscope tui`) and other local
//! readers get the registry, every event and the daemon's health as they happen.
//!
//! The daemon owns a [`Server`]: it binds after the probes are attached, [`Server::publish`]es
//! every event it writes, and calls [`Server::set_health`] once a second. The feed never slows
//! the daemon: `publish` only queues bytes, each client has a writer task of its own, and a client
//! whose queue passes [`DEFAULT_CLIENT_LIMIT`] bytes is dropped (and counted) rather than waited
//! for. With no client connected, `publish` does not even serialise the event.
//!
//! Events name processes, paths and peers on this host, so the socket is mode 0600 and the peer's
//! uid is checked with `SO_PEERCRED`: only root and the daemon's own uid are served; any other is
//! refused with a logged reason (the mode alone would not survive a `chmod` by hand). The wire
//! format is in [`protocol`].

pub mod protocol;

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use thiserror::Error;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, BufWriter},
    net::{UnixListener, UnixStream},
    sync::mpsc,
    task::{AbortHandle, JoinHandle},
};

#[cfg(test)]
use crate::domain::event::Event;
use crate::domain::registry::Registry;
pub use protocol::{ClickHouseHealth, Health, RegistrySummary};
use protocol::{Outgoing, PROTOCOL_VERSION};

/// Where the daemon listens unless told otherwise (`--live-socket`).
pub const DEFAULT_SOCKET: &str = "/run/nhiscope/live.sock";

/// Bytes a client may have queued before it is dropped as too slow: about 16k events, enough for
/// a burst the daemon drains from the ring buffer in one go.
pub const DEFAULT_CLIENT_LIMIT: usize = 8 << 20;

/// How long a refused peer is given to read why.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the live feed could not start.
#[derive(Debug, Error)]
pub enum LiveError {
    /// The socket's directory could not be created.
    #[error("live socket: cannot create the directory {}: {source}", .dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process (another daemon) is listening on the path.
    #[error(
        "live socket {}: another process is listening there (is another nhiscope daemon \
         running?); stop it or give another --live-socket",
        .0.display()
    )]
    InUse(PathBuf),
    /// Something other than a socket is at the path; it is left alone.
    #[error("live socket {}: the path exists and is not a socket; remove it or give another --live-socket", .0.display())]
    NotASocket(PathBuf),
    /// Binding, setting the mode or moving the socket in place failed.
    #[error("live socket {}: {what}: {source}", .path.display())]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// `bind` was called outside a tokio runtime.
    #[error("live socket: no tokio runtime to serve clients on")]
    NoRuntime,
}

/// The live feed's listening socket and its clients. Dropping it stops serving and removes the
/// socket file.
pub struct Server {
    shared: Arc<Shared>,
    path: PathBuf,
    /// Device and inode of the socket file we made, so that drop removes only ours.
    ident: Option<(u64, u64)>,
    /// `None` for a [`Server::disabled`] one.
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    /// The registry, host and health a new client's `hello` carries. Lock order: `state`, then
    /// `clients`.
    state: Mutex<State>,
    clients: Mutex<Vec<Client>>,
    /// `clients.len()`, read without the lock on every publish.
    connected: AtomicUsize,
    /// Peers served besides root.
    allowed_uid: u32,
    client_limit: usize,
    started: Instant,
    published: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    next_id: AtomicU64,
}

struct State {
    host: String,
    registry: RegistrySummary,
    health: Health,
    /// Time and `published` at the previous health message, for the rate.
    rate_mark: (Instant, u64),
}

struct Client {
    id: u64,
    pid: Option<i32>,
    uid: u32,
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes sent to the writer task and not yet written to the socket.
    queued: Arc<AtomicUsize>,
    writer: AbortHandle,
}

impl Server {
    /// Listens on `path` (mode 0600), replacing a stale socket left by a daemon that died; fails
    /// when a live process listens there or a non-socket file is in the way. Must be called in a
    /// tokio runtime, which then serves the clients.
    pub fn bind(path: impl AsRef<Path>) -> Result<Server, LiveError> {
        Self::bind_with_limit(path.as_ref(), DEFAULT_CLIENT_LIMIT)
    }

    /// [`Server::bind`] with another per-client queue limit in bytes.
    pub fn bind_with_limit(path: &Path, client_limit: usize) -> Result<Server, LiveError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LiveError::NoRuntime)?;
        let listener = listen(path)?;
        let ident = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let _enter = runtime.enter();
        let listener = UnixListener::from_std(listener).map_err(|source| LiveError::Bind {
            path: path.to_owned(),
            what: "cannot register with the runtime",
            source,
        })?;
        let shared = Shared::new(client_limit);
        let accept = runtime.spawn(accept_loop(listener, Arc::clone(&shared)));
        log::info!("live feed on {}", path.display());
        Ok(Server {
            shared,
            path: path.to_owned(),
            ident,
            accept: Some(accept),
        })
    }

    /// A server that listens nowhere: what the daemon runs with when its socket cannot be
    /// bound, so that monitoring goes on without the dashboard.
    pub fn disabled() -> Server {
        Server {
            shared: Shared::new(DEFAULT_CLIENT_LIMIT),
            path: PathBuf::new(),
            ident: None,
            accept: None,
        }
    }

    /// The socket's path (empty when disabled).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `event` to every client, without waiting: a client whose queue is full is dropped.
    /// (The daemon encodes each event once for all its outputs and calls [`Server::publish_json`].)
    #[cfg(test)]
    pub fn publish(&self, event: &Event) {
        let mut json = Vec::new();
        if self.clients() > 0 {
            event.write_json(&mut json);
        }
        self.publish_json(&json);
    }

    /// [`Server::publish`] for an event already written as its JSON line (`json`, without
    /// newline), which may be left empty when no client is connected.
    pub fn publish_json(&self, json: &[u8]) {
        self.shared.published.fetch_add(1, Ordering::Relaxed);
        if self.shared.connected.load(Ordering::Relaxed) == 0 || json.is_empty() {
            return;
        }
        self.shared
            .broadcast(Bytes::from(protocol::event_line(json)));
    }

    /// Records the daemon's health and sends it to every client. The server fills in uptime,
    /// event counts and its client counters.
    pub fn set_health(&self, health: Health) {
        let mut state = lock(&self.shared.state);
        state.health = health;
        self.shared.fill_health(&mut state);
        if self.shared.connected.load(Ordering::Relaxed) == 0 {
            return;
        }
        match (Outgoing::Health {
            health: &state.health,
        })
        .line()
        {
            Ok(line) => self.shared.broadcast(Bytes::from(line)),
            Err(e) => log::debug!("live feed: cannot encode health: {e}"),
        }
    }

    /// Records the registry in force and sends it to every client (after a reload).
    pub fn set_registry(&self, registry: &Registry) {
        let mut state = lock(&self.shared.state);
        state.registry = RegistrySummary::from(registry);
        match (Outgoing::Registry {
            registry: &state.registry,
        })
        .line()
        {
            Ok(line) => self.shared.broadcast(Bytes::from(line)),
            Err(e) => log::debug!("live feed: cannot encode the registry: {e}"),
        }
    }

    /// The host name `hello` announces (the one written on events).
    pub fn set_host(&self, host: &str) {
        host.clone_into(&mut lock(&self.shared.state).host);
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Clients dropped so far because they read too slowly.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Connections refused so far by the peer check.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
        for c in lock(&self.shared.clients).drain(..) {
            c.writer.abort();
        }
        // Remove the socket only if it is still the one we made (a new daemon may have taken the
        // path over).
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.ident {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates the listening socket: bound under a temporary name, made 0600, then renamed into
/// place, so that nothing reaches it at `path` before its mode is 0600 (a peer that finds the
/// temporary name still meets the peer check).
fn listen(path: &Path) -> Result<std::os::unix::net::UnixListener, LiveError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| LiveError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(LiveError::InUse(path.to_owned()));
            }
            log::info!("removing the stale live socket {}", path.display());
            std::fs::remove_file(path).map_err(|source| LiveError::Bind {
                path: path.to_owned(),
                what: "cannot remove the stale socket",
                source,
            })?;
        }
        Ok(_) => return Err(LiveError::NotASocket(path.to_owned())),
        Err(_) => {}
    }
    let name = path
        .file_name()
        .map_or_else(|| "live.sock".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let err = |what: &'static str| {
        let path = path.to_owned();
        move |source| LiveError::Bind { path, what, source }
    };
    let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(err("cannot bind"))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(err("cannot set mode 0600"))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(err("cannot move into place")))
        .and_then(|()| {
            listener
                .set_nonblocking(true)
                .map_err(err("cannot make non-blocking"))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

impl Shared {
    fn new(client_limit: usize) -> Arc<Shared> {
        let now = Instant::now();
        Arc::new(Shared {
            state: Mutex::new(State {
                host: String::new(),
                registry: RegistrySummary::default(),
                health: Health::default(),
                rate_mark: (now, 0),
            }),
            clients: Mutex::new(Vec::new()),
            connected: AtomicUsize::new(0),
            // SAFETY: geteuid has no preconditions and cannot fail.
            allowed_uid: unsafe { libc::geteuid() },
            client_limit,
            started: now,
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        })
    }

    /// Queues `line` for every client; drops those that are gone or too far behind.
    fn broadcast(&self, line: Bytes) {
        let mut clients = lock(&self.clients);
        clients.retain(|c| {
            let queued = c.queued.load(Ordering::Relaxed);
            if queued + line.len() > self.client_limit {
                c.writer.abort();
                self.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "live feed: dropped client {} ({}) for reading too slowly: {queued} bytes \
                     queued",
                    c.id,
                    peer_text(c.pid, c.uid)
                );
                return false;
            }
            c.queued.fetch_add(line.len(), Ordering::Relaxed);
            if c.tx.send(line.clone()).is_err() {
                log::info!("live feed: client {} disconnected", c.id);
                return false;
            }
            true
        });
        self.connected.store(clients.len(), Ordering::Relaxed);
    }

    /// Fills the fields of `state.health` the server knows.
    fn fill_health(&self, state: &mut State) {
        let now = Instant::now();
        let published = self.published.load(Ordering::Relaxed);
        let (then, before) = state.rate_mark;
        let secs = now.duration_since(then).as_secs_f64();
        let h = &mut state.health;
        h.uptime_secs = now.duration_since(self.started).as_secs();
        h.events_total = published;
        h.events_per_sec = if secs > 0.0 {
            published.saturating_sub(before) as f64 / secs
        } else {
            0.0
        };
        h.live_clients = u32::try_from(self.connected.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        h.live_clients_dropped = self.dropped.load(Ordering::Relaxed);
        h.live_clients_refused = self.refused.load(Ordering::Relaxed);
        state.rate_mark = (now, published);
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                log::warn!("live feed: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                log::warn!("live feed: refused a connection: cannot read its credentials: {e}");
                continue;
            }
        };
        let (uid, pid) = (cred.uid(), cred.pid());
        if uid != 0 && uid != shared.allowed_uid {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let allowed = if shared.allowed_uid == 0 {
                "root".to_owned()
            } else {
                format!("root and uid {}", shared.allowed_uid)
            };
            let message = format!(
                "refused: the live feed serves only {allowed}, and this client runs as uid {uid}"
            );
            log::warn!(
                "live feed: refused a connection from {}: only {allowed} may read the feed",
                peer_text(pid, uid)
            );
            tokio::spawn(refuse(stream, message));
            continue;
        }
        admit(&shared, stream, pid, uid);
    }
}

/// Tells a refused peer why, briefly, then closes.
async fn refuse(mut stream: UnixStream, message: String) {
    if let Ok(line) = (Outgoing::Error { message: &message }).line() {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, stream.write_all(&line)).await;
    }
    let _ = stream.shutdown().await;
}

/// Registers a permitted client: `hello` first, then whatever is broadcast after.
fn admit(shared: &Arc<Shared>, stream: UnixStream, pid: Option<i32>, uid: u32) {
    let mut state = lock(&shared.state);
    shared.fill_health(&mut state);
    let hello = Outgoing::Hello {
        version: PROTOCOL_VERSION,
        host: &state.host,
        pid: std::process::id(),
        registry: &state.registry,
        health: &state.health,
    }
    .line();
    let hello = match hello {
        Ok(h) => Bytes::from(h),
        Err(e) => {
            log::warn!("live feed: cannot encode hello: {e}");
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(hello.len()));
    let _ = tx.send(hello);
    let writer = tokio::spawn(write_loop(stream, rx, Arc::clone(&queued))).abort_handle();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    log::info!("live feed: client {id} connected ({})", peer_text(pid, uid));
    let mut clients = lock(&shared.clients);
    clients.push(Client {
        id,
        pid,
        uid,
        tx,
        queued,
        writer,
    });
    shared.connected.store(clients.len(), Ordering::Relaxed);
}

/// Writes a client's queue to its socket until either side is done. Clients send nothing; a read
/// only notices that the peer closed.
async fn write_loop(
    stream: UnixStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
) {
    let (mut rd, wr) = stream.into_split();
    let mut wr = BufWriter::with_capacity(64 << 10, wr);
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(mut line) = msg else { break };
                loop {
                    if wr.write_all(&line).await.is_err() {
                        return;
                    }
                    queued.fetch_sub(line.len(), Ordering::Relaxed);
                    match rx.try_recv() {
                        Ok(next) => line = next,
                        Err(_) => break,
                    }
                }
                if wr.flush().await.is_err() {
                    return;
                }
            }
            r = rd.read(&mut scratch) => {
                if matches!(r, Ok(0) | Err(_)) {
                    return;
                }
            }
        }
    }
}

fn peer_text(pid: Option<i32>, uid: u32) -> String {
    match pid {
        Some(pid) => format!("pid {pid}, uid {uid}"),
        None => format!("uid {uid}"),
    }
}

/// A lock that survives a panic of another holder: the data stay consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
