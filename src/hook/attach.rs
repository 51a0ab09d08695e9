//! The library loaded into a running program (`scripts/leakprobe attach`):
//! the attach stub calls `dlopen` on one of the program's threads, at a call
//! of `malloc` (where the thread holds none of the allocator's or the
//! loader's locks) or on a thread the injector borrowed while it waited in a
//! system call neither of them makes, then `leakprobe_attach`. Symbol interposition does not
//! apply to a library loaded late, so the entry points are reached by
//! rewriting the GOT entries of every loaded object (`sys::got`), and of
//! those loaded later (the collector looks for them on each round).
//! Blocks allocated before the attach were never sampled: the filter byte
//! rules most out, and the live table finds none of them.
//! `scripts/leakprobe detach` asks the collector thread to restore every entry
//! and end (`collect::collector::detach`); the code stays mapped.

use crate::collect::collector;
use crate::hook::entry_points::ENTRY_POINTS;
use crate::sys::dl::{self, lookup, Own, Scope};
use core::ffi::{c_char, CStr};

/// What `scripts/leakprobe attach`'s stubs tell the library: `count` entries
/// of 16 bytes from `start`, and the value each stands for (the GOT entry it
/// replaced held it) at `originals`.
#[repr(C)]
pub struct Stubs {
    start: usize,
    count: usize,
    originals: *mut usize,
    /// Which function each stub's entry was (`STUBBED`).
    names: *const u8,
}

/// The functions whose GOT entries the stubs take, as `Stubs::names` numbers.
const STUBBED: [&CStr; 13] = [
    c"malloc",
    c"calloc",
    c"realloc",
    c"free",
    c"posix_memalign",
    c"aligned_alloc",
    c"mallocx",
    c"rallocx",
    c"dallocx",
    c"sdallocx",
    c"_Znwm",
    c"_ZdlPv",
    c"_ZdlPvm",
];

/// Not loaded late (preloaded, or the library's constructor has not run).
const NOT_LATE: i64 = -1;
/// Already attached.
const ATTACHED: i64 = -2;
/// The collector thread could not be started.
const NO_THREAD: i64 = -3;

