//! The pipeline's core: kernel records in, decided events out.
//!
//! Keeps the process table, resolves paths, links opens and connections to NHIs (attribution),
//! and asks `verdict` for the decision. No I/O besides reading /proc and file metadata; the
//! daemon feeds it from the ring buffer, tests feed it by hand.

use std::{
    collections::HashMap,
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use monitor_common::{ConnectEvent, EventHeader, ExecEvent, OpenEvent, OpenOp, AF_INET};

use crate::{
    decode::{self, KernelEvent},
    event::{errno_name, Dev, Event, Kind, Proto, Ts, Verdict},
    proctable::ProcTable,
    registry::{Placement, Registry},
    resolve,
    verdict::{self, Actor},
};

/// Converts the kernel's `CLOCK_BOOTTIME` stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Realtime minus boottime, in ns.
    offset_ns: i128,
}

impl Clock {
    /// Measure the offset now.
    pub fn now() -> Self {
        let rt = clock_ns(libc::CLOCK_REALTIME);
        let bt = clock_ns(libc::CLOCK_BOOTTIME);
        Self { offset_ns: rt - bt }
    }

    /// A clock with a fixed offset (tests).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let ns = boot_ns as i128 + self.offset_ns;
        if ns <= 0 {
            return UNIX_EPOCH;
        }
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Counters about what the engine did with the records it got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    /// Opens the kernel prefilter let through that no pattern matches.
    pub filter_false_positives: u64,
    pub events: u64,
}

/// How long a credential file's modification time is trusted before it is read again.
const MTIME_TTL: Duration = Duration::from_secs(1);

/// Kernel records in, events out.
pub struct Engine {
    registry: Arc<Registry>,
    procs: ProcTable,
    proc_root: PathBuf,
    clock: Clock,
    /// The host name events carry (shared by all of them).
    host: Arc<str>,
    dns: crate::dns::Dns,
    /// The registered credential files by identity, (major, minor, inode) -> NHI index: a hard
    /// link or a bind mount (in any mount namespace) is the same credential under another name.
    cred_inodes: HashMap<(u32, u32, u64), (usize, Arc<str>)>,
    cgroups: crate::cgroups::CgroupNames,
    /// The container id and Kubernetes pod UID of each cgroup seen (cgroup ids are not reused
    /// while the host runs).
    containers: HashMap<u64, Placed>,
    /// Pod and container names, by pod UID and container id.
    kube: crate::kubernetes::KubeNames,
    /// Modification times of credential files (for `max_age`), read at most once per
    /// [`MTIME_TTL`] per file: a burst of opens costs one `stat`.
    mtimes: HashMap<PathBuf, (Instant, Option<SystemTime>)>,
    /// Pipes a holder writes into (by inode), with the NHIs it holds: a process whose standard
    /// input is one of them holds those NHIs from its next connection on. Bounded by
    /// [`FED_PIPES_CAP`] (cleared when full: a pipe inode is not reused while the host runs,
    /// and an old pipeline's reader already took its holding).
    fed_pipes: HashMap<u64, Vec<Arc<str>>>,
    /// Pipes some process reads as its standard input (seen at its exec or connect): a
    /// pipeline's pipes, which void holdings granted through them (`Process::holds_via_pipe`).
    /// Bounded like `fed_pipes`.
    pipeline_pipes: std::collections::HashSet<u64>,
    pub stats: Stats,
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
        let container = crate::proctable::container_id(&format!("0::{path}")).map(Arc::from);
        // Only a container's cgroup is worth the parse: a pod's processes all run in one.
        let pod_uid = container
            .as_ref()
            .and_then(|_| crate::kubernetes::pod_uid(path))
            .map(Arc::from);
        Self { container, pod_uid }
    }
}

/// Pipes remembered at most (see `Engine::fed_pipes`).
const FED_PIPES_CAP: usize = 4096;

/// Whether `path` is still the file (major, minor, inode).
fn still_at(path: &str, major: u32, minor: u32, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| {
        let dev = m.dev();
        m.ino() == ino && libc::major(dev) == major && libc::minor(dev) == minor
    })
}

/// Identity of every literal credential path of `registry`, as it is now on disk.
fn credential_inodes(registry: &Registry) -> HashMap<(u32, u32, u64), (usize, Arc<str>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = HashMap::new();
    for (i, nhi) in registry.nhis.iter().enumerate() {
        for g in nhi.credentials.iter().filter(|g| g.is_literal()) {
            if let Ok(m) = std::fs::metadata(g.as_str()) {
                out.entry((libc::major(m.dev()), libc::minor(m.dev()), m.ino()))
                    .or_insert_with(|| (i, Arc::from(g.as_str())));
            }
        }
    }
    out
}

