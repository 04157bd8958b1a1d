//! From the current task to the inode behind one of its fds:
//! `current->files->fdt->fd[n]->f_inode->{i_ino, i_sb->s_dev}`.
//!
//! The struct offsets come from the running kernel's BTF, computed by the daemon at load time
//! and put in `CONFIG` (Rust eBPF has no CO-RE). Every step is a `bpf_probe_read_kernel`, which
//! faults safely; an offset of 0 (unknown) or a failed read gives `None`. Only watched opens
//! pay for this.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use monitor_common::config;

use crate::maps::CONFIG;

#[inline(always)]
fn off(i: u32) -> Option<usize> {
    match CONFIG.get(i) {
        // Stored as offset + 1, so that 0 can mean "unknown" and offset 0 (`i_mode`) is usable.
        Some(&v) if v != 0 => Some(v as usize - 1),
        _ => None,
    }
}

#[inline(always)]
fn read_ptr(base: u64, offset: usize) -> Option<u64> {
    // SAFETY: the helper checks the address and returns an error instead of faulting.
    let v = unsafe { bpf_probe_read_kernel((base as usize + offset) as *const u64) }.ok()?;
    (v != 0).then_some(v)
}

/// Inode number and device of the file open on `fd` in the current task.
#[inline(always)]
pub fn fd_inode(fd: u64) -> Option<(u64, u32)> {
    // SAFETY: returns the current task pointer as an integer; it is only read through the helper.
    let task = unsafe { bpf_get_current_task() };
    task_fd_inode(task, fd)
}

/// The `struct file *` array of `task`'s open files.
#[inline(always)]
fn fd_array(task: u64) -> Option<u64> {
    let files = read_ptr(task, off(config::OFF_TASK_FILES)?)?;
    let fdt = read_ptr(files, off(config::OFF_FILES_FDT)?)?;
    read_ptr(fdt, off(config::OFF_FDT_FD)?)
}

/// The inode number behind a `struct file *`.
#[inline(always)]
fn file_ino(file: u64) -> Option<u64> {
    let inode = read_ptr(file, off(config::OFF_FILE_INODE)?)?;
    read_ptr(inode, off(config::OFF_INODE_INO)?)
}

/// Whether fd `fd` of the current task is a pipe (a FIFO inode).
#[inline(always)]
fn is_fifo(fd: u64) -> bool {
    const S_IFMT: u16 = 0o170000;
    const S_IFIFO: u16 = 0o010000;
    // SAFETY: as in fd_inode.
    let task = unsafe { bpf_get_current_task() };
    let mode = || -> Option<u16> {
        let fds = fd_array(task)?;
        let file = read_ptr(fds, (fd as usize & 0xffff) * 8)?;
        let inode = read_ptr(file, off(config::OFF_FILE_INODE)?)?;
        // SAFETY: as in read_ptr; i_mode is a u16 (umode_t).
        unsafe {
            bpf_probe_read_kernel((inode as usize + off(config::OFF_INODE_MODE)?) as *const u16)
        }
        .ok()
    };
    mode().is_some_and(|m| m & S_IFMT == S_IFIFO)
}

/// Whether `file` is open for reading (`FMODE_READ`).
#[inline(always)]
fn readable(file: u64) -> bool {
    const FMODE_READ: u32 = 1;
    let Some(o) = off(config::OFF_FILE_MODE) else {
        return false;
    };
    // SAFETY: as in read_ptr; f_mode is a u32 (fmode_t).
    unsafe { bpf_probe_read_kernel((file as usize + o) as *const u32) }
        .is_ok_and(|m| m & FMODE_READ != 0)
}

/// Whether the current task's stdout (inode `stdout_ino`) is a pipe whose read end is open in
/// its parent, among the parent's first `PARENT_FDS_SCANNED` fds: the parent reads what the
/// task writes (`$(cat f)`). A parent that merely shares the same stdout (the write end it
/// passed down) does not count.
#[inline(always)]
pub fn parent_holds(stdout_ino: u64) -> bool {
    if stdout_ino == 0 || !is_fifo(1) {
        return false;
    }
    // SAFETY: as in fd_inode.
    let task = unsafe { bpf_get_current_task() };
    let Some(parent) = off(config::OFF_TASK_PARENT).and_then(|o| read_ptr(task, o)) else {
        return false;
    };
    let Some(fds) = fd_array(parent) else {
        return false;
    };
    let mut i = 0u64;
    while i < monitor_common::PARENT_FDS_SCANNED {
        if let Some(file) = read_ptr(fds, (i as usize) * 8) {
            if file_ino(file) == Some(stdout_ino) && readable(file) {
                return true;
            }
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn task_fd_inode(task: u64, fd: u64) -> Option<(u64, u32)> {
    let files = read_ptr(task, off(config::OFF_TASK_FILES)?)?;
    let fdt = read_ptr(files, off(config::OFF_FILES_FDT)?)?;
    let fds = read_ptr(fdt, off(config::OFF_FDT_FD)?)?;
    let file = read_ptr(fds, (fd as usize & 0xffff) * 8)?;
    let inode = read_ptr(file, off(config::OFF_FILE_INODE)?)?;
    let ino = read_ptr(inode, off(config::OFF_INODE_INO)?)?;
    let sb = read_ptr(inode, off(config::OFF_INODE_SB)?)?;
    // SAFETY: as in read_ptr; s_dev is a u32 (dev_t).
    let dev =
        unsafe { bpf_probe_read_kernel((sb as usize + off(config::OFF_SB_DEV)?) as *const u32) }
            .ok()?;
    Some((ino, dev))
}

/// `HDR_*` bits about the current task's controlling terminal.
#[inline(always)]
pub fn tty_flags() -> u32 {
    // SAFETY: as in fd_inode.
    let task = unsafe { bpf_get_current_task() };
    let (Some(sig_off), Some(tty_off)) =
        (off(config::OFF_TASK_SIGNAL), off(config::OFF_SIGNAL_TTY))
    else {
        return 0;
    };
    let Some(signal) = read_ptr(task, sig_off) else {
        return 0;
    };
    // SAFETY: as in read_ptr; a NULL tty reads as 0.
    match unsafe { bpf_probe_read_kernel((signal as usize + tty_off) as *const u64) } {
        Ok(0) => monitor_common::HDR_TTY_KNOWN,
        Ok(_) => monitor_common::HDR_TTY_KNOWN | monitor_common::HDR_TTY,
        Err(_) => 0,
    }
}
