"""makedumpfile's kdump-compressed format (``makedumpfile -c/-l/-z``), headers only.

Layout (makedumpfile diskdump_mod.h, x86_64, little-endian)::

    0                      struct disk_dump_header (464 bytes)
      +0   signature[8]    "KDUMP   "
      +8   header_version  int
      +12  utsname         6 x char[65]: sysname nodename release version machine domainname
      +408 timestamp       struct timeval (tv_sec, tv_usec: 8 bytes each, 8-aligned)
      +424 status, +428 block_size, +432 sub_hdr_size, +436 bitmap_blocks, +440 max_mapnr,
      +444 total_ram_blocks, +448 device_blocks, +452 written_blocks, +456 current_cpu,
      +460 nr_cpus
    block_size             struct kdump_sub_header (104 bytes), then the notes
      +0 phys_base, +8 dump_level, +12 split, +16 start_pfn, +24 end_pfn,
      +32 offset_vmcoreinfo (v3+), +40 size_vmcoreinfo, +48 offset_note (v4+), +56 size_note,
      +64 offset_eraseinfo (v5+), +72 size_eraseinfo, +80 start_pfn_64 (v6+),
      +88 end_pfn_64, +96 max_mapnr_64
    (1 + sub_hdr_size) * block_size
                           bitmap1 (pages that exist: bit i = pfn i, LSB first), then bitmap2
                           (pages dumped); each is bitmap_blocks * block_size / 2 bytes

``offset_vmcoreinfo`` points at the VMCOREINFO note's *descriptor* inside the notes
(makedumpfile's write_kdump_header), not at the note header.
"""

from __future__ import annotations

import re
import struct

from ..errors import VmcoreFormatError
from ..topology import AddressRange
from .constants import (
    DUMP_DH_COMPRESSED_INCOMPLETE,
    ELF64_NHDR_SIZE,
    KDUMP_SIGNATURE,
    NOTE_ALIGN,
    VMCOREINFO_NOTE_NAME,
    DumpFormat,
    Limits,
    NoteType,
)
from .elf import Note, align_up
from .model import Dump, KdumpHeader, LoadKind, LoadSegment
from .notes import NoteCollector, NoteSet
from .source import ByteSource

DISK_DUMP_HEADER_SIZE = 464
KDUMP_SUB_HEADER_SIZE = 104
UTSNAME_FIELD = 65

_DDH_TAIL = struct.Struct("<qqIiiIIIIIIi")       # timestamp .. nr_cpus, from +408
_SUB = struct.Struct("<QiiQQqQqQqQQQQ")
_DDH_OFFSETS = {"header_version": 8, "utsname": 12, "timestamp": 408, "status": 424,
                "block_size": 428, "sub_hdr_size": 432, "bitmap_blocks": 436,
                "max_mapnr": 440, "nr_cpus": 460}
_SUB_OFFSETS = {"offset_vmcoreinfo": 32, "size_vmcoreinfo": 40, "offset_note": 48,
                "size_note": 56, "max_mapnr_64": 96}
_MIN_BLOCK, _MAX_BLOCK = 512, 1 << 20
_BITMAP_RUNS = re.compile(rb"\x00+|\xff+|[\x01-\xfe]")


def read_kdump(source: ByteSource) -> Dump:
    """Read a kdump-compressed file's headers, notes, VMCOREINFO and memory map (bitmap1)."""
    header = _read_headers(source)
    notes = _read_notes(source, header.block_size, header.offset_note, header.size_note,
                        header.offset_vmcoreinfo, header.size_vmcoreinfo)
    vmcoreinfo = notes.vmcoreinfos[0] if notes.vmcoreinfos else None
    # The bitmap counts pages of block_size bytes (makedumpfile sets block_size to the page
    # size); a VMCOREINFO PAGESIZE that disagrees leaves the bitmap ambiguous.
    if vmcoreinfo is not None and vmcoreinfo.page_size not in (None, header.block_size):
        raise _bad(source.name, "block_size", f"block_size {header.block_size} differs from "
                                              f"VMCOREINFO PAGESIZE={vmcoreinfo.page_size}")
    incomplete = bool(header.status & DUMP_DH_COMPRESSED_INCOMPLETE)
    observations: tuple[str, ...] = ()
    if incomplete:
        observations = (("makedumpfile marked the dump incomplete "
                         "(DUMP_DH_COMPRESSED_INCOMPLETE): it ran out of space"),)
    return Dump(format=DumpFormat.KDUMP, source=source.name, file_size=source.size,
                page_size=header.block_size, notes=notes.notes, cpu_notes=notes.cpu_notes,
                vmcoreinfo=vmcoreinfo, vmcoreinfos=notes.vmcoreinfos,
                loads=_read_memory_map(source, header), kdump=header,
                stream_complete=not incomplete, observations=observations)


