//! The patterns a registry is written in: path globs for credential files and executables
//! ([`Glob`]), DNS name globs for endpoints ([`HostGlob`]) and address blocks ([`Cidr`]).
//!
//! Patterns are parsed once, when the registry is loaded, and matched on every event, so matching
//! works on bytes with no regex engine and no allocation. Paths are matched as the daemon sees
//! them after resolution: absolute and normalized (no `.`, `..` or `//`). A [`Glob`] also exposes
//! its [`Component`]s, from which [`crate::domain::filter`] derives the kernel's prefilter keys.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a pattern was rejected. The messages quote the pattern and say how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A path glob that is neither absolute nor in a home directory.
    #[error("`{0}` is not absolute: start it with `/`, or `~/` for a file in any user's home")]
    NotAbsolute(String),
    /// A path glob with `//`, a trailing `/`, or no component at all.
    #[error("`{0}` has an empty path component (`//`, a trailing `/`, or nothing after the root)")]
    EmptyComponent(String),
    /// A path glob with a `.` or `..` component, which never appears in a normalized path.
    #[error("`{0}` has a `.` or `..` component: write the normalized path")]
    DotComponent(String),
    /// `**` glued to other characters.
    #[error("`{0}`: `**` must be a whole path component, as in `/srv/**/secrets`")]
    DoubleStarInComponent(String),
    /// A `~` that is not the `~/` prefix (`~user/` is not supported).
    #[error("`{0}`: `~` is only understood as a leading `~/` (the home of any user)")]
    Tilde(String),
    /// A bracket character class, which is not supported.
    #[error(
        "`{0}`: character classes (`[...]`) are not supported: use `?` or `*`, or list each name"
    )]
    CharClass(String),
    /// A brace alternative, which is not supported.
    #[error(
        "`{0}`: alternatives (`{{a,b}}`) are not supported: write one pattern per alternative"
    )]
    Braces(String),
    /// A NUL byte, which no path or name contains.
    #[error("pattern contains a NUL byte")]
    Nul,
    /// A host glob with a character that no DNS name has.
    #[error("`{host}` is not a host name pattern: `{ch}` is not allowed (letters, digits, `-`, `_`, `.` and `*`)")]
    HostChar {
        /// The rejected pattern.
        host: String,
        /// The offending character.
        ch: char,
    },
    /// A host glob that is empty or has an empty label.
    #[error("`{0}` is not a host name pattern: it has an empty label")]
    HostLabel(String),
    /// A URL path pattern that does not start with `/` or has a byte no request path has.
    #[error("`{0}` is not a URL path pattern: start it with `/` and use visible ASCII only")]
    UrlPath(String),
    /// A CIDR block whose address or prefix length does not parse.
    #[error("`{0}` is not an address block: write `10.20.0.0/16`, `2001:db8::/32` or one address")]
    Cidr(String),
    /// A CIDR block with a prefix longer than its address.
    #[error("`{text}`: prefix length {prefix} is longer than the address ({max} bits)")]
    CidrPrefix {
        /// The rejected block.
        text: String,
        /// The prefix length given.
        prefix: u32,
        /// The address width.
        max: u32,
    },
    /// A CIDR block with bits set after the prefix, a likely typo.
    #[error("`{text}` has host bits set: did you mean `{suggestion}`?")]
    CidrHostBits {
        /// The rejected block.
        text: String,
        /// The block with the host bits cleared.
        suggestion: String,
    },
}

/// One `/`-separated component of a [`Glob`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// A name matched exactly.
    Literal(String),
    /// A name with `*` (any bytes) or `?` (one byte).
    Wild(String),
    /// `**`: any number of whole components, zero included (one or more when last).
    DoubleStar,
    /// The leading `~`: `root` or `home/<user>`.
    HomeDirs,
}

