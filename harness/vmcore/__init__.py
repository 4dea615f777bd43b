"""Crash dump readers, the verifier and the live elfcorehdr audit (pure Python, no QEMU).

Reading::

    dump = open_dump("vmcore")                  # ELF, kdump-compressed or flattened, by content
    header = parse_elfcorehdr(guest_bytes)      # the first kernel's header, from guest memory

Checking::

    report = verify(dump, topology_at_panic, panic_window=(t0, t1), raw_header=header)
    report.verdict          # Verdict.ACCURATE / STALE / INCOMPLETE / MISMATCH / INVALID
    print(report.to_text()); json.dumps(report.to_json_dict())

Live audit (no crash)::

    where = parse_loaded_elf_headers(dmesg) or find_elfcorehdr(read_phys, crash_kernel_ranges)
    report = audit_elfcorehdr(read_phys(where, size), topology)

Module map: ``constants`` (IntEnums, layouts, ``Limits``), ``source`` (byte sources), ``elf``
(ELF64 plumbing), ``notes`` (prstatus, VMCOREINFO), ``kdump`` and ``flattened``
(makedumpfile formats), ``reader`` (detection, ``open_dump``), ``model`` (``Dump``),
``verify``, ``audit``, ``writer`` (synthetic dumps), ``bench``.
"""

from __future__ import annotations

from .audit import (
    LoadedElfHeaders,
    audit_elfcorehdr,
    elfcorehdr_extent,
    find_elfcorehdr,
    find_elfcorehdr_candidates,
    is_elfcorehdr_start,
    parse_loaded_elf_headers,
)
from .constants import (
    DumpFormat,
    ElfClass,
    ElfData,
    ElfMachine,
    ElfType,
    Limits,
    NoteType,
    PhdrType,
)
from .elf import ElfHeader, Note, ProgramHeader
from .flattened import FlattenedSource, rebuild_flattened, rebuild_flattened_file
from .model import Dump, KdumpHeader, LoadKind, LoadSegment, NoteRole, NoteSegment
from .notes import CpuNote, PrStatus, VmcoreInfo, decode_prstatus
from .reader import detect_format, open_dump, parse_elfcorehdr, read_dump
from .source import BufferSource, ByteSource, FileSource
from .summary import describe_dump
from .verify import (
    DEFAULT_PANIC_PATTERNS,
    Area,
    Finding,
    FindingCode,
    Severity,
    Verdict,
    VerifyReport,
    verify,
)

__all__ = [
    "DEFAULT_PANIC_PATTERNS",
    "Area",
    "BufferSource",
    "ByteSource",
    "CpuNote",
    "Dump",
    "DumpFormat",
    "ElfClass",
    "ElfData",
    "ElfHeader",
    "ElfMachine",
    "ElfType",
    "FileSource",
    "Finding",
    "FindingCode",
    "FlattenedSource",
    "KdumpHeader",
    "Limits",
    "LoadKind",
    "LoadSegment",
    "LoadedElfHeaders",
    "Note",
    "NoteRole",
    "NoteSegment",
    "NoteType",
    "PhdrType",
    "PrStatus",
    "ProgramHeader",
    "Severity",
    "Verdict",
    "VerifyReport",
    "VmcoreInfo",
    "audit_elfcorehdr",
    "decode_prstatus",
    "describe_dump",
    "detect_format",
    "elfcorehdr_extent",
    "find_elfcorehdr",
    "find_elfcorehdr_candidates",
    "is_elfcorehdr_start",
    "open_dump",
    "parse_elfcorehdr",
    "parse_loaded_elf_headers",
    "read_dump",
    "rebuild_flattened",
    "rebuild_flattened_file",
    "verify",
]
