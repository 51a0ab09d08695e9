//! The unwinder for sampled stacks on x86_64. Each return address's CFI rule
//! is worked out once (`cfi`) and kept in a lock-free cache, so a frame costs
//! a cache probe and one or two stack reads, where libgcc interprets the CFI
//! anew at every frame (about 1,600 instructions). Every stack read is
//! checked against the thread's stack bounds (`stack_bounds`). A frame whose
//! CFI it does not follow ends the walk as `Stopped`.

/// How far a walk got.
#[derive(Debug, PartialEq, Eq)]
pub enum Walk {
    /// To the outermost frame, to code no loaded object has CFI for (JIT
    /// code: libgcc stops there too), or until `frame` said stop.
    Complete,
    /// Short of that: at a frame it does not follow, or at once (the
    /// stack's bounds unknown). The frames passed so far are right.
    Stopped,
}

/// Whether this unwinder is used (`LEAKPROBE_UNWIND=fast`, the default).
pub fn init(enabled: bool) {
    imp::init(enabled)
}

/// Whether it is on and can run here (x86_64, glibc >= 2.35).
pub fn enabled() -> bool {
    imp::enabled()
}

/// Walks the calling thread's stack, innermost frame first, passing each
/// frame's address to `frame` until it returns false.
#[inline(never)]
pub fn walk(frame: &mut dyn FnMut(usize) -> bool) -> Walk {
    imp::walk(frame)
}

/// Walks the calling thread's stack from a caller's frame recorded earlier
/// (the return address into it, the stack pointer after that return, and
/// its %rbp), still live on this stack above the caller of this function.
/// True only if it reached the outermost frame (the thread's start), which
/// proves that no frame without CFI, such as JIT code, lies below.
#[inline(never)]
pub fn walk_from(ra: usize, sp: usize, bp: usize, frame: &mut dyn FnMut(usize) -> bool) -> bool {
    imp::walk_from(ra, sp, bp, frame)
}

/// Forgets every rule, after code was unmapped (its addresses may be reused).
pub fn forget() {
    imp::forget()
}

