//! `nhiscope scope suggest`: a least-privilege scope for one NHI, learned from what its readers
//! and holders were seen doing, written as a registry entry a person reviews before adopting.
//!
//! The suggestion is exactly what was observed, nothing wider: the executables and users that
//! opened the credential successfully, the files they opened, and each destination its holders
//! connected to (by the DNS name they looked up when there was one, else the address alone)
//! with the ports used and, where their connections' first bytes said it (`request` events),
//! the server names on the wire (`sni:`) and the HTTP methods and paths (`methods:`, `paths:`;
//! a directory with more than [`PATHS_PER_DIR`] distinct paths becomes `dir/*`). With the
//! registry in force (`--registry`), what the NHI declares and no one used is listed as
//! removable, what was used outside it is marked, and the fields that are not learned from
//! behaviour (owner, expiry, max age, interactive use, holders) are kept.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    domain::event::Kind,
    domain::pattern::{HostGlob, PathGlob},
    domain::registry::{Interactive, Nhi, Principals},
    domain::wire::WireFields,
};

/// Distinct paths of one directory written one by one; more become `dir/*`.
pub const PATHS_PER_DIR: usize = 3;

/// Uses of one NHI alike (kind, process, file or destination, API, outcome, host), counted:
/// what the suggestion is learned from. The store's read API produces them
/// ([`crate::publish::store::read::Reader::scope_uses`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeRecord {
    /// An open, a connect or a request.
    pub kind: Kind,
    pub exe: String,
    pub uid: u32,
    /// The file opened (empty for a connect).
    pub path: String,
    /// The destination's address (empty for an open).
    pub daddr: String,
    pub dport: Option<u16>,
    /// The names the holder looked up for the destination.
    pub dns_names: Vec<String>,
    /// The open succeeded (connects always do).
    pub succeeded: bool,
    pub host: String,
    /// A request: its server name, HTTP method, host and path (ALPN and TLS version are not
    /// part of a scope).
    pub wire: WireFields,
    /// How many uses.
    pub n: u64,
    /// The first and the last of them, in seconds since the epoch.
    pub first_secs: u64,
    pub last_secs: u64,
}

/// Where holders went: a name they looked up, or an address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Name(String),
    Addr(IpAddr),
}

#[derive(Debug, Default)]
struct Seen {
    uses: u64,
    last: u64,
}

impl Seen {
    fn add(&mut self, n: u64, last: u64) {
        self.uses += n;
        self.last = self.last.max(last);
    }
}

/// The APIs requests to one destination named.
#[derive(Debug, Default)]
struct Apis {
    /// Server names (TLS SNI, HTTP `Host` without its port).
    names: BTreeMap<String, Seen>,
    methods: BTreeMap<String, Seen>,
    paths: BTreeMap<String, Seen>,
    /// Requests in all.
    requests: u64,
}

/// Everything observed of one NHI.
#[derive(Debug, Default)]
pub struct Observed {
    readers: BTreeMap<String, Seen>,
    uids: BTreeMap<u32, Seen>,
    paths: BTreeMap<String, Seen>,
    /// Destination -> port -> uses.
    places: BTreeMap<Place, BTreeMap<u16, Seen>>,
    /// Destination -> what its requests said.
    apis: BTreeMap<Place, Apis>,
    /// Opens refused by the kernel (by exe), not part of the scope.
    refused: BTreeMap<String, u64>,
    hosts: BTreeSet<String>,
    uses: u64,
    first: Option<u64>,
    last: Option<u64>,
}

impl Observed {
    pub fn from_records(rows: &[ScopeRecord]) -> Observed {
        let mut o = Observed::default();
        for r in rows {
            if r.kind == Kind::Request {
                // A request is a connection's first bytes: its connect counted the use.
                let Some(place) = place_of(r) else { continue };
                // Its port, should the connect be outside the window.
                let ports = o.places.entry(place.clone()).or_default();
                if let Some(port) = r.dport.filter(|p| *p != 0) {
                    ports.entry(port).or_default();
                }
                let a = o.apis.entry(place).or_default();
                a.requests += r.n;
                if let Some(name) = r.wire.server_name() {
                    a.names
                        .entry(name.to_owned())
                        .or_default()
                        .add(r.n, r.last_secs);
                }
                if let Some(m) = &r.wire.http_method {
                    a.methods
                        .entry(m.clone())
                        .or_default()
                        .add(r.n, r.last_secs);
                }
                if let Some(p) = &r.wire.http_path {
                    a.paths
                        .entry(masked_as_glob(p))
                        .or_default()
                        .add(r.n, r.last_secs);
                }
                continue;
            }
            o.hosts.insert(r.host.clone());
            o.uses += r.n;
            o.first = Some(o.first.map_or(r.first_secs, |f| f.min(r.first_secs)));
            o.last = Some(o.last.map_or(r.last_secs, |l| l.max(r.last_secs)));
            match r.kind {
                Kind::Open if !r.succeeded => {
                    *o.refused.entry(r.exe.clone()).or_default() += r.n;
                }
                Kind::Open => {
                    o.readers
                        .entry(r.exe.clone())
                        .or_default()
                        .add(r.n, r.last_secs);
                    o.uids.entry(r.uid).or_default().add(r.n, r.last_secs);
                    if !r.path.is_empty() {
                        o.paths
                            .entry(r.path.clone())
                            .or_default()
                            .add(r.n, r.last_secs);
                    }
                }
                Kind::Connect => {
                    let Some(place) = place_of(r) else { continue };
                    o.places
                        .entry(place)
                        .or_default()
                        .entry(r.dport.unwrap_or(0))
                        .or_default()
                        .add(r.n, r.last_secs);
                }
                _ => {}
            }
        }
        o
    }

