//! The process table: who every pid is, kept from the kernel's fork/exec/exit/chdir records and
//! seeded from /proc at start, so that an event gets its `exe`, `ppid` and command line even when
//! the process is gone before the daemon looks.
//!
//! Fork records also announce new threads, which the kernel cannot cheaply tell apart from
//! processes; those entries are never looked up (events carry the thread group id) and
//! [`ProcTable::sweep`] drops them, with any process whose exit record was lost.
//!
//! Command lines enter here, from exec records and from /proc, and only as the daemon's
//! `--cmdline` setting keeps them ([`crate::domain::redact`]): whatever reads the table, and so every
//! output, never sees a secret that a process put in its arguments.
//!
//! The table does no I/O: what it reads of /proc and the clock, it asks a [`Host`].

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Instant,
};

use crate::{
    domain::event::{SharedArgs, SharedStr},
    domain::host::{Host, ProcFacts},
    domain::redact::{CmdlineMode, Kept},
};

/// A destination as a holder's judged list knows it: its protocol and peer (the local port is
/// not known yet when the kernel sees a connection start, so two connections to one peer are
/// one destination, judged alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnKey {
    pub udp: bool,
    /// The socket's network namespace: one address may be another host in another namespace,
    /// known by other names.
    pub netns: u64,
    pub daddr: std::net::IpAddr,
    pub dport: u16,
}

/// Connections remembered per holder as judged (see `Process::judged`).
pub const JUDGED_CAP: usize = 256;

/// What is known about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: SharedStr,
    /// Absolute path of the executable image ("" if unknown).
    pub exe: SharedStr,
    /// The script the image runs, when the kernel started an interpreter for one.
    pub script: Option<String>,
    /// Shared with the events of the process (and its forks): they take reference counts.
    pub cmdline: SharedArgs,
    /// NHIs this process holds (opened one of their credentials, or inherited the holding).
    pub holds: BTreeSet<Arc<str>>,
    /// NHIs this process holds because a child wrote one into a pipe this process held open
    /// (`TOKEN=$(cat token)`), with that pipe's inode: void once the pipe turns out to be a
    /// pipeline's (another process reads it as its stdin), since then the parent only held it
    /// for a moment while starting both sides (`cat token | curl -d @- ...`).
    pub holds_via_pipe: Vec<(Arc<str>, u64)>,
    /// Destinations judged for an NHI this process holds, with that NHI: a connection the
    /// process already had open is judged when it reads a credential, unless its destination
    /// was already judged for that NHI (see `Engine::connect`). Only holders have any; at most
    /// [`JUDGED_CAP`], oldest forgotten first.
    pub judged: std::collections::VecDeque<(ConnKey, Arc<str>)>,
    /// Session id (`setsid`), from /proc when it could be read.
    pub sid: u32,
    /// Whether the process has a controlling terminal.
    pub tty: bool,
    /// Container id, from the cgroup path, when the process runs in a container.
    pub container: Option<Arc<str>>,
    /// cgroup v2 path (`/system.slice/x.service`), when it could be read.
    pub cgroup: Option<Arc<str>>,
    /// `sid`, `tty` and `container` need reading again from /proc (after an exec):
    /// done when first needed, not at every exec.
    pub session_stale: bool,
    /// Created by a fork record and not yet confirmed to be a process (it may be a thread).
    pub unconfirmed: bool,
    pub seen: Instant,
    /// The `holders:` NHIs the process's connections carry, as last judged (the engine's
    /// `connection_holdings`), with what they were judged on; forgotten at exec.
    pub declared: Option<Declared>,
}

/// The `holders:` NHIs a process was found to be among, and what that was judged on: the
/// registry (by generation), the uid and the placement. Judged again when any of them changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub registry: u64,
    pub uid: u32,
    pub cgroup: Option<Arc<str>>,
    pub container: Option<Arc<str>>,
    pub ids: Vec<Arc<str>>,
}

impl Process {
    /// A process nothing is known of yet, first seen at `seen`.
    pub fn unknown(pid: u32, seen: Instant) -> Self {
        Self {
            pid,
            ppid: 0,
            uid: 0,
            comm: SharedStr::default(),
            exe: SharedStr::default(),
            script: None,
            cmdline: SharedArgs::default(),
            holds: BTreeSet::new(),
            holds_via_pipe: Vec::new(),
            judged: std::collections::VecDeque::new(),
            sid: 0,
            tty: false,
            container: None,
            cgroup: None,
            session_stale: false,
            unconfirmed: false,
            seen,
            declared: None,
        }
    }

