"""Hot-plug devices: DIMMs, virtio-mem and vCPUs through QMP, and the guest's answers.

QEMU's ``device_add`` returns long before the guest has done anything, and it returns
success even when the guest then drops the device (KNOWLEDGE.md: the TCG lapic quirk).
So every operation here has two halves: the QMP commands (pure argument builders plus
thin senders) and the evidence that the guest took it:

* ``ACPI_DEVICE_OST``: the guest's ``_OST`` report for a DIMM or vCPU slot; a failure
  status is a clear refusal, reported at once and never waited out as a timeout;
* ``DEVICE_DELETED``: the end of an unplug (the guest ejected the device);
* ``MEMORY_DEVICE_SIZE_CHANGE``: virtio-mem plugged or unplugged memory.

``tracker.HotplugTracker`` turns that event stream into per-device state; the swarm
runner (``harness.hotplug.runner``) feeds it and checks the guest's own view with the
topology oracle.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import QmpError, UsageError
from ..units import size_option

if TYPE_CHECKING:
    from ..guest.qmp import Qmp

OST_EVENT = "ACPI_DEVICE_OST"
DELETED_EVENT = "DEVICE_DELETED"
SIZE_CHANGE_EVENT = "MEMORY_DEVICE_SIZE_CHANGE"
#: Every QMP event a hot-plug operation can end with (listen for these before acting).
HOTPLUG_EVENTS = (OST_EVENT, DELETED_EVENT, SIZE_CHANGE_EVENT)

#: The memory backend behind a device gets the device's id plus this suffix.
BACKEND_SUFFIX = "-mem"


class OstSource(enum.IntEnum):
    """``_OST`` source event codes (ACPI 6.5, 6.3.5; Linux include/acpi/actypes.h)."""

    DEVICE_CHECK = 0x1          # QEMU notifies insertion with Device Check
    EJECT_REQUEST = 0x3
    OSPM_EJECT = 0x103
    OSPM_INSERTION = 0x200


class OstStatus(enum.IntEnum):
    """``_OST`` status codes as Linux reports them (include/acpi/acpi_bus.h)."""

    SUCCESS = 0x0
    NON_SPECIFIC_FAILURE = 0x1
    UNRECOGNIZED_NOTIFY = 0x2
    # For ejection requests (source 0x3 / 0x103):
    EJECT_NOT_SUPPORTED = 0x80
    DEVICE_IN_USE = 0x81
    DEVICE_BUSY = 0x82
    EJECT_DEPENDENCY_BUSY = 0x83
    EJECT_IN_PROGRESS = 0x84


_INSERT_IN_PROGRESS = 0x80   # for source 0x200 the same number means "in progress"


class OstVerdict(enum.Enum):
    """How one ``_OST`` report ends an operation."""

    SUCCESS = "success"
    IN_PROGRESS = "in-progress"
    FAILURE = "failure"


def ost_verdict(source: int, status: int) -> OstVerdict:
    """Classify one ``_OST`` report: done, still going, or refused."""
    if status == OstStatus.SUCCESS:
        return OstVerdict.SUCCESS
    if source in (OstSource.EJECT_REQUEST, OstSource.OSPM_EJECT) and \
            status == OstStatus.EJECT_IN_PROGRESS:
        return OstVerdict.IN_PROGRESS
    if source == OstSource.OSPM_INSERTION and status == _INSERT_IN_PROGRESS:
        return OstVerdict.IN_PROGRESS
    return OstVerdict.FAILURE


def describe_ost(source: int, status: int) -> str:
    """``_OST`` codes in words, for error messages."""
    try:
        src = OstSource(source).name.lower().replace("_", " ")
    except ValueError:
        src = f"source {source:#x}"
    try:
        st = OstStatus(status).name.lower().replace("_", " ")
    except ValueError:
        st = f"status {status:#x}"
    if source == OstSource.OSPM_INSERTION and status == _INSERT_IN_PROGRESS:
        st = "insertion in progress"
    return f"{src}: {st} ({status:#x})"


# == Pure argument builders =============================================================

def backend_id(device_id: str) -> str:
    return device_id + BACKEND_SUFFIX


def validate_memory_size(size: int, block_size: int, what: str) -> None:
    """Refuse sizes the guest could only half use: memory comes online per block."""
    if size <= 0:
        raise UsageError(f"{what}: size must be positive, not {size}")
    if size % block_size:
        raise UsageError(f"{what}: {size_option(size)} is not a multiple of the guest's "
                         f"memory block size {size_option(block_size)}")


def dimm_backend_args(device_id: str, size: int) -> dict[str, Any]:
    """``object-add`` arguments for a DIMM's RAM backend."""
    return {"qom-type": "memory-backend-ram", "id": backend_id(device_id), "size": size}


