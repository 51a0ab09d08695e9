//! The foundations every other part stands on: the clock, errno, a spin
//! lock, the doorbell that wakes the collector, files created safely,
//! one-line messages, signal masks of the library's own, the loader's
//! symbol look-ups, system calls without glibc (`raw`), and a word-keyed
//! hash map. Nothing here knows about
//! samples or dumps.

pub mod clock;
pub mod dl;
pub mod doorbell;
pub mod errno;
pub mod files;
pub mod lock;
pub mod log;
pub mod raw;
pub mod signals;
pub mod word_hash;
