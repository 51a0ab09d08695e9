//! Whether the program registers unwind tables at run time (JIT compilers
//! call `__register_frame`). With libgcc before GCC 13, the unwinder then
//! takes a mutex that `__register_frame` and the C++ exception unwinder hold
//! while they allocate: unwinding a sampled allocation with libgcc could wait
//! for a lock its own thread holds. So once any table is registered, stacks
//! the caching unwinder cannot finish are cut short instead. The interposed
//! functions (`hook::unwind_tables`) only note the fact and forward to
//! libgcc.

use core::sync::atomic::{AtomicBool, Ordering};

static ANY: AtomicBool = AtomicBool::new(false);

pub fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

/// A table was registered (`hook::unwind_tables`).
pub fn note() {
    ANY.store(true, Ordering::Relaxed);
}
