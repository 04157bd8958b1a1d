//! Endpoint identity from DNS answers seen on the host.
//!
//! Kernel programs copy the DNS queries the host's sockets send and the responses they receive
//! (UDP port 53, IPv4 and IPv6; read by [`capture`]), each with its socket's network namespace
//! and the interface it went by; [`track`] believes a response only when it answers a query seen
//! leaving that namespace (which the host's user namespace owns) by that interface, for one of
//! the host's resolvers ([`Resolvers`]: [`resolv_conf`], `--dns-server`, loopback servers), and
//! only for the names on its question's CNAME chain ([`parse`]); and [`Cache`] maps each
//! answered address, in that namespace, to the names that led to it, for the answer's TTL. Connections are then known by name as well as by address,
//! by the names their own namespace was given: a process in a namespace of its own cannot name
//! an address for anyone else. The daemon never sends a DNS query of its own. [`Dns`] is the
//! three together, as the engine uses them.

pub mod capture;
pub mod parse;
pub mod resolv_conf;
pub mod track;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

pub use parse::{parse_response, Answer};
pub use track::{DnsStats, Origin, Resolvers};

/// Names are kept at least this long, whatever the TTL: a client connects right after it got
/// the answer, and TTL-0 answers exist.
const MIN_KEEP: Duration = Duration::from_secs(30);
/// And at most this long.
const MAX_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Names kept per address: a CDN address serves many names, but a flood of answers for one
/// address must not grow its list (each connection copies it).
pub const MAX_NAMES_PER_ADDR: usize = 16;

/// The DNS side of the engine: packets in, names of addresses out.
#[derive(Debug, Default)]
pub struct Dns {
    tracker: track::Tracker,
    cache: Cache,
}

impl Dns {
    /// One captured packet, seen where `at` says. Believed answers go to the cache.
    pub fn packet(&mut self, pkt: &[u8], at: Origin, now: Instant) {
        // Namespace 0 is the kernel's word for "not known" on a connection (a socket used from
        // another namespace): no answer may name anything for it.
        if at.netns == 0 {
            return;
        }
        let Some(d) = capture::datagram(pkt) else {
            return;
        };
        match self.tracker.packet(&d, at, now) {
            track::Seen::Answers(a) => self.cache.insert(at.netns, &a, now),
            track::Seen::Rejected(why) => {
                log::debug!("DNS response {} -> {} not believed: {why:?}", d.src, d.dst);
            }
            track::Seen::Query | track::Seen::Ignored => {}
        }
    }

    /// Whether `addr` has names in network namespace `netns`, current or expired: when not,
    /// [`Dns::names`] is empty at any time (and needs no clock read to say so).
    pub fn may_name(&self, netns: u64, addr: IpAddr) -> bool {
        netns != 0 && self.cache.has(netns, addr)
    }

    /// The names `addr` is currently known by in network namespace `netns`, the name asked
    /// for first.
    pub fn names(&self, netns: u64, addr: IpAddr, now: Instant) -> Vec<String> {
        match netns {
            0 => Vec::new(),
            _ => self.cache.names(netns, addr, now),
        }
    }

    pub fn stats(&self) -> DnsStats {
        self.tracker.stats()
    }

    /// Servers asked that are not resolvers, each once (see [`track::Tracker::take_other_servers`]).
    pub fn take_other_servers(&mut self) -> Vec<IpAddr> {
        self.tracker.take_other_servers()
    }

    /// The servers whose answers are believed from now on (see [`Resolvers`]).
    pub fn set_resolvers(&mut self, resolvers: Resolvers) {
        self.tracker.set_resolvers(resolvers);
    }

    /// Addresses the cache holds names for now (expired ones may linger until the next answer).
    pub fn cached_addresses(&self) -> usize {
        self.cache.len()
    }
}

/// An address in a network namespace (its cookie): the same address may name another host in
/// another namespace, and a namespace's answers hold only there.
type Place = (u64, IpAddr);

/// (namespace, address) -> names, each with its expiry.
#[derive(Debug)]
pub struct Cache {
    map: HashMap<Place, Vec<(String, Instant)>>,
    /// (expiry, place) for every time a place got a later expiry: the soonest first, so
    /// eviction pops instead of scanning. An item whose place has since got a later expiry is
    /// stale and skipped.
    expiries: BinaryHeap<Reverse<(Instant, Place)>>,
    capacity: usize,
}

impl Default for Cache {
    fn default() -> Self {
        Self::with_capacity(65_536)
    }
}

