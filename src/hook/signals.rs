//! Where the dump signal is delivered. A handler that runs on one of the
//! program's threads cuts its `sleep`, `poll`, `epoll_wait`, `select`,
//! `sigtimedwait` short (SA_RESTART does not restart those, signal(7)). So
//! while the program has no handler of its own for the dump signal, the signal
//! is blocked in every thread of the program and unblocked only in the
//! collector thread: the kernel delivers a process-directed signal to a thread
//! that does not block it, and the request is taken there.
//!
//! The program keeps its own view: each thread's wish for the dump signal is
//! kept (`ThreadState::app_blocks_dump`), queries return it, and everything
//! that hands a mask to the kernel or to a new program is interposed so that
//! the program's view is what takes effect where it matters:
//! - `pthread_sigmask`/`sigprocmask` keep the signal blocked while the
//!   program has no handler, and apply the program's wish once it has one
//!   (HotSpot suspends threads with `pthread_kill` of SIGUSR2);
//! - `sigsuspend`, `ppoll`, `pselect`, `epoll_pwait(2)` keep it blocked in
//!   the temporary mask;
//! - `sigwait`, `sigwaitinfo`, `sigtimedwait`, `signalfd` on the signal mean
//!   the program takes it itself: from then on it gets every delivery, and
//!   dumps by signal are off (said once);
//! - `raise`, `pthread_kill`, `pthread_sigqueue` and `tgkill` aimed at a
//!   thread of this process, with no handler of the program's, would leave
//!   the signal pending on a thread that blocks it, for ever: they send it
//!   to the process instead (a request, as `kill(getpid())` is);
//! - `execve`, `execv`, `execvp`, `execvpe`, `fexecve`, `execl`, `execle`,
//!   `execlp`, `posix_spawn(p)`, `system` and `popen` start the new program
//!   with the mask and the `SIG_IGN` the program set, not the library's.
//!
//! The whole rule, for users: docs/signals.md.

use crate::collect::signal;
use crate::sample::thread_state;
use crate::sys::signals::{block_here, empty, is_member, real_sigmask, with_member};
use core::ffi::{c_char, c_int, c_void};

use crate::sys::signals::Sigset;
type MaskFn = unsafe extern "C" fn(c_int, *const Sigset, *mut Sigset) -> c_int;

/// Whether the kernel must keep the dump signal blocked on the program's
/// threads: it has no handler of its own for it.
fn keeps_blocked() -> bool {
    signal::dump_signal() > 0 && !signal::program_has_handler()
}

fn contains(set: *const Sigset, sig: c_int) -> bool {
    // SAFETY: `set` is null or the caller's valid sigset.
    unsafe { set.as_ref() }.is_some_and(|set| is_member(set, sig))
}

/// At load, on the thread that loads the library (the main thread): the
/// program's view is the mask it was started with, and the signal is blocked
/// unless a handler is already there (another preloaded library's, installed
/// from its constructor before this one ran: `signal::install` took it as
/// the program's), whose self-sent signals must reach it here.
pub fn install(sig: c_int) {
    let mut now: Sigset = empty();
    real_sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut now);
    let wished = contains(&now, sig);
    thread_state::with(|s| s.app_blocks_dump.set(wished));
    block_here(sig, wished || keeps_blocked());
    // Whoever takes the signal (the collector, the helper of `single`) may
    // have looked before it was installed: it looks again now.
    crate::sys::doorbell::ring();
    crate::collect::mode::wake();
}

/// The program installed or removed its handler (from `sigaction`): its
/// wish on this thread now applies, or the library's block does.
pub fn disposition_changed(sig: c_int) {
    // Attached: the program's threads keep their own masks (`hook::attach`).
    if !crate::sys::dl::loaded_late() {
        let wished = thread_state::with(|s| s.app_blocks_dump.get());
        block_here(sig, wished || keeps_blocked());
    }
    // The collector (or the helper of `single`) follows (see `collector::run`).
    crate::sys::doorbell::ring();
    crate::collect::mode::wake();
}

