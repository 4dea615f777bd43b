"""The range algebra (sorted sweeps, bisect lookups) against a byte-by-byte reference.

The sweeps replaced quadratic loops; a property test over small coordinates, where every
byte can be enumerated, checks they still compute the same sets.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.topology import (
    AddressRange,
    MemoryDevice,
    check_devices_disjoint,
    intersect_ranges,
    merge_ranges,
    subtract_ranges,
)
from harness.vmcore.check_dimms import DeviceMap
from harness.vmcore.ranges import RangeIndex

_ranges = st.lists(st.builds(lambda a, b: AddressRange(min(a, b), max(a, b)),
                             st.integers(0, 80), st.integers(0, 80)), max_size=12)
_range = st.builds(lambda a, b: AddressRange(min(a, b), max(a, b)),
                   st.integers(0, 80), st.integers(0, 80))


def points(ranges: Iterable[AddressRange]) -> set[int]:
    return {x for r in ranges for x in range(r.start, r.end)}


def runs(covered: set[int]) -> tuple[AddressRange, ...]:
    """Maximal runs of consecutive integers: the merged form of a set of bytes."""
    out: list[AddressRange] = []
    for x in sorted(covered):
        if out and out[-1].end == x:
            out[-1] = AddressRange(out[-1].start, x + 1)
        else:
            out.append(AddressRange(x, x + 1))
    return tuple(out)


_SETTINGS = settings(max_examples=300, deadline=None, database=None)


@_SETTINGS
@given(_ranges, _ranges)
def test_set_operations_match_the_reference(a: list[AddressRange],
                                            b: list[AddressRange]) -> None:
    assert merge_ranges(a) == runs(points(a))
    assert subtract_ranges(a, b) == runs(points(a) - points(b))
    assert intersect_ranges(a, b) == runs(points(a) & points(b))
    # Chained calls take the already-merged fast path and still agree.
    merged = merge_ranges(a)
    assert subtract_ranges(merged, merge_ranges(b)) == runs(points(a) - points(b))
    assert merge_ranges(merged) is merged


@_SETTINGS
@given(_ranges, _range)
def test_range_index_lookups_match_the_reference(a: list[AddressRange],
                                                 r: AddressRange) -> None:
    index = RangeIndex(a)
    assert index.clip(r) == runs(points(a) & points([r]))
    assert index.overlapping(r) == tuple(x for x in merge_ranges(a) if x.overlaps(r))
    assert index.covered(r) == len(points(a) & points([r]))


@_SETTINGS
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 20)), max_size=8), _range)
def test_devices_disjoint_check_and_device_map(spans: list[tuple[int, int]],
                                               r: AddressRange) -> None:
    devices = [MemoryDevice(f"d{i}", "dimm", start, size) for i, (start, size) in
               enumerate(spans)]
    overlapping = any(x.range.overlaps(y.range) for i, x in enumerate(devices)
                      for y in devices[i + 1:])
    try:
        check_devices_disjoint(devices)
    except ValueError:
        assert overlapping
        return
    assert not overlapping
    entries = DeviceMap.of(devices).entries
    assert [e.device.id for e in entries] == [d.id for d in sorted(devices, key=lambda d: d.addr)]
    # Disjoint and sorted, the regions are a RangeIndex's own input, unmerged where apart.
    covered = RangeIndex(e.region for e in entries).clip(r)
    assert covered == runs(points(d.range for d in devices) & points([r]))
