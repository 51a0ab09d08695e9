//! C++ `operator new` and `operator delete`, every form, forwarded to the
//! next definition (libstdc++'s, or an allocator's that replaces them, as
//! tcmalloc and jemalloc do).
//!
//! Each exported operator is a jump through its slot (one instruction; two
//! for `_Znwm` and `_Znam`, which are frames 0 and need DWARF). libstdc++'s
//! operators allocate with `malloc` (or `aligned_alloc`) and free with
//! `free`, which the library interposes already: for them each `operator
//! new` jumps to libstdc++'s, and each `operator delete` to the library's
//! `free`, so an object is counted, and its `delete` checked, once (frame 0
//! is then `malloc`, under libstdc++'s `operator new`; both tools drop
//! both). When the allocator provides the operators itself (in the object
//! that provides `malloc`), some of them still reach the library's entry
//! points (jemalloc's aligned news call `aligned_alloc`, its unsized deletes
//! `free` and its sized aligned ones `sdallocx`, through its PLT) and others
//! do not. Each is called once to find out (`probe`): a `new` that reaches
//! the library is jumped to plainly (its own failure path, `new_handler`
//! and `bad_alloc`, stays whole); a `delete` seen ending in the library's
//! `free`, or in `sdallocx` with the block's size and alignment, is replaced
//! by that call, as libstdc++'s are (jemalloc's do nothing else but test for
//! null, which the replacement does too), and any other that reaches the
//! library is jumped to plainly; one that does not is
//! wrapped (`counted`): the object is counted, or the block checked, and the
//! allocator's operator tail-called. Either way an object is counted, and its
//! `delete` checked, exactly once. Which applies is decided at the first
//! call of any operator (the C++ runtime may be loaded after the library),
//! and the jump slots then point at the right code. A C++ exception only
//! ever leaves through a tail call: it never unwinds through a Rust frame.

use crate::hook::sampled::{self, allocate_sampled, release_sampled, Api, Freed};
use crate::sys::dl::NextSymbol;
use crate::{next, sample::live, sample::thread_state};
use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

type Ptr = *mut c_void;
/// `std::align_val_t` and `const std::nothrow_t&` as passed in registers.
type Align = usize;
type Nothrow = *const u8;

/// A stand-in for `std::nothrow`: the functions never read it.
static NOTHROW: u8 = 0;

/// The operators in `Sym` order (news, then deletes in the news' order),
/// and their next definitions' slots (`next::slot`).
macro_rules! cxx_slots {
    ($($sym:ident = $symbol:ident,)*) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy)]
        enum Sym { $($sym),* }
        static NEXT: [&NextSymbol; [$(Sym::$sym),*].len()] = [$(next::slot::$symbol.symbol()),*];
    };
}

cxx_slots! {
    new = _Znwm,
    new_array = _Znam,
    new_nothrow = _ZnwmRKSt9nothrow_t,
    new_array_nothrow = _ZnamRKSt9nothrow_t,
    new_aligned = _ZnwmSt11align_val_t,
    new_array_aligned = _ZnamSt11align_val_t,
    new_aligned_nothrow = _ZnwmSt11align_val_tRKSt9nothrow_t,
    new_array_aligned_nothrow = _ZnamSt11align_val_tRKSt9nothrow_t,
    delete = _ZdlPv,
    delete_array = _ZdaPv,
    delete_sized = _ZdlPvm,
    delete_array_sized = _ZdaPvm,
    delete_nothrow = _ZdlPvRKSt9nothrow_t,
    delete_array_nothrow = _ZdaPvRKSt9nothrow_t,
    delete_aligned = _ZdlPvSt11align_val_t,
    delete_array_aligned = _ZdaPvSt11align_val_t,
    delete_sized_aligned = _ZdlPvmSt11align_val_t,
    delete_array_sized_aligned = _ZdaPvmSt11align_val_t,
    delete_aligned_nothrow = _ZdlPvSt11align_val_tRKSt9nothrow_t,
    delete_array_aligned_nothrow = _ZdaPvSt11align_val_tRKSt9nothrow_t,
}

