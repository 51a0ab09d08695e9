//! The exported allocator entry points. Each one's common path is the
//! per-thread byte countdown (and, when it frees, one filter byte) followed by
//! a tail call into the next allocator; everything else is in the outlined
//! cold functions below, shared by all entry points.
//!
//! The entry points are never inlined into each other: Go's pprof names a
//! frame only from a subprogram's own DWARF name, which an inlined function's
//! out-of-line copy lacks, and frame 0 must be named to be dropped.

use crate::live::{self, PENDING};
use crate::ring::{self, Sample};
use crate::stack::{self, Stack};
use crate::{bootstrap, clock, collector, doorbell, next, sampling, thread_state};
use core::ffi::{c_int, c_void, CStr};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

type Ptr = *mut c_void;

/// The function named by frame 0 of a sample. Only names that both jeprof
/// and pprof drop as allocator frames are used (pprof does not know
/// `aligned_alloc`, `reallocarray` or the jemalloc names); `New` and
/// `NewArray` are `operator new` and `operator new[]`.
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
}

impl Api {
    const ALL: [(Api, &'static CStr); 9] = [
        (Api::Malloc, c"malloc"),
        (Api::New, c"_Znwm"),
        (Api::NewArray, c"_Znam"),
        (Api::Calloc, c"calloc"),
        (Api::Realloc, c"realloc"),
        (Api::PosixMemalign, c"posix_memalign"),
        (Api::Memalign, c"memalign"),
        (Api::Valloc, c"valloc"),
        (Api::Pvalloc, c"pvalloc"),
    ];

    pub fn address(self) -> usize {
        match OWN_ADDRESS[self as usize].load(Ordering::Relaxed) {
            0 => self.linked_address(),
            resolved => resolved,
        }
    }

    /// The address the library's code sees, through its GOT: in a non-PIE
    /// program that takes the function's address this is the program's
    /// canonical PLT entry, not the library's function.
    fn linked_address(self) -> usize {
        match self {
            Api::Malloc => malloc as *const () as usize,
            Api::New => crate::cxx::_Znwm as *const () as usize,
            Api::NewArray => crate::cxx::_Znam as *const () as usize,
            Api::Calloc => calloc as *const () as usize,
            Api::Realloc => realloc as *const () as usize,
            Api::PosixMemalign => posix_memalign as *const () as usize,
            Api::Memalign => memalign as *const () as usize,
            Api::Valloc => valloc as *const () as usize,
            Api::Pvalloc => pvalloc as *const () as usize,
        }
    }
}

/// Each entry point's address in this library, by `Api`; 0 until resolved.
static OWN_ADDRESS: [AtomicUsize; Api::ALL.len()] = [const { AtomicUsize::new(0) }; Api::ALL.len()];

/// Looks up every frame-0 function in this library's own symbol table, once
/// at load: jeprof names frame 0 as it is (it subtracts 1 only from callers),
/// so it must lie in the library's function, never in a program's PLT stub.
/// `dlsym` on the library's own handle searches the library and its
/// dependencies, never the program, so it cannot return the program's
/// canonical PLT entry.
pub fn resolve_own_addresses() {
    // SAFETY: dladdr reads an address of ours; dlopen with RTLD_NOLOAD only
    // returns a handle to the already loaded library (closed again below),
    // and dlsym takes NUL-terminated names.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(resolve_own_addresses as *const c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return;
        }
        let handle = libc::dlopen(info.dli_fname, libc::RTLD_NOLOAD | libc::RTLD_LAZY);
        if handle.is_null() {
            return;
        }
        for (api, name) in Api::ALL {
            let f = libc::dlsym(handle, name.as_ptr()) as usize;
            if next::object_of(f as *mut ()) == info.dli_fbase as usize {
                OWN_ADDRESS[api as usize].store(f, Ordering::Relaxed);
            }
        }
        libc::dlclose(handle);
    }
}

/// An entry point that allocates `$bytes` and returns the block.
macro_rules! allocating {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, bytes = $bytes:expr, frame = $api:ident, block = |$r:ident| $block:expr) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            let bytes = $bytes;
            if !thread_state::crosses(bytes) {
                return next::$name($($arg),*);
            }
            let mut result = Default::default();
            allocate_sampled(bytes, Api::$api, || {
                let $r = next::$name($($arg),*);
                result = $r;
                $block
            });
            result
        }
    };
    ($name:ident($($arg:ident: $ty:ty),*), bytes = $bytes:expr, frame = $api:ident) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> Ptr {
            let bytes = $bytes;
            if !thread_state::crosses(bytes) {
                return next::$name($($arg),*);
            }
            allocate_sampled(bytes, Api::$api, move || next::$name($($arg),*))
        }
    };
}

/// An entry point that resizes block `$p` to `$size` bytes.
macro_rules! resizing {
    ($name:ident($p:ident: Ptr, $size:ident: usize $(, $arg:ident: $ty:ty)*)) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($p: Ptr, $size: usize $(, $arg: $ty)*) -> Ptr {
            let crossed = thread_state::crosses($size);
            if !crossed && !live::maybe_sampled($p as usize) {
                return next::$name($p, $size $(, $arg)*);
            }
            resize_sampled($p, $size, crossed, move |p| next::$name(p, $size $(, $arg)*))
        }
    };
}

/// An entry point that frees block `$p`.
macro_rules! releasing {
    ($name:ident($p:ident: Ptr $(, $arg:ident: $ty:ty)*)) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($p: Ptr $(, $arg: $ty)*) {
            if !live::maybe_sampled($p as usize) {
                return next::$name($p $(, $arg)*);
            }
            release_sampled($p, move |p| next::$name(p $(, $arg)*))
        }
    };
}

