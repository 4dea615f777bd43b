"""``--shard i/N``: split a matrix's iterations over N machines.

Every (cell, iteration) lands in exactly one shard.  The split is a longest-first greedy
over the cells' estimated costs (each unit goes to the shard with the least work so far,
the lowest index on a tie): shards differ by at most one unit's cost.  It depends only on
the cells, their costs and the iteration count, ordered by name, never on dict or set
order, the host or ``PYTHONHASHSEED``: every machine computes the same split.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError
from .expand import Cell

_SHARD = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` of ``count`` (1-based, as people and CI matrices count)."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise UsageError(f"--shard {self.index}/{self.count}: expected i/N with "
                             "1 <= i <= N")

    @classmethod
    def parse(cls, text: str, option: str = "--shard") -> ShardSpec:
        match = _SHARD.fullmatch(text.strip())
        if match is None:
            raise UsageError(f"{option} {text!r}: expected i/N, e.g. 2/4")
        return cls(int(match[1]), int(match[2]))

    @property
    def label(self) -> str:
        """For campaign ids and file names: ``shard2of4``."""
        return f"shard{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Unit:
    """One iteration of one cell: what a shard runs."""

    cell: Cell
    iteration: int             # 0-based, as the campaign's result lines count

    @property
    def key(self) -> tuple[str, int]:
        return (self.cell.name, self.iteration)


def units(cells: Sequence[Cell], iterations: int) -> tuple[Unit, ...]:
    if iterations < 1:
        raise UsageError(f"--iterations {iterations}: expected at least 1")
    return tuple(Unit(c, i) for c in cells for i in range(iterations))


def split(work: Sequence[Unit], count: int) -> tuple[tuple[Unit, ...], ...]:
    """All ``count`` shards, each in the order it should run (longest first)."""
    shards: list[list[Unit]] = [[] for _ in range(count)]
    load = [0.0] * count
    for unit in sorted(work, key=lambda u: (-u.cell.cost, u.cell.name, u.iteration)):
        target = min(range(count), key=lambda i: (load[i], i))
        shards[target].append(unit)
        load[target] += unit.cell.cost
    return tuple(tuple(s) for s in shards)


def shard(work: Sequence[Unit], spec: ShardSpec) -> tuple[Unit, ...]:
    """The units shard ``spec`` runs."""
    names = [u.key for u in work]
    if len(set(names)) != len(names):
        raise ValueError("a cell iteration appears twice")   # expand() guarantees otherwise
    return split(work, spec.count)[spec.index - 1]
