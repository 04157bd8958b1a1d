//! The in-kernel prefilter for opens: which paths are worth sending to userspace.
//!
//! The kernel cannot afford a glob match per `openat`, so every watched pattern is reduced by the
//! daemon to one or more *keys*: hashes of a literal part of the path at a fixed place (the
//! basename, the last two components, the parent directory, the extension, the first bytes of the
//! basename, or a leading directory prefix). The kernel computes the same hashes for each opened
//! path in one backward pass over its tail and tests each in a bitmap (an array map, whose lookup
//! the verifier inlines): an unwatched open costs one string copy, one short loop and a few memory
//! loads, with no hash-map lookup. A hit is only a hint; the daemon does the exact glob match and
//! drops false positives (a bitmap of [`FILTER_BITS`] bits keeps them rare).
//!
//! Hashes run over bytes in the order the kernel meets them: backwards from the end of the path
//! for the tail keys, forwards for [`KeyKind::DirPrefix`]. [`tail_keys`] is the reference
//! implementation of the kernel's pass; the daemon's pattern compiler is tested against it.

/// Bits in the filter bitmap (a power of two).
pub const FILTER_BITS: u32 = 1 << 18;
/// `u64` words in the filter bitmap array map.
pub const FILTER_WORDS: u32 = FILTER_BITS / 64;
/// How many bytes from the end of a path the kernel examines for tail keys.
pub const TAIL_SCAN: usize = 128;
/// How many leading bytes the kernel scans for directory-prefix keys.
pub const PREFIX_SCAN: usize = 64;
/// Leading directory prefixes checked at most (slashes after the root one).
pub const PREFIX_DEPTH: u32 = 4;
/// Bytes of the basename used by [`KeyKind::BasePrefix`].
pub const BASE_PREFIX_LEN: usize = 3;

/// What part of a path a key hashes.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyKind {
    /// The basename of a path that has a directory part (`.../credentials`).
    Base = 1,
    /// The last two components (`.aws/credentials`).
    Two = 2,
    /// The parent directory's name (`secrets` in `.../secrets/x.json`).
    Parent = 3,
    /// The basename's extension from its last dot (`.pem`).
    Ext = 4,
    /// The first [`BASE_PREFIX_LEN`] bytes of the basename (`.en` for `.env.production`).
    BasePrefix = 5,
    /// The basename of a relative path (`token`, `./token`, `../x/token`): the kernel cannot see
    /// the directory, so relative opens are matched by basename alone.
    RelBase = 6,
    /// A leading directory prefix with its trailing slash (`/etc/billing/`).
    DirPrefix = 7,
}

pub const SEED: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// One FNV-1a step.
#[inline(always)]
pub fn step(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(PRIME)
}

/// The bitmap index of a finished hash of `kind`.
#[inline(always)]
pub fn bit(h: u64, kind: KeyKind) -> u32 {
    let mut x = h ^ (kind as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    (x as u32) & (FILTER_BITS - 1)
}

/// Hash of `bytes` read from last to first (the tail keys' order).
pub fn hash_rev(bytes: &[u8]) -> u64 {
    let mut h = SEED;
    let mut i = bytes.len();
    while i > 0 {
        i -= 1;
        h = step(h, bytes[i]);
    }
    h
}

/// Hash of `bytes` read from first to last (the prefix keys' order).
pub fn hash_fwd(bytes: &[u8]) -> u64 {
    let mut h = SEED;
    let mut i = 0;
    while i < bytes.len() {
        h = step(h, bytes[i]);
        i += 1;
    }
    h
}

/// The bit for a key of `kind` over `literal` (the exact bytes the kernel would hash: for
/// [`KeyKind::Two`] `parent/base`, for [`KeyKind::Ext`] `.ext`, for [`KeyKind::DirPrefix`] the
/// prefix with its trailing slash).
pub fn key_bit(kind: KeyKind, literal: &[u8]) -> u32 {
    let h = match kind {
        KeyKind::DirPrefix | KeyKind::BasePrefix => hash_fwd(literal),
        _ => hash_rev(literal),
    };
    bit(h, kind)
}

/// Keys the kernel computes for one path, as bitmap indexes. At most 6 tail keys plus
/// [`PREFIX_DEPTH`] prefix keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathKeys {
    pub bits: [u32; 10],
    pub len: usize,
}

