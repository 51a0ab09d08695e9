//! The live set: every sampled allocation that has not been freed, keyed by
//! address. Written synchronously by the allocating and the freeing thread, so
//! a free is never lost and never confused with a later allocation at the
//! same address.
//!
//! In front of it, a filter of per-slot counts answers "might this pointer be
//! sampled?" with one byte load, which is all an unsampled `free` pays. A
//! filter slot always belongs to one shard, so its count is only written
//! under that shard's lock. A count that reaches 255 sticks (only costing
//! false positives); bootstrap blocks are marked that way too.
//!
//! The filter is indexed by the address itself, not by a hash: one slot per
//! 256-byte granule of the address's low 32 bits (a shift; a hash costs a
//! multiply and a 64-bit constant more). A free then takes the slow path
//! only near a live sample: about 256 bytes in a 512 KiB period, 0.05 % of
//! frees, however many samples are live (a hash into 65,536 slots rules out
//! fewer and fewer: 3 % of frees with 2,000 live samples). Its 16 MiB are
//! address space (`.bss`): a page is read as the zero page until a sample
//! writes it, so the resident cost is one 4 KiB page per MiB of address
//! space that held a sample (mod 4 GiB), at most 16 MiB. Huge pages are
//! refused for it (`init`), or one sample would make 2 MiB of it resident.

use crate::sys::lock::SpinLock;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// A filter slot covers 1 << GRANULE_BITS bytes. The slot of an address is
/// its low 32 bits shifted right by this (`filter_index`, and the naked
/// entry points of `hook::alloc`, which read `FILTER` in assembly).
pub(crate) const GRANULE_BITS: u32 = 8;
const FILTER_SLOTS: usize = 1 << (32 - GRANULE_BITS);
const SHARDS: usize = 64;
const STUCK: u8 = u8::MAX;

pub(crate) static FILTER: Filter = Filter([const { AtomicU8::new(0) }; FILTER_SLOTS]);
/// The filter's pages ever written (a bit each), for the library's own
/// memory in a dump: a written page stays resident.
const FILTER_PAGES: usize = FILTER_SLOTS / 4096;
static WRITTEN: [AtomicU64; FILTER_PAGES / 64] = [const { AtomicU64::new(0) }; FILTER_PAGES / 64];
static TABLES: [SpinLock<Table>; SHARDS] = [const { SpinLock::new(Table::EMPTY) }; SHARDS];

/// Estimated live heap bytes (un-sampled, as jeprof does), its highest value
/// and when (Unix seconds): kept on sampled allocations and frees only.
static ESTIMATE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);
static PEAK_TIME: AtomicU64 = AtomicU64::new(0);

/// (estimated live bytes, peak, peak time in Unix seconds).
pub fn estimate() -> (u64, u64, u64) {
    (
        ESTIMATE.load(Ordering::Relaxed),
        PEAK.load(Ordering::Relaxed),
        PEAK_TIME.load(Ordering::Relaxed),
    )
}

fn estimated_bytes(size: usize) -> u64 {
    use crate::sample::sampling;
    let bytes = sampling::estimated_bytes(size, sampling::period());
    // Through i64 where it fits (fewer instructions than to u64).
    if bytes < i64::MAX as f64 {
        bytes as i64 as u64
    } else {
        bytes as u64
    }
}

/// `LEAKPROBE_PEAK`: the collector writes the live profile whenever the
/// estimate passes the last one it wrote by 5 % (and 1 MiB).
static PEAK_CAPTURED: AtomicU64 = AtomicU64::new(0);
static PEAK_WANTED: AtomicBool = AtomicBool::new(false);

/// Whether a new peak wants its profile written (and clears the request).
pub fn take_peak_request() -> bool {
    PEAK_WANTED.load(Ordering::Relaxed) && PEAK_WANTED.swap(false, Ordering::Relaxed)
}

fn count_in(size: usize) {
    let bytes = estimated_bytes(size);
    let now = ESTIMATE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if now > PEAK.fetch_max(now, Ordering::Relaxed) {
        PEAK_TIME.store(crate::sys::clock::wall().as_secs(), Ordering::Relaxed);
        let captured = PEAK_CAPTURED.load(Ordering::Relaxed);
        if crate::settings::get().is_some_and(|s| s.peak)
            && now >= captured + (captured / 20).max(1 << 20)
        {
            PEAK_CAPTURED.store(now, Ordering::Relaxed);
            if !PEAK_WANTED.swap(true, Ordering::Relaxed) {
                crate::sys::doorbell::ring();
            }
        }
    }
}

fn count_out(size: usize) {
    let bytes = estimated_bytes(size);
    let _ = ESTIMATE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(bytes))
    });
}

