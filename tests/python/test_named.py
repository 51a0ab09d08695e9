"""BIND's named (linked against jemalloc, allocating through mallocx) under
the library, on loopback: foreground, daemonized, with -u bind, and chrooted
with -t. It answers every query under load while dumps are requested, exits
cleanly on SIGTERM, and every dump is readable by jeprof and shows named's
memory contexts and the JSON statistics rendering."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

from harness import LIBRARY, run_json

ZONES = 200
# Sampled every 4 KiB: named's heap is ~25 MiB and each statistics page is
# rendered from many small json-c objects, so the default period would leave
# too few samples to check attribution on.
SAMPLE = "4096"


def free_port() -> int:
    """A port free for both TCP and UDP on loopback now (named listens on
    both); whoever answers on it later is checked by its zones' names."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def dns_query(name: str, sock: socket.socket, port: int) -> int:
    """One A query over UDP; returns the number of answers (raises on error:
    a server that does not hold the zone refuses)."""
    qid = random.randrange(65536)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    sock.sendto(struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + question, ("127.0.0.1", port))
    reply, _ = sock.recvfrom(4096)
    rid, flags, _, answers, _, _ = struct.unpack(">HHHHHH", reply[:12])
    if rid != qid or flags & 0xF:
        raise AssertionError(f"{name}: rcode {flags & 0xF}")
    return answers


class Named:
    """A named with its own configuration in a fresh directory."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.base = Path(tempfile.mkdtemp(prefix=f"leakprobe-named-{mode}-"))
        # Its own ports, and zones no other server holds: the one answering
        # is this one.
        self.port, self.stats_port = free_port(), free_port()
        while self.stats_port == self.port:
            self.stats_port = free_port()
        self.domain = f"{mode}-{os.getpid()}-{random.randrange(1 << 32):08x}.test"
        self.dumps = self.base / "dumps"
        self.dumps.mkdir()
        os.chmod(self.dumps, 0o1777)  # named may drop to the bind user; sticky, as /tmp (see Security)
        self.root = self.base / "root" if mode == "chroot" else self.base
        inside = Path("/") if mode == "chroot" else self.root
        self.root.mkdir(exist_ok=True)
        zones = "".join(f'zone "{self.zone(i)}" {{ type primary; file "{inside}/zone.db"; }};\n' for i in range(ZONES))
        (self.root / "named.conf").write_text(
            f"""options {{
    directory "{inside}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    pid-file "{inside}/run/named.pid";
    recursion no;
}};
statistics-channels {{ inet 127.0.0.1 port {self.stats_port} allow {{ 127.0.0.1; }}; }};
{zones}"""
        )
        (self.root / "zone.db").write_text(
            "$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 300\n  IN NS ns\nns IN A 127.0.0.1\nwww IN A 127.0.0.2\n"
        )
        # named drops CAP_DAC_OVERRIDE even as root, and may run as bind.
        run_dir = self.root / "run"
        run_dir.mkdir()
        os.chmod(run_dir, 0o777)
        for p in (self.base, self.root):
            os.chmod(p, 0o777)  # named refuses a working directory it cannot write
        if mode == "chroot":
            (self.root / "dev").mkdir()
            subprocess.run(["mknod", "-m", "666", str(self.root / "dev/null"), "c", "1", "3"], check=True)
        args = {
            "foreground": ["-g"],
            "daemon": [],
            "user": ["-g", "-u", "bind"],
            "chroot": ["-g", "-t", str(self.root)],
        }[mode]
        env = dict(os.environ, LD_PRELOAD=str(LIBRARY), LEAKPROBE_DIR=str(self.dumps), LEAKPROBE_SAMPLE=SAMPLE)
        self.log = open(self.base / "named.log", "w")  # noqa: SIM115 - lives as long as named
        conf = str(inside / "named.conf")
        self.proc = subprocess.Popen(["named", *args, "-c", conf], env=env, stdout=self.log, stderr=self.log)
        self.pid = self.wait_until_serving()

    def zone(self, i: int) -> str:
        return f"z{i}.{self.domain}"

    def query(self, i: int, sock: socket.socket) -> int:
        return dns_query(f"www.{self.zone(i)}", sock, self.port)

    def stats(self, path: str = "/json") -> dict:
        """The statistics channel's JSON; fails unless it lists this named's zones."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}{path}", timeout=10) as r:
            text = r.read().decode()
        if path == "/json" and self.domain not in text:
            raise AssertionError(f"the statistics on port {self.stats_port} are another server's")
        return json.loads(text)

    def wait_until_serving(self) -> int:
        deadline = time.monotonic() + 60
        pid_file = self.root / "run/named.pid"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            while time.monotonic() < deadline:
                try:
                    if self.query(0, sock) == 1 and pid_file.exists():
                        return int(pid_file.read_text())
                except (OSError, AssertionError, ValueError):
                    pass
                if self.mode != "daemon" and self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        if self.mode != "daemon":
            self.proc.kill()  # a wedged named would outlive the test
        raise AssertionError(f"named ({self.mode}) did not start:\n{(self.base / 'named.log').read_text()[-3000:]}")

    def dump(self) -> Path:
        before = set(self.dumps.glob(f"leakprobe.{self.pid}.*.heap"))
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = set(self.dumps.glob(f"leakprobe.{self.pid}.*.heap")) - before
            if new:
                return new.pop()
            time.sleep(0.05)
        raise AssertionError(f"no dump from named ({self.mode}); log:\n{self.messages()}")

    def messages(self) -> str:
        logs = [self.base / "named.log", *self.dumps.glob("*.log")]
        return "\n".join(p.read_text() for p in logs if p.exists())

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
            if self.mode != "daemon":
                self.proc.poll()
            time.sleep(0.1)
        self.log.close()
        if self.mode == "daemon":
            self.proc.wait(timeout=10)
            assert not Path(f"/proc/{self.pid}").exists(), "named did not exit"
        else:
            code = self.proc.wait(timeout=10)
            assert code == 0, f"named exited with {code}:\n{self.messages()[-3000:]}"


