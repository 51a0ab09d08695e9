"""Just enough ELF (64-bit, little-endian) for symbolization: load segments,
build-id, .gnu_debuglink, whether DWARF is present, and the symbol tables."""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

PT_LOAD, PT_NOTE = 1, 4
SHT_SYMTAB, SHT_DYNSYM = 2, 11
STT_FUNC, STT_GNU_IFUNC = 2, 10


class ElfError(Exception):
    pass


@dataclass(frozen=True)
class Segment:
    offset: int
    vaddr: int
    filesz: int


class Elf:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                self.data = f.read()
        except OSError as e:
            raise ElfError(f"{path}: {e.strerror or e}") from None
        d = self.data
        if d[:4] != b"\x7fELF" or len(d) < 64:
            raise ElfError(f"{path}: not an ELF file")
        if d[4] != 2 or d[5] != 1:
            raise ElfError(f"{path}: not a 64-bit little-endian ELF file")
        (self.machine,) = struct.unpack_from("<H", d, 18)
        phoff, shoff = struct.unpack_from("<QQ", d, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", d, 54)
        self.segments: list[Segment] = []
        self.notes: list[tuple[int, int]] = []
        for i in range(phnum):
            p_type, _flags, off, vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", d, phoff + i * phentsize)
            if p_type == PT_LOAD:
                self.segments.append(Segment(off, vaddr, filesz))
            elif p_type == PT_NOTE:
                self.notes.append((off, filesz))
        # Section headers by index, and by name: (type, offset, size, link, entsize).
        self.section_list: list[tuple[int, int, int, int, int]] = []
        self.sections: dict[str, tuple[int, int, int, int, int]] = {}
        if shoff and shnum and shstrndx < shnum:
            headers = [struct.unpack_from("<IIQQQQIIQQ", d, shoff + i * shentsize) for i in range(shnum)]
            names_off = headers[shstrndx][4]
            for h in headers:
                entry = (h[1], h[4], h[5], h[6], h[9])
                self.section_list.append(entry)
                self.sections[self.cstring(names_off + h[0])] = entry
        self._symbols: tuple[list[int], list[tuple[int, str]]] | None = None

    def cstring(self, off: int) -> str:
        end = self.data.find(b"\0", off)
        return self.data[off : end if end >= 0 else len(self.data)].decode("utf-8", "replace")

    def vaddr_of_offset(self, offset: int) -> int | None:
        """The virtual address at which a file offset is loaded."""
        for s in self.segments:
            if s.offset <= offset < s.offset + max(s.filesz, 1):
                return s.vaddr + (offset - s.offset)
        return None

    @property
    def build_id(self) -> str | None:
        areas = list(self.notes)
        if ".note.gnu.build-id" in self.sections:
            _, off, size, _, _ = self.sections[".note.gnu.build-id"]
            areas.append((off, size))
        for off, size in areas:
            end = off + size
            while off + 12 <= end:
                namesz, descsz, kind = struct.unpack_from("<III", self.data, off)
                name_end = off + 12 + ((namesz + 3) & ~3)
                desc_end = name_end + ((descsz + 3) & ~3)
                if kind == 3 and self.data[off + 12 : off + 12 + namesz] == b"GNU\0":
                    return self.data[name_end : name_end + descsz].hex()
                off = desc_end
        return None

    @property
    def debuglink(self) -> str | None:
        section = self.sections.get(".gnu_debuglink")
        return self.cstring(section[1]) if section else None

    @property
    def has_dwarf(self) -> bool:
        return ".debug_info" in self.sections and self.sections[".debug_info"][0] != 8  # not NOBITS

    def symbol_at(self, vaddr: int) -> str | None:
        """The function symbol containing `vaddr` (.symtab, else .dynsym)."""
        if self._symbols is None:
            self._symbols = self._read_symbols()
        starts, entries = self._symbols
        i = bisect.bisect_right(starts, vaddr) - 1
        if i < 0:
            return None
        size, name = entries[i]
        return name if vaddr < starts[i] + max(size, 1) else None

    def _read_symbols(self) -> tuple[list[int], list[tuple[int, str]]]:
        table: dict[int, tuple[int, str]] = {}
        for kind, section in ((SHT_DYNSYM, ".dynsym"), (SHT_SYMTAB, ".symtab")):
            info = self.sections.get(section)
            if not info or info[0] != kind or not info[4]:
                continue
            _, off, size, link, entsize = info
            if link >= len(self.section_list):
                continue
            strtab = self.section_list[link][1]
            for pos in range(off, off + size, entsize):
                st_name, st_info, _other, shndx, value, sym_size = struct.unpack_from("<IBBHQQ", self.data, pos)
                if st_info & 0xF in (STT_FUNC, STT_GNU_IFUNC) and shndx != 0 and value:
                    table[value] = (sym_size, self.cstring(strtab + st_name).split("@")[0])
        starts = sorted(table)
        return starts, [table[s] for s in starts]
