//! What a dump says about memory beyond the sampled stacks: the process as
//! the kernel sees it, and the allocator's own account (free memory it keeps,
//! pages it retains). With the live-heap estimate these tell a leak from
//! allocator retention from growth outside malloc.

use core::ffi::{c_char, c_int, c_void};

/// (key, value) metadata lines; byte counts in bytes.
pub type Facts = Vec<(&'static str, String)>;

/// VmRSS, RssAnon, VmData and VmSwap from /proc/<pid>/status, when readable.
pub fn process() -> Facts {
    let Ok(status) = std::fs::read_to_string(crate::sys::raw::proc_path("status")) else {
        return Vec::new();
    };
    let wanted = [
        ("VmRSS:", "rss_bytes"),
        ("RssAnon:", "rss_anon_bytes"),
        ("VmData:", "vm_data_bytes"),
        ("VmSwap:", "swap_bytes"),
    ];
    wanted
        .iter()
        .filter_map(|(field, key)| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            let kib: u64 = line[field.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some((*key, (kib * 1024).to_string()))
        })
        .collect()
}

/// The next allocator's statistics: jemalloc's through `mallctl` (after
/// refreshing `epoch`), glibc's through `mallinfo2`; nothing otherwise.
/// `allocator_allocated_bytes` is its own count of bytes in allocated blocks
/// (jemalloc `stats.allocated`; glibc `uordblks` + `hblkhd`, the in-use
/// chunks of its arenas and its mmapped blocks, headers included).
pub fn allocator() -> Facts {
    if let Some(mallctl) = next_symbol::<Mallctl>(c"mallctl") {
        return jemalloc(mallctl);
    }
    if crate::next::allocator_name().contains("libc.so") {
        if let Some(mallinfo2) = next_symbol::<Mallinfo2>(c"mallinfo2") {
            // SAFETY: glibc's mallinfo2 returns the struct by value.
            let m = unsafe { mallinfo2() };
            return vec![
                (
                    "allocator_allocated_bytes",
                    (m.uordblks + m.hblkhd).to_string(),
                ),
                ("glibc_arena_bytes", m.arena.to_string()),
                ("glibc_mmapped_bytes", m.hblkhd.to_string()),
                ("glibc_in_use_bytes", m.uordblks.to_string()),
                ("glibc_free_bytes", m.fordblks.to_string()),
                ("glibc_releasable_bytes", m.keepcost.to_string()),
            ];
        }
    }
    Vec::new()
}

type Mallctl =
    unsafe extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;
type Mallinfo2 = unsafe extern "C" fn() -> MallInfo2;

#[repr(C)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

fn jemalloc(mallctl: Mallctl) -> Facts {
    // SAFETY: mallctl with valid names and buffers of the documented types.
    let mut facts = unsafe {
        let mut epoch: u64 = 1;
        let mut len = core::mem::size_of::<u64>();
        let epoch_ptr = (&mut epoch as *mut u64).cast();
        mallctl(c"epoch".as_ptr(), epoch_ptr, &mut len, epoch_ptr, len);
        [
            (c"stats.allocated", "jemalloc_allocated_bytes"),
            (c"stats.active", "jemalloc_active_bytes"),
            (c"stats.resident", "jemalloc_resident_bytes"),
            (c"stats.mapped", "jemalloc_mapped_bytes"),
            (c"stats.retained", "jemalloc_retained_bytes"),
        ]
        .iter()
        .filter_map(|(name, key)| {
            let mut value: usize = 0;
            let mut len = core::mem::size_of::<usize>();
            let rc = mallctl(
                name.as_ptr(),
                (&mut value as *mut usize).cast(),
                &mut len,
                core::ptr::null_mut(),
                0,
            );
            (rc == 0).then(|| (*key, value.to_string()))
        })
        .collect::<Facts>()
    };
    if let Some((_, allocated)) = facts.iter().find(|(k, _)| *k == "jemalloc_allocated_bytes") {
        facts.insert(0, ("allocator_allocated_bytes", allocated.clone()));
    }
    facts
}

/// A function of the next allocator's object, if it has one by this name.
fn next_symbol<F: Copy>(name: &core::ffi::CStr) -> Option<F> {
    let f = crate::next::allocator_function(name)?;
    // SAFETY: F is that symbol's type (the caller's).
    Some(unsafe { crate::sys::dl::function(f.cast()) })
}
