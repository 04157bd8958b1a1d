//! Process lifecycle: exec (with its arguments), fork and exit, so the daemon's process table
//! knows every process, also those gone before it could look at /proc.
//!
//! An exec names the file the kernel executed (`current->mm->exe_file`: its inode and its real
//! path), never only the string passed to `execve`: `/proc/self/exe`, `execveat(fd, "",
//! AT_EMPTY_PATH)`, relative names and symlinks all end at the same file. When the kernel ran an
//! interpreter for a script (`bprm->interp` differs from `bprm->filename`), the record says so
//! and carries the script's name (and, for a relative one, the working directory).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
        generated,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use monitor_common::{
    config::Offset, EventKind, ExecEvent, ExitEvent, ForkEvent, LossCause, ARGS_CAP, ARGS_MISSING,
    ARGS_TRUNCATED, CWD_NAMES_COMPLETE, EXEC_SCRIPT, EXE_NAMES_COMPLETE, MAX_ARGS, PATH_CAP,
};

use aya_log_ebpf::warn;

use super::{arg, files, header};
use crate::maps::{count_loss, ExecArgs, EVENTS, EXEC_SCRATCH, PENDING_EXEC};

/// syscalls/sys_enter_execve: filename at 16, argv at 24.
#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    read_args(&ctx, 24);
    0
}

/// syscalls/sys_enter_execveat: argv at 32.
#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    read_args(&ctx, 32);
    0
}

#[inline(always)]
fn read_args(ctx: &TracePointContext, argv_off: usize) {
    let Some(ev) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch.
    let ev: &mut ExecArgs = unsafe { &mut *ev };
    let argv: *const u64 = arg::<u64>(ctx, argv_off) as *const u64;
    let mut off: usize = 0;
    let mut argc: u32 = 0;
    ev.flags = 0;
    let mut i = 0;
    while i < MAX_ARGS {
        // SAFETY: user memory through the helper.
        let p = match unsafe { bpf_probe_read_user(argv.wrapping_add(i)) } {
            Ok(p) => p as *const u8,
            Err(_) => break,
        };
        if p.is_null() {
            break;
        }
        if off >= ARGS_CAP {
            ev.flags |= ARGS_TRUNCATED;
            break;
        }
        // SAFETY: writes at most ARGS_CAP bytes at an offset below ARGS_CAP into a buffer of
        // 2 * ARGS_CAP bytes.
        let len = unsafe {
            generated::bpf_probe_read_user_str(
                ev.args.as_mut_ptr().add(off & (ARGS_CAP - 1)).cast(),
                ARGS_CAP as u32,
                p.cast(),
            )
        };
        if len <= 0 {
            break;
        }
        off += len as usize;
        argc += 1;
        i += 1;
    }
    if i == MAX_ARGS {
        ev.flags |= ARGS_TRUNCATED;
    }
    ev.args_len = off.min(2 * ARGS_CAP) as u32;
    ev.argc = argc;
    let tid = bpf_get_current_pid_tgid() as u32;
    if PENDING_EXEC.insert(&tid, ev, 0).is_err() {
        count_loss(LossCause::PendingFull);
        warn!(
            ctx,
            "nhiscope: exec argument map full, an exec is sent without its arguments"
        );
    }
}

