"""`leakprobe dump PID` and `dump --all NAME`: ask running processes for a dump
and wait for the one that answers *this* request.

A bare `kill -USR2` kills a process the library is not in, so the library must
be mapped before anything is sent, and the process is held by a pidfd from the
first look to the last re-send: every look at /proc/PID is confirmed by the
pidfd (the process it names has not exited, so the pid was still its), and a
signal sent through it reaches that process or none, whoever takes its pid
later. The request is what `sigqueue` sends (SI_QUEUE, carrying
0x4c45414b in the high half of the value and a random token in the low half):
the library treats such a queued signal from another process as a dump request
whatever the program did with the signal, and lists the tokens it answers in
the dump's `requests_answered` line, which is what the wait looks for. A dump
the library could not write is said in the process's log with the tokens it was
to answer (`dump not written (request ...)`), which ends the wait at once.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import re
import secrets
import select
import signal
import stat
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import argtypes, record
from .dumpfile import shown
from .profile import amount

MAGIC = 0x4C45414B  # "LEAK"
LIBRARY = "libleakprobe.so"
DEFAULT_DIR = "/tmp"  # src/config.rs DEFAULT_DIR
DEFAULT_SIGNAL = signal.SIGUSR2
HEADER_CAP = 1 << 20  # a dump's header is a few KiB; a file in /tmp may be anyone's
LOG_CAP = 1 << 20  # read of a log per look
POLL = 0.05
AT_SECURE = 23
SYS_PIDFD_SEND_SIGNAL = 424  # the same number on every architecture
SI_QUEUE = -1

# src/config.rs DUMP_SIGNALS: by name or number, these and the real-time ones.
NAMED = {
    "USR1": signal.SIGUSR1,
    "USR2": signal.SIGUSR2,
    "PROF": signal.SIGPROF,
    "VTALRM": signal.SIGVTALRM,
    "HUP": signal.SIGHUP,
    "URG": signal.SIGURG,
    "WINCH": signal.SIGWINCH,
    "PWR": signal.SIGPWR,
}
INT = re.compile(r"[+-]?[0-9]+")  # what Rust's str::parse::<i32> accepts
META = re.compile(r"# leakprobe ([a-z_]+): (.*)")
# src/collect/collector/snapshot.rs say_not_written
NOT_WRITTEN = re.compile(r"leakprobe: dump not written \(requests? ([0-9a-f ]+)\): (.*)")


class SigInfo(ctypes.Structure):
    """siginfo_t as sigqueue(3) fills it (64-bit: the union at offset 16)."""

    _fields_ = (
        ("signo", ctypes.c_int),
        ("errno", ctypes.c_int),
        ("code", ctypes.c_int),
        ("pad", ctypes.c_int),
        ("pid", ctypes.c_int),
        ("uid", ctypes.c_uint),
        ("value", ctypes.c_uint64),
        ("rest", ctypes.c_byte * 96),
    )


class Refused(Exception):
    """Why a process is not (or could not be) asked for a dump: one line."""


class Skipped(Refused):
    """Not a failure for --all: the library is not in it, or it has gone."""


@dataclass
class Request:
    pid: int
    name: str
    pidfd: int
    signal: int = DEFAULT_SIGNAL
    dir: str = DEFAULT_DIR
    token: int = 0
    notes: list[str] = field(default_factory=list)
    seen: set[tuple[str, int, int, int]] = field(default_factory=set)
    path: str | None = None
    facts: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    unreadable: str | None = None  # why the directory cannot be listed
    sent: int = 0
    resend: bool = False
    logs: dict[str, int] = field(default_factory=dict)  # log name -> bytes read
    thread: int = 0  # attached: the collector thread, the only one signalled
    place: record.Place | None = None  # where the library publishes what it uses
    unpublished: str | None = None  # why that could not be read (the environment was)
    own_pid: int = 0  # its pid in its own PID namespace (a container): its files' names

    def __post_init__(self) -> None:
        self.own_pid = self.own_pid or record.own_pid(self.pid)

    @property
    def log_pattern(self) -> re.Pattern[str]:
        return re.compile(rf"leakprobe\.{self.own_pid}(\.[0-9]+)?\.log")

    @property
    def who(self) -> str:
        return f"process {self.pid} ({self.name})"

    @property
    def gone(self) -> str:
        return f"{self.who} exited before its dump appeared in {shown(self.dir)}"

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"leakprobe\.{self.own_pid}\.[0-9]+\.heap")


def parse_signal(text: str) -> int | None:
    """The dump signal the library takes from LEAKPROBE_SIGNAL, or None where it
    falls back to SIGUSR2 (src/config.rs parse_signal, to the letter)."""
    name = text.removeprefix("SIG")
    if INT.fullmatch(name):
        sig = int(name)
        if not -(2**31) <= sig < 2**31:
            return None
    elif name.startswith(("RTMIN", "RTMAX")):
        off = name[5:]
        if off and not INT.fullmatch(off):
            return None
        base = signal.SIGRTMIN if name.startswith("RTMIN") else signal.SIGRTMAX
        sig = base + (int(off) if off else 0)
    elif name in NAMED:
        sig = NAMED[name]
    else:
        return None
    if sig not in NAMED.values() and not signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
        return None
    return sig


def signal_name(sig: int) -> str:
    for name, number in NAMED.items():
        if number == sig:
            return f"SIG{name}"
    return f"SIGRTMIN+{sig - signal.SIGRTMIN}" if sig >= signal.SIGRTMIN else f"signal {sig}"


def proc(pid: int, what: str) -> bytes:
    """/proc/PID/<what>; Refused with one line when it cannot be read."""
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise Skipped(f"no process {pid}") from None
    except PermissionError:
        raise Refused(
            f"cannot read /proc/{pid}/{what}: process {pid} belongs to another user (or is not dumpable); run as root"
        ) from None
    except OSError as e:
        raise Refused(f"cannot read /proc/{pid}/{what}: {e.strerror or e}") from None


def process_name(pid: int) -> str:
    try:
        name = proc(pid, "comm").decode(errors="replace").strip()
        return "".join(c if c.isprintable() else "?" for c in name)  # the process picks it
    except Refused:
        return "?"


def library_mappings(pid: int) -> list[record.Mapping]:
    found = []
    for line in proc(pid, "maps").decode(errors="surrogateescape").splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and os.path.basename(fields[5].removesuffix(" (deleted)")) == LIBRARY:
            start, _, end = fields[0].partition("-")
            found.append(record.Mapping(int(start, 16), int(end, 16), int(fields[2], 16), int(fields[4]), fields[5]))
    return found


def environment(pid: int) -> dict[str, str]:
    # An empty environ is also what a zombie or a kernel thread shows.
    env = {}
    for entry in proc(pid, "environ").split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key.startswith(b"LEAKPROBE_"):
            env[key.decode(errors="replace")] = value.decode(errors="replace")  # as Rust's to_string_lossy
    return env


def secure_execution(pid: int) -> bool:
    """AT_SECURE (set-uid and the like): the library then ignores LEAKPROBE_*."""
    auxv = proc(pid, "auxv")
    whole = len(auxv) - len(auxv) % struct.calcsize("@LL")
    return any(key == AT_SECURE and value for key, value in struct.iter_unpack("@LL", auxv[:whole]))


def hold(pid: int) -> int:
    """A pidfd of the process: it names that process and no other, whoever
    takes its pid once it has gone."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise Skipped(f"no process {pid}") from None
    except OSError as e:
        tgid = thread_group(pid)
        if tgid is not None and tgid != pid:
            raise Refused(f"{pid} is a thread of process {tgid}, not a process: give {tgid}") from None
        raise Refused(f"cannot hold process {pid} (pidfd_open): {e.strerror or e}") from None


