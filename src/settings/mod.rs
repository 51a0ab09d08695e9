//! Settings from the environment. A bad value never stops the program: one
//! line on stderr names the variable and the value used instead.

pub mod inherit;

use std::ffi::OsString;

/// Most frames a stack keeps (`LEAKPROBE_MAX_FRAMES` chooses fewer).
pub const FRAMES_LIMIT: usize = 128;
pub const DEFAULT_DIR: &str = "/tmp";
pub const DEFAULT_SAMPLE: usize = 524_288;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub dir: OsString,
    pub sample_period: usize,
    pub signal: libc::c_int,
    pub max_frames: usize,
    pub dump_at_exit: bool,
    pub no_inherit: bool,
    /// Seconds between automatic dumps, `LEAKPROBE_DUMP_SECONDS` (0: off);
    /// its old name `LEAKPROBE_PERIOD` is still read.
    pub dump_every_secs: u64,
    /// Estimated bytes allocated between automatic dumps,
    /// `LEAKPROBE_INTERVAL` (0: off).
    pub dump_every_bytes: u64,
    /// Dumps kept per process; older ones are removed.
    pub max_dumps: usize,
    /// Automatic dumps (`LEAKPROBE_DUMP_SECONDS`, `LEAKPROBE_INTERVAL`) kept
    /// per process, `LEAKPROBE_KEEP` (0: only `max_dumps` bounds them).
    pub keep_automatic: usize,
    /// Keep the live profile as of the highest live heap (`LEAKPROBE_PEAK`).
    pub peak: bool,
    pub unwinder: Unwinder,
    /// Java frames in the stacks of JVM threads (`LEAKPROBE_JAVA`).
    pub java: bool,
    /// Python frames in the stacks of CPython threads (`LEAKPROBE_PYTHON`).
    pub python: bool,
    /// `LEAKPROBE_THREAD`: when the collector thread starts
    /// (`collect::single`).
    pub thread: Thread,
    /// Seconds a process copy of the single-threaded mode may take to write
    /// a dump before it is stopped (`LEAKPROBE_COPY_TIMEOUT`).
    pub copy_timeout_secs: u64,
}

/// `LEAKPROBE_THREAD`: `auto`, no thread of the library's that glibc knows
/// about while the program has one thread; `always`, the collector thread
/// from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    Auto,
    Always,
}

impl std::fmt::Display for Thread {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Thread::Auto => "auto",
            Thread::Always => "always",
        })
    }
}

/// `LEAKPROBE_UNWIND`: the caching unwinder (libgcc's for the stacks it
/// cannot follow), or libgcc's for every stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwinder {
    Fast,
    Libgcc,
}

impl std::fmt::Display for Unwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Unwinder::Fast => "fast",
            Unwinder::Libgcc => "libgcc",
        })
    }
}

/// The settings, read once when the library loads (`init`).
/// `LEAKPROBE_COPY_TIMEOUT`'s default.
pub const DEFAULT_COPY_TIMEOUT_SECS: u64 = 30;

static SETTINGS: once_cell::sync::OnceCell<Settings> = once_cell::sync::OnceCell::new();

/// Reads the environment once; later calls return the same value.
pub fn init() -> &'static Settings {
    SETTINGS.get_or_init(Settings::from_env)
}

/// For a library loaded into a running program (`hook::attach`): the
/// settings `scripts/leakprobe attach` passed, `NAME=value` lines, read on the
/// first attach (later ones keep them). The collector is always a thread:
/// dump requests are sent to it alone (`scripts/leakprobe dump`), since the
/// program's threads that ran before the attach do not block the signal.
pub fn init_attached(text: &str) -> &'static Settings {
    SETTINGS.get_or_init(|| {
        let get = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        };
        Settings {
            thread: Thread::Always,
            ..Settings::from_lookup(get)
        }
    })
}

