//! The event envelope: every record in the ring buffer starts with an [`EventHeader`] whose
//! `kind` says which payload struct the whole record is.

/// Bytes of the path argument (as the process spelled it) the kernel copies for a matched open.
/// Longer arguments are truncated and flagged: the decision never rests on this string, which
/// only says how the process asked.
pub const PATH_CAP: usize = 256;
/// Bytes of a file's real path, as components walked up its dentries, the kernel copies. A path
/// whose components do not fit is flagged (not [`NAMES_COMPLETE`]).
pub const NAMES_CAP: usize = 512;
/// Components the kernel walks up at most when it builds a real path.
pub const NAMES_DEPTH: usize = 32;
/// Bytes of NUL-separated arguments an exec event carries at most.
pub const ARGS_CAP: usize = 512;
/// Arguments read per exec at most.
pub const MAX_ARGS: usize = 24;
/// Size of `comm`, as in the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// Bytes of the `EVENTS` ring buffer, unless the daemon is given `--ringbuf-size`: at most
/// this many bytes of records wait for the daemon to read them.
pub const EVENTS_RING_BYTES: u32 = 8 * 1024 * 1024;

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
    // 6 was `Chdir` (cwd tracking for string paths): retired, the kernel now sends real paths.
    /// The first bytes a holder's TCP connection sent: [`RequestEvent`].
    Request = 7,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Open,
            2 => Self::Exec,
            3 => Self::Fork,
            4 => Self::Exit,
            5 => Self::Connect,
            7 => Self::Request,
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
    // 5 and 6 were `chdir`/`fchdir`: retired.
    /// An io_uring `IORING_OP_OPENAT`/`OPENAT2` request.
    IoUring = 7,
    OpenByHandleAt = 8,
}

impl OpenOp {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Openat,
            2 => Self::Openat2,
            3 => Self::Open,
            4 => Self::Creat,
            7 => Self::IoUring,
            8 => Self::OpenByHandleAt,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Openat => "openat",
            Self::Openat2 => "openat2",
            Self::Open => "open",
            Self::Creat => "creat",
            Self::IoUring => "io_uring_openat",
            Self::OpenByHandleAt => "open_by_handle_at",
        }
    }
}

