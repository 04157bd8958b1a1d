//! What the core asks of the host, as one small interface: process facts (`/proc`), file
//! identities and modification times, the cgroup tree, directory listings and the clock.
//!
//! The engine, the process table and the name caches (cgroups, Kubernetes) do no I/O of their
//! own: they ask a [`Host`]. The daemon gives them the real host (`sense::proc_host`), which reads
//! `/proc`, the cgroup2 filesystem and the kernel's clocks; the unit tests give them a fake whose time,
//! processes and files they set by hand (see `engine`'s tests), so that expiry, stale
//! credentials, rotation by inode and caches that age are tested without waiting or root.

use std::{
    collections::HashMap,
    path::Path,
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
            self.ask("now");
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