/// How many operators there are.
const FORMS: usize = NEXT.len();

/// Resolved on first use: the C++ runtime may be loaded after the library.
#[inline(always)]
fn resolved(sym: Sym) -> *mut c_void {
    NEXT[sym as usize].address()
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

/// A counted operator new: bytes counted down, then a tail call to the real
/// operator (its new_handler loop and `bad_alloc` included). Only a sampled
/// allocation makes one non-throwing attempt first, to record it, and calls
/// the real operator, as a tail call, if that fails.
macro_rules! operator_new {
    ($name:ident($($arg:ident: $ty:ty),*), align = $align:expr, array = $array:expr) => {
        ///
        /// # Safety
        /// As the C++ operator; reached only once `decide` resolved every
        /// slot (through a jump it set, or from its `probe`).
        #[inline(never)]
        pub unsafe extern "C" fn $name(size: usize $(, $arg: $ty)*) -> Ptr {
            if !thread_state::crosses(size) {
                // SAFETY: the slot is resolved; the program's arguments to
                // this same operator, unchanged.
                return unsafe { next::slot::$name.loaded()(size $(, $arg)*) };
            }
            // SAFETY: the slots are resolved (this function's contract); the
            // closure calls the program's operator with its arguments.
            unsafe {
                new_sampled(size, $align, $array, move || next::slot::$name.loaded()(size $(, $arg)*))
            }
        }
    };
}

/// A counted `operator new` that reached the sample point: one non-throwing
/// attempt, recorded; if it fails, `real` (the program's operator), as a
/// tail call. Apart, so the unsampled path saves no register. A throwing
/// operator's closure (its size and alignment) travels in registers, so
/// the operator reaches here, and `real` is reached, by tail calls: an
/// exception never unwinds through a Rust frame.
///
/// # Safety
/// Every slot is resolved; an alignment is a power of two.
#[cold]
#[inline(never)]
unsafe fn new_sampled(
    size: usize,
    align: Option<Align>,
    array: bool,
    real: impl FnOnce() -> Ptr,
) -> Ptr {
    let api = if array { Api::NewArray } else { Api::New };
    // SAFETY: the slots are resolved (this function's contract).
    let alloc = move || unsafe { try_own_new(size, align, array) };
    // SAFETY: `alloc` returns the allocator's block of `size` bytes, or null.
    let p = unsafe { allocate_sampled(alloc, size, api) };
    if !p.is_null() {
        return p;
    }
    real()
}

/// The operators for an allocator that provides its own: they count.
#[allow(non_snake_case)]
mod counted {
    use super::*;

    operator_new!(_Znwm(), align = None, array = false);
    operator_new!(_Znam(), align = None, array = true);
    operator_new!(_ZnwmRKSt9nothrow_t(nt: Nothrow), align = None, array = false);
    operator_new!(_ZnamRKSt9nothrow_t(nt: Nothrow), align = None, array = true);
    operator_new!(_ZnwmSt11align_val_t(al: Align), align = Some(al), array = false);
    operator_new!(_ZnamSt11align_val_t(al: Align), align = Some(al), array = true);
    operator_new!(_ZnwmSt11align_val_tRKSt9nothrow_t(al: Align, nt: Nothrow), align = Some(al), array = false);
    operator_new!(_ZnamSt11align_val_tRKSt9nothrow_t(al: Align, nt: Nothrow), align = Some(al), array = true);

    /// An operator delete: out of the live set, then the next operator delete.
    macro_rules! operator_delete {
    ($name:ident($($arg:ident: $ty:ty),*)) => {
        ///
        /// # Safety
        /// As the C++ operator; reached only once `decide` resolved every
        /// slot.
        #[inline(never)]
        pub unsafe extern "C" fn $name(p: Ptr $(, $arg: $ty)*) {
            if !live::maybe_sampled(p as usize) {
                // SAFETY: the slot is resolved; the program's arguments to
                // this same operator, unchanged.
                return unsafe { next::slot::$name.loaded()(p $(, $arg)*) };
            }
            // SAFETY: as above: `release_sampled` passes the program's block
            // on (never one of the bootstrap arena, which C++ never saw).
            release_sampled(p, move |p| unsafe { next::slot::$name.loaded()(p $(, $arg)*) }, Freed::Other)
        }
    };
}

    operator_delete!(_ZdlPv());
    operator_delete!(_ZdaPv());
    operator_delete!(_ZdlPvm(size: usize));
    operator_delete!(_ZdaPvm(size: usize));
    operator_delete!(_ZdlPvRKSt9nothrow_t(nt: Nothrow));
    operator_delete!(_ZdaPvRKSt9nothrow_t(nt: Nothrow));
    operator_delete!(_ZdlPvSt11align_val_t(al: Align));
    operator_delete!(_ZdaPvSt11align_val_t(al: Align));
    operator_delete!(_ZdlPvmSt11align_val_t(size: usize, al: Align));
    operator_delete!(_ZdaPvmSt11align_val_t(size: usize, al: Align));
    operator_delete!(_ZdlPvSt11align_val_tRKSt9nothrow_t(al: Align, nt: Nothrow));
    operator_delete!(_ZdaPvSt11align_val_tRKSt9nothrow_t(al: Align, nt: Nothrow));
}

thread_local! {
    /// Set while this thread probes the allocator's operators: the library's
    /// operators they call count and check (`counted`), not decide again.
    static PROBING_HERE: Cell<bool> = const { Cell::new(false) };
    /// The library's operators (bits in `Sym` order) that an operator under
    /// probe called.
    static NESTED: Cell<u32> = const { Cell::new(0) };
}

/// A countdown no probe's allocation crosses: a probe only sees it move.
const FAR: usize = usize::MAX / 2;
/// The probe's block: a size the allocator's sized deletes are told back.
const PROBE_SIZE: usize = 64;
const PROBE_ALIGN: Align = 64;

/// Where each operator (in `Sym` order) goes once decided.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The library's `counted` operator, then the allocator's.
    Counted,
    /// The allocator's own operator: it reaches one of the library's entry
    /// points.
    Own,
    /// The library's `free`: the allocator's operator delete ends there.
    Free,
    /// `sized_aligned_delete`: the allocator's sized aligned delete ends in
    /// the library's `sdallocx` with the block's size and alignment.
    Sdallocx,
}

