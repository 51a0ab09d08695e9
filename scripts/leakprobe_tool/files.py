"""Opening files a dump names. A dump is data from a process, possibly
another user's: the paths in it may name a FIFO (opening or reading it
hangs), a device (/dev/zero never ends) or a file someone planted, so every
file is opened without blocking, checked to be a regular file, and read
with a size cap."""

from __future__ import annotations

import os
import stat


class Refused(OSError):
    """A file that exists but is not read; str() says why, in a few words."""


def open_regular(path: str, nofollow: bool = False) -> tuple[int, os.stat_result]:
    """A read-only fd of a regular file and its fstat. `nofollow` refuses a
    symbolic link as the last component."""
    # Refuse before opening where possible: opening some devices has effects.
    before = os.lstat(path) if nofollow else os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise Refused(f"{kind(before.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(path, flags)
    # The name may have been swapped between the checks: the fd decides.
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Refused(f"{kind(st.st_mode)}, not a regular file")
    return fd, st


def kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def read_at(fd: int, offset: int, size: int) -> bytes:
    """Up to `size` bytes at `offset` (fewer only at the end of the file)."""
    parts = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 24), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(parts)


def read_capped(fd: int, st: os.stat_result, cap: int) -> bytes:
    """The whole file, refused when it is larger than `cap` (also when it
    grows past it while being read)."""
    if st.st_size > cap:
        raise Refused(f"larger than {cap >> 20} MiB")
    data = read_at(fd, 0, cap + 1)
    if len(data) > cap:
        raise Refused(f"larger than {cap >> 20} MiB")
    return data