/// A path glob: `*` (any bytes but `/`), `?` (one byte but `/`), `**` (whole components) and a
/// leading `~/` (the home of any user: `/root/...` and `/home/*/...`).
#[derive(Clone, Debug)]
pub struct Glob {
    text: String,
    parts: Vec<Component>,
    /// Every component is a [`Component::Literal`] and there is no `~/`: the glob matches
    /// exactly one path, its text (parsing refused empty and dot components, so the text is
    /// the only spelling of those components).
    literal: bool,
}

impl Glob {
    /// Parses a glob; it must be absolute or start with `~/`.
    pub fn parse(text: &str) -> Result<Glob, PatternError> {
        let err = |f: fn(String) -> PatternError| Err(f(text.to_owned()));
        if text.contains('\0') {
            return Err(PatternError::Nul);
        }
        if text.contains('[') || text.contains(']') {
            return err(PatternError::CharClass);
        }
        if text.contains('{') || text.contains('}') {
            return err(PatternError::Braces);
        }
        let mut parts = Vec::new();
        let rest = if let Some(rest) = text.strip_prefix("~/") {
            parts.push(Component::HomeDirs);
            rest
        } else if let Some(rest) = text.strip_prefix('/') {
            rest
        } else if text.starts_with('~') {
            return err(PatternError::Tilde);
        } else {
            return err(PatternError::NotAbsolute);
        };
        for name in rest.split('/') {
            let part = match name {
                "" => return err(PatternError::EmptyComponent),
                "." | ".." => return err(PatternError::DotComponent),
                "**" => Component::DoubleStar,
                _ if name.contains("**") => return err(PatternError::DoubleStarInComponent),
                _ if name.contains(['*', '?']) => Component::Wild(name.to_owned()),
                _ => Component::Literal(name.to_owned()),
            };
            // `**/**` means the same as `**`: keep one, so matcher and filter see one form.
            if part == Component::DoubleStar && parts.last() == Some(&Component::DoubleStar) {
                continue;
            }
            parts.push(part);
        }
        let literal = parts.iter().all(|p| matches!(p, Component::Literal(_)));
        Ok(Glob {
            text: text.to_owned(),
            parts,
            literal,
        })
    }

