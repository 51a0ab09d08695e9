//! Single-threaded programs keep glibc's fast paths. glibc's malloc skips
//! its arena lock and updates fastbins with plain stores while the process
//! has never had a second thread (`__libc_single_threaded`), and the first
//! `pthread_create` ends that for good: a collector thread started at load
//! cost a single-threaded JSON workload 1.55x. So while the program has one
//! thread, the library has none that glibc knows about:
//!
//! - samples are interned on the allocating thread (`collector::snapshot::record_inline`);
//! - the dump signal, blocked in the program's thread (`sigmask`), is taken
//!   with `rt_sigtimedwait` by a helper thread made with `clone` directly.
//!   Its thread pointer is the main thread's, so it touches no thread-local
//!   state, no `errno`, no allocator and no glibc function: only raw system
//!   calls (`raw`), atomics and the library's spin locks;
//! - a dump is written by a snapshot of the process: with the library's locks
//!   held (so the program's thread is outside its critical sections), the
//!   helper forks with `clone` (no `CLONE_VM`, sharing the descriptor table),
//!   and the child, whose thread pointer now names its own copy of the main
//!   thread's, writes the dump as a forked child would, with every allocation
//!   diverted to fresh pages (`next::divert`: its copy of the glibc heap may
//!   be mid-update). Nothing it does can reach the program's memory; what it
//!   did (numbering, written or not) comes back in a shared page.
//!
//! The program's thread never takes the dump signal, so none of its system
//! calls is cut short, and an idle program answers dumps. When the program
//! starts its second thread (`pthread_create`; or, seen on its next sampled
//! allocation, `__libc_single_threaded` cleared by another path or a thread
//! counted in /proc) the helper stops and the collector thread starts.
//! `LEAKPROBE_THREAD=always` starts the collector at load instead.
//!
//! A dump the copy cannot write (no copy can be made, or it died or hung)
//! is counted and said by the helper at once (`Line::emit_raw`), naming the
//! requests' tokens. If copies cannot be made, the program's next sampled
//! allocation starts the collector thread instead, when it can be started
//! (a sandbox that allows threads but not processes). `leakprobe_dump` and
//! the exit dump need no copy: their caller writes them (`collector::dump_to`).

use crate::collect::collector::snapshot::Failure;
use crate::collect::{collector, mode, signal};
use crate::next;
use crate::sys::{doorbell, raw};
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};

type Ptr = *mut c_void;

static STOP: AtomicBool = AtomicBool::new(false);
/// The helper's stack (mapped once, kept for a restart).
static STACK: AtomicUsize = AtomicUsize::new(0);
const STACK_BYTES: usize = 8 << 20;
/// The helper saw a thread the program made without glibc knowing.
static MORE_THREADS: AtomicBool = AtomicBool::new(false);
/// How often the helper looks around (a stop, threads made without glibc)
/// when nothing wakes it.
const IDLE_MS: u64 = 1000;
/// A snapshot child that has not finished by then is stopped
/// (`LEAKPROBE_COPY_TIMEOUT`).
fn child_timeout_ms() -> u64 {
    let secs = crate::settings::get().map(|s| s.copy_timeout_secs);
    secs.unwrap_or(crate::settings::DEFAULT_COPY_TIMEOUT_SECS) * 1000
}

/// `clone`'s error when the helper last could not copy the process (0: none).
static COPY_FAILED: AtomicI32 = AtomicI32::new(0);
/// Set while a thread hands the mode over to the collector thread.
static HANDING_OVER: AtomicBool = AtomicBool::new(false);
/// The collector thread could not be started: not tried again.
static NO_HAND_OVER: AtomicBool = AtomicBool::new(false);

/// At load: the collector starts the helper through `mode` (which does not
/// depend on this file).
pub fn register() {
    mode::set_start(start);
    crate::sys::process::at_exit(at_exit);
}

