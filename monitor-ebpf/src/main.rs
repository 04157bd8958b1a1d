//! nhiscope's kernel programs.
//!
//! Programs hang on stable tracepoints (their argument layouts are kernel ABI, read from
//! `/sys/kernel/tracing/events/<group>/<name>/format`) and one raw tracepoint; the kernel structs
//! they follow are read at offsets the daemon computes from the running kernel's BTF
//! (`probes::files`), so one object runs on any kernel, without CO-RE. Records go to one ring
//! buffer, each starting with `monitor_common::EventHeader`; what cannot be delivered is counted
//! in `LOSSES`.
//!
//! - `probes::open`: the exits of `open`, `openat`, `openat2`, `creat`; the opened file (its inode
//!   and dentry names) is tested by `probes::filter`, so unwatched opens never leave the kernel.
//! - `probes::process`: `execve` arguments, `sched_process_exec` (raw: the executed file itself),
//!   `sched_process_fork/exit`.
//! - `probes::connect`: `sock:inet_sock_set_state` into `SYN_SENT`, IPv4 and IPv6.
#![no_std]
#![no_main]

mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects code that could get here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
