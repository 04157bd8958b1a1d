//! Capturing DNS traffic with a raw packet socket (`AF_PACKET`, cooked: frames start at the
//! IP header) and a classic BPF filter in the kernel, so only UDP datagrams from or to port 53
//! reach the daemon: the queries leaving the host as well as the responses coming back, since a
//! response is believed only when its query was seen ([`super::track`]). The socket also says
//! which packets this host sent.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const ETH_P_ALL: u16 = 0x0003;

/// `struct sock_filter` instructions: UDP from or to port 53 over IPv4 (first fragments only) or
/// IPv6 (no extension headers), whole packet kept.
fn dns_filter() -> Vec<libc::sock_filter> {
    const LD_B_ABS: u16 = 0x30;
    const LD_H_ABS: u16 = 0x28;
    const LD_H_IND: u16 = 0x48;
    const LDX_MSH: u16 = 0xb1;
    const ALU_RSH_K: u16 = 0x74;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    let i = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        i(LD_B_ABS, 0, 0, 0),     // 0: A = first byte
        i(ALU_RSH_K, 0, 0, 4),    // 1: A >>= 4 (IP version)
        i(JEQ_K, 0, 9, 4),        // 2: v4? else to 12
        i(LD_B_ABS, 0, 0, 9),     // 3: protocol
        i(JEQ_K, 0, 15, 17),      // 4: UDP? else drop (20)
        i(LD_H_ABS, 0, 0, 6),     // 5: flags + fragment offset
        i(JSET_K, 13, 0, 0x1fff), // 6: a later fragment: drop (20)
        i(LDX_MSH, 0, 0, 0),      // 7: X = 4 * IHL
        i(LD_H_IND, 0, 0, 0),     // 8: source port
        i(JEQ_K, 9, 0, 53),       // 9: 53: accept (19)
        i(LD_H_IND, 0, 0, 2),     // 10: destination port
        i(JEQ_K, 7, 8, 53),       // 11: 53: accept (19), else drop (20)
        i(JEQ_K, 0, 7, 6),        // 12: v6? else drop (20)
        i(LD_B_ABS, 0, 0, 6),     // 13: next header
        i(JEQ_K, 0, 5, 17),       // 14: UDP? else drop (20)
        i(LD_H_ABS, 0, 0, 40),    // 15: source port
        i(JEQ_K, 2, 0, 53),       // 16: 53: accept (19)
        i(LD_H_ABS, 0, 0, 42),    // 17: destination port
        i(JEQ_K, 0, 1, 53),       // 18: 53: accept (19), else drop (20)
        i(RET_K, 0, 0, 0x40000),  // 19: accept
        i(RET_K, 0, 0, 0),        // 20: drop
    ]
}

/// A packet socket that receives DNS queries and responses.
pub struct DnsSocket {
    fd: OwnedFd,
}

impl DnsSocket {
    /// Open the socket (needs CAP_NET_RAW) and attach the filter.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the fd is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut prog = dns_filter();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: setsockopt reads `fprog`, which points at `prog`, alive for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// The next packet already received, as (its length in `buf`, whether this host sent it),
    /// or `None` when there is none (the socket never blocks).
    pub fn try_next(&self, buf: &mut [u8]) -> io::Result<Option<(usize, bool)>> {
        loop {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: recvfrom writes at most buf.len() bytes into buf and at most `from_len`
            // bytes into `from`, both ours and alive for the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(None),
                    _ => return Err(e),
                }
            }
            let outgoing = from.sll_pkttype == libc::PACKET_OUTGOING;
            return Ok(Some((n as usize, outgoing)));
        }
    }
}

impl AsRawFd for DnsSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// A UDP datagram from or to port 53: its ends and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
}

/// The UDP datagram in an IPv4 or IPv6 packet from or to port 53 (the filter's work, checked
/// again).
pub fn datagram(pkt: &[u8]) -> Option<Datagram<'_>> {
    let (src, dst) = addresses(pkt)?;
    let (l4, proto) = match pkt.first()? >> 4 {
        4 => (usize::from(pkt[0] & 0x0f) * 4, *pkt.get(9)?),
        _ => (40, *pkt.get(6)?),
    };
    if proto != 17 {
        return None;
    }
    let udp = pkt.get(l4..)?;
    let port = |i: usize| Some(u16::from_be_bytes([*udp.get(i)?, *udp.get(i + 1)?]));
    let (sport, dport) = (port(0)?, port(2)?);
    if sport != 53 && dport != 53 {
        return None;
    }
    Some(Datagram {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload: udp.get(8..)?,
    })
}

