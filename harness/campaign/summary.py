"""The table a campaign ends with: results by class with Wilson intervals, how stale the
stale ones were, trylock failures, phase-time percentiles and the seeds that replay each
failure.  Harness errors are counted apart: they say nothing about the kernel, so they
are never in a kernel rate's denominator."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..results import Family
from .line import ResultLine
from .stats import percentile, wilson

#: Phases worth a percentile, in pipeline order (the ones present are shown).
PHASES = ("restore", "boot_to_kdump_ready", "swarm_settle", "audit", "reset", "panic",
          "panic_to_capture", "dump_write", "verify", "total")
MAX_FAILURES_SHOWN = 10


@dataclass(frozen=True)
class Summary:
    lines: tuple[ResultLine, ...]
    wall: float
    stopped_early: bool = False

    @property
    def judged(self) -> list[ResultLine]:
        """The iterations that reached a result about the kernel."""
        return [x for x in self.lines if x.family is not Family.HARNESS]

    @property
    def per_hour(self) -> float:
        return len(self.lines) * 3600.0 / self.wall if self.wall > 0 else 0.0


def results_table(s: Summary) -> Table:
    judged = s.judged
    t = Table(title=f"results ({len(judged)} judged, "
                    f"{len(s.lines) - len(judged)} harness errors)", title_justify="left")
    for name in ("result", "expected?", "count", "rate [95% Wilson]"):
        t.add_column(name, justify="left" if name == "result" else "right")
    expected = {x.expected for x in judged}
    for result, n in Counter(x.result for x in judged).most_common():
        t.add_row(result.value, "yes" if result in expected else "no", str(n),
                  wilson(n, len(judged)).text())
    errors = len(s.lines) - len(judged)
    if errors:
        t.add_row("harness_error", "-", str(errors), "(not a kernel rate)")
    return t


def staleness_table(s: Summary) -> Table | None:
    wrong = [x for x in s.judged if x.result.value == "stale"]
    if not wrong:
        return None
    t = Table(title="stale: how far off", title_justify="left")
    for name in ("DIMMs", "MiB", "CPUs", "count"):
        t.add_column(name, justify="right")
    shapes = Counter((x.staleness.dimms, x.staleness.mib, x.staleness.cpus) for x in wrong)
    for (dimms, mib, cpus), n in sorted(shapes.items()):
        t.add_row(str(dimms), f"{mib:g}", str(cpus), str(n))
    return t


def trylock_text(s: Summary) -> Text | None:
    known = [x.trylock_failures for x in s.judged if x.trylock_failures is not None]
    if not known:
        return None
    hit = sum(1 for n in known if n > 0)
    mean = sum(known) / len(known)
    return Text(f"trylock failures: in {wilson(hit, len(known)).text()} of iterations; "
                f"mean {mean:.1f}, max {max(known)} per iteration")


def phases_table(s: Summary) -> Table | None:
    t = Table(title="phase times (s)", title_justify="left")
    for name in ("phase", "n", "p50", "p90", "p99", "max"):
        t.add_column(name, justify="left" if name == "phase" else "right")
    for phase in PHASES:
        values = [v for x in s.lines if (v := x.times.get(phase)) is not None]
        if values:
            t.add_row(phase, str(len(values)), *(f"{percentile(values, q):.2f}"
                                                 for q in (50, 90, 99)), f"{max(values):.2f}")
    return t if t.row_count else None


def failures_table(s: Summary, results_dir: str) -> Table | None:
    bad = [x for x in s.lines if not x.passed]
    if not bad:
        return None
    t = Table(title=f"not as expected ({len(bad)}; all in {results_dir})", title_justify="left")
    for name in ("#", "seed", "result", "reason", "evidence"):
        t.add_column(name)
    for x in bad[:MAX_FAILURES_SHOWN]:
        t.add_row(str(x.iteration), str(x.seed), x.result.value, x.reason[:60],
                  x.evidence or "-")
    return t


def render(s: Summary, console: Console, *, results_dir: str) -> None:
    parts: list[Table | Text] = [results_table(s)]
    for part in (staleness_table(s), trylock_text(s), phases_table(s),
                 failures_table(s, results_dir)):
        if part is not None:
            parts.append(part)
    bad = [x for x in s.lines if not x.passed]
    if bad:
        parts.append(Text(f"replay the first: {bad[0].replay}"))
    stop = " (stopped at the first unexpected result)" if s.stopped_early else ""
    parts.append(Text(f"{len(s.lines)} iterations in {s.wall:.0f} s: "
                      f"{s.per_hour:.0f} per hour{stop}"))
    console.print(Group(*parts))
