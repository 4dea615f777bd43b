"""QEMU's version: read once per build of the binary, shared by the check and the snapshot key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.errors import HostError
from harness.guest.accel import qemu_version
from harness.guest.snapshot import qemu_version_line


def _fake_qemu(tmp_path: Path, version: str) -> tuple[Path, Path]:
    runs = tmp_path / "runs"
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text(f"#!/bin/sh\necho run >> {runs}\n"
                      f"echo 'QEMU emulator version {version} (Debian 1:{version}+ds-1)'\n")
    binary.chmod(0o755)
    return binary, runs


def test_one_start_serves_the_check_and_the_snapshot_key(tmp_path: Path) -> None:
    binary, runs = _fake_qemu(tmp_path, "10.0.2")
    assert qemu_version(str(binary)) == (10, 0, 2)
    assert qemu_version_line(str(binary)) == "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1)"
    assert runs.read_text().count("run") == 1


def test_a_rebuilt_binary_is_asked_again(tmp_path: Path) -> None:
    binary, runs = _fake_qemu(tmp_path, "10.0.2")
    qemu_version(str(binary))
    binary.write_text(binary.read_text().replace("10.0.2", "10.1.0"))
    stat = binary.stat()
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert qemu_version(str(binary)) == (10, 1, 0)
    assert runs.read_text().count("run") == 2


def test_too_old_is_refused(tmp_path: Path) -> None:
    binary, _ = _fake_qemu(tmp_path, "6.2.0")
    with pytest.raises(HostError, match=r"QEMU 6\.2\.0 is too old"):
        qemu_version(str(binary))
