//! Memory outside malloc: the program's own `mmap`/`mremap`/`munmap`
//! (`table`), thread stacks (`thread_stacks`), System V shared memory and
//! the program break (`segments`), sampled by bytes like heap memory and
//! written as their own rows.

pub mod segments;
pub mod table;
pub mod thread_stacks;

/// Once at load, before sampling starts and before the collector registers
/// its fork handlers (see `table::init`).
pub fn init() {
    table::init();
    thread_stacks::init();
    segments::init();
}
