//! Compiles the watched patterns into the kernel's open prefilter (see
//! [`monitor_common::filter`]).
//!
//! Every [`Glob`] is reduced to the most selective key(s) such that every path it matches yields
//! at least one of them in [`tail_keys`]: the kernel then sends every open that may match and few
//! others. The rules, first that applies:
//!
//! 1. Literal basename with a literal parent: `Two(parent/base)`, plus `RelBase(base)` so that a
//!    relative open (`token`, `./token`) is seen too.
//! 2. Literal basename: `Base(base)` and `RelBase(base)`.
//! 3. Wildcard basename with a literal parent (`/etc/ssh/ssh_host_*_key`): `Parent(parent)`.
//! 4. Wildcard basename with a literal extension (`*.pem`): `Ext(.pem)`.
//! 5. Wildcard basename with 3 literal leading bytes (`.env.*`): `BasePrefix(.en)`.
//! 6. A literal leading directory (`/srv/vault/**`): `DirPrefix(/srv/vault/)`, which turns on the
//!    kernel's (slower) prefix scan. A leading `~/` is no literal directory.
//! 7. Otherwise the pattern is [`FilterError::TooBroad`].
//!
//! A rule is used only when its key fits the kernel's scan windows ([`TAIL_SCAN`] bytes from the
//! end, [`PREFIX_SCAN`] bytes and [`PREFIX_DEPTH`] directories from the start). Limits, which the
//! daemon's exact match cannot recover: keys of rules 3 and 5 are found only when the matched
//! basename (and parent) fit in the last [`TAIL_SCAN`] bytes; relative opens are seen by rules 1,
//! 2, 4 and 5 only.

use monitor_common::filter::{
    key_bit, tail_keys, KeyKind, BASE_PREFIX_LEN, FILTER_WORDS, PREFIX_DEPTH, PREFIX_SCAN,
    TAIL_SCAN,
};

use crate::pattern::{Component, Glob};

/// Why the patterns cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The pattern has no literal part the kernel can key on.
    #[error("`{0}` cannot be filtered in the kernel: give it a literal file name, extension or directory")]
    TooBroad(String),
}

/// The compiled prefilter: the bitmap for the kernel and the keys it was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterPlan {
    /// The bitmap, [`FILTER_WORDS`] words; bit `b` is `words[b / 64] & (1 << (b % 64))`.
    pub words: Vec<u64>,
    /// Whether some key is a [`KeyKind::DirPrefix`], so the kernel must scan path prefixes.
    pub prefix_scan: bool,
    /// The distinct keys, in the order they were added (for `--explain` and debugging).
    pub keys: Vec<(KeyKind, String)>,
}

impl Default for FilterPlan {
    fn default() -> Self {
        FilterPlan {
            words: vec![0; FILTER_WORDS as usize],
            prefix_scan: false,
            keys: Vec::new(),
        }
    }
}

impl FilterPlan {
    fn add(&mut self, kind: KeyKind, literal: String) {
        if self.keys.iter().any(|(k, l)| *k == kind && *l == literal) {
            return;
        }
        let bit = key_bit(kind, literal.as_bytes()) as usize;
        if let Some(word) = self.words.get_mut(bit / 64) {
            *word |= 1 << (bit % 64);
        }
        self.prefix_scan |= kind == KeyKind::DirPrefix;
        self.keys.push((kind, literal));
    }

