"""Which kind of ELF crash file this is, and whether its parts could lie where they say.

Two kinds of ELF file describe a crash, and the program headers say which:

* the first kernel's elfcorehdr (``crash_prepare_elf64_headers()``, or kexec-tools' for
  ``kexec_load``) sets ``p_offset == p_paddr`` in every PT_NOTE and PT_LOAD: both are
  physical addresses, and the note buffers live in guest memory, not in the file.  One
  exception: kexec-tools (and kernels before 5.5) point the PT_LOAD of the low-memory backup
  region at its copy, so a PT_LOAD ending at or below 1 MiB may differ.
* /proc/vmcore and ``makedumpfile -E`` files have file offsets in ``p_offset``: the merged
  PT_NOTE has ``p_paddr`` 0 and its data lies inside the file.

The *number* of PT_NOTEs tells nothing: an ELF core may spread its notes over several, and
a one-CPU kernel header has two.  The PT_NOTEs decide (the PT_LOADs when there are none),
and a file whose program headers disagree is refused, naming the program header and
``p_offset``, rather than guessed: a guess either skips the VMCOREINFO check or reads
physical addresses as file offsets.

The structural checks refuse files no kernel or makedumpfile writes: no PT_LOAD at all,
note data laid over the ELF header, the program header table or other note data, PT_LOAD
data laid over any of those, overlapping note buffers or RAM ranges in a raw header.  A
verdict such as ``stale`` would blame the kernel's hot-plug code for them.  PT_LOAD data
past the end of the file is *not* refused: the ``headers`` capture mode keeps only the first
MiB of /proc/vmcore.  Every check is a sort and a sweep (O(n log n) in program headers).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

from ..errors import VmcoreFormatError
from .constants import ELF64_EHDR_SIZE, ELF64_PHDR_SIZE, LOW_MEMORY_END, DumpFormat, PhdrType
from .elf import ElfHeader, ProgramHeader

_E_PHNUM_OFFSET = 56


def _physical_note(phdr: ProgramHeader) -> bool:
    # A note buffer at physical 0 does not exist (crash_notes is a per-CPU allocation), so
    # 0 == 0 is not evidence of a raw header.
    return phdr.offset == phdr.paddr != 0


def _physical_load(phdr: ProgramHeader) -> bool:
    return phdr.offset == phdr.paddr


def _low(phdr: ProgramHeader) -> bool:
    """A PT_LOAD of the first MiB, where kexec-tools' backup region may point elsewhere."""
    return phdr.paddr + phdr.memsz <= LOW_MEMORY_END


def _what(phdr: ProgramHeader, physical: bool) -> str:
    relation = "==" if physical else "!="
    meaning = "a physical address" if physical else "a file offset"
    return (f"program header {phdr.number} ({phdr.type_name}) has p_offset {phdr.offset:#x} "
            f"{relation} p_paddr {phdr.paddr:#x} ({meaning})")


def _mixed(name: str, odd: ProgramHeader, odd_physical: bool, ref: ProgramHeader,
           ref_physical: bool) -> VmcoreFormatError:
    return VmcoreFormatError(
        f"{name}: {_what(odd, odd_physical)} but {_what(ref, ref_physical)}: half a raw "
        "elfcorehdr, half an ELF core", offset=odd.field_offset("p_offset"), field="p_offset")


def _kind_from_notes(notes: Sequence[ProgramHeader], loads: Sequence[ProgramHeader],
                     name: str) -> DumpFormat:
    first = notes[0]
    raw = _physical_note(first)
    for phdr in notes[1:]:
        if _physical_note(phdr) != raw:
            raise _mixed(name, phdr, not raw, first, raw)
    high = [p for p in loads if not _low(p)]
    if raw:
        for phdr in high:
            if not _physical_load(phdr):
                raise _mixed(name, phdr, False, first, True)
        return DumpFormat.RAW_ELFCOREHDR
    # One ELF PT_LOAD may have p_offset == p_paddr by chance; all of several cannot.
    if len(high) >= 2 and all(_physical_load(p) for p in high):
        raise _mixed(name, high[0], True, first, False)
    return DumpFormat.ELF


def elf_kind(phdrs: Sequence[ProgramHeader], name: str) -> DumpFormat:
    """``RAW_ELFCOREHDR`` or ``ELF`` by the rule in the module docstring (or refused)."""
    notes = [p for p in phdrs if p.type == PhdrType.PT_NOTE]
    loads = [p for p in phdrs if p.type == PhdrType.PT_LOAD]
    if notes:
        return _kind_from_notes(notes, loads, name)
    high = [p for p in loads if not _low(p)]
    if high and all(_physical_load(p) for p in high):
        return DumpFormat.RAW_ELFCOREHDR
    return DumpFormat.ELF


