//! The next allocator in the symbol lookup chain (`dlsym(RTLD_NEXT, ...)`),
//! so a program linked against jemalloc or tcmalloc keeps its allocator.
//!
//! Each slot starts at a trampoline (required functions) or an emulation built
//! on the required ones (optional functions), so the hot path is one load and
//! an indirect tail call, with no "resolved yet?" test.
//!
//! Below it: `bootstrap`, the arena that serves allocations made while the
//! table is being filled (`dlsym` allocates), and `global_alloc`, the
//! library's own memory, taken from the next allocator.

pub mod bootstrap;
pub mod global_alloc;

use crate::sys::dl::{info_of, lookup, missing, object_of, Scope};
use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

type Ptr = *mut c_void;

macro_rules! slots {
    ($($name:ident: fn($($arg:ident: $ty:ty),*) -> $ret:ty = $init:path;)*) => {
        #[allow(non_upper_case_globals)]
        mod slot {
            use super::*;
            $(pub static $name: AtomicPtr<()> = AtomicPtr::new($init as *mut ());)*
        }
        $(
            /// Calls the next allocator's function of this name.
            ///
            /// # Safety
            /// The caller upholds that function's C contract.
            #[inline(always)]
            #[allow(non_snake_case)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                type Next = unsafe extern "C" fn($($ty),*) -> $ret;
                // A plain read, which the compiler folds into the tail call
                // (`jmp qword ptr [rip + slot]`): an atomic load never is.
                // SAFETY: no write races with it: the slots are written only
                // by `resolve`, which runs at the loader's first allocation
                // or in the library's initialisation, before the program can
                // start a thread, and by `divert`, in a one-thread copy.
                let f = unsafe { *slot::$name.as_ptr() };
                // SAFETY: the slot only ever holds a function of this type.
                let f = unsafe { core::mem::transmute::<*mut (), Next>(f) };
                // SAFETY: the caller upholds the C contract (this function's).
                unsafe { f($($arg),*) }
            }
        )*
    };
}

slots! {
    malloc: fn(size: usize) -> Ptr = first::malloc;
    free: fn(p: Ptr) -> () = first::free;
    calloc: fn(n: usize, size: usize) -> Ptr = first::calloc;
    realloc: fn(p: Ptr, size: usize) -> Ptr = first::realloc;
    posix_memalign: fn(out: *mut Ptr, align: usize, size: usize) -> c_int = first::posix_memalign;
    aligned_alloc: fn(align: usize, size: usize) -> Ptr = emulated::aligned_alloc;
    memalign: fn(align: usize, size: usize) -> Ptr = emulated::memalign;
    valloc: fn(size: usize) -> Ptr = emulated::valloc;
    pvalloc: fn(size: usize) -> Ptr = emulated::pvalloc;
    malloc_usable_size: fn(p: Ptr) -> usize = emulated::malloc_usable_size;
    mallocx: fn(size: usize, flags: c_int) -> Ptr = emulated::mallocx;
    rallocx: fn(p: Ptr, size: usize, flags: c_int) -> Ptr = emulated::rallocx;
    xallocx: fn(p: Ptr, size: usize, extra: usize, flags: c_int) -> usize = emulated::xallocx;
    dallocx: fn(p: Ptr, flags: c_int) -> () = emulated::dallocx;
    sdallocx: fn(p: Ptr, size: usize, flags: c_int) -> () = emulated::sdallocx;
}

const IDLE: u8 = 0;
const RESOLVING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(IDLE);