def dimm_device_args(device_id: str) -> dict[str, Any]:
    """``device_add`` arguments for a ``pc-dimm`` on the backend of the same name."""
    return {"driver": "pc-dimm", "id": device_id, "memdev": backend_id(device_id)}


def cpu_device_args(device_id: str, driver: str, props: Mapping[str, int]) -> dict[str, Any]:
    """``device_add`` arguments for a vCPU in the slot ``props`` (from query-hotpluggable-cpus)."""
    return {"driver": driver, "id": device_id, **dict(props)}


def virtio_mem_resize_args(device_id: str, size: int) -> dict[str, Any]:
    """``qom-set`` arguments that ask the guest to grow or shrink a virtio-mem device."""
    return {"path": f"/machine/peripheral/{device_id}", "property": "requested-size",
            "value": size}


def virtio_mem_qemu_args(device_id: str, max_size: int, *, requested: int = 0) -> tuple[str, ...]:
    """QEMU arguments for a virtio-mem device present from boot (``GuestConfig.qemu_args``).

    The device is cold-plugged: q35's root bus cannot take a hot-plugged PCI device, and
    the interesting part, the guest plugging and unplugging memory blocks as
    ``requested-size`` changes, is the same either way.  Its region counts against maxmem.
    """
    device = (f"virtio-mem-pci,id={device_id},memdev={backend_id(device_id)},"
              f"requested-size={requested}")
    return ("-object", f"memory-backend-ram,id={backend_id(device_id)},size={max_size}",
            "-device", device)


@dataclass(frozen=True)
class FreeCpuSlot:
    """An empty vCPU slot: the driver type and the topology ids ``device_add`` needs."""

    driver: str
    props: tuple[tuple[str, int], ...]

    @property
    def props_dict(self) -> dict[str, int]:
        return dict(self.props)

    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.props)


def free_cpu_slots(hotpluggable: Sequence[Mapping[str, Any]]) -> list[FreeCpuSlot]:
    """Empty slots from ``query-hotpluggable-cpus``, lowest socket/core/thread first."""
    slots = []
    for item in hotpluggable:
        if item.get("qom-path"):
            continue
        props = tuple(sorted((str(k), int(v)) for k, v in item.get("props", {}).items()))
        slots.append(FreeCpuSlot(str(item["type"]), props))
    order = ("socket-id", "die-id", "cluster-id", "core-id", "thread-id")
    slots.sort(key=lambda s: tuple(s.props_dict.get(k, 0) for k in order))
    return slots


def peripheral_path(device_id: str) -> str:
    """The QOM path of a device created with ``device_add id=...``."""
    return f"/machine/peripheral/{device_id}"


def cpu_indexes(cpus_fast: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{device id: cpu-index}`` for hot-added vCPUs, from ``query-cpus-fast``."""
    prefix = "/machine/peripheral/"
    return {str(c["qom-path"])[len(prefix):]: int(c["cpu-index"]) for c in cpus_fast
            if str(c.get("qom-path", "")).startswith(prefix)}


# == Thin QMP senders ====================================================================

def plug_dimm(qmp: Qmp, device_id: str, size: int) -> None:
    """Create the backend and the ``pc-dimm``; undo the backend if QEMU refuses the DIMM."""
    qmp.execute("object-add", dimm_backend_args(device_id, size))
    try:
        qmp.execute("device_add", dimm_device_args(device_id))
    except QmpError:
        qmp.execute("object-del", {"id": backend_id(device_id)})
        raise


def plug_cpu(qmp: Qmp, device_id: str, slot: FreeCpuSlot) -> None:
    qmp.execute("device_add", cpu_device_args(device_id, slot.driver, slot.props_dict))


def unplug(qmp: Qmp, device_id: str) -> None:
    """Ask the guest to eject ``device_id`` (completion is ``DEVICE_DELETED``)."""
    qmp.execute("device_del", {"id": device_id})


def drop_backend(qmp: Qmp, device_id: str) -> None:
    """Free a removed DIMM's RAM backend (QEMU keeps it until told)."""
    qmp.execute("object-del", {"id": backend_id(device_id)})


def resize_virtio_mem(qmp: Qmp, device_id: str, size: int) -> None:
    qmp.execute("qom-set", virtio_mem_resize_args(device_id, size))
