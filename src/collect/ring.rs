//! The lock-free ring that carries sampled stacks from allocating threads to
//! the collector thread: heap samples and mapped ones (`Sample::kind`).

use crate::mapped::table::Kind;
use crate::unwind::stack::Stack;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use crossbeam_queue::ArrayQueue;

/// Records in flight at most; about 1 KiB each.
const CAPACITY: usize = 1024;
/// How long a producer waits for room before dropping a sample. A full ring
/// means the collector is behind (e.g. with `LEAKPROBE_SAMPLE=1`, or while it
/// writes a large dump): waiting keeps such runs exact. After one wait times
/// out the collector counts as stalled and producers drop at once, until it
/// takes from the ring again, so a stuck collector costs one wait, not one
/// per sample.
const MAX_WAIT_NS: u64 = 1_000_000_000;

#[derive(Clone)]
pub struct Sample {
    /// The live entry's (heap) or the tracked range's (mapped) sequence.
    pub seq: u64,
    /// The heap block; for a mapped sample, its kind's code (`mapped`),
    /// below any address a block can have: the heap's sampled path then
    /// writes no more than it did before mapped samples took the ring.
    pub ptr: usize,
    pub size: usize,
    pub stack: Stack,
}

impl Sample {
    /// A mapped sample of `kind` (tracked in `mapped::table` as `seq`).
    pub fn mapped(kind: Kind, seq: u64, size: usize, stack: Stack) -> Sample {
        Sample {
            seq,
            ptr: kind as usize + 1,
            size,
            stack,
        }
    }

    /// None for the heap; a mapped sample's kind.
    #[inline(always)]
    pub fn kind(&self) -> Option<Kind> {
        match self.ptr {
            0 => None,
            code => Kind::ALL.get(code - 1).copied(),
        }
    }
}

static RING: AtomicPtr<ArrayQueue<Sample>> = AtomicPtr::new(core::ptr::null_mut());
static STALLED: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static DROPPED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Creates a fresh ring (at load, and in a child after `fork`, where a push
/// interrupted by the fork could leave a slot that never completes). A ring
/// it replaces is leaked on purpose: another thread may still hold it.
pub fn renew() {
    let fresh = Box::into_raw(Box::new(ArrayQueue::new(CAPACITY)));
    RING.store(fresh, Ordering::Release);
}

fn ring() -> Option<&'static ArrayQueue<Sample>> {
    // SAFETY: rings are never freed (see `renew`).
    unsafe { RING.load(Ordering::Acquire).as_ref() }
}

/// Hands a sample to the collector. False if it had to be dropped (counted).
pub fn push(mut sample: Sample, wake: impl Fn()) -> bool {
    let Some(ring) = ring() else {
        return count_drop(sample.size);
    };
    let mut waited = 0u64;
    let mut pause = 10_000u64;
    loop {
        match ring.push(sample) {
            Ok(()) => {
                if ring.len() * 2 >= CAPACITY {
                    wake();
                }
                return true;
            }
            Err(back) => sample = back,
        }
        if STALLED.load(Ordering::Relaxed) {
            return count_drop(sample.size);
        }
        if waited >= MAX_WAIT_NS {
            STALLED.store(true, Ordering::Relaxed);
            return count_drop(sample.size);
        }
        wake();
        // On a sampled path only.
        crate::sys::clock::sleep(std::time::Duration::from_nanos(pause));
        waited += pause;
        pause = (pause * 2).min(5_000_000);
    }
}

/// `push` without waiting for room: for a sample taken where the thread
/// must not sleep or allocate (a move of the program break, which a
/// single-threaded program's ring may hold until its next heap sample).
pub fn push_now(sample: Sample) -> bool {
    let size = sample.size;
    match ring() {
        Some(ring) if ring.push(sample).is_ok() => true,
        _ => count_drop(size),
    }
}

fn count_drop(size: usize) -> bool {
    DROPPED.fetch_add(1, Ordering::Relaxed);
    DROPPED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    false
}

/// Bytes the ring holds (all of it is allocated up front).
pub fn bytes() -> usize {
    CAPACITY * core::mem::size_of::<Sample>()
}

pub fn pop() -> Option<Sample> {
    let sample = ring()?.pop()?;
    if STALLED.load(Ordering::Relaxed) {
        STALLED.store(false, Ordering::Relaxed);
    }
    Some(sample)
}

/// Samples dropped so far: (count, requested bytes).
pub fn dropped() -> (u64, u64) {
    (
        DROPPED.load(Ordering::Relaxed),
        DROPPED_BYTES.load(Ordering::Relaxed),
    )
}