impl Engine {
    pub fn new(
        registry: Arc<Registry>,
        proc_root: impl Into<PathBuf>,
        clock: Clock,
        host: String,
    ) -> Self {
        let proc_root = proc_root.into();
        Self {
            cred_inodes: credential_inodes(&registry),
            registry,
            procs: ProcTable::new(&proc_root),
            proc_root,
            clock,
            host: Arc::from(host),
            dns: crate::dns::Dns::default(),
            cgroups: crate::cgroups::CgroupNames::new(),
            containers: HashMap::new(),
            kube: crate::kubernetes::KubeNames::default(),
            mtimes: HashMap::new(),
            fed_pipes: HashMap::new(),
            pipeline_pipes: std::collections::HashSet::new(),
            stats: Stats::default(),
        }
    }

    /// How much of each command line is kept (the daemon's `--cmdline`); set before the
    /// process table is seeded.
    pub fn set_cmdline_mode(&mut self, mode: crate::redact::CmdlineMode) {
        self.procs.set_cmdline_mode(mode);
    }

    /// Where the kubelet's pod and container log directories are (the daemon's
    /// `--pods-log-dir` and `--containers-log-dir`): pod and container names come from them.
    pub fn set_kubernetes_dirs(&mut self, pods: &Path, containers: &Path) {
        self.kube = crate::kubernetes::KubeNames::new(pods, containers);
    }

