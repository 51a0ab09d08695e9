//! Usable sizes: each sampled allocation carries the allocator's own
//! `malloc_usable_size`, summed per row and un-sampled into
//! `estimated_live_usable_bytes`, next to the allocator's own allocated total.

mod common;
use common::*;
use std::time::Duration;

/// (harness, usable bytes of one 100-byte block, of one 1 MiB block).
const ALLOCATORS: &[(&str, u64, u64)] = &[
    // glibc: 100 + 8-byte header rounded to 16, less the header; 1 MiB is
    // mmapped: 1 MiB + 16 rounded to a page, less 16.
    ("usable", 104, (1 << 20) + 4096 - 16),
    // jemalloc: size classes 112 and 1 MiB.
    ("usable_jemalloc", 112, 1 << 20),
];

#[test]
fn usable_sizes_are_the_allocators_answers() {
    for &(name, small, large) in ALLOCATORS {
        let exe = harness(name);
        let dir = scratch_dir(name);
        let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
        // The harness's own malloc_usable_size sums: the allocator's answers.
        let said = |line: String| -> u64 { line.rsplit(' ').next().unwrap().parse().unwrap() };
        let small_sum = said(p.expect_line("usable site_small", Duration::from_secs(30)));
        let large_sum = said(p.expect_line("usable site_large", Duration::from_secs(30)));
        assert_eq!((small_sum, large_sum), (1000 * small, 4 * large), "{name}");
        let (dump, _) = p.dump_at_ready();

        let sites = dump.by_function(&exe);
        for (site, count, bytes, usable) in [
            ("site_small", 1000, 1000 * 100, small_sum),
            ("site_large", 4, 4 << 20, large_sum),
        ] {
            let s = &sites[site];
            assert_eq!(
                (s.live_count, s.live_bytes, s.live_usable),
                (count, bytes, Some(usable)),
                "{name} {site}: (live n, live bytes, usable bytes)"
            );
        }

        // Every row with live samples has its usable line, at least its size.
        let live: Vec<&Row> = dump.rows.iter().filter(|r| r.live_count > 0).collect();
        assert!(live
            .iter()
            .all(|r| r.usable.is_some_and(|u| u >= r.live_bytes)));
        let usable_total: u64 = live.iter().map(|r| r.usable.unwrap()).sum();
        // With every allocation sampled the estimate is the raw sum.
        assert_eq!(
            dump.meta_u64("estimated_live_usable_bytes"),
            usable_total,
            "{name}"
        );
        let allocated = dump.meta_u64("allocator_allocated_bytes");
        assert!(
            allocated >= small_sum + large_sum,
            "{name}: allocator_allocated_bytes {allocated} < the harness's {} usable bytes",
            small_sum + large_sum
        );
        if name.ends_with("jemalloc") {
            assert_eq!(allocated, dump.meta_u64("jemalloc_allocated_bytes"));
        } else {
            assert_eq!(
                allocated,
                dump.meta_u64("glibc_in_use_bytes") + dump.meta_u64("glibc_mmapped_bytes")
            );
        }
    }
}
