"""Reading the kernel release from a bzImage setup header."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.images import bzimage

VERSION = b"6.12.107+deb13-cloud-amd64 (builder@example.invalid) #1 SMP Debian\0"


def fake_bzimage(version: bytes = VERSION, at: int = 0x3C00) -> bytearray:
    blob = bytearray(0x4000 + len(version))
    struct.pack_into("<H", blob, 0x1FE, 0xAA55)
    blob[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", blob, 0x206, 0x020F)
    struct.pack_into("<H", blob, 0x20E, at - 0x200)
    blob[at:at + len(version)] = version
    return blob


def test_release_is_the_first_word() -> None:
    assert bzimage.kernel_release(bytes(fake_bzimage())) == "6.12.107+deb13-cloud-amd64"
    assert bzimage.kernel_version_string(bytes(fake_bzimage())).endswith("SMP Debian")


def test_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bzImage"
    path.write_bytes(bytes(fake_bzimage(b"7.1.0-rc3+ #42 SMP\0")))
    assert bzimage.kernel_release_of(path) == "7.1.0-rc3+"


def test_elf_vmlinux_is_refused_with_a_hint() -> None:
    with pytest.raises(UsageError, match="arch/x86/boot/bzImage"):
        bzimage.kernel_release(b"\x7fELF" + bytes(0x300))


@pytest.mark.parametrize(("offset", "value"), [(0x1FE, b"\0\0"), (0x202, b"HdrX")])
def test_missing_magic_is_refused(offset: int, value: bytes) -> None:
    blob = fake_bzimage()
    blob[offset:offset + len(value)] = value
    with pytest.raises(UsageError, match="not an x86 bzImage"):
        bzimage.kernel_release(bytes(blob))


def test_pointer_beyond_the_file_is_refused() -> None:
    blob = fake_bzimage()
    struct.pack_into("<H", blob, 0x20E, 0xFF00)
    with pytest.raises(UsageError, match="leads nowhere"):
        bzimage.kernel_release(bytes(blob))


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read kernel"):
        bzimage.kernel_release_of(tmp_path / "nope")