    /// Whether the absolute, normalized `path` matches; at most (components of the path) ×
    /// (components of the glob) comparisons, so a hostile deep path cannot stall the daemon.
    pub fn matches(&self, path: &str) -> bool {
        if self.literal {
            return path == self.text;
        }
        let Some(rest) = path.strip_prefix('/').filter(|r| !r.is_empty()) else {
            return false;
        };
        match self.parts.split_first() {
            Some((Component::HomeDirs, parts)) => {
                let in_home = match rest.strip_prefix("root/") {
                    Some(r) => Some(r),
                    None => rest
                        .strip_prefix("home/")
                        .and_then(|r| r.split_once('/'))
                        .filter(|(user, _)| !user.is_empty())
                        .map(|(_, r)| r),
                };
                in_home.is_some_and(|r| !r.is_empty() && match_components(parts, r))
            }
            _ => match_components(&self.parts, rest),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The components, first to last; a leading `~/` is one [`Component::HomeDirs`].
    pub fn components(&self) -> &[Component] {
        &self.parts
    }

    /// Whether a path whose last component is `name` may match: false when the glob's last
    /// component (a name or a wildcard) cannot match `name`, which [`Glob::matches`] would
    /// find out only after walking the whole path.
    pub fn may_match_name(&self, name: &str) -> bool {
        match self.parts.last() {
            Some(Component::Literal(last)) => last == name,
            Some(Component::Wild(pat)) => {
                !name.is_empty() && wild_match(pat.as_bytes(), name.as_bytes(), true, false)
            }
            _ => true,
        }
    }

    /// Whether the glob matches exactly one path (no wildcard, no `~`).
    pub fn is_literal(&self) -> bool {
        self.literal
    }
}

/// One step of a path match: a component, or one half of a trailing `**` (which is matched as
/// "one component, then any number").
#[derive(Clone, Copy)]
enum Step<'a> {
    One(&'a Component),
    AnyOne,
    AnyMany,
}

/// The `i`th step of `parts`; `trailing` when `parts` ends with `**`.
fn step(parts: &[Component], trailing: bool, i: usize) -> Option<Step<'_>> {
    let body = parts.len() - usize::from(trailing);
    match i {
        i if i < body => parts.get(i).map(|c| match c {
            Component::DoubleStar => Step::AnyMany,
            c => Step::One(c),
        }),
        i if trailing && i == body => Some(Step::AnyOne),
        i if trailing && i == body + 1 => Some(Step::AnyMany),
        _ => None,
    }
}

/// The component of `rest` starting at byte `at`, and where the next one starts.
fn component_at(rest: &str, at: usize) -> (&str, Option<usize>) {
    let tail = rest.get(at..).unwrap_or_default();
    // Components are short: a plain scan for the byte beats `str::find`'s searcher (and `/`,
    // being ASCII, never falls inside a character).
    match tail.bytes().position(|b| b == b'/') {
        Some(i) => (&tail[..i], Some(at + i + 1)),
        None => (tail, None),
    }
}

/// Matches `parts` (no [`Component::HomeDirs`]) against a relative path (`a/b/c`). Every step but
/// `**` takes one component, so, as for `*` in a string, backtracking to the last `**` suffices:
/// at most path length × steps comparisons, whatever the pattern.
fn match_components(parts: &[Component], rest: &str) -> bool {
    let trailing = parts.last() == Some(&Component::DoubleStar);
    let (mut i, mut at) = (0, Some(0));
    let mut retry: Option<(usize, usize)> = None; // (step after the last `**`, where it resumes)
    while let Some(offset) = at {
        let (head, next) = component_at(rest, offset);
        let matched = match step(parts, trailing, i) {
            Some(Step::AnyMany) => {
                retry = Some((i + 1, offset));
                i += 1;
                continue;
            }
            Some(Step::AnyOne) => !head.is_empty(),
            Some(Step::One(Component::Literal(name))) => name == head,
            Some(Step::One(Component::Wild(pat))) => {
                !head.is_empty() && wild_match(pat.as_bytes(), head.as_bytes(), true, false)
            }
            Some(Step::One(_)) | None => false,
        };
        if matched {
            i += 1;
            at = next;
            continue;
        }
        // Let the last `**` take one more component and try again after it.
        let Some((after_star, taken)) = retry else {
            return false;
        };
        let resume = component_at(rest, taken).1;
        i = after_star;
        at = resume;
        retry = resume.map(|r| (after_star, r));
    }
    (i..)
        .map_while(|j| step(parts, trailing, j))
        .all(|s| matches!(s, Step::AnyMany))
}

/// A pattern of the paths an HTTP request may ask for (an endpoint's `paths:`): it starts with
/// `/`; `*` matches any run of bytes within one segment (no `/`), `**` any run across segments,
/// everything else itself. `/` alone is the root, and a trailing `/` is kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathGlob {
    text: String,
}

