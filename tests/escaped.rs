//! Text from outside is data, never commands: a program whose path holds
//! control characters and bytes that are not UTF-8, writing into a dump
//! directory whose name holds a newline and an escape sequence, gets lines
//! (stderr and leakprobe.PID.log) that are each one line with no control
//! character, and a dump whose `program:` line gives back the path's exact
//! bytes (escaped as docs/published.md, "Escaped text", says).

mod common;
use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

/// The script's decoding: `\\`, `\n`, `\r`, `\t`, `\xNN` back to bytes.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
            }
            Some(c) => out.push(c),
            None => panic!("a lone backslash ends {text:?}"),
        }
    }
    out
}

fn assert_clean_lines(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            !line.chars().any(|c| c.is_control()),
            "{what}: a control character in {line:?}"
        );
        assert!(line.starts_with("leakprobe: "), "{what}: {line:?}");
    }
}

#[test]
fn paths_with_control_characters_and_bytes_not_utf8_stay_data() {
    let base = scratch_dir("escaped");
    let name = OsStr::from_bytes(b"prog\x1b[31m\nleakprobe: forged\\\xff");
    let program = base.join(name);
    std::fs::copy(harness("selfsig"), &program).unwrap();
    let dir = base.join(OsStr::from_bytes(b"dumps\n\x1b[31mred\r"));
    std::fs::create_dir(&dir).unwrap();
    let mut p = Probe::start(&program, &["serve"], &dir, &[]);
    p.expect_line("READY", Duration::from_secs(30));
    let dump = p.dump_tagged();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_eq!(
        unescape(&dump.meta["program"]),
        std::fs::canonicalize(&program)
            .unwrap()
            .as_os_str()
            .as_bytes(),
        "{}",
        dump.meta["program"]
    );
    assert!(stderr.contains("leakprobe: wrote "), "{stderr:?}");
    assert_clean_lines("stderr", &stderr);
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|x| x == "log"))
        .expect("no log file");
    assert_clean_lines("log", &std::fs::read_to_string(log).unwrap());
}
