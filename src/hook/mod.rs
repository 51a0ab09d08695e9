//! The library's definitions of the functions it interposes; each does its
//! part and forwards to the next definition (`next::slot`). The table of
//! every interposed function, these and those `mapped` and `unwind` define,
//! is `entry_points`.
//! - `alloc`: the malloc family and jemalloc's `*allocx`: the hot path.
//! - `cxx`: C++ `operator new`/`delete`, every form.
//! - `sampled`: the sampled path they share: frame 0, recording a block,
//!   taking a freed one out of the live table.
//! - `api`: the C API (`include/leakprobe.h`).
//! - `signals`: dispositions, masks, waits and exec for the dump signal.
//! - `unload`: `dlclose`.
//! - `attach`: loaded into a running program: the GOT entries rewritten.
//! - `creds`: the `setuid` family (the single-threaded mode's helper follows).

pub mod alloc;
pub mod api;
pub mod attach;
pub mod creds;
pub mod cxx;
pub mod entry_points;
pub mod fork;
pub mod sampled;
pub mod signals;
pub mod unload;
