"""The diff: every way the guest's view (``observed``) differs from QEMU's (``expected``).

``diff_topology`` compares the two snapshots of one moment and returns a ``TopologyDiff``
of ``Mismatch`` records, memory first (DIMMs and virtio-mem devices in QEMU's order, then
removed devices, then RAM no device accounts for), then CPUs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .expected import device_memory_base
from .kernel_formats import format_cpu_list
from .model import CpuSlot, MemoryDevice, Topology
from .ranges import AddressRange, intersect_ranges, subtract_ranges


@dataclass(frozen=True)
class Mismatch:
    """One way the guest's view differs from QEMU's.

    ``kind`` is one of: ``memory-not-ram``, ``memory-blocks-offline``, ``virtio-mem-pending``,
    ``virtio-mem-size``, ``removed-still-ram``, ``removed-blocks-present``, ``unexpected-ram``,
    ``cpu-missing``, ``cpu-offline``, ``cpu-online-unexpected``, ``cpu-extra``, ``cpu-count``,
    ``cpu-online-count``, ``cpu-not-possible``.
    """

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.detail}"


@dataclass(frozen=True)
class TopologyDiff:
    """Every mismatch between an expected and an observed snapshot; empty when they agree."""

    mismatches: tuple[Mismatch, ...] = ()
    expected_taken_at: float | None = None
    observed_taken_at: float | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def kinds(self) -> set[str]:
        return {m.kind for m in self.mismatches}

    def summary(self) -> str:
        if self.ok:
            return "the guest shows exactly what QEMU has"
        return "\n".join(f"  - {m}" for m in self.mismatches)

    def to_json_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "mismatches": [asdict(m) for m in self.mismatches],
                "expected_taken_at": self.expected_taken_at,
                "observed_taken_at": self.observed_taken_at}


def diff_topology(
    expected: Topology,
    observed: Topology,
    *,
    removed: Sequence[MemoryDevice] = (),
    cpus_offline: Collection[int] = (),
) -> TopologyDiff:
    """Name every mismatch between QEMU's view (``expected``) and the guest's (``observed``).

    ``removed`` lists memory devices unplugged earlier (as they were when plugged): their
    ranges must be gone from the guest.  ``cpus_offline`` holds the QEMU cpu-index of vCPUs
    deliberately left offline.
    """
    mismatches = (_memory_mismatches(expected, observed, removed)
                  + _cpu_mismatches(expected, observed, cpus_offline))
    return TopologyDiff(tuple(mismatches), expected.taken_at, observed.taken_at)


# == Memory ============================================================================

@dataclass(frozen=True)
class _GuestMemory:
    """The observed snapshot's memory, in the form the memory checks look things up in."""

    ram: tuple[AddressRange, ...]
    block_size: int | None
    online: frozenset[int]
    offline: frozenset[int]

    @classmethod
    def of(cls, observed: Topology) -> _GuestMemory:
        return cls(observed.system_ram, observed.memory_block_size,
                   frozenset(observed.memory_blocks_online),
                   frozenset(observed.memory_blocks_offline))


def _fmt_ranges(ranges: Iterable[AddressRange]) -> str:
    return ", ".join(str(r) for r in ranges)


