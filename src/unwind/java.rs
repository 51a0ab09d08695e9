//! Java frames for native allocations made on JVM threads, with nothing but
//! `LD_PRELOAD`: JIT-compiled and interpreted code has no unwind tables, so
//! the native stack stops at the first Java frame; HotSpot's
//! `AsyncGetCallTrace` gives the Java frames from there.
//!
//! - Set-up, once, on the collector thread: when `JNI_GetCreatedJavaVMs`
//!   (exported by libjvm, found with `dlsym`) returns a fully created VM, the
//!   collector attaches itself as a daemon thread and takes a JVMTI
//!   environment. `AsyncGetCallTrace` needs `ClassLoad` events enabled, and
//!   names only methods that have a `jmethodID`: every loaded class's methods
//!   get one now (`GetClassMethods`), and every class prepared later gets
//!   them in the `ClassPrepare` callback, on the thread that loads it.
//! - A sampled allocation on a Java thread (one test of `ACTIVE` for every
//!   other program) calls `AsyncGetCallTrace` on its own thread: it walks the
//!   Java frames from the thread's last Java frame, takes no lock and forces
//!   no safepoint. Its (method, bci) pairs are appended to the native frames
//!   as tagged words (`encode`), in place of the last native frame when that
//!   one lies in code no object maps (the JIT or interpreter frame itself).
//! - Names are resolved off the allocating thread, by the collector (through
//!   JVMTI, as an attached thread) soon after the stack is first seen, and
//!   kept: a method whose class is unloaded later stays named; one unloaded
//!   before the collector saw it is marked so. At `VMDeath` the pending ones
//!   are resolved and JVMTI is not called again (a thread that enters the VM
//!   after it exits would block for good).
//! - The dump keeps each tagged word as the frame's address (jeprof and pprof
//!   show it as a hex address) and names it on a `# leakprobe java_frame:`
//!   line, which both tools skip.

use crate::settings::Settings;
use crate::unwind::frame_source::FrameSource;
use crate::unwind::jni_callin;
use crate::unwind::stack::Stack;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Set once Java stacks are taken (the set-up succeeded, the VM is alive).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// `LEAKPROBE_JAVA=0`: never look for a JVM.
static OFF: AtomicBool = AtomicBool::new(false);
/// The `JavaVM*` and `AsyncGetCallTrace` (or 0).
static VM: AtomicUsize = AtomicUsize::new(0);
static AGCT: AtomicUsize = AtomicUsize::new(0);
/// Stacks that got Java frames, and those `AsyncGetCallTrace` could not walk.
static WALKED: AtomicU64 = AtomicU64::new(0);
static NOT_WALKABLE: AtomicU64 = AtomicU64::new(0);

/// Java frames are words with bit 62 set (never a user-space address on
/// x86_64, and below 2^63: jeprof skips larger addresses), with 17 bits of
/// bci + 4 (1: native method, 3: bci unknown) above the `jmethodID`
/// (8-aligned, below 2^47) shifted right by 3.
const TAG: usize = 1 << 62;
const CODE_SHIFT: u32 = 44;
const CODE_MASK: usize = (1 << 17) - 1;
const ID_MASK: usize = (1 << 44) - 1;
const NATIVE_CODE: usize = 1;

// Entries of the JNI and JVMTI function tables (jni.h, jvmti.h; fixed since
// JDK 6), as indices of pointers.
const INVOKE_GET_ENV: usize = 6;
const INVOKE_ATTACH_DAEMON: usize = 7;
const JNI_GET_VERSION: usize = 4;
const JNI_DELETE_LOCAL_REF: usize = 23;
const TI_SET_EVENT_NOTIFICATION_MODE: usize = 1;
const TI_DEALLOCATE: usize = 46;
const TI_GET_CLASS_SIGNATURE: usize = 47;
const TI_GET_SOURCE_FILE_NAME: usize = 49;
const TI_GET_CLASS_METHODS: usize = 51;
const TI_GET_METHOD_NAME: usize = 63;
const TI_GET_METHOD_DECLARING_CLASS: usize = 64;
const TI_GET_LINE_NUMBER_TABLE: usize = 69;
const TI_GET_LOADED_CLASSES: usize = 77;
const TI_SET_EVENT_CALLBACKS: usize = 121;
const TI_ADD_CAPABILITIES: usize = 141;

