//! The NHI registry: the YAML contract in which users declare each non-human identity, the files
//! that hold its secret and the scope it may be used in (see "Contracts" in
//! docs/ARCHITECTURE.md and "How it decides" in the README).
//!
//! Loading validates everything up front, and every error names `FILE:LINE:COLUMN` and the key
//! (`nhis[1].credentials[0]`): checks run inside the `Deserialize` impls, while the YAML parser
//! (serde_norway) still knows the position of the node being read. The cross-NHI checks (unique
//! ids, a credential claimed once) need the NHIs read so far; serde gives a `Deserialize` no
//! context, so they keep it in a thread-local that only [`parse`] sets up and clears.
//!
//! The rest of the daemon uses the loaded [`Registry`]: [`Registry::owner_of`] for attribution,
//! [`Registry::is_watched`] and [`Registry::all_patterns`] for the prefilter and the
//! `unregistered` verdict.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::domain::filter;
use crate::domain::pattern::{Cidr, Glob, HostGlob, PathGlob};
use crate::domain::watchlist;
use crate::domain::wire::Readout;

/// Why a registry could not be loaded. Displays as `FILE:LINE:COLUMN: message`.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read.
    #[error("{file}: cannot read registry: {}", io_reason(.source))]
    Read {
        /// The registry's path.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not a valid registry (line and column start at 1).
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The registry's path, or the origin given to [`parse`].
        file: String,
        /// The line of the offending node.
        line: usize,
        /// The column of the offending node.
        column: usize,
        /// What is wrong, prefixed with the key when it is known.
        message: String,
    },
    /// The text is not a valid registry, at no particular position.
    #[error("{file}: {message}")]
    Unplaced {
        /// The registry's path, or the origin given to [`parse`].
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// An I/O error without Rust's ` (os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// The whole registry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// The registered NHIs.
    #[serde(default, deserialize_with = "nhi_list")]
    pub nhis: Vec<Nhi>,
    /// Extra patterns to watch for unregistered NHIs, added to [`watchlist::builtin`].
    #[serde(default, deserialize_with = "glob_list::<false, _>")]
    pub watch: Vec<Glob>,
    /// Credential patterns indexed for [`Registry::owner_of`], built on first use.
    #[serde(skip)]
    index: std::sync::OnceLock<OwnerIndex>,
}

/// Literal credential paths by exact path; the other patterns in registry order; NHIs by id.
#[derive(Clone, Debug, Default, PartialEq)]
struct OwnerIndex {
    /// Id -> the NHI's place in `nhis` (ids are unique).
    by_id: HashMap<String, usize, foldhash::fast::RandomState>,
    /// Path -> the first NHI that lists it literally.
    literal: HashMap<String, usize, foldhash::fast::RandomState>,
    /// (NHI index, pattern) for patterns with wildcards, in registry order, by the literal
    /// directory they start with (`/etc/app/` for `/etc/app/*.pem` and `/etc/app/**`, `/` for
    /// `/**/.env`): a path is tried only against the patterns of the directories it is under.
    globs: HashMap<String, Vec<(usize, Glob)>, foldhash::fast::RandomState>,
    /// Those under home directories (`~/...`), in registry order: tried on every path.
    home_globs: Vec<(usize, Glob)>,
    /// Bit `n % 128` set for each length `n` of a directory in `globs`: a directory of
    /// another length is not looked up.
    dir_lens: u128,
    /// NHIs whose `holders.exe` lists this path literally, in registry order.
    holders_by_exe: HashMap<String, Vec<usize>, foldhash::fast::RandomState>,
    /// NHIs with `holders:` whose `exe` list is empty or has a wildcard: candidates for every
    /// process, in registry order.
    holders_any_exe: Vec<usize>,
}

