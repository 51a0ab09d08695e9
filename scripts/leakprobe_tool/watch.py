"""`leakprobe watch`: a dump every SECONDS, asked for as `dump` asks
(dumpcmd's request and wait), symbolized at once (while the binaries the
process mapped are still there), pushed, and deleted once the server accepted
it, the last --keep dumps left on disk.

The server down or failing (no answer, refused, 5xx, 429, 401...): one line
when it starts, the dumps queue up here (at most --keep on disk, the oldest
unsent dropped beyond that), each retried oldest first with a doubling
back-off (0.5 s to 60 s), and one line when it is over, with what was sent
and dropped. A profile the server refuses as it is (400, 413, 415, 422) is
not retried: the first of a run is said, the run's length when one is
accepted again."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import stat
import sys
import time
from dataclasses import dataclass

from . import argtypes, dumpcmd
from .dumpfile import DumpError, read_dump, shown
from .push import Profile, PushError, Target, add_target_options, profile_of, send, target_of

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 60.0


@dataclass
class Local:
    """A dump this watch asked for, on disk until pushed and beyond --keep."""

    path: str
    identity: tuple[int, int]  # (device, inode) as it was read: only that file is deleted
    profile: Profile | None  # None once pushed (or refused)

    @property
    def pending(self) -> bool:
        return self.profile is not None


def say(text: str) -> None:
    print(f"leakprobe: watch: {text}", file=sys.stderr, flush=True)


def remove(local: Local) -> None:
    """Deletes the dump if its name still holds the file that was read: by its
    directory's descriptor, never through a link."""
    directory, name = os.path.split(local.path)
    try:
        fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == local.identity:
            os.unlink(name, dir_fd=fd)
    except OSError:
        pass  # gone already (the library's LEAKPROBE_MAX_DUMPS, or a person)
    finally:
        os.close(fd)


