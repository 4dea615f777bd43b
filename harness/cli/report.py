"""``kdump-harness report``: campaigns' result lines as an HTML page, Markdown, KCIDB."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import UsageError

DESCRIPTION = """\
Read the result lines (results.jsonl) of one or more campaigns (repro runs, nightly matrix
shards, several nights) and write one static HTML page that works offline: per kernel and
cell the stale, no-dump and pass rates with Wilson 95% intervals (harness errors kept
apart), trylock failures, staleness, phase-time percentiles and plots, trends across
nights, and every failure with its evidence and replay command.

--baseline DIR... compares each cell with the baseline's (Fisher's exact test for rates,
Mann-Whitney U for phase times, p < 0.05 flagged).  --known-failures FILE reads the night
as a diff against known kernel behaviour (ci/known-failures.toml): new, known, fixed.
Exit status 0, or 2 on bad input (the file and line are named)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="an HTML/Markdown/KCIDB report of campaign results",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="DIR|FILE",
                   help="results directories (results.jsonl at any depth) or files")
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"), metavar="HTML",
                   help="the HTML page (default report.html)")
    p.add_argument("--baseline", nargs="+", type=Path, default=[], metavar="DIR",
                   help="results to compare against (e.g. last week's nights)")
    p.add_argument("--markdown", type=Path, metavar="FILE",
                   help="also write the summary as GitHub Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--kcidb", type=Path, metavar="FILE",
                   help="also write the results in KCIDB I/O JSON (KernelCI)")
    p.add_argument("--known-failures", type=Path, metavar="FILE",
                   help="known kernel failures (TOML, e.g. ci/known-failures.toml)")
    p.add_argument("--title", default=None, help="the report's title")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import Outputs, build
    from ..report.build import DEFAULT_TITLE

    if args.known_failures is not None and not args.known_failures.is_file():
        raise UsageError(f"--known-failures {args.known_failures}: no such file")
    t0 = time.monotonic()
    report = build(args.inputs, Outputs(html=args.output, markdown=args.markdown,
                                        kcidb=args.kcidb),
                   baseline=args.baseline, known_file=args.known_failures,
                   title=args.title or DEFAULT_TITLE)
    o = report.overview
    extra = "".join(f", {what} {path}" for what, path in
                    (("markdown", args.markdown), ("kcidb", args.kcidb)) if path)
    known = report.known
    print(f"report: {o.lines} lines, {len(report.cells)} kernel/cell pairs, {o.failures} "
          f"failures, {o.harness_errors} harness errors"
          + (f"; {len(known.new)} new, {len(known.known)} known, {len(known.fixed)} fixed"
             if known else "")
          + f" -> {args.output}{extra} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    return 0
