//! C++ `operator new` and `operator delete`, every form, forwarded to the
//! next definition (libstdc++'s, or an allocator's that replaces them, as
//! tcmalloc and jemalloc do).
//!
//! libstdc++'s operators allocate with `malloc` (or `aligned_alloc`) and
//! free with `free`, which the library interposes already: for them each
//! exported `operator new` is one load and a tail jump to libstdc++'s, and
//! each `operator delete` one to the library's `free`, so an object is
//! counted, and its `delete` checked, once (frame 0 is then
//! `malloc`, under libstdc++'s `operator new`; both tools drop both). When
//! the allocator provides the operators itself (in the object that provides
//! `malloc`), they never reach `malloc`: the operators here (`counted`) then
//! count the object and call the allocator's `nothrow` form, then its
//! throwing form on failure. Which applies is decided at the first call of
//! any operator (the C++ runtime may be loaded after the library), and the
//! jump slots then point at the right code. Either way a C++ exception only
//! ever leaves through a tail call: it never unwinds through a Rust frame.

use crate::hook::alloc::{allocate_sampled, release_sampled, Api};
use crate::{next, sample::live, sample::thread_state};
use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

type Ptr = *mut c_void;
/// `std::align_val_t` and `const std::nothrow_t&` as passed in registers.
type Align = usize;
type Nothrow = *const u8;

/// A stand-in for `std::nothrow`: the functions never read it.
static NOTHROW: u8 = 0;

macro_rules! cxx_slots {
    ($($slot:ident = $symbol:literal: fn($($ty:ty),*) -> $ret:ty;)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy)]
        enum Sym { $($slot),* }
        const NAMES: &[&CStr] = &[$($symbol),*];
        static SLOTS: [AtomicPtr<c_void>; NAMES.len()] = [const { AtomicPtr::new(core::ptr::null_mut()) }; NAMES.len()];
        $(
            #[allow(non_snake_case)]
            #[inline(always)]
            unsafe fn $slot() -> unsafe extern "C" fn($($ty),*) -> $ret {
                // SAFETY: the symbol of this name has this C++ signature.
                core::mem::transmute(resolved(Sym::$slot))
            }
        )*
    };
}

cxx_slots! {
    new = c"_Znwm": fn(usize) -> Ptr;
    new_array = c"_Znam": fn(usize) -> Ptr;
    new_nothrow = c"_ZnwmRKSt9nothrow_t": fn(usize, Nothrow) -> Ptr;
    new_array_nothrow = c"_ZnamRKSt9nothrow_t": fn(usize, Nothrow) -> Ptr;
    new_aligned = c"_ZnwmSt11align_val_t": fn(usize, Align) -> Ptr;
    new_array_aligned = c"_ZnamSt11align_val_t": fn(usize, Align) -> Ptr;
    new_aligned_nothrow = c"_ZnwmSt11align_val_tRKSt9nothrow_t": fn(usize, Align, Nothrow) -> Ptr;
    new_array_aligned_nothrow = c"_ZnamSt11align_val_tRKSt9nothrow_t": fn(usize, Align, Nothrow) -> Ptr;
    delete = c"_ZdlPv": fn(Ptr) -> ();
    delete_array = c"_ZdaPv": fn(Ptr) -> ();
    delete_sized = c"_ZdlPvm": fn(Ptr, usize) -> ();
    delete_array_sized = c"_ZdaPvm": fn(Ptr, usize) -> ();
    delete_nothrow = c"_ZdlPvRKSt9nothrow_t": fn(Ptr, Nothrow) -> ();
    delete_array_nothrow = c"_ZdaPvRKSt9nothrow_t": fn(Ptr, Nothrow) -> ();
    delete_aligned = c"_ZdlPvSt11align_val_t": fn(Ptr, Align) -> ();
    delete_array_aligned = c"_ZdaPvSt11align_val_t": fn(Ptr, Align) -> ();
    delete_sized_aligned = c"_ZdlPvmSt11align_val_t": fn(Ptr, usize, Align) -> ();
    delete_array_sized_aligned = c"_ZdaPvmSt11align_val_t": fn(Ptr, usize, Align) -> ();
    delete_aligned_nothrow = c"_ZdlPvSt11align_val_tRKSt9nothrow_t": fn(Ptr, Align, Nothrow) -> ();
    delete_array_aligned_nothrow = c"_ZdaPvSt11align_val_tRKSt9nothrow_t": fn(Ptr, Align, Nothrow) -> ();
}

