//! The program's `errno` across work the library does inside its calls (a
//! `malloc` that succeeds leaves `errno` alone) or in a signal handler.

/// Runs `f`, then puts this thread's `errno` back as it was.
/// Async-signal-safe when `f` is.
pub fn preserved<R>(f: impl FnOnce() -> R) -> R {
    let saved = get();
    let result = f();
    set(saved);
    result
}

/// Sets this thread's `errno` (a C function's failure reported the C way).
pub fn set(e: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// This thread's `errno`.
pub fn get() -> libc::c_int {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() }
}
