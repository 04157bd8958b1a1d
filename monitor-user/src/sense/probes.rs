//! The kernel side, from userspace: load the eBPF object, fill its maps, attach its programs,
//! and hand out the ring buffer and the loss counters.
//!
//! The object is embedded in the binary at build time (`build.rs`); a binary built without it
//! says so instead of starting.

use aya::{
    maps::{Array, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, RawTracePoint, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use monitor_common::{config, LossCause, LOSS_CAUSES};
use thiserror::Error;

use crate::domain::filter::FilterPlan;

/// Where a program hangs.
#[derive(Clone, Copy, Debug)]
enum Hook {
    /// A tracepoint: (group, name).
    Tracepoint(&'static str, &'static str),
    /// A raw tracepoint.
    Raw(&'static str),
    /// A cgroup socket-address program on the root cgroup v2 (its attach type is in the object).
    CgroupSockAddr,
    /// A cgroup socket-buffer program on the root cgroup v2, on egress.
    CgroupSkbEgress,
    CgroupSkbIngress,
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Tracepoint(g, n) => write!(f, "tracepoint {g}:{n}"),
            Hook::Raw(n) => write!(f, "raw tracepoint {n}"),
            Hook::CgroupSockAddr => write!(f, "the root cgroup"),
            Hook::CgroupSkbEgress => write!(f, "the root cgroup's egress"),
            Hook::CgroupSkbIngress => write!(f, "the root cgroup's ingress"),
        }
    }
}

/// Every program in the object, with where it hangs.
const PROGRAMS: &[(&str, Hook)] = &[
    (
        "sys_exit_openat",
        Hook::Tracepoint("syscalls", "sys_exit_openat"),
    ),
    (
        "sys_exit_openat2",
        Hook::Tracepoint("syscalls", "sys_exit_openat2"),
    ),
    (
        "sys_exit_open",
        Hook::Tracepoint("syscalls", "sys_exit_open"),
    ),
    (
        "sys_exit_creat",
        Hook::Tracepoint("syscalls", "sys_exit_creat"),
    ),
    (
        "sys_exit_open_by_handle_at",
        Hook::Tracepoint("syscalls", "sys_exit_open_by_handle_at"),
    ),
    (
        "io_uring_complete",
        Hook::Tracepoint("io_uring", "io_uring_complete"),
    ),
    (
        "io_uring_submit_req",
        Hook::Tracepoint("io_uring", "io_uring_submit_req"),
    ),
    ("sched_process_fork", Hook::Raw("sched_process_fork")),
    ("sched_process_exec", Hook::Raw("sched_process_exec")),
    (
        "sched_process_exit",
        Hook::Tracepoint("sched", "sched_process_exit"),
    ),
    (
        "sys_enter_execve",
        Hook::Tracepoint("syscalls", "sys_enter_execve"),
    ),
    (
        "sys_enter_execveat",
        Hook::Tracepoint("syscalls", "sys_enter_execveat"),
    ),
    (
        "inet_sock_set_state",
        Hook::Tracepoint("sock", "inet_sock_set_state"),
    ),
    ("udp_connect4", Hook::CgroupSockAddr),
    ("udp_connect6", Hook::CgroupSockAddr),
    ("udp_sendmsg4", Hook::CgroupSockAddr),
    ("udp_sendmsg6", Hook::CgroupSockAddr),
    ("wire_egress", Hook::CgroupSkbEgress),
    ("dns_ingress", Hook::CgroupSkbIngress),
];

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid host).
fn cgroup2_root() -> Option<std::path::PathBuf> {
    crate::sense::proc_host::cgroup2_mount(&std::fs::read_to_string("/proc/self/mounts").ok()?)
}

/// Why the probes could not be set up.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// The binary was built without the eBPF object.
    #[error("this nhiscope binary was built without its eBPF programs: build it with `cargo xtask build`")]
    NoObject,
    /// The kernel refused the object (no BPF support, no permission, verifier).
    #[error("cannot load the eBPF programs: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A map the object must have is missing or has the wrong type.
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, String),
    /// A program could not be loaded or attached.
    #[error("cannot attach {prog} to {hook}: {source}")]
    Attach {
        prog: &'static str,
        hook: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// No cgroup v2 hierarchy to hang the UDP programs on.
    #[error("no cgroup v2 hierarchy is mounted: UDP destinations cannot be seen ({0})")]
    NoCgroup2(String),
}

#[cfg(nhiscope_bpf)]
fn object() -> Option<&'static [u8]> {
    Some(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/nhiscope.bpf.o"
    )))
}

#[cfg(not(nhiscope_bpf))]
fn object() -> Option<&'static [u8]> {
    None
}

