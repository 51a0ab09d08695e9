"""Symbolization of dump addresses: per object, in one batched call of
addr2line (or llvm-symbolizer), with separate debug info found as gdb finds
it, ELF symbol tables for stripped objects, and perf maps for JIT code."""

from __future__ import annotations

import bisect
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass

from .dumpfile import Dump, Mapping
from .elf import Elf, ElfError

# Frames that belong to the allocator rather than the program (as jeprof and
# pprof drop them): removed from the leaf end of every stack.
ALLOCATOR_FRAME = re.compile(
    r"(operator new(\[\])?|operator delete(\[\])?|malloc|calloc|realloc|reallocarray|free|"
    r"posix_memalign|aligned_alloc|memalign|valloc|pvalloc|mallocx|rallocx|xallocx|"
    r"__libc_\w+|_Zn[wa]\w*|tc_\w+)"
)


@dataclass(frozen=True)
class Frame:
    function: str
    file: str | None = None
    line: int | None = None
    obj: str = ""

    def label(self, lines: bool = False) -> str:
        if lines and self.file:
            return f"{self.function} {os.path.basename(self.file)}:{self.line}"
        return self.function

    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.file else self.obj


def base_name(function: str) -> str:
    """`operator new(unsigned long)@@GLIBCXX_3.4` -> `operator new`."""
    name = function.split("@")[0]
    depth, out = 0, []
    for ch in name:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out).strip()


class Symbolizer:
    def __init__(self, dump: Dump, debug_dirs: list[str]) -> None:
        self.dump = dump
        self.debug_dirs = debug_dirs
        self.cache: dict[int, tuple[Frame, ...]] = {}
        self.elves: dict[str, Elf | None] = {}
        self.tool = tool()
        if self.tool is None:
            print(
                "leakprobe: neither addr2line nor llvm-symbolizer is installed: names come from ELF symbols only, without lines",
                file=sys.stderr,
            )
        self.jit = JitMap(dump.pid)

    def symbolize(self, addresses: set[int]) -> None:
        """Resolves every address (return addresses; frame 0 excluded)."""
        by_object: dict[str, list[tuple[int, int]]] = {}
        for addr in addresses - self.cache.keys():
            mapping = self.dump.mapping_of(addr)
            where = self.place(addr, mapping)
            if isinstance(where, Frame):
                self.cache[addr] = (where,)
            else:
                by_object.setdefault(where[0], []).append((addr, where[1]))
        for obj, pairs in by_object.items():
            self.resolve_object(obj, pairs)

    def frames(self, addr: int) -> tuple[Frame, ...]:
        return self.cache[addr]

    def place(self, addr: int, mapping: Mapping | None) -> Frame | tuple[str, int]:
        """(object, virtual address of the call) or a final Frame."""
        if mapping is None or not mapping.path.startswith("/"):
            name = self.jit.get(addr)
            if name:
                return Frame(name, obj="[jit]")
            where = "unmapped" if mapping is None else mapping.path.strip("[]") or "anonymous"
            return Frame(f"[{where}] 0x{addr:x}", obj=f"[{where}]")
        offset = mapping.offset + (addr - mapping.start)
        if mapping.deleted:
            return Frame(f"{mapping.file}+0x{offset:x} (file deleted since it was mapped)", obj=mapping.file)
        elf = self.elf(mapping.file)
        if elf is None:
            return Frame(f"{mapping.file}+0x{offset:x} (file missing or unreadable)", obj=mapping.file)
        recorded = self.dump.build_ids.get(mapping.file)
        if recorded and elf.build_id and recorded != elf.build_id:
            return Frame(f"{mapping.file}+0x{offset:x} (file replaced since the dump)", obj=mapping.file)
        vaddr = elf.vaddr_of_offset(offset)
        if vaddr is None:
            return Frame(f"{mapping.file}+0x{offset:x}", obj=mapping.file)
        # A return address points after the call: look up the call itself.
        return mapping.file, vaddr - 1

    def elf(self, path: str) -> Elf | None:
        if path not in self.elves:
            try:
                self.elves[path] = Elf(path)
            except (ElfError, struct.error, IndexError):
                self.elves[path] = None
        return self.elves[path]

    def debug_file(self, path: str, elf: Elf) -> str:
        """The file with this object's DWARF: itself, or its separate debug file."""
        if elf.has_dwarf:
            return path
        candidates = []
        build_id = elf.build_id
        if build_id and len(build_id) > 2:
            candidates += [os.path.join(d, ".build-id", build_id[:2], build_id[2:] + ".debug") for d in self.debug_dirs]
        link = elf.debuglink
        if link:
            here = os.path.dirname(path)
            candidates += [os.path.join(here, link), os.path.join(here, ".debug", link)]
            candidates += [os.path.join(d + here, link) for d in self.debug_dirs]
        for c in candidates:
            debug = self.elf(c)
            if debug is not None and debug.has_dwarf and (not build_id or debug.build_id in (None, build_id)):
                return c
        return path

    def resolve_object(self, obj: str, pairs: list[tuple[int, int]]) -> None:
        elf = self.elf(obj)
        assert elf is not None
        vaddrs = sorted({v for _, v in pairs})
        source = self.debug_file(obj, elf)
        # Without DWARF, addr2line names an address after the nearest
        # preceding dynamic symbol, however far: wrong for static functions.
        # Then only the symbol tables, with their sizes, are trusted.
        has_dwarf = self.elf(source) is not None and self.elf(source).has_dwarf
        found = run_symbolizer(self.tool, source, vaddrs) if self.tool and has_dwarf else {}
        for addr, vaddr in pairs:
            frames = found.get(vaddr, ())
            if not frames or frames[-1].function == "??":
                name = elf.symbol_at(vaddr) or (self.elf(source).symbol_at(vaddr) if source != obj else None)
                outer = Frame(name or f"{os.path.basename(obj)}+0x{vaddr + 1:x}", obj=obj)
                frames = (*(f for f in frames if f.function != "??"), outer)
            self.cache[addr] = tuple(Frame(f.function, f.file, f.line, obj) for f in frames)


