//! The dump directory: opened once and checked, every file in it created
//! exclusively, a dump written under a temporary name and renamed into place.

use crate::sys::escape::Escaped;
use crate::sys::files;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// The dump directory, opened when the library loads so that later `chdir`,
/// `chroot` or privilege drops do not move it, and used only if it passes
/// `files::check_directory`. Daemons may close every file descriptor, so the
/// descriptor is checked (device and inode) before each use and the directory
/// reopened by path when it no longer matches; a directory found at the path
/// later (the old one deleted and made again, maybe by someone else) passes
/// the same check or is not used.
///
/// A descriptor reopened so is the program's to have back: it is closed when
/// the dump that needed it is done (`release_reopened`), so that a daemon
/// that closes every descriptor it did not open keeps its count whatever
/// the number of dumps (and in the single-threaded mode, where a copy of the
/// process writes the dump into the shared descriptor table, nothing is
/// left behind by a copy that is gone).
pub struct DumpDir {
    path: OsString,
    fd: libc::c_int,
    id: (u64, u64),
    /// `fd` was reopened after the one opened at load was lost.
    reopened: bool,
    /// The log file goes here too (the configured directory, not one a
    /// caller of `leakprobe_dump` named).
    holds_log: bool,
}

/// Names tried, at most, for one file: a squatter can cost a dump, never
/// every later one.
const NAMES_TRIED: u64 = 64;

impl DumpDir {
    pub fn open(path: &OsStr, holds_log: bool) -> DumpDir {
        let mut dir = DumpDir {
            path: path.to_owned(),
            fd: -1,
            id: (0, 0),
            reopened: false,
            holds_log,
        };
        if let Err(why) = dir.reopen() {
            crate::sys::log::log!(
                "dump directory {}: {why}; dumps fail until it can be used",
                dir.display()
            );
            if holds_log {
                crate::profile::published::refuse(
                    crate::profile::published::Refusal::Dir,
                    Some(format_args!("dump directory {}: {why}", dir.display())),
                );
            }
        }
        dir
    }

