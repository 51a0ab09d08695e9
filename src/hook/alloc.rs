//! The exported allocator entry points. Each one's common path is the
//! per-thread byte countdown (and, when it frees, one filter byte) followed by
//! a tail call into the next allocator; everything else is in the outlined
//! cold functions of `sampled`, shared by all entry points, reached through
//! each entry point's own (`malloc::crossed`, `free::checked`, ...). On
//! x86-64 the entry points that are never a sample's frame 0 are naked
//! (`naked_entry!`).
//!
//! The entry points are never inlined into each other: Go's pprof names a
//! frame only from a subprogram's own DWARF name, which an inlined function's
//! out-of-line copy lacks, and frame 0 must be named to be dropped.

use crate::hook::sampled::{self, allocate_sampled, release_sampled, Api, Freed};
use crate::next::{self, bootstrap};
use crate::sample::{live, sampling, thread_state};
use core::ffi::{c_int, c_void};

type Ptr = *mut c_void;

/// x86-64: an entry point whose common path is assembly (a naked function),
/// so that the tail jump to the next definition reads its slot in the jump
/// itself: LLVM folds that load into a tail call of one argument only (with
/// two or more it is a load into a register and a jump), and a naked
/// function saves and moves nothing before it. `count`: `$bytes` (an
/// argument's register) counted down as in `thread_state::crosses`; one
/// that reaches the sample point goes on at `$crossed`, the countdown
/// restored. `check`: the block in
/// `$p` (a 32-bit register) looked up in the free filter as in
/// `live::maybe_sampled`; one it cannot rule out goes on at `$checked`.
/// Either gets the program's arguments unchanged. Only r10 and r11 are
/// written: no argument's register (nor rax, which a variadic function
/// reads).
///
/// A naked function has no DWARF, and Go's pprof names a frame only from
/// DWARF (binutils and LLVM fall back on the symbol table): the functions
/// a sample names as frame 0 (`sampled::Api`: malloc, calloc, realloc,
/// posix_memalign, memalign, valloc, pvalloc) stay Rust, where a call of
/// two or more arguments costs the load. Each has CFI (`.cfi_startproc`:
/// the CIE's rule, the return address at the stack pointer, holds at every
/// instruction), for unwinders other than the library's.
#[cfg(target_arch = "x86_64")]
macro_rules! naked_entry {
    (
        $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty
        $(, count $bytes:literal => $crossed:path)?
        $(, check $p:literal => $checked:path)?
    ) => {
        #[no_mangle]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: a jump to `$crossed` or `$checked` (functions of this
            // same C type) or through the next definition's slot (started
            // at a function, only ever set to one, no racing store: as
            // `Next::loaded`), with the arguments and the stack as the
            // caller left them. The countdown is this thread's 8-byte
            // variable at %fs:offset (as in `thread_state`), its offset from
            // the GOT slot the loader filled; the filter byte is inside
            // `FILTER` (a 32-bit value shifted right by GRANULE_BITS is below
            // FILTER_SLOTS).
            core::arch::naked_asm!(
                ".cfi_startproc",
                $(
                    "mov r11, qword ptr [rip + leakprobe_until_sample@GOTTPOFF]",
                    concat!("sub qword ptr fs:[r11], ", $bytes),
                    "jbe 2f",
                )?
                $(
                    concat!("mov r10d, ", $p),
                    "shr r10d, {granule}",
                    "lea r11, [rip + {filter}]",
                    "cmp byte ptr [r11 + r10], 0",
                    "jne {checked}",
                )?
                "jmp qword ptr [rip + {next} + {at}]",
                $(
                    "2:",
                    concat!("add qword ptr fs:[r11], ", $bytes),
                    "jmp {crossed}",
                )?
                ".cfi_endproc",
                next = sym next::slot::$name,
                at = const crate::sys::dl::SLOT_ADDRESS_AT,
                $(crossed = sym $crossed,)?
                $(
                    checked = sym $checked,
                    filter = sym live::FILTER,
                    granule = const live::GRANULE_BITS,
                )?
            )
        }
    };
}

