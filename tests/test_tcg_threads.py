"""TCG's vCPU threads: the choice, the vCPUs of running QEMUs, the command line, evidence."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import settings
from harness.campaign.audit_loop import AuditGuests
from harness.campaign.iteration import Where
from harness.errors import UsageError
from harness.guest import GuestConfig, tcg_threads
from harness.guest.host_fit import HostFit, choose_host_fit
from harness.guest.qemu_args import MachineSpec, qemu_args
from harness.guest.tcg_threads import (
    TcgThreadsChoice,
    boot_vcpus,
    choose_tcg_threads,
    expected_vcpus,
    qemu_tcg_threads,
    running_qemu_vcpus,
)
from harness.hotplug import SwarmSpec, build_plan, fit_for_plan
from harness.settings import TcgThreads


@pytest.mark.parametrize(("busy", "vcpus", "cores", "mode"), [
    (0, 2, 2, "multi"),      # a guest alone on two cores
    (2, 2, 2, "single"),     # two streams on two cores (the CI load)
    (2, 2, 4, "multi"),      # ... on four
    (0, 2, 1, "single"),     # one core: a thread per vCPU only takes turns
    (6, 2, 8, "multi"),
])
def test_auto_goes_round_robin_only_when_the_cores_do_not_fit(
        busy: int, vcpus: int, cores: int, mode: str) -> None:
    choice = choose_tcg_threads(TcgThreads.AUTO, "tcg", vcpus, busy, cores)
    assert choice.mode == mode
    assert f"{busy} vCPU(s) of other guests + this guest's {vcpus}" in choice.reason
    assert f"{cores} core(s)" in choice.reason
    assert choice.note() == f"# TCG threads {mode}: {choice.reason}"


@pytest.mark.parametrize("setting", [TcgThreads.MULTI, TcgThreads.SINGLE])
def test_an_explicit_setting_wins_whatever_the_host_runs(setting: TcgThreads) -> None:
    for busy in (0, 64):
        choice = choose_tcg_threads(setting, "tcg", 2, busy, 2)
        assert (choice.mode, choice.reason) == (setting.value, f"tcg_threads={setting.value}")


def test_kvm_has_no_tcg_threads() -> None:
    choice = choose_tcg_threads(TcgThreads.SINGLE, "kvm", 2, 8, 2)
    assert choice.mode is None
    assert HostFit(choose_host_fit("kvm", GuestConfig()).huge_pages, choice).thread_mode == "multi"


def test_a_mode_qemu_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="one of multi, single"):
        TcgThreadsChoice("many", "test")


@pytest.mark.parametrize(("argv", "vcpus"), [
    (["qemu-system-x86_64", "-smp", "2,maxcpus=8,sockets=8,cores=1,threads=1"], 2),
    (["qemu-system-x86_64", "-m", "1G", "--smp", "cpus=4,maxcpus=8"], 4),
    (["qemu-system-x86_64", "-smp", "maxcpus=8,cpus=3"], 3),
    (["qemu-system-x86_64", "-smp", "sockets=2"], 1),
    (["qemu-system-x86_64", "-m", "1G"], 1),
    (["qemu-system-x86_64", "-smp"], 1),
])
def test_boot_vcpus_read_from_a_command_line(argv: list[str], vcpus: int) -> None:
    assert boot_vcpus(argv) == vcpus


def _fake_proc(root: Path, cmdlines: dict[str, list[str]]) -> Path:
    for pid, argv in cmdlines.items():
        (root / pid).mkdir()
        (root / pid / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    (root / "self").mkdir()          # not a process number: skipped
    (root / "77").mkdir()            # gone meanwhile: no cmdline, skipped
    return root


def test_running_qemu_vcpus_counts_every_system_emulator(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, {
        "10": ["/usr/bin/qemu-system-x86_64", "-smp", "2,maxcpus=8"],
        "11": ["qemu-system-aarch64", "-smp", "4"],
        "12": ["/usr/bin/python3", "-smp", "16"],          # not QEMU
        "13": ["qemu-img", "create", "-smp", "8"],          # not a system emulator
        "14": [""],                                          # a zombie's empty cmdline
    })
    assert running_qemu_vcpus(proc) == 6


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real process whose name and arguments look like a 3-vCPU QEMU's."""
    binary = tmp_path / "qemu-system-x86_64"
    binary.symlink_to(sys.executable)
    proc = subprocess.Popen([str(binary), "-c", "import time; time.sleep(30)",
                             "-smp", "3,maxcpus=8"])
    deadline = time.monotonic() + 5
    while (b"-smp" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
           and time.monotonic() < deadline):
        time.sleep(0.01)
    assert proc.poll() is None, "the stand-in QEMU did not start"
    yield proc
    proc.kill()
    proc.wait()


