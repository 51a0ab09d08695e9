"""`leakprobe pprof`: the profile.proto export, read back by `go tool pprof`
(on a machine without the binaries: they are moved away first) and by an
independent decoder written here against the published field numbers of
github.com/google/pprof proto/profile.proto."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
import unittest
from dataclasses import dataclass, field
from pathlib import Path

from harness import HARNESS, ROOT, Probe, exact_dump, run_json, script, site_line
from standin import varint as read_varint

# pprof's sample types -> report's measures
MEASURES = {t: "--" + t.replace("_", "-") for t in ("inuse_space", "inuse_objects", "alloc_space", "alloc_objects")}
EXACT_SITES = ("site_malloc", "site_calloc", "site_realloc", "site_new_object", "site_cross_thread", "site_churn")


def go_pprof(*args: str) -> str:
    """`go tool pprof ARGS`, with its caches and files in a temp dir and an
    empty binary search path."""
    if shutil.which("go") is None:
        raise unittest.SkipTest("go tool pprof is not installed (scripts/install-deps installs golang-go)")
    home = tempfile.mkdtemp(prefix="leakprobe-pprof-home-")
    env = dict(os.environ, HOME=home, GOCACHE=f"{home}/gocache", GOFLAGS="", PPROF_TMPDIR=f"{home}/pprof")
    env["PPROF_BINARY_PATH"] = tempfile.mkdtemp(prefix="leakprobe-no-binaries-")
    done = subprocess.run(["go", "tool", "pprof", *args], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"go tool pprof {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def top(profile: str, sample_index: str, *more: str) -> dict[str, tuple[int, int]]:
    """function -> (flat, cum) from `pprof -top`, every node, in bytes or objects."""
    options = ("-top", f"-sample_index={sample_index}", "-unit=B", "-nodefraction=0", "-nodecount=100000", *more)
    out = go_pprof(*options, profile)
    rows: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        m = re.fullmatch(r"\s*(-?\d+)B?\s+\S+\s+\S+\s+(-?\d+)B?\s+\S+\s+(.+?)( \(inline\))?", line)
        if m:
            rows[m.group(3)] = (int(m.group(1)), int(m.group(2)))
    return rows


def export(*args: str) -> str:
    out = str(Path(tempfile.mkdtemp(prefix="leakprobe-pprof-")) / "heap.pb.gz")
    done = script("pprof", *args, "-o", out)
    if done.returncode != 0:
        raise AssertionError(f"leakprobe pprof {' '.join(args)} failed: {done.stderr}")
    return out


# -- an independent reader of profile.proto ----------------------------------


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) in order: varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
            out.append((number, value))
        elif wire == 2:
            size, i = read_varint(data, i)
            out.append((number, data[i : i + size]))
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire} for field {number}")
    if i != len(data):
        raise AssertionError("message overruns its bytes")
    return out


def signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def repeated(value: int | bytes) -> list[int]:
    """A repeated scalar, packed (bytes) or not (one int)."""
    if isinstance(value, int):
        return [value]
    out, i = [], 0
    while i < len(value):
        v, i = read_varint(value, i)
        out.append(v)
    return out


@dataclass
class Decoded:
    strings: list[str] = field(default_factory=list)
    sample_types: list[tuple[int, int]] = field(default_factory=list)
    samples: list[tuple[list[int], list[int], list[dict[int, int]]]] = field(default_factory=list)
    mappings: dict[int, dict[int, int]] = field(default_factory=dict)
    locations: dict[int, tuple[dict[int, int], list[tuple[int, int]]]] = field(default_factory=dict)
    functions: dict[int, dict[int, int]] = field(default_factory=dict)
    scalars: dict[int, int] = field(default_factory=dict)
    period_type: tuple[int, int] = (0, 0)
    comments: list[int] = field(default_factory=list)

    def s(self, index: int) -> str:
        return self.strings[index]

    def names(self, location_id: int) -> list[str]:
        """The location's Lines as `function file:line`, leaf first."""
        return [
            f"{self.s(self.functions[f][2])} {os.path.basename(self.s(self.functions[f].get(4, 0)))}:{line}"
            for f, line in self.locations[location_id][1]
        ]


