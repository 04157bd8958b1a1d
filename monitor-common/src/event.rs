//! The event envelope: every record in the ring buffer starts with an [`EventHeader`] whose
//! `kind` says which payload struct the whole record is.

/// Longest path the kernel copies. Longer paths are truncated and flagged.
pub const PATH_CAP: usize = 256;
/// Bytes of NUL-separated arguments an exec event carries at most.
pub const ARGS_CAP: usize = 512;
/// Arguments read per exec at most.
pub const MAX_ARGS: usize = 24;
/// Size of `comm`, as in the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// Kinds of kernel records. The numbers are stable: never reuse one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An open of a path that passed the in-kernel prefilter, with its result: [`OpenEvent`].
    Open = 1,
    /// A process replaced its image: [`ExecEvent`].
    Exec = 2,
    /// A task was created: [`ForkEvent`].
    Fork = 3,
    /// A whole thread group ended: [`ExitEvent`].
    Exit = 4,
    /// An outbound TCP connection attempt (SYN sent): [`ConnectEvent`].
    Connect = 5,
    /// A successful `chdir`/`fchdir`, so relative paths resolve after the process is gone:
    /// [`OpenEvent`] with `op` set to [`OpenOp::Chdir`] or [`OpenOp::Fchdir`].
    Chdir = 6,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Open,
            2 => Self::Exec,
            3 => Self::Fork,
            4 => Self::Exit,
            5 => Self::Connect,
            6 => Self::Chdir,
            _ => return None,
        })
    }
}

/// The syscall behind an [`OpenEvent`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenOp {
    Openat = 1,
    Openat2 = 2,
    Open = 3,
    Creat = 4,
    Chdir = 5,
    Fchdir = 6,
}

impl OpenOp {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Openat,
            2 => Self::Openat2,
            3 => Self::Open,
            4 => Self::Creat,
            5 => Self::Chdir,
            6 => Self::Fchdir,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Openat => "openat",
            Self::Openat2 => "openat2",
            Self::Open => "open",
            Self::Creat => "creat",
            Self::Chdir => "chdir",
            Self::Fchdir => "fchdir",
        }
    }
}

