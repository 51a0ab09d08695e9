//! Clocks, read through the vDSO (no system call), and sleeping.

use std::time::Duration;

#[inline(always)]
fn timespec(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

fn read(clock: libc::clockid_t) -> Duration {
    let ts = timespec(clock);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The nanoseconds within the second of the fine monotonic clock: the
/// entropy a thread's sampling seed takes (on the sampled path).
#[inline(always)]
pub fn fine_nanos() -> u32 {
    timespec(libc::CLOCK_MONOTONIC).tv_nsec as u32
}

/// Time since boot, coarse (a few ms resolution).
pub fn monotonic() -> Duration {
    read(libc::CLOCK_MONOTONIC_COARSE)
}

/// Wall-clock time since the Unix epoch.
pub fn wall() -> Duration {
    read(libc::CLOCK_REALTIME)
}

/// Sleeps for `d` (less if a signal interrupts it: callers loop on a
/// condition).
pub fn sleep(d: Duration) {
    let ts = libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: nanosleep reads a valid timespec; no remainder wanted.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}
