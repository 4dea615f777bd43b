#!/usr/bin/env python3
"""Time ``kdump-harness report`` on synthetic campaigns (no guest is booted).

    .venv/bin/python ci/bench-report.py [--lines 10000] [--nights 14] [--runs 3]

Writes ``--lines`` realistic result lines (3 kernels x 72 cells, stale, no-dump and harness
errors, evidence directories for the failures) as one campaign per night into a temporary
directory, then times each stage of the report over ``--runs`` runs and prints the median:
loading, the figures, the plots, and the HTML, Markdown and KCIDB forms.  A second pass
times the whole report with a baseline and the known failures, as a CI job runs it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.report import Outputs, assemble, build, load  # noqa: E402
from harness.report.html import write_html  # noqa: E402
from harness.report.kcidb import write_kcidb  # noqa: E402
from harness.report.markdown import write_markdown  # noqa: E402
from harness.report.synthetic import synthesise, write_campaigns  # noqa: E402

T = TypeVar("T")
KNOWN = ROOT / "ci" / "known-failures.toml"


def timed(what: str, runs: int, fn: Callable[[], T]) -> T:
    times, value = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    print(f"  {what:<34} {statistics.median(times):7.3f} s  "
          f"(min {min(times):.3f}, max {max(times):.3f})")
    return value  # type: ignore[return-value]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=10_000)
    p.add_argument("--nights", type=int, default=14)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_campaigns(root / "results", synthesise(args.lines, nights=args.nights))
        write_campaigns(root / "baseline", synthesise(args.lines // 2, nights=2, seed=9))
        print(f"bench-report: {args.lines} lines over {args.nights} nights written in "
              f"{time.perf_counter() - t0:.2f} s; median of {args.runs} runs")
        lines = timed("load (read + parse + dedupe)", args.runs,
                      lambda: load([root / "results"]))
        timed("figures (no plots)", args.runs, lambda: assemble(lines, with_plots=False))
        report = timed("figures + plots", args.runs, lambda: assemble(lines))
        timed("html", args.runs, lambda: write_html(report, root / "out" / "report.html"))
        timed("markdown", args.runs, lambda: write_markdown(report, root / "out" / "s.md"))
        timed("kcidb", args.runs, lambda: write_kcidb(lines, root / "out" / "kcidb.json"))
        outputs = Outputs(html=root / "out" / "report.html", markdown=root / "out" / "s.md",
                          kcidb=root / "out" / "kcidb.json")
        timed("whole report (html+md+kcidb)", args.runs,
              lambda: build([root / "results"], outputs))
        timed("whole, --baseline --known-failures", args.runs,
              lambda: build([root / "results"], outputs, baseline=[root / "baseline"],
                            known_file=KNOWN))
        sizes = ", ".join(f"{f.name} {f.stat().st_size / 1e6:.1f} MB"
                          for f in sorted((root / "out").iterdir()))
        print(f"  outputs: {sizes}; {len(report.cells)} kernel/cell pairs, "
              f"{len(report.failures)} failures, {len(report.plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