/// Starts single-threaded mode: the helper thread. The error if it cannot
/// be made (the caller starts the collector thread instead).
fn start() -> Result<(), i32> {
    // In a forked child the parent's helper is not there.
    mode::HELPER_TID.store(0, Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    MORE_THREADS.store(false, Ordering::Relaxed);
    COPY_FAILED.store(0, Ordering::Relaxed);
    NO_HAND_OVER.store(false, Ordering::Relaxed);
    HANDING_OVER.store(false, Ordering::Relaxed);
    if let Err(e) = spawn_helper() {
        mode::set_active(false);
        return Err(e);
    }
    mode::set_active(true);
    Ok(())
}

fn spawn_helper() -> Result<(), i32> {
    let mut stack = STACK.load(Ordering::Relaxed);
    if stack == 0 {
        let flags = libc::MAP_PRIVATE | libc::MAP_NORESERVE | libc::MAP_STACK;
        let p = raw::map_with(STACK_BYTES, flags)?;
        // A guard page below: an overflow faults instead of writing on.
        raw::guard(p, 4096);
        stack = p as usize;
        STACK.store(stack, Ordering::Relaxed);
    }
    raw::clone_thread(stack + STACK_BYTES, mode::HELPER_TID.as_ptr(), helper)
}

/// Whether a thread can be made now, asked without `pthread_create`, which
/// ends glibc's single-threaded state before it tries: a thread of our own
/// that exits at once.
fn threads_allowed() -> bool {
    let Ok(stack) = raw::map_with(4096, libc::MAP_PRIVATE | libc::MAP_STACK) else {
        return false;
    };
    extern "C" fn exit_now() -> ! {
        raw::exit_thread()
    }
    let tid = AtomicI32::new(0);
    let made = raw::clone_thread(stack as usize + 4096, tid.as_ptr(), exit_now).is_ok();
    // Cleared by the kernel once the thread no longer uses its stack, and
    // woken as a shared futex (a private wait would sleep its full second).
    while made && tid.load(Ordering::Acquire) != 0 {
        let seen = tid.load(Ordering::Acquire) as u32;
        raw::futex_wait_shared(tid.as_ptr() as *const u32, seen, 1000);
    }
    // SAFETY: the page mapped above; the thread that used it has exited.
    unsafe { raw::unmap(stack, 4096) };
    made
}

/// Stops the helper and waits until it has gone (a snapshot under way is
/// finished first).
fn stop_helper() {
    STOP.store(true, Ordering::Release);
    for _ in 0..(child_timeout_ms() + 10_000) {
        let tid = mode::HELPER_TID.load(Ordering::Acquire);
        if tid == 0 {
            return;
        }
        mode::wake_helper();
        doorbell::ring();
        // The kernel clears the word and wakes it (shared) when the helper
        // ends: no sleep longer than its way out.
        raw::futex_wait_shared(mode::HELPER_TID.as_ptr() as *const u32, tid as u32, 1);
    }
}

/// At exit (registered at load, so after the program's own exit handlers):
/// the helper stops, a snapshot under way finishing first (its copy would
/// die with the helper), and a request still pending is written here
/// (`collector::answer_at_exit`).
extern "C" fn at_exit() {
    if mode::active() {
        stop_helper();
    }
    collector::answer_at_exit();
}

/// The program has (or is about to have) a second thread: the collector
/// thread starts and the helper stops, as at load with
/// `LEAKPROBE_THREAD=always`. If the thread cannot start, the helper goes
/// on (copies work with more threads too), said once.
pub fn leave() {
    if let Err(e) = hand_over() {
        crate::sys::log::log!(
            "cannot start the collector thread ({}); dumps are still written by copies of \
             the process",
            mode::CloneError(e)
        );
    }
}

/// Starts the collector thread, then ends the mode (the helper answers
/// until the thread runs): Ok(true) if this call ended it. By one thread at
/// a time; not tried again once the thread could not be started.
fn hand_over() -> Result<bool, i32> {
    if !mode::active()
        || NO_HAND_OVER.load(Ordering::Relaxed)
        || HANDING_OVER.swap(true, Ordering::Acquire)
    {
        return Ok(false);
    }
    let started = collector::spawn_thread();
    let ended = started.is_ok() && mode::take_over();
    if ended {
        stop_helper();
    }
    NO_HAND_OVER.store(started.is_err(), Ordering::Relaxed);
    HANDING_OVER.store(false, Ordering::Release);
    started.map(|()| ended)
}

/// On a sampled allocation: a second thread made without `pthread_create`
/// (C11 `thrd_create`, a `SIGEV_THREAD` timer, `clone`) ends the mode too;
/// so do process copies that cannot be made, if a thread can be.
pub fn check_threads() {
    if !mode::active() {
        return;
    }
    if !mode::glibc_single() || MORE_THREADS.load(Ordering::Relaxed) {
        return leave();
    }
    let copy = COPY_FAILED.load(Ordering::Relaxed);
    if copy == 0 || NO_HAND_OVER.load(Ordering::Relaxed) {
        return;
    }
    // Said by the helper for each dump not written; nothing more if no
    // thread can be made either (the same cause, usually).
    if !threads_allowed() {
        NO_HAND_OVER.store(true, Ordering::Relaxed);
        return;
    }
    if hand_over() == Ok(true) {
        crate::sys::log::log!(
            "the collector thread answers dump requests from now on: copies of this \
             single-threaded process cannot be made (clone: {})",
            mode::CloneError(copy)
        );
    }
}

/// The program changed its credentials: the helper, which glibc does not
/// update (its set*id calls reach the threads it knows), is made again
/// from the calling thread, whose credentials it then has. Until then it
/// writes nothing (it waits for the stop).
pub fn credentials_changed() {
    if mode::active() {
        stop_helper();
        collector::spawn();
    }
}

extern "C" fn helper() -> ! {
    raw::set_mask(!0);
    let pid = raw::getpid();
    loop {
        if STOP.load(Ordering::Acquire) {
            raw::exit_thread();
        }
        // Read before the signal: the helper starts before the signal is
        // installed (`hook::signals::install` rings the doorbell after), and
        // a ring between the two reads must cut the wait short, or a request
        // in the program's first second waits up to `IDLE_MS` unanswered.
        let seen = doorbell::current();
        let sig = signal::dump_signal();
        mode::HELPER_SIGNAL.store(sig, Ordering::Relaxed);
        // As the collector: the signal is taken only while the program has
        // no use for it.
        if sig > 0 && !signal::program_waits() && !signal::program_has_handler() {
            if let Some(info) = raw::sigtimedwait(raw::sigset(&[sig]), IDLE_MS) {
                take(sig, &info, pid);
            }
        } else {
            raw::futex_wait(doorbell::word(), seen, IDLE_MS);
        }
        if STOP.load(Ordering::Acquire) {
            continue;
        }
        // A thread glibc does not know either (`clone`).
        if mode::threads().is_some_and(|n| n > 2) {
            MORE_THREADS.store(true, Ordering::Relaxed);
        }
        snapshot();
    }
}

/// A delivery the helper took.
fn take(sig: c_int, info: &libc::siginfo_t, pid: libc::pid_t) {
    // SAFETY: the kernel filled the siginfo for this signal.
    let from = unsafe { info.si_pid() };
    if info.si_code == libc::SI_TKILL && from == pid {
        // `wake`: the work is found by looking.
        return;
    }
    match signal::classify(info) {
        signal::Delivery::Request | signal::Delivery::Nothing => {}
        // The program's after all (it installed a handler, or waits for the
        // signal, since the helper started waiting): queue it again for the
        // program's thread, as `signal::hand_back` does.
        signal::Delivery::HandBack | signal::Delivery::Program => {
            let mut copy = *info;
            copy.si_code = libc::SI_QUEUE;
            raw::sigqueue(sig, &copy);
        }
    }
}

/// What a snapshot child reports, in a page it shares with the helper.
struct Report {
    done: AtomicU32,
    outcome: collector::snapshot::Outcome,
}

/// Writes the dump due now, if any, from a snapshot of the process.
fn snapshot() {
    let Some(job) = collector::snapshot::snapshot_begin() else {
        return;
    };
    let page = match raw::map_with(4096, libc::MAP_SHARED) {
        Ok(page) => page,
        Err(e) => {
            collector::snapshot::snapshot_release();
            return collector::snapshot::snapshot_end(job, Err(Failure::Page(e)));
        }
    };
    let report = page as *mut Report;
    let parent = raw::getpid();
    // Its files are the program's, as the collector's are; the program's
    // wait() and SIGCHLD never see it.
    let child = raw::copy_process();
    if child == Ok(0) {
        snapshot_child(job, report, parent);
    }
    collector::snapshot::snapshot_release();
    let outcome = match child {
        Err(e) => {
            COPY_FAILED.store(e, Ordering::Relaxed);
            Err(Failure::Copy(e))
        }
        // SAFETY: the shared page, mapped above.
        Ok(child) => reaped(child, unsafe { &(*report).done })
            // SAFETY: the child that wrote the page has exited.
            .map(|()| unsafe { (*report).outcome }),
    };
    collector::snapshot::snapshot_end(job, outcome);
    // SAFETY: the page mapped above; the child that used it has ended.
    unsafe { raw::unmap(page, 4096) };
}

/// Waits for the snapshot child's report (`done`, woken through it), or its
/// end; stops it after `child_timeout_ms`. Ok if it reported.
fn reaped(child: libc::pid_t, done: &AtomicU32) -> Result<(), Failure> {
    let mut status: c_int = 0;
    let mut wait = |options: c_int| raw::wait_copy(child, &mut status, options);
    let reported = || done.load(Ordering::Acquire) == 1;
    let mut waited = 0;
    while waited < child_timeout_ms() && !reported() {
        let rc = wait(libc::WNOHANG);
        if rc == child as isize || (rc < 0 && rc != -(libc::EINTR as isize)) {
            // Ended (reaped here, or by the program) without a report.
            let ended = (rc > 0).then_some(status);
            return if reported() {
                Ok(())
            } else {
                Err(Failure::Died(ended))
            };
        }
        raw::futex_wait_shared(done.as_ptr(), 0, 20);
        waited += 20;
    }
    if reported() {
        // It exits right after reporting.
        wait(0);
        return Ok(());
    }
    raw::kill(child, libc::SIGKILL);
    wait(0);
    Err(Failure::Hung {
        seconds: child_timeout_ms() / 1000,
    })
}

fn snapshot_child(job: collector::snapshot::Job, report: *mut Report, parent: libc::pid_t) -> ! {
    raw::die_with_parent();
    raw::write_for(parent);
    let before = next::divert(&next::Heap {
        malloc: heap::malloc,
        free: heap::free,
        calloc: heap::calloc,
        realloc: heap::realloc,
        posix_memalign: heap::posix_memalign,
        memalign: heap::memalign,
    });
    // SAFETY: the child has one thread, and nothing allocated yet.
    unsafe { *heap::NEXT.0.get() = Some(before) };
    let outcome = collector::snapshot::snapshot_child(job);
    // SAFETY: the shared page, mapped before the clone.
    unsafe {
        (*report).outcome = outcome;
        (*report).done.store(1, Ordering::Release);
        raw::futex_wake_shared((*report).done.as_ptr());
    }
    raw::exit_process()
}

/// The snapshot child's heap: bump allocation from fresh mappings, never
/// reused (the child lives for one dump). Blocks of the next allocator's
/// heap (copied from the parent) are never freed, and grown by copying.
mod heap {
    use super::*;

    /// Mapped chunks: (start, end); the current one is the last.
    static CHUNKS: [(AtomicUsize, AtomicUsize); 64] =
        [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 64];
    static USED: AtomicUsize = AtomicUsize::new(0);
    static AT: AtomicUsize = AtomicUsize::new(0);
    /// The next allocator's functions, from `next::divert`.
    pub struct Next(pub core::cell::UnsafeCell<Option<next::Diverted>>);
    // SAFETY: written once before the child allocates; it has one thread.
    unsafe impl Sync for Next {}
    pub static NEXT: Next = Next(core::cell::UnsafeCell::new(None));

    fn next_heap() -> Option<next::Diverted> {
        // SAFETY: see `Next`.
        unsafe { *NEXT.0.get() }
    }

    /// At the address-space limit (RLIMIT_AS) no page can be mapped, but
    /// the copied heap may have room the program freed: used then, in the
    /// hope the program's thread was not inside the allocator when the
    /// copy was made (if it was, the child may fail: a dump not written).
    fn from_next(size: usize, align: usize) -> Ptr {
        let Some(n) = next_heap() else {
            return core::ptr::null_mut();
        };
        // SAFETY: the next allocator's own functions, with valid arguments.
        unsafe {
            if align <= 16 {
                return (n.malloc)(size);
            }
            let mut p = core::ptr::null_mut();
            match (n.posix_memalign)(&mut p, align, size) {
                0 => p,
                _ => core::ptr::null_mut(),
            }
        }
    }
    const HEADER: usize = 16;

    fn ours(p: usize) -> bool {
        let used = USED.load(Ordering::Relaxed);
        CHUNKS[..used]
            .iter()
            .any(|(s, e)| (s.load(Ordering::Relaxed)..e.load(Ordering::Relaxed)).contains(&p))
    }

    fn alloc(size: usize, align: usize) -> Ptr {
        let align = align.max(HEADER);
        let Some(need) = size.checked_add(align + HEADER) else {
            return core::ptr::null_mut();
        };
        let used = USED.load(Ordering::Relaxed);
        let mut end = if used > 0 {
            CHUNKS[used - 1].1.load(Ordering::Relaxed)
        } else {
            0
        };
        let mut at = AT.load(Ordering::Relaxed);
        if at == 0 || end - at < need {
            if used == CHUNKS.len() {
                return from_next(size, align);
            }
            // Doubling from 1 MiB: a process near its address-space limit
            // (RLIMIT_AS) may still have room for the first ones.
            let len = need.max(1 << (20 + used.min(10))).next_multiple_of(4096);
            let Ok(p) = raw::map_with(len, libc::MAP_PRIVATE | libc::MAP_NORESERVE) else {
                return from_next(size, align);
            };
            at = p as usize;
            end = at + len;
            CHUNKS[used].0.store(at, Ordering::Relaxed);
            CHUNKS[used].1.store(end, Ordering::Relaxed);
            USED.store(used + 1, Ordering::Relaxed);
        }
        let start = (at + HEADER).next_multiple_of(align);
        AT.store(start + size, Ordering::Relaxed);
        // SAFETY: [start - HEADER, start + size) lies in a chunk of ours.
        unsafe { ((start - HEADER) as *mut usize).write(size) };
        start as Ptr
    }

    fn size_of(p: Ptr) -> usize {
        if ours(p as usize) {
            // SAFETY: written by `alloc` in front of the block.
            return unsafe { ((p as usize - HEADER) as *const usize).read() };
        }
        // SAFETY: a live block of the next allocator (copied from the
        // parent): its usable size only reads the block's header.
        next_heap().map_or(0, |n| unsafe { (n.usable)(p) })
    }

    pub unsafe extern "C" fn malloc(size: usize) -> Ptr {
        alloc(size, 16)
    }

    pub unsafe extern "C" fn free(_: Ptr) {}

    pub unsafe extern "C" fn calloc(n: usize, size: usize) -> Ptr {
        // Fresh pages are zero.
        n.checked_mul(size)
            .map_or(core::ptr::null_mut(), |s| alloc(s, 16))
    }

    pub unsafe extern "C" fn realloc(p: Ptr, size: usize) -> Ptr {
        let q = alloc(size, 16);
        if !p.is_null() && !q.is_null() {
            // SAFETY: `p` is a live block of at least `size_of(p)` bytes (the
            // contract), `q` a fresh one of `size`; they do not overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, size_of(p).min(size))
            };
        }
        q
    }

    pub unsafe extern "C" fn posix_memalign(out: *mut Ptr, align: usize, size: usize) -> c_int {
        let p = alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: `out` is the caller's valid pointer (the contract).
        unsafe { *out = p };
        0
    }

    pub unsafe extern "C" fn memalign(align: usize, size: usize) -> Ptr {
        alloc(size, align)
    }
}