/// Where each of the allocator's own operators goes, in `Sym` order: each
/// `delete` is called on a block of the matching `new` while the library's
/// frees watch for it, and each `nothrow` new's allocation is watched on
/// this thread's countdown. Its throwing twin is not called (it could throw
/// through this frame): it is taken to do the same, unless the nothrow form
/// called it through the library (as libstdc++'s does), when the countdown
/// moved once more if it reaches the library. A failed allocation leaves its
/// delete counted.
///
/// # Safety
/// Every slot is resolved.
unsafe fn probe() -> [Route; FORMS] {
    let mut reaches = [true; FORMS];
    let mut routes = [Route::Counted; FORMS];
    PROBING_HERE.set(true);
    let saved = thread_state::until_sample();
    for (d, route) in routes.iter_mut().enumerate().skip(Sym::delete as usize) {
        let (array, aligned) = (d % 2 == 1, d >= Sym::delete_aligned as usize);
        thread_state::set_until_sample(FAR);
        NESTED.set(0);
        let align = aligned.then_some(PROBE_ALIGN);
        // SAFETY: the slots are resolved (this function's contract).
        let p = unsafe { try_own_new(PROBE_SIZE, align, array) };
        // The nothrow form, and its throwing twin two slots before it.
        let new = Sym::new_nothrow as usize + usize::from(array) + 4 * usize::from(aligned);
        let counted = FAR - thread_state::until_sample();
        // Each shape is probed three times: the allocator's first call may
        // allocate for itself.
        reaches[new] &= counted > 0;
        reaches[new - 2] &= if NESTED.get() & 1 << (new - 2) != 0 {
            counted > PROBE_SIZE
        } else {
            counted > 0
        };
        if p.is_null() {
            continue;
        }
        let _checked = live::checked_while(p as usize);
        // SAFETY: `p` is the live block of the `new` that matches delete `d`
        // (the slot order pairs them), freed once.
        let freed = sampled::released_during(p as usize, || unsafe { own_delete(d, p) });
        let sized_aligned = d == Sym::delete_sized_aligned as usize
            || d == Sym::delete_array_sized_aligned as usize;
        *route = match freed {
            None => Route::Counted,
            Some(Freed::Free) => Route::Free,
            Some(Freed::Sized(size, flags))
                if sized_aligned && size == PROBE_SIZE && flags == lg(PROBE_ALIGN) =>
            {
                Route::Sdallocx
            }
            Some(_) => Route::Own,
        };
    }
    thread_state::set_until_sample(saved);
    PROBING_HERE.set(false);
    for new in 0..Sym::delete as usize {
        routes[new] = if reaches[new] {
            Route::Own
        } else {
            Route::Counted
        };
    }
    routes
}

