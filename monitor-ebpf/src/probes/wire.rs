//! The first bytes a holder's TCP connection sends, for the daemon to read the API it talks to
//! (a TLS ClientHello's server name, an HTTP/1.x request line).
//!
//! Marking: the cgroup `connect4`/`connect6` programs (`probes::connect`), which run at every
//! `connect()` of a TCP socket in the caller's context, look the caller up in `HOLDERS` (one
//! map lookup: all a non-holder's connection costs) and mark a member's socket with socket
//! storage (`WIRE_MARKS`): the mark is part of the socket, so it dies with it and can never be
//! taken for another connection, whatever addresses the kernel reuses. The mark also keeps the
//! socket's network namespace as the connecting process used it (0, which no DNS name is known
//! in, when the process is in another: `probes::netns::as_used`), read once at `connect` for
//! all of its records. Why there and not in
//! `sock:inet_sock_set_state`: a tracepoint program has no socket it may attach storage to.
//!
//! Reading: a `cgroup_skb/egress` program on the root cgroup sees every packet the host sends;
//! an unmarked socket's packet costs the socket's storage lookup (a pointer on the socket, no
//! hash), a marked one's packet without payload (SYN, ACK) that plus its headers' lengths, and
//! each packet with a payload is copied (by `bpf_skb_load_bytes`, one record each) until the
//! connection's budget is spent: `WIRE_CAP` bytes over at most `WIRE_CHUNKS` packets, or a
//! whole TLS ClientHello when the first packet starts one, or a packet that ends an HTTP
//! request head (`\r\n\r\n`). Then the socket is unmarked. A sender cannot hide the bytes
//! that matter behind a decoy of a few bytes: the daemon joins the pieces up by the socket's
//! cookie and their sequence numbers. IPv6 extension headers are walked (hop-by-hop, routing,
//! destination options, authentication; four at most); a packet whose TCP header is still not
//! found (a fragment) ends the copy with an empty record flagged `WIRE_UNREADABLE`, which the
//! daemon judges as bytes it could not read. A UDP socket's packet goes to `probes::dns`
//! instead (DNS queries). The program never drops a packet.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated},
    macros::cgroup_skb,
    programs::{SkBuffContext, SockAddrContext},
};
use monitor_common::{
    config::{self, Offset},
    EventKind, LossCause, RequestEvent, AF_INET, AF_INET6, HOLDER_BY_KERNEL, IPPROTO_TCP, WIRE_CAP,
    WIRE_CHUNKS, WIRE_LAST, WIRE_UNREADABLE,
};

use super::header;
use crate::maps::{count_loss, WireMark, CONFIG, EVENTS, HOLDERS, WIRE_MARKS};