/// The settings, once the library has loaded.
pub fn get() -> Option<&'static Settings> {
    SETTINGS.get()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dir: DEFAULT_DIR.into(),
            sample_period: DEFAULT_SAMPLE,
            signal: libc::SIGUSR2,
            max_frames: FRAMES_LIMIT,
            dump_at_exit: false,
            no_inherit: false,
            dump_every_secs: 0,
            dump_every_bytes: 0,
            max_dumps: 100,
            keep_automatic: 0,
            peak: false,
            unwinder: Unwinder::Fast,
            java: true,
            python: true,
            thread: Thread::Auto,
            copy_timeout_secs: DEFAULT_COPY_TIMEOUT_SECS,
        }
    }
}

impl Settings {
    pub fn from_env() -> Settings {
        if crate::sys::process::secure_execution() {
            // A set-uid program: the environment belongs to another user.
            if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("LEAKPROBE_")) {
                crate::sys::log::log!(
                    "secure execution: LEAKPROBE_* settings ignored, defaults used"
                );
            }
            return Settings::default();
        }
        Settings::from_lookup(|name| std::env::var_os(name))
    }

    fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Settings {
        let d = Settings::default();
        Settings {
            dir: match get("LEAKPROBE_DIR") {
                Some(v) if !v.is_empty() => absolute(v),
                _ => d.dir,
            },
            sample_period: setting(&get, "LEAKPROBE_SAMPLE", parse_sample, d.sample_period),
            signal: setting(&get, "LEAKPROBE_SIGNAL", parse_signal, d.signal),
            max_frames: setting(&get, "LEAKPROBE_MAX_FRAMES", parse_max_frames, d.max_frames),
            dump_at_exit: setting(&get, "LEAKPROBE_DUMP_AT_EXIT", parse_switch, d.dump_at_exit),
            no_inherit: setting(&get, "LEAKPROBE_NO_INHERIT", parse_switch, d.no_inherit),
            dump_every_secs: dump_seconds(&get, d.dump_every_secs),
            dump_every_bytes: setting(&get, "LEAKPROBE_INTERVAL", parse_count, d.dump_every_bytes),
            max_dumps: setting(&get, "LEAKPROBE_MAX_DUMPS", parse_max_dumps, d.max_dumps),
            keep_automatic: setting(&get, "LEAKPROBE_KEEP", parse_keep, d.keep_automatic),
            peak: setting(&get, "LEAKPROBE_PEAK", parse_switch, d.peak),
            unwinder: setting(&get, "LEAKPROBE_UNWIND", parse_unwind, d.unwinder),
            java: setting(&get, "LEAKPROBE_JAVA", parse_switch, d.java),
            python: setting(&get, "LEAKPROBE_PYTHON", parse_switch, d.python),
            thread: setting(&get, "LEAKPROBE_THREAD", parse_thread, d.thread),
            copy_timeout_secs: setting(
                &get,
                "LEAKPROBE_COPY_TIMEOUT",
                parse_copy_timeout,
                d.copy_timeout_secs,
            ),
        }
    }
}

/// A relative directory is taken from the directory the program starts in,
/// and reported as such: the program may `chdir` away later.
fn absolute(dir: OsString) -> OsString {
    let path = std::path::Path::new(&dir);
    if path.is_absolute() {
        return dir;
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(path).into_os_string(),
        Err(_) => dir,
    }
}

fn setting<T: std::fmt::Display>(
    get: &impl Fn(&str) -> Option<OsString>,
    name: &str,
    parse: fn(&str) -> Result<T, String>,
    default: T,
) -> T {
    let Some(raw) = get(name) else { return default };
    let text = raw.to_string_lossy();
    match parse(text.trim()) {
        Ok(v) => v,
        Err(why) => {
            crate::sys::log::log!("{name}={text:?} {why}; using {default}");
            default
        }
    }
}

fn parse_sample(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("is not a whole number of bytes >= 1".into()),
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| "is not a whole number (0 turns it off)".to_string())
}

