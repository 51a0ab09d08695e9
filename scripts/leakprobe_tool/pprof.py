"""Export to profile.proto (gzipped), the format of `go tool pprof -http`,
speedscope and continuous-profiling backends. Symbolized here, on the machine
that has the binaries, so the file names its frames wherever it is opened.

The encoder is written against the published field numbers of
github.com/google/pprof proto/profile.proto; no protobuf library is needed.
Values are the same un-sampled estimates `report` shows, rounded the same way,
so that `pprof -top` and `report` agree to the byte."""

from __future__ import annotations

import argparse
import gzip
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace

from .dumpfile import Dump, Mapping, Row, read_dump, shown
from .entry import entry_point
from .profile import kind_root, mapped_view, unsample, without_allocator
from .symbols import Frame, Symbolizer, program_of

# Go's order for heap profiles: a reader that ignores default_sample_type
# takes the last one, inuse_space.
SAMPLE_TYPES = (("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"), ("inuse_space", "bytes"))
DEFAULT_SAMPLE_TYPE = "inuse_space"

# What the symbolizer writes when it cannot name a frame (`[anonymous] 0x…`,
# `obj+0x…`, with a note in parentheses): such frames keep their address and
# mapping so that pprof may try again where the binary is.
UNNAMED = re.compile(r"(\[[^\]]*\] 0x|\S+\+0x)[0-9a-f]+( \(.+\))?")

# Age buckets of a row's live objects (by their mean age), as a sample label.
# The allocator's own statistics in a dump's facts.
ALLOCATOR_KEY = re.compile(r"(glibc|jemalloc|tcmalloc|mimalloc)_")

AGE_BUCKETS = ((60, "<1m"), (600, "1m-10m"), (3600, "10m-1h"), (6 * 3600, "1h-6h"), (86400, "6h-1d"))


# -- protobuf wire format ---------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64: two's complement, ten bytes when negative
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def number(field_number: int, value: int) -> bytes:
    """A varint field; zero is the default and is left out, as proto3 does."""
    return varint(field_number << 3) + varint(value) if value else b""


def message(field_number: int, data: bytes) -> bytes:
    return varint(field_number << 3 | 2) + varint(len(data)) + data


def packed(field_number: int, values: list[int] | tuple[int, ...]) -> bytes:
    return message(field_number, b"".join(varint(v) for v in values)) if values else b""


# -- the profile ------------------------------------------------------------

Label = tuple[str, str | None, int | None, str | None]  # key, str, num, num_unit


@dataclass
class MappingEntry:
    id: int
    mapping: Mapping
    build_id: str
    # Whether every location in it is named / has a file / has a line.
    named: bool = True
    files: bool = True


