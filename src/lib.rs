//! leakprobe: an `LD_PRELOAD` heap profiler for native memory leaks.
//!
//! The exported allocator entry points (`interpose`) count bytes down per
//! thread (`thread_state`) and forward to the next allocator (`next`). When the
//! countdown crosses zero (`sampling`) the allocation's stack is captured
//! (`stack`, with `unwind`), the pointer goes into the live table (`live`), and the stack goes
//! through a lock-free ring (`ring`) to the background collector
//! (`collector`), which interns stacks and writes dumps (`dump`) when asked by
//! a signal (`signal`).

// Unit tests build the crate without its exported entry points.
#![cfg_attr(test, allow(dead_code))]

mod accounting;
#[cfg(not(test))]
mod api;
mod blind;
mod bootstrap;
mod cfi;
mod clock;
mod collector;
mod config;
#[cfg(not(test))]
mod cxx;
mod doorbell;
mod dump;
mod errno;
mod files;
mod global_alloc;
mod inherit;
#[cfg(not(test))]
mod interpose;
mod java;
mod live;
mod lock;
mod log;
mod mapped;
mod next;
mod registered_frames;
mod ring;
mod sampling;
mod sigmask;
mod signal;
mod stack;
mod stack_bounds;
mod thread_stacks;
mod thread_state;
mod unload;
mod unwind;
mod word_hash;

/// Runs when the dynamic loader maps the library, before `main`.
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

#[cfg(not(test))]
extern "C" fn init() {
    log::note_stderr();
    next::resolve();
    stack::init_own_range();
    interpose::resolve_own_addresses();
    let cfg = config::Config::from_env();
    // Before the collector: its fork handlers must run first (see `mapped`).
    mapped::init();
    unwind::init(cfg.unwinder == config::Unwinder::Fast);
    if cfg.no_inherit {
        inherit::remove_from_preload();
    }
    if !cfg.java {
        java::disable();
    }
    collector::start(&cfg);
    // After the dump directory is open: the lines go to the log too.
    blind::check(dump::program_path());
    signal::install(cfg.signal);
    if cfg.peak {
        live::enable_peak_profile();
    }
    if cfg.dump_at_exit {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(collector::dump_at_exit) };
    }
    sampling::enable(cfg.sample_period);
}
