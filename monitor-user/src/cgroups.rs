//! cgroup ids (as the kernel stamps them on every record, `bpf_get_current_cgroup_id`) to cgroup
//! v2 paths, and from there container ids. A cgroup's id is the inode number of its directory in
//! the cgroup2 filesystem, so a walk of that tree maps ids to paths; the map is cached and
//! walked again (at most once a second) when an id is new.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Walks deeper than this are cut short (container runtimes nest a few levels).
const MAX_DEPTH: usize = 12;

#[derive(Debug, Default)]
pub struct CgroupNames {
    root: Option<PathBuf>,
    paths: HashMap<u64, Arc<str>>,
    last_scan: Option<Instant>,
}

impl CgroupNames {
    /// Find the cgroup2 mount in /proc/mounts (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
    /// on a hybrid host).
    pub fn new() -> Self {
        let root = std::fs::read_to_string("/proc/mounts").ok().and_then(|m| {
            m.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
        });
        Self {
            root,
            ..Self::default()
        }
    }

    /// A map over the tree at `root` (tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: Some(root.into()),
            ..Self::default()
        }
    }

    /// The cgroup path (`/system.slice/x.service`) of cgroup `id`.
    pub fn path(&mut self, id: u64) -> Option<Arc<str>> {
        if let Some(p) = self.paths.get(&id) {
            return Some(Arc::clone(p));
        }
        if self
            .last_scan
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        self.scan();
        self.paths.get(&id).cloned()
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        self.paths.clear();
        walk(&root, &root, 0, &mut self.paths);
    }
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut HashMap<u64, Arc<str>>) {
    if let Ok(m) = std::fs::metadata(dir) {
        let rel = dir
            .strip_prefix(root)
            .map(|r| format!("/{}", r.display()))
            .unwrap_or_default();
        out.insert(m.ino(), Arc::from(rel.as_str()));
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &e.path(), depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_directory_inodes() {
        let root = std::env::temp_dir().join(format!("nhiscope-cg-{}", std::process::id()));
        let leaf = root.join("system.slice/app.service");
        std::fs::create_dir_all(&leaf).expect("dirs");
        let ino = std::fs::metadata(&leaf).expect("meta").ino();
        let mut c = CgroupNames::at(&root);
        assert_eq!(c.path(ino).as_deref(), Some("/system.slice/app.service"));
        let top = std::fs::metadata(&root).expect("meta").ino();
        assert_eq!(c.path(top).as_deref(), Some("/"));
        assert_eq!(c.path(1), None);
        let _ = std::fs::remove_dir_all(root);
    }
}