/// Bytes of the rule cache.
pub fn cache_bytes() -> usize {
    imp::CACHE_BYTES
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::Walk;
    use crate::sys::dl;
    use crate::unwind::cfi::{self, Rule};
    use crate::unwind::stack_bounds;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// Whether the caching unwinder is on (`LEAKPROBE_UNWIND=fast` and
    /// glibc's `_dl_find_object`).
    static ENABLED: AtomicBool = AtomicBool::new(false);

    /// After `sys::dl::init_find_object`.
    pub fn init(enabled: bool) {
        if enabled && dl::can_find_objects() {
            stack_bounds::init();
            ENABLED.store(true, Ordering::Release);
        }
    }

    /// Rules by return address: direct-mapped, one word an entry (`pack`),
    /// so a reader sees either a whole entry or none.
    const CACHE_BITS: u32 = 14;
    pub const CACHE_BYTES: usize = 8 << CACHE_BITS;
    static CACHE: [AtomicU64; 1 << CACHE_BITS] = [const { AtomicU64::new(0) }; 1 << CACHE_BITS];

    pub fn forget() {
        for entry in &CACHE {
            entry.store(0, Ordering::Relaxed);
        }
    }

    /// Offsets in the `ucontext_t` at a signal frame's stack pointer of the
    /// interrupted %rbp, %rsp and %rip (`uc_mcontext.gregs` starts at 40).
    const UC_RBP: usize = 40 + 8 * 10;
    const UC_RSP: usize = 40 + 8 * 15;
    const UC_RIP: usize = 40 + 8 * 16;

    pub fn enabled() -> bool {
        ENABLED.load(Ordering::Acquire)
    }

    /// How a walk ended.
    enum End {
        /// At the outermost frame (its return address undefined).
        Outermost,
        /// At code without CFI (JIT code), a broken chain, or as `frame` said.
        Complete,
        /// At a frame whose CFI it does not follow.
        Stopped,
    }

    pub fn walk(frame: &mut dyn FnMut(usize) -> bool) -> Walk {
        if !enabled() {
            return Walk::Stopped;
        }
        let (pc, sp, bp): (usize, usize, usize);
        // SAFETY: reads this function's own registers at this instruction,
        // whose CFI then describes how to find its caller.
        unsafe {
            core::arch::asm!(
                "lea {pc}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                pc = out(reg) pc,
                sp = out(reg) sp,
                bp = out(reg) bp,
                options(nomem, nostack, preserves_flags),
            )
        };
        let Some(top) = stack_bounds::top(sp) else {
            return Walk::Stopped;
        };
        // Our own frame's rule is at `pc` itself, as is an interrupted
        // frame's; a caller's at its call, just before the return address.
        match walk_stack(pc, sp, bp, pc, top, frame) {
            End::Outermost | End::Complete => Walk::Complete,
            End::Stopped => Walk::Stopped,
        }
    }

    pub fn walk_from(
        ra: usize,
        sp: usize,
        bp: usize,
        frame: &mut dyn FnMut(usize) -> bool,
    ) -> bool {
        if !enabled() {
            return false;
        }
        let here: usize;
        // SAFETY: reads the stack pointer.
        unsafe {
            core::arch::asm!("mov {}, rsp", out(reg) here, options(nomem, nostack, preserves_flags))
        };
        // The recorded frame must lie on this stack, above this function's,
        // and still be there: its return address in its slot.
        let Some(top) = stack_bounds::top(here).filter(|&top| sp > here + 8 && sp <= top) else {
            return false;
        };
        // SAFETY: inside [here, top): this thread's mapped stack.
        if unsafe { core::ptr::read_unaligned((sp - 8) as *const usize) } != ra {
            return false;
        }
        matches!(
            walk_stack(ra, sp, bp, ra.wrapping_sub(1), top, frame),
            End::Outermost
        )
    }

    /// Walks from the frame at `pc` with stack pointer `sp` and frame
    /// pointer `bp` (`at`: where its rule is looked up) on the stack whose
    /// mapped end is `top`.
    fn walk_stack(
        mut pc: usize,
        mut sp: usize,
        mut bp: usize,
        mut at: usize,
        top: usize,
        frame: &mut dyn FnMut(usize) -> bool,
    ) -> End {
        // The stack being walked: [bottom, top) is mapped (this thread's
        // stack from a live stack pointer up to its end).
        let (mut bottom, mut top) = (sp, top);
        let read = |at: usize, bottom: usize, top: usize| -> Option<usize> {
            let inside = at >= bottom && at.checked_add(8)? <= top;
            // SAFETY: inside [bottom, top), mapped as said above.
            inside.then(|| unsafe { core::ptr::read_unaligned(at as *const usize) })
        };
        loop {
            if !frame(pc) {
                return End::Complete;
            }
            let (cfa_rbp, cfa_offset, rbp_slot) = match rule(at) {
                Rule::Frame {
                    cfa_rbp,
                    cfa_offset,
                    rbp_slot,
                } => (cfa_rbp, cfa_offset, rbp_slot),
                Rule::End => return End::Outermost,
                Rule::Missing => return End::Complete,
                Rule::Unsupported => return End::Stopped,
                Rule::Signal => {
                    let saved = |off| read(sp.checked_add(off)?, bottom, top);
                    let (Some(rip), Some(rsp), Some(rbp)) =
                        (saved(UC_RIP), saved(UC_RSP), saved(UC_RBP))
                    else {
                        return End::Complete;
                    };
                    // The handler may have run on a signal stack.
                    if !(bottom..top).contains(&rsp) {
                        let Some(other_top) = stack_bounds::top(rsp) else {
                            return End::Complete;
                        };
                        (bottom, top) = (rsp, other_top);
                    }
                    (pc, sp, bp, at) = (rip, rsp, rbp, rip);
                    continue;
                }
            };
            let base = if cfa_rbp { bp } else { sp };
            let Some(cfa) = base.checked_add(cfa_offset as usize).filter(|&c| c > sp) else {
                // A chain that does not climb the stack is broken: stop.
                return End::Complete;
            };
            // The CFA comes from the stack's words: checked, never a panic.
            let Some(ra) = cfa.checked_sub(8).and_then(|at| read(at, bottom, top)) else {
                return End::Complete;
            };
            if rbp_slot != 0 {
                let slot = cfa.checked_sub(8 * rbp_slot as usize);
                let Some(saved) = slot.and_then(|at| read(at, bottom, top)) else {
                    return End::Complete;
                };
                bp = saved;
            }
            sp = cfa;
            pc = ra;
            at = ra.wrapping_sub(1);
        }
    }

    /// The rule for code address `at`, from the cache or worked out.
    fn rule(at: usize) -> Rule {
        let entry = &CACHE[at & ((1 << CACHE_BITS) - 1)];
        if let Some(rule) = unpack(entry.load(Ordering::Relaxed), at) {
            return rule;
        }
        let rule = object_of(at).map_or(Rule::Missing, |object| cfi::rule_for(&object, at));
        if let Some(packed) = pack(at, rule) {
            entry.store(packed, Ordering::Relaxed);
        }
        rule
    }

    /// The loaded object containing `at`.
    fn object_of(at: usize) -> Option<cfi::Object> {
        dl::find_object(at).map(|o| cfi::Object {
            start: o.start,
            end: o.end,
            eh_frame_hdr: o.eh_frame_hdr,
        })
    }

    /// Addresses above this are not cached (the tag has 33 bits).
    const CACHEABLE: usize = 1 << 47;
    const TAG_BITS: u32 = 47 - CACHE_BITS;
    const KIND_FRAME: u64 = 1;
    const KIND_END: u64 = 2;
    const KIND_UNSUPPORTED: u64 = 3;

    /// tag | cfa_rbp << 33 | cfa_offset << 34 | rbp_slot << 54 | kind << 62;
    /// kind 0 is an empty entry.
    fn pack(at: usize, rule: Rule) -> Option<u64> {
        if at >= CACHEABLE {
            return None;
        }
        let tag = (at >> CACHE_BITS) as u64;
        let fields = match rule {
            Rule::Frame {
                cfa_rbp,
                cfa_offset,
                rbp_slot,
            } => {
                KIND_FRAME << 62
                    | u64::from(rbp_slot) << 54
                    | u64::from(cfa_offset) << 34
                    | u64::from(cfa_rbp) << TAG_BITS
            }
            Rule::End => KIND_END << 62,
            Rule::Unsupported => KIND_UNSUPPORTED << 62,
            // Rare (signal trampolines), or code that may appear later.
            Rule::Signal | Rule::Missing => return None,
        };
        Some(fields | tag)
    }

    fn unpack(entry: u64, at: usize) -> Option<Rule> {
        if at >= CACHEABLE || entry & ((1 << TAG_BITS) - 1) != (at >> CACHE_BITS) as u64 {
            return None;
        }
        match entry >> 62 {
            KIND_FRAME => Some(Rule::Frame {
                cfa_rbp: entry >> TAG_BITS & 1 != 0,
                cfa_offset: (entry >> 34) as u32 & cfi::MAX_CFA_OFFSET,
                rbp_slot: (entry >> 54) as u8,
            }),
            KIND_END => Some(Rule::End),
            KIND_UNSUPPORTED => Some(Rule::Unsupported),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn packing_round_trips() {
            let at = 0x7f12_3456_789a;
            for rule in [
                Rule::Frame {
                    cfa_rbp: true,
                    cfa_offset: cfi::MAX_CFA_OFFSET,
                    rbp_slot: 255,
                },
                Rule::Frame {
                    cfa_rbp: false,
                    cfa_offset: 8,
                    rbp_slot: 0,
                },
                Rule::End,
                Rule::Unsupported,
            ] {
                let packed = pack(at, rule).unwrap();
                assert_eq!(unpack(packed, at), Some(rule));
                assert_eq!(unpack(packed, at + (1 << CACHE_BITS)), None);
            }
            assert_eq!(pack(at, Rule::Missing), None);
            assert_eq!(pack(at, Rule::Signal), None);
            assert_eq!(unpack(0, 0x4000), None);
        }

        /// Every address of this test binary gets a rule (most of them an
        /// ordinary frame), with reads kept inside the object.
        #[test]
        fn rules_for_a_whole_object() {
            dl::init_find_object();
            init(true);
            let here = rules_for_a_whole_object as fn() as usize;
            let object = object_of(here).expect("the test binary is loaded");
            let mut kinds = [0usize; 5];
            for at in (object.start..object.end).step_by(61) {
                let kind = match rule(at) {
                    Rule::Frame { .. } => 0,
                    Rule::End => 1,
                    Rule::Signal => 2,
                    Rule::Unsupported => 3,
                    Rule::Missing => 4,
                };
                kinds[kind] += 1;
            }
            assert!(kinds[0] > 1000, "{kinds:?}");
            assert!(
                kinds[0] > 10 * (kinds[1] + kinds[2] + kinds[3]),
                "{kinds:?}"
            );
            assert!(matches!(rule(here), Rule::Frame { .. }));
        }

        /// The same frames as libgcc, from a test thread (bounds from
        /// /proc/self/maps) through this crate's and the test harness's code.
        #[test]
        fn agrees_with_libgcc() {
            dl::init_find_object();
            init(true);
            let mut fast = Vec::new();
            let walked = walk(&mut |pc| {
                fast.push(pc);
                true
            });
            assert_eq!(walked, Walk::Complete);
            let mut slow = Vec::new();
            // libgcc ends with a frame at address 0, past the outermost.
            backtrace::trace(|f| {
                slow.push(f.ip() as usize);
                f.ip() as usize != 0
            });
            slow.retain(|&pc| pc != 0);
            // From this test's caller on, both see the same return
            // addresses; below it, each sees its own call and insides.
            let callers = &fast[2..];
            assert!(callers.len() >= 3, "{fast:x?}");
            assert!(slow.ends_with(callers), "fast {fast:x?}\nlibgcc {slow:x?}");
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub const CACHE_BYTES: usize = 0;

    pub fn init(_: bool) {}

    pub fn enabled() -> bool {
        false
    }

    pub fn walk(_: &mut dyn FnMut(usize) -> bool) -> super::Walk {
        super::Walk::Stopped
    }

    pub fn walk_from(_: usize, _: usize, _: usize, _: &mut dyn FnMut(usize) -> bool) -> bool {
        false
    }

    pub fn forget() {}
}