/// Fixed first part of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    /// Thread group id (the process id users see).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `HDR_*` bits (set on opens and connects).
    pub flags: u32,
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`).
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

impl EventHeader {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            pid: 0,
            tid: 0,
            uid: 0,
            gid: 0,
            flags: 0,
            ts_ns: 0,
            cgroup_id: 0,
            comm: [0; COMM_LEN],
        }
    }
}

/// `EventHeader::flags` bit: the kernel looked at the task's controlling terminal.
pub const HDR_TTY_KNOWN: u32 = 1;
/// `EventHeader::flags` bit: the task has a controlling terminal (`current->signal->tty`).
pub const HDR_TTY: u32 = 2;

/// `OpenEvent::flags` bit: the path did not fit in [`PATH_CAP`] bytes.
pub const PATH_TRUNCATED: u32 = 1;
/// `OpenEvent::flags` bit: the caller's standard output is a pipe (FIFO) its parent holds open among
/// its first [`PARENT_FDS_SCANNED`] fds (command substitution: the parent reads what it writes).
pub const FEEDS_PARENT: u32 = 2;
/// How many of the parent's fds the kernel compares with the caller's stdout.
pub const PARENT_FDS_SCANNED: u64 = 16;

/// An open (or chdir) and its result. Kept in a pending map between syscall enter and exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenEvent {
    pub hdr: EventHeader,
    /// An [`OpenOp`] as u32.
    pub op: u32,
    /// Directory fd the path is relative to (`AT_FDCWD` = -100 for the cwd); for `fchdir`, the fd.
    pub dfd: i32,
    /// `open(2)` flags (`O_*`), or 0 where the syscall has none.
    pub open_flags: u32,
    /// `PATH_TRUNCATED`, ...
    pub flags: u32,
    /// Syscall result: an fd (or 0 for chdir) on success, `-errno` on failure.
    pub ret: i64,
    /// Bytes of `path` in use, without the NUL.
    pub path_len: u32,
    pub _pad: u32,
    /// Inode number of the caller's standard output (fd 1) at the open: a pipe's inode tells
    /// whose process reads what the caller writes. 0 when unknown.
    pub stdout_ino: u64,
    /// Inode number and device of the file opened (when the open succeeded), 0 when unknown.
    pub ino: u64,
    pub dev: u32,
    pub _pad2: u32,
    pub path: [u8; PATH_CAP],
}

/// A new image, with the path it was started from and its arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    /// The thread id before exec (differs from `hdr.tid` when a non-leader thread called exec).
    pub old_tid: u32,
    /// Bytes of `filename` in use.
    pub filename_len: u32,
    /// Bytes of `args` in use (NUL-separated, each argument NUL-terminated).
    pub args_len: u32,
    /// Number of arguments read; `ARGS_TRUNCATED` set in `flags` when there were more.
    pub argc: u32,
    pub flags: u32,
    pub _pad: u32,
    pub filename: [u8; PATH_CAP],
    /// Twice `ARGS_CAP` so that an argument read at any offset below `ARGS_CAP` fits: this is
    /// what lets the verifier accept the copy loop.
    pub args: [u8; 2 * ARGS_CAP],
}

/// `ExecEvent::flags` bit: not every argument fitted.
pub const ARGS_TRUNCATED: u32 = 1;
/// `ExecEvent::flags` bit: no `execve` entry was seen for this exec (e.g. `execveat`).
pub const ARGS_MISSING: u32 = 2;

/// Task creation. `hdr` describes the parent (the caller of fork/clone).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub hdr: EventHeader,
    /// Task id of the child. For a new thread this is not a process; see `monitor-user`'s process
    /// table for how that is told apart.
    pub child_tid: u32,
    pub _pad: u32,
}

/// The end of a thread group (`sched_process_exit` with `group_dead`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub hdr: EventHeader,
}

/// Address family values as in `<sys/socket.h>`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// An outbound TCP connection attempt.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    pub hdr: EventHeader,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    pub _pad: u16,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Why a record was lost in the kernel: the index of a per-CPU counter in the `LOSSES` map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossCause {
    /// The ring buffer was full when an open was to be sent.
    RingbufOpen = 0,
    RingbufExec = 1,
    RingbufFork = 2,
    RingbufExit = 3,
    RingbufConnect = 4,
    RingbufChdir = 5,
    /// The map pairing syscall enter with exit was full.
    PendingFull = 6,
}

/// Number of `LossCause` slots.
pub const LOSS_CAUSES: u32 = 7;

impl LossCause {
    pub const ALL: [LossCause; LOSS_CAUSES as usize] = [
        Self::RingbufOpen,
        Self::RingbufExec,
        Self::RingbufFork,
        Self::RingbufExit,
        Self::RingbufConnect,
        Self::RingbufChdir,
        Self::PendingFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RingbufOpen => "ringbuf_full_open",
            Self::RingbufExec => "ringbuf_full_exec",
            Self::RingbufFork => "ringbuf_full_fork",
            Self::RingbufExit => "ringbuf_full_exit",
            Self::RingbufConnect => "ringbuf_full_connect",
            Self::RingbufChdir => "ringbuf_full_chdir",
            Self::PendingFull => "pending_map_full",
        }
    }

    /// The kind of the record this loss would have been.
    pub fn kind(self) -> &'static str {
        match self {
            Self::RingbufOpen | Self::PendingFull => "open",
            Self::RingbufExec => "exec",
            Self::RingbufFork => "fork",
            Self::RingbufExit => "exit",
            Self::RingbufConnect => "connect",
            Self::RingbufChdir => "chdir",
        }
    }
}

/// Indexes into the `CONFIG` array map.
pub mod config {
    /// Process id of the daemon itself: its own opens are not reported.
    pub const SELF_PID: u32 = 0;
    /// `FLAG_*` bits.
    pub const FLAGS: u32 = 1;
    pub const LEN: u32 = 15;
    /// Some pattern needs the directory-prefix scan (see `filter`).
    pub const FLAG_PREFIX_SCAN: u64 = 1;
    /// Report every open, unfiltered (for debugging the filter; costly).
    pub const FLAG_ALL_OPENS: u64 = 2;
    /// Byte offsets plus one in kernel structs, from the running kernel's BTF (0: unknown), to follow
    /// `current->files->fdt->fd[n]->f_inode->{i_ino, i_sb->s_dev}`.
    pub const OFF_TASK_FILES: u32 = 2;
    pub const OFF_FILES_FDT: u32 = 3;
    pub const OFF_FDT_FD: u32 = 4;
    pub const OFF_FILE_INODE: u32 = 5;
    pub const OFF_INODE_INO: u32 = 6;
    pub const OFF_INODE_SB: u32 = 7;
    pub const OFF_SB_DEV: u32 = 8;
    pub const OFF_TASK_PARENT: u32 = 9;
    pub const OFF_INODE_MODE: u32 = 10;
    /// Opens parked in the pending map and not yet taken by their exit (kept by the programs):
    /// while it is 0, a syscall exit needs no hash lookup.
    pub const PENDING_COUNT: u32 = 11;
    pub const OFF_TASK_SIGNAL: u32 = 12;
    pub const OFF_SIGNAL_TTY: u32 = 13;
    /// `file->f_mode`: which end of a pipe a file is.
    pub const OFF_FILE_MODE: u32 = 14;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, contain no pointers, and every bit pattern is valid.
    unsafe impl aya::Pod for super::OpenEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecEvent {}
}
