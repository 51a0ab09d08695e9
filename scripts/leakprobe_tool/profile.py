"""From a dump to a symbolized profile: un-sampled estimates per stack, and
how each stack's value moved over a series of dumps (`trend`, `summary`)."""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, replace

from .dumpfile import Dump, Row
from .elf import Elf, ElfError
from .entry import entry_point
from .responsible import UNNAMED_RULE, WRAPPER_RULES, Rules, site, walk
from .symbols import ALLOCATOR_FRAME, Frame, Symbolizer, base_name

# Programs' own allocation functions (redis, CPython, glib, BIND, HotSpot,
# OpenSSL, nginx, SQLite, libstdc++'s containers, Rust, the xmalloc family):
# like jeprof's and pprof's lists of allocation functions, these are skipped
# from the leaf end when a stack is named (flat views, verdicts), so the
# caller that asked for the memory is named; the full stack keeps them,
# marked. Matched against the whole name without arguments; `--alloc-frames`
# adds a program's own.
ALLOC_WRAPPER = re.compile(
    r"z(try)?(malloc|calloc|realloc)\w*|zstrdup"  # redis (zmalloc.c); also zlib's zcalloc
    r"|_?PyMem_\w+|_?PyObject_(Malloc|Calloc|Realloc)|_PyObject_GC_\w+|pymalloc_\w+"  # CPython
    r"|PyType_GenericAlloc|_PyType_AllocNoTrack|_?PyObject_New(Var)?|_PyObject_MallocWithType|_PyObject_VirtualAlloc"
    r"|g_(try_)?(malloc0?|realloc)(_n)?|g_slice_(alloc0?|copy)|g_memdup2?|g_strn?dup"  # glib
    r"|isc__?_?mem(pool)?_\w+"  # BIND
    r"|os::(malloc|realloc|strdup\w*)|(Re)?[Aa]llocateHeap|AllocateHeapOrNull|CHeapObj<.*>::operator new(\[\])?"  # HotSpot
    r"|_ZN2os(6malloc|7realloc|6strdup)\w*|_Z\d+(Re)?[Aa]llocateHeap\w*"  # the same, not demangled
    r"|Arena::(grow|Amalloc\w*)|Chunk::operator new|ChunkPool::allocate"
    # The JDK's direct buffers (malloc) and file mappings (mmap), to the program's method that asked
    r"|Unsafe_AllocateMemory0|(jdk\.internal|sun)\.misc\.Unsafe\.allocateMemory0?|java\.nio\.DirectByteBuffer\.<init>"
    r"|java\.nio\.ByteBuffer\.allocateDirect|Java_sun_nio_ch_FileChannelImpl_map0|sun\.nio\.ch\.FileChannelImpl\.map\w*"
    r"|CRYPTO_(malloc|zalloc|realloc|clear_realloc|strn?dup|memdup)"  # OpenSSL
    r"|ngx_(alloc|calloc|memalign|p[nc]?alloc|palloc_(small|large|block)|pmemalign)"  # nginx
    r"|apr_p[c]?alloc|sqlite3(_malloc(64)?|_realloc(64)?|Malloc\w*|Realloc|DbMalloc\w*|DbRealloc\w*|MemMalloc|MemRealloc)"
    r"|(std::|__gnu_cxx::)(__)?(new_)?allocator<.*>::allocate|std::allocator_traits<.*>::allocate"  # libstdc++
    r"|.*::_M_(allocate|allocate_node|allocate_buckets|get_node|create)"
    r"|__rust_(alloc|alloc_zeroed|realloc)|__rdl_\w+|__rg_\w+|alloc::alloc::\w+|alloc::raw_vec::.*"  # Rust
    r"|x(malloc|calloc|zalloc|realloc|reallocarray|memdup|strn?dup|2?nrealloc|nmalloc|icalloc)"  # xmalloc
    r"|(__)?strn?dup|v?asprintf|__vasprintf\w*|uprv_(malloc|calloc|realloc)|luaM_\w+|l_alloc"
    r"|_?e(malloc|calloc|realloc|strn?dup)\w*|Tcl_Alloc|ckalloc"
)


