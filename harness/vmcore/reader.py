"""Open any dump: format detection and the two ELF readers (vmcore and raw elfcorehdr).

Detection is by content:

* ``makedumpfile`` signature: flattened; the inner format is detected the same way;
* ``KDUMP   `` signature: kdump-compressed;
* ELF magic: an ELF core or the first kernel's raw elfcorehdr, told apart by whether
  ``p_offset`` holds physical addresses or file offsets (``layout.elf_kind``; a file that
  is half one and half the other is refused).

A caller that knows better passes ``format=`` to skip detection; an ELF file whose program
headers contradict the format asked for is refused, naming the program header.

Memory is bounded by ``Limits``: at most 8192 CPU notes (x86_64's largest NR_CPUS) or CPU
note slots, 32768 notes in 8 MiB, eight VMCOREINFO notes of 16 KiB, 131072 program headers.
Measured with tracemalloc: 7.5 MB to read 8192 CPU notes, 12 MB for every note cap at once,
91 MB at the program header cap (11 MB for a kernel header at its 16386); beyond a cap the
file is refused before its contents are read.
"""

from __future__ import annotations

import os
from dataclasses import replace

from ..errors import VmcoreFormatError
from .constants import (
    ELF_MAGIC,
    KDUMP_SIGNATURE,
    KERNEL_TEXT_MAP_START,
    MAKEDUMPFILE_SIGNATURE,
    VMCOREINFO_MIN_NOTE_SEGMENT,
    X86_64_PAGE_SIZE,
    DumpFormat,
    Limits,
    PhdrType,
)
from .elf import ElfHeader, ProgramHeader, read_elf_header, read_program_headers
from .flattened import FlattenedSource
from .kdump import read_kdump
from .layout import (
    check_elf_core_layout,
    check_ram_overlaps,
    check_raw_layout,
    elf_kind,
    require_loads,
    resolve_elf_kind,
)
from .model import Dump, LoadKind, LoadSegment, NoteRole, NoteSegment
from .notes import NoteCollector, NoteSet
from .source import BufferSource, BytesLike, ByteSource, FileSource

DumpInput = str | os.PathLike[str] | BytesLike


def detect_format(source: ByteSource) -> DumpFormat:
    """Tell a dump's format from its content (see the module docstring for the rule)."""
    fmt = _signature_format(source)
    if fmt == DumpFormat.ELF:
        return elf_kind(read_program_headers(source, read_elf_header(source)), source.name)
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
    require_loads(phdrs, source.name)
    if resolve_elf_kind(phdrs, format, source.name) == DumpFormat.RAW_ELFCOREHDR:
        check_raw_layout(phdrs, source.name)
        return _read_raw_elfcorehdr(source, header, phdrs)
    check_elf_core_layout(header, phdrs, source.name)
    return _read_elf_vmcore(source, header, phdrs)


def _classify_load(phdr: ProgramHeader) -> LoadKind:
    # The text PT_LOAD maps _text.._end at its kernel-map address; every other PT_LOAD is a
    # System RAM range at its direct-map address (kexec-tools may leave vaddr 0).
    return LoadKind.TEXT if phdr.vaddr >= KERNEL_TEXT_MAP_START else LoadKind.RAM


def _ram_extents(phdrs: tuple[ProgramHeader, ...]) -> list[tuple[int, int, int]]:
    """``(start, end, phdr index)`` of the RAM PT_LOADs (the text load is a second view)."""
    load = PhdrType.PT_LOAD
    return [(p.paddr, p.paddr + p.memsz, p.number) for p in phdrs
            if p.type == load and p.vaddr < KERNEL_TEXT_MAP_START]


def _read_elf_notes(source: ByteSource, phdrs: tuple[ProgramHeader, ...]) -> NoteSet:
    """Every PT_NOTE's notes (an ELF core may spread them over several PT_NOTEs)."""
    name = source.name
    collector = NoteCollector(name)
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
        collector.add_segment(source.read_at(phdr.offset, phdr.filesz, field="PT_NOTE data"),
                              phdr.offset)
    return collector.result()