def _bad(name: str, field: str, message: str, base: int = 0,
         offsets: dict[str, int] = _DDH_OFFSETS) -> VmcoreFormatError:
    return VmcoreFormatError(f"{name}: {message}", offset=base + offsets[field], field=field)


def _check_sizes(name: str, header_version: int, block_size: int, sub_hdr_size: int,
                 bitmap_blocks: int) -> None:
    if header_version < 1:
        raise _bad(name, "header_version", f"header_version {header_version} is not a kdump "
                                           "header")
    if not (_MIN_BLOCK <= block_size <= _MAX_BLOCK) or block_size & (block_size - 1):
        raise _bad(name, "block_size", f"block_size {block_size} is not a power of two in "
                                       f"[{_MIN_BLOCK}, {_MAX_BLOCK}]")
    if sub_hdr_size < 1 or sub_hdr_size * block_size > Limits.MAX_SUB_HEADER_BYTES:
        raise _bad(name, "sub_hdr_size", f"sub_hdr_size {sub_hdr_size} blocks is not plausible")
    if bitmap_blocks < 2 or bitmap_blocks * block_size // 2 > Limits.MAX_BITMAP_BYTES:
        raise _bad(name, "bitmap_blocks", f"bitmap_blocks {bitmap_blocks} is not plausible "
                                          f"(two bitmaps of at most "
                                          f"{Limits.MAX_BITMAP_BYTES:#x} bytes)")


def _read_headers(source: ByteSource) -> KdumpHeader:
    """``disk_dump_header`` and ``kdump_sub_header``, every size and offset checked."""
    name = source.name
    raw = source.read_at(0, DISK_DUMP_HEADER_SIZE, field="disk_dump_header")
    if raw[:8] != KDUMP_SIGNATURE:
        raise VmcoreFormatError(f"{name}: no \"KDUMP   \" signature", offset=0, field="signature")
    header_version = int.from_bytes(raw[8:12], "little", signed=True)
    uts = [raw[12 + i * UTSNAME_FIELD:12 + (i + 1) * UTSNAME_FIELD].split(b"\0", 1)[0]
           .decode("utf-8", "replace") for i in range(6)]
    (tv_sec, tv_usec, status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr32,
     _total_ram_blocks, _device_blocks, _written_blocks, current_cpu, nr_cpus
     ) = _DDH_TAIL.unpack_from(raw, 408)
    _check_sizes(name, header_version, block_size, sub_hdr_size, bitmap_blocks)
    sub_base = block_size
    (phys_base, dump_level, split, _start_pfn, _end_pfn, offset_vmcoreinfo, size_vmcoreinfo,
     offset_note, size_note, _offset_eraseinfo, _size_eraseinfo, _start_pfn_64, _end_pfn_64,
     max_mapnr_64) = _SUB.unpack(source.read_at(sub_base, KDUMP_SUB_HEADER_SIZE,
                                                field="kdump_sub_header"))
    if header_version < 3:
        offset_vmcoreinfo = size_vmcoreinfo = 0
    if header_version < 4:
        offset_note = size_note = 0
    bitmap1_offset = (1 + sub_hdr_size) * block_size
    # The notes and VMCOREINFO live in the sub-header blocks, after the sub header.
    region = AddressRange(sub_base + KDUMP_SUB_HEADER_SIZE, bitmap1_offset)
    for offset, size, field in ((offset_note, size_note, "offset_note"),
                                (offset_vmcoreinfo, size_vmcoreinfo, "offset_vmcoreinfo")):
        if size and not (region.start <= offset and offset + size <= region.end):
            raise _bad(name, field, f"{field} {offset:#x} (+{size:#x}) lies outside the "
                                    f"sub-header blocks {region}", sub_base, _SUB_OFFSETS)
    return KdumpHeader(
        header_version=header_version, sysname=uts[0], release=uts[2], version=uts[3],
        machine=uts[4], timestamp=tv_sec + tv_usec / 1e6, status=status, block_size=block_size,
        sub_hdr_size=sub_hdr_size, bitmap_blocks=bitmap_blocks,
        max_mapnr=max_mapnr_64 if header_version >= 6 else max_mapnr32,
        nr_cpus=nr_cpus, current_cpu=current_cpu, phys_base=phys_base, dump_level=dump_level,
        split=split, offset_vmcoreinfo=offset_vmcoreinfo, size_vmcoreinfo=size_vmcoreinfo,
        offset_note=offset_note, size_note=size_note, offset_bitmap1=bitmap1_offset)


