//! The background collector: drains the ring, interns stacks, keeps the
//! cumulative per-(stack, size) totals, resolves live entries to interned
//! stacks, and writes a dump when the signal asks for one.

pub mod fork;
mod mapped;
mod schedule;
pub mod snapshot;
mod write;

use crate::collect::request::REQUESTS;
use crate::collect::ring::{self, Sample};
use crate::collect::{mode, signal};
use crate::mapped::table::Kind;
use crate::profile::dumpdir::DumpDir;
use crate::profile::objects;
use crate::sample::live::{self, Entry, PENDING};
use crate::sample::sampling;
use crate::settings::{self, Settings};
use crate::sys::doorbell;
use crate::sys::lock::SpinLock;
use crate::sys::signals::{block_here, with_all_blocked};
use crate::sys::word_hash::WordMap;
use crate::unwind::walk;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Samples absorbed per lock hold, so `fork` never waits long for the lock.
const BATCH: usize = 1024;
/// How long the collector sleeps when nothing wakes it (also the precision
/// of periodic dumps).
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Stack id for live entries whose stack was lost (see `fork_child`).
const LOST: u32 = PENDING - 1;

struct Collector {
    ids: WordMap<Box<[usize]>, u32>,
    stacks: Vec<Box<[usize]>>,
    /// The stack id `intern` found last.
    last: u32,
    /// Cumulative sampled (count, bytes) per (stack, requested size).
    allocated: WordMap<(u32, usize), (u64, u64)>,
    requests_served: u32,
    /// Tokens of tagged requests already answered (`Requests::take_tokens`).
    tokens_seen: u32,
    /// Tokens the dump being written answers.
    answering: Vec<u32>,
    /// Number of the next `leakprobe.<pid>.<n>.heap`.
    next_number: u64,
    dir: DumpDir,
    snapshot: Vec<Entry>,
    /// Estimated bytes allocated since start (un-sampled), for `LEAKPROBE_INTERVAL`.
    allocated_bytes: f64,
    automatic: schedule::Automatic,
    /// Numbers of the dumps kept, oldest first, for `LEAKPROBE_MAX_DUMPS`.
    kept: std::collections::VecDeque<u64>,
    /// The automatic dumps kept, oldest first, for `LEAKPROBE_KEEP`.
    automatic_kept: std::collections::VecDeque<write::AutomaticDump>,
    /// Cumulative sampled (count, bytes) of mapped memory per (kind, stack,
    /// size); its stacks are interned with the heap's.
    mapped_allocated: WordMap<(Kind, u32, usize), (u64, u64)>,
    /// Where dumps go besides the dump directory (`sink::others`).
    sinks: Vec<Box<dyn crate::collect::sink::Sink + Send>>,
}

static STATE: SpinLock<Option<Collector>> = SpinLock::new(None);
/// Set in a forked child: the collector thread did not survive the fork.
static NEEDS_THREAD: AtomicBool = AtomicBool::new(false);
/// Neither the collector thread nor the helper of `single` could be started.
static NO_THREAD: AtomicBool = AtomicBool::new(false);
/// Dumps not written because the library's allocations were refused
/// (`write`; a snapshot copy's count comes back through `snapshot`).
static FAILED_FOR_MEMORY: AtomicU64 = AtomicU64::new(0);
/// Snapshots that wrote nothing (no child, or one that failed or hung):
/// counted by `snapshot`, said in every dump by `write`.
static SNAPSHOTS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Rounds of the collector (about 100 ms each when idle) after an attach
/// that rewrite the GOT entries again.
const SETTLING_ROUNDS: u32 = 20;

/// The collector thread's name when attached (`scripts/leakprobe_tool/attach.py`).
const THREAD_NAME: &core::ffi::CStr = c"leakprobe";

/// Attached to a running program (`hook::attach`) and not detached since.
static ATTACHED: AtomicBool = AtomicBool::new(false);
/// `hook::attach`'s look for objects loaded since (a `fn()`), while attached.
static RESCAN: AtomicUsize = AtomicUsize::new(0);
/// The collector thread's id once it runs (0 before, and after a detach).
static THREAD_ID: AtomicI32 = AtomicI32::new(0);

