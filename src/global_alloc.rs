//! The library's own Rust allocations go straight to the next allocator: they
//! are never sampled, never enter the live table, and never re-enter the
//! interposed entry points.

use crate::next;
use core::alloc::{GlobalAlloc, Layout};

struct NextAllocator;

/// malloc's guaranteed alignment on x86-64 and aarch64 glibc, jemalloc, tcmalloc.
const MALLOC_ALIGN: usize = 16;

// SAFETY: every block comes from, and returns to, the next allocator's
// malloc/posix_memalign/realloc/free, which honour the requested layout.
unsafe impl GlobalAlloc for NextAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            return next::malloc(layout.size()).cast();
        }
        let mut p = core::ptr::null_mut();
        match next::posix_memalign(&mut p, layout.align(), layout.size()) {
            0 => p.cast(),
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        next::free(p.cast())
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            return next::realloc(p.cast(), new_size).cast();
        }
        let q = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !q.is_null() {
            core::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
            self.dealloc(p, layout);
        }
        q
    }
}

#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: NextAllocator = NextAllocator;