/// jemalloc's encoding of an alignment in `sdallocx`'s flags
/// (`MALLOCX_ALIGN`: `ffs(alignment) - 1`).
fn lg(align: Align) -> c_int {
    align.trailing_zeros() as c_int
}

/// A sized aligned `operator delete` whose allocator's own operator `probe`
/// saw end in `sdallocx(p, size, lg alignment)` (jemalloc's): that call,
/// without the operator (and its call to `ffs`). The library's `sdallocx`
/// checks the block, once.
///
/// # Safety
/// As the C++ operator.
unsafe extern "C" fn sized_aligned_delete(p: Ptr, size: usize, al: Align) {
    if !p.is_null() {
        // SAFETY: the program's block, its size and alignment, as the
        // allocator's own operator passes them.
        unsafe { crate::hook::alloc::sdallocx(p, size, lg(al)) }
    }
}

/// The allocator's nothrow operator new of this shape: one attempt that
/// returns null instead of throwing.
///
/// # Safety
/// Every slot is resolved; an alignment is a power of two.
unsafe fn try_own_new(size: usize, align: Option<Align>, array: bool) -> Ptr {
    let nothrow = &NOTHROW as Nothrow;
    // SAFETY: the slots are resolved (the contract); a nothrow new takes any
    // size, and the nothrow tag it never reads.
    unsafe {
        match (align, array) {
            (None, false) => next::slot::_ZnwmRKSt9nothrow_t.loaded()(size, nothrow),
            (None, true) => next::slot::_ZnamRKSt9nothrow_t.loaded()(size, nothrow),
            (Some(a), false) => {
                next::slot::_ZnwmSt11align_val_tRKSt9nothrow_t.loaded()(size, a, nothrow)
            }
            (Some(a), true) => {
                next::slot::_ZnamSt11align_val_tRKSt9nothrow_t.loaded()(size, a, nothrow)
            }
        }
    }
}

