"""Bad input never produces a traceback: one line naming the file, exit 1."""

from __future__ import annotations

import contextlib
import io
import random
import sys
import tempfile
import unittest
from pathlib import Path

from harness import ROOT, Probe

sys.path.insert(0, str(ROOT / "scripts"))
from leakprobe_tool.cli import main


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


class BadInput(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        probe = Probe("exact", env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        cls.valid = probe.dump().read_bytes()
        assert probe.finish() == 0
        cls.dir = Path(tempfile.mkdtemp(prefix="leakprobe-bad-"))

    def write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def assert_one_line_error(self, path: str, expect: str = "") -> None:
        code, _, err = run("report", path)
        self.assertEqual(code, 1, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith(f"leakprobe: {path}: "), err)
        self.assertIn(expect, err)

    def test_named_problems(self) -> None:
        self.assert_one_line_error(self.write("empty.heap", b""), "is empty")
        self.assert_one_line_error(self.write("foreign.heap", Path("/bin/true").read_bytes()), "not a leakprobe dump")
        self.assert_one_line_error(self.write("text.heap", b"hello\nworld\n"), "not a leakprobe heap profile")
        self.assert_one_line_error(self.write("cut.heap", self.valid[: len(self.valid) // 3]), "truncated")
        self.assert_one_line_error(self.write(".x.heap.tmp", self.valid), "still being written")
        self.assert_one_line_error(str(self.dir / "missing.heap"), "cannot be read")
        other = self.valid.replace(b"# leakprobe arch: x86_64", b"# leakprobe arch: aarch64")
        self.assert_one_line_error(self.write("arm.heap", other), "comes from a aarch64 process")

    def test_java_frame_lines(self) -> None:
        """A Java frame's address is named from its line; a malformed line is refused."""
        text = self.valid.decode()
        first_row = next(line for line in text.splitlines() if " @ 0x" in line and not line.startswith("#"))
        addr = 0x4000_1FF3_E380_21D2
        java = f"# leakprobe java_frame: {addr:#x} java com.example.Exporter.compress Exporter.java:57\n"
        rows = first_row + f" {addr:#x}"
        header, _, rest = text.partition("\n")
        named = self.write("java.heap", f"{header}\n{java}{rest.replace(first_row, rows)}".encode())
        code, out, err = run("report", named, "--depth", "200")
        self.assertEqual(code, 0, err)
        self.assertIn("com.example.Exporter.compress  Exporter.java:57  [java]", out)
        for bad in ("0x12 compiled a.b c:1", "zz java a.b c:1", "0x12 java a.b"):
            broken = f"{header}\n# leakprobe java_frame: {bad}\n{rest}"
            self.assert_one_line_error(self.write("bad-java.heap", broken.encode()), "malformed java_frame line")

    def test_random_truncations_and_byte_flips(self) -> None:
        rng = random.Random(1234)
        for i in range(150):
            cut = rng.randrange(0, len(self.valid))
            self.check_no_crash(self.write(f"trunc{i}.heap", self.valid[:cut]))
        for i in range(150):
            data = bytearray(self.valid)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            self.check_no_crash(self.write(f"flip{i}.heap", bytes(data)))

    def check_no_crash(self, path: str) -> None:
        code, _, err = run("report", path, "--nodecount", "3")
        self.assertIn(code, (0, 1), f"{path}: {err}")
        if code == 1:
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertTrue(err.startswith(f"leakprobe: {path}: "), err)


if __name__ == "__main__":
    unittest.main()