def _read_memory_map(source: ByteSource, header: KdumpHeader) -> tuple[LoadSegment, ...]:
    """bitmap1's runs of pages that exist, as RAM ranges."""
    bitmap_half = header.bitmap_blocks * header.block_size // 2
    max_mapnr = header.max_mapnr
    if max_mapnr > bitmap_half * 8:
        v6 = header.header_version >= 6
        raise _bad(source.name, "max_mapnr_64" if v6 else "max_mapnr",
                   f"max_mapnr {max_mapnr} needs more bits than the {bitmap_half:#x}-byte "
                   "bitmap holds", header.block_size if v6 else 0,
                   _SUB_OFFSETS if v6 else _DDH_OFFSETS)
    bitmap = source.read_at(header.offset_bitmap1, (max_mapnr + 7) // 8, field="bitmap1")
    runs = bitmap_runs(bitmap, max_mapnr, source_name=source.name,
                       bitmap_offset=header.offset_bitmap1)
    page = header.block_size
    return tuple(
        LoadSegment(kind=LoadKind.RAM, range=AddressRange(start * page, end * page),
                    vaddr=None, file_offset=None, file_size=0, present=0)
        for start, end in runs)


def _read_notes(source: ByteSource, sub_base: int, offset_note: int, size_note: int,
                offset_vmcoreinfo: int, size_vmcoreinfo: int) -> NoteSet:
    """The notes, and VMCOREINFO from ``offset_vmcoreinfo`` when it is not one of them.

    makedumpfile points ``offset_vmcoreinfo`` at the VMCOREINFO note's descriptor, so the
    two are normally the same bytes; a field pointing elsewhere is a second VMCOREINFO
    (and the verifier compares the two).
    """
    name = source.name
    if size_note > Limits.MAX_NOTE_SEGMENT:
        raise VmcoreFormatError(f"{name}: {size_note:#x} bytes of notes is more than "
                                f"{Limits.MAX_NOTE_SEGMENT:#x}",
                                offset=sub_base + _SUB_OFFSETS["size_note"], field="size_note")
    collector = NoteCollector(name)
    if size_note:
        collector.add_segment(source.read_at(offset_note, size_note, field="notes"), offset_note)
    found = collector.result()
    descriptors = {n.offset + _desc_start(n) for n in found.notes
                   if n.name == VMCOREINFO_NOTE_NAME and n.type == NoteType.NT_VMCOREINFO}
    if not size_vmcoreinfo or offset_vmcoreinfo in descriptors:
        return found
    if size_vmcoreinfo > Limits.MAX_VMCOREINFO:
        raise VmcoreFormatError(
            f"{name}: a {size_vmcoreinfo}-byte VMCOREINFO (the kernel's is at most a page; "
            f"refused above {Limits.MAX_VMCOREINFO})",
            offset=sub_base + _SUB_OFFSETS["size_vmcoreinfo"], field="size_vmcoreinfo")
    standalone = NoteCollector(name)
    standalone.add_vmcoreinfo_text(
        source.read_at(offset_vmcoreinfo, size_vmcoreinfo, field="vmcoreinfo"), offset_vmcoreinfo)
    # The field's copy first: it is what makedumpfile and crash read.
    return NoteSet(found.notes, found.cpu_notes,
                   standalone.result().vmcoreinfos + found.vmcoreinfos)


def _desc_start(note: Note) -> int:
    """Bytes from a note's header to its descriptor (``n_namesz`` padded, plus the header)."""
    return ELF64_NHDR_SIZE + align_up(len(note.name) + 1, NOTE_ALIGN)


def bitmap_runs(bitmap: bytes, nbits: int, *, source_name: str = "<bitmap>",
                bitmap_offset: int = 0) -> list[tuple[int, int]]:
    """Runs ``[first, end)`` of set bits in an LSB-first bitmap, looking at ``nbits`` bits.

    Whole 0x00 and 0xff bytes are consumed by the regular expression engine; only mixed bytes
    are looked at bit by bit, and a mixed byte always ends or starts a run, so the work is
    bounded by ``Limits.MAX_MEMORY_RUNS``.
    """
    nbytes = (nbits + 7) // 8
    data = bytearray(bitmap[:nbytes])
    if nbits % 8 and data:
        data[-1] &= (1 << (nbits % 8)) - 1      # bits past max_mapnr are not pages
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for match in _BITMAP_RUNS.finditer(data):
        first = match.start()
        byte = data[first]
        if byte == 0x00:
            if start is not None:
                runs.append((start, first * 8))
                start = None
        elif byte == 0xFF:
            if start is None:
                start = first * 8
        else:
            for bit in range(8):
                pfn = first * 8 + bit
                if byte >> bit & 1:
                    if start is None:
                        start = pfn
                elif start is not None:
                    runs.append((start, pfn))
                    start = None
        if len(runs) > Limits.MAX_MEMORY_RUNS:
            raise VmcoreFormatError(
                f"{source_name}: bitmap1 describes more than {Limits.MAX_MEMORY_RUNS} separate "
                "memory runs", offset=bitmap_offset + first, field="bitmap1")
    if start is not None:
        runs.append((start, min(len(data) * 8, nbits)))
    return runs