/// Resolved on first use: the C++ runtime may be loaded after the library.
#[inline(always)]
fn resolved(sym: Sym) -> *mut c_void {
    crate::sys::dl::symbol(&SLOTS[sym as usize], NAMES[sym as usize])
}

const UNKNOWN: u8 = 0;
const VIA_MALLOC: u8 = 1;
const OWN: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether the next `operator new` allocates through `malloc` (libstdc++)
/// rather than being the allocator's own.
fn new_calls_malloc() -> bool {
    match MODE.load(Ordering::Relaxed) {
        VIA_MALLOC => true,
        OWN => false,
        _ => {
            let via = crate::sys::dl::object_of(resolved(Sym::new).cast())
                != crate::sys::dl::object_of(next::malloc_address());
            MODE.store(if via { VIA_MALLOC } else { OWN }, Ordering::Relaxed);
            via
        }
    }
}

/// One attempt that returns null instead of throwing.
unsafe fn try_new(size: usize, align: Option<Align>, array: bool) -> Ptr {
    let nothrow = &NOTHROW as Nothrow;
    match (new_calls_malloc(), align, array) {
        (true, None, _) => next::malloc(size),
        (true, Some(a), _) => {
            let mut p = core::ptr::null_mut();
            if next::posix_memalign(&mut p, a.max(core::mem::size_of::<Ptr>()), size) == 0 {
                p
            } else {
                core::ptr::null_mut()
            }
        }
        (false, None, false) => new_nothrow()(size, nothrow),
        (false, None, true) => new_array_nothrow()(size, nothrow),
        (false, Some(a), false) => new_aligned_nothrow()(size, a, nothrow),
        (false, Some(a), true) => new_array_aligned_nothrow()(size, a, nothrow),
    }
}

/// A counted operator new: bytes counted down, then a tail call to the real
/// operator (its new_handler loop and `bad_alloc` included). Only a sampled
/// allocation makes one non-throwing attempt first, to record it, and calls
/// the real operator, as a tail call, if that fails.
macro_rules! operator_new {
    ($name:ident($($arg:ident: $ty:ty),*) => $real:ident, align = $align:expr, array = $array:expr) => {
        #[inline(never)]
        pub unsafe extern "C" fn $name(size: usize $(, $arg: $ty)*) -> Ptr {
            if thread_state::crosses(size) {
                let api = if $array { Api::NewArray } else { Api::New };
                let p = allocate_sampled(size, api, move || try_new(size, $align, $array));
                if !p.is_null() {
                    return p;
                }
            }
            $real()(size $(, $arg)*)
        }
    };
}

/// The operators for an allocator that provides its own: they count.
#[allow(non_snake_case)]
mod counted {
    use super::*;

    operator_new!(_Znwm() => new, align = None, array = false);
    operator_new!(_Znam() => new_array, align = None, array = true);
    operator_new!(_ZnwmRKSt9nothrow_t(nt: Nothrow) => new_nothrow, align = None, array = false);
    operator_new!(_ZnamRKSt9nothrow_t(nt: Nothrow) => new_array_nothrow, align = None, array = true);
    operator_new!(_ZnwmSt11align_val_t(al: Align) => new_aligned, align = Some(al), array = false);
    operator_new!(_ZnamSt11align_val_t(al: Align) => new_array_aligned, align = Some(al), array = true);
    operator_new!(_ZnwmSt11align_val_tRKSt9nothrow_t(al: Align, nt: Nothrow) => new_aligned_nothrow, align = Some(al), array = false);
    operator_new!(_ZnamSt11align_val_tRKSt9nothrow_t(al: Align, nt: Nothrow) => new_array_aligned_nothrow, align = Some(al), array = true);

