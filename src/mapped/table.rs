//! Memory the program maps itself, outside malloc: anonymous and file
//! mappings made with `mmap`, `mmap64` and `mremap` and given back with
//! `munmap` (and `MAP_FIXED` over them), the stacks of the threads it
//! creates, System V shared memory and the program break (the interposed
//! functions are `hook::mapping`, `hook::threads`, `hook::segments`).
//!
//! Sampled by bytes like the heap, on the same countdown
//! (`sample::thread_state`) and the same decision (`sample::sampling`): an
//! unsampled `mmap` pays the countdown. The sampled mappings live in a table
//! of address ranges of their own, under one lock: mapping calls are rare
//! next to malloc, and the kernel serialises them anyway.
//!
//! Only the program's calls are seen: glibc's malloc, `pthread_create` and
//! the dynamic loader map through internal calls that never reach an
//! interposed symbol. An allocator that maps through the `mmap` symbol
//! (jemalloc) is recognised by the caller of a sampled call, which lies in
//! the object that provides `malloc`: its mappings are heap, already counted.
//! Reservations (`PROT_NONE`) hold no memory and are not tracked; a
//! `MAP_FIXED` mapping over memory already held that the table does not
//! know (a block of glibc's malloc) is its holder's, not tracked either.
//!
//! A sample's stack goes the heap's way (`hook::sampled::record_mapped`):
//! the entry is tracked with its stack `PENDING` until the collector has
//! interned it (`Table::set_stack`); the dump renders the table's entries
//! with the heap's stacks (`collect::collector`).
//!
//! Locks: `TABLE` only, never held while allocating (an allocation can come
//! back into `munmap`: a program's own malloc) and taken after the
//! collector's state lock, never before (the lock order is ARCHITECTURE.md's).

use crate::sys::lock::SpinLock;
use crate::{next, sys::clock};
use core::ffi::c_int;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
    pub fn of(prot: c_int, flags: c_int) -> Option<Kind> {
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
/// lock; read in assembly too, by `hook::mapping`'s naked one), and how many
/// thread stacks are tracked; written under `TABLE`.
pub(crate) static LOWEST: AtomicUsize = AtomicUsize::new(usize::MAX);
pub(crate) static HIGHEST: AtomicUsize = AtomicUsize::new(0);
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

    /// Gives the pieces of sample `seq` (or its thread stack) their
    /// interned stack; without one, they stop being tracked.
    pub fn set_stack(&mut self, seq: u64, stack: Option<u32>) {
        match stack {
            Some(id) => self
                .threads
                .as_mut_slice()
                .iter_mut()
                .filter(|e| e.seq == seq)
                .for_each(|e| e.stack = id),
            None => self.remove_threads(|e| e.seq == seq),
        }
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

/// The page size (`pages`), read in assembly too (`hook::mapping`'s naked
/// `mmap`).
pub(crate) static PAGE: AtomicUsize = AtomicUsize::new(4096);

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

/// Where the object that provides malloc is mapped: a sampled call from
/// inside it is the allocator's own mapping (heap). Found with the
/// lock-free `_dl_find_object`, never `dladdr`: the allocator may hold its
/// own lock while it maps, and `dladdr` takes the loader's, which a thread
/// that allocates under it (`dl_iterate_phdr`) holds.
static ALLOCATOR_BASE: AtomicUsize = AtomicUsize::new(0);

/// Whether a sampled call whose caller is `caller` was made by the
/// allocator (counted: `mapped_allocator_calls`).
pub fn allocator_made(caller: usize) -> bool {
    let allocator = ALLOCATOR_BASE.load(Ordering::Relaxed);
    let object = crate::sys::dl::find_object(caller).map(|o| o.start);
    let made = allocator != 0 && object == Some(allocator);
    if made {
        ALLOCATOR_CALLS.fetch_add(1, Ordering::Relaxed);
    }
    made
}

/// The stack of an entry whose stack the collector has not interned yet
/// (`hook::sampled::record_mapped`); dumps leave it out until it has.
pub const PENDING: u32 = u32::MAX;

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
    // Now, not at a first call from inside the allocator (where the
    // loader's lock must not be taken); mmap's and munmap's slots start at
    // a trampoline that would look them up then.
    for slot in [
        next::slot::mmap.symbol(),
        next::slot::munmap.symbol(),
        next::slot::mremap.symbol(),
    ] {
        slot.look_up();
    }
    crate::sys::process::at_fork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
}

/// The lock `fork_prepare` takes, for the helper of `collect::single`:
/// tried a while, with `pause` between; false if not held.
pub fn try_lock(pause: fn()) -> bool {
    TABLE.try_acquire_for(10_000, pause)
}

pub fn unlock() {
    TABLE.release();
}

extern "C" fn fork_prepare() {
    TABLE.acquire();
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

/// Whether all of [addr, addr + len) is mapped now with some access (not a
/// `PROT_NONE` reservation, whose commit is new memory), from
/// /proc/self/maps (raw calls, no allocation; only for a sampled
/// `MAP_FIXED` call). False when it cannot be read.
pub fn held_already(addr: usize, len: usize) -> bool {
    let end = addr.saturating_add(len);
    let mut covered = addr;
    let mut buf = [0u8; 4096];
    let hex = |field: &[u8]| {
        let text = core::str::from_utf8(field).ok()?;
        usize::from_str_radix(text, 16).ok()
    };
    // The kernel hands out whole lines per read, in address order.
    crate::sys::raw::scan_file(c"/proc/self/maps", &mut buf, |piece| {
        for line in piece.split(|&b| b == b'\n') {
            let mut fields = line.split(|&b| b == b' ');
            let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
                continue;
            };
            let mut ends = range.split(|&b| b == b'-');
            let (Some(lo), Some(hi)) = (ends.next().and_then(hex), ends.next().and_then(hex))
            else {
                continue;
            };
            if hi <= covered {
                continue;
            }
            if lo > covered || perms.get(..3) == Some(b"---") {
                return Some(false);
            }
            covered = hi;
            if covered >= end {
                return Some(true);
            }
        }
        None
    })
    .unwrap_or(false)
}

/// Bytes the library maps for its mapping tables.
pub fn table_bytes() -> usize {
    TABLE.with(|t| t.ranges.bytes() + t.threads.bytes())
}

/// A copy of the tracked entries (ranges and thread stacks) whose stacks
/// are interned, for a dump; None if the memory for it cannot be had.
pub fn live_entries() -> Option<Vec<Entry>> {
    let mut live: Vec<Entry> = Vec::new();
    loop {
        let need = TABLE.with(|t| t.ranges.len + t.threads.len);
        live.try_reserve(need).ok()?;
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
    // Not interned yet: in the next dump.
    live.retain(|e| e.stack != PENDING);
    Some(live)
}

/// A mapped sample whose stack could not be interned (it is no longer
/// tracked).
pub fn count_dropped() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// Sets every tracked entry's stack to `lost` (a forked child whose
/// collector state was not whole: the stacks are not in its table).
pub fn lose_stacks(lost: u32) {
    TABLE.with(|t| {
        let ranges = t.ranges.as_mut_slice().iter_mut();
        ranges
            .chain(t.threads.as_mut_slice().iter_mut())
            .for_each(|e| e.stack = lost);
    });
}

/// (samples lost because the table could not grow, sampled calls left out
/// because the allocator made them).
pub fn counts() -> (u64, u64) {
    (
        DROPPED.load(Ordering::Relaxed),
        ALLOCATOR_CALLS.load(Ordering::Relaxed),
    )
}

impl Kind {
    pub fn fact(self) -> &'static str {
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
            stack: PENDING,
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
