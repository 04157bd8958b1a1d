//! Opens of watched paths, with their results; and the cwd changes that relative paths need.
//!
//! At syscall entry the path is copied once into per-CPU scratch and prefiltered; a watched open
//! is parked in `PENDING` under its pid_tgid. At exit the parked record gets the syscall's result
//! and goes to the ring buffer. An unwatched open therefore costs one string copy and the
//! prefilter at entry, and one hash lookup that misses at exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use monitor_common::{
    config, EventKind, LossCause, OpenEvent, OpenOp, FEEDS_PARENT, PATH_CAP, PATH_TRUNCATED,
};

use super::{arg, files, filter, header};
use crate::maps::{count_loss, CONFIG, EVENTS, OPEN_SCRATCH, PENDING};

const AT_FDCWD: i32 = -100;

/// Where a syscall's arguments are in its tracepoint record (from its format file).
struct Layout {
    op: OpenOp,
    dfd: Option<usize>,
    path: Option<usize>,
    flags: Option<usize>,
}

#[inline(always)]
fn enter(ctx: &TracePointContext, l: Layout) -> Result<(), ()> {
    let pt = bpf_get_current_pid_tgid();
    // One lookup for both settings: CONFIG[SELF_PID] and CONFIG[FLAGS].
    let self_pid = CONFIG.get(config::SELF_PID).copied().unwrap_or(0);
    if (pt >> 32) == self_pid {
        return Ok(());
    }
    let flags = CONFIG.get(config::FLAGS).copied().unwrap_or(0);
    let ev = OPEN_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: per-CPU scratch, not shared with a program that could preempt this one.
    let ev = unsafe { &mut *ev };
    let is_open = !matches!(l.op, OpenOp::Chdir | OpenOp::Fchdir);
    let n = match l.path {
        Some(off) => {
            let user: *const u8 = arg::<u64>(ctx, off) as *const u8;
            // SAFETY: reads user memory through the helper, which faults safely.
            match unsafe { bpf_probe_read_user_str_bytes(user, &mut ev.path) } {
                Ok(s) => s.len(),
                Err(_) => return Err(()),
            }
        }
        None => 0,
    };
    if is_open
        && flags & config::FLAG_ALL_OPENS == 0
        && !filter::watched(&ev.path, n, flags, &mut ev.ret)
    {
        return Ok(());
    }
    ev.hdr = header(if is_open {
        EventKind::Open
    } else {
        EventKind::Chdir
    });
    if is_open {
        ev.hdr.flags = files::tty_flags();
    }
    ev.op = l.op as u32;
    ev.dfd = match l.dfd {
        Some(off) => arg::<u64>(ctx, off) as i32,
        None => AT_FDCWD,
    };
    ev.open_flags = match l.flags {
        Some(off) => arg::<u64>(ctx, off) as u32,
        None => 0,
    };
    if let OpenOp::Openat2 = l.op {
        // sys_enter_openat2: `struct open_how *how` at 32; `how->flags` is its first u64.
        let how: *const u64 = arg::<u64>(ctx, 32) as *const u64;
        // SAFETY: user memory through the helper.
        ev.open_flags = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how) }.unwrap_or(0) as u32;
    }
    if let OpenOp::Creat = l.op {
        ev.open_flags = 0o1101; // O_CREAT|O_WRONLY|O_TRUNC, as creat(2) is defined
    }
    ev.flags = if n >= PATH_CAP - 1 { PATH_TRUNCATED } else { 0 };
    ev.ret = 0;
    ev.path_len = n as u32;
    ev.stdout_ino = if is_open {
        files::fd_inode(1).map_or(0, |(ino, _)| ino)
    } else {
        0
    };
    if files::parent_holds(ev.stdout_ino) {
        ev.flags |= FEEDS_PARENT;
    }
    ev.ino = 0;
    ev.dev = 0;
    ev._pad2 = 0;
    if PENDING.insert(&pt, ev, 0).is_ok() {
        pending_add(1);
    } else {
        count_loss(LossCause::PendingFull);
        warn!(ctx, "nhiscope: pending-open map full, an open was lost");
    }
    Ok(())
}

