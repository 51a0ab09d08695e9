//! Threads through glibc: the attributes the library's own thread is made
//! with, what a program's attributes ask for, a key whose destructor sees a
//! thread exit, and the calling thread's handle.

use core::ffi::{c_int, c_void};

/// Attributes of a detached thread with the default stack size (glibc
/// carves the program's static TLS out of the stack, so a small fixed size
/// fails, EINVAL, in programs with large thread-locals; untouched pages cost
/// nothing). Destroyed when dropped.
pub struct DetachedAttr(libc::pthread_attr_t);

impl DetachedAttr {
    pub fn new() -> DetachedAttr {
        // SAFETY: pthread_attr_t is plain data, initialised by
        // pthread_attr_init (which cannot fail on glibc) before any other use.
        let mut attr: libc::pthread_attr_t = unsafe { core::mem::zeroed() };
        // SAFETY: storage of ours; the state is a valid one.
        unsafe {
            libc::pthread_attr_init(&mut attr);
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        }
        DetachedAttr(attr)
    }

    /// For `pthread_create`, while `self` lives.
    pub fn as_ptr(&self) -> *const libc::pthread_attr_t {
        &self.0
    }
}

impl Drop for DetachedAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::pthread_attr_destroy(&mut self.0) };
    }
}

extern "C" {
    // Not in the libc crate.
    fn pthread_attr_getdetachstate(attr: *const libc::pthread_attr_t, state: *mut c_int) -> c_int;
}

/// Bytes glibc maps for the stack of a thread made with `attr` (null: the
/// default attributes, whose size is `RLIMIT_STACK`'s); 0 when `attr`
/// names a stack the program supplies.
///
/// # Safety
/// `attr` is null or an initialised attribute.
pub unsafe fn mapped_stack_size(attr: *const libc::pthread_attr_t) -> usize {
    let mut size = 0usize;
    if attr.is_null() {
        // An initialised attribute reports the default stack size.
        // SAFETY: storage for pthread_attr_init, which initialises it; it is
        // read and destroyed only once that succeeded.
        unsafe {
            let mut a: libc::pthread_attr_t = core::mem::zeroed();
            if libc::pthread_attr_init(&mut a) == 0 {
                libc::pthread_attr_getstacksize(&a, &mut size);
                libc::pthread_attr_destroy(&mut a);
            }
        }
        return size;
    }
    let (mut addr, mut len) = (core::ptr::null_mut(), 0usize);
    // glibc reports (stack top - size): 0 unless the program set a stack.
    // SAFETY: an initialised attribute (the contract), only read.
    if unsafe { libc::pthread_attr_getstack(attr, &mut addr, &mut len) } == 0
        && (addr as usize).wrapping_add(len) != 0
    {
        return 0;
    }
    // SAFETY: as above.
    unsafe { libc::pthread_attr_getstacksize(attr, &mut size) };
    size
}

/// Whether a thread made with `attr` (null: the defaults) starts detached.
///
/// # Safety
/// `attr` is null or an initialised attribute.
pub unsafe fn starts_detached(attr: *const libc::pthread_attr_t) -> bool {
    let mut state = libc::PTHREAD_CREATE_JOINABLE;
    if !attr.is_null() {
        // SAFETY: an initialised attribute (the contract), only read.
        unsafe { pthread_attr_getdetachstate(attr, &mut state) };
    }
    state == libc::PTHREAD_CREATE_DETACHED
}

/// A new thread-specific key: `destructor` runs when a thread that set a
/// non-null value exits (`pthread_key_create`).
pub fn create_key(destructor: unsafe extern "C" fn(*mut c_void)) -> Option<libc::pthread_key_t> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: out storage of ours and a plain function.
    (unsafe { libc::pthread_key_create(&mut key, Some(destructor)) } == 0).then_some(key)
}

/// Sets the calling thread's value of `key` (glibc refuses a key it did
/// not create, EINVAL, which is ignored).
pub fn set_specific(key: libc::pthread_key_t, value: *const c_void) {
    // SAFETY: glibc checks the key; the value is only stored.
    unsafe { libc::pthread_setspecific(key, value) };
}

/// The calling thread's value of `key` (`pthread_getspecific`: no lock,
/// no allocation; null for a key deleted since, or never set).
pub fn get_specific(key: libc::pthread_key_t) -> *mut c_void {
    // SAFETY: glibc checks the key's range and sequence number.
    unsafe { libc::pthread_getspecific(key) }
}

/// The calling thread's handle (`pthread_self`).
pub fn current() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

/// Names the calling thread (`/proc/PID/task/TID/comm`; at most 15 bytes).
pub fn set_name(name: &core::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel takes
    // its first 15 bytes).
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}
