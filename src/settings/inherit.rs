//! `LEAKPROBE_NO_INHERIT=1`: the library takes itself out of `LD_PRELOAD`, so
//! programs this one executes run without it.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

pub fn remove_from_preload() {
    let Some(preload) = std::env::var_os("LD_PRELOAD") else {
        return;
    };
    let ours = own_path();
    let kept: Vec<&[u8]> = preload
        .as_bytes()
        .split(|&b| b == b':' || b == b' ')
        .filter(|entry| !entry.is_empty() && !is_ours(entry, &ours))
        .collect();
    let name = c"LD_PRELOAD";
    let value = if kept.is_empty() {
        None
    } else {
        match CString::new(kept.join(&b':')) {
            Ok(value) => Some(value),
            Err(_) => return,
        }
    };
    // SAFETY: while the library loads, before the program's threads could
    // read the environment.
    unsafe { crate::sys::process::set_env(name, value.as_deref()) };
}

fn is_ours(entry: &[u8], ours: &Option<std::path::PathBuf>) -> bool {
    let path = std::path::Path::new(OsStr::from_bytes(entry));
    match (ours, std::fs::canonicalize(path)) {
        (Some(ours), Ok(resolved)) => &resolved == ours,
        _ => path.file_name().is_some_and(|n| n == "libleakprobe.so"),
    }
}

/// The library's own file, as the loader mapped it.
fn own_path() -> Option<std::path::PathBuf> {
    let name = crate::sys::dl::own_file()?;
    std::fs::canonicalize(OsStr::from_bytes(name.to_bytes())).ok()
}
