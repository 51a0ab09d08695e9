//! Memory the program maps itself, outside malloc: anonymous and file
//! mappings made with `mmap`, `mmap64` and `mremap` and given back with
//! `munmap` (and `MAP_FIXED` over them), the stacks of the threads it
//! creates (`thread_stacks`), System V shared memory and the program break
//! (`segments`).
//!
//! Sampled by bytes like the heap (the same Poisson gaps, the same period),
//! with a countdown of its own, so the malloc fast path is untouched and an
//! unsampled `mmap` pays one thread-local countdown. The sampled mappings
//! live in a table of address ranges of their own, under one lock: mapping
//! calls are rare next to malloc, and the kernel serialises them anyway.
//!
//! Only the program's calls are seen: glibc's malloc, `pthread_create` and
//! the dynamic loader map through internal calls that never reach an
//! interposed symbol. An allocator that maps through the `mmap` symbol
//! (jemalloc) is recognised by the caller of a sampled call, which lies in
//! the object that provides `malloc`: its mappings are heap, already counted.
//! Reservations (`PROT_NONE`) hold no memory and are not tracked.
//!
//! Locks: `STACKS` may be held while allocating, and an allocation can come
//! back into `munmap` (a program's own malloc), which takes `TABLE`; `TABLE`
//! is never held while allocating or while taking `STACKS`. `DEFERRED` is
//! taken last, and nothing is taken while it is held.

use crate::profile::dump::Row;
use crate::sys::lock::SpinLock;
use crate::sys::word_hash::WordMap;
use crate::unwind::stack::{self, Stack};
use crate::{next, sample::sampling, sys::clock};
use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

type Ptr = *mut c_void;

/// What a tracked range holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Anonymous memory, private or shared.
    Anon,
    /// A mapped file: in RSS through the page cache, given back under
    /// memory pressure; not a leak in the same sense.
    File,
    /// A thread's stack, mapped by glibc for `pthread_create`.
    ThreadStack,
    /// A System V shared memory segment attached with `shmat`.
    Shm,
    /// The program break, moved by the program's own `brk`/`sbrk`.
    Brk,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Anon,
        Kind::File,
        Kind::ThreadStack,
        Kind::Shm,
        Kind::Brk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Anon => "anon",
            Kind::File => "file",
            Kind::ThreadStack => "thread_stack",
            Kind::Shm => "shm",
            Kind::Brk => "brk",
        }
    }

    /// The kind of a new mapping with these arguments; None for reservations.
    fn of(prot: c_int, flags: c_int) -> Option<Kind> {
        if prot == libc::PROT_NONE {
            None
        } else if flags & libc::MAP_ANONYMOUS != 0 {
            Some(Kind::Anon)
        } else {
            Some(Kind::File)
        }
    }
}

/// One sampled mapping (or piece of one left by a partial unmap), or one
/// sampled thread's stack (`start`..`end` is then 0..size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub start: usize,
    pub end: usize,
    /// Bytes when it was sampled (what its sampling probability was for).
    pub size: usize,
    /// Unique per sample: the pieces of one mapping share it.
    pub seq: u64,
    pub stack: u32,
    pub kind: Kind,
    /// Coarse time of the call, seconds since the library loaded.
    pub born: u32,
    /// Thread stacks: the thread (`pthread_t`, 0 until `pthread_create`
    /// returned), whether it is detached, whether it has exited.
    pub thread: usize,
    pub detached: bool,
    pub exited: bool,
}

impl Entry {
    pub fn bytes(&self) -> usize {
        self.end - self.start
    }
}

/// A growable array in memory mapped with the raw system call: never from
/// malloc (see the lock order above), never through the interposed `mmap`.
struct MapVec<T: Copy> {
    ptr: *mut T,
    len: usize,
    cap: usize,
}

// SAFETY: a MapVec is only reached under the table's lock.
unsafe impl<T: Copy> Send for MapVec<T> {}

impl<T: Copy> MapVec<T> {
    const EMPTY: Self = MapVec {
        ptr: core::ptr::null_mut(),
        len: 0,
        cap: 0,
    };

    fn as_slice(&self) -> &[T] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: `ptr` maps `cap` slots, the first `len` initialised.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        if self.ptr.is_null() {
            return &mut [];
        }
        // SAFETY: as above, and we hold `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Room for one more; false if no memory could be mapped.
    fn reserve_one(&mut self) -> bool {
        if self.len < self.cap {
            return true;
        }
        let cap = (self.cap * 2).max(4096 / core::mem::size_of::<T>().max(1));
        let bytes = cap * core::mem::size_of::<T>();
        let Some(fresh) = crate::sys::raw::map_anonymous(bytes) else {
            return false;
        };
        let fresh = fresh as *mut T;
        if !self.ptr.is_null() {
            // SAFETY: both areas hold at least `len` slots and do not overlap;
            // the old one, this value's own mapping, is then no longer
            // referenced.
            unsafe {
                core::ptr::copy_nonoverlapping(self.ptr, fresh, self.len);
                crate::sys::raw::unmap(self.ptr.cast(), self.bytes());
            }
        }
        self.ptr = fresh;
        self.cap = cap;
        true
    }

