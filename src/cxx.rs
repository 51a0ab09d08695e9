//! C++ `operator new` and `operator delete`, every form, forwarded to the
//! next definition (libstdc++'s, or an allocator's that replaces them, as
//! tcmalloc and jemalloc do).
//!
//! libstdc++'s `new` calls `malloc`: counting in both would count each
//! object twice. So when the next `new` is not the allocator's own (it lives
//! in another object than `malloc`), the library allocates with the next
//! `malloc` itself and only calls the real `new` when that fails, for its
//! `new_handler` loop and `bad_alloc`. When the allocator provides `new`, the
//! library counts the object and calls the allocator's `nothrow` form, then
//! its throwing form on failure. Either way a C++ exception only ever leaves
//! through a tail call: it never unwinds through a Rust frame.

use crate::interpose::{allocate_sampled, release_sampled, Api};
use crate::{live, next, thread_state};
use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

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
    next::symbol(&SLOTS[sym as usize], NAMES[sym as usize])
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
            let via = next::object_of(resolved(Sym::new).cast())
                != next::object_of(next::malloc_address());
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

/// Counts `size` bytes and makes one non-throwing attempt, sampled when the
/// countdown says so.
#[inline(always)]
unsafe fn attempt(size: usize, align: Option<Align>, array: bool) -> Ptr {
    let api = if array { Api::NewArray } else { Api::New };
    if !thread_state::crosses(size) {
        return try_new(size, align, array);
    }
    allocate_sampled(size, api, move || try_new(size, align, array))
}

/// An operator new: one attempt, then the real operator for its new_handler
/// loop and its failure (`bad_alloc`, or null for nothrow), as a tail call.
macro_rules! operator_new {
    ($name:ident($($arg:ident: $ty:ty),*) => $real:ident, align = $align:expr, array = $array:expr) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name(size: usize $(, $arg: $ty)*) -> Ptr {
            let p = attempt(size, $align, $array);
            if !p.is_null() {
                return p;
            }
            $real()(size $(, $arg)*)
        }
    };
}

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
        #[no_mangle]
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
