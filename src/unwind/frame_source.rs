//! What a frame source is (`unwind::frames` lists them): its functions,
//! and the collector's drain a source may call.

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
