//! The network namespace a socket is in, as the cookie the kernel gives each namespace
//! (`net.net_cookie`, what `bpf_get_netns_cookie` returns where programs may call it).
//!
//! DNS names an address only in the namespace that asked: a process in a namespace of its own
//! can answer its own queries there. So connect, request and DNS records carry their socket's
//! namespace, and the daemon looks names up in the connection's (`sense::dns`). And whether the
//! host's user namespace owns a query's namespace: one any user made (`unshare -rn`, a
//! rootless container) holds no privilege a forger lacks, and its answers are not believed. A
//! socket used by a process of another namespace than its own carries none (`as_used`).

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    programs::SkBuffContext,
};
use monitor_common::config::{self, Offset};

use super::files::{offset, read_ptr};
use crate::maps::CONFIG;

/// The network namespace of the socket a packet (`ctx`) is sent or received by, or 0 when it
/// cannot be read: its `sk` read through `bpf_probe_read_kernel`, where kernels before 6.15 do
/// not let these programs call `bpf_get_netns_cookie`.
#[inline(always)]
pub fn of_skb(ctx: &SkBuffContext) -> u64 {
    // SAFETY: a field of the program's own context, as the verifier lets it read it.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return 0;
    }
    // Made a plain number (the verifier forbids arithmetic on a socket pointer); only ever
    // dereferenced by `bpf_probe_read_kernel`, which checks it.
    of_sock(super::files::launder(sk as u64))
}

/// The network namespace of the socket at `sk` (a `struct sock *`), or 0 when it cannot be read.
#[inline(always)]
pub fn of_sock(sk: u64) -> u64 {
    let (Some(o_net), Some(o_cookie)) = (offset(Offset::SkcNet), offset(Offset::NetCookie)) else {
        return 0;
    };
    read_ptr(sk, o_net)
        .and_then(|net| read::<u64>(net, o_cookie))
        .unwrap_or(0)
}

/// A socket's namespace `sock` as a record of its use by the current task carries it: 0 (no
/// DNS name is known in it) when the task is in another namespace. A socket made in a namespace
/// where its maker answers its own DNS queries (a container's root) and passed to a process
/// outside would otherwise bring that namespace's names along. A socket in the host's namespace
/// is taken as it is (one config lookup): its names are the host's, whoever uses it.
#[inline(always)]
pub fn as_used(sock: u64) -> u64 {
    if sock == 0 || Some(&sock) == CONFIG.get(config::HOST_NETNS) {
        return sock;
    }
    match current_net().and_then(|net| read::<u64>(net, offset(Offset::NetCookie)?)) {
        Some(own) if own == sock => sock,
        _ => 0,
    }
}

/// Whether the current task's network namespace is the one with cookie `cookie` and the host's
/// user namespace (level 0) owns it. False when anything cannot be read: the caller then does
/// not believe what depends on it.
#[inline(always)]
pub fn current_is_hosts(cookie: u64) -> bool {
    current_owner_level(cookie) == Some(0)
}

#[inline(always)]
fn current_owner_level(cookie: u64) -> Option<i32> {
    let net = current_net()?;
    if read::<u64>(net, offset(Offset::NetCookie)?)? != cookie {
        // The socket is in another namespace than its sender (a descriptor passed on, or a
        // `setns` after `socket`): its owner is not known here.
        return None;
    }
    let userns = read_ptr(net, offset(Offset::NetUserNs)?)?;
    read::<i32>(userns, offset(Offset::UserNsLevel)?)
}

/// The current task's network namespace (`struct net *`).
#[inline(always)]
fn current_net() -> Option<u64> {
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    read_ptr(task, offset(Offset::TaskNsproxy)?)
        .and_then(|nsproxy| read_ptr(nsproxy, offset(Offset::NsproxyNetNs)?))
}

/// A `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: usize) -> Option<T> {
    // SAFETY: the helper checks the address and returns an error instead of faulting.
    unsafe { bpf_probe_read_kernel((base as usize + off) as *const T) }.ok()
}
