"""Reading and validating a leakprobe dump (the heap_v2 text profile).

A dump is treated as hostile input: it is read only from a regular file,
every number is checked to fit the 64 bits the library writes, and bytes
that are not UTF-8 (a program under a non-UTF-8 path) are kept as they are
(surrogateescape) and shown escaped."""

from __future__ import annotations

import math
import os
import platform
import re
from dataclasses import dataclass, field, replace

from .files import open_regular, read_capped

HEADER = re.compile(r"heap profile: *([0-9]+): *([0-9]+) *\[ *([0-9]+): *([0-9]+) *\] *@ *heap_v2/([0-9]+)")
ROW = re.compile(r"([0-9]+): ([0-9]+) \[([0-9]+): ([0-9]+)\] @((?: 0x[0-9a-f]+)+)")
MAPS = re.compile(r"([0-9a-f]{1,16})-([0-9a-f]{1,16}) ([-rwxps]{4}) ([0-9a-f]{1,16}) \S+ [0-9]+ *(.*)")
META = "# leakprobe "
MAPPED_KIND = re.compile(r"[a-z_]{1,20}")
U64_MAX = (1 << 64) - 1
# Larger than any dump of a real process (its rows are bounded by the
# library's stack table), small enough to read into memory.
DUMP_CAP = 4 << 30
# Metadata that must be a whole number (the library writes u64s), and times.
INTEGER_META = re.compile(
    r"pid|sample_period|max_frames|java_stacks\w*|\w+_(bytes|samples|objects|dropped|unresolved|short|fast|libgcc|unix|count)"
)
TIME_META = ("time_unix", "time_monotonic")
LATEST_TIME = 253402300799.0  # 9999-12-31: what time.gmtime can show
ESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2})")
SIMPLE_ESCAPES = {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}
ESCAPED_META = ("program", "argv0")  # paths, escaped by the library


def shown(text: str) -> str:
    """`text` safe to print and to put in XML or JSON: bytes that were not
    UTF-8 (kept by surrogateescape) and control characters as \\xNN."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def unescaped(text: str) -> str:
    """A path as the library writes it in a dump (src/sys/escape.rs: `\\\\`,
    `\\n`, `\\r`, `\\t` and `\\xNN` for control characters and bytes that are
    not UTF-8) back to its bytes, kept as `read_dump` keeps text
    (surrogateescape): what the memory map says for the same file."""
    if "\\" not in text:
        return text
    out = bytearray()
    at = 0
    for m in ESCAPE.finditer(text):
        out += text[at : m.start()].encode("utf-8", "surrogateescape")
        code = m.group(1)
        out += SIMPLE_ESCAPES[code] if code in SIMPLE_ESCAPES else bytes([int(code[1:], 16)])
        at = m.end()
    out += text[at:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "surrogateescape")


def shown_lines(text: str) -> str:
    """As `shown`, keeping the line ends: for whole lines of output."""
    return text if text.isprintable() else "\n".join(shown(part) for part in text.split("\n"))


class DumpError(Exception):
    """A problem with one input file; the message names the file."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{shown(path)}: {problem}")


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
    kind: str | None = None  # mapped memory (`# leakprobe mapped:` rows): anon, file, thread_stack


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


JAVA_KINDS = ("java", "native", "unloaded", "unknown")


@dataclass(frozen=True)
class JavaFrame:
    """A Java frame the library named (`# leakprobe java_frame:` lines)."""

    kind: str  # one of JAVA_KINDS
    name: str | None  # class.method; None when unloaded or unknown
    file: str | None
    line: int | None


