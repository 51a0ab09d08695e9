//! A program linked against libjemalloc keeps its allocator (its mallctl
//! statistics see its memory, sallocx accepts its pointers) and is profiled
//! exactly through jemalloc's extended API.

mod common;
use common::*;
use std::time::Duration;

const TRUTH: &[Truth] = &[
    ("site_mallocx", 100, 100 * 2000, 100, 100 * 2000),
    ("site_mallocx_aligned", 10, 10 * 3000, 10, 10 * 3000),
    ("site_rallocx", 20, 20 * 4000, 40, 20 * (100 + 4000)),
    ("site_sdallocx", 0, 0, 50, 50 * 1200),
    ("site_plain_malloc", 30, 30 * 1500, 30, 30 * 1500),
];

#[test]
fn jemalloc_program_keeps_jemalloc_and_is_profiled_exactly() {
    let exe = harness("jemalloc_linked");
    let dir = scratch_dir("jemalloc");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    let grew = p.expect_line("jemalloc stats.allocated grew by", Duration::from_secs(30));
    let (dump, _stderr) = p.dump_at_ready();

    let grew: u64 = grew.rsplit(' ').next().unwrap().parse().unwrap();
    let live: u64 = TRUTH.iter().map(|t| t.2).sum();
    assert!(
        grew >= live,
        "jemalloc's stats.allocated grew by {grew}, less than the {live} bytes kept"
    );
    assert!(
        dump.meta["allocator"].contains("libjemalloc"),
        "allocator: {}",
        dump.meta["allocator"]
    );

    assert_sites_exact(&dump, &exe, "jemalloc_linked.c", TRUTH);
    assert_tools_show(&exe, &dump, "jemalloc_linked.c", TRUTH);
}

/// `pvalloc`, which jemalloc lacks, is emulated on jemalloc's own
/// `posix_memalign` (its blocks are jemalloc's) and counted at the size asked
/// for; a block grown in place by `xallocx` is counted at its new size.
#[test]
fn pvalloc_emulated_and_xallocx_grown_in_place_are_counted_exactly() {
    let exe = harness("jemalloc_extra");
    let dir = scratch_dir("jemalloc_extra");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    let line = p.expect_line("XALLOCX ", Duration::from_secs(30));
    let (dump, _stderr) = p.dump_at_ready();
    let numbers: Vec<u64> = line
        .split(' ')
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    let (grown, xallocx_bytes) = (numbers[0], numbers[1]);
    assert!(grown > 0, "jemalloc grew no block in place: {line}");
    let truth = [
        ("site_pvalloc", 10, 10 * 5000, 10, 10 * 5000),
        ("site_xallocx", 8, xallocx_bytes, 8, 8 * 65536),
    ];
    assert_sites_exact(&dump, &exe, "jemalloc_extra.c", &truth);
}
