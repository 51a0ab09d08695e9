//! Estimation at the default sample period (512 KiB). The harness keeps
//! 1 GiB live in 1 KiB blocks (about 2048 samples expected: one standard
//! error is 2.2 %, so the 10 % bound is 4.5 of them) and 128 MiB in 48-byte
//! blocks (about 256 samples: 6.3 %, bound 30 % = 4.8 of them), and churns
//! 1 GiB in 4 KiB blocks that are freed at once (live estimate must be 0).

mod common;
use common::*;
use std::process::Command;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const PERIOD: f64 = 524288.0;

/// Un-samples as jeprof does for heap_v2 (one request size per site here).
fn estimate(count: u64, bytes: u64) -> f64 {
    if count == 0 {
        return 0.0;
    }
    let avg = bytes as f64 / count as f64;
    bytes as f64 / (1.0 - (-avg / PERIOD).exp())
}

fn assert_within(name: &str, got: f64, truth: f64, tolerance: f64) {
    let err = (got - truth).abs() / truth;
    assert!(
        err <= tolerance,
        "{name}: estimate {got:.0} vs truth {truth:.0} ({:.1} % off)",
        err * 100.0
    );
}

#[test]
fn estimates_match_truth_at_the_default_period() {
    let exe = harness("estimate");
    let dir = scratch_dir("estimate");
    let p = Probe::start(&exe, &[], &dir, &[]);
    let (dump, _stderr) = p.dump_at_ready();
    assert_eq!(dump.period, 524288);

    let sites = dump.by_function(&exe);
    let big = &sites["site_big_leak"];
    let small = &sites["site_small_leak"];
    let churn = &sites["site_churn"];
    assert_within(
        "big leak, live",
        estimate(big.live_count, big.live_bytes),
        GIB,
        0.10,
    );
    assert_within(
        "small leak, live",
        estimate(small.live_count, small.live_bytes),
        GIB / 8.0,
        0.30,
    );
    assert_eq!(churn.live_count, 0, "churned blocks are all freed");
    assert_within(
        "churn, allocated",
        estimate(churn.alloc_count, churn.alloc_bytes),
        GIB,
        0.10,
    );

    // jeprof un-samples the same way: its MB figure for the big leak agrees.
    let out = run(Command::new("jeprof")
        .arg("--text")
        .arg(&exe)
        .arg(&dump.path));
    let mb: f64 = out
        .lines()
        .find(|l| l.contains("site_big_leak"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("jeprof shows no site_big_leak:\n{out}"));
    assert_within("jeprof's big leak", mb * 1024.0 * 1024.0, GIB, 0.10);
}
