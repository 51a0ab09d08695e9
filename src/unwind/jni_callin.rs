//! The native frames below a thread's Java frames, for threads that entered
//! Java from native code through JNI (a native thread attached with
//! `AttachCurrentThread` calling a Java method). The native walk stops at the
//! first Java frame and `AsyncGetCallTrace` gives the Java frames, but
//! nothing says where the native caller of the JVM's entry into Java is.
//!
//! - Threads started from the set-up on get a JNI function table of ours
//!   (`java` sets it in the JVMTI `ThreadStart` callback, on the thread): a
//!   copy of the VM's, whose entries that may run Java code (`Call*Method*`,
//!   `NewObject*`, `FindClass`, the `Get*ID`s that initialise classes, ...)
//!   go through a wrapper here. The wrapper notes, in this thread's static
//!   TLS, where its caller's frame is (return address, stack pointer after
//!   the return, %rbp) if no call into Java is under way on the thread
//!   already, counts the depth, and calls the VM's function with the same
//!   arguments (a variadic one through its `va_list` form, as the VM's own
//!   variadic functions do). A JNI call costs two TLS updates more.
//! - A sample with Java frames on such a thread continues the native walk
//!   from that caller (`outermost`). It is kept only if that walk reaches
//!   the thread's outermost frame: then no Java frame lies below the caller,
//!   so every Java frame `AsyncGetCallTrace` gave is above it and the joined
//!   stack is in order (native frames the VM ran between two Java frames,
//!   such as the JNI call itself, are left out, as before). A Java thread
//!   that calls back into Java from a native method walks into JIT code
//!   instead, and keeps its stack as it was.
//! - The VM's table is copied, not changed (`SetJNIFunctionTable` would
//!   change the table that `-Xcheck:jni`'s checked functions call, and
//!   recurse): threads started before the set-up keep the VM's table, and
//!   a JVMTI agent that replaces the JNI functions later does not see the
//!   calls of threads that have ours.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Entries a table of ours can hold (JNI 24 has 236).
pub const TABLE_LEN: usize = 256;

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    // Per thread: calls into Java under way, then the outermost one's
    // caller: return address, stack pointer after the return, %rbp.
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".hidden leakprobe_jni_callin",
    ".globl leakprobe_jni_callin",
    ".type leakprobe_jni_callin,@object",
    ".size leakprobe_jni_callin,32",
    "leakprobe_jni_callin:",
    ".zero 32",
    ".popsection",
    // The VM's functions, by table index (written once, before any table
    // of ours is handed out).
    ".pushsection .bss.leakprobe_jni_orig,\"aw\",@nobits",
    ".p2align 3",
    ".hidden leakprobe_jni_orig",
    ".globl leakprobe_jni_orig",
    "leakprobe_jni_orig:",
    ".zero 2048",
    ".popsection",
    // In a wrapper whose %rbp frame is set up: notes the caller's frame if
    // this is the thread's outermost call into Java, and counts the call.
    // Only %r10, %r11 and the flags change: every argument stays in place.
    ".macro LEAKPROBE_JNI_ENTER",
    "mov r11, qword ptr [rip + leakprobe_jni_callin@GOTTPOFF]",
    "cmp qword ptr fs:[r11], 0",
    "jne 2f",
    "mov r10, qword ptr [rbp + 8]",
    "mov qword ptr fs:[r11 + 8], r10",
    "lea r10, [rbp + 16]",
    "mov qword ptr fs:[r11 + 16], r10",
    "mov r10, qword ptr [rbp]",
    "mov qword ptr fs:[r11 + 24], r10",
    "2:",
    "inc qword ptr fs:[r11]",
    ".endm",
    // A wrapper's start: its symbol, and a %rbp frame that unwinders follow.
    ".macro LEAKPROBE_JNI_BEGIN i",
    ".pushsection .text.leakprobe_jni_wrap_\\i,\"ax\",@progbits",
    ".p2align 4",
    ".type leakprobe_jni_wrap_\\i,@function",
    "leakprobe_jni_wrap_\\i:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    ".endm",
    // After the VM's function: the call counted off, the return value
    // (%rax, %rdx, %xmm0) left as it is.
    ".macro LEAKPROBE_JNI_END i",
    "mov r11, qword ptr [rip + leakprobe_jni_callin@GOTTPOFF]",
    "dec qword ptr fs:[r11]",
    "leave",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size leakprobe_jni_wrap_\\i, . - leakprobe_jni_wrap_\\i",
    ".popsection",
    ".endm",
    // Entry `i` with its arguments in registers (none on the stack: every
    // such JNI function has at most six integer arguments).
    ".macro LEAKPROBE_JNI_WRAP i",
    "LEAKPROBE_JNI_BEGIN \\i",
    "LEAKPROBE_JNI_ENTER",
    "call qword ptr [rip + leakprobe_jni_orig + 8 * \\i]",
    "LEAKPROBE_JNI_END \\i",
    ".endm",
    // Variadic entry `i` with `fixed` arguments before the `...`: the VM's
    // `va_list` form (entry i + 1) is called with a `va_list` of the
    // arguments, built as the x86_64 ABI's va_start does, in `valist`.
    ".macro LEAKPROBE_JNI_WRAP_VARIADIC i, fixed, valist",
    "LEAKPROBE_JNI_BEGIN \\i",
    // The register save area (6 integer, 8 vector registers), then the
    // va_list: gp_offset, fp_offset, overflow_arg_area, reg_save_area.
    "sub rsp, 208",
    "mov qword ptr [rsp], rdi",
    "mov qword ptr [rsp + 8], rsi",
    "mov qword ptr [rsp + 16], rdx",
    "mov qword ptr [rsp + 24], rcx",
    "mov qword ptr [rsp + 32], r8",
    "mov qword ptr [rsp + 40], r9",
    "test al, al",
    "je 3f",
    "movaps xmmword ptr [rsp + 48], xmm0",
    "movaps xmmword ptr [rsp + 64], xmm1",
    "movaps xmmword ptr [rsp + 80], xmm2",
    "movaps xmmword ptr [rsp + 96], xmm3",
    "movaps xmmword ptr [rsp + 112], xmm4",
    "movaps xmmword ptr [rsp + 128], xmm5",
    "movaps xmmword ptr [rsp + 144], xmm6",
    "movaps xmmword ptr [rsp + 160], xmm7",
    "3:",
    "mov dword ptr [rsp + 176], 8 * \\fixed",
    "mov dword ptr [rsp + 180], 48",
    "lea r10, [rbp + 16]",
    "mov qword ptr [rsp + 184], r10",
    "mov qword ptr [rsp + 192], rsp",
    "LEAKPROBE_JNI_ENTER",
    "lea \\valist, [rsp + 176]",
    "call qword ptr [rip + leakprobe_jni_orig + 8 * (\\i + 1)]",
    "LEAKPROBE_JNI_END \\i",
    ".endm",
    // DefineClass, FindClass, ToReflectedMethod, ToReflectedField, ThrowNew,
    // ExceptionDescribe, AllocObject, NewObjectV/A, GetMethodID, the
    // Call<type>MethodV/A, CallNonvirtual<type>MethodV/A and
    // CallStatic<type>MethodV/A, GetFieldID, GetStaticMethodID,
    // GetStaticFieldID, NewDirectByteBuffer, GetDirectBufferAddress,
    // GetDirectBufferCapacity: functions that may run Java code (class
    // loading and initialisation included).
    ".irp i, 5,6,9,12,14,16,27,29,30,33,35,36,38,39,41,42,44,45,47,48,50,51,53,54,56,57,59,60,62,63,65,66,68,69,71,72,74,75,77,78,80,81,83,84,86,87,89,90,92,93,94,113,115,116,118,119,121,122,124,125,127,128,130,131,133,134,136,137,139,140,142,143,144,229,230,231",
    "LEAKPROBE_JNI_WRAP \\i",
    ".endr",
    // NewObject, Call<type>Method, CallStatic<type>Method: (env, object or
    // class, method, ...).
    ".irp i, 28,34,37,40,43,46,49,52,55,58,61,114,117,120,123,126,129,132,135,138,141",
    "LEAKPROBE_JNI_WRAP_VARIADIC \\i, 3, rcx",
    ".endr",
    // CallNonvirtual<type>Method: (env, object, class, method, ...).
    ".irp i, 64,67,70,73,76,79,82,85,88,91",
    "LEAKPROBE_JNI_WRAP_VARIADIC \\i, 4, r8",
    ".endr",
    // (table index, wrapper) pairs, ending with (0, 0).
    ".pushsection .data.rel.ro.leakprobe_jni_wrappers,\"aw\",@progbits",
    ".p2align 3",
    ".hidden leakprobe_jni_wrappers",
    ".globl leakprobe_jni_wrappers",
    "leakprobe_jni_wrappers:",
    ".irp i, 5,6,9,12,14,16,27,28,29,30,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,229,230,231",
    ".quad \\i, leakprobe_jni_wrap_\\i",
    ".endr",
    ".quad 0, 0",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    static leakprobe_jni_wrappers: [[usize; 2]; 0];
    static mut leakprobe_jni_orig: [usize; TABLE_LEN];
}

