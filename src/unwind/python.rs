//! Python frames for native allocations made under CPython (3.11, 3.12,
//! 3.13), with nothing but `LD_PRELOAD` and no call into the interpreter.
//!
//! - At load (and by the collector while a program may still load
//!   libpython), the interpreter is recognised by its exported `_PyRuntime`,
//!   `Py_Version`, `PyCode_Type` and `_PyEval_EvalFrameDefault`; the layout
//!   of the few structures read is picked by minor version (`Layout`; 3.13's
//!   is checked against its `_Py_DebugOffsets`). No interpreter: nothing but
//!   one test of `ACTIVE` per sample.
//! - On a sampled allocation, the thread's own thread state comes from the
//!   interpreter's thread-specific key (`autoTSSkey`, `pthread_getspecific`:
//!   no lock, no allocation), held or not the GIL: only the thread itself
//!   pushes and pops its frames, and each frame holds its code object, so
//!   the chain read on the thread is alive while it is read. A thread with
//!   no thread state gets no frames; one running a sub-interpreter above
//!   its frames gets its main interpreter's frames, paired with the outer
//!   eval loops (`splice`).
//! - Every read past the key is checked (`Mem`): inside the thread's frame
//!   stack chunks, or on a page read without fault before; else it is made
//!   with `process_vm_readv` (no fault possible), and its page noted. (A
//!   page is not forgotten when unmapped: only a pointer the interpreter
//!   left stale could lead there, and a live chain holds none.)
//! - Each frame becomes a tagged word: the instruction's byte offset and
//!   the index of its code object's identity (`Slot`: the code's address,
//!   its name and file objects and first line), entered in a lock-free
//!   table the first time it is seen. The collector names a new identity
//!   soon after (woken by the sample), reading the code object by
//!   `process_vm_readv` and checking that it still is that identity; one
//!   freed before that is said so, never named after whatever reused its
//!   address.
//! - The frames are spliced into the native stack where the eval loop's
//!   frames are (`_PyEval_EvalFrameDefault`): each eval-loop activation runs
//!   the frames up to its entry frame (3.11: `is_entry`; 3.12+: the frame
//!   owned by the C stack below them).