const JNI_OK: c_int = 0;
const JNI_VERSION_1_6: c_int = 0x0001_0006;
const JVMTI_VERSION_1_2: c_int = 0x3001_0200;
const JVMTI_ENABLE: c_int = 1;
const JVMTI_EVENT_VM_DEATH: c_int = 51;
const JVMTI_EVENT_THREAD_START: c_int = 52;
const JVMTI_EVENT_CLASS_LOAD: c_int = 55;
const JVMTI_EVENT_CLASS_PREPARE: c_int = 56;
const JVMTI_ERROR_INVALID_METHODID: c_int = 23;
/// `jvmtiEventCallbacks`: 37 pointers; VMDeath, ThreadStart, ClassLoad and
/// ClassPrepare are entries 1, 2, 5 and 6.
const CALLBACKS: usize = 37;

type Table = *const *const c_void;
/// `JavaVM*`, `JNIEnv*`, `jvmtiEnv*`: a pointer to a function table.
type Env = *mut Table;

/// The function at `index` of `env`'s table.
///
/// # Safety
/// `env` must be a live JNI/JVMTI environment or VM, `index` inside its table.
unsafe fn entry(env: Env, index: usize) -> *const c_void {
    // SAFETY: a live environment points at its table, which holds `index`.
    unsafe { *(*env).add(index) }
}

/// Calls entry `$index` of `$env`'s table with the type given; inside the
/// caller's `unsafe` block, whose SAFETY comment states that `$env` is live
/// and the arguments are what the entry takes.
macro_rules! call {
    ($env:expr, $index:expr, fn($($ty:ty),*) -> $ret:ty, $($arg:expr),*) => {{
        let f: unsafe extern "C" fn(Env, $($ty),*) -> $ret =
            crate::sys::dl::function(entry($env, $index) as *mut core::ffi::c_void);
        f($env, $($arg),*)
    }};
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CallFrame {
    lineno: i32,
    method: usize,
}

#[repr(C)]
struct CallTrace {
    env: Env,
    num_frames: i32,
    frames: *mut CallFrame,
}

type Agct = unsafe extern "C" fn(*mut CallTrace, i32, *mut c_void);

/// Java's frames, as a frame source (`unwind::frames`).
pub static FRAMES: FrameSource = FrameSource {
    init,
    append,
    note_stack,
    poll,
    idle_wait,
    frame_lines,
    facts,
};

/// `LEAKPROBE_JAVA=0`: never look for a JVM.
fn init(cfg: &Settings) {
    if !cfg.java {
        OFF.store(true, Ordering::Relaxed);
    }
}

/// Appends the Java frames of the calling thread, if it is a Java thread of
/// a VM set up for it; `stack` holds its native frames. On the sampled path.
/// True if the collector should be woken once the sample is queued, to
/// name methods it may not know yet (`wants_names`).
#[inline(always)]
fn append(stack: &mut Stack, max_len: usize) -> bool {
    ACTIVE.load(Ordering::Relaxed) && append_java(stack, max_len)
}

/// Methods whose names a sample asked the collector for, direct-mapped by
/// jmethodID (a slot holds the last one asked).
const ASKED_BITS: u32 = 12;
static ASKED: [AtomicUsize; 1 << ASKED_BITS] = [const { AtomicUsize::new(0) }; 1 << ASKED_BITS];
/// When the collector was last woken for names (monotonic milliseconds).
static LAST_WAKE_MS: AtomicU64 = AtomicU64::new(0);

/// Whether a sample with these frames should wake the collector: a method
/// not asked for yet (new, or its slot taken by another since) is named
/// at once then, while its class is most likely still loaded; otherwise it
/// would wait for the collector's next round (up to 100 ms), and a class
/// unloaded meanwhile leaves its frames unnamed. At most one wake a
/// millisecond; the methods are marked asked only by a sample that wakes.
fn wants_names(frames: &[CallFrame]) -> bool {
    let slot = |id: usize| {
        &ASKED[(id >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - ASKED_BITS)]
    };
    let asked = |f: &CallFrame| f.method == 0 || slot(f.method).load(Ordering::Relaxed) == f.method;
    if frames.iter().all(asked) {
        return false;
    }
    let now = crate::sys::clock::monotonic().as_millis() as u64;
    let last = LAST_WAKE_MS.load(Ordering::Relaxed);
    if now == last
        || LAST_WAKE_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return false;
    }
    for f in frames.iter().filter(|f| f.method != 0) {
        slot(f.method).store(f.method, Ordering::Relaxed);
    }
    true
}

