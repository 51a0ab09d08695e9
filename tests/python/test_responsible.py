"""The responsible frame: verdicts, flat views and trends name the program's
own code, past allocation wrappers, the runtime's layers and a wrapper's
stripped helper; stacks that differ only in a runtime's entry stubs are one
site; the allocator entry point is the one the program called; and one
dump ranks its suspects by the live bytes their old blocks hold.

Programs: java-harness/CacheFill.java (a method keeping Deflaters, the JDK
between it and zlib), c-harness/stripped_wrapper.c over wrapped_lib.c (a
stripped library's static helper calls mallocx below its exported
isc__mem_get), tests/python/programs/keep_buffers.js (native buffers kept by
one JavaScript function across V8 tiers), c-harness/entry_points.cc (mallocx,
calloc and new[] callers), c-harness/series.c (the stories: a leak, a cache
that fills, churn), c-harness/demo.c (`make demo`'s program)."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
import unittest
from pathlib import Path

from harness import JAVA_CLASSES, ROOT, Probe, run_json, script
from test_pprof import decode, export

sys.path.insert(0, str(ROOT / "scripts"))
from leakprobe_tool.profile import ALLOC_WRAPPER
from leakprobe_tool.responsible import Rules, site, walk
from leakprobe_tool.symbols import JAVA, Frame

MIB = 1 << 20
PROGRAMS = Path(__file__).resolve().parent / "programs"


def steps(probe: Probe, ready: str, grew: str, count: int) -> list[str]:
    """A dump after each of `count` lines of input, each once the program
    said it grew (its line starting with `grew`)."""
    probe.expect(ready, timeout=120)
    dumps = []
    for _ in range(count):
        probe.write("go\n")
        probe.expect(grew, timeout=120)
        dumps.append(str(probe.dump()))
    return dumps


@unittest.skipUnless(shutil.which("java"), "needs java (scripts/install-deps installs default-jdk-headless)")
class Jvm(unittest.TestCase):
    def test_the_verdict_names_the_application_method_not_the_jdk(self) -> None:
        probe = Probe(["java", "-Xmx256m", "-cp", str(JAVA_CLASSES), "CacheFill", "200"])
        dumps = steps(probe, "READY", "GREW", 3)
        self.assertEqual(probe.finish(), 0)
        answer = run_json("summary", *dumps)
        self.assertEqual(answer["verdict"], "leak", answer["evidence"])
        self.assertRegex(answer["evidence"], r"a leak, still growing: CacheFill\$Cache\.fill <- CacheFill\.main \+")
        self.assertNotIn("deflateInit2_", answer["evidence"])
        stack = run_json("report", dumps[-1])["stacks"][0]
        frames = stack["frames"]
        names = [f["function"] for f in frames]
        self.assertEqual(names[stack["responsible"]], "CacheFill$Cache.fill", names)
        # The JDK and zlib stay in the stack, each with the rule that moved past it.
        moved = {f["function"]: f["moved_by"] for f in frames[: stack["responsible"]]}
        self.assertEqual(moved.get("Java_java_util_zip_Deflater_init"), "runtime: JDK", moved)
        self.assertEqual(moved.get("java.util.zip.Deflater.<init>"), "runtime: JDK", moved)
        self.assertIn("runtime", moved.get("deflateInit2_") or "", moved)
        # --app-frames overrides: the JDK's Deflater.<init> is then the program's.
        answer = run_json("summary", *dumps, "--app-frames", r"java\.util\.zip\.Deflater\.<init>")
        self.assertIn("leak, still growing: java.util.zip.Deflater.<init>", answer["evidence"])


class StrippedWrapper(unittest.TestCase):
    """named's libisc: mallocx <- a stripped static helper <- isc__mem_get <- the application."""

    @classmethod
    def setUpClass(cls) -> None:
        probe = Probe("stripped_wrapper", env={"LEAKPROBE_SAMPLE": "65536"})
        cls.dumps = steps(probe, "READY", "STEP", 3)
        assert probe.finish() == 0

    def test_flat_and_verdict_name_the_application(self) -> None:
        report = run_json("report", self.dumps[-1])
        top = report["functions"][0]
        self.assertEqual(top["name"], "app_cache_fill", report["functions"][:3])
        self.assertAlmostEqual(top["flat"] / (48 * MIB), 1.0, delta=0.15)
        self.assertEqual(top["responsible"], top["flat"])
        stack = report["stacks"][0]
        helper, wrapper = stack["frames"][0], stack["frames"][1]
        self.assertRegex(helper["function"], r"^libwrapped\.so\+0x[0-9a-f]+$", "the helper has a name: not stripped?")
        self.assertEqual(helper["moved_by"], "unnamed, inside libwrapped.so below isc__mem_get")
        self.assertEqual((wrapper["function"], wrapper["moved_by"]), ("isc__mem_get", "allocation wrapper"))
        self.assertEqual(stack["entry_points"], ["mallocx"])
        answer = run_json("summary", *self.dumps)
        self.assertEqual(answer["verdict"], "leak", answer["evidence"])
        self.assertIn("a leak, still growing: app_cache_fill <- main", answer["evidence"])
        text = script("report", self.dumps[-1]).stdout
        self.assertRegex(text, r"app_cache_fill  \S+stripped_wrapper\.c:\d+  <- responsible")
        self.assertIn("via mallocx", text)

    def test_the_flame_graph_ends_at_the_responsible_frame_unless_asked(self) -> None:
        out = Path(self.dumps[-1]).with_suffix(".svg")
        for extra, helper in (((), False), (("--full-stacks",), True)):
            result = script("flamegraph", self.dumps[-1], "-o", str(out), *extra)
            self.assertEqual(result.returncode, 0, result.stderr)
            svg = out.read_text()
            self.assertIn("app_cache_fill", svg)
            self.assertEqual("isc__mem_get" in svg, helper, extra)


