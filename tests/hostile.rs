//! Hostile surroundings (issue 17): names planted in a shared sticky
//! directory, a dump directory re-made by another user, a program that owns
//! its descriptors, a stderr nobody reads, the address-space limit, and
//! settings at the edge. Each time the program is unaffected, nothing is
//! written where it must not be, and the dump or one clear line comes out.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The other user of the machine.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The lines of `text` that contain `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Plant {
    Fifo,
    File,
    HardLink,
    Directory,
}

/// Puts `kind` at `path` as the other user would (`secret`: a file of root's
/// that a hard link points to).
fn plant(kind: Plant, path: &Path, secret: &Path) {
    match kind {
        Plant::Fifo => {
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: mkfifo with a C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        }
        Plant::File => std::fs::write(path, "planted\n").unwrap(),
        Plant::HardLink => std::fs::hard_link(secret, path).unwrap(),
        Plant::Directory => std::fs::create_dir(path).unwrap(),
    }
    if kind != Plant::HardLink {
        set_mode(
            path,
            0o666 | if kind == Plant::Directory { 0o111 } else { 0 },
        );
        if is_root() {
            std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
}

fn assert_untouched(kind: Plant, path: &Path, secret: &Path) {
    let m = std::fs::symlink_metadata(path).unwrap();
    match kind {
        Plant::Fifo => assert!(m.file_type().is_fifo()),
        Plant::File => assert_eq!(std::fs::read_to_string(path).unwrap(), "planted\n"),
        Plant::HardLink => {
            assert_eq!(m.ino(), std::fs::metadata(secret).unwrap().ino());
            assert_eq!(std::fs::read_to_string(secret).unwrap(), "secret\n");
        }
        Plant::Directory => assert_eq!(std::fs::read_dir(path).unwrap().count(), 0),
    }
}

/// A regular file of this process's user, mode 0600, one link.
fn assert_ours(path: &Path) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(m.file_type().is_file(), "{}", path.display());
    // SAFETY: geteuid has no preconditions.
    assert_eq!(m.uid(), unsafe { libc::geteuid() });
    assert_eq!(
        (m.mode() & 0o777, m.nlink()),
        (0o600, 1),
        "{}",
        path.display()
    );
}

#[test]
fn names_planted_in_a_shared_directory_are_skipped_never_used() {
    let exe = harness("exact");
    let secret_dir = scratch_dir("planted-secret");
    let secret = secret_dir.join("secret");
    std::fs::write(&secret, "secret\n").unwrap();
    set_mode(&secret, 0o600);
    for kind in [Plant::Fifo, Plant::File, Plant::HardLink, Plant::Directory] {
        let dir = scratch_dir(&format!("planted-{kind:?}"));
        set_mode(&dir, 0o1777);
        let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_DUMP_AT_EXIT", "1")]);
        p.expect_line("READY", Duration::from_secs(30));
        let pid = p.pid();
        let planted: Vec<_> = [
            format!("leakprobe.{pid}.log"),
            format!("leakprobe.{pid}.0.heap"),
            format!(".leakprobe.{pid}.0.heap.tmp"),
            format!("leakprobe.{pid}.1.heap"),
        ]
        .iter()
        .map(|n| dir.join(n))
        .collect();
        for path in &planted {
            plant(kind, path, &secret);
        }
        // A reader on the planted FIFO: anything written there would show.
        let mut fifo_reader = (kind == Plant::Fifo).then(|| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&planted[0])
                .unwrap()
        });

        let first = p.dump();
        assert_eq!(seq_of(&first.path), 2, "{kind:?}");
        let second = p.dump();
        assert_eq!(seq_of(&second.path), 3, "{kind:?}");
        let (status, stderr) = p.finish(Duration::from_secs(30));
        assert!(status.success(), "{kind:?}: {status}\n{stderr}");

        let skipped = format!(
            "leakprobe.{pid}.0.heap to leakprobe.{pid}.1.heap in {} are taken by files leakprobe did not write: skipped",
            dir.display()
        );
        let lines = lines_with(&stderr, "skipped");
        assert_eq!(
            lines,
            [format!("leakprobe: {skipped}")],
            "{kind:?}\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("this process's log is now leakprobe.{pid}.1.log")),
            "{kind:?}\n{stderr}"
        );
        // Every dump (the exit dump too) and the log are new files of ours.
        let log = dir.join(format!("leakprobe.{pid}.1.log"));
        assert_ours(&log);
        let text = std::fs::read_to_string(&log).unwrap();
        for seq in 2..=4 {
            let dump = dir.join(format!("leakprobe.{pid}.{seq}.heap"));
            assert_ours(&dump);
            assert!(
                text.contains(&format!("wrote {}", dump.display())),
                "{kind:?}\n{text}"
            );
        }
        for path in &planted {
            assert_untouched(kind, path, &secret);
        }
        if let Some(reader) = fifo_reader.as_mut() {
            let mut got = Vec::new();
            let _ = reader.read_to_end(&mut got);
            assert!(got.is_empty(), "the planted FIFO received {got:?}");
        }
        let strays: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".tmp") && !planted.contains(p))
            .collect();
        assert!(strays.is_empty(), "{strays:?}");
    }
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1 + 4);
}

