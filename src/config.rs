//! Settings from the environment. A bad value never stops the program: one
//! line on stderr names the variable and the value used instead.

use crate::stack::FRAMES_LIMIT;
use std::ffi::OsString;

pub const DEFAULT_DIR: &str = "/tmp";
pub const DEFAULT_SAMPLE: usize = 524_288;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub dir: OsString,
    pub sample_period: usize,
    pub signal: libc::c_int,
    pub max_frames: usize,
    pub dump_at_exit: bool,
    pub no_inherit: bool,
    /// Seconds between automatic dumps (0: off).
    pub period_secs: u64,
    /// Estimated bytes allocated between automatic dumps (0: off).
    pub interval_bytes: u64,
    /// Dumps kept per process; older ones are removed.
    pub max_dumps: usize,
    /// Keep the live profile as of the highest live heap (`LEAKPROBE_PEAK`).
    pub peak: bool,
    pub unwinder: Unwinder,
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

impl Default for Config {
    fn default() -> Self {
        Config {
            dir: DEFAULT_DIR.into(),
            sample_period: DEFAULT_SAMPLE,
            signal: libc::SIGUSR2,
            max_frames: FRAMES_LIMIT,
            dump_at_exit: false,
            no_inherit: false,
            period_secs: 0,
            interval_bytes: 0,
            max_dumps: 100,
            peak: false,
            unwinder: Unwinder::Fast,
        }
    }
}

impl Config {
    pub fn from_env() -> Config {
        // SAFETY: getauxval has no preconditions.
        if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
            // A set-uid program: the environment belongs to another user.
            if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("LEAKPROBE_")) {
                crate::log::log!("secure execution: LEAKPROBE_* settings ignored, defaults used");
            }
            return Config::default();
        }
        Config::from_lookup(|name| std::env::var_os(name))
    }

    fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Config {
        let d = Config::default();
        Config {
            dir: match get("LEAKPROBE_DIR") {
                Some(v) if !v.is_empty() => v,
                _ => d.dir,
            },
            sample_period: setting(&get, "LEAKPROBE_SAMPLE", parse_sample, d.sample_period),
            signal: setting(&get, "LEAKPROBE_SIGNAL", parse_signal, d.signal),
            max_frames: setting(&get, "LEAKPROBE_MAX_FRAMES", parse_max_frames, d.max_frames),
            dump_at_exit: setting(&get, "LEAKPROBE_DUMP_AT_EXIT", parse_switch, d.dump_at_exit),
            no_inherit: setting(&get, "LEAKPROBE_NO_INHERIT", parse_switch, d.no_inherit),
            period_secs: setting(&get, "LEAKPROBE_PERIOD", parse_count, d.period_secs),
            interval_bytes: setting(&get, "LEAKPROBE_INTERVAL", parse_count, d.interval_bytes),
            max_dumps: setting(&get, "LEAKPROBE_MAX_DUMPS", parse_max_dumps, d.max_dumps),
            peak: setting(&get, "LEAKPROBE_PEAK", parse_switch, d.peak),
            unwinder: setting(&get, "LEAKPROBE_UNWIND", parse_unwind, d.unwinder),
        }
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
            crate::log::log!("{name}={text:?} {why}; using {default}");
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

fn parse_max_dumps(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("is not a whole number >= 1".into()),
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

/// A signal by name (`SIGUSR2`, `USR2`, `SIGRTMIN+4`) or number. Signals the
/// kernel raises for faults, and ones that cannot be caught, are refused.
fn parse_signal(s: &str) -> Result<libc::c_int, String> {
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let sig = if let Ok(n) = name.parse::<libc::c_int>() {
        n
    } else if let Some(off) = name.strip_prefix("RTMIN") {
        libc::SIGRTMIN() + offset(off)?
    } else if let Some(off) = name.strip_prefix("RTMAX") {
        libc::SIGRTMAX() + offset(off)?
    } else {
        match name {
            "USR1" => libc::SIGUSR1,
            "USR2" => libc::SIGUSR2,
            "PROF" => libc::SIGPROF,
            "VTALRM" => libc::SIGVTALRM,
            "HUP" => libc::SIGHUP,
            "URG" => libc::SIGURG,
            "WINCH" => libc::SIGWINCH,
            "PWR" => libc::SIGPWR,
            _ => return Err("is not a signal name or number".into()),
        }
    };
    let refused = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGABRT,
        libc::SIGTRAP,
        libc::SIGSYS,
        libc::SIGCHLD,
        libc::SIGPIPE,
    ];
    if sig < 1 || sig > libc::SIGRTMAX() || refused.contains(&sig) {
        return Err("is not a signal that can request dumps".into());
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
    let named = [
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGPWR, "SIGPWR"),
    ];
    match named.iter().find(|(n, _)| *n == sig) {
        Some((_, name)) => name.to_string(),
        None if sig >= libc::SIGRTMIN() => format!("SIGRTMIN+{}", sig - libc::SIGRTMIN()),
        None => format!("signal {sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into()))
    }

    #[test]
    fn defaults() {
        assert_eq!(with(&[]), Config::default());
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
            ("LEAKPROBE_PERIOD", "60"),
            ("LEAKPROBE_INTERVAL", "1073741824"),
            ("LEAKPROBE_MAX_DUMPS", "5"),
        ]);
        assert_eq!(
            (c.period_secs, c.interval_bytes, c.max_dumps),
            (60, 1 << 30, 5)
        );
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
        assert_eq!(c, Config::default());
        assert_eq!(
            with(&[("LEAKPROBE_SAMPLE", "lots")]).sample_period,
            DEFAULT_SAMPLE
        );
        assert_eq!(with(&[("LEAKPROBE_SIGNAL", "SEGV")]).signal, libc::SIGUSR2);
        assert!(!with(&[("LEAKPROBE_DUMP_AT_EXIT", "please")]).dump_at_exit);
        assert_eq!(with(&[("LEAKPROBE_MAX_DUMPS", "0")]).max_dumps, 100);
        assert_eq!(with(&[("LEAKPROBE_PERIOD", "soon")]).period_secs, 0);
        let c = with(&[("LEAKPROBE_UNWIND", "frame-pointers")]);
        assert_eq!(c.unwinder, Unwinder::Fast);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(signal_name(libc::SIGUSR2), "SIGUSR2");
        assert_eq!(signal_name(libc::SIGRTMIN() + 4), "SIGRTMIN+4");
    }
}
