#!/usr/bin/env python3
"""Parallel streams of ``kdump-harness run`` with CPU hogs beside them: do verdicts hold?

    python3 ci/parallel-runs.py [--streams 2] [--runs 10] [--hogs 2] [--out DIR] [-- RUN OPTIONS]

Each stream runs the main job ``--runs`` times back to back (as a CI runner or a nightly
shard does), all streams at once, while ``--hogs`` busy loops load the host.  Prints every
run's result and time, the count of each result, verified cycles per hour, and whether
any QEMU outlived its run.  Exit status 0 only when every run ended as expected (the run
options' ``--expect``, default accurate) and no QEMU was left.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KH = ROOT / ".venv" / "bin" / "kdump-harness"


def stream(index: int, runs: int, out: Path, extra: list[str],
           results: list[dict[str, object]], lock: threading.Lock) -> None:
    for run in range(runs):
        run_dir = out / f"s{index}-r{run:03d}"
        started = time.monotonic()
        proc = subprocess.run([str(KH), "run", "--out", str(run_dir), "--json", *extra],
                              capture_output=True, text=True, check=False)
        took = time.monotonic() - started
        verdict_file = run_dir / "verdict.json"
        verdict = json.loads(verdict_file.read_text()) if verdict_file.exists() else {}
        row = {"stream": index, "run": run, "status": proc.returncode, "seconds": took,
               "result": verdict.get("result", f"no verdict.json (exit {proc.returncode})"),
               "passed": verdict.get("passed", False), "reason": verdict.get("reason", ""),
               "run_dir": str(run_dir)}
        with lock:
            results.append(row)
            print(f"stream {index} run {run + 1}/{runs}: {row['result']} in {took:.1f} s"
                  + ("" if row["passed"] else f"  <- {str(row['reason']).splitlines()[:1]}"),
                  flush=True)


def qemu_left(out: Path) -> list[str]:
    """QEMU processes whose command line points into this benchmark's run directories."""
    found = subprocess.run(["pgrep", "-a", "-f", "qemu-system"], capture_output=True,
                           text=True, check=False).stdout.splitlines()
    return [line for line in found if str(out) in line]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--runs", type=int, default=10, help="runs per stream")
    p.add_argument("--hogs", type=int, default=2, help="CPU busy loops beside the streams")
    p.add_argument("--out", type=Path, default=Path("runs/parallel"))
    p.add_argument("extra", nargs="*", help="options for kdump-harness run (after --)")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(args.hogs)]
    results: list[dict[str, object]] = []
    lock = threading.Lock()
    started = time.monotonic()
    try:
        threads = [threading.Thread(target=stream, args=(i, args.runs, out, args.extra,
                                                         results, lock))
                   for i in range(args.streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    wall = time.monotonic() - started
    counts = collections.Counter(str(r["result"]) for r in results)
    passed = sum(1 for r in results if r["passed"])
    times = sorted(float(str(r["seconds"])) for r in results)
    left = qemu_left(out)
    print(f"\n{len(results)} runs in {args.streams} streams with {args.hogs} CPU hogs, "
          f"{wall:.0f} s: " + ", ".join(f"{n} {k}" for k, n in counts.most_common()))
    print(f"as expected: {passed} of {len(results)}; run time median "
          f"{statistics.median(times):.1f} s, max {times[-1]:.1f} s; "
          f"{passed * 3600 / wall:.0f} verified cycles per hour")
    print(f"QEMU left behind: {len(left)}" + "".join(f"\n  {line}" for line in left))
    return 0 if passed == len(results) and not left else 1


if __name__ == "__main__":
    sys.exit(main())
