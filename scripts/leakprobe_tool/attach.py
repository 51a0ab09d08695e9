"""`leakprobe attach PID` and `detach PID`: load libleakprobe.so into a running
native process started without it, and undo it (docs/attach.md).

Attach stops one thread (PTRACE_SEIZE + PTRACE_INTERRUPT, never
PTRACE_O_EXITKILL; the others run on) to map the stub (injected mmap and
mprotect system calls, its registers and mask restored exactly, an interrupted
system call restarted as the kernel would) and to point the GOT entries of
malloc, free and their kin in the program's objects (not libc's, not the
loader's) at it, each with one aligned store made by that thread itself (the
stub's writer); then it runs again. The first thread that calls
one of them, at a call boundary where it holds no allocator or loader lock,
runs dlopen and `leakprobe_attach` on a private stack (attach_stub.S), while
the others run on: nobody waits for a stopped lock holder. If no thread
does within IDLE_WAIT (an idle process), a thread waiting in a system call
that neither the allocator nor the loader makes is borrowed to run the same
loading (`hijack`), and put back for the kernel to restart its call. The
library then rewrites the GOT entries itself. Detach is a tagged signal to the library's
collector thread, which restores every entry and ends.

While attached, the record the library publishes in the process (read through
/proc/PID/mem, docs/published.md) names the collector thread that takes the
dump signal; `dump` and `detach` read it there: no file of ours to squat.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable

from . import argtypes, dumpcmd, dumpfile, record

LIBRARY = dumpcmd.LIBRARY
DETACH_TAG = 0x44455441  # "DETA", src/collect/signal.rs DETACH_TAG

# scripts/leakprobe_tool/attach_stub.S, assembled: `common`, which expects its
# data page 0x400 bytes after its start.
COMMON = bytes.fromhex(
    "833df903000000753f5031c041ba01000000f0440fb115e503000058752a4989e2488b25"
    "100400004152415357565251415041515053e83b0000005b5841594158595a5e5f415b5c"
    "41ff2331c041ba01000000f0440fb115a4030000750fc7050004000001000000e8090000"
    "00b8220000000f05ebf753ff15a30300004889c38b0389057c030000488b3dc9030000be"
    "02100000ff156e0300004889059f0300004885c074334889c7488b35b0030000ff155a03"
    "00004885c0741e488b3d86030000488b3587030000ffd048890556030000b902000000eb"
    "12ff15390300004889054a030000b9040000008b05130300008903890d070300005bc3"
)
HIJACK, PARK_END = 0x4B, 0x74  # `hijack`, and the end of `park`'s syscall, in COMMON
# The stub's layout: entries (16 bytes each) from 0, `common` at 0xc00, the
# writer at 0xe00 (all in the first page, made read+execute), data from
# 0x1000, the stack after.
COMMON_AT = 0xC00
WRITER_AT = 0xE00
WRITER_TAIL = bytes.fromhex("488b064885c0740d488b56084889104883c610ebebb8270000000f05")
DATA = 0x1000
MAX_ENTRIES = COMMON_AT // 16
STATE, ERRNO_SAVED, P_DLOPEN, P_DLSYM, P_DLERROR, P_ERRNO = 0x0, 0x4, 0x8, 0x10, 0x18, 0x20
RESULT, ERROR, STACK_TOP, HANDLE, ARG0, ARG1, PATH, FNAME, HIJACKED = 0x28, 0x30, 0x38, 0x40, 0x48, 0x50, 0x58, 0x60, 0x68
STUBS_AT, NAMES_AT, FNAME_AT, PATH_AT, SETTINGS_AT, ORIGINALS_AT = 0x100, 0x120, 0x200, 0x300, 0x700, 0xC00
WRITES_AT = 0x1200  # the writer's (address, value) pairs
STACK = 1 << 20
SIZE = DATA + 0x2000 + STACK
ARMED, CLAIMED, DONE, CANCELLED, FAILED = 0, 1, 2, 3, 4
LOAD_TIMEOUT = 30.0  # seconds dlopen and leakprobe_attach may take once claimed
IDLE_WAIT = 0.15  # seconds without a call through the stub before loading on an idle thread
HELD_OFF = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}  # while a thread is ours
# src/hook/attach.rs STUBBED: called from the program's code, at a call
# boundary, these hold no allocator lock (jemalloc's API: named, redis).
STUBBED = [
    *(b"malloc", b"calloc", b"realloc", b"free", b"posix_memalign", b"aligned_alloc"),
    *(b"mallocx", b"rallocx", b"dallocx", b"sdallocx", b"_Znwm", b"_ZdlPv", b"_ZdlPvm"),
]
HOOKED = set(STUBBED)

PTRACE_CONT, PTRACE_DETACH, PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_SYSCALL = 7, 17, 12, 13, 24
PTRACE_GETREGSET, PTRACE_SETREGSET, NT_X86_XSTATE, XSTATE_MAX = 0x4204, 0x4205, 0x202, 1 << 14
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_GETSIGMASK, PTRACE_SETSIGMASK = 0x4206, 0x4207, 0x420A, 0x420B
PTRACE_O_TRACESYSGOOD = 1
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
SYS_MMAP, SYS_MPROTECT, SYS_GETPID = 9, 10, 39
EINTR, ERESTARTNOHAND = 4, 514
SYS = {
    **{"read": 0, "poll": 7, "select": 23, "pause": 34, "nanosleep": 35, "accept": 43, "recvfrom": 45},
    **{"recvmsg": 47, "wait4": 61, "semop": 65, "rt_sigtimedwait": 128, "rt_sigsuspend": 130},
    **{"semtimedop": 220, "clock_nanosleep": 230, "epoll_wait": 232, "waitid": 247, "pselect6": 270},
    **{"ppoll": 271, "epoll_pwait": 281, "accept4": 288, "recvmmsg": 299, "epoll_pwait2": 441},
}
NAMES = {nr: name for name, nr in SYS.items()}
# Waits that neither glibc's malloc nor ld.so ever makes: a thread blocked in
# one holds none of their locks (never futex: malloc's arena lock is one).
# Reads and receives only on a socket, a pipe or an eventfd-like descriptor.
IDLE = {SYS[n] for n in SYS if n not in ("semop", "semtimedop", "rt_sigsuspend", "recvmmsg")}
FD_CALLS = {SYS[n] for n in ("read", "accept", "accept4", "recvfrom", "recvmsg")}
# Calls that a ptrace stop makes fail with EINTR where a signal without a
# handler would not (signal(7): epoll_wait, sigtimedwait, semop, sockets with
# a timeout): given -ERESTARTNOHAND when put back, so that the kernel restarts
# them (with their whole timeout again), or fails them with EINTR if a
# signal's handler runs, as without us.
EINTR_RESTART = {SYS[n] for n in SYS if n.startswith(("epoll_", "rt_sigtimedwait", "sem", "accept", "recv", "read"))}
REGS = [
    *("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi"),
    *("orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs"),
]


class Refused(dumpcmd.Refused):
    """Why the process is not attached: one line; the process is as it was."""


class Regs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in REGS]

    def copy(self) -> Regs:
        r = Regs()
        ctypes.pointer(r)[0] = self
        return r


libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def ptrace(req: int, tid: int, addr: int | None = 0, data: int | ctypes._Pointer | None = 0) -> None:
    if libc.ptrace(req, tid, addr, data) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({req:#x}, {tid}): {os.strerror(err)}")


# --- the process, read before anything is stopped ---------------------------


def status(pid: int) -> dict[str, str]:
    out = {}
    for line in dumpcmd.proc(pid, "status").decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def maps(pid: int) -> list[tuple[int, int, str, int, str]]:
    out = []
    for line in dumpcmd.proc(pid, "maps").decode(errors="surrogateescape").splitlines():
        f = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        out.append((lo, hi, f[1], int(f[2], 16), f[5] if len(f) == 6 else ""))
    return out


class Memory:
    """The process's memory through /proc/PID/mem (reads need no stop; writes
    are made while every thread is stopped)."""

    def __init__(self, pid: int) -> None:
        try:
            self.fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            raise Refused(f"cannot open /proc/{pid}/mem: no permission to trace process {pid}") from None

    def read(self, at: int, n: int) -> bytes:
        data = os.pread(self.fd, n, at)
        if len(data) != n:
            raise OSError(f"short read at {at:#x}")
        return data

    def word(self, at: int) -> int:
        return struct.unpack("<Q", self.read(at, 8))[0]

    def write(self, at: int, data: bytes) -> None:
        if os.pwrite(self.fd, data, at) != len(data):
            raise OSError(f"short write at {at:#x}")

    def cstr(self, at: int, cap: int = 4096) -> bytes:
        data = b""
        while len(data) < cap:
            chunk = self.read(at + len(data), 64)
            if b"\0" in chunk:
                return data + chunk[: chunk.index(b"\0")]
            data += chunk
        return data


class Object:
    """A loaded ELF object, read from the process's memory: its dynamic
    section (pointers relocated in place by glibc's loader), symbols and
    relocations."""

    def __init__(self, mem: Memory, path: str, start: int) -> None:
        self.mem, self.path = mem, path
        head = mem.read(start, 64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            raise ValueError("not a 64-bit ELF object")
        phoff, phentsize, phnum = struct.unpack_from("<Q", head, 32)[0], *struct.unpack_from("<HH", head, 54)
        phdrs = [struct.unpack_from("<IIQQQQQQ", mem.read(start + phoff + i * phentsize, 56)) for i in range(phnum)]
        loads = [p for p in phdrs if p[0] == 1]
        first = min(loads, key=lambda p: p[3])
        self.base = start - (first[3] & ~0xFFF)
        self.interp = any(p[0] == 3 for p in phdrs)
        # Pages the loader made read-only after relocation (start and end
        # rounded down, as it does).
        self.relro = [((self.base + p[3]) & ~0xFFF, (self.base + p[3] + p[6]) & ~0xFFF) for p in phdrs if p[0] == 0x6474E552]
        self.dyn: dict[int, int] = {}
        for p in phdrs:
            if p[0] == 2:
                at = self.base + p[3]
                while True:
                    tag, val = struct.unpack("<qQ", mem.read(at, 16))
                    if tag == 0:
                        break
                    self.dyn.setdefault(tag, val)
                    at += 16

    def ptr(self, tag: int) -> int:
        v = self.dyn.get(tag, 0)
        return self.base + v if v and v < self.base else v

    def name(self, sym: int) -> bytes:
        st_name = struct.unpack("<I", self.mem.read(self.ptr(6) + 24 * sym, 4))[0]
        return self.mem.cstr(self.ptr(5) + st_name, 256)

    def read_only(self, at: int) -> bool:
        return any(lo <= at < hi for lo, hi in self.relro)

    def slots(self, names: set[bytes]) -> list[tuple[int, bytes]]:
        """(GOT address, name) of the JUMP_SLOT and GLOB_DAT entries for `names`."""
        out = []
        for table, size in ((23, 2), (7, 8)):
            at, n = self.ptr(table), self.dyn.get(size, 0)
            if not at or not n:
                continue
            data = self.mem.read(at, n)
            for off in range(0, n - n % 24, 24):
                r_offset, r_info = struct.unpack_from("<QQ", data, off)
                if r_info & 0xFFFFFFFF in (6, 7) and r_info >> 32:
                    name = self.name(r_info >> 32)
                    if name in names:
                        out.append((self.base + r_offset, name))
        return out

    def symbol(self, wanted: bytes) -> int:
        """The address of a defined, default-version symbol (GNU hash lookup)."""
        table = self.ptr(0x6FFFFEF5)
        if not table:
            return 0
        nbuckets, symoffset, bloom_size, _ = struct.unpack("<IIII", self.mem.read(table, 16))
        buckets = table + 16 + 8 * bloom_size
        chain = buckets + 4 * nbuckets
        h = 5381
        for c in wanted:
            h = (h * 33 + c) & 0xFFFFFFFF
        sym = struct.unpack("<I", self.mem.read(buckets + 4 * (h % nbuckets), 4))[0]
        if sym < symoffset:
            return 0
        versym = self.ptr(0x6FFFFFF0)
        while True:
            ch = struct.unpack("<I", self.mem.read(chain + 4 * (sym - symoffset), 4))[0]
            if (ch | 1) == (h | 1):
                entry = self.mem.read(self.ptr(6) + 24 * sym, 24)
                st_name, _info, _other, shndx, value = struct.unpack_from("<IBBHQ", entry)
                hidden = versym and struct.unpack("<H", self.mem.read(versym + 2 * sym, 2))[0] & 0x8000
                if shndx and not hidden and self.mem.cstr(self.ptr(5) + st_name, 256) == wanted:
                    return self.base + value
            if ch & 1:
                return 0
            sym += 1


def objects(pid: int, mem: Memory) -> list[Object]:
    out, seen = [], set()
    for lo, _hi, _perms, offset, path in maps(pid):
        if offset or not path.startswith("/") or path in seen:
            continue
        seen.add(path)
        try:
            out.append(Object(mem, path, lo))
        except (OSError, ValueError, struct.error):
            continue
    return out


# --- checks: each refusal is one line and touches nothing ------------------


def check(pid: int, library: str, jvm: bool = False) -> str:
    """Refused unless the process can be attached; the library's path as the
    process sees it."""
    st = status(pid)
    name = dumpcmd.process_name(pid)
    if st.get("State", "").startswith(("T", "t", "Z", "X")):
        raise Refused(f"process {pid} ({name}) is stopped or exiting ({st.get('State')})")
    if st.get("TracerPid", "0") != "0":
        raise Refused(f"process {pid} ({name}) is already traced by process {st['TracerPid']} (a debugger?)")
    uids = st.get("Uid", "").split()
    if os.geteuid() != 0 and uids and any(int(u) != os.geteuid() for u in uids):
        raise Refused(f"process {pid} ({name}) belongs to user {uids[0]}: attach as that user or as root")
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
    except (OSError, ValueError):
        scope = 0
    if jvm:
        scope = 0  # HotSpot's own door: no ptrace
    if scope == 3:
        raise Refused("Yama ptrace_scope is 3: no process may be traced until reboot")
    caps = capabilities()
    if scope == 2 and not caps & (1 << 19):
        raise Refused("Yama ptrace_scope is 2: only a process with CAP_SYS_PTRACE may trace; run as root")
    if scope == 1 and not caps & (1 << 19):
        raise Refused(
            "Yama ptrace_scope is 1: only a parent may trace its children; run as root "
            "(or with CAP_SYS_PTRACE), or set kernel.yama.ptrace_scope=0"
        )
    if os.uname().machine != "x86_64":
        raise Refused(f"attach is for x86_64 processes (this machine is {os.uname().machine})")
    if dumpcmd.library_mappings(pid):
        earlier = published(pid)
        if earlier is None or earlier.attached is not None or not earlier.detached:
            raise Refused(f"process {pid} ({name}) already has {LIBRARY} loaded (preloaded, or attached)")
    where = dumpfile.shown(library)
    if not os.path.isfile(library):
        raise Refused(f"no library at {where}: build it (make) or pass --library")
    seen = dumpcmd.seen_from(pid, library)
    try:
        ours, theirs = os.stat(library), os.stat(seen)
    except OSError:
        raise Refused(
            f"{where} is not reachable from process {pid}'s mount namespace (its root is /proc/{pid}/root): "
            "copy the library into it and pass --library with the path it has there"
        ) from None
    if seen == library and (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino):
        raise Refused(f"{where} is another file in process {pid}'s file system")
    return library


def capabilities() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


# --- stopping and injecting -------------------------------------------------


class Stopped:
    """Threads of the process seized and stopped (PTRACE_SEIZE and
    PTRACE_INTERRUPT: each in an interrupt stop, inside the kernel's signal
    delivery, with its registers as the interrupted system call left them);
    `resume` puts each back and lets it go.

    Putting back is left to the kernel's own restart logic: a thread that ran
    injected code is first brought into a second interrupt stop, where its
    first registers (and mask, and extended state) are put back, so that on
    the way out the kernel restarts the interrupted call, or delivers a signal
    that came meanwhile and makes the call fail with EINTR as it would have
    without us. A call that the stop itself made fail with EINTR (epoll_wait
    and the like, `EINTR_RESTART`) is given -ERESTARTNOHAND instead: the
    kernel then restarts it unless a handler runs."""

    def __init__(self, pid: int, tids: list[int] | None = None) -> None:
        """Every thread, or the first of `tids` that stops in an interrupt stop."""
        self.pid = pid
        self.threads: dict[int, int] = {}  # tid -> signal to deliver on detach
        self.first: dict[int, Regs] = {}  # registers at the first stop
        self.mask: dict[int, bytes] = {}  # the mask, once changed
        self.xstate: dict[int, bytes] = {}  # the extended state, once saved
        self.ran: set[int] = set()  # threads that ran injected code since
        self.running: set[int] = set()  # of those, running it now
        self.failed: list[str] = []  # what could not be put back
        try:
            while True:
                now = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
                tids_now = sorted(now - self.threads.keys()) if tids is None else [t for t in tids if t in now][:1]
                if not tids_now:
                    break
                # All asked first, then all waited for: the stops overlap.
                asked = []
                for tid in tids_now:
                    try:
                        ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD)
                        ptrace(PTRACE_INTERRUPT, tid)
                    except OSError:
                        continue  # gone meanwhile
                    asked.append(tid)
                for tid in asked:
                    self.threads[tid] = self.wait_stop(tid)
                    if not self.threads[tid]:
                        self.first[tid] = self.regs(tid)
                if tids is not None:
                    break
        except BaseException:
            self.resume()
            raise
        if not self.threads:
            raise Refused(f"process {pid} has no thread that could be stopped")

    def wait_stop(self, tid: int) -> int:
        """Waits until `tid` stops; the signal it stopped for, to deliver later."""
        _, st = os.waitpid(tid, WALL)
        if not os.WIFSTOPPED(st):
            return 0
        if st >> 16 == PTRACE_EVENT_STOP:
            return 0
        return os.WSTOPSIG(st)  # a signal-delivery-stop: the signal is passed on

    def regs(self, tid: int) -> Regs:
        r = Regs()
        ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(r))
        return r

    def set_regs(self, tid: int, r: Regs) -> None:
        ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(r))

    def block_all(self, tid: int) -> None:
        """Every signal blocked on `tid` while it runs our code (a signal that
        comes meanwhile waits, and reaches the interrupted call when it is
        put back). Never on a thread whose mask a system call swapped
        (`swapped_mask`)."""
        if tid in self.mask:
            return
        mask = ctypes.c_ulonglong()
        ptrace(PTRACE_GETSIGMASK, tid, 8, ctypes.addressof(mask))
        self.mask[tid] = bytes(mask)
        ptrace(PTRACE_SETSIGMASK, tid, 8, ctypes.addressof(ctypes.c_ulonglong(~0 & (2**64 - 1))))

    def save_xstate(self, tid: int) -> None:
        """The x87/SSE/AVX state (the code we run uses vector registers)."""
        buf = ctypes.create_string_buffer(XSTATE_MAX)
        iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), XSTATE_MAX)
        ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, ctypes.addressof(iov))
        self.xstate[tid] = buf.raw[: iov[1]]

    def syscall(self, tid: int, gadget: int, nr: int, *args: int, last: bool = False) -> int:
        """Runs system call `nr` on stopped thread `tid` (at `gadget`, a syscall
        instruction) with every signal blocked; put back by `put_back`. The
        `last` one ends in the interrupt stop `put_back` needs (one wake-up of
        the thread fewer: each costs a wait for a CPU on a busy machine)."""
        self.block_all(tid)
        r = self.first[tid].copy()
        # orig_rax -1: on the way out of this stop the kernel's restart logic
        # leaves these registers alone.
        r.rax, r.orig_rax, r.rip = nr, 2**64 - 1, gadget
        for reg, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(r, reg, value & (2**64 - 1))
        self.set_regs(tid, r)
        self.ran.add(tid)
        for step in range(2):  # entry, exit
            if step and last:
                self.interrupt(tid)  # the call's result is still in rax there
                break
            ptrace(PTRACE_SYSCALL, tid, 0, 0)
            while True:
                _, st = os.waitpid(tid, WALL)
                if not os.WIFSTOPPED(st):
                    raise Refused(f"thread {tid} ended during the attach")
                if os.WSTOPSIG(st) == signal.SIGTRAP | 0x80:
                    break
                if os.WSTOPSIG(st) in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL):
                    raise Refused(f"the injected code faulted in thread {tid} ({signal.Signals(os.WSTOPSIG(st)).name})")
                ptrace(PTRACE_SYSCALL, tid, 0, passed_on(st))  # another stop: not ours
        rax = self.regs(tid).rax
        return rax - 2**64 if rax >= 2**63 else rax

    def interrupt(self, tid: int) -> None:
        """Brings `tid` (stopped after injected code, or running ours) into an
        interrupt stop, where the kernel's restart logic will see the
        registers put back."""
        ptrace(PTRACE_INTERRUPT, tid)
        if tid not in self.running:
            ptrace(PTRACE_CONT, tid, 0, 0)
        self.running.discard(tid)
        self.ran.discard(tid)
        while True:
            _, st = os.waitpid(tid, WALL)
            if not os.WIFSTOPPED(st):
                raise Refused(f"thread {tid} ended during the attach")
            if st >> 16 == PTRACE_EVENT_STOP:
                return
            if os.WSTOPSIG(st) in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
                raise Refused(f"the injected code faulted in thread {tid} ({signal.Signals(os.WSTOPSIG(st)).name})")
            ptrace(PTRACE_CONT, tid, 0, passed_on(st))  # a syscall exit of ours, or a SIGSTOP: on to the interrupt

    def put_back(self, tid: int) -> None:
        """The thread's registers, extended state and mask as at its first
        stop, in an interrupt stop: the kernel then restarts its system call
        or makes it fail with EINTR for a signal's handler, as always. Each
        part is put back even if another fails (the first error is raised)."""
        errors: list[OSError] = []

        def step(action: Callable[[], None]) -> None:
            # Any failure, not only the kernel's: the other parts and the
            # other threads are put back all the same.
            try:
                action()
            except OSError as e:
                errors.append(e)
            except Exception as e:
                errors.append(OSError(0, f"{type(e).__name__}: {e}"))

        if tid in self.ran:
            self.ran.discard(tid)
            step(lambda: self.interrupt(tid))
        first = self.first.get(tid)
        if first is not None:
            r = first.copy()
            if r.orig_rax in EINTR_RESTART and r.rax == 2**64 - EINTR:
                r.rax = 2**64 - ERESTARTNOHAND
            step(lambda: self.set_regs(tid, r))
        if tid in self.xstate:
            data = self.xstate.pop(tid)
            buf = (ctypes.c_char * len(data)).from_buffer_copy(data)
            iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), len(data))
            step(lambda: ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, ctypes.addressof(iov)))
        if tid in self.mask:
            mask = ctypes.create_string_buffer(self.mask.pop(tid), 8)
            step(lambda: ptrace(PTRACE_SETSIGMASK, tid, 8, ctypes.addressof(mask)))
        if errors:
            raise errors[0]

    def release(self, tid: int) -> None:
        """Puts `tid` back and lets it go; a part that could not be put back
        is kept in `failed`."""
        try:
            self.put_back(tid)
        except Exception as e:  # every thread is let go, whatever failed
            self.failed.append(f"thread {tid} not put back exactly: {getattr(e, 'strerror', None) or e}")
        with contextlib.suppress(Exception):
            ptrace(PTRACE_DETACH, tid, 0, self.threads.pop(tid, 0))
        self.first.pop(tid, None)

    def resume(self) -> None:
        for tid in list(self.threads):
            self.release(tid)


def passed_on(st: int) -> int:
    """The signal to let through when a thread of ours is resumed from a
    stop that is not ours: that of a signal-delivery-stop (every signal is
    blocked on it while it runs our code, so only SIGSTOP, which cannot be:
    passed on, it starts the group stop it would have without us; dropped,
    the process would never stop), none from any other stop."""
    return os.WSTOPSIG(st) if st >> 16 == 0 and os.WSTOPSIG(st) != signal.SIGTRAP | 0x80 else 0


def alive_thread(tid: int) -> bool:
    """Not a zombie (a main thread that has called pthread_exit)."""
    try:
        with open(f"/proc/{tid}/task/{tid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def waiting_in(pid: int, tid: int) -> tuple[int, ...] | None:
    """The system call `tid` waits in and its six arguments (then its stack
    pointer and pc), from /proc/PID/task/TID/syscall; () if it is running,
    None if unreadable or not in a system call."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            text = f.read().split()
    except OSError:
        return None
    if text == ["running"]:
        return ()
    try:
        values = tuple(int(x, 0) for x in text)
    except ValueError:
        return None
    return values if values and values[0] >= 0 else None


def swapped_mask(mem: Memory, nr: int, args: tuple[int, ...]) -> bool:
    """A call that swaps in a signal mask of its own while it waits (the
    kernel puts the thread's back on the way out). PTRACE_SETSIGMASK ends
    the call's mask at once (PTRACE_GETSIGMASK shows the thread's): put back
    so, the thread would take a signal that the call's mask blocks and its
    own does not, and the call would fail with EINTR for it."""
    if nr == SYS["rt_sigsuspend"]:
        return True
    if nr == SYS["ppoll"]:
        return args[3] != 0
    if nr in (SYS["epoll_pwait"], SYS["epoll_pwait2"]):
        return args[4] != 0
    if nr == SYS["pselect6"] and args[5]:
        try:
            return mem.word(args[5]) != 0
        except OSError:
            return True
    return False


def arming_threads(pid: int, mem: Memory) -> list[int]:
    """Threads to stop for the arming, best first: the main thread, then one
    waiting in a system call (a waiting thread gets a CPU sooner for each
    injected call than one that has been running), then one running; never
    one in a call that swapped its mask."""
    ranked = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        if not alive_thread(tid):
            continue
        call = waiting_in(pid, tid)
        if call and swapped_mask(mem, call[0], call[1:7]):
            continue
        ranked.append((tid != pid, call == (), tid))
    return [tid for *_, tid in sorted(ranked)]


def idle_threads(pid: int, mem: Memory) -> list[tuple[int, str]]:
    """Threads waiting in a system call that neither the allocator nor the
    loader makes (`idle_call`): (tid, call), best first: a call the kernel
    restarts as it was (from where it was) before one it restarts with its
    whole timeout again, other threads before the main thread."""
    found = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        call = waiting_in(pid, tid)
        rank = idle_call(pid, mem, call[0], call[1:7]) if call else None
        if rank is not None:
            found.append((rank, tid == pid, tid, NAMES[call[0]]))
    return [(tid, name) for *_, tid, name in sorted(found)]


def idle_call(pid: int, mem: Memory, nr: int, args: tuple[int, ...]) -> int | None:
    """None unless `nr` (with `args`) is an idle wait (`IDLE`, without a mask
    of its own, reads on no regular file); else 0 if the kernel restarts it
    as it was, 1 if it will be restarted with its whole timeout again
    (`EINTR_RESTART`)."""
    if nr not in IDLE or swapped_mask(mem, nr, args):
        return None
    if nr in FD_CALLS:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{args[0]}")
        except OSError:
            return None
        # Not a userfaultfd: a thread that faulted inside malloc may be
        # waiting for this one to serve its fault.
        if not target.startswith(("socket:", "pipe:", "anon_inode:")) or "userfaultfd" in target:
            return None
        return int(target.startswith("socket:"))  # a socket may have a receive timeout
    return int(nr in EINTR_RESTART)


def hijack(
    pid: int, mem: Memory, base: int, restorer: int, meanwhile: Callable[[int], None] | None = None
) -> dict[str, object] | None:
    """Loads the library on a thread that waits in an idle system call: it is
    stopped, runs `hijack` (attach_stub.S: the same claim and loading as a
    call through the GOT) and is put back with the kernel restarting its
    call. None if no thread waits so; else the thread, its call, and how
    long it was held. `restorer` is libc's signal return (`signal_return`):
    none, no thread is borrowed. `meanwhile(tid)` runs while the thread is
    parked (the tests send it a signal there)."""
    if not restorer:
        return None
    for tid, name in idle_threads(pid, mem):
        t0 = time.monotonic()
        try:
            stopped = Stopped(pid, [tid])
        except Refused:
            continue
        try:
            if stopped.threads.get(tid) != 0 or tid not in stopped.first:
                continue  # stopped for a signal: leave it
            first = stopped.first[tid]
            args = (first.rdi, first.rsi, first.rdx, first.r10, first.r8, first.r9)
            if first.orig_rax >= 2**63 or idle_call(pid, mem, int(first.orig_rax), args) is None:
                continue  # it moved on meanwhile
            if in_handler(pid, mem, first.rsp, restorer):
                continue  # its wait may be in a handler that interrupted malloc
            name = NAMES[int(first.orig_rax)]
            mem.write(base + DATA + HIJACKED, struct.pack("<I", 0))  # set by `hijack` if it claims the stub
            stopped.block_all(tid)
            stopped.save_xstate(tid)
            r = first.copy()
            r.rip, r.rsp, r.orig_rax = base + COMMON_AT + HIJACK, (base + SIZE) & ~0xF, 2**64 - 1
            stopped.set_regs(tid, r)
            stopped.ran.add(tid)
            ptrace(PTRACE_CONT, tid, 0, 0)
            stopped.running.add(tid)
            park_wait(pid, tid, mem, base)
            if meanwhile is not None:
                meanwhile(tid)
            won = struct.unpack("<I", mem.read(base + DATA + HIJACKED, 4))[0] == 1
        finally:
            stopped.resume()
        if stopped.failed:
            raise Refused(f"process {pid}: {stopped.failed[0]} after loading the library on it")
        return {"tid": tid, "call": name, "ms": (time.monotonic() - t0) * 1000, "won": won}
    return None


RESTORE_RT = bytes.fromhex("48c7c00f0000000f05")  # glibc's __restore_rt: mov rax, 15; syscall


def signal_return(pid: int, mem: Memory, libc_path: str) -> int:
    """The address of glibc's `__restore_rt`, which every handler installed by
    its sigaction returns to (the first word of a signal frame); 0 if not
    found."""
    for lo, hi, perms, _off, path in maps(pid):
        if path == libc_path and "x" in perms:
            at = mem.read(lo, hi - lo).find(RESTORE_RT)
            if at >= 0:
                return lo + at
    return 0


def in_handler(pid: int, mem: Memory, rsp: int, restorer: int) -> bool:
    """A signal frame in the 64 KiB of the stack above `rsp` (a word holding
    `restorer`): the thread may wait inside a handler that interrupted the
    allocator or the loader, whose locks it would then hold itself."""
    at = rsp & ~7
    end = next((hi for lo, hi, *_ in maps(pid) if lo <= at < hi), at)
    try:
        data = mem.read(at, min(end - at, 1 << 16))
    except OSError:
        return True
    word = struct.pack("<Q", restorer)
    return any(data[i : i + 8] == word for i in range(0, len(data) - 7, 8))


def park_wait(pid: int, tid: int, mem: Memory, base: int) -> None:
    """Waits until the hijacked thread parks (after loading, or at once if a
    call through the GOT claimed the stub first)."""
    park = base + COMMON_AT + PARK_END
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        got, st = os.waitpid(tid, WALL | os.WNOHANG)
        if got and not os.WIFSTOPPED(st):
            raise Refused(f"thread {tid} ended while it loaded the library")
        if got:
            sig = os.WSTOPSIG(st)
            if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
                raise Refused(f"loading the library faulted in thread {tid} ({signal.Signals(sig).name})")
            ptrace(PTRACE_CONT, tid, 0, passed_on(st))  # a group stop (ours to hold; it rejoins it when let go), a SIGSTOP
            continue
        call = waiting_in(pid, tid)
        if call and call[0] == SYS["pause"] and call[-1] == park:
            return
        if time.monotonic() > deadline:
            raise Refused(f"thread {tid} of process {pid} has been loading the library for {LOAD_TIMEOUT:g} s")
        time.sleep(0.0005)


def find_gadget(pid: int, mem: Memory, libc_path: str) -> int:
    for lo, hi, perms, _off, path in maps(pid):
        if path == libc_path and "x" in perms:
            data = mem.read(lo, min(hi - lo, 1 << 20))
            at = data.find(b"\x0f\x05")
            if at >= 0:
                return lo + at
    raise Refused("no system call instruction found in the process's libc")


def entry(i: int, base: int) -> bytes:
    """`lea r11, [originals + 8 i]; jmp common`, padded to 16 bytes."""
    lea = base + DATA + ORIGINALS_AT + 8 * i - (base + 16 * i + 7)
    jmp = COMMON_AT - (16 * i + 12)
    return b"\x4c\x8d\x1d" + struct.pack("<i", lea) + b"\xe9" + struct.pack("<i", jmp) + b"\x90" * 4


# --- attach ----------------------------------------------------------------


def attach(pid: int, library: str, settings: dict[str, str], timeout: float) -> dict[str, object]:
    library = os.path.realpath(library)
    try:
        jvm = is_jvm(pid)
    except dumpcmd.Refused:
        jvm = False  # unreadable: `check` says why
    check(pid, library, jvm)
    if jvm:
        return attach_jvm(pid, library, settings, timeout)
    mem = Memory(pid)
    objs = objects(pid, mem)
    libc_obj = next((o for o in objs if os.path.basename(o.path).startswith("libc.so")), None)
    if libc_obj is None or not any("ld-linux" in o.path for o in objs):
        raise Refused(f"process {pid} is statically linked (no libc.so or loader mapped): nothing can be loaded")
    functions = {n: libc_obj.symbol(n) for n in (b"dlopen", b"dlsym", b"dlerror", b"__errno_location")}
    if not all(functions.values()):
        raise Refused(f"{libc_obj.path} does not export dlopen (glibc 2.34 or later is needed)")
    slots = []
    protected = set()  # RELRO pages holding an entry
    for o in objs:
        if o is libc_obj or "ld-linux" in o.path or os.path.basename(o.path) == LIBRARY:
            continue
        for got, name in o.slots(HOOKED):
            slots.append((got, name))
            if o.read_only(got):
                protected.add(got & ~0xFFF)
    if not slots:
        raise Refused(f"no object of process {pid} calls malloc or its kin through a GOT: no safe point to load at")
    slots = slots[:MAX_ENTRIES]
    gadget = find_gadget(pid, mem, libc_obj.path)
    restorer = signal_return(pid, mem, libc_obj.path)
    text = "".join(f"{k}={v}\n" for k, v in settings.items()).encode()
    path = library.encode()
    if len(path) >= SETTINGS_AT - PATH_AT or len(text) >= ORIGINALS_AT - SETTINGS_AT:
        raise Refused("library path or settings too long")

    # One thread stopped from here to resume(): measured. The others run on:
    # the entries are written by that thread itself, each with one store.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_OFF)
    candidates = arming_threads(pid, mem)
    t0 = time.monotonic()
    stopped, tid = stop_one(pid, mem, candidates)
    threads = len(stopped.threads)
    base = 0
    try:
        base = stopped.syscall(tid, gadget, SYS_MMAP, 0, SIZE, 3, 0x22, -1, 0)
        if base < 0:
            raise Refused(f"mmap in the process failed: {os.strerror(-base)}")
        originals = [mem.word(got) for got, _ in slots]
        lea = b"\x48\x8d\x35" + struct.pack("<i", DATA + WRITES_AT - (WRITER_AT + 7))
        code = b"".join(entry(i, base) for i in range(len(slots))).ljust(COMMON_AT, b"\x90") + COMMON
        code = code.ljust(WRITER_AT, b"\x90") + lea + WRITER_TAIL
        data = bytearray(0x2000)
        struct.pack_into(
            "<QQQQ", data, P_DLOPEN, *(functions[n] for n in (b"dlopen", b"dlsym", b"dlerror")), functions[b"__errno_location"]
        )
        struct.pack_into("<Q", data, STACK_TOP, (base + SIZE) & ~0xF)
        struct.pack_into(
            "<QQQQ", data, ARG0, base + DATA + SETTINGS_AT, base + DATA + STUBS_AT, base + DATA + PATH_AT, base + DATA + FNAME_AT
        )
        struct.pack_into("<QQQQ", data, STUBS_AT, base, len(slots), base + DATA + ORIGINALS_AT, base + DATA + NAMES_AT)
        data[NAMES_AT : NAMES_AT + len(slots)] = bytes(STUBBED.index(name) for _, name in slots)
        data[FNAME_AT : FNAME_AT + 17] = b"leakprobe_attach\0"
        data[PATH_AT : PATH_AT + len(path) + 1] = path + b"\0"
        data[SETTINGS_AT : SETTINGS_AT + len(text) + 1] = text + b"\0"
        for i, value in enumerate(originals):
            struct.pack_into("<Q", data, ORIGINALS_AT + 8 * i, value)
        for i, (got, _) in enumerate(slots):
            struct.pack_into("<QQ", data, WRITES_AT + 16 * i, got, base + 16 * i)
        # Nobody refers to the new mapping yet: written from here.
        mem.write(base, code)
        mem.write(base + DATA, bytes(data))
        rc = stopped.syscall(tid, gadget, SYS_MPROTECT, base, DATA, 5)
        if rc < 0:
            raise Refused(f"mprotect in the process failed: {os.strerror(-rc)}")
        opened = []
        try:
            for page in sorted(protected):
                if stopped.syscall(tid, gadget, SYS_MPROTECT, page, 0x1000, 3) < 0:
                    raise Refused(f"cannot make the GOT page at {page:#x} writable")
                opened.append(page)
            stopped.syscall(tid, base + WRITER_AT, SYS_GETPID, last=not opened)
        finally:
            for i, page in enumerate(opened):
                stopped.syscall(tid, gadget, SYS_MPROTECT, page, 0x1000, 1, last=i == len(opened) - 1)
    finally:
        stopped.resume()
        stop_ms = (time.monotonic() - t0) * 1000
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    if stopped.failed:
        cancel(pid, mem, base, slots)
        raise Refused(f"process {pid}: {stopped.failed[0]}; the stub disarmed")

    # Running again: wait for a thread to pass through the stub. Interrupted
    # (^C), the stub is disarmed unless a thread claimed it: a stub left armed
    # would load the library at the next call, after the user gave up.
    try:
        state, borrowed = wait_loaded(pid, mem, base, slots, restorer, timeout)
    except KeyboardInterrupt:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_OFF)
        try:
            # (Or cancelled already, by a borrowing the ^C ended.)
            if cancel(pid, mem, base, slots) or struct.unpack("<I", mem.read(base + DATA + STATE, 4))[0] == CANCELLED:
                raise Refused(f"interrupted: nothing loaded in process {pid}, every GOT entry put back") from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        raise Refused(
            f"interrupted while the library loaded in process {pid}: it completes the attach on its own "
            "(`leakprobe detach` undoes it)"
        ) from None
    if state == ARMED:
        raise Refused(
            f"no thread of process {pid} called malloc, free or their kin within {timeout:g} s: "
            "nothing loaded, every GOT entry put back (the stub's 1 MiB area stays mapped, unused)"
        )
    if state == FAILED:
        err = mem.word(base + DATA + ERROR)
        why = mem.cstr(err, 512).decode(errors="replace") if err else "unknown"
        cancel(pid, mem, base, slots, force=True)
        raise Refused(f"dlopen failed in process {pid}: {why!r}; every GOT entry put back")
    result = mem.word(base + DATA + RESULT)
    result = result - 2**64 if result >= 2**63 else result
    if result < 0:
        why = {-1: "it is preloaded", -2: "already attached", -3: "no collector thread"}.get(int(result), result)
        raise Refused(f"the library refused to attach ({why})")
    collector = record.host_thread(pid, int(result)) if record.own_pid(pid) != pid else result
    out: dict[str, object] = {"stop_ms": stop_ms, "collector": collector, "entries": len(slots), "threads": threads}
    out |= {"stub": base, "restorer": restorer}
    if borrowed is not None and borrowed["won"]:
        out["borrowed"] = borrowed
    return out


