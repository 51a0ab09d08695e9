//! `fork`, interposed so that a child restarts its collector once every
//! atfork child handler (the allocator's too) has run.

/// `fork()` as the program calls it: in the child, once every atfork child
/// handler (the allocator's too) has run, the collector thread is restarted,
/// so even a child that never allocates answers the dump signal. Forks that
/// do not go through this symbol (glibc's `daemon()`) restart it on the
/// child's first sampled allocation.
///
/// # Safety
/// As fork(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn fork() -> libc::pid_t {
    // SAFETY: fork takes no arguments; the handlers of `pthread_atfork` run.
    let pid = unsafe { crate::next::slot::fork.get()() };
    if pid == 0 {
        crate::collect::signal::forget_children();
        crate::collect::collector::ensure_running();
    } else if pid > 0 {
        crate::collect::signal::note_child(pid);
    }
    pid
}
