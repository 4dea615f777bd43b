"""The topology oracle's data model: what the guest should have and what it shows.

A ``Topology`` is a JSON-serialisable snapshot.  ``expected`` snapshots come from QMP
(``query-memory-devices``, ``query-hotpluggable-cpus``, ``query-cpus-fast``); ``observed``
ones from inside the guest (``/proc/iomem``, the CPU masks in sysfs, memory block states,
the crash_hotplug sysfs files).  The verifier compares a vmcore with the observed snapshot
taken just before the panic, and uses the QMP view to name DIMMs.

Address ranges are half-open ``[start, end)`` everywhere in the harness: /proc/iomem's
inclusive ends are converted once, when parsed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence


@dataclass(frozen=True, order=True)
class AddressRange:
    """A half-open physical address range ``[start, end)``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"bad address range [{self.start:#x}, {self.end:#x})")

    @property
    def size(self) -> int:
        return self.end - self.start

    def overlaps(self, other: "AddressRange") -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"[{self.start:#x}-{self.end:#x})"


def merge_ranges(ranges: Iterable[AddressRange]) -> tuple[AddressRange, ...]:
    """Sort and merge overlapping or adjacent ranges."""
    merged: list[AddressRange] = []
    for r in sorted(ranges):
        if r.size == 0:
            continue
        if merged and r.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = AddressRange(last.start, max(last.end, r.end))
        else:
            merged.append(r)
    return tuple(merged)


def subtract_ranges(
    ranges: Iterable[AddressRange], holes: Iterable[AddressRange]
) -> tuple[AddressRange, ...]:
    """``ranges`` minus every byte covered by ``holes``, merged."""
    result = list(merge_ranges(ranges))
    for hole in merge_ranges(holes):
        next_result: list[AddressRange] = []
        for r in result:
            if not r.overlaps(hole):
                next_result.append(r)
                continue
            if r.start < hole.start:
                next_result.append(AddressRange(r.start, hole.start))
            if hole.end < r.end:
                next_result.append(AddressRange(hole.end, r.end))
        result = next_result
    return merge_ranges(result)


def intersect_ranges(
    a: Iterable[AddressRange], b: Iterable[AddressRange]
) -> tuple[AddressRange, ...]:
    """Bytes covered by both ``a`` and ``b``, merged."""
    out: list[AddressRange] = []
    for x in merge_ranges(a):
        for y in merge_ranges(b):
            lo, hi = max(x.start, y.start), min(x.end, y.end)
            if lo < hi:
                out.append(AddressRange(lo, hi))
    return merge_ranges(out)


@dataclass(frozen=True)
class IomemEntry:
    """One line of /proc/iomem: its nesting depth, range and name."""

    depth: int
    range: AddressRange
    name: str


_IOMEM_LINE = re.compile(r"^(?P<indent> *)(?P<start>[0-9a-fA-F]+)-(?P<end>[0-9a-fA-F]+) : (?P<name>.*)$")


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


@dataclass(frozen=True)
class MemoryDevice:
    """A hot-plugged memory device as QEMU reports it (``query-memory-devices``)."""

    id: str
    kind: str            # "dimm" (pc-dimm) or "virtio-mem"
    addr: int
    size: int            # for virtio-mem: the size currently plugged
    slot: int | None = None

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.addr, self.addr + self.size)


@dataclass(frozen=True)
class CpuSlot:
    """A vCPU slot from ``query-hotpluggable-cpus`` (``qom_path`` set when occupied)."""

    driver: str
    socket_id: int | None
    core_id: int | None
    thread_id: int | None
    qom_path: str | None = None
    cpu_index: int | None = None   # from query-cpus-fast, for occupied slots


@dataclass(frozen=True)
class Topology:
    """A snapshot of the machine's CPUs and memory.

    ``source`` is ``"expected"`` (QMP) or ``"observed"`` (the guest); fields a source
    cannot know are left empty / None.  ``taken_at`` is host wall-clock time (Unix seconds),
    so it can be compared with VMCOREINFO's CRASHTIME.
    """

    source: str
    taken_at: float
    kernel_release: str | None = None
    system_ram: tuple[AddressRange, ...] = ()
    crash_kernel: tuple[AddressRange, ...] = ()
    cpus_possible: tuple[int, ...] = ()
    cpus_present: tuple[int, ...] = ()
    cpus_online: tuple[int, ...] = ()
    memory_block_size: int | None = None
    memory_blocks_online: tuple[int, ...] = ()
    memory_blocks_offline: tuple[int, ...] = ()
    crash_hotplug_cpu: int | None = None
    crash_hotplug_memory: int | None = None
    memory_devices: tuple[MemoryDevice, ...] = ()
    cpu_slots: tuple[CpuSlot, ...] = ()
    boot_memory: int | None = None       # bytes of -m base memory (expected only)
    notes: tuple[str, ...] = field(default=())

    def with_changes(self, **changes: Any) -> "Topology":
        return replace(self, **changes)

    # -- JSON ---------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["system_ram"] = [_range_json(r) for r in self.system_ram]
        d["crash_kernel"] = [_range_json(r) for r in self.crash_kernel]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> "Topology":
        def ranges(items: Iterable[Any]) -> tuple[AddressRange, ...]:
            return tuple(_range_from_json(x) for x in items)

        return cls(
            source=str(d["source"]),
            taken_at=float(d["taken_at"]),
            kernel_release=d.get("kernel_release"),
            system_ram=ranges(d.get("system_ram", ())),
            crash_kernel=ranges(d.get("crash_kernel", ())),
            cpus_possible=tuple(d.get("cpus_possible", ())),
            cpus_present=tuple(d.get("cpus_present", ())),
            cpus_online=tuple(d.get("cpus_online", ())),
            memory_block_size=d.get("memory_block_size"),
            memory_blocks_online=tuple(d.get("memory_blocks_online", ())),
            memory_blocks_offline=tuple(d.get("memory_blocks_offline", ())),
            crash_hotplug_cpu=d.get("crash_hotplug_cpu"),
            crash_hotplug_memory=d.get("crash_hotplug_memory"),
            memory_devices=tuple(MemoryDevice(**m) for m in d.get("memory_devices", ())),
            cpu_slots=tuple(CpuSlot(**c) for c in d.get("cpu_slots", ())),
            boot_memory=d.get("boot_memory"),
            notes=tuple(d.get("notes", ())),
        )

    @classmethod
    def load(cls, path: Path) -> "Topology":
        return cls.from_json_dict(json.loads(path.read_text()))


def _range_json(r: AddressRange) -> dict[str, str]:
    # Hex strings: JSON readers in other languages lose precision above 2**53.
    return {"start": hex(r.start), "end": hex(r.end)}


def _range_from_json(x: Any) -> AddressRange:
    if isinstance(x, dict):
        return AddressRange(int(str(x["start"]), 0), int(str(x["end"]), 0))
    start, end = x
    return AddressRange(int(start), int(end))
