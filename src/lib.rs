//! leakprobe: an `LD_PRELOAD` heap profiler for native memory leaks.
//!
//! The parts, each depending only on those listed after it:
//! - `hook`: the library's definitions of the functions it interposes:
//!   the allocator entry points (`alloc`, C++ `cxx`), the C API (`api`),
//!   signal dispositions, masks, waits and exec (`signals`), `dlclose`
//!   (`unload`), `fork`, mappings, segments, the break and thread stacks
//!   (`mapping`, `segments`, `threads`); and the table of every one
//!   (`entry_points`).
//! - `collect`: the background collector thread, fed by a lock-free `ring`;
//!   dump requests (`signal`) and fork handling.
//! - `mapped`: the table of sampled memory outside malloc (mappings,
//!   segments, the break, thread stacks): what an unmap gives back.
//! - `profile`: what a dump says: the heap text format (`dump`), the
//!   objects loaded and their build-ids, the allocator's and the process's
//!   numbers (`accounting`), what the profile cannot see (`blind`).
//! - `unwind`: stack capture, with a caching CFI unwinder.
//! - `next`: the next definition of every interposed function (the next
//!   allocator's among them), the bootstrap arena, and the library's own
//!   memory.
//! - `sample`: per-thread state, the byte countdown and Poisson sampling,
//!   the live table of sampled blocks.
//! - `settings`: the environment, parsed once.
//! - `sys`: the only part that calls libc or the kernel: clock, errno,
//!   locks, files, messages, the process, threads, signal masks, the
//!   loader's look-ups, raw system calls.
//!
//! An allocation: `hook::alloc` counts it down on `sample::thread_state`
//! and tail-calls `next`; at a sample point `sample::sampling` decides,
//! `unwind::stack` (and `unwind::frames`) captures the stack,
//! `sample::live` records the block (`mapped::table` a mapping) and
//! `collect::ring` carries the stack to `collect::collector`, which
//! interns it. A dump request (`collect::signal`, the C API, a timer) makes
//! the collector render `profile::dump` and hand it to its sinks
//! (`collect::sink`: the dump directory).

// Unit tests build the crate without its exported entry points.
#![cfg_attr(test, allow(dead_code))]
// Every unsafe operation in its own block, with the reason it holds there.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod collect;
#[cfg(not(test))]
mod hook;
mod mapped;
mod next;
mod profile;
mod sample;
mod settings;
mod sys;
mod unwind;

/// Runs when the dynamic loader maps the library, before `main`.
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

#[cfg(not(test))]
extern "C" fn init() {
    sys::dl::init_find_object();
    let late = sys::dl::detect_late_load();
    sys::log::note_stderr(late);
    // Loaded into a running program (`hook::attach`): nothing more until
    // `leakprobe_attach` gives the settings; the next symbols are the
    // program's own.
    if late {
        return;
    }
    next::resolve();
    start(settings::init(), true);
}

/// Everything after the next symbols are known: at load when preloaded, at
/// the first attach otherwise (where the program's threads are not made to
/// block the dump signal: it is sent to the collector thread alone).
#[cfg(not(test))]
fn start(cfg: &'static settings::Settings, preloaded: bool) {
    if !preloaded {
        next::resolve();
    }
    unwind::stack::init_own_range();
    hook::sampled::resolve_own_addresses();
    // Before the collector: its fork handlers must run first (see `mapped`).
    mapped::init();
    hook::threads::init();
    hook::segments::init();
    unwind::walk::init(cfg.unwinder == settings::Unwinder::Fast);
    if cfg.no_inherit && preloaded {
        settings::inherit::remove_from_preload();
    }
    unwind::frames::init(cfg);
    collect::single::register();
    collect::collector::start(cfg);
    // After the dump directory is open: the lines go to the log too. (An
    // attach rewrites the GOT entries that symbol interposition would miss.)
    if preloaded {
        profile::blind::check(profile::objects::program_path());
    }
    let signal = if collect::signal::install(cfg.signal) {
        // Attached, the program's threads keep their masks (`hook::attach`).
        if preloaded {
            hook::signals::install(cfg.signal);
        }
        cfg.signal
    } else {
        0
    };
    {
        use std::os::unix::ffi::OsStrExt;
        profile::published::init(cfg.dir.as_bytes(), signal);
    }
    if cfg.dump_at_exit {
        sys::process::at_exit(collect::collector::dump_at_exit);
    }
    // Attached, once every GOT entry is rewritten (`hook::attach`).
    if preloaded {
        sample::sampling::enable(cfg.sample_period);
    }
}
