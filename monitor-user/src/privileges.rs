//! After attaching, the daemon keeps only the capabilities it still needs, in every set, and
//! can never gain others (`no_new_privs`, an emptied bounding set):
//!
//! - `CAP_BPF` (`CAP_SYS_ADMIN` on kernels older than 5.8): the filter map is rewritten on a
//!   registry reload and the loss counters are read, both through `bpf(2)`;
//! - `CAP_SYS_PTRACE`: `/proc/PID/exe` and `/proc/PID/cwd` of other users' processes;
//! - `CAP_DAC_READ_SEARCH`: resolving paths under other users' private directories (a home
//!   directory's `.aws/credentials`) for symlinks and identity.
//!
//! Everything else (`CAP_SYS_ADMIN`, `CAP_PERFMON`, `CAP_NET_RAW`, `CAP_NET_ADMIN`,
//! `CAP_SYS_RESOURCE`, `CAP_SETUID`, `CAP_DAC_OVERRIDE`, ...) was needed only to load and attach
//! the programs, mount tracefs and open the packet socket, and is dropped.

use std::io;

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The highest capability this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The capabilities kept, as a 64-bit mask, for a kernel whose last capability is `last`.
pub fn kept_mask(last: u32) -> u64 {
    let admin = if last >= CAP_BPF {
        CAP_BPF
    } else {
        CAP_SYS_ADMIN
    };
    [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, admin]
        .iter()
        .fold(0u64, |m, c| m | (1 << c))
}

/// Drops every capability but those listed above. Returns the mask kept.
pub fn drop_to_needed() -> io::Result<u64> {
    let last = last_cap();
    let keep = kept_mask(last);
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        // Ambient capabilities would survive an exec; there is none to keep.
        let _ = libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        for cap in 0..=last {
            if keep & (1 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData for version 3; both pointers are valid.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let have = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    let set = have & keep;
    for (i, d) in data.iter_mut().enumerate() {
        let part = (set >> (32 * i)) as u32;
        d.effective = part;
        d.permitted = part;
        d.inheritable = 0;
    }
    // SAFETY: as above; capset reads the two CapData.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bpf_ptrace_and_dac_read_search() {
        assert_eq!(kept_mask(40), (1 << 2) | (1 << 19) | (1 << 39));
        // Before CAP_BPF existed, bpf(2) needed CAP_SYS_ADMIN.
        assert_eq!(kept_mask(37), (1 << 2) | (1 << 19) | (1 << 21));
    }
}
