//! What the library publishes about itself for `scripts/leakprobe dump`,
//! which cannot trust the process's environment (redis-server, nginx and
//! every user of setproctitle write their title over it): the dump
//! directory, the dump signal, and a refusal it has already stated. One
//! exported data symbol, `leakprobe_published`, read through
//! `/proc/PID/mem` at its address; the layout is a contract with the script
//! (docs/published.md):
//!
//! | offset | what |
//! |---|---|
//! | 0 | u64 magic `0x4c45414b50524f42` ("LEAKPROB") |
//! | 8 | u64 sequence: odd while the body is rewritten (a seqlock) |
//! | 16 | u32 body length |
//! | 20 | u32 version, 1 |
//! | 24 | the body: ASCII lines `key value\n` |
//!
//! Keys: `dir` (hex of the dump directory's path bytes; left out if it does
//! not fit), `signal` (its number; 0 if none), `refusal` (only while every
//! dump is refused: why, printable ASCII, anything else as `\xNN`), `pid`
//! (who wrote it: a forked child that has not rewritten it yet is seen),
//! `attached` (the collector thread's id, while the library is attached to
//! a running program: the dump signal goes to that thread alone),
//! `detached` (`1`, once it was detached: attaching again is allowed).
//! Rewritten when one of them changes: at load, in a forked child, when the
//! program's credentials change, when the taker of dump signals cannot
//! start, when the program takes the signal itself, at attach and detach.

use crate::sys::lock::SpinLock;
use core::fmt::Write;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

const SIZE: usize = 4096;
const HEAD: usize = 24;
const BODY: usize = SIZE - HEAD;
const MAGIC: u64 = 0x4c45_414b_5052_4f42;

#[repr(C, align(8))]
pub struct Published {
    magic: u64,
    seq: AtomicU64,
    len: AtomicU32,
    version: u32,
    body: [AtomicU8; BODY],
}

const _: () = assert!(core::mem::size_of::<Published>() == SIZE);

/// The record (see the module comment). Written only here.
#[no_mangle]
#[used]
#[allow(non_upper_case_globals)]
pub static leakprobe_published: Published = Published {
    magic: MAGIC,
    seq: AtomicU64::new(0),
    len: AtomicU32::new(0),
    version: 1,
    body: [const { AtomicU8::new(0) }; BODY],
};

/// Why every dump is refused, by cause: each set and cleared on its own;
/// the record shows the first set.
#[derive(Clone, Copy)]
pub enum Refusal {
    /// The dump directory cannot be used (at load, or by the credentials
    /// the program changed to).
    Dir = 0,
    /// Nothing can take dump signals (no thread could be started).
    NoTaker = 1,
    /// The program waits for the dump signal itself.
    ProgramWaits = 2,
}

const REASON: usize = 512;
const CAUSES: usize = 3;

struct State {
    /// The dump directory's path, hex, and its length (0: not published).
    dir: [u8; 2 * 1024],
    dir_len: usize,
    reasons: [([u8; REASON], usize); CAUSES],
}

/// Runs `f` with the state, unless its lock stays taken (a snapshot copy
/// of a single-threaded program made while the program's thread held it:
/// the copy must not wait for ever): the record is then left as it is.
fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    if !STATE.try_acquire_for(10_000, crate::sys::raw::yield_now) {
        return None;
    }
    // SAFETY: acquired just above, released below.
    let r = f(unsafe { STATE.held() });
    STATE.release();
    Some(r)
}

static STATE: SpinLock<State> = SpinLock::new(State {
    dir: [0; 2 * 1024],
    dir_len: 0,
    reasons: [([0; REASON], 0); CAUSES],
});
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// While attached, the collector thread's id; 0 never attached; -1 detached.
static ATTACHED: AtomicI32 = AtomicI32::new(0);

/// Attached (`Some`: the collector thread that takes the dump signal) or
/// detached (`None`).
pub fn attached(collector: Option<libc::pid_t>) {
    ATTACHED.store(collector.unwrap_or(-1), Ordering::Relaxed);
    publish();
}

/// At load: the dump directory (absolute) and the dump signal (0 if none).
pub fn init(dir: &[u8], signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::Relaxed);
    with_state(|s| {
        s.dir_len = 0;
        if dir.len() * 2 <= s.dir.len() {
            for (i, b) in dir.iter().enumerate() {
                s.dir[2 * i] = HEX[usize::from(b >> 4)];
                s.dir[2 * i + 1] = HEX[usize::from(b & 15)];
            }
            s.dir_len = 2 * dir.len();
        }
    });
    publish();
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Sets (`Some`) or clears the refusal for `cause`, and rewrites the record
/// if that changed it.
pub fn refuse(cause: Refusal, reason: Option<core::fmt::Arguments>) {
    let changed = with_state(|s| {
        let (buf, len) = &mut s.reasons[cause as usize];
        let before = *len;
        let mut out = Ascii { buf, len: 0 };
        if let Some(reason) = reason {
            let _ = out.write_fmt(reason);
        }
        let now = out.len;
        *len = now;
        before != 0 || now != 0
    });
    if changed == Some(true) {
        publish();
    }
}

