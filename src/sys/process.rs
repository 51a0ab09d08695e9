//! The process as glibc describes it: the auxiliary vector, the page size,
//! the stack limit, the effective user and its name, the environment, and
//! the handlers that run at `fork` and at exit.

use core::ffi::CStr;

/// Whether the kernel runs the process in secure-execution mode (set-uid or
/// with capabilities gained at `exec`): its environment is another user's.
pub fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// An entry of the auxiliary vector (0 if absent).
pub fn aux(kind: libc::c_ulong) -> usize {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(kind) as usize }
}

/// The path `execve` was given (`AT_EXECFN`), if the kernel passed it.
pub fn exec_path() -> Option<&'static CStr> {
    // SAFETY: getauxval has no preconditions.
    let p = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const libc::c_char;
    // SAFETY: not null, so a NUL-terminated string on the initial stack,
    // which lives as long as the process.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
}

/// The size of a memory page.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // The only failure is -1, for a name glibc does not know.
    usize::try_from(page).unwrap_or(4096)
}

/// The soft limit of the main thread's stack size, if it can be read.
pub fn stack_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// The effective user id.
pub fn euid() -> libc::uid_t {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The name of user `uid` in the password database (may allocate, read
/// files, or ask a name service: not for the sampled path).
pub fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into `buf`.
    let mut pwd: libc::passwd = unsafe { core::mem::zeroed() };
    let mut found: *mut libc::passwd = core::ptr::null_mut();
    // SAFETY: out storage of ours, `buf` with its true length.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated name in `buf`, which is still alive.
    Some(
        unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Sets the environment variable `name` to `value`, or removes it (`None`).
///
/// # Safety
/// No other thread reads or changes the environment meanwhile (glibc's
/// `getenv` takes no lock): call it while the library loads.
pub unsafe fn set_env(name: &CStr, value: Option<&CStr>) {
    // SAFETY: NUL-terminated strings; nothing else uses the environment
    // (the contract).
    unsafe {
        match value {
            Some(value) => libc::setenv(name.as_ptr(), value.as_ptr(), 1),
            None => libc::unsetenv(name.as_ptr()),
        }
    };
}

/// A handler `at_fork` registers.
pub type ForkHandler = Option<unsafe extern "C" fn()>;

/// Registers handlers to run in the thread that calls `fork`: before it, and
/// after it in the parent and in the child (`pthread_atfork`). Handlers
/// registered later run earlier before the fork, later after it.
pub fn at_fork(prepare: ForkHandler, parent: ForkHandler, child: ForkHandler) {
    // SAFETY: registers plain functions; glibc copies the pointers.
    unsafe { libc::pthread_atfork(prepare, parent, child) };
}

/// Registers `f` to run when the process exits through `exit` (`atexit`).
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: registers a plain function.
    unsafe { libc::atexit(f) };
}

/// Ends the process at once (`SIGABRT`): for a state the library cannot
/// continue from.
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
