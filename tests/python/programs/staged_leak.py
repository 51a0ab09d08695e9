"""A Python program with a staged native leak, for test_python_frames.py:
records (4 KiB bytes objects, each one malloc) kept by keep_records, zlib
compressors (zlib's state, malloc'd by deflateInit2_) kept by
make_compressors, 5,000-byte blocks from libc's malloc called through ctypes
(which releases the GIL) kept by native_blocks. Prints LEAKED when all are
in place, then leaks as much again on each "go" line of stdin (printing
GREW), until another line or its end; "fork" forks a child that does the
same, "thread" runs them in a thread. Each allocating line carries a
`# MARK` comment: known truth."""

from __future__ import annotations

import os
import sys
import threading
import zlib
from ctypes import CDLL, c_size_t, c_void_p

RECORDS: list[bytes] = []
COMPRESSORS: list[object] = []
BLOCKS: list[int] = []


def keep_records(n: int) -> None:
    for i in range(n):
        RECORDS.append(bytes(4096 + i % 7))  # MARK records


def make_compressors(n: int) -> None:
    for _ in range(n):
        COMPRESSORS.append(zlib.compressobj(9))  # MARK compressors


def native_blocks(n: int) -> None:
    """malloc called through ctypes, which releases the GIL around the call."""
    libc = CDLL(None)
    libc.malloc.restype = c_void_p
    libc.malloc.argtypes = [c_size_t]
    for _ in range(n):
        BLOCKS.append(libc.malloc(5000))  # MARK blocks


def leak(records: int, compressors: int) -> None:
    keep_records(records)
    make_compressors(compressors)
    native_blocks(records // 3)


def main() -> None:
    records, compressors = int(sys.argv[1]), int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "main"
    if mode == "thread":
        t = threading.Thread(target=leak, args=(records, compressors))
        t.start()
        t.join()
    else:
        leak(records, compressors)
    if mode == "fork":
        pid = os.fork()
        if pid == 0:
            leak(records, compressors)
            print(f"CHILD {os.getpid()}", flush=True)
            sys.stdin.readline()
            os._exit(0)
    print("LEAKED", flush=True)
    # Each "go" leaks as much again (for a series of dumps).
    for line in sys.stdin:
        if line.strip() != "go":
            break
        leak(records, compressors)
        print("GREW", flush=True)
    if mode == "fork":
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
