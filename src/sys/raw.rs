//! System calls made directly, not through glibc's wrappers: they never
//! write `errno` or read any thread-local state, so they may run on the
//! thread glibc does not know (`single`), whose thread pointer is the main
//! thread's, and in signal handlers. Results are the kernel's (a negative
//! value is `-errno`) or a `Result` whose error is the `errno` value.

use core::ffi::{c_int, c_void, CStr};
use core::sync::atomic::{AtomicI32, Ordering};

/// The process the library writes for: 0 for this one; in a snapshot copy
/// (`collect::single`), the process it was copied from.
static WRITES_FOR: AtomicI32 = AtomicI32::new(0);

/// The process a dump, the log and /proc facts are this process's: in a
/// snapshot copy, the parent's.
pub fn process_id() -> libc::pid_t {
    match WRITES_FOR.load(Ordering::Relaxed) {
        0 => getpid(),
        pid => pid,
    }
}

/// In a snapshot copy: write as process `pid`.
pub fn write_for(pid: libc::pid_t) {
    WRITES_FOR.store(pid, Ordering::Relaxed);
}

/// `/proc/<the process written for>/<name>`.
pub fn proc_path(name: &str) -> String {
    match WRITES_FOR.load(Ordering::Relaxed) {
        0 => format!("/proc/self/{name}"),
        pid => format!("/proc/{pid}/{name}"),
    }
}

/// # Safety
/// As the system call `n` with these arguments.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn syscall6(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the `syscall` instruction with the kernel's register
    // convention; the call's own effects are the caller's contract.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        )
    };
    ret
}

/// # Safety
/// As the system call `n` with these arguments.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub unsafe fn syscall6(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    core::arch::asm!(
        "svc 0",
        in("x8") n,
        inlateout("x0") a[0] as isize => ret,
        in("x1") a[1],
        in("x2") a[2],
        in("x3") a[3],
        in("x4") a[4],
        in("x5") a[5],
        options(nostack),
    );
    ret
}

macro_rules! sys {
    ($n:expr) => { $crate::sys::raw::sys!($n,) };
    ($n:expr, $($a:expr),*) => {{
        let mut args = [0usize; 6];
        let given: &[usize] = &[$($a as usize),*];
        args[..given.len()].copy_from_slice(&given);
        // SAFETY: each caller passes the arguments its system call takes.
        unsafe { $crate::sys::raw::syscall6($n, args) }
    }};
}
pub(crate) use sys;

pub fn getpid() -> libc::pid_t {
    sys!(libc::SYS_getpid) as libc::pid_t
}

/// The calling thread's id.
pub fn gettid() -> libc::pid_t {
    sys!(libc::SYS_gettid) as libc::pid_t
}

/// Copies `buf.len()` bytes of this process's memory at `at` into `buf`
/// (`process_vm_readv` on itself): memory that is not mapped, or not
/// readable, fails (false) where a load would fault. A system call: for
/// reads that are not on a hot path, or done once per page.
pub fn read_own_memory(at: usize, buf: &mut [u8]) -> bool {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: at as *mut c_void,
        iov_len: buf.len(),
    };
    let n = sys!(
        libc::SYS_process_vm_readv,
        getpid(),
        &local as *const libc::iovec,
        1,
        &remote as *const libc::iovec,
        1,
        0
    );
    n == buf.len() as isize
}

/// `bytes` of fresh zeroed memory (an anonymous private mapping), which no
/// interposed `mmap` sees; None if the kernel has none.
pub fn map_anonymous(bytes: usize) -> Option<*mut c_void> {
    map_with(bytes, libc::MAP_PRIVATE).ok()
}

/// An anonymous readable and writable mapping of `bytes`, with `flags`
/// (`MAP_PRIVATE` or `MAP_SHARED`, and `MAP_NORESERVE`, `MAP_STACK`...): its
/// address, or the error.
pub fn map_with(bytes: usize, flags: c_int) -> Result<*mut c_void, i32> {
    let p = sys!(
        libc::SYS_mmap,
        0usize,
        bytes,
        libc::PROT_READ | libc::PROT_WRITE,
        flags | libc::MAP_ANONYMOUS,
        -1i32,
        0usize
    );
    // The kernel's errors are -4095..-1; any other value is an address.
    match p {
        -4095..=-1 => Err(-p as i32),
        p => Ok(p as *mut c_void),
    }
}

/// Makes `bytes` at `p` (page-aligned, in a mapping of the caller's) a
/// guard: any access faults.
pub fn guard(p: *mut c_void, bytes: usize) {
    sys!(libc::SYS_mprotect, p, bytes, libc::PROT_NONE);
}

