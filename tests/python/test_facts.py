"""Facts newer libraries write, on hand-made dump text: a real dump of
c-harness/exact.cc (every allocation sampled) with the lines added as the
library writes them: `# leakprobe usable:` after each row, the usable and
allocator totals, `argv0`, and `blind` reasons. The same dump without them
(as older libraries wrote it) says nothing about usable sizes."""

from __future__ import annotations

import re
import sys
import tempfile
import unittest
from pathlib import Path

from harness import ROOT, Probe, run_json, script

sys.path.insert(0, str(ROOT / "scripts"))
from leakprobe_tool.profile import ALLOC_WRAPPER, classify

ROW = re.compile(r"(\d+): (\d+) \[\d+: \d+\] @")
ROUNDING = 24  # bytes of usable size added per live block in the hand-made lines
BLIND = [
    "malloc resolves to /usr/bin/app (the executable defines malloc): its allocations never reach leakprobe",
    "libjemalloc.so.2 is preloaded ahead of leakprobe: put leakprobe first in LD_PRELOAD",
]


NEWER = re.compile(r"# leakprobe (usable|argv0|estimated_live_usable_bytes|allocator_allocated_bytes|blind): ")


def as_older_library(text: str) -> str:
    """The dump without the lines newer libraries write (this one does)."""
    return "\n".join(line for line in text.split("\n") if not NEWER.match(line))


def with_new_facts(text: str) -> tuple[str, int, int]:
    """The dump with usable lines and facts; (text, live bytes, usable bytes)."""
    out, live, usable = [], 0, 0
    for line in text.split("\n"):
        out.append(line)
        m = ROW.match(line)
        if m and int(m.group(1)):
            count, size = int(m.group(1)), int(m.group(2))
            live, usable = live + size, usable + size + ROUNDING * count
            out.append(f"# leakprobe usable: {size + ROUNDING * count}")
        elif line.startswith("# leakprobe version:"):
            out.append("# leakprobe argv0: redis-server")
            out += [f"# leakprobe blind: {b}" for b in BLIND]
    text = "\n".join(out)
    extra = f"# leakprobe estimated_live_usable_bytes: {usable}\n# leakprobe allocator_allocated_bytes: 12345678\n"
    return text.replace("# leakprobe max_frames:", extra + "# leakprobe max_frames:", 1), live, usable


