//! Objects unloaded with `dlclose` keep their place in the dump's memory map,
//! so stacks through a library that is gone by the time of the dump still
//! name it.

use core::ffi::c_void;

/// # Safety
/// As dlclose(3).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> libc::c_int {
    static NEXT: core::sync::atomic::AtomicPtr<c_void> =
        core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
    let next: unsafe extern "C" fn(*mut c_void) -> libc::c_int =
        core::mem::transmute(crate::sys::dl::symbol(&NEXT, c"dlclose"));
    let segments = segments_of(handle);
    let rc = next(handle);
    if rc == 0 && !segments.is_empty() && !still_loaded(segments[0].0) {
        // Its code addresses may be reused by the next object loaded.
        crate::unwind::walk::forget();
        crate::profile::unloaded::retire(segments);
    }
    rc
}

/// (start, end, map line) of each executable segment of the object behind `handle`.
unsafe fn segments_of(handle: *mut c_void) -> Vec<(u64, u64, String)> {
    let mut map: *mut libc::c_void = core::ptr::null_mut();
    if handle.is_null()
        || libc::dlinfo(
            handle,
            libc::RTLD_DI_LINKMAP,
            (&mut map as *mut *mut c_void).cast(),
        ) != 0
        || map.is_null()
    {
        return Vec::new();
    }
    // struct link_map starts with l_addr (the load bias).
    let bias = *(map as *const u64);
    crate::profile::dump::segments_where(|addr| addr == bias)
}

fn still_loaded(start: u64) -> bool {
    crate::profile::dump::segments_where(|_| true)
        .iter()
        .any(|s| s.0 == start)
}
