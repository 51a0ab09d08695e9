//! Single-threaded mode when its dumps cannot be written by a copy of the
//! process: a seccomp filter against `clone` (`c-harness/copyfail.c`), the
//! limit of processes (`RLIMIT_NPROC`, as a user of its own), a copy killed or
//! hung. The program is unaffected (its output, exit code, no call cut
//! short, glibc still single-threaded); each dump not written is one line
//! naming the request and the remedy, said at once and counted in the next
//! dump; the exit dump needs no copy; `scripts/leakprobe dump` reports the
//! failure instead of waiting; the next request that can be answered is.

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const KEPT: (u64, u64) = (64, 64 * 4000);
const MORE: (u64, u64) = (16, 16 * 1000);

/// Waits for the line saying the dump for `token` was not written.
fn not_written(p: &Probe, token: u32, timeout: Duration) -> String {
    p.wait_for_stderr(&format!("dump not written (request {token:08x})"), timeout)
}

fn site(dump: &Dump, exe: &std::path::Path, name: &str) -> (u64, u64) {
    let sites = dump.by_function(exe);
    let s = &sites[name];
    (s.live_count, s.live_bytes)
}

/// Closes stdin and checks the program ended as it does without the
/// library: its last line, exit 0. Its stderr.
fn ends_with(mut p: Probe, last: &str) -> String {
    p.close_stdin();
    assert_eq!(p.expect_line("END", T), last);
    let (status, stderr) = p.finish(T);
    assert!(status.success(), "{status}\n{stderr}");
    stderr
}

/// The program's only dump file (the exit dump).
fn only_dump(dir: &std::path::Path, pid: i32) -> Dump {
    let files = dump_files_of(dir, pid);
    assert_eq!(files.len(), 1, "{files:?}");
    Dump::read(&files[0])
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// `scripts/leakprobe dump PID`: exit 1 and the library's reason, long
/// before its time-out.
fn script_says_not_written(pid: i32, reason: &str) {
    let out = Command::new(root().join("scripts/leakprobe"))
        .args(["dump", &pid.to_string(), "--timeout", "600"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not write the dump for request") && stderr.contains(reason),
        "{stderr}"
    );
}

#[test]
fn without_clone_each_request_is_one_line_and_the_exit_dump_counts_them() {
    let exe = harness("copyfail");
    let dir = scratch_dir("copyfail-noclone");
    let env = [("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_DUMP_AT_EXIT", "1")];
    let mut p = Probe::start(&exe, &["noclone"], &dir, &env);
    assert_eq!(p.expect_line("READY", T), "READY 1");
    for token in [0x5a00_0001, 0x5a00_0002] {
        p.request(token, T);
        let line = not_written(&p, token, T);
        assert!(
            line.contains("cannot be made (clone: EPERM")
                && line.ends_with(
                    "LEAKPROBE_THREAD=always writes dumps from a thread started at load instead"
                ),
            "{line}"
        );
    }
    script_says_not_written(p.pid(), "clone: EPERM");
    // A sampled allocation after a copy failed: no thread can be made
    // either, so none is tried (glibc would count the attempt as a thread).
    p.write_stdin("alloc\n");
    p.expect_line("ALLOCATED", T);
    assert!(dump_files_of(&dir, p.pid()).is_empty());
    let pid = p.pid();
    let stderr = ends_with(p, "END 1 0");
    let dump = only_dump(&dir, pid);
    assert_eq!(dump.meta["snapshots_failed"], "3");
    assert_eq!(dump.meta["collector"], "single-threaded");
    assert_eq!(site(&dump, &exe, "site_kept"), KEPT);
    assert_eq!(site(&dump, &exe, "site_more"), MORE);
    assert_eq!(lines_with(&stderr, "leakprobe:").len(), 4, "{stderr}");
    assert_eq!(lines_with(&stderr, "dump not written").len(), 3, "{stderr}");
}

#[test]
fn when_only_processes_are_forbidden_the_collector_thread_takes_over() {
    let exe = harness("copyfail");
    let dir = scratch_dir("copyfail-noprocess");
    let mut p = Probe::start(&exe, &["noprocess"], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    assert_eq!(p.expect_line("READY", T), "READY 1");
    p.request(0x5b00_0001, T);
    assert!(not_written(&p, 0x5b00_0001, T).contains("clone: EPERM"));
    // The next sampled allocation starts the collector thread.
    p.write_stdin("alloc\n");
    p.expect_line("ALLOCATED", T);
    let line = p.wait_for_stderr("the collector thread answers dump requests from now on", T);
    assert!(line.contains("clone: EPERM"), "{line}");
    let dump = p.dump_answering(0x5b00_0002, T);
    assert_eq!(dump.meta["collector"], "thread");
    assert_eq!(dump.meta["snapshots_failed"], "1");
    assert_eq!(site(&dump, &exe, "site_kept"), KEPT);
    assert_eq!(site(&dump, &exe, "site_more"), MORE);
    let stderr = ends_with(p, "END 0 0");
    assert_eq!(lines_with(&stderr, "dump not written").len(), 1, "{stderr}");
}

/// A process copy that dies, or hangs, writing a dump: held in its first
/// system call by the harness until the test kills it (`kill`) or the
/// library does, after `LEAKPROBE_COPY_TIMEOUT` (2 s here; 30 s by default).
fn copy_that_fails(kill: bool) {
    let exe = harness("copyfail");
    let dir = scratch_dir(&format!("copyfail-hold-{kill}"));
    let env = [("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_COPY_TIMEOUT", "2")];
    let mut p = Probe::start(&exe, &["hold"], &dir, &env);
    assert_eq!(p.expect_line("READY", T), "READY 1");
    p.request(0x5c00_0001, T);
    let copy: i32 = p.expect_line("COPY", T)[5..].parse().unwrap();
    let line = if kill {
        // SAFETY: kill of the copy the harness named.
        assert_eq!(unsafe { libc::kill(copy, libc::SIGKILL) }, 0);
        not_written(&p, 0x5c00_0001, T)
    } else {
        not_written(&p, 0x5c00_0001, T * 2)
    };
    let why = if kill {
        "the process copy writing it was killed by signal 9"
    } else {
        "the process copy writing it did not finish within 2 s and was killed"
    };
    assert!(line.contains(why), "{line}");
    // Reaped by the library, not left to the program.
    assert!(!std::path::Path::new(&format!("/proc/{copy}")).exists());
    assert!(dump_files_of(&dir, p.pid()).is_empty());
    p.write_stdin("release\n");
    p.expect_line("RELEASED", T);
    let dump = p.dump_answering(0x5c00_0002, T);
    assert_eq!(dump.meta["collector"], "single-threaded");
    assert_eq!(dump.meta["snapshots_failed"], "1");
    assert_eq!(site(&dump, &exe, "site_kept"), KEPT);
    let stderr = ends_with(p, "END 1 0");
    assert_eq!(lines_with(&stderr, "dump not written").len(), 1, "{stderr}");
}

#[test]
fn a_copy_killed_while_writing_is_one_line_and_the_next_request_is_answered() {
    copy_that_fails(true);
}

#[test]
fn a_copy_that_hangs_is_killed_after_its_timeout_and_the_next_request_is_answered() {
    copy_that_fails(false);
}

/// `c-harness/single.c` idle in `read` with `LEAKPROBE_DUMP_AT_EXIT=1`, as
/// a user of its own (root is not bound by `RLIMIT_NPROC`) allowed
/// `nproc` processes. None if the test cannot switch users.
fn single_at_nproc(test: &str, nproc: u64) -> Option<(Probe, std::path::PathBuf)> {
    if !can_run_as_root(test, "RLIMIT_NPROC binds only other users: runs as one") {
        return None;
    }
    // A user with no other process, one per test (they run in parallel).
    let uid = 3_900_000_000 + (std::process::id() % 100_000) * 4 + nproc as u32;
    let dir = scratch_dir(&format!("single-nproc-{nproc}"));
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    let env = [("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_DUMP_AT_EXIT", "1")];
    let as_user = |cmd: &mut Command| {
        cmd.uid(uid).gid(uid);
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires; it
        // runs after the change of user.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nproc,
                    rlim_max: nproc,
                };
                match libc::setrlimit(libc::RLIMIT_NPROC, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            })
        };
    };
    let p = Probe::start_with(&harness("single"), &["read"], &dir, &env, as_user);
    Some((p, dir))
}