allocating!(malloc(size: usize), bytes = size, frame = Malloc);
allocating!(calloc(n: usize, size: usize), bytes = n.saturating_mul(size), frame = Calloc);
allocating!(aligned_alloc(align: usize, size: usize), bytes = size, frame = Memalign);
allocating!(memalign(align: usize, size: usize), bytes = size, frame = Memalign);
allocating!(valloc(size: usize), bytes = size, frame = Valloc);
allocating!(pvalloc(size: usize), bytes = size, frame = Pvalloc);
allocating!(mallocx(size: usize, flags: c_int), bytes = size, frame = Malloc);
allocating!(
    posix_memalign(out: *mut Ptr, align: usize, size: usize) -> c_int,
    bytes = size,
    frame = PosixMemalign,
    block = |rc| if rc == 0 { *out } else { core::ptr::null_mut() }
);
resizing!(realloc(p: Ptr, size: usize));
resizing!(rallocx(p: Ptr, size: usize, flags: c_int));
releasing!(free(p: Ptr));
releasing!(dallocx(p: Ptr, flags: c_int));
releasing!(sdallocx(p: Ptr, size: usize, flags: c_int));

/// glibc's own reallocarray would call glibc's realloc even when the program
/// uses jemalloc, so it is implemented here on the next allocator's realloc.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn reallocarray(p: Ptr, n: usize, size: usize) -> Ptr {
    match n.checked_mul(size) {
        Some(total) => realloc(p, total),
        None => {
            next::set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// In-place resize: a sampled allocation keeps its sample, with the new size.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn xallocx(p: Ptr, size: usize, extra: usize, flags: c_int) -> usize {
    let real = next::xallocx(p, size, extra, flags);
    if live::maybe_sampled(p as usize) && real >= size {
        live::resize(p as usize, real.min(size.saturating_add(extra)), real);
    }
    real
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn malloc_usable_size(p: Ptr) -> usize {
    if bootstrap::owns(p) {
        return bootstrap::size_of(p);
    }
    next::malloc_usable_size(p)
}

/// An allocation of `size` bytes reached the sample point: allocate, then
/// record it if the sampler says so.
#[cold]
#[inline(never)]
pub unsafe fn allocate_sampled(size: usize, api: Api, alloc: impl FnOnce() -> Ptr) -> Ptr {
    let p = alloc();
    if sampling::decide(size) && !p.is_null() {
        record(p, size, api);
    }
    p
}

/// A resize of a possibly sampled block, or one that reached the sample point:
/// for accounting, a free of the old block and a new allocation.
#[cold]
#[inline(never)]
unsafe fn resize_sampled(
    p: Ptr,
    size: usize,
    crossed: bool,
    resize: impl FnOnce(Ptr) -> Ptr,
) -> Ptr {
    let q = if bootstrap::owns(p) {
        move_out_of_bootstrap(p, size)
    } else {
        // Out of the live set before the block can return to the allocator.
        let old = if p.is_null() {
            None
        } else {
            live::remove(p as usize)
        };
        let q = resize(p);
        if q.is_null() && size != 0 {
            // The resize failed and the old block is still live.
            if let Some(e) = old {
                live::insert(e);
            }
        }
        q
    };
    if crossed && sampling::decide(size) && !q.is_null() {
        record(q, size, Api::Realloc);
    }
    q
}

unsafe fn move_out_of_bootstrap(p: Ptr, size: usize) -> Ptr {
    let q = next::malloc(size);
    if !q.is_null() {
        core::ptr::copy_nonoverlapping(
            p as *const u8,
            q as *mut u8,
            bootstrap::size_of(p).min(size),
        );
    }
    q
}

/// A free of a block the filter could not rule out: remove it from the live
/// set before it returns to the allocator, so a later allocation at the same
/// address cannot be mistaken for it.
#[cold]
#[inline(never)]
pub unsafe fn release_sampled(p: Ptr, release: impl FnOnce(Ptr)) {
    if bootstrap::owns(p) {
        return;
    }
    crate::cxx::note_release(p);
    if !p.is_null() {
        live::remove(p as usize);
    }
    release(p)
}

/// Inlined into the cold paths that call it: one unwinder step less.
#[inline(always)]
fn record(p: Ptr, size: usize, api: Api) {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    sampling::while_busy(|| {
        collector::ensure_running();
        let _flight = collector::InFlight::enter();
        let (ptr, seq) = (p as usize, SEQ.fetch_add(1, Ordering::Relaxed));
        let mut sample = Sample {
            seq,
            ptr,
            size,
            stack: Stack::EMPTY,
        };
        stack::capture(api.address(), &mut sample.stack);
        crate::cxx::fold_operator_frames(&mut sample.stack);
        crate::java::append(&mut sample.stack, stack::max_len());
        let born = clock::monotonic().as_secs() as u32;
        // SAFETY: `p` is a live block of the next allocator (or of the
        // bootstrap arena, which malloc_usable_size recognises).
        let usable = unsafe { malloc_usable_size(p) };
        live::insert(live::Entry {
            ptr,
            size,
            seq,
            stack: PENDING,
            born,
            // An allocator without malloc_usable_size answers 0: unknown.
            usable: if usable >= size { usable } else { 0 },
        });
        if !ring::push(sample, doorbell::ring) {
            live::remove(ptr);
        }
    })
}
