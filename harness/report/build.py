"""Assemble a report from its inputs, then write the forms asked for (HTML, Markdown, KCIDB).

``Report`` holds every figure the templates show; the HTML and the Markdown forms render
the same ``Report``, so they cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .aggregate import (
    PHASES,
    CellStats,
    Night,
    Overview,
    Spread,
    all_cells,
    kernel_groups,
    nights,
    overview,
    phases,
)
from .compare import Comparison, compare
from .known import KnownDiff, Status, diff, load_known
from .load import LineSet, Loaded, load
from .plots import Plot, all_plots

DEFAULT_TITLE = "kdump-hotplug report"


@dataclass(frozen=True)
class Failure:
    """A line that did not end as expected, with what reproduces it."""

    item: Loaded
    status: Status | None          # NEW or KNOWN against the known failures (None: no file)

    @property
    def harness(self) -> bool:
        return self.item.is_harness_error


@dataclass(frozen=True)
class Report:
    title: str
    overview: Overview
    cells: tuple[CellStats, ...]
    nights: tuple[Night, ...]
    failures: tuple[Failure, ...]
    known: KnownDiff | None = None
    comparison: Comparison | None = None
    baseline: Overview | None = None
    plots: tuple[Plot, ...] = ()
    kernel_phases: Mapping[str, Mapping[str, Spread]] = field(default_factory=dict)
    generated: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%SZ",
                                                                   time.gmtime()))

    @property
    def phase_names(self) -> list[str]:
        """Every phase any kernel measured, in run order (the tables' columns)."""
        seen = {p for ph in self.kernel_phases.values() for p in ph}
        return [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))


@dataclass(frozen=True)
class Outputs:
    """Where each form goes (None: not asked for)."""

    html: Path | None = None
    markdown: Path | None = None
    kcidb: Path | None = None


def assemble(lines: LineSet, *, title: str = DEFAULT_TITLE, baseline: LineSet | None = None,
             known_file: Path | None = None, with_plots: bool = True) -> Report:
    """Every figure of the report; plots only when an HTML form will show them."""
    known = (diff(lines.lines, load_known(known_file), str(known_file))
             if known_file is not None else None)
    failures = tuple(Failure(i, known.status_of(i) if known and not i.is_harness_error else None)
                     for i in lines.lines if not i.line.passed)
    # The trend runs over the baseline's nights too: a night compared with the last
    # fortnight shows where it stands in it.
    night_list = nights(lines if baseline is None else LineSet(
        lines=lines.lines + baseline.lines, files=lines.files + baseline.files))
    return Report(
        title=title, overview=overview(lines), cells=tuple(all_cells(lines)),
        nights=tuple(night_list), failures=failures, known=known,
        comparison=compare(baseline, lines) if baseline is not None else None,
        baseline=overview(baseline) if baseline is not None else None,
        plots=tuple(all_plots(lines, night_list)) if with_plots else (),
        kernel_phases={k: phases(v) for k, v in kernel_groups(lines).items()})


def build(inputs: Sequence[Path], outputs: Outputs, *, baseline: Sequence[Path] = (),
          known_file: Path | None = None, title: str = DEFAULT_TITLE) -> Report:
    """Read, compute and write every form asked for; returns the report."""
    from .html import write_html
    from .kcidb import write_kcidb
    from .markdown import write_markdown

    lines = load(inputs, what="report")
    base = load(baseline, what="--baseline") if baseline else None
    report = assemble(lines, title=title, baseline=base, known_file=known_file,
                      with_plots=outputs.html is not None)
    if outputs.html is not None:
        write_html(report, outputs.html)
    if outputs.markdown is not None:
        write_markdown(report, outputs.markdown)
    if outputs.kcidb is not None:
        write_kcidb(lines, outputs.kcidb)
    return report
