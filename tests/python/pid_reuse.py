"""Run as pid 1 of a new pid namespace (`unshare --pid --fork --mount-proc`) by
test_dump_trust: `leakprobe dump` waits for a process that dies, its pid is
given to a process without the library, and a planted file asks for a re-send.
Prints what happened as JSON: nothing else forks in this namespace, so the pid
can be handed on exactly through ns_last_pid.

Usage: pid_reuse.py LIBRARY HARNESS SCRIPT DIR"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def pending(pid: int) -> int:
    """The signals pending for the whole process (ShdPnd), as a mask."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return int(line.split()[1], 16)
    return 0


def main() -> None:
    library, harness, script, directory = sys.argv[1:5]
    env = dict(os.environ, LD_PRELOAD=library, LEAKPROBE_DIR=directory, LEAKPROBE_SAMPLE="1")
    target = subprocess.Popen([f"{harness}/dump_target"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert target.stdout is not None
    if not target.stdout.readline().startswith(b"READY"):
        raise SystemExit("dump_target did not start")
    pid = target.pid
    os.kill(pid, signal.SIGSTOP)  # it cannot answer
    dump = subprocess.Popen(
        [sys.executable, script, "dump", str(pid), "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    usr2 = 1 << (signal.SIGUSR2 - 1)
    deadline = time.monotonic() + 30
    while not pending(pid) & usr2:  # the request was sent
        if dump.poll() is not None or time.monotonic() > deadline:
            out, err = dump.communicate()
            raise SystemExit(f"the script did not send its request: {dump.returncode} {out!r} {err!r}")
        time.sleep(0.01)
    # While the script is stopped: the target dies, its pid goes to a process
    # without the library, and a file asks for a re-send.
    os.kill(dump.pid, signal.SIGSTOP)
    target.kill()
    target.wait()
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    other = subprocess.Popen(["sleep", "60"])
    Path(directory, f"leakprobe.{pid}.1.heap").write_text(
        f"heap profile: 0: 0 [0: 0] @ heap_v2/1\n# leakprobe pid: {pid}\n# leakprobe requests_answered: 00000000\n"
    )
    os.kill(dump.pid, signal.SIGCONT)
    out, err = dump.communicate(timeout=60)
    untouched = other.poll() is None and not pending(other.pid) & usr2
    other.kill()
    print(
        json.dumps(
            {
                "pid": pid,
                "reused": other.pid == pid,
                "returncode": dump.returncode,
                "stdout": out,
                "stderr": err,
                "untouched": untouched,
                "other_status": other.wait(),
            }
        )
    )


if __name__ == "__main__":
    main()
