//! The caching unwinder against libgcc's: with LEAKPROBE_SAMPLE=1 a harness
//! built -O2 allocates through %rsp- and %rbp-based frames, a frame pointer,
//! an early-return epilogue, 150 recursive frames, a second thread, signal
//! handlers (on the stack and on a signal stack), and a frame that realigns
//! its stack. Both unwinders must give the same stacks, frame by frame; the
//! caching one must have walked every stack but the realigned frame's (a CFA
//! expression, left to libgcc), and must cut those short instead once the
//! program registers unwind tables at run time.

mod common;
use common::*;
use std::collections::BTreeMap;

const TRUTH: &[Truth] = &[
    ("site_chain", 20, 20 * 1000, 20, 20 * 1000),
    ("site_deep", 20, 20 * 1100, 20, 20 * 1100),
    ("site_thread", 20, 20 * 1200, 20, 20 * 1200),
    ("site_signal", 20, 20 * 1300, 20, 20 * 1300),
    ("site_altstack", 20, 20 * 1500, 20, 20 * 1500),
    ("site_realigned", 20, 20 * 1400, 20, 20 * 1400),
];

type Stacks = BTreeMap<Vec<(String, u64)>, (u64, u64)>;

/// Each row's frames as (object, file offset), so two runs with different
/// load addresses compare: stack -> (live count, allocated count).
fn stacks(dump: &Dump) -> Stacks {
    dump.rows
        .iter()
        .map(|r| {
            let frames = r.frames[1..]
                .iter()
                .map(|&a| match dump.mapping_of(a) {
                    Some(m) => (m.path.clone(), a - m.start + m.offset),
                    None => (String::from("?"), a),
                })
                .collect();
            (frames, (r.live_count, r.alloc_count))
        })
        .collect()
}

fn run_with(unwinder: &str, args: &[&str]) -> Dump {
    let dir = scratch_dir(&format!("unwind_{unwinder}_{}", args.len()));
    let env = [("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_UNWIND", unwinder)];
    let (dump, stderr) = Probe::start(&harness("unwind_shapes"), args, &dir, &env).dump_at_ready();
    assert!(!stderr.contains("LEAKPROBE_UNWIND"), "{stderr}");
    assert_sites_exact(&dump, &harness("unwind_shapes"), "unwind_shapes.c", TRUTH);
    dump
}

#[test]
fn caching_unwinder_matches_libgcc() {
    let fast = run_with("fast", &[]);
    let slow = run_with("libgcc", &[]);
    assert_eq!(stacks(&fast), stacks(&slow));

    // The realigned frame's 20 stacks went to libgcc; every other was walked
    // by the cache (the sites' 100, signal frames included, and the C
    // library's own few).
    assert_eq!(fast.meta_u64("stacks_unwound_libgcc"), 20);
    assert!(fast.meta_u64("stacks_unwound_fast") >= 100);
    assert_eq!(fast.meta_u64("stacks_cut_short"), 0);
    assert_eq!(slow.meta_u64("stacks_unwound_fast"), 0);

    // The deep site's stack is cut at the frame cap (128 + the entry point).
    let deepest = fast.rows.iter().map(|r| r.frames.len()).max();
    assert_eq!(deepest, Some(129));
}

#[test]
fn registered_tables_keep_libgcc_out() {
    let full = stacks(&run_with("libgcc", &["register"]));
    let cut = run_with("fast", &["register"]);
    assert_eq!(cut.meta_u64("stacks_unwound_libgcc"), 0);
    assert_eq!(cut.meta_u64("stacks_cut_short"), 20);

    // Only the realigned site's row differs: it stops at the realigned frame,
    // a strict prefix of the whole stack.
    let differing: Vec<_> = stacks(&cut)
        .into_iter()
        .filter(|(s, _)| !full.contains_key(s))
        .collect();
    assert_eq!(differing.len(), 1, "{differing:?}");
    let (prefix, counts) = &differing[0];
    assert_eq!(*counts, (20, 20));
    assert!(full
        .keys()
        .any(|s| s.len() > prefix.len() && s.starts_with(prefix)));
}
