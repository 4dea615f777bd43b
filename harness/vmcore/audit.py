"""The live audit: check the elfcorehdr the kernel keeps in guest memory, without a crash.

Since 6.6 the kernel rewrites the elfcorehdr in place on every CPU or memory hot-plug event
(``arch_crash_handle_hotplug_event``), so reading it from guest memory (QMP ``pmemsave``) at
any moment shows what a dump *would* describe.  This module is the pure part: find the
header (from the kernel log, or by scanning the crashkernel reservation), parse it, and run
the verifier on it.  Reading guest memory is the caller's business.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from ..errors import VmcoreFormatError
from ..topology import AddressRange, Topology
from .constants import (
    ELF64_EHDR_SIZE,
    ELF64_PHDR_SIZE,
    ELF_MAGIC,
    EV_CURRENT,
    PN_XNUM,
    ElfClass,
    ElfData,
    ElfMachine,
    ElfType,
    Limits,
)
from .elf import parse_elf_header
from .model import Dump
from .reader import parse_elfcorehdr
from .source import BufferSource, BytesLike
from .verifier import VerifyReport, verify

#: ``ELF_CORE_HEADER_ALIGN``: kexec places the elfcorehdr segment on a page boundary.
ELFCOREHDR_ALIGN = 4096
DEFAULT_SCAN_CHUNK = 2 << 20

# arch/x86/kernel/crash.c, crash_load_segments() (kexec_dprintk since 6.8, pr_debug before):
#   "Loaded ELF headers at 0x%lx bufsz=0x%lx memsz=0x%lx\n"  (pr_fmt adds "kexec: ")
_LOADED_ELF_HEADERS = re.compile(
    r"Loaded ELF headers at 0x(?P<addr>[0-9a-fA-F]+) bufsz=0x(?P<bufsz>[0-9a-fA-F]+) "
    r"memsz=0x(?P<memsz>[0-9a-fA-F]+)")
_IDENT_PREFIX = ELF_MAGIC + bytes([ElfClass.ELFCLASS64, ElfData.ELFDATA2LSB, EV_CURRENT])
_TYPE_MACHINE = struct.Struct("<HH")
_PHOFF = struct.Struct("<Q")
_PHENT_PHNUM = struct.Struct("<HH")


class LoadedElfHeaders(NamedTuple):
    """Where ``kexec_file_load`` put the elfcorehdr segment."""

    addr: int
    bufsz: int    # the header as built
    memsz: int    # the segment: room for the most CPUs and memory ranges hot-plug may add


def parse_loaded_elf_headers(kernel_log: str) -> LoadedElfHeaders | None:
    """The last ``Loaded ELF headers at ...`` line of a kernel log, or None.

    The kernel prints it when the crash kernel is loaded with ``kexec -d -s -p`` (6.8+).
    The last one wins: every reload prints a new one and the old segment is freed.
    """
    last = None
    for match in _LOADED_ELF_HEADERS.finditer(kernel_log):
        last = match
    if last is None:
        return None
    return LoadedElfHeaders(int(last["addr"], 16), int(last["bufsz"], 16), int(last["memsz"], 16))


def is_elfcorehdr_start(head: BytesLike) -> bool:
    """Cheap test of 64 bytes: ELF64 LSB, ET_CORE, EM_X86_64, sane program header table.

    Besides the header the crashkernel reservation holds the capture kernel, its initrd and
    purgatory; ELF executables in the initrd are ET_EXEC/ET_DYN, so ET_CORE tells them apart.
    """
    view = bytes(head[:ELF64_EHDR_SIZE])
    if len(view) < ELF64_EHDR_SIZE or not view.startswith(_IDENT_PREFIX):
        return False
    e_type, machine = _TYPE_MACHINE.unpack_from(view, 16)
    if e_type != ElfType.ET_CORE or machine != ElfMachine.EM_X86_64:
        return False
    (phoff,) = _PHOFF.unpack_from(view, 32)
    phentsize, phnum = _PHENT_PHNUM.unpack_from(view, 54)
    # The kernel's header has its program headers right after the ELF header and never
    # uses PN_XNUM (crash.c refuses that many).
    return bool(phoff == ELF64_EHDR_SIZE and phentsize == ELF64_PHDR_SIZE
                and 0 < phnum < PN_XNUM)


def find_elfcorehdr(read_phys: Callable[[int, int], bytes],
                    search_ranges: Sequence[AddressRange], *,
                    chunk_size: int = DEFAULT_SCAN_CHUNK) -> int | None:
    """Scan ``search_ranges`` (the ``Crash kernel`` reservation) for the elfcorehdr.

    ``read_phys(addr, size)`` returns guest physical memory.  Memory is read in
    ``chunk_size`` pieces and only page-aligned offsets are tested, so a 256 MiB reservation
    costs 128 reads and 64 Ki comparisons.  Returns the lowest matching address (kexec
    allocates the segment bottom-up), or None.

    A reload frees the old segment without clearing it, so an older header can survive at
    another address: prefer the address from ``parse_loaded_elf_headers`` when the kernel
    log has it, and see ``find_elfcorehdr_candidates`` to look at every match.
    """
    return next(_scan(read_phys, search_ranges, chunk_size), None)


def find_elfcorehdr_candidates(read_phys: Callable[[int, int], bytes],
                               search_ranges: Sequence[AddressRange], *,
                               chunk_size: int = DEFAULT_SCAN_CHUNK,
                               limit: int = 16) -> list[int]:
    """Every page-aligned address in ``search_ranges`` that starts an x86_64 ELF core header
    (at most ``limit``), lowest first."""
    found: list[int] = []
    for addr in _scan(read_phys, search_ranges, chunk_size):
        found.append(addr)
        if len(found) >= limit:
            break
    return found


def _scan(read_phys: Callable[[int, int], bytes], search_ranges: Sequence[AddressRange],
          chunk_size: int) -> Iterator[int]:
    if chunk_size < ELFCOREHDR_ALIGN or chunk_size % ELFCOREHDR_ALIGN:
        raise ValueError(f"chunk_size must be a multiple of {ELFCOREHDR_ALIGN}")
    for r in sorted(search_ranges):
        addr = -(-r.start // ELFCOREHDR_ALIGN) * ELFCOREHDR_ALIGN
        while addr + ELF64_EHDR_SIZE <= r.end:
            size = min(chunk_size, r.end - addr)
            chunk = read_phys(addr, size)
            view = memoryview(chunk)
            for offset in range(0, len(chunk) - ELF64_EHDR_SIZE + 1, ELFCOREHDR_ALIGN):
                if view[offset:offset + 4] == ELF_MAGIC and is_elfcorehdr_start(
                        view[offset:offset + ELF64_EHDR_SIZE]):
                    yield addr + offset
            if len(chunk) < size:   # the reader could not give more: stop this range
                break
            addr += size


def elfcorehdr_extent(first_bytes: BytesLike) -> int:
    """Bytes to read for the whole header (ELF header + program headers), from its first 64.

    Lets a caller read 64 bytes of guest memory, then exactly what the header needs.
    """
    source = BufferSource(first_bytes, "<elfcorehdr>")
    header, phnum = parse_elf_header(source.read_available(0, ELF64_EHDR_SIZE), source=source)
    if phnum == PN_XNUM or phnum > Limits.MAX_PROGRAM_HEADERS:
        raise VmcoreFormatError(f"<elfcorehdr>: e_phnum {phnum} is not plausible for a crash "
                                "header", offset=56, field="e_phnum")
    return header.phoff + phnum * ELF64_PHDR_SIZE


def read_vmcoreinfo_note(read_phys: Callable[[int, int], bytes], header: Dump) -> bytes | None:
    """The note buffer a raw elfcorehdr's VMCOREINFO PT_NOTE points at, from guest memory.

    ``read_phys(addr, size)`` returns guest physical memory (as for ``find_elfcorehdr``).
    None when the header does not have exactly one VMCOREINFO PT_NOTE (the verifier reports
    that).  The read is at most ``Limits.MAX_RAW_NOTE_BUFFER`` bytes: the reader refuses
    larger PT_NOTEs.
    """
    segments = header.vmcoreinfo_segments
    if len(segments) != 1:
        return None
    return read_phys(segments[0].address, segments[0].size)


def audit_elfcorehdr(raw: BytesLike, topology: Topology, *,
                     read_phys: Callable[[int, int], bytes] | None = None,
                     **verify_options: Any) -> VerifyReport:
    """Parse a raw elfcorehdr read from guest memory and verify it against ``topology``.

    With ``read_phys`` the VMCOREINFO note the header points at is read too, and its
    OSRELEASE checked.  ``verify_options`` go to ``verify`` (``panic_window`` and ``dmesg``
    make no sense here).  Raises ``VmcoreFormatError`` if the buffer is not a crash header,
    or the VMCOREINFO buffer not a note (a torn read during a hot-plug rewrite can do that:
    read again).
    """
    header = parse_elfcorehdr(raw)
    if read_phys is not None:
        verify_options["vmcoreinfo"] = read_vmcoreinfo_note(read_phys, header)
    return verify(header, topology, **verify_options)


__all__ = [
    "ELFCOREHDR_ALIGN", "LoadedElfHeaders", "audit_elfcorehdr", "elfcorehdr_extent",
    "find_elfcorehdr", "find_elfcorehdr_candidates", "is_elfcorehdr_start",
    "parse_loaded_elf_headers", "read_vmcoreinfo_note",
]

