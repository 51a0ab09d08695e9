"""`leakprobe push` and `watch` against tests/python/standin.py, a stand-in
that implements the back ends' documented request formats strictly (no real
Pyroscope or Parca server can be installed here): what arrives is read back
by `go tool pprof` with the program moved away."""

from __future__ import annotations

import contextlib
import gzip
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

from harness import HARNESS, ROOT, SCRIPT, Probe, exact_dump, script, write_dump
from standin import Received, StandIn
from test_pprof import decode, go_pprof, top

DUMP_NAME = re.compile(rb"leakprobe\.(\d+)\.(\d+)\.heap")


def saved(r: Received) -> str:
    path = Path(tempfile.mkdtemp(prefix="leakprobe-arrived-")) / "heap.pb.gz"
    path.write_bytes(r.profile)
    return str(path)


def dump_of(r: Received) -> tuple[int, int]:
    """(pid, sequence number) of the dump a profile was made from (its comment)."""
    found = DUMP_NAME.search(gzip.decompress(r.profile))
    assert found, "the profile names its dump"
    return int(found.group(1)), int(found.group(2))


def one_line(test: unittest.TestCase, done: subprocess.CompletedProcess[str], *wanted: str) -> None:
    test.assertEqual(done.returncode, 1, done.stderr)
    test.assertEqual(len(done.stderr.splitlines()), 1, done.stderr)
    test.assertTrue(done.stderr.rstrip("\n").isprintable(), done.stderr)
    for w in wanted:
        test.assertIn(w, done.stderr)


