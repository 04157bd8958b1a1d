//! The event: one typed definition of what nhiscope reports, from which every output is made.
//!
//! [`Event`] holds the fields as values (`ts` as a [`Ts`], addresses as [`IpAddr`], the
//! syscall, protocol, drift kinds, kind and verdict as enums); text is made once, at the edge
//! that needs it:
//! - the JSON line (`--json`, its file and stdout, and `nhiscope query --json`): [`Event::write_json`],
//!   a writer into a reused buffer;
//! - the live feed's `event` message: the same line inside its envelope
//!   ([`crate::publish::live::protocol::event_line`]); the dashboard reads it back into an [`Event`]
//!   (`Deserialize`, lenient: unknown fields are ignored, missing optional ones are empty);
//! - the two ClickHouse row layouts ([`crate::publish::store::row`]), which borrow the event's fields.
//!
//! Field names and value formats of the JSON line are a contract (README, "Events"): `ts`,
//! `host`, `kind`, `pid`, `ppid`, `uid`, `exe`, `comm`; `path` and `result` for opens; `daddr`,
//! `dport`, `dns_names` for connects; `nhi`, `verdict`, `drift`, `reason` on every event.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use monitor_common::OpenOp;
use serde::{Deserialize, Serialize, Serializer};

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
    /// The first bytes of a holder's TCP connection: the API it talks to (`sni`, `alpn`,
    /// `http_*`). An event of its own, after the connect's: the bytes come after the SYN.
    Request,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Connect => "connect",
            Self::Exec => "exec",
            Self::Exit => "exit",
            Self::Dns => "dns",
            Self::Loss => "loss",
            Self::Request => "request",
        }
    }
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

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Drift => "drift",
            Self::Unregistered => "unregistered",
        }
    }
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
    /// A request's server name, method or path is outside the declared ones of an endpoint
    /// whose address is allowed.
    ApiOutOfScope,
    /// The server name on the wire is not among the names DNS answers gave for the address.
    NameMismatch,
}

impl DriftKind {
    /// Every kind.
    pub const ALL: [DriftKind; 7] = [
        DriftKind::ReaderOutOfScope,
        DriftKind::EndpointOutOfScope,
        DriftKind::Expired,
        DriftKind::StaleCredential,
        DriftKind::InteractiveUse,
        DriftKind::ApiOutOfScope,
        DriftKind::NameMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReaderOutOfScope => "reader_out_of_scope",
            Self::EndpointOutOfScope => "endpoint_out_of_scope",
            Self::Expired => "expired",
            Self::StaleCredential => "stale_credential",
            Self::InteractiveUse => "interactive_use",
            Self::ApiOutOfScope => "api_out_of_scope",
            Self::NameMismatch => "name_mismatch",
        }
    }

    /// The kind named `name` (`reader_out_of_scope`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A connection's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// A connection attempt.
    Tcp,
    /// A datagram destination: connected to, or sent to.
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Tcp, Self::Udp]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// The name of an open syscall, as events carry it (`openat`, `io_uring_openat`, ...).
pub fn syscall_from_name(name: &str) -> Option<OpenOp> {
    (0..64)
        .filter_map(OpenOp::from_u32)
        .find(|op| op.name() == name)
}

/// A device number, written `major:minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

impl Dev {
    fn parse(s: &str) -> Option<Self> {
        let (major, minor) = s.split_once(':')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// An instant as seconds and nanoseconds since the Unix epoch (UTC). As text (events, logs):
/// RFC 3339 with nanoseconds, `2026-11-23T14:54:19.123456789Z`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ts {
    pub secs: u64,
    pub nanos: u32,
}

/// The last second RFC 3339's four-digit years can write (9999-12-31T23:59:59Z).
const LAST_SECOND: u64 = 253_402_300_799;

impl Ts {
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// `t`, or the epoch when `t` is before it.
    pub fn from_system(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.secs, self.nanos)
    }

    /// Nanoseconds since the epoch (saturating).
    pub fn as_nanos(self) -> u64 {
        self.secs
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(self.nanos))
    }

    /// Parses RFC 3339 (`2026-11-23T14:54:19.123456789Z`, also without the fraction or with
    /// another offset); `None` when `s` is not one.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        humantime::parse_rfc3339_weak(s).ok().map(Self::from_system)
    }

    /// `2026-11-23T11:52:05.123456789Z`: the form events carry.
    pub fn to_rfc3339(self) -> String {
        let mut b = [0u8; 30];
        self.write_rfc3339(&mut b);
        // The buffer holds ASCII digits and separators only.
        String::from_utf8_lossy(&b).into_owned()
    }

    /// The form events carry, into `b` (exactly 30 bytes). Years past 9999 are written as
    /// its last second.
    fn write_rfc3339(self, b: &mut [u8; 30]) {
        let (secs, nanos) = if self.secs > LAST_SECOND {
            (LAST_SECOND, 999_999_999)
        } else {
            (self.secs, self.nanos.min(999_999_999))
        };
        thread_local! {
            /// The second last written, and its `2026-11-23T11:52:05`: the events of one
            /// second share it.
            static SECOND: std::cell::Cell<(u64, [u8; 19])> =
                const { std::cell::Cell::new((u64::MAX, [0; 19])) };
        }
        let (last, text) = SECOND.with(std::cell::Cell::get);
        if last == secs {
            b[..19].copy_from_slice(&text);
        } else {
            let days = secs / 86_400;
            let rem = (secs % 86_400) as u32;
            let packed = date(days);
            let (y, m, d) = ((packed >> 9) & 0x7_ffff, (packed >> 5) & 0xf, packed & 0x1f);
            two(&mut b[0..2], y / 100);
            two(&mut b[2..4], y % 100);
            b[4] = b'-';
            two(&mut b[5..7], m);
            b[7] = b'-';
            two(&mut b[8..10], d);
            b[10] = b'T';
            b[11..13].copy_from_slice(&pair(rem / 3600));
            b[13] = b':';
            b[14..16].copy_from_slice(&pair(rem / 60 % 60));
            b[16] = b':';
            b[17..19].copy_from_slice(&pair(rem % 60));
            let mut text = [0u8; 19];
            text.copy_from_slice(&b[..19]);
            SECOND.with(|c| c.set((secs, text)));
        }
        b[19] = b'.';
        // Nine digits: the first one, then four pairs.
        let hi = nanos / 100_000_000;
        let lo = nanos % 100_000_000;
        b[20] = b'0' + hi as u8;
        b[21..23].copy_from_slice(&pair(lo / 1_000_000));
        b[23..25].copy_from_slice(&pair(lo / 10_000 % 100));
        b[25..27].copy_from_slice(&pair(lo / 100 % 100));
        b[27..29].copy_from_slice(&pair(lo % 100));
        b[29] = b'Z';
    }

    /// `14:54:19`: the time of day (UTC).
    pub fn clock(self) -> String {
        let mut b = [0u8; 30];
        self.write_rfc3339(&mut b);
        String::from_utf8_lossy(&b[11..19]).into_owned()
    }
}

