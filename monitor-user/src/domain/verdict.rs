//! Verdicts: is this use of an NHI inside the scope it was registered with?
//!
//! Pure functions of the registry entry and the facts of one event. Every sentence an event's
//! `reason` gives is written here: each drift kind with a sentence a person can act on (naming
//! the NHI, the process and what was outside the scope), and the sentences of uses in scope,
//! of unregistered credentials and of holders starting a program or exiting.
//!
//! Most events carry one of these sentences, so they are written with [`sentence!`], which
//! appends their pieces to one buffer, instead of `format!` (whose machinery cost more than the
//! rest of the decision).

use std::{fmt::Write as _, net::IpAddr, time::SystemTime};

use crate::{
    domain::event::{DriftKind, Verdict},
    domain::registry::{Interactive, Nhi, Placement},
    domain::wire::{Readout, WireFields},
};

/// A piece of a sentence: text, a number, an address.
trait Piece {
    fn put(&self, out: &mut String);
}

impl Piece for str {
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for String {
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl<T: Piece + ?Sized> Piece for &T {
    fn put(&self, out: &mut String) {
        (**self).put(out);
    }
}

impl Piece for u64 {
    fn put(&self, out: &mut String) {
        // SAFETY: `uint` appends ASCII digits only, so the string stays UTF-8.
        crate::domain::event::json::uint(unsafe { out.as_mut_vec() }, *self);
    }
}

impl Piece for u32 {
    fn put(&self, out: &mut String) {
        u64::from(*self).put(out);
    }
}

impl Piece for u16 {
    fn put(&self, out: &mut String) {
        u64::from(*self).put(out);
    }
}

/// `addr:port`, with brackets for IPv6 (as `SocketAddr` writes it).
struct SockAddr(IpAddr, u16);

impl Piece for SockAddr {
    fn put(&self, out: &mut String) {
        match self.0 {
            IpAddr::V4(a) => {
                for (i, o) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    u64::from(o).put(out);
                }
            }
            // Writing into a String cannot fail.
            IpAddr::V6(a) => {
                let _ = write!(out, "[{a}]");
            }
        }
        out.push(':');
        self.1.put(out);
    }
}

/// The sentence made of the pieces, in order: `sentence!(name, " (pid ", pid, ")")`.
macro_rules! sentence {
    ($($piece:expr),+ $(,)?) => {{
        let mut out = String::with_capacity(192);
        $(Piece::put(&$piece, &mut out);)+
        out
    }};
}

/// The decision on one event: its verdict, its drift kinds (in a stable order) and its
/// sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub drift: Vec<DriftKind>,
    pub reason: String,
}

impl Decision {
    fn ok(reason: String) -> Self {
        Self {
            verdict: Verdict::Ok,
            drift: Vec::new(),
            reason,
        }
    }

    /// Drift when `f` found some, else in scope with the sentence `ok` makes.
    fn of(f: Findings, ok: impl FnOnce() -> String) -> Self {
        if f.is_drift() {
            Self {
                verdict: Verdict::Drift,
                reason: f.reason,
                drift: f.kinds,
            }
        } else {
            Self::ok(ok())
        }
    }
}

/// The process behind an event, as the verdict needs it.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    pub pid: u32,
    pub exe: &'a str,
    /// The script `exe` runs, if any: `readers.exe` matches either.
    pub script: Option<&'a str>,
    pub comm: &'a str,
    pub uid: u32,
    /// The process is in a human's terminal session (see `Engine::is_interactive`).
    pub interactive: bool,
    /// Its cgroup and container.
    pub at: Placement<'a>,
}

impl<'a> Actor<'a> {
    /// The actor behind an event already filled with its process fields.
    pub fn of(
        e: &'a crate::domain::event::Event,
        interactive: bool,
        cgroup: Option<&'a str>,
    ) -> Self {
        Actor {
            pid: e.pid,
            exe: &e.exe,
            script: e.script.as_deref(),
            comm: &e.comm,
            uid: e.uid,
            interactive,
            at: Placement {
                cgroup,
                container: e.container.as_deref(),
            },
        }
    }

