"""The commands: report, diff, trend, collapsed, flamegraph."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from typing import Any

from .dumpfile import Dump, read_dump
from .flamegraph import render_svg
from .profile import Profile, Stack, Trend, build, classify
from .summary import memory, mib, verdict
from .symbols import Frame, Symbolizer, program_of


def load(args: argparse.Namespace, path: str) -> Profile:
    dump = read_dump(path)
    symbolizer = Symbolizer(dump, [*args.debug_dir, "/usr/lib/debug"])
    focus = re.compile(args.focus) if args.focus else None
    ignore = re.compile(args.ignore) if args.ignore else None
    return build(dump, args.measure, symbolizer, focus, ignore)


def amount(value: float, unit: str) -> str:
    if unit != "bytes":
        return f"{value:,.0f}"
    for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {name}"
    return f"{value:.0f} B"


def percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:5.1f}%" if whole else "    -"


def frame_json(f: Frame) -> dict[str, Any]:
    return {
        "function": f.function,
        "mangled": f.mangled,
        "file": f.file,
        "line": f.line,
        "object": f.obj,
        "build_id_check": f.check,
    }


def stack_json(s: Stack) -> dict[str, Any]:
    return {
        "value": s.value,
        "objects": s.objects,
        "bytes": s.bytes,
        "samples": s.samples,
        "oldest_age": s.oldest_age,
        "mean_age": s.mean_age,
        "frames": [frame_json(f) for f in s.frames],
    }


def facts(dump: Dump) -> dict[str, Any]:
    meta = dump.meta
    return {
        "file": dump.path,
        "pid": dump.pid,
        "program": program_of(dump),
        "time": dump.time,
        "sample_period": dump.period,
        "allocator": meta.get("allocator"),
        "live_samples": int(meta.get("live_samples", "0")),
        "samples_dropped": int(meta.get("samples_dropped", "0")),
        "bytes_dropped": int(meta.get("bytes_dropped", "0")),
        "samples_unresolved": int(meta.get("samples_unresolved", "0")),
        "stacks_cut_short": int(meta.get("stacks_cut_short", "0")),
    }


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "unknown time"


def print_facts(dump: Dump) -> None:
    f = facts(dump)
    print(f"{f['file']}")
    print(f"  process {f['pid']} ({f['program']}), dumped {when(f['time'])}")
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


def report(args: argparse.Namespace) -> int:
    p = load(args, args.dump)
    functions = p.functions(args.lines)
    if args.json:
        out = {
            "facts": facts(p.dump),
            "measure": p.measure,
            "unit": p.unit,
            "estimate": True,
            "total": p.total,
            "functions": [{"name": n, "flat": fl, "cum": c} for n, fl, c in functions[: args.nodecount]],
            "stacks": [stack_json(s) for s in p.stacks[: args.nodecount]],
        }
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    print_facts(p.dump)
    print(f"  total {p.measure}: {amount(p.total, p.unit)} (estimated: sampled counts un-sampled as jeprof and pprof do)")
    print()
    print(f"Top functions by {p.measure}:")
    print(f"{'flat':>12} {'flat%':>6} {'sum%':>6} {'cum':>12} {'cum%':>6}  function")
    running = 0
    for name, fl, cum in functions[: args.nodecount]:
        running += fl
        print(
            f"{amount(fl, p.unit):>12} {percent(fl, p.total)} {percent(running, p.total)} "
            f"{amount(cum, p.unit):>12} {percent(cum, p.total)}  {name}"
        )
    print()
    print("Top stacks:")
    for i, s in enumerate(p.stacks[: args.nodecount], 1):
        age = f", oldest {s.oldest_age} s, mean age {s.mean_age:.0f} s" if s.oldest_age is not None else ""
        share = percent(s.value, p.total).strip()
        print(f"#{i} {amount(s.value, p.unit)} ({share}), {s.objects:,} objects, {s.samples:,} samples{age}")
        for f in s.frames[: args.depth]:
            print(f"      {f.name}  {f.location()}")
        if len(s.frames) > args.depth:
            print(f"      ... {len(s.frames) - args.depth} more frames")
    return 0


def keyed(p: Profile, lines: bool) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for s in p.stacks:
        key = tuple(f.label(lines) for f in s.frames)
        out[key] = out.get(key, 0) + s.value
    return out


def diff(args: argparse.Namespace) -> int:
    base, new = load(args, args.base), load(args, args.dump)
    if base.dump.pid != new.dump.pid:
        print(f"leakprobe: note: the dumps are of different processes ({base.dump.pid} and {new.dump.pid})", file=sys.stderr)
    before, after = keyed(base, args.lines), keyed(new, args.lines)
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
        f"({'+' if net >= 0 else ''}{amount(net, new.unit)}), from {base.dump.path} to {new.dump.path}"
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
    profiles = sorted((load(args, d) for d in args.dumps), key=lambda p: p.dump.time or 0.0)
    times = [p.dump.time or float(i) for i, p in enumerate(profiles)]
    series = [keyed(p, args.lines) for p in profiles]
    keys = set().union(*series)
    trends: list[tuple[tuple[str, ...], Trend]] = []
    for k in keys:
        t = classify(times, [s.get(k, 0) for s in series])
        trends.append((k, t))
    order = {"growing": 0, "fluctuating": 1, "plateaued": 2, "shrinking": 3, "flat": 4}
    trends.sort(key=lambda kt: (order[kt[1].verdict], -kt[1].slope_per_hour, kt[0]))
    unit = profiles[0].unit
    hours = (times[-1] - times[0]) / 3600.0
    if args.json:
        json.dump(
            {
                "dumps": [facts(p.dump) for p in profiles],
                "measure": args.measure,
                "unit": unit,
                "stacks": [dict(dataclasses.asdict(t), frames=list(k)) for k, t in trends[: args.nodecount]],
            },
            sys.stdout,
            indent=1,
        )
        print()
        return 0
    print(f"{len(profiles)} dumps over {hours * 60:.1f} minutes, {args.measure} per stack, steadiest growth first")
    print(f"{'verdict':<12} {'slope/hour':>12} {'rising':>6} {'first':>10} {'last':>10}  stack")
    for k, t in trends[: args.nodecount]:
        print(
            f"{t.verdict:<12} {amount(t.slope_per_hour, unit):>12} {t.monotonic:6.0%} "
            f"{amount(t.values[0], unit):>10} {amount(t.values[-1], unit):>10}  {' <- '.join(k[: args.depth])}"
        )
    return 0


def collapsed_lines(p: Profile, lines: bool) -> list[str]:
    out = []
    for s in p.stacks:
        if s.value > 0:
            path = ";".join(f.label(lines).replace(";", ":") for f in reversed(s.frames)) or "[no frames]"
            out.append(f"{path} {s.value}")
    return out


def collapsed(args: argparse.Namespace) -> int:
    p = load(args, args.dump)
    print("\n".join(collapsed_lines(p, args.lines)))
    return 0


def flamegraph(args: argparse.Namespace) -> int:
    p = load(args, args.dump)
    title = f"{p.measure} of pid {p.dump.pid} ({program_of(p.dump)}), {when(p.dump.time)}, estimated"
    svg = render_svg(
        [(tuple(f.label(args.lines) for f in reversed(s.frames)), s.value) for s in p.stacks if s.value > 0],
        title=title,
        unit=p.unit,
        depth=args.depth,
    )
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(svg)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def summary(args: argparse.Namespace) -> int:
    profiles = sorted((load(args, d) for d in args.dumps), key=lambda p: p.dump.time or 0.0)
    rows = [memory(p.dump) for p in profiles]
    top = None
    if len(profiles) > 1:
        before, after = keyed(profiles[0], False), keyed(profiles[-1], False)
        growth: dict[str, int] = {}
        for k in before.keys() | after.keys():
            if k:
                growth[k[0]] = growth.get(k[0], 0) + after.get(k, 0) - before.get(k, 0)
        total = sum(g for g in growth.values() if g > 0)
        if total > 0:
            name = max(growth, key=lambda n: growth[n])
            top = (name, growth[name] / total)
    kind, sentence = verdict(rows[0], rows[-1], top) if len(rows) > 1 else ("one dump", "take a later dump to see growth")
    if args.json:
        json.dump(
            {
                "dumps": [dict(dataclasses.asdict(r), file=p.dump.path, outside=r.outside) for r, p in zip(rows, profiles)],
                "verdict": kind,
                "evidence": sentence,
            },
            sys.stdout,
            indent=1,
        )
        print()
        return 0
    print(f"{'dump':<40} {'RSS':>11} {'live heap':>11} {'held free':>11} {'outside':>11} {'overhead':>11}")
    for r, p in zip(rows, profiles):
        cells = [mib(v) for v in (r.rss, r.live, r.held_free, r.outside, r.overhead)]
        print(f"{p.dump.path[-40:]:<40} " + " ".join(f"{c:>11}" for c in cells))
    print(f"\nverdict: {kind}: {sentence}")
    return 0
