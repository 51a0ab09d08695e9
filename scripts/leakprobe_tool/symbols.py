"""Symbolization of dump addresses: per object, in one batched call of
addr2line (or llvm-symbolizer), with separate debug info found as gdb finds
it, ELF symbol tables for stripped objects, and perf maps for JIT code.
C++ names are demangled in one batched call of c++filt.

A name is only given when the file on disk is the one the process mapped
(same build-id as the dump records); otherwise the frame says why it has no
name, or carries a mark that its name could not be checked."""

from __future__ import annotations

import bisect
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
from dataclasses import dataclass, replace

from .dumpfile import Dump, JavaFrame, Mapping, shown
from .elf import Elf, ElfError
from .files import Refused, open_regular, read_capped

# Frames that belong to the allocator rather than the program (as jeprof and
# pprof drop them): removed from the leaf end of every stack.
ALLOCATOR_FRAME = re.compile(
    r"(operator new(\[\])?|operator delete(\[\])?|malloc|calloc|realloc|reallocarray|free|"
    r"posix_memalign|aligned_alloc|memalign|valloc|pvalloc|mallocx|rallocx|xallocx|"
    r"__libc_\w+|_Zn[wa]\w*|tc_\w+)"
)


# Frame.check: whether the file on disk is the one the process mapped.
VERIFIED = "verified"  # same build-id as the dump records
UNVERIFIED = "unverified"  # named, but the build-id could not be compared
STALE = "stale"  # replaced since the dump: not named
MISSING = "missing"  # deleted, missing, unreadable or not a regular file: not named
MANGLED = re.compile(r"_Z[A-Za-z0-9_.$]+")
PERF_MAP_CAP = 256 << 20
JAVA = "[java]"  # Frame.obj of Java frames


