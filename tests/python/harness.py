"""Runs harness programs with libleakprobe preloaded and collects their dumps
(the Python side of tests/common/mod.rs, for the companion script's tests)."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "target/release/libleakprobe.so"
HARNESS = ROOT / "target/harness"
SCRIPT = ROOT / "scripts/leakprobe"
JAVA_CLASSES = ROOT / "target/java"

if not LIBRARY.exists():
    raise SystemExit(f"{LIBRARY} is missing: run `make test`, which builds it first")


class Probe:
    """A harness program running under the library, dumping into its own directory."""

    def __init__(
        self,
        program: str | list[str],
        args: tuple[str, ...] = (),
        env: dict[str, str | None] | None = None,
        stderr: int | None = None,
        **popen: Any,
    ) -> None:
        """`program` is a harness program's name, or a whole command. `env`
        overrides the environment (None removes a variable: LD_PRELOAD=None runs
        it without the library); `stderr` is a descriptor for its stderr (by
        default stderr.txt in its directory); `popen` goes to subprocess.Popen
        (cwd, user)."""
        command = [str(HARNESS / program), *args] if isinstance(program, str) else program
        self.dir = Path(tempfile.mkdtemp(prefix=f"leakprobe-{Path(command[0]).name}-"))
        environment = dict(os.environ, LD_PRELOAD=str(LIBRARY), LEAKPROBE_DIR=str(self.dir))
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        self.stderr = open(self.dir / "stderr.txt", "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr if stderr is None else stderr,
            env=environment,
            text=True,
            **popen,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        return self.lines_until(prefix, timeout)[-1]

    def lines_until(self, prefix: str, timeout: float = 60.0) -> list[str]:
        """The lines of its stdout up to the first that starts with `prefix`."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no line starting with {prefix!r} within {timeout}s") from None
            seen.append(line)
            if line.startswith(prefix):
                return seen

    def dumps(self) -> list[Path]:
        found = []
        for p in self.dir.glob(f"leakprobe.{self.proc.pid}.*.heap"):
            found.append((int(p.name.split(".")[2]), p))
        return [p for _, p in sorted(found)]

    def dump(self, timeout: float = 30.0) -> Path:
        want = len(self.dumps()) + 1
        os.kill(self.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while len(self.dumps()) < want:
            if time.monotonic() > deadline:
                raise AssertionError(f"no dump within {timeout}s")
            time.sleep(0.02)
        return self.dumps()[want - 1]

    def dump_with_samples(self, least: int, timeout: float = 30.0) -> Path:
        """Dumps until a dump holds `least` live samples: a program that has
        just started (the demo) may not have sampled its leak enough yet."""
        deadline = time.monotonic() + timeout
        while True:
            path = self.dump(timeout)
            found = re.search(r"^# leakprobe live_samples: (\d+)$", path.read_text(), re.M)
            if found and int(found.group(1)) >= least:
                return path
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {least} live samples in every dump for {timeout}s")

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60.0) -> int:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.reader.join(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.stderr.close()


def dumps_around_growth(argv: str | list[str], env: dict[str, str | None] | None = None) -> tuple[str, str]:
    """Runs a harness that grows on "go" (READY, then GREW once grown) and
    returns its dumps from before and after the growth."""
    probe = Probe(argv, env=env or {})
    probe.expect("READY")
    before = str(probe.dump())
    probe.write("go\n")
    probe.expect("GREW", timeout=120)
    after = str(probe.dump())
    assert probe.finish() == 0
    return before, after


def exact_dump(prefix: str) -> tuple[Path, Path, str, int]:
    """c-harness/exact.cc, copied into a directory of its own (so a test can
    move it away after), run with every allocation sampled: (the directory,
    the program's copy, its dump, its pid)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    program = directory / "exact"
    shutil.copy(HARNESS / "exact", program)
    probe = Probe([str(program)], env={"LEAKPROBE_SAMPLE": "1"})
    probe.expect("READY")
    dump = str(probe.dump())
    assert probe.finish() == 0
    return directory, program, dump, probe.proc.pid


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def site_line(source: str, marker: str) -> int:
    for number, line in enumerate((ROOT / "c-harness" / source).read_text().splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in {source}")


def run_json(*args: str) -> dict:
    """Runs the script with --json and returns its answer."""
    result = script(*args, "--json")
    if result.returncode != 0:
        raise AssertionError(f"leakprobe {' '.join(args)} failed: {result.stderr}")
    return json.loads(result.stdout)


def write_dump(
    path: Path,
    rows: list[tuple[int, int, list[int]]],
    maps: list[str],
    meta: dict[str, str] | None = None,
    period: str = "1",
) -> str:
    """A dump as the library writes one, for inputs no process produces.
    rows: (count, bytes, frames); frame 0 is the allocator marker, which the
    script skips. Text that is not UTF-8 is given with surrogateescape."""
    count, size = sum(r[0] for r in rows), sum(r[1] for r in rows)
    lines = [f"heap profile: {count}: {size} [{count}: {size}] @ heap_v2/{period}"]
    lines += [f"# leakprobe {k}: {v}" for k, v in (meta or {}).items()]
    lines += [f"{c}: {b} [{c}: {b}] @ 0x1" + "".join(f" {f:#x}" for f in frames) for c, b, frames in rows]
    lines += ["", "MAPPED_LIBRARIES:", *maps]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    return str(path)
