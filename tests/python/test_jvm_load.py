"""The JVM under load with Java frames on: 100 dumps while jcmd, JFR, System.gc()
storms and class unloading run; Java frames of unloaded classes named or marked
unloaded, never misnamed; a JVM that exits while a dump is being written."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import unittest
from collections import Counter

from harness import ROOT, Probe, run_json
from test_jvm import JAVA, java_frames_on, jcmd, marked_line

sys.path.insert(0, str(ROOT / "scripts"))
from leakprobe_tool.dumpcmd import prepare_and_send, wait
from leakprobe_tool.dumpfile import Dump, read_dump

PLUGIN_LINE = marked_line("PLUGIN_LINE", "StressPlugin.java")
CALL_LINE = marked_line("PLUGIN_CALL_LINE", "JvmStress.java")
# Every class unloaded is logged on stdout (unified logging, no decorations).
UNLOAD_LOG = "-Xlog:class+unload=info:stdout:none"
UNLOADED_PLUGIN = "unloading class StressPlugin "


def request_dump(pid: int) -> str:
    """A dump through `leakprobe dump`'s own request (a tagged sigqueue),
    waited for by its token; its path."""
    req = prepare_and_send(pid)
    wait([req], 60)
    if req.failure or req.path is None:
        raise AssertionError(req.failure)
    return req.path


def plugin_frames(dump: Dump) -> dict[int, str]:
    """The Java frames called from JvmStress's PLUGIN_CALL_LINE, by address:
    "named" (StressPlugin.open, at PLUGIN_LINE under Deflater.init) or
    "unloaded"; anything else fails the test, as misnamed."""
    found = {}
    for row in dump.rows:
        java = [dump.java_frames.get(a) for a in row.frames]
        for i in range(1, len(java)):
            caller, callee = java[i], java[i - 1]
            if caller is None or callee is None or (caller.name, caller.line) != ("JvmStress.generation", CALL_LINE):
                continue
            addr = row.frames[i - 1]
            if callee.kind == "unloaded":
                found[addr] = "unloaded"
                continue
            where = (callee.kind, callee.name, callee.file)
            if where != ("java", "StressPlugin.open", "StressPlugin.java"):
                raise AssertionError(f"{dump.path}: misnamed frame {addr:#x} below {CALL_LINE}: {callee}")
            under_init = any(f is not None and f.name == "java.util.zip.Deflater.init" for f in java[:i])
            if under_init and callee.line != PLUGIN_LINE:
                raise AssertionError(f"{dump.path}: {addr:#x} at line {callee.line}, not {PLUGIN_LINE}")
            found[addr] = "named"
    return found


class FullStderr:
    """The program's stderr, a pipe this test fills to block the library's
    next message (which it writes once a dump is in its file): the collector
    then stays inside that dump until `drain`."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.text = b""
        self.reader: threading.Thread | None = None

    def fill(self) -> None:
        # A descriptor of its own, non-blocking: the program's stays blocking.
        fd = os.open(f"/proc/self/fd/{self.write_end}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            for chunk in (b"\0" * 4096, b"\0"):
                while True:
                    try:
                        os.write(fd, chunk)
                    except BlockingIOError:
                        break
        finally:
            os.close(fd)

    def drain(self) -> None:
        """Reads it to its end from now on (the filling first)."""
        os.close(self.write_end)

        def read() -> None:
            while chunk := os.read(self.read_end, 65536):
                self.text += chunk

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def messages(self) -> str:
        """What the program wrote, once it has exited."""
        assert self.reader is not None
        self.reader.join(timeout=30)
        os.close(self.read_end)
        return self.text.replace(b"\0", b"").decode(errors="replace")


class JvmUnderLoad(unittest.TestCase):
    def test_100_dumps_during_jcmd_jfr_gc_storms_and_class_unloading(self) -> None:
        probe = Probe([*JAVA, UNLOAD_LOG, "JvmStress", "load"], env={"LEAKPROBE_MAX_DUMPS": "1000"})
        seen = probe.lines_until("READY", timeout=120)
        self.assertIn(UNLOADED_PLUGIN, "\n".join(seen), "the first generation's class was not unloaded")
        pid = probe.proc.pid
        recording = probe.dir / "load.jfr"
        failures: list[str] = []

        def tools() -> None:
            try:
                self.assertIn("Full thread dump", jcmd(pid, "Thread.print"))
                jcmd(pid, "JFR.start", "name=load")
                self.assertIn("Full thread dump", jcmd(pid, "Thread.print"))
                jcmd(pid, "JFR.dump", "name=load", f"filename={recording}")
                jcmd(pid, "JFR.stop", "name=load")
                self.assertIn("Full thread dump", jcmd(pid, "Thread.print"))
            except AssertionError as e:
                failures.append(str(e))

        others = threading.Thread(target=tools)
        others.start()
        paths = []
        kinds: Counter[str] = Counter()
        # At least 100, and as long as the tools run (about 10 s: a dump takes 50 ms).
        while len(paths) < 100 or others.is_alive():
            paths.append(request_dump(pid))
            dump = read_dump(paths[-1])  # raises on a dump that does not parse
            kinds.update(plugin_frames(dump).values())
        others.join()
        self.assertEqual(failures, [])
        self.assertEqual(probe.proc.poll(), None, "the JVM died")
        probe.write("stop\n")
        done = probe.lines_until("DONE", timeout=120)
        self.assertEqual(probe.finish(), 0)
        generations, collected, _ = (int(w) for w in done[-1].split()[1:])
        self.assertEqual(collected, generations, "not every generation's loader was collected")
        unloaded = sum(line.startswith(UNLOADED_PLUGIN) for line in seen + done)
        self.assertEqual(unloaded, generations, "not every generation's StressPlugin was unloaded")
        self.assertEqual(len(set(paths)), len(paths))
        self.assertTrue(all(os.path.exists(p) for p in paths))
        self.assertTrue(recording.exists() and recording.stat().st_size > 0, "JFR wrote no recording")
        self.assertGreater(kinds["named"], 0, "no frame of StressPlugin in any dump")
        print(f"\n  {len(paths)} dumps, {generations} classes unloaded, StressPlugin frames: {dict(kinds)}", file=sys.stderr)
        # The last dump in full: StressPlugin.open between java.util.zip and
        # JvmStress, every native frame named as usual.
        report = run_json("report", paths[-1], "--focus", "StressPlugin")
        names = [(f["function"], f["line"]) for f in report["stacks"][0]["frames"]]
        expected = [
            ("deflateInit2_", None),
            ("Java_java_util_zip_Deflater_init", None),
            ("java.util.zip.Deflater.init", None),
            ("StressPlugin.open", PLUGIN_LINE),
            ("JvmStress.generation", CALL_LINE),
            ("JvmStress.load", None),
            ("JvmStress.main", None),
        ]
        at = [next((i for i, n in enumerate(names) if n[0] == e[0] and e[1] in (None, n[1])), -1) for e in expected]
        self.assertNotIn(-1, at, f"missing frames: {names}")
        self.assertEqual(at, sorted(at), f"out of order: {names}")
        shutil.rmtree(probe.dir)  # its dumps: 20 MB

    def test_a_class_unloaded_before_its_frames_were_named_is_marked_so(self) -> None:
        stderr = FullStderr()
        probe = Probe([*JAVA, UNLOAD_LOG, "JvmStress", "idle"], stderr=stderr.write_end)
        probe.expect("READY", timeout=120)
        java_frames_on(probe)
        pid = probe.proc.pid
        # One generation, named while its class lives, then unloaded: it stays named.
        probe.write("open 40\n")
        probe.expect("OPENED 1")
        first = plugin_frames(read_dump(request_dump(pid)))
        probe.write("drop\n")
        self.assertIn(UNLOADED_PLUGIN, "\n".join(probe.lines_until("COLLECTED 1")))
        self.assertEqual(plugin_frames(read_dump(request_dump(pid))), first)
        # A second, sampled and unloaded while the collector is kept inside a
        # dump, before it could name them: marked unloaded.
        stderr.fill()
        request_dump(pid)
        probe.write("open 40\n")
        probe.expect("OPENED 2")
        probe.write("drop\n")
        self.assertIn(UNLOADED_PLUGIN, "\n".join(probe.lines_until("COLLECTED 2")))
        stderr.drain()
        last = read_dump(request_dump(pid))
        probe.write("exit 0\n")
        self.assertEqual(probe.finish(), 0)
        stderr.messages()
        frames = plugin_frames(last)
        second = {a: k for a, k in frames.items() if a not in first}
        self.assertTrue(first and set(first.values()) == {"named"}, f"first generation: {first}")
        self.assertEqual({a: frames[a] for a in first}, first, "the first generation's names were lost")
        self.assertTrue(second and set(second.values()) == {"unloaded"}, f"second generation: {second}")
        text = "\n".join(
            f["function"]
            for s in run_json("report", last.path, "--alloc-space", "--nodecount", "1000")["stacks"]
            for f in s["frames"]
        )
        self.assertIn("[java: class unloaded before it was named]", text)

    def test_a_jvm_that_exits_while_a_dump_is_being_written(self) -> None:
        """System.exit while the collector is inside a dump (held there by a
        full stderr): the exit status is the program's, nothing hangs."""
        stderr = FullStderr()
        probe = Probe([*JAVA, "JvmStress", "load"], stderr=stderr.write_end)
        probe.expect("READY", timeout=120)
        stderr.fill()
        path = request_dump(probe.proc.pid)
        probe.write("exit 3\n")
        self.assertEqual(probe.finish(timeout=60), 3)
        stderr.drain()
        # The premise: the library's line for that dump was never written.
        self.assertNotIn(f"wrote {path}", stderr.messages())
        read_dump(path)

    def test_a_jvm_that_exits_while_its_exit_dump_is_written(self) -> None:
        """LEAKPROBE_DUMP_AT_EXIT: the dump is written while the VM exits,
        under load; its Java frames are named or marked, never misnamed."""
        probe = Probe([*JAVA, "JvmStress", "load"], env={"LEAKPROBE_DUMP_AT_EXIT": "1"})
        probe.expect("READY", timeout=120)
        java_frames_on(probe)
        deadline = time.monotonic() + 60
        while not (named := plugin_frames(read_dump(request_dump(probe.proc.pid)))):
            self.assertLess(time.monotonic(), deadline, "no StressPlugin frame in any dump")
        probe.write("exit 3\n")
        self.assertEqual(probe.finish(timeout=60), 3)
        at_exit = plugin_frames(read_dump(str(probe.dumps()[-1])))
        self.assertEqual({a: at_exit[a] for a in named}, named)


if __name__ == "__main__":
    unittest.main()
