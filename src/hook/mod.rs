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
//! - `creds`: the `setuid` family (the single-threaded mode's helper follows).
//! - `mapping`, `segments`, `threads`: memory outside malloc (`mmap`,
//!   `mremap`, `munmap`; System V shared memory and the program break;
//!   thread stacks), tracked in `mapped::table`.
//! - `unwind_tables`: libgcc's `__register_frame` family.

pub mod alloc;
pub mod api;
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
