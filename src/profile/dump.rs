//! The dump file: the text heap profile (`heap_v2`) that both jeprof and
//! pprof read and un-sample, written atomically into the dump directory.
//!
//! ```text
//! heap profile: <live n>: <live bytes> [<alloc n>: <alloc bytes>] @ heap_v2/<period>
//! # leakprobe <key>: <value>            (metadata; both tools skip '#' lines)
//! <n>: <bytes> [<n>: <bytes>] @ 0x<frame0> 0x<frame1> ...
//!
//! MAPPED_LIBRARIES:
//! <the process's memory map, as /proc/self/maps>
//! ```

use std::ffi::{CString, OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

use crate::sys::files;

/// Raw sampled counts of one (stack, requested size) pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub stack: u32,
    pub size: usize,
    pub live_count: u64,
    pub live_bytes: u64,
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    /// Age of the oldest live sample and sum of all live samples' ages, in
    /// seconds at the time of the dump.
    pub oldest_age: u64,
    pub total_age: u64,
    /// Sum of the live samples' usable sizes, and whether the allocator
    /// failed to give one for any of them.
    pub live_usable: u64,
    pub usable_unknown: bool,
}

impl Row {
    /// Usable bytes of the live samples, if the allocator gave every one.
    pub fn usable(&self) -> Option<u64> {
        (self.live_count > 0 && !self.usable_unknown).then_some(self.live_usable)
    }
}

/// The dump's text. Its whole size is reserved first (an upper bound), so a
/// process out of memory gets an error here, not an abort (see `global_alloc`).
pub fn render<'a>(
    period: usize,
    meta: &[(&str, String)],
    rows: &[Row],
    frames_of: impl Fn(u32) -> &'a [usize],
    maps: &[u8],
) -> Result<Vec<u8>, std::collections::TryReserveError> {
    let total = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    // Numbers of at most 20 digits; a frame " 0x" and 16 hex digits; the age
    // and usable lines.
    let bound = 5 * 24
        + meta
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>()
        + rows
            .iter()
            .map(|r| 4 * 24 + 19 * frames_of(r.stack).len() + 60 + 42)
            .sum::<usize>()
        + 32
        + maps.len();
    let mut s = String::new();
    s.try_reserve_exact(bound)?;
    let _ = writeln!(
        s,
        "heap profile: {}: {} [{}: {}] @ heap_v2/{}",
        total(|r| r.live_count),
        total(|r| r.live_bytes),
        total(|r| r.alloc_count),
        total(|r| r.alloc_bytes),
        period
    );
    for (key, value) in meta {
        let _ = writeln!(s, "# leakprobe {key}: {value}");
    }
    for r in rows {
        let _ = write!(
            s,
            "{}: {} [{}: {}] @",
            r.live_count, r.live_bytes, r.alloc_count, r.alloc_bytes
        );
        for f in frames_of(r.stack) {
            // Lower-case hex: pprof silently truncates stacks at upper case.
            let _ = write!(s, " {f:#x}");
        }
        s.push('\n');
        // Ages of the row above (rows with live samples): oldest and mean, in seconds.
        if let Some(mean) = r.total_age.checked_div(r.live_count) {
            let _ = writeln!(s, "# leakprobe age: {} {mean}", r.oldest_age);
        }
        // The allocator's usable bytes for them (raw sampled, as live bytes).
        if let Some(usable) = r.usable() {
            let _ = writeln!(s, "# leakprobe usable: {usable}");
        }
    }
    s.push_str("\nMAPPED_LIBRARIES:\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(maps);
    Ok(out)
}

/// The memory map for symbolization: /proc/self/maps, or (after `chroot`,
/// without /proc) one line per executable segment from the dynamic linker;
/// then the objects unloaded since, where nothing else is mapped now.
pub fn memory_map() -> Vec<u8> {
    let mut map = match std::fs::read("/proc/self/maps") {
        Ok(maps) if !maps.is_empty() => maps,
        _ => loader_map().into_bytes(),
    };
    let retired = crate::profile::unloaded::retired_lines(&map);
    map.extend_from_slice(retired.as_bytes());
    map
}

fn loader_map() -> String {
    segments_where(|_| true)
        .into_iter()
        .map(|(_, _, line)| line)
        .collect()
}

/// (start, end, memory-map line) of the executable segments of every loaded
/// object whose load bias satisfies `wanted`, from the dynamic linker.
pub fn segments_where(wanted: impl Fn(u64) -> bool) -> Vec<(u64, u64, String)> {
    struct Search<'a> {
        wanted: &'a dyn Fn(u64) -> bool,
        found: Vec<(u64, u64, String)>,
    }
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info, for the callback's run.
        let info = unsafe { &*info };
        // SAFETY: `data` is our Search, not otherwise borrowed meanwhile.
        let search = unsafe { &mut *(data as *mut Search) };
        if !(search.wanted)(info.dlpi_addr) {
            return 0;
        }
        // SAFETY: `info` comes from dl_iterate_phdr.
        let name = unsafe { object_name(info) };
        // SAFETY: the loader's program headers, `dlpi_phnum` of them.
        let headers =
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        for h in headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0)
        {
            // Headers of objects not ours: wrapping sums, never a panic.
            let lo = info.dlpi_addr.wrapping_add(h.p_vaddr);
            let hi = lo.wrapping_add(h.p_memsz);
            let line = format!("{lo:x}-{hi:x} r-xp {:08x} 00:00 0 {name}\n", h.p_offset);
            search.found.push((lo, hi, line));
        }
        0
    }
    let mut search = Search {
        wanted: &wanted,
        found: Vec::new(),
    };
    // SAFETY: `each` only reads the headers and appends to `search`, which
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut search as *mut Search).cast()) };
    search.found
}