    /// An operator delete: out of the live set, then the next operator delete.
    macro_rules! operator_delete {
    ($name:ident($($arg:ident: $ty:ty),*) => $real:ident) => {
        #[inline(never)]
        pub unsafe extern "C" fn $name(p: Ptr $(, $arg: $ty)*) {
            if !live::maybe_sampled(p as usize) {
                return $real()(p $(, $arg)*);
            }
            release_sampled(p, move |p| $real()(p $(, $arg)*))
        }
    };
}

    operator_delete!(_ZdlPv() => delete);
    operator_delete!(_ZdaPv() => delete_array);
    operator_delete!(_ZdlPvm(size: usize) => delete_sized);
    operator_delete!(_ZdaPvm(size: usize) => delete_array_sized);
    operator_delete!(_ZdlPvRKSt9nothrow_t(nt: Nothrow) => delete_nothrow);
    operator_delete!(_ZdaPvRKSt9nothrow_t(nt: Nothrow) => delete_array_nothrow);
    operator_delete!(_ZdlPvSt11align_val_t(al: Align) => delete_aligned);
    operator_delete!(_ZdaPvSt11align_val_t(al: Align) => delete_array_aligned);
    operator_delete!(_ZdlPvmSt11align_val_t(size: usize, al: Align) => delete_sized_aligned);
    operator_delete!(_ZdaPvmSt11align_val_t(size: usize, al: Align) => delete_array_sized_aligned);
    operator_delete!(_ZdlPvSt11align_val_tRKSt9nothrow_t(al: Align, nt: Nothrow) => delete_aligned_nothrow);
    operator_delete!(_ZdaPvSt11align_val_tRKSt9nothrow_t(al: Align, nt: Nothrow) => delete_array_aligned_nothrow);
}

/// Exported operators: a load and a tail jump (see the module comment).
macro_rules! exported {
    ($($name:ident => $sym:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        static JUMPS: [AtomicPtr<c_void>; NAMES.len()] = {
            let mut jumps = [const { AtomicPtr::new(core::ptr::null_mut()) }; NAMES.len()];
            $(jumps[Sym::$sym as usize] = AtomicPtr::new(first::$name as *mut c_void);)*
            jumps
        };

        $(
            #[no_mangle]
            #[inline(never)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                // SAFETY: the slot holds a function of this type (`decide`).
                let f: unsafe extern "C" fn($($ty),*) -> $ret =
                    core::mem::transmute(JUMPS[Sym::$sym as usize].load(Ordering::Acquire));
                f($($arg),*)
            }
        )*

        /// Each operator's first call: decide, then go where it now jumps.
        #[allow(non_snake_case)]
        mod first {
            use super::*;
            $(
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    decide();
                    super::$name($($arg),*)
                }
            )*
        }

        /// Points every slot at libstdc++'s operator (it calls `malloc` and
        /// `free`) or at the counting one (the allocator's own operators).
        #[cold]
        fn decide() {
            let via = new_calls_malloc();
            if via {
                note_new_ranges();
            }
            $(
                let real = resolved(Sym::$sym);
                let target = if via && Sym::$sym as usize >= Sym::delete as usize {
                    // libstdc++'s every `operator delete` is `free`: going
                    // there directly checks the block once, not up to three
                    // times (delete[] -> delete -> free). The extra
                    // arguments (size, alignment) are ignored by `free`.
                    crate::hook::alloc::free as *mut c_void
                } else if via && !real.is_null() {
                    real
                } else {
                    counted::$name as *mut c_void
                };
                JUMPS[Sym::$sym as usize].store(target, Ordering::Release);
            )*
        }
    };
}

