//! What the core asks of the host, as one small interface: process facts (`/proc`), file
//! identities and modification times, the cgroup tree, directory listings and the clock.
//!
//! The engine, the process table and the name caches (cgroups, Kubernetes) do no I/O of their
//! own: they ask a [`Host`]. The daemon gives them [`ProcHost`], which reads `/proc`, the
//! cgroup2 filesystem and the kernel's clocks; the unit tests give them a fake whose time,
//! processes and files they set by hand (see `engine`'s tests), so that expiry, stale
//! credentials, rotation by inode and caches that age are tested without waiting or root.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime},
};

/// A file's identity: the device it is on and its inode number. A hard link, a bind mount or
/// another mount namespace's view of a file is the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
}

/// One process as `/proc/PID` shows it (its command line as read, before any redaction).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcFacts {
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    /// Where `/proc/PID/exe` points ("" when it cannot be read).
    pub exe: String,
    pub cmdline: Vec<String>,
}

/// What can change at exec or setsid: session and terminal (`/proc/PID/stat`) and the text of
/// `/proc/PID/cgroup`; `None` for what could not be read (the process is gone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFacts {
    /// Session id and whether the process has a controlling terminal.
    pub sid_tty: Option<(u32, bool)>,
    /// The text of `/proc/PID/cgroup`.
    pub cgroup: Option<String>,
}

/// The host as the core sees it. Every method answers from the host as it is now; a failed
/// read is an absent answer, never an error: the core goes on with what it knows.
pub trait Host {
    /// Monotonic time, for the ages of cached answers.
    fn now(&self) -> Instant;
    /// Wall-clock time minus the kernel's `CLOCK_BOOTTIME`, in ns: turns the kernel's stamps on
    /// records into wall-clock time.
    fn wall_offset_ns(&self) -> i128;
    /// The process ids the host has now.
    fn pids(&self) -> Vec<u32>;
    /// The thread group id of task `pid` (equal to `pid` for a process).
    fn tgid(&self, pid: u32) -> Option<u32>;
    /// Process `pid`, when it exists and is a thread group leader.
    fn process(&self, pid: u32) -> Option<ProcFacts>;
    /// Session, terminal and cgroup of process `pid`.
    fn session(&self, pid: u32) -> SessionFacts;
    /// The identity of the file at `path`, following symbolic links.
    fn file_id(&self, path: &str) -> Option<FileId>;
    /// The modification time of the file at `path`, following symbolic links.
    fn modified(&self, path: &Path) -> Option<SystemTime>;
    /// Every cgroup of the cgroup2 tree: its id (the inode of its directory) and its path
    /// (`/system.slice/x.service`). Empty on a host without cgroup2.
    fn cgroups(&self) -> HashMap<u64, Arc<str>>;
    /// The names in directory `dir`, at most `max` (none when it cannot be read).
    fn list_dir(&self, dir: &Path, max: usize) -> Vec<String>;
}

/// A borrowed host is a host (the tests keep their fake to change it between records).
impl<H: Host + ?Sized> Host for &H {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn wall_offset_ns(&self) -> i128 {
        (**self).wall_offset_ns()
    }
    fn pids(&self) -> Vec<u32> {
        (**self).pids()
    }
    fn tgid(&self, pid: u32) -> Option<u32> {
        (**self).tgid(pid)
    }
    fn process(&self, pid: u32) -> Option<ProcFacts> {
        (**self).process(pid)
    }
    fn session(&self, pid: u32) -> SessionFacts {
        (**self).session(pid)
    }
    fn file_id(&self, path: &str) -> Option<FileId> {
        (**self).file_id(path)
    }
    fn modified(&self, path: &Path) -> Option<SystemTime> {
        (**self).modified(path)
    }
    fn cgroups(&self) -> HashMap<u64, Arc<str>> {
        (**self).cgroups()
    }
    fn list_dir(&self, dir: &Path, max: usize) -> Vec<String> {
        (**self).list_dir(dir, max)
    }
}

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
                .and_then(|s| crate::proctable::parse_stat(&s)),
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

