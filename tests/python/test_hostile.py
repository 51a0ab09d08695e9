"""A dump is data from a process, possibly another user's: files it names
(objects, the perf map) and numbers in it are hostile input. The script
never hangs, never eats memory, never crashes: it reads what is safe, says
in one line what it refused, and marks what it could not name."""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

from harness import HARNESS, SCRIPT, Probe, write_dump

ANON = "7f0000000000-7f0000100000 r-xp 00000000 00:00 0"
JIT = 0x7F0000001000  # an address in ANON
MEMORY_LIMIT = 1 << 30  # the script gets this much address space: a read of /dev/zero would fail it


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The script with bounded memory and time: a hang or a runaway read fails the test."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=120,
        preexec_fn=limited,
        check=False,
    )


def frames_of(result: subprocess.CompletedProcess[str]) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [f for s in json.loads(result.stdout)["stacks"] for f in s["frames"]]


class Objects(unittest.TestCase):
    """S5: a dump that names devices, FIFOs or a huge file as its objects."""

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="leakprobe-hostile-"))
        self.addCleanup(shutil.rmtree, self.dir)

    def test_devices_fifos_and_links_to_them_are_refused_without_reading(self) -> None:
        fifo = self.dir / "fifo.so"
        os.mkfifo(fifo)
        (self.dir / "zero.so").symlink_to("/dev/zero")
        (self.dir / "fifo-link.so").symlink_to(fifo)
        objects = ["/dev/zero", "/dev/urandom", str(fifo), str(self.dir / "zero.so"), str(self.dir / "fifo-link.so")]
        maps = [f"{0x100000 * (i + 1):x}-{0x100000 * (i + 2):x} r-xp 00000000 00:05 1 {o}" for i, o in enumerate(objects)]
        rows = [(1, 100, [0x100000 * (i + 1) + 0x10]) for i in range(len(objects))]
        dump = write_dump(self.dir / "devices.heap", rows, maps)
        frames = {f["object"]: f for f in frames_of(run("report", dump, "--json"))}
        self.assertEqual(set(frames), set(objects))
        for obj, why in zip(objects, ["character device", "character device", "FIFO", "character device", "FIFO"]):
            self.assertIn(f"(a {why}, not a regular file)", frames[obj]["function"], obj)
            self.assertEqual(frames[obj]["build_id_check"], "missing", obj)

    def test_the_dump_itself_must_be_a_regular_file(self) -> None:
        fifo = self.dir / "dump.heap"
        os.mkfifo(fifo)
        for path, why in ((str(fifo), "a FIFO"), ("/dev/zero", "a character device")):
            result = run("report", path)
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertEqual(result.stderr, f"leakprobe: {path}: cannot be read: {why}, not a regular file\n")

    def test_a_huge_sparse_object_is_read_in_bounded_parts(self) -> None:
        """A copy of a harness program (without DWARF, so only the script
        reads it) whose symbol table claims 64 GiB, in a 128 GiB sparse file."""
        huge = self.dir / "huge"
        subprocess.run(["strip", "--strip-debug", "-o", str(huge), str(HARNESS / "demo")], check=True)
        data = bytearray(huge.read_bytes())
        shoff = int.from_bytes(data[40:48], "little")
        shentsize, shnum, shstrndx = (int.from_bytes(data[58 + 2 * i : 60 + 2 * i], "little") for i in range(3))
        names = int.from_bytes(data[shoff + shstrndx * shentsize + 24 : shoff + shstrndx * shentsize + 32], "little")
        for i in range(shnum):
            header = shoff + i * shentsize
            name = int.from_bytes(data[header : header + 4], "little")
            if data[names + name : names + name + 8] == b".symtab\0":
                data[header + 32 : header + 40] = (1 << 36).to_bytes(8, "little")
        huge.write_bytes(data)
        os.truncate(huge, 1 << 37)
        dump = write_dump(self.dir / "huge.heap", [(1, 100, [0x401200])], [f"400000-500000 r-xp 00000000 fe:00 1 {huge}"])
        (frame,) = frames_of(run("report", dump, "--json"))
        self.assertTrue(frame["function"].startswith("huge+0x"), frame)  # unnamed: its symbol table was refused
        self.assertEqual(frame["object"], str(huge))


