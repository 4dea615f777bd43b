"""Human-readable description of a ``Dump`` (what ``kdump-harness vmcore inspect`` prints)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from ..units import format_size
from .constants import DumpFormat
from .model import Dump

_FORMAT_NAMES = {
    DumpFormat.ELF: "ELF core",
    DumpFormat.RAW_ELFCOREHDR: "raw elfcorehdr (first kernel's crash header)",
    DumpFormat.KDUMP: "kdump-compressed",
    DumpFormat.FLATTENED: "flattened",
}
_MAX_LISTED = 16


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def describe_dump(dump: Dump) -> str:
    """A few lines per part: format, notes, VMCOREINFO, memory, makedumpfile header."""
    kind = _FORMAT_NAMES[dump.format] + (" (flattened)" if dump.flattened else "")
    lines = [f"{dump.source}: {kind}, {format_size(dump.file_size)}, page size {dump.page_size}"]
    lines += _header_lines(dump)
    lines += _slot_lines(dump) if dump.is_raw_header else _note_lines(dump)
    lines += _memory_lines(dump)
    lines += [f"  note: {remark}" for remark in dump.observations]
    return "\n".join(lines)


def _more(items: Sequence[object]) -> list[str]:
    return [f"    ... and {len(items) - _MAX_LISTED} more"] if len(items) > _MAX_LISTED else []


def _header_lines(dump: Dump) -> list[str]:
    lines = []
    if dump.elf is not None:
        types = Counter(p.type_name for p in dump.program_headers)
        listed = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
        extended = " (PN_XNUM extended count)" if dump.elf.phnum_extended else ""
        lines.append(f"  program headers: {dump.elf.phnum}{extended}: {listed}")
    if dump.kdump is not None:
        k = dump.kdump
        lines.append(f"  kdump header v{k.header_version}: release {k.release}, machine "
                     f"{k.machine}, block size {k.block_size}, nr_cpus {k.nr_cpus}, "
                     f"dump_level {k.dump_level}, status {k.status:#x}, "
                     f"max_mapnr {k.max_mapnr}, written {_utc(k.timestamp)}")
    return lines


def _slot_lines(dump: Dump) -> list[str]:
    cpus = dump.cpu_note_segments
    lines = [f"  CPU note slots: {len(cpus)}"]
    lines += [f"    cpu slot {seg.cpu}: {seg.size} bytes at {seg.address:#x}"
              for seg in cpus[:_MAX_LISTED]]
    lines += _more(cpus)
    lines += [f"  VMCOREINFO note: {seg.size} bytes at {seg.address:#x}"
              for seg in dump.vmcoreinfo_segments]
    return lines


def _note_lines(dump: Dump) -> list[str]:
    lines = [f"  CPU notes: {len(dump.cpu_notes)}"]
    for note in dump.cpu_notes[:_MAX_LISTED]:
        if note.prstatus is None:
            lines.append(f"    note {note.index}: undecodable ({note.desc_size}-byte "
                         "descriptor, expected 336)")
            continue
        idle = " (idle)" if note.idle else ""
        lines.append(f"    note {note.index}: pid {note.prstatus.pid}{idle} "
                     f"rip {note.prstatus.rip:#x} rsp {note.prstatus.rsp:#x}")
    lines += _more(dump.cpu_notes)
    other = Counter(f"{n.name}/{n.type_name}" for n in dump.notes
                    if not (n.name == "CORE" and n.type_name == "NT_PRSTATUS"))
    if other:
        listed = ", ".join(f"{n} {k}" for k, n in sorted(other.items()))
        lines.append(f"  other notes: {listed}")
    info = dump.vmcoreinfo
    if info is None:
        return [*lines, "  VMCOREINFO: none"]
    crash = info.crash_time
    when = f" ({_utc(crash)})" if crash is not None else ""
    offset = info.kernel_offset
    copies = f" ({len(dump.vmcoreinfos)} VMCOREINFO notes)" if len(dump.vmcoreinfos) > 1 else ""
    lines.append(f"  VMCOREINFO: OSRELEASE={info.osrelease} PAGESIZE={info.page_size} "
                 f"CRASHTIME={crash}{when} KERNELOFFSET="
                 f"{'-' if offset is None else hex(offset)}, {len(info.entries)} entries{copies}")
    return lines


def _memory_lines(dump: Dump) -> list[str]:
    lines = []
    text = dump.text_load
    if text is not None:
        vaddr = "" if text.vaddr is None else f" at vaddr {text.vaddr:#x}"
        lines.append(f"  kernel text: {text.range} ({format_size(text.range.size)}){vaddr}")
    ram = dump.ram_ranges
    lines.append(f"  RAM described: {len(ram)} range(s), {format_size(dump.memory_bytes_described)}"
                 f" (from {len(dump.ram_loads)} {'PT_LOAD' if dump.elf else 'run'}(s), merged)")
    lines += [f"    {r}  {format_size(r.size)}" for r in ram[:_MAX_LISTED]]
    lines += _more(ram)
    truncated = dump.truncated_loads
    if truncated:
        lines.append(f"  data: {len(truncated)} of {len(dump.loads)} PT_LOADs lie past the end "
                     "of the file (headers-only copy or cut short)")
    elif dump.format == DumpFormat.ELF and dump.loads:
        with_data = sum(1 for seg in dump.loads if seg.file_size)
        lines.append(f"  data: {with_data} of {len(dump.loads)} PT_LOADs carry data in the file")
    return lines
