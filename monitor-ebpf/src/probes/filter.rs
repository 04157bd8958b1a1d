//! The open filter: is this opened file (or this failed open's name) possibly watched?
//!
//! Mirrors `monitor_common::filter::{file_watched, failed_open_watched}` (the reference, with the
//! rules spelled out and tested). Kept short: what runs before the first `return false` is the
//! cost nhiscope adds to every unwatched open.

use aya_ebpf::helpers::generated;
use monitor_common::{
    config::{self, Offset},
    filter::{bit, ino_hash, seed, step, two, KeyKind, ANCESTOR_DEPTH, BASE_PREFIX_LEN, NAME_SCAN},
    PATH_CAP,
};

use super::files::{launder, offset, read_ptr};
use crate::maps::{CONFIG, FILTER};

#[inline(always)]
fn hit(b: u32) -> bool {
    match FILTER.get(b >> 6) {
        Some(w) => (*w >> (b & 63)) & 1 == 1,
        None => false,
    }
}

/// The filter's hash key (see `config::HASH_KEY`).
#[inline(always)]
pub fn key() -> u64 {
    CONFIG.get(config::HASH_KEY).copied().unwrap_or(0)
}

/// Hashes of the last component of `buf[..n]` (a dentry name has no slash: all of it).
struct Hashes {
    base: u64,
    ext: u64,
    has_ext: bool,
    prefix: u64,
    has_prefix: bool,
}

/// One byte of a name into its whole-name and extension hashes (`seed` is where a hash starts;
/// an extension starts again at every dot).
#[inline(always)]
fn feed(seed: u64, base: u64, ext: u64, has_ext: u64, c: u8) -> (u64, u64, u64) {
    if c == b'.' {
        (step(base, c), step(seed, c), 1)
    } else {
        (step(base, c), step(ext, c), has_ext)
    }
}

/// One forward pass. The loop keeps no state the verifier must tell apart between iterations
/// (flags and positions are laundered before they are tested), so its walk stays linear; the
/// name prefix is hashed after the loop from where the last component starts.
#[inline(always)]
fn hash_last<const N: usize>(buf: &[u8; N], n: usize, key: u64) -> Hashes {
    let s = seed(key);
    let mut base = s;
    let mut ext = s;
    let mut has_ext = 0u64;
    let mut start = 0u64;
    let mut i = 0usize;
    while i < N - 1 && i < n {
        let c = buf[i];
        if c == b'/' {
            base = s;
            ext = s;
            has_ext = 0;
            start = i as u64 + 1;
        } else {
            (base, ext, has_ext) = feed(s, base, ext, has_ext, c);
        }
        i += 1;
    }
    let end = launder(i as u64) as usize & (N - 1);
    let start = launder(start) as usize & (N - 1);
    let has_ext = launder(has_ext) != 0;
    let mut prefix = s;
    let has_prefix = end >= start + BASE_PREFIX_LEN;
    if has_prefix {
        prefix = step(prefix, buf[start & (N - 1)]);
        prefix = step(prefix, buf[(start + 1) & (N - 1)]);
        prefix = step(prefix, buf[(start + 2) & (N - 1)]);
    }
    Hashes {
        base,
        ext,
        has_ext,
        prefix,
        has_prefix,
    }
}

/// Hashes of a dentry name (no slash) of `n` bytes at `buf[start..]`; as `hash_last`, over its
/// first `NAME_SCAN - 1` bytes.
#[inline(always)]
fn hash_name(buf: &[u8; NAME_SCAN], start: usize, n: usize, key: u64) -> Hashes {
    const M: usize = NAME_SCAN - 1;
    let s = seed(key);
    let mut base = s;
    let mut ext = s;
    let mut has_ext = 0u64;
    let mut i = 0usize;
    while i < M && i < n {
        (base, ext, has_ext) = feed(s, base, ext, has_ext, buf[(start + i) & M]);
        i += 1;
    }
    let has_ext = launder(has_ext) != 0;
    let has_prefix = n >= BASE_PREFIX_LEN;
    let mut prefix = s;
    if has_prefix {
        prefix = step(prefix, buf[start & M]);
        prefix = step(prefix, buf[(start + 1) & M]);
        prefix = step(prefix, buf[(start + 2) & M]);
    }
    Hashes {
        base,
        ext,
        has_ext,
        prefix,
        has_prefix,
    }
}

/// Bytes of a short name read with the dentry's `d_name` (names this long or longer are
/// copied from where `d_name.name` points).
const INLINE_READ: usize = 32;
/// Bytes read from `d_name` on: the qstr and, in every kernel's layout, the inline name.
const DENTRY_READ: usize = 96;

