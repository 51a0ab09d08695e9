//! fork(): children keep profiling with their own collector thread, their own
//! dump names and the samples they inherited; forking while another thread
//! holds the library's locks never deadlocks; a daemon (double fork, setsid)
//! answers kill -USR2.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn children_inherit_samples_and_dump_under_their_own_pid() {
    let exe = harness("fork");
    let dir = scratch_dir("fork");
    let mut p = Probe::start(&exe, &["fork", "30"], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    // Dumps are requested all through the forks. Parent and child print
    // concurrently: take their three lines in any order.
    p.expect_line("STARTED", Duration::from_secs(30));
    let storm = Storm::start(p.pid(), libc::SIGUSR2, Duration::from_millis(3));
    let (mut child, mut child_ready, mut parent_ready) = (0, false, false);
    while child == 0 || !child_ready || !parent_ready {
        let line = p.expect_line("", Duration::from_secs(60));
        match line.as_str() {
            "CHILD READY" => child_ready = true,
            "READY fork" => parent_ready = true,
            other => {
                child = other
                    .strip_prefix("CHILD ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(child)
            }
        }
    }

    assert!(storm.stop() > 0);
    // Answered once every request before it is: no dump is still coming.
    p.dump_tagged();
    // SAFETY: signalling our child.
    assert_eq!(unsafe { libc::kill(child, libc::SIGUSR2) }, 0);
    let child_dump = wait_for_dump(&dir, child);
    let parent_dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");

    let in_child = child_dump.by_function(&exe);
    assert_eq!(
        in_child["site_before_fork"].live_count, 50,
        "inherited samples"
    );
    assert_eq!(
        in_child["site_in_child"].live_count, 30,
        "samples taken in the child"
    );
    assert_eq!(child_dump.meta["pid"], child.to_string());
    let in_parent = parent_dump.by_function(&exe);
    assert_eq!(in_parent["site_before_fork"].live_count, 50);
    assert!(!in_parent.contains_key("site_in_child"));
}

fn wait_for_dump(dir: &std::path::Path, pid: i32) -> Dump {
    wait_until(
        &format!("dump from process {pid}"),
        || dump_files_of(dir, pid).first().map(|path| Dump::read(path)),
        String::new,
    )
}

#[test]
fn a_daemon_answers_the_dump_signal() {
    let exe = harness("fork");
    let dir = scratch_dir("daemon");
    let pidfile = dir.join("daemon.pid");
    let launcher = Probe::start(
        &exe,
        &["daemon", pidfile.to_str().unwrap()],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1")],
    );
    let (status, _) = launcher.finish(Duration::from_secs(30));
    assert!(status.success());
    let pid: i32 = wait_until(
        "pid file from the daemon",
        || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse().ok())
        },
        String::new,
    );
    // SAFETY: signalling the daemon we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR2) }, 0);
    let dump = wait_for_dump(&dir, pid);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(dump.by_function(&exe)["site_daemon"].live_count, 20);
}

/// Blocks sampled 0 µs, 1 ms and 100 ms before `fork()`, and then before
/// each of 1,000 forks while another thread allocates: every child's dump
/// has all of them with their stacks.
#[test]
fn a_child_has_every_block_sampled_before_the_fork_with_its_stack() {
    const FORKS: usize = 1000;
    let exe = harness("fork");
    let dir = scratch_dir("fork_timing");
    let out = dir.join("children");
    std::fs::create_dir_all(&out).unwrap();
    let mut p = Probe::start(
        &exe,
        &["timing", &FORKS.to_string(), out.to_str().unwrap()],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1")],
    );
    p.expect_line("FORKED", Duration::from_secs(300));
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    for i in 0..FORKS {
        let dump = Dump::read(&out.join(format!("child.{i}.heap")));
        assert_eq!(dump.meta_u64("samples_unresolved"), 0, "child {i}");
        // The first three (the timings) and every 100th, by function.
        if i < 3 || i % 100 == 0 {
            let sites = dump.by_function(&exe);
            assert_eq!(
                sites["site_timed"].live_count,
                4 * (i as u64 + 1),
                "child {i}: blocks kept before its fork"
            );
        }
    }
}

/// A fork while the collector holds its state (blocked on its "wrote" line
/// to a full stderr pipe): the child cannot trust the inherited state, so
/// every inherited live sample is reported as unresolved, none is given a
/// stack, and what the child allocates itself is exact.
#[test]
fn a_fork_while_the_collector_holds_its_state_reports_inherited_stacks_as_lost() {
    use std::io::Read;
    let exe = harness("fork_lost");
    let dir = scratch_dir("fork_lost");
    let out = dir.join("child");
    std::fs::create_dir_all(&out).unwrap();
    let mut p = Probe::start_with(
        &exe,
        &[out.to_str().unwrap()],
        &dir,
        // A collector thread even though the program has one thread.
        &[("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_THREAD", "always")],
        |cmd| {
            cmd.stderr(std::process::Stdio::piped());
        },
    );
    let mut stderr = p.child.stderr.take().unwrap();
    p.expect_line("READY", Duration::from_secs(30));
    p.write_stdin("fill\n");
    p.expect_line("FULL", Duration::from_secs(30));
    // Written, then the collector blocks on its line, holding its state.
    let before = Dump::read(&p.wait_for_dump_after_signal());
    p.write_stdin("go\n");
    p.expect_line("FORKED", Duration::from_secs(60));
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    assert_eq!(p.expect_line("CHILD", Duration::from_secs(60)), "CHILD 0");
    p.close_stdin();
    assert!(p.child.wait().unwrap().success());
    let messages = reader.join().unwrap();
    assert!(
        messages.contains("leakprobe: wrote"),
        "the blocked line was lost"
    );

    let child = Dump::read(&out.join("child.heap"));
    assert!(before.meta_u64("live_samples") >= 50);
    assert_eq!(
        child.meta_u64("samples_unresolved"),
        before.meta_u64("live_samples"),
        "every inherited live sample is unresolved"
    );
    let sites = child.by_function(&exe);
    assert!(
        !sites.contains_key("site_inherited"),
        "an inherited sample kept a stack"
    );
    assert_sites_exact(
        &child,
        &exe,
        "fork_lost.c",
        &[("site_child", 20, 20 * 300, 20, 20 * 300)],
    );
}
