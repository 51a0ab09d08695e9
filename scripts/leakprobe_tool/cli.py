"""Command line of the companion script."""

from __future__ import annotations

import argparse
import re
import sys

from . import attach, commands, dumpcmd, pprof
from .dumpfile import DumpError
from .flamegraph import DEFAULT_DEPTH

DEPTH = 12


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number from 1 to 1000000")
    return value


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    measure = common.add_mutually_exclusive_group()
    for name, what in (
        ("inuse-space", "estimated live bytes (default)"),
        ("inuse-objects", "estimated live objects"),
        ("alloc-space", "estimated bytes allocated since start"),
        ("alloc-objects", "estimated objects allocated since start"),
    ):
        measure.add_argument(f"--{name}", dest="measure", action="store_const", const=name, help=what)
    common.set_defaults(measure="inuse-space")
    common.add_argument(
        "--mmap",
        action="store_true",
        help="memory the program mapped outside malloc (mmap, thread stacks, SysV shared memory, brk) instead of the heap",
    )
    common.add_argument("--focus", metavar="REGEX", help="only stacks with a function matching REGEX")
    common.add_argument("--ignore", metavar="REGEX", help="drop stacks with a function matching REGEX")
    common.add_argument(
        "--alloc-frames",
        metavar="REGEX",
        help="also skip functions whose whole name matches REGEX as allocation wrappers (like zmalloc, g_malloc)",
    )
    common.add_argument("--nodecount", type=int, default=20, metavar="N", help="how many functions/stacks to show (20)")
    common.add_argument(
        "--depth", type=positive, metavar="N", help=f"frames shown per stack ({DEPTH}; flamegraph: {DEFAULT_DEPTH})"
    )
    common.add_argument("--lines", action="store_true", help="functions with file:line")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument(
        "--debug-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="also look for separate debug info here (like /usr/lib/debug, which is always searched)",
    )

    p = argparse.ArgumentParser(
        prog="leakprobe", description="Symbolized reports, diffs, trends and flame graphs from leakprobe dumps."
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("report", parents=[common], help="top functions and stacks of one dump")
    s.add_argument("dump")
    s.set_defaults(run=commands.report)
    s = sub.add_parser("diff", parents=[common], help="what grew and shrank between two dumps")
    s.add_argument("base")
    s.add_argument("dump")
    s.set_defaults(run=commands.diff)
    s = sub.add_parser("trend", parents=[common], help="rank stacks by steady growth over a series of dumps")
    s.add_argument("dumps", nargs="+")
    s.set_defaults(run=commands.trend)
    s = sub.add_parser("summary", parents=[common], help="memory accounting and a leak/retention verdict over dumps")
    s.add_argument("dumps", nargs="+")
    s.set_defaults(run=commands.summary)
    s = sub.add_parser("collapsed", parents=[common], help="folded stacks for flamegraph.pl, inferno, speedscope")
    s.add_argument("dump")
    s.set_defaults(run=commands.collapsed)
    s = sub.add_parser("flamegraph", parents=[common], help="interactive SVG flame graph")
    s.add_argument("dump")
    s.add_argument("-o", "--output", required=True, help="the .svg file to write")
    s.set_defaults(run=commands.flamegraph)
    s = sub.add_parser("pprof", help="symbolized profile.proto (gzipped) for go tool pprof and profiling backends")
    s.add_argument("dumps", nargs="+", metavar="DUMP", help="one or more dumps, summed into one profile")
    s.add_argument("-o", "--output", required=True, help="the .pb.gz file to write")
    s.add_argument("--base", action="append", metavar="OLDER", help="subtract this dump (repeatable): the growth since")
    s.add_argument("--keep-allocator-frames", action="store_true", help="keep malloc, operator new... at the leaf")
    s.add_argument("--mmap", action="store_true", help="the memory mapped outside malloc instead of the heap (as report)")
    s.add_argument("--debug-dir", action="append", default=[], metavar="DIR", help="as for report")
    s.set_defaults(run=pprof.export)
    dumpcmd.register(sub)
    attach.register(sub)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    # Commands without --depth (dump, pprof) have none to default.
    if getattr(args, "depth", 0) is None and args.command != "flamegraph":
        args.depth = DEPTH
    # Names and paths are shown escaped; anything left over must not stop the output.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure:
        reconfigure(errors="backslashreplace")
    try:
        return int(args.run(args))
    except DumpError as e:
        print(f"leakprobe: {e}", file=sys.stderr)
        return 1
    except re.error as e:
        print(f"leakprobe: bad regular expression {e.pattern!r}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:
        print(f"leakprobe: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # the promise is one line, never a traceback
        print(f"leakprobe: internal error ({type(e).__name__}: {e}); please report it with the dump", file=sys.stderr)
        return 3
