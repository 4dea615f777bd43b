"""Lookups into sorted, disjoint ranges in O(log n), for per-device questions.

"How much of this DIMM is RAM, and how much of it does the dump describe?" asked of each
of thousands of devices against thousands of ranges is quadratic as a scan; here it is a
bisect per question.  The set algebra itself (merge, subtract, intersect) lives in
``harness.topology`` and is a sort plus linear sweeps.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

from ..topology import AddressRange, merge_ranges


class RangeIndex:
    """Merged ranges with O(log n) lookups of what part of one range they cover."""

    __slots__ = ("_ends", "ranges")

    def __init__(self, ranges: Iterable[AddressRange]) -> None:
        self.ranges = merge_ranges(ranges)
        self._ends = [r.end for r in self.ranges]

    def overlapping(self, r: AddressRange) -> tuple[AddressRange, ...]:
        """The merged ranges that share at least one byte with ``r``."""
        first = bisect_right(self._ends, r.start)
        last = first
        while last < len(self.ranges) and self.ranges[last].start < r.end:
            last += 1
        return self.ranges[first:last]

    def clip(self, r: AddressRange) -> tuple[AddressRange, ...]:
        """``intersect_ranges([r], self.ranges)`` in O(log n + answer)."""
        out = []
        for x in self.overlapping(r):
            lo, hi = max(x.start, r.start), min(x.end, r.end)
            if lo < hi:
                out.append(x if lo == x.start and hi == x.end else AddressRange(lo, hi))
        return tuple(out)

    def covered(self, r: AddressRange) -> int:
        """How many bytes of ``r`` the ranges cover."""
        return sum(x.size for x in self.clip(r))

    def clip_each(self, regions: Sequence[AddressRange]) -> list[tuple[AddressRange, ...]]:
        """``clip`` of every one of ``regions`` (sorted, disjoint) in one sweep: O(n + d)."""
        ranges = self.ranges
        count = len(ranges)
        out = []
        first = 0
        for r in regions:
            while first < count and ranges[first].end <= r.start:
                first += 1
            parts = []
            k = first
            while k < count and ranges[k].start < r.end:
                x = ranges[k]
                if x.start >= r.start and x.end <= r.end:
                    parts.append(x)             # inside: no new object (the common case)
                else:
                    parts.append(AddressRange(max(x.start, r.start), min(x.end, r.end)))
                k += 1
            out.append(tuple(parts))
        return out


def total(ranges: Sequence[AddressRange]) -> int:
    """Bytes in ``ranges`` (one range, the common case, without a generator)."""
    if len(ranges) == 1:
        return ranges[0].end - ranges[0].start
    return sum(r.end - r.start for r in ranges)