/// One `build_id` fact per loaded object that has one (its NT_GNU_BUILD_ID
/// note in memory: lets a reader tell whether the file now on disk is the one
/// that was mapped), keyed by the object's path in `map`, the dump's memory
/// map: the loader's name for it can differ (`libz.so.1` for
/// `/usr/lib/x86_64-linux-gnu/libz.so.1.2.13`), and is then kept in a
/// `loaded_as` fact, `<map path>\t<loader's name>`.
pub fn object_facts(map: &[u8]) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    for (id, address, loaded_as) in build_ids() {
        match mapped_path(map, address) {
            Some(path) if path != loaded_as => {
                facts.push(("build_id", format!("{id} {path}")));
                facts.push(("loaded_as", format!("{path}\t{loaded_as}")));
            }
            // Not in the map: loaded since it was read, or the map is the
            // loader's (no /proc), which already uses the loader's names.
            _ => facts.push(("build_id", format!("{id} {loaded_as}"))),
        }
    }
    facts
}

/// (build-id, address of its note, loader's name) of every loaded object
/// that has one.
fn build_ids() -> Vec<(String, u64, String)> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info, for the callback's run.
        let info = unsafe { &*info };
        // SAFETY: `data` is our Vec, not otherwise borrowed meanwhile.
        let out = unsafe { &mut *(data as *mut Vec<(String, u64, String)>) };
        // SAFETY: the loader's program headers, `dlpi_phnum` of them.
        let headers =
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        for h in headers.iter().filter(|h| h.p_type == libc::PT_NOTE) {
            let address = info.dlpi_addr.wrapping_add(h.p_vaddr);
            // SAFETY: a loaded object's PT_NOTE segment is mapped, at its
            // address, `p_memsz` bytes.
            let notes =
                unsafe { core::slice::from_raw_parts(address as *const u8, h.p_memsz as usize) };
            if let Some(id) = gnu_build_id(notes) {
                // SAFETY: `info` comes from dl_iterate_phdr.
                out.push((id, address, unsafe { object_name(info) }));
                break;
            }
        }
        0
    }
    let mut out = Vec::new();
    // SAFETY: `each` only appends to `out`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each),
            (&mut out as *mut Vec<(String, u64, String)>).cast(),
        )
    };
    out
}

/// The path of the memory-map line that holds `address` (without the
/// kernel's " (deleted)" mark: the map line itself still says so).
fn mapped_path(map: &[u8], address: u64) -> Option<String> {
    String::from_utf8_lossy(map).lines().find_map(|line| {
        let mut fields = line.splitn(6, ' ');
        let (lo, hi) = fields.next()?.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        let path = fields.nth(4)?.trim_start();
        (lo <= address && address < hi && !path.is_empty())
            .then(|| path.strip_suffix(" (deleted)").unwrap_or(path).to_string())
    })
}

