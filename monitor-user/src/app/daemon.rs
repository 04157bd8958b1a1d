//! `nhiscope daemon`: preflight checks, then the loop from the ring buffer through the engine to
//! the outputs, until SIGTERM or SIGINT.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, Signal, SignalKind},
};

use crate::{
    app::privileges,
    domain::decode,
    domain::engine::{Clock, Engine},
    domain::event::{Event, Kind, Ts},
    domain::filter,
    domain::registry,
    publish::files::{self, Owner},
    publish::live,
    publish::metrics::{self, Metrics},
    sense::probes::{LoadOptions, ProbeError, Probes},
    sense::proc_host::ProcHost,
};
use monitor_common::{LossCause, LOSS_CAUSES};

/// What the daemon is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub registry: PathBuf,
    pub json: Option<String>,
    /// `--json-max-size` and `--json-keep`: the --json file rotates itself.
    pub json_rotation: Option<crate::publish::events_file::Rotation>,
    pub ringbuf_bytes: Option<u32>,
    pub hostname: Option<String>,
    pub all_opens: bool,
    /// How much of each command line events carry.
    pub cmdline: crate::domain::redact::CmdlineMode,
    /// The live feed's socket (`nhiscope tui` reads it).
    pub live_socket: PathBuf,
    /// `--clickhouse URL` and `--clickhouse-config FILE`, or the config file's `clickhouse:`.
    pub clickhouse: crate::app::config::ClickHouse,
    /// `--user NAME`: the unprivileged user the daemon becomes once its probes are attached.
    pub user: Option<String>,
    /// `--metrics ADDR`: where Prometheus metrics and the health check are served.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--pods-log-dir` and `--containers-log-dir`: the kubelet's log directories, which name
    /// the pods and containers events happen in.
    pub pods_log_dir: PathBuf,
    pub containers_log_dir: PathBuf,
    /// `--config FILE`: read again on SIGHUP.
    pub reload: Option<crate::app::config::Reload>,
    /// `--wire-all-connections`: every process's connections are read for their first bytes.
    pub wire_all_connections: bool,
    /// `--holder-set-max`: the kernel's holder set's size.
    pub holder_set_max: Option<u32>,
    /// `--dns-server`: resolvers whose answers are believed besides the host's
    /// (`/etc/resolv.conf`) and loopback ones.
    pub dns_servers: Vec<std::net::IpAddr>,
    /// `--resolv-conf`: the host's resolver configuration.
    pub resolv_conf: PathBuf,
}

/// Why the daemon stopped with an error. Each variant keeps its cause (`source()`); the
/// message is the one printed, and [`DaemonError::exit_code`] says whose it is to fix.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// `--json -` with `--json-max-size`.
    #[error(
        "--json-max-size: events go to standard output (--json -), which the daemon cannot \
         rotate; give --json PATH"
    )]
    RotateStdout,
    /// Not started as root.
    #[error("nhiscope daemon must run as root (it loads eBPF programs: CAP_BPF, CAP_PERFMON)")]
    NotRoot,
    /// `mount` could not be run to mount tracefs.
    #[error("cannot run mount to mount tracefs at {TRACEFS}: {source}")]
    MountCommand { source: std::io::Error },
    /// tracefs is missing and mounting it failed.
    #[error(
        "tracefs is not mounted at {TRACEFS} and mounting it failed: mount it with \
         `mount -t tracefs nodev {TRACEFS}`"
    )]
    Tracefs,
    /// `--user`: no such account.
    #[error(transparent)]
    User(privileges::PrivilegeError),
    /// The registry cannot be read or is invalid.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// The registry's patterns cannot be compiled into the kernel's filter.
    #[error("{}: {source}", .path.display())]
    Filter {
        path: PathBuf,
        source: filter::FilterError,
    },
    /// The ClickHouse settings are unusable.
    #[error("{}", crate::app::config::lines(.0))]
    ClickHouseConfig(Vec<crate::app::config::Problem>),
    /// The spool directory cannot be claimed (another daemon holds it, or it is unsafe).
    #[error(transparent)]
    Spool(crate::publish::store::StoreError),
    /// One of the daemon's files (the live socket's lock, `--json`) cannot be used.
    #[error(transparent)]
    File(#[from] files::FileError),
    /// `--metrics`: the address cannot be listened on.
    #[error(
        "--metrics {addr}: cannot listen there: {source} (is another daemon or exporter on \
         that port?)"
    )]
    MetricsPort {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The kernel's BTF lacks a type or member the probes follow.
    #[error("this kernel's BTF (/sys/kernel/btf/vmlinux) lacks what nhiscope follows: {source}")]
    BtfLacks { source: crate::sense::btf::BtfError },
    /// The kernel's BTF cannot be parsed.
    #[error("cannot parse /sys/kernel/btf/vmlinux: {source}")]
    BtfParse { source: crate::sense::btf::BtfError },
    /// The kernel has no BTF.
    #[error(
        "cannot read /sys/kernel/btf/vmlinux ({source}): nhiscope needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF"
    )]
    BtfRead { source: std::io::Error },
    /// The probes cannot be loaded or attached.
    #[error(transparent)]
    Probes(ProbeError),
    /// The ring buffer cannot be taken from the probes.
    #[error(transparent)]
    Ring(ProbeError),
    /// The ring buffer cannot be waited on.
    #[error("ring buffer: {source}")]
    RingFd { source: std::io::Error },
    /// Privileges cannot be dropped to what running needs.
    #[error(transparent)]
    Privileges(privileges::PrivilegeError),
    /// The store cannot start.
    #[error(transparent)]
    Store(crate::publish::store::StoreError),
    /// The metrics server's thread cannot start.
    #[error("cannot start the metrics server: {source}")]
    MetricsServer { source: std::io::Error },
    /// A signal handler cannot be installed.
    #[error("{source}")]
    Signal { source: std::io::Error },
    /// Writing the JSON lines failed.
    #[error("writing JSON: {source}")]
    Output { source: std::io::Error },
}