/// A host made by hand, for the core's unit tests: its clock moves only when told, and its
/// processes, files and cgroups are what the test puts there.
#[cfg(test)]
pub mod fake {
    use std::{
        cell::{Cell, RefCell},
        collections::HashMap,
        path::{Path, PathBuf},
        sync::Arc,
        time::{Duration, Instant, SystemTime},
    };

    use super::{FileId, Host, ProcFacts, SessionFacts};

    /// One file of the fake host.
    #[derive(Clone, Copy, Debug)]
    pub struct FakeFile {
        pub id: FileId,
        pub modified: SystemTime,
    }

    #[derive(Debug)]
    pub struct FakeHost {
        start: Instant,
        elapsed: Cell<Duration>,
        pub wall_offset_ns: i128,
        pub procs: RefCell<HashMap<u32, ProcFacts>>,
        pub sessions: RefCell<HashMap<u32, SessionFacts>>,
        pub files: RefCell<HashMap<PathBuf, FakeFile>>,
        pub cgroups: RefCell<HashMap<u64, Arc<str>>>,
        pub dirs: RefCell<HashMap<PathBuf, Vec<String>>>,
        /// How many times each kind of question was asked (`"file_id"`, `"modified"`, ...).
        pub asked: RefCell<HashMap<&'static str, usize>>,
    }

    impl Default for FakeHost {
        fn default() -> Self {
            Self {
                start: Instant::now(),
                elapsed: Cell::new(Duration::ZERO),
                wall_offset_ns: 0,
                procs: RefCell::default(),
                sessions: RefCell::default(),
                files: RefCell::default(),
                cgroups: RefCell::default(),
                dirs: RefCell::default(),
                asked: RefCell::default(),
            }
        }
    }

    impl FakeHost {
        /// Moves the monotonic clock on.
        pub fn advance(&self, d: Duration) {
            self.elapsed.set(self.elapsed.get() + d);
        }

        /// Puts a file at `path` (replacing what was there, as a rename does).
        pub fn put_file(&self, path: &str, ino: u64, modified: SystemTime) {
            self.files.borrow_mut().insert(
                PathBuf::from(path),
                FakeFile {
                    id: FileId {
                        major: 8,
                        minor: 1,
                        ino,
                    },
                    modified,
                },
            );
        }

        pub fn asked(&self, what: &str) -> usize {
            self.asked.borrow().get(what).copied().unwrap_or(0)
        }

        fn ask(&self, what: &'static str) {
            *self.asked.borrow_mut().entry(what).or_default() += 1;
        }
    }

    impl Host for FakeHost {
        fn now(&self) -> Instant {
            self.start + self.elapsed.get()
        }

        fn wall_offset_ns(&self) -> i128 {
            self.wall_offset_ns
        }

        fn pids(&self) -> Vec<u32> {
            self.procs.borrow().keys().copied().collect()
        }

        fn tgid(&self, pid: u32) -> Option<u32> {
            self.procs.borrow().contains_key(&pid).then_some(pid)
        }

        fn process(&self, pid: u32) -> Option<ProcFacts> {
            self.ask("process");
            self.procs.borrow().get(&pid).cloned()
        }

        fn session(&self, pid: u32) -> SessionFacts {
            self.ask("session");
            self.sessions
                .borrow()
                .get(&pid)
                .cloned()
                .unwrap_or_default()
        }

        fn file_id(&self, path: &str) -> Option<FileId> {
            self.ask("file_id");
            self.files.borrow().get(Path::new(path)).map(|f| f.id)
        }

        fn modified(&self, path: &Path) -> Option<SystemTime> {
            self.ask("modified");
            self.files.borrow().get(path).map(|f| f.modified)
        }

        fn cgroups(&self) -> HashMap<u64, Arc<str>> {
            self.ask("cgroups");
            self.cgroups.borrow().clone()
        }

        fn list_dir(&self, dir: &Path, max: usize) -> Vec<String> {
            self.ask("list_dir");
            let mut v = self.dirs.borrow().get(dir).cloned().unwrap_or_default();
            v.truncate(max);
            v
        }
    }
}
