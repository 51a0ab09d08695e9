//! The C API (include/leakprobe.h): `leakprobe_dump` and
//! `leakprobe_set_active`.

use crate::{collect::collector, sample::sampling};
use core::ffi::{c_char, c_int, CStr};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

/// # Safety
/// `path` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn leakprobe_dump(path: *const c_char) -> c_int {
    // SAFETY: not null, so a NUL-terminated string (the contract).
    let target = (!path.is_null()).then(|| unsafe { CStr::from_ptr(path) });
    let target = target.map(|p| std::path::PathBuf::from(OsStr::from_bytes(p.to_bytes())));
    if collector::dump_to(target, Duration::from_secs(10)) {
        0
    } else {
        -1
    }
}

#[no_mangle]
pub extern "C" fn leakprobe_set_active(active: c_int) -> c_int {
    sampling::set_active(active != 0) as c_int
}
