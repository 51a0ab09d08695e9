//! C++ operator new and delete in all forms (plain, array, nothrow, aligned,
//! sized): exact counts with LEAKPROBE_SAMPLE=1, the operator frame dropped
//! by both jeprof and pprof, and C++ semantics intact (bad_alloc propagates,
//! new_handler runs, nothrow returns null).

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

/// (site, live count, live bytes, allocated count, allocated bytes)
const TRUTH: &[(&str, u64, u64, u64, u64)] = &[
    ("site_new", 40, 40 * 800, 40, 40 * 800),
    ("site_new_scalar", 30, 30, 30, 30),
    ("site_new_nothrow", 20, 20 * 333, 20, 20 * 333),
    ("site_new_aligned", 10, 10 * 192, 10, 10 * 192),
    ("site_new_aligned_array", 10, 10 * 576, 10, 10 * 576),
    ("site_deleted", 0, 0, 150, 50 * (192 + 80 + 5)),
];

#[test]
fn every_operator_new_and_delete_is_exact() {
    let exe = harness("cxx_new");
    let dir = scratch_dir("cxx");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    let semantics = p.expect_line("BAD_ALLOC", Duration::from_secs(30));
    assert_eq!(semantics, "BAD_ALLOC ok HANDLER 1 NOTHROW null");
    p.expect_line("READY", Duration::from_secs(30));
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");

    let sites = dump.by_function(&exe);
    let lines = site_lines("cxx_new.cc");
    for &(name, live_n, live_b, alloc_n, alloc_b) in TRUTH {
        let got = sites.get(name).cloned().unwrap_or_default();
        assert_eq!(
            (
                got.live_count,
                got.live_bytes,
                got.alloc_count,
                got.alloc_bytes
            ),
            (live_n, live_b, alloc_n, alloc_b),
            "{name}"
        );
        if live_n > 0 {
            assert!(
                got.lines.iter().all(|&l| l == lines[name]),
                "{name}: lines {:?}",
                got.lines
            );
        }
    }

    let jeprof = run(Command::new("jeprof")
        .args(["--text", "--inuse_objects", "--lines"])
        .arg(&exe)
        .arg(&dump.path));
    let pprof = run(Command::new("go")
        .args([
            "tool",
            "pprof",
            "-text",
            "-lines",
            "-sample_index=inuse_objects",
        ])
        .arg(&exe)
        .arg(&dump.path));
    // Sites of at least 64 bytes: jeprof un-samples even period 1 by
    // 1/(1-exp(-size)), which is only 1 for sizes well above 1 byte.
    for (tool, out) in [("jeprof", &jeprof), ("pprof", &pprof)] {
        for &(name, live_n, ..) in TRUTH.iter().filter(|t| t.1 > 0 && t.2 / t.1 >= 64) {
            let at = format!("cxx_new.cc:{}", lines[name]);
            let found = out.lines().any(|l| {
                l.split_whitespace().next() == Some(&live_n.to_string())
                    && l.contains(&format!("{name} "))
                    && l.contains(&at)
            });
            assert!(
                found,
                "{tool} does not show {live_n} objects at {name} {at}:\n{out}"
            );
        }
        assert!(
            !out.contains("operator new"),
            "{tool} kept an operator new frame:\n{out}"
        );
    }
}