impl std::fmt::Display for Ts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut b = [0u8; 30];
        self.write_rfc3339(&mut b);
        f.write_str(std::str::from_utf8(&b).map_err(|_| std::fmt::Error)?)
    }
}

/// Year, month, day of the `days`-th day after 1970-01-01 (H. Hinnant's `civil_from_days`).
pub(crate) fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `n` (< 100) as two digits.
fn two(b: &mut [u8], n: u64) {
    b.copy_from_slice(&pair(n as u32));
}

/// `n` (< 100) as two ASCII digits.
fn pair(n: u32) -> [u8; 2] {
    let i = (n % 100) as usize * 2;
    [json::PAIRS[i], json::PAIRS[i + 1]]
}

/// The date of the `days`-th day after 1970-01-01, packed with its day number
/// (`days << 28 | year << 9 | month << 5 | day`): events come in time order, so the
/// calendar is worked out once a day, not once an event.
fn date(days: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    // The last date worked out (0: none yet; 1970-01-01 packs to a non-zero value).
    static LAST: AtomicU64 = AtomicU64::new(0);
    let last = LAST.load(Ordering::Relaxed);
    if last != 0 && last >> 28 == days {
        return last;
    }
    let (y, m, d) = civil(days);
    let packed = days << 28 | y << 9 | m << 5 | d;
    LAST.store(packed, Ordering::Relaxed);
    packed
}

/// Text an event shares with the process table it came from (an executable's path, a command
/// name): events take a reference count, not a copy. Reads as a `str`; serialised as one. Its
/// JSON form is made once, when first written, for all the events that share it.
#[derive(Clone)]
pub struct SharedStr(Arc<Shared<str>>);

/// What [`SharedStr`] and [`SharedArgs`] share: the value and its JSON form, once made.
struct Shared<T: ?Sized> {
    json: std::sync::OnceLock<Box<[u8]>>,
    value: Box<T>,
}

impl SharedStr {
    pub fn as_str(&self) -> &str {
        &self.0.value
    }

    /// The text as a JSON string, quotes included.
    fn json(&self) -> &[u8] {
        self.0.json.get_or_init(|| {
            let mut v = Vec::with_capacity(self.0.value.len() + 2);
            json::str(&mut v, &self.0.value);
            v.into_boxed_slice()
        })
    }
}

impl Default for SharedStr {
    fn default() -> Self {
        // One empty string for every process and event that has none.
        static EMPTY: std::sync::OnceLock<SharedStr> = std::sync::OnceLock::new();
        EMPTY.get_or_init(|| SharedStr::from("")).clone()
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0.value
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        &self.0.value
    }
}

impl std::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0.value
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, o: &Self) -> bool {
        self.0.value == o.0.value
    }
}

impl Eq for SharedStr {}

impl PartialOrd for SharedStr {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for SharedStr {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.value.cmp(&o.0.value)
    }
}

impl std::hash::Hash for SharedStr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.value.hash(h);
    }
}

impl std::fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0.value, f)
    }
}

impl std::fmt::Display for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.value)
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        Self::from(Box::<str>::from(s))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        Self::from(s.into_boxed_str())
    }
}

impl From<Box<str>> for SharedStr {
    fn from(value: Box<str>) -> Self {
        Self(Arc::new(Shared {
            json: std::sync::OnceLock::new(),
            value,
        }))
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, o: &str) -> bool {
        *self.0.value == *o
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, o: &&str) -> bool {
        *self.0.value == **o
    }
}

impl PartialEq<String> for SharedStr {
    fn eq(&self, o: &String) -> bool {
        *self.0.value == **o
    }
}

impl PartialEq<SharedStr> for str {
    fn eq(&self, o: &SharedStr) -> bool {
        *self == *o.0.value
    }
}

impl PartialEq<SharedStr> for &str {
    fn eq(&self, o: &SharedStr) -> bool {
        **self == *o.0.value
    }
}

impl Serialize for SharedStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.value)
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::from(&*s))
    }
}

/// A command line an event shares with the process table (as [`crate::domain::redact`] kept
/// it): events take a reference count, not a copy. Reads as a slice of arguments; serialised
/// as a list. Its JSON form is made once, when first written, for all the events that share it.
#[derive(Clone)]
pub struct SharedArgs(Arc<Shared<[String]>>);

impl SharedArgs {
    /// The arguments as a JSON list.
    fn json(&self) -> &[u8] {
        self.0.json.get_or_init(|| {
            let mut v = Vec::new();
            json::strs(&mut v, &self.0.value);
            v.into_boxed_slice()
        })
    }
}

impl Default for SharedArgs {
    fn default() -> Self {
        static EMPTY: std::sync::OnceLock<SharedArgs> = std::sync::OnceLock::new();
        EMPTY.get_or_init(|| SharedArgs::from(Vec::new())).clone()
    }
}

impl std::ops::Deref for SharedArgs {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0.value
    }
}

impl PartialEq for SharedArgs {
    fn eq(&self, o: &Self) -> bool {
        self.0.value == o.0.value
    }
}

impl Eq for SharedArgs {}

impl std::hash::Hash for SharedArgs {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.value.hash(h);
    }
}

impl std::fmt::Debug for SharedArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0.value, f)
    }
}

impl From<Vec<String>> for SharedArgs {
    fn from(v: Vec<String>) -> Self {
        Self(Arc::new(Shared {
            json: std::sync::OnceLock::new(),
            value: v.into_boxed_slice(),
        }))
    }
}

impl<T> PartialEq<Vec<T>> for SharedArgs
where
    String: PartialEq<T>,
{
    fn eq(&self, o: &Vec<T>) -> bool {
        self.0.value.len() == o.len() && self.0.value.iter().zip(o).all(|(a, b)| *a == *b)
    }
}

impl Serialize for SharedArgs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedArgs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from(Vec::<String>::deserialize(d)?))
    }
}