def tool() -> str | None:
    for name in ("addr2line", "llvm-symbolizer"):
        if shutil.which(name):
            return name
    return None


def run_symbolizer(tool: str, path: str, vaddrs: list[int]) -> dict[int, tuple[Frame, ...]]:
    """address -> inline chain (innermost first), from one process."""
    if tool == "addr2line":
        cmd = ["addr2line", "-a", "-f", "-i", "-C", "-e", path]
    else:
        cmd = ["llvm-symbolizer", "--obj=" + path, "--inlining", "--demangle", "--output-style=GNU", "--print-address"]
    stdin = "".join(f"0x{a:x}\n" for a in vaddrs)
    try:
        out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, errors="replace", check=False).stdout
    except OSError:
        return {}
    result: dict[int, list[Frame]] = {}
    current: list[Frame] | None = None
    lines = out.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("0x") and " " not in line.strip():
            current = result.setdefault(int(line, 16), [])
            i += 1
            continue
        if current is not None and i + 1 < len(lines):
            function, where = line.strip(), lines[i + 1].strip()
            file, line_no = parse_location(where)
            current.append(Frame(function or "??", file, line_no))
            i += 2
            continue
        i += 1
    return {a: tuple(f) for a, f in result.items()}


def parse_location(where: str) -> tuple[str | None, int | None]:
    where = where.split(" (discriminator")[0]
    file, _, line = where.rpartition(":")
    if not file or file.startswith("??"):
        return None, None
    return file, int(line) if line.isdigit() else None


class JitMap:
    """JIT code names from /tmp/perf-<pid>.map (lines: START SIZE NAME, hex),
    as written by `jcmd <pid> Compiler.perfmap` or perf-map-agent."""

    def __init__(self, pid: int | None) -> None:
        ranges: list[tuple[int, int, str]] = []
        try:
            with open(f"/tmp/perf-{pid}.map", encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.rstrip("\n").split(" ", 2)
                    try:
                        start, size = int(parts[0], 16), int(parts[1], 16)
                    except (ValueError, IndexError):
                        continue
                    ranges.append((start, start + size, parts[2] if len(parts) > 2 else "?"))
        except OSError:
            pass
        self.ranges = sorted(ranges)
        self.starts = [r[0] for r in self.ranges]

    def get(self, addr: int) -> str | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.ranges[i][1]:
            return self.ranges[i][2]
        return None


def program_of(dump: Dump) -> str | None:
    """The main executable: as the dump records it, else the first object
    with a build-id (the loader lists the program first), else the first
    file-backed mapping."""
    if dump.meta.get("program"):
        return dump.meta["program"]
    if dump.build_ids:
        return next(iter(dump.build_ids))
    for m in dump.maps:
        if m.path.startswith("/"):
            return m.file
    return None