impl DaemonError {
    /// 2 for bad input or an unfit host (the user must change something), 1 for a failure
    /// while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::RotateStdout
            | Self::NotRoot
            | Self::MountCommand { .. }
            | Self::Tracefs
            | Self::User(_)
            | Self::Registry(_)
            | Self::Filter { .. }
            | Self::ClickHouseConfig(_)
            | Self::Spool(_)
            | Self::File(_)
            | Self::MetricsPort { .. } => 2,
            Self::Probes(ProbeError::Attach { .. } | ProbeError::Map(..)) => 1,
            Self::Probes(_) => 2,
            Self::Store(e) => e.exit_code(),
            Self::BtfLacks { .. }
            | Self::BtfParse { .. }
            | Self::BtfRead { .. }
            | Self::Ring(_)
            | Self::RingFd { .. }
            | Self::Privileges(_)
            | Self::MetricsServer { .. }
            | Self::Signal { .. }
            | Self::Output { .. } => 1,
        }
    }
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Checks that the host can run the probes; mounts tracefs when it is missing.
fn preflight() -> Result<(), DaemonError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DaemonError::NotRoot);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() && !Path::new("/sys/kernel/bpf").exists() {
        log::warn!("/sys/kernel/btf/vmlinux is missing: this kernel may lack BPF support");
    }
    if !Path::new(TRACEFS).join("events").is_dir() {
        log::info!("tracefs is not mounted: mounting it at {TRACEFS}");
        let status = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev", TRACEFS])
            .status()
            .map_err(|source| DaemonError::MountCommand { source })?;
        if !status.success() || !Path::new(TRACEFS).join("events").is_dir() {
            return Err(DaemonError::Tracefs);
        }
    }
    // Kernels >= 5.11 charge BPF memory to the cgroup; on older ones memlock must be raised.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK (fine on kernels >= 5.11)");
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Where events are written.
enum Sink {
    None,
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(crate::publish::events_file::EventsFile),
}

impl Sink {
    /// Opens the `--json` output: a file is the daemon's own (0600, `owner`'s, never reached
    /// through a symbolic link; see `files`), rotated by size with `rotation`.
    fn open(
        spec: Option<&str>,
        owner: Owner,
        rotation: Option<crate::publish::events_file::Rotation>,
    ) -> Result<Self, DaemonError> {
        Ok(match spec {
            None => Sink::None,
            Some("-") => Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
            Some(path) => Sink::File(crate::publish::events_file::EventsFile::open(
                Path::new(path),
                owner,
                rotation,
            )?),
        })
    }

    /// Writes one event's JSON line (`line`, without its newline).
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::None => Ok(()),
            Sink::File(f) => f.write_line(line),
            Sink::Stdout(w) => {
                w.write_all(line)?;
                w.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::None => Ok(()),
            Sink::File(f) => f.flush(),
            Sink::Stdout(w) => w.flush(),
        }
    }

    /// SIGUSR1: the file is closed and opened again by name (logrotate moved it away).
    fn reopen(&mut self) {
        match self {
            Sink::File(f) => match f.reopen() {
                Ok(()) => log::info!("SIGUSR1: reopened --json {}", f.path().display()),
                Err(e) => log::error!("SIGUSR1: {e}; writing on in the file already open"),
            },
            _ => log::info!("SIGUSR1: no --json file to reopen"),
        }
    }
}

/// Run the daemon until a termination signal: start, the loop, and the stop.
pub async fn run(opts: Options) -> Result<(), DaemonError> {
    let (mut daemon, mut wakeups) = start(opts)?;
    daemon.run_loop(&mut wakeups).await?;
    daemon.stop(wakeups).await
}

/// What is checked and claimed before anything is loaded: a bad setting or a second daemon
/// stops the start here.
struct Prepared {
    notifier: crate::app::notify::Notifier,
    user: Option<privileges::Account>,
    registry: registry::Registry,
    unseen: Vec<String>,
    key: u64,
    plan: filter::FilterPlan,
    store_config: Option<crate::publish::store::StoreConfig>,
    spool: Option<crate::publish::store::SpoolClaim>,
    live_lock: Option<files::PidLock>,
    sink: Sink,
    metrics_listener: Option<std::net::TcpListener>,
}