impl Cache {
    /// A cache holding at most `capacity` addresses (over all namespaces).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            expiries: BinaryHeap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Record the addresses of one response received in namespace `netns`.
    pub fn insert(&mut self, netns: u64, answers: &[Answer], now: Instant) {
        self.expire(now);
        for a in answers {
            let keep = Duration::from_secs(u64::from(a.ttl)).clamp(MIN_KEEP, MAX_KEEP);
            let until = now + keep;
            let place = (netns, a.addr);
            while self.map.len() >= self.capacity && !self.map.contains_key(&place) {
                if !self.evict_soonest() {
                    break;
                }
            }
            let names = self.map.entry(place).or_default();
            let before = last_expiry(names);
            for n in &a.names {
                if let Some(slot) = names.iter_mut().find(|(have, _)| have == n) {
                    slot.1 = slot.1.max(until);
                    continue;
                }
                match names.len() < MAX_NAMES_PER_ADDR {
                    true => names.push((n.clone(), until)),
                    false => {
                        // Full: the name that expires first (or has) makes room.
                        if let Some(slot) = names.iter_mut().min_by_key(|(_, t)| *t) {
                            *slot = (n.clone(), until);
                        }
                    }
                }
            }
            let after = last_expiry(names);
            if after > before {
                if let Some(t) = after {
                    self.expiries.push(Reverse((t, place)));
                }
            }
        }
        // Stale heap items pile up when the same addresses are answered again and again: rebuilt
        // from the map when they outnumber the live ones (amortised over the inserts).
        if self.expiries.len() > 4 * self.map.len() + 1024 {
            self.expiries = self
                .map
                .iter()
                .filter_map(|(place, v)| last_expiry(v).map(|t| Reverse((t, *place))))
                .collect();
        }
    }

    /// Whether `addr` has names in namespace `netns`, current or expired.
    pub fn has(&self, netns: u64, addr: IpAddr) -> bool {
        self.map.contains_key(&(netns, addr))
    }

    /// The names `addr` is currently known by in namespace `netns`, most specific (the name
    /// asked for) first.
    pub fn names(&self, netns: u64, addr: IpAddr, now: Instant) -> Vec<String> {
        self.map
            .get(&(netns, addr))
            .map(|v| {
                v.iter()
                    .filter(|(_, t)| *t > now)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drop the addresses whose every name has expired.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((t, place))) = self.expiries.peek() {
            if t > now {
                break;
            }
            self.expiries.pop();
            if self.map.get(&place).and_then(|v| last_expiry(v)) == Some(t) {
                self.map.remove(&place);
            }
        }
    }

    /// Drop the address that expires first; false when there is none.
    fn evict_soonest(&mut self) -> bool {
        while let Some(Reverse((t, place))) = self.expiries.pop() {
            let current = self.map.get(&place).and_then(|v| last_expiry(v));
            if current == Some(t) {
                self.map.remove(&place);
                return true;
            }
        }
        false
    }
}

/// When the last of an address's names expires.
fn last_expiry(names: &[(String, Instant)]) -> Option<Instant> {
    names.iter().map(|(_, t)| *t).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The namespace the tests' packets are seen in.
    const NS: u64 = 1;

    fn answer(addr: &str, names: &[&str], ttl: u32) -> Answer {
        Answer {
            addr: addr.parse().unwrap(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ttl,
        }
    }

    #[test]
    fn names_expire_after_their_ttl_but_not_before_the_minimum() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        c.insert(NS, &[answer("192.0.2.7", &["api.example.com"], 0)], t0);
        c.insert(NS, &[answer("192.0.2.8", &["db.example.com"], 300)], t0);
        let ip7 = "192.0.2.7".parse().unwrap();
        let ip8 = "192.0.2.8".parse().unwrap();
        assert_eq!(
            c.names(NS, ip7, t0 + Duration::from_secs(29)),
            vec!["api.example.com"]
        );
        assert!(c.names(NS, ip7, t0 + Duration::from_secs(31)).is_empty());
        assert_eq!(
            c.names(NS, ip8, t0 + Duration::from_secs(299)),
            vec!["db.example.com"]
        );
        assert!(c.names(NS, ip8, t0 + Duration::from_secs(301)).is_empty());
    }

    #[test]
    fn an_address_keeps_every_name_that_led_to_it() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        c.insert(
            NS,
            &[answer(
                "2001:db8::1",
                &["a.example.com", "edge.cdn.net"],
                60,
            )],
            t0,
        );
        c.insert(
            NS,
            &[answer(
                "2001:db8::1",
                &["b.example.com", "edge.cdn.net"],
                60,
            )],
            t0,
        );
        let names = c.names(NS, "2001:db8::1".parse().unwrap(), t0);
        assert_eq!(
            names,
            vec!["a.example.com", "edge.cdn.net", "b.example.com"]
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::with_capacity(2);
        c.insert(NS, &[answer("192.0.2.1", &["one"], 100)], t0);
        c.insert(NS, &[answer("192.0.2.2", &["two"], 1000)], t0);
        c.insert(NS, &[answer("192.0.2.3", &["three"], 1000)], t0);
        assert_eq!(c.len(), 2);
        assert!(
            c.names(NS, "192.0.2.1".parse().unwrap(), t0).is_empty(),
            "the first to expire goes"
        );
    }

    #[test]
    fn names_per_address_are_capped() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        for i in 0..100 {
            c.insert(
                NS,
                &[answer("192.0.2.9", &[&format!("n{i}.example")], 60 + i)],
                t0,
            );
        }
        let names = c.names(NS, "192.0.2.9".parse().unwrap(), t0);
        assert_eq!(names.len(), MAX_NAMES_PER_ADDR);
        assert!(names.contains(&"n99.example".to_string()), "{names:?}");
    }

