//! Following the kernel's own objects: from the current task to the `struct file` behind one of
//! its fds (`current->files->fdt->fd[n]`), to that file's inode and device, to its real path (its
//! dentries walked up to the process's root, across mounts); and a syscall's arguments at its
//! exit (`task_pt_regs`).
//!
//! The struct offsets come from the running kernel's BTF, computed by the daemon at load time
//! as the read-only global `OFFSETS` (Rust eBPF has no CO-RE). Every step is a `bpf_probe_read_kernel`, which
//! faults safely; an offset of 0 (unknown) or a failed read gives `None`.

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs,
    generated,
};
use monitor_common::{
    config::{self, Offset},
    NAMES_CAP, NAMES_DEPTH,
};

use crate::maps::SCALAR;

/// `v`, passed through map memory so that the verifier knows nothing of it: a pointer becomes
/// a plain number, and a loop variable stops carrying its exact range into the next iteration
/// (so that the verifier's walk of a loop merges states instead of multiplying them).
#[inline(always)]
pub fn launder(v: u64) -> u64 {
    match SCALAR.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU map, written then read back at once; programs
        // on one CPU do not interleave here.
        Some(slot) => unsafe {
            core::ptr::write_volatile(slot, v);
            core::ptr::read_volatile(slot)
        },
        None => v,
    }
}

/// Kernel struct member offsets plus one (0: unknown), in `Offset`'s order, set by the daemon
/// before load (`EbpfLoader::set_global`). A global lands in a read-only, frozen map, so the
/// verifier knows every value as a constant: a pointer plus an offset is a fixed offset it can
/// check against the kernel's BTF (see `fd_array`), and the branches for an unknown offset are
/// pruned at load.
#[no_mangle]
static OFFSETS: [u64; config::OFFSET_SLOTS] = [0; config::OFFSET_SLOTS];

/// A kernel struct member's offset, if the daemon found it. For an `o` known when compiling
/// (the verifier then sees a constant); see `offset_dyn` for one chosen at run time.
#[inline(always)]
pub fn offset(o: Offset) -> Option<usize> {
    slot(o as usize)
}

/// `offset` for an `Offset` held in a variable: the index is bounded for the verifier (the
/// compiler, which knows an enum's range, would drop a plain mask).
#[inline(always)]
pub fn offset_dyn(o: Offset) -> Option<usize> {
    slot(launder(o as u64) as usize & (config::OFFSET_SLOTS - 1))
}

#[inline(always)]
fn slot(i: usize) -> Option<usize> {
    // SAFETY: an in-bounds element of a global (callers bound `i`); volatile so that the
    // compiler does not fold the zeros it was compiled with (the daemon writes the real values
    // before load).
    let v = unsafe { core::ptr::read_volatile(&OFFSETS[i]) };
    // Stored as offset + 1, so that 0 can mean "unknown" and offset 0 (`i_mode`) is usable.
    (v != 0).then(|| v as usize - 1)
}

#[inline(always)]
pub fn read_ptr(base: u64, offset: usize) -> Option<u64> {
    // SAFETY: the helper checks the address and returns an error instead of faulting.
    let v = unsafe { bpf_probe_read_kernel((base as usize + offset) as *const u64) }.ok()?;
    (v != 0).then_some(v)
}

/// The current task's file table (`task->files->fdt`), by direct loads: the task pointer is
/// the kernel's typed (BTF) one, and with constant offsets the verifier checks each member
/// access against the kernel's BTF and lets the JIT make it a plain load that cannot fault (a
/// bad pointer reads as 0). Loads instead of helper calls on every open.
#[inline(always)]
fn current_fdt() -> Option<*const u8> {
    let o_files = offset(Offset::TaskFiles)?;
    let o_fdt = offset(Offset::FilesFdt)?;
    // SAFETY: typed kernel pointers the verifier checks member by member (see above); the
    // loads are the JIT's fault-safe kind.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let files = core::ptr::read_volatile(task.add(o_files) as *const *const u8);
        if files.is_null() {
            return None;
        }
        let fdt = core::ptr::read_volatile(files.add(o_fdt) as *const *const u8);
        (!fdt.is_null()).then_some(fdt)
    }
}

/// The `struct file *` array of the current task's open files (see [`current_fdt`]).
#[inline(always)]
pub fn current_fd_array() -> Option<u64> {
    current_fd_array_of(current_fdt()?)
}