/// The hashes of a dentry's own name: read with its `d_name` in one go when the name is kept
/// inline in the dentry (short names, most of them), else copied from where it points.
#[inline(always)]
fn dentry_hashes(dentry: u64, buf: &mut [u8; NAME_SCAN], key: u64) -> Option<Hashes> {
    let o_name = offset(Offset::DentryName)?;
    let o_qname = offset(Offset::QstrName)?;
    let o_short = offset(Offset::DentryShortname)?;
    // Constants to the verifier: the layout test is decided at load.
    if o_short > o_name && o_short - o_name + INLINE_READ <= DENTRY_READ && o_qname == 8 {
        // SAFETY: DENTRY_READ bytes into a NAME_SCAN-byte buffer, from inside the dentry
        // (d_name is early in a struct of over 150 bytes); the helper faults safely.
        let r = unsafe {
            generated::bpf_probe_read_kernel(
                buf.as_mut_ptr().cast(),
                DENTRY_READ as u32,
                (dentry as usize + o_name) as *const core::ffi::c_void,
            )
        };
        if r != 0 {
            crate::maps::count_loss(monitor_common::LossCause::UserCopy);
            return None;
        }
        // SAFETY: in-bounds, possibly unaligned reads of the qstr just copied ({hash, len}, name).
        let (hash_len, name) = unsafe {
            (
                core::ptr::read_unaligned(buf.as_ptr() as *const u64),
                core::ptr::read_unaligned(buf.as_ptr().add(8) as *const u64),
            )
        };
        let len = (hash_len >> 32) as usize;
        let start = o_short - o_name;
        if name == dentry + o_short as u64 && len < INLINE_READ {
            return Some(hash_name(buf, start, len, key));
        }
        let n = copy_kernel_name(buf, name);
        return Some(hash_name(buf, 0, n, key));
    }
    let name = dentry_name(dentry)?;
    let n = copy_kernel_name(buf, name);
    Some(hash_name(buf, 0, n, key))
}

/// Copy a kernel string (a dentry name) into `buf`; its length without the NUL.
#[inline(always)]
fn copy_kernel_name(buf: &mut [u8; NAME_SCAN], name: u64) -> usize {
    // SAFETY: writes at most NAME_SCAN bytes into `buf`; the helper faults safely.
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(
            buf.as_mut_ptr().cast(),
            NAME_SCAN as u32,
            name as *const core::ffi::c_void,
        )
    };
    if n > 0 {
        n as usize - 1
    } else {
        0
    }
}

/// A dentry's name pointer.
#[inline(always)]
fn dentry_name(d: u64) -> Option<u64> {
    read_ptr(
        d + offset(Offset::DentryName)? as u64,
        offset(Offset::QstrName)?,
    )
}

/// Whether an opened file (its inode and dentry) may be watched: `MATCH_INODE`, `MATCH_NAME`
/// or 0. `buf` is scratch space.
#[inline(always)]
pub fn file_watched(inode: u64, dentry: u64, flags: u64, buf: &mut [u8; NAME_SCAN]) -> u32 {
    let key = key();
    let Some(o_ino) = offset(Offset::InodeIno) else {
        return 0;
    };
    if let Some(ino) = read_ptr(inode, o_ino) {
        if hit(bit(ino_hash(key, ino), KeyKind::Inode)) {
            return monitor_common::MATCH_INODE;
        }
    }
    let Some(h) = dentry_hashes(dentry, buf, key) else {
        return 0;
    };
    if hit(bit(h.base, KeyKind::Base))
        || (h.has_ext && hit(bit(h.ext, KeyKind::Ext)))
        || (h.has_prefix && hit(bit(h.prefix, KeyKind::BasePrefix)))
    {
        return monitor_common::MATCH_NAME;
    }
    let gate = flags & config::FLAG_PARENT_SCAN != 0
        || hit(bit(h.base, KeyKind::BaseGate))
        || (h.has_ext && hit(bit(h.ext, KeyKind::ExtGate)))
        || (h.has_prefix && hit(bit(h.prefix, KeyKind::BasePrefixGate)));
    let Some(o_parent) = offset(Offset::DentryParent) else {
        return 0;
    };
    if gate {
        if let Some(parent) = read_ptr(dentry, o_parent) {
            if parent != dentry {
                if let Some(pname) = dentry_name(parent) {
                    let pn = copy_kernel_name(buf, pname);
                    let hp = hash_name(buf, 0, pn, key).base;
                    if hit(bit(hp, KeyKind::Parent)) || hit(bit(two(hp, h.base), KeyKind::Two)) {
                        return monitor_common::MATCH_NAME;
                    }
                }
            }
        }
    }
    if flags & config::FLAG_ANCESTOR_SCAN != 0 {
        let Some(o_dinode) = offset(Offset::DentryInode) else {
            return 0;
        };
        let mut d = dentry;
        let mut i = 0;
        while i < ANCESTOR_DEPTH {
            let Some(p) = read_ptr(d, o_parent) else {
                break;
            };
            if p == d {
                break;
            }
            if let Some(ino) = read_ptr(p, o_dinode).and_then(|inode| read_ptr(inode, o_ino)) {
                if hit(bit(ino_hash(key, ino), KeyKind::DirInode)) {
                    return monitor_common::MATCH_NAME;
                }
            }
            d = p;
            i += 1;
        }
    }
    0
}

/// Whether a failed open's path argument, copied into `buf[..n]`, names a possibly watched
/// file: the hash of its name when it does.
#[inline(always)]
pub fn failed_open_watched(buf: &[u8; PATH_CAP], n: usize) -> Option<u64> {
    let h = hash_last(buf, n, key());
    let watched = hit(bit(h.base, KeyKind::Base))
        || hit(bit(h.base, KeyKind::BaseGate))
        || (h.has_ext && (hit(bit(h.ext, KeyKind::Ext)) || hit(bit(h.ext, KeyKind::ExtGate))))
        || (h.has_prefix
            && (hit(bit(h.prefix, KeyKind::BasePrefix))
                || hit(bit(h.prefix, KeyKind::BasePrefixGate))));
    watched.then_some(h.base)
}
