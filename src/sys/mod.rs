//! The foundations every other part stands on, and the only place that
//! calls libc's functions or makes system calls: the clock, errno, a spin
//! lock, the doorbell that wakes the collector, files created safely,
//! one-line messages, the process (auxiliary vector, environment, users,
//! fork and exit handlers), threads' attributes and keys, signal masks of
//! the library's own, the loader's
//! symbol look-ups and the GOT entries rewritten for an attach, system
//! calls without glibc (`raw`), a word-keyed hash map, and text from outside
//! made safe for one line (`escape`). Nothing here knows about samples or dumps.

pub mod clock;
pub mod dl;
pub mod doorbell;
pub mod errno;
pub mod escape;
pub mod files;
pub mod got;
pub mod lock;
pub mod log;
pub mod process;
pub mod raw;
pub mod signals;
pub mod threads;
pub mod word_hash;
