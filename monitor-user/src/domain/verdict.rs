//! Verdicts: is this use of an NHI inside the scope it was registered with?
//!
//! Pure functions of the registry entry and the facts of one event. Every sentence an event's
//! `reason` gives is written here: each drift kind with a sentence a person can act on (naming
//! the NHI, the process and what was outside the scope), and the sentences of uses in scope,
//! of unregistered credentials and of holders starting a program or exiting.

use std::{net::IpAddr, time::SystemTime};

use crate::{
    domain::event::{DriftKind, Verdict},
    domain::registry::{Interactive, Nhi, Placement},
};

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
                reason: f.reason(),
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

    fn describe(&self) -> String {
        format!("{} (pid {}, uid {})", self.name(), self.pid, self.uid)
    }
}

/// Drift found on one event: kinds in a stable order, and one sentence per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Findings {
    kinds: Vec<DriftKind>,
    reasons: Vec<String>,
}

impl Findings {
    fn add(&mut self, kind: DriftKind, reason: String) {
        self.kinds.push(kind);
        self.reasons.push(reason);
    }

    fn is_drift(&self) -> bool {
        !self.kinds.is_empty()
    }

    fn reason(&self) -> String {
        self.reasons.join(" ")
    }
}

/// Drift that any use can have: expiry and interactive use.
fn lifetime(nhi: &Nhi, actor: &Actor<'_>, now: SystemTime, what: &str, f: &mut Findings) {
    if actor.interactive && nhi.interactive == Interactive::Deny {
        f.add(
            DriftKind::InteractiveUse,
            format!(
                "{} {what} from a human's terminal session, and NHI {} does not allow interactive use.",
                actor.describe(),
                nhi.id
            ),
        );
    }
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

/// A connection by a holder of `nhi`.
fn assess_connect(
    nhi: &Nhi,
    actor: &Actor<'_>,
    addr: IpAddr,
    port: u16,
    names: &[String],
    now: SystemTime,
) -> Findings {
    let mut f = Findings::default();
    if let Some(endpoints) = &nhi.endpoints {
        if !endpoints.iter().any(|e| e.allows(addr, port, names)) {
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
        format!(
            "{} {} {path}, a credential of NHI {}, within its declared scope.",
            actor.name(),
            opened(failed),
            nhi.id
        )
    })
}

/// An open of `path`, which a watch pattern matches and no NHI owns.
pub fn unregistered_open(actor: &Actor<'_>, path: &str, failed: bool) -> Decision {
    Decision {
        verdict: Verdict::Unregistered,
        drift: Vec::new(),
        reason: format!(
            "{} {} {path}, a watched credential location that no registered NHI owns.",
            actor.name(),
            opened(failed),
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

/// A connection to `addr:port` (known by the DNS names `names`) by a holder of `nhi`: drift,
/// or in scope.
pub fn connect(
    nhi: &Nhi,
    actor: &Actor<'_>,
    addr: IpAddr,
    port: u16,
    names: &[String],
    now: SystemTime,
) -> Decision {
    Decision::of(assess_connect(nhi, actor, addr, port, names, now), || {
        format!(
            "{} (pid {}), holding NHI {}, connected to {}{}.",
            actor.name(),
            actor.pid,
            nhi.id,
            sockaddr(addr, port),
            if nhi.endpoints.is_some() {
                ", a declared endpoint"
            } else {
                "; its endpoints are not restricted"
            }
        )
    })
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
    Decision::ok(format!(
        "{} (pid {}), holding NHI {id}, {}.",
        actor.name(),
        actor.pid,
        match what {
            Lifecycle::Exec => "started a new program",
            Lifecycle::Exit => "exited",
        }
    ))
}

/// `addr:port`, with brackets for IPv6.
pub fn sockaddr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}