#[cold]
#[inline(never)]
fn append_java(stack: &mut Stack, max_len: usize) -> bool {
    let (vm, agct) = (VM.load(Ordering::Acquire), AGCT.load(Ordering::Acquire));
    let mut env: Env = core::ptr::null_mut();
    // SAFETY: `vm` is the live JavaVM (ACTIVE is cleared at VMDeath);
    // GetEnv with a JNI version reads the thread's own state and is what
    // profilers call from signal handlers.
    let ok = unsafe {
        call!(
            vm as Env,
            INVOKE_GET_ENV,
            fn(*mut Env, c_int) -> c_int,
            &mut env,
            JNI_VERSION_1_6
        )
    };
    if ok != JNI_OK || env.is_null() {
        return false; // not a Java thread
    }
    // Written by AsyncGetCallTrace up to `num_frames`, read no further.
    let mut frames = [const { core::mem::MaybeUninit::<CallFrame>::uninit() };
        crate::unwind::stack::FRAMES_LIMIT];
    let mut trace = CallTrace {
        env,
        num_frames: 0,
        frames: frames.as_mut_ptr().cast(),
    };
    // Room for the Java frames: what is left, and the last native frame
    // they may replace; no deeper walk than that.
    let room = max_len.saturating_sub(stack.len()) + 1;
    let depth = room.min(frames.len()) as i32;
    // Of the context AsyncGetCallTrace reads only the program counter, stack
    // and frame pointers, and only for a thread in Java code, which a thread
    // in malloc is not (its last Java frame is used).
    let mut uc = crate::sys::signals::frame_context_here();
    // SAFETY: AsyncGetCallTrace is made to run on the thread it walks at any
    // point (it is called from signal handlers); `trace.frames` has `depth`
    // room; `uc` describes this function's frame, live during the call.
    unsafe {
        let f: Agct = crate::sys::dl::function(agct as *mut c_void);
        f(&mut trace, depth, (&mut uc as *mut libc::ucontext_t).cast());
    }
    let n = trace.num_frames;
    if n <= 0 {
        if n < 0 {
            NOT_WALKABLE.fetch_add(1, Ordering::Relaxed);
        }
        return false;
    }
    WALKED.fetch_add(1, Ordering::Relaxed);
    // The last native frame is the JIT or interpreter code of the top Java
    // frame (no object maps it): the Java frames stand for it.
    let len = stack.len();
    if len > 1 && stack.frames().last().is_some_and(|&pc| !in_some_object(pc)) {
        stack.truncate(len - 1);
    }
    // SAFETY: AsyncGetCallTrace wrote the first `n` (at most `depth`) frames.
    let walked =
        unsafe { core::slice::from_raw_parts(trace.frames, (n as usize).min(depth as usize)) };
    for f in walked {
        if !stack.push(encode(f.lineno, f.method), max_len) {
            break;
        }
    }
    if let Some((ra, sp, bp)) = jni_callin::outermost() {
        append_native_caller(stack, max_len, (ra, sp, bp));
    }
    wants_names(walked)
}

/// Appends the native frames from the caller of the thread's outermost JNI
/// call into Java on: all of them, down to the thread's outermost frame,
/// or none (see `jni_callin`).
fn append_native_caller(stack: &mut Stack, max_len: usize, (ra, sp, bp): (usize, usize, usize)) {
    let java_end = stack.len();
    let complete = crate::unwind::walk::walk_from(ra, sp, bp, &mut |pc| stack.push(pc, max_len));
    if !complete {
        stack.truncate(java_end);
    }
}

/// Whether a loaded object maps `pc` (lock-free `_dl_find_object`); true if
/// that cannot be told, so that a frame is never dropped by mistake.
fn in_some_object(pc: usize) -> bool {
    !crate::sys::dl::can_find_objects() || crate::sys::dl::find_object(pc).is_some()
}

fn encode(lineno: i32, method: usize) -> usize {
    let code = (i64::from(lineno) + 4).clamp(0, CODE_MASK as i64) as usize;
    let id = if method & 7 == 0 && method >> 47 == 0 {
        method >> 3
    } else {
        0 // not representable: shown as an unknown method
    };
    TAG | code << CODE_SHIFT | id
}

/// (jmethodID, code) of a Java frame word; None for a native address.
fn decode(word: usize) -> Option<(usize, usize)> {
    (word & TAG != 0).then_some(((word & ID_MASK) << 3, (word >> CODE_SHIFT) & CODE_MASK))
}

/// The dump's counters: stacks with Java frames, stacks not walkable.
fn facts() -> Vec<(&'static str, String)> {
    vec![
        ("java_stacks", WALKED.load(Ordering::Relaxed).to_string()),
        (
            "java_stacks_not_walkable",
            NOT_WALKABLE.load(Ordering::Relaxed).to_string(),
        ),
    ]
}

/// What is known of a method, by jmethodID.
enum Method {
    Named {
        name: String,
        file: Option<String>,
        /// (first bci, line), by bci.
        lines: Vec<(i64, i32)>,
    },
    /// Its class was unloaded before the collector asked.
    Unloaded,
}