#[test]
fn a_dump_directory_made_again_by_another_user_is_not_used() {
    if !can_run_as_root(
        "a_dump_directory_made_again_by_another_user_is_not_used",
        "acts as uid 65534",
    ) {
        return;
    }
    let base = scratch_dir("remade");
    set_mode(&base, 0o1777);
    let dir = base.join("dumps");
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o755);
    let exe = harness("exact");
    let mut p = Probe::start(&exe, &[], &dir, &[]);
    p.expect_line("READY", Duration::from_secs(30));
    assert!(p.dump().path.starts_with(&dir));

    // A tmp cleaner removes it; the other user makes it again, open to all.
    std::fs::remove_dir_all(&dir).unwrap();
    run(Command::new("mkdir")
        .arg("-m")
        .arg("777")
        .arg(&dir)
        .uid(NOBODY)
        .gid(NOBODY));
    p.signal(libc::SIGUSR2);
    wait_for(
        "refusal",
        || p.stderr().contains("cannot write dump"),
        || p.stderr(),
    );
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    let refusals = lines_with(&stderr, "cannot write dump");
    assert_eq!(refusals.len(), 1, "{stderr}");
    assert!(
        refusals[0].contains(&format!("{} was made again", dir.display()))
            && refusals[0].contains(&format!("owned by uid {NOBODY}")),
        "{}",
        refusals[0]
    );
    let inside: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(
        inside.is_empty(),
        "written into the other user's directory: {inside:?}"
    );
}

/// The program closes every descriptor (or puts its data file on fd 2) after
/// the library has opened its own: the library's lines go to its log, never
/// into the program's files.
#[test]
fn a_program_that_reuses_fd_2_gets_no_library_lines_in_its_files() {
    let exe = harness("fds");
    for mode in ["close-all", "dup2"] {
        let dir = scratch_dir(&format!("fds-{mode}"));
        let data_dir = scratch_dir(&format!("fds-{mode}-data"));
        let data = data_dir.join("data");
        let mut p = Probe::start(&exe, &[mode, data.to_str().unwrap()], &dir, &[]);
        p.expect_line("READY before", Duration::from_secs(30));
        let before = p.dump();
        p.write_stdin("go\n");
        p.expect_line("READY after", Duration::from_secs(30));
        let after = p.dump();
        let pid = p.pid();
        let (status, stderr) = p.finish(Duration::from_secs(30));
        assert!(status.success(), "{mode}: {status}\n{stderr}");
        assert_eq!(std::fs::read_to_string(&data).unwrap(), "end\n", "{mode}");
        for i in 1..=8 {
            let decoy = data_dir.join(format!("data.{i}"));
            let text = std::fs::read_to_string(&decoy).unwrap_or_default();
            assert!(text.is_empty(), "{mode}: {} got {text:?}", decoy.display());
        }
        // One log, reopened after the program closed it.
        let log = std::fs::read_to_string(dir.join(format!("leakprobe.{pid}.log"))).unwrap();
        for dump in [&before, &after] {
            assert!(
                log.contains(&format!("wrote {}", dump.path.display())),
                "{mode}\n{log}"
            );
        }
        assert!(!dir.join(format!("leakprobe.{pid}.1.log")).exists());
        // The stderr it started with, while it was fd 2.
        assert!(stderr.contains(&format!("wrote {}", before.path.display())));
        assert!(!stderr.contains(&format!("wrote {}", after.path.display())));
    }
}

