//! Memory the program gets outside `mmap`: System V shared memory segments
//! it attaches (`shmat`, `shmdt`), kind `shm`, and the program break it
//! moves itself (`brk`, `sbrk`), kind `brk`. Sampled and tracked as its
//! mappings are (`table`).
//!
//! glibc's malloc moves the break with internal calls that never reach the
//! interposed `brk`/`sbrk`, so the heap is not counted twice; an allocator
//! that calls `sbrk` itself is told apart by its caller, as for `mmap`.
//! Break ranges count in bytes (the break need not sit on a page boundary),
//! segments in whole pages, their size read with `shmctl(IPC_STAT)` before
//! each `shmat`: one system call more on a call that is rare.

use crate::hook::sampled;
use crate::mapped::table::{self, Kind};
use crate::next;
use crate::sample::{sampling, thread_state};
use crate::unwind::stack::Stack;
use core::ffi::{c_int, c_void};

type Ptr = *mut c_void;

/// Looks up the next definitions before sampling starts (see `table::init`).
pub fn init() {
    for slot in [
        next::slot::shmat.symbol(),
        next::slot::shmdt.symbol(),
        next::slot::brk.symbol(),
        next::slot::sbrk.symbol(),
    ] {
        slot.address();
    }
}

/// # Safety
/// As shmat(2).
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn shmat(id: c_int, addr: *const c_void, flags: c_int) -> Ptr {
    let size = table::pages(crate::sys::raw::shm_size(id));
    let crossed = size != 0 && thread_state::crosses(size);
    let replaces = flags & libc::SHM_REMAP != 0 && table::overlaps(addr as usize, size);
    // SAFETY: the program's arguments, unchanged.
    let call = || unsafe { next::slot::shmat.get()(id, addr, flags) };
    if !crossed && !replaces {
        return call();
    }
    let kind = Some(Kind::Shm);
    crate::hook::mapping::track_new(
        size,
        kind,
        crossed,
        replaces,
        sampled::Api::Shmat.address(),
        call,
    )
}

/// # Safety
/// As shmdt(2).
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn shmdt(addr: *const c_void) -> c_int {
    // SAFETY: the program's argument, unchanged.
    let call = || unsafe { next::slot::shmdt.get()(addr) };
    // Its size is not known here (its head may be unmapped already): any
    // range tracked above `addr` may be part of it.
    if !table::overlaps(addr as usize, usize::MAX) {
        return call();
    }
    table::with_table(|t| {
        let rc = call();
        if rc == 0 {
            t.remove_segment(addr as usize);
        }
        rc
    })
}

/// # Safety
/// As sbrk(2).
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn sbrk(increment: isize) -> Ptr {
    // SAFETY: the program's argument, unchanged.
    let call = || unsafe { next::slot::sbrk.get()(increment) };
    let crossed = increment > 0 && thread_state::crosses(increment.unsigned_abs());
    if !crossed && (increment >= 0 || !table::tracks_any()) {
        return call();
    }
    let old = break_slow(
        increment.unsigned_abs(),
        crossed,
        sampled::Api::Sbrk.address(),
        || {
            let old = call();
            (old != libc::MAP_FAILED)
                .then(|| (old as usize, (old as usize).wrapping_add_signed(increment)))
        },
    );
    old.map_or(libc::MAP_FAILED, |(old, _)| old as Ptr)
}

/// # Safety
/// As brk(2).
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn brk(addr: Ptr) -> c_int {
    // SAFETY: sbrk(0) only reads the break.
    let (old, new) = (unsafe { next::slot::sbrk.get()(0) } as usize, addr as usize);
    // SAFETY: the program's argument, unchanged.
    let call = || unsafe { next::slot::brk.get()(addr) };
    let crossed = new > old && thread_state::crosses(new - old);
    if !crossed && (new >= old || !table::tracks_any()) {
        return call();
    }
    let moved = break_slow(
        new.abs_diff(old),
        crossed,
        sampled::Api::Brk.address(),
        || (call() == 0).then_some((old, new)),
    );
    if moved.is_some() {
        0
    } else {
        -1
    }
}

/// A move of the break by `size` bytes, made at exported function `entry`,
/// that reached the sample point (`crossed`, growing) or may give back
/// tracked memory. `call` moves it, and says from where to where (None if
/// it failed). Nothing here allocates (see `sampled::record_break`).
#[cold]
#[inline(never)]
fn break_slow(
    size: usize,
    crossed: bool,
    entry: usize,
    call: impl FnOnce() -> Option<(usize, usize)>,
) -> Option<(usize, usize)> {
    let mut stack = Stack::new();
    let sampled = crossed
        && sampling::decide(size)
        && sampling::while_busy(|| sampled::capture_mapped(entry, &mut stack));
    table::with_table(|t| {
        let moved = call();
        crate::sys::errno::preserved(|| match moved {
            Some((old, new)) if new > old && sampled => {
                let size = new - old;
                let seq = t.mapped_at(old, size, Some((table::PENDING, Kind::Brk)));
                // Handed on without waiting or allocating, under the lock
                // (see `sampled::record_break`).
                if !sampled::record_break(seq, size, &stack) {
                    t.set_stack(seq, None);
                }
            }
            Some((old, new)) => {
                t.remove_range(old.min(new), old.max(new));
            }
            None => {}
        });
        moved
    })
}