fn prepare(opts: &Options) -> Result<Prepared, DaemonError> {
    files::restrict_umask();
    if opts.json.as_deref() == Some("-") && opts.json_rotation.is_some() {
        return Err(DaemonError::RotateStdout);
    }
    // Connected now, while root: the socket's file may be closed to the daemon's user.
    let notifier = crate::app::notify::Notifier::from_env();
    let user = opts
        .user
        .as_deref()
        .map(privileges::Account::lookup)
        .transpose()
        .map_err(DaemonError::User)?;
    // Whoever the daemon runs as after attaching owns its files.
    let owner = user.as_ref().map_or_else(Owner::current, |u| Owner {
        uid: u.uid,
        gid: u.gid,
    });
    let registry = registry::load(&opts.registry)?;
    // Before any thread is started (the check forks).
    let unseen = crate::sense::coverage::unseen_doors();
    for door in &unseen {
        log::warn!("not seen: {door}");
    }
    let key = random_key();
    let plan = kernel_plan(key, &registry).map_err(|source| DaemonError::Filter {
        path: opts.registry.clone(),
        source,
    })?;
    let store_config = opts
        .clickhouse
        .store_config(&|k| std::env::var(k).ok())
        .map_err(DaemonError::ClickHouseConfig)?;
    preflight()?;
    // One daemon per spool and per socket: a second one stops here, before loading anything.
    let spool = store_config
        .as_ref()
        .map(|c| crate::publish::store::Store::claim(c, owner))
        .transpose()
        .map_err(DaemonError::Spool)?;
    // Held until the end, after the live server (dropped earlier) removed its socket: a daemon
    // that takes the lock next finds the path free.
    let live_lock = lock_live_socket(&opts.live_socket)?;
    let sink = Sink::open(opts.json.as_deref(), owner, opts.json_rotation)?;
    // Bound now, served once privileges are dropped: a port in use stops the daemon here.
    let metrics_listener = opts
        .metrics
        .map(|addr| {
            metrics::http::bind(addr).map_err(|source| DaemonError::MetricsPort { addr, source })
        })
        .transpose()?;
    Ok(Prepared {
        notifier,
        user,
        registry,
        unseen,
        key,
        plan,
        store_config,
        spool,
        live_lock,
        sink,
        metrics_listener,
    })
}

/// The offsets the probes need from this kernel's BTF: without them the kernel cannot tell
/// which file was opened or executed, so the daemon does not start.
fn kernel_offsets() -> Result<crate::sense::btf::KernelOffsets, DaemonError> {
    match crate::sense::btf::Btf::from_sys_fs() {
        Ok(Ok(btf)) => crate::sense::btf::KernelOffsets::from_btf(&btf)
            .map_err(|source| DaemonError::BtfLacks { source }),
        Ok(Err(source)) => Err(DaemonError::BtfParse { source }),
        Err(source) => Err(DaemonError::BtfRead { source }),
    }
}

/// The signals the daemon handles. Installed before `ready`: a signal sent once it is printed
/// finds its handler (SIGUSR1 would otherwise end the process).
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    usr1: Signal,
}

impl Signals {
    fn install() -> Result<Self, DaemonError> {
        let on = |kind| signal(kind).map_err(|source| DaemonError::Signal { source });
        Ok(Self {
            hup: on(SignalKind::hangup())?,
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            usr1: on(SignalKind::user_defined1())?,
        })
    }
}

/// What wakes the daemon's loop. Apart from [`Daemon`], so that the loop can wait on these while
/// the handlers change the daemon.
struct Wakeups {
    ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    /// DNS packets (`probes::dns`), read at every turn before the ring buffer's records.
    dns: aya::maps::RingBuf<aya::maps::MapData>,
    signals: Signals,
    /// Once a second: health, metrics, losses, the registry file and the kernel's inodes.
    tick: tokio::time::Interval,
    /// systemd's watchdog is fed from the loop only: a loop stuck (on a blocked output, say)
    /// stops the pings, and systemd restarts the service.
    watchdog: Option<tokio::time::Interval>,
    /// The programs wake the daemon only when the ring buffer fills up (see monitor-ebpf's
    /// `maps::wakeup`); otherwise records wait for this poll, so that a trickle of events costs
    /// one wakeup per poll rather than one per record.
    poll: tokio::time::Interval,
}

/// The running daemon: the probes, the engine and the outputs, with what the loop keeps
/// between turns. Fields drop in order: the live server removes its socket before the lock
/// beside it (the last field) is released.
struct Daemon {
    engine: Engine<ProcHost>,
    probes: Probes,
    ring_fill: crate::sense::probes::RingFill,
    /// The key of the kernel filter's hashes.
    key: u64,
    /// Where events go: `--json`, the live feed, the store, the metrics.
    outputs: Outputs,
    notifier: crate::app::notify::Notifier,
    /// Doors the coverage check did not see (said in every health report).
    unseen: Vec<String>,
    /// The registry in force: SIGHUP may point it elsewhere (`registry:` in --config).
    registry_path: PathBuf,
    config: Option<crate::app::config::Reload>,
    watcher: RegistryWatch,
    /// The kernel's loss counters as already reported.
    reported: [u64; LOSS_CAUSES as usize],
    ticks: u64,
    /// The kernel's holder set was full at the last tick: every connection is marked.
    holders_full: bool,
    /// The kernel's count of holders the set refused, at the last tick.
    holder_refusals: u64,
    /// The kernel's position in the ring buffer at the last tick, read after `holder_refusals`.
    holder_mark: u64,
    /// The host's resolvers, and those given by `--dns-server`: whose DNS answers are believed.
    resolv_conf: crate::sense::dns::resolv_conf::ResolvConf,
    dns_servers: Vec<std::net::IpAddr>,
    /// Events made and not yet written.
    out: Vec<Event>,
    /// The fullest the ring buffer was seen (at a wakeup, before draining) since the last
    /// report.
    ring_peak: u64,
    _live_lock: Option<files::PidLock>,
}

