//! The DNS side: packets as the raw socket captures them (IPv4 or IPv6, UDP, port 53) into
//! `Dns::packet`, and their payloads into the message parser.
//!
//! The input is a sequence of frames, each `[control][length, u16 little-endian][packet]`
//! (a short last frame takes what is left): bit 0 of the control byte says the host sent the
//! packet, the other bits how many seconds pass before it. So one input can be a query and its
//! answer, a retransmission, a forged answer, or an answer that comes too late.

use std::{
    collections::HashSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use nhiscope::sense::dns::{
    capture,
    parse::{self, Message, MAX_RECORDS},
    Dns, MAX_NAMES_PER_ADDR,
};

/// The packets of an input: (outgoing, seconds before it, packet).
pub fn frames(mut data: &[u8]) -> Vec<(bool, u64, &[u8])> {
    let mut out = Vec::new();
    while let Some((&control, rest)) = data.split_first() {
        let len = match rest {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => 0,
        };
        let body = rest.get(2..).unwrap_or_default();
        let (packet, next) = body.split_at(len.min(body.len()));
        out.push((control & 1 != 0, u64::from(control >> 1), packet));
        data = next;
    }
    out
}

/// One frame: the inverse of [`frames`] (for the seed maker).
pub fn frame(outgoing: bool, secs_before: u8, packet: &[u8]) -> Vec<u8> {
    let mut out = vec![(secs_before << 1) | u8::from(outgoing)];
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
    let mut now = Instant::now();
    // Names the host asked for, and CNAME targets answers gave: no other name may be believed.
    let mut asked = HashSet::new();
    let mut answered = Vec::<IpAddr>::new();
    for (outgoing, secs, packet) in frames(data) {
        now += Duration::from_secs(secs);
        if let Some(d) = capture::datagram(packet) {
            if let Some(m) = parse::parse_message(d.payload) {
                check_message(&m);
                if outgoing {
                    asked.extend(m.question.iter().map(|q| q.name.clone()));
                } else {
                    asked.extend(m.cnames.iter().map(|(_, target)| target.clone()));
                    answered.extend(m.addrs.iter().map(|(_, addr, _)| *addr));
                }
            }
        }
        dns.packet(packet, outgoing, now);
    }
    for addr in answered {
        let names = dns.names(addr, now);
        assert!(
            names.len() <= MAX_NAMES_PER_ADDR,
            "{addr} has {} names",
            names.len()
        );
        for name in names {
            assert!(
                asked.contains(&name),
                "{addr} is believed to be `{name}`, which no query asked and no CNAME led to"
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