    fn insert(&mut self, i: usize, v: T) -> bool {
        if !self.reserve_one() {
            return false;
        }
        // SAFETY: i <= len < cap: the tail moves up one slot within the area.
        unsafe {
            core::ptr::copy(self.ptr.add(i), self.ptr.add(i + 1), self.len - i);
            self.ptr.add(i).write(v);
        }
        self.len += 1;
        true
    }

    fn remove(&mut self, i: usize) {
        // SAFETY: i < len: the tail moves down one slot.
        unsafe { core::ptr::copy(self.ptr.add(i + 1), self.ptr.add(i), self.len - i - 1) };
        self.len -= 1;
    }

    fn swap_remove(&mut self, i: usize) {
        let last = self.len - 1;
        self.as_mut_slice().swap(i, last);
        self.len -= 1;
    }

    fn bytes(&self) -> usize {
        self.cap * core::mem::size_of::<T>()
    }
}

impl<T: Copy> Drop for MapVec<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: the area this MapVec mapped, no longer referenced.
            unsafe { crate::sys::raw::unmap(self.ptr.cast(), self.bytes()) };
        }
    }
}

/// The live sampled mappings, sorted by address and never overlapping, and
/// the live sampled thread stacks.
pub struct Table {
    ranges: MapVec<Entry>,
    threads: MapVec<Entry>,
}

static TABLE: SpinLock<Table> = SpinLock::new(Table {
    ranges: MapVec::EMPTY,
    threads: MapVec::EMPTY,
});

/// Bounds of the tracked ranges (an unsampled `munmap` outside them takes no
/// lock), and how many thread stacks are tracked; written under `TABLE`.
static LOWEST: AtomicUsize = AtomicUsize::new(usize::MAX);
static HIGHEST: AtomicUsize = AtomicUsize::new(0);
pub static THREADS: AtomicUsize = AtomicUsize::new(0);
/// Samples lost because the table could not grow.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Sampled calls left out because the allocator made them.
static ALLOCATOR_CALLS: AtomicU64 = AtomicU64::new(0);

