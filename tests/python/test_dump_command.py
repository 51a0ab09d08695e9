"""`leakprobe dump PID` and `dump --all NAME` against live processes: it never
signals a process without the library, uses the signal and directory the
process uses, and prints the dump that answers its own request."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from harness import HARNESS, ROOT, Probe, run_json, script

sys.path.insert(0, str(ROOT / "scripts"))
from leakprobe_tool.dumpcmd import parse_signal

KEPT = 64 * 16384  # dump_target's site_kept
EXACT = {"LEAKPROBE_SAMPLE": "1"}


def facts(path: str) -> dict[str, str]:
    """The `# leakprobe` facts of a dump."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("# leakprobe "):
            key, _, value = line[len("# leakprobe ") :].partition(": ")
            out.setdefault(key, value)
    return out


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


class DumpCommand(unittest.TestCase):
    def start(self, env: dict[str, str | None] | None = None, program: str | None = None, **popen: object) -> Probe:
        """dump_target (or a copy of it at `program`), ready."""
        probe = Probe([program] if program else "dump_target", env={**EXACT, **(env or {})}, **popen)
        self.addCleanup(shutil.rmtree, probe.dir, True)
        self.addCleanup(lambda: probe.proc.poll() is None and probe.kill())
        probe.expect("READY")
        return probe

    def assert_answered(self, probe: Probe, result: subprocess.CompletedProcess[str], directory: Path) -> str:
        """The dump printed is this process's, in `directory`, and the estimate
        printed is the dump's own."""
        self.assertEqual(result.returncode, 0, result.stderr)
        path, line = result.stdout.splitlines()
        self.assertEqual(Path(path).parent, directory)
        self.assertRegex(Path(path).name, rf"^leakprobe\.{probe.proc.pid}\.[0-9]+\.heap$")
        got = facts(path)
        self.assertEqual(got["pid"], str(probe.proc.pid))
        self.assertRegex(got["requests_answered"], r"^[0-9a-f]{8}( [0-9a-f]{8})*$")
        live = int(got["estimated_live_bytes"])
        self.assertEqual(line, f"~{live / (1 << 20):.1f} MiB estimated live in {got['live_samples']} live samples")
        self.assertGreaterEqual(live, KEPT)
        return path

    def test_refuses_a_process_without_the_library_and_leaves_it_alive(self) -> None:
        probe = self.start(env={"LD_PRELOAD": None})
        result = script("dump", str(probe.proc.pid))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("does not have libleakprobe.so loaded", result.stderr)
        self.assertIn("not signalled", result.stderr)
        # A SIGUSR2 would have killed it; it exits normally at the end of its input.
        self.assertEqual(probe.finish(), 0)

    def test_a_process_that_does_not_exist(self) -> None:
        gone = subprocess.Popen(["true"])
        gone.wait()
        result = script("dump", str(gone.pid))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, f"leakprobe: no process {gone.pid}\n")

    def test_dumps_and_prints_that_process_dump(self) -> None:
        probe = self.start()
        # Something else's file under a dump's name must not stop or hang the wait.
        os.mkfifo(probe.dir / f"leakprobe.{probe.proc.pid}.99.heap")
        result = script("dump", str(probe.proc.pid))
        path = self.assert_answered(probe, result, probe.dir)
        self.assertEqual(result.stderr, "")
        report = run_json("report", path, "--nodecount", "50")
        kept = {f["name"]: f["flat"] for f in report["functions"]}["site_kept"]
        self.assertEqual(kept, KEPT)
        # A second request gets a dump of its own.
        again = script("dump", str(probe.proc.pid))
        self.assertNotEqual(self.assert_answered(probe, again, probe.dir), path)
        self.assertEqual(probe.finish(), 0)

    def test_concurrent_requests_each_get_an_answer(self) -> None:
        probe = self.start()
        command = [sys.executable, str(ROOT / "scripts/leakprobe"), "dump", str(probe.proc.pid)]
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
        paths = []
        for run in runs:
            out, err = run.communicate(timeout=60)
            self.assertEqual(run.returncode, 0, err)
            paths.append(out.splitlines()[0])
        # A dump answers every request it lists; each of the 8 found one.
        answered = sum(len(facts(p)["requests_answered"].split()) for p in set(paths))
        self.assertGreaterEqual(answered, 8)
        self.assertEqual(probe.finish(), 0)

    def test_custom_signal_and_relative_directory(self) -> None:
        work = Path(tempfile.mkdtemp(prefix="leakprobe-dumpcmd-cwd-"))
        self.addCleanup(shutil.rmtree, work, True)
        (work / "dumps").mkdir()
        probe = self.start(env={"LEAKPROBE_SIGNAL": "SIGRTMIN+4", "LEAKPROBE_DIR": "dumps"}, cwd=work)
        result = script("dump", str(probe.proc.pid))
        path = self.assert_answered(probe, result, work / "dumps")
        self.assertEqual(facts(path)["signal"], "SIGRTMIN+4")
        # The library published the directory it made absolute: no guess to note.
        self.assertEqual(result.stderr, "")
        # SIGUSR2 would have killed it: the script sent SIGRTMIN+4.
        self.assertEqual(probe.finish(), 0)

    def test_an_invalid_signal_setting_means_sigusr2(self) -> None:
        probe = self.start(env={"LEAKPROBE_SIGNAL": "SIGSEGV"})
        result = script("dump", str(probe.proc.pid))
        path = self.assert_answered(probe, result, probe.dir)
        self.assertEqual(facts(path)["signal"], "SIGUSR2")
        self.assertEqual(result.stderr, "")  # the library published the signal it uses
        self.assertEqual(probe.finish(), 0)

    def test_times_out_with_a_clear_line(self) -> None:
        probe = self.start()
        os.kill(probe.proc.pid, signal.SIGSTOP)  # it cannot answer until continued
        try:
            result = script("dump", str(probe.proc.pid), "--timeout", "1")
        finally:
            os.kill(probe.proc.pid, signal.SIGCONT)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(f"no dump from process {probe.proc.pid} (dump_target) in {probe.dir} within 1 s", result.stderr)
        self.assertIn("sent SIGUSR2 with request", result.stderr)
        self.assertIn(f"leakprobe.{probe.proc.pid}.log", result.stderr)
        # Continued, it answers the next request (and the queued one).
        self.assert_answered(probe, script("dump", str(probe.proc.pid)), probe.dir)
        self.assertEqual(probe.finish(), 0)

    def test_a_process_that_exits_before_answering(self) -> None:
        probe = self.start()
        os.kill(probe.proc.pid, signal.SIGSTOP)  # it cannot answer
        waiting = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/leakprobe"), "dump", str(probe.proc.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: waiting.poll() is None and waiting.kill())
        # The request is pending in the stopped process: then it dies.
        usr2 = 1 << (signal.SIGUSR2 - 1)
        while not int(status(probe.proc.pid)["ShdPnd"], 16) & usr2:
            self.assertIsNone(waiting.poll(), "the script ended before sending")
            time.sleep(0.01)
        probe.kill()
        out, err = waiting.communicate(timeout=30)
        self.assertEqual((waiting.returncode, out), (1, ""))
        gone = f"process {probe.proc.pid} (dump_target) exited before its dump appeared in {probe.dir}"
        self.assertEqual(err, f"leakprobe: {gone}\n")

    def test_all_dumps_every_process_of_that_name_with_the_library(self) -> None:
        # A name of our own, so that no other test's processes are signalled.
        name = f"lpdump{secrets.token_hex(4)}"
        bindir = Path(tempfile.mkdtemp(prefix="leakprobe-dumpcmd-bin-"))
        self.addCleanup(shutil.rmtree, bindir, True)
        program = str(shutil.copy(HARNESS / "dump_target", bindir / name))
        first, second = self.start(program=program), self.start(program=program)
        bare = self.start(env={"LD_PRELOAD": None}, program=program)
        result = script("dump", "--all", name)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = {int(line.split()[0]): line for line in result.stdout.splitlines()}
        self.assertEqual(set(lines), {first.proc.pid, second.proc.pid, bare.proc.pid})
        self.assertIn("skipped: ", lines[bare.proc.pid])
        self.assertIn("does not have libleakprobe.so loaded", lines[bare.proc.pid])
        for probe in (first, second):
            path = lines[probe.proc.pid].split(": ", 1)[1].split(" (~")[0]
            self.assertEqual(Path(path).parent, probe.dir)
            self.assertEqual(facts(path)["pid"], str(probe.proc.pid))
            self.assertIn("MiB estimated live in", lines[probe.proc.pid])
        for probe in (first, second, bare):
            self.assertEqual(probe.finish(), 0)
        none = script("dump", "--all", f"{name}x")
        self.assertEqual((none.returncode, none.stderr), (1, f"leakprobe: no process named {name}x\n"))

    def test_a_process_of_another_user_as_root(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("SKIP: needs root (creates a throwaway user)")
        if not shutil.which("useradd"):
            self.skipTest("SKIP: no useradd")
        user = f"lpd{secrets.token_hex(4)}"
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
        self.addCleanup(subprocess.run, ["userdel", user], check=False)
        uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)
        gid = int(subprocess.run(["id", "-g", user], capture_output=True, text=True, check=True).stdout)
        dumps = Path(tempfile.mkdtemp(prefix="leakprobe-dumpcmd-user-"))
        self.addCleanup(shutil.rmtree, dumps, True)
        os.chown(dumps, uid, gid)
        probe = self.start(env={"LEAKPROBE_DIR": str(dumps)}, user=uid, group=gid, extra_groups=[])
        self.assertEqual(os.stat(f"/proc/{probe.proc.pid}").st_uid, uid)
        result = script("dump", str(probe.proc.pid))
        path = self.assert_answered(probe, result, dumps)
        st = os.stat(path)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (uid, 0o600))
        self.assertEqual(probe.finish(), 0)


class SignalNames(unittest.TestCase):
    """LEAKPROBE_SIGNAL read as src/config.rs parse_signal reads it."""

    def test_names_numbers_and_refusals(self) -> None:
        rt = signal.SIGRTMIN
        for text, sig in (
            ("SIGUSR2", signal.SIGUSR2),
            ("USR1", signal.SIGUSR1),
            ("12", 12),
            ("+12", 12),
            ("SIGRTMIN", rt),
            ("SIGRTMIN+4", rt + 4),
            ("RTMIN4", rt + 4),
            ("SIGRTMAX-1", signal.SIGRTMAX - 1),
            ("SIGHUP", signal.SIGHUP),
        ):
            self.assertEqual(parse_signal(text), sig, text)
        refused = ("", "usr2", "SIGKILL", "9", "SIGSEGV", "SIGCHLD", "0", "-12", "SIGRTMAX+1", "RTMIN+x", "1_2", " 12")
        # Termination signals and glibc's own, by number as by name.
        for text in (*refused, "15", "SIGTERM", "2", "3", "14", "32", "33", "SIGRTMIN-1"):
            self.assertIsNone(parse_signal(text), text)


if __name__ == "__main__":
    unittest.main()
