"""`summary` tells a leak from allocator retention from growth outside malloc,
with the program on glibc's malloc and linked against jemalloc: two dumps of
c-harness/growth.c, before and after it grows."""

from __future__ import annotations

import unittest

from harness import HARNESS, Probe, run_json

EXPECTED = {"leak": "leak", "retention": "retention", "mmap": "outside malloc"}


def verdict(program: str, mode: str) -> dict:
    probe = Probe([str(HARNESS / program), mode])
    probe.expect("READY")
    before = str(probe.dump())
    probe.write("go\n")
    probe.expect("GREW", timeout=120)
    after = str(probe.dump())
    assert probe.finish() == 0
    return run_json("summary", before, after)


class Verdicts(unittest.TestCase):
    def check(self, program: str) -> None:
        for mode, kind in EXPECTED.items():
            with self.subTest(mode=mode):
                answer = verdict(program, mode)
                self.assertEqual(answer["verdict"], kind, answer["evidence"])
                if mode == "leak":
                    self.assertIn("under site_leak", answer["evidence"])
                rss = [d["rss"] for d in answer["dumps"]]
                self.assertGreater(rss[1] - rss[0], 100 << 20, "the harness did not grow")

    def test_on_glibc_malloc(self) -> None:
        self.check("growth")

    def test_linked_against_jemalloc(self) -> None:
        self.check("growth_jemalloc")


if __name__ == "__main__":
    unittest.main()