/// Raw tracepoint sched_process_exec: `(struct task_struct *p, pid_t old_pid, struct
/// linux_binprm *bprm)`, in the new image's context.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> u32 {
    let old_tid: u64 = ctx.arg(1);
    let old_tid = old_tid as u32;
    let bprm: u64 = ctx.arg(2);
    let Some(mut slot) = EVENTS.reserve::<ExecEvent>(0) else {
        count_loss(LossCause::RingbufExec);
        let _ = PENDING_EXEC.remove(&old_tid);
        return 0;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ExecEvent; every field is written before submit.
    unsafe {
        // SAFETY (inner): the pending value is copied out before its entry is removed.
        match PENDING_EXEC.get(&old_tid) {
            Some(p) => {
                generated::bpf_probe_read_kernel(
                    (*ev).args.as_mut_ptr().cast(),
                    (2 * ARGS_CAP) as u32,
                    p.args.as_ptr().cast(),
                );
                (*ev).args_len = p.args_len;
                (*ev).argc = p.argc;
                (*ev).flags = p.flags;
            }
            None => {
                (*ev).args_len = 0;
                (*ev).argc = 0;
                (*ev).flags = ARGS_MISSING;
            }
        }
        (*ev).hdr = header(EventKind::Exec);
        (*ev).old_tid = old_tid;
        let filename = files::offset(Offset::BprmFilename).and_then(|o| files::read_ptr(bprm, o));
        let interp = files::offset(Offset::BprmInterp).and_then(|o| files::read_ptr(bprm, o));
        let n = match filename {
            Some(f) => generated::bpf_probe_read_kernel_str(
                (*ev).filename.as_mut_ptr().cast(),
                PATH_CAP as u32,
                f as *const core::ffi::c_void,
            ),
            None => 0,
        };
        (*ev).filename_len = if n > 0 { (n - 1) as u32 } else { 0 };
        if filename.is_some() && interp != filename {
            (*ev).flags |= EXEC_SCRIPT;
        }
        let task = bpf_get_current_task();
        let exe = files::offset(Offset::TaskMm)
            .and_then(|o| files::read_ptr(task, o))
            .and_then(|mm| files::read_ptr(mm, files::offset(Offset::MmExeFile)?));
        (*ev).exe_ino = 0;
        (*ev).exe_dev = 0;
        (*ev).exe_names_len = 0;
        (*ev).cwd_names_len = 0;
        (*ev).stdin_pipe = files::stdin_pipe();
        // The inode, mount and dentry in one read (see files::file_parts).
        if let Some((inode, mnt, dentry)) = exe.and_then(files::file_parts) {
            if let Some((ino, dev)) = files::inode_identity(inode) {
                (*ev).exe_ino = ino;
                (*ev).exe_dev = dev;
            }
            let (len, whole) = files::walk(task, mnt, dentry, (*ev).exe_names.as_mut_ptr());
            (*ev).exe_names_len = len;
            if whole {
                (*ev).flags |= EXE_NAMES_COMPLETE;
            }
        }
        // A script named relative to the working directory: send that directory.
        if (*ev).flags & EXEC_SCRIPT != 0 && n > 0 && (*ev).filename[0] != b'/' {
            if let Some((mnt, dentry)) = files::fs_path(task, Offset::FsPwd) {
                let (len, whole) = files::walk(task, mnt, dentry, (*ev).cwd_names.as_mut_ptr());
                (*ev).cwd_names_len = len;
                if whole {
                    (*ev).flags |= CWD_NAMES_COMPLETE;
                }
            }
        }
    }
    slot.submit(crate::maps::wakeup::<ExecEvent>());
    let _ = PENDING_EXEC.remove(&old_tid);
    0
}

/// Raw tracepoint sched_process_fork: `(struct task_struct *parent, struct task_struct *child)`,
/// in the parent's context. A new thread (its pid differs from its tgid) is no new process and
/// costs no record: a thread storm costs the daemon nothing.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> u32 {
    let child: u64 = ctx.arg(1);
    let (Some(o_pid), Some(o_tgid)) = (
        files::offset(Offset::TaskPid),
        files::offset(Offset::TaskTgid),
    ) else {
        return 0;
    };
    // SAFETY: kernel memory through the helper; pid_t is an i32.
    let (pid, tgid) = unsafe {
        (
            bpf_probe_read_kernel((child as usize + o_pid) as *const i32).unwrap_or(0),
            bpf_probe_read_kernel((child as usize + o_tgid) as *const i32).unwrap_or(0),
        )
    };
    if pid != tgid {
        return 0;
    }
    match EVENTS.reserve::<ForkEvent>(0) {
        Some(mut slot) => {
            slot.write(ForkEvent {
                hdr: header(EventKind::Fork),
                child_tid: pid as u32,
                _pad: 0,
            });
            slot.submit(crate::maps::wakeup::<ForkEvent>());
        }
        None => count_loss(LossCause::RingbufFork),
    }
    // After the record: a refusal of the full holder set is counted once the record the daemon
    // learns the child from is in the ring (see the daemon's `holder_set`). The child has not
    // run yet, so it is in the set before its first connect all the same.
    super::wire::fork(pid as u32);
    0
}

/// sched/sched_process_exit: `bool group_dead` at 32. Only the end of a whole process is sent.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let group_dead: u8 = arg(&ctx, 32);
    if group_dead == 0 {
        return 0;
    }
    super::wire::exit((bpf_get_current_pid_tgid() >> 32) as u32);
    match EVENTS.reserve::<ExitEvent>(0) {
        Some(mut slot) => {
            slot.write(ExitEvent {
                hdr: header(EventKind::Exit),
            });
            slot.submit(crate::maps::wakeup::<ExitEvent>());
        }
        None => count_loss(LossCause::RingbufExit),
    }
    0
}
