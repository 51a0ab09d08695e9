//! Shared by the integration tests: where things are (the library, the
//! harness programs, a scratch directory), and the parts re-exported below:
//! - `probe`: runs a harness program with the library preloaded and drives it
//!   (lines on its stdout, signals, tagged dump requests, closing stdin);
//! - `dump`: reads a dump, checking its header totals against its rows;
//! - `truth`: names a dump's rows by function and line, and compares them
//!   with a harness program's known truth (and with jeprof's and pprof's);
//! - `storm`: a thread sending a signal over and over.
#![allow(dead_code, unused_imports)]

mod dump;
mod probe;
mod storm;
mod truth;

pub use dump::*;
pub use probe::*;
pub use storm::*;
pub use truth::*;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
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

/// Whether a test that needs root can run. If not, says so on the real
/// stderr: libtest captures `eprintln!` of passing tests, and a test that
/// did nothing must not pass unseen.
pub fn can_run_as_root(test: &str, why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let _ = writeln!(std::io::stderr(), "SKIP {test}: needs root ({why})");
    false
}

/// A file the test needs that `scripts/install-deps` installs (from Debian
/// package `package`): missing, the test fails saying so; it never passes
/// without having run.
pub fn installed<'a>(path: &'a str, package: &str) -> &'a str {
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: `make deps` (scripts/install-deps) installs it ({package})"
    );
    path
}

/// A test that cannot run here for a reason no install fixes (another
/// distribution's build of a program): says so on the real stderr, which
/// libtest does not capture, so the pass is never silent.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
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

/// Waits for an event: polls `found` every 10 ms until it gives a value.
/// After 30 s the test fails naming `what`, with `show()` (the program's
/// output, the directory) to tell why. The wait is for something the
/// program does (a line, a file, a dump), never for time to pass.
pub fn wait_until<T>(
    what: &str,
    mut found: impl FnMut() -> Option<T>,
    show: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < deadline, "no {what}:\n{}", show());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `wait_until` for a condition.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool, show: impl Fn() -> String) {
    wait_until(what, || done().then_some(()), show)
}
