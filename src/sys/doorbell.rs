//! Futex words that wake a waiting thread: ringing one is one atomic add
//! and one system call, both async-signal-safe, and no file descriptor a
//! daemon could close is involved. `ring`/`current`/`wait` are the
//! collector's bell; a `Bell` of its own serves anyone else who waits.

use core::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct Bell(AtomicU32);

/// The collector thread's bell.
static COLLECTOR: Bell = Bell::new();

impl Bell {
    pub const fn new() -> Bell {
        Bell(AtomicU32::new(0))
    }

    /// Safe to call from a signal handler, and from the helper of
    /// `collect::single`: a raw system call, `errno` untouched.
    pub fn ring(&self) {
        self.0.fetch_add(1, Ordering::Release);
        crate::sys::raw::sys!(
            libc::SYS_futex,
            self.0.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX
        );
    }

    pub fn current(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    /// Sleeps until the bell rings after `seen` was read, or `timeout`
    /// passes (or a signal interrupts: callers loop on their condition).
    pub fn wait(&self, seen: u32, timeout: Duration) {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT on this bell's word with a valid timeout.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.0.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                seen,
                &ts as *const libc::timespec,
            );
        }
    }
}

/// Wakes the collector. Safe to call from a signal handler.
pub fn ring() {
    COLLECTOR.ring();
}

pub fn current() -> u32 {
    COLLECTOR.current()
}

/// The collector's futex word, for the helper of `collect::single`, which
/// waits on it with a raw system call.
pub fn word() -> *const u32 {
    COLLECTOR.0.as_ptr()
}

/// Sleeps until the collector's bell rings after `seen`, or `timeout`.
pub fn wait(seen: u32, timeout: Duration) {
    COLLECTOR.wait(seen, timeout);
}
