//! The `setuid` family: a single-threaded program's helper thread
//! (`collect::single`), which glibc does not know, follows the program's
//! new credentials (glibc changes only the threads it knows), so it never
//! keeps privileges the program gave up; and the published record says
//! whether the new credentials may still write dumps
//! (`profile::published`).

use core::ffi::{c_int, c_void};
use core::sync::atomic::AtomicPtr;

macro_rules! changes_credentials {
    ($name:ident = $sym:literal ($($arg:ident: $ty:ty),*)) => {
        /// The helper follows the program's new credentials.
        ///
        /// # Safety
        /// As the C function.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            static NEXT: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());
            let next: unsafe extern "C" fn($($ty),*) -> c_int =
                // SAFETY: the symbol of this name has this type.
                unsafe { core::mem::transmute(crate::sys::dl::symbol(&NEXT, $sym)) };
            // SAFETY: the program's arguments, unchanged (the contract).
            let rc = unsafe { next($($arg),*) };
            if rc == 0 {
                crate::sys::errno::preserved(|| {
                    crate::collect::single::credentials_changed();
                    // A dump directory the new credentials cannot write
                    // into is a refusal `leakprobe dump` reads at once.
                    if let Some(cfg) = crate::settings::get() {
                        crate::profile::published::credentials_changed(&cfg.dir);
                    }
                });
            }
            rc
        }
    };
}

changes_credentials!(setuid = c"setuid" (uid: libc::uid_t));
changes_credentials!(setgid = c"setgid" (gid: libc::gid_t));
changes_credentials!(seteuid = c"seteuid" (uid: libc::uid_t));
changes_credentials!(setegid = c"setegid" (gid: libc::gid_t));
changes_credentials!(setreuid = c"setreuid" (r: libc::uid_t, e: libc::uid_t));
changes_credentials!(setregid = c"setregid" (r: libc::gid_t, e: libc::gid_t));
changes_credentials!(setresuid = c"setresuid" (r: libc::uid_t, e: libc::uid_t, s: libc::uid_t));
changes_credentials!(setresgid = c"setresgid" (r: libc::gid_t, e: libc::gid_t, s: libc::gid_t));
changes_credentials!(setgroups = c"setgroups" (n: libc::size_t, list: *const libc::gid_t));
