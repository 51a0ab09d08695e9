//! Dump requests never disturb the program: waits that SA_RESTART does not
//! restart block their full time through a storm of requests (the signal is
//! taken on the collector thread), and a program that owns the dump signal
//! (sigwait, signalfd, SIG_IGN across exec, its mask across exec, a handler
//! for signals it sends itself) gets exactly what it would get without the
//! library.

mod common;
use common::*;
use std::time::Duration;

const CALLS: usize = 13;

#[test]
fn waits_block_their_full_time_through_a_storm_of_dump_requests() {
    let exe = harness("waits");
    let dir = scratch_dir("waits");
    let mut p = Probe::start(&exe, &[], &dir, &[]);
    p.expect_line("WAITING", Duration::from_secs(30));
    let storm = Storm::start(p.pid(), libc::SIGUSR2, Duration::from_millis(2));
    let mut failed = Vec::new();
    for _ in 0..2 * CALLS {
        let line = p.expect_line("WAIT ", Duration::from_secs(30));
        if !line.ends_with(" ok") {
            failed.push(line);
        }
    }
    p.expect_line("DONE", Duration::from_secs(30));
    let sent = storm.stop();
    assert!(failed.is_empty(), "waits cut short: {failed:#?}");
    assert!(sent >= 100, "only {sent} dump requests were sent");
    assert!(!p.dump_files().is_empty(), "the storm produced no dump");
    // The last request is answered too: a tagged one, found by its token.
    let dump = p.dump_answering(0x1234_abcd, Duration::from_secs(30));
    assert_eq!(dump.meta["pid"], p.pid().to_string());
    p.close_stdin();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

/// Sends six SIGUSR2 from outside, one after each "GOT" line.
fn takes_it_synchronously(mode: &str) {
    let exe = harness("owned_signals");
    let dir = scratch_dir(&format!("owned_{mode}"));
    let mut p = Probe::start(&exe, &[mode], &dir, &[]);
    p.expect_line("READY", Duration::from_secs(30));
    for n in 1..=6 {
        p.signal(libc::SIGUSR2);
        let line = p.expect_line("GOT", Duration::from_secs(30));
        assert_eq!(line, format!("GOT {n} SIGUSR2"), "{mode}");
    }
    assert!(p.dump_files().is_empty(), "{mode}: a signal became a dump");
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("waits for SIGUSR2 itself"),
        "the user is not told dumps by signal are off:\n{stderr}"
    );
}

#[test]
fn a_sigwait_loop_gets_every_signal() {
    takes_it_synchronously("sigwait");
}

#[test]
fn a_signalfd_gets_every_signal() {
    takes_it_synchronously("signalfd");
}

/// The first line the program (or the program it starts, without the
/// library) prints.
fn output_of(mode: &str) -> String {
    let exe = harness("owned_signals");
    let dir = scratch_dir(&format!("owned_{mode}"));
    let mut p = Probe::start(&exe, &[mode], &dir, &[("LEAKPROBE_NO_INHERIT", "1")]);
    let line = p.expect_line("", Duration::from_secs(30));
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{mode}: {status}\n{stderr}");
    line
}

#[test]
fn sig_ign_is_inherited_across_exec() {
    assert_eq!(output_of("ignore-exec"), "alive");
}

/// `nohup`'s shape across `execl`, `execle`, `execlp` (not interposable as
/// glibc makes them: variadic, calling its own `execve`), with the dump
/// signal SIGHUP: the new program starts with its hangup ignored and not
/// blocked, and survives it.
#[test]
fn sig_ign_and_the_mask_cross_the_execl_family() {
    let exe = harness("execl_ign");
    for call in ["execl", "execle", "execlp"] {
        let dir = scratch_dir(&format!("execl_ign_{call}"));
        let env = [
            ("LEAKPROBE_NO_INHERIT", "1"),
            ("LEAKPROBE_SIGNAL", "SIGHUP"),
        ];
        let mut p = Probe::start(&exe, &[call], &dir, &env);
        let blocked = p.expect_line("SigBlk:", Duration::from_secs(30));
        let ignored = p.expect_line("SigIgn:", Duration::from_secs(30));
        let mask = |line: &str| u64::from_str_radix(line[7..].trim(), 16).unwrap();
        assert_eq!(mask(&blocked) & 1, 0, "{call}: SIGHUP blocked ({blocked})");
        assert_eq!(
            mask(&ignored) & 1,
            1,
            "{call}: SIGHUP not ignored ({ignored})"
        );
        assert_eq!(p.expect_line("ALIVE", Duration::from_secs(30)), "ALIVE");
        let (status, stderr) = p.finish(Duration::from_secs(30));
        assert!(status.success(), "{call}: {status}\n{stderr}");
    }
    // Arguments past the six registers reach the new program.
    let dir = scratch_dir("execl_ign_long");
    let mut p = Probe::start(&exe, &["long"], &dir, &[("LEAKPROBE_NO_INHERIT", "1")]);
    assert_eq!(p.expect_line("LAST", Duration::from_secs(30)), "LAST 12");
}

#[test]
fn new_programs_start_with_the_programs_mask() {
    for mode in ["exec-mask", "system-mask", "spawn-mask"] {
        let line = output_of(mode);
        let hex = line.trim_start_matches("SigBlk:").trim();
        let mask = u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("{mode}: {line}"));
        assert_eq!(
            mask & (1 << (libc::SIGUSR2 - 1)),
            0,
            "{mode}: the new program starts with SIGUSR2 blocked ({line})"
        );
    }
}

#[test]
fn signals_the_process_sends_itself_reach_its_handler() {
    let exe = harness("owned_signals");
    let dir = scratch_dir("owned_handler");
    let mut p = Probe::start(&exe, &["handler-self"], &dir, &[]);
    assert_eq!(
        p.expect_line("HANDLED", Duration::from_secs(30)),
        "HANDLED 2"
    );
    p.expect_line("READY", Duration::from_secs(30));
    assert!(
        p.dump_files().is_empty(),
        "a signal of the program's own made a dump"
    );
    // From outside, a dump, and the handler is not called.
    p.dump();
    p.close_stdin();
    assert_eq!(
        p.expect_line("HANDLED", Duration::from_secs(30)),
        "HANDLED 2"
    );
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

/// A child that signals its parent and is reaped before the parent unblocks
/// the signal is still the program's (not a dump request), and the handler
/// runs on the thread that unblocks it, never on the library's: 300 rounds,
/// each of which installs the handler anew (the moment the library's thread
/// follows it), in both modes.
#[test]
fn a_reaped_childs_signal_reaches_the_handler_on_the_programs_thread() {
    let exe = harness("owned_signals");
    for mode in ["always", "auto"] {
        let dir = scratch_dir(&format!("owned_rounds_{mode}"));
        let mut p = Probe::start(
            &exe,
            &["handler-rounds"],
            &dir,
            &[("LEAKPROBE_THREAD", mode)],
        );
        assert_eq!(
            p.expect_line("ELSEWHERE", Duration::from_secs(60)),
            "ELSEWHERE 0",
            "{mode}: the program's handler ran on another thread"
        );
        assert!(
            p.dump_files().is_empty(),
            "{mode}: a child's signal became a dump"
        );
        let (status, stderr) = p.finish(Duration::from_secs(30));
        assert!(status.success(), "{mode}: {status}\n{stderr}");
    }
}
