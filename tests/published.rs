//! The record the library publishes (`leakprobe_published`, docs/published.md)
//! read as `scripts/leakprobe dump` reads it, through /proc/PID/mem at the
//! symbol's address: the dump directory and signal whatever the environment
//! now holds, the pid of the process that wrote it (a forked child rewrites
//! it), and a refusal while the library refuses every dump.

mod common;
use common::*;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::time::Duration;

const MAGIC: u64 = 0x4c45_414b_5052_4f42;

/// The symbol's address in the library file (`nm -D`).
fn symbol_value() -> u64 {
    let out = run(std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(library()));
    let line = out
        .lines()
        .find(|l| l.ends_with(" D leakprobe_published") || l.ends_with(" B leakprobe_published"))
        .unwrap_or_else(|| panic!("leakprobe_published is not exported:\n{out}"));
    u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap()
}

/// (version, body) of process `pid`'s record, read as a seqlock reader.
fn record_of(pid: i32) -> (u32, String) {
    let lib = std::fs::canonicalize(library()).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    // The mapping of the file's offset 0, whose address is its load bias
    // (the library's first segment is at address 0).
    let base = maps
        .lines()
        .find(|l| l.ends_with(lib.to_str().unwrap()) && l.split(' ').nth(2) == Some("00000000"))
        .map(|l| u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap())
        .expect("the library is not mapped");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let at = base + symbol_value();
    let mut record = [0u8; 4096];
    for _ in 0..1000 {
        mem.read_exact_at(&mut record, at).unwrap();
        let word = |o: usize| u64::from_ne_bytes(record[o..o + 8].try_into().unwrap());
        let half = |o: usize| u32::from_ne_bytes(record[o..o + 4].try_into().unwrap());
        assert_eq!(word(0), MAGIC);
        let seq = word(8);
        let mut again = [0u8; 8];
        mem.read_exact_at(&mut again, at + 8).unwrap();
        if seq % 2 == 1 || u64::from_ne_bytes(again) != seq {
            continue;
        }
        let len = half(16) as usize;
        let body = String::from_utf8(record[24..24 + len].to_vec()).unwrap();
        return (half(20), body);
    }
    panic!("the record never settled");
}

fn field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_record_names_the_directory_the_signal_and_the_process() {
    let dir = scratch_dir("published");
    let mut p = Probe::start(
        &harness("selfsig"),
        &["serve"],
        &dir,
        &[("LEAKPROBE_SIGNAL", "SIGUSR1")],
    );
    p.expect_line("READY", Duration::from_secs(30));
    let (version, body) = record_of(p.pid());
    assert_eq!(version, 1);
    use std::os::unix::ffi::OsStrExt;
    assert_eq!(
        field(&body, "dir"),
        Some(&*hex(dir.as_os_str().as_bytes())),
        "{body}"
    );
    assert_eq!(field(&body, "signal"), Some("10"), "{body}");
    assert_eq!(field(&body, "pid"), Some(&*p.pid().to_string()), "{body}");
    assert_eq!(field(&body, "refusal"), None, "{body}");
}

#[test]
fn a_forked_child_names_itself() {
    let dir = scratch_dir("published-fork");
    let mut p = Probe::start(&harness("selfsig"), &["fork"], &dir, &[]);
    let child: i32 = p.expect_line("CHILD", Duration::from_secs(30))[6..]
        .parse()
        .unwrap();
    p.expect_line("READY child", Duration::from_secs(30));
    let (_, body) = record_of(child);
    assert_eq!(field(&body, "pid"), Some(&*child.to_string()), "{body}");
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn a_directory_the_dropped_privileges_cannot_write_is_a_refusal_until_it_can() {
    if !can_run_as_root(
        "a_directory_the_dropped_privileges_cannot_write_is_a_refusal_until_it_can",
        "starts as root and drops to uid 65534",
    ) {
        return;
    }
    let dir = scratch_dir("published-setuid");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = Probe::start(&harness("privdrop"), &["setuid", "65534"], &dir, &[]);
    p.expect_line("READY", Duration::from_secs(30));
    let (_, body) = record_of(p.pid());
    let refusal = field(&body, "refusal").unwrap_or_else(|| panic!("no refusal:\n{body}"));
    assert!(refusal.contains("not writable by uid 65534"), "{refusal}");
    // Writable again: the next dump is written, and the refusal is gone.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    p.dump();
    // Said once the helper has the copy's report (just after the file).
    let pid = p.pid();
    wait_for(
        "the refusal withdrawn",
        || field(&record_of(pid).1, "refusal").is_none(),
        || record_of(pid).1,
    );
}
