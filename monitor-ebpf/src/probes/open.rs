//! Opens of watched files, decided on the file the kernel opened.
//!
//! One program per open syscall, at its exit only. On success the new descriptor is followed to
//! its `struct file`, and the file's inode and dentry names are tested by `probes::filter`: an
//! unwatched open costs those few reads and bitmap tests, with no string copied from the process
//! and no map to pair entry and exit. A watched open is then sent with the path argument (read
//! from the syscall's saved registers) and the file's real path (its dentries walked up). A failed
//! open has no file: its path argument is read and its last component tested by name, and a
//! matching one is sent with the directory it was relative to.
//!
//! Every spelling and alias of a file (`//`, `/./`, `..`, relative paths, `/proc/self/cwd/…`,
//! `/proc/PID/fd/N`, symlinks, hard links, bind mounts, any length) ends at the same file, so at
//! the same keys.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
        generated,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    config::{self, Offset},
    EventKind, LossCause, OpenEvent, OpenOp, MATCH_NAME, NAMES_ARE_BASE, NAMES_CAP, NAMES_COMPLETE,
    PATH_CAP, PATH_TRUNCATED, PATH_UNREAD, STDOUT_PIPE,
};

use super::{arg, files, filter, header, sockets};
use crate::maps::{
    count_loss, FailedKey, FailedWindow, CONFIG, EVENTS, FAILED_OPENS, NAME_SCRATCH, OPEN_SCRATCH,
    URING_OPENS, URING_SCRATCH,
};

const AT_FDCWD: i32 = -100;

/// Which saved registers hold a syscall's arguments (x86-64: di, si, dx).
struct Layout {
    op: OpenOp,
    dfd: Option<Offset>,
    path: Option<Offset>,
    /// The `flags` argument, or for openat2 the `struct open_how *` whose first u64 it is.
    flags: Option<Offset>,
}

/// Copy a user string into `dst` (`cap` bytes); its length without the NUL, or None.
#[inline(always)]
fn read_user_str(dst: *mut u8, cap: usize, src: u64) -> Option<usize> {
    // SAFETY: `dst` is valid for `cap` bytes (the callers pass their buffers' sizes); the helper
    // faults safely on bad user memory.
    let n = unsafe {
        generated::bpf_probe_read_user_str(dst.cast(), cap as u32, src as *const core::ffi::c_void)
    };
    (n > 0).then(|| n as usize - 1)
}

/// Where an open's path argument is.
#[derive(Clone, Copy)]
enum Arg {
    /// A user pointer in a syscall's saved argument register (read only when needed: most
    /// opens are decided without it).
    User(Offset),
    /// A copy kept in kernel memory (an io_uring request's name, copied at submission).
    Kernel(u64),
    /// The syscall has none (`open_by_handle_at`).
    None,
}

/// Copy the path argument into `dst` (`PATH_CAP` bytes); its length without the NUL.
#[inline(always)]
fn read_arg(dst: *mut u8, arg: Arg) -> Option<usize> {
    match arg {
        Arg::User(reg) => read_user_str(dst, PATH_CAP, files::syscall_arg(reg)?),
        Arg::Kernel(p) => {
            // SAFETY: as in read_user_str, for kernel memory.
            let n = unsafe {
                generated::bpf_probe_read_kernel_str(
                    dst.cast(),
                    PATH_CAP as u32,
                    p as *const core::ffi::c_void,
                )
            };
            (n > 0).then(|| n as usize - 1)
        }
        Arg::None => None,
    }
}

/// One open, as its door knows it.
struct Open {
    op: OpenOp,
    /// The result: an fd, or `-errno`.
    ret: i64,
    /// Whether a successful result is an fd in the task's table (an io_uring open into a fixed
    /// file slot is not: it is judged by name, as a failed open is).
    in_table: bool,
    arg: Arg,
}