    /// What the process runs: its executable, or its command name when that is unknown.
    fn name(&self) -> &'a str {
        if self.exe.is_empty() {
            self.comm
        } else {
            self.exe
        }
    }

    /// `name (pid N, uid N)`.
    fn describe(&self) -> Described<'_> {
        Described(self)
    }
}

/// An actor as drift sentences name it: `name (pid N, uid N)`.
struct Described<'a>(&'a Actor<'a>);

impl Piece for Described<'_> {
    fn put(&self, out: &mut String) {
        let a = self.0;
        out.push_str(a.name());
        out.push_str(" (pid ");
        a.pid.put(out);
        out.push_str(", uid ");
        a.uid.put(out);
        out.push(')');
    }
}

/// A holder as in-scope sentences name it: `name (pid N), holding NHI id`.
struct Holding<'a>(&'a Actor<'a>, &'a str);

impl Piece for Holding<'_> {
    fn put(&self, out: &mut String) {
        out.push_str(self.0.name());
        out.push_str(" (pid ");
        self.0.pid.put(out);
        out.push_str("), holding NHI ");
        out.push_str(self.1);
    }
}

/// Drift found on one event: kinds in a stable order, and their sentences, one per kind,
/// joined by a space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Findings {
    kinds: Vec<DriftKind>,
    reason: String,
}

impl Findings {
    fn add(&mut self, kind: DriftKind, reason: String) {
        self.kinds.push(kind);
        if self.reason.is_empty() {
            self.reason = reason;
        } else {
            self.reason.push(' ');
            self.reason.push_str(&reason);
        }
    }

    fn is_drift(&self) -> bool {
        !self.kinds.is_empty()
    }
}

/// What a use did, as the sentences of [`lifetime`] say it (`opened /x`, `connected to a:p`).
#[derive(Clone, Copy)]
enum Use<'a> {
    Opened(&'a str),
    Connected(IpAddr, u16),
}

impl Piece for Use<'_> {
    fn put(&self, out: &mut String) {
        match *self {
            Use::Opened(path) => {
                out.push_str("opened ");
                out.push_str(path);
            }
            Use::Connected(addr, port) => {
                out.push_str("connected to ");
                SockAddr(addr, port).put(out);
            }
        }
    }
}

/// Drift that any use can have: expiry and interactive use.
fn lifetime(nhi: &Nhi, actor: &Actor<'_>, now: SystemTime, what: Use<'_>, f: &mut Findings) {
    if actor.interactive && nhi.interactive == Interactive::Deny {
        f.add(
            DriftKind::InteractiveUse,
            sentence!(
                actor.describe(),
                " ",
                what,
                " from a human's terminal session, and NHI ",
                nhi.id,
                " does not allow interactive use."
            ),
        );
    }
    if let Some(exp) = nhi.expires {
        if now > exp {
            f.add(
                DriftKind::Expired,
                sentence!(
                    "NHI ",
                    nhi.id,
                    " expired at ",
                    humantime::format_rfc3339_seconds(exp).to_string(),
                    " and ",
                    actor.describe(),
                    " still ",
                    what,
                    "."
                ),
            );
        }
    }
}

