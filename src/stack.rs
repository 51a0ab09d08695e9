//! Call-stack capture for a sampled allocation.
//!
//! Frame 0 of every stack is an address inside the library's own exported
//! entry point (`malloc`, `calloc`, ...): jeprof and pprof both recognise
//! those names as allocator frames and drop them, and both then subtract 1
//! from the caller frames, which puts the allocating line on the call itself.
//! The library's internal frames are skipped by address range, so inlining
//! decisions cannot leak them into a stack.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Upper bound of `LEAKPROBE_MAX_FRAMES` (jemalloc's PROF_BT_MAX is the same).
pub const FRAMES_LIMIT: usize = 128;

static OWN_START: AtomicUsize = AtomicUsize::new(0);
static OWN_END: AtomicUsize = AtomicUsize::new(0);
static MAX_FRAMES: AtomicUsize = AtomicUsize::new(FRAMES_LIMIT);

pub fn set_max_frames(n: usize) {
    MAX_FRAMES.store(n.clamp(1, FRAMES_LIMIT), Ordering::Relaxed);
}

/// Frames of one stack: `frames[..len]`, frame 0 the entry-point marker.
pub struct Stack {
    pub len: usize,
    pub frames: [usize; FRAMES_LIMIT + 1],
}

impl Stack {
    pub const EMPTY: Stack = Stack {
        len: 0,
        frames: [0; FRAMES_LIMIT + 1],
    };

    pub fn frames(&self) -> &[usize] {
        &self.frames[..self.len]
    }
}

/// Captures the stack of the current allocation, whose exported entry point
/// (the function the program called) starts at `entry`. Inlined into the
/// cold sampling path: every frame of the library's own costs the unwinder
/// about 1,600 instructions.
#[inline(always)]
pub fn capture(entry: usize, out: &mut Stack) {
    let (start, end) = (
        OWN_START.load(Ordering::Relaxed),
        OWN_END.load(Ordering::Relaxed),
    );
    let max = MAX_FRAMES.load(Ordering::Relaxed) + 1;
    out.frames[0] = entry + 1;
    out.len = 1;
    let mut in_library = true;
    // SAFETY: the unwinder is reentrant; we hold no lock it could need, and
    // libgcc on glibc >= 2.35 finds FDEs with _dl_find_object, lock-free.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if in_library && (start..end).contains(&ip) {
                return true;
            }
            in_library = false;
            if ip == 0 {
                return false;
            }
            out.frames[out.len] = ip;
            out.len += 1;
            out.len < max
        });
    }
}

/// Records the address range of the library's own code, so its frames can be
/// skipped. Runs once at load, before sampling starts.
pub fn init_own_range() {
    // SAFETY: dladdr reads an address of ours; dl_iterate_phdr's callback
    // only reads the headers it is given.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(init_own_range as *const c_void, &mut info) == 0 {
            return;
        }
        let mut range = (info.dli_fbase as usize, 0usize, 0usize);
        libc::dl_iterate_phdr(
            Some(find_exec_range),
            (&mut range as *mut (usize, usize, usize)).cast(),
        );
        OWN_START.store(range.1, Ordering::Relaxed);
        OWN_END.store(range.2, Ordering::Relaxed);
    }
}

/// Finds the executable segment of the object loaded at `data.0`.
unsafe extern "C" fn find_exec_range(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> libc::c_int {
    let range = &mut *(data as *mut (usize, usize, usize));
    let info = &*info;
    let headers = core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
    let base = info.dlpi_addr as usize;
    let maps_base = headers.iter().any(|h| {
        h.p_type == libc::PT_LOAD
            && base + h.p_vaddr as usize <= range.0
            && range.0 < base + (h.p_vaddr + h.p_memsz) as usize
    }) || base == range.0;
    if !maps_base {
        return 0;
    }
    for h in headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0)
    {
        let lo = base + h.p_vaddr as usize;
        let hi = lo + h.p_memsz as usize;
        range.1 = if range.1 == 0 { lo } else { range.1.min(lo) };
        range.2 = range.2.max(hi);
    }
    1
}