/// Resolves every slot once. Returns false while a resolution is under way
/// (on this thread, from inside `dlsym`, or on another): the caller then
/// serves the request from the bootstrap arena instead of waiting, since the
/// resolving thread may hold the loader lock the caller's thread needs.
pub fn resolve() -> bool {
    match STATE.compare_exchange(IDLE, RESOLVING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {}
        Err(state) => return state == READY,
    }
    // Before the arena's blocks (`dlsym` allocates) mark the free filter.
    crate::sample::live::init();
    // For `object_of` below (the program's first `malloc` may come before
    // the library's initialisation).
    crate::sys::dl::init_find_object();
    let malloc = required(c"malloc");
    let home = object_of(malloc);
    slot::free.store(required(c"free"), Ordering::Relaxed);
    slot::calloc.store(required(c"calloc"), Ordering::Relaxed);
    slot::realloc.store(required(c"realloc"), Ordering::Relaxed);
    slot::posix_memalign.store(required(c"posix_memalign"), Ordering::Relaxed);
    // Optional functions are taken only from the object that provides malloc:
    // mixing, say, glibc's pvalloc with jemalloc's free would corrupt the heap.
    let optional: [(&CStr, &AtomicPtr<()>); 10] = [
        (c"aligned_alloc", &slot::aligned_alloc),
        (c"memalign", &slot::memalign),
        (c"valloc", &slot::valloc),
        (c"pvalloc", &slot::pvalloc),
        (c"malloc_usable_size", &slot::malloc_usable_size),
        (c"mallocx", &slot::mallocx),
        (c"rallocx", &slot::rallocx),
        (c"xallocx", &slot::xallocx),
        (c"dallocx", &slot::dallocx),
        (c"sdallocx", &slot::sdallocx),
    ];
    for (name, slot) in optional {
        if let Some(f) = defined_in(home, name) {
            slot.store(f, Ordering::Relaxed);
        }
    }
    slot::malloc.store(malloc, Ordering::Relaxed);
    STATE.store(READY, Ordering::Release);
    true
}

fn required(name: &CStr) -> *mut () {
    let f = lookup(Scope::Next, name);
    if f.is_null() {
        missing(name);
    }
    f.cast()
}

/// The next definition of `name` if the object loaded at `home` has it.
fn defined_in(home: usize, name: &CStr) -> Option<*mut ()> {
    let f: *mut () = lookup(Scope::Next, name).cast();
    (!f.is_null() && object_of(f) == home).then_some(f)
}

/// The next definition of `name` if the object that provides `malloc` has
/// it: a function that works on the next allocator's heap.
pub fn allocator_function(name: &CStr) -> Option<*mut ()> {
    defined_in(object_of(malloc_address()), name)
}

/// The next allocator's `malloc` (after resolution).
pub fn malloc_address() -> *mut () {
    let diverted = DIVERTED_FROM.load(Ordering::Relaxed);
    if !diverted.is_null() {
        return diverted;
    }
    slot::malloc.load(Ordering::Relaxed)
}

/// The next allocator's `malloc`, once `divert`ed (null before).
static DIVERTED_FROM: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// A heap of the library's own, for `divert`.
pub struct Heap {
    pub malloc: unsafe extern "C" fn(usize) -> Ptr,
    pub free: unsafe extern "C" fn(Ptr),
    pub calloc: unsafe extern "C" fn(usize, usize) -> Ptr,
    pub realloc: unsafe extern "C" fn(Ptr, usize) -> Ptr,
    pub posix_memalign: unsafe extern "C" fn(*mut Ptr, usize, usize) -> c_int,
    pub memalign: unsafe extern "C" fn(usize, usize) -> Ptr,
}

/// In a snapshot child (`single`), whose copy of the next allocator's heap
/// may be in the middle of an update: every allocation from now on, the
/// library's and any glibc makes for itself, comes from `heap` instead.
/// Returns the next allocator's `malloc`, `posix_memalign` and
/// `malloc_usable_size`.
pub fn divert(heap: &Heap) -> Diverted {
    DIVERTED_FROM.store(slot::malloc.load(Ordering::Relaxed), Ordering::Relaxed);
    // SAFETY: each slot only ever holds a function of its type.
    let before = unsafe {
        Diverted {
            malloc: core::mem::transmute::<*mut (), unsafe extern "C" fn(usize) -> Ptr>(
                slot::malloc.load(Ordering::Relaxed),
            ),
            posix_memalign: core::mem::transmute::<
                *mut (),
                unsafe extern "C" fn(*mut Ptr, usize, usize) -> c_int,
            >(slot::posix_memalign.load(Ordering::Relaxed)),
            usable: core::mem::transmute::<*mut (), unsafe extern "C" fn(Ptr) -> usize>(
                slot::malloc_usable_size.load(Ordering::Relaxed),
            ),
        }
    };
    let pairs: [(&AtomicPtr<()>, *mut ()); 7] = [
        (&slot::malloc, heap.malloc as *mut ()),
        (&slot::free, heap.free as *mut ()),
        (&slot::calloc, heap.calloc as *mut ()),
        (&slot::realloc, heap.realloc as *mut ()),
        (&slot::posix_memalign, heap.posix_memalign as *mut ()),
        (&slot::memalign, heap.memalign as *mut ()),
        (&slot::aligned_alloc, heap.memalign as *mut ()),
    ];
    for (slot, f) in pairs {
        slot.store(f, Ordering::Relaxed);
    }
    before
}

