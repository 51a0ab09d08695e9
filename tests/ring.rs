//! The ring between allocating threads and the collector: when the collector
//! stalls, a full ring makes one producer wait (up to a second), then samples
//! are dropped and counted. Every sampled block is either in a row or in
//! `samples_dropped`/`bytes_dropped`, and the program is unaffected.

mod common;
use common::*;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

/// The ring's capacity (`CAPACITY` in the library's ring): an empty ring
/// takes this many samples before a stalled collector makes it drop.
const RING: u64 = 1024;

#[test]
fn a_stalled_collector_drops_samples_and_counts_each() {
    const BLOCKS: u64 = 4000;
    let exe = harness("stall");
    let dir = scratch_dir("stall");
    let mut p = Probe::start_with(
        &exe,
        &[&BLOCKS.to_string()],
        &dir,
        // The ring feeds a collector thread, which a program of one thread
        // would not have yet.
        &[("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_THREAD", "always")],
        |cmd| {
            cmd.stderr(Stdio::piped());
        },
    );
    let mut stderr = p.child.stderr.take().unwrap();
    p.expect_line("READY", Duration::from_secs(30));
    p.write_stdin("fill\n");
    p.expect_line("FULL", Duration::from_secs(30));
    // The collector writes this dump, then blocks on its "wrote" line: the
    // ring has been drained for the dump and nothing refills it meanwhile.
    p.wait_for_dump_after_signal();
    p.write_stdin("go\n");
    p.expect_line("ALLOCATED", Duration::from_secs(60));
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let dump = p.dump_tagged();
    p.close_stdin();
    let status = p.child.wait().unwrap();
    let messages = reader.join().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        messages.contains("leakprobe: wrote"),
        "the blocked line was lost"
    );

    let stalled = &dump.by_function(&exe)["site_stalled"];
    let (dropped, dropped_bytes) = (
        dump.meta_u64("samples_dropped"),
        dump.meta_u64("bytes_dropped"),
    );
    assert_eq!(
        (
            stalled.live_count + dropped,
            stalled.live_bytes + dropped_bytes
        ),
        (BLOCKS, BLOCKS * 1000),
        "every sampled block is in a row or counted as dropped"
    );
    assert_eq!(
        (stalled.live_count, stalled.alloc_count),
        (RING, RING),
        "the ring held what it could, the rest was dropped"
    );
}
