//! Which collector runs: the collector thread, or, in a single-threaded
//! program, the helper of `single`. A leaf of `collect`, so that the
//! collector, the requests and the signal handler ask and wake without
//! depending on `single` (which depends on them).

use crate::next;
use crate::settings::{self, Settings};
use crate::sys::raw;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};

static SINGLE: AtomicBool = AtomicBool::new(false);

/// The helper's thread id (written by the kernel: `CLONE_PARENT_SETTID`,
/// cleared when it exits: `CLONE_CHILD_CLEARTID`); 0 when there is none.
pub static HELPER_TID: AtomicI32 = AtomicI32::new(0);
/// The signal the helper waits for (it says which).
pub static HELPER_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// glibc's `__libc_single_threaded`.
static GLIBC_SINGLE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
/// What starts the helper (`single::register`).
static START: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Whether single-threaded mode is on.
#[inline]
pub fn active() -> bool {
    SINGLE.load(Ordering::Relaxed)
}

pub fn set_active(on: bool) {
    SINGLE.store(on, Ordering::Release);
}

/// Ends the mode; true for the one caller that ended it.
pub fn take_over() -> bool {
    SINGLE
        .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

pub fn set_start(f: fn() -> Result<(), i32>) {
    START.store(f as *mut (), Ordering::Release);
}

/// Starts the helper; the error if there is none to start (`ENOSYS`) or it
/// cannot be made.
pub fn start_helper() -> Result<(), i32> {
    let f = START.load(Ordering::Acquire);
    if f.is_null() {
        return Err(libc::ENOSYS);
    }
    // SAFETY: only ever set from a `fn() -> Result<(), i32>` (`set_start`).
    let start: fn() -> Result<(), i32> = unsafe { crate::sys::dl::function(f.cast()) };
    start()
}

/// Why a thread or a process copy could not be made, from `clone`'s (or
/// `pthread_create`'s) error: in the words of its usual cause.
pub struct CloneError(pub i32);

impl core::fmt::Display for CloneError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            libc::EPERM => f.write_str("EPERM, forbidden: a seccomp filter?"),
            libc::EAGAIN => f.write_str("EAGAIN: the limit of processes (RLIMIT_NPROC) reached?"),
            libc::ENOMEM => f.write_str("ENOMEM: no memory to commit (vm.overcommit_memory=2?)"),
            e => write!(f, "error {e}"),
        }
    }
}

/// Wakes the helper, in single-threaded mode (a request, a change of the
/// program's disposition). Async-signal-safe.
pub fn wake() {
    if active() {
        wake_helper();
    }
}

/// The dump signal sent to the helper's thread: only it can take that, and
/// it sends nothing else to itself. Async-signal-safe.
pub fn wake_helper() {
    let tid = HELPER_TID.load(Ordering::Relaxed);
    let sig = HELPER_SIGNAL.load(Ordering::Relaxed);
    if tid > 0 && sig > 0 {
        raw::tgkill(tid, sig);
    }
}

/// Whether the library should start in single-threaded mode: allowed by
/// the setting, on glibc (whose malloc has the fast paths; the snapshot
/// child reads its statistics), with the program single-threaded so far.
pub fn wanted(cfg: &Settings) -> bool {
    if cfg.thread != settings::Thread::Auto || !cfg!(target_arch = "x86_64") {
        return false;
    }
    // Dumps written on their own (period, interval, peak) would each cost
    // a copy of the process: those settings keep the collector thread.
    if cfg.dump_every_secs > 0 || cfg.dump_every_bytes > 0 || cfg.peak {
        return false;
    }
    if !next::allocator_name().contains("libc.so") {
        return false;
    }
    let flag = crate::sys::dl::lookup(crate::sys::dl::Scope::Global, c"__libc_single_threaded");
    GLIBC_SINGLE.store(flag.cast(), Ordering::Relaxed);
    glibc_single() && threads() == Some(1)
}

pub fn glibc_single() -> bool {
    // SAFETY: glibc's flag, a byte that lives as long as the process.
    unsafe { GLIBC_SINGLE.load(Ordering::Relaxed).as_ref() }.is_some_and(|&f| f != 0)
}

/// Threads in the process, from /proc (raw system calls).
pub fn threads() -> Option<u32> {
    let mut buf = [0u8; 2048];
    let text = raw::read_file(c"/proc/self/status", &mut buf)?;
    let at = text.windows(8).position(|w| w == b"Threads:")?;
    let digits = text[at + 8..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit());
    Some(digits.fold(0u32, |n, d| {
        n.wrapping_mul(10).wrapping_add(u32::from(d - b'0'))
    }))
}
