"""The topology oracle: observed snapshots, expected snapshots from QMP, and the diff."""

from __future__ import annotations

from typing import Any

import pytest

from harness.topology import (
    AddressRange,
    MemoryDevice,
    Topology,
    device_memory_base,
    diff_topology,
    expected_from_qmp,
    observe_command,
    parse_observation,
)
from harness.units import GiB, MiB

S = "/sys/devices/system"

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
00100000-3fffffff : System RAM
  2e000000-3dffffff : Crash kernel
100000000-10fffffff : System RAM
110000000-11fffffff : System RAM
140000000-147ffffff : System RAM
  140000000-147ffffff : System RAM (virtio_mem)"""


def observation(*, iomem: str = IOMEM, online: str = "0-2", present: str = "0-2",
                blocks: dict[int, str] | None = None, firmware: dict[int, int] | None = None,
                crash_hotplug: bool = True) -> str:
    if blocks is None:
        blocks = {b: "online" for b in list(range(8)) + [32, 33, 34, 35, 40]}
    if firmware is None:
        firmware = {0: 0, 1: 1, 2: 2}
    lines = ["@@release", "6.12.107+deb13-cloud-amd64", "@@iomem", iomem,
             "@@cpus_possible", "0-7", "@@cpus_present", present, "@@cpus_online", online,
             "@@block_size", "8000000", "@@blocks"]
    lines += [f"{S}/memory/memory{b}/state:{s}" for b, s in sorted(blocks.items())]
    lines.append("@@cpu_firmware_ids")
    lines += [f"{S}/cpu/cpu{c}/firmware_node/path:\\_SB_.CPUS.C{i:03X}"
              for c, i in sorted(firmware.items())]
    if crash_hotplug:
        lines += ["@@crash_hotplug_cpu", "1", "@@crash_hotplug_memory", "1"]
    lines.append("@@end")
    return "\n".join(lines) + "\n"


def qmp_memory(*dimms: tuple[str, int, int], vmem: tuple[int, int, int] | None = None
               ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"type": "dimm", "data": {"id": i, "addr": a, "size": s, "slot": n, "node": 0,
                                  "memdev": f"/objects/{i}-mem", "hotplugged": True,
                                  "hotpluggable": True}}
        for n, (i, a, s) in enumerate(dimms)]
    if vmem is not None:
        addr, size, requested = vmem
        out.append({"type": "virtio-mem", "data": {
            "id": "vmem0", "memaddr": addr, "size": size, "requested-size": requested,
            "max-size": GiB, "block-size": 2 * MiB, "node": 0, "memdev": "/objects/vmem0-mem"}})
    return out


PATHS = {0: "/machine/unattached/device[0]", 1: "/machine/unattached/device[2]",
         2: "/machine/peripheral/vcpu0"}
# query-hotpluggable-cpus lists slots highest first; occupied ones carry a qom-path.
HOTPLUGGABLE: list[dict[str, Any]] = [
    {"props": {"core-id": 0, "thread-id": 0, "node-id": 0, "socket-id": s},
     "vcpus-count": 1, "type": "max-x86_64-cpu", **({"qom-path": PATHS[s]} if s in PATHS else {})}
    for s in range(7, -1, -1)]
CPUS_FAST = [{"cpu-index": i, "qom-path": PATHS[i], "props": HOTPLUGGABLE[7 - i]["props"],
              "thread-id": 100 + i, "target": "x86_64"} for i in range(3)]

DIMMS = (("dimm0", 4 * GiB, 256 * MiB), ("dimm1", 4 * GiB + 256 * MiB, 256 * MiB))
VMEM = (5 * GiB, 128 * MiB, 128 * MiB)


def expected(memory: list[dict[str, Any]] | None = None,
             hotpluggable: list[dict[str, Any]] | None = None,
             cpus: list[dict[str, Any]] | None = None) -> Topology:
    return expected_from_qmp(qmp_memory(*DIMMS, vmem=VMEM) if memory is None else memory,
                             HOTPLUGGABLE if hotpluggable is None else hotpluggable,
                             CPUS_FAST if cpus is None else cpus,
                             boot_memory=GiB, taken_at=1.0)


def test_observe_command_has_every_section_and_skips_crash_hotplug_on_request() -> None:
    full = observe_command()
    for section in ("release", "iomem", "cpus_possible", "cpus_present", "cpus_online",
                    "block_size", "blocks", "cpu_firmware_ids", "crash_cma", "clock",
                    "crash_hotplug_cpu", "crash_hotplug_memory", "end"):
        assert f"echo @@{section};" in full or f"echo @@{section}" in full
    assert "crash_hotplug" not in observe_command(crash_hotplug=False)
    assert "adjtimex" not in observe_command(crash_hotplug=False)   # not in settle polls


def test_parse_observation() -> None:
    topo = parse_observation(observation(blocks={0: "online", 32: "online", 33: "offline"}),
                             taken_at=5.0)
    assert topo.source == "observed" and topo.taken_at == 5.0
    assert topo.kernel_release == "6.12.107+deb13-cloud-amd64"
    assert topo.system_ram[0] == AddressRange(0x1000, 0x9fc00)
    assert AddressRange(4 * GiB, 4 * GiB + 512 * MiB) in topo.system_ram
    assert topo.crash_kernel == (AddressRange(0x2e000000, 0x3e000000),)
    assert topo.cpus_possible == tuple(range(8)) and topo.cpus_online == (0, 1, 2)
    assert topo.memory_block_size == 128 * MiB
    assert topo.memory_blocks_online == (0, 32) and topo.memory_blocks_offline == (33,)
    assert topo.cpu_firmware_ids == ((0, 0), (1, 1), (2, 2))
    assert topo.crash_hotplug_cpu == 1 and topo.crash_hotplug_memory == 1
    again = Topology.from_json_dict(topo.to_json_dict())
    assert again == topo


def test_parse_observation_without_crash_hotplug_and_truncated() -> None:
    topo = parse_observation(observation(crash_hotplug=False), taken_at=0)
    assert topo.crash_hotplug_cpu is None and topo.crash_hotplug_memory is None
    with pytest.raises(ValueError, match="truncated"):
        parse_observation(observation().replace("@@end", ""), taken_at=0)


def test_firmware_ids_are_hex() -> None:
    text = observation(firmware={0: 0, 9: 0x1A})
    assert parse_observation(text, taken_at=0).cpu_firmware_ids == ((0, 0), (9, 26))


def test_expected_from_qmp() -> None:
    topo = expected()
    assert topo.source == "expected" and topo.boot_memory == GiB
    dimm0, dimm1, vmem = topo.memory_devices
    assert dimm0.kind == "dimm" and dimm0.range == AddressRange(4 * GiB, 4 * GiB + 256 * MiB)
    assert dimm1.slot == 1
    assert vmem.kind == "virtio-mem" and vmem.region_size == GiB and vmem.requested_size == VMEM[2]
    assert [s.socket_id for s in topo.cpu_slots] == list(range(8))
    occupied = [s for s in topo.cpu_slots if s.qom_path]
    assert [s.cpu_index for s in occupied] == [0, 1, 2]
    assert Topology.from_json_dict(topo.to_json_dict()) == topo


def test_diff_clean() -> None:
    d = diff_topology(expected(), parse_observation(observation(), taken_at=2.0))
    assert d.ok, d.summary()
    assert d.summary() == "the guest shows exactly what QEMU has"
    assert d.to_json_dict()["ok"] is True


def test_diff_dimm_not_ram_and_blocks_offline() -> None:
    iomem = IOMEM.replace("110000000-11fffffff : System RAM\n", "")
    blocks = {b: "online" for b in list(range(8)) + [32, 33, 40]}
    blocks[34] = "offline"
    d = diff_topology(expected(), parse_observation(observation(iomem=iomem, blocks=blocks),
                                                    taken_at=0))
    by_kind = {m.kind: m for m in d.mismatches}
    assert set(by_kind) == {"memory-not-ram", "memory-blocks-offline"}
    assert by_kind["memory-not-ram"].subject == "dimm1"
    assert "[0x110000000-0x120000000)" in by_kind["memory-not-ram"].detail
    assert "memory34 offline" in by_kind["memory-blocks-offline"].detail
    assert "memory35 absent" in by_kind["memory-blocks-offline"].detail


def test_diff_removed_device_still_ram_and_unexpected_ram() -> None:
    gone = MemoryDevice("dimm1", "dimm", 4 * GiB + 256 * MiB, 256 * MiB)
    only_dimm0 = qmp_memory(DIMMS[0], vmem=VMEM)
    d = diff_topology(expected(memory=only_dimm0),
                      parse_observation(observation(), taken_at=0), removed=[gone])
    assert {m.kind for m in d.mismatches} == {"removed-still-ram", "removed-blocks-present"}
    # The same stale range without knowing it was removed: RAM nobody accounts for.
    d = diff_topology(expected(memory=only_dimm0), parse_observation(observation(), taken_at=0))
    assert [m.kind for m in d.mismatches] == ["unexpected-ram"]


def test_diff_removed_range_reused_by_a_new_device_is_fine() -> None:
    gone = MemoryDevice("old", "dimm", 4 * GiB, 512 * MiB)
    d = diff_topology(expected(), parse_observation(observation(), taken_at=0), removed=[gone])
    assert d.ok, d.summary()


def test_diff_virtio_mem() -> None:
    pending = qmp_memory(*DIMMS, vmem=(5 * GiB, 128 * MiB, 512 * MiB))
    d = diff_topology(expected(memory=pending), parse_observation(observation(), taken_at=0))
    assert [m.kind for m in d.mismatches] == ["virtio-mem-pending"]
    more = qmp_memory(*DIMMS, vmem=(5 * GiB, 256 * MiB, 256 * MiB))
    d = diff_topology(expected(memory=more), parse_observation(observation(), taken_at=0))
    assert [m.kind for m in d.mismatches] == ["virtio-mem-size"]
    assert "0x8000000 of it" in d.mismatches[0].detail


def test_diff_cpus_by_acpi_object() -> None:
    missing = parse_observation(observation(present="0-1", online="0-1",
                                            firmware={0: 0, 1: 1}), taken_at=0)
    d = diff_topology(expected(), missing)
    assert [m.kind for m in d.mismatches] == ["cpu-missing"]
    assert "vCPU 2 (socket 2, /machine/peripheral/vcpu0)" in d.mismatches[0].subject
    offline = parse_observation(observation(online="0-1"), taken_at=0)
    assert [m.kind for m in diff_topology(expected(), offline).mismatches] == ["cpu-offline"]
    assert diff_topology(expected(), offline, cpus_offline={2}).ok
    online = parse_observation(observation(), taken_at=0)
    d = diff_topology(expected(), online, cpus_offline={2})
    assert [m.kind for m in d.mismatches] == ["cpu-online-unexpected"]
    extra = parse_observation(observation(present="0-3", online="0-3",
                                          firmware={0: 0, 1: 1, 2: 2, 3: 5}), taken_at=0)
    d = diff_topology(expected(), extra)
    assert [m.kind for m in d.mismatches] == ["cpu-extra"] and "C005" in d.mismatches[0].detail


def test_diff_cpus_by_count_without_acpi_links() -> None:
    topo = parse_observation(observation(firmware={}, online="0-1"), taken_at=0)
    d = diff_topology(expected(), topo)
    assert [m.kind for m in d.mismatches] == ["cpu-online-count"]
    topo = parse_observation(observation(firmware={}, present="0-1", online="0-1"), taken_at=0)
    assert {m.kind for m in diff_topology(expected(), topo).mismatches} == {
        "cpu-count", "cpu-online-count"}


@pytest.mark.parametrize("boot,base", [
    (GiB, 4 * GiB), (2 * GiB, 4 * GiB), (3 * GiB, 5 * GiB), (4 * GiB + 512 * MiB, 7 * GiB)])
def test_device_memory_base(boot: int, base: int) -> None:
    assert device_memory_base(boot) == base