struct Names {
    methods: BTreeMap<usize, Method>,
    /// jmethodIDs seen in new stacks, not resolved yet.
    pending: Vec<usize>,
    /// The collector's environments once it is attached.
    jvmti: usize,
    jni: usize,
    /// The collector's thread id: JVMTI is called from there only (and from
    /// the VMDeath callback).
    tid: libc::pid_t,
    /// The VM is dying or gone: no JVMTI call any more.
    dead: bool,
}

static NAMES: Mutex<Names> = Mutex::new(Names {
    methods: BTreeMap::new(),
    pending: Vec::new(),
    jvmti: 0,
    jni: 0,
    tid: 0,
    dead: false,
});

fn names() -> std::sync::MutexGuard<'static, Names> {
    NAMES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new stack was interned: its methods are resolved on the collector's
/// next round.
fn note_stack(frames: &[usize]) {
    if !frames.iter().any(|&w| w & TAG != 0) {
        return;
    }
    let mut n = names();
    for (id, _) in frames.iter().filter_map(|&w| decode(w)) {
        if id != 0 && !n.methods.contains_key(&id) {
            n.pending.push(id);
        }
    }
}

/// The collector's round: looks for a JVM until one is set up, and resolves
/// the methods of new stacks.
fn poll() {
    if OFF.load(Ordering::Relaxed) {
        return;
    }
    if !ACTIVE.load(Ordering::Relaxed) {
        look_for_vm();
        return;
    }
    resolve_pending(&mut names());
}

/// `# leakprobe java_frame:` lines for the Java frames of `stacks`:
/// `<address> <kind> <class>.<method> <file>[:<line>]` (no spaces inside a
/// field; `?` when unknown), kind one of `java`, `native` (a Java native
/// method), `unloaded` (its class was unloaded before it was named),
/// `unknown` (no name: the VM gave no method id, or JVMTI was gone).
fn frame_lines(stacks: &[&[usize]]) -> Vec<(&'static str, String)> {
    let mut words: Vec<usize> = stacks
        .iter()
        .copied()
        .flatten()
        .copied()
        .filter(|&w| w & TAG != 0)
        .collect();
    if words.is_empty() {
        return Vec::new();
    }
    words.sort_unstable();
    words.dedup();
    let mut n = names();
    resolve_pending(&mut n);
    words
        .into_iter()
        .map(|w| ("java_frame", describe(&n.methods, w)))
        .collect()
}

fn describe(methods: &BTreeMap<usize, Method>, word: usize) -> String {
    let (id, code) = decode(word).unwrap_or_default();
    match methods.get(&id) {
        Some(Method::Named { name, file, lines }) => {
            let file = file.as_deref().unwrap_or("?");
            let kind = if code == NATIVE_CODE {
                "native"
            } else {
                "java"
            };
            match line_of(lines, code as i64 - 4) {
                Some(line) => format!("{word:#x} {kind} {name} {file}:{line}"),
                None => format!("{word:#x} {kind} {name} {file}"),
            }
        }
        Some(Method::Unloaded) => format!("{word:#x} unloaded ? ?"),
        None => format!("{word:#x} unknown ? ?"),
    }
}

/// The line of `bci` from a method's line table.
fn line_of(lines: &[(i64, i32)], bci: i64) -> Option<i32> {
    if bci < 0 {
        return None;
    }
    let i = lines.partition_point(|&(start, _)| start <= bci);
    i.checked_sub(1).map(|i| lines[i].1)
}

fn current_tid() -> libc::pid_t {
    crate::sys::raw::gettid()
}

fn resolve_pending(n: &mut Names) {
    if n.pending.is_empty() || n.dead || n.jvmti == 0 || n.tid != current_tid() {
        return;
    }
    let pending = core::mem::take(&mut n.pending);
    for id in pending {
        if !n.methods.contains_key(&id) {
            // SAFETY: this is the attached collector thread, the VM is alive
            // (`dead` is set under this lock at VMDeath), and jmethodIDs are
            // never freed (an unloaded class's answer INVALID_METHODID).
            let m = unsafe { resolve(n.jvmti as Env, n.jni as Env, id) };
            if let Some(m) = m {
                n.methods.insert(id, m);
            }
        }
    }
}

/// Takes a JVMTI string (freed here); "" if null.
///
/// # Safety
/// `jvmti` is live; `p` is null or a string it allocated, not freed yet.
unsafe fn take_string(jvmti: Env, p: *mut c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: JVMTI's strings are NUL-terminated (modified UTF-8).
    let s = unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .replace(char::is_whitespace, "_");
    // SAFETY: `p` is JVMTI's allocation (the contract), freed once, here.
    unsafe { call!(jvmti, TI_DEALLOCATE, fn(*mut c_char) -> c_int, p) };
    s
}

