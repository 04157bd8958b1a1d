//! The real host behind the core's [`Host`] interface: processes from `/proc`, file identities
//! and modification times from the file system, the cgroup tree from the cgroup2 mount, and
//! the kernel's clocks. The daemon gives it to the engine; the core's unit tests give a fake.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime},
};

use crate::domain::{
    engine::{Clock, Engine},
    host::{FileId, Host, ProcFacts, SessionFacts},
    registry::Registry,
};

/// Walks deeper than this are cut short (container runtimes nest a few levels).
const CGROUP_MAX_DEPTH: usize = 12;

/// The real host: `/proc` (or a directory laid out like it), the cgroup2 filesystem and the
/// kernel's clocks.
#[derive(Clone, Debug)]
pub struct ProcHost {
    proc_root: PathBuf,
    /// Where cgroup2 is mounted, when it is.
    cgroup_root: Option<PathBuf>,
}

impl ProcHost {
    /// Processes from `proc_root` (`/proc`; a fixture directory in tests), cgroups from the
    /// cgroup2 mount named in `/proc/mounts` (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
    /// a hybrid host).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        let cgroup_root = std::fs::read_to_string("/proc/mounts")
            .ok()
            .and_then(|m| cgroup2_mount(&m));
        Self {
            proc_root: proc_root.into(),
            cgroup_root,
        }
    }

    /// Processes from `proc_root`, cgroups from the tree at `cgroup_root` (tests).
    pub fn with_cgroup_root(proc_root: impl Into<PathBuf>, cgroup_root: Option<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            cgroup_root,
        }
    }

    fn dir(&self, pid: u32) -> PathBuf {
        self.proc_root.join(pid.to_string())
    }

    fn status(&self, pid: u32) -> Option<String> {
        std::fs::read_to_string(self.dir(pid).join("status")).ok()
    }
}

/// The cgroup2 mount point in a `/proc/mounts` text.
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

impl Host for ProcHost {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_offset_ns(&self) -> i128 {
        clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME)
    }

    fn pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(&self.proc_root) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect()
    }

    fn tgid(&self, pid: u32) -> Option<u32> {
        status_field(&self.status(pid)?, "Tgid:")
    }

    fn process(&self, pid: u32) -> Option<ProcFacts> {
        let dir = self.dir(pid);
        let status = self.status(pid)?;
        if status_field(&status, "Tgid:")? != pid {
            return None;
        }
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Some(ProcFacts {
            ppid: status_field(&status, "PPid:").unwrap_or(0),
            uid: status_field(&status, "Uid:").unwrap_or(0),
            comm: std::fs::read_to_string(dir.join("comm"))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default(),
            exe: std::fs::read_link(dir.join("exe"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cmdline,
        })
    }

    fn session(&self, pid: u32) -> SessionFacts {
        let dir = self.dir(pid);
        SessionFacts {
            sid_tty: std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|s| crate::domain::proctable::parse_stat(&s)),
            cgroup: std::fs::read_to_string(dir.join("cgroup")).ok(),
        }
    }

    fn file_id(&self, path: &str) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        let dev = m.dev();
        Some(FileId {
            major: libc::major(dev),
            minor: libc::minor(dev),
            ino: m.ino(),
        })
    }

    fn modified(&self, path: &Path) -> Option<SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn cgroups(&self) -> HashMap<u64, Arc<str>> {
        let mut out = HashMap::new();
        if let Some(root) = &self.cgroup_root {
            walk(root, root, 0, &mut out);
        }
        out
    }

    fn list_dir(&self, dir: &Path, max: usize) -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .take(max)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
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

fn status_field(status: &str, key: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut HashMap<u64, Arc<str>>) {
    if let Ok(m) = std::fs::metadata(dir) {
        let rel = dir
            .strip_prefix(root)
            .map(|r| format!("/{}", r.display()))
            .unwrap_or_default();
        out.insert(m.ino(), Arc::from(rel.as_str()));
    }
    if depth >= CGROUP_MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &e.path(), depth + 1, out);
        }
    }
}

impl Clock {
    /// Measure the offset now, on this host.
    pub fn now() -> Self {
        Self::of(&ProcHost::with_cgroup_root("/proc", None))
    }
}

impl Engine<ProcHost> {
    /// An engine over this host, its processes read from `proc_root` (`/proc`; an empty
    /// directory in tests and benchmarks, so that no made-up pid is taken for a real process).
    pub fn new(
        registry: Arc<Registry>,
        proc_root: impl Into<PathBuf>,
        clock: Clock,
        host: String,
    ) -> Self {
        Self::with_host(registry, ProcHost::new(proc_root), clock, host)
    }
}
