//! Per-thread state. Zero-initialised with no destructor, so a thread's first
//! allocator call (even a `free`) needs no set-up, and nothing is left behind
//! when a thread exits.

use core::cell::Cell;

/// Slow-path state: read only once the countdown has run out.
pub struct ThreadState {
    /// Set while the library works on this thread's behalf (or for good on
    /// the collector thread): nested allocations are never sampled.
    pub busy: Cell<bool>,
    /// xorshift state; zero means "not seeded yet".
    pub rng: Cell<u64>,
    /// The mapping this thread's stack lives in, once looked up (`stack_bounds`).
    pub stack: Cell<(usize, usize)>,
    pub stack_scans: Cell<u8>,
    /// Whether the program asked for the dump signal to be blocked on this
    /// thread (`sigmask`): the kernel's mask may differ, this is the
    /// program's view. A new thread starts with it unblocked.
    pub app_blocks_dump: Cell<bool>,
    /// The collector thread: the program's handler for the dump signal never
    /// runs here (`collect::signal`).
    pub collector: Cell<bool>,
}

impl ThreadState {
    /// A new thread's state (`rng` 0: not seeded yet).
    pub const fn new(rng: u64) -> ThreadState {
        ThreadState {
            busy: Cell::new(false),
            rng: Cell::new(rng),
            stack: Cell::new((0, 0)),
            stack_scans: Cell::new(0),
            app_blocks_dump: Cell::new(false),
            collector: Cell::new(false),
        }
    }
}

thread_local! {
    static STATE: ThreadState = const { ThreadState::new(0) };
}

// No destructor: `with` then never fails (a thread-local with one can be
// reached after it is destroyed, and `with` would panic on the malloc path).
const _: () = assert!(!core::mem::needs_drop::<ThreadState>());

pub fn with<R>(f: impl FnOnce(&ThreadState) -> R) -> R {
    STATE.with(f)
}

/// Counts `size` bytes down. True when the allocation reaches the next sample
/// point and must take the slow path; the countdown is then left as is.
///
/// The countdown is zero in a new thread, so its first allocation takes the
/// slow path, which draws the first gap.
#[inline(always)]
pub fn crosses(size: usize) -> bool {
    countdown::crosses(countdown::slot(), size)
}

/// Bytes left before this thread's next sample point.
pub fn until_sample() -> usize {
    countdown::get(countdown::slot())
}

pub fn set_until_sample(bytes: usize) {
    countdown::set(countdown::slot(), bytes);
}

/// The countdown lives in static TLS reached with the initial-exec model: one
/// load of its offset and one %fs-relative access, where a Rust `cdylib`'s
/// `thread_local!` calls `__tls_get_addr` on every access. Stable Rust cannot
/// choose a TLS model, so the variable and its two accessors are assembly.
#[cfg(target_arch = "x86_64")]
mod countdown {
    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".hidden leakprobe_until_sample",
        ".globl leakprobe_until_sample",
        ".type leakprobe_until_sample,@object",
        ".size leakprobe_until_sample,8",
        "leakprobe_until_sample:",
        ".zero 8",
        ".popsection",
    );

    /// This thread's countdown, as an offset from the thread pointer.
    #[inline(always)]
    pub fn slot() -> usize {
        let off: usize;
        // SAFETY: reads the GOT slot in which the loader put the variable's
        // offset from the thread pointer; it never changes.
        unsafe {
            core::arch::asm!(
                "mov {off}, qword ptr [rip + leakprobe_until_sample@GOTTPOFF]",
                off = out(reg) off,
                options(pure, readonly, nostack, preserves_flags),
            )
        };
        off
    }

    #[inline(always)]
    pub fn get(off: usize) -> usize {
        let value: usize;
        // SAFETY: %fs:offset is this thread's 8-byte, 8-aligned variable.
        unsafe {
            core::arch::asm!(
                "mov {value}, qword ptr fs:[{off}]",
                value = out(reg) value,
                off = in(reg) off,
                options(readonly, nostack, preserves_flags),
            )
        };
        value
    }

    #[inline(always)]
    pub fn set(off: usize, value: usize) {
        // SAFETY: as in `get`; only this thread writes its own copy.
        unsafe {
            core::arch::asm!(
                "mov qword ptr fs:[{off}], {value}",
                value = in(reg) value,
                off = in(reg) off,
                options(nostack, preserves_flags),
            )
        };
    }

    /// `super::crosses` in one instruction and a branch: the subtraction
    /// in memory sets the flags (Rust's own load, compare and store take
    /// three); a crossing one is undone on the slow path.
    #[inline(always)]
    pub fn crosses(off: usize, size: usize) -> bool {
        // SAFETY: as in `get`; only this thread writes its own copy. The
        // label is reached with the countdown `size` lower, wrapped.
        unsafe {
            core::arch::asm!(
                "sub qword ptr fs:[{off}], {size}",
                "jbe {crossed}",
                off = in(reg) off,
                size = in(reg) size,
                crossed = label {
                    set(off, get(off).wrapping_add(size));
                    return true;
                },
                options(nostack),
            )
        };
        false
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod countdown {
    use core::cell::Cell;

    thread_local! {
        static UNTIL_SAMPLE: Cell<usize> = const { Cell::new(0) };
    }

    /// Unused here: `thread_local!` finds the variable itself.
    #[inline(always)]
    pub fn slot() -> usize {
        0
    }

    #[inline(always)]
    pub fn get(_: usize) -> usize {
        UNTIL_SAMPLE.get()
    }

    #[inline(always)]
    pub fn set(_: usize, value: usize) {
        UNTIL_SAMPLE.set(value)
    }

    #[inline(always)]
    pub fn crosses(off: usize, size: usize) -> bool {
        let left = get(off);
        let crossed = size >= left;
        if !crossed {
            set(off, left - size);
        }
        crossed
    }
}