/// Stack id of a sample the collector has not interned yet.
pub const PENDING: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ptr: usize,
    pub size: usize,
    /// Unique per sampled allocation: tells a reallocation at the same
    /// address from the allocation the collector is resolving.
    pub seq: u64,
    pub stack: u32,
    /// Coarse time of the allocation, seconds since the library loaded.
    pub born: u32,
    /// The allocator's usable size of the block (`malloc_usable_size`),
    /// 0 when the allocator does not say.
    pub usable: usize,
}

impl Entry {
    const VACANT: Entry = Entry {
        ptr: 0,
        size: 0,
        seq: 0,
        stack: 0,
        born: 0,
        usable: 0,
    };
}

#[inline(always)]
fn hash(p: usize) -> u64 {
    (p as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The filter's slots, page-aligned for `init`'s advice.
#[repr(C, align(4096))]
pub(crate) struct Filter([AtomicU8; FILTER_SLOTS]);

/// The filter slot of address `p`: its granule in the low 32 bits.
#[inline(always)]
fn filter_index(p: usize) -> usize {
    (p as u32 >> GRANULE_BITS) as usize
}

#[inline(always)]
fn filter_slot(p: usize) -> &'static AtomicU8 {
    &FILTER.0[filter_index(p)]
}

/// The shard of `p`: a function of its filter slot, so that each slot is
/// written under one lock; neighbouring granules go to different shards.
fn shard(p: usize) -> &'static SpinLock<Table> {
    &TABLES[filter_index(p) % SHARDS]
}

/// Refuses transparent huge pages for the filter (with them, the first
/// write to any 2 MiB of it would make all of it resident). Once, when the
/// next allocator is looked up, before anything writes it.
pub fn init() {
    let start = FILTER.0.as_ptr() as usize;
    crate::sys::raw::no_huge_pages(start, FILTER_SLOTS);
}

/// False means `p` is certainly not a sampled allocation.
#[inline(always)]
pub fn maybe_sampled(p: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: reads one byte of FILTER (`filter_index` < FILTER_SLOTS),
        // a byte load, as `AtomicU8::load(Relaxed)` is; compared in memory,
        // where Rust's atomic load takes a register and a test.
        unsafe {
            core::arch::asm!(
                "cmp byte ptr [{filter} + {index}], 0",
                "jne {maybe}",
                filter = in(reg) FILTER.0.as_ptr(),
                index = in(reg) filter_index(p),
                maybe = label { return true },
                options(nostack),
            )
        };
        false
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        filter_slot(p).load(Ordering::Relaxed) != 0
    }
}

/// Notes the filter page of `p` as written (before it is).
fn note_written(p: usize) {
    let page = filter_index(p) / 4096;
    WRITTEN[page / 64].fetch_or(1 << (page % 64), Ordering::Relaxed);
}

/// Bytes of the filter resident because a sample wrote them.
pub fn filter_bytes() -> usize {
    let pages: u32 = WRITTEN
        .iter()
        .map(|w| w.load(Ordering::Relaxed).count_ones())
        .sum();
    pages as usize * 4096
}

/// Makes every free of `p` take the slow path (used for bootstrap blocks).
pub fn mark_always_checked(p: usize) {
    note_written(p);
    shard(p).with(|_| filter_slot(p).store(STUCK, Ordering::Relaxed));
}

/// Makes every free of `p` take the slow path while the guard lives, with
/// no entry (the C++ operators' probe watches for a block that way).
pub fn checked_while(p: usize) -> Checked {
    shard(p).with(|_| count_filter(p, true));
    Checked(p)
}

pub struct Checked(usize);

impl Drop for Checked {
    fn drop(&mut self) {
        shard(self.0).with(|_| count_filter(self.0, false));
    }
}

/// Counts one more (or one less) block at the filter slot of `p`, unless it
/// is stuck. Only under the shard's lock.
fn count_filter(p: usize, more: bool) {
    let slot = filter_slot(p);
    let n = slot.load(Ordering::Relaxed);
    if more && n == 0 {
        note_written(p);
    }
    if n != STUCK {
        slot.store(if more { n + 1 } else { n - 1 }, Ordering::Relaxed);
    }
}

/// Records a new sampled allocation.
pub fn insert(e: Entry) {
    count_in(e.size);
    let h = hash(e.ptr);
    shard(e.ptr).with(|t| {
        t.insert(e, h);
        count_filter(e.ptr, true);
    });
}

/// Removes `p` from the live set, if it is there.
pub fn remove(p: usize) -> Option<Entry> {
    let h = hash(p);
    shard(p).with(|t| {
        let e = t.remove(p, h)?;
        count_out(e.size);
        count_filter(p, false);
        Some(e)
    })
}

