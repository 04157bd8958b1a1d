//! The pipeline's core: kernel records in, decided events out.
//!
//! Keeps the process table, resolves paths, links opens and connections to NHIs (attribution),
//! and asks `verdict` for the decision. No I/O besides reading /proc and file metadata; the
//! daemon feeds it from the ring buffer, tests feed it by hand.

use std::{
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use monitor_common::{ConnectEvent, EventHeader, ExecEvent, OpenEvent, OpenOp, AF_INET};

use crate::{
    decode::{self, KernelEvent},
    event::{errno_name, Event, Kind, Verdict},
    proctable::ProcTable,
    registry::Registry,
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

/// Kernel records in, events out.
pub struct Engine {
    registry: Arc<Registry>,
    procs: ProcTable,
    proc_root: PathBuf,
    clock: Clock,
    host: String,
    pub stats: Stats,
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
            registry,
            procs: ProcTable::new(&proc_root),
            proc_root,
            clock,
            host,
            stats: Stats::default(),
        }
    }

    pub fn procs(&mut self) -> &mut ProcTable {
        &mut self.procs
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
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
            KernelEvent::Chdir(c) => self.chdir(&c),
            KernelEvent::Exec(e) => self.exec(&e, out),
            KernelEvent::Fork(f) => self.procs.fork(f.hdr.pid, f.child_tid),
            KernelEvent::Exit(x) => self.exit(&x.hdr, out),
            KernelEvent::Connect(c) => self.connect(&c, out),
        }
        self.stats.events += (out.len() - before) as u64;
    }

    /// An event with the process fields filled from the header and the process table.
    fn base(&mut self, kind: Kind, hdr: &EventHeader) -> Event {
        let ts = humantime::format_rfc3339_nanos(self.clock.wall(hdr.ts_ns)).to_string();
        let mut e = Event::new(kind, ts, self.host.clone());
        let p = self.procs.lookup(hdr.pid);
        e.pid = hdr.pid;
        e.tid = hdr.tid;
        e.ppid = p.ppid;
        e.uid = hdr.uid;
        e.gid = hdr.gid;
        e.exe = p.exe.clone();
        e.comm = decode::comm(hdr);
        e.cmdline = p.cmdline.clone();
        e.cgroup_id = hdr.cgroup_id;
        e
    }

    fn open(&mut self, o: &OpenEvent, out: &mut Vec<Event>) {
        let raw = decode::c_bytes(&o.path, o.path_len as usize);
        let raw_path = Path::new(OsStr::from_bytes(raw));
        let abs = {
            let cwd = self.procs.lookup(o.hdr.pid).cwd.clone();
            let base = if raw_path.is_absolute() {
                None
            } else {
                resolve::base_dir(&self.proc_root, o.hdr.pid, o.dfd, cwd.as_deref())
            };
            resolve::absolute(base.as_deref(), raw_path)
        };
        let path = abs.clone().unwrap_or_else(|| raw_path.to_path_buf());
        let path_s = path.to_string_lossy().into_owned();
        let target = abs.as_deref().and_then(resolve::symlink_target);
        let target_s = target.as_ref().map(|t| t.to_string_lossy().into_owned());

        let reg = Arc::clone(&self.registry);
        let owner = reg
            .owner_of(&path_s)
            .or_else(|| target_s.as_deref().and_then(|t| reg.owner_of(t)));
        if owner.is_none()
            && !reg.is_watched(&path_s)
            && !target_s.as_deref().is_some_and(|t| reg.is_watched(t))
        {
            self.stats.filter_false_positives += 1;
            return;
        }

        let mut e = self.base(Kind::Open, &o.hdr);
        e.syscall = OpenOp::from_u32(o.op).map(OpenOp::name);
        e.path = Some(path_s.clone());
        e.path_arg = Some(String::from_utf8_lossy(raw).into_owned());
        e.target = target_s;
        e.flags = Some(o.open_flags);
        e.result = Some(o.ret);
        if o.ret < 0 {
            e.error = Some(errno_name(-o.ret));
        }
        let now = self.clock.wall(o.hdr.ts_ns);
        match owner {
            Some(nhi) => {
                let actor = Actor {
                    pid: e.pid,
                    exe: &e.exe,
                    comm: &e.comm,
                    uid: e.uid,
                };
                let real = target.as_deref().unwrap_or(&path);
                let mtime = std::fs::metadata(real).and_then(|m| m.modified()).ok();
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
                    let id: Arc<str> = Arc::from(nhi.id.as_str());
                    self.procs.lookup(o.hdr.pid).holds.insert(id);
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

    fn chdir(&mut self, c: &OpenEvent) {
        let pid = c.hdr.pid;
        let new = match OpenOp::from_u32(c.op) {
            Some(OpenOp::Chdir) => {
                let raw = Path::new(OsStr::from_bytes(decode::c_bytes(
                    &c.path,
                    c.path_len as usize,
                )));
                let cwd = self.procs.lookup(pid).cwd.clone();
                resolve::absolute(cwd.as_deref(), raw)
                    .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            }
            _ => std::fs::read_link(self.proc_root.join(format!("{pid}/cwd"))).ok(),
        };
        self.procs.lookup(pid).cwd = new;
    }

    fn exec(&mut self, x: &ExecEvent, out: &mut Vec<Event>) {
        let pid = x.hdr.pid;
        if x.old_tid != pid {
            // A non-leader thread called exec: it took over the leader's pid.
            self.procs.exit(x.old_tid);
        }
        let raw = Path::new(OsStr::from_bytes(decode::c_bytes(
            &x.filename,
            x.filename_len as usize,
        )));
        let cwd = self.procs.lookup(pid).cwd.clone();
        let exe = resolve::absolute(cwd.as_deref(), raw)
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .unwrap_or_else(|| raw.to_path_buf());
        let mut cmdline = decode::args(x);
        if cmdline.is_empty() {
            cmdline = crate::proctable::read_proc(&self.proc_root, pid)
                .map(|p| p.cmdline)
                .unwrap_or_default();
        }
        self.procs.exec(
            pid,
            x.hdr.uid,
            decode::comm(&x.hdr),
            exe.to_string_lossy().into_owned(),
            cmdline,
        );
        self.holder_event(Kind::Exec, &x.hdr, out);
    }

    fn exit(&mut self, hdr: &EventHeader, out: &mut Vec<Event>) {
        self.holder_event(Kind::Exit, hdr, out);
        self.procs.exit(hdr.pid);
    }

    /// Exec and exit are reported for processes that hold an NHI: they bound its use.
    fn holder_event(&mut self, kind: Kind, hdr: &EventHeader, out: &mut Vec<Event>) {
        let held: Vec<Arc<str>> = self.procs.lookup(hdr.pid).holds.iter().cloned().collect();
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

    fn connect(&mut self, c: &ConnectEvent, out: &mut Vec<Event>) {
        let p = self.procs.lookup(c.hdr.pid);
        let mut held: Vec<Arc<str>> = p.holds.iter().cloned().collect();
        let (exe, uid) = (p.exe.clone(), c.hdr.uid);
        let comm = decode::comm(&c.hdr);
        let reg = Arc::clone(&self.registry);
        let actor = Actor {
            pid: c.hdr.pid,
            exe: &exe,
            comm: &comm,
            uid,
        };
        for nhi in &reg.nhis {
            if let Some(h) = &nhi.holders {
                if verdict::principals_match(h, &actor) && !held.iter().any(|id| **id == *nhi.id) {
                    held.push(Arc::from(nhi.id.as_str()));
                }
            }
        }
        if held.is_empty() {
            return;
        }
        let (daddr, saddr) = addrs(c);
        let names: Vec<String> = Vec::new();
        let now = self.clock.wall(c.hdr.ts_ns);
        for id in held {
            let Some(nhi) = reg.nhis.iter().find(|n| *n.id == *id) else {
                continue;
            };
            let mut e = self.base(Kind::Connect, &c.hdr);
            e.daddr = Some(daddr.to_string());
            e.dport = Some(c.dport);
            e.saddr = Some(saddr.to_string());
            e.sport = (c.sport != 0).then_some(c.sport);
            e.dns_names = Some(names.clone());
            e.nhi = Some(id.to_string());
            let actor = Actor {
                pid: e.pid,
                exe: &e.exe,
                comm: &e.comm,
                uid: e.uid,
            };
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