def resolve_elf_kind(phdrs: Sequence[ProgramHeader], wanted: DumpFormat | None,
                     name: str) -> DumpFormat:
    """The file's kind; a caller's ``wanted`` kind that the headers contradict is refused."""
    kind = elf_kind(phdrs, name)
    if wanted is None or wanted == kind:
        return kind
    deciding = next((p for p in phdrs if p.type == PhdrType.PT_NOTE),
                    next(p for p in phdrs if p.type == PhdrType.PT_LOAD))
    physical = kind == DumpFormat.RAW_ELFCOREHDR
    raise VmcoreFormatError(
        f"{name}: read as {wanted.value}, but {_what(deciding, physical)}, which makes it "
        f"{'a raw elfcorehdr' if physical else 'an ELF core'}",
        offset=deciding.field_offset("p_offset"), field="p_offset")


def require_loads(phdrs: Sequence[ProgramHeader], name: str) -> None:
    """Every crash header describes memory: the kernel text at least."""
    if not any(p.type == PhdrType.PT_LOAD for p in phdrs):
        raise VmcoreFormatError(
            f"{name}: none of the {len(phdrs)} program headers is a PT_LOAD: a crash header "
            "always describes memory", offset=_E_PHNUM_OFFSET, field="e_phnum")


class _Extent(NamedTuple):
    """A byte range of the file and what lies there, for overlap messages."""

    start: int
    end: int
    label: str
    phdr: ProgramHeader | None


def _note_extents(phdrs: Sequence[ProgramHeader]) -> list[_Extent]:
    return sorted((_Extent(p.offset, p.offset + p.filesz, f"PT_NOTE {p.number} data", p)
                   for p in phdrs if p.type == PhdrType.PT_NOTE and p.filesz),
                  key=lambda e: (e.start, e.end))


def _overlap_error(name: str, what: _Extent, other: _Extent) -> VmcoreFormatError:
    assert what.phdr is not None
    return VmcoreFormatError(
        f"{name}: {what.label} [{what.start:#x}, {what.end:#x}) lies over {other.label} "
        f"[{other.start:#x}, {other.end:#x})", offset=what.phdr.field_offset("p_offset"),
        field="p_offset")


def check_elf_core_layout(header: ElfHeader, phdrs: Sequence[ProgramHeader],
                          name: str) -> None:
    """Refuse note or PT_LOAD data laid over the headers or over note data."""
    fixed = [_Extent(0, ELF64_EHDR_SIZE, "the ELF header", None),
             _Extent(header.phoff, header.phoff + header.phnum * ELF64_PHDR_SIZE,
                     "the program header table", None)]
    notes = _note_extents(phdrs)
    for note in notes:
        for part in fixed:
            if note.start < part.end and part.start < note.end:
                raise _overlap_error(name, note, part)
    widest: _Extent | None = None
    for note in notes:
        if widest is not None and note.start < widest.end:
            raise _overlap_error(name, note, widest)
        if widest is None or note.end > widest.end:
            widest = note
    taken = sorted(fixed + notes, key=lambda e: (e.start, e.end))   # disjoint by now
    ends = [e.end for e in taken]
    for phdr in phdrs:
        if phdr.type != PhdrType.PT_LOAD or not phdr.filesz:
            continue
        data = _Extent(phdr.offset, phdr.offset + phdr.filesz,
                       f"PT_LOAD {phdr.number} data", phdr)
        hit = bisect_right(ends, data.start)
        if hit < len(taken) and taken[hit].start < data.end:
            raise _overlap_error(name, data, taken[hit])


def check_raw_layout(phdrs: Sequence[ProgramHeader], name: str) -> None:
    """Refuse note buffers that share guest memory (each CPU has its own, VMCOREINFO too)."""
    buffers = sorted((p for p in phdrs if p.type == PhdrType.PT_NOTE and p.memsz),
                     key=lambda p: (p.paddr, p.paddr + p.memsz))
    widest: ProgramHeader | None = None
    for phdr in buffers:
        if widest is not None and phdr.paddr < widest.paddr + widest.memsz:
            raise VmcoreFormatError(
                f"{name}: PT_NOTE {phdr.number}'s buffer {phdr.physical_range} overlaps PT_NOTE "
                f"{widest.number}'s {widest.physical_range}: each CPU and VMCOREINFO has its "
                "own", offset=phdr.field_offset("p_paddr"), field="p_paddr")
        if widest is None or phdr.paddr + phdr.memsz > widest.paddr + widest.memsz:
            widest = phdr


def check_ram_overlaps(loads: Sequence[tuple[int, int, int]], phdrs: Sequence[ProgramHeader],
                       name: str) -> None:
    """No kernel writes overlapping RAM loads; a torn or corrupt header does.

    ``loads`` are ``(start, end, phdr index)`` of the RAM PT_LOADs.
    """
    ram = sorted((x for x in loads if x[1] > x[0]), key=lambda x: (x[0], x[1]))
    for before, after in pairwise(ram):
        if after[0] < before[1]:
            phdr = phdrs[after[2]]
            raise VmcoreFormatError(
                f"{name}: PT_LOAD {after[2]} [{after[0]:#x}-{after[1]:#x}) overlaps PT_LOAD "
                f"{before[2]} [{before[0]:#x}-{before[1]:#x})",
                offset=phdr.field_offset("p_paddr"), field="p_paddr")
