//! What this kernel lets a process do that the probes do not see, found out at start: said in
//! the daemon's log and in its health (`Health::unseen`), so that nobody takes silence for
//! safety. The README's "How it decides" lists the same doors and how to close them.

/// What DNS names rest on, on every host: each network namespace's answers from the host's
/// resolvers and loopback servers.
pub const DNS_NAMES_PER_NAMESPACE: &str =
    "DNS names are believed per network namespace, from the host's resolvers (--resolv-conf, \
     --dns-server) and loopback servers only: a process that can bind port 53 in a namespace of \
     its own (a container's root; any user in a container where low ports are open, as Docker \
     sets) can name any address for connections on that namespace's sockets; answers in a \
     namespace a user namespace owns (`unshare -rn`, rootless containers) are not believed at \
     all. Declare `cidr:` or `sni:` endpoints for a holder that may run in a container";

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
    let start = std::fs::read_to_string(UNPRIVILEGED_PORT_START).ok();
    if let Some(door) = start.as_deref().and_then(low_ports_door) {
        out.push(door);
    }
    out
}

/// How a door about resolvers reached over the network begins (the daemon replaces it when the
/// resolvers change).
pub const NETWORK_RESOLVERS: &str = "DNS answers from resolvers reached over the network";

/// The door resolvers reached over the network leave open, when `servers` has any: an answer
/// is matched to its query by id, port, address and interface, which a hostile holder knows and
/// can tell an accomplice.
pub fn network_resolvers_door(servers: &[std::net::IpAddr]) -> Option<String> {
    let remote: Vec<String> = servers
        .iter()
        .filter(|s| !s.is_loopback())
        .map(ToString::to_string)
        .collect();
    (!remote.is_empty()).then(|| {
        format!(
            "{NETWORK_RESOLVERS} ({}) are matched to their query by id, port, address and \
             interface: a holder that tells an accomplice its query's id and port, where the \
             accomplice can send packets with the resolver's address on that network (no spoof \
             filtering there), can forge the answer; a loopback stub resolver (systemd-resolved, \
             dnsmasq), whose own queries no holder sees, closes this door",
            remote.join(", ")
        )
    })
}

/// The host namespace's lowest port any user may bind.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// The door `ip_unprivileged_port_start` (its file's text) leaves open: at 53 or below, any
/// user can serve DNS on a loopback address, whose answers are believed.
fn low_ports_door(text: &str) -> Option<String> {
    let start: u32 = text.trim().parse().ok()?;
    (start <= 53).then(|| {
        format!(
            "any user can bind port 53 here (net.ipv4.ip_unprivileged_port_start = {start}), on \
             any address (a loopback one, or a resolver's with IP_FREEBIND): a DNS server there \
             is believed, so any user can name the addresses its own queries ask about; set it \
             above 53 to close this door"
        )
    })
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

    #[test]
    fn resolvers_over_the_network_are_a_door_and_loopback_ones_are_not() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("addr");
        assert_eq!(network_resolvers_door(&[]), None);
        assert_eq!(network_resolvers_door(&[ip("127.0.0.53"), ip("::1")]), None);
        let door = network_resolvers_door(&[ip("127.0.0.53"), ip("10.255.255.53")]).expect("one");
        assert!(door.starts_with(NETWORK_RESOLVERS), "{door}");
        assert!(door.contains("(10.255.255.53)"), "{door}");
    }

    #[test]
    fn low_ports_open_to_all_are_a_door_for_dns() {
        assert_eq!(low_ports_door("1024\n"), None);
        assert_eq!(low_ports_door("54"), None);
        let door = low_ports_door("0\n").expect("open");
        assert!(door.contains("ip_unprivileged_port_start = 0"), "{door}");
        assert!(low_ports_door("53").is_some());
        assert_eq!(low_ports_door("garbage"), None);
        let here = std::fs::read_to_string(UNPRIVILEGED_PORT_START).unwrap_or_default();
        if let Some(door) = low_ports_door(&here) {
            assert!(unseen_doors().contains(&door));
        }
    }
}
