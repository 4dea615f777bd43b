"""Property tests: mutated dumps give a result or a VmcoreFormatError, quickly, never a crash.

Seeds are small synthetic dumps in every format; mutations flip, overwrite, insert and cut
bytes, biased towards the header region and towards the integer values that break parsers
(0, 1, all-ones, PN_XNUM, sign bits).  A dump that still parses must also go through the
verifier and both report renderings.
"""

from __future__ import annotations

import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vmcore_guest import make_spec, make_topology

from harness.errors import VmcoreFormatError
from harness.topology import AddressRange
from harness.vmcore import (
    DumpFormat,
    elfcorehdr_extent,
    find_elfcorehdr,
    is_elfcorehdr_start,
    open_dump,
    verify,
)
from harness.vmcore.writer import (
    MiB,
    build_elf_core,
    build_kdump,
    build_raw_elfcorehdr,
    flatten,
)

# A small guest keeps the kdump bitmap at a few KiB.
_SMALL = make_spec(ram=(AddressRange(MiB, 48 * MiB), AddressRange(64 * MiB, 96 * MiB)))
SEEDS: dict[str, bytes] = {
    "elf": build_elf_core(_SMALL, memory="headers-only"),
    "raw": build_raw_elfcorehdr(_SMALL, possible_cpus=3),
    "kdump": build_kdump(_SMALL),
    "flat-kdump": flatten(build_kdump(_SMALL), record_size=1024),
    "flat-elf": flatten(build_elf_core(_SMALL, memory="headers-only"), record_size=512),
}
_NASTY = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFF_FFFF, 2**31, 2**63 - 1, 2**63, 2**64 - 1)
_TIME_LIMIT = 1.0      # seconds per parse; real headers take about a millisecond


@st.composite
def mutated(draw: st.DrawFn, seed_name: str) -> bytes:
    data = bytearray(SEEDS[seed_name])
    for _ in range(draw(st.integers(1, 4))):
        # Most interesting fields live in the first few KiB (headers, phdrs, notes).
        limit = len(data) if draw(st.booleans()) else min(len(data), 4096 + 64)
        if limit == 0:
            break
        where = draw(st.integers(0, max(0, limit - 1)))
        op = draw(st.sampled_from(("flip", "int", "insert", "delete", "truncate")))
        if op == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif op == "int":
            width, fmt = draw(st.sampled_from(((2, "<H"), (4, "<I"), (8, "<Q"), (8, ">Q"))))
            value = draw(st.sampled_from(_NASTY)) & ((1 << (8 * width)) - 1)
            if where + width <= len(data):
                struct.pack_into(fmt, data, where, value)
        elif op == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[where:where + draw(st.integers(1, 64))]
        else:
            del data[where:]
    return bytes(data)


def _exercise(data: bytes) -> None:
    start = time.perf_counter()
    try:
        dump = open_dump(data)
    except VmcoreFormatError as exc:
        assert exc.field, f"error without a field: {exc}"
        assert "\n" not in str(exc)
    else:
        report = verify(dump, make_topology(), panic_window=(0.0, 2e9), dmesg="")
        report.to_text()
        report.to_json_dict()
        dump.to_json_dict()
        if dump.format == DumpFormat.RAW_ELFCOREHDR:
            is_elfcorehdr_start(data[:64])      # a boolean either way, never an exception
    assert time.perf_counter() - start < _TIME_LIMIT


_SETTINGS = settings(max_examples=150, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(mutated("elf"))
def test_mutated_elf_core(data: bytes) -> None:
    _exercise(data)


@_SETTINGS
@given(mutated("raw"))
def test_mutated_raw_elfcorehdr(data: bytes) -> None:
    _exercise(data)
    try:
        elfcorehdr_extent(data[:64])
    except VmcoreFormatError:
        pass


@_SETTINGS
@given(mutated("kdump"))
def test_mutated_kdump(data: bytes) -> None:
    _exercise(data)


@_SETTINGS
@given(mutated("flat-kdump"))
def test_mutated_flattened_kdump(data: bytes) -> None:
    _exercise(data)


@_SETTINGS
@given(mutated("flat-elf"))
def test_mutated_flattened_elf(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=100, deadline=None, database=None)
@given(st.binary(max_size=4096), st.sampled_from([b"\x7fELF\x02\x01\x01", b"KDUMP   ",
                                                  b"makedumpfile\0\0\0\0", b""]))
def test_random_bytes_behind_a_signature(tail: bytes, signature: bytes) -> None:
    _exercise(signature + tail)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 63), st.binary(min_size=64, max_size=64)), max_size=8))
def test_find_elfcorehdr_never_raises_on_random_memory(pages: list[tuple[int, bytes]]) -> None:
    memory = bytearray(64 * 4096)
    header = build_raw_elfcorehdr(_SMALL, possible_cpus=1)[:64]
    for page, data in pages:
        memory[page * 4096:page * 4096 + 64] = header[:8] + data[8:] if data[0] & 1 else data

    def read(addr: int, size: int) -> bytes:
        return bytes(memory[addr:addr + size])

    found = find_elfcorehdr(read, [AddressRange(0, len(memory))], chunk_size=8 * 4096)
    assert found is None or (found % 4096 == 0 and is_elfcorehdr_start(memory[found:found + 64]))
