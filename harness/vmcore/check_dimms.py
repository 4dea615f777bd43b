"""Memory devices: QEMU's view against the guest's, and each device against a dump.

Two different questions, asked separately so that one cause gives one finding:

* ``check_device_views`` (once per verification): does the guest's System RAM agree with
  the devices QEMU reports?  A device where the guest has no RAM, a device only partly RAM,
  RAM running on past a device or RAM in the device-memory area no device accounts for.
  These are warnings: the dump is compared with the guest's view, and a disagreement
  between QEMU and the guest is not the crash header's fault, but it must not pass silently
  either.
* ``check_devices`` (per dump, and per raw header): is each device's RAM described?  Its
  findings also return the bytes they account for, so the memory check does not report the
  same missing DIMM a second time as a bare RAM range.

Every per-device question is answered by one sweep over the sorted devices and sorted
ranges (``ranges.RangeIndex.clip_each``): O(n + d), not a scan per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..topology import (
    AddressRange,
    MemoryDevice,
    Topology,
    device_memory_base,
    intersect_ranges,
    subtract_ranges,
)
from ..units import format_size
from .findings import Finding, FindingCode, Severity, Verdict, info, ranges_text, warning
from .ranges import RangeIndex, total
from .subject import Subject

C = FindingCode
_TOP = 1 << 64


def device_region(dev: MemoryDevice) -> AddressRange | None:
    """The physical range a device occupies, or None when QEMU did not say.

    A pc-dimm is all of ``[addr, addr + size)``.  virtio-mem plugs blocks anywhere in its
    region, so only the whole region (``region_size``) can be compared.
    """
    if dev.kind == "dimm" and dev.size:
        return dev.range
    if dev.kind == "virtio-mem" and dev.region_size:
        return AddressRange(dev.addr, dev.addr + dev.region_size)
    return None


class DeviceEntry(NamedTuple):
    """A device with a known region, and its name as findings spell it."""

    region: AddressRange
    device: MemoryDevice
    name: str           # "dimm1 [0x...-0x...) (256 MiB)", built once for every finding


@dataclass(frozen=True, slots=True)
class DeviceMap:
    """The topology's memory devices, sorted by address (they do not overlap)."""

    entries: tuple[DeviceEntry, ...]        # devices with a known region
    unknown: tuple[MemoryDevice, ...]       # no region to compare (virtio-mem without one)

    @classmethod
    def of(cls, devices: Sequence[MemoryDevice]) -> DeviceMap:
        entries = []
        unknown = []
        for dev in devices:
            region = device_region(dev)
            if region is None:
                unknown.append(dev)
            else:
                kind = "" if dev.kind == "dimm" else " " + dev.kind
                name = f"{dev.id} {region} ({format_size(region.size)}{kind})"
                entries.append(DeviceEntry(region, dev, name))
        entries.sort(key=lambda e: e.region.start)   # disjoint (Topology refuses overlaps)
        return cls(tuple(entries), tuple(unknown))

    def __bool__(self) -> bool:
        return bool(self.entries or self.unknown)


# -- QEMU's view against the guest's ---------------------------------------------------------


def check_device_views(topology: Topology, devices: DeviceMap, ram: RangeIndex,
                       boot_memory: int | None) -> list[Finding]:
    """Every disagreement between the devices QEMU reports and the guest's System RAM."""
    out: list[Finding] = []
    for dev in devices.unknown:
        out.append(info(C.DIMM_UNCHECKED,
                        f"{dev.id} ({dev.kind}, {format_size(dev.size)}) has no known region: "
                        "covered by the System RAM comparison only", device=dev.id))
    regions = [e.region for e in devices.entries]
    for entry, ram_part in zip(devices.entries, ram.clip_each(regions), strict=True):
        if total(ram_part) != entry.region.size or entry.device.kind != "dimm":
            out += _device_view(entry, ram_part)        # else a DIMM that is all RAM: agreed
    out += _ram_outside_devices(topology, devices, ram, boot_memory)
    return out


def _device_view(entry: DeviceEntry, ram: Sequence[AddressRange]) -> list[Finding]:
    region, dev, name = entry
    ram_size = total(ram)
    where = dict(device=dev.id, range=region)
    if dev.kind == "virtio-mem":
        if ram_size == dev.size:
            return []
        return [warning(C.DIMM_SIZE_MISMATCH,
                        f"{name}: QEMU reports {format_size(dev.size)} plugged, the guest has "
                        f"{format_size(ram_size)} of the region as System RAM", **where)]
    if ram_size == 0:
        return [warning(C.DIMM_NOT_RAM,
                        f"{name}: QEMU has it plugged but the guest has no System RAM there",
                        **where)]
    if ram_size < region.size:
        absent = subtract_ranges([region], ram)
        return [warning(C.DIMM_SIZE_MISMATCH,
                        f"{name}: only {format_size(ram_size)} of it is System RAM in the guest "
                        f"({ranges_text(absent)} is not)", **where)]
    return []


