//! Wakes the collector thread: a futex word, so ringing it is one atomic add
//! and one system call, both async-signal-safe, and no file descriptor a
//! daemon could close is involved.

use core::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static BELL: AtomicU32 = AtomicU32::new(0);

/// Safe to call from a signal handler; preserves `errno`.
pub fn ring() {
    BELL.fetch_add(1, Ordering::Release);
    // SAFETY: the futex call only names a static word.
    crate::sys::errno::preserved(|| unsafe {
        libc::syscall(
            libc::SYS_futex,
            BELL.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    });
}

pub fn current() -> u32 {
    BELL.load(Ordering::Acquire)
}

/// Sleeps until the bell rings after `seen` was read, or `timeout` passes.
pub fn wait(seen: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a static word with a valid timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            BELL.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            &ts as *const libc::timespec,
        );
    }
}