@dataclass
class Dump:
    path: str
    period: int
    rows: list[Row]
    maps: list[Mapping]
    meta: dict[str, str] = field(default_factory=dict)
    # object -> build-id; the object as in the memory map, or (older
    # libraries) as the loader named it
    build_ids: dict[str, str] = field(default_factory=dict)
    blind: list[str] = field(default_factory=list)  # why the library cannot see some allocations
    loaded_as: dict[str, str] = field(default_factory=dict)  # map path -> loader's name
    owner: int | None = None  # uid owning the dump file: the process's user
    mapped: list[Row] = field(default_factory=list)  # memory the program mapped outside malloc
    java_frames: dict[int, JavaFrame] = field(default_factory=dict)  # by the address in the rows

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
        fd, st = open_regular(path)
        try:
            data = read_capped(fd, st, DUMP_CAP)
        finally:
            os.close(fd)
    except OSError as e:
        raise DumpError(path, f"cannot be read: {e.strerror or e}") from None
    if not data:
        raise DumpError(path, "is empty")
    if b"\0" in data:
        raise DumpError(path, "is not a leakprobe dump (it is not text)")
    text = data.decode("utf-8", "surrogateescape")
    if not text.endswith("\n"):
        raise DumpError(path, "is truncated (it ends in the middle of a line)")
    lines = text.split("\n")[:-1]
    header = HEADER.fullmatch(lines[0].strip())
    if not header:
        raise DumpError(path, f"is not a leakprobe heap profile (first line: '{shown(lines[0][:60])}')")
    counts = [number(path, 1, header.group(i)) for i in range(1, 6)]
    dump = Dump(path=path, period=counts[4], rows=[], maps=[], owner=st.st_uid)
    maps_at = None
    for n, line in enumerate(lines[1:], start=2):
        if line == "MAPPED_LIBRARIES:":
            maps_at = n
            break
        if line.startswith(META):
            key, sep, value = line[len(META) :].partition(": ")
            if not sep:
                raise DumpError(path, f"line {n}: malformed metadata line")
            if key == "build_id":
                build_id, _, obj = value.partition(" ")
                dump.build_ids[obj] = build_id
            elif key == "loaded_as":
                mapped, _, name = value.partition("\t")
                dump.loaded_as[mapped] = name
            elif key == "age":
                ages = value.split()
                if not dump.rows or len(ages) != 2:
                    raise DumpError(path, f"line {n}: malformed age line")
                oldest, mean = (number(path, n, a) for a in ages)
                dump.rows[-1] = replace(dump.rows[-1], oldest_age=oldest, mean_age=mean)
            elif key == "usable":
                if not dump.rows:
                    raise DumpError(path, f"line {n}: malformed usable line")
                dump.rows[-1] = replace(dump.rows[-1], usable_bytes=number(path, n, value))
            elif key == "blind":
                dump.blind.append(value)
            elif key == "mapped":
                kind, _, row = value.partition(" ")
                if not MAPPED_KIND.fullmatch(kind):
                    raise DumpError(path, f"line {n}: malformed mapped line")
                dump.mapped.append(replace(parse_row(path, n, row), kind=kind))
            elif key == "java_frame":
                addr, frame = parse_java_frame(path, n, value)
                dump.java_frames[addr] = frame
            else:
                value = check_meta(path, n, key, value)
                dump.meta[key] = unescaped(value) if key in ESCAPED_META else value
        elif line.strip() and not line.startswith("#"):
            dump.rows.append(parse_row(path, n, line))
    if maps_at is None:
        raise DumpError(path, "is truncated (no MAPPED_LIBRARIES section)")
    for n, line in enumerate(lines[maps_at:], start=maps_at + 1):
        m = MAPS.fullmatch(line)
        if not m:
            raise DumpError(path, f"line {n}: malformed memory-map line")
        lo, hi, perms, off, name = m.groups()
        dump.maps.append(Mapping(int(lo, 16), int(hi, 16), perms, int(off, 16), name.strip()))
    if not dump.maps:
        raise DumpError(path, "is truncated (its memory map is empty)")
    # A dump cut at a line end inside its map would look whole: the library
    # says how long the map is (older ones do not).
    expected = dump.meta.get("maps_bytes")
    if expected is not None:
        actual = len(data) - data.index(b"\nMAPPED_LIBRARIES:\n") - len(b"\nMAPPED_LIBRARIES:\n")
        if actual < int(expected):
            raise DumpError(path, f"is truncated (its memory map has {actual} of its {expected} bytes)")
        if actual > int(expected):
            raise DumpError(path, f"is corrupt (its memory map has {actual} bytes, not the {expected} it says)")
    totals = [sum(getattr(r, f) for r in dump.rows) for f in ("live_count", "live_bytes", "alloc_count", "alloc_bytes")]
    if totals != counts[:4]:
        raise DumpError(path, "is corrupt (its header totals do not match its rows)")
    arch = dump.meta.get("arch")
    if check_arch and arch and arch != platform.machine():
        here = platform.machine()
        raise DumpError(path, f"comes from a {shown(arch)} process; this machine is {here}, so it cannot be symbolized here")
    return dump


def number(path: str, line: int, digits: str) -> int:
    """A count as the library writes it: a decimal that fits 64 bits."""
    if not digits.isascii() or not digits.isdigit():
        raise DumpError(path, f"line {line}: '{shown(digits[:30])}' is not a whole number")
    if len(digits) > 20 or int(digits) > U64_MAX:
        raise DumpError(path, f"line {line}: number out of range ({len(digits)} digits; at most 64 bits)")
    return int(digits)


def check_meta(path: str, line: int, key: str, value: str) -> str:
    """Numeric metadata is validated here, so that every later reader can
    convert it without failing."""
    if key in TIME_META:
        try:
            t = float(value)
        except ValueError:
            t = math.nan
        if not 0.0 <= t <= LATEST_TIME:  # also refuses nan and inf
            raise DumpError(path, f"line {line}: {key} '{shown(value[:30])}' is not a time")
    elif INTEGER_META.fullmatch(key) or value.isdigit():
        number(path, line, value)
    return value


def parse_java_frame(path: str, line: int, value: str) -> tuple[int, JavaFrame]:
    """`<address> <kind> <class>.<method> <file>[:<line>]`, `?` for unknown."""
    parts = value.split(" ", 3)
    if len(parts) != 4 or not re.fullmatch(r"0x[0-9a-f]{1,16}", parts[0]) or parts[1] not in JAVA_KINDS:
        raise DumpError(path, f"line {line}: malformed java_frame line")
    where, colon, number_text = parts[3].rpartition(":")
    if not colon or not number_text.isdigit():
        where, number_text = parts[3], ""
    known = parts[1] in ("java", "native")
    return int(parts[0], 16), JavaFrame(
        kind=parts[1],
        name=parts[2] if known and parts[2] != "?" else None,
        file=where if known and where != "?" else None,
        line=number(path, line, number_text) if known and number_text else None,
    )


def parse_row(path: str, line: int, text: str) -> Row:
    m = ROW.fullmatch(text)
    if not m:
        raise DumpError(path, f"line {line}: malformed sample row")
    n1, b1, n2, b2 = (number(path, line, m.group(i)) for i in range(1, 5))
    if (n1 == 0) != (b1 == 0) or (n2 == 0) != (b2 == 0):
        raise DumpError(path, f"line {line}: inconsistent counts")
    addresses = m.group(5).split()
    if any(len(a) > 18 for a in addresses):
        raise DumpError(path, f"line {line}: address out of range (at most 64 bits)")
    return Row(n1, b1, n2, b2, tuple(int(a, 16) for a in addresses))
