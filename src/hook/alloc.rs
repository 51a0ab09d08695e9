//! The exported allocator entry points. Each one's common path is the
//! per-thread byte countdown (and, when it frees, one filter byte) followed by
//! a tail call into the next allocator; everything else is in the outlined
//! cold functions of `sampled`, shared by all entry points.
//!
//! The entry points are never inlined into each other: Go's pprof names a
//! frame only from a subprogram's own DWARF name, which an inlined function's
//! out-of-line copy lacks, and frame 0 must be named to be dropped.

use crate::hook::sampled::{self, allocate_sampled, release_sampled, Api, Freed};
use crate::next::{self, bootstrap};
use crate::sample::{live, sampling, thread_state};
use core::ffi::{c_int, c_void};

type Ptr = *mut c_void;

/// An entry point that allocates `$bytes` and returns the block.
macro_rules! allocating {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, bytes = $bytes:expr, frame = $api:ident, block = |$r:ident| $block:expr) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            let bytes = $bytes;
            if !thread_state::crosses(bytes) {
                // SAFETY: the program's arguments to this same C function, unchanged.
                return unsafe { next::$name($($arg),*) };
            }
            let mut result = Default::default();
            let alloc = || {
                // SAFETY: the program's arguments to this same C function, unchanged.
                let $r = unsafe { next::$name($($arg),*) };
                result = $r;
                $block
            };
            // SAFETY: `alloc` returns the next allocator's block or null.
            unsafe { allocate_sampled(alloc, bytes, Api::$api) };
            result
        }
    };
    ($name:ident($($arg:ident: $ty:ty),*), bytes = $bytes:expr, frame = $api:ident) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> Ptr {
            let bytes = $bytes;
            if !thread_state::crosses(bytes) {
                // SAFETY: the program's arguments to this same C function, unchanged.
                return unsafe { next::$name($($arg),*) };
            }
            // SAFETY: the program's arguments to this same C function, unchanged.
            let alloc = move || unsafe { next::$name($($arg),*) };
            // SAFETY: `alloc` returns the next allocator's block or null.
            unsafe { allocate_sampled(alloc, bytes, Api::$api) }
        }
    };
}

/// An entry point that resizes block `$p` to `$size` bytes.
macro_rules! resizing {
    ($name:ident($p:ident: Ptr, $size:ident: usize $(, $arg:ident: $ty:ty)*)) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($p: Ptr, $size: usize $(, $arg: $ty)*) -> Ptr {
            let crossed = thread_state::crosses($size);
            if !crossed && !live::maybe_sampled($p as usize) {
                // SAFETY: the program's arguments to this same C function, unchanged.
                return unsafe { next::$name($p, $size $(, $arg)*) };
            }
            // SAFETY: `resize_sampled` calls the closure with `$p` only
            // when it is not the bootstrap arena's: the program's block.
            let resize = move |p| unsafe { next::$name(p, $size $(, $arg)*) };
            // SAFETY: `$p` is the program's block (or null), the closure
            // resizes it as the program asked.
            unsafe { resize_sampled($p, $size, crossed, resize) }
        }
    };
}

/// An entry point that frees block `$p`.
macro_rules! releasing {
    ($name:ident($p:ident: Ptr $(, $arg:ident: $ty:ty)*), $freed:expr) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($p: Ptr $(, $arg: $ty)*) {
            if !live::maybe_sampled($p as usize) {
                // SAFETY: the program's arguments to this same C function, unchanged.
                return unsafe { next::$name($p $(, $arg)*) };
            }
            // SAFETY: `release_sampled` calls the closure with `$p` only
            // when it is not the bootstrap arena's: the program's block.
            release_sampled($p, move |p| unsafe { next::$name(p $(, $arg)*) }, $freed)
        }
    };
}

