"""ELF64 plumbing for crash dumps: the ELF header, program headers and note lists.

Library decision: a small ``struct``-based reader, not pyelftools.  A crash dump needs only
three structures (``Elf64_Ehdr``, ``Elf64_Phdr``, ``Elf64_Nhdr``: about 60 lines here), and
what matters is how the reader behaves on bad input.  Tried with pyelftools 0.33 on mutated
synthetic cores:

* a truncated header or a program header table past the end raises ``ELFParseError``
  ("expected 8, found 0") with no offset and no field name: we would wrap its exceptions
  and guess where the file broke;
* a note whose ``n_descsz`` claims 2 GiB is returned silently with whatever bytes exist, and
  an ``EI_CLASS`` of ELFCLASS32 reinterprets the header as 32-bit without complaint: the
  "sizes that lie" cases must be refused here, with the field and offset named;
* the raw elfcorehdr is not a file at all: its ``p_offset`` fields are physical addresses
  and its notes live elsewhere in guest memory, which a generic ELF reader would try to read.

Here every count and size is checked against the data and against ``Limits`` before it is
used, so time and memory stay bounded by the input.  pyelftools stays a test-time oracle: the
unit tests check that it reads the synthetic cores our writer produces the same way we do.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import VmcoreFormatError
from ..topology import AddressRange
from .constants import (
    EI_CLASS,
    EI_DATA,
    EI_VERSION,
    ELF64_EHDR_SIZE,
    ELF64_NHDR_SIZE,
    ELF64_PHDR_SIZE,
    ELF64_SHDR_SIZE,
    ELF_MAGIC,
    EV_CURRENT,
    MAX_PHYSICAL_ADDRESS,
    NOTE_ALIGN,
    PN_XNUM,
    ElfClass,
    ElfData,
    ElfMachine,
    ElfType,
    Limits,
    NoteType,
    PhdrType,
)
from .source import BytesLike, ByteSource

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_NHDR = struct.Struct("<III")
_SHDR_SH_INFO_OFFSET = 44   # Elf64_Shdr.sh_info
_U64_MAX = (1 << 64) - 1

# Field offsets inside Elf64_Ehdr / Elf64_Phdr, for error messages.
_EHDR_FIELD_OFFSETS = {
    "e_type": 16, "e_machine": 18, "e_version": 20, "e_phoff": 32, "e_shoff": 40,
    "e_ehsize": 52, "e_phentsize": 54, "e_phnum": 56, "e_shentsize": 58,
}
_PHDR_FIELD_OFFSETS = {
    "p_type": 0, "p_flags": 4, "p_offset": 8, "p_vaddr": 16, "p_paddr": 24,
    "p_filesz": 32, "p_memsz": 40, "p_align": 48,
}


def align_up(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment`` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


def _enum_name(enum: type[ElfMachine | ElfType], value: int) -> str:
    try:
        return f"{value} ({enum(value).name})"
    except ValueError:
        return str(value)


@dataclass(frozen=True, slots=True)
class ElfHeader:
    """The fields of ``Elf64_Ehdr`` a dump reader uses; ``phnum`` is already resolved."""

    osabi: int
    type: int
    machine: int
    entry: int
    phoff: int
    shoff: int
    flags: int
    ehsize: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int
    shstrndx: int
    phnum_extended: bool     # e_phnum was PN_XNUM and the count came from section 0


class ProgramHeader(NamedTuple):
    """One ``Elf64_Phdr``; ``header_offset`` is where it sits in the dump (for errors).

    A NamedTuple rather than a frozen dataclass: a kernel header at its limits has 16386 of
    these, and a tuple is built three times faster.
    """

    number: int             # position in the program header table
    header_offset: int
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int

    @property
    def type_name(self) -> str:
        try:
            return PhdrType(self.type).name
        except ValueError:
            return f"{self.type:#x}"

    @property
    def physical_range(self) -> AddressRange:
        """``[p_paddr, p_paddr + p_memsz)``."""
        return AddressRange(self.paddr, self.paddr + self.memsz)

    def field_offset(self, field: str) -> int:
        return self.header_offset + _PHDR_FIELD_OFFSETS[field]


@dataclass(frozen=True, slots=True)
class Note:
    """One ELF note: ``offset`` is where its header sits in the dump.

    The descriptor itself is not kept: ``iter_notes`` hands it to the reader once, which
    decodes what it needs (a prstatus, the VMCOREINFO text).  A dump at the CPU cap has
    8192 notes, and a copy of every descriptor would double the reader's memory.
    """

    offset: int
    name: str
    type: int
    desc_size: int

    @property
    def note_type(self) -> NoteType | None:
        try:
            return NoteType(self.type)
        except ValueError:
            return None

    @property
    def type_name(self) -> str:
        nt = self.note_type
        return nt.name if nt is not None else f"{self.type:#x}"


def parse_elf_header(head: bytes, *, source: ByteSource) -> tuple[ElfHeader, int]:
    """Validate the first 64 bytes of an x86_64 ELF core.

    Returns the header and ``e_phnum`` as written (``PN_XNUM`` is resolved by
    ``read_elf_header``, which can read section 0).
    """
    name = source.name
    if len(head) < ELF64_EHDR_SIZE:
        raise VmcoreFormatError(
            f"{name}: {len(head)} bytes is too short for an ELF64 header ({ELF64_EHDR_SIZE})",
            offset=0, field="e_ident")
    if head[:4] != ELF_MAGIC:
        raise VmcoreFormatError(f"{name}: no ELF magic", offset=0, field="e_ident[EI_MAG]")
    if head[EI_CLASS] != ElfClass.ELFCLASS64:
        what = ("32-bit ELF" if head[EI_CLASS] == ElfClass.ELFCLASS32
                else f"ELF class {head[EI_CLASS]}")
        raise VmcoreFormatError(f"{name}: {what}; only ELF64 (x86_64) dumps are supported",
                                offset=EI_CLASS, field="e_ident[EI_CLASS]")
    if head[EI_DATA] != ElfData.ELFDATA2LSB:
        what = ("big-endian" if head[EI_DATA] == ElfData.ELFDATA2MSB
                else f"byte order {head[EI_DATA]}")
        raise VmcoreFormatError(f"{name}: {what} ELF; x86_64 dumps are little-endian",
                                offset=EI_DATA, field="e_ident[EI_DATA]")
    if head[EI_VERSION] != EV_CURRENT:
        raise VmcoreFormatError(f"{name}: ELF identification version {head[EI_VERSION]}, "
                                "expected 1",
                                offset=EI_VERSION, field="e_ident[EI_VERSION]")
    (ident, e_type, machine, version, entry, phoff, shoff, flags, ehsize, phentsize, phnum,
     shentsize, shnum, shstrndx) = _EHDR.unpack_from(head)

    def bad(field: str, message: str) -> VmcoreFormatError:
        return VmcoreFormatError(f"{name}: {message}", offset=_EHDR_FIELD_OFFSETS[field],
                                 field=field)

    if e_type != ElfType.ET_CORE:
        raise bad("e_type",
                  f"e_type is {_enum_name(ElfType, e_type)}, not ET_CORE: not a core dump")
    if machine != ElfMachine.EM_X86_64:
        raise bad("e_machine", f"e_machine is {_enum_name(ElfMachine, machine)}; "
                               "only x86_64 (62) dumps are supported")
    if version != EV_CURRENT:
        raise bad("e_version", f"e_version is {version}, expected 1")
    if ehsize != ELF64_EHDR_SIZE:
        raise bad("e_ehsize", f"e_ehsize is {ehsize}, expected {ELF64_EHDR_SIZE}")
    if phentsize != ELF64_PHDR_SIZE:
        raise bad("e_phentsize", f"e_phentsize is {phentsize}, expected {ELF64_PHDR_SIZE}")
    if phnum == 0:
        raise bad("e_phnum", "e_phnum is 0: a crash dump has program headers")
    if phoff < ELF64_EHDR_SIZE:
        raise bad("e_phoff", f"e_phoff {phoff:#x} overlaps the ELF header")
    header = ElfHeader(osabi=ident[7], type=e_type, machine=machine, entry=entry, phoff=phoff,
                       shoff=shoff, flags=flags, ehsize=ehsize, phentsize=phentsize,
                       phnum=phnum, shentsize=shentsize, shnum=shnum, shstrndx=shstrndx,
                       phnum_extended=False)
    return header, phnum


def read_elf_header(source: ByteSource) -> ElfHeader:
    """Read and validate the ELF header, resolving ``PN_XNUM`` through section 0's ``sh_info``."""
    head = source.read_available(0, ELF64_EHDR_SIZE)
    header, phnum = parse_elf_header(head, source=source)
    name = source.name
    if phnum == PN_XNUM:
        # More than 65534 program headers: the real count is section header 0's sh_info
        # (gABI "Extended program header numbering"; the kernel's elf_core_dump does this).
        if header.shoff == 0 or header.shentsize != ELF64_SHDR_SIZE:
            raise VmcoreFormatError(
                f"{name}: e_phnum is PN_XNUM but there is no section header 0 to hold the count",
                offset=_EHDR_FIELD_OFFSETS["e_shoff"], field="e_shoff")
        raw = source.read_at(header.shoff + _SHDR_SH_INFO_OFFSET, 4, field="sh_info (section 0)")
        phnum = int.from_bytes(raw, "little")
        if phnum == 0:
            raise VmcoreFormatError(f"{name}: extended program header count is 0",
                                    offset=header.shoff + _SHDR_SH_INFO_OFFSET, field="sh_info")
        header = _replace_phnum(header, phnum)
    if phnum > Limits.MAX_PROGRAM_HEADERS:
        raise VmcoreFormatError(
            f"{name}: {phnum} program headers is more than the {Limits.MAX_PROGRAM_HEADERS} "
            "this reader accepts", offset=_EHDR_FIELD_OFFSETS["e_phnum"], field="e_phnum")
    table_end = header.phoff + phnum * ELF64_PHDR_SIZE
    if table_end > source.size:
        raise VmcoreFormatError(
            f"{name}: the {phnum} program headers at {header.phoff:#x} end at {table_end:#x}, "
            f"past the end of the data ({source.size:#x})",
            offset=_EHDR_FIELD_OFFSETS["e_phoff"], field="e_phoff")
    return header


