//! After attaching, the daemon gives up what it no longer needs: it can switch to an
//! unprivileged user of its own (`--user NAME`), keeps only the capabilities listed in [`KEPT`]
//! in every set, and can never gain others (`no_new_privs`, an emptied bounding set):
//!
//! - `CAP_BPF` (`CAP_SYS_ADMIN` on kernels older than 5.8): the filter map is rewritten on a
//!   registry reload and the loss counters are read, both through `bpf(2)`;
//! - `CAP_DAC_READ_SEARCH`: the inodes and modification times of registered credential files
//!   under other users' private directories (a home directory's `.aws/credentials`).
//!
//! Not `CAP_SYS_PTRACE`: the kernel programs name the executed file and the opened file's real
//! path themselves, so the daemon reads no other process's `/proc/PID/exe`, `cwd` or `fd/`
//! links after start (processes already running are read once, before the drop).
//!
//! Everything else (`CAP_SYS_ADMIN`, `CAP_PERFMON`, `CAP_NET_ADMIN`, `CAP_SYS_RESOURCE`,
//! `CAP_SETUID`, `CAP_DAC_OVERRIDE`, ...) was needed only to load and attach the programs and
//! mount tracefs, and is dropped.
//!
//! Capabilities belong to threads, not processes: `capset(2)` and `prctl(2)` change the calling
//! thread only. glibc's `setgroups`/`setgid`/`setuid` do apply to every thread (it signals them
//! all), and a thread that is switched away from uid 0 without `PR_SET_KEEPCAPS` loses every
//! capability, so other threads can only end up with fewer. The daemon drops while it has one
//! thread (its runtime is current-thread, and the store, whose file work runs on tokio's
//! blocking pool, starts after this: threads made later inherit the dropped state), and then
//! checks every thread in `/proc/self/task`: a drop that did not take everywhere is an error,
//! and the daemon stops.

use std::{ffi::CString, fs, io};

use rustix::thread::{self as rt, CapabilitySet, CapabilitySets};
use thiserror::Error;

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The capabilities the daemon keeps after attaching. `CAP_BPF` stands for `CAP_SYS_ADMIN` on
/// kernels that predate it.
pub const KEPT: &[u32] = &[CAP_BPF, CAP_DAC_READ_SEARCH];

/// Why privileges could not be dropped. Each is fatal: a monitor that meant to drop and did not
/// runs with more power than its operator chose.
#[derive(Debug, Error)]
pub enum PrivilegeError {
    /// `--user NAME` names no account.
    #[error("--user {0}: no such user")]
    NoSuchUser(String),
    /// `--user` names root, which is no switch at all.
    #[error("--user {0}: is uid 0; name an unprivileged user (e.g. one made with `useradd --system nhiscope`)")]
    Root(String),
    /// A system call failed.
    #[error("cannot drop privileges: {what}: {source}")]
    Call {
        what: &'static str,
        source: io::Error,
    },
    /// After the drop, a thread still had more than it should.
    #[error("privileges not dropped on thread {tid}: {why}")]
    Thread { tid: String, why: String },
}

