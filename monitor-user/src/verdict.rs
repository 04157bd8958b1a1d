//! Verdicts: is this use of an NHI inside the scope it was registered with?
//!
//! Pure functions of the registry entry and the facts of one event; every drift kind comes with
//! a sentence a person can act on, naming the NHI, the process and what was outside the scope.

use std::{net::IpAddr, time::SystemTime};

use crate::{
    event::DriftKind,
    registry::{Endpoint, Nhi, Principals},
};

/// The process behind an event, as the verdict needs it.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    pub pid: u32,
    pub exe: &'a str,
    pub comm: &'a str,
    pub uid: u32,
}

impl Actor<'_> {
    fn describe(&self) -> String {
        let name = if self.exe.is_empty() {
            self.comm
        } else {
            self.exe
        };
        format!("{name} (pid {}, uid {})", self.pid, self.uid)
    }
}

/// Drift found on one event: kinds in a stable order, and one sentence per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub kinds: Vec<DriftKind>,
    pub reasons: Vec<String>,
}

impl Findings {
    fn add(&mut self, kind: DriftKind, reason: String) {
        self.kinds.push(kind);
        self.reasons.push(reason);
    }

    pub fn is_drift(&self) -> bool {
        !self.kinds.is_empty()
    }

    pub fn reason(&self) -> String {
        self.reasons.join(" ")
    }
}

/// Does the actor fit these principals? Every list that is given must match.
pub fn principals_match(p: &Principals, actor: &Actor<'_>) -> bool {
    (p.exe.is_empty() || p.exe.iter().any(|g| g.matches(actor.exe)))
        && (p.uid.is_empty() || p.uid.contains(&actor.uid))
}

fn lifetime(nhi: &Nhi, actor: &Actor<'_>, now: SystemTime, what: &str, f: &mut Findings) {
    if let Some(exp) = nhi.expires {
        if now > exp {
            f.add(
                DriftKind::Expired,
                format!(
                    "NHI {} expired at {} and {} still {what}.",
                    nhi.id,
                    humantime::format_rfc3339_seconds(exp),
                    actor.describe()
                ),
            );
        }
    }
}

/// An open of one of `nhi`'s credential files. `mtime` is the file's modification time when it
/// could be read (metadata only, never the contents).
pub fn assess_open(
    nhi: &Nhi,
    actor: &Actor<'_>,
    path: &str,
    now: SystemTime,
    mtime: Option<SystemTime>,
) -> Findings {
    let mut f = Findings::default();
    if let Some(readers) = &nhi.readers {
        if !principals_match(readers, actor) {
            f.add(
                DriftKind::ReaderOutOfScope,
                format!(
                    "{} opened {path}, a credential of NHI {}, but is not among its declared readers.",
                    actor.describe(),
                    nhi.id
                ),
            );
        }
    }
    lifetime(nhi, actor, now, &format!("opened {path}"), &mut f);
    if let (Some(max_age), Some(mtime)) = (nhi.max_age, mtime) {
        if let Ok(age) = now.duration_since(mtime) {
            if age > max_age {
                f.add(
                    DriftKind::StaleCredential,
                    format!(
                        "{path} of NHI {} was last changed {} ago, longer than its max_age of {}.",
                        nhi.id,
                        humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
                        humantime::format_duration(max_age)
                    ),
                );
            }
        }
    }
    f
}

/// Does an endpoint allow this destination? `names` are the hostnames DNS gave for `addr`.
pub fn endpoint_allows(e: &Endpoint, addr: IpAddr, port: u16, names: &[String]) -> bool {
    let port_ok = match e.port {
        Some(p) => p == port,
        None => e.ports.is_empty() || e.ports.contains(&port),
    };
    let addr_ok = match (&e.cidr, &e.host) {
        (Some(c), _) => c.contains(addr),
        (None, Some(h)) => names.iter().any(|n| h.matches(n)),
        (None, None) => true,
    };
    port_ok && addr_ok
}

/// A connection by a holder of `nhi`.
pub fn assess_connect(
    nhi: &Nhi,
    actor: &Actor<'_>,
    addr: IpAddr,
    port: u16,
    names: &[String],
    now: SystemTime,
) -> Findings {
    let mut f = Findings::default();
    if let Some(endpoints) = &nhi.endpoints {
        if !endpoints
            .iter()
            .any(|e| endpoint_allows(e, addr, port, names))
        {
            let dest = match names.first() {
                Some(n) => format!("{n} ({})", sockaddr(addr, port)),
                None => sockaddr(addr, port),
            };
            f.add(
                DriftKind::EndpointOutOfScope,
                format!(
                    "{}, holding NHI {}, connected to {dest}, which is not among its declared endpoints.",
                    actor.describe(),
                    nhi.id
                ),
            );
        }
    }
    lifetime(
        nhi,
        actor,
        now,
        &format!("connected to {}", sockaddr(addr, port)),
        &mut f,
    );
    f
}

/// `addr:port`, with brackets for IPv6.
pub fn sockaddr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}
