//! Whether the program registers unwind tables at run time (JIT compilers
//! call `__register_frame`). With libgcc before GCC 13, the unwinder then
//! takes a mutex that `__register_frame` and the C++ exception unwinder hold
//! while they allocate: unwinding a sampled allocation with libgcc could wait
//! for a lock its own thread holds. So once any table is registered, stacks
//! the caching unwinder cannot finish are cut short instead. The interposed
//! functions only note the fact and forward to libgcc.

use core::sync::atomic::{AtomicBool, Ordering};

static ANY: AtomicBool = AtomicBool::new(false);

pub fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

/// Defines `name(args)` that sets the flag and calls the next definition.
macro_rules! noting {
    ($name:ident ( $($arg:ident : $ty:ty),* )) => {
        /// # Safety
        /// As libgcc's function of the same name.
        #[cfg(not(test))]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) {
            ANY.store(true, Ordering::Relaxed);
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
