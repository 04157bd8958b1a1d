//! What the benchmark reads from the system and the processes it starts: `/proc` (CPU time,
//! RSS, the BPF programs and links a process holds), the `bpf_stats` sysctl, and children that
//! are always stopped, on success, on error and on Ctrl-C.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch Ctrl-C (and SIGTERM) so that the bench stops at its next check and cleans up, instead
/// of dying with the daemon running and the sysctl changed. Children in the terminal's process
/// group get the signal too and stop by themselves.
pub fn catch_interrupts() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// Fails when Ctrl-C was pressed.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("bench: interrupted: what it started is stopped and the sysctl restored");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A child process that is stopped when dropped: first `stop_signal`, then SIGKILL.
pub struct Managed {
    name: String,
    child: Child,
    stop_signal: i32,
    status: Option<ExitStatus>,
}

impl Managed {
    /// Starts `cmd`; the child is killed by the kernel if this process dies first.
    pub fn spawn(name: &str, mut cmd: Command, stop_signal: i32) -> Result<Self> {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stop_signal,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status when it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends the stop signal and waits up to `grace`, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.exited() {
            return Ok(s);
        }
        self.signal(self.stop_signal);
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Some(s) = self.exited() {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "bench: {} (pid {}) did not stop within {grace:?}: killing it",
            self.name,
            self.pid()
        );
        let _ = self.child.kill();
        let s = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        self.status = Some(s);
        Ok(s)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.stop(Duration::from_secs(5));
        }
    }
}

/// Sets `kernel.bpf_stats_enabled`, and puts back the value it found when dropped.
pub struct BpfStats {
    before: Option<String>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let before = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("cannot read {BPF_STATS}: does this kernel have BPF?"))?;
        let guard = Self {
            before: Some(before.trim().to_owned()),
        };
        guard.set(true)?;
        Ok(guard)
    }

    /// Turns the counting on or off (it costs two clock reads per program run: off while
    /// measuring wall time).
    pub fn set(&self, on: bool) -> Result<()> {
        fs::write(BPF_STATS, if on { "1" } else { "0" })
            .with_context(|| format!("cannot write {BPF_STATS}"))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = fs::write(BPF_STATS, before);
        }
    }
}

/// CPU time (user + system, all threads) of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    stat_cpu_seconds(&stat).context("unreadable /proc/PID/stat")
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The fields after the command name (which may contain spaces), from field 3 (state).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state (field 3).
    let ticks = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((ticks(11)? + ticks(12)?) as f64 / hz)
}

/// CPU seconds of each thread of a process, by thread name (threads of one name summed).
pub fn thread_cpu_seconds(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let (Ok(stat), Ok(comm)) = (
            fs::read_to_string(dir.join("stat")),
            fs::read_to_string(dir.join("comm")),
        ) else {
            continue;
        };
        if let Some(secs) = stat_cpu_seconds(&stat) {
            *out.entry(comm.trim().to_owned()).or_insert(0.0) += secs;
        }
    }
    out
}

/// The mappings of a process that hold the most resident memory: (what, KiB), largest first,
/// summed by file (anonymous memory as `[anon]`).
pub fn top_mappings(pid: u32, n: usize) -> Vec<(String, u64)> {
    let Ok(smaps) = fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            let kb: u64 = kb
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            *by.entry(current.clone()).or_insert(0) += kb;
        } else if line.split_whitespace().next().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            // `start-end perms offset dev inode [path]`
            let path = line.split_whitespace().nth(5).unwrap_or("");
            current = if path.is_empty() {
                "[anon]".to_owned()
            } else {
                path.to_owned()
            };
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, kb)| *kb > 0).collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.1));
    v.truncate(n);
    v
}

/// Resident memory of a process (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no VmRSS in /proc/PID/status")
}

/// One BPF program a process holds a file descriptor of, as its fdinfo shows it.
#[derive(Clone, Debug, Default)]
pub struct Prog {
    pub id: u32,
    /// Cumulative ns spent in the program (counted only while `bpf_stats_enabled` is 1).
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub verified_insns: Option<u64>,
    /// The tracepoints it is attached to through a bpf_link held by the same process.
    pub tracepoints: Vec<String>,
}

impl Prog {
    pub fn attached_to(&self, tp: &str) -> bool {
        self.tracepoints.iter().any(|t| t == tp)
    }
}

fn fdinfo(pid: u32, fd: &Path) -> Option<BTreeMap<String, String>> {
    let name = fd.file_name()?;
    let text = fs::read_to_string(PathBuf::from(format!("/proc/{pid}/fdinfo")).join(name)).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// The BPF programs process `pid` holds, by id, with their run statistics and the tracepoints
/// its bpf_links attach them to. No bpftool needed: `/proc/PID/fdinfo` has it all.
pub fn progs_of(pid: u32) -> Result<BTreeMap<u32, Prog>> {
    let dir = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))?;
    let mut progs: BTreeMap<u32, Prog> = BTreeMap::new();
    let mut links: Vec<(u32, String)> = Vec::new();
    for entry in entries.flatten() {
        let fd = entry.path();
        let Ok(target) = fs::read_link(&fd) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let num = |info: &BTreeMap<String, String>, k: &str| -> Option<u64> {
            info.get(k).and_then(|v| v.parse().ok())
        };
        if target == "anon_inode:bpf-prog" {
            let Some(info) = fdinfo(pid, &fd) else {
                continue;
            };
            let Some(id) = num(&info, "prog_id") else {
                continue;
            };
            progs.insert(
                id as u32,
                Prog {
                    id: id as u32,
                    run_time_ns: num(&info, "run_time_ns").unwrap_or(0),
                    run_cnt: num(&info, "run_cnt").unwrap_or(0),
                    verified_insns: num(&info, "verified_insns"),
                    tracepoints: Vec::new(),
                },
            );
        } else if target == "anon_inode:bpf_link" {
            let Some(info) = fdinfo(pid, &fd) else {
                continue;
            };
            if let (Some(id), Some(tp)) = (num(&info, "prog_id"), info.get("tp_name")) {
                links.push((id as u32, tp.clone()));
            }
        }
    }
    for (id, tp) in links {
        if let Some(p) = progs.get_mut(&id) {
            p.tracepoints.push(tp);
        }
    }
    Ok(progs)
}

/// The BPF maps process `pid` holds: map id by fd.
pub fn map_ids_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = entries
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-map"))
        .filter_map(|e| fdinfo(pid, &e.path()))
        .filter_map(|info| info.get("map_id").and_then(|v| v.parse().ok()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write into the set we own; the syscall
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
