//! A program linked against libjemalloc keeps its allocator (its mallctl
//! statistics see its memory, sallocx accepts its pointers) and is profiled
//! exactly through jemalloc's extended API.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const TRUTH: &[(&str, u64, u64, u64)] = &[
    ("site_mallocx", 100, 100 * 2000, 100),
    ("site_mallocx_aligned", 10, 10 * 3000, 10),
    ("site_rallocx", 20, 20 * 4000, 40),
    ("site_sdallocx", 0, 0, 50),
    ("site_plain_malloc", 30, 30 * 1500, 30),
];

#[test]
fn jemalloc_program_keeps_jemalloc_and_is_profiled_exactly() {
    let exe = harness("jemalloc_linked");
    let dir = scratch_dir("jemalloc");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    let grew = p.expect_line("jemalloc stats.allocated grew by", Duration::from_secs(30));
    p.expect_line("READY", Duration::from_secs(30));
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");

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

    let sites = dump.by_function(&exe);
    let lines = site_lines("jemalloc_linked.c");
    for &(name, live_n, live_b, alloc_n) in TRUTH {
        let got = sites.get(name).cloned().unwrap_or_default();
        assert_eq!(
            (got.live_count, got.live_bytes, got.alloc_count),
            (live_n, live_b, alloc_n),
            "{name}"
        );
        assert!(
            got.lines.iter().all(|&l| l == lines[name]),
            "{name}: lines {:?}",
            got.lines
        );
    }

    let out = run(Command::new("jeprof")
        .args(["--text", "--inuse_objects"])
        .arg(&exe)
        .arg(&dump.path));
    for &(name, live_n, ..) in TRUTH.iter().filter(|t| t.1 > 0) {
        let shown = out
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&live_n.to_string()) && l.contains(name));
        assert!(
            shown,
            "jeprof does not show {live_n} objects at {name}:\n{out}"
        );
    }
}
