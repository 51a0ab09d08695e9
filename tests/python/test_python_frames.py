"""Python frames: a CPython program's native leak is traced into the Python
function that keeps it (qualname, file and line), with nothing but
LD_PRELOAD: Debian's python3 (3.11, stripped, non-PIE) and every pyenv
CPython from 3.11 on; threads, a fork, a malloc made with the GIL released;
a process with no Python gets no Python frames."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import tempfile
import time
import unittest
from pathlib import Path

from harness import ROOT, Probe, run_json, script

PROGRAM = ROOT / "tests/python/programs/staged_leak.py"
DEBIAN = "/usr/bin/python3.11"
RECORDS, COMPRESSORS = 300, 40
BLOCKS = RECORDS // 3
# deflateInit2_ allocates 5 blocks (state, window, prev, head, pending buffer).
ZLIB_BLOCKS = 5


def marked(marker: str) -> int:
    for n, line in enumerate(PROGRAM.read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# MARK {marker}"):
            return n
    raise AssertionError(marker)


def interpreters() -> list[str]:
    """Debian's python3.11 and each pyenv CPython 3.11+ the machine has."""
    found = [DEBIAN] if os.path.exists(DEBIAN) else []
    for path in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))):
        version = re.search(r"/3\.(\d+)\.", path)
        if version and int(version.group(1)) >= 11:
            found.append(path)
    return found


def dump_of(pid: int, directory: Path, timeout: float = 30.0) -> Path:
    """Asks process `pid` for a dump and waits for it (numbered dumps)."""
    before = set(directory.glob(f"leakprobe.{pid}.*.heap"))
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while True:
        new = set(directory.glob(f"leakprobe.{pid}.*.heap")) - before
        if new:
            return new.pop()
        if time.monotonic() > deadline:
            raise AssertionError(f"no dump of {pid} within {timeout}s")
        time.sleep(0.02)