/// The declaring class is asked first, and its reference held until the
/// end: a class is never unloaded while a reference to it lives, so the
/// later answers are all for this method (a GC between two calls, which the
/// storms of `System.gc()` in the tests make common, would otherwise unload
/// it half-way and leave a name without its class).
///
/// # Safety
/// On an attached thread, VM alive.
unsafe fn resolve(jvmti: Env, jni: Env, id: usize) -> Option<Method> {
    let mut class: *mut c_void = core::ptr::null_mut();
    // SAFETY: a live environment (the contract); any jmethodID is accepted
    // (an unloaded one answers an error); `class` is out storage.
    let rc = unsafe {
        call!(
            jvmti,
            TI_GET_METHOD_DECLARING_CLASS,
            fn(usize, *mut *mut c_void) -> c_int,
            id,
            &mut class
        )
    };
    if rc == JVMTI_ERROR_INVALID_METHODID {
        return Some(Method::Unloaded);
    }
    if rc != 0 || class.is_null() {
        return None;
    }
    // SAFETY: the contract, and `class` is a live local reference.
    let method = unsafe { resolve_in_class(jvmti, id, class) };
    // SAFETY: this thread's JNI environment, on its own local reference,
    // deleted once.
    unsafe { call!(jni, JNI_DELETE_LOCAL_REF, fn(*mut c_void) -> (), class) };
    Some(method)
}

/// # Safety
/// As `resolve`; `class` is a local reference to `id`'s declaring class.
unsafe fn resolve_in_class(jvmti: Env, id: usize, class: *mut c_void) -> Method {
    let null = core::ptr::null_mut::<*mut c_char>();
    let mut name: *mut c_char = core::ptr::null_mut();
    // SAFETY: a live environment (the contract), a method of a class held;
    // the optional outputs are null.
    let rc = unsafe {
        call!(
            jvmti,
            TI_GET_METHOD_NAME,
            fn(usize, *mut *mut c_char, *mut *mut c_char, *mut *mut c_char) -> c_int,
            id,
            &mut name,
            null,
            null
        )
    };
    let method = if rc == 0 {
        // SAFETY: the call succeeded: `name` is JVMTI's string.
        unsafe { take_string(jvmti, name) }
    } else {
        String::from("?")
    };
    let mut sig: *mut c_char = core::ptr::null_mut();
    // SAFETY: `class` is a live local reference; `sig` is out storage, the
    // generic signature not asked for.
    let rc = unsafe {
        call!(
            jvmti,
            TI_GET_CLASS_SIGNATURE,
            fn(*mut c_void, *mut *mut c_char, *mut *mut c_char) -> c_int,
            class,
            &mut sig,
            null
        )
    };
    let class_name = if rc == 0 {
        // SAFETY: the call succeeded: `sig` is JVMTI's string.
        class_of_signature(&unsafe { take_string(jvmti, sig) })
    } else {
        String::from("?")
    };
    let mut source: *mut c_char = core::ptr::null_mut();
    // SAFETY: as above; `source` is out storage.
    let rc = unsafe {
        call!(
            jvmti,
            TI_GET_SOURCE_FILE_NAME,
            fn(*mut c_void, *mut *mut c_char) -> c_int,
            class,
            &mut source
        )
    };
    // SAFETY: the call succeeded: `source` is JVMTI's string.
    let file = (rc == 0)
        .then(|| unsafe { take_string(jvmti, source) })
        .filter(|s| !s.is_empty());
    let mut count: c_int = 0;
    let mut table: *mut (i64, i32) = core::ptr::null_mut();
    let mut lines = Vec::new();
    // jvmtiLineNumberEntry is { jlocation start_location; jint line_number; }.
    // SAFETY: a live environment; `count` and `table` are out storage.
    let rc = unsafe {
        call!(
            jvmti,
            TI_GET_LINE_NUMBER_TABLE,
            fn(usize, *mut c_int, *mut *mut (i64, i32)) -> c_int,
            id,
            &mut count,
            &mut table
        )
    };
    if rc == 0 && !table.is_null() {
        // SAFETY: JVMTI returned `count` entries at `table`, of this layout.
        lines.extend_from_slice(unsafe {
            core::slice::from_raw_parts(table, count.max(0) as usize)
        });
        // SAFETY: JVMTI's allocation, freed once, after the copy.
        unsafe { call!(jvmti, TI_DEALLOCATE, fn(*mut (i64, i32)) -> c_int, table) };
        lines.sort_unstable();
    }
    Method::Named {
        name: format!("{class_name}.{method}"),
        file,
        lines,
    }
}

