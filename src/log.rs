//! One-line messages on stderr, formatted on the stack: usable from any
//! context except signal handlers, with no allocation.

use core::fmt::{self, Write};

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
        let mut rest = &self.buf[..self.len + 1];
        while !rest.is_empty() {
            // SAFETY: writing an initialised buffer to fd 2.
            let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                return;
            }
            rest = &rest[n as usize..];
        }
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