/// An entry point that allocates `$bytes` and returns the block (or, with
/// `block`, whatever the next definition returns, `$block` being the block
/// or null from that result `$r`). Its sampled path is `$name::crossed`, of
/// the same C type; its common path counts down `$bytes` and tail-calls the
/// next definition (with `asm`, on x86-64 in assembly, `$bytes` in that
/// register).
macro_rules! allocating {
    (
        $name:ident($($arg:ident: $ty:ty),*),
        bytes = $bytes:expr,
        frame = $api:ident
        $(, asm = $reg:literal)?
    ) => {
        allocating!(@entry $name($($arg: $ty),*) -> Ptr, bytes = $bytes $(, asm = $reg)?);
        /// The sampled path.
        mod $name {
            use super::*;

            /// # Safety
            /// As the C function.
            #[cold]
            #[inline(never)]
            pub unsafe extern "C" fn crossed($($arg: $ty),*) -> Ptr {
                // SAFETY: the program's arguments to this same C function, unchanged.
                let alloc = move || unsafe { next::$name($($arg),*) };
                // SAFETY: `alloc` returns the next allocator's block or null.
                unsafe { allocate_sampled(alloc, $bytes, Api::$api) }
            }
        }
    };
    (
        $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty,
        bytes = $bytes:expr,
        frame = $api:ident,
        block = |$r:ident| $block:expr
    ) => {
        allocating!(@entry $name($($arg: $ty),*) -> $ret, bytes = $bytes);
        /// The sampled path.
        mod $name {
            use super::*;

            /// # Safety
            /// As the C function.
            #[cold]
            #[inline(never)]
            pub unsafe extern "C" fn crossed($($arg: $ty),*) -> $ret {
                let mut result = Default::default();
                let alloc = || {
                    // SAFETY: the program's arguments to this same C function, unchanged.
                    let $r = unsafe { next::$name($($arg),*) };
                    result = $r;
                    $block
                };
                // SAFETY: `alloc` returns the next allocator's block or null.
                unsafe { allocate_sampled(alloc, $bytes, Api::$api) };
                result
            }
        }
    };
    (@entry $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, bytes = $bytes:expr, asm = $reg:literal) => {
        #[cfg(target_arch = "x86_64")]
        naked_entry!($name($($arg: $ty),*) -> $ret, count $reg => $name::crossed);
        #[cfg(not(target_arch = "x86_64"))]
        allocating!(@entry $name($($arg: $ty),*) -> $ret, bytes = $bytes);
    };
    (@entry $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, bytes = $bytes:expr) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            if !thread_state::crosses($bytes) {
                // SAFETY: the program's arguments to this same C function, unchanged.
                return unsafe { next::$name($($arg),*) };
            }
            // SAFETY: the program's arguments, unchanged (the contract).
            unsafe { $name::crossed($($arg),*) }
        }
    };
}