/// A program that gives its stderr up (as `daemon()` does) lets whoever
/// reads it see the end at once: the library holds no copy of it.
#[test]
fn a_stderr_the_program_gave_up_is_not_held_open() {
    let exe = harness("fds");
    let dir = scratch_dir("stderr-given-up");
    let data = dir.with_extension("data");
    let _ = std::fs::remove_file(&data);
    let mut child = Command::new(&exe)
        .args(["dup2", data.to_str().unwrap()])
        .env("LD_PRELOAD", library())
        .env("LEAKPROBE_DIR", &dir)
        .env("LEAKPROBE_SAMPLE", "lots")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "READY before\n");
    std::io::Write::write_all(&mut stdin, b"go\n").unwrap();
    // Its stderr ends while it runs (it waits for the end of its stdin).
    let mut pipe = child.stderr.take().unwrap();
    let (tx, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let stderr = ended
        .recv_timeout(Duration::from_secs(30))
        .expect("its stderr is still held open");
    assert!(child.try_wait().unwrap().is_none(), "the program ended");
    assert!(stderr.contains("LEAKPROBE_SAMPLE"), "{stderr}");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// A stderr whose reader has gone: the library's lines are lost, the
/// program is not killed by SIGPIPE (the bad setting is reported on the main
/// thread, at load).
#[test]
fn a_closed_stderr_pipe_never_raises_sigpipe() {
    let exe = harness("exact");
    let dir = scratch_dir("sigpipe");
    let mut ends = [0; 2];
    // SAFETY: pipe writes two descriptors, which the test then owns.
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
    // SAFETY: closing the read end: nobody will ever read.
    unsafe { libc::close(ends[0]) };
    // SAFETY: the write end is ours; Stdio takes it over.
    let stderr = unsafe { <Stdio as std::os::fd::FromRawFd>::from_raw_fd(ends[1]) };
    let mut child = Command::new(&exe)
        .env("LD_PRELOAD", library())
        .env("LEAKPROBE_DIR", &dir)
        .env("LEAKPROBE_SAMPLE", "lots")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("READY"), "{line:?}");
    let pid = child.id() as i32;
    // SAFETY: kill with our child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR2) }, 0);
    let log = dir.join(format!("leakprobe.{pid}.log"));
    wait_for(
        "log line",
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("wrote")),
        || format!("{:?}", std::fs::read_dir(&dir).unwrap().collect::<Vec<_>>()),
    );
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status} (signal {:?})", status.signal());
    assert_eq!(dump_files_of(&dir, pid).len(), 1);
}

/// At the address-space limit, with every byte the allocator had handed
/// out, a dump fails with one line and the program goes on; once memory is
/// back, the next dump works and counts the failure.
#[test]
fn a_dump_at_the_address_space_limit_fails_with_one_line() {
    let exe = harness("out_of_memory");
    let dir = scratch_dir("address-space");
    let limit = |cmd: &mut Command| {
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 256 << 20,
                    rlim_max: 256 << 20,
                };
                match libc::setrlimit(libc::RLIMIT_AS, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            })
        };
    };
    // One arena: the collector thread has no private heap to fall back on.
    let env = [("MALLOC_ARENA_MAX", "1")];
    let mut p = Probe::start_with(&exe, &[], &dir, &env, limit);
    p.expect_line("READY", Duration::from_secs(60));
    p.signal(libc::SIGUSR2);
    wait_for(
        "failure line",
        || p.stderr().contains("out of memory"),
        || p.stderr(),
    );
    assert!(p.dump_files().is_empty());
    p.write_stdin("free\n");
    p.expect_line("FREED", Duration::from_secs(30));
    let dump = p.dump();
    assert_eq!(dump.meta["dumps_failed_out_of_memory"], "1");
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    let lines = lines_with(&stderr, "out of memory");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("leakprobe: cannot write a dump: out of memory"));
}

#[test]
fn dump_seconds_too_long_to_schedule_are_one_line_and_off() {
    let exe = harness("exact");
    for value in ["18446744073709551615", "18446744073709551614", "315360001"] {
        let dir = scratch_dir("huge-dump-seconds");
        let p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_DUMP_SECONDS", value)]);
        let (dump, stderr) = p.dump_at_ready();
        let lines = lines_with(&stderr, "LEAKPROBE_DUMP_SECONDS");
        assert_eq!(lines.len(), 1, "{value}: {stderr}");
        assert!(lines[0].ends_with("using 0"), "{}", lines[0]);
        assert_eq!(seq_of(&dump.path), 0);
    }
    // The longest accepted time is scheduled without overflow.
    let dir = scratch_dir("longest-dump-seconds");
    let p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_DUMP_SECONDS", "315360000")]);
    let (_, stderr) = p.dump_at_ready();
    assert!(!stderr.contains("LEAKPROBE_DUMP_SECONDS"), "{stderr}");
}

#[test]
fn termination_signals_by_number_are_refused_and_keep_their_meaning() {
    let exe = harness("exact");
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGALRM] {
        let dir = scratch_dir("signal-number");
        let number = sig.to_string();
        let no_core = |cmd: &mut Command| {
            // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(|| {
                    let none = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::setrlimit(libc::RLIMIT_CORE, &none);
                    Ok(())
                })
            };
        };
        let env = [("LEAKPROBE_SIGNAL", number.as_str())];
        let mut p = Probe::start_with(&exe, &[], &dir, &env, no_core);
        p.expect_line("READY", Duration::from_secs(30));
        let dump = p.dump();
        assert_eq!(dump.meta["signal"], "SIGUSR2");
        p.signal(sig);
        let status = p.child.wait().unwrap();
        assert_eq!(status.signal(), Some(sig), "{sig}: {status}");
        let stderr = p.stderr();
        let lines = lines_with(&stderr, "LEAKPROBE_SIGNAL");
        assert_eq!(lines.len(), 1, "{sig}: {stderr}");
        assert!(
            lines[0].contains("is not a signal that can request dumps")
                && lines[0].ends_with("using 12"),
            "{}",
            lines[0]
        );
        assert_eq!(p.dump_files().len(), 1, "{sig} made a dump");
    }
}