/// `Ljava/util/zip/Deflater;` -> `java.util.zip.Deflater`.
fn class_of_signature(sig: &str) -> String {
    let s = sig
        .strip_prefix('L')
        .and_then(|s| s.strip_suffix(';'))
        .unwrap_or(sig);
    s.replace('/', ".")
}

/// libjvm's `JNI_GetCreatedJavaVMs` once it is loaded; 1 once the look is over.
static CREATED: AtomicUsize = AtomicUsize::new(0);

/// How long the collector may sleep when idle: briefly while a VM is being
/// created, so that its first Java threads already get Java frames.
fn idle_wait(idle: Duration) -> Duration {
    match CREATED.load(Ordering::Relaxed) {
        0 | 1 => idle,
        _ => idle.min(Duration::from_millis(2)),
    }
}

/// On the collector thread: sets up Java stacks once a VM is fully created.
fn look_for_vm() {
    let mut created = CREATED.load(Ordering::Relaxed);
    if created == 1 {
        return;
    }
    if created == 0 {
        // libjvm is looked for at most every 100 ms.
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = crate::sys::clock::monotonic().as_millis() as u64;
        if now.saturating_sub(LAST.load(Ordering::Relaxed)) < 100 {
            return;
        }
        LAST.store(now, Ordering::Relaxed);
        created = crate::sys::dl::lookup(crate::sys::dl::Scope::Global, c"JNI_GetCreatedJavaVMs")
            as usize;
        if created <= 1 {
            return;
        }
        CREATED.store(created, Ordering::Relaxed);
    }
    // SAFETY: libjvm's functions, called as jni.h declares them.
    unsafe {
        let created: unsafe extern "C" fn(*mut Env, c_int, *mut c_int) -> c_int =
            crate::sys::dl::function(created as *mut c_void);
        let (mut vm, mut count): (Env, c_int) = (core::ptr::null_mut(), 0);
        if created(&mut vm, 1, &mut count) != JNI_OK || count < 1 || vm.is_null() {
            return; // not created yet (JDK 17 answers only once it is complete)
        }
        // Whatever happens next, once.
        CREATED.store(1, Ordering::Relaxed);
        match set_up(vm) {
            Ok(()) => crate::sys::log::log!("JVM found: Java frames are added to native stacks"),
            Err(why) => crate::sys::log::log!("JVM found, but Java frames are off: {why}"),
        }
    }
}

