//! Shared by the integration tests: run a harness program with the library
//! preloaded, drive it (READY / signal / close stdin), and read its dumps.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Once;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The release library; `make test` builds it before the tests run.
pub fn library() -> PathBuf {
    let lib = root().join("target/release/libleakprobe.so");
    assert!(
        lib.exists(),
        "{} is missing: run `make test` (it builds the library first)",
        lib.display()
    );
    lib
}

/// A harness program, built by the Makefile on first use.
pub fn harness(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let ok = Command::new("make")
            .arg("-s")
            .arg("harness")
            .current_dir(root())
            .status();
        assert!(
            ok.map(|s| s.success()).unwrap_or(false),
            "make harness failed"
        );
    });
    root().join("target/harness").join(name)
}

/// A fresh, empty directory for one test's dumps.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = root()
        .join("target/test-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn has_command(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

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

    /// Waits until no new dump has appeared for `quiet`, so the next `dump()`
    /// is the answer to the next signal. Returns how many dumps are kept.
    pub fn settle(&mut self, quiet: Duration) -> usize {
        let mut newest = self.newest_seq();
        let mut since = Instant::now();
        while since.elapsed() < quiet {
            std::thread::sleep(Duration::from_millis(20));
            if self.newest_seq() != newest {
                newest = self.newest_seq();
                since = Instant::now();
            }
        }
        self.last_seq = newest;
        self.dump_files().len()
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
    /// waits for the dump that says it answers `token`.
    pub fn dump_answering(&mut self, token: u32, timeout: Duration) -> Dump {
        let value = libc::sigval {
            sival_ptr: ((0x4c45_414b_u64 << 32) | u64::from(token)) as usize as *mut libc::c_void,
        };
        // SAFETY: sigqueue to our own child.
        assert_eq!(
            unsafe { libc::sigqueue(self.pid(), libc::SIGUSR2, value) },
            0
        );
        let deadline = Instant::now() + timeout;
        let wanted = format!("{token:08x}");
        loop {
            let file = self.wait_for_new_dump(deadline.saturating_duration_since(Instant::now()));
            let dump = Dump::read(&file);
            if dump
                .meta
                .get("requests_answered")
                .is_some_and(|t| t.split(' ').any(|t| t == wanted))
            {
                return dump;
            }
        }
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

/// The sequence number of a `leakprobe.<pid>.<seq>.heap` file.
pub fn seq_of(file: &Path) -> u64 {
    file.file_name()
        .unwrap()
        .to_string_lossy()
        .split('.')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// `leakprobe.<pid>.<seq>.heap` files in `dir`, ordered by sequence number.
pub fn dump_files_of(dir: &Path, pid: i32) -> Vec<PathBuf> {
    let prefix = format!("leakprobe.{pid}.");
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let seq = name
                        .strip_prefix(&prefix)?
                        .strip_suffix(".heap")?
                        .parse()
                        .ok()?;
                    Some((seq, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

#[derive(Debug, Clone)]
pub struct Row {
    pub live_count: u64,
    pub live_bytes: u64,
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    pub frames: Vec<u64>,
    /// The `# leakprobe usable:` line after the row, if any.
    pub usable: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

/// A parsed dump.
#[derive(Debug)]
pub struct Dump {
    pub path: PathBuf,
    pub period: u64,
    pub meta: HashMap<String, String>,
    pub rows: Vec<Row>,
    pub maps: Vec<Mapping>,
}

impl Dump {
    pub fn read(path: &Path) -> Dump {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let period = header
            .split("@ heap_v2/")
            .nth(1)
            .unwrap_or_else(|| panic!("bad header {header:?}"))
            .trim()
            .parse()
            .unwrap();
        let mut meta = HashMap::new();
        let mut rows = Vec::new();
        for line in lines.by_ref() {
            if line == "MAPPED_LIBRARIES:" {
                break;
            }
            if let Some(kv) = line.strip_prefix("# leakprobe ") {
                let (k, v) = kv.split_once(": ").unwrap();
                if k == "usable" {
                    let row: &mut Row = rows.last_mut().expect("usable line before any row");
                    row.usable = Some(v.parse().unwrap());
                }
                meta.insert(k.to_string(), v.to_string());
            } else if !line.is_empty() {
                rows.push(parse_row(line));
            }
        }
        let maps = lines.filter_map(parse_mapping).collect();
        Dump {
            path: path.to_owned(),
            period,
            meta,
            rows,
            maps,
        }
    }

    /// Every value of a fact that may repeat (`blind`, `build_id`).
    pub fn meta_all(&self, key: &str) -> Vec<String> {
        let prefix = format!("# leakprobe {key}: ");
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    pub fn meta_u64(&self, key: &str) -> u64 {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in dump"))
            .parse()
            .unwrap()
    }

    pub fn mapping_of(&self, addr: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| m.start <= addr && addr < m.end)
    }

    /// Live (count, bytes) and cumulative (count, bytes) per function of
    /// `exe`, attributing each row to its first frame inside `exe`. Also the
    /// source line of each such frame.
    pub fn by_function(&self, exe: &Path) -> HashMap<String, Site> {
        let exe_name = std::fs::canonicalize(exe).unwrap().display().to_string();
        let first_in_exe = |r: &Row| {
            r.frames.iter().skip(1).copied().find_map(|a| {
                let m = self.mapping_of(a)?;
                (m.path == exe_name).then(|| a - 1 - m.start + m.offset)
            })
        };
        let addrs: Vec<u64> = self.rows.iter().filter_map(first_in_exe).collect();
        let names = symbolize(exe, &addrs);
        let mut sites: HashMap<String, Site> = HashMap::new();
        for r in &self.rows {
            let Some(a) = first_in_exe(r) else { continue };
            let (func, line) = names[&a].clone();
            let s = sites.entry(func).or_insert_with(|| Site {
                live_usable: Some(0),
                ..Site::default()
            });
            s.live_count += r.live_count;
            s.live_bytes += r.live_bytes;
            s.alloc_count += r.alloc_count;
            s.alloc_bytes += r.alloc_bytes;
            if r.live_count > 0 {
                s.lines.push(line);
                s.live_usable = s.live_usable.zip(r.usable).map(|(a, b)| a + b);
            }
        }
        sites
    }
}

#[derive(Debug, Default, Clone)]
pub struct Site {
    pub live_count: u64,
    pub live_bytes: u64,
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    pub lines: Vec<u32>,
    /// Sum of the live rows' usable sizes; None if a row had none.
    pub live_usable: Option<u64>,
}

fn parse_row(line: &str) -> Row {
    let (counts, stack) = line
        .split_once(" @ ")
        .unwrap_or_else(|| panic!("bad row {line:?}"));
    let nums: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 4, "bad row {line:?}");
    let frames = stack
        .split_whitespace()
        .map(|f| {
            let hex = f
                .strip_prefix("0x")
                .unwrap_or_else(|| panic!("bad frame {f:?}"));
            assert_eq!(hex, hex.to_lowercase(), "upper-case hex in {f:?}");
            u64::from_str_radix(hex, 16).unwrap()
        })
        .collect();
    Row {
        live_count: nums[0],
        live_bytes: nums[1],
        alloc_count: nums[2],
        alloc_bytes: nums[3],
        frames,
        usable: None,
    }
}

fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut parts = line.split_whitespace();
    let (lo, hi) = parts.next()?.split_once('-')?;
    let _perms = parts.next()?;
    let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
    let path = parts.nth(2).unwrap_or("").to_string();
    Some(Mapping {
        start: u64::from_str_radix(lo, 16).ok()?,
        end: u64::from_str_radix(hi, 16).ok()?,
        offset,
        path,
    })
}

/// (function, line) for each address of `exe` (whose file offsets equal its
/// virtual addresses, as GNU ld lays out the harness), in one addr2line call.
pub fn symbolize(exe: &Path, addrs: &[u64]) -> HashMap<u64, (String, u32)> {
    let mut cmd = Command::new("addr2line");
    cmd.arg("-f").arg("-C").arg("-e").arg(exe);
    for a in addrs {
        cmd.arg(format!("{a:#x}"));
    }
    let out = cmd.output().expect("addr2line");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let func = lines[2 * i].to_string();
            let line = lines[2 * i + 1]
                .rsplit(':')
                .next()
                .and_then(|l| l.split_whitespace().next())
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            (a, (func, line))
        })
        .collect()
}

/// Line numbers of the `SITE <name>` markers in a harness source file.
pub fn site_lines(source: &str) -> HashMap<String, u32> {
    let text = std::fs::read_to_string(root().join("c-harness").join(source)).unwrap();
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let name = l.split("SITE ").nth(1)?.split_whitespace().next()?;
            Some((name.to_string(), i as u32 + 1))
        })
        .collect()
}

/// Runs a command and returns its stdout, failing the test if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (site, live count, live bytes, allocated count, allocated bytes)
pub type Truth = (&'static str, u64, u64, u64, u64);

/// Every site's counts equal the truth, and every live row of a site is at
/// the line of its `SITE` marker in `source`.
pub fn assert_sites_exact(dump: &Dump, exe: &Path, source: &str, truth: &[Truth]) {
    let sites = dump.by_function(exe);
    let lines = site_lines(source);
    for &(name, live_n, live_b, alloc_n, alloc_b) in truth {
        let got = sites.get(name).cloned().unwrap_or_default();
        assert_eq!(
            (
                got.live_count,
                got.live_bytes,
                got.alloc_count,
                got.alloc_bytes
            ),
            (live_n, live_b, alloc_n, alloc_b),
            "{name}: (live n, live bytes, allocated n, allocated bytes)"
        );
        assert!(
            got.lines.iter().all(|&l| l == lines[name]),
            "{name}: lines {:?}, want {}",
            got.lines,
            lines[name]
        );
    }
}

/// jeprof and pprof both drop the allocator's frames and show each live site
/// of at least 64-byte blocks with its object count at its `SITE` line.
/// (jeprof un-samples even period 1 by 1/(1-exp(-size)), exact only for
/// sizes well above 1 byte.)
pub fn assert_tools_show(exe: &Path, dump: &Dump, source: &str, truth: &[Truth]) {
    let lines = site_lines(source);
    let jeprof = run(Command::new("jeprof")
        .args(["--text", "--inuse_objects", "--lines"])
        .arg(exe)
        .arg(&dump.path));
    let pprof = run(Command::new("go")
        .args([
            "tool",
            "pprof",
            "-text",
            "-lines",
            "-sample_index=inuse_objects",
        ])
        .arg(exe)
        .arg(&dump.path));
    for (tool, out) in [("jeprof", &jeprof), ("pprof", &pprof)] {
        for &(name, live_n, live_b, ..) in truth.iter().filter(|t| t.1 > 0 && t.2 / t.1 >= 64) {
            let at = format!("{source}:{}", lines[name]);
            let found = out.lines().any(|l| {
                l.split_whitespace().next() == Some(&live_n.to_string())
                    && l.contains(&format!("{name} "))
                    && l.contains(&at)
            });
            assert!(
                found,
                "{tool} does not show {live_n} objects at {name} {at} ({live_b} bytes):\n{out}"
            );
        }
        // Both print five number columns, then the function (and its line).
        let allocators = [
            "operator new",
            "malloc",
            "calloc",
            "realloc",
            "posix_memalign",
            "memalign",
            "valloc",
        ];
        for l in out.lines() {
            let function = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            let kept = allocators.iter().find(|a| {
                function == **a
                    || function.starts_with(&format!("{a} "))
                    || function.starts_with(&format!("{a}("))
            });
            assert!(kept.is_none(), "{tool} kept an allocator frame: {l}\n{out}");
        }
    }
}

/// Sends `sig` to `pid` every `every` until dropped; counts what it sent.
pub struct Storm {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Storm {
    pub fn start(pid: i32, sig: i32, every: Duration) -> Storm {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sent = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: kill with a pid of ours.
                if unsafe { libc::kill(pid, sig) } == 0 {
                    sent += 1;
                }
                std::thread::sleep(every);
            }
            sent
        });
        Storm {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns how many signals were sent.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