    /// The path as lines show it (`Escaped`).
    pub fn display(&self) -> Escaped<'_> {
        Escaped(self.path.as_bytes())
    }

    fn reopen(&mut self) -> Result<(), String> {
        let c = CString::new(self.path.as_bytes())
            .map_err(|_| "path contains a NUL byte".to_string())?;
        let fd = files::open_directory(&c).map_err(error_text)?;
        let id = match files::check_directory(fd) {
            Ok(id) => id,
            Err(why) => {
                let _ = files::close(fd);
                return Err(why);
            }
        };
        let old = core::mem::replace(&mut self.fd, fd);
        let old_id = core::mem::replace(&mut self.id, id);
        if self.holds_log {
            crate::sys::log::set_directory(fd, id, self.reopened);
            // Usable again (made or fixed since): no longer a refusal.
            crate::profile::published::refuse(crate::profile::published::Refusal::Dir, None);
        }
        if old >= 0 && files::identity(old) == Some(old_id) {
            // The directory this value opened before, still ours.
            let _ = files::close(old);
        }
        Ok(())
    }

    fn fd(&mut self) -> Result<libc::c_int, String> {
        if self.fd < 0 || files::identity(self.fd) != Some(self.id) {
            // Not ours any more (closed, or the number reused): never close it.
            self.fd = -1;
            self.reopened = true;
            self.reopen()
                .map_err(|why| format!("{} (reopened by path): {why}", self.display()))?;
        }
        Ok(self.fd)
    }

    /// The dump is done: a descriptor reopened for it is closed (see
    /// `DumpDir`), and the log file is reached through the directory only
    /// while the next one is open.
    pub fn release_reopened(&mut self) {
        if !self.reopened || self.fd < 0 {
            return;
        }
        if files::identity(self.fd) == Some(self.id) {
            let _ = files::close(self.fd);
        }
        self.fd = -1;
        if self.holds_log {
            crate::sys::log::set_directory(-1, self.id, true);
        }
    }

    /// Writes `content` under the first free name `name_of(n)` from `*next`
    /// on, atomically (a complete temporary file renamed into place, never
    /// over an existing entry), and advances `*next` past it and past the
    /// names found taken, which costs one line. Returns (name, path, the
    /// file's device and inode, for `remove_written`).
    pub fn write_numbered(
        &mut self,
        next: &mut u64,
        name_of: impl Fn(u64) -> String,
        content: &[u8],
    ) -> Result<(String, String, (u64, u64)), String> {
        self.retrying(|dir| {
            let fd = dir.fd()?;
            let first = *next;
            let (tmp, written) = dir.write_temp(fd, &name_of(first), content)?;
            let mut result = Err(format!(
                "{} to {} are all taken",
                name_of(first),
                name_of(first + NAMES_TRIED - 1)
            ));
            for n in first..first + NAMES_TRIED {
                let name = name_of(n);
                let c = CString::new(name.as_str()).map_err(|e| e.to_string())?;
                *next = n + 1;
                match files::rename_new(fd, &tmp, &c) {
                    Err(libc::EEXIST) => continue,
                    Err(e) => {
                        // Not a squatter: this number is still free.
                        *next = n;
                        result = Err(error_text(e));
                    }
                    Ok(()) => result = Ok((name.clone(), dir.path_of(&name), written)),
                }
                break;
            }
            if result.is_err() {
                files::remove(fd, &tmp);
            }
            let taken = *next - first - u64::from(result.is_ok());
            if taken > 0 {
                crate::sys::log::log!(
                    "{} to {} in {} are taken by files leakprobe did not write: skipped",
                    name_of(first),
                    name_of(first + taken - 1),
                    dir.display()
                );
            }
            result
        })
    }

    /// Writes `content` as `name`, replacing what has that name (an earlier
    /// peak profile, or a file a caller of `leakprobe_dump` named): renaming
    /// over an entry never writes into the file it named. Returns the path.
    pub fn write_replacing(&mut self, name: &str, content: &[u8]) -> Result<String, String> {
        self.retrying(|dir| {
            let fd = dir.fd()?;
            let (tmp, _) = dir.write_temp(fd, name, content)?;
            let dest = CString::new(name).map_err(|e| e.to_string())?;
            if let Err(e) = files::rename(fd, &tmp, &dest) {
                files::remove(fd, &tmp);
                return Err(error_text(e));
            }
            Ok(dir.path_of(name))
        })
    }

    /// Runs `write` with the directory held; if it fails and the path now
    /// names another directory (the old one was deleted and made again), once
    /// more with that one, if it passes the checks.
    fn retrying<T>(
        &mut self,
        mut write: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<T, String> {
        match write(self) {
            Err(why) if self.replaced() => match self.reopen() {
                Ok(()) => write(self),
                Err(refused) => Err(format!(
                    "{why}; {} was made again, and the new one is {refused}",
                    self.display()
                )),
            },
            result => result,
        }
    }

    /// Removes a dump written earlier (ignoring failure: it may be gone).
    pub fn remove(&mut self, name: &str) {
        if let (Ok(dir), Ok(c)) = (self.fd(), CString::new(name)) {
            files::remove(dir, &c);
        }
    }

    /// Removes the dump `name` written earlier (`write_numbered`'s identity)
    /// only if that name still holds that file: by the directory held,
    /// never through a link, never a file the library did not write.
    pub fn remove_written(&mut self, name: &str, written: (u64, u64)) {
        let (Ok(dir), Ok(c)) = (self.fd(), CString::new(name)) else {
            return;
        };
        let same = files::stat_at(dir, &c).is_some_and(|st| {
            st.st_mode & libc::S_IFMT == libc::S_IFREG && (st.st_dev, st.st_ino) == written
        });
        if same {
            files::remove(dir, &c);
        }
    }

    /// Whether the path now names another directory than the one held.
    fn replaced(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && (m.dev(), m.ino()) != self.id
        })
    }

    fn path_of(&self, name: &str) -> String {
        let path = std::path::Path::new(&self.path).join(name);
        Escaped(path.as_os_str().as_bytes()).to_string()
    }

    /// Writes `content` to a new temporary file (mode 0600) in `dir` named
    /// after `name`, skipping names that are taken. Returns its name and its
    /// (device, inode).
    fn write_temp(
        &self,
        dir: libc::c_int,
        name: &str,
        content: &[u8],
    ) -> Result<(CString, (u64, u64)), String> {
        for k in 0..NAMES_TRIED {
            let tmp = match k {
                0 => format!(".{name}.tmp"),
                k => format!(".{name}.{k}.tmp"),
            };
            let tmp = CString::new(tmp).map_err(|e| e.to_string())?;
            let fd = match files::create_exclusive(dir, &tmp, 0) {
                Ok(fd) => fd,
                Err(libc::EEXIST) => continue,
                Err(e) => return Err(with_permission_hint(e, &self.path)),
            };
            let identity = files::inode(fd).unwrap_or_default();
            let written = files::write_all(fd, content);
            match written.and(files::close(fd)) {
                Ok(()) => return Ok((tmp, identity)),
                Err(e) => {
                    files::remove(dir, &tmp);
                    return Err(error_text(e));
                }
            }
        }
        Err(format!(
            "the temporary names .{name}.tmp to .{name}.{}.tmp are all taken",
            NAMES_TRIED - 1
        ))
    }
}

impl Drop for DumpDir {
    fn drop(&mut self) {
        // Only a descriptor that is still ours (see `fd`).
        if self.fd >= 0 && files::identity(self.fd) == Some(self.id) {
            let _ = files::close(self.fd);
        }
    }
}

fn error_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

/// After a privilege drop the new user may not be allowed to write where
/// dumps go: say who needs what.
fn with_permission_hint(errno: i32, dir: &OsStr) -> String {
    let why = error_text(errno);
    if errno != libc::EACCES && errno != libc::EPERM {
        return why;
    }
    let uid = crate::sys::process::euid();
    format!(
        "{why}: the process runs as {} (uid {uid}), which needs write and search permission on {}",
        crate::sys::process::user_name(uid).unwrap_or_else(|| "an unnamed user".into()),
        Escaped(dir.as_bytes())
    )
}
