//! C++ operator new and delete in all forms (plain, array, nothrow, aligned,
//! sized): exact counts with LEAKPROBE_SAMPLE=1, the operator frame dropped
//! by both jeprof and pprof, and C++ semantics intact (bad_alloc propagates,
//! new_handler runs, nothrow returns null).

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
    let exe = harness("cxx_new");
    let dir = scratch_dir("cxx");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    let semantics = p.expect_line("BAD_ALLOC", Duration::from_secs(30));
    assert_eq!(semantics, "BAD_ALLOC ok HANDLER 1 NOTHROW null");
    let (dump, _stderr) = p.dump_at_ready();

    assert_sites_exact(&dump, &exe, "cxx_new.cc", TRUTH);
    assert_tools_show(&exe, &dump, "cxx_new.cc", TRUTH);
}