/// Source and destination of a packet, for logs.
pub fn addresses(pkt: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match pkt.first()? >> 4 {
        4 => {
            let s: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d))))
        }
        6 => {
            let s: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program on a packet, for the instructions [`dns_filter`] uses: what
    /// the kernel would keep of it (0: dropped).
    fn run_filter(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |i: usize| pkt.get(i).map(|&b| u32::from(b));
        let half = |i: usize| Some(byte(i)? << 8 | byte(i + 1)?);
        loop {
            let ins = prog[pc];
            let k = ins.k as usize;
            pc += 1;
            match ins.code {
                0x30 => match byte(k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x28 => match half(k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x48 => match half(x as usize + k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0xb1 => match byte(k) {
                    Some(v) => x = 4 * (v & 0x0f),
                    None => return 0,
                },
                0x74 => a >>= ins.k,
                0x15 | 0x45 => {
                    let hit = if ins.code == 0x15 {
                        a == ins.k
                    } else {
                        a & ins.k != 0
                    };
                    pc += usize::from(if hit { ins.jt } else { ins.jf });
                }
                0x06 => return ins.k,
                other => panic!("instruction {other:#x} not simulated"),
            }
        }
    }

    fn v4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 0, 5, 10, 0, 0, 1,
        ];
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 10, 0, 0, 0xab, 0xcd]);
        p
    }

    fn v6(next: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 10, next, 64];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 10, 0, 0, 0xab, 0xcd]);
        p
    }

    #[test]
    fn the_filter_keeps_queries_and_responses_only() {
        let prog = dns_filter();
        let kept = |p: &[u8]| run_filter(&prog, p) != 0;
        // Queries leaving and responses coming back, IPv4 and IPv6.
        assert!(kept(&v4(17, 40000, 53)));
        assert!(kept(&v4(17, 53, 40000)));
        assert!(kept(&v6(17, 40000, 53)));
        assert!(kept(&v6(17, 53, 40000)));
        // Other UDP, TCP, later fragments, garbage.
        assert!(!kept(&v4(17, 40000, 443)));
        assert!(!kept(&v4(6, 40000, 53)));
        assert!(!kept(&v6(17, 40000, 123)));
        assert!(!kept(&v6(6, 53, 40000)));
        let mut frag = v4(17, 53, 40000);
        frag[7] = 8; // fragment offset 8
        assert!(!kept(&frag));
        assert!(!kept(&[0x70, 0, 0]));
        assert!(!kept(&[]));
        // IPv4 options move the UDP header.
        let mut opts = v4(17, 40000, 53);
        opts[0] = 0x46;
        opts.splice(20..20, [1, 1, 1, 0]);
        assert!(kept(&opts));
    }

    #[test]
    fn datagrams_of_ipv4_and_ipv6_udp_from_or_to_53() {
        let dns = [0xab, 0xcd];
        let mut v4 = vec![
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        v4.extend_from_slice(&[0, 53, 0x9c, 0x40, 0, 10, 0, 0]);
        v4.extend_from_slice(&dns);
        let d = datagram(&v4).expect("v4");
        assert_eq!(d.payload, &dns[..]);
        assert_eq!(
            (d.src, d.dst),
            (
                "127.0.0.1:53".parse().unwrap(),
                "127.0.0.1:40000".parse().unwrap()
            )
        );
        let mut v6 = vec![0x60, 0, 0, 0, 0, 10, 17, 64];
        v6.extend_from_slice(&[0; 32]);
        v6.extend_from_slice(&[0, 53, 0x9c, 0x40, 0, 10, 0, 0]);
        v6.extend_from_slice(&dns);
        assert_eq!(datagram(&v6).map(|d| d.payload), Some(&dns[..]));
        // A query: to port 53.
        let mut query = v4.clone();
        query[20..24].copy_from_slice(&[0x9c, 0x40, 0, 53]);
        assert_eq!(datagram(&query).map(|d| d.dst.port()), Some(53));
        let mut tcp = v4.clone();
        tcp[9] = 6;
        assert_eq!(datagram(&tcp), None);
        let mut other = v4.clone();
        other[21] = 54;
        assert_eq!(datagram(&other), None);
        assert_eq!(datagram(&[]), None);
        for cut in 0..v4.len() {
            let _ = datagram(&v4[..cut]); // never panics
        }
        assert_eq!(
            addresses(&v4).map(|a| a.0),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
