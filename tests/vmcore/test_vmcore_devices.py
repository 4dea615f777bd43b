"""QEMU's memory devices against the guest's System RAM, and the live header's VMCOREINFO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from vmcore_guest import DIMMS, DUMP_RAM, RELEASE, SYSTEM_RAM, make_spec, make_topology

from harness.topology import AddressRange, MemoryDevice, Topology
from harness.vmcore import (
    Finding,
    FindingCode,
    Severity,
    Verdict,
    VerifyReport,
    audit_elfcorehdr,
    open_dump,
    parse_elfcorehdr,
    read_vmcoreinfo_note,
    verify,
)
from harness.vmcore.writer import (
    VMCOREINFO_NOTE_SIZE,
    GiB,
    MiB,
    build_elf_core,
    build_raw_elfcorehdr,
    default_vmcoreinfo,
    note_bytes,
)

C = FindingCode
DUMP = open_dump(build_elf_core(make_spec(), memory="headers-only"))
RAW = build_raw_elfcorehdr(make_spec(), possible_cpus=4)


def findings(report: VerifyReport, code: FindingCode) -> list[Finding]:
    return [f for f in report.findings if f.code == code]


def run(topology: Topology, **options: Any) -> VerifyReport:
    return verify(DUMP, topology, **options)


# -- QEMU's view against the guest's ----------------------------------------------------------


def test_an_extra_dimm_where_the_guest_has_no_ram_is_a_warning() -> None:
    ghost = MemoryDevice("dimm9", "dimm", 6 * GiB, 256 * MiB)
    report = run(make_topology(memory_devices=(*DIMMS, ghost)))
    assert report.verdict == Verdict.ACCURATE        # the dump matches the guest's RAM
    [warning] = findings(report, C.DIMM_NOT_RAM)
    assert warning.severity == Severity.WARNING and warning.device == "dimm9"
    assert "dimm9" in report.to_text()                  # shown without --verbose


def test_a_dimm_only_partly_ram_is_a_size_warning() -> None:
    half = AddressRange(DIMMS[1].addr, DIMMS[1].addr + 128 * MiB)
    ram = (*SYSTEM_RAM[:2], AddressRange(DIMMS[0].addr, half.end))
    dump = open_dump(build_elf_core(make_spec(ram=(*DUMP_RAM[:3], half)), memory="headers-only"))
    report = verify(dump, make_topology(system_ram=ram))
    assert report.verdict == Verdict.ACCURATE
    [warning] = findings(report, C.DIMM_SIZE_MISMATCH)
    assert warning.device == "dimm1" and "only 128 MiB of it is System RAM" in warning.message


def test_ram_running_past_a_dimm_names_the_dimm() -> None:
    beyond = AddressRange(DIMMS[1].range.end, DIMMS[1].range.end + 64 * MiB)
    ram = (*SYSTEM_RAM[:2], AddressRange(DIMMS[0].addr, beyond.end))
    dump = open_dump(build_elf_core(make_spec(ram=(*DUMP_RAM, beyond)), memory="headers-only"))
    report = verify(dump, make_topology(system_ram=ram))
    [warning] = findings(report, C.DIMM_SIZE_MISMATCH)
    assert warning.device == "dimm1" and warning.range == beyond
    assert report.verdict == Verdict.ACCURATE


def test_ram_no_device_accounts_for_is_a_warning() -> None:
    stray = AddressRange(8 * GiB, 8 * GiB + 128 * MiB)
    dump = open_dump(build_elf_core(make_spec(ram=(*DUMP_RAM, stray)), memory="headers-only"))
    report = verify(dump, make_topology(system_ram=(*SYSTEM_RAM, stray)))
    [warning] = findings(report, C.DIMM_RAM_UNACCOUNTED)
    assert warning.range == stray and warning.severity == Severity.WARNING
    # Boot RAM below the device area is not stray, whatever its size.
    assert not findings(run(make_topology()), C.DIMM_RAM_UNACCOUNTED)


def test_the_device_area_starts_where_qemu_puts_it_when_the_boot_size_is_known() -> None:
    # 1 GiB of boot memory: device memory starts at 4 GiB, below dimm0 moved up to 5 GiB.
    moved = (MemoryDevice("dimm0", "dimm", 5 * GiB, 256 * MiB),)
    below = AddressRange(4 * GiB, 4 * GiB + 512 * MiB)          # the guest's RAM there
    topology = make_topology(memory_devices=moved)
    qmp = Topology(source="expected", taken_at=0.0, memory_devices=moved, boot_memory=GiB)
    without = run(topology)
    with_boot = run(replace_devices(topology), expected=qmp)
    assert not findings(without, C.DIMM_RAM_UNACCOUNTED)
    assert [f.range for f in findings(with_boot, C.DIMM_RAM_UNACCOUNTED)] == [below]


def replace_devices(topology: Topology) -> Topology:
    """The guest's view, without devices: they come from ``expected``."""
    return topology.with_changes(memory_devices=())