def _read_elf_vmcore(source: ByteSource, header: ElfHeader,
                     phdrs: tuple[ProgramHeader, ...]) -> Dump:
    name = source.name
    notes = _read_elf_notes(source, phdrs)
    vmcoreinfo = notes.vmcoreinfos[0] if notes.vmcoreinfos else None
    loads: list[LoadSegment] = []
    for phdr in phdrs:
        if phdr.type != PhdrType.PT_LOAD:
            continue
        present = max(0, min(phdr.filesz, source.size - phdr.offset)) if phdr.filesz else 0
        loads.append(LoadSegment(kind=_classify_load(phdr), range=phdr.physical_range,
                                 vaddr=phdr.vaddr, file_offset=phdr.offset,
                                 file_size=phdr.filesz, present=present, phdr_index=phdr.number))
    check_ram_overlaps(_ram_extents(phdrs), phdrs, name)
    page_size = (vmcoreinfo.page_size if vmcoreinfo else None) or X86_64_PAGE_SIZE
    return Dump(format=DumpFormat.ELF, source=name, file_size=source.size, page_size=page_size,
                elf=header, program_headers=phdrs, notes=notes.notes, cpu_notes=notes.cpu_notes,
                vmcoreinfo=vmcoreinfo, vmcoreinfos=notes.vmcoreinfos, loads=tuple(loads))


def _raw_note_segments(phdrs: tuple[ProgramHeader, ...], name: str) -> tuple[NoteSegment, ...]:
    segments: list[NoteSegment] = []
    cpu = 0
    for phdr in phdrs:
        if phdr.type != PhdrType.PT_NOTE:
            continue
        if phdr.memsz > Limits.MAX_RAW_NOTE_BUFFER:
            raise VmcoreFormatError(
                f"{name}: PT_NOTE {phdr.number} claims a {phdr.memsz:#x}-byte note buffer "
                f"(a CPU's is 368 bytes, VMCOREINFO's about 4 KiB; refused above "
                f"{Limits.MAX_RAW_NOTE_BUFFER:#x})",
                offset=phdr.field_offset("p_memsz"), field="p_memsz")
        # A CPU's buffer is sizeof(note_buf_t) (368 bytes); VMCOREINFO's is a page or more.
        if phdr.memsz >= VMCOREINFO_MIN_NOTE_SEGMENT:
            segments.append(NoteSegment(role=NoteRole.VMCOREINFO, cpu=None, address=phdr.paddr,
                                        size=phdr.memsz, phdr_index=phdr.number))
            continue
        if cpu >= Limits.MAX_CPUS:
            raise VmcoreFormatError(
                f"{name}: more than {Limits.MAX_CPUS} CPU note slots (x86_64's largest "
                "NR_CPUS)", offset=phdr.header_offset, field="p_type")
        segments.append(NoteSegment(role=NoteRole.CPU, cpu=cpu, address=phdr.paddr,
                                    size=phdr.memsz, phdr_index=phdr.number))
        cpu += 1
    return tuple(segments)


def _read_raw_elfcorehdr(source: ByteSource, header: ElfHeader,
                         phdrs: tuple[ProgramHeader, ...]) -> Dump:
    segments = _raw_note_segments(phdrs, source.name)
    loads = [LoadSegment(kind=_classify_load(p), range=p.physical_range, vaddr=p.vaddr,
                         file_offset=None, file_size=p.filesz, present=0, phdr_index=p.number)
             for p in phdrs if p.type == PhdrType.PT_LOAD]
    check_ram_overlaps(_ram_extents(phdrs), phdrs, source.name)
    return Dump(format=DumpFormat.RAW_ELFCOREHDR, source=source.name, file_size=source.size,
                page_size=X86_64_PAGE_SIZE, elf=header, program_headers=phdrs,
                loads=tuple(loads), note_segments=segments)
