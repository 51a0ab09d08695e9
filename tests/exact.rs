//! Exactness: with LEAKPROBE_SAMPLE=1 every allocation is a sample, so the
//! dump must equal the harness's known truth, site by site, and both jeprof
//! and pprof must name the right functions and lines.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

/// (site, live count, live bytes, allocated count, allocated bytes)
const TRUTH: &[(&str, u64, u64, u64, u64)] = &[
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

fn live_sites() -> impl Iterator<Item = &'static (&'static str, u64, u64, u64, u64)> {
    TRUTH.iter().filter(|t| t.1 > 0)
}

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

    let sites = dump.by_function(&exe);
    let lines = site_lines("exact.cc");
    for &(name, live_n, live_b, alloc_n, alloc_b) in TRUTH {
        let got = sites.get(name).cloned().unwrap_or_default();
        assert_eq!(
            (
                got.live_count,
                got.live_bytes,
                got.alloc_count,
                got.alloc_bytes
            ),
            (live_n, live_b, alloc_n, alloc_b),
            "{name}: (live n, live bytes, allocated n, allocated bytes)"
        );
        if live_n > 0 {
            assert!(
                got.lines.iter().all(|&l| l == lines[name]),
                "{name}: lines {:?}, want {}",
                got.lines,
                lines[name]
            );
        }
    }

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
    let jeprof = run(Command::new("jeprof")
        .args(["--text", "--inuse_objects", "--lines"])
        .arg(&exe)
        .arg(&dump.path));
    let pprof = run(Command::new("go")
        .args([
            "tool",
            "pprof",
            "-text",
            "-lines",
            "-sample_index=inuse_objects",
        ])
        .arg(&exe)
        .arg(&dump.path));
    for (tool, out) in [("jeprof", &jeprof), ("pprof", &pprof)] {
        for &(name, live_n, ..) in live_sites() {
            let want = format!("{name} ");
            let at = format!("exact.cc:{}", lines[name]);
            let found = out.lines().any(|l| {
                l.split_whitespace().next() == Some(&live_n.to_string())
                    && l.contains(&want)
                    && l.contains(&at)
            });
            assert!(
                found,
                "{tool} does not show {live_n} objects at {name} {at}:\n{out}"
            );
        }
    }
}
