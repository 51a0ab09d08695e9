//! Creating files where other users may be (the default directory is `/tmp`).
//! A directory is used only if it belongs to this process's user or root and
//! others cannot write to it unless it is sticky, so nobody else can replace
//! or remove what the library writes there. A file is only ever created,
//! never opened on a name someone else made: `O_EXCL` and `O_NOFOLLOW` refuse
//! any entry already there (a FIFO would block, a symlink or hard link would
//! redirect root's writes, a directory would fail every time), `O_NONBLOCK`
//! makes sure the `open` itself cannot block, and `fstat` confirms the result
//! is a regular file of ours with one link. A complete file takes its name
//! with a rename that never replaces an entry (`rename_new`). No
//! allocation, and raw system calls only (`errno` untouched): the log uses
//! these, also on the helper of `collect::single`. Errors are `errno`
//! values.

use crate::sys::raw;
use core::ffi::CStr;

/// `fstat` of a descriptor, or the error.
fn fstat(fd: libc::c_int) -> Result<libc::stat, i32> {
    // SAFETY: stat is plain data, all zeroes valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    match raw::sys!(libc::SYS_fstat, fd, &mut st as *mut libc::stat) {
        0 => Ok(st),
        e => Err(-e as i32),
    }
}

/// `fstat` of a descriptor, if it is open.
pub fn stat(fd: libc::c_int) -> Option<libc::stat> {
    fstat(fd).ok()
}

/// `fstatat` of `name` in `dir`, not following a link, if it is there.
pub fn stat_at(dir: libc::c_int, name: &CStr) -> Option<libc::stat> {
    // SAFETY: stat is plain data, all zeroes valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    let st_ptr = &mut st as *mut libc::stat;
    match raw::sys!(libc::SYS_newfstatat, dir, name.as_ptr(), st_ptr, flags) {
        0 => Some(st),
        _ => None,
    }
}

/// (device, inode) of whatever a descriptor names.
pub fn inode(fd: libc::c_int) -> Option<(u64, u64)> {
    stat(fd).map(|st| (st.st_dev, st.st_ino))
}

/// (device, inode) of a directory descriptor; None if it is not one.
pub fn identity(fd: libc::c_int) -> Option<(u64, u64)> {
    stat(fd)
        .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map(|st| (st.st_dev, st.st_ino))
}

/// The (device, inode) of a directory just opened, or why the library must
/// not write there: owned by another user (who could read, replace or block
/// the files), or writable by others without the sticky bit (where anyone may
/// rename or delete them). A group-writable directory is the owner's choice.
pub fn check_directory(fd: libc::c_int) -> Result<(u64, u64), String> {
    let st = fstat(fd).map_err(|e| std::io::Error::from_raw_os_error(e).to_string())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err("not a directory".into());
    }
    let euid = raw::sys!(libc::SYS_geteuid) as libc::uid_t;
    if st.st_uid != euid && st.st_uid != 0 {
        return Err(format!(
            "owned by uid {}, neither this process's user (uid {euid}) nor root; not used",
            st.st_uid
        ));
    }
    if st.st_mode & libc::S_IWOTH != 0 && st.st_mode & libc::S_ISVTX == 0 {
        return Err(format!(
            "writable by every user and not sticky (mode {:o}); not used",
            st.st_mode & 0o7777
        ));
    }
    Ok((st.st_dev, st.st_ino))
}

/// Creates `name` in `dir`, mode 0600, opened for writing with `flags` added
/// (e.g. `O_APPEND`), only if nothing has that name. `Err(EEXIST)`: the name
/// is taken (or what was made there is not a plain file of ours, and has
/// been removed): try another name. Other errors are the directory's.
pub fn create_exclusive(
    dir: libc::c_int,
    name: &core::ffi::CStr,
    flags: libc::c_int,
) -> Result<libc::c_int, i32> {
    let all = flags
        | libc::O_WRONLY
        | libc::O_CREAT
        | libc::O_EXCL
        | libc::O_NOFOLLOW
        | libc::O_NONBLOCK
        | libc::O_CLOEXEC;
    let fd = raw::sys!(libc::SYS_openat, dir, name.as_ptr(), all, 0o600);
    if fd < 0 {
        return Err(-fd as i32);
    }
    let fd = fd as libc::c_int;
    let euid = raw::sys!(libc::SYS_geteuid) as libc::uid_t;
    let ours = stat(fd).is_some_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_uid == euid && st.st_nlink == 1
    });
    if !ours {
        // Only a race (a link made to the new file) gets here: drop our name.
        remove(dir, name);
        let _ = close(fd);
        return Err(libc::EEXIST);
    }
    Ok(fd)
}