/// One event: every field an output carries, typed. The doc of each field says what it holds;
/// optional ones are left out of the JSON line when absent (`nhi` is written as `null`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Event {
    #[serde(default, deserialize_with = "de::ts")]
    pub ts: Ts,
    /// The host name (shared by all the events of a daemon).
    #[serde(default)]
    pub host: SharedStr,
    pub kind: Kind,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub tid: u32,
    #[serde(default)]
    pub ppid: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// The file the kernel executed (its real path; for a script, the interpreter).
    #[serde(default)]
    pub exe: SharedStr,
    /// The script `exe` runs, when the kernel started an interpreter for one (`#!`).
    #[serde(default)]
    pub script: Option<String>,
    #[serde(default)]
    pub comm: SharedStr,
    /// As [`crate::domain::redact`] kept it: never a secret.
    #[serde(default)]
    pub cmdline: SharedArgs,
    #[serde(default)]
    pub cgroup_id: u64,
    /// Container id (from the cgroup path), when the process runs in a container.
    #[serde(default)]
    pub container: Option<String>,
    /// Kubernetes: the UID of the pod the process runs in (from its cgroup path).
    #[serde(default)]
    pub pod_uid: Option<String>,
    /// Kubernetes: the pod's name and namespace, and the container's name (from the kubelet's
    /// log directories on the node, see `kubernetes`), when known.
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub pod_namespace: Option<String>,
    #[serde(default)]
    pub container_name: Option<String>,
    /// open: the syscall (`openat`, `openat2`, `open`, `creat`, ...).
    #[serde(default, deserialize_with = "de::syscall")]
    pub syscall: Option<OpenOp>,
    /// open: the file opened: the registered credential path it is (by inode), else its real
    /// path as the kernel reached it (a failed open: the argument resolved against the cwd or
    /// dirfd).
    #[serde(default)]
    pub path: Option<String>,
    /// open: the path exactly as the process passed it.
    #[serde(default)]
    pub path_arg: Option<String>,
    /// open: the file's real path, when it differs from `path` (a hard link, a bind mount or
    /// another mount namespace's view of a registered file).
    #[serde(default)]
    pub target: Option<String>,
    /// open: `open(2)` flags.
    #[serde(default)]
    pub flags: Option<u32>,
    /// open: inode number and device of the file opened, when it was opened.
    #[serde(default)]
    pub inode: Option<u64>,
    #[serde(default, deserialize_with = "de::dev")]
    pub dev: Option<Dev>,
    /// open: the fd, or `-errno`.
    #[serde(default)]
    pub result: Option<i64>,
    /// open: `errno` name when the open failed (`EACCES`).
    #[serde(default)]
    pub error: Option<String>,
    /// connect: `tcp` (a connection attempt) or `udp` (a datagram destination: connected to,
    /// or sent to, reported once per process and destination every 10 s).
    #[serde(default, deserialize_with = "de::proto")]
    pub proto: Option<Proto>,
    /// connect: destination address.
    #[serde(default)]
    pub daddr: Option<IpAddr>,
    #[serde(default)]
    pub dport: Option<u16>,
    #[serde(default)]
    pub saddr: Option<IpAddr>,
    #[serde(default)]
    pub sport: Option<u16>,
    /// connect: hostnames DNS answers on this host gave for `daddr`.
    #[serde(default)]
    pub dns_names: Option<Vec<String>>,
    /// connect: the connection was already open when the process read the credential (made
    /// earlier, or inherited), judged at that read; written only when true.
    #[serde(default)]
    pub established_before_use: bool,
    /// loss: how many records were lost, and why.
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub cause: Option<String>,
    #[serde(default)]
    pub nhi: Option<SharedStr>,
    pub verdict: Verdict,
    #[serde(default)]
    pub drift: Vec<DriftKind>,
    #[serde(default)]
    pub reason: String,
    /// request: what the connection's first bytes said (server name, ALPN, TLS version, HTTP
    /// method, host and path), each only when known; written only when present.
    #[serde(flatten)]
    pub wire: crate::domain::wire::Wire,
}

impl Event {
    /// An event with everything but its kind, time and host empty (verdict `ok`).
    pub fn new(kind: Kind, ts: Ts, host: SharedStr) -> Self {
        let empty = (
            SharedStr::default(),
            SharedStr::default(),
            SharedArgs::default(),
        );
        Self::of_process(kind, ts, host, empty)
    }

    /// [`Event::new`] with the executable, command name and command line of its process.
    #[inline(always)]
    pub fn of_process(
        kind: Kind,
        ts: Ts,
        host: SharedStr,
        (exe, comm, cmdline): (SharedStr, SharedStr, SharedArgs),
    ) -> Self {
        Self {
            ts,
            host,
            kind,
            pid: 0,
            tid: 0,
            ppid: 0,
            uid: 0,
            gid: 0,
            exe,
            script: None,
            comm,
            cmdline,
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
            established_before_use: false,
            count: None,
            cause: None,
            nhi: None,
            verdict: Verdict::Ok,
            drift: Vec::new(),
            reason: String::new(),
            wire: crate::domain::wire::Wire::default(),
        }
    }

    /// An event of `kind` with `verdict` and nothing else, not even a time or a host: what a
    /// record that keeps only some fields (a stored use, a fixture) starts from.
    pub fn bare(kind: Kind, verdict: Verdict) -> Self {
        let mut e = Self::new(kind, Ts::default(), SharedStr::default());
        e.verdict = verdict;
        e
    }

