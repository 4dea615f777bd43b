"""Crash dump readers, the verifier and the live elfcorehdr audit (pure Python, no QEMU).

Reading::

    dump = open_dump("vmcore")                  # ELF, kdump-compressed or flattened, by content
    header = parse_elfcorehdr(guest_bytes)      # the first kernel's header, from guest memory

Checking::

    report = verify(dump, topology_at_panic, panic_window=(t0, t1), raw_header=header,
                    expected=topology_from_qmp)
    report.verdict          # Verdict.ACCURATE / STALE / INCOMPLETE / MISMATCH / INVALID
    print(report.to_text()); json.dumps(report.to_json_dict())

Live audit (no crash)::

    where = parse_loaded_elf_headers(dmesg) or find_elfcorehdr(read_phys, crash_kernel_ranges)
    report = audit_elfcorehdr(read_phys(where, size), topology, read_phys=read_phys)

Module map: ``constants`` (IntEnums, layouts, ``Limits``), ``source`` (byte sources), ``elf``
(ELF64 plumbing), ``notes`` (prstatus, VMCOREINFO, ``NoteCollector``), ``kdump`` and
``flattened`` (makedumpfile formats), ``layout`` (raw header or ELF core, structural
checks), ``reader`` (detection, ``open_dump``), ``model`` (``Dump``); the verifier:
``findings`` (verdicts, codes), ``report`` (``VerifyReport``), ``check_cpu``,
``check_memory``, ``check_dimms``, ``check_info``, ``ranges``, ``subject`` and ``verifier``
(the entry point); ``audit``, ``writer`` (synthetic dumps).  The benchmark is
``harness.bench.vmcore``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .audit import (
        LoadedElfHeaders,
        audit_elfcorehdr,
        elfcorehdr_extent,
        find_elfcorehdr,
        find_elfcorehdr_candidates,
        is_elfcorehdr_start,
        parse_loaded_elf_headers,
        read_vmcoreinfo_note,
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
    from .elf import (
        ElfHeader,
        Note,
        ProgramHeader,
    )
    from .flattened import (
        FlattenedSource,
        rebuild_flattened,
        rebuild_flattened_file,
    )
    from .model import (
        Dump,
        KdumpHeader,
        LoadKind,
        LoadSegment,
        NoteRole,
        NoteSegment,
    )
    from .notes import (
        CpuNote,
        PrStatus,
        VmcoreInfo,
        decode_prstatus,
        vmcoreinfo_from_buffer,
    )
    from .reader import (
        detect_format,
        open_dump,
        parse_elfcorehdr,
        read_dump,
    )
    from .source import (
        BufferSource,
        ByteSource,
        FileSource,
    )
    from .summary import (
        describe_dump,
    )
    from .verifier import (
        DEFAULT_PANIC_PATTERNS,
        Area,
        Finding,
        FindingCode,
        Severity,
        Verdict,
        VerifyReport,
        verify,
    )

#: Names loaded on first use (PEP 562): ``vmcore inspect`` needs the readers, not the
#: verifier or the audit, and starts faster for it.
_LAZY: dict[str, str] = {
    "Area": "verifier",
    "BufferSource": "source",
    "ByteSource": "source",
    "CpuNote": "notes",
    "DEFAULT_PANIC_PATTERNS": "verifier",
    "Dump": "model",
    "DumpFormat": "constants",
    "ElfClass": "constants",
    "ElfData": "constants",
    "ElfHeader": "elf",
    "ElfMachine": "constants",
    "ElfType": "constants",
    "FileSource": "source",
    "Finding": "verifier",
    "FindingCode": "verifier",
    "FlattenedSource": "flattened",
    "KdumpHeader": "model",
    "Limits": "constants",
    "LoadKind": "model",
    "LoadSegment": "model",
    "LoadedElfHeaders": "audit",
    "Note": "elf",
    "NoteRole": "model",
    "NoteSegment": "model",
    "NoteType": "constants",
    "PhdrType": "constants",
    "PrStatus": "notes",
    "ProgramHeader": "elf",
    "Severity": "verifier",
    "Verdict": "verifier",
    "VerifyReport": "verifier",
    "VmcoreInfo": "notes",
    "audit_elfcorehdr": "audit",
    "decode_prstatus": "notes",
    "describe_dump": "summary",
    "detect_format": "reader",
    "elfcorehdr_extent": "audit",
    "find_elfcorehdr": "audit",
    "find_elfcorehdr_candidates": "audit",
    "is_elfcorehdr_start": "audit",
    "open_dump": "reader",
    "parse_elfcorehdr": "reader",
    "parse_loaded_elf_headers": "audit",
    "read_dump": "reader",
    "read_vmcoreinfo_note": "audit",
    "rebuild_flattened": "flattened",
    "rebuild_flattened_file": "flattened",
    "verify": "verifier",
    "vmcoreinfo_from_buffer": "notes",
}


__getattr__ = lazy_exports(__name__, _LAZY)


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
    "read_vmcoreinfo_note",
    "rebuild_flattened",
    "rebuild_flattened_file",
    "verify",
    "vmcoreinfo_from_buffer",
]