    /// Refresh what can change at exec or setsid (session, terminal, cgroup) from the host;
    /// keeps the old values when the process is already gone.
    pub fn refresh_session(&mut self, host: &impl Host) {
        let facts = host.session(self.pid);
        if let Some((sid, tty)) = facts.sid_tty {
            self.sid = sid;
            self.tty = tty;
        }
        if let Some(cg) = facts.cgroup {
            self.container = container_id(&cg).map(Arc::from);
            self.cgroup = cg
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(Arc::from);
        }
    }
}

/// Session id and "has a controlling terminal" from the text of /proc/PID/stat.
pub fn parse_stat(stat: &str) -> Option<(u32, bool)> {
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let _state = f.next()?;
    let _ppid = f.next()?;
    let _pgrp = f.next()?;
    let sid = f.next()?.parse().ok()?;
    let tty_nr: i64 = f.next()?.parse().ok()?;
    Some((sid, tty_nr != 0))
}

/// The container id in a /proc/PID/cgroup text: the last 64-hex-digit run in the path
/// (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `/kubepods/.../<id>`, `libpod-<id>`).
pub fn container_id(cgroup: &str) -> Option<String> {
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| cgroup.lines().find_map(|l| l.splitn(3, ':').nth(2)))?;
    let mut found = None;
    for part in path.split(['/', '-', '.', ':']) {
        if part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
            found = Some(part.to_ascii_lowercase());
        }
    }
    found
}

/// Hashes a pid by one multiplication (Fibonacci hashing): the table is looked up several
/// times per record, and pids are small integers the kernel hands out, not input to defend
/// against (SipHash's strength is for keys an attacker chooses freely).
#[derive(Clone, Copy, Debug, Default)]
pub struct PidHasher(u64);

impl std::hash::Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PidMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<PidHasher>>;

/// All known processes by pid.
#[derive(Debug, Default)]
pub struct ProcTable {
    procs: PidMap<Process>,
    /// How much of each command line is kept.
    cmdline: CmdlineMode,
    /// Command lines as kept, by the arguments given.
    kept: Kept,
}