/// Sets the protection of the `bytes` at page-aligned `at`; true if done.
pub fn protect(at: usize, bytes: usize, prot: c_int) -> bool {
    sys!(libc::SYS_mprotect, at, bytes, prot) == 0
}

/// Advises the kernel never to back `bytes` at `p` (page-aligned) with
/// transparent huge pages; best effort (a kernel without them says EINVAL).
pub fn no_huge_pages(p: usize, bytes: usize) {
    sys!(libc::SYS_madvise, p, bytes, libc::MADV_NOHUGEPAGE);
}

/// Gives back a mapping `map_anonymous` or `map_with` made.
///
/// # Safety
/// `p` and `bytes` are one such mapping (or a whole part of one), and
/// nothing refers to the memory any more.
pub unsafe fn unmap(p: *mut c_void, bytes: usize) {
    sys!(libc::SYS_munmap, p, bytes);
}

/// Opens `path` read-only (close-on-exec).
pub fn open_read(path: &CStr) -> isize {
    sys!(
        libc::SYS_openat,
        libc::AT_FDCWD,
        path.as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC
    )
}

pub fn read(fd: c_int, buf: &mut [u8]) -> isize {
    sys!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len())
}

/// Closes a descriptor of the library's own; an error is a write that
/// failed late (a full disk on NFS).
/// Whether `fd` takes a write now without blocking (`poll`, no wait): a
/// pipe with room for a line (`PIPE_BUF`, more than a line), a file, a
/// terminal. Never blocks; false when it cannot tell.
pub fn writable_now(fd: c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ready = sys!(libc::SYS_poll, &mut pfd as *mut libc::pollfd, 1, 0);
    ready == 1 && pfd.revents & libc::POLLOUT != 0
}

pub fn close(fd: c_int) -> Result<(), i32> {
    match sys!(libc::SYS_close, fd) {
        0 => Ok(()),
        e => Err(-e as i32),
    }
}

/// Reads `path` a bufferful at a time, handing each piece read to `f` until
/// it returns an answer; None if the file cannot be opened or ends first.
pub fn scan_file<T>(
    path: &CStr,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let fd = open_read(path);
    if fd < 0 {
        return None;
    }
    let found = loop {
        let n = read(fd as c_int, buf);
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n <= 0 {
            break None;
        }
        if let Some(found) = buf.get(..n as usize).and_then(&mut f) {
            break Some(found);
        }
    };
    let _ = close(fd as c_int);
    found
}

/// The size of System V shared memory segment `id` (`IPC_STAT`); 0 if it
/// cannot be read.
pub fn shm_size(id: c_int) -> usize {
    // SAFETY: all-zero is a valid shmid_ds.
    let mut ds: libc::shmid_ds = unsafe { core::mem::zeroed() };
    let rc = sys!(
        libc::SYS_shmctl,
        id,
        libc::IPC_STAT,
        &mut ds as *mut libc::shmid_ds
    );
    if rc < 0 {
        0
    } else {
        ds.shm_segsz
    }
}

/// Reads the start of a small file (a /proc one) into `buf`; the bytes read.
pub fn read_file<'a>(path: &CStr, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    let fd = open_read(path);
    if fd < 0 {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        let n = read(fd as c_int, &mut buf[len..]);
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    let _ = close(fd as c_int);
    Some(&buf[..len])
}

/// Lets another thread run (`sched_yield`). Out of line: spin loops call it
/// only once they have waited, and stay small.
#[inline(never)]
pub fn yield_now() {
    sys!(libc::SYS_sched_yield);
}

/// Waits while `*word == seen`, at most `ms` milliseconds (a word of this
/// process only).
pub fn futex_wait(word: *const u32, seen: u32, ms: u64) {
    futex(word, libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, seen, ms);
}

/// As `futex_wait`, on a word in memory shared with another process.
pub fn futex_wait_shared(word: *const u32, seen: u32, ms: u64) {
    futex(word, libc::FUTEX_WAIT, seen, ms);
}

/// Wakes the waiters on a word in memory shared with another process.
pub fn futex_wake_shared(word: *const u32) {
    sys!(libc::SYS_futex, word, libc::FUTEX_WAKE, i32::MAX);
}

fn futex(word: *const u32, op: c_int, seen: u32, ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    sys!(
        libc::SYS_futex,
        word,
        op,
        seen,
        &ts as *const libc::timespec
    );
}

