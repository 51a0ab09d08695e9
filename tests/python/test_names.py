"""Names a user can act on: a library rebuilt since the dump is never named
from the new build (every view marks it), C++ names from symbol tables are
demangled, and the flame graph's first screen shows the widest frames."""

from __future__ import annotations

import colorsys
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

from harness import HARNESS, ROOT, Probe, run_json, script, write_dump

sys.path.insert(0, str(ROOT / "scripts"))
from leakprobe_tool.elf import Elf
from leakprobe_tool.flamegraph import color

CFLAGS = ["-g", "-O0", "-fno-omit-frame-pointer"]
REPLACED = "(file replaced since the dump)"


def build_library(where: Path, rebuilt: bool) -> None:
    """libstale.so.1.0 (soname libstale.so.1, as the loader names it), replaced
    by a rename as a package upgrade replaces it."""
    new = where / "libstale.so.1.0.new"
    extra = ["-DREBUILT"] if rebuilt else []
    subprocess.run(
        [
            "gcc",
            *CFLAGS,
            *extra,
            "-shared",
            "-fPIC",
            "-Wl,-soname,libstale.so.1",
            "-o",
            str(new),
            str(ROOT / "c-harness/stale_lib.c"),
        ],
        check=True,
    )
    new.rename(where / "libstale.so.1.0")


