//! A connection's first bytes, joined from the kernel's records of them (`probes::wire`: one
//! record per packet with a payload, up to `WIRE_CHUNKS` packets and `WIRE_CAP` bytes in all).
//!
//! The bytes are put in order by the TCP sequence numbers the records carry, so a sender that
//! splits its first bytes (a decoy of a few bytes, a ClientHello over several records or
//! packets) is read as whole as an honest one; a retransmitted segment adds nothing. A
//! connection is read as soon as its bytes say all they will ([`super::Read::Done`]), at the
//! kernel's last record for it, after [`WAIT`] without one, at its process's end, or when
//! [`PENDING_MAX`] others wait and it is the oldest. What is read then is what there is (an
//! unfinished ClientHello is [`Readout::Unreadable`]). Records of a connection already read
//! are dropped: only a connection's first bytes are read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use monitor_common::{EventHeader, RequestEvent, WIRE_CAP, WIRE_LAST, WIRE_UNREADABLE};

use super::{read, Read, Reading, Readout, WireFields};

/// Connections whose first bytes are still being joined, at most.
pub const PENDING_MAX: usize = 1024;
/// How long a connection's first bytes may stop coming before they are read as they are.
pub const WAIT: Duration = Duration::from_secs(1);

/// The connection some first bytes were sent on: a request record without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub hdr: EventHeader,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The socket's network namespace (cookie): where its address's DNS names are looked up.
    pub netns: u64,
}

impl Conn {
    fn of(r: &RequestEvent) -> Self {
        Self {
            hdr: r.hdr,
            family: r.family,
            sport: r.sport,
            dport: r.dport,
            saddr: r.saddr,
            daddr: r.daddr,
            netns: r.netns,
        }
    }
}

#[derive(Debug)]
struct Pending {
    conn: Conn,
    /// The sequence number of the first byte.
    base: u32,
    bytes: Vec<u8>,
    /// When its first record came.
    since: Instant,
}

/// The connections whose first bytes are being joined, by socket cookie.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: HashMap<u64, Pending>,
}

impl Joiner {
    /// Connections waiting for more of their first bytes.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A record of some first bytes, received at `now`: the connections read because of it go
    /// to `out` (its own, when its bytes are all there; the oldest waiting one, when too many
    /// wait).
    pub fn add(&mut self, r: &RequestEvent, now: Instant, out: &mut Vec<(Conn, Reading)>) {
        let data = &r.data[..(r.len as usize).min(r.data.len())];
        if r.flags & WIRE_UNREADABLE != 0 {
            let conn = self
                .pending
                .remove(&r.cookie)
                .map_or_else(|| Conn::of(r), |p| p.conn);
            out.push((conn, unreadable()));
            return;
        }
        let last = r.flags & WIRE_LAST != 0;
        if r.chunk == 0 {
            // The socket connected again before its first bytes were all read: the earlier
            // connection's are read as they are.
            if let Some(old) = self.pending.remove(&r.cookie) {
                out.push((old.conn, finish(&old.bytes)));
            }
            if data.is_empty() {
                // The kernel could not copy the packet: what it said is not known.
                self.pending.remove(&r.cookie);
                out.push((Conn::of(r), unreadable()));
                return;
            }
            let p = Pending {
                conn: Conn::of(r),
                base: r.seq,
                bytes: data.to_vec(),
                since: now,
            };
            match read(&p.bytes) {
                Read::Done(reading) => out.push((p.conn, reading)),
                Read::More(reading) if last => out.push((p.conn, reading)),
                Read::More(_) => {
                    if self.pending.len() >= PENDING_MAX {
                        self.evict_oldest(out);
                    }
                    self.pending.insert(r.cookie, p);
                }
            }
            return;
        }
        // A later packet: of a connection read already, it is dropped.
        let Some(p) = self.pending.get_mut(&r.cookie) else {
            return;
        };
        let at = r.seq.wrapping_sub(p.base) as usize;
        let gap = at > p.bytes.len() || data.is_empty();
        if !gap {
            // A retransmitted segment overlaps what is there: only its new bytes count.
            let new = &data[(p.bytes.len() - at).min(data.len())..];
            let room = WIRE_CAP.saturating_sub(p.bytes.len());
            p.bytes.extend_from_slice(&new[..new.len().min(room)]);
        }
        let reading = match read(&p.bytes) {
            Read::Done(reading) => Some(reading),
            // Bytes missing in between (a record lost): what came before is all there is.
            Read::More(reading) if last || gap => Some(reading),
            Read::More(_) => None,
        };
        if let Some(reading) = reading {
            if let Some(p) = self.pending.remove(&r.cookie) {
                out.push((p.conn, reading));
            }
        }
    }

    /// Connections whose first record came more than [`WAIT`] before `now` (all of them with
    /// `now` as `None`, at the daemon's stop), read as they are.
    pub fn expire(&mut self, now: Option<Instant>, out: &mut Vec<(Conn, Reading)>) {
        if self.pending.is_empty() {
            return;
        }
        let due =
            |p: &Pending| now.is_none_or(|now| now.saturating_duration_since(p.since) >= WAIT);
        self.take(due, out);
    }

    /// The connections of process `pid`, which ended: read as they are.
    pub fn end_of(&mut self, pid: u32, out: &mut Vec<(Conn, Reading)>) {
        if self.pending.is_empty() {
            return;
        }
        self.take(|p| p.conn.hdr.pid == pid, out);
    }

    fn take(&mut self, due: impl Fn(&Pending) -> bool, out: &mut Vec<(Conn, Reading)>) {
        let mut done: Vec<(u64, Instant)> = self
            .pending
            .iter()
            .filter(|(_, p)| due(p))
            .map(|(&k, p)| (k, p.since))
            .collect();
        // Oldest first, as they came.
        done.sort_unstable_by_key(|&(k, since)| (since, k));
        for (k, _) in done {
            if let Some(p) = self.pending.remove(&k) {
                out.push((p.conn, finish(&p.bytes)));
            }
        }
    }

    fn evict_oldest(&mut self, out: &mut Vec<(Conn, Reading)>) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(&k, p)| (p.since, k))
            .map(|(&k, _)| k);
        if let Some(p) = oldest.and_then(|k| self.pending.remove(&k)) {
            out.push((p.conn, finish(&p.bytes)));
        }
    }
}

fn finish(bytes: &[u8]) -> Reading {
    super::read_whole(bytes)
}

fn unreadable() -> Reading {
    Reading {
        fields: WireFields::default(),
        readout: Readout::Unreadable,
    }
}

#[cfg(test)]
mod tests;
