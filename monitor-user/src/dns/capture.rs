//! Capturing DNS responses with a raw packet socket (`AF_PACKET`, cooked: frames start at the
//! IP header) and a classic BPF filter in the kernel, so only UDP datagrams from port 53 reach
//! the daemon.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::parse::{parse_response, Answer};

const ETH_P_ALL: u16 = 0x0003;

/// `struct sock_filter` instructions: UDP from port 53 over IPv4 (first fragments only) or IPv6
/// (no extension headers), whole packet kept.
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
        i(JEQ_K, 0, 7, 4),        // 2: v4? else to 10
        i(LD_B_ABS, 0, 0, 9),     // 3: protocol
        i(JEQ_K, 0, 12, 17),      // 4: UDP? else drop (17)
        i(LD_H_ABS, 0, 0, 6),     // 5: flags + fragment offset
        i(JSET_K, 10, 0, 0x1fff), // 6: a later fragment: drop (17)
        i(LDX_MSH, 0, 0, 0),      // 7: X = 4 * IHL
        i(LD_H_IND, 0, 0, 0),     // 8: source port
        i(JEQ_K, 6, 7, 53),       // 9: 53: accept (16), else drop (17)
        i(JEQ_K, 0, 6, 6),        // 10: v6? else drop
        i(LD_B_ABS, 0, 0, 6),     // 11: next header
        i(JEQ_K, 0, 4, 17),       // 12: UDP? else drop
        i(LD_H_ABS, 0, 0, 40),    // 13: source port
        i(JEQ_K, 1, 2, 53),       // 14: 53: accept (16), else drop (17)
        i(RET_K, 0, 0, 0),        // 15: (unused)
        i(RET_K, 0, 0, 0x40000),  // 16: accept
        i(RET_K, 0, 0, 0),        // 17: drop
    ]
}

/// A packet socket that receives DNS responses.
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

    /// The answers of the next DNS response already received, or `None` when there is none
    /// (the socket never blocks). Responses that answer no address are skipped.
    pub fn try_next(&self, buf: &mut [u8]) -> io::Result<Option<Vec<Answer>>> {
        loop {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
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
            if let Some(payload) = udp_payload(&buf[..n as usize]) {
                if let Some(a) = parse_response(payload) {
                    if !a.is_empty() {
                        return Ok(Some(a));
                    }
                }
            }
        }
    }
}

impl AsRawFd for DnsSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The UDP payload of an IPv4 or IPv6 packet from port 53 (the filter's work, checked again).
pub fn udp_payload(pkt: &[u8]) -> Option<&[u8]> {
    let version = pkt.first()? >> 4;
    let (l4, proto) = match version {
        4 => (usize::from(pkt[0] & 0x0f) * 4, *pkt.get(9)?),
        6 => (40, *pkt.get(6)?),
        _ => return None,
    };
    if proto != 17 {
        return None;
    }
    let udp = pkt.get(l4..)?;
    let sport = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    if sport != 53 {
        return None;
    }
    udp.get(8..)
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

    #[test]
    fn payload_of_ipv4_and_ipv6_udp_from_53() {
        let dns = [0xab, 0xcd];
        let mut v4 = vec![
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        v4.extend_from_slice(&[0, 53, 0x9c, 0x40, 0, 10, 0, 0]);
        v4.extend_from_slice(&dns);
        assert_eq!(udp_payload(&v4), Some(&dns[..]));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 10, 17, 64];
        v6.extend_from_slice(&[0; 32]);
        v6.extend_from_slice(&[0, 53, 0x9c, 0x40, 0, 10, 0, 0]);
        v6.extend_from_slice(&dns);
        assert_eq!(udp_payload(&v6), Some(&dns[..]));
        let mut tcp = v4.clone();
        tcp[9] = 6;
        assert_eq!(udp_payload(&tcp), None);
        let mut other = v4.clone();
        other[21] = 54;
        assert_eq!(udp_payload(&other), None);
        assert_eq!(udp_payload(&[]), None);
        assert_eq!(
            addresses(&v4).map(|a| a.0),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
