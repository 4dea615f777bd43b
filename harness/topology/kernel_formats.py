"""The kernel's text formats: /proc/iomem, sysfs CPU lists (``0-3,6,8-9``), the
``crashkernel=SIZE,cma`` ranges (sysfs, or the boot log) and adjtimex(2)'s clock.

/proc/iomem's inclusive ends become half-open ``[start, end)`` here, once, when parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .ranges import AddressRange, merge_ranges


@dataclass(frozen=True)
class IomemEntry:
    """One line of /proc/iomem: its nesting depth, range and name."""

    depth: int
    range: AddressRange
    name: str


_IOMEM_LINE = re.compile(
    r"^(?P<indent> *)(?P<start>[0-9a-fA-F]+)-(?P<end>[0-9a-fA-F]+) : (?P<name>.*)$")


def parse_iomem(text: str) -> tuple[IomemEntry, ...]:
    """Parse /proc/iomem (read as root: unprivileged readers see zeroed addresses)."""
    entries = []
    for line in text.splitlines():
        m = _IOMEM_LINE.match(line.rstrip())
        if not m:
            continue
        start, end = int(m["start"], 16), int(m["end"], 16)
        entries.append(
            IomemEntry(len(m["indent"]) // 2, AddressRange(start, end + 1), m["name"].strip())
        )
    return tuple(entries)


def system_ram_ranges(entries: Sequence[IomemEntry]) -> tuple[AddressRange, ...]:
    """Every ``System RAM`` range (top-level and nested, e.g. virtio_mem), merged."""
    return merge_ranges(e.range for e in entries if e.name.startswith("System RAM"))


def crash_kernel_ranges(entries: Sequence[IomemEntry]) -> tuple[AddressRange, ...]:
    """The ``Crash kernel`` reservations (one, or a low and a high part)."""
    return merge_ranges(e.range for e in entries if e.name == "Crash kernel")


_RANGE_LINE = re.compile(r"^\s*([0-9a-fA-F]+)-([0-9a-fA-F]+)\s*$")


def parse_range_lines(text: str) -> tuple[AddressRange, ...]:
    """Lines of inclusive hex ``start-end`` ranges, merged: ``/sys/kernel/kexec_crash_cma_ranges``
    (``4e000000-5dffffff`` on 7.2.13; empty without ``crashkernel=,cma``)."""
    ranges = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _RANGE_LINE.match(line)
        if m is None:
            raise ValueError(f"not a start-end range: {line!r}")
        ranges.append(AddressRange(int(m.group(1), 16), int(m.group(2), 16) + 1))
    return merge_ranges(ranges)


#: mm/cma.c, cma_declare_contiguous_nid() (7.2.13: ``cma: Reserved 256 MiB at
#: 0x000000004e000000``).  x86 aligns CMA areas to a 2 MiB pageblock: the MiB count is exact.
_CMA_RESERVED = re.compile(r"cma: Reserved (\d+) MiB at (0x[0-9a-fA-F]+)")
#: kernel/crash_reserve.c, reserve_crashkernel_cma() (6.17+): its closing line, whether it
#: got all it asked for (pr_info) or less (pr_warn, after halving the request).
_CRASH_CMA_SUMMARY = re.compile(
    r"crashkernel CMA (?:reserved: |reservation failed: \d+ MB requested, )"
    r"(?P<mb>\d+) MB (?:reserved )?in (?P<count>\d+) ranges")


def crash_cma_ranges(klog: str) -> tuple[AddressRange, ...]:
    """The ``crashkernel=SIZE,cma`` ranges from the kernel's boot log (empty without any).

    ``reserve_crashkernel_cma()`` (kernel/crash_reserve.c, 6.17+) declares each range with
    ``cma_declare_contiguous()``, which logs ``cma: Reserved N MiB at 0x...``, back to back
    (a failed attempt logs "Failed to reserve" instead), then sums them up as ``crashkernel
    CMA reserved: N MB in K ranges`` (or ``reservation failed: ..., N MB reserved in K
    ranges``): the ranges are the last K ``Reserved`` lines before it; ``cma=SIZE``'s own
    area logs one too, earlier.  They are nowhere in /proc/iomem, and x86's
    ``prepare_elf_headers()`` leaves them out of the dump like ``Crash kernel``.
    """
    summary = _CRASH_CMA_SUMMARY.search(klog)
    if summary is None:
        return ()
    count = int(summary["count"])
    reserved = _CMA_RESERVED.findall(klog[:summary.start()])
    if len(reserved) < count:
        raise ValueError(f"'{summary.group(0)}' but only {len(reserved)} 'cma: Reserved' lines")
    ranges = [AddressRange(int(at, 16), int(at, 16) + (int(mib) << 20))
              for mib, at in reserved[len(reserved) - count:]] if count else []
    # The summary adds up what was requested; an area can be larger (aligned up), never
    # smaller.
    if sum(r.size for r in ranges) < int(summary["mb"]) << 20:
        raise ValueError(f"the 'cma: Reserved' ranges {[str(r) for r in ranges]} do not add "
                         f"up to '{summary.group(0)}'")
    return merge_ranges(ranges)


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """Parse a sysfs CPU list such as ``0-3,6,8-9`` (empty string: no CPUs)."""
    cpus: list[int] = []
    text = text.strip()
    if not text:
        return ()
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return tuple(sorted(set(cpus)))


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The inverse of ``parse_cpu_list``: ``(0, 1, 2, 5)`` -> ``0-2,5``."""
    items = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(parts)


#: The guest's wall clock to the microsecond, printed without starting a program when the
#: shell can (busybox ash 1.34+ has $EPOCHREALTIME; under TCG every fork and exec costs
#: 10-50 ms, the most right after a snapshot restore), else by adjtimex(2) (busybox's
#: ``date`` has no %N).  ``parse_guest_clock`` reads either.
GUEST_CLOCK_COMMAND = ('[ -n "$EPOCHREALTIME" ] && echo "epochrealtime=$EPOCHREALTIME" '
                       '|| adjtimex')
_EPOCHREALTIME = re.compile(r"^epochrealtime=(\d+)[.,](\d{6})\s*$", re.MULTILINE)
_ADJTIMEX = re.compile(r"^\s*(status|time\.tv_sec|time\.tv_usec):\s*(\d+)", re.MULTILINE)
#: adjtimex(2) status bit: time.tv_usec holds nanoseconds (include/uapi/linux/timex.h).
_STA_NANO = 0x2000


def parse_guest_clock(report: str) -> float | None:
    """The wall clock in what ``GUEST_CLOCK_COMMAND`` printed (the shell's
    ``epochrealtime=`` line, or busybox ``adjtimex``'s report), in Unix seconds; None when
    the report has neither."""
    epoch = _EPOCHREALTIME.search(report)
    if epoch:
        return int(epoch.group(1)) + int(epoch.group(2)) * 1e-6
    fields = {k: int(v) for k, v in _ADJTIMEX.findall(report)}
    if not {"time.tv_sec", "time.tv_usec"} <= fields.keys():
        return None
    scale = 1e-9 if fields.get("status", 0) & _STA_NANO else 1e-6
    return fields["time.tv_sec"] + fields["time.tv_usec"] * scale