/// Whether the library is attached to a running program now.
pub fn attached() -> bool {
    ATTACHED.load(Ordering::Acquire)
}

/// Attached: the collector calls `rescan` on each round the loaded objects
/// changed, and ends when asked to detach.
pub fn set_attached(rescan: fn()) {
    RESCAN.store(rescan as usize, Ordering::Release);
    ATTACHED.store(true, Ordering::Release);
}

/// The collector thread's id, waiting up to `timeout` for it to start.
pub fn thread_id(timeout: Duration) -> Option<i32> {
    let deadline = crate::sys::clock::monotonic() + timeout;
    loop {
        let tid = THREAD_ID.load(Ordering::Acquire);
        if tid != 0 {
            return Some(tid);
        }
        if NO_THREAD.load(Ordering::Relaxed) || crate::sys::clock::monotonic() > deadline {
            return None;
        }
        // A futex wait, not a sleep: this may run on a thread that
        // `scripts/leakprobe attach` borrowed in the middle of the program's
        // own `nanosleep`, which the kernel restarts afterwards from the
        // thread's restart block, and `nanosleep` would reset that block.
        crate::sys::raw::futex_wait(THREAD_ID.as_ptr().cast::<u32>(), 0, 1);
    }
}

/// Attached again after a detach: the state is kept (stacks, numbering),
/// the live table starts empty, and the thread and the handler come back.
pub fn restart(cfg: &'static Settings) {
    live::clear();
    spawn();
    signal::install(cfg.signal);
}

/// On the collector thread, asked to detach: every GOT entry back, no more
/// samples, the program's disposition of the signal back in the kernel.
/// The thread then ends; the code stays mapped (a thread may still be
/// inside an entry point, and returns through it).
fn detach() {
    // No sample from here on: a block sampled while its `free` is already
    // restored would stay live (the table is cleared below anyway).
    sampling::enable(0);
    let (restored, changed) = crate::sys::got::restore();
    signal::uninstall();
    live::clear();
    THREAD_ID.store(0, Ordering::Release);
    ATTACHED.store(false, Ordering::Release);
    crate::profile::published::attached(None);
    crate::sys::log::log!(
        "detached: {restored} GOT entries restored{}; the library stays mapped, unused",
        if changed > 0 {
            format!(" ({changed} changed by the program since, left as they are)")
        } else {
            String::new()
        }
    );
}

/// A fingerprint of the loaded objects (how many, where), to see new ones.
fn objects_now() -> usize {
    let mut print = 0usize;
    crate::sys::dl::each_object(|o| {
        print = print.wrapping_mul(31).wrapping_add(o.base as usize ^ 1);
    });
    print
}

pub fn start(cfg: &'static Settings) {
    objects::program_path();
    objects::argv0();
    ring::renew();
    STATE.with(|s| *s = Some(Collector::new(cfg)));
    crate::unwind::frames::set_drain(absorb_at_vm_death);
    fork::register();
    spawn();
}

/// Requests a dump (to `target`, or the dump directory) and waits until the
/// collector has written it or failed (or `timeout` passes). True if written.
/// With no collector thread to ask, the calling thread writes it.
pub fn dump_to(target: Option<std::path::PathBuf>, timeout: Duration) -> bool {
    ensure_running();
    if mode::active() || NO_THREAD.load(Ordering::Relaxed) {
        return dump_here(target);
    }
    REQUESTS.dump_to(target, timeout)
}

/// The calling thread writes the dump: in a single-threaded program (no
/// process copy is needed: the caller, `leakprobe_dump` or the exit dump,
/// is outside any signal handler, as the API requires, and any critical
/// section of the library), or where no thread could be started. It
/// answers the requests pending too, as the collector does.
fn dump_here(target: Option<std::path::PathBuf>) -> bool {
    sampling::while_busy(|| {
        STATE.with(|s| {
            let Some(c) = s.as_mut() else {
                return false;
            };
            // Under the state lock: a snapshot (`single`) cannot take it.
            REQUESTS.set_target(target);
            c.requests_served = REQUESTS.asked();
            c.answering = REQUESTS.take_tokens(&mut c.tokens_seen);
            while c.absorb(usize::MAX) {}
            let written = c.dump();
            c.answering.clear();
            written
        })
    })
}

