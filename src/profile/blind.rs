//! Whether the program's allocations can reach the library at all. When
//! `malloc` resolves ahead of it (an executable that defines its own: a
//! statically linked allocator; another preloaded allocator listed first),
//! or the program allocates through a prefixed allocator's own entry points,
//! a profile would be empty, or partial, in silence. Checked once at load:
//! said on stderr and in the log, and written into every dump.

use once_cell::sync::OnceCell;
use std::ffi::CStr;

static REASONS: OnceCell<Vec<String>> = OnceCell::new();

/// The reasons found at load (empty for an ordinary program).
pub fn reasons() -> &'static [String] {
    REASONS.get().map_or(&[], Vec::as_slice)
}

/// The object that serves the program's `malloc`, if it is not the library.
pub fn malloc_served_by() -> Option<String> {
    ahead_of_us(c"malloc").map(|(path, _)| path)
}

pub fn check(program: &str) {
    let mut found = Vec::new();
    for name in [c"malloc", c"calloc", c"realloc", c"free"] {
        if let Some((path, in_program)) = ahead_of_us(name) {
            let name = name.to_string_lossy();
            found.push(if in_program {
                format!(
                    "{name} is defined by the program itself ({path}): a statically linked allocator cannot be interposed, so its allocations are not seen; use that allocator's own profiler"
                )
            } else {
                format!(
                    "{name} resolves to {path}, ahead of libleakprobe.so: its allocations are not seen; list libleakprobe.so first in LD_PRELOAD"
                )
            });
        }
    }
    // Prefixed allocators (tikv-jemallocator's _rjem_*, mimalloc's mi_*)
    // the program calls directly, when they are exported.
    for name in [
        c"_rjem_malloc",
        c"_rjem_mallocx",
        c"mi_malloc",
        c"je_malloc",
    ] {
        if let Some(path) = defined_by(name).filter(|p| p == program) {
            found.push(format!(
                "the program has its own allocator ({} in {path}): what it allocates through it is not seen; use that allocator's own profiler",
                name.to_string_lossy()
            ));
        }
    }
    for reason in &found {
        crate::sys::log::log!("cannot see every allocation: {reason}");
    }
    let _ = REASONS.set(found);
}

/// The object defining `name` first in the global lookup order, when that is
/// another object than the library: (its path, whether it is the program).
fn ahead_of_us(name: &CStr) -> Option<(String, bool)> {
    let own = crate::sys::dl::object_of(check as *mut ());
    let info = defining(name)?;
    if info.dli_fbase as usize == own {
        return None;
    }
    let path = path_of(&info);
    let program = crate::profile::objects::program_path();
    let in_program = path == program || path.is_empty();
    Some((
        if path.is_empty() {
            program.to_string()
        } else {
            path
        },
        in_program,
    ))
}

fn defined_by(name: &CStr) -> Option<String> {
    defining(name).map(|info| {
        let path = path_of(&info);
        if path.is_empty() {
            crate::profile::objects::program_path().to_string()
        } else {
            path
        }
    })
}

/// Where `name` resolves, if it is a real definition there: a non-PIE
/// program's canonical PLT entry for a function whose address it takes is
/// an undefined symbol with a value, and dladdr names it all the same.
fn defining(name: &CStr) -> Option<libc::Dl_info> {
    let f = crate::sys::dl::lookup(crate::sys::dl::Scope::Global, name);
    let (info, sym) = crate::sys::dl::symbol_at(f)?;
    // SAFETY: dli_sname, when set, is the loader's NUL-terminated string.
    let named = !info.dli_sname.is_null() && unsafe { CStr::from_ptr(info.dli_sname) } == name;
    (named && info.dli_saddr == f && sym.st_shndx != 0).then_some(info)
}

fn path_of(info: &libc::Dl_info) -> String {
    if info.dli_fname.is_null() {
        return String::new();
    }
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: the loader's NUL-terminated file name.
    let name = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
    let path = std::fs::canonicalize(std::ffi::OsStr::from_bytes(name));
    // Escaped as `objects::program_path`, which it is compared with.
    let shown = |bytes: &[u8]| crate::sys::escape::Escaped(bytes).to_string();
    path.map(|p| shown(p.as_os_str().as_bytes()))
        .unwrap_or_else(|_| shown(name))
}