/// Applies `f` to the entry for `p` if it is the allocation numbered `seq`.
pub fn update(p: usize, seq: u64, f: impl FnOnce(&mut Entry)) {
    let h = hash(p);
    shard(p).with(|t| {
        if let Some(e) = t.find(p, h).filter(|e| e.seq == seq) {
            f(e);
        }
    });
}

/// Changes the size (and usable size) of the entry for `p`, whichever
/// allocation it is.
pub fn resize(p: usize, size: usize, usable: usize) {
    let h = hash(p);
    shard(p).with(|t| {
        if let Some(e) = t.find(p, h) {
            count_out(e.size);
            count_in(size);
            e.size = size;
            e.usable = usable;
        }
    });
}

/// Copies every live entry into `out` (cleared first). Never allocates while
/// holding a shard lock: it reserves room first and retries if a shard grew.
pub fn snapshot(out: &mut Vec<Entry>) {
    out.clear();
    for table in &TABLES {
        loop {
            let need = table.with(|t| t.len);
            out.reserve(need);
            let copied = table.with(|t| {
                if out.capacity() - out.len() < t.len {
                    return false;
                }
                out.extend(t.entries().iter().filter(|e| e.ptr != 0));
                true
            });
            if copied {
                break;
            }
        }
    }
}

/// Forgets every live entry (a new attach: blocks freed while detached were
/// not seen going).
pub fn clear() {
    let mut all = Vec::new();
    snapshot(&mut all);
    for e in all {
        remove(e.ptr);
    }
}

/// Bytes mapped for the live tables.
pub fn table_bytes() -> usize {
    TABLES
        .iter()
        .map(|t| {
            t.with(|t| {
                if t.slots.is_null() {
                    0
                } else {
                    (t.mask + 1) * core::mem::size_of::<Entry>()
                }
            })
        })
        .sum()
}

/// Live samples now.
pub fn count() -> usize {
    TABLES.iter().map(|t| t.with(|t| t.len)).sum()
}

/// Takes every shard lock (before `fork`, so the child sees whole tables).
pub fn lock_all() {
    TABLES.iter().for_each(|t| t.acquire());
}

/// `lock_all` for the helper of `collect::single`, which must not wait
/// forever (nor call glibc's `sched_yield`): each lock is tried a while,
/// with `pause` between tries; on failure none is held.
pub fn try_lock_all(pause: impl Fn()) -> bool {
    for (i, table) in TABLES.iter().enumerate() {
        if !table.try_acquire_for(10_000, &pause) {
            TABLES[..i].iter().for_each(|t| t.release());
            return false;
        }
    }
    true
}

pub fn unlock_all() {
    TABLES.iter().for_each(|t| t.release());
}

/// One shard: open addressing with linear probing, storage from `mmap` so the
/// table never re-enters the allocator it watches.
struct Table {
    slots: *mut Entry,
    mask: usize,
    len: usize,
}

// SAFETY: a Table is only reached under its shard's lock.
unsafe impl Send for Table {}

impl Table {
    const EMPTY: Table = Table {
        slots: core::ptr::null_mut(),
        mask: 0,
        len: 0,
    };
    const INITIAL: usize = 256;

    fn entries(&self) -> &[Entry] {
        if self.slots.is_null() {
            return &[];
        }
        // SAFETY: `slots` maps `mask + 1` initialised entries.
        unsafe { core::slice::from_raw_parts(self.slots, self.mask + 1) }
    }

    fn entries_mut(&mut self) -> &mut [Entry] {
        if self.slots.is_null() {
            return &mut [];
        }
        // SAFETY: as above, and we hold `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(self.slots, self.mask + 1) }
    }

    fn home(&self, h: u64) -> usize {
        (h >> 20) as usize & self.mask
    }

    fn find(&mut self, p: usize, h: u64) -> Option<&mut Entry> {
        let mut i = self.home(h);
        let mask = self.mask;
        let slots = self.entries_mut();
        while !slots.is_empty() && slots[i].ptr != 0 {
            if slots[i].ptr == p {
                return Some(&mut slots[i]);
            }
            i = (i + 1) & mask;
        }
        None
    }

    fn insert(&mut self, e: Entry, h: u64) {
        if (self.len + 1) * 2 > self.mask + 1 || self.slots.is_null() {
            self.grow();
        }
        let mut i = self.home(h);
        let mask = self.mask;
        let slots = self.entries_mut();
        while slots[i].ptr != 0 && slots[i].ptr != e.ptr {
            i = (i + 1) & mask;
        }
        if slots[i].ptr == 0 {
            self.len += 1;
        }
        self.entries_mut()[i] = e;
    }