class PerfMaps(unittest.TestCase):
    """S4: /tmp/perf-<pid>.map is a name anyone can create. The dumps here
    carry this test's own pid, so the map name is this process's."""

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="leakprobe-perfmap-"))
        self.addCleanup(shutil.rmtree, self.dir)
        self.map = Path(f"/tmp/perf-{os.getpid()}.map")
        self.remove_map()
        self.addCleanup(self.remove_map)
        self.dump = write_dump(self.dir / "jit.heap", [(1, 100, [JIT])], [ANON], {"pid": str(os.getpid())})
        self.names = self.dir / "names.map"
        self.names.write_text(f"{JIT - 0x10:x} 100 Lcom/example/Cache;::put\n")

    def remove_map(self) -> None:
        if self.map.is_symlink() or self.map.exists():
            self.map.unlink()

    def leaf(self) -> tuple[str, str]:
        result = run("report", self.dump, "--json")
        return frames_of(result)[0]["function"], result.stderr

    def assert_refused(self, why: str) -> None:
        name, stderr = self.leaf()
        self.assertEqual(name, f"[anonymous] 0x{JIT:x} (perf map refused)")
        self.assertEqual(stderr.splitlines(), [f"leakprobe: {self.map} not used ({why}): JIT frames stay unnamed"])

    def test_a_map_of_the_dumps_user_names_jit_frames(self) -> None:
        shutil.copy(self.names, self.map)
        os.chmod(self.map, 0o644)
        self.assertEqual(self.leaf(), ("Lcom/example/Cache;::put", ""))

    def test_fifo(self) -> None:
        os.mkfifo(self.map)
        self.assert_refused("a FIFO, not a regular file")

    def test_symbolic_links(self) -> None:
        for target in (self.names, Path("/dev/zero")):
            self.map.symlink_to(target)
            self.assert_refused("a symbolic link, not a regular file")
            self.map.unlink()

    def test_writable_by_others(self) -> None:
        shutil.copy(self.names, self.map)
        os.chmod(self.map, 0o666)
        self.assert_refused("writable by other users")

    def test_hard_link(self) -> None:
        os.link(self.names, self.map)
        self.assert_refused("it has 2 hard links")

    def test_too_large(self) -> None:
        shutil.copy(self.names, self.map)
        os.truncate(self.map, 300 << 20)  # sparse
        self.assert_refused("larger than 256 MiB")

    def test_owned_by_another_user(self) -> None:
        if os.geteuid() != 0 or not shutil.which("useradd"):
            self.skipTest("SKIP: needs root and useradd to create a second user")
        user = f"lp{os.getpid()}"
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
        self.addCleanup(subprocess.run, ["userdel", user], check=False)
        uid = pwd.getpwnam(user).pw_uid
        shutil.copy(self.names, self.map)
        os.chmod(self.map, 0o644)
        os.chown(self.map, uid, -1)
        self.assert_refused(f"owned by uid {uid}, not by the dump's user ({os.stat(self.dump).st_uid}) or root")