/// The current task's file array and its number of slots (`fdt->max_fds`).
#[inline(always)]
pub fn current_fd_table() -> Option<(u64, u32)> {
    let o_max = offset(Offset::FdtMaxFds)?;
    let fdt = current_fdt()?;
    let fd = current_fd_array_of(fdt)?;
    // SAFETY: a member of the typed file table, as in current_fdt.
    let max = unsafe { core::ptr::read_volatile(fdt.add(o_max) as *const u32) };
    Some((fd, max))
}

#[inline(always)]
fn current_fd_array_of(fdt: *const u8) -> Option<u64> {
    let o_fd = offset(Offset::FdtFd)?;
    // SAFETY: a member of the typed file table, as in current_fdt.
    let fd = unsafe { core::ptr::read_volatile(fdt.add(o_fd) as *const u64) };
    (fd != 0).then_some(fd)
}

/// The start time of the current process (its group leader's `start_time`, ns since boot): with
/// the tgid, a process's identity over time.
#[inline(always)]
pub fn current_process_start() -> Option<u64> {
    let o_leader = offset(Offset::TaskGroupLeader)?;
    let o_start = offset(Offset::TaskStartTime)?;
    // SAFETY: typed kernel pointers, as in current_fd_array.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let leader = core::ptr::read_volatile(task.add(o_leader) as *const *const u8);
        if leader.is_null() {
            return None;
        }
        Some(core::ptr::read_volatile(leader.add(o_start) as *const u64))
    }
}

/// The `struct file *` array of `task`'s open files.
#[inline(always)]
pub fn fd_array(task: u64) -> Option<u64> {
    let files = read_ptr(task, offset(Offset::TaskFiles)?)?;
    let fdt = read_ptr(files, offset(Offset::FilesFdt)?)?;
    read_ptr(fdt, offset(Offset::FdtFd)?)
}

/// The inode number of the current task's standard input when it is the read end of a pipe.
#[inline(always)]
pub fn stdin_pipe() -> u64 {
    // SAFETY: the current task pointer as an integer, only ever read through the helper.
    let task = unsafe { bpf_get_current_task() };
    match fd_array(task).and_then(|fds| pipe_at(fds, 0)) {
        Some((ino, true)) => ino,
        _ => 0,
    }
}

/// When fd `fd` of the file array `fds` is a pipe (a FIFO): its inode number, and whether this
/// end is open for reading.
#[inline(always)]
pub fn pipe_at(fds: u64, fd: u64) -> Option<(u64, bool)> {
    pipe_inode_at(fds, fd).map(|(_, ino, readable)| (ino, readable))
}

/// `pipe_at`, with the pipe's `struct inode *` first (both ends of a pipe share it).
#[inline(always)]
pub fn pipe_inode_at(fds: u64, fd: u64) -> Option<(u64, u64, bool)> {
    const S_IFMT: u16 = 0o170000;
    const S_IFIFO: u16 = 0o010000;
    let file = read_ptr(fds, (fd as usize & 0xffff) * 8)?;
    let inode = read_ptr(file, offset(Offset::FileInode)?)?;
    // SAFETY: as in read_ptr; i_mode is a u16 (umode_t).
    let mode: u16 = unsafe {
        bpf_probe_read_kernel((inode as usize + offset(Offset::InodeMode)?) as *const u16)
    }
    .ok()?;
    if mode & S_IFMT != S_IFIFO {
        return None;
    }
    let ino = read_ptr(inode, offset(Offset::InodeIno)?)?;
    Some((inode, ino, readable(file)))
}

/// Whether `file` is open for reading (`FMODE_READ`).
#[inline(always)]
fn readable(file: u64) -> bool {
    const FMODE_READ: u32 = 1;
    let Some(o) = offset(Offset::FileMode) else {
        return false;
    };
    // SAFETY: as in read_ptr; f_mode is a u32 (fmode_t).
    unsafe { bpf_probe_read_kernel((file as usize + o) as *const u32) }
        .is_ok_and(|m| m & FMODE_READ != 0)
}

/// What the kernel found of the caller's stdout pipe among its parent's descriptors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ParentPipe {
    /// The parent does not hold the pipe's read end (or there is no parent to ask).
    No,
    /// The parent holds the read end: it reads what the task writes (`$(cat f)`, `<(cat f)`).
    Reads,
    /// The parent's file table is larger than `PARENT_FDS_SCANNED` slots and the read end was not
    /// among them: it may hold it above.
    Unknown,
}