/// An entry point that resizes block `$p` to `$size` bytes; with `asm`, on
/// x86-64 a naked one (`$p` in rdi, `$size` in rsi).
macro_rules! resizing {
    ($name:ident($p:ident: Ptr, $size:ident: usize $(, $arg:ident: $ty:ty)*), asm) => {
        #[cfg(target_arch = "x86_64")]
        naked_entry!(
            $name($p: Ptr, $size: usize $(, $arg: $ty)*) -> Ptr,
            count "rsi" => $name::crossed,
            check "edi" => $name::checked
        );
        #[cfg(not(target_arch = "x86_64"))]
        resizing!(@rust $name($p: Ptr, $size: usize $(, $arg: $ty)*));
        resizing!(@slow $name($p: Ptr, $size: usize $(, $arg: $ty)*));
    };
    ($name:ident($p:ident: Ptr, $size:ident: usize $(, $arg:ident: $ty:ty)*)) => {
        resizing!(@rust $name($p: Ptr, $size: usize $(, $arg: $ty)*));
        resizing!(@slow $name($p: Ptr, $size: usize $(, $arg: $ty)*));
    };
    (@rust $name:ident($p:ident: Ptr, $size:ident: usize $(, $arg:ident: $ty:ty)*)) => {
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($p: Ptr, $size: usize $(, $arg: $ty)*) -> Ptr {
            if thread_state::crosses($size) {
                // SAFETY: the program's arguments, unchanged (the contract).
                return unsafe { $name::crossed($p, $size $(, $arg)*) };
            }
            if live::maybe_sampled($p as usize) {
                // SAFETY: the program's arguments, unchanged (the contract).
                return unsafe { $name::checked($p, $size $(, $arg)*) };
            }
            // SAFETY: the program's arguments to this same C function, unchanged.
            unsafe { next::$name($p, $size $(, $arg)*) }
        }
    };
    (@slow $name:ident($p:ident: Ptr, $size:ident: usize $(, $arg:ident: $ty:ty)*)) => {
        /// The slow paths: the resize reached the sample point (`crossed`,
        /// the countdown restored) or the block may be a sample (`checked`).
        mod $name {
            use super::*;

            /// # Safety
            /// As the C function.
            #[cold]
            #[inline(never)]
            pub unsafe extern "C" fn crossed($p: Ptr, $size: usize $(, $arg: $ty)*) -> Ptr {
                // SAFETY: as the C function (the contract).
                unsafe { resize($p, $size $(, $arg)*, true) }
            }

            /// # Safety
            /// As the C function.
            #[cold]
            #[inline(never)]
            pub unsafe extern "C" fn checked($p: Ptr, $size: usize $(, $arg: $ty)*) -> Ptr {
                // SAFETY: as the C function (the contract).
                unsafe { resize($p, $size $(, $arg)*, false) }
            }

            /// # Safety
            /// As the C function.
            #[inline(always)]
            unsafe fn resize($p: Ptr, $size: usize $(, $arg: $ty)*, crossed: bool) -> Ptr {
                // SAFETY: `resize_sampled` calls the closure with `$p` only
                // when it is not the bootstrap arena's: the program's block.
                let resize = move |p| unsafe { next::$name(p, $size $(, $arg)*) };
                // SAFETY: `$p` is the program's block (or null), the closure
                // resizes it as the program asked.
                unsafe { resize_sampled($p, $size, crossed, resize) }
            }
        }
    };
}

/// An entry point that frees block `$p` (in rdi).
macro_rules! releasing {
    ($name:ident($p:ident: Ptr $(, $arg:ident: $ty:ty)*), $freed:expr) => {
        #[cfg(target_arch = "x86_64")]
        naked_entry!($name($p: Ptr $(, $arg: $ty)*) -> (), check "edi" => $name::checked);

        #[cfg(not(target_arch = "x86_64"))]
        #[no_mangle]
        #[inline(never)]
        pub unsafe extern "C" fn $name($p: Ptr $(, $arg: $ty)*) {
            if !live::maybe_sampled($p as usize) {
                // SAFETY: the program's arguments to this same C function, unchanged.
                return unsafe { next::$name($p $(, $arg)*) };
            }
            // SAFETY: the program's arguments, unchanged (the contract).
            unsafe { $name::checked($p $(, $arg)*) }
        }

        /// The slow path: the block may be a sample.
        mod $name {
            use super::*;

            /// # Safety
            /// As the C function.
            #[cold]
            #[inline(never)]
            pub unsafe extern "C" fn checked($p: Ptr $(, $arg: $ty)*) {
                // SAFETY: `release_sampled` calls the closure with `$p` only
                // when it is not the bootstrap arena's: the program's block.
                release_sampled($p, move |p| unsafe { next::$name(p $(, $arg)*) }, $freed)
            }
        }
    };
}

// Frames 0 (see `naked_entry!`): Rust.
allocating!(malloc(size: usize), bytes = size, frame = Malloc);
allocating!(valloc(size: usize), bytes = size, frame = Valloc);
allocating!(pvalloc(size: usize), bytes = size, frame = Pvalloc);
// Wrapping: a product that overflows is a calloc that fails and allocates
// nothing, and bytes counted for it move no later allocation's odds of being
// sampled (the gaps are memoryless). A multiply and no overflow branch.
allocating!(calloc(n: usize, size: usize), bytes = n.wrapping_mul(size), frame = Calloc);
allocating!(memalign(align: usize, size: usize), bytes = size, frame = Memalign);
// Not frames 0: naked on x86-64.
allocating!(aligned_alloc(align: usize, size: usize), bytes = size, frame = Memalign, asm = "rsi");
allocating!(mallocx(size: usize, flags: c_int), bytes = size, frame = Malloc, asm = "rdi");
allocating!(
    posix_memalign(out: *mut Ptr, align: usize, size: usize) -> c_int,
    bytes = size,
    frame = PosixMemalign,
    block = |rc| if rc == 0 {
        // SAFETY: posix_memalign succeeded, so it stored the block in `*out`.
        unsafe { *out }
    } else {
        core::ptr::null_mut()
    }
);
resizing!(realloc(p: Ptr, size: usize));
resizing!(rallocx(p: Ptr, size: usize, flags: c_int), asm);
releasing!(free(p: Ptr), Freed::Free);
releasing!(dallocx(p: Ptr, flags: c_int), Freed::Other);
releasing!(sdallocx(p: Ptr, size: usize, flags: c_int), Freed::Sized(size, flags));

