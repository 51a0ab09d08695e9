//! Frame sources: where a sample's frames come from. The native frames are
//! the walk's (`stack::capture`: the caching CFI unwinder, libgcc's as
//! fallback); frames of code the walk cannot see (a VM's or an
//! interpreter's: Java, Python) come from the sources in `SOURCES`, each
//! appended after the native frames (Python's in place of the eval loop's). Everything else, the sampled path, the
//! mappings' stacks, the collector and the dump, calls this module only.
//!
//! A source marks its frames as words no native address can be (Java: bit
//! 62 set, `java::encode`), names them for the dump on `#` lines that jeprof
//! and pprof skip, and must tell its words from another source's.
//!
//! To plug in a source: a `static FrameSource` of its functions in its own
//! module, and one line in `SOURCES`. The list is a constant, so the
//! sampled path's calls through it are direct calls, inlined like the one
//! Java call it replaced.

use crate::settings::Settings;
use crate::unwind::stack::Stack;
use core::time::Duration;

/// `#` lines of a dump, as (key, value).
pub type Lines = Vec<(&'static str, String)>;

/// One source of frames beyond the native walk, as functions.
pub struct FrameSource {
    /// Once at load, with the settings. A source they turn off stays
    /// listed: its facts then say it saw nothing.
    pub init: fn(&Settings),
    /// On the sampled path, after the native walk (`stack` holds those
    /// frames, at most `max_len` in all): appends this thread's frames of
    /// the source, if it has any. No allocation, no lock the program may
    /// hold. True if the collector should be woken once the sample is
    /// queued (to name frames it may not know yet).
    pub append: fn(stack: &mut Stack, max_len: usize) -> bool,
    /// On the collector: a stack seen for the first time (interned, or a
    /// mapping's), which may hold the source's frames to name.
    pub note_stack: fn(frames: &[usize]),
    /// On the collector, every round: set-up, and naming what was noted.
    pub poll: fn(),
    /// How long the idle collector may sleep (`idle`, or less while the
    /// source is being set up).
    pub idle_wait: fn(idle: Duration) -> Duration,
    /// The dump's `#` lines naming the source's frames among `stacks`.
    pub frame_lines: fn(stacks: &[&[usize]]) -> Lines,
    /// The dump's facts about the source (stacks it gave frames to, ...).
    pub facts: fn() -> Lines,
}

/// The sources, in the order their frames are appended.
const SOURCES: &[&FrameSource] = &[&crate::unwind::java::FRAMES, &crate::unwind::python::FRAMES];

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

/// The collector's way to intern what its ring holds now (`set_drain`).
static DRAIN: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Called by the collector with the function that interns what its ring
/// holds, for a source whose names go away (a VM about to exit: stacks
/// sampled since the collector's last round are named while it answers).
pub fn set_drain(drain: fn()) {
    let _ = DRAIN.set(drain);
}

/// Interns what the collector's ring holds now (see `set_drain`).
pub fn drain() {
    if let Some(drain) = DRAIN.get() {
        drain();
    }
}
