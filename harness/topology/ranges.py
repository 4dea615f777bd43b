"""Half-open physical address ranges ``[start, end)`` and their O(n log n) set algebra.

The range algebra is one sort, then linear sweeps over sorted, merged inputs.  A crash
header may hold 8192 ranges (CONFIG_CRASH_MAX_MEMORY_RANGES) and the verifier combines
several such lists, so anything quadratic costs seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter


@dataclass(frozen=True, order=True, slots=True)
class AddressRange:
    """A half-open physical address range ``[start, end)``.

    Slotted: a dump at the kernel's limits has 16384 of these per view, and a
    ``__dict__`` per range would triple their memory.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"bad address range [{self.start:#x}, {self.end:#x})")

    @property
    def size(self) -> int:
        return self.end - self.start

    def overlaps(self, other: AddressRange) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"[{self.start:#x}-{self.end:#x})"


class _Merged(tuple[AddressRange, ...]):
    """A tuple of ranges known to be sorted, disjoint, non-adjacent and non-empty.

    Every function below returns one, and ``merge_ranges`` hands one back untouched, so
    chained set operations sort once instead of at every step.
    """

    __slots__ = ()


_SPAN = attrgetter("start", "end")


def merge_ranges(ranges: Iterable[AddressRange]) -> tuple[AddressRange, ...]:
    """Sort and merge overlapping or adjacent ranges."""
    if isinstance(ranges, _Merged):
        return ranges
    merged: list[AddressRange] = []
    for r in sorted(ranges, key=_SPAN):
        if r.start == r.end:
            continue
        if merged and r.start <= merged[-1].end:
            last = merged[-1]
            if r.end > last.end:
                merged[-1] = AddressRange(last.start, r.end)
        else:
            merged.append(r)
    return _Merged(merged)


def subtract_ranges(
    ranges: Iterable[AddressRange], holes: Iterable[AddressRange]
) -> tuple[AddressRange, ...]:
    """``ranges`` minus every byte covered by ``holes``, merged."""
    pieces = merge_ranges(ranges)
    gaps = merge_ranges(holes)
    out: list[AddressRange] = []
    first = 0           # the first hole that may still reach a later piece
    for r in pieces:
        while first < len(gaps) and gaps[first].end <= r.start:
            first += 1
        start = r.start
        k = first
        while k < len(gaps) and gaps[k].start < r.end:
            if gaps[k].start > start:
                out.append(AddressRange(start, gaps[k].start))
            start = max(start, gaps[k].end)
            k += 1
        if start == r.start:
            out.append(r)
        elif start < r.end:
            out.append(AddressRange(start, r.end))
    # Pieces of disjoint, non-adjacent inputs cut by holes stay disjoint and non-adjacent.
    return _Merged(out)


def intersect_ranges(
    a: Iterable[AddressRange], b: Iterable[AddressRange]
) -> tuple[AddressRange, ...]:
    """Bytes covered by both ``a`` and ``b``, merged."""
    xs, ys = merge_ranges(a), merge_ranges(b)
    out: list[AddressRange] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        x, y = xs[i], ys[j]
        lo, hi = max(x.start, y.start), min(x.end, y.end)
        if lo < hi:
            out.append(x if (lo, hi) == (x.start, x.end) else AddressRange(lo, hi))
        if x.end < y.end:
            i += 1
        else:
            j += 1
    return _Merged(out)
