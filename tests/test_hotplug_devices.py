"""Device argument builders, _OST classification and the event tracker."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import UsageError
from harness.hotplug import devices as hp
from harness.hotplug import onlining, tracker
from harness.units import GiB, MiB


def ost(device: str, source: int, status: int, slot_type: str = "DIMM",
        slot: str = "0") -> dict[str, Any]:
    return {"event": hp.OST_EVENT, "data": {"info": {
        "device": device, "source": source, "status": status, "slot": slot,
        "slot-type": slot_type}}}


@pytest.mark.parametrize("source,status,verdict", [
    (1, 0, hp.OstVerdict.SUCCESS),
    (1, 1, hp.OstVerdict.FAILURE),
    (3, 0x84, hp.OstVerdict.IN_PROGRESS),
    (0x103, 0x84, hp.OstVerdict.IN_PROGRESS),
    (3, 0x82, hp.OstVerdict.FAILURE),
    (0x200, 0x80, hp.OstVerdict.IN_PROGRESS),
    (1, 0x80, hp.OstVerdict.FAILURE),
])
def test_ost_verdict(source: int, status: int, verdict: hp.OstVerdict) -> None:
    assert hp.ost_verdict(source, status) is verdict


def test_describe_ost() -> None:
    assert hp.describe_ost(3, 0x82) == "eject request: device busy (0x82)"
    assert hp.describe_ost(0x200, 0x80) == "ospm insertion: insertion in progress (0x80)"
    assert "status 0x99" in hp.describe_ost(1, 0x99)


def test_dimm_and_cpu_arguments() -> None:
    assert hp.dimm_backend_args("dimm3", 256 * MiB) == {
        "qom-type": "memory-backend-ram", "id": "dimm3-mem", "size": 256 * MiB}
    assert hp.dimm_device_args("dimm3") == {"driver": "pc-dimm", "id": "dimm3",
                                            "memdev": "dimm3-mem"}
    assert hp.cpu_device_args("vcpu0", "max-x86_64-cpu", {"socket-id": 2, "core-id": 0}) == {
        "driver": "max-x86_64-cpu", "id": "vcpu0", "socket-id": 2, "core-id": 0}
    assert hp.virtio_mem_resize_args("vmem0", GiB) == {
        "path": "/machine/peripheral/vmem0", "property": "requested-size", "value": GiB}


def test_virtio_mem_qemu_args() -> None:
    assert hp.virtio_mem_qemu_args("vmem0", 2 * GiB) == (
        "-object", f"memory-backend-ram,id=vmem0-mem,size={2 * GiB}",
        "-device", "virtio-mem-pci,id=vmem0,memdev=vmem0-mem,requested-size=0")


def test_validate_memory_size() -> None:
    hp.validate_memory_size(256 * MiB, 128 * MiB, "dimm0")
    with pytest.raises(UsageError, match="not a multiple of the guest's memory block size 128M"):
        hp.validate_memory_size(192 * MiB, 128 * MiB, "dimm0")
    with pytest.raises(UsageError, match="positive"):
        hp.validate_memory_size(0, 128 * MiB, "dimm0")


def test_free_cpu_slots_lowest_first() -> None:
    reply = [{"type": "max-x86_64-cpu", "vcpus-count": 1,
              "props": {"socket-id": s, "core-id": 0, "thread-id": 0, "node-id": 0},
              **({"qom-path": f"/machine/unattached/device[{s}]"} if s < 2 else {})}
             for s in range(7, -1, -1)]
    slots = hp.free_cpu_slots(reply)
    assert [s.props_dict["socket-id"] for s in slots] == [2, 3, 4, 5, 6, 7]
    assert slots[0].driver == "max-x86_64-cpu"
    assert slots[0].label() == "core-id=0,node-id=0,socket-id=2,thread-id=0"


def test_cpu_indexes_of_hot_added_vcpus() -> None:
    reply = [{"cpu-index": 0, "qom-path": "/machine/unattached/device[0]"},
             {"cpu-index": 4, "qom-path": "/machine/peripheral/vcpu1"}]
    assert hp.cpu_indexes(reply) == {"vcpu1": 4}


def test_online_commands() -> None:
    assert "cpu$n/online" in onlining.online_cpus_command([3, 2, 3])
    assert "for n in 2 3;" in onlining.online_cpus_command([3, 2, 3])
    cmd = onlining.online_by_index_command([10, 2])
    assert "\\.(C002|C00A)$" in cmd and "firmware_node/path" in cmd
    assert onlining.acpi_cpu_name(26) == "C01A"


def test_tracker_plug_success_and_refusal() -> None:
    t = tracker.HotplugTracker()
    t.sent("dimm0", tracker.OpKind.PLUG, at=1.0)
    t.sent("dimm1", tracker.OpKind.PLUG, at=1.0)
    assert {op.device for op in t.pending()} == {"dimm0", "dimm1"}
    assert t.feed(ost("dimm0", 1, 0), at=1.5) is t.ops["dimm0"]
    assert t.ops["dimm0"].done_at == 1.5 and t.ops["dimm0"].latency() == 0.5
    t.feed(ost("dimm1", 1, 1), at=1.6)
    assert t.ops["dimm1"].refused == "device check: non specific failure (0x1)"
    assert t.pending() == [] and t.refused() == [t.ops["dimm1"]]
    assert "refused by the guest" in t.ops["dimm1"].describe()
    assert t.feed(ost("other", 1, 0)) is None


def test_tracker_unplug_waits_for_device_deleted() -> None:
    t = tracker.HotplugTracker()
    t.sent("dimm0", tracker.OpKind.UNPLUG, at=0.0)
    t.feed(ost("dimm0", 3, 0x84), at=0.1)          # in progress: keep waiting
    assert t.pending() and t.ops["dimm0"].refused is None
    assert "no DEVICE_DELETED" in t.ops["dimm0"].describe()
    t.feed({"event": hp.DELETED_EVENT, "data": {"device": "dimm0",
                                                "path": "/machine/peripheral/dimm0"}}, at=0.4)
    assert t.ops["dimm0"].done_at == 0.4


def test_tracker_unplug_refused_by_busy_guest() -> None:
    t = tracker.HotplugTracker()
    t.sent("dimm0", tracker.OpKind.UNPLUG)
    t.feed(ost("dimm0", 3, 0x82))
    assert t.ops["dimm0"].refused == "eject request: device busy (0x82)"


def test_tracker_resize_done_at_target_size() -> None:
    t = tracker.HotplugTracker()
    t.sent("vmem0", tracker.OpKind.RESIZE, target_size=GiB)
    t.feed({"event": hp.SIZE_CHANGE_EVENT, "data": {"id": "vmem0", "size": 512 * MiB}})
    assert t.pending() and t.ops["vmem0"].last_size == 512 * MiB
    t.feed({"event": hp.SIZE_CHANGE_EVENT, "data": {"id": "vmem0", "size": GiB}})
    assert not t.pending()