def test_a_running_qemu_makes_auto_go_round_robin(
        fake_qemu: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    assert running_qemu_vcpus() >= 3
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("KDUMP_HARNESS_TCG_THREADS", raising=False)
    with settings.configured():
        choice = qemu_tcg_threads("tcg", cores)     # this guest alone would fill the cores
    assert choice.mode == "single"
    assert "exceed" in choice.reason


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDUMP_HARNESS_TCG_THREADS", "single")
    with settings.configured():
        assert qemu_tcg_threads("tcg", 1).mode == "single"
    monkeypatch.setenv("KDUMP_HARNESS_TCG_THREADS", "threads")
    with pytest.raises(UsageError, match="KDUMP_HARNESS_TCG_THREADS='threads': expected one "
                                         "of auto, multi, single"):
        settings.configured().__enter__()


def _spec(**fields: object) -> MachineSpec:
    return MachineSpec(kernel=Path("/k"), initrd=Path("/i"), append="", accel="tcg",
                       qmp_socket=Path("/q"), console_path=Path("/c"), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["multi", "single"])
def test_the_command_line_carries_the_mode(mode: str) -> None:
    argv = qemu_args(_spec(tcg_threads=mode), "qemu-system-x86_64")
    assert argv[argv.index("-accel") + 1] == f"tcg,thread={mode}"


def test_a_bad_mode_is_refused_before_qemu_starts() -> None:
    with pytest.raises(UsageError, match="TCG threads must be 'multi' or 'single'"):
        qemu_args(_spec(tcg_threads="both"), "qemu-system-x86_64")


def test_the_evidence_says_both_choices_and_why() -> None:
    fit = HostFit(choose_host_fit("tcg", GuestConfig()).huge_pages,
                  choose_tcg_threads(TcgThreads.AUTO, "tcg", 2, 2, 2))
    lines = fit.notes().splitlines()
    assert lines[0].startswith("# TCG threads single: 2 vCPU(s) of other guests")
    assert lines[1].startswith("# transparent huge pages off")
    kvm = choose_host_fit("kvm", GuestConfig())
    assert [line.split(":")[0] for line in kvm.notes().splitlines()] == [
        "# transparent huge pages on"]


def test_a_guest_that_will_unplug_vcpus_stays_multi_threaded() -> None:
    choice = choose_tcg_threads(TcgThreads.AUTO, "tcg", 2, 8, 2, cpu_unplug=True)
    assert choice.mode == "multi"
    assert "vCPU unplugs ahead" in choice.reason and "Resource deadlock avoided" in choice.reason


def test_round_robin_asked_for_a_guest_that_will_unplug_vcpus_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDUMP_HARNESS_TCG_THREADS", "single")
    with settings.configured(), pytest.raises(
            UsageError, match=re.escape("KDUMP_HARNESS_TCG_THREADS=single: this guest's swarm "
                                        "unplugs vCPUs, and QEMU 10.0's round-robin TCG")):
        choose_host_fit("tcg", GuestConfig(cpu_unplug=True))


def test_a_plan_that_unplugs_vcpus_marks_its_guest() -> None:
    plain = GuestConfig()
    assert fit_for_plan(plain, build_plan(SwarmSpec(cpus=2))) is plain
    fitted = fit_for_plan(plain, build_plan(SwarmSpec(cpus=2, unplug_cpus=1)))
    assert fitted.cpu_unplug and fitted.cpus == plain.cpus


@pytest.mark.parametrize(("running", "at_once", "vcpus", "expected"), [
    (0, 0, 2, 0),        # nothing said, nothing running: a guest alone
    (0, 2, 2, 2),        # two streams, the other between two of its runs
    (4, 2, 2, 4),        # more running than said: what runs counts
    (0, 1, 2, 0),        # one at a time
])
def test_the_other_guests_to_expect(running: int, at_once: int, vcpus: int,
                                    expected: int) -> None:
    assert expected_vcpus(running, at_once, vcpus) == expected


def test_guests_at_once_is_said_or_taken_from_xdist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KDUMP_HARNESS_GUESTS_AT_ONCE", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    with settings.configured() as s:
        assert s.guests_at_once == 0
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    with settings.configured() as s:
        assert s.guests_at_once == 2
    monkeypatch.setenv("KDUMP_HARNESS_GUESTS_AT_ONCE", "3")
    with settings.configured() as s:
        assert s.guests_at_once == 3
    monkeypatch.setenv("KDUMP_HARNESS_GUESTS_AT_ONCE", "-1")
    with pytest.raises(UsageError, match="KDUMP_HARNESS_GUESTS_AT_ONCE='-1': must be 0"):
        settings.configured().__enter__()


def test_guests_said_to_run_at_once_count_between_their_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcg_threads, "running_qemu_vcpus", lambda: 0)
    monkeypatch.setattr(tcg_threads, "host_cores", lambda: 2)
    monkeypatch.delenv("KDUMP_HARNESS_TCG_THREADS", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    monkeypatch.setenv("KDUMP_HARNESS_GUESTS_AT_ONCE", "2")
    with settings.configured():
        choice = qemu_tcg_threads("tcg", 2)
    assert (choice.mode, choice.reason.split(" (")[0]) == (
        "single", "2 vCPU(s) of other guests + this guest's 2 exceed 2 core(s)")
    monkeypatch.setenv("KDUMP_HARNESS_GUESTS_AT_ONCE", "1")
    with settings.configured():
        assert qemu_tcg_threads("tcg", 2).mode == "multi"


def test_a_worker_is_told_unless_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first: monkeypatch then restores the variable's absence after the test.
    monkeypatch.setenv("KDUMP_HARNESS_GUESTS_AT_ONCE", "0")
    monkeypatch.delenv("KDUMP_HARNESS_GUESTS_AT_ONCE")
    settings.default_for_process("guests_at_once", "4")
    assert os.environ["KDUMP_HARNESS_GUESTS_AT_ONCE"] == "4"
    settings.default_for_process("guests_at_once", "2")
    assert os.environ["KDUMP_HARNESS_GUESTS_AT_ONCE"] == "4"
    assert settings.child_environment(guests_at_once="9")["KDUMP_HARNESS_GUESTS_AT_ONCE"] == "4"
    monkeypatch.delenv("KDUMP_HARNESS_GUESTS_AT_ONCE")
    assert settings.child_environment(guests_at_once="9")["KDUMP_HARNESS_GUESTS_AT_ONCE"] == "9"


@pytest.mark.parametrize(("mode", "fits"), [("multi", True), ("single", False)])
def test_an_audit_worker_boots_a_new_guest_for_an_unplug_on_a_round_robin_one(
        tmp_path: Path, mode: str, fits: bool) -> None:
    guests = AuditGuests(Where("c", tmp_path))
    guests.guest = SimpleNamespace(  # type: ignore[assignment]
        accel=SimpleNamespace(name="tcg"),
        host_fit=HostFit(choose_host_fit("tcg", GuestConfig()).huge_pages,
                         TcgThreadsChoice(mode, "test")))
    plan = build_plan(SwarmSpec(cpus=2, unplug_cpus=1))
    assert guests.fits(plan, GuestConfig()) is fits
    assert guests.fits(build_plan(SwarmSpec(cpus=2)), GuestConfig())
