//! The single-threaded mode's side of the collector (`collect::single`):
//! samples interned on the allocating thread, and the snapshot a copy of
//! the process writes a dump from.

use super::STATE;
use crate::collect::request::REQUESTS;
use crate::collect::ring::Sample;
use crate::sample::live::{self, Entry};
use crate::sample::sampling;
use crate::sys::lock::SpinLock;
use core::sync::atomic::{AtomicU32, Ordering};

/// Dumps the single-threaded mode's helper can keep count of without
/// allocating (see `Collector::keep`).
pub(super) const KEPT_ROOM: usize = 1 << 16;

/// In single-threaded mode (`single`), on the allocating thread: interns the
/// sample and enters it in the live table at once, with its stack, under
/// the state lock (so a snapshot sees it whole or not at all). False if
/// there is no state (the caller takes the ring).
pub fn record_inline(sample: &Sample, mut entry: Entry) -> bool {
    STATE.with(|s| {
        let Some(c) = s.as_mut() else {
            return false;
        };
        if let Some(id) = c.intern(sample) {
            entry.stack = id;
        }
        live::insert(entry);
        true
    })
}

/// `record_inline` for a mapped sample (`hook::sampled::record_mapped`):
/// interned, counted and its tracked range resolved at once, under the
/// state lock, with the breaks the ring holds (`record_break`): this thread
/// may allocate here. False if there is no state (the caller takes the ring).
pub fn record_mapped_inline(sample: &Sample) -> bool {
    STATE.with(|s| {
        let Some(c) = s.as_mut() else {
            return false;
        };
        while c.absorb(usize::MAX) {}
        c.take(sample);
        true
    })
}

/// The dump a snapshot child writes (`single`): it answers the requests
/// since the last; the tagged ones from `tokens_seen` on (to `tokens_until`
/// when the job began). (Automatic dumps start the collector thread at
/// load: `mode::wanted`.)
#[derive(Clone, Copy)]
pub struct Job {
    tokens_seen: u32,
    tokens_until: u32,
}

/// Why a snapshot wrote nothing.
pub enum Failure {
    /// No page to share with the copy (`mmap`'s error).
    Page(i32),
    /// The copy could not be made (`clone`'s error).
    Copy(i32),
    /// The copy ended without a report: its wait status, or None if
    /// another waiter (the program's `__WALL` wait) took it.
    Died(Option<i32>),
    /// The copy did not finish within `seconds` and was killed.
    Hung { seconds: u64 },
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match *self {
            Failure::Page(e) => write!(
                f,
                "no page to share with the process copy (mmap: error {e})"
            ),
            Failure::Copy(e) => write!(
                f,
                "the process copy that writes it cannot be made (clone: {})",
                crate::collect::mode::CloneError(e)
            ),
            Failure::Died(Some(status)) if libc::WIFSIGNALED(status) => write!(
                f,
                "the process copy writing it was killed by signal {}",
                libc::WTERMSIG(status)
            ),
            Failure::Died(Some(status)) => write!(
                f,
                "the process copy writing it exited early (status {})",
                libc::WEXITSTATUS(status)
            ),
            Failure::Died(None) => f.write_str(
                "the process copy writing it was reaped by the program (a wait for every \
                 child, __WALL) before it reported",
            ),
            Failure::Hung { seconds } => write!(
                f,
                "the process copy writing it did not finish within {seconds} s and was killed"
            ),
        }
    }
}

/// What a snapshot child did, for the process it was copied from.
#[derive(Clone, Copy)]
pub struct Outcome {
    written: bool,
    next_number: u64,
    /// The number of the dump it wrote to the dump directory, if one.
    kept: Option<u64>,
    failed_for_memory: u64,
    log: crate::sys::log::State,
}

/// Tries `lock` for a while (the holder never waits on anything); with
/// raw yields: this runs on the helper.
fn hold<T>(lock: &SpinLock<T>) -> bool {
    lock.try_acquire_for(10_000, crate::sys::raw::yield_now)
}