def _replace_phnum(header: ElfHeader, phnum: int) -> ElfHeader:
    return ElfHeader(osabi=header.osabi, type=header.type, machine=header.machine,
                     entry=header.entry, phoff=header.phoff, shoff=header.shoff,
                     flags=header.flags, ehsize=header.ehsize, phentsize=header.phentsize,
                     phnum=phnum, shentsize=header.shentsize, shnum=header.shnum,
                     shstrndx=header.shstrndx, phnum_extended=True)


def read_program_headers(source: ByteSource, header: ElfHeader) -> tuple[ProgramHeader, ...]:
    """Read the program header table and refuse entries no kernel could have written."""
    table = source.read_at(header.phoff, header.phnum * ELF64_PHDR_SIZE, field="program headers")
    name = source.name
    phdrs = []
    base = header.phoff
    load, note = PhdrType.PT_LOAD, PhdrType.PT_NOTE
    for index, fields in enumerate(_PHDR.iter_unpack(table)):
        # Positional construction and an inline plausibility test: this loop runs up to
        # 16386 times for a kernel header at its limits.
        phdr = ProgramHeader(index, base + index * ELF64_PHDR_SIZE, *fields)
        p_type, _, offset, _, paddr, filesz, memsz, _ = fields
        if p_type in (load, note) and (
                filesz > memsz or offset + filesz > _U64_MAX
                or (p_type == load and paddr + memsz > MAX_PHYSICAL_ADDRESS)
                or (p_type == note and memsz > Limits.MAX_NOTE_SEGMENT)):
            raise _segment_error(phdr, name)
        phdrs.append(phdr)
    return tuple(phdrs)


