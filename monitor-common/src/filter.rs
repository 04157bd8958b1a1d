//! The in-kernel filter for opens: which opened files are worth sending to userspace.
//!
//! The kernel decides on the file it actually opened, never on the path string the process
//! passed: at the syscall's exit it follows the new descriptor to its `struct file` and tests
//! *keys* of that file in a bitmap (an array map, whose lookup the verifier inlines):
//!
//! - [`KeyKind::Inode`]: the file's inode number. The daemon sets one for every registered
//!   credential file, so a hard link under any name is the same file.
//! - name keys of the file's own dentry name (the name it has in its directory, whatever the
//!   path said: `//`, `/./`, `..`, `/proc/self/cwd`, `/proc/PID/fd/N`, symlinks and bind mounts
//!   all end at the same dentry): [`KeyKind::Base`] (the whole name), [`KeyKind::Ext`] (from its
//!   last dot), [`KeyKind::BasePrefix`] (its first [`BASE_PREFIX_LEN`] bytes);
//! - parent keys, over the parent directory's dentry name: [`KeyKind::Parent`] alone and
//!   [`KeyKind::Two`] (parent and name together). They are computed only when a *gate* bit of
//!   one of the name keys is set (`BaseGate`, `ExtGate`, `BasePrefixGate`: "this name is watched
//!   in some directory, look at the parent"), or for every open when the daemon sets
//!   `FLAG_PARENT_SCAN` (a pattern with nothing literal in its file name);
//! - [`KeyKind::DirInode`]: the inode numbers of up to [`ANCESTOR_DEPTH`] directories above the
//!   file, for patterns such as `/srv/vault/**`, only when `FLAG_ANCESTOR_SCAN` is set.
//!
//! A failed open has no file: its path argument is copied instead and its last component tested
//! with the name keys (a gate counts as a hit there).
//!
//! A hit is only a hint; the daemon does the exact match on the real path and inode and drops
//! false positives (a bitmap of [`FILTER_BITS`] bits keeps them rare). Hashes are keyed with a
//! random key chosen by the daemon at start, so colliding names cannot be prepared in advance.
//! The functions here are the reference the kernel programs mirror, and what the daemon's pattern
//! compiler is tested against.

/// Bits in the filter bitmap (a power of two).
pub const FILTER_BITS: u32 = 1 << 18;
/// `u64` words in the filter bitmap array map.
pub const FILTER_WORDS: u32 = FILTER_BITS / 64;
/// Bytes of a file name the kernel hashes at most. A longer name is hashed over its first
/// `NAME_SCAN - 1` bytes (the kernel's copy keeps a NUL), on both sides.
pub const NAME_SCAN: usize = 128;
/// Bytes of the name used by [`KeyKind::BasePrefix`].
pub const BASE_PREFIX_LEN: usize = 3;
/// Directories above an opened file whose inodes are tested for [`KeyKind::DirInode`].
pub const ANCESTOR_DEPTH: usize = 8;

/// What a key hashes.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// The file's name (`credentials`).
    Base = 1,
    /// The parent directory's name and the file's name (`.aws/credentials`).
    Two = 2,
    /// The parent directory's name (`secrets` in `.../secrets/x.json`).
    Parent = 3,
    /// The name's extension from its last dot (`.pem`).
    Ext = 4,
    /// The first [`BASE_PREFIX_LEN`] bytes of the name (`.en` for `.env.production`).
    BasePrefix = 5,
    // 6 and 7 were string keys (relative basename, leading directory prefix): retired.
    /// The opened file's inode number.
    Inode = 8,
    /// The inode number of a directory above the opened file.
    DirInode = 9,
    /// `Base`, but a hit only means: check the parent keys.
    BaseGate = 11,
    /// `Ext`, but a hit only means: check the parent keys.
    ExtGate = 14,
    /// `BasePrefix`, but a hit only means: check the parent keys.
    BasePrefixGate = 15,
}

const SEED: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The starting state of a keyed hash.
#[inline(always)]
pub fn seed(key: u64) -> u64 {
    SEED ^ key
}

/// One FNV-1a step.
#[inline(always)]
pub fn step(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(PRIME)
}

/// The hash of a parent name and a file name together, from their hashes.
#[inline(always)]
pub fn two(h_parent: u64, h_base: u64) -> u64 {
    h_parent.rotate_left(29) ^ h_base
}

