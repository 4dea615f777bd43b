"""Checks of the dump as a file, of VMCOREINFO, and of the panic message in the dump's log."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..topology import Topology
from ..units import format_size
from .constants import X86_64_PAGE_SIZE
from .findings import Finding, FindingCode, Verdict, error, info, warning
from .model import Dump
from .notes import VmcoreInfo

C = FindingCode


def check_integrity(dump: Dump, require_memory: bool) -> list[Finding]:
    """A headers-only copy, a cut-short file, makedumpfile's "incomplete" flag."""
    out: list[Finding] = []
    if dump.is_raw_header:
        out.append(info(C.NOTES_NOT_IN_HEADER,
                        "a raw elfcorehdr: CPU notes counted by their PT_NOTE slots"))
    truncated = dump.truncated_loads
    if truncated:
        missing = sum(seg.file_size - seg.present for seg in truncated)
        text = (f"{len(truncated)} of {len(dump.loads)} PT_LOADs have data past the end of the "
                f"file ({format_size(missing)} absent)")
        if require_memory:
            out.append(error(C.DUMP_TRUNCATED, Verdict.INCOMPLETE,
                             f"{text}: the dump is cut short"))
        else:
            out.append(info(C.HEADERS_ONLY, f"{text}: a headers-only copy"))
    if not dump.stream_complete:
        reasons = "; ".join(dump.observations) or "the dump is marked incomplete"
        out.append(error(C.DUMP_INCOMPLETE, Verdict.INCOMPLETE, reasons))
    return out


def _where(note: VmcoreInfo) -> str:
    return "?" if note.note_offset is None else f"{note.note_offset:#x}"


def check_vmcoreinfo_consistency(notes: Sequence[VmcoreInfo]) -> list[Finding]:
    """A key given two values, or two VMCOREINFO notes that differ: the dump contradicts
    itself (``invalid``).  Two identical notes: a warning."""
    out: list[Finding] = []
    for note in notes:
        for key, value, later in note.conflicts[:1]:
            more = (f" ({len(note.conflicts) - 1} more key(s) too)"
                    if len(note.conflicts) > 1 else "")
            out.append(error(C.VMCOREINFO_CONFLICT, Verdict.INVALID,
                             f"the VMCOREINFO note at {_where(note)} gives {key} twice: "
                             f"{value!r}, then {later!r}{more}"))
    if len(notes) < 2:
        return out
    first = notes[0]
    for other in notes[1:]:
        keys = sorted(first.entries.keys() | other.entries.keys())
        differ = [k for k in keys if first.entries.get(k) != other.entries.get(k)]
        if not differ:
            out.append(warning(C.VMCOREINFO_DUPLICATE,
                               f"VMCOREINFO at {_where(first)} and {_where(other)}: two "
                               "identical copies (a kernel writes one)"))
            continue
        key = differ[0]
        more = f" ({len(differ) - 1} more key(s) differ)" if len(differ) > 1 else ""
        out.append(error(C.VMCOREINFO_CONFLICT, Verdict.INVALID,
                         f"VMCOREINFO at {_where(first)} says {key}="
                         f"{first.entries.get(key)!r} but the one at {_where(other)} says "
                         f"{key}={other.entries.get(key)!r}{more}"))
    return out


def check_vmcoreinfo(notes: Sequence[VmcoreInfo], topology: Topology,
                     panic_window: tuple[float, float] | None, clock_slack: float, *,
                     crashed: bool, where: str = "the dump",
                     kdump_release: str = "") -> list[Finding]:
    """OSRELEASE, PAGESIZE and CRASHTIME of the first VMCOREINFO, after the consistency check.

    ``crashed`` is False for a live header's VMCOREINFO: the kernel adds CRASHTIME only at
    the panic, so its absence says nothing then.  ``kdump_release`` is the release a
    kdump-compressed header names (makedumpfile copies the dumped kernel's utsname there):
    another release in VMCOREINFO is the dump contradicting itself.
    """
    if not notes:
        return [error(C.VMCOREINFO_MISSING, Verdict.INCOMPLETE,
                      f"{where} has no VMCOREINFO note")]
    out = check_vmcoreinfo_consistency(notes)
    note = notes[0]
    if kdump_release and note.osrelease is not None and note.osrelease != kdump_release:
        out.append(error(C.VMCOREINFO_CONFLICT, Verdict.INVALID,
                         f"the kdump header names release {kdump_release!r} but VMCOREINFO at "
                         f"{_where(note)} says OSRELEASE={note.osrelease}"))
    if note.malformed_lines:
        out.append(warning(C.VMCOREINFO_MALFORMED,
                           f"{len(note.malformed_lines)} VMCOREINFO line(s) do not parse, e.g. "
                           f"{note.malformed_lines[0][:60]!r}"))
    out += _check_osrelease(note, topology)
    if note.page_size is not None and note.page_size != X86_64_PAGE_SIZE:
        out.append(warning(C.PAGESIZE_UNEXPECTED,
                           f"PAGESIZE={note.page_size}, expected {X86_64_PAGE_SIZE} on x86_64"))
    out += _check_crashtime(note, panic_window, clock_slack, crashed=crashed)
    return out


def _check_osrelease(note: VmcoreInfo, topology: Topology) -> list[Finding]:
    if topology.kernel_release is None:
        return [info(C.OSRELEASE_UNCHECKED,
                     f"OSRELEASE={note.osrelease}; the topology names no kernel release")]
    if note.osrelease == topology.kernel_release:
        return [info(C.OSRELEASE_MATCH, f"OSRELEASE={note.osrelease}")]
    return [error(C.OSRELEASE_MISMATCH, Verdict.MISMATCH,
                  f"OSRELEASE={note.osrelease} but the guest ran {topology.kernel_release}")]


def _check_crashtime(note: VmcoreInfo, panic_window: tuple[float, float] | None,
                     clock_slack: float, *, crashed: bool) -> list[Finding]:
    crash_time = note.crash_time
    if crash_time is None:
        if not crashed:
            return []
        return [warning(C.CRASHTIME_MISSING,
                        "VMCOREINFO has no CRASHTIME (the kernel adds it at the panic)")]
    if panic_window is None:
        return []
    start, end = panic_window
    if start - clock_slack <= crash_time <= end + clock_slack:
        return [info(C.CRASHTIME_IN_WINDOW,
                     f"CRASHTIME={crash_time} lies in the panic window "
                     f"[{start:.1f}, {end:.1f}] (±{clock_slack:g} s)")]
    off = crash_time - end if crash_time > end else crash_time - start
    return [error(C.CRASHTIME_OUTSIDE_WINDOW, Verdict.MISMATCH,
                  f"CRASHTIME={crash_time} is {off:+.1f} s outside the panic window "
                  f"[{start:.1f}, {end:.1f}] (±{clock_slack:g} s): not this panic's dump")]


def check_dmesg(dmesg: str, patterns: Sequence[str | re.Pattern[str]]) -> list[Finding]:
    """The dump's log must hold a panic message."""
    for pattern in patterns:
        match = pattern.search(dmesg) if isinstance(pattern, re.Pattern) else (
            pattern if pattern in dmesg else None)
        if match:
            text = match.group(0) if isinstance(match, re.Match) else match
            return [info(C.PANIC_MESSAGE_FOUND, f"the dump's log contains {text!r}")]
    shown = ", ".join(repr(p.pattern if isinstance(p, re.Pattern) else p) for p in patterns)
    return [error(C.PANIC_MESSAGE_MISSING, Verdict.MISMATCH,
                  f"the dump's log has none of {shown}")]
