//! Call-stack capture for a sampled allocation.
//!
//! Frame 0 of every stack is an address inside the library's own exported
//! entry point (`malloc`, `calloc`, ...): jeprof and pprof both recognise
//! those names as allocator frames and drop them, and both then subtract 1
//! from the caller frames, which puts the allocating line on the call itself.
//! The library's internal frames are skipped by address range, so inlining
//! decisions cannot leak them into a stack.

use crate::unwind::registered_frames;
use crate::unwind::walk::{self, Walk};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Upper bound of `LEAKPROBE_MAX_FRAMES` (jemalloc's PROF_BT_MAX is the same).
pub use crate::settings::FRAMES_LIMIT;

static OWN_START: AtomicUsize = AtomicUsize::new(0);
static OWN_END: AtomicUsize = AtomicUsize::new(0);

/// Frames a stack may hold: the entry-point marker and `LEAKPROBE_MAX_FRAMES`.
pub fn max_len() -> usize {
    crate::settings::get().map_or(FRAMES_LIMIT, |s| s.max_frames.clamp(1, FRAMES_LIMIT)) + 1
}

/// Frames of one stack: the first `len`, frame 0 the entry-point marker.
/// The room past them is never written before use (a sample's stack is
/// made on each sampled path, and zeroing it took 80 instructions).
#[derive(Clone)]
pub struct Stack {
    len: usize,
    frames: [MaybeUninit<usize>; FRAMES_LIMIT + 1],
}

impl Stack {
    /// A stack of no frames. (A `const` of it would be all zeros, and
    /// written as such.)
    #[inline(always)]
    pub fn new() -> Stack {
        Stack {
            len: 0,
            frames: [MaybeUninit::uninit(); FRAMES_LIMIT + 1],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn frames(&self) -> &[usize] {
        // SAFETY: the first `len` (<= the array's length: `push`) are written.
        unsafe { &*(&self.frames[..self.len] as *const [MaybeUninit<usize>] as *const [usize]) }
    }

    pub fn frames_mut(&mut self) -> &mut [usize] {
        // SAFETY: as in `frames`.
        unsafe { &mut *(&mut self.frames[..self.len] as *mut [MaybeUninit<usize>] as *mut [usize]) }
    }

    /// Appends a frame; false (and nothing kept) when the stack has `max`
    /// frames or is full.
    pub fn push(&mut self, frame: usize, max: usize) -> bool {
        match self.frames.get_mut(self.len).filter(|_| self.len < max) {
            Some(slot) => {
                slot.write(frame);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Keeps the first `len` frames (`len` <= `len()`).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Captures the stack of the current allocation, whose exported entry point
/// (the function the program called) starts at `entry`: with the caching
/// unwinder (`unwind`), or with libgcc's when that one cannot follow it
/// (and libgcc is safe to call: `registered_frames`).
#[inline(always)]
pub fn capture(entry: usize, out: &mut Stack) {
    out.len = 0;
    out.push(entry + 1, 1);
    let walked = walk::enabled().then(|| walk::walk(&mut Collect::new(out).frame()));
    match walked {
        Some(Walk::Complete) => FAST.fetch_add(1, Ordering::Relaxed),
        Some(Walk::Stopped) if registered_frames::any() => {
            CUT_SHORT.fetch_add(1, Ordering::Relaxed)
        }
        _ => {
            with_libgcc(out);
            0
        }
    };
}

/// `capture` by libgcc's unwinder, out of line (`capture` is inlined).
#[inline(never)]
fn with_libgcc(out: &mut Stack) {
    LIBGCC.fetch_add(1, Ordering::Relaxed);
    out.truncate(1);
    let mut frame = Collect::new(out).frame();
    // SAFETY: the unwinder is reentrant; we hold no lock it could need, and
    // libgcc on glibc >= 2.35 finds FDEs with _dl_find_object, lock-free.
    unsafe { backtrace::trace_unsynchronized(|f| frame(f.ip() as usize)) };
}

/// Stacks captured so far: (by the caching unwinder, by libgcc, cut short
/// where the caching unwinder stopped).
pub fn unwound() -> (u64, u64, u64) {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    (n(&FAST), n(&LIBGCC), n(&CUT_SHORT))
}

static FAST: AtomicU64 = AtomicU64::new(0);
static LIBGCC: AtomicU64 = AtomicU64::new(0);
static CUT_SHORT: AtomicU64 = AtomicU64::new(0);

/// Appends an unwinder's frames to a stack, past the library's own.
struct Collect<'a> {
    out: &'a mut Stack,
    own: core::ops::Range<usize>,
    in_library: bool,
    max: usize,
}

impl<'a> Collect<'a> {
    fn new(out: &'a mut Stack) -> Self {
        Collect {
            out,
            own: OWN_START.load(Ordering::Relaxed)..OWN_END.load(Ordering::Relaxed),
            in_library: true,
            max: max_len(),
        }
    }

    /// Takes one frame's address; false once the stack is complete.
    fn frame(mut self) -> impl FnMut(usize) -> bool + 'a {
        move |ip| {
            if self.in_library && self.own.contains(&ip) {
                return true;
            }
            self.in_library = false;
            if ip == 0 {
                return false;
            }
            // Whatever an unwinder does, the stack ends at `max`.
            self.out.push(ip, self.max) && self.out.len < self.max
        }
    }
}

/// Records the address range of the library's own code, so its frames can be
/// skipped. Runs once at load, before sampling starts.
pub fn init_own_range() {
    let Some(info) = crate::sys::dl::info_of(init_own_range as *mut ()) else {
        return;
    };
    let own = info.dli_fbase as u64;
    let (mut start, mut end) = (0u64, 0u64);
    crate::sys::dl::each_object(|o| {
        let maps_own = o.base == own
            || o.headers.iter().any(|h| {
                let lo = o.base.wrapping_add(h.p_vaddr);
                h.p_type == libc::PT_LOAD && lo <= own && own < lo.wrapping_add(h.p_memsz)
            });
        if !maps_own {
            return;
        }
        for (lo, hi, _) in o.code_segments() {
            start = if start == 0 { lo } else { start.min(lo) };
            end = end.max(hi);
        }
    });
    OWN_START.store(start as usize, Ordering::Relaxed);
    OWN_END.store(end as usize, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walker_that_goes_on_cannot_write_past_the_stack() {
        let mut out = Stack::new();
        let mut frame = Collect::new(&mut out).frame();
        // A walker that ignores "complete" and keeps giving frames.
        for ip in 1..3 * FRAMES_LIMIT {
            frame(ip);
        }
        drop(frame);
        assert_eq!(out.len, FRAMES_LIMIT + 1);
        assert_eq!(out.frames().len(), FRAMES_LIMIT + 1);
    }
}