/// One non-human identity and its declared scope.
#[derive(Clone, Debug, PartialEq)]
pub struct Nhi {
    /// Unique id: letters, digits, `.`, `_`, `-`; 1 to 64 characters.
    pub id: String,
    /// Free-text owner (a team, a person).
    pub owner: Option<String>,
    /// Files holding the secret; each pattern is claimed by this NHI alone.
    pub credentials: Vec<Glob>,
    /// Who may open the credentials; `None`: anyone.
    pub readers: Option<Principals>,
    /// Processes that carry the NHI without reading a file (a secret from the environment).
    pub holders: Option<Principals>,
    /// Where holders may connect; `None`: connections are not checked.
    pub endpoints: Option<Vec<Endpoint>>,
    /// Any use after this instant is drift.
    pub expires: Option<SystemTime>,
    /// A credential file older than this when read is drift.
    pub max_age: Option<Duration>,
    /// Whether use from a human's terminal session is in scope.
    pub interactive: Interactive,
}

/// Whether an NHI may be used from a human's terminal session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interactive {
    /// Interactive use is drift (the default).
    #[default]
    Deny,
    /// Interactive use is in scope.
    Allow,
}

/// A set of processes: those whose executable matches one of `exe` (when given) and whose uid is
/// one of `uid` (when given).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Principals {
    /// Executable path globs.
    pub exe: Vec<Glob>,
    /// User ids.
    pub uid: Vec<u32>,
    /// cgroup v2 path globs (`/system.slice/billing.service`, `/kubepods.slice/**`).
    pub cgroup: Vec<Glob>,
    /// Container id patterns (`*` for any container, `3f4e1a*` for one).
    pub container: Vec<String>,
}

/// Where a process runs, beyond its executable and user.
#[derive(Clone, Copy, Debug, Default)]
pub struct Placement<'a> {
    /// Its cgroup v2 path, when known.
    pub cgroup: Option<&'a str>,
    /// Its container id, when it runs in a container.
    pub container: Option<&'a str>,
}

impl Principals {
    /// Whether a process running `exe` as `uid`, outside any known cgroup or container, is in
    /// the set.
    pub fn allows(&self, exe: &str, uid: u32) -> bool {
        self.admits(exe, None, uid, Placement::default())
    }

    /// Whether a process running `exe` (or the script `exe` interprets) as `uid` in `at` is in
    /// the set: every list that is given must match.
    pub fn admits(&self, exe: &str, script: Option<&str>, uid: u32, at: Placement<'_>) -> bool {
        (self.exe.is_empty()
            || self
                .exe
                .iter()
                .any(|g| g.matches(exe) || script.is_some_and(|s| g.matches(s))))
            && (self.uid.is_empty() || self.uid.contains(&uid))
            && (self.cgroup.is_empty()
                || at
                    .cgroup
                    .is_some_and(|c| self.cgroup.iter().any(|g| g.matches(c))))
            && (self.container.is_empty()
                || at
                    .container
                    .is_some_and(|c| self.container.iter().any(|p| wildcard(p, c))))
    }
}

/// `*`-only wildcard match (any run of characters), case-insensitive.
fn wildcard(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.to_ascii_lowercase(), s.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A place a holder may connect to: a host name pattern or an address block, on some ports.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// DNS names (exactly one of `host` and `cidr` is set).
    pub host: Option<HostGlob>,
    /// Addresses (exactly one of `host` and `cidr` is set).
    pub cidr: Option<Cidr>,
    /// The one allowed port (not given together with `ports`).
    pub port: Option<u16>,
    /// The allowed ports; with `port` also empty, any port is allowed.
    pub ports: Vec<u16>,
    /// Server names a request may name on the wire (TLS SNI, HTTP `Host`); empty: those `host`
    /// matches (any name for a `cidr` entry).
    pub sni: Vec<HostGlob>,
    /// Plaintext HTTP: the methods a request may use; empty: any.
    pub methods: Vec<String>,
    /// Plaintext HTTP: the paths a request may ask for (globs); empty: any.
    pub paths: Vec<PathGlob>,
}

