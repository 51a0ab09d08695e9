//! Stack capture: `stack` is what the sampled path calls; `walk` is the
//! caching unwinder (CFI rules from `cfi`, reads bounded by `stack_bounds`);
//! libgcc's unwinder is the fallback, unless unwind tables were registered
//! at run time (`registered_frames`). Frames the native walk cannot see come
//! from the sources `frames` lists: in JVMs, `java` adds the Java frames,
//! and `jni_callin` the native frames below them on threads that called into
//! Java through JNI.

pub mod cfi;
pub mod frame_source;
pub mod frames;
pub mod java;
pub mod jni_callin;
pub mod registered_frames;
pub mod stack;
pub mod stack_bounds;
pub mod walk;
