"""`leakprobe dump` against the real library's published record (issue 21
items 5, 6): programs that rewrite their environment area get their dump,
a refusal the library states ends `dump` at once, and a program under a path
that is not UTF-8 keeps its bytes in its dump."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import unittest
from pathlib import Path

from harness import HARNESS, Probe, run_json, script
from test_dump_command import facts
from test_dump_trust import ERASER

REDIS_READY = "ready to accept connections"  # "The server is now ready to accept connections at SOCKET"


class RewrittenEnvironment(unittest.TestCase):
    def dumps_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="leakprobe-published-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def assert_dumped(self, pid: int, dumps: Path) -> None:
        # What /proc/PID/environ says is not where the dump goes.
        self.assertNotIn(b"LEAKPROBE_DIR", Path(f"/proc/{pid}/environ").read_bytes())
        result = script("dump", str(pid))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        path = Path(result.stdout.splitlines()[0])
        self.assertEqual(path.parent, dumps)
        self.assertEqual(facts(str(path))["pid"], str(pid))

    def test_a_program_that_overwrites_its_environment_area(self) -> None:
        dumps = self.dumps_dir()
        probe = Probe([sys.executable, "-c", ERASER], env={"LEAKPROBE_DIR": str(dumps), "LEAKPROBE_SIGNAL": "SIGRTMIN+2"})
        self.addCleanup(shutil.rmtree, probe.dir, True)
        self.addCleanup(lambda: probe.proc.poll() is None and probe.kill())
        probe.expect("READY")
        self.assertEqual(Path(f"/proc/{probe.proc.pid}/environ").read_bytes().strip(b"\0"), b"")
        self.assert_dumped(probe.proc.pid, dumps)
        self.assertEqual(probe.finish(), 0)

    def test_redis_server(self) -> None:
        redis = shutil.which("redis-server")
        if redis is None:
            self.skipTest("SKIP: redis-server is not installed (scripts/install-deps installs it)")
        dumps = self.dumps_dir()
        command = [redis, "--port", "0", "--unixsocket", str(dumps / "redis.sock"), "--save", "", "--appendonly", "no"]
        probe = Probe(command, env={"LEAKPROBE_DIR": str(dumps)})
        self.addCleanup(shutil.rmtree, probe.dir, True)
        self.addCleanup(lambda: probe.proc.poll() is None and probe.kill())
        # redis logs to stdout; it writes its title over argv and the environment.
        deadline = time.monotonic() + 60
        while REDIS_READY not in probe.lines.get(timeout=max(deadline - time.monotonic(), 0.01)):
            pass
        self.assert_dumped(probe.proc.pid, dumps)
        probe.proc.terminate()
        self.assertEqual(probe.finish(), 0)


class StatedRefusal(unittest.TestCase):
    def test_a_directory_not_writable_after_a_privilege_drop(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("SKIP: needs root (the program drops to uid 65534)")
        dumps = Path(tempfile.mkdtemp(prefix="leakprobe-refusal-"))
        self.addCleanup(shutil.rmtree, dumps, True)
        os.chmod(dumps, 0o700)  # root's only
        program = "import os, sys\nos.setuid(65534)\nprint('READY', flush=True)\nsys.stdin.read()\n"
        probe = Probe([sys.executable, "-c", program], env={"LEAKPROBE_DIR": str(dumps)})
        self.addCleanup(shutil.rmtree, probe.dir, True)
        self.addCleanup(lambda: probe.proc.poll() is None and probe.kill())
        probe.expect("READY")
        began = time.monotonic()
        result = script("dump", str(probe.proc.pid), "--timeout", "600")
        self.assertLess(time.monotonic() - began, 60)  # at once, not the timeout
        self.assertEqual((result.returncode, result.stdout), (1, ""))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertRegex(
            result.stderr,
            rf"^leakprobe: process {probe.proc.pid} \(python3\) refuses every dump: .*{dumps}.* not writable by uid 65534",
        )
        self.assertEqual(list(dumps.iterdir()), [])
        self.assertEqual(probe.finish(), 0)


class ProgramPath(unittest.TestCase):
    def test_a_program_under_a_path_that_is_not_utf8(self) -> None:
        """Its dump names it by its bytes: the build-id recorded for it is the
        one of the file its memory map names, so its frames are verified."""
        base = Path(tempfile.mkdtemp(prefix="leakprobe-nonutf8-"))
        self.addCleanup(shutil.rmtree, base, True)
        program = os.fsdecode(os.path.join(os.fsencode(base), b"lp\xff\\x41 target"))
        shutil.copy(HARNESS / "dump_target", program)
        probe = Probe([program], env={"LEAKPROBE_SAMPLE": "1"})
        self.addCleanup(shutil.rmtree, probe.dir, True)
        probe.expect("READY")
        dump = probe.dump()
        self.assertEqual(probe.finish(), 0)
        line = next(x for x in dump.read_bytes().splitlines() if x.startswith(b"# leakprobe program: "))
        self.assertEqual(line, b"# leakprobe program: " + os.fsencode(base) + b"/lp\\xff\\\\x41 target")
        report = run_json("report", str(dump), "--nodecount", "50")
        self.assertEqual(report["facts"]["program"], f"{base}/lp\\xff\\x41 target")
        kept = [f for s in report["stacks"] for f in s["frames"] if f["function"] == "site_kept"]
        self.assertTrue(kept, report["stacks"])
        self.assertEqual({f["build_id_check"] for f in kept}, {"verified"})


if __name__ == "__main__":
    unittest.main()