/// Decide an open, and send it when it is watched. `fill` writes the fields only the door knows
/// (`dfd`, `open_flags`) into the reserved record. Returns the opened file's inode number when a
/// successful open into the task's file table was sent: the caller then looks for the
/// connections the task already has open (`sockets::once`).
#[inline(always)]
fn report(o: Open, fill: impl FnOnce(&mut OpenEvent)) -> Option<u64> {
    let ret = o.ret;
    let flags = CONFIG.get(config::FLAGS).copied().unwrap_or(0);
    let all = flags & config::FLAG_ALL_OPENS != 0;
    let buf = NAME_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, not shared with a program that could preempt this one.
    let buf = unsafe { &mut *buf };
    // SAFETY: returns the current task pointer as an integer; it is only read through helpers.
    let task = unsafe { bpf_get_current_task() };

    let mut file_path = None;
    let mut fds = 0;
    let matched = if ret >= 0 && o.in_table {
        fds = files::current_fd_array()?;
        let file = files::read_ptr(fds, (ret as usize & 0xffff) * 8)?;
        let (inode, mnt, dentry) = files::file_parts(file)?;
        file_path = Some((inode, mnt, dentry));
        if all {
            MATCH_NAME
        } else {
            // SAFETY: the first NAME_SCAN bytes of the PATH_CAP scratch buffer.
            let names =
                unsafe { &mut *(buf.as_mut_ptr() as *mut [u8; monitor_common::filter::NAME_SCAN]) };
            filter::file_watched(inode, dentry, flags, names)
        }
    } else {
        let Some(n) = read_arg(buf.as_mut_ptr(), o.arg) else {
            // EFAULT: the kernel could not read the name either, nothing was opened.
            if ret != -14 && !matches!(o.arg, Arg::None) {
                count_loss(LossCause::UserCopy);
            }
            return None;
        };
        if !all {
            let name = filter::failed_open_watched(buf, n)?;
            if !failed_open_allowed(name) {
                count_loss(LossCause::FailedOpenLimit);
                return None;
            }
        }
        MATCH_NAME
    };
    if matched == 0 {
        return None;
    }
    // The daemon's own opens are not reported (checked here, after the filter: the daemon opens
    // no watched file in the common case, and every other open saves the helper call).
    if (bpf_get_current_pid_tgid() >> 32) == CONFIG.get(config::SELF_PID).copied().unwrap_or(0) {
        return None;
    }

    // Built in per-CPU scratch, then sent with only the `names` bytes in use: a record is
    // a few hundred bytes rather than the whole struct, so the ring buffer holds 3x more.
    let ev = OPEN_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `ev` points at a reserved OpenEvent; every field is written before submit.
    unsafe {
        (*ev).hdr = header(EventKind::Open);
        (*ev).hdr.flags = files::tty_flags();
        (*ev).op = o.op as u32;
        (*ev).ret = ret;
        (*ev)._pad2 = 0;
        (*ev).dfd = AT_FDCWD;
        (*ev).open_flags = 0;
        fill(&mut *ev);
        let mut evflags = matched;
        let arg_len = read_arg((*ev).path.as_mut_ptr(), o.arg);
        match arg_len {
            Some(n) => {
                (*ev).path_len = n as u32;
                if n >= PATH_CAP - 1 {
                    evflags |= PATH_TRUNCATED;
                }
            }
            None => {
                (*ev).path_len = 0;
                (*ev).path[0] = 0;
                if !matches!(o.arg, Arg::None) {
                    evflags |= PATH_UNREAD;
                    count_loss(LossCause::UserCopy);
                }
            }
        }
        let names = (*ev).names.as_mut_ptr();
        match file_path {
            Some((inode, mnt, dentry)) => {
                let (ino, dev) = files::inode_identity(inode).unwrap_or((0, 0));
                (*ev).ino = ino;
                (*ev).dev = dev;
                let (n, whole) = files::walk(task, mnt, dentry, names);
                (*ev).names_len = n;
                if whole {
                    evflags |= NAMES_COMPLETE;
                }
                // Where the secret may flow next: a pipe on stdout (a pipeline, `$(...)`).
                (*ev).stdout_ino = 0;
                if let Some((pipe, ino, _)) = files::pipe_inode_at(fds, 1) {
                    (*ev).stdout_ino = ino;
                    evflags |= STDOUT_PIPE;
                    evflags |= files::parent_holds_once(pipe, ino);
                }
            }
            None => {
                (*ev).ino = 0;
                (*ev).dev = 0;
                (*ev).stdout_ino = 0;
                (*ev).names_len = 0;
                // A relative name without a file: send the directory it was relative to.
                if arg_len.is_some() && (*ev).path[0] != b'/' {
                    let base = if (*ev).dfd == AT_FDCWD {
                        files::fs_path(task, Offset::FsPwd)
                    } else {
                        files::fd_file(task, (*ev).dfd as u64).and_then(files::file_path)
                    };
                    if let Some((mnt, dentry)) = base {
                        let (n, whole) = files::walk(task, mnt, dentry, names);
                        (*ev).names_len = n;
                        evflags |= NAMES_ARE_BASE;
                        if whole {
                            evflags |= NAMES_COMPLETE;
                        }
                    }
                }
            }
        }
        (*ev).flags = evflags;
    }
    // SAFETY: `ev` is this CPU's scratch record, fully written above.
    let names_len = unsafe { (*ev).names_len } as usize & (2 * NAMES_CAP - 1);
    let size = NAMES_OFFSET + names_len;
    // SAFETY: sends `size` bytes of the scratch record, `size` at most its length (the mask
    // above); the helper copies them into the ring buffer.
    let ret = unsafe {
        generated::bpf_ringbuf_output(
            core::ptr::addr_of!(EVENTS) as *mut core::ffi::c_void,
            ev.cast(),
            size as u64,
            crate::maps::wakeup_before(size as u64),
        )
    };
    // SAFETY: as above.
    let (evflags, ino) = unsafe { ((*ev).flags, (*ev).ino) };
    // The same thread opening the same file again: its holding and its connections are known.
    let repeat = o.ret >= 0 && ino != 0 && files::repeat_open(ino);
    // A reader of a registered credential holds it, whether or not its record got through; a
    // reader into a pipe makes its parent a holder each time (the parent may have changed).
    if evflags & monitor_common::MATCH_INODE != 0
        && o.ret >= 0
        && (!repeat || evflags & monitor_common::FEEDS_PARENT != 0)
    {
        super::wire::opened_credential(task, evflags);
    }
    if ret < 0 {
        count_loss(LossCause::RingbufOpen);
        return None;
    }
    (o.ret >= 0 && o.in_table && ino != 0 && !repeat).then_some(ino)
}

