//! Byte-based Poisson sampling, as jemalloc's `lg_prof_sample`: sample points
//! fall on the stream of allocated bytes with exponential gaps of mean
//! `period`, so an allocation of `s` bytes is sampled with probability
//! `1 - exp(-s/period)`, which is what jeprof and pprof divide by.

use crate::sample::thread_state::{self, ThreadState};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Mean gap in bytes; 0 until the library is initialised (nothing sampled).
static PERIOD: AtomicUsize = AtomicUsize::new(0);
/// `leakprobe_set_active`: while false, no new samples are taken.
static ACTIVE: AtomicBool = AtomicBool::new(true);

/// Turns the taking of new samples on or off; returns the previous setting.
pub fn set_active(active: bool) -> bool {
    ACTIVE.swap(active, Ordering::Relaxed)
}

pub fn enable(period: usize) {
    PERIOD.store(period, Ordering::Release);
}

pub fn period() -> usize {
    PERIOD.load(Ordering::Acquire)
}

/// Stops sampling on the calling thread for good (the collector thread).
pub fn exclude_this_thread() {
    thread_state::with(|s| s.busy.set(true));
}

/// Slow path of the countdown, for an allocation of `size` bytes that reached
/// the sample point. Returns whether to record it, and draws the next gap.
#[cold]
pub fn decide(size: usize) -> bool {
    let period = period();
    thread_state::with(|s| {
        if s.busy.get() || period == 0 {
            return false;
        }
        if !ACTIVE.load(Ordering::Relaxed) {
            // Inactive: keep counting down, but take nothing.
            thread_state::set_until_sample(draw_gap(s, period.max(2)));
            return false;
        }
        if s.rng.get() == 0 {
            // A new thread: its first gap starts now, so this allocation is
            // sampled only if that gap falls inside it.
            seed(s);
            let gap = draw_gap(s, period);
            if size < gap {
                thread_state::set_until_sample(gap - size);
                return false;
            }
        }
        thread_state::set_until_sample(draw_gap(s, period));
        // A zero-byte request holds no bytes: never a sample (and a row with
        // bytes 0 would make jeprof divide by zero).
        size > 0
    })
}

/// Sets `busy` for the duration of `f`, so nothing `f` allocates is sampled.
/// Nests: the previous value comes back (`record` nests it through
/// `ensure_running`, and the collector thread is busy for good).
pub fn while_busy<R>(f: impl FnOnce() -> R) -> R {
    let _busy = Busy::enter();
    f()
}

/// `while_busy` as a guard, for code that must stay in its caller's frame
/// (a sample's stack is captured from there).
pub struct Busy(bool);

impl Busy {
    #[inline(always)]
    pub fn enter() -> Busy {
        Busy(thread_state::with(|s| s.busy.replace(true)))
    }
}

impl Drop for Busy {
    #[inline(always)]
    fn drop(&mut self) {
        thread_state::with(|s| s.busy.set(self.0));
    }
}

/// Estimated true (count, bytes) behind sampled ones, as jeprof and pprof
/// compute it for heap_v2: each sample stands for 1/(1 - exp(-avg/period)).
pub fn unsample(count: u64, bytes: u64, period: usize) -> (f64, f64) {
    if count == 0 || bytes == 0 || period <= 1 {
        return (count as f64, bytes as f64);
    }
    let avg = bytes as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-avg / period as f64).exp());
    (count as f64 * scale, bytes as f64 * scale)
}

/// `unsample(1, size, period).1` (the bytes one sample of `size` bytes
/// stands for), as the sampled paths keep it per sample: without `exp` (50
/// instructions) for the usual sizes, far below the period.
pub fn estimated_bytes(size: usize, period: usize) -> f64 {
    if (size | period) >> 53 != 0 {
        return unsample(1, size as u64, period).1;
    }
    // Below 2^53 both convert exactly, and through i64 in one instruction
    // (from u64 it takes six).
    let (size_f, period_f) = (size as i64 as f64, period as i64 as f64);
    let x = size_f / period_f;
    if size == 0 || period <= 1 || x >= 1.0 / 64.0 {
        return unsample(1, size as u64, period).1;
    }
    // size / (1 - e^-x) = period * x / (1 - e^-x)
    //                   = period * (1 + x/2 + x^2/12 - x^4/720 + x^6/30240 ...):
    // the terms left out are below 2^-48 of it here, closer than the
    // subtraction in `unsample` gets (its 1 - e^-x cancels).
    let x2 = x * x;
    period_f * (1.0 + x / 2.0 + x2 / 12.0 - x2 * x2 / 720.0)
}