/// Two processes allowed: the program and the helper, no copy.
#[test]
fn at_the_process_limit_requests_are_one_line_each_and_the_exit_dump_works() {
    let Some((mut p, dir)) = single_at_nproc(
        "at_the_process_limit_requests_are_one_line_each_and_the_exit_dump_works",
        2,
    ) else {
        return;
    };
    assert_eq!(p.expect_line("READY", T), "READY 1");
    p.request(0x5d00_0001, T);
    let line = not_written(&p, 0x5d00_0001, T);
    assert!(
        line.contains("clone: EAGAIN") && line.contains("RLIMIT_NPROC"),
        "{line}"
    );
    script_says_not_written(p.pid(), "RLIMIT_NPROC");
    assert_eq!(p.try_line("CUT"), None);
    let (pid, exe) = (p.pid(), harness("single"));
    let stderr = ends_with(p, "END 1");
    let dump = only_dump(&dir, pid);
    assert_eq!(dump.meta["snapshots_failed"], "2");
    assert_eq!(dump.meta["collector"], "single-threaded");
    assert_eq!(site(&dump, &exe, "site_kept"), KEPT);
    assert_eq!(lines_with(&stderr, "dump not written").len(), 2, "{stderr}");
}

/// One process allowed: no helper, no thread at all. One line at load;
/// dump signals stay pending until the exit dump, written by the program's
/// thread, answers them; glibc's single-threaded state untouched.
#[test]
fn at_the_process_limit_from_the_start_one_line_and_the_exit_dump_works() {
    let Some((mut p, dir)) = single_at_nproc(
        "at_the_process_limit_from_the_start_one_line_and_the_exit_dump_works",
        1,
    ) else {
        return;
    };
    assert_eq!(p.expect_line("READY", T), "READY 1");
    p.request(0x5e00_0001, T);
    assert_eq!(p.try_line("CUT"), None);
    let (pid, exe) = (p.pid(), harness("single"));
    let stderr = ends_with(p, "END 1");
    let dump = only_dump(&dir, pid);
    assert_eq!(dump.meta["collector"], "none");
    assert_eq!(dump.meta["requests_answered"], "5e000001");
    assert_eq!(site(&dump, &exe, "site_kept"), KEPT);
    let lines = lines_with(&stderr, "leakprobe:");
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(
            "leakprobe: cannot start the thread that takes dump signals in a single-threaded \
             program (EAGAIN: the limit of processes (RLIMIT_NPROC) reached?): dump signals \
             are answered only when the program exits;"
        ),
        "{stderr}"
    );
    assert!(lines[1].starts_with("leakprobe: wrote "), "{stderr}");
}