def test_every_disagreement_between_the_views_is_named() -> None:
    ghost = MemoryDevice("dimm9", "dimm", 6 * GiB, 256 * MiB)
    vmem = MemoryDevice("vmem0", "virtio-mem", 8 * GiB, 256 * MiB, region_size=GiB)
    report = run(make_topology(memory_devices=(*DIMMS, ghost, vmem)))
    named = {f.device for f in report.warnings}
    assert named == {"dimm9", "vmem0"}     # vmem0: 256 MiB plugged, none of it RAM


def test_overlapping_devices_are_refused_when_the_topology_is_built(tmp_path: Path) -> None:
    clash = MemoryDevice("dimm2", "dimm", DIMMS[1].addr + 128 * MiB, 256 * MiB)
    with pytest.raises(ValueError, match=r"dimm1 .* and dimm2 .* overlap"):
        make_topology(memory_devices=(*DIMMS, clash))
    with pytest.raises(ValueError, match="overlap"):
        verify(DUMP, make_topology(), memory_devices=(*DIMMS, clash))
    data = make_topology().to_json_dict()
    data["memory_devices"] = [*data["memory_devices"],
                              {"id": "dimm2", "kind": "dimm", "addr": clash.addr,
                               "size": clash.size}]
    with pytest.raises(ValueError, match="overlap"):
        Topology.from_json_dict(json.loads(json.dumps(data)))
    # A virtio-mem region counts as a whole: a DIMM inside it overlaps it.
    region = MemoryDevice("vmem0", "virtio-mem", 8 * GiB, 0, region_size=GiB)
    inside = MemoryDevice("dimm3", "dimm", 8 * GiB + 512 * MiB, 256 * MiB)
    with pytest.raises(ValueError, match=r"vmem0 .* and dimm3"):
        make_topology(memory_devices=(region, inside))


# -- the live header's VMCOREINFO, read from guest memory ------------------------------------


class Memory:
    """Guest physical memory holding what the raw header's PT_NOTEs point at."""

    def __init__(self, pieces: dict[int, bytes]) -> None:
        self.pieces = pieces

    def read(self, addr: int, size: int) -> bytes:
        data = self.pieces.get(addr, b"")
        return data[:size].ljust(size, b"\0")


VMCOREINFO_AT = 0x2A0_0000          # build_raw_elfcorehdr's default


def vmcoreinfo_buffer(release: str) -> bytes:
    note = note_bytes("VMCOREINFO", 0, default_vmcoreinfo(release, crash_time=None).encode())
    return note.ljust(VMCOREINFO_NOTE_SIZE, b"\0")


def test_live_audit_checks_osrelease_from_guest_memory() -> None:
    good = Memory({VMCOREINFO_AT: vmcoreinfo_buffer(RELEASE)})
    report = audit_elfcorehdr(RAW, make_topology(), read_phys=good.read)
    assert report.verdict == Verdict.ACCURATE, report.to_text()
    assert C.OSRELEASE_MATCH in report.codes()
    assert C.CRASHTIME_MISSING not in report.codes()      # no panic yet: no CRASHTIME
    wrong = Memory({VMCOREINFO_AT: vmcoreinfo_buffer("6.1.0-other")})
    report = audit_elfcorehdr(RAW, make_topology(), read_phys=wrong.read)
    assert report.verdict == Verdict.MISMATCH
    assert [f.code for f in report.errors] == [C.OSRELEASE_MISMATCH]
    # Zeros where the note should be: the header points at no VMCOREINFO.
    report = audit_elfcorehdr(RAW, make_topology(), read_phys=Memory({}).read)
    assert [f.code for f in report.errors] == [C.VMCOREINFO_MISSING]
    assert f"{VMCOREINFO_AT:#x}" in report.errors[0].message
    assert report.verdict == Verdict.INCOMPLETE


def test_vmcoreinfo_buffer_only_for_a_raw_header() -> None:
    header = parse_elfcorehdr(RAW)
    buffer = read_vmcoreinfo_note(Memory({VMCOREINFO_AT: vmcoreinfo_buffer(RELEASE)}).read,
                                  header)
    assert buffer is not None and len(buffer) == VMCOREINFO_NOTE_SIZE
    assert verify(header, make_topology(), vmcoreinfo=buffer).accurate
    with pytest.raises(ValueError, match="its own notes"):
        verify(DUMP, make_topology(), vmcoreinfo=buffer)
    no_info = parse_elfcorehdr(build_raw_elfcorehdr(make_spec(), vmcoreinfo=False))
    assert read_vmcoreinfo_note(Memory({}).read, no_info) is None