impl Endpoint {
    /// Whether `port` is allowed.
    pub fn allows_port(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => self.ports.is_empty() || self.ports.contains(&port),
        }
    }

    /// Whether a connection to `addr:port`, known by the DNS names `names`, is allowed.
    pub fn allows<S: AsRef<str>>(&self, addr: IpAddr, port: u16, names: &[S]) -> bool {
        let place = match (&self.host, &self.cidr) {
            (Some(h), _) => names.iter().any(|n| h.matches(n.as_ref())),
            (None, Some(c)) => c.contains(addr),
            (None, None) => false,
        };
        place && self.allows_port(port)
    }

    /// Whether a request's API is among this endpoint's: its server name (`None`: none was
    /// sent, or an address) against `sni` (or `host`), and its method and path against
    /// `methods` and `paths`. What an endpoint declares, a request must show: a TLS or HTTP
    /// request with no server name is out of an endpoint that names its servers (`sni` or
    /// `host`; bytes of another protocol need none unless `sni` is declared), and one with no
    /// method or path out of one that declares `methods` or `paths`, except inside TLS, where
    /// they cannot be seen. Bytes that could not be read (`Readout::Unreadable`, which a sender
    /// can cause on purpose) show nothing, so are out of any endpoint that declares anything
    /// but an address block and ports.
    pub fn allows_api(
        &self,
        name: Option<&str>,
        method: Option<&str>,
        path: Option<&str>,
        readout: Readout,
    ) -> bool {
        let name_ok = match name {
            Some(n) if !self.sni.is_empty() => self.sni.iter().any(|g| g.matches(n)),
            Some(n) => self.host.as_ref().is_none_or(|h| h.matches(n)),
            // At a named endpoint a TLS or HTTP request must name its server: without one a
            // front door serves its default (or, inside TLS, whatever `Host` says).
            None => self.sni.is_empty() && (readout == Readout::Other || self.host.is_none()),
        };
        let inside_tls = readout == Readout::Tls;
        let method_ok = self.methods.is_empty()
            || inside_tls
            || method.is_some_and(|m| self.methods.iter().any(|x| x == m));
        let path_ok = self.paths.is_empty()
            || inside_tls
            || path.is_some_and(|p| self.paths.iter().any(|g| g.matches(p)));
        name_ok && method_ok && path_ok
    }
}

impl Registry {
    /// The first NHI one of whose credential patterns matches `path`.
    ///
    /// One hash lookup for literal paths, then only the wildcard patterns of earlier NHIs: the
    /// daemon asks this for every watched open.
    pub fn owner_of(&self, path: &str) -> Option<&Nhi> {
        self.owner_at(path).map(|(_, n)| n)
    }

    /// [`Registry::owner_of`], with where the NHI is in `nhis`.
    pub fn owner_at(&self, path: &str) -> Option<(usize, &Nhi)> {
        let index = self.index();
        // The first NHI in registry order that claims the path: its literal owner, unless an
        // earlier one has a pattern that matches.
        let mut first = index.literal.get(path).copied().unwrap_or(usize::MAX);
        let mut earlier = |globs: &[(usize, Glob)]| {
            if let Some((i, _)) = globs
                .iter()
                .take_while(|(i, _)| *i < first)
                .find(|(_, g)| g.matches(path))
            {
                first = *i;
            }
        };
        earlier(&index.home_globs);
        if index.dir_lens != 0 {
            let bytes = path.as_bytes();
            let mut end = bytes.len();
            while let Some(slash) = bytes[..end].iter().rposition(|&b| b == b'/') {
                if index.dir_lens & (1 << ((slash + 1) % 128)) != 0 {
                    // `slash` is the index of an ASCII byte: a char boundary.
                    if let Some(globs) = index.globs.get(&path[..=slash]) {
                        earlier(globs);
                    }
                }
                end = slash;
            }
        }
        (first != usize::MAX)
            .then(|| Some((first, self.nhis.get(first)?)))
            .flatten()
    }

