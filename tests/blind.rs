//! A profile that cannot see says so: a program with its own malloc, and a
//! preload order that puts another allocator first, each get one line per
//! entry point at start and `blind` facts in every dump, with the allocator
//! that really serves malloc named; an ordinary program gets none.

mod common;
use common::*;
use std::time::Duration;

fn run(name: &str, preload_first: Option<&str>) -> (Dump, String) {
    let exe = harness(name);
    let dir = scratch_dir(&format!("blind_{name}_{}", preload_first.is_some()));
    let mut env = vec![];
    let preload;
    if let Some(first) = preload_first {
        preload = format!("{first} {}", library().display());
        env.push(("LD_PRELOAD", preload.as_str()));
    }
    let mut p = Probe::start(&exe, &[], &dir, &env);
    p.expect_line("READY", Duration::from_secs(30));
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    (dump, stderr)
}

#[test]
fn a_program_with_its_own_malloc_is_told_it_is_not_seen() {
    let (dump, stderr) = run("own_malloc", None);
    assert!(
        stderr.contains("cannot see every allocation: malloc is defined by the program itself"),
        "{stderr}"
    );
    let blind: Vec<_> = dump.meta_all("blind");
    assert!(blind
        .iter()
        .any(|b| b.starts_with("malloc is defined by the program itself")));
    assert!(
        dump.meta["allocator"].ends_with("own_malloc"),
        "{}",
        dump.meta["allocator"]
    );
}

#[test]
fn another_allocator_preloaded_first_is_named() {
    let jemalloc = installed("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "libjemalloc2");
    let (dump, stderr) = run("exact", Some(jemalloc));
    assert!(stderr.contains("malloc resolves to"), "{stderr}");
    assert!(
        stderr.contains("list libleakprobe.so first in LD_PRELOAD"),
        "{stderr}"
    );
    assert!(
        dump.meta["allocator"].contains("libjemalloc"),
        "{}",
        dump.meta["allocator"]
    );
}

#[test]
fn an_ordinary_program_gets_no_warning() {
    let (dump, stderr) = run("exact", None);
    assert!(!stderr.contains("cannot see"), "{stderr}");
    assert!(dump.meta_all("blind").is_empty());
}

/// Debian's python3.11 is non-PIE and takes malloc's address: its canonical
/// PLT entries look like definitions to dladdr, but are not one.
#[test]
fn a_non_pie_program_that_takes_mallocs_address_gets_no_warning() {
    let python = std::path::Path::new("/usr/bin/python3.11");
    if !python.exists() {
        skip(
            "a_non_pie_program_that_takes_mallocs_address_gets_no_warning",
            "no /usr/bin/python3.11 (Debian 12's python3)",
        );
        return;
    }
    let dir = scratch_dir("blind_python");
    let out = std::process::Command::new(python)
        .args(["-c", "print('ok')"])
        .env("LD_PRELOAD", library())
        .env("LEAKPROBE_DIR", &dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("cannot see"), "{stderr}");
}