/// In a forked child (one thread): the lock may have been held by a thread
/// of the parent's that the child does not have; the record names the child.
pub fn forked() {
    STATE.release();
    let seq = &leakprobe_published.seq;
    if seq.load(Ordering::Relaxed) % 2 == 1 {
        // Forked in the middle of a rewrite: the child's rewrite starts even.
        seq.fetch_add(1, Ordering::Relaxed);
    }
    publish();
}

/// The program changed its credentials: whether it may still write into
/// the dump directory it holds open (by its path if the program closed
/// that: a path a `chroot` hides is not a refusal).
pub fn credentials_changed(dir: &std::ffi::OsStr) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_bytes()) else {
        return;
    };
    match crate::sys::files::may_write_in(crate::sys::log::directory(), &path) {
        Err(e) if e == libc::EACCES || e == libc::EPERM || e == libc::EROFS => {
            let uid = crate::sys::process::euid();
            refuse(
                Refusal::Dir,
                Some(format_args!(
                    "the dump directory {} is not writable by uid {uid} (after a change of \
                     credentials)",
                    crate::sys::escape::Escaped(dir.as_bytes())
                )),
            );
        }
        Ok(()) => refuse(Refusal::Dir, None),
        Err(_) => {}
    }
}

/// Writes the record from the state (a seqlock: odd while it changes).
fn publish() {
    let r = &leakprobe_published;
    with_state(|s| {
        let mut buf = [0u8; BODY];
        let mut out = Ascii {
            buf: &mut buf,
            len: 0,
        };
        if s.dir_len > 0 {
            out.raw(b"dir ");
            out.raw(&s.dir[..s.dir_len]);
            out.raw(b"\n");
        }
        let _ = write!(out, "signal {}", SIGNAL.load(Ordering::Relaxed));
        out.raw(b"\n");
        if let Some((reason, len)) = s.reasons.iter().find(|(_, len)| *len > 0) {
            out.raw(b"refusal ");
            out.raw(&reason[..*len]);
            out.raw(b"\n");
        }
        let _ = write!(out, "pid {}", crate::sys::raw::getpid());
        out.raw(b"\n");
        match ATTACHED.load(Ordering::Relaxed) {
            0 => {}
            -1 => out.raw(b"detached 1\n"),
            tid => {
                let _ = write!(out, "attached {tid}");
                out.raw(b"\n");
            }
        }
        let len = out.len;
        r.seq.fetch_add(1, Ordering::AcqRel);
        for (to, from) in r.body.iter().zip(&buf[..len]) {
            to.store(*from, Ordering::Relaxed);
        }
        r.len.store(len as u32, Ordering::Relaxed);
        r.seq.fetch_add(1, Ordering::Release);
    });
}

/// Text into a fixed buffer, cut at its end: printable ASCII as it is,
/// every other byte as `\xNN`.
struct Ascii<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Ascii<'_> {
    /// Bytes already ASCII (hex, an escaped reason), as they are.
    fn raw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }
}

impl Write for Ascii<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if (0x20..0x7f).contains(&b) {
                self.raw(&[b]);
            } else {
                self.raw(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> String {
        let r = &leakprobe_published;
        let len = r.len.load(Ordering::Relaxed) as usize;
        r.body[..len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed) as char)
            .collect()
    }

    #[test]
    fn the_record_says_dir_signal_refusal_and_pid() {
        init(b"/tmp/a b", 12);
        refuse(Refusal::NoTaker, Some(format_args!("no \x1b thread é")));
        let pid = crate::sys::raw::getpid();
        assert_eq!(
            body(),
            format!(
                "dir 2f746d702f612062\nsignal 12\nrefusal no \\x1b thread \\xc3\\xa9\npid {pid}\n"
            )
        );
        refuse(Refusal::NoTaker, None);
        assert_eq!(
            body(),
            format!("dir 2f746d702f612062\nsignal 12\npid {pid}\n")
        );
        attached(Some(4242));
        assert_eq!(
            body(),
            format!("dir 2f746d702f612062\nsignal 12\npid {pid}\nattached 4242\n")
        );
        attached(None);
        assert_eq!(
            body(),
            format!("dir 2f746d702f612062\nsignal 12\npid {pid}\ndetached 1\n")
        );
        assert_eq!(leakprobe_published.seq.load(Ordering::Relaxed) % 2, 0);
        assert_eq!(leakprobe_published.magic, MAGIC);
    }
}
