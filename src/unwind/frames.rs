//! Frame sources: where a sample's frames come from. The native frames are
//! the walk's (`stack::capture`: the caching CFI unwinder, libgcc's as
//! fallback); frames of code the walk cannot see (a VM's or an
//! interpreter's: Java today) come from the sources in `SOURCES`, each
//! appended after the native frames. Everything else, the sampled path, the
//! mappings' stacks, the collector and the dump, calls this module only.
//!
//! A source marks its frames as words no native address can be (Java: bit
//! 62 set, `java::encode`), names them for the dump on `#` lines that jeprof
//! and pprof skip, and must tell its words from another source's.
//!
//! To plug in a source: a `static FrameSource` (`frame_source`) of its
//! functions in its own module, and one line in `SOURCES`. The list is a constant, so the
//! sampled path's calls through it are direct calls, inlined like the one
//! Java call it replaced.

use crate::settings::Settings;
pub use crate::unwind::frame_source::{set_drain, FrameSource, Lines};
use crate::unwind::stack::Stack;
use core::time::Duration;

/// The sources, in the order their frames are appended.
const SOURCES: &[&FrameSource] = &[&crate::unwind::java::FRAMES];

/// Once at load, before sampling starts.
pub fn init(cfg: &Settings) {
    for s in SOURCES {
        (s.init)(cfg);
    }
}

/// Appends every source's frames of the calling thread to `stack`, which
/// holds its native frames. On the sampled path. True if the collector
/// should be woken to name frames.
#[inline(always)]
pub fn append(stack: &mut Stack, max_len: usize) -> bool {
    let mut wake = false;
    for s in SOURCES {
        wake |= (s.append)(stack, max_len);
    }
    wake
}

pub fn note_stack(frames: &[usize]) {
    for s in SOURCES {
        (s.note_stack)(frames);
    }
}

pub fn poll() {
    for s in SOURCES {
        (s.poll)();
    }
}

pub fn idle_wait(idle: Duration) -> Duration {
    SOURCES.iter().fold(idle, |wait, s| (s.idle_wait)(wait))
}

pub fn frame_lines(stacks: &[&[usize]]) -> Lines {
    SOURCES
        .iter()
        .flat_map(|s| (s.frame_lines)(stacks))
        .collect()
}

pub fn facts() -> Lines {
    SOURCES.iter().flat_map(|s| (s.facts)()).collect()
}
