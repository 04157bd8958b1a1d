//! Which DNS answers to believe: only those to a query seen leaving this host for one of its
//! resolvers.
//!
//! Anyone who can send this host a UDP packet from port 53 could otherwise map their own address
//! to an allowed name, and a holder's connection there would be judged `ok`. So each query that
//! leaves the host is remembered for [`QUERY_TIMEOUT`] by its network namespace, its transaction
//! id, its client and server (address and port) and its question; a response counts only when it
//! comes back from that server to that client in that namespace with that id and question,
//! once. A forger must then guess a 16-bit id and the client's port while the query is open, as
//! for the resolver itself.
//!
//! And the asker does not choose who answers: a query is remembered only when its server is one
//! of the host's resolvers ([`Resolvers`]: the nameservers of the host's `/etc/resolv.conf`,
//! those the daemon is told of, and loopback addresses, where only a privileged process can
//! serve port 53), and only when it left a namespace the host's user namespace owns. A holder
//! that asks a server of its own (on the internet, or a container's on the host's bridge) would
//! otherwise name any address it calls. Everything else is counted ([`DnsStats`]) and never
//! reaches the name cache.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use super::{
    capture::Datagram,
    parse::{parse_message, Answer},
};

/// How long a query waits for its answer (resolvers give up after 5 s and retry).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Queries remembered at most: a flood of queries pushes out the oldest, it does not grow memory.
pub const MAX_PENDING: usize = 4096;
/// Servers that are not resolvers named (in the daemon's log) at most: anyone can ask any
/// number of them.
pub const OTHER_SERVERS_NAMED: usize = 32;

/// What the daemon did with the DNS packets it saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries remembered: sent to a resolver from a namespace the host owns.
    pub queries: u64,
    /// Responses believed.
    pub accepted: u64,
    /// Responses not believed: no matching open query (unsolicited, wrong id, wrong ports or
    /// server, too late, already answered) or another question.
    pub rejected: u64,
    /// Answer records not believed in believed responses: off the question's CNAME chain, or
    /// past the per-packet cap.
    pub records_rejected: u64,
    /// Open queries pushed out by newer ones before their answer came ([`MAX_PENDING`]).
    pub queries_dropped: u64,
    /// Queries not remembered (their answers are then `rejected`), sent from a network
    /// namespace the host's user namespace does not own (any user can make one and answer
    /// itself there), on a socket of another namespace than the sender's, or where the owner
    /// could not be read (the kernel's `DNS_UNTRUSTED_NS`).
    pub untrusted_ns: u64,
    /// Queries not remembered (their answers are then `rejected`), sent to a server that is not
    /// one of the host's resolvers.
    pub other_server: u64,
}

impl DnsStats {
    /// Everything not believed, responses and records (health's `dns_rejected`).
    pub fn not_believed(&self) -> u64 {
        self.rejected + self.records_rejected
    }
}

/// Where a DNS packet was seen, as the kernel said (`monitor_common::DnsRecord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// This host sent it (a query), else received it (an answer).
    pub outgoing: bool,
    /// The network namespace of the socket that sent or received it (its cookie): a query and
    /// its answer are in the same one, and the names it gives hold there only.
    pub netns: u64,
    /// The interface it left or came in by: an answer comes in by the one its query left by
    /// (a forger elsewhere, a container on the host's bridge, cannot send it that way).
    pub ifindex: u32,
    /// A query sent from a namespace the host's user namespace does not own (`unshare -rn`, a
    /// rootless container), or that could not be checked: its answer is not believed.
    pub untrusted_ns: bool,
}

impl Origin {
    /// Sent from namespace `netns`, which the host owns, by interface 1 (loopback).
    pub fn sent(netns: u64) -> Self {
        Self {
            outgoing: true,
            netns,
            ifindex: 1,
            untrusted_ns: false,
        }
    }

    /// Received in namespace `netns`, by interface 1 (loopback).
    pub fn received(netns: u64) -> Self {
        Self {
            outgoing: false,
            netns,
            ifindex: 1,
            untrusted_ns: false,
        }
    }
}

/// Why a packet was not believed (for debug logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// No open query from that client to that server with that id, in that namespace.
    Unsolicited,
    /// The open query asked about another name.
    OtherQuestion,
}