class Numbers(unittest.TestCase):
    """R10: numbers no process writes give one line and exit 1; numbers at
    the edge of what the library can write give a report."""

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="leakprobe-numbers-"))
        self.addCleanup(shutil.rmtree, self.dir)

    def test_out_of_range(self) -> None:
        cases = {
            "period 10^400": ({"period": "1" + "0" * 400}, "line 1: number out of range (401 digits; at most 64 bits)"),
            "period 2^64": ({"period": str(1 << 64)}, "line 1: number out of range (20 digits; at most 64 bits)"),
            "nan time": ({"meta": {"time_unix": "nan"}}, "line 2: time_unix 'nan' is not a time"),
            "inf time": ({"meta": {"time_unix": "1e400"}}, "line 2: time_unix '1e400' is not a time"),
            "5000 digits": ({"meta": {"live_samples": "9" * 5000}}, "line 2: number out of range (5000 digits; at most 64 bits)"),
            "not a number": ({"meta": {"samples_dropped": "nan"}}, "line 2: 'nan' is not a whole number"),
        }
        for name, (change, expect) in cases.items():
            meta = change.get("meta", {})
            dump = write_dump(self.dir / "n.heap", [(1, 100, [JIT])], [ANON], meta, change.get("period", "1"))
            result = run("report", dump)
            self.assertEqual((result.returncode, result.stderr), (1, f"leakprobe: {dump}: {expect}\n"), name)
        rows = f"heap profile: {'9' * 5000}: 1 [0: 0] @ heap_v2/1\n{'9' * 5000}: 1 [0: 0] @ 0x1 0x2\n"
        (self.dir / "digits.heap").write_text(rows + "\nMAPPED_LIBRARIES:\n" + ANON + "\n")
        result = run("report", str(self.dir / "digits.heap"))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("number out of range (5000 digits", result.stderr)

    def test_the_largest_period_gives_finite_estimates(self) -> None:
        dump = write_dump(self.dir / "p.heap", [(1, 100, [JIT])], [ANON], period=str((1 << 64) - 1))
        report = json.loads(run("report", dump, "--json").stdout)
        # Each sample stands for about period / size of its bytes: 2^64 - 1 bytes.
        self.assertAlmostEqual(report["total"] / ((1 << 64) - 1), 1.0, delta=1e-6)

    def test_a_ten_thousand_frame_stack_in_every_view(self) -> None:
        deep = [JIT + 16 * i for i in range(10_000)]
        dump = write_dump(self.dir / "deep.heap", [(1, 100, deep), (1, 50, [JIT])], [ANON])
        for view in (["report", "--json"], ["collapsed"], ["flamegraph", "--depth", "20000"]):
            extra = ["-o", str(self.dir / "deep.svg")] if view[0] == "flamegraph" else []
            result = run(view[0], dump, *view[1:], *extra)
            self.assertEqual(result.returncode, 0, f"{view}: {result.stderr}")
        svg = ET.parse(self.dir / "deep.svg").getroot()
        depths = [int(g.get("data-depth")) for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "f"]
        self.assertEqual(max(depths), 10_000)  # every frame but the marker, under the root

    def test_control_characters_in_names_are_escaped(self) -> None:
        evil = str(self.dir / "evil\x01\x1b[31m<&>\x7f.so")
        dump = write_dump(self.dir / "evil.heap", [(1, 100, [0x400100])], [f"400000-500000 r-xp 00000000 fe:00 1 {evil}"])
        (frame,) = frames_of(run("report", dump, "--json"))
        shown = str(self.dir / "evil\\x01\\x1b[31m<&>\\x7f.so")
        self.assertEqual(frame["object"], shown)
        text = run("report", dump)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertNotIn("\x1b", text.stdout)
        self.assertIn(shown, text.stdout)
        result = run("flamegraph", dump, "-o", str(self.dir / "evil.svg"))
        self.assertEqual(result.returncode, 0, result.stderr)
        names = [g.get("data-name") for g in ET.parse(self.dir / "evil.svg").getroot().iter() if g.get("data-name")]
        self.assertIn(f"{shown}+0x100 (file missing or unreadable)", names)


class NonUtf8Path(unittest.TestCase):
    """R11: a real dump of a program under a directory whose name is not UTF-8."""

    def test_report_names_the_leak_and_shows_the_path_escaped(self) -> None:
        top = Path(tempfile.mkdtemp(prefix="leakprobe-latin1-"))
        self.addCleanup(shutil.rmtree, top)
        where = top / os.fsdecode(b"caf\xe9")
        where.mkdir()
        shutil.copy(HARNESS / "exact", where / "exact")
        probe = Probe([str(where / "exact")], env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        report = run("report", dump, "--json", "--nodecount", "100")
        self.assertEqual(report.returncode, 0, report.stderr)
        answer = json.loads(report.stdout)
        flat = {f["name"]: f["flat"] for f in answer["functions"]}
        self.assertEqual(flat["site_malloc"], 100_000)
        escaped = str(top / "caf\\xe9" / "exact")
        site = next(f for s in answer["stacks"] for f in s["frames"] if f["function"] == "site_malloc")
        self.assertEqual((site["object"], site["build_id_check"]), (escaped, "verified"))
        text = run("report", dump)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn(escaped, text.stdout)
        self.assertNotIn("\udce9", text.stdout)


if __name__ == "__main__":
    unittest.main()
