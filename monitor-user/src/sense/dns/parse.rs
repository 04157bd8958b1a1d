//! DNS response parsing (RFC 1035): just enough to map answered addresses to names.
//!
//! Every read is bounds-checked and compression pointers are followed a bounded number of
//! times, so a malformed or hostile packet is an error, never a panic or a loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One answered address and the names that lead to it: the name asked for, then the CNAME chain
/// down to the owner name of the address record.
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

/// The most answer records read from one message: a flood of records in one packet costs no
/// more than this; the rest are skipped and counted.
pub const MAX_RECORDS: usize = 32;
/// The longest CNAME chain followed from the question.
const MAX_CHAIN: usize = 16;

/// The question of a query or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Lowercased, without the trailing dot.
    pub name: String,
    pub qtype: u16,
}

/// What a DNS message says, as far as the daemon needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The transaction id.
    pub id: u16,
    /// QR: a response (else a query).
    pub response: bool,
    /// The response code (0: no error).
    pub rcode: u8,
    /// The question, when the message has exactly one (every real client sends one).
    pub question: Option<Question>,
    /// CNAME records of the answer section: (alias, target).
    pub cnames: Vec<(String, String)>,
    /// A and AAAA records of the answer section: (owner, address, TTL).
    pub addrs: Vec<(String, IpAddr, u32)>,
    /// Answer records past [`MAX_RECORDS`], not read.
    pub skipped: usize,
}

impl Message {
    /// The addresses this response answers for its question, each with the names that lead
    /// to it (the question first, then the CNAME chain down to the address record's owner), and
    /// how many records were not believed: a record whose owner is not on the chain that starts
    /// at the question (an attacker's extra "answer" for another name), and records skipped.
    pub fn answers(&self) -> (Vec<Answer>, usize) {
        let Some(q) = &self.question else {
            return (
                Vec::new(),
                self.cnames.len() + self.addrs.len() + self.skipped,
            );
        };
        let mut chain = vec![q.name.clone()];
        let mut used = 0;
        while chain.len() <= MAX_CHAIN {
            let Some(cur) = chain.last() else { break };
            let Some((_, target)) = self.cnames.iter().find(|(alias, _)| alias == cur) else {
                break;
            };
            if chain.contains(target) {
                break; // a loop
            }
            chain.push(target.clone());
            used += 1;
        }
        let mut out = Vec::new();
        let mut off = self.cnames.len() - used + self.skipped;
        for (owner, addr, ttl) in &self.addrs {
            match chain.iter().position(|n| n == owner) {
                Some(i) => out.push(Answer {
                    addr: *addr,
                    names: chain[..=i].to_vec(),
                    ttl: *ttl,
                }),
                None => off += 1,
            }
        }
        (out, off)
    }
}

/// Read a DNS message (the UDP payload): its header, question and answer records. `None` when it
/// is malformed.
pub fn parse_message(msg: &[u8]) -> Option<Message> {
    let mut r = Reader { msg, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let qd = r.u16()?;
    let an = r.u16()?;
    let _ns = r.u16()?;
    let _ar = r.u16()?;
    let mut m = Message {
        id,
        response: flags & 0x8000 != 0,
        rcode: (flags & 0x000f) as u8,
        ..Message::default()
    };
    let mut questions = Vec::new();
    for _ in 0..qd.min(4) {
        let name = r.name()?;
        let qtype = r.u16()?;
        let _class = r.u16()?;
        questions.push(Question { name, qtype });
    }
    if qd > 4 {
        return None;
    }
    if questions.len() == 1 {
        m.question = questions.pop();
    }
    for i in 0..usize::from(an) {
        if i >= MAX_RECORDS {
            m.skipped = usize::from(an) - MAX_RECORDS;
            break;
        }
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
        match (typ, data) {
            (TYPE_A, &[a, b, c, d]) => {
                m.addrs
                    .push((owner, IpAddr::V4(Ipv4Addr::new(a, b, c, d)), ttl));
            }
            (TYPE_AAAA, _) if len == 16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                m.addrs.push((owner, IpAddr::V6(Ipv6Addr::from(b)), ttl));
            }
            (TYPE_CNAME, _) => {
                let mut sub = Reader { msg, pos: start };
                m.cnames.push((owner, sub.name()?));
            }
            _ => {}
        }
    }
    Some(m)
}

/// The addresses a successful DNS response answers for its question, with their names. `None`
/// when the message is not a well-formed successful response. Whether anyone asked is not
/// checked here: see [`super::track`].
pub fn parse_response(msg: &[u8]) -> Option<Vec<Answer>> {
    let m = parse_message(msg)?;
    if !m.response || m.rcode != 0 {
        return None; // a query, or an error response
    }
    Some(m.answers().0)
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

    /// A query for `q` (type A) with transaction id `id`.
    pub(crate) fn query(q: &str, id: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend(qname(q));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m
    }

    #[test]
    fn records_off_the_question_chain_are_not_answers() {
        let msg = response(
            "api.example.com",
            &[
                ("api.example.com", TYPE_CNAME, qname("edge.cdn.net")),
                ("edge.cdn.net", TYPE_A, vec![192, 0, 2, 1]),
                // Extra records for names nobody asked about, and a CNAME elsewhere.
                ("bank.example.org", TYPE_A, vec![203, 0, 113, 6]),
                ("other.example.com", TYPE_CNAME, qname("edge.cdn.net")),
                ("allowed.example.com", TYPE_CNAME, qname("api.example.com")),
            ],
        );
        let m = parse_message(&msg).expect("parses");
        assert_eq!(
            m.question.as_ref().map(|q| q.name.as_str()),
            Some("api.example.com")
        );
        let (answers, off) = m.answers();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].addr, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(answers[0].names, vec!["api.example.com", "edge.cdn.net"]);
        assert_eq!(off, 3);
    }

    #[test]
    fn records_past_the_cap_are_skipped() {
        let records: Vec<(&str, u16, Vec<u8>)> = (0..100u8)
            .map(|i| ("many.example", TYPE_A, vec![10, 0, 0, i]))
            .collect();
        let m = parse_message(&response("many.example", &records)).expect("parses");
        let (answers, off) = m.answers();
        assert_eq!(answers.len(), MAX_RECORDS);
        assert_eq!(off, 100 - MAX_RECORDS);
    }

    #[test]
    fn queries_have_their_question() {
        let m = parse_message(&query("Api.Example.com", 0xbeef)).expect("parses");
        assert_eq!((m.id, m.response), (0xbeef, false));
        assert_eq!(
            m.question,
            Some(Question {
                name: "api.example.com".into(),
                qtype: TYPE_A
            })
        );
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