def wait_loaded(
    pid: int, mem: Memory, base: int, slots: list[tuple[int, bytes]], restorer: int, timeout: float
) -> tuple[int, dict[str, object] | None]:
    """Waits for a thread to pass through the stub; if none has after
    IDLE_WAIT, loads on one that waits in an idle system call. The stub's
    state at the end (DONE, FAILED, or ARMED if cancelled after `timeout`),
    and the borrowed thread, if any."""
    deadline = time.monotonic() + timeout
    borrowed = None
    look = time.monotonic() + IDLE_WAIT
    while True:
        state = struct.unpack("<I", mem.read(base + DATA + STATE, 4))[0]
        if state in (DONE, FAILED):
            break
        if state == ARMED and borrowed is None and time.monotonic() > look:
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_OFF)
            try:
                borrowed = hijack(pid, mem, base, restorer)
            except BaseException:
                with contextlib.suppress(OSError, Refused):
                    cancel(pid, mem, base, slots)  # unless the stub was claimed: then it loads
                raise
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            look = time.monotonic() + IDLE_WAIT
            continue
        late = time.monotonic() > deadline
        if late and state == ARMED and cancel(pid, mem, base, slots):
            break
        if late and time.monotonic() > deadline + LOAD_TIMEOUT:
            raise Refused(f"the library has been loading in process {pid} for {LOAD_TIMEOUT:g} s; not waiting")
        time.sleep(0.001)
    return state, borrowed


