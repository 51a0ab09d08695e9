//! Memory outside malloc: the program's own `mmap`/`mremap`/`munmap`
//! (`table`) and thread stacks (`thread_stacks`), sampled by bytes like heap
//! memory and written as their own rows.

pub mod table;
pub mod thread_stacks;
