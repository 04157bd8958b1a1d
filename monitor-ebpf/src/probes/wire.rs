//! The first bytes a holder's TCP connection sends, for the daemon to read the API it talks to
//! (a TLS ClientHello's server name, an HTTP/1.x request line).
//!
//! Marking: the cgroup `connect4`/`connect6` programs (`probes::connect`), which run at every
//! `connect()` of a TCP socket in the caller's context, look the caller up in `HOLDERS` (one
//! map lookup: all a non-holder's connection costs) and mark a member's socket with socket
//! storage (`WIRE_MARKS`): the mark is part of the socket, so it dies with it and can never be
//! taken for another connection, whatever addresses the kernel reuses. Why there and not in
//! `sock:inet_sock_set_state`: a tracepoint program has no socket it may attach storage to.
//!
//! Reading: a `cgroup_skb/egress` program on the root cgroup sees every packet the host sends;
//! an unmarked socket's packet costs the socket's storage lookup (a pointer on the socket, no
//! hash), a marked one's packet without payload (SYN, ACK) that plus its headers' lengths, and
//! the first packet with a payload is copied (at most `WIRE_CAP` bytes, by
//! `bpf_skb_load_bytes`) and unmarks the socket: once per connection. The program never drops
//! a packet.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated},
    macros::cgroup_skb,
    programs::{SkBuffContext, SockAddrContext},
};
use monitor_common::{
    config::{self, Offset},
    EventKind, LossCause, RequestEvent, AF_INET, AF_INET6, HOLDER_BY_KERNEL, IPPROTO_TCP, WIRE_CAP,
};

use super::header;
use crate::maps::{count_loss, CONFIG, EVENTS, HOLDERS, WIRE_MARKS};

/// Mark the TCP socket a cgroup `connect4/6` program sees, when its caller is a holder (or
/// every caller, by the daemon's setting).
#[inline(always)]
pub fn mark(ctx: &SockAddrContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let flags = CONFIG.get(config::FLAGS).copied().unwrap_or(0);
    if flags & config::FLAG_ALL_CONNECTIONS == 0 {
        // SAFETY: only whether the entry exists is read.
        if unsafe { HOLDERS.get(&tgid) }.is_none() {
            return;
        }
    } else if u64::from(tgid) == CONFIG.get(config::SELF_PID).copied().unwrap_or(0) {
        // The daemon's own connections (ClickHouse) are not read.
        return;
    }
    let mut hdr = header(EventKind::Request);
    hdr.flags = super::files::tty_flags();
    // SAFETY: the helper reads the context's socket, which the verifier checks; `hdr` is
    // copied into the new storage. A socket whose storage cannot be made is not marked.
    let _ = unsafe { WIRE_MARKS.get_or_insert_ptr_mut(ctx, Some(&mut hdr)) };
}

/// The current task (`task`) opened a registered credential's inode: it joins the holder set,
/// so that its next connection is marked before the daemon has even seen the open; and with
/// `FEEDS_PARENT` in `flags` (`TOKEN=$(cat file)`) its parent too, which forks the program that
/// uses the secret at once. Not inlined: the open doors' programs are near the verifier's limit,
/// and one call after the record is sent adds the fewest states.
#[inline(never)]
pub fn opened_credential(task: u64, flags: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    add_holder(tgid);
    if flags & monitor_common::FEEDS_PARENT != 0 {
        add_parent_holder(task);
    }
}

/// Add `tgid` to the holder set, unless it is there already (the daemon's mark stays). Looked
/// up first: a lookup takes no lock, where an insert that finds the entry takes the bucket's,
/// and a holder reads its credential again and again.
#[inline(always)]
pub fn add_holder(tgid: u32) {
    const BPF_NOEXIST: u64 = 1;
    const EEXIST: i32 = -17;
    // SAFETY: only whether the entry exists is read.
    if unsafe { HOLDERS.get(&tgid) }.is_some() {
        return;
    }
    if let Err(e) = HOLDERS.insert(&tgid, &HOLDER_BY_KERNEL, BPF_NOEXIST) {
        if e != EEXIST {
            count_loss(LossCause::HolderSetFull);
        }
    }
}

/// Add the parent of `task` (the current task) to the holder set: it reads what the current
/// one writes (see `files::parent_holds`).
#[inline(always)]
pub fn add_parent_holder(task: u64) {
    let (Some(o_parent), Some(o_tgid)) = (
        super::files::offset(Offset::TaskParent),
        super::files::offset(Offset::TaskTgid),
    ) else {
        return;
    };
    let Some(parent) = super::files::read_ptr(task, o_parent) else {
        return;
    };
    // SAFETY: kernel memory through the helper; pid_t is an i32.
    if let Ok(tgid) = unsafe { bpf_probe_read_kernel((parent as usize + o_tgid) as *const i32) } {
        if tgid > 1 {
            add_holder(tgid as u32);
        }
    }
}

/// A new process (`child`) of the current one: a member's child is a member.
#[inline(always)]
pub fn fork(child: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: only whether the entry exists is read.
    if unsafe { HOLDERS.get(&tgid) }.is_some() {
        add_holder(child);
    }
}

