"""`summary`: the process's memory as the dumps record it, and a verdict on
what kind of growth it is: a leak (a stack grows steadily), a cache or pool
that filled and levelled off, retention (the allocator keeps memory the
program freed), or growth outside malloc. Over three or more dumps the
verdict reads the shape of each stack's series as `trend` does; one dump
names suspects, by the live bytes their old blocks hold."""

from __future__ import annotations

from dataclasses import dataclass

from .dumpfile import Dump
from .profile import KIND_FRAME, SWING, Profile, Trend, amount, live_usable, mapped_bytes, old_threshold
from .responsible import site

# Thresholds (documented in the README). Growth counts when RSS or the live
# heap grew by at least SIGNIFICANT_SHARE of the first RSS and SIGNIFICANT_BYTES;
# a cause is named when it carries at least CAUSE_SHARE of the RSS growth.
# Over a series, leaking (or filled) stacks are named when together they
# brought at least PART_SHARE of the stacks' growth.
SIGNIFICANT_SHARE = 0.10
SIGNIFICANT_BYTES = 8 << 20
CAUSE_SHARE = 0.5
PART_SHARE = 0.2
NAMED = 3  # stacks named per kind

Key = tuple[str, ...]


@dataclass(frozen=True)
class Memory:
    time: float
    rss: int | None
    live: int  # estimated live heap, bytes the program asked for
    usable: int | None  # the same blocks as the allocator sized them (newer dumps)
    allocated: int | None  # the allocator's own count of every live block
    footprint: int | None  # what the allocator holds from the system
    held_free: int | None  # of which the program has freed
    overhead: int  # the library's own
    mapped: int | None = None  # estimated bytes the program mapped outside malloc (all kinds)

    @property
    def outside(self) -> int | None:
        """RSS that is neither the allocator's nor the library's."""
        if self.rss is None or self.footprint is None:
            return None
        return max(self.rss - self.footprint - self.overhead, 0)


def memory(dump: Dump) -> Memory:
    m = dump.meta

    def num(key: str) -> int | None:
        value = m.get(key)
        return int(value) if value and value.isdigit() else None

    live = num("estimated_live_bytes") or 0
    allocated = num("allocator_allocated_bytes")
    if num("jemalloc_resident_bytes") is not None:
        footprint = num("jemalloc_resident_bytes")
        held_free = max((footprint or 0) - (num("jemalloc_allocated_bytes") or 0), 0)
        allocated = allocated if allocated is not None else num("jemalloc_allocated_bytes")
    elif num("glibc_arena_bytes") is not None:
        footprint = (num("glibc_arena_bytes") or 0) + (num("glibc_mmapped_bytes") or 0)
        held_free = num("glibc_free_bytes")
        in_use, mapped = num("glibc_in_use_bytes"), num("glibc_mmapped_bytes")
        if allocated is None and in_use is not None and mapped is not None:
            allocated = in_use + mapped
    else:
        footprint = held_free = None
    by_kind = mapped_bytes(dump)
    return Memory(
        dump.time or 0.0,
        num("rss_bytes"),
        live,
        live_usable(dump),
        allocated,
        footprint,
        held_free,
        num("overhead_bytes") or 0,
        None if by_kind is None else sum(by_kind.values()),
    )


def growth(before: int | None, after: int | None) -> int | None:
    """How much a quantity grew, if both dumps record it."""
    return None if before is None or after is None else after - before


