//! Single-threaded programs keep glibc's single-threaded state (no thread of
//! the library's that glibc knows about), and still answer every dump
//! request, idle or busy, with exact dumps; a second thread brings the
//! collector thread; a forked child is single-threaded again.

mod common;
use common::*;
use std::time::Duration;

const KEPT: (u64, u64) = (64, 64 * 4000);

/// The READY line's flag: glibc's `__libc_single_threaded` as the program
/// sees it.
fn ready(p: &mut Probe) {
    let line = p.expect_line("READY", Duration::from_secs(30));
    assert_eq!(line, "READY 1", "glibc no longer thinks it single-threaded");
}

fn assert_kept(dump: &Dump, exe: &std::path::Path) {
    let sites = dump.by_function(exe);
    let kept = &sites["site_kept"];
    assert_eq!((kept.live_count, kept.live_bytes), KEPT, "site_kept");
    assert_eq!(dump.meta_u64("samples_unresolved"), 0);
    assert_eq!(
        dump.meta["pid"],
        dump.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split('.')
            .nth(1)
            .unwrap()
    );
}

/// Blocked in `call`, the program answers 100 tagged requests with 100
/// exact dumps, and the call is never cut short.
fn idle_in(call: &str) {
    let exe = harness("single");
    let dir = scratch_dir(&format!("single-{call}"));
    let mut p = Probe::start(&exe, &[call], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    ready(&mut p);
    for token in 0..100u32 {
        let dump = p.dump_answering(0x5100_0000 + token, Duration::from_secs(30));
        assert_eq!(dump.meta["collector"], "single-threaded");
        assert_kept(&dump, &exe);
    }
    assert_eq!(p.dump_files().len(), 100, "one dump per request");
    assert_eq!(p.try_line("CUT"), None, "{call} was cut short");
    if call == "pause" {
        assert!(p.child.try_wait().unwrap().is_none(), "pause returned");
        return;
    }
    p.close_stdin();
    let end = p.expect_line("END", Duration::from_secs(30));
    assert_eq!(end, "END 1");
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn an_idle_program_in_read_answers_every_request() {
    idle_in("read");
}

#[test]
fn an_idle_program_in_epoll_wait_answers_every_request() {
    idle_in("epoll_wait");
}

#[test]
fn an_idle_program_in_pause_answers_every_request() {
    idle_in("pause");
}

/// Requests that arrive in the middle of malloc and free: every dump holds
/// the kept blocks exactly, and at most the one churn block in flight.
#[test]
fn a_program_in_a_tight_allocation_loop_writes_exact_dumps() {
    let exe = harness("single");
    let dir = scratch_dir("single-loop");
    let mut p = Probe::start(&exe, &["loop"], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    ready(&mut p);
    let mut churned = 0;
    for token in 0..20u32 {
        let dump = p.dump_answering(0x5200_0000 + token, Duration::from_secs(30));
        assert_kept(&dump, &exe);
        let sites = dump.by_function(&exe);
        // None yet if the request came before the loop's first malloc.
        let churn = sites.get("site_churn").cloned().unwrap_or_default();
        assert!(
            churn.live_count <= 1,
            "{} churn blocks live",
            churn.live_count
        );
        assert_eq!(churn.live_bytes, 100 * churn.live_count);
        assert_eq!(churn.alloc_bytes, 100 * churn.alloc_count);
        assert!(churn.alloc_count >= churned, "allocations went backwards");
        churned = churn.alloc_count;
    }
    assert!(churned > 0, "the loop was never seen");
    p.close_stdin();
    assert_eq!(p.expect_line("END", Duration::from_secs(30)), "END 1");
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

/// Threads in the process, from /proc.
fn threads_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line[8..].trim().parse().unwrap()
}

#[test]
fn a_second_thread_brings_the_collector_thread() {
    let exe = harness("single");
    let dir = scratch_dir("single-thread");
    let mut p = Probe::start(&exe, &["thread"], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    ready(&mut p);
    let before = p.dump_answering(0x5300_0001, Duration::from_secs(30));
    assert_eq!(before.meta["collector"], "single-threaded");
    p.write_stdin("thread\n");
    p.expect_line("JOINED", Duration::from_secs(30));
    let after = p.dump_answering(0x5300_0002, Duration::from_secs(30));
    assert_eq!(after.meta["collector"], "thread");
    assert_kept(&after, &exe);
    let sites = after.by_function(&exe);
    assert_eq!(
        (
            sites["site_thread"].live_count,
            sites["site_thread"].live_bytes
        ),
        (32, 32 * 3000)
    );
    // The main thread and the collector: the helper has gone.
    assert_eq!(threads_of(p.pid()), 2);
    p.close_stdin();
    assert_eq!(p.expect_line("END", Duration::from_secs(30)), "END 0");
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn always_starts_the_collector_thread_at_load() {
    let exe = harness("single");
    let dir = scratch_dir("single-always");
    let env = [("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_THREAD", "always")];
    let mut p = Probe::start(&exe, &["read"], &dir, &env);
    let line = p.expect_line("READY", Duration::from_secs(30));
    assert_eq!(line, "READY 0");
    let dump = p.dump_answering(0x5400_0001, Duration::from_secs(30));
    assert_eq!(dump.meta["collector"], "thread");
    assert_kept(&dump, &exe);
    p.close_stdin();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

/// Dumps written on their own would each cost a copy of the process: with
/// those settings the collector thread starts at load.
#[test]
fn automatic_dumps_keep_the_collector_thread() {
    let exe = harness("single");
    for setting in [
        "LEAKPROBE_DUMP_SECONDS",
        "LEAKPROBE_INTERVAL",
        "LEAKPROBE_PEAK",
    ] {
        let dir = scratch_dir("single-automatic");
        let mut p = Probe::start(&exe, &["read"], &dir, &[(setting, "1")]);
        let line = p.expect_line("READY", Duration::from_secs(30));
        assert_eq!(line, "READY 0", "{setting}");
        p.close_stdin();
        let (status, stderr) = p.finish(Duration::from_secs(30));
        assert!(status.success(), "{status}\n{stderr}");
    }
}

#[test]
fn a_forked_child_is_single_threaded_again_and_answers_dumps() {
    let exe = harness("single");
    let dir = scratch_dir("single-fork");
    let mut p = Probe::start(&exe, &["fork"], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    ready(&mut p);
    let line = p.expect_line("CHILD", Duration::from_secs(30));
    let fields: Vec<&str> = line.split(' ').collect();
    let child: i32 = fields[1].parse().unwrap();
    assert_eq!(fields[2], "1", "the child is not single-threaded for glibc");
    for n in 0..10 {
        let value = libc::sigval {
            sival_ptr: ((0x4c45_414b_u64 << 32) | (0x5500_0000 + n)) as usize as *mut libc::c_void,
        };
        // SAFETY: sigqueue to the harness's own child.
        assert_eq!(unsafe { libc::sigqueue(child, libc::SIGUSR2, value) }, 0);
        let wanted = format!("{:08x}", 0x5500_0000 + n);
        let dump = wait_until(
            &format!("dump answering {wanted}"),
            || {
                dump_files_of(&dir, child)
                    .into_iter()
                    .map(|f| Dump::read(&f))
                    .find(|d| {
                        d.meta
                            .get("requests_answered")
                            .is_some_and(|t| t.contains(&wanted))
                    })
            },
            || p.stderr(),
        );
        assert_eq!(dump.meta["pid"], child.to_string());
        assert_eq!(dump.meta["collector"], "single-threaded");
        assert_kept(&dump, &exe);
    }
    assert!(dump_files_of(&dir, p.pid()).is_empty(), "the parent dumped");
    // The child's main thread and its own helper.
    assert_eq!(threads_of(child), 2);
    p.close_stdin();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}
