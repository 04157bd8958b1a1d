//! systemd's notify protocol (`sd_notify(3)`), for a unit of `Type=notify` with a watchdog:
//! `READY=1` once the probes are attached, `WATCHDOG=1` from the daemon's loop while it turns,
//! `STOPPING=1` at shutdown, each with a `STATUS=` line that `systemctl status` shows.
//!
//! The protocol is one datagram per message to the unix socket named by `$NOTIFY_SOCKET`: a
//! path, or an abstract name written with a leading `@`. The socket is connected when the
//! daemon starts, while it is still root: sends after the switch to `--user` need no permission
//! on the socket's file. Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.
//!
//! The watchdog period is `$WATCHDOG_USEC`, for this process only when `$WATCHDOG_PID` names
//! it (or is unset); the daemon pings at half of it, from its loop, so that a loop stuck on a
//! blocked output stops the pings and systemd restarts the service.

use std::{
    ffi::{OsStr, OsString},
    os::{
        linux::net::SocketAddrExt as _,
        unix::{
            ffi::OsStrExt as _,
            net::{SocketAddr, UnixDatagram},
        },
    },
    time::Duration,
};

use thiserror::Error;

/// Why the notify socket cannot be used. None is fatal: systemd then sees the daemon as it would
/// see any process that never says it is ready, and the daemon says why in its log.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor an abstract name (`@name`).
    #[error("NOTIFY_SOCKET={0:?}: not an absolute path nor an abstract socket name (@name)")]
    Address(OsString),
    /// The socket could not be made or connected.
    #[error("NOTIFY_SOCKET={socket:?}: {source}")]
    Connect {
        socket: OsString,
        source: std::io::Error,
    },
    /// `$WATCHDOG_USEC` is not a positive number of microseconds.
    #[error("WATCHDOG_USEC={0:?}: not a positive number of microseconds")]
    Watchdog(String),
}

/// Where notifications go, if anywhere.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<UnixDatagram>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier that `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` describe. What
    /// is wrong with them is logged, and leaves the notifier without that part.
    pub fn from_env() -> Notifier {
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let (notifier, errors) = Notifier::new(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            watchdog_usec.as_deref(),
            watchdog_pid.as_deref(),
            std::process::id(),
        );
        for e in errors {
            log::warn!("systemd notifications: {e}");
        }
        notifier
    }

    /// The notifier for these variables, as seen by process `pid`, and what was wrong with them.
    pub fn new(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> (Notifier, Vec<NotifyError>) {
        let mut errors = Vec::new();
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return (Notifier::default(), errors);
        };
        let socket = match connect(socket) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                return (Notifier::default(), errors);
            }
        };
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = match watchdog_usec.filter(|_| for_us) {
            None => None,
            Some(usec) => match usec.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(Duration::from_micros(n)),
                _ => {
                    errors.push(NotifyError::Watchdog(usec.to_owned()));
                    None
                }
            },
        };
        (
            Notifier {
                socket: Some(socket),
                watchdog,
            },
            errors,
        )
    }

    /// Whether there is anyone to tell.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often the loop pings: half of the watchdog period, as systemd advises. `None` without
    /// a watchdog.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| (w / 2).max(Duration::from_millis(1)))
    }

    /// The probes are attached and the daemon watches: `READY=1` with `status`.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// The loop turned: `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Shutdown has begun: `STOPPING=1` with `status`.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    fn send(&self, message: &str) {
        let Some(socket) = &self.socket else { return };
        if let Err(e) = socket.send(message.as_bytes()) {
            log::debug!("systemd notification not sent: {e}");
        }
    }
}

/// A `STATUS=` value is one line: the protocol separates assignments by newlines.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// A datagram socket connected to the notify socket `name` (a path, or `@` and an abstract
/// name).
fn connect(name: &OsStr) -> Result<UnixDatagram, NotifyError> {
    let bytes = name.as_bytes();
    let addr = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(name),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => return Err(NotifyError::Address(name.to_owned())),
    };
    let err = |source| NotifyError::Connect {
        socket: name.to_owned(),
        source,
    };
    let addr = addr.map_err(err)?;
    let socket = UnixDatagram::unbound().map_err(err)?;
    socket.connect_addr(&addr).map_err(err)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn temp_socket(name: &str) -> (std::path::PathBuf, UnixDatagram) {
        let dir =
            std::env::temp_dir().join(format!("nhiscope-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify");
        let s = UnixDatagram::bind(&path).expect("bind");
        (path, s)
    }

    #[test]
    fn nothing_without_a_socket() {
        let (n, errors) = Notifier::new(None, Some("30000000"), None, 1);
        assert!(!n.enabled());
        assert!(n.ping_interval().is_none());
        assert!(errors.is_empty());
        // Sending is then a no-op, not an error.
        n.ready("x");
        n.watchdog();
        n.stopping("x");
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let (path, s) = temp_socket("path");
        let (n, errors) = Notifier::new(Some(path.as_os_str()), Some("4000000"), None, 7);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(n.ping_interval(), Some(Duration::from_secs(2)));
        n.ready("17 probes\nattached");
        assert_eq!(recv(&s), "READY=1\nSTATUS=17 probes attached");
        n.watchdog();
        assert_eq!(recv(&s), "WATCHDOG=1");
        n.stopping("stopping");
        assert_eq!(recv(&s), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("nhiscope-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let s = UnixDatagram::bind_addr(&addr).expect("bind");
        let (n, errors) = Notifier::new(Some(OsStr::new(&format!("@{name}"))), None, None, 7);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(n.ping_interval().is_none());
        n.ready("up");
        assert_eq!(recv(&s), "READY=1\nSTATUS=up");
    }

    #[test]
    fn the_watchdog_is_for_the_pid_it_names() {
        let (path, _s) = temp_socket("pid");
        let (mine, _) = Notifier::new(Some(path.as_os_str()), Some("1000000"), Some("7"), 7);
        assert_eq!(mine.ping_interval(), Some(Duration::from_millis(500)));
        let (other, _) = Notifier::new(Some(path.as_os_str()), Some("1000000"), Some("8"), 7);
        assert!(other.enabled());
        assert!(other.ping_interval().is_none());
    }

    #[test]
    fn bad_variables_are_said() {
        let (n, errors) = Notifier::new(Some(OsStr::new("relative/path")), None, None, 7);
        assert!(!n.enabled());
        assert!(matches!(errors[..], [NotifyError::Address(_)]));
        let (n, errors) = Notifier::new(Some(OsStr::new("/nonexistent/notify")), None, None, 7);
        assert!(!n.enabled());
        assert!(matches!(errors[..], [NotifyError::Connect { .. }]));
        let (path, _s) = temp_socket("usec");
        let (n, errors) = Notifier::new(Some(path.as_os_str()), Some("soon"), None, 7);
        assert!(n.enabled());
        assert!(n.ping_interval().is_none());
        assert!(errors[0].to_string().contains("WATCHDOG_USEC=\"soon\""));
    }
}