    #[test]
    fn expired_addresses_leave_without_a_scan_and_the_heap_stays_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::with_capacity(1000);
        for i in 0..200u8 {
            c.insert(NS, &[answer(&format!("10.0.0.{i}"), &["a"], 0)], t0);
        }
        assert_eq!(c.len(), 200);
        // Past MIN_KEEP every one of them is gone at the next insert.
        c.insert(
            NS,
            &[answer("10.1.0.1", &["b"], 0)],
            t0 + MIN_KEEP + Duration::from_secs(1),
        );
        assert_eq!(c.len(), 1);
        // The same address answered over and over does not grow the heap without bound.
        for i in 0..10_000u64 {
            c.insert(
                NS,
                &[answer("10.1.0.1", &["b"], 60)],
                t0 + Duration::from_secs(40 + i),
            );
        }
        assert!(
            c.expiries.len() <= 4 * c.len() + 1025,
            "{}",
            c.expiries.len()
        );
    }

    /// A packet with IPv4 and UDP headers around a DNS message.
    fn packet(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, dns: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(dns);
        p
    }

    #[test]
    fn only_answers_to_queries_seen_leaving_reach_the_cache() {
        use parse::tests::{query, response};
        let t0 = Instant::now();
        let mut d = Dns::default();
        d.set_resolvers(Resolvers::new(vec!["10.0.0.1".parse().unwrap()]));
        let (client, server) = ([10, 0, 0, 5], [10, 0, 0, 1]);
        let forged = response(
            "api.example.com",
            &[("api.example.com", 1, vec![203, 0, 113, 9])],
        );
        d.packet(
            &packet(server, 53, client, 40000, &forged),
            Origin::received(NS),
            t0,
        );
        assert!(d.names(NS, "203.0.113.9".parse().unwrap(), t0).is_empty());
        assert_eq!(d.stats().not_believed(), 1);
        d.packet(
            &packet(client, 40000, server, 53, &query("api.example.com", 0x1234)),
            Origin::sent(NS),
            t0,
        );
        let real = response(
            "api.example.com",
            &[("api.example.com", 1, vec![192, 0, 2, 7])],
        );
        d.packet(
            &packet(server, 53, client, 40000, &real),
            Origin::received(NS),
            t0,
        );
        assert_eq!(
            d.names(NS, "192.0.2.7".parse().unwrap(), t0),
            vec!["api.example.com"]
        );
        assert_eq!(d.stats().accepted, 1);
        // The names hold in the namespace that asked, not in another with the same address.
        assert!(d.names(NS + 1, "192.0.2.7".parse().unwrap(), t0).is_empty());
        // What the engine asks before it reads the clock agrees: only a named address in the
        // namespace that asked may have names.
        let named: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(d.may_name(NS, named));
        assert!(!d.may_name(NS + 1, named) && !d.may_name(0, named));
        assert!(!d.may_name(NS, "203.0.113.9".parse().unwrap()));
        // Namespace 0 (not known) is given no names, and its packets name nothing.
        let mut z = Dns::default();
        z.set_resolvers(Resolvers::new(vec!["10.0.0.1".parse().unwrap()]));
        let q = query("api.example.com", 0x1235);
        z.packet(&packet(client, 40001, server, 53, &q), Origin::sent(0), t0);
        let mut r = real.clone();
        r[..2].copy_from_slice(&0x1235u16.to_be_bytes());
        z.packet(
            &packet(server, 53, client, 40001, &r),
            Origin::received(0),
            t0,
        );
        assert!(z.names(0, "192.0.2.7".parse().unwrap(), t0).is_empty());
        assert_eq!(z.stats().queries, 0);
    }

    #[test]
    fn one_namespace_cannot_name_an_address_for_another() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        c.insert(1, &[answer("192.0.2.7", &["api.example.com"], 60)], t0);
        c.insert(2, &[answer("192.0.2.7", &["forged.example"], 60)], t0);
        assert_eq!(c.names(1, ip, t0), vec!["api.example.com"]);
        assert_eq!(c.names(2, ip, t0), vec!["forged.example"]);
        assert!(c.names(3, ip, t0).is_empty());
        assert_eq!(c.len(), 2);
    }
}
