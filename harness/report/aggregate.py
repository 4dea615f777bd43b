"""The figures of a report: per (kernel, cell) rates, staleness, phase times, nights.

A harness error says nothing about the kernel: it is counted on its own and never enters
a kernel rate's denominator (``Rates.n`` is iterations minus harness errors).  Every rate
carries its Wilson interval: a rate from a few dozen iterations is only worth its interval.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..campaign.stats import Rate, percentile, wilson
from ..results import Result
from .load import NO_DUMP, CellKey, LineSet, Loaded, by_campaign, group

#: Phase-time keys in the order a run goes through them; others follow, sorted.
PHASES = ("boot_to_kdump_ready", "swarm_settle", "panic_to_capture", "dump_write", "verify",
          "total")


@dataclass(frozen=True)
class Rates:
    """The kernel rates of some iterations; harness errors kept apart."""

    iterations: int
    harness_errors: int
    stale: Rate
    no_dump: Rate
    passed: Rate

    @property
    def n(self) -> int:
        return self.iterations - self.harness_errors


@dataclass(frozen=True)
class Spread:
    """One phase's times (seconds) over the iterations that measured it."""

    n: int
    p50: float
    p90: float
    p99: float
    values: tuple[float, ...]


@dataclass(frozen=True)
class Magnitude:
    """How far off the stale iterations' headers were (means and maxima)."""

    stale: int
    mib_mean: float
    mib_max: float
    dimms_mean: float
    dimms_max: int
    cpus_mean: float
    cpus_max: int


@dataclass(frozen=True)
class CellStats:
    key: CellKey
    rates: Rates
    trylock: Rate                 # iterations with trylock_failures > 0 (of those reporting)
    trylock_mean: float           # mean trylock_failures (NaN: no line reported it)
    magnitude: Magnitude
    phases: Mapping[str, Spread]
    results: Mapping[str, int]    # result -> count, harness errors included
    expected: tuple[str, ...]
    config: Mapping[str, str]     # the dimensions every line of the cell agrees on
    campaigns: int


@dataclass(frozen=True)
class Night:
    """One campaign (a night, or one repro run): overall and per kernel."""

    campaign: str
    started: str
    rates: Rates
    kernels: Mapping[str, Rates]


@dataclass(frozen=True)
class Overview:
    """The report's header."""

    lines: int
    files: int
    duplicates: int
    campaigns: tuple[str, ...]
    hosts: tuple[str, ...]
    qemu: tuple[str, ...]
    accels: tuple[str, ...]
    kernels: tuple[str, ...]
    cells: int
    first: str
    last: str
    harness_errors: int
    failures: int


def rates(items: Sequence[Loaded]) -> Rates:
    kernel = [i.line for i in items if not i.is_harness_error]
    n = len(kernel)
    return Rates(
        iterations=len(items), harness_errors=len(items) - n,
        stale=wilson(sum(1 for line in kernel if line.result is Result.STALE), n),
        no_dump=wilson(sum(1 for line in kernel if line.result in NO_DUMP), n),
        passed=wilson(sum(1 for line in kernel if line.passed), n))


def phase_names(items: Sequence[Loaded]) -> list[str]:
    seen = {k for i in items for k, v in i.line.times.items() if v is not None}
    return [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))


def spread(values: Sequence[float]) -> Spread:
    data = tuple(sorted(values))
    return Spread(len(data), percentile(data, 50), percentile(data, 90), percentile(data, 99),
                  data)


def phases(items: Sequence[Loaded]) -> dict[str, Spread]:
    """Phase times of the kernel/guest iterations (a harness error's times are partial)."""
    kernel = [i for i in items if not i.is_harness_error]
    out: dict[str, Spread] = {}
    for name in phase_names(kernel):
        values = [v for i in kernel if (v := i.line.times.get(name)) is not None]
        out[name] = spread(values)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def magnitude(items: Sequence[Loaded]) -> Magnitude:
    st = [i.line.staleness for i in items if i.line.result is Result.STALE]
    return Magnitude(
        stale=len(st),
        mib_mean=_mean([s.mib for s in st]), mib_max=max((s.mib for s in st), default=0.0),
        dimms_mean=_mean([s.dimms for s in st]), dimms_max=max((s.dimms for s in st), default=0),
        cpus_mean=_mean([s.cpus for s in st]), cpus_max=max((s.cpus for s in st), default=0))


def common_config(items: Sequence[Loaded]) -> dict[str, str]:
    if not items:
        return {}
    first = items[0].line.config
    return {k: v for k, v in first.items() if all(i.line.config.get(k) == v for i in items)}


def cell_stats(key: CellKey, items: Sequence[Loaded]) -> CellStats:
    reporting = [i.line.trylock_failures for i in items
                 if not i.is_harness_error and i.line.trylock_failures is not None]
    counts = Counter(i.line.result.value for i in items)
    return CellStats(
        key=key, rates=rates(items),
        trylock=wilson(sum(1 for t in reporting if t > 0), len(reporting)),
        trylock_mean=_mean([float(t) for t in reporting]),
        magnitude=magnitude(items), phases=phases(items),
        results=dict(counts.most_common()),
        expected=tuple(sorted({i.line.expected.value for i in items})),
        config=common_config(items),
        campaigns=len({i.line.campaign for i in items}))


def all_cells(lines: LineSet) -> list[CellStats]:
    return [cell_stats(k, v) for k, v in lines.by_cell().items()]


def nights(lines: LineSet) -> list[Night]:
    """One entry per campaign, in the order they started."""
    groups = by_campaign(lines.lines)
    out = []
    for campaign in lines.campaigns():
        items = groups[campaign]
        kernels: dict[str, list[Loaded]] = {}
        for i in items:
            kernels.setdefault(i.key.kernel, []).append(i)
        started = min((i.line.started for i in items if i.line.started), default="")
        out.append(Night(campaign, started, rates(items),
                         {k: rates(v) for k, v in sorted(kernels.items())}))
    return out


def _distinct(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if v}))


def overview(lines: LineSet) -> Overview:
    ls = [i.line for i in lines.lines]
    started = sorted(line.started for line in ls if line.started)
    return Overview(
        lines=len(ls), files=len(lines.files), duplicates=lines.duplicates,
        campaigns=tuple(lines.campaigns()), hosts=_distinct([x.host for x in ls]),
        qemu=_distinct([x.qemu for x in ls]), accels=_distinct([x.accel for x in ls]),
        kernels=_distinct([x.kernel_release for x in ls]),
        cells=len({(x.kernel_release, x.cell) for x in ls}),
        first=started[0] if started else "", last=started[-1] if started else "",
        harness_errors=sum(1 for i in lines.lines if i.is_harness_error),
        failures=sum(1 for i in lines.lines if i.failed))


def kernel_groups(lines: LineSet) -> dict[str, list[Loaded]]:
    """Lines by kernel release (the plots' groups: bounded, unlike cells)."""
    out: dict[str, list[Loaded]] = {}
    for key, items in group(lines.lines).items():
        out.setdefault(key.kernel, []).extend(items)
    return out