/// The servers whose answers are believed: the host's resolvers, and any loopback address (a
/// server on port 53 there is a privileged process's: binding a port below 1024 takes
/// `CAP_NET_BIND_SERVICE` unless `net.ipv4.ip_unprivileged_port_start` was lowered, which the
/// daemon says at start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolvers(Vec<IpAddr>);

impl Resolvers {
    pub fn new(servers: Vec<IpAddr>) -> Self {
        // An IPv4 address written mapped (`::ffff:a.b.c.d`) is the IPv4 one `allow` compares.
        let mut servers: Vec<IpAddr> = servers.into_iter().map(unmapped).collect();
        servers.sort_unstable();
        servers.dedup();
        Self(servers)
    }

    /// Whether a query to `server` may be believed.
    pub fn allow(&self, server: IpAddr) -> bool {
        let server = unmapped(server);
        server.is_loopback() || self.0.contains(&server)
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; any other address as it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What a packet was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A query leaving the host, now remembered.
    Query,
    /// A believed response and the answers it gives.
    Answers(Vec<Answer>),
    /// A response not believed.
    Rejected(Rejected),
    /// Anything else: not DNS, malformed, a query reaching a server on this host, a response
    /// leaving it, an error response.
    Ignored,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Key {
    netns: u64,
    ifindex: u32,
    client: SocketAddr,
    server: SocketAddr,
    id: u16,
}

#[derive(Debug)]
struct Pending {
    name: String,
    until: Instant,
}

/// Open queries, and the counters.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: HashMap<Key, Pending>,
    resolvers: Resolvers,
    /// Servers asked that are not resolvers, each once (at most [`OTHER_SERVERS_NAMED`]), and
    /// those of them not yet taken by [`Tracker::take_other_servers`].
    other_servers: Vec<IpAddr>,
    other_servers_new: Vec<IpAddr>,
    /// Keys by expiry. The timeout is the same for all, so insertion order is expiry order and
    /// expiring is popping the front, never a scan.
    order: VecDeque<(Instant, Key)>,
    stats: DnsStats,
}

impl Tracker {
    pub fn stats(&self) -> DnsStats {
        self.stats
    }

    /// The servers whose answers are believed from now on (queries already open stay).
    pub fn set_resolvers(&mut self, resolvers: Resolvers) {
        self.resolvers = resolvers;
    }

    /// Servers that are not resolvers, asked for the first time since the last call (each is
    /// given once, [`OTHER_SERVERS_NAMED`] at most in all).
    pub fn take_other_servers(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.other_servers_new)
    }

    /// Open queries (tests, health).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// One UDP datagram to or from port 53, seen where `at` says.
    pub fn packet(&mut self, d: &Datagram<'_>, at: Origin, now: Instant) -> Seen {
        self.expire(now);
        let Some(m) = parse_message(d.payload) else {
            return Seen::Ignored;
        };
        match (m.response, at.outgoing) {
            (false, true) if d.dst.port() == 53 => {
                let Some(q) = m.question else {
                    return Seen::Ignored;
                };
                // Not remembered at all: their answers could not be believed, and they take no
                // room from queries whose answers can.
                if at.untrusted_ns {
                    self.stats.untrusted_ns += 1;
                    return Seen::Ignored;
                }
                if !self.resolvers.allow(d.dst.ip()) {
                    self.stats.other_server += 1;
                    let ip = d.dst.ip();
                    if self.other_servers.len() < OTHER_SERVERS_NAMED
                        && !self.other_servers.contains(&ip)
                    {
                        self.other_servers.push(ip);
                        self.other_servers_new.push(ip);
                    }
                    return Seen::Ignored;
                }
                let key = Key {
                    netns: at.netns,
                    ifindex: at.ifindex,
                    client: d.src,
                    server: d.dst,
                    id: m.id,
                };
                self.remember(key, q.name, now);
                Seen::Query
            }
            (true, false) if d.src.port() == 53 => {
                let key = Key {
                    netns: at.netns,
                    ifindex: at.ifindex,
                    client: d.dst,
                    server: d.src,
                    id: m.id,
                };
                let Some(p) = self.pending.get(&key) else {
                    self.stats.rejected += 1;
                    return Seen::Rejected(Rejected::Unsolicited);
                };
                if m.question.as_ref().is_none_or(|q| q.name != p.name) {
                    // The query stays open: the real answer may still come.
                    self.stats.rejected += 1;
                    return Seen::Rejected(Rejected::OtherQuestion);
                }
                // One answer per query: a second one with the same id is a forger's.
                self.pending.remove(&key);
                if m.rcode != 0 {
                    return Seen::Ignored;
                }
                let (answers, off) = m.answers();
                self.stats.accepted += 1;
                self.stats.records_rejected += off as u64;
                Seen::Answers(answers)
            }
            _ => Seen::Ignored,
        }
    }

