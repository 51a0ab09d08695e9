//! The background collector: drains the ring, interns stacks, keeps the
//! cumulative per-(stack, size) totals, resolves live entries to interned
//! stacks, and writes a dump when the signal asks for one.

use crate::collect::request::REQUESTS;
use crate::collect::ring::{self, Sample};
use crate::collect::{mode, signal};
use crate::next::{self, global_alloc};
use crate::profile::accounting;
use crate::profile::dump::{self, Row};
use crate::profile::dumpdir::DumpDir;
use crate::profile::objects;
use crate::sample::live::{self, Entry, PENDING};
use crate::sample::sampling;
use crate::settings::{self, Settings};
use crate::sys::lock::SpinLock;
use crate::sys::signals::{block_here, with_all_blocked};
use crate::sys::word_hash::WordMap;
use crate::sys::{clock, doorbell};
use crate::unwind::{stack, walk};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    automatic: Automatic,
    /// Numbers of the dumps kept, oldest first, for `LEAKPROBE_MAX_DUMPS`.
    kept: std::collections::VecDeque<u64>,
}

/// When the next automatic dump is due (`LEAKPROBE_PERIOD`, `LEAKPROBE_INTERVAL`).
struct Automatic {
    period: Option<Duration>,
    interval: Option<f64>,
    next_time: Duration,
    next_bytes: f64,
    last: Option<Duration>,
}

/// Automatic dumps are at most this frequent, whatever the settings.
const MIN_AUTOMATIC_GAP: Duration = Duration::from_secs(1);

impl Automatic {
    fn new(cfg: &Settings) -> Automatic {
        let period = (cfg.dump_every_secs > 0).then(|| Duration::from_secs(cfg.dump_every_secs));
        let interval = (cfg.dump_every_bytes > 0).then_some(cfg.dump_every_bytes as f64);
        Automatic {
            period,
            interval,
            next_time: clock::monotonic().saturating_add(period.unwrap_or_default()),
            next_bytes: interval.unwrap_or(0.0),
            last: None,
        }
    }

    /// Whether a dump is due now, given the estimated bytes allocated so far;
    /// if so, the next one is scheduled.
    fn due(&mut self, allocated: f64) -> bool {
        let now = clock::monotonic();
        if self
            .last
            .is_some_and(|t| now < t.saturating_add(MIN_AUTOMATIC_GAP))
        {
            return false;
        }
        let by_time = self.period.is_some_and(|_| now >= self.next_time);
        let by_bytes = self.interval.is_some_and(|_| allocated >= self.next_bytes);
        if let (true, Some(p)) = (by_time, self.period) {
            // Keep the cadence; after a long stall, start again from now.
            self.next_time = self.next_time.saturating_add(p).max(now);
        }
        if let (true, Some(i)) = (by_bytes, self.interval) {
            self.next_bytes = ((allocated / i).floor() + 1.0) * i;
        }
        if by_time || by_bytes {
            self.last = Some(now);
        }
        by_time || by_bytes
    }
}

static STATE: SpinLock<Option<Collector>> = SpinLock::new(None);
/// Set in a forked child: the collector thread did not survive the fork.
static NEEDS_THREAD: AtomicBool = AtomicBool::new(false);
/// Set while a fork waits for the state lock: the collector then stays out,
/// so a stream of dump requests cannot starve the fork.
static FORK_PENDING: AtomicBool = AtomicBool::new(false);
/// Set by the fork prepare handler when it got the state lock.
static FORK_HAS_STATE: AtomicBool = AtomicBool::new(false);
/// Set while a fork is prepared: new samples wait, so that every sample is
/// either in the ring (drained before the fork) or not begun.
static FORK_GATE: AtomicBool = AtomicBool::new(false);
/// Samples between their live-table insert and their ring push.
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);

