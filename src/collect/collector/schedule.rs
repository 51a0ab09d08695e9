//! When the next automatic dump is due: `LEAKPROBE_DUMP_SECONDS` (time)
//! and `LEAKPROBE_INTERVAL` (bytes allocated), at most one a second.

use crate::settings::Settings;
use crate::sys::clock;
use std::time::Duration;

/// When the next automatic dump is due (`LEAKPROBE_DUMP_SECONDS`,
/// `LEAKPROBE_INTERVAL`).
pub struct Automatic {
    every: Option<Duration>,
    interval: Option<f64>,
    next_time: Duration,
    next_bytes: f64,
    last: Option<Duration>,
}

/// Automatic dumps are at most this frequent, whatever the settings.
const MIN_AUTOMATIC_GAP: Duration = Duration::from_secs(1);

impl Automatic {
    pub fn new(cfg: &Settings) -> Automatic {
        let every = (cfg.dump_every_secs > 0).then(|| Duration::from_secs(cfg.dump_every_secs));
        let interval = (cfg.dump_every_bytes > 0).then_some(cfg.dump_every_bytes as f64);
        Automatic {
            every,
            interval,
            next_time: clock::monotonic().saturating_add(every.unwrap_or_default()),
            next_bytes: interval.unwrap_or(0.0),
            last: None,
        }
    }

    /// Whether a dump is due now, given the estimated bytes allocated so far;
    /// if so, the next one is scheduled.
    pub fn due(&mut self, allocated: f64) -> bool {
        let now = clock::monotonic();
        if self
            .last
            .is_some_and(|t| now < t.saturating_add(MIN_AUTOMATIC_GAP))
        {
            return false;
        }
        let by_time = self.every.is_some_and(|_| now >= self.next_time);
        let by_bytes = self.interval.is_some_and(|_| allocated >= self.next_bytes);
        if let (true, Some(p)) = (by_time, self.every) {
            // Keep the cadence; after a long stall, start again from now.
            self.next_time = self.next_time.saturating_add(p).max(now);
        }
        if let (true, Some(i)) = (by_bytes, self.interval) {
            self.next_bytes = ((allocated / i).floor() + 1.0) * i;
        }
        if by_time || by_bytes {
            self.last = Some(now);
        }
        by_time || by_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gaps_never_overflow_the_schedule() {
        for secs in [u64::MAX, u64::MAX - 1, 1 << 63] {
            let cfg = Settings {
                dump_every_secs: secs,
                dump_every_bytes: u64::MAX,
                ..Settings::default()
            };
            let mut a = Automatic::new(&cfg);
            assert!(!a.due(0.0));
            assert!(a.due(u64::MAX as f64));
            assert!(!a.due(f64::MAX));
        }
    }
}
