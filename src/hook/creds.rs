//! The `setuid` family: a single-threaded program's helper thread
//! (`collect::single`), which glibc does not know, follows the program's
//! new credentials (glibc changes only the threads it knows), so it never
//! keeps privileges the program gave up; and the published record says
//! whether the new credentials may still write dumps
//! (`profile::published`).

use core::ffi::c_int;

/// The helper follows the program's new credentials, once they changed;
/// a dump directory they cannot write into is a refusal `leakprobe dump`
/// reads at once (`profile::published`).
fn changed(rc: &c_int) {
    if *rc == 0 {
        crate::sys::errno::preserved(|| {
            crate::collect::single::credentials_changed();
            if let Some(cfg) = crate::settings::get() {
                crate::profile::published::credentials_changed(&cfg.dir);
            }
        });
    }
}

forwarding!(setuid(uid: libc::uid_t) -> c_int, before = || {}, then = changed);
forwarding!(setgid(gid: libc::gid_t) -> c_int, before = || {}, then = changed);
forwarding!(seteuid(uid: libc::uid_t) -> c_int, before = || {}, then = changed);
forwarding!(setegid(gid: libc::gid_t) -> c_int, before = || {}, then = changed);
forwarding!(setreuid(r: libc::uid_t, e: libc::uid_t) -> c_int, before = || {}, then = changed);
forwarding!(setregid(r: libc::gid_t, e: libc::gid_t) -> c_int, before = || {}, then = changed);
forwarding!(setresuid(r: libc::uid_t, e: libc::uid_t, s: libc::uid_t) -> c_int, before = || {}, then = changed);
forwarding!(setresgid(r: libc::gid_t, e: libc::gid_t, s: libc::gid_t) -> c_int, before = || {}, then = changed);
forwarding!(setgroups(n: libc::size_t, list: *const libc::gid_t) -> c_int, before = || {}, then = changed);
