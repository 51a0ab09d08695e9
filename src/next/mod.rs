//! The next definition of every function the library interposes
//! (`dlsym(RTLD_NEXT, ...)`), so a program linked against jemalloc or
//! tcmalloc keeps its allocator, and libc's functions keep their work.
//!
//! `slot` holds one typed slot (`sys::dl::Next`) per interposed function:
//! the one idiom for calling the next definition is `slot::NAME.get()(...)`.
//! The allocator's slots start at a trampoline (required functions) or an
//! emulation built on the required ones (optional functions), so the hot
//! path is one load and an indirect tail call, with no "resolved yet?" test:
//! they are called through the functions of the same name here
//! (`next::malloc(size)`), or jumped through in assembly
//! (`sys::dl::SLOT_ADDRESS_AT`). So are `mmap`'s and `munmap`'s, whose
//! trampolines look them up. The others are looked up at first use.
//! `hook::entry_points` pairs each slot with the library's definition.
//!
//! Below it: `bootstrap`, the arena that serves allocations made while the
//! table is being filled (`dlsym` allocates), and `global_alloc`, the
//! library's own memory, taken from the next allocator.

pub mod bootstrap;
pub mod global_alloc;

use crate::sys::dl::{c_name, info_of, lookup, missing, object_of, Next, NextSymbol, Scope};
use crate::sys::signals::Sigset;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

type Ptr = *mut c_void;
type Argv = *const *const c_char;
/// `std::align_val_t` and `const std::nothrow_t&` as passed in registers.
type Align = usize;
type Nothrow = *const u8;

/// The slots: `allocator` ones start at `$init` and get a caller of the
/// same name (one load, no check); `others` are looked up at first use.
macro_rules! next_definitions {
    (
        allocator { $($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $init:path;)* }
        others { $($other:ident($($oty:ty),*) -> $oret:ty;)* }
    ) => {
        /// One typed slot per interposed function, named as the function.
        #[allow(non_upper_case_globals)]
        pub mod slot {
            use super::*;
            $(
                // SAFETY: the C type of the function of this name, and of
                // `$init`, its stand-in.
                pub static $name: Next<unsafe extern "C" fn($($ty),*) -> $ret> = unsafe {
                    Next::starting_at(c_name(concat!(stringify!($name), "\0").as_bytes()), $init as *mut c_void)
                };
            )*
            $(
                // SAFETY: the C type of the function of this name.
                pub static $other: Next<unsafe extern "C" fn($($oty),*) -> $oret> = unsafe {
                    Next::new(c_name(concat!(stringify!($other), "\0").as_bytes()))
                };
            )*
        }
        $(
            /// Calls the next allocator's function of this name.
            ///
            /// # Safety
            /// The caller upholds that function's C contract.
            #[inline(always)]
            #[allow(non_snake_case)]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                // SAFETY: the slot starts at a function and is only ever set
                // to one; the caller upholds the C contract.
                unsafe { slot::$name.loaded()($($arg),*) }
            }
        )*
    };
}

