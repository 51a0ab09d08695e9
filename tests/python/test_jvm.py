"""JVMs: HotSpot uses SIGUSR2 itself (thread suspend/resume, JFR sampling).
With the library preloaded, an external kill -USR2 is a dump and the JVM
keeps working; native leaks through zlib, Unsafe and direct buffers are
attributed, with the Java frames that made them (no JVM option), in every
execution mode; file mappings (FileChannel.map) are mapped rows under them."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from harness import (
    HARNESS,
    JAVA_CLASSES,
    ROOT,
    Probe,
    dumps_around_growth,
    run_json,
    script,
    site_line,
)
from test_pprof import go_pprof

JAVA = ["java", "-Xmx256m", "-cp", str(JAVA_CLASSES)]


def marked_line(marker: str, source: str = "LayeredLeak.java") -> int:
    """The line of java-harness/`source` that carries `// <marker>`: known truth."""
    path = ROOT / "java-harness" / source
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"// {marker}"):
            return n
    raise AssertionError(f"{marker} not found in {path}")


def jcmd(pid: int, *command: str) -> str:
    result = subprocess.run(["jcmd", str(pid), *command], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AssertionError(f"jcmd {' '.join(command)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def java_frames_on(probe: Probe) -> None:
    """Waits for the library's line saying Java frames are taken."""
    log = probe.dir / f"leakprobe.{probe.proc.pid}.log"
    deadline = time.monotonic() + 60
    while "Java frames are added" not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            raise AssertionError(f"no Java frames within 60 s: {log}")
        time.sleep(0.02)


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
        # JFR's sampler signals threads with SIGUSR2 until the recording ends.
        deadline = time.monotonic() + 120
        while "(running)" in jcmd(pid, "JFR.check"):
            self.assertLess(time.monotonic(), deadline, "the JFR recording did not end")
            time.sleep(0.2)
        dumps.append(probe.dump())
        self.assertEqual(probe.proc.poll(), None, "the JVM died")
        self.assertEqual(probe.finish(), 0)
        self.assertTrue(recording.exists() and recording.stat().st_size > 0, "JFR wrote no recording")
        share = focused_share(str(dumps[-1]), "deflateInit2_|Java_java_util_zip_Deflater_init")
        self.assertGreaterEqual(share, 0.6)

    def layered_leak_stack(self, *options: str) -> tuple[list[dict], Probe]:
        """Runs LayeredLeak with `options` and returns the top stack of its dump."""
        probe = Probe([*JAVA, *options, "LayeredLeak"])
        self.assertEqual(probe.expect("READY", timeout=180), "READY 400")
        dump = str(probe.dump())
        report = run_json("report", dump)
        self.assertGreater(report["facts"]["java_stacks"], 0)
        self.last_dump = dump
        return report["stacks"][0]["frames"], probe

    def check_layered(self, frames: list[dict]) -> None:
        """zlib, then java.util.zip, then the program's own methods in order,
        with the lines its source marks."""
        names = [f["function"] for f in frames]
        shown = "\n".join(f"{f['function']} {f['file']}:{f['line']} {f['object']} {f['java']}" for f in frames)
        expected = [
            "deflateInit2_",
            "Java_java_util_zip_Deflater_init",
            "java.util.zip.Deflater.init",
            "java.util.zip.Deflater.<init>",
            "java.util.zip.GZIPOutputStream.<init>",
            "LayeredLeak$Wrapper.wrap",
            "LayeredLeak$Opener.open",
            "LayeredLeak.main",
        ]
        at = [names.index(n) if n in names else -1 for n in expected]
        self.assertNotIn(-1, at, f"missing frames in the top stack:\n{shown}")
        self.assertEqual(at, sorted(at), f"frames out of order:\n{shown}")
        by_name = {f["function"]: f for f in frames}
        self.assertEqual(by_name["java.util.zip.Deflater.init"]["java"], "native")
        for name, marker in [
            ("LayeredLeak$Wrapper.wrap", "WRAP_LINE"),
            ("LayeredLeak$Opener.open", "OPEN_LINE"),
            ("LayeredLeak.main", "MAIN_LINE"),
        ]:
            f = by_name[name]
            self.assertEqual(
                (f["file"], f["line"], f["object"], f["java"]), ("LayeredLeak.java", marked_line(marker), "[java]", "java")
            )

    def test_java_frames_of_a_layered_leak_in_the_default_mode(self) -> None:
        frames, probe = self.layered_leak_stack()
        self.assertEqual(probe.finish(), 0)
        self.check_layered(frames)
        # The pprof export names them too, with no JVM at hand.
        out = Path(tempfile.mkdtemp(prefix="leakprobe-jvm-pprof-")) / "jvm.pb.gz"
        self.assertEqual(script("pprof", self.last_dump, "-o", str(out)).returncode, 0)
        top = go_pprof("-top", "-cum", "-nodecount", "200", str(out))
        for name in ("Java_java_util_zip_Deflater_init", "LayeredLeak$Wrapper.wrap", "LayeredLeak$Opener.open"):
            self.assertIn(name, top)

    def test_java_frames_when_interpreted_only(self) -> None:
        frames, probe = self.layered_leak_stack("-Xint")
        self.assertEqual(probe.finish(), 0)
        self.check_layered(frames)

    def test_java_frames_when_compiled_by_c1_only(self) -> None:
        frames, probe = self.layered_leak_stack("-XX:TieredStopAtLevel=1")
        self.assertEqual(probe.finish(), 0)
        self.check_layered(frames)

    def test_java_frames_when_compiled_by_c2(self) -> None:
        frames, probe = self.layered_leak_stack("-XX:-TieredCompilation")
        compiled = jcmd(probe.proc.pid, "Compiler.codelist")
        self.assertEqual(probe.finish(), 0)
        self.assertIn("LayeredLeak$Opener.open", compiled, "C2 did not compile the leaking path: the premise failed")
        self.check_layered(frames)

    def test_a_native_thread_attached_through_jni(self) -> None:
        """1000 native threads (c-harness/jni_attach.c) attach with
        AttachCurrentThread, malloc, call a Java method that opens a
        GZIPOutputStream, and detach: the Java call's stack has its zlib,
        Java and native frames in order. The same calls made from a Java
        thread through a native method end with Java frames (the native
        frames under them are not joined: Java frames lie below those)."""
        probe = Probe([*JAVA, "NativeAttach", str(HARNESS / "libjni_attach.so"), "1000"])
        probe.expect("LOADED", timeout=120)
        java_frames_on(probe)  # threads started from now on
        probe.write("go\n")
        self.assertEqual(probe.expect("READY", timeout=300), "READY 1000")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        stacks = [s["frames"] for s in run_json("report", dump, "--nodecount", "100000", "--depth", "100")["stacks"]]

        def shown(frames: list[dict]) -> str:
            return "\n".join(f"{f['function']} {f['file']}:{f['line']} {f['object']}" for f in frames)

        def has(frames: list[dict], name: str) -> bool:
            return any(f["function"] == name for f in frames)

        attached = [s for s in stacks if has(s, "NativeAttach.callback") and has(s, "thread_main")]
        self.assertTrue(attached, "no stack joins the Java frames to the attached thread's")
        frames = attached[0]
        expected = [
            ("deflateInit2_", None),
            ("Java_java_util_zip_Deflater_init", None),
            ("java.util.zip.Deflater.init", None),
            ("java.util.zip.GZIPOutputStream.<init>", None),
            ("NativeAttach.callback", marked_line("CALLBACK_LINE", "NativeAttach.java")),
            ("call_java", site_line("jni_attach.c", "CALL_JAVA")),
            ("thread_main", site_line("jni_attach.c", "THREAD_CALL")),
            ("start_thread", None),
        ]
        at = [
            next((i for i, f in enumerate(frames) if f["function"] == name and line in (None, f["line"])), -1)
            for name, line in expected
        ]
        self.assertNotIn(-1, at, f"missing frames:\n{shown(frames)}")
        self.assertEqual(at, sorted(at), f"out of order:\n{shown(frames)}")
        # Nothing of the VM's between the Java frames and the JNI caller.
        self.assertEqual(at[5], at[4] + 1, shown(frames))
        native = [s for s in stacks if has(s, "native_alloc")]
        self.assertEqual(
            [(f["function"], f["line"]) for f in native[0][:2]],
            [
                ("native_alloc", site_line("jni_attach.c", "NATIVE_ALLOC")),
                ("thread_main", site_line("jni_attach.c", "THREAD_ALLOC")),
            ],
        )
        from_java = [s for s in stacks if has(s, "NativeAttach.fromJava")]
        self.assertTrue(from_java, "no stack of the Java thread's calls")
        for frames in from_java:
            first = next(i for i, f in enumerate(frames) if f["object"] == "[java]")
            self.assertEqual({f["object"] for f in frames[first:]}, {"[java]"}, shown(frames))

    def test_java_frames_can_be_turned_off(self) -> None:
        probe = Probe([*JAVA, "LayeredLeak", "2000"], env={"LEAKPROBE_JAVA": "0"})
        probe.expect("READY", timeout=180)
        report = run_json("report", str(probe.dump()))
        self.assertEqual(probe.finish(), 0)
        self.assertNotIn("[java]", {f["object"] for s in report["stacks"] for f in s["frames"]})

    def test_unsafe_leak_names_the_java_method_that_called_it(self) -> None:
        probe = Probe([*JAVA, "UnsafeLeak"])
        probe.expect("READY", timeout=120)
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        report = run_json("report", dump, "--focus", "Unsafe_AllocateMemory0")
        self.assertAlmostEqual(report["total"] / (300 << 20), 1.0, delta=0.25)
        names = [f["function"] for f in report["stacks"][0]["frames"]]
        self.assertIn("UnsafeLeak.main", names)
        self.assertLess(names.index("Unsafe_AllocateMemory0"), names.index("UnsafeLeak.main"))

    def test_unsafe_leak_is_attributed_with_jit_frames_named(self) -> None:
        """Without Java frames (LEAKPROBE_JAVA=0) the stack ends in JIT code,
        named from the perf map."""
        probe = Probe([*JAVA, "UnsafeLeak"], env={"LEAKPROBE_JAVA": "0"})
        probe.expect("READY", timeout=120)
        jcmd(probe.proc.pid, "Compiler.perfmap")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        self.assertGreaterEqual(focused_share(dump, "Unsafe_AllocateMemory0|allocateMemory"), 0.6)
        report = run_json("report", dump, "--depth", "30")
        objects = {f["object"] for s in report["stacks"][:2] for f in s["frames"]}
        self.assertIn("[jit]", objects, "JIT frames were not named from the perf map")
        self.assertAlmostEqual(report["total"] / (300 << 20), 1.0, delta=0.25)