impl ProcTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep command lines as `mode` says from now on. Entries already in the table are cut
    /// down to it too (a reload that asks for redaction must not leave secrets behind); what
    /// an earlier mode cut cannot come back, so a mode that keeps more applies to processes
    /// started after the change.
    pub fn set_cmdline_mode(&mut self, mode: CmdlineMode) {
        self.cmdline = mode;
        if mode != CmdlineMode::Full {
            for p in self.procs.values_mut() {
                p.cmdline = mode.keep(p.cmdline.to_vec()).into();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Process> {
        self.procs.get_mut(&pid)
    }

    /// Seed the table with every process the host has. Returns how many were read.
    pub fn seed(&mut self, host: &impl Host) -> usize {
        let mut n = 0;
        for pid in host.pids() {
            if let Some(p) = read_proc_as(host, pid, self.cmdline) {
                self.procs.insert(pid, p);
                n += 1;
            }
        }
        n
    }

    /// The process, from the table or else from the host (a process the daemon has not heard
    /// of), or a placeholder when it is gone.
    pub fn lookup(&mut self, pid: u32, host: &impl Host) -> &mut Process {
        let mode = self.cmdline;
        let p = self.procs.entry(pid).or_insert_with(|| {
            read_proc_as(host, pid, mode).unwrap_or_else(|| Process::unknown(pid, host.now()))
        });
        p.unconfirmed = false;
        p
    }

    /// A task `child` was created by process `parent`.
    pub fn fork(&mut self, parent: u32, child: u32, host: &impl Host) {
        if child == parent {
            return;
        }
        let mut p = self.lookup(parent, host).clone();
        p.ppid = parent;
        p.pid = child;
        p.unconfirmed = true;
        p.seen = host.now();
        self.procs.insert(child, p);
    }

    /// Process `pid` replaced its image; `cmdline` is kept as the table's mode says (the
    /// engine keeps it first, by its bytes: [`ProcTable::keep_args`], [`ProcTable::exec_kept`]).
    #[cfg(test)]
    pub fn exec(
        &mut self,
        pid: u32,
        uid: u32,
        comm: SharedStr,
        exe: SharedStr,
        cmdline: Vec<String>,
        host: &impl Host,
    ) {
        let cmdline = self.keep(cmdline);
        self.exec_kept(pid, uid, comm, exe, cmdline, host);
    }

    /// A command line as the table's mode keeps it.
    pub fn keep(&mut self, argv: Vec<String>) -> SharedArgs {
        self.kept.keep(self.cmdline, argv)
    }

    /// An exec record's arguments (`argc` of them in `raw`) as the table's mode keeps them;
    /// `argv` turns them into text when these bytes were not seen before.
    pub fn keep_args(
        &mut self,
        argc: u32,
        raw: &[u8],
        argv: impl FnOnce() -> Vec<String>,
    ) -> SharedArgs {
        self.kept.keep_raw(self.cmdline, argc, raw, argv)
    }

    /// [`ProcTable::exec`] with the command line already kept.
    pub fn exec_kept(
        &mut self,
        pid: u32,
        uid: u32,
        comm: SharedStr,
        exe: SharedStr,
        cmdline: SharedArgs,
        host: &impl Host,
    ) {
        let p = self.lookup(pid, host);
        p.uid = uid;
        p.comm = comm;
        p.exe = exe;
        p.cmdline = cmdline;
        p.session_stale = true;
        p.declared = None;
    }

    /// The process, with its session facts read again if an exec made them stale.
    pub fn lookup_fresh(&mut self, pid: u32, host: &impl Host) -> &mut Process {
        let p = self.lookup(pid, host);
        if p.session_stale {
            p.refresh_session(host);
            p.session_stale = false;
        }
        p
    }

    /// The parent chain of `pid`, nearest first (bounded, and safe against cycles).
    pub fn ancestors(&self, pid: u32) -> Vec<&Process> {
        let mut out = Vec::new();
        let mut cur = self.procs.get(&pid).map(|p| p.ppid);
        while let Some(pp) = cur {
            if pp == 0 || out.len() >= 64 {
                break;
            }
            let Some(p) = self.procs.get(&pp) else { break };
            out.push(p);
            cur = Some(p.ppid).filter(|&x| x != pp);
        }
        out
    }

    /// Process `pid` ended: its entry is returned and removed.
    pub fn exit(&mut self, pid: u32) -> Option<Process> {
        self.procs.remove(&pid)
    }

    /// Drop entries that are not processes (threads announced by fork) and processes that
    /// vanished without an exit record. Entries younger than `grace` are kept: their records may
    /// still be on their way.
    pub fn sweep(&mut self, grace: std::time::Duration, host: &impl Host) -> usize {
        let before = self.procs.len();
        let now = host.now();
        self.procs.retain(|&pid, p| {
            if now.saturating_duration_since(p.seen) < grace {
                return true;
            }
            match host.tgid(pid) {
                Some(tgid) => tgid == pid,
                None => false,
            }
        });
        before - self.procs.len()
    }
}

/// Read one process from the host, its command line kept as `mode` says.
pub fn read_proc_as(host: &impl Host, pid: u32, mode: CmdlineMode) -> Option<Process> {
    let ProcFacts {
        ppid,
        uid,
        comm,
        exe,
        cmdline,
    } = host.process(pid)?;
    let mut p = Process::unknown(pid, host.now());
    p.ppid = ppid;
    p.uid = uid;
    p.comm = comm.into();
    p.exe = exe.into();
    p.cmdline = mode.keep(cmdline).into();
    p.refresh_session(host);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sense::proc_host::ProcHost;
    use std::path::PathBuf;

    /// A /proc of its own for each test (`name`): tests run in parallel.
    fn fixture(name: &str) -> (PathBuf, ProcTable, ProcHost) {
        let root =
            std::env::temp_dir().join(format!("nhiscope-proc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, tgid, ppid) in [(100u32, 100u32, 1u32), (101, 100, 1)] {
            let d = root.join(pid.to_string());
            std::fs::create_dir_all(&d).expect("fixture dir");
            std::fs::write(
                d.join("status"),
                format!("Name:\tsh\nTgid:\t{tgid}\nPid:\t{pid}\nPPid:\t{ppid}\nUid:\t1000\t1000\t1000\t1000\n"),
            )
            .expect("status");
            std::fs::write(d.join("comm"), "sh\n").expect("comm");
            std::fs::write(d.join("cmdline"), b"sh\0-c\0true\0").expect("cmdline");
        }
        let h = ProcHost::with_cgroup_root(&root, None);
        (root, ProcTable::new(), h)
    }

    #[test]
    fn seeds_processes_but_not_threads() {
        let (root, mut t, h) = fixture("seed");
        assert_eq!(t.seed(&h), 1);
        let p = t.get(100).expect("seeded");
        assert_eq!((p.ppid, p.uid, p.comm.as_str()), (1, 1000, "sh"));
        assert_eq!(p.cmdline, vec!["sh", "-c", "true"]);
        assert!(t.get(101).is_none());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn fork_exec_exit_keep_the_table() {
        let (root, mut t, h) = fixture("forkexec");
        t.seed(&h);
        t.get_mut(100).expect("seeded").script = Some("/srv/run.py".into());
        t.fork(100, 200, &h);
        let c = t.get(200).expect("child");
        assert_eq!((c.ppid, c.script.as_deref()), (100, Some("/srv/run.py")));
        assert!(c.unconfirmed);
        t.exec(
            200,
            0,
            "cat".into(),
            "/usr/bin/cat".into(),
            vec!["cat".into(), "x".into()],
            &h,
        );
        let c = t.lookup(200, &h);
        assert_eq!(
            (c.exe.as_str(), c.comm.as_str(), c.unconfirmed),
            ("/usr/bin/cat", "cat", false)
        );
        assert_eq!(t.exit(200).map(|p| p.pid), Some(200));
        assert!(t.get(200).is_none());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn command_lines_enter_the_table_redacted() {
        let (root, mut t, h) = fixture("redact");
        std::fs::write(
            root.join("100/cmdline"),
            b"curl\0-u\0bot:CanaryPw1\0https://h\0",
        )
        .expect("cmdline");
        t.seed(&h);
        assert_eq!(
            t.get(100).expect("seeded").cmdline,
            vec!["curl", "-u", "bot:***", "https://h"]
        );
        // A process first heard of through a lookup is read from /proc the same way.
        t.exit(100);
        assert_eq!(t.lookup(100, &h).cmdline[2], "bot:***");
        t.exec(
            100,
            0,
            "env".into(),
            "/usr/bin/env".into(),
            vec!["env".into(), "API_TOKEN=CanaryPw1".into(), "run".into()],
            &h,
        );
        assert_eq!(
            t.lookup(100, &h).cmdline,
            vec!["env", "API_TOKEN=***", "run"]
        );
        // argv0 keeps the program only; full keeps everything.
        t.set_cmdline_mode(CmdlineMode::Argv0);
        t.exec(
            100,
            0,
            "x".into(),
            "/x".into(),
            vec!["x".into(), "y".into()],
            &h,
        );
        assert_eq!(t.lookup(100, &h).cmdline, vec!["x"]);
        t.set_cmdline_mode(CmdlineMode::Full);
        t.exec(
            100,
            0,
            "x".into(),
            "/x".into(),
            vec!["x".into(), "--token=z".into()],
            &h,
        );
        assert_eq!(t.lookup(100, &h).cmdline, vec!["x", "--token=z"]);
        // A reload back to redacted cuts what the table holds already: no secret stays.
        t.set_cmdline_mode(CmdlineMode::Redacted);
        assert_eq!(t.lookup(100, &h).cmdline, vec!["x", "--token=***"]);
        t.set_cmdline_mode(CmdlineMode::Argv0);
        assert_eq!(t.lookup(100, &h).cmdline, vec!["x"]);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn stat_gives_session_and_terminal() {
        let s = "4242 (a (weird) name) S 1 4242 4242 34816 4242 4194560 0 0";
        assert_eq!(parse_stat(s), Some((4242, true)));
        let s = "17 (cron) S 1 17 17 0 -1 4194560";
        assert_eq!(parse_stat(s), Some((17, false)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "3f4e1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";
        assert_eq!(
            container_id(&format!("0::/system.slice/docker-{id}.scope\n")),
            Some(id.into())
        );
        assert_eq!(
            container_id(&format!(
                "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"
            )),
            Some(id.into())
        );
        assert_eq!(
            container_id(&format!("12:pids:/kubepods/besteffort/pod1/{id}")),
            Some(id.into())
        );
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    #[test]
    fn sweep_drops_threads_and_vanished_processes() {
        let (root, mut t, h) = fixture("sweep");
        t.seed(&h);
        t.fork(100, 101, &h); // a thread of 100 (Tgid 100 in its status)
        t.fork(100, 555, &h); // gone without an exit record
        assert_eq!(t.len(), 3);
        assert_eq!(t.sweep(std::time::Duration::ZERO, &h), 2);
        assert!(t.get(100).is_some());
        let _ = std::fs::remove_dir_all(root);
    }
}