/// The hash of an inode number.
#[inline(always)]
pub fn ino_hash(key: u64, ino: u64) -> u64 {
    (seed(key) ^ ino).wrapping_mul(0x9e37_79b9_7f4a_7c15)
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

/// Keyed hash of `bytes`, first to last.
pub fn hash(key: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed(key), |h, &b| step(h, b))
}

/// The hashes the kernel takes of one file name in its single forward pass (the name is cut to
/// [`NAME_SCAN`]` - 1` bytes first, as the kernel's copy is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameHashes {
    /// Over the whole name.
    pub base: u64,
    /// Over the name from its last dot, when it has one.
    pub ext: Option<u64>,
    /// Over its first [`BASE_PREFIX_LEN`] bytes, when it is that long.
    pub prefix: Option<u64>,
}

/// Reference of the kernel's pass over a file name.
pub fn name_hashes(key: u64, name: &[u8]) -> NameHashes {
    let name = &name[..name.len().min(NAME_SCAN - 1)];
    let mut h = seed(key);
    let mut h_ext = None;
    let mut prefix = None;
    for (i, &c) in name.iter().enumerate() {
        h = step(h, c);
        h_ext = if c == b'.' {
            Some(step(seed(key), c))
        } else {
            h_ext.map(|e| step(e, c))
        };
        if i + 1 == BASE_PREFIX_LEN {
            prefix = Some(h);
        }
    }
    NameHashes {
        base: h,
        ext: h_ext,
        prefix,
    }
}

/// The bitmap index of the key of `kind` over `literal`: for [`KeyKind::Two`] `parent/name`,
/// for the `Ext` kinds `.ext` with its dot. Not for the inode kinds (see [`inode_bit`]).
/// Names are cut to [`NAME_SCAN`]` - 1` bytes, as the kernel's copy cuts them.
pub fn key_bit(key: u64, kind: KeyKind, literal: &[u8]) -> u32 {
    let name = |b: &[u8]| hash(key, &b[..b.len().min(NAME_SCAN - 1)]);
    let h = match kind {
        KeyKind::Two => {
            let cut = literal
                .iter()
                .position(|&c| c == b'/')
                .unwrap_or(literal.len());
            let (p, b) = literal.split_at(cut);
            two(name(p), name(b.get(1..).unwrap_or(&[])))
        }
        _ => name(literal),
    };
    bit(h, kind)
}

/// The bitmap index of an inode key.
pub fn inode_bit(key: u64, kind: KeyKind, ino: u64) -> u32 {
    bit(ino_hash(key, ino), kind)
}

/// What the kernel knows of an opened file when it tests it.
#[derive(Clone, Copy, Debug)]
pub struct OpenedFile<'a> {
    pub ino: u64,
    /// Its dentry name.
    pub name: &'a [u8],
    /// Its parent directory's dentry name.
    pub parent: Option<&'a [u8]>,
    /// The inode numbers of the directories above it, nearest first.
    pub ancestors: &'a [u64],
}

/// Which of the slower tests are on (`config::FLAG_PARENT_SCAN`, `FLAG_ANCESTOR_SCAN`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Scans {
    pub parent: bool,
    pub ancestor: bool,
}

/// What the kernel's test of an opened file comes to, given a bitmap test `hit`: the reference
/// for the programs in `monitor-ebpf/src/probes/filter.rs`.
pub fn file_watched(key: u64, hit: impl Fn(u32) -> bool, scans: Scans, f: OpenedFile) -> bool {
    let OpenedFile {
        ino,
        name,
        parent,
        ancestors,
    } = f;
    let (parent_scan, ancestor_scan) = (scans.parent, scans.ancestor);
    if hit(inode_bit(key, KeyKind::Inode, ino)) {
        return true;
    }
    let h = name_hashes(key, name);
    let mut gate = parent_scan;
    let mut test = |sufficient: KeyKind, gated: KeyKind, hash: u64| {
        if hit(bit(hash, sufficient)) {
            return true;
        }
        gate |= hit(bit(hash, gated));
        false
    };
    if test(KeyKind::Base, KeyKind::BaseGate, h.base)
        || h.ext
            .is_some_and(|e| test(KeyKind::Ext, KeyKind::ExtGate, e))
        || h.prefix
            .is_some_and(|p| test(KeyKind::BasePrefix, KeyKind::BasePrefixGate, p))
    {
        return true;
    }
    if gate {
        if let Some(p) = parent {
            let hp = name_hashes(key, p).base;
            if hit(bit(hp, KeyKind::Parent)) || hit(bit(two(hp, h.base), KeyKind::Two)) {
                return true;
            }
        }
    }
    ancestor_scan
        && ancestors
            .iter()
            .take(ANCESTOR_DEPTH)
            .any(|&a| hit(inode_bit(key, KeyKind::DirInode, a)))
}