class Push(unittest.TestCase):
    """An exact dump of c-harness/exact.cc pushed through both Pyroscope APIs
    (and Parca's), then the program moved away."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.dir, program, cls.dump, cls.pid = exact_dump("leakprobe-push-")
        cls.server = StandIn(user="ops", password="s3cret", tenant="team-a")
        env = dict(os.environ, LEAKPROBE_PUSH_PASSWORD="s3cret")
        cls.arrived: dict[str, Received] = {}
        for api in ("push", "ingest", "parca"):
            where = ["--parca", cls.server.url] if api == "parca" else ["--pyroscope", cls.server.url, "--api", api]
            options = [*where, "--label", "env=test", "--tenant", "team-a", "--user", "ops"]
            done = subprocess.run(
                [sys.executable, str(SCRIPT), "push", *options, cls.dump], capture_output=True, text=True, env=env, check=False
            )
            assert done.returncode == 0, done.stderr
            cls.arrived[api] = cls.server.received[-1]
        program.rename(cls.dir / "moved-away")

    def test_pprof_finds_the_leak_with_its_exact_bytes_from_what_arrived(self) -> None:
        for api, r in self.arrived.items():
            with self.subTest(api):
                self.assertEqual(r.api, api)
                profile = saved(r)
                self.assertEqual(top(profile, "inuse_space")["site_malloc"], (100_000, 100_000))
                self.assertEqual(top(profile, "inuse_objects")["site_malloc"], (100, 100))
                self.assertEqual(top(profile, "alloc_space")["site_churn"][0], 700_000)
                self.assertIn("(file missing or unreadable)", script("report", self.dump).stdout, "the binary is gone")

    def test_sample_types_period_and_units(self) -> None:
        d = decode(saved(self.arrived["push"]))
        types = sorted(f"{d.s(t)}/{d.s(u)}" for t, u in d.sample_types)
        self.assertEqual(types, ["alloc_objects/count", "alloc_space/bytes", "inuse_objects/count", "inuse_space/bytes"])
        self.assertEqual((d.s(d.period_type[0]), d.s(d.period_type[1])), ("space", "bytes"))
        self.assertEqual(d.scalars[12], 1, "the sample period")
        self.assertIn("Type: inuse_space", go_pprof("-top", saved(self.arrived["ingest"])))

    def test_labels(self) -> None:
        text = Path(self.dump).read_text().splitlines()
        build_id = next(line.split()[3] for line in text if line.startswith("# leakprobe build_id: ") and "/exact" in line)
        version = next(line.split()[3] for line in text if line.startswith("# leakprobe version: "))
        want = {
            "service_name": "exact",
            "hostname": socket.gethostname(),
            "pid": str(self.pid),
            "build_id": build_id,
            "leakprobe_version": version,
            "env": "test",
        }
        self.assertRegex(build_id, r"^[0-9a-f]{40}$")
        for api, r in self.arrived.items():
            with self.subTest(api):
                self.assertEqual({k: v for k, v in r.labels.items() if k != "__name__"}, want)
                self.assertEqual(r.labels.get("__name__"), None if api == "ingest" else "memory")
                self.assertEqual(r.headers.get("x-scope-orgid"), "team-a")

    def test_name_overrides_the_service(self) -> None:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "push", "--pyroscope", self.server.url, "--name", "api-7", "--tenant", "team-a",
             "--user", "ops", self.dump],
            capture_output=True, text=True, env=dict(os.environ, LEAKPROBE_PUSH_PASSWORD="s3cret"), check=False,
        )  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(self.server.received[-1].labels["service_name"], "api-7")

    def test_the_stand_in_refused_nothing(self) -> None:
        self.assertEqual(self.server.rejected, [])

    def test_https_checks_the_certificate(self) -> None:
        if shutil.which("openssl") is None:
            self.skipTest("openssl is not installed (scripts/install-deps installs it)")
        tmp = Path(tempfile.mkdtemp(prefix="leakprobe-tls-"))
        cert, key = str(tmp / "cert.pem"), str(tmp / "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        server = StandIn(tls=(cert, key))
        self.assertTrue(server.url.startswith("https://"))
        one_line(self, script("push", "--pyroscope", server.url, self.dump), "not pushed", "CERTIFICATE_VERIFY_FAILED")
        self.assertEqual(server.received, [])
        trusted = dict(os.environ, SSL_CERT_FILE=cert)
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "push", "--pyroscope", server.url, self.dump],
            capture_output=True, text=True, env=trusted, check=False,
        )  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(len(server.received), 1)

    def not_http(self) -> str:
        """A server that answers as sshd does."""
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)

        def serve() -> None:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn:
                    # The whole request first: the answer, not a closed socket, is the point.
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536) or b"\r\n\r\n"
                    head, _, body = data.partition(b"\r\n\r\n")
                    size = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                    while len(body) < size:
                        body += conn.recv(65536) or b"x" * size
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\x1b[31m")

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    def test_failures_are_one_line_and_exit_1(self) -> None:
        server = StandIn()
        url = ["--pyroscope", server.url]
        hostile = b"\x1b[31mbad\r\nprofile\x07 " + "\u202e".encode()
        cases = {
            "4xx": (("status", 400, hostile), url, ["answered 400", "\\x1b[31mbad"]),
            "5xx": (("status", 503, b"overloaded"), url, ["answered 503", "overloaded"]),
            "auth": (None, ["--pyroscope", StandIn(user="a", password="b").url], ["answered 401", "basic auth required"]),
            "timeout": (("delay", 5), [*url, "--timeout", "1"], ["no answer within 1 s"]),
            "redirect": (("status", 307, b"", {"Location": "http://elsewhere/\x1b]0;x"}), url, ["redirect to http://elsewhere/"]),
            "huge": (("status", 500, b"\x1b" * (4 << 20)), url, ["answered 500"]),
        }
        for what, (fault, options, wanted) in cases.items():
            with self.subTest(what):
                server.fault = fault
                one_line(self, script("push", *options, self.dump), "not pushed", *wanted)
        server.fault = None
        server.stop()
        one_line(self, script("push", *url, self.dump), "not pushed", "Connection refused")
        one_line(self, script("push", "--pyroscope", self.not_http(), self.dump), "not pushed", "not an HTTP answer")
        for bad in ("http://[::1", "http://host:port", "http://", "http://h/?q=1"):
            one_line(self, script("push", "--pyroscope", bad, self.dump), "not an http:// or https:// URL")
        one_line(self, script("push", "--pyroscope", "ftp://x", self.dump), "not an http:// or https:// URL")
        one_line(self, script("push", *url, str(self.dir / "missing.heap")), "cannot be read")
        one_line(self, script("push", *url, "--user", "u", self.dump), "needs a password")


class DebianPython(unittest.TestCase):
    """A program nobody here wrote: Debian's python3 (stripped; names from its
    .dynsym) holding 300 bytearrays of 100,000 bytes, every allocation
    sampled, pushed to Parca's gateway."""

    def test_the_bytearrays_arrive_under_pybytearray_resize(self) -> None:
        if not os.path.exists("/usr/bin/python3"):
            self.skipTest("Debian's /usr/bin/python3 is not installed")
        code = "import sys\nx = [bytearray(100000) for _ in range(300)]\nprint('READY', flush=True)\nsys.stdin.read()"
        probe = Probe(["/usr/bin/python3", "-c", code], env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        dump = str(probe.dump())
        self.assertEqual(probe.finish(), 0)
        server = StandIn()
        done = script("push", "--parca", server.url, dump)
        self.assertEqual(done.returncode, 0, done.stderr)
        (arrived,) = server.received
        self.assertTrue(arrived.labels["service_name"].startswith("python3"), arrived.labels)
        # Each bytearray(100000) holds 100,001 bytes (its terminating NUL).
        self.assertEqual(top(saved(arrived), "inuse_space")["PyByteArray_Resize"], (0, 300 * 100_001))


class HostileNames(unittest.TestCase):
    def test_a_program_name_with_control_bytes_and_no_utf8_arrives_escaped(self) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="leakprobe-push-names-"))
        program = "/opt/a\x1b[2Jb/svc\udcff\x07"  # ESC, a byte that is not UTF-8, BEL
        meta = {"pid": "4242", "program": program, "version": "0.1.0", "time_unix": "1700000000.000"}
        maps = [f"400000-500000 r-xp 00000000 fe:00 1 {program}"]
        dump = write_dump(tmp / "names.heap", [(1, 100, [0x1, 0x401200])], maps, meta)
        server = StandIn()
        # /ingest's service names take [A-Za-z0-9_./-] only: the rest is _.
        for api, service in (("push", "svc\\xff\\x07"), ("ingest", "svc_xff_x07")):
            with self.subTest(api):
                done = script("push", "--pyroscope", server.url, "--api", api, dump)
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertEqual(server.received[-1].labels["service_name"], service)
                self.assertIn(b"/opt/a\\x1b[2Jb/svc\\xff\\x07", gzip.decompress(server.received[-1].profile))
        self.assertEqual(server.rejected, [])