crate::pod_struct! {
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
/// `EventHeader::flags` bit of a `ConnectEvent`: not a connection being made, but one the
/// process already had open (a socket in its file table, made earlier or inherited) when it
/// opened a credential file; sent right after that open's record.
pub const HDR_EXISTING: u32 = 4;
/// Connections already open that are sent for one credential open at most; more are counted
/// as [`LossCause::ScanCut`].
pub const EXISTING_SOCKETS_MAX: u32 = 32;
/// Descriptors of the opener's file table searched for connections already open, at most (a
/// larger table's rest is counted as [`LossCause::ScanCut`]).
pub const EXISTING_FDS_SCANNED: u64 = 1024;

/// `OpenEvent::flags` bit: the path argument did not fit in [`PATH_CAP`] bytes.
pub const PATH_TRUNCATED: u32 = 1;
/// `OpenEvent::flags` bit: the caller's standard output is a pipe (FIFO) whose read end its parent
/// holds open (command substitution, `<(...)`: the parent reads what it writes), or the parent's
/// file table is larger than [`PARENT_FDS_SCANNED`] slots and the pipe was not among those, so it
/// cannot be ruled out (then [`PARENT_SCAN_CUT`] is set too).
pub const FEEDS_PARENT: u32 = 2;
/// How many of the parent's fds the kernel compares with the caller's stdout, at most: every
/// slot of a file table up to this size (a process's table grows only when it uses a higher fd).
pub const PARENT_FDS_SCANNED: u64 = 1024;
/// `OpenEvent::flags` bit: the parent's file table has more than [`PARENT_FDS_SCANNED`] slots
/// and the rest were not compared; [`FEEDS_PARENT`] is set because the parent may hold the pipe.
pub const PARENT_SCAN_CUT: u32 = 256;
/// `OpenEvent::flags` bit: the opened file's inode number is a watched one (a registered file).
pub const MATCH_INODE: u32 = 4;
/// `OpenEvent::flags` bit: the opened file's name (or its parent's, or a directory above it)
/// is a watched key.
pub const MATCH_NAME: u32 = 8;
/// `OpenEvent::flags`/`ExecEvent::flags` bit: `names` reached the root of the process's file
/// system view, so it is the whole real path.
pub const NAMES_COMPLETE: u32 = 16;
/// `OpenEvent::flags` bit: `names` is not the opened file but the directory a relative path
/// argument starts from (a failed open has no file: its cwd or dirfd is walked instead).
pub const NAMES_ARE_BASE: u32 = 32;
/// `OpenEvent::flags` bit: the path argument could not be read from the process's memory.
pub const PATH_UNREAD: u32 = 64;
/// `OpenEvent::flags` bit: the caller's standard output (`stdout_ino`) is a pipe.
pub const STDOUT_PIPE: u32 = 128;

crate::pod_struct! {
    /// An open and its result, sent from the syscall's exit once the kernel has decided, from the
    /// file it actually opened, that the open is watched.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct OpenEvent {
        pub hdr: EventHeader,
        /// An [`OpenOp`] as u32.
        pub op: u32,
        /// Directory fd the path argument is relative to (`AT_FDCWD` = -100 for the cwd).
        pub dfd: i32,
        /// `open(2)` flags (`O_*`), or 0 where the syscall has none.
        pub open_flags: u32,
        /// `PATH_TRUNCATED`, `MATCH_*`, `NAMES_*`, ...
        pub flags: u32,
        /// Syscall result: an fd on success, `-errno` on failure.
        pub ret: i64,
        /// Bytes of `path` in use, without the NUL.
        pub path_len: u32,
        /// Bytes of `names` in use.
        pub names_len: u32,
        /// Inode number of the caller's standard output (fd 1) at the open: a pipe's inode tells
        /// whose process reads what the caller writes. 0 when unknown.
        pub stdout_ino: u64,
        /// Inode number and device of the file opened (when the open succeeded), 0 when unknown.
        pub ino: u64,
        pub dev: u32,
        pub _pad2: u32,
        /// The path argument as the process passed it.
        pub path: [u8; PATH_CAP],
        /// The real path, as the kernel reached the file: NUL-terminated components from the file up
        /// (`token\0app\0srv\0` is `/srv/app/token`), across mounts, up to the process's root.
        /// Twice [`NAMES_CAP`] so that a component copied at any offset below `NAMES_CAP` fits.
        pub names: [u8; 2 * NAMES_CAP],
    }
}

crate::pod_struct! {
    /// A new image: the file the kernel executed, the name it was asked for and the arguments.
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
        /// Bytes of `exe_names` in use.
        pub exe_names_len: u32,
        /// Inode number and device of the executed file (for a script, its interpreter).
        pub exe_ino: u64,
        pub exe_dev: u32,
        /// Bytes of `cwd_names` in use (only for a script named by a relative path).
        pub cwd_names_len: u32,
        /// Inode number of the new image's standard input when it is the read end of a pipe, else
        /// 0: a pipe some process reads as its stdin is a pipeline's, not a `$(...)`.
        pub stdin_pipe: u64,
        /// The name the exec was asked for (`bprm->filename`: for a script, the script).
        pub filename: [u8; PATH_CAP],
        /// Twice `ARGS_CAP` so that an argument read at any offset below `ARGS_CAP` fits: this is
        /// what lets the verifier accept the copy loop.
        pub args: [u8; 2 * ARGS_CAP],
        /// The executed file's real path, as in `OpenEvent::names`.
        pub exe_names: [u8; 2 * NAMES_CAP],
        /// The working directory, as in `OpenEvent::names`, when a script's name is relative.
        pub cwd_names: [u8; 2 * NAMES_CAP],
    }
}