allocating!(malloc(size: usize), bytes = size, frame = Malloc);
// Wrapping: a product that overflows is a calloc that fails and allocates
// nothing, and bytes counted for it move no later allocation's odds of being
// sampled (the gaps are memoryless). A multiply and no overflow branch.
allocating!(calloc(n: usize, size: usize), bytes = n.wrapping_mul(size), frame = Calloc);
allocating!(aligned_alloc(align: usize, size: usize), bytes = size, frame = Memalign);
allocating!(memalign(align: usize, size: usize), bytes = size, frame = Memalign);
allocating!(valloc(size: usize), bytes = size, frame = Valloc);
allocating!(pvalloc(size: usize), bytes = size, frame = Pvalloc);
allocating!(mallocx(size: usize, flags: c_int), bytes = size, frame = Malloc);
allocating!(
    posix_memalign(out: *mut Ptr, align: usize, size: usize) -> c_int,
    bytes = size,
    frame = PosixMemalign,
    block = |rc| if rc == 0 {
        // SAFETY: posix_memalign succeeded, so it stored the block in `*out`.
        unsafe { *out }
    } else {
        core::ptr::null_mut()
    }
);
resizing!(realloc(p: Ptr, size: usize));
resizing!(rallocx(p: Ptr, size: usize, flags: c_int));
releasing!(free(p: Ptr), Freed::Free);
releasing!(dallocx(p: Ptr, flags: c_int), Freed::Other);
releasing!(sdallocx(p: Ptr, size: usize, flags: c_int), Freed::Sized(size, flags));

/// This library's `free`, for code that jumps to it. Loaded late (attached),
/// `free as *mut c_void` would be the program's `free`: Rust reads an
/// exported function's address from the library's GOT, which the loader
/// then bound to libc's; the library's own object is asked instead.
pub fn own_free() -> *mut c_void {
    if crate::sys::dl::loaded_late() {
        if let Some(f) = crate::sys::dl::Own::open().and_then(|own| own.definition(c"free")) {
            return f as *mut c_void;
        }
    }
    free as *mut c_void
}

/// glibc's own reallocarray would call glibc's realloc even when the program
/// uses jemalloc, so it is implemented here on the next allocator's realloc.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn reallocarray(p: Ptr, n: usize, size: usize) -> Ptr {
    match n.checked_mul(size) {
        // SAFETY: the program's block, resized to the product it asked for.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            crate::sys::errno::set(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// In-place resize: a sampled allocation keeps its sample, with the new size.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn xallocx(p: Ptr, size: usize, extra: usize, flags: c_int) -> usize {
    // SAFETY: the program's arguments to this same C function, unchanged.
    let real = unsafe { next::xallocx(p, size, extra, flags) };
    if live::maybe_sampled(p as usize) && real >= size {
        live::resize(p as usize, real.min(size.saturating_add(extra)), real);
    }
    real
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn malloc_usable_size(p: Ptr) -> usize {
    if bootstrap::owns(p) {
        // SAFETY: a block inside the arena was handed out by it.
        return unsafe { bootstrap::size_of(p) };
    }
    // SAFETY: the program's arguments to this same C function, unchanged.
    unsafe { next::malloc_usable_size(p) }
}

/// A resize of a possibly sampled block, or one that reached the sample point:
/// for accounting, a free of the old block and a new allocation.
///
/// # Safety
/// `p` is null or a live block (of the arena or the next allocator);
/// `resize` resizes a block of the next allocator to `size` bytes and returns
/// the new block or null.
#[cold]
#[inline(never)]
unsafe fn resize_sampled(
    p: Ptr,
    size: usize,
    crossed: bool,
    resize: impl FnOnce(Ptr) -> Ptr,
) -> Ptr {
    let q = if bootstrap::owns(p) {
        // SAFETY: `p` is live and the arena's.
        unsafe { move_out_of_bootstrap(p, size) }
    } else {
        // Out of the live set before the block can return to the allocator.
        let old = if p.is_null() {
            None
        } else {
            live::remove(p as usize)
        };
        let q = resize(p);
        if q.is_null() && size != 0 {
            // The resize failed and the old block is still live.
            if let Some(e) = old {
                live::insert(e);
            }
        }
        q
    };
    if crossed && sampling::decide(size) && !q.is_null() {
        // SAFETY: `q` is the block of `size` bytes just returned.
        unsafe { sampled::record(q, size, Api::Realloc) };
    }
    q
}

/// # Safety
/// `p` is a live block of the bootstrap arena.
unsafe fn move_out_of_bootstrap(p: Ptr, size: usize) -> Ptr {
    // SAFETY: malloc has no precondition.
    let q = unsafe { next::malloc(size) };
    if !q.is_null() {
        // SAFETY: `p` is the arena's block (its recorded size readable before
        // it) and `q` a fresh, distinct block: both hold the smaller size.
        unsafe {
            let n = bootstrap::size_of(p).min(size);
            core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, n);
        }
    }
    q
}
