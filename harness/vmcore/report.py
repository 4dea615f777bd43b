"""``VerifyReport``: the verdict, every finding, and how to show them to a person.

The text report leads with the verdict and what caused it (the error findings), then the
warnings, then a few lines summarising what matched ("8 of 8 DIMMs in the dump and the
header"); ``to_text(verbose=True)`` lists every finding by area.  The JSON form always holds
every finding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .constants import DumpFormat
from .findings import HEADER_PREFIX, Area, Finding, FindingCode, Severity, Verdict

_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
#: Per-device infos are counted in the summary, not listed.
_DEVICE_CODES = (FindingCode.DIMM_PRESENT, FindingCode.DIMM_UNCHECKED)
#: What a device finding about one dump (or header) says; the rest compare QEMU and guest.
_PER_DUMP = frozenset({FindingCode.DIMM_PRESENT, FindingCode.DIMM_MISSING,
                       FindingCode.DIMM_PARTIAL, FindingCode.DIMM_DESCRIBED_NOT_RAM})


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
        counted = Counter(f.severity for f in self.findings)
        return {s.value: counted[s] for s in Severity}

    def to_text(self, *, verbose: bool = False) -> str:
        """The verdict line, its causes, the warnings, a summary of what matched.

        ``verbose`` lists every finding instead, grouped by area (errors first).
        """
        what = f"{self.dump_source} ({self.dump_format.value})"
        if self.raw_header_source:
            what += f" + header {self.raw_header_source}"
        lines = [(f"vmcore verdict: {self.verdict.value.upper()}  {what} vs "
                  f"{self.topology_source or 'topology'} snapshot")]
        raw = self.dump_format == DumpFormat.RAW_ELFCOREHDR
        lines += _all_findings(self.findings) if verbose else _brief(self.findings, raw)
        counts = self.counts()
        lines.append(f"summary: {counts['error']} error(s), {counts['warning']} warning(s), "
                     f"{counts['info']} info; verdict {self.verdict.value}"
                     + ("" if verbose else " (--verbose lists every finding)"))
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


def _line(f: Finding, width: int, *, area: bool) -> str:
    where = f"{f.area.value:<10} " if area else ""
    return f"  {where}{f.severity.value:<7} {f.code.value:<{width}}  {f.message}"


def _all_findings(findings: Sequence[Finding]) -> list[str]:
    width = max((len(f.code.value) for f in findings), default=0)
    lines = []
    for area in Area:
        group = sorted((f for f in findings if f.area == area),
                       key=lambda f: _SEVERITY_ORDER[f.severity])
        if group:
            lines.append(f"{area.value}:")
            lines += [_line(f, width, area=False) for f in group]
    return lines


def _brief(findings: Sequence[Finding], dump_is_header: bool) -> list[str]:
    errors = [f for f in findings if f.severity == Severity.ERROR]
    warnings = [f for f in findings if f.severity == Severity.WARNING]
    width = max((len(f.code.value) for f in errors + warnings), default=0)
    lines = []
    if errors:
        lines.append("because:")
        lines += [_line(f, width, area=True) for f in errors]
    if warnings:
        lines.append("warnings:")
        lines += [_line(f, width, area=True) for f in warnings]
    matched = matched_lines(findings, dump_is_header=dump_is_header)
    if matched:
        lines.append("matched:")
        lines += [f"  {line}" for line in matched]
    return lines


def _device_summary(findings: Sequence[Finding], dump_word: str) -> str | None:
    """``8 of 8 DIMMs in the dump and the header`` (per artefact when they differ)."""
    per: dict[bool, tuple[int, int]] = {}
    for in_header in (False, True):
        devices = {f.device for f in findings if f.code in _PER_DUMP
                   and f.in_header == in_header}
        present = sum(1 for f in findings if f.code == FindingCode.DIMM_PRESENT
                      and f.in_header == in_header)
        if devices:
            per[in_header] = (present, len(devices))
    unchecked = len({f.device for f in findings if f.code == FindingCode.DIMM_UNCHECKED})
    tail = f" ({unchecked} without a known region)" if unchecked else ""
    if not per:
        return f"{unchecked} device(s) without a known region" if unchecked else None
    dump, header = per.get(False), per.get(True)
    if dump is not None and header is not None and dump == header:
        return f"{dump[0]} of {dump[1]} DIMMs in the {dump_word} and the header{tail}"
    parts = [f"{n} of {total} DIMMs in the {'header' if h else dump_word}"
             for h, (n, total) in sorted(per.items())]
    return ", ".join(parts) + tail


def matched_lines(findings: Sequence[Finding], *, dump_is_header: bool = False) -> list[str]:
    """One line per area: its info findings, the dump's and the header's merged when equal."""
    lines = []
    for area in Area:
        infos = [f for f in findings if f.area == area and f.severity == Severity.INFO
                 and f.code not in _DEVICE_CODES]
        texts: list[str] = []
        for f in infos:
            body = f.message.removeprefix(HEADER_PREFIX) if f.in_header else f.message
            twin = any(g.code == f.code and g.in_header != f.in_header and g.message.endswith(body)
                       for g in infos)
            if twin and f.in_header:
                continue                    # said once, with "(dump and header)"
            texts.append(f"{body} (dump and header)" if twin else f.message)
        if area == Area.DIMM:
            devices = _device_summary(findings, "crash header" if dump_is_header else "dump")
            if devices:
                texts.insert(0, devices)
        if texts:
            lines.append(f"{area.value}: " + "; ".join(texts))
    return lines