@dataclass(frozen=True)
class Frame:
    function: str
    file: str | None = None
    line: int | None = None
    obj: str = ""
    check: str | None = None  # None: not from a file (JIT, anonymous memory)
    mangled: str | None = None  # the name before demangling
    kind: str | None = None  # Java frames (obj JAVA): java, native, unloaded, unknown

    @property
    def name(self) -> str:
        """The function, marked when its object could not be checked."""
        return f"{self.function} [{UNVERIFIED}]" if self.check == UNVERIFIED else self.function

    def label(self, lines: bool = False) -> str:
        if lines and self.file:
            where = os.path.basename(self.file)
            return f"{self.name} {where}" if self.line is None else f"{self.name} {where}:{self.line}"
        return self.name

    def location(self) -> str:
        # A file without a line (addr2line's `file.c:?`) is the file alone.
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.obj == JAVA:
            kind = "java" if self.kind == "java" else f"java, {self.kind}"
            return f"{where}  [{kind}]" if self.file else f"[{kind}]"
        return where if self.file else self.obj


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
        self.why_not: dict[str, str] = {}  # path -> why it could not be read
        self.noted: set[str] = set()
        self.tool = tool()
        if self.tool is None:
            print(
                "leakprobe: neither addr2line nor llvm-symbolizer is installed: names come from ELF symbols only, without lines",
                file=sys.stderr,
            )
        self.jit = JitMap(dump)
        self.recorded = RecordedBuildIds(dump)
        self.entry_points: dict[int, str | None] = {}  # by return address: the allocator entry point called (entry.py)

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
        demangle_frames(self.cache)

    def frames(self, addr: int) -> tuple[Frame, ...]:
        return self.cache[addr]

    def place(self, addr: int, mapping: Mapping | None) -> Frame | tuple[str, int]:
        """(object, virtual address of the call) or a final Frame."""
        java = self.dump.java_frames.get(addr)
        if java is not None:
            return java_frame(addr, java)
        if mapping is None or not mapping.path.startswith("/"):
            name = self.jit.get(addr)
            if name:
                return Frame(name, obj="[jit]")
            where = "unmapped" if mapping is None else shown(mapping.path.strip("[]")) or "anonymous"
            # JIT code lives in anonymous memory: say why it has no name.
            refused = " (perf map refused)" if self.jit.refused and where in ("unmapped", "anonymous") else ""
            return Frame(f"[{where}] 0x{addr:x}{refused}", obj=f"[{where}]")
        offset = mapping.offset + (addr - mapping.start)
        obj = shown(mapping.file)
        if mapping.deleted:
            return Frame(f"{obj}+0x{offset:x} (file deleted since it was mapped)", obj=obj, check=MISSING)
        elf = self.elf(mapping.file)
        if elf is None:
            return Frame(f"{obj}+0x{offset:x} ({self.why_not[mapping.file]})", obj=obj, check=MISSING)
        recorded = self.recorded.get(mapping.file)
        if recorded and recorded != elf.build_id:
            return Frame(f"{obj}+0x{offset:x} (file replaced since the dump)", obj=obj, check=STALE)
        if not recorded:
            self.note_unverified(mapping.file, elf)
        vaddr = elf.vaddr_of_offset(offset)
        if vaddr is None:
            return Frame(f"{obj}+0x{offset:x}", obj=obj, check=VERIFIED if recorded else UNVERIFIED)
        # A return address points after the call: look up the call itself.
        return mapping.file, vaddr - 1

    def object_at(self, addr: int) -> tuple[str, Elf, int] | None:
        """(object, its ELF, virtual address of the call) of a return address
        in a readable object the process mapped; None otherwise."""
        where = self.place(addr, self.dump.mapping_of(addr))
        if isinstance(where, Frame):
            return None
        elf = self.elf(where[0])
        return None if elf is None else (where[0], elf, where[1])

    def note_unverified(self, path: str, elf: Elf) -> None:
        if path in self.noted:
            return
        self.noted.add(path)
        why = "the file has no build-id" if elf.build_id is None else "the dump records no build-id for it"
        print(
            f"leakprobe: note: {shown(path)}: cannot tell whether it is the file the process mapped ({why}); "
            f"its names are marked [{UNVERIFIED}]",
            file=sys.stderr,
        )

    def elf(self, path: str) -> Elf | None:
        if path not in self.elves:
            try:
                self.elves[path] = Elf(path)
            except ElfError as e:
                self.elves[path] = None
                self.why_not[path] = str(e)
            except (struct.error, IndexError):
                self.elves[path] = None
                self.why_not[path] = "not a valid ELF file"
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
        check = VERIFIED if self.recorded.get(obj) else UNVERIFIED
        shown_obj = shown(obj)
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
                outer = Frame(name or f"{os.path.basename(shown_obj)}+0x{vaddr + 1:x}")
                frames = (*(f for f in frames if f.function != "??"), outer)
            self.cache[addr] = tuple(
                Frame(f.function, shown(f.file) if f.file else None, f.line, shown_obj, check) for f in frames
            )


class RecordedBuildIds:
    """The build-id the dump records for a mapped file. The library keys it
    by the path in the memory map; older ones used the loader's name
    (`/lib/x86_64-linux-gnu/libz.so.1` for `/usr/lib/.../libz.so.1.2.13`),
    which is matched through `loaded_as` lines or by resolving both names
    here; and a name that was not UTF-8 may have been recorded lossily."""

    def __init__(self, dump: Dump) -> None:
        self.dump = dump
        self.by_real: dict[str, str] = {}
        self.by_lossy: dict[str, str] = {}
        for name, build_id in dump.build_ids.items():
            self.by_lossy.setdefault(lossy(name), build_id)
            if name.startswith("/"):
                self.by_real.setdefault(os.path.realpath(name), build_id)

    def get(self, path: str) -> str | None:
        ids = self.dump.build_ids
        found = ids.get(path) or ids.get(self.dump.loaded_as.get(path, ""))
        return found or self.by_real.get(os.path.realpath(path)) or self.by_lossy.get(lossy(path))


