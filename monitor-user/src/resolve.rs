//! Lexical path work for what the kernel could not name itself: a failed open's argument joined
//! onto the directory the kernel said it was relative to, `.` and `..` folded.

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
}