fn seed(s: &ThreadState) {
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    let nanos = crate::sys::clock::fine_nanos();
    let n = THREADS.fetch_add(1, Ordering::Relaxed) as u64;
    let mixed = mix(s as *const ThreadState as u64 ^ u64::from(nanos) << 20 ^ n);
    s.rng.set(mixed | 1);
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn draw_gap(s: &ThreadState, period: usize) -> usize {
    let mut x = s.rng.get();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s.rng.set(x);
    gap_from_uniform(x, period)
}

/// Exponential gap of mean `period` from 64 random bits; `period` 1 means
/// "every allocation", exactly.
fn gap_from_uniform(bits: u64, period: usize) -> usize {
    if period <= 1 {
        return 0;
    }
    // u in (0, 1]: never ln(0).
    let u = ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let gap = -u.ln() * period as f64;
    if gap >= usize::MAX as f64 {
        usize::MAX
    } else {
        gap as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsample_inverts_poisson_probability() {
        let (n, b) = unsample(1, 524288, 524288);
        let p = 1.0 - (-1.0f64).exp();
        assert!((n - 1.0 / p).abs() < 1e-9 && (b - 524288.0 / p).abs() < 1e-6);
        assert_eq!(unsample(4, 400, 1), (4.0, 400.0));
        assert_eq!(unsample(0, 0, 4096), (0.0, 0.0));
    }

    #[test]
    fn busy_nests_and_restores_the_previous_value() {
        let busy = || thread_state::with(|s| s.busy.get());
        std::thread::spawn(move || {
            assert!(!busy());
            while_busy(|| {
                while_busy(|| assert!(busy()));
                assert!(busy(), "the inner call kept the outer one's busy");
            });
            assert!(!busy());
            exclude_this_thread();
            while_busy(|| {});
            assert!(busy(), "an excluded thread stays excluded");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn estimated_bytes_are_unsampled_bytes() {
        for period in [2, 4096, 524_288, 1 << 30] {
            for size in [1, 7, 64, 1000, 8191, 8192, 65_536, 1 << 20, 1 << 31] {
                let x = size as f64 / period as f64;
                // size / (1 - e^-x), without `unsample`'s cancellation.
                let exact = size as f64 / -(-x).exp_m1();
                let fast = estimated_bytes(size, period);
                assert!(
                    (fast - exact).abs() <= exact * 1e-9,
                    "{size} at {period}: {fast} vs {exact}"
                );
            }
        }
        assert_eq!(estimated_bytes(0, 4096), 0.0);
        assert_eq!(estimated_bytes(100, 1), 100.0);
    }

    #[test]
    fn period_one_samples_everything() {
        assert_eq!(gap_from_uniform(0, 1), 0);
        assert_eq!(gap_from_uniform(u64::MAX, 1), 0);
    }

    #[test]
    fn gaps_have_the_requested_mean() {
        let s = ThreadState::new(0x1234_5678_9abc_def1);
        let n = 200_000;
        let sum: f64 = (0..n).map(|_| draw_gap(&s, 524_288) as f64).sum();
        let mean = sum / n as f64;
        assert!((mean / 524_288.0 - 1.0).abs() < 0.01, "mean gap {mean}");
    }

    #[test]
    fn sampling_probability_matches_poisson() {
        // P(gap <= s) must be 1 - exp(-s/period): that is what jeprof inverts.
        let s = ThreadState::new(0x9e37_79b9_7f4a_7c15);
        let (period, size, n) = (4096usize, 1024usize, 400_000);
        let hits = (0..n).filter(|_| draw_gap(&s, period) <= size).count();
        let expected = 1.0 - (-(size as f64) / period as f64).exp();
        let got = hits as f64 / n as f64;
        assert!(
            (got - expected).abs() < 0.005,
            "got {got}, expected {expected}"
        );
    }
}