def scalars_of(message: bytes) -> dict[int, int]:
    return {n: v for n, v in fields(message) if isinstance(v, int)}


def decode(path: str) -> Decoded:
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:2] == b"\x1f\x8b", "not gzipped"
    d = Decoded()
    for number, value in fields(gzip.decompress(raw)):
        if number == 6:
            assert isinstance(value, bytes)
            d.strings.append(value.decode("utf-8"))
        elif number == 1:
            assert isinstance(value, bytes)
            t = scalars_of(value)
            d.sample_types.append((t.get(1, 0), t.get(2, 0)))
        elif number == 2:
            assert isinstance(value, bytes)
            locs: list[int] = []
            values: list[int] = []
            labels: list[dict[int, int]] = []
            for n, v in fields(value):
                if n == 1:
                    locs += repeated(v)
                elif n == 2:
                    values += [signed(x) for x in repeated(v)]
                elif n == 3:
                    assert isinstance(v, bytes)
                    labels.append(scalars_of(v))
            d.samples.append((locs, values, labels))
        elif number == 3:
            assert isinstance(value, bytes)
            m = scalars_of(value)
            assert m.get(1, 0) not in d.mappings, "duplicate mapping id"
            d.mappings[m.get(1, 0)] = m
        elif number == 4:
            assert isinstance(value, bytes)
            loc, lines = {}, []
            for n, v in fields(value):
                if n == 4:
                    assert isinstance(v, bytes)
                    line = scalars_of(v)
                    lines.append((line.get(1, 0), line.get(2, 0)))
                elif isinstance(v, int):
                    loc[n] = v
            assert loc.get(1, 0) not in d.locations, "duplicate location id"
            d.locations[loc.get(1, 0)] = (loc, lines)
        elif number == 5:
            assert isinstance(value, bytes)
            fn = scalars_of(value)
            assert fn.get(1, 0) not in d.functions, "duplicate function id"
            d.functions[fn.get(1, 0)] = fn
        elif number == 11:
            assert isinstance(value, bytes)
            t = scalars_of(value)
            d.period_type = (t.get(1, 0), t.get(2, 0))
        elif number == 13:
            d.comments += repeated(value)
        else:
            assert isinstance(value, int), f"unexpected message field {number}"
            d.scalars[number] = value
    return d


