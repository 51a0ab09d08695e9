//! The dump signal. Its handler only counts a request and rings the doorbell;
//! the collector thread does the work.
//!
//! Programs may want the same signal (HotSpot uses SIGUSR2 to suspend and
//! resume threads, sent with `pthread_kill`). So `sigaction`, `signal`,
//! `bsd_signal` and `sysv_signal` are interposed for the dump signal: the
//! kernel always keeps the library's handler, installed with the program's
//! mask and flags, while the program sees and changes its own disposition.
//! The handler treats a `kill`/`sigqueue` from another process as a dump
//! request and passes every other delivery to the program's handler.

use crate::{doorbell, next};
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

static REQUESTS: AtomicU32 = AtomicU32::new(0);
/// The dump signal, once installed (0 before).
static DUMP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The program's own disposition of the dump signal: handler and flags in
/// atomics (read by the signal handler), the whole `sigaction` for queries.
static APP_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static APP_FLAGS: AtomicI32 = AtomicI32::new(0);
static APP_ACTION: AppAction = AppAction(core::cell::UnsafeCell::new(None));
static APP_LOCK: AtomicBool = AtomicBool::new(false);

struct AppAction(core::cell::UnsafeCell<Option<libc::sigaction>>);
// SAFETY: only touched inside `with_app_action`, which holds APP_LOCK with
// every signal blocked, so neither another thread nor a handler on this
// thread can reach it meanwhile.
unsafe impl Sync for AppAction {}

/// Flags of the program's that the kernel must apply to deliveries.
const KERNEL_FLAGS: c_int = libc::SA_RESTART | libc::SA_ONSTACK | libc::SA_NODEFER;

type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
type SignalFn = unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t;

pub fn install(sig: c_int) {
    // The program's disposition so far (normally SIG_DFL) becomes its view.
    // SAFETY: sigaction with a valid out pointer.
    let mut before: libc::sigaction = unsafe { core::mem::zeroed() };
    unsafe { next_sigaction()(sig, core::ptr::null(), &mut before) };
    DUMP_SIGNAL.store(sig, Ordering::Release);
    let ok = with_app_action(|view| {
        *view = Some(before);
        set_app(&before);
        apply(sig, &before) == 0
    });
    if !ok {
        crate::log::log!("cannot install a handler for signal {sig}; dumps on signal are off");
    }
}

/// Asks the collector for a dump. Async-signal-safe.
pub fn request_dump() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    doorbell::ring();
}

/// Dump requests received so far.
pub fn requests() -> u32 {
    REQUESTS.load(Ordering::Relaxed)
}

fn set_app(act: &libc::sigaction) {
    APP_FLAGS.store(act.sa_flags, Ordering::Relaxed);
    APP_HANDLER.store(act.sa_sigaction, Ordering::Release);
}

/// Installs the library's handler with the program's mask and flags. With no
/// handler of the program's, dump requests must not interrupt its system
/// calls (EINTR it never saw before): SA_RESTART.
fn apply(sig: c_int, app: &libc::sigaction) -> c_int {
    let flags = match app.sa_sigaction {
        libc::SIG_DFL | libc::SIG_IGN => libc::SA_RESTART,
        _ => app.sa_flags & KERNEL_FLAGS,
    };
    // SAFETY: a zeroed sigaction with a valid handler; the mask is copied.
    unsafe {
        let mut ours: libc::sigaction = core::mem::zeroed();
        ours.sa_sigaction = on_signal as *const () as usize;
        ours.sa_flags = libc::SA_SIGINFO | flags;
        ours.sa_mask = app.sa_mask;
        next_sigaction()(sig, &ours, core::ptr::null_mut())
    }
}

/// Runs `f` on the program's view with every signal blocked and the lock
/// held (sigaction is async-signal-safe, so handlers may call it too).
fn with_app_action<R>(f: impl FnOnce(&mut Option<libc::sigaction>) -> R) -> R {
    // SAFETY: plain signal-mask calls; the view is reached only here.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        while APP_LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let r = f(&mut *APP_ACTION.0.get());
        APP_LOCK.store(false, Ordering::Release);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        r
    }
}