/// A sample being recorded (see `FORK_GATE`): a shared counter, touched on
/// the sampled path only.
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> InFlight {
        loop {
            while FORK_GATE.load(Ordering::SeqCst) {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
            if !FORK_GATE.load(Ordering::SeqCst) {
                return InFlight(());
            }
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn start(cfg: &'static Settings) {
    objects::program_path();
    objects::argv0();
    ring::renew();
    STATE.with(|s| *s = Some(Collector::new(cfg)));
    // SAFETY: registering plain extern "C" handlers.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    spawn();
}

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
    static NEXT: core::sync::atomic::AtomicPtr<libc::c_void> =
        core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
    type Next = unsafe extern "C" fn() -> libc::pid_t;
    let symbol = crate::sys::dl::symbol(&NEXT, c"fork");
    // SAFETY: the symbol of this name has this type.
    let next = unsafe { core::mem::transmute::<*mut libc::c_void, Next>(symbol) };
    // SAFETY: fork takes no arguments; the handlers of `pthread_atfork` run.
    let pid = unsafe { next() };
    if pid == 0 {
        ensure_running();
    }
    pid
}

/// Requests a dump (to `target`, or the dump directory) and waits until the
/// collector has written it or failed (or `timeout` passes). True if written.
pub fn dump_to(target: Option<std::path::PathBuf>, timeout: Duration) -> bool {
    ensure_running();
    REQUESTS.dump_to(target, timeout)
}

/// `LEAKPROBE_DUMP_AT_EXIT`: registered with atexit() when the library loads,
/// so it runs after the program's own exit handlers.
pub extern "C" fn dump_at_exit() {
    if !dump_to(None, std::time::Duration::from_secs(10)) {
        crate::sys::log::log!("the exit dump was not written");
    }
}

/// Restarts the collector thread in a forked child.
pub fn ensure_running() {
    if NEEDS_THREAD.load(Ordering::Relaxed) && NEEDS_THREAD.swap(false, Ordering::Relaxed) {
        spawn();
    }
}

/// Starts the collector thread, or, in a single-threaded program (and in
/// the forked child of one), the single-threaded mode's helper (`single`,
/// started through `mode`).
fn spawn() {
    let single = mode::active() || settings::get().is_some_and(mode::wanted);
    if !(single && mode::start_helper()) {
        spawn_thread();
    }
}

/// Starts the collector thread. A raw pthread rather than `std::thread`, so
/// that nothing runs on it before it stops sampling itself. Every signal but
/// the dump signal is blocked on it, so no handler of the program runs on it;
/// the dump signal, blocked in the program's threads (`sigmask`), is taken
/// here. Its creation is not sampled either.
pub fn spawn_thread() {
    sampling::while_busy(|| {
        let sig = settings::get().map_or(0, |c| c.signal);
        // SAFETY: plain pthread calls with initialised arguments; `run` never
        // returns, so the thread needs no join.
        let rc = with_all_blocked(sig, || unsafe {
            let mut attr: libc::pthread_attr_t = core::mem::zeroed();
            // The default stack size: glibc carves the program's static TLS
            // out of the stack, so a small fixed size fails (EINVAL) in
            // programs with large thread-locals. Untouched pages cost nothing.
            libc::pthread_attr_init(&mut attr);
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            let mut thread: libc::pthread_t = 0;
            let create = crate::mapped::thread_stacks::real_create();
            let rc = create(&mut thread, &attr, run, core::ptr::null_mut());
            libc::pthread_attr_destroy(&mut attr);
            rc
        });
        if rc != 0 {
            crate::sys::log::log!(
                "cannot start the collector thread (error {rc}); no dumps will be written"
            );
        }
    });
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    sampling::exclude_this_thread();
    let mut takes_signal = true;
    loop {
        let seen = doorbell::current();
        // The signal is taken here only while the program has no use for it:
        // a handler of the program's runs on the program's threads, as it
        // would without the library, and a program that waits for the
        // signal gets every delivery.
        let wanted = !signal::program_waits() && !signal::program_has_handler();
        if wanted != takes_signal {
            takes_signal = wanted;
            block_here(settings::get().map_or(0, |c| c.signal), !wanted);
        }
        while FORK_PENDING.load(Ordering::Acquire) {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        crate::unwind::java::poll();
        let more = STATE.with(|s| s.as_mut().is_some_and(Collector::step));
        if !more {
            doorbell::wait(seen, crate::unwind::java::idle_wait(IDLE_WAIT));
        }
    }
}

impl Collector {
    fn new(cfg: &Settings) -> Collector {
        Collector {
            ids: WordMap::default(),
            stacks: Vec::new(),
            allocated: WordMap::default(),
            requests_served: REQUESTS.asked(),
            tokens_seen: 0,
            answering: Vec::new(),
            next_number: 0,
            dir: DumpDir::open(&cfg.dir, true),
            snapshot: Vec::new(),
            allocated_bytes: 0.0,
            automatic: Automatic::new(cfg),
            // Room the single-threaded mode's helper can use without
            // allocating (`snapshot_end`).
            kept: std::collections::VecDeque::with_capacity(cfg.max_dumps.min(KEPT_ROOM) + 1),
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
            self.dump();
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
            if let Some(id) = self.intern(&sample) {
                live::update(sample.ptr, sample.seq, |e| e.stack = id);
            }
        }
        true
    }

    /// Interns a sample's stack and counts it; its stack id.
    fn intern(&mut self, s: &Sample) -> Option<u32> {
        // At the memory limit, a table that cannot grow leaves the sample
        // unresolved (so reported) rather than abort the process.
        if self.allocated.try_reserve(1).is_err()
            || self.ids.try_reserve(1).is_err()
            || self.stacks.try_reserve(1).is_err()
        {
            return None;
        }
        let frames = s.stack.frames();
        let id = match self.ids.get(frames) {
            Some(&id) => id,
            None => {
                let id = self.stacks.len() as u32;
                self.stacks.push(frames.into());
                self.ids.insert(frames.into(), id);
                crate::unwind::java::note_stack(frames);
                id
            }
        };
        self.allocated_bytes += sampling::unsample(1, s.size as u64, sampling::period()).1;
        let total = self.allocated.entry((id, s.size)).or_default();
        total.0 += 1;
        total.1 += s.size as u64;
        Some(id)
    }

    /// The library's own memory: live tables, ring, interned stacks and totals
    /// (the maps' own overhead approximated).
    fn overhead_bytes(&self) -> usize {
        let stacks: usize = self.stacks.iter().map(|s| s.len() * 8).sum();
        live::table_bytes()
            + crate::mapped::table::table_bytes()
            + ring::bytes()
            + walk::cache_bytes()
            + 2 * stacks
            + self.ids.len() * 32
            + self.allocated.len() * 48
    }

    /// Writes a numbered dump, or the one a caller of `leakprobe_dump` asked for.
    fn dump(&mut self) {
        self.write_dump(false);
    }

    /// Writes `leakprobe.<pid>.peak.heap`, the live profile at a new peak
    /// (replaced at each higher one; outside the numbering and the cap).
    fn dump_peak(&mut self) {
        self.write_dump(true);
    }

    fn write_dump(&mut self, at_peak: bool) {
        let refusals = global_alloc::refusals();
        // The big buffers first, so that a process out of memory costs a
        // failed dump early on (see `global_alloc`), with room for samples
        // taken meanwhile.
        let live = live::count();
        self.snapshot.clear();
        if self.snapshot.try_reserve(live + live / 8 + 64).is_err() {
            return self.fail_for_memory(at_peak);
        }
        let period = sampling::period();
        live::snapshot(&mut self.snapshot);
        let mut rows: WordMap<(u32, usize), Row> = WordMap::default();
        if rows
            .try_reserve(self.snapshot.len() + self.allocated.len())
            .is_err()
        {
            return self.fail_for_memory(at_peak);
        }
        let mut unresolved = 0u64;
        let now = clock::monotonic().as_secs() as u32;
        for e in &self.snapshot {
            if e.stack >= LOST {
                unresolved += 1;
                continue;
            }
            let age = u64::from(now.saturating_sub(e.born));
            let r = rows.entry((e.stack, e.size)).or_default();
            r.live_count += 1;
            r.live_bytes += e.size as u64;
            r.oldest_age = r.oldest_age.max(age);
            r.total_age += age;
            r.live_usable += e.usable as u64;
            r.usable_unknown |= e.usable == 0;
        }
        for (&(stack, size), &(n, b)) in &self.allocated {
            let r = rows.entry((stack, size)).or_default();
            r.alloc_count = n;
            r.alloc_bytes = b;
        }
        let mut sorted = Vec::new();
        if sorted.try_reserve_exact(rows.len()).is_err() {
            return self.fail_for_memory(at_peak);
        }
        sorted.extend(
            rows.into_iter()
                .map(|((stack, size), r)| Row { stack, size, ..r }),
        );
        let mut rows = sorted;
        rows.sort_unstable_by(|a, b| {
            b.live_bytes
                .cmp(&a.live_bytes)
                .then(b.alloc_bytes.cmp(&a.alloc_bytes))
        });

        let (live_n, live_b) = rows
            .iter()
            .map(|r| sampling::unsample(r.live_count, r.live_bytes, period))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        // Each row's estimate scaled by its usable/requested ratio; unknown
        // if the allocator did not give the usable size of every sample.
        let live_usable: Option<f64> = rows
            .iter()
            .filter(|r| r.live_count > 0)
            .map(|r| {
                let estimate = sampling::unsample(r.live_count, r.live_bytes, period).1;
                r.usable()
                    .map(|u| estimate * u as f64 / r.live_bytes.max(1) as f64)
            })
            .sum();
        let (dropped, dropped_bytes) = ring::dropped();
        let pid = crate::sys::raw::process_id();
        let (wall, mono) = (clock::wall(), clock::monotonic());
        let mut meta = vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("arch", std::env::consts::ARCH.to_string()),
            ("pid", pid.to_string()),
            ("program", objects::program_path().to_string()),
            ("argv0", objects::argv0().to_string()),
            ("sample_period", period.to_string()),
            (
                "time_unix",
                format!("{}.{:03}", wall.as_secs(), wall.subsec_millis()),
            ),
            (
                "time_monotonic",
                format!("{}.{:03}", mono.as_secs(), mono.subsec_millis()),
            ),
            (
                "allocator",
                crate::profile::blind::malloc_served_by()
                    .unwrap_or_else(|| next::allocator_name().to_string()),
            ),
            ("live_samples", self.snapshot.len().to_string()),
            ("estimated_live_objects", format!("{live_n:.0}")),
            ("estimated_live_bytes", format!("{live_b:.0}")),
            ("samples_dropped", dropped.to_string()),
            ("bytes_dropped", dropped_bytes.to_string()),
            ("samples_unresolved", unresolved.to_string()),
            (
                "max_frames",
                settings::get().map_or(0, |c| c.max_frames).to_string(),
            ),
            (
                "signal",
                settings::get().map_or(String::new(), |c| settings::signal_name(c.signal)),
            ),
        ];
        // Who took the request: the collector thread, or (`single`) a
        // snapshot of a single-threaded program; and snapshots that failed.
        meta.push((
            "collector",
            if mode::active() {
                "single-threaded"
            } else {
                "thread"
            }
            .to_string(),
        ));
        let failed = SNAPSHOTS_FAILED.load(Ordering::Relaxed);
        if failed > 0 {
            meta.push(("snapshots_failed", failed.to_string()));
        }
        if !self.answering.is_empty() && !at_peak {
            let tokens: Vec<String> = self.answering.iter().map(|t| format!("{t:08x}")).collect();
            meta.push(("requests_answered", tokens.join(" ")));
        }
        // As an integer: an empty f64 sum is -0.0, which would print "-0".
        // As an integer: an empty f64 sum is -0.0, which would print "-0".
        meta.extend(live_usable.map(|u| {
            (
                "estimated_live_usable_bytes",
                (u.round() as u64).to_string(),
            )
        }));
        meta.extend(
            crate::profile::blind::reasons()
                .iter()
                .map(|r| ("blind", r.clone())),
        );
        let (_, peak, peak_time) = live::estimate();
        meta.push(("peak_estimated_live_bytes", peak.to_string()));
        meta.push(("peak_time_unix", peak_time.to_string()));
        meta.push(("overhead_bytes", self.overhead_bytes().to_string()));
        let (fast, libgcc, cut_short) = stack::unwound();
        meta.push(("stacks_unwound_fast", fast.to_string()));
        meta.push(("stacks_unwound_libgcc", libgcc.to_string()));
        meta.push(("stacks_cut_short", cut_short.to_string()));
        meta.extend(accounting::process());
        meta.extend(accounting::allocator());
        meta.extend(crate::mapped::table::facts(period));
        let map = objects::memory_map();
        meta.extend(objects::object_facts(&map));
        meta.push((
            "dumps_failed_out_of_memory",
            FAILED_FOR_MEMORY.load(Ordering::Relaxed).to_string(),
        ));
        let stacks = &self.stacks;
        let (java_walked, java_not_walkable) = crate::unwind::java::counts();
        meta.push(("java_stacks", java_walked.to_string()));
        meta.push(("java_stacks_not_walkable", java_not_walkable.to_string()));
        meta.extend(crate::unwind::java::frame_lines(
            rows.iter().map(|r| &*stacks[r.stack as usize]),
        ));
        let text = dump::render(period, &meta, &rows, |id| &stacks[id as usize], &map);
        let text = match text {
            Ok(text) if global_alloc::refusals() == refusals => text,
            _ => return self.fail_for_memory(at_peak),
        };
        let target = if at_peak {
            None
        } else {
            REQUESTS.take_target()
        };
        let result = match &target {
            Some(path) => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                DumpDir::open(parent.unwrap_or(".".as_ref()).as_os_str(), false)
                    .write_replacing(&name, &text)
                    .map_err(|why| format!("{}: {why}", path.display()))
            }
            None if at_peak => self
                .dir
                .write_replacing(&format!("leakprobe.{pid}.peak.heap"), &text)
                .map_err(|why| {
                    format!("leakprobe.{pid}.peak.heap in {}: {why}", self.dir.display())
                }),
            None => {
                let first = format!("leakprobe.{pid}.{}.heap", self.next_number);
                self.dir
                    .write_numbered(
                        &mut self.next_number,
                        |n| format!("leakprobe.{pid}.{n}.heap"),
                        &text,
                    )
                    .map(|(_, path)| {
                        self.keep_at_most(self.next_number - 1, pid);
                        path
                    })
                    .map_err(|why| format!("{first} in {}: {why}", self.dir.display()))
            }
        };
        let written = result.is_ok();
        match result {
            Ok(path) => {
                crate::sys::log::log!(
                    "wrote {path} ({} live samples, ~{:.1} MiB estimated live)",
                    self.snapshot.len(),
                    live_b / 1048576.0
                );
            }
            Err(why) => crate::sys::log::log!("cannot write dump {why}"),
        }
        if !at_peak {
            REQUESTS.finished(written);
        }
    }
}

/// Dumps not written because the library's allocations were refused.
static FAILED_FOR_MEMORY: AtomicU64 = AtomicU64::new(0);

impl Collector {
    /// A dump abandoned for lack of memory: one line, counted; what it took
    /// is given back.
    fn fail_for_memory(&mut self, at_peak: bool) {
        self.snapshot = Vec::new();
        let failed = FAILED_FOR_MEMORY.fetch_add(1, Ordering::Relaxed) + 1;
        crate::sys::log::log!(
            "cannot write {} dump: out of memory (the allocator refused the library's \
             allocations; {failed} so far); the program goes on",
            if at_peak { "the peak" } else { "a" }
        );
        if !at_peak {
            REQUESTS.take_target();
            REQUESTS.finished(false);
        }
    }

    /// Records a dump written to the dump directory and removes the oldest
    /// beyond `LEAKPROBE_MAX_DUMPS`.
    fn keep_at_most(&mut self, number: u64, pid: libc::pid_t) {
        self.keep(number, true);
        while let Some(old) = self.beyond_cap() {
            self.dir.remove(&format!("leakprobe.{pid}.{old}.heap"));
        }
    }

    /// Adds dump `number` to those kept. Without `may_allocate` (on the
    /// helper of `single`), only while the room reserved in `new` lasts:
    /// beyond it a dump is not counted, so never removed.
    fn keep(&mut self, number: u64, may_allocate: bool) {
        if may_allocate || self.kept.len() < self.kept.capacity() {
            self.kept.push_back(number);
        }
    }

    /// The oldest dump kept beyond the cap, taken off the list.
    fn beyond_cap(&mut self) -> Option<u64> {
        let cap = settings::get().map_or(100, |c| c.max_dumps);
        if self.kept.len() > cap {
            self.kept.pop_front()
        } else {
            None
        }
    }
}

/// Dumps the single-threaded mode's helper can keep count of without
/// allocating (see `Collector::keep`).
const KEPT_ROOM: usize = 1 << 16;

/// In single-threaded mode (`single`), on the allocating thread: interns the
/// sample and enters it in the live table at once, with its stack, under
/// the state lock (so a snapshot sees it whole or not at all). False if
/// there is no state (the caller takes the ring).
pub fn record_inline(sample: &Sample, mut entry: Entry) -> bool {
    STATE.with(|s| {
        let Some(c) = s.as_mut() else {
            return false;
        };
        if let Some(id) = c.intern(sample) {
            entry.stack = id;
        }
        live::insert(entry);
        true
    })
}

/// The dump a snapshot child writes (`single`): it answers the requests
/// since the last; the tagged ones from `tokens_seen` on. (Automatic dumps
/// start the collector thread at load: `mode::wanted`.)
#[derive(Clone, Copy)]
pub struct Job {
    tokens_seen: u32,
}

/// What a snapshot child did, for the process it was copied from.
#[derive(Clone, Copy)]
pub struct Outcome {
    written: bool,
    next_number: u64,
    /// The number of the dump it wrote to the dump directory, if one.
    kept: Option<u64>,
    failed_for_memory: u64,
    log: crate::sys::log::State,
}

/// Tries `lock` for a while (the holder never waits on anything); with
/// raw yields: this runs on the helper.
fn hold<T>(lock: &SpinLock<T>) -> bool {
    lock.try_acquire_for(10_000, crate::sys::raw::yield_now)
}

/// On the helper: the dump requested since the last, if any, with the
/// library's locks held (state, target, live table, mappings), so the
/// program's threads are outside its critical sections.
/// `snapshot_release` releases them.
pub fn snapshot_begin() -> Option<Job> {
    // Without the locks first: usually nothing is asked.
    if REQUESTS.asked() == SERVED.load(Ordering::Relaxed) {
        return None;
    }
    if FORK_PENDING.load(Ordering::Acquire) || !hold(&STATE) {
        return None;
    }
    if !REQUESTS.hold_target(crate::sys::raw::yield_now) {
        STATE.release();
        return None;
    }
    if !live::try_lock_all(crate::sys::raw::yield_now) {
        REQUESTS.release_target();
        STATE.release();
        return None;
    }
    if !crate::mapped::table::try_lock(crate::sys::raw::yield_now) {
        live::unlock_all();
        REQUESTS.release_target();
        STATE.release();
        return None;
    }
    // SAFETY: the state lock is held.
    let job = unsafe { STATE.held() }.as_mut().and_then(|c| {
        let requests = REQUESTS.asked();
        SERVED.store(requests, Ordering::Relaxed);
        if requests == c.requests_served {
            return None;
        }
        c.requests_served = requests;
        let tokens_seen = c.tokens_seen;
        c.tokens_seen = REQUESTS.tokens_received();
        Some(Job { tokens_seen })
    });
    if job.is_none() {
        snapshot_release();
    }
    job
}

pub fn snapshot_release() {
    crate::mapped::table::unlock();
    live::unlock_all();
    REQUESTS.release_target();
    STATE.release();
}

/// In the snapshot child: writes the dump.
pub fn snapshot_child(job: Job) -> Outcome {
    // Held by the helper when it forked: nobody else here.
    snapshot_release();
    sampling::exclude_this_thread();
    STATE
        .with(|s| {
            let c = s.as_mut()?;
            let first = c.next_number;
            c.tokens_seen = job.tokens_seen;
            c.answering = REQUESTS.take_tokens(&mut c.tokens_seen);
            c.dump();
            Some(Outcome {
                written: REQUESTS.last_written(),
                next_number: c.next_number,
                kept: (c.next_number != first && c.kept.back() == Some(&(c.next_number - 1)))
                    .then(|| c.next_number - 1),
                failed_for_memory: FAILED_FOR_MEMORY.load(Ordering::Relaxed),
                log: crate::sys::log::state(),
            })
        })
        .unwrap_or(Outcome {
            written: false,
            next_number: 0,
            kept: None,
            failed_for_memory: FAILED_FOR_MEMORY.load(Ordering::Relaxed),
            log: crate::sys::log::state(),
        })
}

/// On the helper, after the child: what it did becomes this process's
/// (no child, or one that did not finish: a dump not written).
pub fn snapshot_end(outcome: Option<Outcome>) {
    let Some(o) = outcome else {
        SNAPSHOTS_FAILED.fetch_add(1, Ordering::Relaxed);
        REQUESTS.finished(false);
        return;
    };
    while !hold(&STATE) {}
    // SAFETY: the state lock is held.
    if let Some(c) = unsafe { STATE.held() }.as_mut() {
        c.next_number = c.next_number.max(o.next_number);
        if let Some(n) = o.kept {
            c.keep(n, false);
            while c.beyond_cap().is_some() {}
        }
    }
    STATE.release();
    crate::sys::log::adopt(o.log);
    FAILED_FOR_MEMORY.fetch_max(o.failed_for_memory, Ordering::Relaxed);
    REQUESTS.finished(o.written);
}

/// The requests answered so far, as `snapshot_begin` last saw them.
static SERVED: AtomicU32 = AtomicU32::new(0);

/// Snapshots that wrote nothing (no child, or one that failed or hung).
static SNAPSHOTS_FAILED: AtomicU64 = AtomicU64::new(0);
/// Failed snapshots the log has said (the helper cannot write a line).
static SNAPSHOTS_FAILED_SAID: AtomicU64 = AtomicU64::new(0);

/// On a sampled allocation: one line for the snapshots that failed since
/// the last one said.
pub fn say_failed_snapshots() {
    let failed = SNAPSHOTS_FAILED.load(Ordering::Relaxed);
    let said = SNAPSHOTS_FAILED_SAID.load(Ordering::Relaxed);
    if failed > said
        && SNAPSHOTS_FAILED_SAID
            .compare_exchange(said, failed, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        crate::sys::log::log!(
            "{} dump(s) not written: the process copy that writes them in a single-threaded \
             program could not be made, or failed ({failed} so far); if this repeats, set \
             LEAKPROBE_THREAD=always",
            failed - said
        );
    }
}

/// Before `fork`: take, with a bounded wait, the collector's state, then the
/// live-table locks (whose holders never wait on anything), so the child
/// inherits consistent tables.
extern "C" fn fork_prepare() {
    // Samples under way finish (a push waits at most a second for room),
    // and no new one starts: the child then inherits each sample whole.
    FORK_GATE.store(true, Ordering::SeqCst);
    for _ in 0..2000 {
        if IN_FLIGHT.load(Ordering::SeqCst) == 0 {
            break;
        }
        clock::sleep(Duration::from_micros(500));
    }
    FORK_PENDING.store(true, Ordering::Release);
    // The collector takes shard locks while it holds the state lock: take
    // them in the same order, or each would wait for the other.
    let mut got = STATE.try_acquire();
    for _ in 0..1000 {
        if got {
            break;
        }
        clock::sleep(Duration::from_millis(1));
        got = STATE.try_acquire();
    }
    FORK_HAS_STATE.store(got, Ordering::Relaxed);
    if got {
        // What the collector had not taken yet is interned now, so the
        // child (whose ring starts empty) has every stack.
        // SAFETY: the state lock is held.
        if let Some(c) = unsafe { STATE.held() } {
            while c.absorb(usize::MAX) {}
        }
    }
    live::lock_all();
}

extern "C" fn fork_parent() {
    FORK_GATE.store(false, Ordering::SeqCst);
    if FORK_HAS_STATE.load(Ordering::Relaxed) {
        STATE.release();
    }
    live::unlock_all();
    FORK_PENDING.store(false, Ordering::Release);
}

extern "C" fn fork_child() {
    FORK_GATE.store(false, Ordering::SeqCst);
    IN_FLIGHT.store(0, Ordering::SeqCst);
    FORK_PENDING.store(false, Ordering::Release);
    live::unlock_all();
    ring::renew();
    if !FORK_HAS_STATE.load(Ordering::Relaxed) {
        // The collector was mid-update when the process forked: its state
        // cannot be trusted in the child. Start afresh; stacks of inherited
        // live samples are lost (reported as unresolved).
        let mut lost = Vec::new();
        live::snapshot(&mut lost);
        for e in lost {
            live::update(e.ptr, e.seq, |e| e.stack = LOST);
        }
        // SAFETY: the child has one thread; the old holder no longer exists.
        // The old state is leaked, not dropped: it may be half-updated.
        let old = core::mem::replace(unsafe { STATE.held() }, settings::get().map(Collector::new));
        core::mem::forget(old);
    }
    // Requests pending at the fork were the parent's, not the child's.
    // SAFETY: the child has one thread, which holds the lock here.
    if let Some(c) = unsafe { STATE.held() } {
        c.requests_served = REQUESTS.asked();
    }
    STATE.release();
    NEEDS_THREAD.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_periods_never_overflow_the_schedule() {
        for secs in [u64::MAX, u64::MAX - 1, 1 << 63] {
            let cfg = Settings {
                dump_every_secs: secs,
                dump_every_bytes: u64::MAX,
                ..Settings::default()
            };
            let mut a = Automatic::new(&cfg);
            assert!(!a.due(0.0));
            assert!(a.due(u64::MAX as f64));
            assert!(!a.due(f64::MAX));
        }
    }
}
