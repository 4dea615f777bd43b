"""Mutated real dumps: refused with a named field, or structurally possible and judged.

The seeds are the golden files (real 6.1, 6.12 and 7.2 guests' headers-only dumps and raw
elfcorehdrs).  Mutations aim at the program header fields that decide a file's kind and
layout (p_type, p_offset, p_paddr, p_filesz, p_memsz), with values taken from the file
itself (another header's offset, the note data, the header table), plus byte flips.

Whatever parses is checked by an independent, deliberately naive (quadratic) reference of
what a kernel or makedumpfile can write; the verifier's verdict must follow from its
errors, and VMCOREINFO notes that differ must make it ``invalid``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import VmcoreFormatError
from harness.topology import Topology
from harness.vmcore import Dump, DumpFormat, Limits, PhdrType, Verdict, open_dump, verify
from harness.vmcore.constants import LOW_MEMORY_END
from harness.vmcore.verifier import decide_verdict

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "vmcore"
_CORES = sorted(GOLDEN.glob("*.core"))
SEEDS = {p.name: p.read_bytes() for p in _CORES + [p.with_suffix(".elfcorehdr") for p in _CORES]}
TOPOLOGIES = {p.stem: Topology.from_json_dict(json.loads(p.with_suffix(".json").read_text())
                                              ["topology"]) for p in _CORES}
_FIELDS = {"p_type": (0, "<I"), "p_offset": (8, "<Q"), "p_paddr": (24, "<Q"),
           "p_filesz": (32, "<Q"), "p_memsz": (40, "<Q")}


def _phdr_values(data: bytes) -> list[int]:
    """Values worth writing into a program header: the file's own offsets and addresses."""
    phnum = struct.unpack_from("<H", data, 56)[0]
    values = {0, 1, 4, 64, 64 + 56, len(data), len(data) - 16, LOW_MEMORY_END}
    for i in range(min(phnum, 64)):
        offset, _vaddr, paddr, filesz = struct.unpack_from("<QQQQ", data, 64 + i * 56 + 8)
        values |= {offset, paddr, offset + 8, offset + filesz, paddr + 0x100}
    return sorted(v for v in values if v < 1 << 64)


@st.composite
def mutated_golden(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    phnum = struct.unpack_from("<H", data, 56)[0]
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)):
            index = draw(st.integers(0, phnum - 1))
            field, (offset, fmt) = draw(st.sampled_from(sorted(_FIELDS.items())))
            value = draw(st.sampled_from(_phdr_values(bytes(data))) if field != "p_type"
                         else st.sampled_from([0, 1, 4, 6]))
            struct.pack_into(fmt, data, 64 + index * 56 + offset, value & ((1 << 64) - 1)
                             if fmt == "<Q" else value & 0xFFFF_FFFF)
        else:
            where = draw(st.integers(0, len(data) - 1))
            data[where] ^= 1 << draw(st.integers(0, 7))
    return name, bytes(data)


def _extents_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def assert_possible_elf_core(dump: Dump) -> None:
    assert dump.elf is not None
    phdrs = dump.program_headers
    notes = [(p.offset, p.offset + p.filesz) for p in phdrs if p.type == PhdrType.PT_NOTE
             and p.filesz]
    table = (dump.elf.phoff, dump.elf.phoff + dump.elf.phnum * 56)
    for i, note in enumerate(notes):
        assert not _extents_overlap(note, (0, 64)) and not _extents_overlap(note, table)
        assert not any(_extents_overlap(note, other) for other in notes[i + 1:])
    for p in phdrs:
        if p.type == PhdrType.PT_LOAD and p.filesz:
            load = (p.offset, p.offset + p.filesz)
            assert not any(_extents_overlap(load, x) for x in [(0, 64), table, *notes])
        if p.type == PhdrType.PT_NOTE:
            assert not (p.offset == p.paddr != 0), "an ELF core's PT_NOTE at a physical address"


def assert_possible_raw_header(dump: Dump) -> None:
    phdrs = dump.program_headers
    buffers = []
    for p in phdrs:
        if p.type == PhdrType.PT_NOTE:
            assert p.offset == p.paddr != 0, "a raw header's PT_NOTE with a file offset"
            if p.memsz:
                buffers.append((p.paddr, p.paddr + p.memsz))
        if p.type == PhdrType.PT_LOAD and p.paddr + p.memsz > LOW_MEMORY_END:
            assert p.offset == p.paddr, "a raw header's PT_LOAD with a file offset"
    for i, buffer in enumerate(buffers):
        assert not any(_extents_overlap(buffer, other) for other in buffers[i + 1:])
    assert len(dump.cpu_note_segments) <= Limits.MAX_CPUS


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated_golden())
def test_mutated_golden_dumps_are_refused_or_possible(case: tuple[str, bytes]) -> None:
    name, data = case
    try:
        dump = open_dump(data)
    except VmcoreFormatError as exc:
        assert exc.field and exc.offset is not None, str(exc)
        return
    assert any(p.type == PhdrType.PT_LOAD for p in dump.program_headers)
    if dump.format == DumpFormat.ELF:
        assert_possible_elf_core(dump)
    else:
        assert_possible_raw_header(dump)
    report = verify(dump, TOPOLOGIES[name.rsplit(".", 1)[0]])
    assert report.verdict == decide_verdict(report.findings)
    assert all(f.verdict is not None for f in report.errors)
    infos = dump.vmcoreinfos
    if any(other.entries != infos[0].entries for other in infos[1:]) or any(
            i.conflicts for i in infos):
        assert report.verdict == Verdict.INVALID
    report.to_text()
    report.to_text(verbose=True)
    json.dumps(report.to_json_dict())
