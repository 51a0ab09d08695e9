//! The dump signal. Its handler only counts a request and rings the doorbell;
//! the collector thread does the work.
//!
//! Programs may want the same signal (HotSpot uses SIGUSR2 to suspend and
//! resume threads, sent with `pthread_kill`). So `sigaction`, `signal`,
//! `bsd_signal` and `sysv_signal` are interposed for the dump signal: the
//! kernel always keeps the library's handler, installed with the program's
//! mask and flags, while the program sees and changes its own disposition.
//! The handler treats a `kill`/`sigqueue` from outside the process (not from
//! the process itself, nor from one of its children) as a dump request and
//! passes every other delivery to the program's handler. A `sigqueue` that
//! carries leakprobe's tag (`scripts/leakprobe dump`) is always a request,
//! and its token is written into the dump that answers it.
//!
//! Which thread the signal is delivered to is `sigmask`'s part.

use crate::collect::request::REQUESTS;
use crate::sample::thread_state;
use crate::sys::raw;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// Set once the program waits for the dump signal itself (`hook::signals`).
static PROGRAM_WAITS: AtomicBool = AtomicBool::new(false);
/// The high 32 bits of a tagged request's `sival_ptr` ("LEAK").
const TAG: u64 = 0x4c45_414b;

/// The high 32 bits of a `sigqueue` asking an attached library to detach
/// ("DETA", `scripts/leakprobe detach`).
const DETACH_TAG: u64 = 0x4445_5441;
/// A detach was asked for (taken by the collector).
static DETACH: AtomicBool = AtomicBool::new(false);

/// Whether a detach was asked for since the last call.
pub fn take_detach() -> bool {
    DETACH.swap(false, Ordering::AcqRel)
}

/// Hands the signal back: the program's disposition goes to the kernel
/// again, unless the kernel no longer has the library's handler (a caller
/// that did not go through the library's `sigaction` replaced it: that one
/// stays).
pub fn uninstall() {
    let sig = DUMP_SIGNAL.load(Ordering::Acquire);
    if sig <= 0 {
        return;
    }
    with_app_action(|view| {
        // SAFETY: sigaction is plain data, all zeroes valid; a query.
        let mut now: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: no new action, a valid out pointer.
        unsafe { next_sigaction()(sig, core::ptr::null(), &mut now) };
        if now.sa_sigaction == on_signal as *const () as usize {
            let act = current(view);
            // SAFETY: the program's own action, a valid sigaction.
            unsafe { next_sigaction()(sig, &act, core::ptr::null_mut()) };
        }
    });
    DUMP_SIGNAL.store(0, Ordering::Release);
}

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

/// Installs the library's handler; false (said in one line) if it cannot.
pub fn install(sig: c_int) -> bool {
    // The program's disposition so far (normally SIG_DFL) becomes its view.
    // SAFETY: sigaction is plain data, all zeroes valid.
    let mut before: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: no new action, a valid out pointer.
    unsafe { next_sigaction()(sig, core::ptr::null(), &mut before) };
    DUMP_SIGNAL.store(sig, Ordering::Release);
    let ok = with_app_action(|view| {
        *view = Some(before);
        set_app(&before);
        apply(sig, &before) == 0
    });
    if !ok {
        crate::sys::log::log!("cannot install a handler for signal {sig}; dumps on signal are off");
    }
    ok
}

/// Set when a delivery was handed back from the collector thread, which then
/// returned with the signal blocked: the collector applies its mask again.
static RESYNC: AtomicBool = AtomicBool::new(false);

/// Whether the collector must apply its mask for the dump signal again (see
/// `RESYNC`); true once per hand-back.
pub fn take_resync() -> bool {
    RESYNC.swap(false, Ordering::AcqRel)
}

/// The dump signal, or 0 before it is installed.
pub fn dump_signal() -> c_int {
    DUMP_SIGNAL.load(Ordering::Acquire)
}

