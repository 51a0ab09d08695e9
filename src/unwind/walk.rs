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
/// frame's address to `frame` until it returns false. Inlined: the walk
/// starts in the caller's frame, at this point of it (one step less than
/// from a frame of its own).
#[inline(always)]
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

/// From now on, walks end at the first frame without CFI instead of going
/// on by frame pointers: a JVM's Java frames come from `java`, which takes
/// the place of that frame.
pub fn stop_at_jit_code() {
    imp::STOP_AT_JIT.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Bytes of the rule cache.
pub fn cache_bytes() -> usize {
    imp::CACHE_BYTES
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::Walk;
    use crate::sys::dl;
    use crate::sys::lock::SpinLock;
    use crate::unwind::cfi::{self, Rule};
    use crate::unwind::stack_bounds;
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
        GENERATION.fetch_add(1, Ordering::Relaxed);
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

    #[inline(always)]
    pub fn walk(frame: &mut dyn FnMut(usize) -> bool) -> Walk {
        if !enabled() {
            return Walk::Stopped;
        }
        // The registers of the function this is inlined into, at this
        // instruction, whose CFI then describes how to find its caller
        // (`walk_registers` only reads the stack above `sp`).
        let (pc, sp, bp) = crate::sys::signals::registers_here();
        walk_registers(pc, sp, bp, frame)
    }

    /// The walk from a frame's registers at `pc` (`walk`): replayed from
    /// `REPLAYS` when the stack is the one the last walk from there read,
    /// else walked (and logged there).
    #[inline(never)]
    fn walk_registers(
        pc: usize,
        sp: usize,
        bp: usize,
        frame: &mut dyn FnMut(usize) -> bool,
    ) -> Walk {
        let Some(top) = stack_bounds::top(sp) else {
            return Walk::Stopped;
        };
        let key = Key {
            pc,
            sp,
            bp,
            top,
            generation: GENERATION.load(Ordering::Relaxed),
        };
        let slot = &REPLAYS[(sp >> 4) % REPLAYS.len()];
        if !slot.try_acquire() {
            // Another thread uses it: a walk of our own, not logged.
            return walk_stack(key, pc, frame, None).walk();
        }
        // SAFETY: we hold the slot's lock (just acquired), one reference.
        let log = unsafe { slot.held() };
        let walked = match log.replay(&key, frame) {
            Some(walked) => walked,
            None => {
                log.begin(key);
                let walked = walk_stack(key, pc, frame, Some(log)).walk();
                log.end(&walked);
                walked
            }
        };
        slot.release();
        walked
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
        let key = Key {
            pc: ra,
            sp,
            bp,
            top,
            generation: GENERATION.load(Ordering::Relaxed),
        };
        // A caller's rule is at its call, just before the return address.
        matches!(
            walk_stack(key, ra.wrapping_sub(1), frame, None),
            End::Outermost
        )
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

    impl End {
        fn walk(self) -> Walk {
            match self {
                End::Outermost | End::Complete => Walk::Complete,
                End::Stopped => Walk::Stopped,
            }
        }
    }

    /// Walks from the registers in `key` (`at`: where the first frame's rule
    /// is looked up), logging what it reads.
    fn walk_stack(
        key: Key,
        mut at: usize,
        frame: &mut dyn FnMut(usize) -> bool,
        mut log: Option<&mut Log>,
    ) -> End {
        let Key {
            mut pc,
            mut sp,
            mut bp,
            top,
            ..
        } = key;
        // The stack being walked: [bottom, top) is mapped (this thread's
        // stack from a live stack pointer up to its end).
        let (mut bottom, mut top) = (sp, top);
        let read = |at: usize, bottom: usize, top: usize| -> Option<usize> {
            let inside = at >= bottom && at.checked_add(8)? <= top;
            // SAFETY: inside [bottom, top), mapped as said above.
            inside.then(|| unsafe { core::ptr::read_unaligned(at as *const usize) })
        };
        // Whether `bp` is still the register's (not one read from the stack).
        let mut bp_is_register = true;
        let mut jit_steps = 0;
        loop {
            if let Some(log) = log.as_deref_mut() {
                log.frame(pc);
            }
            if !frame(pc) {
                return End::Complete;
            }
            let (cfa_rbp, cfa_offset, rbp_slot) = match cached_frame(at) {
                Some(frame) => frame,
                None => match rule(at) {
                    Rule::Frame {
                        cfa_rbp,
                        cfa_offset,
                        rbp_slot,
                    } => (cfa_rbp, cfa_offset, rbp_slot),
                    Rule::End => return End::Outermost,
                    other => {
                        // Code that may be mapped later, or a walk that
                        // leaves this stack: not replayed.
                        if let Some(log) = log.as_deref_mut() {
                            log.unsure();
                        }
                        match other {
                            Rule::Missing => {
                                // Code without CFI (JIT code, V8's builtins):
                                // its frame pointer chain, where it keeps one.
                                jit_steps += 1;
                                let go_on = jit_steps <= MAX_JIT_STEPS
                                    && !STOP_AT_JIT.load(Ordering::Relaxed);
                                let Some((ra, caller_bp)) = go_on
                                    .then(|| frame_pointer_step(bp, sp, top, bottom))
                                    .flatten()
                                else {
                                    return End::Complete;
                                };
                                (pc, sp, bp, at) = (ra, bp + 16, caller_bp, ra.wrapping_sub(1));
                                bp_is_register = false;
                                continue;
                            }
                            Rule::Signal => {}
                            _ => return End::Stopped,
                        }
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
                },
            };
            if cfa_rbp && bp_is_register {
                if let Some(log) = log.as_deref_mut() {
                    log.uses_bp();
                }
            }
            // The CFA comes from the stack's words: checked, never a panic.
            // One that is not a word above `sp` at least (where the return
            // address is pushed), or is past the stack's end, is a broken
            // chain: stop. Past that, the return address's slot lies in
            // [sp, top), inside [bottom, top) (`bottom` <= `sp` throughout).
            let cfa = if cfa_rbp { bp } else { sp }.wrapping_add(cfa_offset as usize);
            if cfa < sp.saturating_add(8) || cfa > top {
                return End::Complete;
            }
            // SAFETY: [cfa - 8, cfa) is inside [bottom, top), mapped.
            let ra = unsafe { core::ptr::read_unaligned((cfa - 8) as *const usize) };
            if let Some(log) = log.as_deref_mut() {
                log.read(cfa - 8, ra);
            }
            if rbp_slot != 0 {
                // Below the CFA: only its lower end needs checking.
                let slot = cfa.checked_sub(8 * rbp_slot as usize);
                let Some(slot) = slot.filter(|&at| at >= bottom) else {
                    return End::Complete;
                };
                // SAFETY: [slot, slot + 8) is inside [bottom, cfa), mapped.
                bp = unsafe { core::ptr::read_unaligned(slot as *const usize) };
                bp_is_register = false;
                if let Some(log) = log.as_deref_mut() {
                    log.read(slot, bp);
                }
            }
            sp = cfa;
            pc = ra;
            at = ra.wrapping_sub(1);
        }
    }

    /// Frames without CFI a walk passes by their frame pointers, at most.
    const MAX_JIT_STEPS: u32 = 64;
    /// `stop_at_jit_code`.
    pub static STOP_AT_JIT: AtomicBool = AtomicBool::new(false);

    /// One step up a frame-pointer chain from a frame whose %rbp is `bp`
    /// (the saved %rbp at [bp], the return address at [bp + 8]): (return
    /// address, caller's %rbp). Only inside this stack, above `sp`, and to a
    /// caller's %rbp further up (or 0, the chain's end): a frame that keeps no
    /// frame pointer ends the walk rather than send it elsewhere.
    fn frame_pointer_step(
        bp: usize,
        sp: usize,
        top: usize,
        bottom: usize,
    ) -> Option<(usize, usize)> {
        if !bp.is_multiple_of(8) || bp < sp || bp < bottom || bp.checked_add(16)? > top {
            return None;
        }
        // SAFETY: [bp, bp + 16) is inside [bottom, top), this stack's mapped part.
        let (caller_bp, ra) = unsafe {
            (
                core::ptr::read_unaligned(bp as *const usize),
                core::ptr::read_unaligned((bp + 8) as *const usize),
            )
        };
        let chained = caller_bp == 0 || (caller_bp > bp && caller_bp < top);
        (chained && ra > 4096).then_some((ra, caller_bp))
    }

    /// Where a walk starts: a walk is a function of these, of the rules and
    /// of the stack words it reads.
    #[derive(Clone, Copy, PartialEq, Eq)]
    struct Key {
        pc: usize,
        sp: usize,
        bp: usize,
        top: usize,
        generation: u64,
    }

    /// Rules forgotten so far (`forget`): a walk logged before is not
    /// replayed.
    static GENERATION: AtomicU64 = AtomicU64::new(0);

    const LOG_FRAMES: usize = 32;
    const LOG_READS: usize = 2 * LOG_FRAMES;

    /// The last walk from one place (a stack pointer's slot in `REPLAYS`):
    /// where it started, the words it read and the frames it gave. A walk
    /// from the same registers over the same words gives the same frames:
    /// a sampling loop's stacks then cost a few loads and compares a frame,
    /// not a rule look-up and its checks.
    struct Log {
        key: Key,
        /// Whether `key.bp` was used (a program without frame pointers
        /// keeps any value there).
        bp_used: bool,
        /// Whether it can be replayed: whole, on this stack, from rules
        /// that stay.
        sure: bool,
        walked: bool,
        frames: [usize; LOG_FRAMES],
        n_frames: usize,
        reads: [(usize, usize); LOG_READS],
        n_reads: usize,
    }

    impl Log {
        const EMPTY: Log = Log {
            key: Key {
                pc: 0,
                sp: 0,
                bp: 0,
                top: 0,
                generation: 0,
            },
            bp_used: false,
            sure: false,
            walked: false,
            frames: [0; LOG_FRAMES],
            n_frames: 0,
            reads: [(0, 0); LOG_READS],
            n_reads: 0,
        };

        /// The frames of the walk from `key`, passed to `frame`, if this
        /// log is of the same walk: the same start and the same words where
        /// it read (in [sp, top) now, as then: mapped).
        fn replay(&self, key: &Key, frame: &mut dyn FnMut(usize) -> bool) -> Option<Walk> {
            let same_start = self.key.pc == key.pc
                && self.key.sp == key.sp
                && self.key.top == key.top
                && self.key.generation == key.generation
                && (!self.bp_used || self.key.bp == key.bp);
            if !(self.walked && self.sure && same_start) {
                return None;
            }
            for &(at, word) in &self.reads[..self.n_reads] {
                // SAFETY: `at` was read inside [sp, top) from this `sp` and
                // `top`, which is this thread's stack now (`top(sp)`).
                if unsafe { core::ptr::read_unaligned(at as *const usize) } != word {
                    return None;
                }
            }
            for &pc in &self.frames[..self.n_frames] {
                if !frame(pc) {
                    break;
                }
            }
            Some(Walk::Complete)
        }

        fn begin(&mut self, key: Key) {
            self.key = key;
            (self.bp_used, self.sure, self.walked) = (false, true, false);
            (self.n_frames, self.n_reads) = (0, 0);
        }

        fn frame(&mut self, pc: usize) {
            match self.frames.get_mut(self.n_frames) {
                Some(slot) => *slot = pc,
                None => self.sure = false,
            }
            self.n_frames += 1;
        }

        fn read(&mut self, at: usize, word: usize) {
            match self.reads.get_mut(self.n_reads) {
                Some(slot) => *slot = (at, word),
                None => self.sure = false,
            }
            self.n_reads += 1;
        }

        fn uses_bp(&mut self) {
            self.bp_used = true;
        }

        fn unsure(&mut self) {
            self.sure = false;
        }

        fn end(&mut self, walked: &Walk) {
            self.walked = *walked == Walk::Complete;
        }
    }

    /// The last walks, by stack pointer (direct-mapped). A thread that
    /// finds its slot taken walks without one.
    static REPLAYS: [SpinLock<Log>; 16] = [const { SpinLock::new(Log::EMPTY) }; 16];

    /// An ordinary frame's rule (cfa_rbp, cfa_offset, rbp_slot) straight
    /// from the cache: the common step of a walk, without making a `Rule`.
    #[inline(always)]
    fn cached_frame(at: usize) -> Option<(bool, u32, u8)> {
        let entry = CACHE[at & ((1 << CACHE_BITS) - 1)].load(Ordering::Relaxed);
        let tag = entry & ((1 << TAG_BITS) - 1);
        (at < CACHEABLE && entry >> 62 == KIND_FRAME && tag == (at >> CACHE_BITS) as u64)
            .then(|| frame_fields(entry))
    }

    fn frame_fields(entry: u64) -> (bool, u32, u8) {
        (
            entry >> TAG_BITS & 1 != 0,
            (entry >> 34) as u32 & cfi::MAX_CFA_OFFSET,
            (entry >> 54) as u8,
        )
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

    /// The loaded object containing `at`, with the range its CFI is read
    /// from: `_dl_find_object` reports only the code segment of a program
    /// whose tables lie in another (node's), and then the mapping holding
    /// `.eh_frame_hdr` (and `.eh_frame` after it) is used.
    fn object_of(at: usize) -> Option<cfi::Object> {
        let o = dl::find_object(at)?;
        let hdr = o.eh_frame_hdr;
        let (start, end) = if hdr == 0 || (o.start..o.end).contains(&hdr) {
            (o.start, o.end)
        } else {
            tables_mapping(hdr)?
        };
        Some(cfi::Object {
            start,
            end,
            eh_frame_hdr: hdr,
        })
    }

    /// The mapping holding an `.eh_frame_hdr` outside its object's code,
    /// looked up once (/proc/self/maps, raw system calls) and kept.
    fn tables_mapping(hdr: usize) -> Option<(usize, usize)> {
        static KNOWN: [(AtomicUsize, AtomicUsize, AtomicUsize); 8] = [const {
            (
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            )
        }; 8];
        let slot = &KNOWN[(hdr >> 4) % KNOWN.len()];
        if slot.0.load(Ordering::Acquire) == hdr {
            return Some((
                slot.1.load(Ordering::Relaxed),
                slot.2.load(Ordering::Relaxed),
            ));
        }
        let (lo, hi) = stack_bounds::mapping_containing(hdr)?;
        slot.0.store(0, Ordering::Relaxed);
        slot.1.store(lo, Ordering::Relaxed);
        slot.2.store(hi, Ordering::Relaxed);
        slot.0.store(hdr, Ordering::Release);
        Some((lo, hi))
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
            KIND_FRAME => {
                let (cfa_rbp, cfa_offset, rbp_slot) = frame_fields(entry);
                Some(Rule::Frame {
                    cfa_rbp,
                    cfa_offset,
                    rbp_slot,
                })
            }
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

        #[inline(never)]
        fn walk_here(out: &mut Vec<usize>) -> usize {
            out.clear();
            walk(&mut |pc| {
                out.push(pc);
                true
            });
            // The stack pointer the walk started from (about: this frame's).
            let here = 0u8;
            core::hint::black_box(&here) as *const u8 as usize
        }

        #[inline(never)]
        fn via_a(out: &mut Vec<usize>) -> usize {
            core::hint::black_box(walk_here(out)) + 1
        }

        #[inline(never)]
        fn via_b(out: &mut Vec<usize>) -> usize {
            core::hint::black_box(walk_here(out)) + 2
        }

        #[inline(never)]
        fn run(via: fn(&mut Vec<usize>) -> usize, out: &mut Vec<usize>) -> usize {
            core::hint::black_box(via)(out)
        }

        /// A walk from where the last one started (the same code, the same
        /// stack pointer), over a stack that differs from the last one's,
        /// is walked again, not replayed; over the same stack it gives the
        /// same frames.
        #[test]
        fn a_replay_only_follows_the_same_stack() {
            dl::init_find_object();
            init(true);
            let (mut a, mut b, mut again) = (Vec::new(), Vec::new(), Vec::new());
            let sps = [
                run(via_a, &mut a) - 1,
                run(via_b, &mut b) - 2,
                run(via_a, &mut again) - 1,
            ];
            assert!(
                sps[0] == sps[1] && sps[1] == sps[2],
                "alike frames: {sps:x?}"
            );
            let near =
                |ra: usize, f: fn(&mut Vec<usize>) -> usize| ra.wrapping_sub(f as usize) < 256;
            assert!(near(a[1], via_a) && near(b[1], via_b), "{a:x?}\n{b:x?}");
            // The same start, and the same `run` above either.
            assert_eq!((a[0], a[2]), (b[0], b[2]));
            assert_eq!(a[..3], again[..3]);
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

    pub static STOP_AT_JIT: core::sync::atomic::AtomicBool =
        core::sync::atomic::AtomicBool::new(false);
}
