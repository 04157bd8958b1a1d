//! The DNS side: packets as the kernel's cgroup programs copy them (IPv4 or IPv6, UDP, port 53) into
//! `Dns::packet`, and their payloads into the message parser.
//!
//! The input is a sequence of frames, each `[control][length, u16 little-endian][packet]`
//! (a short last frame takes what is left): bit 0 of the control byte says the host sent the
//! packet, bits 1-5 how many seconds pass before it, bit 6 that it was seen in a second network
//! namespace, bit 7 that a query's namespace is one the host does not own. So one input can be
//! a query and its answer, a retransmission, a forged answer, an answer that comes too late or
//! in another namespace, or one to a query from a namespace any user can make.

use std::{
    collections::HashSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use nhiscope::sense::dns::{
    capture,
    parse::{self, Message, MAX_RECORDS},
    Dns, Origin, Resolvers, MAX_NAMES_PER_ADDR,
};

/// The packets of an input: (where it was seen, seconds before it, packet).
pub fn frames(mut data: &[u8]) -> Vec<(Origin, u64, &[u8])> {
    let mut out = Vec::new();
    while let Some((&control, rest)) = data.split_first() {
        let len = match rest {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => 0,
        };
        let body = rest.get(2..).unwrap_or_default();
        let (packet, next) = body.split_at(len.min(body.len()));
        let origin = Origin {
            outgoing: control & 1 != 0,
            netns: 1 + u64::from(control >> 6 & 1),
            ifindex: 1,
            untrusted_ns: control & 0x80 != 0,
        };
        out.push((origin, u64::from(control >> 1 & 0x1f), packet));
        data = next;
    }
    out
}

/// One frame, in the first namespace: the inverse of [`frames`] (for the seed maker).
pub fn frame(outgoing: bool, secs_before: u8, packet: &[u8]) -> Vec<u8> {
    let mut out = vec![(secs_before.min(31) << 1) | u8::from(outgoing)];
    let len = u16::try_from(packet.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&packet[..usize::from(len)]);
    out
}

pub fn check(data: &[u8]) {
    // The whole input as one DNS message too: the parser sees more shapes that way.
    if let Some(m) = parse::parse_message(data) {
        check_message(&m);
    }
    let _ = parse::parse_response(data);

    let mut dns = Dns::default();
    // The seeds' resolvers (fuzz/examples/dns_seeds.py): answers from them may be believed.
    dns.set_resolvers(Resolvers::new(vec![
        IpAddr::from([10, 0, 0, 1]),
        "fd00::1".parse().expect("an address"),
    ]));
    let mut now = Instant::now();
    // Names each namespace asked for from a namespace the host owns, and CNAME targets answers
    // there gave: no other name may be believed for that namespace.
    let mut asked = HashSet::new();
    let mut answered = Vec::<(u64, IpAddr)>::new();
    for (at, secs, packet) in frames(data) {
        now += Duration::from_secs(secs);
        if let Some(d) = capture::datagram(packet) {
            if let Some(m) = parse::parse_message(d.payload) {
                check_message(&m);
                if at.outgoing {
                    if !at.untrusted_ns {
                        asked.extend(m.question.iter().map(|q| (at.netns, q.name.clone())));
                    }
                } else {
                    asked.extend(m.cnames.iter().map(|(_, t)| (at.netns, t.clone())));
                    answered.extend(m.addrs.iter().map(|(_, addr, _)| (at.netns, *addr)));
                }
            }
        }
        dns.packet(packet, at, now);
    }
    for (ns, addr) in answered.into_iter().flat_map(|(_, a)| [(1, a), (2, a)]) {
        let names = dns.names(ns, addr, now);
        assert!(
            names.len() <= MAX_NAMES_PER_ADDR,
            "{addr} has {} names",
            names.len()
        );
        for name in names {
            assert!(
                asked.contains(&(ns, name.clone())),
                "{addr} is believed to be `{name}` in namespace {ns}, which no query there from a \
                 namespace the host owns asked and no CNAME led to"
            );
        }
    }
}

/// What any parsed message must satisfy.
fn check_message(m: &Message) {
    assert!(
        m.cnames.len() + m.addrs.len() <= MAX_RECORDS,
        "more answer records kept than MAX_RECORDS"
    );
    let (answers, _not_believed) = m.answers();
    assert!(answers.len() <= m.addrs.len());
    for a in &answers {
        assert_eq!(
            a.names.first(),
            m.question.as_ref().map(|q| &q.name),
            "an answer's names do not start at the question"
        );
    }
}
