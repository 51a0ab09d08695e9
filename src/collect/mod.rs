//! The background collector: one thread that takes sampled stacks from the
//! `ring`, interns them, answers dump requests (`request`; `signal`: the dump signal's
//! handler and the program's disposition of it) and writes dumps to its
//! sinks (`sink`: the dump directory, and where others plug in), and keeps
//! a forked child's profile whole.

pub mod collector;
pub mod mode;
pub mod request;
pub mod ring;
pub mod signal;
pub mod single;
pub mod sink;