/// The next allocator's functions a diverted heap still uses.
#[derive(Clone, Copy)]
pub struct Diverted {
    pub malloc: unsafe extern "C" fn(usize) -> Ptr,
    pub posix_memalign: unsafe extern "C" fn(*mut Ptr, usize, usize) -> c_int,
    pub usable: unsafe extern "C" fn(Ptr) -> usize,
}

/// File name of the object providing `malloc` (e.g. libc.so.6, libjemalloc.so.2).
pub fn allocator_name() -> &'static str {
    info_of(malloc_address())
        .filter(|i| !i.dli_fname.is_null())
        .and_then(|i| {
            // SAFETY: not null, so a NUL-terminated string owned by the
            // loader, which keeps the allocator's object loaded.
            unsafe { CStr::from_ptr(i.dli_fname as *const c_char) }
                .to_str()
                .ok()
        })
        .unwrap_or("unknown")
}

/// Trampolines: resolve, then call the real function, or serve from the
/// bootstrap arena while resolution is under way.
mod first {
    use super::*;

    pub unsafe extern "C" fn malloc(size: usize) -> Ptr {
        if resolve() {
            // SAFETY: malloc takes any size.
            unsafe { super::malloc(size) }
        } else {
            bootstrap::alloc(size, 16)
        }
    }

    pub unsafe extern "C" fn free(p: Ptr) {
        if !bootstrap::owns(p) && resolve() {
            // SAFETY: not the arena's, so the caller's block of the next
            // allocator (free's contract).
            unsafe { super::free(p) }
        }
    }

    pub unsafe extern "C" fn calloc(n: usize, size: usize) -> Ptr {
        if resolve() {
            // SAFETY: calloc takes any sizes.
            return unsafe { super::calloc(n, size) };
        }
        match n.checked_mul(size) {
            Some(total) => bootstrap::alloc(total, 16),
            None => {
                crate::sys::errno::set(libc::ENOMEM);
                core::ptr::null_mut()
            }
        }
    }

    pub unsafe extern "C" fn realloc(p: Ptr, size: usize) -> Ptr {
        if resolve() {
            // SAFETY: the caller's arguments to realloc, unchanged.
            return unsafe { super::realloc(p, size) };
        }
        let q = bootstrap::alloc(size, 16);
        if !p.is_null() && !q.is_null() {
            let old = if bootstrap::owns(p) {
                // SAFETY: a block inside the arena was handed out by it.
                unsafe { bootstrap::size_of(p) }
            } else {
                0
            };
            // SAFETY: `p` holds at least `old` bytes, `q` (fresh, distinct)
            // at least `size`.
            unsafe { core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old.min(size)) };
        }
        q
    }

    pub unsafe extern "C" fn posix_memalign(out: *mut Ptr, align: usize, size: usize) -> c_int {
        if resolve() {
            // SAFETY: the caller's arguments to posix_memalign, unchanged.
            return unsafe { super::posix_memalign(out, align, size) };
        }
        if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<Ptr>()) {
            return libc::EINVAL;
        }
        let p = bootstrap::alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: `out` is the caller's place for the block (posix_memalign's
        // contract).
        unsafe { *out = p };
        0
    }
}