def stop_one(pid: int, mem: Memory, candidates: list[int]) -> tuple[Stopped, int]:
    """One thread stopped for the arming (the first of `candidates` that stops
    in an interrupt stop, outside a call that swapped its mask)."""
    for tid in candidates:
        try:
            stopped = Stopped(pid, [tid])
        except Refused:
            continue
        first = stopped.first.get(tid)
        if first is not None:
            args = (first.rdi, first.rsi, first.rdx, first.r10, first.r8, first.r9)
            if first.orig_rax >= 2**63 or not swapped_mask(mem, int(first.orig_rax), args):
                return stopped, tid
        stopped.resume()
    raise Refused(
        f"no thread of process {pid} could be stopped outside a wait with a signal mask of its own "
        "(sigsuspend, ppoll, pselect, epoll_pwait): try again"
    )


def cancel(pid: int, mem: Memory, base: int, slots: list[tuple[int, bytes]], force: bool = False) -> bool:
    """Stops the process, and if no thread has claimed the stub, disarms it and
    puts every GOT entry back. True if cancelled (or `force`d)."""
    stopped = Stopped(pid)
    try:
        state = struct.unpack("<I", mem.read(base + DATA + STATE, 4))[0]
        if state != ARMED and not force:
            return False
        if not force:
            mem.write(base + DATA + STATE, struct.pack("<I", CANCELLED))
        for i, (got, _) in enumerate(slots):
            if mem.word(got) == base + 16 * i:
                mem.write(got, mem.read(base + DATA + ORIGINALS_AT + 8 * i, 8))
        return True
    finally:
        stopped.resume()


