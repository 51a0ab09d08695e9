//! The program's own mappings: `mmap`, `mmap64`, `mremap` and `munmap`
//! (and `MAP_FIXED` over tracked memory), sampled by bytes and tracked in
//! `mapped::table`. An unsampled call that touches nothing tracked pays the
//! countdown (and two bounds) only.

use crate::hook::sampled;
use crate::mapped::table::{self, Kind};
use crate::next;
use crate::sample::{sampling, thread_state};
use crate::unwind::stack::Stack;
use core::ffi::{c_int, c_void};

type Ptr = *mut c_void;

/// A function of mmap's C type, named `$name`, whose body `$body` sees the
/// arguments under the names given.
macro_rules! of_mmap_type {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident($addr:ident, $len:ident, $prot:ident, $flags:ident, $fd:ident, $off:ident)
        $body:block
    ) => {
        $(#[$attr])*
        $vis unsafe extern "C" fn $name(
            $addr: Ptr,
            $len: usize,
            $prot: c_int,
            $flags: c_int,
            $fd: c_int,
            $off: libc::off_t,
        ) -> Ptr $body
    };
}

/// `mmap` and `mmap64` (the same function on 64-bit systems): an unsampled
/// call that replaces nothing tracked pays the countdown only. On x86-64 in
/// assembly (as `hook::alloc`'s naked entry points, and for the same
/// reasons: the next definition's slot read in the tail jump, nothing
/// saved before it): the length rounded to pages as `table::pages` does
/// (but for a length within a page of 2^64, which no mapping has: there the
/// rounding wraps to a few bytes counted, and the call fails), counted
/// down; one that reaches the sample point goes on at `$name::crossed`, the
/// countdown restored, and a `MAP_FIXED` one at `$name::fixed`, where it is
/// checked against the tracked ranges. With CFI, as `hook::alloc`'s.
macro_rules! mapping {
    ($name:ident, $api:ident) => {
        of_mmap_type! {
            #[cfg(target_arch = "x86_64")]
            /// # Safety
            /// As mmap(2).
            #[no_mangle]
            #[unsafe(naked)]
            pub fn $name(_addr, _len, _prot, _flags, _fd, _off) {
                // SAFETY: a jump to `$name::crossed` or `$name::fixed` (of
                // this same C type) or through mmap's slot (started at a
                // function, only ever set to one: as `Next::loaded`), with
                // the arguments (flags in ecx) and the stack as the caller
                // left them. The countdown is this thread's 8-byte variable
                // at %fs:offset (as in `thread_state`); rax, r10 and r11 are
                // no argument's.
                core::arch::naked_asm!(
                    ".cfi_startproc",
                    "mov r10, qword ptr [rip + {page}]",
                    "lea rax, [rsi + r10 - 1]",
                    "neg r10",
                    "and rax, r10",
                    "mov r11, qword ptr [rip + leakprobe_until_sample@GOTTPOFF]",
                    "sub qword ptr fs:[r11], rax",
                    "jbe 2f",
                    "test ecx, {fixed_flag}",
                    "jnz {fixed}",
                    "jmp qword ptr [rip + {next} + {at}]",
                    "2:",
                    "add qword ptr fs:[r11], rax",
                    "jmp {crossed}",
                    ".cfi_endproc",
                    page = sym table::PAGE,
                    fixed_flag = const libc::MAP_FIXED,
                    fixed = sym $name::fixed,
                    next = sym next::slot::mmap,
                    at = const crate::sys::dl::SLOT_ADDRESS_AT,
                    crossed = sym $name::crossed,
                )
            }
        }

        of_mmap_type! {
            #[cfg(not(target_arch = "x86_64"))]
            /// # Safety
            /// As mmap(2).
            #[no_mangle]
            #[inline(never)]
            pub fn $name(addr, len, prot, flags, fd, off) {
                if thread_state::crosses(table::pages(len)) {
                    // SAFETY: the program's arguments, unchanged.
                    return unsafe { $name::crossed(addr, len, prot, flags, fd, off) };
                }
                if flags & libc::MAP_FIXED != 0 {
                    // SAFETY: the program's arguments, unchanged.
                    return unsafe { $name::fixed(addr, len, prot, flags, fd, off) };
                }
                // SAFETY: the program's arguments, unchanged.
                unsafe { next::mmap(addr, len, prot, flags, fd, off) }
            }
        }

        /// The slow paths: the call reached the sample point (`crossed`,
        /// the countdown restored), or may replace tracked memory (`fixed`).
        mod $name {
            use super::*;

            of_mmap_type! {
                /// # Safety
                /// As mmap(2).
                #[cold]
                #[inline(never)]
                pub fn crossed(addr, len, prot, flags, fd, off) {
                    // SAFETY: as mmap(2) (the contract).
                    unsafe { map_slow(addr, len, prot, flags, fd, off, true, sampled::Api::$api) }
                }
            }

            of_mmap_type! {
                /// # Safety
                /// As mmap(2).
                #[cold]
                #[inline(never)]
                pub fn fixed(addr, len, prot, flags, fd, off) {
                    if !table::overlaps(addr as usize, len) {
                        // SAFETY: the program's arguments, unchanged.
                        return unsafe { next::mmap(addr, len, prot, flags, fd, off) };
                    }
                    // SAFETY: as mmap(2) (the contract).
                    unsafe { map_slow(addr, len, prot, flags, fd, off, false, sampled::Api::$api) }
                }
            }
        }
    };
}

