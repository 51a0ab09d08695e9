"""make bench's Python workload: N 4 KiB bytes objects made and dropped (one
malloc each) twelve Python frames deep, for the cost per sample of Python
frames (scripts/bench, the `python` section)."""

import sys


def deep(n: int, count: int) -> None:
    if n:
        deep(n - 1, count)
        return
    for _ in range(count):
        bytes(4096)


deep(10, int(sys.argv[1]))