/// # Safety
/// On the collector thread; `vm` is a created JavaVM.
unsafe fn set_up(vm: Env) -> Result<(), String> {
    let agct = crate::sys::dl::lookup(crate::sys::dl::Scope::Global, c"AsyncGetCallTrace");
    if agct.is_null() {
        return Err("the VM does not export AsyncGetCallTrace".into());
    }
    // SAFETY: a created VM (the contract).
    let jni = unsafe { attach(vm) }?;
    let mut jvmti: Env = core::ptr::null_mut();
    // SAFETY: a created VM, this thread now attached; `jvmti` is out storage.
    let rc = unsafe {
        call!(
            vm,
            INVOKE_GET_ENV,
            fn(*mut Env, c_int) -> c_int,
            &mut jvmti,
            JVMTI_VERSION_1_2
        )
    };
    if rc != JNI_OK || jvmti.is_null() {
        return Err(format!("no JVMTI environment (error {rc})"));
    }
    // can_get_source_file_name and can_get_line_numbers (bits 11 and 12 of
    // jvmtiCapabilities), available in the live phase; names without them.
    let caps: [u8; 16] = [0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    // SAFETY: the environment just returned; `caps` is a jvmtiCapabilities
    // (16 bytes).
    unsafe {
        call!(
            jvmti,
            TI_ADD_CAPABILITIES,
            fn(*const u8) -> c_int,
            caps.as_ptr()
        )
    };
    let mut callbacks = [core::ptr::null::<c_void>(); CALLBACKS];
    callbacks[1] = on_vm_death as *const c_void;
    callbacks[2] = on_thread_start as *const c_void;
    callbacks[5] = on_class_load as *const c_void;
    callbacks[6] = on_class_prepare as *const c_void;
    // SAFETY: the environment just returned; `callbacks` is a whole
    // jvmtiEventCallbacks, its entries functions of the events' types.
    let rc = unsafe {
        call!(
            jvmti,
            TI_SET_EVENT_CALLBACKS,
            fn(*const *const c_void, c_int) -> c_int,
            callbacks.as_ptr(),
            (CALLBACKS * 8) as c_int
        )
    };
    if rc != 0 {
        return Err(format!("JVMTI SetEventCallbacks failed (error {rc})"));
    }
    // SAFETY: this thread's JNI environment; GetVersion takes nothing else.
    let version = unsafe { call!(jni, JNI_GET_VERSION, fn() -> c_int,) };
    // SAFETY: a JNIEnv points at the VM's function table, of the entries
    // its JNI version has.
    let table = unsafe { *jni } as *const usize;
    // SAFETY: as just said; no thread has our table yet.
    let ours =
        jni_callin::table_len(version).and_then(|len| unsafe { jni_callin::build(table, len) });
    if let Some(ours) = ours {
        JNI_TABLES.store((table as usize, ours));
    }
    for event in [
        JVMTI_EVENT_VM_DEATH,
        JVMTI_EVENT_THREAD_START,
        JVMTI_EVENT_CLASS_LOAD,
        JVMTI_EVENT_CLASS_PREPARE,
    ] {
        // SAFETY: the environment just returned; a global event (no thread).
        let rc = unsafe {
            call!(
                jvmti,
                TI_SET_EVENT_NOTIFICATION_MODE,
                fn(c_int, c_int, *mut c_void) -> c_int,
                JVMTI_ENABLE,
                event,
                core::ptr::null_mut()
            )
        };
        if rc != 0 {
            return Err(format!("JVMTI cannot enable event {event} (error {rc})"));
        }
    }
    // Classes loaded before now: method ids for them (later ones get theirs
    // in on_class_prepare; a class in both is harmless).
    let mut count: c_int = 0;
    let mut classes: *mut *mut c_void = core::ptr::null_mut();
    // SAFETY: the environment just returned; `count` and `classes` are out
    // storage.
    let rc = unsafe {
        call!(
            jvmti,
            TI_GET_LOADED_CLASSES,
            fn(*mut c_int, *mut *mut *mut c_void) -> c_int,
            &mut count,
            &mut classes
        )
    };
    if rc == 0 && !classes.is_null() {
        // SAFETY: JVMTI returned `count` class references at `classes`.
        let loaded = unsafe { core::slice::from_raw_parts(classes, count.max(0) as usize) };
        for &class in loaded {
            // SAFETY: a local reference to a loaded class, deleted once after
            // its use, on the thread it belongs to.
            unsafe {
                create_method_ids(jvmti, class);
                call!(jni, JNI_DELETE_LOCAL_REF, fn(*mut c_void) -> (), class);
            }
        }
        // SAFETY: JVMTI's allocation, freed once, after its last use.
        unsafe { call!(jvmti, TI_DEALLOCATE, fn(*mut *mut c_void) -> c_int, classes) };
    }
    {
        let mut n = names();
        n.jvmti = jvmti as usize;
        n.jni = jni as usize;
        n.tid = current_tid();
    }
    VM.store(vm as usize, Ordering::Release);
    AGCT.store(agct as usize, Ordering::Release);
    crate::sys::process::at_fork(None, None, Some(fork_child));
    ACTIVE.store(true, Ordering::Release);
    Ok(())
}

/// Attaches the collector thread as a daemon (the VM does not wait for it at
/// exit). The VM sets the thread's signal mask as it does for its own
/// threads: the collector's own mask is put back, with the synchronous
/// signals the VM's code relies on left unblocked.
///
/// # Safety
/// `vm` is a created JavaVM.
unsafe fn attach(vm: Env) -> Result<Env, String> {
    #[repr(C)]
    struct AttachArgs {
        version: c_int,
        name: *const c_char,
        group: *mut c_void,
    }
    let args = AttachArgs {
        version: JNI_VERSION_1_6,
        name: c"leakprobe collector".as_ptr(),
        group: core::ptr::null_mut(),
    };
    let mut old = crate::sys::signals::empty();
    crate::sys::signals::real_sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut old);
    let mut jni: Env = core::ptr::null_mut();
    // SAFETY: a created VM (the contract); `args` is a JavaVMAttachArgs,
    // `jni` out storage.
    let rc = unsafe {
        call!(
            vm,
            INVOKE_ATTACH_DAEMON,
            fn(*mut Env, *const AttachArgs) -> c_int,
            &mut jni,
            &args
        )
    };
    for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        old = crate::sys::signals::with_member(&old, sig, false);
    }
    crate::sys::signals::real_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    if rc != JNI_OK || jni.is_null() {
        return Err(format!("cannot attach the collector thread (error {rc})"));
    }
    Ok(jni)
}