/// The allocator's operator delete number `d` (in `Sym` order) on a probe's
/// block.
///
/// # Safety
/// Every slot is resolved; `p` is a live probe block of the `new` that
/// matches `d`.
unsafe fn own_delete(d: usize, p: Ptr) {
    let (size, al, nt) = (PROBE_SIZE, PROBE_ALIGN, &NOTHROW as Nothrow);
    // SAFETY: the contract; the size and alignment are the probe block's.
    unsafe {
        match d {
            d if d == Sym::delete as usize => next::slot::_ZdlPv.loaded()(p),
            d if d == Sym::delete_array as usize => next::slot::_ZdaPv.loaded()(p),
            d if d == Sym::delete_sized as usize => next::slot::_ZdlPvm.loaded()(p, size),
            d if d == Sym::delete_array_sized as usize => next::slot::_ZdaPvm.loaded()(p, size),
            d if d == Sym::delete_nothrow as usize => {
                next::slot::_ZdlPvRKSt9nothrow_t.loaded()(p, nt)
            }
            d if d == Sym::delete_array_nothrow as usize => {
                next::slot::_ZdaPvRKSt9nothrow_t.loaded()(p, nt)
            }
            d if d == Sym::delete_aligned as usize => {
                next::slot::_ZdlPvSt11align_val_t.loaded()(p, al)
            }
            d if d == Sym::delete_array_aligned as usize => {
                next::slot::_ZdaPvSt11align_val_t.loaded()(p, al)
            }
            d if d == Sym::delete_sized_aligned as usize => {
                next::slot::_ZdlPvmSt11align_val_t.loaded()(p, size, al)
            }
            d if d == Sym::delete_array_sized_aligned as usize => {
                next::slot::_ZdaPvmSt11align_val_t.loaded()(p, size, al)
            }
            d if d == Sym::delete_aligned_nothrow as usize => {
                next::slot::_ZdlPvSt11align_val_tRKSt9nothrow_t.loaded()(p, al, nt)
            }
            _ => next::slot::_ZdaPvSt11align_val_tRKSt9nothrow_t.loaded()(p, al, nt),
        }
    }
}

/// One exported operator: a jump through its slot in `JUMPS`, the program's
/// arguments untouched (see the module comment).
macro_rules! exported_operator {
    // One instruction. A Rust function takes two (an atomic load is never
    // folded into the jump), but has the DWARF a naked one lacks.
    (naked $name:ident => $sym:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[no_mangle]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the slot only holds functions of this type (`first`,
            // or what `decide` chose), stored with Release (an x86 load
            // acquires); the jump leaves the caller's arguments and stack as
            // they were.
            core::arch::naked_asm!(
                "jmp qword ptr [rip + {jumps} + {at}]",
                jumps = sym JUMPS,
                at = const Sym::$sym as usize * core::mem::size_of::<AtomicPtr<c_void>>(),
            )
        }
    };
    // A load and a jump: a frame 0 (`Api::New`, `Api::NewArray`), which
    // pprof names only from its DWARF.
    (named $name:ident => $sym:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            type Jump = unsafe extern "C" fn($($ty),*) -> $ret;
            let jump = JUMPS[Sym::$sym as usize].load(Ordering::Acquire);
            // SAFETY: the slot only holds functions of this type (`first`,
            // or what `decide` chose).
            let f: Jump = unsafe { crate::sys::dl::function(jump) };
            // SAFETY: the program's arguments to this same operator,
            // unchanged.
            unsafe { f($($arg),*) }
        }
    };
}

/// The exported operators, the `first` call of each, and `decide`.
macro_rules! exported {
    ($($kind:ident $name:ident => $sym:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        static JUMPS: [AtomicPtr<c_void>; FORMS] = {
            let mut jumps = [const { AtomicPtr::new(core::ptr::null_mut()) }; FORMS];
            $(jumps[Sym::$sym as usize] = AtomicPtr::new(first::$name as *mut c_void);)*
            jumps
        };

        $(exported_operator!($kind $name => $sym($($arg: $ty),*) -> $ret);)*

        /// Each operator's first call: decide, then go where it now jumps.
        #[allow(non_snake_case)]
        mod first {
            use super::*;
            $(
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    if PROBING_HERE.get() {
                        // The allocator's operator under probe calls this one.
                        NESTED.set(NESTED.get() | 1 << Sym::$sym as usize);
                        // SAFETY: `probe` runs after `decide` resolved every
                        // slot; the arguments are the caller's, unchanged.
                        return unsafe { counted::$name($($arg),*) };
                    }
                    decide();
                    // SAFETY: the caller's arguments, unchanged.
                    unsafe { super::$name($($arg),*) }
                }
            )*
        }

        /// Points every slot at libstdc++'s operator (it calls `malloc` and
        /// `free`), at the allocator's own if it reaches the library, at the
        /// library's entry point an allocator's operator delete ends in, or
        /// at the counting one.
        #[cold]
        fn decide() {
            // Before any code that calls a next operator runs (see `cxx_slots`).
            $(resolved(Sym::$sym);)*
            let routes = if new_calls_malloc() {
                // libstdc++'s every `operator delete` is `free`: going there
                // directly checks the block once, not up to three times
                // (delete[] -> delete -> free).
                core::array::from_fn(|i| if i < Sym::delete as usize { Route::Own } else { Route::Free })
            } else {
                // SAFETY: every slot is resolved just above.
                unsafe { probe() }
            };
            note_new_ranges(&routes);
            $(
                let target = match routes[Sym::$sym as usize] {
                    Route::Own => NEXT[Sym::$sym as usize].load(),
                    // The extra arguments (size, alignment) are ignored by
                    // `free`.
                    Route::Free => crate::hook::alloc::own_free(),
                    Route::Sdallocx => sized_aligned_delete as *mut c_void,
                    Route::Counted => counted::$name as *mut c_void,
                };
                JUMPS[Sym::$sym as usize].store(target, Ordering::Release);
            )*
        }
    };
}