use crate::settings::Settings;
use crate::sys::lock::SpinLock;
use crate::sys::raw;
use crate::unwind::frame_source::{FrameSource, Lines};
use crate::unwind::stack::{Stack, FRAMES_LIMIT};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Python frames are words with bit 61 set and bit 62 clear (Java's tag):
/// never a user-space address, below 2^63 (jeprof skips larger ones); the
/// instruction's byte offset above the identity's index.
const TAG: usize = 1 << 61;
const INDEX_BITS: u32 = 14;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;
const OFFSET_MASK: usize = (1 << 40) - 1;
/// The offset of a frame whose instruction pointer was not in its code.
const NO_OFFSET: usize = OFFSET_MASK;
/// Identities the table holds (index 0: unknown, the table full).
const SLOTS: usize = 1 << INDEX_BITS;
/// Python frames read per sample at most.
const MAX_PY_FRAMES: usize = FRAMES_LIMIT;

/// Set once an interpreter is recognised (and `LEAKPROBE_PYTHON` allows).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static OFF: AtomicBool = AtomicBool::new(false);
static RUNTIME: OnceLock<Runtime> = OnceLock::new();
/// Stacks that got Python frames; those whose eval-loop frames and Python
/// activations did not pair up (`splice`).
static WALKED: AtomicU64 = AtomicU64::new(0);
static UNPAIRED: AtomicU64 = AtomicU64::new(0);

/// Offsets of what is read, by minor version (from the interpreter's
/// internal headers; 3.13 also publishes them in `_Py_DebugOffsets`).
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    /// `Py_tss_t autoTSSkey` in `_PyRuntime`: `{ int initialized; pthread_key_t key; }`.
    tss: usize,
    thread_id: usize,
    datastack_chunk: usize,
    /// `tstate->cframe`, then `current_frame` in it; or, with no
    /// `cframe` (3.13), `tstate->current_frame`.
    cframe: Option<usize>,
    current_frame: usize,
    f_code: usize,
    previous: usize,
    instr: usize,
    /// 3.11: the `is_entry` byte; 3.12+: `owner`, an entry shim being 3.
    entry: Entry,
    co_filename: usize,
    co_qualname: usize,
    co_firstlineno: usize,
    co_linetable: usize,
    co_code: usize,
    /// Bytes before the characters of a compact ASCII string, of another
    /// compact string.
    ascii_header: usize,
    compact_header: usize,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Entry {
    IsEntry(usize),
    ShimOwner(usize),
}

const FRAME_OWNED_BY_CSTACK: u8 = 3;

static PY311: Layout = Layout {
    tss: 592,
    thread_id: 152,
    datastack_chunk: 296,
    cframe: Some(56),
    current_frame: 8,
    f_code: 32,
    previous: 48,
    instr: 56,
    entry: Entry::IsEntry(68),
    co_filename: 112,
    co_qualname: 128,
    co_firstlineno: 72,
    co_linetable: 136,
    co_code: 184,
    ascii_header: 48,
    compact_header: 72,
};

const PY312: Layout = Layout {
    tss: 1544,
    thread_id: 136,
    datastack_chunk: 232,
    cframe: Some(56),
    current_frame: 0,
    f_code: 0,
    previous: 8,
    instr: 56,
    entry: Entry::ShimOwner(70),
    co_filename: 112,
    co_qualname: 128,
    co_firstlineno: 68,
    co_linetable: 136,
    co_code: 192,
    ascii_header: 40,
    compact_header: 56,
};

/// 3.13: no `cframe`; the rest as 3.12 but for a few offsets.
static PY313: Layout = Layout {
    tss: 2160,
    thread_id: 152,
    cframe: None,
    current_frame: 72,
    co_code: 200,
    ..PY312
};

/// The interpreter found.
struct Runtime {
    layout: &'static Layout,
    /// `_PyRuntime` (its symbol's size checked to hold the key's offset).
    runtime: usize,
    code_type: usize,
    /// The eval loop's code: its function, and the part the compiler moved
    /// out of it (`.cold`), if found.
    eval: (usize, usize),
    eval_cold: (usize, usize),
}

/// Python's frame source (`unwind::frames`).
pub static FRAMES: FrameSource = FrameSource {
    init,
    append,
    note_stack,
    poll,
    idle_wait: |idle| idle,
    frame_lines,
    facts,
};

/// `LEAKPROBE_PYTHON=0`: never look for an interpreter.
fn init(cfg: &Settings) {
    if cfg.python {
        detect();
    } else {
        OFF.store(true, Ordering::Relaxed);
    }
}

/// Looks for an interpreter in the process: at load, and from the
/// collector's rounds until one is found (a program may load libpython
/// later). Cheap when there is none: a few `dlsym`s.
fn detect() {
    // One look at a time (load and the collector may both look): the table
    // of identities is made once, by the look that finds the interpreter.
    static LOOKING: AtomicBool = AtomicBool::new(false);
    if OFF.load(Ordering::Relaxed)
        || RUNTIME.get().is_some()
        || LOOKING.swap(true, Ordering::Acquire)
    {
        return;
    }
    look();
    LOOKING.store(false, Ordering::Release);
}

/// `detect`'s look, one at a time.
fn look() {
    if RUNTIME.get().is_some() {
        return;
    }
    use crate::sys::dl::{lookup, symbol_at, Scope};
    let runtime = lookup(Scope::Global, c"_PyRuntime") as usize;
    let version = lookup(Scope::Global, c"Py_Version") as usize;
    if runtime == 0 {
        return;
    }
    if version == 0 {
        // `_PyRuntime` without `Py_Version`: CPython 3.7 to 3.10.
        return once(format_args!(
            "Python before 3.11: no Python frames (this library reads 3.11 to 3.13)"
        ));
    }
    // SAFETY: the interpreter's `const unsigned long Py_Version` (3.11+:
    // older ones do not export it, and are not recognised).
    let version = unsafe { *(version as *const u64) };
    let layout = match version >> 16 {
        0x030B => &PY311,
        0x030C => &PY312,
        0x030D => &PY313,
        _ => {
            return once(format_args!(
                "Python {}: no Python frames (this library reads 3.11 to 3.13)",
                version_text(version)
            ))
        }
    };
    let code_type = lookup(Scope::Global, c"PyCode_Type") as usize;
    let eval = lookup(Scope::Global, c"_PyEval_EvalFrameDefault") as usize;
    let sized = |at: usize| {
        symbol_at(at as *const core::ffi::c_void)
            .filter(|(info, _)| info.dli_saddr as usize == at)
            .map(|(_, sym)| sym.st_size as usize)
            .unwrap_or(0)
    };
    let (runtime_size, eval_size) = (sized(runtime), sized(eval));
    if code_type == 0 || eval == 0 || eval_size == 0 || runtime_size < layout.tss + 8 {
        return once(format_args!(
            "Python {}: its eval loop or runtime state is not exported: no Python frames",
            version_text(version)
        ));
    }
    if layout == &PY313 && !debug_offsets_agree(runtime, runtime_size, layout) {
        return once(format_args!(
            "Python {}: its _Py_DebugOffsets differ from the layout this library reads: no Python frames",
            version_text(version)
        ));
    }
    let eval = (eval, eval + eval_size);
    let rt = Runtime {
        layout,
        runtime,
        code_type,
        eval,
        eval_cold: cold_part(eval),
    };
    let Some(table) = raw::map_anonymous(SLOTS * core::mem::size_of::<Slot>()) else {
        return;
    };
    TABLE.store(table as usize, Ordering::Release);
    let shown = version_text(version);
    // The only set: `look` runs once at a time and found none set.
    if RUNTIME.set(rt).is_ok() {
        crate::sys::process::at_fork(
            Some(names_before_fork),
            Some(names_after_fork),
            Some(names_after_fork),
        );
        ACTIVE.store(true, Ordering::Release);
        crate::sys::log::log!("Python {shown} found: Python frames are added to native stacks");
    }
}

/// Says `what` once per process (the collector may look many times).
fn once(what: core::fmt::Arguments) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        crate::sys::log::log!("{what}");
    }
}

