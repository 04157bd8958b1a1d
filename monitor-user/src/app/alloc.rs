//! The daemon's allocator: mimalloc, asked the way the standard library asks the system's
//! `malloc`, and tuned to give memory back (docs/ARCHITECTURE.md, "Targets").
//!
//! Events are many small strings made and freed in batches of up to 100k rows; glibc's
//! allocator spent 40% of the daemon's time on them at 100k events/s (perf), mimalloc a few.
//! `mimalloc::MiMalloc` asks every block through `mi_malloc_aligned`, whose checks and
//! fallbacks cost about as much again as the allocation; a block whose alignment `mi_malloc`
//! already guarantees (16 bytes, and no more than its size, as for the system allocator) is
//! asked through `mi_malloc`.
//!
//! The binary and the pipeline bench install it with [`daemon_allocator!`](crate::daemon_allocator),
//! so that the bench measures the allocator the daemon runs with.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block has (`MI_MAX_ALIGN_SIZE`) when it is at least that
/// large; a smaller block is aligned to its size class, at least 8 bytes.
const MALLOC_ALIGN: usize = 16;

/// Whether `mi_malloc` (and `mi_realloc`, `mi_zalloc`) give `size` bytes at `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

/// mimalloc, through its plain entry points where they give the alignment asked for.
pub struct Allocator;

// SAFETY: every block comes from mimalloc, which returns null on failure, and is freed by
// `mi_free` whichever entry point made it; the aligned entry points are used whenever the
// plain ones might not give `layout.align()`.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc may be called with any size and a power-of-two alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; the new block keeps `layout.align()`, by
        // `mi_realloc`'s guarantee when `plain` holds for the new size, else by asking for it.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// mimalloc's `arena_eager_commit` and `purge_delay` options (mimalloc.h's `mi_option_t`).
const MI_OPTION_ARENA_EAGER_COMMIT: mi::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;

/// Memory freed goes back to the system at once and arenas are committed as they fill: the
/// daemon stays small at rest. Run before the first allocation ([`daemon_allocator!`](crate::daemon_allocator)
/// does), when the first arena is made.
pub fn tune() {
    // SAFETY: setting options is allowed at any time; these two take effect for later arenas
    // and purges.
    unsafe {
        mi::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// Installs [`Allocator`] as the global allocator and runs [`tune`] before `main` (from
/// `.init_array`, before the runtime's first allocation). For the `nhiscope` binary and the
/// benches that must measure what it runs with.
#[macro_export]
macro_rules! daemon_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::app::alloc::Allocator = $crate::app::alloc::Allocator;

        #[used]
        #[unsafe(link_section = ".init_array")]
        static TUNE_ALLOCATOR: extern "C" fn() = {
            extern "C" fn tune() {
                $crate::app::alloc::tune();
            }
            tune
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_has_the_alignment_and_bytes_asked_for() {
        let a = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 15, 16, 17, 24, 100, 4096, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("a layout");
                // SAFETY: non-zero sizes; each block is written and read within its size and
                // freed (or grown) by the same allocator with the layout it has.
                unsafe {
                    let z = a.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && (z as usize).is_multiple_of(align),
                        "zeroed {size} at {align}"
                    );
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                    let mut p = a.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size} at {align}"
                    );
                    p.write_bytes(0xab, size);
                    for new in [1, size / 2 + 1, size * 3] {
                        // To `new` bytes and back: the bytes kept are kept, the block aligned.
                        let r = a.realloc(p, layout, new);
                        assert!(
                            (r as usize).is_multiple_of(align),
                            "{size} -> {new} at {align}"
                        );
                        assert!((0..size.min(new)).all(|i| *r.add(i) == 0xab));
                        let resized = Layout::from_size_align(new, align).expect("a layout");
                        p = a.realloc(r, resized, size);
                        assert!(
                            (p as usize).is_multiple_of(align),
                            "{new} -> {size} at {align}"
                        );
                        p.write_bytes(0xab, size);
                    }
                    a.dealloc(p, layout);
                }
            }
        }
    }
}
