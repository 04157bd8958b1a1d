//! What a test needs to stand in for systemd where systemd is not PID 1 (as on these machines):
//! a notify socket of its own that receives what the daemon sends to `$NOTIFY_SOCKET`
//! ([`NotifySocket`]), the settings of a unit file that decide how its process runs
//! ([`Unit`]), and the count of BPF links a process holds (how far attaching has gone).

use std::{
    collections::BTreeMap,
    fs,
    io::ErrorKind,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// A datagram socket that plays systemd's notify socket: bound at a path, or at an abstract
/// name (`@name` in `$NOTIFY_SOCKET`).
pub struct NotifySocket {
    socket: UnixDatagram,
    /// The value for `$NOTIFY_SOCKET`.
    pub env: String,
    /// Every message received so far, in order.
    pub received: Vec<String>,
}

impl NotifySocket {
    /// Bound at `path` (removed first when a previous run left it).
    pub fn at_path(path: &Path) -> NotifySocket {
        let _ = fs::remove_file(path);
        let socket = UnixDatagram::bind(path)
            .unwrap_or_else(|e| panic!("cannot bind {}: {e}", path.display()));
        NotifySocket {
            socket,
            env: path.display().to_string(),
            received: Vec::new(),
        }
    }

    /// Bound at the abstract name `name`.
    pub fn abstract_named(name: &str) -> NotifySocket {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())
            .unwrap_or_else(|e| panic!("abstract name {name}: {e}"));
        let socket =
            UnixDatagram::bind_addr(&addr).unwrap_or_else(|e| panic!("cannot bind @{name}: {e}"));
        NotifySocket {
            socket,
            env: format!("@{name}"),
            received: Vec::new(),
        }
    }

    /// The next message, or `None` when none came before `deadline`.
    pub fn next_before(&mut self, deadline: Instant) -> Option<String> {
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left))
                .unwrap_or_else(|e| panic!("notify socket: {e}"));
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.received.push(msg.clone());
                    return Some(msg);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// The first message that `pred` accepts, received within `timeout` (the ones before it are
    /// kept in `received` too); panics with everything received otherwise.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_for_or(timeout, what, pred, String::new)
    }

    /// [`NotifySocket::wait_for`], with `context()` (the daemon's output, say) in the panic.
    #[track_caller]
    pub fn wait_for_or(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
        context: impl Fn() -> String,
    ) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(msg) = self.next_before(deadline) {
            if pred(&msg) {
                return msg;
            }
        }
        panic!(
            "no {what} on the notify socket within {timeout:?}; received: {:?}\n{}",
            self.received,
            context()
        );
    }

    /// Takes whatever is queued now without waiting; returns how many messages that was.
    pub fn drain(&mut self) -> usize {
        self.socket
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("notify socket: {e}"));
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while let Ok(len) = self.socket.recv(&mut buf) {
            self.received
                .push(String::from_utf8_lossy(&buf[..len]).into_owned());
            n += 1;
        }
        self.socket
            .set_nonblocking(false)
            .unwrap_or_else(|e| panic!("notify socket: {e}"));
        n
    }
}

/// How many BPF links (attached programs) process `pid` holds: its `anon_inode:bpf_link`
/// descriptors.
pub fn bpf_links(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter(|target| target.as_os_str() == "anon_inode:bpf_link")
        .count()
}

/// The number in a `STATUS=` line such as `17 probes attached, ...`.
pub fn probes_in_status(msg: &str) -> Option<usize> {
    let status = msg.lines().find_map(|l| l.strip_prefix("STATUS="))?;
    let (n, rest) = status.split_once(' ')?;
    rest.starts_with("probes attached")
        .then(|| n.parse().ok())
        .flatten()
}

/// A unit file's `[Service]` settings, as `key -> values` in file order (comments and other
/// sections left out).
pub struct Unit {
    pub path: PathBuf,
    settings: BTreeMap<String, Vec<String>>,
}

