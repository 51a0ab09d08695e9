"""The record libleakprobe publishes inside the process it is loaded in: the
dump directory and signal it uses, and a refusal it has stated, read from the
process's memory. A program may rewrite its environment area for its title
(redis-server, nginx, postgres, setproctitle): /proc/PID/environ then says
nothing, while the record says what the library took from it.

The record (/work/team/record-contract.md; src/ publishes it): the data symbol
`leakprobe_published` in the library's .dynsym, 4096 bytes: u64 magic, u64
sequence (odd while the library updates it: read it, the body, it again, and
try again if it changed), u32 body length, u32 version (1), then ASCII lines
`key value`: `dir <hex of the path's bytes>`, `signal <number>`, `refusal
<reason>` (while the library refuses every dump), `pid <its own pid>`,
`attached <collector thread>` (while attached to a running program: the dump
signal goes to that thread alone), `detached 1` (attached once, detached
since).

Everything in it is the process's writing: it is checked as a dump is."""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .elf import Elf, ElfError

SYMBOL = "leakprobe_published"
MAGIC = 0x4C45414B50524F42
SIZE = 4096
HEAD = struct.Struct("<QQII")
VERSION = 1
TRIES = 200  # an update takes microseconds: 200 reads 1 ms apart
LINE = re.compile(r"([a-z_]{1,32}) (.*)")


class Unreadable(Exception):
    """Why the record cannot be read (a few words): an older library, no
    permission to read the process's memory, a library file replaced."""


@dataclass(frozen=True)
class Mapping:
    """One mapping of the library, from /proc/PID/maps."""

    start: int
    end: int
    offset: int
    inode: int
    path: str


@dataclass(frozen=True)
class Published:
    dir: bytes
    signal: int  # 0: the library could not take one (nothing to send)
    refusal: str | None
    attached: int | None = None  # the collector thread, while attached
    detached: bool = False  # attached once, detached since


@dataclass(frozen=True)
class Place:
    """Where the record lies in the process."""

    pid: int
    address: int
    own_pid: int  # the process's pid in its own pid namespace


def locate(pid: int, mappings: list[Mapping], reachable: Callable[[str], str]) -> Place:
    """Finds the record in the process from the library's mappings; the file
    is opened through /proc/PID/map_files (root), else by its path as the
    process sees it (`reachable`), checked to be the file it mapped."""
    if not mappings:
        raise Unreadable("the library is not mapped")
    paths = {m.path for m in mappings}
    if len(paths) != 1:
        raise Unreadable(f"{len(paths)} files named like the library are mapped")
    first = min(mappings, key=lambda m: m.offset)
    elf = None
    for path in (f"/proc/{pid}/map_files/{first.start:x}-{first.end:x}", reachable(first.path)):
        try:
            found = Elf(path)
        except ElfError:
            continue
        if found.identity[1] == first.inode:
            elf = found
            break
    if elf is None:
        raise Unreadable("cannot open the library file it mapped")
    try:
        symbol = elf.dynamic_symbol(SYMBOL)
    except (OSError, ElfError) as e:
        raise Unreadable(f"cannot read the library's symbols ({e})") from None
    if symbol is None:
        raise Unreadable(f"the library does not publish one (no {SYMBOL}: an older library)")
    value, size = symbol
    if size < SIZE:
        raise Unreadable(f"{SYMBOL} is {size} bytes, not {SIZE}")
    bias = None
    for m in mappings:
        vaddr = elf.vaddr_of_offset(m.offset)
        if vaddr is not None:
            bias = m.start - vaddr
            break
    if bias is None:
        raise Unreadable("its mappings do not match the library file")
    # It may lie past the file's mappings (.bss): the magic number says
    # whether it is there.
    return Place(pid, bias + value, own_pid(pid))


def host_thread(pid: int, tid: int) -> int:
    """Thread `tid` of process `pid`, numbered in the process's own PID
    namespace (what gettid() gives it in a container), as numbered here (the
    first and last of each thread's NSpid); `tid` if no thread matches (a
    signal sent to it then fails: it reaches no other thread)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return tid
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status", "rb") as f:
                for line in f.read().decode(errors="replace").splitlines():
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        if int(ids[-1]) == tid:
                            return int(ids[0])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return tid


def own_pid(pid: int) -> int:
    """The process's pid as it sees it (the last of NSpid): what getpid() gives
    it inside a container."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    return pid


def read(place: Place) -> Published:
    """The record's body as it stands, consistent (never half an update)."""
    try:
        fd = os.open(f"/proc/{place.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise Unreadable(f"cannot read its memory ({e.strerror or e})") from None
    try:
        for _ in range(TRIES):
            head = os.pread(fd, HEAD.size, place.address)
            if len(head) != HEAD.size:
                raise Unreadable("its memory cannot be read there")
            magic, seq, length, version = HEAD.unpack(head)
            if magic != MAGIC:
                raise Unreadable("no record (the library has not published it yet)")
            if version != VERSION:
                raise Unreadable(f"a record of version {version}, not {VERSION}")
            if length > SIZE - HEAD.size:
                raise Unreadable(f"a record {length} bytes long")
            if seq % 2 == 0:
                body = os.pread(fd, length, place.address + HEAD.size)
                (again,) = struct.unpack("<Q", os.pread(fd, 8, place.address + 8))
                if again == seq and len(body) == length:
                    published = parse(body, place.own_pid)
                    if published.attached is not None and place.own_pid != place.pid:
                        # Numbered in the process's PID namespace (a container).
                        published = replace(published, attached=host_thread(place.pid, published.attached))
                    return published
            time.sleep(0.001)
    except OSError as e:
        raise Unreadable(f"cannot read its memory ({e.strerror or e})") from None
    finally:
        os.close(fd)
    raise Unreadable("the library kept updating it")


def parse(body: bytes, own: int) -> Published:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise Unreadable("a record that is not ASCII") from None
    if not text:
        raise Unreadable("not published yet (the library is starting)")
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        m = LINE.fullmatch(line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
        elif line:
            raise Unreadable("a malformed record")
    if fields.get("pid") != str(own):
        # A forked child before its library published its own.
        raise Unreadable(f"a record of process {fields.get('pid', '?')[:20]}, not of this one")
    try:
        directory = bytes.fromhex(fields["dir"])
        sig = int(fields["signal"]) if fields["signal"].isdigit() else -1
    except (KeyError, ValueError):
        raise Unreadable("a record without a directory or a signal") from None
    if not directory or b"\0" in directory or not 0 <= sig < 65:
        raise Unreadable("a record with a malformed directory or signal")
    thread = fields.get("attached")
    if thread is not None and not (thread.isdigit() and 0 < int(thread) < 1 << 31):
        raise Unreadable("a record with a malformed collector thread")
    return Published(
        directory,
        sig,
        fields.get("refusal"),
        int(thread) if thread is not None else None,
        fields.get("detached") == "1",
    )