fn version_text(v: u64) -> String {
    format!("{}.{}.{}", v >> 24 & 0xff, v >> 16 & 0xff, v >> 8 & 0xff)
}

/// 3.13 starts `_PyRuntime` with `_Py_DebugOffsets` (cookie `xdebugpy`,
/// version, then sizes and offsets): the fields read must be where `layout`
/// says. (Offsets of that struct in 3.13: thread_state's current_frame,
/// thread_id and datastack_chunk; interpreter_frame's previous, executable,
/// instr_ptr, owner; code_object's filename, qualname, linetable,
/// firstlineno, co_code_adaptive.)
fn debug_offsets_agree(runtime: usize, size: usize, layout: &Layout) -> bool {
    let mut words = [0u8; 0x160];
    if size < words.len() || !raw::read_own_memory(runtime, &mut words) {
        return false;
    }
    let at = |i: usize| {
        words.get(i..i + 8).map_or(usize::MAX, |w| {
            u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) as usize
        })
    };
    let checks = [
        (0xb8, layout.current_frame),
        (0xc0, layout.thread_id),
        (0xd0, layout.datastack_chunk),
        (0xe8, layout.previous),
        (0xf0, layout.f_code),
        (0xf8, layout.instr),
        (0x108, 70),
        (0x118, layout.co_filename),
        (0x128, layout.co_qualname),
        (0x130, layout.co_linetable),
        (0x138, layout.co_firstlineno),
        (0x158, layout.co_code),
    ];
    &words[..8] == b"xdebugpy" && checks.iter().all(|&(i, want)| at(i) == want)
}

/// The compiler's `.cold` part of the eval loop, which has no symbol of its
/// own: the FDE that most of the loop's far conditional jumps (`0f 8x
/// rel32`) outside it land in. A frame there is an eval-loop frame too
/// (error paths allocate).
fn cold_part((lo, hi): (usize, usize)) -> (usize, usize) {
    let Some(object) = crate::sys::dl::find_object(lo) else {
        return (0, 0);
    };
    if hi > object.end || lo < object.start {
        return (0, 0);
    }
    // SAFETY: [lo, hi) is the eval loop's code, inside its mapped object.
    let code = unsafe { core::slice::from_raw_parts(lo as *const u8, hi - lo) };
    let mut votes: BTreeMap<(usize, usize), u32> = BTreeMap::new();
    for (i, w) in code.windows(6).enumerate() {
        if w[0] != 0x0f || w[1] & 0xf0 != 0x80 {
            continue;
        }
        let rel = i32::from_le_bytes([w[2], w[3], w[4], w[5]]) as isize;
        let target = (lo + i + 6).wrapping_add_signed(rel);
        if (lo..hi).contains(&target) || !(object.start..object.end).contains(&target) {
            continue;
        }
        if let Some(range) = crate::unwind::cfi::fde_range(
            &crate::unwind::cfi::Object {
                start: object.start,
                end: object.end,
                eh_frame_hdr: object.eh_frame_hdr,
            },
            target,
        ) {
            *votes.entry(range).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .filter(|&(_, n)| n >= 8)
        .map_or((0, 0), |(range, _)| range)
}

/// One code object's identity, as first seen by a sample.
#[repr(C)]
struct Slot {
    /// The code object; 0 free, 1 being written.
    code: AtomicUsize,
    qualname: AtomicUsize,
    filename: AtomicUsize,
    first_line: AtomicUsize,
}

/// The identities (`SLOTS` of them), mapped when an interpreter is found.
static TABLE: AtomicUsize = AtomicUsize::new(0);

fn slots() -> &'static [Slot] {
    let table = TABLE.load(Ordering::Acquire);
    if table == 0 {
        return &[];
    }
    // SAFETY: a zeroed mapping of SLOTS slots (atomics, valid when zero),
    // never unmapped.
    unsafe { core::slice::from_raw_parts(table as *const Slot, SLOTS) }
}

/// The index of identity `id` (code, qualname, filename, first line),
/// entered if new: (index, whether new); index 0 if the table is full.
#[inline(always)]
fn identity(id: [usize; 4]) -> (usize, bool) {
    let slots = slots();
    if slots.is_empty() {
        return (0, false);
    }
    let h =
        (id[0] >> 4 ^ id[1] ^ id[2].rotate_left(17) ^ id[3]).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for probe in 0..16 {
        let i = 1 + (h >> 20).wrapping_add(probe) % (SLOTS - 1);
        let s = &slots[i];
        let code = s.code.load(Ordering::Acquire);
        if code == id[0]
            && s.qualname.load(Ordering::Relaxed) == id[1]
            && s.filename.load(Ordering::Relaxed) == id[2]
            && s.first_line.load(Ordering::Relaxed) == id[3]
        {
            return (i, false);
        }
        if code == 0
            && s.code
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            s.qualname.store(id[1], Ordering::Relaxed);
            s.filename.store(id[2], Ordering::Relaxed);
            s.first_line.store(id[3], Ordering::Relaxed);
            s.code.store(id[0], Ordering::Release);
            return (i, true);
        }
    }
    (0, false)
}

