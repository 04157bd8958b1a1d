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
    /// The file the kernel executed (its real path; for a script, the interpreter).
    pub exe: String,
    /// The script `exe` runs, when the kernel started an interpreter for one (`#!`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    pub comm: String,
    pub cmdline: Vec<String>,
    pub cgroup_id: u64,
    /// Container id (from the cgroup path), when the process runs in a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Kubernetes: the UID of the pod the process runs in (from its cgroup path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Kubernetes: the pod's name and namespace, and the container's name (from the kubelet's
    /// log directories on the node, see `kubernetes`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// open: the syscall (`openat`, `openat2`, `open`, `creat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<&'static str>,
    /// open: the file opened: the registered credential path it is (by inode), else its real
    /// path as the kernel reached it (a failed open: the argument resolved against the cwd or
    /// dirfd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// open: the path exactly as the process passed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_arg: Option<String>,
    /// open: the file's real path, when it differs from `path` (a hard link, a bind mount or
    /// another mount namespace's view of a registered file).
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
    /// connect: `tcp` (a connection attempt) or `udp` (a datagram destination: connected to,
    /// or sent to, reported once per process and destination every 10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<&'static str>,
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
            script: None,
            comm: String::new(),
            cmdline: Vec::new(),
            cgroup_id: 0,
            container: None,
            pod_uid: None,
            pod: None,
            pod_namespace: None,
            container_name: None,
            syscall: None,
            path: None,
            path_arg: None,
            target: None,
            flags: None,
            inode: None,
            dev: None,
            result: None,
            error: None,
            proto: None,
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

/// Formats instants as events carry them (`2026-11-23T14:54:19.123456789Z`, as
/// `humantime::format_rfc3339_nanos`), remembering the text up to the second: events come in
/// bursts within one second, and the calendar arithmetic is the costly part.
#[derive(Debug, Default)]
pub struct TsFormatter {
    secs: Option<u64>,
    /// `2026-11-23T14:54:19.`
    prefix: String,
}

impl TsFormatter {
    pub fn format(&mut self, t: std::time::SystemTime) -> String {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        if self.secs != Some(secs) {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            // `...T14:54:19Z` without its `Z`, then the separator of the fraction.
            let mut p = humantime::format_rfc3339_seconds(whole).to_string();
            p.pop();
            p.push('.');
            self.prefix = p;
            self.secs = Some(secs);
        }
        let mut s = String::with_capacity(self.prefix.len() + 10);
        s.push_str(&self.prefix);
        let nanos = d.subsec_nanos();
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for i in (0..9).rev() {
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        s.push_str(std::str::from_utf8(&digits).unwrap_or("000000000"));
        s.push('Z');
        s
    }
}

#[cfg(test)]
mod ts_tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::TsFormatter;

    #[test]
    fn formats_exactly_as_humantime_does() {
        let mut f = TsFormatter::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u64 {
            // Runs within one second (the cache) and jumps between seconds and years.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = if i % 4 == 0 {
                x % 4_000_000_000
            } else {
                1_795_000_000 + i / 1000
            };
            let t = UNIX_EPOCH + Duration::new(secs, (x % 1_000_000_000) as u32);
            assert_eq!(
                f.format(t),
                humantime::format_rfc3339_nanos(t).to_string(),
                "{t:?}"
            );
        }
        assert_eq!(
            f.format(UNIX_EPOCH + Duration::new(1_795_000_000, 7)),
            "2026-11-18T11:06:40.000000007Z"
        );
    }
}
