//! Compiles the watched patterns into the kernel's open filter (see
//! [`monitor_common::filter`]).
//!
//! Every [`Glob`] is reduced to the most selective key(s) such that every file it matches yields
//! at least one of them in the kernel's test of the opened file: the kernel then sends every
//! open that may match and few others. The rules, first that applies:
//!
//! 1. Literal file name with a literal parent: `BaseGate(name)` and `Two(parent/name)`.
//! 2. Literal file name: `Base(name)`.
//! 3. Wildcard name with a literal parent: `ExtGate(.ext)` or `BasePrefixGate(pfx)` when the
//!    name has a literal extension or 3 literal leading bytes, with `Parent(parent)`; else
//!    `Parent(parent)` alone, which turns on the parent scan for every open (slower).
//! 4. Wildcard name with a literal extension (`*.pem`): `Ext(.pem)`.
//! 5. Wildcard name with 3 literal leading bytes (`.env.*`): `BasePrefix(.en)`.
//! 6. A literal leading directory (`/srv/vault/**`): `DirInode` of that directory (the deepest
//!    literal one), which turns on the ancestor scan (slower): files up to
//!    [`ANCESTOR_DEPTH`] directories below it are seen.
//! 7. Otherwise the pattern is [`FilterError::TooBroad`].
//!
//! The inode keys are facts of the host, not of the patterns: [`FilterPlan::add_inode`] and
//! [`FilterPlan::dirs`] are filled by the daemon from `stat` (and again when files are replaced).
//! Every hash is keyed with the plan's random key (see [`FilterPlan::new`]).

use monitor_common::filter::{
    file_watched, inode_bit, key_bit, KeyKind, OpenedFile, Scans, ANCESTOR_DEPTH, BASE_PREFIX_LEN,
    FILTER_WORDS, NAME_SCAN,
};

use crate::domain::pattern::{Component, Glob};

/// Why the patterns cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The pattern has no literal part the kernel can key on.
    #[error("`{0}` cannot be filtered in the kernel: give it a literal file name, extension or directory")]
    TooBroad(String),
}

/// The compiled filter: the bitmap for the kernel and the keys it was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterPlan {
    /// The hash key the bitmap was built with (the kernel gets it too).
    pub key: u64,
    /// The bitmap, [`FILTER_WORDS`] words; bit `b` is `words[b / 64] & (1 << (b % 64))`.
    pub words: Vec<u64>,
    /// Whether some pattern needs the parent's name tested for every open.
    pub parent_scan: bool,
    /// Whether some pattern needs the directories above an opened file tested.
    pub ancestor_scan: bool,
    /// Directories whose inodes are watched ([`KeyKind::DirInode`] keys), as written.
    pub dirs: Vec<String>,
    /// The distinct name keys, in the order they were added (for debugging).
    pub keys: Vec<(KeyKind, String)>,
    /// Inode numbers set as keys, with their kind.
    pub inodes: Vec<(KeyKind, u64)>,
}

impl FilterPlan {
    /// An empty plan hashing with `key` (the daemon draws it at random at start, so that names
    /// colliding with watched ones cannot be prepared in advance).
    pub fn new(key: u64) -> Self {
        FilterPlan {
            key,
            words: vec![0; FILTER_WORDS as usize],
            parent_scan: false,
            ancestor_scan: false,
            dirs: Vec::new(),
            keys: Vec::new(),
            inodes: Vec::new(),
        }
    }

    fn set(&mut self, bit: u32) {
        let bit = bit as usize;
        if let Some(word) = self.words.get_mut(bit / 64) {
            *word |= 1 << (bit % 64);
        }
    }

    fn add(&mut self, kind: KeyKind, literal: String) {
        if self.keys.iter().any(|(k, l)| *k == kind && *l == literal) {
            return;
        }
        match kind {
            KeyKind::DirInode => {
                self.ancestor_scan = true;
                self.dirs.push(literal.clone());
            }
            KeyKind::Inode => {}
            _ => self.set(key_bit(self.key, kind, literal.as_bytes())),
        }
        self.keys.push((kind, literal));
    }