def lossy(path: str) -> str:
    """The path as a lossy UTF-8 conversion (Rust's to_string_lossy) shows it."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def demangle_frames(cache: dict[int, tuple[Frame, ...]]) -> None:
    """Demangles every C++ name in `cache`, in one c++filt process."""
    names = sorted({f.function for frames in cache.values() for f in frames if not f.mangled and MANGLED.fullmatch(f.function)})
    if not names:
        return
    plain = demangle(names)
    for addr, frames in cache.items():
        if any(f.function in plain for f in frames):
            cache[addr] = tuple(
                replace(f, function=plain[f.function], mangled=f.function) if f.function in plain else f for f in frames
            )


def demangle(names: list[str]) -> dict[str, str]:
    """mangled -> demangled; names c++filt does not change are left out."""
    if not shutil.which("c++filt"):
        print("leakprobe: c++filt (binutils) is not installed: C++ names are shown mangled", file=sys.stderr)
        return {}
    try:
        out = subprocess.run(
            ["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True, errors="replace", check=False
        ).stdout.splitlines()
    except OSError:
        return {}
    if len(out) != len(names):  # one line per name, or nothing is trusted
        return {}
    return {m: shown(d) for m, d in zip(names, out) if d != m}


def tool() -> str | None:
    for name in ("addr2line", "llvm-symbolizer"):
        if shutil.which(name):
            return name
    return None


def run_symbolizer(tool: str, path: str, vaddrs: list[int]) -> dict[int, tuple[Frame, ...]]:
    """address -> inline chain (innermost first), from one process."""
    if tool == "addr2line":
        cmd = ["addr2line", "-a", "-f", "-i", "-e", path]
    else:
        cmd = ["llvm-symbolizer", "--obj=" + path, "--inlining", "--no-demangle", "--output-style=GNU", "--print-address"]
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
            current.append(Frame(shown(function) or "??", file, line_no))
            i += 2
            continue
        i += 1
    return {a: tuple(f) for a, f in result.items()}


def java_frame(addr: int, java: JavaFrame) -> Frame:
    """A Java frame as the library named it (its address is no code address)."""
    if java.name is None:
        why = "class unloaded before it was named" if java.kind == "unloaded" else "unnamed method"
        return Frame(f"[java: {why}] 0x{addr:x}", obj=JAVA, kind=java.kind)
    return Frame(shown(java.name), file=java.file and shown(java.file), line=java.line, obj=JAVA, kind=java.kind)


def parse_location(where: str) -> tuple[str | None, int | None]:
    where = where.split(" (discriminator")[0]
    file, _, line = where.rpartition(":")
    if not file or file.startswith("??"):
        return None, None
    return file, int(line) if line.isascii() and line.isdigit() else None


class JitMap:
    """JIT code names from /tmp/perf-<pid>.map (lines: START SIZE NAME, hex),
    as written by `jcmd <pid> Compiler.perfmap` or perf-map-agent. Anyone can
    create that name in /tmp, so the map is read only from a regular file of
    one link, owned by the dump's user or root and not writable by others,
    and of bounded size; a refused map is said in one line."""

    def __init__(self, dump: Dump) -> None:
        self.ranges: list[tuple[int, int, str]] = []
        self.refused = False
        if dump.pid is not None:
            path = f"/tmp/perf-{dump.pid}.map"
            try:
                text = self.read(path, dump.owner)
            except FileNotFoundError:
                text = ""
            except OSError as e:
                self.refused = True
                print(f"leakprobe: {shown(path)} not used ({e.strerror or e}): JIT frames stay unnamed", file=sys.stderr)
                text = ""
            for line in text.splitlines():
                parts = line.split(" ", 2)
                try:
                    start, size = int(parts[0], 16), int(parts[1], 16)
                except (ValueError, IndexError):
                    continue
                self.ranges.append((start, start + size, shown(parts[2]) if len(parts) > 2 else "?"))
        self.ranges.sort()
        self.starts = [r[0] for r in self.ranges]

    @staticmethod
    def read(path: str, owner: int | None) -> str:
        fd, st = open_regular(path, nofollow=True)
        try:
            if st.st_uid not in (0, owner):
                raise Refused(f"owned by uid {st.st_uid}, not by the dump's user ({owner}) or root")
            if st.st_mode & stat.S_IWOTH:
                raise Refused("writable by other users")
            if st.st_nlink != 1:
                raise Refused(f"it has {st.st_nlink} hard links")
            data = read_capped(fd, st, PERF_MAP_CAP)
        finally:
            os.close(fd)
        return data.decode("utf-8", "surrogateescape")

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
        return shown(dump.meta["program"])
    if dump.build_ids:
        return shown(next(iter(dump.build_ids)))
    for m in dump.maps:
        if m.path.startswith("/"):
            return shown(m.file)
    return None