    fn remember(&mut self, key: Key, name: String, now: Instant) {
        self.stats.queries += 1;
        while self.pending.len() >= MAX_PENDING {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            if self.pending.remove(&old).is_some() {
                self.stats.queries_dropped += 1;
            }
        }
        let until = now + QUERY_TIMEOUT;
        // A retransmission replaces the entry; its older place in `order` then finds nothing
        // with that expiry and is skipped.
        self.pending.insert(key, Pending { name, until });
        self.order.push_back((until, key));
    }

    /// Forget queries whose time is up.
    fn expire(&mut self, now: Instant) {
        while let Some(&(until, key)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&key).is_some_and(|p| p.until == until) {
                self.pending.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sense::dns::parse::tests::{query, response};

    const A: u16 = 1;
    const CNAME: u16 = 5;

    fn dgram<'a>(src: &str, dst: &str, payload: &'a [u8]) -> Datagram<'a> {
        Datagram {
            src: src.parse().expect("src"),
            dst: dst.parse().expect("dst"),
            payload,
        }
    }

    const CLIENT: &str = "10.0.0.5:40000";

    /// A tracker whose resolver is `SERVER`'s address.
    fn tracker() -> Tracker {
        let mut t = Tracker::default();
        t.set_resolvers(Resolvers::new(vec!["10.0.0.1".parse().expect("addr")]));
        t
    }
    const OUT: Origin = Origin {
        outgoing: true,
        netns: 1,
        ifindex: 2,
        untrusted_ns: false,
    };
    const IN: Origin = Origin {
        outgoing: false,
        netns: 1,
        ifindex: 2,
        untrusted_ns: false,
    };
    const SERVER: &str = "10.0.0.1:53";

    /// A tracker that saw a query for `name` with id 0x1234 (the id `response` writes).
    fn asked(name: &str, t0: Instant) -> Tracker {
        let mut t = tracker();
        let q = query(name, 0x1234);
        assert_eq!(t.packet(&dgram(CLIENT, SERVER, &q), OUT, t0), Seen::Query);
        t
    }