/// Whether the program has a handler of its own for the dump signal.
pub fn program_has_handler() -> bool {
    !matches!(
        APP_HANDLER.load(Ordering::Acquire),
        libc::SIG_DFL | libc::SIG_IGN
    )
}

/// Before an exec: a program that ignores the dump signal passes `SIG_IGN`
/// on (the kernel resets a handler to SIG_DFL, but keeps SIG_IGN). True if
/// the disposition was changed and must be `reinstall`ed after.
pub fn ignore_for_exec(sig: c_int) -> bool {
    if APP_HANDLER.load(Ordering::Acquire) != libc::SIG_IGN {
        return false;
    }
    // SAFETY: a zeroed sigaction with SIG_IGN is valid.
    unsafe {
        let mut ign: libc::sigaction = core::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        next_sigaction()(sig, &ign, core::ptr::null_mut()) == 0
    }
}

/// The library's handler again, after a failed exec (or a spawn).
pub fn reinstall(sig: c_int) {
    with_app_action(|view| {
        // SAFETY: an all-zero sigaction is SIG_DFL with no flags.
        let act = view.unwrap_or_else(|| unsafe { core::mem::zeroed() });
        apply(sig, &act)
    });
}

pub fn set_app(act: &libc::sigaction) {
    APP_FLAGS.store(act.sa_flags, Ordering::Relaxed);
    APP_HANDLER.store(act.sa_sigaction, Ordering::Release);
}

/// Installs the library's handler with the program's mask and flags. With no
/// handler of the program's, dump requests must not interrupt its system
/// calls (EINTR it never saw before): SA_RESTART.
pub fn apply(sig: c_int, app: &libc::sigaction) -> c_int {
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
pub fn with_app_action<R>(f: impl FnOnce(&mut Option<libc::sigaction>) -> R) -> R {
    crate::sys::signals::with_all_blocked(0, || {
        while APP_LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: APP_LOCK is held with every signal blocked (see AppAction).
        let r = f(unsafe { &mut *APP_ACTION.0.get() });
        APP_LOCK.store(false, Ordering::Release);
        r
    })
}

extern "C" fn on_signal(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    match classify(info) {
        Delivery::Request => {
            crate::sys::doorbell::ring();
            crate::collect::mode::wake();
        }
        Delivery::Nothing => {}
        Delivery::HandBack => hand_back(sig, info, ctx),
        // The collector took it in the moment before it followed the
        // program's new handler (`collector::run`), while the program's
        // threads block it: the program's handler must not run here, on a
        // thread it does not know (a `sigsuspend` of its would not return);
        // pending for the process, the signal reaches the thread that
        // unblocks it, as without the library.
        Delivery::Program if thread_state::with(|s| s.collector.get()) => {
            hand_back(sig, info, ctx);
            RESYNC.store(true, Ordering::Release);
            crate::sys::doorbell::ring();
        }
        Delivery::Program => {
            let handler = APP_HANDLER.load(Ordering::Acquire);
            let flags = APP_FLAGS.load(Ordering::Relaxed);
            if flags & libc::SA_RESETHAND != 0 {
                APP_HANDLER.store(libc::SIG_DFL, Ordering::Release);
            }
            // SAFETY: the program installed this handler for this signal,
            // with SA_SIGINFO saying which of the two forms it has.
            unsafe {
                if flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                        crate::sys::dl::function(handler as *mut c_void);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(c_int) = crate::sys::dl::function(handler as *mut c_void);
                    f(sig);
                }
            }
        }
    }
}

/// What a delivery of the dump signal is.
pub enum Delivery {
    /// A dump request, counted (the caller wakes whoever writes it).
    Request,
    Nothing,
    /// The program waits for the signal itself: queue it again.
    HandBack,
    /// For the program's handler.
    Program,
}

