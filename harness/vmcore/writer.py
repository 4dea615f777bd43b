"""Build synthetic crash dumps for tests, benchmarks and golden files.

Every layout mirrors what the kernel or makedumpfile writes (see the readers' docstrings),
so a reader bug and a writer bug would have to agree to hide each other; the tests also check
the ELF output with pyelftools.  Memory content is never real: it is zeros, or absent
(``memory="none"``: ``p_filesz`` 0; ``"headers-only"``: offsets past the end of the file, as
in a copy of the first MiB of /proc/vmcore), or a sparse file (``write_elf_core``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..topology import AddressRange
from .constants import (
    CORE_NOTE_NAME,
    DIRECT_MAP_START,
    ELF64_EHDR_SIZE,
    ELF64_PHDR_SIZE,
    ELF_MAGIC,
    EV_CURRENT,
    FLAT_END_MARKER,
    FLAT_HEADER_TYPE,
    KDUMP_SIGNATURE,
    MAKEDUMPFILE_HEADER_SIZE,
    MAKEDUMPFILE_SIGNATURE,
    NOTE_ALIGN,
    PRSTATUS_PID_OFFSET,
    PRSTATUS_REGS_OFFSET,
    PRSTATUS_SIZE,
    VMCOREINFO_NOTE_NAME,
    X86_64_PAGE_SIZE,
    X86_64_REGISTER_NAMES,
    ElfClass,
    ElfData,
    ElfMachine,
    ElfType,
    NoteType,
    PhdrFlags,
    PhdrType,
)
from .elf import align_up
from .kdump import DISK_DUMP_HEADER_SIZE, KDUMP_SUB_HEADER_SIZE, UTSNAME_FIELD

MemoryMode = Literal["none", "headers-only", "full"]

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_RWX = PhdrFlags.PF_R | PhdrFlags.PF_W | PhdrFlags.PF_X
#: sizeof(note_buf_t) and VMCOREINFO_NOTE_SIZE on x86_64 (include/linux/crash_core.h).
CPU_NOTE_BUFFER_SIZE = 368
VMCOREINFO_NOTE_SIZE = 4132
MiB = 1 << 20
GiB = 1 << 30
_DEFAULT_RAM = AddressRange(MiB, GiB)
_DEFAULT_TEXT = AddressRange(0x100_0000, 0x300_0000)


@dataclass(frozen=True)
class SyntheticCpu:
    """A CPU's saved state: ``pid`` 0 is the idle task."""

    pid: int = 0
    rip: int = 0xFFFF_FFFF_8100_0000
    rsp: int = 0xFFFF_C900_0000_3F00
    desc_size: int = PRSTATUS_SIZE      # anything else makes an undecodable note