/// Where `OpenEvent::names` starts: what every open record carries before its names.
const NAMES_OFFSET: usize = core::mem::offset_of!(OpenEvent, names);

/// Whether one more failed open of the name hashed `name` by the current user may be sent this
/// second (at most `FAILED_OPENS_PER_SEC`): anyone can fail to open a watched name in a loop,
/// and that must cost the monitor a counter, not an event each.
#[inline(always)]
fn failed_open_allowed(name: u64) -> bool {
    // SAFETY: helpers without arguments.
    let (uid, now) = unsafe {
        (
            generated::bpf_get_current_uid_gid() as u32,
            generated::bpf_ktime_get_boot_ns(),
        )
    };
    let key = FailedKey { uid, _pad: 0, name };
    // SAFETY: the value is copied at once.
    let (start, count) = match unsafe { FAILED_OPENS.get(&key) } {
        Some(w) if now.wrapping_sub(w.start) < 1_000_000_000 => (w.start, w.count),
        _ => (now, 0),
    };
    let _ = FAILED_OPENS.insert(
        &key,
        &FailedWindow {
            start,
            count: count + 1,
        },
        0,
    );
    count < monitor_common::FAILED_OPENS_PER_SEC
}

/// A syscall's exit: its arguments come from the registers saved at its entry.
#[inline(always)]
fn exit(ctx: &TracePointContext, l: Layout) -> Option<()> {
    // sys_exit_*: `long ret` at 16.
    let ret: i64 = arg(ctx, 16);
    let arg = match l.path {
        Some(reg) => Arg::User(reg),
        None => Arg::None,
    };
    let ino = report(
        Open {
            op: l.op,
            ret,
            in_table: true,
            arg,
        },
        |ev| {
            if let Some(v) = l.dfd.and_then(files::syscall_arg) {
                ev.dfd = v as i32;
            }
            ev.open_flags = match l.op {
                // creat(2) is open(O_CREAT|O_WRONLY|O_TRUNC).
                OpenOp::Creat => 0o1101,
                OpenOp::Openat2 => l
                    .flags
                    .and_then(files::syscall_arg)
                    // SAFETY: user memory through the helper.
                    .and_then(|how| unsafe { bpf_probe_read_user(how as *const u64) }.ok())
                    .unwrap_or(0) as u32,
                _ => l.flags.and_then(files::syscall_arg).unwrap_or(0) as u32,
            };
        },
    )?;
    sockets::once(ctx, ino);
    Some(())
}

/// io_uring opcodes that open files (`IORING_OP_OPENAT`, `IORING_OP_OPENAT2`).
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;

/// io_uring:io_uring_submit_req: `req` at 16, `opcode` at 32. An open request is remembered
/// with its name (copied now: the kernel frees it before completion) until it completes.
#[tracepoint]
pub fn io_uring_submit_req(ctx: TracePointContext) -> u32 {
    let opcode: u8 = arg(&ctx, 32);
    if opcode != IORING_OP_OPENAT && opcode != IORING_OP_OPENAT2 {
        return 0;
    }
    let req: u64 = arg(&ctx, 16);
    let _ = remember_uring_open(req);
    0
}