/// From the options to a daemon with its probes attached, its privileges dropped and `ready`
/// said.
fn start(opts: Options) -> Result<(Daemon, Wakeups), DaemonError> {
    let p = prepare(&opts)?;
    let metrics = p
        .metrics_listener
        .as_ref()
        .map(|_| Arc::new(Metrics::new()));
    if let Some(m) = &metrics {
        m.set_registry(&p.registry);
    }
    let load = LoadOptions {
        offsets: Some(kernel_offsets()?),
        ringbuf_bytes: opts.ringbuf_bytes,
        all_opens: opts.all_opens,
        all_connections: opts.wire_all_connections,
        holder_set_max: opts.holder_set_max,
    };
    let mut probes = Probes::load(&p.plan, &load).map_err(DaemonError::Probes)?;
    let (ring, ring_fill) = probes.take_ring().map_err(DaemonError::Ring)?;
    let dns = probes.take_dns_ring().map_err(DaemonError::Ring)?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as the
    // AsyncFd owns the RingBuf.
    let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| DaemonError::RingFd {
            source: e.into_parts().1,
        })?;

    let nhis = p.registry.nhis.len();
    let host = opts.hostname.clone().unwrap_or_else(hostname);
    let mut engine = Engine::new(Arc::new(p.registry), "/proc", Clock::now(), host);
    engine.set_cmdline_mode(opts.cmdline);
    engine.set_wire_all_connections(opts.wire_all_connections);
    engine.set_kubernetes_dirs(&opts.pods_log_dir, &opts.containers_log_dir);
    let seeded = engine.seed_processes();
    // The live feed listens before `ready` is printed: a client started after it connects.
    // Without it the daemon still monitors; only the dashboard is blind.
    let live = live::Server::bind(&opts.live_socket).unwrap_or_else(|e| {
        log::error!("live feed disabled, `nhiscope tui` cannot connect: {e}");
        live::Server::disabled()
    });
    live.set_host(engine.host());
    live.set_registry(engine.registry());
    // Everything that needed privileges is done: keep only what running needs. Running on
    // with more than the operator chose is worse than not running.
    let kept = privileges::drop_to_needed(p.user.as_ref()).map_err(DaemonError::Privileges)?;
    log::info!(
        "running as uid {}, capabilities kept: {kept:#x}",
        Owner::current().uid
    );
    // Started after the drop: the store's threads and files are the daemon user's. Connecting,
    // migrating and replaying the spool happen in the background: an unreachable ClickHouse
    // only means spooling.
    let store = match (p.store_config, p.spool) {
        (Some(c), Some(claim)) => Some(
            crate::publish::store::Store::start_claimed(c, engine.host().to_string(), claim)
                .map_err(DaemonError::Store)?,
        ),
        _ => None,
    };
    // Threads made after the drop inherit it (see `privileges`).
    if let (Some(listener), Some(m)) = (p.metrics_listener, &metrics) {
        metrics::http::spawn(listener, Arc::clone(m))
            .map_err(|source| DaemonError::MetricsServer { source })?;
    }
    if let Some(m) = &metrics {
        m.set_ready(probes.attached());
    }
    let signals = Signals::install()?;
    let (attached, keys) = (probes.attached(), p.plan.keys.len());
    crate::app::logging::status(
        &format!(
            "ready: {attached} probes attached, {nhis} NHIs registered, {keys} filter keys, \
             {seeded} processes known"
        ),
        &[
            ("probes", attached.into()),
            ("nhis", nhis.into()),
            ("filter_keys", keys.into()),
            ("processes", seeded.into()),
        ],
    );
    p.notifier.ready(&format!(
        "{attached} probes attached, {nhis} NHIs registered, {keys} filter keys, {seeded} \
         processes known"
    ));

    let watchdog = p.notifier.ping_interval().map(|every| {
        let mut i = tokio::time::interval(every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut poll = tokio::time::interval(RING_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wakeups = Wakeups {
        ring,
        dns,
        signals,
        tick: tokio::time::interval(Duration::from_secs(1)),
        watchdog,
        poll,
    };
    let mut daemon = Daemon {
        engine,
        probes,
        ring_fill,
        key: p.key,
        outputs: Outputs {
            json: p.sink,
            live,
            store,
            metrics,
            line: Vec::with_capacity(4096),
        },
        notifier: p.notifier,
        unseen: p.unseen,
        watcher: RegistryWatch::new(&opts.registry),
        registry_path: opts.registry,
        config: opts.reload,
        reported: [0u64; LOSS_CAUSES as usize],
        resolv_conf: crate::sense::dns::resolv_conf::ResolvConf::new(&opts.resolv_conf),
        dns_servers: opts.dns_servers.clone(),
        ticks: 0,
        holders_full: false,
        holder_refusals: 0,
        holder_mark: 0,
        out: Vec::with_capacity(1024),
        ring_peak: 0,
        _live_lock: p.live_lock,
    };
    // Before the first DNS record is read.
    daemon.dns_resolvers();
    Ok((daemon, wakeups))
}

impl Daemon {
    /// Until SIGTERM or SIGINT: DNS packets, ring buffer batches, the second's tick, SIGHUP and
    /// SIGUSR1, and the watchdog.
    async fn run_loop(&mut self, w: &mut Wakeups) -> Result<(), DaemonError> {
        let mut more = false;
        loop {
            let mut batch = false;
            tokio::select! {
                // A wakeup (the ring buffer is filling up) or a poll: one batch either way.
                woken = w.ring.readable_mut() => {
                    woken.map_err(|source| DaemonError::RingFd { source })?.clear_ready();
                    batch = true;
                }
                _ = w.poll.tick() => batch = true,
                // The last batch stopped at its bound with records left: go on at once, after
                // whatever else is ready.
                () = std::future::ready(()), if more => batch = true,
                _ = w.tick.tick() => self.tick()?,
                _ = w.signals.hup.recv() => self.hangup(),
                _ = w.signals.usr1.recv() => self.outputs.json.reopen(),
                _ = watchdog_tick(&mut w.watchdog) => self.notifier.watchdog(),
                _ = w.signals.term.recv() => break,
                _ = w.signals.int.recv() => break,
            }
            if batch {
                // DNS answers first: the kernel wrote an answer to its ring when it reached the
                // client's socket, so before the client could read it and connect.
                more = !drain_dns(&mut w.dns, &mut self.engine);
                if self.ring_fill.used() > 0 {
                    self.ring_peak = self.ring_peak.max(self.ring_fill.used());
                    more |= drain(w.ring.get_mut(), &mut self.engine, &mut self.out);
                    self.emit()?;
                }
            }
        }
        Ok(())
    }

    /// Once a second: the probes' log, first bytes that stopped coming, the credentials'
    /// inodes, losses, health and metrics, the registry file; every ten seconds the store's
    /// heartbeat and the process table's sweep.
    fn tick(&mut self) -> Result<(), DaemonError> {
        self.probes.flush_log();
        self.engine.flush_requests(false, &mut self.out);
        self.dns_resolvers();
        refresh_inodes(self.key, &mut self.probes, &mut self.engine);
        let overflowed = losses(
            &self.probes,
            &self.engine,
            &mut self.reported,
            &mut self.out,
        );
        // After `losses`, which read the kernel's counters (the set's refusals among them).
        self.holder_set();
        // The fill is sampled when the daemon wakes, but the kernel fills the buffer while the
        // daemon drains it too: a loss to a full buffer is the kernel's own word that it was
        // full in this interval, whatever the samples saw.
        let size = self.ring_fill.size();
        let mut peak = self.ring_peak.max(self.ring_fill.used());
        if overflowed {
            peak = u64::from(size);
        }
        self.ring_peak = 0;
        if let Some(m) = &self.outputs.metrics {
            m.turned();
            m.sample(&metrics_sample(
                &self.probes,
                &self.engine,
                self.outputs.store.as_ref(),
                &self.outputs.live,
                peak,
                size,
            ));
        }
        let mut health = live_health(&self.probes, self.outputs.store.as_ref(), peak, size);
        health.dns_rejected = self.engine.dns_stats().not_believed();
        health.unseen.clone_from(&self.unseen);
        self.outputs.live.set_health(health);
        self.ticks += 1;
        if self.watcher.changed(&self.registry_path) {
            log::info!("{} changed: reloading", self.registry_path.display());
            let ok = reload(
                self.key,
                &self.registry_path,
                &mut self.probes,
                &mut self.engine,
            );
            self.reloaded(ok);
        }
        if self.ticks.is_multiple_of(10) {
            if let Some(store) = &self.outputs.store {
                let s = &self.engine.stats;
                store.heartbeat(&[
                    ("records", s.records),
                    ("events", s.events),
                    ("filter_false_positives", s.filter_false_positives),
                    ("dns_rejected", self.engine.dns_stats().not_believed()),
                ]);
            }
            let gone = self.engine.sweep_processes(Duration::from_secs(5));
            log::debug!(
                "process table: {} entries, {gone} swept",
                self.engine.procs().len()
            );
        }
        self.emit()
    }

    /// The servers whose DNS answers are believed: `--dns-server` and the host's resolver
    /// configuration (`--resolv-conf`, read again when it changes, said in the log), and
    /// loopback ones.
    fn dns_resolvers(&mut self) {
        for ip in self.engine.take_dns_other_servers() {
            log::warn!(
                "DNS: queries to {ip}, which is not a resolver of this host ({}, --dns-server), \
                 are not believed: its answers name no address. If it is one of yours (a \
                 cluster's DNS service), give it with --dns-server",
                self.resolv_conf.path().display()
            );
        }
        let Some(host) = self.resolv_conf.refresh() else {
            return;
        };
        let all: Vec<std::net::IpAddr> = host.iter().chain(&self.dns_servers).copied().collect();
        let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
        log::info!(
            "DNS: answers are believed from {} and loopback servers",
            match shown.is_empty() {
                true => "no other server".to_owned(),
                false => shown.join(", "),
            }
        );
        // What resolvers reached over the network leave open, said as they change.
        let door = crate::sense::coverage::network_resolvers_door(&all);
        let prefix = crate::sense::coverage::NETWORK_RESOLVERS;
        let before = self.unseen.iter().position(|d| d.starts_with(prefix));
        if before.map(|i| &self.unseen[i]) != door.as_ref() {
            if let Some(i) = before {
                self.unseen.remove(i);
            }
            if let Some(d) = door {
                log::warn!("not seen: {d}");
                self.unseen.push(d);
            }
        }
        self.engine
            .set_dns_resolvers(crate::sense::dns::Resolvers::new(all));
    }

    /// Whether the kernel's holder set is full, said when it changes.
    fn holder_set(&mut self) {
        // Every holder the set refused is among the engine's only once the records of those
        // refusals are read: none since the last tick, and the daemon has read past where the
        // kernel was writing then. The kernel writes a refusal's record (the open, the fork)
        // before it counts the refusal, and the count is read before the position: so each
        // refusal counted at the last tick has its record before that position. Not "nothing
        // left in the ring": on a busy host records keep coming, and the set would stay full.
        let refusals = self.reported[monitor_common::LossCause::HolderSetFull as usize];
        let (consumer, producer) = self.ring_fill.positions();
        let settled = refusals_read((self.holder_refusals, self.holder_mark), refusals, consumer);
        self.holder_refusals = refusals;
        self.holder_mark = producer;
        let full = match self
            .probes
            .holder_set_check(self.engine.wire_holders(), settled)
        {
            Ok(full) => full,
            Err(e) => {
                log::warn!("the kernel's holder set: {e}");
                return;
            }
        };
        if full != self.holders_full {
            if full {
                log::warn!(
                    "the kernel's holder set is full: every process's connections are read for \
                     their first bytes until it has room again (--holder-set-max)"
                );
            } else {
                // Holders the full set refused (the kernel's add and the daemon's) were put in
                // before the kernel went back to holders only.
                log::info!("the kernel's holder set has room again: holders' connections only");
            }
            self.holders_full = full;
        }
        if let Some(m) = &self.outputs.metrics {
            m.set_holder_set_full(full);
        }
    }

    /// SIGHUP: the config file and the registry read again (see [`hangup`]).
    fn hangup(&mut self) {
        let ok = hangup(
            self.config.as_mut(),
            &mut self.registry_path,
            self.key,
            &mut self.probes,
            &mut self.engine,
        );
        self.reloaded(ok);
        self.watcher.seen(&self.registry_path);
    }

    /// After a reload (`ok`: the new registry is in force): the live feed and the metrics
    /// follow the registry in force.
    fn reloaded(&self, ok: bool) {
        self.outputs.live.set_registry(self.engine.registry());
        if let Some(m) = &self.outputs.metrics {
            m.reloaded(ok);
            m.set_registry(self.engine.registry());
        }
    }

    fn emit(&mut self) -> Result<(), DaemonError> {
        // New holders' connections are marked in the kernel from now on (`probes::wire`).
        let mut changes = Vec::new();
        self.engine.take_holder_changes(&mut changes);
        if let Err(e) = self.probes.set_holders(&changes) {
            log::warn!("the kernel's holder set: {e}; some holders' requests are not read");
        }
        self.outputs.emit(&mut self.out)
    }

    /// After the termination signal: everything the kernel delivered before it is written, the
    /// store writes out what it holds, and the totals are logged.
    async fn stop(mut self, mut w: Wakeups) -> Result<(), DaemonError> {
        if let Some(m) = &self.outputs.metrics {
            m.set_stopping();
        }
        self.notifier
            .stopping("stopping: writing out what the kernel delivered");
        while drain(w.ring.get_mut(), &mut self.engine, &mut self.out) {
            self.emit()?;
        }
        self.engine.flush_requests(true, &mut self.out);
        let _ = losses(
            &self.probes,
            &self.engine,
            &mut self.reported,
            &mut self.out,
        );
        self.emit()?;
        if let Some(store) = self.outputs.store.take() {
            match store.shutdown().await {
                Ok(r) => log::info!(
                    "store: {} rows inserted, {} batches left in the spool",
                    r.stats.inserted_rows,
                    r.spooled_batches
                ),
                Err(e) => log::error!("store: {e}"),
            }
        }
        let s = &self.engine.stats;
        log::info!(
            "stopping: {} records, {} events, {} prefilter false positives",
            s.records,
            s.events,
            s.filter_false_positives
        );
        Ok(())
    }
}

/// The next watchdog tick; never without a watchdog.
async fn watchdog_tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Takes the lock beside the live socket (`<socket>.lock`): a second daemon on the same socket
/// stops with the first one's pid. A lock that cannot be made for another reason leaves the
/// socket to `live::Server::bind`, whose failure only disables the dashboard's feed.
fn lock_live_socket(socket: &Path) -> Result<Option<files::PidLock>, DaemonError> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match files::PidLock::acquire("live socket", socket, &files::socket_lock_path(socket)) {
        Ok(l) => Ok(Some(l)),
        Err(e @ files::FileError::Locked { .. }) => Err(e.into()),
        Err(e) => {
            log::warn!("{e}");
            Ok(None)
        }
    }
}

/// DNS packets handled per loop turn at most: a flood of DNS packets (anyone can send them)
/// delays the ring buffer by this much work, not by the whole flood.
const DNS_PER_TURN: usize = 256;

/// Hand the DNS packets the kernel copied so far to the engine, at most [`DNS_PER_TURN`]; true
/// when their ring buffer is empty.
fn drain_dns(
    dns: &mut aya::maps::RingBuf<aya::maps::MapData>,
    engine: &mut Engine<ProcHost>,
) -> bool {
    for _ in 0..DNS_PER_TURN {
        let Some(item) = dns.next() else {
            return true;
        };
        match crate::domain::decode::dns_record(&item) {
            Some((pkt, origin)) => engine.dns_packet(pkt, origin),
            None => log::warn!("dropping a malformed DNS record of {} bytes", item.len()),
        }
    }
    false
}

/// SIGHUP. With `--config`, the file is read again under the same flags: the registry (its path
/// and contents), the log level and the cmdline mode are put in force, and every other change
/// is named as needing a restart (the running values stay). A file that has become invalid is
/// logged with its places and nothing changes, the registry included. Then (or without
/// `--config`) the registry is reloaded. Returns whether the new registry is in force.
fn hangup(
    config: Option<&mut crate::app::config::Reload>,
    registry_path: &mut PathBuf,
    key: u64,
    probes: &mut Probes,
    engine: &mut Engine<ProcHost>,
) -> bool {
    let Some(config) = config else {
        log::info!("SIGHUP: reloading {}", registry_path.display());
        return reload(key, registry_path, probes, engine);
    };
    let file = config.path.display().to_string();
    log::info!("SIGHUP: reading {file} again");
    let new = match config.reread() {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                log::error!("SIGHUP: {p}");
            }
            log::error!(
                "SIGHUP: {file} is invalid: nothing reloaded, the settings in force stay (the \
                 registry's too)"
            );
            return false;
        }
    };
    let changes = crate::app::config::changes(&config.running, &new);
    if !changes.restart.is_empty() {
        log::warn!(
            "SIGHUP: {file}: needs a restart: {} (the running values stay until then)",
            changes.restart.join(", ")
        );
    }
    let running = &mut config.running;
    if new.log_level != running.log_level {
        crate::app::logging::set_level(&new.log_level);
        log::info!("SIGHUP: log_level is now {}", new.log_level);
        running.log_level = new.log_level;
    }
    if new.cmdline != running.cmdline {
        engine.set_cmdline_mode(new.cmdline);
        log::info!(
            "SIGHUP: cmdline is now {}",
            format!("{:?}", new.cmdline).to_lowercase()
        );
        running.cmdline = new.cmdline;
    }
    if new.registry == *registry_path {
        log::info!("SIGHUP: reloading {}", registry_path.display());
        return reload(key, registry_path, probes, engine);
    }
    log::info!(
        "SIGHUP: registry is now {} (was {})",
        new.registry.display(),
        registry_path.display()
    );
    let ok = reload(key, &new.registry, probes, engine);
    if ok {
        registry_path.clone_from(&new.registry);
        running.registry = new.registry;
    } else {
        log::error!(
            "SIGHUP: the registry {} stays in force",
            registry_path.display()
        );
    }
    ok
}