class Stop:
    """SIGTERM or SIGINT asked the watch to end. The handler only stores a
    flag: a `threading.Event.set()` there deadlocks when the signal lands
    while the main thread holds the event's lock inside `wait()`. The wait is
    a `select` on the signal wake-up pipe, which the interpreter writes to as
    the signal arrives, so it ends at once."""

    def __init__(self) -> None:
        self.requested = False
        self.readable, writable = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(writable, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handler)

    def handler(self, _sig: int, _frame: object) -> None:
        self.requested = True

    def is_set(self) -> bool:
        return self.requested

    def wait(self, timeout: float) -> None:
        if not self.requested:
            select.select([self.readable], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.read(self.readable, 512)  # the wake-ups of signals seen


class Watch:
    def __init__(self, args: argparse.Namespace, target: Target, stop: Stop) -> None:
        self.args, self.target = args, target
        self.local: list[Local] = []
        self.stop = stop
        self.outage: float | None = None  # when the server stopped taking profiles
        self.attempts = self.sent_in_outage = self.dropped_in_outage = 0
        self.refused = 0  # profiles refused as they are, in a row
        self.backoff = BACKOFF_FIRST
        self.next_push = 0.0
        self.watching: set[int] = set()
        self.none_said = False
        self.refusals: dict[int, str] = {}  # said once per process and reason
        self.queued = 0  # dumps taken

    def pids(self) -> list[int]:
        """The processes to ask."""
        if self.args.pid is not None:
            return [self.args.pid]
        return dumpcmd.processes_named(self.args.all)

    def take_dumps(self) -> bool:
        """Asks each process for a dump and queues what it writes; False when
        a watched PID may not be asked any more (exited, no library)."""
        pids = self.pids()
        requests = []
        for pid in pids:
            try:
                requests.append(dumpcmd.prepare_and_send(pid))
            except dumpcmd.Refused as e:
                if self.args.pid is not None:
                    say(f"{e}; watch ends")
                    return False
                if isinstance(e, dumpcmd.Skipped):
                    continue
                if self.refusals.get(pid) != str(e):
                    self.refusals[pid] = str(e)
                    say(str(e))
        live = {r.pid for r in requests}
        for pid in sorted(live - self.watching):
            say(f"watching process {pid} ({next(r.name for r in requests if r.pid == pid)})")
        if self.args.all and not live and not self.none_said:
            say(f"no process named {shown(self.args.all)} has {dumpcmd.LIBRARY} loaded; waiting for one")
        self.none_said = not live
        self.watching = live
        self.refusals = {pid: why for pid, why in self.refusals.items() if pid in pids}
        dumpcmd.wait(requests, self.args.dump_timeout, self.stop.is_set)
        for req in requests:
            if self.stop.is_set() and req.failure is None and req.path is None:
                continue  # the watch ends before the process answered
            if req.failure or req.path is None:
                say(req.failure or f"no dump from process {req.pid}")
                continue
            self.queue(req.path)
        return True

    def queue(self, path: str) -> None:
        try:
            st = os.stat(path, follow_symlinks=False)
            profile = profile_of(self.target, read_dump(path), self.args.debug_dir)
        except (DumpError, OSError) as e:
            say(f"{shown(path)}: not pushed: {e}")
            return
        self.local.append(Local(path, (st.st_dev, st.st_ino), profile))
        self.queued += 1
        self.trim()

    def trim(self) -> None:
        """At most --keep dumps on disk: pushed ones go first, then (the
        server away that long) the oldest unsent."""
        while len(self.local) > self.args.keep:
            done = next((x for x in self.local if not x.pending), None)
            victim = done or self.local[0]
            if victim.pending:
                if self.dropped_in_outage == 0:
                    say(f"{self.args.keep} dumps wait here (--keep): dropping the oldest until the server is back")
                self.dropped_in_outage += 1
            self.local.remove(victim)
            remove(victim)

    def push_pending(self) -> None:
        for local in list(self.local):
            if self.stop.is_set():
                return  # what is left stays on disk
            if local.profile is None:
                continue  # pushed already
            try:
                send(self.target, local.profile)
            except PushError as e:
                if not e.retry:
                    if self.refused == 0:
                        say(f"{shown(local.path)}: refused, not retried: {e} (more are counted, not said)")
                    self.refused += 1
                    local.profile = None
                    continue
                self.failed(str(e))
                return
            local.profile = None
            if self.refused:
                say(f"{shown(self.target.endpoint)} accepts profiles again, after refusing {self.refused}")
                self.refused = 0
            if self.outage is not None:
                self.sent_in_outage += 1
        if self.outage is not None:
            took = time.monotonic() - self.outage
            say(
                f"{shown(self.target.endpoint)} takes profiles again after {took:.1f} s ({self.attempts} attempts): "
                f"{self.sent_in_outage} queued dumps pushed, {self.dropped_in_outage} dropped beyond --keep {self.args.keep}"
            )
            self.outage = None
        self.attempts = self.sent_in_outage = self.dropped_in_outage = 0
        self.backoff = BACKOFF_FIRST
        self.trim()

    def failed(self, why: str) -> None:
        self.attempts += 1
        if self.outage is None:
            self.outage = time.monotonic()
            say(f"{why}; keeping dumps here (at most --keep {self.args.keep}), retrying with back-off")
        self.next_push = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def run(self) -> int:
        next_dump = time.monotonic()
        going = True
        while not self.stop.is_set():
            now = time.monotonic()
            if going and now >= next_dump:
                going = self.take_dumps()
                # Keep the cadence; a dump that took longer starts again from now.
                next_dump = max(next_dump + self.args.every, time.monotonic())
            pending = any(x.pending for x in self.local)
            if pending and time.monotonic() >= self.next_push:
                self.push_pending()
                pending = any(x.pending for x in self.local)
            if not going and (not pending or self.outage is not None):
                # A PID that never gave a dump (no library, gone already) is a failure.
                return 1 if pending or not self.queued else 0
            wake = min(next_dump, self.next_push) if pending else next_dump
            self.stop.wait(max(wake - time.monotonic(), 0.01))
        return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    del common  # as push
    s = sub.add_parser(
        "watch",
        help="dump a process every SECONDS and push each dump (Pyroscope, Parca)",
        description="Ask a process (or every process named NAME, across restarts) for a dump every SECONDS, "
        "push it as `push` does, and delete it once accepted, keeping the last --keep on disk.",
    )
    s.add_argument("pid", nargs="?", type=argtypes.pid, help="the process (watch ends when it exits)")
    s.add_argument("--all", metavar="NAME", help="every process with this name that has the library, as they come and go")
    s.add_argument("--every", type=argtypes.seconds, required=True, metavar="SECONDS", help="between dumps")
    s.add_argument("--keep", type=argtypes.count, default=10, metavar="N", help="dumps left on disk, sent or waiting (10)")
    s.add_argument("--dump-timeout", type=argtypes.seconds, default=30.0, metavar="SECONDS", help="wait for each dump (30)")
    add_target_options(s)
    s.set_defaults(run=watch)


def watch(args: argparse.Namespace) -> int:
    if (args.pid is None) == (args.all is None):
        print("leakprobe: watch takes a PID or --all NAME", file=sys.stderr)
        return 1
    try:
        target = target_of(args)
    except ValueError as e:
        print(f"leakprobe: {e}", file=sys.stderr)
        return 1
    return Watch(args, target, Stop()).run()