    pub fn procs(&mut self) -> &mut ProcTable {
        &mut self.procs
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A DNS packet seen on the host (`outgoing`: sent by it): queries are remembered, and the
    /// answers to them give addresses their names.
    pub fn dns_packet(&mut self, pkt: &[u8], outgoing: bool) {
        self.dns.packet(pkt, outgoing, Instant::now());
    }

    /// What became of the DNS packets seen (for health and heartbeats).
    pub fn dns_stats(&self) -> crate::dns::DnsStats {
        self.dns.stats()
    }

    /// Addresses the DNS cache holds names for.
    pub fn dns_cached_addresses(&self) -> usize {
        self.dns.cached_addresses()
    }

    /// Use a new registry from the next record on. Holdings stay: a process that read a
    /// credential still holds its secret, whatever the registry now says about it.
    pub fn set_registry(&mut self, registry: Arc<Registry>) {
        self.cred_inodes = credential_inodes(&registry);
        self.registry = registry;
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Handle one record; decided events are appended to `out`.
    pub fn handle(&mut self, ev: KernelEvent, out: &mut Vec<Event>) {
        self.stats.records += 1;
        let before = out.len();
        match ev {
            KernelEvent::Open(o) => self.open(&o, out),
            KernelEvent::Exec(e) => self.exec(&e, out),
            KernelEvent::Fork(f) => self.procs.fork(f.hdr.pid, f.child_tid),
            KernelEvent::Exit(x) => self.exit(&x.hdr, out),
            KernelEvent::Connect(c) => self.connect(&c, out),
        }
        self.stats.events += (out.len() - before) as u64;
    }

    /// The modification time of `path` (following symlinks), at most [`MTIME_TTL`] old.
    fn mtime(&mut self, path: &Path) -> Option<SystemTime> {
        let now = Instant::now();
        if let Some((at, m)) = self.mtimes.get(path) {
            if now.duration_since(*at) < MTIME_TTL {
                return *m;
            }
        }
        if self.mtimes.len() > 4096 {
            self.mtimes.clear();
        }
        let m = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        self.mtimes.insert(path.to_path_buf(), (now, m));
        m
    }

    /// An event with the process fields filled from the header and the process table.
    fn base(&mut self, kind: Kind, hdr: &EventHeader) -> Event {
        let ts = Ts::from_system(self.clock.wall(hdr.ts_ns));
        let mut e = Event::new(kind, ts, Arc::clone(&self.host));
        let p = self.procs.lookup_fresh(hdr.pid);
        e.pid = hdr.pid;
        e.tid = hdr.tid;
        e.ppid = p.ppid;
        e.uid = hdr.uid;
        e.gid = hdr.gid;
        e.exe = p.exe.clone();
        e.script = p.script.clone();
        e.comm = decode::comm(hdr);
        e.cmdline = p.cmdline.clone();
        e.cgroup_id = hdr.cgroup_id;
        let fallback = (p.container.clone(), p.cgroup.clone());
        // The kernel's cgroup id is what the task was in at the event; /proc may be gone.
        let placed = if let Some(path) = self.cgroups.path(hdr.cgroup_id) {
            if self.containers.len() > 65_536 {
                self.containers.clear();
            }
            let placed = self
                .containers
                .entry(hdr.cgroup_id)
                .or_insert_with(|| Placed::of(&path))
                .clone();
            let p = self.procs.lookup(hdr.pid);
            p.container.clone_from(&placed.container);
            p.cgroup = Some(path);
            placed
        } else {
            match fallback {
                (Some(container), Some(path)) => Placed {
                    pod_uid: crate::kubernetes::pod_uid(&path).map(Arc::from),
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
            if let Some(pod) = self.kube.pod(uid) {
                e.pod = Some(pod.name.to_string());
                e.pod_namespace = Some(pod.namespace.to_string());
            }
            if let Some(id) = &placed.container {
                e.container_name = self.kube.container(id).map(|n| n.to_string());
            }
        }
        if hdr.flags & monitor_common::HDR_TTY_KNOWN != 0 {
            self.procs.lookup(hdr.pid).tty = hdr.flags & monitor_common::HDR_TTY != 0;
        }
        e
    }

    /// Whether `pid` runs in a human's terminal session: it has a controlling terminal, or its
    /// session was opened by `sshd` or `login`. A process that started its own session
    /// (`setsid`, as daemons and service managers do) without a terminal is not interactive.
    pub fn is_interactive(&mut self, pid: u32, hdr_flags: u32) -> bool {
        let p = self.procs.lookup_fresh(pid);
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
        let real_s = real.as_ref().map(|p| p.to_string_lossy().into_owned());
        let reg = Arc::clone(&self.registry);
        // The inode is the file's identity: a registered file under any name is that file.
        let by_inode = (o.ino != 0)
            .then(|| {
                self.cred_inodes
                    .get(&(o.dev >> 20, o.dev & 0xf_ffff, o.ino))
            })
            .flatten()
            .and_then(|(i, path)| Some((reg.nhis.get(*i)?, Arc::clone(path))))
            // Opened under another name: the inode number may be the credential's old one,
            // freed by a rotation and given to a new file before the next refresh (a second at
            // most). The registered path must still be that inode for the alias to count.
            .filter(|(_, registered)| {
                real_s.as_deref() == Some(&**registered)
                    || still_at(registered, o.dev >> 20, o.dev & 0xf_ffff, o.ino)
            });
        let by_path = real_s.as_deref().and_then(|p| reg.owner_of(p));
        let owner = by_inode.as_ref().map(|(n, _)| *n).or(by_path);
        let watched = owner.is_some() || real_s.as_deref().is_some_and(|p| reg.is_watched(p));
        if !watched {
            self.stats.filter_false_positives += 1;
            return;
        }
        let path_s = match (&by_inode, &real_s) {
            (Some((_, registered)), _) => registered.to_string(),
            (None, Some(r)) => r.clone(),
            (None, None) => String::from_utf8_lossy(raw).into_owned(),
        };
        let target_s = real_s.filter(|r| *r != path_s);
        let path = PathBuf::from(&path_s);

        let mut e = self.base(Kind::Open, &o.hdr);
        e.syscall = OpenOp::from_u32(o.op);
        e.path = Some(path_s.clone());
        e.path_arg = Some(String::from_utf8_lossy(raw).into_owned());
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
        match owner {
            Some(nhi) => {
                let interactive = self.is_interactive(e.pid, o.hdr.flags);
                let cgroup = self.procs.get(e.pid).and_then(|p| p.cgroup.clone());
                let actor = Actor::of(&e, interactive, cgroup.as_deref());
                // The registered name (for an inode match) is the one the daemon can stat.
                let mtime = match nhi.max_age {
                    Some(_) => self.mtime(&path),
                    None => None,
                };
                let f = verdict::assess_open(nhi, &actor, &path_s, now, mtime);
                e.nhi = Some(nhi.id.to_string());
                if f.is_drift() {
                    e.verdict = Verdict::Drift;
                    e.reason = f.reason();
                    e.drift = f.kinds;
                } else {
                    e.reason = format!(
                        "{} {} {path_s}, a credential of NHI {}, within its declared scope.",
                        if e.exe.is_empty() { &e.comm } else { &e.exe },
                        if o.ret < 0 { "tried to open" } else { "opened" },
                        nhi.id
                    );
                }
                if o.ret >= 0 {
                    self.take_hold(o.hdr.pid, &nhi.id, o);
                }
            }
            None => {
                e.verdict = Verdict::Unregistered;
                e.reason = format!(
                    "{} {} {path_s}, a watched credential location that no registered NHI owns.",
                    if e.exe.is_empty() { &e.comm } else { &e.exe },
                    if o.ret < 0 { "tried to open" } else { "opened" },
                );
            }
        }
        out.push(e);
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
        let mut cmdline = decode::args(x);
        if cmdline.is_empty() {
            cmdline = crate::proctable::read_proc(&self.proc_root, pid)
                .map(|p| p.cmdline)
                .unwrap_or_default();
        }
        let exe = exe.to_string_lossy().into_owned();
        self.procs
            .exec(pid, x.hdr.uid, decode::comm(&x.hdr), exe.clone(), cmdline);
        self.procs.lookup(pid).script = script.clone();
        // Declared holders carry their NHI without reading a file (a secret in the environment).
        let reg = Arc::clone(&self.registry);
        let placed = reg.nhis.iter().any(|n| {
            n.holders
                .as_ref()
                .is_some_and(|h| !h.cgroup.is_empty() || !h.container.is_empty())
        });
        let (cgroup, container) = if placed {
            let p = self.procs.lookup_fresh(pid);
            (p.cgroup.clone(), p.container.clone())
        } else {
            (None, None)
        };
        let at = Placement {
            cgroup: cgroup.as_deref(),
            container: container.as_deref(),
        };
        for nhi in &reg.nhis {
            if nhi
                .holders
                .as_ref()
                .is_some_and(|h| h.admits(&exe, script.as_deref(), x.hdr.uid, at))
            {
                self.procs
                    .lookup(pid)
                    .holds
                    .insert(Arc::from(nhi.id.as_str()));
            }
        }
        self.holder_event(Kind::Exec, &x.hdr, out);
    }

    fn exit(&mut self, hdr: &EventHeader, out: &mut Vec<Event>) {
        self.holder_event(Kind::Exit, hdr, out);
        self.procs.exit(hdr.pid);
    }

    /// Exec and exit are reported for processes that hold an NHI: they bound its use.
    fn holder_event(&mut self, kind: Kind, hdr: &EventHeader, out: &mut Vec<Event>) {
        let held = self.held_by(hdr.pid);
        if held.is_empty() {
            return;
        }
        for id in held {
            let mut e = self.base(kind, hdr);
            e.reason = format!(
                "{} (pid {}), holding NHI {id}, {}.",
                if e.exe.is_empty() { &e.comm } else { &e.exe },
                e.pid,
                if kind == Kind::Exec {
                    "started a new program"
                } else {
                    "exited"
                }
            );
            e.nhi = Some(id.to_string());
            out.push(e);
        }
    }

    /// Process `pid` read a credential of NHI `id`: it holds the NHI from now on (its later
    /// children inherit the holding when they fork). When it read the secret *for its parent*,
    /// as in `TOKEN=$(cat file)` (its stdout is a pipe its parent reads), the parent holds it too,
    /// so the parent's later children (`curl -H "Authorization: $TOKEN" ...`) are holders; a
    /// parent that merely started the reader (its output goes elsewhere) does not, and service
    /// managers never do.
    fn take_hold(&mut self, pid: u32, id: &str, o: &OpenEvent) {
        let id: Arc<str> = Arc::from(id);
        let p = self.procs.lookup(pid);
        p.holds.insert(Arc::clone(&id));
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
        if ppid <= 1 {
            return;
        }
        let supervisor = self
            .procs
            .get(ppid)
            .is_none_or(|pp| is_supervisor(&pp.exe, &pp.comm));
        // The kernel compared the reader's stdout with its parent's fds at the open.
        let feeds = o.flags & monitor_common::FEEDS_PARENT != 0;
        if !supervisor && feeds {
            log::debug!("pid {pid} read NHI {id} for its parent {ppid}: the parent holds it too");
            let p = self.procs.lookup(ppid);
            if !p.holds_via_pipe.contains(&(Arc::clone(&id), o.stdout_ino)) {
                p.holds_via_pipe.push((id, o.stdout_ino));
            }
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
        let p = self.procs.lookup(pid);
        let mut held: Vec<Arc<str>> = p.holds.iter().cloned().collect();
        for (id, pipe) in &p.holds_via_pipe {
            if !self.pipeline_pipes.contains(pipe) && !held.contains(id) {
                held.push(Arc::clone(id));
            }
        }
        held
    }

    fn connect(&mut self, c: &ConnectEvent, out: &mut Vec<Event>) {
        // A process reading from a pipe a holder writes into holds what flows through it
        // (`cat token | curl -d @- ...`); a shell that merely started both sides reads from
        // its terminal, not from that pipe.
        self.note_stdin_pipe(c.stdin_pipe);
        if c.stdin_pipe != 0 {
            if let Some(ids) = self.fed_pipes.get(&c.stdin_pipe).cloned() {
                let p = self.procs.lookup(c.hdr.pid);
                for id in ids {
                    p.holds.insert(id);
                }
            }
        }
        let mut held = self.held_by(c.hdr.pid);
        let p = self.procs.lookup(c.hdr.pid);
        let (exe, script, uid) = (p.exe.clone(), p.script.clone(), c.hdr.uid);
        let (cgroup, container) = (p.cgroup.clone(), p.container.clone());
        let at = Placement {
            cgroup: cgroup.as_deref(),
            container: container.as_deref(),
        };
        let reg = Arc::clone(&self.registry);
        for nhi in &reg.nhis {
            if let Some(h) = &nhi.holders {
                if h.admits(&exe, script.as_deref(), uid, at)
                    && !held.iter().any(|id| **id == *nhi.id)
                {
                    held.push(Arc::from(nhi.id.as_str()));
                }
            }
        }
        if held.is_empty() {
            return;
        }
        let (daddr, saddr) = addrs(c);
        let names = self.dns.names(daddr, std::time::Instant::now());
        let now = self.clock.wall(c.hdr.ts_ns);
        let interactive = self.is_interactive(c.hdr.pid, c.hdr.flags);
        for id in held {
            let Some(nhi) = reg.nhis.iter().find(|n| *n.id == *id) else {
                continue;
            };
            let mut e = self.base(Kind::Connect, &c.hdr);
            e.proto = Some(if c.proto == monitor_common::IPPROTO_UDP {
                Proto::Udp
            } else {
                Proto::Tcp
            });
            e.daddr = Some(daddr);
            e.dport = Some(c.dport);
            e.saddr = Some(saddr);
            e.sport = (c.sport != 0).then_some(c.sport);
            e.dns_names = Some(names.clone());
            e.nhi = Some(id.to_string());
            let cgroup = self.procs.get(e.pid).and_then(|p| p.cgroup.clone());
            let actor = Actor::of(&e, interactive, cgroup.as_deref());
            let f = verdict::assess_connect(nhi, &actor, daddr, c.dport, &names, now);
            if f.is_drift() {
                e.verdict = Verdict::Drift;
                e.reason = f.reason();
                e.drift = f.kinds;
            } else {
                e.reason = format!(
                    "{} (pid {}), holding NHI {id}, connected to {}{}.",
                    if e.exe.is_empty() { &e.comm } else { &e.exe },
                    e.pid,
                    verdict::sockaddr(daddr, c.dport),
                    if nhi.endpoints.is_some() {
                        ", a declared endpoint"
                    } else {
                        "; its endpoints are not restricted"
                    }
                );
            }
            out.push(e);
        }
    }
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
    exe.rsplit('/').next().unwrap_or(exe)
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
    use monitor_common::{EventKind, ForkEvent, COMM_LEN, PATH_CAP};

    fn engine(yaml: &str) -> (Engine, PathBuf) {
        let root = std::env::temp_dir().join(format!(
            "nhiscope-engine-{}-{}",
            std::process::id(),
            yaml.len()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("fixture");
        let reg = crate::registry::parse(yaml, "test.yaml").expect("registry");
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

    fn exec(pid: u32, uid: u32, exe: &str) -> KernelEvent {
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
        KernelEvent::Exec(Box::new(e))
    }

    fn unsafe_zeroed<T: Copy>() -> T {
        let bytes = vec![0u8; std::mem::size_of::<T>()];
        // SAFETY: the monitor_common records are plain data; all-zero is a valid value.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    }

    fn open(pid: u32, uid: u32, path: &str, ret: i64) -> KernelEvent {
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

    fn connect(pid: u32, addr: [u8; 4], port: u16) -> KernelEvent {
        let mut c: ConnectEvent = unsafe_zeroed();
        c.hdr = hdr(EventKind::Connect, pid, 0, "x");
        c.family = AF_INET;
        c.dport = port;
        c.daddr[..4].copy_from_slice(&addr);
        KernelEvent::Connect(c)
    }

    fn fork(parent: u32, child: u32) -> KernelEvent {
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
            vec![crate::event::DriftKind::ReaderOutOfScope]
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
            vec![crate::event::DriftKind::EndpointOutOfScope]
        );
        assert!(
            conns[1].reason.contains("192.0.2.1:443"),
            "{}",
            conns[1].reason
        );
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
}