class PythonFrames(unittest.TestCase):
    def run_leak(self, python: str, *mode: str) -> tuple[Probe, str]:
        probe = Probe([python, str(PROGRAM), str(RECORDS), str(COMPRESSORS), *mode], env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("LEAKED")
        return probe, str(probe.dump())

    def check_leak(self, dump: str, python: str, times: int = 1) -> None:
        """Each function's leak named at its line, exact at LEAKPROBE_SAMPLE=1
        (`times` over: a fork child holds its parent's leak and its own)."""
        for function, marker, sizes, count in (
            ("keep_records", "records", range(4096 + 33, 4096 + 40), RECORDS),
            ("make_compressors", "compressors", range(0), COMPRESSORS * ZLIB_BLOCKS),
            ("native_blocks", "blocks", range(5000, 5001), BLOCKS),
        ):
            with self.subTest(python=python, function=function):
                report = run_json("report", dump, "--focus", f"^{function}$", "--depth", "60", "--nodecount", "1000")
                if function == "make_compressors":
                    # zlib's own blocks, under deflateInit2_ (the interpreter's
                    # small objects beside them are its overhead).
                    stacks = [s for s in report["stacks"] if any(f["function"] == "deflateInit2_" for f in s["frames"])]
                else:
                    stacks = [s for s in report["stacks"] if s["bytes"] // max(s["objects"], 1) in sizes]
                self.assertEqual(sum(s["objects"] for s in stacks), count * times, [s["objects"] for s in stacks])
                where = {(f["file"], f["line"], f["object"]) for s in stacks for f in s["frames"] if f["function"] == function}
                self.assertEqual(where, {(str(PROGRAM), marked(marker), "[python]")})

    def test_every_cpython_names_the_functions_that_keep_the_memory(self) -> None:
        found = interpreters()
        if not found:
            self.skipTest("no CPython 3.11+ on this machine")
        for python in found:
            probe, dump = self.run_leak(python)
            self.assertEqual(probe.finish(), 0)
            self.check_leak(dump, python)
            text = Path(dump).read_text()
            self.assertIn("# leakprobe python_stacks_unpaired: 0\n", text)

    def test_the_verdict_names_the_python_functions(self) -> None:
        if not os.path.exists(DEBIAN):
            self.skipTest(f"{DEBIAN} is not installed (scripts/install-deps installs python3)")
        probe = Probe([DEBIAN, str(PROGRAM), str(RECORDS), str(COMPRESSORS)], env={"LEAKPROBE_SAMPLE": "65536"})
        probe.expect("LEAKED")
        dumps = []
        for _ in range(3):
            probe.write("go\n")
            probe.expect("GREW")
            dumps.append(str(probe.dump()))
        self.assertEqual(probe.finish(), 0)
        answer = run_json("summary", *dumps)
        self.assertEqual(answer["verdict"], "leak", answer["evidence"])
        growing = answer["evidence"].split("a leak, still growing: ")[1].split("; ")
        # Largest first: zlib's state, then the records, then the ctypes blocks,
        # each charged to the Python function that keeps it.
        self.assertEqual([g.split(" <- ")[0] for g in growing[:3]], ["make_compressors", "keep_records", "native_blocks"])

    def test_a_thread_and_a_fork(self) -> None:
        if not os.path.exists(DEBIAN):
            self.skipTest(f"{DEBIAN} is not installed (scripts/install-deps installs python3)")
        probe, dump = self.run_leak(DEBIAN, "thread")
        self.assertEqual(probe.finish(), 0)
        self.check_leak(dump, "thread")
        report = run_json("report", dump, "--focus", "^keep_records$", "--depth", "60")
        outer = [f["function"] for f in report["stacks"][0]["frames"] if f["object"] == "[python]"]
        self.assertEqual(outer[:2], ["keep_records", "leak"])
        self.assertIn("Thread.run", outer)

        probe = Probe([DEBIAN, str(PROGRAM), str(RECORDS), str(COMPRESSORS), "fork"], env={"LEAKPROBE_SAMPLE": "1"})
        # Parent and child print in either order.
        seen = probe.lines_until("CHILD")
        child = int(seen[-1].split()[1])
        if "LEAKED" not in seen:
            probe.expect("LEAKED")
        child_dump = str(dump_of(child, probe.dir))
        self.assertEqual(probe.finish(), 0)
        self.check_leak(child_dump, "fork child", times=2)
        # The child's own leak is under the call after the fork.
        report = run_json("report", child_dump, "--focus", "^keep_records$", "--depth", "60")
        calls = {f["line"] for s in report["stacks"] for f in s["frames"] if f["function"] == "main"}
        self.assertEqual(len(calls), 2, calls)

    def test_no_python_no_python_frames(self) -> None:
        probe = Probe("growth", args=("leak",))
        probe.expect("READY")
        text = probe.dump().read_text()
        probe.finish()
        self.assertIn("# leakprobe python_stacks: 0\n", text)
        self.assertNotIn("python_frame", text)
        self.assertNotIn("Python", (probe.dir / "stderr.txt").read_text())


if __name__ == "__main__":
    unittest.main()


class JitFrames(unittest.TestCase):
    """node keeps frame pointers in its builtins and JIT code, which have no
    CFI: the walk goes on through them, and /tmp/perf-PID.map names them."""

    def run_node(self, *flags: str) -> tuple[list[dict], str]:
        if not shutil.which("node"):
            self.skipTest("node is not installed (scripts/install-deps installs nodejs)")
        # In a directory of its own: with --perf-basic-prof, V8 writes an
        # isolate-*.log where it runs.
        with tempfile.TemporaryDirectory() as cwd:
            program = str(ROOT / "tests/python/programs/retain_buffers.js")
            probe = Probe(["node", *flags, program], env={"LEAKPROBE_SAMPLE": "1"}, cwd=cwd)
            probe.expect("LEAKED")
            dump = str(probe.dump())
            self.assertEqual(probe.finish(), 0)
        report = run_json("report", dump, "--focus", "AllocateUninitialized", "--depth", "60")
        self.assertTrue(report["stacks"], dump)
        return report["stacks"], dump

    def test_node_with_perf_basic_prof_names_the_function(self) -> None:
        stacks, _ = self.run_node("--perf-basic-prof")
        named = [s for s in stacks if any("retainNativeBuffers" in f["function"] for f in s["frames"])]
        # 1,000 calls, 2 buffers each; the first calls run before V8 compiles
        # the function (interpreted frames are named with
        # --interpreted-frames-native-stack only).
        self.assertGreater(sum(s["objects"] for s in named), 1000, [f["function"] for f in stacks[0]["frames"]])
        frame = next(f for f in named[0]["frames"] if "retainNativeBuffers" in f["function"])
        self.assertEqual(frame["object"], "[jit]")

    def test_node_without_the_flag_says_which_flag(self) -> None:
        stacks, dump = self.run_node()
        jit = [f["function"] for s in stacks for f in s["frames"] if f["object"] == "[jit]"]
        self.assertTrue(jit, [f["function"] for f in stacks[0]["frames"]])
        self.assertTrue(all(f.startswith("[anonymous] 0x") for f in jit), jit[:3])
        self.assertIn("node --perf-basic-prof", script("report", dump).stderr)