/// Pages read once without fault (page number + 1), direct-mapped: their
/// words are then loaded directly.
static PAGES: [AtomicUsize; 1024] = [const { AtomicUsize::new(0) }; 1024];

fn page_slot(at: usize) -> (&'static AtomicUsize, usize) {
    let page = at >> 12;
    let i = page.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - 10);
    (&PAGES[i], page + 1)
}

/// Checked reads of this process's memory (see the module's comment).
struct Mem {
    /// The thread's frame stack chunks.
    known: [(usize, usize); 8],
    n: usize,
}

/// `len` bytes checked readable: memory read in place, or the buffer
/// `process_vm_readv` copied them into.
struct View<'a> {
    base: *const u8,
    len: usize,
    _buffer: core::marker::PhantomData<&'a [usize]>,
}

impl View<'_> {
    /// The bytes from `off` on, as a word shifted down to them (the field
    /// is its low bits).
    #[inline(always)]
    fn field(&self, off: usize) -> Option<usize> {
        let word = off & !7;
        if word + 8 > self.len {
            return None;
        }
        // SAFETY: inside the `len` bytes `Mem::view` found readable (in
        // place), or copied into the buffer this view borrows; aligned.
        let w = unsafe { core::ptr::read(self.base.add(word) as *const usize) };
        Some(w >> ((off & 7) * 8))
    }
}

impl Mem {
    fn know(&mut self, lo: usize, hi: usize) {
        if let Some(k) = self.known.get_mut(self.n) {
            *k = (lo, hi);
            self.n += 1;
        }
    }

    /// The aligned word at `at`, if it can be read.
    fn word(&self, at: usize) -> Option<usize> {
        let mut b = [0usize; 1];
        self.view(at, &mut b)?.field(0)
    }

    /// The bytes of `buffer`'s size from aligned `at`, if they can be read:
    /// in place when they lie in the frame chunks or on pages read before
    /// (one check for the whole), else copied into `buffer` by
    /// `process_vm_readv`, their pages then noted.
    #[inline(always)]
    fn view<'a>(&self, at: usize, buffer: &'a mut [usize]) -> Option<View<'a>> {
        let len = 8 * buffer.len();
        let end = at.checked_add(len)?;
        if !at.is_multiple_of(8) || at < 4096 || end > 1 << 47 {
            return None;
        }
        let known = self.known[..self.n]
            .iter()
            .any(|&(lo, hi)| lo <= at && end <= hi);
        let seen = |a: usize| {
            let (slot, page) = page_slot(a);
            slot.load(Ordering::Relaxed) == page
        };
        let base = if known || (seen(at) && seen(end - 1)) {
            at as *const u8
        } else {
            self.copy(at, buffer)?
        };
        Some(View {
            base,
            len,
            _buffer: core::marker::PhantomData,
        })
    }

    /// `view`'s slow path: the copy, and its pages noted.
    #[cold]
    #[inline(never)]
    fn copy(&self, at: usize, buffer: &mut [usize]) -> Option<*const u8> {
        let len = 8 * buffer.len();
        // SAFETY: `buffer` is plain words, viewed as their bytes.
        let bytes =
            unsafe { core::slice::from_raw_parts_mut(buffer.as_mut_ptr().cast::<u8>(), len) };
        if !raw::read_own_memory(at, bytes) {
            return None;
        }
        for a in [at, at + len - 1] {
            let (slot, page) = page_slot(a);
            slot.store(page, Ordering::Relaxed);
        }
        Some(buffer.as_ptr().cast())
    }
}

/// Words of a frame read: through the 3.11+ frames' `owner` byte.
const FRAME_WORDS: usize = 9;
/// Words of a code object read: through its name (every layout's
/// `co_qualname` is at 128).
const CODE_WORDS: usize = 17;

