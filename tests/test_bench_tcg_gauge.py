"""The TCG gauge's firmware: a 64 KiB image QEMU can take as its BIOS (run in testcases)."""

from __future__ import annotations

import struct

from harness.bench.tcg_gauge import ITERATIONS, firmware


def test_the_image_is_one_bios_sized_block_with_a_reset_vector_to_its_code() -> None:
    image = firmware()
    assert len(image) == 64 * 1024                     # QEMU wants a multiple of 64 KiB
    assert image[0xFFF0:0xFFF5] == bytes([0xEA, 0, 0, 0x00, 0xF0])   # jmp far F000:0000
    assert image[0] == 0xFA                            # cli, at F000:0000


def test_the_loop_count_and_the_exit_are_in_the_code() -> None:
    image = firmware(1234)
    assert struct.pack("<I", 1234) in image and struct.pack("<I", ITERATIONS) not in image
    assert bytes([0xE6, 0xF4]) in image                # out 0xf4, al: isa-debug-exit
    # The loop's branch goes back: its 16-bit displacement is negative.
    branch = image.index(bytes([0x0F, 0x85]))
    (displacement,) = struct.unpack_from("<h", image, branch + 2)
    assert displacement < 0 and image[branch + 4 + displacement] == 0x66   # imul eax, ...
