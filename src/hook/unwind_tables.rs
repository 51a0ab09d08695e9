//! libgcc's `__register_frame` family: a JIT's unwind tables registered at
//! run time, noted (`unwind::registered_frames`) and forwarded.

/// Defines `name(args)` that sets the flag and calls the next definition.
macro_rules! noting {
    ($name:ident ( $($arg:ident : $ty:ty),* )) => {
        /// # Safety
        /// As libgcc's function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) {
            crate::unwind::registered_frames::note();
            // SAFETY: the program's arguments, unchanged.
            unsafe { crate::next::slot::$name.get()($($arg),*) }
        }
    };
}

type Ptr = *mut core::ffi::c_void;

noting!(__register_frame(begin: Ptr));
noting!(__register_frame_table(begin: Ptr));
noting!(__register_frame_info(begin: Ptr, object: Ptr));
noting!(__register_frame_info_table(begin: Ptr, object: Ptr));
noting!(__register_frame_info_bases(begin: Ptr, object: Ptr, tbase: Ptr, dbase: Ptr));
noting!(__register_frame_info_table_bases(begin: Ptr, object: Ptr, tbase: Ptr, dbase: Ptr));