/// An open of one of `nhi`'s credential files. `mtime` is the file's modification time when it
/// could be read (metadata only, never the contents).
fn assess_open(
    nhi: &Nhi,
    actor: &Actor<'_>,
    path: &str,
    now: SystemTime,
    mtime: Option<SystemTime>,
) -> Findings {
    let mut f = Findings::default();
    if let Some(readers) = &nhi.readers {
        if !readers.admits(actor.exe, actor.script, actor.uid, actor.at) {
            f.add(
                DriftKind::ReaderOutOfScope,
                sentence!(
                    actor.describe(),
                    " opened ",
                    path,
                    ", a credential of NHI ",
                    nhi.id,
                    ", but is not among its declared readers."
                ),
            );
        }
    }
    lifetime(nhi, actor, now, Use::Opened(path), &mut f);
    if let (Some(max_age), Some(mtime)) = (nhi.max_age, mtime) {
        if let Ok(age) = now.duration_since(mtime) {
            if age > max_age {
                f.add(
                    DriftKind::StaleCredential,
                    sentence!(
                        path,
                        " of NHI ",
                        nhi.id,
                        " was last changed ",
                        humantime::format_duration(std::time::Duration::from_secs(age.as_secs()))
                            .to_string(),
                        " ago, longer than its max_age of ",
                        humantime::format_duration(max_age).to_string(),
                        "."
                    ),
                );
            }
        }
    }
    f
}

/// A connection by a holder of `nhi`.
fn assess_connect(
    nhi: &Nhi,
    actor: &Actor<'_>,
    addr: IpAddr,
    port: u16,
    names: &[String],
    existing: bool,
    now: SystemTime,
) -> Findings {
    let mut f = Findings::default();
    if let Some(endpoints) = &nhi.endpoints {
        if !endpoints.iter().any(|e| e.allows(addr, port, names)) {
            let (name, open, close) = match names.first() {
                Some(n) => (n.as_str(), " (", ")"),
                None => ("", "", ""),
            };
            f.add(
                DriftKind::EndpointOutOfScope,
                sentence!(
                    actor.describe(),
                    ", holding NHI ",
                    nhi.id,
                    connected(existing),
                    name,
                    open,
                    SockAddr(addr, port),
                    close,
                    before_use(existing),
                    ", which is not among its declared endpoints."
                ),
            );
        }
    }
    lifetime(nhi, actor, now, Use::Connected(addr, port), &mut f);
    f
}

/// An open of `path`, a credential of `nhi` (`failed`: the open failed): drift, or in scope.
pub fn open(
    nhi: &Nhi,
    actor: &Actor<'_>,
    path: &str,
    failed: bool,
    now: SystemTime,
    mtime: Option<SystemTime>,
) -> Decision {
    Decision::of(assess_open(nhi, actor, path, now, mtime), || {
        sentence!(
            actor.name(),
            " ",
            opened(failed),
            " ",
            path,
            ", a credential of NHI ",
            nhi.id,
            ", within its declared scope."
        )
    })
}

/// An open of `path`, which a watch pattern matches and no NHI owns.
pub fn unregistered_open(actor: &Actor<'_>, path: &str, failed: bool) -> Decision {
    Decision {
        verdict: Verdict::Unregistered,
        drift: Vec::new(),
        reason: sentence!(
            actor.name(),
            " ",
            opened(failed),
            " ",
            path,
            ", a watched credential location that no registered NHI owns."
        ),
    }
}

fn opened(failed: bool) -> &'static str {
    if failed {
        "tried to open"
    } else {
        "opened"
    }
}

/// A connection to `addr:port` (known by the DNS names `names`) by a holder of `nhi`
/// (`existing`: one it already had open when it read the credential, judged at that read):
/// drift, or in scope.
pub fn connect(
    nhi: &Nhi,
    actor: &Actor<'_>,
    addr: IpAddr,
    port: u16,
    names: &[String],
    existing: bool,
    now: SystemTime,
) -> Decision {
    Decision::of(
        assess_connect(nhi, actor, addr, port, names, existing, now),
        || {
            sentence!(
                Holding(actor, &nhi.id),
                connected(existing),
                SockAddr(addr, port),
                before_use(existing),
                if nhi.endpoints.is_some() {
                    ", a declared endpoint"
                } else {
                    "; its endpoints are not restricted"
                },
                "."
            )
        },
    )
}

/// How a sentence says that a holder connected: as it did, or as it already had.
fn connected(existing: bool) -> &'static str {
    if existing {
        ", had a connection open to "
    } else {
        ", connected to "
    }
}