/// Adds the calling thread's Python frames to its native stack, if it runs
/// Python. On the sampled path. True if the collector should be woken to
/// name a code object it has not seen.
#[inline(always)]
fn append(stack: &mut Stack, max_len: usize) -> bool {
    ACTIVE.load(Ordering::Relaxed) && append_python(stack, max_len)
}

#[cold]
#[inline(never)]
fn append_python(stack: &mut Stack, max_len: usize) -> bool {
    let Some(rt) = RUNTIME.get() else {
        return false;
    };
    let mut py = [0usize; MAX_PY_FRAMES];
    // Where each activation's frames end in `py` (exclusive).
    let mut ends = [0u8; MAX_PY_FRAMES];
    let Some((n, groups, new)) = read_frames(rt, &mut py, &mut ends) else {
        return false;
    };
    if n == 0 {
        return false;
    }
    WALKED.fetch_add(1, Ordering::Relaxed);
    splice(rt, stack, &py[..n], &ends[..groups], max_len);
    new
}

/// Reads the thread's frames into `py` (innermost first); `ends` gets the
/// end of each eval-loop activation's frames. (frames, activations, whether
/// a code object was seen for the first time).
fn read_frames(
    rt: &Runtime,
    py: &mut [usize; MAX_PY_FRAMES],
    ends: &mut [u8; MAX_PY_FRAMES],
) -> Option<(usize, usize, bool)> {
    let l = rt.layout;
    let mut mem = Mem {
        known: [(0, 0); 8],
        n: 0,
    };
    // SAFETY: `_PyRuntime` is the interpreter's static data, which holds
    // the key (its symbol's size is checked in `detect`).
    // Py_tss_t: { int _is_initialized; pthread_key_t _key; }
    let tss = unsafe { core::ptr::read_volatile((rt.runtime + l.tss) as *const usize) };
    if tss as u32 == 0 {
        return None; // not initialised yet, or finalised
    }
    let tstate = crate::sys::threads::get_specific((tss >> 32) as u32) as usize;
    if tstate == 0 {
        return None;
    }
    // A thread state for another thread is not ours to read.
    if mem.word(tstate + l.thread_id)? != crate::sys::threads::current() as usize {
        return None;
    }
    let mut chunk = mem.word(tstate + l.datastack_chunk)?;
    for _ in 0..8 {
        if chunk == 0 {
            break;
        }
        let mut b = [0usize; 2];
        let c = mem.view(chunk, &mut b)?;
        let size = c.field(8)?;
        if size > 1 << 30 {
            break;
        }
        mem.know(chunk, chunk.checked_add(size)?);
        chunk = c.field(0)?;
    }
    let mut frame = match l.cframe {
        Some(cframe) => mem.word(mem.word(tstate + cframe)? + l.current_frame)?,
        None => mem.word(tstate + l.current_frame)?,
    };
    let (mut n, mut groups, mut new) = (0, 0, false);
    let shim = matches!(l.entry, Entry::ShimOwner(_));
    let entry_at = match l.entry {
        Entry::IsEntry(at) | Entry::ShimOwner(at) => at,
    };
    let (mut frame_buffer, mut code_buffer) = ([0usize; FRAME_WORDS], [0usize; CODE_WORDS]);
    while frame != 0 && n < py.len() {
        let f = mem.view(frame, &mut frame_buffer)?;
        let flags = f.field(entry_at)? as u8;
        let previous = f.field(l.previous)?;
        if shim && flags == FRAME_OWNED_BY_CSTACK {
            // The C stack's entry shim below an activation's frames.
            if n > 0 && groups < ends.len() {
                ends[groups] = n as u8;
                groups += 1;
            }
            frame = previous;
            continue;
        }
        let code = f.field(l.f_code)?;
        let (word, first) = match mem.view(code, &mut code_buffer) {
            Some(c) if c.field(8) == Some(rt.code_type) => {
                code_word(rt, &c, code, f.field(l.instr)?)?
            }
            _ => (TAG, false), // not a code object (3.13: other executables)
        };
        new |= first;
        py[n] = word;
        n += 1;
        if !shim && flags != 0 && groups < ends.len() {
            ends[groups] = n as u8;
            groups += 1;
        }
        frame = previous;
    }
    // Frames past the last entry: one activation more (or a chain cut at
    // the limit).
    if (groups == 0 || usize::from(ends[groups - 1]) < n) && groups < ends.len() {
        ends[groups] = n as u8;
        groups += 1;
    }
    Some((n, groups, new))
}

/// A frame's word, from its code object `c` (alive: the frame holds it)
/// and its instruction pointer.
#[inline(always)]
fn code_word(rt: &Runtime, c: &View, code: usize, instr: usize) -> Option<(usize, bool)> {
    let l = rt.layout;
    let first_line = c.field(l.co_firstlineno)? & 0xffff_ffff;
    let id = [
        code,
        c.field(l.co_qualname)?,
        c.field(l.co_filename)?,
        first_line,
    ];
    let (index, new) = identity(id);
    let start = code + l.co_code;
    let offset = instr
        .checked_sub(start)
        .filter(|&o| o < NO_OFFSET)
        .unwrap_or(NO_OFFSET);
    Some((TAG | offset << INDEX_BITS | index, new))
}

