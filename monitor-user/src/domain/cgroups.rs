//! cgroup ids (as the kernel stamps them on every record, `bpf_get_current_cgroup_id`) to cgroup
//! v2 paths, and from there container ids. A cgroup's id is the inode number of its directory in
//! the cgroup2 filesystem, so a walk of that tree ([`Host::cgroups`]) maps ids to paths; the map
//! is cached and walked again (at most once a second) when an id is new.

use std::{collections::HashMap, sync::Arc, time::Duration, time::Instant};

use crate::domain::host::Host;

/// How often, at most, the tree is walked again when an id is new.
const RESCAN: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct CgroupNames {
    paths: HashMap<u64, Arc<str>>,
    last_scan: Option<Instant>,
}

impl CgroupNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cgroup path (`/system.slice/x.service`) of cgroup `id`.
    pub fn path(&mut self, id: u64, host: &impl Host) -> Option<Arc<str>> {
        if let Some(p) = self.paths.get(&id) {
            return Some(Arc::clone(p));
        }
        let now = host.now();
        if self
            .last_scan
            .is_some_and(|t| now.saturating_duration_since(t) < RESCAN)
        {
            return None;
        }
        self.last_scan = Some(now);
        self.paths = host.cgroups();
        self.paths.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::host::fake::FakeHost, sense::proc_host::ProcHost};
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn ids_are_directory_inodes() {
        let root = std::env::temp_dir().join(format!("nhiscope-cg-{}", std::process::id()));
        let leaf = root.join("system.slice/app.service");
        std::fs::create_dir_all(&leaf).expect("dirs");
        let ino = std::fs::metadata(&leaf).expect("meta").ino();
        let host = ProcHost::with_cgroup_root("/nonexistent", Some(root.clone()));
        let mut c = CgroupNames::new();
        assert_eq!(
            c.path(ino, &host).as_deref(),
            Some("/system.slice/app.service")
        );
        let top = std::fs::metadata(&root).expect("meta").ino();
        assert_eq!(c.path(top, &host).as_deref(), Some("/"));
        assert_eq!(c.path(1, &host), None);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_new_id_walks_the_tree_again_at_most_once_a_second() {
        let host = FakeHost::default();
        let mut c = CgroupNames::new();
        assert_eq!(c.path(7, &host), None);
        assert_eq!(host.asked("cgroups"), 1);
        host.cgroups.borrow_mut().insert(7, Arc::from("/a.slice"));
        // Made within the second: not seen yet, and the tree is not walked again.
        assert_eq!(c.path(7, &host), None);
        assert_eq!(host.asked("cgroups"), 1);
        host.advance(RESCAN);
        assert_eq!(c.path(7, &host).as_deref(), Some("/a.slice"));
        assert_eq!(host.asked("cgroups"), 2);
        // Known ids are answered from the cache.
        assert_eq!(c.path(7, &host).as_deref(), Some("/a.slice"));
        assert_eq!(host.asked("cgroups"), 2);
    }
}