    /// No use at all was seen.
    pub fn is_empty(&self) -> bool {
        self.uses == 0
    }
}

/// Where a connect or a request went: the first name DNS gave for its address, else the address.
fn place_of(r: &ScopeRecord) -> Option<Place> {
    match r.dns_names.first() {
        Some(name) => Some(Place::Name(name.clone())),
        None => r.daddr.parse::<IpAddr>().ok().map(Place::Addr),
    }
}

/// The `sni:`, `methods:` and `paths:` lines of an endpoint whose requests said `a`. Each is
/// written only when every value seen can be written as the registry's pattern for it (a
/// server name as a name glob, a method in capitals, a path as a literal path glob): otherwise
/// the endpoint would refuse requests that were seen, and a comment says why it is left out.
fn api_lines(y: &mut String, a: &Apis) {
    let last = |m: &BTreeMap<String, Seen>| m.values().map(|s| s.last).max().unwrap_or(0);
    if !a.names.is_empty() {
        let bad = a
            .names
            .keys()
            .find(|n| n.contains('*') || HostGlob::parse(n).is_err());
        match bad {
            Some(n) => {
                let _ = writeln!(
                    y,
                    "        # sni: not written, the server name {} is not a name pattern",
                    q(n)
                );
            }
            None => {
                let list: Vec<String> = a.names.keys().map(|n| q(n)).collect();
                let _ = writeln!(
                    y,
                    "        sni: [{}]  # {} request(s), last {}",
                    list.join(", "),
                    a.requests,
                    day(last(&a.names))
                );
            }
        }
    }
    if !a.methods.is_empty() {
        let bad = a
            .methods
            .keys()
            .find(|m| !crate::domain::wire::is_method(m.as_bytes()));
        match bad {
            Some(m) => {
                let _ = writeln!(
                    y,
                    "        # methods: not written, {} is not a method the registry takes",
                    q(m)
                );
            }
            None => {
                let list: Vec<String> = a
                    .methods
                    .iter()
                    .map(|(m, s)| format!("{m} ({})", s.uses))
                    .collect();
                // Quoted: `NULL` or `TRUE` would not read as text.
                let names: Vec<String> = a.methods.keys().map(|m| q(m)).collect();
                let _ = writeln!(
                    y,
                    "        methods: [{}]  # {}",
                    names.join(", "),
                    list.join(", ")
                );
            }
        }
    }
    if !a.paths.is_empty() {
        // A path the registry cannot take as a pattern that matches just it (one with a `*`):
        // no `paths:` at all rather than one that refuses it.
        let bad = a.paths.keys().find(|p| {
            p.split('/').any(|seg| seg != "*" && seg.contains('*'))
                || PathGlob::parse(p).map_or(true, |g| !g.matches(p))
        });
        if let Some(p) = bad {
            let _ = writeln!(
                y,
                "        # paths: not written, the path {} cannot be written as a pattern \
                 that matches only it",
                q(p)
            );
            return;
        }
        let mut by_dir: BTreeMap<&str, Vec<(&String, &Seen)>> = BTreeMap::new();
        for (p, s) in &a.paths {
            let dir = p.rsplit_once('/').map_or("", |(d, _)| d);
            by_dir.entry(dir).or_default().push((p, s));
        }
        let _ = writeln!(y, "        paths:");
        for (dir, paths) in by_dir {
            if paths.len() > PATHS_PER_DIR && !dir.is_empty() {
                let total: u64 = paths.iter().map(|(_, s)| s.uses).sum();
                let last = paths.iter().map(|(_, s)| s.last).max().unwrap_or(0);
                let _ = writeln!(
                    y,
                    "          - {}  # {} paths, {total} request(s), last {}, e.g. {}",
                    q(&format!("{dir}/*")),
                    paths.len(),
                    day(last),
                    q(paths[0].0)
                );
            } else {
                for (p, s) in paths {
                    let _ = writeln!(y, "          - {}  # {}", q(p), uses(s));
                }
            }
        }
    }
}