/// Whether return address `pc` is in the eval loop.
fn in_eval(rt: &Runtime, pc: usize) -> bool {
    let at = pc.wrapping_sub(1);
    (rt.eval.0 <= at && at < rt.eval.1) || (rt.eval_cold.0 <= at && at < rt.eval_cold.1)
}

/// Replaces each eval-loop frame of `stack` with its activation's Python
/// frames, innermost first; activations left over (a native stack cut
/// short) go at its end. With more eval-loop frames than activations on a
/// whole stack (a thread that runs a sub-interpreter above its frames), the
/// innermost extra ones stay native: the thread state read is the outer
/// one. Counts a stack whose frames did not pair.
fn splice(rt: &Runtime, stack: &mut Stack, py: &[usize], ends: &[u8], max_len: usize) {
    let mut out = Stack::new();
    if !splice_into(
        &mut out,
        stack.frames(),
        |pc| in_eval(rt, pc),
        py,
        ends,
        max_len,
    ) {
        UNPAIRED.fetch_add(1, Ordering::Relaxed);
    }
    stack.truncate(0);
    for &w in out.frames() {
        stack.push(w, max_len);
    }
}

/// `splice` into `out`, from the native `frames`; false if unpaired.
fn splice_into(
    out: &mut Stack,
    frames: &[usize],
    is_eval: impl Fn(usize) -> bool,
    py: &[usize],
    ends: &[u8],
    max_len: usize,
) -> bool {
    // Frame 0 is the entry point's marker, no return address.
    let evals = frames.iter().skip(1).filter(|&&pc| is_eval(pc)).count();
    let whole = frames.len() < max_len;
    let mut skip = if whole {
        evals.saturating_sub(ends.len())
    } else {
        0
    };
    let (mut group, mut from) = (0, 0);
    for (i, &pc) in frames.iter().enumerate() {
        if i == 0 || !is_eval(pc) {
            out.push(pc, max_len);
            continue;
        }
        let end = match ends.get(group) {
            Some(&end) if skip == 0 => usize::from(end).min(py.len()),
            _ => {
                skip = skip.saturating_sub(1);
                out.push(pc, max_len);
                continue;
            }
        };
        for &w in py.get(from..end).unwrap_or(&[]) {
            out.push(w, max_len);
        }
        (group, from) = (group + 1, end);
    }
    for &w in py.get(from..).unwrap_or(&[]) {
        out.push(w, max_len);
    }
    evals == ends.len() || out.len() >= max_len
}

/// The dump's facts: stacks with Python frames, of them those whose
/// eval-loop frames did not pair with the activations.
fn facts() -> Lines {
    vec![
        ("python_stacks", WALKED.load(Ordering::Relaxed).to_string()),
        (
            "python_stacks_unpaired",
            UNPAIRED.load(Ordering::Relaxed).to_string(),
        ),
    ]
}

/// (identity index, byte offset) of a Python frame word; None otherwise.
fn decode(word: usize) -> Option<(usize, usize)> {
    (word & (TAG | 1 << 62) == TAG)
        .then_some((word & INDEX_MASK, (word >> INDEX_BITS) & OFFSET_MASK))
}

/// What is known of an identity.
enum Code {
    Named {
        name: String,
        file: String,
        first_line: i64,
        linetable: Vec<u8>,
    },
    /// The code object was freed (or changed) before the collector read it.
    Freed,
}

/// Names by identity. A spin lock, taken around `fork` (a child must not
/// inherit it held by the collector), and only tried by a dump's writer (a
/// single-threaded program's process copy may have been made while the
/// program's own thread held it).
static NAMES: SpinLock<BTreeMap<usize, Code>> = SpinLock::new(BTreeMap::new());

extern "C" fn names_before_fork() {
    NAMES.acquire();
}

extern "C" fn names_after_fork() {
    NAMES.release();
}

/// A new stack was interned: its code objects are named now, while they
/// are most likely alive (the collector's thread; reads that cannot fault).
fn note_stack(frames: &[usize]) {
    if !ACTIVE.load(Ordering::Relaxed) || !frames.iter().any(|&w| decode(w).is_some()) {
        return;
    }
    let Some(rt) = RUNTIME.get() else {
        return;
    };
    NAMES.with(|n| {
        for (index, _) in frames.iter().filter_map(|&w| decode(w)) {
            if index != 0 && !n.contains_key(&index) {
                if let Some(code) = resolve(rt, index) {
                    n.insert(index, code);
                }
            }
        }
    });
}

