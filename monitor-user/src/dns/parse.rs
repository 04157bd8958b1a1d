//! DNS response parsing (RFC 1035): just enough to map answered addresses to names.
//!
//! Every read is bounds-checked and compression pointers are followed a bounded number of
//! times, so a malformed or hostile packet is an error, never a panic or a loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One answered address and the names that lead to it: the name asked for, the CNAME chain,
/// and the owner name of the address record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub addr: IpAddr,
    pub names: Vec<String>,
    pub ttl: u32,
}

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.msg.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) << 16 | u32::from(self.u16()?))
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.msg.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }

    /// A possibly compressed name, lowercased, without the trailing dot.
    fn name(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut pos = self.pos;
        let mut jumped = false;
        for _ in 0..128 {
            let len = *self.msg.get(pos)?;
            match len & 0xc0 {
                0x00 => {
                    if len == 0 {
                        if !jumped {
                            self.pos = pos + 1;
                        }
                        return Some(out);
                    }
                    let label = self.msg.get(pos + 1..pos + 1 + len as usize)?;
                    if !out.is_empty() {
                        out.push('.');
                    }
                    for &c in label {
                        out.push(char::from(c.to_ascii_lowercase()));
                    }
                    if out.len() > 255 {
                        return None;
                    }
                    pos += 1 + len as usize;
                }
                0xc0 => {
                    let target =
                        (usize::from(len & 0x3f) << 8) | usize::from(*self.msg.get(pos + 1)?);
                    if !jumped {
                        self.pos = pos + 2;
                    }
                    jumped = true;
                    pos = target;
                }
                _ => return None,
            }
        }
        None
    }
}

/// The addresses a DNS response message (the UDP payload) answers, with their names. `None` when
/// the message is not a well-formed successful response.
pub fn parse_response(msg: &[u8]) -> Option<Vec<Answer>> {
    let mut r = Reader { msg, pos: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 || flags & 0x000f != 0 {
        return None; // a query, or an error response
    }
    let qd = r.u16()?;
    let an = r.u16()?;
    let _ns = r.u16()?;
    let _ar = r.u16()?;
    let mut asked = Vec::new();
    for _ in 0..qd {
        asked.push(r.name()?);
        r.bytes(4)?;
    }
    let mut cnames: Vec<(String, String)> = Vec::new(); // alias -> target
    let mut addrs: Vec<(String, IpAddr, u32)> = Vec::new();
    for _ in 0..an {
        let owner = r.name()?;
        let typ = r.u16()?;
        let class = r.u16()?;
        let ttl = r.u32()?;
        let len = usize::from(r.u16()?);
        let start = r.pos;
        let data = r.bytes(len)?;
        if class != CLASS_IN {
            continue;
        }
        match (typ, len) {
            (TYPE_A, 4) => addrs.push((
                owner,
                IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
                ttl,
            )),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                addrs.push((owner, IpAddr::V6(Ipv6Addr::from(b)), ttl));
            }
            (TYPE_CNAME, _) => {
                let mut sub = Reader { msg, pos: start };
                cnames.push((owner, sub.name()?));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (owner, addr, ttl) in addrs {
        // Walk the CNAME chain back from the owner to the names that were asked for.
        let mut names = vec![owner.clone()];
        let mut frontier = vec![owner];
        for _ in 0..16 {
            let mut next = Vec::new();
            for n in &frontier {
                for (alias, target) in &cnames {
                    if target == n && !names.contains(alias) {
                        names.push(alias.clone());
                        next.push(alias.clone());
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        // The name asked for first: it is what the client used.
        names.sort_by_key(|n| !asked.contains(n));
        out.push(Answer { addr, names, ttl });
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn qname(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in name.split('.') {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    /// A response to `q` (type A) with the given records: (owner, type, rdata).
    pub(crate) fn response(q: &str, records: &[(&str, u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
        m.extend_from_slice(&(records.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend(qname(q));
        m.extend_from_slice(&[0, 1, 0, 1]);
        for (owner, typ, data) in records {
            // The first owner equal to the question is written compressed (pointer to offset 12).
            if *owner == q {
                m.extend_from_slice(&[0xc0, 12]);
            } else {
                m.extend(qname(owner));
            }
            m.extend_from_slice(&typ.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]); // IN, TTL 3600
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn a_records_with_a_cname_chain() {
        let msg = response(
            "Bucket.S3.eu-west-1.amazonaws.com",
            &[
                (
                    "Bucket.S3.eu-west-1.amazonaws.com",
                    TYPE_CNAME,
                    qname("s3-r-w.eu-west-1.amazonaws.com"),
                ),
                (
                    "s3-r-w.eu-west-1.amazonaws.com",
                    TYPE_A,
                    vec![52, 218, 1, 2],
                ),
            ],
        );
        let a = parse_response(&msg).expect("parses");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].addr, "52.218.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            a[0].names,
            vec![
                "bucket.s3.eu-west-1.amazonaws.com",
                "s3-r-w.eu-west-1.amazonaws.com"
            ]
        );
        assert_eq!(a[0].ttl, 3600);
    }

    #[test]
    fn aaaa_records() {
        let mut ip = [0u8; 16];
        ip[0] = 0x20;
        ip[1] = 0x01;
        ip[15] = 7;
        let msg = response(
            "v6.example.org",
            &[("v6.example.org", TYPE_AAAA, ip.to_vec())],
        );
        let a = parse_response(&msg).expect("parses");
        assert_eq!(a[0].addr, "2001::7".parse::<IpAddr>().unwrap());
        assert_eq!(a[0].names, vec!["v6.example.org"]);
    }

    #[test]
    fn queries_errors_and_garbage_are_not_answers() {
        let mut q = response("x.example", &[]);
        q[2] = 0x01; // QR = 0: a query
        assert_eq!(parse_response(&q), None);
        let mut nx = response("x.example", &[]);
        nx[3] = 0x83; // NXDOMAIN
        assert_eq!(parse_response(&nx), None);
        let full = response("x.example", &[("x.example", TYPE_A, vec![1, 2, 3, 4])]);
        for cut in 0..full.len() {
            let _ = parse_response(&full[..cut]); // never panics
        }
        // A compression loop.
        let mut looped = vec![0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12]);
        assert_eq!(parse_response(&looped), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: xorshift bytes, and mutations of a valid response.
        let valid = response("a.b", &[("a.b", TYPE_A, vec![1, 2, 3, 4])]);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut m = valid.clone();
            let pos = (x as usize) % m.len();
            m[pos] = (x >> 32) as u8;
            if i % 3 == 0 {
                m.truncate((x >> 40) as usize % (m.len() + 1));
            }
            let _ = parse_response(&m);
        }
    }
}
