#!/usr/bin/env python3
"""The nightly matrix, as a person runs it locally and as the nightly workflow runs it.

    python3 ci/nightly.py [--shard i/N] [--jobs K] [--results DIR] [--quick]
                          [--select S] [--iterations N] [--snapshot] [--dry-run]

Runs ``kdump-harness matrix run`` (the matrix is ci/matrix.toml: ``kdump-harness matrix
list`` shows its cells, exclusions and expected results), then ``kdump-harness report``
on the results when this checkout has that command: DIR/report.html and DIR/summary.md,
read against ci/known-failures.toml.  Exit status is the matrix run's (0 every iteration
as expected, 1 a kernel finding, 125 the harness could not test, 2 bad usage); a report
that fails is said, and counts only when the matrix itself passed.

Standard library only, so any python3 runs it: the harness runs from .venv
(``bash ci/setup-host.sh`` makes it), else from ``kdump-harness`` on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KNOWN_FAILURES = ROOT / "ci" / "known-failures.toml"


def harness_command() -> list[str]:
    """How to run kdump-harness: the checkout's .venv first, then PATH."""
    venv = ROOT / ".venv" / "bin" / "kdump-harness"
    if venv.exists():
        return [str(venv)]
    found = shutil.which("kdump-harness")
    if found is None:
        sys.exit("nightly: no kdump-harness (run `bash ci/setup-host.sh` first)")
    return [found]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shard", default="1/1", metavar="i/N", help="this machine's part (1/1)")
    p.add_argument("--jobs", type=int, default=1, metavar="K", help="parallel guests (1)")
    p.add_argument("--results", type=Path, default=Path("nightly-results"), metavar="DIR",
                   help="results directory (default nightly-results)")
    p.add_argument("--quick", action="store_true",
                   help="the quick selection only (trixie's cheap core cells)")
    p.add_argument("--select", action="append", default=[], metavar="S",
                   help="a selection of ci/matrix.toml or DIMENSION=V1,V2 (repeatable)")
    p.add_argument("--iterations", type=int, metavar="N", help="iterations per cell")
    p.add_argument("--campaign", metavar="ID", help="campaign id (default: the night's)")
    p.add_argument("--snapshot", action="store_true", help="guests restored from snapshots")
    p.add_argument("--dry-run", action="store_true", help="say what would run; start nothing")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="skip kdump-harness report")
    return p.parse_args(argv)


def matrix_argv(args: argparse.Namespace) -> list[str]:
    """The ``kdump-harness matrix run`` words the options stand for."""
    words = ["matrix", "run", "--definition", str(ROOT / "ci" / "matrix.toml"),
             "--shard", args.shard, "--jobs", str(args.jobs), "--results", str(args.results)]
    for selector in (["quick"] if args.quick else []) + args.select:
        words += ["--select", selector]
    if args.iterations is not None:
        words += ["--iterations", str(args.iterations)]
    if args.campaign:
        words += ["--campaign", args.campaign]
    words += ["--snapshot"] * args.snapshot + ["--dry-run"] * args.dry_run
    return words


def report_argv(args: argparse.Namespace, known: Path = KNOWN_FAILURES) -> list[str]:
    """The ``kdump-harness report`` words for this run's results."""
    words = ["report", str(args.results), "-o", str(args.results / "report.html"),
             "--markdown", str(args.results / "summary.md")]
    if known.is_file():
        words += ["--known-failures", str(known)]
    return words


def has_command(harness: list[str], name: str) -> bool:
    """Whether this checkout's harness has ``name`` (the report came later than run)."""
    done = subprocess.run([*harness, name, "--help"], capture_output=True, check=False)
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness = harness_command()
    status = subprocess.run([*harness, *matrix_argv(args)], check=False).returncode
    if args.dry_run or not args.report or status == 2:
        return status
    if not (args.results / "results.jsonl").exists():
        print(f"nightly: no results in {args.results}: no report", file=sys.stderr)
        return status
    if not has_command(harness, "report"):
        print("nightly: this harness has no `report` command: results.jsonl only",
              file=sys.stderr)
        return status
    reported = subprocess.run([*harness, *report_argv(args)], check=False).returncode
    if reported != 0:
        print(f"nightly: kdump-harness report failed ({reported})", file=sys.stderr)
    return status or reported


if __name__ == "__main__":
    sys.exit(main())