    /// The lookups' index, built on first use.
    fn index(&self) -> &OwnerIndex {
        self.index.get_or_init(|| {
            let mut ix = OwnerIndex::default();
            for (i, nhi) in self.nhis.iter().enumerate() {
                ix.by_id.entry(nhi.id.clone()).or_insert(i);
                for g in &nhi.credentials {
                    if g.is_literal() {
                        ix.literal.entry(g.as_str().to_owned()).or_insert(i);
                    } else {
                        match literal_dir(g) {
                            Some(dir) => {
                                ix.dir_lens |= 1 << (dir.len() % 128);
                                ix.globs.entry(dir).or_default().push((i, g.clone()));
                            }
                            None => ix.home_globs.push((i, g.clone())),
                        }
                    }
                }
                if let Some(h) = &nhi.holders {
                    if h.exe.iter().all(Glob::is_literal) && !h.exe.is_empty() {
                        for g in &h.exe {
                            let nhis = ix.holders_by_exe.entry(g.as_str().to_owned()).or_default();
                            if nhis.last() != Some(&i) {
                                nhis.push(i);
                            }
                        }
                    } else {
                        ix.holders_any_exe.push(i);
                    }
                }
            }
            ix
        })
    }

    /// Whether opening `path` is of interest: it matches a credential, a `watch` pattern or the
    /// built-in watch list.
    pub fn is_watched(&self, path: &str) -> bool {
        self.owner_of(path).is_some() || self.is_watched_unowned(path)
    }

    /// The NHIs whose `holders:` may admit a process running `exe` (or the script `script`), in
    /// registry order, into `out`: those that list `exe` or `script` literally, and those whose
    /// `exe` list is empty or has a wildcard. The others' `exe` lists cannot match, so
    /// [`Principals::admits`] need not be asked of them.
    pub fn holder_candidates(&self, exe: &str, script: Option<&str>, out: &mut Vec<usize>) {
        let index = self.index();
        out.clear();
        out.extend_from_slice(&index.holders_any_exe);
        for name in std::iter::once(exe).chain(script) {
            if let Some(nhis) = index.holders_by_exe.get(name) {
                out.extend_from_slice(nhis);
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Whether any NHI's `holders:` places its holders by cgroup or container.
    pub fn holders_are_placed(&self) -> bool {
        self.nhis.iter().any(|n| {
            n.holders
                .as_ref()
                .is_some_and(|h| !h.cgroup.is_empty() || !h.container.is_empty())
        })
    }

    /// Whether a `watch` or built-in pattern matches `path`, which [`Registry::owner_of`]
    /// already found no NHI for.
    pub fn is_watched_unowned(&self, path: &str) -> bool {
        self.watch.iter().any(|g| g.matches(path)) || watchlist::is_watched(path)
    }

    /// Every pattern the kernel prefilter must let through: credentials, `watch`, built-in.
    pub fn all_patterns(&self) -> Vec<&Glob> {
        self.nhis
            .iter()
            .flat_map(|n| &n.credentials)
            .chain(&self.watch)
            .chain(watchlist::builtin())
            .collect()
    }

    /// The kernel's name keys for [`Registry::all_patterns`], hashed with `key`. Loading
    /// already checked every pattern of the registry, so this fails only on a bad built-in one.
    pub fn filter_plan(&self, key: u64) -> Result<filter::FilterPlan, filter::FilterError> {
        filter::compile(key, self.all_patterns())
    }

    /// The NHI with this id.
    pub fn nhi(&self, id: &str) -> Option<&Nhi> {
        self.position(id).and_then(|i| self.nhis.get(i))
    }

    /// Where the NHI with this id is in `nhis` (one hash lookup).
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index().by_id.get(id).copied()
    }
}

/// What a registry says of an opened path: the first NHI that claims it, and whether it is
/// watched at all (claimed, or matched by a `watch:` or built-in pattern).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathSaid {
    /// [`Registry::owner_at`]'s place of the NHI in `nhis`.
    pub owner: Option<usize>,
    /// [`Registry::is_watched`].
    pub watched: bool,
}

/// Paths remembered at most by a [`PathMemo`] before it starts afresh.
const PATH_MEMO_CAP: usize = 4096;
/// Paths longer than this are looked up every time, not remembered: the memo holds at most
/// [`PATH_MEMO_CAP`] × this many bytes of paths, whatever opens a process makes.
const PATH_MEMO_MAX_LEN: usize = 256;

/// [`PathSaid`] of the paths opened lately, for one registry. Both lookups are pure in the
/// path, and services open the same credentials again and again; a hit is one hash lookup
/// where the patterns cost hundreds of instructions. The memo changes no answer, only its
/// cost: a process that opens many distinct watched paths makes it start afresh, and the
/// paths are looked up as they would be without it. Forget it when the registry changes.
#[derive(Debug, Default)]
pub struct PathMemo {
    said: HashMap<Box<str>, PathSaid, foldhash::fast::RandomState>,
}

impl PathMemo {
    /// What `reg` says of `path`, remembered.
    pub fn said(&mut self, reg: &Registry, path: &str) -> PathSaid {
        if let Some(said) = self.said.get(path) {
            return *said;
        }
        let owner = reg.owner_at(path).map(|(i, _)| i);
        let said = PathSaid {
            owner,
            watched: owner.is_some() || reg.is_watched_unowned(path),
        };
        // The prefilter's false positives are kept too: they are files named like a
        // credential (`.git/config` for `~/.kube/config`), opened again and again as well.
        if path.len() <= PATH_MEMO_MAX_LEN {
            if self.said.len() >= PATH_MEMO_CAP {
                self.said.clear();
            }
            self.said.insert(path.into(), said);
        }
        said
    }