class Watch(unittest.TestCase):
    def watch(self, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "watch", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()

        def end() -> None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()

        self.addCleanup(end)
        return proc, lines

    def line(self, lines: queue.Queue[str], wanted: str, timeout: float = 60) -> tuple[str, list[str]]:
        """The first line holding `wanted`, and the lines before it."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line with {wanted!r} within {timeout} s; saw {seen}") from None
            if wanted in line:
                return line, seen
            seen.append(line)

    def stop(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=30), 0)

    def test_every_second_for_6_s_and_the_last_kept(self) -> None:
        server = StandIn()
        probe = Probe("exact", env={"LEAKPROBE_SAMPLE": "1"})
        probe.expect("READY")
        proc, _ = self.watch(str(probe.proc.pid), "--every", "1", "--keep", "2", "--pyroscope", server.url)
        first = server.wait_for(1, 60)
        self.assertTrue(first, "a profile arrives")
        arrived = server.wait_for(5, 6)
        self.assertGreaterEqual(len(arrived), 4, "at least 4 profiles within 6 s at --every 1")
        self.assertLessEqual(arrived[3].time - arrived[0].time, 6.0)
        self.stop(proc)
        numbers = [dump_of(r) for r in server.received]
        self.assertEqual(len(set(numbers)), len(numbers), "each profile is another dump")
        self.assertEqual({pid for pid, _ in numbers}, {probe.proc.pid})
        self.assertEqual(top(saved(arrived[-1]), "inuse_space")["site_malloc"], (100_000, 100_000))
        left = sorted(int(p.name.split(".")[2]) for p in probe.dumps())
        self.assertEqual(left, sorted(n for _, n in numbers)[-2:], "pushed dumps deleted but the last --keep 2")
        self.assertEqual(probe.finish(), 0)

    def outage(self, keep: int) -> None:
        """The server down for 3 s: one line when it starts, one when it is
        over; every dump made meanwhile arrives, but those beyond --keep."""
        server = StandIn()
        probe = Probe("exact", env={"LEAKPROBE_SAMPLE": "4096"})
        probe.expect("READY")
        proc, lines = self.watch(str(probe.proc.pid), "--every", "1", "--keep", str(keep), "--pyroscope", server.url)
        server.wait_for(2, 60)
        server.stop()
        self.line(lines, "Connection refused")
        time.sleep(3)  # the outage itself, not a synchronisation
        server.start()
        back, between = self.line(lines, "takes profiles again")
        self.assertEqual([line for line in between if "dropping" not in line], [], "one line per outage")
        dropped = int(re.search(r"(\d+) dropped beyond --keep", back).group(1))
        pushed = int(re.search(r"(\d+) queued dumps pushed", back).group(1))
        self.assertGreaterEqual(pushed + dropped, 2, back)
        self.stop(proc)
        numbers = sorted(n for _, n in map(dump_of, server.received))
        missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        self.assertEqual(len(missing), dropped, (numbers, back))
        self.assertLessEqual(len(probe.dumps()), keep)
        self.assertEqual(probe.finish(), 0)
        return dropped

    def test_server_down_3_s_then_up_nothing_lost(self) -> None:
        self.assertEqual(self.outage(keep=10), 0)

    def test_server_down_3_s_with_keep_1_drops_only_beyond_it(self) -> None:
        self.assertGreaterEqual(self.outage(keep=1), 1)

    def test_profiles_refused_as_they_are_two_lines_in_all(self) -> None:
        server = StandIn()
        server.fault = ("status", 400, b"bad profile")
        probe = Probe("exact", env={"LEAKPROBE_SAMPLE": "4096"})
        probe.expect("READY")
        proc, lines = self.watch(str(probe.proc.pid), "--every", "1", "--pyroscope", server.url)
        self.assertTrue(server.wait_faulted(3, 60), "three profiles refused")
        server.fault = None
        server.wait_for(1, 60)
        again, between = self.line(lines, "accepts profiles again")
        between = [line for line in between if "watching process" not in line]
        self.assertEqual(len(between), 1, between)
        self.assertIn("refused, not retried", between[0])
        self.assertIn("answered 400", between[0])
        self.assertGreaterEqual(int(re.search(r"after refusing (\d+)", again).group(1)), 3)
        self.stop(proc)
        self.assertEqual(probe.finish(), 0)

    def test_sigterm_while_a_dump_is_awaited_ends_it_at_once(self) -> None:
        """A stopped process never answers; SIGTERM ends the wait (up to
        --dump-timeout otherwise) and the watch, exit 0."""
        server = StandIn()
        probe = Probe("exact", env={"LEAKPROBE_SAMPLE": "4096"})
        probe.expect("READY")
        os.kill(probe.proc.pid, signal.SIGSTOP)
        self.addCleanup(lambda: probe.proc.poll() is None and os.kill(probe.proc.pid, signal.SIGCONT))
        proc, lines = self.watch(str(probe.proc.pid), "--every", "1", "--dump-timeout", "600", "--pyroscope", server.url)
        self.line(lines, f"watching process {probe.proc.pid}")  # said as its request goes out
        asked = time.monotonic()
        self.stop(proc)
        self.assertLess(time.monotonic() - asked, 5.0)
        self.assertEqual(server.received, [])
        os.kill(probe.proc.pid, signal.SIGCONT)
        self.assertEqual(probe.finish(), 0)

    def test_a_process_without_the_library_is_one_line_and_exit_1(self) -> None:
        server = StandIn()
        bystander = subprocess.Popen(["sleep", "60"])
        self.addCleanup(bystander.wait)
        self.addCleanup(bystander.kill)
        done = script("watch", str(bystander.pid), "--every", "1", "--pyroscope", server.url)
        one_line(self, done, "does not have libleakprobe.so loaded", "not signalled", "watch ends")
        self.assertIsNone(bystander.poll(), "not signalled")
        self.assertEqual(server.received, [])

    def test_all_follows_a_restart_under_the_same_name(self) -> None:
        name = f"lpw{os.getpid() % 100000}"
        program = Path(tempfile.mkdtemp(prefix="leakprobe-watch-")) / name
        shutil.copy(HARNESS / "exact", program)
        server = StandIn()
        proc, lines = self.watch("--all", name, "--every", "1", "--parca", server.url)
        self.line(lines, f"no process named {name}")
        pids = []
        for _ in range(2):
            probe = Probe([str(program)], env={"LEAKPROBE_SAMPLE": "4096"})
            probe.expect("READY")
            pids.append(probe.proc.pid)
            self.line(lines, f"watching process {probe.proc.pid}")
            deadline = time.monotonic() + 60
            while probe.proc.pid not in {pid for pid, _ in map(dump_of, server.received)}:
                self.assertLess(time.monotonic(), deadline, "a profile of the new process")
                server.wait_for(len(server.received) + 1, 5)
            self.assertEqual(probe.finish(), 0)
        self.stop(proc)
        self.assertEqual({r.labels["pid"] for r in server.received}, {str(p) for p in pids})
        self.assertEqual({r.labels["service_name"] for r in server.received}, {name})


class Unit(unittest.TestCase):
    """contrib/leakprobe-watch@.service: systemd takes it, and its command,
    expanded as systemd expands it, watches a process by name."""

    UNIT = ROOT / "contrib/leakprobe-watch@.service"

    def test_systemd_analyze_verify(self) -> None:
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed (scripts/install-deps installs systemd)")
        done = subprocess.run(["systemd-analyze", "verify", str(self.UNIT)], capture_output=True, text=True, check=False)
        self.assertEqual((done.returncode, done.stderr), (0, ""))

    def test_its_command_watches_and_pushes(self) -> None:
        text = self.UNIT.read_text()
        env: dict[str, str] = {}
        for line in re.findall(r"^Environment=(.*)$", text, re.M):
            env.update(pair.split("=", 1) for pair in line.split())
        server = StandIn()
        env.update(LEAKPROBE_WATCH_EVERY="1", LEAKPROBE_WATCH_URL=server.url, LEAKPROBE_WATCH_OPTIONS="--label env=unit")
        name = f"lpu{os.getpid() % 100000}"
        command = re.search(r"^ExecStart=(.*)$", text, re.M).group(1).replace("%i", name)
        argv = []
        for word in command.split():
            whole = re.fullmatch(r"\$\{(\w+)\}", word)
            split = re.fullmatch(r"\$(\w+)", word)
            argv += [env[whole.group(1)]] if whole else env[split.group(1)].split() if split else [word]
        self.assertEqual(argv[:2], ["/usr/bin/python3", "/opt/leakprobe/scripts/leakprobe"])
        argv[:2] = [sys.executable, str(SCRIPT)]
        program = Path(tempfile.mkdtemp(prefix="leakprobe-unit-")) / name
        shutil.copy(HARNESS / "exact", program)
        probe = Probe([str(program)], env={"LEAKPROBE_SAMPLE": "4096"})
        probe.expect("READY")
        watch = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            arrived = server.wait_for(1, 60)
        finally:
            watch.send_signal(signal.SIGTERM)
            status = watch.wait(timeout=30)
        self.assertEqual(status, 0)
        self.assertTrue(arrived, "a profile arrives")
        self.assertEqual((arrived[0].labels["service_name"], arrived[0].labels["env"]), (name, "unit"))
        self.assertEqual(arrived[0].labels["pid"], str(probe.proc.pid))
        self.assertEqual(probe.finish(), 0)


if __name__ == "__main__":
    unittest.main()