# The root frame of mapped memory's stacks, by kind (`report --mmap`).
KIND_FRAME = {
    "anon": "[anonymous mmap]",
    "file": "[file mmap]",
    "thread_stack": "[thread stack]",
    "shm": "[SysV shared memory]",
    "brk": "[brk]",
}
MAPPED_FACTS = tuple((kind, f"estimated_mapped_{kind}_bytes") for kind in KIND_FRAME)


def kind_root(row: Row) -> tuple[Frame, ...]:
    """Mapped memory's kind as the root frame of its stack, so that every
    view (and the pprof export) keeps kinds apart; heap rows have none."""
    return (Frame(KIND_FRAME.get(row.kind, f"[{row.kind}]")),) if row.kind else ()


def mapped_view(dump: Dump) -> Dump:
    """The dump with its mapped-memory rows in place of its heap rows."""
    return replace(dump, rows=dump.mapped)


def mapped_bytes(dump: Dump) -> dict[str, int] | None:
    """Estimated bytes mapped outside malloc, by kind (None: the dump does not record them)."""
    if "mapped_live_samples" not in dump.meta:
        return None
    return {kind: int(dump.meta.get(key, "0")) for kind, key in MAPPED_FACTS}


def amount(value: float | None, unit: str = "bytes") -> str:
    """How every command shows a quantity: 1.5 MiB, 12,345 (objects), "?" when not recorded."""
    if value is None:
        return "?"
    if unit != "bytes":
        return f"{value:,.0f}"
    for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {name}"
    return f"{value:.0f} B"


# measure -> (which counts, bytes or objects)
MEASURES = {
    "inuse-space": ("live", "bytes"),
    "inuse-objects": ("live", "objects"),
    "alloc-space": ("alloc", "bytes"),
    "alloc-objects": ("alloc", "objects"),
}


def unsample(count: int, size: int, period: int) -> tuple[float, float]:
    """Estimated (objects, bytes) behind sampled counts, as jeprof and pprof
    un-sample heap_v2: each sample stands for 1 / (1 - exp(-avg / period))."""
    if count == 0 or size == 0 or period <= 1:
        return float(count), float(size)
    # expm1: 1 - exp(-x) is 0.0 for tiny x (a huge period), expm1 is not.
    scale = 1.0 / -math.expm1(-(size / count) / period)
    return count * scale, size * scale


@dataclass(frozen=True)
class Stack:
    frames: tuple[Frame, ...]  # leaf first, the allocator's entry points removed
    value: int  # in the measure's unit (bytes or objects), estimated
    objects: int  # estimated objects
    bytes: int  # estimated bytes
    samples: int  # raw sampled count
    oldest_age: int | None = None  # seconds, of its live samples
    mean_age: float | None = None
    alloc_frames: int = 0  # how many leaf frames are allocation wrappers (zmalloc, g_malloc, ...)
    usable: int | None = None  # estimated usable bytes (the allocator's size), live measures only
    responsible: int = 0  # index of the responsible frame: the program's own code (responsible.py)
    moved: tuple[str, ...] = ()  # per frame before the responsible one: the rule that moved past it
    note: str | None = None  # how the responsible frame was chosen when no rule stopped at it
    entries: tuple[str, ...] = ()  # the allocator entry points the program called (mallocx, calloc, ...)
    young: int | None = None  # seconds, the youngest live sample's estimated age
    old_bytes: float = 0.0  # estimated live bytes older than the dump's OLD_SHARE (one-dump suspects)

    @property
    def program_frames(self) -> tuple[Frame, ...]:
        """From the first frame that is not an allocation wrapper (pprof's flat, without them)."""
        return self.frames[self.alloc_frames :]

    @property
    def responsible_frames(self) -> tuple[Frame, ...]:
        """From the responsible frame: what names the stack in verdicts, trend and diff."""
        return self.frames[self.responsible :]