/// Stand-ins for functions the next allocator does not provide, built on the
/// required ones so memory always comes from, and returns to, one allocator.
mod emulated {
    use super::*;

    fn page() -> usize {
        crate::sys::process::page_size()
    }

    /// A block through posix_memalign, its error in `errno`.
    fn aligned(align: usize, size: usize) -> Ptr {
        let mut p = core::ptr::null_mut();
        let align = align.max(core::mem::size_of::<Ptr>());
        // SAFETY: `p` is out storage; posix_memalign checks the alignment.
        match unsafe { super::posix_memalign(&mut p, align, size) } {
            0 => p,
            e => {
                crate::sys::errno::set(e);
                core::ptr::null_mut()
            }
        }
    }

    pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> Ptr {
        if !align.is_power_of_two() {
            crate::sys::errno::set(libc::EINVAL);
            return core::ptr::null_mut();
        }
        aligned(align, size)
    }

    pub unsafe extern "C" fn memalign(align: usize, size: usize) -> Ptr {
        // The program's alignment: none above 2^63 (EINVAL, as glibc's).
        match align.max(1).checked_next_power_of_two() {
            Some(align) => aligned(align, size),
            None => {
                crate::sys::errno::set(libc::EINVAL);
                core::ptr::null_mut()
            }
        }
    }

    pub unsafe extern "C" fn valloc(size: usize) -> Ptr {
        aligned(page(), size)
    }

    pub unsafe extern "C" fn pvalloc(size: usize) -> Ptr {
        match size.max(1).checked_next_multiple_of(page()) {
            Some(rounded) => aligned(page(), rounded),
            None => {
                crate::sys::errno::set(libc::ENOMEM);
                core::ptr::null_mut()
            }
        }
    }

    pub unsafe extern "C" fn malloc_usable_size(_p: Ptr) -> usize {
        0
    }

    // jemalloc flag bits: MALLOCX_LG_ALIGN in the low 6 bits, MALLOCX_ZERO.
    fn align_of(flags: c_int) -> usize {
        match flags & 0x3f {
            0 => 16,
            lg => 1usize << lg,
        }
    }
    const ZERO: c_int = 0x40;

    pub unsafe extern "C" fn mallocx(size: usize, flags: c_int) -> Ptr {
        let p = aligned(align_of(flags).max(16), size);
        if !p.is_null() && flags & ZERO != 0 {
            // SAFETY: a fresh block of at least `size` bytes.
            unsafe { core::ptr::write_bytes(p as *mut u8, 0, size) };
        }
        p
    }

    pub unsafe extern "C" fn rallocx(p: Ptr, size: usize, flags: c_int) -> Ptr {
        if align_of(flags) <= 16 && flags & ZERO == 0 {
            // SAFETY: the caller's block (rallocx's contract), and a size.
            return unsafe { super::realloc(p, size) };
        }
        // SAFETY: mallocx takes any size and flags.
        let q = unsafe { mallocx(size, flags) };
        if !q.is_null() {
            // SAFETY: `p` is the caller's live block, of the next allocator,
            // at least `old` bytes long; `q` is fresh, distinct, at least
            // `size`; `p` is freed once, after the copy.
            unsafe {
                let old = super::malloc_usable_size(p);
                core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old.min(size));
                super::free(p);
            }
        }
        q
    }

    /// Never resizes in place: reports the current size, as jemalloc does
    /// when it cannot grow.
    pub unsafe extern "C" fn xallocx(p: Ptr, _size: usize, _extra: usize, _flags: c_int) -> usize {
        // SAFETY: the caller's live block (xallocx's contract).
        unsafe { super::malloc_usable_size(p) }
    }

    pub unsafe extern "C" fn dallocx(p: Ptr, _flags: c_int) {
        // SAFETY: the caller's block to free (dallocx's contract).
        unsafe { super::free(p) }
    }

    pub unsafe extern "C" fn sdallocx(p: Ptr, _size: usize, _flags: c_int) {
        // SAFETY: the caller's block to free (sdallocx's contract).
        unsafe { super::free(p) }
    }
}