    /// Appends the event's JSON line to `out`, without the newline: the one encoding of an
    /// event as text (field order and value formats are those of the README's contract).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use json::{put, put_var, SLACK};
        out.reserve(SLACK);
        // SAFETY: every `put` and `*_slack` helper below writes fixed pieces (keys, numbers,
        // the time, names) into the SLACK bytes kept spare: reserved above, and left behind
        // every piece of variable length (`put_var`, `str_keeping`, `strs_slack`,
        // `opt_addr_slack`); the fixed pieces of a whole line take less than SLACK (see the
        // test `a_line_s_fixed_pieces_fit_its_slack`).
        unsafe {
            let mut ts = [0u8; 30];
            self.ts.write_rfc3339(&mut ts);
            put(out, b"{\"ts\":\"");
            put(out, &ts);
            put(out, b"\",\"host\":");
            put_var(out, self.host.json());
            put(out, b",\"kind\":\"");
            put(out, self.kind.as_str().as_bytes());
            put(out, b"\",\"pid\":");
            json::uint_in_room(out, self.pid.into());
            put(out, b",\"tid\":");
            json::uint_in_room(out, self.tid.into());
            put(out, b",\"ppid\":");
            json::uint_in_room(out, self.ppid.into());
            put(out, b",\"uid\":");
            json::uint_in_room(out, self.uid.into());
            put(out, b",\"gid\":");
            json::uint_in_room(out, self.gid.into());
            put(out, b",\"exe\":");
            put_var(out, self.exe.json());
            json::opt_str_slack(out, b",\"script\":", self.script.as_deref());
            put(out, b",\"comm\":");
            put_var(out, self.comm.json());
            put(out, b",\"cmdline\":");
            put_var(out, self.cmdline.json());
            put(out, b",\"cgroup_id\":");
            json::uint_in_room(out, self.cgroup_id);
            json::opt_str_slack(out, b",\"container\":", self.container.as_deref());
            json::opt_str_slack(out, b",\"pod_uid\":", self.pod_uid.as_deref());
            json::opt_str_slack(out, b",\"pod\":", self.pod.as_deref());
            json::opt_str_slack(out, b",\"pod_namespace\":", self.pod_namespace.as_deref());
            json::opt_str_slack(out, b",\"container_name\":", self.container_name.as_deref());
            json::opt_str_slack(out, b",\"syscall\":", self.syscall.map(OpenOp::name));
            let path_at = out.len() + b",\"path\":".len();
            json::opt_str_slack(out, b",\"path\":", self.path.as_deref());
            match (&self.path, &self.path_arg) {
                // The path as the process gave it is most often the path itself: its JSON is
                // copied, not made again.
                (Some(path), Some(arg)) if path == arg => {
                    let path_end = out.len();
                    put(out, b",\"path_arg\":");
                    out.extend_from_within(path_at..path_end);
                    out.reserve(SLACK);
                }
                (_, arg) => json::opt_str_slack(out, b",\"path_arg\":", arg.as_deref()),
            }
            json::opt_str_slack(out, b",\"target\":", self.target.as_deref());
            json::opt_uint_slack(out, b",\"flags\":", self.flags.map(u64::from));
            json::opt_uint_slack(out, b",\"inode\":", self.inode);
            if let Some(d) = self.dev {
                put(out, b",\"dev\":\"");
                json::uint_in_room(out, d.major.into());
                put(out, b":");
                json::uint_in_room(out, d.minor.into());
                put(out, b"\"");
            }
            if let Some(r) = self.result {
                put(out, b",\"result\":");
                json::int_in_room(out, r);
            }
            json::opt_str_slack(out, b",\"error\":", self.error.as_deref());
            json::opt_str_slack(out, b",\"proto\":", self.proto.map(Proto::as_str));
            json::opt_addr_slack(out, b",\"daddr\":", self.daddr);
            json::opt_uint_slack(out, b",\"dport\":", self.dport.map(u64::from));
            json::opt_addr_slack(out, b",\"saddr\":", self.saddr);
            json::opt_uint_slack(out, b",\"sport\":", self.sport.map(u64::from));
            if let Some(names) = &self.dns_names {
                put(out, b",\"dns_names\":");
                json::strs_slack(out, names);
            }
            if self.established_before_use {
                put(out, b",\"established_before_use\":true");
            }
            json::opt_uint_slack(out, b",\"count\":", self.count);
            json::opt_str_slack(out, b",\"cause\":", self.cause.as_deref());
            put(out, b",\"nhi\":");
            match &self.nhi {
                Some(n) => put_var(out, n.json()),
                None => put(out, b"null"),
            }
            put(out, b",\"verdict\":\"");
            put(out, self.verdict.as_str().as_bytes());
            put(out, b"\",\"drift\":[");
            // The kinds are few, but a list read back from elsewhere may repeat them.
            out.reserve(self.drift.len() * JSON_DRIFT_ROOM + SLACK);
            for (i, k) in self.drift.iter().enumerate() {
                if i > 0 {
                    put(out, b",");
                }
                put(out, b"\"");
                put(out, k.as_str().as_bytes());
                put(out, b"\"");
            }
            put(out, b"],\"reason\":");
            json::str_keeping(out, &self.reason, SLACK);
            self.wire.write_json(out);
            out.push(b'}');
        }
    }

    /// The JSON line, without its newline.
    pub fn to_json(&self) -> String {
        let mut v = Vec::with_capacity(512);
        self.write_json(&mut v);
        // `write_json` writes UTF-8 only: the event's strings and ASCII around them.
        String::from_utf8(v).unwrap_or_default()
    }

    /// Where the event went: the destination of a connect (`addr:port`), the path of an open.
    pub fn destination(&self) -> Option<String> {
        if let Some(addr) = self.daddr {
            return Some(match self.dport {
                Some(p) => std::net::SocketAddr::new(addr, p).to_string(),
                None => addr.to_string(),
            });
        }
        self.path.clone()
    }
}

/// Serialised as its JSON line (the same bytes as [`Event::write_json`]), for callers that
/// hand events to `serde_json`.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.to_json())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// The bytes one drift kind takes in a line, at most (`,"endpoint_out_of_scope"`).
const JSON_DRIFT_ROOM: usize = 40;

/// Readers of the fields that are text in the JSON line and values in [`Event`]. Lenient where
/// the dashboard must go on reading a newer daemon's events: an unknown syscall, protocol or
/// device form reads as absent, a time that is not one as the epoch.
mod de {

    use serde::{Deserialize, Deserializer};

    use super::{syscall_from_name, Dev, OpenOp, Proto, Ts};

    pub fn ts<'de, D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Ts::parse_rfc3339(&s).unwrap_or_default())
    }

    pub fn syscall<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OpenOp>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        Ok(s.and_then(|s| syscall_from_name(&s)))
    }

    pub fn proto<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Proto>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        Ok(s.and_then(|s| Proto::from_name(&s)))
    }

    pub fn dev<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dev>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        Ok(s.and_then(|s| Dev::parse(&s)))
    }
}

/// The pieces of a JSON line, written as `serde_json` writes them (its string escapes, its
/// number forms), so that the line stays what readers of earlier versions parsed.
pub(crate) mod json {
    use std::{io::Write as _, net::IpAddr};

    /// Bytes a JSON string must escape: `"`, `\` and the control characters.
    const fn escapes() -> [bool; 256] {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 0x20 {
            t[i] = true;
            i += 1;
        }
        t[b'"' as usize] = true;
        t[b'\\' as usize] = true;
        t
    }
    static ESCAPE: [bool; 256] = escapes();

