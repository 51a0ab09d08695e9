//! Where the calling thread's stack ends, so that the unwinder reads nothing
//! outside memory known to be mapped. The main thread's stack runs up past
//! `__libc_stack_end`; another thread's stack is looked up once in
//! /proc/self/maps (raw system calls, no allocation) and kept in its
//! thread-local state.

use crate::sample::thread_state;
use core::sync::atomic::{AtomicUsize, Ordering};

/// `__libc_stack_end` (0: unknown) and how far below it the main stack may reach.
static MAIN_END: AtomicUsize = AtomicUsize::new(0);
static MAIN_REACH: AtomicUsize = AtomicUsize::new(0);

/// Look-ups per thread: a thread whose stack pointer keeps moving between
/// stacks (fibers, a signal stack) stops paying for them, and the stacks
/// it is not known by go to libgcc.
const MAX_SCANS: u8 = 8;

/// Reads `__libc_stack_end` and the stack size limit. Runs once at load.
pub fn init() {
    let p = crate::sys::dl::lookup(crate::sys::dl::Scope::Global, c"__libc_stack_end");
    if p.is_null() {
        return;
    }
    // SAFETY: ld.so's `void *__libc_stack_end`, set before any constructor
    // runs.
    let end = unsafe { *(p as *const usize) };
    // The kernel keeps mappings at least 128 MiB below the stack's top.
    let limit = crate::sys::process::stack_limit().unwrap_or(0);
    let reach = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .clamp(8 << 20, 128 << 20);
    MAIN_REACH.store(reach, Ordering::Relaxed);
    // The stack's mapping runs at least to the end of that page (argv and the
    // environment lie above), which also covers the few words a program
    // started as `ld.so ./program` has above it.
    // ld.so's word, read: wrapping, so a bad one means "unknown" (0).
    MAIN_END.store((end | 4095).wrapping_add(1), Ordering::Relaxed);
}

/// The end of the readable memory above `sp`, when `sp` is on the calling
/// thread's own stack; `None` when that is not known.
pub fn top(sp: usize) -> Option<usize> {
    let main_end = MAIN_END.load(Ordering::Relaxed);
    if sp < main_end && main_end - sp < MAIN_REACH.load(Ordering::Relaxed) {
        return Some(main_end);
    }
    thread_state::with(|s| {
        let (lo, hi) = s.stack.get();
        if lo <= sp && sp < hi {
            return Some(hi);
        }
        if s.stack_scans.get() >= MAX_SCANS {
            return None;
        }
        s.stack_scans.set(s.stack_scans.get().saturating_add(1));
        let (new_lo, new_hi) = mapping_containing(sp)?;
        s.stack.set((new_lo, new_hi));
        Some(new_hi)
    })
}

/// The mapping of /proc/self/maps that contains `addr`. Raw system calls,
/// which leave `errno` as it was: this runs inside the program's `malloc`.
pub fn mapping_containing(addr: usize) -> Option<(usize, usize)> {
    let mut scan = Scan::default();
    let mut buf = [0u8; 1024];
    crate::sys::raw::scan_file(c"/proc/self/maps", &mut buf, |read| {
        read.iter().find_map(|&b| scan.feed(b, addr))
    })
    .flatten()
}

/// A parser of `start-end ...` lines, a byte at a time.
#[derive(Default)]
struct Scan {
    field: u8,
    start: usize,
    end: usize,
}

impl Scan {
    /// `Some(Some(range))`: the mapping holding `addr`; `Some(None)`: no
    /// mapping holds it (the map is sorted and went past it).
    fn feed(&mut self, b: u8, addr: usize) -> Option<Option<(usize, usize)>> {
        let digit = (b as char).to_digit(16).map(|d| d as usize);
        match (self.field, digit) {
            (0, Some(d)) => self.start = self.start.wrapping_mul(16).wrapping_add(d),
            (0, None) if b == b'-' => self.field = 1,
            (1, Some(d)) => self.end = self.end.wrapping_mul(16).wrapping_add(d),
            (1, None) => {
                if self.start > addr {
                    return Some(None);
                }
                if addr < self.end {
                    return Some(Some((self.start, self.end)));
                }
                self.field = 2;
            }
            (_, _) if b == b'\n' => *self = Scan::default(),
            _ => self.field = 2,
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mapping_of_a_local() {
        let local = 0u64;
        let at = &local as *const u64 as usize;
        let (lo, hi) = mapping_containing(at).expect("the stack is mapped");
        assert!(lo <= at && at < hi);
        assert_eq!(mapping_containing(8), None);
    }

    #[test]
    fn parses_lines() {
        let mut scan = Scan::default();
        let maps = b"1000-2000 r-xp 0 0 0 /bin/x\n3000-5000 rw-p 0 0 0\n";
        let found = maps.iter().find_map(|&b| scan.feed(b, 0x4000));
        assert_eq!(found, Some(Some((0x3000, 0x5000))));
        let mut scan = Scan::default();
        assert_eq!(maps.iter().find_map(|&b| scan.feed(b, 0x2800)), Some(None));
    }
}
