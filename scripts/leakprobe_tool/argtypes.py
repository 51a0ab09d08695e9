"""Argument types shared by the subcommands: each one line on bad input, as argparse prints it."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """A whole number from 1 to 1,000,000 (frames, nodes)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number from 1 to 1000000")
    return value


def size(text: str) -> int:
    """A whole number of bytes from 1 (a sample period)."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number of bytes from 1")
    return int(text)


def pid(text: str) -> int:
    """A process id: digits only, not 0 (no sign, no group, no self)."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a process id")
    return int(text)


def seconds(text: str) -> float:
    """A time in seconds, above 0 and at most a day (timeouts, intervals)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds above 0 (at most 86400)")
    return value