/// `ExecEvent::flags` bit: not every argument fitted.
pub const ARGS_TRUNCATED: u32 = 1;
/// `ExecEvent::flags` bit: no `execve` entry was seen for this exec (e.g. `execveat`).
pub const ARGS_MISSING: u32 = 2;
/// `ExecEvent::flags` bit: the kernel ran an interpreter for `filename` (`#!`, binfmt_misc):
/// `filename` is the script and `exe_names` its interpreter.
pub const EXEC_SCRIPT: u32 = 4;
/// `ExecEvent::flags` bit: `exe_names` is the whole real path (see [`NAMES_COMPLETE`]).
pub const EXE_NAMES_COMPLETE: u32 = 8;
/// `ExecEvent::flags` bit: `cwd_names` is the whole real path of the working directory.
pub const CWD_NAMES_COMPLETE: u32 = 16;

crate::pod_struct! {
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
}

crate::pod_struct! {
    /// The end of a thread group (`sched_process_exit` with `group_dead`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ExitEvent {
        pub hdr: EventHeader,
    }
}

/// Address family values as in `<sys/socket.h>`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

crate::pod_struct! {
    /// An outbound connection: a TCP connection attempt (SYN sent), or a UDP destination (a
    /// `connect` on a UDP socket, or a datagram sent to an address: once per process and
    /// destination per [`UDP_INTERVAL_NS`]).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ConnectEvent {
        pub hdr: EventHeader,
        /// `AF_INET` or `AF_INET6`.
        pub family: u16,
        /// Host byte order (0 for UDP: not chosen yet when the kernel sees the destination).
        pub sport: u16,
        /// Host byte order.
        pub dport: u16,
        /// `IPPROTO_TCP` or `IPPROTO_UDP`.
        pub proto: u16,
        /// IPv4 in the first 4 bytes, or IPv6.
        pub saddr: [u8; 16],
        pub daddr: [u8; 16],
        /// Inode number of the caller's standard input when it is the read end of a pipe, else 0:
        /// what a holder writes into that pipe reaches this process (`cat token | curl -d @- ...`).
        pub stdin_pipe: u64,
        /// The socket's network namespace, as its cookie (`net.net_cookie`, what
        /// `bpf_get_netns_cookie` gives; 0 when it could not be read): the names DNS gave for
        /// `daddr` are those answered in this namespace.
        pub netns: u64,
    }
}

pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
/// A process's datagrams to one destination are reported once per this interval.
pub const UDP_INTERVAL_NS: u64 = 10_000_000_000;

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
    /// Retired with chdir records; the slot stays so that numbers are never reused.
    RingbufChdir = 5,
    /// A map carrying part of a record between two hooks was full: an `execve`'s arguments (the
    /// exec is sent without them), or an io_uring open's name (the open is judged by its file,
    /// without `path_arg`).
    PendingFull = 6,
    /// A watched open whose path argument could not be read from the process's memory (it is
    /// sent without it); or a failed open whose name could not be read to be tested.
    UserCopy = 7,
    /// Failed opens of a watched name beyond [`FAILED_OPENS_PER_SEC`] per user and name in a
    /// second (a flood of them costs the flooder, not the monitor).
    FailedOpenLimit = 8,
    /// The ring buffer was full when a connection's first bytes were to be sent.
    RingbufRequest = 9,
    /// The in-kernel set of holder processes ([`HOLDERS_MAX`] by default) was full when the
    /// kernel would have added one: every process's connections are marked until it has room
    /// again (`config::HOLDERS_FULL`).
    HolderSetFull = 10,
    /// A process opening a credential had more open connections than
    /// [`EXISTING_SOCKETS_MAX`], or a file table larger than [`EXISTING_FDS_SCANNED`]: the rest
    /// of its connections already open were not looked at.
    ScanCut = 11,
    /// The DNS ring buffer (`DNS_EVENTS`, apart from the events' so that a flood of DNS
    /// packets costs no other record) was full when a DNS packet was to be sent.
    RingbufDns = 12,
}

/// Number of `LossCause` slots.
pub const LOSS_CAUSES: u32 = 13;
/// Failed opens of one watched name by one user reported per second at most.
pub const FAILED_OPENS_PER_SEC: u64 = 20;

