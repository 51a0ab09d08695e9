//! The program's `errno` across work the library does inside its calls (a
//! `malloc` that succeeds leaves `errno` alone) or in a signal handler.

/// Runs `f`, then puts this thread's `errno` back as it was.
/// Async-signal-safe when `f` is.
pub fn preserved<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: __errno_location returns this thread's errno.
    let saved = unsafe { *libc::__errno_location() };
    let result = f();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
    result
}