/// Our table: the VM's functions, with wrappers where they may run Java.
static OURS: [AtomicUsize; TABLE_LEN] = [const { AtomicUsize::new(0) }; TABLE_LEN];

/// Entries of the VM's JNI function table for its `GetVersion` (each JNI
/// version that added functions added them at the end); None for a version
/// newer than this code knows: its table may have more, which ours would
/// lack.
pub fn table_len(version: i32) -> Option<usize> {
    match version {
        0x0001_0006..=0x0008_ffff => Some(233), // 1.6 and 1.8: GetObjectRefType last
        0x0009_0000..=0x0012_ffff => Some(234), // 9 to 18: GetModule
        0x0013_0000..=0x0017_ffff => Some(235), // 19 to 21: IsVirtualThread
        0x0018_0000 => Some(236),               // 24: GetStringUTFLengthAsLong
        _ => None,
    }
}

/// Builds our table from the VM's (`len` entries at `vm`), once, before any
/// thread gets it; its address.
///
/// # Safety
/// `vm` is the VM's JNI function table, of `len` entries.
#[cfg(target_arch = "x86_64")]
pub unsafe fn build(vm: *const usize, len: usize) -> Option<usize> {
    if len > TABLE_LEN {
        return None;
    }
    // SAFETY: `len` readable entries (the contract).
    let vm = unsafe { core::slice::from_raw_parts(vm, len) };
    // SAFETY: written here only, before any wrapper can run (no thread has
    // our table yet); `len` fits (checked above).
    let orig = unsafe { &mut *core::ptr::addr_of_mut!(leakprobe_jni_orig) };
    orig[..len].copy_from_slice(vm);
    for (ours, &f) in OURS.iter().zip(vm) {
        ours.store(f, Ordering::Relaxed);
    }
    // The assembly above ends the pairs with (0, 0).
    let mut pair = core::ptr::addr_of!(leakprobe_jni_wrappers).cast::<[usize; 2]>();
    loop {
        // SAFETY: inside the pairs, up to and including the (0, 0) end.
        let [index, wrapper] = unsafe { *pair };
        if wrapper == 0 {
            break;
        }
        // A variadic wrapper calls the entry after its own (`va_list`).
        if index + 1 < len {
            OURS[index].store(wrapper, Ordering::Relaxed);
        }
        // SAFETY: not past the (0, 0) end (checked above).
        pair = unsafe { pair.add(1) };
    }
    Some(OURS.as_ptr() as usize)
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn build(_: *const usize, _: usize) -> Option<usize> {
    None
}

/// The caller of this thread's outermost JNI call into Java under way:
/// (return address, stack pointer after the return, %rbp).
#[cfg(target_arch = "x86_64")]
pub fn outermost() -> Option<(usize, usize, usize)> {
    let off: usize;
    // SAFETY: reads the GOT slot holding the TLS block's offset from the
    // thread pointer, then this thread's four words there.
    let [depth, ra, sp, bp] = unsafe {
        core::arch::asm!(
            "mov {off}, qword ptr [rip + leakprobe_jni_callin@GOTTPOFF]",
            off = out(reg) off,
            options(pure, readonly, nostack, preserves_flags),
        );
        let mut words = [0usize; 4];
        for (i, w) in words.iter_mut().enumerate() {
            core::arch::asm!(
                "mov {w}, qword ptr fs:[{at}]",
                w = out(reg) *w,
                at = in(reg) off + 8 * i,
                options(readonly, nostack, preserves_flags),
            );
        }
        words
    };
    (depth > 0).then_some((ra, sp, bp))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn outermost() -> Option<(usize, usize, usize)> {
    None
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// What `outermost` said inside the last fake VM function.
    static SEEN: AtomicUsize = AtomicUsize::new(0);

    /// Whether libgcc's unwinder, from inside the last fake VM function,
    /// got through the wrapper to the noted caller (the wrapper's CFI).
    static UNWOUND: AtomicUsize = AtomicUsize::new(0);

    /// Stands for the VM's CallStaticLongMethodV: reads its first variadic
    /// int and double as the x86_64 ABI's `va_arg` does.
    extern "C" fn fake_call_v(env: usize, class: usize, method: usize, args: *const u8) -> i64 {
        let caller = outermost().map_or(0, |(ra, _, _)| ra);
        SEEN.store(caller, Ordering::Relaxed);
        let mut found = false;
        backtrace::trace(|f| {
            found |= f.ip() as usize == caller;
            !found
        });
        UNWOUND.store(usize::from(found), Ordering::Relaxed);
        // SAFETY: `args` is a va_list (gp_offset, fp_offset, overflow area,
        // register save area) whose first int and double are in registers.
        let (int, double) = unsafe {
            let gp = *args.cast::<u32>() as usize;
            let fp = *args.add(4).cast::<u32>() as usize;
            let area = *args.add(16).cast::<*const u8>();
            (*area.add(gp).cast::<i32>(), *area.add(fp).cast::<f64>())
        };
        (env + class + method) as i64 * 1000 + i64::from(int) + (double * 10.0) as i64
    }

    /// Stands for the VM's FindClass.
    extern "C" fn fake_find_class(env: usize, name: usize) -> usize {
        SEEN.store(outermost().map_or(0, |(ra, _, _)| ra), Ordering::Relaxed);
        env * 10 + name
    }

    #[test]
    fn wrappers_call_the_vm_with_the_same_arguments_and_note_their_caller() {
        let mut vm = [0usize; 234];
        vm[6] = fake_find_class as *const () as usize;
        vm[133] = fake_call_v as *const () as usize;
        // SAFETY: a table of 234 entries; no thread has ours yet.
        let ours = unsafe { build(vm.as_ptr(), vm.len()) }.unwrap() as *const usize;
        // SAFETY: entries of our table, of the types of the functions
        // they stand for (CallStaticLongMethod is variadic).
        let (call, find_class) = unsafe {
            let call: extern "C" fn(usize, usize, usize, ...) -> i64 =
                crate::sys::dl::function(*ours.add(132) as *mut core::ffi::c_void);
            let find: extern "C" fn(usize, usize) -> usize =
                crate::sys::dl::function(*ours.add(6) as *mut core::ffi::c_void);
            (call, find)
        };
        assert_ne!(call as *const () as usize, 0);
        assert_eq!(call(1, 2, 3, 42i32, 1.5f64), 6000 + 42 + 15);
        assert_ne!(
            SEEN.load(Ordering::Relaxed),
            0,
            "no caller noted in the call"
        );
        assert_eq!(find_class(4, 2), 42);
        assert_ne!(SEEN.load(Ordering::Relaxed), 0);
        assert_eq!(outermost(), None, "the depth is back to 0");
        // SAFETY: entries of our table; untouched ones are the VM's.
        unsafe {
            assert_eq!(*ours.add(7), 0);
            assert_eq!(*ours.add(233), 0);
            assert_eq!(*ours.add(234), 0, "nothing past the VM's table");
        }
    }

    #[test]
    fn table_sizes_by_jni_version() {
        assert_eq!(table_len(0x0001_0008), Some(233));
        assert_eq!(table_len(0x000a_0000), Some(234));
        assert_eq!(table_len(0x0015_0000), Some(235));
        assert_eq!(table_len(0x0018_0000), Some(236));
        assert_eq!(table_len(0x0019_0000), None);
        assert_eq!(table_len(0x0001_0004), None);
    }
}