def thread_group(pid: int) -> int | None:
    """The process a thread id belongs to (Tgid), if it can be read."""
    try:
        for line in proc(pid, "status").decode(errors="replace").splitlines():
            value = line.removeprefix("Tgid:").strip()
            if line.startswith("Tgid:") and value.isascii() and value.isdigit():
                return int(value)
    except Refused:
        pass
    return None


def exited(pidfd: int) -> bool:
    """The process has exited (a zombie, or reaped: its pid may be another's)."""
    poll = select.poll()
    poll.register(pidfd, select.POLLIN)
    return bool(poll.poll(0))


def seen_from(pid: int, path: str) -> str:
    """`path` as the process sees it, reachable from here: through /proc/PID/root
    when the process has another root or mount namespace (chroot, container)."""
    try:
        same_root = os.readlink(f"/proc/{pid}/root") == "/"
        same_ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return path
    return path if same_root and same_ns else f"/proc/{pid}/root{path}"


def prepare(pid: int) -> Request:
    """Holds the process, checks it and finds its dump signal and directory;
    Refused if it must not or cannot be asked."""
    pidfd = hold(pid)
    try:
        req = look(pid, pidfd)
    except Refused:
        gone = exited(pidfd)
        os.close(pidfd)
        if gone:  # what was read may be another process's
            raise Skipped(f"process {pid} exited") from None
        raise
    except BaseException:
        os.close(pidfd)
        raise
    # Everything above was read from /proc/PID: it was this process's only if
    # the process is still there now.
    if exited(pidfd):
        os.close(pidfd)
        raise Skipped(f"process {pid} ({req.name}) exited")
    return req


