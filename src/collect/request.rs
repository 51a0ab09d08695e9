//! Dump requests, as one object: what was asked (by the dump signal, the C
//! API, the exit dump) and what was answered. The collector answers every
//! request seen since its last dump with one dump; a caller that waits for
//! its own dump (`dump_to`) sleeps on the `done` bell until the count of
//! dumps attempted moves.

use crate::sys::doorbell::{self, Bell};
use crate::sys::lock::SpinLock;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::path::PathBuf;
use std::time::Duration;

pub struct Requests {
    /// Requests made so far.
    asked: AtomicU32,
    /// Rung, and counted, when a requested dump is written or has failed.
    done: Bell,
    /// Whether the last requested dump was written.
    last_ok: AtomicBool,
    /// Where the next dump goes when a caller of `leakprobe_dump` named a path.
    target: SpinLock<Option<PathBuf>>,
    /// Tokens of tagged requests (`scripts/leakprobe dump`), the newest
    /// `tokens.len()` kept, and how many were ever received.
    tokens: [AtomicU32; 16],
    tokens_received: AtomicU32,
}

pub static REQUESTS: Requests = Requests {
    asked: AtomicU32::new(0),
    done: Bell::new(),
    last_ok: AtomicBool::new(false),
    target: SpinLock::new(None),
    tokens: [const { AtomicU32::new(0) }; 16],
    tokens_received: AtomicU32::new(0),
};

/// Serialises callers of `dump_to`, so each waits for its own dump.
static CALLER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Requests {
    /// Asks the collector (or the helper of `single`) for a dump.
    /// Async-signal-safe.
    pub fn ask(&self) {
        self.count();
        doorbell::ring();
        crate::collect::mode::wake();
    }

    /// Counts a request without waking anyone: atomics only (the helper of
    /// `single` counts the requests it takes itself).
    pub fn count(&self) {
        self.asked.fetch_add(1, Ordering::Release);
    }

    /// Counts a tagged request: its token goes into the dump that answers
    /// it. Atomics only.
    pub fn count_tagged(&self, token: u32) {
        let i = self.tokens_received.fetch_add(1, Ordering::AcqRel);
        self.tokens[i as usize % self.tokens.len()].store(token, Ordering::Release);
        self.count();
    }

    /// Tagged requests received so far (see `take_tokens`).
    pub fn tokens_received(&self) -> u32 {
        self.tokens_received.load(Ordering::Acquire)
    }

    /// Requests made so far.
    pub fn asked(&self) -> u32 {
        self.asked.load(Ordering::Acquire)
    }

    /// Tokens received since `seen` (the newest 16); `seen` moves on.
    pub fn take_tokens(&self, seen: &mut u32) -> Vec<u32> {
        let now = self.tokens_received.load(Ordering::Acquire);
        let tokens = self.tokens_between(*seen, now).collect();
        *seen = now;
        tokens
    }

    /// The tokens received from the `from`th to before the `to`th (the
    /// newest 16 of them), oldest first. No allocation.
    pub fn tokens_between(&self, from: u32, to: u32) -> impl Iterator<Item = u32> + '_ {
        let len = self.tokens.len() as u32;
        let first = to.wrapping_sub(from).min(len);
        (0..first)
            .map(move |back| to.wrapping_sub(first - back))
            .map(move |i| self.tokens[(i % len) as usize].load(Ordering::Acquire))
    }

    /// The path a caller of `leakprobe_dump` named for the next dump.
    pub fn take_target(&self) -> Option<PathBuf> {
        self.target.with(|t| t.take())
    }

    /// Where the next dump goes (`take_target`).
    pub fn set_target(&self, target: Option<PathBuf>) {
        self.target.with(|t| *t = target);
    }

    /// The target's lock, for the helper of `single`, which holds it while
    /// it copies the process (tried a while, with `pause` between).
    pub fn hold_target(&self, pause: fn()) -> bool {
        self.target.try_acquire_for(10_000, pause)
    }

    pub fn release_target(&self) {
        self.target.release();
    }

    /// The collector attempted a requested dump. Atomics and a raw system
    /// call (the helper of `single` reports a snapshot's dump here).
    pub fn finished(&self, written: bool) {
        self.last_ok.store(written, Ordering::Release);
        self.done.ring();
    }

    /// Requests a dump (to `target`, or the dump directory) and waits until
    /// the collector has written it or failed (or `timeout` passes). True if
    /// written.
    pub fn dump_to(&self, target: Option<PathBuf>, timeout: Duration) -> bool {
        let _turn = CALLER.lock().unwrap_or_else(|e| e.into_inner());
        self.set_target(target);
        let before = self.done.current();
        self.ask();
        let deadline = crate::sys::clock::monotonic() + timeout;
        while self.done.current() == before {
            let left = deadline.saturating_sub(crate::sys::clock::monotonic());
            if left.is_zero() {
                self.take_target();
                return false;
            }
            self.done.wait(before, left);
        }
        // A snapshot copy (`single`) wrote the dump from its copy of the
        // target: this one is still set.
        self.take_target();
        self.last_ok.load(Ordering::Acquire)
    }
}
