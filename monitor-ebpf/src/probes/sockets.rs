//! The connections a process already has open when it opens a credential file.
//!
//! A client may connect first and read its credential afterwards (ssh reads its key during
//! authentication, a pool refreshes a token on a live connection, a socket is inherited from a
//! parent): when its connect was seen it held nothing, so the connection was not judged. At the
//! first open of each credential file by a process (after its open record is sent), the open's
//! program hands over to `scan_sockets`, which walks the process's file table and sends each
//! TCP connection still open (`ESTABLISHED`, `SYN_SENT`, `CLOSE_WAIT`) and each connected UDP
//! socket as a `ConnectEvent` flagged `HDR_EXISTING`. What the kernel holds in the table is what
//! the process can still use, so a connection closed before the read is not sent, and an
//! inherited one is, whoever made it. Processes that never open a credential pay nothing; one
//! that does pays one map lookup per open and one walk per credential file.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use core::ffi::c_void;

use monitor_common::{
    config::Offset, ConnectEvent, EventKind, LossCause, AF_INET, AF_INET6, EXISTING_FDS_SCANNED,
    EXISTING_SOCKETS_MAX, HDR_EXISTING, IPPROTO_TCP, IPPROTO_UDP,
};

use super::{
    files::{self, offset, read_ptr},
    header,
};
use crate::maps::{count_loss, ScanKey, EVENTS, SCANNED, SCAN_SOCKETS, SOCK_SCRATCH, TAIL};

/// After a successful open of the file with inode number `ino` was sent: hands over to
/// `scan_sockets` the first time this process opens this file. Does not return when it does.
#[inline(always)]
pub fn once(ctx: &TracePointContext, ino: u64) {
    let Some(start) = files::current_process_start() else {
        return;
    };
    let key = ScanKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        ino,
    };
    // SAFETY: the value is copied at once.
    if unsafe { SCANNED.get(&key) }.copied() == Some(start) {
        // Done: the thread's next open of this file skips even this lookup.
        files::note_open(ino);
        return;
    }
    let _ = SCANNED.insert(&key, &start, 0);
    // SAFETY: a tail call with this program's own context (a tracepoint's, as scan_sockets
    // takes); when the slot is empty it returns and the open's program ends as before.
    unsafe { TAIL.tail_call(ctx, SCAN_SOCKETS) };
}

/// Entered only by tail call from an open's program (never attached).
#[tracepoint]
pub fn scan_sockets(_ctx: TracePointContext) -> u32 {
    let _ = scan();
    0
}

#[inline(always)]
fn scan() -> Option<()> {
    let (fds, max) = files::current_fd_table()?;
    let scratch = SOCK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, not shared with a program that could preempt this one.
    let w = unsafe { &mut *scratch };
    w.ev.hdr = header(EventKind::Connect);
    w.ev.hdr.flags = files::tty_flags() | HDR_EXISTING;
    w.ev.stdin_pipe = 0;
    w.fds = fds;
    w.sent = 0;
    w.cut = u32::from(u64::from(max) > EXISTING_FDS_SCANNED);
    let n = u64::from(max).min(EXISTING_FDS_SCANNED) as u32;
    // One slot per iteration, by the kernel's loop: the verifier checks `slot` once, where an
    // unrolled walk over the table is too many paths for it.
    // SAFETY: `slot` is a callback of bpf_loop's type; it takes no context.
    unsafe {
        generated::bpf_loop(n, slot as *mut c_void, core::ptr::null_mut(), 0);
    }
    if w.cut != 0 {
        count_loss(LossCause::ScanCut);
    }
    Some(())
}

/// `bpf_loop`'s callback: file table slot `index`; sends its connection, if any. 1 stops.
/// What it needs across the loop is in this CPU's `SOCK_SCRATCH`.
#[inline(never)]
extern "C" fn slot(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = SOCK_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, as in `scan`.
    let w = unsafe { &mut *scratch };
    let Some(file) = read_ptr(w.fds, (index as usize & 0x3ff) * 8) else {
        return 0;
    };
    let Some(o) = Offsets::get() else {
        return 1;
    };
    if connection(&o, file, &mut w.ev).is_none() {
        return 0;
    }
    if w.sent >= EXISTING_SOCKETS_MAX {
        w.cut = 1;
        return 1;
    }
    send(&w.ev);
    w.sent += 1;
    0
}

