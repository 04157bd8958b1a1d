//! Outbound TCP connections, from the state change into SYN_SENT, which `connect()` makes in the
//! caller's context (so the current task is the connecting process).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use monitor_common::{ConnectEvent, EventKind, LossCause, AF_INET, AF_INET6};

use super::{arg, header};
use crate::maps::{count_loss, EVENTS};

const TCP_SYN_SENT: i32 = 2;
const IPPROTO_TCP: u16 = 6;

/// sock/inet_sock_set_state: newstate at 20, sport 24, dport 26, family 28, protocol 30,
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
                _pad: 0,
                saddr,
                daddr,
            });
            slot.submit(crate::maps::wakeup());
        }
        None => count_loss(LossCause::RingbufConnect),
    }
    0
}

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