/// What the kernel's test of a failed open comes to: the name keys (and their gates) of the
/// path argument's last component (hashed whole: a failed open's argument is a string of up to
/// `PATH_CAP` bytes, not a dentry name).
pub fn failed_open_watched(key: u64, hit: impl Fn(u32) -> bool, path: &[u8]) -> bool {
    let name = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    };
    if name.is_empty() {
        return false;
    }
    let mut h = name_hashes(key, name);
    h.base = hash(key, name);
    if let Some(dot) = name.iter().rposition(|&c| c == b'.') {
        h.ext = Some(hash(key, &name[dot..]));
    }
    let any = |a: KeyKind, b: KeyKind, hash: u64| hit(bit(hash, a)) || hit(bit(hash, b));
    any(KeyKind::Base, KeyKind::BaseGate, h.base)
        || h.ext
            .is_some_and(|e| any(KeyKind::Ext, KeyKind::ExtGate, e))
        || h.prefix
            .is_some_and(|p| any(KeyKind::BasePrefix, KeyKind::BasePrefixGate, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 0x1234_5678_9abc_def0;

    fn set(bits: &[u32]) -> impl Fn(u32) -> bool + '_ {
        move |b| bits.contains(&b)
    }

    #[test]
    fn name_hashes_follow_the_definitions() {
        let h = name_hashes(K, b"db.prod.json");
        assert_eq!(h.base, hash(K, b"db.prod.json"));
        assert_eq!(h.ext, Some(hash(K, b".json")));
        assert_eq!(h.prefix, Some(hash(K, b"db.")));
        let h = name_hashes(K, b"ab");
        assert_eq!((h.ext, h.prefix), (None, None));
        assert_eq!(name_hashes(K, b".env").ext, Some(hash(K, b".env")));
    }

    #[test]
    fn the_key_changes_every_bit() {
        assert_ne!(
            key_bit(1, KeyKind::Base, b"credentials"),
            key_bit(2, KeyKind::Base, b"credentials")
        );
        assert_ne!(
            inode_bit(1, KeyKind::Inode, 42),
            inode_bit(2, KeyKind::Inode, 42)
        );
    }

    #[test]
    fn gates_send_the_test_to_the_parent() {
        let bits = [
            key_bit(K, KeyKind::BaseGate, b"credentials"),
            key_bit(K, KeyKind::Two, b".aws/credentials"),
        ];
        let w = |name: &[u8], parent: &[u8]| {
            let f = OpenedFile {
                ino: 7,
                name,
                parent: Some(parent),
                ancestors: &[],
            };
            file_watched(K, set(&bits), Scans::default(), f)
        };
        assert!(w(b"credentials", b".aws"));
        assert!(!w(b"credentials", b".gcp"));
        assert!(!w(b"config", b".aws"));
        // A failed open passes on the gate alone.
        assert!(failed_open_watched(K, set(&bits), b"../x/credentials"));
        assert!(!failed_open_watched(K, set(&bits), b"/x/credentials/"));
    }

    #[test]
    fn inodes_and_ancestors() {
        let bits = [
            inode_bit(K, KeyKind::Inode, 99),
            inode_bit(K, KeyKind::DirInode, 5),
        ];
        let w = |ino, ancestors: &[u64], scan| {
            let f = OpenedFile {
                ino,
                name: b"any",
                parent: Some(b"dir"),
                ancestors,
            };
            let scans = Scans {
                parent: false,
                ancestor: scan,
            };
            file_watched(K, set(&bits), scans, f)
        };
        assert!(w(99, &[], false));
        assert!(!w(98, &[5], false));
        assert!(w(98, &[1, 2, 5], true));
        assert!(!w(98, &[1, 2, 3, 4, 6, 7, 8, 9, 5], true));
    }

    #[test]
    fn long_names_are_cut_as_the_kernel_cuts_them() {
        let long = [b'a'; 300];
        assert_eq!(name_hashes(K, &long).base, hash(K, &long[..NAME_SCAN - 1]));
    }
}
