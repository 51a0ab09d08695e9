//! One-line messages, formatted on the stack: usable from any context except
//! signal handlers, with no allocation and raw system calls only (so also on
//! the helper of `collect::single`: `Line::emit_raw`). Each goes to the
//! stderr the process had when the library loaded and to this process's log
//! file in the dump directory (a daemon's stderr often goes nowhere), never
//! to a file the program opened since.
//!
//! - stderr: fd 2 while it still names the file it named at load (device and
//!   inode, checked before each write): a program that closes every
//!   descriptor and opens its data file as fd 2 gets nothing written into it.
//!   No duplicate is kept: it would hold a pipe open after a daemon gave its
//!   stderr up, and whoever waits for that pipe's end (`$(daemon)`, `ssh`)
//!   would wait as long as the daemon runs. A reader that went away costs
//!   the line, never a `SIGPIPE` (see `without_sigpipe`).
//! - log: `leakprobe.<pid>.log`, created at the first message with
//!   `files::create_exclusive` (the next free `leakprobe.<pid>.<k>.log` if
//!   that name is taken, and said so) and kept open for appending, so lines
//!   written after a privilege drop still reach it. A forked child creates its
//!   own. If the program closes the descriptor, the same file is reopened by
//!   name only if it is still the one created (device and inode).

use crate::sys::{files, raw};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// The dump directory (descriptor and identity) once it is open.
static DIR_FD: AtomicI32 = AtomicI32::new(-1);
static DIR_DEV: AtomicU64 = AtomicU64::new(0);
static DIR_INO: AtomicU64 = AtomicU64::new(0);
/// The dump directory's descriptor was reopened after the program closed
/// the one opened at load: a log file opened through it is closed after
/// each line (the program keeps its descriptor count; see `DumpDir`).
static DIR_REOPENED: AtomicBool = AtomicBool::new(false);

/// What fd 2 named at load: `UNSET` until `note_stderr` (fd 2 is then still
/// the one the process started with), `CLOSED` if it was not open or is
/// not ours (loaded late), `NOTED`.
const UNSET: u8 = 0;
const CLOSED: u8 = 1;
const NOTED: u8 = 2;
static ERR_STATE: AtomicU8 = AtomicU8::new(UNSET);
static ERR_DEV: AtomicU64 = AtomicU64::new(0);
static ERR_INO: AtomicU64 = AtomicU64::new(0);

/// The log file: descriptor, identity, and its number `k` (0 for
/// `leakprobe.<pid>.log`); the next number to try; whether a failure to
/// create it was said; all for process `LOG_PID`. Changed only under
/// `LOG_BUSY`.
static LOG_FD: AtomicI32 = AtomicI32::new(-1);
static LOG_DEV: AtomicU64 = AtomicU64::new(0);
static LOG_INO: AtomicU64 = AtomicU64::new(0);
static LOG_NUMBER: AtomicU32 = AtomicU32::new(NO_LOG);
static LOG_NEXT: AtomicU32 = AtomicU32::new(0);
static LOG_FAILURE_SAID: AtomicBool = AtomicBool::new(false);
static LOG_PID: AtomicI32 = AtomicI32::new(0);
const NO_LOG: u32 = u32::MAX;
/// The pid of the process one of whose threads holds the log (0: nobody): a
/// forked child takes over a hold it inherited from its parent's threads.
static LOG_BUSY: AtomicI32 = AtomicI32::new(0);

/// Where the log file goes: called whenever the dump directory is (re)opened
/// (`reopened`: after the program closed the one opened at load), or closed
/// (`fd` -1).
pub fn set_directory(fd: libc::c_int, id: (u64, u64), reopened: bool) {
    DIR_REOPENED.store(reopened, Ordering::Relaxed);
    DIR_DEV.store(id.0, Ordering::Relaxed);
    DIR_INO.store(id.1, Ordering::Relaxed);
    DIR_FD.store(fd, Ordering::Release);
}

/// The dump directory's descriptor, while it is still the directory opened
/// (device and inode): for a question about the directory itself.
pub fn directory() -> Option<libc::c_int> {
    let fd = DIR_FD.load(Ordering::Acquire);
    let id = (
        DIR_DEV.load(Ordering::Relaxed),
        DIR_INO.load(Ordering::Relaxed),
    );
    (fd >= 0 && files::identity(fd) == Some(id)).then_some(fd)
}

