"""Open any dump: format detection and the two ELF readers (vmcore and raw elfcorehdr).

Detection is by content:

* ``makedumpfile`` signature: flattened; the inner format is detected the same way;
* ``KDUMP   `` signature: kdump-compressed;
* ELF magic: an ELF core, then one of two things, told apart by the PT_NOTE entries.
  The first kernel's elfcorehdr (``crash_prepare_elf64_headers``) has one PT_NOTE per
  possible CPU plus one for VMCOREINFO, each with ``p_offset == p_paddr`` = the physical
  address of a note buffer.  /proc/vmcore (and ``makedumpfile -E``) merge them into a single
  PT_NOTE whose ``p_offset`` is a file offset and whose ``p_paddr`` is 0.  So: more than one
  PT_NOTE, or PT_NOTEs that all point at a physical address (``p_offset == p_paddr != 0``),
  mean a raw elfcorehdr.

A caller that knows better passes ``format=`` to skip detection.
"""

from __future__ import annotations

import os
from dataclasses import replace
from itertools import pairwise

from ..errors import VmcoreFormatError
from .constants import (
    CORE_NOTE_NAME,
    ELF_MAGIC,
    KDUMP_SIGNATURE,
    KERNEL_TEXT_MAP_START,
    MAKEDUMPFILE_SIGNATURE,
    VMCOREINFO_MIN_NOTE_SEGMENT,
    VMCOREINFO_NOTE_NAME,
    X86_64_PAGE_SIZE,
    DumpFormat,
    Limits,
    NoteType,
    PhdrType,
)
from .elf import ElfHeader, Note, ProgramHeader, parse_notes, read_elf_header, read_program_headers
from .flattened import FlattenedSource
from .kdump import read_kdump
from .model import Dump, LoadKind, LoadSegment, NoteRole, NoteSegment
from .notes import CpuNote, VmcoreInfo
from .source import BufferSource, BytesLike, ByteSource, FileSource

DumpInput = str | os.PathLike[str] | BytesLike


def detect_format(source: ByteSource) -> DumpFormat:
    """Tell a dump's format from its content (see the module docstring for the rule)."""
    fmt = _signature_format(source)
    if fmt == DumpFormat.ELF:
        phdrs = read_program_headers(source, read_elf_header(source))
        return DumpFormat.RAW_ELFCOREHDR if looks_like_raw_elfcorehdr(phdrs) else DumpFormat.ELF
    return fmt


def _signature_format(source: ByteSource) -> DumpFormat:
    """FLATTENED, KDUMP or ELF (either ELF kind) from the first bytes."""
    head = source.read_available(0, 16)
    if head.startswith(MAKEDUMPFILE_SIGNATURE):
        return DumpFormat.FLATTENED
    if head.startswith(KDUMP_SIGNATURE):
        return DumpFormat.KDUMP
    if head.startswith(ELF_MAGIC):
        return DumpFormat.ELF
    if head.startswith(b"DISKDUMP"):
        raise VmcoreFormatError(f"{source.name}: an old diskdump file; only makedumpfile's "
                                "kdump-compressed format is supported", offset=0, field="signature")
    raise VmcoreFormatError(f"{source.name}: not a crash dump (no ELF magic, \"KDUMP   \" or "
                            "\"makedumpfile\" signature)", offset=0, field="signature")


def looks_like_raw_elfcorehdr(phdrs: tuple[ProgramHeader, ...]) -> bool:
    """True for the first kernel's header, False for a /proc/vmcore-style file."""
    notes = [p for p in phdrs if p.type == PhdrType.PT_NOTE]
    if len(notes) > 1:
        return True
    return bool(notes) and all(p.offset == p.paddr != 0 for p in notes)


