//! The bootstrap arena: blocks allocated while the library resolves the next
//! allocator (here by the program's own `dlsym`, which the library's lookups
//! reach) are served from the arena, and the program may use them as any
//! block: realloc moves one out with its contents, free is harmless.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn blocks_allocated_while_symbols_resolve_are_freed_and_reallocated_correctly() {
    let exe = harness("bootstrap");
    let dir = scratch_dir("bootstrap");
    let mut p = Probe::start(&exe, &[], &dir, &[("LEAKPROBE_SAMPLE", "1")]);
    assert_eq!(p.expect_line("ARENA", Duration::from_secs(30)), "ARENA ok");
    let (dump, stderr) = p.dump_at_ready();
    assert_sites_exact(
        &dump,
        &exe,
        "bootstrap.c",
        &[("site_moved", 1, 5000, 1, 5000)],
    );
    // Arena blocks are not samples: nothing is attributed to dlsym.
    let sites = dump.by_function(&exe);
    assert!(!sites.contains_key("dlsym"), "{:?}", sites.keys());
    assert_eq!(dump.meta_u64("samples_unresolved"), 0);
    assert!(
        stderr.lines().all(|l| l.starts_with("leakprobe: wrote")),
        "{stderr}"
    );
}