class RebuiltLibrary(unittest.TestCase):
    """Issue 11, item 1: three dumps of a program leaking through a shared
    library, then the library is rebuilt so that the recorded address falls
    in another function."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.dir = Path(tempfile.mkdtemp(prefix="leakprobe-stale-"))
        build_library(cls.dir, rebuilt=False)
        (cls.dir / "libstale.so.1").symlink_to("libstale.so.1.0")
        program = str(cls.dir / "stale_main")
        source, library = str(ROOT / "c-harness/stale_main.c"), str(cls.dir / "libstale.so.1")
        include = str(ROOT / "c-harness")
        subprocess.run(["gcc", *CFLAGS, "-I", include, "-o", program, source, library, f"-Wl,-rpath,{cls.dir}"], check=True)
        probe = Probe([program], env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        cls.dumps = [str(probe.dump()) for _ in range(3)]
        assert probe.finish() == 0
        cls.library = str(cls.dir / "libstale.so.1.0")
        cls.before = run_json("report", cls.dumps[0])
        build_library(cls.dir, rebuilt=True)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.dir)

    def library_frames(self, report: dict) -> list[dict]:
        return [f for s in report["stacks"] for f in s["frames"] if f["object"] == self.library]

    def test_before_the_rebuild_the_leak_is_named_and_verified(self) -> None:
        frames = self.library_frames(self.before)
        self.assertEqual([(f["function"], f["build_id_check"]) for f in frames], [("lib_leak", "verified")])
        self.assertEqual(self.before["stacks"][0]["bytes"], 100_000)

    def test_the_rebuilt_file_would_name_another_function(self) -> None:
        """The premise: without the check, the report names the padding."""
        text = Path(self.dumps[0]).read_text()
        self.assertIn("# leakprobe build_id: ", text)
        blind = self.dir / "no-build-ids.heap"
        blind.write_text("".join(line for line in text.splitlines(True) if "build_id:" not in line))
        result = script("report", str(blind))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("padding_function [unverified]", result.stdout)
        self.assertIn(f"{self.library}: cannot tell whether it is the file the process mapped", result.stderr)
        frames = self.library_frames(run_json("report", str(blind)))
        self.assertEqual([(f["function"], f["build_id_check"]) for f in frames], [("padding_function", "unverified")])

    def test_every_view_marks_the_frame_and_never_names_the_padding(self) -> None:
        frames = self.library_frames(run_json("report", self.dumps[0]))
        self.assertEqual(len(frames), 1)
        self.assertTrue(frames[0]["function"].startswith(f"{self.library}+0x"), frames)
        self.assertTrue(frames[0]["function"].endswith(REPLACED), frames)
        self.assertEqual(frames[0]["build_id_check"], "stale")
        svg = self.dir / "flame.svg"
        views = {
            "report": ["report", self.dumps[0]],
            "report --json": ["report", self.dumps[0], "--json"],
            "collapsed": ["collapsed", self.dumps[0]],
            "diff": ["diff", self.dumps[0], self.dumps[1], "--json"],
            "trend": ["trend", *self.dumps],
            "trend --json": ["trend", *self.dumps, "--json"],
            "summary": ["summary", *self.dumps],
            "flamegraph": ["flamegraph", self.dumps[0], "-o", str(svg)],
        }
        for view, args in views.items():
            result = script(*args)
            self.assertEqual(result.returncode, 0, f"{view}: {result.stderr}")
            out = svg.read_text() if view == "flamegraph" else result.stdout
            self.assertNotIn("padding_function", out, view)
            self.assertNotIn("lib_leak", out, view)
            if view not in ("summary", "diff"):  # no changes between identical dumps; summary names growth only
                self.assertIn(REPLACED, out, view)

    def test_build_ids_keyed_by_map_path_or_loader_name(self) -> None:
        """The dump format the library writes now (the map's path), and the
        loader's name matched through a loaded_as line when the name no
        longer resolves to the mapped file."""
        text = Path(self.dumps[0]).read_text()
        loader = str(self.dir / "libstale.so.1")
        # Libraries before the map-path keying wrote the loader's name.
        names = f"{re.escape(loader)}|{re.escape(str(self.library))}"
        # The library's own loaded_as line for it gives way to the hand-made one.
        text = re.sub(rf"# leakprobe loaded_as: {re.escape(str(self.library))}\t.*\n", "", text)
        ((build_id, written),) = re.findall(rf"# leakprobe build_id: (\w+) ({names})\n", text)
        forms = {
            "map path": text.replace(f"{build_id} {written}\n", f"{build_id} {self.library}\n"),
            "loaded_as": text.replace(
                f"{build_id} {written}\n",
                f"{build_id} /gone/libstale.so.1\n# leakprobe loaded_as: {self.library}\t/gone/libstale.so.1\n",
            ),
        }
        for form, content in forms.items():
            path = self.dir / f"{form}.heap"
            path.write_text(content)
            frames = self.library_frames(run_json("report", str(path)))
            self.assertEqual([f["build_id_check"] for f in frames], ["stale"], form)
        unmatched = self.dir / "unmatched.heap"
        unmatched.write_text(text.replace(f"{build_id} {written}\n", f"{build_id} /gone/libstale.so.1\n"))
        frames = self.library_frames(run_json("report", str(unmatched)))
        self.assertEqual([f["build_id_check"] for f in frames], ["unverified"])


class CxxWithoutDwarf(unittest.TestCase):
    """Issue 11, item 3: names from an ELF symbol table are demangled."""

    def test_namespaced_leak_is_demangled_and_the_mangled_name_kept(self) -> None:
        program = HARNESS / "cxx_nodwarf"
        self.assertFalse(Elf(str(program)).has_dwarf, "the harness must be built without DWARF")
        probe = Probe("cxx_nodwarf", env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        report = run_json("report", dump)
        leaf = report["stacks"][0]["frames"][0]
        self.assertEqual(
            (leaf["function"], leaf["mangled"], leaf["file"], leaf["build_id_check"]),
            ("shop::Cart::reserve(unsigned int)", "_ZN4shop4Cart7reserveEj", None, "verified"),
        )
        self.assertEqual(report["stacks"][0]["bytes"], 100_000)
        text = script("report", dump)
        self.assertIn("shop::Cart::reserve(unsigned int)", text.stdout)
        self.assertNotIn("_ZN4shop", text.stdout)
        self.assertNotIn("_Z", script("collapsed", dump).stdout)


ANON = "7f0000000000-7f0000100000 r-xp 00000000 00:00 0"
WINDOW = (1400, 900)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB triples) of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + size
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, kind, interlace = header[8], header[9], header[12]
    assert depth == 8 and kind in (2, 6) and interlace == 0, header
    step = 3 if kind == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * step
    rows, prior = [], bytearray(stride)
    for y in range(height):
        filt, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, corner = prior[i], prior[i - step] if i >= step else 0
            if filt == 1:
                line[i] = (line[i] + left) & 255
            elif filt == 2:
                line[i] = (line[i] + up) & 255
            elif filt == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif filt == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(b for i in range(0, stride, step) for b in line[i : i + 3]))
        prior = line
    return width, height, rows


def rgb(hsl: str) -> tuple[int, int, int]:
    h, s, lightness = (float(v) for v in re.findall(r"[\d.]+", hsl))
    r, g, b = colorsys.hls_to_rgb(h / 360, lightness / 100, s / 100)
    return round(r * 255), round(g * 255), round(b * 255)


class FlameGraphFirstScreen(unittest.TestCase):
    """Issue 11, item 7: one 150-frame stack of 0.4 % and a wide one of 99 %:
    the wide stack's allocation site is on the first screen (1400x900) in
    headless Chromium, and --depth bounds the height."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.dir = Path(tempfile.mkdtemp(prefix="leakprobe-flame-"))
        base = 0x7F0000001000
        root = [base, base + 0x10]  # shared outer frames, leaf last
        wide = [*root, base + 0x100, base + 0x110, base + 0x120]
        deep = [*root, *(base + 0x1000 + 0x10 * i for i in range(148))]
        other = [*root, base + 0x200]
        rows = [(1, 99_000, wide[::-1]), (1, 400, deep[::-1]), (1, 600, other[::-1])]
        cls.dump = write_dump(cls.dir / "flame.heap", rows, [ANON])
        cls.site = f"[anonymous] 0x{wide[-1]:x}"  # the frame holding most bytes, at its stack's leaf

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.dir)

    def flamegraph(self, name: str, *args: str) -> Path:
        out = self.dir / f"{name}.svg"
        result = script("flamegraph", self.dump, "-o", str(out), *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return out

    def chromium(self, *args: str) -> subprocess.CompletedProcess[str]:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            self.skipTest("SKIP: chromium is not installed (scripts/install-deps installs it)")
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={tempfile.mkdtemp(dir=self.dir)}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
        ]  # fmt: skip
        return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120, check=False)

    def test_all_frames_unlimited_depth_widest_on_the_first_screen(self) -> None:
        svg = self.flamegraph("all", "--depth", "1000")
        depths = [int(g.get("data-depth")) for g in ET.parse(svg).getroot().iter() if g.get("data-depth")]
        self.assertEqual(max(depths), 150, "the deep stack is drawn whole")
        # Where the page's script puts the site's frame once it has run.
        dom = self.chromium("--dump-dom", svg.as_uri()).stdout
        self.assertIn('data-ready="1"', dom[dom.find("<svg") :].split(">", 1)[0])
        frame = re.search(rf'data-name="{re.escape(self.site)}"[^>]*>.*?<rect ([^>]*)>', dom, re.S)
        self.assertIsNotNone(frame, "the site's frame is not in the page")
        y = float(re.search(r' y="([\d.]+)"', " " + frame.group(1)).group(1))
        width = float(re.search(r'width="([\d.]+)"', frame.group(1)).group(1))
        self.assertLess(y + 17, WINDOW[1])
        self.assertGreater(width, 0.95 * 1180)
        # And in pixels: the site's colour fills most of a row on the first screen.
        shot = self.dir / "all.png"
        self.chromium(f"--screenshot={shot}", svg.as_uri())
        self.assertTrue(shot.exists(), "no screenshot")
        width_px, height_px, rows = png_pixels(shot.read_bytes())
        self.assertEqual((width_px, height_px), WINDOW)
        want = rgb(color(self.site))
        near = 0
        for row in rows:
            for i in range(0, len(row), 3):
                if all(abs(row[i + k] - want[k]) <= 2 for k in range(3)):
                    near += 1
        self.assertGreater(near, 10_000, f"the frame holding most bytes ({self.site}, rgb{want}) is not on the first screen")

    def test_depth_is_honoured_with_the_cut_marked(self) -> None:
        svg = ET.parse(self.flamegraph("cut", "--depth", "10")).getroot()
        frames = {g.get("data-name"): g for g in svg.iter() if g.get("data-depth")}
        self.assertEqual(max(int(g.get("data-depth")) for g in frames.values()), 10)
        marker = frames["[141 frames elided by --depth 10]"]
        self.assertEqual(int(marker.get("data-value")), 400)
        self.assertIn(self.site, frames, "the wide stack is whole")
        # The default depth keeps the page within one screen here.
        default = ET.parse(self.flamegraph("default")).getroot()
        self.assertLessEqual(int(default.get("height")), WINDOW[1])
        self.assertEqual(default.get("data-total"), "100000")


if __name__ == "__main__":
    unittest.main()