    fn label(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in name.split('.') {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    #[test]
    fn a_matching_answer_is_believed() {
        let t0 = Instant::now();
        let mut t = asked("api.example.com", t0);
        let r = response(
            "api.example.com",
            &[("api.example.com", A, vec![192, 0, 2, 7])],
        );
        let seen = t.packet(&dgram(SERVER, CLIENT, &r), IN, t0);
        let Seen::Answers(a) = seen else {
            panic!("not believed: {seen:?}")
        };
        assert_eq!(a[0].names, vec!["api.example.com"]);
        assert_eq!(t.stats().accepted, 1);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn an_unsolicited_answer_is_rejected() {
        let t0 = Instant::now();
        let mut t = tracker();
        let r = response(
            "api.example.com",
            &[("api.example.com", A, vec![203, 0, 113, 9])],
        );
        assert_eq!(
            t.packet(&dgram(SERVER, CLIENT, &r), IN, t0),
            Seen::Rejected(Rejected::Unsolicited)
        );
        assert_eq!(t.stats().rejected, 1);
    }

    #[test]
    fn a_wrong_id_port_or_server_is_rejected() {
        let t0 = Instant::now();
        let mut t = asked("api.example.com", t0);
        let mut r = response(
            "api.example.com",
            &[("api.example.com", A, vec![203, 0, 113, 9])],
        );
        r[1] ^= 1; // another transaction id
        assert_eq!(
            t.packet(&dgram(SERVER, CLIENT, &r), IN, t0),
            Seen::Rejected(Rejected::Unsolicited)
        );
        r[1] ^= 1;
        for (src, dst) in [
            ("10.0.0.99:53", CLIENT),   // another server
            (SERVER, "10.0.0.5:40001"), // another client port
            (SERVER, "10.0.0.6:40000"), // another client
        ] {
            assert_eq!(
                t.packet(&dgram(src, dst, &r), IN, t0),
                Seen::Rejected(Rejected::Unsolicited),
                "{src} -> {dst}"
            );
        }
        assert_eq!(t.stats().rejected, 4);
        // The query is still open: the real answer is believed.
        assert!(matches!(
            t.packet(&dgram(SERVER, CLIENT, &r), IN, t0),
            Seen::Answers(_)
        ));
    }

    #[test]
    fn an_answer_about_another_name_is_rejected() {
        let t0 = Instant::now();
        let mut t = asked("api.example.com", t0);
        let r = response(
            "evil.example.net",
            &[("evil.example.net", A, vec![203, 0, 113, 9])],
        );
        assert_eq!(
            t.packet(&dgram(SERVER, CLIENT, &r), IN, t0),
            Seen::Rejected(Rejected::OtherQuestion)
        );
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn an_off_chain_cname_target_is_not_believed() {
        let t0 = Instant::now();
        let mut t = asked("api.example.com", t0);
        let r = response(
            "api.example.com",
            &[
                ("api.example.com", CNAME, label("edge.cdn.net")),
                ("edge.cdn.net", A, vec![192, 0, 2, 1]),
                // A record for a name the chain does not lead to.
                ("allowed.example.org", A, vec![203, 0, 113, 9]),
            ],
        );
        let Seen::Answers(a) = t.packet(&dgram(SERVER, CLIENT, &r), IN, t0) else {
            panic!("the on-chain part is believed")
        };
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].addr, "192.0.2.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(t.stats().records_rejected, 1);
        assert_eq!(t.stats().not_believed(), 1);
    }

    #[test]
    fn late_and_second_answers_are_rejected() {
        let t0 = Instant::now();
        let r = response(
            "api.example.com",
            &[("api.example.com", A, vec![192, 0, 2, 7])],
        );
        let mut t = asked("api.example.com", t0);
        let late = t0 + QUERY_TIMEOUT + Duration::from_millis(1);
        assert_eq!(
            t.packet(&dgram(SERVER, CLIENT, &r), IN, late),
            Seen::Rejected(Rejected::Unsolicited)
        );
        let mut t = asked("api.example.com", t0);
        assert!(matches!(
            t.packet(&dgram(SERVER, CLIENT, &r), IN, t0),
            Seen::Answers(_)
        ));
        assert_eq!(
            t.packet(&dgram(SERVER, CLIENT, &r), IN, t0),
            Seen::Rejected(Rejected::Unsolicited)
        );
    }

    #[test]
    fn direction_matters() {
        let t0 = Instant::now();
        let mut t = tracker();
        let q = query("api.example.com", 0x1234);
        // A query arriving (for a server on this host) opens nothing.
        assert_eq!(t.packet(&dgram(CLIENT, SERVER, &q), IN, t0), Seen::Ignored);
        assert_eq!(t.pending(), 0);
        // A response leaving (from a server on this host) is not an answer to believe.
        let mut t = asked("api.example.com", t0);
        let r = response(
            "api.example.com",
            &[("api.example.com", A, vec![192, 0, 2, 7])],
        );
        assert_eq!(t.packet(&dgram(SERVER, CLIENT, &r), OUT, t0), Seen::Ignored);
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn an_answer_counts_only_in_the_namespace_that_asked_and_only_where_the_host_owns_it() {
        let t0 = Instant::now();
        let r = response(
            "api.example.com",
            &[("api.example.com", A, vec![192, 0, 2, 7])],
        );
        // The same client, server and id, answered by another interface (a forger on a
        // container's veth, sending with the resolver's address): not this query's.
        let mut t = asked("api.example.com", t0);
        let by_veth = Origin { ifindex: 7, ..IN };
        assert_eq!(
            t.packet(&dgram(SERVER, CLIENT, &r), by_veth, t0),
            Seen::Rejected(Rejected::Unsolicited)
        );
        assert!(matches!(
            t.packet(&dgram(SERVER, CLIENT, &r), IN, t0),
            Seen::Answers(_)
        ));
        // The same client, server and id, answered in another namespace: not this query's.
        let mut t = asked("api.example.com", t0);
        assert_eq!(
            t.packet(&dgram(SERVER, CLIENT, &r), Origin { netns: 2, ..IN }, t0),
            Seen::Rejected(Rejected::Unsolicited)
        );
        assert_eq!(t.pending(), 1, "the real answer may still come");
        // A query from a namespace any user can make: not even remembered, so its answer is
        // unsolicited.
        let mut t = tracker();
        let own = Origin {
            untrusted_ns: true,
            ..Origin::sent(7)
        };
        let q = query("api.example.com", 0x1234);
        assert_eq!(t.packet(&dgram(CLIENT, SERVER, &q), own, t0), Seen::Ignored);
        assert_eq!(t.pending(), 0);
        assert_eq!(
            t.packet(&dgram(SERVER, CLIENT, &r), Origin::received(7), t0),
            Seen::Rejected(Rejected::Unsolicited)
        );
        assert_eq!((t.stats().rejected, t.stats().untrusted_ns), (1, 1));
        assert_eq!(t.stats().accepted, 0);
    }

    #[test]
    fn only_the_host_s_resolvers_and_loopback_servers_are_asked() {
        let t0 = Instant::now();
        // A server the asker chose (its own, anywhere): the query is not remembered.
        let mut t = tracker();
        let theirs = "198.51.100.53:53";
        let q = query("api.example.com", 0x1234);
        assert_eq!(
            t.packet(&dgram(CLIENT, theirs, &q), Origin::sent(1), t0),
            Seen::Ignored
        );
        let r = response(
            "api.example.com",
            &[("api.example.com", A, vec![198, 51, 100, 7])],
        );
        assert_eq!(
            t.packet(&dgram(theirs, CLIENT, &r), Origin::received(1), t0),
            Seen::Rejected(Rejected::Unsolicited)
        );
        assert_eq!((t.stats().other_server, t.stats().accepted), (1, 0));
        // Named once, however often it is asked, and a bounded number of them.
        assert_eq!(
            t.take_other_servers(),
            vec!["198.51.100.53".parse::<IpAddr>().expect("addr")]
        );
        t.packet(&dgram(CLIENT, theirs, &q), Origin::sent(1), t0);
        assert!(t.take_other_servers().is_empty());
        for i in 0..100u8 {
            let server = format!("198.51.101.{i}:53");
            t.packet(&dgram(CLIENT, &server, &q), Origin::sent(1), t0);
        }
        assert_eq!(t.take_other_servers().len(), OTHER_SERVERS_NAMED - 1);
        // A loopback server (a stub resolver on this host), IPv4, IPv6 and mapped.
        let rs = Resolvers::new(vec!["10.0.0.1".parse().expect("addr")]);
        for local in ["127.0.0.53", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(rs.allow(local.parse().expect("addr")), "{local}");
        }
        for other in ["10.0.0.2", "::ffff:10.0.0.2", "fd00::1", "0.0.0.0"] {
            assert!(!rs.allow(other.parse().expect("addr")), "{other}");
        }
        assert!(rs.allow("::ffff:10.0.0.1".parse().expect("addr")));
        let mapped = Resolvers::new(vec!["::ffff:10.0.0.9".parse().expect("addr")]);
        assert!(mapped.allow("10.0.0.9".parse().expect("addr")));
    }

    #[test]
    fn open_queries_are_bounded() {
        let t0 = Instant::now();
        let mut t = tracker();
        for i in 0..(MAX_PENDING + 10) {
            let q = query("x.example", i as u16);
            t.packet(&dgram(CLIENT, SERVER, &q), OUT, t0);
        }
        assert_eq!(t.pending(), MAX_PENDING);
        assert_eq!(t.stats().queries_dropped, 10);
        // All of them expire together, without a scan per packet.
        t.expire(t0 + QUERY_TIMEOUT);
        assert_eq!(t.pending(), 0);
        assert!(t.order.is_empty());
    }
}
