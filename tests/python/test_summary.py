"""`summary` tells a leak from allocator retention from growth outside malloc,
with the program on glibc's malloc and linked against jemalloc (two dumps of
c-harness/growth.c, before and after it grows); over three or more dumps it
reads the shape of the series as `trend` does (c-harness/series.c: a steady
leak, a cache that fills then holds, both, and a sawtooth); and it names the
caller of a program's own allocation wrapper (c-harness/zmalloc.c)."""

from __future__ import annotations

import re
import unittest

from harness import HARNESS, Probe, dumps_around_growth, run_json, script

MIB = 1 << 20
EXPECTED = {"leak": "leak or cache", "retention": "retention", "mmap": "outside malloc"}


def verdict(program: str, mode: str) -> dict:
    return run_json("summary", *dumps_around_growth([str(HARNESS / program), mode]))


class Verdicts(unittest.TestCase):
    def check(self, program: str) -> None:
        for mode, kind in EXPECTED.items():
            with self.subTest(mode=mode):
                answer = verdict(program, mode)
                self.assertEqual(answer["verdict"], kind, answer["evidence"])
                if mode == "leak":
                    self.assertIn("under site_leak", answer["evidence"])
                    self.assertIn("two dumps cannot tell a leak from a cache", answer["evidence"])
                rss = [d["rss"] for d in answer["dumps"]]
                self.assertGreater(rss[1] - rss[0], 100 << 20, "the harness did not grow")

    def test_on_glibc_malloc(self) -> None:
        self.check("growth")

    def test_linked_against_jemalloc(self) -> None:
        self.check("growth_jemalloc")


def series(mode: str, steps: int) -> list[str]:
    """A dump at start and one after each step (each waits for its step's
    line and its own sequence number)."""
    probe = Probe("series", args=(mode,), env={"LEAKPROBE_SAMPLE": "65536"})
    probe.expect("READY")
    dumps = [str(probe.dump())]
    for step in range(1, steps + 1):
        probe.write("step\n")
        probe.expect(f"STEP {step}")
        dumps.append(str(probe.dump()))
    assert probe.finish() == 0
    return dumps


class Shapes(unittest.TestCase):
    """Over a series, `summary` and `trend` tell the same story."""

    def story(self, mode: str, steps: int) -> tuple[dict, dict[str, str]]:
        dumps = series(mode, steps)
        answer = run_json("summary", *dumps)
        trend = {s["frames"][0]: s["verdict"] for s in run_json("trend", *dumps)["stacks"] if s["frames"]}
        text = script("summary", *dumps)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn(f"verdict: {answer['verdict']}: ", text.stdout)
        return answer, trend

    def holds(self, evidence: str, site: str) -> float:
        m = re.search(rf"{site} <- main <- \S+ holds ([\d.]+) MiB", evidence)
        self.assertIsNotNone(m, evidence)
        assert m is not None
        return float(m.group(1))

    def test_fill_then_plateau_is_a_cache(self) -> None:
        answer, trend = self.story("cache", 4)
        self.assertEqual(answer["verdict"], "cache", answer["evidence"])
        self.assertAlmostEqual(self.holds(answer["evidence"], "site_cache") / 48, 1.0, delta=0.15)
        self.assertNotIn("leak,", answer["evidence"])
        self.assertEqual(trend["site_cache"], "plateaued")
        self.assertNotIn("growing", trend.values())

    def test_steady_growth_is_a_leak(self) -> None:
        answer, trend = self.story("leak", 4)
        self.assertEqual(answer["verdict"], "leak", answer["evidence"])
        m = re.search(r"site_leak <- main <- \S+ \+([\d.]+) MiB", answer["evidence"])
        self.assertIsNotNone(m, answer["evidence"])
        assert m is not None
        self.assertAlmostEqual(float(m.group(1)) / 64, 1.0, delta=0.15)
        self.assertEqual(trend["site_leak"], "growing")
        self.assertNotIn("plateaued", trend.values())

    def test_leak_and_cache_are_both_named(self) -> None:
        answer, trend = self.story("all", 4)
        self.assertEqual(answer["verdict"], "leak and cache", answer["evidence"])
        self.assertIn("site_leak <- main", answer["evidence"])
        self.assertAlmostEqual(self.holds(answer["evidence"], "site_cache") / 48, 1.0, delta=0.15)
        self.assertEqual(trend["site_leak"], "growing")
        self.assertEqual(trend["site_cache"], "plateaued")

    def test_sawtooth_is_neither(self) -> None:
        answer, trend = self.story("sawtooth", 3)  # 0, 32, 0, 32 MiB
        self.assertEqual(answer["verdict"], "fluctuating", answer["evidence"])
        self.assertIn("rises and falls", answer["evidence"])
        self.assertIn("site_sawtooth", answer["evidence"])
        self.assertEqual(trend["site_sawtooth"], "fluctuating")


class Wrappers(unittest.TestCase):
    """redis-shaped: zmalloc_usable -> ztrymalloc_usable_internal -> malloc.
    The wrappers stay in the stack, marked; flat views and verdicts name the
    caller; `--alloc-frames` adds the program's own wrapper."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.before, cls.after = dumps_around_growth("zmalloc", env={"LEAKPROBE_SAMPLE": "65536"})

    def flat(self, *extra: str) -> dict[str, int]:
        return {f["name"]: f["flat"] for f in run_json("report", self.after, "--nodecount", "50", *extra)["functions"]}

    def test_flat_view_names_the_caller(self) -> None:
        flat = self.flat()
        self.assertAlmostEqual(flat["site_dict_add"] / (96 * MIB), 1.0, delta=0.15)
        self.assertEqual(flat.get("zmalloc_usable", 0), 0)
        self.assertEqual(flat.get("ztrymalloc_usable_internal", 0), 0)
        # Unknown to the built-in list until --alloc-frames names it.
        self.assertAlmostEqual(flat["app_alloc"] / (32 * MIB), 1.0, delta=0.15)
        flat = self.flat("--alloc-frames", "app_.*")
        self.assertEqual(flat.get("app_alloc", 0), 0)
        self.assertAlmostEqual(flat["site_custom"] / (32 * MIB), 1.0, delta=0.15)

    def test_stack_keeps_the_wrappers_marked(self) -> None:
        stack = run_json("report", self.after)["stacks"][0]
        names = [(f["function"], f["allocator"]) for f in stack["frames"][:4]]
        self.assertEqual(
            names,
            [("ztrymalloc_usable_internal", True), ("zmalloc_usable", True), ("site_dict_add", False), ("main", False)],
        )
        text = script("report", self.after).stdout
        self.assertRegex(text, r"zmalloc_usable  \S+zmalloc.c:\d+  \[allocation wrapper\]")

    def test_verdict_names_the_caller(self) -> None:
        answer = run_json("summary", self.before, self.after)
        self.assertEqual(answer["verdict"], "leak or cache", answer["evidence"])
        self.assertIn("under site_dict_add", answer["evidence"])
        diff = run_json("diff", self.before, self.after)["changes"]
        self.assertEqual(diff[0]["frames"][0], "site_dict_add")

    def test_bad_regex_is_one_line(self) -> None:
        result = script("report", self.after, "--alloc-frames", "(")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)


if __name__ == "__main__":
    unittest.main()
