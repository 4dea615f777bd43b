"""Transparent huge pages for QEMU: the choice per accelerator, and the prctl in the child."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import settings
from harness.guest.host_memory import (
    HugePagesChoice,
    choose_huge_pages,
    qemu_huge_pages,
    qemu_preexec,
)
from harness.settings import HugePages


@pytest.mark.parametrize(("setting", "accel", "enabled"), [
    (HugePages.AUTO, "tcg", False),
    (HugePages.AUTO, "kvm", True),
    (HugePages.ON, "tcg", True),
    (HugePages.OFF, "kvm", False),
])
def test_the_choice(setting: HugePages, accel: str, enabled: bool) -> None:
    choice = choose_huge_pages(setting, accel)
    assert choice.enabled is enabled
    assert f"huge_pages={setting.value}" in choice.reason
    assert choice.note().startswith("# transparent huge pages " + ("on" if enabled else "off"))


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDUMP_HARNESS_HUGE_PAGES", "on")
    with settings.configured():
        assert qemu_huge_pages("tcg").enabled
    monkeypatch.delenv("KDUMP_HARNESS_HUGE_PAGES")
    with settings.configured():
        assert not qemu_huge_pages("tcg").enabled


def _thp_enabled(preexec: Callable[[], None]) -> str:
    """What the child's /proc/self/status says (the line exists since Linux 5.0)."""
    out = subprocess.run(["grep", "THP_enabled", "/proc/self/status"], capture_output=True,
                         text=True, check=True, preexec_fn=preexec)
    return out.stdout.split()[-1]


def test_the_child_runs_without_huge_pages_when_they_are_off() -> None:
    if "THP_enabled" not in Path("/proc/self/status").read_text():
        pytest.skip("this kernel's /proc/PID/status has no THP_enabled line")
    assert _thp_enabled(qemu_preexec(HugePagesChoice(False, "test"))) == "0"
    # On: the child keeps what this process has.
    mine = Path("/proc/self/status").read_text().split("THP_enabled:")[1].split()[0]
    assert _thp_enabled(qemu_preexec(HugePagesChoice(True, "test"))) == mine


def test_the_child_still_dies_with_its_parent() -> None:
    # The runner's parent-death signal survives the huge-pages prctl: a child of a
    # short-lived parent is gone once that parent is.
    code = ("import subprocess, sys, time\n"
            "from harness.guest.host_memory import HugePagesChoice, qemu_preexec\n"
            "p = subprocess.Popen(['sleep', '30'], preexec_fn=qemu_preexec("
            "HugePagesChoice(False, 't')))\n"
            "print(p.pid, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if "State:\tZ" in _status(pid) or not _status(pid):
            return
        time.sleep(0.05)
    pytest.fail(f"the child {pid} outlived its parent by 5 s")


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


def test_doctor_says_which_huge_pages_qemu_gets(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli.doctor import check_huge_pages

    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    monkeypatch.delenv("KDUMP_HARNESS_HUGE_PAGES", raising=False)
    with settings.configured():
        check = check_huge_pages(mode)
    assert check.ok
    assert check.detail.startswith("host THP mode madvise; QEMU under TCG: huge pages off, "
                                   "under KVM: on")
    with settings.configured():
        assert "host THP mode unknown" in check_huge_pages(tmp_path / "missing").detail
