//! One-line messages, formatted on the stack: usable from any context except
//! signal handlers, with no allocation. Each goes to stderr and is appended to
//! `leakprobe.<pid>.log` in the dump directory, because a daemon's stderr
//! often goes nowhere.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The dump directory (descriptor and identity) once it is open.
static DIR_FD: AtomicI32 = AtomicI32::new(-1);
static DIR_DEV: AtomicU64 = AtomicU64::new(0);
static DIR_INO: AtomicU64 = AtomicU64::new(0);

/// Where the log file goes: called whenever the dump directory is (re)opened.
pub fn set_directory(fd: libc::c_int, id: (u64, u64)) {
    DIR_DEV.store(id.0, Ordering::Relaxed);
    DIR_INO.store(id.1, Ordering::Relaxed);
    DIR_FD.store(fd, Ordering::Release);
}

pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    pub fn emit(mut self) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        let text = &self.buf[..self.len + 1];
        write_all(2, text);
        append_to_log_file(text);
    }
}

fn write_all(fd: libc::c_int, mut rest: &[u8]) {
    while !rest.is_empty() {
        // SAFETY: writing an initialised buffer.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

fn append_to_log_file(text: &[u8]) {
    let dir = DIR_FD.load(Ordering::Acquire);
    let id = (
        DIR_DEV.load(Ordering::Relaxed),
        DIR_INO.load(Ordering::Relaxed),
    );
    if dir < 0 || crate::dump::identity(dir) != Some(id) {
        return;
    }
    let mut name = Line::new();
    // SAFETY: getpid has no preconditions.
    let _ = write!(name, "leakprobe.{}.log\0", unsafe { libc::getpid() });
    // SAFETY: openat on a directory descriptor with a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir,
            name.buf.as_ptr().cast(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o600 as libc::c_uint,
        )
    };
    if fd >= 0 {
        write_all(fd, text);
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `log!("...", args)` writes `leakprobe: ...` as one line on stderr.
macro_rules! log {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut line = $crate::log::Line::new();
        let _ = line.write_str("leakprobe: ");
        let _ = write!(line, $($arg)*);
        line.emit();
    }};
}
pub(crate) use log;