    fn is_set(&self, bit: u32) -> bool {
        let bit = bit as usize;
        self.words
            .get(bit / 64)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    /// Whether the kernel would send an open of `path` (as passed to `openat`): the userspace
    /// twin of the in-kernel test.
    pub fn may_match(&self, path: &[u8]) -> bool {
        tail_keys(path, self.prefix_scan)
            .as_slice()
            .iter()
            .any(|&b| self.is_set(b))
    }

    /// How many bits are set (a measure of the false-positive rate).
    pub fn bits_set(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }
}

/// Compiles patterns into a plan; fails on the first pattern that cannot be keyed.
pub fn compile<'a>(
    patterns: impl IntoIterator<Item = &'a Glob>,
) -> Result<FilterPlan, FilterError> {
    let mut plan = FilterPlan::default();
    for glob in patterns {
        for (kind, literal) in keys_for(glob)? {
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
            if let Some(p) = parent {
                // The kernel stops at the slash before the parent, which must be within the scan.
                if p.len() + 1 + base.len() < TAIL_SCAN {
                    return Ok(vec![
                        (KeyKind::Two, format!("{p}/{base}")),
                        (KeyKind::RelBase, base.clone()),
                    ]);
                }
            }
            if base.len() < TAIL_SCAN {
                return Ok(vec![
                    (KeyKind::Base, base.clone()),
                    (KeyKind::RelBase, base.clone()),
                ]);
            }
            if let Some(ext) = extension(base) {
                return Ok(vec![(KeyKind::Ext, ext.to_owned())]);
            }
        }
        Component::Wild(base) => {
            // The shortest name the wildcard matches; longer ones may push keys out of the scan.
            let min_len = base.len() - base.matches('*').count();
            if let Some(p) = parent {
                if min_len + 1 + p.len() < TAIL_SCAN {
                    return Ok(vec![(KeyKind::Parent, p.to_owned())]);
                }
            }
            if let Some(ext) = extension(base) {
                return Ok(vec![(KeyKind::Ext, ext.to_owned())]);
            }
            if let Some(prefix) = base.get(..BASE_PREFIX_LEN) {
                if min_len < TAIL_SCAN && !prefix.contains(['*', '?']) {
                    return Ok(vec![(KeyKind::BasePrefix, prefix.to_owned())]);
                }
            }
        }
        Component::DoubleStar | Component::HomeDirs => {}
    }
    dir_prefix(before)
        .map(|prefix| vec![(KeyKind::DirPrefix, prefix)])
        .ok_or_else(too_broad)
}

/// The literal extension of a basename pattern (from its last dot), if every path it matches
/// ends with it and the kernel sees it.
fn extension(base: &str) -> Option<&str> {
    let ext = &base[base.rfind('.')?..];
    (!ext.contains(['*', '?']) && ext.len() <= TAIL_SCAN).then_some(ext)
}

