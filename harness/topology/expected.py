"""The expected snapshot: what QEMU says the machine has, built from QMP replies.

``expected_from_qmp`` is pure (``live.expect`` sends the queries); ``device_memory_base``
is where QEMU's q35 machine puts the hot-plug region, which the diff and the verifier use
to tell hot-plugged RAM from boot RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..units import GiB
from .model import CpuSlot, MemoryDevice, Topology


def device_memory_base(boot_memory: int) -> int:
    """Where QEMU's q35 machine starts the hot-plug (device memory) region.

    QEMU's pc_q35_init keeps all of ``-m`` below 4 GiB when it is under 2.75 GiB and
    otherwise splits it at 2 GiB; the device region starts at the next 1 GiB boundary
    after the RAM above 4 GiB (hw/i386/pc.c, pc_memory_init).
    """
    above_4g = boot_memory - 0x80000000 if boot_memory >= 0xB0000000 else 0
    end = 4 * GiB + above_4g
    return (end + GiB - 1) // GiB * GiB


def expected_from_qmp(
    memory_devices: Sequence[dict[str, Any]],
    hotpluggable_cpus: Sequence[dict[str, Any]],
    cpus_fast: Sequence[dict[str, Any]],
    *,
    boot_memory: int | None,
    taken_at: float,
) -> Topology:
    """Build the expected ``Topology`` from QMP replies (pure; unit-tested without QEMU).

    ``memory_devices`` is ``query-memory-devices``, ``hotpluggable_cpus`` is
    ``query-hotpluggable-cpus`` and ``cpus_fast`` is ``query-cpus-fast``.
    """
    devices: list[MemoryDevice] = []
    for item in memory_devices:
        kind, data = item.get("type"), item.get("data", {})
        if kind == "dimm":
            devices.append(MemoryDevice(id=str(data.get("id") or ""), kind="dimm",
                                        addr=int(data["addr"]), size=int(data["size"]),
                                        slot=data.get("slot")))
        elif kind == "virtio-mem":
            devices.append(MemoryDevice(
                id=str(data.get("id") or ""), kind="virtio-mem", addr=int(data["memaddr"]),
                size=int(data["size"]), region_size=int(data["max-size"]),
                requested_size=int(data["requested-size"])))
        # nvdimm, virtio-pmem, sgx-epc...: not System RAM, not the harness's business.
    index_by_path = {str(c["qom-path"]): int(c["cpu-index"]) for c in cpus_fast}
    slots: list[CpuSlot] = []
    for item in hotpluggable_cpus:
        props = item.get("props", {})
        path = item.get("qom-path")
        slots.append(CpuSlot(
            driver=str(item.get("type", "")), socket_id=props.get("socket-id"),
            core_id=props.get("core-id"), thread_id=props.get("thread-id"),
            qom_path=str(path) if path else None,
            cpu_index=index_by_path.get(str(path)) if path else None))
    slots.sort(key=lambda s: (s.socket_id or 0, s.core_id or 0, s.thread_id or 0))
    return Topology(source="expected", taken_at=taken_at, memory_devices=tuple(devices),
                    cpu_slots=tuple(slots), boot_memory=boot_memory)
