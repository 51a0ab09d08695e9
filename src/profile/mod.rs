//! What a dump holds: the heap text format both jeprof and pprof read
//! (`dump`), the objects loaded and their build-ids (`objects`), the
//! checked dump directory and its atomic writes (`dumpdir`), the process's and the allocator's own numbers (`accounting`),
//! what the profile cannot see (`blind`), objects unloaded since
//! (`unloaded`), the record `scripts/leakprobe dump` reads
//! (`published`), when the library was attached to a running program
//! (`attached`).

pub mod accounting;
pub mod attached;
pub mod blind;
pub mod dump;
pub mod dumpdir;
pub mod objects;
pub mod published;
pub mod unloaded;
