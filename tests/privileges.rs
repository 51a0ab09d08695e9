//! Privilege drops and chroot (the program starts as root, as daemons do):
//! dumps still land in the directory opened at load; a directory the new user
//! cannot write yields one message saying who needs which permission; in a
//! chroot without /proc the memory map comes from the dynamic linker.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const NOBODY: &str = "65534";

#[test]
fn after_setuid_the_new_user_is_told_what_it_needs_then_dumps_work() {
    if !can_run_as_root(
        "after_setuid_the_new_user_is_told_what_it_needs_then_dumps_work",
        "starts as root and drops to uid 65534",
    ) {
        return;
    }
    let exe = harness("privdrop");
    let dir = scratch_dir("setuid");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = Probe::start(
        &exe,
        &["setuid", NOBODY],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1")],
    );
    p.expect_line("READY", Duration::from_secs(30));
    p.signal(libc::SIGUSR2);
    wait_for(
        "permission message",
        || p.stderr().contains("needs write"),
        || p.stderr(),
    );
    let message = p.stderr();
    assert!(
        message.contains(&format!("uid {NOBODY}"))
            && message.contains(&format!("permission on {}", dir.display())),
        "{message}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let dump = p.dump();
    let (status, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    let sites = dump.by_function(&exe);
    assert_eq!(
        (
            sites["site_before"].live_count,
            sites["site_after"].live_count
        ),
        (10, 10)
    );
}

#[test]
fn in_a_chroot_dumps_land_outside_with_the_loader_map() {
    if !can_run_as_root(
        "in_a_chroot_dumps_land_outside_with_the_loader_map",
        "chroot",
    ) {
        return;
    }
    let exe = harness("privdrop");
    let dir = scratch_dir("chroot");
    let jail = scratch_dir("chroot-jail");
    let p = Probe::start(
        &exe,
        &["chroot", jail.to_str().unwrap()],
        &dir,
        &[("LEAKPROBE_SAMPLE", "1")],
    );
    let (dump, _stderr) = p.dump_at_ready();
    assert!(dump.path.starts_with(&dir));
    // /proc is gone: the map is the loader's, executable segments named by
    // their paths as loaded (the vDSO has no file).
    assert!(
        dump.maps
            .iter()
            .all(|m| m.path.starts_with('/') || m.path == "linux-vdso.so.1"),
        "{:?}",
        dump.maps
    );
    assert!(
        dump.maps
            .iter()
            .any(|m| m.path.ends_with("libleakprobe.so")),
        "{:?}",
        dump.maps
    );
    assert_eq!(
        dump.meta["program"],
        std::fs::canonicalize(&exe).unwrap().display().to_string()
    );
    let sites = dump.by_function(&exe);
    assert_eq!(
        (
            sites["site_before"].live_count,
            sites["site_after"].live_count
        ),
        (10, 10)
    );
}
