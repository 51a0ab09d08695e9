//! No descriptor is ever taken from the program: a daemon that closed every
//! descriptor it did not open (the library's too) keeps its count, and every
//! `open` of its succeeds, however many dumps the library writes, in the
//! single-threaded mode (where copies of the process write the dumps into
//! the shared descriptor table) and with the collector thread.

mod common;
use common::*;
use std::time::Duration;

fn keeps_its_descriptors(thread: &str, collector: &str) {
    let exe = harness("closefds");
    let dir = scratch_dir(&format!("closefds-{thread}"));
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_THREAD", thread)]);
    p.expect_line("READY", Duration::from_secs(30));
    p.write_stdin("x\n");
    let first = p.expect_line("FDS", Duration::from_secs(30));
    assert!(first.ends_with(" 0"), "{first}");
    for n in 0..20 {
        let dump = p.dump_tagged();
        assert_eq!(dump.meta["collector"], collector);
        p.write_stdin("x\n");
        let line = p.expect_line("FDS", Duration::from_secs(30));
        assert_eq!(line, first, "after dump {}: {}", n + 1, p.stderr());
    }
    assert_eq!(p.dump_files().len(), 20);
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn a_single_threaded_daemon_keeps_its_descriptors_over_20_dumps() {
    keeps_its_descriptors("auto", "single-threaded");
}

#[test]
fn a_daemon_keeps_its_descriptors_over_20_dumps_with_the_collector_thread() {
    keeps_its_descriptors("always", "thread");
}
