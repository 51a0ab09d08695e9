"""Which allocator entry point the program called (`mallocx`, `calloc`,
`operator new[]`...), read from the call instruction before a sample's
first return address: the library records its own function as frame 0
(one per kind of allocation, `malloc` for `mallocx` too), but the caller's
code says which function it called, directly or through its PLT or GOT."""

from __future__ import annotations

import re
import struct

from .dumpfile import Row
from .elf import Elf
from .symbols import ALLOCATOR_FRAME, Symbolizer

# Names as pprof and jeprof show them.
SHOWN = {"_Znwm": "operator new", "_Znam": "operator new[]"}
# The entry points of memory mapped outside malloc (`report --mmap`).
MAPPING = re.compile(r"mmap(64)?|mremap|shmat|s?brk|pthread_create")
ENDBR64 = b"\xf3\x0f\x1e\xfa"


def entry_point(symbolizer: Symbolizer, row: Row) -> str | None:
    """The allocator entry point `row`'s first caller called, if its code
    says so and it is one (a tail call from a wrapper says nothing)."""
    if len(row.frames) < 2:
        return None
    ret = row.frames[1]
    if ret not in symbolizer.entry_points:
        symbolizer.entry_points[ret] = called(symbolizer, ret)
    return symbolizer.entry_points[ret]


def called(symbolizer: Symbolizer, ret: int) -> str | None:
    found = symbolizer.object_at(ret)
    if found is None:
        return None
    _, elf, call = found
    after = call + 1  # the return address, as the object is linked
    code = elf.code_at(after - 6, 6)
    if code is None:
        return None
    name = None
    if code[1] == 0xE8:  # call rel32
        target = after + struct.unpack_from("<i", code, 2)[0]
        name = through_plt(elf, target) or elf.symbol_at(target)
    elif code[:2] == b"\xff\x15":  # call *disp32(%rip): -fno-plt
        name = elf.slot_symbol(after + struct.unpack_from("<i", code, 2)[0])
    if not name or not (ALLOCATOR_FRAME.fullmatch(name) or MAPPING.fullmatch(name)):
        return None
    if name.startswith("_Zn"):
        return "operator new[]" if name.startswith("_Zna") else "operator new"
    return SHOWN.get(name, name)


def through_plt(elf: Elf, target: int) -> str | None:
    """The function a PLT entry jumps to: `[endbr64] [bnd] jmp *slot(%rip)`."""
    code = elf.code_at(target, 16)
    if code is None:
        return None
    at = 4 if code.startswith(ENDBR64) else 0
    if code[at : at + 1] == b"\xf2":
        at += 1
    if code[at : at + 2] != b"\xff\x25":
        return None
    end = target + at + 6
    return elf.slot_symbol(end + struct.unpack_from("<i", code, at + 2)[0])
