//! The maps shared by the programs and the daemon. Names are the contract with
//! `monitor-user/src/sense/probes.rs`.

use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use monitor_common::{
    config, filter::FILTER_WORDS, EventHeader, ExecEvent, OpenEvent, ARGS_CAP, EVENTS_RING_BYTES,
    HOLDERS_MAX, LOSS_CAUSES, PATH_CAP,
};

/// Every record for userspace. The daemon may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// DNS packets (`monitor_common::DnsRecord`), apart from `EVENTS`: anyone can send DNS
/// packets, and a flood of them must cost no other record. 256 KiB, about 120 packets: the
/// daemon empties it every 50 ms (2,400 DNS packets a second before one is lost), and a
/// ring's pages count twice in the daemon's resident memory.
#[map]
pub static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// The prefilter bitmap (see `monitor_common::filter`), written by the daemon.
#[map]
pub static FILTER: Array<u64> = Array::with_max_entries(FILTER_WORDS, 0);

/// Settings written by the daemon, indexed by `monitor_common::config`.
#[map]
pub static CONFIG: Array<u64> = Array::with_max_entries(config::LEN, 0);

/// Per-CPU counters of records that could not be delivered, indexed by `LossCause`.
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_CAUSES, 0);

/// An `execve`'s arguments, read at its entry and kept until its `sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecArgs {
    pub args_len: u32,
    pub argc: u32,
    pub flags: u32,
    pub _pad: u32,
    /// As `ExecEvent::args`.
    pub args: [u8; 2 * ARGS_CAP],
}

/// Arguments read at `execve` entry, by thread id, until `sched_process_exec`. An entry whose
/// exec failed is overwritten by the thread's next `execve`; the map holds one per thread
/// between entry and exec, so 2048 threads exec'ing at the same instant fill it (counted).
#[map]
pub static PENDING_EXEC: HashMap<u32, ExecArgs> = HashMap::with_max_entries(2048, 0);

/// Scratch space: names and records are too big for the 512-byte BPF stack.
#[map]
pub static NAME_SCRATCH: PerCpuArray<[u8; PATH_CAP]> = PerCpuArray::with_max_entries(1, 0);

/// An io_uring open request between its submission and its completion.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UringOpen {
    pub dfd: i32,
    pub _reserved: u32,
    pub path_len: u32,
    pub _pad: u32,
    pub path: [u8; PATH_CAP],
}

/// The names of io_uring open requests in flight, by request address (the kernel frees a
/// request's name before it completes). Only io_uring opens pay for it. When it is full (requests
/// that never complete, such as opens of FIFOs nobody writes), later requests are still judged
/// by their files at completion, only without their names (counted: `LossCause::PendingFull`).
#[map]
pub static URING_OPENS: HashMap<u64, UringOpen> = HashMap::with_max_entries(1024, 0);

#[map]
pub static URING_SCRATCH: PerCpuArray<UringOpen> = PerCpuArray::with_max_entries(1, 0);

/// A process and a UDP destination.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpKey {
    pub pid: u32,
    pub dport: u16,
    pub family: u16,
    pub daddr: [u8; 16],
}

/// When each process last sent to each UDP destination (boot ns): datagrams are reported once
/// per destination per interval. LRU: a process spraying destinations evicts old entries (and
/// gets more events, each counted as usual), it cannot fill the map for others.
#[map]
pub static UDP_SEEN: LruHashMap<UdpKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// A user and a watched name (its filter hash) that failed to open.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FailedKey {
    pub uid: u32,
    pub _pad: u32,
    pub name: u64,
}

/// The current one-second window of a user's failed opens of a name.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FailedWindow {
    pub start: u64,
    pub count: u64,
}

/// Failed opens of watched names, per user and name, for the rate limit. LRU: a flood of
/// distinct names evicts old windows instead of filling the map.
#[map]
pub static FAILED_OPENS: LruHashMap<FailedKey, FailedWindow> =
    LruHashMap::with_max_entries(8192, 0);

/// A process (its tgid) and the pipe on its stdout (the pipe's inode number).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PipeKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Processes whose parent was found holding the read end of the pipe on their stdout, as
/// `OpenEvent::flags` bits (`probes::files::parent_holds_once`; "not held" is never kept).
/// LRU: an evicted entry only costs the walk again.
#[map]
pub static PARENT_PIPES: LruHashMap<PipeKey, u32> = LruHashMap::with_max_entries(8192, 0);

/// A process (its tgid) and a credential file (its inode number) it opened.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ScanKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// The processes whose open connections were looked for at their open of a credential file,
/// with the start time of the process (its group leader's), so that a reused pid is looked at
/// again: each process is searched once per credential file it opens, not at every open. LRU:
/// an evicted entry only costs one more search.
#[map]
pub static SCANNED: LruHashMap<ScanKey, u64> = LruHashMap::with_max_entries(8192, 0);

/// The programs an open's program hands over to (tail calls), by `SCAN_SOCKETS`: set by the
/// daemon after load.
#[map]
pub static TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// `TAIL`'s slot of `probes::sockets::scan_sockets`.
pub const SCAN_SOCKETS: u32 = 0;