exported! {
    named _Znwm => new(size: usize) -> Ptr;
    named _Znam => new_array(size: usize) -> Ptr;
    naked _ZnwmRKSt9nothrow_t => new_nothrow(size: usize, nt: Nothrow) -> Ptr;
    naked _ZnamRKSt9nothrow_t => new_array_nothrow(size: usize, nt: Nothrow) -> Ptr;
    naked _ZnwmSt11align_val_t => new_aligned(size: usize, al: Align) -> Ptr;
    naked _ZnamSt11align_val_t => new_array_aligned(size: usize, al: Align) -> Ptr;
    naked _ZnwmSt11align_val_tRKSt9nothrow_t => new_aligned_nothrow(size: usize, al: Align, nt: Nothrow) -> Ptr;
    naked _ZnamSt11align_val_tRKSt9nothrow_t => new_array_aligned_nothrow(size: usize, al: Align, nt: Nothrow) -> Ptr;
    naked _ZdlPv => delete(p: Ptr) -> ();
    naked _ZdaPv => delete_array(p: Ptr) -> ();
    naked _ZdlPvm => delete_sized(p: Ptr, size: usize) -> ();
    naked _ZdaPvm => delete_array_sized(p: Ptr, size: usize) -> ();
    naked _ZdlPvRKSt9nothrow_t => delete_nothrow(p: Ptr, nt: Nothrow) -> ();
    naked _ZdaPvRKSt9nothrow_t => delete_array_nothrow(p: Ptr, nt: Nothrow) -> ();
    naked _ZdlPvSt11align_val_t => delete_aligned(p: Ptr, al: Align) -> ();
    naked _ZdaPvSt11align_val_t => delete_array_aligned(p: Ptr, al: Align) -> ();
    naked _ZdlPvmSt11align_val_t => delete_sized_aligned(p: Ptr, size: usize, al: Align) -> ();
    naked _ZdaPvmSt11align_val_t => delete_array_sized_aligned(p: Ptr, size: usize, al: Align) -> ();
    naked _ZdlPvSt11align_val_tRKSt9nothrow_t => delete_aligned_nothrow(p: Ptr, al: Align, nt: Nothrow) -> ();
    naked _ZdaPvSt11align_val_tRKSt9nothrow_t => delete_array_aligned_nothrow(p: Ptr, al: Align, nt: Nothrow) -> ();
}

/// Notes the operator news that reach the library's `malloc` (or another of
/// its entry points), whose frames sit between frame 0 and the program.
fn note_new_ranges(routes: &[Route; FORMS]) {
    let news = NEXT.iter().zip(routes).take(sampled::NEW_FORMS);
    for (i, (next, route)) in news.enumerate() {
        if *route != Route::Own {
            continue;
        }
        let start = next.address() as usize;
        let Some((info, sym)) = crate::sys::dl::symbol_at(start as *const c_void) else {
            continue;
        };
        if start == 0 || info.dli_saddr as usize != start {
            continue;
        }
        let size = sym.st_size as usize;
        sampled::note_new_range(i, start, start.saturating_add(size));
    }
}
