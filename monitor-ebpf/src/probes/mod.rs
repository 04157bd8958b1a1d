//! One file per probe family.

pub mod connect;
pub mod dns;
pub mod files;
pub mod filter;
pub mod netns;
pub mod open;
pub mod process;
pub mod sockets;
pub mod wire;

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated},
    programs::TracePointContext,
    EbpfContext,
};
use monitor_common::{EventHeader, EventKind};

/// The header for a record about the current task.
#[inline(always)]
pub fn header(kind: EventKind) -> EventHeader {
    let pt = bpf_get_current_pid_tgid();
    let ug = bpf_get_current_uid_gid();
    EventHeader {
        kind: kind as u32,
        pid: (pt >> 32) as u32,
        tid: pt as u32,
        uid: ug as u32,
        gid: (ug >> 32) as u32,
        flags: 0,
        // SAFETY: helpers without arguments.
        ts_ns: unsafe { generated::bpf_ktime_get_boot_ns() },
        // SAFETY: as above.
        cgroup_id: unsafe { generated::bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// `n` (1 to `CAP`, a power of two) in a form the verifier can bound from below too, as a
/// length for `bpf_skb_load_bytes`, which refuses one it cannot prove is above 0. Through a
/// volatile stack slot, or the compiler folds the mask back into a `min` the verifier cannot
/// bound from below.
#[inline(always)]
pub fn copy_len<const CAP: u32>(n: u32) -> u32 {
    const { assert!(CAP.is_power_of_two()) };
    let mut slot = n;
    // SAFETY: a local variable, written and read back.
    let n = unsafe {
        core::ptr::write_volatile(&mut slot, n);
        core::ptr::read_volatile(&slot)
    };
    ((n.wrapping_sub(1)) & (CAP - 1)) + 1
}

/// Load a tracepoint argument at a fixed offset of its format. A direct context load: cheaper
/// than a `bpf_probe_read_kernel` call, and the verifier checks the bounds.
#[inline(always)]
pub fn arg<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: `offset` comes from the tracepoint's format file, named at each use; the verifier
    // refuses loads outside the tracepoint record.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}