/// A user account to switch to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl Account {
    /// Looks `name` up in the user database (`getpwnam_r`: /etc/passwd, or NSS).
    pub fn lookup(name: &str) -> Result<Account, PrivilegeError> {
        let c = CString::new(name).map_err(|_| PrivilegeError::NoSuchUser(name.to_owned()))?;
        let mut pw = std::mem::MaybeUninit::<libc::passwd>::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` outlives it, and `pw` is only read
        // when `result` says it was filled.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                pw.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return Err(PrivilegeError::NoSuchUser(name.to_owned()));
        }
        // SAFETY: getpwnam_r succeeded and filled `pw`.
        let pw = unsafe { pw.assume_init() };
        if pw.pw_uid == 0 {
            return Err(PrivilegeError::Root(name.to_owned()));
        }
        Ok(Account {
            name: name.to_owned(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        })
    }
}

/// The highest capability this kernel knows.
fn last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The capabilities kept, as a 64-bit mask, for a kernel whose last capability is `last`.
pub fn kept_mask(last: u32) -> u64 {
    KEPT.iter()
        .map(|&c| {
            if c == CAP_BPF && last < CAP_BPF {
                CAP_SYS_ADMIN
            } else {
                c
            }
        })
        .fold(0u64, |m, c| m | (1 << c))
}

fn call(what: &'static str, rc: libc::c_long) -> Result<(), PrivilegeError> {
    if rc != 0 {
        return Err(PrivilegeError::Call {
            what,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A rustix call's failure as a [`PrivilegeError`] naming the call.
fn named<T>(what: &'static str, r: rustix::io::Result<T>) -> Result<T, PrivilegeError> {
    r.map_err(|e| PrivilegeError::Call {
        what,
        source: e.into(),
    })
}

/// Switches to `user` (when given) and drops every capability but [`KEPT`], then checks every
/// thread. Returns the mask kept.
pub fn drop_to_needed(user: Option<&Account>) -> Result<u64, PrivilegeError> {
    let last = last_cap();
    let keep = kept_mask(last);
    named("PR_SET_NO_NEW_PRIVS", rt::set_no_new_privs(true))?;
    // Ambient capabilities would survive an exec; there is none to keep. Kernels before 4.3
    // have no ambient set, hence no error.
    let _ = rt::clear_ambient_capability_set();
    // Needs CAP_SETPCAP, so before the switch and the capset below.
    for cap in 0..=last {
        let one = CapabilitySet::from_bits_retain(1 << cap);
        // One already out of the bounding set (a container's) needs no dropping, nor
        // CAP_SETPCAP. A failed read is taken as present: the drop then fails, loudly.
        let bounded = rt::capability_is_in_bounding_set(one).unwrap_or(true);
        if keep & (1 << cap) == 0 && bounded {
            named(
                "PR_CAPBSET_DROP",
                rt::remove_capability_from_bounding_set(one),
            )?;
        }
    }
    if let Some(user) = user {
        switch_user(user)?;
    }
    let have = named("capget", rt::capabilities(None))?.permitted.bits();
    let set = have & keep;
    let kept = CapabilitySet::from_bits_retain(set);
    named(
        "capset",
        rt::set_capabilities(
            None,
            CapabilitySets {
                effective: kept,
                permitted: kept,
                inheritable: CapabilitySet::empty(),
            },
        ),
    )?;
    if user.is_some() {
        named("PR_SET_KEEPCAPS", rt::set_keep_capabilities(false))?;
    }
    verify_threads(user.map(|u| u.uid), set)?;
    Ok(set)
}

/// Becomes `user`, its primary group the only group, keeping the permitted capabilities of this
/// thread across the switch (the capset that follows trims them).
fn switch_user(user: &Account) -> Result<(), PrivilegeError> {
    let groups = [user.gid];
    named("PR_SET_KEEPCAPS", rt::set_keep_capabilities(true))?;
    // glibc's calls, not the raw system calls: they switch every thread of the process.
    // SAFETY: plain calls with integer arguments and a pointer to a live array of one gid.
    unsafe {
        call(
            "setgroups",
            libc::setgroups(groups.len(), groups.as_ptr()).into(),
        )?;
        call(
            "setresgid",
            libc::setresgid(user.gid, user.gid, user.gid).into(),
        )?;
        call(
            "setresuid",
            libc::setresuid(user.uid, user.uid, user.uid).into(),
        )?;
    }
    Ok(())
}

/// Checks, in `/proc/self/task/*/status`, that every thread runs as `uid` (when switching) and
/// has no capability outside `kept` in any set.
fn verify_threads(uid: Option<u32>, kept: u64) -> Result<(), PrivilegeError> {
    let tasks = fs::read_dir("/proc/self/task").map_err(|source| PrivilegeError::Call {
        what: "reading /proc/self/task",
        source,
    })?;
    for t in tasks {
        let t = t.map_err(|source| PrivilegeError::Call {
            what: "reading /proc/self/task",
            source,
        })?;
        let tid = t.file_name().to_string_lossy().into_owned();
        let Ok(status) = fs::read_to_string(t.path().join("status")) else {
            // The thread ended meanwhile.
            continue;
        };
        if let Err(why) = check_status(&status, uid, kept) {
            return Err(PrivilegeError::Thread { tid, why });
        }
    }
    Ok(())
}

/// Checks one thread's `status` text.
fn check_status(status: &str, uid: Option<u32>, kept: u64) -> Result<(), String> {
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Uid" => {
                if let Some(uid) = uid {
                    let ids: Vec<&str> = value.split_whitespace().collect();
                    if ids.iter().any(|id| *id != uid.to_string()) {
                        return Err(format!("Uid is {value}, expected {uid} everywhere"));
                    }
                }
            }
            "CapInh" | "CapPrm" | "CapEff" | "CapBnd" | "CapAmb" => {
                let caps = u64::from_str_radix(value, 16)
                    .map_err(|_| format!("unreadable {key}: {value}"))?;
                if caps & !kept != 0 {
                    return Err(format!("{key} is {caps:#x}, more than the kept {kept:#x}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bpf_and_dac_read_search_only() {
        assert_eq!(kept_mask(40), (1 << 2) | (1 << 39));
        // Before CAP_BPF existed, bpf(2) needed CAP_SYS_ADMIN.
        assert_eq!(kept_mask(37), (1 << 2) | (1 << 21));
    }

    #[test]
    fn a_thread_with_more_is_caught() {
        let kept = kept_mask(40);
        let good = format!(
            "Name:\tnhiscope\nUid:\t999\t999\t999\t999\nCapInh:\t0000000000000000\n\
             CapPrm:\t{kept:016x}\nCapEff:\t{kept:016x}\nCapBnd:\t{kept:016x}\n\
             CapAmb:\t0000000000000000\n"
        );
        assert_eq!(check_status(&good, Some(999), kept), Ok(()));
        let root = good.replace("Uid:\t999\t999", "Uid:\t999\t0");
        assert!(check_status(&root, Some(999), kept)
            .unwrap_err()
            .contains("Uid"));
        let full = good.replace(
            &format!("CapEff:\t{kept:016x}"),
            "CapEff:\t000001ffffffffff",
        );
        assert!(check_status(&full, Some(999), kept)
            .unwrap_err()
            .contains("CapEff"));
        assert_eq!(check_status(&root, None, kept), Ok(()));
    }

    #[test]
    fn unknown_users_and_root_are_refused() {
        assert!(matches!(
            Account::lookup("no-such-user-nhiscope-test"),
            Err(PrivilegeError::NoSuchUser(_))
        ));
        assert!(matches!(
            Account::lookup("root"),
            Err(PrivilegeError::Root(_))
        ));
    }
}
