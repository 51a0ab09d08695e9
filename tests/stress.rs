//! Eight threads, mixed operations, cross-thread frees, every allocation
//! sampled, and a dump requested every few milliseconds throughout: the
//! program must run correctly to the end, and the final dump must be exact.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn threads_and_a_signal_storm_end_in_an_exact_dump() {
    let exe = harness("stress");
    let dir = scratch_dir("stress");
    let mut p = Probe::start(&exe, &["200000"], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    p.expect_line("READY", Duration::from_secs(30));
    let storm = Storm::start(p.pid(), libc::SIGUSR2, Duration::from_millis(5));
    let done = p.expect_line("DONE", Duration::from_secs(300));
    assert!(storm.stop() > 0);
    assert_eq!(done, "DONE ok", "the program saw corrupted memory");
    // Answered once every request before it is: no dump is still coming.
    p.dump_tagged();
    let during = p.dump_files().len() - 1;
    assert!(during >= 2, "only {during} dumps during the storm");

    let last = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(last.meta_u64("samples_dropped"), 0);
    let sites = last.by_function(&exe);
    let keep = &sites["site_keep"];
    assert_eq!((keep.live_count, keep.live_bytes), (8 * 500, 8 * 500 * 512));
    let work = &sites["site_work"];
    assert_eq!(
        (work.live_count, work.live_bytes),
        (0, 0),
        "every worked block was freed"
    );
    assert!(
        work.alloc_count >= 8 * 200_000,
        "{} allocations recorded at site_work",
        work.alloc_count
    );
}
