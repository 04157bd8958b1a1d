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
    signal::unix::{signal, SignalKind},
};

use crate::{
    decode,
    engine::{Clock, Engine},
    event::{Event, Kind},
    filter,
    probes::{LoadOptions, ProbeError, Probes},
    registry,
};
use monitor_common::{LossCause, LOSS_CAUSES};

/// What the daemon is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub registry: PathBuf,
    pub json: Option<String>,
    pub ringbuf_bytes: Option<u32>,
    pub hostname: Option<String>,
    pub all_opens: bool,
}

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// Bad input or an unfit host: the user must change something (exit code 2).
    #[error("{0}")]
    Input(String),
    /// A failure while running (exit code 1).
    #[error("{0}")]
    Runtime(String),
}

impl DaemonError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Input(_) => 2,
            Self::Runtime(_) => 1,
        }
    }
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Checks that the host can run the probes; mounts tracefs when it is missing.
fn preflight() -> Result<(), DaemonError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DaemonError::Input(
            "nhiscope daemon must run as root (it loads eBPF programs: CAP_BPF, CAP_PERFMON)"
                .into(),
        ));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() && !Path::new("/sys/kernel/bpf").exists() {
        log::warn!("/sys/kernel/btf/vmlinux is missing: this kernel may lack BPF support");
    }
    if !Path::new(TRACEFS).join("events").is_dir() {
        log::info!("tracefs is not mounted: mounting it at {TRACEFS}");
        let status = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev", TRACEFS])
            .status()
            .map_err(|e| {
                DaemonError::Input(format!(
                    "cannot run mount to mount tracefs at {TRACEFS}: {e}"
                ))
            })?;
        if !status.success() || !Path::new(TRACEFS).join("events").is_dir() {
            return Err(DaemonError::Input(format!(
                "tracefs is not mounted at {TRACEFS} and mounting it failed: mount it with \
                 `mount -t tracefs nodev {TRACEFS}`"
            )));
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
    Writer(std::io::BufWriter<Box<dyn Write + Send>>),
}

impl Sink {
    fn open(spec: Option<&str>) -> Result<Self, DaemonError> {
        Ok(match spec {
            None => Sink::None,
            Some("-") => Sink::Writer(std::io::BufWriter::new(Box::new(std::io::stdout()))),
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        DaemonError::Input(format!("--json {path}: cannot open for writing: {e}"))
                    })?;
                Sink::Writer(std::io::BufWriter::new(Box::new(f)))
            }
        })
    }

    /// Write events, each one complete line, and flush.
    fn write(&mut self, events: &[Event]) -> Result<(), DaemonError> {
        let Sink::Writer(w) = self else { return Ok(()) };
        for e in events {
            serde_json::to_writer(&mut *w, e)
                .map_err(|e| DaemonError::Runtime(format!("writing JSON: {e}")))?;
            w.write_all(b"\n")
                .map_err(|e| DaemonError::Runtime(format!("writing JSON: {e}")))?;
        }
        w.flush()
            .map_err(|e| DaemonError::Runtime(format!("writing JSON: {e}")))
    }
}

/// Run the daemon until a termination signal.
pub async fn run(opts: Options) -> Result<(), DaemonError> {
    let registry = registry::load(&opts.registry).map_err(|e| DaemonError::Input(e.to_string()))?;
    let plan = filter::compile(registry.all_patterns())
        .map_err(|e| DaemonError::Input(format!("{}: {e}", opts.registry.display())))?;
    preflight()?;
    let mut sink = Sink::open(opts.json.as_deref())?;

    let load = LoadOptions {
        ringbuf_bytes: opts.ringbuf_bytes,
        all_opens: opts.all_opens,
    };
    let mut probes = Probes::load(&plan, &load).map_err(|e| match e {
        ProbeError::Attach { .. } | ProbeError::Map(..) => DaemonError::Runtime(e.to_string()),
        _ => DaemonError::Input(e.to_string()),
    })?;
    let ring = probes
        .take_ring()
        .map_err(|e| DaemonError::Runtime(e.to_string()))?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as the
    // AsyncFd owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| DaemonError::Runtime(format!("ring buffer: {}", e.into_parts().1)))?;

    let nhis = registry.nhis.len();
    let host = opts.hostname.clone().unwrap_or_else(hostname);
    let mut engine = Engine::new(Arc::new(registry), "/proc", Clock::now(), host);
    let seeded = engine.procs().seed();
    eprintln!(
        "nhiscope: ready: {} probes attached, {nhis} NHIs registered, {} filter keys, {seeded} processes known",
        probes.attached(),
        plan.keys.len()
    );

    let mut term =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported = [0u64; LOSS_CAUSES as usize];
    let mut ticks: u64 = 0;
    let mut out = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|e| DaemonError::Runtime(format!("ring buffer: {e}")))?;
                drain(guard.get_inner_mut(), &mut engine, &mut out);
                guard.clear_ready();
                sink.write(&out)?;
                out.clear();
            }
            _ = tick.tick() => {
                losses(&probes, &engine, &mut reported, &mut out);
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    let gone = engine.procs().sweep(Duration::from_secs(5));
                    log::debug!("process table: {} entries, {gone} swept", engine.procs().len());
                }
                sink.write(&out)?;
                out.clear();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Everything the kernel delivered before the signal is written before exit.
    drain(ring.get_mut(), &mut engine, &mut out);
    losses(&probes, &engine, &mut reported, &mut out);
    sink.write(&out)?;
    log::info!(
        "stopping: {} records, {} events, {} prefilter false positives",
        engine.stats.records,
        engine.stats.events,
        engine.stats.filter_false_positives
    );
    Ok(())
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    engine: &mut Engine,
    out: &mut Vec<Event>,
) {
    while let Some(item) = ring.next() {
        match decode::decode(&item) {
            Ok(ev) => engine.handle(ev, out),
            Err(e) => log::warn!("dropping a malformed kernel record: {e}"),
        }
    }
}

/// Turn growth of the kernel's loss counters into `loss` events.
fn losses(
    probes: &Probes,
    engine: &Engine,
    reported: &mut [u64; LOSS_CAUSES as usize],
    out: &mut Vec<Event>,
) {
    let now = probes.losses();
    for cause in LossCause::ALL {
        let i = cause as usize;
        if now[i] > reported[i] {
            let n = now[i] - reported[i];
            let ts = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
            let mut e = Event::new(Kind::Loss, ts, engine.host().to_string());
            e.count = Some(n);
            e.cause = Some(cause.name().to_string());
            e.reason = format!(
                "{n} {} record(s) were lost in the kernel ({}).",
                cause.kind(),
                cause.name().replace('_', " ")
            );
            out.push(e);
            reported[i] = now[i];
        }
    }
}