/// Set once the program's exit path runs the library's (`exiting`).
static EXITING: AtomicBool = AtomicBool::new(false);

/// From now on a line goes to stderr only when that cannot block.
pub fn exiting() {
    EXITING.store(true, Ordering::Relaxed);
}

/// Notes what stderr is; called first when the library loads. Loaded late
/// (attached), fd 2 is whatever the program holds there now: once it closed
/// its stderr, a file or a socket of its own, which a line would corrupt.
/// Its lines then go to the log file alone (the injector prints its own).
pub fn note_stderr(late: bool) {
    let state = match files::inode(2) {
        Some((dev, ino)) if !late => {
            ERR_DEV.store(dev, Ordering::Relaxed);
            ERR_INO.store(ino, Ordering::Relaxed);
            NOTED
        }
        _ => CLOSED,
    };
    ERR_STATE.store(state, Ordering::Release);
}

/// One line of text: control characters written into it are escaped
/// (`escape::control`), so that nothing from a path, a name or the
/// environment can end the line or reach a terminal as a command.
pub struct Line {
    buf: [u8; 512],
    len: usize,
    /// False for a file name built in a `Line` (`log_name`).
    escape: bool,
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
            escape: true,
        }
    }

    /// A buffer for a file name: nothing escaped.
    const fn name() -> Self {
        Line {
            escape: false,
            ..Line::new()
        }
    }

    /// Ends the text with a newline (for a line written as it is).
    fn end(&mut self) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
    }

    pub fn emit(self) {
        // Nothing below writes `errno`, but for `strerror_r` (see `create_log`).
        crate::sys::errno::preserved(|| self.write(false));
    }

    /// On a thread glibc does not know (the helper of `collect::single`),
    /// whose `errno` and thread-local state are the main thread's: no glibc
    /// function at all.
    pub fn emit_raw(self) {
        self.write(true);
    }

    fn write(mut self, no_glibc: bool) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        let text = &self.buf[..self.len + 1];
        to_stderr(text);
        to_log_file(text, no_glibc);
    }
}

fn to_stderr(text: &[u8]) {
    let ours = match ERR_STATE.load(Ordering::Acquire) {
        UNSET => true,
        NOTED => {
            let noted = (
                ERR_DEV.load(Ordering::Relaxed),
                ERR_INO.load(Ordering::Relaxed),
            );
            files::inode(2) == Some(noted)
        }
        _ => false,
    };
    // Otherwise closed by the program, or fd 2 is now a file of its own.
    // Once the program exits, its thread writes only where that cannot
    // block (a full stderr pipe would hold the exit for ever): the line is
    // still in the log file.
    if ours && (!EXITING.load(Ordering::Relaxed) || raw::writable_now(2)) {
        without_sigpipe(|| files::write_all(2, text));
    }
}

/// Runs `write` with `SIGPIPE` blocked on this thread, so a write to a pipe
/// whose reader has gone fails with `EPIPE` instead of killing the program
/// (or running its handler). The `SIGPIPE` that write leaves pending on this
/// thread is then taken with a zero-timeout `sigtimedwait` (it is pending,
/// so that cannot be interrupted), unless one was already pending before:
/// that one is the program's, and stays.
fn without_sigpipe(write: impl FnOnce() -> Result<(), i32>) {
    let pipe = raw::sigset(&[libc::SIGPIPE]);
    let mut old = 0u64;
    let mut pending = 0u64;
    raw::sys!(
        libc::SYS_rt_sigprocmask,
        libc::SIG_BLOCK,
        &pipe as *const u64,
        &mut old as *mut u64,
        8
    );
    raw::sys!(libc::SYS_rt_sigpending, &mut pending as *mut u64, 8);
    if write() == Err(libc::EPIPE) && pending & pipe == 0 {
        raw::sigtimedwait(pipe, 0);
    }
    raw::set_mask(old);
}

