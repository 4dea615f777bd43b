"""Finding the uncompressed, PVH-bootable kernel inside a bzImage (synthetic kernels)."""

from __future__ import annotations

import gzip
import lzma
import struct

import pytest

from harness.images import pvh


def elf_with_notes(notes: list[tuple[bytes, int]]) -> bytes:
    """A minimal ELF64 executable whose one PT_NOTE segment holds ``notes``."""
    body = b""
    for name, kind in notes:
        owner = name + b"\0"
        desc = b"\0" * 8
        body += struct.pack("<III", len(owner), len(desc), kind)
        body += owner.ljust((len(owner) + 3) // 4 * 4, b"\0") + desc
    ehdr = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,
                       2, 62, 1, 0x1000000, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, 64 + 56, 0, 0, len(body), len(body), 4)
    return ehdr + phdr + body


def bzimage_with(payload: bytes, setup_sects: int = 4) -> bytes:
    """A bzImage-shaped blob whose setup header points at ``payload``."""
    setup = (setup_sects + 1) * 512
    head = bytearray(setup + 0x100)
    head[pvh.SETUP_SECTS_OFFSET] = setup_sects
    struct.pack_into("<II", head, pvh.PAYLOAD_OFFSET, 0x100, len(payload))
    return bytes(head) + payload


def with_size(compressed: bytes, size: int) -> bytes:
    return compressed + struct.pack("<I", size)


PVH_ELF = elf_with_notes([(b"Linux", 256), (b"Xen", 10), (b"Xen", pvh.XEN_ELFNOTE_PHYS32_ENTRY)])


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_a_pvh_kernel_is_extracted(compress) -> None:  # type: ignore[no-untyped-def]
    blob = bzimage_with(with_size(compress(PVH_ELF), len(PVH_ELF)))
    assert pvh.extract_vmlinux(blob) == PVH_ELF
    assert pvh.pvh_kernel(blob) == PVH_ELF


def test_a_kernel_without_the_pvh_note_boots_as_a_bzimage() -> None:
    plain = elf_with_notes([(b"Linux", 256), (b"Xen", 10)])
    blob = bzimage_with(with_size(gzip.compress(plain), len(plain)))
    assert pvh.extract_vmlinux(blob) == plain
    assert not pvh.has_pvh_entry(plain)
    assert pvh.pvh_kernel(blob) is None


@pytest.mark.parametrize("blob", [
    b"",                                                                   # nothing at all
    bzimage_with(with_size(gzip.compress(PVH_ELF), len(PVH_ELF) + 1)),     # size disagrees
    bzimage_with(with_size(b"\x02\x21\x4c\x18" + b"\0" * 64, 100)),         # LZ4: left alone
    bzimage_with(with_size(gzip.compress(b"not an ELF"), 10)),             # not a kernel
    bzimage_with(with_size(b"\x1f\x8b" + b"\xff" * 40, 10)),               # corrupt gzip
    bzimage_with(b"x" * 8)[:-4],                                           # cut short
])
def test_anything_else_means_no_vmlinux(blob: bytes) -> None:
    assert pvh.pvh_kernel(blob) is None


def test_lying_note_sizes_do_not_raise() -> None:
    broken = PVH_ELF[:-20] + struct.pack("<III", 0xFFFFFF, 0xFFFFFF, 18) + b"Xen\0"
    assert pvh.has_pvh_entry(broken) in (True, False)
    assert not pvh.has_pvh_entry(b"\x7fELF" + b"\0" * 10)