/// `pthread_sigmask`/`sigprocmask` for a mask that may name the dump signal.
///
/// # Safety
/// `next` is the function the program called; `set` and `old` are null or
/// valid, as it requires.
unsafe fn set_mask(next: MaskFn, how: c_int, set: *const Sigset, old: *mut Sigset) -> c_int {
    let sig = signal::dump_signal();
    if sig <= 0 {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { next(how, set, old) };
    }
    let before = thread_state::with(|s| s.app_blocks_dump.get());
    let wished = if set.is_null() {
        before
    } else {
        match how {
            libc::SIG_BLOCK => before || contains(set, sig),
            libc::SIG_UNBLOCK => before && !contains(set, sig),
            libc::SIG_SETMASK => contains(set, sig),
            // SAFETY: the program's arguments, unchanged.
            _ => return unsafe { next(how, set, old) },
        }
    };
    let blocked = wished || keeps_blocked();
    let adjusted;
    let set = if set.is_null() {
        set
    } else {
        // SAFETY: not null, so the program's valid sigset (the contract).
        let program = unsafe { &*set };
        adjusted = match how {
            // The signal is in an unblock set only when it is to be unblocked.
            libc::SIG_UNBLOCK => with_member(program, sig, !blocked && contains(set, sig)),
            _ => with_member(program, sig, blocked),
        };
        &adjusted as *const Sigset
    };
    // SAFETY: the program's arguments, the set a copy of its own when given.
    let rc = unsafe { next(how, set, old) };
    if rc == 0 {
        thread_state::with(|s| s.app_blocks_dump.set(wished));
        if !old.is_null() {
            // SAFETY: not null, so the program's valid sigset, which `next`
            // just filled.
            unsafe { *old = with_member(&*old, sig, before) };
        }
    }
    rc
}

macro_rules! mask_setter {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// As the C function.
        #[cfg(not(test))]
        #[no_mangle]
        pub unsafe extern "C" fn $name(how: c_int, set: *const Sigset, old: *mut Sigset) -> c_int {
            // SAFETY: the program's arguments to the function `next` is.
            unsafe { set_mask(crate::next::slot::$name.get(), how, set, old) }
        }
    };
}

mask_setter!(
    pthread_sigmask,
    "The program's view of the dump signal, kept."
);
mask_setter!(sigprocmask, "As `pthread_sigmask`.");

/// A temporary mask (`sigsuspend`, `ppoll`, ...) with the dump signal kept
/// blocked when the program has no handler; `None` to use the program's own.
fn temporary_mask(mask: *const Sigset) -> Option<Sigset> {
    let sig = signal::dump_signal();
    if mask.is_null() || !keeps_blocked() || contains(mask, sig) {
        return None;
    }
    // SAFETY: `mask` is the caller's valid sigset.
    Some(with_member(unsafe { &*mask }, sig, true))
}

/// Calls `f` with the program's temporary mask, adjusted.
fn with_temporary<R>(mask: *const Sigset, f: impl FnOnce(*const Sigset) -> R) -> R {
    match temporary_mask(mask) {
        Some(adjusted) => f(&adjusted),
        None => f(mask),
    }
}

/// A signal the program sends one of its own threads: with no handler of
/// the program's for the dump signal, that thread blocks it (as every
/// thread of the program does) and it would stay pending there for ever, so
/// it goes to the process instead, where it is a request like any other
/// (`signal::classify`; nothing under `SIG_IGN`, as without the library).
/// True if sent so.
fn sent_to_process(sig: c_int) -> bool {
    if !signal::is_dump_signal(sig) || !keeps_blocked() || signal::program_waits() {
        return false;
    }
    crate::sys::raw::kill(crate::sys::raw::getpid(), sig);
    true
}

/// # Safety
/// As raise(3).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn raise(sig: c_int) -> c_int {
    if sent_to_process(sig) {
        return 0;
    }
    let next = crate::next::slot::raise.get();
    // SAFETY: the program's arguments, unchanged.
    unsafe { next(sig) }
}

/// # Safety
/// As pthread_kill(3).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn pthread_kill(thread: libc::pthread_t, sig: c_int) -> c_int {
    if sent_to_process(sig) {
        return 0;
    }
    let next = crate::next::slot::pthread_kill.get();
    // SAFETY: the program's arguments, unchanged.
    unsafe { next(thread, sig) }
}

/// # Safety
/// As pthread_sigqueue(3).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn pthread_sigqueue(
    thread: libc::pthread_t,
    sig: c_int,
    value: libc::sigval,
) -> c_int {
    if sent_to_process(sig) {
        return 0;
    }
    let next = crate::next::slot::pthread_sigqueue.get();
    // SAFETY: the program's arguments, unchanged.
    unsafe { next(thread, sig, value) }
}

/// # Safety
/// As tgkill(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn tgkill(tgid: libc::pid_t, tid: libc::pid_t, sig: c_int) -> c_int {
    if tgid == crate::sys::raw::getpid() && sent_to_process(sig) {
        return 0;
    }
    let next = crate::next::slot::tgkill.get();
    // SAFETY: the program's arguments, unchanged.
    unsafe { next(tgid, tid, sig) }
}