@dataclass
class Profile:
    dump: Dump
    measure: str
    stacks: list[Stack]  # by value, largest first

    @property
    def total(self) -> int:
        return sum(s.value for s in self.stacks)

    @property
    def unit(self) -> str:
        return MEASURES[self.measure][1]

    def functions(self, lines: bool = False) -> list[tuple[str, int, int]]:
        """(function, flat, cumulative): the functions responsible for the
        most first (`responsible`), then by flat. Flat goes to the first
        frame that is not an allocation wrapper."""
        flat: dict[str, int] = {}
        cum: dict[str, int] = {}
        held = self.responsible(lines)
        # Ties (cum-only callers) nearest the allocation first: the program's
        # functions before the process's start (main, __libc_start_main).
        nearest: dict[str, int] = {}
        for s in self.stacks:
            if not s.frames:
                continue
            leaf = s.program_frames[0].label(lines)
            flat[leaf] = flat.get(leaf, 0) + s.value
            for depth, f in enumerate(s.responsible_frames):
                name = f.label(lines)
                nearest[name] = min(nearest.get(name, depth), depth)
            for name in {f.label(lines) for f in s.frames}:
                cum[name] = cum.get(name, 0) + s.value
        return sorted(
            ((n, flat.get(n, 0), c) for n, c in cum.items()),
            key=lambda t: (-held.get(t[0], 0), -t[1], -t[2], nearest.get(t[0], -1), t[0]),
        )

    def responsible(self, lines: bool = False) -> dict[str, int]:
        """Value per function as the responsible frame of its stacks."""
        out: dict[str, int] = {}
        for s in self.stacks:
            if s.frames:
                name = s.responsible_frames[0].label(lines)
                out[name] = out.get(name, 0) + s.value
        return out

    def by_stack(self, lines: bool) -> dict[tuple[str, ...], int]:
        """Value per site: stacks named from their responsible frame, those that
        are the same code (they differ only in a runtime's entry stubs) merged."""
        out: dict[tuple[str, ...], int] = {}
        for s in self.stacks:
            key = site(s.responsible_frames, lambda f: f.label(lines))
            out[key] = out.get(key, 0) + s.value
        return out


def row_counts(row: Row, which: str) -> tuple[int, int]:
    return (row.live_count, row.live_bytes) if which == "live" else (row.alloc_count, row.alloc_bytes)


def without_allocator(frames: tuple[Frame, ...]) -> tuple[Frame, ...]:
    """Drops the allocator's own entry points from the leaf end, as jeprof does."""
    i = 0
    while i < len(frames) - 1 and ALLOCATOR_FRAME.fullmatch(base_name(frames[i].function)):
        i += 1
    return frames[i:]


def wrappers(moved: tuple[str, ...]) -> int:
    """How many leaf frames the allocation-wrapper rules moved past (with a
    stripped helper inside a wrapper's object: the wrapper's own code)."""
    return next((i for i, why in enumerate(moved) if why not in WRAPPER_RULES and not why.startswith(UNNAMED_RULE)), len(moved))


def usable_of(row: Row, nbytes: float) -> float | None:
    """A row's estimated usable bytes: its estimate scaled by the sampled
    usable/requested ratio (dumps without `# leakprobe usable:` lines: None)."""
    if row.usable_bytes is None or not row.live_bytes:
        return None
    return nbytes * row.usable_bytes / row.live_bytes


def live_usable(dump: Dump) -> int | None:
    """Estimated live usable bytes of the whole dump, if it records them."""
    parts = [usable_of(r, unsample(r.live_count, r.live_bytes, dump.period)[1]) for r in dump.rows if r.live_count]
    if parts and all(p is not None for p in parts):
        return round(sum(p for p in parts if p is not None))
    value = dump.meta.get("estimated_live_usable_bytes", "")
    return int(value) if value.isdigit() else None