/// On the helper: the dump requested since the last, if any, with the
/// library's locks held (state, target, live table, mappings), so the
/// program's threads are outside its critical sections.
/// `snapshot_release` releases them.
pub fn snapshot_begin() -> Option<Job> {
    // Without the locks first: usually nothing is asked.
    if REQUESTS.asked() == SERVED.load(Ordering::Relaxed) {
        return None;
    }
    if super::fork::FORK_PENDING.load(Ordering::Acquire) || !hold(&STATE) {
        return None;
    }
    if !REQUESTS.hold_target(crate::sys::raw::yield_now) {
        STATE.release();
        return None;
    }
    if !live::try_lock_all(crate::sys::raw::yield_now) {
        REQUESTS.release_target();
        STATE.release();
        return None;
    }
    if !crate::mapped::table::try_lock(crate::sys::raw::yield_now) {
        live::unlock_all();
        REQUESTS.release_target();
        STATE.release();
        return None;
    }
    // SAFETY: the state lock is held.
    let job = unsafe { STATE.held() }.as_mut().and_then(|c| {
        let requests = REQUESTS.asked();
        SERVED.store(requests, Ordering::Relaxed);
        if requests == c.requests_served {
            return None;
        }
        c.requests_served = requests;
        let tokens_seen = c.tokens_seen;
        c.tokens_seen = REQUESTS.tokens_received();
        Some(Job {
            tokens_seen,
            tokens_until: c.tokens_seen,
        })
    });
    if job.is_none() {
        snapshot_release();
    }
    job
}

pub fn snapshot_release() {
    crate::mapped::table::unlock();
    live::unlock_all();
    REQUESTS.release_target();
    STATE.release();
}

/// In the snapshot child: writes the dump.
pub fn snapshot_child(job: Job) -> Outcome {
    // Held by the helper when it forked: nobody else here.
    snapshot_release();
    sampling::exclude_this_thread();
    STATE
        .with(|s| {
            let c = s.as_mut()?;
            let first = c.next_number;
            c.tokens_seen = job.tokens_seen;
            c.answering = REQUESTS.take_tokens(&mut c.tokens_seen);
            // The breaks the ring holds (`record_break`): no push was half
            // done when the helper copied the process (it held the table).
            while c.absorb(usize::MAX) {}
            let written = c.dump();
            Some(Outcome {
                written,
                next_number: c.next_number,
                kept: (c.next_number != first && c.kept.back() == Some(&(c.next_number - 1)))
                    .then(|| c.next_number - 1),
                failed_for_memory: super::FAILED_FOR_MEMORY.load(Ordering::Relaxed),
                log: crate::sys::log::state(),
            })
        })
        .unwrap_or(Outcome {
            written: false,
            next_number: 0,
            kept: None,
            failed_for_memory: super::FAILED_FOR_MEMORY.load(Ordering::Relaxed),
            log: crate::sys::log::state(),
        })
}

/// On the helper, after the child: what it did becomes this process's; or
/// a dump not written, counted and said.
pub fn snapshot_end(job: Job, outcome: Result<Outcome, Failure>) {
    let o = match outcome {
        Ok(o) => o,
        Err(why) => {
            let failed = super::SNAPSHOTS_FAILED.fetch_add(1, Ordering::Relaxed) + 1;
            say_not_written(&job, &why, failed);
            REQUESTS.finished(false);
            return;
        }
    };
    while !hold(&STATE) {}
    // SAFETY: the state lock is held.
    if let Some(c) = unsafe { STATE.held() }.as_mut() {
        c.next_number = c.next_number.max(o.next_number);
        if let Some(n) = o.kept {
            c.keep(n, false);
            while c.beyond_cap().is_some() {}
        }
    }
    STATE.release();
    crate::sys::log::adopt(o.log);
    super::FAILED_FOR_MEMORY.fetch_max(o.failed_for_memory, Ordering::Relaxed);
    if o.written {
        // The copy wrote into the directory: this process's record says
        // it serves (atomics, a spin lock and raw calls: fine here).
        crate::profile::published::refuse(crate::profile::published::Refusal::Dir, None);
    }
    REQUESTS.finished(o.written);
}

/// The requests answered so far, as `snapshot_begin` last saw them.
static SERVED: AtomicU32 = AtomicU32::new(0);

/// On the helper: one line for a dump not written, naming the tagged
/// requests it was to answer (`scripts/leakprobe dump` looks for its token
/// in the log), why, and the remedy.
fn say_not_written(job: &Job, why: &Failure, failed: u64) {
    use core::fmt::Write as _;
    let mut line = crate::sys::log::Line::new();
    let _ = line.write_str("leakprobe: dump not written");
    let tagged = job.tokens_until.wrapping_sub(job.tokens_seen);
    if tagged > 0 {
        let _ = line.write_str(if tagged > 1 {
            " (requests"
        } else {
            " (request"
        });
        for token in REQUESTS.tokens_between(job.tokens_seen, job.tokens_until) {
            let _ = write!(line, " {token:08x}");
        }
        let _ = line.write_str(")");
    }
    let _ = write!(
        line,
        ": {why}; {failed} so far in this single-threaded program; LEAKPROBE_THREAD=always \
         writes dumps from a thread started at load instead"
    );
    line.emit_raw();
}
