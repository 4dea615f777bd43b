"""What every reader produces: a ``Dump``, whatever the file format.

The verifier only looks at a ``Dump``: CPU notes, VMCOREINFO, and the physical memory the
dump describes (RAM loads, plus the kernel-text load that ELF headers carry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, NamedTuple

from ..topology import AddressRange, merge_ranges
from .constants import DumpFormat
from .elf import ElfHeader, Note, ProgramHeader
from .notes import CpuNote, VmcoreInfo


class LoadKind(StrEnum):
    """Which of the two kinds of PT_LOAD a crash header holds."""

    TEXT = "text"   # vaddr in the kernel text map (>= 0xffffffff80000000): a second view of RAM
    RAM = "ram"     # vaddr in the direct map: one System RAM range


class NoteRole(StrEnum):
    """What a PT_NOTE of the first kernel's elfcorehdr points at."""

    CPU = "cpu"
    VMCOREINFO = "vmcoreinfo"


class LoadSegment(NamedTuple):
    """A described physical memory range (a NamedTuple: there is one per PT_LOAD).

    ``file_offset`` is None where the format has no such thing (the raw elfcorehdr, whose
    ``p_offset`` is a physical address, and kdump-compressed page runs).  ``file_size`` is
    the data the dump claims to hold for the range and ``present`` how much of it the file
    really has (less when the dump is headers-only or cut short).
    """

    kind: LoadKind
    range: AddressRange
    vaddr: int | None
    file_offset: int | None
    file_size: int
    present: int
    phdr_index: int | None = None

    @property
    def truncated(self) -> bool:
        return self.file_offset is not None and self.present < self.file_size

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value, "start": hex(self.range.start), "end": hex(self.range.end),
            "vaddr": None if self.vaddr is None else hex(self.vaddr),
            "file_offset": self.file_offset, "file_size": self.file_size,
            "present": self.present, "phdr": self.phdr_index,
        }


class NoteSegment(NamedTuple):
    """A PT_NOTE of a raw elfcorehdr: where in guest memory a note buffer lives.

    ``cpu`` is the position among the CPU notes: the kernel writes one per possible CPU in
    ``for_each_possible_cpu`` order, so with a dense possible mask it is the CPU number.
    """

    role: NoteRole
    cpu: int | None
    address: int
    size: int
    phdr_index: int

    def to_json_dict(self) -> dict[str, Any]:
        return {"role": self.role.value, "cpu": self.cpu, "address": hex(self.address),
                "size": self.size, "phdr": self.phdr_index}


@dataclass(frozen=True, slots=True)
class KdumpHeader:
    """``disk_dump_header`` plus ``kdump_sub_header`` (makedumpfile's diskdump_mod.h)."""

    header_version: int
    sysname: str
    release: str
    version: str
    machine: str
    timestamp: float
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int              # max_mapnr_64 for header_version >= 6, else the 32-bit field
    nr_cpus: int
    current_cpu: int
    phys_base: int
    dump_level: int
    split: int
    offset_vmcoreinfo: int
    size_vmcoreinfo: int
    offset_note: int
    size_note: int
    offset_bitmap1: int

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "header_version": self.header_version, "release": self.release,
            "machine": self.machine, "timestamp": self.timestamp, "status": self.status,
            "block_size": self.block_size, "sub_hdr_size": self.sub_hdr_size,
            "bitmap_blocks": self.bitmap_blocks, "max_mapnr": self.max_mapnr,
            "nr_cpus": self.nr_cpus, "current_cpu": self.current_cpu,
            "phys_base": hex(self.phys_base), "dump_level": self.dump_level,
            "split": self.split, "offset_note": self.offset_note, "size_note": self.size_note,
            "offset_vmcoreinfo": self.offset_vmcoreinfo,
            "size_vmcoreinfo": self.size_vmcoreinfo, "offset_bitmap1": self.offset_bitmap1,
        }


