//! Objects unloaded with `dlclose` keep their place in the dump's memory map,
//! so stacks through a library that is gone by the time of the dump still
//! name it.

use core::ffi::c_void;

/// # Safety
/// As dlclose(3).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> libc::c_int {
    let next = crate::next::slot::dlclose.get();
    // SAFETY: the program's handle, not yet closed.
    let segments = unsafe { segments_of(handle) };
    // SAFETY: the program's argument, unchanged.
    let rc = unsafe { next(handle) };
    if rc == 0 && !segments.is_empty() && !still_loaded(segments[0].0) {
        // Its code addresses may be reused by the next object loaded.
        crate::unwind::walk::forget();
        crate::profile::unloaded::retire(segments);
    }
    rc
}

/// (start, end, map line) of each executable segment of the object behind `handle`.
///
/// # Safety
/// `handle` is null or a handle `dlopen` returned, not yet closed.
unsafe fn segments_of(handle: *mut c_void) -> Vec<(u64, u64, String)> {
    if handle.is_null() {
        return Vec::new();
    }
    // SAFETY: an open handle (the contract).
    match unsafe { crate::sys::dl::load_bias(handle) } {
        Some(bias) => crate::profile::objects::segments_where(|addr| addr == bias),
        None => Vec::new(),
    }
}

fn still_loaded(start: u64) -> bool {
    crate::profile::objects::segments_where(|_| true)
        .iter()
        .any(|s| s.0 == start)
}