/// Load the registry again and put it in force, in the kernel's filter and in the engine, without
/// detaching anything. An invalid registry is refused and the one in force stays (false).
fn reload(key: u64, path: &Path, probes: &mut Probes, engine: &mut Engine<ProcHost>) -> bool {
    let registry = match registry::load(path) {
        Ok(r) => r,
        Err(e) => {
            log::error!("registry not reloaded, the previous one stays in force: {e}");
            return false;
        }
    };
    let plan = match kernel_plan(key, &registry) {
        Ok(p) => p,
        Err(e) => {
            log::error!(
                "registry not reloaded, the previous one stays in force: {}: {e}",
                path.display()
            );
            return false;
        }
    };
    if let Err(e) = probes.set_filter(&plan) {
        log::error!("registry not reloaded: cannot update the kernel filter: {e}");
        return false;
    }
    let n = registry.nhis.len();
    engine.set_registry(Arc::new(registry));
    log::info!(
        "registry reloaded: {n} NHIs, {} filter keys",
        plan.keys.len()
    );
    true
}

/// A random key for the filter's hashes, drawn once per run: names that collide with watched
/// ones in the kernel's bitmap cannot be prepared in advance.
fn random_key() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // The kernel's entropy pool is always there after boot; this is a last resort that is
        // still different per run.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(b)
}

