"""Prove a dump (or a live elfcorehdr) matches the topology the guest had when it panicked.

``verify`` returns a ``VerifyReport``: a ``Verdict`` and every ``Finding``.  Each error
finding names the verdict it implies; the report's verdict is the worst of them, in this
order (first wins):

``invalid``
    The dump contradicts itself: a CPU note that is not an x86_64 prstatus, more than one
    VMCOREINFO note in the header.  Nothing else in it can be trusted.
``mismatch``
    The dump is not the one the topology describes: another kernel release, a CRASHTIME
    outside the panic window, no panic message in its log, more CPU notes than online CPUs,
    an idle note for the CPU that panicked, the crash kernel's own memory described.
``stale``
    The dump's description of memory or CPUs is out of date: RAM (a hot-plugged DIMM, say)
    the dump does not describe, ranges it describes that are no longer RAM (an unplugged
    DIMM), a header with note slots for fewer CPUs than are online.  The bug this harness
    hunts.
``incomplete``
    The description is right but content is missing: fewer CPU notes than online CPUs
    (a CPU did not answer the shutdown NMI), no VMCOREINFO, memory data cut short when it
    was required, makedumpfile's "incomplete" flag.
``accurate``
    No errors.  Warnings and infos never change the verdict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from ..topology import (
    AddressRange,
    MemoryDevice,
    Topology,
    format_cpu_list,
    intersect_ranges,
    merge_ranges,
    subtract_ranges,
)
from .constants import LOW_MEMORY_END, X86_64_PAGE_SIZE, DumpFormat
from .model import Dump

#: Lines a kernel log holds after a deliberate panic (panic() itself, and the sysrq-c path).
DEFAULT_PANIC_PATTERNS: tuple[str, ...] = (
    "Kernel panic - not syncing",
    "sysrq triggered crash",
    "sysrq: Trigger a crash",
    "SysRq : Trigger a crash",
)
#: CRASHTIME is whole seconds of the guest's clock, which comes from the emulated RTC (1 s
#: resolution) at boot and drifts a little under TCG: allow this much either side of the
#: host's panic window.
DEFAULT_CLOCK_SLACK = 2.0

_LOW_MEMORY = AddressRange(0, LOW_MEMORY_END)


class Verdict(StrEnum):
    """The overall answer (see the module docstring for what each means)."""

    ACCURATE = "accurate"
    STALE = "stale"
    INCOMPLETE = "incomplete"
    MISMATCH = "mismatch"
    INVALID = "invalid"


#: Which verdict wins when errors imply several.
VERDICT_PRECEDENCE: tuple[Verdict, ...] = (
    Verdict.INVALID, Verdict.MISMATCH, Verdict.STALE, Verdict.INCOMPLETE)


class Severity(StrEnum):
    ERROR = "error"       # decides the verdict
    WARNING = "warning"   # worth a look; does not change the verdict
    INFO = "info"         # a check that passed, or context


class Area(StrEnum):
    """What a finding is about; the text report groups by it."""

    DUMP = "dump"
    CPU = "cpu"
    MEMORY = "memory"
    DIMM = "dimm"
    VMCOREINFO = "vmcoreinfo"
    DMESG = "dmesg"


class FindingCode(StrEnum):
    """Stable identifiers for findings (tests and dashboards match on these)."""

    # dump
    HEADERS_ONLY = "headers-only"
    DUMP_TRUNCATED = "dump-truncated"
    DUMP_INCOMPLETE = "dump-incomplete"
    NOTES_NOT_IN_HEADER = "notes-not-in-header"
    # cpu
    CPU_NOTES_MATCH = "cpu-notes-match"
    CPU_NOTES_MISSING = "cpu-notes-missing"
    CPU_NOTES_EXTRA = "cpu-notes-extra"
    CPU_NOTES_UNCHECKED = "cpu-notes-unchecked"
    CPU_NOTE_UNDECODABLE = "cpu-note-undecodable"
    CPU_NOTE_NO_RIP = "cpu-note-no-rip"
    PANIC_CPU = "panic-cpu"
    PANIC_CPU_IDLE = "panic-cpu-idle"
    PANIC_CPU_UNKNOWN = "panic-cpu-unknown"
    NO_BUSY_CPU_NOTE = "no-busy-cpu-note"
    HEADER_CPU_NOTES_MATCH = "header-cpu-notes-match"
    HEADER_CPU_NOTES_PRESENT_ONLY = "header-cpu-notes-present-only"
    HEADER_CPU_NOTES_WRONG = "header-cpu-notes-wrong"
    HEADER_VMCOREINFO_NOTE = "header-vmcoreinfo-note"
    # memory
    MEMORY_MATCH = "memory-match"
    MEMORY_UNCHECKED = "memory-unchecked"
    RAM_NOT_IN_DUMP = "ram-not-in-dump"
    DUMP_RANGE_NOT_RAM = "dump-range-not-ram"
    CRASH_KERNEL_IN_DUMP = "crash-kernel-in-dump"
    LOW_MEMORY = "low-memory"
    TEXT_LOAD_MISSING = "text-load-missing"
    TEXT_LOAD_OUTSIDE_RAM = "text-load-outside-ram"
    # dimm
    DIMM_PRESENT = "dimm-present"
    DIMM_MISSING = "dimm-missing"
    DIMM_PARTIAL = "dimm-partial"
    DIMM_NOT_RAM = "dimm-not-ram"
    DIMM_DESCRIBED_NOT_RAM = "dimm-described-not-ram"
    DIMM_UNCHECKED = "dimm-unchecked"
    # vmcoreinfo
    VMCOREINFO_MISSING = "vmcoreinfo-missing"
    VMCOREINFO_MALFORMED = "vmcoreinfo-malformed"
    OSRELEASE_MATCH = "osrelease-match"
    OSRELEASE_MISMATCH = "osrelease-mismatch"
    OSRELEASE_UNCHECKED = "osrelease-unchecked"
    PAGESIZE_UNEXPECTED = "pagesize-unexpected"
    CRASHTIME_IN_WINDOW = "crashtime-in-window"
    CRASHTIME_OUTSIDE_WINDOW = "crashtime-outside-window"
    CRASHTIME_MISSING = "crashtime-missing"
    # dmesg
    PANIC_MESSAGE_FOUND = "panic-message-found"
    PANIC_MESSAGE_MISSING = "panic-message-missing"


_AREA_BY_PREFIX: tuple[tuple[tuple[str, ...], Area], ...] = (
    (("headers-only", "dump-", "notes-not"), Area.DUMP),
    (("cpu-", "panic-cpu", "no-busy", "header-cpu", "header-vmcoreinfo"), Area.CPU),
    (("memory-", "ram-", "crash-kernel", "low-memory", "text-load"), Area.MEMORY),
    (("dimm-",), Area.DIMM),
    (("vmcoreinfo-", "osrelease-", "pagesize-", "crashtime-"), Area.VMCOREINFO),
    (("panic-message",), Area.DMESG),
)


def area_of(code: FindingCode) -> Area:
    """The area a finding code belongs to."""
    for prefixes, area in _AREA_BY_PREFIX:
        if code.value.startswith(prefixes):
            return area
    raise AssertionError(f"no area for {code}")  # pragma: no cover - a code without an area


@dataclass(frozen=True)
class Finding:
    """One observation.  ``verdict`` is set on errors: the verdict this error implies."""

    severity: Severity
    code: FindingCode
    message: str
    verdict: Verdict | None = None
    cpu: int | None = None
    range: AddressRange | None = None
    device: str | None = None

    @property
    def area(self) -> Area:
        return area_of(self.code)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value, "code": self.code.value, "area": self.area.value,
            "message": self.message,
            "verdict": None if self.verdict is None else self.verdict.value,
            "cpu": self.cpu, "device": self.device,
            "range": None if self.range is None else {
                "start": hex(self.range.start), "end": hex(self.range.end)},
        }


def _error(code: FindingCode, verdict: Verdict, message: str, **where: Any) -> Finding:
    return Finding(Severity.ERROR, code, message, verdict=verdict, **where)


def _warning(code: FindingCode, message: str, **where: Any) -> Finding:
    return Finding(Severity.WARNING, code, message, **where)


def _info(code: FindingCode, message: str, **where: Any) -> Finding:
    return Finding(Severity.INFO, code, message, **where)


@dataclass(frozen=True)
class VerifyReport:
    """The verifier's answer: a verdict, the findings behind it, and what was compared."""

    verdict: Verdict
    findings: tuple[Finding, ...]
    dump_source: str
    dump_format: DumpFormat
    raw_header_source: str | None = None
    topology_source: str = ""
    topology_taken_at: float | None = None
    checked: tuple[str, ...] = field(default=())

    @property
    def accurate(self) -> bool:
        return self.verdict == Verdict.ACCURATE

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == Severity.WARNING)

    def codes(self, severity: Severity | None = None) -> set[FindingCode]:
        """The finding codes present (of one severity, if given)."""
        return {f.code for f in self.findings if severity is None or f.severity == severity}

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for f in self.findings if f.severity == s) for s in Severity}

    def to_text(self) -> str:
        """One header line, findings grouped by area (one line each), a summary line."""
        what = f"{self.dump_source} ({self.dump_format.value})"
        if self.raw_header_source:
            what += f" + header {self.raw_header_source}"
        lines = [(f"vmcore verdict: {self.verdict.value.upper()}  {what} vs "
                  f"{self.topology_source or 'topology'} snapshot")]
        width = max((len(f.code.value) for f in self.findings), default=0)
        for area in Area:
            group = [f for f in self.findings if f.area == area]
            if not group:
                continue
            lines.append(f"{area.value}:")
            order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
            for f in sorted(group, key=lambda f: order[f.severity]):
                lines.append(f"  {f.severity.value:<7} {f.code.value:<{width}}  {f.message}")
        counts = self.counts()
        lines.append(f"summary: {counts['error']} error(s), {counts['warning']} warning(s), "
                     f"{counts['info']} info; verdict {self.verdict.value}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "dump": {"source": self.dump_source, "format": self.dump_format.value},
            "raw_header": self.raw_header_source,
            "topology": {"source": self.topology_source, "taken_at": self.topology_taken_at},
            "checked": list(self.checked),
            "counts": self.counts(),
            "findings": [f.to_json_dict() for f in self.findings],
        }