    /// Set an inode key: a registered credential file ([`KeyKind::Inode`]) or a watched
    /// directory ([`KeyKind::DirInode`]).
    pub fn add_inode(&mut self, kind: KeyKind, ino: u64) {
        if !self.inodes.contains(&(kind, ino)) {
            self.set(inode_bit(self.key, kind, ino));
            self.inodes.push((kind, ino));
        }
    }

    fn is_set(&self, bit: u32) -> bool {
        let bit = bit as usize;
        self.words
            .get(bit / 64)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    /// Whether the kernel would send an open of the file at `path` (a real path) with inode
    /// `ino`: the userspace twin of the in-kernel test. Watched directories count when `path`
    /// lies at most [`ANCESTOR_DEPTH`] levels below one of [`FilterPlan::dirs`].
    pub fn may_match_file(&self, path: &[u8], ino: u64) -> bool {
        let mut parts = path.rsplit(|&c| c == b'/').filter(|c| !c.is_empty());
        let name = parts.next().unwrap_or(&[]);
        let parent = parts.next();
        let under_dir = self.dirs.iter().any(|d| {
            let d = d.trim_end_matches('/').as_bytes();
            path.len() > d.len()
                && path.starts_with(d)
                && path[d.len()] == b'/'
                && path[d.len() + 1..].iter().filter(|&&c| c == b'/').count() < ANCESTOR_DEPTH
        });
        let scans = Scans {
            parent: self.parent_scan,
            ancestor: false,
        };
        let file = OpenedFile {
            ino,
            name,
            parent,
            ancestors: &[],
        };
        under_dir || file_watched(self.key, |b| self.is_set(b), scans, file)
    }

    /// [`FilterPlan::may_match_file`] for a file whose inode is not a key.
    pub fn may_match(&self, path: &[u8]) -> bool {
        self.may_match_file(path, 0)
    }

    /// How many bits are set (a measure of the false-positive rate).
    pub fn bits_set(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }
}

/// Compiles patterns into a plan hashing with `key`; fails on the first pattern that cannot be
/// keyed.
pub fn compile<'a>(
    key: u64,
    patterns: impl IntoIterator<Item = &'a Glob>,
) -> Result<FilterPlan, FilterError> {
    let mut plan = FilterPlan::new(key);
    for glob in patterns {
        let keys = keys_for(glob)?;
        let gated = keys.iter().any(|(k, _)| {
            matches!(
                k,
                KeyKind::BaseGate | KeyKind::ExtGate | KeyKind::BasePrefixGate
            )
        });
        if !gated && keys.iter().any(|(k, _)| *k == KeyKind::Parent) {
            plan.parent_scan = true;
        }
        for (kind, literal) in keys {
            plan.add(kind, literal);
        }
    }
    Ok(plan)
}

/// The keys chosen for one pattern (the rules in the module documentation).
pub fn keys_for(glob: &Glob) -> Result<Vec<(KeyKind, String)>, FilterError> {
    let too_broad = || FilterError::TooBroad(glob.as_str().to_owned());
    let parts = glob.components();
    let (last, before) = parts.split_last().ok_or_else(too_broad)?;
    let parent = match before.last() {
        Some(Component::Literal(p)) => Some(p.as_str()),
        _ => None,
    };
    match last {
        Component::Literal(base) => {
            return Ok(match parent {
                Some(p) => vec![
                    (KeyKind::BaseGate, base.clone()),
                    (KeyKind::Two, format!("{p}/{base}")),
                ],
                None => vec![(KeyKind::Base, base.clone())],
            });
        }
        Component::Wild(base) => {
            let ext = extension(base);
            let prefix = base
                .get(..BASE_PREFIX_LEN)
                .filter(|p| !p.contains(['*', '?']));
            if let Some(p) = parent {
                let parent_key = (KeyKind::Parent, p.to_owned());
                return Ok(match (ext, prefix) {
                    (Some(e), _) => vec![(KeyKind::ExtGate, e.to_owned()), parent_key],
                    (None, Some(x)) => vec![(KeyKind::BasePrefixGate, x.to_owned()), parent_key],
                    // No gate: the parent scan (set by the caller from a bare `Parent` key).
                    (None, None) => vec![parent_key],
                });
            }
            if let Some(e) = ext {
                return Ok(vec![(KeyKind::Ext, e.to_owned())]);
            }
            if let Some(x) = prefix {
                return Ok(vec![(KeyKind::BasePrefix, x.to_owned())]);
            }
        }
        Component::DoubleStar | Component::HomeDirs => {}
    }
    leading_dir(before)
        .map(|dir| vec![(KeyKind::DirInode, dir)])
        .ok_or_else(too_broad)
}