impl Unit {
    pub fn read(path: &Path) -> Unit {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            if section != "[Service]" {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                settings
                    .entry(k.trim().to_owned())
                    .or_default()
                    .push(v.trim().to_owned());
            }
        }
        Unit {
            path: path.to_owned(),
            settings,
        }
    }

    /// The last value of `key` (a later assignment wins, as in systemd).
    #[track_caller]
    pub fn get(&self, key: &str) -> &str {
        self.settings
            .get(key)
            .and_then(|v| v.last())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{}: no {key}=", self.path.display()))
    }

    /// `ExecStart=` as words, with `$VAR` words replaced by the words of `vars[VAR]` (systemd's
    /// unquoted expansion; an unknown variable expands to nothing).
    pub fn exec_start(&self, vars: &BTreeMap<String, String>) -> Vec<String> {
        self.get("ExecStart")
            .split_whitespace()
            .flat_map(|w| match w.strip_prefix('$') {
                Some(var) => vars
                    .get(var)
                    .map(|v| v.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default(),
                None => vec![w.to_owned()],
            })
            .collect()
    }

    /// `CapabilityBoundingSet=` as `setpriv --bounding-set` wants it: `-all,+bpf,+perfmon,...`.
    pub fn bounding_set_for_setpriv(&self) -> String {
        let mut spec = String::from("-all");
        for cap in self.get("CapabilityBoundingSet").split_whitespace() {
            spec.push_str(",+");
            spec.push_str(&cap.trim_start_matches("CAP_").to_ascii_lowercase());
        }
        spec
    }

    /// The directories systemd makes before starting the service: `(path, mode)` for
    /// `StateDirectory=` (/var/lib), `RuntimeDirectory=` (/run) and `LogsDirectory=`
    /// (/var/log), each with its `*Mode=` (0755 when not set).
    pub fn directories(&self) -> Vec<(PathBuf, u32)> {
        [
            ("StateDirectory", "/var/lib"),
            ("RuntimeDirectory", "/run"),
            ("LogsDirectory", "/var/log"),
        ]
        .iter()
        .filter_map(|(key, base)| {
            let name = self.settings.get(*key)?.last()?;
            let mode = self
                .settings
                .get(&format!("{key}Mode"))
                .and_then(|v| v.last())
                .map_or(0o755, |m| {
                    u32::from_str_radix(m, 8).unwrap_or_else(|_| panic!("{key}Mode={m}"))
                });
            Some((Path::new(base).join(name), mode))
        })
        .collect()
    }
}

/// `KEY="value"` assignments of an environment file such as /etc/default/nhiscope.
pub fn environment_file(path: &Path) -> BTreeMap<String, String> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_is_read_as_systemd_would() {
        let dir = crate::temp_dir("unit-parse");
        let path = dir.join("x.service");
        fs::write(
            &path,
            "[Unit]\nDescription=x\n[Service]\n# ExecStart=/not/this\n\
             ExecStart=/usr/bin/x run --a 1 $ARGS\nCapabilityBoundingSet=CAP_BPF CAP_NET_RAW\n\
             StateDirectory=x\nLogsDirectory=x\nLogsDirectoryMode=0750\n[Install]\nWantedBy=y\n",
        )
        .unwrap();
        let unit = Unit::read(&path);
        let vars = BTreeMap::from([("ARGS".to_owned(), "--b  2".to_owned())]);
        assert_eq!(
            unit.exec_start(&vars),
            ["/usr/bin/x", "run", "--a", "1", "--b", "2"]
        );
        assert_eq!(unit.exec_start(&BTreeMap::new()).len(), 4);
        assert_eq!(unit.bounding_set_for_setpriv(), "-all,+bpf,+net_raw");
        assert_eq!(
            unit.directories(),
            [
                (PathBuf::from("/var/lib/x"), 0o755),
                (PathBuf::from("/var/log/x"), 0o750)
            ]
        );
    }

    #[test]
    fn the_probe_count_is_read_from_the_status() {
        assert_eq!(
            probes_in_status("READY=1\nSTATUS=17 probes attached, 0 NHIs"),
            Some(17)
        );
        assert_eq!(probes_in_status("READY=1"), None);
        assert_eq!(probes_in_status("STATUS=stopping"), None);
    }
}