/// Settings for loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, a multiple of the page size); None keeps the
    /// object's default (8 MiB: about 25,000 watched opens, 150 ms at 150k opens/s, while
    /// keeping the daemon under 30 MB resident; the buffer is mapped twice, so it counts double).
    pub ringbuf_bytes: Option<u32>,
    /// Send every open, unfiltered (debugging the prefilter).
    pub all_opens: bool,
    /// Mark every process's TCP connections for their first bytes, not only holders'.
    pub all_connections: bool,
    /// The holder set's size, when not `monitor_common::HOLDERS_MAX`.
    pub holder_set_max: Option<u32>,
    /// Kernel struct offsets for following tasks to files, dentries and mounts (see `btf`).
    pub offsets: Option<crate::sense::btf::KernelOffsets>,
}

/// The loaded and attached programs.
pub struct Probes {
    bpf: Ebpf,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    losses: PerCpuArray<MapData, u64>,
    attached: usize,
    /// The bitmap as last written to the kernel.
    filter: Vec<u64>,
    options: LoadOptions,
}

impl Probes {
    /// Load the object, write the filter and settings, attach every program.
    pub fn load(plan: &FilterPlan, opts: &LoadOptions) -> Result<Self, ProbeError> {
        let data = object().ok_or(ProbeError::NoObject)?;
        let mut loader = EbpfLoader::new();
        if let Some(b) = opts.ringbuf_bytes {
            loader.map_max_entries("EVENTS", b);
        }
        if let Some(n) = opts.holder_set_max {
            loader.map_max_entries("HOLDERS", n);
        }
        // Offsets plus one (0: unknown), read-only for the programs: the verifier sees them as
        // constants (monitor-ebpf/src/probes/files.rs, `OFFSETS`).
        let mut offsets = [0u64; config::OFFSET_SLOTS];
        if let Some(o) = &opts.offsets {
            for (slot, &offset) in offsets.iter_mut().zip(o.0.iter()) {
                *slot = u64::from(offset) + 1;
            }
        }
        loader.override_global("OFFSETS", &offsets, true);
        let mut bpf = loader
            .load(data)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;
        // Kernel log lines (rare: only on loss) go to our logger; kept alive with the programs.
        let logger = match aya_log::EbpfLogger::init(&mut bpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::debug!("eBPF logger not initialised: {e}");
                None
            }
        };
        let mut probes = Self {
            losses: PerCpuArray::try_from(
                bpf.take_map("LOSSES")
                    .ok_or(ProbeError::Map("LOSSES", "missing".into()))?,
            )
            .map_err(|e| ProbeError::Map("LOSSES", e.to_string()))?,
            bpf,
            logger,
            attached: 0,
            filter: Vec::new(),
            options: opts.clone(),
        };
        probes.set_filter(plan)?;
        probes.load_tail_calls()?;
        let mut cgroup: Option<std::fs::File> = None;
        for &(prog, hook) in PROGRAMS {
            let attach_err = |e: aya::programs::ProgramError| ProbeError::Attach {
                prog,
                hook: hook.to_string(),
                source: Box::new(e),
            };
            let program = probes.bpf.program_mut(prog).ok_or(ProbeError::Map(
                prog,
                "program missing from the object".into(),
            ))?;
            let started = std::time::Instant::now();
            match hook {
                Hook::Tracepoint(group, name) => {
                    let tp: &mut TracePoint = program.try_into().map_err(attach_err)?;
                    tp.load().map_err(attach_err)?;
                    tp.attach(group, name).map_err(attach_err)?;
                }
                Hook::Raw(name) => {
                    let tp: &mut RawTracePoint = program.try_into().map_err(attach_err)?;
                    tp.load().map_err(attach_err)?;
                    tp.attach(name).map_err(attach_err)?;
                }
                Hook::CgroupSockAddr | Hook::CgroupSkbEgress | Hook::CgroupSkbIngress => {
                    if cgroup.is_none() {
                        let root = cgroup2_root()
                            .ok_or_else(|| ProbeError::NoCgroup2("/proc/self/mounts".into()))?;
                        cgroup = Some(std::fs::File::open(&root).map_err(|e| {
                            ProbeError::NoCgroup2(format!("{}: {e}", root.display()))
                        })?);
                    }
                    let Some(cg) = cgroup.as_ref() else {
                        continue;
                    };
                    // A BPF link (kernel >= 5.7): other agents' programs on the root cgroup keep
                    // running beside ours; links take no attach flags, hence `Single`.
                    if let Some(way) = match hook {
                        Hook::CgroupSkbEgress => Some(CgroupSkbAttachType::Egress),
                        Hook::CgroupSkbIngress => Some(CgroupSkbAttachType::Ingress),
                        _ => None,
                    } {
                        let p: &mut CgroupSkb = program.try_into().map_err(attach_err)?;
                        p.load().map_err(attach_err)?;
                        p.attach(cg, way, CgroupAttachMode::Single)
                            .map_err(attach_err)?;
                    } else {
                        let p: &mut CgroupSockAddr = program.try_into().map_err(attach_err)?;
                        p.load().map_err(attach_err)?;
                        p.attach(cg, CgroupAttachMode::Single).map_err(attach_err)?;
                    }
                }
            }
            log::debug!("attached {prog} to {hook} in {:?}", started.elapsed());
            probes.attached += 1;
        }
        Ok(probes)
    }

    /// Load the programs the others hand over to (tail calls) and put them in `TAIL`, before
    /// any program that calls them is attached: `scan_sockets`, which an open's program runs
    /// after the first open of a credential file by a process.
    fn load_tail_calls(&mut self) -> Result<(), ProbeError> {
        const PROG: &str = "scan_sockets";
        let err = |e: aya::programs::ProgramError| ProbeError::Attach {
            prog: PROG,
            hook: "the open tracepoints' tail call".into(),
            source: Box::new(e),
        };
        let program = self.bpf.program_mut(PROG).ok_or(ProbeError::Map(
            PROG,
            "program missing from the object".into(),
        ))?;
        let tp: &mut TracePoint = program.try_into().map_err(err)?;
        tp.load().map_err(err)?;
        let fd = tp
            .fd()
            .map_err(err)?
            .try_clone()
            .map_err(|e| ProbeError::Map(PROG, e.to_string()))?;
        let map = self
            .bpf
            .map_mut("TAIL")
            .ok_or(ProbeError::Map("TAIL", "missing".into()))?;
        let mut tail =
            ProgramArray::try_from(map).map_err(|e| ProbeError::Map("TAIL", e.to_string()))?;
        // `SCAN_SOCKETS` in monitor-ebpf/src/maps.rs.
        tail.set(0, &fd, 0)
            .map_err(|e| ProbeError::Map("TAIL", e.to_string()))
    }

    /// How many programs are attached.
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// Hand the kernel programs' log lines (aya-log: rare, about losses) to the daemon's log.
    pub fn flush_log(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// The bitmap as last written to the kernel.
    pub fn filter_words(&self) -> &[u64] {
        &self.filter
    }

    /// Replace the prefilter bitmap and its settings, while the programs run.
    ///
    /// Only changed words are written, in two passes: first the union of the old and the new
    /// bits, then the new bits. A path watched both before and after is never missed while the
    /// update is under way; a path watched only before may pass a moment longer (harmless: the
    /// daemon matches exactly).
    pub fn set_filter(&mut self, plan: &FilterPlan) -> Result<(), ProbeError> {
        let mut filter: Array<&mut MapData, u64> = Array::try_from(
            self.bpf
                .map_mut("FILTER")
                .ok_or(ProbeError::Map("FILTER", "missing".into()))?,
        )
        .map_err(|e| ProbeError::Map("FILTER", e.to_string()))?;
        let old = std::mem::take(&mut self.filter);
        let was = |i: usize| old.get(i).copied().unwrap_or(0);
        let mut write = |i: usize, w: u64| {
            filter
                .set(i as u32, w, 0)
                .map_err(|e| ProbeError::Map("FILTER", e.to_string()))
        };
        for (i, &w) in plan.words.iter().enumerate() {
            if w | was(i) != was(i) {
                write(i, w | was(i))?;
            }
        }
        for (i, &w) in plan.words.iter().enumerate() {
            if w != w | was(i) {
                write(i, w)?;
            }
        }
        self.filter = plan.words.clone();
        let opts = self.options.clone();
        self.set_config(plan, &opts)
    }

    fn set_config(&mut self, plan: &FilterPlan, opts: &LoadOptions) -> Result<(), ProbeError> {
        let mut cfg: Array<&mut MapData, u64> = Array::try_from(
            self.bpf
                .map_mut("CONFIG")
                .ok_or(ProbeError::Map("CONFIG", "missing".into()))?,
        )
        .map_err(|e| ProbeError::Map("CONFIG", e.to_string()))?;
        let mut flags = 0;
        if plan.parent_scan {
            flags |= config::FLAG_PARENT_SCAN;
        }
        if plan.ancestor_scan {
            flags |= config::FLAG_ANCESTOR_SCAN;
        }
        if opts.all_opens {
            flags |= config::FLAG_ALL_OPENS;
        }
        if opts.all_connections {
            flags |= config::FLAG_ALL_CONNECTIONS;
        }
        let set = |cfg: &mut Array<&mut MapData, u64>, i, v| {
            cfg.set(i, v, 0)
                .map_err(|e| ProbeError::Map("CONFIG", e.to_string()))
        };
        set(&mut cfg, config::SELF_PID, u64::from(std::process::id()))?;
        // 0 when it cannot be read: every socket's user is then checked (see
        // `probes::netns::as_used`), which costs a few reads and changes nothing else.
        set(
            &mut cfg,
            config::HOST_NETNS,
            own_netns_cookie().unwrap_or(0),
        )?;
        set(&mut cfg, config::HASH_KEY, plan.key)?;
        set(&mut cfg, config::FLAGS, flags)?;
        Ok(())
    }

    /// Take the DNS packets' ring buffer (once): see `monitor-ebpf/src/probes/dns.rs`.
    pub fn take_dns_ring(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self.bpf.take_map("DNS_EVENTS").ok_or(ProbeError::Map(
            "DNS_EVENTS",
            "missing or already taken".into(),
        ))?;
        RingBuf::try_from(map).map_err(|e| ProbeError::Map("DNS_EVENTS", e.to_string()))
    }

    /// Take the event ring buffer (once), with a gauge of how full it is.
    pub fn take_ring(&mut self) -> Result<(RingBuf<MapData>, RingFill), ProbeError> {
        let map = self
            .bpf
            .take_map("EVENTS")
            .ok_or(ProbeError::Map("EVENTS", "missing or already taken".into()))?;
        let size = match &map {
            aya::maps::Map::RingBuf(data) => data
                .info()
                .map_err(|e| ProbeError::Map("EVENTS", e.to_string()))?
                .max_entries(),
            _ => return Err(ProbeError::Map("EVENTS", "not a ring buffer".into())),
        };
        let ring = RingBuf::try_from(map).map_err(|e| ProbeError::Map("EVENTS", e.to_string()))?;
        let fill = RingFill::new(&ring, size)
            .map_err(|e| ProbeError::Map("EVENTS", format!("mapping its positions: {e}")))?;
        Ok((ring, fill))
    }

    /// Put processes in the kernel's holder set (`true`) or take them out (`false`): their TCP
    /// connections are marked for their first bytes. A full set is logged once per call; the
    /// kernel's own additions (at a credential's open, at fork) go on regardless.
    pub fn set_holders(&mut self, changes: &[(u32, bool)]) -> Result<(), ProbeError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut map: aya::maps::HashMap<&mut MapData, u32, u32> = aya::maps::HashMap::try_from(
            self.bpf
                .map_mut("HOLDERS")
                .ok_or(ProbeError::Map("HOLDERS", "missing".into()))?,
        )
        .map_err(|e| ProbeError::Map("HOLDERS", e.to_string()))?;
        let mut full = None;
        for &(pid, add) in changes {
            if add {
                if let Err(e) = map.insert(pid, monitor_common::HOLDER_BY_DAEMON, 0) {
                    full = Some(e);
                }
            } else if map.get(&pid, 0).ok() == Some(monitor_common::HOLDER_BY_DAEMON) {
                // The kernel removes every member at its exit; this only clears what the daemon
                // added after that (it learns of exits late). An entry the kernel made is a new
                // process that reused the pid, and stays.
                let _ = map.remove(&pid);
            }
        }
        match full {
            Some(e) => {
                // As the kernel does when it finds the set full: every connection is marked
                // until there is room (`holder_set_check`).
                self.set_config_slot(config::HOLDERS_FULL, 1)?;
                Err(ProbeError::Map("HOLDERS", e.to_string()))
            }
            None => Ok(()),
        }
    }

    /// Whether the kernel's holder set is full (so every process's connections are marked);
    /// once it has room again (below three quarters of its size) and the daemon has `settled`
    /// (read the records of every holder the set refused, so that `holders` holds them),
    /// `holders` (every process the daemon knows to hold an NHI) are put in first, and only
    /// then does the kernel go back to marking holders' connections only, so that no refused
    /// holder's connection falls between the two. Counts the set's entries only while it is
    /// full.
    pub fn holder_set_check(
        &mut self,
        holders: impl Iterator<Item = u32>,
        settled: bool,
    ) -> Result<bool, ProbeError> {
        let cfg: Array<&MapData, u64> = Array::try_from(
            self.bpf
                .map("CONFIG")
                .ok_or(ProbeError::Map("CONFIG", "missing".into()))?,
        )
        .map_err(|e| ProbeError::Map("CONFIG", e.to_string()))?;
        if cfg.get(&config::HOLDERS_FULL, 0).unwrap_or(0) == 0 {
            return Ok(false);
        }
        let mut map: aya::maps::HashMap<&mut MapData, u32, u32> = aya::maps::HashMap::try_from(
            self.bpf
                .map_mut("HOLDERS")
                .ok_or(ProbeError::Map("HOLDERS", "missing".into()))?,
        )
        .map_err(|e| ProbeError::Map("HOLDERS", e.to_string()))?;
        let max = self
            .options
            .holder_set_max
            .unwrap_or(monitor_common::HOLDERS_MAX);
        let entries = map.keys().filter(Result::is_ok).count();
        if !settled || entries as u64 * 4 >= u64::from(max) * 3 {
            return Ok(true);
        }
        // BPF_NOEXIST: an entry already there (the kernel's own, or put in before) stays as it
        // is; any other failure leaves the set full.
        const BPF_NOEXIST: u64 = 1;
        for pid in holders {
            match map.insert(pid, monitor_common::HOLDER_BY_DAEMON, BPF_NOEXIST) {
                Ok(()) => {}
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(_) => return Ok(true),
            }
        }
        self.set_config_slot(config::HOLDERS_FULL, 0)?;
        Ok(false)
    }

    fn set_config_slot(&mut self, slot: u32, value: u64) -> Result<(), ProbeError> {
        let mut cfg: Array<&mut MapData, u64> = Array::try_from(
            self.bpf
                .map_mut("CONFIG")
                .ok_or(ProbeError::Map("CONFIG", "missing".into()))?,
        )
        .map_err(|e| ProbeError::Map("CONFIG", e.to_string()))?;
        cfg.set(slot, value, 0)
            .map_err(|e| ProbeError::Map("CONFIG", e.to_string()))
    }

    /// Records lost in the kernel so far, per cause, summed over CPUs.
    pub fn losses(&self) -> [u64; LOSS_CAUSES as usize] {
        let mut out = [0u64; LOSS_CAUSES as usize];
        for cause in LossCause::ALL {
            if let Ok(v) = self.losses.get(&(cause as u32), 0) {
                out[cause as usize] = v.iter().sum();
            }
        }
        out
    }
}

