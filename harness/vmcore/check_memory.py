"""The memory check: the ranges a dump describes against System RAM minus Crash kernel.

"Crash kernel" is ``Topology.crash_reserved``: /proc/iomem's ``Crash kernel`` and the
``crashkernel=,cma`` ranges (6.17+), which the kernel leaves out of the dump alike.

One cause, one finding: RAM a device finding already reports (a missing DIMM, a DIMM the
dump describes though it is no longer RAM) is not reported again as a bare range; what is
left over, RAM no device accounts for, still is.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..topology import AddressRange, Topology, intersect_ranges, merge_ranges, subtract_ranges
from ..units import format_size
from .check_dimms import DeviceMap, check_devices
from .constants import LOW_MEMORY_END, X86_64_PAGE_SIZE, DumpFormat
from .findings import Finding, FindingCode, Verdict, ranges_text
from .model import Dump
from .ranges import RangeIndex
from .subject import Subject

C = FindingCode
_LOW_MEMORY = AddressRange(0, LOW_MEMORY_END)


def _page_round(ranges: Sequence[AddressRange], page: int) -> tuple[AddressRange, ...]:
    return merge_ranges(AddressRange(r.start // page * page, -(-r.end // page) * page)
                        for r in ranges)


def expected_ram(dump: Dump, topology: Topology) -> tuple[AddressRange, ...]:
    """What the dump should describe: System RAM minus Crash kernel (whole pages for kdump)."""
    crash = topology.crash_reserved
    expected = subtract_ranges(topology.system_ram, crash)
    if dump.format == DumpFormat.KDUMP:
        # bitmap1 counts whole pages (makedumpfile rounds a partial last page up).
        expected = subtract_ranges(_page_round(expected, dump.page_size or X86_64_PAGE_SIZE),
                                   crash)
    return expected


def check_memory(subject: Subject, topology: Topology, devices: DeviceMap) -> list[Finding]:
    """Memory ranges and per-device findings for one dump (or raw header)."""
    if not topology.system_ram:
        return [subject.warning(C.MEMORY_UNCHECKED, "the topology lists no System RAM: memory "
                                                    "and DIMMs not checked")]
    dump = subject.dump
    expected = expected_ram(dump, topology)
    described = dump.ram_ranges
    by_device = check_devices(subject, devices, RangeIndex(expected), RangeIndex(described))
    # The first MiB is ignored either way.  On x86 it is always reserved (real-mode
    # trampoline, BIOS data) and was historically copied to a backup region for the capture
    # kernel, so kexec_file_load headers exclude it (elf_header_exclude_ranges() in
    # arch/x86/kernel/crash.c) while kexec-tools' kexec_load headers describe 0x1000-0x9ffff.
    expected_high = subtract_ranges(expected, [_LOW_MEMORY])
    described_high = subtract_ranges(described, [_LOW_MEMORY])
    missing = subtract_ranges(expected_high, described_high)
    extra = subtract_ranges(described_high, expected_high)
    out = by_device.findings
    out += _missing_ram(subject, subtract_ranges(missing, by_device.lacking))
    out += _extra_ranges(subject, topology, extra, by_device.surplus)
    if not missing and not extra:
        out.append(subject.info(C.MEMORY_MATCH,
                                f"exactly System RAM minus {_crash_name(topology)} above "
                                f"1 MiB: "
                                f"{len(expected_high)} range(s), "
                                f"{format_size(sum(r.size for r in expected_high))}"))
    low = intersect_ranges(described, [_LOW_MEMORY])
    if low:
        out.append(subject.info(C.LOW_MEMORY,
                                f"the first MiB is described ({ranges_text(low)}); allowed "
                                "(kexec_load headers do this), not compared"))
    return out + _check_text_load(subject, topology)


def _crash_name(topology: Topology) -> str:
    return "Crash kernel and crashkernel CMA" if topology.crash_cma else "Crash kernel"


def _missing_ram(subject: Subject, missing: Sequence[AddressRange]) -> list[Finding]:
    return [subject.error(C.RAM_NOT_IN_DUMP, Verdict.STALE,
                          f"RAM {r} ({format_size(r.size)}) is not described by {subject.what}",
                          range=r) for r in missing]


def _extra_ranges(subject: Subject, topology: Topology, extra: Sequence[AddressRange],
                  reported: Sequence[AddressRange]) -> list[Finding]:
    out = []
    what = subject.what
    crash = topology.crash_reserved
    for part in intersect_ranges(extra, crash):
        where = ("crashkernel CMA" if intersect_ranges([part], topology.crash_cma)
                 else "Crash kernel")
        out.append(subject.error(C.CRASH_KERNEL_IN_DUMP, Verdict.MISMATCH,
                                 f"{what} describes {part} ({format_size(part.size)}) inside "
                                 f"the {where} reservation", range=part))
    leftover = subtract_ranges(subtract_ranges(extra, crash), reported)
    for part in leftover:
        out.append(subject.error(C.DUMP_RANGE_NOT_RAM, Verdict.STALE,
                                 f"{what} describes {part} ({format_size(part.size)}) which is "
                                 "not System RAM", range=part))
    return out


def _check_text_load(subject: Subject, topology: Topology) -> list[Finding]:
    dump = subject.dump
    if dump.format not in (DumpFormat.ELF, DumpFormat.RAW_ELFCOREHDR):
        return []
    text = dump.text_load
    if text is None:
        return [subject.warning(C.TEXT_LOAD_MISSING,
                                "no kernel-text PT_LOAD (vaddr >= 0xffffffff80000000)")]
    if subtract_ranges([text.range], topology.system_ram):
        return [subject.warning(C.TEXT_LOAD_OUTSIDE_RAM,
                                f"the kernel-text PT_LOAD {text.range} is not inside System RAM",
                                range=text.range)]
    return []