def verdict(
    rows: list[Memory], trends: list[tuple[Key, Trend]], mapped: list[tuple[Key, Trend]] | None = None
) -> tuple[str, str]:
    """(kind, sentence with the evidence), from the dumps' memory (by time)
    and every stack's trend over them (`profile.trends`), the heap's and
    (`mapped`) that of memory the program mapped outside malloc. Two dumps
    or more: one has its `suspects`."""
    first, last = rows[0], rows[-1]
    if first.rss is None or last.rss is None:
        return "unknown", "the dumps do not record RSS (/proc was not readable)"
    d_rss, d_live = last.rss - first.rss, last.live - first.live
    floor = max(SIGNIFICANT_BYTES, SIGNIFICANT_SHARE * first.rss)
    if d_rss < floor and d_live < floor:
        return (
            "none",
            f"no significant growth: RSS {amount(first.rss)} -> {amount(last.rss)}, "
            f"live heap {amount(first.live)} -> {amount(last.live)}",
        )
    if d_live >= CAUSE_SHARE * max(d_rss, 1):
        return live_growth(rows, trends)
    d_free = growth(first.held_free, last.held_free)
    if d_free is not None and d_free >= CAUSE_SHARE * d_rss:
        return "retention", (
            f"live heap {amount(first.live)} -> {amount(last.live)} while RSS grew {amount(d_rss)}, and the allocator "
            f"holds {amount(d_free)} more free memory: memory is retained by the allocator (fragmentation or unpurged "
            "pages), not leaked by the program"
        )
    d_out = growth(first.outside, last.outside)
    if d_out is not None and d_out >= CAUSE_SHARE * d_rss:
        return "outside malloc", (
            f"RSS grew {amount(d_rss)} while the live heap ({amount(first.live)} -> {amount(last.live)}) and the "
            f"allocator's footprint ({amount(first.footprint)} -> {amount(last.footprint)}) did not: the growth is "
            "outside malloc (mmap, thread stacks, another allocator)" + outside_stacks(first, last, d_out, mapped or [])
        )
    return "mixed", f"RSS grew {amount(d_rss)}, live heap {amount(d_live)}: no single cause carries half of it"


def outside_stacks(first: Memory, last: Memory, d_out: int, mapped: list[tuple[Key, Trend]]) -> str:
    """What of the growth outside malloc the program's own mappings explain,
    and under which stacks (dumps that record them)."""
    if first.mapped is None or last.mapped is None:
        return ""
    d_mapped = last.mapped - first.mapped
    grew = sorted(((k, t) for k, t in mapped if rise(t) > 0), key=lambda kt: -rise(kt[1]))
    if d_mapped <= 0 or not grew:
        return (
            f"; the program's own mappings did not grow ({amount(first.mapped)} -> {amount(last.mapped)}): "
            "what /proc counts but no interposed call made (another allocator linked statically, "
            "system calls made directly, the kernel, file cache)"
        )
    each = "; ".join(f"{named(k[:-1])} +{amount(rise(t))} ({kind_of(k)})" for k, t in grew[:NAMED])
    more = f"; and {len(grew) - NAMED} more stacks" if len(grew) > NAMED else ""
    rest = d_out - d_mapped
    tail = (
        f"; the other {amount(rest)} is what /proc counts but no interposed call made (another allocator linked "
        "statically, system calls made directly, the kernel, file cache)"
        if rest > SIGNIFICANT_BYTES
        else ""
    )
    return (
        f". Mappings the program made grew {amount(d_mapped)}, {min(d_mapped / max(d_out, 1), 1.0):.0%} of the "
        f"growth outside malloc: {each}{more}{tail}"
    )


def kind_of(k: Key) -> str:
    """The kind of mapped memory, from its stack's root frame."""
    return k[-1].strip("[]") if k and k[-1] in KIND_FRAME.values() else "mapped"


def rise(t: Trend) -> int:
    return t.values[-1] - t.values[0]


def named(k: Key) -> str:
    return " <- ".join(k[:3]) or "[no frames]"