impl PathGlob {
    pub fn parse(text: &str) -> Result<PathGlob, PatternError> {
        if !text.starts_with('/') || !text.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(PatternError::UrlPath(text.to_owned()));
        }
        Ok(PathGlob {
            text: text.to_owned(),
        })
    }

    /// Whether a request's path (without its query string) matches. In time proportional to
    /// the pattern's length times the path's, whatever the path: requests come from anyone.
    pub fn matches(&self, path: &str) -> bool {
        let (p, s) = (self.text.as_bytes(), path.as_bytes());
        // ok[j]: the pattern from token i on matches the path from byte j on, for the token
        // after the current one; filled from the pattern's end.
        let mut next = vec![false; s.len() + 1];
        next[s.len()] = true;
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < p.len() {
            let t = match (p[i], p.get(i + 1)) {
                (b'*', Some(b'*')) => {
                    i += 2;
                    Token::Any
                }
                (b'*', _) => {
                    i += 1;
                    Token::Segment
                }
                (c, _) => {
                    i += 1;
                    Token::Byte(c)
                }
            };
            tokens.push(t);
        }
        for t in tokens.iter().rev() {
            let mut cur = vec![false; s.len() + 1];
            for j in (0..=s.len()).rev() {
                cur[j] = match t {
                    Token::Byte(c) => j < s.len() && s[j] == *c && next[j + 1],
                    Token::Segment => next[j] || (j < s.len() && s[j] != b'/' && cur[j + 1]),
                    Token::Any => next[j] || (j < s.len() && cur[j + 1]),
                };
            }
            next = cur;
        }
        next[0]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A piece of a [`PathGlob`].
enum Token {
    Byte(u8),
    Segment,
    Any,
}

/// Matches `text` against `pat`, where `*` is any run of bytes and `?` (when `question`) one
/// byte; `fold` compares ASCII case-insensitively. Linear backtracking over the last `*`.
fn wild_match(pat: &[u8], text: &[u8], question: bool, fold: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None; // (pattern index after `*`, text index it covers to)
    while t < text.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
            }
            Some(&c)
                if (question && c == b'?')
                    || c == text[t]
                    || (fold && c.eq_ignore_ascii_case(&text[t])) =>
            {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    p = sp;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|&c| c == b'*')
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl Eq for Glob {}

impl std::hash::Hash for Glob {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Glob {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Glob::parse(s)
    }
}

/// A DNS name pattern: `*` matches any characters, dots included; case-insensitive.
/// `*.s3.eu-west-1.amazonaws.com` matches `bucket.s3.eu-west-1.amazonaws.com` (and deeper names)
/// but not `s3.eu-west-1.amazonaws.com` itself. `*` may match nothing: `*example.com` also
/// matches `badexample.com`, so subdomains are written `*.example.com`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostGlob {
    text: String,
}

impl HostGlob {
    /// Parses a host pattern (a trailing dot is dropped, letters are lowercased).
    pub fn parse(text: &str) -> Result<HostGlob, PatternError> {
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*')))
        {
            return Err(PatternError::HostChar {
                host: text.to_owned(),
                ch,
            });
        }
        if name.split('.').any(str::is_empty) {
            return Err(PatternError::HostLabel(text.to_owned()));
        }
        Ok(HostGlob { text: name })
    }

    /// Whether the DNS name matches (case-insensitive, a trailing dot ignored).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        wild_match(self.text.as_bytes(), name.as_bytes(), false, true)
    }

    /// The pattern, lowercased.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for HostGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An IPv4 or IPv6 address block. IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) are treated as
/// the IPv4 address they carry, both in blocks and in [`Cidr::contains`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/len` or a single address (a block of one).
    pub fn parse(text: &str) -> Result<Cidr, PatternError> {
        let bad = || PatternError::Cidr(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (addr, Some(p.parse::<u32>().map_err(|_| bad())?))
            }
            None => (text.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(PatternError::CidrPrefix {
                text: text.to_owned(),
                prefix,
                max,
            });
        }
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let prefix = u8::try_from(prefix).map_err(|_| bad())?;
        let block = Cidr { addr, prefix };
        let network = block.network();
        if network != addr {
            return Err(PatternError::CidrHostBits {
                text: text.to_owned(),
                suggestion: Cidr {
                    addr: network,
                    prefix,
                }
                .to_string(),
            });
        }
        Ok(block)
    }

    /// The address with the host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(self.prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(self.prefix)).into()),
        }
    }

    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                u32::from(a) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Deserializes and serializes each pattern type from and to its text. The check runs inside the
/// visitor, while the YAML deserializer still points at the scalar, so errors carry its position.
macro_rules! text_serde {
    ($ty:ident, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::parse(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

text_serde!(
    Glob,
    "a path glob such as `/etc/app/token` or `~/.aws/credentials`"
);
text_serde!(
    PathGlob,
    "a URL path pattern such as `/v1/charges` or `/repos/*/pulls`"
);
text_serde!(
    HostGlob,
    "a host name pattern such as `*.s3.eu-west-1.amazonaws.com`"
);
text_serde!(Cidr, "an address block such as `10.20.0.0/16`");

#[cfg(test)]
mod tests;