def build(
    dump: Dump,
    measure: str,
    symbolizer: Symbolizer,
    focus: re.Pattern[str] | None = None,
    ignore: re.Pattern[str] | None = None,
    alloc_frames: re.Pattern[str] | None = None,
    app_frames: re.Pattern[str] | None = None,
) -> Profile:
    which, unit = MEASURES[measure]
    rows = [r for r in dump.rows if row_counts(r, which)[0] > 0]
    # Frame 0 is the library's marker inside the allocator entry point.
    symbolizer.symbolize({a for r in rows for a in r.frames[1:]})
    rules = Rules(ALLOC_WRAPPER, alloc_frames, app_frames)
    threshold = old_threshold(rows) if which == "live" else None
    groups: dict[tuple[Frame, ...], list[float]] = {}
    usable: dict[tuple[Frame, ...], float | None] = {}
    ages: dict[tuple[Frame, ...], tuple[int, float, int, int, float]] = {}  # oldest, age sum, samples, youngest, old bytes
    entries: dict[tuple[Frame, ...], set[str]] = {}
    for row in rows:
        count, size = row_counts(row, which)
        objects, nbytes = unsample(count, size, dump.period)
        frames = without_allocator(tuple(f for a in row.frames[1:] for f in symbolizer.frames(a)))
        frames += kind_root(row)
        names = [f.function for f in frames]
        if focus and not any(focus.search(n) for n in names):
            continue
        if ignore and any(ignore.search(n) for n in names):
            continue
        g = groups.setdefault(frames, [0.0, 0.0, 0])
        g[0] += objects
        g[1] += nbytes
        g[2] += count
        entry = entry_point(symbolizer, row)
        if entry:
            entries.setdefault(frames, set()).add(entry)
        if which == "live":
            u, before = usable_of(row, nbytes), usable.get(frames, 0.0)
            usable[frames] = None if u is None or before is None else before + u
        if threshold is not None and row.oldest_age is not None and row.mean_age is not None:
            oldest, total, n, young, old = ages.get(frames, (0, 0.0, 0, row.oldest_age, 0.0))
            lo, share = age_spread(row.oldest_age, row.mean_age, threshold)
            ages[frames] = (
                max(oldest, row.oldest_age),
                total + row.mean_age * count,
                n + count,
                min(young, lo),
                old + share * nbytes,
            )

    def usable_bytes(frames: tuple[Frame, ...]) -> int | None:
        u = usable.get(frames)
        return None if u is None else round(u)

    stacks = []
    for frames, (o, b, n) in groups.items():
        found = walk(frames, rules)
        oldest, total, count, young, old = ages.get(frames, (None, None, 0, None, 0.0))
        stacks.append(
            Stack(
                frames,
                round(b if unit == "bytes" else o),
                round(o),
                round(b),
                int(n),
                oldest,
                None if total is None else total / max(count, 1),
                alloc_frames=wrappers(found.moved),
                responsible=found.index,
                usable=usable_bytes(frames),
                moved=found.moved,
                note=found.note,
                entries=tuple(sorted(entries.get(frames, ()))),
                young=young,
                old_bytes=old,
            )
        )
    stacks.sort(key=lambda s: (-s.value, [f.function for f in s.frames]))
    return Profile(dump, measure, stacks)


# One dump's suspects: live blocks older than this share of the dump's
# window (the age of its oldest live sample) are old; as async-profiler's
# --leak drops the youngest 10 % of its allocations.
OLD_SHARE = 0.1


def old_threshold(rows: list[Row]) -> float:
    """Age in seconds from which a live block counts as old (at least 1 s)."""
    window = max((r.oldest_age for r in rows if r.oldest_age is not None), default=0)
    return max(OLD_SHARE * window, 1.0)


def age_spread(oldest: int, mean: int, threshold: float) -> tuple[int, float]:
    """(estimated youngest age, share older than `threshold`) of a row's
    samples, from their oldest and mean age as if spread evenly between the
    youngest and the oldest (a steady allocator's are)."""
    lo = max(0, min(2 * mean - oldest, oldest))
    if oldest < threshold:
        return lo, 0.0
    if oldest == lo:
        return lo, 1.0
    return lo, min(max((oldest - threshold) / (oldest - lo), 0.0), 1.0)


# A frame the symbolizer could not name: `object+0xoffset`, nothing else known.
UNNAMED = re.compile(r"[^\s()]+\+0x[0-9a-f]+")