def look(pid: int, pidfd: int) -> Request:
    name = process_name(pid)
    mappings = library_mappings(pid)
    if not mappings:
        raise Skipped(
            f"process {pid} ({name}) does not have {LIBRARY} loaded (not in /proc/{pid}/maps); "
            "not signalled, as the dump signal would kill it"
        )
    req = Request(pid, name, pidfd)
    try:
        req.place = record.locate(pid, mappings, lambda path: seen_from(pid, path))
        published = record.read(req.place)
        if published.signal and parse_signal(str(published.signal)) is None:
            raise record.Unreadable(f"a record naming signal {published.signal}, not a dump signal")
    except record.Unreadable as e:
        req.place, published = None, None
        req.unpublished = str(e)
    if published is not None:
        if published.refusal is not None:
            raise Refused(refusal(req, published.refusal))
        if not published.signal:
            raise Refused(f"{req.who} takes no dump signal (its library could not handle one: see its stderr); not signalled")
        req.signal = published.signal
        # Attached (docs/attach.md): the signal goes to the collector thread alone.
        req.thread = published.attached or 0
        raw = os.fsdecode(published.dir)
    else:
        # What the library took from its environment, if it is still there.
        env = {} if secure_execution(pid) else environment(pid)
        raw = env.get("LEAKPROBE_SIGNAL")
        if raw is not None:
            sig = parse_signal(raw.strip())
            if sig is None:
                req.notes.append(f"LEAKPROBE_SIGNAL={raw!r} is not valid: the library uses SIGUSR2")
            req.signal = sig or DEFAULT_SIGNAL
        raw = env.get("LEAKPROBE_DIR") or DEFAULT_DIR
    if raw.startswith("/"):
        req.dir = seen_from(pid, raw)
    else:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = f"/proc/{pid}/cwd"
        req.dir = seen_from(pid, os.path.join(cwd, raw)) if cwd.startswith("/") else os.path.join(cwd, raw)
        req.notes.append(
            f"LEAKPROBE_DIR={raw!r} is relative: looking in {shown(req.dir)} (its current directory; "
            "if it has changed directory since it started, the dumps are elsewhere)"
        )
    return req


def refusal(req: Request, reason: str) -> str:
    return f"{req.who} refuses every dump: {shown(reason)}"


def refused_since(req: Request) -> None:
    """A refusal the library has published since the request was sent ends
    the wait with its reason."""
    if req.place is None:
        return
    try:
        published = record.read(req.place)
    except record.Unreadable:
        return
    # Read from /proc/PID/mem: the process's only if it has not exited since.
    if published.refusal is not None and not exited(req.pidfd):
        req.failure = refusal(req, published.refusal)


def send(req: Request) -> None:
    """Sends the request (again, if it may have been lost), Refused if it cannot."""
    if req.token == 0:
        while req.token == 0:
            req.token = secrets.randbits(32)
        # Files already there cannot answer a request not yet sent.
        scan(req, record_only=True)
    # The library is checked again before each send: the process may have
    # executed another program since.
    try:
        mapped = bool(library_mappings(req.pid))
    except Refused:
        mapped = False
    if exited(req.pidfd):
        raise Refused(req.gone)
    if not mapped:
        raise Refused(f"{req.who} no longer has {LIBRARY} loaded (it executed another program?); not signalled")
    if req.thread:
        # Attached (docs/attach.md): to the collector thread alone.
        tgsigqueue(req.pid, req.thread, req.signal, (MAGIC << 32) | req.token)
        req.sent += 1
        req.resend = False
        return
    # What sigqueue(3) sends, through the pidfd.
    info = SigInfo(signo=req.signal, code=SI_QUEUE, pid=os.getpid(), uid=os.getuid(), value=(MAGIC << 32) | req.token)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    args = (SYS_PIDFD_SEND_SIGNAL, req.pidfd, req.signal, ctypes.addressof(info), 0)
    if libc.syscall(*(ctypes.c_long(a) for a in args)) != 0:
        err = ctypes.get_errno()
        if err == errno.ESRCH:
            raise Refused(req.gone)
        raise Refused(f"cannot signal {req.who}: {os.strerror(err)}")
    req.sent += 1
    req.resend = False