class Facts(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        probe = Probe("exact", env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        real = probe.dump()
        assert probe.finish() == 0
        older = as_older_library(real.read_text())
        where = Path(tempfile.mkdtemp(prefix="leakprobe-facts-"))
        cls.old = str(where / "old.heap")
        Path(cls.old).write_text(older)
        text, cls.live, cls.usable = with_new_facts(older)
        cls.new = str(where / "new.heap")
        Path(cls.new).write_text(text)

    def test_usable_per_stack_and_in_total(self) -> None:
        report = run_json("report", self.new, "--nodecount", "100")
        self.assertEqual(report["facts"]["estimated_live_bytes"], self.live)
        self.assertEqual(report["facts"]["estimated_live_usable_bytes"], self.usable)
        self.assertEqual(report["facts"]["allocator_allocated_bytes"], 12345678)
        stacks = {s["frames"][0]["function"]: s for s in report["stacks"]}
        self.assertEqual(stacks["site_malloc"]["bytes"], 100_000)
        self.assertEqual(stacks["site_malloc"]["usable_bytes"], 100_000 + 100 * ROUNDING)
        text = script("report", self.new).stdout
        self.assertIn("requested by the program, ~", text)
        self.assertIn("as the allocator sizes them (usable); the allocator counts 11.8 MiB allocated", text)
        self.assertRegex(text, r"#\d+ 97.7 KiB \([\d.]+%\), usable 100.0 KiB, 100 objects")

    def test_older_dump_says_nothing_about_usable(self) -> None:
        report = run_json("report", self.old, "--nodecount", "100")
        self.assertIsNone(report["facts"]["estimated_live_usable_bytes"])
        self.assertIsNotNone(report["facts"]["allocator_allocated_bytes"], "glibc's in-use + mmapped")
        self.assertTrue(all(s["usable_bytes"] is None for s in report["stacks"]))
        self.assertEqual(report["facts"]["blind"], [])
        for args in (("report", self.old), ("summary", self.old, self.old)):
            text = script(*args)
            self.assertEqual(text.returncode, 0, text.stderr)
            self.assertNotIn("usable", text.stdout)
            self.assertNotIn("WARNING", text.stdout)

    def test_summary_shows_usable_and_allocated(self) -> None:
        answer = run_json("summary", self.new, self.new)
        self.assertEqual([d["usable"] for d in answer["dumps"]], [self.usable] * 2)
        self.assertEqual([d["allocated"] for d in answer["dumps"]], [12345678] * 2)
        text = script("summary", self.new, self.new).stdout
        header = next(line for line in text.splitlines() if line.startswith("dump"))
        self.assertEqual(header.split()[1:5], ["RSS", "live", "heap", "usable"])

    def test_blind_reasons_are_warnings(self) -> None:
        self.assertEqual(run_json("report", self.new)["facts"]["blind"], BLIND)
        lines = script("report", self.new).stdout.splitlines()
        self.assertEqual(lines[1:3], [f"  WARNING: this profile cannot see every allocation: {b}" for b in BLIND])
        answer = run_json("summary", self.new, self.new)
        self.assertEqual(answer["warnings"], sorted(BLIND))
        text = script("summary", self.new, self.new).stdout.splitlines()
        self.assertEqual(text[:2], [f"WARNING: this profile cannot see every allocation: {b}" for b in sorted(BLIND)])

    def test_the_name_it_was_started_as(self) -> None:
        self.assertEqual(run_json("report", self.new)["facts"]["argv0"], "redis-server")
        self.assertRegex(script("report", self.new).stdout, r"process \d+ \(\S+/exact, started as redis-server\)")
        self.assertNotIn("started as", script("report", self.old).stdout)

    def test_usable_line_before_any_row_is_refused(self) -> None:
        bad = Path(self.new).with_name("bad.heap")
        bad.write_text(Path(self.new).read_text().replace("# leakprobe pid:", "# leakprobe usable: 5\n# leakprobe pid:", 1))
        result = script("report", str(bad))
        self.assertEqual(result.returncode, 1)
        self.assertIn("malformed usable line", result.stderr)


if __name__ == "__main__":
    unittest.main()


class Classification(unittest.TestCase):
    """The rules behind `trend` and `summary`, on exact series."""

    def test_well_known_wrappers_and_program_functions(self) -> None:
        wrappers = [
            "zmalloc_usable", "ztrymalloc_usable_internal", "zcalloc", "zrealloc", "PyMem_Malloc", "PyMem_RawMalloc",
            "_PyObject_Malloc", "PyObject_Malloc", "g_malloc", "g_malloc0", "g_realloc", "g_malloc_n", "isc__mem_get",
            "isc__mem_allocate", "os::malloc", "AllocateHeap", "_ZN2os6mallocEm8MEMFLAGSRK15NativeCallStack",
            "xmalloc", "xcalloc", "xrealloc", "CRYPTO_malloc", "__strdup",
        ]  # fmt: skip
        program = ["main", "site_leak", "dictAdd", "PyList_New", "deflateInit2_", "json_object_new_object", "zipmapNew"]
        for name in wrappers:
            self.assertTrue(ALLOC_WRAPPER.fullmatch(name), name)
        for name in program:
            self.assertFalse(ALLOC_WRAPPER.fullmatch(name), name)

    def test_series_shapes(self) -> None:
        times = [0.0, 60.0, 120.0, 180.0, 240.0]
        cases = {
            (0, 16, 32, 48, 64): "growing",
            (0, 24, 48, 48, 48): "plateaued",
            (0, 24, 48, 47, 48): "plateaued",  # a full cache's small evictions
            (32, 0, 32, 0, 32): "fluctuating",  # a sawtooth ending where it started is not flat
            (0, 32, 0, 32, 32): "fluctuating",  # nor one ending high a filled cache
            (10, 10, 10, 10, 10): "flat",
            (64, 48, 32, 16, 0): "shrinking",
        }
        for values, verdict in cases.items():
            self.assertEqual(classify(times, [v << 20 for v in values]).verdict, verdict, values)