@dataclass
class Export:
    strings: dict[str, int] = field(default_factory=lambda: {"": 0})
    mappings: dict[tuple[int, int, int, str, str], MappingEntry] = field(default_factory=dict)
    functions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    locations: dict[tuple[int, int, tuple[tuple[int, int], ...]], int] = field(default_factory=dict)
    samples: dict[tuple[tuple[int, ...], tuple[Label, ...]], list[int]] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    def string(self, s: str) -> int:
        # profile.proto's strings are proto3 strings, valid UTF-8: a path or
        # name that is not (or holds control characters) is written as every
        # view shows it, with \xNN escapes.
        return self.strings.setdefault(shown(s), len(self.strings))

    def mapping(self, dump: Dump, m: Mapping) -> MappingEntry:
        build_id = dump.build_ids.get(m.file, "")
        key = (m.start, m.end, m.offset, m.file, build_id)
        if key not in self.mappings:
            self.mappings[key] = MappingEntry(len(self.mappings) + 1, m, build_id)
        return self.mappings[key]

    def function(self, name: str, system_name: str, file: str) -> int:
        return self.functions.setdefault((name, system_name, file), len(self.functions) + 1)

    def location(self, dump: Dump, symbolizer: Symbolizer, addr: int, chain: tuple[Frame, ...]) -> int:
        """One Location per call site: its inline chain as Lines, leaf first."""
        m = dump.mapping_of(addr)
        entry = self.mapping(dump, m) if m is not None else None
        outer = system_name(symbolizer, addr)
        lines = []
        for i, f in enumerate(chain):
            mangled = outer if i == len(chain) - 1 and outer else f.function
            lines.append((self.function(f.function, mangled, f.file or ""), f.line or 0))
            if entry is not None:
                entry.named &= not (UNNAMED.fullmatch(f.function) and f.obj != "[jit]")
                entry.files &= f.file is not None
        # The call instruction, as the symbolizer looked it up: a return
        # address points after the call.
        key = (entry.id if entry else 0, addr - 1, tuple(lines))
        return self.locations.setdefault(key, len(self.locations) + 1)

    def root(self, frame: Frame) -> int:
        """A location of its own, without an address, for a frame that is no
        call site (mapped memory's kind)."""
        lines = ((self.function(frame.function, frame.function, ""), 0),)
        return self.locations.setdefault((0, 0, lines), len(self.locations) + 1)

    def add(self, dump: Dump, symbolizer: Symbolizer, keep_allocator: bool, sign: int, ages: bool) -> None:
        """Adds (sign 1) or subtracts (sign -1) one dump's rows."""
        # pprof takes the first mapping for the main binary.
        main = next((m for m in dump.maps if shown(m.file) == program_of(dump) and "x" in m.perms), None)
        if main is not None:
            self.mapping(dump, main)
        # Frame 0 is the library's marker inside the allocator's entry point.
        first = 0 if keep_allocator else 1
        symbolizer.symbolize({a for r in dump.rows for a in r.frames[first:]})
        # Rounded per stack as `report` rounds: each row gets the change in
        # the rounded running sum of its stack, so every stack sums exactly
        # to report's number.
        running: dict[tuple[Frame, ...], list[float]] = {}
        emitted: dict[tuple[Frame, ...], list[int]] = {}
        for row in dump.rows:
            addresses = row.frames[first:]
            chains = [symbolizer.frames(a) for a in addresses]
            if keep_allocator and chains:
                # The marker is no call site: of its inline chain (the
                # library's internals), only the entry point it is in: the
                # one the program called, where its code says which.
                entry = entry_point(symbolizer, row)
                chains[0] = tuple(replace(f, function=entry) if entry else f for f in chains[0][-1:])
            flat = tuple(f for c in chains for f in c)
            frames = flat if keep_allocator else without_allocator(flat)
            locations = self.trimmed(dump, symbolizer, addresses, chains, len(flat) - len(frames))
            root = kind_root(row)
            frames += root
            locations += tuple(self.root(f) for f in root)
            live = unsample(row.live_count, row.live_bytes, dump.period)
            alloc = unsample(row.alloc_count, row.alloc_bytes, dump.period)
            sums = running.setdefault(frames, [0.0] * 4)
            done = emitted.setdefault(frames, [0] * 4)
            values = []
            for i, v in enumerate((*alloc, *live)):
                sums[i] += v
                values.append(round(sums[i]) - done[i])
                done[i] += values[-1]
            key = (locations, labels(dump, row, ages))
            total = self.samples.setdefault(key, [0] * 4)
            for i, v in enumerate(values):
                total[i] += sign * v

    def trimmed(
        self, dump: Dump, symbolizer: Symbolizer, addresses: tuple[int, ...], chains: list[tuple[Frame, ...]], drop: int
    ) -> tuple[int, ...]:
        """Location ids without the `drop` allocator frames at the leaf end
        (which may end inside a location's inline chain)."""
        out = []
        for addr, chain in zip(addresses, chains):
            if drop >= len(chain):
                drop -= len(chain)
                continue
            out.append(self.location(dump, symbolizer, addr, chain[drop:]))
            drop = 0
        return tuple(out)

    def encode(self, period: int, time_nanos: int, duration_nanos: int) -> bytes:
        s = self.string
        # Strings first: the table is written last but every index must exist.
        types = [(s(t), s(u)) for t, u in SAMPLE_TYPES]
        space, nbytes = s("space"), s("bytes")
        default = s(DEFAULT_SAMPLE_TYPE)
        comments = [s(c) for c in self.comments]
        out = bytearray()
        for t, u in types:
            out += message(1, number(1, t) + number(2, u))
        for (locs, labels_), values in self.samples.items():
            if not any(values):
                continue
            body = packed(1, locs) + packed(2, values)
            for key, text, num, unit in labels_:
                label = number(1, s(key))
                label += number(2, s(text)) if text is not None else number(3, num or 0)
                label += number(4, s(unit)) if unit else b""
                body += message(3, label)
            out += message(2, body)
        for entry in self.mappings.values():
            m = entry.mapping
            body = number(1, entry.id) + number(2, m.start) + number(3, m.end) + number(4, m.offset)
            body += number(5, s(m.file)) + number(6, s(entry.build_id))
            # Set only when complete: pprof re-symbolizes a mapping (where
            # its binary is at hand) only if none of these is set.
            body += number(7, entry.named) + number(8, entry.named and entry.files)
            body += number(9, entry.named and entry.files) + number(10, entry.named and entry.files)
            out += message(3, body)
        for (mapping_id, address, lines), loc_id in self.locations.items():
            body = number(1, loc_id) + number(2, mapping_id) + number(3, address)
            for function_id, line in lines:
                body += message(4, number(1, function_id) + number(2, line))
            out += message(4, body)
        for (name, system, file), fn_id in self.functions.items():
            out += message(5, number(1, fn_id) + number(2, s(name)) + number(3, s(system)) + number(4, s(file)))
        tail = number(9, time_nanos) + number(10, duration_nanos)
        tail += message(11, number(1, space) + number(2, nbytes)) + number(12, period)
        tail += b"".join(number(13, c) for c in comments) + number(14, default)
        # The table last, now that every string has its index.
        for text in self.strings:
            out += message(6, text.encode("utf-8"))
        return bytes(out + tail)


