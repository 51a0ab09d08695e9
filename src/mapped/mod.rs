//! Memory outside malloc: the table of the sampled ranges the program
//! maps itself (`mmap`, System V shared memory, the program break) and of
//! the sampled thread stacks, which tells what an `munmap`, `mremap`,
//! `shmdt`, `brk` or thread exit gives back (`table`). The functions that
//! sample and track them are `hook`'s (`mapping`, `segments`, `threads`).

pub mod table;

/// Once at load, before sampling starts and before the collector registers
/// its fork handlers (see `table::init`).
pub fn init() {
    table::init();
}