def decide_verdict(findings: Sequence[Finding]) -> Verdict:
    """The worst verdict any error implies (``VERDICT_PRECEDENCE``), else accurate."""
    implied = {f.verdict for f in findings if f.severity == Severity.ERROR and f.verdict}
    for verdict in VERDICT_PRECEDENCE:
        if verdict in implied:
            return verdict
    return Verdict.ACCURATE


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
) -> VerifyReport:
    """Compare a dump with the topology the guest had just before the panic.

    ``dump`` is a vmcore (any format) or a raw elfcorehdr (the live audit: notes are counted,
    not read).  ``raw_header`` is the first kernel's elfcorehdr read from guest memory before
    the panic, checked too when given.  ``panic_window`` is ``(start, end)`` host wall-clock
    seconds around the panic trigger.  ``dmesg`` is the log extracted from the dump (e.g.
    ``makedumpfile --dump-dmesg``).  ``panic_cpu`` names the CPU that panicked when the caller
    knows it (then its note must be non-idle).  ``require_memory`` makes PT_LOAD data missing
    from the file an error (by default a headers-only copy is fine).  ``memory_devices``
    (QMP's view, e.g. the expected snapshot's) names DIMMs when ``topology_at_panic`` (the
    guest's view) has none.
    """
    if raw_header is not None and not raw_header.is_raw_header:
        raise ValueError("raw_header must be a raw elfcorehdr (format raw-elfcorehdr)")
    if memory_devices is not None:
        topology_at_panic = replace(topology_at_panic, memory_devices=tuple(memory_devices))
    findings: list[Finding] = []
    checked: list[str] = []

    findings += _check_integrity(dump, require_memory)
    header = dump if dump.is_raw_header else raw_header
    if not dump.is_raw_header:
        findings += _check_cpu_notes(dump, topology_at_panic, panic_cpu, header)
        checked.append("cpu-notes")
    if header is not None:
        findings += _check_header_cpu_notes(header, topology_at_panic)
        checked.append("header-cpu-notes")
    findings += _check_memory(dump, topology_at_panic)
    findings += _check_dimms(dump, topology_at_panic)
    checked += ["memory", "dimms"]
    if raw_header is not None:
        findings += _check_memory(raw_header, topology_at_panic, prefix="header: ")
        findings += _check_dimms(raw_header, topology_at_panic, prefix="header: ")
        checked += ["header-memory", "header-dimms"]
    if not dump.is_raw_header:
        findings += _check_vmcoreinfo(dump, topology_at_panic, panic_window, clock_slack)
        checked.append("vmcoreinfo")
    if dmesg is not None:
        findings += _check_dmesg(dmesg, panic_message_patterns)
        checked.append("dmesg")

    return VerifyReport(
        verdict=decide_verdict(findings), findings=tuple(findings), dump_source=dump.source,
        dump_format=dump.format,
        raw_header_source=raw_header.source if raw_header is not None else None,
        topology_source=topology_at_panic.source, topology_taken_at=topology_at_panic.taken_at,
        checked=tuple(checked))


