//! Unwinding must never deadlock with the dynamic loader: one thread
//! dlopen()s and dlclose()s a library 3000 times while two others allocate
//! with every allocation sampled, and dumps are requested meanwhile.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn dlopen_loop_with_every_allocation_sampled_finishes() {
    let exe = harness("dlopen_loop");
    let plugin = harness("libplugin.so");
    let dir = scratch_dir("dlopen");
    let mut p = Probe::start(
        &exe,
        &[plugin.to_str().unwrap()],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1")],
    );
    p.expect_line("READY", Duration::from_secs(30));
    let started = Instant::now();
    loop {
        if p.try_line("DONE").is_some() {
            break;
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            // It exits right after DONE, maybe before the line is read.
            if p.expect_line("DONE", Duration::from_secs(5)) == "DONE" {
                break;
            }
            panic!("exited before finishing: {status}\n{}", p.stderr());
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "dlopen loop hung; stderr:\n{}",
            p.stderr()
        );
        p.signal(libc::SIGUSR2);
        // Pacing the requests, not synchronisation.
        std::thread::sleep(Duration::from_millis(50));
    }
    // The program exits after DONE: what it wrote by then is all there is.
    let pid = p.pid();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    let dumps = dump_files_of(&dir, pid).len();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(dumps > 0, "no dump was written during the loop");
}

/// A library unloaded before the dump keeps its place in the memory map, so
/// jeprof still names the function that allocated.
#[test]
fn stacks_through_an_unloaded_library_still_name_it() {
    let exe = harness("unload");
    let plugin = harness("libplugin.so");
    let dir = scratch_dir("unload");
    let p = Probe::start(
        &exe,
        &[plugin.to_str().unwrap()],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1")],
    );
    let (dump, _stderr) = p.dump_at_ready();
    let plugin_path = std::fs::canonicalize(&plugin)
        .unwrap()
        .display()
        .to_string();
    assert!(
        dump.maps.iter().any(|m| m.path == plugin_path),
        "the unloaded plugin is not in the map"
    );
    let out = run(std::process::Command::new("jeprof")
        .args(["--text", "--inuse_objects"])
        .arg(&exe)
        .arg(&dump.path));
    let shown = out
        .lines()
        .any(|l| l.split_whitespace().next() == Some("20") && l.contains("plugin_leak"));
    assert!(
        shown,
        "jeprof does not show 20 objects at plugin_leak:\n{out}"
    );
}
