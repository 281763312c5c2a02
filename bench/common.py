"""What the benchmark scripts share: starting and stopping the binaries, reading a process's
memory, the machine's load, and rewriting one section of bench/RESULTS.md."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
RESULTS = ROOT / "bench" / "RESULTS.md"
# urllib would otherwise honour *_proxy variables; everything here is on 127.0.0.1.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    """The resident set size (VmRSS) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without CONCLAVE_* settings and proxies, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCLAVE_") and "proxy" not in k.lower()}
    env.update(extra)
    return env


def wait_for_line(path: Path, proc: subprocess.Popen, needle: str, timeout: float = 30.0) -> dict:
    """The first JSON line of a log file that contains `needle`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{path.read_text()[-2000:]}")
        for line in path.read_text().splitlines():
            if needle in line:
                return json.loads(line)
        time.sleep(0.01)
    raise RuntimeError(f"{proc.args[0]} did not say {needle!r} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Terminates a process this script started, killing it if it does not end in 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def load() -> str:
    """The load average (1 / 5 / 15 min), as recorded beside the figures."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def write_section(title: str, section: str) -> None:
    """Replaces the section of bench/RESULTS.md headed `title` (from its heading to the next
    `## ` heading) with `section`, which starts with that heading; appends it if missing."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nEach section is rewritten by the script named in it.\n"
    if title in text:
        head, _, rest = text.partition(title)
        nxt = rest.find("\n## ")
        text = head + section + (rest[nxt:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