    /// Whether any of the 8 bytes of `w` is one JSON must escape (a word-at-a-time test: the
    /// bytes below 0x20, `"` and `\\`; bytes of UTF-8 sequences, 0x80 and above, never are).
    fn any_escape(w: u64) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let below = w.wrapping_sub(ONES * 0x20);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let zero = |x: u64| x.wrapping_sub(ONES) & !x;
        (below | zero(quote) | zero(backslash)) & !w & HIGH != 0
    }

    /// The 8 bytes of `b` from `i` as a word.
    fn word_at(b: &[u8], i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    }

    /// Room kept spare while an event's line is written: more than every key, number, time,
    /// address and name of a whole line (its strings apart), so that those are written
    /// without a test of the room each ([`super::Event::write_json`]).
    pub const SLACK: usize = 2048;

    /// Appends `b` to `out` without growing it.
    ///
    /// # Safety
    /// `out`'s spare capacity holds `b` (`out.capacity() - out.len() >= b.len()`).
    #[inline(always)]
    pub unsafe fn put(out: &mut Vec<u8>, b: &[u8]) {
        let at = out.len();
        debug_assert!(out.capacity() - at >= b.len(), "JSON slack used up");
        // SAFETY: the caller guarantees the room; a borrowed slice and a Vec's spare
        // capacity do not overlap; the bytes are initialised before the length covers them.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), out.as_mut_ptr().add(at), b.len());
            out.set_len(at + b.len());
        }
    }

    /// Appends `b`, of any length, and leaves [`SLACK`] spare behind it.
    #[inline]
    pub fn put_var(out: &mut Vec<u8>, b: &[u8]) {
        out.reserve(b.len() + SLACK);
        // SAFETY: room for `b` was reserved just above.
        unsafe { put(out, b) }
    }

    /// The number of decimal digits of `n` (1 for 0), from its bit length: no division, no
    /// chain of comparisons.
    #[inline]
    pub fn digits(n: u64) -> usize {
        const POW10: [u64; 20] = {
            let mut t = [1u64; 20];
            let mut i = 1;
            while i < 20 {
                t[i] = t[i - 1] * 10;
                i += 1;
            }
            t
        };
        let bits = 64 - (n | 1).leading_zeros() as usize;
        // floor(log10(2^bits)) (1233 / 4096 is just above log10(2)): the count is this or one
        // more.
        let guess = (bits * 1233) >> 12;
        (guess + usize::from(n >= POW10[guess])).max(1)
    }

    /// `s` as a JSON string, quotes included.
    #[inline]
    pub fn str(out: &mut Vec<u8>, s: &str) {
        str_keeping(out, s, 0);
    }

    /// [`str`], leaving at least `keep` bytes of spare room behind the string.
    pub fn str_keeping(out: &mut Vec<u8>, s: &str, keep: usize) {
        let b = s.as_bytes();
        // Most strings (paths, names, sentences) have nothing to escape: they are scanned and
        // copied in one pass, a word at a time, into room reserved for the string, its quotes
        // and one word past its end; the bytes count only once the whole string proved clean.
        out.reserve(b.len() + 10 + keep);
        let at = out.len();
        let dst = out.as_mut_ptr();
        // Every write below stays in that room: it ends at most at `at + 1 + b.len()` (the
        // closing quote), or at `at + 9 + i` with `i + 8 <= b.len()` (a word).
        // SAFETY: `reserve` made room for `b.len() + 10` bytes from `at`; this is the first.
        unsafe { dst.add(at).write(b'"') };
        // 16 bytes at a time where the CPU has the instructions for it, then words.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of every x86-64 CPU (the target's baseline); `reserve` made room
        // for `b.len()` bytes at `dst + at + 1`.
        let (mut i, mut clean) = unsafe { sse2::copy_clean(b, dst, at + 1) };
        #[cfg(not(target_arch = "x86_64"))]
        let (mut i, mut clean) = (0, true);
        while clean && i + 8 <= b.len() {
            let w = word_at(b, i);
            if any_escape(w) {
                clean = false;
                break;
            }
            // SAFETY: see above; an unaligned store of 8 bytes.
            unsafe { dst.add(at + 1 + i).cast::<u64>().write_unaligned(w) };
            i += 8;
        }
        if clean && i < b.len() {
            let n = b.len();
            if n >= 8 {
                // The last word, overlapping the one before it.
                let w = word_at(b, n - 8);
                clean = !any_escape(w);
                // SAFETY: see above; the word ends at `at + 1 + n`.
                unsafe { dst.add(at + 1 + n - 8).cast::<u64>().write_unaligned(w) };
            } else if n >= 4 {
                // A short string: its first and last 4 bytes (overlapping), tested as one word.
                let half = |j: usize| {
                    let mut h = [0u8; 4];
                    h.copy_from_slice(&b[j..j + 4]);
                    u32::from_le_bytes(h)
                };
                let (lo, hi) = (half(0), half(n - 4));
                clean = !any_escape(u64::from(lo) | u64::from(hi) << 32);
                // SAFETY: see above; both halves end at most at `at + 1 + n`.
                unsafe {
                    dst.add(at + 1).cast::<u32>().write_unaligned(lo);
                    dst.add(at + 1 + n - 4).cast::<u32>().write_unaligned(hi);
                }
            } else {
                for (j, &c) in b.iter().enumerate() {
                    clean &= !ESCAPE[usize::from(c)];
                    // SAFETY: see above; `j < n`.
                    unsafe { dst.add(at + 1 + j).write(c) };
                }
            }
        }
        if clean {
            // SAFETY: see above for the room; the quote, the string's bytes and the closing
            // quote were all written, so the `b.len() + 2` new bytes are initialised.
            unsafe {
                dst.add(at + 1 + b.len()).write(b'"');
                out.set_len(at + b.len() + 2);
            }
            return;
        }
        out.push(b'"');
        let mut start = 0;
        let mut i = 0;
        while i < b.len() {
            if i + 8 <= b.len() && !any_escape(word_at(b, i)) {
                i += 8;
                continue;
            }
            let c = b[i];
            if ESCAPE[usize::from(c)] {
                out.extend_from_slice(&b[start..i]);
                escape(out, c);
                start = i + 1;
            }
            i += 1;
        }
        out.extend_from_slice(&b[start..]);
        out.push(b'"');
        out.reserve(keep);
    }

    /// SSE2 (part of every x86-64 CPU) for the scan and copy of clean strings.
    #[cfg(target_arch = "x86_64")]
    mod sse2 {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8, _mm_storeu_si128,
        };

        /// Copies `b` 16 bytes at a time to `dst + at` while no byte of a block needs an
        /// escape; returns how many bytes were copied and whether it stopped before a block
        /// that needs one (`false`) or for want of a whole block (`true`). The caller must
        /// have made room for `b.len()` bytes at `dst + at`.
        #[target_feature(enable = "sse2")]
        pub(super) fn copy_clean(b: &[u8], dst: *mut u8, at: usize) -> (usize, bool) {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            let mut i = 0;
            while i + 16 <= b.len() {
                // SAFETY: `i + 16 <= b.len()`: the 16 bytes from `i` are in `b`; an unaligned
                // load has no alignment need.
                let v = unsafe { _mm_loadu_si128(b.as_ptr().add(i).cast::<__m128i>()) };
                // A byte to escape: `"`, `\`, or one at most 0x1f (unsigned).
                let hit = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                    _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
                );
                if _mm_movemask_epi8(hit) != 0 {
                    return (i, false);
                }
                // SAFETY: the caller made room for `b.len()` bytes at `dst + at`, and
                // `i + 16 <= b.len()`; an unaligned store has no alignment need.
                unsafe { _mm_storeu_si128(dst.add(at + i).cast::<__m128i>(), v) };
                i += 16;
            }
            (i, true)
        }
    }

    /// The escape of `c`, one of the bytes [`ESCAPE`] marks.
    fn escape(out: &mut Vec<u8>, c: u8) {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
        }
    }

    /// `key` (`,"name":`) and `s`, when there is one. Inlined, as the other small writers:
    /// most optional fields are absent, and then a test is all they cost.
    #[inline]
    pub fn opt_str(out: &mut Vec<u8>, key: &[u8], s: Option<&str>) {
        if let Some(s) = s {
            out.extend_from_slice(key);
            str(out, s);
        }
    }

    /// [`opt_str`] within a line's [`SLACK`].
    ///
    /// # Safety
    /// `out`'s spare capacity holds `key`.
    #[inline]
    pub unsafe fn opt_str_slack(out: &mut Vec<u8>, key: &[u8], s: Option<&str>) {
        if let Some(s) = s {
            // SAFETY: the caller guarantees room for the key.
            unsafe { put(out, key) };
            str_keeping(out, s, SLACK);
        }
    }

    /// `key` and the number `n`, when there is one, within a line's [`SLACK`].
    ///
    /// # Safety
    /// `out`'s spare capacity holds `key` and 20 bytes.
    #[inline]
    pub unsafe fn opt_uint_slack(out: &mut Vec<u8>, key: &[u8], n: Option<u64>) {
        if let Some(n) = n {
            // SAFETY: the caller guarantees the room.
            unsafe {
                put(out, key);
                uint_in_room(out, n);
            }
        }
    }

    /// [`strs`] leaving [`SLACK`] spare behind each string.
    pub fn strs_slack(out: &mut Vec<u8>, v: &[String]) {
        out.reserve(SLACK);
        // SAFETY: each bracket or comma is written with SLACK spare (reserved above, and
        // left behind every string by `str_keeping`).
        unsafe { put(out, b"[") };
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                // SAFETY: as above.
                unsafe { put(out, b",") };
            }
            str_keeping(out, s, SLACK);
        }
        // SAFETY: as above.
        unsafe { put(out, b"]") };
    }

    /// A list of strings.
    pub fn strs(out: &mut Vec<u8>, v: &[String]) {
        out.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            str(out, s);
        }
        out.push(b']');
    }

    /// `00` to `99`, for writing numbers two digits at a time.
    pub(super) const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";

    /// `n` in decimal, written in place: its digits counted first, then written from the last,
    /// two at a time.
    #[inline]
    pub fn uint(out: &mut Vec<u8>, n: u64) {
        out.reserve(20);
        // SAFETY: a u64 has at most 20 digits, reserved just above.
        unsafe { uint_in_room(out, n) }
    }

    /// [`uint`] without a test of the room.
    ///
    /// # Safety
    /// `out`'s spare capacity holds 20 bytes.
    #[inline]
    pub unsafe fn uint_in_room(out: &mut Vec<u8>, mut n: u64) {
        let len = digits(n);
        debug_assert!(out.capacity() - out.len() >= len, "JSON slack used up");
        let at = out.len();
        let dst = out.as_mut_ptr();
        let mut i = at + len;
        // SAFETY: the caller made room for 20 bytes from `at`, and the writes below fill
        // exactly `at..at + len` (`len` is the number of digits of `n`, at most 20) before
        // `set_len`.
        unsafe {
            while n >= 100 {
                let d = (n % 100) as usize * 2;
                n /= 100;
                i -= 2;
                dst.add(i).write(PAIRS[d]);
                dst.add(i + 1).write(PAIRS[d + 1]);
            }
            if n >= 10 {
                let d = n as usize * 2;
                dst.add(i - 2).write(PAIRS[d]);
                dst.add(i - 1).write(PAIRS[d + 1]);
            } else {
                dst.add(i - 1).write(b'0' + n as u8);
            }
            out.set_len(at + len);
        }
    }

    /// `n` in decimal, without a test of the room.
    ///
    /// # Safety
    /// `out`'s spare capacity holds 21 bytes.
    #[inline]
    pub unsafe fn int_in_room(out: &mut Vec<u8>, n: i64) {
        // SAFETY: the caller guarantees room for the sign and 20 digits.
        unsafe {
            if n < 0 {
                put(out, b"-");
            }
            uint_in_room(out, n.unsigned_abs());
        }
    }

    /// `key` and the address `a` as text (`93.184.216.34`, `fe80::1`, `::ffff:10.0.0.1`, as
    /// `IpAddr`'s `Display` writes it), when there is one, leaving [`SLACK`] spare behind it.
    #[inline]
    pub fn opt_addr_slack(out: &mut Vec<u8>, key: &[u8], a: Option<IpAddr>) {
        if let Some(a) = a {
            addr(out, key, a);
            out.reserve(SLACK);
        }
    }

    fn addr(out: &mut Vec<u8>, key: &[u8], a: IpAddr) {
        out.extend_from_slice(key);
        out.push(b'"');
        match a {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    uint(out, o.into());
                }
            }
            // Writing into a Vec cannot fail.
            IpAddr::V6(v6) => {
                let _ = write!(out, "{v6}");
            }
        }
        out.push(b'"');
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn ts(secs: u64, nanos: u32) -> Ts {
        Ts { secs, nanos }
    }

    /// Events with every field in use, text that needs escaping, and times at the edges.
    pub(crate) fn fixtures() -> Vec<Event> {
        let mut v = Vec::new();
        let mut e = Event::new(Kind::Open, ts(1_795_000_000, 7), "web-1".into());
        e.pid = 4242;
        e.tid = 4243;
        e.ppid = 1;
        e.uid = 1000;
        e.gid = 0;
        e.exe = "/usr/bin/python3.11".into();
        e.script = Some("/opt/app/run \"quoted\".py".into());
        e.comm = "python3".into();
        e.cmdline = vec![
            "python3".into(),
            "-c".into(),
            "print(\"a\\b\")\n\tx\u{1}\u{7f}é😀\r\u{8}\u{c}/".into(),
            String::new(),
        ]
        .into();
        e.cgroup_id = u64::MAX;
        e.container = Some("abc123".into());
        e.pod_uid = Some("0f1e-uid".into());
        e.pod = Some("api-7d9".into());
        e.pod_namespace = Some("prod".into());
        e.container_name = Some("api".into());
        e.syscall = Some(OpenOp::Openat2);
        e.path = Some("/etc/app/token".into());
        e.path_arg = Some("../app/token".into());
        e.target = Some("/var/lib/x/token".into());
        e.flags = Some(0o2000000);
        e.inode = Some(1_234_567_890_123);
        e.dev = Some(Dev {
            major: 259,
            minor: 1,
        });
        e.result = Some(-13);
        e.error = Some("EACCES".into());
        e.nhi = Some("ci-\"deploy\"".into());
        e.verdict = Verdict::Drift;
        e.drift = vec![
            DriftKind::ReaderOutOfScope,
            DriftKind::InteractiveUse,
            DriftKind::StaleCredential,
        ];
        e.reason = "python3 (pid 4242) read\u{1f}it.".into();
        v.push(e);

        let mut e = Event::new(Kind::Connect, ts(0, 0), "h".into());
        e.pid = 1;
        e.exe = "/usr/bin/curl".into();
        e.comm = "curl".into();
        e.cmdline = vec!["curl".into(), "-H".into(), "Authorization: ***".into()].into();
        e.proto = Some(Proto::Udp);
        e.daddr = Some([93, 184, 216, 34].into());
        e.dport = Some(443);
        e.saddr = Some("fe80::1:2".parse().unwrap());
        e.sport = Some(0);
        e.dns_names = Some(vec!["example.com".into(), "a.example".into()]);
        e.nhi = Some("s3".into());
        e.verdict = Verdict::Drift;
        e.drift = vec![DriftKind::EndpointOutOfScope, DriftKind::Expired];
        e.reason = "out".into();
        v.push(e);

        let mut e = Event::new(Kind::Connect, ts(9_000_000_000, 999_999_999), "h".into());
        e.proto = Some(Proto::Tcp);
        e.daddr = Some("::ffff:10.0.0.1".parse().unwrap());
        e.dport = Some(5432);
        e.saddr = Some("::".parse().unwrap());
        e.dns_names = Some(vec![]);
        e.result = Some(0);
        v.push(e);

        let mut e = Event::new(Kind::Exec, ts(1_700_000_000, 120_000_000), "node".into());
        e.pid = 7;
        e.exe = "/bin/sh".into();
        e.comm = "sh".into();
        v.push(e);

        let mut e = Event::new(Kind::Loss, ts(1_800_000_000, 1), "node".into());
        e.count = Some(17);
        e.cause = Some("ringbuf_full_open".into());
        e.reason = "17 open record(s) were lost.".into();
        v.push(e);

        let mut e = Event::new(Kind::Open, ts(4_102_444_800, 500), "h".into());
        e.syscall = Some(OpenOp::IoUring);
        e.path = Some("/home/u/.aws/credentials".into());
        e.path_arg = Some("/home/u/.aws/credentials".into());
        e.flags = Some(0);
        e.result = Some(3);
        e.verdict = Verdict::Unregistered;
        e.reason = "unreg".into();
        v.push(e);
        v
    }

    /// The lines the earlier writer (`serde_json` over the same fields, the time and addresses
    /// as text) wrote for [`fixtures`]: the contract readers of the JSON line rely on.
    const GOLDEN: &[&str] = &[
        "{\"ts\":\"2026-11-18T11:06:40.000000007Z\",\"host\":\"web-1\",\"kind\":\"open\",\"pid\":4242,\"tid\":4243,\"ppid\":1,\"uid\":1000,\"gid\":0,\"exe\":\"/usr/bin/python3.11\",\"script\":\"/opt/app/run \\\"quoted\\\".py\",\"comm\":\"python3\",\"cmdline\":[\"python3\",\"-c\",\"print(\\\"a\\\\b\\\")\\n\\tx\\u0001\u{7f}é😀\\r\\b\\f/\",\"\"],\"cgroup_id\":18446744073709551615,\"container\":\"abc123\",\"pod_uid\":\"0f1e-uid\",\"pod\":\"api-7d9\",\"pod_namespace\":\"prod\",\"container_name\":\"api\",\"syscall\":\"openat2\",\"path\":\"/etc/app/token\",\"path_arg\":\"../app/token\",\"target\":\"/var/lib/x/token\",\"flags\":524288,\"inode\":1234567890123,\"dev\":\"259:1\",\"result\":-13,\"error\":\"EACCES\",\"nhi\":\"ci-\\\"deploy\\\"\",\"verdict\":\"drift\",\"drift\":[\"reader_out_of_scope\",\"interactive_use\",\"stale_credential\"],\"reason\":\"python3 (pid 4242) read\\u001fit.\"}",
        "{\"ts\":\"1970-01-01T00:00:00.000000000Z\",\"host\":\"h\",\"kind\":\"connect\",\"pid\":1,\"tid\":0,\"ppid\":0,\"uid\":0,\"gid\":0,\"exe\":\"/usr/bin/curl\",\"comm\":\"curl\",\"cmdline\":[\"curl\",\"-H\",\"Authorization: ***\"],\"cgroup_id\":0,\"proto\":\"udp\",\"daddr\":\"93.184.216.34\",\"dport\":443,\"saddr\":\"fe80::1:2\",\"sport\":0,\"dns_names\":[\"example.com\",\"a.example\"],\"nhi\":\"s3\",\"verdict\":\"drift\",\"drift\":[\"endpoint_out_of_scope\",\"expired\"],\"reason\":\"out\"}",
        "{\"ts\":\"2255-03-14T16:00:00.999999999Z\",\"host\":\"h\",\"kind\":\"connect\",\"pid\":0,\"tid\":0,\"ppid\":0,\"uid\":0,\"gid\":0,\"exe\":\"\",\"comm\":\"\",\"cmdline\":[],\"cgroup_id\":0,\"result\":0,\"proto\":\"tcp\",\"daddr\":\"::ffff:10.0.0.1\",\"dport\":5432,\"saddr\":\"::\",\"dns_names\":[],\"nhi\":null,\"verdict\":\"ok\",\"drift\":[],\"reason\":\"\"}",
        "{\"ts\":\"2023-11-14T22:13:20.120000000Z\",\"host\":\"node\",\"kind\":\"exec\",\"pid\":7,\"tid\":0,\"ppid\":0,\"uid\":0,\"gid\":0,\"exe\":\"/bin/sh\",\"comm\":\"sh\",\"cmdline\":[],\"cgroup_id\":0,\"nhi\":null,\"verdict\":\"ok\",\"drift\":[],\"reason\":\"\"}",
        "{\"ts\":\"2027-01-15T08:00:00.000000001Z\",\"host\":\"node\",\"kind\":\"loss\",\"pid\":0,\"tid\":0,\"ppid\":0,\"uid\":0,\"gid\":0,\"exe\":\"\",\"comm\":\"\",\"cmdline\":[],\"cgroup_id\":0,\"count\":17,\"cause\":\"ringbuf_full_open\",\"nhi\":null,\"verdict\":\"ok\",\"drift\":[],\"reason\":\"17 open record(s) were lost.\"}",
        "{\"ts\":\"2100-01-01T00:00:00.000000500Z\",\"host\":\"h\",\"kind\":\"open\",\"pid\":0,\"tid\":0,\"ppid\":0,\"uid\":0,\"gid\":0,\"exe\":\"\",\"comm\":\"\",\"cmdline\":[],\"cgroup_id\":0,\"syscall\":\"io_uring_openat\",\"path\":\"/home/u/.aws/credentials\",\"path_arg\":\"/home/u/.aws/credentials\",\"flags\":0,\"result\":3,\"nhi\":null,\"verdict\":\"unregistered\",\"drift\":[],\"reason\":\"unreg\"}",
    ];

    #[test]
    fn json_lines_are_byte_for_byte_those_of_earlier_versions() {
        let events = fixtures();
        assert_eq!(events.len(), GOLDEN.len());
        for (e, want) in events.iter().zip(GOLDEN) {
            assert_eq!(e.to_json(), *want);
            // Through serde too (`nhiscope query --json`, the spool).
            assert_eq!(serde_json::to_string(e).unwrap(), *want);
            let v = serde_json::to_value(e).unwrap();
            assert_eq!(v, serde_json::from_str::<serde_json::Value>(want).unwrap());
        }
    }

    #[test]
    fn a_line_reads_back_into_the_same_event() {
        for e in fixtures() {
            let back: Event = serde_json::from_str(&e.to_json()).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn a_reader_ignores_what_it_does_not_know_and_fills_what_is_missing() {
        let e: Event = serde_json::from_str(
            r#"{"kind":"connect","verdict":"ok","future":{"x":1},"syscall":"openat9",
                "proto":"sctp","dev":"x","daddr":"10.1.2.3","ts":"not a time"}"#,
        )
        .unwrap();
        assert_eq!(e.kind, Kind::Connect);
        assert_eq!(e.ts, Ts::default());
        assert_eq!(&*e.host, "");
        assert_eq!(e.syscall, None);
        assert_eq!(e.proto, None);
        assert_eq!(e.dev, None);
        assert_eq!(e.daddr, Some([10, 1, 2, 3].into()));
        assert_eq!(e.nhi, None);
        assert!(e.drift.is_empty());
    }

    #[test]
    fn digits_are_counted_as_the_number_is_written() {
        let mut n: u64 = 1;
        let mut edges = vec![0, u64::MAX, u64::MAX - 1];
        for _ in 0..20 {
            edges.extend([n - 1, n, n + 1]);
            n = n.saturating_mul(10);
        }
        for p in 0..64 {
            edges.extend([(1u64 << p) - 1, 1u64 << p, (1u64 << p) + 1]);
        }
        for n in edges {
            assert_eq!(json::digits(n), n.to_string().len(), "{n}");
        }
    }

    #[test]
    fn a_line_s_fixed_pieces_fit_its_slack() {
        // Every field there, at its longest, but for its strings (empty).
        let mut e = Event::new(Kind::Request, ts(LAST_SECOND, 999_999_999), "".into());
        (e.pid, e.tid, e.ppid, e.uid, e.gid) = (u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        e.cgroup_id = u64::MAX;
        for f in [
            &mut e.script,
            &mut e.container,
            &mut e.pod_uid,
            &mut e.pod,
            &mut e.pod_namespace,
            &mut e.container_name,
            &mut e.path,
            &mut e.path_arg,
            &mut e.target,
            &mut e.error,
            &mut e.cause,
        ] {
            *f = Some(String::new());
        }
        e.syscall = Some(OpenOp::Openat2);
        (e.flags, e.inode, e.result, e.count) = (
            Some(u32::MAX),
            Some(u64::MAX),
            Some(i64::MIN),
            Some(u64::MAX),
        );
        e.dev = Some(Dev {
            major: u32::MAX,
            minor: u32::MAX,
        });
        e.proto = Some(Proto::Tcp);
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        (e.daddr, e.saddr, e.dport, e.sport) = (Some(v6), Some(v6), Some(65535), Some(65535));
        e.dns_names = Some(Vec::new());
        e.established_before_use = true;
        e.nhi = Some("".into());
        e.verdict = Verdict::Unregistered;
        let mut out = Vec::new();
        e.write_json(&mut out);
        assert!(out.len() * 2 < json::SLACK, "{} bytes", out.len());
        // A drift list, however long (one read back may repeat kinds), takes its own room.
        for k in DriftKind::ALL {
            assert!(k.as_str().len() + 3 <= JSON_DRIFT_ROOM, "{k:?}");
        }
        e.drift = DriftKind::ALL.repeat(200);
        // Lines written one after another into one buffer, as the daemon's outputs do.
        let mut out = Vec::new();
        for _ in 0..3 {
            e.write_json(&mut out);
            assert!(out.ends_with(b"}"));
        }
        let line: serde_json::Value =
            serde_json::from_slice(&out[..out.len() / 3]).expect("one whole line");
        assert_eq!(line["drift"].as_array().map(Vec::len), Some(7 * 200));
    }

    #[test]
    fn a_path_argument_that_is_the_path_is_written_as_the_path_is() {
        for path in ["/srv/app/token", "/a/\"b\"\n\u{1}é", ""] {
            let mut e = Event::new(Kind::Open, ts(1, 2), "h".into());
            e.path = Some(path.into());
            e.path_arg = Some(path.into());
            let line = e.to_json();
            let want = serde_json::to_string(path).unwrap();
            assert!(
                line.contains(&format!(",\"path\":{want},\"path_arg\":{want},")),
                "{line}"
            );
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(
                (v["path"].as_str(), v["path_arg"].as_str()),
                (Some(path), Some(path))
            );
        }
    }

    #[test]
    fn strings_of_any_length_keep_the_line_s_slack() {
        let mut out = Vec::new();
        for n in [0, 1, 7, 8, 15, 16, 17, 100, 5000] {
            for s in ["a".repeat(n), "\u{1}".repeat(n), "\"".repeat(n)] {
                json::str_keeping(&mut out, &s, json::SLACK);
                assert!(out.capacity() - out.len() >= json::SLACK, "{n}");
            }
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        all.push((0u8..0x80).map(char::from).collect());
        all.push("é\u{2028}\u{feff}😀 \"x\" \\ end".into());
        all.push(String::new());
        for s in all {
            let mut out = Vec::new();
            json::str(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
        // Escapes at every position of the word-at-a-time scan, between multi-byte characters.
        let pool = [
            'a', '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', 'é', '😀', '\u{7f}', '~',
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let s: String = (0..len)
                .map(|i| pool[((x >> (i % 50)) as usize + i * 7) % pool.len()])
                .collect();
            let mut out = Vec::new();
            json::str(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
        for n in (0..=100_000)
            .chain([u64::from(u32::MAX), u64::MAX - 1, u64::MAX])
            .chain((0..64).map(|b| 1u64 << b))
        {
            let mut out = Vec::new();
            json::uint(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        for n in [0, -1, 1, i64::MIN, i64::MAX, -13] {
            let mut out = Vec::with_capacity(21);
            // SAFETY: room for a sign and 20 digits was made above.
            unsafe { json::int_in_room(&mut out, n) };
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn addresses_are_written_as_their_display() {
        for a in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.20.3",
            "::",
            "::1",
            "fe80::1%0",
            "::ffff:1.2.3.4",
            "2001:db8::8a2e:370:7334",
        ] {
            let Ok(a) = a.parse::<IpAddr>() else { continue };
            let mut out = Vec::new();
            json::opt_addr_slack(&mut out, b"", Some(a));
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{a}\""));
        }
    }

    #[test]
    fn timestamps_are_written_exactly_as_humantime_writes_them() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = if i % 4 == 0 {
                x % 250_000_000_000
            } else {
                1_795_000_000 + i / 1000
            };
            let t = UNIX_EPOCH + Duration::new(secs, (x % 1_000_000_000) as u32);
            let want = humantime::format_rfc3339_nanos(t).to_string();
            assert_eq!(Ts::from_system(t).to_rfc3339(), want, "{t:?}");
            assert_eq!(Ts::parse_rfc3339(&want), Some(Ts::from_system(t)));
        }
        assert_eq!(
            ts(1_795_000_000, 7).to_string(),
            "2026-11-18T11:06:40.000000007Z"
        );
        assert_eq!(ts(1_795_000_000, 7).clock(), "11:06:40");
        assert_eq!(
            ts(u64::MAX, 0).to_rfc3339(),
            "9999-12-31T23:59:59.999999999Z"
        );
        assert_eq!(
            Ts::parse_rfc3339("2026-11-18T11:06:40Z"),
            Some(ts(1_795_000_000, 0))
        );
        assert_eq!(Ts::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn destinations_read_as_socket_addresses() {
        let mut e = Event::new(Kind::Connect, Ts::default(), "h".into());
        e.daddr = Some([127, 0, 0, 9].into());
        e.dport = Some(443);
        assert_eq!(e.destination().as_deref(), Some("127.0.0.9:443"));
        e.daddr = Some("::1".parse().unwrap());
        assert_eq!(e.destination().as_deref(), Some("[::1]:443"));
        e.dport = None;
        assert_eq!(e.destination().as_deref(), Some("::1"));
    }
}