/// The kernel's filter for `registry`: the name keys of its patterns, and the inodes of what is
/// on disk now (every literal credential file, every watched directory), so that any name of
/// those files (a hard link) is seen.
fn kernel_plan(
    key: u64,
    registry: &registry::Registry,
) -> Result<filter::FilterPlan, filter::FilterError> {
    use std::os::unix::fs::MetadataExt as _;
    let mut plan = registry.filter_plan(key)?;
    for ino in registry
        .nhis
        .iter()
        .flat_map(|n| &n.credentials)
        .filter(|g| g.is_literal())
        .filter_map(|g| std::fs::metadata(g.as_str()).ok())
        .map(|m| m.ino())
    {
        plan.add_inode(monitor_common::filter::KeyKind::Inode, ino);
    }
    for dir in plan.dirs.clone() {
        if let Ok(m) = std::fs::metadata(&dir) {
            plan.add_inode(monitor_common::filter::KeyKind::DirInode, m.ino());
        }
    }
    Ok(plan)
}

/// Credential files replaced since the last look (a new file renamed over the old one, the usual
/// rotation) have new inodes: put them in the kernel's filter and the engine. Their names were
/// watched all along, so the first open after the rename was already seen by name; this makes
/// the new file's other names (hard links) seen too, within a second.
fn refresh_inodes(key: u64, probes: &mut Probes, engine: &mut Engine<ProcHost>) {
    let registry = Arc::clone(engine.registry());
    let Ok(plan) = kernel_plan(key, &registry) else {
        return;
    };
    if probes.filter_words() == plan.words.as_slice() {
        return;
    }
    log::info!("credential files changed on disk: kernel filter and inodes updated");
    if let Err(e) = probes.set_filter(&plan) {
        log::error!("cannot update the kernel filter: {e}");
    }
    engine.set_registry(registry);
}

