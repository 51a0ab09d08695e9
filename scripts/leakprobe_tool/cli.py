"""Command line of the companion script."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, TextIO

from . import attach, commands, dumpcmd, pprof, push, watch
from .argtypes import count
from .dumpfile import DumpError, shown, shown_lines
from .flamegraph import DEFAULT_DEPTH

DEPTH = 12

# Each module registers its own subcommands, in this order, as
# `register(sub, common)`: `common` holds the options every view of a dump takes.
COMMAND_MODULES = (commands, pprof, dumpcmd, attach, push, watch)


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
    common.add_argument(
        "--app-frames",
        metavar="REGEX",
        help="functions whose whole name matches REGEX are the program's own: the responsible frame is never past one",
    )
    common.add_argument("--nodecount", type=int, default=20, metavar="N", help="how many functions/stacks to show (20)")
    common.add_argument("--depth", type=count, metavar="N", help=f"frames shown per stack ({DEPTH}; flamegraph: {DEFAULT_DEPTH})")
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
    for module in COMMAND_MODULES:
        module.register(sub, common)
    return p


class Escaping:
    """stdout or stderr with every control character shown escaped (`\\x1b`)
    whatever its source: a name, a path, a dump, a relayed log line. Only the
    line ends are kept, so a value that may hold a newline of its own (a path)
    is escaped where it is shown, with `shown`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(shown_lines(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: list[str]) -> int:
    # Names and paths are shown escaped; anything left over must not stop the output.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure:
        reconfigure(errors="backslashreplace")
    sys.stdout, sys.stderr = Escaping(sys.stdout), Escaping(sys.stderr)
    args = parser().parse_args(argv)
    # Commands without --depth (dump, pprof) have none to default.
    if getattr(args, "depth", 0) is None and args.command != "flamegraph":
        args.depth = DEPTH
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
        print(f"leakprobe: {shown(str(e.filename or ''))}: {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # the promise is one line, never a traceback
        print(f"leakprobe: internal error ({type(e).__name__}: {e}); please report it with the dump", file=sys.stderr)
        return 3