/// How full the kernel ring buffer is: the producer position minus the consumer position, read
/// from the buffer's first two pages (the kernel lets any holder of the map map them read-only).
/// Nothing is read from the data pages.
pub struct RingFill {
    pages: std::ptr::NonNull<libc::c_void>,
    page: usize,
    size: u32,
}

// SAFETY: the mapping is read-only and only read with atomic loads.
unsafe impl Send for RingFill {}

impl RingFill {
    fn new(ring: &RingBuf<MapData>, size: u32) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| std::io::Error::other("no page size"))?;
        // SAFETY: a fresh read-only shared mapping of the map's consumer and producer pages;
        // the kernel checks the offset and length.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                ring.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let pages = std::ptr::NonNull::new(p).ok_or_else(|| std::io::Error::other("null map"))?;
        Ok(Self { pages, page, size })
    }

    /// The ring buffer's size in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Bytes written by the kernel and not yet consumed (record headers included).
    pub fn used(&self) -> u64 {
        let (consumer, producer) = self.positions();
        producer.saturating_sub(consumer).min(u64::from(self.size))
    }

    /// The daemon's and the kernel's positions in the ring: bytes ever consumed, and ever
    /// reserved (record headers included), both only ever growing. Every record reserved
    /// before a reading of `producer` is read once a later `consumer` reaches it.
    pub fn positions(&self) -> (u64, u64) {
        // SAFETY: both positions are naturally aligned u64s at the start of the two mapped
        // pages, which live as long as `self`; the kernel updates them atomically.
        unsafe {
            let base = self.pages.as_ptr().cast::<u8>();
            let c = &*base.cast::<std::sync::atomic::AtomicU64>();
            let p = &*base.add(self.page).cast::<std::sync::atomic::AtomicU64>();
            (
                c.load(std::sync::atomic::Ordering::Acquire),
                p.load(std::sync::atomic::Ordering::Acquire),
            )
        }
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.pages.as_ptr(), 2 * self.page);
        }
    }
}

/// The daemon's own network namespace (the host's: it runs there), as its cookie
/// (`SO_NETNS_COOKIE`), the value `bpf_get_netns_cookie` gives for a socket in it.
fn own_netns_cookie() -> Option<u64> {
    // SAFETY: a plain socket(2); the descriptor is owned at once and closed on drop.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    (r == 0 && cookie != 0).then_some(cookie)
}
