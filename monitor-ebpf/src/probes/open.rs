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
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    config::{self, Offset},
    EventKind, LossCause, OpenEvent, OpenOp, FEEDS_PARENT, MATCH_NAME, NAMES_ARE_BASE,
    NAMES_COMPLETE, PATH_CAP, PATH_TRUNCATED, PATH_UNREAD,
};

use super::{arg, files, filter, header};
use crate::maps::{count_loss, CONFIG, EVENTS, NAME_SCRATCH};

const AT_FDCWD: i32 = -100;

/// Which saved registers hold a syscall's arguments (x86-64: di, si, dx).
struct Layout {
    op: OpenOp,
    dfd: Option<Offset>,
    path: Offset,
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

#[inline(always)]
fn exit(ctx: &TracePointContext, l: Layout) -> Option<()> {
    let pt = bpf_get_current_pid_tgid();
    if (pt >> 32) == CONFIG.get(config::SELF_PID).copied().unwrap_or(0) {
        return None;
    }
    // sys_exit_*: `long ret` at 16.
    let ret: i64 = arg(ctx, 16);
    let flags = CONFIG.get(config::FLAGS).copied().unwrap_or(0);
    let all = flags & config::FLAG_ALL_OPENS != 0;
    let buf = NAME_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, not shared with a program that could preempt this one.
    let buf = unsafe { &mut *buf };
    // SAFETY: returns the current task pointer as an integer; it is only read through helpers.
    let task = unsafe { bpf_get_current_task() };

    let mut file_path = None;
    let matched = if ret >= 0 {
        let file = files::fd_file(task, ret as u64)?;
        let (mnt, dentry) = files::file_path(file)?;
        file_path = Some((file, mnt, dentry));
        if all {
            MATCH_NAME
        } else {
            // SAFETY: the first NAME_SCAN bytes of the PATH_CAP scratch buffer.
            let names =
                unsafe { &mut *(buf.as_mut_ptr() as *mut [u8; monitor_common::filter::NAME_SCAN]) };
            filter::file_watched(file, dentry, flags, names)
        }
    } else {
        let Some(n) =
            files::syscall_arg(l.path).and_then(|p| read_user_str(buf.as_mut_ptr(), PATH_CAP, p))
        else {
            // EFAULT: the kernel could not read the name either, nothing was opened.
            if ret != -14 {
                count_loss(LossCause::UserCopy);
            }
            return None;
        };
        if !all && !filter::failed_open_watched(buf, n) {
            return None;
        }
        MATCH_NAME
    };
    if matched == 0 {
        return None;
    }

    let Some(mut slot) = EVENTS.reserve::<OpenEvent>(0) else {
        count_loss(LossCause::RingbufOpen);
        return None;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved OpenEvent; every field is written before submit.
    unsafe {
        (*ev).hdr = header(EventKind::Open);
        (*ev).hdr.flags = files::tty_flags();
        (*ev).op = l.op as u32;
        (*ev).ret = ret;
        (*ev)._pad2 = 0;
        let mut evflags = matched;
        (*ev).dfd = match l.dfd.and_then(files::syscall_arg) {
            Some(v) => v as i32,
            None => AT_FDCWD,
        };
        (*ev).open_flags = match l.op {
            // creat(2) is open(O_CREAT|O_WRONLY|O_TRUNC).
            OpenOp::Creat => 0o1101,
            OpenOp::Openat2 => l
                .flags
                .and_then(files::syscall_arg)
                .and_then(|how| bpf_probe_read_user(how as *const u64).ok())
                .unwrap_or(0) as u32,
            _ => l.flags.and_then(files::syscall_arg).unwrap_or(0) as u32,
        };
        let arg_len = files::syscall_arg(l.path)
            .and_then(|p| read_user_str((*ev).path.as_mut_ptr(), PATH_CAP, p));
        match arg_len {
            Some(n) => {
                (*ev).path_len = n as u32;
                if n >= PATH_CAP - 1 {
                    evflags |= PATH_TRUNCATED;
                }
            }
            None => {
                (*ev).path_len = 0;
                evflags |= PATH_UNREAD;
                count_loss(LossCause::UserCopy);
            }
        }
        let names = (*ev).names.as_mut_ptr();
        match file_path {
            Some((file, mnt, dentry)) => {
                let (ino, dev) = files::file_identity(file).unwrap_or((0, 0));
                (*ev).ino = ino;
                (*ev).dev = dev;
                let (n, whole) = files::walk(task, mnt, dentry, names);
                (*ev).names_len = n;
                if whole {
                    evflags |= NAMES_COMPLETE;
                }
                (*ev).stdout_ino = files::fd_inode(1).map_or(0, |(ino, _)| ino);
                if files::parent_holds((*ev).stdout_ino) {
                    evflags |= FEEDS_PARENT;
                }
            }
            None => {
                (*ev).ino = 0;
                (*ev).dev = 0;
                (*ev).stdout_ino = 0;
                (*ev).names_len = 0;
                // A relative name of a failed open: send the directory it was relative to.
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
    slot.submit(crate::maps::wakeup());
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
        path: Offset::RegsSi,
        flags: Some(Offset::RegsDx)
    }
);
// openat2(dfd, filename, how, size)
open_probe!(
    sys_exit_openat2,
    Layout {
        op: OpenOp::Openat2,
        dfd: Some(Offset::RegsDi),
        path: Offset::RegsSi,
        flags: Some(Offset::RegsDx)
    }
);
// open(filename, flags, mode)
open_probe!(
    sys_exit_open,
    Layout {
        op: OpenOp::Open,
        dfd: None,
        path: Offset::RegsDi,
        flags: Some(Offset::RegsSi)
    }
);
// creat(pathname, mode)
open_probe!(
    sys_exit_creat,
    Layout {
        op: OpenOp::Creat,
        dfd: None,
        path: Offset::RegsDi,
        flags: None
    }
);
