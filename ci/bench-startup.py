#!/usr/bin/env python3
"""How long the command line takes to start, measured as a command (median of N).

    python3 ci/bench-startup.py [--runs 10]

`kdump-harness --help` and `kdump-harness vmcore inspect FILE` (a real guest's dump from
tests/data/vmcore) must not pay for what they do not use: the guest machinery (paramiko,
pexpect, QEMU's QMP client) and the image builder load only when a command that boots a
guest runs.  Target: under 100 ms each.  Also prints the Python interpreter's own start-up
(`python -c pass` through the same virtualenv) for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
DUMP = ROOT / "tests" / "data" / "vmcore" / "trixie-6.12-2dimm-1cpu.core"
TARGET = 0.100


def timed(argv: list[str], runs: int) -> list[float]:
    # As on a user's machine, Python keeps compiled bytecode (some sandboxes and CI images
    # set PYTHONDONTWRITEBYTECODE, which makes every start compile the package again).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(argv, capture_output=True, check=True, env=env)  # warm the .pyc files
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env=env)
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    cases = {
        "python -c pass (for scale)": [str(VENV / "python"), "-c", "pass"],
        "kdump-harness --help": [str(VENV / "kdump-harness"), "--help"],
        "kdump-harness vmcore inspect": [str(VENV / "kdump-harness"), "vmcore", "inspect",
                                         str(DUMP)],
    }
    missed = False
    for name, argv in cases.items():
        values = timed(argv, args.runs)
        median = statistics.median(values)
        target = "" if name.startswith("python") else (
            f"  target < {TARGET * 1000:.0f} ms: {'ok' if median < TARGET else 'MISSED'}")
        missed |= bool(target) and median >= TARGET
        print(f"{name:32} median {median * 1000:6.1f} ms  min {min(values) * 1000:6.1f} ms  "
              f"max {max(values) * 1000:6.1f} ms  (n={len(values)}){target}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