/// The collector's round: looks for an interpreter until one is found.
fn poll() {
    if RUNTIME.get().is_none() && !OFF.load(Ordering::Relaxed) {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = crate::sys::clock::monotonic().as_millis() as u64;
        if now.saturating_sub(LAST.load(Ordering::Relaxed)) >= 100 {
            LAST.store(now, Ordering::Relaxed);
            detect();
        }
    }
}

/// Reads `len` bytes at `at` (fault-safe), or None.
fn read_bytes(at: usize, len: usize) -> Option<Vec<u8>> {
    let mut v = vec![0u8; len];
    raw::read_own_memory(at, &mut v).then_some(v)
}

fn word_at(bytes: &[u8], at: usize) -> usize {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b: [u8; 8]| u64::from_le_bytes(b) as usize)
}

/// Names identity `index`: its code object read and checked to still be it.
fn resolve(rt: &Runtime, index: usize) -> Option<Code> {
    let l = rt.layout;
    let s = slots().get(index)?;
    let code = s.code.load(Ordering::Acquire);
    if code <= 1 {
        return None;
    }
    let id = [
        s.qualname.load(Ordering::Relaxed),
        s.filename.load(Ordering::Relaxed),
        s.first_line.load(Ordering::Relaxed),
    ];
    let header = l.co_linetable + 8;
    let still = |h: &[u8]| {
        word_at(h, 8) == rt.code_type
            && word_at(h, l.co_qualname) == id[0]
            && word_at(h, l.co_filename) == id[1]
            && word_at(h, l.co_firstlineno & !7) >> ((l.co_firstlineno & 4) * 8) & 0xffff_ffff
                == id[2]
    };
    let Some(h) = read_bytes(code, header).filter(|h| still(h)) else {
        return Some(Code::Freed);
    };
    let linetable = word_at(&h, l.co_linetable);
    let (Some(name), Some(file)) = (read_str(l, id[0]), read_str(l, id[1])) else {
        return Some(Code::Freed);
    };
    let linetable = read_bytes(linetable, 32)
        .map(|b| word_at(&b, 16).min(1 << 20))
        .and_then(|len| read_bytes(linetable + 32, len))
        .unwrap_or_default();
    // Read again: a code object freed meanwhile is not named.
    if !read_bytes(code, header).is_some_and(|h| still(&h)) {
        return Some(Code::Freed);
    }
    Some(Code::Named {
        name: name.replace(char::is_whitespace, "_"),
        file: file.replace(char::is_control, "?"),
        first_line: id[2] as u32 as i32 as i64,
        linetable,
    })
}

/// A `str` object's text (compact strings only, at most 4,096 characters).
fn read_str(l: &Layout, at: usize) -> Option<String> {
    let h = read_bytes(at, l.compact_header)?;
    let len = word_at(&h, 16);
    let state = word_at(&h, 32) as u32;
    let (kind, compact, ascii) = ((state >> 2) & 7, state >> 5 & 1, state >> 6 & 1);
    if compact == 0 || len > 4096 || !matches!(kind, 1 | 2 | 4) {
        return None;
    }
    let data = at
        + if ascii == 1 {
            l.ascii_header
        } else {
            l.compact_header
        };
    let bytes = read_bytes(data, len * kind as usize)?;
    let chars = bytes.chunks(kind as usize).map(|c| {
        let mut v = [0u8; 4];
        v[..c.len()].copy_from_slice(c);
        char::from_u32(u32::from_le_bytes(v)).unwrap_or('?')
    });
    Some(chars.collect())
}

/// The line of the instruction at byte `offset` (3.11+ location table:
/// PEP 626/657's entries of code units), or None (no line, or unknown).
fn line_of(table: &[u8], first_line: i64, offset: usize) -> Option<i64> {
    if offset == NO_OFFSET {
        return None;
    }
    let target = offset / 2;
    let (mut i, mut line, mut addr) = (0usize, first_line, 0usize);
    let varint = |i: &mut usize| -> Option<u64> {
        let mut b = *table.get(*i)?;
        *i += 1;
        let (mut v, mut shift) = (u64::from(b & 63), 6);
        while b & 64 != 0 && shift < 64 {
            b = *table.get(*i)?;
            *i += 1;
            v |= u64::from(b & 63) << shift;
            shift += 6;
        }
        Some(v)
    };
    let svarint = |i: &mut usize| -> Option<i64> {
        let v = varint(i)?;
        Some(if v & 1 != 0 {
            -((v >> 1) as i64)
        } else {
            (v >> 1) as i64
        })
    };
    while let Some(&b) = table.get(i) {
        if b & 0x80 == 0 {
            return None;
        }
        i += 1;
        let code = (b >> 3) & 15;
        let length = usize::from(b & 7) + 1;
        let mut has_line = true;
        match code {
            15 => has_line = false,
            14 => {
                line += svarint(&mut i)?;
                for _ in 0..3 {
                    varint(&mut i)?;
                }
            }
            13 => line += svarint(&mut i)?,
            10..=12 => {
                line += i64::from(code) - 10;
                i += 2;
            }
            _ => i += 1,
        }
        if target < addr + length {
            return has_line.then_some(line);
        }
        addr += length;
    }
    None
}

