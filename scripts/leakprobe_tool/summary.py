"""`summary`: the process's memory as the dumps record it, and a verdict on
what kind of growth it is: a leak (the live heap grows), retention (the
allocator keeps memory the program freed), or growth outside malloc."""

from __future__ import annotations

from dataclasses import dataclass

from .dumpfile import Dump

# Thresholds (documented in the README). Growth counts when RSS or the live
# heap grew by at least SIGNIFICANT_SHARE of the first RSS and SIGNIFICANT_BYTES;
# a cause is named when it carries at least CAUSE_SHARE of the RSS growth.
SIGNIFICANT_SHARE = 0.10
SIGNIFICANT_BYTES = 8 << 20
CAUSE_SHARE = 0.5


@dataclass(frozen=True)
class Memory:
    time: float
    rss: int | None
    live: int  # estimated live heap
    footprint: int | None  # what the allocator holds from the system
    held_free: int | None  # of which the program has freed
    overhead: int  # the library's own

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
    if num("jemalloc_resident_bytes") is not None:
        footprint = num("jemalloc_resident_bytes")
        allocated = num("jemalloc_allocated_bytes") or 0
        held_free = max((footprint or 0) - allocated, 0)
    elif num("glibc_arena_bytes") is not None:
        footprint = (num("glibc_arena_bytes") or 0) + (num("glibc_mmapped_bytes") or 0)
        held_free = num("glibc_free_bytes")
    else:
        footprint = held_free = None
    return Memory(dump.time or 0.0, num("rss_bytes"), live, footprint, held_free, num("overhead_bytes") or 0)


def mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.1f} MiB"


def growth(before: int | None, after: int | None) -> int | None:
    """How much a quantity grew, if both dumps record it."""
    return None if before is None or after is None else after - before


def verdict(first: Memory, last: Memory, top: tuple[str, float] | None) -> tuple[str, str]:
    """(kind, sentence with the evidence). `top`: the function whose stacks
    grew most, and its share of the live heap's growth."""
    if first.rss is None or last.rss is None:
        return "unknown", "the dumps do not record RSS (/proc was not readable)"
    d_rss, d_live = last.rss - first.rss, last.live - first.live
    floor = max(SIGNIFICANT_BYTES, SIGNIFICANT_SHARE * first.rss)
    if d_rss < floor and d_live < floor:
        return (
            "none",
            f"no significant growth: RSS {mib(first.rss)} -> {mib(last.rss)}, live heap {mib(first.live)} -> {mib(last.live)}",
        )
    if d_live >= CAUSE_SHARE * max(d_rss, 1):
        where = f", {top[1]:.0%} under {top[0]}" if top else ""
        return "leak", f"live heap grew {mib(d_live)} ({mib(first.live)} -> {mib(last.live)}){where}: a leak"
    d_free = growth(first.held_free, last.held_free)
    if d_free is not None and d_free >= CAUSE_SHARE * d_rss:
        return "retention", (
            f"live heap {mib(first.live)} -> {mib(last.live)} while RSS grew {mib(d_rss)}, and the allocator holds "
            f"{mib(d_free)} more free memory: memory is retained by the allocator (fragmentation or unpurged pages), "
            "not leaked by the program"
        )
    d_out = growth(first.outside, last.outside)
    if d_out is not None and d_out >= CAUSE_SHARE * d_rss:
        return "outside malloc", (
            f"RSS grew {mib(d_rss)} while the live heap ({mib(first.live)} -> {mib(last.live)}) and the allocator's "
            f"footprint ({mib(first.footprint)} -> {mib(last.footprint)}) did not: the growth is outside malloc "
            "(mmap, thread stacks, another allocator)"
        )
    return "mixed", f"RSS grew {mib(d_rss)}, live heap {mib(d_live)}: no single cause carries half of it"
