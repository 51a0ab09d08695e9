//! Thread stacks. glibc maps a new thread's stack with an internal call that
//! never reaches the interposed `mmap`, so `pthread_create` itself is
//! interposed: a sampled thread's stack size (its attribute's, or the
//! default: `RLIMIT_STACK`) is tracked as a `thread_stack` sample at the
//! creator's stack, from creation until glibc may reuse or free the stack:
//! at a successful `pthread_join` (or its try/timed/clock variants), when a
//! detached thread exits, or at `pthread_detach` of a thread that has exited.
//! A thread that is never joined keeps its stack for good, and so its row.
//! A stack the program supplies (`pthread_attr_setstack`) is its own memory,
//! counted where it came from: not tracked here.
//!
//! To see a sampled thread exit, its start routine is wrapped: the wrapper
//! sets a thread-specific value, whose destructor runs when the thread exits
//! (returns, `pthread_exit`, cancellation), then tail-calls the program's
//! routine. Unsampled threads are created as they are.

use crate::hook::sampled;
use crate::mapped::table::{self, Entry, Kind};
use crate::next;
use crate::sample::{sampling, thread_state};
use crate::unwind::stack::Stack;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;
/// The key whose destructor sees a sampled thread exit.
static KEY: AtomicU32 = AtomicU32::new(0);
static HAVE_KEY: AtomicBool = AtomicBool::new(false);

pub fn init() {
    if let Some(key) = crate::sys::threads::create_key(exited) {
        KEY.store(key, Ordering::Relaxed);
        HAVE_KEY.store(true, Ordering::Release);
    }
}

/// What the wrapper needs: the program's routine, its argument, the sample.
struct Start {
    start: StartFn,
    arg: *mut c_void,
    seq: u64,
}

extern "C" fn wrapper(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the Box made by `create_sampled`, handed over once.
    let Start { start, arg, seq } = *unsafe { Box::from_raw(p as *mut Start) };
    let me = crate::sys::threads::current() as usize;
    table::with_table(|t| {
        if let Some(e) = t.thread(|e| e.seq == seq) {
            e.thread = me;
        }
    });
    // The key exists (checked before a thread is wrapped); the value is a
    // non-null number.
    crate::sys::threads::set_specific(KEY.load(Ordering::Relaxed), seq as *const c_void);
    // Last: compiled as a tail call, the wrapper leaves no frame behind.
    start(arg)
}

/// Marks the sampled thread `pick` finds (exited, or detached): once it is
/// both, glibc takes its stack back and it stops counting.
fn settle(pick: impl Fn(&table::Entry) -> bool + Copy, mark: impl FnOnce(&mut table::Entry)) {
    table::with_table(|t| {
        let Some(e) = t.thread(pick) else {
            return;
        };
        mark(e);
        if e.exited && e.detached {
            t.remove_threads(pick);
        }
    });
}

/// The key's destructor: a sampled thread is exiting.
unsafe extern "C" fn exited(value: *mut c_void) {
    let seq = value as u64;
    settle(|e| e.seq == seq, |e| e.exited = true);
}

/// # Safety
/// As pthread_create(3).
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartFn,
    arg: *mut c_void,
) -> c_int {
    // A single-threaded program's helper (`collect::single`) hands over to
    // the collector thread (nothing once it has).
    crate::collect::single::leave();
    // SAFETY: the program's attribute, null or initialised (pthread_create(3)).
    let size = unsafe { crate::sys::threads::mapped_stack_size(attr) };
    if size == 0 || !thread_state::crosses(size) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { next::slot::pthread_create.get()(thread, attr, start, arg) };
    }
    // SAFETY: the program's arguments, unchanged.
    unsafe { create_sampled(thread, attr, start, arg, size) }
}

/// # Safety
/// As pthread_create(3).
#[cold]
#[inline(never)]
unsafe fn create_sampled(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartFn,
    arg: *mut c_void,
    size: usize,
) -> c_int {
    let mut stack = Stack::new();
    let entry = sampled::Api::PthreadCreate.address();
    let sampled = sampling::decide(size)
        && HAVE_KEY.load(Ordering::Acquire)
        && sampling::while_busy(|| sampled::capture_mapped(entry, &mut stack));
    if !sampled {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { next::slot::pthread_create.get()(thread, attr, start, arg) };
    }
    // SAFETY: the program's attribute, null or initialised (the contract).
    let detached = unsafe { crate::sys::threads::starts_detached(attr) };
    let seq = table::next_seq();
    // Tracked before the thread runs, so its exit always finds the entry.
    table::with_table(|t| {
        t.add_thread(Entry {
            start: 0,
            end: size,
            size,
            seq,
            stack: table::PENDING,
            kind: Kind::ThreadStack,
            born: table::now(),
            thread: 0,
            detached,
            exited: false,
        })
    });
    let boxed = sampling::while_busy(|| Box::into_raw(Box::new(Start { start, arg, seq })));
    // SAFETY: the program's arguments, its routine and argument wrapped in
    // `boxed`, which `wrapper` takes over.
    let rc = unsafe { next::slot::pthread_create.get()(thread, attr, wrapper, boxed.cast()) };
    crate::sys::errno::preserved(|| {
        if rc != 0 {
            // SAFETY: no thread was created: the box is still ours alone.
            sampling::while_busy(|| drop(unsafe { Box::from_raw(boxed) }));
            table::with_table(|t| t.remove_threads(|e| e.seq == seq));
            return;
        }
        // SAFETY: pthread_create succeeded, so it stored the id in `*thread`.
        let id = unsafe { *thread } as usize;
        table::with_table(|t| {
            if let Some(e) = t.thread(|e| e.seq == seq) {
                e.thread = id;
            }
        });
        sampled::record_mapped(Kind::ThreadStack, seq, size, &stack);
    });
    rc
}

/// A joined thread's stack goes back to glibc (a join that succeeded).
fn joined(rc: c_int, thread: libc::pthread_t) {
    if rc == 0 && table::THREADS.load(Ordering::Relaxed) != 0 {
        table::with_table(|t| t.remove_threads(|e| e.thread == thread as usize));
    }
}

forwarding!(
    pthread_join(thread: libc::pthread_t, ret: *mut *mut c_void) -> c_int,
    before = || {},
    then = |rc: &c_int| joined(*rc, thread)
);
forwarding!(
    pthread_tryjoin_np(thread: libc::pthread_t, ret: *mut *mut c_void) -> c_int,
    before = || {},
    then = |rc: &c_int| joined(*rc, thread)
);
forwarding!(
    pthread_timedjoin_np(
        thread: libc::pthread_t,
        ret: *mut *mut c_void,
        abstime: *const libc::timespec
    ) -> c_int,
    before = || {},
    then = |rc: &c_int| joined(*rc, thread)
);
forwarding!(
    pthread_clockjoin_np(
        thread: libc::pthread_t,
        ret: *mut *mut c_void,
        clock: libc::clockid_t,
        abstime: *const libc::timespec
    ) -> c_int,
    before = || {},
    then = |rc: &c_int| joined(*rc, thread)
);
forwarding!(
    pthread_detach(thread: libc::pthread_t) -> c_int,
    before = || {},
    then = |rc: &c_int| {
        if *rc == 0 && table::THREADS.load(Ordering::Relaxed) != 0 {
            let id = thread as usize;
            settle(|e| e.thread == id, |e| e.detached = true);
        }
    }
);