/// The end of process `tgid`: it leaves the set.
#[inline(always)]
pub fn exit(tgid: u32) {
    // Looked up first: a delete takes the bucket's lock even for a pid that is not there, and
    // almost no exiting process is a holder.
    // SAFETY: only whether the entry exists is read.
    if unsafe { HOLDERS.get(&tgid) }.is_some() {
        let _ = HOLDERS.remove(&tgid);
    }
}

const IPPROTO_TCP_U8: u8 = IPPROTO_TCP as u8;

#[cgroup_skb(egress)]
pub fn wire_egress(ctx: SkBuffContext) -> i32 {
    let _ = first_bytes(&ctx);
    // 1: let the packet go.
    1
}

#[inline(always)]
fn first_bytes(ctx: &SkBuffContext) -> Option<()> {
    let marks = core::ptr::addr_of!(WIRE_MARKS) as *mut core::ffi::c_void;
    // SAFETY: `sk` of the program's own context (checked by the verifier, may be null), made
    // a full socket by the helper; the storage helper reads the socket's storage list.
    let (sk, mark) = unsafe {
        let sk = (*ctx.skb.skb).__bindgen_anon_2.sk;
        if sk.is_null() {
            return None;
        }
        let sk = generated::bpf_sk_fullsock(sk);
        if sk.is_null() {
            return None;
        }
        let mark = generated::bpf_sk_storage_get(marks, sk.cast(), core::ptr::null_mut(), 0)
            .cast::<monitor_common::EventHeader>();
        (sk, mark)
    };
    if mark.is_null() {
        return None;
    }
    // SAFETY: the storage the helper returned, valid for this program's run.
    let mut hdr = unsafe { *mark };
    // The packet starts at its IP header.
    let first: u8 = ctx.load(0).ok()?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    let (family, ip_len) = match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            if proto != IPPROTO_TCP_U8 {
                return None;
            }
            let s: [u8; 4] = ctx.load(12).ok()?;
            let d: [u8; 4] = ctx.load(16).ok()?;
            saddr[..4].copy_from_slice(&s);
            daddr[..4].copy_from_slice(&d);
            (AF_INET, u32::from(first & 0x0f) * 4)
        }
        6 => {
            // A TCP segment right after the fixed header: extension headers are not sent on
            // a connection's packets by this host's stack.
            let next: u8 = ctx.load(6).ok()?;
            if next != IPPROTO_TCP_U8 {
                return None;
            }
            saddr = ctx.load(8).ok()?;
            daddr = ctx.load(24).ok()?;
            (AF_INET6, 40)
        }
        _ => return None,
    };
    let ports: [u8; 4] = ctx.load(ip_len as usize).ok()?;
    let off: u8 = ctx.load(ip_len as usize + 12).ok()?;
    let start = ip_len + u32::from(off >> 4) * 4;
    let payload = ctx.len().checked_sub(start)?;
    if payload == 0 {
        return None;
    }
    // Once per connection, whether or not the record can be sent.
    // SAFETY: the full socket the storage was found on.
    let _ = unsafe { generated::bpf_sk_storage_delete(marks, sk.cast()) };
    // SAFETY: a helper without arguments.
    hdr.ts_ns = unsafe { generated::bpf_ktime_get_boot_ns() };
    hdr.kind = EventKind::Request as u32;
    let Some(mut slot) = EVENTS.reserve::<RequestEvent>(0) else {
        count_loss(LossCause::RingbufRequest);
        return None;
    };
    let ev = slot.as_mut_ptr();
    let n = if payload > WIRE_CAP as u32 {
        WIRE_CAP as u32
    } else {
        payload
    };
    // The same value (1 to WIRE_CAP, `payload` is not 0), in a form the verifier can bound
    // from below too: the helper refuses a length it cannot prove is above 0. Through a
    // volatile stack slot, or the compiler folds the mask back into a `min` the verifier
    // cannot bound from below.
    const _: () = assert!(WIRE_CAP.is_power_of_two());
    let mut slot_n = n;
    // SAFETY: a local variable, written and read back.
    let n = unsafe {
        core::ptr::write_volatile(&mut slot_n, n);
        core::ptr::read_volatile(&slot_n)
    };
    let n = ((n.wrapping_sub(1)) & (WIRE_CAP as u32 - 1)) + 1;
    // SAFETY: `ev` points at the reserved record; every field but the bytes of `data` past
    // `len` is written before submit (the daemon reads `data[..len]` only).
    unsafe {
        (*ev).hdr = hdr;
        (*ev).family = family;
        (*ev).sport = u16::from_be_bytes([ports[0], ports[1]]);
        (*ev).dport = u16::from_be_bytes([ports[2], ports[3]]);
        (*ev).proto = IPPROTO_TCP;
        (*ev).saddr = saddr;
        (*ev).daddr = daddr;
        (*ev).payload_len = payload;
        let data = core::ptr::addr_of_mut!((*ev).data).cast::<core::ffi::c_void>();
        let copied = generated::bpf_skb_load_bytes(ctx.skb.skb.cast(), start, data, n);
        (*ev).len = if copied == 0 { n } else { 0 };
    }
    slot.submit(crate::maps::wakeup::<RequestEvent>());
    Some(())
}