/// Mark the TCP socket a cgroup `connect4/6` program sees, when its caller is a holder (or
/// every caller, by the daemon's setting or while the holder set is full).
#[inline(always)]
pub fn mark(ctx: &SockAddrContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let flags = CONFIG.get(config::FLAGS).copied().unwrap_or(0);
    let full = CONFIG.get(config::HOLDERS_FULL).copied().unwrap_or(0);
    if flags & config::FLAG_ALL_CONNECTIONS == 0 && full == 0 {
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
    let mut mark = WireMark {
        hdr,
        sent: 0,
        budget: 0,
        chunks: 0,
        _pad: 0,
        // SAFETY: the program's own context, as the helper takes it.
        netns: super::netns::as_used(unsafe {
            generated::bpf_get_netns_cookie(ctx.sock_addr.cast())
        }),
    };
    // SAFETY: the helper reads the context's socket, which the verifier checks; `mark` is
    // copied into the new storage. A socket whose storage cannot be made is not marked.
    let p = unsafe { WIRE_MARKS.get_or_insert_ptr_mut(ctx, Some(&mut mark)) };
    if !p.is_null() {
        // A socket connected again (after `connect(AF_UNSPEC)`) keeps its storage: its new
        // connection's first bytes are read from the start, as a new one's.
        // SAFETY: the socket's storage the helper returned, valid for this program's run.
        unsafe { *p = mark };
    }
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
            // Every connection is marked until the daemon finds room again: filling the set
            // must not hide a holder.
            if let Some(slot) = CONFIG.get_ptr_mut(config::HOLDERS_FULL) {
                // SAFETY: an element of an array map, valid for this program's run.
                unsafe { *slot = 1 };
            }
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
const IPPROTO_UDP_U8: u8 = 17;
const TCP_SYN: u8 = 0x02;
const TCP_URG: u8 = 0x20;

#[cgroup_skb(egress)]
pub fn wire_egress(ctx: SkBuffContext) -> i32 {
    let _ = first_bytes(&ctx);
    // 1: let the packet go.
    1
}

/// Where a packet's TCP segment starts, behind its IP header (and IPv6 extension headers).
struct Ip {
    family: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
    /// Offset of the TCP header; `None`: not found.
    tcp: Option<u32>,
}

/// IPv6 extension headers walked at most before the TCP header.
const IPV6_EXT_MAX: usize = 4;

#[inline(always)]
fn ip_header(ctx: &SkBuffContext) -> Option<Ip> {
    let first: u8 = ctx.load(0).ok()?;
    let mut ip = Ip {
        family: AF_INET,
        saddr: [0; 16],
        daddr: [0; 16],
        tcp: None,
    };
    match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            let s: [u8; 4] = ctx.load(12).ok()?;
            let d: [u8; 4] = ctx.load(16).ok()?;
            ip.saddr[..4].copy_from_slice(&s);
            ip.daddr[..4].copy_from_slice(&d);
            if proto == IPPROTO_TCP_U8 {
                ip.tcp = Some(u32::from(first & 0x0f) * 4);
            }
        }
        6 => {
            ip.family = AF_INET6;
            ip.saddr = ctx.load(8).ok()?;
            ip.daddr = ctx.load(24).ok()?;
            let mut next: u8 = ctx.load(6).ok()?;
            let mut at: u32 = 40;
            for _ in 0..IPV6_EXT_MAX {
                if next == IPPROTO_TCP_U8 {
                    break;
                }
                let ext: [u8; 2] = ctx.load(at as usize).ok()?;
                let len = match next {
                    // hop-by-hop, routing, destination options: 8-byte units after the first 8.
                    0 | 43 | 60 => (u32::from(ext[1]) + 1) * 8,
                    // authentication header: 4-byte units, less 2.
                    51 => (u32::from(ext[1]) + 2) * 4,
                    // a fragment, or anything else: the TCP header is not to be found.
                    _ => break,
                };
                next = ext[0];
                at += len;
            }
            if next == IPPROTO_TCP_U8 {
                ip.tcp = Some(at);
            }
        }
        _ => return None,
    }
    Some(ip)
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
        // UDP: a DNS query, maybe (TCP sockets alone are marked).
        if (*sk).protocol == u32::from(IPPROTO_UDP_U8) {
            return super::dns::packet(ctx, true);
        }
        let mark = generated::bpf_sk_storage_get(marks, sk.cast(), core::ptr::null_mut(), 0)
            .cast::<WireMark>();
        (sk, mark)
    };
    if mark.is_null() {
        return None;
    }
    let mut ip = ip_header(ctx)?;
    // Urgent data (`MSG_OOB`) is taken out of the stream the server reads: bytes copied around
    // it would not be what the server acts on, so such a connection cannot be read.
    if let Some(tcp) = ip.tcp {
        let flags: u8 = ctx.load(tcp as usize + 13).ok()?;
        if flags & TCP_URG != 0 {
            ip.tcp = None;
        }
    }
    // SAFETY: the storage the helper returned, valid for this program's run; the socket's
    // packets leave one at a time (under its lock), so nothing else writes it meanwhile.
    let m = unsafe { &mut *mark };
    let mut hdr = m.hdr;
    let netns = m.netns;
    // SAFETY: a helper without arguments.
    hdr.ts_ns = unsafe { generated::bpf_ktime_get_boot_ns() };
    hdr.kind = EventKind::Request as u32;
    let Some(tcp) = ip.tcp else {
        // The rest of the connection cannot be read either: say so once, with the socket's
        // own ports, and stop.
        // SAFETY: the full socket the storage was found on; its fields are read as the
        // verifier allows (`struct bpf_sock`).
        let (sport, dport) = unsafe { ((*sk).src_port as u16, u16::from_be((*sk).dst_port)) };
        // SAFETY: the full socket the storage was found on.
        let _ = unsafe { generated::bpf_sk_storage_delete(marks, sk.cast()) };
        let Some(mut slot) = EVENTS.reserve::<RequestEvent>(0) else {
            count_loss(LossCause::RingbufRequest);
            return None;
        };
        let ev = slot.as_mut_ptr();
        // SAFETY: `ev` points at the reserved record; every field but `data` is written, and
        // `len` is 0 (the daemon reads `data[..len]` only).
        unsafe {
            (*ev).hdr = hdr;
            (*ev).family = ip.family;
            (*ev).sport = sport;
            (*ev).dport = dport;
            (*ev).proto = IPPROTO_TCP;
            (*ev).saddr = ip.saddr;
            (*ev).daddr = ip.daddr;
            (*ev).len = 0;
            (*ev).payload_len = 0;
            (*ev).seq = 0;
            (*ev).chunk = 0;
            (*ev).flags = WIRE_LAST | WIRE_UNREADABLE;
            (*ev).cookie = generated::bpf_get_socket_cookie(ctx.skb.skb.cast());
            (*ev).netns = netns;
        }
        slot.submit(crate::maps::wakeup::<RequestEvent>());
        return Some(());
    };
    let ports: [u8; 4] = ctx.load(tcp as usize).ok()?;
    let seq: [u8; 4] = ctx.load(tcp as usize + 4).ok()?;
    let off: u8 = ctx.load(tcp as usize + 12).ok()?;
    let tcp_flags: u8 = ctx.load(tcp as usize + 13).ok()?;
    // A SYN's data (TCP Fast Open) starts one past its sequence number.
    let seq = u32::from_be_bytes(seq).wrapping_add(u32::from(tcp_flags & TCP_SYN != 0));
    let start = tcp + u32::from(off >> 4) * 4;
    let payload = ctx.len().checked_sub(start)?;
    if payload == 0 {
        return None;
    }
    if m.chunks == 0 {
        m.budget = budget(ctx, start, payload);
    }
    let room = m.budget.saturating_sub(m.sent);
    let n = if payload > room { room } else { payload };
    let chunk = m.chunks;
    m.sent += n;
    m.chunks += 1;
    let mut flags = 0;
    if m.sent >= m.budget || m.chunks >= WIRE_CHUNKS || ends_head(ctx, payload) {
        flags = WIRE_LAST;
        // SAFETY: the full socket the storage was found on; `m` is not used after this.
        let _ = unsafe { generated::bpf_sk_storage_delete(marks, sk.cast()) };
    }
    if n == 0 {
        return None;
    }
    let Some(mut slot) = EVENTS.reserve::<RequestEvent>(0) else {
        count_loss(LossCause::RingbufRequest);
        return None;
    };
    let ev = slot.as_mut_ptr();
    // The same value (`n` is not 0), as the verifier can bound it.
    let n = super::copy_len::<{ WIRE_CAP as u32 }>(n);
    // SAFETY: `ev` points at the reserved record; every field but the bytes of `data` past
    // `len` is written before submit (the daemon reads `data[..len]` only).
    unsafe {
        (*ev).hdr = hdr;
        (*ev).family = ip.family;
        (*ev).sport = u16::from_be_bytes([ports[0], ports[1]]);
        (*ev).dport = u16::from_be_bytes([ports[2], ports[3]]);
        (*ev).proto = IPPROTO_TCP;
        (*ev).saddr = ip.saddr;
        (*ev).daddr = ip.daddr;
        (*ev).payload_len = payload;
        (*ev).seq = seq;
        (*ev).chunk = chunk as u16;
        (*ev).flags = flags;
        (*ev).cookie = generated::bpf_get_socket_cookie(ctx.skb.skb.cast());
        (*ev).netns = netns;
        let data = core::ptr::addr_of_mut!((*ev).data).cast::<core::ffi::c_void>();
        let copied = generated::bpf_skb_load_bytes(ctx.skb.skb.cast(), start, data, n);
        (*ev).len = if copied == 0 { n } else { 0 };
    }
    slot.submit(crate::maps::wakeup::<RequestEvent>());
    Some(())
}