extern "C" fn on_signal(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    if is_dump_request(info) {
        request_dump();
        return;
    }
    let handler = APP_HANDLER.load(Ordering::Acquire);
    let flags = APP_FLAGS.load(Ordering::Relaxed);
    match handler {
        libc::SIG_IGN => {}
        // Without a handler of the program's, every delivery asks for a
        // dump (the default action would have ended the process).
        libc::SIG_DFL => request_dump(),
        _ => {
            if flags & libc::SA_RESETHAND != 0 {
                APP_HANDLER.store(libc::SIG_DFL, Ordering::Release);
            }
            // SAFETY: the program installed this handler for this signal,
            // with SA_SIGINFO saying which of the two forms it has.
            unsafe {
                if flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                        core::mem::transmute(handler);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(c_int) = core::mem::transmute(handler);
                    f(sig);
                }
            }
        }
    }
}

/// A dump request is a `kill` or `sigqueue` from another process; signals the
/// process sends itself (`pthread_kill`, `tgkill`, `raise`, a self-`kill`)
/// belong to the program.
fn is_dump_request(info: *const libc::siginfo_t) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO; getpid is
    // async-signal-safe.
    unsafe {
        let code = (*info).si_code;
        (code == libc::SI_USER || code == libc::SI_QUEUE) && (*info).si_pid() != libc::getpid()
    }
}

fn next_sigaction() -> SigactionFn {
    static NEXT: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
    // SAFETY: the symbol is libc's (or an interposer's) sigaction.
    unsafe { core::mem::transmute(next::symbol(&NEXT, c"sigaction")) }
}

fn next_signal(name: &core::ffi::CStr, slot: &'static AtomicPtr<c_void>) -> SignalFn {
    // SAFETY: the symbol has signal()'s type.
    unsafe { core::mem::transmute(next::symbol(slot, name)) }
}

fn is_dump_signal(sig: c_int) -> bool {
    sig > 0 && sig == DUMP_SIGNAL.load(Ordering::Acquire)
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
    if !is_dump_signal(sig) {
        return next_sigaction()(sig, act, old);
    }
    with_app_action(|view| {
        if !old.is_null() {
            *old = current(view);
        }
        if act.is_null() {
            return 0;
        }
        let rc = apply(sig, &*act);
        if rc == 0 {
            *view = Some(*act);
            set_app(&*act);
        }
        rc
    })
}

/// The program's disposition as it stands: the stored action, unless the
/// handler has since reset it to SIG_DFL (SA_RESETHAND; the handler cannot
/// take the lock to update the stored action).
unsafe fn current(view: &Option<libc::sigaction>) -> libc::sigaction {
    let mut act = view.unwrap_or_else(|| core::mem::zeroed());
    let handler = APP_HANDLER.load(Ordering::Acquire);
    if handler != act.sa_sigaction {
        act.sa_sigaction = handler;
        act.sa_flags &= !(libc::SA_SIGINFO | libc::SA_RESETHAND);
    }
    act
}

/// `signal()` semantics for the dump signal (`reset` for System V's).
#[cfg(not(test))]
unsafe fn set_handler(sig: c_int, handler: libc::sighandler_t, flags: c_int) -> libc::sighandler_t {
    let mut act: libc::sigaction = core::mem::zeroed();
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    if flags & libc::SA_NODEFER == 0 {
        libc::sigaddset(&mut act.sa_mask, sig);
    }
    let mut old: libc::sigaction = core::mem::zeroed();
    if sigaction(sig, &act, &mut old) != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// `signal()`-style functions: for the dump signal they go through the
/// interposed `sigaction` with their own semantics (`flags`).
macro_rules! signal_like {
    ($name:ident, $symbol:literal, $flags:expr, $doc:literal) => {
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
            static NEXT: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
            if !is_dump_signal(sig) {
                return next_signal($symbol, &NEXT)(sig, handler);
            }
            set_handler(sig, handler, $flags)
        }
    };
}

signal_like!(
    signal,
    c"signal",
    libc::SA_RESTART,
    "BSD semantics, as glibc's `signal`."
);
signal_like!(
    bsd_signal,
    c"bsd_signal",
    libc::SA_RESTART,
    "BSD semantics."
);
signal_like!(
    sysv_signal,
    c"sysv_signal",
    libc::SA_RESETHAND | libc::SA_NODEFER,
    "System V semantics: one-shot, not blocked during its handler."
);
