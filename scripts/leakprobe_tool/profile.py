"""From a dump to a symbolized profile: un-sampled estimates per stack."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .dumpfile import Dump, Row
from .symbols import ALLOCATOR_FRAME, Frame, Symbolizer, base_name

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
    frames: tuple[Frame, ...]  # leaf first, allocator frames removed
    value: int  # in the measure's unit (bytes or objects), estimated
    objects: int  # estimated objects
    bytes: int  # estimated bytes
    samples: int  # raw sampled count
    oldest_age: int | None = None  # seconds, of its live samples
    mean_age: float | None = None


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
        """(function, flat, cumulative), largest cumulative first."""
        flat: dict[str, int] = {}
        cum: dict[str, int] = {}
        for s in self.stacks:
            if not s.frames:
                continue
            leaf = s.frames[0].label(lines)
            flat[leaf] = flat.get(leaf, 0) + s.value
            for name in {f.label(lines) for f in s.frames}:
                cum[name] = cum.get(name, 0) + s.value
        return sorted(((n, flat.get(n, 0), c) for n, c in cum.items()), key=lambda t: (-t[1], -t[2], t[0]))


def row_counts(row: Row, which: str) -> tuple[int, int]:
    return (row.live_count, row.live_bytes) if which == "live" else (row.alloc_count, row.alloc_bytes)


def program_frames(frames: tuple[Frame, ...]) -> tuple[Frame, ...]:
    """Drops the allocator's own frames from the leaf end, as jeprof does."""
    i = 0
    while i < len(frames) - 1 and ALLOCATOR_FRAME.fullmatch(base_name(frames[i].function)):
        i += 1
    return frames[i:]


def build(
    dump: Dump,
    measure: str,
    symbolizer: Symbolizer,
    focus: re.Pattern[str] | None = None,
    ignore: re.Pattern[str] | None = None,
) -> Profile:
    which, unit = MEASURES[measure]
    rows = [r for r in dump.rows if row_counts(r, which)[0] > 0]
    # Frame 0 is the library's marker inside the allocator entry point.
    symbolizer.symbolize({a for r in rows for a in r.frames[1:]})
    groups: dict[tuple[Frame, ...], list[float]] = {}
    ages: dict[tuple[Frame, ...], tuple[int, float, int]] = {}  # oldest, age sum, samples
    for row in rows:
        count, size = row_counts(row, which)
        objects, nbytes = unsample(count, size, dump.period)
        frames = program_frames(tuple(f for a in row.frames[1:] for f in symbolizer.frames(a)))
        names = [f.function for f in frames]
        if focus and not any(focus.search(n) for n in names):
            continue
        if ignore and any(ignore.search(n) for n in names):
            continue
        g = groups.setdefault(frames, [0.0, 0.0, 0])
        g[0] += objects
        g[1] += nbytes
        g[2] += count
        if which == "live" and row.oldest_age is not None and row.mean_age is not None:
            oldest, total, n = ages.get(frames, (0, 0.0, 0))
            ages[frames] = (max(oldest, row.oldest_age), total + row.mean_age * count, n + count)

    def age_of(frames: tuple[Frame, ...]) -> tuple[int | None, float | None]:
        if frames not in ages:
            return None, None
        oldest, total, n = ages[frames]
        return oldest, total / n

    stacks = [
        Stack(frames, round(b if unit == "bytes" else o), round(o), round(b), int(n), *age_of(frames))
        for frames, (o, b, n) in groups.items()
    ]
    stacks.sort(key=lambda s: (-s.value, [f.function for f in s.frames]))
    return Profile(dump, measure, stacks)


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


def classify(times: list[float], values: list[int]) -> Trend:
    n = len(values)
    peak = max(max(values), 1)
    steps = [b - a for a, b in zip(values, values[1:])]
    rises = sum(1 for d in steps if d > NOISE * peak)
    monotonic = rises / len(steps) if steps else 0.0
    growth = values[-1] - values[0]
    late = values[-1] - values[(n - 1) // 2]
    hours = [(t - times[0]) / 3600.0 for t in times]
    mean_t, mean_v = sum(hours) / n, sum(values) / n
    var = sum((h - mean_t) ** 2 for h in hours)
    slope = sum((h - mean_t) * (v - mean_v) for h, v in zip(hours, values)) / var if var > 0 else 0.0
    if abs(growth) <= NOISE * peak and late <= NOISE * peak:
        verdict = "flat"
    elif growth < 0:
        verdict = "shrinking"
    elif monotonic >= RISING_SHARE and late >= LATE_GROWTH * growth:
        verdict = "growing"
    elif late < LATE_GROWTH * growth:
        verdict = "plateaued"
    else:
        verdict = "fluctuating"
    return Trend(tuple(values), slope, monotonic, verdict)
