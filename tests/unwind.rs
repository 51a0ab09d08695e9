//! The caching unwinder against libgcc's: with LEAKPROBE_SAMPLE=1 a harness
//! built -O2 allocates through %rsp- and %rbp-based frames, a frame pointer,
//! an early-return epilogue, 150 recursive frames, a second thread and a
//! signal handler. Both unwinders must give the same stacks, frame by frame,
//! and the caching one must have walked every stack but the signal
//! handler's (a signal frame, which it leaves to libgcc).

mod common;
use common::*;
use std::collections::BTreeMap;

const TRUTH: &[Truth] = &[
    ("site_chain", 20, 20 * 1000, 20, 20 * 1000),
    ("site_deep", 20, 20 * 1100, 20, 20 * 1100),
    ("site_thread", 20, 20 * 1200, 20, 20 * 1200),
    ("site_signal", 20, 20 * 1300, 20, 20 * 1300),
];

/// Each row's frames as (object, file offset), so two runs with different
/// load addresses compare: stack -> (live count, allocated count).
fn stacks(dump: &Dump) -> BTreeMap<Vec<(String, u64)>, (u64, u64)> {
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

fn run_with(unwinder: &str) -> Dump {
    let dir = scratch_dir(&format!("unwind_{unwinder}"));
    let env = [("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_UNWIND", unwinder)];
    let (dump, stderr) = Probe::start(&harness("unwind_shapes"), &[], &dir, &env).dump_at_ready();
    assert!(!stderr.contains("LEAKPROBE_UNWIND"), "{stderr}");
    dump
}

#[test]
fn caching_unwinder_matches_libgcc() {
    let exe = harness("unwind_shapes");
    let fast = run_with("fast");
    let slow = run_with("libgcc");
    assert_sites_exact(&fast, &exe, "unwind_shapes.c", TRUTH);
    assert_eq!(stacks(&fast), stacks(&slow));

    // The signal handler's 20 stacks went to libgcc; every other was walked
    // by the cache (the sites' 60 and the C library's own few).
    assert_eq!(fast.meta_u64("stacks_unwound_libgcc"), 20);
    assert!(fast.meta_u64("stacks_unwound_fast") >= 60);
    assert_eq!(slow.meta_u64("stacks_unwound_fast"), 0);

    // The deep site's stack is cut at the frame cap (128 + the entry point).
    let deepest = fast.rows.iter().map(|r| r.frames.len()).max();
    assert_eq!(deepest, Some(129));
}