/// A path as a `paths:` pattern: a segment masked as a secret (`***`, see `wire::normal_path`)
/// becomes `*`, which matches it (and any other token in its place).
fn masked_as_glob(path: &str) -> String {
    if !path.contains(crate::domain::redact::MASK) {
        return path.to_owned();
    }
    path.split('/')
        .map(|seg| {
            if seg == crate::domain::redact::MASK {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A YAML double-quoted scalar, for values and comments alike: everything it writes comes from
/// processes, hosts and users, and a line break in an executable's name must not add a line. A
/// JSON string is a YAML double-quoted scalar; JSON leaves DEL, the C1 controls (NEL is a line
/// break to YAML 1.1), the line and paragraph separators and the bidirectional overrides as
/// they are, so they are escaped too.
fn q(s: &str) -> String {
    let json = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    if !json.chars().any(crate::domain::text::unprintable) {
        return json;
    }
    json.chars()
        .map(|c| match c {
            c if crate::domain::text::unprintable(c) => format!("\\u{:04x}", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

fn day(secs: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

fn uses(s: &Seen) -> String {
    format!("{} use(s), last {}", s.uses, day(s.last))
}

/// Whether a declared principal set admits this executable (uid not considered).
fn declares_exe(p: Option<&Principals>, exe: &str) -> bool {
    p.is_some_and(|p| p.exe.iter().any(|g| g.matches(exe)))
}

/// The suggested registry entry for `id`, with comments; `declared` is the NHI as the registry
/// in force has it. `window` names the time range the observations cover.
pub fn suggest(id: &str, o: &Observed, declared: Option<&Nhi>, window: &str) -> String {
    let mut y = String::new();
    let hosts: Vec<&str> = o.hosts.iter().map(String::as_str).collect();
    let _ = writeln!(
        y,
        "# Least-privilege scope for NHI {}, learned from {} use(s) on {} host(s) ({}) {window}{}.",
        q(id),
        o.uses,
        hosts.len(),
        hosts.iter().map(|h| q(h)).collect::<Vec<_>>().join(", "),
        match (o.first, o.last) {
            (Some(f), Some(l)) => format!(", first {} last {}", day(f), day(l)),
            _ => String::new(),
        }
    );
    let _ = writeln!(
        y,
        "# It allows exactly what was observed: review it, widen what must be wider, then put it \
         in the registry."
    );
    if o.is_empty() {
        let _ = writeln!(
            y,
            "# Nothing was observed: an NHI unused for this long may not be needed at all."
        );
    }
    for (exe, n) in &o.refused {
        let _ = writeln!(
            y,
            "# {} tried to open the credential {n} time(s) and was refused by the kernel; \
             it is not in the suggested readers.",
            q(exe)
        );
    }
    let _ = writeln!(y, "nhis:");
    let _ = writeln!(y, "  - id: {}", q(id));
    if let Some(owner) = declared.and_then(|d| d.owner.as_deref()) {
        let _ = writeln!(y, "    owner: {}", q(owner));
    }

    // Credentials: the declared patterns stay (they name what the NHI is); else the files seen.
    let _ = writeln!(y, "    credentials:");
    match declared {
        Some(d) => {
            for g in &d.credentials {
                let text = g.to_string();
                let seen: u64 = o
                    .paths
                    .iter()
                    .filter(|(p, _)| g.matches(p))
                    .map(|(_, s)| s.uses)
                    .sum();
                let note = if seen == 0 {
                    "  # declared; no open seen".to_owned()
                } else {
                    format!("  # {seen} open(s)")
                };
                let _ = writeln!(y, "      - {}{note}", q(&text));
            }
        }
        None => {
            for (p, s) in &o.paths {
                let _ = writeln!(y, "      - {}  # {}", q(p), uses(s));
            }
            if o.paths.is_empty() {
                let _ = writeln!(y, "      []  # no file was seen opened: add its path");
            }
        }
    }

    // Readers: exactly the executables and users that read it.
    if !o.readers.is_empty() {
        let dr = declared.and_then(|d| d.readers.as_ref());
        let _ = writeln!(y, "    readers:");
        let _ = writeln!(y, "      exe:");
        for (exe, s) in &o.readers {
            let mark = match declared {
                Some(d) if d.readers.is_some() && !declares_exe(dr, exe) => {
                    " · OUTSIDE the declared readers"
                }
                _ => "",
            };
            let _ = writeln!(y, "        - {}  # {}{mark}", q(exe), uses(s));
        }
        let _ = writeln!(y, "      uid:");
        for (uid, s) in &o.uids {
            let _ = writeln!(y, "        - {uid}  # {}", uses(s));
        }
        if let Some(p) = dr {
            for g in &p.exe {
                if !o.readers.keys().any(|exe| g.matches(exe)) {
                    let _ = writeln!(
                        y,
                        "      # declared, never seen (remove?): exe {}",
                        q(&g.to_string())
                    );
                }
            }
            for uid in &p.uid {
                if !o.uids.contains_key(uid) {
                    let _ = writeln!(y, "      # declared, never seen (remove?): uid {uid}");
                }
            }
        }
    }

    if let Some(h) = declared.and_then(|d| d.holders.as_ref()) {
        let _ = writeln!(y, "    holders:  # kept as declared");
        principals(&mut y, h);
    }

    // Endpoints: each destination with the ports used.
    let _ = writeln!(y, "    endpoints:");
    if o.places.is_empty() {
        let _ = writeln!(y, "      []  # its holders made no connection");
    }
    for (place, ports) in &o.places {
        match place {
            Place::Name(n) => {
                let _ = writeln!(y, "      - host: {}", q(n));
            }
            Place::Addr(a) => {
                let bits = if a.is_ipv4() { 32 } else { 128 };
                let _ = writeln!(y, "      - cidr: {}", q(&format!("{a}/{bits}")));
            }
        }
        let list: Vec<String> = ports.keys().map(u16::to_string).collect();
        let total: u64 = ports.values().map(|s| s.uses).sum();
        let last = ports.values().map(|s| s.last).max().unwrap_or(0);
        if total == 0 {
            // Only requests were seen: their connects are before the window.
            let _ = writeln!(
                y,
                "        ports: [{}]  # from requests; no connection seen",
                list.join(", ")
            );
        } else {
            let _ = writeln!(
                y,
                "        ports: [{}]  # {total} connection(s), last {}",
                list.join(", "),
                day(last)
            );
        }
        if let Some(a) = o.apis.get(place) {
            api_lines(&mut y, a);
        }
    }
    if let Some(eps) = declared.and_then(|d| d.endpoints.as_ref()) {
        for e in eps {
            let used = o.places.iter().any(|(place, ports)| {
                ports.keys().any(|p| match place {
                    Place::Name(n) => e.allows(IpAddr::from([0, 0, 0, 0]), *p, &[n.as_str()]),
                    Place::Addr(a) => e.allows(*a, *p, &[] as &[&str]),
                })
            });
            if !used {
                let what = match (&e.host, &e.cidr) {
                    (Some(h), _) => format!("host {}", q(&h.to_string())),
                    (None, Some(c)) => format!("cidr {}", q(&c.to_string())),
                    _ => "?".to_owned(),
                };
                let _ = writeln!(y, "      # declared, never used (remove?): {what}");
            }
        }
    }

    if let Some(d) = declared {
        if let Some(t) = d.expires {
            let _ = writeln!(y, "    expires: {}", humantime::format_rfc3339_seconds(t));
        }
        if let Some(a) = d.max_age {
            let _ = writeln!(y, "    max_age: {}", humantime::format_duration(a));
        }
        let _ = writeln!(
            y,
            "    interactive: {}",
            match d.interactive {
                Interactive::Deny => "deny",
                Interactive::Allow => "allow",
            }
        );
    }
    y
}

fn principals(y: &mut String, p: &Principals) {
    if !p.exe.is_empty() {
        let list: Vec<String> = p.exe.iter().map(|g| q(&g.to_string())).collect();
        let _ = writeln!(y, "      exe: [{}]", list.join(", "));
    }
    if !p.uid.is_empty() {
        let list: Vec<String> = p.uid.iter().map(u32::to_string).collect();
        let _ = writeln!(y, "      uid: [{}]", list.join(", "));
    }
    if !p.cgroup.is_empty() {
        let list: Vec<String> = p.cgroup.iter().map(|g| q(&g.to_string())).collect();
        let _ = writeln!(y, "      cgroup: [{}]", list.join(", "));
    }
    if !p.container.is_empty() {
        let list: Vec<String> = p.container.iter().map(|c| q(c)).collect();
        let _ = writeln!(y, "      container: [{}]", list.join(", "));
    }
}

/// `over the last 7d` / `from ... to ...`.
pub fn window_text(from: SystemTime, to: SystemTime) -> String {
    format!(
        "between {} and {}",
        humantime::format_rfc3339_seconds(from),
        humantime::format_rfc3339_seconds(to)
    )
}

#[cfg(test)]
mod tests;