    fn remove(&mut self, p: usize, h: u64) -> Option<Entry> {
        let mask = self.mask;
        let mut i = self.home(h);
        let slots = self.entries_mut();
        loop {
            if slots.is_empty() || slots[i].ptr == 0 {
                return None;
            }
            if slots[i].ptr == p {
                break;
            }
            i = (i + 1) & mask;
        }
        let removed = slots[i];
        // Backward-shift deletion keeps every probe chain unbroken.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while slots[j].ptr != 0 {
            let want = (hash(slots[j].ptr) >> 20) as usize & mask;
            if (j.wrapping_sub(want) & mask) >= (j.wrapping_sub(hole) & mask) {
                slots[hole] = slots[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        slots[hole] = Entry::VACANT;
        self.len -= 1;
        Some(removed)
    }

    fn grow(&mut self) {
        let cap = if self.slots.is_null() {
            Self::INITIAL
        } else {
            (self.mask + 1) * 2
        };
        let bytes = cap * core::mem::size_of::<Entry>();
        // Zeroed memory is all VACANT entries.
        let Some(fresh) = crate::sys::raw::map_anonymous(bytes) else {
            // Keep probing the full table rather than fail the allocation;
            // `insert` only grows at half load, so there is still room.
            if !self.slots.is_null() && self.len < self.mask {
                return;
            }
            crate::sys::log::log!("cannot map {bytes} bytes for the live table; aborting");
            // Without room the live set cannot stay correct.
            crate::sys::process::abort();
        };
        let old = core::mem::replace(
            self,
            Table {
                slots: fresh.cast(),
                mask: cap - 1,
                len: 0,
            },
        );
        for e in old.entries().iter().filter(|e| e.ptr != 0) {
            self.insert(*e, hash(e.ptr));
        }
        if !old.slots.is_null() {
            // SAFETY: the old table's own mapping, no longer referenced.
            unsafe {
                crate::sys::raw::unmap(
                    old.slots.cast(),
                    (old.mask + 1) * core::mem::size_of::<Entry>(),
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ptr: usize, seq: u64) -> Entry {
        Entry {
            ptr,
            size: 8,
            seq,
            stack: PENDING,
            born: 0,
            usable: 16,
        }
    }

    #[test]
    fn table_survives_growth_and_backward_shift() {
        let mut t = Table::EMPTY;
        let ptrs: Vec<usize> = (1..5000).map(|i| i * 16).collect();
        for (i, &p) in ptrs.iter().enumerate() {
            t.insert(entry(p, i as u64), hash(p));
        }
        assert_eq!(t.len, ptrs.len());
        for &p in ptrs.iter().step_by(2) {
            assert_eq!(t.remove(p, hash(p)).map(|e| e.ptr), Some(p));
        }
        for (i, &p) in ptrs.iter().enumerate() {
            assert_eq!(t.find(p, hash(p)).is_some(), i % 2 == 1, "ptr {p:#x}");
        }
        assert_eq!(t.remove(16, hash(16)), None);
    }

    #[test]
    fn filter_tracks_insert_and_remove() {
        let p = 0x7f00_dead_bee0;
        assert!(!maybe_sampled(p));
        insert(entry(p, 1));
        assert!(maybe_sampled(p));
        update(p, 2, |e| e.stack = 7);
        update(p, 1, |e| e.stack = 3);
        let mut snap = Vec::new();
        snapshot(&mut snap);
        assert_eq!(snap.iter().find(|e| e.ptr == p).map(|e| e.stack), Some(3));
        assert_eq!(remove(p).map(|e| e.seq), Some(1));
        assert!(!maybe_sampled(p));
    }

    #[test]
    fn the_filter_counts_blocks_by_granule_of_the_low_32_bits() {
        let p = 0x7f11_2233_4400;
        let near = p + 8; // jemalloc's 8-byte blocks share a granule
        insert(entry(p, 10));
        insert(entry(near, 11));
        // Its granule, in every 4 GiB window: never missed, at worst a
        // false positive.
        assert!(maybe_sampled(p) && maybe_sampled(p + (1 << 32)) && maybe_sampled(p + 255));
        assert!(!maybe_sampled(p + 256) && !maybe_sampled(p - 1));
        assert_eq!(remove(p).map(|e| e.seq), Some(10));
        assert!(
            maybe_sampled(near),
            "the other block in the granule is still live"
        );
        assert_eq!(remove(near).map(|e| e.seq), Some(11));
        assert!(!maybe_sampled(p) && !maybe_sampled(near));
        assert!(filter_bytes() >= 4096);
    }
}
