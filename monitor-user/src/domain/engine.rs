//! The pipeline's core: kernel records in, decided events out.
//!
//! Keeps the process table, resolves paths, links opens and connections to NHIs (attribution),
//! and asks `verdict` for the decision. No I/O of its own: what it needs from the host
//! (processes, file identities and times, cgroups, the clock) it asks a [`Host`]. The daemon
//! feeds it from the ring buffer over the real host (`sense::proc_host`); tests feed it by hand, over
//! a fake host when they need to control time or the files.

use std::{
    collections::HashMap,
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::domain::host::FileId;
use crate::domain::host::Host;

use monitor_common::{ConnectEvent, EventHeader, ExecEvent, OpenEvent, OpenOp, AF_INET};

use crate::{
    domain::decode::{self, KernelEvent},
    domain::event::{errno_name, Dev, Event, Kind, Proto, SharedStr, Ts},
    domain::proctable::{ConnKey, ProcTable, JUDGED_CAP},
    domain::registry::{PathMemo, Placement, Registry},
    domain::resolve,
    domain::text,
    domain::verdict::{self, Actor},
    domain::wire::join::{Conn, Joiner},
    domain::wire::Reading,
};

/// Registered credential files by (major, minor, inode): the NHI's index and the registered path.
type CredInodes = HashMap<(u32, u32, u64), (usize, Arc<str>), foldhash::fast::RandomState>;

/// Converts the kernel's `CLOCK_BOOTTIME` stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Realtime minus boottime, in ns.
    offset_ns: i128,
}

impl Clock {
    /// The offset `host` gives.
    pub fn of(host: &impl Host) -> Self {
        Self {
            offset_ns: host.wall_offset_ns(),
        }
    }