mapping!(mmap, Mmap);
mapping!(mmap64, Mmap64);

/// A mapping call that reached the sample point (`crossed`) or replaces
/// (`MAP_FIXED`) memory that may be tracked, made at entry point `api`.
///
/// # Safety
/// As mmap(2).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn map_slow(
    addr: Ptr,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
    crossed: bool,
    api: sampled::Api,
) -> Ptr {
    let fixed = flags & libc::MAP_FIXED != 0;
    let replaces = fixed && table::overlaps(addr as usize, len);
    // SAFETY: the program's arguments (the contract), unchanged.
    let call = || unsafe { next::mmap(addr, len, prot, flags, fd, off) };
    // Over memory already held that the table does not know (a block of
    // glibc's malloc, which glibc unmaps with its own `munmap` when it is
    // freed; a mapping of the program's that was not sampled), the new
    // mapping's pages are that holder's and adds no memory: not tracked,
    // or a freed block would leave it live for ever.
    let kind = match Kind::of(prot, flags) {
        Some(_) if crossed && fixed && !replaces && table::held_already(addr as usize, len) => None,
        kind => kind,
    };
    track_new(
        table::pages(len),
        kind,
        crossed,
        replaces,
        api.address(),
        call,
    )
}

/// A call that maps `size` bytes of `kind` (None: not tracked) and returns
/// where (`MAP_FAILED` if it failed), made at exported function `entry`:
/// it reached the sample point (`crossed`), or may replace tracked memory.
/// The table is updated with the call under its lock.
#[cold]
#[inline(never)]
pub fn track_new(
    size: usize,
    kind: Option<Kind>,
    crossed: bool,
    replaces: bool,
    entry: usize,
    call: impl FnOnce() -> Ptr,
) -> Ptr {
    let mut stack = Stack::new();
    let kind = kind.filter(|_| {
        crossed
            && sampling::decide(size)
            && sampling::while_busy(|| sampled::capture_mapped(entry, &mut stack))
    });
    if kind.is_none() && !replaces {
        return call();
    }
    let (p, seq) = table::with_table(|t| {
        let p = call();
        let seq = match p != libc::MAP_FAILED {
            true => t.mapped_at(p as usize, size, kind.map(|k| (table::PENDING, k))),
            false => 0,
        };
        (p, seq)
    });
    if let Some(kind) = kind.filter(|_| p != libc::MAP_FAILED) {
        crate::sys::errno::preserved(|| sampled::record_mapped(kind, seq, size, &stack));
    }
    p
}

/// `munmap`: one that touches no tracked range (`table::overlaps`) goes
/// straight on. On x86-64 in assembly, as `mmap`: the slot read in the
/// tail jump; an address at or above every tracked range's is two
/// instructions and the jump; one that may overlap goes on at
/// `unmap_checked`.
#[cfg(target_arch = "x86_64")]
/// # Safety
/// As munmap(2).
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn munmap(addr: Ptr, len: usize) -> c_int {
    // SAFETY: a jump to `unmap_checked` (of this same C type) or through
    // munmap's slot (started at a function, only ever set to one: as
    // `Next::loaded`), with the arguments and the stack as the caller left
    // them. The bounds are read as `table::overlaps` does (a relaxed load is
    // a plain one); a sum that carries saturates, so it is over LOWEST.
    core::arch::naked_asm!(
        ".cfi_startproc",
        "cmp rdi, qword ptr [rip + {highest}]",
        "jae 2f",
        "mov rax, rdi",
        "add rax, rsi",
        "jc {checked}",
        "cmp rax, qword ptr [rip + {lowest}]",
        "ja {checked}",
        "2:",
        "jmp qword ptr [rip + {next} + {at}]",
        ".cfi_endproc",
        highest = sym table::HIGHEST,
        lowest = sym table::LOWEST,
        checked = sym unmap_checked,
        next = sym next::slot::munmap,
        at = const crate::sys::dl::SLOT_ADDRESS_AT,
    )
}

