//! A harness program run with the library preloaded, driven the way the
//! tests need: its stdout lines, signals, dump requests answered by a dump
//! that says so, closing its stdin (the harness then frees and exits).

use super::{dump_files_of, library, seq_of, Dump};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A running program with the library preloaded.
pub struct Probe {
    pub child: Child,
    pub dir: PathBuf,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr_path: PathBuf,
    /// Highest dump sequence number already accounted for.
    last_seq: Option<u64>,
}

impl Probe {
    /// Starts `program` with LD_PRELOAD, LEAKPROBE_DIR=`dir` and `env`.
    pub fn start(program: &Path, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Probe {
        Probe::start_with(program, args, dir, env, |_| {})
    }

    /// As `start`, with `customize` applied to the command last (limits,
    /// credentials).
    pub fn start_with(
        program: &Path,
        args: &[&str],
        dir: &Path,
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut Command),
    ) -> Probe {
        let stderr_path = dir.with_extension("stderr.txt");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("LD_PRELOAD", library())
            .env("LEAKPROBE_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        customize(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Probe {
            child,
            dir: dir.to_owned(),
            stdin,
            lines,
            stderr_path,
            last_seq: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for a line on stdout starting with `prefix`; returns it.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line starting with {prefix:?} within {timeout:?}; stderr:\n{}",
                        self.stderr()
                    );
                }
            }
        }
    }

    /// A line starting with `prefix` if one has arrived, without waiting.
    pub fn try_line(&mut self, prefix: &str) -> Option<String> {
        while let Ok(line) = self.lines.try_recv() {
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
        None
    }

    fn newest_seq(&self) -> Option<u64> {
        self.dump_files().last().map(|f| seq_of(f))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with our child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill failed");
    }

    /// Dump files written so far for this process, in order.
    pub fn dump_files(&self) -> Vec<PathBuf> {
        dump_files_of(&self.dir, self.pid())
    }

    /// Sends a tagged dump request (as `scripts/leakprobe dump` does) and
    /// waits for the dump that says it answers `token`. Every request that
    /// reached the process before this one is answered by then, so no dump
    /// is still on its way: what `settle` used to guess from quiet.
    pub fn dump_answering(&mut self, token: u32, timeout: Duration) -> Dump {
        let deadline = Instant::now() + timeout;
        self.request(token, timeout);
        let wanted = format!("{token:08x}");
        loop {
            let exited = self.child.try_wait().ok().flatten();
            // Every new dump in order: the answer may not be the newest.
            for file in self.dump_files() {
                if Some(seq_of(&file)) <= self.last_seq {
                    continue;
                }
                self.last_seq = Some(seq_of(&file));
                let Some(dump) = Dump::try_read(&file) else {
                    continue;
                };
                if dump
                    .meta
                    .get("requests_answered")
                    .is_some_and(|t| t.split(' ').any(|t| t == wanted))
                {
                    return dump;
                }
            }
            if let Some(status) = exited {
                panic!(
                    "the process ended ({status}) before a dump answered {wanted}; stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "no dump answering {wanted} in {} within {timeout:?}; stderr:\n{}",
                    self.dir.display(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a tagged dump request (as `scripts/leakprobe dump` does),
    /// without waiting for its answer.
    pub fn request(&self, token: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // A standard signal sent while one is pending is merged into it,
        // value and all: send only when none is.
        while self.signal_pending(libc::SIGUSR2) {
            assert!(
                Instant::now() < deadline,
                "SIGUSR2 stays pending in {}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let value = libc::sigval {
            sival_ptr: ((0x4c45_414b_u64 << 32) | u64::from(token)) as usize as *mut libc::c_void,
        };
        // SAFETY: sigqueue to our own child.
        assert_eq!(
            unsafe { libc::sigqueue(self.pid(), libc::SIGUSR2, value) },
            0
        );
    }

    /// Waits until the program's stderr holds `text`; returns the first
    /// line that does.
    pub fn wait_for_stderr(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(text)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on stderr within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `dump_answering` with a token of its own.
    pub fn dump_tagged(&mut self) -> Dump {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let token =
            (std::process::id() << 16) ^ NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dump_answering(token, Duration::from_secs(60))
    }

    /// Whether `sig` is pending for the whole process (`ShdPnd`).
    fn signal_pending(&self, sig: i32) -> bool {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("ShdPnd:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (sig - 1)) != 0)
    }

    /// Waits for a dump newer than any accounted for, and accounts for it.
    pub fn wait_for_new_dump(&mut self, timeout: Duration) -> PathBuf {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(file) = self
                .dump_files()
                .pop()
                .filter(|f| Some(seq_of(f)) > self.last_seq)
            {
                self.last_seq = Some(seq_of(&file));
                return file;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "no new dump in {} within {timeout:?}; stderr:\n{}",
                    self.dir.display(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGUSR2 and waits for the next dump's file.
    pub fn wait_for_dump_after_signal(&mut self) -> PathBuf {
        self.last_seq = self.last_seq.max(self.newest_seq());
        self.signal(libc::SIGUSR2);
        self.wait_for_new_dump(Duration::from_secs(30))
    }

    /// Sends SIGUSR2 and returns the parsed dump it produces.
    pub fn dump(&mut self) -> Dump {
        self.dump_with(libc::SIGUSR2)
    }

    pub fn dump_with(&mut self, sig: i32) -> Dump {
        self.last_seq = self.last_seq.max(self.newest_seq());
        self.signal(sig);
        Dump::read(&self.wait_for_new_dump(Duration::from_secs(30)))
    }

    /// Waits for READY, requests one dump, lets the program finish and checks
    /// that it exited 0. Returns the dump and the program's stderr.
    pub fn dump_at_ready(mut self) -> (Dump, String) {
        self.expect_line("READY", Duration::from_secs(120));
        let dump = self.dump();
        let (status, stderr) = self.finish(Duration::from_secs(60));
        assert!(status.success(), "{status}\n{stderr}");
        (dump, stderr)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Closes stdin (the harness then frees everything and exits) and waits.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr = self.stderr();
                return (status, stderr);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    pub fn write_stdin(&mut self, text: &str) {
        self.stdin
            .as_mut()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