    /// Forget every path (the registry changed).
    pub fn clear(&mut self) {
        self.said.clear();
    }

    /// Paths remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.said.len()
    }

    /// Whether no path is remembered.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.said.is_empty()
    }
}

/// The literal directory every path `g` matches is under (`/etc/app/` for `/etc/app/*.pem`,
/// `/` for `/**/.env`); `None` for a pattern under home directories (`~/`).
fn literal_dir(g: &Glob) -> Option<String> {
    use crate::domain::pattern::Component;
    let parts = g.components();
    if matches!(parts.first(), Some(Component::HomeDirs)) {
        return None;
    }
    let mut dir = String::from("/");
    for c in &parts[..parts.len().saturating_sub(1)] {
        match c {
            Component::Literal(name) => {
                dir.push_str(name);
                dir.push('/');
            }
            _ => break,
        }
    }
    Some(dir)
}

/// Reads and validates the registry at `path`.
pub fn load(path: &Path) -> Result<Registry, RegistryError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Validates a registry's text; `origin` names it in errors (a path, `-`, `<builtin>`).
pub fn parse(text: &str, origin: &str) -> Result<Registry, RegistryError> {
    let _scope = CheckScope::enter();
    serde_norway::from_str::<Registry>(text).map_err(|e| {
        let full = e.to_string();
        match e.location() {
            Some(at) => RegistryError::Invalid {
                file: origin.to_owned(),
                line: at.line(),
                column: at.column(),
                message: full.replacen(
                    &format!(" at line {} column {}", at.line(), at.column()),
                    "",
                    1,
                ),
            },
            None => RegistryError::Unplaced {
                file: origin.to_owned(),
                message: full,
            },
        }
    })
}

/// What [`parse`] has read so far, for the checks that span NHIs.
#[derive(Default)]
struct Seen {
    /// Index in `nhis` of the NHI being read.
    current: usize,
    /// Each id with the index of its NHI.
    ids: HashMap<String, usize>,
    /// Each credential pattern with the index of the NHI claiming it.
    claims: HashMap<Glob, usize>,
}

thread_local! {
    static SEEN: RefCell<Option<Seen>> = const { RefCell::new(None) };
}

/// Runs `f` on the current parse's state; does nothing outside [`parse`].
fn with_seen<R>(f: impl FnOnce(&mut Seen) -> R) -> Option<R> {
    SEEN.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Sets up the cross-NHI checks for one [`parse`]; dropping it (also on unwinding) clears them.
struct CheckScope;

impl CheckScope {
    fn enter() -> CheckScope {
        SEEN.with(|s| *s.borrow_mut() = Some(Seen::default()));
        CheckScope
    }
}

impl Drop for CheckScope {
    fn drop(&mut self) {
        SEEN.with(|s| *s.borrow_mut() = None);
    }
}

/// A mapping read by a derived, field-checking struct, then validated as a whole. The validation
/// runs inside `visit_map`, so its error gets the mapping's position.
trait Validate: Sized {
    type Raw: for<'de> Deserialize<'de>;
    const EXPECTING: &'static str;
    fn validate(raw: Self::Raw) -> Result<Self, String>;
}

struct ValidateVisitor<T>(PhantomData<T>);

impl<'de, T: Validate> Visitor<'de> for ValidateVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let raw = T::Raw::deserialize(MapAccessDeserializer::new(map))?;
        T::validate(raw).map_err(de::Error::custom)
    }
}