/// `LEAKPROBE_DUMP_AT_EXIT`: registered with atexit() when the library loads,
/// so it runs after the program's own exit handlers.
pub extern "C" fn dump_at_exit() {
    crate::sys::log::exiting();
    // Deliveries not yet taken are answered by this dump too.
    signal::take_pending();
    if !dump_to(None, std::time::Duration::from_secs(10)) {
        crate::sys::log::log!("the exit dump was not written");
    }
}

/// At exit, after the program's exit handlers (and the single-threaded
/// mode's helper stopped): a request that came in just before the program
/// ended, still pending as a signal or not answered yet, is written here by
/// the exiting thread, or said in one line.
pub fn answer_at_exit() {
    crate::sys::log::exiting();
    signal::take_pending();
    // The collector may hold its state a while (a dump under way, a full
    // stderr): the exit waits for it 5 s at most.
    let deadline = crate::sys::clock::monotonic() + Duration::from_secs(5);
    while !STATE.try_acquire() {
        if crate::sys::clock::monotonic() > deadline {
            crate::sys::log::log!(
                "the program exited while a dump was being written (the collector was busy for 5 s)"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: acquired just above, released below, no other reference made.
    let unanswered = unsafe { STATE.held() }
        .as_ref()
        .is_some_and(|c| c.requests_served != REQUESTS.asked());
    STATE.release();
    if unanswered && !dump_to(None, Duration::from_secs(5)) {
        crate::sys::log::log!("a dump requested before the program exited was not written");
    }
}

/// At a JVM's VMDeath, on the exiting thread: interns what the ring holds,
/// so that stacks sampled since the collector's last round get their Java
/// frames named while the VM still answers. Gives up after 100 ms if the
/// collector keeps its state that long (a dump held up by a full stderr).
fn absorb_at_vm_death() {
    let deadline = crate::sys::clock::monotonic() + Duration::from_millis(100);
    while !STATE.try_acquire() {
        if crate::sys::clock::monotonic() > deadline {
            return;
        }
        crate::sys::raw::yield_now();
    }
    // SAFETY: acquired just above, released below, no other reference made.
    if let Some(c) = unsafe { STATE.held() } {
        while c.absorb(usize::MAX) {}
    }
    STATE.release();
}

/// Restarts the collector thread in a forked child.
pub fn ensure_running() {
    if NEEDS_THREAD.load(Ordering::Relaxed) && NEEDS_THREAD.swap(false, Ordering::Relaxed) {
        spawn();
    }
}

/// Starts the collector thread, or, in a single-threaded program (and in
/// the forked child of one), the single-threaded mode's helper (`single`,
/// started through `mode`). If it cannot be made: one line, and dumps are
/// written only where the program asks for them (`dump_here`). (When the
/// helper cannot be made, neither can the collector thread: the same
/// `clone`; and trying `pthread_create` would end glibc's single-threaded
/// state for nothing.)
pub fn spawn() {
    let single = mode::active() || settings::get().is_some_and(mode::wanted);
    let started = if single {
        mode::start_helper()
    } else {
        spawn_thread()
    };
    NO_THREAD.store(started.is_err(), Ordering::Relaxed);
    use crate::profile::published::{refuse, Refusal};
    match started {
        Ok(()) => refuse(Refusal::NoTaker, None),
        Err(e) => refuse(
            Refusal::NoTaker,
            Some(format_args!(
                "nothing can take dump signals (no thread could be started: {}); they are \
                 answered only when the program exits",
                mode::CloneError(e)
            )),
        ),
    }
    if let Err(e) = started {
        crate::sys::log::log!(
            "cannot start {} ({}): dump signals are answered only when the program exits; leakprobe_dump() and \
             LEAKPROBE_DUMP_AT_EXIT still write dumps, on the calling thread",
            if single {
                "the thread that takes dump signals in a single-threaded program"
            } else {
                "the collector thread"
            },
            mode::CloneError(e)
        );
    }
}

/// Starts the collector thread. A raw pthread rather than `std::thread`, so
/// that nothing runs on it before it stops sampling itself. Every signal but
/// the dump signal is blocked on it, so no handler of the program runs on it;
/// the dump signal, blocked in the program's threads (`sigmask`), is taken
/// here. Its creation is not sampled either. The error if it cannot be made.
pub fn spawn_thread() -> Result<(), i32> {
    sampling::while_busy(|| {
        let sig = settings::get().map_or(0, |c| c.signal);
        let rc = with_all_blocked(sig, || {
            let attr = crate::sys::threads::DetachedAttr::new();
            let mut thread: libc::pthread_t = 0;
            let create = crate::next::slot::pthread_create.get();
            // SAFETY: initialised arguments; `run` never returns, and the
            // thread is detached: it needs no join.
            unsafe { create(&mut thread, attr.as_ptr(), run, core::ptr::null_mut()) }
        });
        match rc {
            0 => Ok(()),
            e => Err(e),
        }
    })
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    sampling::exclude_this_thread();
    crate::sample::thread_state::with(|s| s.collector.set(true));
    let mut takes_signal = true;
    if crate::sys::dl::loaded_late() {
        // How `scripts/leakprobe attach` finds it in a JVM (`Agent_OnAttach`
        // returns only a status).
        crate::sys::threads::set_name(THREAD_NAME);
    }
    THREAD_ID.store(crate::sys::raw::gettid(), Ordering::Release);
    if attached() {
        // A forked child's collector: its own thread takes the signal.
        crate::profile::published::attached(Some(crate::sys::raw::gettid()));
    }
    let mut objects = 0;
    // Rounds after an attach that rewrite again whatever changed: a
    // lazy-binding resolution under way during the rewrite writes the
    // program's definition over an entry just rewritten.
    let mut settling = SETTLING_ROUNDS;
    loop {
        if attached() {
            if signal::take_detach() {
                detach();
                return core::ptr::null_mut();
            }
            let now = objects_now();
            if now != objects || settling > 0 {
                objects = now;
                settling = settling.saturating_sub(1);
                let rescan = RESCAN.load(Ordering::Acquire);
                if rescan != 0 {
                    // SAFETY: only `set_attached` stores, a `fn()`.
                    unsafe { core::mem::transmute::<usize, fn()>(rescan)() };
                }
            }
        }
        let seen = doorbell::current();
        // The signal is taken here only while the program has no use for it:
        // a handler of the program's runs on the program's threads, as it
        // would without the library, and a program that waits for the
        // signal gets every delivery.
        let wanted = !signal::program_waits() && !signal::program_has_handler();
        if wanted != takes_signal || signal::take_resync() {
            takes_signal = wanted;
            block_here(settings::get().map_or(0, |c| c.signal), !wanted);
        }
        while fork::FORK_PENDING.load(Ordering::Acquire) {
            crate::sys::raw::yield_now();
        }
        let more = STATE.with(|s| s.as_mut().is_some_and(Collector::step));
        // After the step: the methods of the stacks it interned are named in
        // this round (a sample with a new method woke it for that).
        crate::unwind::frames::poll();
        if !more {
            doorbell::wait(seen, crate::unwind::frames::idle_wait(IDLE_WAIT));
        }
    }
}

impl Collector {
    fn new(cfg: &Settings) -> Collector {
        Collector {
            ids: WordMap::default(),
            stacks: Vec::new(),
            last: 0,
            allocated: WordMap::default(),
            requests_served: REQUESTS.asked(),
            tokens_seen: 0,
            answering: Vec::new(),
            next_number: 0,
            dir: DumpDir::open(&cfg.dir, true),
            snapshot: Vec::new(),
            allocated_bytes: 0.0,
            automatic: schedule::Automatic::new(cfg),
            // Room the single-threaded mode's helper can use without
            // allocating (`snapshot_end`).
            kept: std::collections::VecDeque::with_capacity(
                cfg.max_dumps.min(snapshot::KEPT_ROOM) + 1,
            ),
            automatic_kept: std::collections::VecDeque::new(),
            mapped_allocated: WordMap::default(),
            sinks: crate::collect::sink::others(cfg),
        }
    }

    /// One round of work. True if the ring still holds more.
    fn step(&mut self) -> bool {
        let more = self.absorb(BATCH);
        let requests = REQUESTS.asked();
        if requests != self.requests_served {
            // A burst of signals yields one dump.
            self.requests_served = requests;
            self.answering = REQUESTS.take_tokens(&mut self.tokens_seen);
            while self.absorb(usize::MAX) {}
            self.dump();
            self.answering.clear();
        } else if self.automatic.due(self.allocated_bytes) {
            self.dump_automatic();
        } else if live::take_peak_request() {
            while self.absorb(usize::MAX) {}
            self.dump_peak();
        }
        more
    }

    fn absorb(&mut self, limit: usize) -> bool {
        for _ in 0..limit {
            let Some(sample) = ring::pop() else {
                return false;
            };
            self.take(&sample);
        }
        true
    }

    /// A sample from the ring (or, in single-threaded mode, from the
    /// allocating thread): its stack interned and counted, and its live
    /// entry (heap) or tracked range (mapped) given the stack.
    #[inline(always)]
    fn take(&mut self, s: &Sample) {
        match s.kind() {
            None => {
                if let Some(id) = self.intern(s) {
                    live::update(s.ptr, s.seq, |e| e.stack = id);
                }
            }
            Some(kind) => {
                let id = self.intern_mapped(s, kind);
                crate::mapped::table::with_table(|t| t.set_stack(s.seq, id));
            }
        }
    }

    /// Interns a heap sample's stack and counts it; its stack id.
    fn intern(&mut self, s: &Sample) -> Option<u32> {
        // At the memory limit, a table that cannot grow leaves the sample
        // unresolved (so reported) rather than abort the process.
        if self.allocated.try_reserve(1).is_err() {
            return None;
        }
        let id = self.stack_id(s)?;
        self.allocated_bytes += sampling::estimated_bytes(s.size, sampling::period());
        let total = self.allocated.entry((id, s.size)).or_default();
        total.0 += 1;
        total.1 += s.size as u64;
        Some(id)
    }

    /// Interns a mapped sample's stack and counts it; its stack id (None:
    /// the entry stops being tracked, counted as dropped).
    fn intern_mapped(&mut self, s: &Sample, kind: Kind) -> Option<u32> {
        let id = match self.mapped_allocated.try_reserve(1) {
            Ok(()) => self.stack_id(s),
            Err(_) => None,
        };
        let Some(id) = id else {
            crate::mapped::table::count_dropped();
            return None;
        };
        let total = self.mapped_allocated.entry((kind, id, s.size)).or_default();
        total.0 += 1;
        total.1 += s.size as u64;
        Some(id)
    }

    /// The id of a sample's stack in the one intern table, interned if new.
    #[inline(always)]
    fn stack_id(&mut self, s: &Sample) -> Option<u32> {
        if self.ids.try_reserve(1).is_err() || self.stacks.try_reserve(1).is_err() {
            return None;
        }
        let frames = s.stack.frames();
        // Samples often come in runs from one stack (a loop): the last one
        // found needs no hashing.
        let found = if self
            .stacks
            .get(self.last as usize)
            .is_some_and(|l| **l == *frames)
        {
            Some(self.last)
        } else {
            self.ids.get(frames).copied()
        };
        let id = match found {
            Some(id) => id,
            None => {
                let id = self.stacks.len() as u32;
                self.stacks.push(frames.into());
                self.ids.insert(frames.into(), id);
                crate::unwind::frames::note_stack(frames);
                id
            }
        };
        self.last = id;
        Some(id)
    }

    /// The library's own memory: live tables and the pages of their filter
    /// samples wrote, ring, interned stacks and totals (the maps' own
    /// overhead approximated).
    fn overhead_bytes(&self) -> usize {
        let stacks: usize = self.stacks.iter().map(|s| s.len() * 8).sum();
        live::table_bytes()
            + live::filter_bytes()
            + crate::mapped::table::table_bytes()
            + ring::bytes()
            + walk::cache_bytes()
            + 2 * stacks
            + self.ids.len() * 32
            + self.allocated.len() * 48
    }
}