/// `LEAKPROBE_DUMP_SECONDS`, or `LEAKPROBE_PERIOD`, its old name ("period"
/// is the sample period now): the old name costs one line, and gives way
/// to the new one when both are set.
fn dump_seconds(get: &impl Fn(&str) -> Option<OsString>, default: u64) -> u64 {
    const NAME: &str = "LEAKPROBE_DUMP_SECONDS";
    const OLD: &str = "LEAKPROBE_PERIOD";
    let name = match (get(NAME), get(OLD)) {
        (_, None) => NAME,
        (None, Some(_)) => {
            crate::sys::log::log!("{OLD} is the old name of {NAME}; taken as {NAME}");
            OLD
        }
        (Some(_), Some(old)) => {
            crate::sys::log::log!(
                "{OLD} is the old name of {NAME}; {NAME} is set too and is used ({OLD}={:?} ignored)",
                old.to_string_lossy()
            );
            NAME
        }
    };
    setting(get, name, parse_dump_seconds, default)
}

/// Longest `LEAKPROBE_DUMP_SECONDS` taken (ten years): longer ones would
/// overflow the clock arithmetic, and mean "never" anyway.
const MAX_DUMP_EVERY_SECS: u64 = 10 * 365 * 24 * 3600;

fn parse_dump_seconds(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n <= MAX_DUMP_EVERY_SECS => Ok(n),
        _ => Err(format!(
            "is not a whole number of seconds from 0 (off) to {MAX_DUMP_EVERY_SECS} (ten years)"
        )),
    }
}

fn parse_max_dumps(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("is not a whole number >= 1".into()),
    }
}

/// `LEAKPROBE_KEEP`: a bad value keeps the default, where
/// `LEAKPROBE_MAX_DUMPS` still bounds every numbered dump.
fn parse_keep(s: &str) -> Result<usize, String> {
    s.parse::<usize>().map_err(|_| {
        "is not a whole number of automatic dumps to keep (0: no limit of its own, \
         LEAKPROBE_MAX_DUMPS still applies)"
            .to_string()
    })
}

fn parse_copy_timeout(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(n),
        _ => Err("is not a whole number of seconds from 1 to 3600".into()),
    }
}

fn parse_thread(s: &str) -> Result<Thread, String> {
    match s {
        "auto" | "" => Ok(Thread::Auto),
        "always" => Ok(Thread::Always),
        _ => Err("is not auto or always".into()),
    }
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" | "" => Ok(false),
        _ => Err("is not 1 or 0".into()),
    }
}

fn parse_unwind(s: &str) -> Result<Unwinder, String> {
    match s {
        "fast" => Ok(Unwinder::Fast),
        "libgcc" => Ok(Unwinder::Libgcc),
        _ => Err("is not fast or libgcc".into()),
    }
}

fn parse_max_frames(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=FRAMES_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!("is not a whole number from 1 to {FRAMES_LIMIT}")),
    }
}

/// The signals that may request dumps, by name and number alike: those the
/// program does not rely on for its life (termination, faults, job control,
/// children, pipes and glibc's own are refused), and the real-time ones.
const DUMP_SIGNALS: [(libc::c_int, &str); 8] = [
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGPWR, "SIGPWR"),
];

/// A signal by name (`SIGUSR2`, `USR2`, `SIGRTMIN+4`) or number; only one of
/// `DUMP_SIGNALS` or a real-time signal.
fn parse_signal(s: &str) -> Result<libc::c_int, String> {
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let sig = if let Ok(n) = name.parse::<libc::c_int>() {
        n
    } else if let Some(off) = name.strip_prefix("RTMIN") {
        libc::SIGRTMIN().checked_add(offset(off)?).unwrap_or(-1)
    } else if let Some(off) = name.strip_prefix("RTMAX") {
        libc::SIGRTMAX().checked_add(offset(off)?).unwrap_or(-1)
    } else {
        match DUMP_SIGNALS.iter().find(|(_, n)| n[3..] == *name) {
            Some(&(sig, _)) => sig,
            None => return Err("is not a signal name or number".into()),
        }
    };
    let real_time = (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig);
    if !real_time && !DUMP_SIGNALS.iter().any(|&(n, _)| n == sig) {
        return Err(format!(
            "is not a signal that can request dumps (one of {}, SIGRTMIN+n or their numbers)",
            DUMP_SIGNALS.map(|(_, n)| n).join(", ")
        ));
    }
    Ok(sig)
}