def _ram_outside_devices(topology: Topology, devices: DeviceMap, ram: RangeIndex,
                         boot_memory: int | None) -> list[Finding]:
    """RAM in the device-memory area that no device accounts for.

    The area starts where QEMU puts device memory (known from the boot memory size), or
    failing that at the lowest device: boot RAM always lies below every device.
    """
    extents = [e for e in (d.extent for d in topology.memory_devices) if e.size]
    if not extents:
        return []
    floor = device_memory_base(boot_memory) if boot_memory else min(r.start for r in extents)
    stray = subtract_ranges(intersect_ranges(ram.ranges, [AddressRange(floor, _TOP)]), extents)
    ends = {e.region.end: e for e in devices.entries}
    starts = {e.region.start: e for e in devices.entries}
    out = []
    for r in stray:
        entry = ends.get(r.start) or starts.get(r.end)
        if entry is None:
            out.append(warning(C.DIMM_RAM_UNACCOUNTED,
                               f"System RAM {r} ({format_size(r.size)}) in the device-memory "
                               "area belongs to no memory device QEMU reports", range=r))
            continue
        out.append(warning(C.DIMM_SIZE_MISMATCH,
                           f"{entry.name}: the guest's System RAM runs on past it, "
                           f"{r} ({format_size(r.size)}) belongs to no memory device",
                           device=entry.device.id, range=r))
    return out


# -- each device against a dump ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceCheck:
    """Per-device findings for one dump, and the bytes they account for."""

    findings: list[Finding]
    lacking: tuple[AddressRange, ...]     # RAM a device finding reported undescribed
    surplus: tuple[AddressRange, ...]     # non-RAM a device finding reported described


def check_devices(subject: Subject, devices: DeviceMap, expected: RangeIndex,
                  described: RangeIndex) -> DeviceCheck:
    """Is each device's RAM (System RAM minus Crash kernel) described, and nothing else?"""
    out: list[Finding] = []
    all_lacking: list[AddressRange] = []
    all_surplus: list[AddressRange] = []
    regions = [e.region for e in devices.entries]
    for entry, ram_part, dump_part in zip(devices.entries, expected.clip_each(regions),
                                          described.clip_each(regions), strict=True):
        if ram_part == dump_part:
            # The common case, without two set operations: present (or not RAM at all,
            # which check_device_views reports).
            if ram_part:
                out.append(_present(subject, entry, total(ram_part)))
            continue
        lacking = subtract_ranges(ram_part, dump_part)
        surplus = subtract_ranges(dump_part, ram_part)
        all_lacking += lacking
        all_surplus += surplus
        # Clipped merged ranges are canonical: unequal parts mean lacking or surplus bytes.
        out += _device_errors(subject, entry, dump_part, lacking, surplus)
    return DeviceCheck(out, tuple(all_lacking), tuple(all_surplus))


def _present(subject: Subject, entry: DeviceEntry, ram_size: int) -> Finding:
    region = entry.region
    part = "" if ram_size == region.size else f" ({format_size(ram_size)} of it is RAM)"
    # Built directly: one per device and dump, tens of thousands at the range limits.
    return Finding(Severity.INFO, C.DIMM_PRESENT,
                   f"{subject.prefix}{entry.name} is present{part}", None, None, region,
                   entry.device.id, subject.in_header)


def _device_errors(subject: Subject, entry: DeviceEntry, dump_part: Sequence[AddressRange],
                   lacking: Sequence[AddressRange],
                   surplus: Sequence[AddressRange]) -> list[Finding]:
    name, what = entry.name, subject.what
    where = dict(device=entry.device.id, range=entry.region)
    out = []
    if lacking and not dump_part:
        out.append(subject.error(C.DIMM_MISSING, Verdict.STALE,
                                 f"{name} is System RAM but missing from {what}", **where))
    elif lacking:
        lost = total(lacking)
        out.append(subject.error(C.DIMM_PARTIAL, Verdict.STALE,
                                 f"{name} is only partly in {what}: {format_size(lost)} missing "
                                 f"({ranges_text(lacking)})", **where))
    if surplus:
        out.append(subject.error(C.DIMM_DESCRIBED_NOT_RAM, Verdict.STALE,
                                 f"{name}: {what} describes {ranges_text(surplus)}, which the "
                                 "guest does not have as System RAM", **where))
    return out
