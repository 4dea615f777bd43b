"""Guest bookkeeping that needs no QEMU."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

from harness.machine import Guest, GuestConfig, _parse_readiness


def guest(tmp_path: Path) -> Guest:
    image = SimpleNamespace(profile="trixie", kernel_path=tmp_path / "k",
                            initrd_path=tmp_path / "i", kernel_release="6.12")
    return Guest(image, GuestConfig(), tmp_path)  # type: ignore[arg-type]


def test_qemu_killed_by_a_signal_is_reported_with_its_log(tmp_path: Path) -> None:
    g = guest(tmp_path)
    (tmp_path / "qemu.log").write_text("double free or corruption (out)\n")
    g._proc = subprocess.Popen(["sh", "-c", "kill -ABRT $$"])
    g._proc.wait()
    assert g.crashed() == "QEMU died (killed by signal 6): double free or corruption (out)"


def test_a_clean_exit_is_not_a_crash(tmp_path: Path) -> None:
    g = guest(tmp_path)
    g._proc = subprocess.Popen(["true"])
    g._proc.wait()
    assert g.crashed() is None
    assert g.shutdown() == "already exited"


def test_readiness_report_parsing() -> None:
    ready = _parse_readiness("release=6.12\nkexec_crash_loaded=1\ncrashkernel=2e000000-3dffffff,\n"
                             "noise without equals\n")
    assert ready.kdump_loaded and ready.get("release") == "6.12"
    assert ready.get("missing", "x") == "x"