macro_rules! validated {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_map(ValidateVisitor::<$ty>(PhantomData))
            }
        }
    )*};
}

validated!(Nhi, Principals, Endpoint);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNhi {
    #[serde(deserialize_with = "nhi_id")]
    id: String,
    owner: Option<String>,
    #[serde(default, deserialize_with = "glob_list::<true, _>")]
    credentials: Vec<Glob>,
    readers: Option<Principals>,
    holders: Option<Principals>,
    endpoints: Option<Vec<Endpoint>>,
    #[serde(default, deserialize_with = "instant")]
    expires: Option<SystemTime>,
    #[serde(default, deserialize_with = "duration")]
    max_age: Option<Duration>,
    #[serde(default)]
    interactive: Interactive,
}

impl Validate for Nhi {
    type Raw = RawNhi;
    const EXPECTING: &'static str = "an NHI: a mapping with `id` and `credentials` or `holders`";
    fn validate(r: RawNhi) -> Result<Nhi, String> {
        if r.credentials.is_empty() && r.holders.is_none() {
            return Err(format!(
                "NHI `{}` has neither `credentials` nor `holders`: nothing could ever use it",
                r.id
            ));
        }
        Ok(Nhi {
            id: r.id,
            owner: r.owner,
            credentials: r.credentials,
            readers: r.readers,
            holders: r.holders,
            endpoints: r.endpoints,
            expires: r.expires,
            max_age: r.max_age,
            interactive: r.interactive,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipals {
    #[serde(default)]
    exe: Vec<Glob>,
    #[serde(default)]
    uid: Vec<u32>,
    #[serde(default)]
    cgroup: Vec<Glob>,
    #[serde(default)]
    container: Vec<String>,
}

impl Validate for Principals {
    type Raw = RawPrincipals;
    const EXPECTING: &'static str = "a mapping with `exe`, `uid`, `cgroup` and/or `container`";
    fn validate(r: RawPrincipals) -> Result<Principals, String> {
        if r.exe.is_empty() && r.uid.is_empty() && r.cgroup.is_empty() && r.container.is_empty() {
            return Err(
                "give `exe`, `uid`, `cgroup` or `container` (or leave the key out to allow any process)"
                    .to_owned(),
            );
        }
        if let Some(bad) = r
            .container
            .iter()
            .find(|c| c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '*'))
        {
            return Err(format!(
                "container pattern `{bad}`: use a container id, a prefix with `*`, or `*` for any container"
            ));
        }
        Ok(Principals {
            exe: r.exe,
            uid: r.uid,
            cgroup: r.cgroup,
            container: r.container,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    host: Option<HostGlob>,
    cidr: Option<Cidr>,
    port: Option<u16>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    sni: Vec<HostGlob>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    paths: Vec<PathGlob>,
}

impl Validate for Endpoint {
    type Raw = RawEndpoint;
    const EXPECTING: &'static str =
        "an endpoint: a mapping with `host` or `cidr`, `port` or `ports`, and optionally `sni`, `methods`, `paths`";
    fn validate(r: RawEndpoint) -> Result<Endpoint, String> {
        if r.host.is_some() == r.cidr.is_some() {
            return Err("an endpoint needs exactly one of `host` and `cidr`".to_owned());
        }
        if r.port.is_some() && !r.ports.is_empty() {
            return Err("give `port` or `ports`, not both".to_owned());
        }
        if r.port == Some(0) || r.ports.contains(&0) {
            return Err("port 0 is not a port a connection can use".to_owned());
        }
        if let Some(m) = r
            .methods
            .iter()
            .find(|m| !crate::domain::wire::is_method(m.as_bytes()))
        {
            return Err(format!(
                "method `{m}` is not an HTTP method: write it in capitals, as `GET` or `POST`"
            ));
        }
        Ok(Endpoint {
            host: r.host,
            cidr: r.cidr,
            port: r.port,
            ports: r.ports,
            sni: r.sni,
            methods: r.methods,
            paths: r.paths,
        })
    }
}

/// A visitor of one string scalar, checked by `check`; an error gets the scalar's position.
struct StrVisitor<T, F: FnOnce(&str) -> Result<T, String>>(F, &'static str);

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<T, F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

/// The NHIs, each read with [`Seen::current`] set to its index.
fn nhi_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Nhi>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<Nhi>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of NHIs")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Nhi>, A::Error> {
            let mut nhis = Vec::new();
            loop {
                with_seen(|s| s.current = nhis.len());
                match seq.next_element::<Nhi>()? {
                    Some(nhi) => nhis.push(nhi),
                    None => return Ok(nhis),
                }
            }
        }
    }
    d.deserialize_seq(V)
}

fn nhi_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(StrVisitor(check_id, "an NHI id"))
}

fn check_id(id: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(format!(
            "`{id}` is not an NHI id: use 1 to 64 letters, digits, `.`, `_` or `-`"
        ));
    }
    let dup = with_seen(|s| match s.ids.get(id) {
        Some(&first) => Some(first),
        None => {
            s.ids.insert(id.to_owned(), s.current);
            None
        }
    });
    match dup.flatten() {
        Some(first) => Err(format!(
            "duplicate NHI id `{id}`: nhis[{first}] has it already"
        )),
        None => Ok(id.to_owned()),
    }
}

/// A list of globs that the kernel prefilter must see (credentials, `watch`); `CLAIM`: each is
/// a credential that only one NHI may claim.
fn glob_list<'de, const CLAIM: bool, D: Deserializer<'de>>(d: D) -> Result<Vec<Glob>, D::Error> {
    struct Item<const CLAIM: bool>(Glob);
    impl<'de, const CLAIM: bool> Deserialize<'de> for Item<CLAIM> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(StrVisitor(
                |v: &str| check_watched(v, CLAIM).map(Item),
                "a path glob",
            ))
        }
    }
    Vec::<Item<CLAIM>>::deserialize(d).map(|v| v.into_iter().map(|i| i.0).collect())
}

