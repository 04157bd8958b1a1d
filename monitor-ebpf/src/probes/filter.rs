//! The open prefilter: does this path possibly match a watched pattern?
//!
//! Mirrors `monitor_common::filter::tail_keys` (the reference, with the rules spelled out and
//! tested), returning at the first key whose bit is set in `FILTER`. Kept branch-light: the cost
//! of this function is the cost nhiscope adds to every unwatched open.

use monitor_common::{
    config,
    filter::{bit, step, KeyKind, BASE_PREFIX_LEN, PREFIX_DEPTH, PREFIX_SCAN, SEED, TAIL_SCAN},
    PATH_CAP,
};

use crate::maps::FILTER;

const MASK: usize = PATH_CAP - 1;

#[inline(always)]
fn hit(b: u32) -> bool {
    match FILTER.get(b >> 6) {
        Some(w) => (*w >> (b & 63)) & 1 == 1,
        None => false,
    }
}

/// Hide a loop counter's exact value from the verifier by a round trip through map memory.
///
/// After a loop the verifier knows the counter exactly, so it would walk the rest of the program
/// once per possible exit value (and once per pair after two loops): past its 1M-instruction
/// limit. Map memory reads back as an unknown scalar, so every exit shares one walk; the mask
/// gives back the bound (`n` and `k` are below `PATH_CAP` = 256, so 8 bits each).
#[inline(always)]
fn launder(v: usize, slot: &mut i64, mask: usize) -> usize {
    // SAFETY: `slot` is a valid, exclusive reference into this CPU's scratch record.
    unsafe {
        core::ptr::write_volatile(slot, v as i64);
        (core::ptr::read_volatile(slot) as usize) & mask
    }
}

/// `p[..n]` is the path as the process passed it (`n` < `PATH_CAP`).
///
/// The byte loops keep almost no state and test no bits inside (but for the prefix scan), so
/// the verifier's walk through them stays small; the tests happen after each loop.
#[inline(always)]
pub fn watched(p: &[u8; PATH_CAP], n: usize, flags: u64, slot: &mut i64) -> bool {
    if n == 0 || n >= PATH_CAP {
        return false;
    }
    let relative = p[0] != b'/';

    // The basename, backwards, noting the hash at its last dot (the extension).
    let mut h = SEED;
    let mut h_ext = SEED;
    let mut has_ext = false;
    let mut k = 0usize;
    while k < TAIL_SCAN && k < n {
        let c = p[(n - 1 - k) & MASK];
        if c == b'/' {
            break;
        }
        h = step(h, c);
        if c == b'.' && !has_ext {
            has_ext = true;
            h_ext = h;
        }
        k += 1;
    }
    // Leaving the loop at the path's start pins `n` as well as `k`: launder both.
    let both = launder((n << 8) | k, slot, 0xffff);
    let (n, k) = (both >> 8, both & 0xff);
    if has_ext && hit(bit(h_ext, KeyKind::Ext)) {
        return true;
    }
    let found_slash = k < n && k < TAIL_SCAN;
    let base_start = if found_slash {
        if hit(bit(h, KeyKind::Base)) || (relative && hit(bit(h, KeyKind::RelBase))) {
            return true;
        }
        n - k
    } else if k == n {
        if hit(bit(h, KeyKind::RelBase)) {
            return true;
        }
        0
    } else {
        PATH_CAP // the basename is longer than the scan
    };

    // The parent component, continuing backwards past the slash.
    if found_slash {
        let mut h2 = step(h, b'/');
        let mut hp = SEED;
        let mut plen = 0usize;
        let mut j = k + 1;
        while j < TAIL_SCAN && j < n {
            let c = p[(n - 1 - j) & MASK];
            if c == b'/' {
                break;
            }
            h2 = step(h2, c);
            hp = step(hp, c);
            plen += 1;
            j += 1;
        }
        let j = launder(j, slot, PATH_CAP - 1);
        if plen > 0
            && (j == n || j < TAIL_SCAN)
            && (hit(bit(hp, KeyKind::Parent)) || hit(bit(h2, KeyKind::Two)))
        {
            return true;
        }
    }

    if base_start < PATH_CAP && n >= base_start + BASE_PREFIX_LEN {
        let mut hb = SEED;
        hb = step(hb, p[base_start & MASK]);
        hb = step(hb, p[(base_start + 1) & MASK]);
        hb = step(hb, p[(base_start + 2) & MASK]);
        if hit(bit(hb, KeyKind::BasePrefix)) {
            return true;
        }
    }

    if flags & config::FLAG_PREFIX_SCAN != 0 && !relative {
        let mut h = SEED;
        let mut depth = 0;
        let mut j = 0usize;
        while j < PREFIX_SCAN && j < n {
            let c = p[j & MASK];
            h = step(h, c);
            if c == b'/' && j > 0 {
                if hit(bit(h, KeyKind::DirPrefix)) {
                    return true;
                }
                depth += 1;
                if depth >= PREFIX_DEPTH {
                    break;
                }
            }
            j += 1;
        }
    }
    false
}
