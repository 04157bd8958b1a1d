//! Outbound connections. TCP: the state change into SYN_SENT, which `connect()` makes in the
//! caller's context (so the current task is the connecting process). UDP: cgroup `connect4/6`
//! and `sendmsg4/6` programs on the root cgroup see every destination a datagram socket is
//! connected or sent to, in the sender's context; a process's datagrams to one destination are
//! reported once per `UDP_INTERVAL_NS` (an LRU map remembers when), not once per packet. The
//! same `connect4/6` programs mark a holder's TCP sockets for their first bytes (`probes::wire`).
//! Every record carries its socket's network namespace, or 0 when the process using the socket
//! is in another one (`probes::netns::as_used`): the daemon looks DNS names up there.

use aya_ebpf::{
    helpers::generated,
    macros::{cgroup_sock_addr, tracepoint},
    programs::{SockAddrContext, TracePointContext},
};
use monitor_common::{
    ConnectEvent, EventKind, LossCause, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP,
    UDP_INTERVAL_NS,
};

use super::{arg, files, header, netns};
use crate::maps::{count_loss, UdpKey, EVENTS, UDP_SEEN};

const TCP_SYN_SENT: i32 = 2;

/// sock/inet_sock_set_state: skaddr at 8, newstate at 20, sport 24, dport 26, family 28, protocol 30,
/// saddr 32, daddr 36, saddr_v6 40, daddr_v6 56 (ports in host order).
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let newstate: i32 = arg(&ctx, 20);
    let protocol: u16 = arg(&ctx, 30);
    if newstate != TCP_SYN_SENT || protocol != IPPROTO_TCP {
        return 0;
    }
    let family: u16 = arg(&ctx, 28);
    // Whole-word context loads at constant offsets: the verifier refuses loads through a
    // context pointer that was moved, which a byte-array copy would need.
    let (saddr, daddr) = if family == AF_INET {
        (v4(arg::<u32>(&ctx, 32)), v4(arg::<u32>(&ctx, 36)))
    } else if family == AF_INET6 {
        (
            v6(arg::<u64>(&ctx, 40), arg::<u64>(&ctx, 48)),
            v6(arg::<u64>(&ctx, 56), arg::<u64>(&ctx, 64)),
        )
    } else {
        return 0;
    };
    match EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut slot) => {
            let mut hdr = header(EventKind::Connect);
            hdr.flags = super::files::tty_flags();
            slot.write(ConnectEvent {
                hdr,
                family,
                sport: arg(&ctx, 24),
                dport: arg(&ctx, 26),
                proto: IPPROTO_TCP,
                saddr,
                daddr,
                stdin_pipe: files::stdin_pipe(),
                netns: netns::as_used(netns::of_sock(arg::<u64>(&ctx, 8))),
            });
            slot.submit(crate::maps::wakeup::<ConnectEvent>());
        }
        None => count_loss(LossCause::RingbufConnect),
    }
    0
}

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

/// One `u32` of `struct bpf_sock_addr` at a constant offset: a direct context load (the
/// verifier refuses loads through a moved context pointer).
#[inline(always)]
fn sa(ctx: &SockAddrContext, offset: usize) -> u32 {
    // SAFETY: `offset` is a field of bpf_sock_addr (uapi/linux/bpf.h), checked by the verifier.
    unsafe { core::ptr::read_volatile(ctx.sock_addr.cast::<u8>().add(offset).cast::<u32>()) }
}

/// A UDP destination given to `connect` or `sendto`/`sendmsg`. Always allows the call. `V6`:
/// a `*6` program, the only kind that may read `user_ip6`.
#[inline(always)]
fn udp<const V6: bool>(ctx: &SockAddrContext) {
    // bpf_sock_addr: user_family 0, user_ip4 4, user_ip6 8..24, user_port 24, family 28,
    // type 32, protocol 36.
    if sa(ctx, 32) == SOCK_STREAM {
        // A TCP connect: marked for its first bytes when the caller is a holder.
        super::wire::mark(ctx);
        return;
    }
    if sa(ctx, 32) != SOCK_DGRAM || sa(ctx, 36) != u32::from(IPPROTO_UDP) {
        return;
    }
    let family = sa(ctx, 0) as u16;
    let daddr = if !V6 && family == AF_INET {
        v4(sa(ctx, 4))
    } else if V6 && family == AF_INET6 {
        let (a, b1, c, d) = (
            sa(ctx, 8).to_ne_bytes(),
            sa(ctx, 12).to_ne_bytes(),
            sa(ctx, 16).to_ne_bytes(),
            sa(ctx, 20).to_ne_bytes(),
        );
        [
            a[0], a[1], a[2], a[3], b1[0], b1[1], b1[2], b1[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    } else {
        return;
    };
    // user_port: network byte order in the low 16 bits.
    let dport = u16::from_be(sa(ctx, 24) as u16);
    let hdr = header(EventKind::Connect);
    let key = UdpKey {
        pid: hdr.pid,
        dport,
        family,
        daddr,
    };
    // SAFETY: a copy of the value is taken at once.
    let last = unsafe { UDP_SEEN.get(&key) }.copied().unwrap_or(0);
    if last != 0 && hdr.ts_ns.wrapping_sub(last) < UDP_INTERVAL_NS {
        return;
    }
    let _ = UDP_SEEN.insert(&key, &hdr.ts_ns, 0);
    match EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut slot) => {
            slot.write(ConnectEvent {
                hdr,
                family,
                sport: 0,
                dport,
                proto: IPPROTO_UDP,
                saddr: [0; 16],
                daddr,
                stdin_pipe: files::stdin_pipe(),
                // SAFETY: the program's own context, as the helper takes it.
                netns: netns::as_used(unsafe {
                    generated::bpf_get_netns_cookie(ctx.sock_addr.cast())
                }),
            });
            slot.submit(crate::maps::wakeup::<ConnectEvent>());
        }
        None => count_loss(LossCause::RingbufConnect),
    }
}

macro_rules! udp_probe {
    ($name:ident, $kind:ident, $v6:expr) => {
        #[cgroup_sock_addr($kind)]
        pub fn $name(ctx: SockAddrContext) -> i32 {
            udp::<$v6>(&ctx);
            1
        }
    };
}

udp_probe!(udp_connect4, connect4, false);
udp_probe!(udp_connect6, connect6, true);
udp_probe!(udp_sendmsg4, sendmsg4, false);
udp_probe!(udp_sendmsg6, sendmsg6, true);

/// An IPv4 address as loaded (bytes in memory order) into the 16-byte field.
#[inline(always)]
fn v4(a: u32) -> [u8; 16] {
    let b = a.to_ne_bytes();
    [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[inline(always)]
fn v6(hi: u64, lo: u64) -> [u8; 16] {
    let (h, l) = (hi.to_ne_bytes(), lo.to_ne_bytes());
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}
