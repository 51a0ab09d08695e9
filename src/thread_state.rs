//! Per-thread state. Zero-initialised with no destructor, so a thread's first
//! allocator call (even a `free`) needs no set-up, and nothing is left behind
//! when a thread exits.

use core::cell::Cell;

pub struct ThreadState {
    /// Bytes this thread may still allocate before the next sample point.
    /// Zero in a new thread, so its first allocation takes the slow path,
    /// which draws the first gap.
    pub until_sample: Cell<usize>,
    /// Set while the library works on this thread's behalf (or for good on
    /// the collector thread): nested allocations are never sampled.
    pub busy: Cell<bool>,
    /// xorshift state; zero means "not seeded yet".
    pub rng: Cell<u64>,
}

thread_local! {
    static STATE: ThreadState = const {
        ThreadState { until_sample: Cell::new(0), busy: Cell::new(false), rng: Cell::new(0) }
    };
}

/// Counts `size` bytes down. True when the allocation reaches the next sample
/// point and must take the slow path; the countdown is then left as is.
#[inline(always)]
pub fn crosses(size: usize) -> bool {
    STATE.with(|s| {
        let left = s.until_sample.get();
        if size < left {
            s.until_sample.set(left - size);
            false
        } else {
            true
        }
    })
}

pub fn with<R>(f: impl FnOnce(&ThreadState) -> R) -> R {
    STATE.with(f)
}
