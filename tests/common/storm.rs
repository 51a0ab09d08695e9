//! A signal storm: one thread sending a signal over and over.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends `sig` to `pid` every `every` until stopped or dropped; counts what
/// it sent.
pub struct Storm {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Storm {
    pub fn start(pid: i32, sig: i32, every: Duration) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: kill with a pid of ours.
                if unsafe { libc::kill(pid, sig) } == 0 {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                // Pacing, not synchronisation.
                std::thread::sleep(every);
            }
        });
        Storm {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Waits until `n` signals have been sent.
    pub fn wait_until_sent(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.sent.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} signals sent within {timeout:?}",
                self.sent.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops and returns how many signals were sent.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.sent.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.halt();
    }
}