@unittest.skipUnless(shutil.which("node"), "needs node (scripts/install-deps installs nodejs)")
class NodeTiers(unittest.TestCase):
    def test_one_leak_across_v8_tiers_is_one_verdict(self) -> None:
        probe = Probe(["node", str(PROGRAMS / "keep_buffers.js"), "20000"], env={"LEAKPROBE_SAMPLE": "65536"})
        dumps = steps(probe, "READY", "GREW", 3)
        self.assertEqual(probe.finish(), 0)
        report = run_json("report", dumps[-1], "--nodecount", "100", "--depth", "100")
        stubs = {f["function"].split("(")[0] for s in report["stacks"] for f in s["frames"]}
        # The premise: V8 optimised the function while it ran, so its calls
        # reached the library through two entry stubs.
        self.assertIn("Builtins_CallApiCallback", stubs)
        self.assertIn("v8::internal::Builtin_HandleApiCall", stubs)
        answer = run_json("summary", *dumps)
        self.assertEqual(answer["verdict"], "leak", answer["evidence"])
        self.assertNotIn("not a leak", answer["evidence"])
        growing = answer["evidence"].split("a leak, still growing: ")[1]
        first = growing.split(" (")[0]
        self.assertRegex(first, r"^node::Buffer::.*CreateUnsafeArrayBuffer")
        # The JavaScript that called it is not in the stack, and the verdict says so.
        self.assertIn("<- [called from JIT code the stack does not show]", first)
        bytes_ = float(re.search(r"\+([\d.]+) MiB", growing).group(1))
        self.assertGreater(bytes_ * MIB, 0.9 * 2 * 20000 * 4096, answer["evidence"])
        trend = run_json("trend", *dumps)["stacks"]
        self.assertEqual([t["verdict"] for t in trend if t["frames"][0] == trend[0]["frames"][0]], ["growing"])


class EntryPoints(unittest.TestCase):
    def test_the_entry_point_called_is_named(self) -> None:
        probe = Probe("entry_points", env={"LEAKPROBE_SAMPLE": "65536"})
        probe.expect("READY")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        want = {"site_mallocx()": "mallocx", "site_calloc()": "calloc", "site_new_array()": "operator new[]"}
        stacks = run_json("report", dump)["stacks"]
        got = {s["frames"][0]["function"]: s["entry_points"] for s in stacks if s["frames"][0]["function"] in want}
        self.assertEqual(got, {site: [entry] for site, entry in want.items()})
        d = decode(export(dump, "--keep-allocator-frames"))
        leaves = {}
        for locations, values, _ in d.samples:
            names = [d.names(i)[0].rsplit(" ", 1)[0] for i in locations[:2]]
            if len(names) == 2 and names[1] in want:
                leaves.setdefault(names[1], set()).add(names[0])
                self.assertGreater(values[3], 0)
        self.assertEqual(leaves, {site: {entry} for site, entry in want.items()})


