//! The DNS packets the kernel copies (`monitor-ebpf/src/probes/dns.rs`: UDP datagrams to port
//! 53 that local sockets send, and from port 53 that they receive, from their IP header), read
//! as datagrams: their ends and payload, checked again here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A UDP datagram from or to port 53: its ends and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
}

/// The UDP datagram in an IPv4 or IPv6 packet from or to port 53 (the kernel program's work,
/// checked again).
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