def system_name(symbolizer: Symbolizer, addr: int) -> str | None:
    """The mangled name of the function containing a call site, from the
    symbol table (the symbolizer demangles the names it returns)."""
    found = symbolizer.object_at(addr)
    if found is None:
        return None
    obj, elf, vaddr = found
    name = elf.symbol_at(vaddr)
    if name is None:
        debug = symbolizer.elf(symbolizer.debug_file(obj, elf))
        name = debug.symbol_at(vaddr) if debug is not None else None
    return name if name and name.startswith("_Z") else None


def labels(dump: Dump, row: Row, ages: bool) -> tuple[Label, ...]:
    out: list[Label] = [] if dump.pid is None else [("pid", None, dump.pid, None)]
    program = program_of(dump)
    if program:
        out.append(("program", program, None, None))
    count, size = (row.alloc_count, row.alloc_bytes) if row.alloc_count else (row.live_count, row.live_bytes)
    if count:
        # A row is one (stack, requested size): every object has this size.
        out.append(("bytes", None, size // count, "bytes"))
    if ages and row.live_count and row.mean_age is not None:
        out.append(("age", age_bucket(row.mean_age), None, None))
    return tuple(out)


def age_bucket(seconds: int) -> str:
    for limit, name in AGE_BUCKETS:
        if seconds < limit:
            return name
    return ">1d"


def describe(dump: Dump, role: str) -> list[str]:
    """The dump's facts in a few comment lines (pprof prints them above its
    reports; `-comments` lists them)."""
    meta = dump.meta
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(dump.time)) if dump.time else "unknown time"
    host = meta.get("host") or f"{socket.gethostname()} (where exported; the dump does not record its host)"
    shown = {"pid", "program", "host", "time_unix", "version", "sample_period", "arch", "allocator"}
    allocator = {k: v for k, v in meta.items() if ALLOCATOR_KEY.match(k)}
    memory = {k: v for k, v in meta.items() if k.endswith("_bytes") and k not in allocator}
    rest = {k: v for k, v in meta.items() if k not in shown | allocator.keys() | memory.keys()}

    def pairs(d: dict[str, str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items())

    return [
        f"{role} {dump.path}: pid {dump.pid} ({program_of(dump)}) on {host}, dumped {when}, "
        f"leakprobe {meta.get('version', '?')}, sample period {dump.period} bytes",
        f"  memory: {pairs(memory)}",
        f"  allocator {meta.get('allocator', '?')}: {pairs(allocator) or 'no statistics'}",
        f"  {pairs(rest)}",
    ]


def export(args: argparse.Namespace) -> int:
    view = mapped_view if args.mmap else (lambda d: d)
    dumps = [view(read_dump(p)) for p in args.dumps]
    bases = [view(read_dump(p)) for p in args.base or []]
    data, e = encode_dumps(dumps, bases, args.debug_dir, args.keep_allocator_frames, args.mmap)
    write_atomically(args.output, data)
    samples = sum(1 for v in e.samples.values() if any(v))
    print(f"wrote {shown(args.output)} ({samples} samples, {len(e.locations)} locations)", file=sys.stderr)
    return 0


def encode_dumps(
    dumps: list[Dump], bases: list[Dump], debug_dir: list[str], keep_allocator_frames: bool = False, mmap: bool = False
) -> tuple[bytes, Export]:
    """The dumps (minus the bases; `mapped_view`s for `mmap`), symbolized, as a
    gzipped profile.proto; with the export, for its counts. `pprof` writes
    it, `push` sends it."""
    debug_dirs = [*debug_dir, "/usr/lib/debug"]
    e = Export()
    what = "memory mapped outside malloc (each stack's root: its kind)" if mmap else "heap"
    e.comments.append(
        f"leakprobe {what} profile: values are estimates (sampled counts un-sampled as jeprof and pprof do)"
        + ("" if keep_allocator_frames else "; allocator frames dropped")
    )
    if bases:
        e.comments.append("a difference: the dumps minus the base dumps (negative values shrank)")
    for dump in dumps:
        e.comments += describe(dump, "dump")
        e.add(dump, Symbolizer(dump, debug_dirs), keep_allocator_frames, 1, ages=not bases)
    for dump in bases:
        e.comments += describe(dump, "base")
        e.add(dump, Symbolizer(dump, debug_dirs), keep_allocator_frames, -1, ages=False)
    pids = [d.pid for d in dumps if d.pid is not None]
    for pid in sorted({p for p in pids if pids.count(p) > 1}):
        note = f"{pids.count(pid)} dumps of pid {pid} are summed (for its growth, give the older one as --base)"
        print(f"leakprobe: note: {note}", file=sys.stderr)
        e.comments.append(f"note: {note}")
    periods = sorted({d.period for d in dumps + bases})
    if len(periods) > 1:
        e.comments.append(f"note: the dumps have different sample periods ({', '.join(map(str, periods))} bytes)")
    times = [d.time for d in dumps + bases if d.time is not None]
    start = min(times) if times else 0.0
    span = max(times) - start if times else 0.0
    return gzip.compress(e.encode(dumps[0].period, int(start * 1e9), int(span * 1e9)), mtime=0), e


def write_atomically(path: str, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".leakprobe-", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # Not `common`: the export keeps every stack and frame (no --depth, --focus...).
    del common
    s = sub.add_parser("pprof", help="symbolized profile.proto (gzipped) for go tool pprof and profiling backends")
    s.add_argument("dumps", nargs="+", metavar="DUMP", help="one or more dumps, summed into one profile")
    s.add_argument("-o", "--output", required=True, help="the .pb.gz file to write")
    s.add_argument("--base", action="append", metavar="OLDER", help="subtract this dump (repeatable): the growth since")
    s.add_argument("--keep-allocator-frames", action="store_true", help="keep malloc, operator new... at the leaf")
    s.add_argument("--mmap", action="store_true", help="the memory mapped outside malloc instead of the heap (as report)")
    s.add_argument("--debug-dir", action="append", default=[], metavar="DIR", help="as for report")
    s.set_defaults(run=export)
