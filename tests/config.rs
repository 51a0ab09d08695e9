//! Configuration and bad conditions: a bad setting is one line on stderr and
//! a default; a dump directory that cannot be written costs one line per
//! failed dump and the program goes on; ordinary programs behave the same.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn bad_settings_are_named_once_and_defaults_used() {
    let exe = harness("exact");
    let dir = scratch_dir("bad-settings");
    let env = [
        ("LEAKPROBE_SAMPLE", "lots"),
        ("LEAKPROBE_SIGNAL", "SIGKILL"),
        ("LEAKPROBE_MAX_FRAMES", "0"),
        ("LEAKPROBE_KEEP", "-3"),
    ];
    let p = Probe::start(&exe, &[], &dir, &env);
    let (dump, stderr) = p.dump_at_ready();
    for (var, default) in [
        ("LEAKPROBE_SAMPLE", "524288"),
        ("LEAKPROBE_SIGNAL", "12"),
        ("LEAKPROBE_MAX_FRAMES", "128"),
        ("LEAKPROBE_KEEP", "0"),
    ] {
        let lines: Vec<_> = stderr.lines().filter(|l| l.contains(var)).collect();
        assert_eq!(lines.len(), 1, "{var}: {lines:?}");
        assert!(
            lines[0].starts_with("leakprobe: ") && lines[0].ends_with(&format!("using {default}")),
            "{}",
            lines[0]
        );
    }
    assert_eq!(dump.period, 524288);
    assert_eq!(dump.meta["max_frames"], "128");
}

#[test]
fn signal_and_frame_limit_are_configurable() {
    let exe = harness("exact");
    let dir = scratch_dir("custom-signal");
    let env = [
        ("LEAKPROBE_SAMPLE", "1"),
        ("LEAKPROBE_SIGNAL", "SIGRTMIN+4"),
        ("LEAKPROBE_MAX_FRAMES", "3"),
    ];
    let mut p = Probe::start(&exe, &[], &dir, &env);
    p.expect_line("READY", Duration::from_secs(30));
    let dump = p.dump_with(libc::SIGRTMIN() + 4);
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(dump.meta["signal"], "SIGRTMIN+4");
    assert!(
        dump.rows.iter().all(|r| r.frames.len() <= 4),
        "a stack is longer than 3 frames plus the allocator frame"
    );
    assert!(dump.rows.iter().any(|r| r.frames.len() == 4));
}

#[test]
fn unwritable_dump_directory_is_reported_and_recovers() {
    let exe = harness("exact");
    let base = scratch_dir("late-dir");
    let dir = base.join("created-later");
    let mut p = Probe::start(&exe, &[], &dir, &[]);
    p.expect_line("READY", Duration::from_secs(30));
    p.signal(libc::SIGUSR2);
    wait_for(
        "failed-dump message",
        || p.stderr().contains("cannot write dump"),
        || p.stderr(),
    );
    std::fs::create_dir(&dir).unwrap();
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(dump.path.starts_with(&dir));
    let complaints = stderr
        .lines()
        .filter(|l| l.starts_with("leakprobe: ") && !l.contains("wrote"))
        .count();
    assert_eq!(
        complaints, 2,
        "one line at load, one for the failed dump:\n{stderr}"
    );
}

/// Everyday programs give the same output with the library preloaded.
#[test]
fn ordinary_programs_are_unaffected() {
    let script = "import hashlib, json, threading\n\
        out = []\n\
        def work(i):\n    out.append(hashlib.sha256(json.dumps([list(range(i*100))]*50).encode()).hexdigest())\n\
        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]\n\
        [t.start() for t in ts]; [t.join() for t in ts]\n\
        print(sorted(out))";
    let commands: [(&str, Vec<&str>); 3] = [
        ("python3", vec!["-c", script]),
        ("sh", vec!["-c", "seq 1 200000 | sort -r | sha256sum"]),
        ("ls", vec!["-la", "/usr/lib"]),
    ];
    for (prog, args) in commands {
        let plain = run(Command::new(prog).args(&args));
        for sample in ["1", "4096"] {
            let probed = run(Command::new(prog)
                .args(&args)
                .env("LD_PRELOAD", library())
                .env("LEAKPROBE_SAMPLE", sample)
                .env("LEAKPROBE_DIR", scratch_dir("ordinary"))
                .stderr(Stdio::inherit()));
            assert_eq!(
                plain, probed,
                "{prog} {args:?} with LEAKPROBE_SAMPLE={sample}"
            );
        }
    }
}