    /// A clock with a fixed offset (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The wall-clock time of a record stamped `boot_ns`, as events carry it (the epoch when
    /// before it): [`Clock::wall`] without going through `SystemTime`.
    pub fn ts(&self, boot_ns: u64) -> Ts {
        let ns = (i128::from(boot_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64;
        Ts {
            secs: ns / 1_000_000_000,
            nanos: (ns % 1_000_000_000) as u32,
        }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let ns = boot_ns as i128 + self.offset_ns;
        if ns <= 0 {
            return UNIX_EPOCH;
        }
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

/// Counters about what the engine did with the records it got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    /// Opens the kernel prefilter let through that no pattern matches.
    pub filter_false_positives: u64,
    pub events: u64,
    /// Credential reads into a pipe whose read end the parent may hold above the descriptors
    /// the kernel compares (`monitor_common::PARENT_SCAN_CUT`): the parent is taken to hold the
    /// NHI, since a process can place a descriptor that high at will.
    pub parent_pipe_undetermined: u64,
    /// Connections a holder's judged list forgot to make room (see `Process::judged`): one of
    /// them found open again at a later credential read is judged again.
    pub judged_forgotten: u64,
}

/// How long a credential file's modification time is trusted before it is read again.
const MTIME_TTL: Duration = Duration::from_secs(1);

/// Kernel records in, events out, over host `H`.
pub struct Engine<H: Host> {
    registry: Arc<Registry>,
    procs: ProcTable,
    /// Where processes, files, cgroups and the time come from.
    sys: H,
    clock: Clock,
    /// The host name events carry (shared by all of them).
    host: SharedStr,
    dns: crate::sense::dns::Dns,
    /// The registered credential files by identity, (major, minor, inode) -> NHI index: a hard
    /// link or a bind mount (in any mount namespace) is the same credential under another name.
    cred_inodes: CredInodes,
    cgroups: crate::domain::cgroups::CgroupNames,
    /// The container id and Kubernetes pod UID of each cgroup seen (cgroup ids are not reused
    /// while the host runs).
    containers: HashMap<u64, Placed, foldhash::fast::RandomState>,
    /// Pod and container names, by pod UID and container id.
    kube: crate::domain::kubernetes::KubeNames,
    /// Modification times of credential files (for `max_age`), read at most once per
    /// [`MTIME_TTL`] per file: a burst of opens costs one `stat`.
    mtimes: HashMap<PathBuf, (Instant, Option<SystemTime>), foldhash::fast::RandomState>,
    /// Pipes a holder writes into (by inode), with the NHIs it holds: a process whose standard
    /// input is one of them holds those NHIs from its next connection on. Bounded by
    /// [`FED_PIPES_CAP`] (cleared when full: a pipe inode is not reused while the host runs,
    /// and an old pipeline's reader already took its holding).
    fed_pipes: HashMap<u64, Vec<Arc<str>>, foldhash::fast::RandomState>,
    /// Pipes some process reads as its standard input (seen at its exec or connect): a
    /// pipeline's pipes, which void holdings granted through them (`Process::holds_via_pipe`).
    /// Bounded like `fed_pipes`.
    pipeline_pipes: std::collections::HashSet<u64, foldhash::fast::RandomState>,
    /// What the registry says of the paths opened lately; forgotten with the registry.
    paths: PathMemo,
    /// Room for [`Registry::holder_candidates`], asked at every exec.
    holder_candidates: Vec<usize>,
    /// Whether any NHI places its holders by cgroup or container: known once per registry,
    /// asked at every exec.
    placed_holders: bool,
    /// The registry's NHI ids as events carry them, in registry order: shared, their JSON
    /// written once.
    nhi_ids: Vec<SharedStr>,
    /// Counts the registries the engine was given: what a process was judged on is judged
    /// again under a new one.
    registry_generation: u64,
    /// Command names of records, shared by the events made of them.
    comms: decode::Comms,
    pub stats: Stats,
    wire: WireState,
}

/// Where a cgroup places its processes: the container and the Kubernetes pod, from its path.
#[derive(Clone, Debug, Default)]
struct Placed {
    container: Option<Arc<str>>,
    pod_uid: Option<Arc<str>>,
}

impl Placed {
    /// From a cgroup v2 path (`/kubepods/burstable/pod<UID>/<id>`).
    fn of(path: &str) -> Self {
        let container =
            crate::domain::proctable::container_id(&format!("0::{path}")).map(Arc::from);
        // Only a container's cgroup is worth the parse: a pod's processes all run in one.
        let pod_uid = container
            .as_ref()
            .and_then(|_| crate::domain::kubernetes::pod_uid(path))
            .map(Arc::from);
        Self { container, pod_uid }
    }
}

/// Pipes remembered at most (see `Engine::fed_pipes`).
const FED_PIPES_CAP: usize = 4096;

/// The NHIs process `p` holds now: its own holdings, and those granted through a pipe that is
/// not one of `pipeline_pipes`.
fn holdings(
    p: &crate::domain::proctable::Process,
    pipeline_pipes: &std::collections::HashSet<u64, foldhash::fast::RandomState>,
) -> Vec<Arc<str>> {
    let mut held: Vec<Arc<str>> = p.holds.iter().cloned().collect();
    for (id, pipe) in &p.holds_via_pipe {
        if !pipeline_pipes.contains(pipe) && !held.contains(id) {
            held.push(Arc::clone(id));
        }
    }
    held
}

/// The NHIs of `reg` whose `holders:` admit a process running `exe` (and `script`) as `uid`,
/// placed `at`, in registry order. `candidates` is room to work in.
fn declared_ids(
    reg: &Registry,
    candidates: &mut Vec<usize>,
    exe: &str,
    script: Option<&str>,
    uid: u32,
    at: Placement<'_>,
) -> Vec<Arc<str>> {
    reg.holder_candidates(exe, script, candidates);
    candidates
        .iter()
        .filter_map(|&i| reg.nhis.get(i))
        .filter(|nhi| {
            nhi.holders
                .as_ref()
                .is_some_and(|h| h.admits(exe, script, uid, at))
        })
        .map(|nhi| Arc::from(nhi.id.as_str()))
        .collect()
}

/// The ids of `registry`'s NHIs, in its order, as events carry them.
fn nhi_ids(registry: &Registry) -> Vec<SharedStr> {
    registry
        .nhis
        .iter()
        .map(|n| SharedStr::from(n.id.as_str()))
        .collect()
}

/// Identity of every literal credential path of `registry`, as it is now on disk.
fn credential_inodes(registry: &Registry, sys: &impl Host) -> CredInodes {
    let mut out = HashMap::default();
    for (i, nhi) in registry.nhis.iter().enumerate() {
        for g in nhi.credentials.iter().filter(|g| g.is_literal()) {
            if let Some(id) = sys.file_id(g.as_str()) {
                out.entry((id.major, id.minor, id.ino))
                    .or_insert_with(|| (i, Arc::from(g.as_str())));
            }
        }
    }
    out
}

impl<H: Host> Engine<H> {
    /// An engine over `sys`, naming itself `host` on events.
    pub fn with_host(registry: Arc<Registry>, sys: H, clock: Clock, host: String) -> Self {
        Self {
            paths: PathMemo::default(),
            holder_candidates: Vec::new(),
            placed_holders: registry.holders_are_placed(),
            nhi_ids: nhi_ids(&registry),
            registry_generation: 0,
            cred_inodes: credential_inodes(&registry, &sys),
            registry,
            procs: ProcTable::new(),
            sys,
            clock,
            host: SharedStr::from(host),
            dns: crate::sense::dns::Dns::default(),
            cgroups: crate::domain::cgroups::CgroupNames::new(),
            containers: HashMap::default(),
            kube: crate::domain::kubernetes::KubeNames::default(),
            mtimes: HashMap::default(),
            fed_pipes: HashMap::default(),
            pipeline_pipes: std::collections::HashSet::default(),
            comms: decode::Comms::default(),
            stats: Stats::default(),
            wire: WireState::default(),
        }
    }

    /// How much of each command line is kept (the daemon's `--cmdline`); set before the
    /// process table is seeded.
    pub fn set_cmdline_mode(&mut self, mode: crate::domain::redact::CmdlineMode) {
        self.procs.set_cmdline_mode(mode);
    }

    /// Where the kubelet's pod and container log directories are (the daemon's
    /// `--pods-log-dir` and `--containers-log-dir`): pod and container names come from them.
    pub fn set_kubernetes_dirs(&mut self, pods: &Path, containers: &Path) {
        self.kube = crate::domain::kubernetes::KubeNames::new(pods, containers);
    }

    pub fn procs(&mut self) -> &mut ProcTable {
        &mut self.procs
    }

    /// Seed the process table with every process the host has; returns how many.
    pub fn seed_processes(&mut self) -> usize {
        self.procs.seed(&self.sys)
    }

    /// Drop table entries that are threads or processes gone without an exit record (see
    /// [`ProcTable::sweep`]); returns how many.
    pub fn sweep_processes(&mut self, grace: Duration) -> usize {
        self.procs.sweep(grace, &self.sys)
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A DNS packet seen on the host, where `at` says: queries are remembered, and the answers
    /// to them give addresses their names in the namespace that asked.
    pub fn dns_packet(&mut self, pkt: &[u8], at: crate::sense::dns::Origin) {
        self.dns.packet(pkt, at, self.sys.now());
    }

    /// DNS servers asked that are not resolvers of the host, each once (for the daemon's log).
    pub fn take_dns_other_servers(&mut self) -> Vec<std::net::IpAddr> {
        self.dns.take_other_servers()
    }

    /// The servers whose DNS answers are believed from now on (see `sense::dns::Resolvers`).
    pub fn set_dns_resolvers(&mut self, resolvers: crate::sense::dns::Resolvers) {
        self.dns.set_resolvers(resolvers);
    }

    /// What became of the DNS packets seen (for health and heartbeats).
    pub fn dns_stats(&self) -> crate::sense::dns::DnsStats {
        self.dns.stats()
    }

    /// Addresses the DNS cache holds names for.
    pub fn dns_cached_addresses(&self) -> usize {
        self.dns.cached_addresses()
    }

    /// Use a new registry from the next record on. Holdings stay: a process that read a
    /// credential still holds its secret, whatever the registry now says about it.
    pub fn set_registry(&mut self, registry: Arc<Registry>) {
        self.cred_inodes = credential_inodes(&registry, &self.sys);
        self.placed_holders = registry.holders_are_placed();
        self.paths.clear();
        self.nhi_ids = nhi_ids(&registry);
        self.registry_generation += 1;
        self.registry = registry;
    }

    /// NHI `id` as events carry it: the registry's shared copy, or a new one for an NHI the
    /// registry no longer has (a holding outlives a reload).
    fn nhi_id(&self, id: &str) -> SharedStr {
        match self.registry.position(id) {
            Some(i) => self.nhi_ids[i].clone(),
            None => SharedStr::from(id),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Handle one record; decided events are appended to `out`.
    pub fn handle(&mut self, ev: KernelEvent<'_>, out: &mut Vec<Event>) {
        self.stats.records += 1;
        let before = out.len();
        match &ev {
            KernelEvent::Open(o) => self.open(o, out),
            KernelEvent::Exec(e) => self.exec(e, out),
            KernelEvent::Fork(f) => {
                self.procs.fork(f.hdr.pid, f.child_tid, &self.sys);
                // A holder's child is one, as the kernel has it (`probes::wire::fork`): told to
                // the holder set too, so that a child a full set refused is put in with the
                // others once it has room (`Probes::holder_set_check`).
                if self.wire.holders.contains(&f.hdr.pid) {
                    self.note_holder(f.child_tid);
                }
            }
            KernelEvent::Exit(x) => {
                // Its connections' first bytes are judged while it is still known a holder.
                self.requests_of(x.hdr.pid, out);
                self.exit(&x.hdr, out);
            }
            KernelEvent::Connect(c) => self.connect(c, out),
            KernelEvent::Request(r) => {
                let mut joined = std::mem::take(&mut self.wire.joined);
                self.wire.joiner.add(r, self.sys.now(), &mut joined);
                for (conn, reading) in joined.drain(..) {
                    self.request(&conn, reading, out);
                }
                self.wire.joined = joined;
            }
        }
        decode::recycle(ev);
        self.stats.events += (out.len() - before) as u64;
    }

    /// The modification time of `path` (following symlinks), at most [`MTIME_TTL`] old.
    fn mtime(&mut self, path: &Path) -> Option<SystemTime> {
        let now = self.sys.now();
        if let Some((at, m)) = self.mtimes.get(path) {
            if now.saturating_duration_since(*at) < MTIME_TTL {
                return *m;
            }
        }
        if self.mtimes.len() > 4096 {
            self.mtimes.clear();
        }
        let m = self.sys.modified(path);
        self.mtimes.insert(path.to_path_buf(), (now, m));
        m
    }

    /// A new event at the end of `out`, with the process fields filled from the header and the
    /// process table: made where it stays (an event is a few hundred bytes, not moved twice).
    fn base<'o>(
        &mut self,
        kind: Kind,
        hdr: &EventHeader,
        out: &'o mut Vec<Event>,
    ) -> &'o mut Event {
        let at = out.len();
        out.reserve(1);
        let ts = self.clock.ts(hdr.ts_ns);
        let p = self.procs.lookup_fresh(hdr.pid, &self.sys);
        let (ppid, script) = (p.ppid, p.script.clone());
        let fallback = (p.container.clone(), p.cgroup.clone());
        let process = (p.exe.clone(), self.comms.get(hdr), p.cmdline.clone());
        // Written straight into the vector's room (a push would build it aside and copy it),
        // with the process's shared strings (not empty ones replaced at once).
        out.spare_capacity_mut()[0].write(Event::of_process(kind, ts, self.host.clone(), process));
        // SAFETY: the slot at `at`, in the room reserved above, was written just above.
        unsafe { out.set_len(at + 1) };
        let e = &mut out[at];
        e.pid = hdr.pid;
        e.tid = hdr.tid;
        e.ppid = ppid;
        e.uid = hdr.uid;
        e.gid = hdr.gid;
        e.script = script;
        e.cgroup_id = hdr.cgroup_id;
        // The kernel's cgroup id is what the task was in at the event; /proc may be gone.
        let placed = if let Some(path) = self.cgroups.path(hdr.cgroup_id, hdr.ts_ns, &self.sys) {
            if self.containers.len() > 65_536 {
                self.containers.clear();
            }
            let placed = self
                .containers
                .entry(hdr.cgroup_id)
                .or_insert_with(|| Placed::of(&path))
                .clone();
            let p = self.procs.lookup(hdr.pid, &self.sys);
            p.container.clone_from(&placed.container);
            p.cgroup = Some(path);
            placed
        } else {
            match fallback {
                (Some(container), Some(path)) => Placed {
                    pod_uid: crate::domain::kubernetes::pod_uid(&path).map(Arc::from),
                    container: Some(container),
                },
                (container, _) => Placed {
                    container,
                    pod_uid: None,
                },
            }
        };
        e.container = placed.container.as_deref().map(str::to_owned);
        if let Some(uid) = &placed.pod_uid {
            e.pod_uid = Some(uid.to_string());
            if let Some(pod) = self.kube.pod(uid, &self.sys) {
                e.pod = Some(pod.name.to_string());
                e.pod_namespace = Some(pod.namespace.to_string());
            }
            if let Some(id) = &placed.container {
                e.container_name = self.kube.container(id, &self.sys).map(|n| n.to_string());
            }
        }
        if hdr.flags & monitor_common::HDR_TTY_KNOWN != 0 {
            self.procs.lookup(hdr.pid, &self.sys).tty = hdr.flags & monitor_common::HDR_TTY != 0;
        }
        e
    }

    /// Whether `pid` runs in a human's terminal session: it has a controlling terminal, or its
    /// session was opened by `sshd` or `login`. A process that started its own session
    /// (`setsid`, as daemons and service managers do) without a terminal is not interactive.
    pub fn is_interactive(&mut self, pid: u32, hdr_flags: u32) -> bool {
        let p = self.procs.lookup_fresh(pid, &self.sys);
        // What the kernel saw at the event beats /proc, which may show an exiting process.
        let tty = if hdr_flags & monitor_common::HDR_TTY_KNOWN != 0 {
            hdr_flags & monitor_common::HDR_TTY != 0
        } else {
            p.tty
        };
        if tty {
            return true;
        }
        let sid = p.sid;
        if sid == 0 {
            return false;
        }
        let leader_parent = match self.procs.get(sid) {
            Some(leader) => leader.ppid,
            None => return false,
        };
        self.procs
            .get(leader_parent)
            .is_some_and(|pp| is_login_manager(&pp.exe, &pp.comm))
            || self
                .procs
                .get(sid)
                .is_some_and(|l| is_login_manager(&l.exe, &l.comm))
    }

    fn open(&mut self, o: &OpenEvent, out: &mut Vec<Event>) {
        use monitor_common::{NAMES_ARE_BASE, NAMES_COMPLETE};
        let raw = decode::c_bytes(&o.path, o.path_len as usize);
        let raw_path = Path::new(OsStr::from_bytes(raw));
        let names = decode::names_path(&o.names, o.names_len, o.flags & NAMES_COMPLETE != 0);
        // The file the kernel opened, by its real path; a failed open has none, so its argument
        // is resolved against the directory the kernel said it started from.
        // (an io_uring open into a fixed slot has no fd either: it is judged like a failed one).
        let real = if o.flags & NAMES_ARE_BASE != 0 {
            names.and_then(|base| resolve::absolute(Some(&base), raw_path))
        } else {
            names.or_else(|| resolve::absolute(None, raw_path))
        };
        let real_s = real.map(|p| {
            p.into_os_string()
                .into_string()
                .unwrap_or_else(|p| p.to_string_lossy().into_owned())
        });
        let reg = Arc::clone(&self.registry);
        // The inode is the file's identity: a registered file under any name is that file.
        let by_inode = (o.ino != 0)
            .then(|| {
                self.cred_inodes
                    .get(&(o.dev >> 20, o.dev & 0xf_ffff, o.ino))
            })
            .flatten()
            .and_then(|(i, path)| Some(((*i, reg.nhis.get(*i)?), Arc::clone(path))))
            // Opened under another name: the inode number may be the credential's old one,
            // freed by a rotation and given to a new file before the next refresh (a second at
            // most). The registered path must still be that inode for the alias to count.
            .filter(|(_, registered)| {
                real_s.as_deref() == Some(&**registered)
                    || self.sys.file_id(registered)
                        == Some(FileId {
                            major: o.dev >> 20,
                            minor: o.dev & 0xf_ffff,
                            ino: o.ino,
                        })
            });
        let said = real_s.as_deref().map(|p| self.paths.said(&reg, p));
        let by_path = said
            .and_then(|s| s.owner)
            .and_then(|i| Some((i, reg.nhis.get(i)?)));
        let owner = by_inode.as_ref().map(|(n, _)| *n).or(by_path);
        let watched = owner.is_some() || said.is_some_and(|s| s.watched);
        if !watched {
            self.stats.filter_false_positives += 1;
            return;
        }
        let (path_s, target_s) = match (&by_inode, real_s) {
            (Some((_, registered)), real) => {
                (registered.to_string(), real.filter(|r| **r != **registered))
            }
            (None, Some(r)) => (r, None),
            (None, None) => (text::lossy(raw), None),
        };

        let e = self.base(Kind::Open, &o.hdr, out);
        e.syscall = OpenOp::from_u32(o.op);
        // Most opens name the file as the kernel reached it: the text is made once.
        e.path_arg = Some(if raw == path_s.as_bytes() {
            path_s.clone()
        } else {
            text::lossy(raw)
        });
        e.target = target_s;
        e.flags = Some(o.open_flags);
        if o.ino != 0 {
            e.inode = Some(o.ino);
            e.dev = Some(Dev {
                major: o.dev >> 20,
                minor: o.dev & 0xf_ffff,
            });
        }
        e.result = Some(o.ret);
        if o.ret < 0 {
            e.error = Some(errno_name(-o.ret));
        }
        let now = self.clock.wall(o.hdr.ts_ns);
        let failed = o.ret < 0;
        let decision = match owner {
            Some((at, nhi)) => {
                let interactive = self.is_interactive(e.pid, o.hdr.flags);
                let cgroup = self.procs.get(e.pid).and_then(|p| p.cgroup.clone());
                let actor = Actor::of(e, interactive, cgroup.as_deref());
                // The registered name (for an inode match) is the one the daemon can stat.
                let mtime = match nhi.max_age {
                    Some(_) => self.mtime(Path::new(&path_s)),
                    None => None,
                };
                let decision = verdict::open(nhi, &actor, &path_s, failed, now, mtime);
                e.nhi = self.nhi_ids.get(at).cloned();
                if !failed {
                    self.take_hold(o.hdr.pid, &nhi.id, o);
                }
                decision
            }
            None => verdict::unregistered_open(&Actor::of(e, false, None), &path_s, failed),
        };
        e.path = Some(path_s);
        e.verdict = decision.verdict;
        e.drift = decision.drift;
        e.reason = decision.reason;
    }

    fn exec(&mut self, x: &ExecEvent, out: &mut Vec<Event>) {
        let pid = x.hdr.pid;
        self.note_stdin_pipe(x.stdin_pipe);
        if x.old_tid != pid {
            // A non-leader thread called exec: it took over the leader's pid.
            self.procs.exit(x.old_tid);
        }
        let raw = Path::new(OsStr::from_bytes(decode::c_bytes(
            &x.filename,
            x.filename_len as usize,
        )));
        // The file the kernel executed, never the name it was asked for (which may be
        // `/proc/self/exe`, a symlink, a relative name or a script).
        let exe = decode::names_path(
            &x.exe_names,
            x.exe_names_len,
            x.flags & monitor_common::EXE_NAMES_COMPLETE != 0,
        )
        .or_else(|| resolve::absolute(None, raw))
        .unwrap_or_else(|| raw.to_path_buf());
        let prev = self
            .procs
            .get(pid)
            .map(|p| (p.exe.clone(), p.script.clone()));
        let script = if x.flags & monitor_common::EXEC_SCRIPT != 0 {
            let cwd = decode::names_path(
                &x.cwd_names,
                x.cwd_names_len,
                x.flags & monitor_common::CWD_NAMES_COMPLETE != 0,
            );
            Some(
                resolve::script_path(cwd.as_deref(), raw)
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            // `#!/usr/bin/env python3`: the script's interpreter is env, which then execs the
            // real interpreter in the same process; the script is still what runs.
            prev.and_then(|(exe, script)| script.filter(|_| basename(&exe) == "env"))
        };
        let cmdline = if x.argc == 0 {
            // No arguments came with the record: the command line /proc has.
            let argv = self.sys.process(pid).map(|f| f.cmdline).unwrap_or_default();
            self.procs.keep(argv)
        } else {
            let used = &x.args[..(x.args_len as usize).min(x.args.len())];
            self.procs.keep_args(x.argc, used, || decode::args(x))
        };
        let exe = SharedStr::from(exe.to_string_lossy().into_owned());
        self.procs.exec_kept(
            pid,
            x.hdr.uid,
            self.comms.get(&x.hdr),
            exe.clone(),
            cmdline,
            &self.sys,
        );
        self.procs.lookup(pid, &self.sys).script = script.clone();
        // Declared holders carry their NHI without reading a file (a secret in the environment).
        let reg = Arc::clone(&self.registry);
        let (cgroup, container) = if self.placed_holders {
            let p = self.procs.lookup_fresh(pid, &self.sys);
            (p.cgroup.clone(), p.container.clone())
        } else {
            (None, None)
        };
        let at = Placement {
            cgroup: cgroup.as_deref(),
            container: container.as_deref(),
        };
        let ids = declared_ids(
            &reg,
            &mut self.holder_candidates,
            &exe,
            script.as_deref(),
            x.hdr.uid,
            at,
        );
        let declared = !ids.is_empty();
        let p = self.procs.lookup(pid, &self.sys);
        p.holds.extend(ids.iter().cloned());
        // What its connections would find (`connection_holdings`) for this uid and placement:
        // placement is what was judged on when a holder is placed by it, and else changes
        // nothing.
        let (cgroup, container) = if self.placed_holders {
            (cgroup, container)
        } else {
            (p.cgroup.clone(), p.container.clone())
        };
        p.declared = Some(crate::domain::proctable::Declared {
            registry: self.registry_generation,
            uid: x.hdr.uid,
            cgroup,
            container,
            ids,
        });
        if declared {
            self.note_holder(pid);
        }
        self.holder_event(Kind::Exec, &x.hdr, out);
    }

    fn exit(&mut self, hdr: &EventHeader, out: &mut Vec<Event>) {
        self.holder_event(Kind::Exit, hdr, out);
        self.procs.exit(hdr.pid);
        if self.wire.holders.remove(&hdr.pid) {
            self.wire.changes.push((hdr.pid, false));
        }
    }

    /// Exec and exit are reported for processes that hold an NHI: they bound its use.
    fn holder_event(&mut self, kind: Kind, hdr: &EventHeader, out: &mut Vec<Event>) {
        let held = self.held_by(hdr.pid);
        if held.is_empty() {
            return;
        }
        let what = if kind == Kind::Exec {
            verdict::Lifecycle::Exec
        } else {
            verdict::Lifecycle::Exit
        };
        for id in held {
            let e = self.base(kind, hdr, out);
            e.reason = verdict::holder(&Actor::of(e, false, None), &id, what).reason;
            e.nhi = Some(self.nhi_id(&id));
        }
    }

    /// Process `pid` read a credential of NHI `id`: it holds the NHI from now on (its later
    /// children inherit the holding when they fork). When it read the secret *for its parent*,
    /// as in `TOKEN=$(cat file)` (its stdout is a pipe its parent reads), the parent holds it too,
    /// so the parent's later children (`curl -H "Authorization: $TOKEN" ...`) are holders; a
    /// parent that merely started the reader (its output goes elsewhere) does not, and service
    /// managers never do.
    fn take_hold(&mut self, pid: u32, id: &str, o: &OpenEvent) {
        let p = self.procs.lookup(pid, &self.sys);
        // A service reads its credential again and again: the holding is usually there.
        let id: Arc<str> = match p.holds.get(id) {
            Some(held) => Arc::clone(held),
            None => {
                let id: Arc<str> = Arc::from(id);
                p.holds.insert(Arc::clone(&id));
                id
            }
        };
        if o.flags & monitor_common::STDOUT_PIPE != 0 && o.stdout_ino != 0 {
            // Whatever reads this pipe may get the secret (a pipeline's next command).
            if self.fed_pipes.len() >= FED_PIPES_CAP {
                self.fed_pipes.clear();
            }
            let ids = self.fed_pipes.entry(o.stdout_ino).or_default();
            if !ids.contains(&id) {
                ids.push(Arc::clone(&id));
            }
        }
        let ppid = p.ppid;
        self.note_holder(pid);
        if ppid <= 1 {
            return;
        }
        let supervisor = self
            .procs
            .get(ppid)
            .is_none_or(|pp| is_supervisor(&pp.exe, &pp.comm));
        // The kernel compared the reader's stdout with its parent's fds at the open.
        let feeds = o.flags & monitor_common::FEEDS_PARENT != 0;
        if o.flags & monitor_common::PARENT_SCAN_CUT != 0 {
            self.stats.parent_pipe_undetermined += 1;
        }
        if !supervisor && feeds {
            log::debug!("pid {pid} read NHI {id} for its parent {ppid}: the parent holds it too");
            let p = self.procs.lookup(ppid, &self.sys);
            if !p.holds_via_pipe.contains(&(Arc::clone(&id), o.stdout_ino)) {
                p.holds_via_pipe.push((id, o.stdout_ino));
            }
            self.note_holder(ppid);
        }
    }

    /// A pipe some process reads as its standard input is a pipeline's.
    fn note_stdin_pipe(&mut self, ino: u64) {
        if ino == 0 {
            return;
        }
        if self.pipeline_pipes.len() >= FED_PIPES_CAP {
            self.pipeline_pipes.clear();
        }
        self.pipeline_pipes.insert(ino);
    }

    /// The NHIs `pid` holds now: its own holdings, and those granted through a pipe that did not
    /// turn out to be a pipeline's.
    fn held_by(&mut self, pid: u32) -> Vec<Arc<str>> {
        let p = self.procs.lookup(pid, &self.sys);
        holdings(p, &self.pipeline_pipes)
    }

    fn connect(&mut self, c: &ConnectEvent, out: &mut Vec<Event>) {
        // A process reading from a pipe a holder writes into holds what flows through it
        // (`cat token | curl -d @- ...`); a shell that merely started both sides reads from
        // its terminal, not from that pipe.
        self.note_stdin_pipe(c.stdin_pipe);
        if c.stdin_pipe != 0 {
            if let Some(ids) = self.fed_pipes.get(&c.stdin_pipe).cloned() {
                let p = self.procs.lookup(c.hdr.pid, &self.sys);
                for id in ids {
                    p.holds.insert(id);
                }
            }
        }
        let mut held = self.connection_holdings(c.hdr.pid, c.hdr.uid);
        if held.is_empty() {
            return;
        }
        let reg = Arc::clone(&self.registry);
        let (daddr, saddr) = addrs(c);
        let udp = c.proto == monitor_common::IPPROTO_UDP;
        // A connection the process already had when it read a credential (the kernel found it
        // in its file table right after that read): judged for each NHI it holds, unless its
        // destination was already judged for that NHI (a connection made while holding it, or
        // found at an earlier read).
        let existing = c.hdr.flags & monitor_common::HDR_EXISTING != 0;
        let key = ConnKey {
            udp,
            netns: c.netns,
            daddr,
            dport: c.dport,
        };
        let p = self.procs.lookup(c.hdr.pid, &self.sys);
        if existing {
            held.retain(|id| !p.judged.iter().any(|(k, j)| *k == key && j == id));
            if held.is_empty() {
                return;
            }
        }
        for id in &held {
            if p.judged.iter().any(|(k, j)| *k == key && j == id) {
                continue;
            }
            if p.judged.len() >= JUDGED_CAP {
                p.judged.pop_front();
                self.stats.judged_forgotten += 1;
            }
            p.judged.push_back((key, Arc::clone(id)));
        }
        let names = self.dns_names(c.netns, daddr);
        let now = self.clock.wall(c.hdr.ts_ns);
        let interactive = self.is_interactive(c.hdr.pid, c.hdr.flags);
        for id in held {
            let Some((i, nhi)) = reg.position(&id).and_then(|i| Some((i, reg.nhis.get(i)?))) else {
                continue;
            };
            let e = self.base(Kind::Connect, &c.hdr, out);
            e.proto = Some(if udp { Proto::Udp } else { Proto::Tcp });
            e.established_before_use = existing;
            e.daddr = Some(daddr);
            e.dport = Some(c.dport);
            e.saddr = Some(saddr);
            e.sport = (c.sport != 0).then_some(c.sport);
            e.dns_names = Some(names.clone());
            e.nhi = Some(self.nhi_ids[i].clone());
            let cgroup = self.procs.get(e.pid).and_then(|p| p.cgroup.clone());
            let actor = Actor::of(e, interactive, cgroup.as_deref());
            let decision = verdict::connect(nhi, &actor, daddr, c.dport, &names, existing, now);
            e.verdict = decision.verdict;
            e.drift = decision.drift;
            e.reason = decision.reason;
        }
    }
}

impl<H: Host> Engine<H> {
    /// The NHIs a connection of `pid` (run by `uid`) carries: its holdings, and those of the
    /// `holders:` it is among, judged on the process as the table has it.
    fn connection_holdings(&mut self, pid: u32, uid: u32) -> Vec<Arc<str>> {
        let reg = Arc::clone(&self.registry);
        // Borrowed: most connections are by processes that hold nothing.
        let p = self.procs.lookup(pid, &self.sys);
        let mut held = holdings(p, &self.pipeline_pipes);
        // The `holders:` it is among: judged once per exec, uid, placement and registry, not
        // at every connection.
        let judged = p.declared.as_ref().is_some_and(|d| {
            d.registry == self.registry_generation
                && d.uid == uid
                && d.cgroup == p.cgroup
                && d.container == p.container
        });
        if !judged {
            let at = Placement {
                cgroup: p.cgroup.as_deref(),
                container: p.container.as_deref(),
            };
            let ids = declared_ids(
                &reg,
                &mut self.holder_candidates,
                &p.exe,
                p.script.as_deref(),
                uid,
                at,
            );
            p.declared = Some(crate::domain::proctable::Declared {
                registry: self.registry_generation,
                uid,
                cgroup: p.cgroup.clone(),
                container: p.container.clone(),
                ids,
            });
        }
        for id in p.declared.iter().flat_map(|d| &d.ids) {
            if !held.contains(id) {
                held.push(Arc::clone(id));
            }
        }
        if !held.is_empty() {
            self.note_holder(pid);
        }
        held
    }

    /// The names `addr` is known by now in namespace `netns` (the clock is read only for an
    /// address the cache has).
    fn dns_names(&self, netns: u64, addr: IpAddr) -> Vec<String> {
        if !self.dns.may_name(netns, addr) {
            return Vec::new();
        }
        self.dns.names(netns, addr, self.sys.now())
    }

    /// `pid` holds an NHI: its next TCP connections are to be marked for their first bytes.
    fn note_holder(&mut self, pid: u32) {
        if self.wire.holders.insert(pid) {
            self.wire.changes.push((pid, true));
        }
    }

    /// Mark every process's connections for their first bytes, not only holders' (the daemon's
    /// `--wire-all-connections`): their request events then carry no NHI.
    pub fn set_wire_all_connections(&mut self, all: bool) {
        self.wire.all = all;
    }

    /// Every process the daemon has put in the kernel's holder set and not yet taken out: to
    /// put again those a full set refused.
    pub fn wire_holders(&self) -> impl Iterator<Item = u32> + '_ {
        self.wire.holders.iter().copied()
    }

    /// Processes that became holders (`true`) or ended (`false`) since the last call, for the
    /// kernel's holder set; `out` is cleared first.
    pub fn take_holder_changes(&mut self, out: &mut Vec<(u32, bool)>) {
        out.clear();
        out.append(&mut self.wire.changes);
    }

    /// Connections whose first bytes stopped coming a while ago ([`crate::domain::wire::join::WAIT`]; every one
    /// with `all`, at the daemon's stop): judged on what came.
    pub fn flush_requests(&mut self, all: bool, out: &mut Vec<Event>) {
        if self.wire.joiner.is_empty() {
            return;
        }
        let mut joined = std::mem::take(&mut self.wire.joined);
        let now = (!all).then(|| self.sys.now());
        self.wire.joiner.expire(now, &mut joined);
        for (conn, reading) in joined.drain(..) {
            self.request(&conn, reading, out);
        }
        self.wire.joined = joined;
    }

    /// The connections of `pid` (which ended) whose first bytes were still being joined.
    fn requests_of(&mut self, pid: u32, out: &mut Vec<Event>) {
        if self.wire.joiner.is_empty() {
            return;
        }
        let mut joined = std::mem::take(&mut self.wire.joined);
        self.wire.joiner.end_of(pid, &mut joined);
        for (conn, reading) in joined.drain(..) {
            self.request(&conn, reading, out);
        }
        self.wire.joined = joined;
    }

    /// A connection's first bytes, read: one `request` event per NHI its process holds (none
    /// for a process that holds nothing, unless every connection is read), with what the bytes
    /// said and the verdict on that API. The bytes were dropped by the joiner.
    fn request(&mut self, conn: &Conn, reading: Reading, out: &mut Vec<Event>) {
        let hdr = &conn.hdr;
        let held = self.connection_holdings(hdr.pid, hdr.uid);
        if held.is_empty() && !self.wire.all {
            return;
        }
        let c = ConnectEvent {
            hdr: *hdr,
            family: conn.family,
            sport: conn.sport,
            dport: conn.dport,
            proto: monitor_common::IPPROTO_TCP,
            saddr: conn.saddr,
            daddr: conn.daddr,
            stdin_pipe: 0,
            netns: conn.netns,
        };
        let (daddr, saddr) = addrs(&c);
        let names = self.dns_names(conn.netns, daddr);
        let Reading {
            fields: wire,
            readout,
        } = reading;
        let reg = Arc::clone(&self.registry);
        let fill = |e: &mut Event| {
            e.proto = Some(Proto::Tcp);
            e.daddr = Some(daddr);
            e.dport = Some(conn.dport);
            e.saddr = Some(saddr);
            e.sport = Some(conn.sport);
            e.dns_names = Some(names.clone());
            e.wire = wire.clone().into();
        };
        if held.is_empty() {
            let e = self.base(Kind::Request, hdr, out);
            fill(e);
            e.reason = verdict::unheld_request(
                &Actor::of(e, false, None),
                &e.wire,
                readout,
                daddr,
                conn.dport,
            );
            return;
        }
        let interactive = self.is_interactive(hdr.pid, hdr.flags);
        for id in held {
            let Some((i, nhi)) = reg.position(&id).and_then(|i| Some((i, reg.nhis.get(i)?))) else {
                continue;
            };
            let e = self.base(Kind::Request, hdr, out);
            fill(e);
            e.nhi = Some(self.nhi_ids[i].clone());
            let cgroup = self.procs.get(e.pid).and_then(|p| p.cgroup.clone());
            let actor = Actor::of(e, interactive, cgroup.as_deref());
            let decision =
                verdict::request(nhi, &actor, (daddr, conn.dport), &names, &e.wire, readout);
            e.verdict = decision.verdict;
            e.drift = decision.drift;
            e.reason = decision.reason;
        }
    }
}

/// The engine's side of reading holders' first bytes: which processes it told the kernel
/// about, and what it has still to tell.
#[derive(Debug, Default)]
struct WireState {
    /// Processes the daemon has put in the kernel's holder set.
    holders: std::collections::HashSet<u32, foldhash::fast::RandomState>,
    /// Additions (`true`) and removals (`false`) not yet taken by the daemon.
    changes: Vec<(u32, bool)>,
    /// Every process's connections are read.
    all: bool,
    /// Connections whose first bytes are being joined from their records.
    joiner: Joiner,
    /// Connections read, to be judged (kept to reuse its allocation).
    joined: Vec<(Conn, Reading)>,
}

fn addrs(c: &ConnectEvent) -> (IpAddr, IpAddr) {
    let conv = |b: &[u8; 16]| -> IpAddr {
        if c.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            let v6 = Ipv6Addr::from(*b);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
    };
    (conv(&c.daddr), conv(&c.saddr))
}

/// Programs that start others as a service (never holders through a child's read).
const SUPERVISORS: &[&str] = &[
    "systemd",
    "init",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "runc",
    "crun",
    "conmon",
    "supervisord",
    "s6-supervise",
    "runsv",
    "tini",
    "dumb-init",
    "cron",
    "crond",
];

fn basename(exe: &str) -> &str {
    match exe.as_bytes().iter().rposition(|&b| b == b'/') {
        // An ASCII byte: a char boundary.
        Some(slash) => &exe[slash + 1..],
        None => exe,
    }
}

fn is_supervisor(exe: &str, comm: &str) -> bool {
    let b = basename(exe);
    SUPERVISORS.contains(&b) || SUPERVISORS.contains(&comm) || comm.starts_with("containerd-shim")
}

fn is_login_manager(exe: &str, comm: &str) -> bool {
    matches!(basename(exe), "sshd" | "sshd-session" | "login")
        || matches!(comm, "sshd" | "sshd-session" | "login")
}

#[cfg(test)]
mod tests {
    //! The engine without a kernel: records built by hand, /proc replaced by an empty fixture
    //! directory (so every process is known only from its records).
    use super::*;
    use crate::domain::event::Verdict;
    use crate::sense::proc_host::ProcHost;
    use monitor_common::{EventKind, ForkEvent, COMM_LEN, PATH_CAP};

    fn engine(yaml: &str) -> (Engine<ProcHost>, PathBuf) {
        let root = std::env::temp_dir().join(format!(
            "nhiscope-engine-{}-{}",
            std::process::id(),
            yaml.len()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("fixture");
        let reg = crate::domain::registry::parse(yaml, "test.yaml").expect("registry");
        let e = Engine::new(Arc::new(reg), &root, Clock::with_offset(0), "h".into());
        (e, root)
    }

    fn hdr(kind: EventKind, pid: u32, uid: u32, comm: &str) -> EventHeader {
        let mut c = [0u8; COMM_LEN];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        EventHeader {
            kind: kind as u32,
            pid,
            tid: pid,
            uid,
            gid: uid,
            flags: monitor_common::HDR_TTY_KNOWN,
            ts_ns: 1_700_000_000_000_000_000,
            cgroup_id: 0,
            comm: c,
        }
    }

    fn exec(pid: u32, uid: u32, exe: &str) -> KernelEvent<'static> {
        let mut e: ExecEvent = unsafe_zeroed();
        e.hdr = hdr(
            EventKind::Exec,
            pid,
            uid,
            exe.rsplit('/').next().unwrap_or(exe),
        );
        e.old_tid = pid;
        e.filename[..exe.len()].copy_from_slice(exe.as_bytes());
        e.filename_len = exe.len() as u32;
        KernelEvent::Exec(e.into())
    }

    fn unsafe_zeroed<T: Copy>() -> T {
        let bytes = vec![0u8; std::mem::size_of::<T>()];
        // SAFETY: the monitor_common records are plain data; all-zero is a valid value.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    }

    fn open(pid: u32, uid: u32, path: &str, ret: i64) -> KernelEvent<'static> {
        let mut o: OpenEvent = unsafe_zeroed();
        o.hdr = hdr(EventKind::Open, pid, uid, "x");
        o.op = OpenOp::Openat as u32;
        o.dfd = resolve::AT_FDCWD;
        o.ret = ret;
        let mut p = [0u8; PATH_CAP];
        p[..path.len()].copy_from_slice(path.as_bytes());
        o.path = p;
        o.path_len = path.len() as u32;
        if ret >= 0 {
            // The kernel's walk of the opened file: components leaf first.
            let mut at = 0;
            for c in path.rsplit('/').filter(|c| !c.is_empty()) {
                o.names[at..at + c.len()].copy_from_slice(c.as_bytes());
                at += c.len() + 1;
            }
            o.names_len = at as u32;
            o.flags |= monitor_common::NAMES_COMPLETE;
        }
        KernelEvent::Open(Box::new(o))
    }

    fn connect(pid: u32, addr: [u8; 4], port: u16) -> KernelEvent<'static> {
        let mut c: ConnectEvent = unsafe_zeroed();
        c.hdr = hdr(EventKind::Connect, pid, 0, "x");
        c.family = AF_INET;
        c.dport = port;
        c.daddr[..4].copy_from_slice(&addr);
        KernelEvent::Connect(c)
    }

    fn fork(parent: u32, child: u32) -> KernelEvent<'static> {
        KernelEvent::Fork(ForkEvent {
            hdr: hdr(EventKind::Fork, parent, 0, "sh"),
            child_tid: child,
            _pad: 0,
        })
    }

    const REG: &str = "nhis:\n  - id: api\n    credentials: [/srv/app/token]\n    readers:\n      exe: [/usr/bin/app]\n    endpoints:\n      - cidr: 10.0.0.0/8\n        port: 443\n    interactive: allow\n";

    #[test]
    fn opens_get_the_nhi_and_a_verdict() {
        let (mut e, _root) = engine(REG);
        let mut out = Vec::new();
        e.handle(exec(10, 0, "/usr/bin/app"), &mut out);
        e.handle(open(10, 0, "/srv/app/token", 3), &mut out);
        e.handle(exec(11, 0, "/usr/bin/cat"), &mut out);
        e.handle(open(11, 0, "/srv/app/token", 3), &mut out);
        let opens: Vec<&Event> = out.iter().filter(|x| x.kind == Kind::Open).collect();
        assert_eq!(opens.len(), 2);
        assert_eq!(
            (opens[0].nhi.as_deref(), opens[0].verdict),
            (Some("api"), Verdict::Ok)
        );
        assert_eq!(opens[1].verdict, Verdict::Drift);
        assert_eq!(
            opens[1].drift,
            vec![crate::domain::event::DriftKind::ReaderOutOfScope]
        );
        assert_eq!(opens[1].exe, "/usr/bin/cat");
    }

    #[test]
    fn unowned_watched_paths_are_unregistered_and_others_dropped() {
        let (mut e, _root) = engine(REG);
        let mut out = Vec::new();
        e.handle(open(12, 0, "/home/ann/.aws/credentials", 3), &mut out);
        e.handle(open(12, 0, "/srv/app/notes.txt", 3), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].verdict, out[0].nhi.as_deref()),
            (Verdict::Unregistered, None)
        );
        assert_eq!(e.stats.filter_false_positives, 1);
    }

    /// A connection the kernel found open in the process's file table at a credential read.
    fn existing(pid: u32, addr: [u8; 4], port: u16) -> KernelEvent<'static> {
        let KernelEvent::Connect(mut c) = connect(pid, addr, port) else {
            unreachable!("connect() makes a connect record")
        };
        c.hdr.flags |= monitor_common::HDR_EXISTING;
        c.sport = 40000;
        KernelEvent::Connect(c)
    }

