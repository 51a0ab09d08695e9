//! The `setuid` family: a single-threaded program's helper thread
//! (`collect::single`), which glibc does not know, follows the program's
//! new credentials (glibc changes only the threads it knows), so it never
//! keeps privileges the program gave up.

use core::ffi::c_int;

macro_rules! changes_credentials {
    ($name:ident($($arg:ident: $ty:ty),*)) => {
        /// The helper follows the program's new credentials.
        ///
        /// # Safety
        /// As the C function.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            // SAFETY: the program's arguments, unchanged (the contract).
            let rc = unsafe { crate::next::slot::$name.get()($($arg),*) };
            if rc == 0 {
                crate::sys::errno::preserved(crate::collect::single::credentials_changed);
            }
            rc
        }
    };
}

changes_credentials!(setuid(uid: libc::uid_t));
changes_credentials!(setgid(gid: libc::gid_t));
changes_credentials!(seteuid(uid: libc::uid_t));
changes_credentials!(setegid(gid: libc::gid_t));
changes_credentials!(setreuid(r: libc::uid_t, e: libc::uid_t));
changes_credentials!(setregid(r: libc::gid_t, e: libc::gid_t));
changes_credentials!(setresuid(r: libc::uid_t, e: libc::uid_t, s: libc::uid_t));
changes_credentials!(setresgid(r: libc::gid_t, e: libc::gid_t, s: libc::gid_t));
changes_credentials!(setgroups(n: libc::size_t, list: *const libc::gid_t));