def unnamed_objects(profile: Profile) -> list[dict[str, str | int | None]]:
    """Per object with frames that have no name: how many, why, and what
    would name them."""
    found: dict[str, set[str]] = {}
    for s in profile.stacks:
        for f in s.frames:
            if f.file is None and f.obj.startswith("/") and UNNAMED.fullmatch(f.function):
                found.setdefault(f.obj, set()).add(f.function)
    out: list[dict[str, str | int | None]] = []
    for obj, names in sorted(found.items(), key=lambda kv: -len(kv[1])):
        try:
            elf = Elf(obj)
        except (ElfError, struct.error, IndexError):
            continue
        build_id = elf.build_id or profile.dump.build_ids.get(obj)
        if ".symtab" in elf.sections:
            why = "no symbol in its symbol table covers these addresses and no debug info was found for it"
        else:
            why = "it is stripped (no symbol table, and no debug info was found for it)"
        if build_id:
            fix = (
                f"debug symbols with build-id {build_id} would name them: the distribution's debug-symbol package "
                f"(on Debian the package's -dbgsym; `find-dbgsym-packages {obj}` names it), or a debug file at "
                f"DIR/.build-id/{build_id[:2]}/{build_id[2:]}.debug with --debug-dir DIR"
            )
        else:
            link = elf.debuglink or os.path.basename(obj) + ".debug"
            here = os.path.dirname(obj)
            fix = f"it has no build-id: its debug file {link} (next to it, in its .debug/, or in DIR{here}/ with --debug-dir DIR)"
        out.append({"object": obj, "addresses": len(names), "build_id": build_id, "why": why, "fix": fix})
    return out


@dataclass(frozen=True)
class Trend:
    values: tuple[int, ...]
    slope_per_hour: float
    monotonic: float  # share of steps that rose
    verdict: str


# Thresholds of `trend` (documented in the README).
RISING_SHARE = 0.75  # a leak rises at (at least) this share of steps ...
LATE_GROWTH = 0.25  # ... and its second half still brings this share of its growth
NOISE = 0.01  # changes below this share of the peak count as flat
SWING = 0.25  # a rise and a fall each of this share of the range: freed and refilled


def classify(times: list[float], values: list[int]) -> Trend:
    n = len(values)
    peak = max(max(values), 1)
    steps = [b - a for a, b in zip(values, values[1:])]
    rises = sum(1 for d in steps if d > NOISE * peak)
    monotonic = rises / len(steps) if steps else 0.0
    growth = values[-1] - values[0]
    late = values[-1] - values[(n - 1) // 2]
    spread = max(values) - min(values)
    swings = bool(steps) and max(steps) > SWING * spread and min(steps) < -SWING * spread
    hours = [(t - times[0]) / 3600.0 for t in times]
    mean_t, mean_v = sum(hours) / n, sum(values) / n
    var = sum((h - mean_t) ** 2 for h in hours)
    slope = sum((h - mean_t) * (v - mean_v) for h, v in zip(hours, values)) / var if var > 0 else 0.0
    if spread <= NOISE * peak:
        verdict = "flat"
    elif swings:
        # Rose and was freed again (a sawtooth): neither a leak nor a full cache.
        verdict = "fluctuating"
    elif growth < 0:
        verdict = "shrinking"
    elif monotonic >= RISING_SHARE and late >= LATE_GROWTH * growth:
        verdict = "growing"
    elif late < LATE_GROWTH * growth:
        verdict = "plateaued"
    else:
        verdict = "fluctuating"
    return Trend(tuple(values), slope, monotonic, verdict)


TREND_ORDER = {"growing": 0, "fluctuating": 1, "plateaued": 2, "shrinking": 3, "flat": 4}


def trends(profiles: list[Profile], lines: bool = False) -> list[tuple[tuple[str, ...], Trend]]:
    """Every stack's trend over dumps sorted by time: growing first, steepest first."""
    times = [p.dump.time or float(i) for i, p in enumerate(profiles)]
    series = [p.by_stack(lines) for p in profiles]
    found = [(k, classify(times, [s.get(k, 0) for s in series])) for k in set().union(*series)]
    found.sort(key=lambda kt: (TREND_ORDER[kt[1].verdict], -kt[1].slope_per_hour, kt[0]))
    return found
