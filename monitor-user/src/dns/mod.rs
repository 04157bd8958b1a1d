//! Endpoint identity from DNS answers seen on the host.
//!
//! A raw packet socket ([`capture`]) sees every DNS response (UDP source port 53, IPv4 and
//! IPv6) that reaches the host; [`parse`] reads its A, AAAA and CNAME records, and [`Cache`]
//! maps each address to the names that led to it, for the answer's TTL. Connections are then
//! known by name as well as by address. The daemon never sends a DNS query of its own.

pub mod capture;
pub mod parse;

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

pub use parse::{parse_response, Answer};

/// Names are kept at least this long, whatever the TTL: a client connects right after it got
/// the answer, and TTL-0 answers exist.
const MIN_KEEP: Duration = Duration::from_secs(30);
/// And at most this long.
const MAX_KEEP: Duration = Duration::from_secs(24 * 3600);

/// Address -> names, each with its expiry.
#[derive(Debug)]
pub struct Cache {
    map: HashMap<IpAddr, Vec<(String, Instant)>>,
    capacity: usize,
}

impl Default for Cache {
    fn default() -> Self {
        Self::with_capacity(65_536)
    }
}

impl Cache {
    /// A cache holding at most `capacity` addresses.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Record the addresses of one response.
    pub fn insert(&mut self, answers: &[Answer], now: Instant) {
        for a in answers {
            let keep = Duration::from_secs(u64::from(a.ttl)).clamp(MIN_KEEP, MAX_KEEP);
            let until = now + keep;
            if self.map.len() >= self.capacity && !self.map.contains_key(&a.addr) {
                self.evict(now);
            }
            let names = self.map.entry(a.addr).or_default();
            for n in &a.names {
                match names.iter_mut().find(|(have, _)| have == n) {
                    Some(slot) => slot.1 = slot.1.max(until),
                    None => names.push((n.clone(), until)),
                }
            }
        }
    }

    /// The names `addr` is currently known by, most specific (the name asked for) first.
    pub fn names(&self, addr: IpAddr, now: Instant) -> Vec<String> {
        self.map
            .get(&addr)
            .map(|v| {
                v.iter()
                    .filter(|(_, t)| *t > now)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drop expired names; if the cache is still full, drop the entries that expire first.
    fn evict(&mut self, now: Instant) {
        self.map.retain(|_, v| {
            v.retain(|(_, t)| *t > now);
            !v.is_empty()
        });
        while self.map.len() >= self.capacity {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, v)| v.iter().map(|(_, t)| *t).max())
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.map.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        c.insert(&[answer("192.0.2.7", &["api.example.com"], 0)], t0);
        c.insert(&[answer("192.0.2.8", &["db.example.com"], 300)], t0);
        let ip7 = "192.0.2.7".parse().unwrap();
        let ip8 = "192.0.2.8".parse().unwrap();
        assert_eq!(
            c.names(ip7, t0 + Duration::from_secs(29)),
            vec!["api.example.com"]
        );
        assert!(c.names(ip7, t0 + Duration::from_secs(31)).is_empty());
        assert_eq!(
            c.names(ip8, t0 + Duration::from_secs(299)),
            vec!["db.example.com"]
        );
        assert!(c.names(ip8, t0 + Duration::from_secs(301)).is_empty());
    }

    #[test]
    fn an_address_keeps_every_name_that_led_to_it() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        c.insert(
            &[answer(
                "2001:db8::1",
                &["a.example.com", "edge.cdn.net"],
                60,
            )],
            t0,
        );
        c.insert(
            &[answer(
                "2001:db8::1",
                &["b.example.com", "edge.cdn.net"],
                60,
            )],
            t0,
        );
        let names = c.names("2001:db8::1".parse().unwrap(), t0);
        assert_eq!(
            names,
            vec!["a.example.com", "edge.cdn.net", "b.example.com"]
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::with_capacity(2);
        c.insert(&[answer("192.0.2.1", &["one"], 100)], t0);
        c.insert(&[answer("192.0.2.2", &["two"], 1000)], t0);
        c.insert(&[answer("192.0.2.3", &["three"], 1000)], t0);
        assert_eq!(c.len(), 2);
        assert!(
            c.names("192.0.2.1".parse().unwrap(), t0).is_empty(),
            "the first to expire goes"
        );
    }
}