fn check_watched(text: &str, claim: bool) -> Result<Glob, String> {
    let glob = Glob::parse(text).map_err(|e| e.to_string())?;
    filter::keys_for(&glob).map_err(|e| e.to_string())?;
    if !claim {
        return Ok(glob);
    }
    let clash = with_seen(|s| match s.claims.get(&glob) {
        Some(&owner) => Some((owner, s.current)),
        None => {
            s.claims.insert(glob.clone(), s.current);
            None
        }
    });
    match clash.flatten() {
        None => Ok(glob),
        Some((owner, current)) if owner == current => {
            Err(format!("credential `{glob}` is listed twice"))
        }
        Some((owner, _)) => {
            let name = with_seen(|s| {
                s.ids
                    .iter()
                    .find(|(_, &i)| i == owner)
                    .map(|(id, _)| id.clone())
            })
            .flatten()
            .map_or_else(String::new, |id| format!(" `{id}`"));
            Err(format!(
                "credential `{glob}` is already claimed by NHI{name} (nhis[{owner}])"
            ))
        }
    }
}

fn instant<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    d.deserialize_str(StrVisitor(
        |v: &str| parse_instant(v).map(Some),
        "an RFC 3339 instant",
    ))
}

/// RFC 3339 (`2026-12-31T00:00:00Z`, `2026-12-31T01:00:00+01:00`) or a date (midnight UTC).
fn parse_instant(v: &str) -> Result<SystemTime, String> {
    let bad = || format!("`{v}` is not an instant: write RFC 3339, such as `2026-12-31T00:00:00Z`");
    let v = v.trim();
    if v.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{v}T00:00:00Z")).map_err(|_| bad());
    }
    // humantime knows only `Z`: apply a numeric offset (`+HH:MM`, `-HH:MM`) ourselves.
    let two_digits = |s: &str, below: u64| {
        let n = s.parse::<u64>().ok().filter(|&n| n < below);
        n.filter(|_| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let split = v.len().checked_sub(6).filter(|&i| v.is_char_boundary(i));
    let (local, offset) = match split.map(|i| v.split_at(i)) {
        Some((local, o)) if o.starts_with(['+', '-']) => {
            let (h, m) = o[1..].split_once(':').ok_or_else(bad)?;
            let h = two_digits(h, 24).ok_or_else(bad)?;
            let m = two_digits(m, 60).ok_or_else(bad)?;
            let ahead = o.starts_with('+');
            (local, Some((ahead, Duration::from_secs((h * 60 + m) * 60))))
        }
        _ => (v, None),
    };
    let t = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
    let t = match offset {
        Some((true, d)) => t.checked_sub(d).ok_or_else(bad)?,
        Some((false, d)) => t.checked_add(d).ok_or_else(bad)?,
        None => t,
    };
    // The offset can carry a valid local time out of what the daemon writes: RFC 3339 with a
    // four-digit year, from 1970 (humantime's formatting panics outside it, and the daemon
    // formats `expires` in reasons and the live feed).
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs());
    match secs {
        Ok(s) if s < LAST_INSTANT_SECS => Ok(t),
        _ => Err(format!(
            "`{v}` is out of range: instants must lie between 1970-01-01T00:00:00Z and \
             9999-12-31T23:59:59Z"
        )),
    }
}

