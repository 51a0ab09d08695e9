"""Memory mapped outside malloc (c-harness/mapped.c, shm.c, brk.c):
anonymous and file mappings, thread stacks, System V shared memory and the
program's own break get their stacks, in `# leakprobe mapped:` rows that
jeprof and pprof skip, shown by `report --mmap` and named by `summary`'s
outside-malloc verdict; an allocator's own mappings (glibc's internal ones,
its heap's brk, jemalloc's through the mmap symbol) are not counted twice."""

from __future__ import annotations

import re
import shutil
import subprocess
import unittest
from pathlib import Path

from harness import HARNESS, Probe, dumps_around_growth, run_json, script

MIB = 1 << 20
KIND = {
    "[anonymous mmap]": "anon",
    "[file mmap]": "file",
    "[thread stack]": "thread_stack",
    "[SysV shared memory]": "shm",
    "[brk]": "brk",
}
NONE_MAPPED = {"anon": 0, "file": 0, "thread_stack": 0, "shm": 0, "brk": 0}


def run(program: str, mode: str, sample: str | None = "1", thread: str | None = None) -> tuple[str, dict[str, int]]:
    """A dump of the harness once it is done, and the truth it printed."""
    probe = Probe([str(HARNESS / program), mode], env={"LEAKPROBE_SAMPLE": sample, "LEAKPROBE_THREAD": thread})
    truth = {}
    while not (line := probe.lines.get(timeout=60)).startswith("READY"):
        if line.startswith("SKIP "):
            assert probe.finish() == 0
            raise unittest.SkipTest(f"{program}: {line}")
        if line.startswith("TRUTH "):
            _, site, value = line.split()
            truth[site] = int(value)
    dump = str(probe.dump())
    assert probe.finish() == 0
    return dump, truth


def by_site(dump: str, *options: str) -> dict[tuple[str, str], int]:
    """Bytes per (site_* function, kind) in `report --mmap` (or the heap)."""
    out: dict[tuple[str, str], int] = {}
    for s in run_json("report", *options, "--nodecount", "1000", dump)["stacks"]:
        names = [f["function"] for f in s["frames"]]
        site = next((n for n in names if n.startswith("site_")), "?")
        key = (site, KIND.get(names[-1], "heap"))
        out[key] = out.get(key, 0) + s["bytes"]
    return out


