"""The capture initrd's compression (harness/images/initramfs.capture_initrd): the first
format both the kernel (its ``CONFIG_RD_*``) and the host (its tool) have, else plain."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.errors import ImageBuildError
from harness.images import initramfs
from harness.images.cpio import RegularFile, newc_bytes, read_newc

LZ4_LEGACY = b"\x02\x21\x4c\x18"
ZSTD = b"\x28\xb5\x2f\xfd"
ARCHIVE = newc_bytes([RegularFile("harness/capture", b"#!/bin/sh\n" * 4000, 0o755)])


def _unpacked(tool: str, data: bytes) -> bytes:
    return subprocess.run([tool, "-d", "-c"], input=data, capture_output=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("lz4") is None, reason="no lz4 tool (ci/setup-host.sh)")
def test_lz4_legacy_frames_when_the_kernel_reads_lz4() -> None:
    packed = initramfs.capture_initrd(ARCHIVE, {"CONFIG_RD_LZ4": "y", "CONFIG_RD_ZSTD": "y"})
    assert packed[:4] == LZ4_LEGACY
    assert _unpacked("lz4", packed) == ARCHIVE
    assert len(packed) < len(ARCHIVE) // 10


@pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd tool")
def test_zstd_when_the_kernel_has_no_lz4() -> None:
    packed = initramfs.capture_initrd(ARCHIVE, {"CONFIG_RD_LZ4": "n", "CONFIG_RD_ZSTD": "y"})
    assert packed[:4] == ZSTD and _unpacked("zstd", packed) == ARCHIVE


def test_zstd_when_the_host_has_no_lz4(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(initramfs.shutil, "which",
                        lambda name: None if name == "lz4" else real(name))
    if real("zstd") is None:
        pytest.skip("no zstd tool")
    packed = initramfs.capture_initrd(ARCHIVE, {"CONFIG_RD_LZ4": "y", "CONFIG_RD_ZSTD": "y"})
    assert packed[:4] == ZSTD


@pytest.mark.parametrize("config", [None, {}, {"CONFIG_RD_GZIP": "y"}])
def test_plain_when_nothing_fits(config: dict[str, str] | None) -> None:
    packed = initramfs.capture_initrd(ARCHIVE, config)
    assert packed == ARCHIVE
    assert [e.path for e in read_newc(packed)[0]][-1] == "harness/capture"


def test_a_failing_tool_is_a_build_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initramfs, "CAPTURE_COMPRESSORS",
                        (("CONFIG_RD_LZ4", ("sh", "-c", "echo broken >&2; exit 3")),))
    with pytest.raises(ImageBuildError, match="sh failed compressing the capture initrd: broken"):
        initramfs.capture_initrd(ARCHIVE, {"CONFIG_RD_LZ4": "y"})
