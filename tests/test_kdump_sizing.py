"""A failed kdump load says kexec's reason, the reservation and what loading needs."""

from __future__ import annotations

import struct
from pathlib import Path

from harness.guest.kdump_sizing import explain_load_failure, kexec_reason, reserved_size
from harness.images.bzimage import init_size_of


def bzimage(path: Path, init_size: int, protocol: int = 0x020F) -> Path:
    blob = bytearray(0x300)
    struct.pack_into("<H", blob, 0x1FE, 0xAA55)
    blob[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", blob, 0x206, protocol)
    struct.pack_into("<I", blob, 0x260, init_size)
    path.write_bytes(bytes(blob))
    return path


def test_init_size_comes_from_the_setup_header(tmp_path: Path) -> None:
    assert init_size_of(bzimage(tmp_path / "k", 56 << 20)) == 56 << 20
    assert init_size_of(bzimage(tmp_path / "old", 56 << 20, protocol=0x0209)) is None
    assert init_size_of(tmp_path / "missing") is None


def test_the_32m_reservation_seen_as_a_new_user(tmp_path: Path) -> None:
    kernel = bzimage(tmp_path / "vmlinuz", 56 << 20)
    initrd = tmp_path / "capture.cpio"
    initrd.write_bytes(b"\0" * (10 << 20))
    text = explain_load_failure(
        255, "kexec_file_load failed: Cannot assign requested address\n", crashkernel="32M",
        reserved=reserved_size("3c000000-3dffffff,"), kernel=kernel, initrd=initrd)
    assert text.startswith("loading the capture kernel failed: kexec_file_load failed: "
                           "Cannot assign requested address (kexec exit status 255)")
    assert "crashkernel=32M reserved 32 MiB at 0x3c000000" in text
    assert "loading alone needs 67 MiB (kernel init_size 56 MiB + capture initrd 10 MiB" in text
    assert "raise --crashkernel (160M was the smallest" in text


def test_no_reservation_at_all() -> None:
    text = explain_load_failure(1, "", crashkernel="256M", reserved="", kernel=None,
                                initrd=None)
    assert "no crashkernel region is reserved (crashkernel=256M" in text


def test_kexec_debug_lines_are_not_its_reason() -> None:
    out = ("Try gzip decompression.\nkernel: 0x7f0000 kernel_size: 0xb3c000\n"
           "Could not find a free area of memory of 0x3000 bytes...\n"
           "locate_hole failed\n")
    assert kexec_reason(out) == ("Could not find a free area of memory of 0x3000 bytes...; "
                                 "locate_hole failed")