class Mapped(unittest.TestCase):
    def test_growth_is_named_by_summary_and_report(self) -> None:
        for sample, tolerance in (("1", 0.0), (None, 0.10)):
            with self.subTest(sample=sample or "default"):
                before, after = dumps_around_growth([str(HARNESS / "mapped"), "grow"], env={"LEAKPROBE_SAMPLE": sample})
                answer = run_json("summary", before, after)
                self.assertEqual(answer["verdict"], "outside malloc", answer["evidence"])
                m = re.search(r"site_map <- main <- \S+ \+([\d.]+) MiB \(anonymous mmap\)", answer["evidence"])
                self.assertIsNotNone(m, answer["evidence"])
                assert m is not None
                self.assertAlmostEqual(float(m.group(1)), 256.0, delta=256.0 * tolerance + 0.1)
                self.assertIn("of the growth outside malloc", answer["evidence"])
                got = by_site(after, "--mmap")[("site_map", "anon")]
                if tolerance:
                    self.assertLess(abs(got - 256 * MIB), tolerance * 256 * MIB, got)
                else:
                    self.assertEqual(got, 256 * MIB)
                self.assertEqual(by_site(before, "--mmap"), {})

    def test_unmaps_remaps_and_fixed_mappings_are_exact(self) -> None:
        dump, truth = run("mapped", "shapes")
        self.assertEqual(len(truth), 13)
        mapped = by_site(dump, "--mmap")
        for site, value in truth.items():
            kind = "file" if site == "site_file" else "anon"
            with self.subTest(site=site):
                self.assertEqual(mapped.get((site, kind), 0), value, mapped)
        self.assertEqual({k for k in mapped if k[1] == "file"}, {("site_file", "file")})
        # The large malloc is heap, mapped inside glibc: never a mapped row.
        self.assertEqual(by_site(dump)[("site_big_malloc", "heap")], 64 * MIB)
        text = script("report", "--mmap", dump).stdout
        self.assertIn("mapped outside malloc by the program: ~20.0 MiB anonymous mmap, ~1.0 MiB file mmap", text)

    def test_stacks_of_threads_never_joined(self) -> None:
        dump, truth = run("mapped", "threads")
        self.assertGreater(truth["site_unjoined"], 0)
        mapped = by_site(dump, "--mmap")
        # Joined, detached (then exited), detached after exiting, own stacks: gone.
        self.assertEqual(mapped, {("site_unjoined", "thread_stack"): truth["site_unjoined"]})

    def test_allocators_mappings_are_heap(self) -> None:
        for program in ("mapped", "mapped_jemalloc"):
            with self.subTest(program=program):
                dump, _ = run(program, "bigmalloc")
                self.assertEqual(by_site(dump, "--mmap"), {})
                self.assertEqual(by_site(dump)[("site_big_mallocs", "heap")], 256 * MIB)
                facts = run_json("report", dump)["facts"]
                self.assertEqual(facts["mapped_bytes"], NONE_MAPPED)
                if program == "mapped_jemalloc":
                    # jemalloc maps through the mmap symbol: seen, and left out.
                    calls = re.search(r"mapped_allocator_calls: (\d+)", Path(dump).read_text())
                    assert calls is not None
                    self.assertGreater(int(calls.group(1)), 0)

    def check_exact_and_zeros(self, program: str, mode: str, kind: str) -> dict[str, int]:
        """Every site's bytes exactly at LEAKPROBE_SAMPLE=1, in `kind` (shm.c's
        site_under is anonymous); at the default period, nothing left under
        the sites that keep nothing. Dumps written by a copy of the process
        (single-threaded) and by the collector thread (`always`)."""
        for sample, thread in (("1", None), ("1", "always"), (None, None)):
            with self.subTest(sample=sample or "default", thread=thread):
                dump, truth = run(program, mode, sample, thread)
                mapped = by_site(dump, "--mmap")
                if sample:
                    kinds = {"site_under": "anon"}
                    want = {(site, kinds.get(site, kind)): value for site, value in truth.items() if value}
                    self.assertEqual(mapped, want, truth)
                else:
                    gone = {site for site, value in truth.items() if not value}
                    self.assertFalse({k for k in mapped if k[0] in gone}, mapped)
        return truth

    def test_shared_memory_segments_are_exact(self) -> None:
        truth = self.check_exact_and_zeros("shm", "segments", "shm")
        self.assertEqual(len(truth), 7)

    def test_the_programs_own_break_is_exact(self) -> None:
        truth = self.check_exact_and_zeros("brk", "program", "brk")
        self.assertEqual(len(truth), 4)

    def test_mallocs_heap_grown_with_brk_is_heap_only(self) -> None:
        dump, truth = run("brk", "malloc")
        # The premise: glibc grew its main heap (with its internal brk).
        arena = re.search(r"glibc_arena_bytes: (\d+)", Path(dump).read_text())
        assert arena is not None
        self.assertGreaterEqual(int(arena.group(1)), truth["site_heap"])
        self.assertEqual(by_site(dump)[("site_heap", "heap")], truth["site_heap"])
        self.assertEqual(by_site(dump, "--mmap"), {})
        self.assertEqual(run_json("report", dump)["facts"]["mapped_bytes"], NONE_MAPPED)

    def test_jeprof_and_pprof_read_the_heap_only(self) -> None:
        dump, _ = run("mapped", "shapes")
        program = str(HARNESS / "mapped")
        for tool, command, total in (
            ("jeprof", ["jeprof", "--text", program, dump], r"Total: ([\d.]+) MB"),
            ("go", ["go", "tool", "pprof", "-text", program, dump], r"of ([\d.]+)kB total"),
        ):
            with self.subTest(tool=tool):
                if not shutil.which(tool):
                    self.skipTest(f"{tool} is not installed")
                out = subprocess.run(command, capture_output=True, text=True, check=False)
                m = re.search(total, out.stdout + out.stderr)
                self.assertIsNotNone(m, out.stdout + out.stderr)
                assert m is not None
                # 64 MiB of heap (and a few KiB of stdio's); the 21 MiB mapped are not in it.
                megabytes = float(m.group(1)) / (1024 if tool == "go" else 1)
                self.assertAlmostEqual(megabytes, 64.0, delta=0.1)


if __name__ == "__main__":
    unittest.main()
