//! libgcc's `__register_frame` family: a JIT's unwind tables registered at
//! run time, noted (`unwind::registered_frames`) and forwarded.

use crate::unwind::registered_frames::note;

type Ptr = *mut core::ffi::c_void;

forwarding!(__register_frame(begin: Ptr) -> (), before = note, then = |_: &()| {});
forwarding!(__register_frame_table(begin: Ptr) -> (), before = note, then = |_: &()| {});
forwarding!(__register_frame_info(begin: Ptr, object: Ptr) -> (), before = note, then = |_: &()| {});
forwarding!(__register_frame_info_table(begin: Ptr, object: Ptr) -> (), before = note, then = |_: &()| {});
forwarding!(__register_frame_info_bases(begin: Ptr, object: Ptr, tbase: Ptr, dbase: Ptr) -> (), before = note, then = |_: &()| {});
forwarding!(__register_frame_info_table_bases(begin: Ptr, object: Ptr, tbase: Ptr, dbase: Ptr) -> (), before = note, then = |_: &()| {});
