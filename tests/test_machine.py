"""Guest bookkeeping that needs no QEMU."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import BootFailure, EmulatorFault
from harness.guest import Guest, GuestConfig, GuestState
from harness.guest import accel as accel_mod
from harness.guest.config import Readiness


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
    ready = Readiness.parse("release=6.12\nkexec_crash_loaded=1\ncrashkernel=2e000000-3dffffff,\n"
                             "noise without equals\n")
    assert ready.kdump_loaded and ready.get("release") == "6.12"
    assert ready.get("missing", "x") == "x"


INT3_OOPS = """[    1.496] Oops: int3: 0000 [#1] SMP NOPTI
[    1.497] RIP: 0010:sched_clock_idle_wakeup_event+0x5/0x50
[    1.498] Kernel panic - not syncing: Fatal exception in interrupt
"""


class ScriptedBoots:
    """Stands in for ``Guest._launch_once``: each call plays the next console text; a text
    with a panic fails the boot as the real console wait would."""

    def __init__(self, guest: Guest, consoles: list[str]) -> None:
        self.guest, self.consoles, self.calls = guest, consoles, 0

    def __call__(self, binary: str) -> None:
        text = self.consoles[self.calls]
        self.calls += 1
        for name in ("console.log", "qemu.log", "qmp.jsonl", "qemu-cmdline.txt"):
            (self.guest.workdir / name).write_text(f"attempt {self.calls}\n{text}")
        self.guest.console = SimpleNamespace(text=lambda: text, close=lambda: None)  # type: ignore[assignment]
        if "Kernel panic" in text:
            raise BootFailure("guest userspace: the guest printed 'Kernel panic' instead")


def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, consoles: list[str],
             accel: str = "tcg", **config: object) -> tuple[Guest, ScriptedBoots]:
    image = SimpleNamespace(profile="sid", kernel_path=tmp_path / "k",
                            initrd_path=tmp_path / "i", kernel_release="7.2")
    g = Guest(image, GuestConfig(**config), tmp_path)  # type: ignore[arg-type]
    boots = ScriptedBoots(g, consoles)
    monkeypatch.setattr(accel_mod, "qemu_binary", lambda: "qemu-system-x86_64")
    monkeypatch.setattr(accel_mod, "qemu_version", lambda binary: (7, 2, 0))
    monkeypatch.setattr(accel_mod, "choose_accel",
                        lambda *a: accel_mod.AccelChoice(accel, "test"))
    monkeypatch.setattr(g, "_launch_once", boots)
    return g, boots


def test_a_boot_killed_by_the_tcg_stale_int3_fault_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g, boots = scripted(tmp_path, monkeypatch, [INT3_OOPS, "HARNESS: ready"])
    g.launch()
    assert boots.calls == 2 and g.state is GuestState.RUNNING
    (fault,) = g.boot_faults
    assert "stale-int3 at sched_clock_idle_wakeup_event+0x5/0x50" in fault
    aside = tmp_path / "boot-attempt-1"
    assert (aside / "console.log").read_text().startswith("attempt 1\n")
    assert "stale-int3" in (aside / "reason.txt").read_text()
    assert (tmp_path / "console.log").read_text().startswith("attempt 2\n")


@pytest.mark.parametrize(("consoles", "accel", "config", "boots", "error"), [
    (["[ 1.0] Kernel panic - not syncing: No working init found.\n"], "tcg", {}, 1,
     BootFailure),
    ([INT3_OOPS], "kvm", {}, 1, BootFailure),
    # The emulator's fault every time: a harness error, never a verdict on the kernel.
    ([INT3_OOPS], "tcg", {"boot_retries": 0}, 1, EmulatorFault),
    ([INT3_OOPS, INT3_OOPS], "tcg", {}, 2, EmulatorFault),
])
def test_only_known_emulator_faults_under_tcg_are_retried_and_only_so_often(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, consoles: list[str], accel: str,
        config: dict[str, object], boots: int, error: type[Exception]) -> None:
    g, scripted_boots = scripted(tmp_path, monkeypatch, consoles, accel, **config)
    with pytest.raises(error):
        g.launch()
    assert scripted_boots.calls == boots


class FakeConsole:
    def __init__(self, text: str) -> None:
        self._text = text

    def text(self, start: int = 0) -> str:
        return self._text[start:]

    def tail(self, lines: int = 40) -> str:
        return self._text


@pytest.mark.parametrize(("console", "error", "message"), [
    ("[ 9.1] acpi PNP0C80:03: add_memory failed\n[ 9.2] acpi PNP0C80:04: add_memory failed\n",
     "HotplugNotHonoured", r"refused hot-added memory while settling \(2 time\(s\)\): "
                           r"\[ 9.1\] acpi PNP0C80:03: add_memory failed"),
    # The first line is the cause: seen together (a busy host), the refusal wins...
    ("[ 9.1] add_memory failed\n[ 9.3] Out of memory: Killed process 231 (dropbear) "
     "total-vm:3000kB\n", "HotplugNotHonoured",
     r"refused hot-added memory while settling \(1 time\(s\)\): \[ 9.1\] add_memory"),
    # ... and the OOM killer when it came first.
    ("[ 9.1] Out of memory: Killed process 231 (dropbear) total-vm:3000kB\n"
     "[ 9.3] add_memory failed\n", "GuestOutOfMemory",
     r"ran out of memory while settling: .*Killed process 231 \(dropbear\)"),
    ("[ 7.0] Kernel panic - not syncing: Fatal exception\n", "UnexpectedPanic",
     r"panicked while settling: .*Fatal exception"),
])
def test_health_names_the_guests_own_failure(tmp_path: Path, console: str, error: str,
                                             message: str) -> None:
    from harness import errors
    g = guest(tmp_path)
    g._proc = subprocess.Popen(["sleep", "30"])
    try:
        g.state = GuestState.RUNNING
        g.console = FakeConsole("booted\n" + console)  # type: ignore[assignment]
        g.booted_mark = len("booted\n")
        with pytest.raises(getattr(errors, error), match=message):
            g.check_health("settling")
    finally:
        g._proc.kill()
        g._proc.wait()


def test_health_says_qemu_died_of_its_signal(tmp_path: Path) -> None:
    from harness.errors import LostVMError
    g = guest(tmp_path)
    (tmp_path / "qemu.log").write_text("qemu-system-x86_64: terminating on signal 9\n")
    g._proc = subprocess.Popen(["sh", "-c", "kill -KILL $$"])
    g._proc.wait()
    with pytest.raises(LostVMError, match=r"QEMU died \(killed by signal 9\).*\(while "
                                          r"running 'true'\)"):
        g.check_health("running 'true'")


#: QEMU 10.0's -d cpu_reset log of a triple fault under -no-reboot (no CPU reset follows).
TRIPLE = "CPU Reset (CPU 2)\nEAX=00000000 EBX=00000000\nTriple fault\n"


@pytest.mark.parametrize(("shutdown", "console", "debug", "error", "message"), [
    ({"guest": True, "reason": "guest-reset"}, "", "CPU Reset (CPU 0)\n", "GuestReset",
     r"the guest reset itself \(QEMU: SHUTDOWN guest-reset\) while waiting for i9-dimm5, "
     r"with nothing about it on its console"),
    ({"guest": True, "reason": "guest-reset"}, "", TRIPLE, "GuestReset",
     r"reset itself \(QEMU: SHUTDOWN guest-reset; QEMU's log: a triple fault\) while"),
    (None, "", None, "GuestReset", r"the guest ended \(QEMU exited with status 0\)"),
    # What the console shows comes first: a panic with panic=-1 resets the guest too.
    ({"guest": True, "reason": "guest-reset"},
     "[ 7.0] Kernel panic - not syncing: Fatal exception\n", TRIPLE, "UnexpectedPanic",
     r"panicked while waiting for i9-dimm5"),
])
def test_a_running_guest_whose_qemu_exited_0_ended_itself(
        tmp_path: Path, shutdown: dict[str, object] | None, console: str, debug: str | None,
        error: str, message: str) -> None:
    """Seen under TCG: a restored guest reset itself during a hot-plug burst; the settle
    waited out 90 s for _OST events because QEMU's exit status 0 looked like no death."""
    from harness import errors
    from harness.results import Result, classify
    g = guest(tmp_path)
    g._proc = subprocess.Popen(["true"])
    g._proc.wait()
    g.state = GuestState.RUNNING
    g.console = FakeConsole("booted\n" + console)  # type: ignore[assignment]
    g.booted_mark = len("booted\n")
    g.qmp = SimpleNamespace(shutdown=shutdown)  # type: ignore[assignment]
    if debug is not None:
        (tmp_path / "qemu-debug.log").write_text(debug)
    with pytest.raises(getattr(errors, error), match=message) as raised:
        g.check_health("waiting for i9-dimm5", grace=0)
    assert classify(raised.value) in (Result.GUEST_ERROR, Result.UNEXPECTED_PANIC)
    if error == "GuestReset":
        assert "QEMU debug log tail (qemu-debug.log):\n" + (debug or "").rstrip() in (
            raised.value.details or "")
    g.state = GuestState.PANICKED       # after a deliberate panic QEMU's exit is expected
    g.check_health("capturing", grace=0)


def test_a_guest_panic_before_boot_finished_is_not_scanned_again(tmp_path: Path) -> None:
    g = guest(tmp_path)
    g._proc = subprocess.Popen(["sleep", "30"])
    try:
        g.state = GuestState.PANICKED      # after a deliberate trigger: the capture's business
        g.console = FakeConsole("Kernel panic - not syncing: sysrq\n")  # type: ignore[assignment]
        g.check_health("capturing")
    finally:
        g._proc.kill()
        g._proc.wait()


@pytest.mark.parametrize(("debug", "said"), [
    (TRIPLE, "QEMU: SHUTDOWN guest-reset; QEMU's log: a triple fault"),
    ("CPU Reset (CPU 0)\n", "QEMU: SHUTDOWN guest-reset)"),
])
def test_no_capture_kernel_after_the_panic_says_how_the_machine_ended(
        tmp_path: Path, debug: str, said: str) -> None:
    """Under TCG the crash's NMI once started a hot-added vCPU never brought up: the
    firmware reset the machine and the verdict said only "QEMU exited"."""
    from harness.crash import capture
    from harness.crash.outcome import CaptureResult, Outcome
    g = guest(tmp_path)
    panic = "[ 9.0] Kernel panic - not syncing: sysrq triggered crash\n"
    g.console = FakeConsole(panic)  # type: ignore[assignment]
    shutdown = {"guest": True, "reason": "guest-reset"}
    g.qmp = SimpleNamespace(shutdown=shutdown)  # type: ignore[assignment]
    g.readiness = Readiness.parse("kexec_crash_loaded=1\n")
    (tmp_path / "qemu-debug.log").write_text(debug)
    result = CaptureResult(Outcome.NO_PANIC, "", trigger="sysrq", mode="headers")
    capture._no_capture_kernel(g, result, "exited", 0)
    assert result.outcome is Outcome.KDUMP_DID_NOT_OCCUR
    assert result.reason.startswith(
        "QEMU exited after the panic with no capture kernel output (" + said), result.reason
    # No log replay after the panic (panic_print): the kernel went on to kexec, not gave up.
    assert result.reason.endswith("no log replay followed the panic: the kernel went on "
                                  "to kexec)"), result.reason
    replay = "[ 9.1] CPU: 1 PID: 211\n[ 0.000000] Linux version 6.12.117 (replayed)\n"
    g.console = FakeConsole(g.console.text() + replay)  # type: ignore[assignment]
    capture._no_capture_kernel(g, result, "exited", 0)
    assert "the console replay has no kexec lock lines" in result.reason
