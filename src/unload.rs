//! Objects unloaded with `dlclose` keep their place in the dump's memory map,
//! so stacks through a library that is gone by the time of the dump still
//! name it.

use crate::lock::SpinLock;
use core::ffi::c_void;

/// Most unloaded objects remembered (the oldest are forgotten first).
const KEEP: usize = 256;

/// Memory-map lines of unloaded objects' executable segments.
static RETIRED: SpinLock<Vec<(u64, u64, String)>> = SpinLock::new(Vec::new());

/// # Safety
/// As dlclose(3).
#[cfg(not(test))]
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> libc::c_int {
    static NEXT: core::sync::atomic::AtomicPtr<c_void> =
        core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
    let next: unsafe extern "C" fn(*mut c_void) -> libc::c_int =
        core::mem::transmute(crate::next::symbol(&NEXT, c"dlclose"));
    let segments = segments_of(handle);
    let rc = next(handle);
    if rc == 0 && !segments.is_empty() && !still_loaded(segments[0].0) {
        // Its code addresses may be reused by the next object loaded.
        crate::unwind::forget();
        RETIRED.with(|retired| {
            retired.extend(segments);
            let excess = retired.len().saturating_sub(KEEP);
            retired.drain(..excess);
        });
    }
    rc
}

/// Memory-map lines for unloaded objects whose addresses nothing mapped now
/// overlaps (`current`: the map as it stands).
pub fn retired_lines(current: &[u8]) -> String {
    let live: Vec<(u64, u64)> = String::from_utf8_lossy(current)
        .lines()
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect();
    RETIRED.with(|retired| {
        retired
            .iter()
            .filter(|(lo, hi, _)| !live.iter().any(|(a, b)| lo < b && a < hi))
            .map(|(_, _, line)| line.as_str())
            .collect()
    })
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
    crate::dump::segments_where(|addr| addr == bias)
}

fn still_loaded(start: u64) -> bool {
    crate::dump::segments_where(|_| true)
        .iter()
        .any(|s| s.0 == start)
}