@unittest.skipUnless(shutil.which("named") and os.geteuid() == 0, "needs named (bind9) and root; CI has both")
class NamedUnderLoad(unittest.TestCase):
    def run_mode(self, mode: str) -> None:
        named = Named(mode)
        try:
            dumps = []
            answered = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                for i in range(300):
                    answered += named.query(i % ZONES, sock)
                    if i % 15 == 0:
                        self.assertIn("zones", json.dumps(named.stats()))
                    if i in (100, 250):
                        dumps.append(named.dump())
            self.assertEqual(answered, 300, "a query went unanswered")
            dumps.append(named.dump())
        finally:
            named.stop()
        for dump in dumps:
            text = dump.read_text()
            self.assertIn("libleakprobe.so", text.split("MAPPED_LIBRARIES:")[1])
            jeprof = subprocess.run(["jeprof", "--text", "/usr/sbin/named", str(dump)], capture_output=True, text=True)
            self.assertEqual(jeprof.returncode, 0, jeprof.stderr[-2000:])
            self.assertIn("Total:", jeprof.stdout)
        last = str(dumps[-1])
        total = run_json("report", last)["total"]
        through_mem = run_json("report", last, "--focus", r"^isc__mem_")["total"]
        self.assertGreater(through_mem / total, 0.5, "most of named's heap goes through isc__mem_*")
        json_c = run_json("report", last, "--alloc-space", "--focus", r"^json_object")["total"]
        self.assertGreater(json_c, 0, "no stacks through json-c")
        allocated = int(re.search(r"# leakprobe jemalloc_allocated_bytes: (\d+)", dumps[-1].read_text()).group(1))
        self.assertTrue(1 / 3 < total / allocated < 3, f"estimate {total} vs jemalloc's stats.allocated {allocated}")

    def test_foreground(self) -> None:
        self.run_mode("foreground")

    def test_daemonized(self) -> None:
        self.run_mode("daemon")

    def test_as_bind_user(self) -> None:
        self.run_mode("user")

    def test_chrooted(self) -> None:
        self.run_mode("chroot")


if __name__ == "__main__":
    unittest.main()
