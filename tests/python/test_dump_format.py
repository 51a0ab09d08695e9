"""A malformed or truncated dump is named as such (the file, the line, what is
wrong; exit 1), never an internal error (issue 21 item 8)."""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

from harness import ROOT, Probe

sys.path.insert(0, str(ROOT / "scripts"))
from leakprobe_tool.cli import main
from leakprobe_tool.dumpfile import unescaped
from leakprobe_tool.symbols import Frame

MAP_START = b"\nMAPPED_LIBRARIES:\n"


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


class DumpFormat(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        probe = Probe("dump_target", env={"LEAKPROBE_SAMPLE": "1"})
        try:
            probe.expect("READY")
            cls.valid = probe.dump().read_bytes()
            assert probe.finish() == 0
        finally:
            shutil.rmtree(probe.dir, True)
        cls.dir = Path(tempfile.mkdtemp(prefix="leakprobe-format-"))

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.dir, True)

    def write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def assert_named(self, path: str, code: int, err: str) -> None:
        """Exit 0, or exit 1 with one line that names the file."""
        self.assertIn(code, (0, 1), err)
        if code == 1:
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertTrue(err.startswith(f"leakprobe: {path}: "), err)
            self.assertNotIn("internal error", err)

    def test_a_number_turned_into_a_control_byte(self) -> None:
        for key in (b"java_stacks", b"java_stacks_not_walkable", b"live_samples"):
            line = self.valid[: self.valid.index(b"# leakprobe " + key + b": ")].count(b"\n") + 1
            broken = re.sub(rb"^(# leakprobe " + key + rb": )[0-9]+$", lambda m: m.group(1) + b"\x08", self.valid, flags=re.M)
            path = self.write("control.heap", broken)
            code, _, err = run("report", path)
            self.assertEqual((code, err), (1, f"leakprobe: {path}: line {line}: '\\x08' is not a whole number\n"), key)

    def test_random_byte_flips_are_named(self) -> None:
        rng = random.Random(21)
        named = 0
        for i in range(200):
            data = bytearray(self.valid)
            data[rng.randrange(len(data))] = rng.randrange(256)
            path = self.write(f"flip{i}.heap", bytes(data))
            code, _, err = run("report", path, "--nodecount", "3")
            self.assert_named(path, code, err)
            named += code == 1
        self.assertGreater(named, 20)  # the flips did reach the parser

    def test_a_dump_cut_at_a_line_end_inside_its_map(self) -> None:
        whole = self.valid
        # The library says how long its memory map is.
        self.assertRegex(whole, rb"\n# leakprobe maps_bytes: [0-9]+\n")
        code, _, err = run("report", self.write("whole.heap", whole))
        self.assertEqual(code, 0, err)
        maps = whole.index(MAP_START) + len(MAP_START)
        length = len(whole) - maps
        ends = [m.end() for m in re.finditer(rb"\n", whole[maps:-1])]
        for cut in (ends[0], ends[len(ends) // 2], ends[-1]):
            path = self.write("cut.heap", whole[: maps + cut])
            code, _, err = run("report", path)
            self.assertEqual(
                (code, err), (1, f"leakprobe: {path}: is truncated (its memory map has {cut} of its {length} bytes)\n")
            )
        extra = b"7f0000000000-7f0000001000 r--p 00000000 00:00 0 \n"
        path = self.write("long.heap", whole + extra)
        code, _, err = run("report", path)
        self.assertEqual(
            (code, err),
            (1, f"leakprobe: {path}: is corrupt (its memory map has {length + len(extra)} bytes, not the {length} it says)\n"),
        )


class ProgramPath(unittest.TestCase):
    def test_escaped_paths_are_read_back_to_their_bytes(self) -> None:
        decoded = unescaped("/srv/lp\\xff\\\\x41\\n\\t\\x1b.é")
        self.assertEqual(os.fsencode(decoded), b"/srv/lp\xff\\x41\n\t\x1b.\xc3\xa9")
        self.assertEqual(unescaped("/usr/bin/plain"), "/usr/bin/plain")


class FrameLocation(unittest.TestCase):
    def test_a_file_without_a_line_is_the_file_alone(self) -> None:
        self.assertEqual(Frame("f", "src/a.cc", None, "/lib/x.so").location(), "src/a.cc")
        self.assertEqual(Frame("f", "src/a.cc", 12, "/lib/x.so").location(), "src/a.cc:12")
        self.assertEqual(Frame("f", None, None, "/lib/x.so").location(), "/lib/x.so")
        self.assertEqual(Frame("f", "src/a.cc", None, "/lib/x.so").label(lines=True), "f a.cc")


if __name__ == "__main__":
    unittest.main()