/// Notices when the registry file changes (modification time, size or inode).
struct RegistryWatch {
    last: Option<(std::time::SystemTime, u64, u64)>,
}

impl RegistryWatch {
    fn new(path: &Path) -> Self {
        Self {
            last: Self::stamp(path),
        }
    }

    fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len(), m.ino()))
    }

    fn seen(&mut self, path: &Path) {
        self.last = Self::stamp(path);
    }

    /// True once per change; a file that disappears is not a change (editors replace files).
    fn changed(&mut self, path: &Path) -> bool {
        let now = Self::stamp(path);
        if now.is_some() && now != self.last {
            self.last = now;
            return true;
        }
        false
    }
}

/// Where events go when they leave the daemon.
struct Outputs {
    /// `--json`: a file or standard output.
    json: Sink,
    /// The live feed (`nhiscope tui`).
    live: live::Server,
    /// ClickHouse.
    store: Option<crate::publish::store::StoreHandle>,
    /// Prometheus counters.
    metrics: Option<Arc<Metrics>>,
    /// One event's JSON line (kept to reuse its allocation).
    line: Vec<u8>,
}

impl Outputs {
    /// Events leave the daemon: counted, written as JSON lines (each encoded once, for the
    /// `--json` output and the live feed alike), then taken by the store (`out` is left empty).
    fn emit(&mut self, out: &mut Vec<Event>) -> Result<(), DaemonError> {
        let failed = |source: std::io::Error| DaemonError::Output { source };
        if let Some(m) = &self.metrics {
            m.observe(out);
        }
        let to_json = !matches!(self.json, Sink::None);
        for e in out.iter() {
            self.line.clear();
            // With no client connected and no `--json`, nothing needs the text.
            if to_json || self.live.clients() > 0 {
                e.write_json(&mut self.line);
            }
            self.json.write_line(&self.line).map_err(failed)?;
            self.live.publish_json(&self.line);
        }
        self.json.flush().map_err(failed)?;
        match &self.store {
            Some(store) => store.send_owned(out),
            None => out.clear(),
        }
        Ok(())
    }
}