/// The program's path, read when the library loads (a later chroot may
/// hide /proc).
pub fn program_path() -> &'static str {
    static PROGRAM: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    PROGRAM.get_or_init(|| {
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    })
}

/// The name the program was started as (`argv[0]`: a symlink's name, such
/// as `redis-server` for `redis-check-rdb`), read when the library loads,
/// before the program can rewrite its arguments; the path `execve` was given
/// without /proc. One line: control characters become `?`.
pub fn argv0() -> &'static str {
    static ARGV0: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    ARGV0.get_or_init(|| {
        let name = match std::fs::read("/proc/self/cmdline") {
            Ok(args) if !args.is_empty() => {
                let first = args.split(|&b| b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(first).into_owned()
            }
            // SAFETY: AT_EXECFN, when present, points to a NUL-terminated
            // string on the initial stack, which lives as long as the process.
            _ => unsafe {
                let p = libc::getauxval(libc::AT_EXECFN) as *const libc::c_char;
                if p.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            },
        };
        name.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    })
}

/// The object's path; the main program has an empty name in the loader.
///
/// # Safety
/// `info` comes from `dl_iterate_phdr`.
unsafe fn object_name(info: &libc::dl_phdr_info) -> String {
    if info.dlpi_name.is_null() {
        return program_path().to_string();
    }
    // SAFETY: not null, so the loader's NUL-terminated name (the contract).
    let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) };
    if name.is_empty() {
        program_path().to_string()
    } else {
        name.to_string_lossy().into_owned()
    }
}

/// The hex build-id in a sequence of ELF notes, if there is one.
fn gnu_build_id(mut notes: &[u8]) -> Option<String> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    while notes.len() >= 12 {
        let (namesz, descsz, kind) = (
            word(notes) as usize,
            word(&notes[4..]) as usize,
            word(&notes[8..]),
        );
        let name_end = 12 + namesz.next_multiple_of(4);
        let desc_end = name_end + descsz.next_multiple_of(4);
        if desc_end > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && &notes[12..12 + namesz] == b"GNU\0" {
            return Some(
                notes[name_end..name_end + descsz]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            );
        }
        notes = &notes[desc_end..];
    }
    None
}