def default_vmcoreinfo(osrelease: str = "6.12.0-test", *, page_size: int = X86_64_PAGE_SIZE,
                       crash_time: int | None = 1_700_000_000, kernel_offset: int = 0,
                       extra: Mapping[str, str] | None = None) -> str:
    """VMCOREINFO text shaped like the kernel's (kernel/vmcore_info.c)."""
    lines = [f"OSRELEASE={osrelease}", f"BUILD-ID={'ab' * 20}", f"PAGESIZE={page_size}",
             "SYMBOL(init_uts_ns)=ffffffff82a1a360", "SYMBOL(_stext)=ffffffff81000000",
             "SIZE(page)=64", "OFFSET(page.flags)=0", "LENGTH(zone.free_area)=11",
             "NUMBER(phys_base)=0", "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129",
             f"KERNELOFFSET={kernel_offset:x}"]
    lines += [f"{k}={v}" for k, v in (extra or {}).items()]
    if crash_time is not None:
        lines.append(f"CRASHTIME={crash_time}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CoreSpec:
    """What a synthetic dump describes: CPU notes, VMCOREINFO, RAM and the kernel text."""

    cpus: tuple[SyntheticCpu, ...] = (SyntheticCpu(pid=1234, rip=0xFFFF_FFFF_8123_4567),
                                      SyntheticCpu())
    vmcoreinfo: str | None = field(default_factory=default_vmcoreinfo)
    ram: tuple[AddressRange, ...] = (_DEFAULT_RAM,)
    text: AddressRange | None = _DEFAULT_TEXT
    text_vaddr: int = 0xFFFF_FFFF_8100_0000
    direct_map: int = DIRECT_MAP_START
    #: Whole notes (``note_bytes``) placed after VMCOREINFO: a second VMCOREINFO, a Xen note.
    extra_notes: tuple[bytes, ...] = ()


# -- notes ---------------------------------------------------------------------------------


def prstatus_bytes(cpu: SyntheticCpu) -> bytes:
    """A 336-byte x86_64 ``elf_prstatus`` with pid, rip and rsp set (or ``desc_size`` bytes)."""
    buf = bytearray(PRSTATUS_SIZE)
    struct.pack_into("<iiii", buf, PRSTATUS_PID_OFFSET, cpu.pid, 0, 0, 0)
    regs = dict.fromkeys(X86_64_REGISTER_NAMES, 0)
    regs.update(rip=cpu.rip, rsp=cpu.rsp, cs=0x10, ss=0x18, eflags=0x46)
    struct.pack_into(f"<{len(regs)}Q", buf, PRSTATUS_REGS_OFFSET, *regs.values())
    return bytes(buf[:cpu.desc_size]).ljust(cpu.desc_size, b"\0")


def note_bytes(name: str, note_type: int, desc: bytes) -> bytes:
    """One ELF note, name and descriptor padded to 4 bytes as Linux does."""
    raw_name = name.encode() + b"\0"
    return (struct.pack("<III", len(raw_name), len(desc), note_type)
            + raw_name.ljust(align_up(len(raw_name), NOTE_ALIGN), b"\0")
            + desc.ljust(align_up(len(desc), NOTE_ALIGN), b"\0"))


def core_note_list(spec: CoreSpec) -> list[bytes]:
    """Each note /proc/vmcore presents, in its order: CPU notes, then VMCOREINFO."""
    parts = [note_bytes(CORE_NOTE_NAME, NoteType.NT_PRSTATUS, prstatus_bytes(c)) for c in spec.cpus]
    if spec.vmcoreinfo is not None:
        parts.append(note_bytes(VMCOREINFO_NOTE_NAME, NoteType.NT_VMCOREINFO,
                                spec.vmcoreinfo.encode()))
    return parts + list(spec.extra_notes)


def core_notes(spec: CoreSpec) -> bytes:
    """The merged note segment /proc/vmcore presents: CPU notes, then VMCOREINFO."""
    return b"".join(core_note_list(spec))


# -- ELF -----------------------------------------------------------------------------------


def elf_header_bytes(phnum: int, *, e_type: int = ElfType.ET_CORE,
                     machine: int = ElfMachine.EM_X86_64) -> bytes:
    ident = ELF_MAGIC + bytes([ElfClass.ELFCLASS64, ElfData.ELFDATA2LSB, EV_CURRENT])
    ident = ident.ljust(16, b"\0")
    return _EHDR.pack(ident, e_type, machine, EV_CURRENT, 0, ELF64_EHDR_SIZE, 0, 0,
                      ELF64_EHDR_SIZE, ELF64_PHDR_SIZE, phnum, 0, 0, 0)


def phdr_bytes(p_type: int, *, offset: int = 0, vaddr: int = 0, paddr: int = 0, filesz: int = 0,
               memsz: int = 0, flags: int = 0, align: int = 0) -> bytes:
    return _PHDR.pack(p_type, flags, offset, vaddr, paddr, filesz, memsz, align)


def _loads(spec: CoreSpec) -> list[tuple[int, int, int]]:
    """(vaddr, paddr, size) of the text load then the RAM loads, in kernel order."""
    out = []
    if spec.text is not None:
        out.append((spec.text_vaddr, spec.text.start, spec.text.size))
    out += [(spec.direct_map + r.start, r.start, r.size) for r in spec.ram]
    return out


def _elf_core_layout(spec: CoreSpec, memory: MemoryMode,
                     split_notes: bool = False) -> tuple[bytes, int]:
    """The header region (ELF header, phdrs, notes) and the full file size it implies.

    ``split_notes`` gives each note its own PT_NOTE (as a dumper that does not merge them
    would) instead of /proc/vmcore's single merged one.
    """
    loads = _loads(spec)
    segments = core_note_list(spec) if split_notes else [core_notes(spec)]
    phnum = len(segments) + len(loads)
    notes_offset = ELF64_EHDR_SIZE + phnum * ELF64_PHDR_SIZE
    phdrs = []
    offset = notes_offset
    for data in segments:
        phdrs.append(phdr_bytes(PhdrType.PT_NOTE, offset=offset, filesz=len(data),
                                memsz=len(data)))
        offset += len(data)
    notes = b"".join(segments)
    offset = align_up(notes_offset + len(notes), X86_64_PAGE_SIZE)
    for vaddr, paddr, size in loads:
        filesz = 0 if memory == "none" else size
        phdrs.append(phdr_bytes(PhdrType.PT_LOAD, offset=offset if filesz else 0, vaddr=vaddr,
                                paddr=paddr, filesz=filesz, memsz=size, flags=_RWX))
        offset += filesz
    head = elf_header_bytes(phnum) + b"".join(phdrs) + notes
    full_size = offset if memory == "full" else len(head)
    return head, full_size


def build_elf_core(spec: CoreSpec = CoreSpec(), *, memory: MemoryMode = "none",
                   split_notes: bool = False) -> bytes:
    """An ELF core as /proc/vmcore presents it, in memory.

    ``memory="full"`` zero-fills every PT_LOAD: keep the RAM small.  Use ``write_elf_core``
    for big sparse files.  ``split_notes`` puts each note in a PT_NOTE of its own.
    """
    head, full_size = _elf_core_layout(spec, memory, split_notes)
    return head.ljust(full_size, b"\0")


def write_elf_core(path: str | os.PathLike[str], spec: CoreSpec = CoreSpec(), *,
                   memory: MemoryMode = "full") -> int:
    """Write an ELF core; with ``memory="full"`` the data is a hole (a sparse file).

    Returns the file size.  Writing a 64 GiB dump costs a few KiB of disk.
    """
    head, full_size = _elf_core_layout(spec, memory)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(full_size)
    return full_size


def build_raw_elfcorehdr(spec: CoreSpec = CoreSpec(), *, possible_cpus: int = 2,
                         note_addresses: Sequence[int] | None = None,
                         vmcoreinfo_address: int = 0x2A0_0000, vmcoreinfo: bool = True,
                         pad_to: int | None = None) -> bytes:
    """The first kernel's elfcorehdr (``crash_prepare_elf64_headers``).

    One PT_NOTE per possible CPU (pointing at per-CPU ``crash_notes``), one for VMCOREINFO,
    the kernel-text PT_LOAD, then one PT_LOAD per RAM range; ``p_offset == p_paddr``.  The
    buffer is padded with zeros to a page (as the kernel allocates it) or to ``pad_to``.
    """
    if note_addresses is None:
        note_addresses = [0x7FC0_0000 + cpu * 0x4_0000 for cpu in range(possible_cpus)]
    phdrs = [phdr_bytes(PhdrType.PT_NOTE, offset=a, paddr=a, filesz=CPU_NOTE_BUFFER_SIZE,
                        memsz=CPU_NOTE_BUFFER_SIZE) for a in note_addresses]
    if vmcoreinfo:
        phdrs.append(phdr_bytes(PhdrType.PT_NOTE, offset=vmcoreinfo_address,
                                paddr=vmcoreinfo_address, filesz=VMCOREINFO_NOTE_SIZE,
                                memsz=VMCOREINFO_NOTE_SIZE))
    for vaddr, paddr, size in _loads(spec):
        phdrs.append(phdr_bytes(PhdrType.PT_LOAD, offset=paddr, vaddr=vaddr, paddr=paddr,
                                filesz=size, memsz=size, flags=_RWX))
    buf = elf_header_bytes(len(phdrs)) + b"".join(phdrs)
    return buf.ljust(pad_to if pad_to is not None else align_up(len(buf), X86_64_PAGE_SIZE), b"\0")


# -- makedumpfile ----------------------------------------------------------------------------


def _bitmap(ranges: Iterable[AddressRange], max_mapnr: int, page: int) -> bytearray:
    bits = bytearray((max_mapnr + 7) // 8)
    for r in ranges:
        # As create_1st_bitmap_file(): a partial last page counts as a page.
        first, end = r.start // page, min(-(-r.end // page), max_mapnr)
        head_end = min(end, -(-first // 8) * 8)
        for pfn in range(first, head_end):
            bits[pfn >> 3] |= 1 << (pfn & 7)
        full_end = max(head_end, end // 8 * 8)
        bits[head_end // 8:full_end // 8] = b"\xff" * (full_end // 8 - head_end // 8)
        for pfn in range(full_end, end):
            bits[pfn >> 3] |= 1 << (pfn & 7)
    return bits


def build_kdump(spec: CoreSpec = CoreSpec(), *, block_size: int = X86_64_PAGE_SIZE,
                header_version: int = 6, status: int = 0, release: str | None = None,
                nr_cpus: int | None = None, timestamp: int = 1_700_000_000) -> bytes:
    """A kdump-compressed file's header part: both headers, the notes and both bitmaps.

    No page descriptors or page data follow (the reader never reads them).  The bitmaps are
    built per pfn from ``spec.ram``, so keep the RAM to a few GiB.
    """
    notes = core_notes(spec)
    sub_hdr_size = -(-(KDUMP_SUB_HEADER_SIZE + len(notes)) // block_size)
    ranges = list(spec.ram) + ([spec.text] if spec.text is not None else [])
    max_mapnr = max((-(-r.end // block_size) for r in ranges), default=0)
    bitmap_half = max(1, -(-((max_mapnr + 7) // 8) // block_size)) * block_size
    bitmap_blocks = 2 * bitmap_half // block_size
    if release is None:
        release = next((line.split("=", 1)[1] for line in (spec.vmcoreinfo or "").splitlines()
                        if line.startswith("OSRELEASE=")), "")

    header = bytearray(DISK_DUMP_HEADER_SIZE)
    header[0:8] = KDUMP_SIGNATURE
    struct.pack_into("<i", header, 8, header_version)
    uts = ["Linux", "synthetic", release, "#1 SMP", "x86_64", "(none)"]
    for i, text in enumerate(uts):
        header[12 + i * UTSNAME_FIELD:12 + i * UTSNAME_FIELD + len(text)] = text.encode()
    struct.pack_into("<qqIiiIIIIIIi", header, 408, timestamp, 0, status, block_size,
                     sub_hdr_size, bitmap_blocks, min(max_mapnr, 0xFFFF_FFFF), 0, 0, 0, 0,
                     len(spec.cpus) if nr_cpus is None else nr_cpus)

    offset_note = block_size + KDUMP_SUB_HEADER_SIZE
    offset_vmcoreinfo = size_vmcoreinfo = 0
    if spec.vmcoreinfo is not None:
        info = spec.vmcoreinfo.encode()
        offset_vmcoreinfo = offset_note + len(notes) - align_up(len(info), NOTE_ALIGN)
        size_vmcoreinfo = len(info)
    sub = struct.pack("<QiiQQqQqQqQQQQ", 0, 31, 0, 0, 0, offset_vmcoreinfo, size_vmcoreinfo,
                      offset_note, len(notes), 0, 0, 0, 0, max_mapnr)
    bitmap1 = _bitmap(ranges, max_mapnr, block_size).ljust(bitmap_half, b"\0")
    out = bytearray(header.ljust(block_size, b"\0"))
    out += (sub + notes).ljust(sub_hdr_size * block_size, b"\0")
    out += bitmap1 + bitmap1      # bitmap2 (dumpable) = bitmap1: nothing filtered
    return bytes(out)


def flat_stream(records: Iterable[tuple[int, bytes]], *, end_marker: bool = True,
                version: int = 1) -> bytes:
    """A flattened stream from ``(offset, data)`` records, in order."""
    head = struct.pack(">16sqq", MAKEDUMPFILE_SIGNATURE, FLAT_HEADER_TYPE, version)
    out = bytearray(head.ljust(MAKEDUMPFILE_HEADER_SIZE, b"\0"))
    for offset, data in records:
        out += struct.pack(">qq", offset, len(data)) + data
    if end_marker:
        out += struct.pack(">qq", FLAT_END_MARKER, FLAT_END_MARKER)
    return bytes(out)


def flatten(data: bytes, *, record_size: int = 64 << 10, skip_zero_records: bool = True) -> bytes:
    """What ``makedumpfile -F`` would stream for the regular file ``data``.

    All-zero records are left out by default (the rebuilt file has a hole there), which
    exercises the reader's hole handling.
    """
    size = len(data)
    records = []
    for offset in range(0, size, record_size):
        chunk = data[offset:offset + record_size]
        last = offset + record_size >= size
        if skip_zero_records and not last and not chunk.strip(b"\0"):
            continue
        records.append((offset, chunk))
    return flat_stream(records)