/// The offsets a socket is read at.
struct Offsets {
    inode: usize,
    mode: usize,
    private: usize,
    sk: usize,
    family: usize,
    state: usize,
    protocol: usize,
    dport: usize,
    num: usize,
    daddr: usize,
    saddr: usize,
    daddr6: usize,
    saddr6: usize,
}

impl Offsets {
    #[inline(always)]
    fn get() -> Option<Self> {
        Some(Self {
            inode: offset(Offset::FileInode)?,
            mode: offset(Offset::InodeMode)?,
            private: offset(Offset::FilePrivateData)?,
            sk: offset(Offset::SocketSk)?,
            family: offset(Offset::SkcFamily)?,
            state: offset(Offset::SkcState)?,
            protocol: offset(Offset::SkProtocol)?,
            dport: offset(Offset::SkcDport)?,
            num: offset(Offset::SkcNum)?,
            daddr: offset(Offset::SkcDaddr)?,
            saddr: offset(Offset::SkcRcvSaddr)?,
            daddr6: offset(Offset::SkcV6Daddr)?,
            saddr6: offset(Offset::SkcV6RcvSaddr)?,
        })
    }
}

/// Copy `len` bytes of kernel memory at `src` to `dst`; whether it could.
#[inline(always)]
fn read_into(dst: *mut u8, len: usize, src: u64) -> bool {
    // SAFETY: callers pass a destination valid for `len` bytes; the helper checks the source
    // and returns an error instead of faulting.
    unsafe { generated::bpf_probe_read_kernel(dst.cast(), len as u32, src as *const c_void) == 0 }
}

/// A `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: usize) -> Option<T> {
    // SAFETY: the helper checks the address and returns an error instead of faulting.
    unsafe { bpf_probe_read_kernel((base as usize + off) as *const T) }.ok()
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_CLOSE_WAIT: u8 = 8;

/// The connection open on `file`, written into `ev` (all but its header), when it is an IPv4
/// or IPv6 TCP connection still open or a connected UDP socket.
#[inline(always)]
fn connection(o: &Offsets, file: u64, ev: &mut ConnectEvent) -> Option<()> {
    const S_IFMT: u16 = 0o170000;
    const S_IFSOCK: u16 = 0o140000;
    let inode = read_ptr(file, o.inode)?;
    if read::<u16>(inode, o.mode)? & S_IFMT != S_IFSOCK {
        return None;
    }
    let sock = read_ptr(file, o.private)?;
    let sk = read_ptr(sock, o.sk)?;
    let family: u16 = read(sk, o.family)?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let state: u8 = read(sk, o.state)?;
    let proto: u16 = read(sk, o.protocol)?;
    let open = match proto {
        IPPROTO_TCP => state == TCP_ESTABLISHED || state == TCP_SYN_SENT || state == TCP_CLOSE_WAIT,
        // A connected datagram socket is `TCP_ESTABLISHED` too; an unconnected one has no peer.
        IPPROTO_UDP => state == TCP_ESTABLISHED,
        _ => false,
    };
    if !open {
        return None;
    }
    // Straight into the record: copies through the stack would not fit it once unrolled.
    let (d, s, n) = if family == AF_INET {
        ev.daddr = [0; 16];
        ev.saddr = [0; 16];
        (o.daddr, o.saddr, 4)
    } else {
        (o.daddr6, o.saddr6, 16)
    };
    let da = ev.daddr.as_mut_ptr();
    let sa = ev.saddr.as_mut_ptr();
    if !read_into(da, n, sk + d as u64) || !read_into(sa, n, sk + s as u64) {
        return None;
    }
    ev.family = family;
    ev.proto = proto;
    ev.sport = read(sk, o.num)?;
    ev.dport = u16::from_be(read(sk, o.dport)?);
    ev.netns = super::netns::as_used(super::netns::of_sock(sk));
    Some(())
}

#[inline(always)]
fn send(conn: &ConnectEvent) {
    let size = core::mem::size_of::<ConnectEvent>() as u64;
    if EVENTS
        .output::<ConnectEvent>(conn, crate::maps::wakeup_before(size))
        .is_err()
    {
        count_loss(LossCause::RingbufConnect);
    }
}