def open_dump(source: DumpInput, *, format: DumpFormat | str = "auto") -> Dump:
    """Read a dump's headers, notes and memory map from a path or from bytes.

    ``format`` is ``"auto"`` or a ``DumpFormat`` value.  Only header regions are read, so a
    multi-GiB dump costs a few small reads.  Raises ``VmcoreFormatError`` (naming the file,
    offset and field) on anything malformed, and ``OSError`` if a path cannot be opened.
    """
    wanted = _parse_format(format)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return read_dump(BufferSource(source), wanted)
    with FileSource(source) as file_source:
        return read_dump(file_source, wanted)


def parse_elfcorehdr(buffer: BytesLike, *, name: str = "<elfcorehdr>") -> Dump:
    """Parse the first kernel's elfcorehdr from a buffer (e.g. guest memory via pmemsave).

    The buffer may be longer than the header (the whole ``memsz`` region, zero-padded).
    """
    return read_dump(BufferSource(buffer, name), DumpFormat.RAW_ELFCOREHDR)


def _parse_format(format: DumpFormat | str) -> DumpFormat | None:
    if format == "auto":
        return None
    try:
        return DumpFormat(format)
    except ValueError:
        choices = ", ".join(["auto", *(f.value for f in DumpFormat)])
        raise ValueError(f"unknown dump format {format!r} (choose from {choices})") from None


def read_dump(source: ByteSource, format: DumpFormat | None = None) -> Dump:
    """Read a dump from an open ``ByteSource``; ``format=None`` detects it."""
    fmt = format or _signature_format(source)
    if fmt == DumpFormat.FLATTENED:
        flat = FlattenedSource(source)
        inner = _signature_format(flat)
        if inner == DumpFormat.FLATTENED:
            raise VmcoreFormatError(f"{source.name}: a flattened stream inside a flattened "
                                    "stream", offset=4096, field="signature")
        dump = read_dump(flat, inner if inner == DumpFormat.KDUMP else None)
        observations = dump.observations
        if not flat.complete:
            observations += (("the flattened stream ends without its end marker: makedumpfile "
                              "did not finish or the copy was cut short"),)
        return replace(dump, flattened=True, stream_complete=dump.stream_complete and flat.complete,
                       observations=observations)
    if fmt == DumpFormat.KDUMP:
        return read_kdump(source)
    header = read_elf_header(source)
    phdrs = read_program_headers(source, header)
    if format is None and looks_like_raw_elfcorehdr(phdrs):
        fmt = DumpFormat.RAW_ELFCOREHDR
    if fmt == DumpFormat.RAW_ELFCOREHDR:
        return _read_raw_elfcorehdr(source, header, phdrs)
    return _read_elf_vmcore(source, header, phdrs)


def _classify_load(phdr: ProgramHeader) -> LoadKind:
    # The text PT_LOAD maps _text.._end at its kernel-map address; every other PT_LOAD is a
    # System RAM range at its direct-map address (kexec-tools may leave vaddr 0).
    return LoadKind.TEXT if phdr.vaddr >= KERNEL_TEXT_MAP_START else LoadKind.RAM


def _check_ram_overlaps(loads: list[LoadSegment], phdrs: tuple[ProgramHeader, ...],
                        name: str) -> None:
    """No kernel writes overlapping RAM loads; a torn or corrupt header does."""
    ram = sorted((seg for seg in loads if seg.kind == LoadKind.RAM and seg.range.size),
                 key=lambda seg: seg.range.start)
    for before, after in pairwise(ram):
        if after.range.start < before.range.end:
            assert after.phdr_index is not None
            phdr = phdrs[after.phdr_index]
            raise VmcoreFormatError(
                f"{name}: PT_LOAD {after.phdr_index} {after.range} overlaps PT_LOAD "
                f"{before.phdr_index} {before.range}", offset=phdr.field_offset("p_paddr"),
                field="p_paddr")


