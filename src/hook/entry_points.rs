//! Every function the library interposes, in one table: its name, the
//! library's definition (the hook, exported under that name, so symbol
//! interposition under `LD_PRELOAD` reaches it) and where the next
//! definition lives (`next::slot`, which the hook calls). A loader that
//! cannot rely on the lookup order (a GOT rewriter, for a library loaded
//! into a running process) iterates `ENTRY_POINTS`: for each entry, point
//! other objects' references to `name` at `hook(&own)`, and store what they
//! pointed at in `next`.
//!
//! The hook is found by name in the library's own object (`sys::dl::Own`),
//! not taken as `malloc as *const ()`: the library refers to its exported
//! functions through the loader, which, for a library loaded after libc,
//! resolves them to libc's.
//!
//! The build checks that each hook has its slot's C type, and
//! `tests/entry_points.rs` that the table names every function the library
//! exports (but its own C API) and nothing else.

use crate::hook::{
    alloc, creds, cxx, fork, mapping, segments, signals, threads, unload, unwind_tables,
};
use crate::next;
use crate::sys::dl::{NextSymbol, Own};
use core::ffi::CStr;

/// One interposed function.
pub struct EntryPoint {
    pub name: &'static CStr,
    /// Where the next definition lives; None for a function the library
    /// implements on others without calling its next definition
    /// (`reallocarray` on `realloc`, `execl`/`execle`/`execlp` on `execv`,
    /// `execve`, `execvp`).
    pub next: Option<&'static NextSymbol>,
}

impl EntryPoint {
    /// The library's own definition (its hook), of the function's C type.
    pub fn hook(&self, own: &Own) -> Option<usize> {
        own.definition(self.name)
    }
}

/// `module::function`, whose next definition is in the slot of the same
/// name (or of the one after `=>`), or none (`own`).
macro_rules! entry_points {
    (
        next: { $($m:ident::$name:ident $(=> $slot:ident)?,)* }
        own: { $($own_m:ident::$own:ident,)* }
    ) => {
        pub static ENTRY_POINTS: [EntryPoint; [$(stringify!($name),)* $(stringify!($own),)*].len()] = [
            $(EntryPoint {
                name: crate::sys::dl::c_name(concat!(stringify!($name), "\0").as_bytes()),
                next: Some(entry_points!(@slot $name $($slot)?).hooked_by($m::$name)),
            },)*
            $(EntryPoint {
                name: crate::sys::dl::c_name(concat!(stringify!($own), "\0").as_bytes()),
                next: {
                    let _: *const () = $own_m::$own as *const ();
                    None
                },
            },)*
        ];
    };
    (@slot $name:ident) => { next::slot::$name };
    (@slot $name:ident $slot:ident) => { next::slot::$slot };
}

entry_points! {
    next: {
    // The allocator (`alloc`, the hot path; C++ `cxx`).
    alloc::malloc,
    alloc::free,
    alloc::calloc,
    alloc::realloc,
    alloc::posix_memalign,
    alloc::aligned_alloc,
    alloc::memalign,
    alloc::valloc,
    alloc::pvalloc,
    alloc::malloc_usable_size,
    alloc::mallocx,
    alloc::rallocx,
    alloc::xallocx,
    alloc::dallocx,
    alloc::sdallocx,
    cxx::_Znwm,
    cxx::_Znam,
    cxx::_ZnwmRKSt9nothrow_t,
    cxx::_ZnamRKSt9nothrow_t,
    cxx::_ZnwmSt11align_val_t,
    cxx::_ZnamSt11align_val_t,
    cxx::_ZnwmSt11align_val_tRKSt9nothrow_t,
    cxx::_ZnamSt11align_val_tRKSt9nothrow_t,
    cxx::_ZdlPv,
    cxx::_ZdaPv,
    cxx::_ZdlPvm,
    cxx::_ZdaPvm,
    cxx::_ZdlPvRKSt9nothrow_t,
    cxx::_ZdaPvRKSt9nothrow_t,
    cxx::_ZdlPvSt11align_val_t,
    cxx::_ZdaPvSt11align_val_t,
    cxx::_ZdlPvmSt11align_val_t,
    cxx::_ZdaPvmSt11align_val_t,
    cxx::_ZdlPvSt11align_val_tRKSt9nothrow_t,
    cxx::_ZdaPvSt11align_val_tRKSt9nothrow_t,
    // Memory outside malloc (`mapping`, `segments`, `threads`).
    mapping::mmap,
    mapping::mmap64 => mmap,
    mapping::munmap,
    mapping::mremap,
    segments::shmat,
    segments::shmdt,
    segments::brk,
    segments::sbrk,
    threads::pthread_create,
    threads::pthread_join,
    threads::pthread_tryjoin_np,
    threads::pthread_timedjoin_np,
    threads::pthread_clockjoin_np,
    threads::pthread_detach,
    // The dump signal (`signals`).
    signals::sigaction,
    signals::signal,
    signals::bsd_signal,
    signals::sysv_signal,
    signals::pthread_sigmask,
    signals::sigprocmask,
    signals::sigsuspend,
    signals::ppoll,
    signals::pselect,
    signals::epoll_pwait,
    signals::epoll_pwait2,
    signals::sigwait,
    signals::sigwaitinfo,
    signals::sigtimedwait,
    signals::signalfd,
    signals::raise,
    signals::pthread_kill,
    signals::pthread_sigqueue,
    signals::tgkill,
    signals::execve,
    signals::execv,
    signals::execvp,
    signals::execvpe,
    signals::fexecve,
    signals::posix_spawn,
    signals::posix_spawnp,
    signals::system,
    signals::popen,
    // The process.
    fork::fork,
    creds::setuid,
    creds::setgid,
    creds::seteuid,
    creds::setegid,
    creds::setreuid,
    creds::setregid,
    creds::setresuid,
    creds::setresgid,
    creds::setgroups,
    unload::dlclose,
    // Unwind tables registered at run time (`unwind_tables`).
    unwind_tables::__register_frame,
    unwind_tables::__register_frame_table,
    unwind_tables::__register_frame_info,
    unwind_tables::__register_frame_info_table,
    unwind_tables::__register_frame_info_bases,
    unwind_tables::__register_frame_info_table_bases,
    }
    own: {
        alloc::reallocarray,
        signals::execl,
        signals::execle,
        signals::execlp,
    }
}