impl Table {
    /// Removes `lo..hi` from the tracked ranges, cutting the ranges it
    /// overlaps (a head, a tail, or a hole in the middle). Returns the kind
    /// of the first range it touched.
    pub fn remove_range(&mut self, lo: usize, hi: usize) -> Option<Kind> {
        let mut kind = None;
        let mut i = self.ranges.as_slice().partition_point(|e| e.end <= lo);
        while i < self.ranges.len && self.ranges.as_slice()[i].start < hi {
            let e = self.ranges.as_slice()[i];
            kind = kind.or(Some(e.kind));
            match (e.start < lo, e.end > hi) {
                (false, false) => {
                    self.ranges.remove(i);
                }
                (true, true) => {
                    self.ranges.as_mut_slice()[i].end = lo;
                    // Without room the tail is forgotten: an undercount, never a crash.
                    if !self.ranges.insert(i + 1, Entry { start: hi, ..e }) {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                (true, false) => {
                    self.ranges.as_mut_slice()[i].end = lo;
                    i += 1;
                }
                (false, true) => {
                    self.ranges.as_mut_slice()[i].start = hi;
                    i += 1;
                }
            }
        }
        self.publish_bounds();
        kind
    }

    /// `size` bytes are now mapped at `start`: a new sampled mapping
    /// (its stack and kind), or an unsampled one that replaces whatever
    /// was tracked there (a range unmapped behind the library's back).
    /// The new entry's `seq` (0 for none).
    pub fn mapped_at(&mut self, start: usize, size: usize, sample: Option<(u32, Kind)>) -> u64 {
        let end = start.saturating_add(size);
        match sample {
            Some((stack, kind)) => {
                let seq = next_seq();
                self.insert_range(Entry {
                    start,
                    end,
                    size,
                    seq,
                    stack,
                    kind,
                    born: now(),
                    thread: 0,
                    detached: false,
                    exited: false,
                });
                seq
            }
            None => {
                self.remove_range(start, end);
                0
            }
        }
    }

    /// Gives the pieces of sample `seq` their interned stack; without one,
    /// they stop being tracked.
    fn set_stack(&mut self, seq: u64, stack: Option<u32>) {
        let mut i = 0;
        while i < self.ranges.len {
            if self.ranges.as_slice()[i].seq != seq {
                i += 1;
                continue;
            }
            match stack {
                Some(id) => {
                    self.ranges.as_mut_slice()[i].stack = id;
                    i += 1;
                }
                None => self.ranges.remove(i),
            }
        }
        self.publish_bounds();
    }

    /// Stops tracking the System V segment attached at `addr`: `shmdt`
    /// detaches all of it that is still mapped (a head unmapped before
    /// included).
    pub fn remove_segment(&mut self, addr: usize) {
        let r = self.ranges.as_slice();
        let e = r.get(r.partition_point(|e| e.end <= addr));
        if let Some(e) = e.filter(|e| e.kind == Kind::Shm && e.start < addr.saturating_add(e.size))
        {
            self.remove_range(addr, addr.saturating_add(e.size));
        }
    }

    pub fn insert_range(&mut self, e: Entry) {
        self.remove_range(e.start, e.end);
        let i = self
            .ranges
            .as_slice()
            .partition_point(|x| x.start < e.start);
        if !self.ranges.insert(i, e) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        self.publish_bounds();
    }

    fn publish_bounds(&self) {
        let r = self.ranges.as_slice();
        let (lo, hi) = match (r.first(), r.last()) {
            (Some(a), Some(b)) => (a.start, b.end),
            _ => (usize::MAX, 0),
        };
        LOWEST.store(lo, Ordering::Relaxed);
        HIGHEST.store(hi, Ordering::Relaxed);
    }

    pub fn add_thread(&mut self, e: Entry) {
        if self.threads.insert(self.threads.len, e) {
            THREADS.store(self.threads.len, Ordering::Relaxed);
        } else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The tracked thread stack that matches, if any.
    pub fn thread(&mut self, matches: impl Fn(&Entry) -> bool) -> Option<&mut Entry> {
        self.threads.as_mut_slice().iter_mut().find(|e| matches(e))
    }

    /// Stops tracking the thread stacks that match.
    pub fn remove_threads(&mut self, matches: impl Fn(&Entry) -> bool) {
        let mut i = 0;
        while i < self.threads.len {
            if matches(&self.threads.as_slice()[i]) {
                self.threads.swap_remove(i);
            } else {
                i += 1;
            }
        }
        THREADS.store(self.threads.len, Ordering::Relaxed);
    }
}

pub fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    TABLE.with(f)
}

/// False means no tracked range overlaps `addr..addr+len`.
#[inline(always)]
pub fn overlaps(addr: usize, len: usize) -> bool {
    addr < HIGHEST.load(Ordering::Relaxed)
        && addr.saturating_add(len) > LOWEST.load(Ordering::Relaxed)
}

static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// Whether any range is tracked.
#[inline(always)]
pub fn tracks_any() -> bool {
    HIGHEST.load(Ordering::Relaxed) != 0
}

/// Lengths as the kernel maps them: whole pages.
pub fn pages(len: usize) -> usize {
    let page = PAGE.load(Ordering::Relaxed);
    len.checked_add(page - 1).map_or(len, |l| l & !(page - 1))
}

thread_local! {
    /// Bytes until this thread's next mapping sample point, and whether its
    /// first gap was drawn (the malloc countdown's is separate).
    static LEFT: Cell<usize> = const { Cell::new(0) };
    static DRAWN: Cell<bool> = const { Cell::new(false) };
}

/// Counts `size` mapped bytes down; true when they reach the sample point.
#[inline(always)]
pub fn crosses(size: usize) -> bool {
    LEFT.with(|left| {
        let l = left.get();
        if size < l {
            left.set(l - size);
            false
        } else {
            true
        }
    })
}

/// A call of `size` bytes reached the sample point: whether to record it;
/// draws the next gap. As `sampling::decide`, with this countdown.
#[cold]
pub fn decide(size: usize) -> bool {
    let Some((gap, active)) = sampling::other_gap() else {
        return false;
    };
    if !DRAWN.get() {
        // A new thread: its first gap starts now.
        DRAWN.set(true);
        if size < gap {
            LEFT.set(gap - size);
            return false;
        }
        if let Some((next, _)) = sampling::other_gap() {
            LEFT.set(next);
        }
    } else {
        LEFT.set(gap);
    }
    active && size > 0
}

/// Interned stacks of mapping samples, and the cumulative sampled
/// (count, bytes) per (kind, stack, size).
#[derive(Default)]
struct Stacks {
    ids: WordMap<Box<[usize]>, u32>,
    list: Vec<Box<[usize]>>,
    allocated: WordMap<(Kind, u32, usize), (u64, u64)>,
}

static STACKS: SpinLock<Option<Stacks>> = SpinLock::new(None);

/// Where the object that provides malloc is mapped: a sampled call from
/// inside it is the allocator's own mapping (heap). Found with the
/// lock-free `_dl_find_object`, never `dladdr`: the allocator may hold its
/// own lock while it maps, and `dladdr` takes the loader's, which a thread
/// that allocates under it (`dl_iterate_phdr`) holds.
static ALLOCATOR_BASE: AtomicUsize = AtomicUsize::new(0);

/// The stack of a sampled call made at exported function `entry`, interned;
/// None when the allocator made the call, or the stack cannot be kept.
/// Runs with the thread busy: nothing it allocates is sampled.
pub fn record_stack(entry: usize) -> Option<u32> {
    sampling::while_busy(|| {
        // Where the library may allocate: stacks deferred meanwhile too.
        intern_deferred();
        let mut stack = Stack::new();
        if !capture(entry, &mut stack) {
            return None;
        }
        intern(stack.frames())
    })
}

/// Captures the stack of a sampled call made at exported function `entry`,
/// without allocating; false when the allocator made the call.
pub fn capture(entry: usize, stack: &mut Stack) -> bool {
    stack::capture(entry, stack);
    let caller = stack.frames().get(1).copied().unwrap_or(0);
    let allocator = ALLOCATOR_BASE.load(Ordering::Relaxed);
    let object = crate::sys::dl::find_object(caller).map(|o| o.start);
    if allocator != 0 && object == Some(allocator) {
        ALLOCATOR_CALLS.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    // A JVM's mappings (FileChannel.map, thread stacks) under the Java
    // methods that made them.
    crate::unwind::java::append(stack, stack::max_len());
    true
}

fn intern(frames: &[usize]) -> Option<u32> {
    STACKS.with(|s| {
        let s = s.get_or_insert_with(Stacks::default);
        if let Some(&id) = s.ids.get(frames) {
            return Some(id);
        }
        if s.ids.try_reserve(1).is_err() || s.list.try_reserve(1).is_err() {
            return None;
        }
        let id = s.list.len() as u32;
        s.list.push(frames.into());
        s.ids.insert(frames.into(), id);
        INTERNED.store(s.list.len(), Ordering::Relaxed);
        Some(id)
    })
}

/// The stack of an entry whose stack is not interned yet (`track_deferred`).
const UNINTERNED: u32 = u32::MAX;

/// A sample whose stack waits to be interned: its frames are the next `len`
/// words of `Deferred::frames`.
#[derive(Clone, Copy)]
struct Waiting {
    seq: u64,
    kind: Kind,
    size: usize,
    len: usize,
}

/// Samples taken where the library must not allocate, in memory of its own.
struct Deferred {
    samples: MapVec<Waiting>,
    frames: MapVec<usize>,
}

static DEFERRED: SpinLock<Deferred> = SpinLock::new(Deferred {
    samples: MapVec::EMPTY,
    frames: MapVec::EMPTY,
});
static ANY_DEFERRED: AtomicBool = AtomicBool::new(false);

/// Tracks a sampled mapping of `size` bytes at `start` whose stack (`frames`,
/// from `capture`) cannot be interned now: during a call that moves the
/// program break, a malloc of the library's may move it too, under the
/// program's feet (glibc extends its main heap with the break). Allocates
/// nothing; `intern_deferred` interns it later, where the library may.
pub fn track_deferred(t: &mut Table, start: usize, size: usize, kind: Kind, frames: &[usize]) {
    let seq = t.mapped_at(start, size, Some((UNINTERNED, kind)));
    let kept = DEFERRED.with(|d| {
        let at = d.frames.len;
        let room = frames.iter().all(|&f| d.frames.insert(d.frames.len, f));
        let len = frames.len();
        if room
            && d.samples.insert(
                d.samples.len,
                Waiting {
                    seq,
                    kind,
                    size,
                    len,
                },
            )
        {
            return true;
        }
        d.frames.len = at;
        false
    });
    if kept {
        ANY_DEFERRED.store(true, Ordering::Release);
    } else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        t.remove_range(start, start.saturating_add(size));
    }
}

/// Interns the deferred samples' stacks, counts them, and gives their
/// entries (any pieces left) their stacks; those that cannot be interned stop
/// being tracked. Where the library may allocate: the collector, a dump, a
/// sampled `mmap`.
pub fn intern_deferred() {
    if !ANY_DEFERRED.swap(false, Ordering::Acquire) {
        return;
    }
    let taken = DEFERRED.with(|d| {
        core::mem::replace(
            d,
            Deferred {
                samples: MapVec::EMPTY,
                frames: MapVec::EMPTY,
            },
        )
    });
    let mut at = 0;
    for w in taken.samples.as_slice() {
        let frames = taken
            .frames
            .as_slice()
            .get(at..at + w.len)
            .unwrap_or_default();
        at += w.len;
        let id = intern(frames);
        match id {
            Some(id) => count_allocated(w.kind, id, w.size),
            None => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        TABLE.with(|t| t.set_stack(w.seq, id));
    }
}

/// Stacks interned, and how many of them `stack_words` has handed out.
static INTERNED: AtomicUsize = AtomicUsize::new(0);
static HANDED: AtomicUsize = AtomicUsize::new(0);

/// On the collector: the frames of the stacks interned since the last call
/// (of every stack with `all`), in one flat list, for the collector to name
/// their Java frames (`unwind::java`). Copied out so that the naming (JVMTI,
/// which may map memory) never runs under the lock. Empty if the memory
/// cannot be had.
pub fn stack_words(all: bool) -> Vec<usize> {
    let mut words = Vec::new();
    if !all && HANDED.load(Ordering::Relaxed) == INTERNED.load(Ordering::Relaxed) {
        return words;
    }
    STACKS.with(|s| {
        let Some(s) = s.as_ref() else { return };
        let from = if all {
            0
        } else {
            HANDED.load(Ordering::Relaxed)
        };
        let fresh = s.list.get(from..).unwrap_or_default();
        if words
            .try_reserve(fresh.iter().map(|f| f.len()).sum())
            .is_ok()
        {
            fresh.iter().for_each(|f| words.extend_from_slice(f));
            HANDED.store(s.list.len(), Ordering::Relaxed);
        }
    });
    words
}

/// Counts a sample into the cumulative totals.
pub fn count_allocated(kind: Kind, stack: u32, size: usize) {
    sampling::while_busy(|| {
        STACKS.with(|s| {
            let Some(s) = s.as_mut() else { return };
            if s.allocated.try_reserve(1).is_ok() {
                let t = s.allocated.entry((kind, stack, size)).or_default();
                t.0 += 1;
                t.1 += size as u64;
            }
        })
    })
}

pub fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

pub fn now() -> u32 {
    clock::monotonic().as_secs() as u32
}

/// Once at load, before sampling starts (and before the collector registers
/// its fork handlers, so that these run after its prepare handler: a fork
/// never waits for a dump that waits for these locks).
pub fn init() {
    PAGE.store(crate::sys::process::page_size(), Ordering::Relaxed);
    let allocator = crate::sys::dl::find_object(next::malloc_address() as usize);
    ALLOCATOR_BASE.store(allocator.map_or(0, |o| o.start), Ordering::Relaxed);
    for slot in [
        next::slot::mmap.symbol(),
        next::slot::munmap.symbol(),
        next::slot::mremap.symbol(),
    ] {
        slot.address();
    }
    crate::sys::process::at_fork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
}

/// The locks `fork_prepare` takes, for the helper of `collect::single`:
/// each tried a while, with `pause` between; on failure none is held.
pub fn try_lock(pause: fn()) -> bool {
    if !STACKS.try_acquire_for(10_000, pause) {
        return false;
    }
    if !TABLE.try_acquire_for(10_000, pause) {
        STACKS.release();
        return false;
    }
    if !DEFERRED.try_acquire_for(10_000, pause) {
        TABLE.release();
        STACKS.release();
        return false;
    }
    true
}

pub fn unlock() {
    DEFERRED.release();
    TABLE.release();
    STACKS.release();
}

extern "C" fn fork_prepare() {
    STACKS.acquire();
    TABLE.acquire();
    DEFERRED.acquire();
}

extern "C" fn fork_parent() {
    unlock();
}

extern "C" fn fork_child() {
    // SAFETY: the child has one thread, which holds the lock.
    let t = unsafe { TABLE.held() };
    // Only the forking thread survives a fork.
    t.remove_threads(|_| true);
    unlock();
}

/// `mmap` and `mmap64` (the same function on 64-bit systems): an unsampled
/// call that replaces nothing tracked pays the countdown only.
macro_rules! mapping {
    ($name:ident) => {
        /// # Safety
        /// As mmap(2).
        #[cfg(not(test))]
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name(
            addr: Ptr,
            len: usize,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            off: libc::off_t,
        ) -> Ptr {
            let crossed = crosses(pages(len));
            if !crossed && (flags & libc::MAP_FIXED == 0 || !overlaps(addr as usize, len)) {
                // SAFETY: the program's arguments, unchanged.
                return unsafe { next::slot::mmap.get()(addr, len, prot, flags, fd, off) };
            }
            // SAFETY: the program's arguments, unchanged; `entry` only names
            // frame 0.
            unsafe {
                map_slow(
                    [
                        addr as usize,
                        len,
                        prot as usize,
                        flags as usize,
                        fd as usize,
                    ],
                    off,
                    crossed,
                    $name as *const () as usize,
                )
            }
        }
    };
}

mapping!(mmap);
mapping!(mmap64);

/// A mapping call that reached the sample point or replaces (`MAP_FIXED`)
/// memory that may be tracked.
///
/// # Safety
/// As mmap(2), with its arguments in `args` and `off`.
#[cfg(not(test))]
#[cold]
#[inline(never)]
unsafe fn map_slow(args: [usize; 5], off: libc::off_t, crossed: bool, entry: usize) -> Ptr {
    let [addr, len, prot, flags, fd] = args;
    let (prot, flags) = (prot as c_int, flags as c_int);
    let replaces = flags & libc::MAP_FIXED != 0 && overlaps(addr, len);
    // SAFETY: the program's arguments (the contract), unchanged.
    let call =
        || unsafe { next::slot::mmap.get()(addr as Ptr, len, prot, flags, fd as c_int, off) };
    track_new(
        pages(len),
        Kind::of(prot, flags),
        crossed,
        replaces,
        entry,
        call,
    )
}

/// A call that maps `size` bytes of `kind` (None: not tracked) and returns
/// where (`MAP_FAILED` if it failed), made at exported function `entry`:
/// it reached the sample point (`crossed`), or may replace tracked memory.
/// The table is updated with the call under its lock.
#[cold]
#[inline(never)]
pub fn track_new(
    size: usize,
    kind: Option<Kind>,
    crossed: bool,
    replaces: bool,
    entry: usize,
    call: impl FnOnce() -> Ptr,
) -> Ptr {
    let stack = match kind {
        Some(_) if crossed && decide(size) => record_stack(entry),
        _ => None,
    };
    if stack.is_none() && !replaces {
        return call();
    }
    let p = TABLE.with(|t| {
        let p = call();
        if p != libc::MAP_FAILED {
            t.mapped_at(p as usize, size, stack.zip(kind));
        }
        p
    });
    if let (Some(stack), Some(kind), true) = (stack, kind, p != libc::MAP_FAILED) {
        crate::sys::errno::preserved(|| count_allocated(kind, stack, size));
    }
    p
}

/// # Safety
/// As munmap(2).
#[cfg(not(test))]
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn munmap(addr: Ptr, len: usize) -> c_int {
    if !overlaps(addr as usize, len) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { next::slot::munmap.get()(addr, len) };
    }
    // SAFETY: the program's arguments, unchanged.
    unsafe { unmap_slow(addr, len) }
}

/// The table is updated with the call under its lock, so a range unmapped
/// here and mapped again by another thread is never confused with this one.
///
/// # Safety
/// As munmap(2).
#[cfg(not(test))]
#[cold]
#[inline(never)]
unsafe fn unmap_slow(addr: Ptr, len: usize) -> c_int {
    TABLE.with(|t| {
        // SAFETY: the program's arguments (the contract), unchanged.
        let rc = unsafe { next::slot::munmap.get()(addr, len) };
        if rc == 0 {
            t.remove_range(addr as usize, (addr as usize).saturating_add(pages(len)));
        }
        rc
    })
}

/// `mremap` (variadic in C: the new address, read only with
/// `MREMAP_FIXED`, arrives as a fifth argument).
///
/// # Safety
/// As mremap(2).
#[cfg(not(test))]
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn mremap(
    old: Ptr,
    old_size: usize,
    new_size: usize,
    flags: c_int,
    new_address: Ptr,
) -> Ptr {
    let crossed = crosses(pages(new_size));
    if !crossed && !overlaps(old as usize, old_size) && !overlaps(new_address as usize, new_size) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { next::slot::mremap.get()(old, old_size, new_size, flags, new_address) };
    }
    // SAFETY: the program's arguments, unchanged.
    unsafe {
        remap_slow(
            [old as usize, old_size, new_size, new_address as usize],
            flags,
            crossed,
        )
    }
}

/// A resize or move: for the accounting, as `realloc`: the old range stops
/// being tracked and the new one is a new sample at this call's stack.
///
/// # Safety
/// As mremap(2), with its arguments in `args` and `flags`.
#[cfg(not(test))]
#[cold]
#[inline(never)]
unsafe fn remap_slow(args: [usize; 4], flags: c_int, crossed: bool) -> Ptr {
    const MREMAP_DONTUNMAP: c_int = 4;
    let [old, old_size, new_size, new_address] = args;
    let size = pages(new_size);
    let stack = if crossed && decide(size) {
        record_stack(mremap as *const () as usize)
    } else {
        None
    };
    let (q, kind) = TABLE.with(|t| {
        // SAFETY: the program's arguments (the contract), unchanged.
        let q = unsafe {
            next::slot::mremap.get()(old as Ptr, old_size, new_size, flags, new_address as Ptr)
        };
        if q == libc::MAP_FAILED {
            return (q, None);
        }
        // old_size 0 duplicates a shared mapping; DONTUNMAP leaves the old
        // range mapped (and empty).
        let kind = if old_size != 0 && flags & MREMAP_DONTUNMAP == 0 {
            t.remove_range(old, old.saturating_add(pages(old_size)))
        } else {
            None
        };
        // A mapping first seen here is counted as anonymous.
        let kind = kind.unwrap_or(Kind::Anon);
        t.mapped_at(q as usize, size, stack.map(|stack| (stack, kind)));
        (q, Some(kind))
    });
    if let (Some(stack), Some(kind)) = (stack, kind) {
        crate::sys::errno::preserved(|| count_allocated(kind, stack, size));
    }
    q
}

/// Bytes the library maps for its mapping tables.
pub fn table_bytes() -> usize {
    TABLE.with(|t| t.ranges.bytes() + t.threads.bytes())
}

/// The dump's facts about mapped memory, and one `mapped` line per
/// (kind, stack, size): `<kind> <live n>: <live bytes> [<n>: <bytes>] @
/// 0x<frame0> ...`, in the heap rows' format, as `#` lines that jeprof and
/// pprof skip, so they never enter the heap's totals.
pub fn facts(period: usize) -> Vec<(&'static str, String)> {
    intern_deferred();
    let mut live: Vec<Entry> = Vec::new();
    loop {
        let need = TABLE.with(|t| t.ranges.len + t.threads.len);
        if live.try_reserve(need).is_err() {
            return Vec::new();
        }
        let copied = TABLE.with(|t| {
            if live.capacity() < t.ranges.len + t.threads.len {
                return false;
            }
            live.extend_from_slice(t.ranges.as_slice());
            live.extend_from_slice(t.threads.as_slice());
            true
        });
        if copied {
            break;
        }
    }
    // Deferred since intern_deferred: in the next dump.
    live.retain(|e| e.stack != UNINTERNED);
    // Rows by (kind, stack, size); a mapping cut in pieces counts once.
    live.sort_unstable_by_key(|e| (e.kind as u8, e.stack, e.size, e.seq));
    let mut rows: WordMap<(Kind, u32, usize), Row> = WordMap::default();
    let mut last_seq = 0;
    for e in &live {
        let r = rows.entry((e.kind, e.stack, e.size)).or_default();
        if e.seq != last_seq {
            r.live_count += 1;
        }
        last_seq = e.seq;
        r.live_bytes += e.bytes() as u64;
    }
    STACKS.with(|s| {
        let s = s.get_or_insert_with(Stacks::default);
        for (&key, &(n, b)) in &s.allocated {
            let r = rows.entry(key).or_default();
            r.alloc_count = n;
            r.alloc_bytes = b;
        }
        let mut keys: Vec<_> = rows.keys().copied().collect();
        keys.sort_unstable_by_key(|k| (k.0 as u8, core::cmp::Reverse(rows[k].live_bytes)));
        let mut facts = vec![("mapped_live_samples", live.len().to_string())];
        for kind in Kind::ALL {
            let estimate: f64 = keys
                .iter()
                .filter(|k| k.0 == kind)
                .map(|k| sampling::unsample(rows[k].live_count, rows[k].live_bytes, period).1)
                .sum();
            facts.push((kind.fact(), (estimate.round() as u64).to_string()));
        }
        facts.push((
            "mapped_samples_dropped",
            DROPPED.load(Ordering::Relaxed).to_string(),
        ));
        facts.push((
            "mapped_allocator_calls",
            ALLOCATOR_CALLS.load(Ordering::Relaxed).to_string(),
        ));
        for k in keys {
            let r = &rows[&k];
            let mut line = format!(
                "{} {}: {} [{}: {}] @",
                k.0.name(),
                r.live_count,
                r.live_bytes,
                r.alloc_count,
                r.alloc_bytes
            );
            for f in s.list.get(k.1 as usize).map_or(&[][..], |f| &f[..]) {
                use core::fmt::Write as _;
                let _ = write!(line, " {f:#x}");
            }
            facts.push(("mapped", line));
        }
        facts
    })
}

impl Kind {
    fn fact(self) -> &'static str {
        match self {
            Kind::Anon => "estimated_mapped_anon_bytes",
            Kind::File => "estimated_mapped_file_bytes",
            Kind::ThreadStack => "estimated_mapped_thread_stack_bytes",
            Kind::Shm => "estimated_mapped_shm_bytes",
            Kind::Brk => "estimated_mapped_brk_bytes",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: usize, end: usize, seq: u64) -> Entry {
        Entry {
            start,
            end,
            size: end - start,
            seq,
            stack: 0,
            kind: Kind::Anon,
            born: 0,
            thread: 0,
            detached: false,
            exited: false,
        }
    }