/// How long a record may wait in the ring buffer before the daemon reads it, when the programs
/// did not wake it (the buffer is far from full).
pub const RING_POLL: Duration = Duration::from_millis(50);

/// Whether the daemon has read the record of every holder the full set refused: `last` is the
/// refusals counted and the kernel's ring position at the last tick (in that order), `refusals`
/// the count now and `consumer` how far the daemon has read now. No refusal since, and read
/// past that position: records written since (a busy host's) need not be read too.
fn refusals_read(last: (u64, u64), refusals: u64, consumer: u64) -> bool {
    refusals == last.0 && consumer >= last.1
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    engine: &mut Engine<ProcHost>,
    out: &mut Vec<Event>,
) -> bool {
    for _ in 0..RECORDS_PER_TURN {
        let Some(item) = ring.next() else {
            return false;
        };
        match decode::decode(&item) {
            Ok(ev) => engine.handle(ev, out),
            Err(e) => log::warn!("dropping a malformed kernel record: {e}"),
        }
    }
    true
}

/// Kernel records handled per turn of the loop at most, before the events leave and signals,
/// DNS and the clock get their turn: a flood is drained in bounded steps, never in one
/// unbounded batch.
const RECORDS_PER_TURN: usize = 8192;

/// Turn growth of the kernel's loss counters into `loss` events.
/// Returns whether the ring buffer was found full by the kernel since the last call.
fn losses(
    probes: &Probes,
    engine: &Engine<ProcHost>,
    reported: &mut [u64; LOSS_CAUSES as usize],
    out: &mut Vec<Event>,
) -> bool {
    let now = probes.losses();
    let mut ring_full = false;
    for cause in LossCause::ALL {
        let i = cause as usize;
        if now[i] > reported[i] {
            ring_full |= cause.ring_full();
            let n = now[i] - reported[i];
            let mut e = Event::new(Kind::Loss, Ts::now(), engine.host().into());
            e.count = Some(n);
            e.cause = Some(cause.name().to_string());
            e.reason = match cause {
                LossCause::PendingFull => format!(
                    "{n} record(s) left the kernel without their exec arguments or io_uring \
                     open name (a pending map was full)."
                ),
                _ => format!(
                    "{n} {} record(s) were lost in the kernel ({}).",
                    cause.kind(),
                    cause.name().replace('_', " ")
                ),
            };
            out.push(e);
            reported[i] = now[i];
        }
    }
    ring_full
}

/// The daemon's part of the live feed's health report; the server adds uptime, event rate and
/// its client counters.
fn live_health(
    probes: &Probes,
    store: Option<&crate::publish::store::StoreHandle>,
    ring_peak: u64,
    ring_size: u32,
) -> live::Health {
    let lost = probes.losses();
    live::Health {
        ringbuf_fill: Some(ring_peak as f64 / f64::from(ring_size.max(1))),
        ringbuf_bytes: Some(u64::from(ring_size)),
        clickhouse: store.map(|s| {
            let st = s.stats();
            live::ClickHouseHealth {
                connected: st.healthy,
                lag_secs: Some(st.lag.as_secs_f64()),
                spool_bytes: Some(st.spool_bytes),
                spool_rows: Some(st.spool_rows),
                last_error: s.last_error(),
            }
        }),
        kernel_drops: lost.iter().sum(),
        kernel_drops_by_cause: LossCause::ALL
            .iter()
            .filter(|&&c| lost[c as usize] > 0)
            .map(|&c| (c.name().to_owned(), lost[c as usize]))
            .collect(),
        ..live::Health::default()
    }
}

/// What the metrics copy once a second, from the same sources as the health report.
fn metrics_sample(
    probes: &Probes,
    engine: &Engine<ProcHost>,
    store: Option<&crate::publish::store::StoreHandle>,
    live: &live::Server,
    ring_peak: u64,
    ring_size: u32,
) -> metrics::Sample {
    metrics::Sample {
        ringbuf_fill: ring_peak as f64 / f64::from(ring_size.max(1)),
        ringbuf_bytes: u64::from(ring_size),
        kernel_losses: probes.losses(),
        records: engine.stats.records,
        parent_pipe_undetermined: engine.stats.parent_pipe_undetermined,
        judged_forgotten: engine.stats.judged_forgotten,
        dns: engine.dns_stats(),
        dns_cached_addresses: engine.dns_cached_addresses(),
        store: store.map(crate::publish::store::StoreHandle::stats),
        live_clients: live.clients(),
        live_clients_dropped: live.dropped(),
        live_clients_refused: live.refused(),
    }
}

#[cfg(test)]
mod tests {
    use super::refusals_read;

    #[test]
    fn refused_holders_are_read_once_the_ring_is_read_past_the_last_tick_even_while_busy() {
        // The kernel wrote up to 4096 at the last tick, with 7 refusals counted; it has
        // written on since (the ring is never empty on a busy host), and the daemon has read
        // past 4096: every refusal's record is read.
        assert!(refusals_read((7, 4096), 7, 4096));
        assert!(refusals_read((7, 4096), 7, 9000));
        // Not yet read that far: a refused holder's record may be among the unread.
        assert!(!refusals_read((7, 4096), 7, 4088));
        // A refusal since the last tick: its record may have been written after 4096.
        assert!(!refusals_read((7, 4096), 8, 9000));
    }
}