/// `scan_sockets`'s working space, kept across the iterations of its loop: the record being
/// built, the file array walked, the records sent and whether the walk was cut short.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockScratch {
    pub ev: monitor_common::ConnectEvent,
    pub fds: u64,
    pub sent: u32,
    pub cut: u32,
}

#[map]
pub static SOCK_SCRATCH: PerCpuArray<SockScratch> = PerCpuArray::with_max_entries(1, 0);

/// One word to turn a pointer into a plain number (see `probes::files::syscall_arg`).
#[map]
pub static SCALAR: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static OPEN_SCRATCH: PerCpuArray<OpenEvent> = PerCpuArray::with_max_entries(1, 0);

/// The last successful watched open on this CPU whose side effects (the holder set, the walk of
/// the opener's connections) are done: the same thread opening the same file again next (a
/// service rereading its token in a loop) skips them.
#[map]
pub static LAST_OPEN: PerCpuArray<LastOpen> = PerCpuArray::with_max_entries(1, 0);

/// See `LAST_OPEN`: the thread (its pid and tgid, and its task's address, so that a reused pid
/// is another thread) and the file's inode number.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastOpen {
    pub pid_tgid: u64,
    pub task: u64,
    pub ino: u64,
}

#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecArgs> = PerCpuArray::with_max_entries(1, 0);

// `ExecEvent::args` and `ExecArgs::args` are copied one onto the other.
const _: () = assert!(core::mem::size_of::<ExecEvent>() > 2 * ARGS_CAP);

/// Count one lost record.
#[inline(always)]
pub fn count_loss(cause: monitor_common::LossCause) {
    if let Some(p) = LOSSES.get_ptr_mut(cause as u32) {
        // SAFETY: a per-CPU slot, written only by programs on this CPU, which do not nest for
        // these tracepoints.
        unsafe { *p += 1 };
    }
}

/// Submit flags for a record of `size` bytes that is already in the ring buffer (reserved):
/// see `wakeup_for`.
#[inline(always)]
pub fn wakeup<T>() -> u64 {
    let size = stored(core::mem::size_of::<T>() as u64);
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    wakeup_for(avail.saturating_sub(size), avail)
}

/// Submit flags for a record of `size` bytes about to be copied in (`bpf_ringbuf_output`).
#[inline(always)]
pub fn wakeup_before(size: u64) -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    wakeup_for(avail, avail + stored(size))
}

/// The room a record of `size` bytes takes in the ring: its 8-byte header, rounded up to 8.
#[inline(always)]
fn stored(size: u64) -> u64 {
    (size + 8 + 7) & !7
}

const BPF_RB_AVAIL_DATA: u64 = 0;

/// Wake the daemon only for the record that takes the ring buffer's fill from `before` to
/// `after` bytes across a multiple of an eighth of its size; every other record waits for the
/// daemon's next poll (every 50 ms) or a wakeup already sent. A trickle of events then costs
/// the daemon one wakeup per poll, and a burst wakes it early, a few times per ring of data
/// while the ring stays under half full. Waking on every record past the mark (as `BPF_RB_FORCE_WAKEUP` above a level would)
/// makes each one raise an interrupt on its CPU (`irq_work`), which costs a watched open more
/// than the rest of its program on a virtual machine, while the daemon is already awake and
/// draining. Records written at once on several CPUs can each see the fill already past a mark
/// that another one crossed, and none wake the daemon: past half full, every record does, so a
/// flood from many CPUs cannot fill the ring while the daemon sleeps out its poll.
#[inline(always)]
fn wakeup_for(before: u64, after: u64) -> u64 {
    const BPF_RB_RING_SIZE: u64 = 1;
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    let step = EVENTS.query(BPF_RB_RING_SIZE) / 8;
    if step != 0 && (after / step > before / step || after >= 4 * step) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Processes whose TCP connections are marked for their first bytes, by tgid: filled by the
/// daemon when the engine decides a process holds an NHI, by the kernel when a process opens a
/// registered credential's inode (so the connection right after the read is never missed) or
/// forks from a member; emptied at exit. Values: `HOLDER_BY_*`.
#[map]
pub static HOLDERS: HashMap<u32, u32> = HashMap::with_max_entries(HOLDERS_MAX, 0);

/// TCP sockets marked at `connect` whose first bytes are still to be copied, with the
/// connecting process's header and what has been copied so far: storage attached to the socket
/// itself, so a mark lives and dies with its socket (never another connection's, whatever
/// addresses are reused), and finding it on a packet is a pointer on the socket, not a hash.
#[btf_map]
pub static WIRE_MARKS: SkStorage<WireMark> = SkStorage::new();

/// A marked socket's state (`WIRE_MARKS`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WireMark {
    /// The connecting process, as `connect` saw it.
    pub hdr: EventHeader,
    /// Bytes copied so far, of `budget`.
    pub sent: u32,
    /// Bytes to copy in all (set at the first packet with a payload: a whole TLS ClientHello,
    /// else `WIRE_CAP`).
    pub budget: u32,
    /// Packets with a payload copied from so far.
    pub chunks: u32,
    pub _pad: u32,
    /// The socket's network namespace as the connecting process used it
    /// (`probes::netns::as_used`, at `connect`): what its records carry.
    pub netns: u64,
}