/// # Safety
/// As sigsuspend(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn sigsuspend(mask: *const Sigset) -> c_int {
    let next = crate::next::slot::sigsuspend.get();
    // SAFETY: the program's arguments, the mask a copy of its own if changed.
    with_temporary(mask, |m| unsafe { next(m) })
}

/// # Safety
/// As ppoll(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: *const libc::timespec,
    mask: *const Sigset,
) -> c_int {
    let next = crate::next::slot::ppoll.get();
    // SAFETY: the program's arguments, the mask a copy of its own if changed.
    with_temporary(mask, |m| unsafe { next(fds, n, timeout, m) })
}

/// # Safety
/// As pselect(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout: *const libc::timespec,
    mask: *const Sigset,
) -> c_int {
    let next = crate::next::slot::pselect.get();
    // SAFETY: the program's arguments, the mask a copy of its own if changed.
    with_temporary(mask, |m| unsafe { next(n, r, w, e, timeout, m) })
}

/// # Safety
/// As epoll_pwait(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    fd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const Sigset,
) -> c_int {
    let next = crate::next::slot::epoll_pwait.get();
    // SAFETY: the program's arguments, the mask a copy of its own if changed.
    with_temporary(mask, |m| unsafe { next(fd, events, max, timeout, m) })
}

/// # Safety
/// As epoll_pwait2(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    fd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: *const libc::timespec,
    mask: *const Sigset,
) -> c_int {
    let next = crate::next::slot::epoll_pwait2.get();
    // SAFETY: the program's arguments, the mask a copy of its own if changed.
    with_temporary(mask, |m| unsafe { next(fd, events, max, timeout, m) })
}

/// The program is about to wait for signals in `set` itself.
fn program_waits_for(set: *const Sigset) {
    let sig = signal::dump_signal();
    if sig > 0 && contains(set, sig) && signal::set_program_waits() {
        crate::sys::log::log!(
            "the program waits for {} itself (sigwait/signalfd): it gets every delivery, and dumps on that signal are off; set LEAKPROBE_SIGNAL to a signal it does not use",
            crate::settings::signal_name(sig)
        );
        crate::profile::published::refuse(
            crate::profile::published::Refusal::ProgramWaits,
            Some(format_args!(
                "the program waits for {} itself (sigwait/signalfd): dumps on that signal are off",
                crate::settings::signal_name(sig)
            )),
        );
        // Wakes the collector, which then blocks the signal on its thread
        // (the helper of `single` stops taking it).
        crate::sys::doorbell::ring();
        crate::collect::mode::wake();
    }
}

/// # Safety
/// As sigwait(3).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn sigwait(set: *const Sigset, sig: *mut c_int) -> c_int {
    program_waits_for(set);
    let next = crate::next::slot::sigwait.get();
    // SAFETY: the program's arguments, unchanged.
    unsafe { next(set, sig) }
}

/// # Safety
/// As sigwaitinfo(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn sigwaitinfo(set: *const Sigset, info: *mut libc::siginfo_t) -> c_int {
    program_waits_for(set);
    let next = crate::next::slot::sigwaitinfo.get();
    // SAFETY: the program's arguments, unchanged.
    unsafe { next(set, info) }
}

/// # Safety
/// As sigtimedwait(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn sigtimedwait(
    set: *const Sigset,
    info: *mut libc::siginfo_t,
    timeout: *const libc::timespec,
) -> c_int {
    program_waits_for(set);
    let next = crate::next::slot::sigtimedwait.get();
    // SAFETY: the program's arguments, unchanged.
    unsafe { next(set, info, timeout) }
}

/// # Safety
/// As signalfd(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn signalfd(fd: c_int, mask: *const Sigset, flags: c_int) -> c_int {
    program_waits_for(mask);
    let next = crate::next::slot::signalfd.get();
    // SAFETY: the program's arguments, unchanged.
    unsafe { next(fd, mask, flags) }
}

/// Runs `f`, which may start another program, with the program's own mask
/// and `SIG_IGN` for the dump signal in force; restores the library's after
/// (when `f` returns: the exec failed, or the spawn is done).
fn as_the_program<R>(f: impl FnOnce() -> R) -> R {
    let sig = signal::dump_signal();
    if sig <= 0 {
        return f();
    }
    let unblock = keeps_blocked() && !thread_state::with(|s| s.app_blocks_dump.get());
    if unblock {
        block_here(sig, false);
    }
    let ignored = signal::ignore_for_exec(sig);
    let r = f();
    if ignored {
        signal::reinstall(sig);
    }
    if unblock {
        block_here(sig, true);
    }
    r
}

