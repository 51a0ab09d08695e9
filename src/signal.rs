//! The dump signal: its handler only counts the request and rings the
//! doorbell; the collector thread does the work.

use crate::doorbell;
use core::sync::atomic::{AtomicU32, Ordering};

static REQUESTS: AtomicU32 = AtomicU32::new(0);

pub fn install(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction with a valid handler, flags and empty mask.
    let ok = unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_dump_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, core::ptr::null_mut()) == 0
    };
    if !ok {
        crate::log::log!("cannot install a handler for signal {sig}; dumps on signal are off");
    }
}

extern "C" fn on_dump_signal(
    _sig: libc::c_int,
    _info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    doorbell::ring();
}

/// Dump requests received so far.
pub fn requests() -> u32 {
    REQUESTS.load(Ordering::Relaxed)
}
