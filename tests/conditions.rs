//! Bad conditions: a full or deleted dump directory, a signal storm, threads
//! created and exiting by the thousands while dumps are requested. The host
//! keeps running correctly, each failure is one line, and the next dump after
//! conditions recover succeeds.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".heap"))
        .collect()
}

/// A 64 KiB tmpfs, unmounted when dropped.
struct TinyDisk(PathBuf);

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_costs_one_line_and_the_next_dump_works() {
    if !can_run_as_root(
        "a_full_disk_costs_one_line_and_the_next_dump_works",
        "mounts a small tmpfs",
    ) {
        return;
    }
    let dir = scratch_dir("full-disk");
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir));
    let _disk = TinyDisk(dir.clone());
    let filler = dir.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=4k")
        .output();
    let exe = harness("exact");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    p.expect_line("READY", Duration::from_secs(30));
    p.signal(libc::SIGUSR2);
    p.wait_for_stderr("No space left on device", Duration::from_secs(20));
    assert!(
        leftovers(&dir).is_empty(),
        "a partial dump is visible: {:?}",
        leftovers(&dir)
    );
    std::fs::remove_file(&filler).unwrap();
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(!dump.rows.is_empty());
    let failures = stderr
        .lines()
        .filter(|l| l.contains("cannot write dump"))
        .count();
    assert_eq!(failures, 1, "{stderr}");
}

#[test]
fn a_deleted_and_recreated_directory_is_used_again() {
    let exe = harness("exact");
    let dir = scratch_dir("deleted-dir");
    let mut p = Probe::start(&exe, &[], &dir, &[]);
    p.expect_line("READY", Duration::from_secs(30));
    std::fs::remove_dir(&dir).unwrap();
    p.signal(libc::SIGUSR2);
    p.wait_for_stderr("cannot write dump", Duration::from_secs(20));
    std::fs::create_dir(&dir).unwrap();
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(dump.path.starts_with(&dir));
}

#[test]
fn a_signal_storm_yields_whole_dumps_and_a_healthy_process() {
    let exe = harness("exact");
    let dir = scratch_dir("storm");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    p.expect_line("READY", Duration::from_secs(30));
    let storm = Storm::start(p.pid(), libc::SIGUSR2, Duration::from_micros(2500));
    storm.wait_until_sent(1000, Duration::from_secs(60));
    let sent = storm.stop() as usize;
    // Answered once every request before it is: no dump is still coming.
    p.dump_tagged();
    let written = p.dump_files().len() - 1;
    assert!(sent >= 300, "only {sent} signals sent");
    assert!(
        (1..=sent).contains(&written),
        "{written} dumps for {sent} signals"
    );
    for file in p.dump_files() {
        assert!(
            Dump::read(&file).meta_u64("live_samples") > 0,
            "{}",
            file.display()
        );
    }
    let last = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(last.by_function(&exe)["site_malloc"].live_count, 100);
    assert!(
        stderr.lines().all(|l| l.starts_with("leakprobe: wrote")),
        "{stderr}"
    );
}

#[test]
fn thousands_of_threads_come_and_go_while_dumps_are_requested() {
    let exe = harness("threads");
    let dir = scratch_dir("threads");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    // Signals before the library has loaded would meet the default action.
    p.expect_line("STARTED", Duration::from_secs(30));
    let started = Instant::now();
    while p.try_line("READY").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "thread churn did not finish"
        );
        p.signal(libc::SIGUSR2);
        // Pacing the requests, not synchronisation.
        std::thread::sleep(Duration::from_millis(10));
    }
    // Answered once every request before it is: no dump is still coming.
    p.dump_tagged();
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(dump.meta_u64("samples_dropped"), 0);
    let kept = &dump.by_function(&exe)["site_thread_keep"];
    assert_eq!((kept.live_count, kept.live_bytes), (5000, 500_000));
}
