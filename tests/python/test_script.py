"""The companion script on real dumps from the C harness."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

from harness import HARNESS, Probe, run_json, script, site_line

MIB = 1 << 20


def by_function(report: dict) -> dict[str, tuple[int, int]]:
    return {f["name"]: (f["flat"], f["cum"]) for f in report["functions"]}


class Series(unittest.TestCase):
    """Five dumps of a process with a steady leak (16 MiB per step), a cache
    that fills in two steps (48 MiB) then holds, and churn. Sampled every
    64 KiB on average, so a 64 KiB block is sampled with probability 0.63 and
    each estimate below stands on hundreds of samples."""

    dumps: list[str]

    @classmethod
    def setUpClass(cls) -> None:
        probe = Probe("series", env={"LEAKPROBE_SAMPLE": "65536"})
        probe.expect("READY")
        cls.dumps = []
        for step in range(1, 6):
            probe.write("step\n")
            probe.expect(f"STEP {step}")
            cls.dumps.append(str(probe.dump()))
        assert probe.finish() == 0

    def test_report_names_the_leak_with_its_size(self) -> None:
        report = run_json("report", self.dumps[-1], "--nodecount", "50")
        self.assertTrue(report["estimate"])
        self.assertEqual(report["functions"][0]["name"], "site_leak")
        flat, _ = by_function(report)["site_leak"]
        self.assertAlmostEqual(flat / (80 * MIB), 1.0, delta=0.15)
        cache, _ = by_function(report)["site_cache"]
        self.assertAlmostEqual(cache / (48 * MIB), 1.0, delta=0.15)
        self.assertEqual(by_function(report).get("site_churn", (0, 0))[0], 0)

    def test_diff_shows_the_leak_growing_and_nothing_else(self) -> None:
        diff = run_json("diff", self.dumps[2], self.dumps[4])
        first = diff["changes"][0]
        self.assertEqual(first["frames"][0], "site_leak")
        self.assertAlmostEqual(first["change"] / (32 * MIB), 1.0, delta=0.15)
        for other in diff["changes"][1:]:
            self.assertLess(abs(other["change"]), 0.01 * first["change"], other["frames"])

    def test_trend_ranks_the_leak_first_and_the_cache_as_plateaued(self) -> None:
        trend = run_json("trend", *self.dumps)
        stacks = trend["stacks"]
        self.assertEqual(stacks[0]["frames"][0], "site_leak")
        self.assertEqual(stacks[0]["verdict"], "growing")
        self.assertEqual(stacks[0]["monotonic"], 1.0)
        cache = [s for s in stacks if s["frames"][0] == "site_cache"]
        self.assertEqual([s["verdict"] for s in cache], ["plateaued"])
        growing = [s["frames"][0] for s in stacks if s["verdict"] == "growing"]
        self.assertEqual(growing, ["site_leak"])

    def test_collapsed_sums_equal_the_report_total(self) -> None:
        for measure in ("--inuse-space", "--alloc-objects"):
            total = run_json("report", self.dumps[-1], measure)["total"]
            folded = script("collapsed", self.dumps[-1], measure)
            self.assertEqual(folded.returncode, 0, folded.stderr)
            values = [int(line.rsplit(" ", 1)[1]) for line in folded.stdout.splitlines()]
            self.assertEqual(sum(values), total, measure)
            self.assertTrue(all(";" in line and line.startswith("_start") for line in folded.stdout.splitlines()))

    def test_flamegraph_is_well_formed_and_matches_the_report(self) -> None:
        out = Path(tempfile.mkdtemp()) / "flame.svg"
        result = script("flamegraph", self.dumps[-1], "-o", str(out))
        self.assertEqual(result.returncode, 0, result.stderr)
        svg = ET.parse(out).getroot()
        frames = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "f"]
        report = run_json("report", self.dumps[-1], "--nodecount", "100")
        root = [g for g in frames if g.get("data-depth") == "0"]
        self.assertEqual(int(root[0].get("data-value")), report["total"])
        widest = sorted(frames[1:], key=lambda g: -int(g.get("data-value")))
        cum = {f["name"]: f["cum"] for f in report["functions"]}
        for g in widest[:8]:
            self.assertEqual(int(g.get("data-value")), cum[g.get("data-name")], g.get("data-name"))
        self.assertIn("site_leak", [g.get("data-name") for g in widest[:8]])
        self.render_in_chromium(out)

    def render_in_chromium(self, svg: Path) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        self.assertIsNotNone(chromium, "chromium is not installed (scripts/install-deps installs it)")
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tempfile.mkdtemp()}",
        ]  # fmt: skip
        dom = subprocess.run([chromium, *flags, "--dump-dom", svg.as_uri()], capture_output=True, text=True, timeout=120)
        root_tag = dom.stdout[dom.stdout.find("<svg") :].split(">", 1)[0]
        self.assertIn('data-ready="1"', root_tag, dom.stderr[-2000:])
        self.assertNotIn("data-error=", root_tag)
        png = svg.with_suffix(".png")
        shot = [chromium, *flags, f"--screenshot={png}", "--window-size=1200,700", svg.as_uri()]
        subprocess.run(shot, capture_output=True, timeout=120, check=False)
        self.assertTrue(png.exists() and png.stat().st_size > 10_000, "no screenshot")


class Ages(unittest.TestCase):
    """Live samples carry their age: memory that is old and still growing is
    the leak signal."""

    def test_oldest_and_mean_age_per_stack(self) -> None:
        probe = Probe("series", env={"LEAKPROBE_SAMPLE": "65536"})
        probe.expect("READY")
        probe.write("step\n")
        probe.expect("STEP 1")
        time.sleep(2.2)  # not synchronisation: the age under test
        probe.write("step\n")
        probe.expect("STEP 2")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        stacks = {s["frames"][0]["function"]: s for s in run_json("report", dump, "--nodecount", "50")["stacks"]}
        leak = stacks["site_leak"]
        self.assertGreaterEqual(leak["oldest_age"], 2)
        self.assertLess(leak["mean_age"], leak["oldest_age"], "half of the leak is new")
        # Whole seconds of a coarse clock: 2.2 s reads as 2 or 3.
        self.assertRegex(script("report", dump).stdout, r"oldest [23] s, mean age [0-2] s")


class ChangedFiles(unittest.TestCase):
    """A binary deleted, missing or replaced since the dump is named as such,
    never symbolized with the wrong file."""

    def dump_of_copy(self, delete_while_running: bool) -> tuple[str, Path]:
        copy = Path(tempfile.mkdtemp()) / "demo_copy"
        shutil.copy(HARNESS / "demo", copy)
        probe = Probe([str(copy)], env={"LEAKPROBE_SAMPLE": "4096"})
        probe.expect("demo: pid")
        if delete_while_running:
            copy.unlink()
        dump = str(probe.dump_with_samples(20))
        probe.kill()
        return dump, copy

    def leaf(self, dump: str) -> str:
        return run_json("report", dump)["stacks"][0]["frames"][0]["function"]

    def test_deleted_while_running(self) -> None:
        dump, _ = self.dump_of_copy(delete_while_running=True)
        self.assertIn("(file deleted since it was mapped)", self.leaf(dump))

    def test_missing_then_replaced(self) -> None:
        dump, copy = self.dump_of_copy(delete_while_running=False)
        self.assertEqual(self.leaf(dump), "parse_headers")
        copy.unlink()
        self.assertIn("(file missing or unreadable)", self.leaf(dump))
        shutil.copy(HARNESS / "exact", copy)
        self.assertIn("(file replaced since the dump)", self.leaf(dump))


class Exact(unittest.TestCase):
    """Every allocation sampled: the report's numbers are exact."""

    @classmethod
    def setUpClass(cls) -> None:
        probe = Probe("exact", env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        cls.dump = str(probe.dump())
        assert probe.finish() == 0

    def test_objects_and_bytes(self) -> None:
        objects = by_function(run_json("report", self.dump, "--inuse-objects", "--nodecount", "100"))
        space = by_function(run_json("report", self.dump, "--nodecount", "100"))
        self.assertEqual(objects["site_malloc"][0], 100)
        self.assertEqual(space["site_malloc"][0], 100_000)
        self.assertEqual(space["site_cross_thread"][0], 300_000)
        self.assertEqual(space["site_first_free_thread"][0], 200_000)
        self.assertEqual(space["site_new_object"][0], 25 * 700)
        allocated = by_function(run_json("report", self.dump, "--alloc-objects", "--nodecount", "100"))
        self.assertEqual(allocated["site_churn"][0], 1000)

    def test_focus_and_ignore(self) -> None:
        focused = run_json("report", self.dump, "--focus", "^site_malloc$")
        self.assertEqual(focused["total"], 100_000)
        everything = run_json("report", self.dump)["total"]
        ignored = run_json("report", self.dump, "--ignore", "^site_malloc$")["total"]
        self.assertEqual(everything - ignored, 100_000)

    def test_text_report_shows_facts_and_lines(self) -> None:
        text = script("report", self.dump, "--lines", "--nodecount", "40")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("sample period 1 bytes", text.stdout)
        self.assertIn("0 samples dropped", text.stdout)
        self.assertIn("estimated", text.stdout)
        self.assertIn(f"site_malloc exact.cc:{site_line('exact.cc', 'SITE site_malloc')}", text.stdout)


class CutShort(unittest.TestCase):
    """A program that registers an unwind table at run time: the stacks the
    caching unwinder cannot finish are cut short, and the report says how many."""

    def test_report_counts_stacks_cut_short(self) -> None:
        probe = Probe("unwind_shapes", args=("register",), env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        text = script("report", dump)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("20 stacks cut short", text.stdout)
        self.assertEqual(run_json("report", dump)["facts"]["stacks_cut_short"], 20)


class SeparateDebugInfo(unittest.TestCase):
    """A PIE built with -g, stripped of everything, debug info under .build-id."""

    def test_lines_come_from_the_separate_debug_file(self) -> None:
        probe = Probe("stripped_pie", env={"LEAKPROBE_SAMPLE": "4096"})
        probe.expect("demo: pid")
        dump = str(probe.dump_with_samples(20))
        probe.kill()
        found = run_json("report", dump, "--debug-dir", str(HARNESS / "debug"))
        leaf = found["stacks"][0]["frames"][0]
        self.assertEqual(leaf["function"], "parse_headers")
        self.assertTrue(leaf["file"].endswith("demo.c"), leaf)
        self.assertEqual(leaf["line"], site_line("demo.c", "leaked: never freed"))
        # Without the debug file the same frame has no name: the line above
        # really came from it.
        self.assertEqual(found["unnamed"], [])
        report = run_json("report", dump)
        bare = report["stacks"][0]["frames"][0]
        self.assertTrue(bare["function"].startswith("stripped_pie+0x"), bare)
        self.assertIsNone(bare["file"])
        # ... and the report says why, and what would name it.
        [unnamed] = report["unnamed"]
        build_id = unnamed["build_id"]
        self.assertTrue((HARNESS / "debug/.build-id" / build_id[:2] / f"{build_id[2:]}.debug").exists(), unnamed)
        self.assertIn("stripped", unnamed["why"])
        text = script("report", dump).stdout
        self.assertRegex(text, rf"\d+ addresses in \S+/stripped_pie have no name: it is stripped .* build-id {build_id}")
        self.assertIn("--debug-dir", text)


if __name__ == "__main__":
    unittest.main()
