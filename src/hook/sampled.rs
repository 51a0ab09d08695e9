//! The sampled path shared by every allocating entry point (`alloc`, `cxx`):
//! which entry point a sample names as frame 0, and the cold functions that
//! record a sampled block and take a freed one out of the live table.

use crate::collect::ring::{self, Sample};
use crate::collect::{collector, mode, single};
use crate::mapped::table::{self, Kind};
use crate::next::{self, bootstrap};
use crate::sample::live::{self, PENDING};
use crate::sample::sampling;
use crate::sys::{clock, doorbell};
use crate::unwind::stack::{self, Stack};
use core::cell::Cell;
use core::ffi::{c_int, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

type Ptr = *mut c_void;

/// The function named by frame 0 of a sample. For the heap only names that
/// both jeprof and pprof drop as allocator frames are used (pprof does not
/// know `aligned_alloc`, `reallocarray` or the jemalloc names); `New` and
/// `NewArray` are `operator new` and `operator new[]`. The rest are the
/// entry points of mapped memory (rows only the script reads).
#[derive(Clone, Copy)]
pub enum Api {
    Malloc,
    New,
    NewArray,
    Calloc,
    Realloc,
    PosixMemalign,
    Memalign,
    Valloc,
    Pvalloc,
    Mmap,
    Mmap64,
    Mremap,
    Shmat,
    Sbrk,
    Brk,
    PthreadCreate,
}

impl Api {
    const ALL: [(Api, &'static CStr); 16] = [
        (Api::Malloc, c"malloc"),
        (Api::New, c"_Znwm"),
        (Api::NewArray, c"_Znam"),
        (Api::Calloc, c"calloc"),
        (Api::Realloc, c"realloc"),
        (Api::PosixMemalign, c"posix_memalign"),
        (Api::Memalign, c"memalign"),
        (Api::Valloc, c"valloc"),
        (Api::Pvalloc, c"pvalloc"),
        (Api::Mmap, c"mmap"),
        (Api::Mmap64, c"mmap64"),
        (Api::Mremap, c"mremap"),
        (Api::Shmat, c"shmat"),
        (Api::Sbrk, c"sbrk"),
        (Api::Brk, c"brk"),
        (Api::PthreadCreate, c"pthread_create"),
    ];

    pub fn address(self) -> usize {
        OWN_ADDRESS[self as usize].load(Ordering::Relaxed)
    }
}

/// Each entry point's address in this library, by `Api`; 0 until resolved
/// (or if the library cannot look itself up: frame 0 is then 0, which both
/// tools show as an unknown frame rather than a wrong name).
static OWN_ADDRESS: [AtomicUsize; Api::ALL.len()] = [const { AtomicUsize::new(0) }; Api::ALL.len()];

/// Looks up every frame-0 function in this library's own symbol table, once
/// at load: jeprof names frame 0 as it is (it subtracts 1 only from callers),
/// so it must lie in the library's function, never in a program's PLT stub;
/// and a library attached late would get libc's from `f as *const ()`
/// (its references to its own exported functions go through the loader).
/// `dlsym` on the library's own handle searches the library and its
/// dependencies, never the program, so it cannot return the program's
/// canonical PLT entry.
pub fn resolve_own_addresses() {
    let Some(own) = crate::sys::dl::Own::open() else {
        return;
    };
    for (api, name) in Api::ALL {
        if let Some(f) = own.definition(name) {
            OWN_ADDRESS[api as usize].store(f, Ordering::Relaxed);
        }
    }
}

/// An allocation of `size` bytes reached the sample point: allocate, then
/// record it if the sampler says so. `alloc` comes first: it holds the
/// entry point's arguments, which then stay in their registers on the
/// entry point's unsampled path (no moves to make room for `size`).
///
/// # Safety
/// `alloc` returns null or a live block of at least `size` bytes, of the
/// next allocator or the bootstrap arena.
#[cold]
#[inline(never)]
pub unsafe fn allocate_sampled(alloc: impl FnOnce() -> Ptr, size: usize, api: Api) -> Ptr {
    let p = alloc();
    if sampling::decide(size) && !p.is_null() {
        // SAFETY: `p` is not null, so a live block (this function's contract).
        unsafe { record(p, size, api) };
    }
    p
}

/// A free of a block the filter could not rule out: remove it from the live
/// set before it returns to the allocator, so a later allocation at the same
/// address cannot be mistaken for it. `by` says which free it is (for a probe
/// of `hook::cxx`); it comes last, so the entry point's arguments stay in
/// their registers on its unchecked path.
#[cold]
#[inline(never)]
pub fn release_sampled(p: Ptr, release: impl FnOnce(Ptr), by: Freed) {
    if bootstrap::owns(p) {
        return;
    }
    note_release(p, by);
    if !p.is_null() {
        live::remove(p as usize);
    }
    release(p)
}

/// Inlined into the cold paths that call it, so the walk starts in their
/// frame: the library's frames it passes are those paths' only.
///
/// # Safety
/// `p` is a live block of at least `size` bytes, of the next allocator or
/// the bootstrap arena.
#[inline(always)]
pub unsafe fn record(p: Ptr, size: usize, api: Api) {
    let _busy = sampling::Busy::enter();
    let mut sample = Sample {
        seq: 0,
        ptr: p as usize,
        size,
        stack: Stack::new(),
    };
    // Here, in the cold path's own frame, where the walk then starts.
    stack::capture(api.address(), &mut sample.stack);
    // SAFETY: this function's contract.
    unsafe { record_stack(p, &mut sample) }
}

/// The rest of `record`, once the stack is captured.
///
/// # Safety
/// As `record`.
#[inline(never)]
unsafe fn record_stack(p: Ptr, sample: &mut Sample) {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    single::check_threads();
    collector::ensure_running();
    let _flight = collector::fork::InFlight::enter();
    let (ptr, size, seq) = (sample.ptr, sample.size, SEQ.fetch_add(1, Ordering::Relaxed));
    sample.seq = seq;
    fold_operator_frames(&mut sample.stack);
    let wake_for_names = crate::unwind::frames::append(&mut sample.stack, stack::max_len());
    let born = clock::monotonic().as_secs() as u32;
    // SAFETY: `p` is a live block, of the bootstrap arena or of the next
    // allocator (this function's contract).
    let usable = unsafe {
        if bootstrap::owns(p) {
            bootstrap::size_of(p)
        } else {
            next::malloc_usable_size(p)
        }
    };
    let entry = live::Entry {
        ptr,
        size,
        seq,
        stack: PENDING,
        born,
        // An allocator without malloc_usable_size answers 0: unknown.
        usable: if usable >= size { usable } else { 0 },
    };
    if mode::active() && collector::snapshot::record_inline(sample, entry) {
        return;
    }
    live::insert(entry);
    if !ring::push(sample.clone(), doorbell::ring) {
        live::remove(ptr);
    } else if wake_for_names {
        doorbell::ring();
    }
}

/// A sampled mapping (or thread stack, segment), tracked in
/// `mapped::table` as sample `seq` with its stack pending: the stack
/// (`capture_mapped`) goes the heap's way, interned by the collector (or on
/// this thread in single-threaded mode), which then resolves the entry. A
/// sample that cannot be handed on stops being tracked.
#[cold]
#[inline(never)]
pub fn record_mapped(kind: Kind, seq: u64, size: usize, stack: &Stack) {
    let sample = mapped_sample(kind, seq, size, stack);
    if mode::active() && collector::snapshot::record_mapped_inline(&sample) {
        return;
    }
    if !ring::push(sample, doorbell::ring) {
        table::with_table(|t| t.set_stack(seq, None));
    }
}

/// `record_mapped` for a move of the program break, under the table's
/// lock: only ever the ring, without waiting, since the library's malloc
/// could move the break under the program. In single-threaded mode the
/// ring then holds it until a sampled mapping on this thread, or a process
/// copy writing a dump, takes it (`collector::snapshot`); the lock keeps
/// any copy from seeing the push half done. False if it was dropped.
pub fn record_break(seq: u64, size: usize, stack: &Stack) -> bool {
    ring::push_now(mapped_sample(Kind::Brk, seq, size, stack))
}

fn mapped_sample(kind: Kind, seq: u64, size: usize, stack: &Stack) -> Sample {
    Sample::mapped(kind, seq, size, stack.clone())
}

/// Captures the stack of a sampled call made at exported function `entry`
/// (a mapping's), without allocating; false when the allocator made the
/// call (its mappings are heap, counted already: `mapped::table`).
pub fn capture_mapped(entry: usize, stack: &mut Stack) -> bool {
    stack::capture(entry, stack);
    let caller = stack.frames().get(1).copied().unwrap_or(0);
    if table::allocator_made(caller) {
        return false;
    }
    // A JVM's mappings (FileChannel.map, thread stacks) under the Java
    // methods that made them.
    crate::unwind::frames::append(stack, stack::max_len());
    true
}

/// The code of the next `operator new`s that reach the library (start, end), in
/// `Sym` order (the odd ones are the array forms). A sample taken in
/// `malloc` under them is recorded as `operator new` with the library's own
/// frame 0: jeprof does not recognise libstdc++'s versioned names
/// (`operator new@@GLIBCXX_3.4`) as allocator frames.
static NEW_RANGES: [(AtomicUsize, AtomicUsize); NEW_FORMS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; NEW_FORMS];

/// Whether any range is noted: samples are then folded.
static FOLDS: AtomicBool = AtomicBool::new(false);

/// The operator new forms (`hook::cxx`'s `Sym` order: the odd ones arrays).
pub const NEW_FORMS: usize = 8;

/// Notes that operator new form `i` (its code from `start` to `end`) reaches
/// the library's `malloc` (or another of its entry points).
pub fn note_new_range(i: usize, start: usize, end: usize) {
    if let Some(range) = NEW_RANGES.get(i) {
        range.1.store(end, Ordering::Relaxed);
        range.0.store(start, Ordering::Release);
        FOLDS.store(true, Ordering::Relaxed);
    }
}

/// Whether return address `ip` is inside one of libstdc++'s operator news:
/// Some(true) for an array form.
fn in_new(ip: usize) -> Option<bool> {
    let at = ip.wrapping_sub(1);
    NEW_RANGES.iter().enumerate().find_map(|(i, (lo, hi))| {
        let lo = lo.load(Ordering::Acquire);
        (lo != 0 && lo <= at && at < hi.load(Ordering::Relaxed)).then_some(i % 2 == 1)
    })
}

/// On a sampled path: frames of the next operator news right above frame 0
/// become one frame 0, the library's own `operator new` (or `new[]`).
pub fn fold_operator_frames(stack: &mut crate::unwind::stack::Stack) {
    if !FOLDS.load(Ordering::Relaxed) {
        return;
    }
    let frames = stack.frames_mut();
    let len = frames.len();
    let mut above = 1;
    let mut array = false;
    while let Some(a) = frames.get(above).and_then(|&f| in_new(f)) {
        array = a;
        above += 1;
    }
    if above == 1 {
        return;
    }
    let api = if array { Api::NewArray } else { Api::New };
    frames[0] = api.address() + 1;
    frames.copy_within(above..len, 1);
    stack.truncate(len - (above - 1));
}

/// Which of the library's frees took a block out, as far as a probe of
/// `hook::cxx` needs to know: an operator delete that ends in `free`, or in
/// `sdallocx` with the block's size and alignment, can be skipped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Freed {
    Free,
    /// `sdallocx` with this size and these flags.
    Sized(usize, c_int),
    Other,
}

thread_local! {
    /// The block a probe of `hook::cxx` deletes, and the free of the library
    /// that saw it, if one did.
    static PROBED: Cell<(usize, Option<Freed>)> = const { Cell::new((0, None)) };
}

/// Threads probing now: the library's frees look for a probed block only then.
static PROBING: AtomicUsize = AtomicUsize::new(0);

/// Called by every free of the library on its slow path.
fn note_release(p: Ptr, by: Freed) {
    if PROBING.load(Ordering::Relaxed) != 0 {
        PROBED.with(|c| {
            if c.get().0 == p as usize {
                c.set((p as usize, Some(by)));
            }
        });
    }
}

/// While `f` runs on this thread, which free of the library saw block `p`,
/// if one did.
pub fn released_during(p: usize, f: impl FnOnce()) -> Option<Freed> {
    PROBING.fetch_add(1, Ordering::Relaxed);
    PROBED.set((p, None));
    f();
    let seen = PROBED.get().1;
    PROBED.set((0, None));
    PROBING.fetch_sub(1, Ordering::Relaxed);
    seen
}