def header(path: str) -> dict[str, list[str]] | None:
    """A dump's `# leakprobe` facts (each key's values), reading no further than
    its first row; None if it is not a regular file with a heap profile header."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        # Up to the first row, or the blank line before the map when there is none.
        while len(data) < HEADER_CAP and not re.search(rb"\n[^#]", data):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    lines = data.decode(errors="replace").split("\n")
    if not lines[0].startswith("heap profile:"):
        return None
    facts: dict[str, list[str]] = {}
    for line in lines[1:]:
        m = META.fullmatch(line)
        if not line.startswith("#"):
            break
        if m:
            facts.setdefault(m.group(1), []).append(m.group(2))
    return facts


def scan(req: Request, record_only: bool = False) -> None:
    """Looks at new or changed dumps of the process for the one answering it."""
    try:
        entries = list(os.scandir(req.dir))
    except OSError as e:
        req.unreadable = e.strerror or str(e)  # said on timeout
        return
    req.unreadable = None
    want = f"{req.token:08x}"
    for entry in entries:
        if req.log_pattern.fullmatch(entry.name):
            read_log(req, entry, record_only)
            continue
        if not req.pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        key = (entry.name, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in req.seen:
            continue
        req.seen.add(key)
        if record_only:
            continue
        facts = header(entry.path)
        if facts is None or facts.get("pid") != [str(req.own_pid)]:
            continue
        if any(want in line.split() for line in facts.get("requests_answered", [])):
            req.path = entry.path
            req.facts = {k: v[-1] for k, v in facts.items()}
            return
        # A standard signal sent while another is pending is merged into it,
        # value and all: a dump without our token may mean ours was lost.
        req.resend = True


def read_log(req: Request, entry: os.DirEntry[str], record_only: bool) -> None:
    """Reads the complete lines added to one of the process's logs; a line
    saying the dump for this request was not written is the request's failure
    (the token is random and new: no other line can name it)."""
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size if stat.S_ISREG(os.fstat(fd).st_mode) else 0
        start = req.logs.get(entry.name, 0)
        if start > size:  # another file by that name now
            start = 0
        if record_only:
            req.logs[entry.name] = size
            return
        data = os.pread(fd, min(size - start, LOG_CAP), start)
    except OSError:
        return
    finally:
        os.close(fd)
    whole = data[: data.rfind(b"\n") + 1]
    req.logs[entry.name] = start + len(whole)
    want = f"{req.token:08x}"
    for line in whole.decode(errors="replace").splitlines():
        m = NOT_WRITTEN.fullmatch(line)
        if m and want in m.group(1).split() and req.failure is None:
            why = "".join(c if c.isprintable() else "?" for c in m.group(2))
            req.failure = f"{req.who} could not write the dump for request {want}: {why}"


def wait(requests: list[Request], timeout: float, stopped: Callable[[], bool] = lambda: False) -> None:
    """Waits for each request's answer (or failure, or `stopped()`); then lets
    the processes go."""
    try:
        answers(requests, timeout, stopped)
    finally:
        for req in requests:
            os.close(req.pidfd)


def answers(requests: list[Request], timeout: float, stopped: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    pending = [r for r in requests if r.failure is None]
    while pending and not stopped():
        for req in pending:
            scan(req)
            if req.path is None and req.failure is None:
                refused_since(req)
            if req.failure is not None:
                continue
            if req.path is None and exited(req.pidfd):
                scan(req)  # it may have answered just before exiting
                if req.path is None:
                    req.failure = req.gone
            elif req.path is None and req.resend:
                try:
                    send(req)
                except Refused as e:
                    req.failure = str(e)
        pending = [r for r in pending if r.path is None and r.failure is None]
        if pending and time.monotonic() >= deadline:
            for req in pending:
                where = f"{shown(req.dir)} (cannot list it: {req.unreadable})" if req.unreadable else shown(req.dir)
                req.failure = (
                    f"no dump from {req.who} in {where} within {timeout:g} s "
                    f"(sent {signal_name(req.signal)} with request {req.token:08x}"
                    f"{f', {req.sent} times' if req.sent > 1 else ''}); "
                    f"see its stderr or {shown(os.path.join(req.dir, f'leakprobe.{req.own_pid}.log'))}"
                )
                if req.unpublished:
                    req.failure += f" (directory and signal from its environment: the library's record: {req.unpublished})"
            return
        if pending:
            time.sleep(POLL)


def tgsigqueue(pid: int, tid: int, sig: int, value: int) -> None:
    """rt_tgsigqueueinfo: a queued signal to one thread (the collector)."""
    info = ctypes.create_string_buffer(128)
    struct.pack_into("<iiiiIIQ", info, 0, sig, 0, -1, 0, os.getpid(), os.getuid(), value)
    if ctypes.CDLL(None, use_errno=True).syscall(297, pid, tid, sig, info) != 0:
        err = ctypes.get_errno()
        raise Refused(f"cannot signal thread {tid} of process {pid}: {os.strerror(err)}")


def estimate(req: Request) -> str:
    def number(key: str) -> int | None:
        # The dump is the process's writing: nothing but a plain number is shown.
        text = req.facts.get(key, "")
        return int(text) if re.fullmatch(r"[0-9]{1,20}", text) else None

    samples = number("live_samples")
    return f"~{amount(number('estimated_live_bytes'))} estimated live in {'?' if samples is None else samples} live samples"


def processes_named(name: str) -> list[int]:
    """Processes whose comm or argv[0]'s basename is `name` (not this one)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                comm = f.read().decode(errors="replace").rstrip("\n")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if name in (comm, os.path.basename(argv0)):
            found.append(int(entry))
    return sorted(found)