/// Slots of the parent's file array compared per copy.
const PARENT_CHUNK: usize = 16;

/// Whether the current task's stdout (the pipe whose `struct inode *` is `stdout_inode`) is a
/// pipe whose read end is open in its parent: the parent reads what the task writes. Every slot
/// of the parent's file array is compared, up to `PARENT_FDS_SCANNED` (a table grows only when
/// its process uses a higher descriptor, so bash's `<(...)` at fd 63 or an `exec 200<&...` are
/// inside it). A parent that merely shares the same stdout (the write end it passed down) does
/// not count. The array is copied 16 slots at a time, and each open slot costs one more read
/// (its inode pointer, compared with the pipe's) and a second only for the pipe itself.
#[inline(always)]
pub fn parent_holds(stdout_inode: u64) -> ParentPipe {
    const CHUNKS: usize = monitor_common::PARENT_FDS_SCANNED as usize / PARENT_CHUNK;
    if stdout_inode == 0 {
        return ParentPipe::No;
    }
    let (Some(o_inode), Some(o_files), Some(o_fdt), Some(o_fd), Some(o_max)) = (
        offset(Offset::FileInode),
        offset(Offset::TaskFiles),
        offset(Offset::FilesFdt),
        offset(Offset::FdtFd),
        offset(Offset::FdtMaxFds),
    ) else {
        return ParentPipe::No;
    };
    // SAFETY: the current task pointer as an integer, only ever read through the helper.
    let task = unsafe { bpf_get_current_task() };
    let Some(parent) = offset(Offset::TaskParent).and_then(|o| read_ptr(task, o)) else {
        return ParentPipe::No;
    };
    let Some(fdt) = read_ptr(parent, o_files).and_then(|files| read_ptr(files, o_fdt)) else {
        return ParentPipe::No;
    };
    let Some(fds) = read_ptr(fdt, o_fd) else {
        return ParentPipe::No;
    };
    // SAFETY: as in read_ptr; max_fds is an unsigned int, read from the same table as `fd`, so
    // the two agree even while the parent's table is being replaced by a larger one.
    let Ok(max) = (unsafe { bpf_probe_read_kernel((fdt as usize + o_max) as *const u32) }) else {
        return ParentPipe::No;
    };
    let mut c = 0usize;
    while c < CHUNKS {
        if c * PARENT_CHUNK >= max as usize {
            return ParentPipe::No;
        }
        let at = fds as usize + c * PARENT_CHUNK * 8;
        // SAFETY: as in read_ptr; a file array's size is a multiple of 64 slots (at least the
        // one embedded in `files_struct`), and this chunk starts below it.
        let Ok(table) = (unsafe { bpf_probe_read_kernel(at as *const [u64; PARENT_CHUNK]) }) else {
            return ParentPipe::No;
        };
        let mut i = 0usize;
        while i < PARENT_CHUNK {
            let file = table[i];
            if file != 0 && read_ptr(file, o_inode) == Some(stdout_inode) && readable(file) {
                return ParentPipe::Reads;
            }
            i += 1;
        }
        c += 1;
    }
    ParentPipe::Unknown
}

