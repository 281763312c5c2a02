#!/usr/bin/env python3
"""Start-up time and idle memory of `conclave serve` on the embedded default (SQLite).

Starts the release binary N times on a fresh data folder (the first start creates the database
and applies migrations; later ones reuse it), measures the time from spawn until `/readyz`
answers 200, then lets the server idle and reads its resident memory (VmRSS). Prints the
figures and rewrites the "Start-up and idle memory" section of bench/RESULTS.md.

Usage: bench/startup.py [--binary target/release/conclave] [--runs 10]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request

from common import RESULTS, ROOT, free_port, rss_kib, write_section

SECTION = "## Start-up and idle memory"


def one_run(binary: str, data_dir: str, idle_s: float) -> tuple[float, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCLAVE_")}
    env.update({"CONCLAVE_DATA_DIR": data_dir, "CONCLAVE_LISTEN": f"127.0.0.1:{port}", "CONCLAVE_LOG": "warn"})
    start = time.perf_counter()
    proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"conclave exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.002)
        ready = time.perf_counter() - start
        time.sleep(idle_s)
        rss = rss_kib(proc.pid)
        return ready, rss
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "conclave"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--idle", type=float, default=2.0, help="seconds to idle before reading RSS")
    args = ap.parse_args()

    data_dir = tempfile.mkdtemp(prefix="conclave-bench-")
    try:
        first_ready, first_rss = one_run(args.binary, data_dir, args.idle)
        runs = [one_run(args.binary, data_dir, args.idle) for _ in range(args.runs)]
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    ready = [r for r, _ in runs]
    rss = [m for _, m in runs]
    figures = {
        "first start (creates the database) to ready, ms": round(first_ready * 1000, 1),
        "start to ready, median ms": round(statistics.median(ready) * 1000, 1),
        "start to ready, max ms": round(max(ready) * 1000, 1),
        "idle RSS, median MiB": round(statistics.median(rss) / 1024, 1),
        "idle RSS, max MiB": round(max(rss + [first_rss]) / 1024, 1),
    }
    print(json.dumps(figures, indent=2))

    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    table = "\n".join(f"| {k} | {v} |" for k, v in figures.items())
    section = (
        f"{SECTION}\n\n"
        f"Targets: idle RSS under 30 MB, start-up to ready under 0.3 s (SQLite).\n"
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {machine}, release build, "
        f"{args.runs} starts after a first one, {args.idle:.0f} s idle before reading VmRSS.\n"
        f"Reproduce: `make build-release && bench/startup.py`.\n\n"
        f"| figure | value |\n|---|---|\n{table}\n"
    )
    write_section(SECTION, section)
    print(f"recorded in {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