/// A kernel signal set (the kernel's is 8 bytes, glibc's 128).
pub fn sigset(signals: &[c_int]) -> u64 {
    signals
        .iter()
        .filter(|&&s| (1..=64).contains(&s))
        .fold(0, |set, &s| set | 1 << (s - 1))
}

pub fn set_mask(set: u64) {
    sys!(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        &set as *const u64,
        core::ptr::null::<u64>(),
        8
    );
}

/// Takes a pending signal of `set`, waiting at most `ms` milliseconds.
pub fn sigtimedwait(set: u64, ms: u64) -> Option<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain data.
    let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    let sig = sys!(
        libc::SYS_rt_sigtimedwait,
        &set as *const u64,
        &mut info as *mut libc::siginfo_t,
        &ts as *const libc::timespec,
        8
    );
    (sig > 0).then_some(info)
}

/// Sends `sig` to thread `tid` of this process.
pub fn tgkill(tid: libc::pid_t, sig: c_int) {
    sys!(libc::SYS_tgkill, getpid(), tid, sig);
}

/// Queues `info` as signal `sig` to the process (any thread that takes it).
pub fn sigqueue(sig: c_int, info: &libc::siginfo_t) {
    sys!(
        libc::SYS_rt_sigqueueinfo,
        getpid(),
        sig,
        info as *const libc::siginfo_t
    );
}

/// Ends the calling thread (only it: `exit`, not `exit_group`).
pub fn exit_thread() -> ! {
    loop {
        sys!(libc::SYS_exit, 0);
    }
}

/// Ends the process at once: no atexit handler, no stdio flush.
pub fn exit_process() -> ! {
    loop {
        sys!(libc::SYS_exit_group, 0);
    }
}

/// Sends `sig` to process `pid`.
pub fn kill(pid: libc::pid_t, sig: c_int) {
    sys!(libc::SYS_kill, pid, sig);
}

/// The calling process is killed when the thread that made it ends.
pub fn die_with_parent() {
    sys!(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL);
}

/// A copy of the process (`clone` without `CLONE_VM`) with no exit signal:
/// the program's `wait()` and `SIGCHLD` never see it (only `__WCLONE` and
/// `__WALL` waits do); it shares the descriptor table and filesystem
/// context, so its files are the process's. 0 in the copy, its pid in the
/// caller, or the error.
pub fn copy_process() -> Result<libc::pid_t, i32> {
    match sys!(
        libc::SYS_clone,
        libc::CLONE_FILES | libc::CLONE_FS,
        0,
        0,
        0,
        0
    ) {
        e if e < 0 => Err(-e as i32),
        pid => Ok(pid as libc::pid_t),
    }
}

/// `wait4` for a `copy_process` child, with `options` (`WNOHANG`...): its
/// pid once it has ended, 0 while it runs, or a negative error.
pub fn wait_copy(pid: libc::pid_t, status: &mut c_int, options: c_int) -> isize {
    sys!(
        libc::SYS_wait4,
        pid,
        status as *mut c_int,
        options | libc::__WCLONE,
        0
    )
}

/// Starts a thread glibc does not know, sharing everything but the stack
/// that ends at `top`, which only it uses: `entry` runs there with every
/// signal blocked (so no handler of the program's ever runs on it), and
/// never returns. The kernel writes its id to `tid` and clears it (waking
/// futex waiters) when it has exited.
#[cfg(target_arch = "x86_64")]
pub fn clone_thread(top: usize, tid: *mut i32, entry: extern "C" fn() -> !) -> Result<(), i32> {
    let flags = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID;
    // Every signal blocked across the clone: the thread starts with them
    // blocked.
    let rc: isize = crate::sys::signals::with_all_blocked(0, || {
        let rc: isize;
        // SAFETY: clone of a thread sharing everything but the stack, which
        // is the caller's to give. In the new thread, on that stack, `entry`
        // (which never returns) is called with the stack aligned as the ABI
        // wants; the parent only makes the system call.
        unsafe {
            core::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "call {entry}",
                "ud2",
                "2:",
                entry = in(reg) entry,
                inlateout("rax") libc::SYS_clone as isize => rc,
                in("rdi") flags as usize,
                in("rsi") top,
                in("rdx") tid,
                in("r10") tid,
                in("r8") 0usize,
                out("rcx") _,
                out("r11") _,
            );
        }
        rc
    });
    if rc > 0 {
        Ok(())
    } else {
        Err(-rc as i32)
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn clone_thread(_: usize, _: *mut i32, _: extern "C" fn() -> !) -> Result<(), i32> {
    Err(libc::ENOSYS)
}
