//! Deciding what to sample and remembering it: per-thread state and the
//! byte countdown (`thread_state`), Poisson gaps and the un-sampling that
//! inverts them (`sampling`), and the table of sampled blocks still live
//! (`live`).

pub mod live;
pub mod sampling;
pub mod thread_state;