/// The dump directory, opened when the library loads so that later `chdir`,
/// `chroot` or privilege drops do not move it, and used only if it passes
/// `files::check_directory`. Daemons may close every file descriptor, so the
/// descriptor is checked (device and inode) before each use and the directory
/// reopened by path when it no longer matches; a directory found at the path
/// later (the old one deleted and made again, maybe by someone else) passes
/// the same check or is not used.
pub struct DumpDir {
    path: OsString,
    fd: libc::c_int,
    id: (u64, u64),
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
            holds_log,
        };
        if let Err(why) = dir.reopen() {
            crate::sys::log::log!(
                "dump directory {}: {why}; dumps fail until it can be used",
                dir.display()
            );
        }
        dir
    }

    pub fn display(&self) -> std::path::Display<'_> {
        std::path::Path::new(&self.path).display()
    }

    fn reopen(&mut self) -> Result<(), String> {
        let c = CString::new(self.path.as_bytes())
            .map_err(|_| "path contains a NUL byte".to_string())?;
        // SAFETY: open with a valid C string.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let id = match files::check_directory(fd) {
            Ok(id) => id,
            Err(why) => {
                // SAFETY: closing the descriptor opened above.
                unsafe { libc::close(fd) };
                return Err(why);
            }
        };
        let old = core::mem::replace(&mut self.fd, fd);
        let old_id = core::mem::replace(&mut self.id, id);
        if self.holds_log {
            crate::sys::log::set_directory(fd, id);
        }
        if old >= 0 && files::identity(old) == Some(old_id) {
            // SAFETY: the directory this value opened before, still ours.
            unsafe { libc::close(old) };
        }
        Ok(())
    }

    fn fd(&mut self) -> Result<libc::c_int, String> {
        if self.fd < 0 || files::identity(self.fd) != Some(self.id) {
            // Not ours any more (closed, or the number reused): never close it.
            self.fd = -1;
            self.reopen()
                .map_err(|why| format!("{} (reopened by path): {why}", self.display()))?;
        }
        Ok(self.fd)
    }

    /// Writes `content` under the first free name `name_of(n)` from `*next`
    /// on, atomically (a complete temporary file renamed into place, never
    /// over an existing entry), and advances `*next` past it and past the
    /// names found taken, which costs one line. Returns (name, path).
    pub fn write_numbered(
        &mut self,
        next: &mut u64,
        name_of: impl Fn(u64) -> String,
        content: &[u8],
    ) -> Result<(String, String), String> {
        self.retrying(|dir| {
            let fd = dir.fd()?;
            let first = *next;
            let tmp = dir.write_temp(fd, &name_of(first), content)?;
            let mut result = Err(format!(
                "{} to {} are all taken",
                name_of(first),
                name_of(first + NAMES_TRIED - 1)
            ));
            for n in first..first + NAMES_TRIED {
                let name = name_of(n);
                let c = CString::new(name.as_str()).map_err(|e| e.to_string())?;
                *next = n + 1;
                match place_new(fd, &tmp, &c) {
                    Err(libc::EEXIST) => continue,
                    Err(e) => {
                        // Not a squatter: this number is still free.
                        *next = n;
                        result = Err(std::io::Error::from_raw_os_error(e).to_string());
                    }
                    Ok(()) => result = Ok((name.clone(), dir.path_of(&name))),
                }
                break;
            }
            if result.is_err() {
                // SAFETY: removing the temporary file this call created.
                unsafe { libc::unlinkat(fd, tmp.as_ptr(), 0) };
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
            let tmp = dir.write_temp(fd, name, content)?;
            let dest = CString::new(name).map_err(|e| e.to_string())?;
            // SAFETY: renameat/unlinkat on our directory descriptor with C strings.
            unsafe {
                if libc::renameat(fd, tmp.as_ptr(), fd, dest.as_ptr()) != 0 {
                    let why = std::io::Error::last_os_error().to_string();
                    libc::unlinkat(fd, tmp.as_ptr(), 0);
                    return Err(why);
                }
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
            // SAFETY: unlinkat on our directory descriptor with a C string.
            unsafe { libc::unlinkat(dir, c.as_ptr(), 0) };
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
        std::path::Path::new(&self.path)
            .join(name)
            .display()
            .to_string()
    }

    /// Writes `content` to a new temporary file (mode 0600) in `dir` named
    /// after `name`, skipping names that are taken. Returns its name.
    fn write_temp(&self, dir: libc::c_int, name: &str, content: &[u8]) -> Result<CString, String> {
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
            let written = files::write_all(fd, content);
            let why = std::io::Error::last_os_error();
            // SAFETY: closing the file created above.
            let closed = unsafe { libc::close(fd) } == 0;
            if written && closed {
                return Ok(tmp);
            }
            let why = if written {
                std::io::Error::last_os_error()
            } else {
                why
            };
            // SAFETY: removing the file created above.
            unsafe { libc::unlinkat(dir, tmp.as_ptr(), 0) };
            return Err(why.to_string());
        }
        Err(format!(
            "the temporary names .{name}.tmp to .{name}.{}.tmp are all taken",
            NAMES_TRIED - 1
        ))
    }
}

/// Renames `tmp` to `name` in `dir` unless `name` exists (`Err(EEXIST)`).
fn place_new(dir: libc::c_int, tmp: &CString, name: &CString) -> Result<(), i32> {
    // SAFETY: renameat2/linkat/unlinkat on our directory with C strings.
    unsafe {
        if libc::renameat2(
            dir,
            tmp.as_ptr(),
            dir,
            name.as_ptr(),
            libc::RENAME_NOREPLACE,
        ) == 0
        {
            return Ok(());
        }
        let e = crate::sys::errno::get();
        if e != libc::EINVAL && e != libc::ENOSYS {
            return Err(e);
        }
        // A file system without RENAME_NOREPLACE: a hard link refuses a taken
        // name the same way; the complete file then loses its temporary name.
        if libc::linkat(dir, tmp.as_ptr(), dir, name.as_ptr(), 0) != 0 {
            return Err(crate::sys::errno::get());
        }
        libc::unlinkat(dir, tmp.as_ptr(), 0);
    }
    Ok(())
}

impl Drop for DumpDir {
    fn drop(&mut self) {
        // Only a descriptor that is still ours (see `fd`).
        if self.fd >= 0 && files::identity(self.fd) == Some(self.id) {
            // SAFETY: closing the directory descriptor this value opened.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// After a privilege drop the new user may not be allowed to write where
/// dumps go: say who needs what.
fn with_permission_hint(errno: i32, dir: &OsStr) -> String {
    let why = std::io::Error::from_raw_os_error(errno).to_string();
    if errno != libc::EACCES && errno != libc::EPERM {
        return why;
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    format!(
        "{why}: the process runs as {} (uid {uid}), which needs write and search permission on {}",
        user_name(uid).unwrap_or_else(|| "an unnamed user".into()),
        std::path::Path::new(dir).display()
    )
}

fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r fills `pwd` with strings stored in `buf`.
    unsafe {
        let mut pwd: libc::passwd = core::mem::zeroed();
        let mut found: *mut libc::passwd = core::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_tools_format() {
        let rows = [
            Row {
                stack: 0,
                size: 1024,
                live_count: 3,
                live_bytes: 3072,
                alloc_count: 5,
                alloc_bytes: 5120,
                oldest_age: 9,
                total_age: 12,
                live_usable: 3 * 1032,
                usable_unknown: false,
            },
            Row {
                stack: 1,
                size: 48,
                live_count: 0,
                live_bytes: 0,
                alloc_count: 2,
                alloc_bytes: 96,
                ..Row::default()
            },
        ];
        let stacks: [&[usize]; 2] = [&[0xABC0, 0x401000], &[0x10]];
        let out = render(
            524288,
            &[("pid", "42".into())],
            &rows,
            |i| stacks[i as usize],
            b"maps\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "heap profile: 3: 3072 [7: 5216] @ heap_v2/524288\n\
             # leakprobe pid: 42\n\
             3: 3072 [5: 5120] @ 0xabc0 0x401000\n\
             # leakprobe age: 9 4\n\
             # leakprobe usable: 3096\n\
             0: 0 [2: 96] @ 0x10\n\
             \nMAPPED_LIBRARIES:\nmaps\n"
        );
    }

    #[test]
    fn finds_the_mapped_path_of_an_address() {
        let map = b"00400000-00401000 r--p 00000000 fe:00 12   /usr/bin/a b\n\
            7f0000001000-7f0000002000 r-xp 00001000 fe:00 13      /lib/libz.so.1.2 (deleted)\n\
            7f0000002000-7f0000003000 rw-p 00000000 00:00 0 \n";
        assert_eq!(mapped_path(map, 0x400010).as_deref(), Some("/usr/bin/a b"));
        assert_eq!(
            mapped_path(map, 0x7f0000001fff).as_deref(),
            Some("/lib/libz.so.1.2")
        );
        assert_eq!(mapped_path(map, 0x7f0000002000), None);
        assert_eq!(mapped_path(map, 0x10), None);
    }

    #[test]
    fn the_largest_rows_fit_the_reserved_size() {
        let row = Row {
            stack: 0,
            size: usize::MAX,
            live_count: u64::MAX / 64,
            live_bytes: u64::MAX / 64,
            alloc_count: u64::MAX / 64,
            alloc_bytes: u64::MAX / 64,
            oldest_age: u64::MAX,
            total_age: u64::MAX,
            live_usable: u64::MAX,
            usable_unknown: false,
        };
        let frames = [usize::MAX; 128];
        let meta = [("program", "x".repeat(300))];
        let out = render(1, &meta, &[row; 50], |_| &frames, &[b'm'; 5000]).unwrap();
        // Growing would have at least doubled the capacity.
        assert!(
            out.capacity() < out.len() * 3 / 2,
            "{} {}",
            out.capacity(),
            out.len()
        );
    }

    #[test]
    fn finds_the_gnu_build_id_note() {
        let mut notes = Vec::new();
        for (name, kind, desc) in [
            (&b"XYZ\0"[..], 1u32, &[9u8; 5][..]),
            (b"GNU\0", 3, &[0xab, 0xcd, 0x01]),
        ] {
            notes.extend((name.len() as u32).to_ne_bytes());
            notes.extend((desc.len() as u32).to_ne_bytes());
            notes.extend(kind.to_ne_bytes());
            notes.extend(name);
            notes.extend(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        assert_eq!(gnu_build_id(&notes).as_deref(), Some("abcd01"));
        assert_eq!(gnu_build_id(&notes[..20]), None);
    }
}