/// Starts profiling in a program the library was loaded into late.
/// `settings` is `NAME=value` lines, as the environment would give them;
/// `stubs` (may be null) are the attach stubs. Returns the collector
/// thread's id, or a negative reason.
///
/// # Safety
/// `settings` is null or NUL-terminated; `stubs` is null or valid, with
/// `count` originals.
#[no_mangle]
pub unsafe extern "C" fn leakprobe_attach(settings: *const c_char, stubs: *const Stubs) -> i64 {
    if !dl::loaded_late() {
        return NOT_LATE;
    }
    if collector::attached() {
        return ATTACHED;
    }
    let text = if settings.is_null() {
        String::new()
    } else {
        // SAFETY: NUL-terminated (the contract).
        unsafe { CStr::from_ptr(settings) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: null or valid (the contract).
    let stubs = unsafe { stubs.as_ref() };
    let first = crate::settings::get().is_none();
    let cfg = crate::settings::init_attached(&text);
    if first {
        crate::start(cfg, false);
    } else {
        collector::restart(cfg);
    }
    let translate = |v: usize| match stubs {
        Some(s)
            if v >= s.start && (v - s.start).is_multiple_of(16) && (v - s.start) / 16 < s.count =>
        {
            // SAFETY: `count` originals (the contract), this index below it.
            unsafe { *s.originals.add((v - s.start) / 16) }
        }
        _ => v,
    };
    let rewritten = rewrite(&translate);
    if let Some(s) = stubs {
        // SAFETY: `count` originals and names (the contract).
        unsafe { forward_stubs(s) };
    }
    // Only now: a block sampled while some entry that frees it still
    // bypassed the library would stay live for ever.
    crate::sample::sampling::enable(cfg.sample_period);
    collector::set_attached(rescan);
    crate::profile::attached::set_now();
    crate::sys::log::log!(
        "attached: {rewritten} GOT entries rewritten, sample period {} bytes, dumps in {:?}, signal {}",
        cfg.sample_period,
        cfg.dir,
        crate::settings::signal_name(cfg.signal)
    );
    match collector::thread_id(std::time::Duration::from_secs(2)) {
        Some(tid) => {
            crate::profile::published::attached(Some(tid));
            i64::from(tid)
        }
        None => NO_THREAD,
    }
}

/// Functions interposed when preloaded to keep the dump signal blocked in
/// the program's threads (`hook::signals`): attached, the threads that ran
/// before keep their masks, the signal is sent to the collector thread alone,
/// and a mask changed for the library would outlive a detach.
const MASKS: [&[u8]; 20] = [
    b"pthread_sigmask",
    b"sigprocmask",
    b"sigsuspend",
    b"ppoll",
    b"pselect",
    b"epoll_pwait",
    b"epoll_pwait2",
    b"signalfd",
    b"sigwait",
    b"sigwaitinfo",
    b"sigtimedwait",
    b"execve",
    b"execv",
    b"execvp",
    b"execvpe",
    b"fexecve",
    b"posix_spawn",
    b"posix_spawnp",
    b"system",
    b"popen",
];

/// Rewrites the entries of every object for each function the library
/// interposes (`hook::entry_points`, what symbol interposition would have
/// reached), but the mask keepers (`MASKS`). The hooks' next definitions
/// are the program's own (`sys::dl::lookup` once loaded late): what the
/// entries held.
fn rewrite(translate: &dyn Fn(usize) -> usize) -> usize {
    let Some(own) = Own::open() else {
        return 0;
    };
    let replacement = |name: &CStr| {
        if MASKS.contains(&name.to_bytes()) {
            return None;
        }
        let entry = ENTRY_POINTS.iter().find(|e| e.name == name)?;
        // The next definition looked up now, not at the hook's first call
        // (which may come from inside the allocator, where the loader's
        // lock must not be taken); none, and the entry stays as it is.
        if let Some(next) = entry.next.filter(|n| n.load().is_null()) {
            let f = lookup(Scope::Next, name);
            if f.is_null() {
                return None;
            }
            next.store(f);
        }
        entry.hook(&own)
    };
    // In an order that never lets a block be sampled by an entry point while
    // one that frees it still bypasses the library: first the functions that
    // only release, then the others but the C++ operators, then `operator
    // delete`, then `operator new`. The operators last also because the
    // first call of one decides, once, whether the C++ runtime's operators
    // reach the library's `malloc` and `free` (`hook::cxx`).
    let mut rewritten = 0;
    for pass in [Pass::Releasing, Pass::Other, Pass::Delete, Pass::New] {
        rewritten += crate::sys::got::rewrite(
            &|name| {
                (Pass::of(name) == pass)
                    .then(|| replacement(name))
                    .flatten()
            },
            translate,
        );
    }
    rewritten
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Pass {
    Releasing,
    Other,
    Delete,
    New,
}

impl Pass {
    fn of(name: &CStr) -> Pass {
        const RELEASING: [&[u8]; 6] = [
            b"free",
            b"dallocx",
            b"sdallocx",
            b"munmap",
            b"shmdt",
            b"dlclose",
        ];
        let name = name.to_bytes();
        if name.starts_with(b"_Zd") {
            Pass::Delete
        } else if name.starts_with(b"_Zn") {
            Pass::New
        } else if RELEASING.contains(&name) {
            Pass::Releasing
        } else {
            Pass::Other
        }
    }
}

/// Points each stub at the library's hook instead of what its entry held:
/// that may be a lazy-binding PLT stub, whose resolver would write the
/// program's definition over the entry just rewritten (the call under way
/// that ran the attach goes there, as may calls that took the stub before
/// the rewrite; the collector's passes after the attach catch those).
///
/// # Safety
/// `s` has `count` originals and names.
unsafe fn forward_stubs(s: &Stubs) {
    let Some(own) = Own::open() else {
        return;
    };
    for i in 0..s.count {
        // SAFETY: below `count` (the contract).
        let which = unsafe { *s.names.add(i) };
        let Some(hook) = STUBBED
            .get(usize::from(which))
            .and_then(|n| own.definition(n))
        else {
            continue;
        };
        // SAFETY: below `count`, in the stub's writable data page; a word
        // store, so a thread taking the stub reads the old or the new one.
        unsafe {
            (*(s.originals.add(i) as *const core::sync::atomic::AtomicUsize))
                .store(hook, core::sync::atomic::Ordering::Release)
        };
    }
}

/// Objects loaded since: their entries too (from the collector thread).
fn rescan() {
    rewrite(&|v| v);
}

/// A JVM loading the library as an agent into a running VM (HotSpot's
/// attach mechanism: `jcmd PID JVMTI.agent_load`, `scripts/leakprobe attach`
/// on a JVM). `options` are the settings, `NAME=value` separated by commas.
/// 0 when attached (the JVM reports any other value as a failure).
///
/// # Safety
/// As the JVMTI specification: `options` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn Agent_OnAttach(
    _vm: *mut core::ffi::c_void,
    options: *const c_char,
    _reserved: *mut core::ffi::c_void,
) -> core::ffi::c_int {
    let text = if options.is_null() {
        String::new()
    } else {
        // SAFETY: NUL-terminated (the contract).
        unsafe { CStr::from_ptr(options) }
            .to_string_lossy()
            .replace(',', "\n")
    };
    let Ok(text) = std::ffi::CString::new(text) else {
        return 1;
    };
    // SAFETY: a NUL-terminated string; no stubs.
    let tid = unsafe { leakprobe_attach(text.as_ptr(), core::ptr::null()) };
    match tid {
        1.. => 0,
        NOT_LATE => 2,
        ATTACHED => 3,
        _ => 4,
    }
}
