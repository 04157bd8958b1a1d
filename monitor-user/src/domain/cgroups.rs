//! cgroup ids (as the kernel stamps them on every record, `bpf_get_current_cgroup_id`) to cgroup
//! v2 paths, and from there container ids. A cgroup's id is the inode number of its directory in
//! the cgroup2 filesystem, so a walk of that tree ([`Host::cgroups`]) maps ids to paths; the map
//! is cached and walked again (at most once a second of the records' time) when an id is new.

use std::{collections::HashMap, sync::Arc};

use crate::domain::host::Host;

/// How often, at most, the tree is walked again when an id is new, in nanoseconds of the
/// records' clock (the kernel's boot time): an id that is not in the tree is asked about on
/// every record of its processes, and the record's own time is what it is measured on, so that
/// no clock is read per record.
const RESCAN_NS: u64 = 1_000_000_000;

#[derive(Debug, Default)]
pub struct CgroupNames {
    paths: HashMap<u64, Arc<str>, foldhash::fast::RandomState>,
    last_scan: Option<u64>,
}

impl CgroupNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cgroup path (`/system.slice/x.service`) of cgroup `id`, asked by a record stamped
    /// `at_ns` (boot time).
    pub fn path(&mut self, id: u64, at_ns: u64, host: &impl Host) -> Option<Arc<str>> {
        if let Some(p) = self.paths.get(&id) {
            return Some(Arc::clone(p));
        }
        if self
            .last_scan
            .is_some_and(|t| at_ns.saturating_sub(t) < RESCAN_NS)
        {
            return None;
        }
        self.last_scan = Some(at_ns);
        self.paths = host.cgroups().into_iter().collect();
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
            c.path(ino, 0, &host).as_deref(),
            Some("/system.slice/app.service")
        );
        let top = std::fs::metadata(&root).expect("meta").ino();
        assert_eq!(c.path(top, 0, &host).as_deref(), Some("/"));
        assert_eq!(c.path(1, 0, &host), None);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_new_id_walks_the_tree_again_at_most_once_a_second_of_the_records_time() {
        let host = FakeHost::default();
        let mut c = CgroupNames::new();
        let t0 = 5_000_000_000;
        assert_eq!(c.path(7, t0, &host), None);
        assert_eq!(host.asked("cgroups"), 1);
        host.cgroups.borrow_mut().insert(7, Arc::from("/a.slice"));
        // Made within the second: not seen yet, and the tree is not walked again, nor for a
        // record stamped earlier (records of several CPUs come a little out of order).
        assert_eq!(c.path(7, t0 + RESCAN_NS - 1, &host), None);
        assert_eq!(c.path(7, t0 - 10, &host), None);
        assert_eq!(host.asked("cgroups"), 1);
        assert_eq!(
            c.path(7, t0 + RESCAN_NS, &host).as_deref(),
            Some("/a.slice")
        );
        assert_eq!(host.asked("cgroups"), 2);
        // Known ids are answered from the cache; no clock is asked.
        assert_eq!(c.path(7, 0, &host).as_deref(), Some("/a.slice"));
        assert_eq!(host.asked("cgroups"), 2);
        assert_eq!(host.asked("now"), 0);
    }
}