# --- JVMs: HotSpot's attach mechanism, no ptrace -----------------------------

JVM_SIGNAL = signal.SIGRTMIN + 4  # HotSpot uses SIGUSR2 (suspend/resume) and SIGQUIT


def is_jvm(pid: int) -> bool:
    return any(os.path.basename(m[4]) == "libjvm.so" for m in maps(pid))


def attach_jvm(pid: int, library: str, settings: dict[str, str], timeout: float) -> dict[str, object]:
    """Loads the library as a JVMTI agent (`Agent_OnAttach`) the way `jcmd PID
    JVMTI.agent_load` does: the attach file and SIGQUIT start the VM's attach
    listener (only if the VM handles SIGQUIT: -Xrs would make it a kill), then
    a `load` command on its socket."""
    st = status(pid)
    nspid = st.get("NSpid", str(pid)).split()[-1]
    root = f"/proc/{pid}/root"
    sock_path = f"{root}/tmp/.java_pid{nspid}"
    t0 = time.monotonic()
    if not os.path.exists(sock_path):
        cmdline = dumpcmd.proc(pid, "cmdline").split(b"\0")
        caught = int(st.get("SigCgt", "0"), 16)
        if b"-Xrs" in cmdline or not caught & (1 << (signal.SIGQUIT - 1)):
            raise Refused(f"JVM {pid} does not handle SIGQUIT (-Xrs?): its attach mechanism cannot be started")
        if any(a.startswith(b"-XX:+DisableAttachMechanism") for a in cmdline):
            raise Refused(f"JVM {pid} runs with -XX:+DisableAttachMechanism")
        trigger = f"/proc/{pid}/cwd/.attach_pid{nspid}"
        try:
            fd = os.open(trigger, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError:
            trigger = f"{root}/tmp/.attach_pid{nspid}"
            fd = os.open(trigger, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            uid, gid = int(st["Uid"].split()[1]), int(st["Gid"].split()[1])
            if os.geteuid() == 0:
                os.fchown(fd, uid, gid)  # the VM takes only its own user's file
            os.close(fd)
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + timeout
            while not os.path.exists(sock_path):
                if time.monotonic() > deadline:
                    raise Refused(f"JVM {pid} did not start its attach listener within {timeout:g} s")
                time.sleep(0.01)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(trigger)
    sig = int(settings.get("LEAKPROBE_SIGNAL", JVM_SIGNAL))
    if sig in (signal.SIGUSR2, signal.SIGQUIT):
        raise Refused(f"HotSpot uses {dumpcmd.signal_name(sig)} itself: choose another --signal")
    options = ",".join(f"{k}={v}" for k, v in {**settings, "LEAKPROBE_SIGNAL": str(sig)}.items())
    if "," in library or any("," in v for v in settings.values()):
        raise Refused("a setting or the library path holds a comma, which the agent's options cannot carry")
    request = b"1\0load\0" + library.encode() + b"\0true\0" + options.encode() + b"\0"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout + LOAD_TIMEOUT)
        s.connect(sock_path)
        s.sendall(request)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    text = answer.decode(errors="replace")
    code = re.search(r"return code: (-?\d+)", text)
    if not text.startswith("0") or code is None or code.group(1) != "0":
        why = {"2": "it is preloaded", "3": "already attached", "4": "no collector thread"}.get(
            code.group(1) if code else "", text.strip().replace("\n", " ")[:200]
        )
        raise Refused(f"JVM {pid} did not load the agent: {why!r}")
    collector = named_thread(pid, "leakprobe")
    if collector is None:
        raise Refused(f"JVM {pid} loaded the agent, but its collector thread is not to be found")
    return {
        "stop_ms": 0.0,
        "collector": collector,
        "entries": 0,
        "threads": 0,
        "jvm": True,
        "signal": sig,
        "ms": (time.monotonic() - t0) * 1000,
    }


def named_thread(pid: int, name: str) -> int | None:
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == name:
                    return int(tid)
        except OSError:
            continue
    return None


# --- records, detach, the commands ------------------------------------------


def published(pid: int) -> record.Published | None:
    """What the library loaded in `pid` publishes about itself (its dump
    directory and signal, and the collector thread while attached:
    docs/published.md); None if it is not loaded or the record cannot be read."""
    mappings = dumpcmd.library_mappings(pid)
    if not mappings:
        return None
    try:
        return record.read(record.locate(pid, mappings, lambda path: dumpcmd.seen_from(pid, path)))
    except record.Unreadable:
        return None


def default_library() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    return os.path.join(here, "target", "release", LIBRARY)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # Not `common`: attach and detach read no dump.
    del common
    s = sub.add_parser("attach", help="load the library into a running process (docs/attach.md)")
    s.add_argument("pid", type=argtypes.pid)
    s.add_argument("--period", type=argtypes.size, metavar="BYTES", help="sample period (LEAKPROBE_SAMPLE)")
    s.add_argument("--dir", metavar="DIR", help="dump directory as the process sees it (/tmp)")
    s.add_argument("--signal", metavar="SIG", help="dump signal (USR2)")
    s.add_argument("--library", default=default_library(), help="the library to load")
    s.add_argument(
        "--timeout",
        type=argtypes.seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for a safe moment to load (5)",
    )
    s.set_defaults(run=run_attach)
    s = sub.add_parser("detach", help="undo an attach: GOT entries restored, the library's thread ended")
    s.add_argument("pid", type=argtypes.pid)
    s.add_argument("--timeout", type=argtypes.seconds, default=5.0, metavar="SECONDS", help="how long to wait for it to end (5)")
    s.set_defaults(run=run_detach)


def run_attach(args: argparse.Namespace) -> int:
    settings = {"LEAKPROBE_SAMPLE": str(args.period)} if args.period else {}
    sig = dumpcmd.DEFAULT_SIGNAL
    if args.signal:
        parsed = dumpcmd.parse_signal(args.signal.upper())
        if parsed is None:
            print(f"leakprobe: --signal {args.signal!r} is not a dump signal the library takes", file=sys.stderr)
            return 1
        sig = parsed
        settings["LEAKPROBE_SIGNAL"] = str(sig)
    directory = args.dir or dumpcmd.DEFAULT_DIR
    if not directory.startswith("/") or any(c in directory for c in "\n\0,"):
        print("leakprobe: --dir must be absolute (as the process sees it), without a newline or a comma", file=sys.stderr)
        return 1
    settings["LEAKPROBE_DIR"] = directory
    # Loaded before (attached, then detached): the settings of its first
    # attach stay, whatever these say.
    before = None
    with contextlib.suppress(dumpcmd.Refused, OSError):
        before = published(args.pid)
    try:
        done = attach(args.pid, args.library, settings, args.timeout)
    except (Refused, dumpcmd.Refused) as e:
        print(f"leakprobe: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"leakprobe: attach failed, process left as it was: {e.strerror or e}", file=sys.stderr)
        return 1
    how = (
        f"as a JVMTI agent, no thread stopped ({done['ms']:.0f} ms)"
        if done.get("jvm")
        else f"{done['threads']} {'thread' if done['threads'] == 1 else 'threads'} stopped {done['stop_ms']:.1f} ms"
    )
    period = f"{args.period or 524288} bytes"
    now = published(args.pid)
    if now is not None and now.refusal:
        # Said now rather than at the first dump (a directory it cannot use).
        print(f"leakprobe: process {args.pid} refuses every dump: {dumpfile.shown(now.refusal)}", file=sys.stderr)
    if before is not None:
        period = "as at the first attach"
        given = ["--period"] if args.period else []
        if now is not None:
            given += ["--dir"] if args.dir and os.fsencode(args.dir) != now.dir else []
            given += ["--signal"] if args.signal and sig != now.signal else []
            directory, done["signal"] = os.fsdecode(now.dir), now.signal
        if given:
            print(
                f"leakprobe: process {args.pid} was attached before: the settings of its first attach stay "
                f"({', '.join(given)} not taken)",
                file=sys.stderr,
            )
    borrowed = done.get("borrowed")
    if isinstance(borrowed, dict):
        # The process was idle: the library was loaded on a thread that
        # waited in a system call, held for this long (its call restarted).
        how += f", then thread {borrowed['tid']} (idle in {borrowed['call']}) held {borrowed['ms']:.1f} ms to load the library"
    print(
        f"attached to process {args.pid}: sample period {period}, dumps in {dumpfile.shown(directory)}, "
        f"signal {dumpcmd.signal_name(int(done.get('signal', sig)))} (to thread {done['collector']}); {how}"
    )
    return 0


def run_detach(args: argparse.Namespace) -> int:
    try:
        now = published(args.pid)
    except dumpcmd.Refused as e:  # no such process, or not ours to read
        print(f"leakprobe: {e}", file=sys.stderr)
        return 1
    if now is None or now.attached is None:
        print(f"leakprobe: process {args.pid} is not attached (its library publishes no collector thread)", file=sys.stderr)
        return 1
    tid = now.attached
    try:
        dumpcmd.tgsigqueue(args.pid, tid, now.signal, DETACH_TAG << 32)
    except Refused as e:
        print(f"leakprobe: {e}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    while os.path.exists(f"/proc/{args.pid}/task/{tid}"):
        if time.monotonic() > deadline:
            print(f"leakprobe: process {args.pid}'s collector thread did not end within {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(0.005)
    print(f"detached from process {args.pid}")
    return 0
