"""Reading and validating a leakprobe dump (the heap_v2 text profile)."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field, replace

HEADER = re.compile(r"heap profile: *(\d+): *(\d+) *\[ *(\d+): *(\d+) *\] *@ *heap_v2/(\d+)")
ROW = re.compile(r"(\d+): (\d+) \[(\d+): (\d+)\] @((?: 0x[0-9a-f]+)+)")
MAPS = re.compile(r"([0-9a-f]+)-([0-9a-f]+) ([-rwxps]{4}) ([0-9a-f]+) \S+ \d+ *(.*)")
META = "# leakprobe "


class DumpError(Exception):
    """A problem with one input file; the message names the file."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Row:
    live_count: int
    live_bytes: int
    alloc_count: int
    alloc_bytes: int
    frames: tuple[int, ...]
    oldest_age: int | None = None  # seconds, of the row's live samples
    mean_age: int | None = None
    usable_bytes: int | None = None  # malloc_usable_size of its live samples, summed (raw)


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    path: str

    @property
    def deleted(self) -> bool:
        return self.path.endswith(" (deleted)")

    @property
    def file(self) -> str:
        return self.path.removesuffix(" (deleted)")


@dataclass
class Dump:
    path: str
    period: int
    rows: list[Row]
    maps: list[Mapping]
    meta: dict[str, str] = field(default_factory=dict)
    build_ids: dict[str, str] = field(default_factory=dict)
    blind: list[str] = field(default_factory=list)  # why the library cannot see some allocations

    @property
    def pid(self) -> int | None:
        value = self.meta.get("pid", "")
        return int(value) if value.isdigit() else None

    @property
    def time(self) -> float | None:
        """Wall-clock seconds of the dump (from the dump, else its mtime)."""
        for key in ("time_unix",):
            try:
                return float(self.meta[key])
            except (KeyError, ValueError):
                pass
        try:
            return os.path.getmtime(self.path)
        except OSError:
            return None

    def mapping_of(self, addr: int) -> Mapping | None:
        for m in self.maps:
            if m.start <= addr < m.end:
                return m
        return None


def read_dump(path: str, check_arch: bool = True) -> Dump:
    """Reads and validates a dump; raises DumpError saying what is wrong."""
    if path.endswith(".tmp"):
        raise DumpError(path, "is a dump still being written (a temporary file); use the renamed .heap file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DumpError(path, f"cannot be read: {e.strerror or e}") from None
    if not data:
        raise DumpError(path, "is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DumpError(path, "is not a leakprobe dump (it is not text)") from None
    if not text.endswith("\n"):
        raise DumpError(path, "is truncated (it ends in the middle of a line)")
    lines = text.split("\n")[:-1]
    header = HEADER.fullmatch(lines[0].strip())
    if not header:
        raise DumpError(path, f"is not a leakprobe heap profile (first line: {lines[0][:60]!r})")
    dump = Dump(path=path, period=int(header.group(5)), rows=[], maps=[])
    maps_at = None
    for number, line in enumerate(lines[1:], start=2):
        if line == "MAPPED_LIBRARIES:":
            maps_at = number
            break
        if line.startswith(META):
            key, sep, value = line[len(META) :].partition(": ")
            if not sep:
                raise DumpError(path, f"line {number}: malformed metadata line")
            if key == "build_id":
                build_id, _, obj = value.partition(" ")
                dump.build_ids[obj] = build_id
            elif key == "age":
                ages = value.split()
                if not dump.rows or len(ages) != 2 or not all(a.isdigit() for a in ages):
                    raise DumpError(path, f"line {number}: malformed age line")
                dump.rows[-1] = replace(dump.rows[-1], oldest_age=int(ages[0]), mean_age=int(ages[1]))
            elif key == "usable":
                if not dump.rows or not value.isdigit():
                    raise DumpError(path, f"line {number}: malformed usable line")
                dump.rows[-1] = replace(dump.rows[-1], usable_bytes=int(value))
            elif key == "blind":
                dump.blind.append(value)
            else:
                dump.meta[key] = value
        elif line.strip() and not line.startswith("#"):
            dump.rows.append(parse_row(path, number, line))
    if maps_at is None:
        raise DumpError(path, "is truncated (no MAPPED_LIBRARIES section)")
    for number, line in enumerate(lines[maps_at:], start=maps_at + 1):
        m = MAPS.fullmatch(line)
        if not m:
            raise DumpError(path, f"line {number}: malformed memory-map line")
        lo, hi, perms, off, name = m.groups()
        dump.maps.append(Mapping(int(lo, 16), int(hi, 16), perms, int(off, 16), name.strip()))
    if not dump.maps:
        raise DumpError(path, "is truncated (its memory map is empty)")
    totals = [sum(getattr(r, f) for r in dump.rows) for f in ("live_count", "live_bytes", "alloc_count", "alloc_bytes")]
    if totals != [int(header.group(i)) for i in range(1, 5)]:
        raise DumpError(path, "is corrupt (its header totals do not match its rows)")
    arch = dump.meta.get("arch")
    if check_arch and arch and arch != platform.machine():
        here = platform.machine()
        raise DumpError(path, f"comes from a {arch} process; this machine is {here}, so it cannot be symbolized here")
    return dump


def parse_row(path: str, number: int, line: str) -> Row:
    m = ROW.fullmatch(line)
    if not m:
        raise DumpError(path, f"line {number}: malformed sample row")
    n1, b1, n2, b2 = (int(m.group(i)) for i in range(1, 5))
    if (n1 == 0) != (b1 == 0) or (n2 == 0) != (b2 == 0):
        raise DumpError(path, f"line {number}: inconsistent counts")
    frames = tuple(int(f, 16) for f in m.group(5).split())
    return Row(n1, b1, n2, b2, frames)
