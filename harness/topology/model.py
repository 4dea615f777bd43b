"""The snapshot data model: ``Topology``, its memory devices and vCPU slots, and its JSON.

A ``Topology`` is a JSON-serialisable snapshot of the machine's CPUs and memory, either
``expected`` (built from QMP replies, see ``expected``) or ``observed`` (built from the
guest's own view, see ``observed``).  Pure data: nothing here talks to QEMU or a guest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .ranges import AddressRange, merge_ranges


@dataclass(frozen=True)
class MemoryDevice:
    """A hot-plugged memory device as QEMU reports it (``query-memory-devices``)."""

    id: str
    kind: str            # "dimm" (pc-dimm) or "virtio-mem"
    addr: int
    size: int            # for virtio-mem: the size currently plugged
    slot: int | None = None
    region_size: int | None = None      # virtio-mem: the whole device region (max-size)
    requested_size: int | None = None   # virtio-mem: what the host asked the guest to plug

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.addr, self.addr + self.size)

    @property
    def extent(self) -> AddressRange:
        """The address space the device occupies: a DIMM's range, a virtio-mem region."""
        return AddressRange(self.addr, self.addr + max(self.size, self.region_size or 0))


def check_devices_disjoint(devices: Sequence[MemoryDevice]) -> None:
    """Raise ``ValueError`` naming two memory devices whose address spaces overlap.

    QEMU places every device in its own part of the device-memory region, so overlapping
    devices describe no machine: a snapshot that has them was edited or corrupted, and
    every comparison made with it would blame the kernel for the snapshot's fault.
    """
    placed = sorted((d for d in devices if d.extent.size), key=lambda d: (d.addr, d.extent.end))
    widest: MemoryDevice | None = None
    for dev in placed:
        if widest is not None and dev.addr < widest.extent.end:
            raise ValueError(f"memory devices {widest.id or '(no id)'} {widest.extent} and "
                             f"{dev.id or '(no id)'} {dev.extent} overlap")
        if widest is None or dev.extent.end > widest.extent.end:
            widest = dev


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
    # crashkernel=SIZE,cma's ranges (observed only; Linux 6.17+): System RAM the dump must
    # leave out like Crash kernel, though /proc/iomem does not show them (``crash_reserved``).
    crash_cma: tuple[AddressRange, ...] = ()
    #: The guest's wall clock when observed (Unix seconds; observed only): ``taken_at``
    #: minus it is the host's lead on the guest's clock.
    guest_clock: float | None = None
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
    # (guest CPU number, QEMU cpu-index) pairs (observed only), read from the name of each
    # CPU's ACPI object: QEMU calls them \_SB.CPUS.Cxxx with xxx the cpu-index in hex
    # (hw/acpi/cpu.c, CPU_NAME_FMT).  This is how a guest CPU is matched to its vCPU.
    cpu_firmware_ids: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        # Refused when built (from QMP, JSON or replace()) rather than reported by each
        # consumer: the diff and the verifier would otherwise each invent a verdict for it.
        check_devices_disjoint(self.memory_devices)

    def with_changes(self, **changes: Any) -> Topology:
        return replace(self, **changes)

    @property
    def crash_reserved(self) -> tuple[AddressRange, ...]:
        """What the dump must not describe: ``Crash kernel`` and the crashkernel CMA ranges.

        The capture kernel runs in both, so the first kernel's pages there are gone: x86's
        prepare_elf_headers() excludes crashk_res, crashk_low_res and, since 6.17,
        crashk_cma_ranges from the elfcorehdr.
        """
        return merge_ranges(self.crash_kernel + self.crash_cma)

    # -- JSON ---------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["system_ram"] = [_range_json(r) for r in self.system_ram]
        d["crash_kernel"] = [_range_json(r) for r in self.crash_kernel]
        d["crash_cma"] = [_range_json(r) for r in self.crash_cma]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Topology:
        def ranges(items: Iterable[Any]) -> tuple[AddressRange, ...]:
            return tuple(_range_from_json(x) for x in items)

        return cls(
            source=str(d["source"]),
            taken_at=float(d["taken_at"]),
            kernel_release=d.get("kernel_release"),
            system_ram=ranges(d.get("system_ram", ())),
            crash_kernel=ranges(d.get("crash_kernel", ())),
            crash_cma=ranges(d.get("crash_cma", ())),
            guest_clock=d.get("guest_clock"),
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
            cpu_firmware_ids=tuple((int(c), int(u)) for c, u in d.get("cpu_firmware_ids", ())),
        )

    @classmethod
    def load(cls, path: Path) -> Topology:
        return cls.from_json_dict(json.loads(path.read_text()))


def _range_json(r: AddressRange) -> dict[str, str]:
    # Hex strings: JSON readers in other languages lose precision above 2**53.
    return {"start": hex(r.start), "end": hex(r.end)}


def _range_from_json(x: Any) -> AddressRange:
    if isinstance(x, dict):
        return AddressRange(int(str(x["start"]), 0), int(str(x["end"]), 0))
    start, end = x
    return AddressRange(int(start), int(end))

