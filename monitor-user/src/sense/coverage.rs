//! What this kernel lets a process do that the probes do not see, found out at start: said in
//! the daemon's log and in its health (`Health::unseen`), so that nobody takes silence for
//! safety. The README's "How it decides" lists the same doors and how to close them.

/// What DNS names rest on, on every host: each network namespace's own answers.
pub const DNS_NAMES_PER_NAMESPACE: &str =
    "DNS names are believed per network namespace, from whatever server a query was sent to: a \
     process that can bind port 53 in its own (a container's root, any user where low ports are \
     open, as in Docker's containers) can name any address for its own connections there, and \
     a holder that asks a server of its choice names the addresses it calls; answers in a \
     namespace a user namespace owns (`unshare -rn`, rootless containers) are not believed at \
     all. Declare `cidr:` or `sni:` endpoints for a holder that may do either";

/// The doors this host leaves open, each as a sentence an operator can act on.
pub fn unseen_doors() -> Vec<String> {
    let mut out = vec![DNS_NAMES_PER_NAMESPACE.to_owned()];
    if ia32_syscalls_accepted() == Some(true) {
        out.push(
            "32-bit system calls (int 0x80) are accepted by this kernel, and opens made through \
             them are not seen: boot with ia32_emulation=0 (or a kernel without \
             CONFIG_IA32_EMULATION) to close this door"
                .to_owned(),
        );
    }
    out
}

/// Whether the kernel runs 32-bit system calls for a 64-bit process, tried for real: a child
/// process issues `int 0x80` (i386 `getpid`) and exits 0 if it got its pid back. Where 32-bit
/// emulation is off, the child gets a signal or an error instead. `None` off x86-64 or when the
/// child cannot be made.
///
/// Called before the daemon starts any thread: `fork` is then safe.
pub fn ia32_syscalls_accepted() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: fork in a process with one thread; the child only runs the system call below
        // and `_exit`, both async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return None;
        }
        if pid == 0 {
            let ret: i64;
            // SAFETY: `int 0x80` with eax = 20 is the i386 `getpid`, which takes no argument
            // and touches no memory; it clobbers nothing but rax.
            unsafe {
                core::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret, options(nostack));
                libc::_exit(if ret > 0 { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child made above.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return None;
        }
        Some(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_agrees_with_the_kernel_configuration() {
        // This machine's kernel accepts 32-bit calls unless booted with ia32_emulation=0.
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let accepted = ia32_syscalls_accepted();
        if cmdline.contains("ia32_emulation=0") {
            assert_eq!(accepted, Some(false));
        } else if cfg!(target_arch = "x86_64") {
            assert!(accepted.is_some());
            let doors = unseen_doors();
            assert_eq!(
                accepted == Some(true),
                doors.iter().any(|d| d.contains("32-bit system calls")),
                "{doors:?}"
            );
            assert!(doors.iter().any(|d| d == DNS_NAMES_PER_NAMESPACE));
        }
    }
}
