"""The kernel's text formats: /proc/iomem and sysfs CPU lists (``0-3,6,8-9``).

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
