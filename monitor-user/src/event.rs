//! The events nhiscope writes: one JSON object per line (and, later, one row per event).
//!
//! Field names are the contract of DESIGN.md ("Interfaces"): `ts`, `host`, `kind`, `pid`,
//! `ppid`, `uid`, `exe`, `comm`; `path` and `result` for opens; `daddr`, `dport`, `dns_names` for
//! connects; `nhi`, `verdict`, `drift`, `reason` on every event.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Open,
    Connect,
    Exec,
    Exit,
    Dns,
    Loss,
}

/// The decision on an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Inside the declared scope (or an event that needs no decision, such as an exec).
    Ok,
    /// Outside the declared scope: see `drift` and `reason`.
    Drift,
    /// A watched credential pattern matched and no NHI owns the file.
    Unregistered,
}

/// Ways a use can leave an NHI's declared scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    ReaderOutOfScope,
    EndpointOutOfScope,
    Expired,
    StaleCredential,
    InteractiveUse,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReaderOutOfScope => "reader_out_of_scope",
            Self::EndpointOutOfScope => "endpoint_out_of_scope",
            Self::Expired => "expired",
            Self::StaleCredential => "stale_credential",
            Self::InteractiveUse => "interactive_use",
        }
    }
}

/// One event as written out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// RFC 3339 with nanoseconds, UTC.
    pub ts: String,
    pub host: String,
    pub kind: Kind,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe: String,
    pub comm: String,
    pub cmdline: Vec<String>,
    pub cgroup_id: u64,
    /// Container id (from the cgroup path), when the process runs in a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// open: the syscall (`openat`, `openat2`, `open`, `creat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<&'static str>,
    /// open: the absolute path, resolved against the process's cwd or dirfd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// open: the path exactly as the process passed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_arg: Option<String>,
    /// open: where `path` leads after symlinks, when that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// open: `open(2)` flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    /// open: inode number and device (`major:minor`) of the file opened, when it was opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// open: the fd, or `-errno`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    /// open: `errno` name when the open failed (`EACCES`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// connect: destination address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daddr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// connect: hostnames DNS answers on this host gave for `daddr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_names: Option<Vec<String>>,
    /// loss: how many records were lost, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub nhi: Option<String>,
    pub verdict: Verdict,
    pub drift: Vec<DriftKind>,
    pub reason: String,
}

impl Event {
    /// An event with the process fields set and everything else empty.
    pub fn new(kind: Kind, ts: String, host: String) -> Self {
        Self {
            ts,
            host,
            kind,
            pid: 0,
            tid: 0,
            ppid: 0,
            uid: 0,
            gid: 0,
            exe: String::new(),
            comm: String::new(),
            cmdline: Vec::new(),
            cgroup_id: 0,
            container: None,
            syscall: None,
            path: None,
            path_arg: None,
            target: None,
            flags: None,
            inode: None,
            dev: None,
            result: None,
            error: None,
            daddr: None,
            dport: None,
            saddr: None,
            sport: None,
            dns_names: None,
            count: None,
            cause: None,
            nhi: None,
            verdict: Verdict::Ok,
            drift: Vec::new(),
            reason: String::new(),
        }
    }
}

/// The symbolic name of an errno value, for the common ones.
pub fn errno_name(errno: i64) -> String {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        9 => "EBADF",
        12 => "ENOMEM",
        13 => "EACCES",
        17 => "EEXIST",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        30 => "EROFS",
        36 => "ENAMETOOLONG",
        40 => "ELOOP",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}
