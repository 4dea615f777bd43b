"""The verifier's vocabulary: verdicts, severities, areas, finding codes and ``Finding``.

Finding codes are stable strings (tests, dashboards and ``expect.codes`` in the golden files
match on them): values are added, never renamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..topology import AddressRange


class Verdict(StrEnum):
    """The overall answer (``harness.vmcore.verifier`` says what each means)."""

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
    HEADER_CPU_SLOTS_MISSING = "header-cpu-slots-missing"
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
    DIMM_SIZE_MISMATCH = "dimm-size-mismatch"
    DIMM_RAM_UNACCOUNTED = "dimm-ram-unaccounted"
    # vmcoreinfo
    VMCOREINFO_MISSING = "vmcoreinfo-missing"
    VMCOREINFO_MALFORMED = "vmcoreinfo-malformed"
    VMCOREINFO_CONFLICT = "vmcoreinfo-conflict"
    VMCOREINFO_DUPLICATE = "vmcoreinfo-duplicate"
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


def _area_by_prefix(code: FindingCode) -> Area:
    for prefixes, area in _AREA_BY_PREFIX:
        if code.value.startswith(prefixes):
            return area
    raise AssertionError(f"no area for {code}")  # pragma: no cover - a code without an area


#: Looked up, not recomputed: a report at the range limits has tens of thousands of findings.
_AREAS = {code: _area_by_prefix(code) for code in FindingCode}


def area_of(code: FindingCode) -> Area:
    """The area a finding code belongs to."""
    return _AREAS[code]


#: The prefix of findings about the raw elfcorehdr handed to ``verify`` beside a dump.
HEADER_PREFIX = "header: "


@dataclass(frozen=True, slots=True)
class Finding:
    """One observation.  ``verdict`` is set on errors: the verdict this error implies.

    ``in_header`` marks findings about the raw elfcorehdr passed beside a dump (their
    messages start with ``header: ``).
    """

    severity: Severity
    code: FindingCode
    message: str
    verdict: Verdict | None = None
    cpu: int | None = None
    range: AddressRange | None = None
    device: str | None = None
    in_header: bool = False

    @property
    def area(self) -> Area:
        return area_of(self.code)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value, "code": self.code.value, "area": self.area.value,
            "message": self.message,
            "verdict": None if self.verdict is None else self.verdict.value,
            "cpu": self.cpu, "device": self.device, "in_header": self.in_header,
            "range": None if self.range is None else {
                "start": hex(self.range.start), "end": hex(self.range.end)},
        }


def error(code: FindingCode, verdict: Verdict, message: str, **where: Any) -> Finding:
    return Finding(Severity.ERROR, code, message, verdict, **where)


def warning(code: FindingCode, message: str, **where: Any) -> Finding:
    return Finding(Severity.WARNING, code, message, **where)


def info(code: FindingCode, message: str, **where: Any) -> Finding:
    return Finding(Severity.INFO, code, message, **where)


def decide_verdict(findings: Sequence[Finding]) -> Verdict:
    """The worst verdict any error implies (``VERDICT_PRECEDENCE``), else accurate."""
    implied = {f.verdict for f in findings if f.severity == Severity.ERROR and f.verdict}
    for verdict in VERDICT_PRECEDENCE:
        if verdict in implied:
            return verdict
    return Verdict.ACCURATE


def ranges_text(ranges: Sequence[AddressRange], limit: int = 4) -> str:
    """The first few ranges, then how many more."""
    shown = ", ".join(str(r) for r in ranges[:limit])
    return shown + (f" and {len(ranges) - limit} more" if len(ranges) > limit else "")
