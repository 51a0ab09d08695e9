"""The commands: report, diff, trend, collapsed, flamegraph."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from typing import Any

from .dumpfile import Dump, read_dump, shown
from .flamegraph import render_svg
from .profile import KIND_FRAME, Profile, Stack, amount, build, mapped_bytes, mapped_view, trends, unnamed_objects
from .summary import memory, suspects, verdict
from .symbols import JAVA, PYTHON, Frame, Symbolizer, program_of


def load(args: argparse.Namespace, path: str, mmap: bool | None = None) -> Profile:
    dump = read_dump(path)
    if args.mmap if mmap is None else mmap:
        dump = mapped_view(dump)
    symbolizer = Symbolizer(dump, [*args.debug_dir, "/usr/lib/debug"])
    patterns = (args.focus, args.ignore, args.alloc_frames, getattr(args, "app_frames", None))
    focus, ignore, alloc, app = (re.compile(r) if r else None for r in patterns)
    return build(dump, args.measure, symbolizer, focus, ignore, alloc, app)


def load_series(args: argparse.Namespace, mmap: bool | None = None) -> list[Profile]:
    return sorted((load(args, d, mmap) for d in args.dumps), key=lambda p: p.dump.time or 0.0)


def percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:5.1f}%" if whole else "    -"


def frame_json(f: Frame, allocator: bool = False) -> dict[str, Any]:
    return {
        "function": f.function,
        "mangled": f.mangled,
        "file": f.file,
        "line": f.line,
        "object": f.obj,
        "build_id_check": f.check,
        "allocator": allocator,
        "java": f.kind if f.obj == JAVA else None,
        "python": f.kind if f.obj == PYTHON else None,
    }


def stack_json(s: Stack) -> dict[str, Any]:
    return {
        "value": s.value,
        "objects": s.objects,
        "bytes": s.bytes,
        "usable_bytes": s.usable,
        "samples": s.samples,
        "oldest_age": s.oldest_age,
        "mean_age": s.mean_age,
        "entry_points": list(s.entries),
        "responsible": s.responsible if s.frames else None,
        "responsible_note": s.note,
        "old_bytes": round(s.old_bytes),
        "frames": [
            dict(frame_json(f, i < s.alloc_frames), moved_by=s.moved[i] if i < len(s.moved) else None)
            for i, f in enumerate(s.frames)
        ],
    }


def facts(dump: Dump) -> dict[str, Any]:
    meta = dump.meta
    m = memory(dump)
    return {
        "file": dump.path,
        "pid": dump.pid,
        "program": program_of(dump),
        "argv0": shown(meta["argv0"]) if "argv0" in meta else None,
        "blind": dump.blind,
        "time": dump.time,
        "sample_period": dump.period,
        "allocator": meta.get("allocator"),
        "live_samples": int(meta.get("live_samples", "0")),
        "samples_dropped": int(meta.get("samples_dropped", "0")),
        "bytes_dropped": int(meta.get("bytes_dropped", "0")),
        "samples_unresolved": int(meta.get("samples_unresolved", "0")),
        "stacks_cut_short": int(meta.get("stacks_cut_short", "0")),
        "java_stacks": int(meta.get("java_stacks", "0")),
        "java_stacks_not_walkable": int(meta.get("java_stacks_not_walkable", "0")),
        "estimated_live_bytes": m.live,
        "estimated_live_usable_bytes": m.usable,
        "allocator_allocated_bytes": m.allocated,
        "mapped_bytes": mapped_bytes(dump),
    }


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "unknown time"


def warning(blind: str) -> str:
    return f"WARNING: this profile cannot see every allocation: {blind}"


def attached(dump: Dump) -> str | None:
    """The library was attached to the running process (docs/attach.md): when,
    and what that means, as one line; None for a preloaded one."""
    value = dump.meta.get("attached")
    if value is None:
        return None
    try:
        at = when(float(value.partition(":")[0]))
    except ValueError:
        at = "an unknown time"
    return f"attached at {at}: allocations before it are not seen (growth is since then)"


def print_facts(dump: Dump) -> None:
    f = facts(dump)
    print(shown(f["file"]))
    for reason in dump.blind:
        print(f"  {warning(reason)}")
    if attached(dump):
        print(f"  {attached(dump)}")
    started = f", started as {f['argv0']}" if f["argv0"] and f["argv0"] != f["program"] else ""
    print(f"  process {f['pid']} ({f['program']}{started}), dumped {when(f['time'])}")
    print(f"  sample period {f['sample_period']:,} bytes; allocator {f['allocator']}")
    print(
        f"  {f['live_samples']:,} live samples; {f['samples_dropped']:,} samples dropped "
        f"({f['bytes_dropped']:,} bytes); {f['samples_unresolved']:,} unresolved"
    )
    if f["stacks_cut_short"]:
        print(
            f"  {f['stacks_cut_short']:,} stacks cut short where the caching unwinder stopped "
            "(the program registers unwind tables at run time, so libgcc's unwinder is not used)"
        )
    usable = f["estimated_live_usable_bytes"]
    sized = f", ~{amount(usable)} as the allocator sizes them (usable)" if usable is not None else ""
    print(
        f"  live heap: ~{amount(f['estimated_live_bytes'])} requested by the program{sized}; "
        f"the allocator counts {amount(f['allocator_allocated_bytes'])} allocated (every block, exactly)"
    )
    mapped = f["mapped_bytes"]
    if mapped is not None:
        kinds = ", ".join(f"~{amount(mapped[k])} {KIND_FRAME[k][1:-1]}" for k in mapped)
        print(f"  mapped outside malloc by the program: {kinds} (by stack: --mmap)")


def report(args: argparse.Namespace) -> int:
    p = load(args, args.dump)
    functions = p.functions(args.lines)
    held = p.responsible(args.lines)
    if args.json:
        out = {
            "facts": facts(p.dump),
            "measure": p.measure,
            "unit": p.unit,
            "estimate": True,
            "total": p.total,
            "functions": [
                {"name": n, "responsible": held.get(n, 0), "flat": fl, "cum": c} for n, fl, c in functions[: args.nodecount]
            ],
            "stacks": [stack_json(s) for s in p.stacks[: args.nodecount]],
            "unnamed": unnamed_objects(p),
        }
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    print_facts(p.dump)
    print(f"  total {p.measure}: {amount(p.total, p.unit)} (estimated: sampled counts un-sampled as jeprof and pprof do)")
    print()
    print(f"Top functions by {p.measure}:")
    print(f"{'resp':>12} {'resp%':>6} {'sum%':>6} {'flat':>12} {'flat%':>6} {'cum':>12} {'cum%':>6}  function")
    running = 0
    for name, fl, cum in functions[: args.nodecount]:
        mine = held.get(name, 0)
        running += mine
        print(
            f"{amount(mine, p.unit):>12} {percent(mine, p.total)} {percent(running, p.total)} "
            f"{amount(fl, p.unit):>12} {percent(fl, p.total)} {amount(cum, p.unit):>12} {percent(cum, p.total)}  {name}"
        )
    print(
        "(resp: under stacks whose responsible frame, the program's own code past allocation wrappers and runtime "
        "layers, is this function; flat: its first frame past allocation wrappers, as pprof -top)"
    )
    print()
    print("Top stacks:")
    for i, s in enumerate(p.stacks[: args.nodecount], 1):
        age = f", oldest {s.oldest_age} s, mean age {s.mean_age:.0f} s" if s.oldest_age is not None else ""
        usable = f", usable {amount(s.usable)}" if s.usable is not None and p.unit == "bytes" else ""
        share = percent(s.value, p.total).strip()
        via = f", via {' and '.join(s.entries)}" if s.entries else ""
        print(f"#{i} {amount(s.value, p.unit)} ({share}){usable}, {s.objects:,} objects, {s.samples:,} samples{age}{via}")
        for j, f in enumerate(s.frames[: args.depth]):
            print(f"      {f.name}  {f.location()}{frame_mark(s, j)}")
        if len(s.frames) > args.depth:
            print(f"      ... {len(s.frames) - args.depth} more frames")
    for u in unnamed_objects(p):
        print_unnamed(u)
    return 0


def frame_mark(s: Stack, j: int) -> str:
    """Which rule moved past a frame, and which frame is responsible."""
    if j < s.responsible:
        return f"  [{s.moved[j]}]" if j < len(s.moved) else ""
    if j == s.responsible and s.responsible:
        return "  <- responsible" + (f": {s.note}" if s.note else "")
    return ""


def print_unnamed(u: dict[str, Any]) -> None:
    print(f"\n{u['addresses']} addresses in {u['object']} have no name: {u['why']}; {u['fix']}.")


def diff(args: argparse.Namespace) -> int:
    base, new = load(args, args.base), load(args, args.dump)
    if base.dump.pid != new.dump.pid:
        print(f"leakprobe: note: the dumps are of different processes ({base.dump.pid} and {new.dump.pid})", file=sys.stderr)
    before, after = base.by_stack(args.lines), new.by_stack(args.lines)
    changes = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in before.keys() | after.keys()), key=lambda t: (-t[0], t[1]))
    changes = [c for c in changes if c[0] != 0]
    net = new.total - base.total
    if args.json:
        json.dump(
            {
                "base": facts(base.dump),
                "dump": facts(new.dump),
                "measure": new.measure,
                "unit": new.unit,
                "net": net,
                "changes": [
                    {"change": d, "before": before.get(k, 0), "after": after.get(k, 0), "frames": list(k)}
                    for d, k in changes[: args.nodecount]
                ],
            },
            sys.stdout,
            indent=1,
        )
        print()
        return 0
    print(
        f"{new.measure}: {amount(base.total, new.unit)} -> {amount(new.total, new.unit)} "
        f"({'+' if net >= 0 else ''}{amount(net, new.unit)}), from {shown(base.dump.path)} to {shown(new.dump.path)}"
    )
    print()
    grew = [c for c in changes if c[0] > 0][: args.nodecount]
    shrank = [c for c in reversed(changes) if c[0] < 0][: args.nodecount]
    for title, rows in (("Grew:", grew), ("Shrank:", shrank)):
        print(title)
        for d, k in rows:
            print(
                f"  {'+' if d > 0 else ''}{amount(d, new.unit):>11}  "
                f"({amount(before.get(k, 0), new.unit)} -> {amount(after.get(k, 0), new.unit)})  "
                f"{' <- '.join(k[: args.depth])}"
            )
        if not rows:
            print("  (nothing)")
        print()
    return 0


def trend(args: argparse.Namespace) -> int:
    if len(args.dumps) < 3:
        print("leakprobe: trend needs at least 3 dumps (for 2, use diff)", file=sys.stderr)
        return 2
    profiles = load_series(args)
    found = trends(profiles, args.lines)
    unit = profiles[0].unit
    hours = ((profiles[-1].dump.time or 0.0) - (profiles[0].dump.time or 0.0)) / 3600.0
    if args.json:
        json.dump(
            {
                "dumps": [facts(p.dump) for p in profiles],
                "measure": args.measure,
                "unit": unit,
                "stacks": [dict(dataclasses.asdict(t), frames=list(k)) for k, t in found[: args.nodecount]],
            },
            sys.stdout,
            indent=1,
        )
        print()
        return 0
    print(f"{len(profiles)} dumps over {hours * 60:.1f} minutes, {args.measure} per stack, steadiest growth first")
    print(f"{'verdict':<12} {'slope/hour':>12} {'rising':>6} {'first':>10} {'last':>10}  stack")
    for k, t in found[: args.nodecount]:
        print(
            f"{t.verdict:<12} {amount(t.slope_per_hour, unit):>12} {t.monotonic:6.0%} "
            f"{amount(t.values[0], unit):>10} {amount(t.values[-1], unit):>10}  {' <- '.join(k[: args.depth])}"
        )
    return 0


def flame_label(f: Frame, lines: bool) -> str:
    """A frame in collapsed stacks and flame graphs: Java frames end in `_[j]`,
    as flamegraph.pl and perf-map-agent mark them (its --color=java)."""
    return f"{f.label(lines)}_[j]" if f.obj == JAVA else f.label(lines)


def collapsed_lines(p: Profile, lines: bool) -> list[str]:
    out = []
    for s in p.stacks:
        if s.value > 0:
            path = ";".join(flame_label(f, lines).replace(";", ":") for f in reversed(s.frames)) or "[no frames]"
            out.append(f"{path} {s.value}")
    return out


def collapsed(args: argparse.Namespace) -> int:
    p = load(args, args.dump)
    print("\n".join(collapsed_lines(p, args.lines)))
    return 0


def flamegraph(args: argparse.Namespace) -> int:
    p = load(args, args.dump)
    title = f"{p.measure} of pid {p.dump.pid} ({program_of(p.dump)}), {when(p.dump.time)}, estimated"
    # Each stack up to its responsible frame; --full-stacks: down to the allocator.
    stacks = [(s.frames if args.full_stacks else s.responsible_frames, s.value) for s in p.stacks if s.value > 0]
    svg = render_svg(
        [(tuple(flame_label(f, args.lines) for f in reversed(frames)), value) for frames, value in stacks],
        title=title,
        unit=p.unit,
        depth=args.depth,
    )
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(svg)
    print(f"wrote {shown(args.output)}", file=sys.stderr)
    return 0


def summary(args: argparse.Namespace) -> int:
    profiles = load_series(args, mmap=False)
    rows = [memory(p.dump) for p in profiles]
    if len(profiles) == 1:
        kind, sentence = suspects(profiles[0])
    else:
        kind, sentence = verdict(rows, trends(profiles), trends(load_series(args, mmap=True)))
    # The verdict may name a frame without a name: say why, and what would name it.
    unnamed = [u for u in unnamed_objects(profiles[-1]) if f"{os.path.basename(str(u['object']))}+0x" in sentence]
    if args.json:
        json.dump(
            {
                "dumps": [
                    dict(dataclasses.asdict(r), file=p.dump.path, outside=r.outside, blind=p.dump.blind)
                    for r, p in zip(rows, profiles)
                ],
                "warnings": sorted({b for p in profiles for b in p.dump.blind}),
                "verdict": kind,
                "evidence": sentence,
                "unnamed": unnamed,
            },
            sys.stdout,
            indent=1,
        )
        print()
        return 0
    for reason in sorted({b for p in profiles for b in p.dump.blind}):
        print(warning(reason))
    for line in sorted({a for p in profiles if (a := attached(p.dump))}):
        print(line)
    columns = [("RSS", "rss"), ("live heap", "live"), ("usable", "usable"), ("allocated", "allocated")]
    columns += [("held free", "held_free"), ("outside", "outside"), ("overhead", "overhead")]
    # Dumps from before usable sizes were recorded say nothing about them.
    columns = [c for c in columns if c[1] != "usable" or any(r.usable is not None for r in rows)]
    print(f"{'dump':<32} " + " ".join(f"{title:>10}" for title, _ in columns))
    for r, p in zip(rows, profiles):
        print(f"{shown(p.dump.path)[-32:]:<32} " + " ".join(f"{amount(getattr(r, name)):>10}" for _, name in columns))
    usable = "; usable: the same blocks as the allocator sized them" if any(c[1] == "usable" for c in columns) else ""
    print(f"(live heap: estimated bytes the program asked for{usable}; allocated: the allocator's own exact count)")
    print(f"\nverdict: {kind}: {sentence}")
    for u in unnamed:
        print_unnamed(u)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("report", parents=[common], help="top functions and stacks of one dump")
    s.add_argument("dump")
    s.set_defaults(run=report)
    s = sub.add_parser("diff", parents=[common], help="what grew and shrank between two dumps")
    s.add_argument("base")
    s.add_argument("dump")
    s.set_defaults(run=diff)
    s = sub.add_parser("trend", parents=[common], help="rank stacks by steady growth over a series of dumps")
    s.add_argument("dumps", nargs="+")
    s.set_defaults(run=trend)
    s = sub.add_parser("summary", parents=[common], help="memory accounting and a leak/retention verdict over dumps")
    s.add_argument("dumps", nargs="+")
    s.set_defaults(run=summary)
    s = sub.add_parser("collapsed", parents=[common], help="folded stacks for flamegraph.pl, inferno, speedscope")
    s.add_argument("dump")
    s.set_defaults(run=collapsed)
    s = sub.add_parser("flamegraph", parents=[common], help="interactive SVG flame graph")
    s.add_argument("dump")
    s.add_argument("-o", "--output", required=True, help="the .svg file to write")
    s.add_argument(
        "--full-stacks",
        action="store_true",
        help="down to the allocator (by default each stack ends at its responsible frame)",
    )
    s.set_defaults(run=flamegraph)