impl LossCause {
    pub const ALL: [LossCause; LOSS_CAUSES as usize] = [
        Self::RingbufOpen,
        Self::RingbufExec,
        Self::RingbufFork,
        Self::RingbufExit,
        Self::RingbufConnect,
        Self::RingbufChdir,
        Self::PendingFull,
        Self::UserCopy,
        Self::FailedOpenLimit,
        Self::RingbufRequest,
        Self::HolderSetFull,
        Self::ScanCut,
        Self::RingbufDns,
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
            Self::UserCopy => "user_memory_unreadable",
            Self::FailedOpenLimit => "failed_open_rate_limited",
            Self::RingbufRequest => "ringbuf_full_request",
            Self::HolderSetFull => "holder_set_full",
            Self::ScanCut => "existing_connections_cut",
            Self::RingbufDns => "ringbuf_full_dns",
        }
    }

    /// Whether the record was lost because the ring buffer was full.
    pub fn ring_full(self) -> bool {
        matches!(
            self,
            Self::RingbufOpen
                | Self::RingbufExec
                | Self::RingbufFork
                | Self::RingbufExit
                | Self::RingbufConnect
                | Self::RingbufChdir
                | Self::RingbufRequest
        )
    }

    /// The kind of the record this loss would have been.
    pub fn kind(self) -> &'static str {
        match self {
            Self::RingbufOpen | Self::UserCopy | Self::FailedOpenLimit => "open",
            Self::RingbufExec => "exec",
            Self::PendingFull => "partial",
            Self::RingbufFork => "fork",
            Self::RingbufExit => "exit",
            Self::RingbufConnect | Self::ScanCut => "connect",
            Self::RingbufChdir => "chdir",
            Self::RingbufRequest | Self::HolderSetFull => "request",
            Self::RingbufDns => "dns",
        }
    }
}

/// Indexes into the `CONFIG` array map.
pub mod config {
    /// Process id of the daemon itself: its own opens are not reported.
    pub const SELF_PID: u32 = 0;
    /// `FLAG_*` bits.
    pub const FLAGS: u32 = 1;
    /// The filter's hash key, chosen at random by the daemon at start (see `filter`).
    pub const HASH_KEY: u32 = 2;
    /// Not 0 while the holder set (`HOLDERS`) is full: written 1 by the kernel (or the daemon)
    /// when a holder could not be added, 0 by the daemon once the set has room again. Meanwhile
    /// every process's TCP connections are marked, so that no holder's goes unread: a holder
    /// that fills the set with children cannot hide another holder's connections.
    pub const HOLDERS_FULL: u32 = 3;
    /// The host's network namespace (its cookie, as the daemon, which runs there, reads it):
    /// a socket there needs no check of who uses it (`probes::netns::as_used`).
    pub const HOST_NETNS: u32 = 4;
    /// Some pattern needs the parent directory's name checked for every open (see `filter`).
    pub const FLAG_PARENT_SCAN: u64 = 1;
    /// Report every open, unfiltered (for debugging the filter; costly).
    pub const FLAG_ALL_OPENS: u64 = 2;
    /// Some pattern needs the opened file's ancestor directories checked (see `filter`).
    pub const FLAG_ANCESTOR_SCAN: u64 = 4;
    /// Mark every process's TCP connections for their first bytes, not only holders'.
    pub const FLAG_ALL_CONNECTIONS: u64 = 8;

