//! `fork` under the library: samples under way finish and the ring is
//! drained into the collector's tables before the fork, so the child has
//! every block sampled before it, with its stack; the child gets a
//! collector of its own.

use super::{Collector, LOST, NEEDS_THREAD, STATE};
use crate::collect::request::REQUESTS;
use crate::collect::ring;
use crate::sample::live;
use crate::settings;
use crate::sys::clock;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Set while a fork waits for the state lock: the collector then stays out,
/// so a stream of dump requests cannot starve the fork.
pub static FORK_PENDING: AtomicBool = AtomicBool::new(false);
/// Set by the fork prepare handler when it got the state lock.
static FORK_HAS_STATE: AtomicBool = AtomicBool::new(false);
/// Set while a fork is prepared: new samples wait, so that every sample is
/// either in the ring (drained before the fork) or not begun.
static FORK_GATE: AtomicBool = AtomicBool::new(false);
/// Samples between their live-table insert and their ring push.
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);

/// A sample being recorded (see `FORK_GATE`): a shared counter, touched on
/// the sampled path only.
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> InFlight {
        loop {
            while FORK_GATE.load(Ordering::SeqCst) {
                crate::sys::raw::yield_now();
            }
            IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
            if !FORK_GATE.load(Ordering::SeqCst) {
                return InFlight(());
            }
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Registered with `pthread_atfork` when the collector starts.
pub fn register() {
    crate::sys::process::at_fork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
}

/// Before `fork`: take, with a bounded wait, the collector's state, then the
/// live-table locks (whose holders never wait on anything), so the child
/// inherits consistent tables.
extern "C" fn fork_prepare() {
    // Samples under way finish (a push waits at most a second for room),
    // and no new one starts: the child then inherits each sample whole.
    FORK_GATE.store(true, Ordering::SeqCst);
    for _ in 0..2000 {
        if IN_FLIGHT.load(Ordering::SeqCst) == 0 {
            break;
        }
        clock::sleep(Duration::from_micros(500));
    }
    FORK_PENDING.store(true, Ordering::Release);
    // The collector takes shard locks while it holds the state lock: take
    // them in the same order, or each would wait for the other.
    let mut got = STATE.try_acquire();
    for _ in 0..1000 {
        if got {
            break;
        }
        clock::sleep(Duration::from_millis(1));
        got = STATE.try_acquire();
    }
    FORK_HAS_STATE.store(got, Ordering::Relaxed);
    if got {
        // What the collector had not taken yet is interned now, so the
        // child (whose ring starts empty) has every stack.
        // SAFETY: the state lock is held.
        if let Some(c) = unsafe { STATE.held() } {
            while c.absorb(usize::MAX) {}
        }
    }
    live::lock_all();
}

extern "C" fn fork_parent() {
    FORK_GATE.store(false, Ordering::SeqCst);
    if FORK_HAS_STATE.load(Ordering::Relaxed) {
        STATE.release();
    }
    live::unlock_all();
    FORK_PENDING.store(false, Ordering::Release);
}

extern "C" fn fork_child() {
    FORK_GATE.store(false, Ordering::SeqCst);
    IN_FLIGHT.store(0, Ordering::SeqCst);
    FORK_PENDING.store(false, Ordering::Release);
    live::unlock_all();
    ring::renew();
    if !FORK_HAS_STATE.load(Ordering::Relaxed) {
        // The collector was mid-update when the process forked: its state
        // cannot be trusted in the child. Start afresh; stacks of inherited
        // live samples are lost (reported as unresolved).
        let mut lost = Vec::new();
        live::snapshot(&mut lost);
        for e in lost {
            live::update(e.ptr, e.seq, |e| e.stack = LOST);
        }
        crate::mapped::table::lose_stacks(LOST);
        // SAFETY: the child has one thread; the old holder no longer exists.
        // The old state is leaked, not dropped: it may be half-updated.
        let old = core::mem::replace(unsafe { STATE.held() }, settings::get().map(Collector::new));
        core::mem::forget(old);
    }
    // Requests pending at the fork were the parent's, not the child's.
    // SAFETY: the child has one thread, which holds the lock here.
    if let Some(c) = unsafe { STATE.held() } {
        c.requests_served = REQUESTS.asked();
    }
    STATE.release();
    NEEDS_THREAD.store(true, Ordering::Relaxed);
    // The published record names this process.
    crate::profile::published::forked();
}