fn to_log_file(text: &[u8], no_glibc: bool) {
    let pid = raw::getpid();
    loop {
        let holder = LOG_BUSY.load(Ordering::Relaxed);
        if holder != pid
            && LOG_BUSY
                .compare_exchange(holder, pid, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            break;
        }
        // Another thread of this process: it only opens and writes a file.
        raw::yield_now();
    }
    // A snapshot copy (`collect::single`) writes to its process's log.
    if let Some((fd, reopened)) = log_fd(raw::process_id(), no_glibc) {
        let _ = files::write_all(fd, text);
        if reopened || DIR_REOPENED.load(Ordering::Relaxed) {
            // The program closed the library's descriptors: it gets the
            // number back at once (`LOG_NUMBER` finds the file again).
            let _ = raw::close(fd);
            LOG_FD.store(-1, Ordering::Relaxed);
        }
    }
    LOG_BUSY.store(0, Ordering::Release);
}

/// The log file as a process knows it: a snapshot copy
/// (`collect::single`) that created or reopened it hands this back.
#[derive(Clone, Copy)]
pub struct State {
    fd: i32,
    id: (u64, u64),
    number: u32,
    next: u32,
    said: bool,
    pid: i32,
}

pub fn state() -> State {
    State {
        fd: LOG_FD.load(Ordering::Relaxed),
        id: (
            LOG_DEV.load(Ordering::Relaxed),
            LOG_INO.load(Ordering::Relaxed),
        ),
        number: LOG_NUMBER.load(Ordering::Relaxed),
        next: LOG_NEXT.load(Ordering::Relaxed),
        said: LOG_FAILURE_SAID.load(Ordering::Relaxed),
        pid: LOG_PID.load(Ordering::Relaxed),
    }
}

/// Atomic stores only: the helper of `collect::single` applies it.
pub fn adopt(s: State) {
    LOG_DEV.store(s.id.0, Ordering::Relaxed);
    LOG_INO.store(s.id.1, Ordering::Relaxed);
    LOG_NUMBER.store(s.number, Ordering::Relaxed);
    LOG_NEXT.store(s.next, Ordering::Relaxed);
    LOG_FAILURE_SAID.store(s.said, Ordering::Relaxed);
    LOG_PID.store(s.pid, Ordering::Relaxed);
    LOG_FD.store(s.fd, Ordering::Relaxed);
}

/// This process's log file, opened or created as needed, and whether it
/// was reopened (the program closed the one the library had). Called with
/// `LOG_BUSY` held; `no_glibc` as in `Line::write`.
fn log_fd(pid: libc::pid_t, no_glibc: bool) -> Option<(libc::c_int, bool)> {
    let fd = LOG_FD.load(Ordering::Relaxed);
    let id = (
        LOG_DEV.load(Ordering::Relaxed),
        LOG_INO.load(Ordering::Relaxed),
    );
    let ours = fd >= 0 && files::inode(fd) == Some(id);
    if LOG_PID.load(Ordering::Relaxed) != pid {
        if ours {
            // The parent's log, inherited across fork: the child has its own.
            let _ = raw::close(fd);
        }
        LOG_PID.store(pid, Ordering::Relaxed);
        LOG_NUMBER.store(NO_LOG, Ordering::Relaxed);
        LOG_NEXT.store(0, Ordering::Relaxed);
        LOG_FAILURE_SAID.store(false, Ordering::Relaxed);
    } else if ours {
        return Some((fd, false));
    }
    LOG_FD.store(-1, Ordering::Relaxed);
    let dir = DIR_FD.load(Ordering::Acquire);
    let dir_id = (
        DIR_DEV.load(Ordering::Relaxed),
        DIR_INO.load(Ordering::Relaxed),
    );
    if dir < 0 || files::identity(dir) != Some(dir_id) {
        return None;
    }
    let number = LOG_NUMBER.load(Ordering::Relaxed);
    if number != NO_LOG {
        // The program closed our descriptor: the file we made, if still there.
        let name = log_name(pid, number);
        let fd = raw::sys!(
            libc::SYS_openat,
            dir,
            name.buf.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC
        ) as libc::c_int;
        if fd >= 0 && files::inode(fd) == Some(id) {
            LOG_FD.store(fd, Ordering::Relaxed);
            return Some((fd, true));
        }
        if fd >= 0 {
            let _ = raw::close(fd);
        }
    }
    create_log(dir, pid, no_glibc).map(|fd| (fd, number != NO_LOG))
}