/// [`parent_holds`] as `OpenEvent::flags` bits (`FEEDS_PARENT`, `PARENT_SCAN_CUT`). The walk
/// costs a read per open descriptor of the parent, and a process that reads a credential again
/// and again through one pipe (a loop, a poller) would pay it at every open, more the more
/// files its parent has open: a parent found holding the pipe (`ino`, its inode number) is
/// remembered in `PARENT_PIPES` for the process. Only that answer is: a parent can take a read
/// end later (reopening `/proc/PID/fd/1`, receiving one over a socket), so "not held" is asked
/// again at the next open, after a decoy read as after any other.
#[inline(always)]
pub fn parent_holds_once(stdout_inode: u64, ino: u64) -> u32 {
    use crate::maps::{PipeKey, PARENT_PIPES};
    let key = PipeKey {
        tgid: (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        ino,
    };
    // SAFETY: the value is copied at once.
    if let Some(&flags) = unsafe { PARENT_PIPES.get(&key) } {
        return flags;
    }
    let flags = match parent_holds(stdout_inode) {
        ParentPipe::No => return 0,
        ParentPipe::Reads => monitor_common::FEEDS_PARENT,
        ParentPipe::Unknown => monitor_common::FEEDS_PARENT | monitor_common::PARENT_SCAN_CUT,
    };
    let _ = PARENT_PIPES.insert(&key, &flags, 0);
    flags
}

/// Whether the current thread's last watched open on this CPU, its side effects done, was of
/// the same file (`ino`): see `maps::LAST_OPEN`.
#[inline(always)]
pub fn repeat_open(ino: u64) -> bool {
    let Some(last) = crate::maps::LAST_OPEN.get_ptr(0) else {
        return false;
    };
    // SAFETY: this CPU's element, read at once; helpers without arguments.
    unsafe {
        (*last).ino == ino
            && (*last).pid_tgid == aya_ebpf::helpers::bpf_get_current_pid_tgid()
            && (*last).task == aya_ebpf::helpers::bpf_get_current_task()
    }
}

/// The current thread's watched open of `ino` has had its side effects: see `repeat_open`.
#[inline(always)]
pub fn note_open(ino: u64) {
    if let Some(last) = crate::maps::LAST_OPEN.get_ptr_mut(0) {
        // SAFETY: this CPU's element, not shared with a program that could preempt this one;
        // helpers without arguments.
        unsafe {
            (*last).pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
            (*last).task = aya_ebpf::helpers::bpf_get_current_task();
            (*last).ino = ino;
        }
    }
}

/// The `struct file *` open on `fd` in `task`.
#[inline(always)]
pub fn fd_file(task: u64, fd: u64) -> Option<u64> {
    let fds = fd_array(task)?;
    read_ptr(fds, (fd as usize & 0xffff) * 8)
}

/// Inode number and device of a `struct inode *` (a file's `f_inode`, from `file_parts`).
#[inline(always)]
pub fn inode_identity(inode: u64) -> Option<(u64, u32)> {
    let ino = read_ptr(inode, offset(Offset::InodeIno)?)?;
    let sb = read_ptr(inode, offset(Offset::InodeSb)?)?;
    // SAFETY: as in read_ptr; s_dev is a u32 (dev_t).
    let dev =
        unsafe { bpf_probe_read_kernel((sb as usize + offset(Offset::SbDev)?) as *const u32) }
            .ok()?;
    Some((ino, dev))
}

/// A `struct path` (vfsmount and dentry) at `at`.
#[inline(always)]
pub fn path_at(at: u64) -> Option<(u64, u64)> {
    let mnt = read_ptr(at, offset(Offset::PathMnt)?)?;
    let dentry = read_ptr(at, offset(Offset::PathDentry)?)?;
    Some((mnt, dentry))
}

/// A file's inode, mount and dentry (`f_inode`, `f_path.mnt`, `f_path.dentry`), in one read
/// when they lie within 64 bytes of each other, as they do in every kernel's `struct file`
/// (one helper call instead of three on every open).
#[inline(always)]
pub fn file_parts(file: u64) -> Option<(u64, u64, u64)> {
    let o_inode = offset(Offset::FileInode)?;
    let o_mnt = offset(Offset::FilePath)? + offset(Offset::PathMnt)?;
    let o_dentry = offset(Offset::FilePath)? + offset(Offset::PathDentry)?;
    let lo = o_inode.min(o_mnt).min(o_dentry);
    let hi = o_inode.max(o_mnt).max(o_dentry);
    // The offsets are constants to the verifier: one of these two ways is pruned at load.
    if hi - lo <= 56 && (o_inode - lo) % 8 == 0 && (o_mnt - lo) % 8 == 0 && (o_dentry - lo) % 8 == 0
    {
        // SAFETY: as in read_ptr; 64 bytes inside the file struct (over 150 bytes long).
        let chunk: [u64; 8] =
            unsafe { bpf_probe_read_kernel((file as usize + lo) as *const [u64; 8]) }.ok()?;
        let inode = chunk[((o_inode - lo) / 8) & 7];
        let mnt = chunk[((o_mnt - lo) / 8) & 7];
        let dentry = chunk[((o_dentry - lo) / 8) & 7];
        return (inode != 0 && dentry != 0).then_some((inode, mnt, dentry));
    }
    Some((
        read_ptr(file, o_inode)?,
        read_ptr(file, o_mnt).unwrap_or(0),
        read_ptr(file, o_dentry)?,
    ))
}

/// A file's `f_path`.
#[inline(always)]
pub fn file_path(file: u64) -> Option<(u64, u64)> {
    path_at(file + offset(Offset::FilePath)? as u64)
}

/// The current task's root directory (`fs->root`) or working directory (`fs->pwd`).
#[inline(always)]
pub fn fs_path(task: u64, which: Offset) -> Option<(u64, u64)> {
    let fs = read_ptr(task, offset(Offset::TaskFs)?)?;
    path_at(fs + offset_dyn(which)? as u64)
}

/// Write the real path of `(mnt, dentry)` into `out` as NUL-terminated components from the leaf
/// up, stopping at the current task's root (or its mount namespace's root), crossing mount
/// points as the kernel's `d_path` does. Returns the bytes written and whether the root was
/// reached (the path is whole).
///
/// # Safety
/// `out` must be valid for `2 * NAMES_CAP` bytes of writes.
#[inline(always)]
pub unsafe fn walk(task: u64, mnt: u64, dentry: u64, out: *mut u8) -> (u32, bool) {
    let (Some(o_parent), Some(o_name), Some(o_qname), Some(o_root), Some(o_mnt)) = (
        offset(Offset::DentryParent),
        offset(Offset::DentryName),
        offset(Offset::QstrName),
        offset(Offset::VfsmountRoot),
        offset(Offset::MountMnt),
    ) else {
        return (0, false);
    };
    let (Some(o_mparent), Some(o_mpoint)) =
        (offset(Offset::MountParent), offset(Offset::MountMountpoint))
    else {
        return (0, false);
    };
    let (root_mnt, root_dentry) = fs_path(task, Offset::FsRoot).unwrap_or((0, 0));
    let mut d = dentry;
    let mut vfsmnt = mnt;
    let mut mount = mnt.wrapping_sub(o_mnt as u64);
    let Some(mut mnt_root) = read_ptr(vfsmnt, o_root) else {
        return (0, false);
    };
    let mut off = 0usize;
    let mut i = 0;
    while i < NAMES_DEPTH {
        i += 1;
        off = launder(off as u64) as usize & (2 * NAMES_CAP - 1);
        if d == root_dentry && vfsmnt == root_mnt {
            return (off as u32, true);
        }
        if d == mnt_root {
            // The top of this mount: go on from where it is mounted.
            let Some(parent) = read_ptr(mount, o_mparent) else {
                break;
            };
            if parent == mount {
                return (off as u32, true);
            }
            let Some(point) = read_ptr(mount, o_mpoint) else {
                break;
            };
            d = point;
            mount = parent;
            vfsmnt = parent + o_mnt as u64;
            match read_ptr(vfsmnt, o_root) {
                Some(r) => mnt_root = r,
                None => break,
            }
            continue;
        }
        let Some(parent) = read_ptr(d, o_parent) else {
            break;
        };
        if parent == d {
            return (off as u32, true);
        }
        let Some(name) = read_ptr(d + o_name as u64, o_qname) else {
            break;
        };
        if off >= NAMES_CAP {
            break;
        }
        // SAFETY: the destination starts below NAMES_CAP and the copy writes at most NAMES_CAP
        // bytes, inside the 2 * NAMES_CAP the caller gives.
        let n = unsafe {
            generated::bpf_probe_read_kernel_str(
                out.add(off & (NAMES_CAP - 1)).cast(),
                NAMES_CAP as u32,
                name as *const core::ffi::c_void,
            )
        };
        if n <= 0 {
            break;
        }
        off += n as usize;
        d = parent;
    }
    ((off & (2 * NAMES_CAP - 1)) as u32, false)
}

/// The current syscall's arguments 1 to 3 (`di`, `si`, `dx` on x86-64), read at its exit from
/// the registers saved at its entry.
#[inline(always)]
pub fn syscall_arg(which: Offset) -> Option<u64> {
    let o = offset_dyn(which)?;
    // SAFETY: the BTF task pointer of the current task, handed straight to the helper that
    // finds its saved user registers.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    if regs == 0 {
        return None;
    }
    // The verifier forbids arithmetic with a runtime offset on a BTF pointer: make it a plain
    // number, which the read helper takes as an address.
    let regs = launder(regs);
    // SAFETY: as in read_ptr.
    unsafe { bpf_probe_read_kernel((regs as usize + o) as *const u64) }.ok()
}

/// `HDR_*` bits about the current task's controlling terminal.
#[inline(always)]
pub fn tty_flags() -> u32 {
    // SAFETY: the current task pointer as an integer, only ever read through the helper.
    let task = unsafe { bpf_get_current_task() };
    let (Some(sig_off), Some(tty_off)) = (offset(Offset::TaskSignal), offset(Offset::SignalTty))
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