class Demo(unittest.TestCase):
    def test_the_demo_report_leads_with_its_own_functions(self) -> None:
        probe = Probe("demo", env={"LEAKPROBE_SAMPLE": "65536"})
        probe.expect("demo: pid")
        dump = str(probe.dump_with_samples(20))
        probe.kill()
        functions = [f["name"] for f in run_json("report", dump, "--nodecount", "4")["functions"]]
        self.assertEqual(functions[:3], ["parse_headers", "handle_request", "main"])
        text = script("report", dump, "--nodecount", "4").stdout
        own = [text.find(f"  {name}\n") for name in ("parse_headers", "handle_request", "main", "_start")]
        self.assertTrue(0 < own[0] < own[1] < own[2], text)


def frames(*spec: str) -> tuple[Frame, ...]:
    """`name@object` each, leaf first; `name@[java]` a Java frame."""
    out = []
    for text in spec:
        name, _, obj = text.partition("@")
        out.append(Frame(name, obj=obj, kind="java" if obj == JAVA else None))
    return tuple(out)


class Walks(unittest.TestCase):
    """The walk on known stacks (no process needed)."""

    rules = Rules(ALLOC_WRAPPER)

    def responsible(self, stack: tuple[Frame, ...], rules: Rules | None = None) -> str:
        return stack[walk(stack, rules or self.rules).index].function

    def test_cpython_eval_frames_are_passed_to_the_script_function(self) -> None:
        py = "/usr/bin/python3.11"
        stack = frames(
            f"_PyObject_Malloc@{py}",
            f"list_resize@{py}",
            f"_PyEval_EvalFrameDefault@{py}",
            "grow@[python]",  # a script's frame, as the library may add them
            f"_PyEval_EvalFrameDefault@{py}",
            f"Py_BytesMain@{py}",
            "__libc_start_call_main@/usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        self.assertEqual(self.responsible(stack), "grow")
        # The standard library's Python is the runtime's too; a package's is not.
        stdlib = Frame("loads", file="/usr/lib/python3.11/json/__init__.py", line=346, obj="[python]")
        package = Frame("loads", file="/usr/lib/python3/dist-packages/simplejson/__init__.py", line=514, obj="[python]")
        for frame, want in ((stdlib, "grow"), (package, "loads")):
            self.assertEqual(self.responsible((*stack[:3], frame, *stack[2:])), want)
        # Without a script frame, the runtime's own allocation: its innermost frame.
        found = walk(stack[:3] + stack[4:], self.rules)
        self.assertEqual(stack[found.index].function, "list_resize")
        self.assertIn("runtime's own", found.note or "")

    def test_v8_builtins_are_passed_to_the_javascript_function(self) -> None:
        node = "/usr/bin/node"
        stack = frames(
            f"node::Buffer::CreateUnsafeArrayBuffer(v8::FunctionCallbackInfo<v8::Value> const&)@{node}",
            f"Builtins_CallApiCallback@{node}",
            "JS:*allocUnsafeSlow node:buffer:395:20@[jit]",  # node's own JavaScript
            "JS:*keep /app/keep.js:8@[jit]",
            f"Builtins_JSEntry@{node}",
            f"node::Start(int, char**)@{node}",
            f"main@{node}",
        )
        self.assertEqual(self.responsible(stack), "JS:*keep /app/keep.js:8")
        # The same code at another tier, through another stub: one site.
        other = frames(
            f"node::Buffer::CreateUnsafeArrayBuffer(v8::FunctionCallbackInfo<v8::Value> const&)@{node}",
            f"v8::internal::Builtin_HandleApiCall(int, unsigned long*, v8::internal::Isolate*)@{node}",
            f"Builtins_CEntry_Return1_ArgvOnStack_BuiltinExit@{node}",
            "JS:~keep /app/keep.js:8@[jit]",
            f"Builtins_JSEntry@{node}",
            f"node::Start(int, char**)@{node}",
            f"main@{node}",
        )

        def key(s: tuple[Frame, ...]) -> tuple[str, ...]:
            return site(s[walk(s, self.rules).index :], lambda f: f.function)

        self.assertEqual(key(stack), key(other))
        # node's own allocations reach its main: the innermost runtime frame.
        own = frames(f"v8::internal::Zone::New(unsigned long)@{node}", f"node::Start(int, char**)@{node}", f"main@{node}")
        self.assertEqual(self.responsible(own), "v8::internal::Zone::New(unsigned long)")

    def test_app_frames_stop_the_walk_and_alloc_frames_extend_it(self) -> None:
        stack = frames(
            "deflateInit2_@/usr/lib/x86_64-linux-gnu/libz.so.1",
            "Java_java_util_zip_Deflater_init@/usr/lib/jvm/x/lib/libzip.so",
            f"java.util.zip.Deflater.<init>@{JAVA}",
            f"com.example.Pool.take@{JAVA}",
            f"com.example.Cache.fill@{JAVA}",
        )
        self.assertEqual(self.responsible(stack), "com.example.Pool.take")
        app = Rules(ALLOC_WRAPPER, app=re.compile(r"java\.util\.zip\..*"))
        self.assertEqual(self.responsible(stack, app), "java.util.zip.Deflater.<init>")
        extra = Rules(ALLOC_WRAPPER, extra=re.compile(r"com\.example\.Pool\..*"))
        self.assertEqual(self.responsible(stack, extra), "com.example.Cache.fill")
        self.assertEqual(walk(stack, extra).moved[3], "--alloc-frames")

    def test_an_unnamed_frame_not_below_a_wrapper_is_kept(self) -> None:
        lib = "/usr/lib/libfoo.so"
        stack = frames(f"libfoo.so+0x1234@{lib}", "app_fill@/usr/bin/app", "main@/usr/bin/app")
        self.assertEqual(self.responsible(stack), "libfoo.so+0x1234")
        stack = frames(f"libfoo.so+0x1234@{lib}", f"xmalloc@{lib}", "app_fill@/usr/bin/app")
        self.assertEqual(self.responsible(stack), "app_fill")


def aged_dump(path: Path, rows: list[tuple[int, int, int, tuple[int, int] | None]]) -> str:
    """A dump with one frame per row (`[unmapped] 0x...`): (frame, samples,
    bytes, (oldest, mean age) or None), every sample live, period 1."""
    count, size = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines = [f"heap profile: {count}: {size} [{count}: {size}] @ heap_v2/1"]
    for frame, n, nbytes, ages in rows:
        lines.append(f"{n}: {nbytes} [{n}: {nbytes}] @ 0x1 {frame:#x}")
        if ages:
            lines.append(f"# leakprobe age: {ages[0]} {ages[1]}")
    lines += ["", "MAPPED_LIBRARIES:", "7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class OneDump(unittest.TestCase):
    def test_suspects_are_ranked_by_the_bytes_their_old_blocks_hold(self) -> None:
        with tempfile.TemporaryDirectory(prefix="leakprobe-suspects-") as tmp:
            # A steady leak over 100 s (64 MiB, ages spread 0-100 s), a cache
            # filled 90-100 s ago (48 MiB), churn younger than the 10 s threshold.
            dump = aged_dump(
                Path(tmp) / "aged.heap",
                [(0x1000, 64, 64 * MIB, (100, 50)), (0x2000, 48, 48 * MIB, (100, 95)), (0x3000, 32, 96 * MIB, (2, 1))],
            )
            answer = run_json("summary", dump)
            self.assertEqual(answer["verdict"], "suspects", answer["evidence"])
            first, second = answer["evidence"].split("the first suspect first: ")[1].split("; ")[:2]
            # 90 % of the leak's blocks are older than 10 s.
            self.assertRegex(
                first,
                r"^\[unmapped\] 0x1000 holds 57\.6 MiB in blocks older than 10 s \(64\.0 MiB live, "
                r"allocated from 100 s to 0 s ago, and still allocating\)",
            )
            self.assertRegex(second, r"^\[unmapped\] 0x2000 holds 48\.0 MiB .* from 100 s to 90 s ago\)")
            self.assertNotIn("0x3000", answer["evidence"])
            bare = aged_dump(Path(tmp) / "bare.heap", [(0x1000, 64, 64 * MIB, None)])
            answer = run_json("summary", bare)
            self.assertEqual(answer["verdict"], "one dump", answer["evidence"])
            self.assertIn("records no ages", answer["evidence"])

    def test_a_single_dump_of_the_stories_ranks_the_leak_first(self) -> None:
        probe = Probe("series", args=("all",), env={"LEAKPROBE_SAMPLE": "65536"})
        probe.expect("READY")
        for step in range(1, 7):
            probe.write("step\n")
            probe.expect(f"STEP {step}")
            if step < 6:
                # Not a synchronisation: ages are recorded in whole seconds,
                # and the stories must differ in age (the leak adds every
                # step, the cache only in the first two).
                time.sleep(1.05)
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        answer = run_json("summary", dump)
        self.assertEqual(answer["verdict"], "suspects", answer["evidence"])
        self.assertIn("a suspicion, not a verdict", answer["evidence"])
        first = answer["evidence"].split("the first suspect first: ")[1]
        self.assertRegex(first, r"^site_leak <- main <- \S+ holds [\d.]+ MiB in blocks older than 1 s \(")
        self.assertIn("site_cache", first)
        self.assertNotIn("site_churn", first)


if __name__ == "__main__":
    unittest.main()
