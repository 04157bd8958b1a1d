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
            base = step(base, c);
            if c == b'.' {
                ext = step(s, c);
                has_ext = 1;
            } else {
                ext = step(ext, c);
            }
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

/// Whether the file open at `file` (dentry `dentry`) may be watched: `MATCH_INODE`,
/// `MATCH_NAME` or 0. `buf` is scratch space.
#[inline(always)]
pub fn file_watched(file: u64, dentry: u64, flags: u64, buf: &mut [u8; NAME_SCAN]) -> u32 {
    let key = key();
    let Some(o_inode) = offset(Offset::FileInode) else {
        return 0;
    };
    let Some(o_ino) = offset(Offset::InodeIno) else {
        return 0;
    };
    if let Some(inode) = read_ptr(file, o_inode) {
        if let Some(ino) = read_ptr(inode, o_ino) {
            if hit(bit(ino_hash(key, ino), KeyKind::Inode)) {
                return monitor_common::MATCH_INODE;
            }
        }
    }
    let Some(name) = dentry_name(dentry) else {
        return 0;
    };
    let n = copy_kernel_name(buf, name);
    let h = hash_last(buf, n, key);
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
                    let hp = hash_last(buf, pn, key).base;
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
