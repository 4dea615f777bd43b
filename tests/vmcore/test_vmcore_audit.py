"""The live audit core: find the elfcorehdr in guest memory, parse it, verify it."""

from __future__ import annotations

import pytest
from vmcore_guest import CRASH_KERNEL, DUMP_RAM, make_spec, make_topology

from harness.errors import VmcoreFormatError
from harness.topology import AddressRange
from harness.vmcore import (
    FindingCode,
    LoadedElfHeaders,
    Verdict,
    audit_elfcorehdr,
    elfcorehdr_extent,
    find_elfcorehdr,
    find_elfcorehdr_candidates,
    is_elfcorehdr_start,
    parse_loaded_elf_headers,
)
from harness.vmcore.constants import ElfType
from harness.vmcore.writer import MiB, build_raw_elfcorehdr, elf_header_bytes

# What 6.12 prints with `kexec -d -s -p` (kexec_dprintk -> pr_info, pr_fmt "kexec: "); the
# memsz leaves room for 2 + NR_CPUS (8192) + CRASH_MAX_MEMORY_RANGES (8192) program headers.
KERNEL_LOG = """\
[    5.101010] kexec_file: kernel: 00000000c0ffee00 kernel_size: 0x8a4000
[    5.201020] kexec: Loaded ELF headers at 0x3ee00000 bufsz=0x1000 memsz=0xe0080
[    5.301030] kexec_file: Loaded initrd at 0x3cb00000 bufsz=0x22f1000 memsz=0x22f1000
[   60.000000] crash hp: kexec_trylock() failed, kdump image may be inaccurate
[   61.101010] kexec: Loaded ELF headers at 0x3ef00000 bufsz=0x2000 memsz=0xe0080
"""


def test_parse_loaded_elf_headers_takes_the_latest_load() -> None:
    assert parse_loaded_elf_headers(KERNEL_LOG) == LoadedElfHeaders(0x3EF00000, 0x2000, 0xE0080)
    first = KERNEL_LOG.splitlines()[1]
    assert parse_loaded_elf_headers(first) == (0x3EE00000, 0x1000, 0xE0080)
    assert parse_loaded_elf_headers("[ 1.0] kexec_file: Loaded initrd at 0x1 bufsz=0x2") is None
    assert parse_loaded_elf_headers("") is None


class GuestMemory:
    """Sparse guest physical memory: zeros except where something was placed."""

    def __init__(self, size_limit: int | None = None) -> None:
        self.pieces: dict[int, bytes] = {}
        self.reads: list[tuple[int, int]] = []
        self.size_limit = size_limit

    def place(self, addr: int, data: bytes) -> None:
        self.pieces[addr] = data

    def read(self, addr: int, size: int) -> bytes:
        self.reads.append((addr, size))
        if self.size_limit is not None:
            size = min(size, self.size_limit)
        buf = bytearray(size)
        for start, data in self.pieces.items():
            lo, hi = max(start, addr), min(start + len(data), addr + size)
            if lo < hi:
                buf[lo - addr:hi - addr] = data[lo - start:hi - start]
        return bytes(buf)


def _exec_header() -> bytes:
    """An initrd binary: ELF64 x86_64, but ET_EXEC."""
    return elf_header_bytes(3, e_type=ElfType.ET_EXEC)


def test_find_elfcorehdr_skips_decoys_and_reads_in_chunks() -> None:
    memory = GuestMemory()
    header = build_raw_elfcorehdr(make_spec(), possible_cpus=4)
    search = (CRASH_KERNEL,)
    target = CRASH_KERNEL.start + 5 * MiB + 31 * 4096          # last page of a 128 KiB chunk
    memory.place(CRASH_KERNEL.start + 4096, _exec_header())   # ET_EXEC, page aligned
    memory.place(CRASH_KERNEL.start + 3 * MiB + 8, header)    # ET_CORE, not page aligned
    memory.place(target, header)
    assert find_elfcorehdr(memory.read, search, chunk_size=MiB // 8) == target
    assert all(size == MiB // 8 for _, size in memory.reads)
    assert memory.reads[-1][0] <= target                       # stopped at the first match
    # A header left behind by an earlier load, higher up: both are candidates.
    memory.place(target + 7 * MiB, header)
    assert find_elfcorehdr_candidates(memory.read, search) == [target, target + 7 * MiB]
    assert find_elfcorehdr_candidates(memory.read, search, limit=1) == [target]


def test_find_elfcorehdr_header_in_the_last_page_of_a_chunk() -> None:
    memory = GuestMemory()
    chunk = 64 * 4096
    target = CRASH_KERNEL.start + 3 * chunk - 4096
    memory.place(target, build_raw_elfcorehdr(make_spec(), possible_cpus=1))
    assert find_elfcorehdr(memory.read, [CRASH_KERNEL], chunk_size=chunk) == target


def test_find_elfcorehdr_nothing_there_and_short_reads() -> None:
    small = AddressRange(CRASH_KERNEL.start, CRASH_KERNEL.start + 4 * MiB)
    memory = GuestMemory()
    assert find_elfcorehdr(memory.read, [small]) is None
    assert sum(size for _, size in memory.reads) == small.size
    # A reader that returns less than asked (the end of guest RAM): stop, do not spin.
    short = GuestMemory(size_limit=8192)
    assert find_elfcorehdr(short.read, [small]) is None and len(short.reads) == 1
    with pytest.raises(ValueError, match="multiple of 4096"):
        find_elfcorehdr(memory.read, [small], chunk_size=1000)


def test_is_elfcorehdr_start_and_extent() -> None:
    header = build_raw_elfcorehdr(make_spec(), possible_cpus=4)
    assert is_elfcorehdr_start(header[:64])
    assert not is_elfcorehdr_start(_exec_header()) and not is_elfcorehdr_start(header[:40])
    phnum = 4 + 1 + 1 + len(DUMP_RAM)
    assert elfcorehdr_extent(header[:64]) == 64 + phnum * 56
    with pytest.raises(VmcoreFormatError) as info:
        elfcorehdr_extent(bytes(64))
    assert info.value.field == "e_ident[EI_MAG]"


def test_audit_elfcorehdr_verdicts() -> None:
    memsz_buffer = build_raw_elfcorehdr(make_spec(), possible_cpus=4, pad_to=0xE0080)
    report = audit_elfcorehdr(memsz_buffer, make_topology())
    assert report.verdict == Verdict.ACCURATE, report.to_text()
    stale = audit_elfcorehdr(build_raw_elfcorehdr(make_spec(ram=DUMP_RAM[:3]), possible_cpus=4),
                             make_topology())
    assert stale.verdict == Verdict.STALE
    assert FindingCode.DIMM_MISSING in stale.codes()
    with pytest.raises(VmcoreFormatError):        # a torn read: zeros where the header was
        audit_elfcorehdr(bytes(4096), make_topology())
