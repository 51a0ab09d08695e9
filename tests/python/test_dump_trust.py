"""`leakprobe dump` trusts nothing it did not check (issue 21): it never
signals a process that does not have the library, even one that took the pid
of the process it was asked about; no byte of a path, a name or a dump reaches
the terminal as a control character; the directory, the signal and a refusal
come from what the library publishes, not from an environment the program may
have rewritten."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from harness import HARNESS, LIBRARY, ROOT, SCRIPT, Probe

# C0 (but the line end), DEL and C1, as UTF-8.
CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
HOSTILE = "a\nleakprobe: forged\x1b[31mred"

# A program that ignores the signals it is given and then overwrites its
# environment area, as setproctitle does: /proc/PID/environ reads empty
# (unless KEEP_ENVIRONMENT is set).
ERASER = r"""
import ctypes, os, signal, sys
for sig in sys.argv[1:]:
    signal.signal(int(sig), signal.SIG_IGN)
stat = open("/proc/self/stat", "rb").read().rpartition(b")")[2].split()
start, end = int(stat[47]), int(stat[48])  # env_start and env_end: fields 50 and 51
if not os.environ.get("KEEP_ENVIRONMENT"):
    ctypes.memset(start, 0, end - start)
print("READY", flush=True)
sys.stdin.read()
"""


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, check=False)


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


class NotAProcess(unittest.TestCase):
    def test_a_thread_id_is_refused_naming_its_process(self) -> None:
        program = (
            "import sys, threading\n"
            "t = threading.Thread(target=lambda: (print(threading.get_native_id(), flush=True), sys.stdin.read()))\n"
            "t.start()\n"
        )
        probe = Probe([sys.executable, "-c", program])
        self.addCleanup(shutil.rmtree, probe.dir, True)
        self.addCleanup(lambda: probe.proc.poll() is None and probe.kill())
        tid = probe.expect("")
        result = run("dump", tid)
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertEqual(
            result.stderr.decode(),
            f"leakprobe: {tid} is a thread of process {probe.proc.pid}, not a process: give {probe.proc.pid}\n",
        )
        self.assertEqual(probe.finish(), 0)


class ControlCharacters(unittest.TestCase):
    def assert_clean(self, result: subprocess.CompletedProcess[bytes], lines: int | None = None) -> None:
        for name, out in (("stdout", result.stdout), ("stderr", result.stderr)):
            self.assertIsNone(CONTROL.search(out), f"{name}: {out!r}")
            self.assertNotIn(b"\nleakprobe: forged", out)
        if lines is not None:
            self.assertEqual(len(result.stdout.splitlines()), lines, result.stdout)

    def test_a_hostile_directory_and_program_name(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="leakprobe-control-"))
        self.addCleanup(shutil.rmtree, base, True)
        dumps = base / HOSTILE
        dumps.mkdir()
        program = str(shutil.copy(HARNESS / "dump_target", base / "lp\x1b[31m"))
        probe = Probe([program], env={"LEAKPROBE_DIR": str(dumps), "LEAKPROBE_SAMPLE": "1"})
        self.addCleanup(lambda: probe.proc.poll() is None and probe.kill())
        probe.expect("READY")
        pid = str(probe.proc.pid)
        result = run("dump", pid)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_clean(result, lines=2)
        path = next(dumps.glob("*.heap"))
        self.assertEqual(result.stdout.splitlines()[0], os.fsencode(path).replace(b"\n", b"\\x0a").replace(b"\x1b", b"\\x1b"))
        second = run("dump", pid)
        self.assertEqual(second.returncode, 0, second.stderr)
        first, last = sorted(dumps.glob("*.heap"))
        for args in (
            ("report", str(first)),
            ("report", "--lines", str(first)),
            ("report", "--json", str(first)),
            ("summary", str(first), str(last)),
            ("diff", str(first), str(last)),
            ("collapsed", str(first)),
        ):
            got = run(*args)
            self.assertEqual(got.returncode, 0, (args, got.stderr))
            self.assert_clean(got)
        # Failures name the directory too: a timeout, and a relative directory's note.
        os.kill(probe.proc.pid, signal.SIGSTOP)
        try:
            late = run("dump", pid, "--timeout", "0.2")
        finally:
            os.kill(probe.proc.pid, signal.SIGCONT)
        self.assertEqual(late.returncode, 1)
        self.assert_clean(late, lines=0)
        self.assertEqual(len(late.stderr.splitlines()), 1, late.stderr)
        self.assertEqual(probe.finish(), 0)
        # A missing file named by the user, and all processes of a hostile name.
        self.assert_clean(run("report", str(dumps / "missing.heap")))
        self.assert_clean(run("dump", "--all", HOSTILE))


class StandIn(unittest.TestCase):
    """The reader of the library's record, against a stand-in library that
    publishes a record of the test's making and answers nothing."""

    @classmethod
    def setUpClass(cls) -> None:
        if not shutil.which("cc"):
            raise unittest.SkipTest("SKIP: no C compiler (cc) for the stand-in library")
        cls.build = Path(tempfile.mkdtemp(prefix="leakprobe-standin-"))
        cls.library = cls.build / "libleakprobe.so"
        source = ROOT / "tests/python/record_standin.c"
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(cls.library), str(source)], check=True)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.build, True)

    def start(self, env: dict[str, str], *ignored: int, **popen: object) -> Probe:
        """The eraser under the stand-in: its environment area is empty."""
        command = [sys.executable, "-c", ERASER, *map(str, ignored)]
        probe = Probe(command, env={"LD_PRELOAD": str(self.library), **env}, **popen)
        self.addCleanup(shutil.rmtree, probe.dir, True)
        self.addCleanup(lambda: probe.proc.poll() is None and probe.kill())
        probe.expect("READY")
        if "KEEP_ENVIRONMENT" not in env:
            self.assertEqual(Path(f"/proc/{probe.proc.pid}/environ").read_bytes().strip(b"\0"), b"")
        return probe

    def test_directory_and_signal_come_from_the_record(self) -> None:
        rt3 = signal.SIGRTMIN + 3
        dumps = Path(tempfile.mkdtemp(prefix="leakprobe-standin-dir-"))
        self.addCleanup(shutil.rmtree, dumps, True)
        probe = self.start({"STANDIN_DIR": str(dumps), "STANDIN_SIGNAL": str(rt3)}, rt3)
        result = run("dump", str(probe.proc.pid), "--timeout", "0.3")
        self.assertEqual(result.returncode, 1)
        # Not the environment's directory (Probe's, now erased) nor SIGUSR2,
        # which would have killed it: the record's.
        err = result.stderr.decode()
        self.assertIn(f"no dump from process {probe.proc.pid} (python3) in {dumps} within 0.3 s (sent SIGRTMIN+3", err)
        self.assertNotIn("environment", err)
        self.assertEqual(probe.finish(), 0)

    def test_a_refusal_ends_dump_at_once_with_the_library_reason(self) -> None:
        reason = "the dump directory /srv/dumps is not writable (Permission denied): no dump will be written"
        probe = self.start({"STANDIN_REFUSAL": reason})
        began = time.monotonic()
        result = run("dump", str(probe.proc.pid), "--timeout", "600")
        self.assertLess(time.monotonic() - began, 60)  # not the timeout: at once
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertEqual(result.stderr.decode(), f"leakprobe: process {probe.proc.pid} (python3) refuses every dump: {reason}\n")
        # Not signalled: SIGUSR2 would have killed it.
        self.assertEqual(probe.finish(), 0)

    def test_a_library_without_a_dump_signal_is_not_signalled(self) -> None:
        probe = self.start({"STANDIN_SIGNAL": "0"})
        result = run("dump", str(probe.proc.pid))
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertEqual(
            result.stderr.decode(),
            f"leakprobe: process {probe.proc.pid} (python3) takes no dump signal "
            "(its library could not handle one: see its stderr); not signalled\n",
        )
        self.assertEqual(probe.finish(), 0)

    def test_a_record_of_another_process_is_not_trusted(self) -> None:
        # A forked child's copy of its parent's record, before its own.
        probe = self.start({"STANDIN_PID": "1"}, signal.SIGUSR2)
        result = run("dump", str(probe.proc.pid), "--timeout", "0.3")
        self.assertEqual(result.returncode, 1)
        err = result.stderr.decode()
        # The environment is read instead (erased here: the library's defaults), and said.
        self.assertIn("in /tmp within 0.3 s (sent SIGUSR2", err)
        self.assertIn("(directory and signal from its environment: the library's record: a record of process 1", err)
        self.assertEqual(probe.finish(), 0)

    def test_without_a_record_the_environment_is_read_by_the_library_rules(self) -> None:
        work = Path(tempfile.mkdtemp(prefix="leakprobe-standin-cwd-"))
        self.addCleanup(shutil.rmtree, work, True)
        (work / "dumps").mkdir()
        env = {"STANDIN_PID": "1", "KEEP_ENVIRONMENT": "1", "LEAKPROBE_DIR": "dumps", "LEAKPROBE_SIGNAL": "SIGSEGV"}
        probe = self.start(env, signal.SIGUSR2, cwd=work)
        result = run("dump", str(probe.proc.pid), "--timeout", "0.3")
        self.assertEqual(result.returncode, 1)
        err = result.stderr.decode()
        self.assertIn("LEAKPROBE_SIGNAL='SIGSEGV' is not valid: the library uses SIGUSR2", err)
        self.assertIn(f"LEAKPROBE_DIR='dumps' is relative: looking in {work}/dumps", err)
        self.assertIn(f"in {work}/dumps within 0.3 s (sent SIGUSR2", err)
        self.assertEqual(probe.finish(), 0)


if __name__ == "__main__":
    unittest.main()
