"""`leakprobe dump` trusts nothing it did not check (issue 21): it never
signals a process that does not have the library, even one that took the pid
of the process it was asked about."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import HARNESS, LIBRARY, ROOT, SCRIPT


class PidReuse(unittest.TestCase):
    def test_a_reused_pid_is_not_signalled(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("SKIP: needs root (a new pid namespace and its ns_last_pid)")
        if not shutil.which("unshare"):
            self.skipTest("SKIP: no unshare (util-linux)")
        directory = tempfile.mkdtemp(prefix="leakprobe-pidreuse-")
        self.addCleanup(shutil.rmtree, directory, True)
        command = [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            str(ROOT / "tests/python/pid_reuse.py"),
            str(LIBRARY),
            str(HARNESS),
            str(SCRIPT),
            directory,
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if run.returncode != 0 and "unshare failed" in run.stderr:
            self.skipTest(f"SKIP: cannot make a pid namespace here: {run.stderr.strip()}")
        self.assertEqual(run.returncode, 0, run.stderr)
        got = json.loads(run.stdout)
        if not got["reused"]:
            self.skipTest("SKIP: the pid could not be handed on through ns_last_pid")
        # The process that took the pid was not signalled: it ran on until killed.
        self.assertTrue(got["untouched"], got)
        self.assertEqual(got["other_status"], -9, got)
        self.assertEqual((got["returncode"], got["stdout"]), (1, ""), got)
        self.assertEqual(
            got["stderr"],
            f"leakprobe: process {got['pid']} (dump_target) exited before its dump appeared in {directory}\n",
        )


if __name__ == "__main__":
    unittest.main()