def prepare_and_send(pid: int) -> Request:
    req = prepare(pid)
    send(req)
    return req


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # Not `common`: dump asks a process, it reads no dump.
    del common
    s = sub.add_parser(
        "dump",
        help="ask a running process for a dump and wait for it",
        description="Ask a process that has libleakprobe loaded for a dump (with the signal it uses, "
        "never one without the library) and wait for the dump that answers; prints its path and estimate.",
    )
    s.add_argument("pid", nargs="?", type=argtypes.pid, help="the process")
    s.add_argument("--all", metavar="NAME", help="every process with this name (comm or argv[0]) that has the library")
    s.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="how long to wait for the dump (30)")
    s.set_defaults(run=dump)


def dump(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        print("leakprobe: --timeout must be more than 0 seconds", file=sys.stderr)
        return 1
    if args.all is None:
        if args.pid is None:
            print("leakprobe: dump needs a PID or --all NAME", file=sys.stderr)
            return 1
        try:
            req = prepare_and_send(args.pid)
        except Refused as e:
            print(f"leakprobe: {e}", file=sys.stderr)
            return 1
        for note in req.notes:
            print(f"leakprobe: {note}", file=sys.stderr)
        wait([req], args.timeout)
        if req.failure:
            print(f"leakprobe: {req.failure}", file=sys.stderr)
            return 1
        print(shown(req.path or ""))
        print(estimate(req))
        return 0
    if args.pid is not None:
        print("leakprobe: dump takes a PID or --all NAME, not both", file=sys.stderr)
        return 1
    pids = processes_named(args.all)
    if not pids:
        print(f"leakprobe: no process named {shown(args.all)}", file=sys.stderr)
        return 1
    requests: list[Request] = []
    failed = False
    for pid in pids:
        try:
            requests.append(prepare_and_send(pid))
        except Skipped as e:
            print(f"{pid} {process_name(pid)}: skipped: {e}")
        except Refused as e:
            failed = True
            print(f"{pid} {process_name(pid)}: failed: {e}")
    wait(requests, args.timeout)
    for req in requests:
        for note in req.notes:
            print(f"leakprobe: {req.pid}: {note}", file=sys.stderr)
        if req.failure:
            failed = True
            print(f"{req.pid} {req.name}: failed: {req.failure}")
        else:
            print(f"{req.pid} {req.name}: {shown(req.path or '')} ({estimate(req)})")
    if not requests:
        print(f"leakprobe: no process named {shown(args.all)} has {LIBRARY} loaded", file=sys.stderr)
        return 1
    return 1 if failed else 0