def _blocks(r: AddressRange, block_size: int) -> range:
    return range(r.start // block_size, (r.end + block_size - 1) // block_size)


def _total(ranges: Iterable[AddressRange]) -> int:
    return sum(r.size for r in ranges)


def _device_region(dev: MemoryDevice) -> AddressRange:
    """A device's whole region: a virtio-mem device's max-size, else its plugged size."""
    return AddressRange(dev.addr, dev.addr + (dev.region_size or dev.size))


def _memory_mismatches(expected: Topology, observed: Topology,
                       removed: Sequence[MemoryDevice]) -> list[Mismatch]:
    guest = _GuestMemory.of(observed)
    out: list[Mismatch] = []
    for dev in expected.memory_devices:
        if dev.kind == "dimm":
            out += _dimm_mismatches(dev, guest)
        elif dev.kind == "virtio-mem":
            out += _virtio_mem_mismatches(dev, guest)
    current = [d.extent for d in expected.memory_devices]
    for dev in removed:
        out += _removed_device_mismatches(dev, current, guest)
    if expected.boot_memory is not None:
        out += _stray_ram_mismatches(expected.boot_memory, current, removed, guest)
    return out


def _dimm_mismatches(dev: MemoryDevice, guest: _GuestMemory) -> list[Mismatch]:
    out: list[Mismatch] = []
    missing = subtract_ranges([dev.range], guest.ram)
    if missing:
        out.append(Mismatch("memory-not-ram", dev.id,
                            f"DIMM {dev.range} is not System RAM in the guest: "
                            f"{_fmt_ranges(missing)} missing"))
    bs = guest.block_size
    if bs:
        bad = [b for b in _blocks(dev.range, bs) if b not in guest.online]
        if bad:
            states = ", ".join(f"memory{b} {'offline' if b in guest.offline else 'absent'}"
                               for b in bad)
            out.append(Mismatch("memory-blocks-offline", dev.id,
                                f"{len(bad)} of {len(_blocks(dev.range, bs))} memory "
                                f"blocks not online: {states}"))
    return out


def _virtio_mem_mismatches(dev: MemoryDevice, guest: _GuestMemory) -> list[Mismatch]:
    out: list[Mismatch] = []
    if dev.requested_size is not None and dev.requested_size != dev.size:
        out.append(Mismatch("virtio-mem-pending", dev.id,
                            f"requested-size {dev.requested_size:#x} but the guest has "
                            f"plugged {dev.size:#x}"))
    region = _device_region(dev)
    shown = _total(intersect_ranges([region], guest.ram))
    if shown != dev.size:
        out.append(Mismatch("virtio-mem-size", dev.id,
                            f"QEMU reports {dev.size:#x} plugged in {region}; the guest "
                            f"shows {shown:#x} of it as System RAM"))
    return out


def _removed_device_mismatches(dev: MemoryDevice, current: Sequence[AddressRange],
                               guest: _GuestMemory) -> list[Mismatch]:
    out: list[Mismatch] = []
    # A later device may sit where a removed one was: only the rest must be gone.
    gone = subtract_ranges([_device_region(dev)], current)
    still = intersect_ranges(gone, guest.ram)
    if still:
        out.append(Mismatch("removed-still-ram", dev.id,
                            f"removed from QEMU but {_fmt_ranges(still)} is still System RAM"))
    bs = guest.block_size
    if bs:
        registered = guest.online | guest.offline
        left = sorted({b for r in gone for b in _blocks(r, bs) if b in registered})
        if left:
            out.append(Mismatch("removed-blocks-present", dev.id,
                                f"memory blocks still registered: "
                                f"{', '.join(f'memory{b}' for b in left)}"))
    return out


def _stray_ram_mismatches(boot_memory: int, current: Sequence[AddressRange],
                          removed: Sequence[MemoryDevice],
                          guest: _GuestMemory) -> list[Mismatch]:
    base = device_memory_base(boot_memory)
    hot_ram = intersect_ranges(guest.ram, [AddressRange(base, 1 << 62)])
    stray = subtract_ranges(hot_ram, current)
    # A removed device's leftovers are already reported by _removed_device_mismatches.
    stray = subtract_ranges(stray, [_device_region(d) for d in removed])
    if not stray:
        return []
    return [Mismatch("unexpected-ram", "device-memory",
                     f"System RAM no QEMU memory device accounts for: {_fmt_ranges(stray)}")]


# == CPUs ==============================================================================

def _cpu_mismatches(expected: Topology, observed: Topology,
                    cpus_offline: Collection[int]) -> list[Mismatch]:
    out = _cpus_not_possible(observed)
    occupied = [s for s in expected.cpu_slots if s.qom_path]
    if not occupied:
        return out
    if observed.cpu_firmware_ids and all(s.cpu_index is not None for s in occupied):
        return out + _matched_cpu_mismatches(occupied, observed, cpus_offline)
    # No ACPI object links (not QEMU's ACPI tables?): all that is left is to count.
    return out + _counted_cpu_mismatches(occupied, observed, cpus_offline)


def _cpus_not_possible(observed: Topology) -> list[Mismatch]:
    if not observed.cpus_possible:
        return []
    beyond = set(observed.cpus_present) - set(observed.cpus_possible)
    if not beyond:
        return []
    return [Mismatch("cpu-not-possible", format_cpu_list(beyond),
                     "present but not in the possible mask")]


def _matched_cpu_mismatches(occupied: Sequence[CpuSlot], observed: Topology,
                            cpus_offline: Collection[int]) -> list[Mismatch]:
    """Each vCPU checked as the guest CPU whose ACPI object names its cpu-index."""
    out: list[Mismatch] = []
    present, online = set(observed.cpus_present), set(observed.cpus_online)
    by_index = {index: cpu for cpu, index in observed.cpu_firmware_ids}
    for slot in occupied:
        assert slot.cpu_index is not None
        name = f"vCPU {slot.cpu_index} (socket {slot.socket_id}, {slot.qom_path})"
        cpu = by_index.get(slot.cpu_index)
        if cpu is None or cpu not in present:
            out.append(Mismatch("cpu-missing", name, "QEMU has it; the guest does not show "
                                                     "it present"))
        elif cpu not in online and slot.cpu_index not in cpus_offline:
            out.append(Mismatch("cpu-offline", name, f"guest cpu{cpu} is present but offline"))
        elif cpu in online and slot.cpu_index in cpus_offline:
            out.append(Mismatch("cpu-online-unexpected", name,
                                f"guest cpu{cpu} is online but was to be left offline"))
    known = {s.cpu_index for s in occupied}
    for cpu, index in observed.cpu_firmware_ids:
        if cpu in present and index not in known:
            out.append(Mismatch("cpu-extra", f"cpu{cpu}",
                                f"the guest shows it present (ACPI object C{index:03X}) "
                                "but QEMU has no such vCPU"))
    return out


def _counted_cpu_mismatches(occupied: Sequence[CpuSlot], observed: Topology,
                            cpus_offline: Collection[int]) -> list[Mismatch]:
    """Without ACPI links, only the numbers of present and online CPUs can be compared."""
    out: list[Mismatch] = []
    present, online = set(observed.cpus_present), set(observed.cpus_online)
    if len(present) != len(occupied):
        out.append(Mismatch("cpu-count", "cpus", f"QEMU has {len(occupied)} vCPUs; the guest "
                                                 f"shows {len(present)} present "
                                                 f"({format_cpu_list(present)})"))
    want_online = len(occupied) - len(cpus_offline)
    if len(online) != want_online:
        out.append(Mismatch("cpu-online-count", "cpus",
                            f"{want_online} vCPUs should be online; the guest shows "
                            f"{len(online)} ({format_cpu_list(online)})"))
    return out
