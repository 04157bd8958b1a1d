//! DNS packets, as local sockets send and receive them: the queries to port 53 (in
//! `wire::wire_egress`, which sees every packet the host sends) and the answers from port 53
//! (`dns_ingress`, a `cgroup_skb` ingress program on the root cgroup, which sees every packet
//! delivered to a socket), copied whole (at most `DNS_CAP` bytes from the IP header) to a ring
//! buffer of their own (`DNS_EVENTS`), so that a flood of them costs no other record.
//!
//! Why not a packet socket: a packet socket on every interface makes the kernel clone each
//! packet the host sends or receives to run its filter, which slowed loopback TCP ping-pong by
//! about 10% here; these programs read two or three bytes of a packet that is not UDP. They
//! see what the host's own sockets (in any container) send and receive, not traffic it forwards.
//! Each record carries its socket's network namespace, the interface the packet went by and,
//! for a query (sent in its sender's context), whether the host's user namespace owns that
//! namespace (`DNS_UNTRUSTED_NS` when not, or when it cannot be told): the daemon believes an
//! answer only when it matches a query seen leaving the same namespace by the same interface,
//! for one of the host's resolvers (`sense/dns`).

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP, helpers::generated, macros::cgroup_skb, programs::SkBuffContext,
};
use monitor_common::{DnsRecord, LossCause, DNS_CAP, DNS_OUTGOING, DNS_UNTRUSTED_NS};

use crate::maps::{count_loss, DNS_EVENTS};

const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    let _ = packet(&ctx, false);
    // 1: let the packet in.
    1
}

/// A packet (`ctx`, from its IP header) the host sends (`outgoing`) or receives: when it is a
/// UDP datagram to port 53 (sent) or from it (received), a copy goes to `DNS_EVENTS`.
#[inline(always)]
pub fn packet(ctx: &SkBuffContext, outgoing: bool) -> Option<()> {
    // The version and protocol bytes straight from the packet (the IP header is in its linear
    // part): the program runs for every packet the host receives, and a helper call per byte
    // cost more than the rest of it.
    // SAFETY: fields of the program's own context, as the verifier lets it read them.
    let (data, end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    if data + 10 > end {
        return None;
    }
    // SAFETY: within [data, data + 10), checked against `end` just above.
    let (first, v4_proto, v6_next) = unsafe {
        let p = data as *const u8;
        (*p, *p.add(9), *p.add(6))
    };
    let udp = match first >> 4 {
        4 => {
            if v4_proto != IPPROTO_UDP {
                return None;
            }
            // A later fragment has no UDP header (the host reassembles before delivering).
            let frag: [u8; 2] = ctx.load(6).ok()?;
            if u16::from_be_bytes(frag) & 0x1fff != 0 {
                return None;
            }
            usize::from(first & 0x0f) * 4
        }
        6 => {
            // Extension headers are not walked: a DNS client does not send them.
            if v6_next != IPPROTO_UDP {
                return None;
            }
            40
        }
        _ => return None,
    };
    let ports: [u8; 4] = ctx.load(udp).ok()?;
    let port = if outgoing {
        u16::from_be_bytes([ports[2], ports[3]])
    } else {
        u16::from_be_bytes([ports[0], ports[1]])
    };
    if port != DNS_PORT {
        return None;
    }
    let Some(mut slot) = DNS_EVENTS.reserve::<DnsRecord>(0) else {
        count_loss(LossCause::RingbufDns);
        return None;
    };
    let len = ctx.len();
    let n = if len > DNS_CAP as u32 {
        DNS_CAP as u32
    } else {
        len
    };
    let n = super::copy_len::<{ DNS_CAP as u32 }>(n);
    let rec = slot.as_mut_ptr();
    // SAFETY: `rec` points at the reserved record; `len` and `flags` are written, and `data`
    // up to `len` (the daemon reads no further).
    unsafe {
        let data = core::ptr::addr_of_mut!((*rec).data).cast::<core::ffi::c_void>();
        let copied = generated::bpf_skb_load_bytes(ctx.skb.skb.cast(), 0, data, n);
        (*rec).len = if copied == 0 { n } else { 0 };
        let netns = super::netns::of_skb(ctx);
        (*rec).netns = netns;
        (*rec).ifindex = (*ctx.skb.skb).ifindex;
        (*rec)._pad = 0;
        // A query is sent in its sender's context: whether the host's user namespace owns
        // its namespace is checked there (its answer is believed only then).
        (*rec).flags = match outgoing {
            true if super::netns::current_is_hosts(netns) => DNS_OUTGOING,
            true => DNS_OUTGOING | DNS_UNTRUSTED_NS,
            false => 0,
        };
    }
    // The daemon reads this ring before the events' at each turn, woken by those: an answer is
    // written before the connection that uses it.
    slot.submit(u64::from(BPF_RB_NO_WAKEUP));
    Some(())
}
