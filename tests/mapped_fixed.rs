//! A page mapped with `MAP_FIXED` over memory already held (a block of
//! glibc's malloc, which glibc unmaps with its own `munmap` when the block is
//! freed) is its holder's: nothing of it is live once the block is freed.
//! The same page committed into a `PROT_NONE` reservation is new memory,
//! live anonymous mmap.

mod common;
use common::*;
use std::time::Duration;

fn anon_bytes_after(shape: &str) -> u64 {
    let dir = scratch_dir(&format!("fixed-{shape}"));
    let env = [("LEAKPROBE_SAMPLE", "1")];
    let mut p = Probe::start(&harness("fixed_in_block"), &[shape], &dir, &env);
    p.expect_line("READY", Duration::from_secs(30));
    let dump = p.dump_tagged();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    dump.meta_u64("estimated_mapped_anon_bytes")
}

#[test]
fn a_fixed_page_inside_a_freed_malloc_block_is_not_live() {
    assert_eq!(anon_bytes_after("block"), 0);
}

#[test]
fn a_fixed_page_committed_into_a_reservation_is_live() {
    assert_eq!(anon_bytes_after("reserve"), 4096);
}
