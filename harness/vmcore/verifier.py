"""Prove a dump (or a live elfcorehdr) matches the topology the guest had when it panicked.

``verify`` returns a ``VerifyReport``: a ``Verdict`` and every ``Finding``.  Each error
finding names the verdict it implies; the report's verdict is the worst of them, in this
order (first wins):

``invalid``
    The dump contradicts itself: a CPU note that is not an x86_64 prstatus, a VMCOREINFO key
    with two values, two VMCOREINFO notes that differ (or a kdump header naming another
    release), more than one VMCOREINFO PT_NOTE in a header.  Nothing else in it can be
    trusted.  Files no kernel could have written (data laid over the program headers or the
    notes, no PT_LOAD, half raw header and half ELF core, caps exceeded) never get this far:
    the readers refuse them with ``VmcoreFormatError``, naming the offset and field.
``mismatch``
    The dump is not the one the topology describes: another kernel release, a CRASHTIME
    outside the panic window, no panic message in its log, more CPU notes than online CPUs
    (or header slots than possible CPUs), an idle note for the CPU that panicked, the crash
    kernel's own memory described.
``stale``
    The dump's description of memory or CPUs is out of date: RAM (a hot-plugged DIMM, say)
    the dump does not describe, ranges it describes that are no longer RAM (an unplugged
    DIMM), a header without note slots for CPUs that are online.  The bug this harness
    hunts, so it is never said of a file that contradicts itself (that is ``invalid``) or of
    a disagreement between QEMU's and the guest's views (a warning: the dump is compared
    with the guest's view).
``incomplete``
    The description is right but content is missing: fewer CPU notes than online CPUs that
    the header has slots for (a CPU did not answer the shutdown NMI), no VMCOREINFO, memory
    data cut short when it was required, makedumpfile's "incomplete" flag.  Never said of a
    shortfall the header's missing slots explain (that is ``stale``).
``accurate``
    No errors.  Warnings and infos never change the verdict.

One cause gives one finding: a missing DIMM is ``dimm-missing``, not also ``ram-not-in-dump``
for its range; online CPUs without a header slot are ``header-cpu-slots-missing``, not also
``cpu-notes-missing``.  The whole verification is O(n log n) in ranges and devices.

The vocabulary lives in ``findings``, the report in ``report``, the checks in ``check_cpu``,
``check_memory``, ``check_dimms`` and ``check_info``; the names are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from ..signatures import PANIC_MESSAGES
from ..topology import MemoryDevice, Topology
from ..units import format_size
from .check_cpu import check_cpu_notes, check_header_slots
from .check_dimms import DeviceMap, check_device_views
from .check_info import check_dmesg, check_integrity, check_vmcoreinfo
from .check_memory import check_memory
from .findings import (
    VERDICT_PRECEDENCE,
    Area,
    Finding,
    FindingCode,
    Severity,
    Verdict,
    area_of,
    decide_verdict,
)
from .model import Dump
from .notes import VmcoreInfo, vmcoreinfo_from_buffer
from .ranges import RangeIndex
from .report import VerifyReport
from .source import BytesLike
from .subject import Subject

#: Lines a kernel log holds after a deliberate panic (panic() itself, and the sysrq-c path).
DEFAULT_PANIC_PATTERNS: tuple[str, ...] = PANIC_MESSAGES
#: CRASHTIME is whole seconds of the guest's clock, which comes from the emulated RTC (1 s
#: resolution) at boot and drifts a little under TCG: allow this much either side of the
#: host's panic window.
DEFAULT_CLOCK_SLACK = 2.0


def verify(
    dump: Dump,
    topology_at_panic: Topology,
    *,
    panic_window: tuple[float, float] | None = None,
    raw_header: Dump | None = None,
    dmesg: str | None = None,
    panic_message_patterns: Sequence[str | re.Pattern[str]] = DEFAULT_PANIC_PATTERNS,
    panic_cpu: int | None = None,
    require_memory: bool = False,
    clock_slack: float = DEFAULT_CLOCK_SLACK,
    memory_devices: Sequence[MemoryDevice] | None = None,
    expected: Topology | None = None,
    vmcoreinfo: BytesLike | None = None,
) -> VerifyReport:
    """Compare a dump with the topology the guest had just before the panic.

    ``dump`` is a vmcore (any format) or a raw elfcorehdr (the live audit: notes are counted,
    not read).  ``raw_header`` is the first kernel's elfcorehdr read from guest memory before
    the panic, checked too when given.  ``panic_window`` is ``(start, end)`` host wall-clock
    seconds around the panic trigger.  ``dmesg`` is the log extracted from the dump (e.g.
    ``makedumpfile --dump-dmesg``).  ``panic_cpu`` names the CPU that panicked when the caller
    knows it (then its note must be non-idle).  ``require_memory`` makes PT_LOAD data missing
    from the file an error (by default a headers-only copy is fine).

    ``expected`` is QMP's snapshot: its memory devices name DIMMs (when
    ``topology_at_panic``, the guest's view, has none) and are cross-checked with the guest's
    System RAM, and its boot memory size says where device memory starts.
    ``memory_devices`` overrides the devices alone.

    ``vmcoreinfo`` is, for a raw elfcorehdr ``dump`` only, the note buffer its VMCOREINFO
    PT_NOTE points at, read from guest memory (``audit.read_vmcoreinfo_note``): then
    OSRELEASE is checked too.  Raises ``ValueError`` for a ``raw_header`` that is not one,
    ``vmcoreinfo`` with a dump that has its own, or devices that overlap, and
    ``VmcoreFormatError`` for a ``vmcoreinfo`` buffer that is not a note.
    """
    if raw_header is not None and not raw_header.is_raw_header:
        raise ValueError("raw_header must be a raw elfcorehdr (format raw-elfcorehdr)")
    if vmcoreinfo is not None and not dump.is_raw_header:
        raise ValueError("vmcoreinfo is for a raw elfcorehdr: this dump has its own notes")
    topology = _with_devices(topology_at_panic, memory_devices, expected)
    boot_memory = topology.boot_memory or (expected.boot_memory if expected else None)
    findings, checked = _run_checks(dump, topology, raw_header=raw_header, panic_cpu=panic_cpu,
                                    require_memory=require_memory, boot_memory=boot_memory)
    infos = _vmcoreinfos(dump, vmcoreinfo)
    if infos is not None:
        findings += check_vmcoreinfo(infos, topology, panic_window, clock_slack,
                                     crashed=not dump.is_raw_header, where=_where(dump),
                                     kdump_release=dump.kdump.release if dump.kdump else "")
        checked.append("vmcoreinfo")
    if dmesg is not None:
        findings += check_dmesg(dmesg, panic_message_patterns)
        checked.append("dmesg")
    return VerifyReport(
        verdict=decide_verdict(findings), findings=tuple(findings), dump_source=dump.source,
        dump_format=dump.format,
        raw_header_source=raw_header.source if raw_header is not None else None,
        topology_source=topology_at_panic.source, topology_taken_at=topology_at_panic.taken_at,
        checked=tuple(checked))


def _with_devices(topology: Topology, memory_devices: Sequence[MemoryDevice] | None,
                  expected: Topology | None) -> Topology:
    devices = memory_devices
    if devices is None and expected is not None and not topology.memory_devices:
        devices = expected.memory_devices
    if devices is None:
        return topology
    return replace(topology, memory_devices=tuple(devices))   # refuses overlapping devices


def _vmcoreinfo_address(dump: Dump) -> int:
    segments = dump.vmcoreinfo_segments
    return segments[0].address if segments else 0


def _where(dump: Dump) -> str:
    if not dump.is_raw_header:
        return "the dump"
    return f"the VMCOREINFO buffer at {_vmcoreinfo_address(dump):#x} in guest memory"


def _vmcoreinfos(dump: Dump, buffer: BytesLike | None) -> tuple[VmcoreInfo, ...] | None:
    """The VMCOREINFO notes to check, or None when there is nothing to check them in."""
    if not dump.is_raw_header:
        return dump.vmcoreinfos
    if buffer is None:
        return None
    return vmcoreinfo_from_buffer(buffer, address=_vmcoreinfo_address(dump),
                                  name=f"{dump.source} VMCOREINFO")


def _run_checks(dump: Dump, topology: Topology, *, raw_header: Dump | None,
                panic_cpu: int | None, require_memory: bool,
                boot_memory: int | None) -> tuple[list[Finding], list[str]]:
    """Integrity, CPUs, the device views, memory; for the dump and the header beside it."""
    findings = check_integrity(dump, require_memory)
    checked: list[str] = []
    header = dump if dump.is_raw_header else raw_header
    if not dump.is_raw_header:
        findings += check_cpu_notes(dump, topology, panic_cpu, header)
        checked.append("cpu-notes")
    if header is not None:
        findings += check_header_slots(header, topology, in_header=header is raw_header)
        checked.append("header-cpu-notes")
    devices = DeviceMap.of(topology.memory_devices)
    if devices and topology.system_ram:
        findings += check_device_views(topology, devices, RangeIndex(topology.system_ram),
                                       boot_memory)
        checked.append("device-views")
    findings += check_memory(Subject(dump), topology, devices)
    checked += ["memory", "dimms"]
    if raw_header is not None:
        findings += check_memory(Subject(raw_header, in_header=True), topology, devices)
        checked += ["header-memory", "header-dimms"]
    return findings, checked


__all__ = [
    "DEFAULT_CLOCK_SLACK", "DEFAULT_PANIC_PATTERNS", "VERDICT_PRECEDENCE", "Area", "Finding",
    "FindingCode", "Severity", "Verdict", "VerifyReport", "area_of", "decide_verdict",
    "format_size", "verify",
]