    /// Kernel struct members the programs follow: their byte offsets plus one (0: unknown),
    /// from the running kernel's BTF, are the programs' read-only global `OFFSETS`, in this
    /// order.
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Offset {
        TaskFiles = 0,
        FilesFdt,
        FdtFd,
        FileInode,
        InodeIno,
        InodeSb,
        SbDev,
        TaskParent,
        InodeMode,
        TaskSignal,
        SignalTty,
        FileMode,
        /// `file.f_path`
        FilePath,
        /// `path.mnt`, `path.dentry`
        PathMnt,
        PathDentry,
        DentryParent,
        /// `dentry.d_name` and, inside it, `qstr.name`
        DentryName,
        QstrName,
        DentryInode,
        VfsmountRoot,
        /// `mount.mnt` (the embedded vfsmount), `mount.mnt_parent`, `mount.mnt_mountpoint`
        MountMnt,
        MountParent,
        MountMountpoint,
        TaskFs,
        FsRoot,
        FsPwd,
        TaskMm,
        MmExeFile,
        BprmFilename,
        BprmInterp,
        /// `pt_regs.di`, `.si`, `.dx`: a syscall's first three arguments at its exit.
        RegsDi,
        RegsSi,
        RegsDx,
        /// `io_open.dfd`, `.file_slot`, `.filename` (an io_uring open request's command area)
        IoOpenDfd,
        IoOpenFileSlot,
        IoOpenFilename,
        /// `filename.name`
        FilenameName,
        /// `task_struct.pid`, `.tgid`: a new task is a thread when they differ.
        TaskPid,
        TaskTgid,
        /// `io_kiocb.opcode`: what an io_uring request does.
        KiocbOpcode,
        /// `dentry.d_shortname` (`d_iname` before 6.14): where a short name is kept inline.
        DentryShortname,
        /// `fdtable.max_fds`: how many slots the file array has.
        FdtMaxFds,
        /// `file.private_data` (a socket file's `struct socket *`), `socket.sk`.
        FilePrivateData,
        SocketSk,
        /// `sock_common`: `skc_family`, `skc_state`, `skc_daddr`, `skc_rcv_saddr`, `skc_dport`
        /// (network order), `skc_num` (the local port, host order), `skc_v6_daddr`,
        /// `skc_v6_rcv_saddr`; `sock.sk_protocol`.
        SkcFamily,
        SkcState,
        SkcDaddr,
        SkcRcvSaddr,
        SkcDport,
        SkcNum,
        SkcV6Daddr,
        SkcV6RcvSaddr,
        SkProtocol,
        /// `task_struct.group_leader`, `.start_time`: a process's identity over time (a pid is
        /// reused, a pid with its leader's start time is not).
        TaskGroupLeader,
        TaskStartTime,
        /// `sock_common.skc_net` (a `possible_net_t`, whose only member is the `struct net *`),
        /// `net.net_cookie`: the network namespace a socket is in.
        SkcNet,
        NetCookie,
        /// `task_struct.nsproxy`, `nsproxy.net_ns`, `net.user_ns`, `user_namespace.level`:
        /// whether the host's user namespace (level 0) owns a task's network namespace.
        TaskNsproxy,
        NsproxyNetNs,
        NetUserNs,
        UserNsLevel,
    }
    /// Number of `Offset`s.
    pub const OFFSETS: u32 = 61;
    /// Slots of the programs' `OFFSETS` global: a power of two above `OFFSETS`, so that an
    /// index can be bounded with a mask.
    pub const OFFSET_SLOTS: usize = 64;
    /// Slots of the `CONFIG` array map.
    pub const LEN: u32 = 8;
}

/// Bytes of a DNS packet (from its IP header) the kernel copies at most: a UDP DNS message is
/// 512 bytes, or up to the 1232 EDNS advises, rarely more.
pub const DNS_CAP: usize = 2048;
/// `DnsRecord::flags`: the host sent the packet (a query), else it received it (an answer).
pub const DNS_OUTGOING: u32 = 1;
/// `DnsRecord::flags`, on a query: its socket's network namespace is not one the host's user
/// namespace owns (`unshare -rn`, a rootless container: any user can make one, and answer
/// itself there), or not the sending task's own, so it could not be checked. Its answer is not
/// believed.
pub const DNS_UNTRUSTED_NS: u32 = 2;

crate::pod_struct! {
    /// A UDP datagram to (sent) or from (received) port 53, from its IP header, as a local
    /// socket sent or received it (cgroup `skb` programs): on a ring buffer of its own.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DnsRecord {
        /// Bytes of `data` in use.
        pub len: u32,
        /// `DNS_*` bits.
        pub flags: u32,
        /// The network namespace of the socket that sent or received it (its cookie,
        /// `bpf_get_netns_cookie`): an answer names addresses in that namespace only.
        pub netns: u64,
        /// The interface it left by (sent) or came in by (received): an answer must come in
        /// by the one its query left by, not from a container's or a bridge's.
        pub ifindex: u32,
        pub _pad: u32,
        pub data: [u8; DNS_CAP],
    }
}