next_definitions! {
    allocator {
        malloc(size: usize) -> Ptr = first::malloc;
        free(p: Ptr) -> () = first::free;
        calloc(n: usize, size: usize) -> Ptr = first::calloc;
        realloc(p: Ptr, size: usize) -> Ptr = first::realloc;
        posix_memalign(out: *mut Ptr, align: usize, size: usize) -> c_int = first::posix_memalign;
        aligned_alloc(align: usize, size: usize) -> Ptr = emulated::aligned_alloc;
        memalign(align: usize, size: usize) -> Ptr = emulated::memalign;
        valloc(size: usize) -> Ptr = emulated::valloc;
        pvalloc(size: usize) -> Ptr = emulated::pvalloc;
        malloc_usable_size(p: Ptr) -> usize = emulated::malloc_usable_size;
        mallocx(size: usize, flags: c_int) -> Ptr = emulated::mallocx;
        rallocx(p: Ptr, size: usize, flags: c_int) -> Ptr = emulated::rallocx;
        xallocx(p: Ptr, size: usize, extra: usize, flags: c_int) -> usize = emulated::xallocx;
        dallocx(p: Ptr, flags: c_int) -> () = emulated::dallocx;
        sdallocx(p: Ptr, size: usize, flags: c_int) -> () = emulated::sdallocx;
        // Not the allocator's, but jumped through the same way
        // (`hook::mapping`); looked up at load (`mapped::table::init`) or at
        // a first call.
        mmap(addr: Ptr, len: usize, prot: c_int, flags: c_int, fd: c_int, off: libc::off_t) -> Ptr = first::mmap;
        munmap(addr: Ptr, len: usize) -> c_int = first::munmap;
    }
    others {
        // C++ (`hook::cxx`): resolved together at the first operator call.
        _Znwm(usize) -> Ptr;
        _Znam(usize) -> Ptr;
        _ZnwmRKSt9nothrow_t(usize, Nothrow) -> Ptr;
        _ZnamRKSt9nothrow_t(usize, Nothrow) -> Ptr;
        _ZnwmSt11align_val_t(usize, Align) -> Ptr;
        _ZnamSt11align_val_t(usize, Align) -> Ptr;
        _ZnwmSt11align_val_tRKSt9nothrow_t(usize, Align, Nothrow) -> Ptr;
        _ZnamSt11align_val_tRKSt9nothrow_t(usize, Align, Nothrow) -> Ptr;
        _ZdlPv(Ptr) -> ();
        _ZdaPv(Ptr) -> ();
        _ZdlPvm(Ptr, usize) -> ();
        _ZdaPvm(Ptr, usize) -> ();
        _ZdlPvRKSt9nothrow_t(Ptr, Nothrow) -> ();
        _ZdaPvRKSt9nothrow_t(Ptr, Nothrow) -> ();
        _ZdlPvSt11align_val_t(Ptr, Align) -> ();
        _ZdaPvSt11align_val_t(Ptr, Align) -> ();
        _ZdlPvmSt11align_val_t(Ptr, usize, Align) -> ();
        _ZdaPvmSt11align_val_t(Ptr, usize, Align) -> ();
        _ZdlPvSt11align_val_tRKSt9nothrow_t(Ptr, Align, Nothrow) -> ();
        _ZdaPvSt11align_val_tRKSt9nothrow_t(Ptr, Align, Nothrow) -> ();
        // Mappings (`mapped`; mmap and munmap are above). mremap is variadic
        // in C: its new address, read only with MREMAP_FIXED, is passed in
        // the fifth argument's register on x86-64 and aarch64.
        mremap(Ptr, usize, usize, c_int, Ptr) -> Ptr;
        shmat(c_int, *const c_void, c_int) -> Ptr;
        shmdt(*const c_void) -> c_int;
        brk(Ptr) -> c_int;
        sbrk(isize) -> Ptr;
        pthread_create(*mut libc::pthread_t, *const libc::pthread_attr_t, extern "C" fn(Ptr) -> Ptr, Ptr) -> c_int;
        pthread_join(libc::pthread_t, *mut Ptr) -> c_int;
        pthread_tryjoin_np(libc::pthread_t, *mut Ptr) -> c_int;
        pthread_timedjoin_np(libc::pthread_t, *mut Ptr, *const libc::timespec) -> c_int;
        pthread_clockjoin_np(libc::pthread_t, *mut Ptr, libc::clockid_t, *const libc::timespec) -> c_int;
        pthread_detach(libc::pthread_t) -> c_int;
        // The dump signal (`hook::signals`, `collect::signal`).
        sigaction(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
        signal(c_int, libc::sighandler_t) -> libc::sighandler_t;
        bsd_signal(c_int, libc::sighandler_t) -> libc::sighandler_t;
        sysv_signal(c_int, libc::sighandler_t) -> libc::sighandler_t;
        pthread_sigmask(c_int, *const Sigset, *mut Sigset) -> c_int;
        sigprocmask(c_int, *const Sigset, *mut Sigset) -> c_int;
        sigsuspend(*const Sigset) -> c_int;
        ppoll(*mut libc::pollfd, libc::nfds_t, *const libc::timespec, *const Sigset) -> c_int;
        pselect(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *const libc::timespec, *const Sigset) -> c_int;
        epoll_pwait(c_int, *mut libc::epoll_event, c_int, c_int, *const Sigset) -> c_int;
        epoll_pwait2(c_int, *mut libc::epoll_event, c_int, *const libc::timespec, *const Sigset) -> c_int;
        sigwait(*const Sigset, *mut c_int) -> c_int;
        sigwaitinfo(*const Sigset, *mut libc::siginfo_t) -> c_int;
        sigtimedwait(*const Sigset, *mut libc::siginfo_t, *const libc::timespec) -> c_int;
        signalfd(c_int, *const Sigset, c_int) -> c_int;
        raise(c_int) -> c_int;
        pthread_kill(libc::pthread_t, c_int) -> c_int;
        pthread_sigqueue(libc::pthread_t, c_int, libc::sigval) -> c_int;
        tgkill(libc::pid_t, libc::pid_t, c_int) -> c_int;
        execve(*const c_char, Argv, Argv) -> c_int;
        execv(*const c_char, Argv) -> c_int;
        execvp(*const c_char, Argv) -> c_int;
        execvpe(*const c_char, Argv, Argv) -> c_int;
        fexecve(c_int, Argv, Argv) -> c_int;
        posix_spawn(*mut libc::pid_t, *const c_char, *const c_void, *const c_void, Argv, Argv) -> c_int;
        posix_spawnp(*mut libc::pid_t, *const c_char, *const c_void, *const c_void, Argv, Argv) -> c_int;
        system(*const c_char) -> c_int;
        popen(*const c_char, *const c_char) -> *mut libc::FILE;
        // The process (`hook::fork`, `hook::creds`, `hook::unload`).
        fork() -> libc::pid_t;
        setuid(libc::uid_t) -> c_int;
        setgid(libc::gid_t) -> c_int;
        seteuid(libc::uid_t) -> c_int;
        setegid(libc::gid_t) -> c_int;
        setreuid(libc::uid_t, libc::uid_t) -> c_int;
        setregid(libc::gid_t, libc::gid_t) -> c_int;
        setresuid(libc::uid_t, libc::uid_t, libc::uid_t) -> c_int;
        setresgid(libc::gid_t, libc::gid_t, libc::gid_t) -> c_int;
        setgroups(libc::size_t, *const libc::gid_t) -> c_int;
        dlclose(Ptr) -> c_int;
        // Unwind tables registered at run time (`unwind::registered_frames`).
        __register_frame(Ptr) -> ();
        __register_frame_table(Ptr) -> ();
        __register_frame_info(Ptr, Ptr) -> ();
        __register_frame_info_table(Ptr, Ptr) -> ();
        __register_frame_info_bases(Ptr, Ptr, Ptr, Ptr) -> ();
        __register_frame_info_table_bases(Ptr, Ptr, Ptr, Ptr) -> ();
    }
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
    let malloc = required(slot::malloc.symbol());
    let home = object_of(malloc.cast());
    for required_slot in [
        slot::free.symbol(),
        slot::calloc.symbol(),
        slot::realloc.symbol(),
        slot::posix_memalign.symbol(),
    ] {
        required_slot.store(required(required_slot));
    }
    // Now, before the optional lookups: a lookup that fails allocates its
    // message, which then comes from the next allocator, not the bootstrap
    // arena (its free, calloc and realloc are set above). An arena that never
    // handed out a block keeps `malloc_usable_size` at one test.
    slot::malloc.symbol().store(malloc);
    // Optional functions are taken only from the object that provides malloc:
    // mixing, say, glibc's pvalloc with jemalloc's free would corrupt the heap.
    let optional: [&NextSymbol; 10] = [
        slot::aligned_alloc.symbol(),
        slot::memalign.symbol(),
        slot::valloc.symbol(),
        slot::pvalloc.symbol(),
        slot::malloc_usable_size.symbol(),
        slot::mallocx.symbol(),
        slot::rallocx.symbol(),
        slot::xallocx.symbol(),
        slot::dallocx.symbol(),
        slot::sdallocx.symbol(),
    ];
    for slot in optional {
        if let Some(f) = defined_in(home, slot.name()) {
            slot.store(f.cast());
        }
    }
    STATE.store(READY, Ordering::Release);
    true
}

fn required(slot: &NextSymbol) -> *mut c_void {
    let f = lookup(Scope::Next, slot.name());
    if f.is_null() {
        missing(slot.name());
    }
    f
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
    slot::malloc.symbol().load().cast()
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
    DIVERTED_FROM.store(slot::malloc.symbol().load().cast(), Ordering::Relaxed);
    // SAFETY: the allocator's slots start at a function and only ever hold
    // one of their type.
    let before = unsafe {
        Diverted {
            malloc: slot::malloc.loaded(),
            posix_memalign: slot::posix_memalign.loaded(),
            usable: slot::malloc_usable_size.loaded(),
        }
    };
    let pairs: [(&NextSymbol, *mut c_void); 7] = [
        (slot::malloc.symbol(), heap.malloc as *mut c_void),
        (slot::free.symbol(), heap.free as *mut c_void),
        (slot::calloc.symbol(), heap.calloc as *mut c_void),
        (slot::realloc.symbol(), heap.realloc as *mut c_void),
        (
            slot::posix_memalign.symbol(),
            heap.posix_memalign as *mut c_void,
        ),
        (slot::memalign.symbol(), heap.memalign as *mut c_void),
        (slot::aligned_alloc.symbol(), heap.memalign as *mut c_void),
    ];
    for (slot, f) in pairs {
        slot.store(f);
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

    /// mmap's and munmap's slots start here until `mapped::table::init`
    /// looks them up at load: a call before that looks it up now.
    pub unsafe extern "C" fn mmap(
        addr: Ptr,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: libc::off_t,
    ) -> Ptr {
        // SAFETY: `look_up` returns mmap's next definition, of the slot's type.
        let f: unsafe extern "C" fn(Ptr, usize, c_int, c_int, c_int, libc::off_t) -> Ptr =
            unsafe { crate::sys::dl::function(slot::mmap.symbol().look_up()) };
        // SAFETY: the caller's arguments to mmap, unchanged.
        unsafe { f(addr, len, prot, flags, fd, off) }
    }

    pub unsafe extern "C" fn munmap(addr: Ptr, len: usize) -> c_int {
        // SAFETY: `look_up` returns munmap's next definition, of the slot's type.
        let f: unsafe extern "C" fn(Ptr, usize) -> c_int =
            unsafe { crate::sys::dl::function(slot::munmap.symbol().look_up()) };
        // SAFETY: the caller's arguments to munmap, unchanged.
        unsafe { f(addr, len) }
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
