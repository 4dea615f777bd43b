"""Baseline versus candidate, per cell, each figure with its change and its significance.

In the manner of the kernel test robot's comparisons: a figure moved only if the test
says so.  Rates (stale, no dump, pass, trylock failures) are 2x2 tables, compared by
Fisher's exact test (exact at any size, unlike chi-squared at a few dozen iterations);
phase times are compared whole by Mann-Whitney U (no normality assumed: boot times have
long tails) and shown by their medians.  ``p < SIGNIFICANCE`` is flagged.

Cells are matched by name, each side pooling its kernels: the candidate is usually a
newer kernel than the baseline, and the cell (the configuration) is what both ran.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from scipy.stats import fisher_exact, mannwhitneyu

from ..campaign.stats import Rate, wilson
from .aggregate import Rates, phases, rates
from .load import LineSet, Loaded

SIGNIFICANCE = 0.05


class Test(StrEnum):
    FISHER = "Fisher's exact"
    MANN_WHITNEY = "Mann-Whitney U"


@dataclass(frozen=True)
class Change:
    figure: str              # "stale rate", "panic_to_capture p50"
    base: str
    candidate: str
    delta: str               # "-38.9 pts", "+12%"
    p: float                 # NaN: not testable (a side without data)
    test: Test
    worse: bool | None       # the candidate is worse (None: no change or not testable)

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p) and self.p < SIGNIFICANCE

    @property
    def verdict(self) -> str:
        if math.isnan(self.p):
            return "not tested"
        return "significant" if self.significant else "not significant"

    def text(self) -> str:
        return (f"{self.figure} {self.base} -> {self.candidate} ({self.delta}, "
                f"p={format_p(self.p)}, {self.verdict})")


@dataclass(frozen=True)
class CellComparison:
    cell: str
    base_kernels: tuple[str, ...]
    candidate_kernels: tuple[str, ...]
    base: Rates
    candidate: Rates
    changes: tuple[Change, ...]

    @property
    def significant(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.significant)


@dataclass(frozen=True)
class Comparison:
    cells: tuple[CellComparison, ...]
    only_base: tuple[str, ...]
    only_candidate: tuple[str, ...]

    @property
    def significant(self) -> int:
        return sum(len(c.significant) for c in self.cells)

    @property
    def regressions(self) -> int:
        return sum(1 for c in self.cells for ch in c.significant if ch.worse)


def format_p(p: float) -> str:
    """``1e-9``, ``0.003``, ``0.3``: two significant digits, no exponent padding."""
    if math.isnan(p):
        return "-"
    text = f"{p:.2g}" if p >= 1e-4 else f"{p:.0e}"
    return text.replace("e-0", "e-")


def rate_change(figure: str, base: Rate, cand: Rate, *, lower_is_better: bool = True) -> Change:
    def pct(r: Rate) -> str:
        return f"{100 * r.value:.1f}%" if r.n else "-"

    if not base.n or not cand.n:
        return Change(figure, pct(base), pct(cand), "-", math.nan, Test.FISHER, None)
    table = [[cand.k, cand.n - cand.k], [base.k, base.n - base.k]]
    p = float(fisher_exact(table)[1])
    pts = 100 * (cand.value - base.value)
    worse = None if pts == 0 else (pts > 0) == lower_is_better
    return Change(figure, pct(base), pct(cand), f"{pts:+.1f} pts", p, Test.FISHER, worse)


def _median(values: Sequence[float]) -> float:
    data = sorted(values)
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2


def time_change(phase: str, base: Sequence[float], cand: Sequence[float]) -> Change:
    figure = f"{phase} p50"
    if not base or not cand:
        b = f"{_median(base):.1f} s" if base else "-"
        c = f"{_median(cand):.1f} s" if cand else "-"
        return Change(figure, b, c, "-", math.nan, Test.MANN_WHITNEY, None)
    mb, mc = _median(base), _median(cand)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # identical samples: p is 1, no need to warn
        p = float(mannwhitneyu(cand, base, alternative="two-sided").pvalue)
    if math.isnan(p):
        p = 1.0
    rel = (mc - mb) / mb * 100 if mb else math.inf if mc else 0.0
    delta = f"{rel:+.0f}%" if math.isfinite(rel) else "+inf"
    worse = None if mc == mb else mc > mb
    return Change(figure, f"{mb:.1f} s", f"{mc:.1f} s", delta, p, Test.MANN_WHITNEY, worse)


def _trylock(items: Sequence[Loaded]) -> Rate:
    counts = [i.line.trylock_failures for i in items
              if not i.is_harness_error and i.line.trylock_failures is not None]
    return wilson(sum(1 for t in counts if t > 0), len(counts))


def compare_cell(cell: str, base: Sequence[Loaded], cand: Sequence[Loaded]) -> CellComparison:
    rb, rc = rates(base), rates(cand)
    changes = [rate_change("stale rate", rb.stale, rc.stale),
               rate_change("no-dump rate", rb.no_dump, rc.no_dump),
               rate_change("pass rate", rb.passed, rc.passed, lower_is_better=False),
               rate_change("trylock-failure rate", _trylock(base), _trylock(cand))]
    pb, pc = phases(base), phases(cand)
    for phase in [p for p in pc if p in pb] + [p for p in pb if p not in pc]:
        changes.append(time_change(phase, pb[phase].values,
                                   pc[phase].values if phase in pc else ()))
    return CellComparison(cell, _kernels(base), _kernels(cand), rb, rc, tuple(changes))


def _kernels(items: Sequence[Loaded]) -> tuple[str, ...]:
    return tuple(sorted({i.key.kernel for i in items}))


def _by_name(lines: LineSet) -> dict[str, list[Loaded]]:
    out: dict[str, list[Loaded]] = {}
    for item in lines.lines:
        out.setdefault(item.line.cell, []).append(item)
    return out


def compare(base: LineSet, candidate: LineSet) -> Comparison:
    b, c = _by_name(base), _by_name(candidate)
    return Comparison(
        cells=tuple(compare_cell(name, b[name], c[name]) for name in sorted(set(b) & set(c))),
        only_base=tuple(sorted(set(b) - set(c))), only_candidate=tuple(sorted(set(c) - set(b))))
