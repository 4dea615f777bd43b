"""The dump readers: ELF vmcore, raw elfcorehdr, kdump-compressed, flattened, detection."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from vmcore_guest import BUSY, CRASH_TIME, DUMP_RAM, IDLE, RELEASE, make_spec

from harness.errors import VmcoreFormatError
from harness.topology import AddressRange, merge_ranges
from harness.vmcore import (
    DumpFormat,
    FileSource,
    FlattenedSource,
    Limits,
    LoadKind,
    NoteRole,
    VmcoreInfo,
    decode_prstatus,
    open_dump,
    parse_elfcorehdr,
    rebuild_flattened,
)
from harness.vmcore.constants import X86_64_REGISTER_NAMES
from harness.vmcore.kdump import bitmap_runs
from harness.vmcore.writer import (
    GiB,
    MiB,
    build_elf_core,
    build_kdump,
    build_raw_elfcorehdr,
    elf_header_bytes,
    flat_stream,
    flatten,
    note_bytes,
    phdr_bytes,
    write_elf_core,
)


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


def format_error(data: bytes, **kwargs: str) -> VmcoreFormatError:
    with pytest.raises(VmcoreFormatError) as info:
        open_dump(data, **kwargs)
    return info.value


# -- ELF vmcore ---------------------------------------------------------------------------


@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "path"])
def test_elf_core_reads_notes_vmcoreinfo_and_loads(tmp_path: Path, as_file: bool) -> None:
    data = build_elf_core(make_spec(), memory="headers-only")
    source: bytes | Path = data
    if as_file:
        source = tmp_path / "vmcore"
        source.write_bytes(data)
    dump = open_dump(source)

    assert dump.format == DumpFormat.ELF and not dump.is_raw_header
    assert [(n.pid, n.rip) for n in dump.cpu_notes] == [(4242, BUSY.rip), (0, IDLE.rip)]
    assert dump.cpu_notes[0].prstatus is not None
    assert dump.cpu_notes[0].prstatus.registers_dict()["rsp"] == BUSY.rsp
    assert dump.cpu_notes[1].idle
    assert dump.vmcoreinfo is not None
    assert (dump.vmcoreinfo.osrelease, dump.vmcoreinfo.crash_time) == (RELEASE, CRASH_TIME)
    assert dump.ram_ranges == merge_ranges(DUMP_RAM)
    text = dump.text_load
    assert text is not None and text.vaddr == 0xFFFF_FFFF_8100_0000
    assert text.range == AddressRange(0x100_0000, 0x300_0000)
    assert [seg.kind for seg in dump.loads] == [LoadKind.TEXT] + [LoadKind.RAM] * len(DUMP_RAM)
    # A headers-only copy: every PT_LOAD points past the end of the file.
    assert len(dump.truncated_loads) == len(dump.loads)


def test_prstatus_decodes_at_the_kernel_offsets() -> None:
    """Built by hand from the x86_64 layout, not by our writer."""
    desc = bytearray(336)
    struct.pack_into("<i", desc, 0, 11)                 # pr_info.si_signo
    struct.pack_into("<h", desc, 12, 11)                # pr_cursig
    struct.pack_into("<iiii", desc, 32, 77, 1, 77, 77)  # pid ppid pgrp sid
    regs = list(range(100, 127))
    struct.pack_into("<27Q", desc, 112, *regs)
    struct.pack_into("<i", desc, 328, 1)                # pr_fpvalid
    status = decode_prstatus(bytes(desc))
    assert status is not None
    assert (status.signal, status.cursig, status.pid, status.ppid) == (11, 11, 77, 1)
    assert status.fpvalid == 1
    assert status.rip == regs[16] and status.register("rip") == regs[16]
    assert status.rsp == regs[19] and status.register("r15") == regs[0]
    assert list(status.registers_dict()) == list(X86_64_REGISTER_NAMES)
    assert decode_prstatus(bytes(desc[:328])) is None
    with pytest.raises(KeyError):
        status.register("xmm0")


def test_vmcoreinfo_parsing_is_typed_and_lenient() -> None:
    text = (b"OSRELEASE=6.12.0\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff82a1a360\n"
            b"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\nKERNELOFFSET=1e000000\nSIZE(page)=64\n"
            b"OFFSET(page.flags)=0\nLENGTH(zone.free_area)=11\nCRASHTIME=1700000000\n"
            b"PAGESIZE=8192\nno equals sign\nCRASHTIME=soon\n\0\0\0garbage after NUL")
    info = VmcoreInfo.parse(text)
    assert info.osrelease == "6.12.0"
    assert info.page_size == 4096                     # the first PAGESIZE wins
    assert info.symbol("init_uts_ns") == 0xFFFFFFFF82A1A360
    assert info.symbols == {"init_uts_ns": 0xFFFFFFFF82A1A360}
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert info.kernel_offset == 0x1E000000
    assert info.size("page") == 64 and info.offset("page.flags") == 0
    assert info.length("zone.free_area") == 11
    assert info.crash_time == 1_700_000_000
    assert info.malformed_lines == ("no equals sign", "CRASHTIME=soon")
    assert info.symbol("missing") is None


def test_pyelftools_reads_our_cores_the_same_way() -> None:
    """An independent ELF reader keeps the writer (and so the reader tests) honest."""
    data = build_elf_core(make_spec(), memory="headers-only")
    ours = open_dump(data)
    elf = ELFFile(io.BytesIO(data))
    segments = list(elf.iter_segments())
    assert [s["p_type"] for s in segments] == ["PT_NOTE"] + ["PT_LOAD"] * len(ours.loads)
    assert [(s["p_paddr"], s["p_memsz"]) for s in segments[1:]] == [
        (seg.range.start, seg.range.size) for seg in ours.loads]
    notes = list(segments[0].iter_notes())  # type: ignore[attr-defined]
    assert [n["n_name"] for n in notes] == ["CORE", "CORE", "VMCOREINFO"]
    assert [n["n_descsz"] for n in notes[:2]] == [336, 336]
    raw = build_raw_elfcorehdr(make_spec(), possible_cpus=4)
    raw_segments = list(ELFFile(io.BytesIO(raw)).iter_segments())
    assert [s["p_type"] for s in raw_segments].count("PT_NOTE") == 5


def test_sparse_multi_gib_file_is_read_by_its_headers_only(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(ram=(AddressRange(MiB, 2 * GiB), AddressRange(4 * GiB, 12 * GiB)))
    path = tmp_path / "big.core"
    size = write_elf_core(path, spec, memory="full")
    assert size > 10 * GiB
    read: list[int] = []
    original = FileSource._pread

    def counting(self: FileSource, offset: int, length: int) -> bytes:
        read.append(length)
        return original(self, offset, length)

    monkeypatch.setattr(FileSource, "_pread", counting)
    dump = open_dump(path)
    assert sum(read) < 8192 and len(read) <= 4
    assert dump.file_size == size and not dump.truncated_loads
    assert dump.memory_bytes_described == 2 * GiB - MiB + 8 * GiB


# -- raw elfcorehdr -----------------------------------------------------------------------


def test_raw_elfcorehdr_from_a_zero_padded_buffer() -> None:
    addresses = [0x7F00_0000 + i * 0x10_0000 for i in range(4)]
    raw = build_raw_elfcorehdr(make_spec(), possible_cpus=4, note_addresses=addresses,
                               pad_to=1 << 20)
    assert len(raw) == 1 << 20
    for dump in (parse_elfcorehdr(raw), open_dump(raw)):
        assert dump.format == DumpFormat.RAW_ELFCOREHDR
        assert [s.address for s in dump.cpu_note_segments] == addresses
        assert [s.cpu for s in dump.cpu_note_segments] == [0, 1, 2, 3]
        assert [s.role for s in dump.vmcoreinfo_segments] == [NoteRole.VMCOREINFO]
        assert dump.cpu_notes == () and dump.vmcoreinfo is None
        assert dump.ram_ranges == merge_ranges(DUMP_RAM)
        assert dump.text_load is not None and not dump.truncated_loads


def test_raw_elfcorehdr_ignores_stale_entries_past_e_phnum() -> None:
    """An in-place rewrite with fewer ranges leaves old program headers behind."""
    big = build_raw_elfcorehdr(make_spec(), possible_cpus=2)
    small = build_raw_elfcorehdr(make_spec(ram=DUMP_RAM[:1]), possible_cpus=2)
    small_phnum = 2 + 1 + 1 + 1            # CPU notes, VMCOREINFO, text, one RAM range
    rewritten = bytearray(big)
    rewritten[:64 + small_phnum * 56] = small[:64 + small_phnum * 56]
    assert rewritten[64 + small_phnum * 56:64 + (small_phnum + 1) * 56].strip(b"\0")
    dump = parse_elfcorehdr(bytes(rewritten))
    assert dump.ram_ranges == (DUMP_RAM[0],)


def test_pn_xnum_takes_the_count_from_section_zero() -> None:
    notes = note_bytes("CORE", 1, bytes(336))
    phdrs = [phdr_bytes(4, offset=0, filesz=len(notes), memsz=len(notes)),
             phdr_bytes(1, vaddr=0xFFFF_8880_0010_0000, paddr=MiB, memsz=MiB)]
    phoff = 64
    shoff = phoff + 2 * 56
    notes_at = shoff + 64
    phdrs[0] = phdr_bytes(4, offset=notes_at, filesz=len(notes), memsz=len(notes))
    header = bytearray(elf_header_bytes(0xFFFF))
    struct.pack_into("<Q", header, 40, shoff)          # e_shoff
    struct.pack_into("<HHH", header, 58, 64, 1, 0)     # e_shentsize, e_shnum, e_shstrndx
    section0 = bytearray(64)
    struct.pack_into("<I", section0, 44, 2)            # sh_info = real e_phnum
    data = bytes(header) + b"".join(phdrs) + bytes(section0) + notes
    dump = open_dump(data)
    assert dump.elf is not None and dump.elf.phnum == 2 and dump.elf.phnum_extended
    assert len(dump.cpu_notes) == 1 and dump.ram_ranges == (AddressRange(MiB, 2 * MiB),)
    # ... and a count above the cap is refused, naming e_phnum.
    struct.pack_into("<I", section0, 44, Limits.MAX_PROGRAM_HEADERS + 1)
    error = format_error(bytes(header) + b"".join(phdrs) + bytes(section0) + notes)
    assert (error.field, error.offset) == ("e_phnum", 56)


# -- bad input names the field and the offset ---------------------------------------------

_CORE = build_elf_core(make_spec(), memory="headers-only")
_NOTE_PHDR = 64            # the PT_NOTE is program header 0
_FIRST_RAM_PHDR = 64 + 2 * 56


@pytest.mark.parametrize(("data", "field", "offset"), [
    (_CORE[:40], "e_ident", 0),
    (patched(_CORE, 4, "<B", 1), "e_ident[EI_CLASS]", 4),
    (patched(_CORE, 5, "<B", 2), "e_ident[EI_DATA]", 5),
    (patched(_CORE, 16, "<H", 2), "e_type", 16),
    (patched(_CORE, 18, "<H", 183), "e_machine", 18),
    (patched(_CORE, 54, "<H", 32), "e_phentsize", 54),
    (patched(_CORE, 56, "<H", 60000), "e_phoff", 32),
    (patched(_CORE, 56, "<H", 0), "e_phnum", 56),
    (patched(_CORE, _NOTE_PHDR + 8, "<Q", 1 << 40), "p_offset", _NOTE_PHDR + 8),
    (patched(_CORE, _FIRST_RAM_PHDR + 32, "<Q", 1 << 62), "p_filesz", _FIRST_RAM_PHDR + 32),
    (patched(_CORE, _FIRST_RAM_PHDR + 24, "<Q", 1 << 53), "p_memsz", _FIRST_RAM_PHDR + 40),
    # The second RAM load moved onto the first: overlapping ranges.
    (patched(_CORE, _FIRST_RAM_PHDR + 56 + 24, "<Q", 2 * MiB), "p_paddr",
     _FIRST_RAM_PHDR + 56 + 24),
], ids=["short", "elf32", "big-endian", "not-core", "aarch64", "phentsize", "phdrs-past-end",
        "no-phdrs", "note-past-end", "filesz>memsz", "absurd-paddr", "overlap"])
def test_bad_elf_input_names_field_and_offset(data: bytes, field: str, offset: int) -> None:
    error = format_error(data)
    assert (error.field, error.offset) == (field, offset), str(error)
    assert "<buffer>" in str(error)


def test_lying_note_sizes_name_the_note() -> None:
    notes_at = struct.unpack_from("<Q", _CORE, _NOTE_PHDR + 8)[0]
    error = format_error(patched(_CORE, notes_at + 4, "<I", 4096))     # CPU 0's n_descsz
    assert (error.field, error.offset) == ("n_descsz", notes_at + 4)
    error = format_error(patched(_CORE, notes_at, "<I", 100_000))      # n_namesz
    assert (error.field, error.offset) == ("n_namesz", notes_at)


def test_program_header_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Limits, "MAX_PROGRAM_HEADERS", 3)
    error = format_error(_CORE)
    assert (error.field, error.offset) == ("e_phnum", 56)


# -- kdump-compressed ---------------------------------------------------------------------


def test_kdump_layout_matches_diskdump_mod_h() -> None:
    """The offsets from makedumpfile's structs, written out as literals."""
    data = build_kdump(make_spec(), nr_cpus=2)
    assert data[:8] == b"KDUMP   "
    block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iiI", data, 428)
    assert block_size == 4096 and struct.unpack_from("<i", data, 460)[0] == 2
    offset_vmcoreinfo, _size_vmcoreinfo, offset_note, size_note = struct.unpack_from(
        "<qQqQ", data, block_size + 32)
    assert data[offset_vmcoreinfo:offset_vmcoreinfo + 10] == b"OSRELEASE="
    assert struct.unpack_from("<III", data, offset_note)[2] == 1          # NT_PRSTATUS first
    assert offset_note + size_note <= (1 + sub_hdr_size) * block_size
    bitmap1 = (1 + sub_hdr_size) * block_size
    assert data[bitmap1 + MiB // 4096 // 8] == 0xFF and data[bitmap1] == 0   # pfn 256 on, 0 off
    assert len(data) == bitmap1 + bitmap_blocks * block_size

    dump = open_dump(data)
    assert dump.kdump is not None
    assert (dump.kdump.block_size, dump.kdump.nr_cpus, dump.kdump.release) == (4096, 2, RELEASE)
    assert [n.pid for n in dump.cpu_notes] == [4242, 0]
    assert dump.vmcoreinfo is not None and dump.vmcoreinfo.crash_time == CRASH_TIME
    # bitmap1 also marks the kernel-text pages (inside RAM), so compare after merging.
    assert dump.ram_ranges == merge_ranges(DUMP_RAM)
    assert dump.stream_complete


def test_kdump_incomplete_flag_and_old_header_versions() -> None:
    incomplete = open_dump(build_kdump(make_spec(), status=0x8))
    assert not incomplete.stream_complete and incomplete.observations
    v2 = open_dump(build_kdump(make_spec(), header_version=2))
    assert v2.vmcoreinfo is None and v2.cpu_notes == ()     # no notes before version 4
    assert v2.kdump is not None and v2.kdump.header_version == 2


@pytest.mark.parametrize(("offset", "fmt", "value", "field"), [
    (428, "<i", 1000, "block_size"),
    (432, "<i", 0, "sub_hdr_size"),
    (436, "<I", 1, "bitmap_blocks"),
    (4096 + 48, "<q", 10, "offset_note"),
    (4096 + 96, "<Q", 1 << 40, "max_mapnr_64"),
])
def test_bad_kdump_input_names_the_field(offset: int, fmt: str, value: int, field: str) -> None:
    error = format_error(patched(build_kdump(make_spec()), offset, fmt, value))
    assert (error.field, error.offset) == (field, offset)


def test_kdump_cut_inside_the_bitmap() -> None:
    data = build_kdump(make_spec())
    header = open_dump(data).kdump
    assert header is not None
    error = format_error(data[:header.offset_bitmap1 + 100])
    assert (error.field, error.offset) == ("bitmap1", header.offset_bitmap1)


def test_bitmap_runs_edge_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    bits = bytes([0b1111_0000, 0xFF, 0x0F, 0x00, 0x01, 0xFF])
    assert bitmap_runs(bits, 48) == [(4, 20), (32, 33), (40, 48)]
    assert bitmap_runs(bits, 44) == [(4, 20), (32, 33), (40, 44)]     # bits past nbits ignored
    assert bitmap_runs(b"\xff" * 4, 32) == [(0, 32)]
    assert bitmap_runs(b"\x00" * 4, 32) == []
    monkeypatch.setattr(Limits, "MAX_MEMORY_RUNS", 10)
    with pytest.raises(VmcoreFormatError) as info:
        bitmap_runs(b"\x55" * 100, 800)
    assert info.value.field == "bitmap1"


# -- flattened ----------------------------------------------------------------------------


def test_flattened_reads_without_rebuilding_and_rebuilds_from_a_pipe(tmp_path: Path) -> None:
    regular = build_kdump(make_spec())
    stream = flatten(regular, record_size=4096)
    flat_path = tmp_path / "dump.flat"
    flat_path.write_bytes(stream)
    with FileSource(flat_path) as source:
        flat = FlattenedSource(source)
        assert flat.complete and flat.size == len(regular)
        assert flat.read_at(0, 4096, field="x") == regular[:4096]
        assert flat.read_at(len(regular) - 10, 10, field="x") == regular[-10:]
    assert open_dump(flat_path).ram_ranges == open_dump(regular).ram_ranges

    class Pipe(io.RawIOBase):
        """Sequential only, short reads: like stdin from makedumpfile -F."""

        def __init__(self, data: bytes) -> None:
            self._data, self._pos = data, 0

        def readable(self) -> bool:
            return True

        def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
            n = min(len(buf), 1000, len(self._data) - self._pos)
            buf[:n] = self._data[self._pos:self._pos + n]
            self._pos += n
            return n

    out = io.BytesIO()
    pipe: Any = Pipe(stream)
    assert rebuild_flattened(pipe, out, chunk_size=4096) == len(regular)
    assert out.getvalue() == regular


def test_flattened_overwrites_holes_and_cut_streams() -> None:
    records = [(8192, b"B" * 10), (0, b"KDUMP   "), (8195, b"xy"), (100, b"")]
    stream = flat_stream(records)
    from harness.vmcore.source import BufferSource
    flat = FlattenedSource(BufferSource(stream))
    assert flat.size == 8202
    assert flat.read_at(8190, 12, field="x") == b"\0\0BBBxyBBBBB"   # hole, then later record wins
    # The header fields are big-endian (makedumpfile's write_buffer byte-swaps on x86).
    assert stream[4096:4112] == struct.pack(">qq", 8192, 10)
    cut = FlattenedSource(BufferSource(flat_stream(records, end_marker=False)))
    assert not cut.complete
    dump = open_dump(flat_stream([(0, build_kdump(make_spec()))], end_marker=False))
    assert not dump.stream_complete and "end marker" in dump.observations[-1]
    with pytest.raises(VmcoreFormatError, match="end marker"):
        rebuild_flattened(io.BytesIO(flat_stream(records, end_marker=False)), io.BytesIO())
    with pytest.raises(VmcoreFormatError) as info:
        rebuild_flattened(io.BytesIO(flat_stream([(-5, b"x")])), io.BytesIO())
    assert (info.value.field, info.value.offset) == ("offset", 4096)
    bad_type = patched(stream, 16, ">q", 2)
    assert (format_error(bad_type).field, format_error(bad_type).offset) == ("type", 16)