/// Move the count of parked opens (an atomic add: exits run on every CPU).
#[inline(always)]
fn pending_add(delta: u64) {
    if let Some(p) = CONFIG.get_ptr_mut(config::PENDING_COUNT) {
        // SAFETY: a valid, 8-byte aligned map value; an atomic add (BPF_XADD), which core's
        // atomics do not offer on this target.
        unsafe {
            core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) p, d = in(reg) delta);
        }
    }
}

#[inline(always)]
fn exit(ctx: &TracePointContext) {
    // Nothing parked anywhere: this exit cannot be one of ours (the common case, one load).
    if CONFIG.get(config::PENDING_COUNT).copied().unwrap_or(1) == 0 {
        return;
    }
    let pt = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed below.
    let Some(pending) = (unsafe { PENDING.get(&pt) }) else {
        return;
    };
    // sys_exit_*: `long ret` at 16.
    let ret: i64 = arg(ctx, 16);
    let is_chdir = pending.hdr.kind == EventKind::Chdir as u32;
    if !(is_chdir && ret != 0) {
        match EVENTS.reserve::<OpenEvent>(0) {
            Some(mut slot) => {
                let dst = slot.as_mut_ptr();
                // SAFETY: copies one OpenEvent between two valid kernel buffers of that size.
                let copied = unsafe {
                    generated::bpf_probe_read_kernel(
                        dst.cast(),
                        core::mem::size_of::<OpenEvent>() as u32,
                        (pending as *const OpenEvent).cast(),
                    )
                };
                if copied == 0 {
                    // SAFETY: `dst` was fully written by the copy above.
                    unsafe {
                        (*dst).ret = ret;
                        if ret >= 0 && !is_chdir {
                            if let Some((ino, dev)) = files::fd_inode(ret as u64) {
                                (*dst).ino = ino;
                                (*dst).dev = dev;
                            }
                        }
                    }
                    slot.submit(crate::maps::wakeup());
                } else {
                    slot.discard(0);
                    count_loss(if is_chdir {
                        LossCause::RingbufChdir
                    } else {
                        LossCause::RingbufOpen
                    });
                }
            }
            None => count_loss(if is_chdir {
                LossCause::RingbufChdir
            } else {
                LossCause::RingbufOpen
            }),
        }
    }
    if PENDING.remove(&pt).is_ok() {
        pending_add(u64::MAX); // -1
    }
}

macro_rules! open_probe {
    ($enter:ident, $exit:ident, $layout:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            let _ = enter(&ctx, $layout);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            exit(&ctx);
            0
        }
    };
}

// syscalls/sys_enter_openat: dfd at 16, filename at 24, flags at 32.
open_probe!(
    sys_enter_openat,
    sys_exit_openat,
    Layout {
        op: OpenOp::Openat,
        dfd: Some(16),
        path: Some(24),
        flags: Some(32)
    }
);
// syscalls/sys_enter_openat2: dfd at 16, filename at 24, how at 32 (flags read through it).
open_probe!(
    sys_enter_openat2,
    sys_exit_openat2,
    Layout {
        op: OpenOp::Openat2,
        dfd: Some(16),
        path: Some(24),
        flags: None
    }
);
// syscalls/sys_enter_open: filename at 16, flags at 24.
open_probe!(
    sys_enter_open,
    sys_exit_open,
    Layout {
        op: OpenOp::Open,
        dfd: None,
        path: Some(16),
        flags: Some(24)
    }
);
// syscalls/sys_enter_creat: pathname at 16.
open_probe!(
    sys_enter_creat,
    sys_exit_creat,
    Layout {
        op: OpenOp::Creat,
        dfd: None,
        path: Some(16),
        flags: None
    }
);
// syscalls/sys_enter_chdir: filename at 16.
open_probe!(
    sys_enter_chdir,
    sys_exit_chdir,
    Layout {
        op: OpenOp::Chdir,
        dfd: None,
        path: Some(16),
        flags: None
    }
);
// syscalls/sys_enter_fchdir: fd at 16.
open_probe!(
    sys_enter_fchdir,
    sys_exit_fchdir,
    Layout {
        op: OpenOp::Fchdir,
        dfd: Some(16),
        path: None,
        flags: None
    }
);