    fn spans(t: &Table) -> Vec<(usize, usize)> {
        t.ranges
            .as_slice()
            .iter()
            .map(|e| (e.start, e.end))
            .collect()
    }

    #[test]
    fn partial_unmaps_cut_head_middle_and_tail() {
        let mut t = Table {
            ranges: MapVec::EMPTY,
            threads: MapVec::EMPTY,
        };
        t.insert_range(range(0x10000, 0x20000, 1));
        t.insert_range(range(0x30000, 0x40000, 2));
        assert_eq!(t.remove_range(0x10000, 0x12000), Some(Kind::Anon));
        assert_eq!(t.remove_range(0x1e000, 0x20000), Some(Kind::Anon));
        t.remove_range(0x15000, 0x16000);
        assert_eq!(
            spans(&t),
            [(0x12000, 0x15000), (0x16000, 0x1e000), (0x30000, 0x40000)]
        );
        // One call across a gap and two ranges.
        t.remove_range(0x14000, 0x38000);
        assert_eq!(spans(&t), [(0x12000, 0x14000), (0x38000, 0x40000)]);
        assert_eq!(t.remove_range(0x50000, 0x60000), None);
        // A new mapping over tracked ones replaces them.
        t.insert_range(range(0x13000, 0x39000, 3));
        assert_eq!(
            spans(&t),
            [(0x12000, 0x13000), (0x13000, 0x39000), (0x39000, 0x40000)]
        );
        t.remove_range(0, usize::MAX);
        assert!(spans(&t).is_empty());
    }