/// Counts a request (and notes a tagged one's token). Only atomics and raw
/// system calls: the helper of `single` classifies the deliveries it takes
/// with this too.
pub fn classify(info: *const libc::siginfo_t) -> Delivery {
    if let Some(token) = tagged_request(info) {
        REQUESTS.count_tagged(token);
        return Delivery::Request;
    }
    if tagged(info, DETACH_TAG).is_some() {
        DETACH.store(true, Ordering::Release);
        return Delivery::Request;
    }
    // Without a handler of the program's, only the collector thread has
    // the signal unblocked (even before it runs its first instruction).
    if program_waits() && !program_has_handler() {
        return Delivery::HandBack;
    }
    let external = is_external(info);
    let request = match APP_HANDLER.load(Ordering::Acquire) {
        libc::SIG_IGN => external,
        // Without a handler of the program's, every delivery asks for a
        // dump (the default action would have ended the process).
        libc::SIG_DFL => true,
        _ if external => true,
        _ => return Delivery::Program,
    };
    if !request {
        return Delivery::Nothing;
    }
    REQUESTS.count();
    Delivery::Request
}

/// At exit, on the exiting thread: deliveries still pending for the process
/// (the thread that takes them did not yet) are counted as `classify` says.
/// Only while the program has no use for the signal: then every thread of
/// the program blocks it, this one too, so it can take them.
pub fn take_pending() {
    let sig = dump_signal();
    if sig <= 0 || program_has_handler() || program_waits() {
        return;
    }
    // A bound: a program signalling itself from another thread meanwhile.
    for _ in 0..64 {
        let Some(info) = raw::sigtimedwait(raw::sigset(&[sig]), 0) else {
            return;
        };
        if let Delivery::HandBack | Delivery::Program = classify(&info) {
            // The program's after all (a handler installed meanwhile).
            let mut copy = info;
            copy.si_code = libc::SI_QUEUE;
            raw::sigqueue(sig, &copy);
            return;
        }
    }
}

/// A `sigqueue` from another process tagged by leakprobe: its token.
fn tagged_request(info: *const libc::siginfo_t) -> Option<u32> {
    tagged(info, TAG)
}

/// A `sigqueue` from another process whose value has `tag` in its high
/// half: the low half.
fn tagged(info: *const libc::siginfo_t, tag: u64) -> Option<u32> {
    if info.is_null() {
        return None;
    }
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    unsafe {
        let value = (*info).si_value().sival_ptr as u64;
        ((*info).si_code == libc::SI_QUEUE
            && (*info).si_pid() != raw::getpid()
            && value >> 32 == tag)
            .then_some(value as u32)
    }
}

/// A `kill` or `sigqueue` from outside: not the process itself (`raise`,
/// `pthread_kill`, a self-`kill`) and not one of its children (a worker
/// signalling its parent, known by /proc or, once reaped, by `CHILDREN`):
/// those belong to the program.
fn is_external(info: *const libc::siginfo_t) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: as in `tagged_request`.
    unsafe {
        let code = (*info).si_code;
        let pid = (*info).si_pid();
        (code == libc::SI_USER || code == libc::SI_QUEUE)
            && pid != raw::getpid()
            && !is_recent_child(pid)
            && parent_of(pid) != Some(raw::getpid())
    }
}

/// The children the program made last through `fork` or `posix_spawn`: one
/// that has exited and been reaped before its signal is classified has no
/// parent to read in /proc any more, and is still the program's.
static CHILDREN: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];
static NEXT_CHILD: AtomicUsize = AtomicUsize::new(0);

/// Notes a child the program made (in the parent, after `fork` or
/// `posix_spawn`).
pub fn note_child(pid: libc::pid_t) {
    let at = NEXT_CHILD.fetch_add(1, Ordering::Relaxed) % CHILDREN.len();
    if let Some(slot) = CHILDREN.get(at) {
        slot.store(pid, Ordering::Release);
    }
}

/// In a forked child: its parent's children are its siblings.
pub fn forget_children() {
    for c in &CHILDREN {
        c.store(0, Ordering::Relaxed);
    }
}