type Argv = *const *const c_char;

macro_rules! starts_program {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        starts_program!($name($($arg: $ty),*) -> $ret, |_r| {});
    };
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $after:expr) => {
        /// Starts the new program with the program's mask and `SIG_IGN`.
        ///
        /// # Safety
        /// As the C function.
        #[cfg(not(test))]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            let next = crate::next::slot::$name.get();
            // SAFETY: the program's arguments, unchanged.
            let r = as_the_program(|| unsafe { next($($arg),*) });
            #[allow(clippy::redundant_closure_call)]
            ($after)(&r);
            r
        }
    };
}

/// `posix_spawn(p)` succeeded: its child is one of the program's (see
/// `signal::note_child`).
fn spawned(rc: c_int, pid: *mut libc::pid_t) {
    // SAFETY: `pid` is null or where posix_spawn stored the child's pid.
    if let Some(pid) = unsafe { pid.as_ref() }.filter(|_| rc == 0) {
        signal::note_child(*pid);
    }
}

starts_program!(execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int);
starts_program!(execv(path: *const c_char, argv: Argv) -> c_int);
starts_program!(execvp(file: *const c_char, argv: Argv) -> c_int);
starts_program!(execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int);
starts_program!(fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int);
starts_program!(posix_spawn(pid: *mut libc::pid_t, path: *const c_char, actions: *const c_void, attr: *const c_void, argv: Argv, envp: Argv) -> c_int, |rc: &c_int| spawned(*rc, pid));
starts_program!(posix_spawnp(pid: *mut libc::pid_t, file: *const c_char, actions: *const c_void, attr: *const c_void, argv: Argv, envp: Argv) -> c_int, |rc: &c_int| spawned(*rc, pid));
starts_program!(system(command: *const c_char) -> c_int);
starts_program!(popen(command: *const c_char, mode: *const c_char) -> *mut libc::FILE);

/// Which `exec` a list of arguments (`execl`, `execle`, `execlp`) goes to.
const EXECL: c_int = 0;
const EXECLE: c_int = 1;
const EXECLP: c_int = 2;

/// `execl`, `execle` and `execlp` take their arguments as a variadic list;
/// glibc makes an array of it and calls its own `execve` directly, which the
/// library never sees: the new program would start with the library's mask
/// and handler instead of the program's (`nohup`'s `SIG_IGN` of `SIGHUP`
/// lost). Each is one naked entry that lays the five register arguments
/// after `path` out in memory (x86-64 System V: `rsi`, `rdx`, `rcx`, `r8`,
/// `r9`; the rest are on the caller's stack) and calls `exec_list`, which
/// makes the array and calls the library's `execv`, `execve` or `execvp`.
macro_rules! exec_list_entry {
    ($name:ident, $kind:expr) => {
        /// Starts the new program with the program's mask and `SIG_IGN`
        /// (through `exec_list`).
        ///
        /// # Safety
        /// As the C function: a NULL-terminated list of strings (then the
        /// environment for `execle`).
        #[cfg(all(not(test), target_arch = "x86_64"))]
        #[no_mangle]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name(path: *const c_char, arg: *const c_char) -> c_int {
            // SAFETY: 56 bytes keep the stack 16-byte aligned at the call
            // (8 mod 16 at entry); the caller's stack arguments start 8
            // bytes above the entry's stack pointer (its return address),
            // 64 above the lowered one; `exec_list` reads no further than
            // the list's NULL (and `execle`'s environment after it).
            core::arch::naked_asm!(
                "sub rsp, 56",
                "mov [rsp], rsi",
                "mov [rsp + 8], rdx",
                "mov [rsp + 16], rcx",
                "mov [rsp + 24], r8",
                "mov [rsp + 32], r9",
                "mov rsi, rsp",
                "lea rdx, [rsp + 64]",
                "mov ecx, {kind}",
                "call {list}",
                "add rsp, 56",
                "ret",
                kind = const $kind,
                list = sym exec_list,
            )
        }
    };
}

exec_list_entry!(execl, EXECL);
exec_list_entry!(execle, EXECLE);
exec_list_entry!(execlp, EXECLP);