/// Creates the log under the first free name from `LOG_NEXT`; says once
/// where messages go if it cannot (the error by number when `no_glibc`).
fn create_log(dir: libc::c_int, pid: libc::pid_t, no_glibc: bool) -> Option<libc::c_int> {
    let first = LOG_NEXT.load(Ordering::Relaxed);
    let mut k = first;
    let error = loop {
        if k == first.saturating_add(64) {
            break libc::EEXIST;
        }
        let name = log_name(pid, k);
        // SAFETY: `log_name` ends the name with a NUL.
        let c = unsafe { core::ffi::CStr::from_ptr(name.buf.as_ptr().cast()) };
        match files::create_exclusive(dir, c, libc::O_APPEND) {
            Ok(fd) => {
                let (dev, ino) = files::inode(fd).unwrap_or_default();
                LOG_DEV.store(dev, Ordering::Relaxed);
                LOG_INO.store(ino, Ordering::Relaxed);
                LOG_NUMBER.store(k, Ordering::Relaxed);
                LOG_NEXT.store(k + 1, Ordering::Relaxed);
                LOG_FD.store(fd, Ordering::Relaxed);
                if k > 0 {
                    let mut note = Line::new();
                    let _ = write!(
                        note,
                        "leakprobe: this process's log is now {name} ({} is taken or gone)",
                        log_name(pid, k - 1)
                    );
                    note.end();
                    to_stderr(&note.buf[..note.len]);
                    let _ = files::write_all(fd, &note.buf[..note.len]);
                }
                return Some(fd);
            }
            Err(libc::EEXIST) => k += 1,
            Err(e) => break e,
        }
    };
    LOG_NEXT.store(k, Ordering::Relaxed);
    if !LOG_FAILURE_SAID.swap(true, Ordering::Relaxed) {
        let mut note = Line::new();
        let _ = write!(
            note,
            "leakprobe: cannot create {} in the dump directory (",
            log_name(pid, first)
        );
        if error == libc::EEXIST {
            let _ = write!(note, "it and the next 63 names are taken");
        } else if no_glibc {
            // strerror_r may translate: glibc's locale state, not the helper's.
            let _ = write!(note, "error {error}");
        } else {
            let mut text = [0u8; 128];
            // SAFETY: strerror_r writes a NUL-terminated message into the
            // buffer, at most its length.
            unsafe { libc::strerror_r(error, text.as_mut_ptr().cast(), text.len()) };
            let end = text.iter().position(|&b| b == 0).unwrap_or(0);
            let _ = note.write_str(core::str::from_utf8(&text[..end]).unwrap_or("?"));
        }
        let _ = write!(note, "): this process's messages go to stderr only");
        note.end();
        to_stderr(&note.buf[..note.len]);
    }
    None
}

/// `leakprobe.<pid>.log` (k = 0) or `leakprobe.<pid>.<k>.log`, NUL-terminated.
fn log_name(pid: libc::pid_t, k: u32) -> Line {
    let mut name = Line::name();
    let _ = match k {
        0 => write!(name, "leakprobe.{pid}.log\0"),
        k => write!(name, "leakprobe.{pid}.{k}.log\0"),
    };
    name
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let text = &self.buf[..self.len];
        let text = text.strip_suffix(b"\0").unwrap_or(text);
        f.write_str(core::str::from_utf8(text).unwrap_or("?"))
    }
}

impl Line {
    fn push(&mut self, s: &str) {
        // A line cut short is cut between characters: it stays UTF-8.
        let mut n = s.len().min(self.buf.len() - self.len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !self.escape || !s.chars().any(char::is_control) {
            self.push(s);
            return Ok(());
        }
        struct Raw<'a>(&'a mut Line);
        impl Write for Raw<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.push(s);
                Ok(())
            }
        }
        s.chars()
            .try_for_each(|c| crate::sys::escape::control(c, &mut Raw(self)))
    }
}

/// `log!("...", args)` writes `leakprobe: ...` as one line on stderr.
macro_rules! log {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut line = $crate::sys::log::Line::new();
        let _ = line.write_str("leakprobe: ");
        let _ = write!(line, $($arg)*);
        line.emit();
    }};
}
pub(crate) use log;