/// Opens the directory `path` (close-on-exec), for the calls below.
/// Whether the calling process, by its effective ids, may create files in
/// the directory open as `dir` (or, with `dir` None, at `path`): write and
/// search permission on it. The errno if not.
pub fn may_write_in(dir: Option<libc::c_int>, path: &CStr) -> Result<(), i32> {
    let (at, path) = match dir {
        Some(fd) => (fd, c"."),
        None => (libc::AT_FDCWD, path),
    };
    // SAFETY: a NUL-terminated path; no other pointer.
    let rc =
        unsafe { libc::faccessat(at, path.as_ptr(), libc::W_OK | libc::X_OK, libc::AT_EACCESS) };
    if rc == 0 {
        Ok(())
    } else {
        Err(crate::sys::errno::get())
    }
}

pub fn open_directory(path: &CStr) -> Result<libc::c_int, i32> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    match raw::sys!(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags) {
        fd if fd >= 0 => Ok(fd as libc::c_int),
        e => Err(-e as i32),
    }
}

pub use crate::sys::raw::close;

/// Removes `name` from `dir`, if it is there (the callers remove what they
/// made, and a name already gone needs nothing more).
pub fn remove(dir: libc::c_int, name: &CStr) {
    raw::sys!(libc::SYS_unlinkat, dir, name.as_ptr(), 0);
}

/// Renames `from` to `to` in `dir`, replacing what `to` named: the file it
/// named is never written into.
pub fn rename(dir: libc::c_int, from: &CStr, to: &CStr) -> Result<(), i32> {
    match raw::sys!(libc::SYS_renameat, dir, from.as_ptr(), dir, to.as_ptr()) {
        0 => Ok(()),
        e => Err(-e as i32),
    }
}

/// Renames `from` to `to` in `dir` unless `to` exists (`Err(EEXIST)`).
pub fn rename_new(dir: libc::c_int, from: &CStr, to: &CStr) -> Result<(), i32> {
    let (from, to) = (from.as_ptr(), to.as_ptr());
    let flags = libc::RENAME_NOREPLACE;
    let e = match raw::sys!(libc::SYS_renameat2, dir, from, dir, to, flags) {
        0 => return Ok(()),
        e => -e as i32,
    };
    if e != libc::EINVAL && e != libc::ENOSYS {
        return Err(e);
    }
    // A file system without RENAME_NOREPLACE: a hard link refuses a taken
    // name the same way; the complete file then loses its temporary name.
    match raw::sys!(libc::SYS_linkat, dir, from, dir, to, 0) {
        0 => {}
        e => return Err(-e as i32),
    }
    raw::sys!(libc::SYS_unlinkat, dir, from, 0);
    Ok(())
}

/// Writes all of `data`, retrying interrupted and partial writes; the
/// error if it cannot (`EIO` for a write that wrote nothing).
pub fn write_all(fd: libc::c_int, mut data: &[u8]) -> Result<(), i32> {
    while !data.is_empty() {
        let n = raw::sys!(libc::SYS_write, fd, data.as_ptr(), data.len());
        match n {
            n if n == -(libc::EINTR as isize) => continue,
            0 => return Err(libc::EIO),
            n if n < 0 => return Err(-n as i32),
            n => data = &data[n as usize..],
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    fn open_dir(path: &std::path::Path) -> libc::c_int {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: open with a C string.
        unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("leakprobe-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn directories_others_may_write_are_refused_unless_sticky() {
        let dir = scratch("modes");
        for (mode, ok) in [(0o700, true), (0o775, true), (0o777, false), (0o1777, true)] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let fd = open_dir(&dir);
            assert_eq!(check_directory(fd).is_ok(), ok, "mode {mode:o}");
            // SAFETY: closing the descriptor opened above.
            unsafe { libc::close(fd) };
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn taken_names_are_never_opened() {
        use std::os::unix::fs::FileTypeExt;
        let dir = scratch("taken");
        let fd = open_dir(&dir);
        std::fs::write(dir.join("file"), "theirs").unwrap();
        std::fs::create_dir(dir.join("dir")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.join("dangling")).unwrap();
        let fifo = CString::new(dir.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
        for name in [c"file", c"dir", c"dangling", c"fifo"] {
            assert_eq!(create_exclusive(fd, name, 0), Err(libc::EEXIST), "{name:?}");
        }
        assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap(), "theirs");
        assert!(std::fs::metadata(dir.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        let new = create_exclusive(fd, c"new", libc::O_APPEND).unwrap();
        assert_eq!(write_all(new, b"ours"), Ok(()));
        let mode = std::fs::metadata(dir.join("new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // SAFETY: closing descriptors opened above.
        unsafe {
            libc::close(new);
            libc::close(fd);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
