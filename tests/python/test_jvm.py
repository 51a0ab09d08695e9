"""JVMs: HotSpot uses SIGUSR2 itself (thread suspend/resume, JFR sampling).
With the library preloaded, an external kill -USR2 is a dump and the JVM
keeps working; native leaks through zlib and Unsafe are attributed."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import unittest

from harness import JAVA_CLASSES, Probe, run_json

JAVA = ["java", "-Xmx256m", "-cp", str(JAVA_CLASSES)]


def jcmd(pid: int, *command: str) -> str:
    result = subprocess.run(["jcmd", str(pid), *command], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AssertionError(f"jcmd {' '.join(command)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def focused_share(dump: str, pattern: str) -> float:
    total = run_json("report", dump)["total"]
    return run_json("report", dump, "--focus", pattern)["total"] / total


class Jvm(unittest.TestCase):
    def test_without_leakprobe_kill_usr2_crashes_the_jvm(self) -> None:
        """The fact this feature exists for, re-checked on this machine."""
        crash_dir = tempfile.mkdtemp(prefix="leakprobe-jvm-crash-")  # for its hs_err file
        proc = subprocess.Popen(
            [*JAVA, "GzipLeak", "10"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=crash_dir
        )
        assert proc.stdout is not None
        self.assertTrue(proc.stdout.readline().startswith("READY"))
        os.kill(proc.pid, signal.SIGUSR2)
        code = proc.wait(timeout=60)
        proc.stdout.close()
        assert proc.stdin is not None
        proc.stdin.close()
        self.assertNotEqual(code, 0, "the JVM survived SIGUSR2 on its own: the premise changed")

    def test_gzip_leak_is_attributed_and_the_jvm_keeps_working(self) -> None:
        probe = Probe([*JAVA, "GzipLeak", "500"])
        self.assertEqual(probe.expect("READY", timeout=120), "READY 1500")
        pid = probe.proc.pid
        dumps = [probe.dump() for _ in range(3)]
        self.assertIn("Full thread dump", jcmd(pid, "Thread.print"))
        recording = probe.dir / "rec.jfr"
        jcmd(pid, "JFR.start", "duration=5s", f"filename={recording}")
        time.sleep(7)  # JFR's sampler signals threads with SIGUSR2 meanwhile
        dumps.append(probe.dump())
        self.assertEqual(probe.proc.poll(), None, "the JVM died")
        self.assertEqual(probe.finish(), 0)
        self.assertTrue(recording.exists() and recording.stat().st_size > 0, "JFR wrote no recording")
        share = focused_share(str(dumps[-1]), "deflateInit2_|Java_java_util_zip_Deflater_init")
        self.assertGreaterEqual(share, 0.6)

    def test_unsafe_leak_is_attributed_with_jit_frames_named(self) -> None:
        probe = Probe([*JAVA, "UnsafeLeak"])
        probe.expect("READY", timeout=120)
        jcmd(probe.proc.pid, "Compiler.perfmap")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        self.assertGreaterEqual(focused_share(dump, "Unsafe_AllocateMemory0|allocateMemory"), 0.6)
        report = run_json("report", dump, "--depth", "30")
        objects = {f["object"] for s in report["stacks"][:2] for f in s["frames"]}
        self.assertIn("[jit]", objects, "JIT frames were not named from the perf map")
        self.assertAlmostEqual(report["total"] / (300 << 20), 1.0, delta=0.25)


if __name__ == "__main__":
    unittest.main()