/// `# leakprobe python_frame:` lines for the Python frames of `stacks`:
/// `<address> <kind> <qualname> <file>[:<line>]` (the name without spaces;
/// `?` when unknown), kind one of `python`, `freed` (its code object was
/// freed before it was named), `unknown` (the table of code objects was
/// full, or the object could not be read).
fn frame_lines(stacks: &[&[usize]]) -> Lines {
    let mut words: Vec<usize> = stacks
        .iter()
        .copied()
        .flatten()
        .copied()
        .filter(|&w| decode(w).is_some())
        .collect();
    if words.is_empty() {
        return Vec::new();
    }
    words.sort_unstable();
    words.dedup();
    let held = NAMES.try_acquire_for(1000, crate::sys::raw::yield_now);
    let none = BTreeMap::new();
    // SAFETY: held just now (or not used), one reference, released below.
    let n: &BTreeMap<usize, Code> = if held { unsafe { NAMES.held() } } else { &none };
    let lines = words
        .into_iter()
        .map(|w| {
            let (index, offset) = decode(w).unwrap_or_default();
            let line = match n.get(&index) {
                Some(Code::Named {
                    name,
                    file,
                    first_line,
                    linetable,
                }) => match line_of(linetable, *first_line, offset) {
                    Some(line) => format!("{w:#x} python {name} {file}:{line}"),
                    None => format!("{w:#x} python {name} {file}"),
                },
                Some(Code::Freed) => format!("{w:#x} freed ? ?"),
                None => format!("{w:#x} unknown ? ?"),
            };
            ("python_frame", line)
        })
        .collect();
    if held {
        NAMES.release();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_never_look_like_java_or_code() {
        let w = TAG | 1234 << INDEX_BITS | 77;
        assert_eq!(decode(w), Some((77, 1234)));
        assert_eq!(decode(1 << 62 | 5), None);
        assert_eq!(decode(0x7fff_0000_1234), None);
        assert!(w < 1 << 63);
    }

    fn spliced(frames: &[usize], py: &[usize], ends: &[u8], max: usize) -> (Vec<usize>, bool) {
        let mut out = Stack::new();
        let paired = splice_into(&mut out, frames, |pc| pc >= 900, py, ends, max);
        (out.frames().to_vec(), paired)
    }

    #[test]
    fn each_eval_loop_frame_becomes_its_activations_frames() {
        // Native: marker, a C frame, eval, a C frame, eval, main.
        let native = [1, 10, 900, 11, 901, 12];
        // Python: two frames run by the inner eval loop, one by the outer.
        let (out, paired) = spliced(&native, &[51, 52, 53], &[2, 3], 64);
        assert_eq!(out, [1, 10, 51, 52, 11, 53, 12]);
        assert!(paired);
        // The native walk cut short: the outer activation at the end.
        let (out, paired) = spliced(&native[..3], &[51, 52, 53], &[2, 3], 64);
        assert_eq!(out, [1, 10, 51, 52, 53]);
        assert!(!paired);
        // More eval loops than activations (a sub-interpreter inside): the
        // activations go to the outer ones.
        let (out, paired) = spliced(&native, &[53], &[1], 64);
        assert_eq!(out, [1, 10, 900, 11, 53, 12]);
        assert!(!paired);
        // At the frame limit nothing is known of the outer frames: inner first.
        let (out, _) = spliced(&native[..5], &[53], &[1], 5);
        assert_eq!(out, [1, 10, 53, 11, 901]);
    }

    #[test]
    fn lines_from_a_location_table() {
        // first line 10: 2 units on line 10 (short form), 3 units one line
        // on (one-line form, +1), 1 unit without a line, 2 units at +5
        // (no-column form, svarint 10).
        let table = [
            0x80 | 1,
            0,
            0x80 | (11 << 3) | 2,
            0,
            4,
            0x80 | (15 << 3),
            0x80 | (13 << 3) | 1,
            10,
        ];
        assert_eq!(line_of(&table, 10, 0), Some(10));
        assert_eq!(line_of(&table, 10, 2), Some(10));
        assert_eq!(line_of(&table, 10, 4), Some(11));
        assert_eq!(line_of(&table, 10, 8), Some(11));
        assert_eq!(line_of(&table, 10, 10), None);
        assert_eq!(line_of(&table, 10, 12), Some(16));
        assert_eq!(line_of(&table, 10, 100), None);
        assert_eq!(line_of(&table, 10, NO_OFFSET), None);
    }
}
