"""The report's plots: matplotlib (Agg), each figure an inline SVG string (works offline).

One figure per plot kind, grouped by kernel release (bounded: a few kernels), never one
figure per cell (hundreds in a matrix): making a figure is the report's main cost.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..campaign.stats import Rate
from ..results import Result
from .aggregate import Night, Rates, kernel_groups, phase_names, rates
from .load import LineSet, Loaded

#: At most this many kernels get a colour in a plot (the most exercised ones).
MAX_KERNELS = 10
_PROLOG = re.compile(r"^.*?(?=<svg)", re.DOTALL)


@dataclass(frozen=True)
class Plot:
    name: str          # the HTML anchor
    title: str
    svg: str           # an <svg> element, prolog stripped


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")      # no display on CI hosts; SVG output needs no GUI backend
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any, name: str) -> str:
    plt = _pyplot()
    buf = io.StringIO()
    # hashsalt: ids inside each SVG (clip paths, markers) must not collide across the
    # figures inlined in one page; fonttype none: text stays text (smaller, selectable).
    with plt.rc_context({"svg.hashsalt": name, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return _PROLOG.sub("", buf.getvalue(), count=1)


def _top_kernels(lines: LineSet) -> dict[str, list[Loaded]]:
    groups = kernel_groups(lines)
    top = sorted(groups, key=lambda k: -len(groups[k]))[:MAX_KERNELS]
    return {k: groups[k] for k in sorted(top)}


def _stale(r: Rates) -> Rate:
    return r.stale


def _no_dump(r: Rates) -> Rate:
    return r.no_dump


def _passed(r: Rates) -> Rate:
    return r.passed


#: The three kernel rates the plots draw, with their labels.
PICKS: tuple[tuple[str, Callable[[Rates], Rate]], ...] = (
    ("stale", _stale), ("no dump", _no_dump), ("pass", _passed))


def _err(r: Rate) -> tuple[float, float]:
    if not r.n:
        return (0.0, 0.0)
    return (100 * (r.value - r.low), 100 * (r.high - r.value))


def rates_plot(lines: LineSet) -> Plot:
    """Stale, no-dump and pass rates per kernel, Wilson 95% intervals as error bars."""
    plt = _pyplot()
    groups = {k: rates(v) for k, v in _top_kernels(lines).items()}
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 2), 3.2))
    width = 0.26
    for j, (label, pick) in enumerate(PICKS):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        rs = [pick(r) for r in groups.values()]
        ys = [100 * r.value if r.n else 0.0 for r in rs]
        errs = [[_err(r)[0] for r in rs], [_err(r)[1] for r in rs]]
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylabel("% of kernel iterations")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, ncols=3, loc="upper center")
    return Plot("plot-rates", "Rates per kernel (Wilson 95% intervals)", _svg(fig, "rates"))


def phases_plot(lines: LineSet) -> Plot | None:
    """One box plot per phase, one box per kernel (whiskers 1.5 IQR)."""
    plt = _pyplot()
    groups = _top_kernels(lines)
    names = phase_names([i for v in groups.values() for i in v])
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        data = [[v for i in items if not i.is_harness_error
                 and (v := i.line.times.get(name)) is not None] for items in groups.values()]
        keep = [(k, d) for k, d in zip(groups, data, strict=True) if d]
        ax.boxplot([d for _, d in keep], tick_labels=[k for k, _ in keep],
                   flierprops={"markersize": 2})
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("s", fontsize=8)
        ax.tick_params(axis="x", labelsize=7, labelrotation=15)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return Plot("plot-phases", "Phase times per kernel", _svg(fig, "phases"))


def trends_plot(nights: Sequence[Night]) -> Plot | None:
    """Rates per night (campaign, in start order) per kernel, Wilson bands shaded."""
    if len(nights) < 2:
        return None
    plt = _pyplot()
    kernels = sorted({k for n in nights for k in n.kernels})[:MAX_KERNELS]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharex=True)
    xs = list(range(len(nights)))
    for ax, (title, pick) in zip(axes, PICKS, strict=True):
        for kernel in kernels:
            rs: list[Rate | None] = [
                pick(n.kernels[kernel]) if kernel in n.kernels else None for n in nights]
            pts = [(x, r) for x, r in zip(xs, rs, strict=True) if r is not None and r.n]
            if not pts:
                continue
            px = [x for x, _ in pts]
            line = ax.plot(px, [100 * r.value for _, r in pts], marker="o", markersize=3,
                           label=kernel)[0]
            ax.fill_between(px, [100 * r.low for _, r in pts], [100 * r.high for _, r in pts],
                            alpha=0.2, color=line.get_color())
        ax.set_title(f"{title} rate", fontsize=9)
        ax.set_ylim(-2, 102)
        ax.set_xticks(xs, [_short(n) for n in nights], fontsize=7, rotation=30)
    axes[0].set_ylabel("%")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return Plot("plot-trends", "Trends across nights", _svg(fig, "trends"))


def _short(night: Night) -> str:
    return night.started[:10] if night.started else night.campaign[-12:]


def staleness_plot(lines: LineSet) -> Plot | None:
    """How much memory the stale headers got wrong, per kernel (histogram of MiB)."""
    groups = _top_kernels(lines)
    data = {k: [i.line.staleness.mib for i in v if i.line.result is Result.STALE]
            for k, v in groups.items()}
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(list(data.values()), bins=16, stacked=True, label=list(data))
    ax.set_xlabel("MiB described wrongly by a stale header")
    ax.set_ylabel("iterations")
    ax.legend(fontsize=7)
    return Plot("plot-staleness", "Staleness magnitude", _svg(fig, "staleness"))


def all_plots(lines: LineSet, nights: Sequence[Night]) -> list[Plot]:
    made = [rates_plot(lines), phases_plot(lines), trends_plot(nights), staleness_plot(lines)]
    return [p for p in made if p is not None]

