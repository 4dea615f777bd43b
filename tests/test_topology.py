import json
import subprocess
import sys

import pytest

from harness.topology import (
    AddressRange,
    CpuSlot,
    MemoryDevice,
    Topology,
    crash_kernel_ranges,
    format_cpu_list,
    intersect_ranges,
    merge_ranges,
    parse_cpu_list,
    parse_iomem,
    subtract_ranges,
    system_ram_ranges,
)

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-3ffdffff : System RAM
  01000000-01ffffff : Kernel code
  2f000000-3effffff : Crash kernel
3ffe0000-3fffffff : Reserved
100000000-10fffffff : System RAM
  100000000-10fffffff : System RAM (virtio_mem)
"""


def test_parse_iomem_ranges_are_half_open() -> None:
    entries = parse_iomem(IOMEM)
    assert entries[1].range == AddressRange(0x1000, 0x9fc00)
    assert entries[6].depth == 1 and entries[6].name == "Kernel code"


def test_system_ram_and_crash_kernel() -> None:
    entries = parse_iomem(IOMEM)
    assert system_ram_ranges(entries) == (
        AddressRange(0x1000, 0x9fc00), AddressRange(0x100000, 0x3ffe0000),
        AddressRange(0x100000000, 0x110000000))
    assert crash_kernel_ranges(entries) == (AddressRange(0x2f000000, 0x3f000000),)


def test_range_algebra() -> None:
    a = [AddressRange(0, 10), AddressRange(10, 20), AddressRange(30, 40)]
    assert merge_ranges(a) == (AddressRange(0, 20), AddressRange(30, 40))
    assert subtract_ranges(a, [AddressRange(5, 35)]) == (AddressRange(0, 5), AddressRange(35, 40))
    assert intersect_ranges(a, [AddressRange(15, 32)]) == (AddressRange(15, 20),
                                                            AddressRange(30, 32))
    with pytest.raises(ValueError):
        AddressRange(10, 5)


@pytest.mark.parametrize("text,cpus", [("0-3,6,8-9", (0, 1, 2, 3, 6, 8, 9)), ("0", (0,)), ("", ())])
def test_cpu_lists_round_trip(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == cpus
    assert format_cpu_list(cpus) == text


def test_topology_json_round_trip() -> None:
    topo = Topology(
        source="observed", taken_at=1700000000.5, kernel_release="6.12.0",
        system_ram=(AddressRange(0x100000, 0x40000000),), crash_kernel=(AddressRange(1, 2),),
        cpus_possible=(0, 1, 2, 3), cpus_online=(0, 1),
        memory_devices=(MemoryDevice("dimm0", "dimm", 0x100000000, 1 << 28, 0),),
        cpu_slots=(CpuSlot("max-x86_64-cpu", 2, 0, 0),))
    text = topo.to_json()
    assert json.loads(text)["system_ram"] == [{"start": "0x100000", "end": "0x40000000"}]
    assert Topology.from_json_dict(json.loads(text)) == topo


def test_package_import_loads_no_guest_machinery() -> None:
    """``harness.vmcore`` imports ranges and the model from here: no QEMU, QMP or SSH code."""
    code = ("import sys, harness.topology as t; assert all(hasattr(t, n) for n in t.__all__); "
            "print(*sorted(m for m in sys.modules if m.startswith('harness')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    assert "harness.topology.live" in out
    assert not {"harness.guest.machine", "harness.guest.qmp", "harness.guest.ssh",
                "harness.guest.process"} & set(out)
