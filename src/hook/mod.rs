//! The library's definitions of every function it interposes; each does
//! its part and forwards to the next definition (`next::slot`). The table
//! of them all is `entry_points`.
//! - `alloc`: the malloc family and jemalloc's `*allocx`: the hot path.
//! - `cxx`: C++ `operator new`/`delete`, every form.
//! - `sampled`: the sampled path they share: frame 0, recording a block,
//!   taking a freed one out of the live table.
//! - `api`: the C API (`include/leakprobe.h`).
//! - `signals`: dispositions, masks, waits and exec for the dump signal.
//! - `unload`: `dlclose`.
//! - `attach`: loaded into a running program: the GOT entries rewritten.
//! - `creds`: the `setuid` family (the single-threaded mode's helper follows).
//! - `mapping`, `segments`, `threads`: memory outside malloc (`mmap`,
//!   `mremap`, `munmap`; System V shared memory and the program break;
//!   thread stacks), tracked in `mapped::table`.
//! - `unwind_tables`: libgcc's `__register_frame` family.

/// An interposed function that only has something to do before
/// (`before`) or after (`then`, given the result) the next definition,
/// which gets the program's arguments unchanged: the one shape of
/// `creds`, `threads`' joins and detach, and `unwind_tables`.
macro_rules! forwarding {
    (
        $(#[$doc:meta])*
        $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty,
        before = $before:expr,
        then = $then:expr
    ) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As the C function.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            #[allow(clippy::redundant_closure_call)]
            ($before)();
            // SAFETY: the program's arguments, unchanged (the contract).
            let r = unsafe { crate::next::slot::$name.get()($($arg),*) };
            #[allow(clippy::redundant_closure_call)]
            ($then)(&r);
            r
        }
    };
}

pub mod alloc;
pub mod api;
pub mod attach;
pub mod creds;
pub mod cxx;
pub mod entry_points;
pub mod fork;
pub mod mapping;
pub mod sampled;
pub mod segments;
pub mod signals;
pub mod threads;
pub mod unload;
pub mod unwind_tables;
