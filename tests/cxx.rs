//! C++ operator new and delete in all forms (plain, array, nothrow, aligned,
//! sized): exact counts with LEAKPROBE_SAMPLE=1, the operator frame dropped
//! by both jeprof and pprof, and C++ semantics intact (bad_alloc propagates,
//! new_handler runs, nothrow returns null); with libstdc++'s operators and
//! with those of jemalloc and tcmalloc, which reach the library's entry
//! points for some forms and not for others.

mod common;
use common::*;
use std::time::Duration;

const TRUTH: &[Truth] = &[
    ("site_new", 40, 40 * 800, 40, 40 * 800),
    ("site_new_scalar", 30, 30, 30, 30),
    ("site_new_nothrow", 20, 20 * 333, 20, 20 * 333),
    ("site_new_aligned", 10, 10 * 192, 10, 10 * 192),
    ("site_new_aligned_array", 10, 10 * 576, 10, 10 * 576),
    ("site_deleted", 0, 0, 150, 50 * (192 + 80 + 5)),
];

#[test]
fn every_operator_new_and_delete_is_exact() {
    every_operator_is_exact(None);
}

#[test]
fn every_operator_of_jemalloc_is_exact() {
    every_operator_is_exact(Some("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"));
}

#[test]
fn every_operator_of_tcmalloc_is_exact() {
    every_operator_is_exact(Some("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"));
}

/// The harness with the library and, after it, `allocator` if given.
fn every_operator_is_exact(allocator: Option<&str>) {
    let preload = match allocator {
        Some(a) if !std::path::Path::new(a).exists() => {
            eprintln!("SKIP: {a} is not installed");
            return;
        }
        Some(a) => format!("{} {a}", library().display()),
        None => library().display().to_string(),
    };
    let exe = harness("cxx_new");
    let name = allocator.map_or("libstdc++", |a| a.rsplit('/').next().unwrap_or(a));
    let dir = scratch_dir(&format!("cxx-{name}"));
    let env = [("LEAKPROBE_SAMPLE", "1"), ("LD_PRELOAD", &preload)];
    let mut p = Probe::start(&exe, &[], &dir, &env);
    let semantics = p.expect_line("BAD_ALLOC", Duration::from_secs(30));
    assert_eq!(semantics, "BAD_ALLOC ok HANDLER 1 NOTHROW null");
    let (dump, _stderr) = p.dump_at_ready();

    assert_sites_exact(&dump, &exe, "cxx_new.cc", TRUTH);
    assert_tools_show(&exe, &dump, "cxx_new.cc", TRUTH);
}