#[inline(always)]
fn remember_uring_open(req: u64) -> Option<()> {
    let scratch = URING_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch.
    let u = unsafe { &mut *scratch };
    // The request's command area is a `struct io_open` at its start.
    u.dfd = files::offset(Offset::IoOpenDfd)
        // SAFETY: kernel memory through the helper.
        .and_then(|o| unsafe { bpf_probe_read_kernel((req as usize + o) as *const i32) }.ok())
        .unwrap_or(AT_FDCWD);
    u._reserved = 0;
    let filename = files::read_ptr(req, files::offset(Offset::IoOpenFilename)?)?;
    let name = files::read_ptr(filename, files::offset(Offset::FilenameName)?)?;
    u.path_len = read_arg(u.path.as_mut_ptr(), Arg::Kernel(name)).unwrap_or(0) as u32;
    if URING_OPENS.insert(&req, u, 0).is_err() {
        count_loss(LossCause::PendingFull);
    }
    Some(())
}

/// io_uring:io_uring_complete: `req` at 16, `res` at 32. Runs in the submitter or one of its
/// io-wq workers, which share its file table. Whether the request was an open is read from the
/// request itself, so an open into the file table is judged by its file even when its name
/// could not be remembered at submission (the map full): only `path_arg` is then missing.
#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    let req: u64 = arg(&ctx, 16);
    let _ = uring_complete(&ctx, req);
    0
}

#[inline(always)]
fn uring_complete(ctx: &TracePointContext, req: u64) -> Option<()> {
    // SAFETY: kernel memory through the helper.
    let opcode: u8 = unsafe {
        bpf_probe_read_kernel((req as usize + files::offset(Offset::KiocbOpcode)?) as *const u8)
    }
    .ok()?;
    if opcode != IORING_OP_OPENAT && opcode != IORING_OP_OPENAT2 {
        return None;
    }
    let res: i32 = arg(ctx, 32);
    // SAFETY: as above; the request's command area is its `struct io_open`.
    let slot: u32 = unsafe {
        bpf_probe_read_kernel((req as usize + files::offset(Offset::IoOpenFileSlot)?) as *const u32)
    }
    .unwrap_or(0);
    // SAFETY: the value is read (by `report`, from its address) before it is removed.
    let kept = unsafe { URING_OPENS.get(&req) };
    let (dfd, arg) = match kept {
        Some(u) => (u.dfd, Arg::Kernel(u.path.as_ptr() as u64)),
        None => (AT_FDCWD, Arg::None),
    };
    let sent = report(
        Open {
            op: OpenOp::IoUring,
            ret: i64::from(res),
            in_table: slot == 0,
            arg,
        },
        |ev| ev.dfd = dfd,
    );
    if kept.is_some() {
        let _ = URING_OPENS.remove(&req);
    }
    if let Some(ino) = sent {
        sockets::once(ctx, ino);
    }
    Some(())
}

macro_rules! open_probe {
    ($exit:ident, $layout:expr) => {
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            let _ = exit(&ctx, $layout);
            0
        }
    };
}

// openat(dfd, filename, flags, mode)
open_probe!(
    sys_exit_openat,
    Layout {
        op: OpenOp::Openat,
        dfd: Some(Offset::RegsDi),
        path: Some(Offset::RegsSi),
        flags: Some(Offset::RegsDx)
    }
);
// openat2(dfd, filename, how, size)
open_probe!(
    sys_exit_openat2,
    Layout {
        op: OpenOp::Openat2,
        dfd: Some(Offset::RegsDi),
        path: Some(Offset::RegsSi),
        flags: Some(Offset::RegsDx)
    }
);
// open(filename, flags, mode)
open_probe!(
    sys_exit_open,
    Layout {
        op: OpenOp::Open,
        dfd: None,
        path: Some(Offset::RegsDi),
        flags: Some(Offset::RegsSi)
    }
);
// creat(pathname, mode)
open_probe!(
    sys_exit_creat,
    Layout {
        op: OpenOp::Creat,
        dfd: None,
        path: Some(Offset::RegsDi),
        flags: None
    }
);
// open_by_handle_at(mount_fd, handle, flags): no path at all, the file is what it opened.
open_probe!(
    sys_exit_open_by_handle_at,
    Layout {
        op: OpenOp::OpenByHandleAt,
        dfd: Some(Offset::RegsDi),
        path: None,
        flags: Some(Offset::RegsDx)
    }
);