/// Seconds from the epoch to 10000-01-01T00:00:00Z, the first instant past RFC 3339's years.
const LAST_INSTANT_SECS: u64 = 253_402_300_800;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let check = |v: &str| match humantime::parse_duration(v) {
        Ok(d) if d.is_zero() => Err(format!("`{v}`: max_age must be longer than zero")),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "`{v}` is not a duration ({e}): write e.g. `24h`, `90m`, `7days`"
        )),
    };
    d.deserialize_str(StrVisitor(check, "a duration such as `24h`"))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod placement_tests {
    use super::*;

    #[test]
    fn owner_is_the_first_nhi_in_order_whether_literal_or_glob() {
        let r = parse(
            "nhis:\n  - id: a\n    credentials: ['/x/*']\n  - id: b\n    credentials: [/x/t, /y/t]\n  - id: c\n    credentials: ['/y/*']\n",
            "t.yaml",
        )
        .expect("valid");
        let owner = |p: &str| r.owner_of(p).map(|n| n.id.as_str());
        assert_eq!(owner("/x/t"), Some("a"));
        assert_eq!(owner("/y/t"), Some("b"));
        assert_eq!(owner("/y/u"), Some("c"));
        assert_eq!(owner("/z/t"), None);
    }

    #[test]
    fn container_and_cgroup_principals() {
        let r = parse(
            "nhis:\n  - id: a\n    credentials: [/x/token]\n    readers:\n      container: ['*']\n      cgroup: [/kubepods.slice/**]\n",
            "t.yaml",
        )
        .expect("valid");
        let p = r.nhis[0].readers.as_ref().expect("readers");
        let inside = Placement {
            cgroup: Some("/kubepods.slice/pod1/cri-containerd-ab.scope"),
            container: Some("ab"),
        };
        assert!(p.admits("/bin/cat", None, 0, inside));
        assert!(!p.admits(
            "/bin/cat",
            None,
            0,
            Placement {
                cgroup: inside.cgroup,
                container: None
            }
        ));
        assert!(!p.admits("/bin/cat", None, 0, Placement::default()));
        assert!(wildcard("3f4e*", "3F4E1A"));
        assert!(!wildcard("3f4e*", "4f4e"));
        assert!(wildcard("*", "x"));
        let e = parse(
            "nhis:\n  - id: a\n    credentials: [/x/t]\n    holders:\n      container: ['a b']\n",
            "t.yaml",
        )
        .expect_err("bad container pattern");
        assert!(e.to_string().contains("container pattern"), "{e}");
    }
}