/// Creates the jmethodIDs of `class`'s methods (GetClassMethods does).
///
/// # Safety
/// `jvmti` is live; `class` is a reference to a loaded class.
unsafe fn create_method_ids(jvmti: Env, class: *mut c_void) {
    let mut count: c_int = 0;
    let mut methods: *mut usize = core::ptr::null_mut();
    // SAFETY: the contract; `count` and `methods` are out storage.
    let rc = unsafe {
        call!(
            jvmti,
            TI_GET_CLASS_METHODS,
            fn(*mut c_void, *mut c_int, *mut *mut usize) -> c_int,
            class,
            &mut count,
            &mut methods
        )
    };
    if rc == 0 && !methods.is_null() {
        // SAFETY: JVMTI's allocation, freed once.
        unsafe { call!(jvmti, TI_DEALLOCATE, fn(*mut usize) -> c_int, methods) };
    }
}

/// The VM's JNI function table and ours (`jni_callin`), once built.
static JNI_TABLES: TablePair = TablePair(AtomicUsize::new(0), AtomicUsize::new(0));

struct TablePair(AtomicUsize, AtomicUsize);

impl TablePair {
    fn store(&self, (vm, ours): (usize, usize)) {
        self.1.store(ours, Ordering::Relaxed);
        self.0.store(vm, Ordering::Release);
    }

    fn load(&self) -> Option<(usize, usize)> {
        let vm = self.0.load(Ordering::Acquire);
        (vm != 0).then(|| (vm, self.1.load(Ordering::Relaxed)))
    }
}

/// On the new thread (a native thread attaching, or a thread the VM
/// started): its JNI calls into Java go through `jni_callin`'s table from
/// now on, unless it has another table than the VM's.
unsafe extern "C" fn on_thread_start(_: Env, jni: Env, _: *mut c_void) {
    if let Some((vm, ours)) = JNI_TABLES.load().filter(|_| !jni.is_null()) {
        // SAFETY: the VM passes the thread's own live JNIEnv, which only
        // this thread uses; its first word is its function table.
        unsafe {
            if *jni as usize == vm {
                *jni = ours as Table;
            }
        }
    }
}

/// Enabled only because AsyncGetCallTrace requires ClassLoad events.
unsafe extern "C" fn on_class_load(_: Env, _: Env, _: *mut c_void, _: *mut c_void) {}

unsafe extern "C" fn on_class_prepare(jvmti: Env, _: Env, _: *mut c_void, class: *mut c_void) {
    // On the program's thread, for the library: what the VM allocates for
    // it is not the program's.
    // SAFETY: the VM passes its live environment and the prepared class.
    crate::sample::sampling::while_busy(|| unsafe { create_method_ids(jvmti, class) });
}

/// The VM is about to exit: resolve what is pending while JVMTI still
/// answers, then never call it again.
unsafe extern "C" fn on_vm_death(_: Env, _: Env) {
    ACTIVE.store(false, Ordering::Release);
    // Stacks sampled since the collector's last round are named while JVMTI
    // still answers (else their Java frames would stay unknown).
    crate::unwind::frame_source::drain();
    let mut n = names();
    n.tid = current_tid();
    resolve_pending(&mut n);
    n.dead = true;
}

/// A forked child has no attached collector (and a JVM copy that does not run).
extern "C" fn fork_child() {
    ACTIVE.store(false, Ordering::Release);
    OFF.store(true, Ordering::Relaxed);
    // The lock may have been held by a thread that does not exist here.
    if let Ok(mut n) = NAMES.try_lock() {
        n.dead = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_frames_round_trip_through_their_words() {
        let id = 0x7f12_3456_7890usize & !7;
        let w = encode(42, id);
        assert!(w & TAG != 0);
        assert_eq!(decode(w), Some((id, 46)));
        assert_eq!(decode(encode(-3, id)), Some((id, NATIVE_CODE)));
        assert_eq!(
            decode(encode(5, 0x1001)),
            Some((0, 9)),
            "unaligned ids are dropped"
        );
        assert_eq!(decode(0x7fff_0000_1234), None);
        assert_ne!(encode(1, id), encode(2, id));
    }

    #[test]
    fn lines_come_from_the_table_entry_at_or_before_the_bci() {
        let lines = [(0, 10), (4, 11), (9, 15)];
        assert_eq!(line_of(&lines, 0), Some(10));
        assert_eq!(line_of(&lines, 5), Some(11));
        assert_eq!(line_of(&lines, 30), Some(15));
        assert_eq!(line_of(&lines, -1), None);
        assert_eq!(line_of(&[], 3), None);
    }

    #[test]
    fn class_names_from_signatures() {
        assert_eq!(
            class_of_signature("Ljava/util/zip/Deflater;"),
            "java.util.zip.Deflater"
        );
        assert_eq!(class_of_signature("[I"), "[I");
    }
}
