//! A small static arena for allocations made while the next allocator's
//! symbols are being resolved (`dlsym` may call `calloc`). Its blocks are
//! never reused, so they are already zeroed, and `free` ignores them.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

const SIZE: usize = 256 * 1024;
const HEADER: usize = 16;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; SIZE]>);

// SAFETY: disjoint ranges are handed out by an atomic bump pointer.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; SIZE]));
static USED: AtomicUsize = AtomicUsize::new(0);

fn base() -> usize {
    ARENA.0.get() as usize
}

/// A block of `size` bytes aligned to `align` (a power of two), or null with
/// `ENOMEM` when the arena is exhausted.
pub fn alloc(size: usize, align: usize) -> *mut c_void {
    let align = align.max(HEADER);
    let mut used = USED.load(Ordering::Relaxed);
    loop {
        // The size and alignment are the caller's: checked, never a panic.
        let fits = |start: usize| Some((start, start.checked_add(size)?));
        let placed = (base() + used + HEADER)
            .checked_next_multiple_of(align)
            .and_then(|at| fits(at - base()));
        let (start, end) = match placed {
            Some((start, end)) if end <= SIZE => (start, end),
            _ => {
                crate::sys::errno::set(libc::ENOMEM);
                return core::ptr::null_mut();
            }
        };
        match USED.compare_exchange_weak(used, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                let p = (base() + start) as *mut u8;
                // SAFETY: [start - HEADER, end) lies in the arena and is ours.
                unsafe { (p.sub(HEADER) as *mut usize).write(size) };
                crate::sample::live::mark_always_checked(p as usize);
                return p.cast();
            }
            Err(now) => used = now,
        }
    }
}

pub fn owns(p: *const c_void) -> bool {
    (p as usize).wrapping_sub(base()) < SIZE
}

/// Whether any block was ever handed out: in most programs none (`malloc`'s
/// next definition is known before any lookup that could fail and allocate
/// its message), so `malloc_usable_size`, which redis calls around every
/// allocation, tests one word instead of the range. A block is handed out
/// after `USED` moved, so whoever holds one sees it moved.
pub fn ever_used() -> bool {
    USED.load(Ordering::Relaxed) != 0
}

/// The size requested for a block of this arena.
///
/// # Safety
/// `p` must have been returned by `alloc` (so `owns(p)` holds).
pub unsafe fn size_of(p: *const c_void) -> usize {
    // SAFETY: `alloc` wrote the size in the header just before the block.
    unsafe { (p as *const u8).sub(HEADER).cast::<usize>().read() }
}
