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
    CORE_NOTE_NAME,
    DUMP_DH_COMPRESSED_INCOMPLETE,
    KDUMP_SIGNATURE,
    VMCOREINFO_NOTE_NAME,
    DumpFormat,
    Limits,
    NoteType,
)
from .elf import parse_notes
from .model import Dump, KdumpHeader, LoadKind, LoadSegment
from .notes import CpuNote, VmcoreInfo
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
    name = source.name
    raw = source.read_at(0, DISK_DUMP_HEADER_SIZE, field="disk_dump_header")
    if raw[:8] != KDUMP_SIGNATURE:
        raise VmcoreFormatError(f"{name}: no \"KDUMP   \" signature", offset=0, field="signature")

    def bad(field: str, message: str, base: int = 0, offsets: dict[str, int] = _DDH_OFFSETS
            ) -> VmcoreFormatError:
        return VmcoreFormatError(f"{name}: {message}", offset=base + offsets[field], field=field)

    header_version = int.from_bytes(raw[8:12], "little", signed=True)
    uts = [raw[12 + i * UTSNAME_FIELD:12 + (i + 1) * UTSNAME_FIELD].split(b"\0", 1)[0]
           .decode("utf-8", "replace") for i in range(6)]
    (tv_sec, tv_usec, status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr32,
     _total_ram_blocks, _device_blocks, _written_blocks, current_cpu, nr_cpus
     ) = _DDH_TAIL.unpack_from(raw, 408)
    if header_version < 1:
        raise bad("header_version", f"header_version {header_version} is not a kdump header")
    if not (_MIN_BLOCK <= block_size <= _MAX_BLOCK) or block_size & (block_size - 1):
        raise bad("block_size", f"block_size {block_size} is not a power of two in "
                                f"[{_MIN_BLOCK}, {_MAX_BLOCK}]")
    if sub_hdr_size < 1 or sub_hdr_size * block_size > Limits.MAX_SUB_HEADER_BYTES:
        raise bad("sub_hdr_size", f"sub_hdr_size {sub_hdr_size} blocks is not plausible")
    bitmap_half = bitmap_blocks * block_size // 2
    if bitmap_blocks < 2 or bitmap_half > Limits.MAX_BITMAP_BYTES:
        raise bad("bitmap_blocks", f"bitmap_blocks {bitmap_blocks} is not plausible "
                                   f"(two bitmaps of at most {Limits.MAX_BITMAP_BYTES:#x} bytes)")

    sub_base = block_size
    sub = source.read_at(sub_base, KDUMP_SUB_HEADER_SIZE, field="kdump_sub_header")
    (phys_base, dump_level, split, _start_pfn, _end_pfn, offset_vmcoreinfo, size_vmcoreinfo,
     offset_note, size_note, _offset_eraseinfo, _size_eraseinfo, _start_pfn_64, _end_pfn_64,
     max_mapnr_64) = _SUB.unpack(sub)
    if header_version < 3:
        offset_vmcoreinfo = size_vmcoreinfo = 0
    if header_version < 4:
        offset_note = size_note = 0
    max_mapnr = max_mapnr_64 if header_version >= 6 else max_mapnr32
    bitmap1_offset = (1 + sub_hdr_size) * block_size
    # The notes and VMCOREINFO live in the sub-header blocks, after the sub header.
    region = AddressRange(sub_base + KDUMP_SUB_HEADER_SIZE, bitmap1_offset)

    def check_in_region(offset: int, size: int, field: str) -> None:
        if size and not (region.start <= offset and offset + size <= region.end):
            raise bad(field, f"{field} {offset:#x} (+{size:#x}) lies outside the sub-header "
                             f"blocks {region}", sub_base, _SUB_OFFSETS)

    check_in_region(offset_note, size_note, "offset_note")
    check_in_region(offset_vmcoreinfo, size_vmcoreinfo, "offset_vmcoreinfo")

    notes = []
    if size_note:
        data = source.read_at(offset_note, size_note, field="notes")
        notes = parse_notes(data, base_offset=offset_note, source_name=name)
    cpu_notes = tuple(CpuNote.from_note(i, n) for i, n in enumerate(
        n for n in notes if n.name == CORE_NOTE_NAME and n.type == NoteType.NT_PRSTATUS))
    vmcoreinfo = None
    if size_vmcoreinfo:
        vmcoreinfo = VmcoreInfo.parse(source.read_at(offset_vmcoreinfo, size_vmcoreinfo,
                                                     field="vmcoreinfo"))
    else:
        note = next((n for n in notes if n.name == VMCOREINFO_NOTE_NAME
                     and n.type == NoteType.NT_VMCOREINFO), None)
        if note is not None:
            vmcoreinfo = VmcoreInfo.parse(note.desc)

    # The bitmap counts pages of block_size bytes (makedumpfile sets block_size to the page
    # size); a VMCOREINFO PAGESIZE that disagrees leaves the bitmap ambiguous.
    page_size = block_size
    if vmcoreinfo is not None and vmcoreinfo.page_size not in (None, block_size):
        raise bad("block_size", f"block_size {block_size} differs from VMCOREINFO "
                                f"PAGESIZE={vmcoreinfo.page_size}")
    if max_mapnr > bitmap_half * 8:
        field = "max_mapnr_64" if header_version >= 6 else "max_mapnr"
        offsets, base = (_SUB_OFFSETS, sub_base) if header_version >= 6 else (_DDH_OFFSETS, 0)
        raise bad(field, f"max_mapnr {max_mapnr} needs more bits than the "
                         f"{bitmap_half:#x}-byte bitmap holds", base, offsets)
    bitmap = source.read_at(bitmap1_offset, (max_mapnr + 7) // 8, field="bitmap1")
    runs = bitmap_runs(bitmap, max_mapnr, source_name=name, bitmap_offset=bitmap1_offset)
    loads = tuple(
        LoadSegment(kind=LoadKind.RAM, range=AddressRange(start * page_size, end * page_size),
                    vaddr=None, file_offset=None, file_size=0, present=0)
        for start, end in runs)

    header = KdumpHeader(
        header_version=header_version, sysname=uts[0], release=uts[2], version=uts[3],
        machine=uts[4], timestamp=tv_sec + tv_usec / 1e6, status=status, block_size=block_size,
        sub_hdr_size=sub_hdr_size, bitmap_blocks=bitmap_blocks, max_mapnr=max_mapnr,
        nr_cpus=nr_cpus, current_cpu=current_cpu, phys_base=phys_base, dump_level=dump_level,
        split=split, offset_vmcoreinfo=offset_vmcoreinfo, size_vmcoreinfo=size_vmcoreinfo,
        offset_note=offset_note, size_note=size_note, offset_bitmap1=bitmap1_offset)
    observations: tuple[str, ...] = ()
    if status & DUMP_DH_COMPRESSED_INCOMPLETE:
        observations = (("makedumpfile marked the dump incomplete "
                         "(DUMP_DH_COMPRESSED_INCOMPLETE): it ran out of space"),)
    return Dump(format=DumpFormat.KDUMP, source=name, file_size=source.size, page_size=page_size,
                notes=tuple(notes), cpu_notes=cpu_notes, vmcoreinfo=vmcoreinfo, loads=loads,
                kdump=header, stream_complete=not (status & DUMP_DH_COMPRESSED_INCOMPLETE),
                observations=observations)


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