/// The literal extension of a file name pattern (from its last dot), if every name it matches
/// ends with it and the kernel sees it.
fn extension(base: &str) -> Option<&str> {
    let ext = &base[base.rfind('.')?..];
    (!ext.contains(['*', '?']) && ext.len() < NAME_SCAN).then_some(ext)
}

/// The deepest literal leading directory of the components before the file name (`/srv/vault`
/// of `/srv/vault/**`); not the root alone.
fn leading_dir(dirs: &[Component]) -> Option<String> {
    let mut dir = String::new();
    for part in dirs {
        let Component::Literal(name) = part else {
            break;
        };
        dir.push('/');
        dir.push_str(name);
    }
    (!dir.is_empty()).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::watchlist;

    fn g(s: &str) -> Glob {
        Glob::parse(s).unwrap()
    }

    const K: u64 = 0x005e_ed0f_7e57;

    fn plan(s: &str) -> FilterPlan {
        compile(K, [&g(s)]).unwrap()
    }

    fn keys(s: &str) -> Vec<(KeyKind, String)> {
        keys_for(&g(s)).unwrap()
    }

    fn k(kind: KeyKind, l: &str) -> (KeyKind, String) {
        (kind, l.to_owned())
    }

    #[test]
    fn key_selection_rules() {
        use KeyKind::*;
        let t = "/var/run/secrets/kubernetes.io/serviceaccount/token";
        assert_eq!(
            keys(t),
            [k(BaseGate, "token"), k(Two, "serviceaccount/token")]
        );
        assert_eq!(
            keys("~/.aws/credentials"),
            [k(BaseGate, "credentials"), k(Two, ".aws/credentials")]
        );
        assert_eq!(keys("~/.netrc"), [k(Base, ".netrc")]);
        assert_eq!(keys("/credentials"), [k(Base, "credentials")]);
        assert_eq!(keys("/**/.env"), [k(Base, ".env")]);
        assert_eq!(keys("/srv/*/token"), [k(Base, "token")]);
        assert_eq!(
            keys("/etc/ssh/ssh_host_*_key"),
            [k(BasePrefixGate, "ssh"), k(Parent, "ssh")]
        );
        assert_eq!(
            keys("/srv/**/secrets/*.json"),
            [k(ExtGate, ".json"), k(Parent, "secrets")]
        );
        assert_eq!(keys("/etc/nhi/*"), [k(Parent, "nhi")]);
        assert_eq!(keys("/srv/**/*.pem"), [k(Ext, ".pem")]);
        assert_eq!(keys("~/**/*.tar.gz"), [k(Ext, ".gz")]);
        assert_eq!(keys("/**/.env.*"), [k(BasePrefix, ".en")]);
        assert_eq!(keys("/srv/**/id_?sa"), [k(BasePrefix, "id_")]);
        assert_eq!(keys("/srv/vault/**"), [k(DirInode, "/srv/vault")]);
        assert_eq!(keys("/srv/vault/**/*"), [k(DirInode, "/srv/vault")]);
        assert_eq!(keys("/a/b/c/d/e/**"), [k(DirInode, "/a/b/c/d/e")]);
        assert_eq!(keys("/opt/*/x*"), [k(DirInode, "/opt")]);
    }

    #[test]
    fn scans_are_turned_on_only_when_needed() {
        let p = plan("/etc/nhi/*");
        assert!(p.parent_scan && !p.ancestor_scan);
        let p = plan("/srv/**/secrets/*.json");
        assert!(!p.parent_scan && !p.ancestor_scan);
        let p = plan("/srv/vault/**");
        assert!(!p.parent_scan && p.ancestor_scan);
        assert_eq!(p.dirs, ["/srv/vault"]);
    }

    #[test]
    fn too_broad_patterns_are_named() {
        for p in [
            "/**/*",
            "/**",
            "~/**",
            "~/.password-store/**",
            "/*/x*",
            "/**/*.*",
            "/**/a*",
        ] {
            let e = keys_for(&g(p)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("`{p}` cannot be filtered in the kernel")),
                "{e}"
            );
        }
        assert!(compile(K, [&g("/etc/x"), &g("/**")]).is_err());
    }

    #[test]
    fn gated_names_need_their_parent() {
        let p = plan("/var/run/secrets/kubernetes.io/serviceaccount/token");
        assert!(p.may_match(b"/x/serviceaccount/token"));
        assert!(!p.may_match(b"/x/other/token"));
        let p = plan("/srv/**/secrets/*.json");
        assert!(p.may_match(b"/srv/a/secrets/db.json"));
        assert!(!p.may_match(b"/srv/a/public/db.json"));
    }

    #[test]
    fn inode_keys_match_any_name() {
        let mut p = plan("/etc/app/token");
        assert!(!p.may_match_file(b"/tmp/hardlink", 4242));
        p.add_inode(KeyKind::Inode, 4242);
        assert!(p.may_match_file(b"/tmp/hardlink", 4242));
        assert!(!p.may_match_file(b"/tmp/hardlink", 4243));
    }

    #[test]
    fn long_names_are_keyed_as_the_kernel_cuts_them() {
        let long = "a".repeat(200);
        let p = plan(&format!("/x/{long}"));
        assert!(p.may_match(format!("/x/{long}").as_bytes()));
        let p = plan(&format!("/x/y/{long}"));
        assert!(p.may_match(format!("/z/y/{long}").as_bytes()));
        // A wildcard name is keyed on its first 127 bytes only: a longer name's extension is
        // past what the kernel hashes (a documented limit).
        let mid = "a".repeat(100);
        assert!(plan("/**/*.pem").may_match(format!("/q/{mid}.pem").as_bytes()));
        assert!(!plan("/**/*.pem").may_match(format!("/q/{long}.pem").as_bytes()));
    }

    #[test]
    fn the_key_changes_the_bitmap() {
        let a = compile(1, watchlist::builtin()).unwrap();
        let b = compile(2, watchlist::builtin()).unwrap();
        assert_ne!(a.words, b.words);
        assert_eq!(a.bits_set(), b.bits_set());
    }

    #[test]
    fn hand_picked_matches_hit_the_bitmap() {
        let long = "n".repeat(90);
        let pairs = [
            (
                "/etc/billing/aws-credentials",
                "/etc/billing/aws-credentials".to_owned(),
            ),
            ("~/.aws/credentials", "/root/.aws/credentials".to_owned()),
            (
                "~/.aws/credentials",
                "/home/ann/.aws/credentials".to_owned(),
            ),
            ("~/.ssh/id_*", "/home/ci/.ssh/id_ed25519".to_owned()),
            ("/**/.env", "/.env".to_owned()),
            ("/**/.env", format!("/srv/{long}/{long}/.env")),
            ("/**/.env.*", "/home/ann/web/.env.production".to_owned()),
            ("/srv/**/secrets/*.json", "/srv/secrets/db.json".to_owned()),
            (
                "/srv/**/secrets/*.json",
                format!("/srv/{long}/secrets/{}.json", &long[..60]),
            ),
            ("/data/**", format!("/data/{long}/{long}/x")),
            (
                "/etc/ssh/ssh_host_*_key",
                "/etc/ssh/ssh_host_rsa_key".to_owned(),
            ),
            (
                "/run/**/containers/auth.json",
                "/run/user/1000/containers/auth.json".to_owned(),
            ),
            ("/srv/**/*.pem", format!("/srv/{long}/{long}/{long}.pem")),
            ("/opt/*/x*", "/opt/app/x".to_owned()),
        ];
        for (pattern, path) in pairs {
            assert!(g(pattern).matches(&path), "{pattern} should match {path}");
            assert!(
                plan(pattern).may_match(path.as_bytes()),
                "{pattern}: {path} missed"
            );
        }
    }

    /// Expands a glob into a path it matches, picking samples with the `rng`.
    fn expand(glob: &Glob, rng: &mut u64) -> String {
        let mut next = |n: usize| {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            (*rng % n as u64) as usize
        };
        const STARS: [&str; 8] = ["", "a", "x9", "prod", "a.b", "-_-", "üñí", "key.d"];
        const DIRS: [&str; 5] = ["d", "srv", ".hidden", "a.b", "very-long-directory-name"];
        const HOMES: [&str; 4] = ["root", "home/ann", "home/svc-ci", "home/a.b"];
        let parts = glob.components();
        let mut out = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            match part {
                Component::Literal(l) => out.push(l.clone()),
                Component::HomeDirs => out.push(HOMES[next(HOMES.len())].to_owned()),
                Component::DoubleStar => {
                    let last = i + 1 == parts.len();
                    for _ in 0..next(3) + usize::from(last) {
                        out.push(DIRS[next(DIRS.len())].to_owned());
                    }
                }
                Component::Wild(w) => {
                    let mut s = String::new();
                    for c in w.chars() {
                        match c {
                            '*' => s.push_str(STARS[next(STARS.len())]),
                            '?' => s.push(['q', 'Z', '.', '7'][next(4)]),
                            c => s.push(c),
                        }
                    }
                    out.push(if s.is_empty() { "e".to_owned() } else { s });
                }
            }
        }
        format!("/{}", out.join("/"))
    }

    const EXTRA: &[&str] = &[
        "/etc/billing/aws-credentials",
        "/srv/**/secrets/*.json",
        "/opt/*/conf/*.pem",
        "/data/**",
        "/a/b/c/d/e/f/**",
        "/x/**/y?z",
        "/var/lib/app/tok_*",
        "~/.config/*/token",
        "/srv/*/id_?sa",
        "/srv/**/*",
        "/k/**/*.key.*",
        "/**/.env.*",
        "/home/*/.local/share/**/secret-*",
    ];

    #[test]
    fn every_generated_match_hits_its_own_bitmap() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let globs: Vec<Glob> = EXTRA
            .iter()
            .map(|p| g(p))
            .chain(watchlist::builtin().iter().cloned())
            .collect();
        let all = compile(K, &globs).unwrap();
        for glob in &globs {
            let own = compile(K, [glob]).unwrap();
            for _ in 0..200 {
                let path = expand(glob, &mut rng);
                assert!(glob.matches(&path), "{glob} should match {path}");
                assert!(
                    own.may_match(path.as_bytes()),
                    "{glob}: {path} missed; keys {:?}",
                    own.keys
                );
                assert!(
                    all.may_match(path.as_bytes()),
                    "{glob}: {path} missed by the union"
                );
            }
        }
    }

    #[test]
    fn builtin_list_compiles_without_scans() {
        let plan = compile(K, watchlist::builtin()).unwrap();
        // The default list needs neither the parent nor the ancestor scan: the cheapest pass.
        assert!(!plan.parent_scan && !plan.ancestor_scan, "{:?}", plan.keys);
        assert_eq!(plan.words.len(), FILTER_WORDS as usize);
        assert!(plan.bits_set() as usize <= plan.keys.len());
        assert!(plan.keys.len() >= watchlist::builtin().len());
    }

    #[test]
    fn common_unwatched_paths_do_not_hit_the_builtin_bitmap() {
        let plan = compile(K, watchlist::builtin()).unwrap();
        for p in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/etc/ld.so.cache",
            "/etc/ld.so.preload",
            "/proc/self/stat",
            "/proc/1234/cmdline",
            "/sys/fs/cgroup/cpu.max",
            "/dev/null",
            "/dev/urandom",
            "/home/ann/project/src/main.rs",
            "/home/ann/.bashrc",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
            "/etc/localtime",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/usr/bin/python3",
            "/usr/share/locale/locale.alias",
            "/tmp/x",
            "/home/ann/project/Cargo.toml",
            "/home/ann/project/package.json",
        ] {
            assert!(!plan.may_match(p.as_bytes()), "{p} hits the builtin bitmap");
        }
    }

    #[test]
    fn keys_are_deduplicated() {
        let a = g("/run/secrets/kubernetes.io/serviceaccount/token");
        let b = g("/var/run/secrets/kubernetes.io/serviceaccount/token");
        let p = compile(K, [&a, &b]).unwrap();
        assert_eq!(p.keys.len(), 2);
        assert_eq!(p.bits_set(), 2);
        assert_eq!(compile(K, []).unwrap().bits_set(), 0);
    }
}