impl PathKeys {
    fn push(&mut self, b: u32) {
        if self.len < self.bits.len() {
            self.bits[self.len] = b;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.bits[..self.len]
    }
}

/// Reference implementation of the kernel's pass over an opened path: the keys it tests.
/// `prefix_scan` mirrors `config::FLAG_PREFIX_SCAN`.
///
/// On `p` with basename `base` (the bytes after the last `/`, or all of `p`):
/// - `Base` = rev(base) when `p` has a slash; `RelBase` = rev(base) when `p` is relative;
/// - `Ext` = rev(base from its last dot) when base has a dot;
/// - `Parent` = rev(parent), `Two` = rev(parent/base) when a non-empty component precedes base;
/// - `BasePrefix` = fwd(first 3 bytes of base) when base is that long;
/// - `DirPrefix` = fwd(p up to and including each of its first [`PREFIX_DEPTH`] slashes after
///   the root, within [`PREFIX_SCAN`] bytes), for absolute paths when enabled.
///
/// Only the last [`TAIL_SCAN`] bytes are examined: a part that starts before them yields no key.
pub fn tail_keys(p: &[u8], prefix_scan: bool) -> PathKeys {
    let mut out = PathKeys::default();
    let n = p.len();
    if n == 0 {
        return out;
    }
    let relative = p[0] != b'/';
    let mut h = SEED; // over base, then over "parent/base"
    let mut hp = SEED; // over parent alone
    let mut seen_slash = false;
    let mut ext_done = false;
    let mut base_start = usize::MAX;
    let mut parent_done = false;
    let mut k = 0;
    while k < TAIL_SCAN && k < n {
        let i = n - 1 - k;
        let c = p[i];
        if c == b'/' {
            if !seen_slash {
                seen_slash = true;
                base_start = i + 1;
                out.push(bit(h, KeyKind::Base));
                if relative {
                    out.push(bit(h, KeyKind::RelBase));
                }
                h = step(h, c);
            } else {
                if hp != SEED {
                    out.push(bit(hp, KeyKind::Parent));
                    out.push(bit(h, KeyKind::Two));
                }
                parent_done = true;
                break;
            }
        } else {
            h = step(h, c);
            if seen_slash {
                hp = step(hp, c);
            } else if c == b'.' && !ext_done {
                ext_done = true;
                out.push(bit(h, KeyKind::Ext));
            }
        }
        k += 1;
    }
    if !parent_done && k == n {
        // Reached the start of the path.
        if !seen_slash {
            base_start = 0;
            out.push(bit(h, KeyKind::RelBase));
        } else if hp != SEED {
            out.push(bit(hp, KeyKind::Parent));
            out.push(bit(h, KeyKind::Two));
        }
    }
    if base_start != usize::MAX && n >= base_start + BASE_PREFIX_LEN {
        out.push(bit(
            hash_fwd(&p[base_start..base_start + BASE_PREFIX_LEN]),
            KeyKind::BasePrefix,
        ));
    }
    if prefix_scan && !relative {
        let mut h = SEED;
        let mut depth = 0;
        let mut j = 0;
        while j < n && j < PREFIX_SCAN {
            let c = p[j];
            h = step(h, c);
            if c == b'/' && j > 0 {
                out.push(bit(h, KeyKind::DirPrefix));
                depth += 1;
                if depth >= PREFIX_DEPTH {
                    break;
                }
            }
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(p: &str, kind: KeyKind, lit: &str) -> bool {
        tail_keys(p.as_bytes(), true)
            .as_slice()
            .contains(&key_bit(kind, lit.as_bytes()))
    }

    #[test]
    fn absolute_path_keys() {
        let p = "/home/ann/.aws/credentials";
        assert!(has(p, KeyKind::Base, "credentials"));
        assert!(has(p, KeyKind::Two, ".aws/credentials"));
        assert!(has(p, KeyKind::Parent, ".aws"));
        assert!(has(p, KeyKind::BasePrefix, "cre"));
        assert!(has(p, KeyKind::DirPrefix, "/home/"));
        assert!(has(p, KeyKind::DirPrefix, "/home/ann/"));
        assert!(!has(p, KeyKind::RelBase, "credentials"));
        assert!(!has(p, KeyKind::Base, "ann"));
    }

    #[test]
    fn extension_is_from_the_last_dot() {
        assert!(has("/srv/a/secrets/db.prod.json", KeyKind::Ext, ".json"));
        assert!(!has(
            "/srv/a/secrets/db.prod.json",
            KeyKind::Ext,
            ".prod.json"
        ));
        assert!(has("/app/.env", KeyKind::Ext, ".env"));
        assert!(!has("/app.d/env", KeyKind::Ext, ".d/env"));
    }

    #[test]
    fn relative_paths() {
        assert!(has("token", KeyKind::RelBase, "token"));
        assert!(!has("token", KeyKind::Base, "token"));
        assert!(has("./token", KeyKind::RelBase, "token"));
        assert!(has("../sa/token", KeyKind::Two, "sa/token"));
        assert!(has(".aws/credentials", KeyKind::Two, ".aws/credentials"));
    }

    #[test]
    fn root_file_has_no_parent() {
        let k = tail_keys(b"/credentials", false);
        assert!(k
            .as_slice()
            .contains(&key_bit(KeyKind::Base, b"credentials")));
        assert!(!k.as_slice().contains(&key_bit(KeyKind::Parent, b"")));
        assert_eq!(k.len, 2); // Base and BasePrefix
    }

    #[test]
    fn long_basename_beyond_the_scan_yields_no_base_key() {
        let mut p = [b'a'; TAIL_SCAN + 10];
        p[0] = b'/';
        let k = tail_keys(&p, false);
        assert_eq!(k.len, 0);
    }

    #[test]
    fn prefix_scan_is_off_unless_asked() {
        let k = tail_keys(b"/etc/billing/x", false);
        assert!(!k
            .as_slice()
            .contains(&key_bit(KeyKind::DirPrefix, b"/etc/")));
    }
}