MIB = 1 << 20
# Each period with its tolerance: every call recorded, and the default.
PERIODS = (("1", 0.0), (None, 0.10))


class JvmOutsideTheJavaHeap(unittest.TestCase):
    """Direct buffers are malloc (heap rows); FileChannel.map is mmap (file
    mapped rows): each under the Java method that made it, at known bytes."""

    def grow(self, program: str, sample: str | None, *args: str) -> tuple[str, str]:
        return dumps_around_growth([*JAVA, program, *args], env={"LEAKPROBE_SAMPLE": sample})

    def assert_bytes(self, got: int, want: int, tolerance: float) -> None:
        if tolerance:
            self.assertLess(abs(got - want), tolerance * want, got)
        else:
            self.assertEqual(got, want)

    def test_direct_buffers_are_heap_under_the_java_method(self) -> None:
        for sample, tolerance in PERIODS:
            with self.subTest(sample=sample or "default"):
                before, after = self.grow("DirectLeak", sample)
                top = run_json("report", after, "--focus", "DirectLeak.leak")["stacks"][0]
                names = [f["function"] for f in top["frames"]]
                # 64 buffers of 2 MiB through Unsafe.allocateMemory (malloc), named by the method that made them.
                self.assertEqual(next(f["function"] for f in top["frames"] if not f["allocator"]), "DirectLeak.leak")
                for name in ("Unsafe_AllocateMemory0", "java.nio.ByteBuffer.allocateDirect", "DirectLeak.main"):
                    self.assertIn(name, names)
                self.assert_bytes(top["bytes"], 128 * MIB, tolerance)
                if not tolerance:
                    self.assertEqual(top["objects"], 64)
                self.assertEqual(run_json("report", before, "--focus", "DirectLeak.leak")["total"], 0)
                # Heap only: never a mapped row too.
                self.assertEqual(run_json("report", "--mmap", after, "--focus", "DirectLeak")["total"], 0)
                answer = run_json("summary", before, after)
                self.assertEqual(answer["verdict"], "leak or cache", answer["evidence"])
                self.assertIn("under DirectLeak.leak", answer["evidence"])

    def test_file_mappings_are_mapped_rows_under_the_java_method(self) -> None:
        for sample, tolerance in PERIODS:
            with self.subTest(sample=sample or "default"):
                with tempfile.TemporaryDirectory(prefix="leakprobe-jvm-map-") as tmp:
                    before, after = self.grow("MappedLeak", sample, str(Path(tmp) / "mapped"))
                report = run_json("report", "--mmap", after, "--focus", "MappedLeak.leak")
                self.assertEqual(len(report["stacks"]), 1, report["stacks"])
                top = report["stacks"][0]
                names = [f["function"] for f in top["frames"]]
                # 32 pieces of 4 MiB of a file, mapped by FileChannel.map in MappedLeak.leak.
                self.assertEqual(names[-1], "[file mmap]")
                for name in ("Java_sun_nio_ch_FileChannelImpl_map0", "sun.nio.ch.FileChannelImpl.map", "MappedLeak.main"):
                    self.assertIn(name, names)
                self.assert_bytes(top["bytes"], 128 * MIB, tolerance)
                if not tolerance:
                    self.assertEqual(top["objects"], 32)
                self.assertEqual(run_json("report", "--mmap", before, "--focus", "MappedLeak.leak")["total"], 0)
                self.assertLess(run_json("report", after, "--focus", "MappedLeak.leak")["total"], MIB)
                # Read, so in RSS: the growth is outside malloc, and summary names the method.
                answer = run_json("summary", before, after)
                self.assertEqual(answer["verdict"], "outside malloc", answer["evidence"])
                self.assertRegex(answer["evidence"], r"MappedLeak\.leak <- MappedLeak\.main \+12[0-9.]+ MiB \(file mmap\)")


if __name__ == "__main__":
    unittest.main()
