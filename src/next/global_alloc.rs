//! The library's own Rust allocations go straight to the next allocator: they
//! are never sampled, never enter the live table, and never re-enter the
//! interposed entry points.
//!
//! Rust aborts the process when an allocation fails, and a program at its
//! memory limit (`ulimit -v`, a full cgroup with overcommit off) must not die
//! because the library asked for memory. So the big buffers of a dump are
//! reserved with `try_reserve` first (the dump fails early if they do not
//! fit), and the small allocations left, when the next allocator refuses
//! them, are served from `RESERVE`, a static emergency area (untouched pages
//! cost nothing). Each such refusal is counted: a dump during which one
//! happened is not written (see `collector`), and its blocks return to the
//! reserve when freed. Only an allocation the reserve cannot hold either (more
//! than `LARGEST` bytes, or the reserve exhausted) still fails.

use crate::next;
use crate::sys::lock::SpinLock;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

struct NextAllocator;

/// malloc's guaranteed alignment on x86-64 and aarch64 glibc, jemalloc, tcmalloc.
const MALLOC_ALIGN: usize = 16;

/// Size of the emergency reserve.
const RESERVE_BYTES: usize = 1 << 20;
/// Blocks of the reserve are powers of two from 16 bytes to `LARGEST`.
const CLASSES: usize = 13;
const LARGEST: usize = 16 << (CLASSES - 1);

#[repr(C, align(4096))]
struct Area(UnsafeCell<[u8; RESERVE_BYTES]>);

// SAFETY: every block of the area is handed to one owner at a time, under
// `CARVING`.
unsafe impl Sync for Area {}

static RESERVE: Area = Area(UnsafeCell::new([0; RESERVE_BYTES]));

/// Bytes of the reserve carved so far, and the freed blocks of each class
/// (a list threaded through the blocks themselves; 0 ends it).
struct Carving {
    used: usize,
    free: [usize; CLASSES],
}

static CARVING: SpinLock<Carving> = SpinLock::new(Carving {
    used: 0,
    free: [0; CLASSES],
});

/// Allocations the next allocator refused (served from the reserve, or not).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// How many of the library's allocations the next allocator has refused.
pub fn refusals() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

fn base() -> usize {
    RESERVE.0.get() as usize
}

fn in_reserve(p: *mut u8) -> bool {
    (base()..base() + RESERVE_BYTES).contains(&(p as usize))
}

fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(16);
    (size <= LARGEST).then(|| (size.next_power_of_two().trailing_zeros() - 4) as usize)
}

/// A block of the reserve for `layout`, or null.
fn from_reserve(layout: Layout) -> *mut u8 {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    let Some(class) = class_of(layout) else {
        return core::ptr::null_mut();
    };
    let size = 16usize << class;
    CARVING.with(|c| {
        let head = c.free[class];
        if head != 0 {
            // SAFETY: a freed block of this class holds the next one's address.
            c.free[class] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        // Aligned to its size (blocks of a page or more: to a page), which
        // is at least the layout's alignment up to a page.
        let start = c.used.next_multiple_of(size.min(4096));
        if layout.align() > 4096 || start + size > RESERVE_BYTES {
            return core::ptr::null_mut();
        }
        c.used = start + size;
        (base() + start) as *mut u8
    })
}

/// Returns a block to the reserve's list for its class.
fn to_reserve(p: *mut u8, layout: Layout) {
    if let Some(class) = class_of(layout) {
        CARVING.with(|c| {
            // SAFETY: the block is ours again and at least 16 bytes long.
            unsafe { *(p as *mut usize) = c.free[class] };
            c.free[class] = p as usize;
        });
    }
}

// SAFETY: every block comes from, and returns to, the next allocator's
// malloc/posix_memalign/realloc/free, which honour the requested layout, or
// the reserve, whose blocks are at least as large and aligned as the layout
// (`class_of`, `from_reserve`) and handed out once until freed.
unsafe impl GlobalAlloc for NextAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p: *mut u8 = if layout.align() <= MALLOC_ALIGN {
            // SAFETY: malloc takes any size.
            unsafe { next::malloc(layout.size()) }.cast()
        } else {
            let mut p = core::ptr::null_mut();
            // SAFETY: a Layout's alignment is a power of two, here above
            // MALLOC_ALIGN so a multiple of the pointer size; `p` is out
            // storage.
            match unsafe { next::posix_memalign(&mut p, layout.align(), layout.size()) } {
                0 => p.cast(),
                _ => core::ptr::null_mut(),
            }
        };
        if p.is_null() {
            return from_reserve(layout);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if in_reserve(p) {
            return to_reserve(p, layout);
        }
        // SAFETY: not the reserve's, so the next allocator's block (this
        // allocator's contract: `p` came from `alloc`).
        unsafe { next::free(p.cast()) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && !in_reserve(p) {
            // SAFETY: not the reserve's, so the next allocator's block.
            let q: *mut u8 = unsafe { next::realloc(p.cast(), new_size) }.cast();
            if !q.is_null() {
                return q;
            }
        }
        // Aligned, from the reserve, or refused (`p` is then unchanged).
        // SAFETY: GlobalAlloc::realloc's contract: `new_size` rounded up to
        // the alignment does not overflow isize, so the layout is valid.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout of non-zero size (realloc's contract).
        let q = unsafe { self.alloc(new) };
        if !q.is_null() {
            // SAFETY: `p` holds `layout.size()` bytes, `q` at least
            // `new_size`, and a fresh block does not overlap `p`; `p` was
            // allocated with `layout` and is freed once.
            unsafe {
                core::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}

#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: NextAllocator = NextAllocator;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_blocks_fit_their_layout_and_are_reused() {
        let layouts = [
            Layout::from_size_align(1, 1).unwrap(),
            Layout::from_size_align(48, 8).unwrap(),
            Layout::from_size_align(2016, 8).unwrap(),
            Layout::from_size_align(24, 64).unwrap(),
            Layout::from_size_align(LARGEST, 16).unwrap(),
        ];
        let before = refusals();
        for layout in layouts {
            let p = from_reserve(layout);
            assert!(in_reserve(p) && (p as usize).is_multiple_of(layout.align()));
            assert!(p as usize + layout.size() <= base() + RESERVE_BYTES);
            to_reserve(p, layout);
            assert_eq!(from_reserve(layout), p, "a freed block is reused");
            to_reserve(p, layout);
        }
        assert_eq!(refusals() - before, 2 * layouts.len() as u64);
        assert!(from_reserve(Layout::from_size_align(LARGEST + 1, 16).unwrap()).is_null());
    }
}