/// Bytes of a connection to copy in all, from its first packet with a payload (`payload` bytes
/// from `start`): a TLS record that holds a whole ClientHello is copied to its end and no
/// further; anything else up to `WIRE_CAP`.
#[inline(always)]
fn budget(ctx: &SkBuffContext, start: u32, payload: u32) -> u32 {
    if payload >= 9 {
        if let Ok(h) = ctx.load::<[u8; 9]>(start as usize) {
            let record = u32::from(u16::from_be_bytes([h[3], h[4]]));
            let hello = u32::from_be_bytes([0, h[6], h[7], h[8]]);
            // Handshake record, ClientHello, the whole message in this record.
            if h[0] == 0x16 && h[5] == 1 && hello + 4 == record && record + 5 < WIRE_CAP as u32 {
                return record + 5;
            }
        }
    }
    WIRE_CAP as u32
}

/// Whether a packet's payload (`payload` bytes, the packet's last) ends with the blank line
/// that ends an HTTP request head: what comes after is a body or the next request.
#[inline(always)]
fn ends_head(ctx: &SkBuffContext, payload: u32) -> bool {
    payload >= 4
        && ctx
            .load::<[u8; 4]>(ctx.len() as usize - 4)
            .is_ok_and(|t| t == *b"\r\n\r\n")
}