class Exact(unittest.TestCase):
    """Every allocation sampled, the program then moved away: pprof shows
    from the file alone what `report` showed with the binary at hand."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.dir, program, cls.dump, _ = exact_dump("leakprobe-pprof-exact-")
        cls.reports = {i: run_json("report", cls.dump, m, "--nodecount", "100000") for i, m in MEASURES.items()}
        cls.lines = run_json("report", cls.dump, "--lines", "--nodecount", "100000")
        cls.profile = export(cls.dump)
        cls.kept = export(cls.dump, "--keep-allocator-frames")
        program.rename(cls.dir / "moved-away")

    def test_the_binary_is_really_gone(self) -> None:
        leaf = run_json("report", self.dump)["stacks"][0]["frames"][0]["function"]
        self.assertIn("(file missing or unreadable)", leaf)

    def test_top_equals_report_for_all_four_sample_types(self) -> None:
        for index, report in self.reports.items():
            with self.subTest(index):
                want = {f["name"]: (f["flat"], f["cum"]) for f in report["functions"]}
                got = top(self.profile, index)
                self.assertEqual(got, want)
                self.assertEqual(sum(flat for flat, _ in got.values()), report["total"])

    def test_the_known_sites_in_objects_and_bytes(self) -> None:
        space, objects = top(self.profile, "inuse_space"), top(self.profile, "inuse_objects")
        self.assertEqual(space["site_malloc"], (100_000, 100_000))
        self.assertEqual(objects["site_malloc"], (100, 100))
        self.assertEqual(space["site_cross_thread"][0], 300_000)
        self.assertEqual(space["site_new_object"][0], 25 * 700)
        self.assertNotIn("site_churn", space)
        self.assertEqual(top(self.profile, "alloc_objects")["site_churn"][0], 1000)
        self.assertEqual(top(self.profile, "alloc_space")["site_churn"][0], 700_000)

    def test_raw_shows_function_file_and_line_of_every_site(self) -> None:
        raw = go_pprof("-raw", self.profile)
        for site in EXACT_SITES:
            where = f"{site} {ROOT}/c-harness/exact.cc:{site_line('exact.cc', f'SITE {site}')}"
            self.assertIn(where, raw)
        self.assertIn("Comment: dump ", raw)
        self.assertRegex(raw, r"bytes:\[1000 bytes\]")

    def test_lines_equal_report_lines(self) -> None:
        out = go_pprof("-top", "-lines", "-unit=B", "-nodefraction=0", "-nodecount=100000", self.profile)
        for f in self.lines["functions"]:
            if f["flat"] and f["name"].startswith("site_"):
                name, where = f["name"].split(" ")
                self.assertRegex(out, rf"\s{f['flat']}B .* {name} \S*/{re.escape(where)}\b")

    def test_the_file_decodes_and_every_reference_resolves(self) -> None:
        d = decode(self.profile)
        self.assertEqual(d.strings[0], "")
        self.assertEqual(len(set(d.strings)), len(d.strings), "strings are not repeated")
        n = len(d.strings)
        indices = [i for t in d.sample_types for i in t] + list(d.period_type) + d.comments
        indices += [d.scalars.get(7, 0), d.scalars.get(8, 0), d.scalars.get(14, 0)]
        for m in d.mappings.values():
            indices += [m.get(5, 0), m.get(6, 0)]
        for fn in d.functions.values():
            indices += [fn.get(2, 0), fn.get(3, 0), fn.get(4, 0)]
        for _, _, labels in d.samples:
            for label in labels:
                indices += [label.get(1, 0), label.get(2, 0), label.get(4, 0)]
        self.assertTrue(all(0 <= i < n for i in indices), "a string index out of range")
        self.assertNotIn(0, d.mappings)
        self.assertNotIn(0, d.locations)
        self.assertNotIn(0, d.functions)
        for loc, lines in d.locations.values():
            self.assertIn(loc.get(2, 0), [0, *d.mappings], "location names a missing mapping")
            for function_id, _ in lines:
                self.assertIn(function_id, d.functions)
            m = d.mappings.get(loc.get(2, 0))
            if m is not None:
                self.assertTrue(m.get(2, 0) <= loc[3] < m[3], "address outside its mapping")
        for locs, values, labels in d.samples:
            self.assertEqual(len(values), len(d.sample_types))
            self.assertTrue(all(i in d.locations for i in locs))
            for label in labels:
                self.assertTrue((2 in label) != (3 in label), "a label has a string or a number")
        types = [f"{d.s(t)}/{d.s(u)}" for t, u in d.sample_types]
        self.assertEqual(sorted(types), ["alloc_objects/count", "alloc_space/bytes", "inuse_objects/count", "inuse_space/bytes"])
        self.assertEqual(d.s(d.scalars[14]), "inuse_space")
        self.assertEqual((d.s(d.period_type[0]), d.s(d.period_type[1])), ("space", "bytes"))
        self.assertEqual(d.scalars[12], 1)
        facts = self.reports["inuse_space"]["facts"]
        self.assertAlmostEqual(d.scalars[9] / 1e9, facts["time"], delta=0.001)
        comments = "\n".join(d.s(c) for c in d.comments)
        self.assertIn(f"pid {facts['pid']} (", comments)
        self.assertRegex(comments, r"rss_bytes \d+")
        self.assertRegex(comments, r"glibc_in_use_bytes \d+")
        self.assertRegex(comments, r"leakprobe \d+\.\d+\.\d+")
        main = d.mappings[1]
        self.assertTrue(d.s(main[5]).endswith("/exact"), "the first mapping is the program")
        self.assertEqual(len(d.s(main[6])), 40, "its build-id")
        inuse = [t for t, _ in d.sample_types].index(d.scalars[14])
        self.assertEqual(sum(v[inuse] for _, v, _ in d.samples), self.reports["inuse_space"]["total"])

    def test_unnamed_frames_keep_address_and_mapping_for_pprof(self) -> None:
        d = decode(export(self.dump))
        main = d.mappings[1]
        self.assertFalse(any(main.get(flag) for flag in (7, 8, 9, 10)), "pprof may symbolize it")
        unnamed = [d.names(i)[0] for i, (loc, _) in d.locations.items() if loc.get(2) == 1]
        self.assertTrue(unnamed and all("(file missing or unreadable)" in n for n in unnamed), unnamed)
        # Where the binary is back in its place, pprof names them itself.
        shutil.copy(self.dir / "moved-away", self.dir / "exact")
        try:
            self.assertEqual(top(export(self.dump), "inuse_space")["site_malloc"], (100_000, 100_000))
        finally:
            (self.dir / "exact").unlink()

    def test_pprof_drops_frame_0_from_the_raw_dump(self) -> None:
        # Go's pprof names a frame only from its DWARF: every entry point
        # that a sample names as frame 0 must have some (a naked function
        # has none, and would stay as [libleakprobe.so], holding the bytes).
        shutil.copy(self.dir / "moved-away", self.dir / "exact")
        try:
            space = top(self.dump, "inuse_space")
        finally:
            (self.dir / "exact").unlink()
        sites = ("site_malloc", "site_calloc", "site_realloc", "site_posix_memalign", "site_memalign")
        sites += ("site_aligned_alloc", "site_valloc", "site_new_object", "site_new_array")
        for site in sites:
            flat, cum = space[site]
            self.assertTrue(flat > 0 and flat == cum, f"{site} is a leaf: {space}")
        self.assertFalse([f for f, (flat, _) in space.items() if "leakprobe" in f and flat], space)

    def test_allocator_frames_dropped_or_kept(self) -> None:
        for profile, leaf in ((self.profile, "site_malloc"), (self.kept, "malloc")):
            d = decode(profile)
            stacks = [[d.names(i)[0].split(" ")[0] for i in locs] for locs, _, _ in d.samples]
            malloc_site = [s for s in stacks if "site_malloc" in s]
            self.assertTrue(malloc_site)
            self.assertEqual({s[0] for s in malloc_site}, {leaf}, profile)
        kept = top(self.kept, "inuse_space")
        self.assertEqual(kept["site_malloc"], (0, 100_000))
        self.assertGreaterEqual(kept["malloc"][0], 100_000)


class Inlined(unittest.TestCase):
    def test_an_inline_chain_is_one_location_with_several_lines(self) -> None:
        probe = Probe("inlined", env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        d = decode(export(dump))
        want = [f"{f} inlined.c:{site_line('inlined.c', f'SITE {f}')}" for f in ("new_node", "grow_list", "build_lists")]
        chains = [d.names(i) for i in d.locations]
        self.assertIn(want, chains)
        leaf = [locs[0] for locs, _, _ in d.samples if d.names(locs[0]) == want]
        self.assertEqual(len(set(leaf)), 1, "one location")
        space = top(export(dump), "inuse_space")
        self.assertEqual(space["new_node"], (64 * 512, 64 * 512))
        self.assertEqual(space["grow_list"], (0, 64 * 512))
        self.assertEqual(space["build_lists"], (0, 64 * 512))


class StrippedNonPie(unittest.TestCase):
    """A non-PIE program stripped of everything, its debug info in a
    .build-id tree: pprof alone names nothing in it; the export names it."""

    def test_frames_named_from_the_separate_debug_info(self) -> None:
        probe = Probe("stripped_nopie", env={"LEAKPROBE_SAMPLE": "4096"})
        probe.expect("demo: pid")
        try:
            # The leak grows with every request: dump until it is sampled.
            for _ in range(50):
                dump = str(probe.dump())
                if "parse_headers" in script("report", dump, "--debug-dir", str(HARNESS / "debug")).stdout:
                    break
        finally:
            probe.kill()
        profile = export(dump, "--debug-dir", str(HARNESS / "debug"))
        self.assertNotIn("parse_headers", go_pprof("-top", dump), "pprof names it by itself")
        space = top(profile, "inuse_space")
        functions = run_json("report", dump, "--debug-dir", str(HARNESS / "debug"), "--nodecount", "1000")["functions"]
        report = {f["name"]: (f["flat"], f["cum"]) for f in functions}
        self.assertEqual(space, report)
        self.assertGreater(space["parse_headers"][0], 0)
        self.assertEqual(space["main"][0], 0)
        line = site_line("demo.c", "leaked: never freed")
        self.assertIn(f"parse_headers {ROOT}/c-harness/demo.c:{line}", go_pprof("-raw", profile))


class Mapped(unittest.TestCase):
    """`--mmap`: the memory mapped outside malloc (c-harness/mapped.c shapes,
    exact) as its own profile, each stack rooted at its kind, as `report
    --mmap` shows it; the heap export leaves it out."""

    @classmethod
    def setUpClass(cls) -> None:
        probe = Probe("mapped", ("shapes",), env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        cls.dump = str(probe.dump())
        assert probe.finish() == 0
        cls.profile = export("--mmap", cls.dump)

    def test_kinds_are_roots_with_their_bytes(self) -> None:
        d = decode(self.profile)
        inuse = [t for t, _ in d.sample_types].index(d.scalars[14])
        by_root: dict[str, int] = {}
        for locs, values, _ in d.samples:
            loc, lines = d.locations[locs[-1]]
            # The root is no call site: no mapping, no address.
            self.assertEqual((loc.get(2, 0), loc.get(3, 0), len(lines)), (0, 0, 1))
            root = d.s(d.functions[lines[0][0]][2])
            by_root[root] = by_root.get(root, 0) + values[inuse]
            self.assertIn("site_", " ".join(n for i in locs for n in d.names(i)))
        # 20 MiB anonymous and 1 MiB of a file left mapped (mapped.c's truth).
        self.assertEqual(by_root, {"[anonymous mmap]": 20 << 20, "[file mmap]": 1 << 20})
        comments = "\n".join(d.s(c) for c in d.comments)
        self.assertIn("memory mapped outside malloc", comments)

    def test_top_equals_report_mmap(self) -> None:
        for index, measure in (("inuse_space", "--inuse-space"), ("alloc_objects", "--alloc-objects")):
            with self.subTest(index):
                report = run_json("report", "--mmap", measure, self.dump, "--nodecount", "100000")
                want = {f["name"]: (f["flat"], f["cum"]) for f in report["functions"]}
                self.assertEqual(top(self.profile, index), want)
        heap = top(export(self.dump), "inuse_space")
        self.assertNotIn("[anonymous mmap]", heap)
        self.assertEqual(heap["site_big_malloc"], (64 << 20, 64 << 20))


class BaseAndMerge(unittest.TestCase):
    def test_base_shows_only_the_growth(self) -> None:
        probe = Probe("series", env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        dumps = []
        for step in range(1, 5):
            probe.write("step\n")
            probe.expect(f"STEP {step}")
            if step >= 3:
                dumps.append(str(probe.dump()))
        self.assertEqual(probe.finish(), 0)
        older, newer = dumps
        growth = export(newer, "--base", older)
        space = {n: v for n, v in top(growth, "inuse_space").items() if v != (0, 0)}
        self.assertEqual(space["site_leak"], (16 << 20, 16 << 20))
        self.assertEqual([n for n, (flat, _) in space.items() if flat], ["site_leak"])
        self.assertEqual(top(growth, "alloc_space")["site_churn"][0], 32 << 20)
        # pprof's own -base on the two exports agrees.
        self.assertEqual(top(export(newer), "inuse_space", "-base", export(older)), top(growth, "inuse_space"))
        d = decode(growth)
        self.assertTrue(any("a difference" in d.s(c) for c in d.comments))

    def test_two_processes_sum(self) -> None:
        dumps, pids = [], set()
        for _ in range(2):
            probe = Probe("exact", env={"LEAKPROBE_SAMPLE": "1"})
            probe.expect("READY")
            dumps.append(str(probe.dump()))
            pids.add(probe.proc.pid)
            self.assertEqual(probe.finish(), 0)
        merged = export(*dumps)
        self.assertEqual(top(merged, "inuse_space")["site_malloc"], (200_000, 200_000))
        self.assertEqual(top(merged, "inuse_objects")["site_cross_thread"][0], 200)
        totals = sum(run_json("report", d)["total"] for d in dumps)
        self.assertEqual(sum(flat for flat, _ in top(merged, "inuse_space").values()), totals)
        d = decode(merged)
        labelled = {label[3] for _, _, labels in d.samples for label in labels if d.s(label[1]) == "pid"}
        self.assertEqual(labelled, pids)
        tags = go_pprof("-tags", merged)
        self.assertTrue(all(str(p) in tags for p in pids), tags)


class BadInput(unittest.TestCase):
    def test_one_clear_line_and_exit_1(self) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="leakprobe-pprof-bad-"))
        (tmp / "not-a-dump").write_text("hello\n")
        (tmp / "empty").write_text("")
        out = str(tmp / "out.pb.gz")
        cases = {
            "missing": ([str(tmp / "missing.heap")], "cannot be read"),
            "not a dump": ([str(tmp / "not-a-dump")], "is not a leakprobe heap profile"),
            "empty": ([str(tmp / "empty")], "is empty"),
            "bad base": ([str(tmp / "not-a-dump"), "--base", str(tmp / "empty")], "is not a leakprobe heap profile"),
        }
        for what, (args, message) in cases.items():
            with self.subTest(what):
                done = script("pprof", *args, "-o", out)
                self.assertEqual(done.returncode, 1)
                self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
                self.assertIn(message, done.stderr)
                self.assertFalse(os.path.exists(out))
        # A valid dump with nothing live: an empty profile, but not into a
        # directory that does not exist.
        (tmp / "quiet.heap").write_text(
            "heap profile: 0: 0 [0: 0] @ heap_v2/524288\nMAPPED_LIBRARIES:\n00400000-00401000 r-xp 00000000 00:00 0 /bin/true\n"
        )
        done = script("pprof", str(tmp / "quiet.heap"), "-o", str(tmp / "no-such-dir" / "out.pb.gz"))
        self.assertEqual((done.returncode, len(done.stderr.splitlines())), (1, 1), done.stderr)
        self.assertIn("no-such-dir/out.pb.gz: No such file or directory", done.stderr)
        self.assertEqual(decode(export(str(tmp / "quiet.heap"))).samples, [])
        self.assertEqual(script("pprof", str(tmp / "quiet.heap")).returncode, 2, "-o is required")
        self.assertEqual(sorted(p.name for p in tmp.iterdir()), ["empty", "not-a-dump", "quiet.heap"], "no temp file left")


if __name__ == "__main__":
    unittest.main()
