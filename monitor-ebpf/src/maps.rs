//! The maps shared by the programs and the daemon. Names are the contract with
//! `monitor-user/src/probes.rs`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use monitor_common::{config, filter::FILTER_WORDS, ExecEvent, OpenEvent, LOSS_CAUSES};

/// Every record for userspace. The daemon may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// The prefilter bitmap (see `monitor_common::filter`), written by the daemon.
#[map]
pub static FILTER: Array<u64> = Array::with_max_entries(FILTER_WORDS, 0);

/// Settings written by the daemon, indexed by `monitor_common::config`.
#[map]
pub static CONFIG: Array<u64> = Array::with_max_entries(config::LEN, 0);

/// Per-CPU counters of records that could not be delivered, indexed by `LossCause`.
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_CAUSES, 0);

/// Watched opens (and chdirs) between syscall enter and exit, by pid_tgid.
#[map]
pub static PENDING: HashMap<u64, OpenEvent> = HashMap::with_max_entries(16384, 0);

/// Arguments read at `execve` entry, by thread id, until `sched_process_exec`.
#[map]
pub static PENDING_EXEC: HashMap<u32, ExecEvent> = HashMap::with_max_entries(2048, 0);

/// Scratch space: records are too big for the 512-byte BPF stack.
#[map]
pub static OPEN_SCRATCH: PerCpuArray<OpenEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

/// Count one lost record.
#[inline(always)]
pub fn count_loss(cause: monitor_common::LossCause) {
    if let Some(p) = LOSSES.get_ptr_mut(cause as u32) {
        // SAFETY: a per-CPU slot, written only by programs on this CPU, which do not nest for
        // these tracepoints.
        unsafe { *p += 1 };
    }
}

/// Submit flags for a record: wake the daemon when the ring buffer is an eighth full, else let
/// the record wait for the daemon's next poll (every 50 ms). A steady trickle of events then
/// costs the daemon one wakeup per poll, not one per record, and a burst still wakes it early.
#[inline(always)]
pub fn wakeup() -> u64 {
    const BPF_RB_AVAIL_DATA: u64 = 0;
    const BPF_RB_RING_SIZE: u64 = 1;
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= EVENTS.query(BPF_RB_RING_SIZE) / 8 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}