#[cfg(not(target_arch = "x86_64"))]
/// # Safety
/// As munmap(2).
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn munmap(addr: Ptr, len: usize) -> c_int {
    // SAFETY: the program's arguments, unchanged.
    unsafe { unmap_checked(addr, len) }
}

/// `munmap` once its range may overlap a tracked one.
///
/// # Safety
/// As munmap(2).
#[inline(never)]
unsafe extern "C" fn unmap_checked(addr: Ptr, len: usize) -> c_int {
    if !table::overlaps(addr as usize, len) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { next::munmap(addr, len) };
    }
    // SAFETY: the program's arguments, unchanged.
    unsafe { unmap_slow(addr, len) }
}

/// The table is updated with the call under its lock, so a range unmapped
/// here and mapped again by another thread is never confused with this one.
///
/// # Safety
/// As munmap(2).
#[cold]
#[inline(never)]
unsafe fn unmap_slow(addr: Ptr, len: usize) -> c_int {
    table::with_table(|t| {
        // SAFETY: the program's arguments (the contract), unchanged.
        let rc = unsafe { next::munmap(addr, len) };
        if rc == 0 {
            t.remove_range(
                addr as usize,
                (addr as usize).saturating_add(table::pages(len)),
            );
        }
        rc
    })
}

/// `mremap` (variadic in C: the new address, read only with
/// `MREMAP_FIXED`, arrives as a fifth argument).
///
/// # Safety
/// As mremap(2).
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn mremap(
    old: Ptr,
    old_size: usize,
    new_size: usize,
    flags: c_int,
    new_address: Ptr,
) -> Ptr {
    let crossed = thread_state::crosses(table::pages(new_size));
    if !crossed
        && !table::overlaps(old as usize, old_size)
        && !table::overlaps(new_address as usize, new_size)
    {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { next::slot::mremap.get()(old, old_size, new_size, flags, new_address) };
    }
    // SAFETY: the program's arguments, unchanged.
    unsafe {
        remap_slow(
            [old as usize, old_size, new_size, new_address as usize],
            flags,
            crossed,
        )
    }
}

/// A resize or move: for the accounting, as `realloc`: the old range stops
/// being tracked and the new one is a new sample at this call's stack.
///
/// # Safety
/// As mremap(2), with its arguments in `args` and `flags`.
#[cold]
#[inline(never)]
unsafe fn remap_slow(args: [usize; 4], flags: c_int, crossed: bool) -> Ptr {
    const MREMAP_DONTUNMAP: c_int = 4;
    let [old, old_size, new_size, new_address] = args;
    let size = table::pages(new_size);
    let mut stack = Stack::new();
    let entry = sampled::Api::Mremap.address();
    let sampled = crossed
        && sampling::decide(size)
        && sampling::while_busy(|| sampled::capture_mapped(entry, &mut stack));
    let (q, sample) = table::with_table(|t| {
        // SAFETY: the program's arguments (the contract), unchanged.
        let q = unsafe {
            next::slot::mremap.get()(old as Ptr, old_size, new_size, flags, new_address as Ptr)
        };
        if q == libc::MAP_FAILED {
            return (q, None);
        }
        // old_size 0 duplicates a shared mapping; DONTUNMAP leaves the old
        // range mapped (and empty).
        let kind = if old_size != 0 && flags & MREMAP_DONTUNMAP == 0 {
            t.remove_range(old, old.saturating_add(table::pages(old_size)))
        } else {
            None
        };
        // A mapping first seen here is counted as anonymous.
        let kind = kind.unwrap_or(Kind::Anon);
        let seq = t.mapped_at(q as usize, size, sampled.then_some((table::PENDING, kind)));
        (q, sampled.then_some((kind, seq)))
    });
    if let Some((kind, seq)) = sample {
        crate::sys::errno::preserved(|| sampled::record_mapped(kind, seq, size, &stack));
    }
    q
}