#[test]
fn dump_at_exit_holds_what_leaked() {
    let exe = harness("at_exit");
    let dir = scratch_dir("at-exit");
    let p = Probe::start(
        &exe,
        &[],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1"), ("LEAKPROBE_DUMP_AT_EXIT", "1")],
    );
    let pid = p.pid();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    let dumps = dump_files_of(&dir, pid);
    assert_eq!(dumps.len(), 1, "{stderr}");
    let sites = Dump::read(&dumps[0]).by_function(&exe);
    let leaked = &sites["site_leaked_at_exit"];
    assert_eq!((leaked.live_count, leaked.live_bytes), (10, 40_000));
    assert_eq!(sites["site_freed"].live_count, 0);
    assert_eq!(sites["site_freed"].alloc_count, 100);
}

#[test]
fn messages_also_go_to_a_log_file_next_to_the_dumps() {
    use std::os::unix::fs::PermissionsExt;
    let exe = harness("exact");
    let dir = scratch_dir("log-file");
    let mut p = Probe::start(&exe, &[], &dir, &[]);
    p.expect_line("READY", Duration::from_secs(30));
    let dump = p.dump();
    let pid = p.pid();
    let (status, _) = p.finish(Duration::from_secs(30));
    assert!(status.success());
    let log = dir.join(format!("leakprobe.{pid}.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(
        text.contains(&format!("leakprobe: wrote {}", dump.path.display())),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn no_inherit_takes_the_library_out_of_children() {
    let lib = library();
    let echo = |no_inherit: &str| {
        run(Command::new("sh")
            .args(["-c", "echo \"[$LD_PRELOAD]\""])
            .env(
                "LD_PRELOAD",
                format!("{}:/nonexistent/other.so", lib.display()),
            )
            .env("LEAKPROBE_NO_INHERIT", no_inherit)
            .env("LEAKPROBE_DIR", scratch_dir("no-inherit"))
            .stderr(Stdio::null()))
    };
    assert_eq!(echo("1").trim(), "[/nonexistent/other.so]");
    assert_eq!(
        echo("0").trim(),
        format!("[{}:/nonexistent/other.so]", lib.display())
    );
}

/// The C API of include/leakprobe.h, looked up with dlsym(RTLD_DEFAULT).
#[test]
fn c_api_dumps_on_demand_and_pauses_sampling() {
    let exe = harness("capi");
    let dir = scratch_dir("capi");
    let target = dir.join("explicit.heap");
    let mut p = Probe::start(
        &exe,
        &[target.to_str().unwrap()],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1")],
    );
    assert_eq!(
        p.expect_line("ACTIVE", Duration::from_secs(30)),
        "ACTIVE 1 0"
    );
    assert_eq!(
        p.expect_line("DUMP", Duration::from_secs(60)),
        "DUMP 0 0 -1"
    );
    let pid = p.pid();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("cannot write dump /nonexistent/dir/x.heap"),
        "{stderr}"
    );
    let sites = Dump::read(&target).by_function(&exe);
    assert_eq!(
        sites["site_active"].live_count, 5,
        "frees are tracked while inactive"
    );
    assert!(
        !sites.contains_key("site_inactive"),
        "sampled while inactive"
    );
    assert_eq!(
        dump_files_of(&dir, pid).len(),
        1,
        "leakprobe_dump(NULL) writes into the dump directory"
    );

    let plain = run(Command::new(&exe).arg(&target));
    assert_eq!(plain.trim(), "NO LEAKPROBE");
}

/// LEAKPROBE_DUMP_SECONDS dumps every T seconds; LEAKPROBE_MAX_DUMPS keeps
/// the newest N and removes the older ones.
#[test]
fn periodic_dumps_respect_the_cap() {
    let exe = harness("demo");
    let dir = scratch_dir("periodic");
    let env = [
        ("LEAKPROBE_DUMP_SECONDS", "1"),
        ("LEAKPROBE_MAX_DUMPS", "3"),
    ];
    let mut p = Probe::start(&exe, &[], &dir, &env);
    p.expect_line("demo: pid", Duration::from_secs(30));
    let started = Instant::now();
    // Dump #5 is trimmed to the newest three before #6 is written (and its
    // line logged): then nothing older than #3 is left, and #3 only while
    // #6's own trim is under way.
    let sixth = dir.join(format!("leakprobe.{}.6.heap", p.pid()));
    wait_for(
        "dump #6",
        || p.stderr().contains(&format!("wrote {} ", sixth.display())),
        || p.stderr(),
    );
    let elapsed = started.elapsed();
    let seqs: Vec<u64> = p.dump_files().iter().map(|f| seq_of(f)).collect();
    p.signal(libc::SIGTERM);
    // The first is due a second after the library loaded, before the
    // program's first line.
    assert!(
        (Duration::from_millis(5500)..Duration::from_secs(12)).contains(&elapsed),
        "about one dump a second: #6 came after {elapsed:?}"
    );
    let newest = *seqs.last().unwrap();
    assert!(
        seqs == (newest - 2..=newest).collect::<Vec<_>>() || (newest == 6 && seqs == [3, 4, 5, 6]),
        "the newest 3 are kept: {seqs:?}"
    );
}

/// LEAKPROBE_KEEP=3 with LEAKPROBE_DUMP_SECONDS=1 for 10 s: after each
/// automatic dump (by its sequence number and its log line) only the newest
/// three automatic ones are on disk; a dump asked for and the exit dump are
/// not counted and stay; a file and a link planted under automatic dumps'
/// names are not the library's and stay too (and the link's target).
#[test]
fn keep_bounds_the_automatic_dumps_only() {
    let exe = harness("exact");
    let dir = scratch_dir("keep");
    let env = [
        ("LEAKPROBE_DUMP_SECONDS", "1"),
        ("LEAKPROBE_KEEP", "3"),
        ("LEAKPROBE_DUMP_AT_EXIT", "1"),
    ];
    let mut p = Probe::start(&exe, &[], &dir, &env);
    p.expect_line("READY", Duration::from_secs(30));
    let asked = seq_of(&p.dump_tagged().path);
    let pid = p.pid();
    let name = |n: u64| dir.join(format!("leakprobe.{pid}.{n}.heap"));
    let written = |n: u64| {
        let line = format!("wrote {} ", name(n).display());
        wait_for(
            &format!("dump #{n}"),
            || p.stderr().contains(&line),
            || p.stderr(),
        );
    };
    // The first automatic dump after it, replaced by a file of the test's.
    let planted = asked + 1;
    written(planted);
    let ours = dir.join("ours.tmp");
    std::fs::write(&ours, "not leakprobe's\n").unwrap();
    std::fs::rename(&ours, name(planted)).unwrap();
    // The next one, replaced by a link to a file of the test's.
    let linked = planted + 1;
    written(linked);
    let target = dir.join("target.txt");
    std::fs::write(&target, "linked to\n").unwrap();
    std::fs::remove_file(name(linked)).unwrap();
    std::os::unix::fs::symlink(&target, name(linked)).unwrap();
    let started = Instant::now();
    let mut last = linked;
    while started.elapsed() < Duration::from_secs(10) {
        last += 1;
        written(last);
        let automatic: Vec<u64> = p
            .dump_files()
            .iter()
            .map(|f| seq_of(f))
            .filter(|&n| n != asked && n != planted && n != linked && n <= last)
            .collect();
        let newest: Vec<u64> = (last.saturating_sub(2).max(linked + 1)..=last).collect();
        assert_eq!(automatic, newest, "after dump #{last}");
    }
    let (status, stderr) = p.finish(Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(last >= linked + 6, "about one a second: {last}");
    let on_disk: Vec<u64> = dump_files_of(&dir, pid).iter().map(|f| seq_of(f)).collect();
    let exit = *on_disk.last().unwrap();
    assert!(exit > last, "the exit dump: {on_disk:?}");
    let newest: Vec<u64> = on_disk
        .iter()
        .copied()
        .filter(|&n| n != asked && n != planted && n != linked && n != exit)
        .collect();
    assert_eq!(newest.len(), 3, "{on_disk:?}");
    assert!(
        on_disk.contains(&asked),
        "the dump asked for stays: {on_disk:?}"
    );
    assert_eq!(
        std::fs::read_to_string(name(planted)).unwrap(),
        "not leakprobe's\n"
    );
    assert!(std::fs::symlink_metadata(name(linked))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "linked to\n");
}

/// LEAKPROBE_PERIOD, the old name of LEAKPROBE_DUMP_SECONDS, still works and
/// says so in one line; with both set, the new name wins (the old one's 0
/// would mean no automatic dump), in one line too.
#[test]
fn the_old_name_of_dump_seconds_works_in_one_line() {
    let exe = harness("demo");
    let cases: [(&[(&str, &str)], &str); 2] = [
        (
            &[("LEAKPROBE_PERIOD", "1")],
            "taken as LEAKPROBE_DUMP_SECONDS",
        ),
        (
            &[("LEAKPROBE_PERIOD", "0"), ("LEAKPROBE_DUMP_SECONDS", "1")],
            "LEAKPROBE_DUMP_SECONDS is set too and is used (LEAKPROBE_PERIOD=\"0\" ignored)",
        ),
    ];
    for (env, said) in cases {
        let dir = scratch_dir("dump-seconds-alias");
        let mut p = Probe::start(&exe, &[], &dir, env);
        p.expect_line("demo: pid", Duration::from_secs(30));
        // Nothing asks for a dump: one comes only if a second took effect.
        p.wait_for_new_dump(Duration::from_secs(30));
        p.signal(libc::SIGTERM);
        let stderr = p.stderr();
        let lines: Vec<_> = stderr
            .lines()
            .filter(|l| l.contains("LEAKPROBE_PERIOD"))
            .collect();
        assert_eq!(lines.len(), 1, "{env:?}: {stderr}");
        let old = "leakprobe: LEAKPROBE_PERIOD is the old name of LEAKPROBE_DUMP_SECONDS";
        assert!(lines[0].starts_with(old), "{}", lines[0]);
        assert!(lines[0].ends_with(said), "{}", lines[0]);
    }
}

/// LEAKPROBE_INTERVAL dumps every N bytes allocated (estimated from samples).
#[test]
fn interval_dumps_follow_the_bytes_allocated() {
    let exe = harness("series");
    let dir = scratch_dir("interval");
    // Each step allocates 16 MiB kept + 24 MiB cached (first two) + 32 MiB freed.
    let env = [
        ("LEAKPROBE_SAMPLE", "65536"),
        ("LEAKPROBE_INTERVAL", "134217728"),
    ];
    let mut p = Probe::start(&exe, &[], &dir, &env);
    p.expect_line("READY", Duration::from_secs(30));
    for step in 1..=6 {
        p.write_stdin("step\n");
        p.expect_line(&format!("STEP {step}"), Duration::from_secs(30));
    }
    // 2 x 72 + 4 x 48 = 336 MiB allocated: two or three 128 MiB marks
    // crossed. A mark crossed within a second of the last automatic dump
    // waits for that second (MIN_AUTOMATIC_GAP), so the second dump may
    // come after the last step: wait for it.
    wait_for(
        "two interval dumps",
        || p.dump_files().len() >= 2,
        || p.stderr(),
    );
    let written = p.dump_files().len();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert!((2..=3).contains(&written), "{written} interval dumps");
}

/// LEAKPROBE_PEAK=1 keeps the live profile as of the highest live heap: a
/// 500 MiB spike that is freed before any dump is still seen.
#[test]
fn the_peak_profile_shows_a_spike_that_is_gone() {
    let exe = harness("spike");
    let dir = scratch_dir("peak");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_PEAK", "1")]);
    p.expect_line("READY", Duration::from_secs(30));
    p.write_stdin("go\n");
    p.expect_line("HELD", Duration::from_secs(30));
    // Peaks are written every 5 %: the spike is freed once one holds most
    // of it.
    let truth = 500.0 * (1u64 << 20) as f64;
    let peak_file = dir.join(format!("leakprobe.{}.peak.heap", p.pid()));
    wait_for(
        "peak profile with the spike",
        || {
            Dump::try_read(&peak_file)
                .is_some_and(|d| d.meta_u64("estimated_live_bytes") as f64 >= 0.9 * truth)
        },
        || p.stderr(),
    );
    p.write_stdin("free\n");
    p.expect_line("DONE", Duration::from_secs(30));
    let after = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    assert_eq!(after.by_function(&exe)["site_spike"].live_count, 0);
    // The later, lower heap did not replace it.
    let peak = Dump::read(&peak_file);
    let spike = &peak.by_function(&exe)["site_spike"];
    let period = peak.period as f64;
    let block = (1u64 << 20) as f64;
    let estimate = spike.live_bytes as f64 / (1.0 - (-block / period).exp());
    assert!(
        (estimate / truth - 1.0).abs() < 0.10,
        "peak profile holds {estimate:.0} bytes at site_spike, truth {truth}"
    );
}