def _segment_error(phdr: ProgramHeader, name: str) -> VmcoreFormatError:
    """The error for a PT_LOAD or PT_NOTE that failed the plausibility test."""

    def bad(field: str, message: str) -> VmcoreFormatError:
        return VmcoreFormatError(f"{name}: program header {phdr.number} ({phdr.type_name}): "
                                 f"{message}",
                                 offset=phdr.field_offset(field), field=field)

    if phdr.offset + phdr.filesz > _U64_MAX:
        return bad("p_filesz", f"p_offset {phdr.offset:#x} + p_filesz {phdr.filesz:#x} overflows")
    if phdr.filesz > phdr.memsz:
        return bad("p_filesz", f"p_filesz {phdr.filesz:#x} exceeds p_memsz {phdr.memsz:#x}")
    if phdr.type == PhdrType.PT_LOAD:
        return bad("p_memsz", f"physical range [{phdr.paddr:#x}, +{phdr.memsz:#x}) lies beyond "
                              f"the 52-bit physical address space")
    return bad("p_memsz", f"a {phdr.memsz:#x}-byte note segment is larger than "
                          f"{Limits.MAX_NOTE_SEGMENT:#x}")


def iter_notes(data: BytesLike, *, base_offset: int,
               source_name: str) -> Iterator[tuple[Note, memoryview]]:
    """Split a note segment into notes, each with a view of its descriptor (no copy).

    A note whose ``n_namesz`` is 0 ends the list, as in fs/proc/vmcore.c: the kernel's
    per-CPU buffers end with an empty note, and what follows is padding.  A note whose sizes
    run past the segment is refused, naming the size field.  ``base_offset`` is where
    ``data`` starts in the dump (or in guest memory), for the notes' offsets.
    """
    view = memoryview(data)
    pos = 0
    index = 0
    end = len(view)
    while pos + ELF64_NHDR_SIZE <= end:
        namesz, descsz, n_type = _NHDR.unpack_from(view, pos)
        if namesz == 0:
            break
        here = base_offset + pos
        if namesz > Limits.MAX_NOTE_NAME:
            raise VmcoreFormatError(
                f"{source_name}: note {index} has a {namesz}-byte name "
                f"(at most {Limits.MAX_NOTE_NAME})", offset=here, field="n_namesz")
        name_start = pos + ELF64_NHDR_SIZE
        desc_start = name_start + align_up(namesz, NOTE_ALIGN)
        if desc_start > end:
            raise VmcoreFormatError(
                f"{source_name}: note {index}'s name runs past the end of its segment",
                offset=here, field="n_namesz")
        desc_end = desc_start + descsz
        if desc_end > end:
            raise VmcoreFormatError(
                f"{source_name}: note {index}'s descriptor ({descsz:#x} bytes) runs past "
                f"the end of its segment ({end - desc_start:#x} bytes left)",
                offset=here + 4, field="n_descsz")
        raw_name = bytes(view[name_start:name_start + namesz]).split(b"\0", 1)[0]
        # Interned: thousands of notes share the names "CORE" and "VMCOREINFO".
        name = sys.intern(raw_name.decode("ascii", "replace"))
        yield Note(here, name, n_type, descsz), view[desc_start:desc_end]
        index += 1
        pos = desc_start + align_up(descsz, NOTE_ALIGN)