fn is_recent_child(pid: libc::pid_t) -> bool {
    pid > 0 && CHILDREN.iter().any(|c| c.load(Ordering::Acquire) == pid)
}

/// The parent of process `pid`, from `/proc/<pid>/stat` (async-signal-safe:
/// raw system calls into a stack buffer, `errno` untouched). None when it
/// cannot be read.
fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let mut digits = [0u8; 12];
    let digits = pid.to_string_in(&mut digits);
    // Zeroed: the byte after the name is its NUL.
    let mut path = [0u8; 32];
    for (at, &c) in b"/proc/".iter().chain(digits).chain(b"/stat").enumerate() {
        *path.get_mut(at)? = c;
    }
    let mut buf = [0u8; 512];
    let path = core::ffi::CStr::from_bytes_until_nul(&path).ok()?;
    let text = raw::read_file(path, &mut buf)?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let after = text.iter().rposition(|&b| b == b')')?;
    let mut fields = text
        .get(after + 1..)?
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    fields.next()?;
    let ppid = fields.next()?;
    let mut value: libc::pid_t = 0;
    for &d in ppid {
        value = value
            .checked_mul(10)?
            .checked_add(libc::pid_t::from(d.checked_sub(b'0').filter(|d| *d < 10)?))?;
    }
    Some(value)
}

/// Decimal digits of a number into a buffer, without allocating.
trait ToStringIn {
    fn to_string_in(self, buf: &mut [u8; 12]) -> &[u8];
}

impl ToStringIn for libc::pid_t {
    fn to_string_in(self, buf: &mut [u8; 12]) -> &[u8] {
        let mut n = self.unsigned_abs();
        let mut at = buf.len();
        loop {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 || at == 0 {
                break;
            }
        }
        &buf[at..]
    }
}

/// The program takes the signal itself (it waits for it, or has a handler),
/// but this delivery reached the collector before it blocked the signal:
/// queue it to the process again
/// (as SI_QUEUE: the kernel lets a thread queue a `kill`'s code only to
/// itself), and return to the collector with the signal blocked.
fn hand_back(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: `info` and `ctx` are the kernel's for this delivery; the
    // mask in the ucontext is what the thread returns to.
    unsafe {
        let mut copy = *info;
        copy.si_code = libc::SI_QUEUE;
        raw::sigqueue(sig, &copy);
        if let Some(uc) = (ctx as *mut libc::ucontext_t).as_mut() {
            uc.uc_sigmask = crate::sys::signals::with_member(&uc.uc_sigmask, sig, true);
        }
    }
}

fn next_sigaction() -> SigactionFn {
    crate::next::slot::sigaction.get()
}

pub fn is_dump_signal(sig: c_int) -> bool {
    sig > 0 && sig == DUMP_SIGNAL.load(Ordering::Acquire)
}

/// Whether the program waits for the dump signal itself.
pub fn program_waits() -> bool {
    PROGRAM_WAITS.load(Ordering::Relaxed)
}

/// The program is about to wait for the dump signal itself: true the first
/// time.
pub fn set_program_waits() -> bool {
    !PROGRAM_WAITS.swap(true, Ordering::Relaxed)
}

/// The program's disposition as it stands: the stored action, unless the
/// handler has since reset it to SIG_DFL (SA_RESETHAND; the handler cannot
/// take the lock to update the stored action).
pub fn current(view: &Option<libc::sigaction>) -> libc::sigaction {
    // SAFETY: sigaction is plain data; all zeroes is SIG_DFL, no flags.
    let mut act = view.unwrap_or_else(|| unsafe { core::mem::zeroed() });
    let handler = APP_HANDLER.load(Ordering::Acquire);
    if handler != act.sa_sigaction {
        act.sa_sigaction = handler;
        act.sa_flags &= !(libc::SA_SIGINFO | libc::SA_RESETHAND);
    }
    act
}