/// Bytes of a connection's first payload the kernel copies at most, over all its packets (and
/// so in one record at most): a whole TLS ClientHello (a post-quantum key share makes one of
/// 1.5-1.8 KiB), an HTTP/1.x request line and header block.
pub const WIRE_CAP: usize = 2048;
/// Packets with a payload the kernel copies from at most per connection: the first bytes may be
/// sent in pieces (a decoy of a few bytes, then the rest), and the daemon joins them up.
pub const WIRE_CHUNKS: u32 = 8;
/// `RequestEvent::flags`: the kernel copies nothing more of this connection (its byte or
/// packet budget is spent, or the bytes end a request head).
pub const WIRE_LAST: u16 = 1;
/// `RequestEvent::flags`: the packet's TCP segment could not be found (IPv6 extension headers
/// beyond those walked, a fragment): nothing was copied and nothing more will be.
pub const WIRE_UNREADABLE: u16 = 2;
/// Processes the in-kernel holder set (`HOLDERS`) holds at most, unless the daemon sets
/// another size at load (`--holder-set-max`).
pub const HOLDERS_MAX: u32 = 16384;
/// `HOLDERS` value: the daemon added the process (the engine decided it holds an NHI).
pub const HOLDER_BY_DAEMON: u32 = 1;
/// `HOLDERS` value: the kernel added it (it opened a registered credential's inode, or its
/// parent was a member when it forked).
pub const HOLDER_BY_KERNEL: u32 = 2;

crate::pod_struct! {
    /// Some of the first bytes a marked TCP connection sent: one record per packet with a
    /// payload, up to `WIRE_CHUNKS` packets and `WIRE_CAP` bytes in all per connection. The
    /// daemon joins a connection's records by `cookie` and `seq`, parses the bytes (TLS
    /// ClientHello, HTTP/1.x request head) and keeps only the fields it names; the bytes
    /// themselves are never kept.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RequestEvent {
        /// The connecting process as the kernel saw it at `connect` (pid, uid, comm, cgroup);
        /// `ts_ns` is when the bytes left.
        pub hdr: EventHeader,
        /// `AF_INET` or `AF_INET6`.
        pub family: u16,
        /// Host byte order.
        pub sport: u16,
        pub dport: u16,
        /// `IPPROTO_TCP`.
        pub proto: u16,
        /// As in [`ConnectEvent`].
        pub saddr: [u8; 16],
        pub daddr: [u8; 16],
        /// Bytes of `data` in use.
        pub len: u32,
        /// Bytes of TCP payload the packet carried (more than `len` when it was cut).
        pub payload_len: u32,
        /// The TCP sequence number of the payload's first byte: where `data` goes among the
        /// connection's first bytes (a retransmitted segment comes again with the same one).
        pub seq: u32,
        /// This record's place among the connection's (0 for its first packet with a payload).
        pub chunk: u16,
        /// `WIRE_*` bits.
        pub flags: u16,
        /// The socket's cookie (`bpf_get_socket_cookie`): the connection the records are of.
        pub cookie: u64,
        /// The socket's network namespace, as in [`ConnectEvent`].
        pub netns: u64,
        pub data: [u8; WIRE_CAP],
    }
}

impl RequestEvent {
    /// A record of connection `cookie` (IPv4 TCP from port 40000 to 443, a zero header and
    /// addresses, namespace 0) carrying the first `WIRE_CAP` bytes of `bytes` at sequence number
    /// `seq`, as its chunk `chunk`: what tests and fuzz targets feed the daemon's joiner.
    pub fn piece(cookie: u64, chunk: u16, seq: u32, bytes: &[u8], flags: u16) -> Self {
        let n = if bytes.len() < WIRE_CAP {
            bytes.len()
        } else {
            WIRE_CAP
        };
        let mut r = Self {
            hdr: EventHeader::zeroed(),
            family: AF_INET,
            sport: 40000,
            dport: 443,
            proto: IPPROTO_TCP,
            saddr: [0; 16],
            daddr: [0; 16],
            len: n as u32,
            payload_len: bytes.len() as u32,
            seq,
            chunk,
            flags,
            cookie,
            netns: 0,
            data: [0; WIRE_CAP],
        };
        r.data[..n].copy_from_slice(&bytes[..n]);
        r
    }
}
