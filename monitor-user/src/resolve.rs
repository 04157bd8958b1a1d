//! Turning the path a process passed to `open` into the file the kernel opened: relative to the
//! process's cwd or dirfd, `.` and `..` folded, and (when the file is reachable from here)
//! through symlinks.

use std::path::{Component, Path, PathBuf};

/// `AT_FDCWD`: the path is relative to the cwd.
pub const AT_FDCWD: i32 = -100;

/// Join `path` onto `base` (when relative) and fold `.` and `..` lexically.
pub fn absolute(base: Option<&Path>, path: &Path) -> Option<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base?.join(path)
    };
    Some(normalize(&joined))
}

/// Fold `.`, `..` and repeated slashes without touching the filesystem.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// The directory a relative path is resolved against: the cwd (`dfd == AT_FDCWD`), or the
/// directory open on `dfd` in process `pid` (read from /proc while the process lives).
pub fn base_dir(proc_root: &Path, pid: u32, dfd: i32, cwd: Option<&Path>) -> Option<PathBuf> {
    if dfd == AT_FDCWD {
        return cwd
            .map(Path::to_path_buf)
            .or_else(|| std::fs::read_link(proc_root.join(format!("{pid}/cwd"))).ok());
    }
    std::fs::read_link(proc_root.join(format!("{pid}/fd/{dfd}"))).ok()
}

/// Where `path` leads after symlinks, if that differs and can be known from here.
pub fn symlink_target(path: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    (real != path).then_some(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_the_base_and_fold() {
        let b = Path::new("/var/run/secrets");
        assert_eq!(
            absolute(Some(b), Path::new("token")),
            Some("/var/run/secrets/token".into())
        );
        assert_eq!(
            absolute(Some(b), Path::new("./a/../token")),
            Some("/var/run/secrets/token".into())
        );
        assert_eq!(
            absolute(Some(b), Path::new("../../../../etc//x")),
            Some("/etc/x".into())
        );
        assert_eq!(absolute(None, Path::new("/etc/./x")), Some("/etc/x".into()));
        assert_eq!(absolute(None, Path::new("token")), None);
    }

    #[test]
    fn symlinks_are_followed() {
        let d = std::env::temp_dir().join(format!("nhiscope-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let real = d.join("real");
        std::fs::write(&real, "x").expect("file");
        let link = d.join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let real = std::fs::canonicalize(&real).expect("canon");
        assert_eq!(
            symlink_target(&std::fs::canonicalize(&d).expect("d").join("link")),
            Some(real.clone())
        );
        assert_eq!(symlink_target(&real), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
