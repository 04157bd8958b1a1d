//! Lexical path work for what the kernel could not name itself: a failed open's argument joined
//! onto the directory the kernel said it was relative to, `.` and `..` folded.

use std::path::{Component, Path, PathBuf};

/// `AT_FDCWD`: the path is relative to the cwd.
pub const AT_FDCWD: i32 = -100;

/// Join `path` onto `base` (when relative) and fold `.` and `..` lexically.
pub fn absolute(base: Option<&Path>, path: &Path) -> Option<PathBuf> {
    // Most paths are absolute and already folded: copied once, not rebuilt component by
    // component.
    if is_normal(path) {
        return Some(path.to_path_buf());
    }
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base?.join(path)
    };
    Some(normalize(&joined))
}

/// The path a script was named by, made absolute for matching, without letting `..` decide.
/// `.` and repeated slashes fold safely; `..` does not: after a symlinked directory the kernel
/// climbs from the link's target, so `link/../../opt/tools/sync.py` can run a file of the
/// caller's while folding it would name an allowed script. Such a path is kept as given (joined
/// onto the cwd), so that no `readers.exe`/`holders.exe` pattern matches it by accident.
pub fn script_path(cwd: Option<&Path>, path: &Path) -> PathBuf {
    if path.components().any(|c| c == Component::ParentDir) {
        return match (path.is_absolute(), cwd) {
            (false, Some(base)) => base.join(path),
            _ => path.to_path_buf(),
        };
    }
    absolute(cwd, path).unwrap_or_else(|| path.to_path_buf())
}

/// Whether `path` is absolute and [`normalize`] would leave it as it is: no empty, `.` or `..`
/// component and no trailing slash.
fn is_normal(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let b = path.as_os_str().as_bytes();
    if b == b"/" {
        return true;
    }
    if b.first() != Some(&b'/') {
        return false;
    }
    // What follows each slash must start a real name (not another slash, not the end, not
    // `.` or `..` ending there). The slashes are found a word at a time.
    let end = |i: usize| b.get(i).is_none_or(|&c| c == b'/');
    let starts_name = |i: usize| {
        !(end(i + 1) || (b[i + 1] == b'.' && (end(i + 2) || (b[i + 2] == b'.' && end(i + 3)))))
    };
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while at + 8 <= b.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        let x = u64::from_le_bytes(w) ^ (ONES * u64::from(b'/'));
        // A high bit for each byte of the word that is a slash (exact: no borrow runs on).
        let mut slashes = !(((x & !HIGH) + !HIGH) | x) & HIGH;
        while slashes != 0 {
            let i = at + slashes.trailing_zeros() as usize / 8;
            if !starts_name(i) {
                return false;
            }
            slashes &= slashes - 1;
        }
        at += 8;
    }
    (at..b.len()).all(|i| b[i] != b'/' || starts_name(i))
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
    fn script_paths_never_fold_dotdot() {
        let cwd = Path::new("/tmp/a");
        assert_eq!(
            script_path(Some(cwd), Path::new("x/../../../opt/tools/sync.py")),
            PathBuf::from("/tmp/a/x/../../../opt/tools/sync.py")
        );
        assert_eq!(
            script_path(None, Path::new("/tmp/x/../../opt/tools/sync.py")),
            PathBuf::from("/tmp/x/../../opt/tools/sync.py")
        );
        assert_eq!(
            script_path(Some(cwd), Path::new("./bin//tool.py")),
            PathBuf::from("/tmp/a/bin/tool.py")
        );
    }

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
        // Paths already folded come back as they are; the others are folded.
        for p in ["/", "/etc/x", "/a/b.c/.d/..e"] {
            assert_eq!(absolute(None, Path::new(p)), Some(p.into()));
        }
        for (p, want) in [("/etc/", "/etc"), ("//etc//x", "/etc/x"), ("/a/..", "/")] {
            assert_eq!(absolute(None, Path::new(p)), Some(want.into()), "{p}");
        }
        assert_eq!(absolute(None, Path::new("token")), None);
    }

    #[test]
    fn a_path_is_taken_as_folded_exactly_when_folding_leaves_it_as_it_is() {
        // Every string of up to six pieces of these, absolute or not.
        let pieces = ["/", ".", "..", "a", ".b", "c.", "...", "/."];
        let mut paths = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| pieces.iter().map(move |q| format!("{p}{q}")))
                .collect();
            paths.extend(longer);
            paths.sort();
            paths.dedup();
        }
        assert!(paths.len() > 10_000);
        for p in &paths {
            let path = Path::new(p.as_str());
            let folded = p.starts_with('/') && normalize(path).as_os_str() == path.as_os_str();
            assert_eq!(is_normal(path), folded, "{p:?}");
        }
    }
}
