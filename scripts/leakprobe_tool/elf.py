"""Just enough ELF (64-bit, little-endian) for symbolization: load segments,
build-id, .gnu_debuglink, whether DWARF is present, and the symbol tables.

The file is named by a dump, so it may be anything: only the parts needed
are read (bounded reads at checked offsets, never the whole file), from a
regular file opened without blocking."""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass

from .files import Refused, open_regular, read_at

PT_LOAD, PT_NOTE = 1, 4
SHT_SYMTAB, SHT_RELA, SHT_DYNSYM = 2, 4, 11
STT_FUNC, STT_GNU_IFUNC = 2, 10
# Caps on what is read: headers and notes are small in every real object;
# the largest symbol tables (libxul, libjvm) are tens of MiB.
HEADERS_CAP = 16 << 20
NOTE_CAP = 1 << 20
TABLE_CAP = 512 << 20


class ElfError(Exception):
    pass


@dataclass(frozen=True)
class Segment:
    offset: int
    vaddr: int
    filesz: int


@dataclass(frozen=True)
class Section:
    kind: int
    offset: int
    size: int
    link: int
    entsize: int


class Elf:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            fd, st = open_regular(path)
        except Refused as e:
            raise ElfError(str(e)) from None
        except OSError:
            raise ElfError("file missing or unreadable") from None
        # Identity of the file read, so that a later read (symbols) can tell
        # whether the name now means another file.
        self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self.size = st.st_size
        try:
            self._read_headers(fd)
        finally:
            os.close(fd)
        self._symbols: tuple[list[int], list[tuple[int, str]]] | None = None
        self._slots: dict[int, str] | None = None

    def _read(self, fd: int, offset: int, size: int, cap: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"{what} lies outside the file")
        if size > cap:
            raise ElfError(f"{what} is larger than {cap >> 20} MiB")
        data = read_at(fd, offset, size)
        if len(data) != size:
            raise ElfError(f"{what}: the file shrank while being read")
        return data

    def _read_headers(self, fd: int) -> None:
        d = self._read(fd, 0, min(64, self.size), 64, "ELF header")
        if d[:4] != b"\x7fELF" or len(d) < 64:
            raise ElfError("not an ELF file")
        if d[4] != 2 or d[5] != 1:
            raise ElfError("not a 64-bit little-endian ELF file")
        (self.machine,) = struct.unpack_from("<H", d, 18)
        phoff, shoff = struct.unpack_from("<QQ", d, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", d, 54)
        self.segments: list[Segment] = []
        self.notes: list[tuple[int, int]] = []
        if phnum and phentsize < 56:
            raise ElfError("malformed program headers")
        table = self._read(fd, phoff, phnum * phentsize, HEADERS_CAP, "program headers")
        for i in range(phnum):
            p_type, _flags, off, vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
            if p_type == PT_LOAD:
                self.segments.append(Segment(off, vaddr, filesz))
            elif p_type == PT_NOTE:
                self.notes.append((off, filesz))
        self.section_list: list[Section] = []
        self.sections: dict[str, Section] = {}
        if shoff and shnum and shstrndx < shnum and shentsize >= 64:
            table = self._read(fd, shoff, shnum * shentsize, HEADERS_CAP, "section headers")
            headers = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
            names = headers[shstrndx]
            strings = self._read(fd, names[4], names[5], HEADERS_CAP, "section names")
            for h in headers:
                section = Section(h[1], h[4], h[5], h[6], h[9])
                self.section_list.append(section)
                self.sections[cstring(strings, h[0])] = section
        self.build_id = self._find_build_id(fd)
        link = self.sections.get(".gnu_debuglink")
        self.debuglink = cstring(self._read(fd, link.offset, min(link.size, 4096), 4096, ".gnu_debuglink"), 0) if link else None

    def _find_build_id(self, fd: int) -> str | None:
        areas = list(self.notes)
        if ".note.gnu.build-id" in self.sections:
            section = self.sections[".note.gnu.build-id"]
            areas.append((section.offset, section.size))
        for start, size in areas:
            try:
                data = self._read(fd, start, size, NOTE_CAP, "notes")
            except ElfError:
                continue
            off = 0
            while off + 12 <= len(data):
                namesz, descsz, kind = struct.unpack_from("<III", data, off)
                name_end = off + 12 + ((namesz + 3) & ~3)
                desc_end = name_end + ((descsz + 3) & ~3)
                if kind == 3 and data[off + 12 : off + 12 + namesz] == b"GNU\0" and desc_end <= len(data):
                    return data[name_end : name_end + descsz].hex()
                off = desc_end
        return None

    def vaddr_of_offset(self, offset: int) -> int | None:
        """The virtual address at which a file offset is loaded."""
        for s in self.segments:
            if s.offset <= offset < s.offset + max(s.filesz, 1):
                return s.vaddr + (offset - s.offset)
        return None

    @property
    def has_dwarf(self) -> bool:
        return ".debug_info" in self.sections and self.sections[".debug_info"].kind != 8  # not NOBITS

    def symbol_at(self, vaddr: int) -> str | None:
        """The function symbol containing `vaddr` (.symtab, else .dynsym)."""
        if self._symbols is None:
            try:
                self._symbols = self._read_symbols()
            except (OSError, ElfError):
                self._symbols = ([], [])
        starts, entries = self._symbols
        i = bisect.bisect_right(starts, vaddr) - 1
        if i < 0:
            return None
        size, name = entries[i]
        return name if vaddr < starts[i] + max(size, 1) else None

    def _read_symbols(self) -> tuple[list[int], list[tuple[int, str]]]:
        table: dict[int, tuple[int, str]] = {}
        fd = self._open_again()
        try:
            for kind, name in ((SHT_DYNSYM, ".dynsym"), (SHT_SYMTAB, ".symtab")):
                found = self._symbol_table(fd, kind, name)
                if found is None:
                    continue
                symbols, strings = found
                for st_name, st_info, _other, shndx, value, sym_size in struct.iter_unpack("<IBBHQQ", symbols):
                    if st_info & 0xF in (STT_FUNC, STT_GNU_IFUNC) and shndx != 0 and value:
                        table[value] = (sym_size, cstring(strings, st_name).split("@")[0])
        finally:
            os.close(fd)
        starts = sorted(table)
        return starts, [table[s] for s in starts]

    def dynamic_symbol(self, wanted: str) -> tuple[int, int] | None:
        """The value and size of a symbol the object defines in .dynsym (any
        type: a function or data), by name."""
        fd = self._open_again()
        try:
            found = self._symbol_table(fd, SHT_DYNSYM, ".dynsym")
        finally:
            os.close(fd)
        if found is None:
            return None
        symbols, strings = found
        for st_name, _info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", symbols):
            if shndx != 0 and cstring(strings, st_name) == wanted:
                return value, size
        return None

    def _open_again(self) -> int:
        """The file read at first, opened again (ElfError if it has changed)."""
        fd, st = open_regular(self.path)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self.identity:
            os.close(fd)
            raise ElfError("the file changed while being read")
        return fd

    def _symbol_table(self, fd: int, kind: int, name: str) -> tuple[bytes, bytes] | None:
        """A symbol table's entries and its names, if the object has it."""
        section = self.sections.get(name)
        if not section or section.kind != kind or section.entsize != 24 or section.link >= len(self.section_list):
            return None
        strtab = self.section_list[section.link]
        symbols = self._read(fd, section.offset, section.size - section.size % 24, TABLE_CAP, name)
        return symbols, self._read(fd, strtab.offset, strtab.size, TABLE_CAP, "symbol names")

    def code_at(self, vaddr: int, size: int) -> bytes | None:
        """`size` bytes of the file loaded at `vaddr` (None: not in the file)."""
        for s in self.segments:
            if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz:
                try:
                    fd, st = open_regular(self.path)
                except OSError:
                    return None
                try:
                    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self.identity:
                        return None
                    return self._read(fd, s.offset + (vaddr - s.vaddr), size, 4096, "code")
                except ElfError:
                    return None
                finally:
                    os.close(fd)
        return None

    def slot_symbol(self, slot: int) -> str | None:
        """The dynamic symbol whose address the loader writes at `slot` (a
        GOT entry: its .rela.plt or .rela.dyn relocation)."""
        if self._slots is None:
            try:
                self._slots = self._read_slots()
            except (OSError, ElfError):
                self._slots = {}
        return self._slots.get(slot)

    def _read_slots(self) -> dict[int, str]:
        out: dict[int, str] = {}
        fd = self._open_again()
        try:
            for section in self.section_list:
                if section.kind != SHT_RELA or section.entsize != 24 or section.link >= len(self.section_list):
                    continue
                symtab = self.section_list[section.link]
                if symtab.kind != SHT_DYNSYM or symtab.entsize != 24 or symtab.link >= len(self.section_list):
                    continue
                strtab = self.section_list[symtab.link]
                relocs = self._read(fd, section.offset, section.size - section.size % 24, TABLE_CAP, "relocations")
                symbols = self._read(fd, symtab.offset, symtab.size - symtab.size % 24, TABLE_CAP, ".dynsym")
                strings = self._read(fd, strtab.offset, strtab.size, TABLE_CAP, "symbol names")
                for offset, info, _addend in struct.iter_unpack("<QQq", relocs):
                    index = info >> 32
                    if index and (index + 1) * 24 <= len(symbols):
                        (st_name,) = struct.unpack_from("<I", symbols, index * 24)
                        out[offset] = cstring(strings, st_name).split("@")[0]
        finally:
            os.close(fd)
        return out


def cstring(data: bytes, off: int) -> str:
    end = data.find(b"\0", off)
    # Names are bytes: kept as they are, shown escaped.
    return data[off : end if end >= 0 else len(data)].decode("utf-8", "surrogateescape")