exported! {
    _Znwm => new(size: usize) -> Ptr;
    _Znam => new_array(size: usize) -> Ptr;
    _ZnwmRKSt9nothrow_t => new_nothrow(size: usize, nt: Nothrow) -> Ptr;
    _ZnamRKSt9nothrow_t => new_array_nothrow(size: usize, nt: Nothrow) -> Ptr;
    _ZnwmSt11align_val_t => new_aligned(size: usize, al: Align) -> Ptr;
    _ZnamSt11align_val_t => new_array_aligned(size: usize, al: Align) -> Ptr;
    _ZnwmSt11align_val_tRKSt9nothrow_t => new_aligned_nothrow(size: usize, al: Align, nt: Nothrow) -> Ptr;
    _ZnamSt11align_val_tRKSt9nothrow_t => new_array_aligned_nothrow(size: usize, al: Align, nt: Nothrow) -> Ptr;
    _ZdlPv => delete(p: Ptr) -> ();
    _ZdaPv => delete_array(p: Ptr) -> ();
    _ZdlPvm => delete_sized(p: Ptr, size: usize) -> ();
    _ZdaPvm => delete_array_sized(p: Ptr, size: usize) -> ();
    _ZdlPvRKSt9nothrow_t => delete_nothrow(p: Ptr, nt: Nothrow) -> ();
    _ZdaPvRKSt9nothrow_t => delete_array_nothrow(p: Ptr, nt: Nothrow) -> ();
    _ZdlPvSt11align_val_t => delete_aligned(p: Ptr, al: Align) -> ();
    _ZdaPvSt11align_val_t => delete_array_aligned(p: Ptr, al: Align) -> ();
    _ZdlPvmSt11align_val_t => delete_sized_aligned(p: Ptr, size: usize, al: Align) -> ();
    _ZdaPvmSt11align_val_t => delete_array_sized_aligned(p: Ptr, size: usize, al: Align) -> ();
    _ZdlPvSt11align_val_tRKSt9nothrow_t => delete_aligned_nothrow(p: Ptr, al: Align, nt: Nothrow) -> ();
    _ZdaPvSt11align_val_tRKSt9nothrow_t => delete_array_aligned_nothrow(p: Ptr, al: Align, nt: Nothrow) -> ();
}

/// In libstdc++'s case, the code of its `operator new`s (start, end), in
/// `Sym` order (the odd ones are the array forms). A sample taken in
/// `malloc` under them is recorded as `operator new` with the library's own
/// frame 0: jeprof does not recognise libstdc++'s versioned names
/// (`operator new@@GLIBCXX_3.4`) as allocator frames.
static NEW_RANGES: [(AtomicUsize, AtomicUsize); 8] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 8];

fn note_new_ranges() {
    for (i, range) in NEW_RANGES.iter().enumerate() {
        let Some(&name) = NAMES.get(i) else { break };
        let start = crate::sys::dl::symbol(&SLOTS[i], name) as usize;
        let Some((info, sym)) = crate::sys::dl::symbol_at(start as *const c_void) else {
            continue;
        };
        if start == 0 || info.dli_saddr as usize != start {
            continue;
        }
        let size = sym.st_size as usize;
        range.1.store(start.saturating_add(size), Ordering::Relaxed);
        range.0.store(start, Ordering::Release);
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

/// On a sampled path: frames of libstdc++'s operator news right above frame
/// 0 become one frame 0, the library's own `operator new` (or `new[]`).
pub fn fold_operator_frames(stack: &mut crate::unwind::stack::Stack) {
    if MODE.load(Ordering::Relaxed) != VIA_MALLOC {
        return;
    }
    let len = stack.len.min(stack.frames.len());
    let mut above = 1;
    let mut array = false;
    while let Some(a) = stack
        .frames
        .get(above)
        .filter(|_| above < len)
        .and_then(|&f| in_new(f))
    {
        array = a;
        above += 1;
    }
    if above == 1 {
        return;
    }
    let api = if array { Api::NewArray } else { Api::New };
    stack.frames[0] = api.address() + 1;
    stack.frames.copy_within(above..len, 1);
    stack.len = len - (above - 1);
}