def _read_elf_vmcore(source: ByteSource, header: ElfHeader,
                     phdrs: tuple[ProgramHeader, ...]) -> Dump:
    name = source.name
    notes: list[Note] = []
    total = 0
    for phdr in phdrs:
        if phdr.type != PhdrType.PT_NOTE or not phdr.filesz:
            continue
        total += phdr.filesz
        if total > Limits.MAX_NOTE_SEGMENT:
            raise VmcoreFormatError(f"{name}: more than {Limits.MAX_NOTE_SEGMENT:#x} bytes of "
                                    "notes",
                                    offset=phdr.field_offset("p_filesz"), field="p_filesz")
        if phdr.offset + phdr.filesz > source.size:
            raise VmcoreFormatError(
                f"{name}: PT_NOTE {phdr.number} data [{phdr.offset:#x}, "
                f"{phdr.offset + phdr.filesz:#x}) lies past the end of the file "
                f"({source.size:#x}): the dump is cut short or not a file",
                offset=phdr.field_offset("p_offset"), field="p_offset")
        data = source.read_at(phdr.offset, phdr.filesz, field="PT_NOTE data")
        notes.extend(parse_notes(data, base_offset=phdr.offset, source_name=name))
        if len(notes) > Limits.MAX_NOTES:
            raise VmcoreFormatError(f"{name}: more than {Limits.MAX_NOTES} notes",
                                    offset=phdr.offset, field="notes")
    cpu_notes = tuple(CpuNote.from_note(i, n) for i, n in enumerate(
        n for n in notes if n.name == CORE_NOTE_NAME and n.type == NoteType.NT_PRSTATUS))
    info_note = next((n for n in notes if n.name == VMCOREINFO_NOTE_NAME
                      and n.type == NoteType.NT_VMCOREINFO), None)
    vmcoreinfo = VmcoreInfo.parse(info_note.desc) if info_note is not None else None

    loads: list[LoadSegment] = []
    for phdr in phdrs:
        if phdr.type != PhdrType.PT_LOAD:
            continue
        present = max(0, min(phdr.filesz, source.size - phdr.offset)) if phdr.filesz else 0
        loads.append(LoadSegment(kind=_classify_load(phdr), range=phdr.physical_range,
                                 vaddr=phdr.vaddr, file_offset=phdr.offset,
                                 file_size=phdr.filesz, present=present, phdr_index=phdr.number))
    _check_ram_overlaps(loads, phdrs, name)
    page_size = (vmcoreinfo.page_size if vmcoreinfo else None) or X86_64_PAGE_SIZE
    return Dump(format=DumpFormat.ELF, source=name, file_size=source.size, page_size=page_size,
                elf=header, program_headers=phdrs, notes=tuple(notes), cpu_notes=cpu_notes,
                vmcoreinfo=vmcoreinfo, loads=tuple(loads))


def _read_raw_elfcorehdr(source: ByteSource, header: ElfHeader,
                         phdrs: tuple[ProgramHeader, ...]) -> Dump:
    segments: list[NoteSegment] = []
    cpu = 0
    for phdr in phdrs:
        if phdr.type != PhdrType.PT_NOTE:
            continue
        # A CPU's buffer is sizeof(note_buf_t) (368 bytes); VMCOREINFO's is a page or more.
        if phdr.memsz >= VMCOREINFO_MIN_NOTE_SEGMENT:
            segments.append(NoteSegment(role=NoteRole.VMCOREINFO, cpu=None, address=phdr.paddr,
                                        size=phdr.memsz, phdr_index=phdr.number))
        else:
            segments.append(NoteSegment(role=NoteRole.CPU, cpu=cpu, address=phdr.paddr,
                                        size=phdr.memsz, phdr_index=phdr.number))
            cpu += 1
    loads = [LoadSegment(kind=_classify_load(p), range=p.physical_range, vaddr=p.vaddr,
                         file_offset=None, file_size=p.filesz, present=0, phdr_index=p.number)
             for p in phdrs if p.type == PhdrType.PT_LOAD]
    _check_ram_overlaps(loads, phdrs, source.name)
    return Dump(format=DumpFormat.RAW_ELFCOREHDR, source=source.name, file_size=source.size,
                page_size=X86_64_PAGE_SIZE, elf=header, program_headers=phdrs,
                loads=tuple(loads), note_segments=tuple(segments))