/// The longest literal leading directory of the components before the basename, within the
/// kernel's prefix scan, with its trailing slash.
fn dir_prefix(dirs: &[Component]) -> Option<String> {
    let mut prefix = String::from("/");
    let mut best = None;
    for part in dirs.iter().take(PREFIX_DEPTH as usize) {
        let Component::Literal(name) = part else {
            break;
        };
        prefix.push_str(name);
        prefix.push('/');
        if prefix.len() > PREFIX_SCAN {
            break;
        }
        best = Some(prefix.clone());
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchlist;

    fn g(s: &str) -> Glob {
        Glob::parse(s).unwrap()
    }

    fn plan(s: &str) -> FilterPlan {
        compile([&g(s)]).unwrap()
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
            [k(Two, "serviceaccount/token"), k(RelBase, "token")]
        );
        assert_eq!(
            keys("~/.aws/credentials"),
            [k(Two, ".aws/credentials"), k(RelBase, "credentials")]
        );
        assert_eq!(keys("~/.netrc"), [k(Base, ".netrc"), k(RelBase, ".netrc")]);
        assert_eq!(
            keys("/credentials"),
            [k(Base, "credentials"), k(RelBase, "credentials")]
        );
        assert_eq!(keys("/**/.env"), [k(Base, ".env"), k(RelBase, ".env")]);
        assert_eq!(
            keys("/srv/*/token"),
            [k(Base, "token"), k(RelBase, "token")]
        );
        assert_eq!(keys("/etc/ssh/ssh_host_*_key"), [k(Parent, "ssh")]);
        assert_eq!(keys("/srv/**/secrets/*.json"), [k(Parent, "secrets")]);
        assert_eq!(keys("/srv/**/*.pem"), [k(Ext, ".pem")]);
        assert_eq!(keys("~/**/*.tar.gz"), [k(Ext, ".gz")]);
        assert_eq!(keys("/**/.env.*"), [k(BasePrefix, ".en")]);
        assert_eq!(keys("/srv/**/id_?sa"), [k(BasePrefix, "id_")]);
        assert_eq!(keys("/srv/vault/**"), [k(DirPrefix, "/srv/vault/")]);
        assert_eq!(keys("/srv/vault/**/*"), [k(DirPrefix, "/srv/vault/")]);
        assert_eq!(keys("/a/b/c/d/e/**"), [k(DirPrefix, "/a/b/c/d/")]);
        assert_eq!(keys("/opt/*/x*"), [k(DirPrefix, "/opt/")]);
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
        assert!(compile([&g("/etc/x"), &g("/**")]).is_err());
    }

    #[test]
    fn long_literal_components() {
        use KeyKind::*;
        let long = "a".repeat(150);
        let mid = "m".repeat(100);
        // The two last components do not fit the scan together: basename alone.
        assert_eq!(
            keys(&format!("/x/{mid}/{}", &long[..40])),
            [k(Base, &long[..40]), k(RelBase, &long[..40])]
        );
        assert_eq!(keys(&format!("/x/{long}.pem")), [k(Ext, ".pem")]);
        assert_eq!(keys(&format!("/x/y/{long}")), [k(DirPrefix, "/x/y/")]);
        assert_eq!(keys(&format!("/x/{long}/*.json")), [k(Ext, ".json")]);
        let dir = "d".repeat(70);
        assert!(keys_for(&g(&format!("/{dir}/{long}"))).is_err());
        assert_eq!(keys(&format!("/e/{dir}/{long}")), [k(DirPrefix, "/e/")]);
        for p in [
            format!("/x/{mid}/{}", &long[..40]),
            format!("/x/{long}.pem"),
            format!("/x/y/{long}"),
            format!("/x/{long}/b.json"),
        ] {
            assert!(g(&p).matches(&p) && plan(&p).may_match(p.as_bytes()), "{p}");
        }
        assert!(plan("/x/y/z").keys.iter().all(|(k, _)| *k != DirPrefix));
        assert!(plan(&format!("/x/y/{long}")).prefix_scan);
    }

    #[test]
    fn relative_opens_of_literal_names_are_seen() {
        let p = plan("/var/run/secrets/kubernetes.io/serviceaccount/token");
        for rel in ["token", "./token", "../serviceaccount/token", "x/token"] {
            assert!(p.may_match(rel.as_bytes()), "{rel}");
        }
        assert!(plan("/**/.env.*").may_match(b".env.local"));
        assert!(plan("/srv/**/*.pem").may_match(b"certs/tls.pem"));
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
        let all = compile(&globs).unwrap();
        for glob in &globs {
            let own = compile([glob]).unwrap();
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
    fn builtin_list_compiles_without_prefix_scan() {
        let plan = compile(watchlist::builtin()).unwrap();
        // The default list needs no prefix scan: the cheapest kernel pass.
        assert!(!plan.prefix_scan, "{:?}", plan.keys);
        assert_eq!(plan.words.len(), FILTER_WORDS as usize);
        assert!(plan.bits_set() as usize <= plan.keys.len());
        assert!(plan.keys.len() >= watchlist::builtin().len());
    }

    #[test]
    fn common_unwatched_paths_do_not_hit_the_builtin_bitmap() {
        let plan = compile(watchlist::builtin()).unwrap();
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
            "main.rs",
            "Cargo.toml",
        ] {
            assert!(!plan.may_match(p.as_bytes()), "{p} hits the builtin bitmap");
        }
    }

    #[test]
    fn keys_are_deduplicated() {
        let a = g("/run/secrets/kubernetes.io/serviceaccount/token");
        let b = g("/var/run/secrets/kubernetes.io/serviceaccount/token");
        let p = compile([&a, &b]).unwrap();
        assert_eq!(p.keys.len(), 2);
        assert_eq!(p.bits_set(), 2);
        assert_eq!(compile([]).unwrap().bits_set(), 0);
    }
}
