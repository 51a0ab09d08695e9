//! A minimal spin lock with explicit lock/unlock, usable from allocator hooks
//! (no allocation, no futex word owned by a thread) and across `fork` (the
//! forking thread can release what it took in the prepare handler).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through `with`/`locked`, which hold `locked`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    pub fn try_acquire(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    pub fn acquire(&self) {
        let mut spins = 0u32;
        while !self.try_acquire() {
            spins = spins.saturating_add(1);
            if spins < 100 {
                core::hint::spin_loop();
            } else {
                // The holder may be descheduled: let it run.
                crate::sys::raw::yield_now();
            }
        }
    }

    /// For a thread that must not wait forever, nor call glibc (the helper
    /// of `collect::single`): tries `tries` times, with `pause` between.
    pub fn try_acquire_for(&self, tries: u32, pause: impl Fn()) -> bool {
        (0..tries).any(|_| self.try_acquire() || (pause(), false).1)
    }

    pub fn release(&self) {
        self.locked.store(false, Ordering::Release);
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.acquire();
        // SAFETY: we hold the lock, so this is the only reference.
        let r = f(unsafe { &mut *self.value.get() });
        self.release();
        r
    }

    /// Access for a caller that already holds the lock (`acquire`d it).
    ///
    /// # Safety
    /// The caller must hold the lock and not create a second reference.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn held(&self) -> &mut T {
        // SAFETY: the caller holds the lock and no other reference (the
        // contract).
        unsafe { &mut *self.value.get() }
    }
}
