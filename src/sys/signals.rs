//! The library's own signal masks, one idiom for blocking signals: the
//! kernel's `rt_sigprocmask` itself (the program's `pthread_sigmask` goes
//! through `hook::signals`, which keeps the program's view). The sets are
//! built with glibc's `sigfillset`/`sigaddset`, which never name glibc's
//! internal signals (SIGCANCEL, SIGSETXID): `setuid` in a threaded program
//! needs them unblocked on every thread. Also: a set with or without one
//! signal, membership, and a machine context as a handler receives one.

use core::ffi::c_int;

pub type Sigset = libc::sigset_t;

/// The kernel's signal set is 64 bits on Linux, whatever glibc's type holds.
const KERNEL_SIGSET_BYTES: usize = 8;

/// Changes this thread's mask, as `pthread_sigmask` (0, or the error).
pub fn real_sigmask(how: c_int, set: *const Sigset, old: *mut Sigset) -> c_int {
    // SAFETY: the pointers are the caller's, null or valid sets of at least
    // the kernel's size.
    let rc = unsafe { libc::syscall(libc::SYS_rt_sigprocmask, how, set, old, KERNEL_SIGSET_BYTES) };
    if rc == 0 {
        0
    } else {
        crate::sys::errno::get()
    }
}

/// Runs `f` with every signal blocked on this thread (the library's own
/// critical sections that a handler of the program must not interrupt).
pub fn with_all_blocked<R>(keep: c_int, f: impl FnOnce() -> R) -> R {
    // SAFETY: sigset manipulation on local values.
    let (all, mut old) = unsafe {
        let mut all: Sigset = core::mem::zeroed();
        libc::sigfillset(&mut all);
        if keep > 0 {
            libc::sigdelset(&mut all, keep);
        }
        (all, core::mem::zeroed::<Sigset>())
    };
    real_sigmask(libc::SIG_SETMASK, &all, &mut old);
    let r = f();
    real_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    r
}

/// A copy of `set` with `sig` in it (`member`) or not.
pub fn with_member(set: &Sigset, sig: c_int, member: bool) -> Sigset {
    let mut copy = *set;
    // SAFETY: a valid local sigset and a valid signal number.
    unsafe {
        if member {
            libc::sigaddset(&mut copy, sig);
        } else {
            libc::sigdelset(&mut copy, sig);
        }
    }
    copy
}

/// Whether `sig` is in `set`.
pub fn is_member(set: &Sigset, sig: c_int) -> bool {
    // SAFETY: a valid sigset, only read; an invalid number answers -1.
    unsafe { libc::sigismember(set, sig) == 1 }
}

/// The program counter, stack pointer and frame pointer (`%rbp`) at the
/// point it is called from. Always inlined, so that they are the caller's
/// own: where a stack walk that starts there begins.
#[inline(always)]
pub fn registers_here() -> (usize, usize, usize) {
    let (pc, sp, bp): (usize, usize, usize);
    // SAFETY: reads three registers, touches nothing else.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    (pc, sp, bp)
}

/// The machine context of the point it is called from, as a signal
/// handler would receive it, with only the program counter, stack and
/// frame pointers filled in (`registers_here`): what a stack walker that
/// starts here reads (`getcontext`'s whole state costs a system call, for
/// the signal mask). Always inlined, so that it describes the caller's own
/// frame, which must stay live while the context is used.
#[inline(always)]
pub fn frame_context_here() -> libc::ucontext_t {
    // SAFETY: ucontext_t is plain data; all zeroes is valid storage.
    let mut uc: libc::ucontext_t = unsafe { core::mem::zeroed() };
    let (pc, sp, bp) = registers_here();
    let regs = &mut uc.uc_mcontext.gregs;
    regs[libc::REG_RIP as usize] = pc as i64;
    regs[libc::REG_RSP as usize] = sp as i64;
    regs[libc::REG_RBP as usize] = bp as i64;
    uc
}

/// An empty set.
pub fn empty() -> Sigset {
    // SAFETY: an all-zero sigset is a valid empty set.
    unsafe { core::mem::zeroed() }
}

/// Blocks or unblocks `sig` in the calling thread's real mask.
pub fn block_here(sig: c_int, blocked: bool) {
    let set = with_member(&empty(), sig, true);
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    real_sigmask(how, &set, core::ptr::null_mut());
}
