//! Exactness: with LEAKPROBE_SAMPLE=1 every allocation is a sample, so the
//! dump must equal the harness's known truth, site by site, and both jeprof
//! and pprof must name the right functions and lines.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const TRUTH: &[Truth] = &[
    ("site_malloc", 100, 100 * 1000, 100, 100 * 1000),
    ("site_calloc", 50, 50 * 1280, 50, 50 * 1280),
    (
        "site_realloc",
        30,
        30 * 800,
        120,
        30 * (100 + 200 + 400 + 800),
    ),
    ("site_reallocarray", 20, 20 * 900, 20, 20 * 900),
    ("site_posix_memalign", 10, 10 * 2048, 10, 10 * 2048),
    ("site_aligned_alloc", 10, 10 * 4096, 10, 10 * 4096),
    ("site_memalign", 10, 10 * 512, 10, 10 * 512),
    ("site_valloc", 5, 5 * 3000, 5, 5 * 3000),
    ("site_new_array", 25, 25 * 600, 25, 25 * 600),
    ("site_new_object", 25, 25 * 700, 25, 25 * 700),
    ("site_churn", 0, 0, 1000, 1000 * 700),
    ("site_cross_thread", 100, 100 * 3000, 200, 200 * 3000),
    ("site_handover", 0, 0, 1, 6000),
    ("site_first_free_thread", 40, 40 * 5000, 40, 40 * 5000),
];

#[test]
fn every_site_is_exact_and_both_tools_agree() {
    let exe = harness("exact");
    let dir = scratch_dir("exact");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    p.expect_line("READY", Duration::from_secs(30));
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "harness failed: {status}\n{stderr}");

    assert_eq!(dump.period, 1);
    assert_eq!(dump.meta_u64("samples_dropped"), 0);
    assert_eq!(dump.meta_u64("samples_unresolved"), 0);
    assert!(
        stderr.contains(&format!("leakprobe: wrote {}", dump.path.display())),
        "stderr: {stderr}"
    );

    assert_sites_exact(&dump, &exe, "exact.cc", TRUTH);

    // The dump is complete, private, and alone (no temporary left behind).
    let mode = std::fs::metadata(&dump.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Both tools drop the allocator frame and show the caller's line.
    assert_tools_show(&exe, &dump, "exact.cc", TRUTH);
}