@dataclass(frozen=True)
class Dump:
    """A parsed crash dump or crash header.

    ``format`` is the inner format (a flattened kdump file is ``KDUMP`` with
    ``flattened=True``).  ``vmcoreinfos`` holds every VMCOREINFO the dump carries (a kernel
    writes one; the verifier reports more) and ``vmcoreinfo`` is the first of them.
    ``observations`` are reader remarks the verifier turns into findings (a flattened stream
    without its end marker, say).
    """

    format: DumpFormat
    source: str
    file_size: int
    page_size: int
    elf: ElfHeader | None = None
    program_headers: tuple[ProgramHeader, ...] = ()
    notes: tuple[Note, ...] = ()
    cpu_notes: tuple[CpuNote, ...] = ()
    vmcoreinfo: VmcoreInfo | None = None
    vmcoreinfos: tuple[VmcoreInfo, ...] = ()
    loads: tuple[LoadSegment, ...] = ()
    note_segments: tuple[NoteSegment, ...] = ()
    kdump: KdumpHeader | None = None
    flattened: bool = False
    stream_complete: bool = True
    observations: tuple[str, ...] = field(default=())

    @property
    def is_raw_header(self) -> bool:
        """The first kernel's elfcorehdr: note buffers are elsewhere, so no note contents."""
        return self.format == DumpFormat.RAW_ELFCOREHDR

    @property
    def ram_loads(self) -> tuple[LoadSegment, ...]:
        return tuple(seg for seg in self.loads if seg.kind == LoadKind.RAM)

    @property
    def text_load(self) -> LoadSegment | None:
        return next((seg for seg in self.loads if seg.kind == LoadKind.TEXT), None)

    @cached_property
    def ram_ranges(self) -> tuple[AddressRange, ...]:
        """The physical memory the dump describes, adjacent ranges merged (text excluded)."""
        return merge_ranges(seg.range for seg in self.ram_loads)

    @property
    def cpu_note_segments(self) -> tuple[NoteSegment, ...]:
        return tuple(s for s in self.note_segments if s.role == NoteRole.CPU)

    @property
    def vmcoreinfo_segments(self) -> tuple[NoteSegment, ...]:
        return tuple(s for s in self.note_segments if s.role == NoteRole.VMCOREINFO)

    @property
    def truncated_loads(self) -> tuple[LoadSegment, ...]:
        return tuple(seg for seg in self.loads if seg.truncated)

    @property
    def memory_bytes_described(self) -> int:
        return sum(r.size for r in self.ram_ranges)

    def to_json_dict(self) -> dict[str, Any]:
        """A summary for ``vmcore inspect --json`` (no note payloads, no memory)."""
        return {
            "format": self.format.value, "flattened": self.flattened, "source": self.source,
            "file_size": self.file_size, "page_size": self.page_size,
            "stream_complete": self.stream_complete,
            "elf": None if self.elf is None else {
                "phnum": self.elf.phnum, "phoff": self.elf.phoff,
                "phnum_extended": self.elf.phnum_extended},
            "program_headers": len(self.program_headers),
            "notes": [{"name": n.name, "type": n.type_name, "size": n.desc_size,
                       "offset": n.offset} for n in self.notes],
            "cpu_notes": [c.to_json_dict() for c in self.cpu_notes],
            "note_segments": [s.to_json_dict() for s in self.note_segments],
            "vmcoreinfo": None if self.vmcoreinfo is None else self.vmcoreinfo.to_json_dict(),
            "vmcoreinfo_notes": len(self.vmcoreinfos),
            "loads": [seg.to_json_dict() for seg in self.loads],
            "ram_ranges": [{"start": hex(r.start), "end": hex(r.end)} for r in self.ram_ranges],
            "memory_bytes_described": self.memory_bytes_described,
            "kdump": None if self.kdump is None else self.kdump.to_json_dict(),
            "observations": list(self.observations),
        }
