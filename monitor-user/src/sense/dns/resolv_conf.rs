//! The host's resolvers, from `/etc/resolv.conf`: the servers whose answers are believed (with
//! loopback ones and those the daemon is told of, `--dns-server`; see [`super::track`]). The
//! file changes under a running daemon (DHCP, a VPN, systemd-resolved), so it is read again
//! whenever its modification time or size changes.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// The host's file.
pub const PATH: &str = "/etc/resolv.conf";

/// The `nameserver` addresses of a resolv.conf text, in order (a zone index, `fe80::1%eth0`,
/// is dropped with its address: a link-local server is named by address alone here).
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse().ok())
        })
        .collect()
}

/// `/etc/resolv.conf` (or another file, `--resolv-conf`), read when it changes.
#[derive(Debug)]
pub struct ResolvConf {
    path: PathBuf,
    /// Read at least once.
    read: bool,
    seen: Option<(SystemTime, u64)>,
    servers: Vec<IpAddr>,
    /// A failure to read it was said (once, until it is read again).
    warned: bool,
}

impl ResolvConf {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            read: false,
            seen: None,
            servers: Vec::new(),
            warned: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The servers it names now; `Some` at the first call, and later when they changed. A file
    /// that cannot be read names none (said once, until it can be read again).
    pub fn refresh(&mut self) -> Option<&[IpAddr]> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if self.read && stamp == self.seen {
            return None;
        }
        let first = !self.read;
        self.read = true;
        self.seen = stamp;
        let servers = match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                self.warned = false;
                nameservers(&text)
            }
            Err(e) => {
                if !self.warned {
                    log::warn!(
                        "DNS: cannot read {} ({e}): only loopback servers and --dns-server are \
                         believed",
                        self.path.display()
                    );
                    self.warned = true;
                }
                Vec::new()
            }
        };
        if servers == self.servers && !first {
            return None;
        }
        self.servers = servers;
        Some(&self.servers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_the_addresses_of_nameserver_lines() {
        let text = "# generated\nsearch example.com\nnameserver 10.255.255.53\n\
                    nameserver  fe80::1%eth0\nnameserver not-an-address\noptions ndots:5\n\
                    nameserver 2001:db8::53 # a comment\n";
        let got: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.255.255.53", "fe80::1", "2001:db8::53"]);
        assert!(nameservers("").is_empty());
    }

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("nhiscope-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\n").expect("write");
        let mut r = ResolvConf::new(&path);
        assert_eq!(
            r.refresh().map(<[_]>::to_vec),
            Some(vec!["192.0.2.53".parse().expect("ip")])
        );
        assert_eq!(r.refresh(), None, "unchanged");
        std::fs::write(&path, "nameserver 192.0.2.54\nnameserver 192.0.2.55\n").expect("write");
        let got = r.refresh().map(<[_]>::to_vec).expect("changed");
        assert_eq!(got.len(), 2);
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(r.refresh().map(<[_]>::to_vec), Some(vec![]), "gone: none");
        assert_eq!(r.refresh(), None, "still gone");
        // A file missing from the start: its (empty) servers are given once all the same, so
        // that the daemon puts --dns-server in force.
        let mut missing = ResolvConf::new(&dir.join("absent"));
        assert_eq!(missing.refresh().map(<[_]>::to_vec), Some(vec![]));
        assert_eq!(missing.refresh(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