    #[test]
    fn a_connection_open_before_the_read_is_judged_once_per_nhi_and_destination() {
        let reg = "nhis:\n  - id: a\n    credentials: [/srv/a]\n    endpoints:\n      - cidr: 10.0.0.0/8\n  - id: b\n    credentials: [/srv/b]\n    endpoints:\n      - cidr: 192.0.2.0/24\n";
        let (mut e, _root) = engine(reg);
        let mut out = Vec::new();
        // Not a holder: what the kernel found is dropped, as its connects are.
        e.handle(existing(30, [10, 0, 0, 1], 22), &mut out);
        assert!(out.is_empty(), "{out:?}");
        e.handle(open(30, 0, "/srv/a", 3), &mut out);
        e.handle(existing(30, [10, 0, 0, 1], 22), &mut out);
        // Found again at a read of another file of the same NHI: already judged.
        e.handle(existing(30, [10, 0, 0, 1], 22), &mut out);
        // A destination it connected to while holding a: judged then, not again.
        e.handle(connect(30, [10, 0, 0, 2], 443), &mut out);
        e.handle(existing(30, [10, 0, 0, 2], 443), &mut out);
        // Reading b's credential: both are judged for b, and only for b.
        e.handle(open(30, 0, "/srv/b", 3), &mut out);
        e.handle(existing(30, [10, 0, 0, 1], 22), &mut out);
        e.handle(existing(30, [10, 0, 0, 2], 443), &mut out);
        let conns: Vec<(&str, bool, u16, Verdict)> = out
            .iter()
            .filter(|x| x.kind == Kind::Connect)
            .map(|x| {
                (
                    x.nhi.as_deref().unwrap_or(""),
                    x.established_before_use,
                    x.dport.unwrap_or(0),
                    x.verdict,
                )
            })
            .collect();
        assert_eq!(
            conns,
            [
                ("a", true, 22, Verdict::Ok),
                ("a", false, 443, Verdict::Ok),
                ("b", true, 22, Verdict::Drift),
                ("b", true, 443, Verdict::Drift),
            ]
        );
        let first = out
            .iter()
            .find(|x| x.kind == Kind::Connect)
            .expect("a connect");
        assert_eq!(first.sport, Some(40000));
        assert!(
            first
                .reason
                .contains("had a connection open to 10.0.0.1:22 when it read"),
            "{}",
            first.reason
        );
        let mut line = Vec::new();
        first.write_json(&mut line);
        let line = String::from_utf8(line).expect("utf8");
        assert!(line.contains(",\"established_before_use\":true,"), "{line}");
    }