fn before_use(existing: bool) -> &'static str {
    if existing {
        " when it read the credential"
    } else {
        ""
    }
}

/// What a holder of an NHI did to its process: the use of the NHI is bounded by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// It started a new program (exec).
    Exec,
    /// It exited.
    Exit,
}

/// A holder of NHI `id` started a new program or exited (always in scope).
pub fn holder(actor: &Actor<'_>, id: &str, what: Lifecycle) -> Decision {
    Decision::ok(sentence!(
        Holding(actor, id),
        ", ",
        match what {
            Lifecycle::Exec => "started a new program",
            Lifecycle::Exit => "exited",
        },
        "."
    ))
}

/// The first bytes of a connection to `addr:port` (known by the DNS names `names`) by a holder
/// of `nhi`, as `wire` read them (`readout`): whether the API they name is a declared one
/// (`api_out_of_scope`; a request at an endpoint that is not declared is not at a declared API
/// either) and their server name one DNS gave for the address (`name_mismatch`). The
/// connection's own drift (where, when, by whom) is its connect event's: a request does not
/// repeat it.
pub fn request(
    nhi: &Nhi,
    actor: &Actor<'_>,
    (addr, port): (IpAddr, u16),
    names: &[String],
    wire: &WireFields,
    readout: Readout,
) -> Decision {
    let mut f = Findings::default();
    let server = wire.server_name();
    if let Some(endpoints) = &nhi.endpoints {
        let method = wire.http_method.as_deref();
        let path = wire.http_path.as_deref();
        let mut at = endpoints.iter().filter(|e| e.allows(addr, port, names));
        let mut declared = false;
        let allowed = at.any(|e| {
            declared = true;
            e.allows_api(server, method, path, readout)
        });
        if !allowed {
            f.add(
                DriftKind::ApiOutOfScope,
                sentence!(
                    actor.describe(),
                    ", holding NHI ",
                    nhi.id,
                    ", sent ",
                    Api(wire, readout),
                    " to ",
                    SockAddr(addr, port),
                    if declared {
                        ", which is not among the APIs declared for that endpoint."
                    } else {
                        ", which is not a declared endpoint."
                    }
                ),
            );
        }
        if let Some(server) = server {
            let known = names.iter().any(|n| {
                n.strip_suffix('.')
                    .unwrap_or(n)
                    .eq_ignore_ascii_case(server)
            });
            // An address DNS named nothing for is judged only where no address block allows
            // it: a `cidr` entry declares the address itself, whatever name it is asked by.
            let by_cidr = names.is_empty()
                && endpoints
                    .iter()
                    .any(|e| e.cidr.is_some() && e.allows(addr, port, names));
            if !known && !by_cidr {
                f.add(
                    DriftKind::NameMismatch,
                    sentence!(
                        actor.describe(),
                        ", holding NHI ",
                        nhi.id,
                        ", asked ",
                        SockAddr(addr, port),
                        " for ",
                        server,
                        if names.is_empty() {
                            ", but no DNS answer believed in its network namespace named that address"
                        } else {
                            ", a name DNS answers never gave for that address"
                        },
                        " (a pinned address, a tunnel or domain fronting)."
                    ),
                );
            }
        }
    }
    Decision::of(f, || {
        sentence!(
            Holding(actor, &nhi.id),
            ", sent ",
            Api(wire, readout),
            " to ",
            SockAddr(addr, port),
            if nhi.endpoints.is_some() {
                ", a declared API"
            } else {
                "; its endpoints are not restricted"
            },
            "."
        )
    })
}

/// The first bytes of a connection by a process that holds no NHI (read only when every
/// connection is, by the daemon's setting): nothing to judge.
pub fn unheld_request(
    actor: &Actor<'_>,
    wire: &WireFields,
    readout: Readout,
    addr: IpAddr,
    port: u16,
) -> String {
    sentence!(
        actor.name(),
        " (pid ",
        actor.pid,
        "), holding no NHI, sent ",
        Api(wire, readout),
        " to ",
        SockAddr(addr, port),
        "."
    )
}