fn offset(s: &str) -> Result<libc::c_int, String> {
    if s.is_empty() {
        return Ok(0);
    }
    s.parse::<libc::c_int>()
        .map_err(|_| "has a bad real-time signal offset".to_string())
}

/// Signal number as `SIGUSR2` or `SIGRTMIN+4`, for messages.
pub fn signal_name(sig: libc::c_int) -> String {
    match DUMP_SIGNALS.iter().find(|(n, _)| *n == sig) {
        Some((_, name)) => name.to_string(),
        None if sig >= libc::SIGRTMIN() => format!("SIGRTMIN+{}", sig - libc::SIGRTMIN()),
        None => format!("signal {sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Settings {
        Settings::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into()))
    }

    #[test]
    fn defaults() {
        assert_eq!(with(&[]), Settings::default());
    }

    #[test]
    fn good_values() {
        let c = with(&[
            ("LEAKPROBE_SAMPLE", "1"),
            ("LEAKPROBE_SIGNAL", "SIGRTMIN+4"),
            ("LEAKPROBE_MAX_FRAMES", "16"),
            ("LEAKPROBE_DIR", "/var/tmp"),
            ("LEAKPROBE_DUMP_AT_EXIT", "1"),
            ("LEAKPROBE_NO_INHERIT", "yes"),
        ]);
        assert!(c.dump_at_exit && c.no_inherit);
        assert_eq!(c.sample_period, 1);
        assert_eq!(c.signal, libc::SIGRTMIN() + 4);
        assert_eq!(c.max_frames, 16);
        assert_eq!(c.dir, "/var/tmp");
        let c = with(&[
            ("LEAKPROBE_DUMP_SECONDS", "60"),
            ("LEAKPROBE_INTERVAL", "1073741824"),
            ("LEAKPROBE_MAX_DUMPS", "5"),
            ("LEAKPROBE_KEEP", "3"),
        ]);
        assert_eq!(
            (c.dump_every_secs, c.dump_every_bytes, c.max_dumps),
            (60, 1 << 30, 5)
        );
        assert_eq!(c.keep_automatic, 3);
        assert_eq!(with(&[("LEAKPROBE_SIGNAL", "PROF")]).signal, libc::SIGPROF);
        assert_eq!(with(&[("LEAKPROBE_SIGNAL", "10")]).signal, 10);
        let c = with(&[("LEAKPROBE_UNWIND", "libgcc")]);
        assert_eq!(c.unwinder, Unwinder::Libgcc);
    }

    #[test]
    fn bad_values_fall_back() {
        let c = with(&[
            ("LEAKPROBE_SAMPLE", "0"),
            ("LEAKPROBE_SIGNAL", "SIGKILL"),
            ("LEAKPROBE_MAX_FRAMES", "1000"),
        ]);
        assert_eq!(c, Settings::default());
        assert_eq!(
            with(&[("LEAKPROBE_SAMPLE", "lots")]).sample_period,
            DEFAULT_SAMPLE
        );
        assert_eq!(with(&[("LEAKPROBE_SIGNAL", "SEGV")]).signal, libc::SIGUSR2);
        assert!(!with(&[("LEAKPROBE_DUMP_AT_EXIT", "please")]).dump_at_exit);
        assert_eq!(with(&[("LEAKPROBE_MAX_DUMPS", "0")]).max_dumps, 100);
        for bad in ["-1", "three", "3.5", "99999999999999999999999"] {
            assert_eq!(with(&[("LEAKPROBE_KEEP", bad)]).keep_automatic, 0, "{bad}");
        }
        assert_eq!(
            with(&[("LEAKPROBE_COPY_TIMEOUT", "2")]).copy_timeout_secs,
            2
        );
        assert_eq!(
            with(&[("LEAKPROBE_COPY_TIMEOUT", "0")]).copy_timeout_secs,
            30
        );
        assert_eq!(
            with(&[("LEAKPROBE_DUMP_SECONDS", "soon")]).dump_every_secs,
            0
        );
        let c = with(&[("LEAKPROBE_UNWIND", "frame-pointers")]);
        assert_eq!(c.unwinder, Unwinder::Fast);
    }

    #[test]
    fn huge_dump_seconds_fall_back_without_overflow() {
        for v in [
            "18446744073709551615",
            "18446744073709551614",
            "9223372036854775808",
            "18446744073709551616",
            "315360001",
        ] {
            let c = with(&[("LEAKPROBE_DUMP_SECONDS", v)]);
            assert_eq!(c.dump_every_secs, 0, "{v}");
        }
        let c = with(&[("LEAKPROBE_DUMP_SECONDS", "315360000")]);
        assert_eq!(c.dump_every_secs, MAX_DUMP_EVERY_SECS);
        let c = with(&[("LEAKPROBE_INTERVAL", "18446744073709551615")]);
        assert_eq!(c.dump_every_bytes, u64::MAX);
        let c = with(&[("LEAKPROBE_SAMPLE", "18446744073709551616")]);
        assert_eq!(c.sample_period, DEFAULT_SAMPLE);
    }

    #[test]
    fn the_old_name_of_dump_seconds_is_read_and_gives_way_to_the_new() {
        let old = with(&[("LEAKPROBE_PERIOD", "60")]);
        assert_eq!(old.dump_every_secs, 60);
        let both = with(&[("LEAKPROBE_PERIOD", "60"), ("LEAKPROBE_DUMP_SECONDS", "5")]);
        assert_eq!(both.dump_every_secs, 5);
        let bad_new = with(&[
            ("LEAKPROBE_PERIOD", "60"),
            ("LEAKPROBE_DUMP_SECONDS", "soon"),
        ]);
        assert_eq!(bad_new.dump_every_secs, 0);
    }

    #[test]
    fn termination_and_internal_signals_are_refused_by_number_as_by_name() {
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGALRM,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGTSTP,
            libc::SIGCONT,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGSYS,
            libc::SIGABRT,
            libc::SIGCHLD,
            libc::SIGPIPE,
            libc::SIGXCPU,
            32,
            33,
            0,
            -1,
            65,
        ] {
            assert!(parse_signal(&sig.to_string()).is_err(), "{sig} by number");
        }
        for name in ["SIGTERM", "INT", "SIGQUIT", "ALRM", "SIGKILL", "SIGRTMIN-1"] {
            assert!(parse_signal(name).is_err(), "{name}");
        }
        assert!(parse_signal("SIGRTMAX+1").is_err());
        assert!(parse_signal("SIGRTMIN+2147483647").is_err());
        assert_eq!(
            parse_signal("15").unwrap_err(),
            parse_signal("12000").unwrap_err()
        );
        for &(sig, name) in &DUMP_SIGNALS {
            assert_eq!(parse_signal(&sig.to_string()), Ok(sig));
            assert_eq!(parse_signal(name), Ok(sig));
            assert_eq!(parse_signal(&name[3..]), Ok(sig));
        }
        let rt = libc::SIGRTMIN();
        assert_eq!(parse_signal(&rt.to_string()), Ok(rt));
        assert_eq!(parse_signal("SIGRTMAX"), Ok(libc::SIGRTMAX()));
    }

    #[test]
    fn a_relative_directory_is_made_absolute_at_load() {
        let cwd = std::env::current_dir().unwrap();
        let c = with(&[("LEAKPROBE_DIR", "dumps/here")]);
        assert_eq!(c.dir, cwd.join("dumps/here").into_os_string());
        assert_eq!(with(&[("LEAKPROBE_DIR", "/var/tmp")]).dir, "/var/tmp");
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(signal_name(libc::SIGUSR2), "SIGUSR2");
        assert_eq!(signal_name(libc::SIGRTMIN() + 4), "SIGRTMIN+4");
    }
}
