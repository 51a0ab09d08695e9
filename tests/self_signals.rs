//! Every dump signal is accounted for (docs/signals.md): with no handler of
//! the program's, each way a program signals itself is a dump request; with
//! its handler (or another preloaded library's, installed at load before or
//! after the library's), each reaches that handler as without the library.
//! A single-threaded program whose stderr goes nowhere answers within
//! milliseconds from its first instruction, and a request still pending
//! when it exits is written by the exit path.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FORMS: [&str; 4] = ["raise", "pthread_kill", "tgkill", "kill"];

fn without_handler(thread: &str) {
    let exe = harness("selfsig");
    let dir = scratch_dir(&format!("selfsig-none-{thread}"));
    let mut p = Probe::start(&exe, &["none"], &dir, &[("LEAKPROBE_THREAD", thread)]);
    for form in FORMS {
        let sent = p.expect_line("SENT", Duration::from_secs(30));
        assert_eq!(sent, format!("SENT {form}"));
        p.wait_for_new_dump(Duration::from_secs(30));
        p.write_stdin("next\n");
    }
    p.expect_line("END", Duration::from_secs(30));
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(p_dumps(&dir), 4, "one dump per self-sent signal");
}

fn p_dumps(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".heap"))
        })
        .count()
}

#[test]
fn each_self_sent_form_dumps_without_a_handler_single_threaded() {
    without_handler("auto");
}

#[test]
fn each_self_sent_form_dumps_without_a_handler_with_the_collector_thread() {
    without_handler("always");
}

/// Runs `selfsig <shape>` with `preload` and checks its handler ran once per
/// form and no dump was written.
fn handled(shape: &str, name: &str, preload: Option<String>, thread: &str) {
    let exe = harness("selfsig");
    let dir = scratch_dir(&format!("selfsig-{name}-{thread}"));
    let mut env = vec![("LEAKPROBE_THREAD", thread)];
    if let Some(preload) = &preload {
        env.push(("LD_PRELOAD", preload));
    }
    let mut p = Probe::start(&exe, &[shape], &dir, &env);
    let line = p.expect_line("HANDLED", Duration::from_secs(30));
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(line, "HANDLED 4", "{name}: {stderr}");
    assert_eq!(p_dumps(&dir), 0, "{name}: a self-sent signal dumped");
}

#[test]
fn each_self_sent_form_reaches_the_programs_handler() {
    for thread in ["auto", "always"] {
        handled("handler", "handler", None, thread);
    }
}

#[test]
fn each_self_sent_form_reaches_another_preloaded_librarys_handler() {
    let lib = library().display().to_string();
    let other = harness("libother_handler.so").display().to_string();
    for thread in ["auto", "always"] {
        handled("other", "after", Some(format!("{lib} {other}")), thread);
        handled("other", "before", Some(format!("{other} {lib}")), thread);
    }
}

/// `selfsig <shape>` with stderr on /dev/null, as a daemon's.
fn quiet(shape: &str, dir: &Path) -> Child {
    Command::new(harness("selfsig"))
        .arg(shape)
        .env("LD_PRELOAD", library())
        .env("LEAKPROBE_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Single-threaded runs are timed one at a time (the others in this file
/// may run meanwhile: a lock keeps the timed ones alone among them).
static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_quiet_single_threaded_program_answers_within_50_ms() {
    let _alone = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    let mut slowest = Duration::ZERO;
    for run in 0..20 {
        let dir = scratch_dir(&format!("selfsig-quick-{run}"));
        let mut child = quiet("serve", &dir);
        let mut ready = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "READY\n");
        let start = Instant::now();
        // SAFETY: kill with our child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR2) }, 0);
        // The dump's file appearing is the event waited for.
        while p_dumps(&dir) == 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_micros(500));
        }
        let took = start.elapsed();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        assert_eq!(p_dumps(&dir), 1, "run {run}: no dump");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < Duration::from_millis(50),
        "slowest answer {slowest:?}"
    );
}

/// 20 runs of `shape` at once, each in its own directory, signalled
/// `after` start if given: every one wrote its dump by the time it exited.
fn every_run_dumps(shape: &str, after: Option<Duration>) {
    let _alone = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    let dirs: Vec<_> = (0..20)
        .map(|run| scratch_dir(&format!("selfsig-{shape}-{run}")))
        .collect();
    let mut children: Vec<Child> = dirs.iter().map(|d| quiet(shape, d)).collect();
    if let Some(after) = after {
        // The program's shape under test: signalled half-way through its
        // one second.
        std::thread::sleep(after);
        for c in &children {
            // SAFETY: kill with our child's pid.
            assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGUSR2) }, 0);
        }
    }
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    let got = dirs.iter().filter(|d| p_dumps(d) == 1).count();
    let logs: Vec<String> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .filter_map(|e| {
            let p = e.ok()?.path();
            p.extension()
                .is_some_and(|x| x == "log")
                .then(|| std::fs::read_to_string(p).unwrap_or_default())
        })
        .collect();
    assert_eq!(got, 20, "{shape}: dumps written; logs:\n{}", logs.join(""));
}

#[test]
fn signalled_at_half_a_second_and_exiting_at_one_it_gets_its_dump() {
    every_run_dumps("sleep1", Some(Duration::from_millis(500)));
}

#[test]
fn a_program_that_exits_300_ms_after_asking_gets_its_dump() {
    every_run_dumps("ask300", None);
}

#[test]
fn a_request_pending_at_exit_is_written_by_the_exit_path() {
    every_run_dumps("ask0", None);
}