    #[test]
    fn a_holder_remembers_256_judged_destinations_and_forgets_the_oldest() {
        let (mut e, _root) = engine(REG);
        let mut out = Vec::new();
        e.handle(open(31, 0, "/srv/app/token", 3), &mut out);
        // Reconnecting to one destination takes one place in the list, however often.
        for _ in 0..2 * JUDGED_CAP {
            e.handle(connect(31, [10, 9, 0, 0], 443), &mut out);
        }
        assert_eq!(e.stats.judged_forgotten, 0);
        for i in 0..=JUDGED_CAP {
            let [a, b] = (i as u16).to_be_bytes();
            e.handle(connect(31, [10, 9, a, b], 443), &mut out);
        }
        assert_eq!(e.stats.judged_forgotten, 1);
        out.clear();
        // The second destination is still remembered; the first was forgotten: found open at
        // a later read, it is judged again.
        e.handle(existing(31, [10, 9, 0, 1], 443), &mut out);
        e.handle(existing(31, [10, 9, 0, 0], 443), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].daddr, Some(IpAddr::from([10, 9, 0, 0])));
        assert!(out[0].established_before_use);
    }

    #[test]
    fn holders_and_their_later_children_are_checked_against_endpoints() {
        let (mut e, _root) = engine(REG);
        let mut out = Vec::new();
        e.handle(exec(20, 0, "/usr/bin/app"), &mut out);
        e.handle(fork(20, 21), &mut out); // forked before holding: not a holder
        e.handle(open(20, 0, "/srv/app/token", 3), &mut out);
        e.handle(fork(20, 22), &mut out); // forked after: inherits
        e.handle(connect(21, [10, 1, 2, 3], 443), &mut out);
        e.handle(connect(22, [10, 1, 2, 3], 443), &mut out);
        e.handle(connect(22, [192, 0, 2, 1], 443), &mut out);
        let conns: Vec<&Event> = out.iter().filter(|x| x.kind == Kind::Connect).collect();
        assert_eq!(conns.len(), 2, "{conns:?}");
        assert!(conns
            .iter()
            .all(|c| c.pid == 22 && c.nhi.as_deref() == Some("api")));
        assert_eq!(conns[0].verdict, Verdict::Ok);
        assert_eq!(
            conns[1].drift,
            vec![crate::domain::event::DriftKind::EndpointOutOfScope]
        );
        assert!(
            conns[1].reason.contains("192.0.2.1:443"),
            "{}",
            conns[1].reason
        );
    }

    fn request(pid: u32, cookie: u64, chunk: u16, seq: u32, bytes: &[u8]) -> KernelEvent<'static> {
        let mut r: monitor_common::RequestEvent = unsafe_zeroed();
        r.hdr = hdr(EventKind::Request, pid, 0, "app");
        r.family = AF_INET;
        r.sport = 40000 + chunk;
        r.dport = 443;
        r.proto = monitor_common::IPPROTO_TCP;
        r.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        r.seq = seq;
        r.chunk = chunk;
        r.cookie = cookie;
        r.len = bytes.len() as u32;
        r.data[..bytes.len()].copy_from_slice(bytes);
        KernelEvent::Request(r.into())
    }

    /// A holder's first bytes in two records become one `request` event once joined (with the
    /// verdict on their API only); a process that holds nothing gets none; first bytes still
    /// being joined when their process ends are judged before its exit; the kernel's holder
    /// set is told of the holder, then of its end.
    #[test]
    fn a_holders_first_bytes_are_joined_judged_and_the_holder_set_follows_it() {
        const ONE: &str = "nhis:\n  - id: api\n    credentials: [/srv/app/token]\n    endpoints:\n      - cidr: 10.0.0.0/8\n        sni: [api.test]\n";
        let (mut e, _root) = engine(ONE);
        let mut out = Vec::new();
        let mut changes = Vec::new();
        e.handle(open(20, 0, "/srv/app/token", 3), &mut out);
        e.take_holder_changes(&mut changes);
        assert_eq!(changes, [(20, true)]);
        out.clear();
        let head = b"GET /v1 HTTP/1.1\r\nHost: evil.test\r\n\r\n";
        e.handle(request(20, 1, 0, 100, &head[..1]), &mut out);
        assert!(out.is_empty(), "a decoy byte alone is not judged: {out:?}");
        e.handle(request(20, 1, 1, 101, &head[1..]), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, Kind::Request);
        assert_eq!(out[0].nhi.as_deref(), Some("api"));
        assert_eq!(out[0].wire.http_host.as_deref(), Some("evil.test"));
        assert_eq!(
            out[0].drift,
            vec![crate::domain::event::DriftKind::ApiOutOfScope]
        );
        // A process that holds nothing: no event, whatever it sends.
        out.clear();
        e.handle(request(30, 2, 0, 1, head), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Unfinished first bytes at the holder's exit: judged first, as the holder's.
        e.handle(
            request(20, 3, 0, 1, b"GET /v1 HTTP/1.1\r\nHost: api.test\r\n"),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        e.handle(
            KernelEvent::Exit(monitor_common::ExitEvent {
                hdr: hdr(EventKind::Exit, 20, 0, "app"),
            }),
            &mut out,
        );
        let kinds: Vec<Kind> = out.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, [Kind::Request, Kind::Exit], "{out:?}");
        assert_eq!(out[0].verdict, Verdict::Ok, "{}", out[0].reason);
        e.take_holder_changes(&mut changes);
        assert_eq!(changes, [(20, false)]);
    }

    /// A holder's child is told to the kernel's holder set as the holder is (the kernel adds it
    /// at fork, but a full set refuses it, and only those the daemon knows are put in again);
    /// a child of a process that holds nothing is not.
    #[test]
    fn a_holders_child_joins_the_holder_set_and_a_non_holders_does_not() {
        let (mut e, _root) = engine(REG);
        let mut out = Vec::new();
        let mut changes = Vec::new();
        e.handle(open(20, 0, "/srv/app/token", 3), &mut out);
        e.handle(fork(20, 21), &mut out);
        e.handle(fork(30, 31), &mut out);
        e.take_holder_changes(&mut changes);
        assert_eq!(changes, [(20, true), (21, true)]);
        let mut holders: Vec<u32> = e.wire_holders().collect();
        holders.sort_unstable();
        assert_eq!(holders, [20, 21]);
    }

    #[test]
    fn declared_holders_are_judged_again_after_an_exec_a_uid_change_or_a_new_registry() {
        let yaml = "nhis:\n  - id: pusher\n    credentials: [/srv/p/token]\n    holders:\n      exe: [/usr/bin/curl]\n      uid: [1000]\n";
        let (mut e, root) = engine(yaml);
        let mut out = Vec::new();
        let conn = |uid: u32| {
            let KernelEvent::Connect(mut c) = connect(70, [10, 0, 0, 1], 443) else {
                unreachable!()
            };
            c.hdr.uid = uid;
            KernelEvent::Connect(c)
        };
        let nhis = |out: &mut Vec<Event>| -> usize {
            out.drain(..)
                .filter(|ev| ev.kind == Kind::Connect && ev.nhi.as_deref() == Some("pusher"))
                .count()
        };
        // Started as root (not a holder then, so it holds nothing from its exec), it connects
        // as 1000 (after a setuid): a holder for those connections only.
        e.handle(exec(70, 0, "/usr/bin/curl"), &mut out);
        for _ in 0..3 {
            e.handle(conn(1000), &mut out);
        }
        assert_eq!(nhis(&mut out), 3);
        e.handle(conn(0), &mut out);
        assert_eq!(nhis(&mut out), 0);
        e.handle(conn(1000), &mut out);
        assert_eq!(nhis(&mut out), 1);
        // Another image: judged on it.
        e.handle(exec(70, 0, "/usr/bin/wget"), &mut out);
        e.handle(conn(1000), &mut out);
        assert_eq!(nhis(&mut out), 0);
        e.handle(exec(70, 0, "/usr/bin/curl"), &mut out);
        e.handle(conn(1000), &mut out);
        assert_eq!(nhis(&mut out), 1);
        // A registry that no longer declares it: judged under the new one.
        let reg = crate::domain::registry::parse(
            "nhis:\n  - id: pusher\n    credentials: [/srv/p/token]\n    holders:\n      exe: [/usr/bin/wget]\n",
            "t.yaml",
        )
        .expect("registry");
        e.set_registry(Arc::new(reg));
        e.handle(conn(1000), &mut out);
        assert_eq!(nhis(&mut out), 0);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_path_opened_before_a_reload_is_judged_by_the_new_registry() {
        let (mut e, root) = engine(REG);
        let mut out = Vec::new();
        let path = "/srv/other/.env";
        e.handle(open(31, 1000, path, 3), &mut out);
        e.handle(open(31, 1000, path, 3), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out
            .iter()
            .all(|x| x.verdict == Verdict::Unregistered && x.nhi.is_none()));
        out.clear();
        let reg = crate::domain::registry::parse(
            &format!("nhis:\n  - id: env-owner\n    credentials: [{path}]\n"),
            "t.yaml",
        )
        .expect("registry");
        e.set_registry(Arc::new(reg));
        e.handle(open(31, 1000, path, 3), &mut out);
        assert_eq!(out[0].nhi.as_deref(), Some("env-owner"), "{:?}", out[0]);
        assert_ne!(out[0].verdict, Verdict::Unregistered);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_failed_open_does_not_make_a_holder() {
        let (mut e, _root) = engine(REG);
        let mut out = Vec::new();
        e.handle(open(30, 1000, "/srv/app/token", -13), &mut out);
        assert_eq!(out[0].error.as_deref(), Some("EACCES"));
        e.handle(connect(30, [10, 0, 0, 1], 443), &mut out);
        assert!(!out.iter().any(|x| x.kind == Kind::Connect));
    }

    // Over a fake host: the tests set the time, the files, the processes and the cgroups.

    use crate::domain::host::{fake::FakeHost, ProcFacts, SessionFacts};

    /// 2023-11-14T22:13:20Z, the time of every record `hdr` makes.
    const T0: u64 = 1_700_000_000;

    fn faked<'h>(yaml: &str, host: &'h FakeHost) -> Engine<&'h FakeHost> {
        let reg = crate::domain::registry::parse(yaml, "test.yaml").expect("registry");
        Engine::with_host(Arc::new(reg), host, Clock::of(host), "h".into())
    }

    /// An open that the kernel saw reach file (8:1, `ino`).
    fn open_ino(pid: u32, path: &str, ino: u64) -> KernelEvent<'static> {
        let KernelEvent::Open(mut o) = open(pid, 0, path, 3) else {
            unreachable!()
        };
        o.ino = ino;
        o.dev = (8 << 20) | 1;
        KernelEvent::Open(o)
    }

    fn at(ev: KernelEvent<'static>, secs: u64) -> KernelEvent<'static> {
        let mut ev = ev;
        match &mut ev {
            KernelEvent::Open(o) => o.hdr.ts_ns = secs * 1_000_000_000,
            KernelEvent::Connect(c) => c.hdr.ts_ns = secs * 1_000_000_000,
            _ => {}
        }
        ev
    }

    fn secs(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn an_nhi_used_after_it_expired_is_drift_by_the_kernel_s_clock() {
        let host = FakeHost::default();
        let reg = "nhis:\n  - id: api\n    credentials: [/srv/app/token]\n    expires: 2024-01-01T00:00:00Z\n    interactive: allow\n";
        let mut e = faked(reg, &host);
        let mut out = Vec::new();
        e.handle(at(open(10, 0, "/srv/app/token", 3), T0), &mut out);
        // 2024-06: after `expires`.
        e.handle(
            at(open(10, 0, "/srv/app/token", 3), 1_717_000_000),
            &mut out,
        );
        e.handle(at(connect(10, [10, 0, 0, 1], 443), 1_717_000_000), &mut out);
        assert_eq!(out[0].verdict, Verdict::Ok, "{}", out[0].reason);
        assert_eq!(out[1].drift, vec![crate::domain::event::DriftKind::Expired]);
        assert!(
            out[1]
                .reason
                .starts_with("NHI api expired at 2024-01-01T00:00:00Z"),
            "{}",
            out[1].reason
        );
        assert_eq!(out[2].drift, vec![crate::domain::event::DriftKind::Expired]);
        // The wall clock is the kernel's boot time plus the host's offset.
        let mut host2 = FakeHost::default();
        host2.wall_offset_ns = 17_000_000 * 1_000_000_000;
        let mut e = faked(reg, &host2);
        e.handle(at(open(10, 0, "/srv/app/token", 3), T0), &mut out);
        assert_eq!(out[3].drift, vec![crate::domain::event::DriftKind::Expired]);
    }

    #[test]
    fn a_stale_credential_is_drift_and_its_age_is_read_again_after_a_second() {
        let host = FakeHost::default();
        host.put_file("/srv/app/token", 42, secs(T0 - 7200));
        let reg = "nhis:\n  - id: api\n    credentials: [/srv/app/token]\n    max_age: 1h\n    interactive: allow\n";
        let mut e = faked(reg, &host);
        let mut out = Vec::new();
        e.handle(at(open(10, 0, "/srv/app/token", 3), T0), &mut out);
        assert_eq!(
            out[0].drift,
            vec![crate::domain::event::DriftKind::StaleCredential]
        );
        assert_eq!(
            out[0].reason,
            "/srv/app/token of NHI api was last changed 2h ago, longer than its max_age of 1h."
        );
        // Rotated now: a burst of opens within the second still sees the time read first.
        host.put_file("/srv/app/token", 43, secs(T0));
        e.handle(at(open(10, 0, "/srv/app/token", 3), T0), &mut out);
        assert_eq!(out[1].verdict, Verdict::Drift);
        assert_eq!(host.asked("modified"), 1);
        host.advance(MTIME_TTL);
        e.handle(at(open(10, 0, "/srv/app/token", 3), T0), &mut out);
        assert_eq!(out[2].verdict, Verdict::Ok, "{}", out[2].reason);
        assert_eq!(host.asked("modified"), 2);
    }

    #[test]
    fn another_name_of_a_credential_is_it_until_a_rotation_frees_the_inode() {
        let host = FakeHost::default();
        host.put_file("/srv/app/token", 42, secs(T0));
        let mut e = faked(REG, &host);
        let mut out = Vec::new();
        // A hard link (or a bind mount) of the registered file.
        e.handle(open_ino(10, "/mnt/x/t", 42), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (
                out[0].nhi.as_deref(),
                out[0].path.as_deref(),
                out[0].target.as_deref()
            ),
            (Some("api"), Some("/srv/app/token"), Some("/mnt/x/t"))
        );
        // Rotated (a new file renamed over the old one): inode 42 may be any file now, and the
        // engine has not refreshed its inodes yet; the registered name is checked, so the old
        // inode under another name is no longer the credential.
        host.put_file("/srv/app/token", 43, secs(T0));
        e.handle(open_ino(10, "/mnt/x/t", 42), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(e.stats.filter_false_positives, 1);
        // After the refresh (the daemon's once a second), the new inode is the credential.
        e.set_registry(Arc::clone(e.registry()));
        e.handle(open_ino(10, "/mnt/y/t", 43), &mut out);
        assert_eq!(
            (out[1].nhi.as_deref(), out[1].path.as_deref()),
            (Some("api"), Some("/srv/app/token"))
        );
    }

    #[test]
    fn a_process_first_seen_in_a_record_is_read_from_the_host() {
        let host = FakeHost::default();
        host.procs.borrow_mut().insert(
            50,
            ProcFacts {
                ppid: 1,
                uid: 0,
                comm: "app".into(),
                exe: "/usr/bin/app".into(),
                cmdline: vec!["app".into(), "--password=hunter2".into()],
            },
        );
        // In a human's terminal: interactive use, which this NHI does not allow.
        host.sessions.borrow_mut().insert(
            50,
            SessionFacts {
                sid_tty: Some((50, true)),
                cgroup: Some("0::/user.slice/session-1.scope\n".into()),
            },
        );
        let reg = REG.replace("    interactive: allow\n", "");
        let mut e = faked(&reg, &host);
        let mut out = Vec::new();
        let KernelEvent::Open(mut o) = open(50, 0, "/srv/app/token", 3) else {
            unreachable!()
        };
        o.hdr.flags = 0; // the kernel did not say whether it has a terminal
        e.handle(KernelEvent::Open(o), &mut out);
        assert_eq!(out[0].exe, "/usr/bin/app");
        assert_eq!(out[0].ppid, 1);
        assert_eq!(out[0].cmdline, vec!["app", "--password=***"]);
        assert_eq!(
            out[0].drift,
            vec![crate::domain::event::DriftKind::InteractiveUse],
            "{}",
            out[0].reason
        );
        assert_eq!(host.asked("process"), 1);
    }

    #[test]
    fn a_pod_s_names_come_from_its_cgroup_and_the_kubelet_s_directories() {
        const UID: &str = "0f2a4c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b";
        let id = "3f4e1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";
        let host = FakeHost::default();
        host.cgroups.borrow_mut().insert(
            77,
            Arc::from(format!("/kubepods/burstable/pod{UID}/{id}").as_str()),
        );
        host.dirs.borrow_mut().insert(
            PathBuf::from(crate::domain::kubernetes::DEFAULT_PODS_LOG_DIR),
            vec![format!("payments_api-1_{UID}")],
        );
        host.dirs.borrow_mut().insert(
            PathBuf::from(crate::domain::kubernetes::DEFAULT_CONTAINERS_LOG_DIR),
            vec![format!("api-1_payments_uploader-{id}.log")],
        );
        let mut e = faked(REG, &host);
        let mut out = Vec::new();
        let KernelEvent::Open(mut o) = open(60, 0, "/srv/app/token", 3) else {
            unreachable!()
        };
        o.hdr.cgroup_id = 77;
        e.handle(KernelEvent::Open(o), &mut out);
        let ev = &out[0];
        assert_eq!(ev.container.as_deref(), Some(id));
        assert_eq!(ev.pod_uid.as_deref(), Some(UID));
        assert_eq!(
            (
                ev.pod.as_deref(),
                ev.pod_namespace.as_deref(),
                ev.container_name.as_deref()
            ),
            (Some("api-1"), Some("payments"), Some("uploader"))
        );
    }

    #[test]
    fn every_sentence_names_the_process_and_the_nhi() {
        let host = FakeHost::default();
        let mut e = faked(REG, &host);
        let mut out = Vec::new();
        e.handle(exec(10, 0, "/usr/bin/app"), &mut out);
        e.handle(open(10, 0, "/srv/app/token", 3), &mut out);
        e.handle(open(10, 0, "/home/ann/.aws/credentials", -13), &mut out);
        e.handle(connect(10, [10, 1, 2, 3], 443), &mut out);
        e.handle(exec(10, 0, "/usr/bin/app"), &mut out);
        e.handle(
            KernelEvent::Exit(monitor_common::ExitEvent {
                hdr: hdr(EventKind::Exit, 10, 0, "app"),
            }),
            &mut out,
        );
        let reasons: Vec<&str> = out.iter().map(|x| x.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "/usr/bin/app opened /srv/app/token, a credential of NHI api, within its declared scope.",
                "/usr/bin/app tried to open /home/ann/.aws/credentials, a watched credential location that no registered NHI owns.",
                "/usr/bin/app (pid 10), holding NHI api, connected to 10.1.2.3:443, a declared endpoint.",
                "/usr/bin/app (pid 10), holding NHI api, started a new program.",
                "/usr/bin/app (pid 10), holding NHI api, exited.",
            ]
        );
    }
}