/// A request's first bytes as sentences name them: `a TLS request for api.example.com`,
/// `GET api.example.com/v1/x`, `bytes that are neither TLS nor HTTP/1.x`.
struct Api<'a>(&'a WireFields, Readout);

impl Piece for Api<'_> {
    fn put(&self, out: &mut String) {
        let (w, readout) = (self.0, self.1);
        match (&w.http_method, &w.sni) {
            (Some(m), _) => {
                out.push_str(m);
                out.push(' ');
                if let Some(h) = &w.http_host {
                    out.push_str(h);
                }
                out.push_str(w.http_path.as_deref().unwrap_or(""));
                if readout == Readout::Unreadable {
                    out.push_str(" (a request head that could not be read whole)");
                }
            }
            (None, Some(s)) => {
                out.push_str("a TLS request for ");
                out.push_str(s);
            }
            (None, None) => out.push_str(match readout {
                Readout::Tls => "a TLS request without a server name",
                Readout::Unreadable => {
                    "first bytes that could not be read (a ClientHello or request head cut, \
                     malformed or unfinished)"
                }
                Readout::Http | Readout::Other => "bytes that are neither TLS nor HTTP/1.x",
            }),
        }
    }
}

/// `addr:port`, with brackets for IPv6 (as sentences write it).
#[cfg(test)]
pub fn sockaddr(addr: IpAddr, port: u16) -> String {
    sentence!(SockAddr(addr, port))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn nhi(yaml_tail: &str) -> Nhi {
        let yaml = format!("nhis:\n  - id: api\n    credentials: [/srv/app/token]\n{yaml_tail}");
        let reg = crate::domain::registry::parse(&yaml, "test.yaml").expect("registry");
        reg.nhis.into_iter().next().expect("one NHI")
    }

    fn actor(exe: &'static str, interactive: bool) -> Actor<'static> {
        Actor {
            pid: 4242,
            exe,
            script: None,
            comm: "cat",
            uid: 1000,
            interactive,
            at: Placement::default(),
        }
    }

    /// 2024-06-01T00:00:00Z.
    fn june() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_717_200_000)
    }

    #[test]
    fn every_sentence_reads_as_written() {
        let open_ok = nhi("    interactive: allow\n");
        let d = open(
            &open_ok,
            &actor("/usr/bin/app", false),
            "/srv/app/token",
            false,
            june(),
            None,
        );
        assert_eq!(
            (d.verdict, d.reason.as_str()),
            (
                Verdict::Ok,
                "/usr/bin/app opened /srv/app/token, a credential of NHI api, within its declared scope."
            )
        );
        // Without an executable, the command name; a failed open is a try.
        let d = open(
            &open_ok,
            &actor("", false),
            "/srv/app/token",
            true,
            june(),
            None,
        );
        assert_eq!(
            d.reason,
            "cat tried to open /srv/app/token, a credential of NHI api, within its declared scope."
        );

        let strict = nhi(
            "    readers:\n      exe: [/usr/bin/app]\n    expires: 2024-01-01T00:00:00Z\n    max_age: 1h\n    endpoints:\n      - cidr: 10.0.0.0/8\n        port: 443\n",
        );
        let d = open(
            &strict,
            &actor("/usr/bin/cat", true),
            "/srv/app/token",
            false,
            june(),
            Some(june() - Duration::from_secs(7260)),
        );
        assert_eq!(d.verdict, Verdict::Drift);
        assert_eq!(
            d.drift,
            [
                DriftKind::ReaderOutOfScope,
                DriftKind::InteractiveUse,
                DriftKind::Expired,
                DriftKind::StaleCredential
            ]
        );
        assert_eq!(
            d.reason,
            "/usr/bin/cat (pid 4242, uid 1000) opened /srv/app/token, a credential of NHI api, but is not among its declared readers. \
             /usr/bin/cat (pid 4242, uid 1000) opened /srv/app/token from a human's terminal session, and NHI api does not allow interactive use. \
             NHI api expired at 2024-01-01T00:00:00Z and /usr/bin/cat (pid 4242, uid 1000) still opened /srv/app/token. \
             /srv/app/token of NHI api was last changed 2h 1m ago, longer than its max_age of 1h."
        );

        let names = ["db.example.com".to_owned()];
        let v4 = IpAddr::from([192, 0, 2, 1]);
        let d = connect(
            &strict,
            &actor("/usr/bin/app", false),
            v4,
            5432,
            &names,
            false,
            june(),
        );
        assert_eq!(d.drift, [DriftKind::EndpointOutOfScope, DriftKind::Expired]);
        assert_eq!(
            d.reason,
            "/usr/bin/app (pid 4242, uid 1000), holding NHI api, connected to db.example.com (192.0.2.1:5432), which is not among its declared endpoints. \
             NHI api expired at 2024-01-01T00:00:00Z and /usr/bin/app (pid 4242, uid 1000) still connected to 192.0.2.1:5432."
        );
        let v6: IpAddr = "2001:db8::1".parse().expect("v6");
        let d = connect(
            &open_ok,
            &actor("/usr/bin/app", true),
            v6,
            443,
            &[],
            false,
            june(),
        );
        assert_eq!(d.drift, [] as [DriftKind; 0]);
        assert_eq!(
            d.reason,
            "/usr/bin/app (pid 4242), holding NHI api, connected to [2001:db8::1]:443; its endpoints are not restricted."
        );
        // A connection it already had when it read the credential.
        let d = connect(
            &open_ok,
            &actor("/usr/bin/app", true),
            v6,
            443,
            &[],
            true,
            june(),
        );
        assert_eq!(
            d.reason,
            "/usr/bin/app (pid 4242), holding NHI api, had a connection open to [2001:db8::1]:443 when it read the credential; its endpoints are not restricted."
        );
        let d = connect(
            &strict,
            &actor("/usr/bin/app", false),
            v4,
            5432,
            &names,
            true,
            june(),
        );
        assert_eq!(
            d.reason,
            "/usr/bin/app (pid 4242, uid 1000), holding NHI api, had a connection open to db.example.com (192.0.2.1:5432) when it read the credential, which is not among its declared endpoints. \
             NHI api expired at 2024-01-01T00:00:00Z and /usr/bin/app (pid 4242, uid 1000) still connected to 192.0.2.1:5432."
        );
        let deny = nhi("    endpoints:\n      - cidr: 2001:db8::/32\n");
        let d = connect(
            &deny,
            &actor("/usr/bin/app", true),
            v6,
            443,
            &[],
            false,
            june(),
        );
        assert_eq!(
            d.reason,
            "/usr/bin/app (pid 4242, uid 1000) connected to [2001:db8::1]:443 from a human's terminal session, and NHI api does not allow interactive use."
        );
        let d = connect(
            &deny,
            &actor("/usr/bin/app", false),
            v6,
            443,
            &[],
            false,
            june(),
        );
        assert_eq!(
            d.reason,
            "/usr/bin/app (pid 4242), holding NHI api, connected to [2001:db8::1]:443, a declared endpoint."
        );
        assert_eq!(sockaddr(v4, 0), "192.0.2.1:0");
        for n in [0u64, 7, 10, 99, 100, 4242, 1_000_000, u64::MAX] {
            assert_eq!(sentence!(n), n.to_string());
        }
        assert_eq!(sockaddr(v6, 65535), "[2001:db8::1]:65535");

        let d = unregistered_open(
            &actor("/usr/bin/cat", false),
            "/root/.aws/credentials",
            false,
        );
        assert_eq!(
            (d.verdict, d.reason.as_str()),
            (
                Verdict::Unregistered,
                "/usr/bin/cat opened /root/.aws/credentials, a watched credential location that no registered NHI owns."
            )
        );
        let a = actor("/usr/bin/app", false);
        assert_eq!(
            holder(&a, "api", Lifecycle::Exec).reason,
            "/usr/bin/app (pid 4242), holding NHI api, started a new program."
        );
        assert_eq!(
            holder(&a, "api", Lifecycle::Exit).reason,
            "/usr/bin/app (pid 4242), holding NHI api, exited."
        );
    }

    #[test]
    fn requests_are_judged_by_server_name_method_path_and_dns_names() {
        let n = nhi("    endpoints:\n      - cidr: 192.0.2.0/24\n        sni: [api.test]\n        methods: [GET]\n      - host: '*.dns.test'\n");
        let a = actor("/usr/bin/curl", false);
        let at = "192.0.2.1".parse().expect("addr");
        let tls = |sni: &str| WireFields {
            sni: Some(sni.to_owned()),
            tls_version: Some("1.3".to_owned()),
            ..WireFields::default()
        };
        let none: &[String] = &[];
        let d = request(&n, &a, (at, 443), none, &tls("api.test"), Readout::Tls);
        assert_eq!(d.verdict, Verdict::Ok, "{d:?}");
        assert_eq!(
            d.reason,
            "/usr/bin/curl (pid 4242), holding NHI api, sent a TLS request for api.test to 192.0.2.1:443, a declared API."
        );
        let d = request(&n, &a, (at, 443), none, &tls("evil.test"), Readout::Tls);
        assert_eq!(d.drift, vec![DriftKind::ApiOutOfScope]);
        assert_eq!(
            d.reason,
            "/usr/bin/curl (pid 4242, uid 1000), holding NHI api, sent a TLS request for evil.test to 192.0.2.1:443, which is not among the APIs declared for that endpoint."
        );
        let post = WireFields {
            http_method: Some("POST".to_owned()),
            http_host: Some("api.test".to_owned()),
            http_path: Some("/v1".to_owned()),
            ..WireFields::default()
        };
        let d = request(&n, &a, (at, 80), none, &post, Readout::Http);
        assert_eq!(d.drift, vec![DriftKind::ApiOutOfScope], "{d:?}");
        assert!(
            d.reason.contains("sent POST api.test/v1 to"),
            "{}",
            d.reason
        );
        // By DNS name: a server name among the names is fine, another one is fronting.
        let other = "198.51.100.7".parse().expect("addr");
        let names = vec!["a.dns.test".to_owned()];
        let d = request(
            &n,
            &a,
            (other, 443),
            &names,
            &tls("a.dns.test"),
            Readout::Tls,
        );
        assert_eq!(d.verdict, Verdict::Ok, "{d:?}");
        let d = request(
            &n,
            &a,
            (other, 443),
            &names,
            &tls("b.dns.test"),
            Readout::Tls,
        );
        assert_eq!(d.drift, vec![DriftKind::NameMismatch], "{d:?}");
        assert_eq!(
            d.reason,
            "/usr/bin/curl (pid 4242, uid 1000), holding NHI api, asked 198.51.100.7:443 for b.dns.test, a name DNS answers never gave for that address (a pinned address, a tunnel or domain fronting)."
        );
        // A pinned address no DNS answer named, outside every `cidr`: the name cannot be its.
        let d = request(&n, &a, (other, 443), none, &tls("a.dns.test"), Readout::Tls);
        assert_eq!(
            d.drift,
            vec![DriftKind::ApiOutOfScope, DriftKind::NameMismatch],
            "{d:?}"
        );
        assert!(
            d.reason.contains("which is not a declared endpoint."),
            "{}",
            d.reason
        );
        // No endpoints: nothing to judge.
        let free = nhi("");
        let d = request(&free, &a, (other, 443), none, &tls("x.test"), Readout::Tls);
        assert_eq!(d.verdict, Verdict::Ok);
    }

    /// What an endpoint declares, a request must show: a sender that hides its server name,
    /// method or path (a padded ClientHello, a cut or ambiguous request head, bytes of another
    /// protocol) is out of an endpoint that declares them, not waved through.
    #[test]
    fn a_request_that_hides_what_the_endpoint_declares_is_out_of_scope() {
        let n = nhi("    endpoints:\n      - cidr: 192.0.2.0/24\n        port: 80\n        methods: [GET]\n        paths: ['/v1/**']\n      - cidr: 192.0.2.0/24\n        port: 443\n        sni: [api.test]\n      - host: '*.dns.test'\n      - cidr: 203.0.113.0/24\n");
        let a = actor("/usr/bin/curl", false);
        let at = "192.0.2.1".parse().expect("addr");
        let none: &[String] = &[];
        let get = |path: Option<&str>| WireFields {
            http_method: Some("GET".to_owned()),
            http_host: Some("api.test".to_owned()),
            http_path: path.map(str::to_owned),
            ..WireFields::default()
        };
        let judge = |addr, port, names: &[String], w: &WireFields, r| {
            request(&n, &a, (addr, port), names, w, r).drift
        };
        let api = vec![DriftKind::ApiOutOfScope];
        assert_eq!(
            judge(at, 80, none, &get(Some("/v1/x")), Readout::Http),
            vec![]
        );
        // A path too long to keep, a head cut before its request line ends, other bytes.
        assert_eq!(judge(at, 80, none, &get(None), Readout::Http), api);
        let blank = WireFields::default();
        assert_eq!(judge(at, 80, none, &blank, Readout::Unreadable), api);
        assert_eq!(judge(at, 80, none, &blank, Readout::Other), api);
        // TLS at a method-and-path endpoint: they cannot be seen inside it.
        assert_eq!(judge(at, 80, none, &blank, Readout::Tls), vec![]);
        // `sni` declared: a ClientHello without a server name, or one cut before it.
        assert_eq!(judge(at, 443, none, &blank, Readout::Tls), api);
        assert_eq!(judge(at, 443, none, &blank, Readout::Unreadable), api);
        // A named endpoint: TLS or HTTP must name the server; another protocol need not.
        let named = "198.51.100.7".parse().expect("addr");
        let names = vec!["a.dns.test".to_owned()];
        assert_eq!(judge(named, 443, &names, &blank, Readout::Tls), api);
        assert_eq!(judge(named, 443, &names, &blank, Readout::Unreadable), api);
        assert_eq!(judge(named, 5432, &names, &blank, Readout::Other), vec![]);
        // An address block with nothing else declared takes anything, even unread bytes.
        let block = "203.0.113.9".parse().expect("addr");
        assert_eq!(judge(block, 1, none, &blank, Readout::Unreadable), vec![]);
        let d = request(&n, &a, (at, 443), none, &blank, Readout::Unreadable);
        assert!(
            d.reason.contains("sent first bytes that could not be read"),
            "{}",
            d.reason
        );
    }

    /// A request judges its API only: where, when and by whom the connection was made is its
    /// connect event's drift, not counted again on each request.
    #[test]
    fn a_request_does_not_repeat_its_connections_drift() {
        let n = nhi("    expires: 2000-01-01T00:00:00Z\n    endpoints:\n      - cidr: 192.0.2.0/24\n        sni: [api.test]\n");
        let a = actor("/usr/bin/curl", true);
        let at: IpAddr = "192.0.2.1".parse().expect("addr");
        let tls = WireFields {
            sni: Some("api.test".to_owned()),
            ..WireFields::default()
        };
        let c = connect(
            &n,
            &a,
            at,
            443,
            &[],
            false,
            UNIX_EPOCH + Duration::from_secs(2_000_000_000),
        );
        assert!(c.drift.contains(&DriftKind::Expired), "{c:?}");
        let d = request(&n, &a, (at, 443), &[], &tls, Readout::Tls);
        assert_eq!((d.verdict, d.drift), (Verdict::Ok, vec![]));
    }
}
