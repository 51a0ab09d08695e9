//! When the library was attached to a running program: a dump of such a
//! process says so, since the allocations made before it are not seen.

use core::sync::atomic::{AtomicU64, Ordering};

/// Wall-clock milliseconds of the last attach (0: preloaded).
static AT_MS: AtomicU64 = AtomicU64::new(0);

/// Notes that the library was attached now.
pub fn set_now() {
    let now = crate::sys::clock::wall();
    let ms = now.as_secs() * 1000 + u64::from(now.subsec_millis());
    AT_MS.store(ms.max(1), Ordering::Relaxed);
}

/// The dump's `attached` fact: the time, and what it means.
pub fn fact() -> Option<(&'static str, String)> {
    let ms = AT_MS.load(Ordering::Relaxed);
    (ms != 0).then(|| {
        (
            "attached",
            format!(
                "{}.{:03}: allocations before it are not seen",
                ms / 1000,
                ms % 1000
            ),
        )
    })
}
