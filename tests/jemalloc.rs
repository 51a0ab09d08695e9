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