# -- helpers -----------------------------------------------------------------------------


def format_size(size: int) -> str:
    """``268435456`` -> ``256 MiB``; exact units where possible."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{size} bytes"


def _ranges_text(ranges: Sequence[AddressRange], limit: int = 4) -> str:
    shown = ", ".join(str(r) for r in ranges[:limit])
    return shown + (f" and {len(ranges) - limit} more" if len(ranges) > limit else "")


def _devices_in(r: AddressRange, devices: Sequence[MemoryDevice]) -> list[str]:
    return [d.id for d in devices if d.size and d.range.overlaps(r)]


def _page_round(ranges: Sequence[AddressRange], page: int) -> tuple[AddressRange, ...]:
    return merge_ranges(AddressRange(r.start // page * page, -(-r.end // page) * page)
                        for r in ranges)


# -- the checks ----------------------------------------------------------------------------


def _check_integrity(dump: Dump, require_memory: bool) -> list[Finding]:
    out: list[Finding] = []
    if dump.is_raw_header:
        out.append(_info(FindingCode.NOTES_NOT_IN_HEADER,
                         "a raw elfcorehdr holds no note contents: CPU notes and VMCOREINFO are "
                         "checked by their PT_NOTE entries only"))
    truncated = dump.truncated_loads
    if truncated:
        missing = sum(seg.file_size - seg.present for seg in truncated)
        text = (f"{len(truncated)} of {len(dump.loads)} PT_LOADs have data past the end of the "
                f"file ({format_size(missing)} absent)")
        if require_memory:
            out.append(_error(FindingCode.DUMP_TRUNCATED, Verdict.INCOMPLETE,
                              f"{text}: the dump is cut short"))
        else:
            out.append(_info(FindingCode.HEADERS_ONLY, f"{text}: a headers-only copy"))
    if not dump.stream_complete:
        reasons = "; ".join(dump.observations) or "the dump is marked incomplete"
        out.append(_error(FindingCode.DUMP_INCOMPLETE, Verdict.INCOMPLETE, reasons))
    return out


def _check_cpu_notes(dump: Dump, topology: Topology, panic_cpu: int | None,
                     header: Dump | None) -> list[Finding]:
    out: list[Finding] = []
    notes = dump.cpu_notes
    online = topology.cpus_online
    # /proc/vmcore keeps notes of CPUs that saved one, in ascending CPU order: when every
    # online CPU saved one, note i is online CPU i.
    mapping: dict[int, int] | None = None
    if not online:
        out.append(_info(FindingCode.CPU_NOTES_UNCHECKED,
                         f"{len(notes)} CPU note(s); the topology lists no online CPUs to "
                         "compare with"))
    elif len(notes) == len(online):
        mapping = dict(enumerate(online))
        out.append(_info(FindingCode.CPU_NOTES_MATCH,
                         f"{len(notes)} CPU notes for {len(online)} online CPUs "
                         f"({format_cpu_list(online)})"))
    elif len(notes) < len(online):
        short = len(online) - len(notes)
        header_slots = len(header.cpu_note_segments) if header is not None else None
        if header_slots is not None and header_slots < len(online):
            verdict, why = Verdict.STALE, (f"the crash header has note slots for only "
                                           f"{header_slots} CPUs")
        else:
            verdict, why = Verdict.INCOMPLETE, ("CPUs that did not answer the shutdown NMI, "
                                                "or a header without their slots")
        out.append(_error(FindingCode.CPU_NOTES_MISSING, verdict,
                          f"{len(notes)} CPU notes for {len(online)} online CPUs "
                          f"({format_cpu_list(online)}): {short} missing ({why})"))
    else:
        out.append(_error(FindingCode.CPU_NOTES_EXTRA, Verdict.MISMATCH,
                          f"{len(notes)} CPU notes but only {len(online)} online CPUs "
                          f"({format_cpu_list(online)}): the topology is not this dump's"))

    def cpu_of(index: int) -> int | None:
        return mapping[index] if mapping is not None else None

    for note in notes:
        which = f"CPU note {note.index}" + (
            f" (CPU {cpu_of(note.index)})" if cpu_of(note.index) is not None else "")
        if note.prstatus is None:
            out.append(_error(FindingCode.CPU_NOTE_UNDECODABLE, Verdict.INVALID,
                              f"{which} at {note.offset:#x} has a {note.desc_size}-byte "
                              "descriptor, not a 336-byte x86_64 prstatus",
                              cpu=cpu_of(note.index)))
        elif note.prstatus.rip == 0:
            out.append(_warning(FindingCode.CPU_NOTE_NO_RIP,
                                f"{which} has rip 0: its registers were not saved",
                                cpu=cpu_of(note.index)))

    busy = [n for n in notes if n.prstatus is not None and n.prstatus.pid != 0]
    if panic_cpu is not None:
        if mapping is None:
            out.append(_warning(FindingCode.PANIC_CPU_UNKNOWN,
                                f"cannot tell which note is CPU {panic_cpu}'s: "
                                f"{len(notes)} notes for {len(online)} online CPUs",
                                cpu=panic_cpu))
        else:
            index = next((i for i, c in mapping.items() if c == panic_cpu), None)
            panic_note = notes[index] if index is not None else None
            if panic_note is None:
                out.append(_warning(FindingCode.PANIC_CPU_UNKNOWN,
                                    f"CPU {panic_cpu} panicked but is not online per the "
                                    "topology", cpu=panic_cpu))
            elif panic_note.prstatus is not None and panic_note.prstatus.pid == 0:
                out.append(_error(FindingCode.PANIC_CPU_IDLE, Verdict.MISMATCH,
                                  f"CPU {panic_cpu} panicked but its note shows the idle task "
                                  f"(pid 0, rip {panic_note.prstatus.rip:#x})", cpu=panic_cpu))
            elif panic_note.prstatus is not None:
                out.append(_info(FindingCode.PANIC_CPU,
                                 f"CPU {panic_cpu} (the panicking CPU) ran pid "
                                 f"{panic_note.prstatus.pid} at rip {panic_note.prstatus.rip:#x}",
                                 cpu=panic_cpu))
    elif busy:
        # Without the caller's word, the panicking CPU is the one whose note is not idle
        # (several with an NMI panic: every CPU was running something).
        def label(index: int) -> str:
            cpu = cpu_of(index)
            return f"CPU {cpu}" if cpu is not None else f"note {index}"

        described = ", ".join(f"{label(n.index)} pid {n.prstatus.pid} rip {n.prstatus.rip:#x}"
                              for n in busy if n.prstatus is not None)
        out.append(_info(FindingCode.PANIC_CPU, f"non-idle CPU note(s): {described}",
                         cpu=cpu_of(busy[0].index)))
    elif notes:
        # An NMI-triggered panic on an idle CPU saves pid 0 everywhere; a sysrq panic cannot.
        out.append(_warning(FindingCode.NO_BUSY_CPU_NOTE,
                            "every CPU note shows the idle task (pid 0): expected only when an "
                            "NMI panicked an idle CPU"))
    return out


def _check_header_cpu_notes(header: Dump, topology: Topology) -> list[Finding]:
    out: list[Finding] = []
    slots = len(header.cpu_note_segments)
    possible, present, online = topology.cpus_possible, topology.cpus_present, topology.cpus_online
    if not possible:
        out.append(_info(FindingCode.CPU_NOTES_UNCHECKED,
                         f"the header has {slots} CPU note slot(s); the topology lists no "
                         "possible CPUs to compare with"))
    elif slots == len(possible):
        out.append(_info(FindingCode.HEADER_CPU_NOTES_MATCH,
                         f"the header has a note slot for each of the {slots} possible CPUs "
                         f"({format_cpu_list(possible)})"))
    elif slots == len(present) and slots >= len(online):
        # Before 6.6 crash_prepare_elf64_headers() wrote one PT_NOTE per *present* CPU.
        out.append(_warning(FindingCode.HEADER_CPU_NOTES_PRESENT_ONLY,
                            f"the header has note slots for the {slots} present CPUs, not the "
                            f"{len(possible)} possible ones (kernels before 6.6 do this)"))
    else:
        out.append(_error(FindingCode.HEADER_CPU_NOTES_WRONG, Verdict.STALE,
                          f"the header has {slots} CPU note slot(s) for {len(possible)} possible, "
                          f"{len(present)} present, {len(online)} online CPUs"
                          + (": online CPUs without a slot save no note" if slots < len(online)
                             else "")))
    infos = len(header.vmcoreinfo_segments)
    if infos == 0:
        out.append(_error(FindingCode.HEADER_VMCOREINFO_NOTE, Verdict.INCOMPLETE,
                          "the header has no VMCOREINFO PT_NOTE"))
    elif infos > 1:
        out.append(_error(FindingCode.HEADER_VMCOREINFO_NOTE, Verdict.INVALID,
                          f"the header has {infos} VMCOREINFO PT_NOTEs"))
    return out


def _check_memory(dump: Dump, topology: Topology, *, prefix: str = "") -> list[Finding]:
    out: list[Finding] = []
    if not topology.system_ram:
        return [_warning(FindingCode.MEMORY_UNCHECKED,
                         f"{prefix}the topology lists no System RAM: memory not checked")]
    expected = subtract_ranges(topology.system_ram, topology.crash_kernel)
    if dump.format == DumpFormat.KDUMP:
        # bitmap1 counts whole pages (makedumpfile rounds a partial last page up).
        expected = subtract_ranges(_page_round(expected, dump.page_size or X86_64_PAGE_SIZE),
                                   topology.crash_kernel)
    described = dump.ram_ranges
    # The first MiB is ignored either way.  On x86 it is always reserved (real-mode
    # trampoline, BIOS data) and was historically copied to a backup region for the capture
    # kernel, so kexec_file_load headers exclude it (elf_header_exclude_ranges() in
    # arch/x86/kernel/crash.c) while kexec-tools' kexec_load headers describe 0x1000-0x9ffff.
    expected_high = subtract_ranges(expected, [_LOW_MEMORY])
    described_high = subtract_ranges(described, [_LOW_MEMORY])
    missing = subtract_ranges(expected_high, described_high)
    extra = subtract_ranges(described_high, expected_high)
    devices = topology.memory_devices
    what = "the crash header" if dump.is_raw_header else "the dump"

    for r in missing:
        ids = _devices_in(r, devices)
        out.append(_error(FindingCode.RAM_NOT_IN_DUMP, Verdict.STALE,
                          f"{prefix}RAM {r} ({format_size(r.size)}"
                          f"{'; ' + ', '.join(ids) if ids else ''}) is not described by {what}",
                          range=r))
    for r in extra:
        for part in intersect_ranges([r], topology.crash_kernel):
            out.append(_error(FindingCode.CRASH_KERNEL_IN_DUMP, Verdict.MISMATCH,
                              f"{prefix}{what} describes {part} ({format_size(part.size)}) "
                              "inside the Crash kernel reservation", range=part))
        for part in subtract_ranges([r], topology.crash_kernel):
            ids = _devices_in(part, devices)
            out.append(_error(FindingCode.DUMP_RANGE_NOT_RAM, Verdict.STALE,
                              f"{prefix}{what} describes {part} ({format_size(part.size)}"
                              f"{'; ' + ', '.join(ids) if ids else ''}) which is not System RAM",
                              range=part))
    if not missing and not extra:
        out.append(_info(FindingCode.MEMORY_MATCH,
                         f"{prefix}{what} describes exactly System RAM minus Crash kernel "
                         f"above 1 MiB ({len(expected_high)} range(s), "
                         f"{format_size(sum(r.size for r in expected_high))})"))
    low = intersect_ranges(described, [_LOW_MEMORY])
    if low:
        out.append(_info(FindingCode.LOW_MEMORY,
                         f"{prefix}the first MiB is described ({_ranges_text(low)}); "
                         "allowed (kexec_load headers do this), not compared"))
    if dump.format in (DumpFormat.ELF, DumpFormat.RAW_ELFCOREHDR):
        text = dump.text_load
        if text is None:
            out.append(_warning(FindingCode.TEXT_LOAD_MISSING,
                                f"{prefix}no kernel-text PT_LOAD (vaddr >= 0xffffffff80000000)"))
        elif subtract_ranges([text.range], topology.system_ram):
            out.append(_warning(FindingCode.TEXT_LOAD_OUTSIDE_RAM,
                                f"{prefix}the kernel-text PT_LOAD {text.range} is not inside "
                                "System RAM", range=text.range))
    return out


def _device_region(dev: MemoryDevice) -> AddressRange | None:
    """The physical range a device occupies, or None when QEMU did not say.

    A pc-dimm is all of ``[addr, addr + size)``.  virtio-mem plugs blocks anywhere in its
    region, so only the whole region (``region_size``) can be compared.
    """
    if dev.kind == "dimm" and dev.size:
        return dev.range
    region_size: int | None = getattr(dev, "region_size", None)
    if dev.kind == "virtio-mem" and region_size:
        return AddressRange(dev.addr, dev.addr + region_size)
    return None


def _check_dimms(dump: Dump, topology: Topology, *, prefix: str = "") -> list[Finding]:
    out: list[Finding] = []
    if not topology.memory_devices:
        return out
    expected = subtract_ranges(topology.system_ram, topology.crash_kernel)
    described = dump.ram_ranges
    what = "the crash header" if dump.is_raw_header else "the dump"
    for dev in topology.memory_devices:
        region = _device_region(dev)
        if region is None:
            out.append(_info(FindingCode.DIMM_UNCHECKED,
                             f"{prefix}{dev.id} ({dev.kind}, {format_size(dev.size)}) has no "
                             "known region: covered by the System RAM comparison only",
                             device=dev.id))
            continue
        r = region
        ram_part = intersect_ranges([r], expected)
        dump_part = intersect_ranges([r], described)
        ram_size = sum(x.size for x in ram_part)
        lacking = subtract_ranges(ram_part, dump_part)
        surplus = subtract_ranges(dump_part, ram_part)
        name = f"{dev.id} {r} ({format_size(r.size)}{'' if dev.kind == 'dimm' else ' ' + dev.kind})"
        if lacking:
            if not intersect_ranges(ram_part, dump_part):
                out.append(_error(FindingCode.DIMM_MISSING, Verdict.STALE,
                                  f"{prefix}{name} is System RAM but missing from {what}",
                                  device=dev.id, range=r))
            else:
                lost = sum(x.size for x in lacking)
                out.append(_error(FindingCode.DIMM_PARTIAL, Verdict.STALE,
                                  f"{prefix}{name} is only partly in {what}: "
                                  f"{format_size(lost)} missing ({_ranges_text(lacking)})",
                                  device=dev.id, range=r))
        if surplus:
            out.append(_error(FindingCode.DIMM_DESCRIBED_NOT_RAM, Verdict.STALE,
                              f"{prefix}{name}: {what} describes {_ranges_text(surplus)}, "
                              "which the guest does not have as System RAM",
                              device=dev.id, range=r))
        if not lacking and not surplus:
            if ram_size == 0:
                out.append(_info(FindingCode.DIMM_NOT_RAM,
                                 f"{prefix}{name} is not System RAM in the guest and not in "
                                 f"{what}", device=dev.id, range=r))
            else:
                part = "" if ram_size == r.size else f" ({format_size(ram_size)} of it is RAM)"
                out.append(_info(FindingCode.DIMM_PRESENT, f"{prefix}{name} is present{part}",
                                 device=dev.id, range=r))
    return out


def _check_vmcoreinfo(dump: Dump, topology: Topology, panic_window: tuple[float, float] | None,
                      clock_slack: float) -> list[Finding]:
    info = dump.vmcoreinfo
    if info is None:
        return [_error(FindingCode.VMCOREINFO_MISSING, Verdict.INCOMPLETE,
                       "the dump has no VMCOREINFO note")]
    out: list[Finding] = []
    if info.malformed_lines:
        out.append(_warning(FindingCode.VMCOREINFO_MALFORMED,
                            f"{len(info.malformed_lines)} VMCOREINFO line(s) do not parse, e.g. "
                            f"{info.malformed_lines[0][:60]!r}"))
    if topology.kernel_release is None:
        out.append(_info(FindingCode.OSRELEASE_UNCHECKED,
                         f"OSRELEASE={info.osrelease}; the topology names no kernel release"))
    elif info.osrelease == topology.kernel_release:
        out.append(_info(FindingCode.OSRELEASE_MATCH, f"OSRELEASE={info.osrelease}"))
    else:
        out.append(_error(FindingCode.OSRELEASE_MISMATCH, Verdict.MISMATCH,
                          f"OSRELEASE={info.osrelease} but the guest ran "
                          f"{topology.kernel_release}"))
    if info.page_size is not None and info.page_size != X86_64_PAGE_SIZE:
        out.append(_warning(FindingCode.PAGESIZE_UNEXPECTED,
                            f"PAGESIZE={info.page_size}, expected {X86_64_PAGE_SIZE} on x86_64"))
    crash_time = info.crash_time
    if crash_time is None:
        out.append(_warning(FindingCode.CRASHTIME_MISSING,
                            "VMCOREINFO has no CRASHTIME (the kernel adds it at the panic)"))
    elif panic_window is not None:
        start, end = panic_window
        if start - clock_slack <= crash_time <= end + clock_slack:
            out.append(_info(FindingCode.CRASHTIME_IN_WINDOW,
                             f"CRASHTIME={crash_time} lies in the panic window "
                             f"[{start:.1f}, {end:.1f}] (±{clock_slack:g} s)"))
        else:
            off = crash_time - end if crash_time > end else crash_time - start
            out.append(_error(FindingCode.CRASHTIME_OUTSIDE_WINDOW, Verdict.MISMATCH,
                              f"CRASHTIME={crash_time} is {off:+.1f} s outside the panic window "
                              f"[{start:.1f}, {end:.1f}] (±{clock_slack:g} s): "
                              "not this panic's dump"))
    return out


def _check_dmesg(dmesg: str, patterns: Sequence[str | re.Pattern[str]]) -> list[Finding]:
    for pattern in patterns:
        match = pattern.search(dmesg) if isinstance(pattern, re.Pattern) else (
            pattern if pattern in dmesg else None)
        if match:
            text = match.group(0) if isinstance(match, re.Match) else match
            return [_info(FindingCode.PANIC_MESSAGE_FOUND, f"the dump's log contains {text!r}")]
    shown = ", ".join(repr(p.pattern if isinstance(p, re.Pattern) else p) for p in patterns)
    return [_error(FindingCode.PANIC_MESSAGE_MISSING, Verdict.MISMATCH,
                   f"the dump's log has none of {shown}")]
