"""The verifier: one accurate baseline, then one broken fact at a time."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from vmcore_guest import (
    BUSY,
    CRASH_KERNEL,
    CRASH_TIME,
    DIMMS,
    DMESG,
    DUMP_RAM,
    IDLE,
    PANIC_WINDOW,
    SYSTEM_RAM,
    make_spec,
    make_topology,
)

from harness.topology import AddressRange, MemoryDevice, Topology
from harness.vmcore import (
    Dump,
    Finding,
    FindingCode,
    Severity,
    Verdict,
    VerifyReport,
    open_dump,
    parse_elfcorehdr,
    verify,
)
from harness.vmcore.verifier import decide_verdict
from harness.vmcore.writer import (
    CoreSpec,
    GiB,
    MiB,
    SyntheticCpu,
    build_elf_core,
    build_kdump,
    build_raw_elfcorehdr,
    default_vmcoreinfo,
    flat_stream,
    flatten,
)

C = FindingCode

_BUILDERS: dict[str, Callable[[CoreSpec], bytes]] = {
    "elf": lambda s: build_elf_core(s, memory="headers-only"),
    "elf-no-data": lambda s: build_elf_core(s, memory="none"),
    "kdump": build_kdump,
    "flattened-kdump": lambda s: flatten(build_kdump(s)),
    "flattened-elf": lambda s: flatten(build_elf_core(s, memory="headers-only")),
}


def elf_dump(**changes: object) -> Dump:
    return open_dump(build_elf_core(make_spec(**changes), memory="headers-only"))


def raw_header(possible_cpus: int = 4, **changes: object) -> Dump:
    return parse_elfcorehdr(build_raw_elfcorehdr(make_spec(**changes), possible_cpus=possible_cpus))


def check(dump: Dump, topology: Topology | None = None, **options: Any) -> VerifyReport:
    options.setdefault("panic_window", PANIC_WINDOW)
    return verify(dump, topology or make_topology(), **options)


def errors(report: VerifyReport) -> list[FindingCode]:
    return [f.code for f in report.errors]


def only(report: VerifyReport, code: FindingCode) -> Finding:
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, report.to_text()
    return found[0]


@pytest.mark.parametrize("kind", list(_BUILDERS))
def test_accurate_dump_in_every_format(kind: str) -> None:
    dump = open_dump(_BUILDERS[kind](make_spec()))
    report = check(dump, raw_header=raw_header(), dmesg=DMESG)
    assert report.verdict == Verdict.ACCURATE, report.to_text()
    assert report.errors == () and report.warnings == ()
    assert {C.CPU_NOTES_MATCH, C.PANIC_CPU, C.HEADER_CPU_NOTES_MATCH, C.MEMORY_MATCH,
            C.DIMM_PRESENT, C.OSRELEASE_MATCH, C.CRASHTIME_IN_WINDOW,
            C.PANIC_MESSAGE_FOUND} <= report.codes(Severity.INFO)
    assert only(report, C.PANIC_CPU).cpu == 0


def test_hot_plugged_dimm_missing_from_the_dump_is_stale() -> None:
    report = check(elf_dump(ram=DUMP_RAM[:3]))          # dimm1 plugged, header not updated
    assert report.verdict == Verdict.STALE
    # One cause, one finding: the DIMM, not also its range as bare RAM.
    assert errors(report) == [C.DIMM_MISSING]
    missing = only(report, C.DIMM_MISSING)
    assert (missing.device, missing.range) == ("dimm1", DIMMS[1].range)


def test_ram_outside_any_device_is_still_reported_beside_a_missing_dimm() -> None:
    cut = AddressRange(DUMP_RAM[1].start, DUMP_RAM[1].end - 64 * MiB)   # boot RAM cut short
    report = check(elf_dump(ram=(DUMP_RAM[0], cut, DIMMS[0].range)))
    assert sorted(errors(report)) == sorted([C.DIMM_MISSING, C.RAM_NOT_IN_DUMP])
    assert only(report, C.RAM_NOT_IN_DUMP).range == AddressRange(cut.end, DUMP_RAM[1].end)
    # The same rule for the raw header beside the dump.
    report = check(elf_dump(), raw_header=raw_header(ram=(DUMP_RAM[0], cut, DIMMS[0].range)))
    assert sorted(f.code for f in report.errors if f.in_header) == sorted(
        [C.DIMM_MISSING, C.RAM_NOT_IN_DUMP])
    assert all(f.message.startswith("header: ") for f in report.errors)


def test_unplugged_dimm_still_described_is_stale() -> None:
    # After device_del QEMU no longer lists the DIMM and the guest no longer has the RAM.
    topology = make_topology(system_ram=SYSTEM_RAM[:2] + (DIMMS[0].range,),
                             memory_devices=DIMMS[:1])
    report = check(elf_dump(), topology)
    assert report.verdict == Verdict.STALE and errors(report) == [C.DUMP_RANGE_NOT_RAM]
    assert only(report, C.DUMP_RANGE_NOT_RAM).range == DIMMS[1].range
    # Still listed by QEMU (e.g. offlined, unplug pending): the DIMM finding says so.
    report = check(elf_dump(), make_topology(system_ram=topology.system_ram))
    assert C.DIMM_DESCRIBED_NOT_RAM in errors(report)
    assert only(report, C.DIMM_DESCRIBED_NOT_RAM).device == "dimm1"


def test_partly_described_dimm() -> None:
    half = AddressRange(DIMMS[1].addr, DIMMS[1].addr + 128 * MiB)
    report = check(elf_dump(ram=DUMP_RAM[:3] + (half,)))
    assert report.verdict == Verdict.STALE
    partial = only(report, C.DIMM_PARTIAL)
    assert partial.device == "dimm1" and "128 MiB missing" in partial.message


def test_missing_cpu_note_is_incomplete_unless_the_header_explains_it() -> None:
    dump = elf_dump(cpus=(BUSY,))
    report = check(dump)
    assert report.verdict == Verdict.INCOMPLETE and errors(report) == [C.CPU_NOTES_MISSING]
    # A 6.1-style header with a slot for one CPU only: the CPU was hot-added after the load.
    # One cause, one finding: the header is stale for CPU 1, not "CPU 1 did not answer".
    report = check(dump, raw_header=raw_header(possible_cpus=1))
    assert report.verdict == Verdict.STALE and errors(report) == [C.HEADER_CPU_SLOTS_MISSING]
    slots = only(report, C.HEADER_CPU_SLOTS_MISSING)
    assert slots.cpu == 1 and "no slot for CPU 1," in slots.message and slots.in_header
    # A header with slots for both: the missing note is a CPU that did not answer.
    report = check(dump, raw_header=raw_header(possible_cpus=4))
    assert report.verdict == Verdict.INCOMPLETE and errors(report) == [C.CPU_NOTES_MISSING]
    # Three online CPUs, two slots, one note: one finding for each of the two causes.
    three = make_topology(cpus_present=(0, 1, 2), cpus_online=(0, 1, 2))
    report = check(dump, three, raw_header=raw_header(possible_cpus=2))
    assert sorted(errors(report)) == sorted([C.HEADER_CPU_SLOTS_MISSING, C.CPU_NOTES_MISSING])
    assert only(report, C.CPU_NOTES_MISSING).verdict == Verdict.INCOMPLETE
    assert "no slot for CPU 2," in only(report, C.HEADER_CPU_SLOTS_MISSING).message
    assert report.verdict == Verdict.STALE


def test_header_with_more_slots_than_possible_cpus_is_not_this_machines() -> None:
    report = check(elf_dump(), raw_header=raw_header(possible_cpus=6))
    assert report.verdict == Verdict.MISMATCH and errors(report) == [C.HEADER_CPU_NOTES_WRONG]


def test_header_describing_present_cpus_only_is_a_warning() -> None:
    report = check(elf_dump(), raw_header=raw_header(possible_cpus=2))
    assert report.verdict == Verdict.ACCURATE
    assert C.HEADER_CPU_NOTES_PRESENT_ONLY in report.codes(Severity.WARNING)


def test_more_notes_than_online_cpus_is_a_mismatch() -> None:
    report = check(elf_dump(cpus=(BUSY, IDLE, IDLE)))
    assert report.verdict == Verdict.MISMATCH and errors(report) == [C.CPU_NOTES_EXTRA]


@pytest.mark.parametrize(("changes", "options", "code"), [
    ({"vmcoreinfo": default_vmcoreinfo("6.1.0-other", crash_time=CRASH_TIME)}, {},
     C.OSRELEASE_MISMATCH),
    ({"vmcoreinfo": default_vmcoreinfo("6.12.0-test", crash_time=CRASH_TIME + 4)}, {},
     C.CRASHTIME_OUTSIDE_WINDOW),
    ({}, {"dmesg": "[ 1.0] nothing to see\n"}, C.PANIC_MESSAGE_MISSING),
    ({}, {"panic_cpu": 1}, C.PANIC_CPU_IDLE),
], ids=["osrelease", "crashtime", "dmesg", "idle-panic-cpu"])
def test_mismatches(changes: dict[str, Any], options: dict[str, Any],
                    code: FindingCode) -> None:
    report = check(elf_dump(**changes), **options)
    assert report.verdict == Verdict.MISMATCH and errors(report) == [code], report.to_text()


def test_crashtime_slack_and_absence() -> None:
    # Window end is CRASH_TIME + 1; the default slack is 2 s.
    inside = default_vmcoreinfo("6.12.0-test", crash_time=CRASH_TIME + 3)
    window = (CRASH_TIME - 3.0, CRASH_TIME + 1.5)
    assert check(elf_dump(vmcoreinfo=inside), panic_window=window).accurate
    report = check(elf_dump(vmcoreinfo=default_vmcoreinfo("6.12.0-test", crash_time=None)))
    assert report.accurate and C.CRASHTIME_MISSING in report.codes(Severity.WARNING)
    assert check(elf_dump(), panic_window=None).codes().isdisjoint(
        {C.CRASHTIME_IN_WINDOW, C.CRASHTIME_OUTSIDE_WINDOW})


def test_panic_cpu_findings() -> None:
    assert only(check(elf_dump(), panic_cpu=0), C.PANIC_CPU).cpu == 0
    # An NMI that panicked an idle CPU: every note idle is worth a warning, nothing more.
    report = check(elf_dump(cpus=(IDLE, IDLE)))
    assert report.accurate and C.NO_BUSY_CPU_NOTE in report.codes(Severity.WARNING)
    # Notes cannot be matched to CPUs when some are missing.
    report = check(elf_dump(cpus=(BUSY,)), panic_cpu=0)
    assert C.PANIC_CPU_UNKNOWN in report.codes(Severity.WARNING)
    # A note whose registers are all zero.
    report = check(elf_dump(cpus=(BUSY, SyntheticCpu(rip=0))))
    assert report.accurate and only(report, C.CPU_NOTE_NO_RIP).cpu == 1


def test_low_memory_is_allowed_either_way() -> None:
    kexec_load_style = (AddressRange(0x1000, 0xA_0000),) + DUMP_RAM
    report = check(elf_dump(ram=kexec_load_style))
    assert report.accurate and C.LOW_MEMORY in report.codes(Severity.INFO)
    assert C.LOW_MEMORY not in check(elf_dump()).codes()


def test_crash_kernel_described_is_a_mismatch() -> None:
    report = check(elf_dump(ram=DUMP_RAM + (CRASH_KERNEL,)))
    assert report.verdict == Verdict.MISMATCH
    assert only(report, C.CRASH_KERNEL_IN_DUMP).range == CRASH_KERNEL


def test_undecodable_note_is_invalid_and_outranks_staleness() -> None:
    report = check(elf_dump(cpus=(BUSY, SyntheticCpu(desc_size=200)), ram=DUMP_RAM[:3]))
    assert report.verdict == Verdict.INVALID
    assert {C.CPU_NOTE_UNDECODABLE, C.DIMM_MISSING} <= set(errors(report))


def test_decide_verdict_precedence() -> None:
    def err(verdict: Verdict) -> Finding:
        return Finding(Severity.ERROR, C.RAM_NOT_IN_DUMP, "x", verdict=verdict)

    assert decide_verdict([]) == Verdict.ACCURATE
    assert decide_verdict([Finding(Severity.WARNING, C.CPU_NOTE_NO_RIP, "x")]) == Verdict.ACCURATE
    assert decide_verdict([err(Verdict.INCOMPLETE), err(Verdict.STALE)]) == Verdict.STALE
    assert decide_verdict([err(Verdict.STALE), err(Verdict.MISMATCH)]) == Verdict.MISMATCH
    assert decide_verdict([err(Verdict.MISMATCH), err(Verdict.INVALID)]) == Verdict.INVALID


def test_truncation_and_incomplete_streams() -> None:
    dump = elf_dump()
    assert C.HEADERS_ONLY in check(dump).codes(Severity.INFO)
    report = check(dump, require_memory=True)
    assert report.verdict == Verdict.INCOMPLETE and errors(report) == [C.DUMP_TRUNCATED]
    cut = open_dump(flat_stream([(0, build_kdump(make_spec()))], end_marker=False))
    report = check(cut)
    assert report.verdict == Verdict.INCOMPLETE and errors(report) == [C.DUMP_INCOMPLETE]
    report = check(open_dump(build_kdump(make_spec(), status=0x8)))
    assert "DUMP_DH_COMPRESSED_INCOMPLETE" in only(report, C.DUMP_INCOMPLETE).message


def test_missing_vmcoreinfo_is_incomplete() -> None:
    report = check(elf_dump(vmcoreinfo=None))
    assert report.verdict == Verdict.INCOMPLETE and errors(report) == [C.VMCOREINFO_MISSING]


def test_raw_header_alone_is_the_live_audit() -> None:
    report = check(raw_header(), panic_window=None)
    assert report.verdict == Verdict.ACCURATE, report.to_text()
    assert C.NOTES_NOT_IN_HEADER in report.codes() and C.VMCOREINFO_MISSING not in report.codes()
    stale = check(raw_header(ram=DUMP_RAM[:3]), panic_window=None)
    assert stale.verdict == Verdict.STALE and "crash header" in only(stale, C.DIMM_MISSING).message
    assert errors(stale) == [C.DIMM_MISSING]
    no_info = parse_elfcorehdr(build_raw_elfcorehdr(make_spec(), possible_cpus=4, vmcoreinfo=False))
    assert errors(check(no_info)) == [C.HEADER_VMCOREINFO_NOTE]


def test_raw_header_and_dump_are_both_checked() -> None:
    report = check(elf_dump(), raw_header=raw_header(ram=DUMP_RAM[:3]))
    assert report.verdict == Verdict.STALE
    assert all(f.message.startswith("header: ") for f in report.errors)
    with pytest.raises(ValueError, match="raw elfcorehdr"):
        verify(elf_dump(), make_topology(), raw_header=elf_dump())


def test_dimms_from_the_qmp_view_and_virtio_mem_regions() -> None:
    report = check(elf_dump(ram=DUMP_RAM[:3]), make_topology(memory_devices=()),
                   memory_devices=DIMMS)
    assert only(report, C.DIMM_MISSING).device == "dimm1"
    # virtio-mem: 1 GiB region, 256 MiB of it plugged (in the middle) and System RAM.
    region_start = 8 * GiB
    plugged = AddressRange(region_start + 256 * MiB, region_start + 512 * MiB)
    vmem = MemoryDevice("vmem0", "virtio-mem", region_start, 256 * MiB, region_size=GiB,
                        requested_size=256 * MiB)
    topology = make_topology(system_ram=SYSTEM_RAM + (plugged,), memory_devices=DIMMS + (vmem,))
    assert check(elf_dump(ram=DUMP_RAM + (plugged,)), topology).accurate
    report = check(elf_dump(), topology)
    assert only(report, C.DIMM_MISSING).device == "vmem0"


def test_report_renders_for_people_and_machines() -> None:
    report = check(elf_dump(ram=DUMP_RAM[:3]), dmesg=DMESG, raw_header=raw_header(ram=DUMP_RAM[:3]))
    lines = report.to_text().splitlines()
    # The verdict and its causes first, then what matched, in a few lines.
    assert lines[0].startswith("vmcore verdict: STALE")
    assert lines[1] == "because:"
    causes = lines[2:4]
    assert [line.split()[:3] for line in causes] == [["dimm", "error", "dimm-missing"]] * 2
    assert "header: dimm1" in causes[1]
    matched = [line.strip() for line in lines[lines.index("matched:") + 1:-1]]
    assert "dimm: 1 of 2 DIMMs in the dump and the header" in matched
    assert any(line.startswith("cpu: 2 CPU notes for 2 online CPUs") for line in matched)
    assert len(matched) <= 6 and len(lines) < len(report.findings) + 2
    assert lines[-1].startswith("summary: 2 error(s), 0 warning(s)")
    # Verbose: every finding, grouped by area, one line each.
    verbose = report.to_text(verbose=True).splitlines()
    groups = [line[:-1] for line in verbose[1:-1] if not line.startswith(" ")]
    assert groups == ["dump", "cpu", "dimm", "vmcoreinfo", "dmesg"]   # memory: said by dimm
    assert len(verbose) == 2 + len(groups) + len(report.findings)
    dimm = verbose[verbose.index("dimm:") + 1]
    assert dimm.split()[:2] == ["error", "dimm-missing"]                # errors first
    data = json.loads(json.dumps(report.to_json_dict()))
    assert data["verdict"] == "stale" and data["counts"]["error"] == 2
    assert len(data["findings"]) == len(report.findings)
    missing = next(f for f in data["findings"] if f["code"] == "dimm-missing" and
                   not f["in_header"])
    assert missing["device"] == "dimm1" and missing["range"]["start"] == hex(DIMMS[1].addr)
    assert missing["verdict"] == "stale" and missing["area"] == "dimm"
    assert str(report) == report.to_text()


def test_accurate_report_summarises_what_matched() -> None:
    report = check(elf_dump(), raw_header=raw_header(), dmesg=DMESG, panic_cpu=0)
    lines = report.to_text().splitlines()
    assert lines[0].startswith("vmcore verdict: ACCURATE") and lines[1] == "matched:"
    body = "\n".join(lines)
    assert "memory: exactly System RAM minus Crash kernel above 1 MiB: 3 range(s), " in body
    assert "(dump and header)" in body
    assert "dimm: 2 of 2 DIMMs in the dump and the header" in body
    assert len(lines) <= 9 < len(report.findings)


def test_topology_without_cpus_or_ram_checks_nothing_it_cannot() -> None:
    bare = Topology(source="observed", taken_at=0.0)
    report = verify(elf_dump(), bare)
    assert report.accurate
    assert {C.CPU_NOTES_UNCHECKED, C.MEMORY_UNCHECKED, C.OSRELEASE_UNCHECKED} <= report.codes()