/// The arguments of an `execl`-style call as the array `execv` takes: the
/// `i`th is `regs[i]` for the first five, then `stack[i - 5]`. On the stack
/// up to `ON_STACK` of them (no allocation: exec is async-signal-safe), in
/// pages of their own beyond.
///
/// # Safety
/// `regs` holds five words and `stack` the caller's stack arguments, a NULL
/// among them (and the environment after it for `execle`).
#[cfg(all(not(test), target_arch = "x86_64"))]
unsafe extern "C" fn exec_list(
    path: *const c_char,
    regs: *const *const c_char,
    stack: *const *const c_char,
    kind: c_int,
) -> c_int {
    const ON_STACK: usize = 512;
    let arg = |i: usize| {
        // SAFETY: the caller's list, read up to its NULL (see above).
        unsafe {
            if i < 5 {
                regs.add(i).read()
            } else {
                stack.add(i - 5).read()
            }
        }
    };
    let mut n = 0;
    while !arg(n).is_null() {
        n += 1;
    }
    let envp = if kind == EXECLE {
        arg(n + 1) as Argv
    } else {
        core::ptr::null()
    };
    let mut local = [core::ptr::null::<c_char>(); ON_STACK];
    let bytes = (n + 1) * core::mem::size_of::<*const c_char>();
    let mapped = if n < ON_STACK {
        None
    } else {
        match crate::sys::raw::map_with(bytes, libc::MAP_PRIVATE) {
            Ok(p) => Some(p),
            Err(e) => {
                crate::sys::errno::set(e);
                return -1;
            }
        }
    };
    let argv = match mapped {
        Some(p) => p as *mut *const c_char,
        None => local.as_mut_ptr(),
    };
    for i in 0..=n {
        // SAFETY: `argv` has room for n + 1 pointers (the array or the
        // pages mapped above).
        unsafe { argv.add(i).write(arg(i)) };
    }
    // SAFETY: the program's path and arguments, as an array that ends in
    // NULL; its environment for `execle` (glibc's `environ` otherwise).
    let rc = unsafe {
        match kind {
            EXECLE => execve(path, argv, envp),
            EXECLP => execvp(path, argv),
            _ => execv(path, argv),
        }
    };
    if let Some(p) = mapped {
        // SAFETY: mapped above, no longer used (the exec failed); munmap as
        // a raw system call leaves the exec's `errno` as it was.
        unsafe { crate::sys::raw::unmap(p, bytes) };
    }
    rc
}

/// # Safety
/// As sigaction(2).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if !signal::is_dump_signal(sig) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { crate::next::slot::sigaction.get()(sig, act, old) };
    }
    let had_handler = signal::program_has_handler();
    let rc = signal::with_app_action(|view| {
        if !old.is_null() {
            // SAFETY: not null, so the program's valid sigaction to fill.
            unsafe { *old = signal::current(view) };
        }
        // SAFETY: null or the program's valid sigaction (sigaction(2)).
        let Some(act) = (unsafe { act.as_ref() }) else {
            return 0;
        };
        let rc = signal::apply(sig, act);
        if rc == 0 {
            *view = Some(*act);
            signal::set_app(act);
        }
        rc
    });
    // Outside `with_app_action`, which restores this thread's mask.
    if signal::program_has_handler() != had_handler {
        disposition_changed(sig);
    }
    rc
}

/// `signal()` semantics for the dump signal (`reset` for System V's).
#[cfg(not(test))]
fn set_handler(sig: c_int, handler: libc::sighandler_t, flags: c_int) -> libc::sighandler_t {
    // SAFETY: sigaction is plain data; all zeroes is no flags, empty mask.
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    if flags & libc::SA_NODEFER == 0 {
        act.sa_mask = with_member(&act.sa_mask, sig, true);
    }
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: both point at sigactions of ours.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// `signal()`-style functions: for the dump signal they go through the
/// interposed `sigaction` with their own semantics (`flags`).
macro_rules! signal_like {
    ($name:ident, $flags:expr, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// As signal(2).
        #[cfg(not(test))]
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            sig: c_int,
            handler: libc::sighandler_t,
        ) -> libc::sighandler_t {
            if !signal::is_dump_signal(sig) {
                // SAFETY: the program's arguments, unchanged.
                return unsafe { crate::next::slot::$name.get()(sig, handler) };
            }
            set_handler(sig, handler, $flags)
        }
    };
}

signal_like!(
    signal,
    libc::SA_RESTART,
    "BSD semantics, as glibc's `signal`."
);
signal_like!(bsd_signal, libc::SA_RESTART, "BSD semantics.");
signal_like!(
    sysv_signal,
    libc::SA_RESETHAND | libc::SA_NODEFER,
    "System V semantics: one-shot, not blocked during its handler."
);