def live_growth(rows: list[Memory], trends: list[tuple[Key, Trend]]) -> tuple[str, str]:
    """The live heap carries the growth: a leak, a filled cache, both, or neither."""
    first, last = rows[0], rows[-1]
    grew = f"live heap grew {amount(last.live - first.live)} ({' -> '.join(amount(r.live) for r in rows)})"
    if len(rows) == 2:
        # Two points: a leak and a cache still filling look the same.
        by_function: dict[str, int] = {}
        for k, t in trends:
            if k:
                by_function[k[0]] = by_function.get(k[0], 0) + rise(t)
        total = sum(g for g in by_function.values() if g > 0)
        where = ""
        if total > 0:
            top = max(by_function, key=lambda n: by_function[n])
            where = f", {by_function[top] / total:.0%} under {top}"
        return "leak or cache", (
            f"{grew}{where}: two dumps cannot tell a leak from a cache or pool that is still filling; take a third "
            "dump later and run summary on all three (a leak keeps growing, a cache levels off)"
        )
    total = sum(max(rise(t), 0) for _, t in trends) or 1
    leaks = sorted(((k, t) for k, t in trends if t.verdict == "growing" and rise(t) > 0), key=lambda kt: -rise(kt[1]))
    caches = sorted(((k, t) for k, t in trends if t.verdict == "plateaued"), key=lambda kt: -rise(kt[1]))
    leak = sum(rise(t) for _, t in leaks) >= PART_SHARE * total
    cache = sum(rise(t) for _, t in caches) >= PART_SHARE * total
    parts = []
    if leak:
        each = "; ".join(
            f"{named(k)} +{amount(rise(t))} ({amount(t.slope_per_hour)}/hour, rose at {t.monotonic:.0%} of steps)"
            for k, t in leaks[:NAMED]
        )
        more = f"; and {len(leaks) - NAMED} more growing stacks" if len(leaks) > NAMED else ""
        parts.append(f"a leak, still growing: {each}{more}")
    if cache:
        each = "; ".join(
            f"{named(k)} holds {amount(t.values[-1])} (grew {amount(rise(t))}, then levelled off)" for k, t in caches[:NAMED]
        )
        more = f"; and {len(caches) - NAMED} more" if len(caches) > NAMED else ""
        parts.append(f"a cache or pool that filled and stopped growing (not a leak): {each}{more}")
    if leak and cache:
        return "leak and cache", f"{grew}: both {parts[0]}; and {parts[1]}"
    if leak:
        return "leak", f"{grew}: {parts[0]}"
    if cache:
        return "cache", f"{grew}: {parts[0]}"
    swinging = sorted(((k, t) for k, t in trends if t.verdict == "fluctuating"), key=lambda kt: -max(kt[1].values))
    most = named(swinging[0][0]) if swinging else "?"
    lives = [r.live for r in rows]
    fell = any(b < a - SWING * (max(lives) - min(lives)) for a, b in zip(lives, lives[1:]))
    how = "rises and falls (memory is freed and allocated again)" if fell else "grows unevenly"
    return "fluctuating", (
        f"{grew}, but no stack grew steadily (a leak) or filled and held (a cache): the live heap {how}, "
        f"most under {most}; take more dumps to see where it settles"
    )


@dataclass
class Suspect:
    key: Key
    live: int  # estimated live bytes
    old: float  # of which in blocks older than the threshold
    oldest: int
    young: int  # the youngest live block's estimated age


def suspects(profile: Profile) -> tuple[str, str]:
    """One dump: the stacks ranked by the live bytes their old blocks hold
    (older than OLD_SHARE of the dump's window), with how old. A suspicion:
    one dump cannot show growth."""
    threshold = old_threshold([r for r in profile.dump.rows if r.live_count])
    found: dict[Key, Suspect] = {}
    for s in profile.stacks:
        if s.oldest_age is None or s.young is None:
            continue
        key = site(s.responsible_frames, lambda f: f.label())
        got = found.setdefault(key, Suspect(key, 0, 0.0, s.oldest_age, s.young))
        got.live += s.value
        got.old += s.old_bytes
        got.oldest = max(got.oldest, s.oldest_age)
        got.young = min(got.young, s.young)
    old = [x for x in found.values() if x.old >= 1]
    if not found:
        return "one dump", "the dump records no ages of live blocks (an older library): take a later dump to see growth"
    if not old:
        return "one dump", (
            f"no live block is older than {threshold:.0f} s (ages are per second): take a later dump to see which "
            "stacks hold memory over time, or two or more to see growth"
        )
    ranked = sorted(old, key=lambda x: (-x.old, x.key))
    total = sum(x.old for x in old)
    each = "; ".join(
        f"{named(x.key)} holds {amount(x.old)} in blocks older than {threshold:.0f} s ({amount(x.live)} live, "
        f"allocated from {x.oldest} s to {x.young} s ago{', and still allocating' if x.young < threshold else ''})"
        for x in ranked[:NAMED]
    )
    more = f"; and {len(ranked) - NAMED} more stacks" if len(ranked) > NAMED else ""
    return "suspects", (
        f"one dump, so a suspicion, not a verdict: {amount(total)} of the live heap is in blocks older than "
        f"{threshold:.0f} s, the first suspect first: {each}{more}. A leak keeps adding; a filled cache or start-up "
        "state does not: take later dumps and run summary on all of them to see which keep growing"
    )
