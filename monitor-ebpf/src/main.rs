//! nhiscope's kernel programs.
//!
//! Every program is a stable tracepoint (their argument layouts are kernel ABI, read from
//! `/sys/kernel/tracing/events/<group>/<name>/format`), so one object runs on any kernel that has
//! them, without CO-RE. Records go to one ring buffer, each starting with
//! `monitor_common::EventHeader`; what cannot be delivered is counted in `LOSSES`.
//!
//! - `probes::open`: `open`, `openat`, `openat2`, `creat` (and `chdir`/`fchdir`, which the daemon
//!   needs to resolve relative paths), enter and exit paired through the `PENDING` map; opens
//!   are prefiltered by `probes::filter` so that unwatched ones never leave the kernel.
//! - `probes::process`: `execve` arguments, `sched_process_exec/fork/exit`.
//! - `probes::connect`: `sock:inet_sock_set_state` into `SYN_SENT`, IPv4 and IPv6.
#![no_std]
#![no_main]
// Inline assembly for the one atomic add core's atomics lack on the BPF target.
#![feature(asm_experimental_arch)]

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