    #[test]
    fn a_segment_goes_whole_and_deferred_stacks_land_on_every_piece() {
        let mut t = Table {
            ranges: MapVec::EMPTY,
            threads: MapVec::EMPTY,
        };
        let segment = |start, end, seq| Entry {
            kind: Kind::Shm,
            stack: UNINTERNED,
            ..range(start, end, seq)
        };
        t.insert_range(segment(0x10000, 0x20000, 1));
        t.insert_range(range(0x20000, 0x30000, 2));
        // Its head unmapped first, then shmdt at its address: all of it goes,
        // nothing of the mapping after it.
        t.remove_range(0x10000, 0x12000);
        t.remove_segment(0x10000);
        assert_eq!(spans(&t), [(0x20000, 0x30000)]);
        // Not a segment: untouched.
        t.remove_segment(0x20000);
        assert_eq!(spans(&t), [(0x20000, 0x30000)]);
        t.insert_range(segment(0x40000, 0x50000, 3));
        t.remove_range(0x44000, 0x45000);
        t.set_stack(3, Some(7));
        assert!(t
            .ranges
            .as_slice()
            .iter()
            .filter(|e| e.seq == 3)
            .all(|e| e.stack == 7));
        assert_eq!(t.ranges.as_slice().iter().filter(|e| e.seq == 3).count(), 2);
        // A stack that could not be interned: its pieces stop being tracked.
        t.set_stack(3, None);
        assert_eq!(spans(&t), [(0x20000, 0x30000)]);
    }

    #[test]
    fn tables_grow_past_a_page() {
        let mut t = Table {
            ranges: MapVec::EMPTY,
            threads: MapVec::EMPTY,
        };
        for i in (0..1000).rev() {
            t.insert_range(range(i * 0x2000, i * 0x2000 + 0x1000, i as u64));
        }
        assert_eq!(t.ranges.len, 1000);
        assert!(t
            .ranges
            .as_slice()
            .windows(2)
            .all(|w| w[0].end <= w[1].start));
        for i in 0..1000 {
            t.add_thread(Entry {
                thread: i + 1,
                ..range(0, 4096, i as u64)
            });
        }
        t.remove_threads(|e| e.thread % 2 == 0);
        assert_eq!(t.threads.len, 500);
        assert!(t.thread(|e| e.thread == 3).is_some() && t.thread(|e| e.thread == 4).is_none());
    }
}