/// This library's `free`, for code that jumps to it. Loaded late (attached),
/// `free as *mut c_void` would be the program's `free`: Rust reads an
/// exported function's address from the library's GOT, which the loader
/// then bound to libc's; the library's own object is asked instead.
pub fn own_free() -> *mut c_void {
    if crate::sys::dl::loaded_late() {
        if let Some(f) = crate::sys::dl::Own::open().and_then(|own| own.definition(c"free")) {
            return f as *mut c_void;
        }
    }
    free as *mut c_void
}

/// glibc's own reallocarray would call glibc's realloc even when the program
/// uses jemalloc, so it is implemented here on the next allocator's realloc.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn reallocarray(p: Ptr, n: usize, size: usize) -> Ptr {
    match n.checked_mul(size) {
        // SAFETY: the program's block, resized to the product it asked for.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            crate::sys::errno::set(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// In-place resize: a sampled allocation keeps its sample, with the new size.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn xallocx(p: Ptr, size: usize, extra: usize, flags: c_int) -> usize {
    // SAFETY: the program's arguments to this same C function, unchanged.
    let real = unsafe { next::xallocx(p, size, extra, flags) };
    if live::maybe_sampled(p as usize) && real >= size {
        live::resize(p as usize, real.min(size.saturating_add(extra)), real);
    }
    real
}

#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn malloc_usable_size(p: Ptr) -> usize {
    if bootstrap::ever_used() {
        // SAFETY: the program's argument, unchanged.
        return unsafe { usable_size_checked(p) };
    }
    // SAFETY: the program's arguments to this same C function, unchanged.
    unsafe { next::malloc_usable_size(p) }
}

/// `malloc_usable_size` once the bootstrap arena handed out a block: it
/// answers for its own.
///
/// # Safety
/// As `malloc_usable_size`.
#[cold]
#[inline(never)]
unsafe fn usable_size_checked(p: Ptr) -> usize {
    if bootstrap::owns(p) {
        // SAFETY: a block inside the arena was handed out by it.
        return unsafe { bootstrap::size_of(p) };
    }
    // SAFETY: the program's arguments to this same C function, unchanged.
    unsafe { next::malloc_usable_size(p) }
}

/// A resize of a possibly sampled block, or one that reached the sample point:
/// for accounting, a free of the old block and a new allocation.
///
/// # Safety
/// `p` is null or a live block (of the arena or the next allocator);
/// `resize` resizes a block of the next allocator to `size` bytes and returns
/// the new block or null.
#[cold]
#[inline(never)]
unsafe fn resize_sampled(
    p: Ptr,
    size: usize,
    crossed: bool,
    resize: impl FnOnce(Ptr) -> Ptr,
) -> Ptr {
    let q = if bootstrap::owns(p) {
        // SAFETY: `p` is live and the arena's.
        unsafe { move_out_of_bootstrap(p, size) }
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
        // SAFETY: `q` is the block of `size` bytes just returned.
        unsafe { sampled::record(q, size, Api::Realloc) };
    }
    q
}

/// # Safety
/// `p` is a live block of the bootstrap arena.
unsafe fn move_out_of_bootstrap(p: Ptr, size: usize) -> Ptr {
    // SAFETY: malloc has no precondition.
    let q = unsafe { next::malloc(size) };
    if !q.is_null() {
        // SAFETY: `p` is the arena's block (its recorded size readable before
        // it) and `q` a fresh, distinct block: both hold the smaller size.
        unsafe {
            let n = bootstrap::size_of(p).min(size);
            core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, n);
        }
    }
    q
}
