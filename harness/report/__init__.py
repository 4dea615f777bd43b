"""``kdump-harness report``: campaigns' result lines made into a report.

In pipeline order::

    load        read results.jsonl files from many campaigns, drop duplicates, group by
                (kernel release, cell)
    aggregate   per (kernel, cell): rates with Wilson intervals (harness errors apart),
                staleness, trylock failures, phase-time percentiles; per night; the header
    known       the lines as a diff against ci/known-failures.toml: new, known, fixed
    compare     --baseline: each cell's figures beside the baseline's, with Fisher's exact
                test (rates) and Mann-Whitney U (phase times)
    plots       matplotlib figures as inline SVG (one per plot kind)
    build       the Report every form renders; build() writes the forms asked for
    html        the static page (jinja2, templates/report.html.j2)
    markdown    the same summary as tables (templates/summary.md.j2), for CI job pages
    kcidb       the results in KernelCI's KCIDB I/O format
    synthetic   realistic lines for the tests and ci/bench-report.py
"""

from __future__ import annotations

from .build import Outputs, Report, assemble, build
from .load import LineSet, load

__all__ = ["LineSet", "Outputs", "Report", "assemble", "build", "load"]
